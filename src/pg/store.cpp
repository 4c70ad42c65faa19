#include "pg/store.hpp"

#include <algorithm>
#include <unordered_map>

#include "core/presets.hpp"
#include "core/schedule.hpp"
#include "pg/engine_shmem.hpp"
#include "pg/guard.hpp"
#include "pg/gucs.hpp"
#include "pg/secrets.hpp"
#include "pg/spi.hpp"
#include "pg/token_read.hpp"

namespace upstream_token::pg {

namespace {
constexpr TimestampTz kProviderCacheAge = USECS_PER_SEC;
constexpr std::size_t kProviderCacheSize = 1024;

// An interval column read as microseconds.
std::optional<Micros> micros_col(const ResultRow& r, int col) {
    auto v = r.int8(col);
    if (!v) return std::nullopt;
    return Micros{*v};
}
}  // namespace

std::optional<ProviderRow> find_provider(std::string_view name) {
    static Statement q(
        "SELECT name, token_endpoint, client_id, client_secret, auth_method, issuer, scope, "
        "(extract(epoch FROM refresh_threshold) * 1000000::pg_catalog.numeric)::pg_catalog.int8, "
        "(extract(epoch FROM refresh_token_ttl) * 1000000::pg_catalog.numeric)::pg_catalog.int8, "
        "(extract(epoch FROM default_lifetime) * 1000000::pg_catalog.numeric)::pg_catalog.int8, "
        "(extract(epoch FROM request_timeout) * 1000000::pg_catalog.numeric)::pg_catalog.int8, "
        "revocation_endpoint, "
        "assertion_alg, assertion_kid, "
        // 0.3.0's columns through to_jsonb: a backend still reads an older schema (reads go on
        // until ALTER EXTENSION UPDATE; only writes and refreshes wait for it).
        "coalesce(pg_catalog.to_jsonb(p) OPERATOR(pg_catalog.->) 'refresh_params', "
        "'{}')::pg_catalog.text, "
        "CASE WHEN (pg_catalog.to_jsonb(p) OPERATOR(pg_catalog.->>) 'keep_alive')::pg_catalog.bool "
        "THEN (extract(epoch FROM (pg_catalog.to_jsonb(p) OPERATOR(pg_catalog.->>) "
        "'refresh_token_idle_ttl')::pg_catalog.interval) * 1000000::pg_catalog.numeric)"
        "::pg_catalog.int8 END, "
        "coalesce(pg_catalog.to_jsonb(p) OPERATOR(pg_catalog.->) 'response_fields', "
        "'[]')::pg_catalog.text, "
        "pg_catalog.to_jsonb(p) OPERATOR(pg_catalog.->>) 'authorization_endpoint', "
        "pg_catalog.to_jsonb(p) OPERATOR(pg_catalog.->>) 'device_authorization_endpoint' "
        "FROM upstream_token.provider p WHERE name = $1");
    if (q.run({text_arg(name)}, true, 1) == 0) return std::nullopt;
    ResultRow r;
    ProviderRow p;
    p.name = r.text(1).value_or("");
    p.token_endpoint = r.text(2).value_or("");
    p.client_id = r.text(3).value_or("");
    p.client_secret_ct = r.bytea(4);
    p.auth_method = parse_auth_method(r.text(5).value_or(""));
    p.issuer = r.text(6);
    p.scope = r.text(7);
    p.refresh_threshold = micros_col(r, 8);
    p.refresh_token_ttl = micros_col(r, 9);
    p.default_lifetime = micros_col(r, 10).value_or(seconds(3600));
    p.request_timeout = micros_col(r, 11);
    p.revocation_endpoint = r.text(12);
    p.assertion_alg = r.text(13).value_or("");
    p.assertion_kid = r.text(14).value_or("");
    p.refresh_params = string_map_from_json(r.text(15).value_or("{}"), "refresh_params");
    p.keep_alive_idle = micros_col(r, 16);
    p.response_fields = string_list_from_json(r.text(17).value_or("[]"), "response_fields");
    p.authorization_endpoint = r.text(18);
    p.device_authorization_endpoint = r.text(19);
    return p;
}

ClientCredentials client_credentials(const ProviderRow& p) {
    ClientCredentials c;
    c.method = p.auth_method;
    c.client_id = p.client_id;
    c.secret = open_sealed(p.name, "", "client_secret", p.client_secret_ct);
    c.assertion_alg = p.assertion_alg;
    c.assertion_kid = p.assertion_kid;
    return c;
}

HttpRequestSpec provider_request(const ProviderRow& p, std::string url, HttpRequest request) {
    HttpRequestSpec spec;
    spec.url = std::move(url);
    spec.headers = std::move(request.headers);
    spec.body = std::move(request.body);
    spec.total_timeout = p.request_timeout.value_or(request_timeout());
    if (spec.total_timeout.count() <= 0) spec.total_timeout = request_timeout();
    spec.connect_timeout = std::min(spec.total_timeout, seconds(5));
    spec.ca_file = ca_file();
    spec.allow_http = allow_insecure_http();
    return spec;
}

namespace {
struct CachedProvider {
    TimestampTz fetched;
    std::optional<ProviderRow> row;
};

// Per-backend, like PostgreSQL's own catalog caches; bounded and at most a second old.
std::unordered_map<std::string, CachedProvider>& provider_cache() {
    static std::unordered_map<std::string, CachedProvider> cache;
    return cache;
}
}  // namespace

void forget_cached_providers() {
    provider_cache().clear();
}

const ProviderRow* cached_provider(std::string_view name) {
    auto& cache = provider_cache();
    const TimestampTz now = GetCurrentTimestamp();
    auto it = cache.find(std::string(name));
    if (it == cache.end() || now - it->second.fetched >= kProviderCacheAge) {
        if (cache.size() >= kProviderCacheSize) cache.clear();
        it = cache.insert_or_assign(std::string(name), CachedProvider{now, find_provider(name)})
                 .first;
    }
    return it->second.row ? &*it->second.row : nullptr;
}

bool provider_exists(std::string_view name) {
    static Statement q("SELECT 1 FROM upstream_token.provider WHERE name = $1");
    return q.run({text_arg(name)}, true, 1) > 0;
}

std::optional<TokenView> read_token_view(std::string_view session, std::string_view provider,
                                         bool latest, bool with_id_token) {
    // One index probe: the provider's threshold comes from the per-backend cache.
    auto v = read_token_row(session, provider, latest, with_id_token);
    if (!v) return std::nullopt;
    if (const ProviderRow* p = cached_provider(provider))
        v->provider_threshold = p->refresh_threshold;
    return v;
}

void plan_on_commit(const ProviderRow& provider, Time expires_at, Time now) {
    Time plan_by = expires_at - provider.refresh_threshold.value_or(refresh_threshold());
    if (provider.keep_alive_idle) {  // the earliest a keep-alive refresh is planned
        plan_by = std::min(plan_by, keep_alive_due(now, *provider.keep_alive_idle, 1.0));
    }
    scan_on_commit(to_timestamptz(plan_by));
}

void upsert_login(const LoginRow& row) {
    // Tokens exchanged for the session's previous login belong to that login's user: a new
    // login (perhaps another user's) must not be served them.
    static Statement forget_exchanged(
        "DELETE FROM upstream_token.token WHERE subject_session = $1 AND provider = $2 "
        "AND grant_type = 'token_exchange'");
    forget_exchanged.run({text_arg(row.session), text_arg(row.provider)}, false);
    static Statement upsert(
        "INSERT INTO upstream_token.token AS t (session, provider, subject, client_id, id_claims, "
        "access_token, refresh_token, id_token, scope, expires_at, refresh_expires_at, issued_at, "
        "refresh_expiry_source, attributes, refresh_expires_stated_at) "
        "VALUES ($1, $2, $3, $4, $5::pg_catalog.jsonb, $6, $7, $8, $9, $10, $11, $12, $13, "
        "$14::pg_catalog.jsonb, pg_catalog.now()) "
        "ON CONFLICT (session, provider) DO UPDATE SET subject = EXCLUDED.subject, "
        "client_id = EXCLUDED.client_id, id_claims = EXCLUDED.id_claims, "
        "access_token = EXCLUDED.access_token, refresh_token = EXCLUDED.refresh_token, "
        "id_token = EXCLUDED.id_token, token_type = 'Bearer', scope = EXCLUDED.scope, "
        "expires_at = EXCLUDED.expires_at, refresh_expires_at = EXCLUDED.refresh_expires_at, "
        "issued_at = EXCLUDED.issued_at, refresh_expiry_source = EXCLUDED.refresh_expiry_source, "
        "attributes = EXCLUDED.attributes, "
        "refresh_expires_stated_at = EXCLUDED.refresh_expires_stated_at, "
        "generation = t.generation + 1, status = 'active', "
        "failure_count = 0, "
        "next_attempt_at = NULL, last_error = NULL, updated_at = pg_catalog.now()");
    upsert.run({text_arg(row.session), text_arg(row.provider), text_arg(row.subject),
                text_arg(row.client_id), text_arg(row.claims_json), bytea_arg(row.access_ct),
                bytea_arg(row.refresh_ct), bytea_arg(row.id_ct), text_arg(row.scope),
                timestamptz_arg(row.expires_at), timestamptz_arg(row.refresh_expires_at),
                timestamptz_arg(row.issued_at), text_arg(row.refresh_expiry_source),
                text_arg(row.attributes)},
               false);
}

std::vector<std::string> session_providers(std::string_view session) {
    static Statement q(
        "SELECT provider FROM upstream_token.token WHERE session = $1 ORDER BY provider");
    const auto n = q.run({text_arg(session)}, true);
    std::vector<std::string> out;
    for (std::uint64_t i = 0; i < n; ++i) out.push_back(ResultRow(i).text(1).value_or(""));
    return out;
}

}  // namespace upstream_token::pg
