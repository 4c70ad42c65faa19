'use strict';
// The naive client the seed projects used before their fixes (B6): every caller that finds an
// expired access token reads the refresh token from a plain table, calls the provider itself
// and writes the answer back, with no lock and no coordination between callers.

const path = require('node:path');
const { redeem, connection } = require(path.join(__dirname, 'loadgen.js'));
const lib = require(path.join(__dirname, 'lib.js'));

// Creates the naive client's token table with `grants` stored as already expired.
async function setupNaive(db, grants) {
    await db.query('DROP TABLE IF EXISTS bench_naive_token');
    await db.query(`CREATE TABLE bench_naive_token (
        session text PRIMARY KEY, access_token text NOT NULL, refresh_token text NOT NULL,
        expires_at timestamptz NOT NULL)`);
    await db.query(
        `INSERT INTO bench_naive_token
         SELECT 'n' || x.i, x.a, x.r, now() FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS x(a, r, i)`,
        [grants.map((g) => g.access_token), grants.map((g) => g.refresh_token)]);
    return grants.map((_, i) => `n${i + 1}`);
}

// One naive "get a token": read, refresh when expired, write back. Returns {ok, error, ms}.
async function naiveGet(c, conn, session) {
    const t0 = process.hrtime.bigint();
    const r = await c.query({
        name: 'naive-read',
        text: 'SELECT refresh_token, expires_at <= now() AS expired FROM bench_naive_token WHERE session = $1',
        values: [session],
    });
    const row = r.rows[0];
    if (!row.expired) return { ok: true, ms: lib.msSince(t0) };
    const res = await redeem(conn.agent, conn.url, conn.auth, row.refresh_token);
    let body = {};
    try { body = JSON.parse(res.body); } catch { /* counted as an error below */ }
    if (res.status !== 200) return { ok: false, error: body.error || `http_${res.status}`, ms: lib.msSince(t0) };
    await c.query({
        name: 'naive-write',
        text: `UPDATE bench_naive_token SET access_token = $2, refresh_token = coalesce($3, refresh_token),
                      expires_at = now() + make_interval(secs => $4) WHERE session = $1`,
        values: [session, body.access_token, body.refresh_token || null, body.expires_in],
    });
    return { ok: true, ms: lib.msSince(t0) };
}

// Runs `callers` naive callers, each walking every session once in its own random order.
async function naiveStorm({ url, caPem, clientId, secret, sessions, callers }) {
    const conn = connection(url, caPem, clientId, secret, callers);
    const clients = await Promise.all(Array.from({ length: callers }, () => lib.connect()));
    const latencies = [];
    const errors = {};
    const failedSessions = new Set();
    const t0 = process.hrtime.bigint();
    await lib.concurrently(callers, async (ci) => {
        for (const i of lib.shuffled(sessions.length)) {
            const r = await naiveGet(clients[ci], conn, sessions[i]);
            latencies.push(r.ms);
            if (!r.ok) {
                errors[r.error] = (errors[r.error] || 0) + 1;
                failedSessions.add(sessions[i]);
            }
        }
    });
    const wallMs = lib.msSince(t0);
    await Promise.all(clients.map((c) => c.end()));
    conn.agent.destroy();
    return { wall_ms: wallMs, latencies, errors, failed_sessions: failedSessions.size };
}

module.exports = { setupNaive, naiveStorm };
