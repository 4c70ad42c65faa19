'use strict';
// Saving a refresh result against concurrent writers (I2, I4): a new login stored while a
// refresh is in flight is never overwritten by the older refresh's answer, and a row locked by
// a client's open transaction makes the engine's save wait and retry, never drop the answer.
const test = require('node:test');
const assert = require('node:assert');
const {
    setup, connect, waitFor, storeLoginWithStatus, assertNoSecretsInLog, tokenStatus, grantCalls,
} = require('./harness.js');

const GET = 'SELECT upstream_token.get_upstream_token($1, $2) AS t';
const STORE = 'SELECT upstream_token.store_upstream_token($1, $2, $3, $4, $5, $6)';

let ctx;
test.before(async () => { ctx = await setup({ poolSize: 5 }); });
test.after(async () => { await ctx.close(); });

// Waits until the IdP has received the refresh of `grantId` (it is in flight, held by a delay).
function refreshInFlight(grantId) {
    return waitFor(async () => (await grantCalls(ctx.idp, grantId, 0)).length > 0,
        { what: 'the engine to send the refresh' });
}

test('11. a new login stored while a refresh is in flight is kept; the late answer overwrites nothing', async () => {
    const p = await ctx.provider();
    await ctx.fault({ match: { client_id: p.clientId }, action: { delay_ms: 800 } });
    const old = await storeLoginWithStatus(ctx, p, { expiresIn: 0 });
    const c = await connect();
    try {
        await refreshInFlight(old.grant.grant_id);
        const waiting = c.query(GET, [old.session, p.provider]);
        waiting.catch(() => {});
        // The user signs in again meanwhile: the app stores the new login (fresh for an hour).
        const res = await ctx.idp.client.admin('POST', '/admin/grants', { client_id: p.clientId, subject: 'again' });
        const fresh = res.grants[0];
        await ctx.pool.query(STORE, [old.session, p.provider, fresh.access_token, fresh.refresh_token, 3600, fresh.id_token]);
        const stored = await tokenStatus(ctx.pool, old.session, p.provider);

        const got = (await waiting).rows[0].t;
        assert.ok(got === fresh.access_token, 'the waiting caller gets the new login\'s token');
        const calls = await grantCalls(ctx.idp, old.grant.grant_id, 0);
        assert.strictEqual(calls.length, 1);
        assert.strictEqual(calls[0].status, 200, 'the old grant was refreshed at the provider');
        const st = await tokenStatus(ctx.pool, old.session, p.provider);
        assert.strictEqual(Number(st.generation), Number(stored.generation), 'the late refresh saved nothing');
        assert.strictEqual(st.refreshed_at, null);
        assert.strictEqual(st.expires_at.getTime(), stored.expires_at.getTime());
        const now = (await ctx.pool.query(GET, [old.session, p.provider])).rows[0].t;
        assert.ok(now === fresh.access_token, 'the new login is what is served');
        // The new login's refresh token is the stored one: a forced refresh rotates its grant.
        const forced = (await ctx.pool.query(
            'SELECT refreshed, sqlstate FROM upstream_token.refresh_upstream_token($1, $2)', [old.session, p.provider])).rows;
        assert.deepStrictEqual(forced, [{ refreshed: true, sqlstate: null }]);
        const g = await ctx.grant(fresh.grant_id);
        assert.strictEqual(g.rotations, 1);
        assert.strictEqual(g.reuse_detected, 0);
        const gOld = await ctx.grant(old.grant.grant_id);
        assertNoSecretsInLog([old.grant.access_token, old.grant.refresh_token, old.grant.id_token,
            fresh.access_token, fresh.refresh_token, fresh.id_token, g.refresh_token, gOld.refresh_token]);
    } finally {
        await c.end().catch(() => {});
    }
});

test('12. a row locked by a client transaction delays the save; the answer is kept and saved after', async () => {
    const p = await ctx.provider();
    await ctx.fault({ match: { client_id: p.clientId }, action: { delay_ms: 500 } });
    const login = await storeLoginWithStatus(ctx, p, { expiresIn: 0 });
    const c = await connect();
    try {
        await refreshInFlight(login.grant.grant_id);
        const e0 = await ctx.engine();
        // An app transaction rewrites the row and stays open past the provider's answer.
        await c.query('BEGIN');
        await c.query(STORE, [login.session, p.provider, login.grant.access_token, login.grant.refresh_token, 0,
            login.grant.id_token]);
        await waitFor(async () => Number((await ctx.engine()).persist_retries) > Number(e0.persist_retries),
            { what: 'the engine to retry a save blocked by the row lock' });
        await c.query('ROLLBACK');

        await waitFor(async () => {
            const st = await tokenStatus(ctx.pool, login.session, p.provider);
            return Number(st.generation) === Number(login.before.generation) + 1;
        }, { what: 'the blocked save to go through after the rollback' });
        const tok = (await ctx.pool.query(GET, [login.session, p.provider])).rows[0].t;
        assert.ok(tok !== login.grant.access_token, 'the refreshed token is served');
        const g = await ctx.grant(login.grant.grant_id);
        assert.strictEqual(g.refresh_calls, 1, 'one provider call: the answer was kept, not re-fetched');
        assert.strictEqual(g.rotations, 1);
        assert.strictEqual(g.reuse_detected, 0);
        assert.strictEqual(g.active, true);
        assertNoSecretsInLog([login.grant.access_token, login.grant.refresh_token, login.grant.id_token, tok,
            g.refresh_token]);
    } finally {
        await c.query('ROLLBACK').catch(() => {});
        await c.end().catch(() => {});
    }
});
