// SQL entry points that write: register_provider, store_upstream_token.
// Each runs its body through entry_guard.
#include "pg/prelude.hpp"

#include "core/client_assertion.hpp"
#include "core/crypto.hpp"
#include "core/error.hpp"
#include "core/expiry.hpp"
#include "core/id_token.hpp"
#include "core/refresh_request.hpp"
#include "pg/args.hpp"
#include "pg/engine_shmem.hpp"
#include "pg/guard.hpp"
#include "pg/gucs.hpp"
#include "pg/secrets.hpp"
#include "pg/spi.hpp"
#include "pg/store.hpp"

UT_SQL_FUNCTION(ut_register_provider)
UT_SQL_FUNCTION(ut_store_upstream_token)
UT_SQL_FUNCTION(ut_wake_engine_at_commit)

namespace upstream_token::pg {
namespace {

constexpr std::size_t kMaxSession = 512;

// Provider names become part of AADs, advisory-lock keys and NOTIFY payloads: keep them plain.
void check_provider_name(const std::string& name) {
    const bool ok = !name.empty() && name.size() <= 63 &&
                    name.find_first_not_of("abcdefghijklmnopqrstuvwxyz"
                                           "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:-") ==
                        std::string::npos;
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

Datum register_provider(FunctionCallInfo fcinfo) {
    const std::string name = nonempty_text_arg(fcinfo, 0, "provider name");
    check_provider_name(name);
    const std::string endpoint = nonempty_text_arg(fcinfo, 1, "token_endpoint");
    validate_endpoint(endpoint, allow_insecure_http());
    const std::string client_id = nonempty_text_arg(fcinfo, 2, "client_id");
    const auto secret = opt_text_arg(fcinfo, 3);
    const AuthMethod method =
        parse_auth_method(text_arg_required(fcinfo, 4, "auth_method"));
    const auto issuer = opt_text_arg(fcinfo, 5);
    const auto revocation = opt_text_arg(fcinfo, 6);
    if (revocation) validate_endpoint(*revocation, allow_insecure_http());
    if (method == AuthMethod::none && secret) {
        throw Error(ErrorCode::invalid_parameter,
                    "a client secret was given for auth_method \"none\"",
                    "Public clients have no secret; pass NULL or choose client_secret_basic.");
    }
    if (method != AuthMethod::none && (!secret || secret->empty())) {
        throw Error(ErrorCode::invalid_parameter,
                    std::string("auth_method \"") + auth_method_name(method) +
                        "\" needs a client_secret" +
                        (method == AuthMethod::private_key_jwt ? " (the PEM private key)" : ""));
    }
    auto assertion_alg = opt_text_arg(fcinfo, 13);
    const auto assertion_kid = opt_text_arg(fcinfo, 14);
    if (method == AuthMethod::private_key_jwt) {
        assertion_alg = assertion_alg_for_key(*secret, assertion_alg.value_or(""));
    } else if (assertion_alg || assertion_kid) {
        throw Error(ErrorCode::invalid_parameter,
                    "assertion_alg and assertion_kid apply to auth_method private_key_jwt only");
    }
    if (!PG_ARGISNULL(12) && PG_GETARG_INT32(12) <= 0) {
        throw Error(ErrorCode::invalid_parameter, "max_concurrent must be positive");
    }

    SpiConnection spi;
    std::optional<std::string> sealed;
    if (secret) sealed = seal(name, "", "client_secret", *secret);
    static Statement upsert(
        "INSERT INTO upstream_token.provider AS p (name, token_endpoint, client_id, "
        "client_secret, auth_method, issuer, revocation_endpoint, scope, refresh_threshold, "
        "refresh_token_ttl, default_lifetime, request_timeout, max_concurrent, assertion_alg, "
        "assertion_kid) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, coalesce($11, interval '1 hour'), $12, $13, "
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
    for (int i : {8, 9, 10, 11}) {
        if (!PG_ARGISNULL(i)) {
            Interval* iv = PG_GETARG_INTERVAL_P(i);
            if (iv->time < 0 || iv->day < 0 || iv->month < 0) {
                throw Error(ErrorCode::invalid_parameter, "intervals must not be negative");
            }
        }
    }
    scan_on_commit();  // thresholds may have changed: the engine re-plans after commit
    upsert.run({text_arg(name), text_arg(endpoint), text_arg(client_id), bytea_arg(sealed),
                text_arg(auth_method_name(method)), text_arg(issuer), text_arg(revocation),
                text_arg(opt_text_arg(fcinfo, 7)), interval_arg(fcinfo, 8),
                interval_arg(fcinfo, 9), interval_arg(fcinfo, 10), interval_arg(fcinfo, 11),
                int4_arg(opt_int4_arg(fcinfo, 12)), text_arg(assertion_alg), text_arg(assertion_kid)},
               false);
    PG_RETURN_VOID();
}

// Treats '' like NULL for optional secrets.
std::optional<std::string> nonempty(std::optional<std::string> v) {
    if (v && v->empty()) return std::nullopt;
    return v;
}

Datum store_upstream_token(FunctionCallInfo fcinfo) {
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
        throw Error(ErrorCode::invalid_parameter,
                    "an access token or a refresh token is required");
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
    const Time expires_at =
        access ? access_expiry(now, expires_in, provider->default_lifetime) : now;
    std::optional<Time> refresh_expires_at;
    if (refresh) {
        refresh_expires_at =
            refresh_expiry(now, refresh_expires_in, provider->refresh_token_ttl, refresh_token_ttl());
    }
    std::optional<std::string> access_ct, refresh_ct, id_ct;
    if (access) access_ct = seal(provider_name, session, "access_token", *access);
    if (refresh) refresh_ct = seal(provider_name, session, "refresh_token", *refresh);
    if (id_token) id_ct = seal(provider_name, session, "id_token", *id_token);

    static Statement upsert(
        "INSERT INTO upstream_token.token AS t (session, provider, subject, client_id, id_claims, "
        "access_token, refresh_token, id_token, scope, expires_at, refresh_expires_at) "
        "VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8, $9, $10, $11) "
        "ON CONFLICT (session, provider) DO UPDATE SET subject = EXCLUDED.subject, "
        "client_id = EXCLUDED.client_id, id_claims = EXCLUDED.id_claims, "
        "access_token = EXCLUDED.access_token, refresh_token = EXCLUDED.refresh_token, "
        "id_token = EXCLUDED.id_token, token_type = 'Bearer', scope = EXCLUDED.scope, "
        "expires_at = EXCLUDED.expires_at, refresh_expires_at = EXCLUDED.refresh_expires_at, "
        "generation = t.generation + 1, status = 'active', failure_count = 0, "
        "next_attempt_at = NULL, last_error = NULL, updated_at = pg_catalog.now()");
    upsert.run({text_arg(session), text_arg(provider_name), text_arg(subject),
                text_arg(provider->client_id), text_arg(claims_json), bytea_arg(access_ct),
                bytea_arg(refresh_ct), bytea_arg(id_ct), text_arg(scope),
                timestamptz_arg(expires_at), timestamptz_arg(refresh_expires_at)},
               false);
    if (refresh) {
        scan_on_commit(to_timestamptz(
            expires_at - provider->refresh_threshold.value_or(refresh_threshold())));
    }
    PG_RETURN_VOID();
}

}  // namespace
}  // namespace upstream_token::pg

using upstream_token::pg::entry_guard;

Datum ut_register_provider(PG_FUNCTION_ARGS) {
    return entry_guard([&] { return upstream_token::pg::register_provider(fcinfo); });
}

Datum ut_wake_engine_at_commit(PG_FUNCTION_ARGS) {
    return entry_guard([&] {
        upstream_token::pg::scan_on_commit();
        PG_RETURN_VOID();
    });
}

Datum ut_store_upstream_token(PG_FUNCTION_ARGS) {
    return entry_guard([&] { return upstream_token::pg::store_upstream_token(fcinfo); });
}
