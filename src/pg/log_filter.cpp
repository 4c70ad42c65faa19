// Errors raised inside our functions leave out the STATEMENT line themselves (guard.cpp). This
// hook covers what PostgreSQL raises before or around their bodies while the statement text
// names one of the functions that take a secret (store_upstream_token, register_provider...):
// an argument that fails its cast, a wrong signature, a missing privilege, a syntax error.
// The statement text then holds the secret as a literal: its STATEMENT line is dropped, and in
// the messages of data and syntax errors, which quote the offending value or token, quoted
// text longer than three characters becomes "...". It must never fail: it runs inside error
// reporting, so it neither allocates nor raises, and edits only in place.
#include "pg/prelude.hpp"
#include "pg/log_filter.hpp"

#include <cstring>
#include <strings.h>

namespace upstream_token::pg {
namespace {

emit_log_hook_type previous_hook = nullptr;

// Every SQL function that takes a secret as an argument (access/refresh/ID tokens, client
// secrets, private keys). register_provider also matches register_provider_from_issuer.
constexpr const char* kSecretTakingFunctions[] = {"store_upstream_token", "register_provider"};

// True when the statement text mentions a function that takes a secret (any case: SQL
// folds unquoted names).
bool names_secret_function(const char* statement) noexcept {
    for (const char* name : kSecretTakingFunctions) {
        if (::strcasestr(statement, name) != nullptr) return true;
    }
    return false;
}

// Data exceptions (22xxx) quote the value that failed ("invalid input syntax for type
// integer: \"...\""), syntax errors (42601) the token they stopped at.
bool may_quote_a_value(int sqlerrcode) noexcept {
    return ERRCODE_TO_CATEGORY(sqlerrcode) == ERRCODE_DATA_EXCEPTION ||
           sqlerrcode == ERRCODE_SYNTAX_ERROR;
}

// Shortens every "quoted" span of more than three characters to "..." in place.
void redact_quoted(char* text) noexcept {
    if (text == nullptr) return;
    char* out = text;
    const char* in = text;
    while (*in != '\0') {
        if (*in != '"') {
            *out++ = *in++;
            continue;
        }
        const char* close = std::strchr(in + 1, '"');
        if (close == nullptr) {  // unbalanced: drop the rest, it may be the value
            std::memcpy(out, "\"...", 4);
            out += 4;
            break;
        }
        const std::size_t len = static_cast<std::size_t>(close - in - 1);
        if (len > 3) {
            std::memcpy(out, "\"...\"", 5);
            out += 5;
        } else {
            std::memmove(out, in, len + 2);
            out += len + 2;
        }
        in = close + 1;
    }
    *out = '\0';
}

// The emit_log_hook: hides the statement (and quoted values) of errors about statements that
// name a function taking a secret, then hands the message on.
void filter(ErrorData* edata) {
    if (edata != nullptr && !edata->hide_stmt && debug_query_string != nullptr &&
        names_secret_function(debug_query_string)) {
        edata->hide_stmt = true;
        if (may_quote_a_value(edata->sqlerrcode)) {
            redact_quoted(edata->message);
            redact_quoted(edata->detail);
            edata->hide_ctx = true;  // e.g. "JSON data, line 1: <the value>"
        }
    }
    if (previous_hook != nullptr) previous_hook(edata);
}

}  // namespace

void install_log_filter() {
    previous_hook = emit_log_hook;
    emit_log_hook = filter;
}

}  // namespace upstream_token::pg
