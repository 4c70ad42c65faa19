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
        assert.ok(Date.now() - t0 < 5000, 'a forced refresh during the refusal is answered at once');
        assert.notStrictEqual(r.rows[0].sqlstate, null, 'and reports that the refresh could not be done');
    } finally { await c.end(); }
    await new Promise((r) => setTimeout(r, Math.max(0, READ_ONLY_MS - (Date.now() - roAt))));
    const during = await ctx.stats();
    assert.strictEqual(during.token_requests - before.token_requests, N, 'no exchange started while writes were refused');
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

// Held answers are saved together, rows of all of them with one statement (issue 12): each
// still gets its own outcome. The database refuses the engine's writes while five answers
// arrive; meanwhile the app stores a new login for one session and the same login again for
// another. Once writes resume, the engine saves all five in one transaction.
test('held answers of every kind saved together: refreshed, foreign ID token, refused, row moved on, same login stored again', { timeout: 120000 }, async () => {
    const p = await ctx.provider({ accessTtl: 3600, idToken: true });
    const { grants } = await ctx.idp.client.admin('POST', '/admin/grants',
        { client_id: p.clientId, subject: unique('user'), count: 5 });
    const [ok, foreign, refused, moved, same] = grants.map((g) => ({ session: unique('mix'), grantId: g.grant_id,
        access: g.access_token, refresh: g.refresh_token, idToken: g.id_token, expiresIn: 0 }));
    const rows = [ok, foreign, refused, moved, same];
    const names = ['ok', 'foreign', 'refused', 'moved', 'same'];
    await ctx.fault({ match: { grant_id: foreign.grantId },
        action: { respond_delay_ms: 3000, id_token_claims: { sub: 'someone-else' } } });
    await ctx.fault({ match: { grant_id: refused.grantId }, action: { delay_ms: 3000, status: 400, oauth_error: 'invalid_grant' } });
    await ctx.fault({ match: { client_id: p.clientId }, action: { respond_delay_ms: 3000 } });
    const events = [];
    const listener = await connect();
    listener.on('notification', (n) => {
        const ev = JSON.parse(n.payload);
        const i = rows.findIndex((r) => r.session === ev.session);
        if (ev.provider === p.provider && i >= 0) events.push(`${names[i]}:${ev.event}`);
    });
    await listener.query('LISTEN upstream_token_events');
    const before = await ctx.engine();
    try {
        await storeMany(ctx.pool, p.provider, rows);
        await waitFor(async () => (await ctx.stats()).in_flight >= rows.length,
            { timeoutMs: 15000, what: 'all five exchanges under way at the provider' });
        await setSystemGucs(ctx.pool, { default_transaction_read_only: 'on' });
        await waitFor(async () => Number((await ctx.engine()).persist_retries) - Number(before.persist_retries) >= rows.length,
            { timeoutMs: 20000, what: 'every answer held (its first save refused)' });
        const app = await connect();
        try {
            await app.query('SET default_transaction_read_only = off');
            await app.query('SELECT upstream_token.store_upstream_token($1, $2, $3, $4, 3600)',
                [moved.session, p.provider, 'app-access-token', 'app-refresh-token']);
            await app.query('SELECT upstream_token.store_upstream_token($1, $2, $3, $4, 0, $5)',
                [same.session, p.provider, same.access, same.refresh, same.idToken]);
        } finally { await app.end(); }
    } finally {
        await setSystemGucs(ctx.pool, { default_transaction_read_only: null });
        await ctx.clearFaults();
    }
    const row = async (r) => (await ctx.pool.query(
        'SELECT generation::int, status, xmin::text AS xmin FROM upstream_token.token WHERE session = $1 AND provider = $2',
        [r.session, p.provider])).rows[0];
    await waitFor(async () => (await row(ok)).generation === 2 && (await row(same)).generation === 3,
        { timeoutMs: 20000, what: 'the held answers to be saved' });
    const [rOk, rForeign, rRefused, rMoved, rSame] = await Promise.all(rows.map(row));
    assert.deepStrictEqual([rOk.status, rForeign.status, rRefused.status, rMoved.status, rSame.status],
        ['active', 'invalid_binding', 'reauth_required', 'active', 'active']);
    assert.deepStrictEqual([rForeign.generation, rRefused.generation, rMoved.generation], [2, 1, 2],
        'the foreign answer\'s rotation saved, the refusal recorded, the app\'s store kept');
    assert.ok([rForeign, rRefused, rSame].every((r) => r.xmin === rOk.xmin), 'saved in one transaction');
    const get = (r) => ctx.pool.query('SELECT upstream_token.get_upstream_token($1, $2) AS t', [r.session, p.provider]);
    const served = (await get(ok)).rows[0].t;
    assert.ok(served !== ok.access, 'the refreshed access token is served');
    assert.strictEqual((await get(moved)).rows[0].t, 'app-access-token', 'the app\'s new login is served');
    assert.ok((await get(same)).rows[0].t !== same.access, 'the answer was saved over the same login stored again');
    for (const r of [ok, foreign, same]) {
        const g = await ctx.grant(r.grantId);
        assert.deepStrictEqual([g.revoked, g.reuse_detected, g.rotations], [false, 0, 1], `grant of ${r.session}`);
    }
    // The events of the engine's saves (the app's stores send their own).
    const engineEvents = () => events.filter((e) => /:(refreshed|invalid_binding|reauth_required)$/.test(e)).sort();
    await waitFor(async () => engineEvents().length >= 4, { timeoutMs: 5000, what: 'the events of the saved rows' });
    await listener.end();
    assert.deepStrictEqual(engineEvents(),
        ['foreign:invalid_binding', 'ok:refreshed', 'refused:reauth_required', 'same:refreshed']);
});
