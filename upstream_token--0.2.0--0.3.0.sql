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
    ADD CHECK (NOT keep_alive OR refresh_token_idle_ttl IS NOT NULL);

ALTER TABLE upstream_token.token
    ADD COLUMN attributes jsonb CHECK (pg_catalog.jsonb_typeof(attributes) = 'object'),
    ADD COLUMN refresh_expires_stated_at timestamptz;

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
    response_fields        text[] DEFAULT NULL)
RETURNS void
LANGUAGE c VOLATILE SECURITY DEFINER
AS 'MODULE_PATHNAME', 'ut_register_provider';

COMMENT ON FUNCTION upstream_token.register_provider(text, text, text, text, text, text, text, text, interval, interval, interval, interval, integer, text, text, text, jsonb, jsonb, interval, boolean, text[]) IS
    'Creates or updates an OAuth provider. The client secret (for private_key_jwt: the PEM private key) is stored encrypted. A preset (see provider_presets) fills endpoints, client authentication, refresh parameters and refresh-token lifetimes; every argument given overrides it. auth_method defaults to client_secret_basic and default_lifetime to 1 hour without a preset.';

-- The presets register_provider knows, as the library holds them.
CREATE FUNCTION upstream_token.preset_list(
    OUT name text, OUT title text, OUT parameters text[], OUT token_endpoint text,
    OUT revocation_endpoint text, OUT issuer text, OUT auth_method text,
    OUT scope_separator text, OUT refresh_params text[], OUT rotation text,
    OUT refresh_token_idle_ttl interval, OUT refresh_token_ttl interval,
    OUT default_lifetime interval, OUT keep_alive boolean, OUT quirks text[],
    OUT documentation text, OUT response_fields text[])
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
    interval, interval, interval, interval, integer, text, text, text, jsonb, jsonb, interval, boolean, text[]),
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
       CASE WHEN t.status = 'active' AND t.refresh_token IS NOT NULL THEN
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
       t.attributes
  FROM upstream_token.token t
  JOIN upstream_token.provider p ON p.name = t.provider;

COMMENT ON VIEW upstream_token.token_status IS
    'One row per stored token: status, expiry, next planned refresh, backoff and last error; refresh_expiry_source says whether refresh_expires_at was stated (provider, application: a cut-off) or estimated (estimate: the engine still refreshes past it); attributes holds the provider''s response_fields (such as Salesforce''s instance_url) from its latest answer. Contains no secret.';

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
