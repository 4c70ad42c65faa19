// SQL entry points for providers: register_provider (optionally from a preset),
// register_provider_from_issuer, and the preset list behind the provider_presets view.
// Each runs its body through entry_guard.
#include "pg/prelude.hpp"

#include <map>

#include "core/client_assertion.hpp"
#include "core/discovery.hpp"
#include "core/error.hpp"
#include "core/presets.hpp"
#include "core/refresh_request.hpp"
#include "pg/args.hpp"
#include "pg/engine_client.hpp"
#include "pg/engine_shmem.hpp"
#include "pg/guard.hpp"
#include "pg/gucs.hpp"
#include "pg/row_sink.hpp"
#include "pg/schema_version.hpp"
#include "pg/secrets.hpp"
#include "pg/spi.hpp"

namespace upstream_token::pg {
namespace {

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
    std::optional<std::string> preset;
    std::map<std::string, std::string> refresh_params;
    Arg refresh_token_idle_ttl{INTERVALOID, Datum(0), true};
    bool keep_alive = false;
    std::vector<std::string> response_fields;
    std::optional<std::string> authorization_endpoint;         // begin_login
    std::optional<std::string> device_authorization_endpoint;  // begin_device_login
};

// Reads the options both registration functions share, from argument `first` on:
// scope, refresh_threshold, refresh_token_ttl, default_lifetime, request_timeout,
// max_concurrent, assertion_alg, assertion_kid.
void read_provider_options(FunctionCallInfo fcinfo, int first, ProviderSpec& spec) {
    spec.scope = opt_text_arg(fcinfo, first);
    const char* const names[] = {"refresh_threshold", "refresh_token_ttl", "default_lifetime",
                                 "request_timeout"};
    for (int i = 0; i < 4; ++i) (void)opt_interval_arg(fcinfo, first + 1 + i, names[i]);
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

// A text[] Datum of `items`.
Datum text_array(const std::vector<std::string_view>& items) {
    std::vector<Datum> elems;
    for (std::string_view x : items) elems.push_back(string_to_text_datum(x));
    Datum* data = elems.data();
    const int n = static_cast<int>(elems.size());
    return PointerGetDatum(
        pg_call([&] { return construct_array(data, n, TEXTOID, -1, false, TYPALIGN_INT); }));
}

// Validates a provider and inserts or replaces it (the secret sealed).
void save_provider(ProviderSpec& spec) {
    check_provider_name(spec.name);
    validate_endpoint(spec.token_endpoint, allow_insecure_http());
    for (const auto* endpoint : {&spec.revocation_endpoint, &spec.authorization_endpoint,
                                 &spec.device_authorization_endpoint}) {
        if (*endpoint) validate_endpoint(**endpoint, allow_insecure_http());
    }
    if (spec.client_id.empty())
        throw Error(ErrorCode::invalid_parameter, "client_id must not be empty");
    for (const auto& [param, value] : spec.refresh_params) {
        if (param.empty() || reserved_refresh_param(param)) {
            throw Error(ErrorCode::invalid_parameter,
                        "refresh_params must not set \"" + param + "\"",
                        "The engine sets grant_type, refresh_token, scope and the client's "
                        "credentials itself.");
        }
    }
    for (const std::string& field : spec.response_fields) check_response_field(field);
    if (spec.keep_alive && spec.refresh_token_idle_ttl.null) {
        throw Error(ErrorCode::invalid_parameter, "keep_alive needs refresh_token_idle_ttl",
                    "keep_alive refreshes a session before its refresh token has been unused "
                    "for refresh_token_idle_ttl.");
    }
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
        "assertion_kid, preset, refresh_params, refresh_token_idle_ttl, keep_alive, "
        "response_fields, authorization_endpoint, device_authorization_endpoint) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, coalesce($11, interval '1 hour'), $12, "
        "$13, $14, $15, $16, $17::pg_catalog.jsonb, $18, $19, $20, $21, $22) "
        "ON CONFLICT (name) DO UPDATE SET token_endpoint = EXCLUDED.token_endpoint, "
        "client_id = EXCLUDED.client_id, client_secret = EXCLUDED.client_secret, "
        "auth_method = EXCLUDED.auth_method, issuer = EXCLUDED.issuer, "
        "revocation_endpoint = EXCLUDED.revocation_endpoint, scope = EXCLUDED.scope, "
        "refresh_threshold = EXCLUDED.refresh_threshold, "
        "refresh_token_ttl = EXCLUDED.refresh_token_ttl, "
        "default_lifetime = EXCLUDED.default_lifetime, "
        "request_timeout = EXCLUDED.request_timeout, max_concurrent = EXCLUDED.max_concurrent, "
        "assertion_alg = EXCLUDED.assertion_alg, assertion_kid = EXCLUDED.assertion_kid, "
        "preset = EXCLUDED.preset, refresh_params = EXCLUDED.refresh_params, "
        "refresh_token_idle_ttl = EXCLUDED.refresh_token_idle_ttl, "
        "keep_alive = EXCLUDED.keep_alive, response_fields = EXCLUDED.response_fields, "
        "authorization_endpoint = EXCLUDED.authorization_endpoint, "
        "device_authorization_endpoint = EXCLUDED.device_authorization_endpoint, "
        "updated_at = pg_catalog.now()");
    scan_on_commit();  // thresholds may have changed: the engine re-plans after commit
    upsert.run(
        {text_arg(spec.name),
         text_arg(spec.token_endpoint),
         text_arg(spec.client_id),
         bytea_arg(sealed),
         text_arg(auth_method_name(spec.method)),
         text_arg(spec.issuer),
         text_arg(spec.revocation_endpoint),
         text_arg(spec.scope),
         spec.refresh_threshold,
         spec.refresh_token_ttl,
         spec.default_lifetime,
         spec.request_timeout,
         int4_arg(spec.max_concurrent),
         text_arg(spec.assertion_alg),
         text_arg(spec.assertion_kid),
         text_arg(spec.preset),
         text_arg(json_from_string_map(spec.refresh_params)),
         spec.refresh_token_idle_ttl,
         bool_arg(spec.keep_alive),
         datum_arg(TEXTARRAYOID,
                   text_array({spec.response_fields.begin(), spec.response_fields.end()}), false),
         text_arg(spec.authorization_endpoint),
         text_arg(spec.device_authorization_endpoint)},
        false);
}

// A whole number of seconds as an interval argument (days when it is whole days, as shown).
Arg seconds_interval_arg(std::int64_t s) {
    auto* iv = pg_call([] { return static_cast<Interval*>(palloc0(sizeof(Interval))); });
    if (s % (24 * 3600) == 0) {
        iv->day = static_cast<std::int32_t>(s / (24 * 3600));
    } else {
        iv->time = s * USECS_PER_SEC;
    }
    return datum_arg(INTERVALOID, PointerGetDatum(iv), false);
}

// The preset a registration names, filled from preset_params (argument 16), if any.
std::optional<ResolvedPreset> preset_of(FunctionCallInfo fcinfo, ProviderSpec& spec) {
    spec.preset = opt_text_arg(fcinfo, 15);
    const auto params = opt_jsonb_text_arg(fcinfo, 16);
    if (!spec.preset) {
        if (params) throw Error(ErrorCode::invalid_parameter, "preset_params needs a preset");
        return std::nullopt;
    }
    const Preset& preset = find_preset(*spec.preset);
    return resolve_preset(preset, params ? string_map_from_json(*params, "preset_params")
                                         : std::map<std::string, std::string>{});
}

Datum register_provider(FunctionCallInfo fcinfo) {
    require_current_schema();
    ProviderSpec spec;
    spec.name = nonempty_text_arg(fcinfo, 0, "provider name");
    const std::optional<ResolvedPreset> preset = preset_of(fcinfo, spec);
    const auto endpoint = opt_text_arg(fcinfo, 1);
    if (!endpoint && !preset) {
        throw Error(ErrorCode::null_value, "token_endpoint must not be NULL", {},
                    "Pass token_endpoint, or a preset (SELECT name FROM "
                    "upstream_token.provider_presets).");
    }
    spec.token_endpoint = endpoint.value_or(preset ? preset->token_endpoint : "");
    if (spec.token_endpoint.empty())
        throw Error(ErrorCode::invalid_parameter, "token_endpoint must not be empty");
    spec.client_id = nonempty_text_arg(fcinfo, 2, "client_id");
    spec.secret = opt_text_arg(fcinfo, 3);
    const auto method = opt_text_arg(fcinfo, 4);
    spec.method = method   ? parse_auth_method(*method)
                  : preset ? preset->auth_method
                           : AuthMethod::client_secret_basic;
    spec.issuer = opt_text_arg(fcinfo, 5);
    spec.revocation_endpoint = opt_text_arg(fcinfo, 6);
    spec.authorization_endpoint = opt_text_arg(fcinfo, 21);
    spec.device_authorization_endpoint = opt_text_arg(fcinfo, 22);
    read_provider_options(fcinfo, 7, spec);
    if (const Interval* idle = opt_interval_arg(fcinfo, 18, "refresh_token_idle_ttl");
        idle != nullptr && interval_micros(idle).count() == 0) {
        throw Error(ErrorCode::invalid_parameter, "refresh_token_idle_ttl must be positive");
    }
    spec.refresh_token_idle_ttl = interval_arg(fcinfo, 18);
    const auto refresh_params = opt_jsonb_text_arg(fcinfo, 17);
    const auto keep_alive = opt_bool_arg(fcinfo, 19);
    if (preset) {
        if (PG_ARGISNULL(5)) spec.issuer = preset->issuer;
        if (PG_ARGISNULL(6)) spec.revocation_endpoint = preset->revocation_endpoint;
        if (PG_ARGISNULL(21)) spec.authorization_endpoint = preset->authorization_endpoint;
        if (PG_ARGISNULL(22))
            spec.device_authorization_endpoint = preset->device_authorization_endpoint;
        if (spec.refresh_token_ttl.null && preset->refresh_token_ttl_s)
            spec.refresh_token_ttl = seconds_interval_arg(*preset->refresh_token_ttl_s);
        if (spec.default_lifetime.null && preset->default_lifetime_s)
            spec.default_lifetime = seconds_interval_arg(*preset->default_lifetime_s);
        if (spec.refresh_token_idle_ttl.null && preset->refresh_token_idle_s)
            spec.refresh_token_idle_ttl = seconds_interval_arg(*preset->refresh_token_idle_s);
        spec.refresh_params = preset->refresh_params;
        spec.response_fields = preset->response_fields;
        // A preset's keep_alive goes with its idle lifetime: an explicit one without it is off.
        spec.keep_alive = preset->keep_alive && !spec.refresh_token_idle_ttl.null;
    }
    if (refresh_params)
        spec.refresh_params = string_map_from_json(*refresh_params, "refresh_params");
    if (keep_alive) spec.keep_alive = *keep_alive;
    if (auto fields = opt_text_array_arg(fcinfo, 20, "response_fields"))
        spec.response_fields = *fields;
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
    spec.authorization_endpoint = meta.authorization_endpoint;
    spec.device_authorization_endpoint = meta.device_authorization_endpoint;
    if (method) {
        spec.method = parse_auth_method(*method);
        require_supported(meta.auth_methods, spec.method);
    } else {
        spec.method = choose_auth_method(meta.auth_methods, spec.secret.has_value());
    }
    save_provider(spec);
    PG_RETURN_VOID();
}

// One row per preset, for the provider_presets view.
Datum preset_list(FunctionCallInfo fcinfo) {
    RowSink sink(fcinfo);
    const auto opt_text = [](std::string_view v) {
        return v.empty() ? std::pair<Datum, bool>{Datum(0), true}
                         : std::pair<Datum, bool>{string_to_text_datum(v), false};
    };
    const auto opt_seconds = [](const std::optional<std::int64_t>& v) {
        return v ? std::pair<Datum, bool>{seconds_interval_arg(*v).value, false}
                 : std::pair<Datum, bool>{Datum(0), true};
    };
    for (const Preset& p : all_presets()) {
        std::vector<std::string_view> params;
        for (const PresetParam& x : p.params) params.push_back(x.name);
        const std::pair<Datum, bool> cols[] = {
            {string_to_text_datum(p.name), false},
            {string_to_text_datum(p.title), false},
            {text_array(params), false},
            {string_to_text_datum(p.token_endpoint), false},
            opt_text(p.revocation_endpoint),
            opt_text(p.issuer),
            {string_to_text_datum(auth_method_name(p.auth_method)), false},
            {string_to_text_datum(p.scope_separator), false},
            {text_array(p.refresh_params), false},
            {string_to_text_datum(p.rotation), false},
            opt_seconds(p.refresh_token_idle_s),
            opt_seconds(p.refresh_token_ttl_s),
            opt_seconds(p.default_lifetime_s),
            {BoolGetDatum(p.keep_alive), false},
            {text_array(p.quirks), false},
            {string_to_text_datum(p.documentation), false},
            {text_array(p.response_fields), false},
            opt_text(p.authorization_endpoint),
            opt_text(p.device_authorization_endpoint),
        };
        std::vector<Datum> values;
        std::vector<bool> nulls;
        for (const auto& [value, null] : cols) {
            values.push_back(value);
            nulls.push_back(null);
        }
        sink.put(std::move(values), nulls);
    }
    return Datum(0);
}

}  // namespace
}  // namespace upstream_token::pg

UT_SQL_ENTRY(ut_register_provider, upstream_token::pg::register_provider)
UT_SQL_ENTRY(ut_register_provider_from_issuer, upstream_token::pg::register_provider_from_issuer)
UT_SQL_ENTRY(ut_preset_list, upstream_token::pg::preset_list)
