// Unit tests of the token endpoint answer interpretation (src/core/token_response.cpp).
#include "core/token_response.hpp"

#include <gtest/gtest.h>

#include <cstdio>
#include <limits>
#include <string>

namespace upstream_token {
namespace {

// 2015-10-21T07:28:00Z, the instant of the RFC example date.
constexpr Time kNow{seconds(1445412480)};
constexpr std::string_view kRefresh = "rt-9f8e7d6c5b4a3928171605f4e3d2c1b0";
constexpr std::string_view kAccess = "at-0123456789abcdefghijklmnopqrstuv";

// Shorthand for a call with no Retry-After header.
ExchangeOutcome interpret(long status, std::string_view body) {
    return interpret_token_response(status, body, "", kNow);
}

// No outcome text may ever carry a token value.
void expect_no_secrets(const ExchangeOutcome& o) {
    for (const std::string_view s : {kRefresh, kAccess}) {
        EXPECT_EQ(o.message.find(s), std::string::npos) << o.message;
        EXPECT_EQ(o.error.find(s), std::string::npos) << o.error;
    }
}

TEST(TokenResponse, MinimalSuccess) {
    const auto o = interpret(200, R"({"access_token":"abc"})");
    ASSERT_EQ(o.failure, FailureClass::none);
    ASSERT_TRUE(o.tokens);
    EXPECT_EQ(o.tokens->access_token, "abc");
    EXPECT_EQ(o.tokens->token_type, "Bearer");
    EXPECT_FALSE(o.tokens->refresh_token);
    EXPECT_FALSE(o.tokens->id_token);
    EXPECT_FALSE(o.tokens->scope);
    EXPECT_FALSE(o.tokens->expires_in);
    EXPECT_FALSE(o.tokens->refresh_expires_in);
    EXPECT_FALSE(o.retry_after);
}

TEST(TokenResponse, FullSuccess) {
    const auto o = interpret(200, R"({"access_token":"abc","refresh_token":"rt","id_token":"a.b.c",
        "token_type":"bearer","scope":"openid email","expires_in":3600,
        "refresh_expires_in":86400})");
    ASSERT_EQ(o.failure, FailureClass::none);
    EXPECT_EQ(o.tokens->refresh_token, "rt");
    EXPECT_EQ(o.tokens->id_token, "a.b.c");
    EXPECT_EQ(o.tokens->token_type, "bearer");  // case kept
    EXPECT_EQ(o.tokens->scope, "openid email");
    EXPECT_EQ(o.tokens->expires_in, 3600);
    EXPECT_EQ(o.tokens->refresh_expires_in, 86400);
}

TEST(TokenResponse, OtherSuccessStatuses) {
    EXPECT_EQ(interpret(201, R"({"access_token":"abc"})").failure, FailureClass::none);
    EXPECT_EQ(interpret(299, R"({"access_token":"abc"})").failure, FailureClass::none);
}

TEST(TokenResponse, LenientNumbers) {
    auto o = interpret(200, R"({"access_token":"a","expires_in":"3600"})");
    ASSERT_EQ(o.failure, FailureClass::none);
    EXPECT_EQ(o.tokens->expires_in, 3600);
    o = interpret(200, R"({"access_token":"a","expires_in":0})");
    EXPECT_EQ(o.tokens->expires_in, 0);
    o = interpret(200, R"({"access_token":"a","expires_in":null})");
    EXPECT_FALSE(o.tokens->expires_in);
    o = interpret(200, R"({"access_token":"a","expires_in":3599.7})");
    EXPECT_EQ(o.tokens->expires_in, 3599);
    o = interpret(200, R"({"access_token":"a","expires_in":99999999999999999999999})");
    EXPECT_EQ(o.tokens->expires_in, std::numeric_limits<std::int64_t>::max());
    o = interpret(200, R"({"access_token":"a","expires_in":"99999999999999999999999"})");
    EXPECT_EQ(o.tokens->expires_in, std::numeric_limits<std::int64_t>::max());
    o = interpret(200, R"({"access_token":"a","expires_in":18446744073709551615})");
    EXPECT_EQ(o.tokens->expires_in, std::numeric_limits<std::int64_t>::max());
}

TEST(TokenResponse, RefreshExpiresInAliases) {
    auto o = interpret(200, R"({"access_token":"a","refresh_token_expires_in":"7200"})");
    EXPECT_EQ(o.tokens->refresh_expires_in, 7200);
    o = interpret(200, R"({"access_token":"a","refresh_expires_in":10,
                           "refresh_token_expires_in":20})");
    EXPECT_EQ(o.tokens->refresh_expires_in, 10);
    o = interpret(200, R"({"access_token":"a","refresh_expires_in":-1})");
    EXPECT_EQ(o.failure, FailureClass::protocol);
    o = interpret(200, R"({"access_token":"a","refresh_token_expires_in":"soon"})");
    EXPECT_EQ(o.failure, FailureClass::protocol);
}

TEST(TokenResponse, BadNumbersAreProtocolFailures) {
    for (const char* body : {
             R"({"access_token":"a","expires_in":-1})",
             R"({"access_token":"a","expires_in":"-1"})",
             R"({"access_token":"a","expires_in":"1h"})",
             R"({"access_token":"a","expires_in":""})",
             R"({"access_token":"a","expires_in":" 3600"})",
             R"({"access_token":"a","expires_in":-0.5})",
             R"({"access_token":"a","expires_in":true})",
             R"({"access_token":"a","expires_in":[3600]})",
         }) {
        const auto o = interpret(200, body);
        EXPECT_EQ(o.failure, FailureClass::protocol) << body;
        EXPECT_FALSE(o.tokens) << body;
        EXPECT_NE(o.message.find("expires_in"), std::string::npos) << o.message;
    }
}

TEST(TokenResponse, EmptyRefreshTokenIsAbsent) {
    auto o = interpret(200, R"({"access_token":"a","refresh_token":""})");
    ASSERT_EQ(o.failure, FailureClass::none);
    EXPECT_FALSE(o.tokens->refresh_token);
    o = interpret(200, R"({"access_token":"a","refresh_token":null})");
    EXPECT_FALSE(o.tokens->refresh_token);
}

TEST(TokenResponse, ScopeArrayIsJoined) {
    const auto o = interpret(200, R"({"access_token":"a","scope":["openid","email"]})");
    EXPECT_EQ(o.tokens->scope, "openid email");
}

TEST(TokenResponse, MissingOrBadAccessTokenIsProtocol) {
    for (const char* body : {
             R"({})",
             R"({"access_token":""})",
             R"({"access_token":null})",
             R"({"access_token":42})",
             R"({"token_type":"Bearer","expires_in":3600})",
         }) {
        const auto o = interpret(200, body);
        EXPECT_EQ(o.failure, FailureClass::protocol) << body;
        EXPECT_FALSE(o.tokens);
        EXPECT_FALSE(o.message.empty());
    }
}

TEST(TokenResponse, WrongTypesAreProtocol) {
    EXPECT_EQ(interpret(200, R"({"access_token":"a","refresh_token":5})").failure,
              FailureClass::protocol);
    EXPECT_EQ(interpret(200, R"({"access_token":"a","id_token":{}})").failure,
              FailureClass::protocol);
    EXPECT_EQ(interpret(200, R"({"access_token":"a","token_type":1})").failure,
              FailureClass::protocol);
    EXPECT_EQ(interpret(200, R"({"access_token":"a","scope":7})").failure, FailureClass::protocol);
}

TEST(TokenResponse, NonJsonOrNonObjectSuccessIsProtocol) {
    for (const char* body : {"", "not json", "<html>ok</html>", "[]", "\"token\"", "42", "null",
                             R"({"access_token":"a")"}) {
        const auto o = interpret(200, body);
        EXPECT_EQ(o.failure, FailureClass::protocol) << body;
        EXPECT_EQ(o.error, "invalid_response");
    }
}

TEST(TokenResponse, MalformedResponseNeverLeaksTokens) {
    // A response that carries a refresh token but is otherwise unusable: the refresh token
    // must not appear in the message (it will be logged and stored as last_error).
    const std::string bodies[] = {
        R"({"refresh_token":")" + std::string(kRefresh) + R"(","expires_in":"x"})",
        R"({"access_token":")" + std::string(kAccess) + R"(","refresh_token":")" +
            std::string(kRefresh) + R"(","expires_in":-3})",
        R"({"access_token":")" + std::string(kAccess) + R"(","refresh_token":")" +
            std::string(kRefresh) + R"(")",
        R"({"access_token":")" + std::string(kAccess) + R"(","refresh_token":[")" +
            std::string(kRefresh) + R"("]})",
        R"({"access_token":")" + std::string(kAccess) + R"(","scope":{"x":")" +
            std::string(kRefresh) + R"("}})",
    };
    for (const auto& body : bodies) {
        const auto o = interpret(200, body);
        EXPECT_EQ(o.failure, FailureClass::protocol) << body;
        expect_no_secrets(o);
    }
}

TEST(TokenResponse, InvalidGrantIsReauth) {
    for (const long status : {400L, 401L}) {
        const auto o = interpret(status, R"({"error":"invalid_grant",
            "error_description":"Token is not active"})");
        EXPECT_EQ(o.failure, FailureClass::reauth_required);
        EXPECT_EQ(o.error, "invalid_grant");
        EXPECT_NE(o.message.find("invalid_grant"), std::string::npos);
        EXPECT_NE(o.message.find("Token is not active"), std::string::npos);
        EXPECT_NE(o.message.find(std::to_string(status)), std::string::npos);
        EXPECT_FALSE(o.tokens);
    }
}

TEST(TokenResponse, ClientErrorsAreMisconfiguration) {
    EXPECT_EQ(interpret(401, R"({"error":"invalid_client"})").failure,
              FailureClass::client_misconfigured);
    EXPECT_EQ(interpret(400, R"({"error":"unauthorized_client"})").failure,
              FailureClass::client_misconfigured);
    EXPECT_EQ(interpret(400, R"({"error":"invalid_client"})").error, "invalid_client");
}

TEST(TokenResponse, OtherOAuthErrorsAreProtocol) {
    EXPECT_EQ(interpret(400, R"({"error":"invalid_request"})").failure, FailureClass::protocol);
    EXPECT_EQ(interpret(400, R"({"error":"invalid_scope"})").failure, FailureClass::protocol);
    EXPECT_EQ(interpret(400, R"({"error":"unsupported_grant_type"})").error,
              "unsupported_grant_type");
    // invalid_grant only means "dead refresh token" on 400/401.
    EXPECT_EQ(interpret(403, R"({"error":"invalid_grant"})").failure, FailureClass::protocol);
    EXPECT_EQ(interpret(400, "Bad Request").failure, FailureClass::protocol);
    EXPECT_EQ(interpret(400, "Bad Request").error, "http_400");
    EXPECT_EQ(interpret(401, "").failure, FailureClass::protocol);
}

TEST(TokenResponse, TransientStatuses) {
    for (const long status : {408L, 425L, 429L, 500L, 502L, 503L, 504L, 599L}) {
        const auto o = interpret(status, "<html>busy</html>");
        EXPECT_EQ(o.failure, FailureClass::transient) << status;
        EXPECT_EQ(o.error, "http_" + std::to_string(status));
        EXPECT_EQ(o.message.find("busy"), std::string::npos);
    }
    // 429 with an OAuth error body is still transient.
    const auto o = interpret(429, R"({"error":"invalid_grant"})");
    EXPECT_EQ(o.failure, FailureClass::transient);
    EXPECT_EQ(o.error, "invalid_grant");
}

TEST(TokenResponse, TemporarilyUnavailableIsTransient) {
    EXPECT_EQ(interpret(400, R"({"error":"temporarily_unavailable"})").failure,
              FailureClass::transient);
    EXPECT_EQ(interpret(503, R"({"error":"server_error"})").failure, FailureClass::transient);
}

TEST(TokenResponse, RetryAfterIsParsedForTransient) {
    auto o = interpret_token_response(429, "", "120", kNow);
    EXPECT_EQ(o.retry_after, seconds(120));
    o = interpret_token_response(503, "", "Wed, 21 Oct 2015 07:30:00 GMT", kNow);
    EXPECT_EQ(o.retry_after, seconds(120));
    o = interpret_token_response(503, "", "soon", kNow);
    EXPECT_FALSE(o.retry_after);
}

TEST(TokenResponse, OtherStatusesAreProtocol) {
    for (const long status : {0L, 100L, 301L, 302L, 304L, 307L, 403L, 404L, 405L, 410L, 600L}) {
        const auto o = interpret(status, R"({"access_token":"a"})");
        EXPECT_EQ(o.failure, FailureClass::protocol) << status;
        EXPECT_FALSE(o.tokens);
    }
    EXPECT_NE(interpret(302, "").message.find("redirect"), std::string::npos);
}

TEST(TokenResponse, ErrorWithSuccessStatus) {
    // GitHub answers refresh failures with 200 and an error body.
    auto o = interpret(200, R"({"error":"invalid_grant","error_description":"expired"})");
    EXPECT_EQ(o.failure, FailureClass::reauth_required);
    o = interpret(200, R"({"error":"bad_refresh_token"})");
    EXPECT_EQ(o.failure, FailureClass::protocol);
    EXPECT_EQ(o.error, "bad_refresh_token");
}

TEST(TokenResponse, DescriptionIsSanitised) {
    std::string desc = "line1\nline2\r\t\x01\x7f caf\xc3\xa9 ";
    for (int i = 0; i < 100; ++i) {
        desc += "word ";
    }
    std::string body = R"({"error":"invalid_grant","error_description":")";
    for (const char c : desc) {
        const auto b = static_cast<unsigned char>(c);
        if (b < 0x20 || b == 0x7f) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04x", b);
            body += buf;
        } else {
            body.push_back(c);
        }
    }
    body += R"("})";
    const auto o = interpret(400, body);
    ASSERT_EQ(o.failure, FailureClass::reauth_required);
    for (const char c : o.message) {
        const auto b = static_cast<unsigned char>(c);
        EXPECT_TRUE(b >= 0x20 && b < 0x7f) << static_cast<int>(b);
    }
    EXPECT_NE(o.message.find("line1 line2"), std::string::npos) << o.message;
    EXPECT_LT(o.message.size(), 320U);
    EXPECT_NE(o.message.find("..."), std::string::npos);
}

TEST(TokenResponse, DescriptionEchoingATokenIsRedacted) {
    const std::string body = R"({"error":"invalid_grant","error_description":"refresh token )" +
                             std::string(kRefresh) + R"( is expired; access )" +
                             std::string(kAccess) + R"(."})";
    const auto o = interpret(400, body);
    EXPECT_EQ(o.failure, FailureClass::reauth_required);
    expect_no_secrets(o);
    EXPECT_NE(o.message.find("[redacted]"), std::string::npos);
    EXPECT_NE(o.message.find("is expired"), std::string::npos);
}

TEST(TokenResponse, TokenCutAtTheScanLimitIsNotLeaked) {
    // Prose up to the sanitiser's scan limit, then a token straddling it: the visible
    // prefix must not survive as an unredacted fragment.
    std::string desc;
    while (desc.size() < 790) {
        desc += "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJ ";  // redacted, 47 chars
    }
    desc += kRefresh;
    const auto o =
        interpret(400, R"({"error":"invalid_grant","error_description":")" + desc + R"("})");
    EXPECT_EQ(o.message.find("rt-9f8e"), std::string::npos) << o.message;
    expect_no_secrets(o);
}

TEST(TokenResponse, ErrorCodeIsSanitised) {
    const std::string body = R"({"error":")" + std::string(kRefresh) + R"(\n"})";
    const auto o = interpret(400, body);
    EXPECT_EQ(o.failure, FailureClass::protocol);
    expect_no_secrets(o);
    EXPECT_EQ(o.error.find('\n'), std::string::npos);
    const auto long_code = interpret(400, R"({"error":")" + std::string(300, 'e') + R"("})");
    EXPECT_LE(long_code.error.size(), 70U);
}

TEST(TokenResponse, TransportFailure) {
    const auto o = transport_failure("Connection refused\n");
    EXPECT_EQ(o.failure, FailureClass::transient);
    EXPECT_EQ(o.error, "transport");
    EXPECT_NE(o.message.find("Connection refused"), std::string::npos);
    EXPECT_EQ(o.message.find('\n'), std::string::npos);
    EXPECT_FALSE(o.tokens);
}

TEST(RetryAfter, DeltaSeconds) {
    EXPECT_EQ(parse_retry_after("120", kNow), seconds(120));
    EXPECT_EQ(parse_retry_after("0", kNow), Micros{0});
    EXPECT_EQ(parse_retry_after(" 5 ", kNow), seconds(5));
    EXPECT_EQ(parse_retry_after("86400", kNow), seconds(86400));
    EXPECT_EQ(parse_retry_after("86401", kNow), seconds(86400));
    EXPECT_EQ(parse_retry_after("99999999999999999999999999", kNow), seconds(86400));
}

TEST(RetryAfter, ImfFixdate) {
    EXPECT_EQ(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", kNow), Micros{0});
    EXPECT_EQ(parse_retry_after("Wed, 21 Oct 2015 07:29:00 GMT", kNow), seconds(60));
    EXPECT_EQ(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", kNow + Micros{500000}), Micros{0});
    EXPECT_EQ(parse_retry_after("Wed, 21 Oct 2015 07:28:01 GMT", kNow + Micros{500000}),
              Micros{500000});
    EXPECT_EQ(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", kNow), Micros{0});
    EXPECT_EQ(parse_retry_after("Thu, 22 Oct 2015 07:28:00 GMT", kNow), seconds(86400));
    EXPECT_EQ(parse_retry_after("Fri, 01 Jan 2100 00:00:00 GMT", kNow), seconds(86400));
    // Leap day, and a date across a year boundary.
    EXPECT_EQ(parse_retry_after("Mon, 29 Feb 2016 00:00:10 GMT", Time{seconds(1456704000)}),
              seconds(10));
    EXPECT_EQ(parse_retry_after("Sat, 01 Jan 2000 00:00:00 GMT", Time{seconds(946684790)}),
              seconds(10));
}

TEST(RetryAfter, ObsoleteDateFormats) {
    EXPECT_EQ(parse_retry_after("Wednesday, 21-Oct-15 07:29:00 GMT", kNow), seconds(60));
    EXPECT_EQ(parse_retry_after("Sunday, 06-Nov-94 08:49:37 GMT", kNow), Micros{0});
    EXPECT_EQ(parse_retry_after("Wed Oct 21 07:29:00 2015", kNow), seconds(60));
    EXPECT_EQ(parse_retry_after("Sun Nov  6 08:49:37 1994", kNow), Micros{0});
}

TEST(RetryAfter, Garbage) {
    for (const char* h :
         {"", "   ", "-1", "1.5", "+5", "soon", "120s", "0x10", "Wed, 21 Oct 2015 07:28:00",
          "Wed, 21 Oct 2015 07:28:00 UTC", "Wed, 32 Oct 2015 07:28:00 GMT",
          "Wed, 29 Feb 2015 07:28:00 GMT", "Wed, 21 Foo 2015 07:28:00 GMT",
          "Wed, 21 Oct 2015 24:00:00 GMT", "Xyz, 21 Oct 2015 07:28:00 GMT",
          "wed, 21 oct 2015 07:28:00 gmt", "Wed, 21 Oct 2015 07:28:00 GMT extra",
          "Wed,  21 Oct 2015 07:28:00 GMT", "Wed, 21 Oct 15 07:28:00 GMT"}) {
        EXPECT_FALSE(parse_retry_after(h, kNow)) << h;
    }
    EXPECT_FALSE(parse_retry_after(std::string(1000, '1'), kNow));
}

}  // namespace
}  // namespace upstream_token
