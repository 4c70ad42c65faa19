// The boundary between C++ and PostgreSQL error handling.
//
// entry_guard: every SQL entry point, callback and worker iteration runs its C++ body
// through it. It catches everything, copies message and SQLSTATE into trivially
// destructible storage, lets all destructors run, and only then calls ereport.
//
// pg_call: every call into PostgreSQL made from C++ code that holds objects with
// destructors goes through it. An ERROR longjmp becomes a PgError exception that carries
// the original ErrorData, so C++ frames unwind normally.
#pragma once

#include "pg/prelude.hpp"

#include <cstring>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

namespace upstream_token::pg {

// Copies text into a fixed-size buffer (shared memory, pending errors), cut to fit and
// NUL-terminated; never allocates.
template <std::size_t N>
void copy_bounded(char (&dst)[N], std::string_view src) noexcept {
    const std::size_t n = src.size() < N - 1 ? src.size() : N - 1;
    std::memcpy(dst, src.data(), n);
    dst[n] = '\0';
}

// Everything a PostgreSQL error carries, owned by C++: the memory context the error was
// raised in (SPI's, the transaction's) may be gone when it is read, after an abort.
struct PgErrorFields {
    int sqlerrcode = 0;
    std::optional<std::string> message, detail, detail_log, hint, context, schema_name, table_name,
        column_name, datatype_name, constraint_name, internalquery;
    const char* filename = nullptr;  // static strings of the server binary, as in ErrorData
    const char* funcname = nullptr;
    const char* domain = nullptr;
    const char* context_domain = nullptr;
    int lineno = 0;
    int cursorpos = 0;
    int internalpos = 0;
    int saved_errno = 0;
};

// A PostgreSQL ERROR caught at a pg_call, travelling through C++ frames. It owns its fields,
// so it stays readable after the transaction that raised it aborted.
class PgError : public std::exception {
  public:
    explicit PgError(std::shared_ptr<const PgErrorFields> fields) noexcept
        : fields_(std::move(fields)) {}
    const char* what() const noexcept override {
        return fields_->message ? fields_->message->c_str() : "error";
    }
    // The original fields (SQLSTATE: data()->sqlerrcode).
    const PgErrorFields* data() const noexcept { return fields_.get(); }

  private:
    std::shared_ptr<const PgErrorFields> fields_;  // shared: exceptions are copied
};

// Copies the PostgreSQL error being handled (in PG_CATCH) into C++-owned fields and clears
// PostgreSQL's error state; `cxt` is the memory context to return to.
std::shared_ptr<const PgErrorFields> capture_pg_error(MemoryContext cxt) noexcept;

// Runs fn (which calls PostgreSQL) and converts an ERROR into a PgError.
// fn itself must not own objects with destructors: only its callers may.
template <typename F>
decltype(auto) pg_call(F&& fn) {
    using R = std::invoke_result_t<F>;
    MemoryContext cxt = CurrentMemoryContext;
    // Assigned only after the longjmp (in PG_CATCH), in this frame: nothing skips its destructor.
    std::shared_ptr<const PgErrorFields> caught;
    if constexpr (std::is_void_v<R>) {
        PG_TRY();
        { fn(); }
        PG_CATCH();
        { caught = capture_pg_error(cxt); }
        PG_END_TRY();
        if (caught) throw PgError(std::move(caught));
    } else {
        static_assert(std::is_trivially_copyable_v<R>, "pg_call returns plain values only");
        volatile R result{};  // volatile: assigned between setjmp and a possible longjmp
        PG_TRY();
        { result = fn(); }
        PG_CATCH();
        { caught = capture_pg_error(cxt); }
        PG_END_TRY();
        if (caught) throw PgError(std::move(caught));
        return result;
    }
}

// What an exception turns into at the boundary: fixed-size copies, no destructors (the
// ereport that follows longjmps out of the frame that holds it).
struct PendingError {
    ErrorData* pg = nullptr;  // a PostgreSQL error to rethrow with all its fields, palloc'd in
                              // the context current at the boundary (alive until the rethrow)
    int sqlstate = 0;
    char message[1024] = {};
    char detail[1024] = {};
    char hint[512] = {};
};

// Fills `out` from the exception being handled (call only inside a catch block).
void capture_current_exception(PendingError& out) noexcept;

// Raises the pending error with ereport(ERROR), without the STATEMENT line in the server log:
// the caller's statement text may hold the secrets our functions take (tokens, client
// secrets, private keys) as literals. Never returns.
[[noreturn]] void raise_pending(const PendingError& e);

// Runs body; any exception becomes an ereport(ERROR) after the body's objects are gone.
template <typename F>
decltype(auto) entry_guard(F&& body) {
    PendingError pending;
    try {
        return body();
    } catch (...) {
        capture_current_exception(pending);
    }
    raise_pending(pending);
}

}  // namespace upstream_token::pg

namespace upstream_token::pg {

// Pins the search path to pg_catalog alone (no pg_temp, nothing the caller chose) for the
// life of the object: every name the SQL functions resolve is then safe under SECURITY
// DEFINER, without the per-call cost of a SET clause. Popped on normal exit; an error's
// (sub)transaction abort pops it otherwise.
class PinnedSearchPath {
  public:
    PinnedSearchPath();
    ~PinnedSearchPath();
    PinnedSearchPath(const PinnedSearchPath&) = delete;
    PinnedSearchPath& operator=(const PinnedSearchPath&) = delete;

  private:
    int exceptions_at_start_;
};

}  // namespace upstream_token::pg

// Defines the SQL-callable C function `name` as `impl(fcinfo)` run through entry_guard with
// the search path pinned.
#define UT_SQL_ENTRY(name, impl)                                       \
    UT_SQL_FUNCTION(name)                                              \
    Datum name(PG_FUNCTION_ARGS) {                                     \
        return ::upstream_token::pg::entry_guard([&] {                 \
            ::upstream_token::pg::PinnedSearchPath pinned_search_path; \
            return impl(fcinfo);                                       \
        });                                                            \
    }
