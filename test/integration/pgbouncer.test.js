'use strict';
// Issue 10: upstream_token behind PgBouncer. A PgBouncer (Debian's package) listens on loopback
// in front of the test cluster, run as the postgres user with its own ini in the cluster
// directory (auth_type trust with a userlist). Through its transaction-pooling database, an
// application role gets a token, gets credentials, waits on an on-demand refresh by the
// engine, and holds the manual token lock (lock_token) in a transaction that keeps the engine
// away until COMMIT; more clients than server connections are all served. The same pooler
// also shows what statement pooling refuses (transaction blocks) and that NOTIFY reaches a
// LISTEN held through session pooling.
//
// PgBouncer listens on PGPORT + 2 (26303 with UT_PORT 26301; 25434 by default).
const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const path = require('node:path');
const { spawn, execFileSync } = require('node:child_process');
const { Client, Pool } = require('pg');
const {
    setup, waitFor, unique, storeLogin, holdRefreshLock, grantCalls, tokenStatus, sqlError,
} = require('./harness.js');

const PORT = Number(process.env.PGPORT || 25432) + 2;
const DB = process.env.PGDATABASE || 'ut_test';
const POOL_SIZE = 3;  // server connections per (database, user) pool
const GET = 'SELECT upstream_token.get_upstream_token($1, $2) AS t';

let ctx;
let bouncer = null;
let app;  // the application's login role, a member of upstream_token_client
const clients = [];

// Writes the ini and userlist into the cluster directory and starts PgBouncer as postgres.
async function startBouncer() {
    const dir = path.join(process.env.UT_CLUSTER_DIR, 'pgbouncer');
    fs.mkdirSync(dir, { recursive: true });
    const uid = Number(execFileSync('id', ['-u', 'postgres']).toString().trim());
    const gid = Number(execFileSync('id', ['-g', 'postgres']).toString().trim());
    const server = `host=${process.env.PGHOST} port=${process.env.PGPORT} dbname=${DB}`;
    fs.writeFileSync(path.join(dir, 'userlist.txt'), `"postgres" ""\n"${app}" ""\n`);
    fs.writeFileSync(path.join(dir, 'pgbouncer.ini'), [
        '[databases]',
        `${DB} = ${server} pool_mode=transaction`,
        `${DB}_statement = ${server} pool_mode=statement`,
        `${DB}_session = ${server} pool_mode=session`,
        '[pgbouncer]',
        'listen_addr = 127.0.0.1',
        `listen_port = ${PORT}`,
        'unix_socket_dir =',
        'auth_type = trust',
        `auth_file = ${path.join(dir, 'userlist.txt')}`,
        `default_pool_size = ${POOL_SIZE}`,
        'max_client_conn = 100',
        `logfile = ${path.join(dir, 'pgbouncer.log')}`,
        `pidfile = ${path.join(dir, 'pgbouncer.pid')}`,
        'ignore_startup_parameters = extra_float_digits',
        '',
    ].join('\n'));
    execFileSync('chown', ['-R', 'postgres:postgres', dir]);
    let stderr = '';
    const child = spawn('/usr/sbin/pgbouncer', [path.join(dir, 'pgbouncer.ini')],
        { uid, gid, stdio: ['ignore', 'ignore', 'pipe'] });
    child.stderr.on('data', (d) => { stderr += d; });
    bouncer = child;
    await waitFor(async () => {
        if (child.exitCode !== null) throw new Error(`pgbouncer exited: ${stderr}`);
        const c = new Client({ host: '127.0.0.1', port: PORT, user: app, database: DB });
        c.on('error', () => {});
        await c.connect();
        await c.end();
        return true;
    }, { what: 'pgbouncer to accept connections' });
}

// A pg client (or pool) through PgBouncer, as the application role, to one of its databases.
function viaBouncer(database = DB, { pool = false, max = 10 } = {}) {
    const cfg = { host: '127.0.0.1', port: PORT, user: app, database, max };
    const c = pool ? new Pool(cfg) : new Client(cfg);
    c.on('error', () => {});
    clients.push(c);
    return c;
}

test.before(async () => {
    ctx = await setup({ poolSize: 10 });
    app = unique('pgb_app').replace(/-/g, '_');
    await ctx.pool.query(`CREATE ROLE ${app} LOGIN IN ROLE upstream_token_client`);
    await startBouncer();
});
test.after(async () => {
    for (const c of clients) await c.end().catch(() => {});
    if (bouncer && bouncer.exitCode === null) {
        const exited = new Promise((r) => bouncer.once('exit', r));
        bouncer.kill('SIGTERM');  // the process this test started, by its pid
        await exited;
    }
    if (ctx) {
        await ctx.pool.query(`DROP ROLE IF EXISTS ${app}`).catch(() => {});
        await ctx.close();
    }
});

test('transaction pooling: tokens and credentials, more clients than server connections', async () => {
    const pA = await ctx.provider();
    const pB = await ctx.provider();
    const session = unique('sess');
    const a = await storeLogin(ctx, pA, { session, expiresIn: 3600 });
    const b = await storeLogin(ctx, pB, { session, expiresIn: 3600 });
    const pool = viaBouncer(DB, { pool: true, max: 12 });

    const tok = (await pool.query(GET, [session, pA.provider])).rows[0].t;
    assert.ok(tok === a.grant.access_token, 'a fresh token is served through the pooler');
    const creds = (await pool.query(
        'SELECT provider, access_token, sqlstate FROM upstream_token.get_upstream_credentials($1) ORDER BY provider',
        [session])).rows;
    const want = [[pA.provider, a.grant.access_token, null], [pB.provider, b.grant.access_token, null]]
        .sort((x, y) => (x[0] < y[0] ? -1 : 1));
    assert.deepStrictEqual(creds.map((r) => [r.provider, r.access_token, r.sqlstate]), want,
        'one credentials row per provider');

    // 12 clients, at most 3 server connections for this pool: all are served.
    const results = await Promise.all(Array.from({ length: 12 },
        () => pool.query(`SELECT upstream_token.get_upstream_token($1, $2) AS t, pg_backend_pid() AS pid,
                                 pg_sleep(0.05)`, [session, pB.provider])));
    assert.ok(results.every((r) => r.rows[0].t === b.grant.access_token), 'every client served');
    const pids = new Set(results.map((r) => r.rows[0].pid));
    assert.ok(pids.size <= POOL_SIZE, `${pids.size} server backends served 12 clients`);
});

test('transaction pooling: a caller waits for the engine\'s on-demand refresh', async () => {
    const p = await ctx.provider();
    const session = unique('sess');
    const lock = await holdRefreshLock(p.provider, session);  // direct connection
    let locked = true;
    try {
        const login = await storeLogin(ctx, p, { session, expiresIn: 0 });
        const c = viaBouncer();
        await c.connect();
        const pending = c.query(GET, [session, p.provider]);
        pending.catch(() => {});
        await waitFor(async () => (await ctx.pool.query(
            `SELECT count(*)::int AS n FROM pg_stat_activity
              WHERE usename = $1 AND wait_event_type = 'Extension'`, [app])).rows[0].n === 1,
        { what: 'the pooled caller to wait on the engine' });
        await lock.release();
        locked = false;
        const tok = (await pending).rows[0].t;
        assert.ok(tok !== login.grant.access_token, 'the caller got the refreshed token');
        assert.strictEqual((await ctx.grant(login.grant.grant_id)).refresh_calls, 1, 'one provider call');
    } finally {
        if (locked) await lock.release();
    }
});

test('transaction pooling: lock_token in a transaction keeps the engine away until COMMIT', async () => {
    const p = await ctx.provider();
    const session = unique('sess');
    const holder = viaBouncer();
    await holder.connect();
    const other = viaBouncer();
    await other.connect();
    await holder.query('BEGIN');
    await holder.query('SELECT upstream_token.lock_token($1, $2)', [p.provider, session]);
    let open = true;
    try {
        const since = Date.now();
        const login = await storeLogin(ctx, p, { session, expiresIn: 0 });
        // The lock outlives the statement: the transaction keeps its server connection.
        await holder.query('SELECT 1');
        const busy = await other.query('SELECT upstream_token.try_lock_token($1, $2) AS v', [p.provider, session]);
        assert.strictEqual(busy.rows[0].v, false, 'another pooled client sees the lock');

        const pending = other.query(GET, [session, p.provider]);
        pending.catch(() => {});
        await waitFor(async () => (await ctx.pool.query(
            `SELECT count(*)::int AS n FROM pg_stat_activity
              WHERE usename = $1 AND wait_event_type = 'Extension'`, [app])).rows[0].n === 1,
        { what: 'the pooled caller to wait on the engine' });
        assert.strictEqual((await grantCalls(ctx.idp, login.grant.grant_id, since)).length, 0,
            'no provider call while the pooled transaction holds the lock');
        assert.strictEqual((await tokenStatus(ctx.pool, session, p.provider)).refreshed_at, null);

        await holder.query('COMMIT');
        open = false;
        const tok = (await pending).rows[0].t;
        assert.ok(tok !== login.grant.access_token, 'refreshed once the pooled transaction ended');
        assert.strictEqual((await grantCalls(ctx.idp, login.grant.grant_id, since)).length, 1, 'one provider call');
        const free = await other.query('SELECT upstream_token.try_lock_token($1, $2) AS v', [p.provider, session]);
        assert.strictEqual(free.rows[0].v, true, 'COMMIT released the lock');
    } finally {
        if (open) await holder.query('ROLLBACK').catch(() => {});
    }
});

test('statement pooling refuses transaction blocks; session pooling carries LISTEN/NOTIFY', async () => {
    const p = await ctx.provider();
    const session = unique('sess');
    const login = await storeLogin(ctx, p, { session, expiresIn: 3600 });

    const stmt = viaBouncer(`${DB}_statement`);
    await stmt.connect();
    assert.strictEqual((await stmt.query(GET, [session, p.provider])).rows[0].t, login.grant.access_token,
        'a single-statement get works in statement pooling');
    const err = await sqlError(stmt.query('BEGIN'), 'BEGIN in statement pooling');
    assert.match(err.message, /transaction blocks not allowed/i);

    const listener = viaBouncer(`${DB}_session`);
    await listener.connect();
    const events = [];
    listener.on('notification', (n) => { if (n.channel === 'upstream_token_events') events.push(JSON.parse(n.payload)); });
    await listener.query('LISTEN upstream_token_events');
    const forced = (await ctx.pool.query(
        'SELECT refreshed FROM upstream_token.refresh_upstream_token($1, $2)', [session, p.provider])).rows;
    assert.deepStrictEqual(forced, [{ refreshed: true }]);
    await waitFor(() => events.some((e) => e.session === session && e.provider === p.provider),
        { what: 'the refresh event through session pooling' });
});
