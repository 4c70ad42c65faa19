// Lexical repair of a JSON text that a strict parser would reject as a whole because of one
// odd value: a number beyond the range of a double (1e400) and, inside strings, bytes that
// are not UTF-8 or raw control characters. A token endpoint's answer is worth saving for
// its access and refresh tokens even when an optional field is broken this way.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace upstream_token {

// U+FFFD, put in place of each byte inside a string that JSON does not allow there.
inline constexpr std::string_view kReplacementCharacter = "\xEF\xBF\xBD";

// The repaired text: numbers too large for a double become 1e308 (-1e308 when negative),
// invalid UTF-8 bytes and unescaped control characters inside strings become U+FFFD.
// nullopt when nothing needed repair. Anything else wrong stays wrong (the parser still
// rejects it); valid JSON is never changed.
std::optional<std::string> repair_json_text(std::string_view text);

}  // namespace upstream_token
