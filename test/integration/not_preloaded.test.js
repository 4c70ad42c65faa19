'use strict';
// On a second, throwaway cluster where upstream_token is NOT in shared_preload_libraries, the
// extension still installs and serves stored tokens that are fresh, but a token that needs a
// refresh fails fast with engine_unavailable (UT006) and a hint naming
// shared_preload_libraries, and engine_status has no row.
const test = require('node:test');
const assert = require('node:assert');
const path = require('node:path');
const fs = require('node:fs');
const { execFileSync } = require('node:child_process');
const { Client } = require('pg');
const { REPO } = require('./harness.js');

const DIR = path.join(REPO, '.tmp', 'cluster-ops2');
const PORT = 54344;

// Runs scripts/cluster.sh for the second cluster (never the one in the PG* environment).
function cluster2(cmd) {
    execFileSync('bash', [path.join(REPO, 'scripts', 'cluster.sh'), cmd], {
        stdio: ['ignore', 'ignore', 'inherit'],
        env: { ...process.env, UT_CLUSTER_DIR: DIR, UT_PORT: String(PORT),
            UT_EXTRA_CONF: "shared_preload_libraries = ''" },
    });
}

test('library not preloaded: fresh tokens served, refresh needed gives UT006 naming shared_preload_libraries', async (t) => {
    let c = null;
    t.after(async () => {
        if (c) await c.end().catch(() => {});
        cluster2('destroy');
    });
    cluster2('init');
    cluster2('start');
    const conf = fs.readFileSync(path.join(DIR, 'data', 'postgresql.conf'), 'utf8');
    assert.match(conf, /shared_preload_libraries = ''\s*$/, 'the override is the last line');

    c = new Client({ host: path.join(DIR, 'sock'), port: PORT, user: 'postgres', database: 'ut_test' });
    c.on('error', () => {});
    await c.connect();
    assert.strictEqual((await c.query('SHOW shared_preload_libraries')).rows[0].shared_preload_libraries, '');

    // Regression for bug B1 (.tmp/bugs-ops.md): loading the library without preload used to
    // be FATAL here (PGC_POSTMASTER GUCs defined after startup).
    await c.query('CREATE EXTENSION upstream_token');
    await c.query(`SET upstream_token.key_file = '${path.join(DIR, 'key')}'`);
    assert.strictEqual((await c.query('SELECT count(*)::int AS n FROM upstream_token.engine_status')).rows[0].n, 0,
        'engine_status has no row without the preloaded library');

    await c.query(`SELECT upstream_token.register_provider(name => 'np', token_endpoint => 'https://127.0.0.1:9/token',
                          client_id => 'c', client_secret => 's')`);
    await c.query("SELECT upstream_token.store_upstream_token('expired', 'np', 'at-expired', 'rt-expired', 0)");
    await c.query("SELECT upstream_token.store_upstream_token('fresh', 'np', 'at-fresh', 'rt-fresh', 3600)");

    const err = await c.query("SELECT upstream_token.get_upstream_token('expired', 'np')").then(
        () => null, (e) => e);
    assert.ok(err, 'an expired token cannot be served');
    assert.strictEqual(err.code, 'UT006');
    assert.match(err.hint || '', /shared_preload_libraries/);

    const fresh = await c.query("SELECT upstream_token.get_upstream_token('fresh', 'np') AS t");
    assert.strictEqual(fresh.rows[0].t, 'at-fresh');

    // The failed call did not damage the row: it is still there, active, with its refresh token.
    const st = await c.query("SELECT status, has_refresh_token FROM upstream_token.token_status WHERE session = 'expired'");
    assert.deepStrictEqual(st.rows, [{ status: 'active', has_refresh_token: true }]);
});
