// Time types shared by the core: Unix-epoch microseconds, the PostgreSQL layer converts.
#pragma once

#include <chrono>
#include <cstdint>

namespace upstream_token {

using Micros = std::chrono::microseconds;
using Time = std::chrono::time_point<std::chrono::system_clock, Micros>;

inline constexpr Micros seconds(std::int64_t s) {
    return Micros{s * 1000000};
}

}  // namespace upstream_token
