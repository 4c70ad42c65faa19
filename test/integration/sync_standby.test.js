'use strict';
// The engine commits with synchronous_commit = on. With a synchronous standby configured that
// never connects (synchronous_standby_names = 'nobody'), PostgreSQL would make each of its
// commits wait for ever, and the whole engine with it. The wait is bounded by
// upstream_token.standby_wait_timeout: refreshes complete and are saved (durable locally), the
// log says the standby wait was cut, and the cancel that cut it does not hit the engine's next
// statement (later refreshes work too). A cluster of its own, next to the suite's.
const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const path = require('node:path');
const { execFileSync } = require('node:child_process');
const { Client } = require('pg');
const { setup, waitFor, unique, REPO, CERT_DIR } = require('./harness.js');

const DIR = path.join(REPO, '.tmp', 'cluster-sync');
const PORT = Number(process.env.PGPORT) + 2;
const DB = 'ut_sync';
const ENV = {
    ...process.env, UT_CLUSTER_DIR: DIR, UT_PORT: String(PORT), UT_DATABASE: DB,
    UT_EXTRA_CONF: `upstream_token.standby_wait_timeout = '500ms'\n` +
        `upstream_token.ca_file = '${path.join(CERT_DIR, 'ca.pem')}'`,
};

function clusterSh(...args) {
    execFileSync('bash', [path.join(REPO, 'scripts', 'cluster.sh'), ...args], { env: ENV, stdio: 'inherit' });
}

test('a synchronous standby that never answers does not stall the engine', async (t) => {
    const ctx = await setup({ poolSize: 2 });  // the test IdP (and its CA file)
    clusterSh('init');
    clusterSh('start');
    // The test's own session commits locally; only the engine insists on synchronous_commit = on.
    const c = new Client({ host: path.join(DIR, 'sock'), port: PORT, user: 'postgres', database: DB,
        options: '-c synchronous_commit=local' });
    c.on('error', () => {});
    await c.connect();
    t.after(async () => {
        await c.end().catch(() => {});
        clusterSh('destroy');
        await ctx.close();
    });
    const log = path.join(DIR, 'server.log');
    await c.query('CREATE EXTENSION upstream_token');
    await waitFor(async () => (await c.query('SELECT ready FROM upstream_token.engine_status')).rows[0]?.ready,
        { timeoutMs: 30000, what: 'the engine of the second cluster' });

    const clientId = unique('client');
    const secret = `s-${unique('secret')}`;
    await ctx.idp.client.admin('POST', '/admin/clients', { client_id: clientId, client_secret: secret, access_ttl: 3600 });
    const provider = unique('p').replace(/[^A-Za-z0-9_.:-]/g, '_').slice(0, 60);
    await c.query('SELECT upstream_token.register_provider($1, $2, $3, $4)',
        [provider, `${ctx.idp.url}/token`, clientId, secret]);

    await c.query("ALTER SYSTEM SET synchronous_standby_names = 'nobody'");
    await c.query('SELECT pg_catalog.pg_reload_conf()');
    await waitFor(async () => {
        const n = new Client({ host: path.join(DIR, 'sock'), port: PORT, user: 'postgres', database: DB });
        await n.connect();
        try {
            return (await n.query('SHOW synchronous_standby_names')).rows[0].synchronous_standby_names === 'nobody';
        } finally { await n.end(); }
    }, { what: 'synchronous_standby_names to be reloaded' });
    const logStart = fs.statSync(log).size;

    // Two expired logins, refreshed one after the other by the engine.
    for (let i = 0; i < 2; i += 1) {
        const g = (await ctx.idp.client.admin('POST', '/admin/grants', { client_id: clientId, subject: unique('u') })).grants[0];
        const session = unique('sync');
        await c.query('SELECT upstream_token.store_upstream_token($1, $2, $3, $4, 0)',
            [session, provider, g.access_token, g.refresh_token]);
        const started = Date.now();
        const tok = (await c.query('SELECT upstream_token.get_upstream_token($1, $2) AS t', [session, provider])).rows[0].t;
        assert.ok(tok && tok !== g.access_token, `refresh ${i + 1} completed (${Date.now() - started} ms)`);
        t.diagnostic(`refresh ${i + 1}: ${Date.now() - started} ms`);
        const row = (await c.query(`SELECT generation, status, refreshed_at IS NOT NULL AS saved
            FROM upstream_token.token_status WHERE session = $1`, [session])).rows[0];
        assert.deepStrictEqual(row, { generation: '2', status: 'active', saved: true }, 'saved');
        const grant = await ctx.grant(g.grant_id);
        assert.strictEqual(grant.revoked, false);
    }

    const text = fs.readFileSync(log).subarray(logStart).toString('utf8');
    assert.match(text, /canceling wait for synchronous replication due to user request/, 'PostgreSQL cut the wait');
    assert.match(text, /upstream_token engine: stopped waiting for the synchronous standby after 500 ms/,
        'the engine says why');
    assert.doesNotMatch(text, /canceling statement due to user request/, 'no stray cancel hit a later statement');
    assert.strictEqual((await c.query('SELECT ready FROM upstream_token.engine_status')).rows[0].ready, true);
});
