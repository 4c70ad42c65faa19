#include "pg/prelude.hpp"
#include "pg/login_store.hpp"

#include <algorithm>

#include "core/crypto.hpp"
#include "core/error.hpp"
#include "core/expiry.hpp"
#include "core/id_token.hpp"
#include "pg/gucs.hpp"
#include "pg/secrets.hpp"
#include "pg/spi.hpp"
#include "pg/store.hpp"

namespace upstream_token::pg {

namespace {
constexpr std::size_t kErrorMax = 200;

// Queues the login's event; delivered only if the transaction commits.
void notify_login(const std::string& session, const std::string& provider, const char* event) {
    static Statement notify(
        "SELECT pg_catalog.pg_notify('upstream_token_events', pg_catalog.json_build_object("
        "'session', $1::pg_catalog.text, 'provider', $2::pg_catalog.text, 'event', "
        "$3::pg_catalog.text)::pg_catalog.text)");
    notify.run({text_arg(session), text_arg(provider), text_arg(event)}, false);
}

// A failure text bounded for the row and the caller (never a secret: codes and classes only).
std::string bounded(std::string text) {
    if (text.size() > kErrorMax) text.resize(kErrorMax);
    return text;
}

// Ends the login as failed with its event; false when it had already ended.
bool mark_failed(const std::string& key, const std::string& why) {
    static Statement fail(
        "UPDATE upstream_token.login SET status = 'failed', error = $2, "
        "finished_at = pg_catalog.now() WHERE id = $1 AND status IN ('pending', 'redeeming') "
        "RETURNING session, provider");
    if (fail.run({text_arg(key), text_arg(bounded(why))}, false) == 0) return false;
    ResultRow r;
    notify_login(r.text(1).value_or(""), r.text(2).value_or(""), "login_failed");
    return true;
}

// Queues the revocation of tokens whose ID token failed the login checks (providers with a
// revocation endpoint; the tokens are sealed for the session they would have served); true
// when one was queued.
bool revoke_rejected(const LoginAnswer& a, const TokenResponse& t) {
    const bool refresh = t.refresh_token.has_value();
    const char* column = refresh ? "refresh_token" : "access_token";
    const std::string sealed =
        seal(a.provider, a.session, column, refresh ? *t.refresh_token : t.access_token);
    static Statement queue(
        "INSERT INTO upstream_token.revocation (provider, session, token, token_column) "
        "SELECT p.name, $2, $3, $4 FROM upstream_token.provider p "
        "WHERE p.name = $1 AND p.revocation_endpoint IS NOT NULL");
    return queue.run(
               {text_arg(a.provider), text_arg(a.session), bytea_arg(sealed), text_arg(column)},
               false) > 0;
}
}  // namespace

std::string login_aad_session(const std::string& key) {
    return "login:" + key;
}

ClaimedCode claim_code_login(const std::string& provider, const std::string& key,
                             const std::optional<std::string>& iss) {
    static Statement read(
        "SELECT l.session, l.redirect_uri, l.code_verifier, l.nonce, l.status, "
        "l.expires_at <= pg_catalog.now(), p.issuer FROM upstream_token.login l "
        "JOIN upstream_token.provider p ON p.name = l.provider "
        "WHERE l.id = $1 AND l.provider = $2 AND l.flow = 'authorization_code' FOR UPDATE OF l");
    if (read.run({text_arg(key), text_arg(provider)}, false, 1) == 0) {
        throw Error(ErrorCode::login_state_invalid, "the login state is unknown");
    }
    ResultRow r;
    ClaimedCode c;
    c.key = key;
    c.provider = provider;
    c.session = r.text(1).value_or("");
    c.redirect_uri = r.text(2).value_or("");
    const auto verifier_ct = r.bytea(3);
    const auto nonce_ct = r.bytea(4);
    if (const std::string status = r.text(5).value_or(""); status != "pending") {
        // A retried callback (the first caller timed out) learns how its login ended.
        throw Error(ErrorCode::login_state_invalid, "the login state was already used",
                    status == "completed" ? "Its login completed: the tokens are stored."
                    : status == "failed"  ? "Its login failed (upstream_token.login_status.error)."
                                          : "Its code is being redeemed.");
    }
    if (r.boolean(6).value_or(true)) {
        throw Error(ErrorCode::login_state_invalid, "the login state has expired",
                    "upstream_token.login_timeout bounds a login.");
    }
    // RFC 9207: an authorization response from another issuer is a mix-up; never redeem it.
    if (const auto issuer = r.text(7); iss && issuer && *iss != *issuer) {
        mark_failed(key, "iss: the authorization response names another issuer");
        c.refused = "the authorization response names another issuer than the provider's";
        return c;
    }
    const std::string aad = login_aad_session(key);
    c.verifier = open_sealed(provider, aad, "code_verifier", verifier_ct).value_or("");
    c.nonce = open_sealed(provider, aad, "nonce", nonce_ct);
    static Statement redeem("UPDATE upstream_token.login SET status = 'redeeming' WHERE id = $1");
    redeem.run({text_arg(key)}, false);
    return c;
}

JobResult save_login_answer(const LoginAnswer& a, bool* revocation_queued) {
    *revocation_queued = false;
    JobResult result;
    result.network = true;
    const ExchangeOutcome& o = a.outcome;
    if (o.failure != FailureClass::none) {
        std::string why = o.error;
        if (!o.message.empty()) why += " (" + o.message + ")";
        mark_failed(a.key, why);
        result.code = ErrorCode::login_failed;
        result.message = o.failure == FailureClass::transient
                             ? "the login failed: the provider could not answer (" + o.error +
                                   "); start a new login"
                             : "the provider refused the login: " + o.error;
        result.detail = bounded(o.message);
        return result;
    }
    const TokenResponse& t = *o.tokens;
    const ProviderRow* provider = cached_provider(a.provider);
    if (provider == nullptr) throw Error(ErrorCode::provider_not_found, "the provider was dropped");
    // OIDC Core 3.1.3.7 (and 12.2's binding from here on): checked in memory and saved in the
    // same commit as its verdict.
    std::optional<IdClaims> claims;
    std::optional<std::string> problem;
    if (t.id_token) {
        try {
            claims = decode_id_token(*t.id_token);
            problem = login_id_token_problem(*claims, provider->issuer, provider->client_id,
                                             a.nonce, now_time());
        } catch (const Error&) {
            problem = "malformed id_token";
        }
    } else if (a.nonce) {
        problem = "no id_token although openid was asked for";
    }
    if (problem) {
        *revocation_queued = revoke_rejected(a, t);
        mark_failed(a.key, "id_token: " + *problem);
        result.code = ErrorCode::login_failed;
        result.message = "the login's ID token failed a check: " + *problem;
        result.detail = "The tokens were not stored (and are revoked where the provider can).";
        return result;
    }
    // Only a login still under way completes: one ended meanwhile (its session signed out, a
    // newer device login) keeps nothing, and the tokens it brought are revoked.
    static Statement complete(
        "UPDATE upstream_token.login SET status = 'completed', subject = $2, "
        "finished_at = pg_catalog.now() WHERE id = $1 AND status IN ('pending', 'redeeming')");
    if (complete.run({text_arg(a.key),
                      text_arg(claims ? std::optional<std::string>(claims->sub) : std::nullopt)},
                     false) == 0) {
        *revocation_queued = revoke_rejected(a, t);
        result.code = ErrorCode::login_failed;
        result.message = "the login ended before its answer came (signed out, or superseded)";
        result.detail = "The tokens were not stored (and are revoked where the provider can).";
        return result;
    }
    const Time issued = a.sent_at - kProviderClockAllowance;
    LoginRow row;
    row.session = a.session;
    row.provider = a.provider;
    row.client_id = provider->client_id;
    if (claims) {
        row.subject = claims->sub;
        row.claims_json = claims_to_json(*claims);
    }
    row.access_ct = seal(a.provider, a.session, "access_token", t.access_token);
    if (t.refresh_token) {
        row.refresh_ct = seal(a.provider, a.session, "refresh_token", *t.refresh_token);
        const RefreshExpiry e = login_refresh_expiry(
            issued, t.refresh_expires_in, provider->refresh_token_ttl, refresh_token_ttl());
        row.refresh_expires_at = e.at;
        row.refresh_expiry_source = refresh_expiry_source_name(e.source);
    }
    if (t.id_token) row.id_ct = seal(a.provider, a.session, "id_token", *t.id_token);
    row.scope = t.scope;
    row.expires_at = access_expiry(issued, t.expires_in, provider->default_lifetime);
    row.issued_at = issued;
    upsert_login(row);
    if (row.refresh_ct) plan_on_commit(*provider, row.expires_at, issued);
    notify_login(a.session, a.provider, "login_completed");
    result.ok = true;
    return result;
}

std::string insert_device_login(const std::string& provider, const std::string& session,
                                const std::optional<std::string>& scope,
                                const DeviceAuthorization& d) {
    const std::string key = sha256_hex(random_token(32));
    const std::string device_ct =
        seal(provider, login_aad_session(key), "device_code", d.device_code);
    // One device login per (session, provider) at a time: a newer one replaces the older.
    static Statement supersede(
        "UPDATE upstream_token.login SET status = 'failed', error = 'superseded by a newer "
        "device login', finished_at = pg_catalog.now() WHERE session = $1 AND provider = $2 "
        "AND flow = 'device_code' AND status = 'pending'");
    supersede.run({text_arg(session), text_arg(provider)}, false);
    static Statement insert(
        "INSERT INTO upstream_token.login (id, flow, session, provider, scope, device_code, "
        "user_code, verification_uri, verification_uri_complete, poll_interval, next_poll_at, "
        "expires_at) VALUES ($1, 'device_code', $2, $3, $4, $5, $6, $7, $8, $9, "
        "pg_catalog.now() OPERATOR(pg_catalog.+) pg_catalog.make_interval(secs => $9), "
        "pg_catalog.now() OPERATOR(pg_catalog.+) pg_catalog.make_interval(secs => $10))");
    insert.run({text_arg(key), text_arg(session), text_arg(provider), text_arg(scope),
                bytea_arg(device_ct), text_arg(d.user_code), text_arg(d.verification_uri),
                text_arg(d.verification_uri_complete),
                int4_arg(static_cast<std::int32_t>(d.interval)), int8_arg(d.expires_in)},
               false);
    return key;
}

std::vector<DuePoll> due_device_polls(Time now, std::size_t limit,
                                      const std::vector<std::string>& busy) {
    static Statement due(
        "SELECT id, session, provider, device_code, poll_interval, expires_at <= $1 "
        "FROM upstream_token.login WHERE status = 'pending' AND flow = 'device_code' "
        "AND next_poll_at <= $1 ORDER BY next_poll_at LIMIT $2 FOR UPDATE SKIP LOCKED");
    // The next poll is set when this one is taken, in the same commit: a poll whose answer
    // cannot be recorded (a read-only database, a locked row) still waits its interval.
    static Statement later(
        "UPDATE upstream_token.login SET next_poll_at = $2 OPERATOR(pg_catalog.+) "
        "pg_catalog.make_interval(secs => poll_interval) WHERE id = $1");
    const auto n = due.run(
        {timestamptz_arg(now), int8_arg(static_cast<std::int64_t>(limit + busy.size()))}, false);
    std::vector<DuePoll> picked;
    for (std::uint64_t i = 0; i < n && picked.size() < limit; ++i) {
        ResultRow r(i);
        DuePoll p;
        p.key = r.text(1).value_or("");
        if (std::find(busy.begin(), busy.end(), p.key) != busy.end()) continue;
        p.session = r.text(2).value_or("");
        p.provider = r.text(3).value_or("");
        p.interval_s = r.int4(5).value_or(5);
        p.expired = r.boolean(6).value_or(true);
        try {
            p.device_code =
                open_sealed(p.provider, login_aad_session(p.key), "device_code", r.bytea(4))
                    .value_or("");
        } catch (const Error&) {
            p.device_code.clear();  // a value that does not open ends its own login only
        }
        picked.push_back(std::move(p));
    }
    std::vector<DuePoll> out;
    for (DuePoll& p : picked) {
        if (p.expired) {
            (void)mark_failed(p.key, "expired_token: the device code expired");
        } else if (p.device_code.empty()) {
            (void)mark_failed(p.key, "the device code could not be opened");
        } else {
            later.run({text_arg(p.key), timestamptz_arg(now)}, false);
            out.push_back(std::move(p));
        }
    }
    return out;
}

std::optional<Time> next_device_poll() {
    static Statement next(
        "SELECT pg_catalog.min(next_poll_at) FROM upstream_token.login "
        "WHERE status = 'pending' AND flow = 'device_code'");
    next.run({}, true, 1);
    return ResultRow().timestamptz(1);
}

void device_poll_later(const std::string& key, std::int64_t interval_s) {
    static Statement later(
        "UPDATE upstream_token.login SET poll_interval = $2, next_poll_at = pg_catalog.now() "
        "OPERATOR(pg_catalog.+) pg_catalog.make_interval(secs => $2) "
        "WHERE id = $1 AND status = 'pending'");
    later.run({text_arg(key), int4_arg(static_cast<std::int32_t>(interval_s))}, false);
}

void fail_orphaned_redemptions() {
    static Statement orphans(
        "SELECT id FROM upstream_token.login WHERE status = 'redeeming' FOR UPDATE SKIP LOCKED");
    const auto n = orphans.run({}, false);
    std::vector<std::string> keys;
    for (std::uint64_t i = 0; i < n; ++i) keys.push_back(ResultRow(i).text(1).value_or(""));
    for (const std::string& key : keys) {
        (void)mark_failed(key, "the engine restarted while redeeming the code; sign in again");
    }
}

void fail_login(const std::string& key, const std::string& why) {
    (void)mark_failed(key, why);
}

}  // namespace upstream_token::pg
