// Token endpoint requests for the grants beyond refresh_token: authorization code with PKCE
// (RFC 6749 4.1.3, RFC 7636), device authorization (RFC 8628), client credentials
// (RFC 6749 4.4) and token exchange (RFC 8693). Each is a form POST with the client
// authentication of refresh_request.hpp (`authenticate`).
#pragma once

#include <optional>
#include <string_view>

#include "refresh_request.hpp"
#include "time.hpp"

namespace upstream_token {

// RFC 6749 4.1.3 + RFC 7636 4.5: redeems an authorization code at the token endpoint
// `endpoint`. `redirect_uri` must be the one the authorization request carried.
// Error(invalid_parameter) when code, redirect_uri or code_verifier is empty.
HttpRequest build_code_request(const ClientCredentials& client, std::string_view endpoint,
                               std::string_view code, std::string_view redirect_uri,
                               std::string_view code_verifier, Time now);

// RFC 8628 3.1: asks the device authorization endpoint `endpoint` for a device code.
// `assertion_audience` is the private_key_jwt assertion's aud (commonly the token endpoint or
// the issuer; empty: `endpoint`). An empty scope is not sent.
HttpRequest build_device_authorization_request(const ClientCredentials& client,
                                               std::string_view endpoint,
                                               std::optional<std::string_view> scope, Time now,
                                               std::string_view assertion_audience);

// RFC 8628 3.4: one poll of the token endpoint with the device code.
// Error(invalid_parameter) when device_code is empty.
HttpRequest build_device_token_request(const ClientCredentials& client, std::string_view endpoint,
                                       std::string_view device_code, Time now);

// RFC 6749 4.4: tokens for the client itself; `audience` is sent as `audience` (Auth0 and
// others) when given. Empty optionals are not sent. Error(invalid_parameter) for method none:
// the grant is for confidential clients only (RFC 6749 4.4).
HttpRequest build_client_credentials_request(const ClientCredentials& client,
                                             std::string_view endpoint,
                                             std::optional<std::string_view> scope,
                                             std::optional<std::string_view> audience, Time now);

// RFC 8693 2.1: exchanges an access token (subject_token_type
// urn:ietf:params:oauth:token-type:access_token; requested_token_type is not sent) for one
// meant for `audience`, with `scope`; empty optionals are not sent.
// Error(invalid_parameter) when subject_token is empty.
HttpRequest build_token_exchange_request(const ClientCredentials& client, std::string_view endpoint,
                                         std::string_view subject_token,
                                         std::optional<std::string_view> audience,
                                         std::optional<std::string_view> scope, Time now);

}  // namespace upstream_token
