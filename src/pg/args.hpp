// Reading SQL function arguments into C++ values, with the project's error for bad ones.
#pragma once

#include "pg/prelude.hpp"

#include "core/time.hpp"

#include <optional>
#include <string>
#include <vector>

namespace upstream_token::pg {

// Argument n as a string, or nullopt when NULL.
std::optional<std::string> opt_text_arg(FunctionCallInfo fcinfo, int n);
// Argument n as a string; Error(null_value) naming `what` when NULL.
std::string text_arg_required(FunctionCallInfo fcinfo, int n, const char* what);
// An application's session argument n: non-empty, at most 512 bytes, not a derived key of
// get_client_token / exchange_token (22023 otherwise, 22004 for NULL).
std::string session_arg(FunctionCallInfo fcinfo, int n);

// Argument n as a non-empty string; NULL or '' is an error naming `what`.
std::string nonempty_text_arg(FunctionCallInfo fcinfo, int n, const char* what);
std::optional<std::int32_t> opt_int4_arg(FunctionCallInfo fcinfo, int n);
std::optional<bool> opt_bool_arg(FunctionCallInfo fcinfo, int n);
// A text[] argument n, or nullopt when NULL; Error(null_value) naming `what` for a NULL element.
std::optional<std::vector<std::string>> opt_text_array_arg(FunctionCallInfo fcinfo, int n,
                                                           const char* what);
// A jsonb argument n as JSON text, or nullopt when NULL.
std::optional<std::string> opt_jsonb_text_arg(FunctionCallInfo fcinfo, int n);
// Argument n as an interval, or nullptr when NULL. Error(invalid_parameter) naming `what` when
// it is infinite (17+), negative (unless allowed) or too large to count in microseconds.
const Interval* opt_interval_arg(FunctionCallInfo fcinfo, int n, const char* what,
                                 bool allow_negative = false);
// An interval checked by opt_interval_arg in microseconds, months counted as 30 days (as
// PostgreSQL's own interval arithmetic does).
Micros interval_micros(const Interval* iv);

}  // namespace upstream_token::pg
