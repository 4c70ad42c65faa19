#include "pg/prelude.hpp"
#include "pg/engine_revocation.hpp"

#include <algorithm>

#include "core/backoff.hpp"
#include "core/redact.hpp"
#include "core/refresh_request.hpp"
#include "core/token_response.hpp"
#include "pg/gucs.hpp"
#include "pg/secrets.hpp"
#include "pg/spi.hpp"
#include "pg/worker_txn.hpp"

namespace upstream_token::pg {

std::vector<RevocationWork> due_revocations(const std::set<std::int64_t>& running,
                                            std::size_t limit, std::optional<Time>* next_due) {
    WorkerTxn txn;
    static Statement due(
        "SELECT r.id, r.provider, r.session, r.token, r.token_column, r.attempts, "
        "p.revocation_endpoint, p.client_id, p.client_secret, p.auth_method, "
        "(extract(epoch FROM coalesce(p.request_timeout, interval '0')) * 1000000)::int8 "
        "FROM upstream_token.revocation r JOIN upstream_token.provider p ON p.name = r.provider "
        "WHERE r.next_attempt_at <= pg_catalog.now() AND p.revocation_endpoint IS NOT NULL "
        "ORDER BY r.next_attempt_at LIMIT $1");
    const auto n = due.run({int8_arg(static_cast<std::int64_t>(limit + running.size()))}, true);
    std::vector<RevocationWork> out;
    for (std::uint64_t i = 0; i < n && out.size() < limit; ++i) {
        ResultRow r(i);
        RevocationWork w;
        w.id = r.int8(1).value_or(0);
        if (running.count(w.id) > 0) continue;
        w.provider = r.text(2).value_or("");
        const std::string session = r.text(3).value_or("");
        const std::string column = r.text(5).value_or("refresh_token");
        w.attempts = r.int4(6).value_or(0);
        const std::string token = open_sealed(w.provider, session, column, r.bytea(4)).value_or("");
        const auto secret = open_sealed(w.provider, "", "client_secret", r.bytea(9));
        std::optional<std::string_view> secret_view;
        if (secret) secret_view = *secret;
        HttpRequest req = build_revocation_request(parse_auth_method(r.text(10).value_or("")),
                                                   r.text(8).value_or(""), secret_view, token,
                                                   column);
        w.request.url = r.text(7).value_or("");
        w.request.headers = std::move(req.headers);
        w.request.body = std::move(req.body);
        const Micros timeout{r.int8(11).value_or(0)};
        w.request.total_timeout = timeout.count() > 0 ? timeout : request_timeout();
        w.request.connect_timeout = std::min(w.request.total_timeout, seconds(5));
        w.request.ca_file = ca_file();
        w.request.allow_http = allow_insecure_http();
        w.secrets = {token};
        if (secret) w.secrets.push_back(*secret);
        out.push_back(std::move(w));
    }
    static Statement next("SELECT min(next_attempt_at) FROM upstream_token.revocation "
                          "WHERE next_attempt_at > pg_catalog.now()");
    next.run({}, true, 1);
    *next_due = ResultRow().timestamptz(1);
    txn.commit();
    return out;
}

std::optional<Time> finish_revocation(const RevocationWork& work, const HttpResult& result,
                                      double unit_random) {
    WorkerTxn txn;
    ExchangeOutcome o = result.transport_ok
                            ? interpret_token_response(result.status, result.body,
                                                       result.retry_after, now_time())
                            : transport_failure(result.transport_error);
    const bool delivered = result.transport_ok && result.status >= 200 && result.status < 300;
    // RFC 7009 2.2.1: a provider that cannot revoke this kind of token never will.
    if (delivered || o.error == "unsupported_token_type") {
        static Statement done("DELETE FROM upstream_token.revocation WHERE id = $1");
        done.run({int8_arg(work.id)}, false);
        txn.commit();
        return std::nullopt;
    }
    std::string last = redact_secrets(o.error + (o.message.empty() ? "" : " (" + o.message + ")"),
                                      work.secrets);
    if (last.size() > 200) last.resize(200);
    Micros delay = backoff_delay(work.attempts + 1, seconds(1), seconds(600), unit_random);
    if (o.retry_after) delay = std::max(delay, *o.retry_after);
    const Time next = now_time() + delay;
    static Statement retry(
        "UPDATE upstream_token.revocation SET attempts = attempts + 1, next_attempt_at = $2, "
        "last_error = $3 WHERE id = $1");
    retry.run({int8_arg(work.id), timestamptz_arg(next), text_arg(last)}, false);
    txn.commit();
    return next;
}

}  // namespace upstream_token::pg
