#include "core/schedule.hpp"

#include <algorithm>

#include "core/lock_key.hpp"

namespace upstream_token {

double spread_unit(std::string_view provider, std::string_view session, std::int64_t generation) {
    // Mix the generation into the token hash, then keep 53 bits for a uniform double.
    auto h = static_cast<std::uint64_t>(stable_token_hash(provider, session));
    h ^= static_cast<std::uint64_t>(generation) + 0x9E3779B97F4A7C15ULL + (h << 6) + (h >> 2);
    h ^= h >> 33;
    h *= 0xFF51AFD7ED558CCDULL;
    h ^= h >> 33;
    return static_cast<double>(h >> 11) / static_cast<double>(1ULL << 53);
}

Micros effective_threshold(Micros configured, std::optional<Time> issued_at, Time expires_at) {
    if (!issued_at) return configured;
    const Micros half_life = std::max(Micros{0}, (expires_at - *issued_at) / 2);
    return std::min(configured, half_life);
}

Time proactive_due(std::optional<Time> issued_at, Time expires_at, Micros threshold, double unit) {
    const Micros t = effective_threshold(threshold, issued_at, expires_at);
    const auto spread =
        static_cast<std::int64_t>(static_cast<double>(t.count()) * kSpreadShare * unit);
    const Time due = expires_at - t + Micros{spread};
    return issued_at ? std::max(due, *issued_at + kMinRefreshSpacing) : due;
}

Time keep_alive_due(Time anchor, Micros idle_lifetime, double unit) {
    const double share = kKeepAliveShare * (1.0 - kSpreadShare * unit);
    const auto after =
        Micros{static_cast<std::int64_t>(static_cast<double>(idle_lifetime.count()) * share)};
    return anchor + std::max(after, kKeepAliveMinSpacing);
}

bool caller_must_wait(Freshness f, Time now, Time expires_at, Micros threshold) {
    if (f == Freshness::expired) return true;
    if (f == Freshness::fresh) return false;
    const auto urgent =
        Micros{static_cast<std::int64_t>(static_cast<double>(threshold.count()) * kUrgentShare)};
    return expires_at - now <= urgent;
}

}  // namespace upstream_token
