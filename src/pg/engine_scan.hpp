// The engine's reads of the whole token table: tokens entering their refresh window (for the
// proactive plan) and refresh tokens at the end of their lifetime (marked, later purged).
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/scheduler.hpp"
#include "core/time.hpp"

namespace upstream_token::pg {

struct DueToken {
    TokenKey key;
    std::int64_t generation = 0;
    std::optional<Time> issued_at;  // NULL for tokens the application stored
    Time expires_at{};
    Micros threshold{};  // configured (the provider's or the GUC)
    std::optional<Time> next_attempt;
    // Set for a provider with keep_alive: when the refresh token was last used, and how long
    // it may stay unused at the provider.
    std::optional<Time> keep_alive_anchor;
    std::optional<Micros> keep_alive_idle;
};

struct ScanResult {
    std::vector<DueToken> tokens;  // windows opening by `window_end`, earliest first
    std::vector<std::pair<std::string, int>> provider_limits;  // every provider's max_concurrent
    std::optional<Time> next_window;  // earliest window opening after the scanned range
    bool truncated = false;           // `limit` was reached: scan again soon
};

// Finds active tokens with a refresh token whose window (expires_at - threshold) opens by
// `window_end`, and those a keep_alive provider's sessions need refreshed by then so their
// refresh token does not idle out. Runs in its own transaction.
ScanResult scan_due_tokens(Time window_end, std::size_t limit);

// Marks tokens whose refresh token reached its stated end (status 'expired', event
// 'expired'), deletes those past it longer than upstream_token.purge_after ago (I8: never for
// the access token; an estimated end purges only rows that are no longer active), and forgets
// revocation tombstones older than a day. Announces (event refresh_expiring) the stated ends
// whose warning window (a tenth of the lifetime stated, at most 7 days) opened after `since`
// (every open one when unset: after an engine start) and by `now`. Returns the number of rows
// purged. Own transaction.
std::uint64_t expire_and_purge(std::optional<Time> since, Time now);

}  // namespace upstream_token::pg
