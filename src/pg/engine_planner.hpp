// Planning: the engine's plan of proactive refreshes, each token inside its threshold window
// at a point spread per token. Its own failure domain: a scan that fails is retried later
// while the refreshes already planned go on.
#pragma once

#include <optional>
#include <set>

#include "core/scheduler.hpp"
#include "core/time.hpp"
#include "pg/engine_stage.hpp"
#include "pg/engine_stats.hpp"
#include "pg/refresh_job.hpp"

namespace upstream_token::pg {

class Planner {
  public:
    explicit Planner(EngineStats& stats);

    // Reads the tokens whose refresh window opens soon into the plan (when due, or at once
    // when `requested`); tokens in `busy` have a refresh under way and are left alone.
    void scan_if_due(bool requested, const std::set<TokenKey>& busy);
    // Plans the next proactive refresh of a token the engine just dealt with.
    void plan_after(const RefreshJob& job);
    // Plans a token again at `due` (its refresh could not start: a lock was busy).
    void plan_again(const RefreshJob& job, Time due);
    // When the next scan is due.
    std::optional<MonoTime> next_scan() const;

    Scheduler& schedule() { return plan_; }
    const Scheduler& schedule() const { return plan_; }

  private:
    EngineStats& stats_;
    Scheduler plan_;
    Stage scan_{"scanning for due tokens"};
    MonoTime next_scan_mono_{};
    Time next_scan_wall_{};  // the same instant, for deciding what the scan will see
};

// Marks refresh tokens at the end of their lifetime and purges old rows, once a minute.
class Maintenance {
  public:
    void run_if_due();
    std::optional<MonoTime> next_due() const;

  private:
    Stage stage_{"maintenance"};
    MonoTime next_{};
    std::optional<Time> warned_until_;  // refresh_expiring sent for windows opening by then
};

}  // namespace upstream_token::pg
