// ID-token claims used for the OIDC Core 12.2 binding check. The token came over TLS
// straight from the token endpoint, so its claims are read, not its signature verified
// (OIDC Core 3.1.3.7, item 6).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace upstream_token {

struct IdClaims {
    std::string iss;
    std::string sub;
    std::vector<std::string> aud;  // a string aud becomes one element
    std::optional<std::string> azp;
    std::optional<std::int64_t> auth_time;
    // Login checks only (login_id_token_problem); never stored, never part of the binding.
    std::optional<std::string> nonce;  // a non-string nonce reads as absent
    std::optional<std::int64_t> exp;   // a non-number exp reads as absent
};

// Decodes the payload of a compact JWS, nonce and exp included. Error(invalid_parameter)
// when malformed.
IdClaims decode_id_token(std::string_view jwt);

// Serialises the binding claims for storage (a small JSON object; no secrets in it). nonce
// and exp are not stored; claims_from_json leaves them empty.
std::string claims_to_json(const IdClaims& c);
IdClaims claims_from_json(std::string_view json);

// OIDC Core 12.2: iss and sub must equal, aud must equal as a set, azp and auth_time must
// equal when the stored ones are present. Returns the first claim that differs, or nullopt.
std::optional<std::string> binding_mismatch(const IdClaims& stored, const IdClaims& fresh);

}  // namespace upstream_token
