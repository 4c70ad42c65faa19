'use strict';
// ID-token binding (OIDC Core 12.2, I3): when a refresh returns an ID token for someone else,
// the caller gets UT005, the row is marked invalid_binding, yet the rotated tokens were saved
// first (generation advanced, the provider rotated once and saw no reuse); further gets keep
// failing with UT005 and never contact the provider again.
const test = require('node:test');
const assert = require('node:assert');
const {
    setup, storeLoginWithStatus, assertNoSecretsInLog, tokenStatus, sqlError,
} = require('./harness.js');

const GET = 'SELECT upstream_token.get_upstream_token($1, $2) AS t';

let ctx;
test.before(async () => { ctx = await setup({ poolSize: 5 }); });
test.after(async () => { await ctx.close(); });

// Stores an expired login whose next ID token carries `claims`, asks for it, and checks UT005.
async function bindingMismatch(claims) {
    const p = await ctx.provider({ idToken: true });
    await ctx.fault({ match: { client_id: p.clientId }, action: { id_token_claims: claims } });
    const e0 = await ctx.engine();
    const login = await storeLoginWithStatus(ctx, p, { expiresIn: 0 });
    assert.ok(login.grant.id_token, 'the login has a proper ID token');
    const { before } = login;

    const e = await sqlError(ctx.pool.query(GET, [login.session, p.provider]), 'get with a foreign ID token');
    assert.strictEqual(e.code, 'UT005', `invalid_binding expected, got ${e.code} ${e.message}`);

    const st = await tokenStatus(ctx.pool, login.session, p.provider);
    assert.strictEqual(st.status, 'invalid_binding');
    assert.strictEqual(Number(st.generation), Number(before.generation) + 1,
        'the new tokens were persisted before the check (generation advanced)');
    let g = await ctx.grant(login.grant.grant_id);
    assert.strictEqual(g.rotations, 1, 'the provider rotated once');
    assert.strictEqual(g.refresh_calls, 1);
    assert.strictEqual(g.reuse_detected, 0);
    const e1 = await ctx.engine();
    assert.ok(Number(e1.invalid_binding) > Number(e0.invalid_binding), 'engine_status counts it');

    // Refused from the store from now on: no provider contact.
    const again = await sqlError(ctx.pool.query(GET, [login.session, p.provider]), 'second get');
    assert.strictEqual(again.code, 'UT005');
    const creds = (await ctx.pool.query(
        'SELECT provider, access_token IS NULL AS no_token, sqlstate FROM upstream_token.get_upstream_credentials($1)',
        [login.session])).rows;
    assert.deepStrictEqual(creds, [{ provider: p.provider, no_token: true, sqlstate: 'UT005' }]);
    g = await ctx.grant(login.grant.grant_id);
    assert.strictEqual(g.refresh_calls, 1, 'no further provider call');
    assertNoSecretsInLog([login.grant.access_token, login.grant.refresh_token, login.grant.id_token,
        g.refresh_token]);
}

test('5. an ID token with a different sub: UT005, invalid_binding, rotation saved, no more calls', async () => {
    await bindingMismatch({ sub: 'someone-else' });
});

test('5b. an ID token from a different issuer is refused the same way', async () => {
    await bindingMismatch({ iss: 'https://evil.example' });
});

test('5c. an ID token for a different audience is refused the same way', async () => {
    await bindingMismatch({ aud: 'another-client' });
});
