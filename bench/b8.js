'use strict';
// B8, a million tokens (issue 12): what grows in production. The hot path (B1) with 10 000
// stored sessions and again with a million, each against a plain table of the same size; the
// bytes each token takes (table, TOAST, indexes); then every token refreshed five times by the
// engine at full speed, reporting per pass the wall time, the WAL written per refresh (and its
// full-page images), the share of HOT updates, the table's size (autovacuum keeps it flat) and
// the engine's memory. Started by `bench/run.sh b8`; writes bench/RESULTS-B8.md.
//
// UT_BENCH_B8_TOKENS=100000 tries a smaller table; UT_BENCH_B8_SQL runs statements (as the
// superuser, split at ';') before the refresh passes, for trying other table layouts.

const fs = require('node:fs');
const path = require('node:path');
const lib = require('./lib.js');

const N = Number(process.env.UT_BENCH_B8_TOKENS || 1000000);
const SMALL = 10000;
const PASSES = 5;
// Refreshed tokens live LIFETIME_S: due again long before a pass of N ends, so the engine
// never idles and every token is refreshed once per pass, oldest first.
const LIFETIME_S = 30;
const THRESHOLD_S = 25;
const STORE_CHUNK = 25000;
const PROVIDER = 'big';
const REPORT = path.join(lib.REPO, 'bench', 'RESULTS-B8.md');

const checks = [];
const log = (msg) => console.log(msg);
const fmt = (x, digits = 2) => (Number.isFinite(x) ? x.toFixed(digits) : String(x));

// Records one target, as bench.js does.
function target(what, { ours, baseline = '', ratio = '', goal, ok }) {
    checks.push({ what, ours: String(ours), baseline: String(baseline), ratio: String(ratio), goal, ok: !!ok });
    log(`   ${ok ? 'PASS' : 'FAIL'} B8 ${what}: ${ours}${baseline !== '' ? ` vs ${baseline}` : ''}` +
        `${ratio !== '' ? ` (ratio ${ratio})` : ''}; target ${goal}`);
}

// Bytes of the token table: heap, TOAST (with its index), indexes; and the row count.
async function sizes(db) {
    const r = (await db.query(
        `SELECT pg_relation_size(c.oid) AS heap,
                coalesce(pg_total_relation_size(NULLIF(c.reltoastrelid, 0)), 0) AS toast,
                pg_indexes_size(c.oid) AS indexes,
                (SELECT count(*) FROM upstream_token.token) AS n
           FROM pg_class c WHERE c.oid = 'upstream_token.token'::regclass`)).rows[0];
    const out = { heap: Number(r.heap), toast: Number(r.toast), indexes: Number(r.indexes), rows: Number(r.n) };
    out.total = out.heap + out.toast + out.indexes;
    return out;
}

// Cluster-wide WAL counters and the token table's update counters (flushed by the engine
// at each commit) and checkpoints.
async function counters(db) {
    const w = (await db.query(
        `SELECT pg_current_wal_lsn()::text AS at, pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0') AS lsn, wal_records, wal_fpi, wal_bytes
           FROM pg_stat_wal`)).rows[0];
    const t = (await db.query(
        `SELECT n_tup_upd, n_tup_hot_upd, n_dead_tup, autovacuum_count
           FROM pg_stat_user_tables WHERE relid = 'upstream_token.token'::regclass`)).rows[0];
    const c = (await db.query('SELECT checkpoints_timed + checkpoints_req AS n FROM pg_stat_bgwriter')).rows[0];
    return {
        lsn_text: w.at, lsn: Number(w.lsn), wal_records: Number(w.wal_records), wal_fpi: Number(w.wal_fpi), wal_bytes: Number(w.wal_bytes),
        upd: Number(t.n_tup_upd), hot: Number(t.n_tup_hot_upd), dead: Number(t.n_dead_tup),
        autovacuums: Number(t.autovacuum_count), checkpoints: Number(c.n),
    };
}

// Stores sessions [from, to) with the grants given, `expiresIn` s left, in chunks on two
// connections (one transaction per chunk).
async function store(db, grants, from, to, expiresIn) {
    const chunks = [];
    for (let i = from; i < to; i += STORE_CHUNK) chunks.push([i, Math.min(to, i + STORE_CHUNK)]);
    let next = 0;
    await lib.concurrently(2, async () => {
        while (next < chunks.length) {
            const [a, b] = chunks[next++];
            const sessions = Array.from({ length: b - a }, (_, k) => `s${a + k + 1}`);
            await lib.storeMany(db, PROVIDER, sessions, grants.slice(a, b), expiresIn);
        }
    });
}

// The hot path against a plain table holding as many rows, each as wide as a token row (an
// application keeping its tokens unencrypted): both tables outgrow shared_buffers together, so
// the ratio compares the read paths, not the sizes.
async function hotPath(db, n, { seconds, rounds }) {
    const width = Number((await db.query(
        `SELECT avg(pg_column_size(t.*)) AS w FROM (SELECT * FROM upstream_token.token LIMIT 10000) t`)).rows[0].w);
    await db.query('DROP TABLE IF EXISTS plain');
    await db.query('CREATE TABLE plain (k text PRIMARY KEY, v text NOT NULL, pad text NOT NULL)');
    await db.query(
        `INSERT INTO plain SELECT 's' || i, md5('a' || i) || md5('b' || i), repeat(md5('p' || i), $2::int / 32)
           FROM generate_series(1, $1) i`, [n, Math.max(0, Math.round(width - 100))]);
    await db.query('VACUUM ANALYZE plain');
    await db.query('VACUUM ANALYZE upstream_token.token');
    const work = lib.env('UT_BENCH_WORK');
    const scripts = { ours: path.join(work, `b8-ours-${n}.sql`), plain: path.join(work, `b8-plain-${n}.sql`) };
    fs.writeFileSync(scripts.ours, `\\set s random(1, ${n})\nSELECT upstream_token.get_upstream_token('s' || :s, '${PROVIDER}');\n`);
    fs.writeFileSync(scripts.plain, `\\set s random(1, ${n})\nSELECT v FROM plain WHERE k = 's' || :s;\n`);
    const before = await lib.engine(db);
    const m = await lib.abba(scripts, `b8-${n}`, { seconds, rounds, log });
    const d = lib.engineDelta(before, await lib.engine(db));
    return { sessions: n, ratio: m.ratio, rounds: m.roundRatios, tps: m.tps, requests: d.requests };
}

// One sample at the end of a pass.
async function sample(db, pid, t0) {
    const mem = lib.memory(pid);
    return { at_ms: lib.msSince(t0), engine: await lib.engine(db), c: await counters(db), size: await sizes(db),
        rss_kb: mem.VmRSS, rss_anon_kb: mem.RssAnon, cpu_ms: lib.cpuMs(pid) };
}

// The refresh passes: all N stored already expired (the IdP answers with LIFETIME_S tokens);
// a pass ends when the engine has refreshed N more. Once every token has had PASSES - 1
// refreshes the IdP hands out day-long tokens, so the table ends fresh for the hot path.
// `into` receives each pass's sample as it is taken (a run stopped by its deadline still
// reports the passes it made).
async function passes(db, idpc, grants, deadlineMs, into) {
    const client = (ttl) => idpc.admin('POST', '/admin/clients', {
        client_id: PROVIDER, client_secret: 'bench-big-secret', access_ttl: ttl, id_token: true, forget_used: true,
    });
    await client(LIFETIME_S);
    for (const stmt of (process.env.UT_BENCH_B8_SQL || '').split(';')) if (stmt.trim()) await db.query(stmt);
    await db.query('VACUUM ANALYZE upstream_token.token');
    await db.query('CHECKPOINT');
    const e0 = await lib.engine(db);
    const pid = e0.worker_pid;
    const t0 = process.hrtime.bigint();
    into.first = await sample(db, pid, t0);
    into.passes = [];
    log(`   storing ${N} sessions, already expired: the engine starts at the first commit`);
    await store(db, grants, 0, N, 0);
    into.stored = await sample(db, pid, t0);
    into.peak_rss_kb = into.first.rss_kb;
    for (let k = 1; k <= PASSES; k += 1) {
        await lib.waitFor(async () => {
            const e = await lib.engine(db);
            into.peak_rss_kb = Math.max(into.peak_rss_kb, lib.memory(pid).VmRSS);
            if (e.failed_transient + e.failed_reauth + e.failed_client > e0.failed_transient + e0.failed_reauth + e0.failed_client) {
                throw new Error('a refresh failed during B8');
            }
            return e.refreshed - e0.refreshed >= k * N;
        }, { what: `refresh pass ${k} of ${N} tokens`, timeoutMs: Math.max(1000, deadlineMs - Date.now()), intervalMs: 250 });
        const s = await sample(db, pid, t0);
        into.passes.push(s);
        if (k === PASSES - 1) {
            // Day-long tokens once every token has had PASSES - 1 refreshes, so that the next
            // refresh of each (its last) is at least its PASSES-th.
            await lib.waitFor(async () => Number((await db.query(
                'SELECT count(*) AS n FROM upstream_token.token WHERE provider = $1 AND generation < $2',
                [PROVIDER, PASSES])).rows[0].n) === 0,
            { what: `every token refreshed ${PASSES - 1} times`, timeoutMs: Math.max(1000, deadlineMs - Date.now()), intervalMs: 1000 });
            await client(86400);
        }
        const prev = k === 1 ? into.first : into.passes[k - 2];
        const refreshed = s.engine.refreshed - prev.engine.refreshed;
        log(`   pass ${k}: ${refreshed} refreshes in ${fmt((s.at_ms - prev.at_ms) / 1000, 1)} s, ` +
            `WAL ${fmt((s.c.lsn - prev.c.lsn) / refreshed, 0)} B/refresh, HOT ${fmt((100 * (s.c.hot - prev.c.hot)) / Math.max(1, s.c.upd - prev.c.upd), 1)}%, ` +
            `table ${fmt(s.size.total / 1048576, 0)} MB, engine RSS ${s.rss_kb} kB`);
    }
    // Tokens a pass-5 refresh reached before the IdP's switch are refreshed once more.
    await lib.waitFor(async () => Number((await db.query(
        `SELECT count(*) AS n FROM upstream_token.token WHERE provider = $1 AND expires_at < now() + interval '1 hour'`,
        [PROVIDER])).rows[0].n) === 0, { what: 'every token to hold a day-long access token', timeoutMs: 120000, intervalMs: 2000 });
    await lib.waitFor(async () => { const e = await lib.engine(db); return e.in_flight === 0 && e.queued === 0; },
        { what: 'the engine to be idle', timeoutMs: 60000, intervalMs: 100 });
    // Every token refreshed at least five times: generation 1 at the store, 6 after five.
    into.behind = Number((await db.query(
        'SELECT count(*) AS n FROM upstream_token.token WHERE provider = $1 AND generation < $2', [PROVIDER, PASSES + 1])).rows[0].n);
    into.wal_profile = await walProfile(into.passes[1], into.passes[2]);
}

// What the WAL of one pass is made of: pg_waldump --stats=record between two samples (run.sh
// keeps the segments with wal_keep_size).
async function walProfile(from, to) {
    const dir = path.join(lib.env('UT_CLUSTER_DIR'), 'data', 'pg_wal');
    const r = await lib.run('/usr/lib/postgresql/15/bin/pg_waldump', ['--stats=record', '-p', dir, '-s', from.c.lsn_text, '-e', to.c.lsn_text]);
    return r.code === 0 ? r.stdout.trimEnd() : `pg_waldump failed: ${r.stderr.slice(-300)}`;
}

// The per-pass table of the report (markdown).
function passTable(r) {
    const rows = ['| pass | refreshes | wall | refreshes/s | engine CPU / refresh | WAL / refresh | FPI / refresh | HOT updates | heap + TOAST + indexes | dead rows | autovacuums | checkpoints | engine RSS |',
        '|---|---|---|---|---|---|---|---|---|---|---|---|---|'];
    r.passes.forEach((s, i) => {
        const p = i === 0 ? r.first : r.passes[i - 1];
        const n = s.engine.refreshed - p.engine.refreshed;
        const secs = (s.at_ms - p.at_ms) / 1000;
        const upd = s.c.upd - p.c.upd;
        rows.push(`| ${i + 1} | ${n} | ${fmt(secs, 1)} s | ${fmt(n / secs, 0)} | ${fmt(((s.cpu_ms - p.cpu_ms) * 1000) / n, 0)} µs | ` +
            `${fmt((s.c.lsn - p.c.lsn) / n, 0)} B | ${fmt((s.c.wal_fpi - p.c.wal_fpi) / n, 2)} | ` +
            `${fmt((100 * (s.c.hot - p.c.hot)) / Math.max(1, upd), 1)}% of ${upd} | ` +
            `${fmt(s.size.heap / 1048576, 0)} + ${fmt(s.size.toast / 1048576, 0)} + ${fmt(s.size.indexes / 1048576, 0)} MB | ` +
            `${s.c.dead} | ${s.c.autovacuums - p.c.autovacuums} | ${s.c.checkpoints - p.c.checkpoints} | ${s.rss_kb} kB |`);
    });
    return rows.join('\n');
}

// Writes RESULTS-B8.md.
function report(d, seconds, failure) {
    const lines = ['| Measured | Ours | Baseline | Ratio | Target | Result |', '|---|---|---|---|---|---|'];
    for (const c of checks) {
        lines.push(`| ${c.what} | ${c.ours} | ${c.baseline} | ${c.ratio} | ${c.goal} | ${c.ok ? 'pass' : '**FAIL**'} |`);
    }
    const text = `# B8: a million tokens

Produced by \`bench/run.sh b8\` (${fmt(seconds, 0)} s); what it measures: [README.md](README.md#b8).
${failure ? `\n**The run stopped early: ${failure}**\n` : ''}
${lines.join('\n')}

## Refresh passes

${N} tokens stored already expired; the IdP answers each refresh with a ${LIFETIME_S} s token, so every
token is due again before its pass ends. WAL and full-page images (FPI) are cluster-wide
(\`pg_stat_wal\`, autovacuum's WAL included); HOT updates and dead rows are the token table's
(\`pg_stat_user_tables\`). Pass 1 also holds the ${N} stores that made the tokens due.

${d.passes && d.passes.passes ? passTable(d.passes) : '(not reached)'}

What the WAL of pass 3 is made of (\`pg_waldump --stats=record\`):

\`\`\`
${(d.passes && d.passes.wal_profile) || '(not reached)'}
\`\`\`

## Details

\`\`\`json
${JSON.stringify(d, (k, v) => (k === 'wal_profile' ? undefined : v), 1)}
\`\`\`
`;
    fs.writeFileSync(REPORT, text);
}

async function main() {
    const db = lib.pool(4);
    const idpc = lib.idp();
    const started = Date.now();
    const quick = process.env.UT_BENCH_QUICK === '1';
    const hot = quick ? { seconds: 2, rounds: 1 } : { seconds: 4, rounds: 2 };
    const deadline = started + 40 * 60 * 1000;
    const d = { tokens: N };
    let failure = null;
    try {
        await lib.waitFor(async () => (await lib.engine(db)).ready, { what: 'the engine to be ready', timeoutMs: 30000 });
        log(`== B8 a million tokens: ${N} sessions, hot path at ${SMALL} and ${N}, then ${PASSES} refresh passes`);
        await idpc.admin('POST', '/admin/clients', {
            client_id: PROVIDER, client_secret: 'bench-big-secret', access_ttl: 86400, id_token: true, forget_used: true,
        });
        await db.query(
            `SELECT upstream_token.register_provider(name => $1, token_endpoint => $2, client_id => $1,
                    client_secret => 'bench-big-secret', refresh_threshold => $3::interval)`,
            [PROVIDER, `${lib.env('UT_BENCH_IDP')}/token`, `${THRESHOLD_S} seconds`]);
        const grants = await lib.mint(idpc, PROVIDER, N);
        // Fresh tokens (a day left): the engine never touches them while the hot path runs.
        await store(db, grants, 0, SMALL, 86400);
        log(`== B8 hot path with ${SMALL} sessions`);
        d.hot_small = await hotPath(db, SMALL, hot);
        log(`== B8 ${PASSES} refresh passes over ${N} tokens`);
        d.passes = {};
        await passes(db, idpc, grants, deadline, d.passes);
        log(`== B8 hot path with ${N} sessions, after the passes`);
        d.hot_large = await hotPath(db, N, hot);
        d.size_after = await sizes(db);
        const rel = d.hot_large.ratio / d.hot_small.ratio;
        target(`hot path / plain PK SELECT with ${N} sessions (after the passes), against the same with ${SMALL}`, {
            ours: fmt(d.hot_large.ratio), baseline: fmt(d.hot_small.ratio), ratio: fmt(rel),
            goal: '≥ 0.90', ok: rel >= 0.9 && d.hot_large.requests === 0 && d.hot_small.requests === 0,
        });
        const per = d.size_after.total / N;
        target('storage per token after the passes: heap + TOAST + indexes (reported)', {
            ours: `${fmt(per, 0)} B (${fmt(d.size_after.heap / N, 0)} + ${fmt(d.size_after.toast / N, 0)} + ${fmt(d.size_after.indexes / N, 0)})`,
            goal: 'report only', ok: true,
        });
        const r = d.passes;
        const last = r.passes[PASSES - 1];
        // Passes 2-5: pass 1 also holds the stores that made the tokens due.
        const p1 = r.passes[0];
        const n = last.engine.refreshed - p1.engine.refreshed;
        d.steady = {
            refreshes: n, wal_bytes_per_refresh: (last.c.lsn - p1.c.lsn) / n, fpi_per_refresh: (last.c.wal_fpi - p1.c.wal_fpi) / n,
            hot_share: (last.c.hot - p1.c.hot) / Math.max(1, last.c.upd - p1.c.upd),
            refreshes_per_s: n / ((last.at_ms - p1.at_ms) / 1000),
            engine_cpu_us_per_refresh: ((last.cpu_ms - p1.cpu_ms) * 1000) / n,
        };
        target(`refresh passes 2-${PASSES}: WAL per refresh, full-page images per refresh, HOT share (reported)`, {
            ours: `${fmt(d.steady.wal_bytes_per_refresh, 0)} B, ${fmt(d.steady.fpi_per_refresh, 2)} FPI, ${fmt(100 * d.steady.hot_share, 1)}% HOT`,
            goal: 'report only', ok: true,
        });
        target('one refresh pass: wall time, refreshes per second, engine CPU per refresh (passes 2-5, reported)', {
            ours: `${fmt(N / d.steady.refreshes_per_s, 1)} s, ${fmt(d.steady.refreshes_per_s, 0)}/s, ${fmt(d.steady.engine_cpu_us_per_refresh, 0)} µs`,
            goal: 'report only', ok: true,
        });
        target(`every token refreshed ${PASSES} times, none failed`, {
            ours: `${r.behind} tokens behind`, goal: '0', ok: r.behind === 0,
        });
        const growth = last.size.total / p1.size.total;
        target(`table size (heap + TOAST + indexes) after pass ${PASSES} / after pass 1`, {
            ours: `${fmt(last.size.total / 1048576, 0)} MB`, baseline: `${fmt(p1.size.total / 1048576, 0)} MB`,
            ratio: fmt(growth), goal: '≤ 1.10', ok: growth <= 1.1,
        });
        const rssGrowth = last.rss_anon_kb / p1.rss_anon_kb;
        target(`engine private memory (RssAnon) after pass ${PASSES} / after pass 1; peak VmRSS`, {
            ours: `${last.rss_anon_kb} kB`, baseline: `${p1.rss_anon_kb} kB`, ratio: fmt(rssGrowth),
            goal: '≤ 1.10 (peak reported)', ok: rssGrowth <= 1.1,
        });
    } catch (e) {
        failure = e.message;
        console.error(`bench: ${e.stack || e}`);
    }
    report(d, (Date.now() - started) / 1000, failure);
    await db.end();
    idpc.close();
    const missed = checks.filter((c) => !c.ok).length;
    log(failure ? `\nthe run stopped early: ${failure}` : `\n${missed === 0 ? 'every target met' : `${missed} target(s) missed`}`);
    process.exit(failure || missed ? 1 : 0);
}

main();
