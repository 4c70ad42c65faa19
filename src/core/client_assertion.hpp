// private_key_jwt client authentication (RFC 7523 section 2.2, OIDC Core 9): a short-lived
// JWT signed with the client's private key, RS256 or ES256, through OpenSSL.
#pragma once

#include <string>
#include <string_view>

#include "time.hpp"

namespace upstream_token {

// Checks a PEM private key (RSA of at least 2048 bits, or EC P-256) and returns the algorithm
// it signs with: `requested` when given and matching the key, else RS256 / ES256.
// Error(invalid_parameter) when the key is unusable or does not fit the algorithm; the message
// never contains key material.
std::string assertion_alg_for_key(std::string_view pem, std::string_view requested);

// A client assertion: header {alg, typ, kid?}; claims iss = sub = client_id, aud = audience
// (the endpoint it is sent to), iat, exp = iat + lifetime, a random jti.
std::string make_client_assertion(std::string_view pem, std::string_view alg, std::string_view kid,
                                  std::string_view client_id, std::string_view audience, Time now,
                                  Micros lifetime = seconds(60));

}  // namespace upstream_token
