-- Proves: 1,000 calls of get_upstream_token on a fresh token write nothing and take no row
-- locks: no transaction id is assigned, the table's insert/update counters do not move, no
-- row-level or tuple lock is held, and the engine is never asked.
\set VERBOSITY terse

SELECT upstream_token.register_provider('fast', 'https://fast.example/token', 'f-client', 'f-secret');
SELECT upstream_token.store_upstream_token('f-1', 'fast', 'f1-access', 'f1-refresh', 3600);

-- Make sure the store's own statistics are flushed before the baseline is taken.
SELECT pg_stat_force_next_flush();
SELECT pg_sleep(0);
SELECT n_tup_ins AS ins, n_tup_upd AS upd, n_tup_hot_upd AS hot_upd, n_tup_del AS del
  FROM pg_stat_user_tables WHERE relid = 'upstream_token.token'::regclass \gset before_
SELECT requests AS engine_requests FROM upstream_token.engine_status \gset before_

BEGIN;
-- 1,000 calls, every one returning the stored token.
SELECT count(*) FILTER (WHERE upstream_token.get_upstream_token('f-1', 'fast') = 'f1-access') AS correct
  FROM generate_series(1, 1000);
-- Nothing was written: no xid, no inserted/updated/deleted tuple in this transaction.
SELECT txid_current_if_assigned() IS NULL AS no_xid_assigned;
SELECT n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del
  FROM pg_stat_xact_user_tables WHERE relid = 'upstream_token.token'::regclass;
-- The token table is held in AccessShareLock only (a plain read); see below for the rest.
SELECT l.locktype, l.mode
  FROM pg_locks l
 WHERE l.pid = pg_backend_pid() AND l.relation = 'upstream_token.token'::regclass
 ORDER BY l.mode;
-- No row-level lock mode, no tuple lock, no transaction id lock (which any row lock or
-- write would need) on anything.
SELECT count(*) AS row_level_locks
  FROM pg_locks l
 WHERE l.pid = pg_backend_pid()
   AND (l.mode IN ('RowShareLock', 'RowExclusiveLock') OR l.locktype IN ('tuple', 'transactionid'));
COMMIT;

-- The committed statistics agree: nothing was inserted, updated or deleted.
SELECT pg_stat_force_next_flush();
SELECT pg_sleep(0);
SELECT n_tup_ins - :before_ins AS inserted, n_tup_upd - :before_upd AS updated,
       n_tup_hot_upd - :before_hot_upd AS hot_updated, n_tup_del - :before_del AS deleted
  FROM pg_stat_user_tables WHERE relid = 'upstream_token.token'::regclass;
-- The engine was not asked, and the row is untouched.
SELECT requests - :before_engine_requests AS engine_requests FROM upstream_token.engine_status;
SELECT generation, failure_count, updated_at = created_at AS untouched
  FROM upstream_token.token_status WHERE session = 'f-1';

-- The same holds for a role that only has upstream_token_client.
SET client_min_messages = warning;
DROP ROLE IF EXISTS ut_regress_fast;
RESET client_min_messages;
CREATE ROLE ut_regress_fast NOLOGIN IN ROLE upstream_token_client;
BEGIN;
SET LOCAL ROLE ut_regress_fast;
SELECT count(*) FILTER (WHERE upstream_token.get_upstream_token('f-1', 'fast') = 'f1-access') AS correct
  FROM generate_series(1, 1000);
SELECT txid_current_if_assigned() IS NULL AS no_xid_assigned;
RESET ROLE;
SELECT count(*) AS row_level_locks
  FROM pg_locks l
 WHERE l.pid = pg_backend_pid()
   AND (l.mode IN ('RowShareLock', 'RowExclusiveLock') OR l.locktype IN ('tuple', 'transactionid'));
COMMIT;
DROP ROLE ut_regress_fast;

SELECT upstream_token.drop_provider('fast', cascade => true);
