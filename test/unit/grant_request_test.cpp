// Unit tests of the grant request builders (src/core/grant_request.cpp): exact bodies for
// every client authentication method, and the refusals.
#include "core/grant_request.hpp"

#include <gtest/gtest.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <algorithm>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "core/error.hpp"

namespace upstream_token {
namespace {

const Time kNow{seconds(1'700'000'000)};
constexpr std::string_view kToken = "https://idp.example/token";
constexpr std::string_view kBasicHeader = "Authorization: Basic Y2xpZW50OnNlY3JldA==";

// A client of the given method with id "client" and secret "secret" (none: no secret).
ClientCredentials client(AuthMethod method) {
    ClientCredentials c;
    c.method = method;
    c.client_id = "client";
    if (method != AuthMethod::none) c.secret = "secret";
    return c;
}

// The Authorization header line, or "" when there is none.
std::string authorization(const HttpRequest& r) {
    const auto it = std::find_if(r.headers.begin(), r.headers.end(), [](const std::string& h) {
        return h.rfind("Authorization:", 0) == 0;
    });
    return it == r.headers.end() ? std::string() : *it;
}

// A fresh EC P-256 private key as PEM, for private_key_jwt.
std::string ec_key_pem() {
    std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key(
        EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"), EVP_PKEY_free);
    std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), BIO_free);
    PEM_write_bio_PrivateKey(bio.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr);
    char* data = nullptr;
    const long len = BIO_get_mem_data(bio.get(), &data);
    return {data, static_cast<std::size_t>(len)};
}

// The decoded claims of the client_assertion a request body carries.
nlohmann::json assertion_claims(const std::string& body) {
    const auto at = body.find("&client_assertion=");
    if (at == std::string::npos) return nullptr;
    const std::string jwt = body.substr(at + 18);
    const auto a = jwt.find('.');
    std::string payload = jwt.substr(a + 1, jwt.find('.', a + 1) - a - 1);
    std::replace(payload.begin(), payload.end(), '-', '+');
    std::replace(payload.begin(), payload.end(), '_', '/');
    while (payload.size() % 4 != 0) payload += '=';
    std::string out(payload.size(), '\0');
    const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                  reinterpret_cast<const unsigned char*>(payload.data()),
                                  static_cast<int>(payload.size()));
    out.resize(static_cast<std::size_t>(n));
    while (!out.empty() && out.back() == '\0') out.pop_back();
    return nlohmann::json::parse(out);
}

// Expects `f` to throw invalid_parameter whose message lacks `secret`.
template <typename F>
void expect_refused(F f, const std::string& secret) {
    try {
        f();
        ADD_FAILURE() << "accepted";
    } catch (const Error& e) {
        EXPECT_EQ(e.code(), ErrorCode::invalid_parameter);
        EXPECT_EQ(std::string(e.what()).find(secret), std::string::npos) << e.what();
    }
}

TEST(GrantCode, BodiesForEveryMethod) {
    const auto basic =
        build_code_request(client(AuthMethod::client_secret_basic), kToken,
                           "c0de/+=", "https://app.example/cb?x=1 2", "verifier-123", kNow);
    EXPECT_EQ(basic.body,
              "grant_type=authorization_code&code=c0de%2F%2B%3D"
              "&redirect_uri=https%3A%2F%2Fapp.example%2Fcb%3Fx%3D1+2&code_verifier=verifier-123");
    EXPECT_EQ(authorization(basic), kBasicHeader);
    EXPECT_EQ(basic.headers.size(), 3U);

    const auto post = build_code_request(client(AuthMethod::client_secret_post), kToken, "c",
                                         "https://app/cb", "v", kNow);
    EXPECT_EQ(post.body,
              "grant_type=authorization_code&code=c&redirect_uri=https%3A%2F%2Fapp%2Fcb"
              "&code_verifier=v&client_id=client&client_secret=secret");
    EXPECT_EQ(authorization(post), "");

    const auto none =
        build_code_request(client(AuthMethod::none), kToken, "c", "https://app/cb", "v", kNow);
    EXPECT_EQ(none.body,
              "grant_type=authorization_code&code=c&redirect_uri=https%3A%2F%2Fapp%2Fcb"
              "&code_verifier=v&client_id=client");
    EXPECT_EQ(authorization(none), "");
}

TEST(GrantCode, PrivateKeyJwtAssertionIsForTheTokenEndpoint) {
    ClientCredentials c{AuthMethod::private_key_jwt, "client", ec_key_pem(), "ES256", ""};
    const auto r = build_code_request(c, kToken, "c", "https://app/cb", "v", kNow);
    EXPECT_EQ(r.body.rfind("grant_type=authorization_code&code=c&redirect_uri=https%3A%2F%2Fapp"
                           "%2Fcb&code_verifier=v&client_id=client&client_assertion_type=",
                           0),
              0U);
    const auto claims = assertion_claims(r.body);
    ASSERT_TRUE(claims.is_object());
    EXPECT_EQ(claims["aud"], std::string(kToken));
    EXPECT_EQ(claims["iss"], "client");
    EXPECT_EQ(r.body.find("BEGIN"), std::string::npos);
}

TEST(GrantCode, EmptyInputsAreRefused) {
    const auto c = client(AuthMethod::client_secret_basic);
    expect_refused([&] { build_code_request(c, kToken, "", "https://app/cb", "v", kNow); }, "v");
    expect_refused([&] { build_code_request(c, kToken, "code-SECRET", "", "v", kNow); },
                   "code-SECRET");
    expect_refused([&] { build_code_request(c, kToken, "code-SECRET", "https://a/cb", "", kNow); },
                   "code-SECRET");
    auto no_secret = client(AuthMethod::client_secret_post);
    no_secret.secret.reset();
    expect_refused(
        [&] { build_code_request(no_secret, kToken, "code-SECRET", "https://a/cb", "v", kNow); },
        "code-SECRET");
}

TEST(GrantDeviceAuthorization, BodiesForEveryMethod) {
    const auto basic = build_device_authorization_request(
        client(AuthMethod::client_secret_basic), "https://idp/device",
        std::string_view("openid email"), kNow, "");
    EXPECT_EQ(basic.body, "scope=openid+email");
    EXPECT_EQ(authorization(basic), kBasicHeader);

    const auto basic_no_scope = build_device_authorization_request(
        client(AuthMethod::client_secret_basic), "https://idp/device", std::nullopt, kNow, "");
    EXPECT_EQ(basic_no_scope.body, "");

    const auto post =
        build_device_authorization_request(client(AuthMethod::client_secret_post),
                                           "https://idp/device", std::string_view(""), kNow, "");
    EXPECT_EQ(post.body, "client_id=client&client_secret=secret");

    const auto none = build_device_authorization_request(
        client(AuthMethod::none), "https://idp/device", std::string_view("a b"), kNow, "");
    EXPECT_EQ(none.body, "scope=a+b&client_id=client");
    EXPECT_EQ(authorization(none), "");
}

TEST(GrantDeviceAuthorization, AssertionAudienceIsTheGivenOne) {
    ClientCredentials c{AuthMethod::private_key_jwt, "client", ec_key_pem(), "", "kid"};
    const auto r =
        build_device_authorization_request(c, "https://idp/device", std::nullopt, kNow, kToken);
    EXPECT_EQ(r.body.rfind("client_id=client&client_assertion_type=", 0), 0U);
    EXPECT_EQ(assertion_claims(r.body)["aud"], std::string(kToken));
    // Without an audience, the endpoint the request goes to.
    const auto r2 =
        build_device_authorization_request(c, "https://idp/device", std::nullopt, kNow, "");
    EXPECT_EQ(assertion_claims(r2.body)["aud"], "https://idp/device");
}

TEST(GrantDeviceToken, BodiesForEveryMethod) {
    const std::string grant = "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Adevice_code";
    const auto basic =
        build_device_token_request(client(AuthMethod::client_secret_basic), kToken, "dc 1", kNow);
    EXPECT_EQ(basic.body, grant + "&device_code=dc+1");
    EXPECT_EQ(authorization(basic), kBasicHeader);
    const auto post =
        build_device_token_request(client(AuthMethod::client_secret_post), kToken, "dc", kNow);
    EXPECT_EQ(post.body, grant + "&device_code=dc&client_id=client&client_secret=secret");
    const auto none = build_device_token_request(client(AuthMethod::none), kToken, "dc", kNow);
    EXPECT_EQ(none.body, grant + "&device_code=dc&client_id=client");
    expect_refused([] { build_device_token_request(client(AuthMethod::none), kToken, "", kNow); },
                   "x");
}

TEST(GrantClientCredentials, BodiesForEveryMethod) {
    const auto basic = build_client_credentials_request(
        client(AuthMethod::client_secret_basic), kToken, std::string_view("read:all write"),
        std::string_view("https://api.example/"), kNow);
    EXPECT_EQ(basic.body,
              "grant_type=client_credentials&scope=read%3Aall+write"
              "&audience=https%3A%2F%2Fapi.example%2F");
    EXPECT_EQ(authorization(basic), kBasicHeader);
    const auto post = build_client_credentials_request(client(AuthMethod::client_secret_post),
                                                       kToken, std::nullopt, std::nullopt, kNow);
    EXPECT_EQ(post.body, "grant_type=client_credentials&client_id=client&client_secret=secret");
    const auto empty_optionals =
        build_client_credentials_request(client(AuthMethod::client_secret_basic), kToken,
                                         std::string_view(""), std::string_view(""), kNow);
    EXPECT_EQ(empty_optionals.body, "grant_type=client_credentials");
    // RFC 6749 4.4: confidential clients only.
    expect_refused(
        [] {
            build_client_credentials_request(client(AuthMethod::none), kToken, std::nullopt,
                                             std::nullopt, kNow);
        },
        "secret");
}

TEST(GrantClientCredentials, PrivateKeyJwt) {
    ClientCredentials c{AuthMethod::private_key_jwt, "client", ec_key_pem(), "", ""};
    const auto r =
        build_client_credentials_request(c, kToken, std::string_view("s"), std::nullopt, kNow);
    EXPECT_EQ(r.body.rfind("grant_type=client_credentials&scope=s&client_id=client&", 0), 0U);
    EXPECT_EQ(assertion_claims(r.body)["sub"], "client");
    EXPECT_EQ(authorization(r), "");
}

TEST(GrantTokenExchange, BodiesForEveryMethod) {
    const std::string head =
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange"
        "&subject_token=at%2B1"
        "&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token";
    const auto basic = build_token_exchange_request(client(AuthMethod::client_secret_basic), kToken,
                                                    "at+1", std::string_view("urn:api"),
                                                    std::string_view("read write"), kNow);
    EXPECT_EQ(basic.body, head + "&audience=urn%3Aapi&scope=read+write");
    EXPECT_EQ(authorization(basic), kBasicHeader);
    EXPECT_EQ(basic.body.find("requested_token_type"), std::string::npos);
    const auto post = build_token_exchange_request(client(AuthMethod::client_secret_post), kToken,
                                                   "at+1", std::nullopt, std::nullopt, kNow);
    EXPECT_EQ(post.body, head + "&client_id=client&client_secret=secret");
    const auto none = build_token_exchange_request(client(AuthMethod::none), kToken, "at+1",
                                                   std::nullopt, std::string_view("x"), kNow);
    EXPECT_EQ(none.body, head + "&scope=x&client_id=client");
    expect_refused(
        [] {
            build_token_exchange_request(client(AuthMethod::none), kToken, "", std::nullopt,
                                         std::nullopt, kNow);
        },
        "secret");
}

TEST(GrantAuthenticate, EmptyBodyGetsNoLeadingSeparator) {
    EXPECT_EQ(authenticate(client(AuthMethod::none), kToken, "", kNow).body, "client_id=client");
    EXPECT_EQ(authenticate(client(AuthMethod::client_secret_post), kToken, "a=b", kNow).body,
              "a=b&client_id=client&client_secret=secret");
    const auto basic = authenticate(client(AuthMethod::client_secret_basic), kToken, "", kNow);
    EXPECT_EQ(basic.body, "");
    EXPECT_EQ(authorization(basic), kBasicHeader);
    auto nameless = client(AuthMethod::none);
    nameless.client_id.clear();
    expect_refused([&] { authenticate(nameless, kToken, "a=b", kNow); }, "a=b");
}

}  // namespace
}  // namespace upstream_token
