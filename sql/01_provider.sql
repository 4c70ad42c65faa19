-- Proves: register_provider creates a provider with the documented defaults, updates it on
-- re-registration, supports client_secret_post and public clients (auth_method none, no
-- secret), stores the client secret encrypted; drop_provider removes a provider, refuses
-- (2BP01) while tokens exist, and removes both with cascade => true.
\set VERBOSITY terse

\i sql/try.psql

-- Everything about a provider except the ciphertext and the timestamps.
CREATE VIEW pg_temp.prov AS
SELECT name, token_endpoint, client_id, auth_method,
       client_secret IS NOT NULL AS has_secret, issuer, revocation_endpoint, scope,
       refresh_threshold, refresh_token_ttl, default_lifetime, request_timeout, max_concurrent
  FROM upstream_token.provider;

-- 1. Defaults: only name, endpoint, client id and secret given.
SELECT upstream_token.register_provider('acme', 'https://idp.example.com/oauth/token',
                                        'acme-client', 'acme-secret-1');
\x on
SELECT * FROM pg_temp.prov WHERE name = 'acme';
\x off
SELECT created_at = updated_at AS untouched FROM upstream_token.provider WHERE name = 'acme';

-- The client secret is a ciphertext: longer than the secret, not containing it.
SELECT octet_length(client_secret) > octet_length('acme-secret-1') AS longer,
       position(convert_to('acme-secret-1', 'UTF8') IN client_secret) = 0 AS no_plaintext
  FROM upstream_token.provider WHERE name = 'acme';

-- 2. Re-registration updates every field (one row, same created_at, later-or-equal updated_at).
SELECT created_at AS acme_created FROM upstream_token.provider WHERE name = 'acme' \gset
SELECT upstream_token.register_provider(
    name => 'acme',
    token_endpoint => 'https://login.example.com:8443/oauth2/v2/token?tenant=t1',
    client_id => 'acme-client-2',
    client_secret => 'acme-secret-2',
    auth_method => 'client_secret_post',
    issuer => 'https://login.example.com',
    revocation_endpoint => 'https://login.example.com:8443/oauth2/revoke',
    scope => 'openid offline_access',
    refresh_threshold => '2 minutes',
    refresh_token_ttl => '14 days',
    default_lifetime => '30 minutes',
    request_timeout => '5 seconds',
    max_concurrent => 4);
\x on
SELECT * FROM pg_temp.prov WHERE name = 'acme';
\x off
SELECT count(*) AS acme_rows,
       bool_and(created_at = :'acme_created') AS same_created_at,
       bool_and(updated_at >= created_at) AS updated_at_moved
  FROM upstream_token.provider WHERE name = 'acme';
SELECT position(convert_to('acme-secret-2', 'UTF8') IN client_secret) = 0 AS no_plaintext
  FROM upstream_token.provider WHERE name = 'acme';

-- Optional arguments left out on re-registration go back to their defaults.
SELECT upstream_token.register_provider('acme', 'https://idp.example.com/oauth/token',
                                        'acme-client', 'acme-secret-1');
SELECT * FROM pg_temp.prov WHERE name = 'acme';

-- 3. A public client: auth_method none and no secret.
SELECT upstream_token.register_provider('spa', 'https://spa.example.org/token', 'spa-client',
                                        NULL, 'none');
SELECT name, auth_method, has_secret FROM pg_temp.prov WHERE name = 'spa';

-- Switching an existing confidential client to none drops its secret, and back again.
SELECT upstream_token.register_provider('acme', 'https://idp.example.com/oauth/token',
                                        'acme-client', auth_method => 'none');
SELECT name, auth_method, has_secret FROM pg_temp.prov WHERE name = 'acme';
SELECT upstream_token.register_provider('acme', 'https://idp.example.com/oauth/token',
                                        'acme-client', 'acme-secret-3', 'client_secret_basic');
SELECT name, auth_method, has_secret FROM pg_temp.prov WHERE name = 'acme';

-- Provider names: letters, digits and _ . : - up to 63 characters.
SELECT upstream_token.register_provider('Tenant-1.eu:prod_b', 'https://t1.example/token', 'c', NULL, 'none');
SELECT upstream_token.register_provider(repeat('n', 63), 'https://t1.example/token', 'c', NULL, 'none');
SELECT length(name) AS name_length FROM upstream_token.provider WHERE name ~ '^n+$';

-- 4. drop_provider without tokens.
SELECT upstream_token.drop_provider('Tenant-1.eu:prod_b');
SELECT upstream_token.drop_provider(repeat('n', 63));
SELECT name FROM upstream_token.provider ORDER BY name;

-- An unknown provider.
SELECT pg_temp.try($$SELECT upstream_token.drop_provider('no-such-provider')$$);
SELECT pg_temp.try($$SELECT upstream_token.drop_provider(NULL)$$);

-- 5. With tokens: refused (2BP01), nothing removed.
SELECT upstream_token.store_upstream_token('sess-1', 'spa', 'spa-access-1', 'spa-refresh-1', 3600);
SELECT upstream_token.store_upstream_token('sess-2', 'spa', 'spa-access-2', 'spa-refresh-2', 3600);
SELECT pg_temp.try($$SELECT upstream_token.drop_provider('spa')$$);
SELECT pg_temp.try($$SELECT upstream_token.drop_provider('spa', cascade => false)$$);
SELECT (SELECT count(*) FROM upstream_token.provider WHERE name = 'spa') AS providers,
       (SELECT count(*) FROM upstream_token.token WHERE provider = 'spa') AS tokens;

-- cascade => true removes the provider and its tokens, and only those.
SELECT upstream_token.store_upstream_token('sess-1', 'acme', 'acme-access-1', 'acme-refresh-1', 3600);
SELECT upstream_token.drop_provider('spa', cascade => true);
SELECT (SELECT count(*) FROM upstream_token.provider WHERE name = 'spa') AS providers,
       (SELECT count(*) FROM upstream_token.token WHERE provider = 'spa') AS spa_tokens,
       (SELECT count(*) FROM upstream_token.token WHERE provider = 'acme') AS acme_tokens;

-- The token table refers to providers: a provider cannot vanish under a token even by hand.
SELECT pg_temp.try($$DELETE FROM upstream_token.provider WHERE name = 'acme'$$) ~ '^23503' AS fk_holds;

-- 6. A revocation the app asked for and the engine has not delivered (the endpoint does not
-- answer) holds the provider, with or without cascade (55006); discard_revocations drops it.
SELECT upstream_token.register_provider('revoking', 'https://127.0.0.1:1/token', 'rv-client', NULL,
                                        'none', revocation_endpoint => 'https://127.0.0.1:1/revoke');
SELECT upstream_token.store_upstream_token('sess-1', 'revoking', 'rv-access-1', 'rv-refresh-1', 3600);
SELECT upstream_token.revoke_upstream_token('sess-1', 'revoking') AS revoked;
SELECT pg_temp.try($$SELECT upstream_token.drop_provider('revoking')$$);
SELECT pg_temp.try($$SELECT upstream_token.drop_provider('revoking', cascade => true)$$);
SELECT pg_temp.try($$DELETE FROM upstream_token.provider WHERE name = 'revoking'$$) ~ '^23503' AS fk_holds;
SELECT (SELECT count(*) FROM upstream_token.provider WHERE name = 'revoking') AS providers,
       (SELECT count(*) FROM upstream_token.revocation WHERE provider = 'revoking') AS pending;
SELECT upstream_token.drop_provider('revoking', discard_revocations => true);
SELECT (SELECT count(*) FROM upstream_token.provider WHERE name = 'revoking') AS providers,
       (SELECT count(*) FROM upstream_token.revocation WHERE provider = 'revoking') AS pending,
       (SELECT count(*) FROM upstream_token.token_tombstone WHERE provider = 'revoking') AS tombstones;

-- Leave nothing behind for later files.
SELECT upstream_token.drop_provider('acme', cascade => true);
SELECT count(*) AS providers_left FROM upstream_token.provider;
