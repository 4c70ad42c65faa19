#include "pg/prelude.hpp"
#include "pg/refresh_job.hpp"

#include "core/expiry.hpp"
#include "core/lock_key.hpp"
#include "core/grant_request.hpp"
#include "core/refresh_request.hpp"
#include "pg/guard.hpp"
#include "pg/gucs.hpp"
#include "pg/secrets.hpp"
#include "pg/spi.hpp"
#include "pg/store.hpp"
#include "pg/token_lock.hpp"
#include "pg/worker_txn.hpp"

namespace upstream_token::pg {

// Queues the event; see refresh_job.hpp.
void notify_token_event(const RefreshJob& job, const char* event) {
    static Statement notify(
        "SELECT pg_catalog.pg_notify('upstream_token_events', pg_catalog.json_build_object("
        "'session', $1::pg_catalog.text, 'provider', $2::pg_catalog.text, 'event', "
        "$3::pg_catalog.text)::pg_catalog.text)");
    notify.run({text_arg(job.session), text_arg(job.provider), text_arg(event)}, false);
}

// Short class name stored in last_error and shown in token_status.
const char* failure_class_name(FailureClass f) {
    switch (f) {
        case FailureClass::none:
            return "none";
        case FailureClass::reauth_required:
            return "reauth_required";
        case FailureClass::client_misconfigured:
            return "client_misconfigured";
        case FailureClass::transient:
            return "transient";
        case FailureClass::protocol:
            return "protocol";
    }
    return "unknown";
}

namespace {

// A refresh token past its stated lifetime is never sent (I8): the row is marked, the app
// told. Only the version that was read is marked (a login stored since is left alone).
void mark_refresh_expired(const RefreshJob& job, const std::string& refresh_ct) {
    static Statement mark(
        "UPDATE upstream_token.token SET status = 'expired', "
        "last_error = 'expired: the refresh token reached the end of its lifetime', "
        "updated_at = pg_catalog.now() WHERE session = $1 AND provider = $2 AND status = 'active' "
        "AND refresh_token = $3");
    if (mark.run({text_arg(job.session), text_arg(job.provider), bytea_arg(refresh_ct)}, false) >
        0) {
        notify_token_event(job, "expired");
    }
}

// Answers the job without a network call.
BeginStep answer(RefreshJob& job, bool ok, ErrorCode code, std::string message,
                 std::string detail = {}) {
    job.result.ok = ok;
    job.result.code = code;
    job.result.message = std::move(message);
    if (!detail.empty()) job.result.detail = std::move(detail);
    return BeginStep::answered;
}

// The binding claims a refreshed ID token must match: the login ID token's, else what
// store_upstream_token recorded (subject, client id).
std::optional<IdClaims> stored_binding(const ResultRow& r, int claims_col, int subject_col,
                                       int client_col) {
    if (auto json = r.text(claims_col)) return claims_from_json(*json);
    auto subject = r.text(subject_col);
    if (!subject) return std::nullopt;
    IdClaims c;
    c.sub = *subject;
    c.aud.push_back(r.text(client_col).value_or(""));
    return c;
}

// The job's provider (cached), whose settings the job takes on.
const ProviderRow* job_provider(RefreshJob& job) {
    const ProviderRow* provider = cached_provider(job.provider);
    if (provider == nullptr) throw Error(ErrorCode::provider_not_found, "the provider was dropped");
    job.threshold = provider->refresh_threshold.value_or(refresh_threshold());
    job.default_lifetime = provider->default_lifetime;
    job.refresh_token_ttl = provider->refresh_token_ttl;
    job.keep_alive_idle = provider->keep_alive_idle;
    job.response_fields = provider->response_fields;
    return provider;
}

// The access token of the session a token exchange acts for, if it is active and unexpired.
std::optional<std::string> subject_token(const RefreshJob& job, Snapshot snapshot) {
    static Statement read(
        "SELECT access_token, expires_at, status FROM upstream_token.token "
        "WHERE session = $1 AND provider = $2");
    const std::string& subject = job.grant->subject_session;
    if (read.run({text_arg(subject), text_arg(job.provider)}, true, 1, snapshot) == 0) {
        return std::nullopt;
    }
    ResultRow r;
    if (r.text(3).value_or("") != "active" || r.timestamptz(2).value_or(Time{}) <= now_time()) {
        return std::nullopt;
    }
    auto access = open_sealed(job.provider, subject, "access_token", r.bytea(1));
    if (!access || access->empty()) return std::nullopt;
    return access;
}

// The request that renews a grant's token: the client credentials grant again, or a new
// exchange of the session's current access token.
BeginStep begin_grant(RefreshJob& job, HttpRequestSpec& spec, Snapshot snapshot) {
    job.sent_secrets.clear();
    const ProviderRow* provider = job_provider(job);
    const ClientCredentials client = client_credentials(*provider);
    const GrantParams& g = *job.grant;
    // No scope given, none sent: the provider's own scope is the login's (openid...).
    std::optional<std::string_view> scope, audience;
    if (g.scope) scope = *g.scope;
    if (g.audience) audience = *g.audience;
    HttpRequest request;
    if (g.grant == Grant::client_credentials) {
        request = build_client_credentials_request(client, provider->token_endpoint, scope,
                                                   audience, now_time());
    } else {
        const auto subject = subject_token(job, snapshot);
        if (!subject) {
            return answer(job, false, ErrorCode::session_not_found,
                          "the session has no valid access token to exchange",
                          "get_upstream_token(session, provider) renews it");
        }
        request = build_token_exchange_request(client, provider->token_endpoint, *subject, audience,
                                               g.scope, now_time());
        job.sent_secrets.push_back(*subject);
    }
    spec = provider_request(*provider, provider->token_endpoint, std::move(request));
    if (client.secret) job.sent_secrets.push_back(*client.secret);
    return BeginStep::send;
}

}  // namespace

BeginStep begin_in_transaction(RefreshJob& job, HttpRequestSpec& spec) {
    job.lock_key = token_lock_key(job.provider, job.session);
    if (!job.lock_held) {
        LOCKTAG tag = token_lock_tag(job.lock_key);
        const LockAcquireResult r =
            pg_call([&] { return LockAcquire(&tag, ExclusiveLock, true, true); });
        if (r == LOCKACQUIRE_NOT_AVAIL) {
            return BeginStep::lock_busy;
        }
        job.lock_held = true;
    }
    static Statement read(
        "SELECT refresh_token, generation, status, next_attempt_at, failure_count, "
        "id_claims::pg_catalog.text, subject, client_id, last_error, refresh_expires_at, "
        "refresh_expiry_source, grant_type, scope, audience, subject_session "
        "FROM upstream_token.token WHERE session = $1 AND provider = $2");
    // Read with a snapshot taken after the lock: the transaction's own predates it and would
    // miss the commit of a refresher that held the lock until just now (I1).
    Snapshot after_lock = pg_call([] { return GetLatestSnapshot(); });
    if (read.run({text_arg(job.session), text_arg(job.provider)}, true, 1, after_lock) == 0) {
        if (job.grant_params.empty()) {
            return answer(job, false, ErrorCode::session_not_found,
                          "the token was deleted before it could be refreshed");
        }
        job.grant = grant_params_from_json(job.grant_params);  // its first token
        job.new_row = true;
        return begin_grant(job, spec, after_lock);
    }
    ResultRow r;
    const auto generation = r.int8(2).value_or(0);
    if (const auto grant_type = r.text(12); grant_type && *grant_type != "refresh_token") {
        GrantParams g;
        g.grant = *grant_type == grant_name(Grant::client_credentials) ? Grant::client_credentials
                                                                       : Grant::token_exchange;
        g.scope = r.text(13);
        g.audience = r.text(14);
        g.subject_session = r.text(15).value_or("");
        job.grant = std::move(g);
        job.read_generation = generation;
    }
    const std::string status = r.text(3).value_or("");
    const auto next_attempt = r.timestamptz(4);
    job.failure_count = r.int4(5).value_or(0);
    if (generation > job.seen_generation) {
        return answer(job, true, ErrorCode::internal, {});  // another refresh already won
    }
    if (status == "reauth_required" || status == "expired") {
        return answer(job, false, ErrorCode::reauth_required,
                      status == "expired"
                          ? "the refresh token has expired; sign-in is required"
                          : "the provider rejected the refresh token; sign-in is required");
    }
    if (status == "invalid_binding") {
        return answer(job, false, ErrorCode::invalid_binding,
                      "the provider returned an ID token for a different user or client");
    }
    const Time now = now_time();
    auto refresh_ct = r.bytea(1);
    // Past an estimated end the refresh is still sent: the provider decides (invalid_grant).
    job.refresh_expiry_source = parse_refresh_expiry_source(r.text(11));
    if (const auto refresh_end = r.timestamptz(10);
        refresh_ct && refresh_end &&
        refresh_token_past_end(now, *refresh_end, job.refresh_expiry_source)) {
        mark_refresh_expired(job, *refresh_ct);
        return answer(job, false, ErrorCode::reauth_required,
                      "the refresh token has expired; sign-in is required");
    }
    if (next_attempt && *next_attempt > now && !job.force) {
        const std::string last = r.text(9).value_or("");
        job.result.detail = last;
        job.retry_planned = *next_attempt;  // keep the token planned for when backoff ends
        // Report the class of the failure that started the backoff, not "transient" for all.
        const bool misconfigured =
            last.rfind(failure_class_name(FailureClass::client_misconfigured), 0) == 0;
        return answer(job, false,
                      misconfigured ? ErrorCode::provider_misconfigured : ErrorCode::refresh_failed,
                      "the provider failed recently; the next attempt is scheduled later");
    }
    if (job.grant) return begin_grant(job, spec, after_lock);
    if (!refresh_ct) {
        return answer(job, false, ErrorCode::no_refresh_token, "no refresh token is stored");
    }
    job.old_refresh_ct = *refresh_ct;
    job.binding = stored_binding(r, 6, 7, 8);
    const std::string refresh_plain =
        open_sealed(job.provider, job.session, "refresh_token", refresh_ct).value_or("");
    const ProviderRow* provider = job_provider(job);
    const ClientCredentials client = client_credentials(*provider);

    std::optional<std::string_view> scope;
    if (provider->scope) scope = *provider->scope;
    spec = provider_request(*provider, provider->token_endpoint,
                            build_refresh_request(client, provider->token_endpoint, refresh_plain,
                                                  scope, now_time(), provider->refresh_params));
    job.sent_secrets = {refresh_plain};
    if (client.secret) job.sent_secrets.push_back(*client.secret);
    return BeginStep::send;
}

BeginStep begin_refresh(RefreshJob& job, HttpRequestSpec& spec) {
    WorkerTxn txn;
    const BeginStep step = begin_in_transaction(job, spec);
    txn.commit();
    return step;
}

void release_refresh_lock(RefreshJob& job) noexcept {
    if (!job.lock_held) return;
    try {
        LOCKTAG tag = token_lock_tag(job.lock_key);
        pg_call([&] { (void)LockRelease(&tag, ExclusiveLock, true); });
    } catch (...) {
        // Session locks also go away when the process exits.
    }
    job.lock_held = false;
}

}  // namespace upstream_token::pg