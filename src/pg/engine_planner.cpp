#include "pg/prelude.hpp"
#include "pg/engine_planner.hpp"

#include <algorithm>
#include <string>

#include "core/schedule.hpp"
#include "pg/engine_scan.hpp"
#include "pg/spi.hpp"

namespace upstream_token::pg {

namespace {
constexpr std::size_t kPlanCapacity = 100000;   // planned proactive refreshes kept in memory
constexpr std::size_t kScanBatch = 20000;       // tokens read by one scan
constexpr Micros kScanHorizon{60LL * 1000000};  // a scan plans windows opening this soon
constexpr Micros kScanRetry{1000000};           // after a truncated scan
constexpr Micros kScanMax{300LL * 1000000};     // scan at least this often (changes by hand)
constexpr Micros kMaintenanceEvery{60LL * 1000000};
}  // namespace

Planner::Planner(EngineStats& stats) : stats_(stats), plan_(kPlanCapacity) {}

void Planner::scan_if_due(bool requested, const std::set<TokenKey>& busy) {
    const MonoTime mono = mono_now();
    if (!requested && mono < next_scan_mono_) return;
    scan_.run([&] {
        const Time now = now_time();
        const Time window_end = now + kScanHorizon;
        ScanResult found = scan_due_tokens(window_end, kScanBatch);
        std::set<std::string> providers;
        for (const auto& [provider, limit] : found.provider_limits) {
            plan_.set_provider_limit(provider, limit);
            providers.insert(provider);
        }
        stats_.keep_only(providers);
        for (const DueToken& t : found.tokens) {
            // Re-planned every scan: the due time depends on thresholds that may have changed.
            if (busy.count(t.key) > 0) continue;
            const double unit = spread_unit(t.key.provider, t.key.session, t.generation);
            Time due = proactive_due(t.issued_at, t.expires_at, t.threshold, unit);
            if (t.keep_alive_anchor && t.keep_alive_idle) {
                due = std::min(due, keep_alive_due(*t.keep_alive_anchor, *t.keep_alive_idle, unit));
            }
            if (t.next_attempt && *t.next_attempt > due) due = *t.next_attempt;
            plan_.plan(t.key, t.generation, due);
        }
        Micros wait = kScanMax;
        if (found.truncated) {
            wait = kScanRetry;
        } else if (found.next_window) {
            wait = std::clamp(*found.next_window - now, kScanHorizon, kScanMax);
        }
        next_scan_mono_ = mono + wait;
        next_scan_wall_ = now + wait;
        stats_.plan_state(plan_.size(), next_scan_wall_);
    });
}

void Planner::plan_after(const RefreshJob& job) {
    TokenKey key{job.provider, job.session};
    Time due{};
    std::int64_t generation = 0;
    if (job.result.ok && job.new_generation > 0) {
        generation = job.new_generation;
        const double unit = spread_unit(job.provider, job.session, generation);
        due = proactive_due(job.new_issued_at, job.new_expires_at, job.threshold, unit);
        if (job.keep_alive_idle) {
            due = std::min(due, keep_alive_due(job.new_issued_at, *job.keep_alive_idle, unit));
        }
    } else if (job.retry_planned) {
        generation = job.seen_generation;
        due = *job.retry_planned;
    } else {
        return;  // nothing new known: the next scan decides
    }
    if (due <= next_scan_wall_) plan_.plan(key, generation, due);
}

void Planner::plan_again(const RefreshJob& job, Time due) {
    plan_.plan(TokenKey{job.provider, job.session}, job.seen_generation, due);
}

std::optional<MonoTime> Planner::next_scan() const {
    MonoTime t = next_scan_mono_;
    if (auto r = scan_.resume_at()) t = std::max(t, *r);
    return t;
}

void Maintenance::run_if_due() {
    const MonoTime now = mono_now();
    if (now < next_) return;
    next_ = now + kMaintenanceEvery;
    stage_.run([&] {
        const Time now = now_time();
        (void)expire_and_purge(warned_until_, now);
        warned_until_ = now;
    });
}

std::optional<MonoTime> Maintenance::next_due() const {
    return next_;
}

}  // namespace upstream_token::pg
