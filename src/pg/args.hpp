// Reading SQL function arguments into C++ values, with the project's error for bad ones.
#pragma once

#include "pg/prelude.hpp"

#include <optional>
#include <string>

namespace upstream_token::pg {

// Argument n as a string, or nullopt when NULL.
std::optional<std::string> opt_text_arg(FunctionCallInfo fcinfo, int n);
// Argument n as a string; Error(null_value) naming `what` when NULL.
std::string text_arg_required(FunctionCallInfo fcinfo, int n, const char* what);
// Argument n as a non-empty string; NULL or '' is an error naming `what`.
std::string nonempty_text_arg(FunctionCallInfo fcinfo, int n, const char* what);
std::optional<std::int32_t> opt_int4_arg(FunctionCallInfo fcinfo, int n);

}  // namespace upstream_token::pg
