// Shared memory between backends and the refresh engine: a fixed table of refresh
// requests, each with its own condition variable, and the engine's registration.
// Nothing here is a pointer into one process's memory, and no secret is ever stored here.
#pragma once

#include "pg/prelude.hpp"

#include <cstdint>
#include <optional>

namespace upstream_token::pg {

constexpr int kProviderBytes = 64;
constexpr int kSessionBytes = 513;
constexpr int kMessageBytes = 256;
constexpr int kParamBytes = 4096;  // a login's sealed code: about 3 KB of code fits

enum class SlotState : std::uint32_t { free = 0, pending, working, done };

// What a request asks of the engine.
enum class RequestKind : std::uint32_t {
    refresh = 0,       // refresh (provider, session)
    discovery = 1,     // fetch the metadata of the issuer held in `session`
    login = 2,         // redeem the code of the login whose key is in `session`
    device_login = 3,  // ask the provider for a device code for (provider, session)
};

struct RequestSlot {
    SlotState state;
    RequestKind kind;
    std::uint32_t waiters;     // backends waiting on this slot
    std::uint64_t request_id;  // unique per use of the slot
    Oid dbid;
    bool force;
    std::int64_t seen_generation;  // the row generation the requester saw
    char provider[kProviderBytes];
    char session[kSessionBytes];  // the session; for discovery the issuer URL
    // What the engine needs beyond the names, as JSON: a grant's scope and audience (the row
    // may not exist yet), a login's sealed code. Never a secret in clear.
    char params[kParamBytes];
    // Result, valid in state done.
    bool ok;
    int error_code;  // upstream_token::ErrorCode when !ok
    char message[kMessageBytes];
    char detail[kMessageBytes];
    ConditionVariable cv;
};

// Counters for the statistics view (monotonic since server start).
struct EngineCounters {
    std::uint64_t requests;       // requests enqueued by backends
    std::uint64_t deduplicated;   // requests that joined one already queued
    std::uint64_t refreshed;      // refreshes saved
    std::uint64_t skipped;        // requests answered without a network call
    std::uint64_t network_calls;  // token endpoint calls
    std::uint64_t failed_transient;
    std::uint64_t failed_reauth;
    std::uint64_t failed_client;
    std::uint64_t failed_protocol;
    std::uint64_t invalid_binding;
    std::uint64_t persist_retries;  // persists delayed by a locked row
    std::uint64_t proactive;        // refreshes the engine started on its own
};

constexpr int kLatencyBuckets = 24;  // log2 milliseconds: [0,1) [1,2) [2,4) ...
constexpr int kMaxProviderStats = 64;

// Per-provider counters, found by name (first free entry taken on first use).
struct ProviderStats {
    char name[kProviderBytes];
    int in_flight;
    std::uint64_t refreshed;
    std::uint64_t failed_transient;
    std::uint64_t failed_reauth;
    std::uint64_t failed_client;
    std::uint64_t invalid_binding;
    std::uint64_t latency[kLatencyBuckets];
    TimestampTz paused_until;
};

struct EngineShared {
    LWLock lock;
    int lock_tranche;
    pid_t worker_pid;      // 0 when no engine runs
    int worker_procno;     // pgprocno of the engine, for its latch
    Oid worker_dbid;       // database the engine serves (InvalidOid until connected)
    bool worker_ready;     // the extension exists there and the engine takes requests
    bool schema_outdated;  // the extension there is older than the library: UPDATE needed
    std::uint64_t worker_starts;
    std::uint64_t next_request_id;
    EngineCounters counters;
    TimestampTz next_scan_at;  // when the engine scans for due tokens next
    bool scan_requested;       // a committed store wants an earlier scan
    int planned;               // proactive refreshes in the engine's plan
    int http_in_flight;        // exchanges with providers under way
    ProviderStats providers[kMaxProviderStats];
    int nslots;
    // Slots pending, and slots not free: the scans of the table stop once they have seen them
    // all (5 KB a slot; allocation takes the lowest free one, so used slots sit at the start).
    int pending_slots;
    int busy_slots;
    RequestSlot slots[FLEXIBLE_ARRAY_MEMBER];
};

// Moves a slot to `to`, keeping pending_slots and busy_slots exact; every state change goes
// through here (the caller holds the lock exclusively).
inline void set_slot_state(EngineShared* s, RequestSlot& slot, SlotState to) noexcept {
    s->pending_slots += static_cast<int>(to == SlotState::pending) -
                        static_cast<int>(slot.state == SlotState::pending);
    s->busy_slots +=
        static_cast<int>(to != SlotState::free) - static_cast<int>(slot.state != SlotState::free);
    slot.state = to;
}

// Holds the engine table's LWLock for a scope; C++ code may run (and throw) inside it.
class SharedLock {
  public:
    SharedLock(EngineShared* s, LWLockMode mode);
    ~SharedLock() { LWLockRelease(lock_); }
    SharedLock(const SharedLock&) = delete;
    SharedLock& operator=(const SharedLock&) = delete;

  private:
    LWLock* lock_;
};

// Registers the shared-memory request and the engine; only from _PG_init while preloading.
void engine_preload_init();

// The shared state, or nullptr when the library was not preloaded.
EngineShared* engine_shared();

// Wakes the engine if it runs (call without holding the lock).
void wake_engine(EngineShared* shared);

// Asks the engine to look at the tables when the current transaction commits: always, or
// when a stored token's refresh window opens before the engine's next planned scan.
void scan_on_commit(std::optional<TimestampTz> window_start = std::nullopt);

// Registers the transaction callback behind scan_on_commit (from _PG_init).
void register_commit_wakeup();

}  // namespace upstream_token::pg
