#include "pg/prelude.hpp"
#include "pg/engine_scan.hpp"

#include <set>

#include "core/schedule.hpp"
#include "pg/gucs.hpp"
#include "pg/spi.hpp"
#include "pg/worker_txn.hpp"

namespace upstream_token::pg {

namespace {
constexpr Micros kTombstoneLifetime{24LL * 3600 * 1000000};  // see expire_and_purge

// The columns both scans read, in DueToken's order (keep-alive anchor and idle lifetime last).
#define UT_DUE_COLUMNS                                                                           \
    "t.session, t.provider, t.generation, t.expires_at, t.next_attempt_at, "                     \
    "(extract(epoch FROM p.refresh_threshold) * 1000000::pg_catalog.numeric)::pg_catalog.int8, " \
    "t.issued_at, CASE WHEN p.keep_alive THEN coalesce(t.issued_at, t.created_at) END, "         \
    "CASE WHEN p.keep_alive THEN (extract(epoch FROM p.refresh_token_idle_ttl) * "               \
    "1000000::pg_catalog.numeric)::pg_catalog.int8 END "

// Row `i` of a due-token scan.
DueToken due_token_row(std::uint64_t i) {
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
    t.keep_alive_anchor = r.timestamptz(8);
    if (const auto idle = r.int8(9)) t.keep_alive_idle = Micros{*idle};
    return t;
}

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

    static Statement due("SELECT " UT_DUE_COLUMNS
                         "FROM upstream_token.token t JOIN upstream_token.provider p "
                         "ON p.name = t.provider "
                         "WHERE t.status = 'active' AND t.expires_at <= $1 "
                         "AND (t.refresh_token IS NOT NULL OR t.grant_type <> 'refresh_token') "
                         "ORDER BY t.expires_at LIMIT $2");
    const auto n =
        due.run({timestamptz_arg(bound), int8_arg(static_cast<std::int64_t>(limit))}, true);
    ScanResult out;
    out.truncated = n >= limit;
    std::set<TokenKey> seen;
    for (std::uint64_t i = 0; i < n; ++i) {
        DueToken t = due_token_row(i);
        const Micros effective = effective_threshold(t.threshold, t.issued_at, t.expires_at);
        if (t.expires_at - effective > window_end) continue;
        seen.insert(t.key);
        out.tokens.push_back(std::move(t));
    }
    // Sessions of keep_alive providers whose refresh token would idle out first (a fifth of
    // the idle lifetime is the earliest a keep-alive refresh is planned), most urgent first.
    // There is no index for it: the whole table is read, and only while a provider has
    // keep_alive on.
    static Statement any_kept("SELECT pg_catalog.bool_or(keep_alive) FROM upstream_token.provider");
    any_kept.run({}, true, 1);
    const bool keep_alive = ResultRow().boolean(1).value_or(false);
    if (keep_alive) {
        static Statement idle(
            "SELECT " UT_DUE_COLUMNS
            "FROM upstream_token.token t JOIN upstream_token.provider p ON p.name = t.provider "
            "WHERE p.keep_alive AND t.status = 'active' AND t.refresh_token IS NOT NULL "
            "AND coalesce(t.issued_at, t.created_at) OPERATOR(pg_catalog.+) "
            "(p.refresh_token_idle_ttl OPERATOR(pg_catalog./) 5::pg_catalog.float8) "
            "OPERATOR(pg_catalog.<=) $1 ORDER BY coalesce(t.issued_at, t.created_at) "
            "OPERATOR(pg_catalog.+) p.refresh_token_idle_ttl LIMIT $2");
        const auto m = idle.run(
            {timestamptz_arg(window_end), int8_arg(static_cast<std::int64_t>(limit))}, true);
        out.truncated = out.truncated || m >= limit;
        for (std::uint64_t i = 0; i < m; ++i) {
            DueToken t = due_token_row(i);
            if (seen.count(t.key) > 0 || !t.keep_alive_anchor || !t.keep_alive_idle) continue;
            out.tokens.push_back(std::move(t));
        }
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
            "WHERE status = 'active' AND expires_at > $1 "
            "AND (refresh_token IS NOT NULL OR grant_type <> 'refresh_token')");
        next.run({timestamptz_arg(bound)}, true, 1);
        if (auto first = ResultRow().timestamptz(1)) out.next_window = *first - max_threshold;
    }
    if (!out.truncated && keep_alive) {
        static Statement next_idle(
            "SELECT pg_catalog.min(coalesce(t.issued_at, t.created_at) "
            "OPERATOR(pg_catalog.+) (p.refresh_token_idle_ttl OPERATOR(pg_catalog./) "
            "5::pg_catalog.float8)) FROM upstream_token.token t "
            "JOIN upstream_token.provider p ON p.name = t.provider "
            "WHERE p.keep_alive AND t.status = 'active' AND t.refresh_token IS NOT NULL "
            "AND coalesce(t.issued_at, t.created_at) OPERATOR(pg_catalog.+) "
            "(p.refresh_token_idle_ttl OPERATOR(pg_catalog./) 5::pg_catalog.float8) "
            "OPERATOR(pg_catalog.>) $1");
        next_idle.run({timestamptz_arg(window_end)}, true, 1);
        if (auto first = ResultRow().timestamptz(1)) {
            out.next_window = out.next_window ? std::min(*out.next_window, *first) : *first;
        }
    }
    txn.commit();
    return out;
}

std::uint64_t expire_and_purge(std::optional<Time> since, Time now) {
    WorkerTxn txn;
    // A stated end's warning window opens a tenth of the lifetime it was stated with (at most
    // 7 days) before it, so only ends within 7 days are read (an index range). An end that
    // every refresh pushes on (a sliding one) never enters its window while refreshes go on.
    static Statement warn(
        "WITH w AS (SELECT session, provider, refresh_expires_at OPERATOR(pg_catalog.-) "
        "LEAST(interval '7 days', (refresh_expires_at OPERATOR(pg_catalog.-) "
        "coalesce(refresh_expires_stated_at, created_at)) OPERATOR(pg_catalog./) "
        "10::pg_catalog.float8) AS opens "
        "FROM upstream_token.token WHERE status = 'active' "
        "AND refresh_expiry_source IN ('provider', 'application') "
        "AND refresh_expires_at OPERATOR(pg_catalog.>) $2 "
        "AND refresh_expires_at OPERATOR(pg_catalog.<=) ($2 OPERATOR(pg_catalog.+) "
        "interval '7 days')) "
        "SELECT pg_catalog.pg_notify('upstream_token_events', pg_catalog.json_build_object("
        "'session', session, 'provider', provider, 'event', 'refresh_expiring')::pg_catalog.text) "
        "FROM w WHERE opens OPERATOR(pg_catalog.<=) $2 "
        "AND ($1 IS NULL OR opens OPERATOR(pg_catalog.>) $1)");
    warn.run({timestamptz_arg(since), timestamptz_arg(now)}, false);
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
    static Statement purge(
        "DELETE FROM upstream_token.token WHERE refresh_expires_at <= $1 "
        "AND (status <> 'active' OR refresh_expiry_source IN ('provider', 'application'))");
    const auto purged = purge.run({timestamptz_arg(now - purge_after())}, false);
    // A tombstone matters to refreshes that were in flight when the row was revoked; a day
    // bounds the exchange and the time its answer may wait to be saved.
    static Statement forget("DELETE FROM upstream_token.token_tombstone WHERE revoked_at < $1");
    forget.run({timestamptz_arg(now - kTombstoneLifetime)}, false);
    // An exchanged token outlives neither the session it acts for nor that session's login
    // (a purge or a drop removes the subject row without going through revoke/delete).
    static Statement orphans(
        "DELETE FROM upstream_token.token t WHERE t.grant_type = 'token_exchange' AND NOT EXISTS "
        "(SELECT 1 FROM upstream_token.token s WHERE s.session = t.subject_session "
        "AND s.provider = t.provider)");
    orphans.run({}, false);
    // Logins past their lifetime: pending ones can no longer complete, finished ones were seen.
    static Statement logins("DELETE FROM upstream_token.login WHERE expires_at <= $1");
    logins.run({timestamptz_arg(now)}, false);
    txn.commit();
    return purged;
}

}  // namespace upstream_token::pg
