'use strict';
// refresh_upstream_token forces a refresh even of a fresh token (one call, generation + 1, a new
// token) and reports per provider; with two providers on one session both are refreshed and
// reported. get_upstream_credentials returns one row per provider, and a provider whose grant
// was revoked at the IdP is flagged in its own row (UT004) while the other row is served.
const test = require('node:test');
const assert = require('node:assert');
const {
    setup, connect, unique, storeLogin, grantCalls, storeLoginWithStatus, assertNoSecretsInLog, tokenStatus, sqlError,
} = require('./harness.js');

const GET = 'SELECT upstream_token.get_upstream_token($1, $2) AS t';
const REFRESH = `SELECT provider_name, refreshed, expires_at, sqlstate, error
                   FROM upstream_token.refresh_upstream_token($1, $2) ORDER BY provider_name`;

let ctx;
test.before(async () => { ctx = await setup({ poolSize: 5 }); });
test.after(async () => { await ctx.close(); });

test('8a. refresh_upstream_token forces a refresh of a fresh token', async () => {
    const p = await ctx.provider();
    const login = await storeLoginWithStatus(ctx, p, { expiresIn: 3600 });
    const fresh = (await ctx.pool.query(GET, [login.session, p.provider])).rows[0].t;
    assert.ok(fresh === login.grant.access_token, 'a fresh token is served as stored');

    const rows = (await ctx.pool.query(REFRESH, [login.session, p.provider])).rows;
    assert.strictEqual(rows.length, 1);
    assert.strictEqual(rows[0].provider_name, p.provider);
    assert.strictEqual(rows[0].refreshed, true, `refreshed: ${rows[0].sqlstate} ${rows[0].error}`);
    assert.strictEqual(rows[0].sqlstate, null);
    const st = await tokenStatus(ctx.pool, login.session, p.provider);
    assert.strictEqual(Number(st.generation), Number(login.before.generation) + 1, 'generation + 1');
    assert.strictEqual(rows[0].expires_at.getTime(), st.expires_at.getTime(), 'reports the new expiry');
    const g = await ctx.grant(login.grant.grant_id);
    assert.strictEqual(g.refresh_calls, 1, 'one provider call');
    assert.strictEqual(g.rotations, 1);
    const tok = (await ctx.pool.query(GET, [login.session, p.provider])).rows[0].t;
    assert.ok(tok !== login.grant.access_token, 'a new access token is served');
    assertNoSecretsInLog([login.grant.access_token, login.grant.refresh_token, login.grant.id_token, tok, g.refresh_token]);
});

test('8b. two providers on one session: both refreshed and reported; credentials flag a revoked grant', async () => {
    const pA = await ctx.provider();
    const pB = await ctx.provider();
    const session = unique('sess');
    const a = await storeLogin(ctx, pA, { session, expiresIn: 3600 });
    const b = await storeLogin(ctx, pB, { session, expiresIn: 3600 });
    const secrets = [a.grant.access_token, a.grant.refresh_token, a.grant.id_token,
        b.grant.access_token, b.grant.refresh_token, b.grant.id_token];

    const rows = (await ctx.pool.query(REFRESH, [session, null])).rows;
    assert.deepStrictEqual(rows.map((r) => [r.provider_name, r.refreshed, r.sqlstate]),
        [[pA.provider, true, null], [pB.provider, true, null]].sort((x, y) => (x[0] < y[0] ? -1 : 1)),
        'both providers refreshed and reported');
    const gA = await ctx.grant(a.grant.grant_id);
    const gB = await ctx.grant(b.grant.grant_id);
    assert.strictEqual(gA.rotations, 1);
    assert.strictEqual(gB.rotations, 1);

    let creds = (await ctx.pool.query(
        'SELECT * FROM upstream_token.get_upstream_credentials($1) ORDER BY provider', [session])).rows;
    assert.deepStrictEqual(creds.map((r) => r.provider), [pA.provider, pB.provider].sort());
    for (const r of creds) {
        const st = await tokenStatus(ctx.pool, session, r.provider);
        const login = r.provider === pA.provider ? a : b;
        assert.strictEqual(r.sqlstate, null, `${r.provider}: no error`);
        assert.ok(r.access_token && r.access_token !== login.grant.access_token, `${r.provider}: the refreshed access token`);
        assert.ok(r.access_token === (await ctx.pool.query(GET, [session, r.provider])).rows[0].t,
            `${r.provider}: the same token get_upstream_token serves`);
        // (the IdP's ID token can be byte-identical to the login's within the same second)
        assert.ok(r.id_token && r.id_token.split('.').length === 3, `${r.provider}: an ID token`);
        assert.strictEqual(r.expires_at.getTime(), st.expires_at.getTime(), `${r.provider}: its expiry`);
        secrets.push(r.access_token, r.id_token);
    }

    // The user withdraws consent for B at the provider; B's access token then runs out (stored
    // again as expired, with the refresh token it had).
    const bRefresh = gB.refresh_token;
    secrets.push(gA.refresh_token, bRefresh);
    await ctx.idp.client.admin('POST', `/admin/grants/${b.grant.grant_id}/revoke`);
    await ctx.pool.query('SELECT upstream_token.store_upstream_token($1, $2, $3, $4, 0)',
        [session, pB.provider, creds.find((r) => r.provider === pB.provider).access_token, bRefresh]);

    creds = (await ctx.pool.query(
        'SELECT * FROM upstream_token.get_upstream_credentials($1) ORDER BY provider', [session])).rows;
    const rowA = creds.find((r) => r.provider === pA.provider);
    const rowB = creds.find((r) => r.provider === pB.provider);
    assert.strictEqual(creds.length, 2);
    assert.strictEqual(rowB.sqlstate, 'UT004', `B flagged reauth_required: ${rowB.sqlstate} ${rowB.error}`);
    assert.strictEqual(rowB.access_token, null);
    assert.ok(rowB.error && !rowB.error.includes(bRefresh), 'B has an error text, without the token');
    assert.strictEqual(rowA.sqlstate, null, 'A is fine');
    assert.ok(rowA.access_token && rowA.id_token, 'A still gets its tokens');
    assert.strictEqual((await tokenStatus(ctx.pool, session, pB.provider)).status, 'reauth_required');
    assert.strictEqual((await ctx.grant(a.grant.grant_id)).rotations, 1, 'A was not refreshed again');

    // A forced refresh of the whole session reports each provider on its own.
    const again = (await ctx.pool.query(REFRESH, [session, null])).rows;
    const againA = again.find((r) => r.provider_name === pA.provider);
    const againB = again.find((r) => r.provider_name === pB.provider);
    assert.strictEqual(againA.refreshed, true);
    assert.strictEqual(againB.refreshed, false);
    assert.strictEqual(againB.sqlstate, 'UT004');
    secrets.push((await ctx.grant(a.grant.grant_id)).refresh_token);
    assertNoSecretsInLog(secrets);
});

test('8c. refresh_upstream_token of an unknown session is UT001', async () => {
    const e = await sqlError(ctx.pool.query(REFRESH, [unique('nobody'), null]), 'refresh of an unknown session');
    assert.strictEqual(e.code, 'UT001');
});

test('8d. 20 concurrent forced refreshes of one session: calls never overlap, no reuse, all succeed', async () => {
    const p = await ctx.provider();
    await ctx.fault({ match: { client_id: p.clientId }, action: { delay_ms: 100 } });
    const login = await storeLoginWithStatus(ctx, p, { expiresIn: 3600 });
    const clients = [];
    try {
        for (let i = 0; i < 20; i++) clients.push(await connect());
        const results = await Promise.all(clients.map((c) => c.query(REFRESH, [login.session, p.provider])));
        for (const r of results) {
            assert.deepStrictEqual(r.rows.map((x) => [x.provider_name, x.refreshed, x.sqlstate]),
                [[p.provider, true, null]], 'every caller sees its session refreshed');
        }
        const calls = await grantCalls(ctx.idp, login.grant.grant_id, 0);
        assert.ok(calls.length >= 1 && calls.length <= 20, `${calls.length} provider calls`);
        for (let i = 1; i < calls.length; i++) {
            assert.ok(calls[i].t_ms >= calls[i - 1].t_ms + calls[i - 1].duration_ms - 1,
                `call ${i} started before call ${i - 1} ended (I1)`);
        }
        assert.ok(calls.every((c) => c.status === 200), 'every call succeeded');
        const g = await ctx.grant(login.grant.grant_id);
        assert.strictEqual(g.reuse_detected, 0);
        assert.strictEqual(g.active, true);
        assert.strictEqual(g.rotations, calls.length, 'every rotation was saved and used for the next one');
        const st = await tokenStatus(ctx.pool, login.session, p.provider);
        assert.strictEqual(Number(st.generation), Number(login.before.generation) + calls.length);
        const tok = (await ctx.pool.query(GET, [login.session, p.provider])).rows[0].t;
        assertNoSecretsInLog([login.grant.access_token, login.grant.refresh_token, login.grant.id_token, tok, g.refresh_token]);
    } finally {
        await Promise.all(clients.map((c) => c.end().catch(() => {})));
    }
});
