-- Proves, on every major (the mechanisms differ: src/pg/compat.hpp):
-- 1. The C functions resolve names in pg_catalog whatever the caller set up: a search_path with
--    the caller's schema (holding its own count(*)) before pg_catalog, and temporary tables
--    named like the types the extension's queries cast to (int8, text, ...), change nothing.
--    The caller's search_path and name resolution are back after each call, also after a
--    failed call caught by an exception block.
-- 2. An infinite interval is refused with 22023 by every function taking an interval (17+
--    has 'infinity'::interval; 15 and 16 refuse the literal itself with 22007), and nothing
--    is stored.
\set QUIET 1
\set ON_ERROR_STOP 1
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS upstream_token;

BEGIN;
SELECT plan(29);

-- Runs a statement and returns its result as text, or its SQLSTATE and message (only
-- schema-qualified types: it runs where the caller's temporary tables shadow the catalog's).
CREATE FUNCTION pg_temp.try(stmt pg_catalog.text) RETURNS pg_catalog.text LANGUAGE plpgsql AS $$
DECLARE
    r pg_catalog.text;
BEGIN
    EXECUTE stmt INTO r;
    RETURN coalesce(r, '<null>');
EXCEPTION WHEN OTHERS THEN
    RETURN 'ERROR ' || SQLSTATE || ' ' || SQLERRM;
END
$$;
CREATE TEMP TABLE seen (n pg_catalog.int4, value pg_catalog.text);

-- The caller's environment: its own count(*) (always 1000) first in the path, and temporary
-- tables whose row types shadow catalog types for unqualified names. (pgTAP itself does not
-- work in it: what happens is recorded in `seen` and checked afterwards.)
CREATE SCHEMA sp_caller;
CREATE FUNCTION sp_caller.count_state(bigint) RETURNS bigint LANGUAGE sql IMMUTABLE AS 'SELECT 1000::bigint';
CREATE AGGREGATE sp_caller.count(*) (sfunc = sp_caller.count_state, stype = bigint, initcond = '1000');
CREATE TEMP TABLE int8 (x int);
CREATE TEMP TABLE int4 (x int);
CREATE TEMP TABLE text (x int);
CREATE TEMP TABLE bytea (x int);
CREATE TEMP TABLE float8 (x int);
CREATE TEMP TABLE "interval" (x int);
CREATE TEMP TABLE timestamptz (x int);
SET LOCAL search_path = sp_caller, pg_catalog, public;

INSERT INTO seen VALUES
    (1, pg_temp.try($$SELECT count(*) FROM generate_series(1, 3)$$)),
    (2, pg_temp.try($$SELECT pg_typeof(NULL::int8)::oid = 'pg_catalog.int8'::regtype::oid$$));
INSERT INTO seen VALUES (3, pg_temp.try($$SELECT upstream_token.register_provider('sp', 'https://sp.example/token',
    'sp-client', 'sp-secret', refresh_threshold => '90 seconds', request_timeout => '5 seconds')$$));
INSERT INTO seen VALUES (4, pg_temp.try($$SELECT upstream_token.store_upstream_token('sp-1', 'sp', 'sp-access', 'sp-refresh', 3600)$$));
INSERT INTO seen VALUES (5, pg_temp.try($$SELECT upstream_token.get_upstream_token('sp-1', 'sp')$$));
INSERT INTO seen VALUES (6, pg_temp.try($$SELECT provider || ':' || access_token FROM upstream_token.get_upstream_credentials('sp-1')$$));
INSERT INTO seen VALUES (7, pg_temp.try($$SELECT upstream_token.reencrypt_batch()$$));
INSERT INTO seen VALUES (8, pg_temp.try($$SELECT upstream_token.planned_refresh_at('sp', 'sp-1', 1, NULL,
    '2030-01-01 00:00:00+00', '90 seconds') <= '2030-01-01 00:00:00+00'$$));
INSERT INTO seen VALUES
    (9, current_setting('search_path')),
    (10, pg_temp.try($$SELECT count(*) FROM generate_series(1, 3)$$));
-- A failed call, caught by an exception block (a subtransaction abort), then the same checks.
INSERT INTO seen VALUES (11, pg_temp.try($$SELECT upstream_token.get_upstream_token('sp-no-such-session', 'sp')$$));
INSERT INTO seen VALUES
    (12, current_setting('search_path')),
    (13, pg_temp.try($$SELECT count(*) FROM generate_series(1, 3)$$)),
    (14, pg_temp.try($$SELECT upstream_token.get_upstream_token('sp-1', 'sp')$$));
-- The login functions' own queries (a pending login written, a state looked up, login rows
-- re-sealed) in the same environment.
INSERT INTO seen VALUES (15, pg_temp.try($$SELECT upstream_token.register_provider('sp_login', 'https://sp.example/token',
    'sp-client', 'sp-secret', authorization_endpoint => 'https://sp.example/authorize')$$));
INSERT INTO seen VALUES (16, pg_temp.try($$SELECT upstream_token.begin_login('sp-2', 'sp_login', 'https://app.example/cb', 'openid')
    LIKE 'https://sp.example/authorize?%'$$));
INSERT INTO seen VALUES (17, pg_temp.try($$SELECT session FROM upstream_token.complete_login('sp-never-issued', 'x')$$));
INSERT INTO seen VALUES (18, pg_temp.try($$SELECT upstream_token.reencrypt_batch()$$));
-- Its code being redeemed (as complete_login's engine marks it): the login is under way.
UPDATE upstream_token.login SET status = 'redeeming' WHERE session OPERATOR(pg_catalog.=) 'sp-2';
INSERT INTO seen VALUES (19, pg_temp.try($$SELECT upstream_token.get_upstream_token('sp-2', 'sp_login')$$));

RESET search_path;
DROP TABLE pg_temp.int8, pg_temp.int4, pg_temp.text, pg_temp.bytea, pg_temp.float8, pg_temp."interval",
           pg_temp.timestamptz;
CREATE FUNCTION pg_temp.seen(k int) RETURNS text LANGUAGE sql AS 'SELECT value FROM seen WHERE n = k';

SELECT is(pg_temp.seen(1), '1000', 'the caller''s count(*) answers there (the fixtures work)');
SELECT is(pg_temp.seen(2), 'false', 'int8 names the temporary table''s row type there');
SELECT is(pg_temp.seen(3), '', 'register_provider works in that environment');
SELECT is(pg_temp.seen(4), '', 'store_upstream_token works in that environment');
SELECT is(pg_temp.seen(5), 'sp-access', 'get_upstream_token serves the stored token');
SELECT is(pg_temp.seen(6), 'sp:sp-access', 'get_upstream_credentials serves it too');
SELECT is(pg_temp.seen(7), '0', 'reencrypt_batch counts with pg_catalog''s count(*)');
SELECT is(pg_temp.seen(8), 'true', 'planned_refresh_at works in that environment');
SELECT is(pg_temp.seen(9), 'sp_caller, pg_catalog, public', 'the caller''s search_path is back after the calls');
SELECT is(pg_temp.seen(10), '1000', 'and the caller resolves names as before');
SELECT matches(pg_temp.seen(11), '^ERROR UT001 ', 'a call for an unknown session fails with UT001');
SELECT is(pg_temp.seen(12), 'sp_caller, pg_catalog, public', 'after the failed call the caller''s search_path is back');
SELECT is(pg_temp.seen(13), '1000', 'and so is its name resolution');
SELECT is(pg_temp.seen(14), 'sp-access', 'and the next call still resolves in pg_catalog');
SELECT is(pg_temp.seen(15), '', 'register_provider with an authorization_endpoint works in that environment');
SELECT is(pg_temp.seen(16), 'true', 'begin_login works there and returns the authorization URL');
SELECT matches(pg_temp.seen(17), '^ERROR UT013 ', 'complete_login of a state never issued fails with UT013 there');
SELECT is(pg_temp.seen(18), '0', 'reencrypt_batch finds the pending login sealed under the current key');
SELECT matches(pg_temp.seen(19), '^ERROR UT015 ', 'get_upstream_token sees the pending login there (UT015)');
SELECT is((SELECT pg_catalog.concat_ws(' ', session, provider, flow, status, nonce IS NOT NULL,
                                       expires_at BETWEEN now() + interval '599 s' AND now() + interval '601 s')
             FROM upstream_token.login WHERE provider = 'sp_login'),
          'sp-2 sp_login authorization_code redeeming t t',
          'the pending login was stored as it should be (a nonce for openid, login_timeout 600 s)');

-- Infinite intervals: 22023 from the extension on 17+, the server's own 22007 before.
CREATE FUNCTION pg_temp.refuses_infinity(stmt text, arg text, description text) RETURNS SETOF text
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('server_version_num')::int >= 170000 THEN
        RETURN NEXT throws_ok(stmt, '22023', arg || ' must be a finite interval', description);
    ELSE
        RETURN NEXT throws_ok(stmt, '22007', NULL, description || ' (no infinite interval before 17)');
    END IF;
END
$$;
SELECT * FROM pg_temp.refuses_infinity(
    $$SELECT upstream_token.register_provider('sp-inf', 'https://sp.example/token', 'c', 's', refresh_threshold => 'infinity')$$,
    'refresh_threshold', 'register_provider: refresh_threshold => infinity');
SELECT * FROM pg_temp.refuses_infinity(
    $$SELECT upstream_token.register_provider('sp-inf', 'https://sp.example/token', 'c', 's', refresh_token_ttl => 'infinity')$$,
    'refresh_token_ttl', 'register_provider: refresh_token_ttl => infinity');
SELECT * FROM pg_temp.refuses_infinity(
    $$SELECT upstream_token.register_provider('sp-inf', 'https://sp.example/token', 'c', 's', default_lifetime => 'infinity')$$,
    'default_lifetime', 'register_provider: default_lifetime => infinity');
SELECT * FROM pg_temp.refuses_infinity(
    $$SELECT upstream_token.register_provider('sp-inf', 'https://sp.example/token', 'c', 's', request_timeout => '-infinity')$$,
    'request_timeout', 'register_provider: request_timeout => -infinity');
SELECT * FROM pg_temp.refuses_infinity(
    $$SELECT upstream_token.register_provider_from_issuer('sp-inf', 'https://sp.example', 'c', 's', refresh_threshold => 'infinity')$$,
    'refresh_threshold', 'register_provider_from_issuer: refresh_threshold => infinity');
SELECT * FROM pg_temp.refuses_infinity(
    $$SELECT upstream_token.planned_refresh_at('sp', 'sp-1', 1, NULL, now(), 'infinity')$$,
    'threshold', 'planned_refresh_at: threshold => infinity');
SELECT is((SELECT pg_catalog.count(*) FROM upstream_token.provider WHERE name = 'sp-inf'), 0::bigint,
          'no provider was stored by the refused calls');

-- Finite but too long to count in microseconds (any major): 22023, not an overflow later.
SELECT throws_ok($$SELECT upstream_token.register_provider('sp-inf', 'https://sp.example/token', 'c', 's',
                      refresh_token_ttl => '300000 years')$$,
                 '22023', 'refresh_token_ttl is out of range', 'register_provider: 300,000 years');
SELECT lives_ok($$SELECT upstream_token.register_provider('sp-long', 'https://sp.example/token', 'c', 's',
                     refresh_token_ttl => '200000 years')$$, 'register_provider: 200,000 years is accepted');

SELECT * FROM finish();
ROLLBACK;
