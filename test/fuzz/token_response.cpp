// libFuzzer target: a token endpoint's answer (interpret_token_response, the lenient field
// reader and the JSON repair behind it). Input: first byte picks the HTTP status, the rest is
// the body.
#include <nlohmann/json.hpp>

#include <array>
#include <cstddef>
#include <cstdint>

#include "core/json_repair.hpp"
#include "core/token_response.hpp"
#include "fuzz_check.hpp"

using namespace upstream_token;
using upstream_token::fuzz::printable_ascii;
using upstream_token::fuzz::require;

namespace {
constexpr Time kNow{seconds(1445412480)};
constexpr std::array<long, 16> kStatuses = {200, 201, 204, 299, 400, 401, 403, 408,
                                            429, 500, 503, 302, 0,   100, 600, 199};
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 1) {
        return 0;
    }
    const long status = kStatuses.at(data[0] % kStatuses.size());
    const std::string_view body = fuzz::as_text(data + 1, size - 1);

    const ExchangeOutcome o = interpret_token_response(status, body, "", kNow);
    require((o.failure == FailureClass::none) == o.tokens.has_value(), "tokens iff success");
    require(printable_ascii(o.message) && printable_ascii(o.error), "printable message");
    require(o.message.size() <= 400 && o.error.size() <= 80, "bounded message");
    if (o.tokens) {
        require(status >= 200 && status <= 299, "tokens only from a 2xx");
        require(!o.tokens->access_token.empty(), "non-empty access token");
        require(!o.tokens->token_type.empty(), "token type defaulted");
        require(!o.tokens->expires_in || *o.tokens->expires_in >= 0, "lifetime not negative");
        require(!o.tokens->refresh_expires_in || *o.tokens->refresh_expires_in >= 0,
                "refresh lifetime not negative");
        for (const auto& w : o.tokens->warnings) {
            require(printable_ascii(w) && w.size() < 100, "warnings are short fixed text");
        }
    }

    // The repair never changes a text the strict parser accepts (parsed only when repaired).
    if (repair_json_text(body)) {
        require(nlohmann::json::parse(body, nullptr, false).is_discarded(),
                "valid JSON is not repaired");
    }
    return 0;
}
