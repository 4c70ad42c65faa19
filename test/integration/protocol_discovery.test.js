'use strict';
// Proves provider discovery (register_provider_from_issuer): the engine fetches the issuer's
// metadata, a document naming another issuer is refused and nothing is registered, and the
// real oidc-provider's discovery document yields a working provider (a login refreshes).
const test = require('node:test');
const assert = require('node:assert');
const { setup, unique, CERT_DIR } = require('./harness.js');
const { startOidcServer } = require('./oidc_server.js');

// A provider name the extension accepts.
function providerName(prefix) {
    return unique(prefix).replace(/[^A-Za-z0-9_.:-]/g, '_').slice(0, 60);
}

// The stored configuration of one provider (as the owner sees it).
async function providerRow(pool, name) {
    const r = await pool.query(
        `SELECT token_endpoint, revocation_endpoint, issuer, auth_method
           FROM upstream_token.provider WHERE name = $1`, [name]);
    return r.rows[0];
}

test('discovery from the test IdP fills the endpoints; a foreign issuer is refused', async (t) => {
    const ctx = await setup({ poolSize: 4 });
    const name = providerName('disc');
    t.after(async () => {
        await ctx.idp.client.admin('POST', '/admin/settings', { issuer: null });
        await ctx.pool.query('SELECT upstream_token.drop_provider($1, cascade => true)', [name]).catch(() => {});
        await ctx.close();
    });
    const clientId = unique('client');
    const secret = `s ${unique('secret')}`;
    await ctx.idp.client.admin('POST', '/admin/clients',
        { client_id: clientId, client_secret: secret, access_ttl: 3600 });

    await ctx.pool.query('SELECT upstream_token.register_provider_from_issuer($1, $2, $3, $4)',
        [name, ctx.idp.url, clientId, secret]);
    const row = await providerRow(ctx.pool, name);
    assert.strictEqual(row.token_endpoint, `${ctx.idp.url}/token`);
    assert.strictEqual(row.revocation_endpoint, `${ctx.idp.url}/revoke`);
    assert.strictEqual(row.issuer, ctx.idp.url);
    assert.strictEqual(row.auth_method, 'client_secret_basic', 'the provider\'s first supported secret method');

    // The discovered provider works: an expired login is refreshed through it.
    const grant = (await ctx.idp.client.admin('POST', '/admin/grants', { client_id: clientId, subject: unique('u') })).grants[0];
    const session = unique('sess');
    await ctx.pool.query('SELECT upstream_token.store_upstream_token($1, $2, $3, $4, 0)',
        [session, name, grant.access_token, grant.refresh_token]);
    const tok = (await ctx.pool.query('SELECT upstream_token.get_upstream_token($1, $2) AS t', [session, name])).rows[0].t;
    assert.ok(tok && tok !== grant.access_token, 'refreshed through the discovered endpoint');

    // A metadata document that names another issuer is refused, and nothing is registered.
    await ctx.idp.client.admin('POST', '/admin/settings', { issuer: 'https://someone-else.example' });
    const other = providerName('disc-bad');
    const err = await ctx.pool.query('SELECT upstream_token.register_provider_from_issuer($1, $2, $3, $4)',
        [other, ctx.idp.url, clientId, secret]).then(() => null, (e) => e);
    assert.ok(err, 'refused');
    assert.strictEqual(err.code, '22023');
    assert.match(err.message, /different issuer/);
    assert.strictEqual(await providerRow(ctx.pool, other), undefined, 'nothing registered');

    // An issuer that is not https is refused before anything is fetched.
    const insecure = await ctx.pool.query('SELECT upstream_token.register_provider_from_issuer($1, $2, $3, $4)',
        [other, ctx.idp.url.replace('https:', 'http:'), clientId, secret]).then(() => null, (e) => e);
    assert.strictEqual(insecure && insecure.code, '22023');
});

test('discovery against the real oidc-provider yields a working provider', async (t) => {
    const ctx = await setup({ poolSize: 4 });
    const srv = await startOidcServer({ certDir: CERT_DIR, accessTtl: 60 });
    const name = providerName('disc-oidc');
    t.after(async () => {
        await ctx.pool.query('SELECT upstream_token.drop_provider($1, cascade => true)', [name]).catch(() => {});
        await srv.stop();
        await ctx.close();
    });
    await ctx.pool.query('SELECT upstream_token.register_provider_from_issuer($1, $2, $3, $4)',
        [name, srv.issuer, srv.clientId, srv.clientSecret]);
    const row = await providerRow(ctx.pool, name);
    assert.strictEqual(row.token_endpoint, srv.tokenEndpoint);
    assert.strictEqual(row.issuer, srv.issuer);
    assert.ok(['client_secret_basic', 'client_secret_post'].includes(row.auth_method));

    const login = await srv.login(unique('user'));
    const session = unique('sess');
    await ctx.pool.query('SELECT upstream_token.store_upstream_token($1, $2, $3, $4, 0, $5)',
        [session, name, login.access_token, login.refresh_token, login.id_token]);
    const refreshed = await ctx.pool.query(
        'SELECT * FROM upstream_token.refresh_upstream_token($1, $2)', [session, name]);
    assert.strictEqual(refreshed.rows[0].sqlstate, null, refreshed.rows[0].error || 'no error');
    const tok = (await ctx.pool.query('SELECT upstream_token.get_upstream_token($1, $2) AS t', [session, name])).rows[0].t;
    const info = await srv.accessTokenInfo(tok);
    assert.ok(info && info.grantId === login.grantId, 'an access token the provider issued for this grant');
});
