#include "pg/prelude.hpp"
#include "pg/refresh_job.hpp"

#include <algorithm>
#include <functional>
#include <map>

#include "core/expiry.hpp"
#include "core/presets.hpp"
#include "core/redact.hpp"
#include "pg/guard.hpp"
#include "pg/gucs.hpp"
#include "pg/secrets.hpp"
#include "pg/spi.hpp"
#include "pg/store.hpp"
#include "pg/worker_txn.hpp"

namespace upstream_token::pg {

namespace {

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

// The instant an answer's lifetimes count from: the provider counted expires_in from some
// instant after the request was sent, so the send time is the safe (early) base, less a
// second for providers that truncate their clock; the save time would be late by the exchange.
Time answer_base(const RefreshJob& job) {
    return (job.sent_at == Time{} ? now_time() : job.sent_at) - kProviderClockAllowance;
}

// What a refreshed row is given, worked out once from the answer (sealed, checked).
struct RowUpdate {
    Time issued_at{};
    Time expires_at{};
    std::optional<Time> refresh_expires_at;  // NULL keeps the stored (a kept token's stated end)
    std::optional<std::string_view> refresh_expiry_source;
    std::string access_ct;
    std::optional<std::string> refresh_ct, id_ct, problem, last_error, attributes;
};

// The row's new values for an answer to a refresh token (not a grant's).
RowUpdate row_update(const RefreshJob& job, const TokenResponse& t) {
    RowUpdate u;
    u.issued_at = answer_base(job);
    u.expires_at = access_expiry(u.issued_at, t.expires_in, job.default_lifetime);
    if (const auto e = refreshed_refresh_expiry(
            u.issued_at, t.refresh_expires_in, t.refresh_token.has_value(),
            job.refresh_expiry_source, job.refresh_token_ttl, refresh_token_ttl())) {
        u.refresh_expires_at = e->at;
        u.refresh_expiry_source = refresh_expiry_source_name(e->source);
    }
    u.access_ct = seal(job.provider, job.session, "access_token", t.access_token);
    if (t.refresh_token)
        u.refresh_ct = seal(job.provider, job.session, "refresh_token", *t.refresh_token);
    if (t.id_token) u.id_ct = seal(job.provider, job.session, "id_token", *t.id_token);
    // OIDC Core 12.2, checked in memory and saved in the same commit as the tokens: the
    // rotated tokens are kept whatever the check says (I3), and no reader ever sees a foreign
    // user's token as active between two commits.
    if (t.id_token) u.problem = binding_problem(job, *t.id_token);
    // Odd optional fields were defaulted (never fatal); say which in last_error, status active.
    u.last_error = success_note(u.problem, t.warnings);
    u.attributes = kept_fields(job, t);
    return u;
}

// Takes a committed-to-be save into the job: the row's new version and the binding verdict.
void take_saved(RefreshJob& job, const RowUpdate& u, std::int64_t generation) {
    job.new_generation = generation;
    job.new_expires_at = u.expires_at;
    job.new_issued_at = u.issued_at;
    if (u.problem) {
        job.result.ok = false;
        job.result.code = ErrorCode::invalid_binding;
        job.result.message = "the provider returned an ID token for a different user or client";
        job.result.detail = *u.problem;
    }
}

// Writes refreshed tokens with the optimistic UPDATE (I2), every job's row in one statement
// (a statement's fixed cost, its CHECK constraints rebuilt among it, is most of a save's
// CPU), each row's event queued by the same statement; returns which rows took their update
// (the others were moved on by another writer). Jobs are distinct tokens (single-flight).
std::vector<bool> update_rows(const std::vector<RefreshJob*>& jobs,
                              const std::vector<RowUpdate>& updates) {
    std::vector<Arg> session, provider, access, refresh, id, type, scope, expires, refresh_expires,
        old_refresh, issued, last_error, problem, source, attributes;
    for (std::size_t i = 0; i < jobs.size(); ++i) {
        const RefreshJob& job = *jobs[i];
        const RowUpdate& u = updates[i];
        const TokenResponse& t = *job.outcome->tokens;
        session.push_back(text_arg(job.session));
        provider.push_back(text_arg(job.provider));
        access.push_back(bytea_arg(u.access_ct));
        refresh.push_back(bytea_arg(u.refresh_ct));
        id.push_back(bytea_arg(u.id_ct));
        type.push_back(text_arg(t.token_type));
        scope.push_back(text_arg(t.scope));
        expires.push_back(timestamptz_arg(u.expires_at));
        refresh_expires.push_back(timestamptz_arg(u.refresh_expires_at));
        old_refresh.push_back(bytea_arg(job.old_refresh_ct));
        issued.push_back(timestamptz_arg(u.issued_at));
        last_error.push_back(text_arg(u.last_error));
        problem.push_back(bool_arg(u.problem.has_value()));
        source.push_back(text_arg(u.refresh_expiry_source));
        attributes.push_back(text_arg(u.attributes));
    }
    static Statement update(
        "WITH v AS (SELECT * FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), "
        "pg_catalog.unnest($3), pg_catalog.unnest($4), pg_catalog.unnest($5), "
        "pg_catalog.unnest($6), pg_catalog.unnest($7), pg_catalog.unnest($8), "
        "pg_catalog.unnest($9), pg_catalog.unnest($10), pg_catalog.unnest($11), "
        "pg_catalog.unnest($12), pg_catalog.unnest($13), pg_catalog.unnest($14), "
        "pg_catalog.unnest($15)) AS v (session, provider, access_token, refresh_token, id_token, "
        "token_type, scope, expires_at, refresh_expires_at, old_refresh, issued_at, last_error, "
        "problem, refresh_expiry_source, attributes)), "
        "saved AS (UPDATE upstream_token.token t SET access_token = v.access_token, "
        "refresh_token = coalesce(v.refresh_token, t.refresh_token), "
        "id_token = coalesce(v.id_token, t.id_token), token_type = v.token_type, "
        "scope = coalesce(v.scope, t.scope), expires_at = v.expires_at, "
        "refresh_expires_at = coalesce(v.refresh_expires_at, t.refresh_expires_at), "
        "refresh_expires_stated_at = CASE WHEN v.refresh_expires_at IS NULL "
        "THEN t.refresh_expires_stated_at ELSE v.issued_at END, "
        "refresh_expiry_source = coalesce(v.refresh_expiry_source, t.refresh_expiry_source), "
        "generation = t.generation + 1, issued_at = v.issued_at, "
        "status = CASE WHEN v.problem THEN 'invalid_binding' ELSE 'active' END, "
        "failure_count = 0, next_attempt_at = NULL, last_error = v.last_error, "
        "refreshed_at = pg_catalog.now(), updated_at = pg_catalog.now(), "
        "attributes = coalesce(v.attributes::pg_catalog.jsonb, t.attributes) FROM v "
        "WHERE t.session = v.session AND t.provider = v.provider "
        "AND t.refresh_token = v.old_refresh RETURNING t.session, t.provider, t.generation, "
        "t.status) "
        "SELECT session, provider, generation, pg_catalog.pg_notify('upstream_token_events', "
        "pg_catalog.json_build_object('session', session, 'provider', provider, 'event', "
        "CASE WHEN status = 'active' THEN 'refreshed' ELSE status END)::pg_catalog.text) "
        "FROM saved");
    const auto n = update.run(
        {array_arg(TEXTOID, session), array_arg(TEXTOID, provider), array_arg(BYTEAOID, access),
         array_arg(BYTEAOID, refresh), array_arg(BYTEAOID, id), array_arg(TEXTOID, type),
         array_arg(TEXTOID, scope), array_arg(TIMESTAMPTZOID, expires),
         array_arg(TIMESTAMPTZOID, refresh_expires), array_arg(BYTEAOID, old_refresh),
         array_arg(TIMESTAMPTZOID, issued), array_arg(TEXTOID, last_error),
         array_arg(BOOLOID, problem), array_arg(TEXTOID, source), array_arg(TEXTOID, attributes)},
        false);
    std::vector<bool> saved(jobs.size(), false);
    const JobsByToken index(jobs);
    for (std::uint64_t r = 0; r < n; ++r) {
        const ResultRow row(r);
        const auto at = index.find(row.text(1), row.text(2));
        if (!at) continue;
        take_saved(*jobs[*at], updates[*at], row.int8(3).value_or(0));
        saved[*at] = true;
    }
    return saved;
}

// Saves new tokens with the optimistic UPDATE (I2); false when another writer moved the row.
bool save_tokens(RefreshJob& job, const TokenResponse& t) {
    if (job.grant) {
        const Time base = answer_base(job);
        return save_grant_tokens(job, t,
                                 seal(job.provider, job.session, "access_token", t.access_token),
                                 access_expiry(base, t.expires_in, job.default_lifetime), base);
    }
    return update_rows({&job}, {row_update(job, t)}).front();
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

// True for "lock_timeout expired": the row is locked by a client transaction.
bool is_lock_timeout(const PgError& e) {
    return e.data()->sqlerrcode == ERRCODE_LOCK_NOT_AVAILABLE;
}

}  // namespace

namespace {

// Readies a job for a save, which may run again after its transaction was rolled back: the
// sent secrets redacted from the provider's texts before they reach the row, the log or a
// caller; a clean result.
void start_persist(RefreshJob& job) {
    if (!job.sent_secrets.empty()) {
        job.outcome->error = redact_secrets(std::move(job.outcome->error), job.sent_secrets);
        job.outcome->message = redact_secrets(std::move(job.outcome->message), job.sent_secrets);
        job.sent_secrets.clear();
    }
    job.result = JobResult{};
    job.result.network = true;
    job.orphan_revocation_queued = false;
    job.retry_planned.reset();
    job.new_generation = 0;
    job.new_expires_at = Time{};
    job.new_issued_at = Time{};
}

}  // namespace

void persist_in_transaction(RefreshJob& job, double unit_random) {
    start_persist(job);
    const ExchangeOutcome& o = *job.outcome;
    if (o.failure != FailureClass::none) {
        save_failed_exchange(job, unit_random);
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

void persist_all_in_transaction(const std::vector<RefreshJob*>& jobs,
                                const std::function<double()>& unit_random) {
    std::vector<RefreshJob*> refreshed;
    std::vector<RowUpdate> updates;
    for (RefreshJob* job : jobs) {
        if (job->outcome->failure != FailureClass::none || job->grant) {
            persist_in_transaction(*job, unit_random());
            continue;
        }
        start_persist(*job);
        updates.push_back(row_update(*job, *job->outcome->tokens));
        refreshed.push_back(job);
    }
    if (refreshed.empty()) return;
    const std::vector<bool> saved = update_rows(refreshed, updates);
    for (std::size_t i = 0; i < refreshed.size(); ++i) {
        RefreshJob& job = *refreshed[i];
        if (!saved[i]) {  // moved on by another writer: the one-job path sorts out what to keep
            persist_in_transaction(job, unit_random());
        } else if (job.result.code != ErrorCode::invalid_binding) {
            job.result.ok = true;
        }
    }
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

}  // namespace upstream_token::pg
