// Retry spacing after transient failures (see backoff.hpp).
#include "core/backoff.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace upstream_token {

namespace {

constexpr Micros kMinDelay{1000};  // 1 ms

// base * 2^(failures-1), saturating at cap instead of overflowing for long failure streaks.
Micros exponential_ceiling(int failures, Micros base, Micros cap) {
    if (base.count() <= 0 || cap.count() <= 0) {
        return Micros{0};
    }
    const int shift = failures - 1;
    if (shift >= 62 || base.count() > (cap.count() >> shift)) {
        return cap;
    }
    return std::min(Micros{base.count() << shift}, cap);
}

}  // namespace

// Spreads retries of many tokens over time (jitter) while backing off a failing provider.
//
// The delay is drawn uniformly from [upper/2, upper] with upper = min(cap, base * 2^(f-1)):
// half fixed so a streak really backs off, half random so tokens that failed together do not
// retry together. failures <= 0 counts as 1; unit_random outside [0, 1] (or NaN) is clamped.
// The 1 ms floor wins over a cap below 1 ms.
Micros backoff_delay(int failures, Micros base, Micros cap, double unit_random) {
    failures = std::max(failures, 1);
    double r = unit_random;
    if (!(r >= 0.0)) {  // also catches NaN
        r = 0.0;
    }
    r = std::min(r, 1.0);

    const Micros upper = exponential_ceiling(failures, base, cap);
    const Micros lower = upper / 2;
    const auto span = static_cast<double>((upper - lower).count());
    auto jitter = static_cast<std::int64_t>(std::floor(span * r));
    jitter = std::clamp<std::int64_t>(jitter, 0, (upper - lower).count());
    Micros delay = lower + Micros{jitter};

    delay = std::min(delay, cap);
    return std::max(delay, kMinDelay);
}

}  // namespace upstream_token
