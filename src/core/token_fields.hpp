// The fields of a successful token answer (RFC 6749 5.1), read leniently: only access_token
// is required; every optional field that is odd (wrong JSON type, empty, negative, not a
// number, out of range) is defaulted and named in a warning, never fatal, because the answer
// may carry a rotated refresh token that must be saved.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <optional>
#include <string>

#include "token_response.hpp"

namespace upstream_token {

struct TokenFields {
    std::optional<TokenResponse> tokens;  // set when the answer has a usable access_token
    std::string problem;                  // why not, otherwise (never a value from the body)
};

// Reads a parsed JSON object. `repaired` says the body needed json_repair: a token string
// carrying the replacement character is then damaged and not used.
TokenFields read_token_fields(const nlohmann::json& obj, bool repaired);

}  // namespace upstream_token
