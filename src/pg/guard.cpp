#include "pg/guard.hpp"

#include <cstring>
#include <exception>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <string_view>

#include "core/error.hpp"
#include "pg/sqlstate.hpp"

namespace upstream_token::pg {

namespace {

// An owned copy of an optional C string.
std::optional<std::string> owned(const char* s) {
    if (s == nullptr) return std::nullopt;
    return std::string(s);
}

// Copies the fields of a PostgreSQL error into C++-owned storage.
std::shared_ptr<const PgErrorFields> own_fields(const ErrorData& e) {
    auto f = std::make_shared<PgErrorFields>();
    f->sqlerrcode = e.sqlerrcode;
    f->message = owned(e.message);
    f->detail = owned(e.detail);
    f->detail_log = owned(e.detail_log);
    f->hint = owned(e.hint);
    f->context = owned(e.context);
    f->schema_name = owned(e.schema_name);
    f->table_name = owned(e.table_name);
    f->column_name = owned(e.column_name);
    f->datatype_name = owned(e.datatype_name);
    f->constraint_name = owned(e.constraint_name);
    f->internalquery = owned(e.internalquery);
    f->filename = e.filename;
    f->funcname = e.funcname;
    f->domain = e.domain;
    f->context_domain = e.context_domain;
    f->lineno = e.lineno;
    f->cursorpos = e.cursorpos;
    f->internalpos = e.internalpos;
    f->saved_errno = e.saved_errno;
    return f;
}

// What is left of an error when even copying it failed (out of memory).
std::shared_ptr<const PgErrorFields> out_of_memory_error() noexcept {
    static const PgErrorFields fields = [] {
        PgErrorFields f;
        f.sqlerrcode = ERRCODE_OUT_OF_MEMORY;
        return f;
    }();
    return std::shared_ptr<const PgErrorFields>(&fields, [](const PgErrorFields*) {});
}

// A palloc'd copy of an optional string in `cxt`, never raising an error: false when out of
// memory.
bool copy_into(MemoryContext cxt, const std::optional<std::string>& from, char** to) noexcept {
    *to = nullptr;
    if (!from) return true;
    void* p = MemoryContextAllocExtended(cxt, from->size() + 1, MCXT_ALLOC_NO_OOM);
    if (p == nullptr) return false;
    std::memcpy(p, from->c_str(), from->size() + 1);
    *to = static_cast<char*>(p);
    return true;
}

// Rebuilds an ErrorData (for ReThrowError) from owned fields in `cxt`; nullptr when out of
// memory. Never raises an error: it runs while an exception is being handled.
ErrorData* to_error_data(const PgErrorFields& f, MemoryContext cxt) noexcept {
    auto* e = static_cast<ErrorData*>(
        MemoryContextAllocExtended(cxt, sizeof(ErrorData), MCXT_ALLOC_NO_OOM | MCXT_ALLOC_ZERO));
    if (e == nullptr) return nullptr;
    e->elevel = ERROR;
    e->output_to_server = true;
    e->output_to_client = true;
    e->sqlerrcode = f.sqlerrcode;
    e->filename = f.filename;
    e->funcname = f.funcname;
    e->domain = f.domain;
    e->context_domain = f.context_domain;
    e->lineno = f.lineno;
    e->cursorpos = f.cursorpos;
    e->internalpos = f.internalpos;
    e->saved_errno = f.saved_errno;
    e->assoc_context = cxt;
    const bool ok =
        copy_into(cxt, f.message, &e->message) && copy_into(cxt, f.detail, &e->detail) &&
        copy_into(cxt, f.detail_log, &e->detail_log) && copy_into(cxt, f.hint, &e->hint) &&
        copy_into(cxt, f.context, &e->context) && copy_into(cxt, f.schema_name, &e->schema_name) &&
        copy_into(cxt, f.table_name, &e->table_name) &&
        copy_into(cxt, f.column_name, &e->column_name) &&
        copy_into(cxt, f.datatype_name, &e->datatype_name) &&
        copy_into(cxt, f.constraint_name, &e->constraint_name) &&
        copy_into(cxt, f.internalquery, &e->internalquery);
    return ok ? e : nullptr;  // a partial copy stays in cxt until that context goes
}

}  // namespace

std::shared_ptr<const PgErrorFields> capture_pg_error(MemoryContext cxt) noexcept {
    MemoryContextSwitchTo(cxt);
    ErrorData* data = CopyErrorData();
    FlushErrorState();
    std::shared_ptr<const PgErrorFields> fields;
    try {
        fields = own_fields(*data);
    } catch (...) {
        fields = out_of_memory_error();
    }
    FreeErrorData(data);
    return fields;
}

void capture_current_exception(PendingError& out) noexcept {
    try {
        throw;
    } catch (const PgError& e) {
        out.pg = to_error_data(*e.data(), CurrentMemoryContext);
        if (out.pg == nullptr) {  // out of memory: keep the SQLSTATE and what fits
            out.sqlstate = e.data()->sqlerrcode;
            copy_bounded(out.message, e.what());
        }
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
    pg_call([] {
        OverrideSearchPath path{};
        path.schemas = NIL;
        path.addCatalog = true;
        path.addTemp = false;
        PushOverrideSearchPath(&path);
    });
}

PinnedSearchPath::~PinnedSearchPath() {
    if (std::uncaught_exceptions() > exceptions_at_start_) return;
    try {
        pg_call([] { PopOverrideSearchPath(); });
    } catch (...) {
        // The transaction's end pops it (with a warning at commit).
    }
}

void raise_pending(const PendingError& e) {
    if (e.pg != nullptr) {
        e.pg->hide_stmt = true;
        ReThrowError(e.pg);
    }
    ereport(ERROR, (errcode(e.sqlstate), errmsg_internal("%s", e.message),
                    e.detail[0] != '\0' ? errdetail_internal("%s", e.detail) : 0,
                    e.hint[0] != '\0' ? errhint("%s", e.hint) : 0, errhidestmt(true)));
    pg_unreachable();
}

}  // namespace upstream_token::pg
