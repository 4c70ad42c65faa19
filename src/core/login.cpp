// PKCE, state, the authorization URL, device answers and login ID-token checks (see login.hpp).
#include "core/login.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>
#include <cmath>
#include <vector>

#include "core/error.hpp"
#include "core/refresh_request.hpp"

namespace upstream_token {

namespace {

using nlohmann::json;

constexpr std::size_t kMaxRandomBytes = 1024;
constexpr std::int64_t kDefaultInterval = 5;
constexpr std::int64_t kMaxDeviceSeconds = std::int64_t{365} * 24 * 3600;

// RFC 3986 2.3 unreserved characters, the ones kept as they are in a URL and a PKCE verifier.
bool is_unreserved(char c) noexcept {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

// base64url without padding (RFC 4648 section 5), from the core's standard base64.
std::string base64url(std::string_view bytes) {
    std::string s = base64_encode(bytes);
    while (!s.empty() && s.back() == '=') {
        s.pop_back();
    }
    std::replace(s.begin(), s.end(), '+', '-');
    std::replace(s.begin(), s.end(), '/', '_');
    return s;
}

// Percent-encodes a query name or value (RFC 3986: unreserved kept, space as %20).
std::string uri_encode(std::string_view value) {
    static constexpr std::array<char, 16> kHex = {'0', '1', '2', '3', '4', '5', '6', '7',
                                                  '8', '9', 'A', 'B', 'C', 'D', 'E', 'F'};
    std::string out;
    out.reserve(value.size() * 3);
    for (const char c : value) {
        if (is_unreserved(c)) {
            out.push_back(c);
        } else {
            const auto b = static_cast<unsigned char>(c);
            out.push_back('%');
            out.push_back(kHex.at(b >> 4U));
            out.push_back(kHex.at(b & 0x0FU));
        }
    }
    return out;
}

// Appends "name=value" to a query under construction, with its separator.
void add_param(std::string& url, std::string_view name, std::string_view value) {
    url += '&';
    url += uri_encode(name);
    url += '=';
    url += uri_encode(value);
}

// Refuses an empty required field of the authorization URL, naming it.
void require_field(std::string_view value, const char* name) {
    if (value.empty()) {
        throw Error(ErrorCode::invalid_parameter,
                    std::string("authorization URL: ") + name + " must not be empty");
    }
}

// The parameters authorization_url sets itself, which an extra one must not override.
bool is_reserved_param(std::string_view name) noexcept {
    static constexpr std::array<std::string_view, 8> kReserved = {
        "response_type", "client_id",      "redirect_uri",          "scope",
        "state",         "code_challenge", "code_challenge_method", "nonce"};
    return std::find(kReserved.begin(), kReserved.end(), name) != kReserved.end();
}

// The failure of every malformed device authorization answer; names the field, no value.
[[noreturn]] void bad_device_answer(const std::string& why) {
    throw Error(ErrorCode::refresh_failed, "malformed device authorization answer: " + why);
}

// A required, non-empty string field of the device answer.
std::string device_string(const json& obj, const char* name) {
    const auto it = obj.find(name);
    if (it == obj.end() || !it->is_string()) {
        bad_device_answer(std::string(name) + " is missing or not a string");
    }
    std::string value = it->get<std::string>();
    if (value.empty()) {
        bad_device_answer(std::string(name) + " is empty");
    }
    return value;
}

// A number of seconds sent as a JSON number or a string of digits; nullopt when unreadable
// or beyond a year. Fractions round up, so a wait is never shortened.
std::optional<std::int64_t> read_seconds(const json& v) {
    if (v.is_number_unsigned()) {
        const auto n = v.get<std::uint64_t>();
        if (n > static_cast<std::uint64_t>(kMaxDeviceSeconds)) return std::nullopt;
        return static_cast<std::int64_t>(n);
    }
    if (v.is_number_integer()) {
        const auto n = v.get<std::int64_t>();
        if (n > kMaxDeviceSeconds) return std::nullopt;
        return n;
    }
    if (v.is_number_float()) {
        const double d = std::ceil(v.get<double>());
        if (!std::isfinite(d) || d > static_cast<double>(kMaxDeviceSeconds) || d < -1.0e9) {
            return std::nullopt;
        }
        return static_cast<std::int64_t>(d);
    }
    if (v.is_string()) {
        const auto& s = v.get_ref<const std::string&>();
        std::int64_t n = 0;
        const char* const end = s.data() + s.size();
        const auto [ptr, ec] = std::from_chars(s.data(), end, n);
        if (s.empty() || ec != std::errc() || ptr != end || n > kMaxDeviceSeconds) {
            return std::nullopt;
        }
        return n;
    }
    return std::nullopt;
}

// Whether `now` is before exp + the allowed skew (second precision, no overflow).
bool before_expiry(std::int64_t exp, Time now) {
    if (exp > INT64_MAX - kIdTokenClockSkewSeconds) {
        return true;
    }
    const auto now_s = std::chrono::floor<std::chrono::seconds>(now.time_since_epoch()).count();
    // now < (exp + skew) s exactly when floor(now) < exp + skew, the bound being whole seconds.
    return now_s < exp + kIdTokenClockSkewSeconds;
}

}  // namespace

// Makes the state, nonce and PKCE verifier of a login: values an attacker cannot guess.
std::string random_token(std::size_t bytes) {
    if (bytes == 0 || bytes > kMaxRandomBytes) {
        throw Error(ErrorCode::invalid_parameter,
                    "random token size must be 1 to " + std::to_string(kMaxRandomBytes) + " bytes");
    }
    std::vector<unsigned char> raw(bytes);
    if (RAND_bytes(raw.data(), static_cast<int>(raw.size())) != 1) {
        throw Error(ErrorCode::internal, "no randomness available for a login token");
    }
    std::string token =
        base64url(std::string_view(reinterpret_cast<const char*>(raw.data()), raw.size()));
    OPENSSL_cleanse(raw.data(), raw.size());
    return token;
}

// Derives the code_challenge sent with the authorization request from the kept verifier.
std::string pkce_challenge(std::string_view verifier) {
    if (verifier.size() < 43 || verifier.size() > 128 ||
        !std::all_of(verifier.begin(), verifier.end(), is_unreserved)) {
        throw Error(ErrorCode::invalid_parameter,
                    "PKCE code verifier must be 43 to 128 characters of A-Z a-z 0-9 - . _ ~");
    }
    std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
    unsigned int len = 0;
    if (EVP_Digest(verifier.data(), verifier.size(), digest.data(), &len, EVP_sha256(), nullptr) !=
        1) {
        throw Error(ErrorCode::internal, "SHA-256 failed computing a PKCE challenge");
    }
    return base64url(std::string_view(reinterpret_cast<const char*>(digest.data()), len));
}

// Builds the URL the user's browser opens to sign in at the provider.
std::string authorization_url(const AuthorizationUrl& a) {
    require_field(a.endpoint, "endpoint");
    require_field(a.client_id, "client_id");
    require_field(a.redirect_uri, "redirect_uri");
    require_field(a.state, "state");
    require_field(a.code_challenge, "code_challenge");
    if (a.endpoint.find('#') != std::string::npos) {
        throw Error(ErrorCode::invalid_parameter,
                    "authorization URL: the endpoint must not contain a fragment ('#')");
    }
    for (const auto& [name, value] : a.extra) {
        if (name.empty()) {
            throw Error(ErrorCode::invalid_parameter,
                        "authorization URL: an extra parameter has an empty name");
        }
        if (is_reserved_param(name)) {
            throw Error(ErrorCode::invalid_parameter,
                        "authorization URL: extra parameter " + name + " is set by the extension");
        }
    }
    std::string url = a.endpoint;
    // A query of the endpoint's own is kept; a trailing '?' or '&' already separates.
    if (url.find('?') == std::string::npos) {
        url += '?';
    } else if (url.back() != '?' && url.back() != '&') {
        url += '&';
    }
    url += "response_type=code";
    add_param(url, "client_id", a.client_id);
    add_param(url, "redirect_uri", a.redirect_uri);
    if (a.scope && !a.scope->empty()) add_param(url, "scope", *a.scope);
    add_param(url, "state", a.state);
    add_param(url, "code_challenge", a.code_challenge);
    url += "&code_challenge_method=S256";
    if (a.nonce && !a.nonce->empty()) add_param(url, "nonce", *a.nonce);
    for (const auto& [name, value] : a.extra) {
        add_param(url, name, value);
    }
    return url;
}

// Tells whether a login asks for an ID token (OIDC), so one must be checked.
bool scope_has_openid(std::optional<std::string_view> scope) {
    if (!scope) {
        return false;
    }
    std::string_view rest = *scope;
    while (!rest.empty()) {
        const std::size_t space = rest.find(' ');
        if (rest.substr(0, space) == "openid") {
            return true;
        }
        if (space == std::string_view::npos) {
            break;
        }
        rest.remove_prefix(space + 1);
    }
    return false;
}

// Reads the device code, user code and polling pace from the provider's answer.
DeviceAuthorization parse_device_authorization(std::string_view body) {
    const json obj = json::parse(body.begin(), body.end(), nullptr, false);
    if (obj.is_discarded() || !obj.is_object()) {
        bad_device_answer("the body is not a JSON object");
    }
    DeviceAuthorization d;
    d.device_code = device_string(obj, "device_code");
    d.user_code = device_string(obj, "user_code");
    // Google names it verification_url.
    d.verification_uri = device_string(
        obj, obj.contains("verification_uri") ? "verification_uri" : "verification_url");
    const auto complete = obj.find("verification_uri_complete");
    if (complete != obj.end() && complete->is_string() &&
        !complete->get_ref<const std::string&>().empty()) {
        d.verification_uri_complete = complete->get<std::string>();
    }
    const auto expires = obj.find("expires_in");
    if (expires == obj.end()) {
        bad_device_answer("expires_in is missing");
    }
    const auto expires_in = read_seconds(*expires);
    if (!expires_in || *expires_in <= 0) {
        bad_device_answer("expires_in is not a positive number of seconds up to a year");
    }
    d.expires_in = *expires_in;
    const auto interval = obj.find("interval");
    if (interval != obj.end()) {
        d.interval = std::max<std::int64_t>(1, read_seconds(*interval).value_or(kDefaultInterval));
    }
    return d;
}

// Decides whether a device poll goes on, slows down or ends.
DevicePoll classify_device_error(std::string_view error_code) {
    if (error_code == "authorization_pending") return DevicePoll::pending;
    if (error_code == "slow_down") return DevicePoll::slow_down;
    if (error_code == "access_denied") return DevicePoll::denied;
    if (error_code == "expired_token") return DevicePoll::expired;
    return DevicePoll::other;
}

// Checks that a login's ID token is for this client, this login and still valid.
std::optional<std::string> login_id_token_problem(const IdClaims& c,
                                                  std::optional<std::string_view> expected_issuer,
                                                  std::string_view client_id,
                                                  std::optional<std::string_view> nonce, Time now) {
    if (expected_issuer && !expected_issuer->empty() && c.iss != *expected_issuer) {
        return std::string("iss differs");
    }
    if (std::find(c.aud.begin(), c.aud.end(), client_id) == c.aud.end()) {
        return std::string("aud lacks the client");
    }
    if (c.aud.size() > 1) {
        if (!c.azp) {
            return std::string("azp missing");
        }
        if (*c.azp != client_id) {
            return std::string("azp differs");
        }
    }
    if (!c.exp) {
        return std::string("no exp");
    }
    if (!before_expiry(*c.exp, now)) {
        return std::string("expired");
    }
    if (nonce && !nonce->empty()) {
        if (!c.nonce) {
            return std::string("nonce missing");
        }
        if (*c.nonce != *nonce) {
            return std::string("nonce differs");
        }
    }
    return std::nullopt;
}

}  // namespace upstream_token
