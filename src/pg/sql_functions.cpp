// SQL entry points that write: register_provider, store_upstream_token.
// Each runs its body through entry_guard.
#include "pg/prelude.hpp"

#include "core/client_assertion.hpp"
#include "core/crypto.hpp"
#include "core/discovery.hpp"
#include "core/error.hpp"
#include "core/expiry.hpp"
#include "core/id_token.hpp"
#include "core/refresh_request.hpp"
#include "core/schedule.hpp"
#include "pg/args.hpp"
#include "pg/engine_client.hpp"
#include "pg/engine_shmem.hpp"
#include "pg/guard.hpp"
#include "pg/gucs.hpp"
#include "pg/schema_version.hpp"
#include "pg/secrets.hpp"
#include "pg/spi.hpp"
#include "pg/store.hpp"

namespace upstream_token::pg {
namespace {

constexpr std::size_t kMaxSession = 512;

// Provider names become part of AADs, advisory-lock keys and NOTIFY payloads: keep them plain.
void check_provider_name(const std::string& name) {
    const bool ok = !name.empty() && name.size() <= 63 &&
                    name.find_first_not_of(
                        "abcdefghijklmnopqrstuvwxyz"
                        "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:-") == std::string::npos;
    if (!ok) {
        throw Error(ErrorCode::invalid_parameter, "invalid provider name",
                    "A provider name is 1 to 63 characters from A-Z a-z 0-9 _ . : -");
    }
}

// Sessions are opaque keys chosen by the application; only their size is bounded.
void check_session(const std::string& session) {
    if (session.size() > kMaxSession) {
        throw Error(ErrorCode::invalid_parameter, "session must be at most 512 bytes");
    }
}

// An optional interval argument passed straight to SQL.
Arg interval_arg(FunctionCallInfo fcinfo, int n) {
    return datum_arg(INTERVALOID, PG_ARGISNULL(n) ? Datum(0) : PG_GETARG_DATUM(n), PG_ARGISNULL(n));
}

// Everything register_provider stores about a provider, before validation.
struct ProviderSpec {
    std::string name;
    std::string token_endpoint;
    std::string client_id;
    std::optional<std::string> secret;  // client secret, or the PEM key for private_key_jwt
    AuthMethod method = AuthMethod::client_secret_basic;
    std::optional<std::string> issuer;
    std::optional<std::string> revocation_endpoint;
    std::optional<std::string> scope;
    Arg refresh_threshold, refresh_token_ttl, default_lifetime, request_timeout;
    std::optional<std::int32_t> max_concurrent;
    std::optional<std::string> assertion_alg, assertion_kid;
};

// Reads the options both registration functions share, from argument `first` on:
// scope, refresh_threshold, refresh_token_ttl, default_lifetime, request_timeout,
// max_concurrent, assertion_alg, assertion_kid.
void read_provider_options(FunctionCallInfo fcinfo, int first, ProviderSpec& spec) {
    spec.scope = opt_text_arg(fcinfo, first);
    for (int i = first + 1; i <= first + 4; ++i) {
        if (!PG_ARGISNULL(i)) {
            const Interval* iv = PG_GETARG_INTERVAL_P(i);
            if (iv->time < 0 || iv->day < 0 || iv->month < 0) {
                throw Error(ErrorCode::invalid_parameter, "intervals must not be negative");
            }
        }
    }
    spec.refresh_threshold = interval_arg(fcinfo, first + 1);
    spec.refresh_token_ttl = interval_arg(fcinfo, first + 2);
    spec.default_lifetime = interval_arg(fcinfo, first + 3);
    spec.request_timeout = interval_arg(fcinfo, first + 4);
    spec.max_concurrent = opt_int4_arg(fcinfo, first + 5);
    if (spec.max_concurrent && *spec.max_concurrent <= 0) {
        throw Error(ErrorCode::invalid_parameter, "max_concurrent must be positive");
    }
    spec.assertion_alg = opt_text_arg(fcinfo, first + 6);
    spec.assertion_kid = opt_text_arg(fcinfo, first + 7);
}

// Validates a provider and inserts or replaces it (the secret sealed).
void save_provider(ProviderSpec& spec) {
    check_provider_name(spec.name);
    validate_endpoint(spec.token_endpoint, allow_insecure_http());
    if (spec.revocation_endpoint)
        validate_endpoint(*spec.revocation_endpoint, allow_insecure_http());
    if (spec.client_id.empty())
        throw Error(ErrorCode::invalid_parameter, "client_id must not be empty");
    if (spec.method == AuthMethod::none && spec.secret) {
        throw Error(ErrorCode::invalid_parameter,
                    "a client secret was given for auth_method \"none\"",
                    "Public clients have no secret; pass NULL or choose client_secret_basic.");
    }
    if (spec.method != AuthMethod::none && (!spec.secret || spec.secret->empty())) {
        throw Error(
            ErrorCode::invalid_parameter,
            std::string("auth_method \"") + auth_method_name(spec.method) +
                "\" needs a client_secret" +
                (spec.method == AuthMethod::private_key_jwt ? " (the PEM private key)" : ""));
    }
    if (spec.method == AuthMethod::private_key_jwt) {
        spec.assertion_alg = assertion_alg_for_key(*spec.secret, spec.assertion_alg.value_or(""));
    } else if (spec.assertion_alg || spec.assertion_kid) {
        throw Error(ErrorCode::invalid_parameter,
                    "assertion_alg and assertion_kid apply to auth_method private_key_jwt only");
    }

    SpiConnection spi;
    std::optional<std::string> sealed;
    if (spec.secret) sealed = seal(spec.name, "", "client_secret", *spec.secret);
    static Statement upsert(
        "INSERT INTO upstream_token.provider AS p (name, token_endpoint, client_id, "
        "client_secret, auth_method, issuer, revocation_endpoint, scope, refresh_threshold, "
        "refresh_token_ttl, default_lifetime, request_timeout, max_concurrent, assertion_alg, "
        "assertion_kid) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, coalesce($11, interval '1 hour'), $12, "
        "$13, "
        "$14, $15) "
        "ON CONFLICT (name) DO UPDATE SET token_endpoint = EXCLUDED.token_endpoint, "
        "client_id = EXCLUDED.client_id, client_secret = EXCLUDED.client_secret, "
        "auth_method = EXCLUDED.auth_method, issuer = EXCLUDED.issuer, "
        "revocation_endpoint = EXCLUDED.revocation_endpoint, scope = EXCLUDED.scope, "
        "refresh_threshold = EXCLUDED.refresh_threshold, "
        "refresh_token_ttl = EXCLUDED.refresh_token_ttl, "
        "default_lifetime = EXCLUDED.default_lifetime, "
        "request_timeout = EXCLUDED.request_timeout, max_concurrent = EXCLUDED.max_concurrent, "
        "assertion_alg = EXCLUDED.assertion_alg, assertion_kid = EXCLUDED.assertion_kid, "
        "updated_at = pg_catalog.now()");
    scan_on_commit();  // thresholds may have changed: the engine re-plans after commit
    upsert.run(
        {text_arg(spec.name), text_arg(spec.token_endpoint), text_arg(spec.client_id),
         bytea_arg(sealed), text_arg(auth_method_name(spec.method)), text_arg(spec.issuer),
         text_arg(spec.revocation_endpoint), text_arg(spec.scope), spec.refresh_threshold,
         spec.refresh_token_ttl, spec.default_lifetime, spec.request_timeout,
         int4_arg(spec.max_concurrent), text_arg(spec.assertion_alg), text_arg(spec.assertion_kid)},
        false);
}

Datum register_provider(FunctionCallInfo fcinfo) {
    require_current_schema();
    ProviderSpec spec;
    spec.name = nonempty_text_arg(fcinfo, 0, "provider name");
    spec.token_endpoint = nonempty_text_arg(fcinfo, 1, "token_endpoint");
    spec.client_id = nonempty_text_arg(fcinfo, 2, "client_id");
    spec.secret = opt_text_arg(fcinfo, 3);
    spec.method = parse_auth_method(text_arg_required(fcinfo, 4, "auth_method"));
    spec.issuer = opt_text_arg(fcinfo, 5);
    spec.revocation_endpoint = opt_text_arg(fcinfo, 6);
    read_provider_options(fcinfo, 7, spec);
    save_provider(spec);
    PG_RETURN_VOID();
}

Datum register_provider_from_issuer(FunctionCallInfo fcinfo) {
    require_current_schema();
    ProviderSpec spec;
    spec.name = nonempty_text_arg(fcinfo, 0, "provider name");
    check_provider_name(spec.name);
    const std::string issuer = nonempty_text_arg(fcinfo, 1, "issuer");
    spec.client_id = nonempty_text_arg(fcinfo, 2, "client_id");
    spec.secret = opt_text_arg(fcinfo, 3);
    const auto method = opt_text_arg(fcinfo, 4);
    read_provider_options(fcinfo, 5, spec);
    (void)metadata_urls(issuer, allow_insecure_http());  // refuse a bad issuer before queuing

    const RefreshResult fetched = request_discovery(issuer);
    if (!fetched.ok) throw Error(fetched.code, fetched.message, fetched.detail);
    std::string document;
    {
        SpiConnection spi;
        static Statement read(
            "SELECT document::pg_catalog.text FROM upstream_token.discovery WHERE issuer = $1");
        if (read.run({text_arg(issuer)}, true, 1, pg_call([] { return GetLatestSnapshot(); })) ==
            0) {
            throw Error(ErrorCode::internal, "the engine's metadata for this issuer vanished");
        }
        document = ResultRow().text(1).value_or("");
    }
    const ProviderMetadata meta = parse_metadata(document, issuer, allow_insecure_http());
    spec.token_endpoint = meta.token_endpoint;
    spec.revocation_endpoint = meta.revocation_endpoint;
    spec.issuer = meta.issuer;
    if (method) {
        spec.method = parse_auth_method(*method);
        require_supported(meta.auth_methods, spec.method);
    } else {
        spec.method = choose_auth_method(meta.auth_methods, spec.secret.has_value());
    }
    save_provider(spec);
    PG_RETURN_VOID();
}

// Treats '' like NULL for optional secrets.
std::optional<std::string> nonempty(std::optional<std::string> v) {
    if (v && v->empty()) return std::nullopt;
    return v;
}

Datum wake_engine_at_commit(FunctionCallInfo) {
    scan_on_commit();
    PG_RETURN_VOID();
}

Datum store_upstream_token(FunctionCallInfo fcinfo) {
    require_current_schema();
    const std::string session = nonempty_text_arg(fcinfo, 0, "session");
    check_session(session);
    const std::string provider_name = nonempty_text_arg(fcinfo, 1, "provider");
    const auto access = nonempty(opt_text_arg(fcinfo, 2));
    const auto refresh = nonempty(opt_text_arg(fcinfo, 3));
    const auto expires_in = opt_int4_arg(fcinfo, 4);
    const auto id_token = nonempty(opt_text_arg(fcinfo, 5));
    auto subject = nonempty(opt_text_arg(fcinfo, 6));
    const auto scope = opt_text_arg(fcinfo, 7);
    const auto refresh_expires_in = opt_int4_arg(fcinfo, 8);

    if (!access && !refresh) {
        throw Error(ErrorCode::invalid_parameter, "an access token or a refresh token is required");
    }
    if (expires_in && *expires_in < 0) {
        throw Error(ErrorCode::invalid_parameter, "expires_in must not be negative");
    }
    if (refresh_expires_in && *refresh_expires_in < 0) {
        throw Error(ErrorCode::invalid_parameter, "refresh_expires_in must not be negative");
    }
    std::optional<std::string> claims_json;
    if (id_token) {
        const IdClaims claims = decode_id_token(*id_token);
        if (subject && *subject != claims.sub) {
            throw Error(ErrorCode::invalid_parameter,
                        "subject differs from the ID token's sub claim");
        }
        subject = claims.sub;
        claims_json = claims_to_json(claims);
    }

    SpiConnection spi;
    const auto provider = find_provider(provider_name);
    if (!provider) {
        throw Error(ErrorCode::provider_not_found,
                    "provider \"" + provider_name + "\" does not exist");
    }
    const Time now = now_time();
    const Time expires_at = access ? access_expiry(now - kProviderClockAllowance, expires_in,
                                                   provider->default_lifetime)
                                   : now;
    std::optional<Time> refresh_expires_at;
    std::optional<std::string> refresh_expiry_source;  // stated by this call, or an estimate
    if (refresh) {
        const RefreshExpiry e = login_refresh_expiry(
            now, refresh_expires_in, provider->refresh_token_ttl, refresh_token_ttl());
        refresh_expires_at = e.at;
        refresh_expiry_source = refresh_expiry_source_name(e.source);
    }
    std::optional<std::string> access_ct, refresh_ct, id_ct;
    if (access) access_ct = seal(provider_name, session, "access_token", *access);
    if (refresh) refresh_ct = seal(provider_name, session, "refresh_token", *refresh);
    if (id_token) id_ct = seal(provider_name, session, "id_token", *id_token);

    static Statement upsert(
        "INSERT INTO upstream_token.token AS t (session, provider, subject, client_id, id_claims, "
        "access_token, refresh_token, id_token, scope, expires_at, refresh_expires_at, issued_at, "
        "refresh_expiry_source) "
        "VALUES ($1, $2, $3, $4, $5::pg_catalog.jsonb, $6, $7, $8, $9, $10, $11, $12, $13) "
        "ON CONFLICT (session, provider) DO UPDATE SET subject = EXCLUDED.subject, "
        "client_id = EXCLUDED.client_id, id_claims = EXCLUDED.id_claims, "
        "access_token = EXCLUDED.access_token, refresh_token = EXCLUDED.refresh_token, "
        "id_token = EXCLUDED.id_token, token_type = 'Bearer', scope = EXCLUDED.scope, "
        "expires_at = EXCLUDED.expires_at, refresh_expires_at = EXCLUDED.refresh_expires_at, "
        "issued_at = EXCLUDED.issued_at, refresh_expiry_source = EXCLUDED.refresh_expiry_source, "
        "generation = t.generation + 1, status = 'active', "
        "failure_count = 0, "
        "next_attempt_at = NULL, last_error = NULL, updated_at = pg_catalog.now()");
    upsert.run({text_arg(session), text_arg(provider_name), text_arg(subject),
                text_arg(provider->client_id), text_arg(claims_json), bytea_arg(access_ct),
                bytea_arg(refresh_ct), bytea_arg(id_ct), text_arg(scope),
                timestamptz_arg(expires_at), timestamptz_arg(refresh_expires_at),
                timestamptz_arg(std::nullopt), text_arg(refresh_expiry_source)},
               false);
    if (refresh) {
        scan_on_commit(
            to_timestamptz(expires_at - provider->refresh_threshold.value_or(refresh_threshold())));
    }
    PG_RETURN_VOID();
}

}  // namespace
}  // namespace upstream_token::pg

UT_SQL_ENTRY(ut_register_provider, upstream_token::pg::register_provider)
UT_SQL_ENTRY(ut_register_provider_from_issuer, upstream_token::pg::register_provider_from_issuer)
UT_SQL_ENTRY(ut_store_upstream_token, upstream_token::pg::store_upstream_token)
UT_SQL_ENTRY(ut_wake_engine_at_commit, upstream_token::pg::wake_engine_at_commit)
