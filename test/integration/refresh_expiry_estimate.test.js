'use strict';
// A refresh-token lifetime the provider never stated is an estimate (the provider's
// refresh_token_ttl, else upstream_token.refresh_token_ttl), never a hard cut-off: past it the
// engine still refreshes (the provider decides), a successful refresh moves the estimate on,
// and maintenance neither marks nor purges an active row on an estimate. A lifetime the
// provider (or the store call) stated is a cut-off, as before. token_status says which it is.
const test = require('node:test');
const assert = require('node:assert');
const {
    setup, unique, providerWith, tokenStatus, waitFor, sqlError, setSystemGucs,
} = require('./harness.js');

const GET = 'SELECT upstream_token.get_upstream_token($1, $2) AS t';
const FORCE = 'SELECT refreshed, sqlstate FROM upstream_token.refresh_upstream_token($1, $2)';
const STORE9 = 'SELECT upstream_token.store_upstream_token($1, $2, $3, $4, $5, $6, NULL, NULL, $7)';

let ctx;
test.before(async () => { ctx = await setup({ poolSize: 5 }); });
test.after(async () => {
    await setSystemGucs(ctx.pool, { 'upstream_token.purge_after': null });
    await ctx.close();
});

// A provider whose IdP client states no refresh-token lifetime; the estimate is `ttl`.
function silentProvider(ttl = '2 seconds') {
    return providerWith(ctx, { args: { refresh_token_ttl: ttl } });
}

// A provider whose IdP client states a refresh-token lifetime of `seconds` in every answer.
function statingProvider(seconds = 2) {
    return providerWith(ctx, { client: { refresh_token_expires_in: seconds } });
}

// Mints a login and stores it (refresh_expires_in as given: null = not stated).
async function store(p, { expiresIn = 3600, refreshExpiresIn = null } = {}) {
    const { grants: [g] } = await ctx.idp.client.admin('POST', '/admin/grants', { client_id: p.clientId, subject: unique('user') });
    const session = unique('sess');
    await ctx.pool.query(STORE9, [session, p.provider, g.access_token, g.refresh_token, expiresIn, g.id_token, refreshExpiresIn]);
    return { session, grant: g };
}

// Waits until the row's refresh expiry has passed (database clock).
function pastRefreshExpiry(session, provider) {
    return waitFor(async () => (await ctx.pool.query(
        `SELECT refresh_expires_at < pg_catalog.now() AS past FROM upstream_token.token
          WHERE session = $1 AND provider = $2`, [session, provider])).rows[0].past,
    { timeoutMs: 10000, what: 'the refresh expiry to pass' });
}

test('a: no stated lifetime: past the estimate the token is still refreshed and served; the estimate moves on', async () => {
    const p = await silentProvider();
    const login = await store(p);
    const before = await tokenStatus(ctx.pool, login.session, p.provider);
    await pastRefreshExpiry(login.session, p.provider);

    assert.deepStrictEqual((await ctx.pool.query(FORCE, [login.session, p.provider])).rows,
        [{ refreshed: true, sqlstate: null }], 'refreshed past the estimate');
    const st = await tokenStatus(ctx.pool, login.session, p.provider);
    assert.strictEqual(st.status, 'active');
    assert.strictEqual(st.refresh_expiry_source, 'estimate');
    assert.ok(st.refresh_expires_at > before.refresh_expires_at, 'a successful refresh moved the estimate on');
    const t = (await ctx.pool.query(GET, [login.session, p.provider])).rows[0].t;
    assert.ok(t !== login.grant.access_token, 'the refreshed token is served');
    const g = await ctx.grant(login.grant.grant_id);
    assert.deepStrictEqual([g.rotations, g.revoked], [1, false]);
    assert.strictEqual(before.refresh_expiry_source, 'estimate', 'token_status says the first expiry was estimated');
});

test('b: no stated lifetime, the provider says invalid_grant past the estimate: reauth_required (the provider decides)', async () => {
    const p = await silentProvider();
    const login = await store(p);
    await pastRefreshExpiry(login.session, p.provider);
    await ctx.idp.client.admin('POST', `/admin/grants/${login.grant.grant_id}/revoke`, {});
    const rows = (await ctx.pool.query(FORCE, [login.session, p.provider])).rows;
    assert.deepStrictEqual(rows, [{ refreshed: false, sqlstate: 'UT004' }]);
    const st = await tokenStatus(ctx.pool, login.session, p.provider);
    assert.strictEqual(st.status, 'reauth_required');
    assert.strictEqual((await ctx.grant(login.grant.grant_id)).refresh_calls, 1, 'the provider was asked');
});

test('c: a lifetime the provider states in its answer is a cut-off, as before (no call past it)', async () => {
    const p = await statingProvider(2);
    const login = await store(p, { expiresIn: 0 });  // refreshed at once: the answer states 2 s
    await waitFor(async () => (await ctx.grant(login.grant.grant_id)).rotations === 1,
        { what: 'the engine to refresh the login' });
    const st = await waitFor(async () => {
        const s = await tokenStatus(ctx.pool, login.session, p.provider);
        return Number(s.generation) >= 2 && s;
    }, { what: 'the refresh to be saved' });
    assert.strictEqual(st.refresh_expiry_source, 'provider');
    await pastRefreshExpiry(login.session, p.provider);
    const rows = (await ctx.pool.query(FORCE, [login.session, p.provider])).rows;
    assert.deepStrictEqual(rows, [{ refreshed: false, sqlstate: 'UT004' }]);
    assert.strictEqual((await tokenStatus(ctx.pool, login.session, p.provider)).status, 'expired');
    assert.strictEqual((await ctx.grant(login.grant.grant_id)).refresh_calls, 1, 'no call past a stated expiry');
});

test('d: a lifetime stated by the store call is a cut-off too', async () => {
    const p = await silentProvider('1 day');
    const login = await store(p, { refreshExpiresIn: 1 });
    assert.strictEqual((await tokenStatus(ctx.pool, login.session, p.provider)).refresh_expiry_source, 'application');
    await pastRefreshExpiry(login.session, p.provider);
    const rows = (await ctx.pool.query(FORCE, [login.session, p.provider])).rows;
    assert.deepStrictEqual(rows, [{ refreshed: false, sqlstate: 'UT004' }]);
    assert.strictEqual((await ctx.grant(login.grant.grant_id)).refresh_calls, 0);
});

test('e: maintenance marks and purges on a stated expiry, never on an estimate', async () => {
    await setSystemGucs(ctx.pool, { 'upstream_token.purge_after': 0 });
    const silent = await silentProvider();
    const stating = await statingProvider(1);
    const estimated = await store(silent);
    const stated = await store(stating, { refreshExpiresIn: 1 });
    await pastRefreshExpiry(estimated.session, silent.provider);
    await pastRefreshExpiry(stated.session, stating.provider);
    // The stated one is purged by the next maintenance pass (once a minute, and at once in a
    // new engine: this test starts one rather than wait): that pass has then also looked at
    // the estimated one.
    const before = (await ctx.engine()).worker_pid;
    await ctx.pool.query('SELECT pg_catalog.pg_terminate_backend($1)', [before]);
    await waitFor(async () => (await tokenStatus(ctx.pool, stated.session, stating.provider)) === undefined,
        { timeoutMs: 30000, intervalMs: 200, what: 'maintenance to purge the stated, expired row' });
    await waitFor(async () => {
        const e = await ctx.engine();
        return e && e.ready && e.worker_pid !== before;
    }, { what: 'the new engine' });
    const st = await tokenStatus(ctx.pool, estimated.session, silent.provider);
    assert.ok(st, 'the row past its estimate is kept');
    assert.strictEqual(st.status, 'active', 'and not marked expired');
    const t = (await ctx.pool.query(GET, [estimated.session, silent.provider])).rows[0].t;
    assert.ok(t === estimated.grant.access_token, 'and still served');
    const e = await sqlError(ctx.pool.query(GET, [stated.session, stating.provider]), 'get of the purged row');
    assert.strictEqual(e.code, 'UT001');
});
