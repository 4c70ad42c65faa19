// libFuzzer target: ID-token decoding and claims (decode_id_token, claims_to_json,
// claims_from_json, binding_mismatch). Input: first byte picks the mode (the rest as a
// compact JWS, as the JSON payload of one, or as stored claims).
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/error.hpp"
#include "core/id_token.hpp"
#include "fuzz_check.hpp"

using namespace upstream_token;
using upstream_token::fuzz::require;

namespace {

// base64url without padding, so payload bytes from the fuzzer reach the claims reader.
std::string base64url(std::string_view in) {
    static constexpr char kAlphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    std::string out;
    std::uint32_t acc = 0;
    int bits = 0;
    for (const char c : in) {
        acc = (acc << 8U) | static_cast<unsigned char>(c);
        bits += 8;
        while (bits >= 6) {
            bits -= 6;
            out.push_back(kAlphabet[(acc >> static_cast<unsigned>(bits)) & 0x3FU]);
        }
    }
    if (bits > 0) {
        out.push_back(kAlphabet[(acc << static_cast<unsigned>(6 - bits)) & 0x3FU]);
    }
    return out;
}

// Decoded claims must survive the store/load round trip and match themselves.
void check_claims(const IdClaims& c) {
    require(!c.iss.empty() && !c.sub.empty() && !c.aud.empty(), "required claims present");
    const IdClaims back = claims_from_json(claims_to_json(c));
    require(back.iss == c.iss && back.sub == c.sub && back.aud == c.aud && back.azp == c.azp &&
                back.auth_time == c.auth_time,
            "claims round-trip through their stored form");
    require(!binding_mismatch(c, back), "claims match their stored form");
    require(!binding_mismatch(c, c), "claims match themselves");
    IdClaims other = c;
    other.sub += "x";
    require(binding_mismatch(c, other) == std::string("sub"), "a different sub is caught");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 1) {
        return 0;
    }
    const std::string_view in = fuzz::as_text(data + 1, size - 1);
    try {
        switch (data[0] % 3) {
            case 0:
                check_claims(decode_id_token(in));
                break;
            case 1:
                check_claims(decode_id_token("eyJhbGciOiJub25lIn0." + base64url(in) + "."));
                break;
            default:
                check_claims(claims_from_json(in));
                break;
        }
    } catch (const Error& e) {
        require(e.code() == ErrorCode::invalid_parameter, "only invalid_parameter errors");
        require(fuzz::printable_ascii(e.what()), "printable error");
    }
    return 0;
}
