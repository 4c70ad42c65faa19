// Building the refresh_token grant request (see refresh_request.hpp).
#include "core/refresh_request.hpp"

#include "core/client_assertion.hpp"

#include <openssl/crypto.h>

#include <array>
#include <cstddef>
#include <cstdint>

#include "core/error.hpp"

namespace upstream_token {

namespace {

constexpr std::size_t kMaxEndpointLength = 2048;

// Overwrites a temporary that held a secret before it is freed (defence in depth).
void wipe(std::string& s) noexcept {
    if (!s.empty()) {
        OPENSSL_cleanse(s.data(), s.size());
    }
    s.clear();
}

// ASCII letter test, independent of the process locale (unlike std::isalpha).
bool is_alpha(char c) noexcept {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

// ASCII digit test, independent of the process locale.
bool is_digit(char c) noexcept {
    return c >= '0' && c <= '9';
}

// ASCII lower-casing for the case-insensitive URL scheme comparison.
char to_lower(char c) noexcept {
    return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

// Case-insensitive prefix test, used for the URL scheme.
bool starts_with_ci(std::string_view s, std::string_view prefix) noexcept {
    if (s.size() < prefix.size()) {
        return false;
    }
    for (std::size_t i = 0; i < prefix.size(); ++i) {
        if (to_lower(s[i]) != to_lower(prefix[i])) {
            return false;
        }
    }
    return true;
}

// The one failure type of validate_endpoint; the URL itself is never echoed (it may carry
// credentials in userinfo or the query).
[[noreturn]] void bad_endpoint(const std::string& why) {
    throw Error(ErrorCode::invalid_parameter, "invalid endpoint URL: " + why);
}

// Checks the host[:port] part of an authority (userinfo was already ruled out).
void validate_host_port(std::string_view authority) {
    std::string_view host;
    std::string_view rest;
    if (!authority.empty() && authority.front() == '[') {
        const std::size_t close = authority.find(']');
        if (close == std::string_view::npos) {
            bad_endpoint("unterminated IPv6 address literal");
        }
        host = authority.substr(1, close - 1);
        rest = authority.substr(close + 1);
        if (host.empty()) {
            bad_endpoint("missing host");
        }
        for (const char c : host) {
            const bool hex = is_digit(c) || (to_lower(c) >= 'a' && to_lower(c) <= 'f');
            if (!hex && c != ':' && c != '.') {
                bad_endpoint("invalid character in IPv6 address literal");
            }
        }
        if (!rest.empty() && rest.front() != ':') {
            bad_endpoint("unexpected characters after IPv6 address literal");
        }
    } else {
        const std::size_t colon = authority.find(':');
        host = authority.substr(0, colon);
        rest = colon == std::string_view::npos ? std::string_view{} : authority.substr(colon);
        if (host.empty()) {
            bad_endpoint("missing host");
        }
        for (const char c : host) {
            if (!is_alpha(c) && !is_digit(c) && c != '-' && c != '.' && c != '_') {
                bad_endpoint("invalid character in host name");
            }
        }
    }
    if (rest.empty()) {
        return;
    }
    const std::string_view port = rest.substr(1);  // after ':'
    if (port.empty() || port.size() > 5) {
        bad_endpoint("invalid port");
    }
    std::uint32_t value = 0;
    for (const char c : port) {
        if (!is_digit(c)) {
            bad_endpoint("invalid port");
        }
        value = (value * 10U) + static_cast<std::uint32_t>(c - '0');
    }
    if (value == 0 || value > 65535U) {
        bad_endpoint("port out of range");
    }
}

}  // namespace

// Reads the provider's configured client authentication method (fixed set of names).
AuthMethod parse_auth_method(std::string_view text) {
    if (text == "client_secret_basic") {
        return AuthMethod::client_secret_basic;
    }
    if (text == "client_secret_post") {
        return AuthMethod::client_secret_post;
    }
    if (text == "none") {
        return AuthMethod::none;
    }
    if (text == "private_key_jwt") {
        return AuthMethod::private_key_jwt;
    }
    // The text is not echoed: a secret passed in the wrong argument must not reach a log.
    throw Error(ErrorCode::invalid_parameter, "unknown client authentication method", {},
                "Use client_secret_basic, client_secret_post, private_key_jwt or none.");
}

// The canonical name of a method, for storage and messages.
const char* auth_method_name(AuthMethod m) {
    switch (m) {
        case AuthMethod::client_secret_basic:
            return "client_secret_basic";
        case AuthMethod::client_secret_post:
            return "client_secret_post";
        case AuthMethod::none:
            return "none";
        case AuthMethod::private_key_jwt:
            return "private_key_jwt";
    }
    return "unknown";
}

// Encodes one form value (WHATWG urlencoded set: ALPHA DIGIT * - . _ kept, space as '+').
std::string form_encode(std::string_view value) {
    static constexpr std::array<char, 16> kHex = {'0', '1', '2', '3', '4', '5', '6', '7',
                                                  '8', '9', 'A', 'B', 'C', 'D', 'E', 'F'};
    std::string out;
    out.reserve(value.size() * 3);
    for (const char c : value) {
        if (is_alpha(c) || is_digit(c) || c == '*' || c == '-' || c == '.' || c == '_') {
            out.push_back(c);
        } else if (c == ' ') {
            out.push_back('+');
        } else {
            const auto b = static_cast<unsigned char>(c);
            out.push_back('%');
            out.push_back(kHex.at(b >> 4U));
            out.push_back(kHex.at(b & 0x0FU));
        }
    }
    return out;
}

// Standard base64 with padding (RFC 4648 section 4), for the Basic authorization header.
std::string base64_encode(std::string_view bytes) {
    static constexpr std::string_view kAlphabet =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string out;
    out.reserve(((bytes.size() + 2) / 3) * 4);
    std::size_t i = 0;
    for (; i + 3 <= bytes.size(); i += 3) {
        const std::uint32_t v =
            (static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i])) << 16U) |
            (static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i + 1])) << 8U) |
            static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i + 2]));
        out.push_back(kAlphabet[(v >> 18U) & 0x3FU]);
        out.push_back(kAlphabet[(v >> 12U) & 0x3FU]);
        out.push_back(kAlphabet[(v >> 6U) & 0x3FU]);
        out.push_back(kAlphabet[v & 0x3FU]);
    }
    const std::size_t left = bytes.size() - i;
    if (left > 0) {
        std::uint32_t v = static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i])) << 16U;
        if (left == 2) {
            v |= static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i + 1])) << 8U;
        }
        out.push_back(kAlphabet[(v >> 18U) & 0x3FU]);
        out.push_back(kAlphabet[(v >> 12U) & 0x3FU]);
        out.push_back(left == 2 ? kAlphabet[(v >> 6U) & 0x3FU] : '=');
        out.push_back('=');
    }
    return out;
}

// Adds the configured client authentication to a request body; shared by every grant builder.
HttpRequest authenticate(const ClientCredentials& client, std::string_view audience,
                         std::string body, Time now) {
    if (client.client_id.empty()) {
        throw Error(ErrorCode::invalid_parameter, "client_id must not be empty");
    }
    if (client.method != AuthMethod::none && (!client.secret || client.secret->empty())) {
        throw Error(ErrorCode::invalid_parameter, std::string("a client secret is required for ") +
                                                      auth_method_name(client.method));
    }
    HttpRequest req;
    req.headers.emplace_back("Content-Type: application/x-www-form-urlencoded");
    req.headers.emplace_back("Accept: application/json");
    req.body = std::move(body);
    // The separator before the authentication parameters; none when the body is empty.
    const char* const sep = req.body.empty() ? "" : "&";
    switch (client.method) {
        case AuthMethod::client_secret_basic: {
            // RFC 6749 2.3.1: id and secret are form-encoded before joining with ':'.
            std::string credentials =
                form_encode(client.client_id) + ":" + form_encode(*client.secret);
            req.headers.emplace_back("Authorization: Basic " + base64_encode(credentials));
            wipe(credentials);
            break;
        }
        case AuthMethod::client_secret_post:
            req.body += sep;
            req.body += "client_id=" + form_encode(client.client_id);
            req.body += "&client_secret=" + form_encode(*client.secret);
            break;
        case AuthMethod::none:
            req.body += sep;
            req.body += "client_id=" + form_encode(client.client_id);
            break;
        case AuthMethod::private_key_jwt:
            req.body += sep;
            req.body += "client_id=" + form_encode(client.client_id);
            req.body +=
                "&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-"
                "bearer";
            req.body +=
                "&client_assertion=" + make_client_assertion(*client.secret, client.assertion_alg,
                                                             client.assertion_kid, client.client_id,
                                                             audience, now);
            break;
    }
    return req;
}

// Builds the refresh_token grant POST the engine sends before an access token expires.
HttpRequest build_refresh_request(const ClientCredentials& client, std::string_view endpoint,
                                  std::string_view refresh_token,
                                  std::optional<std::string_view> scope, Time now,
                                  const std::map<std::string, std::string>& extra) {
    if (refresh_token.empty()) {
        throw Error(ErrorCode::invalid_parameter, "refresh token must not be empty");
    }
    std::string body = "grant_type=refresh_token&refresh_token=" + form_encode(refresh_token);
    if (scope && !scope->empty()) body += "&scope=" + form_encode(*scope);
    for (const auto& [name, value] : extra) {
        body += "&" + form_encode(name) + "=" + form_encode(value);
    }
    return authenticate(client, endpoint, std::move(body), now);
}

// Builds the RFC 7009 POST that tells the provider a token is no longer wanted.
HttpRequest build_revocation_request(const ClientCredentials& client, std::string_view endpoint,
                                     std::string_view token, std::string_view token_type_hint,
                                     Time now) {
    if (token.empty()) throw Error(ErrorCode::invalid_parameter, "token must not be empty");
    std::string body = "token=" + form_encode(token);
    if (!token_type_hint.empty()) body += "&token_type_hint=" + form_encode(token_type_hint);
    return authenticate(client, endpoint, std::move(body), now);
}

// Refuses endpoint URLs that would leak credentials, be ambiguous, or bypass TLS.
void validate_endpoint(std::string_view url, bool allow_http) {
    if (url.empty()) {
        bad_endpoint("empty");
    }
    if (url.size() > kMaxEndpointLength) {
        bad_endpoint("longer than " + std::to_string(kMaxEndpointLength) + " characters");
    }
    for (const char c : url) {
        const auto b = static_cast<unsigned char>(c);
        if (b <= 0x20U || b == 0x7FU) {
            bad_endpoint("contains whitespace or a control character");
        }
        if (b >= 0x80U) {
            bad_endpoint("contains a non-ASCII character (percent-encode it, or use punycode)");
        }
        if (c == '#') {
            bad_endpoint("contains a fragment ('#')");
        }
        if (c == '\\') {
            bad_endpoint("contains a backslash");
        }
    }

    std::string_view rest;
    if (starts_with_ci(url, "https://")) {
        rest = url.substr(8);
    } else if (starts_with_ci(url, "http://")) {
        if (!allow_http) {
            bad_endpoint("plain http:// is not allowed, use https://");
        }
        rest = url.substr(7);
    } else {
        bad_endpoint(allow_http ? "scheme must be https:// or http://" : "scheme must be https://");
    }

    const std::size_t end = rest.find_first_of("/?");
    const std::string_view authority = rest.substr(0, end);
    if (authority.find('@') != std::string_view::npos) {
        bad_endpoint("must not contain user information ('user@host')");
    }
    validate_host_port(authority);
}

}  // namespace upstream_token
