'use strict';
// An orderly stop loses no exchange (issue 9, defect 5). The provider rotates every refresh
// token at once and answers two seconds later; while the answers are on their way the engine
// is stopped: by pg_terminate_backend (SIGTERM, the postmaster restarts it) and by a fast
// restart of the whole server. The engine finishes the exchanges in flight, commits them,
// and only then exits: every rotated token is saved, no grant is revoked, every session goes
// on refreshing. Only SIGKILL, a crash or an immediate shutdown may lose an exchange
// (crash.test.js counts that case).
const test = require('node:test');
const assert = require('node:assert');
const { setup, connect, waitFor, unique, storeMany, cluster, ensureEngine, processGone } = require('./harness.js');

const RESPOND_DELAY_MS = 2000;

// Runs one get on its own connection; resolves {ok, code} and never rejects.
async function getOnOwnConnection(session, provider) {
    let c;
    try {
        c = await connect();
        await c.query('SELECT upstream_token.get_upstream_token($1, $2) AS t', [session, provider]);
        return { ok: true };
    } catch (e) {
        return { ok: false, code: e.code || null, message: e.message };
    } finally {
        if (c) c.end().catch(() => {});
    }
}

// Stores `n` due logins whose refreshes the provider answers late; returns the rows.
async function dueLogins(p, n) {
    const { grants } = await ctx.idp.client.admin('POST', '/admin/grants',
        { client_id: p.clientId, subject: unique('user'), count: n });
    const rows = grants.map((g) => ({ session: unique('stop'), grantId: g.grant_id, access: g.access_token,
        refresh: g.refresh_token, idToken: g.id_token, expiresIn: 0 }));
    await ctx.fault({ match: { client_id: p.clientId }, action: { respond_delay_ms: RESPOND_DELAY_MS } });
    await storeMany(ctx.pool, p.provider, rows);
    return rows;
}

// After the stop: every session refreshes again through the new engine, and the provider
// saw no reuse (the rotated tokens were saved).
async function assertNothingLost(p, rows, before) {
    await ctx.clearFaults();
    for (const r of rows) {
        const f = (await ctx.pool.query(
            'SELECT refreshed, sqlstate FROM upstream_token.refresh_upstream_token($1, $2)', [r.session, p.provider])).rows[0];
        assert.strictEqual(f.sqlstate, null, `session ${r.session}: forced refresh after the stop failed with ${f.sqlstate}`);
        const g = await ctx.grant(r.grantId);
        assert.ok(g.active, `grant of ${r.session} still active`);
    }
    const after = await ctx.stats();
    assert.strictEqual(after.reuse_detected - before.reuse_detected, 0, 'no rotated token was reused');
    assert.strictEqual(after.revoked_grants - before.revoked_grants, 0, 'no grant was revoked');
}

let ctx;
test.before(async () => { ctx = await setup({ poolSize: 6 }); });
test.after(async () => { await ctx.clearFaults().catch(() => {}); await ctx.close(); });

test('pg_terminate_backend(engine) with refreshes in flight: drained, saved, callers served', async (t) => {
    const N = 30;
    const p = await ctx.provider({ accessTtl: 3600 });
    const before = await ctx.stats();
    const rows = await dueLogins(p, N);
    let served = 0;
    const calls = rows.map((r) => getOnOwnConnection(r.session, p.provider).then((o) => { if (o.ok) served += 1; return o; }));
    // Every exchange reached the provider (and was rotated there) before the engine is told to stop.
    await waitFor(async () => (await ctx.stats()).in_flight >= N,
        { timeoutMs: 15000, intervalMs: 10, what: 'every refresh rotated at the provider, its answer pending' });
    // And every caller waits on the engine (or was served already): a caller that arrives
    // after SIGTERM gets UT006 by design (docs/engine.md), which is not what this test asks.
    await waitFor(async () => served + Number((await ctx.pool.query(
        `SELECT count(*) AS n FROM pg_stat_activity
          WHERE wait_event_type = 'Extension' AND query LIKE '%get_upstream_token%'`)).rows[0].n) >= N,
    { timeoutMs: 15000, intervalMs: 10, what: 'every caller waiting on the engine' });
    const engine = await ctx.engine();
    const inFlight = Number(engine.in_flight);
    const killedAt = Date.now();
    await ctx.pool.query('SELECT pg_terminate_backend($1)', [engine.worker_pid]);
    await waitFor(() => processGone(engine.worker_pid),
        { timeoutMs: RESPOND_DELAY_MS + 10000, intervalMs: 10, what: 'the engine to drain and exit' });
    const goneMs = Date.now() - killedAt;
    const outcomes = await Promise.all(calls);
    const failed = outcomes.filter((o) => !o.ok);
    assert.deepStrictEqual(failed, [], 'every waiting caller got its refreshed token');
    await waitFor(async () => {
        const e = await ctx.engine();
        return e.ready && e.worker_pid !== engine.worker_pid;
    }, { timeoutMs: 20000, intervalMs: 100, what: 'the postmaster to start a new engine' });
    await assertNothingLost(p, rows, before);
    t.diagnostic(`in flight at SIGTERM: ${inFlight}; engine gone after ${goneMs} ms`);
});

test('pg_ctl restart -m fast with refreshes in flight: every rotated token saved', async () => {
    const N = 12;
    const p = await ctx.provider({ accessTtl: 3600 });
    const before = await ctx.stats();
    const rows = await dueLogins(p, N);
    // Nobody waits: the engine's own plan refreshes the due tokens (a fast shutdown
    // disconnects every client anyway).
    await waitFor(async () => (await ctx.stats()).in_flight >= N,
        { timeoutMs: 20000, intervalMs: 10, what: 'every refresh rotated at the provider, its answer pending' });
    cluster('restart');  // pg_ctl stop -m fast, then start
    // The pool's old connections died with the server: retry until a new one serves.
    await waitFor(async () => { await ensureEngine(ctx.pool); return true; },
        { timeoutMs: 40000, intervalMs: 200, what: 'the restarted server and engine' });
    const saved = await ctx.pool.query(
        'SELECT count(*)::int AS n FROM upstream_token.token WHERE provider = $1 AND generation > 1', [p.provider]);
    assert.strictEqual(saved.rows[0].n, N, 'every rotated token was committed before the server stopped');
    await assertNothingLost(p, rows, before);
});
