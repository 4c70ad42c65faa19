#include "pg/prelude.hpp"
#include "pg/engine_stats.hpp"

#include <algorithm>

#include "pg/guard.hpp"
#include "pg/spi.hpp"

namespace upstream_token::pg {

namespace {

// The shared statistics entry of a provider (created on first use; nullptr when full).
// Caller holds the lock exclusively.
ProviderStats* provider_entry(EngineShared* s, const std::string& name) {
    ProviderStats* free_entry = nullptr;
    for (ProviderStats& p : s->providers) {
        if (p.name[0] == '\0') {
            if (free_entry == nullptr) free_entry = &p;
        } else if (name == p.name) {
            return &p;
        }
    }
    if (free_entry != nullptr) copy_bounded(free_entry->name, name);
    return free_entry;
}

}  // namespace

void EngineStats::network_call(const RefreshJob& job) {
    SharedLock guard(s_, LW_EXCLUSIVE);
    s_->counters.network_calls++;
    if (job.proactive) s_->counters.proactive++;
    if (ProviderStats* p = provider_entry(s_, job.provider)) p->in_flight++;
}

void EngineStats::answered(const RefreshJob& job, std::optional<Time> pause) {
    SharedLock guard(s_, LW_EXCLUSIVE);
    ProviderStats* p = provider_entry(s_, job.provider);
    if (p == nullptr) return;
    if (pause) p->paused_until = std::max(p->paused_until, to_timestamptz(*pause));
    p->in_flight = std::max(0, p->in_flight - 1);
    const auto ms = static_cast<std::uint64_t>(job.latency.count() / 1000);
    int bucket = 0;
    while (bucket < kLatencyBuckets - 1 && (1ULL << bucket) <= ms) ++bucket;
    p->latency[bucket]++;
}

void EngineStats::finished(const RefreshJob& job) {
    const JobResult& r = job.result;
    SharedLock guard(s_, LW_EXCLUSIVE);
    EngineCounters& c = s_->counters;
    if (!r.network) {
        c.skipped++;
        return;
    }
    ProviderStats* p = provider_entry(s_, job.provider);
    if (r.ok) {
        c.refreshed++;
        if (p) p->refreshed++;
        return;
    }
    switch (r.code) {
        case ErrorCode::reauth_required:
            c.failed_reauth++;
            if (p) p->failed_reauth++;
            break;
        case ErrorCode::provider_misconfigured:
            c.failed_client++;
            if (p) p->failed_client++;
            break;
        case ErrorCode::invalid_binding:
            c.invalid_binding++;
            if (p) p->invalid_binding++;
            break;
        default:
            c.failed_transient++;
            if (p) p->failed_transient++;
            break;
    }
}

void EngineStats::persist_retry() {
    SharedLock guard(s_, LW_EXCLUSIVE);
    s_->counters.persist_retries++;
}

void EngineStats::keep_only(const std::set<std::string>& providers) {
    SharedLock guard(s_, LW_EXCLUSIVE);
    for (ProviderStats& p : s_->providers) {
        if (p.name[0] != '\0' && providers.count(p.name) == 0) p = ProviderStats{};
    }
}

void EngineStats::plan_state(std::size_t planned, Time next_scan) {
    SharedLock guard(s_, LW_EXCLUSIVE);
    s_->planned = static_cast<int>(planned);
    s_->next_scan_at = to_timestamptz(next_scan);
}

void EngineStats::in_flight(std::size_t exchanges) {
    SharedLock guard(s_, LW_EXCLUSIVE);
    s_->http_in_flight = static_cast<int>(exchanges);
}

}  // namespace upstream_token::pg
