#include "pg/prelude.hpp"
#include "pg/worker_txn.hpp"

extern "C" {
#include "replication/syncrep.h"
#include "utils/timeout.h"
}

#include <csignal>

#include "pg/engine_session.hpp"
#include "pg/guard.hpp"
#include "pg/gucs.hpp"

namespace upstream_token::pg {

namespace {

// The timer that cuts a commit's wait for a synchronous standby (registered by the engine),
// and what its handler reports: state PostgreSQL's timeout machinery needs us to keep.
std::optional<TimeoutId> standby_timer;
volatile sig_atomic_t standby_timer_fired = 0;

// Timer handler (signal context): asks for a query cancel, which SyncRepWaitForLSN honours by
// ending the wait with a WARNING; the commit is already durable locally.
void on_standby_wait_timeout() {
    standby_timer_fired = 1;
    QueryCancelPending = true;
    InterruptPending = true;
    SetLatch(MyLatch);
}

// Arms the backstop for one commit when a synchronous standby is configured; disarms it when it
// goes, taking back a cancel request of its own that nothing consumed (so it cannot hit the
// engine's next statement).
class StandbyWaitBackstop {
  public:
    StandbyWaitBackstop() : ms_(standby_wait_timeout_ms()) {
        if (!standby_timer || ms_ <= 0 || SyncRepStandbyNames == nullptr ||
            SyncRepStandbyNames[0] == '\0') {
            return;
        }
        standby_timer_fired = 0;
        const TimeoutId id = *standby_timer;
        const int ms = ms_;
        pg_call([&] { enable_timeout_after(id, ms); });
        armed_ = true;
    }
    ~StandbyWaitBackstop() { disarm(); }
    StandbyWaitBackstop(const StandbyWaitBackstop&) = delete;
    StandbyWaitBackstop& operator=(const StandbyWaitBackstop&) = delete;

    // True when the timer ended the commit's wait (the wait consumed the cancel request).
    bool cut() const { return armed_ && standby_timer_fired != 0 && !QueryCancelPending; }
    int ms() const { return ms_; }

    void disarm() noexcept {
        if (!armed_) return;
        armed_ = false;
        try {
            const TimeoutId id = *standby_timer;
            pg_call([&] { disable_timeout(id, false); });
        } catch (...) {
        }
        if (standby_timer_fired != 0 && QueryCancelPending) QueryCancelPending = false;
    }

  private:
    int ms_;
    bool armed_ = false;
};

// Tells the log that a commit did not wait for the standby's confirmation.
void log_cut(int ms) {
    try {
        pg_call([&] {
            ereport(LOG, (errmsg("upstream_token engine: stopped waiting for the synchronous "
                                 "standby after %d ms; the commit is durable locally",
                                 ms),
                          errhint("The wait is bounded by upstream_token.standby_wait_timeout; "
                                  "check the standbys named in synchronous_standby_names.")));
        });
    } catch (...) {
    }
}

}  // namespace

void register_standby_wait_backstop() {
    if (!standby_timer) standby_timer = RegisterTimeout(USER_TIMEOUT, on_standby_wait_timeout);
}

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
    StandbyWaitBackstop backstop;  // a missing synchronous standby must not stall the engine
    pg_call([&] {
        SPI_finish();
        PopActiveSnapshot();
        CommitTransactionCommand();
        // Only after the commit: deferred triggers and commit-time work still run restricted.
        SetUserIdAndSecContext(user, context);
    });
    open_ = false;
    const bool cut = backstop.cut();
    backstop.disarm();
    if (cut) log_cut(backstop.ms());
    pg_call([] {
        pgstat_report_stat(false);
        pgstat_report_activity(STATE_IDLE, nullptr);
    });
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
