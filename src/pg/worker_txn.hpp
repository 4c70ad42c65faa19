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

    // Commits (durably: the engine runs with synchronous_commit = on).
    void commit();

  private:
    bool open_ = true;
    Oid saved_user_ = InvalidOid;  // the identity the transaction switched from, restored on
    int saved_context_ = 0;        // commit (an abort restores it by itself)
};

// Aborts whatever transaction an error left behind (worker error recovery).
void abort_worker_transaction() noexcept;

}  // namespace upstream_token::pg
