// Token endpoint requests for the grants beyond refresh_token (see grant_request.hpp).
#include "core/grant_request.hpp"

#include <string>
#include <utility>

#include "core/error.hpp"

namespace upstream_token {

namespace {

// Refuses an empty required parameter, naming it but never any value.
void require_value(std::string_view value, const char* name) {
    if (value.empty()) {
        throw Error(ErrorCode::invalid_parameter, std::string(name) + " must not be empty");
    }
}

// Appends "&name=value" for an optional parameter that was given and is not empty.
void append_optional(std::string& body, const char* name, std::optional<std::string_view> value) {
    if (value && !value->empty()) {
        body += '&';
        body += name;
        body += '=';
        body += form_encode(*value);
    }
}

}  // namespace

// Builds the POST that turns the code from the browser redirect into tokens.
HttpRequest build_code_request(const ClientCredentials& client, std::string_view endpoint,
                               std::string_view code, std::string_view redirect_uri,
                               std::string_view code_verifier, Time now) {
    require_value(code, "authorization code");
    require_value(redirect_uri, "redirect_uri");
    require_value(code_verifier, "code_verifier");
    std::string body = "grant_type=authorization_code&code=" + form_encode(code);
    body += "&redirect_uri=" + form_encode(redirect_uri);
    body += "&code_verifier=" + form_encode(code_verifier);
    return authenticate(client, endpoint, std::move(body), now);
}

// Builds the POST that starts a device login (a user code shown to the user).
HttpRequest build_device_authorization_request(const ClientCredentials& client,
                                               std::string_view endpoint,
                                               std::optional<std::string_view> scope, Time now,
                                               std::string_view assertion_audience) {
    std::string body;
    if (scope && !scope->empty()) {
        body = "scope=" + form_encode(*scope);
    }
    const std::string_view audience = assertion_audience.empty() ? endpoint : assertion_audience;
    return authenticate(client, audience, std::move(body), now);
}

// Builds one poll of a device login, sent until the user approved or the code expired.
HttpRequest build_device_token_request(const ClientCredentials& client, std::string_view endpoint,
                                       std::string_view device_code, Time now) {
    require_value(device_code, "device_code");
    std::string body = "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Adevice_code";
    body += "&device_code=" + form_encode(device_code);
    return authenticate(client, endpoint, std::move(body), now);
}

// Builds the POST for tokens that act as the client itself, with no user.
HttpRequest build_client_credentials_request(const ClientCredentials& client,
                                             std::string_view endpoint,
                                             std::optional<std::string_view> scope,
                                             std::optional<std::string_view> audience, Time now) {
    if (client.method == AuthMethod::none) {
        throw Error(ErrorCode::invalid_parameter,
                    "the client_credentials grant needs client authentication (method is none)", {},
                    "Configure client_secret_basic, client_secret_post or private_key_jwt.");
    }
    std::string body = "grant_type=client_credentials";
    append_optional(body, "scope", scope);
    append_optional(body, "audience", audience);
    return authenticate(client, endpoint, std::move(body), now);
}

// Builds the POST that trades a user's access token for one meant for another audience.
HttpRequest build_token_exchange_request(const ClientCredentials& client, std::string_view endpoint,
                                         std::string_view subject_token,
                                         std::optional<std::string_view> audience,
                                         std::optional<std::string_view> scope, Time now) {
    require_value(subject_token, "subject_token");
    std::string body = "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange";
    body += "&subject_token=" + form_encode(subject_token);
    body += "&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token";
    append_optional(body, "audience", audience);
    append_optional(body, "scope", scope);
    return authenticate(client, endpoint, std::move(body), now);
}

}  // namespace upstream_token
