// The refresh engine's entry point: one background worker per cluster (registered from
// _PG_init), its signals, its session settings, and what it leaves behind when it exits.
#include "pg/prelude.hpp"

#include <sys/resource.h>

extern "C" {
#include "postmaster/interrupt.h"
}

#include "pg/engine_intake.hpp"
#include "pg/engine_loop.hpp"
#include "pg/engine_session.hpp"
#include "pg/engine_shmem.hpp"
#include "pg/guard.hpp"
#include "pg/gucs.hpp"

extern "C" {
__attribute__((visibility("default"))) void upstream_token_engine_main(Datum arg);
}

namespace upstream_token::pg {
namespace {

// before_shmem_exit callback: answer waiters instead of leaving them to time out.
void on_engine_exit(int, Datum arg) {
    auto* s = reinterpret_cast<EngineShared*>(DatumGetPointer(arg));
    {
        SharedLock guard(s, LW_EXCLUSIVE);
        if (s->worker_pid == MyProcPid) {
            s->worker_pid = 0;
            s->worker_ready = false;
        }
    }
    fail_all_slots(s, "the refresh engine stopped before answering");
}

// Every exchange in flight holds a socket: the soft limit of open files (often 1,024, below a
// max_concurrent_refreshes of 1,000 plus the server's own files) is raised to the hard one.
// PostgreSQL's own file budget was set by the postmaster and does not change.
void raise_open_files_limit() {
    struct rlimit rl {};
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
    }
}

}  // namespace
}  // namespace upstream_token::pg

void upstream_token_engine_main(Datum) {
    using namespace upstream_token::pg;
    pqsignal(SIGHUP, SignalHandlerForConfigReload);
    // SIGTERM asks for an orderly stop: the loop drains the exchanges in flight and saves
    // them before exiting (a fast shutdown, a restart or pg_terminate_backend loses none).
    pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
    BackgroundWorkerUnblockSignals();
    EngineShared* s = engine_shared();
    if (s == nullptr) proc_exit(1);
    BackgroundWorkerInitializeConnection(engine_database(), nullptr, 0);
    configure_engine_session();
    raise_open_files_limit();

    before_shmem_exit(on_engine_exit, PointerGetDatum(s));
    entry_guard([&] {
        run_engine(s);
        return 0;
    });
    proc_exit(1);  // restarted by the postmaster unless the server is stopping
}
