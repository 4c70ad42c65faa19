// Unit tests of the token endpoint answer interpretation (src/core/token_response.cpp).
#include "core/token_response.hpp"

#include <gtest/gtest.h>

#include <cstdio>
#include <limits>
#include <string>
#include <vector>

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
    // An odd first alias does not hide a usable second one.
    o = interpret(200, R"({"access_token":"a","refresh_expires_in":-1,
                           "refresh_token_expires_in":30})");
    ASSERT_EQ(o.failure, FailureClass::none);
    EXPECT_EQ(o.tokens->refresh_expires_in, 30);
    ASSERT_EQ(o.tokens->warnings.size(), 1U);
    EXPECT_EQ(o.tokens->warnings[0], "refresh_expires_in is negative; default used");
    o = interpret(200, R"({"access_token":"a","refresh_token_expires_in":"soon"})");
    ASSERT_EQ(o.failure, FailureClass::none);
    EXPECT_FALSE(o.tokens->refresh_expires_in);
    ASSERT_EQ(o.tokens->warnings.size(), 1U);
    EXPECT_EQ(o.tokens->warnings[0],
              "refresh_token_expires_in is a string that is not a number; default used");
}

// Defect 9 (issue 9): an odd optional lifetime cost the whole answer, and with it the
// rotated refresh token. Now the answer is kept, the field defaulted, a warning recorded.
TEST(TokenResponse, OddLifetimesAreDefaultedWithAWarning) {
    struct Case {
        const char* value;
        const char* warning;
    };
    for (const Case c : {
             Case{R"(-1)", "expires_in is negative; default used"},
             Case{R"(-5)", "expires_in is negative; default used"},
             Case{R"("-1")", "expires_in is negative; default used"},
             Case{R"(-0.5)", "expires_in is negative; default used"},
             Case{R"(-1e400)", "expires_in is negative; default used"},
             Case{R"("1h")", "expires_in is a string that is not a number; default used"},
             Case{R"("")", "expires_in is an empty string; default used"},
             Case{R"("0x10")", "expires_in is a string that is not a number; default used"},
             Case{R"("+5")", "expires_in is a string that is not a number; default used"},
             Case{R"("true")", "expires_in is a string that is not a number; default used"},
             Case{R"("[3600]")", "expires_in is a string that is not a number; default used"},
             Case{R"(true)", "expires_in is a boolean; default used"},
             Case{R"(false)", "expires_in is a boolean; default used"},
             Case{R"([3600])", "expires_in is an array; default used"},
             Case{R"({"s":3600})", "expires_in is an object; default used"},
         }) {
        const std::string body = std::string(R"({"access_token":"a","refresh_token":"r",)") +
                                 R"("expires_in":)" + c.value + "}";
        const auto o = interpret(200, body);
        ASSERT_EQ(o.failure, FailureClass::none) << body << " " << o.message;
        EXPECT_EQ(o.tokens->access_token, "a");
        EXPECT_EQ(o.tokens->refresh_token, "r") << body;
        EXPECT_FALSE(o.tokens->expires_in) << body;
        ASSERT_FALSE(o.tokens->warnings.empty()) << body;
        EXPECT_EQ(o.tokens->warnings.back(), c.warning) << body;
        EXPECT_LE(o.tokens->warnings.size(), 2U) << body;  // and "body repaired" for -1e400
    }
}

TEST(TokenResponse, SensibleLifetimeEncodingsAreAcceptedSilently) {
    struct Case {
        const char* value;
        std::int64_t seconds;
    };
    for (const Case c :
         {Case{R"(3600)", 3600}, Case{R"("3600")", 3600}, Case{R"("3600.0")", 3600},
          Case{R"("3599.9")", 3599}, Case{R"(" 3600 ")", 3600}, Case{R"("3.6e3")", 3600},
          Case{R"(3.6E3)", 3600}, Case{R"(0)", 0}, Case{R"("0")", 0}, Case{R"(0.4)", 0},
          Case{R"(-0)", 0}, Case{R"(1e-400)", 0}}) {
        const std::string body =
            std::string(R"({"access_token":"a","expires_in":)") + c.value + "}";
        const auto o = interpret(200, body);
        ASSERT_EQ(o.failure, FailureClass::none) << body;
        EXPECT_EQ(o.tokens->expires_in, c.seconds) << body;
        EXPECT_TRUE(o.tokens->warnings.empty()) << body << " " << o.tokens->warnings[0];
    }
}

TEST(TokenResponse, HugeLifetimesAreCappedWithAWarning) {
    constexpr auto kMax = std::numeric_limits<std::int64_t>::max();
    for (const char* value :
         {"9223372036854775808", "\"9223372036854775808\"", "1e19", "1e308", "1e400", "\"1e400\"",
          "99999999999999999999999999999999999999", "\"99999999999999999999999\""}) {
        const std::string body = std::string(R"({"access_token":"a","expires_in":)") + value + "}";
        const auto o = interpret(200, body);
        ASSERT_EQ(o.failure, FailureClass::none) << body;
        EXPECT_EQ(o.tokens->expires_in, kMax) << body;
        ASSERT_FALSE(o.tokens->warnings.empty()) << body;
        EXPECT_EQ(o.tokens->warnings.back(), "expires_in is too large; capped") << body;
    }
    // The largest value that fits is taken as is.
    const auto o = interpret(200, R"({"access_token":"a","expires_in":9223372036854775807})");
    EXPECT_EQ(o.tokens->expires_in, kMax);
    EXPECT_TRUE(o.tokens->warnings.empty());
}

TEST(TokenResponse, NullAndEmptyOptionalFieldsAreAbsentWithoutWarning) {
    const auto o = interpret(200, R"({"access_token":"a","refresh_token":null,"id_token":"",
        "token_type":null,"scope":null,"expires_in":null,"refresh_expires_in":null,
        "refresh_token_expires_in":null})");
    ASSERT_EQ(o.failure, FailureClass::none);
    EXPECT_FALSE(o.tokens->refresh_token);
    EXPECT_FALSE(o.tokens->id_token);
    EXPECT_EQ(o.tokens->token_type, "Bearer");
    EXPECT_FALSE(o.tokens->scope);
    EXPECT_FALSE(o.tokens->expires_in);
    EXPECT_FALSE(o.tokens->refresh_expires_in);
    EXPECT_TRUE(o.tokens->warnings.empty());
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

TEST(TokenResponse, WrongTypesOfOptionalFieldsAreIgnoredWithAWarning) {
    struct Case {
        const char* body;
        const char* warning;
    };
    for (const Case c : {
             Case{R"({"access_token":"a","refresh_token":5})",
                  "refresh_token is a number; ignored"},
             Case{R"({"access_token":"a","refresh_token":["r"]})",
                  "refresh_token is an array; ignored"},
             Case{R"({"access_token":"a","refresh_token":true})",
                  "refresh_token is a boolean; ignored"},
             Case{R"({"access_token":"a","id_token":{}})", "id_token is an object; ignored"},
             Case{R"({"access_token":"a","id_token":5})", "id_token is a number; ignored"},
             Case{R"({"access_token":"a","token_type":1})", "token_type is a number; Bearer used"},
             Case{R"({"access_token":"a","token_type":[]})", "token_type is an array; Bearer used"},
             Case{R"({"access_token":"a","scope":7})", "scope is a number; ignored"},
             Case{R"({"access_token":"a","scope":false})", "scope is a boolean; ignored"},
             Case{R"({"access_token":"a","scope":{"openid":true}})", "scope is an object; ignored"},
             Case{R"({"access_token":"a","scope":["openid",1]})",
                  "scope is an array with a number in it; ignored"},
             Case{R"({"access_token":"a","scope":[null]})",
                  "scope is an array with a null in it; ignored"},
         }) {
        const auto o = interpret(200, c.body);
        ASSERT_EQ(o.failure, FailureClass::none) << c.body;
        EXPECT_EQ(o.tokens->access_token, "a");
        EXPECT_FALSE(o.tokens->refresh_token) << c.body;
        EXPECT_FALSE(o.tokens->id_token) << c.body;
        EXPECT_FALSE(o.tokens->scope) << c.body;
        EXPECT_EQ(o.tokens->token_type, "Bearer") << c.body;
        ASSERT_EQ(o.tokens->warnings.size(), 1U) << c.body;
        EXPECT_EQ(o.tokens->warnings[0], c.warning);
    }
}

TEST(TokenResponse, SeveralOddFieldsGiveOneWarningEach) {
    const auto o = interpret(200, R"({"access_token":"a","refresh_token":"r","expires_in":"",
        "scope":42,"token_type":[],"refresh_expires_in":"x","refresh_token_expires_in":false})");
    ASSERT_EQ(o.failure, FailureClass::none);
    EXPECT_EQ(o.tokens->refresh_token, "r");
    EXPECT_EQ(o.tokens->warnings,
              (std::vector<std::string>{
                  "token_type is an array; Bearer used", "scope is a number; ignored",
                  "expires_in is an empty string; default used",
                  "refresh_expires_in is a string that is not a number; default used",
                  "refresh_token_expires_in is a boolean; default used"}));
}

TEST(TokenResponse, OddValuesBreakingTheJsonAreRepaired) {
    // A strict parser rejects the whole body for these; the tokens next to them are kept.
    auto o = interpret(200, R"({"access_token":"a","refresh_token":"r","expires_in":1e400})");
    ASSERT_EQ(o.failure, FailureClass::none) << o.message;
    EXPECT_EQ(o.tokens->refresh_token, "r");
    EXPECT_EQ(o.tokens->expires_in, std::numeric_limits<std::int64_t>::max());
    EXPECT_EQ(o.tokens->warnings.front(), "body repaired (invalid UTF-8 or a number out of range)");
    // Latin-1 in an optional field, a raw control character in another.
    o = interpret(
        200, "{\"access_token\":\"a\",\"refresh_token\":\"r\",\"scope\":\"caf\xe9\",\"x\":\"\t\"}");
    ASSERT_EQ(o.failure, FailureClass::none) << o.message;
    EXPECT_EQ(o.tokens->refresh_token, "r");
    EXPECT_EQ(o.tokens->scope, "caf\xEF\xBF\xBD");
    // A damaged token is not used: the access token fails the answer, others are ignored.
    o = interpret(200, "{\"access_token\":\"a\xff\",\"refresh_token\":\"r\"}");
    EXPECT_EQ(o.failure, FailureClass::protocol);
    EXPECT_NE(o.message.find("access_token is not valid UTF-8"), std::string::npos);
    o = interpret(200, "{\"access_token\":\"a\",\"refresh_token\":\"r\\n\x80\"}");
    ASSERT_EQ(o.failure, FailureClass::none);
    EXPECT_FALSE(o.tokens->refresh_token);
    EXPECT_EQ(o.tokens->warnings.back(), "refresh_token is not valid UTF-8; ignored");
    // An error body with a Latin-1 description is still classified by its error code.
    o = interpret(400, "{\"error\":\"invalid_grant\",\"error_description\":\"expir\xe9\"}");
    EXPECT_EQ(o.failure, FailureClass::reauth_required);
    // What no repair can fix stays a protocol failure.
    o = interpret(200, R"({"access_token":"a","expires_in":1e400)");
    EXPECT_EQ(o.failure, FailureClass::protocol);
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
    // Answers with a token in an odd place: neither the message nor a warning (both end up
    // in last_error or the log) may carry it.
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
        expect_no_secrets(o);
        if (o.tokens) {
            for (const auto& w : o.tokens->warnings) {
                EXPECT_EQ(w.find(kRefresh), std::string::npos) << w;
                EXPECT_EQ(w.find(kAccess), std::string::npos) << w;
            }
        }
    }
    EXPECT_EQ(interpret(200, bodies[0]).failure, FailureClass::protocol);  // no access_token
    EXPECT_EQ(interpret(200, bodies[1]).failure, FailureClass::none);      // negative: defaulted
    EXPECT_EQ(interpret(200, bodies[2]).failure, FailureClass::protocol);  // truncated JSON
    EXPECT_EQ(interpret(200, bodies[3]).failure, FailureClass::none);      // array: ignored
    EXPECT_EQ(interpret(200, bodies[4]).failure, FailureClass::none);      // object: ignored
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
    EXPECT_EQ(interpret(400, R"({"error":"unsupported_grant_type"})").failure,
              FailureClass::client_misconfigured);
}

TEST(TokenResponse, OtherOAuthErrorsAreProtocol) {
    EXPECT_EQ(interpret(400, R"({"error":"invalid_request"})").failure, FailureClass::protocol);
    EXPECT_EQ(interpret(400, R"({"error":"invalid_scope"})").failure, FailureClass::protocol);
    EXPECT_EQ(interpret(400, R"({"error":"unsupported_grant_type"})").error,
              "unsupported_grant_type");
    // A 403 carries OAuth errors too (Auth0, Atlassian); other statuses do not.
    EXPECT_EQ(interpret(403, R"({"error":"invalid_grant"})").failure,
              FailureClass::reauth_required);
    EXPECT_EQ(interpret(403, R"({"error":"invalid_request"})").failure, FailureClass::protocol);
    EXPECT_EQ(interpret(404, R"({"error":"invalid_grant"})").failure, FailureClass::protocol);
    EXPECT_EQ(interpret(409, R"({"error":"invalid_grant"})").failure, FailureClass::protocol);
    EXPECT_EQ(interpret(400, "Bad Request").failure, FailureClass::protocol);
    EXPECT_EQ(interpret(400, "Bad Request").error, "http_400");
    EXPECT_EQ(interpret(401, "").failure, FailureClass::protocol);
}

// Codes of "sign in again" beyond invalid_grant, with the statuses providers send them with.
TEST(TokenResponse, ReauthCodesOfRealProviders) {
    for (const char* code : {"interaction_required", "login_required", "consent_required",
                             "invalid_refresh_token", "bad_refresh_token"}) {
        const std::string body = std::string(R"({"error":")") + code + R"("})";
        for (long status : {200L, 400L, 401L, 403L}) {
            const auto o = interpret(status, body);
            EXPECT_EQ(o.failure, FailureClass::reauth_required) << code << " " << status;
            EXPECT_EQ(o.error, code);
        }
    }
    // Slack's shape: HTTP 200, ok false, the code in "error".
    EXPECT_EQ(interpret(200, R"({"ok":false,"error":"invalid_refresh_token"})").failure,
              FailureClass::reauth_required);
    // A code that merely contains one of them is not one of them.
    EXPECT_EQ(interpret(400, R"({"error":"invalid_grant_type"})").failure, FailureClass::protocol);
}

// HubSpot answers without "error": {"status": CODE, "message": TEXT}.
TEST(TokenResponse, HubSpotErrorShape) {
    const auto o = interpret(
        400,
        R"({"status":"BAD_REFRESH_TOKEN","message":"missing or unknown refresh token","correlationId":"c"})");
    EXPECT_EQ(o.failure, FailureClass::reauth_required);
    EXPECT_EQ(o.error, "BAD_REFRESH_TOKEN");
    EXPECT_NE(o.message.find("missing or unknown refresh token"), std::string::npos) << o.message;
    // "error" wins when both are there; another status is not a reauth.
    EXPECT_EQ(interpret(400, R"({"error":"invalid_request","status":"BAD_REFRESH_TOKEN"})").failure,
              FailureClass::protocol);
    EXPECT_EQ(interpret(400, R"({"status":"BAD_CLIENT_ID","message":"x"})").failure,
              FailureClass::protocol);
    EXPECT_EQ(interpret(400, R"({"status":400})").error, "http_400") << "a number is no code";
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
    o = interpret(200, R"({"error":"bad_verification_code"})");
    EXPECT_EQ(o.failure, FailureClass::protocol);
    EXPECT_EQ(o.error, "bad_verification_code");
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

// Fields next to the tokens (Salesforce's instance_url, Notion's workspace): strings and numbers
// as text, bounded; the token fields themselves never.
TEST(TokenResponse, OtherFieldsAreKeptAsTextBounded) {
    const auto o = interpret(
        200, R"({"access_token":"a","refresh_token":"r","instance_url":"https://x.my.example",)"
             R"("issued_at":"1700000000000","n":5,"obj":{"a":1},"list":[1],"flag":true,"nul":null,)"
             R"("expires_in":60})");
    ASSERT_TRUE(o.tokens);
    const std::map<std::string, std::string> want{
        {"instance_url", "https://x.my.example"}, {"issued_at", "1700000000000"}, {"n", "5"}};
    EXPECT_EQ(o.tokens->other_fields, want);
    std::string many = R"({"access_token":"a","big":")" + std::string(3000, 'x') + R"(")";
    for (int i = 0; i < 40; ++i) many += ",\"f" + std::to_string(i) + "\":\"v\"";
    many += "}";
    const auto m = interpret(200, many);
    ASSERT_TRUE(m.tokens);
    EXPECT_EQ(m.tokens->other_fields.count("big"), 0U) << "over the size bound";
    EXPECT_EQ(m.tokens->other_fields.size(), kMaxOtherFields);
}

}  // namespace
}  // namespace upstream_token
