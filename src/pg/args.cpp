#include "pg/args.hpp"

#include "core/error.hpp"
#include "pg/spi.hpp"

namespace upstream_token::pg {

std::optional<std::string> opt_text_arg(FunctionCallInfo fcinfo, int n) {
    if (PG_ARGISNULL(n)) return std::nullopt;
    return text_datum_to_string(PG_GETARG_DATUM(n));
}

std::string text_arg_required(FunctionCallInfo fcinfo, int n, const char* what) {
    auto v = opt_text_arg(fcinfo, n);
    if (!v) throw Error(ErrorCode::null_value, std::string(what) + " must not be NULL");
    return *v;
}

std::string nonempty_text_arg(FunctionCallInfo fcinfo, int n, const char* what) {
    std::string v = text_arg_required(fcinfo, n, what);
    if (v.empty())
        throw Error(ErrorCode::invalid_parameter, std::string(what) + " must not be empty");
    return v;
}

std::optional<std::int32_t> opt_int4_arg(FunctionCallInfo fcinfo, int n) {
    if (PG_ARGISNULL(n)) return std::nullopt;
    return PG_GETARG_INT32(n);
}

}  // namespace upstream_token::pg
