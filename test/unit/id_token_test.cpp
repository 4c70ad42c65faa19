// Unit tests of the ID-token claim handling (src/core/id_token.cpp).
#include "core/id_token.hpp"

#include <gtest/gtest.h>

#include <string>

#include "core/error.hpp"
#include "core/refresh_request.hpp"

namespace upstream_token {
namespace {

// base64url without padding, built on the core's base64 encoder.
std::string b64url(std::string_view s) {
    std::string out = base64_encode(s);
    while (!out.empty() && out.back() == '=') {
        out.pop_back();
    }
    for (char& c : out) {
        if (c == '+') {
            c = '-';
        } else if (c == '/') {
            c = '_';
        }
    }
    return out;
}

// The encoded JOSE header every test token uses.
std::string header() {
    return b64url(R"({"alg":"RS256","kid":"k1"})");
}

constexpr std::string_view kSignature = "c2lnbmF0dXJlLXNlY3JldC1ieXRlcw";

// A compact JWS with the given payload JSON.
std::string jwt(std::string_view payload, std::string_view signature = kSignature) {
    std::string token = header();
    token += '.';
    token += b64url(payload);
    token += '.';
    token += signature;
    return token;
}

// Expects decode_id_token to fail as invalid_parameter without echoing the token.
void expect_malformed(const std::string& token) {
    try {
        decode_id_token(token);
        ADD_FAILURE() << "accepted: " << token;
    } catch (const Error& e) {
        EXPECT_EQ(e.code(), ErrorCode::invalid_parameter);
        const std::string msg = std::string(e.what()) + e.detail() + e.hint();
        EXPECT_EQ(msg.find(kSignature), std::string::npos) << msg;
        if (token.size() > 10) {
            EXPECT_EQ(msg.find(token), std::string::npos) << msg;
        }
        const auto dot = token.find('.');
        if (dot != std::string::npos && dot > 8) {
            EXPECT_EQ(msg.find(token.substr(0, dot)), std::string::npos) << msg;
        }
    }
}

TEST(IdToken, DecodesClaims) {
    const auto c = decode_id_token(jwt(R"({"iss":"https://idp.example.com","sub":"user-1",
        "aud":"client-a","azp":"client-a","auth_time":1700000000,"exp":1,"nonce":"n"})"));
    EXPECT_EQ(c.iss, "https://idp.example.com");
    EXPECT_EQ(c.sub, "user-1");
    EXPECT_EQ(c.aud, std::vector<std::string>{"client-a"});
    EXPECT_EQ(c.azp, "client-a");
    EXPECT_EQ(c.auth_time, 1700000000);
}

TEST(IdToken, AudienceArrayAndOptionalClaims) {
    const auto c = decode_id_token(jwt(R"({"iss":"i","sub":"s","aud":["a","b"]})"));
    EXPECT_EQ(c.aud, (std::vector<std::string>{"a", "b"}));
    EXPECT_FALSE(c.azp);
    EXPECT_FALSE(c.auth_time);
}

TEST(IdToken, UnsignedTokenAndPadding) {
    // alg none: empty signature part.
    EXPECT_EQ(decode_id_token(jwt(R"({"iss":"i","sub":"s","aud":"a"})", "")).sub, "s");
    // Padding is tolerated though JWS omits it. Payloads of every length mod 3.
    for (const std::string extra : {"", "x", "xx"}) {
        const std::string payload = R"({"iss":"i","sub":"s)" + extra + R"(","aud":"a"})";
        std::string padded = base64_encode(payload);
        for (char& ch : padded) {
            ch = ch == '+' ? '-' : ch == '/' ? '_' : ch;
        }
        EXPECT_EQ(decode_id_token(header() + "." + b64url(payload) + ".").sub, "s" + extra);
        EXPECT_EQ(decode_id_token(header() + "." + padded + ".").sub, "s" + extra);
    }
}

TEST(IdToken, Base64UrlAlphabet) {
    // A payload whose encoding uses '-' and '_'.
    const std::string payload = R"({"iss":"i","sub":"~~~>>>","aud":"a"})";
    const std::string enc = b64url(payload);
    ASSERT_TRUE(enc.find('_') != std::string::npos || enc.find('-') != std::string::npos);
    EXPECT_EQ(decode_id_token(header() + "." + enc + ".sig").sub, "~~~>>>");
}

TEST(IdToken, IntegralFloatAuthTime) {
    EXPECT_EQ(
        decode_id_token(jwt(R"({"iss":"i","sub":"s","aud":"a","auth_time":1.7e9})")).auth_time,
        1700000000);
}

TEST(IdToken, MalformedStructure) {
    const std::string good = R"({"iss":"i","sub":"s","aud":"a"})";
    expect_malformed("");
    expect_malformed("abc");
    expect_malformed(header() + "." + b64url(good));
    expect_malformed(header() + "." + b64url(good) + ".sig.extra");
    expect_malformed(header() + "." + b64url(good) + ".a.b.c");  // JWE shape
    expect_malformed("." + b64url(good) + ".sig");
    expect_malformed(header() + "..sig");
    expect_malformed(header() + "." + b64url(good) + "+/." + std::string(kSignature));
    expect_malformed(header() + "." + b64url(good) + "." + std::string(kSignature) + "=");
    expect_malformed(header() + "!." + b64url(good) + "." + std::string(kSignature));
    expect_malformed(header() + ".AAAAA." + std::string(kSignature));  // length % 4 == 1
    expect_malformed(header() + "." + b64url(good) + " ." + std::string(kSignature));
    expect_malformed(header() + "." + b64url("not json") + "." + std::string(kSignature));
    expect_malformed(header() + "." + b64url("[1,2]") + "." + std::string(kSignature));
    expect_malformed(header() + "." + b64url("\"str\"") + "." + std::string(kSignature));
    expect_malformed(header() + "." + std::string(70000, 'A') + "." + std::string(kSignature));
}

TEST(IdToken, MissingOrWrongClaims) {
    for (const char* payload : {
             R"({"sub":"s","aud":"a"})",
             R"({"iss":"i","aud":"a"})",
             R"({"iss":"i","sub":"s"})",
             R"({"iss":"","sub":"s","aud":"a"})",
             R"({"iss":"i","sub":"","aud":"a"})",
             R"({"iss":1,"sub":"s","aud":"a"})",
             R"({"iss":"i","sub":2,"aud":"a"})",
             R"({"iss":"i","sub":"s","aud":[]})",
             R"({"iss":"i","sub":"s","aud":""})",
             R"({"iss":"i","sub":"s","aud":["a",3]})",
             R"({"iss":"i","sub":"s","aud":{"a":1}})",
             R"({"iss":"i","sub":"s","aud":"a","azp":5})",
             R"({"iss":"i","sub":"s","aud":"a","auth_time":"1700000000"})",
             R"({"iss":"i","sub":"s","aud":"a","auth_time":1.5})",
             R"({"iss":"i","sub":"s","aud":"a","auth_time":18446744073709551615})",
         }) {
        expect_malformed(jwt(payload));
    }
}

TEST(IdToken, ClaimsJsonRoundTrip) {
    IdClaims c;
    c.iss = "https://idp.example.com";
    c.sub = "user \"1\" \xc3\xa9";
    c.aud = {"b", "a"};
    c.azp = "a";
    c.auth_time = -5;
    const IdClaims back = claims_from_json(claims_to_json(c));
    EXPECT_EQ(back.iss, c.iss);
    EXPECT_EQ(back.sub, c.sub);
    EXPECT_EQ(back.aud, c.aud);
    EXPECT_EQ(back.azp, c.azp);
    EXPECT_EQ(back.auth_time, c.auth_time);

    IdClaims minimal;
    minimal.iss = "i";
    minimal.sub = "s";
    minimal.aud = {"a"};
    const std::string text = claims_to_json(minimal);
    EXPECT_EQ(text.find("azp"), std::string::npos);
    EXPECT_EQ(text.find("auth_time"), std::string::npos);
    const IdClaims m = claims_from_json(text);
    EXPECT_FALSE(m.azp);
    EXPECT_FALSE(m.auth_time);
    EXPECT_EQ(m.aud, minimal.aud);
}

TEST(IdToken, DecodedClaimsRoundTrip) {
    const auto c = decode_id_token(jwt(R"({"iss":"i","sub":"s","aud":["x","y"],"azp":"x"})"));
    EXPECT_FALSE(binding_mismatch(c, claims_from_json(claims_to_json(c))));
}

TEST(IdToken, ClaimsFromJsonRejectsGarbage) {
    for (const char* text : {"", "{", "[]", "null", R"({"iss":"i"})", R"({"iss":"i","sub":"s"})"}) {
        EXPECT_THROW(claims_from_json(text), Error) << text;
    }
}

class Binding : public ::testing::Test {
  protected:
    IdClaims stored = make();
    IdClaims fresh = make();

    static IdClaims make() {
        IdClaims c;
        c.iss = "https://idp.example.com";
        c.sub = "user-1";
        c.aud = {"client-a", "client-b"};
        c.azp = "client-a";
        c.auth_time = 1700000000;
        return c;
    }
};

TEST_F(Binding, IdenticalMatches) {
    EXPECT_FALSE(binding_mismatch(stored, fresh));
}

TEST_F(Binding, IssAndSub) {
    fresh.iss = "https://evil.example.com";
    EXPECT_EQ(binding_mismatch(stored, fresh), "iss");
    fresh.sub = "user-2";
    EXPECT_EQ(binding_mismatch(stored, fresh), "iss");  // first difference wins
    fresh.iss = stored.iss;
    EXPECT_EQ(binding_mismatch(stored, fresh), "sub");
}

TEST_F(Binding, AudienceIsASet) {
    fresh.aud = {"client-b", "client-a", "client-a"};
    EXPECT_FALSE(binding_mismatch(stored, fresh));
    fresh.aud = {"client-a"};
    EXPECT_EQ(binding_mismatch(stored, fresh), "aud");
    fresh.aud = {"client-a", "client-b", "client-c"};
    EXPECT_EQ(binding_mismatch(stored, fresh), "aud");
}

TEST_F(Binding, AzpComparedWhenBothPresent) {
    fresh.azp = "client-b";
    EXPECT_EQ(binding_mismatch(stored, fresh), "azp");
    fresh.azp.reset();
    EXPECT_FALSE(binding_mismatch(stored, fresh));
    stored.azp.reset();
    fresh.azp = "client-a";
    EXPECT_FALSE(binding_mismatch(stored, fresh));
}

TEST_F(Binding, AuthTimeComparedWhenBothPresent) {
    fresh.auth_time = 1700000001;
    EXPECT_EQ(binding_mismatch(stored, fresh), "auth_time");
    fresh.auth_time.reset();
    EXPECT_FALSE(binding_mismatch(stored, fresh));
    stored.auth_time.reset();
    fresh.auth_time = 5;
    EXPECT_FALSE(binding_mismatch(stored, fresh));
}

TEST_F(Binding, OrderOfChecks) {
    fresh.azp = "other";
    fresh.auth_time = 1;
    EXPECT_EQ(binding_mismatch(stored, fresh), "azp");
    fresh.aud = {"x"};
    EXPECT_EQ(binding_mismatch(stored, fresh), "aud");
}

}  // namespace
}  // namespace upstream_token
