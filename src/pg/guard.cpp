#include "pg/guard.hpp"

#include <cstring>
#include <exception>
#include <new>
#include <string_view>

#include "core/error.hpp"
#include "pg/compat.hpp"
#include "pg/sqlstate.hpp"

namespace upstream_token::pg {

ErrorData* capture_pg_error(MemoryContext cxt) noexcept {
    MemoryContextSwitchTo(cxt);
    ErrorData* data = CopyErrorData();
    FlushErrorState();
    return data;
}

void capture_current_exception(PendingError& out) noexcept {
    try {
        throw;
    } catch (const PgError& e) {
        out.pg = e.data();
    } catch (const Error& e) {
        out.sqlstate = sqlstate_of(e.code());
        copy_bounded(out.message, e.what());
        copy_bounded(out.detail, e.detail());
        copy_bounded(out.hint, e.hint());
    } catch (const std::bad_alloc&) {
        out.sqlstate = ERRCODE_OUT_OF_MEMORY;
        copy_bounded(out.message, "upstream_token: out of memory");
    } catch (const std::exception& e) {
        out.sqlstate = ERRCODE_INTERNAL_ERROR;
        copy_bounded(out.message, "upstream_token: internal error");
        copy_bounded(out.detail, e.what());
    } catch (...) {
        out.sqlstate = ERRCODE_INTERNAL_ERROR;
        copy_bounded(out.message, "upstream_token: internal error of unknown type");
    }
}

PinnedSearchPath::PinnedSearchPath() : exceptions_at_start_(std::uncaught_exceptions()) {
    level_ = pg_call([] { return compat::push_catalog_search_path(); });
}

PinnedSearchPath::~PinnedSearchPath() {
    if (std::uncaught_exceptions() > exceptions_at_start_) return;
    try {
        pg_call([this] { compat::pop_catalog_search_path(level_); });
    } catch (...) {
        // The transaction's end pops it (with a warning at commit).
    }
}

void raise_pending(const PendingError& e) {
    if (e.pg != nullptr) ReThrowError(e.pg);
    ereport(ERROR, (errcode(e.sqlstate), errmsg_internal("%s", e.message),
                    e.detail[0] != '\0' ? errdetail_internal("%s", e.detail) : 0,
                    e.hint[0] != '\0' ? errhint("%s", e.hint) : 0));
    pg_unreachable();
}

}  // namespace upstream_token::pg
