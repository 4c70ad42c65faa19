#include "pg/prelude.hpp"
#include "pg/engine_stage.hpp"

#include <algorithm>

#include "pg/guard.hpp"
#include "pg/worker_txn.hpp"

namespace upstream_token::pg {

namespace {
constexpr Micros kFirstPause{1000000};
constexpr Micros kLongestPause{30LL * 1000000};
}  // namespace

void log_recovered(const char* what, const char* message) noexcept {
    try {
        pg_call([&] { ereport(LOG, (errmsg("upstream_token engine: %s: %s", what, message))); });
    } catch (...) {
    }
}

std::optional<MonoTime> Stage::resume_at() const {
    if (failures_ == 0) return std::nullopt;
    return resume_at_;
}

void Stage::failed(const std::string& what) noexcept {
    abort_worker_transaction();
    log_recovered(name_, what.c_str());
    failures_ = std::min(failures_ + 1, 16);
    const Micros pause =
        std::min(kLongestPause, Micros{kFirstPause.count() << std::min(failures_ - 1, 5)});
    resume_at_ = mono_now() + pause;
}

}  // namespace upstream_token::pg
