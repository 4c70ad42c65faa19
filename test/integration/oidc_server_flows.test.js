'use strict';
// Self-test of oidc_server.js's login helpers, with Node only (no PostgreSQL): the browser part
// of an authorization-code login (srv.authorize) with state, PKCE S256 and nonce, redeemed here
// by hand; the device flow (RFC 8628) approved or denied through the /device pages
// (srv.approveDevice) while the token endpoint is polled; client credentials; and the counters
// that tests of the extension read. Run: cd test && node --test integration/oidc_server_flows.test.js
const { describe, test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const https = require('node:https');
const crypto = require('node:crypto');
const { execFileSync } = require('node:child_process');
const { startOidcServer, REDIRECT_URI, DEVICE_CODE_GRANT } = require('./oidc_server.js');

const certDir = fs.mkdtempSync(path.join(os.tmpdir(), 'oidc-flows-'));
let srv;
let ca;

// POSTs a form to one of srv's endpoints; authenticates with client_secret_basic unless
// `basic` is null. Resolves {status, json}.
function post(url, form, basic = [srv.clientId, srv.clientSecret]) {
    const body = new URLSearchParams(form).toString();
    const headers = { 'content-type': 'application/x-www-form-urlencoded', 'content-length': Buffer.byteLength(body) };
    if (basic) {
        const enc = (v) => new URLSearchParams({ v }).toString().slice(2);
        headers.authorization = `Basic ${Buffer.from(`${enc(basic[0])}:${enc(basic[1])}`).toString('base64')}`;
    }
    return new Promise((resolve, reject) => {
        const req = https.request(url, { method: 'POST', headers, ca }, (res) => {
            const chunks = [];
            res.on('data', (c) => chunks.push(c));
            res.on('end', () => {
                const text = Buffer.concat(chunks).toString('utf8');
                let json;
                try { json = JSON.parse(text); } catch { json = undefined; }
                resolve({ status: res.statusCode, json });
            });
        });
        req.on('error', reject);
        req.end(body);
    });
}

// The claims of a JWT (not verified: the test only compares them).
function claims(jwt) {
    return JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString('utf8'));
}

// A PKCE pair (RFC 7636, S256).
function pkce() {
    const verifier = crypto.randomBytes(32).toString('base64url');
    return { verifier, challenge: crypto.createHash('sha256').update(verifier).digest('base64url') };
}

// An authorization URL of srv's client, as the extension's begin_login would build it.
function authUrl(server, params) {
    const q = new URLSearchParams({ client_id: server.clientId, response_type: 'code',
        redirect_uri: server.redirectUri, ...params });
    return `${server.endpoints.authorization}?${q}`;
}

// Asserts an OAuth error answer (the message never shows a body: it could hold tokens).
function assertError(res, status, error) {
    const got = `HTTP ${res.status}, error ${res.json && res.json.error}`;
    assert.equal(res.status, status, got);
    assert.equal(res.json.error, error, got);
}

// Polls the device code at the token endpoint until it is no longer pending; resolves the
// last answer and how many pending answers came before it.
async function pollDevice(deviceCode, { timeoutMs = 10000 } = {}) {
    const deadline = Date.now() + timeoutMs;
    let pending = 0;
    for (;;) {
        const r = await post(srv.endpoints.token, { grant_type: DEVICE_CODE_GRANT, device_code: deviceCode });
        if (!(r.status === 400 && r.json.error === 'authorization_pending')) return { res: r, pending };
        pending += 1;
        if (Date.now() > deadline) throw new Error('device code still pending at the deadline');
        await new Promise((resolve) => setTimeout(resolve, 100));
    }
}

before(async () => {
    execFileSync('bash', [path.join(__dirname, '..', 'idp', 'make-certs.sh'), certDir]);
    ca = fs.readFileSync(path.join(certDir, 'ca.pem'));
    srv = await startOidcServer({ certDir, accessTtl: 60 });
});

after(async () => {
    await srv?.stop();
    fs.rmSync(certDir, { recursive: true, force: true });
});

describe('identity of the server', () => {
    test('issuer, client and endpoints are exposed and match discovery', () => {
        assert.match(srv.issuer, /^https:\/\/127\.0\.0\.1:\d+$/);
        assert.equal(srv.redirectUri, REDIRECT_URI);
        assert.equal(srv.clientId, 'ut-client');
        assert.ok(srv.clientSecret.length >= 20);
        assert.equal(srv.tokenEndpoint, srv.endpoints.token);
        assert.equal(srv.discovery.issuer, srv.issuer);
        for (const [name, field] of [['authorization', 'authorization_endpoint'], ['token', 'token_endpoint'],
            ['device_authorization', 'device_authorization_endpoint'], ['revocation', 'revocation_endpoint']]) {
            assert.ok(srv.endpoints[name].startsWith(`${srv.issuer}/`), name);
            assert.equal(srv.endpoints[name], srv.discovery[field], name);
        }
        assert.ok(srv.discovery.grant_types_supported.includes(DEVICE_CODE_GRANT));
        assert.ok(srv.discovery.grant_types_supported.includes('client_credentials'));
        assert.deepEqual(srv.discovery.code_challenge_methods_supported, ['S256']);
        assert.equal(srv.discovery.authorization_response_iss_parameter_supported, true);
    });
});

describe('authorization code (srv.authorize)', () => {
    test('state, PKCE S256 and nonce: the code is redeemed here with the verifier', async () => {
        const before = { ...srv.stats };
        const { verifier, challenge } = pkce();
        const state = crypto.randomBytes(12).toString('base64url');
        const nonce = crypto.randomBytes(12).toString('base64url');
        const res = await srv.authorize(authUrl(srv, { scope: 'openid offline_access', prompt: 'consent',
            state, nonce, code_challenge: challenge, code_challenge_method: 'S256' }), { account: 'bob' });
        assert.equal(res.error, null);
        assert.equal(res.state, state);
        assert.equal(res.iss, srv.issuer);
        assert.ok(res.code);
        assert.ok(res.redirect.startsWith(`${REDIRECT_URI}?`));
        assert.equal(srv.stats.authorizations, before.authorizations + 1);
        assert.equal(srv.stats.authorizationCodeGrants, before.authorizationCodeGrants, 'authorize() must not redeem');

        const tok = await post(srv.endpoints.token, { grant_type: 'authorization_code', code: res.code,
            redirect_uri: srv.redirectUri, code_verifier: verifier });
        assert.equal(tok.status, 200);
        assert.equal(tok.json.token_type, 'Bearer');
        assert.equal(tok.json.scope, 'openid offline_access');
        assert.ok(tok.json.access_token && tok.json.refresh_token && tok.json.id_token);
        const id = claims(tok.json.id_token);
        assert.equal(id.nonce, nonce);
        assert.equal(id.sub, 'bob');
        assert.equal(id.aud, srv.clientId);
        assert.equal(id.iss, srv.issuer);
        assert.equal((await srv.accessTokenInfo(tok.json.access_token)).accountId, 'bob');
        assert.equal(srv.stats.authorizationCodeGrants, before.authorizationCodeGrants + 1);

        // A code is single use.
        assertError(await post(srv.endpoints.token, { grant_type: 'authorization_code', code: res.code,
            redirect_uri: srv.redirectUri, code_verifier: verifier }), 400, 'invalid_grant');
    });

    test('a wrong or missing code_verifier is invalid_grant', async () => {
        for (const verifierOf of [() => pkce().verifier, () => undefined]) {
            const { challenge } = pkce();
            const res = await srv.authorize(authUrl(srv, { scope: 'openid', state: 's',
                code_challenge: challenge, code_challenge_method: 'S256' }));
            assert.ok(res.code);
            const form = { grant_type: 'authorization_code', code: res.code, redirect_uri: srv.redirectUri };
            const v = verifierOf();
            if (v) form.code_verifier = v;
            assertError(await post(srv.endpoints.token, form), 400, 'invalid_grant');
        }
    });

    test('quirks: offline_access needs prompt=consent; nonce needs openid; plain PKCE refused; openid optional', async () => {
        // Without prompt=consent, offline_access is dropped: no refresh token.
        let res = await srv.authorize(authUrl(srv, { scope: 'openid offline_access', state: 's' }));
        let tok = await post(srv.endpoints.token, { grant_type: 'authorization_code', code: res.code, redirect_uri: srv.redirectUri });
        assert.equal(tok.status, 200);
        assert.equal(tok.json.scope, 'openid');
        assert.equal(tok.json.refresh_token, undefined);
        // Without openid: an access token with the API scope, no ID token.
        res = await srv.authorize(authUrl(srv, { scope: 'api:read', state: 's' }));
        tok = await post(srv.endpoints.token, { grant_type: 'authorization_code', code: res.code, redirect_uri: srv.redirectUri });
        assert.equal(tok.status, 200);
        assert.equal(tok.json.scope, 'api:read');
        assert.equal(tok.json.id_token, undefined);
        res = await srv.authorize(authUrl(srv, { scope: 'api:read', state: 's', nonce: 'n' }));
        assert.equal(res.error, 'invalid_request');
        assert.equal(res.state, 's');
        assert.equal(res.iss, srv.issuer);
        res = await srv.authorize(authUrl(srv, { scope: 'openid', state: 's', code_challenge: pkce().verifier,
            code_challenge_method: 'plain' }));
        assert.equal(res.error, 'invalid_request');
    });

    test('a denial resolves access_denied with state and iss', async () => {
        const res = await srv.authorize(authUrl(srv, { scope: 'openid', state: 'deny-me', nonce: 'n' }), { consent: false });
        assert.equal(res.code, null);
        assert.equal(res.error, 'access_denied');
        assert.equal(res.state, 'deny-me');
        assert.equal(res.iss, srv.issuer);
    });

    test('a redirect_uri the client does not have rejects with the error page\'s code', async () => {
        await assert.rejects(srv.authorize(authUrl(srv, { scope: 'openid', redirect_uri: 'https://evil.invalid/cb' })),
            (err) => err.error === 'invalid_redirect_uri' && err.status === 400);
    });

    test('login() still runs the whole flow (existing helper)', async () => {
        const login = await srv.login('erin');
        assert.ok(login.access_token && login.refresh_token && login.id_token && login.grantId);
        assert.equal(claims(login.id_token).sub, 'erin');
        assert.equal(login.subject, 'erin');
    });

    test('requirePkce: a request without code_challenge is refused', async () => {
        const strict = await startOidcServer({ certDir, requirePkce: true });
        try {
            const res = await strict.authorize(authUrl(strict, { scope: 'openid', state: 's' }));
            assert.equal(res.error, 'invalid_request');
            const ok = await strict.authorize(authUrl(strict, { scope: 'openid', state: 's',
                code_challenge: pkce().challenge, code_challenge_method: 'S256' }));
            assert.ok(ok.code);
        } finally {
            await strict.stop();
        }
    });
});

describe('device flow (srv.approveDevice)', () => {
    test('pending until approved, then tokens of the approving account', async () => {
        const before = { ...srv.stats };
        const da = await post(srv.endpoints.device_authorization, { scope: 'openid offline_access' });
        assert.equal(da.status, 200);
        assert.match(da.json.user_code, /^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$/);
        assert.equal(da.json.verification_uri, srv.verificationUri);
        assert.equal(da.json.verification_uri_complete, `${srv.verificationUri}?user_code=${da.json.user_code}`);
        assert.ok(da.json.device_code);
        assert.equal(da.json.expires_in, 600);
        assert.equal(srv.stats.deviceAuthorizations, before.deviceAuthorizations + 1);

        assertError(await post(srv.endpoints.token, { grant_type: DEVICE_CODE_GRANT, device_code: da.json.device_code }),
            400, 'authorization_pending');
        // Typed in lower case and without the dash, as a user might.
        const typed = da.json.user_code.toLowerCase().replace('-', '');
        assert.deepEqual(await srv.approveDevice(typed, { account: 'carol' }), { approved: true });
        assert.equal(srv.stats.deviceApprovals, before.deviceApprovals + 1);

        const { res } = await pollDevice(da.json.device_code);
        assert.equal(res.status, 200);
        assert.equal(res.json.scope, 'openid offline_access');
        assert.ok(res.json.access_token && res.json.refresh_token && res.json.id_token);
        assert.equal(claims(res.json.id_token).sub, 'carol');
        assert.equal(srv.stats.deviceCodeGrants, before.deviceCodeGrants + 1);
        // The user code cannot be approved again, and the device code is spent (presenting it
        // again revokes the grant, as code reuse does, so its user code is then unknown).
        await assert.rejects(srv.approveDevice(da.json.user_code), (err) => err.reason === 'already_used');
        assertError(await post(srv.endpoints.token, { grant_type: DEVICE_CODE_GRANT, device_code: da.json.device_code }),
            400, 'invalid_grant');
        assert.equal(await srv.accessTokenInfo(res.json.access_token), null);
        await assert.rejects(srv.approveDevice(da.json.user_code), (err) => err.reason === 'not_found');
    });

    test('polling sees authorization_pending while the user approves', async () => {
        const da = await post(srv.endpoints.device_authorization, { scope: 'api:read' });
        const polling = pollDevice(da.json.device_code);
        await new Promise((resolve) => setTimeout(resolve, 250));
        await srv.approveDevice(da.json.user_code, { account: 'dan' });
        const { res, pending } = await polling;
        assert.equal(res.status, 200);
        assert.ok(pending >= 1, 'at least one authorization_pending before the approval');
        assert.equal(res.json.scope, 'api:read');
        assert.equal(res.json.id_token, undefined);
        assert.equal(res.json.refresh_token, undefined);
        assert.equal((await srv.accessTokenInfo(res.json.access_token)).accountId, 'dan');
    });

    test('aborting at the confirmation, or denying consent, gives access_denied', async () => {
        for (const opts of [{ approve: false }, { consent: false }]) {
            const da = await post(srv.endpoints.device_authorization, { scope: 'openid' });
            assert.deepEqual(await srv.approveDevice(da.json.user_code, opts), { approved: false, error: 'access_denied' });
            const { res } = await pollDevice(da.json.device_code);
            assertError(res, 400, 'access_denied');
        }
    });

    test('quirk: a device authorization without a declared scope cannot be approved', async () => {
        const da = await post(srv.endpoints.device_authorization, {});
        assert.equal(da.status, 200);
        assert.deepEqual(await srv.approveDevice(da.json.user_code), { approved: false, error: 'access_denied' });
        assertError((await pollDevice(da.json.device_code)).res, 400, 'access_denied');
    });

    test('an unknown user code is refused at /device', async () => {
        await assert.rejects(srv.approveDevice('BBBB-BBBB'), (err) => err.reason === 'not_found');
    });

    test('an expired device code: expired_token, and /device refuses its user code', async () => {
        const short = await startOidcServer({ certDir, deviceCodeTtl: 1 });
        try {
            const da = await post(short.endpoints.device_authorization, { scope: 'openid' }, [short.clientId, short.clientSecret]);
            assert.equal(da.json.expires_in, 1);
            await new Promise((resolve) => setTimeout(resolve, 2100));
            await assert.rejects(short.approveDevice(da.json.user_code), (err) => err.reason === 'expired');
            assertError(await post(short.endpoints.token, { grant_type: DEVICE_CODE_GRANT, device_code: da.json.device_code },
                [short.clientId, short.clientSecret]), 400, 'expired_token');
        } finally {
            await short.stop();
        }
    });
});

describe('client credentials', () => {
    test('scope api:read (with or without audience) gives an access token and no refresh token', async () => {
        const before = srv.stats.clientCredentialsGrants;
        for (const extra of [{}, { audience: 'https://api.example' }]) {
            const r = await post(srv.endpoints.token, { grant_type: 'client_credentials', scope: 'api:read', ...extra });
            assert.equal(r.status, 200);
            assert.equal(r.json.token_type, 'Bearer');
            assert.equal(r.json.scope, 'api:read');
            assert.equal(r.json.expires_in, 60);
            assert.equal(r.json.refresh_token, undefined);
            const info = await srv.clientCredentialsInfo(r.json.access_token);
            assert.equal(info.clientId, srv.clientId);
            assert.equal(info.scope, 'api:read');
        }
        // Two API scopes; an undeclared scope is dropped silently (not invalid_scope).
        const two = await post(srv.endpoints.token, { grant_type: 'client_credentials', scope: 'api:read api:write api:nope' });
        assert.equal(two.json.scope, 'api:read api:write');
        assert.equal(srv.stats.clientCredentialsGrants, before + 3);
    });

    test('a wrong client secret is invalid_client', async () => {
        const r = await post(srv.endpoints.token, { grant_type: 'client_credentials', scope: 'api:read' },
            [srv.clientId, 'wrong']);
        assertError(r, 401, 'invalid_client');
    });
});
