// The engine's plan of proactive refreshes, and the limits on what runs at once: globally,
// per provider, and a provider's pause after it asked to be left alone (429 Retry-After).
// PostgreSQL-free so its rules are unit-tested.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <tuple>
#include <string>
#include <utility>
#include <vector>

#include "time.hpp"

namespace upstream_token {

struct TokenKey {
    std::string provider;
    std::string session;
    bool operator<(const TokenKey& o) const {
        return std::tie(provider, session) < std::tie(o.provider, o.session);
    }
    bool operator==(const TokenKey& o) const {
        return provider == o.provider && session == o.session;
    }
};

struct PlannedRefresh {
    TokenKey key;
    std::int64_t generation = 0;  // the row version the plan was made for
    Time due{};
};

class Scheduler {
  public:
    explicit Scheduler(std::size_t capacity) : capacity_(capacity) {}

    // Plans (or re-plans) a token's refresh; false when the plan is full and this one is
    // later than every planned one (the next scan finds it again).
    bool plan(const TokenKey& key, std::int64_t generation, Time due);

    // Drops a token's plan (refreshed on demand, deleted, ...).
    void forget(const TokenKey& key);

    bool planned(const TokenKey& key, std::int64_t generation) const;

    // Sets a provider's concurrency limit (0 or less: no limit of its own).
    void set_provider_limit(const std::string& provider, int limit);

    // Pauses a provider until `until` (its Retry-After); planned refreshes wait for it.
    void pause(const std::string& provider, Time until);
    std::optional<Time> paused_until(const std::string& provider, Time now) const;

    // Whether one more refresh for `provider` may start with `global_limit` in total.
    bool may_start(const std::string& provider, int global_limit) const;
    void started(const std::string& provider);
    void finished(const std::string& provider);
    int in_flight() const { return in_flight_total_; }
    int in_flight(const std::string& provider) const;

    // Removes and returns the plans due by `now` that may start now (counting them as
    // started); a plan of a paused provider moves to the end of its pause.
    std::vector<PlannedRefresh> take_due(Time now, int global_limit);

    // The earliest planned instant, if any.
    std::optional<Time> next_due() const;
    std::size_t size() const { return by_key_.size(); }

  private:
    struct Entry {
        std::int64_t generation;
        Time due;
    };
    std::size_t capacity_;
    std::map<TokenKey, Entry> by_key_;
    std::set<std::pair<Time, TokenKey>> by_due_;
    std::map<std::string, int> limit_;
    std::map<std::string, Time> paused_;
    std::map<std::string, int> in_flight_;
    int in_flight_total_ = 0;
};

}  // namespace upstream_token
