#include "pg/prelude.hpp"
#include "pg/obtain.hpp"

#include "core/error.hpp"
#include "core/expiry.hpp"
#include "core/schedule.hpp"
#include "pg/engine_client.hpp"
#include "pg/guard.hpp"
#include "pg/gucs.hpp"
#include "pg/secrets.hpp"
#include "pg/spi.hpp"
#include "pg/store.hpp"

namespace upstream_token::pg {

namespace {

// True when a login of (session, provider) is under way: a device login waiting for the user,
// or a code being redeemed (a begun code login may well be abandoned in the browser).
bool login_pending(const std::string& session, const std::string& provider) {
    static Statement q(
        "SELECT 1 FROM upstream_token.login WHERE session = $1 AND provider = $2 "
        "AND (status = 'redeeming' OR (status = 'pending' AND flow = 'device_code')) "
        "AND expires_at > pg_catalog.now()");
    return q.run({text_arg(session), text_arg(provider)}, true, 1) > 0;
}

// Raises a WARNING (never an error) naming why a still-valid token is served unrefreshed.
void warn_serving_unrefreshed(const std::string& why) {
    const char* msg = why.c_str();
    pg_call([&] {
        ereport(WARNING, (errmsg("upstream_token: serving the current access token, which is "
                                 "still valid, without a refresh"),
                          errdetail_internal("%s", msg)));
    });
}

}  // namespace

[[noreturn]] void throw_not_found(const std::string& provider,
                                  const std::optional<std::string>& session) {
    if (!provider_exists(provider)) {
        throw Error(ErrorCode::provider_not_found, "provider \"" + provider + "\" does not exist");
    }
    if (session && login_pending(*session, provider)) {
        throw Error(ErrorCode::login_pending,
                    "a login of this session with provider \"" + provider + "\" is under way",
                    "No token is stored yet.",
                    "Wait for the login_completed event (or complete_login), then ask again.");
    }
    throw Error(ErrorCode::session_not_found,
                "no upstream token is stored for this session and provider \"" + provider + "\"",
                {},
                "Sign the user in with upstream_token.begin_login() (or store the tokens of "
                "your own login with upstream_token.store_upstream_token()).");
}

namespace {

// The threshold that applies to this token (the provider's or the GUC, capped by its lifetime).
Micros token_threshold(const TokenView& v) {
    return effective_threshold(v.provider_threshold.value_or(refresh_threshold()), v.issued_at,
                               v.expires_at);
}

// Decrypts what a row view holds and classifies it against the threshold.
Freshness open_view(const std::string& session, const std::string& provider, const TokenView& v,
                    Obtained* out, Time now) {
    if (v.status == "invalid_binding") {
        throw Error(ErrorCode::invalid_binding,
                    "the provider returned an ID token for a different user or client",
                    "The stored tokens are kept but not served (OpenID Connect Core 12.2).",
                    "Sign the user in again.");
    }
    out->access = open_sealed(provider, session, "access_token", v.access_ct).value_or("");
    out->id_token = open_sealed(provider, session, "id_token", v.id_ct);
    out->expires_at = v.expires_at;
    return classify(now, v.expires_at, token_threshold(v), out->access.empty());
}

// Serves a still-valid token with a WARNING, or raises the error when it has expired (I6).
void serve_or_throw(bool valid, ErrorCode code, const std::string& message,
                    const std::string& detail = {}) {
    if (!valid) throw Error(code, message, detail);
    warn_serving_unrefreshed(detail.empty() ? message : message + ": " + detail);
}

// A grant's first token: the engine obtains and stores it, the caller reads what was stored.
Obtained first_grant_token(const std::string& session, const std::string& provider,
                           const GrantParams& grant) {
    if (!provider_exists(provider)) throw_not_found(provider);
    const RefreshResult r = request_refresh(provider, session, 0, false, grant_params_json(grant));
    if (!r.ok) throw Error(r.code, r.message, r.detail);
    const auto view = read_token_view(session, provider, true);
    if (!view) throw Error(ErrorCode::refresh_failed, "the engine stored no token");
    Obtained got;
    got.access = open_sealed(provider, session, "access_token", view->access_ct).value_or("");
    got.expires_at = view->expires_at;
    if (classify(now_time(), view->expires_at, Micros{0}, got.access.empty()) ==
        Freshness::expired) {
        throw Error(ErrorCode::refresh_failed, "the provider's token is already expired");
    }
    return got;
}
}  // namespace

Obtained obtain(const std::string& session, const std::string& provider, bool with_id_token,
                const GrantParams* grant) {
    const auto view = read_token_view(session, provider, false, with_id_token);
    if (!view && grant != nullptr) return first_grant_token(session, provider, *grant);
    if (!view) throw_not_found(provider, session);
    Obtained current;
    const Time now = now_time();
    const Freshness f = open_view(session, provider, *view, &current, now);
    if (f == Freshness::fresh) return current;
    const bool valid = f == Freshness::refresh_due;
    if (view->status == "reauth_required" || view->status == "expired") {
        serve_or_throw(valid, ErrorCode::reauth_required,
                       view->status == "expired"
                           ? "the refresh token has expired; sign-in is required"
                           : "the provider rejected the refresh token; sign-in is required");
        return current;
    }
    if (!view->has_refresh_token && grant == nullptr) {
        if (!valid) {
            throw Error(ErrorCode::no_refresh_token,
                        "the access token has expired and no refresh token is stored");
        }
        return current;
    }
    // Inside the window the engine refreshes on its own; a caller waits only once that is
    // overdue, so readers of a healthy engine never pay the provider's latency.
    if (!caller_must_wait(f, now, view->expires_at, token_threshold(*view))) return current;
    if (pg_call([&] { return TransactionIdIsCurrentTransactionId(view->xmin); })) {
        serve_or_throw(valid, ErrorCode::uncommitted_change,
                       "the token was changed by this transaction, which is not committed",
                       "The refresh engine cannot see uncommitted rows; commit first.");
        return current;
    }
    RefreshResult r;
    try {
        r = request_refresh(provider, session, view->generation, false,
                            grant != nullptr ? grant_params_json(*grant) : std::string());
    } catch (const Error& e) {
        if (!valid) throw;
        r.code = e.code();
        r.message = e.what();
    }
    if (!r.ok) {
        serve_or_throw(valid, r.code, r.message, r.detail);
        return current;
    }
    const auto after = read_token_view(session, provider, true, with_id_token);
    if (!after) throw_not_found(provider, session);
    Obtained refreshed;
    if (open_view(session, provider, *after, &refreshed, now_time()) == Freshness::expired) {
        throw Error(ErrorCode::refresh_failed, "the refreshed access token is already expired");
    }
    return refreshed;
}

}  // namespace upstream_token::pg
