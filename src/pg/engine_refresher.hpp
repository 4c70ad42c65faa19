// Refresh: starting exchanges with providers and ending jobs. It keeps I1 inside the engine
// (one job per token at a time; the cross-process lock is taken by the begin step), the
// concurrency limits (waiting callers first; a place is held only while an exchange is on the
// wire), and answers every job exactly once. Saving is the Saver's; this unit never holds a
// received token.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <vector>

#include "core/http_multi.hpp"
#include "pg/engine_intake.hpp"
#include "pg/engine_planner.hpp"
#include "pg/engine_stats.hpp"
#include "pg/refresh_job.hpp"

namespace upstream_token::pg {

class Refresher {
  public:
    Refresher(HttpMulti& http, Planner& planner, Intake& intake, EngineStats& stats)
        : http_(http), planner_(planner), intake_(intake), stats_(stats) {}

    // Takes on-demand requests; they start before planned refreshes.
    void enqueue(std::vector<RefreshJob> jobs);
    // Starts what may start now: waiting callers' requests, then due planned refreshes.
    // With `may_start` false (stopping, or the database refuses the engine's writes) nothing
    // new goes out and callers are answered at once.
    void start(bool may_start);
    // Takes a finished exchange (its concurrency place freed); nullopt when not ours.
    std::optional<RefreshJob> on_result(const HttpResult& r) noexcept;
    // Ends a job: releases its lock, answers its caller, counts it, plans the next refresh.
    void finish(RefreshJob& job) noexcept;
    // Answers every request not yet sent, except those behind a refresh under way (the
    // engine is stopping; called on every pass until it exits).
    void abandon_unstarted(const char* why) noexcept;

    const std::set<TokenKey>& busy() const { return busy_; }
    std::size_t in_flight() const { return in_flight_.size(); }
    std::optional<MonoTime> next_retry() const;
    // True once after a job queued the revocation of an orphaned refresh token.
    bool take_orphan_queued();

  private:
    bool admit(RefreshJob& job);
    void begin_all(std::vector<RefreshJob> jobs);
    void dispatch(RefreshJob job, BeginStep step, const HttpRequestSpec& spec);
    void wait_for_lock(RefreshJob job);
    void answer_behind(const RefreshJob& done);
    void release_place(RefreshJob& job) noexcept;

    HttpMulti& http_;
    Planner& planner_;
    Intake& intake_;
    EngineStats& stats_;
    std::deque<RefreshJob> waiting_;                 // on-demand, not started yet
    std::map<std::uint64_t, RefreshJob> in_flight_;  // by HTTP request id
    // Tokens with a job in this engine. Session locks are re-entrant within one process, so
    // this, not the lock, keeps two of the engine's own jobs on one token apart (I1).
    std::set<TokenKey> busy_;
    bool orphan_queued_ = false;
};

}  // namespace upstream_token::pg
