// Intake: the engine's side of the shared-memory request table. It registers the engine,
// claims what backends queued, and writes answers back and wakes the waiters. A request is
// answered exactly once, whatever happens to the job behind it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/time.hpp"
#include "pg/engine_shmem.hpp"
#include "pg/refresh_job.hpp"

namespace upstream_token::pg {

// A metadata fetch asked for by register_provider_from_issuer.
struct DiscoveryRequest {
    int slot = -1;
    std::uint64_t request_id = 0;
    std::string issuer;
};

// A login step asked for by complete_login (redeem a code) or begin_device_login.
struct LoginRequest {
    int slot = -1;
    std::uint64_t request_id = 0;
    RequestKind kind = RequestKind::login;
    std::string provider;
    std::string session;  // the login's key (code) or the application's session (device)
    std::string params;
};

struct Claimed {
    std::vector<RefreshJob> refresh;
    std::vector<DiscoveryRequest> discovery;
    std::vector<LoginRequest> logins;
};

class Intake {
  public:
    explicit Intake(EngineShared* s) : s_(s) {}

    // Registers this process as the engine and answers what a previous engine left behind.
    void attach();
    // Whether backends may queue requests (false while idle or stopping); `outdated`: the
    // extension must be updated first (backends say so).
    void set_ready(bool ready, bool outdated = false);
    // Takes every pending request into the engine.
    Claimed claim();
    // Writes a result into a claimed slot and wakes its waiters.
    void answer(int slot, std::uint64_t request_id, const JobResult& result) noexcept;

  private:
    bool recount_due();
    void claim_locked(Claimed& out);

    EngineShared* s_;
    std::vector<bool> claimed_;  // slots this engine is working on
    MonoTime next_recount_{};
};

// Answers every open request with an error: nothing in shared memory outlives an engine.
void fail_all_slots(EngineShared* s, const char* why) noexcept;

}  // namespace upstream_token::pg
