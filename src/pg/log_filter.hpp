// Keeps the secrets our functions take out of the server log when PostgreSQL itself raises
// an error about a statement that calls one of them.
#pragma once

namespace upstream_token::pg {

// Installs the emit_log_hook (chained to any previous one). Called from _PG_init.
void install_log_filter();

}  // namespace upstream_token::pg
