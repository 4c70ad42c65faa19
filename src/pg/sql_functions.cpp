// SQL entry points that write tokens: store_upstream_token (register_provider and the
// presets are in sql_provider_functions.cpp).
// Each runs its body through entry_guard.
#include "pg/prelude.hpp"

#include <algorithm>

#include "core/error.hpp"
#include "core/expiry.hpp"
#include "core/id_token.hpp"
#include "core/presets.hpp"
#include "core/token_response.hpp"
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

// The login's attributes as stored: only the provider's response_fields, each value bounded
// like a token answer's (a value under another name could be a secret in clear).
std::string checked_attributes(const std::string& json, const ProviderRow& provider) {
    const auto given = string_map_from_json(json, "attributes");
    for (const auto& [name, value] : given) {
        const auto& kept = provider.response_fields;
        if (std::find(kept.begin(), kept.end(), name) == kept.end()) {
            throw Error(ErrorCode::invalid_parameter,
                        "attributes may only hold the provider's response_fields",
                        "\"" + name.substr(0, 64) + "\" is not one of them.",
                        "Name the field in register_provider(..., response_fields => ...).");
        }
        if (value.size() > kMaxOtherFieldBytes) {
            throw Error(ErrorCode::invalid_parameter, "attribute \"" + name + "\" is longer than " +
                                                          std::to_string(kMaxOtherFieldBytes) +
                                                          " bytes");
        }
    }
    return json_from_string_map(given);
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
    const std::string session = session_arg(fcinfo, 0);
    const std::string provider_name = nonempty_text_arg(fcinfo, 1, "provider");
    const auto access = nonempty(opt_text_arg(fcinfo, 2));
    const auto refresh = nonempty(opt_text_arg(fcinfo, 3));
    const auto expires_in = opt_int4_arg(fcinfo, 4);
    const auto id_token = nonempty(opt_text_arg(fcinfo, 5));
    auto subject = nonempty(opt_text_arg(fcinfo, 6));
    const auto scope = opt_text_arg(fcinfo, 7);
    const auto refresh_expires_in = opt_int4_arg(fcinfo, 8);
    const auto given_attributes = opt_jsonb_text_arg(fcinfo, 9);

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
    std::optional<std::string> attributes;
    if (given_attributes) attributes = checked_attributes(*given_attributes, *provider);
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

    LoginRow row;
    row.session = session;
    row.provider = provider_name;
    row.subject = subject;
    row.client_id = provider->client_id;
    row.claims_json = claims_json;
    row.access_ct = access_ct;
    row.refresh_ct = refresh_ct;
    row.id_ct = id_ct;
    row.scope = scope;
    row.expires_at = expires_at;
    row.refresh_expires_at = refresh_expires_at;
    row.refresh_expiry_source = refresh_expiry_source;
    row.attributes = attributes;
    upsert_login(row);
    if (refresh) plan_on_commit(*provider, expires_at, now);
    PG_RETURN_VOID();
}

}  // namespace
}  // namespace upstream_token::pg

UT_SQL_ENTRY(ut_store_upstream_token, upstream_token::pg::store_upstream_token)
UT_SQL_ENTRY(ut_wake_engine_at_commit, upstream_token::pg::wake_engine_at_commit)
