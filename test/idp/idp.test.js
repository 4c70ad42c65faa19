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
