'use strict';
// A received token leaves the engine's memory only once committed (issue 9, defect 3). The
// provider rotates the refresh tokens, then the database refuses the engine's writes
// (default_transaction_read_only, as an operator sets it during a maintenance window) for
// longer than 0.1.0's retry budget (about 50 tries over two minutes, after which it dropped
// the answer and the next refresh presented the consumed token: grant revoked). While the
// database refuses, no new exchange starts; once it accepts again every answer is saved.
const test = require('node:test');
const assert = require('node:assert');
const { setup, connect, waitFor, unique, storeMany, setSystemGucs } = require('./harness.js');

const READ_ONLY_MS = 135000;  // beyond 0.1.0's cap (50 tries, 0.1 s more each: about 123 s)

let ctx;
test.before(async () => { ctx = await setup({ poolSize: 4 }); });
test.after(async () => {
    await setSystemGucs(ctx.pool, { default_transaction_read_only: null }).catch(() => {});
    await ctx.clearFaults().catch(() => {});
    await ctx.close();
});

test('answers held while the database is read-only are saved when it accepts writes again', { timeout: 300000 }, async () => {
    const N = 4;
    const p = await ctx.provider({ accessTtl: 3600 });
    const before = await ctx.stats();
    const { grants } = await ctx.idp.client.admin('POST', '/admin/grants',
        { client_id: p.clientId, subject: unique('user'), count: N });
    const rows = grants.map((g) => ({ session: unique('ro'), grantId: g.grant_id, access: g.access_token,
        refresh: g.refresh_token, idToken: g.id_token, expiresIn: 0 }));
    // Rotated at once, answered after the database turned read-only.
    await ctx.fault({ match: { client_id: p.clientId }, action: { respond_delay_ms: 3000 } });
    await storeMany(ctx.pool, p.provider, rows);
    await waitFor(async () => (await ctx.stats()).in_flight >= N,
        { timeoutMs: 15000, what: 'the refreshes rotated at the provider, answers pending' });
    await setSystemGucs(ctx.pool, { default_transaction_read_only: 'on' });
    const roAt = Date.now();
    await waitFor(async () => (await ctx.stats()).token_success - before.token_success >= N,
        { timeoutMs: 15000, what: 'the answers to reach the engine' });
    await ctx.clearFaults();
    // A caller meanwhile is answered at once (the engine starts nothing it could not save).
    const c = await connect();
    try {
        await c.query('SET default_transaction_read_only = off');
        const t0 = Date.now();
        const r = await c.query('SELECT sqlstate FROM upstream_token.refresh_upstream_token($1, $2)', [rows[0].session, p.provider]);
        
        
    } finally { await c.end(); }
    await new Promise((r) => setTimeout(r, Math.max(0, READ_ONLY_MS - (Date.now() - roAt))));
    const during = await ctx.stats();
    
    await setSystemGucs(ctx.pool, { default_transaction_read_only: null });
    const sessions = rows.map((r) => r.session);
    await waitFor(async () => (await ctx.pool.query(
        'SELECT count(*)::int AS n FROM upstream_token.token WHERE provider = $1 AND session = ANY($2) AND generation > 1',
        [p.provider, sessions])).rows[0].n === N, { timeoutMs: 20000, what: 'every held answer to be saved' });
    for (const r of rows) {
        const f = (await ctx.pool.query(
            'SELECT sqlstate FROM upstream_token.refresh_upstream_token($1, $2)', [r.session, p.provider])).rows[0];
        assert.strictEqual(f.sqlstate, null, `session ${r.session} refreshes again`);
    }
    const after = await ctx.stats();
    assert.strictEqual(after.reuse_detected - before.reuse_detected, 0, 'no consumed token was presented again');
    assert.strictEqual(after.revoked_grants - before.revoked_grants, 0, 'no grant was revoked');
});
