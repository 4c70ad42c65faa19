'use strict';
// The chaos soak (run it with test/chaos/run.sh, which gives it a cluster of its own).
//
// A real rotating provider (test/idp: single-use refresh tokens, the whole grant revoked on
// reuse) with short access-token lifetimes, 200+ sessions, readers and on-demand storms, while
// a driver injects faults at random from a seeded generator. At the end, every session must
// still hold its provider's current token and refresh with it: 0 revoked grants and 0 lost
// sessions, except those a SIGKILL of the engine cost (each kill at most the exchanges in
// flight at that instant). See docs/development.md.
//
// Environment: CHAOS_SEED (replays a schedule), CHAOS_FAULTS (comma-separated kinds, "all"
// or "none"), CHAOS_SESSIONS (240), CHAOS_ACCESS_TTL (20 s), CHAOS_READERS (4),
// CHAOS_READ_RATE (300 calls/s), CHAOS_RUN_DIR, CHAOS_MAX_REQUESTS (upstream_token.max_requests
// of the cluster). Argument: seconds of chaos (default 240).

const fs = require('node:fs');
const path = require('node:path');
const crypto = require('node:crypto');
const { execFile } = require('node:child_process');
const { startIdp } = require('../idp/client.js');
const { Rng, Mutex, sleep, pool, errorCode, EventLog } = require('./lib.js');
const { Ledger, KeyRing } = require('./ledger.js');
const { Outcomes, startReaders, runStorms } = require('./workload.js');
const { FAULTS, waitEngine } = require('./faults.js');
const { collect, judge } = require('./verify.js');

const REPO = path.resolve(__dirname, '..', '..');
const env = (name, dflt) => (process.env[name] !== undefined && process.env[name] !== '' ? process.env[name] : dflt);

// Whether an error means "another fault broke this one" (a restart, a kill): a SQLSTATE or a
// lost connection, rather than a harness or product failure.
function interrupted(e) {
    return /^[0-9A-Z]{5}$/.test(e.code || '') || /^E[A-Z]+$/.test(e.code || '') ||
        /Connection terminated|connection error|not queryable|trying to connect/i.test(e.message || '');
}

// Runs one fault, logging its begin and its outcome; never throws.
async function runFault(h, kind, def, params) {
    const shown = Object.fromEntries(Object.entries(params).filter(([, v]) => !(v instanceof Rng)));
    const ev = h.log.begin(kind, shown);
    let timer;
    try {
        const limit = new Promise((_, reject) => { timer = setTimeout(() => reject(new Error('did not finish within 150 s')), 150000); });
        h.log.end(ev, 'ok', await Promise.race([def.run(h, params, ev), limit]));
    } catch (e) {
        h.log.end(ev, interrupted(e) ? 'interrupted' : 'failed', `${errorCode(e) === 'connection' ? '' : `${e.code} `}${e.message}`);
    } finally {
        clearTimeout(timer);
    }
}

// The fault driver: every enabled kind once in a shuffled order, then weighted picks, one every
// 0.8-3 s, at most 4 at once; server faults one at a time. All draws come from `rng` in order,
// so a seed replays the same schedule (outcomes depend on timing).
async function drive(h, rng, endAt) {
    const kinds = h.enabledKinds;
    if (kinds.length === 0) return sleep(Math.max(0, endAt - Date.now()));
    const deck = rng.sample(kinds, kinds.length);
    const total = kinds.reduce((s, k) => s + FAULTS[k].weight, 0);
    const server = new Mutex();
    const running = new Set();
    while (Date.now() < endAt) {
        await sleep(rng.int(800, 3000));
        if (Date.now() >= endAt) break;
        let kind = deck.shift();
        if (!kind) {
            let x = rng.next() * total;
            kind = kinds.find((k) => (x -= FAULTS[k].weight) < 0) || kinds[kinds.length - 1];
        }
        const def = FAULTS[kind];
        const params = def.params(rng.fork(), h);
        while (running.size >= 4) await Promise.race(running);
        let task;
        if (def.group === 'server') {  // waits for the previous server fault: they never pile up
            let started;
            const begun = new Promise((r) => { started = r; });
            task = server.run(() => { started(); return runFault(h, kind, def, params); });
            await begun;
        } else {
            task = runFault(h, kind, def, params);
        }
        running.add(task);
        task.finally(() => running.delete(task));
    }
    await Promise.all(running);
}

// CPU seconds of a process (with its reaped children when `children`), from /proc; 0 if gone.
function cpuOf(pid, children = false) {
    try {
        const st = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
        const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
        const ticks = Number(f[11]) + Number(f[12]) + (children ? Number(f[13]) + Number(f[14]) : 0);
        return ticks / 100;
    } catch {
        return 0;
    }
}

// CPU used by the cluster since its postmaster started (the postmaster, its live children and
// the children it reaped), by the provider and by this harness; and the wall time it covers.
function cpuUse(h) {
    let pm = 0;
    try { pm = Number(fs.readFileSync(path.join(process.env.UT_DATA, 'postmaster.pid'), 'utf8').split('\n')[0]); } catch { /* stopped */ }
    let cluster = cpuOf(pm, true);
    for (const d of fs.readdirSync('/proc')) {
        if (!/^\d+$/.test(d)) continue;
        try {
            const st = fs.readFileSync(`/proc/${d}/stat`, 'utf8');
            if (Number(st.slice(st.lastIndexOf(')') + 2).split(' ')[1]) === pm) cluster += cpuOf(d);
        } catch { /* gone */ }
    }
    const since = pm ? fs.statSync(path.join(process.env.UT_DATA, 'postmaster.pid')).mtimeMs : Date.now();
    const me = process.cpuUsage();
    return { cluster, idp: cpuOf(h.idp.child.pid), harness: (me.user + me.system) / 1e6, clusterWall: (Date.now() - since) / 1000, wall: (Date.now() - h.t0) / 1000 };
}

// Starts the provider, the extension and the first logins; returns the harness context.
async function setup(opts) {
    const runDir = opts.runDir;
    const certDir = path.join(runDir, 'certs');
    fs.mkdirSync(certDir, { recursive: true });
    const idp = await startIdp({ certDir });
    for (const d of [runDir, certDir]) fs.chmodSync(d, 0o755);  // the server reads ca.pem
    const sys = pool(4, { options: '-c default_transaction_read_only=off' });
    await sys.query(`ALTER SYSTEM SET upstream_token.ca_file = '${path.join(certDir, 'ca.pem')}'`);
    await sys.query('SELECT pg_catalog.pg_reload_conf()');
    await sys.query('CREATE EXTENSION IF NOT EXISTS upstream_token');
    const providers = [
        { provider: 'chaos_a', clientId: 'chaos-a', authMethod: 'client_secret_basic', idToken: true },
        { provider: 'chaos_b', clientId: 'chaos-b', authMethod: 'client_secret_post', idToken: false },
    ];
    const keys = new KeyRing();
    const keyPath = path.join(process.env.UT_CLUSTER_DIR, 'key');
    keys.add(fs.readFileSync(keyPath, 'utf8'));
    for (const p of providers) {
        p.secret = crypto.randomBytes(18).toString('base64url');
        await idp.client.admin('POST', '/admin/clients', { client_id: p.clientId, client_secret: p.secret, auth_method: p.authMethod, access_ttl: opts.accessTtl, id_token: p.idToken });
        await sys.query(
            `SELECT upstream_token.register_provider(name => $1, token_endpoint => $2, client_id => $3, client_secret => $4,
                    auth_method => $5, revocation_endpoint => $6, request_timeout => $7::interval)`,
            [p.provider, `${idp.url}/token`, p.clientId, p.secret, p.authMethod, `${idp.url}/revoke`, `${opts.requestTimeoutMs} ms`]);
    }
    const h = {
        t0: Date.now(), idp, sys, providers, keys,
        db: pool(opts.readers + 4),
        stormDb: pool(48),
        sim: pool(2, { options: "-c default_transaction_read_only=off -c lock_timeout=200ms" }),
        cluster: {
            dir: process.env.UT_CLUSTER_DIR,
            restart: () => new Promise((resolve, reject) => execFile('bash', [path.join(REPO, 'scripts', 'cluster.sh'), 'restart'],
                { env: process.env }, (err, _o, stderr) => (err ? reject(new Error(`cluster.sh restart: ${stderr || err.message}`)) : resolve()))),
        },
        keyState: { path: keyPath, n: 0, pendingPrevious: null },
        kills: [], outcomes: new Outcomes(), stormStats: [], faultIds: new Map(),
        settings: { accessTtl: opts.accessTtl, requestTimeoutMs: opts.requestTimeoutMs, maxRequests: opts.maxRequests },
        enabledKinds: opts.kinds,
    };
    h.secrets = providers.map((p) => p.secret);
    h.ledger = new Ledger({ idp, db: h.db, providers, keys });
    for (const s of h.secrets) h.ledger.seenSecrets.add(s);
    await waitEngine(h, 0, 60000);
    // First logins, their stored expiry spread so refreshes do not come in one wave.
    await h.ledger.addSessions(opts.sessions, { expiresIn: (i) => 3 + ((i * 7) % (opts.accessTtl - 2)) });
    return h;
}

// Prints the summary (and writes it to summary.txt); returns the number of failed checks.
function report(h, d, v, opts) {
    const lines = [];
    const out = (s = '') => lines.push(s);
    const pad = (s, n) => String(s).padEnd(n);
    out(`\n== chaos soak summary: seed ${opts.seed}, ${opts.seconds} s of faults, ${h.ledger.tokens.size} tokens in ${h.ledger.nextSession} sessions ==`);
    out('\nfaults                    n   ok  interrupted  failed');
    const byKind = {};
    for (const e of h.log.events) {
        const k = (byKind[e.kind] = byKind[e.kind] || { n: 0, ok: 0, interrupted: 0, failed: 0 });
        k.n++;
        k[e.ok || 'failed']++;
    }
    for (const [k, c] of Object.entries(byKind).sort()) out(`  ${pad(k, 22)} ${String(c.n).padStart(3)} ${String(c.ok).padStart(4)} ${String(c.interrupted).padStart(12)} ${String(c.failed).padStart(7)}`);
    out('\ncallers                   ok  errors by code');
    for (const [src, s] of Object.entries(h.outcomes.bySource)) out(`  ${pad(src, 22)} ${String(s.ok).padStart(6)}  ${JSON.stringify(s.codes)}`);
    const st = d.idpStats;
    out(`\nprovider: ${st.token_requests} token requests, ${st.token_success} rotations, ${st.reuse_detected} reuse detections, ` +
        `${st.revoked_grants} revoked grants (driver revocations and orphan revocations included), ${st.dropped} dropped, ${st.faults_applied} faults applied`);
    const e = d.engine || {};
    out(`engine (since its last server start): ${e.refreshed} refreshed, ${e.proactive_refreshes} proactive, ${e.failed_transient} transient failures, ` +
        `${e.failed_reauth} reauth, ${e.persist_retries} delayed saves, worker starts ${e.worker_starts}; ` +
        `${v.loopErrors.length} recovered errors logged${v.loopErrors.length ? ` (${[...new Set(v.loopErrors)].slice(0, 3).join(' | ')})` : ''}`);
    const c = d.cpu;
    out(`cpu: cluster ${c.cluster.toFixed(0)} s over its last ${c.clusterWall.toFixed(0)} s (${(c.cluster / c.clusterWall).toFixed(2)} cores), ` +
        `provider ${c.idp.toFixed(0)} s, harness ${c.harness.toFixed(0)} s over ${c.wall.toFixed(0)} s`);
    out(`storms: ${h.stormStats.length}, ${h.stormStats.reduce((s, x) => s + x.ok, 0)} of ${h.stormStats.reduce((s, x) => s + x.calls, 0)} callers served`);
    if (d.notes.length) out(`notes: ${d.notes.join(' | ')}`);
    if (v.kills.length) {
        out('\nSIGKILL of the engine     in flight at the kill (budget)                         lost');
        for (const k of v.kills) {
            out(`  #${pad(k.event, 4)} ${pad(`+${((k.K - h.t0) / 1000).toFixed(1)}s`, 8)}  ${k.uncommitted.length} answered not committed + ${k.underway} rotating at the provider = ${pad(k.set.size, 4)}` +
                ` (engine in_flight ${k.engineInFlight})   ${k.lost.length}`);
        }
    }
    const unattributed = v.lost.filter((x) => !x.kill);
    if (unattributed.length) {
        const tally = {};
        for (const x of unattributed) {
            const kind = x.cause.replace(/#\d+$/, '');
            const t = (tally[kind] = tally[kind] || { n: 0, events: new Set() });
            t.n++;
            if (/#\d+$/.test(x.cause)) t.events.add(x.cause);
        }
        out(`\nlost sessions not attributable to a SIGKILL: ${unattributed.length}, by likely cause:`);
        for (const [kind, t] of Object.entries(tally).sort((a, b) => b[1].n - a[1].n)) {
            out(`  ${pad(t.n, 4)} ${kind}${t.events.size ? ` (${[...t.events].join(', ')})` : ''}`);
        }
        out('examples (all in lost.json):');
        const seen = new Set();
        for (const x of unattributed) {
            if (seen.has(x.cause.replace(/#\d+$/, '')) || seen.size >= 8) continue;
            seen.add(x.cause.replace(/#\d+$/, ''));
            out(`  ${x.key} grant ${x.grantId}: ${x.why}`);
        }
    }
    if (v.unexpectedErrors.length) {
        out(`\nunexpected caller errors: ${v.unexpectedErrors.length}; first: ` +
            v.unexpectedErrors.slice(0, 3).map((x) => `${x.source} ${x.code} at ${x.at} (around: ${x.around})`).join('; '));
    }
    out('\nchecks');
    let failed = 0;
    for (const [name, ok, detail] of v.checks) {
        if (!ok) failed++;
        out(`  ${ok ? 'PASS' : 'FAIL'}  ${name}\n        ${detail}`);
    }
    out(`\nevents: ${path.join(opts.runDir, 'events.jsonl')}; server log: ${process.env.UT_SERVER_LOG}`);
    out(`replay: CHAOS_SEED=${opts.seed} test/chaos/run.sh ${opts.seconds}`);
    out(`${v.checks.length - failed} passed, ${failed} failed`);
    process.stdout.write(lines.join('\n') + '\n');
    fs.writeFileSync(path.join(opts.runDir, 'summary.txt'), lines.join('\n') + '\n');
    fs.writeFileSync(path.join(opts.runDir, 'calls.json'), JSON.stringify(d.calls));
    fs.writeFileSync(path.join(opts.runDir, 'lost.json'), JSON.stringify({ lost: v.lost, kills: v.kills.map((k) => ({ ...k, set: [...k.set] })), callerErrorsOutsideFaults: v.outside.slice(0, 200), unexpectedCallerErrors: v.unexpectedErrors.slice(0, 200) }, null, 1));
    return failed;
}

async function main() {
    const seconds = Number(process.argv[2] || 240);
    const seed = process.env.CHAOS_SEED ? Number(process.env.CHAOS_SEED) >>> 0 : crypto.randomInt(2 ** 31);
    const want = env('CHAOS_FAULTS', 'all');
    const kinds = want === 'all' ? Object.keys(FAULTS) : want === 'none' ? [] : want.split(',').map((s) => s.trim());
    for (const k of kinds) if (!FAULTS[k]) throw new Error(`unknown fault kind ${k} (known: ${Object.keys(FAULTS).join(', ')})`);
    const opts = {
        seconds, seed, kinds, runDir: env('CHAOS_RUN_DIR', path.join(REPO, '.tmp', 'chaos', `run-${seed}`)),
        sessions: Number(env('CHAOS_SESSIONS', 240)), accessTtl: Number(env('CHAOS_ACCESS_TTL', 20)),
        readers: Number(env('CHAOS_READERS', 4)), readRate: Number(env('CHAOS_READ_RATE', 300)),
        requestTimeoutMs: 5000, maxRequests: Number(env('CHAOS_MAX_REQUESTS', 1024)),
    };
    console.log(`chaos soak: seed ${seed} (replay with CHAOS_SEED=${seed}), ${seconds} s of faults, ${opts.sessions} sessions, ` +
        `access tokens of ${opts.accessTtl} s, ${opts.readers} readers at ${opts.readRate}/s, faults: ${kinds.length ? kinds.join(',') : 'none'}`);
    const deadline = setTimeout(() => { console.log('chaos soak: harness deadline exceeded'); process.exit(3); }, (seconds + 600) * 1000);
    const h = await setup(opts);
    h.log = new EventLog(path.join(opts.runDir, 'events.jsonl'), h.t0);
    const rng = new Rng(seed);
    const driverRng = rng.fork();
    const workRng = rng.fork();
    console.log(`setup done: ${h.ledger.tokens.size} tokens stored; 10 s of traffic without faults, then ${seconds} s of faults`);
    const stop = { flag: false };
    const readers = startReaders(h, { readers: opts.readers, rate: opts.readRate }, workRng.fork(), stop);
    const storms = runStorms(h, workRng.fork(), stop);
    await sleep(10000);
    await drive(h, driverRng, Date.now() + seconds * 1000);
    stop.flag = true;
    await Promise.all([readers, storms]);
    console.log('faults over: back to normal, then the audit (stored tokens, forced refresh of every session, a full storm)');
    const d = await collect(h);
    d.cpu = cpuUse(h);
    const v = judge(h, d);
    const failed = report(h, d, v, opts);
    clearTimeout(deadline);
    for (const p of [h.db, h.stormDb, h.sim, h.sys]) await p.end().catch(() => {});
    h.idp.client.close?.();
    await h.idp.stop();
    process.exit(failed === 0 ? 0 : 1);
}

main().catch((e) => {
    console.error(`chaos soak: ${e.stack || e.message}`);
    process.exit(2);
});
