-- Proves the error paths of get_upstream_token that need no identity provider:
-- UT001 unknown session, 42704 unknown provider, UT002 expired without refresh token,
-- UT003 refresh_failed against a provider nobody listens on (fast, recorded on the row with
-- a backoff and no secret, no new network call inside the backoff window), I6 (a due but
-- still valid token is served with a WARNING when the refresh fails), UT004 / UT005 from the
-- row's status, and UT012 for a token changed by the caller's own open transaction.
--
-- The engine also refreshes due tokens on its own (proactively), racing with the calls here.
-- The assertions hold in every order: a failed refresh is attempted exactly once whoever
-- starts it, and the row's state is captured in the same statement as the call that reports
-- it, before the first backoff (at least 0.5 s) can end.
\set VERBOSITY terse

\i sql/try.psql

-- The engine counters that tell whether a request reached the engine or the network.
CREATE FUNCTION pg_temp.calls() RETURNS TABLE (requests bigint, network_calls bigint)
LANGUAGE sql AS $$
    SELECT requests, network_calls FROM upstream_token.engine_status
$$;

-- Calls get once and, in the same statement, reads the row's failure state and then moves
-- its next attempt an hour ahead, so no retry (by a caller or by the engine's own plan) can
-- reach the network while the test looks. Returns the outcome, never the token.
CREATE FUNCTION pg_temp.get_and_hold(s text, p text, expected_token text)
RETURNS TABLE (outcome text, failure_count integer, backoff_scheduled boolean,
               last_error_class text, last_error_has_no_secret boolean)
LANGUAGE plpgsql AS $$
DECLARE
    got text;
BEGIN
    BEGIN
        got := upstream_token.get_upstream_token(s, p);
        outcome := CASE WHEN got = expected_token THEN 'the stored token' ELSE 'a different token' END;
    EXCEPTION WHEN OTHERS THEN
        outcome := SQLSTATE || ': ' || SQLERRM;
    END;
    SELECT t.failure_count, t.next_attempt_at > t.updated_at, split_part(t.last_error, ':', 1),
           position(expected_token IN coalesce(t.last_error, '')) = 0
           AND position('client-secret' IN coalesce(t.last_error, '')) = 0
           AND position('refresh-' IN coalesce(t.last_error, '')) = 0
      INTO failure_count, backoff_scheduled, last_error_class, last_error_has_no_secret
      FROM upstream_token.token t WHERE t.session = s AND t.provider = p;
    UPDATE upstream_token.token t SET next_attempt_at = now() + interval '1 hour'
     WHERE t.session = s AND t.provider = p;
    RETURN NEXT;
END
$$;

-- The engine must be up before refreshes are asked for (00_extension waited for it).
SELECT ready FROM upstream_token.engine_status;
-- A failing refresh must answer before the caller's wait runs out: with a 10 s wait, a UT003
-- (rather than UT007 wait_timeout) proves the answer came quickly.
SET upstream_token.wait_timeout = '10s';

-- Port 1 on loopback: connection refused at once, no DNS, no waiting.
SELECT upstream_token.register_provider('unreachable', 'https://127.0.0.1:1/token',
                                        'u-client', 'u-client-secret');
SELECT upstream_token.register_provider('unreachable_1h', 'https://127.0.0.1:1/token',
                                        'u-client', 'u-client-secret',
                                        refresh_threshold => '1 hour');

-- 1. Unknown session, unknown provider (get, store, drop_provider).
SELECT pg_temp.try($$SELECT upstream_token.get_upstream_token('nobody', 'unreachable')$$);
SELECT pg_temp.try($$SELECT upstream_token.get_upstream_token('nobody', 'no-such-provider')$$);
SELECT pg_temp.try($$SELECT upstream_token.store_upstream_token('s', 'no-such-provider', 'a', 'r', 60)$$);
SELECT pg_temp.try($$SELECT upstream_token.drop_provider('no-such-provider')$$);
SELECT count(*) AS tokens FROM upstream_token.token;

-- 2. UT002: expired, and no refresh token to get a new one with. No request reaches the engine.
SELECT * FROM pg_temp.calls() \gset before_
SELECT upstream_token.store_upstream_token('s-norefresh', 'unreachable', 'nr-access', NULL, 0);
SELECT pg_temp.try($$SELECT upstream_token.get_upstream_token('s-norefresh', 'unreachable')$$);
-- Due but still valid without a refresh token: served as it is, silently, no request.
SELECT upstream_token.store_upstream_token('s-norefresh-due', 'unreachable_1h', 'nrd-access', NULL, 600);
SELECT upstream_token.get_upstream_token('s-norefresh-due', 'unreachable_1h') = 'nrd-access' AS served;
SELECT requests - :before_requests AS new_requests,
       network_calls - :before_network_calls AS new_network_calls
  FROM pg_temp.calls();

-- 3. UT003: expired, refresh token present, provider unreachable. One network call in all,
-- one failure on the row with a backoff after it, and a last_error naming the class
-- ("transient") without any secret. The token itself is kept.
SELECT * FROM pg_temp.calls() \gset before_
SELECT upstream_token.store_upstream_token('s-dead', 'unreachable', 'dead-access', 'refresh-dead', 0);
SELECT outcome ~ '^UT003: ' AS refresh_failed, failure_count, backoff_scheduled,
       last_error_class, last_error_has_no_secret
  FROM pg_temp.get_and_hold('s-dead', 'unreachable', 'dead-access');
SELECT network_calls - :before_network_calls AS new_network_calls FROM pg_temp.calls();
SELECT status, has_refresh_token, generation, last_error LIKE 'transient: transport%' AS transport_error
  FROM upstream_token.token_status WHERE session = 's-dead';
-- Inside the backoff window: UT003 again at once, without a network call, nothing recorded.
SELECT * FROM pg_temp.calls() \gset before_
SELECT pg_temp.try($$SELECT upstream_token.get_upstream_token('s-dead', 'unreachable')$$);
SELECT requests - :before_requests AS new_requests,
       network_calls - :before_network_calls AS new_network_calls
  FROM pg_temp.calls();
SELECT failure_count FROM upstream_token.token_status WHERE session = 's-dead';

-- 4. I6: due (600 s left, threshold 1 hour) but valid; the refresh fails; the caller still
-- gets the stored token, with a WARNING, and the failure is recorded.
SELECT * FROM pg_temp.calls() \gset before_
SELECT upstream_token.store_upstream_token('s-due', 'unreachable_1h', 'due-access', 'refresh-due', 600);
SELECT outcome, failure_count, backoff_scheduled, last_error_class, last_error_has_no_secret
  FROM pg_temp.get_and_hold('s-due', 'unreachable_1h', 'due-access');
SELECT network_calls - :before_network_calls AS new_network_calls FROM pg_temp.calls();
-- Inside the backoff window: served again with a WARNING, without a network call.
SELECT * FROM pg_temp.calls() \gset before_
SELECT upstream_token.get_upstream_token('s-due', 'unreachable_1h') = 'due-access' AS still_valid_token;
SELECT network_calls - :before_network_calls AS new_network_calls FROM pg_temp.calls();
SELECT status, failure_count FROM upstream_token.token_status WHERE session = 's-due';

-- 5. UT004 from the row's status. The rows are stored fresh and then changed in one UPDATE,
-- as the engine would after invalid_grant, so no refresh can start in between.
-- Expired + reauth_required is an error; due but valid is served with a WARNING; fresh is
-- served. None of them asks the engine.
SELECT count(*) AS stored FROM (
    SELECT upstream_token.store_upstream_token(s, 'unreachable', s || '-access', 'refresh-' || s, 3600)
      FROM unnest(ARRAY['s-reauth', 's-reauth-due', 's-reauth-fresh', 's-expired', 's-expired-due']) AS s) AS x;
UPDATE upstream_token.token
   SET status = CASE WHEN session LIKE 's-reauth%' THEN 'reauth_required' ELSE 'expired' END,
       expires_at = CASE WHEN session LIKE '%-due' THEN now() + interval '60 s'  -- within 300 s
                         WHEN session LIKE '%-fresh' THEN expires_at
                         ELSE now() - interval '1 s' END
 WHERE provider = 'unreachable' AND (session LIKE 's-reauth%' OR session LIKE 's-expired%');
SELECT * FROM pg_temp.calls() \gset before_
SELECT pg_temp.try($$SELECT upstream_token.get_upstream_token('s-reauth', 'unreachable')$$);
SELECT upstream_token.get_upstream_token('s-reauth-due', 'unreachable') = 's-reauth-due-access' AS served_with_warning;
SELECT upstream_token.get_upstream_token('s-reauth-fresh', 'unreachable') = 's-reauth-fresh-access' AS served;
-- Status expired (the refresh token reached the end of its life) is a sign-in case too.
SELECT pg_temp.try($$SELECT upstream_token.get_upstream_token('s-expired', 'unreachable')$$);
SELECT upstream_token.get_upstream_token('s-expired-due', 'unreachable') = 's-expired-due-access' AS served_with_warning;
SELECT requests - :before_requests AS new_requests FROM pg_temp.calls();

-- 6. UT005: invalid_binding is never served, not even while valid.
SELECT upstream_token.store_upstream_token('s-binding', 'unreachable', 'ib-access', 'refresh-ib', 3600);
UPDATE upstream_token.token SET status = 'invalid_binding', last_error = 'invalid_binding: claim sub differs'
 WHERE session = 's-binding';
SELECT pg_temp.try($$SELECT upstream_token.get_upstream_token('s-binding', 'unreachable')$$);
UPDATE upstream_token.token SET expires_at = now() - interval '1 s' WHERE session = 's-binding';
SELECT pg_temp.try($$SELECT upstream_token.get_upstream_token('s-binding', 'unreachable')$$);

-- 7. UT012: the caller's own uncommitted store needs a refresh the engine cannot see.
SELECT * FROM pg_temp.calls() \gset before_
BEGIN;
SELECT upstream_token.store_upstream_token('s-open', 'unreachable', 'open-access', 'refresh-open', 0);
SELECT pg_temp.try($$SELECT upstream_token.get_upstream_token('s-open', 'unreachable')$$);
-- Due but valid (and close to expiry) in the same open transaction: served, with a WARNING.
SELECT upstream_token.store_upstream_token('s-open-due', 'unreachable_1h', 'opend-access', 'refresh-opend', 600);
SELECT upstream_token.get_upstream_token('s-open-due', 'unreachable_1h') = 'opend-access' AS served_with_warning;
-- A fresh one is served without any of that.
SELECT upstream_token.store_upstream_token('s-open-fresh', 'unreachable', 'openf-access', 'refresh-openf', 3600);
SELECT upstream_token.get_upstream_token('s-open-fresh', 'unreachable') = 'openf-access' AS served;
ROLLBACK;
SELECT requests - :before_requests AS new_requests FROM pg_temp.calls();
SELECT count(*) AS rolled_back_rows FROM upstream_token.token WHERE session LIKE 's-open%';

-- An updated (not inserted) row in the caller's transaction counts too.
BEGIN;
SELECT upstream_token.store_upstream_token('s-binding', 'unreachable', 'ib-access-2', 'refresh-ib-2', 0);
SELECT pg_temp.try($$SELECT upstream_token.get_upstream_token('s-binding', 'unreachable')$$);
ROLLBACK;

-- Leave nothing behind for later files (and nothing for the engine to retry).
SELECT upstream_token.drop_provider('unreachable', cascade => true);
SELECT upstream_token.drop_provider('unreachable_1h', cascade => true);
