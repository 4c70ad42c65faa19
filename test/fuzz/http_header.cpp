// libFuzzer target: response header lines as libcurl hands them over (track_retry_after) and
// the Retry-After value (parse_retry_after). Input: raw header text, split at '\n'.
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/http_header.hpp"
#include "fuzz_check.hpp"

using namespace upstream_token;
using upstream_token::fuzz::require;

namespace {
constexpr Micros kDay = seconds(86400);
// The epoch, the RFC's example instant, and 2100-01-01.
constexpr Time kNows[] = {Time{}, Time{seconds(1445412480)}, Time{seconds(4102444800)}};

// Every Retry-After is unusable or a delay between zero and one day.
void check(std::string_view value) {
    for (const Time now : kNows) {
        const auto d = parse_retry_after(value, now);
        require(!d || (d->count() >= 0 && *d <= kDay), "Retry-After within [0, 1 day]");
    }
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view in = fuzz::as_text(data, size);
    std::string retry_after;
    std::size_t start = 0;
    while (start < in.size()) {
        const std::size_t nl = in.find('\n', start);
        const std::size_t end = nl == std::string_view::npos ? in.size() : nl + 1;
        track_retry_after(in.substr(start, end - start), retry_after);
        require(retry_after.size() <= kMaxRetryAfterHeaderLine, "kept value is bounded");
        start = end;
    }
    check(retry_after);
    check(in);
    return 0;
}
