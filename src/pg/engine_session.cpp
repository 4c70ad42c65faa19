#include "pg/prelude.hpp"
#include "pg/engine_session.hpp"

extern "C" {
#include "access/genam.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "catalog/indexing.h"
#include "catalog/pg_extension.h"
#include "utils/fmgroids.h"
#include "utils/rel.h"
}

#include "pg/guard.hpp"
#include "pg/worker_txn.hpp"

namespace upstream_token::pg {

void configure_engine_session() {
    // PGC_S_OVERRIDE outranks every ALTER DATABASE / ALTER ROLE ... SET and function SET clause.
    auto pin = [](const char* name, const char* value) {
        SetConfigOption(name, value, PGC_SUSET, PGC_S_OVERRIDE);
    };
    // Names resolve in pg_catalog (then the engine's own, empty, temporary schema): an operator,
    // function or type a database owner plants in `public` is never seen.
    pin("search_path", "pg_catalog, pg_temp");
    // A rotated refresh token lost to a crash is a broken link: commit durably, and never
    // wait long on a row a client transaction holds.
    pin("synchronous_commit", "on");
    pin("lock_timeout", "50");
    pin("statement_timeout", "10000");
    // The re-read after taking a token's lock and the optimistic save assume read committed.
    pin("default_transaction_isolation", "read committed");
    pin("application_name", "upstream_token engine");
    pgstat_report_appname("upstream_token engine");
    register_standby_wait_backstop();
}

Oid extension_owner() {
    return pg_call([] {
        Relation rel = table_open(ExtensionRelationId, AccessShareLock);
        ScanKeyData key;
        ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber, F_NAMEEQ,
                    CStringGetDatum("upstream_token"));
        SysScanDesc scan = systable_beginscan(rel, ExtensionNameIndexId, true, nullptr, 1, &key);
        HeapTuple tuple = systable_getnext(scan);
        const Oid owner = HeapTupleIsValid(tuple)
                              ? reinterpret_cast<Form_pg_extension>(GETSTRUCT(tuple))->extowner
                              : InvalidOid;
        systable_endscan(scan);
        table_close(rel, AccessShareLock);
        return owner;
    });
}

}  // namespace upstream_token::pg
