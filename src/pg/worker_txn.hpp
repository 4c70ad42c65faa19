// A transaction of the engine's own: started, connected to SPI with a snapshot, run as the
// extension's owner inside a security-restricted operation, and either committed explicitly
// or aborted by the destructor. No transaction outlives a step.
#pragma once

#include "pg/prelude.hpp"

namespace upstream_token::pg {

class WorkerTxn {
  public:
    WorkerTxn();
    ~WorkerTxn();
    WorkerTxn(const WorkerTxn&) = delete;
    WorkerTxn& operator=(const WorkerTxn&) = delete;

    // Commits (durably: the engine runs with synchronous_commit = on). The wait for a
    // synchronous standby's confirmation is bounded by upstream_token.standby_wait_timeout.
    void commit();

  private:
    bool open_ = true;
    Oid saved_user_ = InvalidOid;  // the identity the transaction switched from, restored on
    int saved_context_ = 0;        // commit (an abort restores it by itself)
};

// Aborts whatever transaction an error left behind (worker error recovery).
void abort_worker_transaction() noexcept;

// Registers the timer that bounds a commit's wait for a synchronous standby
// (upstream_token.standby_wait_timeout). Called once by the engine after it connected.
void register_standby_wait_backstop();

}  // namespace upstream_token::pg
