// Presets: every template fills from its parameters, defaults apply, and no parameter value can
// change the shape of a URL it goes into.
#include <gtest/gtest.h>

#include <set>
#include <string>

#include "core/error.hpp"
#include "core/presets.hpp"
#include "core/refresh_request.hpp"
#include "core/token_response.hpp"

namespace ut = upstream_token;
using Params = std::map<std::string, std::string>;

namespace {
// The code of the Error `fn` throws (internal when it throws nothing).
template <typename F>
ut::ErrorCode code_of(F fn) {
    try {
        fn();
    } catch (const ut::Error& e) {
        return e.code();
    }
    return ut::ErrorCode::internal;
}
}  // namespace

TEST(Presets, TheIssueListIsCoveredAndNamesAreUniqueAndSorted) {
    std::set<std::string> names;
    std::string previous;
    for (const ut::Preset& p : ut::all_presets()) {
        EXPECT_TRUE(names.insert(std::string(p.name)).second) << p.name;
        EXPECT_LT(previous, std::string(p.name));
        previous = std::string(p.name);
        EXPECT_FALSE(p.documentation.empty()) << p.name;
        EXPECT_EQ(p.documentation.rfind("https://", 0), 0U) << p.name;
        EXPECT_FALSE(p.rotation.empty()) << p.name;
        bool has_base = false;
        for (const ut::PresetParam& x : p.params) has_base |= x.name == "base_url";
        EXPECT_TRUE(has_base) << p.name << " takes base_url";
    }
    for (const char* n : {"github", "github_app", "google", "entra", "okta", "okta_custom", "auth0",
                          "keycloak", "gitlab", "slack", "salesforce", "atlassian", "dropbox",
                          "zoom", "hubspot", "notion", "linear", "discord"}) {
        EXPECT_EQ(names.count(n), 1U) << n;
    }
}

TEST(Presets, EveryPresetResolvesToValidEndpointsWithItsRequiredParameters) {
    for (const ut::Preset& p : ut::all_presets()) {
        Params given;
        for (const ut::PresetParam& x : p.params) {
            if (!x.default_value.empty() || x.kind == ut::ParamKind::value) continue;
            given[std::string(x.name)] = x.kind == ut::ParamKind::origin ? "https://idp.example"
                                         : x.kind == ut::ParamKind::host ? "tenant.example.com"
                                                                         : "t1";
        }
        const ut::ResolvedPreset r = ut::resolve_preset(p, given);
        EXPECT_NO_THROW(ut::validate_endpoint(r.token_endpoint, false)) << p.name;
        if (r.revocation_endpoint) {
            EXPECT_NO_THROW(ut::validate_endpoint(*r.revocation_endpoint, false)) << p.name;
        }
        EXPECT_EQ(r.token_endpoint.find('{'), std::string::npos) << r.token_endpoint;
        EXPECT_EQ(r.auth_method, p.auth_method);
        // Every provider here documents a browser sign-in page; begin_login needs it.
        ASSERT_TRUE(r.authorization_endpoint.has_value()) << p.name;
        EXPECT_NO_THROW(ut::validate_endpoint(*r.authorization_endpoint, false)) << p.name;
        EXPECT_EQ(r.authorization_endpoint->find('{'), std::string::npos) << p.name;
        EXPECT_EQ(r.device_authorization_endpoint.has_value(),
                  !p.device_authorization_endpoint.empty())
            << p.name;
        if (r.device_authorization_endpoint) {
            EXPECT_NO_THROW(ut::validate_endpoint(*r.device_authorization_endpoint, false))
                << p.name;
            EXPECT_EQ(r.device_authorization_endpoint->find('{'), std::string::npos) << p.name;
        }
    }
}

TEST(Presets, LoginEndpointsFillFromBaseUrlAndParameters) {
    // A tenant parameter goes into both, at the provider's default origin.
    auto r = ut::resolve_preset(ut::find_preset("entra"), {{"tenant", "contoso.onmicrosoft.com"}});
    EXPECT_EQ(*r.authorization_endpoint,
              "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/authorize");
    EXPECT_EQ(*r.device_authorization_endpoint,
              "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/devicecode");
    // base_url replaces the origin (a sovereign cloud), the tenant stays.
    r = ut::resolve_preset(
        ut::find_preset("entra"),
        {{"tenant", "organizations"}, {"base_url", "https://login.microsoftonline.us/"}});
    EXPECT_EQ(*r.authorization_endpoint,
              "https://login.microsoftonline.us/organizations/oauth2/v2.0/authorize");
    EXPECT_EQ(*r.device_authorization_endpoint,
              "https://login.microsoftonline.us/organizations/oauth2/v2.0/devicecode");

    r = ut::resolve_preset(ut::find_preset("github"), {});
    EXPECT_EQ(*r.authorization_endpoint, "https://github.com/login/oauth/authorize");
    EXPECT_EQ(*r.device_authorization_endpoint, "https://github.com/login/device/code");
    r = ut::resolve_preset(ut::find_preset("github_app"), {{"base_url", "https://ghe.corp:8443/"}});
    EXPECT_EQ(*r.authorization_endpoint, "https://ghe.corp:8443/login/oauth/authorize");
    EXPECT_EQ(*r.device_authorization_endpoint, "https://ghe.corp:8443/login/device/code");

    r = ut::resolve_preset(ut::find_preset("keycloak"),
                           {{"base_url", "https://sso.example/auth"}, {"realm", "staff"}});
    EXPECT_EQ(*r.authorization_endpoint,
              "https://sso.example/auth/realms/staff/protocol/openid-connect/auth");
    EXPECT_EQ(*r.device_authorization_endpoint,
              "https://sso.example/auth/realms/staff/protocol/openid-connect/auth/device");

    r = ut::resolve_preset(ut::find_preset("okta"), {{"domain", "acme.okta.com"}});
    EXPECT_EQ(*r.authorization_endpoint, "https://acme.okta.com/oauth2/v1/authorize");
    EXPECT_EQ(*r.device_authorization_endpoint, "https://acme.okta.com/oauth2/v1/device/authorize");
    r = ut::resolve_preset(ut::find_preset("okta_custom"),
                           {{"domain", "acme.okta.com"}, {"authorization_server_id", "aus1x"}});
    EXPECT_EQ(*r.authorization_endpoint, "https://acme.okta.com/oauth2/aus1x/v1/authorize");
    EXPECT_EQ(*r.device_authorization_endpoint,
              "https://acme.okta.com/oauth2/aus1x/v1/device/authorize");

    r = ut::resolve_preset(ut::find_preset("auth0"), {{"domain", "tenant.eu.auth0.com"}});
    EXPECT_EQ(*r.authorization_endpoint, "https://tenant.eu.auth0.com/authorize");
    EXPECT_EQ(*r.device_authorization_endpoint, "https://tenant.eu.auth0.com/oauth/device/code");

    r = ut::resolve_preset(ut::find_preset("gitlab"), {{"base_url", "https://git.corp"}});
    EXPECT_EQ(*r.authorization_endpoint, "https://git.corp/oauth/authorize");
    EXPECT_EQ(*r.device_authorization_endpoint, "https://git.corp/oauth/authorize_device");

    r = ut::resolve_preset(ut::find_preset("salesforce"), {{"host", "acme.my.salesforce.com"}});
    EXPECT_EQ(*r.authorization_endpoint,
              "https://acme.my.salesforce.com/services/oauth2/authorize");
    EXPECT_FALSE(r.device_authorization_endpoint.has_value()) << "its device flow is not RFC 8628";

    // Google's sign-in page is on accounts.google.com, not on the API origin base_url names:
    // base_url moves the device endpoint only.
    r = ut::resolve_preset(ut::find_preset("google"), {});
    EXPECT_EQ(*r.authorization_endpoint, "https://accounts.google.com/o/oauth2/v2/auth");
    EXPECT_EQ(*r.device_authorization_endpoint, "https://oauth2.googleapis.com/device/code");
    r = ut::resolve_preset(ut::find_preset("google"), {{"base_url", "https://127.0.0.1:4443"}});
    EXPECT_EQ(*r.authorization_endpoint, "https://accounts.google.com/o/oauth2/v2/auth");
    EXPECT_EQ(*r.device_authorization_endpoint, "https://127.0.0.1:4443/device/code");

    // No RFC 8628 endpoint documented: none is made up.
    for (const char* name : {"atlassian", "dropbox", "hubspot", "linear", "notion", "slack"}) {
        r = ut::resolve_preset(ut::find_preset(name), {});
        EXPECT_TRUE(r.authorization_endpoint.has_value()) << name;
        EXPECT_FALSE(r.device_authorization_endpoint.has_value()) << name;
    }
}

TEST(Presets, TemplatesFillFromParametersAndDefaults) {
    auto r = ut::resolve_preset(ut::find_preset("entra"), {{"tenant", "contoso.onmicrosoft.com"}});
    EXPECT_EQ(r.token_endpoint,
              "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token");
    EXPECT_EQ(*r.issuer, "https://login.microsoftonline.com/contoso.onmicrosoft.com/v2.0");
    EXPECT_EQ(r.refresh_token_idle_s, 90 * 24 * 3600);
    EXPECT_TRUE(r.keep_alive);

    r = ut::resolve_preset(ut::find_preset("okta_custom"), {{"domain", "acme.okta.com"}});
    EXPECT_EQ(r.token_endpoint, "https://acme.okta.com/oauth2/default/v1/token");
    EXPECT_EQ(*r.revocation_endpoint, "https://acme.okta.com/oauth2/default/v1/revoke");
    EXPECT_EQ(r.auth_method, ut::AuthMethod::client_secret_basic);

    r = ut::resolve_preset(ut::find_preset("salesforce"), {});
    EXPECT_EQ(r.token_endpoint, "https://login.salesforce.com/services/oauth2/token");
    EXPECT_EQ(r.default_lifetime_s, 900);
    EXPECT_EQ(r.response_fields, (std::vector<std::string>{"instance_url", "id"}));
    for (const ut::Preset& p : ut::all_presets()) {
        for (std::string_view f : p.response_fields) EXPECT_FALSE(ut::is_token_field(f)) << f;
    }

    // base_url replaces the origin (a gateway, GitHub Enterprise Server, a test double); a
    // trailing slash is dropped.
    r = ut::resolve_preset(ut::find_preset("github"), {{"base_url", "https://ghe.corp:8443/"}});
    EXPECT_EQ(r.token_endpoint, "https://ghe.corp:8443/login/oauth/access_token");
    EXPECT_FALSE(r.revocation_endpoint.has_value());
    r = ut::resolve_preset(ut::find_preset("auth0"), {{"base_url", "https://127.0.0.1:4443"}});
    EXPECT_EQ(*r.issuer, "https://127.0.0.1:4443/");

    r = ut::resolve_preset(ut::find_preset("keycloak"),
                           {{"base_url", "https://sso.example/auth"}, {"realm", "staff"}});
    EXPECT_EQ(r.token_endpoint,
              "https://sso.example/auth/realms/staff/protocol/openid-connect/token");
    EXPECT_EQ(r.refresh_token_idle_s, 1800);
    EXPECT_EQ(r.refresh_token_ttl_s, 36000);
}

TEST(Presets, GitlabSendsTheRedirectUriOnRefreshOnlyWhenGiven) {
    const ut::Preset& g = ut::find_preset("gitlab");
    EXPECT_TRUE(ut::resolve_preset(g, {}).refresh_params.empty());
    const auto r = ut::resolve_preset(g, {{"redirect_uri", "https://app.example/cb?x=1"}});
    ASSERT_EQ(r.refresh_params.size(), 1U);
    EXPECT_EQ(r.refresh_params.at("redirect_uri"), "https://app.example/cb?x=1");
}

TEST(Presets, BadNamesParametersAndValuesAreInvalidParameter) {
    const auto bad = ut::ErrorCode::invalid_parameter;
    EXPECT_EQ(code_of([] { ut::find_preset("gihtub"); }), bad);
    try {
        ut::find_preset("nope");
    } catch (const ut::Error& e) {
        EXPECT_NE(e.detail().find("github_app"), std::string::npos) << "the detail lists them";
    }
    const ut::Preset& entra = ut::find_preset("entra");
    EXPECT_EQ(code_of([&] { ut::resolve_preset(entra, {}); }), bad) << "tenant is required";
    EXPECT_EQ(code_of([&] { ut::resolve_preset(entra, {{"realm", "x"}, {"tenant", "t"}}); }), bad);
    for (const char* tenant : {"a/b", "..", ".", "t?x=1", "t#f", "t%2F", "a b", ""}) {
        EXPECT_EQ(code_of([&] { ut::resolve_preset(entra, {{"tenant", tenant}}); }), bad) << tenant;
    }
    const ut::Preset& okta = ut::find_preset("okta");
    for (const char* domain : {"evil.com/x", "user@evil.com", "a.b?c", "a b"}) {
        EXPECT_EQ(code_of([&] { ut::resolve_preset(okta, {{"domain", domain}}); }), bad) << domain;
    }
    const ut::Preset& kc = ut::find_preset("keycloak");
    EXPECT_EQ(code_of([&] { ut::resolve_preset(kc, {{"realm", "r"}}); }), bad) << "base_url needed";
    for (const char* origin :
         {"ftp://x", "https://x?q=1", "https://x#f", "x.example", "https://a b"}) {
        EXPECT_EQ(code_of([&] {
                      ut::resolve_preset(kc, {{"realm", "r"}, {"base_url", origin}});
                  }),
                  bad)
            << origin;
    }
}

TEST(Presets, ReservedRefreshParameters) {
    for (const char* n : {"grant_type", "refresh_token", "scope", "client_id", "client_secret",
                          "client_assertion", "client_assertion_type"}) {
        EXPECT_TRUE(ut::reserved_refresh_param(n)) << n;
    }
    EXPECT_FALSE(ut::reserved_refresh_param("redirect_uri"));
}

TEST(Presets, RefreshRequestCarriesExtraParametersFormEncoded) {
    ut::ClientCredentials c;
    c.method = ut::AuthMethod::client_secret_post;
    c.client_id = "app";
    c.secret = "s";
    const auto r = ut::build_refresh_request(c, "https://idp.example/token", "rt", std::nullopt,
                                             ut::Time{}, {{"redirect_uri", "https://a/cb?x=1&y"}});
    EXPECT_NE(r.body.find("&redirect_uri=https%3A%2F%2Fa%2Fcb%3Fx%3D1%26y"), std::string::npos)
        << r.body;
}
