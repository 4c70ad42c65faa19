// Every difference between the PostgreSQL majors upstream_token supports (15, 16, 17, 18),
// in one place: the rest of the PostgreSQL layer calls these helpers and never tests
// PG_VERSION_NUM itself. 15, 17 and 18 are built and tested; 16 compiles by construction
// (its API is 15's for everything below: the override search path was removed in 17).
#pragma once

#include "pg/prelude.hpp"

#if PG_VERSION_NUM < 150000
#error "upstream_token needs PostgreSQL 15 or later"
#endif

extern "C" {
#include "access/genam.h"
}

#if PG_VERSION_NUM >= 180000
extern "C" {
#include "storage/waiteventset.h"  // 18 moved the WaitEventSet API out of latch.h
}
#endif

namespace upstream_token::pg::compat {

// The pgprocno of this backend (index into ProcGlobal->allProcs): its latch is set through it.
inline int my_procno() {
#if PG_VERSION_NUM >= 170000
    return MyProcNumber;
#else
    return MyProc->pgprocno;
#endif
}

// The local id of this backend's current top-level transaction (17 moved it into vxid).
inline LocalTransactionId my_local_transaction_id() {
#if PG_VERSION_NUM >= 170000
    return MyProc->vxid.lxid;
#else
    return MyProc->lxid;
#endif
}

// A WaitEventSet for the life of the process (17 takes a resource owner instead of a memory
// context; none: the set is never released, like 15's set in TopMemoryContext).
inline WaitEventSet* create_wait_event_set(int nevents) {
#if PG_VERSION_NUM >= 170000
    return CreateWaitEventSet(nullptr, nevents);
#else
    return CreateWaitEventSet(TopMemoryContext, nevents);
#endif
}

// Whether an interval is finite: 'infinity' and '-infinity' intervals exist from 17 (their
// fields hold the extreme values, which pass sign checks and overflow microsecond arithmetic).
inline bool interval_is_finite(const Interval* iv) {
#if PG_VERSION_NUM >= 170000
    return !INTERVAL_NOT_FINITE(iv);
#else
    (void)iv;
    return true;
#endif
}

// Pins name lookup to pg_catalog until pop_catalog_search_path(level); a (sub)transaction
// abort pops it too. Returns what the pop needs. Call through pg_call.
//  - 15, 16: an override search path of pg_catalog alone (pg_temp not searched at all).
//  - 17, 18: the override stack is gone; a GUC nest level with search_path =
//    'pg_catalog, pg_temp', like a function's SET clause. Naming pg_temp last is the only way
//    to keep it behind pg_catalog (left out, it would be searched first for relations and
//    types); functions and operators are never looked up in pg_temp. So every name that
//    resolves on 15 resolves to the same pg_catalog object here, and nothing the caller set
//    (search_path, temporary objects) changes what a query means.
inline int push_catalog_search_path() {
#if PG_VERSION_NUM >= 170000
    const int level = NewGUCNestLevel();
    (void)set_config_option("search_path", "pg_catalog, pg_temp", PGC_USERSET, PGC_S_SESSION,
                            GUC_ACTION_SAVE, true, 0, false);
    return level;
#else
    OverrideSearchPath path{};
    path.schemas = NIL;
    path.addCatalog = true;
    path.addTemp = false;
    PushOverrideSearchPath(&path);
    return 0;
#endif
}

// Undoes push_catalog_search_path (normal exit; errors are undone by the abort).
inline void pop_catalog_search_path(int level) {
#if PG_VERSION_NUM >= 170000
    AtEOXact_GUC(true, level);
#else
    (void)level;
    PopOverrideSearchPath();
#endif
}

// index_beginscan: 18 added an instrumentation argument (NULL: none).
inline IndexScanDesc index_beginscan(Relation heap, Relation index, Snapshot snapshot, int nkeys,
                                     int norderbys) {
#if PG_VERSION_NUM >= 180000
    return ::index_beginscan(heap, index, snapshot, nullptr, nkeys, norderbys);
#else
    return ::index_beginscan(heap, index, snapshot, nkeys, norderbys);
#endif
}

}  // namespace upstream_token::pg::compat
