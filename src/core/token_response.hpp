// Interpreting a token endpoint's answer (RFC 6749 section 5), leniently where real
// providers differ, strictly where a wrong guess would lose or misuse a token.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "http_header.hpp"  // parse_retry_after
#include "time.hpp"

namespace upstream_token {

struct TokenResponse {
    std::string access_token;                  // required, non-empty
    std::optional<std::string> refresh_token;  // absent: keep the old one
    std::optional<std::string> id_token;
    std::string token_type;  // as sent ("Bearer" when absent)
    std::optional<std::string> scope;
    std::optional<std::int64_t> expires_in;  // number or numeric string
    std::optional<std::int64_t>
        refresh_expires_in;  // refresh_expires_in or refresh_token_expires_in
    // Odd optional fields that were defaulted ("expires_in is a boolean; default used"):
    // field names and JSON types only, never a value.
    std::vector<std::string> warnings;
    // Other top-level string and number fields (Salesforce's instance_url...), as text: at
    // most kMaxOtherFields, each at most kMaxOtherFieldBytes; a provider's response_fields
    // says which are kept.
    std::map<std::string, std::string> other_fields;
};

// The fields a TokenResponse reads itself (never kept as other_fields).
bool is_token_field(std::string_view name);

inline constexpr std::size_t kMaxOtherFields = 32;
inline constexpr std::size_t kMaxOtherFieldBytes = 2048;

enum class FailureClass {
    none,                  // success
    reauth_required,       // invalid_grant or the like: the refresh token is dead
    client_misconfigured,  // invalid_client / unauthorized_client
    transient,             // 429, 5xx, network, timeouts: retry with backoff
    protocol,              // unusable answer (malformed JSON, missing access_token, other 4xx)
};

struct ExchangeOutcome {
    FailureClass failure = FailureClass::none;
    std::optional<TokenResponse> tokens;  // set only on success
    std::string error;                    // OAuth "error" value or a short class like "http_503"
    std::string message;                  // human text, never contains a secret
    std::optional<Micros> retry_after;    // from a Retry-After header
};

// Classifies one HTTP exchange. `retry_after_header` is the raw header value or empty.
ExchangeOutcome interpret_token_response(long http_status, std::string_view body,
                                         std::string_view retry_after_header, Time now);

// For failures below HTTP (connect refused, TLS, timeout): always transient.
ExchangeOutcome transport_failure(std::string_view what);

}  // namespace upstream_token
