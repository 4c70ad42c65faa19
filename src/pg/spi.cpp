#include "pg/spi.hpp"

#include <cstring>
#include <exception>
#include <memory>

#include "core/error.hpp"
#include "pg/guard.hpp"

namespace upstream_token::pg {

namespace {
constexpr std::int64_t kUnixToPgEpochUs =
    static_cast<std::int64_t>(POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY;

// Turns a negative SPI return code into an internal error naming the statement's start.
void check_spi(int rc, const char* sql) {
    if (rc < 0) {
        throw Error(ErrorCode::internal, std::string("SPI failed: ") + SPI_result_code_string(rc),
                    std::string(sql).substr(0, 80));
    }
}

// A bytea Datum holding a copy of `bytes`.
Datum bytes_to_bytea_datum(std::string_view bytes) {
    bytea* b = pg_call([&] { return static_cast<bytea*>(palloc(VARHDRSZ + bytes.size())); });
    SET_VARSIZE(b, VARHDRSZ + bytes.size());
    std::memcpy(VARDATA(b), bytes.data(), bytes.size());
    return PointerGetDatum(b);
}

// The bytes of a (possibly toasted) varlena datum.
std::string varlena_to_string(Datum d) {
    struct varlena* v = pg_call([&] {
        return pg_detoast_datum_packed(reinterpret_cast<struct varlena*>(DatumGetPointer(d)));
    });
    return std::string(VARDATA_ANY(v), VARSIZE_ANY_EXHDR(v));
}
}  // namespace

SpiConnection::SpiConnection() : exceptions_at_start_(std::uncaught_exceptions()) {
    const int rc = pg_call([] { return SPI_connect(); });
    check_spi(rc, "SPI_connect");
}

SpiConnection::~SpiConnection() {
    if (std::uncaught_exceptions() > exceptions_at_start_) return;
    try {
        pg_call([] { return SPI_finish(); });
    } catch (...) {
        // Destructors must not throw; the transaction's abort will finish SPI.
    }
}

Arg text_arg(std::optional<std::string_view> v) {
    if (!v) return Arg{TEXTOID, Datum(0), true};
    return Arg{TEXTOID, string_to_text_datum(*v), false};
}

Arg bytea_arg(std::optional<std::string_view> v) {
    if (!v) return Arg{BYTEAOID, Datum(0), true};
    return Arg{BYTEAOID, bytes_to_bytea_datum(*v), false};
}

Arg int4_arg(std::optional<std::int32_t> v) {
    return Arg{INT4OID, Int32GetDatum(v.value_or(0)), !v.has_value()};
}

Arg int8_arg(std::optional<std::int64_t> v) {
    return Arg{INT8OID, Int64GetDatum(v.value_or(0)), !v.has_value()};
}

Arg bool_arg(bool v) {
    return Arg{BOOLOID, BoolGetDatum(v), false};
}

Arg timestamptz_arg(std::optional<Time> v) {
    if (!v) return Arg{TIMESTAMPTZOID, Datum(0), true};
    return Arg{TIMESTAMPTZOID, TimestampTzGetDatum(to_timestamptz(*v)), false};
}

Arg datum_arg(Oid type, Datum value, bool null) {
    return Arg{type, value, null};
}

Arg array_arg(Oid elem_type, const std::vector<Arg>& elems) {
    const int n = static_cast<int>(elems.size());
    std::vector<Datum> values(elems.size());
    const auto nulls = std::make_unique<bool[]>(elems.size() + 1);
    for (std::size_t i = 0; i < elems.size(); ++i) {
        values[i] = elems[i].value;
        nulls[i] = elems[i].null;
    }
    const Datum array = pg_call([&] {
        int16 len = 0;
        bool byval = false;
        char align = 0;
        get_typlenbyvalalign(elem_type, &len, &byval, &align);
        int dims[1] = {n};
        int lower_bounds[1] = {1};
        return PointerGetDatum(construct_md_array(values.data(), nulls.get(), 1, dims, lower_bounds,
                                                  elem_type, len, byval, align));
    });
    return Arg{pg_call([&] { return get_array_type(elem_type); }), array, false};
}

std::uint64_t Statement::run(std::initializer_list<Arg> args, bool read_only, long limit,
                             Snapshot snapshot) {
    constexpr std::size_t kMaxArgs = 24;
    Datum values[kMaxArgs];
    char nulls[kMaxArgs];
    if (args.size() > kMaxArgs) throw Error(ErrorCode::internal, "too many statement arguments");
    std::size_t i = 0;
    for (const Arg& a : args) {
        values[i] = a.value;
        nulls[i] = a.null ? 'n' : ' ';
        ++i;
    }
    if (plan_ == nullptr) {
        types_.clear();
        for (const Arg& a : args) types_.push_back(a.type);
        const int nargs = static_cast<int>(types_.size());
        Oid* types = types_.data();
        const char* sql = sql_;
        SPIPlanPtr plan = pg_call([&] { return SPI_prepare(sql, nargs, types); });
        if (plan == nullptr) check_spi(SPI_result, sql_);
        check_spi(pg_call([&] { return SPI_keepplan(plan); }), sql_);
        plan_ = plan;
    }
    SPIPlanPtr plan = plan_;
    int rc = 0;
    if (snapshot != nullptr) {
        rc = pg_call([&] {
            return SPI_execute_snapshot(plan, values, nulls, snapshot, InvalidSnapshot, read_only,
                                        false, limit);
        });
    } else {
        rc = pg_call([&] { return SPI_execute_plan(plan, values, nulls, read_only, limit); });
    }
    check_spi(rc, sql_);
    return SPI_processed;
}

Datum ResultRow::raw(int col, bool* isnull) const {
    HeapTuple tuple = SPI_tuptable->vals[row_];
    TupleDesc desc = SPI_tuptable->tupdesc;
    return pg_call([&] { return SPI_getbinval(tuple, desc, col, isnull); });
}

bool ResultRow::is_null(int col) const {
    bool isnull = false;
    (void)raw(col, &isnull);
    return isnull;
}

std::optional<std::string> ResultRow::text(int col) const {
    bool isnull = false;
    const Datum d = raw(col, &isnull);
    if (isnull) return std::nullopt;
    return text_datum_to_string(d);
}

std::optional<std::string> ResultRow::bytea(int col) const {
    bool isnull = false;
    const Datum d = raw(col, &isnull);
    if (isnull) return std::nullopt;
    return varlena_to_string(d);
}

std::optional<std::int64_t> ResultRow::int8(int col) const {
    bool isnull = false;
    const Datum d = raw(col, &isnull);
    if (isnull) return std::nullopt;
    return DatumGetInt64(d);
}

std::optional<std::int32_t> ResultRow::int4(int col) const {
    bool isnull = false;
    const Datum d = raw(col, &isnull);
    if (isnull) return std::nullopt;
    return DatumGetInt32(d);
}

std::optional<bool> ResultRow::boolean(int col) const {
    bool isnull = false;
    const Datum d = raw(col, &isnull);
    if (isnull) return std::nullopt;
    return DatumGetBool(d);
}

std::optional<Time> ResultRow::timestamptz(int col) const {
    bool isnull = false;
    const Datum d = raw(col, &isnull);
    if (isnull) return std::nullopt;
    return from_timestamptz(DatumGetTimestampTz(d));
}

Time from_timestamptz(TimestampTz ts) {
    return Time{Micros{ts + kUnixToPgEpochUs}};
}

TimestampTz to_timestamptz(Time t) {
    return t.time_since_epoch().count() - kUnixToPgEpochUs;
}

Time now_time() {
    return from_timestamptz(GetCurrentTimestamp());
}

std::string text_datum_to_string(Datum d) {
    return varlena_to_string(d);
}

Datum string_to_text_datum(std::string_view s) {
    text* t =
        pg_call([&] { return cstring_to_text_with_len(s.data(), static_cast<int>(s.size())); });
    return PointerGetDatum(t);
}

}  // namespace upstream_token::pg
