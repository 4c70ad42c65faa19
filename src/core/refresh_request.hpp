// Building the refresh_token grant request (RFC 6749 sections 2.3.1 and 6).
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "time.hpp"

namespace upstream_token {

enum class AuthMethod { client_secret_basic, client_secret_post, none, private_key_jwt };

// Parses "client_secret_basic" etc.; Error(invalid_parameter) for anything else.
AuthMethod parse_auth_method(std::string_view text);
const char* auth_method_name(AuthMethod m);

// application/x-www-form-urlencoded encoding of one value (space as '+').
std::string form_encode(std::string_view value);

std::string base64_encode(std::string_view bytes);

struct HttpRequest {
    std::string body;                  // form body
    std::vector<std::string> headers;  // complete header lines, e.g. "Authorization: Basic ..."
};

// Who the client is and how it proves it, for every request to the provider.
struct ClientCredentials {
    AuthMethod method = AuthMethod::client_secret_basic;
    std::string client_id;
    std::optional<std::string> secret;  // client secret; the PEM private key for private_key_jwt
    std::string assertion_alg;          // private_key_jwt: RS256 or ES256 (empty: from the key)
    std::string assertion_kid;          // private_key_jwt: optional kid header
};

// A form POST carrying `body` (the request's own parameters, form-encoded, may be empty) plus
// the client authentication of RFC 6749 2.3.1 / RFC 7523 2.2: an Authorization header
// (client_secret_basic), or client_id [+ client_secret | + client_assertion] appended to the
// body. `audience` is the private_key_jwt assertion's aud, normally the endpoint the request is
// sent to; `now` dates the assertion. Error(invalid_parameter) when client_id is empty or the
// method needs a secret that is missing. Shared by every request builder.
HttpRequest authenticate(const ClientCredentials& client, std::string_view audience,
                         std::string body, Time now);

// The refresh_token grant POST to `endpoint` (the token endpoint). The secret is required
// unless the method is none; `now` dates a private_key_jwt assertion, whose audience is
// `endpoint`. `extra` holds the provider's own refresh parameters (a redirect URI...), sent
// after the standard ones.
HttpRequest build_refresh_request(const ClientCredentials& client, std::string_view endpoint,
                                  std::string_view refresh_token,
                                  std::optional<std::string_view> scope, Time now,
                                  const std::map<std::string, std::string>& extra = {});

// The RFC 7009 revocation POST of one token to `endpoint`, with the same authentication.
HttpRequest build_revocation_request(const ClientCredentials& client, std::string_view endpoint,
                                     std::string_view token, std::string_view token_type_hint,
                                     Time now);

// Validates an endpoint URL: https:// (or http:// when allow_http), a host, no userinfo,
// no fragment, no whitespace. Error(invalid_parameter) otherwise.
void validate_endpoint(std::string_view url, bool allow_http);

}  // namespace upstream_token
