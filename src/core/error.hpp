// Error classes of the core. The PostgreSQL layer maps each code to one SQLSTATE
// (src/pg/sqlstate.cpp); messages never contain secret values.
#pragma once

#include <stdexcept>
#include <string>

namespace upstream_token {

enum class ErrorCode {
    internal,                // a bug or an unexpected library failure
    invalid_parameter,       // bad input from SQL (22023)
    null_value,              // a required argument was NULL (22004)
    provider_not_found,      // unknown provider name (42704)
    session_not_found,       // no stored token for (session, provider)
    no_refresh_token,        // a refresh is needed but none is stored
    refresh_failed,          // transient provider or network failure
    reauth_required,         // provider said invalid_grant (or another "sign in again" code)
    invalid_binding,         // ID token claims differ from the stored ones
    engine_unavailable,      // worker not preloaded, not running, or on a standby
    wait_timeout,            // upstream_token.wait_timeout elapsed
    key_unavailable,         // no usable encryption key
    decryption_failed,       // ciphertext does not open with key + AAD
    provider_misconfigured,  // invalid_client / unauthorized_client
    queue_full,              // shared-memory request table is full
    uncommitted_change,      // the caller's own open transaction changed the row
    extension_outdated,      // the SQL objects are older than the library (55000)
    login_state_invalid,     // complete_login: unknown, replayed or expired state
    login_failed,            // the provider refused the login, or its ID token failed a check
    login_pending,           // a login of (session, provider) is under way, no token yet
};

// The one exception type the core throws for expected failures.
class Error : public std::runtime_error {
  public:
    Error(ErrorCode code, const std::string& message, std::string detail = {},
          std::string hint = {})
        : std::runtime_error(message),
          code_(code),
          detail_(std::move(detail)),
          hint_(std::move(hint)) {}

    ErrorCode code() const noexcept { return code_; }
    const std::string& detail() const noexcept { return detail_; }
    const std::string& hint() const noexcept { return hint_; }

  private:
    ErrorCode code_;
    std::string detail_;
    std::string hint_;
};

}  // namespace upstream_token
