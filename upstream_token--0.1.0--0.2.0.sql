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
