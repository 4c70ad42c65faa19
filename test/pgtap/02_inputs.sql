-- Proves: NULL, empty, oversized and malformed arguments are refused with 22004 / 22023 (or
-- 42704 for an unknown provider, UT013 for a login state never issued) by every function,
-- and a refused call changes nothing that is stored (a digest of every provider, token and
-- login row is compared after each one). Nothing here needs a provider on the network: the
-- login and grant functions refuse their arguments before the engine is asked anything.
\set QUIET 1
\set ON_ERROR_STOP 1
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS upstream_token;

BEGIN;
SELECT plan(339);

-- A digest of every stored provider, token and login row, ciphertexts and timestamps
-- included, so a refused call can be shown to have changed nothing (a refused begin_login
-- left no pending login behind).
CREATE FUNCTION pg_temp.fingerprint() RETURNS text LANGUAGE sql AS $$
    SELECT md5(coalesce((SELECT string_agg(p::text, '|' ORDER BY p.name) FROM upstream_token.provider p), '')
               || '#' ||
               coalesce((SELECT string_agg(t::text, '|' ORDER BY t.session, t.provider) FROM upstream_token.token t), '')
               || '#' ||
               coalesce((SELECT string_agg(l::text, '|' ORDER BY l.id) FROM upstream_token.login l), ''))
$$;

-- Asserts that a statement fails with the given SQLSTATE and leaves every stored row as it was.
CREATE FUNCTION pg_temp.rejects(stmt text, code text, description text) RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    before text := pg_temp.fingerprint();
BEGIN
    RETURN NEXT throws_ok(stmt, code::char(5), NULL, description);
    RETURN NEXT is(pg_temp.fingerprint(), before, description || ': nothing stored changed');
END
$$;

-- base64url without padding, to build ID tokens in SQL.
CREATE FUNCTION pg_temp.b64url(t text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT rtrim(translate(encode(convert_to(t, 'UTF8'), 'base64'), E'+/\n', '-_'), '=')
$$;

-- An unsigned compact JWS whose payload is the given text (valid JSON or not).
CREATE FUNCTION pg_temp.jwt(payload text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT pg_temp.b64url('{"alg":"none"}') || '.' || pg_temp.b64url(payload) || '.'
$$;

SELECT upstream_token.register_provider('inp', 'https://inp.example/token', 'inp-client', 'inp-secret');
SELECT upstream_token.store_upstream_token('i-1', 'inp', 'i1-access', 'i1-refresh', 3600, subject => 'user-i1');

-- store_upstream_token: session.
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.store_upstream_token(NULL, 'inp', 'a', 'r', 60)$$,
                              '22004', 'store: NULL session');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.store_upstream_token('', 'inp', 'a', 'r', 60)$$,
                              '22023', 'store: empty session');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.store_upstream_token(repeat('s', 513), 'inp', 'a', 'r', 60)$$,
                              '22023', 'store: session of 513 bytes');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.store_upstream_token(repeat('é', 257), 'inp', 'a', 'r', 60)$$,
                              '22023', 'store: session of 257 characters but 514 bytes');
-- store_upstream_token: provider.
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.store_upstream_token('i-1', NULL, 'a', 'r', 60)$$,
                              '22004', 'store: NULL provider');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.store_upstream_token('i-1', '', 'a', 'r', 60)$$,
                              '22023', 'store: empty provider');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.store_upstream_token('i-1', 'no-such-provider', 'a', 'r', 60)$$,
                              '42704', 'store: unknown provider');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.store_upstream_token('i-1', 'INP', 'a', 'r', 60)$$,
                              '42704', 'store: provider names are case-sensitive');
-- store_upstream_token: tokens and lifetimes.
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.store_upstream_token('i-1', 'inp', NULL, NULL, 60)$$,
                              '22023', 'store: neither an access nor a refresh token');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.store_upstream_token('i-1', 'inp', '', '', 60)$$,
                              '22023', 'store: empty access and refresh tokens');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.store_upstream_token('i-1', 'inp', 'a', 'r', -1)$$,
                              '22023', 'store: negative expires_in');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.store_upstream_token('i-1', 'inp', 'a', 'r', -2147483648)$$,
                              '22023', 'store: most negative expires_in');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.store_upstream_token('i-1', 'inp', 'a', 'r', 60, refresh_expires_in => -1)$$,
                              '22023', 'store: negative refresh_expires_in');
-- store_upstream_token: malformed ID tokens.
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.store_upstream_token('i-1', 'inp', 'a', 'r', 60, id_token => 'not-a-jwt')$$,
                              '22023', 'store: id_token that is not a JWT');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.store_upstream_token('i-1', 'inp', 'a', 'r', 60, id_token => 'a.b')$$,
                              '22023', 'store: id_token with two parts');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.store_upstream_token('i-1', 'inp', 'a', 'r', 60, id_token => 'a.b.c.d.e')$$,
                              '22023', 'store: encrypted id_token (JWE, five parts)');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.store_upstream_token('i-1', 'inp', 'a', 'r', 60, id_token => 'eyJhbGciOiJub25lIn0..')$$,
                              '22023', 'store: id_token with an empty payload');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.store_upstream_token('i-1', 'inp', 'a', 'r', 60, id_token => 'eyJhbGciOiJub25lIn0.e30+.')$$,
                              '22023', 'store: id_token payload outside the base64url alphabet');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.store_upstream_token('i-1', 'inp', 'a', 'r', 60, id_token => pg_temp.jwt('not json'))$$,
                              '22023', 'store: id_token payload that is not JSON');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.store_upstream_token('i-1', 'inp', 'a', 'r', 60, id_token => pg_temp.jwt('["iss","sub"]'))$$,
                              '22023', 'store: id_token payload that is not an object');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.store_upstream_token('i-1', 'inp', 'a', 'r', 60, id_token => pg_temp.jwt('{"iss":"https://i","aud":"c"}'))$$,
                              '22023', 'store: id_token without sub');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.store_upstream_token('i-1', 'inp', 'a', 'r', 60, id_token => pg_temp.jwt('{"iss":"https://i","sub":"","aud":"c"}'))$$,
                              '22023', 'store: id_token with an empty sub');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.store_upstream_token('i-1', 'inp', 'a', 'r', 60, id_token => pg_temp.jwt('{"iss":"https://i","sub":42,"aud":"c"}'))$$,
                              '22023', 'store: id_token with a numeric sub');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.store_upstream_token('i-1', 'inp', 'a', 'r', 60, id_token => pg_temp.jwt('{"sub":"u","aud":"c"}'))$$,
                              '22023', 'store: id_token without iss');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.store_upstream_token('i-1', 'inp', 'a', 'r', 60, id_token => pg_temp.jwt('{"iss":"https://i","sub":"u"}'))$$,
                              '22023', 'store: id_token without aud');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.store_upstream_token('i-1', 'inp', 'a', 'r', 60, id_token => pg_temp.jwt('{"iss":"https://i","sub":"u","aud":[]}'))$$,
                              '22023', 'store: id_token with an empty aud array');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.store_upstream_token('i-1', 'inp', 'a', 'r', 60, id_token => pg_temp.jwt('{"iss":"https://i","sub":"u","aud":7}'))$$,
                              '22023', 'store: id_token with a numeric aud');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.store_upstream_token('i-1', 'inp', 'a', 'r', 60, id_token => pg_temp.jwt('{"iss":"https://i","sub":"u","aud":"c","auth_time":"yesterday"}'))$$,
                              '22023', 'store: id_token with a non-numeric auth_time');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.store_upstream_token('i-1', 'inp', 'a', 'r', 60, id_token => pg_temp.jwt('{"iss":"https://i","sub":"u","aud":"c"}'), subject => 'v')$$,
                              '22023', 'store: subject differs from the id_token sub');
-- The boundaries that are accepted.
SELECT lives_ok($$SELECT upstream_token.store_upstream_token(repeat('s', 512), 'inp', 'a', 'r', 60)$$,
                'store: a session of exactly 512 bytes is accepted');
SELECT lives_ok($$SELECT upstream_token.store_upstream_token(repeat('é', 256), 'inp', 'a', 'r', 60)$$,
                'store: 256 two-byte characters (512 bytes) are accepted');
SELECT lives_ok($$SELECT upstream_token.store_upstream_token('i-0', 'inp', 'a', NULL, 0, refresh_expires_in => 0)$$,
                'store: expires_in 0 and refresh_expires_in 0 are accepted');
SELECT lives_ok($$SELECT upstream_token.store_upstream_token('i-2', 'inp', 'a', 'r', 2147483647, refresh_expires_in => 2147483647)$$,
                'store: the largest expires_in is accepted (clamped, no overflow)');
SELECT ok((SELECT expires_at > now() + interval '60 years' FROM upstream_token.token_status WHERE session = 'i-2'),
          'store: a huge expires_in lands far in the future, not in the past');
SELECT is((SELECT subject FROM upstream_token.token_status WHERE session = 'i-1'), 'user-i1',
          'store: the row refused above keeps its subject');
SELECT is((SELECT generation FROM upstream_token.token_status WHERE session = 'i-1'), 1::bigint,
          'store: the row refused above keeps its generation');

-- get_upstream_token.
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.get_upstream_token(NULL, 'inp')$$, '22004', 'get: NULL session');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.get_upstream_token('', 'inp')$$, '22023', 'get: empty session');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.get_upstream_token('i-1', NULL)$$, '22004', 'get: NULL provider');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.get_upstream_token('i-1', '')$$, '22023', 'get: empty provider');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.get_upstream_token('i-1', 'no-such-provider')$$, '42704', 'get: unknown provider');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.get_upstream_token('no-such-session', 'inp')$$, 'UT001', 'get: unknown session');

-- delete_upstream_token and drop_provider.
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.delete_upstream_token(NULL)$$, '22004', 'delete: NULL session');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.delete_upstream_token(NULL, 'inp')$$, '22004', 'delete: NULL session with a provider');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.drop_provider(NULL)$$, '22004', 'drop_provider: NULL name');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.drop_provider('no-such-provider')$$, '42704', 'drop_provider: unknown provider');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.drop_provider('inp')$$, '2BP01', 'drop_provider: tokens exist');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.drop_provider('inp', NULL)$$, '2BP01', 'drop_provider: cascade NULL counts as false');

-- register_provider: names. Re-registering 'inp' with a bad argument must leave it as it is.
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.register_provider(NULL, 'https://x.example/t', 'c', 's')$$, '22004', 'register: NULL name');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.register_provider('', 'https://x.example/t', 'c', 's')$$, '22023', 'register: empty name');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.register_provider('has space', 'https://x.example/t', 'c', 's')$$, '22023', 'register: name with a space');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.register_provider(' inp', 'https://x.example/t', 'c', 's')$$, '22023', 'register: name with a leading space');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.register_provider(repeat('n', 64), 'https://x.example/t', 'c', 's')$$, '22023', 'register: name of 64 characters');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.register_provider('ünï', 'https://x.example/t', 'c', 's')$$, '22023', 'register: non-ASCII name');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.register_provider('a/b', 'https://x.example/t', 'c', 's')$$, '22023', 'register: name with a slash');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.register_provider(E'a\nb', 'https://x.example/t', 'c', 's')$$, '22023', 'register: name with a newline');
-- register_provider: token endpoint.
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.register_provider('inp', NULL, 'c', 's')$$, '22004', 'register: NULL token_endpoint');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.register_provider('inp', '', 'c', 's')$$, '22023', 'register: empty token_endpoint');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.register_provider('inp', 'http://inp.example/token', 'c', 's')$$, '22023', 'register: http:// without allow_insecure_http');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.register_provider('inp', 'ftp://inp.example/token', 'c', 's')$$, '22023', 'register: ftp:// endpoint');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.register_provider('inp', 'javascript:alert(1)', 'c', 's')$$, '22023', 'register: javascript: endpoint');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.register_provider('inp', 'file:///etc/passwd', 'c', 's')$$, '22023', 'register: file: endpoint');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.register_provider('inp', 'inp.example/token', 'c', 's')$$, '22023', 'register: endpoint without a scheme');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.register_provider('inp', 'https://user:pw@inp.example/token', 'c', 's')$$, '22023', 'register: endpoint with userinfo');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.register_provider('inp', 'https://inp.example@evil.example/token', 'c', 's')$$, '22023', 'register: endpoint with a bare userinfo');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.register_provider('inp', 'https://inp.example/token#frag', 'c', 's')$$, '22023', 'register: endpoint with a fragment');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.register_provider('inp', 'https://', 'c', 's')$$, '22023', 'register: endpoint without a host');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.register_provider('inp', 'https://inp example/token', 'c', 's')$$, '22023', 'register: endpoint with a space');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.register_provider('inp', 'https://inp.example:99999/token', 'c', 's')$$, '22023', 'register: endpoint with a port out of range');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.register_provider('inp', 'https://inp.example/token', 'c', 's', revocation_endpoint => 'http://inp.example/revoke')$$, '22023', 'register: http:// revocation_endpoint');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.register_provider('inp', 'https://inp.example/token', 'c', 's', revocation_endpoint => 'https://u@inp.example/revoke')$$, '22023', 'register: revocation_endpoint with userinfo');
-- register_provider: client and authentication.
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.register_provider('inp', 'https://inp.example/token', NULL, 's')$$, '22004', 'register: NULL client_id');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.register_provider('inp', 'https://inp.example/token', '', 's')$$, '22023', 'register: empty client_id');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.register_provider('inp', 'https://inp.example/token', 'c', 's', 'private_key_jwt')$$, '22023', 'register: unknown auth_method');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.register_provider('inp', 'https://inp.example/token', 'c', 's', 'Client_Secret_Basic')$$, '22023', 'register: auth_method is case-sensitive');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.register_provider('inp', NULL, 'c', 's')$$, '22004', 'register: NULL token_endpoint without a preset');
-- register_provider: presets and the settings they bring.
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.register_provider('inp', preset => 'githbu', client_id => 'c', client_secret => 's')$$, '22023', 'register: unknown preset');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.register_provider('inp', preset => 'entra', client_id => 'c', client_secret => 's')$$, '22023', 'register: preset without its required parameter');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.register_provider('inp', preset => 'entra', preset_params => '{"tenant": "a/../b"}', client_id => 'c', client_secret => 's')$$, '22023', 'register: preset parameter that would change the URL''s path');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.register_provider('inp', preset => 'okta', preset_params => '{"domain": "evil.example/x?"}', client_id => 'c', client_secret => 's')$$, '22023', 'register: preset host with a path and a query');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.register_provider('inp', preset => 'github', preset_params => '{"tenant": "t"}', client_id => 'c', client_secret => 's')$$, '22023', 'register: a parameter the preset does not take');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.register_provider('inp', preset => 'github', preset_params => '{"base_url": 1}', client_id => 'c', client_secret => 's')$$, '22023', 'register: preset_params that are not strings');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.register_provider('inp', 'https://inp.example/token', 'c', 's', preset_params => '{}')$$, '22023', 'register: preset_params without a preset');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.register_provider('inp', 'https://inp.example/token', 'c', 's', refresh_params => '{"refresh_token": "x"}')$$, '22023', 'register: refresh_params overriding the refresh token');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.register_provider('inp', 'https://inp.example/token', 'c', 's', refresh_params => '["redirect_uri"]')$$, '22023', 'register: refresh_params not an object');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.register_provider('inp', 'https://inp.example/token', 'c', 's', keep_alive => true)$$, '22023', 'register: keep_alive without an idle lifetime');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.register_provider('inp', 'https://inp.example/token', 'c', 's', refresh_token_idle_ttl => '-1 day')$$, '22023', 'register: negative refresh_token_idle_ttl');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.register_provider('inp', 'https://inp.example/token', 'c', 's', refresh_token_idle_ttl => '0')$$, '22023', 'register: zero refresh_token_idle_ttl');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.register_provider('inp', 'https://inp.example/token', 'c', 's', response_fields => ARRAY['refresh_token'])$$, '22023', 'register: response_fields keeping a token');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.register_provider('inp', 'https://inp.example/token', 'c', 's', response_fields => ARRAY['a b'])$$, '22023', 'register: response_fields with an odd name');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.register_provider('inp', 'https://inp.example/token', 'c', 's', response_fields => ARRAY[NULL::text])$$, '22004', 'register: response_fields holding NULL');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.store_upstream_token('i-1', 'inp', 'a', 'r', 60, attributes => '["x"]')$$, '22023', 'store: attributes not an object');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.store_upstream_token('i-1', 'inp', 'a', 'r', 60, attributes => '{"n": {"nested": 1}}')$$, '22023', 'store: attributes with a non-string value');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.store_upstream_token('i-1', 'inp', 'a', 'r', 60, attributes => '{"access_token": "secret"}')$$, '22023', 'store: attributes naming a field the provider does not keep');
SELECT lives_ok($$SELECT upstream_token.register_provider('pre', preset => 'okta_custom', preset_params => '{"domain": "acme.okta.com"}', client_id => 'c', client_secret => 's', revocation_endpoint => 'https://acme.okta.com/other/revoke')$$,
                'register: a preset with an explicit argument');
SELECT is((SELECT concat_ws(' ', token_endpoint, revocation_endpoint, issuer, auth_method, preset, refresh_token_idle_ttl::text, keep_alive::text)
             FROM upstream_token.provider WHERE name = 'pre'),
          'https://acme.okta.com/oauth2/default/v1/token https://acme.okta.com/other/revoke https://acme.okta.com/oauth2/default client_secret_basic okta_custom 7 days true',
          'register: the preset fills what was not given, the explicit argument wins');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.register_provider('inp', 'https://inp.example/token', 'c', 's', 'none')$$, '22023', 'register: a secret for auth_method none');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.register_provider('inp', 'https://inp.example/token', 'c', NULL)$$, '22023', 'register: client_secret_basic without a secret');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.register_provider('inp', 'https://inp.example/token', 'c', '')$$, '22023', 'register: client_secret_basic with an empty secret');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.register_provider('inp', 'https://inp.example/token', 'c', NULL, 'client_secret_post')$$, '22023', 'register: client_secret_post without a secret');
-- register_provider: intervals and limits.
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.register_provider('inp', 'https://inp.example/token', 'c', 's', refresh_threshold => '-1 second')$$, '22023', 'register: negative refresh_threshold');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.register_provider('inp', 'https://inp.example/token', 'c', 's', refresh_token_ttl => '-1 day')$$, '22023', 'register: negative refresh_token_ttl');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.register_provider('inp', 'https://inp.example/token', 'c', 's', default_lifetime => '-1 hour')$$, '22023', 'register: negative default_lifetime');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.register_provider('inp', 'https://inp.example/token', 'c', 's', request_timeout => '-5 seconds')$$, '22023', 'register: negative request_timeout');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.register_provider('inp', 'https://inp.example/token', 'c', 's', refresh_token_ttl => '-1 mon')$$, '22023', 'register: negative months in refresh_token_ttl');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.register_provider('inp', 'https://inp.example/token', 'c', 's', max_concurrent => 0)$$, '22023', 'register: max_concurrent 0');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.register_provider('inp', 'https://inp.example/token', 'c', 's', max_concurrent => -1)$$, '22023', 'register: negative max_concurrent');
SELECT is((SELECT token_endpoint || ' ' || client_id || ' ' || auth_method FROM upstream_token.provider WHERE name = 'inp'),
          'https://inp.example/token inp-client client_secret_basic',
          'register: the provider refused above is unchanged');

-- http:// is accepted once a superuser allows it, and only then.
SET LOCAL upstream_token.allow_insecure_http = on;
SELECT lives_ok($$SELECT upstream_token.register_provider('plain', 'http://127.0.0.1:8080/token', 'c', 's')$$,
                'register: http:// endpoint accepted with allow_insecure_http on');
SELECT is((SELECT token_endpoint FROM upstream_token.provider WHERE name = 'plain'), 'http://127.0.0.1:8080/token',
          'register: the http:// endpoint is stored as given');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.register_provider('plain2', 'ftp://127.0.0.1/token', 'c', 's')$$, '22023', 'register: ftp:// stays refused with allow_insecure_http on');
SET LOCAL upstream_token.allow_insecure_http = off;
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.register_provider('plain', 'http://127.0.0.1:8080/token', 'c', 's')$$, '22023', 'register: http:// refused again with allow_insecure_http off');

-- Accepted edge cases.
SELECT lives_ok($$SELECT upstream_token.register_provider('edge', 'HTTPS://Edge.Example:443/o/token?x=1', 'c', 's',
                  refresh_threshold => '0', default_lifetime => '0', max_concurrent => 1)$$,
                'register: upper-case scheme, explicit port, query, zero intervals, max_concurrent 1');
SELECT lives_ok($$SELECT upstream_token.register_provider('edge6', 'https://[::1]:8443/token', 'c', NULL, 'none')$$,
                'register: an IPv6 literal host');

-- register_provider: the login endpoints are checked like the token endpoint.
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.register_provider('inp', 'https://inp.example/token', 'c', 's', authorization_endpoint => 'http://inp.example/authorize')$$, '22023', 'register: http:// authorization_endpoint');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.register_provider('inp', 'https://inp.example/token', 'c', 's', authorization_endpoint => 'https://u:p@inp.example/authorize')$$, '22023', 'register: authorization_endpoint with userinfo');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.register_provider('inp', 'https://inp.example/token', 'c', 's', authorization_endpoint => 'https://inp.example/authorize#f')$$, '22023', 'register: authorization_endpoint with a fragment');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.register_provider('inp', 'https://inp.example/token', 'c', 's', authorization_endpoint => '')$$, '22023', 'register: empty authorization_endpoint');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.register_provider('inp', 'https://inp.example/token', 'c', 's', device_authorization_endpoint => 'http://inp.example/device')$$, '22023', 'register: http:// device_authorization_endpoint');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.register_provider('inp', 'https://inp.example/token', 'c', 's', device_authorization_endpoint => 'ftp://inp.example/device')$$, '22023', 'register: ftp:// device_authorization_endpoint');

-- The login functions. 'inl' has both login endpoints, 'inp' neither.
SELECT upstream_token.register_provider('inl', 'https://inl.example/token', 'inl-client', 'inl-secret',
                                        authorization_endpoint => 'https://inl.example/authorize',
                                        device_authorization_endpoint => 'https://inl.example/device');
SELECT is((SELECT concat_ws(' ', authorization_endpoint, device_authorization_endpoint) FROM upstream_token.provider WHERE name = 'inl'),
          'https://inl.example/authorize https://inl.example/device', 'register: the login endpoints are stored');
-- begin_login: session.
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.begin_login(NULL, 'inl', 'https://app.example/cb')$$, '22004', 'begin_login: NULL session');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.begin_login('', 'inl', 'https://app.example/cb')$$, '22023', 'begin_login: empty session');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.begin_login(repeat('s', 513), 'inl', 'https://app.example/cb')$$, '22023', 'begin_login: session of 513 bytes');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.begin_login(repeat('é', 257), 'inl', 'https://app.example/cb')$$, '22023', 'begin_login: session of 257 characters but 514 bytes');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.begin_login(E'\x01client', 'inl', 'https://app.example/cb')$$, '22023', 'begin_login: session beginning with 0x01 (reserved for derived keys)');
-- begin_login: provider.
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.begin_login('l-1', NULL, 'https://app.example/cb')$$, '22004', 'begin_login: NULL provider');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.begin_login('l-1', '', 'https://app.example/cb')$$, '22023', 'begin_login: empty provider');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.begin_login('l-1', 'no-such-provider', 'https://app.example/cb')$$, '42704', 'begin_login: unknown provider');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.begin_login('l-1', 'inp', 'https://app.example/cb')$$, '22023', 'begin_login: provider without authorization_endpoint');
-- begin_login: redirect_uri.
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.begin_login('l-1', 'inl', NULL)$$, '22004', 'begin_login: NULL redirect_uri');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.begin_login('l-1', 'inl', '')$$, '22023', 'begin_login: empty redirect_uri');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.begin_login('l-1', 'inl', 'app.example/cb')$$, '22023', 'begin_login: redirect_uri without a scheme (no '':'')');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.begin_login('l-1', 'inl', 'https://app.example/cb#frag')$$, '22023', 'begin_login: redirect_uri with a fragment');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.begin_login('l-1', 'inl', 'https://app.example/c b')$$, '22023', 'begin_login: redirect_uri with a space');
-- begin_login: extra_params may not set what the extension sets, and holds strings only.
SELECT r.*
  FROM unnest(ARRAY['state', 'nonce', 'client_id', 'redirect_uri', 'response_type', 'scope',
                    'code_challenge', 'code_challenge_method']) WITH ORDINALITY AS x(param, n),
       LATERAL pg_temp.rejects(format($$SELECT upstream_token.begin_login('l-1', 'inl', 'https://app.example/cb', extra_params => %L)$$,
                                      jsonb_build_object(x.param, 'x')),
                               '22023', 'begin_login: extra_params setting ' || x.param) AS r
 ORDER BY x.n;
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.begin_login('l-1', 'inl', 'https://app.example/cb', extra_params => '{"": "x"}')$$, '22023', 'begin_login: extra_params with an empty name');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.begin_login('l-1', 'inl', 'https://app.example/cb', extra_params => '["prompt"]')$$, '22023', 'begin_login: extra_params not an object');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.begin_login('l-1', 'inl', 'https://app.example/cb', extra_params => '{"max_age": 60}')$$, '22023', 'begin_login: extra_params with a non-string value');
SELECT is((SELECT count(*)::int FROM upstream_token.login), 0, 'begin_login: no refused call left a login behind');
-- The boundaries that are accepted: each stores one pending login and nothing else.
SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t.session, t.provider), '')) AS tokens_before
  FROM upstream_token.token t \gset
SELECT lives_ok($$SELECT upstream_token.begin_login(repeat('s', 512), 'inl', 'https://app.example/cb')$$,
                'begin_login: a session of exactly 512 bytes is accepted');
SELECT lives_ok($$SELECT upstream_token.begin_login(E'l-\x01', 'inl', 'com.example.app:/cb', extra_params => '{"prompt": "consent"}')$$,
                'begin_login: 0x01 past the first byte, a private-use scheme and a non-reserved extra parameter are accepted');
SELECT is((SELECT string_agg(concat_ws(' ', octet_length(session), provider, flow, status, redirect_uri), ', ' ORDER BY octet_length(session))
             FROM upstream_token.login),
          '3 inl authorization_code pending com.example.app:/cb, 512 inl authorization_code pending https://app.example/cb',
          'begin_login: the accepted calls stored one pending login each');
SELECT is((SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t.session, t.provider), '')) FROM upstream_token.token t),
          :'tokens_before', 'begin_login: no token row was written or changed');
-- complete_login.
SELECT * FROM pg_temp.rejects($$SELECT * FROM upstream_token.complete_login(NULL, 'code')$$, '22004', 'complete_login: NULL state');
SELECT * FROM pg_temp.rejects($$SELECT * FROM upstream_token.complete_login('', 'code')$$, '22023', 'complete_login: empty state');
SELECT * FROM pg_temp.rejects($$SELECT * FROM upstream_token.complete_login('some-state', NULL)$$, '22004', 'complete_login: NULL code');
SELECT * FROM pg_temp.rejects($$SELECT * FROM upstream_token.complete_login('some-state', '')$$, '22023', 'complete_login: empty code');
SELECT * FROM pg_temp.rejects($$SELECT * FROM upstream_token.complete_login('never-issued', 'x')$$, 'UT013', 'complete_login: a state never issued');
SELECT * FROM pg_temp.rejects($$SELECT * FROM upstream_token.complete_login('never-issued', 'x', 'https://inl.example')$$, 'UT013', 'complete_login: a state never issued, with iss');
-- A stored login's id is not its state (only the digest of the state is kept).
SELECT * FROM pg_temp.rejects(format($$SELECT * FROM upstream_token.complete_login(%L, 'x')$$, (SELECT min(id) FROM upstream_token.login)),
                              'UT013', 'complete_login: a login''s id (the state''s digest) is not a state');
-- begin_device_login.
SELECT * FROM pg_temp.rejects($$SELECT * FROM upstream_token.begin_device_login(NULL, 'inl')$$, '22004', 'begin_device_login: NULL session');
SELECT * FROM pg_temp.rejects($$SELECT * FROM upstream_token.begin_device_login('', 'inl')$$, '22023', 'begin_device_login: empty session');
SELECT * FROM pg_temp.rejects($$SELECT * FROM upstream_token.begin_device_login(repeat('s', 513), 'inl')$$, '22023', 'begin_device_login: session of 513 bytes');
SELECT * FROM pg_temp.rejects($$SELECT * FROM upstream_token.begin_device_login(E'\x01client', 'inl')$$, '22023', 'begin_device_login: session beginning with 0x01');
SELECT * FROM pg_temp.rejects($$SELECT * FROM upstream_token.begin_device_login('l-1', NULL)$$, '22004', 'begin_device_login: NULL provider');
SELECT * FROM pg_temp.rejects($$SELECT * FROM upstream_token.begin_device_login('l-1', '')$$, '22023', 'begin_device_login: empty provider');
SELECT * FROM pg_temp.rejects($$SELECT * FROM upstream_token.begin_device_login('l-1', 'no-such-provider')$$, '42704', 'begin_device_login: unknown provider');
SELECT * FROM pg_temp.rejects($$SELECT * FROM upstream_token.begin_device_login('l-1', 'inp')$$, '22023', 'begin_device_login: provider without device_authorization_endpoint');

-- get_client_token.
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.get_client_token(NULL)$$, '22004', 'get_client_token: NULL provider');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.get_client_token('')$$, '22023', 'get_client_token: empty provider');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.get_client_token('no-such-provider', 'read', 'https://api.example')$$, '42704', 'get_client_token: unknown provider');
-- exchange_token.
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.exchange_token(NULL, 'inp', 'https://api.example')$$, '22004', 'exchange_token: NULL session');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.exchange_token('', 'inp', 'https://api.example')$$, '22023', 'exchange_token: empty session');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.exchange_token(repeat('s', 513), 'inp', 'https://api.example')$$, '22023', 'exchange_token: session of 513 bytes');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.exchange_token(E'\x01client', 'inp', 'https://api.example')$$, '22023', 'exchange_token: session beginning with 0x01');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.exchange_token('i-1', NULL, 'https://api.example')$$, '22004', 'exchange_token: NULL provider');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.exchange_token('i-1', '', 'https://api.example')$$, '22023', 'exchange_token: empty provider');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.exchange_token('i-1', 'no-such-provider', 'https://api.example')$$, '42704', 'exchange_token: unknown provider');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.exchange_token('no-such-session', 'inp', 'https://api.example')$$, 'UT001', 'exchange_token: a session with no token to exchange');
-- store_upstream_token: sessions beginning with 0x01 are the derived keys' own.
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.store_upstream_token(E'\x01client', 'inp', 'a', 'r', 60)$$, '22023', 'store: session beginning with 0x01');
SELECT * FROM pg_temp.rejects($$SELECT upstream_token.store_upstream_token(E'\x01', 'inp', 'a', 'r', 60)$$, '22023', 'store: session that is the byte 0x01 alone');
SELECT lives_ok($$SELECT upstream_token.store_upstream_token(E'i-\x01', 'inp', 'a', 'r', 60)$$,
                'store: 0x01 past the first byte is accepted');

SELECT * FROM finish();
ROLLBACK;
