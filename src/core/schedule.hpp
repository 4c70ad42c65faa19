// When tokens are refreshed: the engine refreshes each token on its own inside the
// threshold window, at a point spread per token so tokens issued together are not refreshed
// in one burst; a caller waits for a refresh only when that should already have happened.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include "expiry.hpp"
#include "time.hpp"

namespace upstream_token {

// Share of the threshold window over which proactive refreshes are spread: a token is
// refreshed when between 100% and 40% of the threshold remains.
inline constexpr double kSpreadShare = 0.6;

// Share of the threshold below which a caller stops serving the current token and waits for
// a refresh (the proactive refresh is overdue by then).
inline constexpr double kUrgentShare = 0.25;

// A stable number in [0, 1) for one version of one token, so repeated scans agree on its
// refresh time and tokens issued together land at different times.
double spread_unit(std::string_view provider, std::string_view session, std::int64_t generation);

// Minimum time between a token's issue and its proactive refresh, whatever the provider said.
inline constexpr Micros kMinRefreshSpacing{1000000};

// The threshold applied to one token: the configured one, but for a token the engine obtained
// (issued_at known) at most half the lifetime the provider granted, so a token that lives
// shorter than the threshold is not refreshed again the moment it arrives (and never in a
// loop). A token the application stored has no issued_at: its remaining time is all that is
// known, and the configured threshold applies.
Micros effective_threshold(Micros configured, std::optional<Time> issued_at, Time expires_at);

// The instant the engine refreshes a token on its own: inside the (effective) threshold
// window, spread by `unit`, and never sooner than kMinRefreshSpacing after its issue.
Time proactive_due(std::optional<Time> issued_at, Time expires_at, Micros threshold, double unit);

// Share of a refresh token's idle lifetime after which a keep_alive provider's unused session
// is refreshed at the latest (spread down to kKeepAliveShare - kSpreadShare * that share).
inline constexpr double kKeepAliveShare = 0.5;

// Minimum time from a refresh token's recorded last use to its keep-alive refresh: the
// recorded instant is a second early (kProviderClockAllowance), and a refresh must not follow
// the previous one at once.
inline constexpr Micros kKeepAliveMinSpacing{2000000};

// The instant the engine refreshes an unused session so its refresh token does not idle out:
// between 20% and 50% of `idle_lifetime` after the refresh token was last used (`anchor`),
// spread by `unit`, never sooner than kKeepAliveMinSpacing after it.
Time keep_alive_due(Time anchor, Micros idle_lifetime, double unit);

// Whether a caller must wait for a refresh instead of serving the token it has (`threshold`
// is the effective one).
bool caller_must_wait(Freshness f, Time now, Time expires_at, Micros threshold);

}  // namespace upstream_token
