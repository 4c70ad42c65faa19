#include "pg/prelude.hpp"
#include "pg/engine_scan.hpp"

#include "core/schedule.hpp"
#include "pg/gucs.hpp"
#include "pg/spi.hpp"
#include "pg/worker_txn.hpp"

namespace upstream_token::pg {

namespace {
constexpr Micros kTombstoneLifetime{24LL * 3600 * 1000000};  // see expire_and_purge
}  // namespace

ScanResult scan_due_tokens(Time window_end, std::size_t limit) {
    WorkerTxn txn;
    const std::int64_t guc_threshold_us = refresh_threshold().count();
    // The widest threshold bounds the index range; the exact window is checked per row.
    static Statement widest(
        "SELECT (extract(epoch FROM pg_catalog.max(coalesce(refresh_threshold, "
        "pg_catalog.make_interval(secs => $1::pg_catalog.float8 / 1000000::pg_catalog.float8)))) "
        "* 1000000::pg_catalog.numeric)::pg_catalog.int8 FROM upstream_token.provider");
    widest.run({int8_arg(guc_threshold_us)}, true, 1);
    const Micros max_threshold{ResultRow().int8(1).value_or(guc_threshold_us)};
    const Time bound = window_end + max_threshold;

    static Statement due(
        "SELECT t.session, t.provider, t.generation, t.expires_at, t.next_attempt_at, "
        "(extract(epoch FROM p.refresh_threshold) * 1000000::pg_catalog.numeric)::pg_catalog.int8, "
        "t.issued_at "
        "FROM upstream_token.token t JOIN upstream_token.provider p ON p.name = t.provider "
        "WHERE t.status = 'active' AND t.expires_at <= $1 AND t.refresh_token IS NOT NULL "
        "ORDER BY t.expires_at LIMIT $2");
    const auto n =
        due.run({timestamptz_arg(bound), int8_arg(static_cast<std::int64_t>(limit))}, true);
    ScanResult out;
    out.truncated = n >= limit;
    for (std::uint64_t i = 0; i < n; ++i) {
        ResultRow r(i);
        DueToken t;
        t.key.session = r.text(1).value_or("");
        t.key.provider = r.text(2).value_or("");
        t.generation = r.int8(3).value_or(0);
        t.expires_at = r.timestamptz(4).value_or(Time{});
        t.next_attempt = r.timestamptz(5);
        const auto thr = r.int8(6);
        t.threshold = thr ? Micros{*thr} : refresh_threshold();
        t.issued_at = r.timestamptz(7);
        const Micros effective = effective_threshold(t.threshold, t.issued_at, t.expires_at);
        if (t.expires_at - effective <= window_end) out.tokens.push_back(std::move(t));
    }
    static Statement limits(
        "SELECT name, coalesce(max_concurrent, 0) FROM upstream_token.provider");
    for (std::uint64_t i = 0, m = limits.run({}, true); i < m; ++i) {
        ResultRow r(i);
        out.provider_limits.emplace_back(r.text(1).value_or(""), r.int4(2).value_or(0));
    }
    if (!out.truncated) {
        static Statement next(
            "SELECT pg_catalog.min(expires_at) FROM upstream_token.token "
            "WHERE status = 'active' AND expires_at > $1 AND refresh_token IS NOT NULL");
        next.run({timestamptz_arg(bound)}, true, 1);
        if (auto first = ResultRow().timestamptz(1)) out.next_window = *first - max_threshold;
    }
    txn.commit();
    return out;
}

std::uint64_t expire_and_purge() {
    WorkerTxn txn;
    // Only a stated end is a cut-off (I8). An active row past an estimated end is kept: it is
    // refreshed on its schedule and the provider decides (invalid_grant -> reauth_required).
    static Statement expire(
        "WITH x AS (UPDATE upstream_token.token SET status = 'expired', "
        "last_error = 'expired: the refresh token reached the end of its lifetime', "
        "updated_at = pg_catalog.now() "
        "WHERE refresh_expires_at <= pg_catalog.now() AND status = 'active' "
        "AND refresh_expiry_source IN ('provider', 'application') "
        "RETURNING session, provider) "
        "SELECT pg_catalog.pg_notify('upstream_token_events', pg_catalog.json_build_object("
        "'session', session, 'provider', provider, 'event', 'expired')::pg_catalog.text) FROM x");
    expire.run({}, false);
    // Purged purge_after past the end: a stated end, or an estimate once the row is no longer
    // active (the provider refused it, or it was marked on a stated end before).
    const Time now = now_time();
    static Statement purge(
        "DELETE FROM upstream_token.token WHERE refresh_expires_at <= $1 "
        "AND (status <> 'active' OR refresh_expiry_source IN ('provider', 'application'))");
    const auto purged = purge.run({timestamptz_arg(now - purge_after())}, false);
    // A tombstone matters to refreshes that were in flight when the row was revoked; a day
    // bounds the exchange and the time its answer may wait to be saved.
    static Statement forget("DELETE FROM upstream_token.token_tombstone WHERE revoked_at < $1");
    forget.run({timestamptz_arg(now - kTombstoneLifetime)}, false);
    txn.commit();
    return purged;
}

}  // namespace upstream_token::pg
