'use strict';
// A refresh whose answer finds its row moved on (the optimistic save matches 0 rows) holds a
// rotated refresh token nobody stores: an orphan. It is revoked only when the app revoked the
// row it came from (revoke_upstream_token), even if that revocation was already delivered
// before the answer arrived; never when a newer login replaced the row (same grant or not) and
// never after delete_upstream_token (the app asked that the provider not be contacted).
// The provider answers slowly (it rotates at once, answers later) so the app's action lands
// mid-exchange; outcomes are read from the IdP's introspection, grant views and call log.
const test = require('node:test');
const assert = require('node:assert');
const {
    setup, storeLogin, tokenStatus, providerWith, introspector, revocationQueue, revokeCalls,
    waitFor, assertNoSecretsInLog,
} = require('./harness.js');

const GET = 'SELECT upstream_token.get_upstream_token($1, $2) AS t';
const STORE = 'SELECT upstream_token.store_upstream_token($1, $2, $3, $4, $5, $6)';
const REVOKE = 'SELECT upstream_token.revoke_upstream_token($1, $2) AS n';
const DELETE = 'SELECT upstream_token.delete_upstream_token($1, $2) AS n';

let ctx;
let active;  // token -> introspection answer
test.before(async () => {
    ctx = await setup({ poolSize: 5 });
    active = await introspector(ctx);
});
test.after(async () => { await ctx.close(); });

// A provider with the IdP's revocation endpoint whose next refresh rotates at once but is
// answered `delayMs` later. `client` adds IdP client quirks.
async function slowRevocable(delayMs, client = {}) {
    const p = await providerWith(ctx, { client, args: { revocation_endpoint: `${ctx.idp.url}/revoke` } });
    await ctx.fault({ match: { client_id: p.clientId }, action: { respond_delay_ms: delayMs }, count: 1 });
    return p;
}

// The engine's count of refreshes it finished for one provider (0 before its first).
async function refreshedCount(provider) {
    const r = await ctx.pool.query(
        'SELECT refreshed FROM upstream_token.provider_status WHERE provider = $1', [provider]);
    return r.rows.length ? Number(r.rows[0].refreshed) : 0;
}

// Asserts that the provider has not answered the refresh of `login` yet: whatever the test did
// so far happened mid-exchange (a slow machine fails here instead of passing vacuously).
async function answerPending(login, what) {
    const calls = await ctx.idp.client.admin('GET', `/admin/calls?grant_id=${login.grant.grant_id}`);
    assert.deepStrictEqual(calls.calls.map((c) => c.status), [null], `precondition: ${what} before the answer`);
}

// Stores a login due at once (the engine refreshes it) and waits until the provider rotated
// its refresh token; the answer is still on its way. Returns {session, grant}.
async function loginRefreshInFlight(p) {
    const login = await storeLogin(ctx, p, { expiresIn: 0 });
    await waitFor(async () => (await ctx.grant(login.grant.grant_id)).rotations === 1,
        { timeoutMs: 10000, what: 'the provider to rotate the refresh token' });
    await answerPending(login, 'the rotation');
    return login;
}

// Waits until the engine has handled the late answer and delivered whatever it queued.
async function answerHandled(p) {
    await waitFor(async () => (await refreshedCount(p.provider)) >= 1,
        { timeoutMs: 15000, what: 'the engine to handle the late answer' });
    await waitFor(async () => (await revocationQueue(ctx.pool, p.provider)).length === 0,
        { timeoutMs: 15000, what: 'the revocation queue to drain' });
}

test('a: a re-login in the SAME grant stored mid-exchange stays active; the late answer revokes nothing', async () => {
    const p = await slowRevocable(2500);
    const since = Date.now();
    const login = await loginRefreshInFlight(p);
    // The user signs in again in the same browser session: the provider continues the grant.
    const again = await ctx.idp.client.admin('POST', `/admin/grants/${login.grant.grant_id}/login`, {});
    assert.strictEqual(again.grant_id, login.grant.grant_id);
    await ctx.pool.query(STORE, [login.session, p.provider, again.access_token, again.refresh_token, 3600, again.id_token]);
    await answerPending(login, 'the re-login');
    await answerHandled(p);

    assert.deepStrictEqual(await revokeCalls(ctx.idp, p.clientId, since), [], 'nothing was sent to /revoke');
    const g = await ctx.grant(login.grant.grant_id);
    assert.strictEqual(g.revoked, false, 'the grant of the new login is not revoked');
    assert.strictEqual((await active(again.refresh_token)).active, true, 'the new login\'s refresh token is active');
    assert.strictEqual((await active(again.access_token)).active, true);
    const t = (await ctx.pool.query(GET, [login.session, p.provider])).rows[0].t;
    assert.ok(t === again.access_token, 'the new login is served');
    // And it keeps working: a forced refresh rotates the new login's refresh token.
    const forced = (await ctx.pool.query(
        'SELECT refreshed, sqlstate FROM upstream_token.refresh_upstream_token($1, $2)', [login.session, p.provider])).rows;
    assert.deepStrictEqual(forced, [{ refreshed: true, sqlstate: null }]);
    const after = await ctx.grant(login.grant.grant_id);
    assert.deepStrictEqual([after.revoked, after.reuse_detected, after.rotations], [false, 0, 2]);
    assertNoSecretsInLog([login.grant.refresh_token, again.refresh_token, again.access_token, after.refresh_token]);
});

test('b: delete_upstream_token mid-exchange: the provider is not contacted (the orphan is not revoked)', async () => {
    const p = await slowRevocable(2500);
    const since = Date.now();
    const login = await loginRefreshInFlight(p);
    assert.strictEqual((await ctx.pool.query(DELETE, [login.session, p.provider])).rows[0].n, 1);
    await answerPending(login, 'the delete');
    await answerHandled(p);

    assert.deepStrictEqual(await revokeCalls(ctx.idp, p.clientId, since), [], 'nothing was sent to /revoke');
    const g = await ctx.grant(login.grant.grant_id);
    assert.strictEqual(g.revoked, false, 'the grant is left alone, as delete_upstream_token promises');
    assert.strictEqual(await tokenStatus(ctx.pool, login.session, p.provider), undefined, 'the row stays deleted');
});

test('c: revoke mid-exchange, delivered BEFORE the answer arrives: the rotated refresh token is revoked too', async () => {
    // revoke_used_noop: revoking the consumed token does nothing (providers that forget used
    // tokens), so only revoking the rotated one ends the grant.
    const p = await slowRevocable(4000, { revoke_used_noop: true });
    const since = Date.now();
    const login = await loginRefreshInFlight(p);
    assert.strictEqual((await ctx.pool.query(REVOKE, [login.session, p.provider])).rows[0].n, 1);
    await waitFor(async () => (await revokeCalls(ctx.idp, p.clientId, since)).some((c) => c.status === 200)
        && (await revocationQueue(ctx.pool, p.provider)).length === 0,
    { timeoutMs: 10000, what: 'the queued revocation to be delivered' });
    await answerPending(login, 'the delivery of the queued revocation');
    const rotated = (await ctx.grant(login.grant.grant_id)).refresh_token;
    assert.strictEqual((await active(rotated)).active, true, 'the consumed token\'s revocation left the rotated one live');

    await answerHandled(p);
    assert.strictEqual((await active(rotated)).active, false, 'the rotated refresh token is revoked');
    assert.strictEqual((await ctx.grant(login.grant.grant_id)).revoked, true);
    assert.strictEqual(await tokenStatus(ctx.pool, login.session, p.provider), undefined, 'the row stays deleted');
    const kinds = (await revokeCalls(ctx.idp, p.clientId, since)).map((c) => [c.status, c.token_kind]);
    assert.deepStrictEqual(kinds, [[200, 'refresh_token'], [200, 'refresh_token']], 'the consumed token, then the rotated one');
});

test('d: revoke mid-exchange, then a new login (new grant): the revoked session\'s rotated token is revoked, the new login stays', async () => {
    const p = await slowRevocable(3000, { revoke_used_noop: true });
    const login = await loginRefreshInFlight(p);
    assert.strictEqual((await ctx.pool.query(REVOKE, [login.session, p.provider])).rows[0].n, 1);
    const fresh = await storeLogin(ctx, p, { session: login.session, expiresIn: 3600 });
    await answerPending(login, 'the revoke and the new login');
    await answerHandled(p);

    const rotated = (await ctx.grant(login.grant.grant_id)).refresh_token;
    await waitFor(async () => !(await active(rotated)).active,
        { timeoutMs: 15000, what: 'the revoked session\'s rotated refresh token to be revoked' });
    assert.strictEqual((await ctx.grant(fresh.grant.grant_id)).revoked, false, 'the new login\'s grant is untouched');
    assert.strictEqual((await active(fresh.grant.refresh_token)).active, true);
    const t = (await ctx.pool.query(GET, [login.session, p.provider])).rows[0].t;
    assert.ok(t === fresh.grant.access_token, 'the new login is served');
});

test('e: a re-login in the same grant replaced the row, then the app revoked THAT login: only its revocation ends the grant', async () => {
    // The first thing that happened to the refreshed row was the re-login: the orphan is not
    // revoked on its own account; the app's later revoke of the new login is delivered as usual.
    const p = await slowRevocable(3000);
    const since = Date.now();
    const login = await loginRefreshInFlight(p);
    const again = await ctx.idp.client.admin('POST', `/admin/grants/${login.grant.grant_id}/login`, {});
    await ctx.pool.query(STORE, [login.session, p.provider, again.access_token, again.refresh_token, 3600, again.id_token]);
    assert.strictEqual((await ctx.pool.query(REVOKE, [login.session, p.provider])).rows[0].n, 1);
    await answerPending(login, 'the re-login and its revoke');
    await answerHandled(p);
    const calls = await revokeCalls(ctx.idp, p.clientId, since);
    assert.strictEqual(calls.length, 1, `one revocation (the app's), got ${calls.length}`);
    assert.strictEqual((await ctx.grant(login.grant.grant_id)).revoked, true);
});

test('f: the app stores the SAME login again mid-exchange: the answer is saved over it and the session lives on', async () => {
    // A retried login callback stores the refresh token the engine has just sent: the row moved
    // on, but to the consumed credential. Dropping the answer would leave only that one (the
    // next refresh would be reuse: grant revoked); revoking it would end the grant at once.
    const p = await slowRevocable(2500);
    const since = Date.now();
    const login = await loginRefreshInFlight(p);
    await ctx.pool.query(STORE, [login.session, p.provider, login.grant.access_token, login.grant.refresh_token, 3600,
        login.grant.id_token]);
    await answerPending(login, 'the second store of the same login');
    await answerHandled(p);

    const t = (await ctx.pool.query(GET, [login.session, p.provider])).rows[0].t;
    assert.ok(t !== login.grant.access_token, 'the refreshed access token is served');
    assert.strictEqual((await active(t)).active, true);
    const forced = (await ctx.pool.query(
        'SELECT refreshed, sqlstate FROM upstream_token.refresh_upstream_token($1, $2)', [login.session, p.provider])).rows;
    assert.deepStrictEqual(forced, [{ refreshed: true, sqlstate: null }], 'the stored refresh token is the live one');
    const g = await ctx.grant(login.grant.grant_id);
    assert.deepStrictEqual([g.revoked, g.reuse_detected, g.rotations], [false, 0, 2]);
    assert.deepStrictEqual(await revokeCalls(ctx.idp, p.clientId, since), []);
});
