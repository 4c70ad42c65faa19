// SQL entry points for the grants the engine does beyond refresh: begin_login /
// complete_login (authorization code + PKCE), begin_device_login (RFC 8628),
// get_client_token (client credentials) and exchange_token (RFC 8693). The caller's backend
// prepares and reads; every exchange with the provider is the engine's.
#include "pg/prelude.hpp"

#include <nlohmann/json.hpp>

#include "core/crypto.hpp"
#include "core/error.hpp"
#include "core/grant_params.hpp"
#include "core/login.hpp"
#include "core/presets.hpp"
#include "pg/args.hpp"
#include "pg/engine_client.hpp"
#include "pg/guard.hpp"
#include "pg/gucs.hpp"
#include "pg/login_store.hpp"
#include "pg/obtain.hpp"
#include "pg/row_sink.hpp"
#include "pg/schema_version.hpp"
#include "pg/secrets.hpp"
#include "pg/spi.hpp"
#include "pg/store.hpp"

namespace upstream_token::pg {
namespace {

constexpr std::size_t kStateBytes = 32;     // 256 bits: unguessable, single use
constexpr std::size_t kVerifierBytes = 32;  // 43 characters, RFC 7636's minimum length
constexpr std::size_t kNonceBytes = 24;

// The named provider, or the not-found error.
ProviderRow provider_arg(const std::string& name) {
    auto p = find_provider(name);
    if (!p) throw Error(ErrorCode::provider_not_found, "provider \"" + name + "\" does not exist");
    return *p;
}

// A redirect URI as the provider will compare it: absolute, no fragment, no whitespace.
void check_redirect_uri(const std::string& uri) {
    const bool ok = uri.find(':') != std::string::npos && uri.find('#') == std::string::npos &&
                    uri.find_first_of(" \t\r\n") == std::string::npos;
    if (!ok) {
        throw Error(ErrorCode::invalid_parameter,
                    "redirect_uri must be an absolute URI without a fragment");
    }
}

Datum begin_login(FunctionCallInfo fcinfo) {
    require_current_schema();
    const std::string session = session_arg(fcinfo, 0);
    const std::string provider_name = nonempty_text_arg(fcinfo, 1, "provider");
    const std::string redirect_uri = nonempty_text_arg(fcinfo, 2, "redirect_uri");
    check_redirect_uri(redirect_uri);
    std::optional<std::string> scope = opt_text_arg(fcinfo, 3);
    const auto extra_json = opt_jsonb_text_arg(fcinfo, 4);
    std::string url;
    {
        SpiConnection spi;
        const ProviderRow provider = provider_arg(provider_name);
        if (!provider.authorization_endpoint) {
            throw Error(ErrorCode::invalid_parameter,
                        "provider \"" + provider_name + "\" has no authorization_endpoint", {},
                        "Set it with register_provider(..., authorization_endpoint => ...).");
        }
        if (!scope) scope = provider.scope;
        AuthorizationUrl a;
        a.endpoint = *provider.authorization_endpoint;
        a.client_id = provider.client_id;
        a.redirect_uri = redirect_uri;
        a.scope = scope;
        a.state = random_token(kStateBytes);
        const std::string verifier = random_token(kVerifierBytes);
        a.code_challenge = pkce_challenge(verifier);
        if (scope_has_openid(scope)) a.nonce = random_token(kNonceBytes);
        if (extra_json) a.extra = string_map_from_json(*extra_json, "extra_params");
        url = authorization_url(a);  // refuses reserved extra parameters before anything is kept
        const std::string key = sha256_hex(a.state);
        const std::string aad = login_aad_session(key);
        std::optional<std::string> nonce_ct;
        if (a.nonce) nonce_ct = seal(provider_name, aad, "nonce", *a.nonce);
        static Statement insert(
            "INSERT INTO upstream_token.login (id, flow, session, provider, redirect_uri, scope, "
            "code_verifier, nonce, expires_at) VALUES ($1, 'authorization_code', $2, $3, $4, $5, "
            "$6, $7, $8)");
        insert.run(
            {text_arg(key), text_arg(session), text_arg(provider_name), text_arg(redirect_uri),
             text_arg(scope), bytea_arg(seal(provider_name, aad, "code_verifier", verifier)),
             bytea_arg(nonce_ct), timestamptz_arg(now_time() + login_timeout())},
            false);
    }
    return string_to_text_datum(url);
}

Datum complete_login(FunctionCallInfo fcinfo) {
    require_current_schema();
    const std::string state = nonempty_text_arg(fcinfo, 0, "state");
    const std::string code = nonempty_text_arg(fcinfo, 1, "code");
    const auto iss = opt_text_arg(fcinfo, 2);
    const std::string key = sha256_hex(state);
    struct Done {
        std::string session, provider;
        std::optional<std::string> subject;
        std::optional<Time> expires_at;
    } done;
    {
        SpiConnection spi;
        static Statement find("SELECT provider FROM upstream_token.login WHERE id = $1");
        if (find.run({text_arg(key)}, true, 1, pg_call([] { return GetLatestSnapshot(); })) == 0) {
            throw Error(ErrorCode::login_state_invalid, "the login state is unknown",
                        "It was never issued by begin_login, or its login was purged.",
                        "begin_login's transaction must commit before the login completes.");
        }
        const std::string provider = ResultRow().text(1).value_or("");
        nlohmann::json params = {
            {"code", base64_pack(seal(provider, login_aad_session(key), "code", code))}};
        if (iss) params["iss"] = *iss;
        const RefreshResult r = request_login(provider, key, params.dump());
        if (!r.ok) throw Error(r.code, r.message, r.detail);
        static Statement read(
            "SELECT l.session, l.provider, l.subject, t.expires_at FROM upstream_token.login l "
            "LEFT JOIN upstream_token.token t ON t.session = l.session AND t.provider = "
            "l.provider WHERE l.id = $1 AND l.status = 'completed'");
        if (read.run({text_arg(key)}, true, 1, pg_call([] { return GetLatestSnapshot(); })) == 0) {
            throw Error(ErrorCode::login_state_invalid, "the login did not complete");
        }
        ResultRow row;
        done = Done{row.text(1).value_or(""), row.text(2).value_or(""), row.text(3),
                    row.timestamptz(4)};
    }
    RowSink sink(fcinfo);
    const auto subject = opt_text(done.subject);
    sink.put(
        {string_to_text_datum(done.session), string_to_text_datum(done.provider), subject.first,
         done.expires_at ? TimestampTzGetDatum(to_timestamptz(*done.expires_at)) : Datum(0)},
        {false, false, subject.second, !done.expires_at});
    return Datum(0);
}

Datum begin_device_login(FunctionCallInfo fcinfo) {
    require_current_schema();
    const std::string session = session_arg(fcinfo, 0);
    const std::string provider_name = nonempty_text_arg(fcinfo, 1, "provider");
    const auto scope = opt_text_arg(fcinfo, 2);
    std::optional<std::string> user_code, uri, uri_complete;
    std::optional<Time> expires_at;
    {
        SpiConnection spi;
        const ProviderRow provider = provider_arg(provider_name);
        if (!provider.device_authorization_endpoint) {
            throw Error(ErrorCode::invalid_parameter,
                        "provider \"" + provider_name + "\" has no device_authorization_endpoint",
                        {},
                        "Set it with register_provider(..., device_authorization_endpoint => "
                        "...).");
        }
        nlohmann::json params = nlohmann::json::object();
        if (scope) params["scope"] = *scope;
        const RefreshResult r = request_device_login(provider_name, session, params.dump());
        if (!r.ok) throw Error(r.code, r.message, r.detail);
        static Statement read(
            "SELECT user_code, verification_uri, verification_uri_complete, expires_at "
            "FROM upstream_token.login WHERE id = $1");
        if (read.run({text_arg(r.message)}, true, 1, pg_call([] { return GetLatestSnapshot(); })) ==
            0) {
            throw Error(ErrorCode::login_failed, "the device login vanished before it was read");
        }
        ResultRow row;
        user_code = row.text(1);
        uri = row.text(2);
        uri_complete = row.text(3);
        expires_at = row.timestamptz(4);
    }
    RowSink sink(fcinfo);
    const auto a = opt_text(user_code), b = opt_text(uri), c = opt_text(uri_complete);
    sink.put({a.first, b.first, c.first,
              expires_at ? TimestampTzGetDatum(to_timestamptz(*expires_at)) : Datum(0)},
             {a.second, b.second, c.second, !expires_at});
    return Datum(0);
}

// A grant's token through the read path: cached, renewed by the engine.
Datum grant_token(const std::string& provider, const GrantParams& g) {
    const std::string key = grant_session_key(g);
    std::string access;
    {
        SpiConnection spi;
        const ProviderRow* p = cached_provider(provider);
        if (g.grant == Grant::client_credentials && p != nullptr &&
            p->auth_method == AuthMethod::none) {
            throw Error(ErrorCode::invalid_parameter,
                        "provider \"" + provider + "\" is a public client (auth_method none)",
                        "The client credentials grant is for confidential clients (RFC 6749 4.4).");
        }
        access = obtain(key, provider, false, &g).access;
    }
    return string_to_text_datum(access);
}

Datum get_client_token(FunctionCallInfo fcinfo) {
    const std::string provider = nonempty_text_arg(fcinfo, 0, "provider");
    GrantParams g;
    g.grant = Grant::client_credentials;
    g.scope = opt_text_arg(fcinfo, 1);
    g.audience = opt_text_arg(fcinfo, 2);
    return grant_token(provider, g);
}

Datum exchange_token(FunctionCallInfo fcinfo) {
    const std::string session = session_arg(fcinfo, 0);
    const std::string provider = nonempty_text_arg(fcinfo, 1, "provider");
    GrantParams g;
    g.grant = Grant::token_exchange;
    g.audience = opt_text_arg(fcinfo, 2);
    g.scope = opt_text_arg(fcinfo, 3);
    g.subject_session = session;
    {
        SpiConnection spi;
        (void)obtain(session, provider, false);  // the subject token, renewed first if due
    }
    return grant_token(provider, g);
}

}  // namespace
}  // namespace upstream_token::pg

UT_SQL_ENTRY(ut_begin_login, upstream_token::pg::begin_login)
UT_SQL_ENTRY(ut_complete_login, upstream_token::pg::complete_login)
UT_SQL_ENTRY(ut_begin_device_login, upstream_token::pg::begin_device_login)
UT_SQL_ENTRY(ut_get_client_token, upstream_token::pg::get_client_token)
UT_SQL_ENTRY(ut_exchange_token, upstream_token::pg::exchange_token)
