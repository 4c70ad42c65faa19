#include "pg/prelude.hpp"
#include "pg/engine_revoker.hpp"

#include <algorithm>
#include <string>

#include "pg/spi.hpp"
#include "pg/worker_txn.hpp"

namespace upstream_token::pg {

namespace {
constexpr std::size_t kBatch = 100;              // revocations sent per pass
constexpr Micros kLongestWait{300LL * 1000000};  // look at the queue at least this often
constexpr Micros kRecordRetry{100000};  // an answer not yet recorded: 0.1 s doubling to 3.2 s
}  // namespace

void Revoker::run_if_due(bool requested) {
    record_held();
    const MonoTime now = mono_now();
    if (!requested && now < next_) return;
    read_.run([&] {
        std::set<std::int64_t> running;
        for (const auto& [id, work] : in_flight_) running.insert(work.id);
        for (const Unrecorded& u : unrecorded_) running.insert(u.work.id);
        std::optional<Time> next_due;
        auto work = due_revocations(running, kBatch, &next_due, unit_random());
        next_ = now + kLongestWait;
        if (next_due) next_ = std::min(next_, now + std::max(Micros{0}, *next_due - now_time()));
        if (work.size() == kBatch) next_ = now;  // more are due
        for (RevocationWork& w : work) {
            const std::uint64_t id = http_.start(w.request);
            in_flight_.emplace(id, std::move(w));
        }
    });
}

bool Revoker::on_result(const HttpResult& r) noexcept {
    auto it = in_flight_.find(r.id);
    if (it == in_flight_.end()) return false;
    RevocationWork work = std::move(it->second);
    in_flight_.erase(it);
    if (!record(work, r)) {
        try {
            unrecorded_.push_back(Unrecorded{std::move(work), r, mono_now() + kRecordRetry, 1});
        } catch (...) {
            // Out of memory: the row stays queued and is sent again later (idempotent).
        }
    }
    return true;
}

// Records the provider's answer on the queue row; false when the database refused.
bool Revoker::record(RevocationWork& work, const HttpResult& r) noexcept {
    try {
        if (auto retry = finish_revocation(work, r, unit_random())) {
            next_ = std::min(next_, mono_now() + std::max(Micros{0}, *retry - now_time()));
        }
        return true;
    } catch (const std::exception& e) {
        const std::string what = e.what();  // before the abort frees what it points to
        abort_worker_transaction();
        log_recovered("recording a revocation", what.c_str());
        return false;
    } catch (...) {
        abort_worker_transaction();
        return false;
    }
}

// Records the answers the database refused earlier, each with its own growing delay.
void Revoker::record_held() {
    const MonoTime now = mono_now();
    for (std::size_t i = 0; i < unrecorded_.size();) {
        Unrecorded& u = unrecorded_[i];
        if (u.retry_at > now || !record(u.work, u.result)) {
            if (u.retry_at <= now) {
                u.attempts = std::min(u.attempts + 1, 6);
                u.retry_at = now + Micros{kRecordRetry.count() << (u.attempts - 1)};
            }
            ++i;
            continue;
        }
        unrecorded_.erase(unrecorded_.begin() + static_cast<std::ptrdiff_t>(i));
    }
}

std::optional<MonoTime> Revoker::next_due() const {
    MonoTime t = next_;
    if (auto r = read_.resume_at()) t = std::max(t, *r);
    for (const Unrecorded& u : unrecorded_) t = std::min(t, u.retry_at);
    return t;
}

}  // namespace upstream_token::pg
