#include "presets.hpp"

#include <algorithm>

#include <nlohmann/json.hpp>

#include "error.hpp"
#include "token_response.hpp"

namespace upstream_token {

namespace {

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
                ok = static_cast<unsigned char>(c) > 0x20 && c != 0x7f && !in(c, R"(?#\"<>{})");
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
            throw Error(
                ErrorCode::invalid_parameter,
                "preset \"" + std::string(preset.name) + "\" needs parameter \"" + name + "\"", {},
                R"(Pass it in preset_params, e.g. '{")" + name + R"(": "..."}'.)");
        }
        out.append(it->second);
        i = close + 1;
    }
    return out;
}

}  // namespace

const std::vector<Preset>& all_presets() {
    static const std::vector<Preset> presets = preset_table();
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
    for (const auto& [given_name, value] : given) {
        const std::string& name = given_name;  // a lambda cannot capture a structured binding
        const auto p = std::find_if(preset.params.begin(), preset.params.end(),
                                    [&](const PresetParam& x) { return x.name == name; });
        if (p == preset.params.end()) {
            std::string accepted;
            for (const PresetParam& x : preset.params) {
                accepted += accepted.empty() ? "" : ", ";
                accepted += x.name;
            }
            throw Error(
                ErrorCode::invalid_parameter,
                "preset \"" + std::string(preset.name) + "\" has no parameter \"" + name + "\"",
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
    if (!preset.authorization_endpoint.empty())
        r.authorization_endpoint = fill(preset.authorization_endpoint, values, preset);
    if (!preset.device_authorization_endpoint.empty()) {
        r.device_authorization_endpoint =
            fill(preset.device_authorization_endpoint, values, preset);
    }
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
        "grant_type",       "refresh_token",        "scope", "client_id", "client_secret",
        "client_assertion", "client_assertion_type"};
    return std::find(std::begin(kReserved), std::end(kReserved), name) != std::end(kReserved);
}

}  // namespace upstream_token
