// Provider presets: what register_provider(..., preset => ...) fills in for a known provider
// (endpoints, client authentication, refresh parameters, refresh-token lifetimes), from each
// provider's own documentation (docs/providers.md cites the source of every value).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "refresh_request.hpp"

namespace upstream_token {

// What a parameter's value may be: each kind keeps the URLs it goes into well formed.
enum class ParamKind {
    origin,   // base_url: scheme://host[:port][/path], no query or fragment
    host,     // host[:port]
    segment,  // one path segment: letters, digits, . _ ~ -
    value,    // a form value sent as is (a redirect URI)
};

// One parameter a preset's URLs are built from (a tenant, a realm, a host...).
struct PresetParam {
    std::string_view name;
    ParamKind kind = ParamKind::segment;
    std::string_view meaning;
    std::string_view default_value;  // empty: none (required where a URL names it)
};

// A known provider. URL templates name parameters in braces; every preset takes `base_url`
// (the provider's origin, for a self-hosted server, a gateway or a test double). A template
// without `{base_url}` is a URL on another origin of the provider (Google's accounts.google.com
// sign-in page): base_url does not move it.
struct Preset {
    std::string_view name;
    std::string_view title;
    std::vector<PresetParam> params;                 // base_url first
    std::string_view token_endpoint;                 // template
    std::string_view revocation_endpoint;            // template; empty: no RFC 7009 endpoint
    std::string_view issuer;                         // template; empty: no OpenID issuer
    std::string_view authorization_endpoint;         // template; begin_login sends the browser here
    std::string_view device_authorization_endpoint;  // template; empty: no RFC 8628 endpoint
    AuthMethod auth_method = AuthMethod::client_secret_post;
    std::string_view scope_separator = " ";        // how the provider joins scopes
    std::vector<std::string_view> refresh_params;  // parameters also sent on every refresh
    std::string_view rotation;                     // always, never, configurable, not documented...
    std::optional<std::int64_t> refresh_token_idle_s;  // dies unused for this long
    std::optional<std::int64_t> refresh_token_ttl_s;   // dies this long after sign-in
    std::optional<std::int64_t> default_lifetime_s;  // access token life when expires_in is absent
    bool keep_alive = false;  // refresh unused sessions before their refresh token idles out
    std::vector<std::string_view> quirks;
    std::string_view documentation;                 // the provider's page the values were read from
    std::vector<std::string_view> response_fields;  // answer fields kept with the token
};

// Every preset, in name order.
const std::vector<Preset>& all_presets();

// Builds the table all_presets() keeps (presets_table.cpp).
std::vector<Preset> preset_table();

// The preset named `name`; Error(invalid_parameter) listing the names otherwise.
const Preset& find_preset(std::string_view name);

// What a preset gives a provider once its parameters are filled in.
struct ResolvedPreset {
    std::string token_endpoint;
    std::optional<std::string> revocation_endpoint;
    std::optional<std::string> issuer;
    std::optional<std::string> authorization_endpoint;         // begin_login
    std::optional<std::string> device_authorization_endpoint;  // begin_device_login (RFC 8628)
    AuthMethod auth_method = AuthMethod::client_secret_post;
    std::map<std::string, std::string> refresh_params;
    std::vector<std::string> response_fields;
    std::optional<std::int64_t> refresh_token_idle_s, refresh_token_ttl_s, default_lifetime_s;
    bool keep_alive = false;
};

// Fills a preset's templates from `given` (parameter name -> value). Error(invalid_parameter)
// for an unknown parameter, a missing one, or a value that could change a URL's shape (a
// slash in a tenant, a query in base_url...).
ResolvedPreset resolve_preset(const Preset& preset,
                              const std::map<std::string, std::string>& given);

// A JSON object of string values (preset_params, refresh_params) as a map;
// Error(invalid_parameter) naming `what` for anything else.
std::map<std::string, std::string> string_map_from_json(std::string_view json,
                                                        std::string_view what);

// A JSON array of strings as a vector; Error(invalid_parameter) naming `what` otherwise.
std::vector<std::string> string_list_from_json(std::string_view json, std::string_view what);

// Refuses a response field name a provider row cannot keep: empty, long, odd characters, or
// one of the token fields (a secret, or read by the engine itself).
void check_response_field(std::string_view name);

// The map as a JSON object (what the provider row stores).
std::string json_from_string_map(const std::map<std::string, std::string>& map);

// Refresh parameters the engine sets itself and that nobody may override.
bool reserved_refresh_param(std::string_view name);

}  // namespace upstream_token
