// Expiry decisions: when a token is fresh, due for refresh, or expired.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

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

// Where a refresh token's expiry came from. Only a stated one is a cut-off: an estimate (the
// provider's refresh_token_ttl or the GUC) is a guess about a provider that never said, and
// past it the provider decides (a refresh is still tried).
enum class RefreshExpirySource {
    provider,     // refresh_expires_in in the provider's token response
    application,  // refresh_expires_in given to store_upstream_token
    estimate,     // nothing stated: the provider's refresh_token_ttl, else the GUC default
};

struct RefreshExpiry {
    Time at;
    RefreshExpirySource source = RefreshExpirySource::estimate;
};

// The name stored in token.refresh_expiry_source.
const char* refresh_expiry_source_name(RefreshExpirySource source);

// Reads a stored name; NULL or anything unknown reads as an estimate (the safe reading: it
// never throws a working refresh token away).
RefreshExpirySource parse_refresh_expiry_source(const std::optional<std::string_view>& name);

// The expiry of a refresh token the application stores: stated by the store call
// (refresh_expires_in > 0), else estimated. Error(invalid_parameter) for negative values.
RefreshExpiry login_refresh_expiry(Time now, std::optional<std::int64_t> stated_s,
                                   std::optional<Micros> provider_ttl, Micros default_ttl);

// The expiry after a successful refresh, or nullopt to keep the stored one: a stated lifetime
// always wins; a rotated (new) refresh token without one gets a new estimate; a kept refresh
// token without one moves its estimate on (it just worked) but keeps a stated expiry.
std::optional<RefreshExpiry> refreshed_refresh_expiry(Time now,
                                                      std::optional<std::int64_t> stated_s,
                                                      bool rotated, RefreshExpirySource current,
                                                      std::optional<Micros> provider_ttl,
                                                      Micros default_ttl);

// True when a refresh token must not be sent any more: its stated expiry has come (I7: the
// instant itself counts). An estimated expiry never stops a refresh.
bool refresh_token_past_end(Time now, Time refresh_expires_at, RefreshExpirySource source);

}  // namespace upstream_token
