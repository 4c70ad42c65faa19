'use strict';
// A step of the wall clock does not freeze the engine's retries (issue 9: "engine timers on
// the wall clock"). A cluster of its own runs under libfaketime, whose offset the test moves
// while the server runs (the monotonic clock is left alone, as an NTP step leaves it). The
// engine holds a rotated answer it cannot save (the row is locked by a client transaction);
// the wall clock then steps back one hour and the lock goes away: the answer is saved within
// seconds. 0.1.0 timed that retry on the wall clock and waited the hour.
const test = require('node:test');
const assert = require('node:assert');
const path = require('node:path');
const fs = require('node:fs');
const { execFileSync } = require('node:child_process');
const { Client } = require('pg');
const { REPO, CERT_DIR, waitFor, unique } = require('./harness.js');
const { startIdp } = require('../idp/client.js');

const DIR = path.join(REPO, '.tmp', 'cluster-clock');
const PORT = 54351;
const OFFSET_FILE = path.join(DIR, 'faketime');
const LIBFAKETIME = '/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1';

// Runs scripts/cluster.sh for this cluster, the server under libfaketime. Only the server
// loads it (UT_SERVER_PRELOAD, after any library already there, e.g. memcheck's ASan runtime):
// libfaketime shares its state through /dev/shm, which a Debian root's server sees apart.
function clusterClock(cmd) {
    const preload = [process.env.UT_SERVER_PRELOAD, LIBFAKETIME].filter(Boolean).join(':');
    execFileSync('bash', [path.join(REPO, 'scripts', 'cluster.sh'), cmd], {
        stdio: ['ignore', 'ignore', 'inherit'],
        env: { ...process.env, UT_CLUSTER_DIR: DIR, UT_PORT: String(PORT),
            UT_SERVER_PRELOAD: preload, FAKETIME_TIMESTAMP_FILE: OFFSET_FILE,
            FAKETIME_NO_CACHE: '1', FAKETIME_DONT_FAKE_MONOTONIC: '1' },
    });
}

// Connects to this cluster's engine database.
async function connectClock() {
    const c = new Client({ host: path.join(DIR, 'sock'), port: PORT, user: 'postgres', database: 'ut_test' });
    c.on('error', () => {});
    await c.connect();
    return c;
}

test('a wall-clock step back does not hold up a retried save', { timeout: 120000 }, async (t) => {
    assert.ok(fs.existsSync(LIBFAKETIME), 'libfaketime is installed (scripts/deps.sh)');
    const idp = await startIdp({ certDir: CERT_DIR });
    const clients = [];
    t.after(async () => {
        for (const c of clients) await c.end().catch(() => {});
        clusterClock('destroy');
        await idp.stop();
    });
    clusterClock('init');
    fs.writeFileSync(OFFSET_FILE, '+0\n');
    fs.chmodSync(OFFSET_FILE, 0o644);
    clusterClock('start');
    const c = await connectClock();
    clients.push(c);
    await c.query('CREATE EXTENSION upstream_token');
    await c.query(`ALTER SYSTEM SET upstream_token.ca_file = '${path.join(CERT_DIR, 'ca.pem')}'`);
    await c.query('SELECT pg_reload_conf()');
    await waitFor(async () => (await c.query('SELECT ready FROM upstream_token.engine_status')).rows[0]?.ready,
        { timeoutMs: 30000, what: 'the engine of the faketime cluster' });

    const clientId = unique('client');
    await idp.client.admin('POST', '/admin/clients', { client_id: clientId, client_secret: 's', access_ttl: 3600 });
    await c.query(`SELECT upstream_token.register_provider(name => 'clock', token_endpoint => $1,
                          client_id => $2, client_secret => 's')`, [`${idp.url}/token`, clientId]);
    const { grants } = await idp.client.admin('POST', '/admin/grants', { client_id: clientId, subject: 'u', count: 1 });
    const g = grants[0];
    const locker = await connectClock();
    clients.push(locker);
    // Rotated at once, answered once the row is locked.
    await idp.client.admin('POST', '/admin/faults', { match: { client_id: clientId }, action: { respond_delay_ms: 1500 } });
    await c.query("SELECT upstream_token.store_upstream_token('s1', 'clock', $1, $2, 0)", [g.access_token, g.refresh_token]);
    await waitFor(async () => (await idp.client.admin('GET', '/admin/stats')).in_flight >= 1,
        { timeoutMs: 10000, what: 'the refresh at the provider' });
    await locker.query('BEGIN');
    await locker.query("SELECT 1 FROM upstream_token.token WHERE session = 's1' FOR UPDATE");
    await waitFor(async () => Number((await c.query('SELECT persist_retries FROM upstream_token.engine_status')).rows[0].persist_retries) > 0,
        { timeoutMs: 10000, what: 'the engine to hold the answer the locked row refused' });

    fs.writeFileSync(OFFSET_FILE, '-3600\n');  // the wall clock steps back one hour
    await waitFor(async () => {
        const r = await c.query('SELECT extract(epoch FROM clock_timestamp())::float8 * 1000 AS ms');
        return Date.now() - r.rows[0].ms > 3000 * 1000;
    }, { timeoutMs: 5000, what: 'the server to see the step' });
    await locker.query('COMMIT');
    await waitFor(async () => (await c.query("SELECT generation FROM upstream_token.token WHERE session = 's1'")).rows[0].generation > 1,
        { timeoutMs: 15000, what: 'the held answer to be saved after the step' });
    const stats = await idp.client.admin('GET', '/admin/stats');
    assert.strictEqual(stats.reuse_detected, 0);
});
