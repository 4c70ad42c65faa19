'use strict';
// The 0.1.0 -> 0.2.0 upgrade of a database in use, on a cluster of its own (the engine serves
// only upstream_token.database, here the upgraded one). With 0.1.0's objects and the new library
// (the state between the restart and the UPDATE): providers registered against the test IdP,
// several logins stored (long-lived ones and a 6-second one the engine keeps refreshing, and has
// refreshed already), a revocation left queued (the IdP's revocation endpoint answers 503) and
// the key rotated (rotate_key, then the old key removed). Then ALTER EXTENSION
// upstream_token UPDATE while clients keep reading. Afterwards every token is still served, a
// forced refresh works, the engine refreshes the short-lived token on its own, the queued
// revocation is delivered once the endpoint is back, nothing rotated was lost or replayed, and
// the catalog is identical to a fresh 0.2.0 install in another database of the same cluster
// (upgrade_catalog.js: \dx+, definitions, ACLs, comments, membership, ...).
const test = require('node:test');
const assert = require('node:assert');
const net = require('node:net');
const path = require('node:path');
const { execFileSync } = require('node:child_process');
const harness = require('./harness.js');
const { compareDatabases } = require('./upgrade_catalog.js');

const { REPO, waitFor, unique } = harness;
const FROM = '0.1.0';
const TO = '0.2.0';
const DB = 'ut_upgrade';
const GET = 'SELECT upstream_token.get_upstream_token($1, $2) AS t';

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

test(`${FROM} in use (tokens, queued revocation, rotated key) -> ALTER EXTENSION UPDATE -> served, refreshed, delivered, catalog = fresh ${TO}`, async (t) => {
    const t0 = Date.now();
    const port = Number(process.env.UT_UPGRADE_PORT || await freePort(Number(process.env.PGPORT) + 2));
    const dir = path.join(REPO, '.tmp', `upgrade-${process.pid}`);
    const env = { ...process.env, UT_CLUSTER_DIR: dir, UT_PORT: String(port), UT_DATABASE: DB, UT_EXTRA_CONF: '' };
    let ctx = null;
    t.after(async () => {
        if (ctx) await ctx.close().catch(() => {});
        upgradeCluster('destroy', env);
    });
    upgradeCluster('init', env);
    upgradeCluster('start', env);
    // This file runs in a process of its own: the harness (pool, connect, server log) now talks
    // to the upgrade cluster.
    Object.assign(process.env, { PGHOST: path.join(dir, 'sock'), PGPORT: String(port), PGUSER: 'postgres',
        PGDATABASE: DB, UT_CLUSTER_DIR: dir, UT_SERVER_LOG: path.join(dir, 'server.log') });

    // 0.1.0 first (setup() would create the default version), then the IdP and the engine.
    await once(DB, `CREATE EXTENSION upstream_token VERSION '${FROM}'`);
    ctx = await harness.setup({ poolSize: 6 });
    const version = async () => (await ctx.pool.query(
        "SELECT extversion AS v FROM pg_extension WHERE extname = 'upstream_token'")).rows[0].v;
    assert.strictEqual(await version(), FROM);

    // Providers and logins under 0.1.0.
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

    // The new library works with 0.1.0's objects (the state between restart and UPDATE): the
    // engine has refreshed the short-lived token on its own already.
    await waitFor(async () => Number((await harness.tokenStatus(ctx.pool, short.session, pShort.provider)).generation) >= 2,
        { timeoutMs: 15000, intervalMs: 100, what: `a proactive refresh under ${FROM}` });

    // The state just before the upgrade.
    const queuedBefore = await harness.revocationQueue(ctx.pool, pLong.provider);
    assert.strictEqual(queuedBefore.length, 1, 'the revocation is still queued');
    assert.strictEqual((await ctx.grant(victim.grant.grant_id)).revoked, false, 'nothing revoked at the IdP yet');

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
    const engineAtUpgrade = await ctx.engine();
    assert.strictEqual(engineAtUpgrade.ready, true, 'the engine is serving');

    // Every token is still served, and decrypts under the new key alone.
    for (const l of longs) {
        assert.strictEqual((await ctx.pool.query(GET, [l.session, pLong.provider])).rows[0].t, l.grant.access_token);
    }
    assert.deepStrictEqual(await keyIds(), [newId]);
    assert.strictEqual(await harness.tokenStatus(ctx.pool, victim.session, pLong.provider), undefined, 'the revoked login is gone');

    // The short-lived token: refreshed by the engine on its own after the upgrade.
    const refreshed = await waitFor(async () => {
        const s = await harness.tokenStatus(ctx.pool, short.session, pShort.provider);
        return s.refreshed_at && s.refreshed_at > upgradedAt && s;
    }, { timeoutMs: 20000, intervalMs: 100, what: 'a proactive refresh of the short-lived token after the upgrade' });
    assert.ok(Number((await ctx.engine()).proactive_refreshes) > Number(engineAtUpgrade.proactive_refreshes));
    const shortToken = (await ctx.pool.query(GET, [short.session, pShort.provider])).rows[0].t;
    assert.notStrictEqual(shortToken, short.grant.access_token);
    assert.strictEqual(await harness.introspectActive(ctx.idp, shortToken, pShort.clientId, pShort.secret), true,
        'the refreshed short-lived token is active at the IdP');

    // A forced refresh of a long-lived one: its refresh token (sealed by 0.1.0, rotated key) works.
    const forced = (await ctx.pool.query('SELECT * FROM upstream_token.refresh_upstream_token($1, $2)',
        [longs[0].session, pLong.provider])).rows[0];
    assert.strictEqual(forced.refreshed, true, `forced refresh: ${forced.sqlstate} ${forced.error}`);
    const forcedToken = (await ctx.pool.query(GET, [longs[0].session, pLong.provider])).rows[0].t;
    assert.notStrictEqual(forcedToken, longs[0].grant.access_token);
    assert.strictEqual(await harness.introspectActive(ctx.idp, forcedToken, pLong.clientId, pLong.secret), true);

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
    assert.strictEqual((await once(fresh, "SELECT extversion AS v FROM pg_extension WHERE extname = 'upstream_token'"))[0].v, TO);
    const conn = (database) => harness.pgConfig({ database });
    const cmp = await compareDatabases(conn(DB), conn(fresh), {
        aName: `upgraded (${FROM} + ALTER EXTENSION UPDATE)`, bName: `fresh (CREATE EXTENSION ${TO})` });
    assert.ok(cmp.equal, `the upgraded catalog differs from a fresh install:\n${cmp.text}`);
    t.diagnostic(`catalog identical (${cmp.entries} entries); reads during the upgrade ${load.state.calls}; ` +
        `short-lived token refreshed ${refreshed.refreshed_at - upgradedAt} ms after the upgrade; ${Date.now() - t0} ms`);
});
