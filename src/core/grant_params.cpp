#include "core/grant_params.hpp"

#include <nlohmann/json.hpp>

#include "core/crypto.hpp"
#include "core/error.hpp"

namespace upstream_token {

namespace {
constexpr char kDerivedMark = '\x01';

// Appends a field as a presence byte, its 4-byte big-endian length and its bytes.
void append_field(std::string& out, const std::optional<std::string>& field) {
    out.push_back(field ? '\1' : '\0');
    const auto n = static_cast<std::uint32_t>(field ? field->size() : 0);
    for (int shift = 24; shift >= 0; shift -= 8) {
        out.push_back(static_cast<char>((n >> static_cast<unsigned>(shift)) & 0xFFU));
    }
    if (field) out.append(*field);
}

// An optional JSON string member.
std::optional<std::string> opt_member(const nlohmann::json& j, const char* name) {
    const auto it = j.find(name);
    if (it == j.end() || !it->is_string()) return std::nullopt;
    return it->get<std::string>();
}
}  // namespace

const char* grant_name(Grant g) {
    return g == Grant::client_credentials ? "client_credentials" : "token_exchange";
}

std::string grant_session_key(const GrantParams& p) {
    std::string input;
    append_field(input, std::string(grant_name(p.grant)));
    append_field(input, p.scope);
    append_field(input, p.audience);
    append_field(input, p.subject_session);
    const char* kind = p.grant == Grant::client_credentials ? "cc:" : "tx:";
    return std::string(1, kDerivedMark) + kind + sha256_hex(input);
}

bool is_grant_session(std::string_view session) {
    return !session.empty() && session.front() == kDerivedMark;
}

void check_application_session(std::string_view session) {
    if (is_grant_session(session)) {
        throw Error(ErrorCode::invalid_parameter, "a session must not begin with the byte 0x01",
                    "Such keys hold the tokens of get_client_token and exchange_token.");
    }
}

std::string grant_params_json(const GrantParams& p) {
    nlohmann::json j = {{"grant", grant_name(p.grant)}};
    if (p.scope) j["scope"] = *p.scope;
    if (p.audience) j["audience"] = *p.audience;
    if (!p.subject_session.empty()) j["subject_session"] = p.subject_session;
    return j.dump();
}

GrantParams grant_params_from_json(std::string_view json) {
    const nlohmann::json j = nlohmann::json::parse(json, nullptr, false);
    if (!j.is_object()) throw Error(ErrorCode::internal, "malformed grant parameters");
    GrantParams p;
    const auto grant = opt_member(j, "grant").value_or("");
    if (grant == "client_credentials") {
        p.grant = Grant::client_credentials;
    } else if (grant == "token_exchange") {
        p.grant = Grant::token_exchange;
    } else {
        throw Error(ErrorCode::internal, "unknown grant in request parameters");
    }
    p.scope = opt_member(j, "scope");
    p.audience = opt_member(j, "audience");
    p.subject_session = opt_member(j, "subject_session").value_or("");
    return p;
}

}  // namespace upstream_token
