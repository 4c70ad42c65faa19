'use strict';
// What the caller does after asking cannot lose a rotation (I4): a refresh done for a
// transaction that rolls back, a caller cancelled by statement_timeout, and a caller that
// stops waiting (wait_timeout) all leave the new tokens committed, served to the next caller
// without another provider call, and the rotation chain intact.
const test = require('node:test');
const assert = require('node:assert');
const {
    setup, connect, waitFor, unique, storeLogin, storeLoginWithStatus, holdRefreshLock, assertNoSecretsInLog,
    tokenStatus, sqlError,
} = require('./harness.js');

const GET = 'SELECT upstream_token.get_upstream_token($1, $2) AS t';

let ctx;
test.before(async () => { ctx = await setup({ poolSize: 10 }); });
test.after(async () => { await ctx.close(); });

// Waits until the backend `pid` sleeps on the engine (its get is queued, not yet answered).
function waitingOnEngine(pid) {
    return waitFor(async () => {
        const r = await ctx.pool.query(
            "SELECT wait_event_type = 'Extension' AS w FROM pg_stat_activity WHERE pid = $1", [pid]);
        return r.rows[0]?.w === true;
    }, { what: `backend ${pid} to wait on the engine` });
}

// Runs the whole rollback scenario in the given isolation level and checks what must survive.
async function rollbackScenario(isolation) {
    const p = await ctx.provider();
    const session = unique('sess');
    // The refresh cannot start before the caller's transaction is waiting for it.
    const lock = await holdRefreshLock(p.provider, session);
    let locked = true;
    const c = await connect();
    try {
        const login = await storeLogin(ctx, p, { session, expiresIn: 0 });
        const before = await tokenStatus(ctx.pool, session, p.provider);
        assert.strictEqual(before.refreshed_at, null);

        await c.query(`BEGIN ISOLATION LEVEL ${isolation}`);
        await c.query('SELECT count(*) FROM upstream_token.token_status');  // takes the snapshot
        const pending = c.query(GET, [session, p.provider]);
        pending.catch(() => {});
        await waitingOnEngine(c.processID);
        await lock.release();
        locked = false;
        const tok = (await pending).rows[0].t;
        assert.ok(tok && tok !== login.grant.access_token, 'the transaction got a new token');
        await c.query('ROLLBACK');

        const after = await tokenStatus(ctx.pool, session, p.provider);
        assert.strictEqual(Number(after.generation), Number(before.generation) + 1, 'generation advanced');
        assert.ok(after.refreshed_at !== null, 'refreshed_at is set');
        assert.strictEqual(after.status, 'active');

        const c2 = await connect();
        let again;
        try {
            again = (await c2.query(GET, [session, p.provider])).rows[0].t;
        } finally {
            await c2.end();
        }
        assert.ok(again === tok, 'the next caller gets the same new token');
        let g = await ctx.grant(login.grant.grant_id);
        assert.strictEqual(g.refresh_calls, 1, 'no further provider call');
        assert.strictEqual(g.reuse_detected, 0);

        // The chain goes on from the saved rotation.
        const forced = (await ctx.pool.query(
            'SELECT * FROM upstream_token.refresh_upstream_token($1, $2)', [session, p.provider])).rows;
        assert.strictEqual(forced.length, 1);
        assert.strictEqual(forced[0].refreshed, true, `forced refresh: ${forced[0].sqlstate} ${forced[0].error}`);
        g = await ctx.grant(login.grant.grant_id);
        assert.strictEqual(g.rotations, 2);
        assert.strictEqual(g.reuse_detected, 0);
        assert.strictEqual(g.active, true);
        const third = (await ctx.pool.query(GET, [session, p.provider])).rows[0].t;
        assert.ok(third !== tok, 'the forced refresh produced yet another token');
        assertNoSecretsInLog([login.grant.access_token, login.grant.refresh_token, login.grant.id_token,
            tok, third, g.refresh_token]);
    } finally {
        if (locked) await lock.release().catch(() => {});
        await c.end().catch(() => {});
    }
}

test('3. a refresh done inside a transaction that rolls back stays committed', async () => {
    await rollbackScenario('READ COMMITTED');
});

test('3b. the same inside REPEATABLE READ: the refreshed token is seen and survives the rollback', async () => {
    await rollbackScenario('REPEATABLE READ');
});

// Mints and stores an expired login whose provider answers only after `delayMs`.
async function slowExpiredLogin(delayMs) {
    const p = await ctx.provider();
    await ctx.fault({ match: { client_id: p.clientId }, action: { delay_ms: delayMs } });
    const login = await storeLoginWithStatus(ctx, p, { expiresIn: 0 });
    return { p, login, before: login.before };
}

// After the caller gave up: the refresh commits anyway and is served with no new call.
async function checkCommittedAnyway({ p, login, before }, c) {
    await waitFor(async () => {
        const st = await tokenStatus(ctx.pool, login.session, p.provider);
        return Number(st.generation) > Number(before.generation);
    }, { what: 'the engine to commit the refresh the caller gave up on' });
    const tok = (await c.query(GET, [login.session, p.provider])).rows[0].t;
    assert.ok(tok && tok !== login.grant.access_token, 'the next get returns the new token');
    const g = await ctx.grant(login.grant.grant_id);
    assert.strictEqual(g.refresh_calls, 1, 'served without a new provider call');
    assert.strictEqual(g.rotations, 1);
    assert.strictEqual(g.reuse_detected, 0);
    assert.strictEqual(g.active, true);
    assertNoSecretsInLog([login.grant.access_token, login.grant.refresh_token, login.grant.id_token,
        tok, g.refresh_token]);
}

test('4. a caller cancelled by statement_timeout while the provider is slow: the refresh still commits', async () => {
    const s = await slowExpiredLogin(1500);
    const c = await connect();
    try {
        await c.query("SET statement_timeout = '300ms'");
        const e = await sqlError(c.query(GET, [s.login.session, s.p.provider]), 'get during a slow refresh');
        assert.strictEqual(e.code, '57014', `query_canceled expected, got ${e.code} ${e.message}`);
        assert.strictEqual((await c.query('SELECT 1 AS one')).rows[0].one, 1, 'the connection is usable');
        await c.query('RESET statement_timeout');
        await checkCommittedAnyway(s, c);
    } finally {
        await c.end().catch(() => {});
    }
});

test('9. wait_timeout: the caller gets UT007, the refresh commits afterwards', async () => {
    const s = await slowExpiredLogin(1500);
    const c = await connect();
    try {
        await c.query("SET upstream_token.wait_timeout = '200ms'");
        const e = await sqlError(c.query(GET, [s.login.session, s.p.provider]), 'get during a slow refresh');
        assert.strictEqual(e.code, 'UT007', `wait_timeout expected, got ${e.code} ${e.message}`);
        await checkCommittedAnyway(s, c);
    } finally {
        await c.end().catch(() => {});
    }
});

test('9b. wait_timeout on a due but still valid token: the current token with a WARNING, not UT007', async () => {
    const p = await ctx.provider({ threshold: '1 hour' });
    await ctx.fault({ match: { client_id: p.clientId }, action: { delay_ms: 1500 } });
    const login = await storeLoginWithStatus(ctx, p, { expiresIn: 600 });
    const c = await connect();
    const notices = [];
    c.on('notice', (n) => notices.push(n));
    try {
        await c.query("SET upstream_token.wait_timeout = '200ms'");
        const tok = (await c.query(GET, [login.session, p.provider])).rows[0].t;
        assert.ok(tok === login.grant.access_token, 'the still valid token is served');
        const warnings = notices.filter((n) => n.severity === 'WARNING');
        assert.strictEqual(warnings.length, 1, 'with one WARNING');
        assert.ok(!JSON.stringify(warnings.map((w) => [w.message, w.detail])).includes(tok), 'no token in it');
        await checkCommittedAnyway({ p, login, before: login.before }, c);
    } finally {
        await c.end().catch(() => {});
    }
});
