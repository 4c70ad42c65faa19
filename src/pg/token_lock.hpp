// The per-token lock (I1). Every refresher of a (provider, session) holds it from before the
// token-endpoint call until the result is committed: the engine at session level, a manual
// refresher through upstream_token.lock_token at transaction level. Its tag is an advisory
// lock tag with locktag_field4 = kTokenLockClass; pg_advisory_lock and friends only make tags
// with field4 1 (bigint key) or 2 (two int keys), so no role can take this lock except through
// the extension's functions, which only granted roles may execute.
#pragma once

#include "pg/prelude.hpp"

extern "C" {
#include "storage/lock.h"
}

#include <cstdint>
#include <string_view>

namespace upstream_token::pg {

// "UT": shown as pg_locks.objsubid of the token locks (locktype advisory).
constexpr uint16 kTokenLockClass = 0x5554;

// The lock tag of the token with this key (core token_lock_key) in the current database:
// field2/field3 are the key's high and low 32 bits.
LOCKTAG token_lock_tag(std::int64_t key);

// Takes the token lock until the current transaction ends; waits for it (honouring cancel,
// lock_timeout and deadlock detection) when `wait`, else returns false if another holds it.
bool lock_token_for_transaction(std::string_view provider, std::string_view session, bool wait);

}  // namespace upstream_token::pg
