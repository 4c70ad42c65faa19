-- upstream_token 0.2.0 -> 0.3.0. Together these blocks turn a 0.2.0 install into exactly what
-- upstream_token--0.3.0.sql creates (a test compares the catalogs).

\echo Use "ALTER EXTENSION upstream_token UPDATE TO '0.3.0'" to load this file. \quit

-- Presets and refresh-token keep-alive (issue 13): what a provider was registered from, the
-- extra parameters its refreshes carry, its refresh tokens' idle lifetime, whether the engine
-- keeps unused sessions alive, and which answer fields are kept with each token.
ALTER TABLE upstream_token.provider
    ADD COLUMN preset text,
    ADD COLUMN refresh_params jsonb NOT NULL DEFAULT '{}'
        CHECK (pg_catalog.jsonb_typeof(refresh_params) = 'object'),
    ADD COLUMN refresh_token_idle_ttl interval
        CHECK (refresh_token_idle_ttl > interval '0'),
    ADD COLUMN keep_alive boolean NOT NULL DEFAULT false,
    ADD COLUMN response_fields text[] NOT NULL DEFAULT '{}',
    ADD COLUMN authorization_endpoint text,
    ADD COLUMN device_authorization_endpoint text,
    ADD CHECK (NOT keep_alive OR refresh_token_idle_ttl IS NOT NULL);

ALTER TABLE upstream_token.token
    ADD COLUMN attributes jsonb CHECK (pg_catalog.jsonb_typeof(attributes) = 'object'),
    ADD COLUMN refresh_expires_stated_at timestamptz,
    ADD COLUMN grant_type text NOT NULL DEFAULT 'refresh_token'
        CHECK (grant_type IN ('refresh_token', 'client_credentials', 'token_exchange')),
    ADD COLUMN audience text,
    ADD COLUMN subject_session text;

-- register_provider takes a preset (every argument after the name may be left out), and
-- store_upstream_token the login's attributes: new signatures. EXECUTE granted directly to
-- other roles than upstream_token_client goes with the old ones (CHANGELOG says so): granted
-- again inside this script it would count as the extension's initial privileges.
DROP FUNCTION upstream_token.register_provider(text, text, text, text, text, text, text, text,
    interval, interval, interval, interval, integer, text, text);
DROP FUNCTION upstream_token.store_upstream_token(text, text, text, text, integer, text, text,
    text, integer);

CREATE FUNCTION upstream_token.register_provider(
    name                   text,
    token_endpoint         text DEFAULT NULL,
    client_id              text DEFAULT NULL,
    client_secret          text DEFAULT NULL,
    auth_method            text DEFAULT NULL,
    issuer                 text DEFAULT NULL,
    revocation_endpoint    text DEFAULT NULL,
    scope                  text DEFAULT NULL,
    refresh_threshold      interval DEFAULT NULL,
    refresh_token_ttl      interval DEFAULT NULL,
    default_lifetime       interval DEFAULT NULL,
    request_timeout        interval DEFAULT NULL,
    max_concurrent         integer DEFAULT NULL,
    assertion_alg          text DEFAULT NULL,
    assertion_kid          text DEFAULT NULL,
    preset                 text DEFAULT NULL,
    preset_params          jsonb DEFAULT NULL,
    refresh_params         jsonb DEFAULT NULL,
    refresh_token_idle_ttl interval DEFAULT NULL,
    keep_alive             boolean DEFAULT NULL,
    response_fields        text[] DEFAULT NULL,
    authorization_endpoint text DEFAULT NULL,
    device_authorization_endpoint text DEFAULT NULL)
RETURNS void
LANGUAGE c VOLATILE SECURITY DEFINER
AS 'MODULE_PATHNAME', 'ut_register_provider';

COMMENT ON FUNCTION upstream_token.register_provider(text, text, text, text, text, text, text, text, interval, interval, interval, interval, integer, text, text, text, jsonb, jsonb, interval, boolean, text[], text, text) IS
    'Creates or updates an OAuth provider. The client secret (for private_key_jwt: the PEM private key) is stored encrypted. A preset (see provider_presets) fills endpoints, client authentication, refresh parameters and refresh-token lifetimes; every argument given overrides it. auth_method defaults to client_secret_basic and default_lifetime to 1 hour without a preset. authorization_endpoint and device_authorization_endpoint are needed by begin_login and begin_device_login.';

-- The presets register_provider knows, as the library holds them.
CREATE FUNCTION upstream_token.preset_list(
    OUT name text, OUT title text, OUT parameters text[], OUT token_endpoint text,
    OUT revocation_endpoint text, OUT issuer text, OUT auth_method text,
    OUT scope_separator text, OUT refresh_params text[], OUT rotation text,
    OUT refresh_token_idle_ttl interval, OUT refresh_token_ttl interval,
    OUT default_lifetime interval, OUT keep_alive boolean, OUT quirks text[],
    OUT documentation text, OUT response_fields text[],
    OUT authorization_endpoint text, OUT device_authorization_endpoint text)
RETURNS SETOF record
LANGUAGE c STABLE
AS 'MODULE_PATHNAME', 'ut_preset_list';

COMMENT ON FUNCTION upstream_token.preset_list() IS
    'One row per provider preset: URL templates, their parameters, client authentication and what the provider documents about refresh tokens. Read it through the view provider_presets.';

CREATE VIEW upstream_token.provider_presets AS SELECT * FROM upstream_token.preset_list();

COMMENT ON VIEW upstream_token.provider_presets IS
    'The presets register_provider(..., preset => ...) accepts: URL templates ({parameter} filled from preset_params; base_url replaces the provider''s origin), client authentication, scope separator, refresh parameters, rotation, refresh-token idle and absolute lifetimes, keep_alive default, known quirks and the documentation the values come from (docs/providers.md).';

CREATE FUNCTION upstream_token.store_upstream_token(
    session            text,
    provider           text,
    access_token       text,
    refresh_token      text,
    expires_in         integer,
    id_token           text DEFAULT NULL,
    subject            text DEFAULT NULL,
    scope              text DEFAULT NULL,
    refresh_expires_in integer DEFAULT NULL,
    attributes         jsonb DEFAULT NULL)
RETURNS void
LANGUAGE c VOLATILE SECURITY DEFINER
AS 'MODULE_PATHNAME', 'ut_store_upstream_token';

COMMENT ON FUNCTION upstream_token.store_upstream_token(text, text, text, text, integer, text, text, text, integer, jsonb) IS
    'Saves (inserts or replaces) the tokens of a session after the application''s own login. A refresh_expires_in given here is a cut-off for the refresh token; without one its lifetime is an estimate the engine refreshes past (token_status.refresh_expiry_source). attributes: the login answer''s fields named in the provider''s response_fields (a JSON object, no secret), shown in token_status.attributes.';

REVOKE ALL ON FUNCTION upstream_token.register_provider(text, text, text, text, text, text, text, text,
    interval, interval, interval, interval, integer, text, text, text, jsonb, jsonb, interval, boolean, text[], text, text),
    upstream_token.preset_list(),
    upstream_token.store_upstream_token(text, text, text, text, integer, text, text, text, integer, jsonb)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    upstream_token.store_upstream_token(text, text, text, text, integer, text, text, text, integer, jsonb)
    TO upstream_token_client;

-- token_status shows keep-alive refreshes in next_refresh_at, and the kept answer fields.
CREATE FUNCTION upstream_token.keep_alive_at(provider text, session text, generation bigint,
                                             last_used timestamptz, idle_lifetime interval)
RETURNS timestamptz
LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'ut_keep_alive_at';

COMMENT ON FUNCTION upstream_token.keep_alive_at(text, text, bigint, timestamptz, interval) IS
    'When the engine refreshes this version of a token of a keep_alive provider so that its refresh token, last used at last_used, does not idle out: between 20% and 50% of the idle lifetime, spread per token.';

CREATE OR REPLACE VIEW upstream_token.token_status AS
SELECT t.session, t.provider, t.subject, t.status,
       t.expires_at, t.refresh_expires_at,
       (t.refresh_token IS NOT NULL) AS has_refresh_token,
       t.generation, t.failure_count, t.next_attempt_at, t.last_error,
       t.created_at, t.updated_at, t.refreshed_at,
       CASE WHEN t.status = 'active'
                 AND (t.refresh_token IS NOT NULL OR t.grant_type <> 'refresh_token') THEN
           GREATEST(
               LEAST(
                   upstream_token.planned_refresh_at(t.provider, t.session, t.generation, t.issued_at,
                       t.expires_at,
                       coalesce(p.refresh_threshold,
                                pg_catalog.current_setting('upstream_token.refresh_threshold')::interval)),
                   CASE WHEN p.keep_alive THEN
                       upstream_token.keep_alive_at(t.provider, t.session, t.generation,
                           coalesce(t.issued_at, t.created_at), p.refresh_token_idle_ttl)
                   END),
               t.next_attempt_at)
       END AS next_refresh_at,
       t.refresh_expiry_source,
       t.attributes,
       t.grant_type, t.audience, t.subject_session
  FROM upstream_token.token t
  JOIN upstream_token.provider p ON p.name = t.provider;

COMMENT ON VIEW upstream_token.token_status IS
    'One row per stored token: status, expiry, next planned refresh, backoff and last error; refresh_expiry_source says whether refresh_expires_at was stated (provider, application: a cut-off) or estimated (estimate: the engine still refreshes past it); attributes holds the provider''s response_fields (such as Salesforce''s instance_url) from its latest answer. grant_type says how the engine renews it: refresh_token for a user''s login; client_credentials (get_client_token) and token_exchange (exchange_token, for subject_session) for tokens cached under a derived session key. Contains no secret.';

REVOKE ALL ON FUNCTION upstream_token.keep_alive_at(text, text, bigint, timestamptz, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION upstream_token.keep_alive_at(text, text, bigint, timestamptz, interval)
    TO upstream_token_client;

-- rotate_key returns only once no transaction that began before it can still commit a value
-- sealed under the old key (found by the chaos soak: a value committed after its last batch).
CREATE FUNCTION upstream_token.wait_for_running_transactions()
RETURNS void
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'ut_wait_for_running_transactions';

COMMENT ON FUNCTION upstream_token.wait_for_running_transactions() IS
    'Waits until every transaction of this database running at the call has ended (rotate_key: a value sealed before the key changed may be committed after its last batch).';

-- A procedure so that it can commit between batches (no SECURITY DEFINER: that forbids COMMIT;
-- it is the owner's to call, like the function it loops over). No SET clause either (that too
-- forbids COMMIT), so it runs on its caller's search_path: every operator is written with its
-- schema, so no operator a database owner plants in `public` can stand in for pg_catalog's.
CREATE OR REPLACE PROCEDURE upstream_token.rotate_key(batch_size integer DEFAULT 500)
LANGUAGE plpgsql
AS $fn$
DECLARE
    left_now  bigint;
    left_before bigint := NULL;
    idle integer := 0;
    waited boolean := false;
BEGIN
    LOOP
        left_now := upstream_token.reencrypt_batch(batch_size);
        IF left_now OPERATOR(pg_catalog.=) 0::bigint THEN
            -- A transaction that sealed a value under the old key before the key changed can
            -- still commit it: wait for every transaction running now, then look again.
            EXIT WHEN waited;
            COMMIT;
            PERFORM upstream_token.wait_for_running_transactions();
            waited := true;
            CONTINUE;
        END IF;
        waited := false;
        COMMIT;
        IF left_before IS NOT NULL AND left_now OPERATOR(pg_catalog.>=) left_before THEN
            -- Only rows being refreshed or locked are left: give them a moment.
            idle := idle OPERATOR(pg_catalog.+) 1;
            IF idle OPERATOR(pg_catalog.>) 600 THEN
                RAISE EXCEPTION '% values could not be re-encrypted within 30 s', left_now
                    USING ERRCODE = '55P03',
                          HINT = 'Rows stay locked by long transactions; run rotate_key again later.';
            END IF;
            PERFORM pg_catalog.pg_sleep(0.05::double precision);
        ELSE
            idle := 0;
        END IF;
        left_before := left_now;
    END LOOP;
    RAISE NOTICE 'every stored secret is now sealed under key %', upstream_token.current_key_id();
END
$fn$;

COMMENT ON PROCEDURE upstream_token.rotate_key(integer) IS
    'Re-encrypts every stored secret under the key of upstream_token.key_file, online, committing every batch, and returns once no transaction that began before it can still commit a value under another key; upstream_token.previous_key_file must name the old key until it finishes.';

REVOKE ALL ON FUNCTION upstream_token.wait_for_running_transactions() FROM PUBLIC;

-- Logins the engine does itself (issue 11). A pending login: an authorization-code login begun
-- by begin_login (its PKCE verifier and nonce sealed, the state kept only as a digest), or a
-- device login begun by begin_device_login (its device code sealed). Rows end as completed or
-- failed and are purged once past expires_at.
CREATE TABLE upstream_token.login (
    id                        text PRIMARY KEY,  -- hex SHA-256 of the state (code flow), or random (device)
    flow                      text NOT NULL CHECK (flow IN ('authorization_code', 'device_code')),
    session                   text NOT NULL CHECK (session <> '' AND pg_catalog.octet_length(session) <= 512),
    provider                  text NOT NULL REFERENCES upstream_token.provider (name) ON DELETE CASCADE,
    redirect_uri              text,
    scope                     text,
    code_verifier             bytea,  -- ciphertexts; AAD binds each to (provider, login id, column)
    nonce                     bytea,
    device_code               bytea,
    user_code                 text,
    verification_uri          text,
    verification_uri_complete text,
    poll_interval             integer CHECK (poll_interval > 0),
    next_poll_at              timestamptz,
    status                    text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'redeeming', 'completed', 'failed')),
    error                     text,   -- why it failed; no secret
    subject                   text,
    created_at                timestamptz NOT NULL DEFAULT pg_catalog.now(),
    expires_at                timestamptz NOT NULL,
    finished_at               timestamptz
);

CREATE INDEX login_session_idx ON upstream_token.login (session, provider);
-- Exchanged tokens by the session they act for (revoke, delete, the maintenance purge).
CREATE INDEX token_subject_session_idx ON upstream_token.token (subject_session, provider)
    WHERE grant_type = 'token_exchange';
CREATE INDEX login_poll_idx ON upstream_token.login (next_poll_at) WHERE status = 'pending';
CREATE INDEX login_expires_idx ON upstream_token.login (expires_at);

REVOKE ALL ON upstream_token.login FROM PUBLIC;

CREATE FUNCTION upstream_token.begin_login(session text, provider text, redirect_uri text,
                                           scope text DEFAULT NULL, extra_params jsonb DEFAULT NULL)
RETURNS text
LANGUAGE c VOLATILE SECURITY DEFINER
AS 'MODULE_PATHNAME', 'ut_begin_login';

COMMENT ON FUNCTION upstream_token.begin_login(text, text, text, text, jsonb) IS
    'Begins an authorization-code login (PKCE S256, single-use state, a nonce when scope has openid) and returns the URL to send the browser to. The verifier and nonce are kept sealed for upstream_token.login_timeout; commit before the browser comes back.';

CREATE FUNCTION upstream_token.complete_login(state text, code text, iss text DEFAULT NULL)
RETURNS TABLE (session text, provider text, subject text, expires_at timestamptz)
LANGUAGE c VOLATILE SECURITY DEFINER
AS 'MODULE_PATHNAME', 'ut_complete_login';

COMMENT ON FUNCTION upstream_token.complete_login(text, text, text) IS
    'Completes the login the state belongs to: the engine redeems the code (once, committed whatever the caller does), checks the ID token (nonce, iss, aud, exp) and the RFC 9207 iss parameter, and stores the tokens. An unknown, replayed or expired state raises UT013 and redeems nothing.';

CREATE FUNCTION upstream_token.begin_device_login(session text, provider text, scope text DEFAULT NULL)
RETURNS TABLE (user_code text, verification_uri text, verification_uri_complete text,
               expires_at timestamptz)
LANGUAGE c VOLATILE SECURITY DEFINER
AS 'MODULE_PATHNAME', 'ut_begin_device_login';

COMMENT ON FUNCTION upstream_token.begin_device_login(text, text, text) IS
    'Begins an RFC 8628 device login: the engine asks the provider for a device code and polls for the user''s approval, stores the tokens and sends login_completed (or login_failed) on upstream_token_events.';

CREATE FUNCTION upstream_token.get_client_token(provider text, scope text DEFAULT NULL,
                                                audience text DEFAULT NULL)
RETURNS text
LANGUAGE c VOLATILE SECURITY DEFINER
AS 'MODULE_PATHNAME', 'ut_get_client_token';

COMMENT ON FUNCTION upstream_token.get_client_token(text, text, text) IS
    'The application''s own access token from the client credentials grant, cached per (provider, scope, audience) and renewed by the engine before it expires.';

CREATE FUNCTION upstream_token.exchange_token(session text, provider text, audience text,
                                              scope text DEFAULT NULL)
RETURNS text
LANGUAGE c VOLATILE SECURITY DEFINER
AS 'MODULE_PATHNAME', 'ut_exchange_token';

COMMENT ON FUNCTION upstream_token.exchange_token(text, text, text, text) IS
    'An access token for audience obtained by RFC 8693 token exchange with the session''s token at provider as subject token; cached per (session, provider, audience, scope) and renewed by the engine before it expires.';

CREATE VIEW upstream_token.login_status AS
SELECT l.session, l.provider, l.flow, l.status, l.error, l.subject,
       l.created_at, l.expires_at, l.finished_at
  FROM upstream_token.login l;

COMMENT ON VIEW upstream_token.login_status IS
    'Logins begun with begin_login or begin_device_login, until purged past expires_at: pending, completed or failed, with the reason. Contains no secret (the state, verifier, nonce, device code and user code are not shown).';

REVOKE ALL ON FUNCTION
    upstream_token.begin_login(text, text, text, text, jsonb),
    upstream_token.complete_login(text, text, text),
    upstream_token.begin_device_login(text, text, text),
    upstream_token.get_client_token(text, text, text),
    upstream_token.exchange_token(text, text, text, text)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    upstream_token.begin_login(text, text, text, text, jsonb),
    upstream_token.complete_login(text, text, text),
    upstream_token.begin_device_login(text, text, text),
    upstream_token.get_client_token(text, text, text),
    upstream_token.exchange_token(text, text, text, text)
    TO upstream_token_client;
GRANT SELECT ON upstream_token.login_status TO upstream_token_client;

-- Exchanged tokens leave with the session they were obtained for.
CREATE OR REPLACE FUNCTION upstream_token.delete_upstream_token(session text, provider text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    n integer;
BEGIN
    IF session IS NULL THEN
        RAISE EXCEPTION 'session must not be NULL' USING ERRCODE = '22004';
    END IF;
    DELETE FROM upstream_token.token t
     WHERE t.session = delete_upstream_token.session
       AND (delete_upstream_token.provider IS NULL OR t.provider = delete_upstream_token.provider);
    GET DIAGNOSTICS n = ROW_COUNT;
    -- Tokens exchange_token obtained on the session's behalf go with it.
    DELETE FROM upstream_token.token t
     WHERE t.subject_session = delete_upstream_token.session
       AND (delete_upstream_token.provider IS NULL OR t.provider = delete_upstream_token.provider);
    -- A login still under way for it must not store tokens afterwards.
    UPDATE upstream_token.login l
       SET status = 'failed', error = 'the session was deleted', finished_at = pg_catalog.now()
     WHERE l.session = delete_upstream_token.session
       AND (delete_upstream_token.provider IS NULL OR l.provider = delete_upstream_token.provider)
       AND l.status IN ('pending', 'redeeming');
    RETURN n;
END
$fn$;

COMMENT ON FUNCTION upstream_token.delete_upstream_token(text, text) IS
    'Deletes the stored tokens of a session (one provider, or all when provider is NULL); returns the count. Does not contact the provider: a refresh token a refresh in flight brings back is dropped, not revoked. Tokens exchange_token obtained for the session are deleted too, and its logins under way end (failed).';

CREATE OR REPLACE FUNCTION upstream_token.revoke_upstream_token(session text, provider text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    r record;
    n integer := 0;
BEGIN
    IF session IS NULL THEN
        RAISE EXCEPTION 'session must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF revoke_upstream_token.provider IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM upstream_token.provider p WHERE p.name = revoke_upstream_token.provider) THEN
        RAISE EXCEPTION 'provider "%" does not exist', revoke_upstream_token.provider
            USING ERRCODE = '42704';
    END IF;
    -- Tokens exchange_token obtained on the session's behalf go with it (deleted, not revoked).
    DELETE FROM upstream_token.token t
     WHERE t.subject_session = revoke_upstream_token.session
       AND (revoke_upstream_token.provider IS NULL OR t.provider = revoke_upstream_token.provider);
    -- A login still under way for it must not store tokens afterwards (sign-out wins).
    UPDATE upstream_token.login l
       SET status = 'failed', error = 'the session signed out', finished_at = pg_catalog.now()
     WHERE l.session = revoke_upstream_token.session
       AND (revoke_upstream_token.provider IS NULL OR l.provider = revoke_upstream_token.provider)
       AND l.status IN ('pending', 'redeeming');
    FOR r IN
        DELETE FROM upstream_token.token t
         WHERE t.session = revoke_upstream_token.session
           AND (revoke_upstream_token.provider IS NULL OR t.provider = revoke_upstream_token.provider)
        RETURNING t.session, t.provider, t.refresh_token, t.access_token
    LOOP
        -- A refresh of this row may be in flight: its answer must be revoked too.
        IF r.refresh_token IS NOT NULL THEN
            INSERT INTO upstream_token.token_tombstone (provider, session, refresh_digest)
            VALUES (r.provider, r.session, pg_catalog.sha256(r.refresh_token))
            ON CONFLICT DO NOTHING;
        END IF;
        INSERT INTO upstream_token.revocation (provider, session, token, token_column)
        SELECT r.provider, r.session, coalesce(r.refresh_token, r.access_token),
               CASE WHEN r.refresh_token IS NOT NULL THEN 'refresh_token' ELSE 'access_token' END
          FROM upstream_token.provider p
         WHERE p.name = r.provider AND p.revocation_endpoint IS NOT NULL
           AND coalesce(r.refresh_token, r.access_token) IS NOT NULL;
        PERFORM pg_catalog.pg_notify('upstream_token_events', pg_catalog.json_build_object(
            'session', r.session, 'provider', r.provider, 'event', 'revoked')::text);
        n := n + 1;
    END LOOP;
    IF n > 0 THEN
        PERFORM upstream_token.wake_engine_at_commit();
    END IF;
    RETURN n;
END
$fn$;

COMMENT ON FUNCTION upstream_token.revoke_upstream_token(text, text) IS
    'Deletes the session''s tokens (one provider, or all) and, after commit, revokes the refresh token at providers with a revocation endpoint (RFC 7009), retrying until delivered; a refresh token a refresh in flight brings back is revoked too. Tokens exchange_token obtained for the session are deleted, and its logins under way end (failed). Returns the number of the session''s tokens removed.';

-- Pending logins' sealed values are counted (and re-sealed by rotate_key) too.
CREATE OR REPLACE VIEW upstream_token.key_usage AS
SELECT pg_catalog.encode(pg_catalog.substr(c.sealed, 2, 4), 'hex') AS key_id,
       pg_catalog.count(*) AS ciphertexts
  FROM (SELECT access_token FROM upstream_token.token
        UNION ALL SELECT refresh_token FROM upstream_token.token
        UNION ALL SELECT id_token FROM upstream_token.token
        UNION ALL SELECT client_secret FROM upstream_token.provider
        UNION ALL SELECT token FROM upstream_token.revocation
        UNION ALL SELECT code_verifier FROM upstream_token.login
        UNION ALL SELECT nonce FROM upstream_token.login
        UNION ALL SELECT device_code FROM upstream_token.login) AS c (sealed)
 WHERE c.sealed IS NOT NULL
 GROUP BY 1;

-- Refreshes write less (bench B8): room on each page for a row's next version, and the
-- refresh-token expiry index only holds the rows its scans can pick (a stated end, or a row no
-- longer active). Pages already full get room as rows move; VACUUM FULL makes it at once.
ALTER TABLE upstream_token.token SET (fillfactor = 80);
DROP INDEX upstream_token.token_refresh_expiry_idx;
CREATE INDEX token_refresh_expiry_idx ON upstream_token.token (refresh_expires_at)
    WHERE status <> 'active' OR refresh_expiry_source IN ('provider', 'application');
