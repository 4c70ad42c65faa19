'use strict';
// A real OpenID Connect provider (the npm package oidc-provider, v9) for integration tests:
// HTTPS on 127.0.0.1 with the test CA's server certificate, one confidential client
// (client_secret_basic, authorization_code + refresh_token), refresh-token rotation on,
// short-lived access tokens, an unbounded in-memory store, and an interaction endpoint that
// logs in and consents automatically so tests can run the authorization-code flow without a
// browser. Counters of refreshes, grant errors and revocations come from the provider's events.
//
// From a test:  const srv = await startOidcServer({ certDir, accessTtl: 5 });
//               const login = await srv.login('alice');   // {access_token, refresh_token, id_token, grantId, ...}
//               ... srv.stats, srv.accessTokenInfo(tok), await srv.stop();
// Standalone:   node oidc_server.js CERT_DIR   (prints "listening <port>")

const https = require('node:https');
const fs = require('node:fs');
const path = require('node:path');
const crypto = require('node:crypto');

const REDIRECT_URI = 'https://client.invalid/cb';

// An unbounded Map-based adapter: the stock memory adapter is an LRU of about 1,000 entries,
// which evicts live refresh tokens under load and turns them into spurious invalid_grant.
function makeAdapterClass() {
    const store = new Map();       // "Model:id" -> payload
    const byGrant = new Map();     // grantId -> Set of "Model:id"
    const sessionByUid = new Map();
    return class MapAdapter {
        constructor(model) { this.model = model; }
        key(id) { return `${this.model}:${id}`; }
        async upsert(id, payload, _expiresIn) {
            const key = this.key(id);
            store.set(key, payload);
            if (payload.grantId) {
                if (!byGrant.has(payload.grantId)) byGrant.set(payload.grantId, new Set());
                byGrant.get(payload.grantId).add(key);
            }
            if (this.model === 'Session' && payload.uid) sessionByUid.set(payload.uid, id);
        }
        async find(id) { return store.get(this.key(id)); }
        async findByUid(uid) { const id = sessionByUid.get(uid); return id ? this.find(id) : undefined; }
        async findByUserCode(_code) { return undefined; }
        async consume(id) {
            const p = store.get(this.key(id));
            if (p) p.consumed = Math.floor(Date.now() / 1000);
        }
        async destroy(id) { store.delete(this.key(id)); }
        async revokeByGrantId(grantId) {
            for (const key of byGrant.get(grantId) || []) store.delete(key);
            byGrant.delete(grantId);
        }
    };
}

// Minimal cookie jar + redirect-following GET/POST over HTTPS trusting only the test CA.
function makeHttp(ca) {
    const agent = new https.Agent({ keepAlive: true, ca, maxSockets: 16 });
    // One request; resolves {status, headers, text}.
    function request(url, { method = 'GET', headers = {}, body } = {}) {
        return new Promise((resolve, reject) => {
            const req = https.request(url, { method, headers, agent }, (res) => {
                const chunks = [];
                res.on('data', (c) => chunks.push(c));
                res.on('end', () => resolve({ status: res.statusCode, headers: res.headers,
                    text: Buffer.concat(chunks).toString('utf8') }));
            });
            req.on('error', reject);
            if (body) req.write(body);
            req.end();
        });
    }
    return { agent, request };
}

// Starts the provider; resolves a handle with login(), stats, accessTokenInfo(), stop().
async function startOidcServer({ certDir, accessTtl = 5, clientId = 'ut-client',
    clientSecret = crypto.randomBytes(24).toString('base64url') } = {}) {
    const { default: Provider } = await import('oidc-provider');
    const key = fs.readFileSync(path.join(certDir, 'server.key'));
    const cert = fs.readFileSync(path.join(certDir, 'server.pem'));
    const ca = fs.readFileSync(path.join(certDir, 'ca.pem'));

    let handler = (_req, res) => { res.statusCode = 503; res.end(); };
    const server = https.createServer({ key, cert }, (req, res) => handler(req, res));
    await new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen(0, '127.0.0.1', resolve);
    });
    const port = server.address().port;
    const issuer = `https://127.0.0.1:${port}`;

    const { privateKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const jwk = { ...privateKey.export({ format: 'jwk' }), kid: 'k1', alg: 'ES256', use: 'sig' };

    const provider = new Provider(issuer, {
        adapter: makeAdapterClass(),
        clients: [{
            client_id: clientId,
            client_secret: clientSecret,
            token_endpoint_auth_method: 'client_secret_basic',
            grant_types: ['authorization_code', 'refresh_token'],
            response_types: ['code'],
            redirect_uris: [REDIRECT_URI],
            id_token_signed_response_alg: 'ES256',
        }],
        jwks: { keys: [jwk] },
        cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
        scopes: ['openid', 'offline_access'],
        clockTolerance: 0,
        rotateRefreshToken: true,
        findAccount: async (_ctx, sub) => ({ accountId: sub, claims: async () => ({ sub }) }),
        features: {
            devInteractions: { enabled: false },
            introspection: { enabled: true },
            revocation: { enabled: true },
        },
        ttl: {
            AccessToken: accessTtl,
            AuthorizationCode: 60,
            IdToken: 3600,
            RefreshToken: 24 * 3600,
            Grant: 24 * 3600,
            Session: 3600,
            Interaction: 600,
        },
    });
    provider.on('server_error', () => {});  // counted below; never print (could carry tokens)

    const stats = {
        refreshesByGrant: new Map(),   // grantId -> successful refresh_token grants
        grantErrors: [],               // {grant_type, error, description}
        revokedGrants: [],             // grantIds revoked (e.g. by refresh-token reuse)
        destroyedRefreshTokens: 0,
        serverErrors: 0,
        tokenRequests: 0,
    };
    provider.on('grant.success', (ctx) => {
        if (ctx.oidc.params.grant_type !== 'refresh_token') return;
        const g = ctx.oidc.entities.Grant?.jti;
        stats.refreshesByGrant.set(g, (stats.refreshesByGrant.get(g) || 0) + 1);
    });
    provider.on('grant.error', (ctx, err) => {
        stats.grantErrors.push({ grant_type: ctx.oidc?.params?.grant_type, error: err.error,
            description: err.error_description });
    });
    provider.on('grant.revoked', (_ctx, grantId) => stats.revokedGrants.push(grantId));
    provider.on('refresh_token.destroyed', () => { stats.destroyedRefreshTokens += 1; });
    provider.on('server_error', () => { stats.serverErrors += 1; });

    // The interaction endpoint: logs in the login_hint subject and consents to every scope.
    async function interaction(req, res) {
        try {
            const details = await provider.interactionDetails(req, res);
            const accountId = details.session?.accountId || details.params.login_hint;
            const grant = details.grantId ? await provider.Grant.find(details.grantId)
                : new provider.Grant({ accountId, clientId: details.params.client_id });
            grant.addOIDCScope(details.params.scope);
            const grantId = await grant.save();
            await provider.interactionFinished(req, res,
                { login: { accountId }, consent: { grantId } }, { mergeWithLastSubmission: true });
        } catch (e) {
            res.statusCode = 500;
            res.end(String(e && e.name));
        }
    }
    const callback = provider.callback();
    handler = (req, res) => {
        stats.tokenRequests += req.url.startsWith('/token') ? 1 : 0;
        if (req.url.startsWith('/interaction/')) return interaction(req, res);
        return callback(req, res);
    };

    const http = makeHttp(ca);
    const basic = 'Basic ' + Buffer.from(`${encodeURIComponent(clientId)}:${encodeURIComponent(clientSecret)}`).toString('base64');

    // Runs the authorization-code flow for `subject` (no browser): /auth -> interaction ->
    // resume -> redirect with code -> token endpoint. Resolves the token response + grantId.
    async function login(subject) {
        const jar = new Map();
        const cookieHeader = () => [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
        const q = new URLSearchParams({
            client_id: clientId, response_type: 'code', redirect_uri: REDIRECT_URI,
            scope: 'openid offline_access', prompt: 'consent', login_hint: subject,
            state: crypto.randomBytes(8).toString('hex'),
        });
        let url = `${issuer}/auth?${q}`;
        let code = null;
        for (let hop = 0; hop < 10 && !code; hop += 1) {
            const r = await http.request(url, { headers: { cookie: cookieHeader() } });
            for (const c of [].concat(r.headers['set-cookie'] || [])) {
                const [pair] = c.split(';');
                const i = pair.indexOf('=');
                jar.set(pair.slice(0, i).trim(), pair.slice(i + 1).trim());
            }
            if (r.status < 300 || r.status >= 400 || !r.headers.location) {
                throw new Error(`authorization flow stopped with HTTP ${r.status} at hop ${hop}`);
            }
            const next = new URL(r.headers.location, url);
            if (next.href.startsWith(REDIRECT_URI)) {
                if (next.searchParams.get('error')) {
                    throw new Error(`authorization error ${next.searchParams.get('error')}`);
                }
                code = next.searchParams.get('code');
            }
            url = next.href;
        }
        if (!code) throw new Error('authorization flow did not produce a code');
        const body = new URLSearchParams({ grant_type: 'authorization_code', code, redirect_uri: REDIRECT_URI }).toString();
        const r = await http.request(`${issuer}/token`, {
            method: 'POST', body,
            headers: { authorization: basic, 'content-type': 'application/x-www-form-urlencoded' },
        });
        if (r.status !== 200) throw new Error(`code exchange failed with HTTP ${r.status}`);
        const tok = JSON.parse(r.text);
        const at = await provider.AccessToken.find(tok.access_token);
        return { ...tok, grantId: at.grantId, subject };
    }

    return {
        issuer,
        port,
        url: issuer,
        tokenEndpoint: `${issuer}/token`,
        clientId,
        clientSecret,
        provider,
        stats,
        login,
        // What the provider knows about an access token it issued (null if unknown),
        // ignoring expiry so the caller can compare `exp` itself.
        async accessTokenInfo(value) {
            const at = await provider.AccessToken.find(value, { ignoreExpiration: true });
            return at ? { grantId: at.grantId, exp: at.exp, accountId: at.accountId } : null;
        },
        async stop() {
            http.agent.destroy();
            server.closeAllConnections?.();
            await new Promise((resolve) => server.close(() => resolve()));
        },
    };
}

module.exports = { startOidcServer, REDIRECT_URI };

if (require.main === module) {
    startOidcServer({ certDir: process.argv[2] || path.resolve(__dirname, '..', '..', '.tmp', 'certs') })
        .then((s) => {
            process.stdout.write(`listening ${s.port}\n`);
            const stop = () => s.stop().then(() => process.exit(0));
            process.on('SIGTERM', stop);
            process.on('SIGINT', stop);
        })
        .catch((e) => { process.stderr.write(`${e.stack}\n`); process.exit(1); });
}
