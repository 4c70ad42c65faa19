// Keys derived from one token's (provider, session): the lock every refresher of that token
// takes (I1), and a cheap stable hash that spreads proactive refreshes.
#pragma once

#include <cstdint>
#include <string_view>

namespace upstream_token {

// The token lock's 64-bit key: the first 8 bytes (big-endian) of SHA-256 over the 4-byte
// big-endian length and bytes of provider, then of session. Collision resistant, so nobody can
// choose a session whose key equals another token's; stable across versions and processes.
std::int64_t token_lock_key(std::string_view provider, std::string_view session);

// 64-bit FNV-1a over provider, a 0 byte, and session (0.1.0's lock key). Not a lock key any
// more: anyone can find collisions. Only seeds the spread of proactive refresh times.
std::int64_t stable_token_hash(std::string_view provider, std::string_view session);

}  // namespace upstream_token
