// The advisory-lock key of one (provider, session): every refresher, the engine or a manual
// path, takes the same lock (I1).
#pragma once

#include <cstdint>
#include <string_view>

namespace upstream_token {

// 64-bit FNV-1a over provider, a 0 byte, and session: stable across versions and processes.
std::int64_t refresh_lock_key(std::string_view provider, std::string_view session);

}  // namespace upstream_token
