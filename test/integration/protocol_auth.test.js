'use strict';
// Client authentication against a real HTTPS provider: the engine refreshes (twice in a row)
// with every method a provider can be registered with — client_secret_basic with reserved and
// non-ASCII characters (RFC 6749 2.3.1 form-encoding), client_secret_post, none (public
// client), and private_key_jwt (RFC 7523) with an RSA 2048 key (RS256) and an EC P-256 key
// (ES256). The test IdP verifies each assertion (signature, aud = the endpoint called, exp,
// single-use jti) and no refresh is ever refused; each provider's revocation (RFC 7009) is
// authenticated the same way and accepted.
const test = require('node:test');
const assert = require('node:assert');
const crypto = require('node:crypto');
const {
    setup, unique, storeLogin, tokenStatus, callLog, providerWith, introspector, revocationQueue,
    revokeCalls, waitFor, assertNoSecretsInLog,
} = require('./harness.js');

const GET = 'SELECT upstream_token.get_upstream_token($1, $2) AS t';
const FORCE = 'SELECT * FROM upstream_token.refresh_upstream_token($1, $2)';

let ctx;
let active;  // token -> introspection answer, asked as a separate client
test.before(async () => {
    ctx = await setup({ poolSize: 5 });
    active = await introspector(ctx);
});
test.after(async () => { await ctx.close(); });

// Stores an expired login, refreshes it through get (1st call) and a forced refresh (2nd),
// and checks both reached the provider, succeeded, rotated, and the served tokens are active.
async function twoRefreshes(p) {
    const since = Date.now();
    const login = await storeLogin(ctx, p, { expiresIn: 0 });
    const first = (await ctx.pool.query(GET, [login.session, p.provider])).rows[0].t;
    assert.ok(first && first !== login.grant.access_token, 'the first refresh gave a new access token');
    const forced = (await ctx.pool.query(FORCE, [login.session, p.provider])).rows;
    assert.strictEqual(forced.length, 1);
    assert.strictEqual(forced[0].refreshed, true, `forced refresh: ${forced[0].sqlstate} ${forced[0].error}`);
    const second = (await ctx.pool.query(GET, [login.session, p.provider])).rows[0].t;
    assert.ok(second !== first, 'the second refresh gave another access token');
    assert.strictEqual((await active(second)).active, true, 'the served token is active at the provider');

    const calls = await callLog(ctx.idp, p.clientId, since);
    assert.deepStrictEqual(calls.map((c) => c.status), [200, 200], 'two refreshes, both accepted');
    const g = await ctx.grant(login.grant.grant_id);
    assert.strictEqual(g.rotations, 2);
    assert.strictEqual(g.reuse_detected, 0);
    assert.strictEqual((await tokenStatus(ctx.pool, login.session, p.provider)).status, 'active');
    assertNoSecretsInLog([login.grant.access_token, login.grant.refresh_token, first, second, g.refresh_token]);
    return { login, calls, tokens: [first, second] };
}

// A provider with a revocation endpoint for an IdP client with this id, secret and method.
function secretProvider(clientId, secret, method) {
    return providerWith(ctx, {
        client: { client_id: clientId, client_secret: secret, auth_method: method },
        args: { revocation_endpoint: `${ctx.idp.url}/revoke` },
    });
}

// Revokes the login and checks the provider accepted the revocation (authenticated) at once.
async function revokeAccepted(p, login, since) {
    const n = (await ctx.pool.query('SELECT upstream_token.revoke_upstream_token($1, $2) AS n',
        [login.session, p.provider])).rows[0].n;
    assert.strictEqual(n, 1);
    await waitFor(async () => (await revocationQueue(ctx.pool, p.provider)).length === 0,
        { timeoutMs: 20000, what: 'the revocation to be delivered' });
    const revs = await revokeCalls(ctx.idp, p.clientId, since);
    assert.deepStrictEqual(revs.map((c) => c.status), [200], 'one revocation call, accepted');
    assert.strictEqual((await ctx.grant(login.grant.grant_id)).revoked, true);
    return revs;
}

test('client_secret_basic: id and secret with ":", "+", "%", space and non-ASCII are form-encoded', async () => {
    const p = await secretProvider(`id:+% é ü€-${unique('c')}`, `se:cr+et %25 ü€ é=&${unique('s')}`, 'client_secret_basic');
    const { login, calls } = await twoRefreshes(p);
    await revokeAccepted(p, login, calls[0].t_ms);
});

test('client_secret_post: id and secret in the body', async () => {
    const p = await secretProvider(`post:+% é-${unique('c')}`, `p o+s%t:ü ${unique('s')}`, 'client_secret_post');
    const { login, calls } = await twoRefreshes(p);
    await revokeAccepted(p, login, calls[0].t_ms);
});

test('none: a public client sends only its client_id', async () => {
    const p = await secretProvider(`public+ é-${unique('c')}`, null, 'none');
    const { login, calls } = await twoRefreshes(p);
    await revokeAccepted(p, login, calls[0].t_ms);
});

// Registers a private_key_jwt provider for a fresh key pair (`keyOpts` for generateKeyPairSync)
// whose private key is given to register_provider as PEM of `format`; the IdP gets the public key.
async function pkjwtProvider(type, keyOpts, format, args = {}) {
    const { publicKey, privateKey } = crypto.generateKeyPairSync(type, keyOpts);
    const p = await providerWith(ctx, {
        client: { auth_method: 'private_key_jwt', jwk_or_pem: publicKey.export({ type: 'spki', format: 'pem' }) },
        args: {
            client_secret: privateKey.export({ type: format, format: 'pem' }),
            revocation_endpoint: `${ctx.idp.url}/revoke`, ...args,
        },
    });
    return { ...p, privateKey };
}

// Runs two refreshes and a revocation for a private_key_jwt provider and checks every
// assertion the IdP saw: verified, header {alg, typ: JWT, kid?}, iss = sub = client_id,
// aud = the endpoint called, exp at most 60 s after iat, a jti never used twice.
async function privateKeyJwt(p, alg, kid) {
    const s0 = (await ctx.stats()).assertions;
    const { login, calls } = await twoRefreshes(p);
    const since = calls[0].t_ms;

    // A revocation is authenticated the same way, with aud = the revocation endpoint.
    const revs = await revokeAccepted(p, login, since);
    assert.strictEqual(revs[0].assertion, 'verified');

    const s1 = (await ctx.stats()).assertions;
    assert.ok(s1.verified - s0.verified >= 3, `verified ${s1.verified - s0.verified}`);
    for (const k of Object.keys(s1)) {
        if (k !== 'verified') assert.strictEqual(s1[k] - s0[k], 0, `assertions refused as ${k}`);
    }
    const seen = [...calls.map((c) => ['token', c]), ...revs.map((c) => ['revoke', c])];
    for (const [endpoint, c] of seen) {
        assert.strictEqual(c.assertion, 'verified');
        const h = c.assertion_header;
        const cl = c.assertion_claims;
        assert.deepStrictEqual(h, { alg, typ: 'JWT', ...(kid ? { kid } : {}) });
        assert.strictEqual(cl.iss, p.clientId);
        assert.strictEqual(cl.sub, p.clientId);
        assert.strictEqual(cl.aud, `${ctx.idp.url}/${endpoint}`, 'aud is the endpoint URL');
        assert.ok(Number.isInteger(cl.iat) && Number.isInteger(cl.exp), 'iat and exp are NumericDates');
        assert.ok(cl.exp > cl.iat && cl.exp - cl.iat <= 60, `lifetime ${cl.exp - cl.iat} s`);
        assert.ok(typeof cl.jti === 'string' && cl.jti.length >= 16, 'a random jti');
    }
    const jtis = seen.map(([, c]) => c.assertion_claims.jti);
    assert.strictEqual(new Set(jtis).size, jtis.length, 'every assertion has its own jti');
}

test('private_key_jwt with an RSA 2048 key (RS256 from the key type, with a kid)', async () => {
    const p = await pkjwtProvider('rsa', { modulusLength: 2048 }, 'pkcs8', { assertion_kid: 'rsa-key-1' });
    await privateKeyJwt(p, 'RS256', 'rsa-key-1');
});

test('private_key_jwt with an EC P-256 key (ES256 asked for explicitly, no kid)', async () => {
    const p = await pkjwtProvider('ec', { namedCurve: 'P-256' }, 'pkcs8', { assertion_alg: 'ES256' });
    await privateKeyJwt(p, 'ES256', null);
});

test('private_key_jwt keys in traditional PEM forms (PKCS#1 RSA, SEC1 EC) work too', async () => {
    const rsa = await pkjwtProvider('rsa', { modulusLength: 2048 }, 'pkcs1');
    await twoRefreshes(rsa);
    const ec = await pkjwtProvider('ec', { namedCurve: 'P-256' }, 'sec1');
    await twoRefreshes(ec);
});

test('private_key_jwt: register_provider refuses unusable keys and mismatched algorithms (22023)', async () => {
    const ec = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' });
    const p384 = crypto.generateKeyPairSync('ec', { namedCurve: 'P-384' }).privateKey.export({ type: 'pkcs8', format: 'pem' });
    const rsa1024 = crypto.generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey.export({ type: 'pkcs8', format: 'pem' });
    const pub = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'pem' });
    const bad = [
        { secret: 'not a pem', alg: null },
        { secret: ec, alg: 'RS256' },
        { secret: ec, alg: 'HS256' },
        { secret: p384, alg: null },
        { secret: rsa1024, alg: null },
        { secret: pub, alg: null },
        { secret: null, alg: null },
    ];
    const name = unique('p-badkey').slice(0, 60);
    for (const [i, b] of bad.entries()) {
        const e = await ctx.pool.query(
            `SELECT upstream_token.register_provider(name => $1, token_endpoint => $2, client_id => 'c',
                    client_secret => $3, auth_method => 'private_key_jwt', assertion_alg => $4)`,
            [name, `${ctx.idp.url}/token`, b.secret, b.alg]).then(() => null, (err) => err);
        assert.ok(e, `case ${i} was accepted`);
        assert.ok(['22023', '22004'].includes(e.code), `case ${i}: ${e.code} ${e.message}`);
        assert.ok(!/BEGIN|PRIVATE KEY/.test(e.message), 'no key material in the message');
    }
    // assertion_alg / assertion_kid belong to private_key_jwt only.
    const e = await ctx.pool.query(
        `SELECT upstream_token.register_provider(name => $1, token_endpoint => $2, client_id => 'c',
                client_secret => 's', auth_method => 'client_secret_basic', assertion_kid => 'k')`,
        [name, `${ctx.idp.url}/token`]).then(() => null, (err) => err);
    assert.strictEqual(e && e.code, '22023');
    const left = await ctx.pool.query('SELECT count(*)::int AS n FROM upstream_token.provider WHERE name = $1', [name]);
    assert.strictEqual(left.rows[0].n, 0);
});
