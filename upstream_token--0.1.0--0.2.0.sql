-- upstream_token 0.1.0 -> 0.2.0. Each block below names the change it carries; together they
-- turn a 0.1.0 install into exactly what upstream_token--0.2.0.sql creates (a test compares).

\echo Use "ALTER EXTENSION upstream_token UPDATE TO '0.2.0'" to load this file. \quit

-- Token lock (issue 9, defect 6): refresh_lock_key's key was public and pg_advisory_lock is
-- granted to PUBLIC, so any role could stall refreshes. The engine now takes a lock tag no
-- built-in function makes; lock_token / try_lock_token are the granted way to take it.
DROP FUNCTION upstream_token.refresh_lock_key(text, text);

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

REVOKE ALL ON FUNCTION upstream_token.lock_token(text, text),
                       upstream_token.try_lock_token(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION upstream_token.lock_token(text, text),
                          upstream_token.try_lock_token(text, text) TO upstream_token_client;

-- Issue 9, orphan revocation, drop_provider and estimated refresh-token expiry:
--  * token.refresh_expiry_source: whether refresh_expires_at was stated (a cut-off) or
--    estimated (the engine refreshes past it). 0.1.0 did not record where an expiry came
--    from, so every existing one reads as an estimate (the safe reading: it never throws a
--    working refresh token away), and rows 0.1.0 marked 'expired' on such an expiry are active
--    again: the provider decides at their next refresh (invalid_grant -> reauth_required).
--  * token_tombstone: revoked rows, so that a refresh in flight during revoke_upstream_token
--    has the refresh token it received revoked, and one whose row a new login replaced or
--    delete_upstream_token deleted revokes nothing.
--  * revocation rows no longer vanish with their provider: drop_provider refuses while any is
--    pending unless discard_revocations => true.
ALTER TABLE upstream_token.token ADD COLUMN refresh_expiry_source text
    CHECK (refresh_expiry_source IN ('provider', 'application', 'estimate'));
UPDATE upstream_token.token SET refresh_expiry_source = 'estimate' WHERE refresh_expires_at IS NOT NULL;
UPDATE upstream_token.token SET status = 'active', last_error = NULL, updated_at = pg_catalog.now()
 WHERE status = 'expired' AND refresh_token IS NOT NULL;

ALTER TABLE upstream_token.revocation DROP CONSTRAINT revocation_provider_fkey,
    ADD CONSTRAINT revocation_provider_fkey FOREIGN KEY (provider) REFERENCES upstream_token.provider (name);

CREATE TABLE upstream_token.token_tombstone (
    provider       text NOT NULL REFERENCES upstream_token.provider (name) ON DELETE CASCADE,
    session        text NOT NULL,
    refresh_digest bytea NOT NULL,  -- sha256 of the revoked row's refresh_token ciphertext
    revoked_at     timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (provider, session, refresh_digest)
);

CREATE INDEX token_tombstone_revoked_at_idx ON upstream_token.token_tombstone (revoked_at);

REVOKE ALL ON upstream_token.token_tombstone FROM PUBLIC;

CREATE OR REPLACE VIEW upstream_token.token_status AS
SELECT t.session, t.provider, t.subject, t.status,
       t.expires_at, t.refresh_expires_at,
       (t.refresh_token IS NOT NULL) AS has_refresh_token,
       t.generation, t.failure_count, t.next_attempt_at, t.last_error,
       t.created_at, t.updated_at, t.refreshed_at,
       CASE WHEN t.status = 'active' AND t.refresh_token IS NOT NULL THEN
           GREATEST(
               upstream_token.planned_refresh_at(t.provider, t.session, t.generation, t.issued_at,
                   t.expires_at,
                   coalesce(p.refresh_threshold,
                            pg_catalog.current_setting('upstream_token.refresh_threshold')::interval)),
               t.next_attempt_at)
       END AS next_refresh_at,
       t.refresh_expiry_source
  FROM upstream_token.token t
  JOIN upstream_token.provider p ON p.name = t.provider;

COMMENT ON VIEW upstream_token.token_status IS
    'One row per stored token: status, expiry, next planned refresh, backoff and last error; refresh_expiry_source says whether refresh_expires_at was stated (provider, application: a cut-off) or estimated (estimate: the engine still refreshes past it). Contains no secret.';

DROP FUNCTION upstream_token.drop_provider(text, boolean);
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
REVOKE ALL ON FUNCTION upstream_token.drop_provider(text, boolean, boolean) FROM PUBLIC;

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
    'Deletes the session''s tokens (one provider, or all) and, after commit, revokes the refresh token at providers with a revocation endpoint (RFC 7009), retrying until delivered; a refresh token a refresh in flight brings back is revoked too. Returns the number of tokens removed.';

COMMENT ON FUNCTION upstream_token.delete_upstream_token(text, text) IS
    'Deletes the stored tokens of a session (one provider, or all when provider is NULL); returns the count. Does not contact the provider: a refresh token a refresh in flight brings back is dropped, not revoked.';

COMMENT ON FUNCTION upstream_token.store_upstream_token(text, text, text, text, integer, text, text, text, integer) IS
    'Saves (inserts or replaces) the tokens of a session after the application''s own login. A refresh_expires_in given here is a cut-off for the refresh token; without one its lifetime is an estimate the engine refreshes past (token_status.refresh_expiry_source).';

-- Security (issue 9, defect 1): rotate_key runs on its caller's search_path (a procedure that
-- commits can have no SET clause), so its operators are written with their schema.
CREATE OR REPLACE PROCEDURE upstream_token.rotate_key(batch_size integer DEFAULT 500)
LANGUAGE plpgsql
AS $fn$
DECLARE
    left_now  bigint;
    left_before bigint := NULL;
    idle integer := 0;
BEGIN
    LOOP
        left_now := upstream_token.reencrypt_batch(batch_size);
        EXIT WHEN left_now OPERATOR(pg_catalog.=) 0::bigint;
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
