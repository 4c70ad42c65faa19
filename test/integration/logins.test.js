'use strict';
// The engine does the login itself, against a real OpenID Connect provider (oidc-provider v9):
// an authorization-code + PKCE login driven headlessly through the provider's pages and then
// refreshed; replayed, unknown, expired and mixed-up (RFC 9207 iss) states refused without a
// redemption; a device-flow login approved (and one denied) headlessly; client credentials
// cached and single-flight. The application role runs every call; no secret reaches the log,
// a view or an event; the provider revokes no grant.
const test = require('node:test');
const assert = require('node:assert');
const { setup, connect, CERT_DIR, unique, waitFor, sqlError, assertNoSecretsInLog, listenEvents } =
    require('./harness.js');
const { startOidcServer, DEVICE_CODE_GRANT } = require('./oidc_server.js');

const ACCESS_TTL_S = 5;
const THRESHOLD_S = 2;

// The query parameters of a URL as an object.
function queryOf(url) {
    return Object.fromEntries(new URL(url).searchParams.entries());
}

// Claims of a JWT, unverified (only to compare with what the provider said).
function jwtClaims(jwt) {
    return JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString('utf8'));
}

test('logins driven by the engine against oidc-provider', async (t) => {
    const ctx = await setup({ poolSize: 30 });
    t.after(() => ctx.close());
    const srv = await startOidcServer({ certDir: CERT_DIR, accessTtl: ACCESS_TTL_S,
        clientCredentialsTtl: ACCESS_TTL_S });
    t.after(() => srv.stop());
    const provider = unique('login').replace(/[^A-Za-z0-9_.:-]/g, '_').slice(0, 60);
    await ctx.pool.query(
        `SELECT upstream_token.register_provider_from_issuer(name => $1, issuer => $2,
                client_id => $3, client_secret => $4, refresh_threshold => $5::interval)`,
        [provider, srv.issuer, srv.clientId, srv.clientSecret, `${THRESHOLD_S} seconds`]);
    t.after(() => ctx.pool.query('SELECT upstream_token.drop_provider($1, cascade => true)', [provider])
        .catch(() => {}));

    // Every call below runs as the application's role, which holds only the client grant.
    const appRole = unique('ut_login_app').replace(/[^a-z0-9_]/g, '_');
    await ctx.pool.query(`CREATE ROLE ${appRole} LOGIN IN ROLE upstream_token_client`);
    const app = await connect({ user: appRole });
    t.after(async () => {
        await app.end().catch(() => {});
        await ctx.pool.query(`DROP ROLE IF EXISTS ${appRole}`).catch(() => {});
    });
    const events = await listenEvents();
    t.after(() => events.close());
    const secrets = [];  // every state, code, nonce and token seen: none may reach the log

    // Begins a login as the app and drives the browser part; returns {session, url, redirect}.
    async function browserLogin(account, scope = 'openid offline_access') {
        const session = unique('web');
        const r = await app.query('SELECT upstream_token.begin_login($1, $2, $3, $4, $5) AS url',
            [session, provider, srv.redirectUri, scope, JSON.stringify({ prompt: 'consent' })]);
        const url = r.rows[0].url;
        const redirect = await srv.authorize(url, { account });
        assert.ok(redirect.code, `the provider redirected without a code: ${redirect.error}`);
        secrets.push(redirect.state, redirect.code, queryOf(url).nonce);
        return { session, url, redirect };
    }

    await t.test('authorization code + PKCE: login, then refreshes', async () => {
        const grantsBefore = srv.stats.authorizationCodeGrants;
        const { session, url, redirect } = await browserLogin('alice');
        const q = queryOf(url);
        assert.strictEqual(q.response_type, 'code');
        assert.strictEqual(q.code_challenge_method, 'S256');
        assert.match(q.code_challenge, /^[A-Za-z0-9_-]{43}$/);
        assert.ok(q.state.length >= 43 && q.nonce.length >= 32, 'state and nonce are long random values');
        assert.strictEqual(redirect.state, q.state);
        assert.strictEqual(redirect.iss, srv.issuer);

        const done = await app.query('SELECT * FROM upstream_token.complete_login($1, $2, $3)',
            [redirect.state, redirect.code, redirect.iss]);
        assert.strictEqual(done.rows.length, 1);
        assert.strictEqual(done.rows[0].session, session);
        assert.strictEqual(done.rows[0].provider, provider);
        assert.strictEqual(done.rows[0].subject, 'alice');
        assert.ok(done.rows[0].expires_at > new Date(), 'a fresh access token');
        assert.strictEqual(srv.stats.authorizationCodeGrants, grantsBefore + 1, 'one redemption');
        await waitFor(() => events.events.some((e) => e.session === session && e.event === 'login_completed'),
            { what: 'login_completed event' });

        const first = (await app.query('SELECT upstream_token.get_upstream_token($1, $2) AS t',
            [session, provider])).rows[0].t;
        const info = await srv.accessTokenInfo(first);
        assert.ok(info && info.accountId === 'alice', 'the access token is the provider\'s, for alice');
        const st = (await ctx.pool.query(
            'SELECT has_refresh_token, subject, status FROM upstream_token.token_status WHERE session = $1',
            [session])).rows[0];
        assert.deepStrictEqual(st, { has_refresh_token: true, subject: 'alice', status: 'active' });
        secrets.push(first);

        // The engine plans the login's first refresh itself: nobody reads the token meanwhile.
        const refreshesBefore = srv.stats.refreshGrants;
        await waitFor(() => srv.stats.refreshGrants > refreshesBefore,
            { timeoutMs: 15000, what: 'a proactive refresh of the new login' });
        // Past the access token's lifetime the caller gets the refreshed token.
        let later;
        await waitFor(async () => {
            later = (await app.query('SELECT upstream_token.get_upstream_token($1, $2) AS t',
                [session, provider])).rows[0].t;
            return later !== first;
        }, { timeoutMs: 20000, intervalMs: 250, what: 'a refreshed access token' });
        secrets.push(later);
        assert.ok(srv.stats.refreshGrants > refreshesBefore, 'the provider saw a refresh');
        const laterInfo = await srv.accessTokenInfo(later);
        assert.strictEqual(laterInfo.grantId, info.grantId, 'the same grant, refreshed');
    });

    await t.test('a replayed, unknown or expired state redeems nothing', async () => {
        const { redirect } = await browserLogin('bob');
        await app.query('SELECT * FROM upstream_token.complete_login($1, $2)', [redirect.state, redirect.code]);
        const grants = srv.stats.authorizationCodeGrants;
        const replay = await sqlError(app.query('SELECT * FROM upstream_token.complete_login($1, $2)',
            [redirect.state, redirect.code]), 'a replayed state');
        assert.strictEqual(replay.code, 'UT013');
        const unknown = await sqlError(app.query('SELECT * FROM upstream_token.complete_login($1, $2)',
            ['not-a-state-we-issued', redirect.code]), 'a foreign state');
        assert.strictEqual(unknown.code, 'UT013');

        const late = await browserLogin('carol');
        await ctx.pool.query(
            `UPDATE upstream_token.login SET expires_at = now() - interval '1 second'
              WHERE session = $1`, [late.session]);
        const expired = await sqlError(app.query('SELECT * FROM upstream_token.complete_login($1, $2)',
            [late.redirect.state, late.redirect.code]), 'an expired state');
        assert.strictEqual(expired.code, 'UT013');
        assert.match(expired.message, /expired/);
        assert.strictEqual(srv.stats.authorizationCodeGrants, grants, 'no code was redeemed');
        const none = await ctx.pool.query('SELECT count(*)::int AS n FROM upstream_token.token WHERE session = $1',
            [late.session]);
        assert.strictEqual(none.rows[0].n, 0);
    });

    await t.test('RFC 9207: an authorization response from another issuer is never redeemed', async () => {
        const { session, redirect } = await browserLogin('dave');
        const grants = srv.stats.authorizationCodeGrants;
        const e = await sqlError(app.query('SELECT * FROM upstream_token.complete_login($1, $2, $3)',
            [redirect.state, redirect.code, 'https://attacker.example']), 'a mixed-up issuer');
        assert.strictEqual(e.code, 'UT014');
        assert.strictEqual(srv.stats.authorizationCodeGrants, grants, 'the code was not sent');
        const st = (await ctx.pool.query(
            'SELECT status, error FROM upstream_token.login_status WHERE session = $1', [session])).rows[0];
        assert.strictEqual(st.status, 'failed');
        assert.match(st.error, /^iss/);
        // The state is spent: the real issuer cannot complete it either.
        const again = await sqlError(app.query('SELECT * FROM upstream_token.complete_login($1, $2, $3)',
            [redirect.state, redirect.code, srv.issuer]), 'the state after a refusal');
        assert.strictEqual(again.code, 'UT013');
    });

    await t.test('the login is saved even when the caller rolls back', async () => {
        const { session, redirect } = await browserLogin('erin');
        await app.query('BEGIN');
        await app.query('SELECT * FROM upstream_token.complete_login($1, $2)', [redirect.state, redirect.code]);
        await app.query('ROLLBACK');
        const tok = (await app.query('SELECT upstream_token.get_upstream_token($1, $2) AS t',
            [session, provider])).rows[0].t;
        assert.strictEqual((await srv.accessTokenInfo(tok)).accountId, 'erin');
        secrets.push(tok);
    });

    await t.test('device flow: approved, and denied', async () => {
        const session = unique('tv');
        const grants = srv.stats.deviceCodeGrants;
        const d = (await app.query('SELECT * FROM upstream_token.begin_device_login($1, $2, $3)',
            [session, provider, 'openid offline_access'])).rows[0];
        assert.match(d.user_code, /^[A-Z]{4}-[A-Z]{4}$/);
        assert.ok(d.verification_uri.startsWith(srv.issuer));
        assert.ok(d.expires_at > new Date());
        const pending = await sqlError(app.query('SELECT upstream_token.get_upstream_token($1, $2)',
            [session, provider]), 'a token of a pending login');
        assert.strictEqual(pending.code, 'UT015');

        await srv.approveDevice(d.user_code, { account: 'frank' });
        await waitFor(() => events.events.some((e) => e.session === session && e.event === 'login_completed'),
            { timeoutMs: 30000, what: 'login_completed after the approval' });
        assert.strictEqual(srv.stats.deviceCodeGrants, grants + 1, 'one successful poll');
        const tok = (await app.query('SELECT upstream_token.get_upstream_token($1, $2) AS t',
            [session, provider])).rows[0].t;
        assert.strictEqual((await srv.accessTokenInfo(tok)).accountId, 'frank');
        secrets.push(tok);

        const refused = unique('tv');
        const d2 = (await app.query('SELECT * FROM upstream_token.begin_device_login($1, $2)',
            [refused, provider])).rows[0];
        await srv.approveDevice(d2.user_code, { account: 'grace', approve: false });
        await waitFor(() => events.events.some((e) => e.session === refused && e.event === 'login_failed'),
            { timeoutMs: 30000, what: 'login_failed after the denial' });
        const st = (await ctx.pool.query(
            'SELECT status, error FROM upstream_token.login_status WHERE session = $1', [refused])).rows[0];
        assert.strictEqual(st.status, 'failed');
        assert.match(st.error, /access_denied/);
        const none = await sqlError(app.query('SELECT upstream_token.get_upstream_token($1, $2)',
            [refused, provider]), 'a token of a denied login');
        assert.strictEqual(none.code, 'UT001');
    });

    await t.test('signing out ends a login under way: nothing is stored for the session', async () => {
        const session = unique('tv');
        const d = (await app.query('SELECT * FROM upstream_token.begin_device_login($1, $2, $3)',
            [session, provider, 'openid'])).rows[0];
        await app.query('SELECT upstream_token.revoke_upstream_token($1)', [session]);
        const st = (await ctx.pool.query(
            'SELECT status, error FROM upstream_token.login_status WHERE session = $1', [session])).rows[0];
        assert.deepStrictEqual(st, { status: 'failed', error: 'the session signed out' });
        const grants = srv.stats.deviceCodeGrants;
        const approval = await srv.approveDevice(d.user_code, { account: 'ivan' });
        assert.strictEqual(approval.approved, true, 'the user did approve');
        // The engine no longer polls it: a later login of another session completes meanwhile.
        const other = unique('tv');
        const d2 = (await app.query('SELECT * FROM upstream_token.begin_device_login($1, $2, $3)',
            [other, provider, 'openid'])).rows[0];
        await srv.approveDevice(d2.user_code, { account: 'judy' });
        await waitFor(() => events.events.some((e) => e.session === other && e.event === 'login_completed'),
            { timeoutMs: 30000, what: 'the other login completed' });
        assert.strictEqual(srv.stats.deviceCodeGrants, grants + 1, 'only the other login was redeemed');
        const none = await sqlError(app.query('SELECT upstream_token.get_upstream_token($1, $2)',
            [session, provider]), 'a token of a signed-out login');
        assert.strictEqual(none.code, 'UT001');
    });

    await t.test('a device login survives an engine restart; logins past their end are purged', async () => {
        const session = unique('tv');
        const d = (await app.query('SELECT * FROM upstream_token.begin_device_login($1, $2, $3)',
            [session, provider, 'openid'])).rows[0];
        // An abandoned login past its end: the new engine's first maintenance pass deletes it.
        const abandoned = unique('web');
        await app.query('SELECT upstream_token.begin_login($1, $2, $3)', [abandoned, provider, srv.redirectUri]);
        await ctx.pool.query(`UPDATE upstream_token.login SET expires_at = now() - interval '1 second'
                               WHERE session = $1`, [abandoned]);
        // A code the dying engine was redeeming: its answer died with it.
        const orphan = unique('web');
        await app.query('SELECT upstream_token.begin_login($1, $2, $3)', [orphan, provider, srv.redirectUri]);
        await ctx.pool.query(`UPDATE upstream_token.login SET status = 'redeeming' WHERE session = $1`, [orphan]);
        const before = (await ctx.engine()).worker_pid;
        await ctx.pool.query('SELECT pg_catalog.pg_terminate_backend($1)', [before]);
        await waitFor(async () => {
            const e = await ctx.engine();
            return e && e.ready && e.worker_pid !== before;
        }, { timeoutMs: 30000, what: 'a new engine' });
        await srv.approveDevice(d.user_code, { account: 'heidi' });
        await waitFor(() => events.events.some((e) => e.session === session && e.event === 'login_completed'),
            { timeoutMs: 30000, what: 'login_completed from the new engine' });
        const tok = (await app.query('SELECT upstream_token.get_upstream_token($1, $2) AS t',
            [session, provider])).rows[0].t;
        assert.strictEqual((await srv.accessTokenInfo(tok)).accountId, 'heidi');
        secrets.push(tok);
        await waitFor(async () => (await ctx.pool.query(
            'SELECT count(*)::int AS n FROM upstream_token.login WHERE session = $1', [abandoned])).rows[0].n === 0,
        { timeoutMs: 30000, what: 'the expired login purged' });
        const live = await ctx.pool.query('SELECT status FROM upstream_token.login_status WHERE session = $1', [session]);
        assert.deepStrictEqual(live.rows, [{ status: 'completed' }], 'a login within its lifetime is kept');
        const ended = (await ctx.pool.query('SELECT status, error FROM upstream_token.login_status WHERE session = $1',
            [orphan])).rows[0];
        assert.strictEqual(ended.status, 'failed', 'the new engine ends the redemption the old one left');
        assert.match(ended.error, /restarted/);
        assert.ok(events.events.some((e) => e.session === orphan && e.event === 'login_failed'));
    });

    await t.test('client credentials: cached, single-flight, renewed before expiry', async () => {
        const before = srv.stats.clientCredentialsGrants;
        const callers = await Promise.all(Array.from({ length: 20 }, () =>
            ctx.pool.query('SELECT upstream_token.get_client_token($1, $2) AS t', [provider, 'api:read'])));
        const tokens = new Set(callers.map((r) => r.rows[0].t));
        assert.strictEqual(tokens.size, 1, '20 concurrent callers share one token');
        assert.strictEqual(srv.stats.clientCredentialsGrants, before + 1, 'one grant for all of them');
        const [tok] = tokens;
        const info = await srv.clientCredentialsInfo(tok);
        assert.strictEqual(info.clientId, srv.clientId);
        assert.match(info.scope, /api:read/);
        const again = (await app.query('SELECT upstream_token.get_client_token($1, $2) AS t',
            [provider, 'api:read'])).rows[0].t;
        assert.strictEqual(again, tok, 'the cached token');
        const other = (await app.query('SELECT upstream_token.get_client_token($1, $2) AS t',
            [provider, 'api:write'])).rows[0].t;
        assert.notStrictEqual(other, tok, 'another scope, another token');
        assert.match((await srv.clientCredentialsInfo(other)).scope, /api:write/);
        secrets.push(tok, other);

        // The engine renews it on its own before it expires: a reader never sees it expired.
        let renewed;
        await waitFor(async () => {
            renewed = (await app.query('SELECT upstream_token.get_client_token($1, $2) AS t',
                [provider, 'api:read'])).rows[0].t;
            const i = await srv.clientCredentialsInfo(renewed);
            assert.ok(i.exp * 1000 > Date.now(), 'never an expired token');
            return renewed !== tok;
        }, { timeoutMs: 20000, intervalMs: 200, what: 'a renewed client token' });
        secrets.push(renewed);
        const rows = (await ctx.pool.query(
            `SELECT session LIKE E'\\x01cc:%' AS derived, has_refresh_token
               FROM upstream_token.token_status WHERE provider = $1 AND grant_type = 'client_credentials'`,
            [provider])).rows;
        assert.deepStrictEqual(rows, [{ derived: true, has_refresh_token: false },
            { derived: true, has_refresh_token: false }], 'two cached client tokens, no refresh token');
    });

    await t.test('no secret in the log, the views or the login table in clear; no grant revoked', async () => {
        assertNoSecretsInLog(secrets);
        const views = await ctx.pool.query(
            `SELECT (SELECT json_agg(l)::text FROM upstream_token.login_status l) AS logins,
                    (SELECT json_agg(s)::text FROM upstream_token.token_status s) AS tokens,
                    (SELECT json_agg(l)::text FROM upstream_token.login l) AS raw`);
        for (const s of secrets.filter(Boolean)) {
            for (const [name, text] of Object.entries(views.rows[0])) {
                assert.ok(!(text || '').includes(s), `a secret appears in ${name}`);
            }
        }
        for (const e of events.events) {
            assert.deepStrictEqual(Object.keys(e).sort(), ['event', 'provider', 'session']);
        }
        assert.deepStrictEqual(srv.stats.revokedGrants, [], 'the provider revoked no grant');
        // Polls before the approval answer authorization_pending, the denied one access_denied;
        // nothing else failed (no refused code, no refresh error).
        const unexpected = srv.stats.grantErrors.filter((g) => !(g.grant_type === DEVICE_CODE_GRANT
            && ['authorization_pending', 'access_denied', 'slow_down'].includes(g.error)));
        assert.deepStrictEqual(unexpected, [], 'no grant error');
    });
});

test('a login whose ID token fails the checks stores nothing and is revoked', async (t) => {
    const ctx = await setup({ poolSize: 5 });
    t.after(() => ctx.close());
    const srv = await startOidcServer({ certDir: CERT_DIR, accessTtl: 60 });
    t.after(() => srv.stop());
    // The provider as registered names another issuer than the one that signs its ID tokens.
    const provider = unique('wrongiss').replace(/[^A-Za-z0-9_.:-]/g, '_').slice(0, 60);
    await ctx.pool.query(
        `SELECT upstream_token.register_provider(name => $1, token_endpoint => $2, client_id => $3,
                client_secret => $4, issuer => 'https://issuer.invalid', revocation_endpoint => $5,
                authorization_endpoint => $6)`,
        [provider, srv.endpoints.token, srv.clientId, srv.clientSecret, srv.endpoints.revocation,
            srv.endpoints.authorization]);
    t.after(() => ctx.pool.query('SELECT upstream_token.drop_provider($1, true, true)', [provider]).catch(() => {}));
    const events = await listenEvents();
    t.after(() => events.close());

    const session = unique('web');
    const url = (await ctx.pool.query('SELECT upstream_token.begin_login($1, $2, $3, $4, $5) AS url',
        [session, provider, srv.redirectUri, 'openid offline_access', '{"prompt":"consent"}'])).rows[0].url;
    const redirect = await srv.authorize(url, { account: 'mallory' });
    const grants = srv.stats.authorizationCodeGrants;
    // Without iss (RFC 9207 would refuse before the redemption): the ID token's iss is checked.
    const e = await sqlError(ctx.pool.query('SELECT * FROM upstream_token.complete_login($1, $2)',
        [redirect.state, redirect.code]), 'a login with a foreign ID token');
    assert.strictEqual(e.code, 'UT014');
    assert.match(e.message, /iss differs/);
    assert.strictEqual(srv.stats.authorizationCodeGrants, grants + 1, 'the code was redeemed once');
    const stored = await ctx.pool.query('SELECT count(*)::int AS n FROM upstream_token.token WHERE session = $1', [session]);
    assert.strictEqual(stored.rows[0].n, 0, 'no token stored for the session');
    const st = (await ctx.pool.query('SELECT status, error FROM upstream_token.login_status WHERE session = $1',
        [session])).rows[0];
    assert.deepStrictEqual(st, { status: 'failed', error: 'id_token: iss differs' });
    await waitFor(() => events.events.some((ev) => ev.session === session && ev.event === 'login_failed'),
        { what: 'login_failed event' });
    // The received refresh token is revoked at the provider (the engine delivers the queue).
    await waitFor(() => srv.stats.revokedGrants.length === 1, { timeoutMs: 20000, what: 'the grant revoked' });
    const queue = await ctx.pool.query('SELECT count(*)::int AS n FROM upstream_token.revocation WHERE provider = $1',
        [provider]);
    assert.strictEqual(queue.rows[0].n, 0, 'the revocation was delivered');
});
