#include "pg/prelude.hpp"
#include "pg/gucs.hpp"

#include "pg/guard.hpp"
#include "postmaster/interrupt.h"

namespace upstream_token::pg {

namespace {
// GUC storage: PostgreSQL writes these directly.
char* guc_key_file = nullptr;
char* guc_previous_key_file = nullptr;
int guc_refresh_threshold_s = 300;
int guc_refresh_token_ttl_s = 30 * 24 * 3600;
int guc_wait_timeout_ms = 10000;
int guc_request_timeout_ms = 10000;
bool guc_allow_insecure_http = false;
char* guc_database = nullptr;
char* guc_ca_file = nullptr;
int guc_max_requests = 1024;
int guc_max_concurrent = 32;
int guc_purge_after_s = 7 * 24 * 3600;
int guc_shutdown_timeout_ms = 30000;
int guc_login_timeout_s = 600;
// Set when a reload was applied inside a statement or pass (apply_pending_reload).
bool reload_applied = false;
int guc_standby_wait_timeout_ms = 5000;

// Settings that only exist when the library is preloaded (the engine's).
void define_engine_gucs() {
    DefineCustomStringVariable(
        "upstream_token.database", "Database whose tokens the refresh engine serves.", nullptr,
        &guc_database, "postgres", PGC_POSTMASTER, 0, nullptr, nullptr, nullptr);
    DefineCustomIntVariable("upstream_token.max_requests",
                            "Slots in the shared-memory table of pending refresh requests.",
                            nullptr, &guc_max_requests, 1024, 16, 65536, PGC_POSTMASTER, 0, nullptr,
                            nullptr, nullptr);
}
}  // namespace

void define_gucs() {
    DefineCustomIntVariable("upstream_token.login_timeout",
                            "How long a login begun with begin_login may take to complete.",
                            "The state, PKCE verifier and nonce are purged after it.",
                            &guc_login_timeout_s, 600, 10, 24 * 3600, PGC_SIGHUP, GUC_UNIT_S,
                            nullptr, nullptr, nullptr);
    DefineCustomStringVariable(
        "upstream_token.key_file",
        "File holding the 256-bit secret encryption key (64 hex characters).",
        "Must be readable by the server only (mode 0600).", &guc_key_file, "", PGC_SUSET,
        GUC_SUPERUSER_ONLY, nullptr, nullptr, nullptr);
    DefineCustomStringVariable("upstream_token.previous_key_file",
                               "Key file of the key being rotated out: read, never written with.",
                               "Set during upstream_token.rotate_key(); unset once it finished.",
                               &guc_previous_key_file, "", PGC_SUSET, GUC_SUPERUSER_ONLY, nullptr,
                               nullptr, nullptr);
    DefineCustomIntVariable(
        "upstream_token.refresh_threshold", "Refresh a token when it expires within this time.",
        "A provider's refresh_threshold overrides it.", &guc_refresh_threshold_s, 300, 0,
        365 * 24 * 3600, PGC_SIGHUP, GUC_UNIT_S, nullptr, nullptr, nullptr);
    DefineCustomIntVariable("upstream_token.refresh_token_ttl",
                            "Lifetime assumed for a refresh token the provider gave none for.",
                            "A provider's refresh_token_ttl overrides it.",
                            &guc_refresh_token_ttl_s, 30 * 24 * 3600, 60, INT_MAX, PGC_SIGHUP,
                            GUC_UNIT_S, nullptr, nullptr, nullptr);
    DefineCustomIntVariable("upstream_token.wait_timeout",
                            "How long a caller waits for the engine to refresh a token.", nullptr,
                            &guc_wait_timeout_ms, 10000, 100, 3600 * 1000, PGC_USERSET, GUC_UNIT_MS,
                            nullptr, nullptr, nullptr);
    DefineCustomIntVariable(
        "upstream_token.request_timeout", "Total time allowed for one request to a provider.",
        "A provider's request_timeout overrides it.", &guc_request_timeout_ms, 10000, 100,
        600 * 1000, PGC_SIGHUP, GUC_UNIT_MS, nullptr, nullptr, nullptr);
    DefineCustomBoolVariable(
        "upstream_token.allow_insecure_http", "Allow plain-HTTP provider endpoints (testing only).",
        nullptr, &guc_allow_insecure_http, false, PGC_SUSET, 0, nullptr, nullptr, nullptr);
    DefineCustomStringVariable("upstream_token.ca_file",
                               "CA bundle used to verify providers' certificates.",
                               "Empty means the system's default bundle.", &guc_ca_file, "",
                               PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
    DefineCustomIntVariable("upstream_token.max_concurrent_refreshes",
                            "Refreshes the engine runs at once, over all providers.",
                            "A provider's max_concurrent limits it further.", &guc_max_concurrent,
                            32, 1, 10000, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
    DefineCustomIntVariable("upstream_token.purge_after",
                            "How long a token is kept after its refresh token expired.", nullptr,
                            &guc_purge_after_s, 7 * 24 * 3600, 0, INT_MAX, PGC_SIGHUP, GUC_UNIT_S,
                            nullptr, nullptr, nullptr);
    DefineCustomIntVariable(
        "upstream_token.shutdown_timeout",
        "How long a stopping engine waits to finish and save the exchanges in flight.",
        "Keep it below pg_ctl's wait (60 s by default) and above request_timeout.",
        &guc_shutdown_timeout_ms, 30000, 0, 600 * 1000, PGC_SIGHUP, GUC_UNIT_MS, nullptr, nullptr,
        nullptr);
    DefineCustomIntVariable(
        "upstream_token.standby_wait_timeout",
        "How long the engine's commit waits for a synchronous standby's confirmation.",
        "After it, the commit (durable locally) goes on without the standby's; 0 waits as long "
        "as PostgreSQL does.",
        &guc_standby_wait_timeout_ms, 5000, 0, INT_MAX, PGC_SIGHUP, GUC_UNIT_MS, nullptr, nullptr,
        nullptr);
    // Server-start settings can only be defined while preloading (PostgreSQL refuses them
    // later), and without preloading there is no engine for them to configure.
    if (process_shared_preload_libraries_in_progress) define_engine_gucs();
    MarkGUCPrefixReserved("upstream_token");
}

const char* key_file_path() {
    return guc_key_file != nullptr ? guc_key_file : "";
}
const char* previous_key_file_path() {
    return guc_previous_key_file != nullptr ? guc_previous_key_file : "";
}
// PostgreSQL applies a reload only between statements (backends) or passes (the engine).
bool apply_pending_reload() {
    if (!ConfigReloadPending) return false;
    ConfigReloadPending = false;
    pg_call([] { ProcessConfigFile(PGC_SIGHUP); });
    reload_applied = true;
    return true;
}

bool take_applied_reload() {
    const bool applied = reload_applied;
    reload_applied = false;
    return applied;
}
Micros refresh_threshold() {
    return seconds(guc_refresh_threshold_s);
}
Micros refresh_token_ttl() {
    return seconds(guc_refresh_token_ttl_s);
}
Micros wait_timeout() {
    return Micros{static_cast<std::int64_t>(guc_wait_timeout_ms) * 1000};
}
Micros request_timeout() {
    return Micros{static_cast<std::int64_t>(guc_request_timeout_ms) * 1000};
}
bool allow_insecure_http() {
    return guc_allow_insecure_http;
}
const char* engine_database() {
    return guc_database != nullptr ? guc_database : "postgres";
}
const char* ca_file() {
    return guc_ca_file != nullptr ? guc_ca_file : "";
}
int max_requests() {
    return guc_max_requests;
}
int max_concurrent_refreshes() {
    return guc_max_concurrent;
}
int standby_wait_timeout_ms() {
    return guc_standby_wait_timeout_ms;
}
Micros login_timeout() {
    return seconds(guc_login_timeout_s);
}

Micros purge_after() {
    return seconds(guc_purge_after_s);
}
Micros shutdown_timeout() {
    return Micros{static_cast<std::int64_t>(guc_shutdown_timeout_ms) * 1000};
}

}  // namespace upstream_token::pg
