// SQL entry points of the per-token lock: lock_token and try_lock_token, for manual refresh
// paths that must exclude the engine (I1), and 0.1.0's refresh_lock_key, kept only as a
// symbol that says it is gone.
#include "pg/prelude.hpp"

#include "pg/args.hpp"
#include "pg/guard.hpp"
#include "pg/token_lock.hpp"

namespace upstream_token::pg {
namespace {

// upstream_token.lock_token(provider, session): waits for the token lock and holds it until
// the transaction ends (transaction level, so it also works behind a transaction pooler).
Datum lock_token_sql(FunctionCallInfo fcinfo) {
    const std::string provider = nonempty_text_arg(fcinfo, 0, "provider");
    const std::string session = nonempty_text_arg(fcinfo, 1, "session");
    (void)lock_token_for_transaction(provider, session, true);
    PG_RETURN_VOID();
}

// upstream_token.try_lock_token(provider, session): the same lock without waiting.
Datum try_lock_token_sql(FunctionCallInfo fcinfo) {
    const std::string provider = nonempty_text_arg(fcinfo, 0, "provider");
    const std::string session = nonempty_text_arg(fcinfo, 1, "session");
    PG_RETURN_BOOL(lock_token_for_transaction(provider, session, false));
}

// 0.1.0's refresh_lock_key: its public key no longer names the engine's lock, so a 0.1.0
// install still running on this library gets an error rather than a lock that excludes nothing.
Datum refresh_lock_key_removed(FunctionCallInfo fcinfo) {
    pg_call([] {
        ereport(ERROR,
                (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
                 errmsg("upstream_token.refresh_lock_key was removed in upstream_token 0.2.0"),
                 errdetail("Its key no longer names the lock the refresh engine holds."),
                 errhint("Run ALTER EXTENSION upstream_token UPDATE, then call "
                         "upstream_token.lock_token(provider, session) inside a transaction.")));
    });
    PG_RETURN_NULL();
}

}  // namespace
}  // namespace upstream_token::pg

UT_SQL_ENTRY(ut_lock_token, upstream_token::pg::lock_token_sql)
UT_SQL_ENTRY(ut_try_lock_token, upstream_token::pg::try_lock_token_sql)
UT_SQL_ENTRY(ut_refresh_lock_key, upstream_token::pg::refresh_lock_key_removed)
