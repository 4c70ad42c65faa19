'use strict';
// Tests of the test IdP itself: run with `node --test test/idp/`.

const { describe, test, before, after, beforeEach } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const crypto = require('node:crypto');
const { execFileSync } = require('node:child_process');
const { startIdp, formEncode } = require('./client.js');

const certDir = fs.mkdtempSync(path.join(os.tmpdir(), 'idp-test-'));
let idp;
let c;
let nextId = 0;

// Creates a client with a unique id; returns its config including the secret.
async function newClient(opts = {}) {
    const cfg = { client_id: `client-${++nextId}`, client_secret: `secret-${nextId}`, ...opts };
    if (cfg.auth_method === 'none') delete cfg.client_secret;
    await c.admin('POST', '/admin/clients', cfg);
    return { auth_method: 'client_secret_basic', ...cfg };
}

// Mints one grant for a client; returns the grant's first tokens.
async function mint(client, extra = {}) {
    const res = await c.admin('POST', '/admin/grants', { client_id: client.client_id, subject: 'alice', ...extra });
    return res.grants[0];
}

// Refresh request authenticated the way the client is configured.
function refresh(client, refreshToken, extraForm = {}) {
    const form = { grant_type: 'refresh_token', refresh_token: refreshToken, ...extraForm };
    return c.token(form, credentials(client, form));
}

// Adds the client's credentials to a form (post / none) or returns Basic options.
function credentials(client, form) {
    if (client.auth_method === 'client_secret_basic') return { basic: [client.client_id, client.client_secret] };
    form.client_id = client.client_id;
    if (client.auth_method === 'client_secret_post') form.client_secret = client.client_secret;
    return {};
}

// POSTs to /revoke or /introspect with the client's credentials.
function clientPost(client, endpoint, form) {
    const opts = credentials(client, form);
    return c.request('POST', endpoint, { ...opts, form });
}

// Decodes a compact JWS's header and payload.
function decodeJwt(token) {
    const parts = token.split('.');
    assert.equal(parts.length, 3);
    const [header, payload] = parts.slice(0, 2).map((p) => JSON.parse(Buffer.from(p, 'base64url').toString()));
    return { header, payload };
}

// A raw Authorization: Basic header from an already-encoded "id:secret" string.
function rawBasic(text) {
    return { Authorization: 'Basic ' + Buffer.from(text, 'utf8').toString('base64') };
}

// Asserts an OAuth error answer (the message never includes the body: it may hold tokens).
function assertError(res, status, error) {
    const got = `HTTP ${res.status}, error ${res.json && res.json.error}`;
    assert.equal(res.status, status, got);
    assert.equal(res.json.error, error, got);
}

before(async () => {
    idp = await startIdp({ certDir });
    c = idp.client;
});

after(async () => {
    assert.equal(await idp.stop(), 0);
    fs.rmSync(certDir, { recursive: true, force: true });
});

beforeEach(async () => {
    await c.admin('DELETE', '/admin/faults');
});

describe('make-certs.sh', () => {
    test('creates a CA and a loopback server certificate with the right modes, idempotently', () => {
        const mode = (f) => fs.statSync(path.join(certDir, f)).mode & 0o777;
        assert.equal(mode('ca.pem'), 0o644);
        assert.equal(mode('server.pem'), 0o644);
        assert.equal(mode('ca.key'), 0o600);
        assert.equal(mode('server.key'), 0o600);
        const before = fs.readFileSync(path.join(certDir, 'server.pem'), 'utf8');
        execFileSync('bash', [path.join(__dirname, 'make-certs.sh'), certDir]);
        assert.equal(fs.readFileSync(path.join(certDir, 'server.pem'), 'utf8'), before);
        const verify = execFileSync('openssl', ['verify', '-CAfile', path.join(certDir, 'ca.pem'), path.join(certDir, 'server.pem')]);
        assert.match(verify.toString(), /OK/);
        const text = execFileSync('openssl', ['x509', '-in', path.join(certDir, 'server.pem'), '-noout', '-text']).toString();
        assert.match(text, /DNS:localhost, IP Address:127\.0\.0\.1/);
        assert.match(text, /TLS Web Server Authentication/);
    });
});

describe('discovery and health', () => {
    test('health', async () => {
        assert.deepEqual(await c.admin('GET', '/admin/health'), { ok: true });
    });

    test('both metadata documents, with the issuer overridable', async () => {
        for (const p of ['/.well-known/openid-configuration', '/.well-known/oauth-authorization-server']) {
            const res = await c.request('GET', p);
            assert.equal(res.status, 200);
            assert.equal(res.json.issuer, idp.url);
            assert.equal(res.json.token_endpoint, `${idp.url}/token`);
            assert.equal(res.json.revocation_endpoint, `${idp.url}/revoke`);
            assert.equal(res.json.introspection_endpoint, `${idp.url}/introspect`);
            assert.deepEqual(res.json.token_endpoint_auth_methods_supported, ['client_secret_basic', 'client_secret_post', 'none', 'private_key_jwt']);
            assert.deepEqual(res.json.token_endpoint_auth_signing_alg_values_supported, ['RS256', 'ES256']);
            assert.ok(res.json.grant_types_supported.includes('refresh_token'));
        }
        await c.admin('POST', '/admin/settings', { issuer: 'https://evil.example', discovery: { token_endpoint: 'https://elsewhere/token' } });
        const res = await c.request('GET', '/.well-known/openid-configuration');
        assert.equal(res.json.issuer, 'https://evil.example');
        assert.equal(res.json.token_endpoint, 'https://elsewhere/token');
        await c.admin('POST', '/admin/settings', { issuer: null, discovery: null });
        assert.equal((await c.request('GET', '/.well-known/oauth-authorization-server')).json.issuer, idp.url);
    });

    test('admin validation rejects typos', async () => {
        await assert.rejects(c.admin('POST', '/admin/clients', { client_id: 'x', client_secret: 's', no_rotaton: true }), { status: 400 });
        await assert.rejects(c.admin('POST', '/admin/clients', { client_id: 'x', auth_method: 'private_key_jwt', client_secret: 's' }), { status: 400 });
        await assert.rejects(c.admin('POST', '/admin/faults', { action: { stauts: 500 } }), { status: 400 });
        await assert.rejects(c.admin('POST', '/admin/grants', { client_id: 'nobody', subject: 's' }), { status: 404 });
        await assert.rejects(c.admin('GET', '/admin/grants/nope'), { status: 404 });
        await assert.rejects(c.admin('GET', '/admin/nothing'), { status: 404 });
    });
});

describe('client authentication', () => {
    test('client_secret_basic with reserved and non-ASCII characters in id and secret', async () => {
        const client = await newClient({ client_id: 'id:with+plus%pct space/é', client_secret: 'se:cr+et%25 ü€=&' });
        const g = await mint(client);
        const res = await refresh(client, g.refresh_token);
        assert.equal(res.status, 200, `HTTP ${res.status}, error ${res.json && res.json.error}`);
        assert.ok(res.json.refresh_token);
        // The same credentials sent without form-encoding must fail: '+' and '%' mean something.
        const raw = await c.token({ grant_type: 'refresh_token', refresh_token: res.json.refresh_token },
            { headers: rawBasic(`${client.client_id}:${client.client_secret}`) });
        assertError(raw, 401, 'invalid_client');
        assert.match(raw.headers['www-authenticate'], /^Basic /);
    });

    test('Basic is split at the first colon and form-decoded ("+" is a space)', async () => {
        const client = await newClient({ client_id: 'a b', client_secret: 'x:y' });
        const g = await mint(client);
        const res = await c.token({ grant_type: 'refresh_token', refresh_token: g.refresh_token }, { headers: rawBasic('a+b:x:y') });
        assert.equal(res.status, 200, `HTTP ${res.status}, error ${res.json && res.json.error}`);
        const plusClient = await newClient({ client_id: 'p+q', client_secret: 's' });
        const g2 = await mint(plusClient);
        const wrong = await c.token({ grant_type: 'refresh_token', refresh_token: g2.refresh_token }, { headers: rawBasic('p+q:s') });
        assertError(wrong, 401, 'invalid_client');
        const right = await c.token({ grant_type: 'refresh_token', refresh_token: g2.refresh_token }, { headers: rawBasic(`${formEncode('p+q')}:s`) });
        assert.equal(right.status, 200, `HTTP ${right.status}`);
        const malformed = await c.token({ grant_type: 'refresh_token', refresh_token: 'x' }, { headers: rawBasic('p%zzq:s') });
        assertError(malformed, 401, 'invalid_client');
    });

    test('client_secret_basic: wrong secret, missing credentials, post credentials all refused', async () => {
        const client = await newClient();
        const g = await mint(client);
        const form = { grant_type: 'refresh_token', refresh_token: g.refresh_token };
        assertError(await c.token(form, { basic: [client.client_id, 'wrong'] }), 401, 'invalid_client');
        assertError(await c.token(form), 401, 'invalid_client');
        assertError(await c.token({ ...form, client_id: client.client_id, client_secret: client.client_secret }), 401, 'invalid_client');
        assertError(await c.token({ ...form, client_id: client.client_id }), 401, 'invalid_client');
        assert.equal((await refresh(client, g.refresh_token)).status, 200);
    });

    test('client_secret_post: works, and wrong secret or Basic is refused', async () => {
        const client = await newClient({ auth_method: 'client_secret_post', client_secret: 'p o+s%t' });
        const g = await mint(client);
        const form = { grant_type: 'refresh_token', refresh_token: g.refresh_token };
        assertError(await c.token({ ...form, client_id: client.client_id, client_secret: 'nope' }), 401, 'invalid_client');
        assertError(await c.token(form, { basic: [client.client_id, client.client_secret] }), 401, 'invalid_client');
        assertError(await c.token({ ...form, client_id: client.client_id }), 401, 'invalid_client');
        const ok = await refresh(client, g.refresh_token);
        assert.equal(ok.status, 200, `HTTP ${ok.status}`);
    });

    test('none: client_id only; a secret or Basic is refused', async () => {
        const client = await newClient({ auth_method: 'none' });
        const g = await mint(client);
        const form = { grant_type: 'refresh_token', refresh_token: g.refresh_token };
        assertError(await c.token({ ...form, client_id: client.client_id, client_secret: 'x' }), 401, 'invalid_client');
        assertError(await c.token(form, { basic: [client.client_id, 'x'] }), 401, 'invalid_client');
        assertError(await c.token(form), 401, 'invalid_client');
        const ok = await refresh(client, g.refresh_token);
        assert.equal(ok.status, 200, `HTTP ${ok.status}`);
    });

    test('grant_type, missing parameters, content type, repeated parameters', async () => {
        const client = await newClient();
        const g = await mint(client);
        const basic = [client.client_id, client.client_secret];
        assertError(await c.token({ grant_type: 'password', refresh_token: g.refresh_token }, { basic }), 400, 'unsupported_grant_type');
        assertError(await c.token({ refresh_token: g.refresh_token }, { basic }), 400, 'invalid_request');
        assertError(await c.token({ grant_type: 'refresh_token' }, { basic }), 400, 'invalid_request');
        assertError(await c.token(`grant_type=refresh_token&refresh_token=${g.refresh_token}&refresh_token=x`, { basic }), 400, 'invalid_request');
        const json = await c.request('POST', '/token', { json: { grant_type: 'refresh_token' }, basic });
        assertError(json, 400, 'invalid_request');
        assert.equal((await c.request('GET', '/token')).status, 405);
        assert.equal((await refresh(client, g.refresh_token)).status, 200);
    });
});

describe('refresh, rotation and reuse detection', () => {
    test('success response shape and single-use rotation', async () => {
        const client = await newClient({ access_ttl: 1234 });
        const g = await mint(client, { scope: 'openid offline_access read' });
        assert.ok(Buffer.from(g.refresh_token, 'base64url').length >= 32);
        const res = await refresh(client, g.refresh_token);
        assert.equal(res.status, 200);
        assert.match(res.headers['content-type'], /^application\/json/);
        assert.equal(res.headers['cache-control'], 'no-store');
        assert.equal(res.json.token_type, 'Bearer');
        assert.equal(res.json.expires_in, 1234);
        assert.equal(res.json.scope, 'openid offline_access read');
        assert.equal(res.json.id_token, undefined);
        assert.notEqual(res.json.refresh_token, g.refresh_token);
        assert.notEqual(res.json.access_token, g.access_token);
        const again = await refresh(client, res.json.refresh_token, { scope: 'read' });
        assert.equal(again.status, 200);
        assert.equal(again.json.scope, 'read');
        assertError(await refresh(client, again.json.refresh_token, { scope: 'admin' }), 400, 'invalid_scope');
        const view = await c.admin('GET', `/admin/grants/${g.grant_id}`);
        assert.equal(view.rotations, 2);
        assert.equal(view.refresh_calls, 3);
        assert.equal(view.refresh_token, again.json.refresh_token);
        assert.equal(view.active, true);
    });

    test('presenting a used refresh token revokes the whole family', async () => {
        const client = await newClient();
        const g = await mint(client);
        const r1 = await refresh(client, g.refresh_token);
        const r2 = await refresh(client, r1.json.refresh_token);
        const stats0 = await c.admin('GET', '/admin/stats');
        assertError(await refresh(client, g.refresh_token), 400, 'invalid_grant');
        assertError(await refresh(client, r2.json.refresh_token), 400, 'invalid_grant');
        const stats1 = await c.admin('GET', '/admin/stats');
        assert.equal(stats1.reuse_detected, stats0.reuse_detected + 1);
        assert.equal(stats1.revoked_grants, stats0.revoked_grants + 1);
        const view = await c.admin('GET', `/admin/grants/${g.grant_id}`);
        assert.deepEqual([view.revoked, view.active, view.reuse_detected, view.refresh_token], [true, false, 1, null]);
        const intro = await clientPost(client, '/introspect', { token: r2.json.access_token });
        assert.equal(intro.json.active, false);
    });

    test('a re-login continues the grant: new tokens of the same grant, one revocation ends both', async () => {
        const client = await newClient({ id_token: true });
        const g = await mint(client, { subject: 'carol' });
        const again = await c.admin('POST', `/admin/grants/${g.grant_id}/login`, {});
        assert.equal(again.grant_id, g.grant_id);
        assert.equal(again.subject, 'carol');
        assert.notEqual(again.refresh_token, g.refresh_token);
        assert.notEqual(again.access_token, g.access_token);
        assert.equal(decodeJwt(again.id_token).payload.auth_time, decodeJwt(g.id_token).payload.auth_time);
        assert.equal((await c.admin('GET', `/admin/grants/${g.grant_id}`)).refresh_token, again.refresh_token);
        for (const t of [g.refresh_token, again.refresh_token]) {
            const intro = await clientPost(client, '/introspect', { token: t });
            assert.deepEqual([intro.json.active, intro.json.grant_id], [true, g.grant_id]);
        }
        // The older login's refresh token still works; revoking its successor ends the grant.
        const r1 = await refresh(client, g.refresh_token);
        assert.equal(r1.status, 200);
        assert.equal((await clientPost(client, '/revoke', { token: r1.json.refresh_token })).status, 200);
        assert.equal((await clientPost(client, '/introspect', { token: again.refresh_token })).json.active, false);
        await assert.rejects(c.admin('POST', `/admin/grants/${g.grant_id}/login`, {}), { status: 409 });
        await assert.rejects(c.admin('POST', '/admin/grants/nope/login', {}), { status: 404 });
    });

    test('unknown tokens and tokens of another client are invalid_grant (without revoking)', async () => {
        const a = await newClient();
        const b = await newClient();
        const g = await mint(a);
        assertError(await refresh(a, 'no-such-token'), 400, 'invalid_grant');
        assertError(await refresh(b, g.refresh_token), 400, 'invalid_grant');
        assert.equal((await refresh(a, g.refresh_token)).status, 200);
    });

    test('ID token claims, auth_time fixed per grant', async () => {
        const client = await newClient({ id_token: true, access_ttl: 600 });
        const g = await mint(client, { subject: 'bob' });
        const first = decodeJwt(g.id_token);
        assert.equal(first.header.alg, 'HS256');
        await new Promise((r) => setTimeout(r, 1100));
        const res = await refresh(client, g.refresh_token);
        const { payload } = decodeJwt(res.json.id_token);
        assert.equal(payload.iss, idp.url);
        assert.equal(payload.sub, 'bob');
        assert.equal(payload.aud, client.client_id);
        assert.equal(payload.azp, client.client_id);
        assert.equal(payload.auth_time, first.payload.auth_time);
        assert.ok(payload.iat > first.payload.iat);
        assert.ok(payload.exp > payload.iat);
    });

    test('bulk minting of 10000 grants is fast and gives distinct subjects and tokens', async () => {
        const client = await newClient();
        const t0 = Date.now();
        const { grants } = await c.admin('POST', '/admin/grants', { client_id: client.client_id, subject: 'user', count: 10000 });
        const elapsed = Date.now() - t0;
        assert.ok(elapsed < 2000, `took ${elapsed} ms`);
        assert.equal(grants.length, 10000);
        assert.equal(grants[0].subject, 'user-0');
        assert.equal(grants[9999].subject, 'user-9999');
        assert.equal(new Set(grants.map((g) => g.refresh_token)).size, 10000);
        assert.equal(new Set(grants.map((g) => g.access_token)).size, 10000);
        assert.equal((await refresh(client, grants[4242].refresh_token)).status, 200);
    });
});

describe('quirks', () => {
    test('no_expires_in', async () => {
        const client = await newClient({ no_expires_in: true });
        const res = await refresh(client, (await mint(client)).refresh_token);
        assert.equal(res.status, 200);
        assert.equal('expires_in' in res.json, false);
    });

    test('no_rotation keeps the old refresh token valid', async () => {
        const client = await newClient({ no_rotation: true });
        const g = await mint(client);
        for (let i = 0; i < 3; i++) {
            const res = await refresh(client, g.refresh_token);
            assert.equal(res.status, 200);
            assert.equal('refresh_token' in res.json, false);
        }
    });

    test('refresh_token_expires_in is sent and enforced', async () => {
        const client = await newClient({ refresh_token_expires_in: 1 });
        const g = await mint(client);
        assert.equal(g.refresh_token_expires_in, 1);
        const res = await refresh(client, g.refresh_token);
        assert.equal(res.json.refresh_token_expires_in, 1);
        await new Promise((r) => setTimeout(r, 1100));
        assertError(await refresh(client, res.json.refresh_token), 400, 'invalid_grant');
        assert.equal((await c.admin('GET', `/admin/grants/${g.grant_id}`)).active, false);
    });

    test('refresh_expires_field renames the field (Keycloak style)', async () => {
        const client = await newClient({ refresh_token_expires_in: 30, refresh_expires_field: 'refresh_expires_in' });
        const g = await mint(client);
        assert.equal(g.refresh_expires_in, 30);
        assert.equal('refresh_token_expires_in' in g, false);
        const res = await refresh(client, g.refresh_token);
        assert.equal(res.json.refresh_expires_in, 30);
        assert.equal('refresh_token_expires_in' in res.json, false);
        await assert.rejects(c.admin('POST', '/admin/clients', { client_id: 'rx', client_secret: 's', refresh_expires_field: 'x' }), { status: 400 });
    });

    test('token_type_case', async () => {
        for (const tt of ['bearer', 'BEARER']) {
            const client = await newClient({ token_type_case: tt });
            assert.equal((await refresh(client, (await mint(client)).refresh_token)).json.token_type, tt);
        }
    });

    test('narrow_scope', async () => {
        const client = await newClient({ narrow_scope: 'openid' });
        const res = await refresh(client, (await mint(client)).refresh_token, { scope: 'openid offline_access' });
        assert.equal(res.json.scope, 'openid');
    });

    test('big_access_token: ~8 KB, JWT-shaped, unique, introspectable', async () => {
        const client = await newClient({ big_access_token: true });
        const g = await mint(client);
        const r1 = await refresh(client, g.refresh_token);
        const r2 = await refresh(client, r1.json.refresh_token);
        for (const t of [g.access_token, r1.json.access_token]) {
            assert.ok(Math.abs(t.length - 8192) < 64, `length ${t.length}`);
            decodeJwt(t);
        }
        assert.notEqual(r1.json.access_token, r2.json.access_token);
        assert.equal((await clientPost(client, '/introspect', { token: r2.json.access_token })).json.active, true);
    });
});

describe('revocation and introspection', () => {
    test('introspection of refresh and access tokens', async () => {
        const client = await newClient({ access_ttl: 1 });
        const g = await mint(client);
        const r = await refresh(client, g.refresh_token);
        const look = async (token) => (await clientPost(client, '/introspect', { token })).json;
        const live = await look(r.json.refresh_token);
        assert.equal(live.active, true);
        assert.equal(live.token_type, 'refresh_token');
        assert.equal(live.client_id, client.client_id);
        assert.equal(live.sub, 'alice');
        assert.equal((await look(g.refresh_token)).active, false);
        assert.equal((await look(r.json.access_token)).active, true);
        assert.equal((await look('garbage')).active, false);
        await new Promise((res) => setTimeout(res, 1100));
        assert.equal((await look(r.json.access_token)).active, false);
        const bad = await c.request('POST', '/introspect', { form: { token: 'x' }, basic: [client.client_id, 'wrong'] });
        assertError(bad, 401, 'invalid_client');
    });

    test('revoking a refresh token revokes its grant; an access token only itself', async () => {
        const client = await newClient({ auth_method: 'client_secret_post' });
        const g = await mint(client);
        const r = await refresh(client, g.refresh_token);
        const at = await clientPost(client, '/revoke', { token: r.json.access_token, token_type_hint: 'access_token' });
        assert.equal(at.status, 200);
        assert.equal((await clientPost(client, '/introspect', { token: r.json.access_token })).json.active, false);
        assert.equal((await refresh(client, r.json.refresh_token)).status, 200);
        const view = await c.admin('GET', `/admin/grants/${g.grant_id}`);
        const stats0 = await c.admin('GET', '/admin/stats');
        assert.equal((await clientPost(client, '/revoke', { token: view.refresh_token })).status, 200);
        assertError(await refresh(client, view.refresh_token), 400, 'invalid_grant');
        assert.equal((await c.admin('GET', `/admin/grants/${g.grant_id}`)).revoked, true);
        assert.equal((await clientPost(client, '/revoke', { token: 'unknown' })).status, 200);
        const stats1 = await c.admin('GET', '/admin/stats');
        assert.equal(stats1.revocations, stats0.revocations + 2);
        assert.equal(stats1.revoked_grants, stats0.revoked_grants + 1);
        const bad = await c.request('POST', '/revoke', { form: { token: 'x', client_id: client.client_id, client_secret: 'no' } });
        assertError(bad, 401, 'invalid_client');
    });

    test('admin revocation of a grant', async () => {
        const client = await newClient();
        const g = await mint(client);
        const view = await c.admin('POST', `/admin/grants/${g.grant_id}/revoke`);
        assert.equal(view.revoked, true);
        assertError(await refresh(client, g.refresh_token), 400, 'invalid_grant');
    });
});

describe('faults', () => {
    let client;
    beforeEach(async () => {
        client = await newClient({ id_token: true });
    });

    // Asserts that the refresh token is still the grant's current one (the fault did not rotate).
    async function assertNotRotated(g) {
        const view = await c.admin('GET', `/admin/grants/${g.grant_id}`);
        assert.equal(view.refresh_token, g.refresh_token);
        assert.equal(view.rotations, 0);
    }

    test('delay_ms delays, and in_flight / max_in_flight see the overlap', async () => {
        const grants = (await c.admin('POST', '/admin/grants', { client_id: client.client_id, subject: 'd', count: 5 })).grants;
        await c.admin('POST', '/admin/faults', { match: { client_id: client.client_id }, action: { delay_ms: 300 }, count: 5 });
        await c.admin('POST', '/admin/stats/reset');
        const t0 = Date.now();
        const results = await Promise.all(grants.map((g) => refresh(client, g.refresh_token)));
        assert.ok(Date.now() - t0 >= 300);
        assert.deepEqual(results.map((r) => r.status), [200, 200, 200, 200, 200]);
        const stats = await c.admin('GET', '/admin/stats');
        assert.ok(stats.max_in_flight >= 5, `max_in_flight ${stats.max_in_flight}`);
        assert.equal(stats.in_flight, 0);
        const fast = await refresh(client, results[0].json.refresh_token);
        assert.equal(fast.status, 200);
    });

    test('status 429 with Retry-After, 500 and 503 do not rotate', async () => {
        const g = await mint(client);
        await c.admin('POST', '/admin/faults', { match: { grant_id: g.grant_id }, action: { status: 429, retry_after: '5' }, count: 1 });
        await c.admin('POST', '/admin/faults', { match: { grant_id: g.grant_id }, action: { status: 500 }, count: 1 });
        await c.admin('POST', '/admin/faults', { match: { grant_id: g.grant_id }, action: { status: 503 }, count: 1 });
        const r429 = await refresh(client, g.refresh_token);
        assertError(r429, 429, 'slow_down');
        assert.equal(r429.headers['retry-after'], '5');
        assertError(await refresh(client, g.refresh_token), 500, 'temporarily_unavailable');
        assertError(await refresh(client, g.refresh_token), 503, 'temporarily_unavailable');
        await assertNotRotated(g);
        assert.equal((await refresh(client, g.refresh_token)).status, 200);
    });

    test('drop before: no answer, no rotation', async () => {
        const g = await mint(client);
        await c.admin('POST', '/admin/faults', { match: { grant_id: g.grant_id }, action: { drop: 'before' }, count: 1 });
        await assert.rejects(refresh(client, g.refresh_token), (e) => ['ECONNRESET', 'EPIPE'].includes(e.code) || /hang up/.test(e.message));
        await assertNotRotated(g);
        assert.equal((await refresh(client, g.refresh_token)).status, 200);
    });

    test('drop after: rotated but unanswered, so a retry with the old token is reuse', async () => {
        const g = await mint(client);
        await c.admin('POST', '/admin/faults', { match: { grant_id: g.grant_id }, action: { drop: 'after' }, count: 1 });
        await assert.rejects(refresh(client, g.refresh_token));
        const view = await c.admin('GET', `/admin/grants/${g.grant_id}`);
        assert.equal(view.rotations, 1);
        assert.notEqual(view.refresh_token, g.refresh_token);
        assertError(await refresh(client, g.refresh_token), 400, 'invalid_grant');
        assert.equal((await c.admin('GET', `/admin/grants/${g.grant_id}`)).revoked, true);
    });

    test('malformed_json: 200 with unparseable body, no rotation', async () => {
        const g = await mint(client);
        await c.admin('POST', '/admin/faults', { match: { grant_id: g.grant_id }, action: { malformed_json: true }, count: 1 });
        const res = await refresh(client, g.refresh_token);
        assert.equal(res.status, 200);
        assert.equal(res.json, undefined);
        assert.ok(res.text.length > 0);
        await assertNotRotated(g);
    });

    test('oversized_body_bytes: exactly N bytes of valid JSON, rotated', async () => {
        const g = await mint(client);
        await c.admin('POST', '/admin/faults', { match: { grant_id: g.grant_id }, action: { oversized_body_bytes: 2000000 }, count: 1 });
        const res = await refresh(client, g.refresh_token);
        assert.equal(res.status, 200);
        assert.equal(Buffer.byteLength(res.text), 2000000);
        assert.equal(Number(res.headers['content-length']), 2000000);
        assert.ok(res.json.refresh_token);
        assert.equal((await refresh(client, res.json.refresh_token)).status, 200);
    });

    test('omit fields; omitting refresh_token keeps the old one valid', async () => {
        const g = await mint(client);
        await c.admin('POST', '/admin/faults', { match: { grant_id: g.grant_id }, action: { omit: ['access_token', 'expires_in', 'token_type'] }, count: 1 });
        const res = await refresh(client, g.refresh_token);
        assert.equal(res.status, 200);
        for (const f of ['access_token', 'expires_in', 'token_type']) assert.equal(f in res.json, false, f);
        assert.ok(res.json.refresh_token);
        await c.admin('POST', '/admin/faults', { match: { grant_id: g.grant_id }, action: { omit: ['refresh_token'] }, count: 1 });
        const kept = await refresh(client, res.json.refresh_token);
        assert.equal(kept.status, 200);
        assert.equal('refresh_token' in kept.json, false);
        assert.equal((await refresh(client, res.json.refresh_token)).status, 200);
    });

    test('set_fields and raw_fields: a rotated success with odd fields', async () => {
        const g = await mint(client);
        await c.admin('POST', '/admin/faults', { match: { grant_id: g.grant_id }, count: 1,
            action: { set_fields: { expires_in: '', scope: 42, extra: null }, raw_fields: { refresh_token_expires_in: '99999999999999999999999', token_type: '1e400' } } });
        const res = await refresh(client, g.refresh_token);
        assert.equal(res.status, 200);
        assert.equal(res.json.expires_in, '');
        assert.equal(res.json.scope, 42);
        assert.equal(res.json.extra, null);
        assert.match(res.text, /"refresh_token_expires_in":99999999999999999999999[,}]/);
        assert.match(res.text, /"token_type":1e400[,}]/);
        assert.equal((res.text.match(/"token_type"/g) || []).length, 1, 'a raw field replaces the normal one');
        assert.ok(res.json.access_token);
        // It rotated: the new token works, the old one is now reuse.
        assert.equal((await refresh(client, res.json.refresh_token)).status, 200);
        assert.equal((await refresh(client, g.refresh_token)).status, 400);
        await assert.rejects(c.admin('POST', '/admin/faults', { action: { set_fields: ['expires_in'] } }), { status: 400 });
        await assert.rejects(c.admin('POST', '/admin/faults', { action: { raw_fields: { expires_in: 5 } } }), { status: 400 });
        await assert.rejects(c.admin('POST', '/admin/faults', { match: { endpoint: 'revoke' }, action: { set_fields: { a: 1 } } }), { status: 400 });
    });

    test('id_token_claims overrides claims', async () => {
        const g = await mint(client);
        await c.admin('POST', '/admin/faults', { match: { subject: 'alice', client_id: client.client_id }, action: { id_token_claims: { sub: 'someone-else' } }, count: 1 });
        const res = await refresh(client, g.refresh_token);
        assert.equal(decodeJwt(res.json.id_token).payload.sub, 'someone-else');
        assert.equal(decodeJwt(res.json.id_token).payload.iss, idp.url);
    });

    test('id_token_omit leaves claims out', async () => {
        const g = await mint(client);
        await c.admin('POST', '/admin/faults', { match: { grant_id: g.grant_id }, action: { id_token_omit: ['auth_time', 'azp'], id_token_claims: { acr: '1' } }, count: 1 });
        const res = await refresh(client, g.refresh_token);
        const { payload } = decodeJwt(res.json.id_token);
        assert.equal('auth_time' in payload, false);
        assert.equal('azp' in payload, false);
        assert.equal(payload.acr, '1');
        assert.equal(payload.sub, 'alice');
        await assert.rejects(c.admin('POST', '/admin/faults', { action: { id_token_omit: 'azp' } }), { status: 400 });
    });

    test('respond_delay_ms rotates first, then answers late; revoke_used_noop', async () => {
        const quiet = await newClient({ revoke_used_noop: true });
        const g = await mint(quiet);
        await c.admin('POST', '/admin/faults', { match: { grant_id: g.grant_id }, action: { respond_delay_ms: 400 }, count: 1 });
        const t0 = Date.now();
        const pending = refresh(quiet, g.refresh_token);
        await new Promise((r) => setTimeout(r, 150));
        const view = await c.admin('GET', `/admin/grants/${g.grant_id}`);
        assert.equal(view.rotations, 1, 'rotated before the answer');
        // The used token's revocation is a no-op for this client; the current one's is not.
        assert.equal((await clientPost(quiet, '/revoke', { token: g.refresh_token })).status, 200);
        assert.equal((await c.admin('GET', `/admin/grants/${g.grant_id}`)).revoked, false);
        const res = await pending;
        assert.ok(Date.now() - t0 >= 400);
        assert.equal(res.status, 200);
        assert.ok(res.json.refresh_token === view.refresh_token, 'the answer carries the rotated token');
        assert.equal((await clientPost(quiet, '/revoke', { token: res.json.refresh_token })).status, 200);
        assert.equal((await c.admin('GET', `/admin/grants/${g.grant_id}`)).revoked, true);
        // By default, revoking a used token revokes its grant.
        const g2 = await mint(client);
        const r2 = await refresh(client, g2.refresh_token);
        assert.equal(r2.status, 200);
        await clientPost(client, '/revoke', { token: g2.refresh_token });
        assert.equal((await c.admin('GET', `/admin/grants/${g2.grant_id}`)).revoked, true);
    });

    test('oauth_error answers, without rotation', async () => {
        const g = await mint(client);
        await c.admin('POST', '/admin/faults', { match: { grant_id: g.grant_id }, action: { oauth_error: 'invalid_grant', status: 400 }, count: 1 });
        await c.admin('POST', '/admin/faults', { match: { grant_id: g.grant_id }, action: { oauth_error: 'invalid_client', status: 401 }, count: 1 });
        await c.admin('POST', '/admin/faults', { match: { grant_id: g.grant_id }, action: { oauth_error: 'unauthorized_client' }, count: 1 });
        assertError(await refresh(client, g.refresh_token), 400, 'invalid_grant');
        const r401 = await refresh(client, g.refresh_token);
        assertError(r401, 401, 'invalid_client');
        assert.ok(r401.headers['www-authenticate']);
        assertError(await refresh(client, g.refresh_token), 400, 'unauthorized_client');
        await assertNotRotated(g);
    });

    test('count, until_ms, first-match order, listing and clearing', async () => {
        const g = await mint(client, { subject: 'carol' });
        await c.admin('POST', '/admin/faults', { match: { subject: 'carol' }, action: { status: 500 }, until_ms: Date.now() - 1 });
        const { fault_id } = await c.admin('POST', '/admin/faults', { match: { subject: 'carol' }, action: { status: 503 }, count: 2 });
        await c.admin('POST', '/admin/faults', { match: { client_id: client.client_id }, action: { status: 429 } });
        assert.equal((await refresh(client, g.refresh_token)).status, 503);
        assert.equal((await refresh(client, g.refresh_token)).status, 503);
        assert.equal((await refresh(client, g.refresh_token)).status, 429);
        const listed = await c.admin('GET', '/admin/faults');
        assert.equal(listed.faults.some((f) => f.fault_id === fault_id), false);
        await c.admin('DELETE', '/admin/faults');
        assert.equal((await c.admin('GET', '/admin/faults')).faults.length, 0);
        assert.equal((await refresh(client, g.refresh_token)).status, 200);
        const other = await c.admin('POST', '/admin/faults', { action: { delay_ms: 1 } });
        await c.admin('DELETE', `/admin/faults/${other.fault_id}`);
        await assert.rejects(c.admin('DELETE', `/admin/faults/${other.fault_id}`), { status: 404 });
    });
});

describe('stats and call log', () => {
    test('counters by status and error, reset, and the timed call log', async () => {
        const client = await newClient();
        const g = await mint(client);
        await c.admin('POST', '/admin/stats/reset');
        const since = Date.now();
        const r = await refresh(client, g.refresh_token);
        assertError(await refresh(client, 'bogus'), 400, 'invalid_grant');
        assertError(await c.token({ grant_type: 'refresh_token', refresh_token: 'x' }, { basic: [client.client_id, 'no'] }), 401, 'invalid_client');
        await c.admin('POST', '/admin/faults', { match: { grant_id: g.grant_id }, action: { drop: 'before' }, count: 1 });
        await assert.rejects(refresh(client, r.json.refresh_token));
        const stats = await c.admin('GET', '/admin/stats');
        assert.equal(stats.token_requests, 4);
        assert.equal(stats.token_success, 1);
        assert.deepEqual(stats.by_status, { 200: 1, 400: 1, 401: 1 });
        assert.deepEqual(stats.by_error, { invalid_grant: 1, invalid_client: 1 });
        assert.equal(stats.dropped, 1);
        assert.equal(stats.in_flight, 0);
        for (const k of ['reuse_detected', 'revoked_grants', 'max_in_flight', 'in_flight', 'revocations']) assert.equal(typeof stats[k], 'number', k);
        const { calls } = await c.admin('GET', `/admin/calls?since_ms=${since}`);
        assert.equal(calls.length, 4);
        assert.deepEqual(calls.map((x) => x.status), [200, 400, 401, null]);
        assert.equal(calls[0].grant_id, g.grant_id);
        assert.equal(calls[0].client_id, client.client_id);
        assert.equal(calls[1].grant_id, null);
        assert.equal(calls[1].error, 'invalid_grant');
        assert.equal(calls[3].dropped, 'before');
        assert.ok(calls.every((x) => x.t_ms >= since && x.t_ms <= Date.now()));
        const mine = await c.admin('GET', `/admin/calls?since_ms=${since}&grant_id=${g.grant_id}`);
        assert.equal(mine.calls.length, 2);
        await c.admin('POST', '/admin/stats/reset');
        const zero = await c.admin('GET', '/admin/stats');
        assert.equal(zero.token_requests, 0);
        assert.deepEqual(zero.by_status, {});
    });
});

describe('plain HTTP mode and command line', () => {
    test('--http and --issuer; SIGTERM exits 0', async () => {
        const plain = await startIdp({ http: true, issuer: 'http://issuer.test/realm' });
        try {
            assert.match(plain.url, /^http:\/\/127\.0\.0\.1:\d+$/);
            const meta = await plain.client.request('GET', '/.well-known/openid-configuration');
            assert.equal(meta.json.issuer, 'http://issuer.test/realm');
            assert.equal(meta.json.token_endpoint, `${plain.url}/token`);
            await plain.client.admin('POST', '/admin/clients', { client_id: 'h', auth_method: 'none', id_token: true });
            const { grants } = await plain.client.admin('POST', '/admin/grants', { client_id: 'h', subject: 's' });
            const res = await plain.client.token({ grant_type: 'refresh_token', refresh_token: grants[0].refresh_token, client_id: 'h' });
            assert.equal(res.status, 200);
            assert.equal(decodeJwt(res.json.id_token).payload.iss, 'http://issuer.test/realm');
        } finally {
            assert.equal(await plain.stop(), 0);
        }
    });

    test('a bad command line exits early with an error', async () => {
        await assert.rejects(startIdp({ certDir, port: -1 }), /exited early/);
    });
});

// ---- private_key_jwt (RFC 7523) client authentication ----

// Signs a client assertion as a compact JWS (RS256, or ES256 in its 64-byte R||S form).
function signAssertion(privateKey, alg, claims, headerExtra = {}) {
    const enc = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
    const input = `${enc({ alg, typ: 'JWT', ...headerExtra })}.${enc(claims)}`;
    const key = alg === 'ES256' ? { key: privateKey, dsaEncoding: 'ieee-p1363' } : privateKey;
    return `${input}.${crypto.sign('sha256', Buffer.from(input), key).toString('base64url')}`;
}

// Standard assertion claims for a client and an endpoint of this IdP, with overrides.
function assertionClaims(clientId, endpoint, extra = {}) {
    const now = Math.floor(Date.now() / 1000);
    return { iss: clientId, sub: clientId, aud: `${idp.url}/${endpoint}`, iat: now, exp: now + 60, jti: crypto.randomUUID(), ...extra };
}

// The form fields of private_key_jwt authentication.
function assertionForm(clientId, jwt) {
    return { client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer', client_assertion: jwt, client_id: clientId };
}

describe('private_key_jwt', () => {
    const rsa = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
    const ec = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
    let rsaClient;
    let ecClient;

    before(async () => {
        rsaClient = `pkjwt-rsa-${++nextId}`;
        ecClient = `pkjwt-ec-${++nextId}`;
        const a = await c.admin('POST', '/admin/clients', {
            client_id: rsaClient, auth_method: 'private_key_jwt',
            jwk_or_pem: rsa.publicKey.export({ type: 'spki', format: 'pem' }),
        });
        assert.equal(a.client.assertion_alg, 'RS256');
        assert.equal('jwk_or_pem' in a.client, false);
        const b = await c.admin('POST', '/admin/clients', {
            client_id: ecClient, auth_method: 'private_key_jwt', jwk_or_pem: ec.publicKey.export({ format: 'jwk' }),
        });
        assert.equal(b.client.assertion_alg, 'ES256');
    });

    // A refresh of a fresh grant of `clientId` authenticated with the given assertion.
    async function refreshWith(clientId, jwt, extraForm = {}) {
        const g = await mint({ client_id: clientId });
        return c.token({ grant_type: 'refresh_token', refresh_token: g.refresh_token, ...assertionForm(clientId, jwt), ...extraForm });
    }

    test('RS256 and ES256 assertions authenticate /token, /revoke and /introspect; counted as verified', async () => {
        const s0 = (await c.admin('GET', '/admin/stats')).assertions;
        for (const [id, key, alg] of [[rsaClient, rsa.privateKey, 'RS256'], [ecClient, ec.privateKey, 'ES256']]) {
            const g = await mint({ client_id: id });
            const res = await c.token({ grant_type: 'refresh_token', refresh_token: g.refresh_token,
                ...assertionForm(id, signAssertion(key, alg, assertionClaims(id, 'token'), { kid: 'k1' })) });
            assert.equal(res.status, 200, `${alg}: HTTP ${res.status}, error ${res.json && res.json.error}`);
            const intro = await c.request('POST', '/introspect', {
                form: { token: res.json.refresh_token, ...assertionForm(id, signAssertion(key, alg, assertionClaims(id, 'introspect'))) } });
            assert.equal(intro.json.active, true);
            const rev = await c.request('POST', '/revoke', {
                form: { token: res.json.refresh_token, ...assertionForm(id, signAssertion(key, alg, assertionClaims(id, 'revoke'))) } });
            assert.equal(rev.status, 200);
            assert.equal((await c.admin('GET', `/admin/grants/${g.grant_id}`)).revoked, true);
        }
        const s1 = (await c.admin('GET', '/admin/stats')).assertions;
        assert.equal(s1.verified, s0.verified + 6);
        for (const k of Object.keys(s1)) if (k !== 'verified') assert.equal(s1[k], s0[k], k);
    });

    test('aud may be an array containing the endpoint URL; client_id in the body is optional', async () => {
        const claims = assertionClaims(ecClient, 'token', { aud: ['https://other.example', `${idp.url}/token`] });
        const g = await mint({ client_id: ecClient });
        const res = await c.token({ grant_type: 'refresh_token', refresh_token: g.refresh_token,
            client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
            client_assertion: signAssertion(ec.privateKey, 'ES256', claims) });
        assert.equal(res.status, 200, `HTTP ${res.status}, error ${res.json && res.json.error}`);
    });

    test('a replayed jti is refused, and counted', async () => {
        const jwt = signAssertion(rsa.privateKey, 'RS256', assertionClaims(rsaClient, 'token'));
        const since = Date.now();
        assert.equal((await refreshWith(rsaClient, jwt)).status, 200);
        const s0 = (await c.admin('GET', '/admin/stats')).assertions;
        const again = await refreshWith(rsaClient, jwt);
        assertError(again, 401, 'invalid_client');
        const s1 = (await c.admin('GET', '/admin/stats')).assertions;
        assert.equal(s1.replayed, s0.replayed + 1);
        assert.equal(s1.verified, s0.verified);
        const { calls } = await c.admin('GET', `/admin/calls?since_ms=${since}&client_id=${rsaClient}`);
        assert.deepEqual(calls.map((x) => [x.endpoint, x.status, x.assertion]), [['token', 200, 'verified'], ['token', 401, 'replayed']]);
        assert.deepEqual(calls[1].assertion_header, { alg: 'RS256', typ: 'JWT' });
        const sent = JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString());
        assert.deepEqual(calls[1].assertion_claims, sent);
    });

    test('each defect is refused with invalid_client and counted under its reason', async () => {
        const other = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
        const now = Math.floor(Date.now() / 1000);
        const es = (claims, header) => signAssertion(ec.privateKey, 'ES256', claims, header);
        const derSig = (() => {
            const input = `${Buffer.from(JSON.stringify({ alg: 'ES256', typ: 'JWT' })).toString('base64url')}.${Buffer.from(JSON.stringify(assertionClaims(ecClient, 'token'))).toString('base64url')}`;
            return `${input}.${crypto.sign('sha256', Buffer.from(input), ec.privateKey).toString('base64url')}`;
        })();
        const basicClient = await newClient();
        const cases = [
            ['bad_signature', ecClient, signAssertion(other.privateKey, 'ES256', assertionClaims(ecClient, 'token'))],
            ['bad_signature', ecClient, derSig],
            ['bad_alg', ecClient, signAssertion(rsa.privateKey, 'RS256', assertionClaims(ecClient, 'token'))],
            ['bad_alg', ecClient, `${Buffer.from('{"alg":"none"}').toString('base64url')}.${Buffer.from(JSON.stringify(assertionClaims(ecClient, 'token'))).toString('base64url')}.`],
            ['bad_aud', ecClient, es(assertionClaims(ecClient, 'token', { aud: `${idp.url}/revoke` }))],
            ['bad_aud', ecClient, es(assertionClaims(ecClient, 'token', { aud: idp.url }))],
            ['expired', ecClient, es(assertionClaims(ecClient, 'token', { iat: now - 120, exp: now - 60 }))],
            ['expired', ecClient, es(assertionClaims(ecClient, 'token', { exp: undefined }))],
            ['too_long', ecClient, es(assertionClaims(ecClient, 'token', { exp: now + 3600 }))],
            ['bad_iat', ecClient, es(assertionClaims(ecClient, 'token', { iat: undefined }))],
            ['bad_sub', ecClient, es(assertionClaims(ecClient, 'token', { sub: 'someone' }))],
            ['bad_iss', ecClient, es(assertionClaims(ecClient, 'token', { iss: undefined }))],
            ['missing_jti', ecClient, es(assertionClaims(ecClient, 'token', { jti: undefined }))],
            ['client_id_mismatch', rsaClient, es(assertionClaims(ecClient, 'token'))],
            ['wrong_method', basicClient.client_id, es(assertionClaims(basicClient.client_id, 'token'))],
            ['unknown_client', 'nobody', es(assertionClaims('nobody', 'token'))],
            ['malformed', ecClient, 'not-a-jwt'],
        ];
        for (const [reason, bodyId, jwt] of cases) {
            const s0 = (await c.admin('GET', '/admin/stats')).assertions;
            const g = await mint({ client_id: ecClient });
            const res = await c.token({ grant_type: 'refresh_token', refresh_token: g.refresh_token, ...assertionForm(bodyId, jwt) });
            assert.equal(res.status, 401, `${reason}: HTTP ${res.status}`);
            assert.equal(res.json.error, 'invalid_client', reason);
            const s1 = (await c.admin('GET', '/admin/stats')).assertions;
            assert.equal(s1[reason], s0[reason] + 1, `${reason} counted`);
            assert.equal(s1.verified, s0.verified, `${reason}: nothing verified`);
        }
        const wrongType = await refreshWith(ecClient, es(assertionClaims(ecClient, 'token')),
            { client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:saml2-bearer' });
        assertError(wrongType, 401, 'invalid_client');
        // An assertion for a secret client, or a secret or Basic alongside an assertion.
        const g = await mint({ client_id: ecClient });
        const both = await c.token({ grant_type: 'refresh_token', refresh_token: g.refresh_token,
            ...assertionForm(ecClient, es(assertionClaims(ecClient, 'token'))) }, { basic: [ecClient, 'x'] });
        assertError(both, 400, 'invalid_request');
        const noAssertion = await c.token({ grant_type: 'refresh_token', refresh_token: g.refresh_token, client_id: ecClient });
        assertError(noAssertion, 401, 'invalid_client');
        // Refused at /revoke when aud names /token.
        const rev = await c.request('POST', '/revoke', { form: { token: g.refresh_token, ...assertionForm(ecClient, es(assertionClaims(ecClient, 'token'))) } });
        assertError(rev, 401, 'invalid_client');
        assert.equal((await c.admin('GET', `/admin/grants/${g.grant_id}`)).revoked, false);
    });

    test('admin validation of private_key_jwt clients', async () => {
        const bad = [
            { client_id: 'k1', auth_method: 'private_key_jwt' },
            { client_id: 'k2', auth_method: 'private_key_jwt', client_secret: 's', jwk_or_pem: ec.publicKey.export({ format: 'jwk' }) },
            { client_id: 'k3', auth_method: 'private_key_jwt', jwk_or_pem: 'not a pem' },
            { client_id: 'k4', auth_method: 'private_key_jwt', jwk_or_pem: crypto.generateKeyPairSync('ec', { namedCurve: 'P-384' }).publicKey.export({ type: 'spki', format: 'pem' }) },
            { client_id: 'k5', client_secret: 's', jwk_or_pem: ec.publicKey.export({ format: 'jwk' }) },
        ];
        for (const body of bad) await assert.rejects(c.admin('POST', '/admin/clients', body), { status: 400 }, body.client_id);
    });
});

describe('revocation endpoint faults and call log', () => {
    test('a rule with endpoint "revoke" fails /revoke only; rules without it stay at /token', async () => {
        const client = await newClient();
        const g = await mint(client);
        await c.admin('POST', '/admin/faults', { match: { client_id: client.client_id, endpoint: 'revoke' }, action: { status: 503, retry_after: '2' } });
        await c.admin('POST', '/admin/faults', { match: { client_id: client.client_id }, action: { status: 500 }, count: 1 });
        const s0 = await c.admin('GET', '/admin/stats');
        const since = Date.now();
        const rev = await clientPost(client, '/revoke', { token: g.refresh_token, token_type_hint: 'refresh_token' });
        assertError(rev, 503, 'temporarily_unavailable');
        assert.equal(rev.headers['retry-after'], '2');
        assert.equal((await c.admin('GET', `/admin/grants/${g.grant_id}`)).revoked, false);
        assertError(await refresh(client, g.refresh_token), 500, 'temporarily_unavailable');
        const r = await refresh(client, g.refresh_token);
        assert.equal(r.status, 200);
        await c.admin('DELETE', '/admin/faults');
        assert.equal((await clientPost(client, '/revoke', { token: r.json.refresh_token, token_type_hint: 'refresh_token' })).status, 200);
        assert.equal((await c.admin('GET', `/admin/grants/${g.grant_id}`)).revoked, true);
        const s1 = await c.admin('GET', '/admin/stats');
        assert.equal(s1.revoke.requests, s0.revoke.requests + 2);
        assert.equal(s1.revocations, s0.revocations + 1);
        assert.equal(s1.token_requests, s0.token_requests + 2);
        const q = `since_ms=${since}&client_id=${encodeURIComponent(client.client_id)}`;
        const tokenCalls = (await c.admin('GET', `/admin/calls?${q}`)).calls;
        assert.deepEqual(tokenCalls.map((x) => [x.endpoint, x.status]), [['token', 500], ['token', 200]]);
        const revCalls = (await c.admin('GET', `/admin/calls?${q}&endpoint=revoke`)).calls;
        assert.deepEqual(revCalls.map((x) => [x.endpoint, x.status, x.error ?? null, x.grant_id, x.token_kind, x.token_type_hint, Boolean(x.fault_id)]), [
            ['revoke', 503, 'temporarily_unavailable', g.grant_id, 'refresh_token', 'refresh_token', true],
            ['revoke', 200, null, g.grant_id, 'refresh_token', 'refresh_token', false],
        ]);
        assert.equal((await c.admin('GET', `/admin/calls?${q}&endpoint=all`)).calls.length, 4);
        await assert.rejects(c.admin('GET', `/admin/calls?${q}&endpoint=introspect`), { status: 400 });
    });

    test('drop before and after, delay, oauth_error and until_ms at /revoke', async () => {
        const client = await newClient({ auth_method: 'client_secret_post' });
        const g = await mint(client);
        await c.admin('POST', '/admin/faults', { match: { grant_id: g.grant_id, endpoint: 'revoke' }, action: { drop: 'before' }, count: 1 });
        await c.admin('POST', '/admin/faults', { match: { grant_id: g.grant_id, endpoint: 'revoke' }, action: { oauth_error: 'invalid_client' }, count: 1 });
        await c.admin('POST', '/admin/faults', { match: { endpoint: 'revoke', subject: 'alice' }, action: { status: 500 }, until_ms: Date.now() - 1 });
        const s0 = await c.admin('GET', '/admin/stats');
        await assert.rejects(clientPost(client, '/revoke', { token: g.refresh_token }));
        assert.equal((await c.admin('GET', `/admin/grants/${g.grant_id}`)).revoked, false);
        assertError(await clientPost(client, '/revoke', { token: g.refresh_token }), 401, 'invalid_client');
        assert.equal((await c.admin('GET', `/admin/grants/${g.grant_id}`)).revoked, false);
        await c.admin('POST', '/admin/faults', { match: { grant_id: g.grant_id, endpoint: 'revoke' }, action: { delay_ms: 200, drop: 'after' }, count: 1 });
        const t0 = Date.now();
        await assert.rejects(clientPost(client, '/revoke', { token: g.refresh_token }));
        assert.ok(Date.now() - t0 >= 200);
        assert.equal((await c.admin('GET', `/admin/grants/${g.grant_id}`)).revoked, true, 'drop after: revoked, unanswered');
        const s1 = await c.admin('GET', '/admin/stats');
        assert.equal(s1.revoke.dropped, s0.revoke.dropped + 2);
        assert.equal(s1.dropped, s0.dropped, '/token drops are counted apart');
        assert.equal(s1.revocations, s0.revocations);
    });

    test('revoke rules are validated: endpoint name and token-only actions', async () => {
        await assert.rejects(c.admin('POST', '/admin/faults', { match: { endpoint: 'introspect' }, action: { status: 500 } }), { status: 400 });
        await assert.rejects(c.admin('POST', '/admin/faults', { match: { endpoint: 'revoke' }, action: { omit: ['access_token'] } }), { status: 400 });
        await assert.rejects(c.admin('POST', '/admin/faults', { match: { endpoint: 'revoke' }, action: { id_token_claims: { sub: 'x' } } }), { status: 400 });
        const ok = await c.admin('POST', '/admin/faults', { match: { endpoint: 'token' }, action: { omit: ['scope'] }, count: 1 });
        assert.ok(ok.fault_id);
    });
});

describe('chaos soak additions: cut answers, patched fields, same-grant login, lookup, token sequence', () => {
    test('cut_answer: a 200 cut half way, no rotation; counted as dropped mid_answer', async () => {
        const client = await newClient();
        const g = await mint(client);
        await c.admin('POST', '/admin/faults', { match: { grant_id: g.grant_id }, action: { cut_answer: true }, count: 1 });
        const since = Date.now();
        const s0 = await c.admin('GET', '/admin/stats');
        await assert.rejects(refresh(client, g.refresh_token));
        const view = await c.admin('GET', `/admin/grants/${g.grant_id}`);
        assert.equal(view.refresh_token, g.refresh_token, 'not rotated');
        assert.equal((await c.admin('GET', '/admin/stats')).dropped, s0.dropped + 1);
        const { calls } = await c.admin('GET', `/admin/calls?since_ms=${since}&grant_id=${g.grant_id}`);
        assert.equal(calls[0].dropped, 'mid_answer');
        assert.equal((await refresh(client, g.refresh_token)).status, 200);
        await assert.rejects(c.admin('POST', '/admin/faults', { action: { cut_answer: 1 } }), { status: 400 });
    });

    test('patch_fields: odd optional fields over a rotated success answer', async () => {
        const client = await newClient();
        const g = await mint(client);
        await c.admin('POST', '/admin/faults', { match: { grant_id: g.grant_id }, action: { patch_fields: { expires_in: '', scope: 42 } }, count: 1 });
        const r = await refresh(client, g.refresh_token);
        assert.equal(r.status, 200);
        assert.equal(r.json.expires_in, '');
        assert.equal(r.json.scope, 42);
        assert.equal((await c.admin('GET', `/admin/grants/${g.grant_id}`)).refresh_token, r.json.refresh_token, 'rotated');
        await assert.rejects(c.admin('POST', '/admin/faults', { action: { patch_fields: [] } }), { status: 400 });
    });

    test('same-grant login, lookup of refresh tokens, grant list and the sequence in the call log', async () => {
        const client = await newClient({ id_token: true });
        const g = await mint(client);
        const since = Date.now();
        const r1 = await refresh(client, g.refresh_token);
        const again = await c.admin('POST', `/admin/grants/${g.grant_id}/login`);
        assert.equal(again.grant_id, g.grant_id);
        assert.ok(again.access_token && again.refresh_token && again.id_token);
        const look = await c.admin('POST', '/admin/lookup', { refresh_tokens: [g.refresh_token, r1.json.refresh_token, again.refresh_token, 'nope'] });
        assert.deepEqual(look.tokens.map((t) => t && [t.seq, t.used, t.current, t.revoked]),
            [[0, true, false, false], [1, false, false, false], [2, false, true, false], null]);
        assert.ok(look.tokens[0].used_ms >= since);
        // The older, unused token of the grant still refreshes (a login does not revoke it).
        assert.equal((await refresh(client, r1.json.refresh_token)).status, 200);
        assertError(await refresh(client, g.refresh_token), 400, 'invalid_grant');  // reuse
        const { calls } = await c.admin('GET', `/admin/calls?since_ms=${since}&grant_id=${g.grant_id}`);
        assert.deepEqual(calls.map((x) => [x.presented_seq, x.issued_seq ?? null, x.reuse ?? false]),
            [[0, 1, false], [1, 3, false], [0, null, true]]);
        assert.ok(calls.every((x) => Number.isInteger(x.conn) && x.conn > 0 && x.conn_ms <= x.t_ms), 'connection number and time');
        const list = await c.admin('GET', `/admin/grants?client_id=${client.client_id}`);
        assert.deepEqual(list.grants.map((x) => [x.grant_id, x.revoked, x.refresh_tokens_issued]), [[g.grant_id, true, 4]]);
        await assert.rejects(c.admin('POST', `/admin/grants/${g.grant_id}/login`), { status: 409 });
    });

    test('client_gone: the client hung up before the answer', async () => {
        const client = await newClient();
        const g = await mint(client);
        await c.admin('POST', '/admin/faults', { match: { grant_id: g.grant_id }, action: { delay_ms: 300, drop: 'before' }, count: 1 });
        const since = Date.now();
        const body = new URLSearchParams({ grant_type: 'refresh_token', refresh_token: g.refresh_token }).toString();
        const req = require('node:https').request(`${idp.url}/token`, {
            method: 'POST', ca: fs.readFileSync(idp.caPem),
            headers: { 'Content-Type': 'application/x-www-form-urlencoded', Authorization: 'Basic ' + Buffer.from(`${client.client_id}:${client.client_secret}`).toString('base64') },
        });
        req.on('error', () => {});
        req.end(body);
        // The request reached the provider (it is in its delay); then the client hangs up.
        for (let i = 0; i < 100 && (await c.admin('GET', '/admin/stats')).in_flight === 0; i++) await new Promise((r) => setTimeout(r, 10));
        req.destroy();
        for (let i = 0; i < 100 && !(await c.admin('GET', `/admin/calls?since_ms=${since}&grant_id=${g.grant_id}`)).calls[0]?.dropped; i++) {
            await new Promise((r) => setTimeout(r, 20));
        }
        const { calls } = await c.admin('GET', `/admin/calls?since_ms=${since}&grant_id=${g.grant_id}`);
        assert.equal(calls[0].client_gone, true);
    });
});

// ---- provider shapes: providers' own endpoint paths, idle refresh tokens, error styles, extra fields ----

describe('token_paths and revoke_paths', () => {
    // A refresh sent to another path of the provider, authenticated the way the client is configured.
    function refreshAt(urlPath, client, refreshToken) {
        const form = { grant_type: 'refresh_token', refresh_token: refreshToken };
        return c.request('POST', urlPath, { ...credentials(client, form), form });
    }

    test('listed paths serve /token and /revoke: same handling, log, faults and stats; /token keeps working', async () => {
        const kc = '/realms/x/protocol/openid-connect/token';
        const client = await newClient();
        const g = await mint(client);
        assert.equal((await refreshAt('/oauth/token', client, g.refresh_token)).status, 404, 'not served before it is listed');
        const set = await c.admin('POST', '/admin/settings', { token_paths: ['/oauth/token', kc, '/api/oauth.v2.access'], revoke_paths: ['/oauth/revoke'] });
        try {
            assert.deepEqual(set.token_paths, ['/oauth/token', kc, '/api/oauth.v2.access']);
            const shown = await c.admin('GET', '/admin/settings');
            assert.deepEqual([shown.token_paths, shown.revoke_paths], [['/oauth/token', kc, '/api/oauth.v2.access'], ['/oauth/revoke']]);
            const s0 = await c.admin('GET', '/admin/stats');
            const since = Date.now();
            const r1 = await refreshAt('/oauth/token', client, g.refresh_token);
            assert.equal(r1.status, 200, `HTTP ${r1.status}`);
            assert.equal(r1.headers['cache-control'], 'no-store');
            const r2 = await refreshAt(kc, client, r1.json.refresh_token);
            assert.equal(r2.status, 200);
            const r3 = await refresh(client, r2.json.refresh_token);  // /token itself
            assert.equal(r3.status, 200);
            // A /token fault rule applies at the other path too, and the request is still a GET-less POST endpoint.
            await c.admin('POST', '/admin/faults', { match: { grant_id: g.grant_id }, action: { status: 503 }, count: 1 });
            assertError(await refreshAt('/api/oauth.v2.access', client, r3.json.refresh_token), 503, 'temporarily_unavailable');
            assert.equal((await c.request('GET', '/oauth/token')).status, 405);
            // Reuse at another path revokes the grant, as at /token.
            assertError(await refreshAt(kc, client, g.refresh_token), 400, 'invalid_grant');
            assert.equal((await c.admin('GET', `/admin/grants/${g.grant_id}`)).revoked, true);
            const s1 = await c.admin('GET', '/admin/stats');
            assert.equal(s1.token_requests, s0.token_requests + 6);
            assert.equal(s1.token_success, s0.token_success + 3);
            assert.equal(s1.reuse_detected, s0.reuse_detected + 1);
            const { calls } = await c.admin('GET', `/admin/calls?since_ms=${since}&client_id=${client.client_id}`);
            assert.deepEqual(calls.map((x) => [x.endpoint, x.path ?? '/token', x.status, Boolean(x.fault_id), x.reuse ?? false]), [
                ['token', '/oauth/token', 200, false, false],
                ['token', kc, 200, false, false],
                ['token', '/token', 200, false, false],
                ['token', '/api/oauth.v2.access', 503, true, false],
                ['token', kc, 400, false, true],
            ]);
            // revoke_paths
            const g2 = await mint(client);
            const rev = await clientPost(client, '/oauth/revoke', { token: g2.refresh_token });
            assert.equal(rev.status, 200);
            assert.equal((await c.admin('GET', `/admin/grants/${g2.grant_id}`)).revoked, true);
            const revCalls = (await c.admin('GET', `/admin/calls?since_ms=${since}&grant_id=${g2.grant_id}&endpoint=revoke`)).calls;
            assert.deepEqual(revCalls.map((x) => [x.endpoint, x.path, x.status, x.token_kind]), [['revoke', '/oauth/revoke', 200, 'refresh_token']]);
            const notToken = await refreshAt('/oauth/revoke', client, 'x');
            assertError(notToken, 400, 'invalid_request');  // /revoke's answer: no `token` parameter
            assert.equal(notToken.json.error_description, 'token missing', 'a revoke path is not a token path');
            assert.equal((await c.admin('GET', '/admin/stats')).revoke.requests, s1.revoke.requests + 2);
            // Setting one list leaves the other as it is; null restores the default.
            await c.admin('POST', '/admin/settings', { token_paths: null });
            assert.equal((await c.admin('GET', '/admin/settings')).revoke_paths[0], '/oauth/revoke');
            assert.equal((await refreshAt('/oauth/token', client, 'x')).status, 404);
        } finally {
            await c.admin('POST', '/admin/settings', { token_paths: null, revoke_paths: null });
        }
        assert.equal((await clientPost(client, '/oauth/revoke', { token: 'x' })).status, 404);
    });

    test('private_key_jwt at a listed path: the assertion audience is that path\'s URL', async () => {
        const ec = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
        const id = `pk-path-${++nextId}`;
        await c.admin('POST', '/admin/clients', { client_id: id, auth_method: 'private_key_jwt', jwk_or_pem: ec.publicKey.export({ format: 'jwk' }) });
        await c.admin('POST', '/admin/settings', { token_paths: ['/oauth2/v2.0/token'] });
        try {
            const withAud = async (aud) => {
                const g = await mint({ client_id: id });
                return c.request('POST', '/oauth2/v2.0/token', { form: { grant_type: 'refresh_token', refresh_token: g.refresh_token,
                    ...assertionForm(id, signAssertion(ec.privateKey, 'ES256', assertionClaims(id, 'token', { aud }))) } });
            };
            assert.equal((await withAud(`${idp.url}/oauth2/v2.0/token`)).status, 200);
            const s0 = (await c.admin('GET', '/admin/stats')).assertions;
            assertError(await withAud(`${idp.url}/token`), 401, 'invalid_client');
            assert.equal((await c.admin('GET', '/admin/stats')).assertions.bad_aud, s0.bad_aud + 1);
        } finally {
            await c.admin('POST', '/admin/settings', { token_paths: null });
        }
    });

    test('validation: paths, counts, clashes and typos get 400 and change nothing', async () => {
        const bad = [
            { token_paths: ['oauth/token'] },
            { token_paths: ['/oauth/token?x=1'] },
            { token_paths: ['/a b'] },
            { token_paths: [''] },
            { token_paths: [42] },
            { token_paths: '/oauth/token' },
            { token_paths: {} },
            { token_paths: Array.from({ length: 33 }, (_, i) => `/t${i}`) },
            { token_paths: ['/revoke'] },
            { token_paths: ['/introspect'] },
            { token_paths: ['/admin/health'] },
            { token_paths: ['/.well-known/openid-configuration'] },
            { revoke_paths: ['/token'] },
            { token_paths: ['/x', '/x'] },
            { token_paths: ['/x'], revoke_paths: ['/x'] },
            { token_path: ['/x'] },
            { revoke_paths: ['/ok'], issuer: 5 },
        ];
        for (const body of bad) await assert.rejects(c.admin('POST', '/admin/settings', body), { status: 400 }, JSON.stringify(body).slice(0, 80));
        const shown = await c.admin('GET', '/admin/settings');
        assert.deepEqual([shown.token_paths, shown.revoke_paths, shown.issuer], [null, null, null]);
        const ok = await c.admin('POST', '/admin/settings', { token_paths: [...Array.from({ length: 31 }, (_, i) => `/t${i}`), '/token'] });
        assert.equal(ok.token_paths.length, 32);
        await c.admin('POST', '/admin/settings', { revoke_paths: ['/t40'] });
        await assert.rejects(c.admin('POST', '/admin/settings', { revoke_paths: ['/t3'] }), { status: 400 }, 'clash with the current token_paths');
        await c.admin('POST', '/admin/settings', { token_paths: null, revoke_paths: null });
    });
});

describe('refresh_token_idle_ttl', () => {
    const sleepMs = (ms) => new Promise((r) => setTimeout(r, ms));

    test('rotating client: a token idle for N s gets invalid_grant, nothing revoked, not reuse; each refresh restarts the clock', async () => {
        const client = await newClient({ refresh_token_idle_ttl: 1 });
        const g = await mint(client);
        const plain = await newClient();  // without the quirk nothing idles (checked at the end)
        const pg = await mint(plain);
        await sleepMs(650);
        const r1 = await refresh(client, g.refresh_token);
        assert.equal(r1.status, 200);
        await sleepMs(650);  // 1.3 s after the login, 0.65 s after r1 was issued
        const r2 = await refresh(client, r1.json.refresh_token);
        assert.equal(r2.status, 200, 'the idle clock restarts when the grant is refreshed');
        assert.equal((await c.admin('GET', `/admin/grants/${g.grant_id}`)).idle_expired, false);
        await sleepMs(1100);
        const s0 = await c.admin('GET', '/admin/stats');
        const since = Date.now();
        const idle = await refresh(client, r2.json.refresh_token);
        assertError(idle, 400, 'invalid_grant');
        assert.equal(idle.json.error_description, 'refresh token idle for too long');
        assertError(await refresh(client, r2.json.refresh_token), 400, 'invalid_grant');
        const s1 = await c.admin('GET', '/admin/stats');
        assert.equal(s1.idle_expired, s0.idle_expired + 2);
        assert.equal(s1.reuse_detected, s0.reuse_detected);
        assert.equal(s1.revoked_grants, s0.revoked_grants);
        const view = await c.admin('GET', `/admin/grants/${g.grant_id}`);
        assert.deepEqual([view.idle_expired, view.active, view.revoked, view.reuse_detected, view.refresh_token],
            [true, false, false, 0, r2.json.refresh_token]);
        assert.deepEqual((await clientPost(client, '/introspect', { token: r2.json.refresh_token })).json, { active: false });
        const { calls } = await c.admin('GET', `/admin/calls?since_ms=${since}&grant_id=${g.grant_id}`);
        assert.deepEqual(calls.map((x) => [x.status, x.error, x.idle_expired, x.reuse ?? false]), [[400, 'invalid_grant', true, false], [400, 'invalid_grant', true, false]]);
        // A login restarts the grant's clock.
        const again = await c.admin('POST', `/admin/grants/${g.grant_id}/login`);
        assert.equal((await c.admin('GET', `/admin/grants/${g.grant_id}`)).idle_expired, false);
        assert.equal((await clientPost(client, '/introspect', { token: again.refresh_token })).json.active, true);
        assert.equal((await refresh(client, again.refresh_token)).status, 200);
        assert.equal((await refresh(plain, pg.refresh_token)).status, 200, 'no quirk: still valid after 2.4 s');
    });

    test('no_rotation client: the same token keeps working while it is used within N s of its last use', async () => {
        const client = await newClient({ refresh_token_idle_ttl: 1, no_rotation: true });
        const g = await mint(client);
        for (let i = 0; i < 2; i++) {
            await sleepMs(650);
            const res = await refresh(client, g.refresh_token);
            assert.equal(res.status, 200, `use ${i}, 1.3 s in total: each use restarts the idle clock`);
        }
        await sleepMs(1100);
        const idle = await refresh(client, g.refresh_token);
        assertError(idle, 400, 'invalid_grant');
        assert.equal(idle.json.error_description, 'refresh token idle for too long');
        const view = await c.admin('GET', `/admin/grants/${g.grant_id}`);
        assert.deepEqual([view.idle_expired, view.revoked], [true, false]);
    });

    test('validation', async () => {
        for (const v of [0, -1, 1.5, '5', true]) {
            await assert.rejects(c.admin('POST', '/admin/clients', { client_id: 'idle-x', client_secret: 's', refresh_token_idle_ttl: v }), { status: 400 }, String(v));
        }
        await assert.rejects(c.admin('POST', '/admin/clients', { client_id: 'idle-x', client_secret: 's', refresh_token_idel_ttl: 5 }), { status: 400 });
        const ok = await c.admin('POST', '/admin/clients', { client_id: 'idle-x', client_secret: 's', refresh_token_idle_ttl: 30 });
        assert.equal(ok.client.refresh_token_idle_ttl, 30);
    });
});

describe('error_style', () => {
    const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
    const styles = {
        github: [200, 'bad_refresh_token', (b) => {
            assert.deepEqual(Object.keys(b), ['error', 'error_description', 'error_uri']);
            assert.equal(b.error, 'bad_refresh_token');
            assert.equal(b.error_description, 'The refresh token passed is incorrect or expired.');
            assert.match(b.error_uri, /^https:\/\/docs\.github\.com\//);
        }],
        slack: [200, 'invalid_refresh_token', (b) => assert.deepEqual(b, { ok: false, error: 'invalid_refresh_token' })],
        hubspot: [400, 'BAD_REFRESH_TOKEN', (b) => {
            assert.deepEqual(Object.keys(b), ['status', 'message', 'correlationId']);
            assert.deepEqual([b.status, b.message], ['BAD_REFRESH_TOKEN', 'missing or unknown refresh token']);
            assert.match(b.correlationId, uuid);
        }],
        forbidden: [403, 'invalid_grant', (b) => assert.deepEqual(b, { error: 'invalid_grant', error_description: 'Unknown or invalid refresh token.' })],
        entra: [400, 'invalid_grant', (b) => {
            assert.equal(b.error, 'invalid_grant');
            assert.match(b.error_description, /^AADSTS70000: /);
            assert.deepEqual(b.error_codes, [70000]);
            assert.match(b.timestamp, /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ$/);
            assert.match(b.trace_id, uuid);
            assert.match(b.correlation_id, uuid);
        }],
    };

    for (const [style, [status, code, check]] of Object.entries(styles)) {
        test(`${style}: reuse and unknown tokens; reuse still revokes; faults keep their shape`, async () => {
            const client = await newClient({ error_style: style, refresh_token_idle_ttl: 3600 });
            const g = await mint(client);
            const since = Date.now();
            const r1 = await refresh(client, g.refresh_token);
            assert.equal(r1.status, 200);
            assert.ok(r1.json.refresh_token, 'a success is unchanged');
            await c.admin('POST', '/admin/stats/reset');
            const reuse = await refresh(client, g.refresh_token);
            assert.equal(reuse.status, status, `${style}: HTTP ${reuse.status}`);
            check(reuse.json);
            assert.equal(reuse.headers['cache-control'], 'no-store');
            const view = await c.admin('GET', `/admin/grants/${g.grant_id}`);
            assert.deepEqual([view.revoked, view.reuse_detected], [true, 1], 'reuse still revokes the grant');
            const revoked = await refresh(client, r1.json.refresh_token);
            assert.equal(revoked.status, status);
            check(revoked.json);
            const unknown = await refresh(client, 'no-such-token');
            assert.equal(unknown.status, status);
            check(unknown.json);
            // Other errors keep the OAuth shape.
            assertError(await c.token({ grant_type: 'refresh_token', refresh_token: 'x' }, { basic: [client.client_id, 'wrong'] }), 401, 'invalid_client');
            assertError(await refresh(client, (await mint(client)).refresh_token, { scope: 'admin' }), 400, 'invalid_scope');
            // A fault's oauth_error keeps its explicit shape.
            const g2 = await mint(client);
            await c.admin('POST', '/admin/faults', { match: { grant_id: g2.grant_id }, action: { oauth_error: 'invalid_grant', error_description: 'x' }, count: 1 });
            const faulted = await refresh(client, g2.refresh_token);
            assert.equal(faulted.status, 400);
            assert.deepEqual(faulted.json, { error: 'invalid_grant', error_description: 'x' });
            const stats = await c.admin('GET', '/admin/stats');
            assert.equal(stats.token_success, 0, 'a 200 error answer is not a success');
            assert.equal(stats.by_error[code], code === 'invalid_grant' ? 4 : 3);
            // The three styled answers, plus invalid_scope and the fault's answer when the style answers with 400.
            assert.equal(stats.by_status[status], status === 400 ? 5 : 3);
            const { calls } = await c.admin('GET', `/admin/calls?since_ms=${since}&client_id=${client.client_id}`);
            assert.deepEqual(calls.slice(0, 4).map((x) => [x.status, x.error ?? null, x.reuse ?? false]),
                [[200, null, false], [status, code, true], [status, code, false], [status, code, false]]);
        });
    }

    test('the idle answer is styled too; unknown style names are refused', async () => {
        const client = await newClient({ error_style: 'slack', refresh_token_idle_ttl: 1 });
        const g = await mint(client);
        await new Promise((r) => setTimeout(r, 1100));
        const res = await refresh(client, g.refresh_token);
        assert.deepEqual([res.status, res.json], [200, { ok: false, error: 'invalid_refresh_token' }]);
        assert.equal((await c.admin('GET', `/admin/grants/${g.grant_id}`)).revoked, false);
        for (const v of ['gitlab', 'OAUTH', null, 1]) {
            await assert.rejects(c.admin('POST', '/admin/clients', { client_id: 'es-x', client_secret: 's', error_style: v }), { status: 400 }, String(v));
        }
        await assert.rejects(c.admin('POST', '/admin/clients', { client_id: 'es-x', client_secret: 's', error_styel: 'slack' }), { status: 400 });
    });
});

describe('extra_fields, expires_in_string, require_params and extra_params', () => {
    test('extra_fields are merged into /token successes only, before omit and the field faults', async () => {
        const sf = { instance_url: 'https://x.my.salesforce.com', issued_at: '1700000000000', signature: 'c2ln', created_at: 1700000000 };
        const client = await newClient({ extra_fields: { ok: true, ...sf } });
        const g = await mint(client);
        assert.equal('ok' in g, false, 'not in admin grant answers');
        assert.equal('instance_url' in g, false);
        const r1 = await refresh(client, g.refresh_token);
        assert.equal(r1.status, 200);
        assert.equal(r1.json.ok, true);
        for (const [k, v] of Object.entries(sf)) assert.deepEqual(r1.json[k], v, k);
        assert.ok(r1.json.access_token && r1.json.refresh_token);
        await c.admin('POST', '/admin/faults', { match: { grant_id: g.grant_id }, action: { set_fields: { ok: 'yes' }, omit: ['signature'] }, count: 1 });
        const r2 = await refresh(client, r1.json.refresh_token);
        assert.equal(r2.json.ok, 'yes', 'set_fields wins over extra_fields');
        assert.equal('signature' in r2.json, false, 'omit removes an extra field');
        await c.admin('POST', '/admin/faults', { match: { grant_id: g.grant_id }, action: { patch_fields: { instance_url: null } }, count: 1 });
        assert.equal((await refresh(client, r2.json.refresh_token)).json.instance_url, null, 'patch_fields wins');
        const err = await refresh(client, g.refresh_token);
        assertError(err, 400, 'invalid_grant');
        assert.equal('ok' in err.json, false, 'not in error answers');
        for (const v of [[], 'x', 1]) {
            await assert.rejects(c.admin('POST', '/admin/clients', { client_id: 'ef-x', client_secret: 's', extra_fields: v }), { status: 400 }, String(v));
        }
        await assert.rejects(c.admin('POST', '/admin/clients', { client_id: 'ef-x', client_secret: 's', extra_field: {} }), { status: 400 });
    });

    test('expires_in_string sends the lifetimes as JSON strings in /token answers', async () => {
        const client = await newClient({ expires_in_string: true, access_ttl: 28800, refresh_token_expires_in: 15811200 });
        const g = await mint(client);
        const res = await refresh(client, g.refresh_token);
        assert.equal(res.status, 200);
        assert.equal(res.json.expires_in, '28800');
        assert.equal(res.json.refresh_token_expires_in, '15811200');
        assert.match(res.text, /"expires_in":"28800"/);
        const kc = await newClient({ expires_in_string: true, refresh_token_expires_in: 1800, refresh_expires_field: 'refresh_expires_in' });
        const k = await refresh(kc, (await mint(kc)).refresh_token);
        assert.deepEqual([k.json.expires_in, k.json.refresh_expires_in], ['3600', '1800']);
        const plain = await newClient({ refresh_token_expires_in: 60 });
        const p = await refresh(plain, (await mint(plain)).refresh_token);
        assert.deepEqual([p.json.expires_in, p.json.refresh_token_expires_in], [3600, 60]);
        await assert.rejects(c.admin('POST', '/admin/clients', { client_id: 'eis-x', client_secret: 's', expires_in_string: 'yes' }), { status: 400 });
    });

    test('require_params: each must be sent with exactly its value; no rotation otherwise', async () => {
        const client = await newClient({ require_params: { redirect_uri: 'https://app.example/cb', resource: 'api' } });
        const g = await mint(client);
        const since = Date.now();
        const missing = await refresh(client, g.refresh_token, { resource: 'api' });
        assertError(missing, 400, 'invalid_request');
        assert.equal(missing.json.error_description, 'missing or wrong redirect_uri');
        const wrong = await refresh(client, g.refresh_token, { redirect_uri: 'https://app.example/cb/', resource: 'api' });
        assertError(wrong, 400, 'invalid_request');
        assert.equal(wrong.json.error_description, 'missing or wrong redirect_uri');
        const noResource = await refresh(client, g.refresh_token, { redirect_uri: 'https://app.example/cb' });
        assert.equal(noResource.json.error_description, 'missing or wrong resource');
        const view = await c.admin('GET', `/admin/grants/${g.grant_id}`);
        assert.deepEqual([view.rotations, view.refresh_token, view.revoked], [0, g.refresh_token, false]);
        const ok = await refresh(client, g.refresh_token, { redirect_uri: 'https://app.example/cb', resource: 'api' });
        assert.equal(ok.status, 200);
        const { calls } = await c.admin('GET', `/admin/calls?since_ms=${since}&grant_id=${g.grant_id}`);
        assert.deepEqual(calls.map((x) => [x.status, x.extra_params]), [
            [400, ['resource']], [400, ['redirect_uri', 'resource']], [400, ['redirect_uri']], [200, ['redirect_uri', 'resource']],
        ]);
        assert.equal(JSON.stringify(calls).includes('app.example'), false, 'names only, never values');
        for (const v of [[], 'x', { redirect_uri: 5 }, { '': 'x' }]) {
            await assert.rejects(c.admin('POST', '/admin/clients', { client_id: 'rp-x', client_secret: 's', require_params: v }), { status: 400 }, JSON.stringify(v));
        }
        await assert.rejects(c.admin('POST', '/admin/clients', { client_id: 'rp-x', client_secret: 's', require_param: {} }), { status: 400 });
    });

    test('extra_params is logged for every client: names beyond the standard parameters, [] when none', async () => {
        const client = await newClient({ auth_method: 'client_secret_post' });
        const g = await mint(client);
        const since = Date.now();
        const r1 = await refresh(client, g.refresh_token, { scope: 'openid' });
        const r2 = await refresh(client, r1.json.refresh_token, { audience: 'https://api.example', redirect_uri: 'https://app.example/cb' });
        assert.equal(r2.status, 200);
        const { calls } = await c.admin('GET', `/admin/calls?since_ms=${since}&grant_id=${g.grant_id}`);
        assert.deepEqual(calls.map((x) => x.extra_params), [[], ['audience', 'redirect_uri']]);
    });
});

describe('POST /admin/reset forgets the new settings and quirks', () => {
    test('token_paths, revoke_paths, idle_expired and clients are reset', async () => {
        const own = await startIdp({ http: true });
        try {
            const a = own.client;
            await a.admin('POST', '/admin/settings', { token_paths: ['/oauth/token'], revoke_paths: ['/oauth/revoke'] });
            await a.admin('POST', '/admin/clients', { client_id: 'r', auth_method: 'none', refresh_token_idle_ttl: 1, error_style: 'slack',
                extra_fields: { ok: true }, expires_in_string: true, require_params: { redirect_uri: 'x' } });
            const { grants } = await a.admin('POST', '/admin/grants', { client_id: 'r', subject: 's' });
            await new Promise((r) => setTimeout(r, 1100));
            const idle = await a.request('POST', '/oauth/token', { form: { grant_type: 'refresh_token', refresh_token: grants[0].refresh_token, client_id: 'r', redirect_uri: 'x' } });
            assert.deepEqual(idle.json, { ok: false, error: 'invalid_refresh_token' });
            assert.equal((await a.admin('GET', '/admin/stats')).idle_expired, 1);
            await a.admin('POST', '/admin/reset');
            const settings = await a.admin('GET', '/admin/settings');
            assert.deepEqual(settings, { issuer: null, discovery: null, token_paths: null, revoke_paths: null });
            assert.equal((await a.request('POST', '/oauth/token', { form: { grant_type: 'refresh_token', refresh_token: 'x', client_id: 'r' } })).status, 404);
            assert.equal((await a.request('POST', '/oauth/revoke', { form: { token: 'x', client_id: 'r' } })).status, 404);
            assert.equal((await a.admin('GET', '/admin/stats')).idle_expired, 0);
            await a.admin('POST', '/admin/clients', { client_id: 'r', auth_method: 'none' });
            const { client } = await a.admin('POST', '/admin/clients', { client_id: 'r', auth_method: 'none' });
            assert.deepEqual([client.refresh_token_idle_ttl, client.error_style, client.extra_fields, client.expires_in_string, client.require_params],
                [null, 'oauth', null, false, null]);
        } finally {
            assert.equal(await own.stop(), 0);
        }
    });
});

describe('client_credentials and token exchange (RFC 8693)', () => {
    const TX = 'urn:ietf:params:oauth:grant-type:token-exchange';
    const AT = 'urn:ietf:params:oauth:token-type:access_token';

    // An exchange by `client` of `subjectToken`, authenticated the way the client is configured.
    function exchange(client, subjectToken, extra = {}) {
        const form = { subject_token: subjectToken, ...extra };
        return c.exchangeToken(form, credentials(client, form));
    }

    // The /token call log entries of one client since an instant.
    async function callsOf(client, since) {
        return (await c.admin('GET', `/admin/calls?since_ms=${since}&client_id=${encodeURIComponent(client.client_id)}`)).calls;
    }

    test('discovery lists both grants; other grant types stay unsupported', async () => {
        const meta = (await c.request('GET', '/.well-known/openid-configuration')).json;
        assert.ok(meta.grant_types_supported.includes('client_credentials'));
        assert.ok(meta.grant_types_supported.includes(TX));
        const client = await newClient();
        assertError(await c.token({ grant_type: 'password', username: 'a', password: 'b' }, { basic: [client.client_id, client.client_secret] }),
            400, 'unsupported_grant_type');
    });

    test('client_credentials: an access token of the client itself, scope and audience logged, no refresh token', async () => {
        const client = await newClient({ access_ttl: 900 });
        const basic = [client.client_id, client.client_secret];
        await c.admin('POST', '/admin/stats/reset');
        const since = Date.now();
        const r = await c.clientCredentials({ scope: 'api:read', audience: 'https://api.example' }, { basic });
        assert.equal(r.status, 200);
        assert.deepEqual(Object.keys(r.json).sort(), ['access_token', 'expires_in', 'scope', 'token_type']);
        assert.deepEqual([r.json.token_type, r.json.expires_in, r.json.scope], ['Bearer', 900, 'api:read']);
        const info = (await clientPost(client, '/introspect', { token: r.json.access_token })).json;
        assert.deepEqual([info.active, info.client_id, info.sub, info.scope, info.aud, info.token_kind, info.grant_id],
            [true, client.client_id, client.client_id, 'api:read', 'https://api.example', 'client_credentials', null]);
        const [view] = await c.lookupAccessTokens([r.json.access_token]);
        assert.deepEqual([view.kind, view.subject, view.audience, view.grant_id, view.active, view.exchanged_from],
            ['client_credentials', client.client_id, 'https://api.example', null, true, null]);
        // Without scope or audience: a token without either.
        const bare = await c.clientCredentials({}, { basic });
        assert.equal(bare.status, 200);
        assert.equal(bare.json.scope, undefined);
        assert.equal((await c.lookupAccessTokens([bare.json.access_token]))[0].audience, null);
        const calls = await callsOf(client, since);
        assert.deepEqual(calls.map((x) => [x.grant_type, x.status, x.scope, x.audience, x.grant_id, x.extra_params]),
            [['client_credentials', 200, 'api:read', 'https://api.example', null, []], ['client_credentials', 200, null, null, null, []]]);
        assert.equal(calls[0].issued_token_id, view.token_id);
        const stats = await c.admin('GET', '/admin/stats');
        assert.deepEqual(stats.by_grant_type, { refresh_token: 0, client_credentials: 2, token_exchange: 0 });
        assert.equal(stats.token_success, 2);
        // Client authentication as for the other grants; a public client may not use this grant.
        assertError(await c.clientCredentials({ scope: 'api:read' }, { basic: [client.client_id, 'wrong'] }), 401, 'invalid_client');
        const post = await newClient({ auth_method: 'client_secret_post' });
        assert.equal((await c.clientCredentials({ client_id: post.client_id, client_secret: post.client_secret })).status, 200);
        const pub = await newClient({ auth_method: 'none' });
        assertError(await c.clientCredentials({ client_id: pub.client_id }), 400, 'unauthorized_client');
    });

    test('client_credentials answers follow the client\'s answer quirks', async () => {
        const client = await newClient({ token_type_case: 'bearer', expires_in_string: true, extra_fields: { ok: true } });
        const r = await c.clientCredentials({ scope: 'api:read' }, { basic: [client.client_id, client.client_secret] });
        assert.deepEqual([r.json.token_type, r.json.expires_in, r.json.ok], ['bearer', '3600', true]);
    });

    test('token exchange: a new access token of the same subject, for the audience and scope asked', async () => {
        const app = await newClient();                          // the client the user logged in to
        const api = await newClient({ access_ttl: 600 });      // the service that exchanges the token
        const g = await mint(app, { subject: 'tx-user' });
        await c.admin('POST', '/admin/stats/reset');
        const since = Date.now();
        const r = await exchange(api, g.access_token, { audience: 'https://downstream.example', scope: 'api:read' });
        assert.equal(r.status, 200);
        assert.deepEqual(Object.keys(r.json).sort(), ['access_token', 'expires_in', 'issued_token_type', 'scope', 'token_type']);
        assert.deepEqual([r.json.issued_token_type, r.json.token_type, r.json.expires_in, r.json.scope], [AT, 'Bearer', 600, 'api:read']);
        assert.notEqual(r.json.access_token, g.access_token);
        assert.equal(r.headers['cache-control'], 'no-store');

        // The call log says which grant and subject the subject token was of, and what was asked.
        const [call] = await callsOf(api, since);
        assert.deepEqual(
            [call.grant_type, call.status, call.grant_id, call.subject_grant_id, call.subject, call.subject_client_id,
                call.subject_token_kind, call.subject_token_type, call.audience, call.scope, call.extra_params],
            [TX, 200, g.grant_id, g.grant_id, 'tx-user', app.client_id, 'access_token', AT, 'https://downstream.example', 'api:read', []]);
        assert.equal(JSON.stringify(call).includes(g.access_token), false, 'no token values in the log');

        // The new token: its audience, subject, client and origin, by lookup and by introspection.
        const [view] = await c.lookupAccessTokens([r.json.access_token]);
        assert.deepEqual(
            [view.kind, view.client_id, view.subject, view.audience, view.scope, view.grant_id, view.active, view.token_id],
            ['token_exchange', api.client_id, 'tx-user', 'https://downstream.example', 'api:read', g.grant_id, true, call.issued_token_id]);
        assert.deepEqual(view.exchanged_from, { token_id: null, kind: 'grant', client_id: app.client_id, grant_id: g.grant_id, subject: 'tx-user' });
        const info = (await clientPost(api, '/introspect', { token: r.json.access_token })).json;
        assert.deepEqual([info.active, info.sub, info.aud, info.client_id, info.scope, info.token_kind],
            [true, 'tx-user', 'https://downstream.example', api.client_id, 'api:read', 'token_exchange']);
        // The subject token still works, the grant saw no refresh call, and the counters moved.
        assert.equal((await clientPost(app, '/introspect', { token: g.access_token })).json.active, true);
        assert.equal((await c.admin('GET', `/admin/grants/${g.grant_id}`)).refresh_calls, 0);
        assert.equal((await c.admin('GET', '/admin/stats')).by_grant_type.token_exchange, 1);
        // Revoking the user's grant ends the exchanged token too.
        await c.admin('POST', `/admin/grants/${g.grant_id}/revoke`);
        assert.equal((await clientPost(api, '/introspect', { token: r.json.access_token })).json.active, false);
        assertError(await exchange(api, r.json.access_token), 400, 'invalid_grant');
    });

    test('token exchange: scope defaults to the subject token\'s; exchange_access_ttl; an exchanged token can be exchanged', async () => {
        const app = await newClient();
        const api = await newClient({ auth_method: 'client_secret_post', exchange_access_ttl: 120 });
        const g = await mint(app, { subject: 'tx-2', scope: 'openid offline_access api:read' });
        const r = await exchange(api, g.access_token);
        assert.equal(r.status, 200);
        assert.deepEqual([r.json.scope, r.json.expires_in], ['openid offline_access api:read', 120]);
        const again = await exchange(api, r.json.access_token, { audience: 'b', requested_token_type: AT });
        assert.equal(again.status, 200);
        const [first, second] = await c.lookupAccessTokens([r.json.access_token, again.json.access_token]);
        assert.deepEqual(second.exchanged_from, { token_id: first.token_id, kind: 'token_exchange', client_id: api.client_id,
            grant_id: g.grant_id, subject: 'tx-2' });
        // A client_credentials token can be a subject token too: its subject is the client.
        const cc = await newClient();
        const ccTok = await c.clientCredentials({ scope: 'api:read' }, { basic: [cc.client_id, cc.client_secret] });
        const fromCc = await exchange(api, ccTok.json.access_token, { audience: 'x' });
        assert.equal(fromCc.status, 200);
        assert.equal((await c.lookupAccessTokens([fromCc.json.access_token]))[0].subject, cc.client_id);
    });

    test('token exchange errors: bad subject tokens are invalid_grant, bad parameters invalid_request', async () => {
        const app = await newClient({ access_ttl: 1 });
        const api = await newClient();
        const g = await mint(app, { subject: 'tx-3' });
        const since = Date.now();
        assertError(await exchange(api, 'not-a-token'), 400, 'invalid_grant');
        assertError(await exchange(api, g.refresh_token), 400, 'invalid_grant');
        assertError(await exchange(api, g.access_token, { subject_token_type: 'urn:ietf:params:oauth:token-type:refresh_token' }), 400, 'invalid_request');
        const noType = { grant_type: TX, subject_token: g.access_token };
        assertError(await c.token(noType, { basic: [api.client_id, api.client_secret] }), 400, 'invalid_request');
        assertError(await c.exchangeToken({}, { basic: [api.client_id, api.client_secret] }), 400, 'invalid_request');
        assertError(await exchange(api, g.access_token, { requested_token_type: 'urn:ietf:params:oauth:token-type:id_token' }), 400, 'invalid_request');
        assertError(await c.exchangeToken({ subject_token: g.access_token }, { basic: [api.client_id, 'wrong'] }), 401, 'invalid_client');
        const calls = await callsOf(api, since);
        assert.deepEqual(calls.slice(0, 2).map((x) => [x.subject_token_kind, x.subject_grant_id, x.error]),
            [[null, null, 'invalid_grant'], ['refresh_token', null, 'invalid_grant']]);
        // A revoked access token, and an expired one.
        const r = await exchange(api, g.access_token);
        assert.equal(r.status, 200);
        assert.equal((await clientPost(app, '/revoke', { token: g.access_token })).status, 200);
        assertError(await exchange(api, g.access_token), 400, 'invalid_grant');
        const g2 = await mint(app, { subject: 'tx-4' });
        await new Promise((res) => setTimeout(res, 1100));
        assertError(await exchange(api, g2.access_token), 400, 'invalid_grant');
    });

    test('require_audience and audiences apply to both grants', async () => {
        const app = await newClient();
        const api = await newClient({ require_audience: true, audiences: ['https://a.example', 'https://b.example'] });
        const basic = [api.client_id, api.client_secret];
        const g = await mint(app);
        let r = await exchange(api, g.access_token);
        assertError(r, 400, 'invalid_request');
        assert.equal(r.json.error_description, 'audience required');
        assertError(await exchange(api, g.access_token, { audience: 'https://c.example' }), 400, 'invalid_target');
        assert.equal((await exchange(api, g.access_token, { audience: 'https://b.example' })).status, 200);
        r = await c.clientCredentials({ scope: 'api:read' }, { basic });
        assert.equal(r.json.error_description, 'audience required');
        assertError(await c.clientCredentials({ audience: 'https://c.example' }, { basic }), 400, 'invalid_target');
        assert.equal((await c.clientCredentials({ audience: 'https://a.example' }, { basic })).status, 200);
        // Only audiences, without require_audience: no audience is fine.
        const loose = await newClient({ audiences: ['https://a.example'] });
        assert.equal((await exchange(loose, g.access_token)).status, 200);
    });

    test('faults match a token exchange by its subject token\'s grant and subject', async () => {
        const app = await newClient();
        const api = await newClient();
        const g = await mint(app, { subject: 'tx-fault' });
        const { fault_id } = await c.admin('POST', '/admin/faults',
            { match: { subject: 'tx-fault' }, action: { oauth_error: 'invalid_target', error_description: 'no' }, count: 1 });
        const since = Date.now();
        assertError(await exchange(api, g.access_token, { audience: 'x' }), 400, 'invalid_target');
        await c.admin('POST', '/admin/faults', { match: { grant_id: g.grant_id }, action: { omit: ['expires_in'], patch_fields: { scope: 42 } }, count: 1 });
        const odd = await exchange(api, g.access_token, { audience: 'x' });
        assert.deepEqual([odd.status, odd.json.expires_in, odd.json.scope], [200, undefined, 42]);
        const calls = await callsOf(api, since);
        assert.equal(calls[0].fault_id, fault_id);
        assert.equal(calls[0].subject_grant_id, g.grant_id);
    });

    test('admin validation of the new settings and lookup', async () => {
        for (const bad of [{ require_audience: 'yes' }, { audiences: 'a' }, { audiences: [''] }, { exchange_access_ttl: -1 }]) {
            await assert.rejects(c.admin('POST', '/admin/clients', { client_id: 'v', client_secret: 's', ...bad }), { status: 400 }, JSON.stringify(bad));
        }
        await assert.rejects(c.admin('POST', '/admin/lookup', { access_tokens: 'x' }), { status: 400 });
        await assert.rejects(c.admin('POST', '/admin/lookup', {}), { status: 400 });
        const client = await newClient();
        const g = await mint(client, { subject: 'look' });
        const res = await c.admin('POST', '/admin/lookup', { refresh_tokens: [g.refresh_token], access_tokens: [g.access_token, 'nope'] });
        assert.equal(res.tokens[0].grant_id, g.grant_id);
        assert.deepEqual([res.access_tokens[0].kind, res.access_tokens[0].subject, res.access_tokens[0].grant_id, res.access_tokens[1]],
            ['grant', 'look', g.grant_id, null]);
    });
});
