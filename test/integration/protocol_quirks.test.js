'use strict';
// Provider quirks in token responses, each a mode of the test IdP's client: no expires_in
// (the provider's default_lifetime applies and the engine refreshes before it runs out), no
// rotated refresh token (the old one is kept and keeps working), refresh_token_expires_in /
// refresh_expires_in (stored as refresh_expires_at; once past, the row becomes 'expired'),
// token_type in any case, a narrowed scope (saved), 8 KB access tokens (exact round trip), and
// plain rotation with reuse detection (no reuse ever seen). For every quirk, every token
// get_upstream_token returns is active at the provider (RFC 7662 introspection).
const { describe, test, before, after } = require('node:test');
const assert = require('node:assert');
const {
    setup, storeLogin, tokenStatus, providerWith, introspector, waitFor, assertNoSecretsInLog,
} = require('./harness.js');

const GET = 'SELECT upstream_token.get_upstream_token($1, $2) AS t';
const FORCE = 'SELECT * FROM upstream_token.refresh_upstream_token($1, $2)';

let ctx;
let introspect;  // token -> introspection answer, asked as a separate client
before(async () => {
    ctx = await setup({ poolSize: 12 });
    introspect = await introspector(ctx);
});
after(async () => { await ctx.close(); });

// get_upstream_token, checking the token it returns is active at the provider right now.
async function getActive(p, session, what = 'the token') {
    const t = (await ctx.pool.query(GET, [session, p.provider])).rows[0].t;
    assert.ok(t, `${what}: a token`);
    const info = await introspect(t);
    assert.strictEqual(info.active, true, `${what}: served token is active at the provider`);
    assert.strictEqual(info.token_type, 'access_token');
    return t;
}

// Forces a refresh and checks it succeeded.
async function forceRefresh(p, session) {
    const r = (await ctx.pool.query(FORCE, [session, p.provider])).rows;
    assert.strictEqual(r.length, 1);
    assert.strictEqual(r[0].refreshed, true, `forced refresh: ${r[0].sqlstate} ${r[0].error}`);
}

// The stored row's columns that are not secrets (read as superuser).
async function row(p, session) {
    const r = await ctx.pool.query(
        `SELECT scope, token_type, status, generation, expires_at, refresh_expires_at, refreshed_at,
                refresh_token IS NOT NULL AS has_refresh
           FROM upstream_token.token WHERE session = $1 AND provider = $2`, [session, p.provider]);
    return r.rows[0];
}

// Seconds between two timestamps.
function secs(a, b) { return (a.getTime() - b.getTime()) / 1000; }

describe('provider quirks', { concurrency: true }, () => {
    test('no_expires_in: expires_at = now + default_lifetime (45 s), refreshed before it runs out', async () => {
        const p = await providerWith(ctx, {
            client: { no_expires_in: true, access_ttl: 45 },
            args: { default_lifetime: '45 seconds', refresh_threshold: '40 seconds' },
        });
        const login = await storeLogin(ctx, p, { expiresIn: 0 });
        const t1 = await getActive(p, login.session, 'first refresh');
        const r1 = await row(p, login.session);
        const lifetime = secs(r1.expires_at, r1.refreshed_at);
        assert.ok(lifetime > 40 && lifetime <= 46, `expires_at is ${lifetime} s after the refresh`);
        // The engine refreshes on its own inside the 40 s window, i.e. before the 45 s are up;
        // meanwhile every token served is active.
        const bad = [];  // waitFor retries on a throw, so failures are collected, not thrown
        const r2 = await waitFor(async () => {
            await getActive(p, login.session, 'while waiting for the proactive refresh').catch((e) => bad.push(e.message));
            const r = await row(p, login.session);
            return Number(r.generation) > Number(r1.generation) && r;
        }, { timeoutMs: 45000, intervalMs: 1000, what: 'the proactive refresh' });
        assert.deepStrictEqual(bad, [], 'every token served meanwhile was active');
        assert.ok(r2.refreshed_at < r1.expires_at, 'refreshed before the default lifetime ran out');
        const t2 = await getActive(p, login.session, 'after the proactive refresh');
        assert.ok(t2 !== t1, 'a new access token');
        const g = await ctx.grant(login.grant.grant_id);
        assert.strictEqual(g.reuse_detected, 0);
        assertNoSecretsInLog([t1, t2, login.grant.refresh_token]);
    });

    test('no_rotation: no refresh_token in the answer keeps the old one, which keeps working', async () => {
        const p = await providerWith(ctx, { client: { no_rotation: true } });
        const login = await storeLogin(ctx, p, { expiresIn: 0 });
        const t1 = await getActive(p, login.session, 'first refresh');
        const r1 = await row(p, login.session);
        assert.strictEqual(r1.has_refresh, true, 'the refresh token is kept');
        await forceRefresh(p, login.session);
        const t2 = await getActive(p, login.session, 'second refresh');
        assert.ok(t2 !== t1, 'a new access token');
        const g = await ctx.grant(login.grant.grant_id);
        assert.deepStrictEqual([g.refresh_calls, g.rotations, g.reuse_detected, g.revoked], [2, 0, 0, false]);
        assert.ok(g.refresh_token === login.grant.refresh_token, 'the original refresh token is still current');
        assert.strictEqual((await introspect(login.grant.refresh_token)).active, true);
        assert.strictEqual((await row(p, login.session)).status, 'active');
    });

    for (const field of ['refresh_token_expires_in', 'refresh_expires_in']) {
        test(`${field}: stored as refresh_expires_at; once past, the row becomes 'expired'`, async () => {
            const p = await providerWith(ctx, { client: { refresh_token_expires_in: 3, refresh_expires_field: field } });
            const login = await storeLogin(ctx, p, { expiresIn: 0 });
            const t1 = await getActive(p, login.session, 'first refresh');
            const r1 = await row(p, login.session);
            assert.ok(r1.refresh_expires_at, 'refresh_expires_at is stored');
            const left = secs(r1.refresh_expires_at, r1.refreshed_at);
            assert.ok(left > 1 && left <= 3.5, `refresh_expires_at is ${left} s after the refresh`);
            await waitFor(async () => (await ctx.pool.query(
                'SELECT refresh_expires_at < now() AS past FROM upstream_token.token WHERE session = $1 AND provider = $2',
                [login.session, p.provider])).rows[0].past, { timeoutMs: 10000, what: 'refresh_expires_at to pass' });
            // The next attempt finds the refresh token at its end: no request, status 'expired'.
            const r = (await ctx.pool.query(FORCE, [login.session, p.provider])).rows[0];
            assert.strictEqual(r.refreshed, false);
            assert.strictEqual(r.sqlstate, 'UT004', `${r.sqlstate} ${r.error}`);
            const st = await waitFor(async () => {
                const s = await tokenStatus(ctx.pool, login.session, p.provider);
                return s.status !== 'active' && s;
            }, { timeoutMs: 10000, what: 'the status to change' });
            assert.strictEqual(st.status, 'expired');
            const g = await ctx.grant(login.grant.grant_id);
            assert.strictEqual(g.refresh_calls, 1, 'the expired refresh token was not sent');
            // The access token itself is still valid: it may be served, and then it is active.
            const again = await ctx.pool.query(GET, [login.session, p.provider]).then((x) => x.rows[0].t, (e) => e);
            if (again instanceof Error) assert.strictEqual(again.code, 'UT004', again.message);
            else {
                assert.ok(again === t1, 'the stored access token is served');
                assert.strictEqual((await introspect(again)).active, true);
            }
        });
    }

    for (const tt of ['bearer', 'BEARER']) {
        test(`token_type_case "${tt}" is accepted`, async () => {
            const p = await providerWith(ctx, { client: { token_type_case: tt } });
            const login = await storeLogin(ctx, p, { expiresIn: 0 });
            await getActive(p, login.session);
            const r = await row(p, login.session);
            assert.strictEqual(r.status, 'active');
            assert.strictEqual(Number(r.generation), 2, 'the refresh was saved');
            assert.strictEqual(r.token_type.toLowerCase(), 'bearer');
            assert.strictEqual((await ctx.grant(login.grant.grant_id)).rotations, 1);
        });
    }

    test('narrow_scope: the narrowed scope of the answer is saved', async () => {
        const p = await providerWith(ctx, { client: { narrow_scope: 'openid' }, args: { scope: 'openid offline_access' } });
        const login = await storeLogin(ctx, p, { expiresIn: 0 });
        await getActive(p, login.session);
        const r = await row(p, login.session);
        assert.strictEqual(r.scope, 'openid');
        assert.strictEqual(Number(r.generation), 2);
    });

    test('big_access_token: 8 KB access tokens round-trip exactly', async () => {
        const p = await providerWith(ctx, { client: { big_access_token: true } });
        const login = await storeLogin(ctx, p, { expiresIn: 3600 });
        assert.ok(login.grant.access_token.length >= 8000, `minted ${login.grant.access_token.length} chars`);
        const stored = await getActive(p, login.session, 'stored big token');
        assert.ok(stored === login.grant.access_token, 'what was stored comes back byte for byte');
        await forceRefresh(p, login.session);
        const refreshed = await getActive(p, login.session, 'refreshed big token');
        assert.ok(refreshed.length >= 8000, `refreshed token has ${refreshed.length} chars`);
        assert.ok(refreshed !== stored, 'a new big token');
        // The IdP finds the token by a digest of all its bytes: active means exact.
        assert.strictEqual((await introspect(refreshed)).active, true);
    });

    test('rotation with reuse detection: forced refreshes never present a used refresh token', async () => {
        const p = await providerWith(ctx, {});
        const login = await storeLogin(ctx, p, { expiresIn: 0 });
        const seen = [await getActive(p, login.session, 'first refresh')];
        for (let i = 0; i < 2; i++) {
            await forceRefresh(p, login.session);
            seen.push(await getActive(p, login.session, `forced refresh ${i + 1}`));
        }
        assert.strictEqual(new Set(seen).size, 3);
        const g = await ctx.grant(login.grant.grant_id);
        assert.deepStrictEqual([g.refresh_calls, g.rotations, g.reuse_detected, g.revoked, g.active], [3, 3, 0, false, true]);
        assert.strictEqual((await introspect(g.refresh_token)).active, true, 'the current refresh token is live');
    });
});
