// ID-token claims for the OIDC Core 12.2 binding check (see id_token.hpp).
#include "core/id_token.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "core/error.hpp"

namespace upstream_token {

namespace {

using nlohmann::json;

// ID tokens are small; anything this large is not one (and is not decoded).
constexpr std::size_t kMaxJwtSize = std::size_t{64} * 1024;

// Every failure of this module: one code, a reason, never any part of the token.
[[noreturn]] void malformed(const std::string& why) {
    throw Error(ErrorCode::invalid_parameter, "malformed ID token: " + why);
}

// Value of one base64url character, or -1 for anything outside the alphabet.
int base64url_value(char c) noexcept {
    if (c >= 'A' && c <= 'Z') {
        return c - 'A';
    }
    if (c >= 'a' && c <= 'z') {
        return c - 'a' + 26;
    }
    if (c >= '0' && c <= '9') {
        return c - '0' + 52;
    }
    if (c == '-') {
        return 62;
    }
    if (c == '_') {
        return 63;
    }
    return -1;
}

// Whether a JWS segment uses only the base64url alphabet (the header and signature are
// checked, not decoded).
bool is_base64url(std::string_view s) noexcept {
    return std::all_of(s.begin(), s.end(), [](char c) { return base64url_value(c) >= 0; });
}

// Decodes base64url (RFC 4648 section 5); padding is optional, as JWS omits it.
std::optional<std::string> base64url_decode(std::string_view in) {
    if (!in.empty() && in.back() == '=') {
        in.remove_suffix(1);
        if (!in.empty() && in.back() == '=') {
            in.remove_suffix(1);
        }
    }
    if (in.size() % 4 == 1) {
        return std::nullopt;
    }
    std::string out;
    out.reserve((in.size() * 3) / 4);
    std::uint32_t acc = 0;
    int bits = 0;
    for (const char c : in) {
        const int v = base64url_value(c);
        if (v < 0) {
            return std::nullopt;
        }
        acc = (acc << 6U) | static_cast<std::uint32_t>(v);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out.push_back(static_cast<char>((acc >> static_cast<unsigned>(bits)) & 0xFFU));
        }
    }
    return out;
}

// Reads a required, non-empty string claim.
std::string required_string(const json& obj, const char* name) {
    const auto it = obj.find(name);
    if (it == obj.end() || !it->is_string()) {
        malformed(std::string("claim ") + name + " is missing or not a string");
    }
    auto value = it->get<std::string>();
    if (value.empty()) {
        malformed(std::string("claim ") + name + " is empty");
    }
    return value;
}

// Reads aud: one string or a non-empty array of strings (OIDC Core 2).
std::vector<std::string> read_audience(const json& obj) {
    const auto it = obj.find("aud");
    if (it == obj.end()) {
        malformed("claim aud is missing");
    }
    std::vector<std::string> aud;
    if (it->is_string()) {
        aud.push_back(it->get<std::string>());
    } else if (it->is_array()) {
        for (const auto& item : *it) {
            if (!item.is_string()) {
                malformed("claim aud contains a value that is not a string");
            }
            aud.push_back(item.get<std::string>());
        }
    } else {
        malformed("claim aud is neither a string nor an array of strings");
    }
    if (aud.empty() ||
        std::any_of(aud.begin(), aud.end(), [](const auto& a) { return a.empty(); })) {
        malformed("claim aud is empty");
    }
    return aud;
}

// Reads auth_time: a NumericDate, i.e. an integer (an integral float is tolerated).
std::optional<std::int64_t> read_auth_time(const json& obj) {
    const auto it = obj.find("auth_time");
    if (it == obj.end() || it->is_null()) {
        return std::nullopt;
    }
    if (it->is_number_integer() && !it->is_number_unsigned()) {
        return it->get<std::int64_t>();
    }
    if (it->is_number_unsigned()) {
        const auto v = it->get<std::uint64_t>();
        if (v > static_cast<std::uint64_t>(INT64_MAX)) {
            malformed("claim auth_time is out of range");
        }
        return static_cast<std::int64_t>(v);
    }
    if (it->is_number_float()) {
        const double v = it->get<double>();
        // +-2^53: the range where every integer is exact in a double.
        if (std::isfinite(v) && v == std::floor(v) && std::fabs(v) <= 9007199254740992.0) {
            return static_cast<std::int64_t>(v);
        }
    }
    malformed("claim auth_time is not an integer");
}

// Reads exp leniently (a login check, not part of the binding): an integer, or a finite float
// rounded down; anything else reads as absent. Values beyond int64 saturate.
std::optional<std::int64_t> read_exp(const json& obj) {
    const auto it = obj.find("exp");
    if (it == obj.end()) {
        return std::nullopt;
    }
    if (it->is_number_unsigned()) {
        const auto v = it->get<std::uint64_t>();
        return v > static_cast<std::uint64_t>(INT64_MAX) ? INT64_MAX : static_cast<std::int64_t>(v);
    }
    if (it->is_number_integer()) {
        return it->get<std::int64_t>();
    }
    if (it->is_number_float()) {
        const double v = it->get<double>();
        if (!std::isfinite(v)) {
            return std::nullopt;
        }
        // 2^62: far beyond any date, and exactly representable, so the cast cannot overflow.
        constexpr double kLimit = 4611686018427387904.0;
        return static_cast<std::int64_t>(std::floor(std::clamp(v, -kLimit, kLimit)));
    }
    return std::nullopt;
}

// Reads nonce leniently: a string, or absent (a nonce check then fails, as it should).
std::optional<std::string> read_nonce(const json& obj) {
    const auto it = obj.find("nonce");
    if (it == obj.end() || !it->is_string()) {
        return std::nullopt;
    }
    return it->get<std::string>();
}

// Reads the binding claims from a decoded payload or from their stored form.
IdClaims read_claims(const json& obj) {
    if (!obj.is_object()) {
        malformed("claims are not a JSON object");
    }
    IdClaims c;
    c.iss = required_string(obj, "iss");
    c.sub = required_string(obj, "sub");
    c.aud = read_audience(obj);
    const auto azp = obj.find("azp");
    if (azp != obj.end() && !azp->is_null()) {
        if (!azp->is_string()) {
            malformed("claim azp is not a string");
        }
        c.azp = azp->get<std::string>();
    }
    c.auth_time = read_auth_time(obj);
    return c;
}

// The audience as a sorted set, so order and duplicates do not count as a difference.
std::vector<std::string> as_set(std::vector<std::string> v) {
    std::sort(v.begin(), v.end());
    v.erase(std::unique(v.begin(), v.end()), v.end());
    return v;
}

}  // namespace

// Reads the claims of a freshly received ID token (no signature check: see id_token.hpp).
IdClaims decode_id_token(std::string_view jwt) {
    if (jwt.empty()) {
        malformed("empty");
    }
    if (jwt.size() > kMaxJwtSize) {
        malformed("longer than " + std::to_string(kMaxJwtSize) + " bytes");
    }
    const std::size_t dots = static_cast<std::size_t>(std::count(jwt.begin(), jwt.end(), '.'));
    if (dots == 4) {
        malformed("encrypted ID tokens (JWE) are not supported");
    }
    if (dots != 2) {
        malformed("not a compact JWS (expected three dot-separated parts)");
    }
    const std::size_t first = jwt.find('.');
    const std::size_t second = jwt.find('.', first + 1);
    const std::string_view header = jwt.substr(0, first);
    const std::string_view payload = jwt.substr(first + 1, second - first - 1);
    const std::string_view signature = jwt.substr(second + 1);
    if (header.empty() || payload.empty()) {
        malformed("empty header or payload");
    }
    // The signature part may be empty (alg "none").
    if (!is_base64url(header) || !is_base64url(signature)) {
        malformed("header or signature is not base64url");
    }
    const auto decoded = base64url_decode(payload);
    if (!decoded) {
        malformed("payload is not base64url");
    }
    const json obj = json::parse(*decoded, nullptr, false);
    if (obj.is_discarded()) {
        malformed("payload is not JSON");
    }
    IdClaims c = read_claims(obj);
    c.nonce = read_nonce(obj);
    c.exp = read_exp(obj);
    return c;
}

// Stores the binding claims of the login's ID token, for comparison at each refresh.
std::string claims_to_json(const IdClaims& c) {
    json obj = json::object();
    obj["iss"] = c.iss;
    obj["sub"] = c.sub;
    obj["aud"] = c.aud;
    if (c.azp) {
        obj["azp"] = *c.azp;
    }
    if (c.auth_time) {
        obj["auth_time"] = *c.auth_time;
    }
    // Replace invalid UTF-8 rather than throw: the claims came from a provider.
    return obj.dump(-1, ' ', false, json::error_handler_t::replace);
}

// Reads back what claims_to_json stored.
IdClaims claims_from_json(std::string_view json) {
    const nlohmann::json obj = nlohmann::json::parse(json.begin(), json.end(), nullptr, false);
    if (obj.is_discarded()) {
        malformed("stored claims are not JSON");
    }
    return read_claims(obj);
}

// Checks OIDC Core 12.2 for a refreshed ID token, naming the first claim that breaks it.
//
// Exact rule, in this order:
//   iss, sub   must be equal;
//   aud        must be equal as a set (order and duplicates ignored);
//   azp        compared only when both the stored and the fresh token carry it;
//   auth_time  compared only when both carry it.
// 12.2's wording for azp is stricter (present iff originally present); providers omit azp
// from refreshed tokens in practice, and a false mismatch would lock the user out while iss,
// sub and aud already bind the token to the same user and client.
std::optional<std::string> binding_mismatch(const IdClaims& stored, const IdClaims& fresh) {
    if (stored.iss != fresh.iss) {
        return std::string("iss");
    }
    if (stored.sub != fresh.sub) {
        return std::string("sub");
    }
    if (as_set(stored.aud) != as_set(fresh.aud)) {
        return std::string("aud");
    }
    if (stored.azp && fresh.azp && *stored.azp != *fresh.azp) {
        return std::string("azp");
    }
    if (stored.auth_time && fresh.auth_time && *stored.auth_time != *fresh.auth_time) {
        return std::string("auth_time");
    }
    return std::nullopt;
}

}  // namespace upstream_token
