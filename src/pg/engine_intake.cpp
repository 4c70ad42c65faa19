#include "pg/prelude.hpp"
#include "pg/engine_intake.hpp"

#include <cstdio>

#include "pg/compat.hpp"
#include "pg/engine_stage.hpp"
#include "pg/guard.hpp"

namespace upstream_token::pg {

void fail_all_slots(EngineShared* s, const char* why) noexcept {
    {
        SharedLock guard(s, LW_EXCLUSIVE);
        for (int i = 0; i < s->nslots; ++i) {
            RequestSlot& slot = s->slots[i];
            if (slot.state != SlotState::pending && slot.state != SlotState::working) continue;
            slot.ok = false;
            slot.error_code = static_cast<int>(ErrorCode::refresh_failed);
            std::snprintf(slot.message, sizeof slot.message, "%s", why);
            slot.detail[0] = '\0';
            set_slot_state(s, slot, slot.waiters == 0 ? SlotState::free : SlotState::done);
        }
    }
    for (int i = 0; i < s->nslots; ++i) ConditionVariableBroadcast(&s->slots[i].cv);
}

void Intake::attach() {
    claimed_.assign(static_cast<std::size_t>(s_->nslots), false);
    {
        SharedLock guard(s_, LW_EXCLUSIVE);
        s_->worker_pid = MyProcPid;
        s_->worker_procno = compat::my_procno();
        s_->worker_dbid = MyDatabaseId;
        s_->worker_ready = false;
        s_->schema_outdated = false;
        s_->worker_starts++;
        s_->scan_requested = true;
    }
    fail_all_slots(s_, "the refresh engine restarted before answering");
}

void Intake::set_ready(bool ready, bool outdated) {
    SharedLock guard(s_, LW_EXCLUSIVE);
    s_->worker_ready = ready;
    s_->schema_outdated = outdated;
}

namespace {
constexpr Micros kRecountEvery{1000000};
}  // namespace

// Recounts the table against pending_slots and busy_slots, at most once a second (the caller
// holds the lock): a count gone wrong would hide requests from claim() and slots from the
// callers. True when it had to correct them.
bool Intake::recount_due() {
    const MonoTime now = mono_now();
    if (now < next_recount_) return false;
    next_recount_ = now + kRecountEvery;
    int pending = 0;
    int busy = 0;
    for (int i = 0; i < s_->nslots; ++i) {
        pending += static_cast<int>(s_->slots[i].state == SlotState::pending);
        busy += static_cast<int>(s_->slots[i].state != SlotState::free);
    }
    const bool wrong = pending != s_->pending_slots || busy != s_->busy_slots;
    s_->pending_slots = pending;
    s_->busy_slots = busy;
    return wrong;
}

Claimed Intake::claim() {
    Claimed out;
    bool corrected = false;
    {
        SharedLock guard(s_, LW_EXCLUSIVE);
        corrected = recount_due();
        claim_locked(out);
    }
    if (corrected) log_recovered("the request table's counts", "corrected; this is a bug");
    return out;
}

// Moves every pending request into `out` (the caller holds the lock).
void Intake::claim_locked(Claimed& out) {
    for (int i = 0, left = s_->pending_slots; i < s_->nslots && left > 0; ++i) {
        RequestSlot& slot = s_->slots[i];
        if (slot.state != SlotState::pending) continue;
        --left;
        if (claimed_[i]) continue;
        if (slot.kind == RequestKind::discovery) {
            out.discovery.push_back(DiscoveryRequest{i, slot.request_id, slot.session});
        } else if (slot.kind == RequestKind::login || slot.kind == RequestKind::device_login) {
            out.logins.push_back(LoginRequest{i, slot.request_id, slot.kind, slot.provider,
                                              slot.session, slot.params});
        } else {
            RefreshJob job;
            job.slot = i;
            job.request_id = slot.request_id;
            job.provider = slot.provider;
            job.session = slot.session;
            job.seen_generation = slot.seen_generation;
            job.force = slot.force;
            job.grant_params = slot.params;
            out.refresh.push_back(std::move(job));
        }
        // Marked only once its job exists: an allocation failure leaves the slot pending.
        set_slot_state(s_, slot, SlotState::working);
        claimed_[i] = true;
    }
}

void Intake::answer(int index, std::uint64_t request_id, const JobResult& result) noexcept {
    if (index < 0 || index >= s_->nslots) return;
    RequestSlot& slot = s_->slots[index];
    {
        SharedLock guard(s_, LW_EXCLUSIVE);
        if (slot.request_id == request_id && slot.state == SlotState::working) {
            slot.ok = result.ok;
            slot.error_code = static_cast<int>(result.code);
            copy_bounded(slot.message, result.message);
            copy_bounded(slot.detail, result.detail);
            set_slot_state(s_, slot, slot.waiters == 0 ? SlotState::free : SlotState::done);
        }
    }
    claimed_[static_cast<std::size_t>(index)] = false;
    ConditionVariableBroadcast(&slot.cv);
}

}  // namespace upstream_token::pg
