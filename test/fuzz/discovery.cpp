// libFuzzer target: provider metadata (parse_metadata, metadata_urls, choose_auth_method,
// require_supported). Input: first byte holds flags (allow_http; expected issuer fixed or the
// document's own), the rest is the metadata document (and, as text, an issuer URL).
#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <string>

#include "core/discovery.hpp"
#include "core/error.hpp"
#include "fuzz_check.hpp"

using namespace upstream_token;
using upstream_token::fuzz::require;

namespace {
constexpr std::string_view kIssuer = "https://issuer.example/realms/main";

// Whether a URL starts with `scheme`, ignoring case (RFC 3986 3.1).
bool has_scheme(std::string_view url, std::string_view scheme) {
    if (url.size() < scheme.size()) {
        return false;
    }
    for (std::size_t i = 0; i < scheme.size(); ++i) {
        const char c = url[i];
        if ((c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c) != scheme[i]) {
            return false;
        }
    }
    return true;
}

// Whether a URL has the scheme validate_endpoint allows.
bool allowed_scheme(std::string_view url, bool allow_http) {
    return has_scheme(url, "https://") || (allow_http && has_scheme(url, "http://"));
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 1) {
        return 0;
    }
    const bool allow_http = (data[0] & 1U) != 0;
    const bool own_issuer = (data[0] & 2U) != 0;
    const std::string_view body = fuzz::as_text(data + 1, size - 1);

    std::string expected(kIssuer);
    if (own_issuer) {  // skip the issuer check to reach what follows it
        const auto doc = nlohmann::json::parse(body, nullptr, false);
        if (doc.is_object() && doc.contains("issuer") && doc["issuer"].is_string()) {
            expected = doc["issuer"].get<std::string>();
        }
    }
    try {
        const ProviderMetadata m = parse_metadata(body, expected, allow_http);
        require(m.issuer == expected, "issuer equals the one asked for");
        require(allowed_scheme(m.token_endpoint, allow_http), "token endpoint scheme");
        require(!m.revocation_endpoint || allowed_scheme(*m.revocation_endpoint, allow_http),
                "revocation endpoint scheme");
        for (const bool secret : {true, false}) {
            try {
                require_supported(m.auth_methods, choose_auth_method(m.auth_methods, secret));
            } catch (const Error& e) {
                require(e.code() == ErrorCode::invalid_parameter, "auth method errors");
            }
        }
    } catch (const Error& e) {
        require(e.code() == ErrorCode::invalid_parameter, "metadata errors");
    }
    try {
        const auto urls = metadata_urls(body, allow_http);
        require(urls.size() == 2, "two metadata URLs");
        for (const auto& u : urls) {
            require(allowed_scheme(u, allow_http), "metadata URL scheme");
        }
    } catch (const Error& e) {
        require(e.code() == ErrorCode::invalid_parameter, "issuer errors");
    }
    return 0;
}
