// The one place the PostgreSQL layer includes server headers: C headers first inside
// extern "C", C++ headers after (port.h's printf macros otherwise break <cstdio> users).
#pragma once

#ifdef UPSTREAM_TOKEN_CORE
#error "src/core must not include PostgreSQL headers"
#endif

extern "C" {
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/condition_variable.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/lock.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "storage/shmem.h"
#include "tcop/utility.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"
}

// port.h redefines these as macros; C++ standard headers must see the real names.
#undef printf
#undef fprintf
#undef sprintf
#undef snprintf
#undef vsnprintf
#undef strerror
#undef vfprintf

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

// Declares a SQL-callable function: C linkage, visible to dlsym although the library
// is built with hidden visibility, and its V1 call-convention record.
#define UT_SQL_FUNCTION(name)                                                            \
    extern "C" {                                                                         \
    __attribute__((visibility("default"))) Datum name(PG_FUNCTION_ARGS);                 \
    __attribute__((visibility("default"))) const Pg_finfo_record* pg_finfo_##name(void); \
    const Pg_finfo_record* pg_finfo_##name(void) {                                       \
        static const Pg_finfo_record record = {1};                                       \
        return &record;                                                                  \
    }                                                                                    \
    }
