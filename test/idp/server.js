'use strict';
// Test OAuth 2.0 / OpenID Connect provider for upstream_token's tests.
//
// Serves the refresh_token grant (rotation, reuse detection), client_credentials, RFC 8693
// token exchange, RFC 7009 revocation, RFC 7662 introspection and discovery on loopback, plus
// an unauthenticated /admin JSON API that creates clients, mints grants, injects faults and
// reports counters. Everything lives in memory. Nothing is logged per request and no token or
// secret is ever printed.
//
// Usage: node server.js --port N --cert F --key F [--issuer URL] [--http]

const http = require('node:http');
const https = require('node:https');
const crypto = require('node:crypto');
const fs = require('node:fs');

const AUTH_METHODS = ['client_secret_basic', 'client_secret_post', 'none', 'private_key_jwt'];
const ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
const ASSERTION_ALGS = ['RS256', 'ES256'];
const ASSERTION_MAX_LIFETIME_S = 300;  // exp - iat may not exceed this
const ASSERTION_SKEW_S = 30;           // iat may be this far in the future
// Why a client assertion (RFC 7523) was refused; each has a counter in stats.assertions.
const ASSERTION_REJECTIONS = ['malformed', 'bad_type', 'unknown_client', 'wrong_method', 'bad_alg',
    'bad_signature', 'bad_iss', 'bad_sub', 'client_id_mismatch', 'bad_aud', 'expired', 'bad_iat',
    'too_long', 'not_yet_valid', 'missing_jti', 'replayed'];
const TOKEN_EXCHANGE_GRANT = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
// Short names of the grant types /token serves (stats.by_grant_type).
const GRANT_NAMES = { refresh_token: 'refresh_token', client_credentials: 'client_credentials',
    [TOKEN_EXCHANGE_GRANT]: 'token_exchange' };
const QUIRK_DEFAULTS = {
    no_expires_in: false,
    no_rotation: false,
    refresh_token_expires_in: null,
    refresh_expires_field: 'refresh_token_expires_in',
    token_type_case: null,
    narrow_scope: null,
    big_access_token: false,
    revoke_used_noop: false,
    refresh_token_idle_ttl: null,
    error_style: 'oauth',
    extra_fields: null,
    expires_in_string: false,
    require_params: null,
    require_audience: false,
    audiences: null,
    exchange_access_ttl: null,
    forget_used: false,
};
// How a client's invalid_grant answers are written (error_style); see styledInvalidGrant().
const ERROR_STYLES = ['oauth', 'github', 'slack', 'hubspot', 'forbidden', 'entra'];
const GITHUB_ERROR_URI = 'https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors';
// /token form parameters that are not "extra" in the call log's extra_params.
const STANDARD_TOKEN_PARAMS = new Set(['grant_type', 'refresh_token', 'scope', 'client_id', 'client_secret',
    'client_assertion', 'client_assertion_type']);
// Parameters of the client_credentials and token-exchange grants that are not "extra" either.
const GRANT_PARAMS = {
    client_credentials: new Set(['audience', 'resource']),
    [TOKEN_EXCHANGE_GRANT]: new Set(['subject_token', 'subject_token_type', 'audience', 'resource',
        'requested_token_type', 'actor_token', 'actor_token_type']),
};
const NO_EXTRA_PARAMS = Object.freeze([]);  // shared by every call log entry without extra parameters
const SETTINGS_KEYS = ['issuer', 'discovery', 'token_paths', 'revoke_paths'];
const MAX_ENDPOINT_PATHS = 32;  // entries of token_paths / revoke_paths
const CLIENT_KEYS = ['client_id', 'client_secret', 'jwk_or_pem', 'auth_method', 'access_ttl', 'id_token',
    ...Object.keys(QUIRK_DEFAULTS)];
const FAULT_ACTION_KEYS = ['delay_ms', 'status', 'retry_after', 'drop', 'malformed_json',
    'oversized_body_bytes', 'omit', 'id_token_claims', 'id_token_omit', 'oauth_error', 'error_description',
    'respond_delay_ms', 'cut_answer', 'patch_fields'];
const MATCH_KEYS = ['grant_id', 'client_id', 'subject', 'endpoint'];
const FAULT_ENDPOINTS = ['token', 'revoke'];
// Actions that make sense at /revoke (the others shape a token response).
const REVOKE_ACTION_KEYS = ['delay_ms', 'status', 'retry_after', 'drop', 'malformed_json', 'oauth_error', 'error_description'];
const DEFAULT_SCOPE = 'openid offline_access';
const BIG_TOKEN_BYTES = 8192;
const CALL_LOG_CAP = 200000;
const OAUTH_BODY_LIMIT = 64 * 1024;
const ADMIN_BODY_LIMIT = 16 * 1024 * 1024;
const REALM = 'Basic realm="upstream_token test idp"';

// ---------------------------------------------------------------- small helpers

// An error that already knows its HTTP answer, thrown from anywhere in a handler.
class HttpError extends Error {
    constructor(status, body, headers = {}) {
        super(body.error_description || body.error);
        this.status = status;
        this.body = body;
        this.headers = headers;
    }
}

// Shorthand for the OAuth error answers (RFC 6749 section 5.2).
function oauthError(status, error, description) {
    const body = description ? { error, error_description: description } : { error };
    return new HttpError(status, body, status === 401 ? { 'WWW-Authenticate': REALM } : {});
}

// Shorthand for admin API validation failures.
function badAdmin(message, status = 400) {
    return new HttpError(status, { error: message });
}

let randomPool = Buffer.alloc(0);
let randomPos = 0;

// Opaque random strings (base64url); one getRandomBytes call per 8 KiB keeps minting cheap.
function randomToken(bytes = 32) {
    if (randomPos + bytes > randomPool.length) {
        randomPool = crypto.randomBytes(8192);
        randomPos = 0;
    }
    const s = randomPool.toString('base64url', randomPos, randomPos + bytes);
    randomPos += bytes;
    return s;
}

// base64url of a JSON value, for JWS segments.
function b64json(value) {
    return Buffer.from(JSON.stringify(value)).toString('base64url');
}

// Map key for an access token: huge tokens are keyed by their digest to bound memory.
function accessKey(token) {
    return token.length > 512 ? 'sha256:' + crypto.createHash('sha256').update(token).digest('base64url') : token;
}

// application/x-www-form-urlencoded decoding of one component ('+' is a space); null if malformed.
function formDecode(s) {
    try {
        return decodeURIComponent(s.replace(/\+/g, ' '));
    } catch {
        return null;
    }
}

// Parses a form body; null when a parameter repeats (RFC 6749 section 3.2 forbids that).
function parseForm(body) {
    const form = new Map();
    for (const [k, v] of new URLSearchParams(body)) {
        if (form.has(k)) return null;
        form.set(k, v);
    }
    return form;
}

// Decodes "Authorization: Basic" per RFC 6749 2.3.1: base64, split at the first ':', form-decode both.
function parseBasic(header) {
    const m = /^basic +([A-Za-z0-9+/=]+) *$/i.exec(header);
    if (!m) return null;
    const raw = Buffer.from(m[1], 'base64').toString('utf8');
    const colon = raw.indexOf(':');
    if (colon < 0) return null;
    const id = formDecode(raw.slice(0, colon));
    const secret = formDecode(raw.slice(colon + 1));
    return id === null || secret === null ? null : { id, secret };
}

// True when every space-separated scope in `asked` is in `granted`.
function scopeSubset(asked, granted) {
    const have = new Set(granted.split(' '));
    return asked.split(' ').filter(Boolean).every((s) => have.has(s));
}

// Splits and decodes a compact JWS (header.payload.signature); null when it is not one.
function parseCompactJws(text) {
    if (typeof text !== 'string') return null;
    const parts = text.split('.');
    if (parts.length !== 3 || parts.some((p) => !/^[A-Za-z0-9_-]*$/.test(p)) || !parts[0] || !parts[1]) return null;
    try {
        const header = JSON.parse(Buffer.from(parts[0], 'base64url').toString('utf8'));
        const claims = JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8'));
        if (!header || typeof header !== 'object' || !claims || typeof claims !== 'object' || Array.isArray(claims)) return null;
        return { header, claims, signingInput: `${parts[0]}.${parts[1]}`, signature: Buffer.from(parts[2], 'base64url') };
    } catch {
        return null;
    }
}

// Checks a JWS signature: RS256 is RSASSA-PKCS1-v1_5 with SHA-256; ES256 is the 64-byte R||S form.
function verifyJwsSignature(alg, publicKey, signingInput, signature) {
    const data = Buffer.from(signingInput, 'ascii');
    if (alg === 'RS256') return crypto.verify('sha256', data, publicKey, signature);
    if (alg === 'ES256') {
        if (signature.length !== 64) return false;
        return crypto.verify('sha256', data, { key: publicKey, dsaEncoding: 'ieee-p1363' }, signature);
    }
    return false;
}

// Imports a private_key_jwt client's key (PEM string or JWK object) as a public KeyObject and
// derives the only alg it may sign with; throws a 400 admin error on anything else.
function importClientKey(jwkOrPem) {
    let key;
    try {
        if (typeof jwkOrPem === 'string') key = crypto.createPublicKey(jwkOrPem);
        else if (jwkOrPem && typeof jwkOrPem === 'object' && !Array.isArray(jwkOrPem)) {
            const { d, p, q, dp, dq, qi, ...pub } = jwkOrPem;  // a private JWK is accepted for its public half
            key = crypto.createPublicKey({ key: pub, format: 'jwk' });
        } else throw new Error('not a key');
    } catch {
        throw badAdmin('jwk_or_pem must be a public key as PEM or a JWK');
    }
    if (key.asymmetricKeyType === 'rsa') return { publicKey: key, alg: 'RS256' };
    if (key.asymmetricKeyType === 'ec' && key.asymmetricKeyDetails.namedCurve === 'prime256v1') return { publicKey: key, alg: 'ES256' };
    throw badAdmin('jwk_or_pem must be an RSA or EC P-256 key');
}

// A copy of the listed fields of an object (those present).
function pick(obj, keys) {
    return Object.fromEntries(keys.filter((k) => obj[k] !== undefined).map((k) => [k, obj[k]]));
}

// Promise-based sleep for the delay_ms fault.
function sleep(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
}

// Reads a request body up to `limit` bytes as a UTF-8 string.
function readBody(req, limit) {
    return new Promise((resolve, reject) => {
        const chunks = [];
        let size = 0;
        req.on('data', (chunk) => {
            size += chunk.length;
            if (size <= limit) chunks.push(chunk);
            else if (size - chunk.length <= limit) {
                chunks.length = 0; // keep draining (and discarding) so the 413 can still be answered
                reject(new HttpError(413, { error: 'invalid_request', error_description: 'body too large' }));
            }
        });
        req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
        req.on('error', reject);
    });
}

// Writes a JSON (or pre-serialised) answer with the no-store headers token responses need.
function sendJson(res, status, body, headers = {}) {
    const text = typeof body === 'string' ? body : JSON.stringify(body);
    res.writeHead(status, {
        'Content-Type': 'application/json',
        'Content-Length': Buffer.byteLength(text),
        'Cache-Control': 'no-store',
        Pragma: 'no-cache',
        ...headers,
    });
    res.end(text);
}

// Checks an admin JSON value is a plain object.
function requireObject(obj, what) {
    if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) throw badAdmin(`${what} must be an object`);
}

// Checks an admin JSON object has only known keys, so typos in tests fail loudly.
function checkKeys(obj, allowed, what) {
    requireObject(obj, what);
    const unknown = Object.keys(obj).filter((k) => !allowed.includes(k));
    if (unknown.length) throw badAdmin(`unknown ${what} key(s): ${unknown.join(', ')}`);
}

// Validates an optional non-negative integer field of an admin request.
function optInt(obj, key, min = 0) {
    const v = obj[key];
    if (v === undefined || v === null) return null;
    if (!Number.isInteger(v) || v < min) throw badAdmin(`${key} must be an integer >= ${min}`);
    return v;
}

// ---------------------------------------------------------------- the provider

class Provider {
    // Holds all state: clients, grants, tokens, faults, counters and the call log.
    constructor({ baseUrl, issuer }) {
        this.baseUrl = baseUrl;
        this.issuer = issuer;
        this.jwsKey = crypto.randomBytes(32);
        this.inFlight = 0;
        this.reset();
        this.sweeper = setInterval(() => this.sweepAccessTokens(), 30000);
        this.sweeper.unref();
    }

    // Forgets everything (POST /admin/reset and start-up).
    reset() {
        this.clients = new Map();
        this.grants = new Map();
        this.refreshTokens = new Map();
        this.accessTokens = new Map();
        this.faults = [];
        this.settings = { issuer: null, discovery: null, token_paths: null, revoke_paths: null };
        this.endpointPaths = new Map();  // extra path -> 'token' | 'revoke' (settings token_paths, revoke_paths)
        this.calls = [];
        this.seenJti = new Map();  // "client_id\0jti" -> exp in ms, for assertion replay detection
        this.nextGrant = 1;
        this.nextFault = 1;
        this.nextToken = 1;  // ids of client_credentials and exchanged access tokens (t1, t2, ...)
        this.resetStats();
    }

    // Zeroes the counters; max_in_flight restarts from the current gauge.
    resetStats() {
        this.stats = {
            token_requests: 0, token_success: 0, by_status: {}, by_error: {},
            reuse_detected: 0, idle_expired: 0, revoked_grants: 0, max_in_flight: this.inFlight,
            revocations: 0, introspections: 0, dropped: 0, faults_applied: 0,
            by_grant_type: { refresh_token: 0, client_credentials: 0, token_exchange: 0 },
            revoke: { requests: 0, by_status: {}, by_error: {}, dropped: 0 },
            assertions: Object.fromEntries(['verified', ...ASSERTION_REJECTIONS].map((k) => [k, 0])),
        };
    }

    // Drops expired access tokens now and then, so long runs do not grow without bound.
    sweepAccessTokens() {
        const now = Date.now();
        for (const [key, at] of this.accessTokens) if (at.exp_ms <= now) this.accessTokens.delete(key);
        for (const [key, exp] of this.seenJti) if (exp <= now) this.seenJti.delete(key);
    }

    // ------------------------------------------------------------ routing

    // Entry point for every request; turns thrown HttpErrors into answers.
    handle(req, res) {
        this.route(req, res).catch((err) => {
            if (res.headersSent || res.destroyed) return;
            if (err instanceof HttpError) return sendJson(res, err.status, err.body, err.headers);
            process.stderr.write(`idp: internal error: ${err && err.stack}\n`);
            sendJson(res, 500, { error: 'server_error' });
        });
    }

    // Dispatches on the path (query strings matter only for /admin/calls).
    async route(req, res) {
        const q = req.url.indexOf('?');
        const path = q < 0 ? req.url : req.url.slice(0, q);
        const query = new URLSearchParams(q < 0 ? '' : req.url.slice(q + 1));
        if (path === '/token') return this.onToken(req, res, path);
        if (path === '/revoke') return this.onRevoke(req, res, path);
        if (path === '/introspect') return this.onIntrospect(req, res);
        if (path.startsWith('/admin/')) return this.onAdmin(req, res, path, query);
        // A provider's own token or revocation URL (settings token_paths, revoke_paths).
        const alias = this.endpointPaths.size ? this.endpointPaths.get(path) : undefined;
        if (alias === 'token') return this.onToken(req, res, path);
        if (alias === 'revoke') return this.onRevoke(req, res, path);
        if (req.method === 'GET' && isDiscoveryPath(path)) return sendJson(res, 200, this.metadata());
        throw new HttpError(404, { error: 'not_found' });
    }

    // ------------------------------------------------------------ client authentication

    // Reads and checks an OAuth endpoint's form body (POST, form content type, no repeats).
    async readOAuthForm(req) {
        if (req.method !== 'POST') throw new HttpError(405, { error: 'invalid_request' }, { Allow: 'POST' });
        const body = await readBody(req, OAUTH_BODY_LIMIT);
        const type = (req.headers['content-type'] || '').split(';')[0].trim().toLowerCase();
        if (type !== 'application/x-www-form-urlencoded') {
            throw oauthError(400, 'invalid_request', 'content type must be application/x-www-form-urlencoded');
        }
        const form = parseForm(body);
        if (!form) throw oauthError(400, 'invalid_request', 'repeated parameter');
        return form;
    }

    // The client id a request claims (Basic header or body), before any check; for logs and faults.
    claimedClientId(req, form) {
        const header = req.headers.authorization;
        const basic = header === undefined ? null : parseBasic(header);
        return basic ? basic.id : form.get('client_id') ?? null;
    }

    // Authenticates the client (RFC 6749 2.3.1, RFC 7523 2.2) with exactly its configured method;
    // throws invalid_client. `path` (the path called: '/token', '/revoke', '/introspect' or a
    // token_paths / revoke_paths entry) makes the audience an assertion must name; `call` (a log
    // entry, optional) records the assertion outcome.
    authenticate(req, form, path = '/token', call = null) {
        const header = req.headers.authorization;
        const bodyId = form.get('client_id');
        const bodySecret = form.get('client_secret');
        const assertion = form.get('client_assertion');
        const assertionType = form.get('client_assertion_type');
        const hasAssertion = assertion !== undefined || assertionType !== undefined;
        let method;
        let id;
        let secret;
        if (header !== undefined) {
            const basic = parseBasic(header);
            if (!basic) throw oauthError(401, 'invalid_client', 'malformed Authorization header');
            if (bodySecret !== undefined || hasAssertion) throw oauthError(400, 'invalid_request', 'more than one client authentication method');
            if (bodyId !== undefined && bodyId !== basic.id) throw oauthError(401, 'invalid_client');
            [method, id, secret] = ['client_secret_basic', basic.id, basic.secret];
        } else if (hasAssertion) {
            if (bodySecret !== undefined) throw oauthError(400, 'invalid_request', 'more than one client authentication method');
            const client = this.verifyAssertion(assertionType, assertion, bodyId, path, call);
            if (call) call.assertion = 'verified';
            return client;
        } else if (bodySecret !== undefined) {
            [method, id, secret] = ['client_secret_post', bodyId, bodySecret];
        } else if (bodyId !== undefined) {
            [method, id, secret] = ['none', bodyId, null];
        } else {
            throw oauthError(401, 'invalid_client', 'no client authentication');
        }
        const client = this.clients.get(id);
        if (!client || client.auth_method !== method) throw oauthError(401, 'invalid_client');
        if (method !== 'none' && secret !== client.client_secret) throw oauthError(401, 'invalid_client');
        return client;
    }

    // Verifies a private_key_jwt client assertion (RFC 7523 section 3) and returns its client;
    // every refusal is counted in stats.assertions under its reason and answered invalid_client.
    // The decoded header and claims (no secret in them) go to the call log entry, if any.
    verifyAssertion(type, assertion, bodyId, path, call = null) {
        const reject = (reason) => {
            this.stats.assertions[reason]++;
            const err = oauthError(401, 'invalid_client', `client assertion refused: ${reason}`);
            err.assertionReason = reason;
            return err;
        };
        if (type !== ASSERTION_TYPE) throw reject('bad_type');
        const jwt = parseCompactJws(assertion);
        if (!jwt) throw reject('malformed');
        const { header, claims } = jwt;
        if (call) {
            call.assertion_header = pick(header, ['alg', 'typ', 'kid']);
            call.assertion_claims = pick(claims, ['iss', 'sub', 'aud', 'iat', 'exp', 'nbf', 'jti']);
        }
        const client = this.clients.get(typeof claims.iss === 'string' ? claims.iss : bodyId);
        if (!client) throw reject('unknown_client');
        if (client.auth_method !== 'private_key_jwt') throw reject('wrong_method');
        if (header.alg !== client.assertion_alg) throw reject('bad_alg');
        if (!verifyJwsSignature(header.alg, client.publicKey, jwt.signingInput, jwt.signature)) throw reject('bad_signature');
        if (claims.iss !== client.client_id) throw reject('bad_iss');
        if (claims.sub !== client.client_id) throw reject('bad_sub');
        if (bodyId !== undefined && bodyId !== client.client_id) throw reject('client_id_mismatch');
        const aud = this.baseUrl + path;
        const auds = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
        if (!auds.includes(aud)) throw reject('bad_aud');
        const now = Date.now() / 1000;
        if (typeof claims.exp !== 'number' || !(now < claims.exp)) throw reject('expired');
        if (typeof claims.iat !== 'number' || claims.iat > now + ASSERTION_SKEW_S) throw reject('bad_iat');
        if (claims.exp - claims.iat > ASSERTION_MAX_LIFETIME_S) throw reject('too_long');
        if (claims.nbf !== undefined && !(typeof claims.nbf === 'number' && claims.nbf <= now + ASSERTION_SKEW_S)) throw reject('not_yet_valid');
        if (typeof claims.jti !== 'string' || !claims.jti) throw reject('missing_jti');
        const jtiKey = `${client.client_id}\0${claims.jti}`;
        if (this.seenJti.has(jtiKey)) throw reject('replayed');
        this.seenJti.set(jtiKey, claims.exp * 1000 + ASSERTION_SKEW_S * 1000);
        this.stats.assertions.verified++;
        return client;
    }

    // ------------------------------------------------------------ token minting

    // Creates a grant as if an authorization-code login had just completed, with its first tokens.
    mintGrant(client, subject, scope) {
        const now = Date.now();
        const grant = {
            grant_id: `g${this.nextGrant++}`, client_id: client.client_id, subject, scope,
            auth_time: Math.floor(now / 1000), revoked: false, refresh_calls: 0, rotations: 0,
            reuse_detected: 0, current: null, issued: 0, active_ms: now,
        };
        this.grants.set(grant.grant_id, grant);
        const rt = this.issueRefreshToken(grant, client, now);
        const out = {
            grant_id: grant.grant_id, subject, scope,
            access_token: this.issueAccessToken(grant, client, now),
            refresh_token: rt.token, expires_in: client.access_ttl,
        };
        if (client.refresh_token_expires_in !== null) out[client.refresh_expires_field] = client.refresh_token_expires_in;
        if (client.id_token) out.id_token = this.idToken(grant, client, now, null);
        return out;
    }

    // A new current refresh token for the grant (the previous one is left as it is).
    issueRefreshToken(grant, client, now) {
        const ttl = client.refresh_token_expires_in;
        const rec = {
            token: randomToken(), grant, used: false, used_ms: null, seq: grant.issued++, iat: now,
            expires_ms: ttl === null ? 0 : now + ttl * 1000,
        };
        this.refreshTokens.set(rec.token, rec);
        grant.current = rec;
        return rec;
    }

    // A new access token (opaque, or the ~8 KB JWT-shaped one for big_access_token). A token of a
    // grant has no `own`; a client_credentials or exchanged token has
    // own = {kind, subject, scope, audience, ttl, exchanged_from} and gets a token_id.
    issueAccessToken(grant, client, now, own = null) {
        const exp_ms = now + (own && own.ttl !== null && own.ttl !== undefined ? own.ttl : client.access_ttl) * 1000;
        const subject = own ? own.subject : grant.subject;
        const scope = own ? own.scope : grant.scope;
        const token = client.big_access_token ? this.bigAccessToken(subject, scope, client, now, exp_ms) : randomToken();
        const rec = { grant, client_id: client.client_id, iat: now, exp_ms, revoked: false };
        if (own) {
            Object.assign(rec, { kind: own.kind, token_id: `t${this.nextToken++}`, subject, scope,
                audience: own.audience, exchanged_from: own.exchanged_from || null });
        }
        if (!client.forget_used) this.accessTokens.set(accessKey(token), rec);
        return own ? { token, rec } : token;
    }

    // A unique JWT-shaped access token of about big_access_token bytes (8192 when `true`).
    bigAccessToken(subject, scope, client, now, exp_ms) {
        const size = client.big_access_token === true ? BIG_TOKEN_BYTES : client.big_access_token;
        const claims = {
            iss: this.issuer, sub: subject, aud: client.client_id, client_id: client.client_id,
            scope, iat: Math.floor(now / 1000), exp: Math.floor(exp_ms / 1000), jti: randomToken(16),
        };
        if (scope === null) delete claims.scope;
        const fixed = b64json({ alg: 'HS256', typ: 'at+jwt' }).length + 2 + 43;
        const payloadChars = Math.max(0, Math.floor(((size - fixed) * 3) / 4));
        claims.pad = 'x'.repeat(Math.max(0, payloadChars - JSON.stringify(claims).length - 10));
        return this.sign({ alg: 'HS256', typ: 'at+jwt' }, claims);
    }

    // An ID token for the grant: HS256 with a per-run random key; `overrides` and `omit` (claim
    // names to leave out) come from a fault.
    idToken(grant, client, now, overrides, omit = []) {
        const iat = Math.floor(now / 1000);
        const claims = {
            iss: this.issuer, sub: grant.subject, aud: client.client_id, azp: client.client_id,
            iat, exp: iat + Math.max(client.access_ttl, 60), auth_time: grant.auth_time,
            ...(overrides || {}),
        };
        for (const name of omit || []) delete claims[name];
        return this.sign({ alg: 'HS256', typ: 'JWT', kid: 'test-hs256' }, claims);
    }

    // Compact JWS with HMAC-SHA256.
    sign(header, claims) {
        const input = `${b64json(header)}.${b64json(claims)}`;
        return `${input}.${crypto.createHmac('sha256', this.jwsKey).update(input).digest('base64url')}`;
    }

    // Revokes a whole grant: every refresh and access token of it stops working.
    revokeGrant(grant) {
        if (grant.revoked) return;
        grant.revoked = true;
        grant.revoked_ms = Date.now();
        this.stats.revoked_grants++;
    }

    // ------------------------------------------------------------ /token

    // POST /token (or a token_paths entry, `path`): logs the call, applies the first matching
    // fault, else runs the refresh grant.
    async onToken(req, res, path = '/token') {
        const call = this.startCall(res);
        if (path !== '/token') call.path = path;
        const form = await this.readOAuthForm(req).catch((err) => {
            if (err instanceof HttpError) this.finishCall(call, err.status, err.body.error);
            throw err;
        });
        const grantType = form.get('grant_type') ?? null;
        const exchange = grantType === TOKEN_EXCHANGE_GRANT;
        const rec = exchange ? undefined : this.refreshTokens.get(form.get('refresh_token'));
        // A token exchange's grant (for the log and faults) is its subject token's.
        const subjectAt = exchange && form.has('subject_token') ? this.accessTokens.get(accessKey(form.get('subject_token'))) : undefined;
        const grant = rec ? rec.grant : subjectAt ? subjectAt.grant : null;
        call.client_id = this.claimedClientId(req, form);
        call.grant_type = grantType;
        call.grant_id = grant ? grant.grant_id : null;
        call.presented_seq = rec ? rec.seq : null;
        call.extra_params = extraParams(form);
        if (grantType === 'client_credentials' || exchange) describeGrantRequest(call, form, exchange, subjectAt, this.refreshTokens);
        if (rec) grant.refresh_calls++;
        const fault = this.takeFault(call.client_id, grant);
        const action = fault ? fault.action : {};
        if (fault) call.fault_id = fault.fault_id;
        if (action.delay_ms) await sleep(action.delay_ms);
        if (action.drop === 'before') return this.drop(req, res, call, 'before');
        if (action.cut_answer) return this.cutAnswer(req, res, call);
        const early = this.earlyFaultAnswer(action);
        if (early) return this.answer(res, call, early.status, early.body, early.headers);
        let client = null;
        let result;
        try {
            client = this.authenticate(req, form, path, call);
            result = this.runGrant(client, form, action);
        } catch (err) {
            if (!(err instanceof HttpError)) throw err;
            if (err.assertionReason) call.assertion = err.assertionReason;
            if (err.reuse) call.reuse = true;
            if (err.idle) call.idle_expired = true;
            // invalid_grant is only thrown once the client is authenticated; its error_style
            // decides how the answer is written (fault answers never get here).
            result = client && client.error_style !== 'oauth' && err.body.error === 'invalid_grant' && grantType === 'refresh_token'
                ? styledInvalidGrant(client.error_style)
                : { status: err.status, body: err.body, headers: err.headers };
        }
        if (result.issued) call.issued_seq = result.issued.seq;
        if (result.tokenId) call.issued_token_id = result.tokenId;
        if (action.respond_delay_ms) await sleep(action.respond_delay_ms);
        if (action.drop === 'after') return this.drop(req, res, call, 'after');
        if (result.ok) {
            this.stats.token_success++;
            this.stats.by_grant_type[GRANT_NAMES[grantType]]++;
            if (action.oversized_body_bytes) result.body = padJson(result.body, action.oversized_body_bytes);
            result.body = applyFieldOverrides(result.body, action);
        }
        this.answer(res, call, result.status, result.body, result.headers, result.error);
    }

    // Fault answers that replace the grant entirely (no rotation): oauth_error, status, malformed_json.
    earlyFaultAnswer(action) {
        const headers = action.retry_after !== undefined ? { 'Retry-After': String(action.retry_after) } : {};
        if (action.oauth_error) {
            const status = action.status || (action.oauth_error === 'invalid_client' ? 401 : 400);
            const body = { error: action.oauth_error };
            if (action.error_description) body.error_description = action.error_description;
            if (status === 401) headers['WWW-Authenticate'] = REALM;
            return { status, body, headers };
        }
        if (action.status) {
            return { status: action.status, body: { error: action.status === 429 ? 'slow_down' : 'temporarily_unavailable' }, headers };
        }
        if (action.malformed_json) {
            return { status: 200, body: `{"access_token":"${randomToken()}","token_type":"Bearer","expires_in":36`, headers };
        }
        return null;
    }

    // Runs the grant the request names: refresh_token, client_credentials or token exchange.
    runGrant(client, form, action) {
        const grantType = form.get('grant_type');
        if (grantType === undefined) throw oauthError(400, 'invalid_request', 'grant_type missing');
        if (grantType === 'refresh_token') return this.refreshGrant(client, form, action);
        if (grantType === 'client_credentials') return this.clientCredentialsGrant(client, form, action);
        if (grantType === TOKEN_EXCHANGE_GRANT) return this.tokenExchangeGrant(client, form, action);
        throw oauthError(400, 'unsupported_grant_type');
    }

    // The client_credentials grant (RFC 6749 section 4.4): an access token of the client itself
    // (subject = client_id) with the scope and audience asked for; no refresh token.
    clientCredentialsGrant(client, form, action) {
        if (client.auth_method === 'none') throw oauthError(400, 'unauthorized_client', 'a public client cannot use client_credentials');
        const audience = checkAudience(client, form);
        const scope = form.get('scope') || null;
        const now = Date.now();
        const { token, rec } = this.issueAccessToken(null, client, now,
            { kind: 'client_credentials', subject: client.client_id, scope, audience, ttl: null });
        return this.plainTokenAnswer(client, token, rec, {}, action, now);
    }

    // Token exchange (RFC 8693): a currently valid access token of this provider (any client's,
    // any kind) for a new access token of the same subject (and grant), for the audience and
    // scope asked for (the scope defaults to the subject token's); no refresh token.
    tokenExchangeGrant(client, form, action) {
        const subjectToken = form.get('subject_token');
        if (!subjectToken) throw oauthError(400, 'invalid_request', 'subject_token missing');
        const type = form.get('subject_token_type');
        if (!type) throw oauthError(400, 'invalid_request', 'subject_token_type missing');
        if (type !== ACCESS_TOKEN_TYPE) throw oauthError(400, 'invalid_request', 'unsupported subject_token_type');
        const requested = form.get('requested_token_type');
        if (requested !== undefined && requested !== ACCESS_TOKEN_TYPE) {
            throw oauthError(400, 'invalid_request', 'unsupported requested_token_type');
        }
        const now = Date.now();
        const at = this.accessTokens.get(accessKey(subjectToken));
        if (!accessTokenLive(at, now)) throw oauthError(400, 'invalid_grant', 'subject_token is not an active access token');
        const audience = checkAudience(client, form);
        const scope = form.get('scope') || tokenScope(at);
        const { token, rec } = this.issueAccessToken(at.grant, client, now, {
            kind: 'token_exchange', subject: tokenSubject(at), scope, audience, ttl: client.exchange_access_ttl,
            exchanged_from: { token_id: at.token_id ?? null, kind: at.kind ?? 'grant', client_id: at.client_id,
                grant_id: at.grant ? at.grant.grant_id : null, subject: tokenSubject(at) },
        });
        return this.plainTokenAnswer(client, token, rec, { issued_token_type: ACCESS_TOKEN_TYPE }, action, now);
    }

    // The success answer of a grant without refresh token (client_credentials, token exchange),
    // with the client's answer quirks and the fault's omit / patch_fields applied.
    plainTokenAnswer(client, token, rec, extra, action, now) {
        const body = { access_token: token, ...extra, token_type: client.token_type_case || 'Bearer',
            expires_in: Math.round((rec.exp_ms - now) / 1000) };
        if (client.no_expires_in) delete body.expires_in;
        if (rec.scope) body.scope = rec.scope;
        if (client.expires_in_string && typeof body.expires_in === 'number') body.expires_in = String(body.expires_in);
        if (client.extra_fields !== null) Object.assign(body, client.extra_fields);
        for (const field of action.omit || []) delete body[field];
        if (action.patch_fields) Object.assign(body, action.patch_fields);
        return { status: 200, ok: true, body, headers: {}, issued: null, tokenId: rec.token_id };
    }

    // The refresh_token grant (RFC 6749 section 6) with single-use rotation and family revocation on reuse.
    refreshGrant(client, form, action) {
        const token = form.get('refresh_token');
        if (!token) throw oauthError(400, 'invalid_request', 'refresh_token missing');
        const required = client.require_params;
        if (required !== null) {
            for (const name of Object.keys(required)) {
                if (form.get(name) !== required[name]) throw oauthError(400, 'invalid_request', `missing or wrong ${name}`);
            }
        }
        const rec = this.refreshTokens.get(token);
        if (!rec) throw oauthError(400, 'invalid_grant', 'unknown refresh token');
        const grant = rec.grant;
        if (grant.client_id !== client.client_id) throw oauthError(400, 'invalid_grant', 'token issued to another client');
        if (grant.revoked) throw oauthError(400, 'invalid_grant', 'grant revoked');
        if (rec.used) return this.reuseDetected(grant);
        const now = Date.now();
        if (rec.expires_ms && now >= rec.expires_ms) throw oauthError(400, 'invalid_grant', 'refresh token expired');
        if (idleExpired(grant, client, now)) {
            this.stats.idle_expired++;
            const err = oauthError(400, 'invalid_grant', 'refresh token idle for too long');
            err.idle = true;
            throw err;
        }
        const asked = form.get('scope');
        if (asked && !scopeSubset(asked, grant.scope)) throw oauthError(400, 'invalid_scope');
        const { body, issued } = this.tokenResponse(client, grant, rec, asked || grant.scope, action, now);
        return { status: 200, ok: true, body, headers: {}, issued };
    }

    // A used refresh token came back: revoke the family and refuse.
    reuseDetected(grant) {
        grant.reuse_detected++;
        this.stats.reuse_detected++;
        this.revokeGrant(grant);
        const err = oauthError(400, 'invalid_grant', 'refresh token reuse detected; grant revoked');
        err.reuse = true;
        throw err;
    }

    // Rotates (unless no_rotation or the refresh_token is omitted) and builds the success body;
    // returns {body, issued} (issued: the new refresh token's record, or null).
    tokenResponse(client, grant, rec, scope, action, now) {
        const omit = action.omit || [];
        const rotate = !client.no_rotation && !omit.includes('refresh_token');
        const body = {
            access_token: this.issueAccessToken(grant, client, now),
            token_type: client.token_type_case || 'Bearer',
            expires_in: client.access_ttl,
        };
        if (client.no_expires_in) delete body.expires_in;
        let issued = null;
        if (rotate) {
            rec.used = true;
            rec.used_ms = now;
            // A million-token bench would otherwise keep every rotated token (reuse detection).
            if (client.forget_used) this.refreshTokens.delete(rec.token);
            grant.rotations++;
            issued = this.issueRefreshToken(grant, client, now);
            body.refresh_token = issued.token;
            if (client.refresh_token_expires_in !== null) body[client.refresh_expires_field] = client.refresh_token_expires_in;
        }
        grant.active_ms = now;  // a successful refresh restarts the grant's idle clock
        body.scope = client.narrow_scope ?? scope;
        if (client.id_token || action.id_token_claims || action.id_token_omit) {
            body.id_token = this.idToken(grant, client, now, action.id_token_claims, action.id_token_omit);
        }
        if (client.expires_in_string) {
            // GitHub's 2020 format: the lifetimes as JSON strings.
            for (const field of ['expires_in', client.refresh_expires_field]) {
                if (typeof body[field] === 'number') body[field] = String(body[field]);
            }
        }
        if (client.extra_fields !== null) Object.assign(body, client.extra_fields);
        for (const field of omit) delete body[field];
        if (action.patch_fields) Object.assign(body, action.patch_fields);
        return { body, issued };
    }

    // ------------------------------------------------------------ call log and faults

    // Records a /token request's arrival (log entry, counters, in-flight gauge).
    startCall(res) {
        const call = this.logCall('token');
        call.conn = res.socket ? res.socket.connId ?? null : null;
        call.conn_ms = res.socket ? res.socket.connMs ?? null : null;
        this.stats.token_requests++;
        this.inFlight++;
        if (this.inFlight > this.stats.max_in_flight) this.stats.max_in_flight = this.inFlight;
        res.once('close', () => {
            this.inFlight--;
            // The client hung up before any answer (its timeout, or it went away).
            if (call.status === null && !call.dropped) call.client_gone = true;
        });
        return call;
    }

    // Appends an entry to the call log (a ring of CALL_LOG_CAP entries shared by /token and /revoke).
    logCall(endpoint) {
        const call = { t_ms: Date.now(), endpoint, grant_id: null, client_id: null, status: null };
        this.calls.push(call);
        if (this.calls.length >= CALL_LOG_CAP * 1.25) this.calls = this.calls.slice(-CALL_LOG_CAP);
        return call;
    }

    // Records a /token request's outcome.
    finishCall(call, status, error) {
        call.status = status;
        call.duration_ms = Date.now() - call.t_ms;
        this.stats.by_status[status] = (this.stats.by_status[status] || 0) + 1;
        if (error) {
            call.error = error;
            this.stats.by_error[error] = (this.stats.by_error[error] || 0) + 1;
        }
    }

    // Sends a /token answer and logs it; `error` is the code to log and count (default: body.error).
    answer(res, call, status, body, headers, error = typeof body === 'object' ? body.error : undefined) {
        this.finishCall(call, status, error);
        sendJson(res, status, body, headers);
    }

    // Kills the connection without any answer (drop faults).
    drop(req, res, call, when) {
        call.dropped = when;
        call.duration_ms = Date.now() - call.t_ms;
        this.stats.dropped++;
        req.socket.destroy();
    }

    // The cut_answer fault: a 200 whose body stops half way (no rotation), then the socket is
    // destroyed, as when a connection breaks in the middle of an answer.
    cutAnswer(req, res, call) {
        const text = JSON.stringify({ access_token: randomToken(), token_type: 'Bearer', expires_in: 3600, refresh_token: randomToken() });
        call.dropped = 'mid_answer';
        call.duration_ms = Date.now() - call.t_ms;
        this.stats.dropped++;
        res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text), 'Cache-Control': 'no-store' });
        res.write(text.slice(0, Math.floor(text.length / 2)), () => req.socket.destroy());
    }

    // Finds the first live fault rule matching this request and consumes one use of it.
    takeFault(clientId, grant, endpoint = 'token') {
        const now = Date.now();
        this.faults = this.faults.filter((f) => f.remaining !== 0 && !(f.until_ms !== null && now >= f.until_ms));
        const fault = this.faults.find((f) => faultMatches(f.match, clientId, grant, endpoint));
        if (!fault) return null;
        if (fault.remaining !== null) fault.remaining--;
        fault.applied++;
        this.stats.faults_applied++;
        return fault;
    }

    // ------------------------------------------------------------ /revoke and /introspect

    // POST /revoke (RFC 7009) or a revoke_paths entry (`path`): a refresh token revokes its
    // grant, an access token only itself. Logged in the call log (endpoint "revoke"); faults
    // with match.endpoint "revoke" apply here.
    async onRevoke(req, res, path = '/revoke') {
        const call = this.logCall('revoke');
        if (path !== '/revoke') call.path = path;
        const rs = this.stats.revoke;
        rs.requests++;
        const finish = (status, body, headers = {}) => {
            call.status = status;
            call.duration_ms = Date.now() - call.t_ms;
            rs.by_status[status] = (rs.by_status[status] || 0) + 1;
            if (body && typeof body === 'object' && body.error) {
                call.error = body.error;
                rs.by_error[body.error] = (rs.by_error[body.error] || 0) + 1;
            }
            sendJson(res, status, body, headers);
        };
        let form;
        try {
            form = await this.readOAuthForm(req);
        } catch (err) {
            if (!(err instanceof HttpError)) throw err;
            return finish(err.status, err.body, err.headers);
        }
        const token = form.get('token');
        const rt = token ? this.refreshTokens.get(token) : undefined;
        const at = token && !rt ? this.accessTokens.get(accessKey(token)) : undefined;
        const grant = rt ? rt.grant : at ? at.grant : null;
        call.client_id = this.claimedClientId(req, form);
        call.grant_id = grant ? grant.grant_id : null;
        call.token_type_hint = form.get('token_type_hint') ?? null;
        call.token_kind = rt ? 'refresh_token' : at ? 'access_token' : null;
        call.presented_seq = rt ? rt.seq : null;
        const fault = this.takeFault(call.client_id, grant, 'revoke');
        const action = fault ? fault.action : {};
        if (fault) call.fault_id = fault.fault_id;
        if (action.delay_ms) await sleep(action.delay_ms);
        if (action.drop === 'before') return this.dropRevoke(req, call, 'before');
        const early = this.earlyFaultAnswer(action);
        if (early) return finish(early.status, early.body, early.headers);
        let client;
        try {
            client = this.authenticate(req, form, path, call);
            if (!token) throw oauthError(400, 'invalid_request', 'token missing');
        } catch (err) {
            if (!(err instanceof HttpError)) throw err;
            if (err.assertionReason) call.assertion = err.assertionReason;
            return finish(err.status, err.body, err.headers);
        }
        // revoke_used_noop: a refresh token already rotated away is no longer valid, so some
        // providers do nothing when it is revoked; by default it revokes its grant.
        if (rt && rt.grant.client_id === client.client_id && !(rt.used && client.revoke_used_noop)) this.revokeGrant(rt.grant);
        if (at && at.client_id === client.client_id) at.revoked = true;
        if (action.drop === 'after') return this.dropRevoke(req, call, 'after');
        this.stats.revocations++;
        finish(200, {});
    }

    // Kills a /revoke connection without an answer (drop faults at the revocation endpoint).
    dropRevoke(req, call, when) {
        call.dropped = when;
        call.duration_ms = Date.now() - call.t_ms;
        this.stats.revoke.dropped++;
        req.socket.destroy();
    }

    // POST /introspect (RFC 7662): any authenticated client may ask about any token.
    async onIntrospect(req, res) {
        const form = await this.readOAuthForm(req);
        this.authenticate(req, form, '/introspect');
        const token = form.get('token');
        if (!token) throw oauthError(400, 'invalid_request', 'token missing');
        this.stats.introspections++;
        sendJson(res, 200, this.introspect(token, Date.now()));
    }

    // The introspection answer for one token.
    introspect(token, now) {
        const rt = this.refreshTokens.get(token);
        if (rt) {
            const live = !rt.used && !rt.grant.revoked && !(rt.expires_ms && now >= rt.expires_ms)
                && !idleExpired(rt.grant, this.clients.get(rt.grant.client_id), now);
            return live ? this.tokenInfo('refresh_token', rt.grant, rt.iat, rt.expires_ms || null) : { active: false };
        }
        const at = this.accessTokens.get(accessKey(token));
        if (!accessTokenLive(at, now)) return { active: false };
        if (!at.kind) return this.tokenInfo('access_token', at.grant, at.iat, at.exp_ms);
        // A client_credentials or exchanged token: its own client, subject, scope and audience.
        const info = {
            active: true, token_type: 'access_token', client_id: at.client_id, sub: at.subject,
            iss: this.issuer, iat: Math.floor(at.iat / 1000), exp: Math.floor(at.exp_ms / 1000),
            grant_id: at.grant ? at.grant.grant_id : null, token_kind: at.kind, token_id: at.token_id,
        };
        if (at.scope) info.scope = at.scope;
        if (at.audience !== null) info.aud = at.audience;
        return info;
    }

    // Common fields of an active introspection answer.
    tokenInfo(type, grant, iatMs, expMs) {
        const info = {
            active: true, token_type: type, client_id: grant.client_id, sub: grant.subject,
            scope: grant.scope, iss: this.issuer, iat: Math.floor(iatMs / 1000), grant_id: grant.grant_id,
        };
        if (expMs) info.exp = Math.floor(expMs / 1000);
        return info;
    }

    // ------------------------------------------------------------ discovery

    // OIDC / RFC 8414 metadata; admin settings may override the issuer or any other field.
    metadata() {
        const meta = {
            issuer: this.settings.issuer ?? this.issuer,
            token_endpoint: `${this.baseUrl}/token`,
            revocation_endpoint: `${this.baseUrl}/revoke`,
            introspection_endpoint: `${this.baseUrl}/introspect`,
            token_endpoint_auth_methods_supported: AUTH_METHODS,
            revocation_endpoint_auth_methods_supported: AUTH_METHODS,
            introspection_endpoint_auth_methods_supported: AUTH_METHODS,
            token_endpoint_auth_signing_alg_values_supported: ASSERTION_ALGS,
            revocation_endpoint_auth_signing_alg_values_supported: ASSERTION_ALGS,
            introspection_endpoint_auth_signing_alg_values_supported: ASSERTION_ALGS,
            grant_types_supported: ['authorization_code', 'refresh_token', 'client_credentials', TOKEN_EXCHANGE_GRANT],
            response_types_supported: ['code'],
            subject_types_supported: ['public'],
            id_token_signing_alg_values_supported: ['HS256'],
            scopes_supported: ['openid', 'offline_access'],
        };
        return { ...meta, ...(this.settings.discovery || {}) };
    }

    // ------------------------------------------------------------ admin API

    // Routes /admin/*; bodies are JSON, answers are JSON.
    async onAdmin(req, res, path, query) {
        const raw = req.method === 'GET' || req.method === 'DELETE' ? '' : await readBody(req, ADMIN_BODY_LIMIT);
        let body = {};
        if (raw.trim()) {
            try {
                body = JSON.parse(raw);
            } catch {
                throw badAdmin('body is not valid JSON');
            }
        }
        const key = `${req.method} ${path.replace(/^\/admin\/(grants|faults)\/[^/]+/, '/admin/$1/:id')}`;
        const id = decodeURIComponent(path.split('/')[3] || '');
        const handlers = {
            'GET /admin/health': () => ({ ok: true }),
            'POST /admin/clients': () => this.adminClient(body),
            'POST /admin/grants': () => this.adminGrants(body),
            'GET /admin/grants': () => this.grantList(query),
            'GET /admin/grants/:id': () => this.grantView(this.grantById(id)),
            'POST /admin/lookup': () => this.adminLookup(body),
            'POST /admin/grants/:id/revoke': () => this.adminRevokeGrant(id),
            'POST /admin/grants/:id/login': () => this.adminRelogin(id),
            'GET /admin/stats': () => ({ ...this.stats, in_flight: this.inFlight }),
            'POST /admin/stats/reset': () => this.resetStats() || { ok: true },
            'GET /admin/calls': () => ({ calls: this.callsSince(query) }),
            'POST /admin/faults': () => this.addFault(body),
            'GET /admin/faults': () => ({ faults: this.faults }),
            'DELETE /admin/faults': () => this.clearFaults(),
            'DELETE /admin/faults/:id': () => this.deleteFault(id),
            'GET /admin/settings': () => this.settings,
            'POST /admin/settings': () => this.adminSettings(body),
            'POST /admin/reset': () => this.reset() || { ok: true },
        };
        const handler = handlers[key];
        if (!handler) throw badAdmin(`no admin route ${req.method} ${path}`, 404);
        sendJson(res, 200, handler());
    }

    // POST /admin/clients: creates or replaces a client (grants of a replaced client stay).
    adminClient(body) {
        checkKeys(body, CLIENT_KEYS, 'client');
        const c = { client_id: body.client_id, auth_method: 'client_secret_basic', access_ttl: 3600, id_token: false, ...QUIRK_DEFAULTS, ...body };
        if (typeof c.client_id !== 'string' || !c.client_id) throw badAdmin('client_id must be a non-empty string');
        if (!AUTH_METHODS.includes(c.auth_method)) throw badAdmin(`auth_method must be one of ${AUTH_METHODS.join(', ')}`);
        if (c.auth_method === 'private_key_jwt') {
            if (c.client_secret != null) throw badAdmin('private_key_jwt clients have no client_secret (give jwk_or_pem)');
            if (c.jwk_or_pem === undefined) throw badAdmin('jwk_or_pem is required for private_key_jwt');
            const { publicKey, alg } = importClientKey(c.jwk_or_pem);
            c.client_secret = null;
            c.publicKey = publicKey;
            c.assertion_alg = alg;
        } else if (c.jwk_or_pem !== undefined) {
            throw badAdmin('jwk_or_pem is only for auth_method private_key_jwt');
        } else if (c.auth_method !== 'none' && (typeof c.client_secret !== 'string' || !c.client_secret)) {
            throw badAdmin('client_secret is required unless auth_method is none or private_key_jwt');
        }
        if (c.auth_method === 'none') c.client_secret = null;
        optInt(c, 'access_ttl');
        optInt(c, 'refresh_token_expires_in');
        if (!['refresh_token_expires_in', 'refresh_expires_in'].includes(c.refresh_expires_field)) {
            throw badAdmin('refresh_expires_field must be refresh_token_expires_in or refresh_expires_in');
        }
        if (c.token_type_case !== null && typeof c.token_type_case !== 'string') throw badAdmin('token_type_case must be a string');
        if (c.narrow_scope !== null && typeof c.narrow_scope !== 'string') throw badAdmin('narrow_scope must be a string');
        if (typeof c.big_access_token !== 'boolean') optInt(c, 'big_access_token', 64);
        if (typeof c.revoke_used_noop !== 'boolean') throw badAdmin('revoke_used_noop must be a boolean');
        optInt(c, 'refresh_token_idle_ttl', 1);
        if (!ERROR_STYLES.includes(c.error_style)) throw badAdmin(`error_style must be one of ${ERROR_STYLES.join(', ')}`);
        if (c.extra_fields !== null) requireObject(c.extra_fields, 'extra_fields');
        if (typeof c.expires_in_string !== 'boolean') throw badAdmin('expires_in_string must be a boolean');
        if (c.require_params !== null) {
            requireObject(c.require_params, 'require_params');
            if (!Object.entries(c.require_params).every(([k, v]) => k && typeof v === 'string')) {
                throw badAdmin('require_params must map parameter names to string values');
            }
        }
        if (typeof c.require_audience !== 'boolean') throw badAdmin('require_audience must be a boolean');
        if (typeof c.forget_used !== 'boolean') throw badAdmin('forget_used must be a boolean');
        if (c.audiences !== null && !(Array.isArray(c.audiences) && c.audiences.every((a) => typeof a === 'string' && a))) {
            throw badAdmin('audiences must be null or an array of non-empty strings');
        }
        optInt(c, 'exchange_access_ttl');
        this.clients.set(c.client_id, c);
        const { client_secret, publicKey, jwk_or_pem, ...visible } = c;
        return { client: visible };
    }

    // POST /admin/grants: mints `count` grants (subjects suffixed -i when count > 1).
    adminGrants(body) {
        checkKeys(body, ['client_id', 'subject', 'scope', 'count'], 'grant');
        const client = this.clients.get(body.client_id);
        if (!client) throw badAdmin('unknown client_id', 404);
        if (typeof body.subject !== 'string' || !body.subject) throw badAdmin('subject must be a non-empty string');
        if (body.scope !== undefined && typeof body.scope !== 'string') throw badAdmin('scope must be a string');
        const count = optInt(body, 'count', 1) ?? 1;
        const scope = body.scope ?? DEFAULT_SCOPE;
        const grants = new Array(count);
        for (let i = 0; i < count; i++) {
            grants[i] = this.mintGrant(client, count > 1 ? `${body.subject}-${i}` : body.subject, scope);
        }
        return { grants };
    }

    // Looks a grant up by id for the admin API.
    grantById(id) {
        const grant = this.grants.get(id);
        if (!grant) throw badAdmin('unknown grant_id', 404);
        return grant;
    }

    // GET /admin/grants[?client_id=]: the views of every grant (of one client).
    grantList(query) {
        const clientId = query.get('client_id');
        const out = [];
        for (const g of this.grants.values()) if (clientId === null || g.client_id === clientId) out.push(this.grantView(g));
        return { grants: out };
    }

    // POST /admin/lookup {refresh_tokens?, access_tokens?}: which grant issued each refresh token,
    // and its state there (an auditor's question: "is what the database holds the provider's
    // current token?"); what each access token is (accessTokenView).
    adminLookup(body) {
        checkKeys(body, ['refresh_tokens', 'access_tokens'], 'lookup');
        const strings = (v) => Array.isArray(v) && v.every((t) => typeof t === 'string');
        if (body.access_tokens !== undefined && !strings(body.access_tokens)) throw badAdmin('access_tokens must be an array of strings');
        if (body.access_tokens !== undefined && body.refresh_tokens === undefined) {
            return { access_tokens: body.access_tokens.map((t) => this.accessTokenView(t)) };
        }
        if (!strings(body.refresh_tokens)) {
            throw badAdmin('refresh_tokens must be an array of strings');
        }
        const out = {
            tokens: body.refresh_tokens.map((t) => {
                const rec = this.refreshTokens.get(t);
                if (!rec) return null;
                return {
                    grant_id: rec.grant.grant_id, seq: rec.seq, used: rec.used, used_ms: rec.used_ms,
                    current: rec.grant.current === rec, revoked: rec.grant.revoked,
                };
            }),
        };
        if (body.access_tokens !== undefined) out.access_tokens = body.access_tokens.map((t) => this.accessTokenView(t));
        return out;
    }

    // What this provider knows of an access token (POST /admin/lookup access_tokens), or null
    // when unknown (never issued, or expired and swept): who it is for, which grant, and for an
    // exchanged token, which token it was exchanged for.
    accessTokenView(token) {
        const at = this.accessTokens.get(accessKey(token));
        if (!at) return null;
        return {
            kind: at.kind ?? 'grant', token_id: at.token_id ?? null, client_id: at.client_id,
            subject: tokenSubject(at), scope: tokenScope(at), audience: at.audience ?? null,
            grant_id: at.grant ? at.grant.grant_id : null, active: accessTokenLive(at, Date.now()),
            revoked: at.revoked, exp_ms: at.exp_ms, exchanged_from: at.exchanged_from ?? null,
        };
    }

    // POST /admin/grants/<id>/revoke: the user withdrew consent at the provider.
    adminRevokeGrant(id) {
        const grant = this.grantById(id);
        this.revokeGrant(grant);
        return this.grantView(grant);
    }

    // POST /admin/grants/<id>/login: the user signs in again in the same browser session and the
    // provider continues the grant (as oidc-provider does): new tokens of the SAME grant. The
    // grant's earlier refresh tokens stay as they are (an unused one still works), and revoking
    // any refresh token of the grant still ends all of them. A revoked grant cannot be continued.
    adminRelogin(id) {
        const grant = this.grantById(id);
        if (grant.revoked) throw badAdmin('grant is revoked: a new login makes a new grant', 409);
        const client = this.clients.get(grant.client_id);
        if (!client) throw badAdmin('the grant\'s client no longer exists', 404);
        const now = Date.now();
        const rt = this.issueRefreshToken(grant, client, now);
        grant.active_ms = now;  // a login restarts the grant's idle clock
        const out = {
            grant_id: grant.grant_id, subject: grant.subject, scope: grant.scope,
            access_token: this.issueAccessToken(grant, client, now),
            refresh_token: rt.token, expires_in: client.access_ttl,
        };
        if (client.refresh_token_expires_in !== null) out[client.refresh_expires_field] = client.refresh_token_expires_in;
        if (client.id_token) out.id_token = this.idToken(grant, client, now, null);
        return out;
    }

    // The admin view of a grant, including its current refresh token (tests compare it).
    grantView(g) {
        const cur = g.current;
        const now = Date.now();
        const expired = cur && cur.expires_ms && now >= cur.expires_ms;
        const idle = !g.revoked && idleExpired(g, this.clients.get(g.client_id), now);
        return {
            grant_id: g.grant_id, client_id: g.client_id, subject: g.subject, scope: g.scope,
            auth_time: g.auth_time, active: !g.revoked && !expired && !idle, revoked: g.revoked,
            idle_expired: idle,
            refresh_calls: g.refresh_calls, rotations: g.rotations, reuse_detected: g.reuse_detected,
            refresh_tokens_issued: g.issued, revoked_ms: g.revoked_ms ?? null,
            refresh_token: g.revoked ? null : cur.token,
        };
    }

    // GET /admin/calls: log entries since since_ms, optionally for one grant_id or client_id.
    callsSince(query) {
        const since = Number(query.get('since_ms') || 0);
        if (Number.isNaN(since)) throw badAdmin('since_ms must be a number');
        const grantId = query.get('grant_id');
        const clientId = query.get('client_id');
        const endpoint = query.get('endpoint') || 'token';
        if (![...FAULT_ENDPOINTS, 'all'].includes(endpoint)) throw badAdmin('endpoint must be token, revoke or all');
        return this.calls.slice(-CALL_LOG_CAP).filter((c) => c.t_ms >= since
            && (endpoint === 'all' || c.endpoint === endpoint)
            && (grantId === null || c.grant_id === grantId)
            && (clientId === null || c.client_id === clientId));
    }

    // POST /admin/faults: validates and appends a fault rule.
    addFault(body) {
        checkKeys(body, ['match', 'action', 'count', 'until_ms'], 'fault');
        const match = body.match ?? {};
        checkKeys(match, MATCH_KEYS, 'match');
        if (match.endpoint !== undefined && !FAULT_ENDPOINTS.includes(match.endpoint)) {
            throw badAdmin(`match.endpoint must be one of ${FAULT_ENDPOINTS.join(', ')}`);
        }
        validateAction(body.action, match.endpoint ?? 'token');
        const count = optInt(body, 'count', 1);
        if (body.until_ms !== undefined && typeof body.until_ms !== 'number') throw badAdmin('until_ms must be a number');
        const fault = {
            fault_id: `f${this.nextFault++}`, match, action: body.action,
            remaining: count, until_ms: body.until_ms ?? null, applied: 0,
        };
        this.faults.push(fault);
        return { fault_id: fault.fault_id };
    }

    // DELETE /admin/faults: removes every rule.
    clearFaults() {
        this.faults = [];
        return { ok: true };
    }

    // DELETE /admin/faults/<id>: removes one rule.
    deleteFault(id) {
        const before = this.faults.length;
        this.faults = this.faults.filter((f) => f.fault_id !== id);
        if (this.faults.length === before) throw badAdmin('unknown fault_id', 404);
        return { ok: true };
    }

    // POST /admin/settings: {issuer: string|null, discovery: object|null, token_paths: [path]|null,
    // revoke_paths: [path]|null} (null restores the default). All is checked before anything is set.
    adminSettings(body) {
        checkKeys(body, SETTINGS_KEYS, 'settings');
        if (body.issuer !== undefined && body.issuer !== null && typeof body.issuer !== 'string') {
            throw badAdmin('issuer must be a string or null');
        }
        if (body.discovery !== undefined && body.discovery !== null) requireObject(body.discovery, 'discovery');
        const tokenPaths = body.token_paths === undefined ? this.settings.token_paths : checkEndpointPaths(body.token_paths, 'token_paths', '/token');
        const revokePaths = body.revoke_paths === undefined ? this.settings.revoke_paths : checkEndpointPaths(body.revoke_paths, 'revoke_paths', '/revoke');
        const endpointPaths = new Map();
        for (const [paths, endpoint] of [[tokenPaths, 'token'], [revokePaths, 'revoke']]) {
            for (const p of paths || []) {
                if (endpointPaths.has(p)) throw badAdmin(`path ${p} is listed more than once in token_paths / revoke_paths`);
                endpointPaths.set(p, endpoint);
            }
        }
        if (body.issuer !== undefined) this.settings.issuer = body.issuer;
        if (body.discovery !== undefined) this.settings.discovery = body.discovery;
        this.settings.token_paths = tokenPaths;
        this.settings.revoke_paths = revokePaths;
        this.endpointPaths = endpointPaths;
        return this.settings;
    }
}

// Checks a token_paths / revoke_paths value: null, or up to MAX_ENDPOINT_PATHS paths that start
// with "/", carry no query, fragment, space or control character, and are not another route of
// this server (`own`, the endpoint's usual path, is allowed). Returns a copy.
function checkEndpointPaths(paths, key, own) {
    if (paths === null) return null;
    if (!Array.isArray(paths) || paths.length > MAX_ENDPOINT_PATHS) {
        throw badAdmin(`${key} must be null or an array of at most ${MAX_ENDPOINT_PATHS} paths`);
    }
    for (const p of paths) {
        if (typeof p !== 'string' || !/^\/[\x21-\x7e]*$/.test(p) || p.includes('?') || p.includes('#')) {
            throw badAdmin(`${key} entries must be paths starting with "/", without query, fragment or spaces`);
        }
        const reserved = ['/token', '/revoke', '/introspect', '/admin'].includes(p) || p.startsWith('/admin/') || isDiscoveryPath(p);
        if (reserved && p !== own) throw badAdmin(`${key}: ${p} is already another route of this server`);
    }
    return [...paths];
}

// The names of a /token request's form parameters beyond the standard ones (never values).
function extraParams(form) {
    let out = NO_EXTRA_PARAMS;
    const own = GRANT_PARAMS[form.get('grant_type')];
    for (const name of form.keys()) {
        if (STANDARD_TOKEN_PARAMS.has(name) || (own && own.has(name))) continue;
        if (out === NO_EXTRA_PARAMS) out = [];
        out.push(name);
    }
    return out;
}

// True when the client has refresh_token_idle_ttl and the grant was last refreshed or logged in
// that long ago (evaluated at request time; no timers).
function idleExpired(grant, client, now) {
    const ttl = client ? client.refresh_token_idle_ttl : null;
    return ttl !== null && now >= grant.active_ms + ttl * 1000;
}

// True when an access token record is usable: not expired, not revoked, its grant (if any) not revoked.
function accessTokenLive(at, now) {
    return Boolean(at) && !at.revoked && !(at.grant && at.grant.revoked) && now < at.exp_ms;
}

// The subject and scope of an access token record (a grant's token has them from its grant).
function tokenSubject(at) {
    return at.kind ? at.subject : at.grant.subject;
}
function tokenScope(at) {
    return at.kind ? at.scope : at.grant.scope;
}

// The audience of a client_credentials or token-exchange request (null when none), checked
// against the client's require_audience and audiences settings.
function checkAudience(client, form) {
    const audience = form.get('audience') || null;
    if (audience === null) {
        if (client.require_audience) throw oauthError(400, 'invalid_request', 'audience required');
        return null;
    }
    if (client.audiences !== null && !client.audiences.includes(audience)) {
        throw oauthError(400, 'invalid_target', 'audience not allowed for this client');
    }
    return audience;
}

// Call log fields of a client_credentials or token-exchange request, from the form as sent
// (whatever the outcome): scope and audience, and for an exchange the subject token's type and
// whose token it is (never a token value).
function describeGrantRequest(call, form, exchange, subjectAt, refreshTokens) {
    call.scope = form.get('scope') ?? null;
    call.audience = form.get('audience') ?? null;
    if (!exchange) return;
    call.subject_token_type = form.get('subject_token_type') ?? null;
    call.requested_token_type = form.get('requested_token_type') ?? null;
    const token = form.get('subject_token');
    call.subject_token_kind = subjectAt ? 'access_token' : token && refreshTokens.has(token) ? 'refresh_token' : null;
    call.subject_grant_id = subjectAt && subjectAt.grant ? subjectAt.grant.grant_id : null;
    call.subject = subjectAt ? tokenSubject(subjectAt) : null;
    call.subject_client_id = subjectAt ? subjectAt.client_id : null;
    call.subject_token_id = subjectAt ? subjectAt.token_id ?? null : null;
}

// The invalid_grant answer of a client with a non-default error_style, as real providers write
// it: {status, body, headers, error} where `error` is the code logged and counted in by_error.
function styledInvalidGrant(style) {
    switch (style) {
    case 'github':
        return { status: 200, headers: {}, error: 'bad_refresh_token', body: {
            error: 'bad_refresh_token', error_description: 'The refresh token passed is incorrect or expired.',
            error_uri: GITHUB_ERROR_URI } };
    case 'slack':
        return { status: 200, headers: {}, error: 'invalid_refresh_token', body: { ok: false, error: 'invalid_refresh_token' } };
    case 'hubspot':
        return { status: 400, headers: {}, error: 'BAD_REFRESH_TOKEN', body: {
            status: 'BAD_REFRESH_TOKEN', message: 'missing or unknown refresh token', correlationId: crypto.randomUUID() } };
    case 'forbidden':
        return { status: 403, headers: {}, error: 'invalid_grant', body: {
            error: 'invalid_grant', error_description: 'Unknown or invalid refresh token.' } };
    case 'entra': {
        const traceId = crypto.randomUUID();
        const correlationId = crypto.randomUUID();
        const timestamp = new Date().toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
        return { status: 400, headers: {}, error: 'invalid_grant', body: {
            error: 'invalid_grant',
            error_description: `AADSTS70000: Provided grant is invalid or malformed. Trace ID: ${traceId} Correlation ID: ${correlationId} Timestamp: ${timestamp}`,
            error_codes: [70000], timestamp, trace_id: traceId, correlation_id: correlationId } };
    }
    default:
        throw new Error(`unknown error_style ${style}`);
    }
}

// True for the discovery documents' paths (also under an issuer path, RFC 8414 section 3.1).
function isDiscoveryPath(path) {
    return path.endsWith('/.well-known/openid-configuration')
        || path === '/.well-known/oauth-authorization-server'
        || path.startsWith('/.well-known/oauth-authorization-server/');
}

// True when every field of a fault's match equals the request's endpoint / client / grant
// (a rule without match.endpoint is for /token).
function faultMatches(match, clientId, grant, endpoint) {
    if ((match.endpoint ?? 'token') !== endpoint) return false;
    if (match.client_id !== undefined && match.client_id !== clientId) return false;
    if (match.grant_id !== undefined && (!grant || grant.grant_id !== match.grant_id)) return false;
    if (match.subject !== undefined && (!grant || grant.subject !== match.subject)) return false;
    return true;
}

// Checks a fault action object, so a typo cannot silently make a rule a no-op.
function validateAction(action, endpoint) {
    checkKeys(action, endpoint === 'revoke' ? REVOKE_ACTION_KEYS : FAULT_ACTION_KEYS, 'action');
    if (Object.keys(action).length === 0) throw badAdmin('action must not be empty');
    optInt(action, 'delay_ms');
    optInt(action, 'respond_delay_ms');
    optInt(action, 'oversized_body_bytes', 1);
    const status = optInt(action, 'status', 100);
    if (status !== null && status > 599) throw badAdmin('status must be an HTTP status');
    if (action.drop !== undefined && action.drop !== 'before' && action.drop !== 'after') throw badAdmin('drop must be "before" or "after"');
    if (action.omit !== undefined && !(Array.isArray(action.omit) && action.omit.every((f) => typeof f === 'string'))) {
        throw badAdmin('omit must be an array of field names');
    }
    if (action.id_token_claims !== undefined) requireObject(action.id_token_claims, 'id_token_claims');
    if (action.id_token_omit !== undefined && !(Array.isArray(action.id_token_omit) && action.id_token_omit.every((f) => typeof f === 'string'))) {
        throw badAdmin('id_token_omit must be an array of claim names');
    }
    if (action.oauth_error !== undefined && typeof action.oauth_error !== 'string') throw badAdmin('oauth_error must be a string');
    if (action.cut_answer !== undefined && action.cut_answer !== true) throw badAdmin('cut_answer must be true');
    if (action.patch_fields !== undefined) requireObject(action.patch_fields, 'patch_fields');
    validateFieldOverrides(action);
}

// ---- Field overrides (`set_fields`, `raw_fields`): a successful, rotated answer with odd
// optional fields, as real providers send them ("expires_in": "3600", a numeric scope, ...).
FAULT_ACTION_KEYS.push('set_fields', 'raw_fields');

// Checks set_fields (any JSON values) and raw_fields (JSON text written verbatim).
function validateFieldOverrides(action) {
    if (action.set_fields !== undefined) requireObject(action.set_fields, 'set_fields');
    if (action.raw_fields !== undefined) {
        requireObject(action.raw_fields, 'raw_fields');
        if (!Object.values(action.raw_fields).every((v) => typeof v === 'string' && v.length > 0)) {
            throw badAdmin('raw_fields values must be non-empty strings of JSON text');
        }
    }
}

// Sets `set_fields` on a success body (replacing the field), then appends each `raw_fields`
// member as `"name":<text>` verbatim (for numbers JavaScript cannot hold, such as 1e400 or
// 99999999999999999999999); a raw field replaces a field of the same name.
function applyFieldOverrides(body, action) {
    if (!action.set_fields && !action.raw_fields) return body;
    const obj = typeof body === 'string' ? JSON.parse(body) : { ...body };
    Object.assign(obj, action.set_fields || {});
    const raw = action.raw_fields || {};
    for (const name of Object.keys(raw)) delete obj[name];
    let text = JSON.stringify(obj);
    for (const [name, value] of Object.entries(raw)) {
        text = `${text.slice(0, -1)}${text.length > 2 ? ',' : ''}${JSON.stringify(name)}:${value}}`;
    }
    return text;
}

// Pads a JSON object with a "padding" field so the serialised body is exactly `bytes` long (when possible).
function padJson(body, bytes) {
    const base = JSON.stringify({ ...body, padding: '' });
    return JSON.stringify({ ...body, padding: 'x'.repeat(Math.max(0, bytes - base.length)) });
}

// ---------------------------------------------------------------- command line

// Parses the command line; exits with usage on anything unexpected.
function parseArgs(argv) {
    const usage = 'usage: node server.js --port N --cert FILE --key FILE [--issuer URL] [--http]';
    const opts = { port: 0, cert: null, key: null, issuer: null, http: false };
    for (let i = 0; i < argv.length; i++) {
        const a = argv[i];
        if (a === '--http') opts.http = true;
        else if (['--port', '--cert', '--key', '--issuer'].includes(a) && i + 1 < argv.length) opts[a.slice(2)] = argv[++i];
        else fail(usage);
    }
    opts.port = Number(opts.port);
    if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535) fail(usage);
    if (!opts.http && (!opts.cert || !opts.key)) fail(`${usage}\n(--cert and --key are required without --http)`);
    return opts;
}

// Prints a message to stderr and exits with status 2.
function fail(message) {
    process.stderr.write(`${message}\n`);
    process.exit(2);
}

// Starts the server; resolves to {server, provider, port} once it listens on 127.0.0.1.
function start(opts) {
    let provider = null;
    const onRequest = (req, res) => provider.handle(req, res);
    // Idle keep-alive connections outlive libcurl's default 118 s maximum connection age, so
    // the client, not this server, is the side that retires them (no reuse-after-close races).
    const serverOpts = { noDelay: true, requestTimeout: 0, headersTimeout: 190000 };
    const server = opts.http
        ? http.createServer(serverOpts, onRequest)
        : https.createServer({ ...serverOpts, cert: fs.readFileSync(opts.cert), key: fs.readFileSync(opts.key) }, onRequest);
    server.keepAliveTimeout = 180000;
    // Each connection gets a number and its opening time (TLS established), for the call log:
    // requests of a client process that died are those on connections it opened.
    let connSeq = 0;
    server.on(opts.http ? 'connection' : 'secureConnection', (sock) => {
        sock.connId = ++connSeq;
        sock.connMs = Date.now();
    });
    return new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen(opts.port, '127.0.0.1', () => {
            const port = server.address().port;
            const baseUrl = `${opts.http ? 'http' : 'https'}://127.0.0.1:${port}`;
            provider = new Provider({ baseUrl, issuer: opts.issuer || baseUrl });
            resolve({ server, provider, port });
        });
    });
}

// Main: listen, announce the port on stdout, stop cleanly on SIGTERM / SIGINT.
async function main() {
    // `node --test` with no arguments runs every .js under test/; this file is not a test.
    if (process.argv.length <= 2 && process.env.NODE_TEST_CONTEXT) return;
    const opts = parseArgs(process.argv.slice(2));
    let started;
    try {
        started = await start(opts);
    } catch (err) {
        fail(`idp: cannot start: ${err.message}`);
    }
    const stop = () => {
        started.server.close();
        started.server.closeAllConnections();
        process.exit(0);
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
    process.stdout.write(`listening ${started.port}\n`);
}

if (require.main === module) main();

module.exports = { start, Provider, parseBasic, formDecode };
