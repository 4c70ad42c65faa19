#include "pg/prelude.hpp"
#include "pg/engine_refresher.hpp"

#include <algorithm>
#include <exception>
#include <string>

#include "core/token_response.hpp"
#include "pg/engine_stage.hpp"
#include "pg/gucs.hpp"
#include "pg/spi.hpp"
#include "pg/worker_txn.hpp"

namespace upstream_token::pg {

namespace {
constexpr Micros kBehindRetry{20000};     // a refresh of the same token runs here
constexpr Micros kLockRetryFirst{20000};  // another process holds the token's lock
constexpr Micros kLockRetryMax{1000000};
}  // namespace

void Refresher::enqueue(std::vector<RefreshJob> jobs) {
    for (RefreshJob& job : jobs) waiting_.push_back(std::move(job));
}

// Takes the job's token for this engine; false when it was dealt with instead (behind a
// running refresh of the same token, or answered during its provider's pause).
bool Refresher::admit(RefreshJob& job) {
    TokenKey key{job.provider, job.session};
    if (busy_.count(key) > 0) {
        release_place(job);
        if (!job.proactive) {  // it goes as soon as the running one finishes
            job.retry_at = mono_now() + kBehindRetry;
            waiting_.push_back(std::move(job));
        }  // a planned one is planned again by the running job
        return false;
    }
    busy_.insert(std::move(key));
    job.holds_key = true;
    if (auto until = planner_.schedule().paused_until(job.provider, now_time());
        until && !job.proactive) {
        job.result.ok = false;
        job.result.code = ErrorCode::refresh_failed;
        job.result.message = "the provider asked to be left alone for a while (Retry-After)";
        job.retry_planned = *until;  // refreshed when the pause ends, not at some later scan
        finish(job);
        return false;
    }
    return true;
}

void Refresher::start(bool may_start) {
    const MonoTime now = mono_now();
    const int limit = max_concurrent_refreshes();
    Scheduler& plan = planner_.schedule();
    std::vector<RefreshJob> go;
    bool held_back = false;  // a caller's request waits for a place: planned ones wait too
    for (std::size_t i = 0, n = waiting_.size(); i < n; ++i) {
        RefreshJob job = std::move(waiting_.front());
        waiting_.pop_front();
        if (!may_start) {
            job.result.ok = false;
            job.result.code = ErrorCode::refresh_failed;
            job.result.message = "the refresh engine cannot save refreshes at the moment";
            finish(job);
            continue;
        }
        if (job.retry_at > now) {
            waiting_.push_back(std::move(job));
            continue;
        }
        if (!plan.may_start(job.provider, limit)) {
            held_back = true;
            waiting_.push_back(std::move(job));
            continue;
        }
        plan.forget(TokenKey{job.provider, job.session});
        plan.started(job.provider);
        job.counted_in_flight = true;
        go.push_back(std::move(job));
    }
    if (may_start && !held_back) {
        for (PlannedRefresh& p : plan.take_due(now_time(), limit)) {
            RefreshJob job;
            job.provider = std::move(p.key.provider);
            job.session = std::move(p.key.session);
            job.seen_generation = p.generation;
            job.proactive = true;
            job.counted_in_flight = true;
            go.push_back(std::move(job));
        }
    }
    begin_all(std::move(go));
}

// Begins refreshes: the database steps of all of them in one transaction when there are
// several (one by one if that fails), then each is answered, sent, or waits for its lock.
void Refresher::begin_all(std::vector<RefreshJob> jobs) {
    std::vector<RefreshJob> admitted;
    for (RefreshJob& job : jobs) {
        if (admit(job)) admitted.push_back(std::move(job));
    }
    std::vector<HttpRequestSpec> specs(admitted.size());
    std::vector<BeginStep> steps(admitted.size(), BeginStep::answered);
    bool batched = false;
    if (admitted.size() > 1) {
        try {
            WorkerTxn txn;
            std::vector<RefreshJob*> jobs;
            for (RefreshJob& job : admitted) jobs.push_back(&job);
            steps = begin_all_in_transaction(jobs, specs);
            txn.commit();
            batched = true;
        } catch (const std::exception&) {
            abort_worker_transaction();  // nothing committed: each begins on its own below
        }
    }
    for (std::size_t i = 0; i < admitted.size(); ++i) {
        RefreshJob& job = admitted[i];
        try {
            if (!batched) {
                specs[i] = HttpRequestSpec{};
                steps[i] = begin_refresh(job, specs[i]);
            }
            dispatch(std::move(job), steps[i], specs[i]);
        } catch (const std::exception& e) {
            const std::string what = e.what();  // before the abort frees what it points to
            abort_worker_transaction();
            log_recovered("preparing a refresh", what.c_str());
            job.result = JobResult{};
            job.result.code = ErrorCode::refresh_failed;
            job.result.message = "the engine could not prepare the refresh";
            job.result.detail = what;
            finish(job);
        }
    }
}

// Acts on a begun refresh: answered, waiting for another process's lock, or sent.
void Refresher::dispatch(RefreshJob job, BeginStep step, const HttpRequestSpec& spec) {
    switch (step) {
        case BeginStep::answered:
            finish(job);
            return;
        case BeginStep::lock_busy:
            wait_for_lock(std::move(job));
            return;
        case BeginStep::send:
            break;
    }
    job.sent_at = now_time();
    const std::uint64_t id = http_.start(spec);
    stats_.network_call(job);
    in_flight_.emplace(id, std::move(job));
}

// Another process holds the token's lock: the job gives back its concurrency place and its
// token, so the lock delays this token only, and tries again with a growing delay.
void Refresher::wait_for_lock(RefreshJob job) {
    release_place(job);
    busy_.erase(TokenKey{job.provider, job.session});
    job.holds_key = false;
    const Micros delay =
        std::min(kLockRetryMax, Micros{kLockRetryFirst.count() << std::min(job.attempts, 6)});
    job.attempts++;
    if (job.proactive) {
        planner_.plan_again(job, now_time() + delay);
        return;
    }
    job.retry_at = mono_now() + delay;
    waiting_.push_back(std::move(job));
}

std::optional<RefreshJob> Refresher::on_result(const HttpResult& r) noexcept {
    auto it = in_flight_.find(r.id);
    if (it == in_flight_.end()) return std::nullopt;
    RefreshJob job = std::move(it->second);
    in_flight_.erase(it);
    job.latency = r.elapsed;
    job.attempts = 0;
    std::optional<Time> pause;
    try {
        job.outcome = r.transport_ok
                          ? interpret_token_response(r.status, r.body, r.retry_after, now_time())
                          : transport_failure(r.transport_error);
        if (job.outcome->retry_after) {
            pause = now_time() + *job.outcome->retry_after;
            planner_.schedule().pause(job.provider, *pause);
        }
        stats_.answered(job, pause);
    } catch (const std::exception& e) {
        log_recovered("reading a provider's answer", e.what());
        if (!job.outcome) job.outcome = transport_failure("the engine could not read the answer");
    }
    release_place(job);  // the exchange is over; saving does not hold a place
    return job;
}

void Refresher::release_place(RefreshJob& job) noexcept {
    if (!job.counted_in_flight) return;
    planner_.schedule().finished(job.provider);
    job.counted_in_flight = false;
}

void Refresher::finish(RefreshJob& job) noexcept {
    release_refresh_lock(job);
    release_place(job);
    try {
        answer_behind(job);
        if (job.orphan_revocation_queued) orphan_queued_ = true;
        if (job.holds_key) {
            busy_.erase(TokenKey{job.provider, job.session});
            job.holds_key = false;
        }
        planner_.plan_after(job);
        stats_.finished(job);
    } catch (const std::exception& e) {
        log_recovered("ending a refresh", e.what());
    }
    if (job.slot >= 0) intake_.answer(job.slot, job.request_id, job.result);
}

// Requests that waited behind a finished refresh of their token: a success is theirs too
// (a fresh token is stored); after a failure they go now and decide for themselves.
void Refresher::answer_behind(const RefreshJob& done) {
    for (std::size_t i = 0, n = waiting_.size(); i < n; ++i) {
        RefreshJob w = std::move(waiting_.front());
        waiting_.pop_front();
        if (w.provider != done.provider || w.session != done.session) {
            waiting_.push_back(std::move(w));
        } else if (done.result.ok) {
            w.result = done.result;
            w.result.network = false;
            release_place(w);
            stats_.finished(w);
            intake_.answer(w.slot, w.request_id, w.result);
        } else {
            w.retry_at = MonoTime{};
            waiting_.push_back(std::move(w));
        }
    }
}

void Refresher::abandon_unstarted(const char* why) noexcept {
    // Those behind a refresh under way wait for it: it is finished and saved before the stop.
    for (std::size_t i = 0, n = waiting_.size(); i < n; ++i) {
        RefreshJob job = std::move(waiting_.front());
        waiting_.pop_front();
        if (busy_.count(TokenKey{job.provider, job.session}) > 0) {
            waiting_.push_back(std::move(job));
            continue;
        }
        job.result = JobResult{};
        job.result.code = ErrorCode::engine_unavailable;
        job.result.message = why;
        finish(job);
    }
}

std::optional<MonoTime> Refresher::next_retry() const {
    std::optional<MonoTime> t;
    for (const RefreshJob& job : waiting_) {
        if (!t || job.retry_at < *t) t = job.retry_at;
    }
    return t;
}

bool Refresher::take_orphan_queued() {
    const bool queued = orphan_queued_;
    orphan_queued_ = false;
    return queued;
}

}  // namespace upstream_token::pg
