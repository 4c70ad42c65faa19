'use strict';
// Proactive refresh at scale: 1,000 tokens whose access tokens expire spread over a minute are
// each refreshed by the engine inside its window and committed before the token expires, while
// four readers fetch every token continuously. No reader gets an expired token, an error or a
// warning, no reader makes the engine refresh on demand (engine_status.requests stays put), the
// tokens served are active at the provider, and the provider sees no refresh-token reuse.
const test = require('node:test');
const assert = require('node:assert');
const { setup, connect, unique, storeMany, callLog, introspectActive } = require('./harness.js');

const N = 1000;
const BASE_S = 14;          // the first access token expires after this...
const SPAN_S = 60;          // ...and the others spread over this span
const THRESHOLD_S = 20;     // provider refresh_threshold
const REFRESHED_TTL_S = 60; // lifetime of the access tokens the provider issues on refresh
const READERS = 4;
const BATCH = 250;
const AFTER_LAST_MS = 1500; // keep reading this long after the last original expiry

// One reader: fetches every token in batches until `stopAt`, checking each one is unexpired.
async function reader(id, sessions, provider, stopAt, idpCheck, out) {
    const c = await connect({ application_name: `lifecycle reader ${id}` });
    c.on('notice', (n) => out.notices.push(n.message));
    try {
        let offset = (id * BATCH) % sessions.length;
        while (Date.now() < stopAt) {
            const batch = sessions.slice(offset, offset + BATCH);
            offset = (offset + BATCH) % sessions.length;
            let r;
            try {
                // token_status is read with the statement's snapshot, taken before the gets:
                // its expires_at is never later than that of the token returned.
                r = await c.query(
                    `SELECT x.s AS session, upstream_token.get_upstream_token(x.s, $2) AS t, ts.expires_at
                       FROM unnest($1::text[]) AS x(s)
                       JOIN upstream_token.token_status ts ON ts.session = x.s AND ts.provider = $2`,
                    [batch, provider]);
            } catch (e) {
                out.errors.push(`${e.code || ''} ${e.message}`);
                continue;
            }
            const received = Date.now();
            out.reads += r.rows.length;
            if (r.rows.length !== batch.length) out.errors.push(`got ${r.rows.length} of ${batch.length} rows`);
            for (const row of r.rows) {
                if (!row.t) out.errors.push('empty token');
                else if (row.expires_at.getTime() <= received) out.expired.push(row.session);
                out.minSlackMs = Math.min(out.minSlackMs, row.expires_at.getTime() - received);
            }
            // A sample is checked at the provider: the token served must be active there.
            const sample = r.rows[Math.floor(Math.random() * r.rows.length)];
            if (sample && sample.t) {
                out.introspected += 1;
                if (!(await idpCheck(sample.t))) out.inactive.push(sample.session);
            }
        }
    } finally {
        await c.end();
    }
}

test('1,000 tokens are refreshed proactively before they expire; readers never wait', async (t) => {
    const t0 = Date.now();
    const ctx = await setup({ poolSize: 4 });
    t.after(() => ctx.close());
    // Minted access tokens live longer at the provider than the expiry we store, so any one
    // we serve before its refresh is active there; refreshed ones live REFRESHED_TTL_S.
    const p = await ctx.provider({ accessTtl: BASE_S + SPAN_S + 60, threshold: `${THRESHOLD_S} seconds` });
    const { grants } = await ctx.idp.client.admin('POST', '/admin/grants',
        { client_id: p.clientId, subject: unique('user'), count: N });
    await ctx.idp.client.admin('POST', '/admin/clients', {
        client_id: p.clientId, client_secret: p.secret, access_ttl: REFRESHED_TTL_S, id_token: true });
    await ctx.idp.client.admin('POST', '/admin/stats/reset', {});

    // Commit-time of each session's first refresh, from the NOTIFY sent in its transaction.
    const listener = await connect();
    t.after(() => listener.end());
    const firstRefresh = new Map();
    listener.on('notification', (n) => {
        const ev = JSON.parse(n.payload);
        if (ev.provider === p.provider && ev.event === 'refreshed' && !firstRefresh.has(ev.session)) {
            firstRefresh.set(ev.session, Date.now());
        }
    });
    await listener.query('LISTEN upstream_token_events');

    const rows = grants.map((g, i) => ({
        session: unique('proactive'), grantId: g.grant_id, access: g.access_token,
        refresh: g.refresh_token, idToken: g.id_token,
        expiresIn: BASE_S + Math.floor((i * SPAN_S) / N),
    }));
    const before = await ctx.engine();
    await storeMany(ctx.pool, p.provider, rows);
    const stored = await ctx.pool.query(
        'SELECT session, expires_at FROM upstream_token.token_status WHERE provider = $1', [p.provider]);
    assert.strictEqual(stored.rows.length, N);
    const originalExpiry = new Map(stored.rows.map((r) => [r.session, r.expires_at.getTime()]));
    const lastExpiry = Math.max(...originalExpiry.values());
    const stopAt = lastExpiry + AFTER_LAST_MS;

    const sessions = rows.map((r) => r.session);
    const out = { reads: 0, errors: [], expired: [], inactive: [], notices: [], introspected: 0, minSlackMs: Infinity };
    // Asks the provider whether a served access token is active.
    const idpCheck = (token) => introspectActive(ctx.idp, token, p.clientId, p.secret);
    await Promise.all(Array.from({ length: READERS }, (_, id) =>
        reader(id, sessions, p.provider, stopAt, idpCheck, out)));
    const after = await ctx.engine();

    // Readers: every token valid when served, active at the provider, no error or warning.
    assert.deepStrictEqual(out.errors.slice(0, 5), [], 'no reader error');
    assert.deepStrictEqual(out.notices.slice(0, 5), [], 'no warning (no failed refresh served stale)');
    assert.strictEqual(out.expired.length, 0, `readers got ${out.expired.length} expired tokens`);
    assert.strictEqual(out.inactive.length, 0, `${out.inactive.length} served tokens inactive at the provider`);
    assert.ok(out.reads >= 4 * N, `readers kept reading (${out.reads} reads)`);
    // Nobody asked the engine: every refresh was proactive.
    assert.strictEqual(Number(after.requests) - Number(before.requests), 0, 'no on-demand refresh request');
    assert.ok(Number(after.proactive_refreshes) - Number(before.proactive_refreshes) >= N,
        'at least one proactive refresh per token');

    // Every token's first refresh was committed before its original access token expired.
    const late = sessions.filter((s) => !(firstRefresh.get(s) < originalExpiry.get(s)));
    assert.deepStrictEqual(late.slice(0, 5), [], `${late.length} tokens not refreshed before their original expiry`);
    const final = await ctx.pool.query(
        `SELECT session, status, generation, refreshed_at, expires_at > now() AS valid
           FROM upstream_token.token_status WHERE provider = $1`, [p.provider]);
    for (const r of final.rows) {
        assert.strictEqual(r.status, 'active');
        assert.ok(Number(r.generation) >= 2, 'refreshed at least once');
        assert.ok(r.valid, 'still valid at the end');
        // refreshed_at is the last refresh: before the original expiry unless refreshed again.
        assert.ok(r.refreshed_at.getTime() < originalExpiry.get(r.session) || Number(r.generation) >= 3);
    }

    // The provider: each grant's first call succeeded before the original expiry; no reuse.
    const calls = await callLog(ctx.idp, p.clientId, t0);
    const firstCall = new Map();
    for (const c of calls) if (!firstCall.has(c.grant_id)) firstCall.set(c.grant_id, c);
    for (const r of rows) {
        const c = firstCall.get(r.grantId);
        assert.ok(c && c.status === 200, 'first refresh call succeeded');
        assert.ok(c.t_ms + c.duration_ms < originalExpiry.get(r.session), 'answered before the original expiry');
    }
    const stats = await ctx.stats();
    assert.strictEqual(stats.reuse_detected, 0, 'no refresh-token reuse');
    assert.strictEqual(stats.revoked_grants, 0, 'no grant revoked');
    assert.deepStrictEqual(stats.by_error, {}, 'no provider error');

    const slack = sessions.map((s) => originalExpiry.get(s) - firstRefresh.get(s));
    t.diagnostic(`${out.reads} reads by ${READERS} readers, ${out.introspected} introspected; ` +
        `least validity left on a served token ${out.minSlackMs} ms; first refresh committed ` +
        `${Math.min(...slack)}..${Math.max(...slack)} ms before the original expiry; ` +
        `${calls.length} provider calls, max in flight ${stats.max_in_flight}; ` +
        `requests delta ${Number(after.requests) - Number(before.requests)}, proactive delta ` +
        `${Number(after.proactive_refreshes) - Number(before.proactive_refreshes)}; ` +
        `runtime ${Date.now() - t0} ms`);
});
