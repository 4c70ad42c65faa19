// Derived session keys of client-credentials and exchanged tokens: marked, injective over their
// parameters, refused as application sessions; the JSON the engine receives round-trips.
#include "core/grant_params.hpp"

#include <gtest/gtest.h>

#include <set>

#include "core/crypto.hpp"
#include "core/error.hpp"

namespace upstream_token {
namespace {

GrantParams cc(std::optional<std::string> scope, std::optional<std::string> audience) {
    GrantParams p;
    p.grant = Grant::client_credentials;
    p.scope = std::move(scope);
    p.audience = std::move(audience);
    return p;
}

TEST(GrantParams, KeysAreDerivedAndMarked) {
    const std::string key = grant_session_key(cc("read", std::nullopt));
    EXPECT_EQ(key.substr(0, 4), std::string("\x01"
                                            "cc:"));
    EXPECT_EQ(key.size(), 4U + 64U);
    EXPECT_TRUE(is_grant_session(key));
    GrantParams x = cc("read", "api");
    x.grant = Grant::token_exchange;
    x.subject_session = "s1";
    EXPECT_EQ(grant_session_key(x).substr(0, 4), std::string("\x01"
                                                             "tx:"));
    EXPECT_FALSE(is_grant_session("session-42"));
    EXPECT_FALSE(is_grant_session(""));
}

TEST(GrantParams, DistinctParametersGiveDistinctKeys) {
    // Absent and empty differ, and no concatenation of fields collides.
    std::set<std::string> keys = {
        grant_session_key(cc(std::nullopt, std::nullopt)),
        grant_session_key(cc("", std::nullopt)),
        grant_session_key(cc(std::nullopt, "")),
        grant_session_key(cc("ab", "c")),
        grant_session_key(cc("a", "bc")),
        grant_session_key(cc("abc", std::nullopt)),
    };
    EXPECT_EQ(keys.size(), 6U);
    GrantParams a = cc("s", "aud");
    a.grant = Grant::token_exchange;
    a.subject_session = "alice";
    GrantParams b = a;
    b.subject_session = "bob";
    EXPECT_NE(grant_session_key(a), grant_session_key(b));
    EXPECT_EQ(grant_session_key(a), grant_session_key(a));
}

TEST(GrantParams, JsonRoundTrip) {
    GrantParams a = cc("read write", std::nullopt);
    a.grant = Grant::token_exchange;
    a.subject_session = "sess \"quoted\"";
    const GrantParams b = grant_params_from_json(grant_params_json(a));
    EXPECT_EQ(b.grant, Grant::token_exchange);
    EXPECT_EQ(b.scope, a.scope);
    EXPECT_FALSE(b.audience.has_value());
    EXPECT_EQ(b.subject_session, a.subject_session);
    EXPECT_EQ(grant_session_key(b), grant_session_key(a));
    EXPECT_THROW(grant_params_from_json("{\"grant\":\"password\"}"), Error);
    EXPECT_THROW(grant_params_from_json("not json"), Error);
}

TEST(GrantParams, ApplicationSessionsMayNotLookDerived) {
    EXPECT_NO_THROW(check_application_session("session-42"));
    try {
        check_application_session(
            std::string("\x01"
                        "cc:x"));
        FAIL() << "a derived-looking session was accepted";
    } catch (const Error& e) {
        EXPECT_EQ(e.code(), ErrorCode::invalid_parameter);
    }
}

TEST(GrantParams, Base64RoundTrips) {
    for (const std::string& s : {std::string(), std::string("a"), std::string("ab"),
                                 std::string("abc"), std::string("\x00\xff\x10\x20", 4)}) {
        EXPECT_EQ(base64_unpack(base64_pack(s)), s);
    }
    EXPECT_EQ(base64_pack("ab"), "YWI=");
    EXPECT_THROW(base64_unpack("YWI"), Error);
    EXPECT_THROW(base64_unpack("Y*I="), Error);
}

TEST(GrantParams, HexHelpers) {
    EXPECT_EQ(hex_encode(std::string("\x00\xff\x10", 3)), "00ff10");
    // SHA-256("abc"), FIPS 180-2 appendix B.1.
    EXPECT_EQ(sha256_hex("abc"),
              "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

}  // namespace
}  // namespace upstream_token
