// A transaction of the engine's own: started, connected to SPI with a snapshot, and either
// committed explicitly or aborted by the destructor. No transaction outlives a step.
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
};

// Aborts whatever transaction an error left behind (worker error recovery).
void abort_worker_transaction() noexcept;

}  // namespace upstream_token::pg
