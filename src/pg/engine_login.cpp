#include "pg/prelude.hpp"
#include "pg/engine_login.hpp"

#include <algorithm>
#include <exception>
#include <nlohmann/json.hpp>

#include "core/crypto.hpp"
#include "core/error.hpp"
#include "core/grant_request.hpp"
#include "core/login.hpp"
#include "core/redact.hpp"
#include "pg/engine_saver.hpp"
#include "pg/engine_stage.hpp"
#include "pg/gucs.hpp"
#include "pg/secrets.hpp"
#include "pg/spi.hpp"
#include "pg/store.hpp"
#include "pg/worker_txn.hpp"

namespace upstream_token::pg {

namespace {
constexpr Micros kSaveRetryFirst{100000};  // a held answer is retried 0.1 s doubling to 5 s
constexpr Micros kSaveRetryMax{5000000};
constexpr Micros kPollSpacing{1000000};    // due device logins are looked at a second apart
constexpr Micros kPollIdle{60000000};      // and the table once a minute when none is pending
constexpr std::size_t kPollBatch = 100;    // polls started per pass
constexpr std::int64_t kSlowDownStep = 5;  // RFC 8628 3.5: slow_down adds 5 seconds

// A string member of the request's parameters, if present.
std::optional<std::string> param(const nlohmann::json& j, const char* name) {
    const auto it = j.find(name);
    if (it == j.end() || !it->is_string()) return std::nullopt;
    return it->get<std::string>();
}

// The provider a login names, read in a transaction of its own when not cached; Error when it
// was dropped.
ProviderRow provider_of(const std::string& name) {
    WorkerTxn txn;
    const ProviderRow* p = cached_provider(name);
    if (p == nullptr) throw Error(ErrorCode::provider_not_found, "the provider was dropped");
    ProviderRow copy = *p;
    txn.commit();
    return copy;
}
}  // namespace

void Logins::answer(const Exchange& e, const JobResult& result) noexcept {
    if (e.slot >= 0) intake_.answer(e.slot, e.request_id, result);
}

void Logins::answer_error(int slot, std::uint64_t request_id, ErrorCode code, std::string message,
                          std::string detail) noexcept {
    JobResult bad;
    bad.code = code;
    bad.message = std::move(message);
    bad.detail = std::move(detail);
    intake_.answer(slot, request_id, bad);
}

void Logins::recover() noexcept {
    if (!exchanges_.empty() || !held_.empty()) return;  // then some are this engine's own
    try {
        WorkerTxn txn;
        fail_orphaned_redemptions();
        txn.commit();
    } catch (const std::exception& e) {
        const std::string what = e.what();
        abort_worker_transaction();
        log_recovered("ending unfinished logins", what.c_str());  // they end with their lifetime
    }
}

void Logins::start(const LoginRequest& request) noexcept {
    try {
        if (request.kind == RequestKind::login) {
            start_code(request);
        } else {
            start_device(request);
        }
    } catch (const Error& e) {
        abort_worker_transaction();
        answer_error(request.slot, request.request_id, e.code(), e.what(), e.detail());
    } catch (const std::exception& e) {
        const std::string what = e.what();  // before the abort frees what it points to
        abort_worker_transaction();
        log_recovered("starting a login", what.c_str());
        answer_error(request.slot, request.request_id, ErrorCode::refresh_failed,
                     "the engine could not start the login", what);
    }
}

// Consumes the state in a commit of its own, then sends the code with the PKCE verifier.
void Logins::start_code(const LoginRequest& request) {
    const nlohmann::json params = nlohmann::json::parse(request.params, nullptr, false);
    const std::string key = request.session;
    const std::string code =
        open_sealed(request.provider, login_aad_session(key), "code",
                    base64_unpack(params.is_object() ? param(params, "code").value_or("") : ""))
            .value_or("");
    const std::optional<std::string> iss = params.is_object() ? param(params, "iss") : std::nullopt;
    if (code.empty()) throw Error(ErrorCode::login_failed, "the login's code did not open");
    // Everything that can fail before the send (provider, credentials, the request) is done
    // before the claim commits: a failure there leaves the state unspent.
    ClaimedCode claimed;
    std::optional<ProviderRow> provider;
    ClientCredentials client;
    HttpRequest request_body;
    {
        WorkerTxn txn;
        claimed = claim_code_login(request.provider, key, iss);
        if (claimed.refused.empty()) {
            const ProviderRow* p = cached_provider(request.provider);
            if (p == nullptr)
                throw Error(ErrorCode::provider_not_found, "the provider was dropped");
            provider = *p;
            client = client_credentials(*provider);
            request_body = build_code_request(client, provider->token_endpoint, code,
                                              claimed.redirect_uri, claimed.verifier, now_time());
        }
        txn.commit();  // from here on the state is spent, whatever happens to the exchange
    }
    if (!claimed.refused.empty()) {
        answer_error(request.slot, request.request_id, ErrorCode::login_failed, claimed.refused,
                     "RFC 9207: the code was not redeemed.");
        return;
    }
    Exchange e;
    e.step = Step::redeem_code;
    e.slot = request.slot;
    e.request_id = request.request_id;
    e.answer.key = key;
    e.answer.session = claimed.session;
    e.answer.provider = request.provider;
    e.answer.nonce = claimed.nonce;
    e.sent_secrets = {code, claimed.verifier};
    if (client.secret) e.sent_secrets.push_back(*client.secret);
    send(std::move(e),
         provider_request(*provider, provider->token_endpoint, std::move(request_body)));
}

// Asks the provider for a device code (RFC 8628 3.1).
void Logins::start_device(const LoginRequest& request) {
    const ProviderRow provider = provider_of(request.provider);
    if (!provider.device_authorization_endpoint) {
        throw Error(ErrorCode::invalid_parameter,
                    "the provider has no device_authorization_endpoint");
    }
    const nlohmann::json params = nlohmann::json::parse(request.params, nullptr, false);
    Exchange e;
    e.step = Step::device_begin;
    e.slot = request.slot;
    e.request_id = request.request_id;
    e.answer.session = request.session;
    e.answer.provider = request.provider;
    e.scope = params.is_object() ? param(params, "scope") : std::nullopt;
    if (!e.scope) e.scope = provider.scope;
    const ClientCredentials client = client_credentials(provider);
    if (client.secret) e.sent_secrets.push_back(*client.secret);
    std::optional<std::string_view> scope;
    if (e.scope) scope = *e.scope;
    const HttpRequestSpec spec = provider_request(
        provider, *provider.device_authorization_endpoint,
        build_device_authorization_request(client, *provider.device_authorization_endpoint, scope,
                                           now_time(), provider.token_endpoint));
    send(std::move(e), spec);
}

void Logins::send(Exchange exchange, const HttpRequestSpec& spec) {
    exchange.answer.sent_at = now_time();
    const std::uint64_t id = http_.start(spec);
    exchanges_.emplace(id, std::move(exchange));
}

bool Logins::on_result(const HttpResult& r) noexcept {
    auto it = exchanges_.find(r.id);
    if (it == exchanges_.end()) return false;
    Exchange e = std::move(it->second);
    exchanges_.erase(it);
    try {
        if (e.step == Step::device_begin) {
            on_device_begin(e, r);
            return true;
        }
        ExchangeOutcome o =
            r.transport_ok ? interpret_token_response(r.status, r.body, r.retry_after, now_time())
                           : transport_failure(r.transport_error);
        o.error = redact_secrets(std::move(o.error), e.sent_secrets);
        o.message = redact_secrets(std::move(o.message), e.sent_secrets);
        e.answer.outcome = std::move(o);
        if (e.step == Step::device_poll) {
            on_device_poll(e);
            return true;
        }
    } catch (const std::exception& err) {
        log_recovered("reading a login answer", err.what());
        if (e.step == Step::device_begin) {
            answer_error(e.slot, e.request_id, ErrorCode::refresh_failed,
                         "the engine could not read the provider's answer");
            return true;
        }
        if (e.step == Step::device_poll) return true;  // polled again on its schedule
        e.answer.outcome = transport_failure("the engine could not read the answer");
    }
    e.sent_secrets.clear();
    held_.push_back(Held{std::move(e), MonoTime{}, 0});  // a redeemed code: held until saved
    save_held();
    return true;
}

// The provider's device code answer: kept (sealed) and the caller told which login it is.
void Logins::on_device_begin(Exchange& e, const HttpResult& r) {
    if (!r.transport_ok || r.status < 200 || r.status > 299) {
        const ExchangeOutcome o =
            r.transport_ok ? interpret_token_response(r.status, r.body, r.retry_after, now_time())
                           : transport_failure(r.transport_error);
        const ErrorCode code = o.failure == FailureClass::client_misconfigured
                                   ? ErrorCode::provider_misconfigured
                                   : ErrorCode::refresh_failed;
        answer_error(e.slot, e.request_id, code,
                     "the provider refused the device authorization request: " +
                         redact_secrets(o.error, e.sent_secrets),
                     redact_secrets(o.message, e.sent_secrets));
        return;
    }
    const DeviceAuthorization d = parse_device_authorization(r.body);
    std::string key;
    {
        WorkerTxn txn;
        key = insert_device_login(e.answer.provider, e.answer.session, e.scope, d);
        txn.commit();
    }
    JobResult ok;
    ok.ok = true;
    ok.message = key;  // not a secret: the login's id, read back by the caller
    answer(e, ok);
    poll_soon();
}

// A poll's answer other than tokens: wait, slow down, or end the login (RFC 8628 3.5).
void Logins::on_device_poll(Exchange& e) {
    const ExchangeOutcome& o = e.answer.outcome;
    if (o.failure == FailureClass::none) {
        e.sent_secrets.clear();
        held_.push_back(Held{std::move(e), MonoTime{}, 0});  // the device code is spent now
        save_held();
        return;
    }
    WorkerTxn txn;
    switch (o.failure == FailureClass::transient ? DevicePoll::pending
                                                 : classify_device_error(o.error)) {
        case DevicePoll::pending:
            device_poll_later(e.answer.key, e.interval_s);
            break;
        case DevicePoll::slow_down:
            device_poll_later(e.answer.key, e.interval_s + kSlowDownStep);
            break;
        case DevicePoll::denied:
            fail_login(e.answer.key, "access_denied: the user declined");
            break;
        case DevicePoll::expired:
            fail_login(e.answer.key, "expired_token: the device code expired");
            break;
        case DevicePoll::other:
            fail_login(e.answer.key, "the provider refused the device login: " + o.error);
            break;
    }
    txn.commit();
}

// Ends a login whose answer cannot be saved: the caller is told, the login marked failed.
void Logins::give_up(const Exchange& e, const std::string& why) noexcept {
    try {
        WorkerTxn txn;
        fail_login(e.answer.key, "the answer could not be saved");
        txn.commit();
    } catch (const std::exception&) {
        abort_worker_transaction();  // its end comes with its lifetime
    }
    JobResult bad;
    bad.code = ErrorCode::login_failed;
    bad.message = "the engine could not save the login's answer (see the server log)";
    (void)why;  // logged by the caller; a database message may quote a value
    answer(e, bad);
}

void Logins::save_held() noexcept {
    const MonoTime now = mono_now();
    for (auto it = held_.begin(); it != held_.end();) {
        if (it->retry_at > now) {
            ++it;
            continue;
        }
        try {
            WorkerTxn txn;
            bool queued = false;
            const JobResult result = save_login_answer(it->exchange.answer, &queued);
            txn.commit();
            revocation_queued_ = revocation_queued_ || queued;
            answer(it->exchange, result);
            it = held_.erase(it);
            continue;
        } catch (const std::exception& e) {
            const std::string what = e.what();
            const bool retry = save_worth_retrying(e);
            abort_worker_transaction();
            if (it->attempts == 0 || !retry) log_recovered("saving a login", what.c_str());
            if (!retry) {  // a bad value or a dropped provider: trying again cannot help
                give_up(it->exchange, what);
                it = held_.erase(it);
                continue;
            }
        }
        // Kept while the database refuses writes or the row is locked: 0.1 s doubling to 5 s.
        Micros delay = kSaveRetryFirst;
        for (int i = 0; i < it->attempts && delay < kSaveRetryMax; ++i) delay *= 2;
        it->retry_at = now + std::min(delay, kSaveRetryMax);
        it->attempts++;
        ++it;
    }
}

void Logins::poll_if_due(bool may_start) noexcept {
    const MonoTime mono = mono_now();
    if (mono < next_poll_) return;
    next_poll_ = mono + kPollSpacing;  // until the table says when; also while nothing may start
    if (!may_start) return;
    try {
        std::vector<std::string> busy;
        for (const auto& [id, e] : exchanges_) busy.push_back(e.answer.key);
        for (const Held& h : held_) busy.push_back(h.exchange.answer.key);
        std::vector<DuePoll> due;
        std::optional<Time> next;
        {
            WorkerTxn txn;
            // A read first: the locking pick runs only when a poll is due (a read-only
            // database with no device login under way sees nothing from here).
            const Time now = now_time();
            if (const auto first = next_device_poll(); first && *first <= now) {
                due = due_device_polls(now, kPollBatch, busy);
            }
            next = next_device_poll();
            txn.commit();
        }
        // A new device login (begun by this engine) or a rescan brings it forward (poll_soon).
        next_poll_ = mono + (next ? std::max(kPollSpacing, *next - now_time()) : kPollIdle);
        for (DuePoll& p : due) {
            try {  // one login's provider or credentials touch that login only
                const ProviderRow provider = provider_of(p.provider);
                const ClientCredentials client = client_credentials(provider);
                Exchange e;
                e.step = Step::device_poll;
                e.answer.key = p.key;
                e.answer.session = p.session;
                e.answer.provider = p.provider;
                e.interval_s = p.interval_s;
                e.sent_secrets = {p.device_code};
                if (client.secret) e.sent_secrets.push_back(*client.secret);
                const HttpRequestSpec spec =
                    provider_request(provider, provider.token_endpoint,
                                     build_device_token_request(client, provider.token_endpoint,
                                                                p.device_code, now_time()));
                send(std::move(e), spec);
            } catch (const std::exception& err) {
                const std::string what = err.what();
                abort_worker_transaction();
                log_recovered("polling a device login", what.c_str());
            }
        }
    } catch (const std::exception& e) {
        const std::string what = e.what();
        abort_worker_transaction();
        log_recovered("polling device logins", what.c_str());
    }
}

void Logins::abandon_all(const char* why) noexcept {
    for (auto& [id, e] : exchanges_) {
        if (e.step == Step::device_begin) {
            answer_error(e.slot, e.request_id, ErrorCode::engine_unavailable, why);
        }
    }
}

std::optional<MonoTime> Logins::next_due(bool stopping) const {
    std::optional<MonoTime> due;
    if (!stopping) due = next_poll_;
    for (const Held& h : held_) due = due ? std::min(*due, h.retry_at) : h.retry_at;
    return due;
}

}  // namespace upstream_token::pg
