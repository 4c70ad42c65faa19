// HTTP response headers the engine reads: Retry-After (RFC 9110 10.2.3), and the per-line
// tracking libcurl's header callback needs. PostgreSQL-free and curl-free, so it can be
// unit-tested and fuzzed on its own.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "time.hpp"

namespace upstream_token {

// Longest Retry-After value kept from a header line (longer ones are cut, then rejected).
inline constexpr std::size_t kMaxRetryAfterHeaderLine = 256;

// Retry-After (RFC 9110 10.2.3): delta-seconds or an HTTP-date; nullopt when unusable.
// Capped at one day.
std::optional<Micros> parse_retry_after(std::string_view header, Time now);

// Feeds one raw header line (as libcurl delivers it, CRLF included) into `retry_after`: a
// status line ("HTTP/...") starts a new response and clears it; a Retry-After line sets it
// to the trimmed value (at most kMaxRetryAfterHeaderLine characters); other lines leave it.
void track_retry_after(std::string_view line, std::string& retry_after);

}  // namespace upstream_token
