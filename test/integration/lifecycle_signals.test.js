'use strict';
// The end of a token's life (an orderly stop with refreshes in flight is orderly_stop.test.js).
// Purge: with purge_after = 0 the maintenance pass deletes a token whose refresh token expired (announcing `expired`), and
// keeps one whose access token expired long ago while its refresh token is valid (I8).
const fs = require('node:fs');
const test = require('node:test');
const assert = require('node:assert');
const { setup, connect, waitFor, unique, storeMany, setSystemGucs } = require('./harness.js');

// Whether a process has exited (gone, or a zombie the postmaster has not reaped yet).
function processGone(pid) {
    try {
        const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
        return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
    } catch {
        return true;
    }
}

// SIGTERMs the engine and waits for the postmaster's replacement; returns {pid, gone_ms, back_ms}.
async function restartEngine(ctx) {
    const old = await ctx.engine();
    assert.ok(old.worker_pid > 0 && old.ready, 'the engine runs');
    const t0 = Date.now();
    process.kill(old.worker_pid, 'SIGTERM');
    await waitFor(() => processGone(old.worker_pid), { timeoutMs: 5000, intervalMs: 5, what: 'the engine to exit' });
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
