// Unit tests of the refresh request building (src/core/refresh_request.cpp).
#include "core/refresh_request.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>

#include "core/error.hpp"

namespace upstream_token {
namespace {

const Time kNow{seconds(1'700'000'000)};

// The request for a client described the short way most tests here use.
HttpRequest build_refresh_request(AuthMethod method, std::string_view client_id,
                                  std::optional<std::string_view> secret,
                                  std::string_view refresh_token,
                                  std::optional<std::string_view> scope) {
    ClientCredentials c;
    c.method = method;
    c.client_id = std::string(client_id);
    if (secret) c.secret = std::string(*secret);
    return upstream_token::build_refresh_request(c, "https://idp.example/token", refresh_token,
                                                 scope, kNow);
}

// Whether a header line is present exactly.
bool has_header(const HttpRequest& r, const std::string& line) {
    return std::find(r.headers.begin(), r.headers.end(), line) != r.headers.end();
}

// The Authorization header line, or "" when there is none.
std::string authorization(const HttpRequest& r) {
    for (const auto& h : r.headers) {
        if (h.rfind("Authorization:", 0) == 0) {
            return h;
        }
    }
    return {};
}

TEST(AuthMethod, ParseAndName) {
    for (const AuthMethod m : {AuthMethod::client_secret_basic, AuthMethod::client_secret_post,
                               AuthMethod::none, AuthMethod::private_key_jwt}) {
        EXPECT_EQ(parse_auth_method(auth_method_name(m)), m);
    }
    EXPECT_STREQ(auth_method_name(AuthMethod::client_secret_basic), "client_secret_basic");
}

TEST(AuthMethod, UnknownIsRejectedWithoutEcho) {
    for (const char* text :
         {"", "basic", "Client_Secret_Basic", "Private_Key_JWT", "s3cr3t-client-secret-value"}) {
        try {
            parse_auth_method(text);
            FAIL() << text;
        } catch (const Error& e) {
            EXPECT_EQ(e.code(), ErrorCode::invalid_parameter);
            if (*text != '\0') {
                EXPECT_EQ(std::string(e.what()).find(text), std::string::npos);
            }
        }
    }
}

TEST(FormEncode, Vectors) {
    EXPECT_EQ(form_encode(""), "");
    EXPECT_EQ(form_encode("AZaz09*-._"), "AZaz09*-._");
    EXPECT_EQ(form_encode("a b"), "a+b");
    EXPECT_EQ(form_encode("a+b"), "a%2Bb");
    EXPECT_EQ(form_encode("a:b"), "a%3Ab");
    EXPECT_EQ(form_encode("~!'()"), "%7E%21%27%28%29");
    EXPECT_EQ(form_encode("=&%/?#"), "%3D%26%25%2F%3F%23");
    EXPECT_EQ(form_encode("\xc3\xa9"), "%C3%A9");  // é in UTF-8
    EXPECT_EQ(form_encode(std::string("\0\n", 2)), "%00%0A");
    EXPECT_EQ(form_encode("\xff"), "%FF");
}

TEST(Base64, Rfc4648Vectors) {
    EXPECT_EQ(base64_encode(""), "");
    EXPECT_EQ(base64_encode("f"), "Zg==");
    EXPECT_EQ(base64_encode("fo"), "Zm8=");
    EXPECT_EQ(base64_encode("foo"), "Zm9v");
    EXPECT_EQ(base64_encode("foob"), "Zm9vYg==");
    EXPECT_EQ(base64_encode("fooba"), "Zm9vYmE=");
    EXPECT_EQ(base64_encode("foobar"), "Zm9vYmFy");
    EXPECT_EQ(base64_encode("\xff\xfe\xfd"), "//79");
    EXPECT_EQ(base64_encode(std::string("\0\0", 2)), "AAA=");
}

TEST(RefreshRequest, ClientSecretBasic) {
    const auto r = build_refresh_request(AuthMethod::client_secret_basic, "client", "secret",
                                         "rt-1", std::nullopt);
    EXPECT_EQ(r.body, "grant_type=refresh_token&refresh_token=rt-1");
    // base64("client:secret")
    EXPECT_EQ(authorization(r), "Authorization: Basic Y2xpZW50OnNlY3JldA==");
    EXPECT_TRUE(has_header(r, "Content-Type: application/x-www-form-urlencoded"));
    EXPECT_TRUE(has_header(r, "Accept: application/json"));
    EXPECT_EQ(r.headers.size(), 3U);
}

TEST(RefreshRequest, BasicEncodesIdAndSecretFirst) {
    // RFC 6749 2.3.1: form-encode, then join with ':'. ':' -> %3A, '+' -> %2B, ' ' -> '+',
    // non-ASCII as UTF-8 percent-encoding.
    const auto r = build_refresh_request(AuthMethod::client_secret_basic, "my:app",
                                         "p+ss w\xc3\xb6rd", "rt", std::nullopt);
    EXPECT_EQ(authorization(r),
              "Authorization: Basic " + base64_encode("my%3Aapp:p%2Bss+w%C3%B6rd"));
    EXPECT_EQ(authorization(r), "Authorization: Basic bXklM0FhcHA6cCUyQnNzK3clQzMlQjZyZA==");
    EXPECT_EQ(r.body.find("client_secret"), std::string::npos);
    EXPECT_EQ(r.body.find("client_id"), std::string::npos);
}

TEST(RefreshRequest, ClientSecretPost) {
    const auto r = build_refresh_request(AuthMethod::client_secret_post, "my:app", "p+ss word",
                                         "r/t+1=", std::string_view("openid email"));
    EXPECT_EQ(r.body,
              "grant_type=refresh_token&refresh_token=r%2Ft%2B1%3D&scope=openid+email"
              "&client_id=my%3Aapp&client_secret=p%2Bss+word");
    EXPECT_EQ(authorization(r), "");
    EXPECT_TRUE(has_header(r, "Content-Type: application/x-www-form-urlencoded"));
    EXPECT_TRUE(has_header(r, "Accept: application/json"));
}

TEST(RefreshRequest, PublicClient) {
    const auto r =
        build_refresh_request(AuthMethod::none, "spa\xc3\xa9", std::nullopt, "rt", std::nullopt);
    EXPECT_EQ(r.body, "grant_type=refresh_token&refresh_token=rt&client_id=spa%C3%A9");
    EXPECT_EQ(authorization(r), "");
    // A secret given anyway is not sent for a public client.
    const auto r2 = build_refresh_request(AuthMethod::none, "spa", std::string_view("ignored"),
                                          "rt", std::nullopt);
    EXPECT_EQ(r2.body.find("ignored"), std::string::npos);
}

TEST(RefreshRequest, EmptyScopeIsOmitted) {
    const auto r =
        build_refresh_request(AuthMethod::none, "c", std::nullopt, "rt", std::string_view(""));
    EXPECT_EQ(r.body.find("scope"), std::string::npos);
}

TEST(RefreshRequest, MissingInputsAreErrors) {
    for (const AuthMethod m : {AuthMethod::client_secret_basic, AuthMethod::client_secret_post}) {
        EXPECT_THROW(build_refresh_request(m, "c", std::nullopt, "rt", std::nullopt), Error);
        EXPECT_THROW(build_refresh_request(m, "c", std::string_view(""), "rt", std::nullopt),
                     Error);
    }
    try {
        build_refresh_request(AuthMethod::client_secret_basic, "c", std::nullopt,
                              "rt-SECRET-9876543210", std::nullopt);
        FAIL();
    } catch (const Error& e) {
        EXPECT_EQ(e.code(), ErrorCode::invalid_parameter);
        EXPECT_EQ(std::string(e.what()).find("rt-SECRET"), std::string::npos);
    }
    EXPECT_THROW(build_refresh_request(AuthMethod::none, "", std::nullopt, "rt", std::nullopt),
                 Error);
    EXPECT_THROW(build_refresh_request(AuthMethod::none, "c", std::nullopt, "", std::nullopt),
                 Error);
}

TEST(RefreshRequest, NoHeaderInjection) {
    const auto r = build_refresh_request(AuthMethod::client_secret_basic, "c\r\nX-Evil: 1", "s\r\n",
                                         "rt\r\n", std::nullopt);
    for (const auto& h : r.headers) {
        EXPECT_EQ(h.find('\r'), std::string::npos);
        EXPECT_EQ(h.find('\n'), std::string::npos);
    }
    EXPECT_EQ(r.body.find('\n'), std::string::npos);
}

// Expects validate_endpoint to throw invalid_parameter without echoing the URL.
void expect_bad(const std::string& url, bool allow_http = false) {
    try {
        validate_endpoint(url, allow_http);
        ADD_FAILURE() << "accepted: " << url;
    } catch (const Error& e) {
        EXPECT_EQ(e.code(), ErrorCode::invalid_parameter) << url;
        if (url.size() > 12) {
            EXPECT_EQ(std::string(e.what()).find(url), std::string::npos) << e.what();
        }
    }
}

TEST(Endpoint, Accepted) {
    for (const char* url : {
             "https://idp.example.com/token",
             "https://idp.example.com",
             "https://idp.example.com/",
             "https://idp.example.com:8443/oauth2/v1/token?tenant=a%20b&x=1",
             "HTTPS://IDP.EXAMPLE.COM/token",
             "https://127.0.0.1:443/token",
             "https://[::1]:8443/token",
             "https://[2001:db8::1]/token",
             "https://login_host.internal/token",
             "https://idp.example.com?x=1",
         }) {
        EXPECT_NO_THROW(validate_endpoint(url, false)) << url;
    }
    EXPECT_NO_THROW(validate_endpoint("http://localhost:8080/token", true));
    EXPECT_NO_THROW(validate_endpoint("https://idp.example.com/token", true));
}

TEST(Endpoint, Rejected) {
    expect_bad("");
    expect_bad("http://localhost:8080/token");
    expect_bad("ftp://idp.example.com/token");
    expect_bad("file:///etc/passwd");
    expect_bad("idp.example.com/token");
    expect_bad("//idp.example.com/token");
    expect_bad("https://");
    expect_bad("https:///token");
    expect_bad("https://:443/token");
    expect_bad("https://?x=1");
    expect_bad("https://user:pass@idp.example.com/token");
    expect_bad("https://user@idp.example.com/token");
    expect_bad("https://idp.example.com/token#frag");
    expect_bad("https://idp.example.com/to ken");
    expect_bad("https://idp.example.com/token\n");
    expect_bad(" https://idp.example.com/token");
    expect_bad("https://idp.example.com/\ttoken");
    expect_bad(std::string("https://idp.example.com/\0", 25));
    expect_bad("https://idp.exa\xc3\xa9mple.com/token");
    expect_bad("https://idp.example.com:/token");
    expect_bad("https://idp.example.com:0/token");
    expect_bad("https://idp.example.com:65536/token");
    expect_bad("https://idp.example.com:80a/token");
    expect_bad("https://idp.example.com\\@evil.com/token");
    expect_bad("https://[::1/token");
    expect_bad("https://[]/token");
    expect_bad("https://[::1]x/token");
    expect_bad("https://idp.example.com/" + std::string(2048, 'a'));
    expect_bad("gopher://x", true);
}

TEST(Endpoint, LengthLimitIsInclusive) {
    const std::string prefix = "https://idp.example.com/";
    EXPECT_NO_THROW(validate_endpoint(prefix + std::string(2048 - prefix.size(), 'a'), false));
    expect_bad(prefix + std::string(2049 - prefix.size(), 'a'));
}

TEST(Endpoint, HttpOnlyWithPermission) {
    EXPECT_NO_THROW(validate_endpoint("HTTP://localhost/token", true));
    expect_bad("HTTP://localhost/token", false);
    expect_bad("http://user@localhost/token", true);
}

// RFC 7009: the token and its hint, with the same client authentication as a refresh.
TEST(RevocationRequest, CarriesTokenHintAndClientAuthentication) {
    ClientCredentials basic_client{
        AuthMethod::client_secret_basic, "id", std::string("s3cret"), {}, {}};
    const auto basic = build_revocation_request(basic_client, "https://idp/revoke", "rt 1+2",
                                                "refresh_token", kNow);
    EXPECT_EQ(basic.body, "token=rt+1%2B2&token_type_hint=refresh_token");
    EXPECT_FALSE(authorization(basic).empty());
    ClientCredentials post_client{
        AuthMethod::client_secret_post, "id", std::string("s3cret"), {}, {}};
    const auto post =
        build_revocation_request(post_client, "https://idp/revoke", "rt", "refresh_token", kNow);
    EXPECT_EQ(post.body,
              "token=rt&token_type_hint=refresh_token&client_id=id&client_secret=s3cret");
    ClientCredentials public_client{AuthMethod::none, "id", std::nullopt, {}, {}};
    EXPECT_THROW(
        build_revocation_request(public_client, "https://idp/revoke", "", "refresh_token", kNow),
        Error);
}

}  // namespace
}  // namespace upstream_token
