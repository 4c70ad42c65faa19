// The refresh engine: one background worker per cluster. It claims requests from shared
// memory, runs refreshes with many HTTP exchanges in flight, and answers the waiters. It
// waits in one WaitEventSet on its latch, postmaster death and the HTTP client's fd.
#include "pg/prelude.hpp"

extern "C" {
#include "postmaster/interrupt.h"
#include "storage/latch.h"
#include "utils/lsyscache.h"
}

#include <algorithm>
#include <cstring>
#include <deque>
#include <map>
#include <random>
#include <set>

#include "core/discovery.hpp"
#include "core/http_multi.hpp"
#include "core/schedule.hpp"
#include "core/scheduler.hpp"
#include "core/token_response.hpp"
#include "pg/compat.hpp"
#include "pg/engine_revocation.hpp"
#include "pg/engine_scan.hpp"
#include "pg/engine_shmem.hpp"
#include "pg/guard.hpp"
#include "pg/gucs.hpp"
#include "pg/refresh_job.hpp"
#include "pg/spi.hpp"
#include "pg/store.hpp"
#include "pg/worker_txn.hpp"

extern "C" {
__attribute__((visibility("default"))) void upstream_token_engine_main(Datum arg);
}

namespace upstream_token::pg {
namespace {

constexpr long kIdleCheckMs = 5000;      // how often an idle engine looks for the extension
constexpr long kErrorPauseMs = 1000;     // the least wait after an unexpected error
constexpr Micros kLockRetry{20000};      // another refresher holds the advisory lock
constexpr Micros kPersistRetry{100000};  // a client transaction holds the row
constexpr std::size_t kMaxHeldResults = 10000;
constexpr std::size_t kPlanCapacity = 100000;   // planned proactive refreshes kept in memory
constexpr std::size_t kScanBatch = 20000;       // tokens read by one scan
constexpr Micros kScanHorizon{60LL * 1000000};  // a scan plans windows opening this soon
constexpr Micros kScanRetry{1000000};           // after a truncated scan
constexpr Micros kScanMax{300LL * 1000000};     // scan at least this often (changes by hand)
constexpr Micros kMaintenanceEvery{60LL * 1000000};
constexpr std::size_t kRevocationBatch = 100;  // revocations sent per pass

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

// A metadata fetch asked for by register_provider_from_issuer.
struct DiscoveryJob {
    int slot = -1;
    std::uint64_t request_id = 0;
    std::string issuer;
    std::vector<std::string> urls;  // OIDC Discovery, then RFC 8414
    std::size_t next_url = 0;
};

// Keeps a fetched, checked metadata document for the backend that asked (own transaction).
void save_discovery(const std::string& issuer, const std::string& document) {
    WorkerTxn txn;
    static Statement save(
        "INSERT INTO upstream_token.discovery (issuer, document, fetched_at) "
        "VALUES ($1, $2::jsonb, pg_catalog.now()) ON CONFLICT (issuer) DO UPDATE "
        "SET document = EXCLUDED.document, fetched_at = EXCLUDED.fetched_at");
    save.run({text_arg(issuer), text_arg(document)}, false);
    txn.commit();
}

class Engine {
  public:
    explicit Engine(EngineShared* s) : s_(s), plan_(kPlanCapacity), rng_(std::random_device{}()) {}

    // Registers this process and answers requests a previous engine left behind.
    void attach() {
        claimed_.assign(static_cast<std::size_t>(s_->nslots), false);
        {
            SharedLock guard(s_, LW_EXCLUSIVE);
            s_->worker_pid = MyProcPid;
            s_->worker_procno = compat::my_procno();
            s_->worker_dbid = MyDatabaseId;
            s_->worker_ready = false;
            s_->worker_starts++;
            s_->scan_requested = true;
        }
        fail_all_slots(s_, "the refresh engine restarted before answering");
    }

    void run();

  private:
    bool extension_ready();
    long wait_timeout_ms() const;
    void claim_requests();
    void start_waiting();
    void start_planned();
    void start_job(RefreshJob job);
    void start_jobs(std::vector<RefreshJob> jobs);
    bool admit(RefreshJob& job);
    void dispatch(RefreshJob job, BeginStep step, const HttpRequestSpec& spec);
    std::optional<RefreshJob> on_http_result(const HttpResult& r);
    void persist_all(std::vector<RefreshJob> jobs);
    void persist(RefreshJob job);
    void finish(RefreshJob& job);
    void run_deferred();
    void publish(const RefreshJob& job);
    void answer_slot(int index, std::uint64_t request_id, const JobResult& result);
    void start_discovery(DiscoveryJob job);
    bool on_discovery_result(const HttpResult& r);
    void count(const RefreshJob& job);
    void scan_if_due(bool requested);
    void revoke_if_due(bool requested);
    bool on_revocation_result(const HttpResult& r);
    void maintain_if_due();
    void plan_after(const RefreshJob& job);
    void publish_plan_state();
    void forget_dropped_providers(const std::vector<std::pair<std::string, int>>& existing);
    ProviderStats* provider_stats(const std::string& name);
    double unit_random() { return std::uniform_real_distribution<double>(0.0, 1.0)(rng_); }

    EngineShared* s_;
    HttpMulti http_;
    Scheduler plan_;                                 // proactive refreshes and limits
    std::map<std::uint64_t, RefreshJob> in_flight_;  // by HTTP request id
    std::deque<RefreshJob> waiting_;                 // on-demand, held back by the limits
    std::deque<RefreshJob> deferred_;                // waiting for a lock, retried in time
    std::vector<bool> claimed_;                      // slots this engine is working on
    // Tokens with a refresh under way here. Session advisory locks are re-entrant within one
    // process, so this, not the lock, keeps two of the engine's own jobs apart (I1).
    std::set<TokenKey> busy_;
    std::map<std::uint64_t, RevocationWork> revocations_;  // in flight, by HTTP request id
    std::map<std::uint64_t, DiscoveryJob> discoveries_;    // metadata fetches, likewise
    std::set<std::int64_t> revoking_;                      // their queue ids
    Time next_scan_{};
    Time next_revocation_{};
    Time next_maintenance_{};
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
    std::vector<DiscoveryJob> discovery;
    {
        SharedLock guard(s_, LW_EXCLUSIVE);
        for (int i = 0; i < s_->nslots; ++i) {
            RequestSlot& slot = s_->slots[i];
            if (slot.state != SlotState::pending || claimed_[i]) continue;
            slot.state = SlotState::working;
            claimed_[i] = true;
            if (slot.kind == RequestKind::discovery) {
                DiscoveryJob d;
                d.slot = i;
                d.request_id = slot.request_id;
                d.issuer = slot.session;
                discovery.push_back(std::move(d));
                continue;
            }
            RefreshJob job;
            job.slot = i;
            job.request_id = slot.request_id;
            job.provider = slot.provider;
            job.session = slot.session;
            job.seen_generation = slot.seen_generation;
            job.force = slot.force;
            waiting_.push_back(std::move(job));
        }
    }
    for (DiscoveryJob& d : discovery) {
        try {
            d.urls = metadata_urls(d.issuer, allow_insecure_http());
        } catch (const Error& e) {
            JobResult bad;
            bad.code = e.code();
            bad.message = e.what();
            answer_slot(d.slot, d.request_id, bad);
            continue;
        }
        start_discovery(std::move(d));
    }
    start_waiting();
}

// Starts held-back on-demand requests while the limits allow; they go before planned ones.
void Engine::start_waiting() {
    const int limit = max_concurrent_refreshes();
    const std::size_t n = waiting_.size();
    std::vector<RefreshJob> go;
    for (std::size_t i = 0; i < n; ++i) {
        RefreshJob job = std::move(waiting_.front());
        waiting_.pop_front();
        if (!plan_.may_start(job.provider, limit)) {
            waiting_.push_back(std::move(job));
            continue;
        }
        plan_.forget(TokenKey{job.provider, job.session});
        plan_.started(job.provider);
        job.counted_in_flight = true;
        go.push_back(std::move(job));
    }
    start_jobs(std::move(go));
}

// Starts the planned refreshes that are due, within the limits.
void Engine::start_planned() {
    if (!waiting_.empty()) return;
    std::vector<RefreshJob> go;
    for (PlannedRefresh& p : plan_.take_due(now_time(), max_concurrent_refreshes())) {
        RefreshJob job;
        job.provider = std::move(p.key.provider);
        job.session = std::move(p.key.session);
        job.seen_generation = p.generation;
        job.proactive = true;
        job.counted_in_flight = true;
        go.push_back(std::move(job));
    }
    start_jobs(std::move(go));
}

// Begins one refresh (a deferred one coming back).
void Engine::start_job(RefreshJob job) {
    std::vector<RefreshJob> one;
    one.push_back(std::move(job));
    start_jobs(std::move(one));
}

// The checks that need no database: false when the job was dealt with (deferred behind a
// running refresh of the same token, dropped, or answered during a provider's pause).
bool Engine::admit(RefreshJob& job) {
    if (!job.holds_key) {
        TokenKey key{job.provider, job.session};
        if (busy_.count(key) > 0) {
            if (job.proactive) {  // the running refresh plans the next one
                plan_.finished(job.provider);
                return false;
            }
            job.retry_at = now_time() + kLockRetry;
            deferred_.push_back(std::move(job));
            return false;
        }
        busy_.insert(std::move(key));
        job.holds_key = true;
    }
    if (auto until = plan_.paused_until(job.provider, now_time()); until && !job.proactive) {
        job.result.ok = false;
        job.result.code = ErrorCode::refresh_failed;
        job.result.message = "the provider asked to be left alone for a while (Retry-After)";
        job.retry_planned = *until;  // refreshed when the pause ends, not at some later scan
        finish(job);
        return false;
    }
    return true;
}

// Begins refreshes: the database steps of all of them in one transaction when there are
// several (one by one if that fails), then each is answered, deferred or sent.
void Engine::start_jobs(std::vector<RefreshJob> jobs) {
    std::vector<RefreshJob> admitted;
    for (RefreshJob& job : jobs) {
        if (admit(job)) admitted.push_back(std::move(job));
    }
    std::vector<HttpRequestSpec> specs(admitted.size());
    std::vector<BeginStep> steps(admitted.size(), BeginStep::answered);
    bool batched = false;
    if (admitted.size() > 1) {
        try {
            WorkerTxn txn;
            for (std::size_t i = 0; i < admitted.size(); ++i) {
                steps[i] = begin_in_transaction(admitted[i], specs[i]);
            }
            txn.commit();
            batched = true;
        } catch (const std::exception&) {
            abort_worker_transaction();  // nothing committed: each begins on its own below
        }
    }
    for (std::size_t i = 0; i < admitted.size(); ++i) {
        RefreshJob& job = admitted[i];
        if (!batched) {
            specs[i] = HttpRequestSpec{};
            try {
                steps[i] = begin_refresh(job, specs[i]);
            } catch (const std::exception& e) {
                abort_worker_transaction();
                job.result.ok = false;
                job.result.code = ErrorCode::refresh_failed;
                job.result.message = "the engine could not prepare the refresh";
                job.result.detail = e.what();
                log_recovered("preparing a refresh", e.what());
                finish(job);
                continue;
            }
        }
        dispatch(std::move(job), steps[i], specs[i]);
    }
}

// Acts on a begun refresh: answered, deferred while another process holds the lock, or sent.
void Engine::dispatch(RefreshJob job, BeginStep step, const HttpRequestSpec& spec) {
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
    job.sent_at = now_time();
    const std::uint64_t id = http_.start(spec);
    {
        SharedLock guard(s_, LW_EXCLUSIVE);
        s_->counters.network_calls++;
        if (job.proactive) s_->counters.proactive++;
        if (ProviderStats* p = provider_stats(job.provider)) p->in_flight++;
    }
    in_flight_.emplace(id, std::move(job));
}

std::optional<RefreshJob> Engine::on_http_result(const HttpResult& r) {
    auto it = in_flight_.find(r.id);
    if (it == in_flight_.end()) return std::nullopt;
    RefreshJob job = std::move(it->second);
    in_flight_.erase(it);
    job.latency = r.elapsed;
    job.outcome = r.transport_ok
                      ? interpret_token_response(r.status, r.body, r.retry_after, now_time())
                      : transport_failure(r.transport_error);
    std::optional<Time> pause;
    if (job.outcome->retry_after) {
        pause = now_time() + *job.outcome->retry_after;
        plan_.pause(job.provider, *pause);
    }
    {
        SharedLock guard(s_, LW_EXCLUSIVE);
        if (ProviderStats* p = provider_stats(job.provider)) {
            if (pause) p->paused_until = std::max(p->paused_until, to_timestamptz(*pause));
            p->in_flight--;
            const auto ms = static_cast<std::uint64_t>(job.latency.count() / 1000);
            int bucket = 0;
            while (bucket < kLatencyBuckets - 1 && (1ULL << bucket) <= ms) ++bucket;
            p->latency[bucket]++;
        }
    }
    return job;
}

// Saves the outcomes that arrived together in one transaction (one commit for all); when that
// fails (a row a client transaction holds, anything else) each is saved on its own.
void Engine::persist_all(std::vector<RefreshJob> jobs) {
    if (jobs.size() > 1) {
        try {
            WorkerTxn txn;
            for (RefreshJob& job : jobs) persist_in_transaction(job, unit_random());
            txn.commit();
            for (RefreshJob& job : jobs) finish(job);
            return;
        } catch (const std::exception&) {
            abort_worker_transaction();  // nothing was saved: each job goes on its own below
        }
    }
    for (RefreshJob& job : jobs) persist(std::move(job));
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

// Plans the next proactive refresh of a token this engine just dealt with.
void Engine::plan_after(const RefreshJob& job) {
    TokenKey key{job.provider, job.session};
    Time due{};
    std::int64_t generation = 0;
    if (job.result.ok && job.new_generation > 0) {
        generation = job.new_generation;
        due = proactive_due(job.new_issued_at, job.new_expires_at, job.threshold,
                            spread_unit(job.provider, job.session, generation));
    } else if (job.retry_planned) {
        generation = job.seen_generation;
        due = *job.retry_planned;
    } else {
        return;  // nothing new known: the next scan decides
    }
    if (due <= next_scan_) {
        plan_.plan(key, generation, due);
    }
}

// Releases the lock and the concurrency place, answers the waiters, counts the result.
void Engine::finish(RefreshJob& job) {
    release_refresh_lock(job);
    // Requests that waited for this token's refresh go now (they find it done), not 20 ms on.
    for (RefreshJob& waiting : deferred_) {
        if (!waiting.outcome && waiting.provider == job.provider &&
            waiting.session == job.session) {
            waiting.retry_at = Time{};
        }
    }
    if (job.orphan_revocation_queued) next_revocation_ = now_time();
    if (job.holds_key) {
        busy_.erase(TokenKey{job.provider, job.session});
        job.holds_key = false;
    }
    if (job.counted_in_flight) {
        plan_.finished(job.provider);
        job.counted_in_flight = false;
    }
    plan_after(job);
    count(job);
    publish(job);
}

void Engine::count(const RefreshJob& job) {
    const JobResult& r = job.result;
    SharedLock guard(s_, LW_EXCLUSIVE);
    EngineCounters& c = s_->counters;
    ProviderStats* p = r.network ? provider_stats(job.provider) : nullptr;
    if (!r.network) c.skipped++;
    if (r.ok && r.network) {
        c.refreshed++;
        if (p) p->refreshed++;
    }
    if (!r.ok && r.network) {
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
}

// The shared statistics entry of a provider (created on first use; nullptr when full).
// Caller holds the lock exclusively.
ProviderStats* Engine::provider_stats(const std::string& name) {
    ProviderStats* free_entry = nullptr;
    for (ProviderStats& p : s_->providers) {
        if (p.name[0] == '\0') {
            if (free_entry == nullptr) free_entry = &p;
        } else if (name == p.name) {
            return &p;
        }
    }
    if (free_entry != nullptr) copy_bounded(free_entry->name, name);
    return free_entry;
}

void Engine::publish(const RefreshJob& job) {
    if (job.slot >= 0) answer_slot(job.slot, job.request_id, job.result);
}

// Writes a result into a request slot and wakes its waiters.
void Engine::answer_slot(int index, std::uint64_t request_id, const JobResult& result) {
    RequestSlot& slot = s_->slots[index];
    {
        SharedLock guard(s_, LW_EXCLUSIVE);
        if (slot.request_id == request_id && slot.state == SlotState::working) {
            slot.ok = result.ok;
            slot.error_code = static_cast<int>(result.code);
            copy_bounded(slot.message, result.message);
            copy_bounded(slot.detail, result.detail);
            slot.state = slot.waiters == 0 ? SlotState::free : SlotState::done;
        }
    }
    claimed_[index] = false;
    pg_call([&] { ConditionVariableBroadcast(&slot.cv); });
}

// Fetches the next metadata URL of a discovery request.
void Engine::start_discovery(DiscoveryJob job) {
    HttpRequestSpec spec;
    spec.url = job.urls[job.next_url++];
    spec.get = true;
    spec.headers = {"Accept: application/json"};
    spec.total_timeout = request_timeout();
    spec.connect_timeout = std::min(spec.total_timeout, seconds(5));
    spec.ca_file = ca_file();
    spec.allow_http = allow_insecure_http();
    const std::uint64_t id = http_.start(spec);
    discoveries_.emplace(id, std::move(job));
}

// Handles a finished metadata fetch; false when `r` is not one.
bool Engine::on_discovery_result(const HttpResult& r) {
    auto it = discoveries_.find(r.id);
    if (it == discoveries_.end()) return false;
    DiscoveryJob job = std::move(it->second);
    discoveries_.erase(it);
    JobResult result;
    result.code = ErrorCode::refresh_failed;
    if (!r.transport_ok) {
        result.message = "the issuer's metadata could not be fetched";
        result.detail = r.transport_error;
    } else if ((r.status < 200 || r.status > 299) && job.next_url < job.urls.size()) {
        start_discovery(std::move(job));  // OIDC location failed: try RFC 8414's
        return true;
    } else if (r.status < 200 || r.status > 299) {
        result.message = "the issuer publishes no metadata (HTTP " + std::to_string(r.status) + ")";
    } else {
        try {
            (void)parse_metadata(r.body, job.issuer, allow_insecure_http());
            save_discovery(job.issuer, r.body);
            result.ok = true;
        } catch (const Error& e) {
            abort_worker_transaction();
            result.code = e.code();
            result.message = e.what();
            result.detail = e.detail();
        }
    }
    answer_slot(job.slot, job.request_id, result);
    return true;
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

// Reads the tokens whose refresh window opens soon into the plan; the next scan is set for
// when the next window beyond them opens (or earlier, when a store asks for it).
void Engine::scan_if_due(bool requested) {
    const Time now = now_time();
    if (!requested && now < next_scan_) return;
    const Time window_end = now + kScanHorizon;
    ScanResult found = scan_due_tokens(window_end, kScanBatch);
    for (const auto& [provider, limit] : found.provider_limits)
        plan_.set_provider_limit(provider, limit);
    forget_dropped_providers(found.provider_limits);
    for (const DueToken& t : found.tokens) {
        // Re-planned every scan: the due time depends on thresholds that may have changed.
        if (busy_.count(t.key) > 0) continue;
        Time due = proactive_due(t.issued_at, t.expires_at, t.threshold,
                                 spread_unit(t.key.provider, t.key.session, t.generation));
        if (t.next_attempt && *t.next_attempt > due) due = *t.next_attempt;
        plan_.plan(t.key, t.generation, due);
    }
    if (found.truncated) {
        next_scan_ = now + kScanRetry;
    } else if (found.next_window) {
        next_scan_ = std::clamp(*found.next_window, window_end, now + kScanMax);
    } else {
        next_scan_ = now + kScanMax;
    }
    publish_plan_state();
}

// Sends the revocations that are due (queued by revoke_upstream_token, or retries).
void Engine::revoke_if_due(bool requested) {
    const Time now = now_time();
    if (!requested && now < next_revocation_) return;
    std::optional<Time> next_due;
    auto work = due_revocations(revoking_, kRevocationBatch, &next_due);
    next_revocation_ = next_due ? std::min(*next_due, now + kScanMax) : now + kScanMax;
    for (RevocationWork& w : work) {
        revoking_.insert(w.id);
        const std::uint64_t id = http_.start(w.request);
        revocations_.emplace(id, std::move(w));
    }
}

// Handles a finished revocation exchange; false when `r` is not one.
bool Engine::on_revocation_result(const HttpResult& r) {
    auto it = revocations_.find(r.id);
    if (it == revocations_.end()) return false;
    RevocationWork work = std::move(it->second);
    revocations_.erase(it);
    revoking_.erase(work.id);
    if (auto retry = finish_revocation(work, r, unit_random())) {
        next_revocation_ = std::min(next_revocation_, *retry);
    }
    return true;
}

// Frees the statistics entries of providers that no longer exist, so new ones get theirs.
void Engine::forget_dropped_providers(const std::vector<std::pair<std::string, int>>& existing) {
    std::set<std::string> names;
    for (const auto& [name, limit] : existing) names.insert(name);
    SharedLock guard(s_, LW_EXCLUSIVE);
    for (ProviderStats& p : s_->providers) {
        if (p.name[0] != '\0' && names.count(p.name) == 0) p = ProviderStats{};
    }
}

// Marks expired refresh tokens and purges old ones, once a minute.
void Engine::maintain_if_due() {
    const Time now = now_time();
    if (now < next_maintenance_) return;
    next_maintenance_ = now + kMaintenanceEvery;
    (void)expire_and_purge();
}

// Shows the plan's size and the next scan in engine_status, and lets stores know when a
// token of theirs would be seen too late.
void Engine::publish_plan_state() {
    SharedLock guard(s_, LW_EXCLUSIVE);
    s_->planned = static_cast<int>(plan_.size());
    s_->next_scan_at = to_timestamptz(next_scan_);
}

long Engine::wait_timeout_ms() const {
    const Time now = now_time();
    Micros wait =
        std::max(Micros{0}, std::min({next_scan_, next_maintenance_, next_revocation_}) - now);
    if (auto t = http_.next_timeout()) wait = std::min(wait, *t);
    if (auto due = plan_.next_due()) wait = std::min(wait, std::max(Micros{0}, *due - now));
    for (const auto& job : deferred_)
        wait = std::min(wait, std::max(Micros{0}, job.retry_at - now));
    return static_cast<long>((wait.count() + 999) / 1000);
}

void Engine::run() {
    WaitEventSet* set = pg_call([&] {
        WaitEventSet* w = compat::create_wait_event_set(3);
        AddWaitEventToSet(w, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, nullptr);
        AddWaitEventToSet(w, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, nullptr, nullptr);
        AddWaitEventToSet(w, WL_SOCKET_READABLE, http_.wait_fd(), nullptr, nullptr);
        return w;
    });
    bool ready = false;
    long pause_ms = 0;  // after an unexpected error: do not spin on it
    MemoryContext loop_cxt = pg_call([] {
        return AllocSetContextCreate(TopMemoryContext, "upstream_token engine loop",
                                     ALLOCSET_DEFAULT_SIZES);
    });
    for (;;) {
        const long timeout = std::max(ready ? wait_timeout_ms() : kIdleCheckMs, pause_ms);
        pause_ms = 0;
        WaitEvent events[3];
        bool reloaded = false;
        pg_call([&] {
            (void)WaitEventSetWait(set, timeout, events, 3, PG_WAIT_EXTENSION);
            ResetLatch(MyLatch);
            CHECK_FOR_INTERRUPTS();
            if (ConfigReloadPending) {
                ConfigReloadPending = false;
                ProcessConfigFile(PGC_SIGHUP);
                reloaded = true;  // thresholds and limits may have changed: scan again
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
                http_.drive();
                std::vector<RefreshJob> answered;
                for (const HttpResult& r : http_.take_finished()) {
                    if (on_revocation_result(r) || on_discovery_result(r)) continue;
                    if (auto job = on_http_result(r)) answered.push_back(std::move(*job));
                }
                persist_all(std::move(answered));
                if (deferred_.size() < kMaxHeldResults) claim_requests();
                start_waiting();
                bool requested = reloaded;
                {
                    SharedLock guard(s_, LW_EXCLUSIVE);
                    requested |= s_->scan_requested;
                    s_->scan_requested = false;
                }
                if (requested) forget_cached_providers();
                scan_if_due(requested);
                revoke_if_due(requested);
                start_planned();
                http_.drive();
                run_deferred();
                maintain_if_due();
                SharedLock guard(s_, LW_EXCLUSIVE);
                s_->http_in_flight =
                    static_cast<int>(in_flight_.size() + revocations_.size() + discoveries_.size());
            }
        } catch (const std::exception& e) {
            abort_worker_transaction();
            log_recovered("loop", e.what());
            pause_ms = kErrorPauseMs;
            try {  // the extension may have been dropped or replaced under the engine
                ready = extension_ready();
            } catch (const std::exception&) {
                abort_worker_transaction();
                ready = false;
            }
            SharedLock guard(s_, LW_EXCLUSIVE);
            s_->worker_ready = ready;
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
