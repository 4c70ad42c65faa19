#include "pg/prelude.hpp"
#include "pg/engine_loop.hpp"

extern "C" {
#include "postmaster/interrupt.h"
#include "storage/latch.h"
}

#include <algorithm>

#include "core/http_multi.hpp"
#include "pg/compat.hpp"
#include "pg/engine_discovery.hpp"
#include "pg/engine_intake.hpp"
#include "pg/engine_login.hpp"
#include "pg/engine_planner.hpp"
#include "pg/engine_refresher.hpp"
#include "pg/engine_revoker.hpp"
#include "pg/engine_saver.hpp"
#include "pg/engine_stage.hpp"
#include "pg/engine_stats.hpp"
#include "pg/guard.hpp"
#include "pg/schema_version.hpp"
#include "pg/gucs.hpp"
#include "pg/spi.hpp"
#include "pg/store.hpp"
#include "pg/worker_txn.hpp"

namespace upstream_token::pg {

namespace {

constexpr Micros kReadyCheck{5000000};    // how often the engine looks for its extension
constexpr std::size_t kMaxHeld = 10000;   // answers held unsaved before intake pauses
constexpr Micros kBlockedRecheck{50000};  // due refreshes that could not start, looked at again
constexpr const char* kStopping = "the refresh engine is stopping";

class Engine {
  public:
    explicit Engine(EngineShared* s)
        : s_(s),
          intake_(s),
          stats_(s),
          planner_(stats_),
          refresher_(http_, planner_, intake_, stats_),
          saver_(stats_),
          revoker_(http_),
          discovery_(http_, intake_),
          logins_(http_, intake_) {}

    void run();

  private:
    void pass(bool reloaded);
    void take_answers();
    void take_requests();
    void begin_stop();
    bool drained() const {
        return refresher_.in_flight() == 0 && saver_.held() == 0 && logins_.in_flight() == 0 &&
               logins_.held() == 0;
    }
    long wait_ms() const;

    EngineShared* s_;
    HttpMulti http_;
    Intake intake_;
    EngineStats stats_;
    Planner planner_;
    Refresher refresher_;
    Saver saver_;
    Revoker revoker_;
    Discovery discovery_;
    Logins logins_;
    Maintenance maintenance_;
    Stage ready_stage_{"looking for the extension"};
    Stage http_stage_{"driving HTTP exchanges"};
    Stage intake_stage_{"taking requests"};
    Stage start_stage_{"starting refreshes"};
    bool ready_ = false;
    bool outdated_logged_ = false;
    MonoTime next_ready_check_{};
    bool stopping_ = false;
    MonoTime stop_deadline_{};
};

// The extension's version in the engine's database, if it is installed (own transaction).
std::optional<std::string> extension_version() {
    WorkerTxn txn;
    auto version = installed_version();
    txn.commit();
    return version;
}

// Finished exchanges go to their owner; a refresh answer is held by the saver from here on.
void Engine::take_answers() {
    http_stage_.run([&] { http_.drive(); });
    for (const HttpResult& r : http_.take_finished()) {
        if (revoker_.on_result(r) || discovery_.on_result(r) || logins_.on_result(r)) continue;
        if (auto job = refresher_.on_result(r)) saver_.add(std::move(*job));
    }
    logins_.save_held();
    for (RefreshJob& job : saver_.save_due()) refresher_.finish(job);
}

// Claims what backends queued; while stopping, answers it at once instead.
void Engine::take_requests() {
    if (!stopping_ && saver_.held() >= kMaxHeld) return;  // save what is held first
    intake_stage_.run([&] {
        Claimed claimed = intake_.claim();
        if (stopping_) {
            JobResult stop;
            stop.code = ErrorCode::engine_unavailable;
            stop.message = kStopping;
            for (const RefreshJob& job : claimed.refresh)
                intake_.answer(job.slot, job.request_id, stop);
            for (const DiscoveryRequest& d : claimed.discovery)
                intake_.answer(d.slot, d.request_id, stop);
            for (const LoginRequest& l : claimed.logins) intake_.answer(l.slot, l.request_id, stop);
            return;
        }
        refresher_.enqueue(std::move(claimed.refresh));
        for (const DiscoveryRequest& d : claimed.discovery) discovery_.start(d);
        for (const LoginRequest& l : claimed.logins) logins_.start(l);
    });
}

void Engine::pass(bool reloaded) {
    const MonoTime now = mono_now();
    if (!stopping_ && (!ready_ || reloaded || now >= next_ready_check_)) {
        next_ready_check_ = now + kReadyCheck;
        std::optional<std::string> version;
        if (ready_stage_.run([&] { version = extension_version(); })) {
            // An older extension than the library waits for ALTER EXTENSION ... UPDATE: its
            // tables lack what the engine writes.
            const bool outdated = version && *version != kSchemaVersion;
            const bool usable = version && !outdated;
            if (outdated && !outdated_logged_) {
                const std::string why =
                    "the extension is version " + *version + ", the library " + kSchemaVersion +
                    ": refreshes wait for ALTER EXTENSION upstream_token UPDATE";
                log_recovered("waiting", why.c_str());
            }
            outdated_logged_ = outdated;
            if (usable && !ready_) {
                {
                    SharedLock guard(s_, LW_EXCLUSIVE);
                    s_->scan_requested = true;  // a new or re-created extension: plan anew
                }
                logins_.recover();  // before any request is taken: nothing is being redeemed
            }
            ready_ = usable;
            intake_.set_ready(ready_, outdated);
        }
    }
    if (!ready_ && !stopping_) return;
    take_answers();
    take_requests();
    if (stopping_) refresher_.abandon_unstarted(kStopping);
    if (!stopping_) {
        bool requested = reloaded;
        {
            SharedLock guard(s_, LW_EXCLUSIVE);
            requested |= s_->scan_requested;
            s_->scan_requested = false;
        }
        if (requested) {
            forget_cached_providers();
            logins_.poll_soon();
        }
        planner_.scan_if_due(requested, refresher_.busy());
        const bool queued = refresher_.take_orphan_queued();
        revoker_.run_if_due(requested || logins_.take_revocation_queued() || queued);
        const bool may_start = !saver_.blocked() && saver_.held() < kMaxHeld;
        // Room to keep every connection of a full set of exchanges (and revocations) open.
        http_.set_connection_cache(2L * max_concurrent_refreshes());
        start_stage_.run([&] { refresher_.start(may_start); });
        logins_.poll_if_due(may_start);
        http_stage_.run([&] { http_.drive(); });
        maintenance_.run_if_due();
    }
    stats_.in_flight(refresher_.in_flight() + revoker_.in_flight() + discovery_.in_flight() +
                     logins_.in_flight());
}

// An orderly stop (SIGTERM: smart or fast shutdown, restart, pg_terminate_backend): nothing
// new starts, callers not yet served are answered, and the exchanges in flight are finished
// and saved within upstream_token.shutdown_timeout.
void Engine::begin_stop() {
    stopping_ = true;
    stop_deadline_ = mono_now() + shutdown_timeout();
    intake_.set_ready(false);
    refresher_.abandon_unstarted(kStopping);
    discovery_.abandon_all(kStopping);
    logins_.abandon_all(kStopping);
    revoker_.abandon_all();  // the queue keeps them
}

long Engine::wait_ms() const {
    const MonoTime now = mono_now();
    MonoTime until = now + kReadyCheck;
    auto earlier = [&](std::optional<MonoTime> t) {
        if (t) until = std::min(until, *t);
    };
    if (stopping_) {
        earlier(stop_deadline_);
    } else if (ready_) {
        earlier(planner_.next_scan());
        earlier(maintenance_.next_due());
        earlier(revoker_.next_due());
        earlier(refresher_.next_retry());
        earlier(logins_.next_due(false));
        // A plan entry still due after start() waits for a free place (or its provider's
        // pause): the answer that frees one wakes the loop, so it is looked at again after a
        // short while, not at once (that was a spin while the engine is at its limit).
        if (auto due = planner_.schedule().next_due()) {
            earlier(now + std::max(kBlockedRecheck, *due - now_time()));
        }
    }
    // Saves and exchanges are driven only while the engine serves (or stops): due times of
    // theirs would otherwise stay in the past and spin the loop until it serves again.
    if (ready_ || stopping_) {
        earlier(saver_.next_retry());
        if (auto t = http_.next_timeout()) earlier(now + *t);
    }
    if (stopping_) earlier(logins_.next_due(true));
    const Micros wait = std::max(Micros{0}, until - now);
    return static_cast<long>((wait.count() + 999) / 1000);
}

void Engine::run() {
    intake_.attach();
    WaitEventSet* set = pg_call([&] {
        WaitEventSet* w = compat::create_wait_event_set(3);
        AddWaitEventToSet(w, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, nullptr);
        AddWaitEventToSet(w, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, nullptr, nullptr);
        AddWaitEventToSet(w, WL_SOCKET_READABLE, http_.wait_fd(), nullptr, nullptr);
        return w;
    });
    MemoryContext pass_cxt = pg_call([] {
        return AllocSetContextCreate(TopMemoryContext, "upstream_token engine pass",
                                     ALLOCSET_DEFAULT_SIZES);
    });
    for (;;) {
        WaitEvent events[3];
        bool reloaded = false;
        const long timeout = wait_ms();
        pg_call([&] {
            (void)WaitEventSetWait(set, timeout, events, 3, PG_WAIT_EXTENSION);
            ResetLatch(MyLatch);
            CHECK_FOR_INTERRUPTS();
            if (ConfigReloadPending) {
                ConfigReloadPending = false;
                ProcessConfigFile(PGC_SIGHUP);
                reloaded = true;  // thresholds and limits may have changed: scan again
            }
            reloaded |= take_applied_reload();  // or a key check applied one during the pass
        });
        if (ShutdownRequestPending && !stopping_) begin_stop();
        MemoryContext old = MemoryContextSwitchTo(pass_cxt);
        pass(reloaded);
        MemoryContextSwitchTo(old);
        MemoryContextReset(pass_cxt);
        if (stopping_ && drained()) return;
        if (stopping_ && mono_now() >= stop_deadline_) {
            const std::string lost =
                "stopped with " + std::to_string(refresher_.in_flight() + logins_.in_flight()) +
                " exchanges in flight and " + std::to_string(saver_.held() + logins_.held()) +
                " answers not saved (upstream_token.shutdown_timeout)";
            log_recovered("shutdown", lost.c_str());
            return;
        }
    }
}

}  // namespace

void run_engine(EngineShared* s) {
    Engine engine(s);
    engine.run();
}

}  // namespace upstream_token::pg
