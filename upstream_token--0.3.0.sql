-- upstream_token 0.3.0: the token store and its SQL surface.
-- Every object is schema-qualified; nothing is granted to PUBLIC. SQL and plpgsql functions
-- pin search_path with a SET clause; C functions pin it in code on every call (cheaper on
-- the hot path, same effect: pg_catalog only, no pg_temp).

\echo Use "CREATE EXTENSION upstream_token" to load this file. \quit

-- Created here (not from the control file) so that DROP EXTENSION drops it too.
CREATE SCHEMA upstream_token;

-- The role application backends are granted (cluster-wide, so created only once).
DO $do$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'upstream_token_client') THEN
        CREATE ROLE upstream_token_client NOLOGIN;
    END IF;
END
$do$;

CREATE TABLE upstream_token.provider (
    name                text PRIMARY KEY,
    token_endpoint      text NOT NULL,
    client_id           text NOT NULL,
    client_secret       bytea,          -- AES-256-GCM ciphertext (private_key_jwt: of the PEM key)
    auth_method         text NOT NULL
        CHECK (auth_method IN ('client_secret_basic', 'client_secret_post', 'none',
                               'private_key_jwt')),
    assertion_alg       text CHECK (assertion_alg IN ('RS256', 'ES256')),  -- private_key_jwt
    assertion_kid       text,
    issuer              text,
    revocation_endpoint text,
    scope               text,
    refresh_threshold   interval,       -- NULL: upstream_token.refresh_threshold
    refresh_token_ttl   interval,       -- NULL: upstream_token.refresh_token_ttl
    default_lifetime    interval NOT NULL DEFAULT '1 hour',  -- when a response has no expires_in
    request_timeout     interval,       -- NULL: upstream_token.request_timeout
    max_concurrent      integer CHECK (max_concurrent > 0),
    created_at          timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at          timestamptz NOT NULL DEFAULT pg_catalog.now(),
    preset              text,           -- the preset it was registered from (provider_presets)
    refresh_params      jsonb NOT NULL DEFAULT '{}'  -- extra form parameters of every refresh
        CHECK (pg_catalog.jsonb_typeof(refresh_params) = 'object'),
    refresh_token_idle_ttl interval     -- the refresh token dies unused for this long
        CHECK (refresh_token_idle_ttl > interval '0'),
    keep_alive          boolean NOT NULL DEFAULT false,  -- refresh unused sessions before that
    response_fields     text[] NOT NULL DEFAULT '{}',  -- answer fields kept with each token
    authorization_endpoint        text,  -- begin_login sends the browser here
    device_authorization_endpoint text,  -- begin_device_login asks for device codes here (RFC 8628)
    CHECK ((auth_method = 'none') = (client_secret IS NULL)),
    CHECK (NOT keep_alive OR refresh_token_idle_ttl IS NOT NULL)
);

CREATE TABLE upstream_token.token (
    session             text NOT NULL,
    provider            text NOT NULL REFERENCES upstream_token.provider (name),
    subject             text,           -- the user at login (binding)
    client_id           text NOT NULL,  -- the client at login (binding)
    id_claims           jsonb,          -- iss/sub/aud/azp/auth_time of the login ID token
    access_token        bytea,          -- ciphertexts; AAD binds each to (provider, session, column)
    refresh_token       bytea,
    id_token            bytea,
    token_type          text NOT NULL DEFAULT 'Bearer',
    scope               text,
    issued_at           timestamptz,    -- when the engine obtained the access token (NULL: stored by the app)
    expires_at          timestamptz NOT NULL,
    refresh_expires_at  timestamptz,
    generation          bigint NOT NULL DEFAULT 1,  -- bumped on every saved refresh or store
    status              text NOT NULL DEFAULT 'active'
        CHECK (status IN ('active', 'reauth_required', 'invalid_binding', 'expired')),
    failure_count       integer NOT NULL DEFAULT 0,
    next_attempt_at     timestamptz,
    last_error          text,           -- error class and provider's error code, no secrets
    created_at          timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at          timestamptz NOT NULL DEFAULT pg_catalog.now(),
    refreshed_at        timestamptz,
    -- Where refresh_expires_at came from: 'provider' (its token response) or 'application'
    -- (store_upstream_token's refresh_expires_in) are stated cut-offs; 'estimate' (the
    -- provider's refresh_token_ttl or the GUC) is not: past it the engine still refreshes.
    refresh_expiry_source text
        CHECK (refresh_expiry_source IN ('provider', 'application', 'estimate')),
    -- The provider's response_fields from its latest answer, or the app's at login (no secret).
    attributes          jsonb CHECK (pg_catalog.jsonb_typeof(attributes) = 'object'),
    -- When refresh_expires_at was last stated (an answer carrying it, or a store): the
    -- refresh_expiring event's window is a tenth of the lifetime stated then.
    refresh_expires_stated_at timestamptz,
    -- How the engine renews it: a refresh token (a user's login), or the grant again for the
    -- application's own tokens (get_client_token) and exchanged ones (exchange_token), whose
    -- session is a key derived from what they are cached by.
    grant_type          text NOT NULL DEFAULT 'refresh_token'
        CHECK (grant_type IN ('refresh_token', 'client_credentials', 'token_exchange')),
    audience            text,
    subject_session     text,           -- token_exchange: the session whose token is exchanged
    PRIMARY KEY (session, provider),
    CHECK (session <> '' AND pg_catalog.octet_length(session) <= 512)
) WITH (fillfactor = 80);  -- room on each page for a refresh's new row version (bench B8)

-- The engine's scans: tokens entering their refresh window, and refresh tokens reaching a
-- stated end or purged after it (an active row with an estimated end is not in the index, so
-- refreshing it writes one index entry fewer).
CREATE INDEX token_due_idx ON upstream_token.token (expires_at) WHERE status = 'active';
CREATE INDEX token_refresh_expiry_idx ON upstream_token.token (refresh_expires_at)
    WHERE status <> 'active' OR refresh_expiry_source IN ('provider', 'application');

-- Revocations (RFC 7009) still to be delivered: written in the caller's transaction, sent
-- by the engine after commit, retried until the provider confirms. The provider cannot be
-- deleted while any is pending (drop_provider refuses, or discards them when told to).
CREATE TABLE upstream_token.revocation (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    provider        text NOT NULL REFERENCES upstream_token.provider (name),
    session         text NOT NULL,
    token           bytea NOT NULL,  -- the row's ciphertext, still bound to (provider, session, column)
    token_column    text NOT NULL CHECK (token_column IN ('refresh_token', 'access_token')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT pg_catalog.now()
);

CREATE INDEX revocation_due_idx ON upstream_token.revocation (next_attempt_at);

-- Token rows revoke_upstream_token deleted, kept a day (the engine purges them): a refresh
-- that was in flight finds here that the app revoked the version it refreshed from, and has
-- the refresh token it received revoked too, even after the queued revocation was delivered.
-- A row replaced by a new login or deleted by delete_upstream_token leaves no tombstone, so
-- its late refresh revokes nothing. No secret: the version is named by a digest of the
-- deleted row's refresh-token ciphertext. Not dumped: it only matters to refreshes in flight.
CREATE TABLE upstream_token.token_tombstone (
    provider       text NOT NULL REFERENCES upstream_token.provider (name) ON DELETE CASCADE,
    session        text NOT NULL,
    refresh_digest bytea NOT NULL,  -- sha256 of the revoked row's refresh_token ciphertext
    revoked_at     timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (provider, session, refresh_digest)
);

CREATE INDEX token_tombstone_revoked_at_idx ON upstream_token.token_tombstone (revoked_at);

-- Provider metadata the engine fetched and checked for register_provider_from_issuer.
CREATE TABLE upstream_token.discovery (
    issuer     text PRIMARY KEY,
    document   jsonb NOT NULL,
    fetched_at timestamptz NOT NULL
);

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

-- Keep user data in pg_dump output.
SELECT pg_catalog.pg_extension_config_dump('upstream_token.provider', '');
SELECT pg_catalog.pg_extension_config_dump('upstream_token.token', '');
SELECT pg_catalog.pg_extension_config_dump('upstream_token.revocation', '');

REVOKE ALL ON upstream_token.provider, upstream_token.token, upstream_token.revocation,
              upstream_token.discovery, upstream_token.token_tombstone FROM PUBLIC;

CREATE FUNCTION upstream_token.planned_refresh_at(provider text, session text, generation bigint,
                                                  issued_at timestamptz, expires_at timestamptz,
                                                  threshold interval)
RETURNS timestamptz
LANGUAGE c IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'ut_planned_refresh_at';

COMMENT ON FUNCTION upstream_token.planned_refresh_at(text, text, bigint, timestamptz, timestamptz, interval) IS
    'When the engine refreshes this version of a token on its own: inside the threshold window (at most half the token''s lifetime), spread per token.';

CREATE FUNCTION upstream_token.keep_alive_at(provider text, session text, generation bigint,
                                             last_used timestamptz, idle_lifetime interval)
RETURNS timestamptz
LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'ut_keep_alive_at';

COMMENT ON FUNCTION upstream_token.keep_alive_at(text, text, bigint, timestamptz, interval) IS
    'When the engine refreshes this version of a token of a keep_alive provider so that its refresh token, last used at last_used, does not idle out: between 20% and 50% of the idle lifetime, spread per token.';

-- Per-token state with no secrets.
CREATE VIEW upstream_token.token_status AS
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

CREATE FUNCTION upstream_token.register_provider_from_issuer(
    name               text,
    issuer             text,
    client_id          text,
    client_secret      text DEFAULT NULL,
    auth_method        text DEFAULT NULL,
    scope              text DEFAULT NULL,
    refresh_threshold  interval DEFAULT NULL,
    refresh_token_ttl  interval DEFAULT NULL,
    default_lifetime   interval DEFAULT '1 hour',
    request_timeout    interval DEFAULT NULL,
    max_concurrent     integer DEFAULT NULL,
    assertion_alg      text DEFAULT NULL,
    assertion_kid      text DEFAULT NULL)
RETURNS void
LANGUAGE c VOLATILE SECURITY DEFINER
AS 'MODULE_PATHNAME', 'ut_register_provider_from_issuer';

COMMENT ON FUNCTION upstream_token.register_provider_from_issuer(text, text, text, text, text, text, interval, interval, interval, interval, integer, text, text) IS
    'Registers a provider from its OpenID Connect / RFC 8414 metadata, fetched by the engine: the document must name exactly this issuer; token and revocation endpoints come from it, and the client authentication from what it supports unless auth_method is given.';

CREATE FUNCTION upstream_token.drop_provider(name text, cascade boolean DEFAULT false,
                                             discard_revocations boolean DEFAULT false)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    n bigint;
BEGIN
    IF name IS NULL THEN
        RAISE EXCEPTION 'provider name must not be NULL' USING ERRCODE = '22004';
    END IF;
    -- Locks out concurrent revocations of this provider until the drop commits or fails.
    PERFORM 1 FROM upstream_token.provider p WHERE p.name = drop_provider.name FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'provider "%" does not exist', name USING ERRCODE = '42704';
    END IF;
    SELECT pg_catalog.count(*) INTO n FROM upstream_token.token t WHERE t.provider = drop_provider.name;
    IF n > 0 AND NOT coalesce(cascade, false) THEN
        RAISE EXCEPTION 'provider "%" still has % stored token(s)', name, n
            USING ERRCODE = '2BP01',
                  HINT = 'Delete them first, or call upstream_token.drop_provider(name, cascade => true).';
    END IF;
    SELECT pg_catalog.count(*) INTO n FROM upstream_token.revocation r WHERE r.provider = drop_provider.name;
    IF n > 0 AND NOT coalesce(discard_revocations, false) THEN
        RAISE EXCEPTION 'provider "%" has % revocation(s) not yet delivered', name, n
            USING ERRCODE = '55006',
                  DETAIL = 'revoke_upstream_token queued them; dropping the provider would forget them unsent.',
                  HINT = 'Wait until the engine has delivered them (upstream_token.revocation lists what is left), '
                         'or call upstream_token.drop_provider(name, ..., discard_revocations => true) to drop them unsent.';
    END IF;
    DELETE FROM upstream_token.revocation r WHERE r.provider = drop_provider.name;
    DELETE FROM upstream_token.token t WHERE t.provider = drop_provider.name;
    DELETE FROM upstream_token.provider p WHERE p.name = drop_provider.name;
END
$fn$;

COMMENT ON FUNCTION upstream_token.drop_provider(text, boolean, boolean) IS
    'Removes a provider without contacting it. Refuses (2BP01) while tokens exist unless cascade is true (they are deleted, not revoked), and (55006) while revocations queued by revoke_upstream_token are not yet delivered unless discard_revocations is true (they are dropped unsent).';

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

CREATE FUNCTION upstream_token.get_upstream_token(session text, provider text)
RETURNS text
LANGUAGE c VOLATILE SECURITY DEFINER
AS 'MODULE_PATHNAME', 'ut_get_upstream_token';

COMMENT ON FUNCTION upstream_token.get_upstream_token(text, text) IS
    'Returns a valid access token for the session, refreshed by the engine when it is due.';

CREATE FUNCTION upstream_token.delete_upstream_token(session text, provider text DEFAULT NULL)
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

CREATE FUNCTION upstream_token.get_upstream_credentials(session text)
RETURNS TABLE (provider text, access_token text, id_token text, expires_at timestamptz,
               sqlstate text, error text)
LANGUAGE c VOLATILE SECURITY DEFINER
AS 'MODULE_PATHNAME', 'ut_get_upstream_credentials';

COMMENT ON FUNCTION upstream_token.get_upstream_credentials(text) IS
    'One row per provider of the session with a valid access token and ID token, refreshed where needed; a provider that fails is flagged in its row (sqlstate, error) instead of failing the call.';

CREATE FUNCTION upstream_token.refresh_upstream_token(session text, provider text DEFAULT NULL)
RETURNS TABLE (provider_name text, refreshed boolean, expires_at timestamptz,
               sqlstate text, error text)
LANGUAGE c VOLATILE SECURITY DEFINER
AS 'MODULE_PATHNAME', 'ut_refresh_upstream_token';

COMMENT ON FUNCTION upstream_token.refresh_upstream_token(text, text) IS
    'Refreshes now (every provider of the session when provider is NULL) and reports the outcome per provider.';

-- The per-token lock (I1), as the engine holds it while refreshing: a lock tag no built-in
-- function makes, so only roles granted these functions can take it.
CREATE FUNCTION upstream_token.lock_token(provider text, session text)
RETURNS void
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'ut_lock_token';

COMMENT ON FUNCTION upstream_token.lock_token(text, text) IS
    'Waits for the lock the refresh engine holds while it refreshes (provider, session) and holds it until the transaction ends: a manual refresh done meanwhile cannot race the engine.';

CREATE FUNCTION upstream_token.try_lock_token(provider text, session text)
RETURNS boolean
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'ut_try_lock_token';

COMMENT ON FUNCTION upstream_token.try_lock_token(text, text) IS
    'Takes the lock of lock_token(provider, session) until the transaction ends if it is free, without waiting; returns whether it did.';

CREATE FUNCTION upstream_token.engine_stats(
    OUT worker_pid integer, OUT ready boolean, OUT worker_starts bigint,
    OUT queued integer, OUT in_flight integer, OUT requests bigint, OUT deduplicated bigint,
    OUT network_calls bigint, OUT refreshed bigint, OUT answered_without_call bigint,
    OUT failed_transient bigint, OUT failed_reauth bigint, OUT failed_client bigint,
    OUT invalid_binding bigint, OUT persist_retries bigint, OUT proactive_refreshes bigint,
    OUT planned integer, OUT next_scan_at timestamptz)
RETURNS SETOF record
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'ut_engine_status';

COMMENT ON FUNCTION upstream_token.engine_stats() IS
    'Refresh engine counters since server start (queued: requests not yet taken by the engine; in_flight: exchanges with providers under way); no row when the library is not preloaded.';

CREATE VIEW upstream_token.engine_status AS SELECT * FROM upstream_token.engine_stats();

COMMENT ON VIEW upstream_token.engine_status IS
    'The refresh engine: process, queue, and counters since server start. Contains no secret.';

CREATE FUNCTION upstream_token.provider_stats(
    OUT provider text, OUT in_flight integer, OUT refreshed bigint, OUT failed_transient bigint,
    OUT failed_reauth bigint, OUT failed_client bigint, OUT invalid_binding bigint,
    OUT latency_p50_ms double precision, OUT latency_p95_ms double precision,
    OUT latency_p99_ms double precision, OUT paused_until timestamptz)
RETURNS SETOF record
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'ut_provider_stats';

COMMENT ON FUNCTION upstream_token.provider_stats() IS
    'Per-provider refresh counters and token-endpoint latency percentiles since server start (latency from a log2 histogram: each value is the upper bound of its bucket).';

CREATE VIEW upstream_token.provider_status AS SELECT * FROM upstream_token.provider_stats();

COMMENT ON VIEW upstream_token.provider_status IS
    'The engine, per provider: in-flight refreshes, outcomes, latency percentiles, Retry-After pause. Contains no secret.';

CREATE FUNCTION upstream_token.wake_engine_at_commit()
RETURNS void
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'ut_wake_engine_at_commit';

COMMENT ON FUNCTION upstream_token.wake_engine_at_commit() IS
    'Internal: asks the refresh engine to look at the tables again when the current transaction commits.';

CREATE FUNCTION upstream_token.revoke_upstream_token(session text, provider text DEFAULT NULL)
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

CREATE FUNCTION upstream_token.current_key_id()
RETURNS text
LANGUAGE c VOLATILE SECURITY DEFINER
AS 'MODULE_PATHNAME', 'ut_current_key_id';

COMMENT ON FUNCTION upstream_token.current_key_id() IS
    'Hex id of the key new ciphertexts are written with (from upstream_token.key_file).';

CREATE VIEW upstream_token.key_usage AS
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

COMMENT ON VIEW upstream_token.key_usage IS
    'How many stored ciphertexts each key id sealed: after a rotation only current_key_id() remains.';

CREATE FUNCTION upstream_token.reencrypt_batch(batch_size integer DEFAULT 500)
RETURNS bigint
LANGUAGE c VOLATILE SECURITY DEFINER
AS 'MODULE_PATHNAME', 'ut_reencrypt_batch';

COMMENT ON FUNCTION upstream_token.reencrypt_batch(integer) IS
    'Re-seals up to batch_size rows of each table under the current key (skipping rows being refreshed or locked) and returns how many values still use another key.';

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
CREATE PROCEDURE upstream_token.rotate_key(batch_size integer DEFAULT 500)
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

-- Privileges: nothing to PUBLIC; application backends get the client role.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA upstream_token FROM PUBLIC;
REVOKE ALL ON ALL PROCEDURES IN SCHEMA upstream_token FROM PUBLIC;
GRANT USAGE ON SCHEMA upstream_token TO upstream_token_client;
GRANT EXECUTE ON FUNCTION
    upstream_token.store_upstream_token(text, text, text, text, integer, text, text, text, integer, jsonb),
    upstream_token.get_upstream_token(text, text),
    upstream_token.delete_upstream_token(text, text),
    upstream_token.get_upstream_credentials(text),
    upstream_token.refresh_upstream_token(text, text),
    upstream_token.revoke_upstream_token(text, text),
    upstream_token.lock_token(text, text),
    upstream_token.try_lock_token(text, text),
    upstream_token.engine_stats(),
    upstream_token.provider_stats(),
    upstream_token.planned_refresh_at(text, text, bigint, timestamptz, timestamptz, interval),
    upstream_token.keep_alive_at(text, text, bigint, timestamptz, interval),
    upstream_token.begin_login(text, text, text, text, jsonb),
    upstream_token.complete_login(text, text, text),
    upstream_token.begin_device_login(text, text, text),
    upstream_token.get_client_token(text, text, text),
    upstream_token.exchange_token(text, text, text, text)
    TO upstream_token_client;
GRANT SELECT ON upstream_token.token_status, upstream_token.engine_status,
                upstream_token.provider_status, upstream_token.login_status TO upstream_token_client;

-- Wake the engine when this CREATE EXTENSION commits: it starts serving at once.
SELECT upstream_token.wake_engine_at_commit();
