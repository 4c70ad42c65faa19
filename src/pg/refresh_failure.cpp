// The save of a failed exchange: the failure and its backoff recorded on the row (a grant's
// first failure inserts one), and what the caller is told.
#include "pg/prelude.hpp"

#include <algorithm>
#include <string>

#include "core/backoff.hpp"
#include "pg/refresh_job.hpp"
#include "pg/spi.hpp"
#include "pg/store.hpp"

namespace upstream_token::pg {

namespace {

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
    std::string last = std::string(failure_class_name(o.failure)) + ": " + o.error;
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
    if (n > 0 && reauth) notify_token_event(job, "reauth_required");
    if (n > 0) job.retry_planned = next;
}

}  // namespace

// The client id a grant's new row records; see refresh_job.hpp.
std::string job_client_id(const RefreshJob& job) {
    const ProviderRow* provider = cached_provider(job.provider);
    return provider != nullptr ? provider->client_id : std::string("?");
}

void save_failed_exchange(RefreshJob& job, double unit_random) {
    const ExchangeOutcome& o = *job.outcome;
    save_failure(job, o, unit_random);
    job.result.code = code_of(o.failure);
    job.result.message = std::string("the provider refused or failed the ") +
                         (job.grant ? grant_name(job.grant->grant) : "refresh") + ": " + o.error;
    job.result.detail = o.message;
}

}  // namespace upstream_token::pg
