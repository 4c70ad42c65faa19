// The engine's statistics in shared memory (engine_status, provider_status): counters,
// per-provider latency and pauses, and the plan's size. Only counting, never a decision.
#pragma once

#include <optional>
#include <set>
#include <string>

#include "core/time.hpp"
#include "pg/engine_shmem.hpp"
#include "pg/refresh_job.hpp"

namespace upstream_token::pg {

class EngineStats {
  public:
    explicit EngineStats(EngineShared* s) : s_(s) {}

    // A token-endpoint call went out.
    void network_call(const RefreshJob& job);
    // Its answer (or transport failure) arrived; `pause` is a provider's Retry-After end.
    void answered(const RefreshJob& job, std::optional<Time> pause);
    // A job ended: counted by outcome.
    void finished(const RefreshJob& job);
    void persist_retry();
    // Frees the entries of providers that no longer exist, so new ones get theirs.
    void keep_only(const std::set<std::string>& providers);
    void plan_state(std::size_t planned, Time next_scan);
    void in_flight(std::size_t exchanges);

  private:
    EngineShared* s_;
};

}  // namespace upstream_token::pg
