// Table access for providers and tokens (SPI; the caller holds an SpiConnection).
// Rows carry ciphertexts only; decryption happens in the caller with the row's AAD.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/http_multi.hpp"
#include "core/refresh_request.hpp"
#include "core/time.hpp"
#include "pg/prelude.hpp"

namespace upstream_token::pg {

struct ProviderRow {
    std::string name;
    std::string token_endpoint;
    std::string client_id;
    std::optional<std::string> client_secret_ct;
    AuthMethod auth_method = AuthMethod::client_secret_basic;
    std::optional<std::string> issuer;
    std::optional<std::string> revocation_endpoint;
    std::optional<std::string> scope;
    std::string assertion_alg;  // private_key_jwt
    std::string assertion_kid;
    std::optional<Micros> refresh_threshold;
    std::optional<Micros> refresh_token_ttl;
    Micros default_lifetime{};
    std::optional<Micros> request_timeout;
    std::map<std::string, std::string> refresh_params;  // sent on every refresh
    std::optional<Micros> keep_alive_idle;     // refresh_token_idle_ttl when keep_alive is on
    std::vector<std::string> response_fields;  // answer fields kept with each token
    std::optional<std::string> authorization_endpoint;
    std::optional<std::string> device_authorization_endpoint;
};

// The provider named `name`, or nullopt.
std::optional<ProviderRow> find_provider(std::string_view name);

// The provider as this backend last read it, at most a second ago (nullptr: no such
// provider). For the hot path and the engine, which read it on every call; configuration
// changes reach them within a second.
const ProviderRow* cached_provider(std::string_view name);

// Drops the cache (the engine does when a registration may have changed a provider).
void forget_cached_providers();

// How the engine authenticates as the provider's client (decrypts the secret or private key).
ClientCredentials client_credentials(const ProviderRow& p);

// An HTTP request to one of the provider's endpoints, with the provider's or the configured
// timeouts, the CA file and the plain-HTTP setting.
HttpRequestSpec provider_request(const ProviderRow& p, std::string url, HttpRequest request);

// What get_upstream_token needs to decide, in one indexed read.
struct TokenView {
    std::optional<std::string> access_ct;
    std::optional<std::string> id_ct;  // read only when asked for
    std::optional<Time> issued_at;
    Time expires_at;
    std::string status;
    bool has_refresh_token = false;
    std::optional<Micros> provider_threshold;
    std::int64_t generation = 0;
    TransactionId xmin = InvalidTransactionId;
};

// Reads (session, provider) with the transaction's snapshot, or with a new one when
// `latest` is set (to see what the engine just committed, even in REPEATABLE READ).
std::optional<TokenView> read_token_view(std::string_view session, std::string_view provider,
                                         bool latest, bool with_id_token = false);

// A login's tokens as they are stored (ciphertexts sealed for (provider, session)).
struct LoginRow {
    std::string session;
    std::string provider;
    std::optional<std::string> subject;
    std::string client_id;
    std::optional<std::string> claims_json;  // the login ID token's binding claims
    std::optional<std::string> access_ct, refresh_ct, id_ct;
    std::optional<std::string> scope;
    Time expires_at{};
    std::optional<Time> refresh_expires_at;
    std::optional<std::string> refresh_expiry_source;
    std::optional<Time> issued_at;  // when the engine obtained it; NULL when the app stored it
    std::optional<std::string> attributes;
};

// Asks the engine, once the transaction commits, to plan a stored login's first refresh when
// its window (or keep-alive) opens before the engine's next scan.
void plan_on_commit(const ProviderRow& provider, Time expires_at, Time now);

// Inserts a login's tokens or replaces the session's row (a new login: status active, a new
// generation, failures cleared); tokens exchanged for the session's previous login go.
void upsert_login(const LoginRow& row);

// The providers a session has tokens for, in name order.
std::vector<std::string> session_providers(std::string_view session);

// True when a provider of that name exists.
bool provider_exists(std::string_view name);

}  // namespace upstream_token::pg
