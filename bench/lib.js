'use strict';
// Shared helpers of the benchmark scenarios: connections to the bench cluster and the IdP,
// counters of both, process memory, statistics, and the alternating runs that make ratios
// robust against other load on the machine.

const fs = require('node:fs');
const path = require('node:path');
const { spawn } = require('node:child_process');
const { Pool, Client } = require(path.join(__dirname, '..', 'test', 'node_modules', 'pg'));
const { IdpClient } = require(path.join(__dirname, '..', 'test', 'idp', 'client.js'));

const REPO = path.resolve(__dirname, '..');

// Settings run.sh exports: the cluster (PG*), the IdP and the work directory.
function env(name) {
    const v = process.env[name];
    if (!v) throw new Error(`${name} is not set: run bench/run.sh`);
    return v;
}

// Connection settings of the bench cluster.
function pgConfig(extra = {}) {
    return {
        host: env('PGHOST'), port: Number(env('PGPORT')), user: process.env.PGUSER || 'postgres',
        database: env('PGDATABASE'), ...extra,
    };
}

// One connected client (callers need their own backend each).
async function connect() {
    const c = new Client(pgConfig());
    c.on('error', () => {});
    await c.connect();
    return c;
}

// A connection pool for set-up statements.
function pool(max = 8) {
    const p = new Pool(pgConfig({ max }));
    p.on('error', () => {});
    return p;
}

// The admin/OAuth client of the bench IdP.
function idp() {
    return new IdpClient(env('UT_BENCH_IDP'), env('UT_BENCH_CA'));
}

const ENGINE_COUNTERS = ['requests', 'deduplicated', 'network_calls', 'refreshed', 'answered_without_call',
    'failed_transient', 'failed_reauth', 'failed_client', 'invalid_binding', 'persist_retries',
    'proactive_refreshes'];

// The engine's counters as numbers (bigint columns arrive as strings).
async function engine(db) {
    const r = (await db.query('SELECT * FROM upstream_token.engine_status')).rows[0];
    if (!r) throw new Error('the refresh engine is not running');
    const out = { worker_pid: r.worker_pid, ready: r.ready, in_flight: r.in_flight, queued: r.queued, planned: r.planned };
    for (const k of ENGINE_COUNTERS) out[k] = Number(r[k]);
    return out;
}

// Counter differences between two engine snapshots.
function engineDelta(before, after) {
    const d = {};
    for (const k of ENGINE_COUNTERS) d[k] = after[k] - before[k];
    d.failed = d.failed_transient + d.failed_reauth + d.failed_client + d.invalid_binding;
    return d;
}

// Differences between two IdP /admin/stats answers (the counters the scenarios judge).
function idpDelta(before, after) {
    const errors = {};
    for (const [k, v] of Object.entries(after.by_error || {})) {
        const d = v - ((before.by_error || {})[k] || 0);
        if (d) errors[k] = d;
    }
    return {
        token_requests: after.token_requests - before.token_requests,
        token_success: after.token_success - before.token_success,
        reuse_detected: after.reuse_detected - before.reuse_detected,
        revoked_grants: after.revoked_grants - before.revoked_grants,
        invalid_grant: errors.invalid_grant || 0,
        errors,
        max_in_flight: after.max_in_flight,
    };
}

// Memory of a process from /proc (kB): VmRSS and its private (RssAnon) and shared parts.
function memory(pid) {
    const text = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (name) => Number((new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(text) || [])[1]);
    return { VmRSS: kb('VmRSS'), RssAnon: kb('RssAnon'), RssFile: kb('RssFile'), RssShmem: kb('RssShmem') };
}

// CPU time a process has run, in ms (/proc/<pid>/schedstat: nanoseconds, unlike the 10 ms
// ticks of /proc/<pid>/stat, which are too coarse for a backend serving a few hundred calls).
function cpuMs(pid) {
    return Number(fs.readFileSync(`/proc/${pid}/schedstat`, 'utf8').split(' ')[0]) / 1e6;
}

// Polls `check` until it returns a truthy value; throws after the deadline.
async function waitFor(check, { timeoutMs = 60000, intervalMs = 20, what = 'a condition' } = {}) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
        const v = await check();
        if (v) return v;
        if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
        await sleep(intervalMs);
    }
}

// Pauses between steps of a scenario (never used to wait for a condition: see waitFor).
function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }

// Milliseconds since `t0` (a process.hrtime.bigint() value).
function msSince(t0) { return Number(process.hrtime.bigint() - t0) / 1e6; }

// The q-quantile of an ascending array (nearest rank).
function quantile(sorted, q) {
    if (sorted.length === 0) return NaN;
    return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

// The median of any array of numbers.
function median(values) {
    const s = [...values].sort((a, b) => a - b);
    if (s.length === 0) return NaN;
    const m = Math.floor(s.length / 2);
    return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

// p50/p95/p99 of a list of latencies (ms).
function summary(values) {
    const s = [...values].sort((a, b) => a - b);
    return { n: s.length, p50: quantile(s, 0.5), p95: quantile(s, 0.95), p99: quantile(s, 0.99), max: s[s.length - 1] };
}

// Sets server GUCs with ALTER SYSTEM and reloads; waits until a new session sees them.
async function setGucs(db, settings) {
    for (const [name, value] of Object.entries(settings)) {
        if (!/^[a-z_.]+$/.test(name)) throw new Error(`bad setting name ${name}`);
        await db.query(`ALTER SYSTEM SET ${name} = '${String(value).replace(/'/g, "''")}'`);
    }
    await db.query('SELECT pg_reload_conf()');
    await waitFor(async () => {
        const c = await connect();
        try {
            for (const [name, value] of Object.entries(settings)) {
                const r = await c.query('SELECT setting FROM pg_settings WHERE name = $1', [name]);
                if (r.rows[0].setting !== String(value)) return false;
            }
            return true;
        } finally { await c.end(); }
    }, { what: `settings ${Object.keys(settings).join(', ')}`, intervalMs: 50 });
}

// Registers an IdP client and a provider of the same name (ID tokens on, as in most real
// deployments); returns {provider, clientId, secret}.
async function provider(db, idpClient, name, { threshold = null, accessTtl = 3600 } = {}) {
    const secret = `bench-${name}-${Math.random().toString(36).slice(2)}`;
    await idpClient.admin('POST', '/admin/clients', {
        client_id: name, client_secret: secret, access_ttl: accessTtl, id_token: true,
    });
    await db.query(
        `SELECT upstream_token.register_provider(name => $1, token_endpoint => $2, client_id => $1,
                client_secret => $3, refresh_threshold => $4::interval)`,
        [name, `${env('UT_BENCH_IDP')}/token`, secret, threshold]);
    return { provider: name, clientId: name, secret };
}

// Mints `count` logins at the IdP (in batches of 10 000).
async function mint(idpClient, clientId, count) {
    const grants = [];
    for (let left = count; left > 0; left -= 10000) {
        const res = await idpClient.admin('POST', '/admin/grants', {
            client_id: clientId, subject: 'user', count: Math.min(left, 10000),
        });
        grants.push(...res.grants);
    }
    return grants;
}

// Stores logins in one statement (one transaction: they are "issued at the same instant").
async function storeMany(db, providerName, sessions, grants, expiresIn) {
    await db.query(
        `SELECT count(upstream_token.store_upstream_token(x.s, $1, x.a, x.r, $5, x.i))
           FROM unnest($2::text[], $3::text[], $4::text[], $6::text[]) AS x(s, a, r, i)`,
        [providerName, sessions, grants.map((g) => g.access_token), grants.map((g) => g.refresh_token),
         expiresIn, grants.map((g) => g.id_token || null)]);
}

// The IdP's /token call log for one client since an instant (epoch ms).
async function calls(idpClient, clientId, sinceMs) {
    const q = `since_ms=${sinceMs}&client_id=${encodeURIComponent(clientId)}`;
    return (await idpClient.admin('GET', `/admin/calls?${q}`)).calls;
}

// Runs a command and resolves {code, stdout, stderr}.
function run(cmd, args, opts = {}) {
    return new Promise((resolve, reject) => {
        const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
        let stdout = '';
        let stderr = '';
        child.stdout.on('data', (d) => { stdout += d; });
        child.stderr.on('data', (d) => { stderr += d; });
        child.on('error', reject);
        child.on('close', (code) => resolve({ code, stdout, stderr }));
    });
}

// Runs `fn` on each of `n` callers at once and resolves their results.
function concurrently(n, fn) {
    return Promise.all(Array.from({ length: n }, (_, i) => fn(i)));
}

// A random permutation of 0..n-1 (each caller walks the sessions in its own order).
function shuffled(n) {
    const a = Array.from({ length: n }, (_, i) => i);
    for (let i = n - 1; i > 0; i -= 1) {
        const j = Math.floor(Math.random() * (i + 1));
        [a[i], a[j]] = [a[j], a[i]];
    }
    return a;
}

const PGBENCH = '/usr/lib/postgresql/15/bin/pgbench';

// One pgbench run of a script; returns {tps, latencies (ms, sampled)}.
async function pgbench(script, seconds, tag) {
    const work = env('UT_BENCH_WORK');
    const prefix = path.join(work, `pgbench-${tag}`);
    const r = await run(PGBENCH, ['-n', '-M', 'prepared', '-c', '8', '-j', '2', '-T', String(seconds),
        '-f', script, '--log', `--log-prefix=${prefix}`, '--sampling-rate=0.02']);
    const m = /tps = ([\d.]+) \(without initial connection time\)/.exec(r.stdout);
    if (r.code !== 0 || !m) throw new Error(`pgbench failed: ${r.stderr.slice(-500)}`);
    const latencies = [];
    for (const f of fs.readdirSync(work).filter((n) => n.startsWith(`pgbench-${tag}.`))) {
        for (const line of fs.readFileSync(path.join(work, f), 'utf8').split('\n')) {
            const parts = line.split(' ');
            if (parts.length >= 3) latencies.push(Number(parts[2]) / 1000);
        }
        fs.unlinkSync(path.join(work, f));
    }
    return { tps: Number(m[1]), latencies };
}

// Warms both scripts ({ours, plain}), then runs rounds of (plain, ours, ours, plain): a drift in
// the machine's other load hits both sides alike. Per round sum(ours) / sum(plain) cancels a
// linear drift; the ratio is the median of the rounds.
async function abba(scripts, tag, { seconds, rounds, log }) {
    await pgbench(scripts.plain, 2, `${tag}-warm-plain`);
    await pgbench(scripts.ours, 2, `${tag}-warm-ours`);
    const tps = { ours: [], plain: [] };
    const lat = { ours: [], plain: [] };
    const order = [];
    for (let r = 0; r < rounds; r += 1) order.push('plain', 'ours', 'ours', 'plain');
    for (const [i, kind] of order.entries()) {
        const res = await pgbench(scripts[kind], seconds, `${tag}-${kind}-${i}`);
        tps[kind].push(res.tps);
        lat[kind].push(...res.latencies);
        log(`   run ${i + 1}/${order.length} ${kind}: ${res.tps.toFixed(0)} tps`);
    }
    const roundRatios = [];
    for (let r = 0; r < rounds; r += 1) {
        roundRatios.push((tps.ours[2 * r] + tps.ours[2 * r + 1]) / (tps.plain[2 * r] + tps.plain[2 * r + 1]));
    }
    return { tps, lat, order, roundRatios, ratio: median(roundRatios) };
}

module.exports = {
    REPO, env, pgConfig, connect, pool, idp, engine, engineDelta, idpDelta, memory, cpuMs, waitFor, sleep,
    msSince, quantile, median, summary, setGucs, provider, mint, storeMany, calls, run, concurrently, shuffled,
    pgbench, abba,
};
