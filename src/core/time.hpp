// Time types shared by the core: Unix-epoch microseconds, the PostgreSQL layer converts.
#pragma once

#include <chrono>
#include <cstdint>

namespace upstream_token {

using Micros = std::chrono::microseconds;
using Time = std::chrono::time_point<std::chrono::system_clock, Micros>;
// The engine's own timers (retries, scans, pauses): a step of the wall clock never moves them.
using MonoTime = std::chrono::time_point<std::chrono::steady_clock, Micros>;

inline MonoTime mono_now() {
    return std::chrono::time_point_cast<Micros>(std::chrono::steady_clock::now());
}

inline constexpr Micros seconds(std::int64_t s) {
    return Micros{s * 1000000};
}

}  // namespace upstream_token
