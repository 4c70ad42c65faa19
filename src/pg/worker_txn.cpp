#include "pg/worker_txn.hpp"

#include "pg/guard.hpp"

namespace upstream_token::pg {

WorkerTxn::WorkerTxn() {
    pg_call([] {
        SetCurrentStatementStartTimestamp();
        StartTransactionCommand();
        SPI_connect();
        PushActiveSnapshot(GetTransactionSnapshot());
    });
}

WorkerTxn::~WorkerTxn() {
    if (open_) abort_worker_transaction();
}

void WorkerTxn::commit() {
    pg_call([] {
        SPI_finish();
        PopActiveSnapshot();
        CommitTransactionCommand();
        pgstat_report_stat(false);
        pgstat_report_activity(STATE_IDLE, nullptr);
    });
    open_ = false;
}

void abort_worker_transaction() noexcept {
    try {
        // A no-op when idle; otherwise also releases SPI, snapshots and LWLocks.
        pg_call([] { AbortCurrentTransaction(); });
    } catch (...) {
        // Nothing more can be done here; the next StartTransactionCommand resets state.
    }
}

}  // namespace upstream_token::pg
