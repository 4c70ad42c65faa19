'use strict';
// Each part of the engine is its own failure domain (issue 9, defects 2 and 7).
// - A queued revocation whose row is locked by a client transaction: its answer cannot be
//   recorded, yet every refresh answered in the same pass is saved (0.1.0 lost them all: the
//   error escaped to the loop and the answers handled in that pass were thrown away).
// - A revocation row that cannot be sent (unreadable ciphertext) waits with its own backoff
//   and reason; proactive refresh goes on (0.1.0 refreshed nothing while it was queued).
const test = require('node:test');
const assert = require('node:assert');
const { setup, connect, waitFor, unique, storeMany, providerWith } = require('./harness.js');

let ctx;
test.before(async () => { ctx = await setup({ poolSize: 8 }); });
test.after(async () => { await ctx.clearFaults().catch(() => {}); await ctx.close(); });

// A provider with a revocation endpoint, and `n` of its logins stored due now.
async function dueLogins(p, n) {
    const { grants } = await ctx.idp.client.admin('POST', '/admin/grants',
        { client_id: p.clientId, subject: unique('user'), count: n });
    return grants.map((g) => ({ session: unique('fd'), grantId: g.grant_id, access: g.access_token,
        refresh: g.refresh_token, idToken: g.id_token, expiresIn: 0 }));
}

// Sessions of `provider` whose refresh was saved (generation moved past the stored one).
async function savedCount(provider, sessions) {
    const r = await ctx.pool.query(
        'SELECT count(*)::int AS n FROM upstream_token.token WHERE provider = $1 AND session = ANY($2) AND generation > 1',
        [provider, sessions]);
    return r.rows[0].n;
}

test('a locked revocation row does not cost the refreshes answered in the same pass', async () => {
    const p = await providerWith(ctx, { args: { revocation_endpoint: `${ctx.idp.url}/revoke` } });
    const before = await ctx.stats();
    const REVOKED = 40;
    const REFRESHED = 30;
    const doomed = await dueLogins(p, REVOKED);
    await storeMany(ctx.pool, p.provider, doomed.map((r) => ({ ...r, expiresIn: 3600 })));
    const locker = await connect();
    try {
        // Refreshes and revocations are answered in waves at the same instants, so answers of
        // both kinds reach the engine together.
        for (let i = 0; i < 10; i += 1) {
            await ctx.fault({ match: { client_id: p.clientId }, action: { respond_delay_ms: 1000 + 150 * i }, count: 3 });
            await ctx.fault({ match: { client_id: p.clientId, endpoint: 'revoke' }, action: { delay_ms: 1000 + 150 * i }, count: 4 });
        }
        const rows = await dueLogins(p, REFRESHED);
        // Queue the revocations and store the due logins in one commit (one engine pass
        // starts both), then hold every revocation row so no answer can be recorded.
        await locker.query('BEGIN');
        await locker.query('SELECT upstream_token.revoke_upstream_token(session, provider) FROM upstream_token.token WHERE provider = $1 AND session = ANY($2)',
            [p.provider, doomed.map((r) => r.session)]);
        for (const r of rows) {
            await locker.query('SELECT upstream_token.store_upstream_token($1, $2, $3, $4, 0, $5)',
                [r.session, p.provider, r.access, r.refresh, r.idToken || null]);
        }
        await locker.query('COMMIT');
        await locker.query('BEGIN');
        const locked = await locker.query('SELECT id FROM upstream_token.revocation WHERE provider = $1 FOR UPDATE', [p.provider]);
        assert.strictEqual(locked.rows.length, REVOKED);
        await waitFor(async () => (await ctx.stats()).revoke.requests - before.revoke.requests >= REVOKED,
            { timeoutMs: 15000, what: 'the revocations to be sent' });
        const sessions = rows.map((r) => r.session);
        await waitFor(async () => (await savedCount(p.provider, sessions)) === rows.length,
            { timeoutMs: 15000, what: 'every refresh answered in those passes to be saved' });
        assert.ok((await ctx.engine()).ready, 'the engine still takes requests');
    } finally {
        await locker.query('ROLLBACK').catch(() => {});
        await locker.end();
        await ctx.clearFaults();
    }
    // Once the lock is gone the answers are recorded: the queue empties, nothing is lost.
    await waitFor(async () => (await ctx.pool.query(
        'SELECT count(*)::int AS n FROM upstream_token.revocation WHERE provider = $1', [p.provider])).rows[0].n === 0,
    { timeoutMs: 30000, what: 'the queued revocations to be recorded as delivered' });
    const after = await ctx.stats();
    assert.strictEqual(after.reuse_detected - before.reuse_detected, 0, 'no rotated token was lost and reused');
});

test('an unsendable revocation row waits on its own; proactive refresh goes on', async () => {
    const p = await providerWith(ctx, { args: { revocation_endpoint: `${ctx.idp.url}/revoke` } });
    const bad = await ctx.pool.query(
        `INSERT INTO upstream_token.revocation (provider, session, token, token_column)
         VALUES ($1, $2, '\\x0102030405'::bytea, 'refresh_token') RETURNING id`, [p.provider, unique('bad')]);
    const badId = bad.rows[0].id;
    // A good revocation the provider keeps refusing keeps the revocation step busy every second.
    const retried = (await dueLogins(p, 1))[0];
    await storeMany(ctx.pool, p.provider, [{ ...retried, expiresIn: 3600 }]);
    await ctx.fault({ match: { client_id: p.clientId, endpoint: 'revoke' }, action: { status: 503 } });
    await ctx.pool.query('SELECT upstream_token.revoke_upstream_token($1, $2)', [retried.session, p.provider]);
    try {
        const rows = await dueLogins(p, 5);
        await storeMany(ctx.pool, p.provider, rows);  // nobody asks: only the engine's plan refreshes them
        await waitFor(async () => (await savedCount(p.provider, rows.map((r) => r.session))) === rows.length,
            { timeoutMs: 20000, what: 'the due tokens to be refreshed by the plan' });
        const r = (await ctx.pool.query(
            'SELECT attempts, last_error, next_attempt_at > now() AS later FROM upstream_token.revocation WHERE id = $1',
            [badId])).rows[0];
        assert.ok(r.attempts >= 1, 'the bad row was tried');
        assert.ok(r.later, 'and postponed with backoff');
        assert.ok(r.last_error && r.last_error.length > 0, 'with its reason recorded');
    } finally {
        await ctx.clearFaults();
        await ctx.pool.query('DELETE FROM upstream_token.revocation WHERE id = $1', [badId]);
    }
});

test('tokens whose lock another process holds take no concurrency place from the others', async () => {
    const { setSystemGucs, holdRefreshLock } = require('./harness.js');
    await setSystemGucs(ctx.pool, { 'upstream_token.max_concurrent_refreshes': 2 });
    const holds = [];
    try {
        const p = await ctx.provider({ accessTtl: 3600 });
        const blocked = await dueLogins(p, 8);
        await storeMany(ctx.pool, p.provider, blocked.map((r) => ({ ...r, expiresIn: 3600 })));
        for (const r of blocked) holds.push(await holdRefreshLock(p.provider, r.session));
        // Now due, with their locks held elsewhere: the engine keeps trying them.
        await ctx.pool.query("UPDATE upstream_token.token SET expires_at = now() WHERE provider = $1", [p.provider]);
        const waiters = blocked.map((r) => connect().then(async (c) => {
            try { await c.query("SET upstream_token.wait_timeout = '3s'"); await c.query('SELECT upstream_token.get_upstream_token($1, $2)', [r.session, p.provider]); } catch { /* times out: expected */ } finally { await c.end(); }
        }));
        const other = (await dueLogins(p, 1))[0];
        await new Promise((r) => setTimeout(r, 500));  // the blocked ones are being retried
        await storeMany(ctx.pool, p.provider, [other]);
        const t0 = Date.now();
        await ctx.pool.query('SELECT upstream_token.get_upstream_token($1, $2)', [other.session, p.provider]);
        const ms = Date.now() - t0;
        assert.ok(ms < 2500, `an unrelated expired token was served in ${ms} ms while 8 tokens waited for their locks`);
        await Promise.all(waiters);
    } finally {
        for (const h of holds) await h.release().catch(() => {});
        await setSystemGucs(ctx.pool, { 'upstream_token.max_concurrent_refreshes': null });
    }
});
