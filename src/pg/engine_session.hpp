// The engine's session: the settings it runs under whatever the cluster, database or role
// says, and the identity its transactions run as. No object or setting a non-superuser can
// create (an operator, function or type in `public`, ALTER DATABASE/ROLE ... SET) may change
// what the engine executes.
#pragma once

#include "pg/prelude.hpp"

namespace upstream_token::pg {

// Pins the engine's session settings (search path, durability, timeouts, isolation) at a
// priority no ALTER DATABASE/ROLE SET can override. Called once, right after connecting.
void configure_engine_session();

// The owner of the upstream_token extension in this database; InvalidOid when it does not
// exist. Needs a transaction.
Oid extension_owner();

}  // namespace upstream_token::pg
