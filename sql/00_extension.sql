-- Proves: the extension creates, drops and re-creates cleanly; every object it owns lives in
-- schema upstream_token; the client role exists and survives a drop; the engine reports
-- ready once the extension exists in its database.
\set VERBOSITY terse
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS upstream_token CASCADE;
RESET client_min_messages;
CREATE EXTENSION upstream_token;

SELECT extname, extnamespace::regnamespace AS schema, extversion, extrelocatable
  FROM pg_extension WHERE extname = 'upstream_token';

-- The documented objects are all members of the extension (the surface may grow: anything
-- listed here that is missing is a regression).
SELECT want AS missing_member
  FROM unnest(ARRAY[
    'table upstream_token.provider',
    'table upstream_token.token',
    'table upstream_token.token_tombstone',
    'view upstream_token.token_status',
    'view upstream_token.engine_status',
    'function upstream_token.register_provider(text,text,text,text,text,text,text,text,interval,interval,interval,interval,integer,text,text,text,jsonb,jsonb,interval,boolean,text[],text,text)',
    'function upstream_token.preset_list()',
    'function upstream_token.keep_alive_at(text,text,bigint,timestamp with time zone,interval)',
    'view upstream_token.provider_presets',
    'function upstream_token.drop_provider(text,boolean,boolean)',
    'function upstream_token.store_upstream_token(text,text,text,text,integer,text,text,text,integer,jsonb)',
    'function upstream_token.get_upstream_token(text,text)',
    'function upstream_token.delete_upstream_token(text,text)',
    'function upstream_token.get_upstream_credentials(text)',
    'function upstream_token.refresh_upstream_token(text,text)',
    'function upstream_token.lock_token(text,text)',
    'function upstream_token.try_lock_token(text,text)',
    'function upstream_token.engine_stats()',
    'table upstream_token.login',
    'view upstream_token.login_status',
    'function upstream_token.begin_login(text,text,text,text,jsonb)',
    'function upstream_token.complete_login(text,text,text)',
    'function upstream_token.begin_device_login(text,text,text)',
    'function upstream_token.get_client_token(text,text,text)',
    'function upstream_token.exchange_token(text,text,text,text)']) AS want
 WHERE want NOT IN (
    SELECT pg_describe_object(d.classid, d.objid, d.objsubid)
      FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
     WHERE d.refclassid = 'pg_extension'::regclass AND e.extname = 'upstream_token'
       AND d.deptype = 'e');

-- ...and every member, whatever it is, lives in schema upstream_token.
SELECT count(*) AS members_outside_schema FROM (
    SELECT c.relnamespace AS nsp FROM pg_class c
      JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e'
      JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'upstream_token'
    UNION ALL
    SELECT p.pronamespace FROM pg_proc p
      JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
      JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'upstream_token'
) m WHERE nsp <> 'upstream_token'::regnamespace;

-- Indexes are not extension members themselves; they belong to the tables, in the schema.
SELECT count(*) AS indexes_outside_schema
  FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid JOIN pg_class x ON x.oid = i.indexrelid
 WHERE t.relnamespace = 'upstream_token'::regnamespace AND x.relnamespace <> t.relnamespace;
SELECT indexrelid::regclass AS index
  FROM pg_index WHERE indrelid IN ('upstream_token.token'::regclass, 'upstream_token.provider'::regclass)
   AND indisprimary
 ORDER BY indexrelid::regclass::text;

SELECT rolname, rolcanlogin, rolsuper, rolinherit
  FROM pg_roles WHERE rolname = 'upstream_token_client';

-- A second CREATE fails; IF NOT EXISTS does not.
CREATE EXTENSION upstream_token;
CREATE EXTENSION IF NOT EXISTS upstream_token;

-- Drop: every object goes, the cluster-wide role stays. (Whether the schema itself goes is
-- checked in test/pgtap/01_catalog.sql.)
DROP EXTENSION upstream_token;
SELECT count(*) AS extension_left FROM pg_extension WHERE extname = 'upstream_token';
SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'upstream_token')
     + (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = 'upstream_token') AS objects_left;
SELECT count(*) AS role_left FROM pg_roles WHERE rolname = 'upstream_token_client';

-- Re-create over the surviving role: the same objects come back.
CREATE EXTENSION upstream_token;
SELECT count(*) AS documented_objects
  FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
 WHERE d.refclassid = 'pg_extension'::regclass AND e.extname = 'upstream_token'
   AND d.deptype = 'e'
   AND (d.objid IN ('upstream_token.provider'::regclass, 'upstream_token.token'::regclass,
                    'upstream_token.token_status'::regclass, 'upstream_token.engine_status'::regclass)
        OR d.objid IN (SELECT oid FROM pg_proc WHERE pronamespace = 'upstream_token'::regnamespace
                          AND proname IN ('register_provider', 'drop_provider', 'store_upstream_token',
                                          'get_upstream_token', 'delete_upstream_token',
                                          'get_upstream_credentials', 'refresh_upstream_token',
                                          'lock_token', 'try_lock_token', 'engine_stats')));
SELECT count(*) AS providers FROM upstream_token.provider;
SELECT count(*) AS tokens FROM upstream_token.token;

-- engine_status has exactly one row while the library is preloaded.
SELECT count(*) AS engine_rows FROM upstream_token.engine_status;

-- The engine notices the extension on its own (it polls while idle): wait for ready with a
-- deadline, never a fixed sleep; the block fails if the deadline passes.
DO $$
DECLARE
    deadline timestamptz := clock_timestamp() + interval '60 seconds';
BEGIN
    LOOP
        EXIT WHEN (SELECT ready FROM upstream_token.engine_status);
        IF clock_timestamp() > deadline THEN
            RAISE EXCEPTION 'the engine did not become ready within 60 s';
        END IF;
        PERFORM pg_sleep(0.1);
    END LOOP;
END
$$;
SELECT ready, worker_pid <> 0 AS has_pid, worker_starts >= 1 AS started,
       queued = 0 AS queue_empty, in_flight = 0 AS nothing_in_flight
  FROM upstream_token.engine_status;
-- The engine is a visible backend of this database.
SELECT count(*) AS engine_backends
  FROM pg_stat_activity a, upstream_token.engine_status s
 WHERE a.pid = s.worker_pid AND a.datname = current_database();
