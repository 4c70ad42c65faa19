'use strict';
// Client credentials and RFC 8693 token exchange against the project's test IdP: the exchange
// uses the session's own access token as subject token, sends audience and scope, is cached
// per (session, provider, audience, scope), single-flight, renewed before expiry, and leaves
// with the session; a refused grant is not asked again inside its backoff.
const test = require('node:test');
const assert = require('node:assert');
const { setup, unique, waitFor, sqlError, providerWith, storeLogin, callLog } = require('./harness.js');

const EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';


// What the IdP knows about an access token it issued.
async function lookup(ctx, token) {
    return (await ctx.idp.client.admin('POST', '/admin/lookup', { access_tokens: [token] })).access_tokens[0];
}

// The IdP's /token calls of one grant type by one client.
async function grantCallsOf(ctx, clientId, grantType, sinceMs) {
    return (await callLog(ctx.idp, clientId, sinceMs)).filter((c) => c.grant_type === grantType);
}

test('client credentials and token exchange against the test IdP', async (t) => {
    const ctx = await setup({ poolSize: 30 });
    t.after(() => ctx.close());
    const p = await providerWith(ctx, {
        client: { access_ttl: 3600, exchange_access_ttl: 6, audiences: ['https://api.example', 'https://other.example'] },
        args: { refresh_threshold: '3 seconds' },
    });

    await t.test('exchange: the session\'s token as subject, cached and single-flight', async () => {
        const login = await storeLogin(ctx, p, { expiresIn: 3600 });
        const since = Date.now();
        const answers = await Promise.all(Array.from({ length: 20 }, () => ctx.pool.query(
            'SELECT upstream_token.exchange_token($1, $2, $3, $4) AS t',
            [login.session, p.provider, 'https://api.example', 'read'])));
        const tokens = new Set(answers.map((r) => r.rows[0].t));
        assert.strictEqual(tokens.size, 1, 'every caller got the same exchanged token');
        const calls = await grantCallsOf(ctx, p.clientId, EXCHANGE, since);
        assert.strictEqual(calls.length, 1, 'one exchange for 20 callers');
        assert.strictEqual(calls[0].audience, 'https://api.example');
        assert.strictEqual(calls[0].scope, 'read');
        assert.strictEqual(calls[0].subject_grant_id, login.grant.grant_id, 'the session\'s own token was exchanged');
        assert.strictEqual(calls[0].subject_token_kind, 'access_token');
        const [tok] = tokens;
        const info = await lookup(ctx, tok);
        assert.strictEqual(info.kind, 'token_exchange');
        assert.strictEqual(info.audience, 'https://api.example');
        assert.strictEqual(info.exchanged_from.grant_id, login.grant.grant_id);

        const again = (await ctx.pool.query('SELECT upstream_token.exchange_token($1, $2, $3, $4) AS t',
            [login.session, p.provider, 'https://api.example', 'read'])).rows[0].t;
        assert.strictEqual(again, tok, 'served from the cache');
        const other = (await ctx.pool.query('SELECT upstream_token.exchange_token($1, $2, $3) AS t',
            [login.session, p.provider, 'https://other.example'])).rows[0].t;
        assert.notStrictEqual(other, tok, 'another audience, another token');
        assert.strictEqual((await lookup(ctx, other)).audience, 'https://other.example');
        assert.strictEqual((await grantCallsOf(ctx, p.clientId, EXCHANGE, since)).length, 2);

        // Renewed by the engine before it expires (6 s tokens, 3 s threshold): never served expired.
        let renewed;
        await waitFor(async () => {
            renewed = (await ctx.pool.query('SELECT upstream_token.exchange_token($1, $2, $3, $4) AS t',
                [login.session, p.provider, 'https://api.example', 'read'])).rows[0].t;
            const i = await lookup(ctx, renewed);
            assert.ok(i.active && i.exp_ms > Date.now(), 'an active, unexpired token');
            return renewed !== tok;
        }, { timeoutMs: 20000, intervalMs: 200, what: 'a renewed exchanged token' });

        // The exchanged tokens leave with the session.
        const before = await ctx.pool.query(
            `SELECT count(*)::int AS n FROM upstream_token.token_status
              WHERE subject_session = $1 AND grant_type = 'token_exchange'`, [login.session]);
        assert.strictEqual(before.rows[0].n, 2);
        await ctx.pool.query('SELECT upstream_token.revoke_upstream_token($1)', [login.session]);
        const after = await ctx.pool.query(
            'SELECT count(*)::int AS n FROM upstream_token.token WHERE subject_session = $1', [login.session]);
        assert.strictEqual(after.rows[0].n, 0);
    });

    await t.test('a new login of the session is never served the previous user\'s exchanged token', async () => {
        const alice = await storeLogin(ctx, p, { expiresIn: 3600, subject: 'alice' });
        const forAlice = (await ctx.pool.query('SELECT upstream_token.exchange_token($1, $2, $3) AS t',
            [alice.session, p.provider, 'https://api.example'])).rows[0].t;
        assert.strictEqual((await lookup(ctx, forAlice)).subject, 'alice');
        // Bob signs in to the same application session.
        const bob = await storeLogin(ctx, p, { session: alice.session, expiresIn: 3600, subject: 'bob' });
        const forBob = (await ctx.pool.query('SELECT upstream_token.exchange_token($1, $2, $3) AS t',
            [bob.session, p.provider, 'https://api.example'])).rows[0].t;
        assert.notStrictEqual(forBob, forAlice);
        const info = await lookup(ctx, forBob);
        assert.strictEqual(info.subject, 'bob', 'exchanged from bob\'s token');
        assert.strictEqual(info.exchanged_from.grant_id, bob.grant.grant_id);
    });

    await t.test('exchange needs the session\'s token; a refused audience is not asked again at once', async () => {
        const none = await sqlError(ctx.pool.query('SELECT upstream_token.exchange_token($1, $2, $3)',
            [unique('nobody'), p.provider, 'https://api.example']), 'an exchange for an unknown session');
        assert.strictEqual(none.code, 'UT001');
        const login = await storeLogin(ctx, p, { expiresIn: 3600 });
        const since = Date.now();
        const refused = await sqlError(ctx.pool.query('SELECT upstream_token.exchange_token($1, $2, $3)',
            [login.session, p.provider, 'https://not-allowed.example']), 'an exchange for a refused audience');
        assert.strictEqual(refused.code, 'UT003');
        assert.match(refused.message, /invalid_target/);
        const again = await sqlError(ctx.pool.query('SELECT upstream_token.exchange_token($1, $2, $3)',
            [login.session, p.provider, 'https://not-allowed.example']), 'the same exchange again');
        assert.strictEqual(again.code, 'UT003');
        assert.strictEqual((await grantCallsOf(ctx, p.clientId, EXCHANGE, since)).length, 1,
            'the second call was answered from the backoff, not sent');
    });

    await t.test('client credentials: scope and audience sent, token cached', async () => {
        const since = Date.now();
        const tok = (await ctx.pool.query('SELECT upstream_token.get_client_token($1, $2, $3) AS t',
            [p.provider, 'reports:read', 'https://api.example'])).rows[0].t;
        const info = await lookup(ctx, tok);
        assert.strictEqual(info.kind, 'client_credentials');
        assert.strictEqual(info.subject, p.clientId);
        assert.strictEqual(info.audience, 'https://api.example');
        const again = (await ctx.pool.query('SELECT upstream_token.get_client_token($1, $2, $3) AS t',
            [p.provider, 'reports:read', 'https://api.example'])).rows[0].t;
        assert.strictEqual(again, tok);
        const calls = await grantCallsOf(ctx, p.clientId, 'client_credentials', since);
        assert.strictEqual(calls.length, 1);
        assert.strictEqual(calls[0].scope, 'reports:read');
        assert.strictEqual(calls[0].audience, 'https://api.example');
        assert.ok(!(await ctx.pool.query(
            'SELECT json_agg(s)::text AS v FROM upstream_token.token_status s')).rows[0].v.includes(tok),
            'the token is not in token_status');
    });

    await t.test('derived session keys are refused as application sessions', async () => {
        const e = await sqlError(ctx.pool.query(
            'SELECT upstream_token.store_upstream_token($1, $2, $3, $4, $5)',
            ['\x01cc:abc', p.provider, 'a', 'r', 60]), 'a derived key as a session');
        assert.strictEqual(e.code, '22023');
    });
});
