// Shared helpers of the libFuzzer targets: an invariant check that crashes loudly (so the
// fuzzer records the input), and text predicates the targets assert on.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

namespace upstream_token::fuzz {

// Aborts with a message when an invariant does not hold: libFuzzer saves the input as a crash.
inline void require(bool ok, const char* what) {
    if (!ok) {
        std::fprintf(stderr, "fuzz invariant violated: %s\n", what);
        std::abort();
    }
}

// Whether every byte is printable ASCII (what may reach last_error and the server log).
inline bool printable_ascii(std::string_view s) {
    for (const char c : s) {
        const auto b = static_cast<unsigned char>(c);
        if (b < 0x20U || b >= 0x7FU) {
            return false;
        }
    }
    return true;
}

// The fuzzer's bytes as text.
inline std::string_view as_text(const std::uint8_t* data, std::size_t size) {
    return {reinterpret_cast<const char*>(data), size};
}

}  // namespace upstream_token::fuzz
