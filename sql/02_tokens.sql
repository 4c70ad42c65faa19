-- Proves: store_upstream_token inserts and replaces (generation bumped, status and failure
-- state reset), takes the subject from an ID token's sub and refuses a conflicting one;
-- get_upstream_token returns a fresh token exactly as stored; delete_upstream_token removes
-- one provider's or all of a session's tokens and returns the count, and with them (not
-- counted) the tokens exchange_token obtained on the session's behalf, as revoke_upstream_token
-- does; token_status shows sane values and no secret; lock_token takes the engine's token
-- lock for the transaction.
\set VERBOSITY terse

\i sql/try.psql

-- base64url without padding (RFC 7515 section 2), to build ID tokens in SQL.
CREATE FUNCTION pg_temp.b64url(t text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT rtrim(translate(encode(convert_to(t, 'UTF8'), 'base64'), E'+/\n', '-_'), '=')
$$;

-- An unsigned compact JWS carrying the given claims: what a provider's ID token looks like
-- to the store (it reads claims; signatures are the login flow's business).
CREATE FUNCTION pg_temp.jwt(claims jsonb) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT pg_temp.b64url('{"alg":"RS256","typ":"JWT"}') || '.' || pg_temp.b64url(claims::text)
           || '.c2lnbmF0dXJl'
$$;

-- The status of one token without timestamps, which differ on every run.
CREATE FUNCTION pg_temp.status(s text, p text)
RETURNS TABLE (subject text, status text, has_refresh_token boolean, generation bigint,
               failure_count integer, next_attempt_at_null boolean, last_error text)
LANGUAGE sql AS $$
    SELECT subject, status, has_refresh_token, generation, failure_count,
           next_attempt_at IS NULL, last_error
      FROM upstream_token.token_status WHERE session = s AND provider = p
$$;

-- Endpoints on loopback port 1, where nothing listens: should the engine try a refresh on its
-- own, it fails at once, without DNS. Tokens here are stored fresh unless a test needs
-- otherwise, so the engine has nothing to do with them.
SELECT upstream_token.register_provider('github', 'https://127.0.0.1:1/login/oauth/access_token',
                                        'gh-client', 'gh-secret');
SELECT upstream_token.register_provider('google', 'https://127.0.0.1:1/token',
                                        'gg-client', 'gg-secret', 'client_secret_post',
                                        default_lifetime => '10 minutes');
-- A provider whose tokens are stored without refresh tokens only (nothing for the engine).
SELECT upstream_token.register_provider('nort', 'https://127.0.0.1:1/token', 'nort-client', NULL, 'none');

-- 1. Insert.
SELECT upstream_token.store_upstream_token('sess-a', 'github', 'gh-access-1', 'gh-refresh-1', 3600,
                                           subject => 'user-1', scope => 'repo read:user');
SELECT * FROM pg_temp.status('sess-a', 'github');
SELECT t.scope, t.token_type, t.client_id AS bound_client_id, t.id_claims IS NULL AS no_claims,
       t.expires_at BETWEEN now() + interval '3598 s' AND now() + interval '3601 s' AS expires_in_1h,
       t.refresh_expires_at BETWEEN now() + interval '30 days' - interval '1 s'
                                AND now() + interval '30 days' + interval '1 s' AS refresh_ttl_30d,
       t.refreshed_at IS NULL AS never_refreshed,
       t.created_at = t.updated_at AS untouched
  FROM upstream_token.token t WHERE session = 'sess-a' AND provider = 'github';

-- 2. A fresh token comes back exactly as stored.
SELECT upstream_token.get_upstream_token('sess-a', 'github') = 'gh-access-1' AS same_token;
-- Unicode and long tokens are returned byte for byte.
SELECT upstream_token.store_upstream_token('sess-u', 'github', 'äccess-✓-' || repeat('x', 4000), NULL, 3600);
SELECT upstream_token.get_upstream_token('sess-u', 'github') = 'äccess-✓-' || repeat('x', 4000) AS same_token;

-- 3. Replace: generation goes up, status and failure state are reset, new values are served.
UPDATE upstream_token.token
   SET status = 'reauth_required', failure_count = 3, next_attempt_at = now() + interval '1 hour',
       last_error = 'reauth_required: invalid_grant'
 WHERE session = 'sess-a' AND provider = 'github';
SELECT * FROM pg_temp.status('sess-a', 'github');
SELECT upstream_token.store_upstream_token('sess-a', 'github', 'gh-access-2', 'gh-refresh-2', 7200,
                                           subject => 'user-1', refresh_expires_in => 86400);
SELECT * FROM pg_temp.status('sess-a', 'github');
SELECT upstream_token.get_upstream_token('sess-a', 'github') = 'gh-access-2' AS new_token;
SELECT expires_at BETWEEN now() + interval '7198 s' AND now() + interval '7201 s' AS expires_in_2h,
       refresh_expires_at BETWEEN now() + interval '86399 s' AND now() + interval '86401 s' AS refresh_in_1d,
       scope IS NULL AS scope_replaced,
       updated_at > created_at AS updated
  FROM upstream_token.token WHERE session = 'sess-a' AND provider = 'github';
-- A third store bumps it again.
SELECT upstream_token.store_upstream_token('sess-a', 'github', 'gh-access-3', 'gh-refresh-3', 3600);
SELECT generation FROM upstream_token.token_status WHERE session = 'sess-a' AND provider = 'github';

-- Without expires_in the provider's default_lifetime applies; without a refresh token there
-- is no refresh expiry.
SELECT upstream_token.store_upstream_token('sess-a', 'google', 'gg-access-1', NULL, NULL);
SELECT has_refresh_token, refresh_expires_at IS NULL AS no_refresh_expiry,
       expires_at BETWEEN now() + interval '598 s' AND now() + interval '601 s' AS default_10min
  FROM upstream_token.token_status WHERE session = 'sess-a' AND provider = 'google';
-- refresh_expires_in 0 means "not stated" (Keycloak offline tokens): the 30-day default applies.
SELECT upstream_token.store_upstream_token('sess-k', 'google', 'gg-access-k', 'gg-refresh-k', 3600,
                                           refresh_expires_in => 0);
SELECT refresh_expires_at BETWEEN now() + interval '30 days' - interval '1 s'
                              AND now() + interval '30 days' + interval '1 s' AS refresh_ttl_30d
  FROM upstream_token.token_status WHERE session = 'sess-k' AND provider = 'google';
-- Where each refresh expiry came from: stated by the store call (a cut-off), estimated (the
-- engine refreshes past it), none without a refresh token.
SELECT session, provider, refresh_expiry_source FROM upstream_token.token_status
 WHERE session IN ('sess-a', 'sess-k') ORDER BY session, provider;
SELECT upstream_token.store_upstream_token('sess-k', 'github', 'gh-access-k', 'gh-refresh-k', 3600,
                                           refresh_expires_in => 600);
SELECT refresh_expiry_source FROM upstream_token.token_status WHERE session = 'sess-k' AND provider = 'github';
SELECT upstream_token.delete_upstream_token('sess-k', 'github') AS deleted;
-- A refresh token alone is accepted; the missing access token counts as expired.
SELECT upstream_token.store_upstream_token('sess-r', 'google', NULL, 'gg-refresh-r', NULL);
SELECT has_refresh_token, expires_at <= now() AS expired
  FROM upstream_token.token_status WHERE session = 'sess-r' AND provider = 'google';
-- (Removed again: the engine would try to refresh it.)
SELECT upstream_token.delete_upstream_token('sess-r') AS deleted;

-- 4. ID token: the subject comes from sub, the binding claims are kept (no secret in them).
SELECT upstream_token.store_upstream_token(
    'sess-oidc', 'google', 'gg-access-oidc', 'gg-refresh-oidc', 3600,
    id_token => pg_temp.jwt('{"iss":"https://accounts.example.com","sub":"1234567890","aud":"gg-client","azp":"gg-client","auth_time":1700000000,"email":"u@example.com"}'));
SELECT * FROM pg_temp.status('sess-oidc', 'google');
SELECT id_claims, id_token IS NOT NULL AS id_token_kept
  FROM upstream_token.token WHERE session = 'sess-oidc' AND provider = 'google';
-- A subject equal to sub is fine; aud may be an array.
SELECT upstream_token.store_upstream_token(
    'sess-oidc', 'google', 'gg-access-oidc-2', 'gg-refresh-oidc-2', 3600,
    id_token => pg_temp.jwt('{"iss":"https://accounts.example.com","sub":"1234567890","aud":["gg-client","other"]}'),
    subject => '1234567890');
SELECT * FROM pg_temp.status('sess-oidc', 'google');
SELECT id_claims FROM upstream_token.token WHERE session = 'sess-oidc' AND provider = 'google';
-- A subject that differs from sub is refused (22023) and the stored row stays as it was.
SELECT pg_temp.try($$SELECT upstream_token.store_upstream_token(
    'sess-oidc', 'google', 'gg-access-evil', 'gg-refresh-evil', 3600,
    id_token => pg_temp.jwt('{"iss":"https://accounts.example.com","sub":"1234567890","aud":"gg-client"}'),
    subject => 'someone-else')$$);
SELECT * FROM pg_temp.status('sess-oidc', 'google');
SELECT upstream_token.get_upstream_token('sess-oidc', 'google') = 'gg-access-oidc-2' AS unchanged;
-- Nor is a new session created by a refused store.
SELECT pg_temp.try($$SELECT upstream_token.store_upstream_token(
    'sess-oidc-2', 'google', 'gg-access-x', NULL, 3600,
    id_token => pg_temp.jwt('{"iss":"https://accounts.example.com","sub":"42","aud":"gg-client"}'),
    subject => '43')$$);
SELECT count(*) AS rows_for_sess_oidc_2 FROM upstream_token.token WHERE session = 'sess-oidc-2';

-- 5. token_status: the columns, none of them secret.
SELECT attname, format_type(atttypid, atttypmod) AS type
  FROM pg_attribute WHERE attrelid = 'upstream_token.token_status'::regclass AND attnum > 0
 ORDER BY attnum;
SELECT session, provider, subject, status, has_refresh_token, generation, failure_count
  FROM upstream_token.token_status ORDER BY session, provider;
-- Values are sane for every row.
SELECT count(*) FILTER (WHERE expires_at IS NULL OR created_at IS NULL OR updated_at < created_at
                          OR generation < 1 OR failure_count < 0
                          OR (has_refresh_token AND refresh_expires_at IS NULL)
                          OR (refresh_expires_at IS NOT NULL AND refresh_expires_at <= now()))
       AS insane_rows
  FROM upstream_token.token_status;
-- The engine's own next refresh lies inside the refresh window (the last 300 s here, the
-- default threshold) for tokens it can refresh, and is NULL for those it cannot.
SELECT count(*) FILTER (WHERE has_refresh_token AND status = 'active'
                          AND next_refresh_at BETWEEN expires_at - interval '300 s' AND expires_at)
       AS planned_in_window,
       count(*) FILTER (WHERE NOT has_refresh_token AND next_refresh_at IS NULL) AS not_planned,
       count(*) AS total
  FROM upstream_token.token_status;

-- 6. delete_upstream_token: one provider, all providers, unknown ones; returns the count.
SELECT upstream_token.store_upstream_token('sess-d', 'github', 'gh-access-d', 'gh-refresh-d', 3600);
SELECT upstream_token.store_upstream_token('sess-d', 'google', 'gg-access-d', 'gg-refresh-d', 3600);
SELECT upstream_token.store_upstream_token('sess-e', 'google', 'gg-access-e', 'gg-refresh-e', 3600);
SELECT upstream_token.delete_upstream_token('sess-d', 'github') AS deleted_one;
SELECT provider FROM upstream_token.token_status WHERE session = 'sess-d';
SELECT upstream_token.store_upstream_token('sess-d', 'github', 'gh-access-d', 'gh-refresh-d', 3600);
SELECT upstream_token.delete_upstream_token('sess-d') AS deleted_all;
SELECT upstream_token.delete_upstream_token('sess-d') AS deleted_again;
SELECT upstream_token.delete_upstream_token('sess-d', 'no-such-provider') AS unknown_provider;
SELECT upstream_token.delete_upstream_token('sess-d', NULL) AS explicit_null_provider;
SELECT count(*) AS sess_e_left FROM upstream_token.token_status WHERE session = 'sess-e';
SELECT pg_temp.try($$SELECT upstream_token.delete_upstream_token(NULL)$$);
SELECT pg_temp.try($$SELECT upstream_token.get_upstream_token('sess-d', 'github')$$);

-- Tokens exchange_token obtained on a session's behalf (grant_type token_exchange, cached under
-- a derived key beginning with 0x01, subject_session naming the session) go with the session:
-- delete_upstream_token and revoke_upstream_token delete them (one provider's, or all), do
-- not count them, and queue no revocation for them; a client_credentials token (no subject
-- session) and another session's exchanged token stay. Written directly, as the engine would,
-- in a transaction rolled back (the engine never sees them).
BEGIN;
SELECT upstream_token.store_upstream_token('sess-x1', 'github', 'gh-access-x1', 'gh-refresh-x1', 3600);
SELECT upstream_token.store_upstream_token('sess-x1', 'google', 'gg-access-x1', 'gg-refresh-x1', 3600);
INSERT INTO upstream_token.token (session, provider, client_id, expires_at, grant_type, audience, subject_session)
VALUES (E'\x01x1-gh', 'github', 'gh-client', now() + interval '1 hour', 'token_exchange', 'https://api.example', 'sess-x1'),
       (E'\x01x1-gg', 'google', 'gg-client', now() + interval '1 hour', 'token_exchange', 'https://api.example', 'sess-x1'),
       (E'\x01x2-gh', 'github', 'gh-client', now() + interval '1 hour', 'token_exchange', 'https://api.example', 'sess-x2'),
       (E'\x01cc-gh', 'github', 'gh-client', now() + interval '1 hour', 'client_credentials', 'https://api.example', NULL);
SELECT provider, grant_type, audience, subject_session, has_refresh_token
  FROM upstream_token.token_status WHERE grant_type <> 'refresh_token' ORDER BY provider, grant_type, subject_session;
SELECT upstream_token.delete_upstream_token('sess-x1', 'github') AS deleted_one;
SELECT provider, grant_type, subject_session FROM upstream_token.token_status
 WHERE session LIKE 'sess-x%' OR grant_type <> 'refresh_token' ORDER BY provider, grant_type, subject_session;
SELECT upstream_token.revoke_upstream_token('sess-x1') AS revoked_all;
SELECT provider, grant_type, subject_session FROM upstream_token.token_status
 WHERE session LIKE 'sess-x%' OR grant_type <> 'refresh_token' ORDER BY provider, grant_type, subject_session;
SELECT count(*) AS revocations_of_derived_keys FROM upstream_token.revocation WHERE session LIKE E'\x01%';
-- A session with exchanged tokens only: none of its own to count, the exchanged one deleted.
SELECT upstream_token.delete_upstream_token('sess-x2') AS deleted_own;
SELECT provider, grant_type, subject_session FROM upstream_token.token_status
 WHERE grant_type <> 'refresh_token' ORDER BY provider, grant_type, subject_session;
ROLLBACK;

-- 7. The token lock: lock_token holds, until the transaction ends, an advisory lock whose tag
-- no built-in function makes (objsubid 21844, 'UT'; pg_advisory_lock uses 1 and 2), keyed by the
-- first 8 bytes of SHA-256 over the length-prefixed provider and session. refresh_lock_key is
-- gone.
BEGIN;
SELECT pg_typeof(upstream_token.lock_token('github', 'sess-a')) AS returns;
SELECT l.locktype, l.objsubid, l.mode, l.granted,
       lpad(to_hex(l.classid::bigint), 8, '0') || lpad(to_hex(l.objid::bigint), 8, '0') =
       encode(substr(sha256(int4send(6) || convert_to('github', 'UTF8') ||
                            int4send(6) || convert_to('sess-a', 'UTF8')), 1, 8), 'hex') AS sha256_key
  FROM pg_locks l WHERE l.pid = pg_backend_pid() AND l.locktype = 'advisory';
SELECT upstream_token.try_lock_token('github', 'sess-a') AS relock_same_transaction,
       upstream_token.try_lock_token('github', 'sess-b') AS other_token;
SELECT count(*) AS token_locks FROM pg_locks
 WHERE pid = pg_backend_pid() AND locktype = 'advisory' AND objsubid = 21844;
COMMIT;
SELECT count(*) AS token_locks_after_commit FROM pg_locks
 WHERE pid = pg_backend_pid() AND locktype = 'advisory';
SELECT pg_temp.try($$SELECT upstream_token.lock_token(NULL, 'sess-a')$$);
SELECT pg_temp.try($$SELECT upstream_token.try_lock_token('github', '')$$);
SELECT to_regprocedure('upstream_token.refresh_lock_key(text, text)') IS NULL AS refresh_lock_key_gone;

-- 8. Secrets: every stored token is a ciphertext that does not contain its plaintext, and the
-- same plaintext is encrypted differently in different rows.
SELECT upstream_token.store_upstream_token('sess-x', 'github', 'same-access', 'same-refresh', 3600);
SELECT upstream_token.store_upstream_token('sess-y', 'github', 'same-access', 'same-refresh', 3600);
SELECT bool_and(position(convert_to('same-access', 'UTF8') IN access_token) = 0) AS access_hidden,
       bool_and(position(convert_to('same-refresh', 'UTF8') IN refresh_token) = 0) AS refresh_hidden,
       count(DISTINCT access_token) AS distinct_ciphertexts
  FROM upstream_token.token WHERE session IN ('sess-x', 'sess-y');
SELECT position(convert_to('gg-access-oidc-2', 'UTF8') IN access_token) = 0
       AND position(convert_to('gg-refresh-oidc-2', 'UTF8') IN refresh_token) = 0
       AND position(convert_to('1234567890', 'UTF8') IN id_token) = 0
       AND position(convert_to(pg_temp.b64url('{"alg":"RS256","typ":"JWT"}'), 'UTF8') IN id_token) = 0
       AS oidc_row_hidden
  FROM upstream_token.token WHERE session = 'sess-oidc' AND provider = 'google';

-- 9. get_upstream_credentials: one row per provider of the session; a fresh token comes back
-- as stored (with its ID token), a provider that cannot be served is flagged in its row.
SELECT upstream_token.store_upstream_token('sess-c', 'github', 'gh-access-c', 'gh-refresh-c', 3600);
SELECT upstream_token.store_upstream_token(
    'sess-c', 'google', 'gg-access-c', 'gg-refresh-c', 3600,
    id_token => pg_temp.jwt('{"iss":"https://accounts.example.com","sub":"c-user","aud":"gg-client"}'));
SELECT upstream_token.store_upstream_token('sess-c', 'nort', 'nort-access-c', NULL, 0);
SELECT provider,
       access_token = CASE provider WHEN 'github' THEN 'gh-access-c' WHEN 'google' THEN 'gg-access-c' END
         AS stored_access_token,
       id_token = pg_temp.jwt('{"iss":"https://accounts.example.com","sub":"c-user","aud":"gg-client"}') AS stored_id_token,
       expires_at IS NOT NULL AS has_expiry, sqlstate, error
  FROM upstream_token.get_upstream_credentials('sess-c') ORDER BY provider;
SELECT count(*) AS rows_for_unknown_session FROM upstream_token.get_upstream_credentials('no-such-session');

-- Leave nothing behind for later files.
SELECT upstream_token.drop_provider('nort', cascade => true);
SELECT upstream_token.drop_provider('github', cascade => true);
SELECT upstream_token.drop_provider('google', cascade => true);
