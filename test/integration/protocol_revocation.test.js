'use strict';
// Revocation (RFC 7009) through revoke_upstream_token: the row goes in the caller's
// transaction, a 'revoked' event is NOTIFYed, and after commit the engine delivers the refresh
// token to the provider's revocation endpoint, so the IdP reports it inactive and the grant
// revoked. A provider that is down gets retries with backoff (Retry-After honoured) and a
// last_error without secrets until it accepts; a rolled-back revoke sends nothing and keeps
// the token; a provider without a revocation endpoint only loses the row.
const test = require('node:test');
const assert = require('node:assert');
const {
    setup, unique, storeLogin, tokenStatus, providerWith, introspector, listenEvents, revocationQueue,
    revokeCalls, waitFor, connect, assertNoSecretsInLog, sqlError,
} = require('./harness.js');

const GET = 'SELECT upstream_token.get_upstream_token($1, $2) AS t';
const REVOKE = 'SELECT upstream_token.revoke_upstream_token($1, $2) AS n';

let ctx;
let active;     // token -> introspection answer, asked as a separate client
let listener;   // collects upstream_token_events payloads
test.before(async () => {
    ctx = await setup({ poolSize: 5 });
    active = await introspector(ctx);
    listener = await listenEvents();
});
test.after(async () => {
    await listener.close();
    await ctx.close();
});

// A provider with (or without) the IdP's revocation endpoint.
function revocable(withEndpoint = true) {
    return providerWith(ctx, { args: withEndpoint ? { revocation_endpoint: `${ctx.idp.url}/revoke` } : {} });
}

// Waits for the 'revoked' event of one session.
function revokedEvent(session, provider) {
    return waitFor(() => listener.events.find((e) => e.event === 'revoked' && e.session === session && e.provider === provider),
        { timeoutMs: 5000, what: `the revoked event of ${session}` });
}

test('a: revoke deletes the row, NOTIFYs, and the engine revokes the refresh token at the provider', async () => {
    const p = await revocable();
    const login = await storeLogin(ctx, p, { expiresIn: 3600 });
    const since = Date.now();
    const n = (await ctx.pool.query(REVOKE, [login.session, p.provider])).rows[0].n;
    assert.strictEqual(n, 1);
    assert.strictEqual(await tokenStatus(ctx.pool, login.session, p.provider), undefined, 'row gone');
    const e = await sqlError(ctx.pool.query(GET, [login.session, p.provider]), 'get after revoke');
    assert.strictEqual(e.code, 'UT001', 'the session is gone for callers at once');
    await revokedEvent(login.session, p.provider);

    await waitFor(async () => (await revocationQueue(ctx.pool, p.provider)).length === 0,
        { timeoutMs: 15000, what: 'the revocation queue to drain' });
    assert.strictEqual((await active(login.grant.refresh_token)).active, false, 'refresh token inactive');
    assert.strictEqual((await active(login.grant.access_token)).active, false, 'its grant took the access token along');
    const g = await ctx.grant(login.grant.grant_id);
    assert.strictEqual(g.revoked, true);
    assert.strictEqual(g.reuse_detected, 0, 'revoked by /revoke, not by reuse detection');
    const calls = await revokeCalls(ctx.idp, p.clientId, since);
    assert.deepStrictEqual(calls.map((c) => [c.status, c.grant_id, c.token_kind, c.token_type_hint]),
        [[200, login.grant.grant_id, 'refresh_token', 'refresh_token']], 'one call, with the refresh token');
});

test('b: revocation endpoint down (503) for ~3 s: retried with backoff, last_error has no secret, then delivered', async () => {
    const p = await revocable();
    const login = await storeLogin(ctx, p, { expiresIn: 3600 });
    const downUntil = Date.now() + 3000;
    // The error description echoes the token and the secret: last_error must still carry neither.
    await ctx.fault({
        match: { client_id: p.clientId, endpoint: 'revoke' },
        action: { status: 503, oauth_error: 'temporarily_unavailable', error_description: `down; token ${login.grant.refresh_token} client ${p.secret}` },
        until_ms: downUntil,
    });
    const since = Date.now();
    assert.strictEqual((await ctx.pool.query(REVOKE, [login.session, p.provider])).rows[0].n, 1);
    await revokedEvent(login.session, p.provider);

    const failed = await waitFor(async () => {
        const q = await revocationQueue(ctx.pool, p.provider);
        return q.length === 1 && q[0].attempts >= 1 && q[0];
    }, { timeoutMs: 10000, what: 'a failed attempt to be recorded' });
    assert.strictEqual(failed.session, login.session);
    assert.strictEqual(failed.token_column, 'refresh_token');
    assert.ok(failed.last_error, 'last_error is set');
    assert.match(failed.last_error, /503|temporarily_unavailable/, 'last_error names the failure');
    for (const s of [login.grant.refresh_token, login.grant.access_token, p.secret]) {
        assert.ok(!failed.last_error.includes(s), 'last_error carries no secret');
    }
    assert.strictEqual((await active(login.grant.refresh_token)).active, true, 'not revoked while down');

    await waitFor(async () => (await revocationQueue(ctx.pool, p.provider)).length === 0,
        { timeoutMs: 30000, intervalMs: 200, what: 'the revocation to be delivered once the endpoint is back' });
    assert.strictEqual((await active(login.grant.refresh_token)).active, false);
    assert.strictEqual((await ctx.grant(login.grant.grant_id)).revoked, true);
    const calls = await revokeCalls(ctx.idp, p.clientId, since);
    const statuses = calls.map((c) => c.status);
    assert.strictEqual(statuses[statuses.length - 1], 200, 'the last call succeeded');
    assert.ok(statuses.slice(0, -1).every((s) => s === 503) && statuses.length >= 2, `calls ${statuses}`);
    assert.ok(calls.slice(0, -1).every((c) => c.t_ms < downUntil), 'no failing call after the window');
    // Backoff: 1 s doubling, so a 3 s outage costs a handful of calls, not a hammering.
    assert.ok(statuses.length <= 5, `${statuses.length} calls during a 3 s outage`);
    for (let i = 1; i < calls.length; i++) {
        assert.ok(calls[i].t_ms - calls[i - 1].t_ms >= 500, `retry ${i} came ${calls[i].t_ms - calls[i - 1].t_ms} ms after the previous call`);
    }
    assertNoSecretsInLog([login.grant.refresh_token, login.grant.access_token]);
});

test('b2: a Retry-After on the revocation endpoint is honoured', async () => {
    const p = await revocable();
    const login = await storeLogin(ctx, p, { expiresIn: 3600 });
    await ctx.fault({ match: { client_id: p.clientId, endpoint: 'revoke' }, action: { status: 503, retry_after: '3' }, count: 1 });
    const since = Date.now();
    assert.strictEqual((await ctx.pool.query(REVOKE, [login.session, p.provider])).rows[0].n, 1);
    await waitFor(async () => (await revocationQueue(ctx.pool, p.provider)).length === 0,
        { timeoutMs: 20000, intervalMs: 200, what: 'the revocation to be delivered' });
    const calls = await revokeCalls(ctx.idp, p.clientId, since);
    assert.deepStrictEqual(calls.map((c) => c.status), [503, 200]);
    const gap = calls[1].t_ms - calls[0].t_ms;
    assert.ok(gap >= 2900, `the retry came ${gap} ms after a Retry-After of 3 s`);
    assert.strictEqual((await ctx.grant(login.grant.grant_id)).revoked, true);
});

test('c: a rolled-back revoke sends nothing, keeps the row and the token stays active', async () => {
    const p = await revocable();
    const kept = await storeLogin(ctx, p, { expiresIn: 3600 });
    const barrier = await storeLogin(ctx, p, { expiresIn: 3600 });
    const since = Date.now();
    const c = await connect();
    try {
        await c.query('BEGIN');
        assert.strictEqual((await c.query(REVOKE, [kept.session, p.provider])).rows[0].n, 1);
        const inside = await c.query('SELECT count(*)::int AS n FROM upstream_token.token_status WHERE session = $1', [kept.session]);
        assert.strictEqual(inside.rows[0].n, 0, 'gone inside the transaction');
        await c.query('ROLLBACK');
    } finally {
        await c.end();
    }
    const st = await tokenStatus(ctx.pool, kept.session, p.provider);
    assert.ok(st && st.status === 'active', 'the row is back');
    assert.deepStrictEqual(await revocationQueue(ctx.pool, p.provider), [], 'nothing queued');

    // A committed revoke of another session of the same provider is the barrier: once it is
    // delivered (and its event seen), anything the rolled-back one had sent would show too.
    assert.strictEqual((await ctx.pool.query(REVOKE, [barrier.session, p.provider])).rows[0].n, 1);
    await revokedEvent(barrier.session, p.provider);
    await waitFor(async () => (await revocationQueue(ctx.pool, p.provider)).length === 0,
        { timeoutMs: 15000, what: 'the barrier revocation to be delivered' });
    const calls = await revokeCalls(ctx.idp, p.clientId, since);
    assert.deepStrictEqual(calls.map((x) => x.grant_id), [barrier.grant.grant_id], 'only the committed revoke was sent');
    assert.ok(!listener.events.some((e) => e.session === kept.session), 'no event for the rolled-back revoke');
    assert.strictEqual((await active(kept.grant.refresh_token)).active, true, 'refresh token still active');
    assert.strictEqual((await ctx.grant(kept.grant.grant_id)).revoked, false);
    const t = (await ctx.pool.query(GET, [kept.session, p.provider])).rows[0].t;
    assert.ok(t === kept.grant.access_token, 'the stored token is still served');
});

test('d: a provider without revocation_endpoint: row deleted, nothing queued, nothing sent', async () => {
    const p = await revocable(false);
    const login = await storeLogin(ctx, p, { expiresIn: 3600 });
    const since = Date.now();
    assert.strictEqual((await ctx.pool.query(REVOKE, [login.session, p.provider])).rows[0].n, 1);
    assert.strictEqual(await tokenStatus(ctx.pool, login.session, p.provider), undefined);
    assert.deepStrictEqual(await revocationQueue(ctx.pool, p.provider), [], 'nothing queued');
    await revokedEvent(login.session, p.provider);
    assert.deepStrictEqual(await revokeCalls(ctx.idp, p.clientId, since), []);
    assert.strictEqual((await ctx.grant(login.grant.grant_id)).revoked, false);
});

test('e: provider NULL revokes every provider of the session; only those with an endpoint are queued', async () => {
    const withEp = await revocable();
    const without = await revocable(false);
    const session = unique('sess-multi');
    const a = await storeLogin(ctx, withEp, { session, expiresIn: 3600 });
    const b = await storeLogin(ctx, without, { session, expiresIn: 3600 });
    assert.strictEqual((await ctx.pool.query(REVOKE, [session, null])).rows[0].n, 2);
    assert.strictEqual((await revocationQueue(ctx.pool, without.provider)).length, 0);
    await revokedEvent(session, withEp.provider);
    await revokedEvent(session, without.provider);
    await waitFor(async () => (await revocationQueue(ctx.pool, withEp.provider)).length === 0,
        { timeoutMs: 15000, what: 'the revocation to be delivered' });
    assert.strictEqual((await ctx.grant(a.grant.grant_id)).revoked, true);
    assert.strictEqual((await ctx.grant(b.grant.grant_id)).revoked, false);
    // Revoking an unknown session is not an error and changes nothing.
    assert.strictEqual((await ctx.pool.query(REVOKE, [session, null])).rows[0].n, 0);
});


test('f: a login without a refresh token: its access token is revoked (hint access_token)', async () => {
    const p = await revocable();
    const { grants: [g] } = await ctx.idp.client.admin('POST', '/admin/grants', { client_id: p.clientId, subject: unique('user') });
    const session = unique('sess');
    await ctx.pool.query('SELECT upstream_token.store_upstream_token($1, $2, $3, NULL, 3600)', [session, p.provider, g.access_token]);
    const since = Date.now();
    assert.strictEqual((await ctx.pool.query(REVOKE, [session, p.provider])).rows[0].n, 1);
    const q = await revocationQueue(ctx.pool, p.provider);
    assert.ok(q.length <= 1 && (q.length === 0 || q[0].token_column === 'access_token'), 'queued as an access token');
    await waitFor(async () => (await revocationQueue(ctx.pool, p.provider)).length === 0,
        { timeoutMs: 15000, what: 'the revocation to be delivered' });
    const calls = await revokeCalls(ctx.idp, p.clientId, since);
    assert.deepStrictEqual(calls.map((c) => [c.status, c.token_kind, c.token_type_hint]), [[200, 'access_token', 'access_token']]);
    assert.strictEqual((await active(g.access_token)).active, false, 'the access token is revoked');
    assert.strictEqual((await active(g.refresh_token)).active, true, 'the grant itself was not touched');
});

test('g: unsupported_token_type ends the retries (RFC 7009 2.2.1)', async () => {
    const p = await revocable();
    const login = await storeLogin(ctx, p, { expiresIn: 3600 });
    await ctx.fault({ match: { client_id: p.clientId, endpoint: 'revoke' }, action: { oauth_error: 'unsupported_token_type', status: 400 } });
    const since = Date.now();
    assert.strictEqual((await ctx.pool.query(REVOKE, [login.session, p.provider])).rows[0].n, 1);
    await waitFor(async () => (await revocationQueue(ctx.pool, p.provider)).length === 0,
        { timeoutMs: 15000, what: 'the queue row to be dropped' });
    const calls = await revokeCalls(ctx.idp, p.clientId, since);
    assert.deepStrictEqual(calls.map((c) => [c.status, c.error]), [[400, 'unsupported_token_type']], 'one call, no retry');
    assert.strictEqual((await ctx.grant(login.grant.grant_id)).revoked, false);
});

test('h: a new login stored for the same session while the revocation waits: only the old grant is revoked', async () => {
    const p = await revocable();
    const session = unique('sess-relogin');
    const old = await storeLogin(ctx, p, { session, expiresIn: 3600 });
    const fault = await ctx.fault({ match: { client_id: p.clientId, endpoint: 'revoke' }, action: { status: 503 } });
    assert.strictEqual((await ctx.pool.query(REVOKE, [session, p.provider])).rows[0].n, 1);
    await waitFor(async () => {
        const q = await revocationQueue(ctx.pool, p.provider);
        return q.length === 1 && q[0].attempts >= 1;
    }, { timeoutMs: 10000, what: 'a failed revocation attempt' });
    const fresh = await storeLogin(ctx, p, { session, expiresIn: 3600 });
    await ctx.idp.client.admin('DELETE', `/admin/faults/${fault.fault_id}`);
    await waitFor(async () => (await revocationQueue(ctx.pool, p.provider)).length === 0,
        { timeoutMs: 30000, intervalMs: 200, what: 'the revocation to be delivered' });
    assert.strictEqual((await ctx.grant(old.grant.grant_id)).revoked, true, 'the old grant is revoked');
    assert.strictEqual((await ctx.grant(fresh.grant.grant_id)).revoked, false, 'the new login is untouched');
    assert.strictEqual((await active(fresh.grant.refresh_token)).active, true);
    const t = (await ctx.pool.query(GET, [session, p.provider])).rows[0].t;
    assert.ok(t === fresh.grant.access_token, 'the new login is served');
});

// Regression test for bug P1 (.tmp/bugs-proto.md, fixed in 125af98): the refresh's answer found
// the row gone and was dropped, so the refresh token it brought back stayed live at the provider.
test('i: a revoke committed while a refresh of the row is in flight leaves no live refresh token behind', async () => {
    const p = await providerWith(ctx, {
        client: { revoke_used_noop: true },
        args: { revocation_endpoint: `${ctx.idp.url}/revoke` },
    });
    // The provider rotates at once but answers 1.5 s later: the revoke lands in that window.
    await ctx.fault({ match: { client_id: p.clientId }, action: { respond_delay_ms: 1500 }, count: 1 });
    const since = Date.now();
    const login = await storeLogin(ctx, p, { expiresIn: 0 });
    const got = ctx.pool.query(GET, [login.session, p.provider]).then((r) => r.rows[0].t, (e) => e);
    await waitFor(async () => (await ctx.grant(login.grant.grant_id)).rotations === 1,
        { timeoutMs: 10000, what: 'the provider to rotate' });
    assert.strictEqual((await ctx.pool.query(REVOKE, [login.session, p.provider])).rows[0].n, 1);
    const served = await got;
    await waitFor(async () => (await revocationQueue(ctx.pool, p.provider)).length === 0,
        { timeoutMs: 15000, what: 'the revocation queue to drain' });
    await waitFor(async () => {
        const calls = await ctx.idp.client.admin('GET', `/admin/calls?since_ms=${since}&client_id=${encodeURIComponent(p.clientId)}`);
        return calls.calls.length > 0 && calls.calls.every((c) => c.status !== null);
    }, { timeoutMs: 10000, what: 'the refresh to be answered' });
    assert.strictEqual(await tokenStatus(ctx.pool, login.session, p.provider), undefined, 'the row stays deleted');
    if (typeof served === 'string') assert.strictEqual((await active(served)).active, false, 'a token served after the revoke is dead');
    // Once both settled, nothing of this login may still work at the provider.
    await waitFor(async () => {
        const g = await ctx.grant(login.grant.grant_id);
        return g.revoked || !(await active(g.refresh_token)).active;
    }, { timeoutMs: 15000, what: 'the refresh token issued by the in-flight refresh to be revoked (bug P1)' });
    await waitFor(async () => (await revocationQueue(ctx.pool, p.provider)).length === 0,
        { timeoutMs: 15000, what: 'the revocation queue to drain' });
    assert.strictEqual(await tokenStatus(ctx.pool, login.session, p.provider), undefined, 'the row stays deleted');
});
