-- Proves I5 at the SQL surface: secrets are stored only as ciphertexts that do not contain
-- the plaintext (access, refresh and ID tokens, client secrets, a pending login's PKCE
-- verifier and nonce; its state only as a digest), the views show none of them, and error
-- messages (message, detail, hint) never echo a secret or a URL's credentials.
\set QUIET 1
\set ON_ERROR_STOP 1
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS upstream_token;

BEGIN;
SELECT plan(29);

-- base64url without padding, to build ID tokens in SQL.
CREATE FUNCTION pg_temp.b64url(t text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT rtrim(translate(encode(convert_to(t, 'UTF8'), 'base64'), E'+/\n', '-_'), '=')
$$;

-- Message, detail and hint of the error a statement raises, to search them for secrets;
-- NULL when it does not fail, which makes unalike() fail too.
CREATE FUNCTION pg_temp.error_text(stmt text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    m text; d text; h text;
BEGIN
    EXECUTE stmt;
    RETURN NULL;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS m = MESSAGE_TEXT, d = PG_EXCEPTION_DETAIL, h = PG_EXCEPTION_HINT;
    RETURN concat_ws(' | ', m, d, h);
END
$$;

-- True when none of the byte strings contains the plaintext.
CREATE FUNCTION pg_temp.hidden(plain text, VARIADIC cts bytea[]) RETURNS boolean LANGUAGE sql AS $$
    SELECT bool_and(ct IS NOT NULL AND position(convert_to(plain, 'UTF8') IN ct) = 0)
      FROM unnest(cts) AS ct
$$;

SELECT upstream_token.register_provider('sec', 'https://sec.example/token', 'sec-client', 'CLIENT-SECRET-0123456789');
SELECT upstream_token.store_upstream_token('sec-1', 'sec', 'ACCESS-TOKEN-0123456789', 'REFRESH-TOKEN-0123456789', 3600,
    id_token => pg_temp.b64url('{"alg":"none"}') || '.' ||
                pg_temp.b64url('{"iss":"https://sec.example","sub":"SUBJECT-42","aud":"sec-client","nonce":"NONCE-0123456789"}') || '.');

-- Ciphertexts.
SELECT ok(pg_temp.hidden('ACCESS-TOKEN-0123456789', access_token, refresh_token, id_token),
          'the access token appears in no ciphertext') FROM upstream_token.token WHERE session = 'sec-1';
SELECT ok(pg_temp.hidden('REFRESH-TOKEN-0123456789', access_token, refresh_token, id_token),
          'the refresh token appears in no ciphertext') FROM upstream_token.token WHERE session = 'sec-1';
SELECT ok(pg_temp.hidden('NONCE-0123456789', id_token) AND pg_temp.hidden(pg_temp.b64url('{"alg":"none"}'), id_token),
          'the ID token (raw or base64url) is not in its ciphertext') FROM upstream_token.token WHERE session = 'sec-1';
SELECT ok(pg_temp.hidden('CLIENT-SECRET-0123456789', client_secret),
          'the client secret is not in its ciphertext') FROM upstream_token.provider WHERE name = 'sec';
SELECT ok(NOT (t::text ~ '(ACCESS|REFRESH)-TOKEN|NONCE-0123'), 'no plaintext token anywhere in the token row')
  FROM upstream_token.token t WHERE session = 'sec-1';
SELECT ok(NOT (p::text ~ 'CLIENT-SECRET'), 'no plaintext secret anywhere in the provider row')
  FROM upstream_token.provider p WHERE name = 'sec';
SELECT ok(octet_length(access_token) >= octet_length('ACCESS-TOKEN-0123456789') + 16,
          'the access ciphertext carries more than the plaintext (nonce and tag)')
  FROM upstream_token.token WHERE session = 'sec-1';
-- The nonce is fresh: the same plaintext stored twice gives different ciphertexts.
SELECT upstream_token.store_upstream_token('sec-2', 'sec', 'ACCESS-TOKEN-0123456789', 'REFRESH-TOKEN-0123456789', 3600);
SELECT is((SELECT count(DISTINCT access_token)::int FROM upstream_token.token WHERE session IN ('sec-1', 'sec-2')), 2,
          'equal plaintexts give different ciphertexts');
-- The login ID token's claims are kept for the binding check, but nothing beyond them.
SELECT is((SELECT id_claims FROM upstream_token.token WHERE session = 'sec-1'),
          '{"iss":"https://sec.example","sub":"SUBJECT-42","aud":["sec-client"]}'::jsonb,
          'id_claims holds only the binding claims (no nonce)');

-- Views.
SELECT ok(NOT EXISTS (SELECT 1 FROM upstream_token.token_status s
                       WHERE row_to_json(s)::text ~ '(ACCESS|REFRESH)-TOKEN|CLIENT-SECRET|NONCE-0123'),
          'token_status shows no secret');
SELECT ok(NOT EXISTS (SELECT 1 FROM upstream_token.engine_status s
                       WHERE row_to_json(s)::text ~ '(ACCESS|REFRESH)-TOKEN|CLIENT-SECRET|sec-1'),
          'engine_status shows no secret and no session');

-- A pending login (begin_login needs no network): the state and nonce are in the URL the
-- browser gets, and nowhere in the database but as a digest (state) or a ciphertext (nonce).
SELECT upstream_token.register_provider('sec_login', 'https://sec.example/token', 'sec-client', 'CLIENT-SECRET-0123456789',
                                        authorization_endpoint => 'https://sec.example/authorize');
SELECT sum(ciphertexts) AS sealed_before FROM upstream_token.key_usage \gset
SELECT upstream_token.begin_login('sec-login', 'sec_login', 'https://app.example/cb', 'openid') AS login_url \gset
SELECT substring(:'login_url' FROM '[?&]state=([^&]+)') AS login_state,
       substring(:'login_url' FROM '[?&]nonce=([^&]+)') AS login_nonce \gset
SELECT ok(length(:'login_state') >= 43 AND length(:'login_nonce') >= 32,
          'the authorization URL carries a state and a nonce (at least 256 and 192 bits)');
SELECT is((SELECT id FROM upstream_token.login WHERE session = 'sec-login'),
          encode(sha256(convert_to(:'login_state', 'UTF8')), 'hex'),
          'the login is kept under the SHA-256 of its state, not the state');
SELECT ok(NOT (l::text ~ (:'login_state' || '|' || :'login_nonce')), 'neither state nor nonce appears in the login row')
  FROM upstream_token.login l WHERE session = 'sec-login';
SELECT ok(pg_temp.hidden(:'login_nonce', nonce, code_verifier), 'the nonce is sealed, and not in the verifier''s ciphertext')
  FROM upstream_token.login WHERE session = 'sec-login';
SELECT ok(octet_length(code_verifier) >= 43 + 16, 'the PKCE verifier is sealed (nonce and tag around 43 characters at least)')
  FROM upstream_token.login WHERE session = 'sec-login';
SELECT ok(NOT EXISTS (SELECT 1 FROM upstream_token.login_status s
                       WHERE row_to_json(s)::text ~ (:'login_state' || '|' || :'login_nonce')),
          'login_status shows neither state nor nonce');
SELECT is((SELECT sum(ciphertexts) FROM upstream_token.key_usage), :'sealed_before'::numeric + 2,
          'key_usage counts the login''s two ciphertexts (verifier and nonce): rotate_key must re-seal them');
SELECT unalike(pg_temp.error_text(format($$SELECT * FROM upstream_token.complete_login(%L, 'CODE-SECRET-0123')$$, :'login_state' || 'x')),
              '%CODE-SECRET%', 'complete_login with an unknown state does not echo the code');

-- Error texts.
SELECT unalike(pg_temp.error_text($$SELECT upstream_token.register_provider('sec', 'https://user:URLPASSWORD@sec.example/token', 'c', 's')$$),
              '%URLPASSWORD%', 'an endpoint with credentials is refused without echoing them');
SELECT unalike(pg_temp.error_text($$SELECT upstream_token.register_provider('sec', 'https://sec.example/token?x=QUERYSECRET#f', 'c', 's')$$),
              '%QUERYSECRET%', 'a refused endpoint''s query is not echoed');
SELECT unalike(pg_temp.error_text($$SELECT upstream_token.register_provider('sec', 'https://sec.example/token', 'c', NULL, 'MISPLACED-SECRET')$$),
              '%MISPLACED-SECRET%', 'a secret passed as auth_method is not echoed');
SELECT unalike(pg_temp.error_text($$SELECT upstream_token.store_upstream_token('sec-1', 'sec', 'a', 'r', 60, id_token => 'HEADER.PAYLOADSECRET')$$),
              '%PAYLOADSECRET%', 'a malformed ID token is not echoed');
SELECT unalike(pg_temp.error_text($$SELECT upstream_token.store_upstream_token('sec-1', 'sec', 'a', 'r', 60,
                id_token => 'eyJhbGciOiJub25lIn0.' || translate(encode('{"iss":"i","sub":"SUBSECRET","aud":"c"}', 'base64'), E'+/=\n', '-_') || '.',
                subject => 'OTHER-SUBJECT')$$),
              '%SUBSECRET%', 'a subject mismatch does not echo the ID token''s sub');
SELECT unalike(pg_temp.error_text($$SELECT upstream_token.store_upstream_token('sec-1', 'sec', 'ACCESS-X', 'REFRESH-X', -5)$$),
              '%-X%', 'a refused store does not echo its tokens');
SAVEPOINT tamper;
UPDATE upstream_token.token SET access_token = refresh_token WHERE session = 'sec-1';
SELECT unalike(pg_temp.error_text($$SELECT upstream_token.get_upstream_token('sec-1', 'sec')$$),
              '%TOKEN-0123%', 'a decryption failure does not echo what it decrypted');
ROLLBACK TO SAVEPOINT tamper;
SET LOCAL upstream_token.key_file = '';
SELECT unalike(pg_temp.error_text($$SELECT upstream_token.store_upstream_token('sec-1', 'sec', 'ACCESS-NOKEY', 'r', 60)$$),
              '%NOKEY%', 'a store without a key does not echo the token');
RESET upstream_token.key_file;
-- The failed calls above left the stored tokens as they were.
SELECT is(upstream_token.get_upstream_token('sec-1', 'sec'), 'ACCESS-TOKEN-0123456789',
          'the stored token is intact after all refused calls');
SELECT is((SELECT generation FROM upstream_token.token_status WHERE session = 'sec-1'), 1::bigint,
          'and was never replaced');

SELECT * FROM finish();
ROLLBACK;
