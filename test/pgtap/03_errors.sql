-- Proves the SQLSTATE of every get_upstream_token error reachable without a provider, and
-- that a failing get returns nothing and changes nothing: UT001, 42704, UT002, UT004, UT005,
-- UT008, UT009, UT012, UT015, plus the served-anyway cases next to each (still-valid tokens).
-- Everything runs in one transaction, so any token that needs a refresh is the caller's own
-- uncommitted change (UT012) unless its status or contents decide first.
\set QUIET 1
\set ON_ERROR_STOP 1
SET client_min_messages = error;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS upstream_token;

BEGIN;
SELECT plan(62);

-- A digest of every stored token row, so a failing get can be shown to have written nothing.
CREATE FUNCTION pg_temp.fingerprint() RETURNS text LANGUAGE sql AS $$
    SELECT md5(coalesce((SELECT string_agg(t::text, '|' ORDER BY t.session, t.provider) FROM upstream_token.token t), ''))
$$;

-- Asserts that get fails with the given SQLSTATE and writes nothing.
CREATE FUNCTION pg_temp.get_fails(s text, p text, code text, description text) RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    before text := pg_temp.fingerprint();
BEGIN
    RETURN NEXT throws_ok(format('SELECT upstream_token.get_upstream_token(%L, %L)', s, p),
                          code::char(5), NULL, description);
    RETURN NEXT is(pg_temp.fingerprint(), before, description || ': nothing written');
END
$$;

-- Sets a token's status directly, as only the engine would.
CREATE FUNCTION pg_temp.set_status(s text, st text) RETURNS void LANGUAGE sql AS $$
    UPDATE upstream_token.token SET status = st WHERE session = s
$$;

SELECT upstream_token.register_provider('err', 'https://127.0.0.1:1/token', 'e-client', 'e-secret');
SELECT upstream_token.register_provider('err_1h', 'https://127.0.0.1:1/token', 'e-client', 'e-secret',
                                        refresh_threshold => '1 hour');

-- UT001 and 42704.
SELECT * FROM pg_temp.get_fails('nobody', 'err', 'UT001', 'unknown session: UT001');
SELECT * FROM pg_temp.get_fails('nobody', 'no-such-provider', '42704', 'unknown provider: 42704');
SELECT throws_ok($$SELECT upstream_token.store_upstream_token('e', 'no-such-provider', 'a', 'r', 60)$$,
                 '42704', NULL, 'store for an unknown provider: 42704');
SELECT throws_ok($$SELECT upstream_token.drop_provider('no-such-provider')$$,
                 '42704', NULL, 'drop_provider of an unknown provider: 42704');
-- A session known for another provider only is still unknown for this one.
SELECT upstream_token.store_upstream_token('e-other', 'err_1h', 'eo-access', 'eo-refresh', 7200);
SELECT * FROM pg_temp.get_fails('e-other', 'err', 'UT001', 'session stored for another provider only: UT001');

-- UT015: a login of the session with this provider is under way and no token is stored: a code
-- being redeemed, or a device login waiting for the user. A code login merely begun may be
-- abandoned in the browser: UT001. begin_login needs no network, only the pending row it writes.
SELECT upstream_token.register_provider('err_login', 'https://127.0.0.1:1/token', 'e-client', 'e-secret',
                                        authorization_endpoint => 'https://127.0.0.1:1/authorize');
SELECT ok(upstream_token.begin_login('e-login', 'err_login', 'https://app.example/cb') LIKE 'https://127.0.0.1:1/authorize?%',
          'begin_login returns the provider''s authorization URL');
SELECT * FROM pg_temp.get_fails('e-login', 'err_login', 'UT001', 'a code login only begun and no token: UT001');
SELECT * FROM pg_temp.get_fails('e-login', 'err', 'UT001', 'a login under way with another provider only: UT001');
SELECT * FROM pg_temp.get_fails('e-login-other', 'err_login', 'UT001', 'another session of that provider: UT001');
SAVEPOINT login;
UPDATE upstream_token.login SET status = 'redeeming' WHERE session = 'e-login';
SELECT * FROM pg_temp.get_fails('e-login', 'err_login', 'UT015', 'a login whose code is being redeemed: UT015');
UPDATE upstream_token.login SET status = 'pending', flow = 'device_code' WHERE session = 'e-login';
SELECT * FROM pg_temp.get_fails('e-login', 'err_login', 'UT015', 'a device login waiting for the user: UT015');
UPDATE upstream_token.login SET status = 'failed', error = 'access_denied', finished_at = now() WHERE session = 'e-login';
SELECT * FROM pg_temp.get_fails('e-login', 'err_login', 'UT001', 'a failed login and no token: UT001');
ROLLBACK TO SAVEPOINT login;
UPDATE upstream_token.login SET expires_at = now() - interval '1 second' WHERE session = 'e-login';
SELECT * FROM pg_temp.get_fails('e-login', 'err_login', 'UT001', 'an expired login and no token: UT001');
ROLLBACK TO SAVEPOINT login;
-- A stored token is served while a new login of the session is under way.
SELECT upstream_token.store_upstream_token('e-login', 'err_login', 'lg-access', 'lg-refresh', 3600);
SELECT is(upstream_token.get_upstream_token('e-login', 'err_login'), 'lg-access',
          'a stored token is served while a login of the session is under way');
SELECT is(upstream_token.delete_upstream_token('e-login'), 1, 'and deleted again');

-- UT002: expired, no refresh token.
SELECT upstream_token.store_upstream_token('e-norefresh', 'err', 'nr-access', NULL, 0);
SELECT * FROM pg_temp.get_fails('e-norefresh', 'err', 'UT002', 'expired without a refresh token: UT002');
-- I7: the expiry instant itself counts as expired.
SELECT upstream_token.store_upstream_token('e-instant', 'err', 'in-access', NULL, 3600);
UPDATE upstream_token.token SET expires_at = now() WHERE session = 'e-instant';
SELECT * FROM pg_temp.get_fails('e-instant', 'err', 'UT002', 'expires_at = now() is expired: UT002');

-- UT004: reauth_required.
SELECT upstream_token.store_upstream_token('e-reauth', 'err', 'ra-access', 'ra-refresh', 0);
SELECT pg_temp.set_status('e-reauth', 'reauth_required');
SELECT * FROM pg_temp.get_fails('e-reauth', 'err', 'UT004', 'reauth_required and expired: UT004');
SELECT upstream_token.store_upstream_token('e-reauth-due', 'err_1h', 'rad-access', 'rad-refresh', 600);
SELECT pg_temp.set_status('e-reauth-due', 'reauth_required');
SELECT is(upstream_token.get_upstream_token('e-reauth-due', 'err_1h'), 'rad-access',
          'reauth_required but still valid: the token is served (with a WARNING)');

-- UT004 too when the refresh token reached the end of its life (status expired).
SELECT upstream_token.store_upstream_token('e-rt-expired', 'err', 'rte-access', 'rte-refresh', 0);
SELECT pg_temp.set_status('e-rt-expired', 'expired');
SELECT * FROM pg_temp.get_fails('e-rt-expired', 'err', 'UT004', 'status expired and access token expired: UT004');

-- UT005: invalid_binding, valid or not.
SELECT upstream_token.store_upstream_token('e-binding', 'err', 'ib-access', 'ib-refresh', 3600);
SELECT pg_temp.set_status('e-binding', 'invalid_binding');
SELECT * FROM pg_temp.get_fails('e-binding', 'err', 'UT005', 'invalid_binding while valid: UT005');
UPDATE upstream_token.token SET expires_at = now() - interval '1 hour' WHERE session = 'e-binding';
SELECT * FROM pg_temp.get_fails('e-binding', 'err', 'UT005', 'invalid_binding and expired: UT005');

-- UT012: the caller's own uncommitted change needs a refresh.
SELECT upstream_token.store_upstream_token('e-open', 'err', 'op-access', 'op-refresh', 0);
SELECT * FROM pg_temp.get_fails('e-open', 'err', 'UT012', 'expired token stored in this open transaction: UT012');
SELECT upstream_token.store_upstream_token('e-open-due', 'err_1h', 'opd-access', 'opd-refresh', 600);
SELECT is(upstream_token.get_upstream_token('e-open-due', 'err_1h'), 'opd-access',
          'due but valid token stored in this open transaction: served (with a WARNING)');
SELECT is(upstream_token.get_upstream_token('e-other', 'err_1h'), 'eo-access',
          'a fresh token stored in this open transaction is served');

-- UT008: no key.
SELECT upstream_token.store_upstream_token('e-key', 'err', 'k-access', 'k-refresh', 3600);
SET LOCAL upstream_token.key_file = '';
SELECT * FROM pg_temp.get_fails('e-key', 'err', 'UT008', 'get without a key: UT008');
SELECT throws_ok($$SELECT upstream_token.store_upstream_token('e-key', 'err', 'a', 'r', 60)$$,
                 'UT008', NULL, 'store without a key: UT008');
SELECT throws_ok($$SELECT upstream_token.register_provider('err', 'https://127.0.0.1:1/token', 'e-client', 'new')$$,
                 'UT008', NULL, 'register_provider with a secret but without a key: UT008');
SELECT throws_ok($$SELECT upstream_token.begin_login('e-key-login', 'err_login', 'https://app.example/cb')$$,
                 'UT008', NULL, 'begin_login without a key (its verifier cannot be sealed): UT008');
SELECT is((SELECT count(*)::int FROM upstream_token.login WHERE session = 'e-key-login'), 0,
          'begin_login without a key stored no login');
RESET upstream_token.key_file;
SELECT is(upstream_token.get_upstream_token('e-key', 'err'), 'k-access', 'with the key back, the token reads again');

-- UT009: ciphertexts moved between rows or columns.
SELECT upstream_token.store_upstream_token('e-c1', 'err', 'c1-access', 'c1-refresh', 3600);
SELECT upstream_token.store_upstream_token('e-c2', 'err', 'c2-access', 'c2-refresh', 3600);
SAVEPOINT tamper;
UPDATE upstream_token.token SET access_token = (SELECT access_token FROM upstream_token.token WHERE session = 'e-c2')
 WHERE session = 'e-c1';
SELECT * FROM pg_temp.get_fails('e-c1', 'err', 'UT009', 'access ciphertext of another row: UT009');
ROLLBACK TO SAVEPOINT tamper;
UPDATE upstream_token.token SET access_token = refresh_token WHERE session = 'e-c1';
SELECT * FROM pg_temp.get_fails('e-c1', 'err', 'UT009', 'refresh ciphertext in the access column: UT009');
ROLLBACK TO SAVEPOINT tamper;
UPDATE upstream_token.token SET provider = 'err_1h' WHERE session = 'e-c1';
SELECT * FROM pg_temp.get_fails('e-c1', 'err_1h', 'UT009', 'row moved to another provider: UT009');
ROLLBACK TO SAVEPOINT tamper;
UPDATE upstream_token.token SET access_token = '\x00'::bytea WHERE session = 'e-c1';
SELECT * FROM pg_temp.get_fails('e-c1', 'err', 'UT009', 'a one-byte ciphertext: UT009');
ROLLBACK TO SAVEPOINT tamper;
SELECT is(upstream_token.get_upstream_token('e-c1', 'err'), 'c1-access', 'the untampered row reads');

-- Status 'revoked' does not exist (revoke_upstream_token deletes rows): the table refuses it,
-- so no revoked row can ever be handed out.
CREATE FUNCTION pg_temp.revoked_row_served() RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    PERFORM upstream_token.store_upstream_token('e-revoked', 'err', 'rv-access', 'rv-refresh', 3600);
    BEGIN
        PERFORM pg_temp.set_status('e-revoked', 'revoked');
    EXCEPTION WHEN check_violation THEN
        RETURN false;
    END;
    BEGIN
        PERFORM upstream_token.get_upstream_token('e-revoked', 'err');
        RETURN true;
    EXCEPTION WHEN OTHERS THEN
        RETURN false;
    END;
END
$$;
SELECT is(pg_temp.revoked_row_served(), false, 'a token with status revoked is not served');

-- 2BP01 from drop_provider, then cascade.
SELECT throws_ok($$SELECT upstream_token.drop_provider('err')$$, '2BP01', NULL, 'drop_provider with tokens: 2BP01');
SELECT lives_ok($$SELECT upstream_token.drop_provider('err', cascade => true)$$, 'drop_provider cascade => true');
SELECT is((SELECT count(*)::int FROM upstream_token.token WHERE provider = 'err'), 0, 'cascade removed the tokens');

SELECT * FROM finish();
ROLLBACK;
