// The application's own tokens (client credentials) and exchanged ones (RFC 8693) are kept in
// the token table like a user's, under a session key derived from what they are cached by.
// These keys start with a control character no application session may start with.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace upstream_token {

enum class Grant { client_credentials, token_exchange };

struct GrantParams {
    Grant grant = Grant::client_credentials;
    std::optional<std::string> scope;
    std::optional<std::string> audience;
    std::string subject_session;  // token_exchange: whose token is the subject token
};

// The grant's name as stored in token.grant_type.
const char* grant_name(Grant g);

// The session key a grant's token is cached under: "\x01cc:" or "\x01tx:" and the hex
// SHA-256 of its length-prefixed parameters (no two parameter sets share one).
std::string grant_session_key(const GrantParams& p);

// True for a key made by grant_session_key: not an application's session.
bool is_grant_session(std::string_view session);

// Error(invalid_parameter) for a session an application may not use (a derived key's prefix).
void check_application_session(std::string_view session);

// The parameters as the JSON the engine receives with a request, and back.
std::string grant_params_json(const GrantParams& p);
GrantParams grant_params_from_json(std::string_view json);

}  // namespace upstream_token
