'use strict';
// B7, real provider latency (issue 12): the test IdP answers every token call of the scenario's
// client after 100 ms. N tokens become due at the same moment, and the engine keeps up to
// `upstream_token.max_concurrent_refreshes` exchanges in flight on its one thread. The
// scenario runs once for each limit in LIMITS. Each run's wall time is compared with the
// ideal N × 100 ms / limit. It also reports the engine's CPU and peak RSS and what the
// provider saw: calls, most requests in flight at once, connections opened, mean concurrency.
//
// Called from bench.js as b7(db, idpc, ctx), where ctx = {target, results, log, quick}.
// UT_BENCH_B7_PERF=PREFIX runs `perf record -g` on the engine into PREFIX.<limit> during the
// runs of the limits in UT_BENCH_B7_PERF_LIMIT (a comma-separated list; default: the largest).

const fs = require('node:fs');
const { spawn } = require('node:child_process');
const lib = require('./lib.js');

// UT_BENCH_B7_LIMITS=64,128 tries other limits (the published runs use these three).
const LIMITS = (process.env.UT_BENCH_B7_LIMITS || '32,256,1000').split(',').map(Number);
const DELAY_MS = 100;
const GOAL = 1.2;
const GUC = 'upstream_token.max_concurrent_refreshes';

// A number fixed to `digits` decimals, for the report.
function fmt(x, digits = 2) { return Number.isFinite(x) ? x.toFixed(digits) : String(x); }

// Clock ticks per second of /proc/<pid>/stat (getconf CLK_TCK; 100 on Linux).
let clkTck = 100;

// User and system CPU time of a process in ms (/proc/<pid>/stat fields 14 and 15, in ticks).
function userSysMs(pid) {
    const text = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = text.slice(text.lastIndexOf(')') + 2).split(' ');  // f[0] is field 3, "state"
    return { user: (Number(f[11]) * 1000) / clkTck, sys: (Number(f[12]) * 1000) / clkTck };
}

// Peak resident size since the last reset (VmHWM, kB).
function hwm(pid) {
    const m = /^VmHWM:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : NaN;
}

// The soft limit on open files of a process: every exchange in flight holds a socket.
function openFilesLimit(pid) {
    const m = /^Max open files\s+(\d+|unlimited)/m.exec(fs.readFileSync(`/proc/${pid}/limits`, 'utf8'));
    return m ? m[1] : null;
}

// Resets VmHWM to the current RSS, so the peak is this run's (needs the owner or root).
function resetHwm(pid) {
    try {
        fs.writeFileSync(`/proc/${pid}/clear_refs`, '5');
        return true;
    } catch {
        return false;
    }
}

// Waits until the engine has nothing queued or in flight.
async function engineIdle(db) {
    await lib.waitFor(async () => {
        const e = await lib.engine(db);
        return e.in_flight === 0 && e.queued === 0;
    }, { what: 'the engine to be idle', timeoutMs: 60000, intervalMs: 50 });
}

// Sets the limit, waits until a new session sees it, then gives the engine time to reload.
// The engine reloads its configuration on SIGHUP between passes, and it is idle here. The
// most requests in flight at the IdP, reported for each run, shows which limit was applied.
async function setLimit(db, limit) {
    await lib.setGucs(db, { [GUC]: limit });
    await lib.sleep(1000);
}

// The last errors of a provider's rows that are failing now (last_error holds no secret).
async function rowErrors(db, provider) {
    const r = await db.query(
        `SELECT coalesce(last_error, '') AS error, count(*) AS n, max(failure_count) AS max_failures
           FROM upstream_token.token WHERE provider = $1 AND (failure_count > 0 OR last_error IS NOT NULL)
          GROUP BY 1 ORDER BY 2 DESC LIMIT 5`, [provider]);
    return r.rows.map((x) => ({ error: x.error, n: Number(x.n), max_failures: x.max_failures }));
}

// TCP counters of this network namespace (/proc/net/netstat TcpExt, /proc/net/snmp Tcp):
// listen-queue overflows and drops at the IdP's socket, connections opened, retransmissions.
function tcpCounters() {
    const out = {};
    const read = (file, prefix, names) => {
        const lines = fs.readFileSync(file, 'utf8').split('\n').filter((l) => l.startsWith(`${prefix}:`));
        for (let i = 0; i + 1 < lines.length; i += 2) {
            const keys = lines[i].split(/\s+/).slice(1);
            const vals = lines[i + 1].split(/\s+/).slice(1);
            keys.forEach((k, j) => { if (names.includes(k)) out[k] = Number(vals[j]); });
        }
    };
    try {
        read('/proc/net/netstat', 'TcpExt', ['ListenOverflows', 'ListenDrops', 'TCPTimeouts', 'TW']);
        read('/proc/net/snmp', 'Tcp', ['ActiveOpens', 'AttemptFails', 'RetransSegs']);
    } catch { /* not Linux: left out */ }
    return out;
}

// Starts `perf record -g` on a process; stop() ends it with SIGINT and waits for the file.
function perfRecord(pid, file) {
    const graph = process.env.UT_BENCH_B7_PERF_CALLGRAPH;  // e.g. dwarf (libcurl, libcrypto: no frame pointers)
    const args = ['record', ...(graph ? ['--call-graph', graph] : ['-g']), '-p', String(pid), '-o', file];
    const child = spawn('perf', args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => { stderr += d; });
    const exited = new Promise((resolve) => child.on('close', resolve));
    return {
        async stop() {
            child.kill('SIGINT');
            const code = await exited;
            return { code, stderr: stderr.slice(-300) };
        },
    };
}

// One run: `n` logins stored already expired in one statement, so all of them are due when
// it commits. The time runs from the commit until the engine has refreshed all of them.
async function run(db, idpc, limit, n, { log, idpPid }) {
    const name = `lat${limit}`;
    await setLimit(db, limit);
    const p = await lib.provider(db, idpc, name);  // max_concurrent unset
    const fault = await idpc.admin('POST', '/admin/faults', {
        match: { client_id: p.clientId }, action: { delay_ms: DELAY_MS },
    });
    const grants = await lib.mint(idpc, p.clientId, n);
    const sessions = grants.map((_, i) => `${name}-${i}`);
    await engineIdle(db);
    // max_in_flight is a high-water mark: start it from this run (earlier scenarios used deltas).
    await idpc.admin('POST', '/admin/stats/reset', {});
    const s0 = await idpc.admin('GET', '/admin/stats');
    const e0 = await lib.engine(db);
    const pid = e0.worker_pid;
    const hwmReset = resetHwm(pid);
    const mem0 = lib.memory(pid);
    const perfFile = process.env.UT_BENCH_B7_PERF ? `${process.env.UT_BENCH_B7_PERF}.${limit}` : null;
    const perfLimits = (process.env.UT_BENCH_B7_PERF_LIMIT || String(LIMITS[LIMITS.length - 1])).split(',').map(Number);
    const perf = perfFile && perfLimits.includes(limit) ? perfRecord(pid, perfFile) : null;
    if (perf) await lib.sleep(500);  // perf attached before the work starts
    const cpu0 = { sched: lib.cpuMs(pid), ...userSysMs(pid), idp: lib.cpuMs(idpPid) };
    const tcp0 = tcpCounters();
    const since = Date.now();

    await lib.storeMany(db, p.provider, sessions, grants, 0);
    const t0 = process.hrtime.bigint();
    const t0Epoch = Date.now();

    let peak = { ...mem0 };
    let maxInFlight = 0;
    let inFlightSum = 0;
    let samples = 0;
    const idealMs = (n * DELAY_MS) / limit;
    // Done when all n rows are refreshed. A refresh that failed is retried after its backoff,
    // and that time counts. A run that never finishes stops at the deadline and fails.
    const deadline = Date.now() + Math.max(60000, 20 * idealMs);
    let allRefreshed = false;
    let failedSeen = 0;
    const failureErrors = [];
    for (;;) {
        const e = await lib.engine(db);
        const m = lib.memory(pid);
        if (m.VmRSS > peak.VmRSS) peak = m;
        maxInFlight = Math.max(maxInFlight, e.in_flight);
        inFlightSum += e.in_flight;
        samples += 1;
        const failed = lib.engineDelta(e0, e).failed;
        if (failed > failedSeen && failureErrors.length < 3) {
            // A refresh failed: its row's last_error says why until a retry succeeds.
            failedSeen = failed;
            failureErrors.push(...(await rowErrors(db, p.provider)));
        }
        if (e.refreshed - e0.refreshed >= n) { allRefreshed = true; break; }
        if (Date.now() > deadline) break;
        await lib.sleep(10);
    }
    const wallMs = lib.msSince(t0);
    const doneEpoch = Date.now();
    const cpu1 = { sched: lib.cpuMs(pid), ...userSysMs(pid), idp: lib.cpuMs(idpPid) };
    const peakHwm = hwm(pid);
    const tcp1 = tcpCounters();
    const perfOut = perf ? await perf.stop() : null;

    const e1 = await lib.engine(db);
    const s1 = await idpc.admin('GET', '/admin/stats');
    const d = lib.engineDelta(e0, e1);
    const idpD = lib.idpDelta(s0, s1);
    const moved = (await db.query(
        'SELECT count(*) FILTER (WHERE generation > 1) AS n FROM upstream_token.token_status WHERE provider = $1',
        [p.provider])).rows[0].n;
    // Each error once, with the most rows seen failing with it at one time.
    const byError = new Map();
    for (const x of [...failureErrors, ...(await rowErrors(db, p.provider))]) {
        const had = byError.get(x.error);
        if (!had || x.n > had.n) byError.set(x.error, x);
    }
    const errors = [...byError.values()];

    // What the provider saw: arrivals, answers, connections, concurrency.
    const calls = (await lib.calls(idpc, p.clientId, since)).filter((c) => c.status !== null);
    const firstCall = calls.length ? Math.min(...calls.map((c) => c.t_ms)) : NaN;
    const lastAnswer = calls.length ? Math.max(...calls.map((c) => c.t_ms + (c.duration_ms || 0))) : NaN;
    const busyMs = calls.reduce((a, c) => a + (c.duration_ms || 0), 0);
    const conns = new Set(calls.map((c) => c.conn));
    const newConns = new Set(calls.filter((c) => c.conn_ms !== null && c.conn_ms >= since).map((c) => c.conn));
    const perSecond = [];
    for (const c of calls) {
        const s = Math.max(0, Math.floor((c.t_ms + (c.duration_ms || 0) - t0Epoch) / 1000));
        perSecond[s] = (perSecond[s] || 0) + 1;
    }
    // The refresh timeline for the chart: provider answers, ms after the commit.
    const timeline = calls.map((c) => c.t_ms + (c.duration_ms || 0) - t0Epoch);

    await idpc.admin('DELETE', `/admin/faults/${fault.fault_id}`);
    await engineIdle(db);
    await db.query('SELECT upstream_token.drop_provider($1, cascade => true)', [p.provider]);

    const engineMs = cpu1.sched - cpu0.sched;
    const out = {
        limit, tokens: n, delay_ms: DELAY_MS,
        all_refreshed: allRefreshed, wall_ms: wallMs, ideal_ms: idealMs, ratio: wallMs / idealMs,
        rate_per_s: n / (wallMs / 1000), ideal_rate_per_s: (limit * 1000) / DELAY_MS,
        first_call_ms: firstCall - t0Epoch, last_answer_ms: lastAnswer - t0Epoch, done_epoch_lag_ms: doneEpoch - lastAnswer,
        engine: d, rows_refreshed: Number(moved), row_errors: errors,
        engine_in_flight_max_sampled: maxInFlight, engine_in_flight_mean_sampled: inFlightSum / Math.max(1, samples),
        tcp: Object.fromEntries(Object.keys(tcp1).map((k) => [k, tcp1[k] - (tcp0[k] || 0)])),
        idp: { ...idpD, calls_logged: calls.length },
        provider_duration_ms: lib.summary(calls.map((c) => c.duration_ms || 0)),
        // Σ(time each call spent at the provider) / (first arrival .. last answer): the mean
        // number of exchanges the provider had in flight; `limit` when the engine keeps up.
        mean_in_flight_at_provider: busyMs / (lastAnswer - firstCall),
        connections_used: conns.size, connections_opened: newConns.size,
        cpu: {
            engine_ms: engineMs, engine_user_ms: cpu1.user - cpu0.user, engine_sys_ms: cpu1.sys - cpu0.sys,
            engine_us_per_refresh: (engineMs * 1000) / n, engine_share_of_wall: engineMs / wallMs,
            idp_ms: cpu1.idp - cpu0.idp, idp_us_per_refresh: ((cpu1.idp - cpu0.idp) * 1000) / n,
        },
        rss_kb: {
            before: mem0.VmRSS, peak_sampled: peak.VmRSS, peak_rss_anon: peak.RssAnon, peak_rss_shmem: peak.RssShmem,
            vm_hwm: peakHwm, vm_hwm_is_this_run: hwmReset,
        },
        engine_open_files_limit: openFilesLimit(pid),
        answers_per_second: Array.from(perSecond, (x) => x || 0),
    };
    if (perfOut) out.perf = { file: perfFile, ...perfOut };
    log(`   limit ${limit}: ${n} refreshes in ${fmt(wallMs, 0)} ms (ideal ${fmt(idealMs, 0)} ms, ×${fmt(out.ratio)}); ` +
        `provider max in flight ${idpD.max_in_flight}, mean ${fmt(out.mean_in_flight_at_provider, 1)}, ` +
        `${newConns.size} connections opened; engine CPU ${fmt(engineMs, 0)} ms (${fmt(out.cpu.engine_us_per_refresh, 0)} µs/refresh), ` +
        `peak RSS ${peakHwm} kB`);
    return { out, timeline };
}

// B7: one run per limit; targets, details in ctx.results.details.B7, timelines for the chart.
async function b7(db, idpc, { target, results, log, quick, idpPid }) {
    const n = quick ? 2000 : 10000;
    log(`== B7 real provider latency: ${n} tokens due together, the provider answering after ${DELAY_MS} ms, ` +
        `max_concurrent_refreshes ${LIMITS.join(', ')}`);
    const tck = await lib.run('getconf', ['CLK_TCK']);
    if (tck.code === 0 && Number(tck.stdout) > 0) clkTck = Number(tck.stdout);
    const before = (await db.query('SELECT setting, source FROM pg_settings WHERE name = $1', [GUC])).rows[0];
    const runs = [];
    const timelines = {};
    try {
        for (const limit of LIMITS) {
            const { out, timeline } = await run(db, idpc, limit, n, { log, idpPid });
            runs.push(out);
            timelines[limit] = timeline;
        }
    } finally {
        // Back to what it was: the default (RESET) or the configured value.
        if (before.source === 'default') {
            await db.query(`ALTER SYSTEM RESET ${GUC}`);
            await db.query('SELECT pg_reload_conf()');
            await lib.waitFor(async () => {
                const c = await lib.connect();
                try {
                    return (await c.query('SELECT setting FROM pg_settings WHERE name = $1', [GUC])).rows[0].setting === before.setting;
                } finally { await c.end(); }
            }, { what: `${GUC} back to ${before.setting}`, intervalMs: 50 });
        } else {
            await lib.setGucs(db, { [GUC]: before.setting });
        }
    }
    results.details.B7 = { tokens: n, delay_ms: DELAY_MS, goal_ratio: GOAL, runs };
    for (const r of runs) {
        target('B7', `${n} tokens due together, provider answering after ${DELAY_MS} ms, limit ${r.limit}: wall time / ideal (${n} × ${DELAY_MS} ms / ${r.limit})`, {
            ours: `${fmt(r.wall_ms, 0)} ms`, baseline: `${fmt(r.ideal_ms, 0)} ms`, ratio: fmt(r.ratio),
            goal: `≤ ${fmt(GOAL)}`, ok: r.all_refreshed && r.ratio <= GOAL,
        });
    }
    for (const r of runs) {
        target('B7', `limit ${r.limit}: engine CPU, peak RSS; provider's most in flight, mean in flight, connections opened (reported)`, {
            ours: `${fmt(r.cpu.engine_ms, 0)} ms CPU (${fmt(r.cpu.engine_us_per_refresh, 0)} µs/refresh), ` +
                `VmHWM ${r.rss_kb.vm_hwm} kB; ${r.idp.max_in_flight} / ${fmt(r.mean_in_flight_at_provider, 1)} in flight, ` +
                `${r.connections_opened} connections`,
            goal: 'report only', ok: true,
        });
    }
    // In flight: the engine's own count (engine_status, sampled every 10 ms) must stay within the
    // limit. The IdP's high-water mark is reported beside it. It counts a call until the
    // response's 'close' event, so it can run a few above the engine's count.
    const bad = runs.filter((r) => !r.all_refreshed || r.idp.token_success !== n || r.engine.failed !== 0 ||
        r.rows_refreshed !== n || r.engine_in_flight_max_sampled > r.limit);
    target('B7', 'every token refreshed, no failed refresh, never more in flight than the limit', {
        ours: runs.map((r) => `limit ${r.limit}: ${r.idp.token_success} refreshed at the IdP (${r.idp.token_requests} requests), ` +
            `${r.rows_refreshed} rows, ${r.engine.failed} failed, in flight ≤ ${r.engine_in_flight_max_sampled} (IdP ${r.idp.max_in_flight})`).join('; '),
        goal: `${n} / ${n} / 0 / ≤ limit`, ok: bad.length === 0,
    });
    return timelines;
}

// The B7 section of RESULTS.md (markdown), from results.details.B7.
function b7Report(details) {
    if (!details) return '';
    const rows = ['| limit | wall | ideal | ratio | refreshes/s | provider in flight (max / mean) | connections opened | engine CPU (user + sys) | CPU per refresh | peak RSS (VmHWM) |',
        '|---|---|---|---|---|---|---|---|---|---|'];
    for (const r of details.runs) {
        rows.push(`| ${r.limit} | ${fmt(r.wall_ms, 0)} ms | ${fmt(r.ideal_ms, 0)} ms | ${fmt(r.ratio)} | ${fmt(r.rate_per_s, 0)} | ` +
            `${r.idp.max_in_flight} / ${fmt(r.mean_in_flight_at_provider, 1)} | ${r.connections_opened} | ` +
            `${fmt(r.cpu.engine_ms, 0)} ms (${fmt(r.cpu.engine_user_ms, 0)} + ${fmt(r.cpu.engine_sys_ms, 0)}) | ` +
            `${fmt(r.cpu.engine_us_per_refresh, 0)} µs | ${r.rss_kb.vm_hwm} kB |`);
    }
    return `## B7: real provider latency

${details.tokens} tokens due together, the provider answering every call after ${details.delay_ms} ms; ideal =
${details.tokens} × ${details.delay_ms} ms / limit; target ratio ≤ ${fmt(details.goal_ratio)}.

${rows.join('\n')}
`;
}

module.exports = { b7, b7Report, LIMITS };
