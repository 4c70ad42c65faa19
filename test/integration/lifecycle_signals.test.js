'use strict';
// The engine and its signals, and the end of a token's life. SIGTERM with 100 refreshes in
// flight: the engine exits at once, every waiting caller gets a typed answer at once (not a
// wait_timeout), the postmaster starts a new engine, and every session then refreshes or ends
// cleanly as reauth_required, with every row still decrypting. Purge: with purge_after = 0 the
// maintenance pass deletes a token whose refresh token expired (announcing `expired`), and
// keeps one whose access token expired long ago while its refresh token is valid (I8).
const fs = require('node:fs');
const test = require('node:test');
const assert = require('node:assert');
const { setup, connect, waitFor, unique, storeMany, callLog, setSystemGucs } = require('./harness.js');

// Whether a process has exited (gone, or a zombie the postmaster has not reaped yet).
function processGone(pid) {
    try {
        const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
        return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
    } catch {
        return true;
    }
}

// Runs one get on its own connection; resolves {ok, code, at} and never rejects.
async function getOnOwnConnection(session, provider) {
    let c;
    try {
        c = await connect();
        const r = await c.query('SELECT upstream_token.get_upstream_token($1, $2) AS t', [session, provider]);
        return { ok: true, token: r.rows[0].t, at: Date.now() };
    } catch (e) {
        return { ok: false, code: e.code || null, message: e.message, at: Date.now() };
    } finally {
        if (c) c.end().catch(() => {});
    }
}

// SIGTERMs the engine and waits for the postmaster's replacement; returns {pid, gone_ms, back_ms}.
async function restartEngine(ctx) {
    const old = await ctx.engine();
    assert.ok(old.worker_pid > 0 && old.ready, 'the engine runs');
    const t0 = Date.now();
    process.kill(old.worker_pid, 'SIGTERM');
    await waitFor(() => processGone(old.worker_pid), { timeoutMs: 1000, intervalMs: 5, what: 'the engine to exit' });
    const goneMs = Date.now() - t0;
    await waitFor(async () => {
        const e = await ctx.engine();
        return e.ready && e.worker_pid > 0 && e.worker_pid !== old.worker_pid;
    }, { timeoutMs: 20000, intervalMs: 100, what: 'the postmaster to start a new engine' });
    return { oldPid: old.worker_pid, goneMs, backMs: Date.now() - t0 };
}

let ctx;
test.before(async () => { ctx = await setup({ poolSize: 6 }); });
test.after(async () => {
    await setSystemGucs(ctx.pool, { 'upstream_token.max_concurrent_refreshes': null, 'upstream_token.purge_after': null });
    await ctx.close();
});

test('SIGTERM with 100 refreshes in flight: quick exit, typed answers, restart, clean outcomes', async (t) => {
    const N = 100;
    const DELAY_MS = 2000;
    const WAIT_TIMEOUT_MS = 10000;  // upstream_token.wait_timeout default
    const t0 = Date.now();
    await setSystemGucs(ctx.pool, { 'upstream_token.max_concurrent_refreshes': 128 });
    t.after(() => setSystemGucs(ctx.pool, { 'upstream_token.max_concurrent_refreshes': null }));
    const p = await ctx.provider({ accessTtl: 3600 });
    const { grants } = await ctx.idp.client.admin('POST', '/admin/grants',
        { client_id: p.clientId, subject: unique('user'), count: N });
    const rows = grants.map((g) => ({ session: unique('term'), grantId: g.grant_id, access: g.access_token,
        refresh: g.refresh_token, idToken: g.id_token, expiresIn: 0 }));
    await ctx.fault({ match: { client_id: p.clientId }, action: { delay_ms: DELAY_MS } });
    t.after(() => ctx.clearFaults());
    await storeMany(ctx.pool, p.provider, rows);
    const calls = rows.map((r) => getOnOwnConnection(r.session, p.provider));
    await waitFor(async () => (await ctx.stats()).in_flight >= N / 2,
        { timeoutMs: 10000, intervalMs: 10, what: 'half the refreshes in flight at the provider' });
    const atKill = await ctx.stats();
    const engine = await ctx.engine();
    const killedAt = Date.now();
    process.kill(engine.worker_pid, 'SIGTERM');
    await waitFor(() => processGone(engine.worker_pid), { timeoutMs: 1000, intervalMs: 5, what: 'the engine to exit within 1 s' });
    const goneMs = Date.now() - killedAt;

    // Every caller gets an answer at once: a result or a typed error, never a timeout.
    const outcomes = await Promise.all(calls);
    const slowest = Math.max(...outcomes.map((o) => o.at - killedAt));
    assert.ok(slowest < WAIT_TIMEOUT_MS / 2, `callers answered ${slowest} ms after SIGTERM (wait_timeout is ${WAIT_TIMEOUT_MS})`);
    const codes = outcomes.filter((o) => !o.ok).map((o) => o.code);
    for (const c of codes) assert.ok(['UT003', 'UT006'].includes(c), `engine stopped / unavailable, got ${c}`);
    await ctx.clearFaults();

    const back = await waitFor(async () => {
        const e = await ctx.engine();
        return e.ready && e.worker_pid > 0 && e.worker_pid !== engine.worker_pid && e;
    }, { timeoutMs: 20000, intervalMs: 100, what: 'the postmaster to start a new engine' });
    const backMs = Date.now() - killedAt;
    assert.strictEqual(Number(back.worker_starts), Number(engine.worker_starts) + 1);
    // The dead engine's requests finish at the provider (it rotates although nobody listens).
    await waitFor(async () => (await callLog(ctx.idp, p.clientId, t0)).every((x) => x.status !== null || x.dropped),
        { timeoutMs: DELAY_MS + 15000, what: 'the orphaned requests to finish at the provider' });

    // Every session: refreshed by the new engine, or a clean reauth_required (its rotation was
    // made at the provider but never committed); every row decrypts, no internal error.
    const summary = { refreshed: 0, reauth: 0 };
    for (const r of rows) {
        const f = (await ctx.pool.query(
            'SELECT refreshed, sqlstate FROM upstream_token.refresh_upstream_token($1, $2)', [r.session, p.provider])).rows[0];
        const got = await getOnOwnConnection(r.session, p.provider);
        const g = await ctx.grant(r.grantId);
        if (f.refreshed) {
            summary.refreshed += 1;
            assert.ok(got.ok, `get after a successful refresh: ${got.code}`);
            assert.ok(g.active);
        } else {
            summary.reauth += 1;
            assert.strictEqual(f.sqlstate, 'UT004', `forced refresh: ${f.sqlstate}`);
            assert.ok(!g.active && g.reuse_detected >= 1, 'the provider revoked the grant after seeing the old token again');
            assert.ok(got.ok || got.code === 'UT004', `get: ${got.code}`);
        }
    }
    const status = await ctx.pool.query(
        'SELECT status, has_refresh_token, count(*)::int AS n FROM upstream_token.token_status WHERE provider = $1 GROUP BY 1, 2',
        [p.provider]);
    for (const s of status.rows) {
        assert.ok(['active', 'reauth_required'].includes(s.status), `status ${s.status}`);
        assert.strictEqual(s.has_refresh_token, true);
    }
    assert.strictEqual(summary.refreshed + summary.reauth, N);
    t.diagnostic(`at SIGTERM ${atKill.in_flight} refreshes in flight at the provider; engine gone after ${goneMs} ms; ` +
        `callers: ${outcomes.filter((o) => o.ok).length} served, errors ${JSON.stringify(countBy(codes))}, ` +
        `last answer ${slowest} ms after SIGTERM; new engine after ${backMs} ms; afterwards ${summary.refreshed} ` +
        `refreshed, ${summary.reauth} reauth_required; ${Date.now() - t0} ms`);
});

// Counts equal values (for diagnostics).
function countBy(values) {
    const out = {};
    for (const v of values) out[v] = (out[v] || 0) + 1;
    return out;
}

test('purge_after = 0: an expired refresh token is purged, an expired access token is not (I8)', async (t) => {
    const t0 = Date.now();
    await setSystemGucs(ctx.pool, { 'upstream_token.purge_after': 0 });
    t.after(() => setSystemGucs(ctx.pool, { 'upstream_token.purge_after': null }));
    const p = await ctx.provider({ accessTtl: 3600 });
    const { grants } = await ctx.idp.client.admin('POST', '/admin/grants',
        { client_id: p.clientId, subject: unique('user'), count: 3 });
    const [gGone, gKept, gFresh] = grants;
    // The kept token cannot be refreshed (the provider is down for it), so its access token
    // stays expired while its refresh token is valid for its default lifetime.
    await ctx.fault({ match: { grant_id: gKept.grant_id }, action: { status: 503 } });
    t.after(() => ctx.clearFaults());
    // A store row for a minted grant.
    const row = (g, name, expiresIn, refreshExpiresIn) => ({ session: unique(name), access: g.access_token,
        refresh: g.refresh_token, idToken: g.id_token, expiresIn, refreshExpiresIn });
    const gone = row(gGone, 'purge-gone', 3600, 1);
    const kept = row(gKept, 'purge-kept', 0);
    const fresh = row(gFresh, 'purge-fresh', 3600);
    await storeMany(ctx.pool, p.provider, [gone, kept, fresh]);
    // "Long ago": further back than any purge_after.
    await ctx.pool.query(
        "UPDATE upstream_token.token SET expires_at = now() - interval '30 days' WHERE session = $1", [kept.session]);

    const listener = await connect();
    t.after(() => listener.end());
    const events = [];
    listener.on('notification', (n) => events.push(JSON.parse(n.payload)));
    await listener.query('LISTEN upstream_token_events');

    await waitFor(async () => (await ctx.pool.query(
        'SELECT refresh_expires_at <= now() AS over FROM upstream_token.token_status WHERE session = $1',
        [gone.session])).rows[0].over, { timeoutMs: 5000, what: 'the refresh token to pass its lifetime' });
    // The maintenance pass runs once a minute, and first right after the engine starts.
    const restart = await restartEngine(ctx);
    await waitFor(async () => (await ctx.pool.query(
        'SELECT 1 FROM upstream_token.token WHERE session = $1', [gone.session])).rows.length === 0,
    { timeoutMs: 10000, intervalMs: 100, what: 'the token with an expired refresh token to be purged' });

    const left = await ctx.pool.query(
        `SELECT session, status, expires_at < now() AS access_expired, refresh_expires_at > now() AS refresh_valid,
                has_refresh_token FROM upstream_token.token_status WHERE provider = $1 ORDER BY session`, [p.provider]);
    const bySession = new Map(left.rows.map((r) => [r.session, r]));
    assert.strictEqual(bySession.has(gone.session), false, 'purged');
    const k = bySession.get(kept.session);
    assert.ok(k, 'the token whose access token expired 30 days ago is kept (I8)');
    assert.deepStrictEqual({ ...k, session: undefined },
        { session: undefined, status: 'active', access_expired: true, refresh_valid: true, has_refresh_token: true });
    assert.ok(bySession.get(fresh.session), 'an unexpired token is kept');
    await waitFor(() => events.some((e) => e.session === gone.session && e.event === 'expired'),
        { timeoutMs: 5000, what: 'the expired event for the purged token' });
    t.diagnostic(`engine restarted in ${restart.backMs} ms (gone after ${restart.goneMs} ms); purged by its ` +
        `first maintenance pass; ${Date.now() - t0} ms`);
});
