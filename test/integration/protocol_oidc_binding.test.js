'use strict';
// OIDC Core 12.2 binding, all claims: store_upstream_token keeps the login ID token's iss, sub,
// aud, azp and auth_time; a refreshed ID token must have the same iss and sub, the same aud
// (compared as a set), and the same azp and auth_time whenever both tokens carry them.
// A refresh that changes auth_time or azp (or the aud set) gives UT005 and status
// invalid_binding; the same claims (aud as a one-element array, or azp / auth_time left out
// of either token) are fine, and the served token is active at the provider.
const test = require('node:test');
const assert = require('node:assert');
const {
    setup, unique, storeLogin, tokenStatus, providerWith, introspector, sqlError,
} = require('./harness.js');

const GET = 'SELECT upstream_token.get_upstream_token($1, $2) AS t';

let ctx;
let introspect;  // token -> introspection answer, asked as a separate client
test.before(async () => {
    ctx = await setup({ poolSize: 5 });
    introspect = await introspector(ctx);
});
test.after(async () => { await ctx.close(); });

// The claims of a compact JWS (no verification: the test reads what it was given).
function claimsOf(jwt) {
    return JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString('utf8'));
}

// A provider whose next refresh answers with an ID token shaped by `action` (a /token fault
// of the test IdP), and a stored, expired login of it.
async function scenario(action) {
    const p = await providerWith(ctx, { client: { id_token: true } });
    if (action) await ctx.fault({ match: { client_id: p.clientId }, action, count: 1 });
    const login = await storeLogin(ctx, p, { expiresIn: 0 });
    return { p, login, claims: claimsOf(login.grant.id_token) };
}

// Expects the refresh to be accepted: a token active at the provider, status active.
async function expectAccepted({ p, login }) {
    const t = (await ctx.pool.query(GET, [login.session, p.provider])).rows[0].t;
    assert.ok(t && t !== login.grant.access_token, 'refreshed');
    assert.strictEqual((await introspect(t)).active, true);
    const st = await tokenStatus(ctx.pool, login.session, p.provider);
    assert.strictEqual(st.status, 'active');
    assert.strictEqual(Number(st.generation), 2);
}

// Expects the refresh to be refused as invalid_binding (UT005), with the rotation still saved.
async function expectRefused({ p, login }) {
    const e = await sqlError(ctx.pool.query(GET, [login.session, p.provider]), 'get with a mismatching ID token');
    assert.strictEqual(e.code, 'UT005', `${e.code} ${e.message}`);
    const st = await tokenStatus(ctx.pool, login.session, p.provider);
    assert.strictEqual(st.status, 'invalid_binding');
    const g = await ctx.grant(login.grant.grant_id);
    assert.deepStrictEqual([g.rotations, g.reuse_detected], [1, 0], 'rotated once, no reuse');
    const again = await sqlError(ctx.pool.query(GET, [login.session, p.provider]), 'second get');
    assert.strictEqual(again.code, 'UT005');
    assert.strictEqual((await ctx.grant(login.grant.grant_id)).refresh_calls, 1, 'no further provider call');
}

test('the login ID token binding keeps iss, sub, aud, azp and auth_time', async () => {
    const s = await scenario(null);
    assert.ok(s.claims.azp && s.claims.auth_time, 'the login ID token has azp and auth_time');
    const r = await ctx.pool.query('SELECT id_claims FROM upstream_token.token WHERE session = $1 AND provider = $2',
        [s.login.session, s.p.provider]);
    const kept = r.rows[0].id_claims;
    for (const k of ['iss', 'sub', 'azp', 'auth_time']) assert.deepStrictEqual(kept[k], s.claims[k], k);
    assert.deepStrictEqual([kept.aud].flat(), [s.claims.aud].flat(), 'aud');
    await expectAccepted(s);
});

test('same claims, with aud as a one-element array: accepted', async () => {
    const p = await providerWith(ctx, { client: { id_token: true } });
    await ctx.fault({ match: { client_id: p.clientId }, action: { id_token_claims: { aud: [p.clientId] } }, count: 1 });
    const login = await storeLogin(ctx, p, { expiresIn: 0 });
    await expectAccepted({ p, login });
});

test('a different auth_time: UT005 invalid_binding', async () => {
    // The fault goes in before the login is stored (the engine may refresh it at once); the
    // grant's auth_time will be "now", so an hour ago is certainly different.
    const s = await scenario({ id_token_claims: { auth_time: Math.floor(Date.now() / 1000) - 3600 } });
    assert.notStrictEqual(s.claims.auth_time, Math.floor(Date.now() / 1000) - 3600);
    await expectRefused(s);
});

test('a different azp: UT005 invalid_binding', async () => {
    await expectRefused(await scenario({ id_token_claims: { azp: `other-${unique('azp')}` } }));
});

test('a different aud set (one more audience): UT005 invalid_binding', async () => {
    const p = await providerWith(ctx, { client: { id_token: true } });
    await ctx.fault({ match: { client_id: p.clientId }, action: { id_token_claims: { aud: [p.clientId, 'another-audience'] } }, count: 1 });
    const login = await storeLogin(ctx, p, { expiresIn: 0 });
    await expectRefused({ p, login });
});

test('azp and auth_time are compared only when both tokens have them', async () => {
    await expectAccepted(await scenario({ id_token_omit: ['auth_time'] }));
    await expectAccepted(await scenario({ id_token_omit: ['azp'] }));
    // A login ID token without them (re-encoded by the test; signatures are not the point
    // here), and a refreshed one that has them: accepted as well.
    const p = await providerWith(ctx, { client: { id_token: true } });
    const { grants: [g] } = await ctx.idp.client.admin('POST', '/admin/grants', { client_id: p.clientId, subject: unique('user') });
    const [h, , sig] = g.id_token.split('.');
    const { azp, auth_time: authTime, ...rest } = claimsOf(g.id_token);
    assert.ok(azp && authTime);
    const bare = `${h}.${Buffer.from(JSON.stringify(rest)).toString('base64url')}.${sig}`;
    const session = unique('sess');
    await ctx.pool.query('SELECT upstream_token.store_upstream_token($1, $2, $3, $4, 0, $5)',
        [session, p.provider, g.access_token, g.refresh_token, bare]);
    await expectAccepted({ p, login: { session, grant: g } });
});
