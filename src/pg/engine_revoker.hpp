// Revocation: delivers the queued RFC 7009 revocations. Its own failure domain: a bad queue
// row, a locked row or a provider that fails delays that revocation only; refreshes go on.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <random>
#include <vector>

#include "core/http_multi.hpp"
#include "core/time.hpp"
#include "pg/engine_revocation.hpp"
#include "pg/engine_stage.hpp"

namespace upstream_token::pg {

class Revoker {
  public:
    explicit Revoker(HttpMulti& http) : http_(http), rng_(std::random_device{}()) {}

    // Sends the revocations that are due (or all waiting ones when `requested`).
    void run_if_due(bool requested);
    // Handles a finished revocation exchange; false when `r` is not one.
    bool on_result(const HttpResult& r) noexcept;
    // Look at the queue at the next pass (a rotated token of a revoked row was queued).
    void wake() { next_ = MonoTime{}; }
    // Forgets the exchanges under way (the engine is stopping: the queue keeps them).
    void abandon_all() { in_flight_.clear(); }
    std::optional<MonoTime> next_due() const;
    std::size_t in_flight() const { return in_flight_.size(); }

  private:
    // An answer whose row could not be updated yet (locked, read-only): recorded again later,
    // never sent again meanwhile.
    struct Unrecorded {
        RevocationWork work;
        HttpResult result;
        MonoTime retry_at;
        int attempts;
    };
    bool record(RevocationWork& work, const HttpResult& r) noexcept;
    void record_held();
    double unit_random() { return std::uniform_real_distribution<double>(0.0, 1.0)(rng_); }

    HttpMulti& http_;
    Stage read_{"reading the revocation queue"};
    std::map<std::uint64_t, RevocationWork> in_flight_;  // by HTTP request id
    std::vector<Unrecorded> unrecorded_;
    MonoTime next_{};
    std::mt19937_64 rng_;
};

}  // namespace upstream_token::pg
