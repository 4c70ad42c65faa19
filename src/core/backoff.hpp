// Retry spacing after transient failures: exponential with equal jitter (in [d/2, d]), capped.
#pragma once

#include "time.hpp"

namespace upstream_token {

// Delay before attempt number failures+1. `unit_random` is in [0, 1) and supplied by the
// caller so the function stays deterministic under test. Result is within
// [base * 2^(failures-1) / 2, base * 2^(failures-1)], never above cap, and at least 1 ms.
Micros backoff_delay(int failures, Micros base, Micros cap, double unit_random);

}  // namespace upstream_token
