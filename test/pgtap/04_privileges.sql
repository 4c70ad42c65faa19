-- Proves the privilege model: a role without upstream_token_client gets 42501 from every
-- function, table and view; a role with it can store, get and delete tokens, begin and
-- complete logins, ask for client and exchanged tokens, and read the views, but cannot read or
-- write the tables (the login table's sealed verifiers included), manage providers, or set the
-- superuser-only settings (key_file, allow_insecure_http).
\set QUIET 1
\set ON_ERROR_STOP 1
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS upstream_token;

SELECT current_setting('search_path') AS tap_search_path \gset
BEGIN;
SELECT plan(76);

-- Runs one statement as the given role; returns 'ok' or the SQLSTATE it failed with. The
-- role is reset either way, so pgTAP itself always runs as the superuser; and the SET clause
-- confines a `SET LOCAL search_path` inside stmt to this call (without it, a hostile path a
-- test plants would outlive the call and pgTAP's own "=" would resolve to it).
CREATE FUNCTION pg_temp.sqlstate_as(r text, stmt text) RETURNS text LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
DECLARE
    state text := 'ok';
BEGIN
    EXECUTE format('SET LOCAL ROLE %I', r);
    BEGIN
        EXECUTE stmt;
    EXCEPTION WHEN OTHERS THEN
        state := SQLSTATE;
    END;
    RESET ROLE;
    RETURN state;
END
$$;

CREATE ROLE ut_tap_nobody NOLOGIN;
CREATE ROLE ut_tap_app NOLOGIN IN ROLE upstream_token_client;
SELECT upstream_token.register_provider('priv', 'https://priv.example/token', 'p-client', 'p-secret');
SELECT upstream_token.register_provider('priv_login', 'https://priv.example/token', 'pl-client', 'pl-secret',
                                        authorization_endpoint => 'https://priv.example/authorize');
SELECT upstream_token.store_upstream_token('p-1', 'priv', 'p1-access', 'p1-refresh', 3600);

-- Without upstream_token_client.
SELECT is(pg_temp.sqlstate_as('ut_tap_nobody', stmt), '42501', 'no client role: ' || what)
  FROM (VALUES
    ('get_upstream_token', $$SELECT upstream_token.get_upstream_token('p-1', 'priv')$$),
    ('store_upstream_token', $$SELECT upstream_token.store_upstream_token('p-2', 'priv', 'a', 'r', 60)$$),
    ('delete_upstream_token', $$SELECT upstream_token.delete_upstream_token('p-1')$$),
    ('get_upstream_credentials', $$SELECT upstream_token.get_upstream_credentials('p-1')$$),
    ('refresh_upstream_token', $$SELECT upstream_token.refresh_upstream_token('p-1')$$),
    ('lock_token', $$SELECT upstream_token.lock_token('priv', 'p-1')$$),
    ('try_lock_token', $$SELECT upstream_token.try_lock_token('priv', 'p-1')$$),
    ('engine_stats', $$SELECT upstream_token.engine_stats()$$),
    ('register_provider', $$SELECT upstream_token.register_provider('x', 'https://x.example/t', 'c', 's')$$),
    ('drop_provider', $$SELECT upstream_token.drop_provider('priv', true)$$),
    ('begin_login', $$SELECT upstream_token.begin_login('p-3', 'priv_login', 'https://app.example/cb')$$),
    ('complete_login', $$SELECT * FROM upstream_token.complete_login('never-issued', 'x')$$),
    ('begin_device_login', $$SELECT * FROM upstream_token.begin_device_login('p-3', 'priv')$$),
    ('get_client_token', $$SELECT upstream_token.get_client_token('priv')$$),
    ('exchange_token', $$SELECT upstream_token.exchange_token('p-1', 'priv', 'https://api.example')$$),
    ('SELECT token_status', $$SELECT * FROM upstream_token.token_status$$),
    ('SELECT engine_status', $$SELECT * FROM upstream_token.engine_status$$),
    ('SELECT login_status', $$SELECT * FROM upstream_token.login_status$$),
    ('SELECT token', $$SELECT * FROM upstream_token.token$$),
    ('SELECT provider', $$SELECT * FROM upstream_token.provider$$),
    ('SELECT login', $$SELECT * FROM upstream_token.login$$)
  ) AS v(what, stmt);
-- Even given USAGE on the schema, the objects stay closed.
GRANT USAGE ON SCHEMA upstream_token TO ut_tap_nobody;
SELECT is(pg_temp.sqlstate_as('ut_tap_nobody', stmt), '42501', 'no client role, schema usage: ' || what)
  FROM (VALUES
    ('get_upstream_token', $$SELECT upstream_token.get_upstream_token('p-1', 'priv')$$),
    ('store_upstream_token', $$SELECT upstream_token.store_upstream_token('p-2', 'priv', 'a', 'r', 60)$$),
    ('delete_upstream_token', $$SELECT upstream_token.delete_upstream_token('p-1')$$),
    ('begin_login', $$SELECT upstream_token.begin_login('p-3', 'priv_login', 'https://app.example/cb')$$),
    ('complete_login', $$SELECT * FROM upstream_token.complete_login('never-issued', 'x')$$),
    ('SELECT token_status', $$SELECT * FROM upstream_token.token_status$$),
    ('SELECT engine_status', $$SELECT * FROM upstream_token.engine_status$$),
    ('SELECT login_status', $$SELECT * FROM upstream_token.login_status$$),
    ('SELECT token', $$SELECT * FROM upstream_token.token$$),
    ('SELECT login', $$SELECT * FROM upstream_token.login$$)
  ) AS v(what, stmt);
SELECT is((SELECT count(*)::int FROM upstream_token.token WHERE provider = 'priv'), 1,
          'the refused role changed nothing');
SELECT is((SELECT count(*)::int FROM upstream_token.login), 0, 'the refused role began no login');

-- With upstream_token_client: what an application backend needs.
SELECT is(pg_temp.sqlstate_as('ut_tap_app', stmt), 'ok', 'client role may: ' || what)
  FROM (VALUES
    ('store_upstream_token', $$SELECT upstream_token.store_upstream_token('p-2', 'priv', 'p2-access', 'p2-refresh', 3600)$$),
    ('get_upstream_token', $$DO 'BEGIN IF upstream_token.get_upstream_token(''p-2'', ''priv'') IS DISTINCT FROM ''p2-access'' THEN RAISE ''wrong''; END IF; END'$$),
    ('SELECT token_status', $$SELECT * FROM upstream_token.token_status$$),
    ('SELECT engine_status', $$SELECT * FROM upstream_token.engine_status$$),
    ('lock_token', $$SELECT upstream_token.lock_token('priv', 'p-1')$$),
    ('try_lock_token', $$DO 'BEGIN IF NOT upstream_token.try_lock_token(''priv'', ''p-1'') THEN RAISE ''not taken''; END IF; END'$$),
    ('delete_upstream_token', $$DO 'BEGIN IF upstream_token.delete_upstream_token(''p-2'') <> 1 THEN RAISE ''wrong''; END IF; END'$$)
  ) AS v(what, stmt);
SELECT is((SELECT count(*)::int FROM upstream_token.token WHERE session = 'p-2'), 0,
          'the client role stored and deleted p-2');
-- The login and grant functions: the client role gets past the privilege check to the
-- function's own answer (a login begun; or an error that is not 42501, reached without a
-- provider on the network).
SELECT is(pg_temp.sqlstate_as('ut_tap_app', stmt), want, 'client role may: ' || what)
  FROM (VALUES
    ('begin_login', $$DO 'BEGIN IF upstream_token.begin_login(''p-3'', ''priv_login'', ''https://app.example/cb'') NOT LIKE ''https://priv.example/authorize?%'' THEN RAISE ''wrong''; END IF; END'$$, 'ok'),
    ('SELECT login_status (its own login)', $$DO 'BEGIN IF (SELECT count(*) FROM upstream_token.login_status WHERE session = ''p-3'' AND status = ''pending'') <> 1 THEN RAISE ''not shown''; END IF; END'$$, 'ok'),
    ('complete_login (a state never issued: UT013)', $$SELECT * FROM upstream_token.complete_login('never-issued', 'x')$$, 'UT013'),
    ('begin_device_login (no device endpoint: 22023)', $$SELECT * FROM upstream_token.begin_device_login('p-3', 'priv')$$, '22023'),
    ('get_client_token (unknown provider: 42704)', $$SELECT upstream_token.get_client_token('no-such-provider')$$, '42704'),
    ('exchange_token (no subject token: UT001)', $$SELECT upstream_token.exchange_token('no-such-session', 'priv', 'https://api.example')$$, 'UT001')
  ) AS v(what, stmt, want);
SELECT is((SELECT concat_ws(' ', session, provider, flow, status) FROM upstream_token.login), 'p-3 priv_login authorization_code pending',
          'the client role''s begin_login stored its pending login');
-- ...and nothing more.
SELECT is(pg_temp.sqlstate_as('ut_tap_app', stmt), '42501', 'client role may not: ' || what)
  FROM (VALUES
    ('SELECT token', $$SELECT * FROM upstream_token.token$$),
    ('SELECT token.access_token', $$SELECT access_token FROM upstream_token.token$$),
    ('SELECT provider', $$SELECT * FROM upstream_token.provider$$),
    ('SELECT provider.client_secret', $$SELECT client_secret FROM upstream_token.provider$$),
    ('SELECT login', $$SELECT * FROM upstream_token.login$$),
    ('SELECT login.code_verifier', $$SELECT code_verifier FROM upstream_token.login$$),
    ('UPDATE login', $$UPDATE upstream_token.login SET status = 'completed'$$),
    ('DELETE login', $$DELETE FROM upstream_token.login$$),
    ('INSERT login', $$INSERT INTO upstream_token.login (id, flow, session, provider, expires_at) VALUES ('x', 'authorization_code', 's', 'priv_login', now() + interval '1 hour')$$),
    ('INSERT token (a derived key)', $$INSERT INTO upstream_token.token (session, provider, client_id, expires_at, grant_type) VALUES (E'\x01x', 'priv', 'c', now(), 'client_credentials')$$),
    ('UPDATE token', $$UPDATE upstream_token.token SET status = 'active'$$),
    ('DELETE token', $$DELETE FROM upstream_token.token$$),
    ('INSERT provider', $$INSERT INTO upstream_token.provider (name, token_endpoint, client_id, auth_method) VALUES ('x', 'https://x', 'c', 'none')$$),
    ('register_provider (new)', $$SELECT upstream_token.register_provider('x', 'https://x.example/t', 'c', 's')$$),
    ('register_provider (hijack)', $$SELECT upstream_token.register_provider('priv', 'https://evil.example/t', 'c', 's')$$),
    ('drop_provider', $$SELECT upstream_token.drop_provider('priv', true)$$),
    ('CREATE in the schema', $$CREATE TABLE upstream_token.mine (x int)$$),
    ('SET key_file', $$SET upstream_token.key_file = '/tmp/mine'$$),
    ('SET allow_insecure_http', $$SET upstream_token.allow_insecure_http = on$$)
  ) AS v(what, stmt);
SELECT is((SELECT token_endpoint FROM upstream_token.provider WHERE name = 'priv'), 'https://priv.example/token',
          'the provider is unchanged');
-- A user-settable knob stays user-settable.
SELECT is(pg_temp.sqlstate_as('ut_tap_app', $$SET upstream_token.wait_timeout = '2s'$$), 'ok',
          'client role may set upstream_token.wait_timeout');
-- SECURITY DEFINER functions do not let the caller's search_path in.
SELECT is(pg_temp.sqlstate_as('ut_tap_app',
          $$SET LOCAL search_path = pg_temp, public; DO 'BEGIN IF upstream_token.get_upstream_token(''p-1'', ''priv'') IS DISTINCT FROM ''p1-access'' THEN RAISE ''wrong''; END IF; END'$$),
          'ok', 'get works whatever the caller''s search_path');

-- A hostile "=" for text in a schema the caller puts first is never used by the functions:
-- with it, every lookup would match; the pinned search path resolves pg_catalog's.
CREATE SCHEMA ut_tap_evil;
CREATE FUNCTION ut_tap_evil.always(text, text) RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT true';
CREATE OPERATOR ut_tap_evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = ut_tap_evil.always);
GRANT USAGE ON SCHEMA ut_tap_evil TO ut_tap_app;
SELECT is(pg_temp.sqlstate_as('ut_tap_app',
          $$SET LOCAL search_path = ut_tap_evil, pg_catalog, public; SELECT upstream_token.get_upstream_token('no-such-session', 'priv')$$),
          'UT001', 'a hostile operator on the caller''s search_path does not turn a missing session into a match');
SELECT is(pg_temp.sqlstate_as('ut_tap_app',
          $$SET LOCAL search_path = ut_tap_evil, pg_catalog, public; DO 'BEGIN IF (upstream_token.get_upstream_token(''p-1'', ''priv'') OPERATOR(pg_catalog.=) ''p1-access'') IS NOT TRUE THEN RAISE ''wrong''; END IF; END'$$),
          'ok', 'and the right token still comes back (compared with pg_catalog''s "=")');
SELECT is(pg_temp.sqlstate_as('ut_tap_app',
          $$SET LOCAL search_path = ut_tap_evil, pg_catalog, public; SELECT * FROM upstream_token.complete_login('never-issued', 'x')$$),
          'UT013', 'a hostile operator does not turn a state never issued into the pending login of p-3');

-- Control: on that search path the hostile "=" is really in effect (the two tests above
-- would prove nothing otherwise)...
SELECT is(pg_temp.sqlstate_as('ut_tap_app',
          $$SET LOCAL search_path = ut_tap_evil, pg_catalog, public; DO 'BEGIN IF NOT (''a''::text = ''b''::text) THEN RAISE ''hostile = not in effect''; END IF; END'$$),
          'ok', 'control: on the hostile search path ''a'' = ''b'' is true');
-- ...and it did not leak out of the calls into this script (pgTAP resolves "=" here too).
SELECT is(current_setting('search_path'), :'tap_search_path', 'the planted search path stayed inside the calls');
SELECT ok(NOT ('a'::text = 'b'::text), 'this script''s "=" is pg_catalog''s');

SELECT * FROM finish();
ROLLBACK;
