#include "presets.hpp"

#include <algorithm>

#include <nlohmann/json.hpp>

#include "error.hpp"
#include "token_response.hpp"

namespace upstream_token {

namespace {

constexpr std::int64_t kDay = 24 * 3600;

// A preset's base_url parameter with its default origin.
PresetParam base(std::string_view default_origin) {
    return {"base_url", ParamKind::origin,
            "the provider's origin (a self-hosted server, a regional cloud, a gateway)",
            default_origin};
}

// The table itself; the values and their sources are listed in docs/providers.md.
std::vector<Preset> make_presets() {
    const AuthMethod basic = AuthMethod::client_secret_basic;
    const AuthMethod post = AuthMethod::client_secret_post;
    std::vector<Preset> v;
    v.push_back({"atlassian", "Atlassian (OAuth 2.0 3LO)", {base("https://auth.atlassian.com")},
                 "{base_url}/oauth/token", "", "", post, " ", {}, "always", 90 * kDay,
                 365 * kDay, std::nullopt, true,
                 {"invalid_grant_http_403", "offline_access_scope", "json_request_body_in_examples"},
                 "https://developer.atlassian.com/cloud/oauth/getting-started/refresh-tokens/"});
    v.push_back({"auth0", "Auth0", {{"domain", ParamKind::host, "the tenant's domain", ""},
                                    base("https://{domain}")},
                 "{base_url}/oauth/token", "{base_url}/oauth/revoke", "{base_url}/", post, " ", {},
                 "configurable", std::nullopt, std::nullopt, std::nullopt, false,
                 {"invalid_grant_http_403", "offline_access_scope", "reuse_revokes_family"},
                 "https://auth0.com/docs/secure/tokens/refresh-tokens/"
                 "configure-refresh-token-rotation"});
    v.push_back({"discord", "Discord", {base("https://discord.com")}, "{base_url}/api/oauth2/token",
                 "{base_url}/api/oauth2/token/revoke", "", basic, " ", {}, "not documented",
                 std::nullopt, std::nullopt, std::nullopt, false,
                 {"form_only_request_body", "revoke_ends_authorization"},
                 "https://discord.com/developers/docs/topics/oauth2"});
    v.push_back({"dropbox", "Dropbox", {base("https://api.dropboxapi.com")},
                 "{base_url}/oauth2/token", "", "", post, " ", {}, "not documented", std::nullopt,
                 std::nullopt, std::nullopt, false, {"token_access_type_offline"},
                 "https://developers.dropbox.com/oauth-guide"});
    v.push_back({"entra", "Microsoft Entra ID (v2 endpoints)",
                 {{"tenant", ParamKind::segment,
                   "directory (tenant) id or domain, or common / organizations / consumers", ""},
                  base("https://login.microsoftonline.com")},
                 "{base_url}/{tenant}/oauth2/v2.0/token", "", "{base_url}/{tenant}/v2.0", post, " ",
                 {}, "always", 90 * kDay, std::nullopt, std::nullopt, true,
                 {"offline_access_scope", "interaction_required_at_token_endpoint",
                  "error_codes_array"},
                 "https://learn.microsoft.com/en-us/entra/identity-platform/refresh-tokens"});
    v.push_back({"github", "GitHub (OAuth app)", {base("https://github.com")},
                 "{base_url}/login/oauth/access_token", "", "", post, " ", {},
                 "no refresh token", std::nullopt, std::nullopt, std::nullopt, false,
                 {"form_encoded_unless_accept_json", "scope_comma_in_response",
                  "error_in_200_body"},
                 "https://docs.github.com/en/apps/oauth-apps/building-oauth-apps/"
                 "authorizing-oauth-apps"});
    v.push_back({"github_app", "GitHub App (user access tokens)", {base("https://github.com")},
                 "{base_url}/login/oauth/access_token", "", "", post, " ", {}, "always",
                 std::nullopt, 15811200, std::nullopt, false,
                 {"refresh_token_expires_in", "expires_in_string_possible", "bad_refresh_token",
                  "error_in_200_body"},
                 "https://docs.github.com/en/apps/creating-github-apps/"
                 "authenticating-with-a-github-app/refreshing-user-access-tokens"});
    v.push_back({"gitlab", "GitLab (gitlab.com or self-managed)",
                 {base("https://gitlab.com"),
                  {"redirect_uri", ParamKind::value,
                   "the redirect URI of the login, sent again on refresh as GitLab's examples do",
                   ""}},
                 "{base_url}/oauth/token", "{base_url}/oauth/revoke", "{base_url}", post, " ",
                 {"redirect_uri"}, "always", std::nullopt, std::nullopt, std::nullopt, false,
                 {"created_at", "redirect_uri_on_refresh"}, "https://docs.gitlab.com/api/oauth2/"});
    v.push_back({"google", "Google", {base("https://oauth2.googleapis.com")}, "{base_url}/token",
                 "{base_url}/revoke", "https://accounts.google.com", post, " ", {}, "never",
                 183 * kDay, std::nullopt, std::nullopt, true,
                 {"offline_access_type_and_consent_prompt", "refresh_token_only_on_first_consent"},
                 "https://developers.google.com/identity/protocols/oauth2#expiration"});
    v.push_back({"hubspot", "HubSpot (v1 OAuth API)", {base("https://api.hubapi.com")},
                 "{base_url}/oauth/v1/token", "", "", post, " ", {}, "not documented",
                 std::nullopt, std::nullopt, std::nullopt, false,
                 {"non_oauth_error_shape", "v1_deprecated_2027"},
                 "https://developers.hubspot.com/docs/api-reference/legacy/authentication/"
                 "oauth-tokens/v1/guide"});
    v.push_back({"keycloak", "Keycloak",
                 {base(""), {"realm", ParamKind::segment, "the realm's name", ""}},
                 "{base_url}/realms/{realm}/protocol/openid-connect/token",
                 "{base_url}/realms/{realm}/protocol/openid-connect/revoke",
                 "{base_url}/realms/{realm}", basic, " ", {}, "configurable", 1800, 36000,
                 std::nullopt, true, {"refresh_expires_in", "refresh_expires_in_zero_offline"},
                 "https://www.keycloak.org/securing-apps/oidc-layers"});
    v.push_back({"linear", "Linear", {base("https://api.linear.app")}, "{base_url}/oauth/token",
                 "", "", post, ",", {}, "not documented", std::nullopt, std::nullopt,
                 std::nullopt, false, {"scope_comma"},
                 "https://linear.app/developers/oauth-2-0-authentication"});
    v.push_back({"notion", "Notion", {base("https://api.notion.com")}, "{base_url}/v1/oauth/token",
                 "", "", basic, " ", {}, "always", std::nullopt, std::nullopt, std::nullopt, false,
                 {"expires_in_absent", "json_request_body_in_examples", "extra_workspace_fields"},
                 "https://developers.notion.com/reference/refresh-a-token",
                 {"workspace_id", "workspace_name", "bot_id"}});
    v.push_back({"okta", "Okta (org authorization server)",
                 {{"domain", ParamKind::host, "the Okta org's domain", ""},
                  base("https://{domain}")},
                 "{base_url}/oauth2/v1/token", "{base_url}/oauth2/v1/revoke", "{base_url}", basic,
                 " ", {}, "configurable", 7 * kDay, std::nullopt, std::nullopt, true,
                 {"offline_access_scope", "reuse_detection", "rotated_refresh_token_keeps_expiry"},
                 "https://developer.okta.com/docs/guides/refresh-tokens/main/"});
    v.push_back({"okta_custom", "Okta (custom authorization server)",
                 {{"domain", ParamKind::host, "the Okta org's domain", ""},
                  {"authorization_server_id", ParamKind::segment,
                   "the authorization server's id (default for the default one)", "default"},
                  base("https://{domain}")},
                 "{base_url}/oauth2/{authorization_server_id}/v1/token",
                 "{base_url}/oauth2/{authorization_server_id}/v1/revoke",
                 "{base_url}/oauth2/{authorization_server_id}", basic, " ", {}, "configurable",
                 7 * kDay, std::nullopt, std::nullopt, true,
                 {"offline_access_scope", "reuse_detection", "rotated_refresh_token_keeps_expiry"},
                 "https://developer.okta.com/docs/concepts/auth-servers/"});
    v.push_back({"salesforce", "Salesforce",
                 {{"host", ParamKind::host,
                   "login.salesforce.com, test.salesforce.com or a My Domain host",
                   "login.salesforce.com"},
                  base("https://{host}")},
                 "{base_url}/services/oauth2/token", "{base_url}/services/oauth2/revoke", "", post,
                 " ", {}, "configurable", std::nullopt, std::nullopt, 900, false,
                 {"expires_in_absent", "issued_at_ms_string", "instance_url"},
                 "https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_refresh_token_"
                 "flow.htm",
                 {"instance_url", "id"}});
    v.push_back({"slack", "Slack (v2 OAuth, token rotation on)", {base("https://slack.com")},
                 "{base_url}/api/oauth.v2.access", "", "", basic, ",", {}, "always", std::nullopt,
                 std::nullopt, std::nullopt, false,
                 {"ok_false_error_in_200_body", "scope_comma", "nested_authed_user_at_login"},
                 "https://docs.slack.dev/authentication/using-token-rotation"});
    v.push_back({"zoom", "Zoom", {base("https://zoom.us")}, "{base_url}/oauth/token", "", "",
                 basic, " ", {}, "always", std::nullopt, std::nullopt, std::nullopt, false,
                 {"reuse_answer_not_documented"},
                 "https://developers.zoom.us/docs/integrations/oauth/"});
    return v;
}

bool in(char c, std::string_view set) {
    return set.find(c) != std::string_view::npos;
}

// Refuses a value that could change the shape of the URL it is put into.
void check_value(const PresetParam& p, const std::string& value) {
    static constexpr std::string_view kAlnum =
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    bool ok = !value.empty() && value.size() <= 2048;
    for (char c : value) {
        if (!ok) break;
        switch (p.kind) {
            case ParamKind::origin:
                ok = static_cast<unsigned char>(c) > 0x20 && c != 0x7f && !in(c, "?#\\\"<>{}");
                break;
            case ParamKind::host:
                ok = in(c, kAlnum) || in(c, ".-:[]");
                break;
            case ParamKind::segment:
                ok = in(c, kAlnum) || in(c, "._~-");
                break;
            case ParamKind::value:
                ok = static_cast<unsigned char>(c) > 0x20 && c != 0x7f;
                break;
        }
    }
    if (p.kind == ParamKind::segment && (value == "." || value == "..")) ok = false;
    if (p.kind == ParamKind::origin && value.rfind("https://", 0) != 0 &&
        value.rfind("http://", 0) != 0) {
        ok = false;
    }
    if (!ok) {
        throw Error(ErrorCode::invalid_parameter,
                    "preset parameter \"" + std::string(p.name) + "\" has an invalid value",
                    "It is " + std::string(p.meaning) + ".",
                    p.kind == ParamKind::origin
                        ? "Give an origin such as https://host[:port][/path], without a query."
                        : "");
    }
}

// Replaces every {name} in `text` from `values`; Error naming the first missing parameter.
std::string fill(std::string_view text, const std::map<std::string, std::string>& values,
                 const Preset& preset) {
    std::string out;
    for (std::size_t i = 0; i < text.size();) {
        const std::size_t open = text.find('{', i);
        if (open == std::string_view::npos) {
            out.append(text.substr(i));
            break;
        }
        const std::size_t close = text.find('}', open);
        out.append(text.substr(i, open - i));
        const std::string name(text.substr(open + 1, close - open - 1));
        const auto it = values.find(name);
        if (it == values.end()) {
            throw Error(ErrorCode::invalid_parameter,
                        "preset \"" + std::string(preset.name) + "\" needs parameter \"" + name +
                            "\"",
                        {}, "Pass it in preset_params, e.g. '{\"" + name + "\": \"...\"}'.");
        }
        out.append(it->second);
        i = close + 1;
    }
    return out;
}

}  // namespace

const std::vector<Preset>& all_presets() {
    static const std::vector<Preset> presets = make_presets();
    return presets;
}

const Preset& find_preset(std::string_view name) {
    std::string names;
    for (const Preset& p : all_presets()) {
        if (p.name == name) return p;
        names += names.empty() ? "" : ", ";
        names += p.name;
    }
    throw Error(ErrorCode::invalid_parameter, "unknown preset \"" + std::string(name) + "\"",
                "Known presets: " + names + ".", "SELECT * FROM upstream_token.provider_presets");
}

ResolvedPreset resolve_preset(const Preset& preset,
                              const std::map<std::string, std::string>& given) {
    std::map<std::string, std::string> values;
    for (const auto& [name, value] : given) {
        const auto p = std::find_if(preset.params.begin(), preset.params.end(),
                                    [&](const PresetParam& x) { return x.name == name; });
        if (p == preset.params.end()) {
            std::string accepted;
            for (const PresetParam& x : preset.params) {
                accepted += accepted.empty() ? "" : ", ";
                accepted += x.name;
            }
            throw Error(ErrorCode::invalid_parameter,
                        "preset \"" + std::string(preset.name) + "\" has no parameter \"" + name +
                            "\"",
                        "Its parameters: " + accepted + ".");
        }
        check_value(*p, value);
        values[name] = p->kind == ParamKind::origin && value.back() == '/'
                           ? value.substr(0, value.find_last_not_of('/') + 1)
                           : value;
    }
    // Defaults in declaration order: base_url's default may name an earlier parameter.
    for (const PresetParam& p : preset.params) {
        if (values.count(std::string(p.name)) == 0 && !p.default_value.empty()) {
            values[std::string(p.name)] = fill(p.default_value, values, preset);
        }
    }
    ResolvedPreset r;
    r.token_endpoint = fill(preset.token_endpoint, values, preset);
    if (!preset.revocation_endpoint.empty())
        r.revocation_endpoint = fill(preset.revocation_endpoint, values, preset);
    if (!preset.issuer.empty()) r.issuer = fill(preset.issuer, values, preset);
    r.auth_method = preset.auth_method;
    for (std::string_view name : preset.refresh_params) {
        const auto it = values.find(std::string(name));
        if (it != values.end()) r.refresh_params[it->first] = it->second;
    }
    r.response_fields.assign(preset.response_fields.begin(), preset.response_fields.end());
    r.refresh_token_idle_s = preset.refresh_token_idle_s;
    r.refresh_token_ttl_s = preset.refresh_token_ttl_s;
    r.default_lifetime_s = preset.default_lifetime_s;
    r.keep_alive = preset.keep_alive;
    return r;
}

std::map<std::string, std::string> string_map_from_json(std::string_view json,
                                                        std::string_view what) {
    const auto bad = [&] {
        return Error(ErrorCode::invalid_parameter,
                     std::string(what) + " must be a JSON object of string values");
    };
    const nlohmann::json v = nlohmann::json::parse(json, nullptr, false);
    if (!v.is_object()) throw bad();
    std::map<std::string, std::string> out;
    for (const auto& [name, value] : v.items()) {
        if (!value.is_string()) throw bad();
        out[name] = value.get<std::string>();
    }
    return out;
}

std::vector<std::string> string_list_from_json(std::string_view json, std::string_view what) {
    const nlohmann::json v = nlohmann::json::parse(json, nullptr, false);
    std::vector<std::string> out;
    if (v.is_array()) {
        for (const auto& item : v) {
            if (!item.is_string()) break;
            out.push_back(item.get<std::string>());
        }
        if (out.size() == v.size()) return out;
    }
    throw Error(ErrorCode::invalid_parameter, std::string(what) + " must be a list of strings");
}

void check_response_field(std::string_view name) {
    static constexpr std::string_view kAllowed =
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-";
    const bool ok = !name.empty() && name.size() <= 64 &&
                    name.find_first_not_of(kAllowed) == std::string_view::npos;
    if (!ok || is_token_field(name)) {
        throw Error(ErrorCode::invalid_parameter,
                    "response_fields cannot keep \"" + std::string(ok ? name : "") + "\"",
                    "A kept field is named by 1 to 64 of A-Z a-z 0-9 _ . - and is not one of "
                    "the token fields (access_token, refresh_token, id_token, token_type, scope, "
                    "expires_in, refresh_expires_in, refresh_token_expires_in).");
    }
}

std::string json_from_string_map(const std::map<std::string, std::string>& map) {
    nlohmann::json v = nlohmann::json::object();
    for (const auto& [name, value] : map) v[name] = value;
    return v.dump();
}

bool reserved_refresh_param(std::string_view name) {
    static constexpr std::string_view kReserved[] = {
        "grant_type", "refresh_token", "scope", "client_id", "client_secret",
        "client_assertion", "client_assertion_type"};
    return std::find(std::begin(kReserved), std::end(kReserved), name) != std::end(kReserved);
}

}  // namespace upstream_token
