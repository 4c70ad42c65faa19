'use strict';
// Every preset, refreshed through the preset: the provider is registered with
// register_provider(preset => ..., preset_params => {base_url: the test IdP, ...}) and nothing
// else but its client, so the endpoints' paths (token, revocation, and the authorization and
// device authorization endpoints begin_login / begin_device_login use, checked on the stored
// row), the client authentication, the refresh parameters and the lifetimes all come from the
// preset. The test IdP answers on the
// provider's own paths (settings token_paths / revoke_paths) and behaves like the provider: its
// authentication method, answer shapes (error_style, extra_fields, string lifetimes, no
// expires_in), rotation or none, the parameters it requires. Each subtest is named
// presets_<preset> (docs/providers.md names them). Then: no reuse detected and no grant
// revoked; only after that, sign-out through the presets' revocation endpoints.
const test = require('node:test');
const assert = require('node:assert');
const { setup, unique, sqlError, tokenStatus, callLog, waitFor } = require('./harness.js');

const GET = 'SELECT upstream_token.get_upstream_token($1, $2) AS t';
const FORCE = 'SELECT refreshed FROM upstream_token.refresh_upstream_token($1, $2)';

// How the test IdP imitates each provider, and what is checked beyond a refresh through the
// preset's own endpoint. `reauth`: the answer for a dead refresh token must end in UT004.
// `lifetime`: seconds the stored access token lives after a refresh. `extraParam`: a form
// parameter the refresh must carry. `revoke`: revoke_upstream_token reaches the preset's path
// (checked after the count of revoked grants, which must be 0 until then).
const PROFILES = {
    atlassian: { quirks: { error_style: 'forbidden' }, reauth: true },
    auth0: { params: { domain: 'tenant.auth0.example' }, quirks: { error_style: 'forbidden' }, reauth: true, revoke: true },
    discord: { quirks: { access_ttl: 604800 }, lifetime: 604800, revoke: true },
    dropbox: {},
    entra: { params: { tenant: 'contoso.onmicrosoft.com' }, quirks: { error_style: 'entra' }, reauth: true },
    github: { noRefreshToken: true },
    github_app: {
        quirks: { access_ttl: 28800, expires_in_string: true, refresh_token_expires_in: 15811200, error_style: 'github' },
        lifetime: 28800, statedRefreshEnd: 15811200, reauth: true,
    },
    gitlab: {
        params: { redirect_uri: 'https://app.example/oauth/callback?x=1' },
        quirks: { require_params: { redirect_uri: 'https://app.example/oauth/callback?x=1' }, extra_fields: { created_at: 1700000000 } },
        extraParam: 'redirect_uri', revoke: true,
    },
    google: { quirks: { no_rotation: true }, sameRefreshToken: true, revoke: true },
    hubspot: { quirks: { access_ttl: 1800, error_style: 'hubspot' }, lifetime: 1800, reauth: true },
    keycloak: {
        params: { realm: 'staff' },
        quirks: { access_ttl: 300, refresh_expires_field: 'refresh_expires_in', refresh_token_expires_in: 1800 },
        lifetime: 300, statedRefreshEnd: 1800, revoke: true,
    },
    linear: {},
    notion: {
        quirks: { no_expires_in: true, extra_fields: { bot_id: 'b', workspace_id: 'w', owner: { type: 'user' } } },
        lifetime: 3600, attributes: { bot_id: 'b', workspace_id: 'w' },
    },
    okta: { params: { domain: 'acme.okta.example' }, reauth: true, revoke: true },
    okta_custom: { params: { domain: 'acme.okta.example', authorization_server_id: 'aus1x' }, reauth: true, revoke: true },
    salesforce: {
        quirks: { no_expires_in: true, extra_fields: { instance_url: 'https://acme.my.salesforce.example', issued_at: '1700000000000', signature: 's' } },
        lifetime: 900, revoke: true,
        loginAttributes: { instance_url: 'https://login-time.my.salesforce.example' },
        attributes: { instance_url: 'https://acme.my.salesforce.example' },
    },
    slack: { quirks: { access_ttl: 43200, extra_fields: { ok: true }, error_style: 'slack' }, lifetime: 43200, reauth: true },
    zoom: {},
};

// The path of a URL.
const pathOf = (url) => new URL(url).pathname;

// A preset's URL template (from provider_presets) filled from the registration's
// preset_params; a placeholder left unfilled stays, so the comparison fails.
const fill = (template, params) => template.replace(/\{([a-z_]+)\}/g, (m, name) => params[name] ?? m);

test('every preset refreshes through its own endpoints, authentication and answer shapes', async (t) => {
    const ctx = await setup({ poolSize: 8 });
    const presets = (await ctx.pool.query('SELECT * FROM upstream_token.provider_presets ORDER BY name')).rows;
    const registered = [];
    const extraProviders = [];
    t.after(async () => {
        for (const name of [...registered.map((r) => r.provider), ...extraProviders]) {
            await ctx.pool.query('SELECT upstream_token.drop_provider($1, cascade => true)', [name]).catch(() => {});
        }
        await ctx.close();
    });
    assert.deepStrictEqual(presets.map((p) => p.name).sort(), Object.keys(PROFILES).sort(),
        'every preset has a profile here, and every profile a preset');

    // Register every preset first: the IdP's extra paths are one setting for all of them.
    const tokenPaths = new Set();
    const revokePaths = new Set();
    for (const preset of presets) {
        const profile = PROFILES[preset.name];
        const clientId = unique(`c-${preset.name}`);
        const secret = `secret ${unique('s')} :+%`;
        const { access_ttl: accessTtl = 3600, ...quirks } = profile.quirks || {};
        await ctx.idp.client.admin('POST', '/admin/clients', {
            client_id: clientId, client_secret: secret, auth_method: preset.auth_method,
            access_ttl: accessTtl, id_token: false, ...quirks,
        });
        const provider = unique(`pre-${preset.name}`).replace(/[^A-Za-z0-9_.:-]/g, '_').slice(0, 60);
        const presetParams = { base_url: ctx.idp.url, ...(profile.params || {}) };
        await ctx.pool.query(
            `SELECT upstream_token.register_provider($1, preset => $2, preset_params => $3::jsonb,
                    client_id => $4, client_secret => $5)`,
            [provider, preset.name, JSON.stringify(presetParams), clientId, secret]);
        const row = (await ctx.pool.query(
            `SELECT token_endpoint, revocation_endpoint, auth_method, preset, keep_alive,
                    refresh_token_idle_ttl::text AS idle, refresh_token_ttl::text AS ttl,
                    default_lifetime::text AS lifetime, response_fields,
                    authorization_endpoint, device_authorization_endpoint
               FROM upstream_token.provider WHERE name = $1`, [provider])).rows[0];
        const view = (await ctx.pool.query(
            `SELECT refresh_token_idle_ttl::text AS idle, refresh_token_ttl::text AS ttl,
                    coalesce(default_lifetime, '1 hour')::text AS lifetime
               FROM upstream_token.provider_presets WHERE name = $1`, [preset.name])).rows[0];
        assert.strictEqual(row.auth_method, preset.auth_method);
        assert.strictEqual(row.preset, preset.name);
        assert.deepStrictEqual([row.keep_alive, row.idle, row.ttl, row.lifetime, row.response_fields],
            [preset.keep_alive, view.idle, view.ttl, view.lifetime, preset.response_fields],
            `${preset.name}: the provider row has the preset's lifetimes, keep_alive and response_fields`);
        assert.ok(row.token_endpoint.startsWith(`${ctx.idp.url}/`), row.token_endpoint);
        // The login endpoints come from the preset too: its path under base_url (the test IdP),
        // or, for a sign-in page on another of the provider's origins (Google's
        // accounts.google.com), the preset's URL as it is. A device endpoint only where the
        // provider documents one (RFC 8628); NULL otherwise.
        assert.ok(preset.authorization_endpoint, `${preset.name} has an authorization endpoint`);
        for (const column of ['authorization_endpoint', 'device_authorization_endpoint']) {
            const template = preset[column];
            if (template === null) {
                assert.strictEqual(row[column], null, `${preset.name}: no ${column}`);
            } else if (template.startsWith('{base_url}/')) {
                const path = fill(template.slice('{base_url}'.length), presetParams);
                assert.strictEqual(row[column], `${ctx.idp.url}${path}`,
                    `${preset.name}: ${column} is the preset's path under base_url`);
            } else {
                assert.ok(!template.includes('{base_url}'), template);
                assert.strictEqual(row[column], fill(template, presetParams), `${preset.name}: ${column}`);
            }
        }
        tokenPaths.add(pathOf(row.token_endpoint));
        if (row.revocation_endpoint) revokePaths.add(pathOf(row.revocation_endpoint));
        registered.push({ preset, profile, provider, clientId, secret, row });
    }
    // An explicit argument wins over the preset; the other login endpoint still comes from it.
    const explicit = unique('pre-explicit').replace(/[^A-Za-z0-9_.:-]/g, '_').slice(0, 60);
    extraProviders.push(explicit);
    await ctx.pool.query(
        `SELECT upstream_token.register_provider($1, preset => 'gitlab', preset_params => $2::jsonb,
                client_id => 'c-explicit', client_secret => 's', authorization_endpoint => $3)`,
        [explicit, JSON.stringify({ base_url: ctx.idp.url }), `${ctx.idp.url}/custom/authorize`]);
    const explicitRow = (await ctx.pool.query(
        `SELECT authorization_endpoint, device_authorization_endpoint
           FROM upstream_token.provider WHERE name = $1`, [explicit])).rows[0];
    assert.deepStrictEqual({ ...explicitRow }, {
        authorization_endpoint: `${ctx.idp.url}/custom/authorize`,
        device_authorization_endpoint: `${ctx.idp.url}/oauth/authorize_device`,
    }, 'authorization_endpoint given, device_authorization_endpoint from the preset');

    tokenPaths.delete('/token');
    revokePaths.delete('/revoke');
    await ctx.idp.client.admin('POST', '/admin/settings', { token_paths: [...tokenPaths], revoke_paths: [...revokePaths] });

    for (const r of registered) {
        await t.test(`presets_${r.preset.name}`, async () => {
            const { preset, profile, provider, clientId } = r;
            const p = { provider, clientId };
            const since = Date.now();
            if (profile.noRefreshToken) {
                // GitHub OAuth apps: an access token and no refresh token; it is served as stored
                // and nothing is ever sent to the provider.
                const session = unique('gh');
                await ctx.pool.query('SELECT upstream_token.store_upstream_token($1, $2, $3, NULL, 3600)',
                    [session, provider, 'gho_stored']);
                assert.strictEqual((await ctx.pool.query(GET, [session, provider])).rows[0].t, 'gho_stored');
                assert.strictEqual((await callLog(ctx.idp, clientId, since)).length, 0);
                return;
            }
            const login = (await ctx.idp.client.admin('POST', '/admin/grants', { client_id: clientId, subject: unique('u') })).grants[0];
            const session = unique(`s-${preset.name}`);
            await ctx.pool.query('SELECT upstream_token.store_upstream_token($1, $2, $3, $4, 0, attributes => $5::jsonb)',
                [session, provider, login.access_token, login.refresh_token,
                 profile.loginAttributes ? JSON.stringify(profile.loginAttributes) : null]);
            const fresh = (await ctx.pool.query(GET, [session, provider])).rows[0].t;
            assert.ok(fresh && fresh !== login.access_token, 'an expired token is refreshed through the preset');
            const calls = await callLog(ctx.idp, clientId, since);
            assert.ok(calls.length >= 1 && calls.every((c) => c.status === 200), JSON.stringify(calls));
            assert.strictEqual(calls[0].path || '/token', pathOf(r.row.token_endpoint), 'at the preset\'s own path');
            if (profile.extraParam) {
                assert.ok(calls.every((c) => (c.extra_params || []).includes(profile.extraParam)),
                    `every refresh carried ${profile.extraParam}: ${JSON.stringify(calls.map((c) => c.extra_params))}`);
            }
            const status = await tokenStatus(ctx.pool, session, provider);
            // The answer fields the preset keeps (Salesforce's instance_url replacing the one the
            // login stored; Notion's workspace); the tokens and other fields are not kept.
            assert.deepStrictEqual(status.attributes, profile.attributes || null, 'token_status.attributes');
            if (profile.lifetime) {
                const left = (new Date(status.expires_at) - Date.now()) / 1000;
                assert.ok(left > profile.lifetime - 120 && left <= profile.lifetime + 1,
                    `the access token lives ${profile.lifetime} s (${left} s left)`);
            }
            if (profile.statedRefreshEnd) {
                assert.strictEqual(status.refresh_expiry_source, 'provider');
                const end = (new Date(status.refresh_expires_at) - Date.now()) / 1000;
                assert.ok(end > profile.statedRefreshEnd - 120 && end <= profile.statedRefreshEnd + 1, `refresh end in ${end} s`);
            }
            // A second refresh works with what was saved (the rotated token, or the same one).
            assert.strictEqual((await ctx.pool.query(FORCE, [session, provider])).rows[0].refreshed, true);
            const lookup = await ctx.idp.client.admin('GET', `/admin/grants/${login.grant_id}`);
            assert.strictEqual(lookup.active, true, 'the grant is alive');
            assert.strictEqual(lookup.rotations, profile.sameRefreshToken ? 0 : 2, `rotations: ${JSON.stringify(lookup)}`);

            if (profile.reauth) {
                // A refresh token the provider does not know, answered in the provider's shape.
                const dead = unique(`dead-${preset.name}`);
                const before = Date.now();  // the engine may refresh it as soon as it is stored
                await ctx.pool.query('SELECT upstream_token.store_upstream_token($1, $2, $3, $4, 0)',
                    [dead, provider, 'at-dead', `rt-unknown-${unique('x')}`]);
                const e = await sqlError(ctx.pool.query(GET, [dead, provider]), 'a dead refresh token');
                assert.strictEqual(e.code, 'UT004', `${preset.name}: ${e.code} ${e.message}`);
                assert.strictEqual((await tokenStatus(ctx.pool, dead, provider)).status, 'reauth_required');
                assert.strictEqual((await callLog(ctx.idp, clientId, before)).length, 1, 'one call, no retry');
            }
        });
    }
    const stats = await ctx.stats();
    assert.strictEqual(stats.reuse_detected, 0, 'no refresh token was ever presented twice');
    assert.strictEqual(stats.revoked_grants, 0, 'no grant revoked');

    // Then sign-out through each preset's revocation endpoint: revoke_upstream_token reaches
    // the provider's own path (and revokes that grant, as asked).
    for (const r of registered.filter((x) => x.profile.revoke)) {
        await t.test(`presets_${r.preset.name} revocation`, async () => {
            const login = (await ctx.idp.client.admin('POST', '/admin/grants', { client_id: r.clientId, subject: unique('u') })).grants[0];
            const session = unique(`rv-${r.preset.name}`);
            await ctx.pool.query('SELECT upstream_token.store_upstream_token($1, $2, $3, $4, 3600)',
                [session, r.provider, login.access_token, login.refresh_token]);
            const before = Date.now();
            await ctx.pool.query('SELECT upstream_token.revoke_upstream_token($1, $2)', [session, r.provider]);
            const revokes = async () => (await ctx.idp.client.admin('GET',
                `/admin/calls?since_ms=${before}&client_id=${encodeURIComponent(r.clientId)}&endpoint=revoke`)).calls;
            await waitFor(async () => (await revokes()).some((c) => c.status === 200), { what: 'the revocation is delivered' });
            assert.strictEqual((await revokes())[0].path || '/revoke', pathOf(r.row.revocation_endpoint));
            assert.strictEqual((await ctx.grant(login.grant_id)).revoked, true, 'the grant is revoked at the provider');
        });
    }
});
