'use strict';
// The 0.1.0 -> 0.2.0 upgrade of a database in use, on a cluster of its own, without a 0.1.0
// library (none builds on PostgreSQL 17 and 18). Who writes what:
//  * 0.1.0's objects (tables, views, functions): upstream_token--0.1.0.sql, by
//    CREATE EXTENSION upstream_token VERSION '0.1.0' in database ut_upgrade.
//  * Its rows (provider, token, revocation): the current (0.2.0) library, in a scratch database
//    ut_upgrade_writer of the same cluster with a fresh 0.2.0 install, served by the engine at
//    first (upstream_token.database): register_provider (two providers, client secrets sealed),
//    store_upstream_token (six long-lived logins, a 6-second one, a victim), the engine's own
//    refreshes of the 6-second login, revoke_upstream_token of the victim and the engine's failed
//    delivery attempts (the IdP's revocation endpoint answers 503), and CALL rotate_key
//    (previous_key_file set, then removed: only the new key opens anything).
//  * Then the restart a real upgrade has (the new library is loaded with the database still on
//    0.1.0): upstream_token.database = ut_upgrade; the scratch database is served no more.
//  * The copy: this test, column by column, only the columns 0.1.0's tables have (under the
//    same names in 0.2.0's, checked), through its own clients (JSON; ciphertexts are bound to
//    provider, session and column, not to the database, so they open in ut_upgrade). 0.2.0's
//    extra columns and table (token.refresh_expiry_source, token_tombstone) stay behind, and
//    0.1.0's identity numbers the revocation rows.
//  * The schema-version gate of the 0.2.0 library on that 0.1.0 database: fresh tokens are
//    served (get_upstream_token, get_upstream_credentials); store_upstream_token,
//    register_provider and rotate_key raise 55000 with a hint naming ALTER EXTENSION ... UPDATE;
//    the engine does not serve (engine_status.ready false) and an expired token raises UT006
//    whose hint names the update.
//  * Then ALTER EXTENSION upstream_token UPDATE (upstream_token--0.1.0--0.2.0.sql) while clients
//    keep reading. Afterwards every row written before it is an application's login (token
//    grant_type 'refresh_token', no audience, no subject session; the providers without login
//    endpoints, so begin_login refuses them with 22023), every token is served under the new
//    key and stays a refresh_token grant through the engine's saves, a forced refresh works,
//    the engine refreshes the short-lived token on its own, the queued revocation is delivered
//    exactly once when the endpoint is back, no refresh token was replayed, no secret reached
//    the log, and the catalog is identical to a fresh 0.2.0 install in another database of the
//    same cluster (upgrade_catalog.js: \dx+, definitions, ACLs, comments, membership, ...).
const test = require('node:test');
const assert = require('node:assert');
const net = require('node:net');
const fs = require('node:fs');
const path = require('node:path');
const { execFileSync } = require('node:child_process');
const { Pool } = require('pg');
const harness = require('./harness.js');
const { compareDatabases } = require('./upgrade_catalog.js');

const { REPO, waitFor, unique, sqlError } = harness;
// Every released version is upgraded from, in use, to the default one.
const FROMS = ['0.1.0', '0.2.0'];
const TO = /^default_version\s*=\s*'([^']+)'/m.exec(fs.readFileSync(path.join(REPO, 'upstream_token.control'), 'utf8'))[1];
const DB = 'ut_upgrade';
const WRITER = 'ut_upgrade_writer';
const GET = 'SELECT upstream_token.get_upstream_token($1, $2) AS t';
const UPDATE_HINT = /ALTER EXTENSION upstream_token UPDATE/;

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

// Runs scripts/cluster.sh for the upgrade cluster (never the suite's one).
function upgradeCluster(cmd, env) {
    execFileSync('bash', [path.join(REPO, 'scripts', 'cluster.sh'), cmd], { stdio: ['ignore', 'ignore', 'inherit'], env });
}

// One query on a connection of its own to a database of the upgrade cluster.
async function once(database, sql, params) {
    const c = await harness.connect({ database });
    try { return (await c.query(sql, params)).rows; } finally { await c.end(); }
}

// The extension's version installed in a database.
async function extVersion(database) {
    return (await once(database, "SELECT extversion AS v FROM pg_extension WHERE extname = 'upstream_token'"))[0].v;
}

// The columns of an upstream_token table in a database, in order, with whether each is an
// identity column generated always (its values are the table's own).
async function columns(database, table) {
    return once(database, `SELECT attname AS name, attidentity = 'a' AS generated
                             FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped
                            ORDER BY attnum`, [`upstream_token.${table}`]);
}

// Copies the rows of one table from the writer (0.2.0) database into the 0.1.0 one: the columns
// the 0.1.0 table has, each under its name, read from the 0.2.0 table (every one must exist
// there), identity columns left to the 0.1.0 table. Returns {rows, left}: the number copied and
// the 0.2.0 columns left behind.
async function copyRows(table) {
    const old = await columns(DB, table);
    const cur = (await columns(WRITER, table)).map((c) => c.name);
    const absent = old.map((c) => c.name).filter((n) => !cur.includes(n));
    assert.deepStrictEqual(absent, [], `0.1.0's ${table} columns missing from 0.2.0's (renamed? map them here)`);
    const list = old.filter((c) => !c.generated).map((c) => `"${c.name}"`).join(', ');
    const [{ j, n }] = await once(WRITER, `SELECT coalesce(json_agg(x), '[]')::text AS j, count(*)::int AS n
                                             FROM (SELECT ${list} FROM upstream_token.${table}) x`);
    const inserted = await once(DB, `INSERT INTO upstream_token.${table} (${list})
                                     SELECT ${list} FROM json_populate_recordset(NULL::upstream_token.${table}, $1::json)
                                     RETURNING 1`, [j]);
    assert.strictEqual(inserted.length, n, `${table}: every row copied`);
    return { rows: n, left: cur.filter((c) => !old.some((o) => o.name === c)) };
}

// Clients calling get_upstream_token on fresh logins without pause until stop(): records every
// error and wrong value, and how many calls returned.
function readers(logins, provider, n) {
    const state = { stop: false, calls: 0, problems: [] };
    const loops = Array.from({ length: n }, async (_, id) => {
        const c = await harness.connect();
        try {
            for (let i = id; !state.stop; i++) {
                const l = logins[i % logins.length];
                try {
                    const t = (await c.query(GET, [l.session, provider])).rows[0].t;
                    if (t !== l.grant.access_token) state.problems.push(`reader ${id}: a wrong value for ${l.session}`);
                } catch (e) {
                    state.problems.push(`reader ${id}: ${e.code} ${e.message}`);
                }
                state.calls += 1;
            }
        } finally { await c.end(); }
    });
    return { state, async stop() { state.stop = true; await Promise.all(loops); } };
}

for (const FROM of FROMS) test(`${FROM} in use (rows the library wrote, queued revocation, rotated key) -> gate -> ALTER EXTENSION UPDATE -> served, refreshed, delivered, catalog = fresh ${TO}`, async (t) => {
    const t0 = Date.now();
    const port = Number(process.env.UT_UPGRADE_PORT || await freePort(Number(process.env.PGPORT) + 2));
    const dir = path.join(REPO, '.tmp', `upgrade-${process.pid}`);
    const env = { ...process.env, UT_CLUSTER_DIR: dir, UT_PORT: String(port), UT_DATABASE: WRITER, UT_EXTRA_CONF: '' };
    let ctx = null;
    let dbPool = null;
    t.after(async () => {
        if (ctx) await ctx.close().catch(() => {});
        if (dbPool) await dbPool.end().catch(() => {});
        upgradeCluster('destroy', env);
    });
    upgradeCluster('init', env);
    upgradeCluster('start', env);
    // This file runs in a process of its own: the harness (pool, connect, server log) now talks
    // to the upgrade cluster, first to the writer database the engine serves.
    Object.assign(process.env, { PGHOST: path.join(dir, 'sock'), PGPORT: String(port), PGUSER: 'postgres',
        PGDATABASE: WRITER, UT_CLUSTER_DIR: dir, UT_SERVER_LOG: path.join(dir, 'server.log') });

    // The database to upgrade: 0.1.0's objects, no rows yet.
    await once('postgres', `CREATE DATABASE ${DB}`);
    await once(DB, `CREATE EXTENSION upstream_token VERSION '${FROM}'`);
    assert.strictEqual(await extVersion(DB), FROM);

    // The writer: a fresh install of the current version, served by the engine.
    ctx = await harness.setup({ poolSize: 6 });
    assert.strictEqual(await extVersion(WRITER), TO);

    // Providers and logins, written by the library.
    const pLong = await harness.providerWith(ctx, { args: { revocation_endpoint: `${ctx.idp.url}/revoke` } });
    const pShort = await harness.providerWith(ctx, { client: { access_ttl: 6 }, args: { refresh_threshold: '3 seconds' } });
    const longs = [];
    for (let i = 0; i < 6; i++) longs.push(await harness.storeLogin(ctx, pLong, { expiresIn: 3600 }));
    const short = await harness.storeLogin(ctx, pShort, { expiresIn: 6 });
    const victim = await harness.storeLogin(ctx, pLong, { expiresIn: 3600 });
    const secrets = [...longs, short, victim].flatMap((l) => [l.grant.access_token, l.grant.refresh_token]);

    // A revocation that stays queued: the endpoint answers 503 until the fault is removed.
    const down = await ctx.fault({ match: { client_id: pLong.clientId, endpoint: 'revoke' }, action: { status: 503 } });
    assert.strictEqual((await ctx.pool.query('SELECT upstream_token.revoke_upstream_token($1, $2) AS n',
        [victim.session, pLong.provider])).rows[0].n, 1);
    await waitFor(async () => (await harness.revocationQueue(ctx.pool, pLong.provider)).some((q) => q.attempts >= 1),
        { timeoutMs: 10000, what: 'a failed revocation attempt' });

    // Key rotation, the documented way; then the old key is removed: only the new key opens anything.
    const oldKey = path.join(dir, 'key');
    const newKey = path.join(dir, 'key-rotated');
    const oldId = (await ctx.pool.query('SELECT upstream_token.current_key_id() AS k')).rows[0].k;
    execFileSync('bash', ['-c', `umask 077; openssl rand -hex 32 > '${newKey}'; chown postgres:postgres '${newKey}'`]);
    await harness.setSystemGucs(ctx.pool, { 'upstream_token.previous_key_file': oldKey, 'upstream_token.key_file': newKey });
    const rot = await harness.connect();
    try { await rot.query('CALL upstream_token.rotate_key()'); } finally { await rot.end(); }
    const newId = (await ctx.pool.query('SELECT upstream_token.current_key_id() AS k')).rows[0].k;
    assert.notStrictEqual(newId, oldId);
    const keyIds = async () => (await ctx.pool.query('SELECT key_id FROM upstream_token.key_usage ORDER BY 1')).rows.map((r) => r.key_id);
    assert.deepStrictEqual(await keyIds(), [newId], 'everything sealed with the new key');
    await harness.setSystemGucs(ctx.pool, { 'upstream_token.previous_key_file': null });

    // The engine has refreshed the short-lived token on its own (a row its save wrote).
    await waitFor(async () => Number((await harness.tokenStatus(ctx.pool, short.session, pShort.provider)).generation) >= 2,
        { timeoutMs: 15000, intervalMs: 100, what: 'a proactive refresh in the writer database' });

    // The restart onto the new library with the database still on 0.1.0. The short-lived
    // token's lock is held from before it (no refresh of it in flight or starting) until the
    // engine stops, so the row copied below holds the refresh token the IdP issued last.
    await once(WRITER, `ALTER SYSTEM SET upstream_token.database = '${DB}'`);
    const frozen = await harness.holdRefreshLock(pShort.provider, short.session);
    await ctx.pool.end();
    upgradeCluster('restart', env);
    await frozen.client.end().catch(() => {});
    assert.strictEqual((await once(DB, "SELECT current_setting('upstream_token.database') AS d"))[0].d, DB);

    // The copy into 0.1.0's tables; from here on the harness talks to the upgraded database.
    const copied = {};
    for (const table of ['provider', 'token', 'revocation']) copied[table] = await copyRows(table);
    assert.deepStrictEqual(Object.fromEntries(Object.entries(copied).map(([k, v]) => [k, v.rows])),
        { provider: 2, token: 7, revocation: 1 }, 'two providers, seven logins (the victim revoked), one queued revocation');
    process.env.PGDATABASE = DB;
    dbPool = new Pool(harness.pgConfig({ max: 6 }));
    dbPool.on('error', () => {});
    ctx.pool = dbPool;  // ctx.engine() and ctx.close() keep the writer's (ended) pool
    const engine = async () => (await dbPool.query('SELECT * FROM upstream_token.engine_status')).rows[0];
    const version = () => extVersion(DB);
    assert.strictEqual(await version(), FROM);
    assert.deepStrictEqual(await keyIds(), [newId], 'the copied ciphertexts: all under the new key');
    const queuedBefore = await harness.revocationQueue(ctx.pool, pLong.provider);
    assert.strictEqual(queuedBefore.length, 1, 'the revocation is queued');
    assert.ok(queuedBefore[0].attempts >= 1, 'after a failed delivery attempt');
    assert.strictEqual((await ctx.grant(victim.grant.grant_id)).revoked, false, 'nothing revoked at the IdP yet');
    assert.strictEqual(await harness.tokenStatus(ctx.pool, victim.session, pLong.provider), undefined, 'the revoked login is gone');
    const shortBefore = await harness.tokenStatus(ctx.pool, short.session, pShort.provider);
    assert.ok(Number(shortBefore.generation) >= 2 && shortBefore.refreshed_at, 'the row the engine saved');

    // The gate: the 0.2.0 library on 0.1.0's objects reads, but neither writes nor refreshes.
    for (const l of longs) {
        assert.strictEqual((await ctx.pool.query(GET, [l.session, pLong.provider])).rows[0].t, l.grant.access_token);
    }
    const creds = (await ctx.pool.query('SELECT * FROM upstream_token.get_upstream_credentials($1)', [longs[1].session])).rows;
    assert.deepStrictEqual(creds.map((r) => [r.provider, r.access_token, r.sqlstate]),
        [[pLong.provider, longs[1].grant.access_token, null]], 'get_upstream_credentials serves a fresh token');
    const gated = async (what, promise) => {
        const e = await sqlError(promise, what);
        assert.strictEqual(e.code, '55000', `${what}: ${e.code} ${e.message}`);
        assert.match(e.hint || '', UPDATE_HINT, `${what}: the hint names the update`);
    };
    const g = (await ctx.idp.client.admin('POST', '/admin/grants', { client_id: pLong.clientId, subject: unique('user') })).grants[0];
    secrets.push(g.access_token, g.refresh_token);
    await gated('store_upstream_token', ctx.pool.query('SELECT upstream_token.store_upstream_token($1, $2, $3, $4, $5)',
        [unique('sess'), pLong.provider, g.access_token, g.refresh_token, 3600]));
    await gated('store_upstream_token over an existing login', ctx.pool.query(
        'SELECT upstream_token.store_upstream_token($1, $2, $3, $4, $5)',
        [longs[2].session, pLong.provider, g.access_token, g.refresh_token, 3600]));
    await gated('register_provider', ctx.pool.query(
        `SELECT upstream_token.register_provider(name => $1, token_endpoint => $2, client_id => $3,
                client_secret => $4, auth_method => 'client_secret_basic')`,
        [unique('p').replace(/[^A-Za-z0-9_.:-]/g, '_').slice(0, 60), `${ctx.idp.url}/token`, 'c', 's']));
    await gated('register_provider over an existing provider', ctx.pool.query(
        `SELECT upstream_token.register_provider(name => $1, token_endpoint => $2, client_id => $3,
                client_secret => $4, auth_method => 'client_secret_basic')`,
        [pLong.provider, `${ctx.idp.url}/token`, pLong.clientId, pLong.secret]));
    const rot2 = await harness.connect();
    try { await gated('rotate_key', rot2.query('CALL upstream_token.rotate_key()')); } finally { await rot2.end(); }
    assert.strictEqual((await ctx.pool.query('SELECT count(*)::int AS n FROM upstream_token.token')).rows[0].n, 7, 'nothing written');
    assert.strictEqual((await ctx.pool.query('SELECT count(*)::int AS n FROM upstream_token.provider')).rows[0].n, 2);
    assert.strictEqual((await ctx.pool.query(GET, [longs[2].session, pLong.provider])).rows[0].t, longs[2].grant.access_token);
    // The engine: it has come up and seen the old objects (it says so in the log), and waits.
    const waiting = new RegExp(`upstream_token engine: waiting: the extension is version ${FROM.replace(/\./g, '\\.')}, ` +
        `the library ${TO.replace(/\./g, '\\.')}: refreshes wait for ALTER EXTENSION upstream_token UPDATE`);
    await waitFor(() => waiting
        .test(harness.serverLog()), { timeoutMs: 30000, what: 'the engine to log that it waits for the update' });
    const engineBefore = await engine();
    assert.strictEqual(engineBefore.ready, false, 'the engine does not serve a 0.1.0 schema');
    // The short-lived token, once expired, needs a refresh nobody may do yet.
    await waitFor(async () => (await ctx.pool.query('SELECT expires_at <= now() AS e FROM upstream_token.token WHERE session = $1',
        [short.session])).rows[0].e, { timeoutMs: 15000, intervalMs: 100, what: 'the short-lived token to expire' });
    const unavailable = await sqlError(ctx.pool.query(GET, [short.session, pShort.provider]), 'get_upstream_token of an expired token');
    assert.strictEqual(unavailable.code, 'UT006', `${unavailable.code} ${unavailable.message}`);
    assert.match(unavailable.hint || '', UPDATE_HINT, 'the UT006 hint names the update');
    const shortCreds = (await ctx.pool.query('SELECT * FROM upstream_token.get_upstream_credentials($1)', [short.session])).rows;
    assert.deepStrictEqual(shortCreds.map((r) => [r.provider, r.access_token, r.sqlstate]), [[pShort.provider, null, 'UT006']]);
    const stillBefore = await harness.tokenStatus(ctx.pool, short.session, pShort.provider);
    assert.strictEqual(stillBefore.generation, shortBefore.generation, 'no refresh under the gate');
    assert.strictEqual((await engine()).ready, false);

    // The upgrade, while clients keep reading.
    const load = readers(longs, pLong.provider, 3);
    await waitFor(() => load.state.calls >= 50, { what: 'readers to be running' });
    const up = await harness.connect();
    let upgradedAt;
    try {
        await up.query('ALTER EXTENSION upstream_token UPDATE');
        upgradedAt = (await up.query('SELECT clock_timestamp() AS t')).rows[0].t;
    } finally { await up.end(); }
    const callsAtUpgrade = load.state.calls;
    await waitFor(() => load.state.calls >= callsAtUpgrade + 50, { what: 'reads after the upgrade' });
    await load.stop();
    assert.deepStrictEqual(load.state.problems.slice(0, 5), [], `${load.state.problems.length} failed reads`);
    assert.strictEqual(await version(), TO);
    await waitFor(async () => (await engine()).ready, { timeoutMs: 30000, what: 'the engine to serve the updated database' });

    // The rows written before the update are applications' logins: grant_type 'refresh_token'
    // (the new column's default), no audience, no subject session, in the table and in
    // token_status; the providers have no login endpoints yet.
    const grantTypes = async () => (await ctx.pool.query(
        `SELECT t.session, t.grant_type, t.audience, t.subject_session, s.grant_type AS shown
           FROM upstream_token.token t JOIN upstream_token.token_status s USING (session, provider)
          ORDER BY t.session`)).rows;
    const notLogins = (rows) => rows.filter((r) => r.grant_type !== 'refresh_token' || r.shown !== 'refresh_token'
        || r.audience !== null || r.subject_session !== null);
    const rowsAfterUpdate = await grantTypes();
    assert.strictEqual(rowsAfterUpdate.length, 7, 'the seven logins are still there');
    assert.deepStrictEqual(notLogins(rowsAfterUpdate), [], 'every existing token row is a refresh_token grant');
    assert.deepStrictEqual((await ctx.pool.query(
        `SELECT count(*)::int AS n FROM upstream_token.provider
          WHERE authorization_endpoint IS NOT NULL OR device_authorization_endpoint IS NOT NULL`)).rows[0].n, 0,
    'no provider has a login endpoint after the update');
    const noEndpoint = await sqlError(ctx.pool.query('SELECT upstream_token.begin_login($1, $2, $3)',
        [unique('sess'), pLong.provider, 'https://app.example/cb']), 'begin_login on an upgraded provider');
    assert.strictEqual(noEndpoint.code, '22023', `begin_login: ${noEndpoint.code} ${noEndpoint.message}`);
    assert.strictEqual((await ctx.pool.query('SELECT count(*)::int AS n FROM upstream_token.login_status')).rows[0].n, 0);

    // Every token is still served, and decrypts under the new key alone.
    for (const l of longs) {
        assert.strictEqual((await ctx.pool.query(GET, [l.session, pLong.provider])).rows[0].t, l.grant.access_token);
    }
    const creds0 = (await ctx.pool.query('SELECT * FROM upstream_token.get_upstream_credentials($1)', [longs[3].session])).rows;
    assert.deepStrictEqual(creds0.map((r) => [r.provider, r.access_token, r.sqlstate]),
        [[pLong.provider, longs[3].grant.access_token, null]], 'get_upstream_credentials serves it too');
    assert.deepStrictEqual(await keyIds(), [newId]);

    // The short-lived token: refreshed by the engine on its own after the upgrade.
    const refreshed = await waitFor(async () => {
        const s = await harness.tokenStatus(ctx.pool, short.session, pShort.provider);
        return s.refreshed_at && s.refreshed_at > upgradedAt && s;
    }, { timeoutMs: 20000, intervalMs: 100, what: 'a proactive refresh of the short-lived token after the upgrade' });
    assert.ok(Number(refreshed.generation) > Number(shortBefore.generation));
    assert.ok(Number((await engine()).proactive_refreshes) > Number(engineBefore.proactive_refreshes));
    const shortToken = (await ctx.pool.query(GET, [short.session, pShort.provider])).rows[0].t;
    assert.notStrictEqual(shortToken, short.grant.access_token);
    assert.strictEqual(await harness.introspectActive(ctx.idp, shortToken, pShort.clientId, pShort.secret), true,
        'the refreshed short-lived token is active at the IdP');

    // A forced refresh of a long-lived one: its refresh token (written in 0.1.0's layout, rotated key) works.
    const forced = (await ctx.pool.query('SELECT * FROM upstream_token.refresh_upstream_token($1, $2)',
        [longs[0].session, pLong.provider])).rows[0];
    assert.strictEqual(forced.refreshed, true, `forced refresh: ${forced.sqlstate} ${forced.error}`);
    const forcedToken = (await ctx.pool.query(GET, [longs[0].session, pLong.provider])).rows[0].t;
    assert.notStrictEqual(forcedToken, longs[0].grant.access_token);
    assert.strictEqual(await harness.introspectActive(ctx.idp, forcedToken, pLong.clientId, pLong.secret), true);
    // The rows the engine saved since (the short-lived one, the forced one) are still refresh_token grants.
    const rowsAfterRefresh = await grantTypes();
    assert.deepStrictEqual(rowsAfterRefresh.map((r) => r.session), rowsAfterUpdate.map((r) => r.session));
    assert.deepStrictEqual(notLogins(rowsAfterRefresh), [], 'refreshed rows keep grant_type refresh_token');

    // The queued revocation: still waiting, then delivered once the endpoint is back.
    assert.strictEqual((await harness.revocationQueue(ctx.pool, pLong.provider)).length, 1, 'still queued after the upgrade');
    assert.strictEqual((await ctx.grant(victim.grant.grant_id)).revoked, false);
    const since = Date.now();
    await ctx.idp.client.admin('DELETE', `/admin/faults/${down.fault_id}`);
    await waitFor(async () => (await harness.revocationQueue(ctx.pool, pLong.provider)).length === 0,
        { timeoutMs: 60000, intervalMs: 200, what: 'the queued revocation to be delivered after the upgrade' });
    assert.strictEqual((await ctx.grant(victim.grant.grant_id)).revoked, true, 'the grant is revoked at the IdP');
    const delivered = (await harness.revokeCalls(ctx.idp, pLong.clientId, since)).filter((c) => c.status === 200);
    assert.strictEqual(delivered.length, 1, 'delivered exactly once');

    // No refresh token was lost or replayed; no secret reached the server log.
    for (const l of [...longs, short]) {
        assert.strictEqual((await ctx.grant(l.grant.grant_id)).reuse_detected, 0, `no reuse on ${l.session}`);
    }
    harness.assertNoSecretsInLog([...secrets, shortToken, forcedToken]);

    // The catalog: identical to a fresh install of the default version in another database.
    const fresh = `ut_fresh_${unique('x').replace(/\W/g, '_')}`;
    await ctx.pool.query(`CREATE DATABASE ${fresh}`);
    await once(fresh, 'CREATE EXTENSION upstream_token');
    assert.strictEqual(await extVersion(fresh), TO);
    const conn = (database) => harness.pgConfig({ database });
    const cmp = await compareDatabases(conn(DB), conn(fresh), {
        aName: `upgraded (${FROM} + ALTER EXTENSION UPDATE)`, bName: `fresh (CREATE EXTENSION ${TO})` });
    assert.ok(cmp.equal, `the upgraded catalog differs from a fresh install:\n${cmp.text}`);
    const left = Object.entries(copied).map(([k, v]) => `${k}: ${v.left.join(', ') || '-'}`).join('; ');
    t.diagnostic(`${TO} columns not copied (${left}); catalog identical (${cmp.entries} entries); ` +
        `reads during the upgrade ${load.state.calls}; short-lived token refreshed ` +
        `${refreshed.refreshed_at - upgradedAt} ms after the upgrade; ${Date.now() - t0} ms`);
});
