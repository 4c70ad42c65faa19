'use strict';
// A real OpenID Connect provider (the npm package oidc-provider, v9) for integration tests:
// HTTPS on 127.0.0.1 with the test CA's server certificate, one confidential client
// (client_secret_basic), refresh-token rotation on, short-lived access tokens, an unbounded
// in-memory store, and an interaction endpoint that logs in and consents automatically so tests
// can run the browser part of a login without a browser.
//
// Grants of the client: authorization_code (PKCE S256 accepted, required only with
// requirePkce), refresh_token, urn:ietf:params:oauth:grant-type:device_code (RFC 8628) and
// client_credentials. Authorization responses carry `iss` (RFC 9207; always on in v9).
// Counters of grants, refreshes, grant errors and revocations come from the provider's events.
//
// From a test:  const srv = await startOidcServer({ certDir, accessTtl: 5 });
//               const login = await srv.login('alice');   // {access_token, refresh_token, id_token, grantId, ...}
//               const r = await srv.authorize(url);        // {code, state, iss, error, error_description, redirect}
//               await srv.approveDevice(userCode);         // the user approves a device authorization
//               ... srv.stats, srv.endpoints, srv.accessTokenInfo(tok), await srv.stop();
// Standalone:   node oidc_server.js CERT_DIR   (prints "listening <port>")
//
// What a client must send (quirks of oidc-provider 9 included):
// - Authorization code: GET srv.endpoints.authorization with response_type=code, client_id,
//   redirect_uri (srv.redirectUri), scope, state, code_challenge + code_challenge_method=S256
//   (plain is refused), nonce (only together with `openid` in scope: a nonce without openid is
//   invalid_request). `openid` is otherwise optional (no ID token without it), but the request
//   needs at least one declared scope (openid, offline_access, API_SCOPES): with none, or only
//   undeclared ones, the redirect carries access_denied ("no scope was granted"). A refresh token
//   is issued only when scope has offline_access AND the request has prompt=consent (without
//   prompt=consent oidc-provider silently drops offline_access from an authorization request).
//   The redirect carries code, state and iss (= srv.issuer), or error, error_description,
//   state and iss. Redeem at srv.endpoints.token with grant_type=authorization_code, code,
//   redirect_uri, code_verifier, client_secret_basic.
// - Device flow: POST srv.endpoints.device_authorization with scope (client_secret_basic);
//   answer {device_code, user_code ("BCDF-GHJK": 8 letters of BCDFGHJKLMNPQRSTVWXZ with a dash;
//   case and dash do not matter when typed in), verification_uri, verification_uri_complete,
//   expires_in} and no `interval` (RFC 8628 says 5 s then; this server never answers
//   slow_down, so tests may poll faster). Poll the token endpoint with
//   grant_type=urn:ietf:params:oauth:grant-type:device_code and device_code: authorization_pending
//   until approved, then tokens (a refresh token when scope had offline_access, no prompt
//   needed here; an ID token when it had openid), or access_denied, or expired_token. As for
//   logins, the request needs at least one declared scope: without, even an approval ends in
//   access_denied (approveDevice then resolves {approved: false, error: 'access_denied'}).
//   Presenting a spent device code again revokes the grant it gave (as code reuse does).
// - Client credentials: POST the token endpoint with grant_type=client_credentials and scope
//   among API_SCOPES (e.g. "api:read"); the answer is an opaque access token with that scope,
//   no refresh token. `audience` is accepted and ignored (oidc-provider knows only RFC 8707
//   `resource`, and resource indicators are off here, so no resource server is needed).
//   openid / offline_access are accepted but mean nothing for this grant; an undeclared scope
//   is dropped silently (not invalid_scope), and no scope at all gives a token without scope.

const https = require('node:https');
const fs = require('node:fs');
const path = require('node:path');
const crypto = require('node:crypto');

const REDIRECT_URI = 'https://client.invalid/cb';
// Scopes for APIs (client credentials, or asked for in a login besides openid / offline_access).
const API_SCOPES = ['api:read', 'api:write'];
const DEVICE_CODE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';

// An unbounded Map-based adapter: the stock memory adapter is an LRU of about 1,000 entries,
// which evicts live refresh tokens under load and turns them into spurious invalid_grant.
function makeAdapterClass() {
    const store = new Map();       // "Model:id" -> payload
    const byGrant = new Map();     // grantId -> Set of "Model:id"
    const sessionByUid = new Map();
    const deviceByUserCode = new Map();  // normalised user code -> DeviceCode id
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
            if (this.model === 'DeviceCode' && payload.userCode) deviceByUserCode.set(payload.userCode, id);
        }
        async find(id) { return store.get(this.key(id)); }
        async findByUid(uid) { const id = sessionByUid.get(uid); return id ? this.find(id) : undefined; }
        async findByUserCode(userCode) {
            const id = deviceByUserCode.get(userCode);
            return id ? this.find(id) : undefined;
        }
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

// Minimal HTTPS client trusting only the test CA.
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

// A headless "browser" for one user agent: a cookie jar (by name; a cookie set empty or
// already expired is forgotten) over http.request. get/post do one hop, never follow.
function makeBrowser(http) {
    const jar = new Map();
    function absorb(res) {
        for (const c of [].concat(res.headers['set-cookie'] || [])) {
            const [pair, ...attrs] = c.split(';');
            const i = pair.indexOf('=');
            const name = pair.slice(0, i).trim();
            const value = pair.slice(i + 1).trim();
            const expires = attrs.map((a) => a.trim()).find((a) => /^expires=/i.test(a));
            const gone = !value || (expires && Date.parse(expires.slice(8)) <= Date.now());
            if (gone) jar.delete(name);
            else jar.set(name, value);
        }
        return res;
    }
    const cookie = () => [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
    return {
        async get(url) {
            return absorb(await http.request(url, { headers: { cookie: cookie() } }));
        },
        async post(url, fields) {
            const body = new URLSearchParams(fields).toString();
            return absorb(await http.request(url, { method: 'POST', body, headers: {
                cookie: cookie(), 'content-type': 'application/x-www-form-urlencoded',
                'content-length': Buffer.byteLength(body) } }));
        },
    };
}

// Escapes text for HTML (the pages below echo client names and user codes).
function htmlEscape(s) {
    return String(s).replace(/[&<>"']/g, (ch) => `&#${ch.charCodeAt(0)};`);
}

// Reverses htmlEscape and the entities oidc-provider's own escaping uses.
function htmlUnescape(s) {
    return s.replace(/&#(\d+);/g, (_m, n) => String.fromCharCode(Number(n)))
        .replace(/&#x([0-9a-f]+);/gi, (_m, n) => String.fromCharCode(parseInt(n, 16)))
        .replace(/&quot;/g, '"').replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&amp;/g, '&');
}

// The named <input> fields (name -> value) of the form with this id (or of the whole page),
// and the form's action.
function readForm(html, formId) {
    let part = html;
    let action;
    const forms = html.match(/<form\b[^>]*>[\s\S]*?<\/form>/gi) || [];
    const form = formId ? forms.find((f) => f.includes(`id="${formId}"`)) : forms[0];
    if (form) {
        part = form;
        const m = /\baction="([^"]*)"/.exec(form);
        if (m) action = htmlUnescape(m[1]);
    } else if (formId) {
        return null;
    }
    const fields = {};
    for (const tag of part.match(/<input\b[^>]*>/gi) || []) {
        const name = /\bname="([^"]*)"/.exec(tag);
        const value = /\bvalue="([^"]*)"/.exec(tag);
        if (name) fields[htmlUnescape(name[1])] = value ? htmlUnescape(value[1]) : '';
    }
    return { action, fields };
}

// The marker the pages below put on a device-flow or error page: {page, error, description}.
function pageMarker(html) {
    const m = /<main id="ut-page" data-page="([^"]*)" data-error="([^"]*)" data-description="([^"]*)"/.exec(html);
    return m ? { page: m[1], error: htmlUnescape(m[2]) || null, description: htmlUnescape(m[3]) || null } : null;
}

// A small page carrying a machine-readable marker (what the headless drivers look for).
function markedPage(ctx, page, { error = '', description = '', body = '' } = {}) {
    ctx.type = 'html';
    ctx.body = `<!DOCTYPE html><html><head><meta charset="utf-8"><title>${htmlEscape(page)}</title></head>`
        + `<body><main id="ut-page" data-page="${htmlEscape(page)}" data-error="${htmlEscape(error)}" `
        + `data-description="${htmlEscape(description)}">${body}</main></body></html>`;
}

// The names oidc-provider gives the device page's re-render errors, as short reasons.
const DEVICE_ERRORS = {
    NoCodeError: 'no_code', NotFoundError: 'not_found', ExpiredError: 'expired',
    AlreadyUsedError: 'already_used', AbortedError: 'aborted',
};

// Starts the provider; resolves a handle (see the return statement for every member).
// Options: certDir (server.pem, server.key, ca.pem), accessTtl (s, access tokens of the
// authorization-code, refresh and device grants), clientCredentialsTtl (s, default accessTtl),
// deviceCodeTtl (s, default 600), clientId, clientSecret, redirectUris (the first is
// srv.redirectUri), requirePkce (default false: PKCE S256 accepted, not required).
async function startOidcServer({ certDir, accessTtl = 5, clientId = 'ut-client',
    clientSecret = crypto.randomBytes(24).toString('base64url'), clientCredentialsTtl = accessTtl,
    deviceCodeTtl = 600, redirectUris = [REDIRECT_URI], requirePkce = false } = {}) {
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
            grant_types: ['authorization_code', 'refresh_token', DEVICE_CODE_GRANT, 'client_credentials'],
            response_types: ['code'],
            redirect_uris: redirectUris,
            id_token_signed_response_alg: 'ES256',
        }],
        jwks: { keys: [jwk] },
        cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
        scopes: ['openid', 'offline_access', ...API_SCOPES],
        clockTolerance: 0,
        rotateRefreshToken: true,
        findAccount: async (_ctx, sub) => ({ accountId: sub, claims: async () => ({ sub }) }),
        pkce: { required: () => requirePkce },
        // Error pages (a bad client_id or redirect_uri, which cannot be redirected) carry a marker.
        renderError: async (ctx, out) => {
            markedPage(ctx, 'error', { error: out.error, description: out.error_description || '' });
        },
        features: {
            devInteractions: { enabled: false },
            introspection: { enabled: true },
            revocation: { enabled: true },
            clientCredentials: { enabled: true },
            deviceFlow: {
                enabled: true,
                charset: 'base-20',
                mask: '****-****',
                // The /device pages, plain and marked for approveDevice(); `form` is the
                // provider's own form (hidden xsrf and user_code fields, confirm=yes).
                userCodeInputSource: async (ctx, form, _out, err) => {
                    markedPage(ctx, 'device-input', {
                        error: err ? DEVICE_ERRORS[err.name] || 'error' : '',
                        description: err ? err.message : '', body: form });
                },
                userCodeConfirmSource: async (ctx, form, client, _deviceInfo, userCode) => {
                    markedPage(ctx, 'device-confirm', {
                        body: `<p>${htmlEscape(client.clientId)}: <code>${htmlEscape(userCode)}</code></p>${form}` });
                },
                successSource: async (ctx) => { markedPage(ctx, 'device-success'); },
            },
        },
        ttl: {
            AccessToken: accessTtl,
            AuthorizationCode: 60,
            ClientCredentials: clientCredentialsTtl,
            DeviceCode: deviceCodeTtl,
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
        tokenRequests: 0,              // requests to /token... (also /token/revocation, /token/introspection)
        authorizationCodeGrants: 0,    // successful grant_type=authorization_code
        deviceCodeGrants: 0,           // successful grant_type=urn:ietf:params:oauth:grant-type:device_code
        clientCredentialsGrants: 0,    // successful grant_type=client_credentials
        refreshGrants: 0,              // successful grant_type=refresh_token (all grants)
        authorizations: 0,             // authorization responses with a code (redirects to the client)
        deviceAuthorizations: 0,       // successful device authorization requests
        deviceApprovals: 0,            // device codes a user approved at /device
    };
    provider.on('grant.success', (ctx) => {
        const type = ctx.oidc.params.grant_type;
        if (type === 'authorization_code') stats.authorizationCodeGrants += 1;
        else if (type === DEVICE_CODE_GRANT) stats.deviceCodeGrants += 1;
        else if (type === 'client_credentials') stats.clientCredentialsGrants += 1;
        if (type !== 'refresh_token') return;
        stats.refreshGrants += 1;
        const g = ctx.oidc.entities.Grant?.jti;
        stats.refreshesByGrant.set(g, (stats.refreshesByGrant.get(g) || 0) + 1);
    });
    provider.on('authorization.success', (_ctx, out) => {
        if (out) stats.authorizations += 1;
        else stats.deviceApprovals += 1;  // the device flow emits it without a response
    });
    provider.on('device_authorization.success', () => { stats.deviceAuthorizations += 1; });
    provider.on('grant.error', (ctx, err) => {
        stats.grantErrors.push({ grant_type: ctx.oidc?.params?.grant_type, error: err.error,
            description: err.error_description });
    });
    provider.on('grant.revoked', (_ctx, grantId) => stats.revokedGrants.push(grantId));
    provider.on('refresh_token.destroyed', () => { stats.destroyedRefreshTokens += 1; });
    provider.on('server_error', () => { stats.serverErrors += 1; });

    // What the headless drivers decided for an interaction they are about to open
    // (uid -> {account, consent}); without one, the login_hint (or 'alice') logs in and consents.
    const decisions = new Map();

    // The interaction endpoint: logs in (the session's account, the driver's account, or the
    // login_hint, or 'alice') and consents to every scope and claim asked for, or denies
    // (access_denied).
    async function interaction(req, res) {
        try {
            const details = await provider.interactionDetails(req, res);
            const decision = decisions.get(details.uid) || {};
            decisions.delete(details.uid);
            if (decision.consent === false) {
                await provider.interactionFinished(req, res,
                    { error: 'access_denied', error_description: 'the user denied the request' },
                    { mergeWithLastSubmission: false });
                return;
            }
            const accountId = details.session?.accountId || decision.account
                || details.params.login_hint || 'alice';
            const grant = details.grantId ? await provider.Grant.find(details.grantId)
                : new provider.Grant({ accountId, clientId: details.params.client_id });
            if (details.params.scope) grant.addOIDCScope(details.params.scope);
            const missing = details.prompt?.details || {};
            if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
            if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
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

    const discoveryRes = await http.request(`${issuer}/.well-known/openid-configuration`);
    if (discoveryRes.status !== 200) throw new Error(`discovery answered HTTP ${discoveryRes.status}`);
    const discovery = JSON.parse(discoveryRes.text);
    const endpoints = {
        authorization: discovery.authorization_endpoint,
        token: discovery.token_endpoint,
        device_authorization: discovery.device_authorization_endpoint,
        revocation: discovery.revocation_endpoint,
        introspection: discovery.introspection_endpoint,
        jwks: discovery.jwks_uri,
    };
    const verificationUri = `${issuer}/device`;

    // True when `url` is one of the client's redirect URIs (query ignored).
    function atRedirectUri(url) {
        const base = `${url.origin}${url.pathname}`;
        return redirectUris.some((u) => { const r = new URL(u); return `${r.origin}${r.pathname}` === base; });
    }

    // Follows redirects from response `r` (at `url`) with `browser` until a page that is not a
    // redirect, or the client's redirect URI; interactions on the way get `decision`.
    // Resolves {redirect: URL} or {page: {status, text}, url}.
    async function follow(browser, url, r, decision) {
        for (let hop = 0; hop < 20; hop += 1) {
            if (r.status < 300 || r.status >= 400 || !r.headers.location) return { page: r, url };
            const next = new URL(r.headers.location, url);
            if (atRedirectUri(next)) return { redirect: next };
            if (next.origin === issuer && next.pathname.startsWith('/interaction/')) {
                decisions.set(next.pathname.split('/')[2], decision);
            }
            url = next.href;
            r = await browser.get(url);
        }
        throw new Error('too many redirects');
    }

    // Drives the browser part of an authorization request headlessly: GETs `authUrl`, follows
    // redirects through the interaction (logs in as `account`, by default the request's
    // login_hint or else 'alice'; consents, or denies with consent=false), and
    // resolves what reached the client's redirect URI, without redeeming the code:
    // {code, state, iss, error, error_description, redirect} (absent parameters are null;
    // `redirect` is the full URL). response_mode=fragment and form_post answers are read too.
    // Rejects when the flow ends on a page instead (e.g. an unknown client or redirect_uri:
    // the error's .error / .error_description are the page's).
    async function authorize(authUrl, { account, consent = true } = {}) {
        const browser = makeBrowser(http);
        const first = await browser.get(authUrl);
        const end = await follow(browser, authUrl, first, { account, consent });
        let params;
        let redirect;
        if (end.redirect) {
            redirect = end.redirect.href;
            params = end.redirect.searchParams;
            if (!params.has('code') && !params.has('error') && end.redirect.hash) {
                params = new URLSearchParams(end.redirect.hash.slice(1));  // response_mode=fragment
            }
        } else {
            const form = end.page.status === 200 ? readForm(end.page.text) : null;
            if (form && form.action && atRedirectUri(new URL(form.action))) {
                redirect = form.action;
                params = new URLSearchParams(form.fields);
            } else {
                const marker = pageMarker(end.page.text);
                const err = new Error(`authorization flow stopped with HTTP ${end.page.status}`
                    + (marker?.error ? `: ${marker.error} (${marker.description})` : ''));
                err.status = end.page.status;
                err.error = marker?.error ?? null;
                err.error_description = marker?.description ?? null;
                throw err;
            }
        }
        const get = (n) => params.get(n);
        return { code: get('code'), state: get('state'), iss: get('iss'), error: get('error'),
            error_description: get('error_description'), redirect };
    }

    // Drives the device verification pages headlessly (RFC 8628 section 3.3): GET /device,
    // submit the user code, then confirm (or abort with approve=false), log in as `account`
    // and consent (or deny with consent=false). Resolves {approved: true} or {approved: false,
    // error: 'access_denied'} (also when approved but the device request had no declared
    // scope); a poll of the device code then gives tokens or access_denied. Rejects when the code is refused at /device (err.reason: 'not_found', 'expired',
    // 'already_used', 'no_code').
    async function approveDevice(userCode, { account = 'alice', approve = true, consent = true } = {}) {
        const browser = makeBrowser(http);
        const refused = (page) => {
            const m = pageMarker(page.text);
            const err = new Error(`device verification refused the code: ${m?.error || `HTTP ${page.status}`}`);
            err.reason = m?.error || null;
            return err;
        };
        let r = await browser.get(verificationUri);
        const input = readForm(r.text, 'op.deviceInputForm');
        if (r.status !== 200 || !input) throw refused(r);
        r = await browser.post(new URL(input.action, verificationUri).href,
            { ...input.fields, user_code: userCode });
        const confirmForm = pageMarker(r.text)?.page === 'device-confirm' ? readForm(r.text, 'op.deviceConfirmForm') : null;
        if (r.status !== 200 || !confirmForm) throw refused(r);
        const fields = { ...confirmForm.fields };
        if (!approve) {
            delete fields.confirm;
            fields.abort = 'yes';
        }
        const action = new URL(confirmForm.action, verificationUri).href;
        r = await browser.post(action, fields);
        const end = await follow(browser, action, r, { account, consent });
        const marker = end.page ? pageMarker(end.page.text) : null;
        if (marker?.page === 'device-success') return { approved: true };
        if (marker?.page === 'device-input' && marker.error === 'aborted') return { approved: false, error: 'access_denied' };
        if (end.page && marker?.page === 'device-input') throw refused(end.page);
        throw new Error(`device verification ended unexpectedly (HTTP ${end.page ? end.page.status : 'redirect'})`);
    }

    // Runs the authorization-code flow for `subject` (no browser): /auth -> interaction ->
    // resume -> redirect with code -> token endpoint. Resolves the token response + grantId.
    async function login(subject) {
        const q = new URLSearchParams({
            client_id: clientId, response_type: 'code', redirect_uri: redirectUris[0],
            scope: 'openid offline_access', prompt: 'consent', login_hint: subject,
            state: crypto.randomBytes(8).toString('hex'),
        });
        const res = await authorize(`${endpoints.authorization}?${q}`, { account: subject });
        if (res.error) throw new Error(`authorization error ${res.error}`);
        if (!res.code) throw new Error('authorization flow did not produce a code');
        const body = new URLSearchParams({ grant_type: 'authorization_code', code: res.code, redirect_uri: redirectUris[0] }).toString();
        const r = await http.request(endpoints.token, {
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
        tokenEndpoint: endpoints.token,
        // {authorization, token, device_authorization, revocation, introspection, jwks}, from discovery.
        endpoints,
        discovery,
        verificationUri,
        clientId,
        clientSecret,
        redirectUri: redirectUris[0],
        redirectUris: [...redirectUris],
        apiScopes: [...API_SCOPES],
        caPem: path.join(certDir, 'ca.pem'),
        provider,
        stats,
        login,
        authorize,
        approveDevice,
        // What the provider knows about an access token it issued (null if unknown),
        // ignoring expiry so the caller can compare `exp` itself.
        async accessTokenInfo(value) {
            const at = await provider.AccessToken.find(value, { ignoreExpiration: true });
            return at ? { grantId: at.grantId, exp: at.exp, accountId: at.accountId } : null;
        },
        // The same for a client-credentials access token: {clientId, scope, exp} or null.
        async clientCredentialsInfo(value) {
            const t = await provider.ClientCredentials.find(value, { ignoreExpiration: true });
            return t ? { clientId: t.clientId, scope: t.scope, exp: t.exp } : null;
        },
        async stop() {
            http.agent.destroy();
            const closed = new Promise((resolve) => server.close(() => resolve()));
            // The engine keeps refreshing over keep-alive connections, and one whose TLS
            // handshake ends after close() began was not there to be closed: close() would wait
            // for it forever. Every connection is closed until the server has none.
            server.closeAllConnections();
            const sweep = setInterval(() => server.closeAllConnections(), 100);
            await closed;
            clearInterval(sweep);
        },
    };
}

module.exports = { startOidcServer, REDIRECT_URI, API_SCOPES, DEVICE_CODE_GRANT };

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
