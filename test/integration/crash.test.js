'use strict';
// The refresh engine is SIGKILLed while refreshes are in flight (PostgreSQL then restarts every
// backend): no waiting caller hangs, the server and the engine come back, no row is corrupted
// (every row still decrypts and keeps its refresh token), sessions whose refresh had not
// reached the provider refresh normally afterwards, and a session whose rotation the provider
// made but the dead engine never committed ends as a clean reauth_required (UT004).
const test = require('node:test');
const assert = require('node:assert');
const { setup, connect, waitFor } = require('./harness.js');

const SESSIONS = 20;
const DELAY_MS = 1500;
const WAIT_TIMEOUT_MS = 10000;   // upstream_token.wait_timeout default
const MARGIN_MS = 10000;

// Runs one get on its own connection; resolves {ok, code, message, ms} and never rejects.
async function getOnOwnConnection(session, provider) {
    const t0 = Date.now();
    let c;
    try {
        c = await connect();
        const r = await c.query('SELECT upstream_token.get_upstream_token($1, $2) AS t', [session, provider]);
        return { ok: true, token: r.rows[0].t, ms: Date.now() - t0 };
    } catch (e) {
        return { ok: false, code: e.code || null, message: e.message, ms: Date.now() - t0 };
    } finally {
        if (c) c.end().catch(() => {});
    }
}

// Resolves `p`, or a 'hung' marker once `ms` have passed (so a hang fails the test, not the run).
function within(p, ms) {
    let timer;
    return Promise.race([p, new Promise((r) => { timer = setTimeout(() => r({ hung: true }), ms); })])
        .finally(() => clearTimeout(timer));
}

test('SIGKILL of the engine with refreshes in flight: nobody hangs, nothing is corrupted', async (t) => {
    const ctx = await setup({ poolSize: 10 });
    t.after(() => ctx.close());
    const p = await ctx.provider();
    // The fault first: the engine refreshes expired tokens as soon as they are stored.
    await ctx.fault({ match: { client_id: p.clientId }, action: { delay_ms: DELAY_MS } });
    const logins = await ctx.logins(p, { count: SESSIONS, expiresIn: 0 });
    const pid = (await ctx.engine()).worker_pid;
    assert.ok(pid > 0, 'the engine runs');

    const t0 = Date.now();
    const calls = logins.map((l) => within(getOnOwnConnection(l.session, p.provider), WAIT_TIMEOUT_MS + MARGIN_MS));
    await waitFor(async () => (await ctx.stats()).in_flight > 0,
        { timeoutMs: 10000, intervalMs: 10, what: 'refreshes in flight at the provider' });
    const atKill = await ctx.stats();
    const engineInFlight = Number((await ctx.engine()).in_flight);
    process.kill(pid, 'SIGKILL');

    const outcomes = await Promise.all(calls);
    const hung = outcomes.filter((o) => o.hung).length;
    assert.strictEqual(hung, 0, 'every waiting caller got an answer');
    for (const o of outcomes) {
        // A result, a connection error (the crash restart kills every backend: no SQLSTATE, or
        // a socket error such as ECONNRESET), or a typed error (UT*, 57P* shutdown/crash).
        // Node socket errors (EPIPE, ECONNRESET...) are connection errors, not SQLSTATEs.
        const sqlstate = /^[0-9A-Z]{5}$/.test(o.code || '') && !/^E[A-Z]+$/.test(o.code) ? o.code : null;
        if (!o.ok && sqlstate) assert.ok(/^(UT|57P)/.test(sqlstate), `typed error, got ${sqlstate}`);
    }
    await ctx.clearFaults();

    // The server and a new engine come back.
    await waitFor(async () => {
        const c = await connect();
        try {
            const r = await c.query('SELECT worker_pid, ready FROM upstream_token.engine_status');
            return r.rows[0] && r.rows[0].ready && r.rows[0].worker_pid !== pid;
        } finally { await c.end(); }
    }, { timeoutMs: 60000, intervalMs: 200, what: 'the server and a new engine after the crash' });

    // The dead engine's requests are still being served by the provider (it rotates even
    // though the client went away). Wait until they are all answered before judging.
    // (The provider's in_flight gauge drops when the socket closes, so use its call log.)
    await waitFor(async () => {
        const { calls } = await ctx.idp.client.admin('GET', `/admin/calls?since_ms=${t0}&client_id=${encodeURIComponent(p.clientId)}`);
        return calls.every((x) => x.status !== null || x.dropped);
    }, { timeoutMs: DELAY_MS + 15000, what: 'the orphaned requests to finish at the provider' });

    // No corrupted row: each still has its refresh token and decrypts (result or typed error).
    const c = await connect();
    t.after(() => c.end());
    const rows = await c.query(
        'SELECT session, has_refresh_token, status FROM upstream_token.token_status WHERE provider = $1', [p.provider]);
    assert.strictEqual(rows.rows.length, SESSIONS);
    for (const r of rows.rows) {
        assert.strictEqual(r.has_refresh_token, true, 'refresh token kept');
        assert.ok(['active', 'reauth_required'].includes(r.status), `status ${r.status}`);
    }

    // Each session: a grant still alive at the provider refreshes (forced) and serves an active
    // token; a grant the orphaned request rotated (the provider then saw the old token again:
    // reuse, grant revoked) gives a clean reauth_required, never UT009 or an internal error.
    const summary = { refreshed: 0, reauth: 0, getServedStale: 0, orphanFirst: 0, newEngineFirst: 0 };
    for (const l of logins) {
        const f = (await c.query(
            'SELECT refreshed, sqlstate FROM upstream_token.refresh_upstream_token($1, $2)',
            [l.session, p.provider])).rows[0];
        let after;
        try {
            const r = await c.query('SELECT upstream_token.get_upstream_token($1, $2) AS t', [l.session, p.provider]);
            after = { ok: true, token: r.rows[0].t };
        } catch (e) {
            after = { ok: false, code: e.code };
        }
        const g = await ctx.grant(l.grant.grant_id);
        if (g.active) {
            summary.refreshed += 1;
            assert.deepStrictEqual(f, { refreshed: true, sqlstate: null }, 'a live grant refreshes');
            assert.ok(after.ok, `get after the crash: ${after.code}`);
            const intro = await ctx.idp.client.request('POST', '/introspect',
                { form: { token: after.token }, basic: [p.clientId, p.secret] });
            assert.strictEqual(JSON.parse(intro.text).active, true, 'a served token is active');
            assert.strictEqual(g.reuse_detected, 0);
        } else {
            summary.reauth += 1;
            // Which request rotated: the dead engine's (then the new engine's was the reuse), or
            // the new engine's (then the orphan arrived late, with the old token: reuse).
            const { calls } = await ctx.idp.client.admin('GET',
                `/admin/calls?since_ms=${t0}&grant_id=${encodeURIComponent(l.grant.grant_id)}`);
            const orphan = calls.find((x) => x.fault_id);
            if (orphan && orphan.status === 200) summary.orphanFirst += 1;
            else summary.newEngineFirst += 1;
            assert.ok(g.rotations >= 1 && g.reuse_detected >= 1, 'revoked by reuse after an uncommitted rotation');
            assert.strictEqual(f.sqlstate, 'UT004', 'forced refresh: reauth_required');
            if (after.ok) summary.getServedStale += 1;  // still-valid access token (I6)
            else assert.strictEqual(after.code, 'UT004', `get after the crash: ${after.code}`);
        }
    }
    assert.strictEqual(summary.refreshed + summary.reauth, SESSIONS);
    // Only what was in flight at the kill can be lost (docs/engine.md, "Restarts").
    const budget = Math.max(engineInFlight, atKill.in_flight);
    assert.ok(summary.reauth <= budget, `${summary.reauth} sessions lost, at most ${budget} exchanges were in flight`);
    t.diagnostic(`at kill: ${atKill.in_flight} refreshes in flight at the provider, ${engineInFlight} in the engine; callers: ` +
        `${outcomes.filter((o) => o.ok).length} served, ${outcomes.filter((o) => !o.ok).length} errors ` +
        `(${[...new Set(outcomes.filter((o) => !o.ok).map((o) => o.code || 'connection'))].join(',')}); ` +
        `after restart: ${summary.refreshed} grants alive and refreshed, ${summary.reauth} UT004 ` +
        `(rotated at the provider, never committed; get still served a valid access token for ` +
        `${summary.getServedStale}); of those, the dead engine's request rotated first: ${summary.orphanFirst}, ` +
        `the new engine's refresh came first and the late orphan revoked the grant: ${summary.newEngineFirst}`);
});
