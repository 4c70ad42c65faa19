#include "pg/engine_shmem.hpp"

#include <cstddef>
#include <cstdio>
#include <cstring>

#include "pg/guard.hpp"
#include "pg/gucs.hpp"

namespace upstream_token::pg {

namespace {
// Hook chain and the attached segment: process globals PostgreSQL's hook API requires.
shmem_request_hook_type prev_shmem_request = nullptr;
shmem_startup_hook_type prev_shmem_startup = nullptr;
EngineShared* shared_state = nullptr;
bool scan_wanted_at_commit = false;  // backend-local: set by scan_on_commit

// At commit, tells the engine about tokens stored in the transaction; at abort, forgets.
void on_xact_event(XactEvent event, void*) {
    if (!scan_wanted_at_commit) return;
    if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT) {
        scan_wanted_at_commit = false;
        return;
    }
    if (event != XACT_EVENT_COMMIT) return;
    scan_wanted_at_commit = false;
    EngineShared* s = shared_state;
    if (s == nullptr) return;
    int procno = -1;
    LWLockAcquire(&s->lock, LW_EXCLUSIVE);
    s->scan_requested = true;
    if (s->worker_pid != 0) procno = s->worker_procno;
    LWLockRelease(&s->lock);
    if (procno >= 0) SetLatch(&ProcGlobal->allProcs[procno].procLatch);
}

Size shared_size() {
    return add_size(offsetof(EngineShared, slots),
                    mul_size(static_cast<Size>(max_requests()), sizeof(RequestSlot)));
}

// Asks the postmaster for our segment before shared memory is sized.
void request_shmem() {
    if (prev_shmem_request != nullptr) prev_shmem_request();
    RequestAddinShmemSpace(shared_size());
}

// Creates (postmaster) or attaches to (EXEC_BACKEND children) the segment.
void startup_shmem() {
    if (prev_shmem_startup != nullptr) prev_shmem_startup();
    LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
    bool found = false;
    auto* s =
        static_cast<EngineShared*>(ShmemInitStruct("upstream_token engine", shared_size(), &found));
    if (!found) {
        std::memset(static_cast<void*>(s), 0, shared_size());
        s->lock_tranche = LWLockNewTrancheId();
        LWLockInitialize(&s->lock, s->lock_tranche);
        s->nslots = max_requests();
        s->next_request_id = 1;
        for (int i = 0; i < s->nslots; ++i) ConditionVariableInit(&s->slots[i].cv);
    }
    LWLockRelease(AddinShmemInitLock);
    LWLockRegisterTranche(s->lock_tranche, "upstream_token");
    shared_state = s;
}

// The engine's registration with the postmaster.
void register_engine() {
    BackgroundWorker worker{};
    worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
    // Not on a standby: the postmaster starts it when recovery ends (promotion included).
    worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
    worker.bgw_restart_time = 5;
    std::snprintf(worker.bgw_library_name, BGW_MAXLEN, "upstream_token");
    std::snprintf(worker.bgw_function_name, BGW_MAXLEN, "upstream_token_engine_main");
    std::snprintf(worker.bgw_name, BGW_MAXLEN, "upstream_token engine");
    std::snprintf(worker.bgw_type, BGW_MAXLEN, "upstream_token engine");
    RegisterBackgroundWorker(&worker);
}
}  // namespace

void engine_preload_init() {
    prev_shmem_request = shmem_request_hook;
    shmem_request_hook = request_shmem;
    prev_shmem_startup = shmem_startup_hook;
    shmem_startup_hook = startup_shmem;
    register_engine();
}

EngineShared* engine_shared() {
    return shared_state;
}

void scan_on_commit(std::optional<TimestampTz> window_start) {
    EngineShared* s = shared_state;
    if (s == nullptr || scan_wanted_at_commit) return;
    SharedLock guard(s, LW_SHARED);
    if (s->worker_pid != 0 && (!window_start || *window_start < s->next_scan_at)) {
        scan_wanted_at_commit = true;
    }
}

void register_commit_wakeup() {
    RegisterXactCallback(on_xact_event, nullptr);
}

SharedLock::SharedLock(EngineShared* s, LWLockMode mode) : lock_(&s->lock) {
    LWLock* lock = lock_;
    pg_call([&] { (void)LWLockAcquire(lock, mode); });
}

void wake_engine(EngineShared* shared) {
    int procno = -1;
    {
        SharedLock guard(shared, LW_SHARED);
        if (shared->worker_pid != 0) procno = shared->worker_procno;
    }
    if (procno >= 0) SetLatch(&ProcGlobal->allProcs[procno].procLatch);
}

}  // namespace upstream_token::pg
