// Unit tests of the login helpers (src/core/login.cpp): PKCE, random tokens, the
// authorization URL, device authorization answers and the login ID-token checks.
#include "core/login.hpp"

#include <gtest/gtest.h>

#include <set>
#include <string>

#include "core/error.hpp"
#include "core/refresh_request.hpp"

namespace upstream_token {
namespace {

const Time kNow{seconds(1'700'000'000)};

// base64url without padding, for building test JWTs.
std::string b64url(std::string_view s) {
    std::string out = base64_encode(s);
    while (!out.empty() && out.back() == '=') out.pop_back();
    for (char& c : out) {
        if (c == '+') c = '-';
        if (c == '/') c = '_';
    }
    return out;
}

// A compact JWS (unverified signature) with the given payload, decoded the way a login does.
IdClaims claims(std::string_view payload) {
    return decode_id_token(b64url(R"({"alg":"RS256"})") + "." + b64url(payload) + ".c2ln");
}

// An AuthorizationUrl with every required field set.
AuthorizationUrl base_url() {
    AuthorizationUrl a;
    a.endpoint = "https://idp.example/authorize";
    a.client_id = "client";
    a.redirect_uri = "https://app.example/cb";
    a.state = "st";
    a.code_challenge = "ch";
    return a;
}

// Expects parse_device_authorization to fail as refresh_failed, naming `field`, without
// echoing the device code.
void expect_bad_device(const std::string& body, const std::string& field) {
    try {
        parse_device_authorization(body);
        ADD_FAILURE() << "accepted: " << body;
    } catch (const Error& e) {
        EXPECT_EQ(e.code(), ErrorCode::refresh_failed) << body;
        EXPECT_NE(std::string(e.what()).find(field), std::string::npos) << e.what();
        EXPECT_EQ(std::string(e.what()).find("DEVCODE"), std::string::npos) << e.what();
    }
}

TEST(LoginPkce, Rfc7636AppendixB) {
    EXPECT_EQ(pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
              "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
}

TEST(LoginPkce, VerifierGrammar) {
    EXPECT_THROW(pkce_challenge(std::string(42, 'a')), Error);
    EXPECT_THROW(pkce_challenge(std::string(129, 'a')), Error);
    EXPECT_THROW(pkce_challenge(std::string(42, 'a') + "+"), Error);
    EXPECT_EQ(pkce_challenge(std::string(43, '~')).size(), 43U);
    EXPECT_EQ(pkce_challenge(std::string(128, 'a')).size(), 43U);
    // A verifier made by random_token(32) is valid.
    EXPECT_EQ(pkce_challenge(random_token(32)).size(), 43U);
}

TEST(LoginRandomToken, LengthAlphabetUniqueness) {
    for (const std::size_t n : {1U, 2U, 3U, 16U, 32U, 33U}) {
        const std::string t = random_token(n);
        EXPECT_EQ(t.size(), (n * 4 + 2) / 3) << n;
        EXPECT_EQ(t.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                      "0123456789-_"),
                  std::string::npos)
            << t;
    }
    std::set<std::string> seen;
    for (int i = 0; i < 1000; ++i) seen.insert(random_token(16));
    EXPECT_EQ(seen.size(), 1000U);
    EXPECT_THROW(random_token(0), Error);
    EXPECT_THROW(random_token(1025), Error);
}

TEST(LoginAuthorizationUrl, AllParametersInOrderAndEncoded) {
    AuthorizationUrl a = base_url();
    a.redirect_uri = "https://app.example/cb?x=1&y=a b";
    a.scope = "openid email";
    a.state = "s~t.a_t-e";
    a.code_challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    a.nonce = "n+1/";
    a.extra = {{"prompt", "consent"}, {"access_type", "offline"}, {"x y", "\xc3\xa9*"}};
    EXPECT_EQ(authorization_url(a),
              "https://idp.example/authorize?response_type=code&client_id=client"
              "&redirect_uri=https%3A%2F%2Fapp.example%2Fcb%3Fx%3D1%26y%3Da%20b"
              "&scope=openid%20email&state=s~t.a_t-e"
              "&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
              "&code_challenge_method=S256&nonce=n%2B1%2F"
              "&access_type=offline&prompt=consent&x%20y=%C3%A9%2A");
}

TEST(LoginAuthorizationUrl, EndpointQueryAndOptionalFields) {
    AuthorizationUrl a = base_url();
    a.endpoint = "https://idp.example/authorize?tenant=t1";
    a.scope = "";
    a.nonce = "";
    EXPECT_EQ(authorization_url(a),
              "https://idp.example/authorize?tenant=t1&response_type=code&client_id=client"
              "&redirect_uri=https%3A%2F%2Fapp.example%2Fcb&state=st&code_challenge=ch"
              "&code_challenge_method=S256");
    a.endpoint = "https://idp.example/authorize?";
    EXPECT_EQ(authorization_url(a).rfind("https://idp.example/authorize?response_type=code&", 0),
              0U);
    a.endpoint = "https://idp.example/authorize?a=1&";
    EXPECT_EQ(
        authorization_url(a).rfind("https://idp.example/authorize?a=1&response_type=code&", 0), 0U);
}

TEST(LoginAuthorizationUrl, RefusesReservedOrEmptyExtrasAndMissingFields) {
    for (const char* name : {"response_type", "client_id", "redirect_uri", "scope", "state",
                             "code_challenge", "code_challenge_method", "nonce", ""}) {
        AuthorizationUrl a = base_url();
        a.extra[name] = "VALUE-SECRET";
        try {
            authorization_url(a);
            ADD_FAILURE() << "accepted extra " << name;
        } catch (const Error& e) {
            EXPECT_EQ(e.code(), ErrorCode::invalid_parameter);
            EXPECT_EQ(std::string(e.what()).find("VALUE-SECRET"), std::string::npos);
        }
    }
    AuthorizationUrl ok = base_url();
    ok.extra["Scope"] = "x";  // names are case-sensitive: not the reserved one
    EXPECT_NE(authorization_url(ok).find("&Scope=x"), std::string::npos);
    for (std::string AuthorizationUrl::*field :
         {&AuthorizationUrl::endpoint, &AuthorizationUrl::client_id,
          &AuthorizationUrl::redirect_uri, &AuthorizationUrl::state,
          &AuthorizationUrl::code_challenge}) {
        AuthorizationUrl a = base_url();
        a.*field = "";
        EXPECT_THROW(authorization_url(a), Error);
    }
    AuthorizationUrl frag = base_url();
    frag.endpoint += "#x";
    EXPECT_THROW(authorization_url(frag), Error);
}

TEST(LoginScope, HasOpenid) {
    EXPECT_TRUE(scope_has_openid(std::string_view("openid")));
    EXPECT_TRUE(scope_has_openid(std::string_view("email openid profile")));
    EXPECT_TRUE(scope_has_openid(std::string_view("email  openid")));
    EXPECT_FALSE(scope_has_openid(std::nullopt));
    EXPECT_FALSE(scope_has_openid(std::string_view("")));
    EXPECT_FALSE(scope_has_openid(std::string_view("openidx email")));
    EXPECT_FALSE(scope_has_openid(std::string_view("email xopenid")));
    EXPECT_FALSE(scope_has_openid(std::string_view("OpenID")));
}

TEST(LoginDevice, ParsesAFullAnswer) {
    const auto d = parse_device_authorization(
        R"({"device_code":"DEVCODE-1","user_code":"WDJB-MJHT",
            "verification_uri":"https://idp.example/device",
            "verification_uri_complete":"https://idp.example/device?user_code=WDJB-MJHT",
            "expires_in":1800,"interval":7})");
    EXPECT_EQ(d.device_code, "DEVCODE-1");
    EXPECT_EQ(d.user_code, "WDJB-MJHT");
    EXPECT_EQ(d.verification_uri, "https://idp.example/device");
    EXPECT_EQ(d.verification_uri_complete, "https://idp.example/device?user_code=WDJB-MJHT");
    EXPECT_EQ(d.expires_in, 1800);
    EXPECT_EQ(d.interval, 7);
}

TEST(LoginDevice, GoogleShapeStringNumbersAndDefaults) {
    const auto g = parse_device_authorization(
        R"({"device_code":"DEVCODE","user_code":"U","verification_url":"https://g.co/device",
            "expires_in":"1800"})");
    EXPECT_EQ(g.verification_uri, "https://g.co/device");
    EXPECT_FALSE(g.verification_uri_complete);
    EXPECT_EQ(g.expires_in, 1800);
    EXPECT_EQ(g.interval, 5);
    const auto s = parse_device_authorization(
        R"({"device_code":"D","user_code":"U","verification_uri":"v","expires_in":600.0,
            "interval":"10"})");
    EXPECT_EQ(s.expires_in, 600);
    EXPECT_EQ(s.interval, 10);
    const auto zero = parse_device_authorization(
        R"({"device_code":"D","user_code":"U","verification_uri":"v","expires_in":60,
            "interval":0})");
    EXPECT_EQ(zero.interval, 1);
    const auto odd = parse_device_authorization(
        R"({"device_code":"D","user_code":"U","verification_uri":"v","expires_in":60,
            "interval":"soon","verification_uri_complete":5})");
    EXPECT_EQ(odd.interval, 5);
    EXPECT_FALSE(odd.verification_uri_complete);
    const auto frac = parse_device_authorization(
        R"({"device_code":"D","user_code":"U","verification_uri":"v","expires_in":60,
            "interval":2.5})");
    EXPECT_EQ(frac.interval, 3);
}

TEST(LoginDevice, BadAnswersNameTheField) {
    expect_bad_device("not json DEVCODE", "JSON");
    expect_bad_device("[]", "JSON");
    expect_bad_device(R"({"user_code":"U","verification_uri":"v","expires_in":60})", "device_code");
    expect_bad_device(R"({"device_code":"","user_code":"U","verification_uri":"v",
                          "expires_in":60})",
                      "device_code");
    expect_bad_device(R"({"device_code":"DEVCODE","verification_uri":"v","expires_in":60})",
                      "user_code");
    expect_bad_device(R"({"device_code":"DEVCODE","user_code":"U","expires_in":60})",
                      "verification_url");
    expect_bad_device(R"({"device_code":"DEVCODE","user_code":"U","verification_uri":7,
                          "expires_in":60})",
                      "verification_uri");
    expect_bad_device(R"({"device_code":"DEVCODE","user_code":"U","verification_uri":"v"})",
                      "expires_in");
    for (const char* value :
         {"0", "-5", "\"\"", "\"12x\"", "true", "null", "1e12", "\"99999999999999999999\""}) {
        expect_bad_device(std::string(R"({"device_code":"DEVCODE","user_code":"U",)") +
                              R"("verification_uri":"v","expires_in":)" + value + "}",
                          "expires_in");
    }
}

TEST(LoginDevice, ClassifiesPollErrors) {
    EXPECT_EQ(classify_device_error("authorization_pending"), DevicePoll::pending);
    EXPECT_EQ(classify_device_error("slow_down"), DevicePoll::slow_down);
    EXPECT_EQ(classify_device_error("access_denied"), DevicePoll::denied);
    EXPECT_EQ(classify_device_error("expired_token"), DevicePoll::expired);
    EXPECT_EQ(classify_device_error("invalid_grant"), DevicePoll::other);
    EXPECT_EQ(classify_device_error(""), DevicePoll::other);
    EXPECT_EQ(classify_device_error("Authorization_Pending"), DevicePoll::other);
}

TEST(LoginIdToken, DecodesNonceAndExpWithoutStoringThem) {
    const IdClaims c = claims(R"({"iss":"i","sub":"s","aud":"a","nonce":"n1","exp":1700000100})");
    EXPECT_EQ(c.nonce, "n1");
    EXPECT_EQ(c.exp, 1700000100);
    const std::string stored = claims_to_json(c);
    EXPECT_EQ(stored, R"({"aud":["a"],"iss":"i","sub":"s"})");
    const IdClaims back = claims_from_json(stored);
    EXPECT_FALSE(back.nonce);
    EXPECT_FALSE(back.exp);
    const IdClaims odd = claims(R"({"iss":"i","sub":"s","aud":"a","nonce":5,"exp":"soon"})");
    EXPECT_FALSE(odd.nonce);
    EXPECT_FALSE(odd.exp);
    EXPECT_EQ(claims(R"({"iss":"i","sub":"s","aud":"a","exp":1.7e9})").exp, 1700000000);
    EXPECT_EQ(claims(R"({"iss":"i","sub":"s","aud":"a","exp":18446744073709551615})").exp,
              INT64_MAX);
}

TEST(LoginIdToken, AcceptsAGoodToken) {
    const IdClaims c =
        claims(R"({"iss":"https://idp","sub":"s","aud":"client","nonce":"n","exp":1700000300})");
    EXPECT_EQ(login_id_token_problem(c, std::string_view("https://idp"), "client",
                                     std::string_view("n"), kNow),
              std::nullopt);
    // No issuer expected, no nonce sent: a token without nonce is fine.
    const IdClaims plain = claims(R"({"iss":"x","sub":"s","aud":"client","exp":1700000300})");
    EXPECT_EQ(login_id_token_problem(plain, std::nullopt, "client", std::nullopt, kNow),
              std::nullopt);
    // Several audiences with the right azp.
    const IdClaims multi =
        claims(R"({"iss":"x","sub":"s","aud":["other","client"],"azp":"client","exp":1700000300})");
    EXPECT_EQ(login_id_token_problem(multi, std::nullopt, "client", std::nullopt, kNow),
              std::nullopt);
}

TEST(LoginIdToken, EachProblem) {
    const auto problem = [](std::string_view payload, std::optional<std::string_view> nonce) {
        return login_id_token_problem(claims(payload), std::string_view("https://idp"), "client",
                                      nonce, kNow);
    };
    const std::optional<std::string_view> n("n");
    EXPECT_EQ(problem(R"({"iss":"https://evil","sub":"s","aud":"client","exp":1700000300})", n),
              "iss differs");
    EXPECT_EQ(problem(R"({"iss":"https://idp","sub":"s","aud":"other","exp":1700000300})", n),
              "aud lacks the client");
    EXPECT_EQ(problem(R"({"iss":"https://idp","sub":"s","aud":["client","o"],"exp":1700000300,
                         "nonce":"n"})",
                      n),
              "azp missing");
    EXPECT_EQ(problem(R"({"iss":"https://idp","sub":"s","aud":["client","o"],"azp":"o",
                         "exp":1700000300,"nonce":"n"})",
                      n),
              "azp differs");
    EXPECT_EQ(problem(R"({"iss":"https://idp","sub":"s","aud":"client","nonce":"n"})", n),
              "no exp");
    EXPECT_EQ(problem(R"({"iss":"https://idp","sub":"s","aud":"client","exp":1699990000,
                         "nonce":"n"})",
                      n),
              "expired");
    EXPECT_EQ(problem(R"({"iss":"https://idp","sub":"s","aud":"client","exp":1700000300})", n),
              "nonce missing");
    EXPECT_EQ(problem(R"({"iss":"https://idp","sub":"s","aud":"client","exp":1700000300,
                         "nonce":"SECRET-nonce"})",
                      n),
              "nonce differs");
}

TEST(LoginIdToken, ExpiryAllowsSixtySecondsOfSkew) {
    const auto at = [](std::int64_t exp, Time now) {
        IdClaims c;
        c.iss = "i";
        c.sub = "s";
        c.aud = {"client"};
        c.exp = exp;
        return login_id_token_problem(c, std::nullopt, "client", std::nullopt, now);
    };
    // Expired exactly when now >= exp + 60 s.
    EXPECT_EQ(at(1'700'000'000 - 59, kNow), std::nullopt);
    EXPECT_EQ(at(1'700'000'000 - 60, kNow), "expired");
    EXPECT_EQ(at(1'700'000'000 - 60, kNow - Micros{1}), std::nullopt);
    EXPECT_EQ(at(INT64_MAX, kNow), std::nullopt);
    EXPECT_EQ(at(INT64_MIN, kNow), "expired");
}

}  // namespace
}  // namespace upstream_token
