#include "core/scheduler.hpp"

namespace upstream_token {

bool Scheduler::plan(const TokenKey& key, std::int64_t generation, Time due) {
    forget(key);
    if (by_key_.size() >= capacity_) {
        auto last = std::prev(by_due_.end());
        if (last->first <= due) return false;
        by_key_.erase(last->second);
        by_due_.erase(last);
    }
    by_key_.emplace(key, Entry{generation, due});
    by_due_.emplace(due, key);
    return true;
}

void Scheduler::forget(const TokenKey& key) {
    auto it = by_key_.find(key);
    if (it == by_key_.end()) return;
    by_due_.erase({it->second.due, key});
    by_key_.erase(it);
}

bool Scheduler::planned(const TokenKey& key, std::int64_t generation) const {
    auto it = by_key_.find(key);
    return it != by_key_.end() && it->second.generation == generation;
}

void Scheduler::set_provider_limit(const std::string& provider, int limit) {
    if (limit > 0) {
        limit_[provider] = limit;
    } else {
        limit_.erase(provider);
    }
}

void Scheduler::pause(const std::string& provider, Time until) {
    auto& t = paused_[provider];
    if (until > t) t = until;
}

std::optional<Time> Scheduler::paused_until(const std::string& provider, Time now) const {
    auto it = paused_.find(provider);
    if (it == paused_.end() || it->second <= now) return std::nullopt;
    return it->second;
}

int Scheduler::in_flight(const std::string& provider) const {
    auto it = in_flight_.find(provider);
    return it == in_flight_.end() ? 0 : it->second;
}

bool Scheduler::may_start(const std::string& provider, int global_limit) const {
    if (global_limit > 0 && in_flight_total_ >= global_limit) return false;
    auto lim = limit_.find(provider);
    return lim == limit_.end() || in_flight(provider) < lim->second;
}

void Scheduler::started(const std::string& provider) {
    ++in_flight_[provider];
    ++in_flight_total_;
}

void Scheduler::finished(const std::string& provider) {
    auto it = in_flight_.find(provider);
    if (it == in_flight_.end()) return;
    if (--it->second == 0) in_flight_.erase(it);
    --in_flight_total_;
}

std::vector<PlannedRefresh> Scheduler::take_due(Time now, int global_limit) {
    std::vector<PlannedRefresh> out;
    std::vector<std::pair<TokenKey, Entry>> moved;
    for (auto it = by_due_.begin(); it != by_due_.end() && it->first <= now;) {
        if (global_limit > 0 && in_flight_total_ >= global_limit) break;
        const TokenKey key = it->second;
        const Entry entry = by_key_.at(key);
        if (auto until = paused_until(key.provider, now)) {
            moved.emplace_back(key, Entry{entry.generation, *until});
        } else if (!may_start(key.provider, global_limit)) {
            ++it;
            continue;
        } else {
            out.push_back(PlannedRefresh{key, entry.generation, entry.due});
            started(key.provider);
        }
        it = by_due_.erase(it);
        by_key_.erase(key);
    }
    for (auto& [key, entry] : moved) plan(key, entry.generation, entry.due);
    return out;
}

std::optional<Time> Scheduler::next_due() const {
    if (by_due_.empty()) return std::nullopt;
    return by_due_.begin()->first;
}

}  // namespace upstream_token
