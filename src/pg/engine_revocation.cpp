#include "pg/prelude.hpp"
#include "pg/engine_revocation.hpp"

#include <algorithm>

#include "core/backoff.hpp"
#include "core/redact.hpp"
#include "core/refresh_request.hpp"
#include "core/token_response.hpp"
#include "pg/guard.hpp"
#include "pg/gucs.hpp"
#include "pg/secrets.hpp"
#include "pg/spi.hpp"
#include "pg/store.hpp"
#include "pg/worker_txn.hpp"

namespace upstream_token::pg {

namespace {

// Schedules a queued revocation's next attempt with backoff, recording why (no secrets).
void postpone(std::int64_t id, int attempts, std::string why, double unit_random) {
    if (why.size() > 200) why.resize(200);
    const Micros delay = backoff_delay(attempts + 1, seconds(1), seconds(600), unit_random);
    static Statement retry(
        "UPDATE upstream_token.revocation SET attempts = attempts + 1, next_attempt_at = $2, "
        "last_error = $3 WHERE id = $1");
    retry.run({int8_arg(id), timestamptz_arg(now_time() + delay), text_arg(why)}, false);
}

}  // namespace

std::vector<RevocationWork> due_revocations(const std::set<std::int64_t>& running,
                                            std::size_t limit, std::optional<Time>* next_due,
                                            double unit_random) {
    WorkerTxn txn;
    static Statement due(
        "SELECT r.id, r.provider, r.session, r.token, r.token_column, r.attempts "
        "FROM upstream_token.revocation r JOIN upstream_token.provider p ON p.name = r.provider "
        "WHERE r.next_attempt_at <= pg_catalog.now() AND p.revocation_endpoint IS NOT NULL "
        "ORDER BY r.next_attempt_at LIMIT $1");
    const auto n = due.run({int8_arg(static_cast<std::int64_t>(limit + running.size()))}, true);
    struct Row {
        std::int64_t id;
        std::string provider, session, column;
        std::optional<std::string> token;
        int attempts;
    };
    std::vector<Row> rows;
    for (std::uint64_t i = 0; i < n && rows.size() < limit; ++i) {
        ResultRow r(i);
        const std::int64_t id = r.int8(1).value_or(0);
        if (running.count(id) > 0) continue;
        rows.push_back(Row{id, r.text(2).value_or(""), r.text(3).value_or(""),
                           r.text(5).value_or("refresh_token"), r.bytea(4), r.int4(6).value_or(0)});
    }
    std::vector<RevocationWork> out;
    for (const Row& row : rows) {
        const auto provider = find_provider(row.provider);
        if (!provider || !provider->revocation_endpoint) continue;
        RevocationWork w;
        w.id = row.id;
        w.provider = row.provider;
        w.attempts = row.attempts;
        try {
            const std::string token =
                open_sealed(row.provider, row.session, row.column, row.token).value_or("");
            const ClientCredentials client = client_credentials(*provider);
            w.request =
                provider_request(*provider, *provider->revocation_endpoint,
                                 build_revocation_request(client, *provider->revocation_endpoint,
                                                          token, row.column, now_time()));
            w.secrets = {token};
            if (client.secret) w.secrets.push_back(*client.secret);
        } catch (const PgError&) {
            throw;  // the transaction is aborted: the whole read is retried later
        } catch (const std::exception& e) {
            // One row that cannot be sent (unreadable ciphertext, unusable client key) waits
            // with its own backoff and its reason; the rest of the queue goes on.
            postpone(row.id, row.attempts, e.what(), unit_random);
            continue;
        }
        out.push_back(std::move(w));
    }
    static Statement next(
        "SELECT pg_catalog.min(next_attempt_at) FROM upstream_token.revocation "
        "WHERE next_attempt_at > pg_catalog.now()");
    next.run({}, true, 1);
    *next_due = ResultRow().timestamptz(1);
    txn.commit();
    return out;
}

std::optional<Time> finish_revocation(const RevocationWork& work, const HttpResult& result,
                                      double unit_random) {
    WorkerTxn txn;
    ExchangeOutcome o =
        result.transport_ok
            ? interpret_token_response(result.status, result.body, result.retry_after, now_time())
            : transport_failure(result.transport_error);
    const bool delivered = result.transport_ok && result.status >= 200 && result.status < 300;
    // RFC 7009 2.2.1: a provider that cannot revoke this kind of token never will.
    if (delivered || o.error == "unsupported_token_type") {
        static Statement done("DELETE FROM upstream_token.revocation WHERE id = $1");
        done.run({int8_arg(work.id)}, false);
        txn.commit();
        return std::nullopt;
    }
    std::string last =
        redact_secrets(o.error + (o.message.empty() ? "" : " (" + o.message + ")"), work.secrets);
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
