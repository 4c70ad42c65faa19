#include "pg/prelude.hpp"
#include "pg/engine_saver.hpp"

#include <algorithm>
#include <exception>
#include <string>

#include "pg/engine_stage.hpp"
#include "pg/guard.hpp"
#include "pg/worker_txn.hpp"

namespace upstream_token::pg {

namespace {
constexpr Micros kRowLockedRetry{100000};  // a client transaction holds the row: 0.1 s to 2 s
constexpr Micros kRowLockedMax{2000000};
constexpr Micros kRefusedFirst{100000};  // the database refused: 0.1 s doubling to 5 s
constexpr Micros kRefusedMax{5000000};
// Held answers due this soon are saved with those due now: one transaction and one statement
// for answers whose retries fell microseconds apart, rather than a wake-up for each.
constexpr Micros kCoalesce{20000};
}  // namespace

namespace {

// Whether a failed save says the database refuses every write (read-only, out of resources,
// a full NOTIFY queue, an operator's intervention, a system error), not just this answer's
// row; the engine's rows have no value large enough for a row-size limit.
bool refuses_every_write(const std::exception& e) {
    const auto* pg = dynamic_cast<const PgError*>(&e);
    if (pg == nullptr) return false;
    const int category = ERRCODE_TO_CATEGORY(pg->data()->sqlerrcode);
    return category == ERRCODE_INVALID_TRANSACTION_STATE ||
           category == ERRCODE_INSUFFICIENT_RESOURCES ||
           category == ERRCODE_PROGRAM_LIMIT_EXCEEDED ||  // a full NOTIFY queue
           category == ERRCODE_OPERATOR_INTERVENTION || category == ERRCODE_SYSTEM_ERROR;
}

}  // namespace

bool save_worth_retrying(const std::exception& e) {
    const auto* pg = dynamic_cast<const PgError*>(&e);
    return refuses_every_write(e) ||
           (pg != nullptr && pg->data()->sqlerrcode == ERRCODE_LOCK_NOT_AVAILABLE);
}

void Saver::add(RefreshJob job) {
    job.retry_at = MonoTime{};
    job.attempts = 0;
    held_.push_back(std::move(job));
}

std::vector<RefreshJob> Saver::save_due() {
    const MonoTime until = mono_now() + kCoalesce;
    std::vector<RefreshJob> saved;
    std::vector<std::size_t> due;
    for (std::size_t i = 0; i < held_.size(); ++i) {
        if (held_[i].retry_at <= until) due.push_back(i);
    }
    if (due.empty()) return saved;
    bool batch_saved = false;
    bool batch_refused = false;  // the database refused every write: no use trying each alone
    if (due.size() > 1) {
        try {
            WorkerTxn txn;
            std::vector<RefreshJob*> jobs;
            for (std::size_t i : due) jobs.push_back(&held_[i]);
            persist_all_in_transaction(jobs, [this] { return unit_random(); });
            txn.commit();
            batch_saved = true;
        } catch (const std::exception& e) {
            const std::string what = e.what();  // before the abort frees what it points to
            batch_refused = refuses_every_write(e);
            abort_worker_transaction();  // nothing saved: each alone below, unless refused
            if (batch_refused) refused(what.c_str(), due.size());
        }
    }
    std::vector<bool> done(held_.size(), false);
    if (!batch_refused) {
        for (std::size_t i : due) done[i] = batch_saved || save_one(held_[i]);
    }
    if (batch_saved) blocked_ = false;
    // Taken out in place (no allocation after the reserve): a held answer is never lost here.
    saved.reserve(due.size());
    for (std::size_t i = held_.size(); i-- > 0;) {
        if (!done[i]) continue;
        saved.push_back(std::move(held_[i]));
        held_.erase(held_.begin() + static_cast<std::ptrdiff_t>(i));
    }
    std::reverse(saved.begin(), saved.end());
    // While the database refuses every write, everything held is tried again together, on one
    // backoff of the saver's (0.1 s doubling to 5 s, reset by a save): one transaction a
    // round, and one statement once the database accepts writes again.
    if (!blocked_) {
        refused_rounds_ = 0;
    } else if (!held_.empty()) {
        const MonoTime next =
            mono_now() +
            std::min(kRefusedMax, Micros{kRefusedFirst.count() << std::min(refused_rounds_, 6)});
        ++refused_rounds_;
        for (RefreshJob& job : held_) job.retry_at = next;
    }
    return saved;
}

// Counts a round the database refused (the batch's jobs wait for the next), logging the
// first refusal and then about every 5 minutes.
void Saver::refused(const char* what, std::size_t jobs) noexcept {
    blocked_ = true;
    if (refused_rounds_ % 64 == 0) {
        log_recovered("saving refresh results (kept in memory, retried)", what);
    }
    for (std::size_t i = 0; i < jobs; ++i) {
        try {
            stats_.persist_retry();
        } catch (...) {
        }
    }
}

// Saves one outcome in a transaction of its own; false (and a retry time) when it must wait.
bool Saver::save_one(RefreshJob& job) noexcept {
    try {
        if (persist_outcome(job, unit_random()) == PersistStep::done) {
            blocked_ = false;
            return true;
        }
        // This row only; each wait on it costs the engine a lock_timeout, so back off.
        job.attempts++;
        job.retry_at =
            mono_now() + std::min(kRowLockedMax,
                                  Micros{kRowLockedRetry.count() << std::min(job.attempts - 1, 5)});
        stats_.persist_retry();
        return false;
    } catch (const std::exception& e) {
        const std::string what = e.what();  // before the abort frees what it points to
        const bool database_wide = refuses_every_write(e);
        abort_worker_transaction();
        job.attempts++;
        if (database_wide) {  // retried with everything held, on the saver's backoff
            refused(what.c_str(), 1);
        } else {  // this answer only: one bad answer must not stop the others
            job.retry_at = mono_now() +
                           std::min(kRefusedMax,
                                    Micros{kRefusedFirst.count() << std::min(job.attempts - 1, 6)});
            if (job.attempts % 64 == 1) {  // the first refusal, then about every 5 minutes
                log_recovered("saving a refresh result (kept in memory, retried)", what.c_str());
            }
            try {
                stats_.persist_retry();
            } catch (...) {
            }
        }
        return false;
    }
}

std::optional<MonoTime> Saver::next_retry() const {
    std::optional<MonoTime> t;
    for (const RefreshJob& job : held_) {
        if (!t || job.retry_at < *t) t = job.retry_at;
    }
    return t;
}

}  // namespace upstream_token::pg
