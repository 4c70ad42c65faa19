// Expiry decisions: when a token is fresh, due for refresh, or expired.
#pragma once

#include <cstdint>
#include <optional>

#include "time.hpp"

namespace upstream_token {

enum class Freshness {
    fresh,        // expires_at - now > threshold: serve, no network, no write
    refresh_due,  // 0 < expires_at - now <= threshold: serve-able, refresh wanted
    expired,      // now >= expires_at, or the access token is empty: never serve
};

// Taken off every expires_in before it becomes an expiry instant: providers count it from an
// issue time they often truncate to whole seconds, before the answer reaches us.
inline constexpr Micros kProviderClockAllowance{1000000};

// The one place that decides freshness (I7: the expiry instant itself counts as expired).
Freshness classify(Time now, Time expires_at, Micros threshold, bool access_token_empty);

// Absolute expiry of an access token: now + expires_in, or now + the provider's default
// lifetime when the response had no expires_in (never "never expires").
// Error(invalid_parameter) for a negative expires_in.
Time access_expiry(Time now, std::optional<std::int64_t> expires_in_s, Micros default_lifetime);

// Absolute expiry of a refresh token (I8): refresh_expires_in from the provider, else the
// provider's TTL, else the GUC default. Error(invalid_parameter) for a negative value.
Time refresh_expiry(Time now, std::optional<std::int64_t> refresh_expires_in_s,
                    std::optional<Micros> provider_ttl, Micros default_ttl);

}  // namespace upstream_token
