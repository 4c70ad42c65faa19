#include "pg/prelude.hpp"
#include "pg/sqlstate.hpp"

namespace upstream_token::pg {

int sqlstate_of(ErrorCode code) noexcept {
    switch (code) {
        case ErrorCode::invalid_parameter:
            return ERRCODE_INVALID_PARAMETER_VALUE;
        case ErrorCode::null_value:
            return ERRCODE_NULL_VALUE_NOT_ALLOWED;
        case ErrorCode::provider_not_found:
            return ERRCODE_UNDEFINED_OBJECT;
        case ErrorCode::session_not_found:
            return MAKE_SQLSTATE('U', 'T', '0', '0', '1');
        case ErrorCode::no_refresh_token:
            return MAKE_SQLSTATE('U', 'T', '0', '0', '2');
        case ErrorCode::refresh_failed:
            return MAKE_SQLSTATE('U', 'T', '0', '0', '3');
        case ErrorCode::reauth_required:
            return MAKE_SQLSTATE('U', 'T', '0', '0', '4');
        case ErrorCode::invalid_binding:
            return MAKE_SQLSTATE('U', 'T', '0', '0', '5');
        case ErrorCode::engine_unavailable:
            return MAKE_SQLSTATE('U', 'T', '0', '0', '6');
        case ErrorCode::wait_timeout:
            return MAKE_SQLSTATE('U', 'T', '0', '0', '7');
        case ErrorCode::key_unavailable:
            return MAKE_SQLSTATE('U', 'T', '0', '0', '8');
        case ErrorCode::decryption_failed:
            return MAKE_SQLSTATE('U', 'T', '0', '0', '9');
        case ErrorCode::provider_misconfigured:
            return MAKE_SQLSTATE('U', 'T', '0', '1', '0');
        case ErrorCode::queue_full:
            return MAKE_SQLSTATE('U', 'T', '0', '1', '1');
        case ErrorCode::uncommitted_change:
            return MAKE_SQLSTATE('U', 'T', '0', '1', '2');
        case ErrorCode::login_state_invalid:
            return MAKE_SQLSTATE('U', 'T', '0', '1', '3');
        case ErrorCode::login_failed:
            return MAKE_SQLSTATE('U', 'T', '0', '1', '4');
        case ErrorCode::login_pending:
            return MAKE_SQLSTATE('U', 'T', '0', '1', '5');
        case ErrorCode::extension_outdated:
            return ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE;
        case ErrorCode::internal:
            break;
    }
    return ERRCODE_INTERNAL_ERROR;
}

}  // namespace upstream_token::pg
