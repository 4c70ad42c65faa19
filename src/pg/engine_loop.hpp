// The engine's loop: one process, one WaitEventSet (latch, postmaster death, the HTTP
// client's fd). It only wires the parts together — intake, planning, refresh, saving,
// revocation, discovery, maintenance — each of which contains its own failures.
#pragma once

#include "pg/engine_shmem.hpp"

namespace upstream_token::pg {

// Runs the engine until it is asked to stop and has drained (or its drain time ran out).
void run_engine(EngineShared* s);

}  // namespace upstream_token::pg
