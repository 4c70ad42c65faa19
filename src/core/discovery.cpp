#include "core/discovery.hpp"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "core/error.hpp"

namespace upstream_token {

namespace {
// Whether `list` names `method`; an absent list means client_secret_basic only.
bool supports(const std::vector<std::string>& list, AuthMethod method) {
    if (list.empty()) return method == AuthMethod::client_secret_basic;
    return std::find(list.begin(), list.end(), auth_method_name(method)) != list.end();
}

// An optional string member; a member of another type is an error.
std::optional<std::string> string_member(const nlohmann::json& doc, const char* name) {
    auto it = doc.find(name);
    if (it == doc.end() || it->is_null()) return std::nullopt;
    if (!it->is_string()) {
        throw Error(ErrorCode::invalid_parameter,
                    std::string("provider metadata: ") + name + " is not a string");
    }
    return it->get<std::string>();
}
}  // namespace

std::vector<std::string> metadata_urls(std::string_view issuer, bool allow_http) {
    validate_endpoint(issuer, allow_http);
    if (issuer.find('?') != std::string_view::npos) {
        throw Error(ErrorCode::invalid_parameter, "an issuer URL has no query component");
    }
    std::string base(issuer);
    while (!base.empty() && base.back() == '/') base.pop_back();
    const std::size_t authority = base.find("://") + 3;
    const std::size_t path_at = base.find('/', authority);
    const std::string origin = base.substr(0, path_at);
    const std::string path = path_at == std::string::npos ? "" : base.substr(path_at);
    return {base + "/.well-known/openid-configuration",
            origin + "/.well-known/oauth-authorization-server" + path};
}

ProviderMetadata parse_metadata(std::string_view body, std::string_view expected_issuer,
                                bool allow_http) {
    const nlohmann::json doc = nlohmann::json::parse(body, nullptr, false);
    if (doc.is_discarded() || !doc.is_object()) {
        throw Error(ErrorCode::invalid_parameter, "provider metadata is not a JSON object");
    }
    ProviderMetadata m;
    m.issuer = string_member(doc, "issuer").value_or("");
    if (m.issuer != expected_issuer) {
        throw Error(ErrorCode::invalid_parameter,
                    "provider metadata names a different issuer than the one asked for",
                    "OpenID Connect Discovery 4.3 and RFC 8414 3.3 require them to be identical.");
    }
    auto token = string_member(doc, "token_endpoint");
    if (!token)
        throw Error(ErrorCode::invalid_parameter, "provider metadata has no token_endpoint");
    validate_endpoint(*token, allow_http);
    m.token_endpoint = *token;
    m.revocation_endpoint = string_member(doc, "revocation_endpoint");
    if (m.revocation_endpoint) validate_endpoint(*m.revocation_endpoint, allow_http);
    m.authorization_endpoint = string_member(doc, "authorization_endpoint");
    if (m.authorization_endpoint) validate_endpoint(*m.authorization_endpoint, allow_http);
    m.device_authorization_endpoint = string_member(doc, "device_authorization_endpoint");
    if (m.device_authorization_endpoint)
        validate_endpoint(*m.device_authorization_endpoint, allow_http);
    if (auto it = doc.find("token_endpoint_auth_methods_supported");
        it != doc.end() && it->is_array()) {
        for (const auto& v : *it) {
            if (v.is_string()) m.auth_methods.push_back(v.get<std::string>());
        }
    }
    return m;
}

AuthMethod choose_auth_method(const std::vector<std::string>& supported, bool has_secret) {
    const auto order = has_secret ? std::vector<AuthMethod>{AuthMethod::client_secret_basic,
                                                            AuthMethod::client_secret_post}
                                  : std::vector<AuthMethod>{AuthMethod::none};
    for (AuthMethod m : order) {
        if (supports(supported, m)) return m;
    }
    throw Error(ErrorCode::invalid_parameter,
                has_secret ? "the provider supports no client-secret authentication"
                           : "the provider does not accept public clients (auth method none)",
                {}, "Pass auth_method explicitly, or a client_secret.");
}

void require_supported(const std::vector<std::string>& supported, AuthMethod method) {
    if (!supports(supported, method)) {
        throw Error(
            ErrorCode::invalid_parameter,
            std::string("the provider does not support auth_method ") + auth_method_name(method));
    }
}

}  // namespace upstream_token
