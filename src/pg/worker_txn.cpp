#include "pg/worker_txn.hpp"

#include "pg/engine_session.hpp"
#include "pg/guard.hpp"

namespace upstream_token::pg {

WorkerTxn::WorkerTxn() {
    pg_call([] {
        SetCurrentStatementStartTimestamp();
        StartTransactionCommand();
        SPI_connect();
        PushActiveSnapshot(GetTransactionSnapshot());
    });
    // The engine connects as the bootstrap superuser; its work needs no more than what the
    // extension's owner has, and nothing it runs may change the session (SET ROLE, temporary
    // objects): as autovacuum and REFRESH MATERIALIZED VIEW do for a table's owner. The
    // transaction's abort restores the previous identity (AbortTransaction).
    const Oid owner = extension_owner();
    Oid* user = &saved_user_;
    int* context = &saved_context_;
    pg_call([&] {
        GetUserIdAndSecContext(user, context);
        SetUserIdAndSecContext(OidIsValid(owner) ? owner : *user,
                               *context | SECURITY_RESTRICTED_OPERATION);
    });
}

WorkerTxn::~WorkerTxn() {
    if (open_) abort_worker_transaction();
}

void WorkerTxn::commit() {
    const Oid user = saved_user_;
    const int context = saved_context_;
    pg_call([&] {
        SPI_finish();
        PopActiveSnapshot();
        CommitTransactionCommand();
        // Only after the commit: deferred triggers and commit-time work still run restricted.
        SetUserIdAndSecContext(user, context);
        pgstat_report_stat(false);
        pgstat_report_activity(STATE_IDLE, nullptr);
    });
    open_ = false;
}

void abort_worker_transaction() noexcept {
    try {
        // A no-op when idle; otherwise also releases SPI, snapshots and LWLocks, and restores
        // the user id and security context the transaction started with.
        pg_call([] { AbortCurrentTransaction(); });
    } catch (...) {
        // Nothing more can be done here; the next StartTransactionCommand resets state.
    }
}

}  // namespace upstream_token::pg
