-- Proves: a role without upstream_token_client can do nothing (42501 for every function and
-- for the tables and views); a role granted upstream_token_client can store, get and delete
-- tokens and read the views, but cannot read the tables (secrets, even encrypted) nor
-- manage providers; nothing in the schema is executable by PUBLIC.
\set VERBOSITY terse

\i sql/try.psql

-- Runs one statement as another role and reports like try(); the role is reset either way.
CREATE FUNCTION pg_temp.try_as(r text, stmt text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    result text;
BEGIN
    EXECUTE format('SET LOCAL ROLE %I', r);
    result := pg_temp.try(stmt);
    RESET ROLE;
    RETURN result;
END
$$;

SET client_min_messages = warning;
DROP ROLE IF EXISTS ut_regress_app;
DROP ROLE IF EXISTS ut_regress_other;
RESET client_min_messages;
CREATE ROLE ut_regress_app NOLOGIN IN ROLE upstream_token_client;
CREATE ROLE ut_regress_other NOLOGIN;

SELECT upstream_token.register_provider('priv', 'https://priv.example/token', 'p-client', 'p-secret');
SELECT upstream_token.store_upstream_token('p-1', 'priv', 'p1-access', 'p1-refresh', 3600);

-- 1. Without the role: everything is denied.
SELECT stmt, pg_temp.try_as('ut_regress_other', stmt) AS result FROM (VALUES
    ($$SELECT upstream_token.get_upstream_token('p-1', 'priv')$$),
    ($$SELECT upstream_token.store_upstream_token('p-2', 'priv', 'a', 'r', 3600)$$),
    ($$SELECT upstream_token.delete_upstream_token('p-1')$$),
    ($$SELECT * FROM upstream_token.token_status$$),
    ($$SELECT * FROM upstream_token.engine_status$$),
    ($$SELECT * FROM upstream_token.token$$),
    ($$SELECT * FROM upstream_token.provider$$),
    ($$SELECT upstream_token.register_provider('x', 'https://x.example/token', 'c', 's')$$),
    ($$SELECT upstream_token.drop_provider('priv', true)$$)
) AS v(stmt);
-- Even with USAGE on the schema, each object is still closed to a role without the grant.
GRANT USAGE ON SCHEMA upstream_token TO ut_regress_other;
SELECT stmt, pg_temp.try_as('ut_regress_other', stmt) AS result FROM (VALUES
    ($$SELECT upstream_token.get_upstream_token('p-1', 'priv')$$),
    ($$SELECT upstream_token.store_upstream_token('p-2', 'priv', 'a', 'r', 3600)$$),
    ($$SELECT upstream_token.delete_upstream_token('p-1')$$),
    ($$SELECT upstream_token.get_upstream_credentials('p-1')$$),
    ($$SELECT upstream_token.refresh_upstream_token('p-1')$$),
    ($$SELECT upstream_token.lock_token('priv', 'p-1')$$),
    ($$SELECT upstream_token.try_lock_token('priv', 'p-1')$$),
    ($$SELECT * FROM upstream_token.engine_stats()$$),
    ($$SELECT * FROM upstream_token.token_status$$),
    ($$SELECT * FROM upstream_token.engine_status$$),
    ($$SELECT * FROM upstream_token.token$$),
    ($$SELECT * FROM upstream_token.provider$$),
    ($$UPDATE upstream_token.token SET status = 'active'$$),
    ($$SELECT upstream_token.register_provider('x', 'https://x.example/token', 'c', 's')$$),
    ($$SELECT upstream_token.drop_provider('priv', true)$$)
) AS v(stmt);
REVOKE USAGE ON SCHEMA upstream_token FROM ut_regress_other;
SELECT count(*) AS tokens, max(generation) AS generation FROM upstream_token.token;

-- 2. With upstream_token_client: the token functions and the views work...
SELECT stmt, pg_temp.try_as('ut_regress_app', stmt) AS result FROM (VALUES
    ($$SELECT upstream_token.store_upstream_token('p-2', 'priv', 'p2-access', 'p2-refresh', 3600)$$),
    ($$DO 'BEGIN IF upstream_token.get_upstream_token(''p-2'', ''priv'') <> ''p2-access'' THEN RAISE ''wrong token''; END IF; END'$$),
    ($$DO 'BEGIN IF upstream_token.get_upstream_token(''p-1'', ''priv'') <> ''p1-access'' THEN RAISE ''wrong token''; END IF; END'$$),
    ($$SELECT count(*) FROM upstream_token.token_status$$),
    ($$SELECT count(*) FROM upstream_token.engine_status$$),
    ($$SELECT count(*) FROM upstream_token.provider_status$$),
    ($$SELECT upstream_token.lock_token('priv', 'p-1')$$),
    ($$DO 'BEGIN IF NOT upstream_token.try_lock_token(''priv'', ''p-1'') THEN RAISE ''not locked''; END IF; END'$$),
    ($$DO 'BEGIN IF upstream_token.delete_upstream_token(''p-2'') <> 1 THEN RAISE ''not deleted''; END IF; END'$$)
) AS v(stmt);
-- ...the tables and provider management do not.
SELECT stmt, pg_temp.try_as('ut_regress_app', stmt) AS result FROM (VALUES
    ($$SELECT * FROM upstream_token.token$$),
    ($$SELECT access_token FROM upstream_token.token$$),
    ($$SELECT * FROM upstream_token.provider$$),
    ($$SELECT client_secret FROM upstream_token.provider$$),
    ($$UPDATE upstream_token.token SET status = 'active'$$),
    ($$DELETE FROM upstream_token.token$$),
    ($$INSERT INTO upstream_token.provider (name, token_endpoint, client_id, auth_method) VALUES ('x', 'https://x', 'c', 'none')$$),
    ($$SELECT upstream_token.register_provider('x', 'https://x.example/token', 'c', 's')$$),
    ($$SELECT upstream_token.register_provider('priv', 'https://evil.example/token', 'c', 's')$$),
    ($$SELECT upstream_token.drop_provider('priv', true)$$),
    ($$CREATE TABLE upstream_token.mine (x int)$$)
) AS v(stmt);
-- What the client role stored is what the owner sees; the provider is unchanged.
SELECT session, generation FROM upstream_token.token_status ORDER BY session;
SELECT name, token_endpoint FROM upstream_token.provider;

-- 3. Nothing in the schema is executable by PUBLIC (a NULL ACL would mean it is).
SELECT count(*) AS public_functions
  FROM pg_proc p, aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
 WHERE p.pronamespace = 'upstream_token'::regnamespace AND a.grantee = 0
   AND a.privilege_type = 'EXECUTE';
-- Who besides the owner may execute the documented functions: the client role gets the token
-- functions, nobody gets provider management.
SELECT p.proname, coalesce(string_agg(a.grantee::regrole::text, ', ' ORDER BY a.grantee::regrole::text)
                           FILTER (WHERE a.grantee <> p.proowner), '-') AS executors
  FROM pg_proc p, aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
 WHERE p.pronamespace = 'upstream_token'::regnamespace AND a.privilege_type = 'EXECUTE'
   AND p.proname IN ('register_provider', 'drop_provider', 'store_upstream_token',
                     'get_upstream_token', 'delete_upstream_token', 'get_upstream_credentials',
                     'refresh_upstream_token', 'lock_token', 'try_lock_token', 'engine_stats',
                     'begin_login', 'complete_login', 'begin_device_login', 'get_client_token',
                     'exchange_token')
 GROUP BY p.proname ORDER BY p.proname;
-- No table in the schema is open to the client role; only views are.
SELECT count(*) AS client_table_privileges
  FROM pg_class c, aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a
 WHERE c.relnamespace = 'upstream_token'::regnamespace AND c.relkind IN ('r', 'p', 'S')
   AND a.grantee IN ('upstream_token_client'::regrole, 0);
-- What others may do with the documented tables and views: the client role SELECTs the
-- three views, nothing else (not the login table's sealed verifiers); PUBLIC nothing.
SELECT c.relname, a.grantee::regrole AS grantee, a.privilege_type
  FROM pg_class c, aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a
 WHERE c.relnamespace = 'upstream_token'::regnamespace
   AND c.relname IN ('token_status', 'engine_status', 'login_status', 'token', 'provider', 'login')
   AND a.grantee <> c.relowner
 ORDER BY 1, 2, 3;

DROP OWNED BY ut_regress_app, ut_regress_other;
DROP ROLE ut_regress_app;
DROP ROLE ut_regress_other;
SELECT upstream_token.drop_provider('priv', cascade => true);
