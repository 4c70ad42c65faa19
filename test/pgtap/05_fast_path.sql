-- Proves: 1,000 calls of get_upstream_token on a fresh token write nothing and lock nothing:
-- the transaction's own insert/update/delete counters for the token table do not move, the
-- row keeps its ctid and xmax (no update, no FOR UPDATE/SHARE row lock), no tuple lock and no
-- row-level lock mode is taken by the calls, and the engine is never asked. (The store before
-- them happens in the same transaction; sql/06_fast_path.sql checks the committed case too.)
\set QUIET 1
\set ON_ERROR_STOP 1
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS upstream_token;

BEGIN;
SELECT plan(10);

-- This transaction's tuple counters for the token table.
CREATE FUNCTION pg_temp.xact_counts() RETURNS text LANGUAGE sql AS $$
    SELECT format('ins=%s upd=%s hot=%s del=%s', n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del)
      FROM pg_stat_xact_user_tables WHERE relid = 'upstream_token.token'::regclass
$$;

-- The lock modes this backend holds on the token table and any tuple locks, as one text.
CREATE FUNCTION pg_temp.my_locks() RETURNS text LANGUAGE sql AS $$
    SELECT coalesce(string_agg(locktype || ':' || mode, ',' ORDER BY locktype, mode), '')
      FROM pg_locks
     WHERE pid = pg_backend_pid()
       AND (relation = 'upstream_token.token'::regclass OR locktype = 'tuple')
$$;

SELECT upstream_token.register_provider('fast', 'https://fast.example/token', 'f-client', 'f-secret');
SELECT upstream_token.store_upstream_token('f-1', 'fast', 'f1-access', 'f1-refresh', 3600);

CREATE TEMP TABLE before_calls AS
SELECT pg_temp.xact_counts() AS counts, pg_temp.my_locks() AS locks,
       (SELECT ctid FROM upstream_token.token WHERE session = 'f-1') AS row_ctid,
       (SELECT requests FROM upstream_token.engine_status) AS engine_requests;

SELECT is((SELECT count(*)::int FROM generate_series(1, 1000)
            WHERE upstream_token.get_upstream_token('f-1', 'fast') = 'f1-access'),
          1000, '1,000 calls all return the stored token');

SELECT is(pg_temp.xact_counts(), (SELECT counts FROM before_calls),
          'the calls inserted, updated and deleted no tuple (pg_stat_xact_user_tables)');
SELECT is(pg_temp.my_locks(), (SELECT locks FROM before_calls),
          'the calls took no new lock on the token table and no tuple lock');
SELECT is_empty($$SELECT 1 FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'tuple'$$,
                'no tuple lock is held');
SELECT is_empty($$SELECT 1 FROM pg_locks WHERE pid = pg_backend_pid()
                    AND relation = 'upstream_token.token'::regclass AND mode = 'RowShareLock'$$,
                'no RowShareLock (SELECT ... FOR UPDATE/SHARE) on the token table');
SELECT is((SELECT ctid FROM upstream_token.token WHERE session = 'f-1'), (SELECT row_ctid FROM before_calls),
          'the row was not rewritten (same ctid)');
SELECT is((SELECT xmax::text FROM upstream_token.token WHERE session = 'f-1'), '0',
          'the row carries no row lock (xmax is 0)');
SELECT is((SELECT generation FROM upstream_token.token_status WHERE session = 'f-1'), 1::bigint,
          'generation unchanged');
SELECT is((SELECT requests FROM upstream_token.engine_status), (SELECT engine_requests FROM before_calls),
          'the engine was not asked');

-- The same as a role that only has upstream_token_client.
CREATE ROLE ut_tap_fast NOLOGIN IN ROLE upstream_token_client;
GRANT SELECT ON before_calls TO ut_tap_fast;
SET LOCAL ROLE ut_tap_fast;
CREATE TEMP TABLE fast_result AS
SELECT count(*) FILTER (WHERE upstream_token.get_upstream_token('f-1', 'fast') = 'f1-access') AS correct
  FROM generate_series(1, 1000);
RESET ROLE;
SELECT ok((SELECT correct = 1000 FROM fast_result)
          AND pg_temp.xact_counts() = (SELECT counts FROM before_calls)
          AND (SELECT xmax::text FROM upstream_token.token WHERE session = 'f-1') = '0',
          'as the client role: 1,000 correct calls, no tuple written, no row lock');

SELECT * FROM finish();
ROLLBACK;
