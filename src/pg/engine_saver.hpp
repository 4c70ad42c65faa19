// Saving (I2, I3, I4): commits what providers answered. A received token leaves the engine's
// memory only once committed: no retry count, no error elsewhere, no busy row drops it. A row
// held by a client transaction delays that token only; a database that refuses the engine's
// writes (read-only, full NOTIFY queue, ...) delays every save and is reported as blocked, so
// no new exchange adds to what is held.
#pragma once

#include <cstddef>
#include <deque>
#include <optional>
#include <random>
#include <vector>

#include "core/time.hpp"
#include "pg/engine_stats.hpp"
#include "pg/refresh_job.hpp"

namespace upstream_token::pg {

// Whether a failed save may succeed if tried again: the database refuses every write
// (read-only, out of resources, ...) or a row was locked (lock_timeout); not a bad value.
bool save_worth_retrying(const std::exception& e);

class Saver {
  public:
    explicit Saver(EngineStats& stats) : stats_(stats), rng_(std::random_device{}()) {}

    // Takes answered exchanges; they are held until saved.
    void add(RefreshJob job);
    // Saves what is due (those that arrived together in one commit when possible); returns
    // the jobs whose outcome is committed, to be finished.
    std::vector<RefreshJob> save_due();

    std::size_t held() const { return held_.size(); }
    // The database refused a save in a way that refuses every write (read-only, out of
    // resources, ...), and no save succeeded since.
    bool blocked() const { return blocked_; }
    std::optional<MonoTime> next_retry() const;

  private:
    bool save_one(RefreshJob& job) noexcept;
    void refused(const char* what, std::size_t jobs) noexcept;
    double unit_random() { return std::uniform_real_distribution<double>(0.0, 1.0)(rng_); }

    EngineStats& stats_;
    std::deque<RefreshJob> held_;
    bool blocked_ = false;
    int refused_rounds_ = 0;  // rounds refused since the last save: the saver's backoff
    std::mt19937_64 rng_;
};

}  // namespace upstream_token::pg
