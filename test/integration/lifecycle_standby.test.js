'use strict';
// Hot standby and failover. On a streaming standby of the test cluster the engine does not run:
// valid tokens (also ones refreshed on the primary, once replayed) are served, an expired one
// fails at once with UT006 (engine unavailable, hint: the primary), and a store fails as a
// read-only transaction (25006). After the primary stops and the standby is promoted, the
// postmaster starts the engine there within seconds: it refreshes an expired token on demand
// and a due one on its own, and no stored token is lost (all present and decrypting).
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');
const test = require('node:test');
const assert = require('node:assert');
const { execFileSync } = require('node:child_process');
const { setup, connect, waitFor, unique, storeMany, ensureEngine, introspectActive, REPO, asPostgres, serverDir,
    removeServerDir } = require('./harness.js');

const THRESHOLD_S = 20;

// A TCP port on 127.0.0.1 nobody listens on, from `start` upwards (below the ephemeral range).
async function freePort(start) {
    for (let port = start; port < start + 50; port += 1) {
        const ok = await new Promise((resolve) => {
            const srv = net.createServer();
            srv.once('error', () => resolve(false));
            srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
        });
        if (ok) return port;
    }
    throw new Error(`no free port from ${start}`);
}

// Whether the server on a data directory is running.
function running(dataDir) {
    try {
        asPostgres('pg_ctl', ['-D', dataDir, 'status']);
        return true;
    } catch {
        return false;
    }
}

// Runs get_upstream_token on a client; resolves {ok, token | code, hint, ms}.
async function get(client, session, provider) {
    const t0 = Date.now();
    try {
        const r = await client.query('SELECT upstream_token.get_upstream_token($1, $2) AS t', [session, provider]);
        return { ok: true, token: r.rows[0].t, ms: Date.now() - t0 };
    } catch (e) {
        return { ok: false, code: e.code, hint: e.hint, ms: Date.now() - t0 };
    }
}

// Waits until the standby has replayed everything the primary has written so far.
async function waitForReplay(primaryPool, standby) {
    const lsn = (await primaryPool.query('SELECT pg_current_wal_lsn()::text AS l')).rows[0].l;
    await waitFor(async () => (await standby.query(
        'SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn AS ok', [lsn])).rows[0].ok,
    { timeoutMs: 15000, intervalMs: 20, what: 'the standby to replay the primary' });
}

// A session name whose planned refresh falls early in its window (stable hash of the name).
async function earlySession(pool, provider) {
    for (let i = 0; i < 200; i += 1) {
        const s = unique('standby-due');
        const r = await pool.query(
            `SELECT extract(epoch FROM upstream_token.planned_refresh_at($1, $2, 1, NULL, now(), $3::interval) - now())
                    + $4 AS offset_s`, [provider, s, `${THRESHOLD_S} seconds`, THRESHOLD_S]);
        if (Number(r.rows[0].offset_s) < 0.2 * THRESHOLD_S) return s;
    }
    throw new Error('no session with an early planned refresh');
}

test('standby serves valid tokens and refuses refreshes; after promotion the engine takes over', async (t) => {
    const t0 = Date.now();
    const ctx = await setup({ poolSize: 4 });
    const primaryData = (await ctx.pool.query('SHOW data_directory')).rows[0].data_directory;
    const primaryLog = process.env.UT_SERVER_LOG || path.join(path.dirname(primaryData), 'server.log');
    const standbyPort = Number(process.env.UT_STANDBY_PORT || await freePort(Number(process.env.PGPORT) + 1));
    const dir = path.join(REPO, '.tmp', `standby-${process.pid}`);
    const standbyData = path.join(dir, 'data');
    const standbySock = path.join(dir, 'sock');
    let standby = null;
    t.after(async () => {
        if (standby) await standby.end().catch(() => {});
        if (running(standbyData)) asPostgres('pg_ctl', ['-D', standbyData, '-m', 'immediate', '-w', 'stop']);
        removeServerDir(dir);
        // The primary is the suite's cluster: bring it back for the tests that follow.
        if (!running(primaryData)) asPostgres('pg_ctl', ['-D', primaryData, '-l', primaryLog, '-w', '-t', '60', 'start']);
        await ensureEngine(ctx.pool);
        await ctx.close();
    });

    const p = await ctx.provider({ accessTtl: 3600, threshold: `${THRESHOLD_S} seconds` });
    const { grants } = await ctx.idp.client.admin('POST', '/admin/grants',
        { client_id: p.clientId, subject: unique('user'), count: 22 });
    // A store row for a minted grant.
    const row = (g, name, expiresIn, session = unique(name)) => ({ session, grantId: g.grant_id,
        access: g.access_token, refresh: g.refresh_token, idToken: g.id_token, expiresIn });
    const fresh = grants.slice(0, 10).map((g) => row(g, 'standby-fresh', 3600));
    const toRefresh = grants.slice(10, 20).map((g) => row(g, 'standby-refreshed', 3600));
    await storeMany(ctx.pool, p.provider, [...fresh, ...toRefresh]);

    // A streaming standby with its own port and socket directory.
    removeServerDir(dir);
    serverDir(dir);
    fs.mkdirSync(standbySock, { recursive: true });
    fs.mkdirSync(standbyData, { mode: 0o700 });
    execFileSync('chown', ['-R', '-H', 'postgres:postgres', dir]);
    asPostgres('pg_basebackup', ['-h', process.env.PGHOST, '-p', String(process.env.PGPORT), '-U', 'postgres',
        '-D', standbyData, '-R', '-X', 'stream', '-c', 'fast']);
    fs.appendFileSync(path.join(standbyData, 'postgresql.auto.conf'),
        `port = ${standbyPort}\nunix_socket_directories = '${standbySock}'\n`);
    asPostgres('pg_ctl', ['-D', standbyData, '-l', path.join(dir, 'server.log'), '-w', '-t', '60', 'start']);
    standby = await connect({ host: standbySock, port: standbyPort });
    assert.strictEqual((await standby.query('SELECT pg_is_in_recovery() AS r')).rows[0].r, true);

    // Refreshes on the primary reach the standby.
    const served = new Map();
    const forced = await ctx.pool.query(
        'SELECT s, r.refreshed FROM unnest($1::text[]) s, LATERAL upstream_token.refresh_upstream_token(s, $2) r',
        [toRefresh.map((r) => r.session), p.provider]);
    assert.ok(forced.rows.every((r) => r.refreshed), 'refreshed on the primary');
    for (const r of [...fresh, ...toRefresh]) {
        const got = await get(ctx.pool, r.session, p.provider);
        assert.ok(got.ok);
        served.set(r.session, got.token);
    }
    await waitForReplay(ctx.pool, standby);

    // On the standby: no engine; valid tokens served as on the primary; no writes.
    const sEngine = (await standby.query('SELECT worker_pid, ready FROM upstream_token.engine_status')).rows[0];
    assert.deepStrictEqual(sEngine, { worker_pid: 0, ready: false }, 'no engine on a standby');
    for (const r of [...fresh, ...toRefresh]) {
        const got = await get(standby, r.session, p.provider);
        assert.ok(got.ok, `served on the standby: ${got.code}`);
        assert.strictEqual(got.token, served.get(r.session), 'the same token as on the primary');
    }
    const storeErr = await standby.query(
        "SELECT upstream_token.store_upstream_token('standby-write', $1, 'a', 'r', 60)", [p.provider]).catch((e) => e);
    assert.strictEqual(storeErr.code, '25006', 'store on a standby: read-only transaction');

    // With the primary's engine stopped for a moment (it is restarted after 5 s), store an
    // expired token and one that falls due shortly; the primary never refreshes them.
    const pEngine = await ctx.engine();
    process.kill(pEngine.worker_pid, 'SIGTERM');
    await waitFor(async () => (await ctx.engine()).worker_pid === 0, { timeoutMs: 2000, intervalMs: 10, what: 'the primary engine to stop' });
    const expired = row(grants[20], 'standby-expired', 0);
    const due = row(grants[21], 'standby-due', THRESHOLD_S + 4, await earlySession(ctx.pool, p.provider));
    await storeMany(ctx.pool, p.provider, [expired, due]);
    const plannedIn = Number((await ctx.pool.query(
        'SELECT extract(epoch FROM next_refresh_at - now()) AS s FROM upstream_token.token_status WHERE session = $1',
        [due.session])).rows[0].s);
    assert.ok(plannedIn > 2 && plannedIn < 10, `the due token is planned ${plannedIn} s ahead`);
    await waitForReplay(ctx.pool, standby);
    const onStandby = await get(standby, expired.session, p.provider);
    assert.strictEqual(onStandby.code, 'UT006', `expired on a standby: engine unavailable, got ${onStandby.code}`);
    assert.match(onStandby.hint || '', /primary/i, 'the hint names the primary');
    assert.ok(onStandby.ms < 2000, `answered at once (${onStandby.ms} ms)`);
    const dueOnStandby = await get(standby, due.session, p.provider);
    assert.ok(dueOnStandby.ok && dueOnStandby.token === due.access, 'a valid token inside its window is served');

    // Failover: the primary stops (its engine still down), the standby is promoted.
    const stillDown = await ctx.engine();
    assert.strictEqual(Number(stillDown.worker_starts), Number(pEngine.worker_starts),
        'the primary engine did not come back before the primary stopped');
    asPostgres('pg_ctl', ['-D', primaryData, '-m', 'fast', '-w', '-t', '60', 'stop']);
    // The promoted engine's own first refresh of the expired token is slow, so the caller
    // below surely waits on the engine (a request) rather than finding it already done.
    await ctx.fault({ match: { grant_id: expired.grantId }, action: { delay_ms: 1500 }, count: 1 });
    asPostgres('pg_ctl', ['-D', standbyData, '-w', '-t', '60', 'promote']);
    const promotedAt = Date.now();
    const engine = await waitFor(async () => {
        const r = (await standby.query('SELECT * FROM upstream_token.engine_status')).rows[0];
        return r.ready && r.worker_pid > 0 && r;
    }, { timeoutMs: 15000, intervalMs: 20, what: 'the engine on the promoted server' });
    const readyMs = Date.now() - promotedAt;
    assert.ok(readyMs <= 5000, `the engine runs ${readyMs} ms after promotion`);
    assert.strictEqual((await standby.query('SELECT pg_is_in_recovery() AS r')).rows[0].r, false);

    // The expired token: refreshed for the caller, who waits on the engine.
    const after = await get(standby, expired.session, p.provider);
    assert.ok(after.ok, `expired token after promotion: ${after.code}`);
    const onDemand = (await standby.query('SELECT requests FROM upstream_token.engine_status')).rows[0];
    assert.ok(Number(onDemand.requests) >= 1, 'the caller asked the engine');
    assert.notStrictEqual(after.token, expired.access);
    assert.ok(await introspectActive(ctx.idp, after.token, p.clientId, p.secret), 'the new token is active');
    // The due token: refreshed by the engine on its own, before it expires.
    const dueRow = await waitFor(async () => {
        const r = (await standby.query(
            'SELECT generation, refreshed_at FROM upstream_token.token_status WHERE session = $1', [due.session])).rows[0];
        return Number(r.generation) >= 2 && r;
    }, { timeoutMs: (THRESHOLD_S + 4) * 1000, intervalMs: 100, what: 'the due token to be refreshed proactively' });
    const stats = (await standby.query('SELECT * FROM upstream_token.engine_status')).rows[0];
    assert.ok(Number(stats.proactive_refreshes) >= 1, 'a proactive refresh on the promoted server');

    // No token lost: every session is there and decrypts; untouched ones are unchanged.
    const all = [...fresh, ...toRefresh, expired, due];
    const present = await standby.query(
        'SELECT count(*)::int AS n FROM upstream_token.token_status WHERE provider = $1', [p.provider]);
    assert.strictEqual(present.rows[0].n, all.length);
    for (const r of [...fresh, ...toRefresh]) {
        const got = await get(standby, r.session, p.provider);
        assert.ok(got.ok, `after failover: ${got.code}`);
        assert.strictEqual(got.token, served.get(r.session));
    }
    for (const g of grants) assert.strictEqual((await ctx.grant(g.grant_id)).reuse_detected, 0, 'no reuse');
    t.diagnostic(`engine ready ${readyMs} ms after promotion (pid ${engine.worker_pid}); due token refreshed ` +
        `${dueRow.refreshed_at.getTime() - promotedAt} ms after promotion; expired token served to a waiting ` +
        `caller in ${after.ms} ms; promoted engine: requests ` +
        `${stats.requests}, proactive ${stats.proactive_refreshes}; ${Date.now() - t0} ms`);
});
