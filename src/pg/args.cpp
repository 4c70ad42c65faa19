#include "pg/args.hpp"

#include "core/error.hpp"
#include "core/grant_params.hpp"
#include "pg/compat.hpp"
#include "pg/guard.hpp"
#include "pg/spi.hpp"

namespace upstream_token::pg {

std::optional<std::string> opt_text_arg(FunctionCallInfo fcinfo, int n) {
    if (PG_ARGISNULL(n)) return std::nullopt;
    return text_datum_to_string(PG_GETARG_DATUM(n));
}

std::optional<bool> opt_bool_arg(FunctionCallInfo fcinfo, int n) {
    if (PG_ARGISNULL(n)) return std::nullopt;
    return PG_GETARG_BOOL(n);
}

std::optional<std::vector<std::string>> opt_text_array_arg(FunctionCallInfo fcinfo, int n,
                                                           const char* what) {
    if (PG_ARGISNULL(n)) return std::nullopt;
    const Datum d = PG_GETARG_DATUM(n);
    Datum* elems = nullptr;
    bool* nulls = nullptr;
    int count = 0;
    pg_call([&] {
        ArrayType* a = DatumGetArrayTypeP(d);
        deconstruct_array(a, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &count);
    });
    std::vector<std::string> out;
    for (int i = 0; i < count; ++i) {
        if (nulls[i]) throw Error(ErrorCode::null_value, std::string(what) + " must not hold NULL");
        out.push_back(text_datum_to_string(elems[i]));
    }
    return out;
}

std::optional<std::string> opt_jsonb_text_arg(FunctionCallInfo fcinfo, int n) {
    if (PG_ARGISNULL(n)) return std::nullopt;
    const Datum d = PG_GETARG_DATUM(n);
    const char* text = pg_call([&] {
        Jsonb* jb = DatumGetJsonbP(d);
        return JsonbToCString(nullptr, &jb->root, static_cast<int>(VARSIZE(jb)));
    });
    return std::string(text);
}

std::string text_arg_required(FunctionCallInfo fcinfo, int n, const char* what) {
    auto v = opt_text_arg(fcinfo, n);
    if (!v) throw Error(ErrorCode::null_value, std::string(what) + " must not be NULL");
    return *v;
}

constexpr std::size_t kMaxSession = 512;  // the token table's CHECK

std::string session_arg(FunctionCallInfo fcinfo, int n) {
    std::string session = nonempty_text_arg(fcinfo, n, "session");
    if (session.size() > kMaxSession) {
        throw Error(ErrorCode::invalid_parameter, "session must be at most 512 bytes");
    }
    check_application_session(session);
    return session;
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

const Interval* opt_interval_arg(FunctionCallInfo fcinfo, int n, const char* what,
                                 bool allow_negative) {
    if (PG_ARGISNULL(n)) return nullptr;
    const Interval* iv = PG_GETARG_INTERVAL_P(n);
    if (!compat::interval_is_finite(iv)) {
        throw Error(ErrorCode::invalid_parameter, std::string(what) + " must be a finite interval");
    }
    if (!allow_negative && (iv->time < 0 || iv->day < 0 || iv->month < 0)) {
        throw Error(ErrorCode::invalid_parameter, std::string(what) + " must not be negative");
    }
    // Counted with 31-day months, an upper bound of every conversion the extension makes
    // (30-day months in C++, extract(epoch) in SQL): if this fits, theirs do.
    std::int64_t months_us = 0, days_us = 0, total = 0;
    const bool overflow =
        __builtin_mul_overflow(static_cast<std::int64_t>(iv->month), 31 * USECS_PER_DAY,
                               &months_us) ||
        __builtin_mul_overflow(static_cast<std::int64_t>(iv->day), USECS_PER_DAY, &days_us) ||
        __builtin_add_overflow(months_us, days_us, &total) ||
        __builtin_add_overflow(total, static_cast<std::int64_t>(iv->time), &total);
    if (overflow) {
        throw Error(ErrorCode::invalid_parameter, std::string(what) + " is out of range",
                    "An interval must be shorter than about 290,000 years.");
    }
    return iv;
}

Micros interval_micros(const Interval* iv) {
    return Micros{iv->time + (static_cast<std::int64_t>(iv->day) +
                              static_cast<std::int64_t>(iv->month) * DAYS_PER_MONTH) *
                                 USECS_PER_DAY};
}

}  // namespace upstream_token::pg
