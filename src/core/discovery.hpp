// Provider metadata (OpenID Connect Discovery 1.0, RFC 8414): where to find it for an
// issuer, what to take from it, and the check that it speaks for the issuer asked about.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "refresh_request.hpp"

namespace upstream_token {

struct ProviderMetadata {
    std::string issuer;
    std::string token_endpoint;
    std::optional<std::string> revocation_endpoint;
    std::optional<std::string> authorization_endpoint;
    std::optional<std::string> device_authorization_endpoint;  // RFC 8628
    std::vector<std::string> auth_methods;  // token_endpoint_auth_methods_supported, if listed
};

// The metadata URLs to try, in order: OIDC Discovery (issuer + /.well-known/openid-configuration),
// then RFC 8414 (/.well-known/oauth-authorization-server inserted before the issuer's path).
// Error(invalid_parameter) for an issuer that is not an https (or allowed http) URL without
// query or fragment.
std::vector<std::string> metadata_urls(std::string_view issuer, bool allow_http);

// Reads a metadata document. Its issuer must equal `expected_issuer` exactly (OIDC Discovery
// 4.3, RFC 8414 3.3), and its endpoints must be valid; Error(invalid_parameter) otherwise.
ProviderMetadata parse_metadata(std::string_view body, std::string_view expected_issuer,
                                bool allow_http);

// The client authentication to use when none was asked for: the provider's preference among
// what this client can do (a secret: basic, then post; no secret: none). RFC 8414 2 makes
// client_secret_basic the default when the list is absent. Error(invalid_parameter) when the
// provider supports nothing this client can do.
AuthMethod choose_auth_method(const std::vector<std::string>& supported, bool has_secret);

// Error(invalid_parameter) when `method` is not among `supported` (an absent list allows
// client_secret_basic only, as RFC 8414 says).
void require_supported(const std::vector<std::string>& supported, AuthMethod method);

}  // namespace upstream_token
