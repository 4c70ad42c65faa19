'use strict';
// A plain HTTP load generator for the test IdP's token endpoint: the provider's own capacity,
// the baseline the refresh scenarios are compared with. It mints fresh grants through the
// admin API, then redeems each refresh token once from `concurrency` loops over keep-alive
// TLS connections (client_secret_basic), and reports the wall time and latencies.
//
//   node bench/loadgen.js --url https://127.0.0.1:PORT --ca ca.pem --count 10000 --concurrency 32 \
//        [--client-id ID --secret S] [--times FILE] [--cpu-pid PID]
// Prints one JSON line: {count, concurrency, ok, failed, wall_ms, rate, p50_ms, p95_ms, p99_ms,
// cpu_ms: {loadgen, pid?}}; --times writes each completion time (ms from the start), --cpu-pid
// adds the CPU time another process (the IdP) used during the timed part.

const fs = require('node:fs');
const https = require('node:https');
const crypto = require('node:crypto');
const path = require('node:path');
const { IdpClient, basicAuth } = require(path.join(__dirname, '..', 'test', 'idp', 'client.js'));

// The q-quantile of an ascending array (nearest rank).
function quantile(sorted, q) {
    if (sorted.length === 0) return NaN;
    return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

// One POST /token with a refresh token; resolves {status, ms, body}.
function redeem(agent, url, auth, refreshToken) {
    const body = `grant_type=refresh_token&refresh_token=${encodeURIComponent(refreshToken)}`;
    const started = process.hrtime.bigint();
    return new Promise((resolve, reject) => {
        const req = https.request(`${url}/token`, {
            method: 'POST',
            agent,
            headers: {
                'Content-Type': 'application/x-www-form-urlencoded',
                'Content-Length': Buffer.byteLength(body),
                Authorization: auth,
            },
        }, (res) => {
            const chunks = [];
            res.on('data', (c) => chunks.push(c));
            res.on('error', reject);
            res.on('end', () => resolve({
                status: res.statusCode,
                ms: Number(process.hrtime.bigint() - started) / 1e6,
                body: Buffer.concat(chunks).toString('utf8'),
            }));
        });
        req.on('error', reject);
        req.end(body);
    });
}

// CPU time a process has run, in ms (/proc/<pid>/schedstat, nanoseconds).
function cpuMs(pid) {
    return Number(fs.readFileSync(`/proc/${pid}/schedstat`, 'utf8').split(' ')[0]) / 1e6;
}

// A keep-alive agent and the Basic header for one client: what a well-written app would use.
function connection(url, caPem, clientId, secret, concurrency) {
    return {
        url,
        agent: new https.Agent({ keepAlive: true, maxSockets: concurrency, ca: fs.readFileSync(caPem) }),
        auth: basicAuth(clientId, secret),
    };
}

// Registers a client like the extension's providers use (ID tokens on) and mints `count` grants.
async function prepare(admin, clientId, secret, count) {
    await admin.admin('POST', '/admin/clients', {
        client_id: clientId, client_secret: secret, access_ttl: 3600, id_token: true,
    });
    const grants = [];
    for (let left = count; left > 0; left -= 10000) {
        const res = await admin.admin('POST', '/admin/grants', {
            client_id: clientId, subject: 'load', count: Math.min(left, 10000),
        });
        grants.push(...res.grants);
    }
    return grants.map((g) => g.refresh_token);
}

// Redeems `n` refresh tokens from `concurrency` loops; resolves when all are answered.
async function redeemAll(conn, tokens, concurrency, onDone) {
    let next = 0;
    const loop = async () => {
        while (next < tokens.length) {
            const r = await redeem(conn.agent, conn.url, conn.auth, tokens[next++]);
            if (onDone) onDone(r);
        }
    };
    await Promise.all(Array.from({ length: concurrency }, loop));
}

// Redeems every refresh token once from `concurrency` loops and returns the measurement.
// Untimed first: the connections (the engine's libcurl connections are warm too) and a
// warm-up of up to 2000 requests, so the JIT of this client and of the IdP is not measured.
async function run({ url, caPem, count = 10000, concurrency = 32, clientId, secret, timesFile, cpuPid }) {
    const admin = new IdpClient(url, caPem);
    clientId = clientId || `loadgen-${crypto.randomBytes(4).toString('hex')}`;
    secret = secret || crypto.randomBytes(16).toString('hex');
    const warmCount = Math.max(concurrency, Math.min(2000, Math.floor(count / 5)));
    const tokens = await prepare(admin, clientId, secret, count + warmCount);
    admin.close();
    const conn = connection(url, caPem, clientId, secret, concurrency);
    const warm = tokens.splice(0, warmCount);
    await Promise.all(warm.slice(0, concurrency).map((t) => redeem(conn.agent, conn.url, conn.auth, t)));
    await redeemAll(conn, warm.slice(concurrency), concurrency);

    const latencies = [];
    const done = [];
    let ok = 0;
    let failed = 0;
    const cpu0 = process.cpuUsage();
    const other0 = cpuPid ? cpuMs(cpuPid) : 0;
    const t0 = process.hrtime.bigint();
    await redeemAll(conn, tokens, concurrency, (r) => {
        if (r.status === 200) ok += 1; else failed += 1;
        latencies.push(r.ms);
        done.push(Number(process.hrtime.bigint() - t0) / 1e6);
    });
    const wallMs = Number(process.hrtime.bigint() - t0) / 1e6;
    const used = process.cpuUsage(cpu0);
    const cpu = { loadgen: (used.user + used.system) / 1000 };
    if (cpuPid) cpu.pid = cpuMs(cpuPid) - other0;
    conn.agent.destroy();
    if (timesFile) fs.writeFileSync(timesFile, done.map((t) => t.toFixed(3)).join('\n') + '\n');
    latencies.sort((a, b) => a - b);
    return {
        count: tokens.length, concurrency, ok, failed, wall_ms: wallMs,
        rate: tokens.length / (wallMs / 1000),
        p50_ms: quantile(latencies, 0.5), p95_ms: quantile(latencies, 0.95), p99_ms: quantile(latencies, 0.99),
        cpu_ms: cpu,
    };
}

// Parses --name value pairs.
function parseArgs(argv) {
    const out = {};
    for (let i = 0; i < argv.length; i += 2) {
        if (!argv[i].startsWith('--') || argv[i + 1] === undefined) throw new Error(`bad argument ${argv[i]}`);
        out[argv[i].slice(2)] = argv[i + 1];
    }
    return out;
}

if (require.main === module) {
    const a = parseArgs(process.argv.slice(2));
    if (!a.url || !a.ca) {
        console.error('usage: loadgen.js --url URL --ca CA.pem [--count N] [--concurrency C] [--client-id ID --secret S] [--times FILE] [--cpu-pid PID]');
        process.exit(2);
    }
    run({
        url: a.url, caPem: a.ca, count: Number(a.count || 10000), concurrency: Number(a.concurrency || 32),
        clientId: a['client-id'], secret: a.secret, timesFile: a.times, cpuPid: a['cpu-pid'] ? Number(a['cpu-pid']) : undefined,
    }).then((r) => console.log(JSON.stringify(r)), (e) => {
        console.error(e.stack || String(e));
        process.exit(1);
    });
}

module.exports = { run, redeem, connection, quantile };
