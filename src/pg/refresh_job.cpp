#include "pg/prelude.hpp"
#include "pg/refresh_job.hpp"

#include <algorithm>

#include "core/backoff.hpp"
#include "core/expiry.hpp"
#include "core/lock_key.hpp"
#include "core/presets.hpp"
#include "core/redact.hpp"
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

namespace {

constexpr std::size_t kLastErrorMax = 200;

// Queues a transactional NOTIFY on upstream_token_events; delivered only if the change commits.
void notify_event(const RefreshJob& job, const char* event) {
    static Statement notify(
        "SELECT pg_catalog.pg_notify('upstream_token_events', pg_catalog.json_build_object("
        "'session', $1::pg_catalog.text, 'provider', $2::pg_catalog.text, 'event', "
        "$3::pg_catalog.text)::pg_catalog.text)");
    notify.run({text_arg(job.session), text_arg(job.provider), text_arg(event)}, false);
}

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
        notify_event(job, "expired");
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

// The error a failure class is reported with.
ErrorCode code_of(FailureClass f) {
    switch (f) {
        case FailureClass::reauth_required:
            return ErrorCode::reauth_required;
        case FailureClass::client_misconfigured:
            return ErrorCode::provider_misconfigured;
        default:
            return ErrorCode::refresh_failed;
    }
}

// Short class name stored in last_error and shown in token_status.
const char* class_name(FailureClass f) {
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

// Compares a new ID token with the stored binding; empty when it matches.
std::optional<std::string> binding_problem(const RefreshJob& job, const std::string& id_token) {
    if (!job.binding) return std::nullopt;
    IdClaims fresh;
    try {
        fresh = decode_id_token(id_token);
    } catch (const Error&) {
        return std::string("malformed id_token");
    }
    IdClaims expected = *job.binding;
    if (expected.iss.empty()) expected.iss = fresh.iss;  // no login ID token: iss unknown
    if (auto claim = binding_mismatch(expected, fresh)) return "claim " + *claim + " differs";
    return std::nullopt;
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
            last.rfind(class_name(FailureClass::client_misconfigured), 0) == 0;
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

namespace {

// last_error after a saved answer: the binding problem and/or "warning: " and the odd fields
// that were defaulted (names and JSON types only); nullopt for a clean answer.
std::optional<std::string> success_note(const std::optional<std::string>& problem,
                                        const std::vector<std::string>& warnings) {
    std::string note;
    if (problem) note = "invalid_binding: " + *problem;
    for (std::size_t i = 0; i < warnings.size(); ++i) {
        note += i == 0 ? (note.empty() ? "warning: " : "; warning: ") : "; ";
        note += warnings[i];
    }
    if (note.empty()) return std::nullopt;
    if (note.size() > kLastErrorMax) note.resize(kLastErrorMax);
    return note;
}

// The answer's fields the provider keeps with the token, as a JSON object (they replace the
// stored ones); nullopt when the answer has none of them (the stored ones stay).
std::optional<std::string> kept_fields(const RefreshJob& job, const TokenResponse& t) {
    std::map<std::string, std::string> kept;
    for (const std::string& name : job.response_fields) {
        const auto it = t.other_fields.find(name);
        if (it != t.other_fields.end()) kept.insert(*it);
    }
    if (kept.empty()) return std::nullopt;
    return json_from_string_map(kept);
}

// The client id a grant's new row records (the provider's, as the engine authenticates).
std::string job_client_id(const RefreshJob& job) {
    const ProviderRow* provider = cached_provider(job.provider);
    return provider != nullptr ? provider->client_id : std::string("?");
}

// Saves a grant's token (client credentials, exchange): inserted when it is the first, else
// replacing the version that was read. Its refresh token, if the answer has one, is not kept:
// the grant itself renews it. No event: the application's own tokens have no session.
bool save_grant_tokens(RefreshJob& job, const TokenResponse& t, const std::string& access_ct,
                       Time expires_at, Time issued_at) {
    const GrantParams& g = *job.grant;
    const std::string client_id = job_client_id(job);
    static Statement insert(
        "INSERT INTO upstream_token.token (session, provider, client_id, access_token, "
        "token_type, scope, expires_at, issued_at, refreshed_at, grant_type, audience, "
        "subject_session, attributes, last_error) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, pg_catalog.now(), $9, $10, $11, "
        "$12::pg_catalog.jsonb, $13) ON CONFLICT (session, provider) DO NOTHING "
        "RETURNING generation");
    static Statement update(
        "UPDATE upstream_token.token SET access_token = $3, token_type = $4, expires_at = $5, "
        "issued_at = $6, generation = generation + 1, status = 'active', failure_count = 0, "
        "next_attempt_at = NULL, last_error = $8, refreshed_at = pg_catalog.now(), "
        "updated_at = pg_catalog.now(), attributes = coalesce($9::pg_catalog.jsonb, attributes) "
        "WHERE session = $1 AND provider = $2 AND generation = $7 RETURNING generation");
    const auto last_error = success_note(std::nullopt, t.warnings);
    const auto n =
        job.new_row
            ? insert.run({text_arg(job.session), text_arg(job.provider), text_arg(client_id),
                          bytea_arg(access_ct), text_arg(t.token_type), text_arg(g.scope),
                          timestamptz_arg(expires_at), timestamptz_arg(issued_at),
                          text_arg(grant_name(g.grant)), text_arg(g.audience),
                          text_arg(g.grant == Grant::token_exchange
                                       ? std::optional<std::string_view>(g.subject_session)
                                       : std::nullopt),
                          text_arg(kept_fields(job, t)), text_arg(last_error)},
                         false)
            : update.run({text_arg(job.session), text_arg(job.provider), bytea_arg(access_ct),
                          text_arg(t.token_type), timestamptz_arg(expires_at),
                          timestamptz_arg(issued_at), int8_arg(job.read_generation),
                          text_arg(last_error), text_arg(kept_fields(job, t))},
                         false);
    if (n == 0) return false;
    job.new_generation = ResultRow().int8(1).value_or(0);
    job.new_expires_at = expires_at;
    job.new_issued_at = issued_at;
    return true;
}

// Saves new tokens with the optimistic UPDATE (I2); false when another writer moved the row.
bool save_tokens(RefreshJob& job, const TokenResponse& t) {
    // The provider counted expires_in from some instant after the request was sent: the send
    // time is the safe (early) base, less a second for providers that truncate their clock;
    // the save time would be late by the whole exchange.
    const Time now = (job.sent_at == Time{} ? now_time() : job.sent_at) - kProviderClockAllowance;
    const Time expires_at = access_expiry(now, t.expires_in, job.default_lifetime);
    // NULL keeps the stored refresh-token expiry (a kept token's stated end).
    std::optional<Time> refresh_expires_at;
    std::optional<std::string_view> refresh_expiry_source;
    if (const auto e = refreshed_refresh_expiry(
            now, t.refresh_expires_in, t.refresh_token.has_value(), job.refresh_expiry_source,
            job.refresh_token_ttl, refresh_token_ttl())) {
        refresh_expires_at = e->at;
        refresh_expiry_source = refresh_expiry_source_name(e->source);
    }
    const std::string access_ct = seal(job.provider, job.session, "access_token", t.access_token);
    std::optional<std::string> refresh_ct, id_ct;
    if (job.grant) return save_grant_tokens(job, t, access_ct, expires_at, now);
    if (t.refresh_token)
        refresh_ct = seal(job.provider, job.session, "refresh_token", *t.refresh_token);
    if (t.id_token) id_ct = seal(job.provider, job.session, "id_token", *t.id_token);
    // OIDC Core 12.2, checked in memory and saved in the same commit as the tokens: the
    // rotated tokens are kept whatever the check says (I3), and no reader ever sees a foreign
    // user's token as active between two commits.
    std::optional<std::string> problem;
    if (t.id_token) problem = binding_problem(job, *t.id_token);
    // Odd optional fields were defaulted (never fatal); say which in last_error, status active.
    std::optional<std::string> last_error = success_note(problem, t.warnings);
    // The event goes out with the same statement (and commit) as the save.
    static Statement update(
        "WITH saved AS (UPDATE upstream_token.token SET access_token = $3, "
        "refresh_token = coalesce($4, refresh_token), id_token = coalesce($5, id_token), "
        "token_type = $6, scope = coalesce($7, scope), expires_at = $8, "
        "refresh_expires_at = coalesce($9, refresh_expires_at), "
        "refresh_expires_stated_at = CASE WHEN $9 IS NULL THEN refresh_expires_stated_at "
        "ELSE $11 END, "
        "refresh_expiry_source = coalesce($14, refresh_expiry_source), "
        "generation = generation + 1, issued_at = $11, "
        "status = CASE WHEN $13 THEN 'invalid_binding' ELSE 'active' END, "
        "failure_count = 0, next_attempt_at = NULL, last_error = $12, "
        "refreshed_at = pg_catalog.now(), updated_at = pg_catalog.now(), "
        "attributes = coalesce($15::pg_catalog.jsonb, attributes) "
        "WHERE session = $1 AND provider = $2 AND refresh_token = $10 "
        "RETURNING generation, status) "
        "SELECT generation, pg_catalog.pg_notify('upstream_token_events', "
        "pg_catalog.json_build_object('session', $1, 'provider', $2, 'event', "
        "CASE WHEN status = 'active' THEN 'refreshed' ELSE status END)::pg_catalog.text) FROM "
        "saved");
    const auto n = update.run(
        {text_arg(job.session), text_arg(job.provider), bytea_arg(access_ct), bytea_arg(refresh_ct),
         bytea_arg(id_ct), text_arg(t.token_type), text_arg(t.scope), timestamptz_arg(expires_at),
         timestamptz_arg(refresh_expires_at), bytea_arg(job.old_refresh_ct), timestamptz_arg(now),
         text_arg(last_error), bool_arg(problem.has_value()), text_arg(refresh_expiry_source),
         text_arg(kept_fields(job, t))},
        false);
    if (n == 0) return false;
    job.new_generation = ResultRow().int8(1).value_or(0);
    job.new_expires_at = expires_at;
    job.new_issued_at = now;
    if (problem) {
        job.result.ok = false;
        job.result.code = ErrorCode::invalid_binding;
        job.result.message = "the provider returned an ID token for a different user or client";
        job.result.detail = *problem;
    }
    return true;
}

// A rotated refresh token whose row moved on during the exchange is live at the provider
// with no row to hold it. Its revocation is queued (in the same transaction) only when the app
// revoked the very version that was refreshed: revoke_upstream_token leaves a tombstone that
// outlives the delivery of its own revocation. A newer login (often of the same grant, which
// a revocation would end) or delete_upstream_token (do not contact the provider) leaves none:
// then the token is dropped, as the row it would have replaced was.
void revoke_orphan(RefreshJob& job, const std::string& refresh_token) {
    static Statement queue(
        "INSERT INTO upstream_token.revocation (provider, session, token, token_column) "
        "SELECT p.name, $2, $3, 'refresh_token' FROM upstream_token.provider p "
        "WHERE p.name = $1 AND p.revocation_endpoint IS NOT NULL AND EXISTS ("
        "SELECT 1 FROM upstream_token.token_tombstone d WHERE d.provider = $1 AND d.session = $2 "
        "AND d.refresh_digest = pg_catalog.sha256($4))");
    const std::string sealed = seal(job.provider, job.session, "refresh_token", refresh_token);
    if (queue.run({text_arg(job.provider), text_arg(job.session), bytea_arg(sealed),
                   bytea_arg(job.old_refresh_ct)},
                  false) > 0) {
        job.orphan_revocation_queued = true;
    }
}

// True when the row moved on to the very refresh token that was sent (the app stored the same
// login again: a retried login callback). That credential is consumed now, so the answer is
// what keeps the session: the stored version becomes the optimistic value and the save is
// tried again. False for another token, no row, or a value that does not open.
bool same_refresh_token_stored(RefreshJob& job) {
    static Statement read(
        "SELECT refresh_token FROM upstream_token.token WHERE session = $1 AND provider = $2");
    if (read.run({text_arg(job.session), text_arg(job.provider)}, false, 1) == 0) return false;
    const auto current = ResultRow().bytea(1);
    if (!current || *current == job.old_refresh_ct) return false;
    try {
        const auto stored = open_sealed(job.provider, job.session, "refresh_token", current);
        const auto sent = open_sealed(job.provider, job.session, "refresh_token",
                                      std::optional<std::string>(job.old_refresh_ct));
        if (!stored || !sent || *stored != *sent) return false;
    } catch (const Error&) {
        return false;  // unreadable under the keys at hand: not provably the same token
    }
    job.old_refresh_ct = *current;
    return true;
}

// Records a grant's failed exchange with its backoff; the first one inserts a row holding no
// token, so callers see the backoff instead of asking the provider again at once.
void save_grant_failure(RefreshJob& job, Time next, const std::string& last) {
    const GrantParams& g = *job.grant;
    static Statement insert(
        "INSERT INTO upstream_token.token (session, provider, client_id, expires_at, scope, "
        "grant_type, audience, subject_session, failure_count, next_attempt_at, last_error) "
        "VALUES ($1, $2, $3, pg_catalog.now(), $4, $5, $6, $7, 1, $8, $9) "
        "ON CONFLICT (session, provider) DO NOTHING");
    static Statement update(
        "UPDATE upstream_token.token SET failure_count = failure_count + 1, next_attempt_at = $4, "
        "last_error = $5, updated_at = pg_catalog.now() "
        "WHERE session = $1 AND provider = $2 AND generation = $3");
    const auto n =
        job.new_row
            ? insert.run(
                  {text_arg(job.session), text_arg(job.provider), text_arg(job_client_id(job)),
                   text_arg(g.scope), text_arg(grant_name(g.grant)), text_arg(g.audience),
                   text_arg(g.grant == Grant::token_exchange
                                ? std::optional<std::string_view>(g.subject_session)
                                : std::nullopt),
                   timestamptz_arg(next), text_arg(last)},
                  false)
            : update.run({text_arg(job.session), text_arg(job.provider),
                          int8_arg(job.read_generation), timestamptz_arg(next), text_arg(last)},
                         false);
    if (n > 0) job.retry_planned = next;
}

// Records a failed exchange on the row (same optimistic condition), with backoff.
void save_failure(RefreshJob& job, const ExchangeOutcome& o, double unit_random) {
    const int failures = job.failure_count + 1;
    Micros delay = backoff_delay(failures, seconds(1), seconds(300), unit_random);
    if (o.failure == FailureClass::client_misconfigured) delay = std::max(delay, seconds(60));
    if (o.retry_after) delay = std::max(delay, *o.retry_after);
    std::string last = std::string(class_name(o.failure)) + ": " + o.error;
    if (!o.message.empty()) last += " (" + o.message + ")";
    if (last.size() > kLastErrorMax) last.resize(kLastErrorMax);
    // A grant's token is not a sign-in: invalid_grant (a subject token the provider no longer
    // takes, say) is reported to the caller but leaves the row renewable.
    const bool reauth = o.failure == FailureClass::reauth_required && !job.grant;
    if (job.grant) {
        save_grant_failure(job, now_time() + delay, last);
        return;
    }
    static Statement update(
        "UPDATE upstream_token.token SET "
        "status = CASE WHEN $3 THEN 'reauth_required' ELSE status END, "
        "failure_count = failure_count + 1, next_attempt_at = $4, last_error = $5, "
        "updated_at = pg_catalog.now() "
        "WHERE session = $1 AND provider = $2 AND refresh_token = $6");
    std::optional<Time> next;
    if (!reauth) next = now_time() + delay;
    const auto n =
        update.run({text_arg(job.session), text_arg(job.provider), bool_arg(reauth),
                    timestamptz_arg(next), text_arg(last), bytea_arg(job.old_refresh_ct)},
                   false);
    if (n > 0 && reauth) notify_event(job, "reauth_required");
    if (n > 0) job.retry_planned = next;
}

// True for "lock_timeout expired": the row is locked by a client transaction.
bool is_lock_timeout(const PgError& e) {
    return e.data()->sqlerrcode == ERRCODE_LOCK_NOT_AVAILABLE;
}

}  // namespace

void persist_in_transaction(RefreshJob& job, double unit_random) {
    if (!job.sent_secrets.empty()) {  // before the texts reach the row, the log or a caller
        job.outcome->error = redact_secrets(std::move(job.outcome->error), job.sent_secrets);
        job.outcome->message = redact_secrets(std::move(job.outcome->message), job.sent_secrets);
        job.sent_secrets.clear();
    }
    // May run again after its transaction was rolled back: start from a clean result.
    job.result = JobResult{};
    job.result.network = true;
    job.orphan_revocation_queued = false;
    job.retry_planned.reset();
    const ExchangeOutcome& o = *job.outcome;
    if (o.failure != FailureClass::none) {
        save_failure(job, o, unit_random);
        job.result.code = code_of(o.failure);
        job.result.message = std::string("the provider refused or failed the ") +
                             (job.grant ? grant_name(job.grant->grant) : "refresh") + ": " +
                             o.error;
        job.result.detail = o.message;
        return;
    }
    bool saved = save_tokens(job, *o.tokens);
    if (job.grant) {  // a lost race: the token that won is served
        job.result.ok = true;
        return;
    }
    if (!saved && o.tokens->refresh_token && same_refresh_token_stored(job)) {
        saved = save_tokens(job, *o.tokens);
    }
    if (!saved && o.tokens->refresh_token) revoke_orphan(job, *o.tokens->refresh_token);
    // Saved (unless save_tokens found a binding problem), or zero rows: another writer (a new
    // login, a delete) moved the row on, and the caller serves what is stored.
    if (!saved || job.result.code != ErrorCode::invalid_binding) job.result.ok = true;
}

PersistStep persist_outcome(RefreshJob& job, double unit_random) {
    try {
        WorkerTxn txn;
        persist_in_transaction(job, unit_random);
        txn.commit();
    } catch (const PgError& e) {
        if (is_lock_timeout(e)) return PersistStep::row_locked;
        throw;
    }
    return PersistStep::done;
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
