'use strict';
// Issue 9: a forced refresh (refresh_upstream_token) that finds an ordinary request for the same
// token already queued must not lose `force`. A token in backoff (next_attempt_at in the
// future) is not refreshed by an ordinary caller; a forced call is. Here the ordinary caller
// asks first and waits (the token lock is held), the forced call comes second, then the lock is
// released: the forced call must be refreshed (one provider call), not answered "failed
// recently" with the ordinary request.
const test = require('node:test');
const assert = require('node:assert');
const {
    setup, connect, waitFor, unique, storeLogin, holdRefreshLock, tokenStatus, grantCalls,
} = require('./harness.js');

const GET = 'SELECT upstream_token.get_upstream_token($1, $2) AS t';
const REFRESH = `SELECT provider_name, refreshed, sqlstate, error
                   FROM upstream_token.refresh_upstream_token($1, $2)`;

let ctx;
test.before(async () => { ctx = await setup({ poolSize: 5 }); });
test.after(async () => { await ctx.close(); });

// Waits until the backend `pid` sleeps on the engine.
function waitingOnEngine(pid) {
    return waitFor(async () => {
        const r = await ctx.pool.query(
            "SELECT wait_event_type = 'Extension' AS w FROM pg_stat_activity WHERE pid = $1", [pid]);
        return r.rows[0]?.w === true;
    }, { what: `backend ${pid} to wait on the engine` });
}

test('a forced refresh that joins a waiting ordinary request keeps force', async () => {
    const p = await ctx.provider();
    const session = unique('sess');
    const since = Date.now();
    const lock = await holdRefreshLock(p.provider, session);
    let locked = true;
    const ordinary = await connect();
    const forced = await connect();
    try {
        const login = await storeLogin(ctx, p, { session, expiresIn: 0 });
        // Backoff after a (pretended) transient failure: ordinary callers wait it out.
        await ctx.pool.query(
            `UPDATE upstream_token.token SET failure_count = 1, last_error = 'transient: HTTP 503',
                    next_attempt_at = now() + interval '10 minutes'
              WHERE session = $1 AND provider = $2`, [session, p.provider]);

        const get = ordinary.query(GET, [session, p.provider]).then(() => 'served', (e) => e.code);
        await waitingOnEngine(ordinary.processID);
        const refresh = forced.query(REFRESH, [session, p.provider]);
        refresh.catch(() => {});
        await waitingOnEngine(forced.processID);
        await lock.release();
        locked = false;

        const rows = (await refresh).rows;
        assert.strictEqual(rows.length, 1);
        assert.deepStrictEqual([rows[0].refreshed, rows[0].sqlstate], [true, null],
            `the forced call refreshed: ${rows[0].sqlstate} ${rows[0].error}`);
        const ordinaryOutcome = await get;
        assert.ok(ordinaryOutcome === 'served' || /^UT/.test(ordinaryOutcome),
            `the ordinary caller got an answer (${ordinaryOutcome})`);
        const calls = await grantCalls(ctx.idp, login.grant.grant_id, since);
        assert.strictEqual(calls.length, 1, 'exactly one provider call');
        const st = await tokenStatus(ctx.pool, session, p.provider);
        assert.strictEqual(st.failure_count, 0, 'the backoff is over after the forced refresh');
        assert.strictEqual(st.next_attempt_at, null);
    } finally {
        if (locked) await lock.release();
        await ordinary.end().catch(() => {});
        await forced.end().catch(() => {});
    }
});
