// The refresh engine: one background worker per cluster. It claims requests from shared
// memory, runs refreshes with many HTTP exchanges in flight, and answers the waiters. It
// waits in one WaitEventSet on its latch, postmaster death and the HTTP client's fd.
#include "pg/prelude.hpp"

extern "C" {
#include "postmaster/interrupt.h"
#include "storage/latch.h"
#include "utils/lsyscache.h"
}

#include <cstring>
#include <deque>
#include <map>
#include <random>

#include "core/http_multi.hpp"
#include "core/token_response.hpp"
#include "pg/engine_shmem.hpp"
#include "pg/guard.hpp"
#include "pg/gucs.hpp"
#include "pg/refresh_job.hpp"
#include "pg/spi.hpp"
#include "pg/worker_txn.hpp"

extern "C" {
__attribute__((visibility("default"))) void upstream_token_engine_main(Datum arg);
}

namespace upstream_token::pg {
namespace {

constexpr long kIdleCheckMs = 5000;       // how often an idle engine looks for the extension
constexpr Micros kLockRetry{20000};       // another refresher holds the advisory lock
constexpr Micros kPersistRetry{100000};   // a client transaction holds the row
constexpr std::size_t kMaxHeldResults = 10000;

// Copies a string into a fixed shared-memory field.
template <std::size_t N>
void put(char (&dst)[N], const std::string& src) {
    const std::size_t n = std::min(src.size(), N - 1);
    std::memcpy(dst, src.data(), n);
    dst[n] = '\0';
}

// Logs an error the engine recovered from; messages carry no secrets by construction.
void log_recovered(const char* what, const char* message) {
    try {
        pg_call([&] { ereport(LOG, (errmsg("upstream_token engine: %s: %s", what, message))); });
    } catch (...) {
    }
}

// Answers every open request with an error: nothing in shared memory outlives an engine.
void fail_all_slots(EngineShared* s, const char* why) {
    {
        SharedLock guard(s, LW_EXCLUSIVE);
        for (int i = 0; i < s->nslots; ++i) {
            RequestSlot& slot = s->slots[i];
            if (slot.state != SlotState::pending && slot.state != SlotState::working) continue;
            slot.ok = false;
            slot.error_code = static_cast<int>(ErrorCode::refresh_failed);
            std::snprintf(slot.message, sizeof slot.message, "%s", why);
            slot.detail[0] = '\0';
            slot.state = slot.waiters == 0 ? SlotState::free : SlotState::done;
        }
    }
    for (int i = 0; i < s->nslots; ++i) ConditionVariableBroadcast(&s->slots[i].cv);
}

class Engine {
public:
    explicit Engine(EngineShared* s) : s_(s), rng_(std::random_device{}()) {}

    // Registers this process and answers requests a previous engine left behind.
    void attach() {
        claimed_.assign(static_cast<std::size_t>(s_->nslots), false);
        {
            SharedLock guard(s_, LW_EXCLUSIVE);
            s_->worker_pid = MyProcPid;
            s_->worker_procno = MyProc->pgprocno;
            s_->worker_dbid = MyDatabaseId;
            s_->worker_ready = false;
            s_->worker_starts++;
        }
        fail_all_slots(s_, "the refresh engine restarted before answering");
    }

    void run();

private:
    bool extension_ready();
    long wait_timeout_ms() const;
    void claim_requests();
    void start_job(RefreshJob job);
    void on_http_result(const HttpResult& r);
    void persist(RefreshJob job);
    void finish(RefreshJob& job);
    void run_deferred();
    void publish(const RefreshJob& job);
    void count(const JobResult& r);
    double unit_random() { return std::uniform_real_distribution<double>(0.0, 1.0)(rng_); }

    EngineShared* s_;
    HttpMulti http_;
    std::map<std::uint64_t, RefreshJob> in_flight_;  // by HTTP request id
    std::deque<RefreshJob> deferred_;                // waiting for a lock, retried in time
    std::vector<bool> claimed_;                      // slots this engine is working on
    std::mt19937_64 rng_;
};

bool Engine::extension_ready() {
    WorkerTxn txn;
    const Oid ext = pg_call([] { return get_extension_oid("upstream_token", true); });
    txn.commit();
    return OidIsValid(ext);
}

// Takes every pending request of this database into the engine.
void Engine::claim_requests() {
    std::vector<RefreshJob> claimed;
    {
        SharedLock guard(s_, LW_EXCLUSIVE);
        for (int i = 0; i < s_->nslots; ++i) {
            RequestSlot& slot = s_->slots[i];
            if (slot.state != SlotState::pending || claimed_[i]) continue;
            slot.state = SlotState::working;
            claimed_[i] = true;
            RefreshJob job;
            job.slot = i;
            job.request_id = slot.request_id;
            job.provider = slot.provider;
            job.session = slot.session;
            job.seen_generation = slot.seen_generation;
            job.force = slot.force;
            claimed.push_back(std::move(job));
        }
    }
    for (auto& job : claimed) start_job(std::move(job));
}

// Begins one refresh: answered at once, sent, or deferred when the lock is busy.
void Engine::start_job(RefreshJob job) {
    HttpRequestSpec spec;
    BeginStep step;
    try {
        step = begin_refresh(job, spec);
    } catch (const std::exception& e) {
        abort_worker_transaction();
        job.result.ok = false;
        job.result.code = ErrorCode::refresh_failed;
        job.result.message = "the engine could not prepare the refresh";
        job.result.detail = e.what();
        log_recovered("preparing a refresh", e.what());
        finish(job);
        return;
    }
    switch (step) {
        case BeginStep::answered:
            finish(job);
            return;
        case BeginStep::lock_busy:
            job.retry_at = now_time() + kLockRetry;
            deferred_.push_back(std::move(job));
            return;
        case BeginStep::send:
            break;
    }
    const std::uint64_t id = http_.start(spec);
    {
        SharedLock guard(s_, LW_EXCLUSIVE);
        s_->counters.network_calls++;
    }
    in_flight_.emplace(id, std::move(job));
}

void Engine::on_http_result(const HttpResult& r) {
    auto it = in_flight_.find(r.id);
    if (it == in_flight_.end()) return;
    RefreshJob job = std::move(it->second);
    in_flight_.erase(it);
    job.outcome = r.transport_ok
                      ? interpret_token_response(r.status, r.body, r.retry_after, now_time())
                      : transport_failure(r.transport_error);
    persist(std::move(job));
}

// Saves an exchange's outcome; a busy row keeps it in memory and tries again soon.
void Engine::persist(RefreshJob job) {
    try {
        if (persist_outcome(job, unit_random()) == PersistStep::row_locked) {
            job.attempts++;
            job.retry_at = now_time() + kPersistRetry;
            {
                SharedLock guard(s_, LW_EXCLUSIVE);
                s_->counters.persist_retries++;
            }
            deferred_.push_back(std::move(job));
            return;
        }
    } catch (const std::exception& e) {
        abort_worker_transaction();
        log_recovered("saving a refresh result", e.what());
        job.attempts++;
        if (job.attempts < 50) {
            job.retry_at = now_time() + kPersistRetry * job.attempts;
            deferred_.push_back(std::move(job));
            return;
        }
        job.result.ok = false;
        job.result.code = ErrorCode::refresh_failed;
        job.result.message = "the engine could not save the refresh result";
        job.result.detail = e.what();
    }
    finish(job);
}

// Releases the lock, answers the waiters and counts the result.
void Engine::finish(RefreshJob& job) {
    release_refresh_lock(job);
    count(job.result);
    publish(job);
}

void Engine::count(const JobResult& r) {
    SharedLock guard(s_, LW_EXCLUSIVE);
    EngineCounters& c = s_->counters;
        if (!r.network) c.skipped++;
        if (r.ok && r.network) c.refreshed++;
        if (!r.ok && r.network) {
            switch (r.code) {
                case ErrorCode::reauth_required: c.failed_reauth++; break;
                case ErrorCode::provider_misconfigured: c.failed_client++; break;
                case ErrorCode::invalid_binding: c.invalid_binding++; break;
                default: c.failed_transient++; break;
            }
        }
}

void Engine::publish(const RefreshJob& job) {
    if (job.slot < 0) return;
    RequestSlot& slot = s_->slots[job.slot];
    {
        SharedLock guard(s_, LW_EXCLUSIVE);
        if (slot.request_id == job.request_id && slot.state == SlotState::working) {
            slot.ok = job.result.ok;
            slot.error_code = static_cast<int>(job.result.code);
            put(slot.message, job.result.message);
            put(slot.detail, job.result.detail);
            slot.state = slot.waiters == 0 ? SlotState::free : SlotState::done;
        }
    }
    claimed_[job.slot] = false;
    pg_call([&] { ConditionVariableBroadcast(&slot.cv); });
}

void Engine::run_deferred() {
    const Time now = now_time();
    const std::size_t n = deferred_.size();
    for (std::size_t i = 0; i < n; ++i) {
        RefreshJob job = std::move(deferred_.front());
        deferred_.pop_front();
        if (job.retry_at > now) {
            deferred_.push_back(std::move(job));
        } else if (job.outcome) {
            persist(std::move(job));
        } else {
            start_job(std::move(job));
        }
    }
}

long Engine::wait_timeout_ms() const {
    Micros wait{kIdleCheckMs * 1000};
    if (auto t = http_.next_timeout()) wait = std::min(wait, *t);
    const Time now = now_time();
    for (const auto& job : deferred_) wait = std::min(wait, std::max(Micros{0}, job.retry_at - now));
    return static_cast<long>((wait.count() + 999) / 1000);
}

void Engine::run() {
    WaitEventSet* set = pg_call([&] {
        WaitEventSet* w = CreateWaitEventSet(TopMemoryContext, 3);
        AddWaitEventToSet(w, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, nullptr);
        AddWaitEventToSet(w, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, nullptr, nullptr);
        AddWaitEventToSet(w, WL_SOCKET_READABLE, http_.wait_fd(), nullptr, nullptr);
        return w;
    });
    bool ready = false;
    MemoryContext loop_cxt = pg_call([] {
        return AllocSetContextCreate(TopMemoryContext, "upstream_token engine loop",
                                     ALLOCSET_DEFAULT_SIZES);
    });
    for (;;) {
        const long timeout = ready ? wait_timeout_ms() : kIdleCheckMs;
        WaitEvent events[3];
        pg_call([&] {
            (void)WaitEventSetWait(set, timeout, events, 3, PG_WAIT_EXTENSION);
            ResetLatch(MyLatch);
            CHECK_FOR_INTERRUPTS();
            if (ConfigReloadPending) {
                ConfigReloadPending = false;
                ProcessConfigFile(PGC_SIGHUP);
            }
        });
        MemoryContext old = MemoryContextSwitchTo(loop_cxt);
        try {
            if (!ready) {
                ready = extension_ready();
                if (ready) {
                    SharedLock guard(s_, LW_EXCLUSIVE);
                    s_->worker_ready = true;
                }
            }
            if (ready) {
                if (deferred_.size() < kMaxHeldResults) claim_requests();
                http_.drive();
                for (const HttpResult& r : http_.take_finished()) on_http_result(r);
                run_deferred();
            }
        } catch (const std::exception& e) {
            abort_worker_transaction();
            log_recovered("loop", e.what());
        }
        MemoryContextSwitchTo(old);
        MemoryContextReset(loop_cxt);
    }
}

// before_shmem_exit callback: answer waiters instead of leaving them to time out.
void on_engine_exit(int, Datum arg) {
    auto* s = reinterpret_cast<EngineShared*>(DatumGetPointer(arg));
    try {
        {
            SharedLock guard(s, LW_EXCLUSIVE);
            if (s->worker_pid == MyProcPid) {
                s->worker_pid = 0;
                s->worker_ready = false;
            }
        }
        fail_all_slots(s, "the refresh engine stopped before answering");
    } catch (...) {
    }
}

}  // namespace
}  // namespace upstream_token::pg

void upstream_token_engine_main(Datum) {
    using namespace upstream_token::pg;
    pqsignal(SIGHUP, SignalHandlerForConfigReload);
    pqsignal(SIGTERM, die);
    BackgroundWorkerUnblockSignals();
    EngineShared* s = engine_shared();
    if (s == nullptr) proc_exit(1);
    BackgroundWorkerInitializeConnection(engine_database(), nullptr, 0);
    // A rotated refresh token lost to a crash is a broken link: commit durably, and never
    // wait long on a row a client transaction holds.
    SetConfigOption("synchronous_commit", "on", PGC_SUSET, PGC_S_OVERRIDE);
    SetConfigOption("lock_timeout", "50", PGC_SUSET, PGC_S_OVERRIDE);
    SetConfigOption("statement_timeout", "10000", PGC_SUSET, PGC_S_OVERRIDE);
    SetConfigOption("application_name", "upstream_token engine", PGC_SUSET, PGC_S_OVERRIDE);
    pgstat_report_appname("upstream_token engine");

    entry_guard([&] {
        before_shmem_exit(on_engine_exit, PointerGetDatum(s));
        Engine engine(s);
        engine.attach();
        engine.run();
        return 0;
    });
    proc_exit(1);
}
