#include "core/client_assertion.hpp"

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <vector>

#include "core/error.hpp"
#include "core/refresh_request.hpp"

namespace upstream_token {

namespace {

struct PkeyFree {
    void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct MdCtxFree {
    void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};
struct BioFree {
    void operator()(BIO* b) const { BIO_free(b); }
};
struct SigFree {
    void operator()(ECDSA_SIG* s) const { ECDSA_SIG_free(s); }
};
using Pkey = std::unique_ptr<EVP_PKEY, PkeyFree>;

// The error for every unusable key: says what is wrong, never what the key is.
[[noreturn]] void bad_key(const std::string& why) {
    throw Error(ErrorCode::invalid_parameter, "unusable private key for private_key_jwt: " + why,
                {},
                "Pass a PEM private key: RSA (2048 bits or more) for RS256, EC P-256 for ES256.");
}

// Parses a PEM private key (PKCS#8 or traditional, unencrypted).
Pkey load_key(std::string_view pem) {
    std::unique_ptr<BIO, BioFree> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
    if (!bio) throw Error(ErrorCode::internal, "out of memory reading a private key");
    Pkey key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
    if (!key) bad_key("not a PEM private key");
    return key;
}

// The algorithm a loaded key can sign with.
std::string natural_alg(EVP_PKEY* key) {
    switch (EVP_PKEY_get_base_id(key)) {
        case EVP_PKEY_RSA:
            if (EVP_PKEY_get_bits(key) < 2048) bad_key("RSA keys must have at least 2048 bits");
            return "RS256";
        case EVP_PKEY_EC: {
            char group[64] = {};
            std::size_t len = 0;
            if (EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group,
                                               &len) != 1 ||
                std::string_view(group, len) != "prime256v1") {
                bad_key("EC keys must be on curve P-256");
            }
            return "ES256";
        }
        default:
            bad_key("only RSA and EC P-256 keys are supported");
    }
}

// base64url without padding (RFC 7515 section 2).
std::string base64url(std::string_view bytes) {
    std::string s = base64_encode(bytes);
    while (!s.empty() && s.back() == '=') s.pop_back();
    for (char& c : s) {
        if (c == '+') c = '-';
        if (c == '/') c = '_';
    }
    return s;
}

// A DER ECDSA signature as JOSE wants it: R and S, 32 bytes each.
std::string der_to_jose(const std::vector<unsigned char>& der) {
    const unsigned char* p = der.data();
    std::unique_ptr<ECDSA_SIG, SigFree> sig(
        d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(der.size())));
    if (!sig) throw Error(ErrorCode::internal, "could not decode an ECDSA signature");
    const BIGNUM* r = nullptr;
    const BIGNUM* s = nullptr;
    ECDSA_SIG_get0(sig.get(), &r, &s);
    std::string out(64, '\0');
    auto* raw = reinterpret_cast<unsigned char*>(out.data());
    if (BN_bn2binpad(r, raw, 32) != 32 || BN_bn2binpad(s, raw + 32, 32) != 32) {
        throw Error(ErrorCode::internal, "could not encode an ECDSA signature");
    }
    return out;
}

// SHA-256 signature of `input` with `key`, in JOSE form for `alg`.
std::string sign(EVP_PKEY* key, std::string_view alg, std::string_view input) {
    std::unique_ptr<EVP_MD_CTX, MdCtxFree> ctx(EVP_MD_CTX_new());
    std::size_t len = 0;
    if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, EVP_sha256(), nullptr, key) != 1 ||
        EVP_DigestSign(ctx.get(), nullptr, &len,
                       reinterpret_cast<const unsigned char*>(input.data()), input.size()) != 1) {
        throw Error(ErrorCode::internal, "could not sign a client assertion");
    }
    std::vector<unsigned char> sig(len);
    if (EVP_DigestSign(ctx.get(), sig.data(), &len,
                       reinterpret_cast<const unsigned char*>(input.data()), input.size()) != 1) {
        throw Error(ErrorCode::internal, "could not sign a client assertion");
    }
    sig.resize(len);
    if (alg == "ES256") return der_to_jose(sig);
    return {sig.begin(), sig.end()};
}

// 16 random bytes, base64url: the assertion's jti.
std::string random_jti() {
    unsigned char bytes[16];
    if (RAND_bytes(bytes, sizeof bytes) != 1)
        throw Error(ErrorCode::internal, "no randomness for a jti");
    return base64url(std::string_view(reinterpret_cast<const char*>(bytes), sizeof bytes));
}

}  // namespace

std::string assertion_alg_for_key(std::string_view pem, std::string_view requested) {
    Pkey key = load_key(pem);
    std::string alg = natural_alg(key.get());
    if (!requested.empty() && requested != alg) {
        throw Error(ErrorCode::invalid_parameter, "assertion_alg does not fit the private key",
                    "RS256 needs an RSA key, ES256 an EC P-256 key.");
    }
    return alg;
}

std::string make_client_assertion(std::string_view pem, std::string_view alg, std::string_view kid,
                                  std::string_view client_id, std::string_view audience, Time now,
                                  Micros lifetime) {
    Pkey key = load_key(pem);
    const std::string use = alg.empty() ? natural_alg(key.get()) : std::string(alg);
    nlohmann::json header = {{"alg", use}, {"typ", "JWT"}};
    if (!kid.empty()) header["kid"] = std::string(kid);
    const auto iat =
        std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
    const auto ttl = std::chrono::duration_cast<std::chrono::seconds>(lifetime).count();
    const nlohmann::json claims = {{"iss", std::string(client_id)},
                                   {"sub", std::string(client_id)},
                                   {"aud", std::string(audience)},
                                   {"iat", iat},
                                   {"exp", iat + ttl},
                                   {"jti", random_jti()}};
    const std::string input = base64url(header.dump()) + "." + base64url(claims.dump());
    return input + "." + base64url(sign(key.get(), use, input));
}

}  // namespace upstream_token
