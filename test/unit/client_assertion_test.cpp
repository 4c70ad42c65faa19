// private_key_jwt assertions: verifiable with the public key, the claims RFC 7523 asks for,
// a fresh jti each time, and clear refusals of unusable keys.
#include "core/client_assertion.hpp"

#include <gtest/gtest.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "core/error.hpp"
#include "core/refresh_request.hpp"

namespace upstream_token {
namespace {

const Time kNow{seconds(1'700'000'000)};

struct PkeyFree {
    void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
using Pkey = std::unique_ptr<EVP_PKEY, PkeyFree>;

// A fresh key pair of the given kind, and its private key as PEM.
std::pair<Pkey, std::string> make_key(bool ec, int rsa_bits = 2048) {
    Pkey key(ec ? EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256")
                : EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", static_cast<size_t>(rsa_bits)));
    std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), BIO_free);
    PEM_write_bio_PrivateKey(bio.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr);
    char* data = nullptr;
    const long len = BIO_get_mem_data(bio.get(), &data);
    return {std::move(key), std::string(data, static_cast<std::size_t>(len))};
}

// Decodes base64url (no padding) for checking.
std::string b64url_decode(std::string s) {
    for (char& c : s) {
        if (c == '-') c = '+';
        if (c == '_') c = '/';
    }
    while (s.size() % 4 != 0) s += '=';
    std::string out(s.size(), '\0');
    const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                  reinterpret_cast<const unsigned char*>(s.data()),
                                  static_cast<int>(s.size()));
    out.resize(static_cast<std::size_t>(n) - std::count(s.end() - 2, s.end(), '='));
    return out;
}

// Verifies a JWS with the public half of `key`; ES256 signatures are converted back to DER.
bool verify(EVP_PKEY* key, const std::string& jwt, bool ec) {
    const auto dot = jwt.rfind('.');
    const std::string input = jwt.substr(0, dot);
    std::string sig = b64url_decode(jwt.substr(dot + 1));
    if (ec) {
        if (sig.size() != 64) return false;
        ECDSA_SIG* s = ECDSA_SIG_new();
        ECDSA_SIG_set0(
            s, BN_bin2bn(reinterpret_cast<const unsigned char*>(sig.data()), 32, nullptr),
            BN_bin2bn(reinterpret_cast<const unsigned char*>(sig.data()) + 32, 32, nullptr));
        unsigned char* der = nullptr;
        const int len = i2d_ECDSA_SIG(s, &der);
        sig.assign(reinterpret_cast<char*>(der), static_cast<std::size_t>(len));
        OPENSSL_free(der);
        ECDSA_SIG_free(s);
    }
    std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
    EVP_DigestVerifyInit(ctx.get(), nullptr, EVP_sha256(), nullptr, key);
    return EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(sig.data()),
                            sig.size(), reinterpret_cast<const unsigned char*>(input.data()),
                            input.size()) == 1;
}

// The decoded header and claims of a compact JWS.
std::pair<nlohmann::json, nlohmann::json> parts(const std::string& jwt) {
    const auto a = jwt.find('.');
    const auto b = jwt.rfind('.');
    return {nlohmann::json::parse(b64url_decode(jwt.substr(0, a))),
            nlohmann::json::parse(b64url_decode(jwt.substr(a + 1, b - a - 1)))};
}

TEST(ClientAssertion, SignsVerifiablyWithRsaAndEc) {
    for (const bool ec : {false, true}) {
        auto [key, pem] = make_key(ec);
        const std::string alg = assertion_alg_for_key(pem, "");
        EXPECT_EQ(alg, ec ? "ES256" : "RS256");
        const std::string jwt =
            make_client_assertion(pem, alg, "kid-1", "my-client", "https://idp/token", kNow);
        EXPECT_TRUE(verify(key.get(), jwt, ec));
        auto [header, claims] = parts(jwt);
        EXPECT_EQ(header["alg"], alg);
        EXPECT_EQ(header["kid"], "kid-1");
        EXPECT_EQ(claims["iss"], "my-client");
        EXPECT_EQ(claims["sub"], "my-client");
        EXPECT_EQ(claims["aud"], "https://idp/token");
        EXPECT_EQ(claims["iat"], 1'700'000'000);
        EXPECT_EQ(claims["exp"], 1'700'000'060);
        EXPECT_FALSE(claims["jti"].get<std::string>().empty());
        const std::string again =
            make_client_assertion(pem, alg, "", "my-client", "https://idp/token", kNow);
        EXPECT_NE(parts(again).second["jti"], claims["jti"]);
        EXPECT_FALSE(parts(again).first.contains("kid"));
    }
}

TEST(ClientAssertion, RefusesUnusableKeysWithoutEchoingThem) {
    auto [rsa, rsa_pem] = make_key(false);
    auto [small, small_pem] = make_key(false, 1024);
    EXPECT_THROW(assertion_alg_for_key(rsa_pem, "ES256"), Error);
    EXPECT_THROW(assertion_alg_for_key(small_pem, ""), Error);
    try {
        assertion_alg_for_key("-----BEGIN PRIVATE KEY-----\nSECRETSTUFF\n", "");
        FAIL() << "a broken key was accepted";
    } catch (const Error& e) {
        EXPECT_EQ(std::string(e.what()).find("SECRETSTUFF"), std::string::npos);
    }
}

TEST(ClientAssertion, RefreshRequestCarriesTheAssertion) {
    auto [key, pem] = make_key(true);
    ClientCredentials c{AuthMethod::private_key_jwt, "cid", pem, "ES256", ""};
    const auto req = build_refresh_request(c, "https://idp/token", "rt", std::nullopt, kNow);
    EXPECT_NE(req.body.find("client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-"
                            "type%3Ajwt-bearer"),
              std::string::npos);
    const auto at = req.body.find("&client_assertion=");
    ASSERT_NE(at, std::string::npos);
    const std::string jwt = req.body.substr(at + 18);
    EXPECT_TRUE(verify(key.get(), jwt, true));
    EXPECT_EQ(req.body.find("BEGIN"), std::string::npos) << "the key itself is never sent";
    for (const auto& h : req.headers) EXPECT_EQ(h.rfind("Authorization:", 0), std::string::npos);
}

}  // namespace
}  // namespace upstream_token
