// Table access for the logins the engine does (upstream_token.login): claiming a code login
// for redemption, saving what a redemption or a device poll brought back, and the device
// logins' polling state. Every function runs in the caller's open transaction.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/login.hpp"
#include "core/time.hpp"
#include "core/token_response.hpp"
#include "pg/refresh_job.hpp"

namespace upstream_token::pg {

// The AAD "session" of a login's sealed values: never an application's session.
std::string login_aad_session(const std::string& key);

// A code login claimed for redemption (its state can never be used again).
struct ClaimedCode {
    std::string key;  // login id: hex SHA-256 of the state
    std::string session;
    std::string provider;
    std::string redirect_uri;
    std::string verifier;
    std::optional<std::string> nonce;
    std::string refused;  // set when the login was ended instead (commit it, redeem nothing)
};

// Claims the login `key` of `provider` for redemption: pending -> redeeming. Throws
// Error(login_state_invalid) for an unknown, used or expired state. When the RFC 9207 iss
// parameter names another issuer than the provider's, the login is marked failed instead and
// `refused` says why: the code must never be redeemed.
ClaimedCode claim_code_login(const std::string& provider, const std::string& key,
                             const std::optional<std::string>& iss);

// What a login's exchange with the token endpoint brought back.
struct LoginAnswer {
    std::string key;
    std::string session;
    std::string provider;
    std::optional<std::string> nonce;  // sent with the authorization request
    Time sent_at{};
    ExchangeOutcome outcome;
};

// Saves the answer of a code redemption or a successful device poll: the tokens (when the ID
// token passes the checks), the login's end and its event, in one commit-to-be. An ID token
// that fails the checks keeps the login from completing: its tokens are queued for revocation
// instead (`revocation_queued` is then set). The result says how the login ended.
JobResult save_login_answer(const LoginAnswer& a, bool* revocation_queued);

// Keeps a device login the provider just opened; returns its key.
std::string insert_device_login(const std::string& provider, const std::string& session,
                                const std::optional<std::string>& scope,
                                const DeviceAuthorization& d);

// A device login whose next poll is due.
struct DuePoll {
    std::string key;
    std::string session;
    std::string provider;
    std::string device_code;
    std::int64_t interval_s = 5;
    bool expired = false;
};

// Up to `limit` device logins due for a poll at `now`, except those in `busy`, each with its
// next poll already set (the interval on): ends those past their expiry or whose device code
// does not open instead.
std::vector<DuePoll> due_device_polls(Time now, std::size_t limit,
                                      const std::vector<std::string>& busy);

// The earliest next poll of a pending device login.
std::optional<Time> next_device_poll();

// The provider has not decided yet: poll again after `interval_s`.
void device_poll_later(const std::string& key, std::int64_t interval_s);

// Ends the logins a previous engine was redeeming: their code was sent or not, but its answer
// died with that engine (there is one engine per cluster).
void fail_orphaned_redemptions();

// Ends a login as failed (its event sent), unless it already ended.
void fail_login(const std::string& key, const std::string& why);

}  // namespace upstream_token::pg
