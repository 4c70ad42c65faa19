// The extension's configuration parameters (upstream_token.*). The variables are the
// process-global storage PostgreSQL's GUC machinery requires; read them only here.
#pragma once

#include "core/time.hpp"

namespace upstream_token::pg {

// Registers every upstream_token.* parameter; called once from _PG_init.
void define_gucs();

// Path of the key file, or empty when unset.
const char* key_file_path();
// Path of the key being rotated out, or empty.
const char* previous_key_file_path();
// Applies a configuration reload this process was signalled for but has not processed yet (a
// statement that began before the reload); true when there was one.
bool apply_pending_reload();

// Whether apply_pending_reload applied one since the last call (the engine rescans then, as
// for a reload it applies itself between passes).
bool take_applied_reload();
Micros refresh_threshold();
Micros refresh_token_ttl();
Micros wait_timeout();
Micros request_timeout();
bool allow_insecure_http();
const char* engine_database();
const char* ca_file();
int max_requests();
int max_concurrent_refreshes();
Micros purge_after();
// Lifetime of a login begun with begin_login.
Micros login_timeout();
Micros shutdown_timeout();
// upstream_token.standby_wait_timeout in milliseconds (0: no limit).
int standby_wait_timeout_ms();

}  // namespace upstream_token::pg
