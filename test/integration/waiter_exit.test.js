'use strict';
// Issue 9, defect 8: every way a waiting caller can leave frees its request slot. On a cluster
// of its own with the smallest request table (upstream_token.max_requests = 16), callers wait on
// the engine (a held token lock keeps each refresh from starting) and leave by cancel,
// statement_timeout, a vanished client (the backend notices at its wait timeout), a vanished
// client noticed by client_connection_check_interval (FATAL), and pg_terminate_backend (FATAL):
// 32 exits, 20 of them FATAL, more than the table holds. Then 16 callers wait at once (every
// slot) and are all served: none gets UT011.
//
// The cluster listens on PGPORT + 3 (26304 with UT_PORT 26301; 25435 by default).
const test = require('node:test');
const assert = require('node:assert');
const path = require('node:path');
const { execFileSync } = require('node:child_process');
const { REPO } = require('./harness.js');

const DIR = path.join(REPO, '.tmp', 'cluster-waiter-exit');
const PORT = Number(process.env.PGPORT || 25432) + 3;
const SLOTS = 16;

// Runs scripts/cluster.sh for this test's cluster (never the one in the PG* environment).
function cluster2(cmd) {
    execFileSync('bash', [path.join(REPO, 'scripts', 'cluster.sh'), cmd], {
        stdio: ['ignore', 'ignore', 'inherit'],
        env: { ...process.env, UT_CLUSTER_DIR: DIR, UT_PORT: String(PORT),
            UT_EXTRA_CONF: `upstream_token.max_requests = ${SLOTS}` },
    });
}

// The harness reads the PG* environment when it connects: point it at this cluster.
cluster2('init');
cluster2('start');
Object.assign(process.env, {
    PGHOST: path.join(DIR, 'sock'), PGPORT: String(PORT), PGDATABASE: 'ut_test', PGUSER: 'postgres',
    UT_SERVER_LOG: path.join(DIR, 'server.log'),
});
const { setup, connect, waitFor, unique, storeLogin, holdRefreshLock, tokenStatus, sqlError, serverLog, sleep } =
    require('./harness.js');

const GET = 'SELECT upstream_token.get_upstream_token($1, $2) AS t';

let ctx;
test.before(async () => { ctx = await setup({ poolSize: 10 }); });
test.after(async () => {
    if (ctx) await ctx.close();
    cluster2('destroy');
});

// Starts a get on its own connection and waits until it sleeps on the engine. A caller that
// fails before it can wait (UT011: no free slot) fails the test with its error.
async function startWaiter(p, session, setupSql = []) {
    const c = await connect();
    for (const sql of setupSql) await c.query(sql);
    const call = c.query(GET, [session, p.provider]).then(
        (r) => ({ ok: true, token: r.rows[0].t }), (e) => ({ ok: false, error: e }));
    let early = null;
    call.then((r) => { early = r; });
    await waitFor(async () => {
        if (early) return true;
        const r = await ctx.pool.query(
            "SELECT wait_event_type = 'Extension' AS w FROM pg_stat_activity WHERE pid = $1", [c.processID]);
        return r.rows[0]?.w === true;
    }, { what: `backend ${c.processID} to wait on the engine` });
    if (early && !early.ok) {
        await c.end().catch(() => {});
        assert.fail(`a caller could not wait: ${early.error.code} ${early.error.message}`);
    }
    return { c, pid: c.processID, call };
}

// Waits until a backend has left the server.
function gone(pid) {
    return waitFor(async () => (await ctx.pool.query(
        'SELECT count(*)::int AS n FROM pg_stat_activity WHERE pid = $1', [pid])).rows[0].n === 0,
    { what: `backend ${pid} to exit` });
}

// How each kind of exit is done, and what the caller sees (null: the connection is gone).
const EXITS = {
    async cancel(w) {
        await ctx.pool.query('SELECT pg_cancel_backend($1)', [w.pid]);
        const r = await w.call;
        assert.strictEqual(r.ok ? 'served' : r.error.code, '57014');
        await w.c.end();
    },
    statement_timeout: {
        setup: ["SET statement_timeout = '300ms'"],
        async leave(w) {
            const r = await w.call;
            assert.strictEqual(r.ok ? 'served' : r.error.code, '57014');
            await w.c.end();
        },
    },
    client_gone_wait_timeout: {
        setup: ["SET upstream_token.wait_timeout = '400ms'"],
        async leave(w) {
            w.c.connection.stream.destroy();
            await gone(w.pid);
        },
    },
    client_gone_check_interval: {
        setup: ["SET client_connection_check_interval = '100ms'"],
        async leave(w) {
            w.c.connection.stream.destroy();
            await gone(w.pid);
        },
    },
    async terminate(w) {
        await ctx.pool.query('SELECT pg_terminate_backend($1)', [w.pid]);
        const r = await w.call;
        assert.ok(!r.ok, 'the terminated caller gets no token');
        await gone(w.pid);
        await w.c.end().catch(() => {});
    },
};

// One batch: `n` tokens locked, a caller waiting on each, all leaving the same way, then the
// locks released and the engine's answers awaited (each token refreshed).
async function batch(p, kind, n = 4) {
    const exit = EXITS[kind];
    const leave = typeof exit === 'function' ? exit : exit.leave;
    const sessions = Array.from({ length: n }, () => unique('sess'));
    const locks = await Promise.all(sessions.map((s) => holdRefreshLock(p.provider, s)));
    try {
        for (const s of sessions) await storeLogin(ctx, p, { session: s, expiresIn: 0 });
        const waiters = [];
        for (const s of sessions) waiters.push(await startWaiter(p, s, exit.setup || []));
        await Promise.all(waiters.map((w) => leave(w)));
    } finally {
        await Promise.all(locks.map((l) => l.release()));
    }
    await waitFor(async () => {
        for (const s of sessions) {
            if ((await tokenStatus(ctx.pool, s, p.provider)).refreshed_at === null) return false;
        }
        return true;
    }, { what: `the ${kind} batch's refreshes` }).catch(async (e) => {
        const st = await ctx.pool.query(
            'SELECT session, generation, status, last_error FROM upstream_token.token_status WHERE session = ANY($1)', [sessions]);
        throw new Error(`${e.message}: ${JSON.stringify(st.rows)}`);
    });
}

test('defect 8: every way a waiter leaves frees its slot: after 32 exits all 16 slots still serve', async () => {
    const p = await ctx.provider();
    const slots = await ctx.pool.query("SELECT current_setting('upstream_token.max_requests') AS v");
    assert.strictEqual(slots.rows[0].v, String(SLOTS));
    const plan = process.env.PLAN ? process.env.PLAN.split(',') : ['cancel', 'statement_timeout', 'client_gone_wait_timeout',
        'client_gone_check_interval', 'client_gone_check_interval',
        'terminate', 'terminate', 'terminate'];  // 32 exits, 20 of them FATAL
    let exits = 0;
    for (const kind of plan) {
        await batch(p, kind).catch((e) => {
            throw new Error(`after ${exits} exits, in a ${kind} batch: ${e.message}`);
        });
        exits += 4;
    }
    assert.strictEqual(exits, 32, 'more exits than slots');

    // Every slot at once: 16 callers wait together, then all are served.
    const sessions = Array.from({ length: SLOTS }, () => unique('sess'));
    const locks = await Promise.all(sessions.map((s) => holdRefreshLock(p.provider, s)));
    const waiters = [];
    try {
        for (const s of sessions) await storeLogin(ctx, p, { session: s, expiresIn: 0 });
        for (const s of sessions) waiters.push(await startWaiter(p, s));
    } finally {
        await Promise.all(locks.map((l) => l.release()));
    }
    const results = await Promise.all(waiters.map((w) => w.call));
    await Promise.all(waiters.map((w) => w.c.end()));
    const failures = results.filter((r) => !r.ok).map((r) => r.error.code);
    assert.deepStrictEqual(failures, [], 'all 16 callers are served');

    // And an ordinary caller afterwards.
    const s = unique('sess');
    const login = await storeLogin(ctx, p, { session: s, expiresIn: 0 });
    const tok = (await ctx.pool.query(GET, [s, p.provider])).rows[0].t;
    assert.notStrictEqual(tok, login.grant.access_token);
    const err = await sqlError(ctx.pool.query(GET, ['no-such-session', p.provider]));
    assert.strictEqual(err.code, 'UT001', 'errors still come back normally');

    // The table's pending and busy counts (the scans stop by them) stayed exact through all of
    // it: the engine recounts at most once a second when it claims, and logs a correction.
    await sleep(1100);  // pacing: the next claim is due a recount
    const s2 = unique('sess');
    await storeLogin(ctx, p, { session: s2, expiresIn: 0 });
    await ctx.pool.query(GET, [s2, p.provider]);
    assert.ok(!serverLog().includes("the request table's counts"), 'no count had to be corrected');
});
