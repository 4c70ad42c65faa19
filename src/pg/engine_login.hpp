// Logins: the engine's side of complete_login and begin_device_login. A code is redeemed and a
// device code polled here with the refresh guarantees: the state is consumed in a commit before
// the code is sent (never redeemed twice), the answer is held until it is committed whatever
// the caller does (no retry count drops it), and each login is its own failure domain.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <utility>

#include "core/http_multi.hpp"
#include "core/time.hpp"
#include "pg/engine_intake.hpp"
#include "pg/login_store.hpp"

namespace upstream_token::pg {

class Logins {
  public:
    Logins(HttpMulti& http, Intake& intake) : http_(http), intake_(intake) {}

    // When the engine becomes ready: ends the redemptions a previous engine left unfinished.
    void recover() noexcept;
    // Starts what a backend asked for: a code redemption or a device authorization request.
    void start(const LoginRequest& request) noexcept;
    // Handles a finished exchange; false when `r` is not one of ours.
    bool on_result(const HttpResult& r) noexcept;
    // Polls the device logins that are due; `may_start` false sends nothing new.
    void poll_if_due(bool may_start) noexcept;
    // Saves the answers that are held (due ones), answering their callers once committed.
    void save_held() noexcept;
    // Answers every request not yet sent (the engine is stopping); held answers stay held.
    void abandon_all(const char* why) noexcept;
    // A device login was begun elsewhere or the tables changed: look for due polls now.
    void poll_soon() { next_poll_ = MonoTime{}; }

    std::size_t in_flight() const { return exchanges_.size(); }
    std::size_t held() const { return held_.size(); }
    // When the loop should look again: the next device poll (unless stopping) and the next
    // retry of a held answer.
    std::optional<MonoTime> next_due(bool stopping) const;
    // True once after a save queued the revocation of a login's rejected tokens.
    bool take_revocation_queued() { return std::exchange(revocation_queued_, false); }

  private:
    enum class Step { redeem_code, device_begin, device_poll };
    struct Exchange {
        Step step = Step::redeem_code;
        int slot = -1;  // the caller to answer, -1 for a poll
        std::uint64_t request_id = 0;
        LoginAnswer answer;  // key, session, provider, nonce, sent_at
        std::optional<std::string> scope;
        std::int64_t interval_s = 5;  // device polls
        std::vector<std::string> sent_secrets;
    };
    struct Held {
        Exchange exchange;
        MonoTime retry_at{};
        int attempts = 0;
    };

    void start_code(const LoginRequest& request);
    void start_device(const LoginRequest& request);
    void send(Exchange exchange, const HttpRequestSpec& spec);
    void on_device_begin(Exchange& e, const HttpResult& r);
    void on_device_poll(Exchange& e);
    void answer(const Exchange& e, const JobResult& result) noexcept;
    void give_up(const Exchange& e, const std::string& why) noexcept;
    void answer_error(int slot, std::uint64_t request_id, ErrorCode code, std::string message,
                      std::string detail = {}) noexcept;

    HttpMulti& http_;
    Intake& intake_;
    std::map<std::uint64_t, Exchange> exchanges_;  // by HTTP request id
    std::deque<Held> held_;
    MonoTime next_poll_{};
    bool revocation_queued_ = false;
};

}  // namespace upstream_token::pg
