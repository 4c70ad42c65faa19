'use strict';
// Provider failures map to their SQLSTATE and row state without losing a rotation:
// invalid_grant -> UT004 / reauth_required (no retry); invalid_client -> UT010; malformed or
// oversized answers, dropped connections, 429 -> UT003 with the stored refresh token still
// usable where the provider did not rotate; answers without refresh_token or expires_in are
// saved sensibly (old refresh token kept; provider's default lifetime).
const test = require('node:test');
const assert = require('node:assert');
const {
    setup, waitFor, storeLogin, storeLoginWithStatus, assertNoSecretsInLog, tokenStatus, sqlError,
    grantCalls,
} = require('./harness.js');

const GET = 'SELECT upstream_token.get_upstream_token($1, $2) AS t';

let ctx;
test.before(async () => { ctx = await setup({ poolSize: 5 }); });
test.after(async () => { await ctx.close(); });

// A provider of its own whose token endpoint applies `action`, and one expired login on it.
async function failingLogin(action, extra = {}) {
    const p = await ctx.provider();
    const { fault_id: faultId } = await ctx.fault({ match: { client_id: p.clientId }, action, ...extra });
    const login = await storeLoginWithStatus(ctx, p, { expiresIn: 0 });
    return { p, login, faultId, secrets: [login.grant.access_token, login.grant.refresh_token, login.grant.id_token] };
}

// get_upstream_token, expected to fail with `code`; returns the error.
async function getFails(s, code) {
    const e = await sqlError(ctx.pool.query(GET, [s.login.session, s.p.provider]), 'get');
    assert.strictEqual(e.code, code, `${code} expected, got ${e.code}: ${e.message}`);
    return e;
}

// Forces a refresh and checks it worked: the stored refresh token was still good.
async function forcedRefreshWorks(s) {
    const rows = (await ctx.pool.query(
        'SELECT * FROM upstream_token.refresh_upstream_token($1, $2)', [s.login.session, s.p.provider])).rows;
    assert.strictEqual(rows.length, 1);
    assert.strictEqual(rows[0].refreshed, true, `forced refresh: ${rows[0].sqlstate} ${rows[0].error}`);
    const tok = (await ctx.pool.query(GET, [s.login.session, s.p.provider])).rows[0].t;
    s.secrets.push(tok);
    return tok;
}

// The grant at the IdP: no reuse, not revoked; returns it (its current refresh token noted).
async function grantIntact(s) {
    const g = await ctx.grant(s.login.grant.grant_id);
    assert.strictEqual(g.reuse_detected, 0, 'no refresh token reused');
    assert.strictEqual(g.active, true, 'grant still active');
    s.secrets.push(g.refresh_token);
    return g;
}

test('7a. invalid_grant -> UT004, status reauth_required, no retry', async () => {
    const s = await failingLogin({ oauth_error: 'invalid_grant' });
    await getFails(s, 'UT004');
    const st = await tokenStatus(ctx.pool, s.login.session, s.p.provider);
    assert.strictEqual(st.status, 'reauth_required');
    assert.match(st.last_error, /invalid_grant/);
    const calls = (await ctx.grant(s.login.grant.grant_id)).refresh_calls;
    assert.strictEqual(calls, 1);
    await getFails(s, 'UT004');
    const forced = (await ctx.pool.query(
        'SELECT sqlstate FROM upstream_token.refresh_upstream_token($1, $2)', [s.login.session, s.p.provider])).rows;
    assert.deepStrictEqual(forced, [{ sqlstate: 'UT004' }], 'a forced refresh is refused too');
    assert.strictEqual((await ctx.grant(s.login.grant.grant_id)).refresh_calls, calls, 'the provider was not called again');
    assertNoSecretsInLog(s.secrets);
});

// Providers that say "sign in again" otherwise: Auth0 and Atlassian (403 invalid_grant), Entra
// ID (interaction_required), GitHub (200, bad_refresh_token), Slack (200, invalid_refresh_token).
test('7a2. the other "sign in again" answers -> UT004, status reauth_required, no retry', async () => {
    for (const action of [{ oauth_error: 'invalid_grant', status: 403 }, { oauth_error: 'interaction_required' },
        { oauth_error: 'bad_refresh_token', status: 200 }, { oauth_error: 'invalid_refresh_token', status: 200 }]) {
        const s = await failingLogin(action);
        await getFails(s, 'UT004');
        const st = await tokenStatus(ctx.pool, s.login.session, s.p.provider);
        assert.strictEqual(st.status, 'reauth_required', JSON.stringify(action));
        assert.ok(st.last_error.includes(action.oauth_error), `${st.last_error} names ${action.oauth_error}`);
        await getFails(s, 'UT004');
        assert.strictEqual((await ctx.grant(s.login.grant.grant_id)).refresh_calls, 1, `${JSON.stringify(action)}: one call, no retry`);
        assertNoSecretsInLog(s.secrets);
    }
});

// Fails while bug B1 (.tmp/bugs-engine.md) stands: during the 60 s no-hammering window the
// engine answers every caller UT003 (transient) instead of UT010.
test('7b. invalid_client -> UT010, and the provider is not hammered', async () => {
    const s = await failingLogin({ oauth_error: 'invalid_client' });
    await getFails(s, 'UT010');
    const st = await tokenStatus(ctx.pool, s.login.session, s.p.provider);
    assert.strictEqual(st.status, 'active', 'the token itself is not given up');
    assert.match(st.last_error, /invalid_client/);
    const calls = (await ctx.grant(s.login.grant.grant_id)).refresh_calls;
    assert.strictEqual(calls, 1);
    await getFails(s, 'UT010');
    assert.strictEqual((await ctx.grant(s.login.grant.grant_id)).refresh_calls, calls, 'no second call');
    assertNoSecretsInLog(s.secrets);
});

test('7c. malformed JSON -> UT003; nothing rotated, the stored refresh token still works', async () => {
    const s = await failingLogin({ malformed_json: true });
    await getFails(s, 'UT003');
    let g = await grantIntact(s);
    assert.strictEqual(g.rotations, 0, 'the IdP did not rotate');
    await ctx.idp.client.admin('DELETE', `/admin/faults/${s.faultId}`);
    const tok = await forcedRefreshWorks(s);
    assert.ok(tok !== s.login.grant.access_token);
    g = await grantIntact(s);
    assert.strictEqual(g.rotations, 1);
    assertNoSecretsInLog(s.secrets);
});

test('7d. an oversized answer (2 MB, above the 1 MiB cap) -> UT003', async () => {
    const s = await failingLogin({ oversized_body_bytes: 2000000 });
    await getFails(s, 'UT003');
    const st = await tokenStatus(ctx.pool, s.login.session, s.p.provider);
    assert.strictEqual(Number(st.generation), Number(s.login.before.generation), 'nothing saved');
    assert.ok(st.next_attempt_at !== null, 'backoff planned');
    assertNoSecretsInLog(s.secrets);
});

test('7e. an answer without refresh_token keeps the old one; a later refresh works', async () => {
    const s = await failingLogin({ omit: ['refresh_token'] });
    const tok = (await ctx.pool.query(GET, [s.login.session, s.p.provider])).rows[0].t;
    s.secrets.push(tok);
    assert.ok(tok && tok !== s.login.grant.access_token, 'a new access token');
    const st = await tokenStatus(ctx.pool, s.login.session, s.p.provider);
    assert.strictEqual(st.has_refresh_token, true, 'the old refresh token is kept');
    let g = await grantIntact(s);
    assert.strictEqual(g.rotations, 0);
    await ctx.idp.client.admin('DELETE', `/admin/faults/${s.faultId}`);
    const tok2 = await forcedRefreshWorks(s);
    assert.ok(tok2 !== tok);
    g = await grantIntact(s);
    assert.strictEqual(g.rotations, 1, 'the kept token was accepted and rotated');
    assertNoSecretsInLog(s.secrets);
});

test('7f. an answer without expires_in gets the provider default lifetime (1 hour)', async () => {
    const p = await ctx.provider();
    await ctx.fault({ match: { client_id: p.clientId }, action: { omit: ['expires_in'] } });
    const t0 = (await ctx.pool.query('SELECT now() AS n')).rows[0].n;
    const login = await storeLogin(ctx, p, { expiresIn: 0 });
    const tok = (await ctx.pool.query(GET, [login.session, p.provider])).rows[0].t;
    const t1 = (await ctx.pool.query('SELECT clock_timestamp() AS n')).rows[0].n;
    assert.ok(tok && tok !== login.grant.access_token);
    const st = await tokenStatus(ctx.pool, login.session, p.provider);
    const hour = 3600 * 1000;
    const skew = 1000;  // the engine allows one second for providers that truncate their clock
    assert.ok(st.expires_at.getTime() >= t0.getTime() + hour - skew && st.expires_at.getTime() <= t1.getTime() + hour,
        'expires_at is one hour after the refresh was sent');
    assertNoSecretsInLog([login.grant.access_token, login.grant.refresh_token, login.grant.id_token, tok]);
});

test('7g. a connection dropped before the answer -> UT003; a later retry works', async () => {
    const s = await failingLogin({ drop: 'before' });
    await getFails(s, 'UT003');
    let g = await grantIntact(s);
    assert.strictEqual(g.rotations, 0);
    await ctx.idp.client.admin('DELETE', `/admin/faults/${s.faultId}`);
    let tok;
    await waitFor(async () => {
        tok = (await ctx.pool.query(GET, [s.login.session, s.p.provider])).rows[0].t;
        return true;
    }, { what: 'a retry after the backoff to succeed' });
    s.secrets.push(tok);
    assert.ok(tok !== s.login.grant.access_token);
    g = await grantIntact(s);
    assert.strictEqual(g.rotations, 1);
    assertNoSecretsInLog(s.secrets);
});

test('7h. 429 with Retry-After: 3 -> UT003 and the next attempt no sooner than 3 s later', async () => {
    const s = await failingLogin({ status: 429, retry_after: '3' });
    await getFails(s, 'UT003');
    const calls = await grantCalls(ctx.idp, s.login.grant.grant_id, 0);
    assert.strictEqual(calls.length, 1);
    assert.strictEqual(calls[0].status, 429);
    const st = await tokenStatus(ctx.pool, s.login.session, s.p.provider);
    assert.ok(st.next_attempt_at !== null, 'a next attempt is planned');
    const wait = st.next_attempt_at.getTime() - calls[0].t_ms;
    // max(backoff of a first failure (<= 1 s), Retry-After 3 s) after the answer arrived.
    assert.ok(wait >= 3000 && wait < 4000, `next attempt ${wait} ms after the call (Retry-After 3 s)`);
    await getFails(s, 'UT003');
    assert.strictEqual((await grantCalls(ctx.idp, s.login.grant.grant_id, 0)).length, 1,
        'no call before Retry-After has passed');
    await grantIntact(s);
    assertNoSecretsInLog(s.secrets);
});
