#include "core/schedule.hpp"

#include "core/lock_key.hpp"

namespace upstream_token {

double spread_unit(std::string_view provider, std::string_view session, std::int64_t generation) {
    // Mix the generation into the lock-key hash, then keep 53 bits for a uniform double.
    auto h = static_cast<std::uint64_t>(refresh_lock_key(provider, session));
    h ^= static_cast<std::uint64_t>(generation) + 0x9E3779B97F4A7C15ULL + (h << 6) + (h >> 2);
    h ^= h >> 33;
    h *= 0xFF51AFD7ED558CCDULL;
    h ^= h >> 33;
    return static_cast<double>(h >> 11) / static_cast<double>(1ULL << 53);
}

Time proactive_due(Time expires_at, Micros threshold, double unit) {
    const auto spread = static_cast<std::int64_t>(static_cast<double>(threshold.count()) *
                                                  kSpreadShare * unit);
    return expires_at - threshold + Micros{spread};
}

bool caller_must_wait(Freshness f, Time now, Time expires_at, Micros threshold) {
    if (f == Freshness::expired) return true;
    if (f == Freshness::fresh) return false;
    const auto urgent =
        Micros{static_cast<std::int64_t>(static_cast<double>(threshold.count()) * kUrgentShare)};
    return expires_at - now <= urgent;
}

}  // namespace upstream_token
