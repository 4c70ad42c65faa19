'use strict';
// Singleflight (I1): however many callers ask for the same expired token at once, the engine
// makes exactly one token-endpoint call and every caller gets the one new token; under a
// crowd of callers on many tokens no rotation is ever wasted (no reuse, no revoked grant);
// and the engine's counters agree with what the provider saw.
const test = require('node:test');
const assert = require('node:assert');
const {
    setup, connect, waitFor, unique, storeLogin, holdRefreshLock, assertNoSecretsInLog,
    callLog, introspectActive, tokenStatus, storeMany,
} = require('./harness.js');

const GET = 'SELECT upstream_token.get_upstream_token($1, $2) AS t';

let ctx;
test.before(async () => { ctx = await setup({ poolSize: 20 }); });
test.after(async () => { await ctx.close(); });

// A small seeded generator, so each caller's "random" order is the same on every run.
function prng(seed) {
    let a = seed >>> 0;
    return () => {
        a = (a + 0x6D2B79F5) >>> 0;
        let t = a;
        t = Math.imul(t ^ (t >>> 15), t | 1);
        t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
        return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
}

// Fisher-Yates shuffle of 0..n-1 driven by `rand`: one caller's walk over the sessions.
function shuffledIndexes(n, rand) {
    const a = Array.from({ length: n }, (_, i) => i);
    for (let i = n - 1; i > 0; i--) {
        const j = Math.floor(rand() * (i + 1));
        [a[i], a[j]] = [a[j], a[i]];
    }
    return a;
}

// Waits until no other stored token is planned for a refresh within the next second (tokens
// left by earlier files are retried against dead endpoints): network_calls is global, so test 10
// compares it over a short window in which only this test's refresh can start a call.
async function quietEngine(provider, session) {
    await waitFor(async () => {
        const r = await ctx.pool.query(
            `SELECT count(*)::int AS due FROM upstream_token.token_status
              WHERE NOT (provider = $1 AND session = $2) AND next_refresh_at < now() + interval '1 s'`,
            [provider, session]);
        return r.rows[0].due === 0;
    }, { timeoutMs: 40000, intervalMs: 20, what: 'no other token due for a refresh soon (a quiet engine to measure)' });
}

// What test 1 measured, checked against the engine's counters by test 10.
const measured = {};

test('1. 50 connections on one expired session: one provider call, all get the same new token', async () => {
    const p = await ctx.provider();
    const session = unique('sess');
    // Held from before the store: the engine's own (proactive) refresh cannot win the race
    // against the 50 callers, so all of them really queue on the one request.
    const lock = await holdRefreshLock(p.provider, session);
    let locked = true;
    const clients = [];
    try {
        const login = await storeLogin(ctx, p, { session, expiresIn: 0 });
        for (let i = 0; i < 50; i++) {
            const c = await connect();
            clients.push(c);
            await c.query("SET upstream_token.wait_timeout = '60s'");  // room for quietEngine()
        }
        const before = await tokenStatus(ctx.pool, session, p.provider);
        const e0 = await ctx.engine();

        const all = Promise.all(clients.map((c) => c.query(GET, [session, p.provider])));
        all.catch(() => {});
        const pids = clients.map((c) => c.processID);
        await waitFor(async () => {
            const r = await ctx.pool.query(
                `SELECT count(*)::int AS n FROM pg_stat_activity
                  WHERE pid = ANY($1) AND wait_event_type = 'Extension'`, [pids]);
            return r.rows[0].n === 50;
        }, { what: 'all 50 callers to wait on the engine' });
        assert.strictEqual((await ctx.grant(login.grant.grant_id)).refresh_calls, 0,
            'no provider call while the refresh lock is held by someone else');
        await quietEngine(p.provider, session);
        const eRelease = await ctx.engine();
        const tRelease = Date.now();
        await lock.release();
        locked = false;
        const results = await all;

        const tokens = results.map((r) => r.rows[0].t);
        const first = tokens[0];
        assert.ok(typeof first === 'string' && first.length > 0, 'a token was returned');
        assert.ok(tokens.every((t) => t === first), 'all 50 callers got the same access token');
        assert.ok(first !== login.grant.access_token, 'the token differs from the stored (expired) one');

        const g = await ctx.grant(login.grant.grant_id);
        assert.strictEqual(g.refresh_calls, 1, 'exactly one token-endpoint call for the grant');
        assert.strictEqual(g.rotations, 1);
        assert.strictEqual(g.reuse_detected, 0);
        assert.strictEqual(g.active, true);
        const after = await tokenStatus(ctx.pool, session, p.provider);
        assert.strictEqual(Number(after.generation), Number(before.generation) + 1, 'one saved refresh');

        await waitFor(async () => { const e = await ctx.engine(); return e.in_flight === 0 && e.queued === 0; },
            { what: 'the engine to be idle after the burst' });
        Object.assign(measured, {
            e0, eRelease, e1: await ctx.engine(),
            idpCalls: (await ctx.idp.client.admin('GET', `/admin/calls?since_ms=${tRelease}`)).calls.length,
            myCalls: (await callLog(ctx.idp, p.clientId, 0)).length,
        });
        assertNoSecretsInLog([login.grant.access_token, login.grant.refresh_token, login.grant.id_token,
            first, g.refresh_token]);
    } finally {
        if (locked) await lock.release().catch(() => {});
        await Promise.all(clients.map((c) => c.end().catch(() => {})));
    }
});

test('10. engine counters after the burst: deduplicated grew, network_calls match the provider', () => {
    assert.ok(measured.e0, 'test 1 ran and measured');
    const dedup = Number(measured.e1.deduplicated) - Number(measured.e0.deduplicated);
    assert.ok(dedup >= 1, `deduplicated grew (by ${dedup})`);
    assert.strictEqual(measured.myCalls, 1, 'the provider saw one call from this client');
    // Over the window from the lock release to the idle engine (only this refresh was due).
    const calls = Number(measured.e1.network_calls) - Number(measured.eRelease.network_calls);
    assert.strictEqual(calls, measured.idpCalls,
        `network_calls delta (${calls}) equals what the provider saw (${measured.idpCalls})`);
});

test('2. 200 expired sessions, 16 callers in random orders: 200 provider calls, no reuse, all agree', async () => {
    const p = await ctx.provider();
    const stats0 = await ctx.stats();
    const t0 = Date.now();
    const callers = [];
    try {
        for (let i = 0; i < 16; i++) callers.push(await connect());
        // All 200 become visible (and due) at one commit, right before the callers start, so the
        // callers race the engine's own refreshes instead of finding them done.
        const minted = await ctx.idp.client.admin('POST', '/admin/grants', { client_id: p.clientId, subject: unique('user'), count: 200 });
        const logins = minted.grants.map((g) => ({ session: unique('sess'), grant: g }));
        await storeMany(ctx.pool, p.provider, logins.map((l) => ({
            session: l.session, access: l.grant.access_token, refresh: l.grant.refresh_token, expiresIn: 0,
            idToken: l.grant.id_token })));
        const e0 = await ctx.engine();
        const seen = await Promise.all(callers.map(async (c, k) => {
            const got = new Array(logins.length);
            for (const i of shuffledIndexes(logins.length, prng(1000 + k))) {
                got[i] = (await c.query(GET, [logins[i].session, p.provider])).rows[0].t;
            }
            return got;
        }));

        const e1 = await ctx.engine();
        assert.ok(Number(e1.requests) > Number(e0.requests), 'some callers had to wait for a refresh');
        const calls = await callLog(ctx.idp, p.clientId, t0);
        assert.strictEqual(calls.length, 200, 'one token-endpoint call per session');
        const perGrant = new Map();
        for (const c of calls) perGrant.set(c.grant_id, (perGrant.get(c.grant_id) || 0) + 1);
        assert.strictEqual(perGrant.size, 200, 'every grant was refreshed once');
        assert.ok(calls.every((c) => c.status === 200), 'every call succeeded');
        const stats1 = await ctx.stats();
        assert.strictEqual(stats1.revoked_grants - stats0.revoked_grants, 0, 'no grant revoked');
        assert.strictEqual(stats1.reuse_detected - stats0.reuse_detected, 0, 'no refresh token reused');

        const secrets = [];
        const now = (await ctx.pool.query('SELECT now() AS n')).rows[0].n;
        for (let i = 0; i < logins.length; i++) {
            const tok = seen[0][i];
            assert.ok(typeof tok === 'string' && tok.length > 0, `session ${i}: a token`);
            assert.ok(seen.every((s) => s[i] === tok), `session ${i}: all 16 callers agree`);
            assert.ok(tok !== logins[i].grant.access_token, `session ${i}: not the stored expired token`);
            const st = await tokenStatus(ctx.pool, logins[i].session, p.provider);
            assert.ok(st.expires_at > now, `session ${i}: stored expiry in the future`);
            assert.ok(await introspectActive(ctx.idp, tok, p.clientId, p.secret),
                `session ${i}: the provider says the token is active`);
            const g = await ctx.grant(logins[i].grant.grant_id);
            assert.ok(g.active && g.rotations === 1 && g.reuse_detected === 0, `session ${i}: grant intact`);
            secrets.push(tok, logins[i].grant.access_token, logins[i].grant.refresh_token,
                logins[i].grant.id_token, g.refresh_token);
        }
        assertNoSecretsInLog(secrets);
    } finally {
        await Promise.all(callers.map((c) => c.end().catch(() => {})));
    }
});
