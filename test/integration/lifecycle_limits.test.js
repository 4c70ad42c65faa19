'use strict';
// The engine's limits and settings: tokens issued together are refreshed spread over their
// window and never more than upstream_token.max_concurrent_refreshes at once (set with
// ALTER SYSTEM + reload); a provider's max_concurrent bounds its refreshes, on demand and
// proactive; a provider answering 429 + Retry-After gets no call before then while another
// provider's refreshes go on; and a reloaded refresh_threshold is used by the engine at once.
const test = require('node:test');
const assert = require('node:assert');
const {
    setup, connect, waitFor, unique, storeMany, callLog, setSystemGucs, sleep,
} = require('./harness.js');

// Mints `count` grants for a provider and returns store rows expiring after `expiresIn` s.
async function mint(ctx, p, count, expiresIn, prefix) {
    const { grants } = await ctx.idp.client.admin('POST', '/admin/grants',
        { client_id: p.clientId, subject: unique('user'), count });
    return grants.map((g) => ({
        session: unique(prefix), grantId: g.grant_id, access: g.access_token,
        refresh: g.refresh_token, idToken: g.id_token, expiresIn,
    }));
}

// Re-registers a provider with a concurrency limit of its own (register_provider updates).
async function setProviderLimit(ctx, p, maxConcurrent) {
    await ctx.pool.query(
        `SELECT upstream_token.register_provider(name => $1, token_endpoint => $2, client_id => $3,
                client_secret => $4, refresh_threshold => $5::interval, max_concurrent => $6)`,
        [p.provider, `${ctx.idp.url}/token`, p.clientId, p.secret, p.threshold || null, maxConcurrent]);
}

// Most calls open at one instant, from the IdP call log (arrival to answer, end exclusive):
// the IdP's own gauge drops only when a socket's 'close' event runs, a little after the answer.
function maxOverlap(calls) {
    const edges = [];
    for (const c of calls) edges.push([c.t_ms, 1], [c.t_ms + c.duration_ms, -1]);
    edges.sort((x, y) => x[0] - y[0] || x[1] - y[1]);
    let cur = 0;
    let max = 0;
    for (const [, d] of edges) { cur += d; max = Math.max(max, cur); }
    return max;
}

// Generation of each session of a provider (a refresh bumps it).
async function generations(pool, provider) {
    const r = await pool.query(
        'SELECT session, generation FROM upstream_token.token_status WHERE provider = $1', [provider]);
    return new Map(r.rows.map((x) => [x.session, Number(x.generation)]));
}

// Runs one SQL call on its own connection; resolves {ok, rows | code, ms} and never rejects.
async function onOwnConnection(sql, params) {
    const t0 = Date.now();
    const c = await connect();
    try {
        const r = await c.query(sql, params);
        return { ok: true, rows: r.rows, ms: Date.now() - t0 };
    } catch (e) {
        return { ok: false, code: e.code || null, message: e.message, ms: Date.now() - t0 };
    } finally {
        await c.end();
    }
}

let ctx;
test.before(async () => { ctx = await setup({ poolSize: 8 }); });
test.after(async () => {
    await setSystemGucs(ctx.pool, {
        'upstream_token.max_concurrent_refreshes': null, 'upstream_token.refresh_threshold': null });
    await ctx.close();
});

test('500 tokens issued together: refreshes spread over the window, max_concurrent_refreshes holds', async (t) => {
    const N = 500;
    const LIMIT = 8;
    const THRESHOLD_S = 20;
    const t0 = Date.now();
    await setSystemGucs(ctx.pool, { 'upstream_token.max_concurrent_refreshes': LIMIT });
    t.after(() => setSystemGucs(ctx.pool, { 'upstream_token.max_concurrent_refreshes': null }));
    const p = await ctx.provider({ accessTtl: 3600, threshold: `${THRESHOLD_S} seconds` });
    const rows = await mint(ctx, p, N, THRESHOLD_S + 5, 'together');
    // A slow provider, so that refreshes overlap and the limit is what bounds them.
    await ctx.fault({ match: { client_id: p.clientId }, action: { delay_ms: 100 } });
    t.after(() => ctx.clearFaults());
    await ctx.idp.client.admin('POST', '/admin/stats/reset', {});
    const before = await ctx.engine();
    await storeMany(ctx.pool, p.provider, rows);
    const stored = await ctx.pool.query(
        'SELECT session, expires_at FROM upstream_token.token_status WHERE provider = $1', [p.provider]);
    const expiry = stored.rows.map((r) => r.expires_at.getTime());
    const expiresAt = Math.min(...expiry);
    assert.ok(Math.max(...expiry) - expiresAt < 1000, 'issued together (one statement)');

    await waitFor(async () => [...(await generations(ctx.pool, p.provider)).values()].every((g) => g >= 2),
        { timeoutMs: (THRESHOLD_S + 10) * 1000, intervalMs: 500, what: 'all 500 tokens refreshed' });
    const after = await ctx.engine();
    const stats = await ctx.stats();
    const calls = await callLog(ctx.idp, p.clientId, t0);
    assert.strictEqual(calls.length, N, 'one call per token');
    assert.ok(calls.every((c) => c.status === 200), 'every call succeeded');
    const times = calls.map((c) => c.t_ms);
    const span = Math.max(...times) - Math.min(...times);
    assert.ok(span >= (THRESHOLD_S * 1000) / 2, `refreshes spread over ${span} ms, at least half the window`);
    assert.ok(Math.max(...calls.map((c) => c.t_ms + c.duration_ms)) < expiresAt, 'all refreshed before expiry');
    const overlap = maxOverlap(calls);
    t.diagnostic(`provider gauge max_in_flight ${stats.max_in_flight}; max overlap in the call log ${overlap}`);
    assert.ok(overlap <= LIMIT, `at most ${LIMIT} at once at the provider, saw ${overlap}`);
    assert.strictEqual(stats.reuse_detected, 0);
    assert.strictEqual(Number(after.requests) - Number(before.requests), 0, 'all proactive');
    t.diagnostic(`calls spread over ${span} ms of the ${THRESHOLD_S * 1000} ms window; ${Date.now() - t0} ms`);
});

// A provider limited to `limit` refreshes at once whose token endpoint answers 200 ms late,
// so that refreshes overlap unless the limit holds them back.
async function slowLimitedProvider(t, limit) {
    const p = await ctx.provider({ accessTtl: 3600 });
    await setProviderLimit(ctx, p, limit);
    await ctx.fault({ match: { client_id: p.clientId }, action: { delay_ms: 200 } });
    t.after(() => ctx.clearFaults());
    return p;
}

test("a provider's max_concurrent bounds on-demand and proactive refreshes of due tokens", async (t) => {
    const N = 30;
    const LIMIT = 3;
    const t0 = Date.now();
    const p = await slowLimitedProvider(t, LIMIT);
    // Expired tokens, read at once: proactive and on-demand refreshes together.
    const expired = await mint(ctx, p, N, 0, 'expired');
    await storeMany(ctx.pool, p.provider, expired);
    const gets = await Promise.all(expired.map((r) => onOwnConnection(
        'SELECT upstream_token.get_upstream_token($1, $2) AS t', [r.session, p.provider])));
    assert.deepStrictEqual(gets.filter((o) => !o.ok).map((o) => o.code), [], 'every get succeeded');
    const overlap = maxOverlap(await callLog(ctx.idp, p.clientId, t0));
    t.diagnostic(`provider max in flight ${overlap} (limit ${LIMIT}); ${Date.now() - t0} ms`);
    assert.ok(overlap <= LIMIT, `at most ${LIMIT} at once, saw ${overlap}`);
    assert.ok(overlap >= 2, 'refreshes did overlap');
});

// Regression test for B1 (.tmp/bugs-life.md): the provider's limit was learned only from a scan
// that found one of its tokens due, so forced refreshes of fresh tokens ran unbounded.
test("a provider's max_concurrent bounds forced refreshes of fresh tokens", async (t) => {
    const N = 30;
    const LIMIT = 3;
    const t0 = Date.now();
    const p = await slowLimitedProvider(t, LIMIT);
    // Fresh tokens, all forced at once: nothing is due, so no scan has seen this provider.
    const fresh = await mint(ctx, p, N, 3600, 'forced');
    await storeMany(ctx.pool, p.provider, fresh);
    const forced = await Promise.all(fresh.map((r) => onOwnConnection(
        'SELECT refreshed, sqlstate FROM upstream_token.refresh_upstream_token($1, $2)', [r.session, p.provider])));
    assert.deepStrictEqual(forced.filter((o) => !o.ok || !o.rows[0].refreshed).map((o) => o.code || o.rows[0].sqlstate), [],
        'every forced refresh succeeded');
    const overlap = maxOverlap(await callLog(ctx.idp, p.clientId, t0));
    t.diagnostic(`provider max in flight ${overlap} (limit ${LIMIT}); ${Date.now() - t0} ms`);
    assert.ok(overlap <= LIMIT, `at most ${LIMIT} at once, saw ${overlap} (bug B1)`);
    assert.ok(overlap >= 2, 'refreshes did overlap');
});

test('429 with Retry-After pauses that provider only; its token is refreshed after the pause', async (t) => {
    const RETRY_AFTER_S = 5;
    const t0 = Date.now();
    const a = await ctx.provider({ accessTtl: 3600, threshold: '20 seconds' });
    const b = await ctx.provider({ accessTtl: 3600, threshold: '20 seconds' });
    await ctx.fault({ match: { client_id: a.clientId }, action: { status: 429, retry_after: String(RETRY_AFTER_S) }, count: 1 });
    t.after(() => ctx.clearFaults());

    // A's first due token meets the 429.
    const [a0] = await mint(ctx, a, 1, 0, 'a-first');
    await storeMany(ctx.pool, a.provider, [a0]);
    const limited = await waitFor(async () => (await callLog(ctx.idp, a.clientId, t0)).find((c) => c.status === 429),
        { timeoutMs: 10000, intervalMs: 20, what: "A's 429" });
    const pauseEnds = limited.t_ms + limited.duration_ms + RETRY_AFTER_S * 1000;

    // During the pause more tokens of both providers fall due.
    const aLater = await mint(ctx, a, 5, 0, 'a-later');
    const bNow = await mint(ctx, b, 10, 0, 'b-now');
    await storeMany(ctx.pool, a.provider, aLater);
    await storeMany(ctx.pool, b.provider, bNow);
    const statusDuring = (await ctx.pool.query(
        'SELECT paused_until FROM upstream_token.provider_status WHERE provider = $1', [a.provider])).rows[0];
    assert.ok(statusDuring && statusDuring.paused_until && statusDuring.paused_until.getTime() >= pauseEnds - 1000,
        'provider_status shows the pause');
    await sleep(1500);
    const bLater = await mint(ctx, b, 5, 0, 'b-later');
    await storeMany(ctx.pool, b.provider, bLater);
    // An on-demand read of A during the pause is answered at once, without a call; the token
    // is still refreshed once the pause ends (regression test for B3 in .tmp/bugs-life.md).
    const during = await onOwnConnection('SELECT upstream_token.get_upstream_token($1, $2)', [aLater[0].session, a.provider]);
    assert.strictEqual(during.ok, false);
    assert.strictEqual(during.code, 'UT003', `paused provider: refresh_failed, got ${during.code}`);
    assert.ok(Date.now() < pauseEnds, `answered within the pause (${during.ms} ms), not after it`);

    // Every other token of both providers ends refreshed: A's only after the pause.
    const readDuringPause = aLater[0].session;
    await waitFor(async () => {
        const ga = await generations(ctx.pool, a.provider);
        const gb = await generations(ctx.pool, b.provider);
        return [...ga].every(([s, g]) => g >= 2 || s === readDuringPause) && [...gb.values()].every((g) => g >= 2);
    }, { timeoutMs: 20000, intervalMs: 200, what: 'the tokens of A and B refreshed' });
    const aCalls = await callLog(ctx.idp, a.clientId, t0);
    const bCalls = await callLog(ctx.idp, b.clientId, t0);
    const aAfter429 = aCalls.filter((c) => c.t_ms > limited.t_ms);
    assert.ok(aAfter429.length >= 5, 'A refreshed after the pause');
    const early = aAfter429.filter((c) => c.t_ms < pauseEnds);
    assert.deepStrictEqual(early.map((c) => c.t_ms - pauseEnds), [], 'no call to A before Retry-After passed');
    assert.ok(aAfter429.every((c) => c.status === 200));
    const bDuringPause = bCalls.filter((c) => c.t_ms > limited.t_ms && c.t_ms < pauseEnds);
    assert.ok(bDuringPause.length >= bNow.length + bLater.length, `B went on during the pause (${bDuringPause.length} calls)`);
    assert.ok(bCalls.every((c) => c.status === 200));
    // The token read during the pause is refreshed after it too (bug B3: it waited for a scan).
    await waitFor(async () => (await generations(ctx.pool, a.provider)).get(readDuringPause) >= 2,
        { timeoutMs: 5000, intervalMs: 200, what: 'the token read during the pause to be refreshed after it (bug B3)' });
    t.diagnostic(`A paused ${RETRY_AFTER_S} s; first A call after it ${Math.min(...aAfter429.map((c) => c.t_ms)) - pauseEnds} ms ` +
        `after the pause ended; B calls during the pause: ${bDuringPause.length}; ${Date.now() - t0} ms`);
});

// Regression test for B2 (.tmp/bugs-life.md): a reload did not make the engine rescan, so the
// new threshold was applied only at the next scheduled scan (up to 5 minutes later).
test('SIGHUP: a larger refresh_threshold is used by the engine without a restart', async (t) => {
    const OLD_S = 300;
    const NEW_S = 1000;
    const EXPIRES_S = 380;  // outside the old window (and the engine's 60 s look-ahead), deep in the new one
    const t0 = Date.now();
    await setSystemGucs(ctx.pool, { 'upstream_token.refresh_threshold': OLD_S });
    const p = await ctx.provider({ accessTtl: 3600 });  // no threshold of its own: the GUC's
    const rows = await mint(ctx, p, 1, EXPIRES_S, 'sighup');
    await storeMany(ctx.pool, p.provider, rows);
    const before = (await ctx.pool.query(
        `SELECT next_refresh_at, generation,
                upstream_token.planned_refresh_at(provider, session, generation, NULL, expires_at,
                                                  make_interval(secs => $2)) <= now() AS due_under_new
           FROM upstream_token.token_status WHERE session = $1`, [rows[0].session, NEW_S])).rows[0];
    assert.ok(before.next_refresh_at.getTime() > Date.now() + 60000, 'not due under the old threshold');
    assert.ok(before.due_under_new, 'due at once under the new threshold');
    assert.strictEqual(Number(before.generation), 1, 'not refreshed yet');

    await setSystemGucs(ctx.pool, { 'upstream_token.refresh_threshold': NEW_S });
    t.after(() => setSystemGucs(ctx.pool, { 'upstream_token.refresh_threshold': null }));
    const reloadedAt = Date.now();
    await waitFor(async () => (await generations(ctx.pool, p.provider)).get(rows[0].session) >= 2,
        { timeoutMs: 10000, intervalMs: 100, what: 'the engine to refresh the token under the reloaded threshold' });
    t.diagnostic(`refreshed ${Date.now() - reloadedAt} ms after the reload; ${Date.now() - t0} ms`);
});
