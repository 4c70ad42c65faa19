// The user-facing side of a login: PKCE (RFC 7636), the authorization URL with state and
// nonce (RFC 6749 4.1.1, OIDC Core 3.1.2.1), the device authorization answer and its polling
// errors (RFC 8628), and the checks of the ID token a login returns (OIDC Core 3.1.3.7).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "id_token.hpp"
#include "time.hpp"

namespace upstream_token {

// Unguessable URL-safe text (state, nonce, PKCE verifier): `bytes` random bytes from OpenSSL's
// RAND_bytes as base64url without padding. Error(invalid_parameter) when bytes is 0 or above
// 1024, Error(internal) when no randomness is available.
std::string random_token(std::size_t bytes);

// RFC 7636 4.2, method S256: base64url(SHA-256(verifier)) without padding.
// Error(invalid_parameter) unless the verifier is 43 to 128 unreserved characters (RFC 7636 4.1).
std::string pkce_challenge(std::string_view verifier);

// What the authorization URL carries. Empty scope and nonce are not sent.
struct AuthorizationUrl {
    std::string endpoint;  // the authorization endpoint, possibly with a query of its own
    std::string client_id;
    std::string redirect_uri;
    std::optional<std::string> scope;
    std::string state;
    std::string code_challenge;  // pkce_challenge(verifier), sent with method S256
    std::optional<std::string> nonce;
    std::map<std::string, std::string> extra;  // the provider's own parameters (prompt...)
};

// The URL to send the browser to: endpoint, then '?' (or '&' when the endpoint has a query),
// then response_type=code, client_id, redirect_uri, scope, state, code_challenge,
// code_challenge_method=S256, nonce and the extra parameters in name order; names and values
// percent-encoded (RFC 3986 unreserved characters kept, space as %20).
// Error(invalid_parameter) when endpoint, client_id, redirect_uri, state or code_challenge is
// empty, the endpoint has a fragment, or an extra parameter has an empty or reserved name.
std::string authorization_url(const AuthorizationUrl& a);

// Whether the space-separated scope contains the word "openid" (an ID token is then expected).
bool scope_has_openid(std::optional<std::string_view> scope);

// An RFC 8628 3.2 device authorization answer.
struct DeviceAuthorization {
    std::string device_code;  // a secret: never in a message
    std::string user_code;
    std::string verification_uri;
    std::optional<std::string> verification_uri_complete;
    std::int64_t expires_in = 0;  // seconds, > 0
    std::int64_t interval = 5;    // seconds between polls, >= 1
};

// Parses a 2xx device authorization answer (JSON object). Accepts Google's verification_url
// for verification_uri; expires_in and interval as numbers or numeric strings. interval
// defaults to 5 when absent or unreadable and is raised to at least 1; expires_in is required,
// > 0 and at most a year. Error(refresh_failed) naming the missing or bad field, never a value.
DeviceAuthorization parse_device_authorization(std::string_view body);

// What an RFC 8628 3.5 polling error means for the poller.
enum class DevicePoll {
    pending,    // authorization_pending: poll again after the interval
    slow_down,  // slow_down: add 5 seconds to the interval, poll again
    denied,     // access_denied: the user refused
    expired,    // expired_token: start over
    other,      // anything else: a failure
};

// Maps the OAuth error code of a failed device poll to what the poller does next.
DevicePoll classify_device_error(std::string_view error_code);

// The allowed clock difference with the provider when checking exp.
inline constexpr std::int64_t kIdTokenClockSkewSeconds = 60;

// OIDC Core 3.1.3.7 checks of the ID token a login returned (claims read, signature not
// verified: it came over TLS straight from the token endpoint), in this order: iss equals
// expected_issuer when one is given and not empty; aud contains client_id; with several aud
// values, azp is present and equals client_id; exp is present and now < exp + 60 s; nonce
// equals the expected one when one was sent (not empty). Returns the first problem as short
// text without claim values ("iss differs", "aud lacks the client", "azp missing",
// "azp differs", "no exp", "expired", "nonce missing", "nonce differs"), nullopt when fine.
std::optional<std::string> login_id_token_problem(const IdClaims& c,
                                                  std::optional<std::string_view> expected_issuer,
                                                  std::string_view client_id,
                                                  std::optional<std::string_view> nonce, Time now);

}  // namespace upstream_token
