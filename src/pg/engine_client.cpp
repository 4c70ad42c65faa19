#include "pg/prelude.hpp"
#include "pg/engine_client.hpp"

#include <cstring>

#include "pg/engine_shmem.hpp"
#include "pg/guard.hpp"
#include "pg/gucs.hpp"

namespace upstream_token::pg {

namespace {

// Finds a queued or running request for the same key, or claims a free slot.
// Returns the slot index; -1 when the table is full. Caller holds the lock exclusively.
// A forced request makes a queued one forced too; it never joins one the engine already took
// without force (that one may be answered without a refresh, e.g. during backoff).
int join_or_claim(EngineShared* s, RequestKind kind, std::string_view provider,
                  std::string_view session, std::int64_t seen_generation, bool force,
                  std::string_view params, bool* joined) {
    int free_slot = -1;
    int busy_seen = 0;
    for (int i = 0; i < s->nslots; ++i) {
        if (free_slot >= 0 && busy_seen >= s->busy_slots) break;  // nothing further to join
        RequestSlot& slot = s->slots[i];
        if (slot.state == SlotState::free) {
            if (free_slot < 0 && slot.waiters == 0) free_slot = i;
            continue;
        }
        ++busy_seen;
        if (slot.state == SlotState::done || slot.dbid != MyDatabaseId) continue;
        if (slot.kind == kind && provider == slot.provider && session == slot.session) {
            if (slot.state == SlotState::pending) {
                if (seen_generation > slot.seen_generation) slot.seen_generation = seen_generation;
                slot.force = slot.force || force;
            } else if (force && !slot.force) {
                continue;
            }
            *joined = true;
            return i;
        }
    }
    if (free_slot >= 0) {
        RequestSlot& slot = s->slots[free_slot];
        set_slot_state(s, slot, SlotState::pending);
        slot.kind = kind;
        slot.request_id = s->next_request_id++;
        slot.dbid = MyDatabaseId;
        slot.force = force;
        slot.seen_generation = seen_generation;
        copy_bounded(slot.provider, provider);
        copy_bounded(slot.session, session);
        copy_bounded(slot.params, params);
        slot.ok = false;
        slot.error_code = 0;
        slot.message[0] = slot.detail[0] = '\0';
    }
    *joined = false;
    return free_slot;
}

// The slot this backend waits on. A FATAL exit (pg_terminate_backend, a client gone noticed
// by client_connection_check_interval) runs exit callbacks but no C++ destructor, so the
// membership is kept here, where both can release it. Process-local; one wait at a time.
struct CurrentWait {
    EngineShared* s = nullptr;
    int index = -1;
    std::uint64_t request_id = 0;
};
CurrentWait current_wait;
bool exit_callback_registered = false;

// Leaves the slot this backend waits on, if any: the last waiter of a finished slot frees it.
// Runs from a destructor and from an exit callback, so it calls PostgreSQL directly (nothing
// here raises an error, and it owns no C++ object).
void leave_current_wait() noexcept {
    if (current_wait.index < 0) return;
    const CurrentWait w = current_wait;
    current_wait = CurrentWait{};  // first: never leave twice
    ConditionVariableCancelSleep();
    LWLockAcquire(&w.s->lock, LW_EXCLUSIVE);
    RequestSlot& slot = w.s->slots[w.index];
    if (slot.request_id == w.request_id && slot.waiters > 0) {
        slot.waiters--;
        if (slot.waiters == 0 && slot.state == SlotState::done) {
            set_slot_state(w.s, slot, SlotState::free);
        }
    }
    LWLockRelease(&w.s->lock);
}

// before_shmem_exit callback: a backend that exits while waiting gives its slot back.
void leave_wait_at_exit(int, Datum) {
    leave_current_wait();
}

// Membership in a slot's waiter count, released however the wait ends: result, timeout,
// cancel or statement_timeout (an ERROR unwinds through here), FATAL (the exit callback).
class SlotWait {
  public:
    SlotWait() {
        if (!exit_callback_registered) {
            pg_call([] { before_shmem_exit(leave_wait_at_exit, Datum(0)); });
            exit_callback_registered = true;
        }
    }
    ~SlotWait() { leave_current_wait(); }
    SlotWait(const SlotWait&) = delete;
    SlotWait& operator=(const SlotWait&) = delete;
};

// Reads the slot's result if it is ready. Caller must be a waiter.
bool take_result(EngineShared* s, int index, std::uint64_t request_id, RefreshResult* out) {
    SharedLock guard(s, LW_SHARED);
    const RequestSlot& slot = s->slots[index];
    if (slot.request_id != request_id) {
        out->ok = false;  // cannot happen while we wait; answer rather than hang
        out->code = ErrorCode::internal;
        out->message = "the refresh request was lost";
        return true;
    }
    if (slot.state != SlotState::done) return false;
    out->ok = slot.ok;
    out->code = static_cast<ErrorCode>(slot.error_code);
    out->message = slot.message;
    out->detail = slot.detail;
    return true;
}

}  // namespace

namespace {
// Queues a request (or joins the same one queued by another backend) and waits for it.
RefreshResult enqueue_and_wait(RequestKind kind, std::string_view provider,
                               std::string_view session, std::int64_t seen_generation, bool force,
                               std::string_view params = {}) {
    EngineShared* s = engine_shared();
    if (s == nullptr) {
        throw Error(ErrorCode::engine_unavailable,
                    "the upstream_token refresh engine is not loaded",
                    "Tokens can be read, but none can be refreshed.",
                    "Add upstream_token to shared_preload_libraries and restart the server.");
    }
    if (RecoveryInProgress()) {
        throw Error(ErrorCode::engine_unavailable, "tokens cannot be refreshed on a standby server",
                    "The refresh engine runs on the primary only.",
                    "Connect to the primary to get a refreshed token.");
    }
    if (provider.size() >= kProviderBytes || session.size() >= kSessionBytes) {
        throw Error(ErrorCode::invalid_parameter, "provider or session too long");
    }
    if (params.size() >= kParamBytes) {
        throw Error(ErrorCode::invalid_parameter, "scope, audience or code too long",
                    "What the engine is handed (JSON; a code sealed, in base64) must stay under " +
                        std::to_string(kParamBytes) + " bytes: about 3 KB of code.");
    }
    int index = -1;
    std::uint64_t request_id = 0;
    bool joined = false;
    const char* refusal = nullptr;
    bool outdated = false;
    SlotWait membership;  // before the slot is joined, so that every way out is covered
    {
        SharedLock guard(s, LW_EXCLUSIVE);
        if (s->worker_pid != 0 && s->schema_outdated && s->worker_dbid == MyDatabaseId) {
            outdated = true;
        } else if (s->worker_pid == 0 || !s->worker_ready) {
            refusal = "the upstream_token refresh engine is not running";
        } else if (s->worker_dbid != MyDatabaseId) {
            refusal = "the upstream_token refresh engine serves another database";
        } else {
            index =
                join_or_claim(s, kind, provider, session, seen_generation, force, params, &joined);
            if (index >= 0) {
                s->slots[index].waiters++;
                request_id = s->slots[index].request_id;
                current_wait = CurrentWait{s, index, request_id};  // in the same locked step
                s->counters.requests++;
                if (joined) s->counters.deduplicated++;
            }
        }
    }
    if (outdated) {
        throw Error(ErrorCode::engine_unavailable,
                    "the upstream_token refresh engine waits for the extension to be updated",
                    "The installed SQL objects are older than the library.",
                    "Run ALTER EXTENSION upstream_token UPDATE in this database.");
    }
    if (refusal != nullptr) {
        throw Error(ErrorCode::engine_unavailable, refusal, {},
                    "Check the server log, upstream_token.database, and that the extension is "
                    "created in that database.");
    }
    if (index < 0) {
        throw Error(ErrorCode::queue_full, "the refresh request table is full", {},
                    "Raise upstream_token.max_requests (needs a restart).");
    }
    if (!joined) wake_engine(s);

    RequestSlot* slot = &s->slots[index];
    const TimestampTz deadline = GetCurrentTimestamp() + wait_timeout().count();
    RefreshResult result;
    pg_call([&] { ConditionVariablePrepareToSleep(&slot->cv); });
    while (!take_result(s, index, request_id, &result)) {
        const long remaining_ms = (deadline - GetCurrentTimestamp()) / 1000;
        if (remaining_ms <= 0) {
            throw Error(ErrorCode::wait_timeout, "timed out waiting for the refresh engine",
                        "The refresh goes on and is saved when it completes.",
                        "Raise upstream_token.wait_timeout, or retry.");
        }
        // Cancel and statement_timeout arrive here as an ERROR, turned into PgError.
        pg_call(
            [&] { (void)ConditionVariableTimedSleep(&slot->cv, remaining_ms, PG_WAIT_EXTENSION); });
    }
    return result;
}
}  // namespace

RefreshResult request_refresh(std::string_view provider, std::string_view session,
                              std::int64_t seen_generation, bool force, std::string_view params) {
    return enqueue_and_wait(RequestKind::refresh, provider, session, seen_generation, force,
                            params);
}

RefreshResult request_login(std::string_view provider, std::string_view login_key,
                            std::string_view params) {
    return enqueue_and_wait(RequestKind::login, provider, login_key, 0, false, params);
}

RefreshResult request_device_login(std::string_view provider, std::string_view session,
                                   std::string_view params) {
    return enqueue_and_wait(RequestKind::device_login, provider, session, 0, false, params);
}

RefreshResult request_discovery(std::string_view issuer) {
    return enqueue_and_wait(RequestKind::discovery, "", issuer, 0, false);
}

}  // namespace upstream_token::pg
