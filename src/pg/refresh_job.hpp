// One refresh of one (provider, session), as the engine runs it in steps:
// begin (token lock, re-read, decide, build the request; refresh_job.cpp) → the HTTP exchange →
// persist (optimistic UPDATE with the ID-token binding verdict and the event, commit;
// refresh_save.cpp) → release the lock.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/error.hpp"
#include "core/expiry.hpp"
#include "core/grant_params.hpp"
#include "core/http_multi.hpp"
#include "core/id_token.hpp"
#include "core/time.hpp"
#include "core/token_response.hpp"

namespace upstream_token::pg {

struct JobResult {
    bool ok = false;
    bool network = false;  // a token-endpoint call was made
    ErrorCode code = ErrorCode::internal;
    std::string message;  // no secrets
    std::string detail;
};

struct RefreshJob {
    // The request.
    std::uint64_t request_id = 0;
    int slot = -1;  // request-table slot to answer, -1 for none
    std::string provider;
    std::string session;
    std::int64_t seen_generation = 0;
    bool force = false;
    bool proactive = false;    // started by the engine's own plan, nobody waits
    std::string grant_params;  // JSON GrantParams for a grant's token the caller found missing

    // State gathered by begin().
    bool lock_held = false;
    std::int64_t lock_key = 0;
    std::string old_refresh_ct;  // the optimistic-lock value (I2)
    std::int32_t failure_count = 0;
    std::optional<IdClaims> binding;  // what a new ID token must match
    Micros default_lifetime{};
    std::optional<Micros> refresh_token_ttl;
    RefreshExpirySource refresh_expiry_source = RefreshExpirySource::estimate;  // of the row read
    std::vector<std::string> sent_secrets;  // refresh token, client secret: redacted from replies
    Micros threshold{};                     // the provider's, or the GUC
    std::optional<Micros> keep_alive_idle;  // the provider keeps unused sessions alive
    std::vector<std::string> response_fields;  // answer fields the provider keeps
    // A grant's token (client credentials, exchange) renews by the grant, not a refresh token.
    std::optional<GrantParams> grant;
    bool new_row = false;              // the grant's row does not exist yet: the save inserts it
    std::int64_t read_generation = 0;  // the row version the grant's save replaces

    // After the exchange.
    std::optional<ExchangeOutcome> outcome;
    MonoTime retry_at{};             // when a deferred step (start, save) runs again
    int attempts = 0;                // of the step that is being retried
    bool counted_in_flight = false;  // holds a place in the concurrency limits
    bool holds_key = false;          // registered as the engine's job for this token
    Micros latency{0};               // of the HTTP exchange
    Time sent_at{};                  // expires_in counts from here, not from the save

    // After a saved refresh.
    std::int64_t new_generation = 0;
    Time new_expires_at{};
    Time new_issued_at{};
    std::optional<Time> retry_planned;      // after a transient failure: next attempt
    bool orphan_revocation_queued = false;  // a lost-race refresh token awaits revocation

    JobResult result;
};

enum class BeginStep { send, answered, lock_busy };

// Takes the token lock (pg/token_lock.hpp), re-reads the row and either answers without a
// network call or fills `spec` with the refresh request. Runs in (and commits) its own
// transaction.
BeginStep begin_refresh(RefreshJob& job, HttpRequestSpec& spec);

// begin_refresh for every job inside the caller's open transaction, the rows read with one
// statement (the step holds once it commits; the token locks, session locks, are held either
// way). Jobs are distinct tokens; `specs` has one element per job.
std::vector<BeginStep> begin_all_in_transaction(const std::vector<RefreshJob*>& jobs,
                                                std::vector<HttpRequestSpec>& specs);

// Finds a job of a batch by its token: a batched statement returns its rows in any order.
class JobsByToken {
  public:
    explicit JobsByToken(const std::vector<RefreshJob*>& jobs);
    std::optional<std::size_t> find(const std::optional<std::string>& session,
                                    const std::optional<std::string>& provider) const;

  private:
    std::map<std::pair<std::string_view, std::string_view>, std::size_t> index_;
};

enum class PersistStep { done, row_locked };

// Saves the outcome (success: new tokens; failure: status and backoff) in the caller's open
// transaction, without committing; the result holds only once it commits. Throws PgError
// (lock_timeout among them). Safe to run again after that transaction was rolled back.
void persist_in_transaction(RefreshJob& job, double unit_random);

// persist_in_transaction for every job, in the caller's open transaction: the refreshed rows
// with one statement (the engine's saves are batched per transaction). Jobs are distinct
// tokens; `unit_random` spreads the retries of failed exchanges.
void persist_all_in_transaction(const std::vector<RefreshJob*>& jobs,
                                const std::function<double()>& unit_random);

// persist_in_transaction in a transaction of its own, committed; a row a client transaction
// holds (lock_timeout) is reported as row_locked. `unit_random` in [0,1) spreads retries.
PersistStep persist_outcome(RefreshJob& job, double unit_random);

// Releases the token lock if held (after the result is committed).
void release_refresh_lock(RefreshJob& job) noexcept;

// Shared by both steps: a transactional NOTIFY on upstream_token_events (delivered only if the
// change commits), and the short failure class name stored in last_error.
void notify_token_event(const RefreshJob& job, const char* event);
const char* failure_class_name(FailureClass f);

// The longest last_error the engine stores (an error class, the provider's code and text).
constexpr std::size_t kLastErrorMax = 200;

// Shared by the save steps: records a failed exchange on the job's row with its backoff and
// sets the job's result (refresh_failure.cpp), and the client id a grant's new row records
// (the provider's, as the engine authenticates).
void save_failed_exchange(RefreshJob& job, double unit_random);
std::string job_client_id(const RefreshJob& job);

}  // namespace upstream_token::pg
