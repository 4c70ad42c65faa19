// SPI access from C++: a scoped connection, statements prepared once per backend, typed
// arguments and typed reads. Every PostgreSQL call inside goes through pg_call.
#pragma once

#include "pg/prelude.hpp"

#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/time.hpp"

namespace upstream_token::pg {

// SPI_connect for the lifetime of the object; SPI_finish unless an error is unwinding
// (transaction abort cleans up SPI then).
class SpiConnection {
  public:
    SpiConnection();
    ~SpiConnection();
    SpiConnection(const SpiConnection&) = delete;
    SpiConnection& operator=(const SpiConnection&) = delete;

  private:
    int exceptions_at_start_;
};

// One statement argument, already converted to a Datum in the current memory context.
struct Arg {
    Oid type;
    Datum value;
    bool null;
};

Arg text_arg(std::optional<std::string_view> v);
Arg bytea_arg(std::optional<std::string_view> v);
Arg int4_arg(std::optional<std::int32_t> v);
Arg int8_arg(std::optional<std::int64_t> v);
Arg bool_arg(bool v);
Arg timestamptz_arg(std::optional<Time> v);
// An argument passed through from fmgr as it came (interval, jsonb, ...).
Arg datum_arg(Oid type, Datum value, bool null);
// A one-dimensional array of `elem_type` holding the elements' values (one statement for many
// rows, with unnest).
Arg array_arg(Oid elem_type, const std::vector<Arg>& elems);

// A statement planned on first use and kept for the backend's life.
class Statement {
  public:
    explicit Statement(const char* sql) : sql_(sql) {}

    // Runs it; returns the number of rows processed. `snapshot` (optional) reads with that
    // snapshot instead of the transaction's.
    std::uint64_t run(std::initializer_list<Arg> args, bool read_only, long limit = 0,
                      Snapshot snapshot = nullptr);

  private:
    const char* sql_;
    std::vector<Oid> types_;
    SPIPlanPtr plan_ = nullptr;
};

// Typed access to row `row` of the last statement's result (copies out of SPI memory).
class ResultRow {
  public:
    explicit ResultRow(std::uint64_t row = 0) : row_(row) {}
    bool is_null(int col) const;
    std::optional<std::string> text(int col) const;
    std::optional<std::string> bytea(int col) const;
    std::optional<std::int64_t> int8(int col) const;
    std::optional<std::int32_t> int4(int col) const;
    std::optional<bool> boolean(int col) const;
    std::optional<Time> timestamptz(int col) const;
    Datum raw(int col, bool* isnull) const;

  private:
    std::uint64_t row_;
};

// Conversions between PostgreSQL values and the core's types.
Time from_timestamptz(TimestampTz ts);
TimestampTz to_timestamptz(Time t);
Time now_time();
std::string text_datum_to_string(Datum d);
// A text Datum in the current memory context.
Datum string_to_text_datum(std::string_view s);

}  // namespace upstream_token::pg
