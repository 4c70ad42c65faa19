// Provider metadata: the URLs tried, the issuer identity check, endpoint validation and the
// choice of client authentication.
#include "core/discovery.hpp"

#include <gtest/gtest.h>

#include "core/error.hpp"

namespace upstream_token {
namespace {

TEST(Discovery, MetadataUrlsForPlainAndPathIssuers) {
    EXPECT_EQ(
        metadata_urls("https://idp.example", false),
        (std::vector<std::string>{"https://idp.example/.well-known/openid-configuration",
                                  "https://idp.example/.well-known/oauth-authorization-server"}));
    EXPECT_EQ(metadata_urls("https://idp.example/tenant/", false),
              (std::vector<std::string>{
                  "https://idp.example/tenant/.well-known/openid-configuration",
                  "https://idp.example/.well-known/oauth-authorization-server/tenant"}));
    EXPECT_THROW(metadata_urls("http://idp.example", false), Error);
    EXPECT_NO_THROW(metadata_urls("http://127.0.0.1:8080", true));
    EXPECT_THROW(metadata_urls("https://idp.example/?x=1", false), Error);
}

TEST(Discovery, IssuerMustMatchExactly) {
    const std::string doc =
        R"({"issuer":"https://idp.example","token_endpoint":"https://idp.example/token",
            "revocation_endpoint":"https://idp.example/revoke",
            "token_endpoint_auth_methods_supported":["client_secret_post","private_key_jwt"]})";
    const ProviderMetadata m = parse_metadata(doc, "https://idp.example", false);
    EXPECT_EQ(m.token_endpoint, "https://idp.example/token");
    EXPECT_EQ(m.revocation_endpoint, "https://idp.example/revoke");
    EXPECT_EQ(m.auth_methods.size(), 2U);
    EXPECT_THROW(parse_metadata(doc, "https://idp.example/", false), Error);
    EXPECT_THROW(parse_metadata(doc, "https://evil.example", false), Error);
}

TEST(Discovery, RefusesBrokenDocuments) {
    EXPECT_THROW(parse_metadata("not json", "https://i", false), Error);
    EXPECT_THROW(parse_metadata(R"(["x"])", "https://i", false), Error);
    EXPECT_THROW(parse_metadata(R"({"issuer":"https://i"})", "https://i", false), Error);
    EXPECT_THROW(parse_metadata(R"({"issuer":"https://i","token_endpoint":"http://i/t"})",
                                "https://i", false),
                 Error);
    EXPECT_THROW(
        parse_metadata(R"({"issuer":"https://i","token_endpoint":42})", "https://i", false), Error);
}

TEST(Discovery, ChoosesAuthenticationTheProviderSupports) {
    EXPECT_EQ(choose_auth_method({}, true), AuthMethod::client_secret_basic);
    EXPECT_EQ(choose_auth_method({"client_secret_post"}, true), AuthMethod::client_secret_post);
    EXPECT_EQ(choose_auth_method({"none", "client_secret_basic"}, false), AuthMethod::none);
    EXPECT_THROW(choose_auth_method({}, false), Error);
    EXPECT_THROW(choose_auth_method({"private_key_jwt"}, true), Error);
    EXPECT_NO_THROW(require_supported({"private_key_jwt"}, AuthMethod::private_key_jwt));
    EXPECT_THROW(require_supported({"client_secret_post"}, AuthMethod::client_secret_basic), Error);
    EXPECT_NO_THROW(require_supported({}, AuthMethod::client_secret_basic));
}

}  // namespace
}  // namespace upstream_token
