// Building the refresh_token grant request (RFC 6749 sections 2.3.1 and 6).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace upstream_token {

enum class AuthMethod { client_secret_basic, client_secret_post, none };

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

// The POST to the token endpoint. client_secret is required unless method is none.
HttpRequest build_refresh_request(AuthMethod method, std::string_view client_id,
                                  std::optional<std::string_view> client_secret,
                                  std::string_view refresh_token,
                                  std::optional<std::string_view> scope);

// The RFC 7009 revocation POST for one token, with the same client authentication.
HttpRequest build_revocation_request(AuthMethod method, std::string_view client_id,
                                     std::optional<std::string_view> client_secret,
                                     std::string_view token, std::string_view token_type_hint);

// Validates an endpoint URL: https:// (or http:// when allow_http), a host, no userinfo,
// no fragment, no whitespace. Error(invalid_parameter) otherwise.
void validate_endpoint(std::string_view url, bool allow_http);

}  // namespace upstream_token
