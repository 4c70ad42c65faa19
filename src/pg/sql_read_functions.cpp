// SQL entry points that hand out tokens or drive refreshes: get_upstream_token,
// get_upstream_credentials, refresh_upstream_token, plus the engine statistics. The caller's
// backend never talks to a provider: it asks the engine.
#include "pg/prelude.hpp"

#include <algorithm>
#include <memory>
#include <vector>

#include "core/error.hpp"
#include "core/expiry.hpp"
#include "core/schedule.hpp"
#include "pg/args.hpp"
#include "pg/engine_client.hpp"
#include "pg/engine_shmem.hpp"
#include "pg/obtain.hpp"
#include "pg/guard.hpp"
#include "pg/gucs.hpp"
#include "pg/row_sink.hpp"
#include "pg/secrets.hpp"
#include "pg/spi.hpp"
#include "pg/sqlstate.hpp"
#include "pg/store.hpp"

namespace upstream_token::pg {
namespace {

Datum get_upstream_token(FunctionCallInfo fcinfo) {
    const std::string session = nonempty_text_arg(fcinfo, 0, "session");
    const std::string provider = nonempty_text_arg(fcinfo, 1, "provider");
    std::string access;
    {
        SpiConnection spi;
        access = obtain(session, provider, false).access;
    }
    return string_to_text_datum(access);
}

// Text of a SQLSTATE code, e.g. "UT004".
std::string sqlstate_text(ErrorCode code) {
    return pg_call([&] { return unpack_sql_state(sqlstate_of(code)); });
}

// The failure columns (sqlstate, error) of a per-provider result row.
struct RowFailure {
    std::optional<std::string> sqlstate;
    std::optional<std::string> error;
    void set(const Error& e) {
        sqlstate = sqlstate_text(e.code());
        error = e.what();
    }
};

Datum get_upstream_credentials(FunctionCallInfo fcinfo) {
    const std::string session = nonempty_text_arg(fcinfo, 0, "session");
    struct Row {
        std::string provider;
        std::optional<Obtained> got;
        RowFailure failure;
    };
    std::vector<Row> rows;
    {
        SpiConnection spi;
        for (const std::string& provider : session_providers(session)) {
            Row row{provider, std::nullopt, {}};
            try {
                row.got = obtain(session, provider, true);
            } catch (const Error& e) {
                row.failure.set(e);
            }
            rows.push_back(std::move(row));
        }
    }
    RowSink sink(fcinfo);
    for (const Row& r : rows) {
        const auto access =
            opt_text(r.got ? std::optional<std::string>(r.got->access) : std::nullopt);
        const auto id = opt_text(r.got ? r.got->id_token : std::nullopt);
        const auto state = opt_text(r.failure.sqlstate);
        const auto error = opt_text(r.failure.error);
        sink.put({string_to_text_datum(r.provider), access.first, id.first,
                  r.got ? TimestampTzGetDatum(to_timestamptz(r.got->expires_at)) : Datum(0),
                  state.first, error.first},
                 {false, access.second, id.second, !r.got, state.second, error.second});
    }
    return Datum(0);
}

Datum refresh_upstream_token(FunctionCallInfo fcinfo) {
    const std::string session = nonempty_text_arg(fcinfo, 0, "session");
    const auto only = opt_text_arg(fcinfo, 1);
    struct Row {
        std::string provider;
        bool refreshed = false;
        std::optional<Time> expires_at;
        RowFailure failure;
    };
    std::vector<Row> rows;
    {
        SpiConnection spi;
        std::vector<std::string> providers;
        if (only) {
            providers.push_back(*only);
        } else {
            providers = session_providers(session);
        }
        if (providers.empty()) {
            throw Error(ErrorCode::session_not_found,
                        "no upstream token is stored for this session");
        }
        for (const std::string& provider : providers) {
            const auto view = read_token_view(session, provider, false);
            if (!view) throw_not_found(provider);
            Row row;
            row.provider = provider;
            try {
                if (pg_call([&] { return TransactionIdIsCurrentTransactionId(view->xmin); })) {
                    throw Error(
                        ErrorCode::uncommitted_change,
                        "the token was changed by this transaction, which is not committed");
                }
                const RefreshResult r = request_refresh(provider, session, view->generation, true);
                if (!r.ok) throw Error(r.code, r.message, r.detail);
                const auto after = read_token_view(session, provider, true);
                row.refreshed = after && after->generation > view->generation;
                if (after) row.expires_at = after->expires_at;
            } catch (const Error& e) {
                row.failure.set(e);
            }
            rows.push_back(std::move(row));
        }
    }
    RowSink sink(fcinfo);
    for (const Row& r : rows) {
        const auto state = opt_text(r.failure.sqlstate);
        const auto error = opt_text(r.failure.error);
        sink.put({string_to_text_datum(r.provider), BoolGetDatum(r.refreshed),
                  r.expires_at ? TimestampTzGetDatum(to_timestamptz(*r.expires_at)) : Datum(0),
                  state.first, error.first},
                 {false, false, !r.expires_at, state.second, error.second});
    }
    return Datum(0);
}

Datum engine_status(FunctionCallInfo fcinfo) {
    EngineShared* s = engine_shared();
    RowSink sink(fcinfo);
    if (s == nullptr) return Datum(0);
    EngineCounters c;
    pid_t pid;
    bool ready;
    std::uint64_t starts;
    int queued = 0, working = 0, planned = 0;
    TimestampTz next_scan = 0;
    {
        SharedLock guard(s, LW_SHARED);
        c = s->counters;
        planned = s->planned;
        next_scan = s->next_scan_at;
        pid = s->worker_pid;
        ready = s->worker_ready;
        starts = s->worker_starts;
        for (int i = 0; i < s->nslots; ++i) queued += s->slots[i].state == SlotState::pending;
        working = s->http_in_flight;
    }
    const auto i8 = [](std::uint64_t v) { return Int64GetDatum(static_cast<std::int64_t>(v)); };
    sink.put(
        {Int32GetDatum(pid), BoolGetDatum(pid != 0 && ready), i8(starts), Int32GetDatum(queued),
         Int32GetDatum(working), i8(c.requests), i8(c.deduplicated), i8(c.network_calls),
         i8(c.refreshed), i8(c.skipped), i8(c.failed_transient), i8(c.failed_reauth),
         i8(c.failed_client), i8(c.invalid_binding), i8(c.persist_retries), i8(c.proactive),
         Int32GetDatum(planned), TimestampTzGetDatum(next_scan)},
        std::vector<bool>{false, false, false, false, false, false, false, false, false, false,
                          false, false, false, false, false, false, false,
                          pid == 0 || next_scan == 0});
    return Datum(0);
}

// An approximate percentile from a log2 histogram: the upper bound of the bucket holding it.
double percentile_ms(const std::uint64_t (&buckets)[kLatencyBuckets], double q) {
    std::uint64_t total = 0;
    for (auto b : buckets) total += b;
    if (total == 0) return 0.0;
    const auto rank = static_cast<std::uint64_t>(q * static_cast<double>(total - 1)) + 1;
    std::uint64_t seen = 0;
    for (int i = 0; i < kLatencyBuckets; ++i) {
        seen += buckets[i];
        if (seen >= rank) return static_cast<double>(1ULL << i);
    }
    return static_cast<double>(1ULL << (kLatencyBuckets - 1));
}

Datum provider_stats_sql(FunctionCallInfo fcinfo) {
    EngineShared* s = engine_shared();
    RowSink sink(fcinfo);
    if (s == nullptr) return Datum(0);
    std::vector<ProviderStats> copy;
    {
        SharedLock guard(s, LW_SHARED);
        for (const ProviderStats& p : s->providers) {
            if (p.name[0] != '\0') copy.push_back(p);
        }
    }
    const auto i8 = [](std::uint64_t v) { return Int64GetDatum(static_cast<std::int64_t>(v)); };
    const TimestampTz now = GetCurrentTimestamp();
    for (const ProviderStats& p : copy) {
        const bool paused = p.paused_until > now;
        sink.put(
            {string_to_text_datum(p.name), Int32GetDatum(p.in_flight), i8(p.refreshed),
             i8(p.failed_transient), i8(p.failed_reauth), i8(p.failed_client),
             i8(p.invalid_binding), Float8GetDatum(percentile_ms(p.latency, 0.50)),
             Float8GetDatum(percentile_ms(p.latency, 0.95)),
             Float8GetDatum(percentile_ms(p.latency, 0.99)), TimestampTzGetDatum(p.paused_until)},
            {false, false, false, false, false, false, false, false, false, false, !paused});
    }
    return Datum(0);
}

Datum planned_refresh_at_sql(FunctionCallInfo fcinfo) {
    for (int i : {0, 1, 2, 4, 5}) {
        if (PG_ARGISNULL(i)) PG_RETURN_NULL();  // strict but for issued_at
    }
    const std::string provider = text_arg_required(fcinfo, 0, "provider");
    const std::string session = text_arg_required(fcinfo, 1, "session");
    const std::int64_t generation = PG_GETARG_INT64(2);
    std::optional<Time> issued_at;
    if (!PG_ARGISNULL(3)) issued_at = from_timestamptz(PG_GETARG_TIMESTAMPTZ(3));
    const Time expires_at = from_timestamptz(PG_GETARG_TIMESTAMPTZ(4));
    const Micros threshold = interval_micros(opt_interval_arg(fcinfo, 5, "threshold", true));
    const Time due =
        proactive_due(issued_at, expires_at, threshold, spread_unit(provider, session, generation));
    PG_RETURN_TIMESTAMPTZ(to_timestamptz(due));
}

// token_status's view of the keep-alive refresh: the instant the planner computes.
Datum keep_alive_at_sql(FunctionCallInfo fcinfo) {
    const std::string provider = text_arg_required(fcinfo, 0, "provider");
    const std::string session = text_arg_required(fcinfo, 1, "session");
    const std::int64_t generation = PG_GETARG_INT64(2);
    const Time anchor = from_timestamptz(PG_GETARG_TIMESTAMPTZ(3));
    const Micros idle = interval_micros(opt_interval_arg(fcinfo, 4, "idle lifetime"));
    const Time due = keep_alive_due(anchor, idle, spread_unit(provider, session, generation));
    PG_RETURN_TIMESTAMPTZ(to_timestamptz(due));
}

}  // namespace
}  // namespace upstream_token::pg

UT_SQL_ENTRY(ut_get_upstream_token, upstream_token::pg::get_upstream_token)
UT_SQL_ENTRY(ut_get_upstream_credentials, upstream_token::pg::get_upstream_credentials)
UT_SQL_ENTRY(ut_refresh_upstream_token, upstream_token::pg::refresh_upstream_token)
UT_SQL_ENTRY(ut_engine_status, upstream_token::pg::engine_status)
UT_SQL_ENTRY(ut_planned_refresh_at, upstream_token::pg::planned_refresh_at_sql)
UT_SQL_ENTRY(ut_keep_alive_at, upstream_token::pg::keep_alive_at_sql)
UT_SQL_ENTRY(ut_provider_stats, upstream_token::pg::provider_stats_sql)
