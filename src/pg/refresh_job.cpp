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

// The columns begin reads from a token row, copied out of SPI: a batch reads every row
// before any is looked at, and looking runs statements of its own.
struct BeginRow {
    std::optional<std::string> refresh_ct;
    std::int64_t generation = 0;
    std::string status;
    std::optional<Time> next_attempt_at;
    std::int32_t failure_count = 0;
    std::optional<std::string> id_claims, subject, client_id, last_error;
    std::optional<Time> refresh_expires_at;
    std::optional<std::string> refresh_expiry_source, grant_type, scope, audience, subject_session;
};

// Reads the rows of the jobs' tokens with one statement, with `snapshot`; a job whose row is
// gone gets none.
std::vector<std::optional<BeginRow>> read_rows(const std::vector<RefreshJob*>& jobs,
                                               Snapshot snapshot) {
    static Statement read(
        "SELECT t.session, t.provider, refresh_token, generation, status, next_attempt_at, "
        "failure_count, id_claims::pg_catalog.text, subject, client_id, last_error, "
        "refresh_expires_at, refresh_expiry_source, grant_type, scope, audience, "
        "subject_session FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2)) "
        "AS k (session, provider) JOIN upstream_token.token t "
        "ON t.session = k.session AND t.provider = k.provider");
    std::vector<Arg> sessions, providers;
    for (const RefreshJob* job : jobs) {
        sessions.push_back(text_arg(job->session));
        providers.push_back(text_arg(job->provider));
    }
    const JobsByToken index(jobs);
    const auto n =
        read.run({array_arg(TEXTOID, sessions), array_arg(TEXTOID, providers)}, true, 0, snapshot);
    std::vector<std::optional<BeginRow>> rows(jobs.size());
    for (std::uint64_t i = 0; i < n; ++i) {
        const ResultRow r(i);
        const auto at = index.find(r.text(1), r.text(2));
        if (!at) continue;
        BeginRow& row = rows[*at].emplace();
        row.refresh_ct = r.bytea(3);
        row.generation = r.int8(4).value_or(0);
        row.status = r.text(5).value_or("");
        row.next_attempt_at = r.timestamptz(6);
        row.failure_count = r.int4(7).value_or(0);
        row.id_claims = r.text(8);
        row.subject = r.text(9);
        row.client_id = r.text(10);
        row.last_error = r.text(11);
        row.refresh_expires_at = r.timestamptz(12);
        row.refresh_expiry_source = r.text(13);
        row.grant_type = r.text(14);
        row.scope = r.text(15);
        row.audience = r.text(16);
        row.subject_session = r.text(17);
    }
    return rows;
}

// The binding claims a refreshed ID token must match: the login ID token's, else what
// store_upstream_token recorded (subject, client id).
std::optional<IdClaims> stored_binding(const BeginRow& r) {
    if (r.id_claims) return claims_from_json(*r.id_claims);
    if (!r.subject) return std::nullopt;
    IdClaims c;
    c.sub = *r.subject;
    c.aud.push_back(r.client_id.value_or(""));
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
std::optional<std::string> subject_token(const RefreshJob& job) {
    static Statement read(
        "SELECT access_token, expires_at, status FROM upstream_token.token "
        "WHERE session = $1 AND provider = $2");
    const std::string& subject = job.grant->subject_session;
    // A snapshot of its own: a job of the same batch may have changed that row (the batch's
    // snapshot predates it).
    Snapshot latest = pg_call([] { return GetLatestSnapshot(); });
    if (read.run({text_arg(subject), text_arg(job.provider)}, true, 1, latest) == 0) {
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
BeginStep begin_grant(RefreshJob& job, HttpRequestSpec& spec) {
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
        const auto subject = subject_token(job);
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

// Takes the token lock without waiting; false when another process holds it.
bool take_token_lock(RefreshJob& job) {
    job.lock_key = token_lock_key(job.provider, job.session);
    if (job.lock_held) return true;
    LOCKTAG tag = token_lock_tag(job.lock_key);
    const LockAcquireResult r =
        pg_call([&] { return LockAcquire(&tag, ExclusiveLock, true, true); });
    if (r == LOCKACQUIRE_NOT_AVAIL) return false;
    job.lock_held = true;
    return true;
}

// Decides from the row read after the lock: answered without a network call, or the request.
BeginStep decide(RefreshJob& job, HttpRequestSpec& spec, const std::optional<BeginRow>& row) {
    // What a begin of this job in a rolled-back transaction may have left.
    job.grant.reset();
    job.new_row = false;
    job.read_generation = 0;
    job.binding.reset();
    job.retry_planned.reset();
    job.result = JobResult{};
    if (!row) {
        if (job.grant_params.empty()) {
            return answer(job, false, ErrorCode::session_not_found,
                          "the token was deleted before it could be refreshed");
        }
        job.grant = grant_params_from_json(job.grant_params);  // its first token
        job.new_row = true;
        return begin_grant(job, spec);
    }
    const BeginRow& r = *row;
    const auto generation = r.generation;
    if (r.grant_type && *r.grant_type != "refresh_token") {
        GrantParams g;
        g.grant = *r.grant_type == grant_name(Grant::client_credentials) ? Grant::client_credentials
                                                                         : Grant::token_exchange;
        g.scope = r.scope;
        g.audience = r.audience;
        g.subject_session = r.subject_session.value_or("");
        job.grant = std::move(g);
        job.read_generation = generation;
    }
    const std::string& status = r.status;
    const auto& next_attempt = r.next_attempt_at;
    job.failure_count = r.failure_count;
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
    const auto& refresh_ct = r.refresh_ct;
    // Past an estimated end the refresh is still sent: the provider decides (invalid_grant).
    job.refresh_expiry_source = parse_refresh_expiry_source(r.refresh_expiry_source);
    if (const auto& refresh_end = r.refresh_expires_at;
        refresh_ct && refresh_end &&
        refresh_token_past_end(now, *refresh_end, job.refresh_expiry_source)) {
        mark_refresh_expired(job, *refresh_ct);
        return answer(job, false, ErrorCode::reauth_required,
                      "the refresh token has expired; sign-in is required");
    }
    if (next_attempt && *next_attempt > now && !job.force) {
        const std::string last = r.last_error.value_or("");
        job.result.detail = last;
        job.retry_planned = *next_attempt;  // keep the token planned for when backoff ends
        // Report the class of the failure that started the backoff, not "transient" for all.
        const bool misconfigured =
            last.rfind(failure_class_name(FailureClass::client_misconfigured), 0) == 0;
        return answer(job, false,
                      misconfigured ? ErrorCode::provider_misconfigured : ErrorCode::refresh_failed,
                      "the provider failed recently; the next attempt is scheduled later");
    }
    if (job.grant) return begin_grant(job, spec);
    if (!refresh_ct) {
        return answer(job, false, ErrorCode::no_refresh_token, "no refresh token is stored");
    }
    job.old_refresh_ct = *refresh_ct;
    job.binding = stored_binding(r);
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

}  // namespace

std::vector<BeginStep> begin_all_in_transaction(const std::vector<RefreshJob*>& jobs,
                                                std::vector<HttpRequestSpec>& specs) {
    std::vector<BeginStep> steps(jobs.size(), BeginStep::lock_busy);
    std::vector<RefreshJob*> locked;
    std::vector<std::size_t> at;
    for (std::size_t i = 0; i < jobs.size(); ++i) {
        if (!take_token_lock(*jobs[i])) continue;
        locked.push_back(jobs[i]);
        at.push_back(i);
    }
    if (locked.empty()) return steps;
    // Read with a snapshot taken after the locks: the transaction's own predates them and
    // would miss the commit of a refresher that held a lock until just now (I1).
    Snapshot after_lock = pg_call([] { return GetLatestSnapshot(); });
    const auto rows = read_rows(locked, after_lock);
    for (std::size_t k = 0; k < locked.size(); ++k) {
        steps[at[k]] = decide(*locked[k], specs[at[k]], rows[k]);
    }
    return steps;
}

BeginStep begin_refresh(RefreshJob& job, HttpRequestSpec& spec) {
    WorkerTxn txn;
    std::vector<HttpRequestSpec> specs(1);
    const BeginStep step = begin_all_in_transaction({&job}, specs).front();
    txn.commit();
    spec = std::move(specs.front());
    return step;
}

JobsByToken::JobsByToken(const std::vector<RefreshJob*>& jobs) {
    for (std::size_t i = 0; i < jobs.size(); ++i) {
        index_.emplace(
            std::make_pair(std::string_view(jobs[i]->session), std::string_view(jobs[i]->provider)),
            i);
    }
}

std::optional<std::size_t> JobsByToken::find(const std::optional<std::string>& session,
                                             const std::optional<std::string>& provider) const {
    if (!session || !provider) return std::nullopt;
    const auto it =
        index_.find(std::make_pair(std::string_view(*session), std::string_view(*provider)));
    if (it == index_.end()) return std::nullopt;
    return it->second;
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