// PostgreSQL version differences, in one place (guarded by PG_VERSION_NUM).
#pragma once

#include "pg/prelude.hpp"

extern "C" {
#include "storage/latch.h"
}

namespace upstream_token::pg::compat {

// This process's PGPROC number (for its latch), named differently from 17 on.
inline int my_procno() {
#if PG_VERSION_NUM >= 170000
    return MyProcNumber;
#else
    return MyProc->pgprocno;
#endif
}

// A WaitEventSet for the life of the process (17 ties it to a resource owner instead).
inline WaitEventSet* create_wait_event_set(int nevents) {
#if PG_VERSION_NUM >= 170000
    return CreateWaitEventSet(nullptr, nevents);
#else
    return CreateWaitEventSet(TopMemoryContext, nevents);
#endif
}

}  // namespace upstream_token::pg::compat
