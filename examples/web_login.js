'use strict';
// A web application that signs users in with the authorization code flow + PKCE, letting
// upstream_token do the whole exchange with the provider (docs/logins.md).
//
//   GET /login     new session cookie, begin_login, 302 to the provider
//   GET /callback  complete_login, then checks that the login belongs to this browser's session
//   GET /me        get_upstream_token; shows the access token's length, never the token
//   GET /logout    revoke_upstream_token, cookie cleared
//
// Environment: PG* (connection; the role needs upstream_token_client), APP_PROVIDER (provider
// name), APP_PORT (default 3000), APP_HOST (default 127.0.0.1), APP_REDIRECT_URI (default
// http://APP_HOST:APP_PORT/callback, must be registered at the provider), APP_SCOPE (default: the
// provider's scope), APP_EXTRA_PARAMS (JSON object of extra authorization parameters, e.g.
// {"prompt":"consent"}).
//
//   NODE_PATH=test/node_modules APP_PROVIDER=demo node examples/web_login.js

const http = require('node:http');
const crypto = require('node:crypto');
const { Pool } = require('pg');

const provider = process.env.APP_PROVIDER;
if (!provider) {
    console.error('set APP_PROVIDER to the name of a registered provider');
    process.exit(2);
}
const host = process.env.APP_HOST || '127.0.0.1';
const port = Number(process.env.APP_PORT || 3000);
const redirectUri = process.env.APP_REDIRECT_URI || `http://${host}:${port}/callback`;
const scope = process.env.APP_SCOPE || null;
const extraParams = process.env.APP_EXTRA_PARAMS || null;
const secureCookie = redirectUri.startsWith('https:');

const pool = new Pool();  // PGHOST, PGPORT, PGUSER, PGDATABASE, PGPASSWORD...

function cookieOf(req, name) {
    for (const part of (req.headers.cookie || '').split(';')) {
        const i = part.indexOf('=');
        if (i > 0 && part.slice(0, i).trim() === name) return part.slice(i + 1).trim();
    }
    return null;
}

// The session key upstream_token stores tokens under: a digest of the cookie, not the cookie
// (session keys show in token_status, login_status and event payloads; docs/security.md).
function sessionKey(req) {
    const sid = cookieOf(req, 'sid');
    return sid ? crypto.createHash('sha256').update(sid).digest('base64url') : null;
}

function sessionCookie(value, maxAge) {
    // SameSite=Lax: the cookie comes back on the provider's top-level redirect to /callback.
    return `sid=${value}; Path=/; HttpOnly; SameSite=Lax; Max-Age=${maxAge}${secureCookie ? '; Secure' : ''}`;
}

function escapeHtml(s) {
    return String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function page(res, status, text, headers = {}) {
    res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store', ...headers });
    res.end(`<!DOCTYPE html><meta charset="utf-8"><title>upstream_token example</title><p>${escapeHtml(text)}</p>`
        + '<p><a href="/login">sign in</a> · <a href="/me">me</a> · <a href="/logout">sign out</a></p>\n');
}

async function login(req, res) {
    // A fresh session id for every login: a session id planted in the browser before the login
    // (session fixation) never ends up holding the user's tokens.
    const sid = crypto.randomBytes(32).toString('base64url');
    const session = crypto.createHash('sha256').update(sid).digest('base64url');
    // An autocommit statement: the login row is committed before the browser reaches the
    // provider, so the engine finds it when the browser comes back.
    const r = await pool.query('SELECT upstream_token.begin_login($1, $2, $3, $4, $5::jsonb) AS url',
        [session, provider, redirectUri, scope, extraParams]);
    res.writeHead(302, { location: r.rows[0].url, 'set-cookie': sessionCookie(sid, 86400),
        'cache-control': 'no-store' });
    res.end();
}

async function callback(req, res, url) {
    const q = url.searchParams;
    if (q.get('error')) {
        // The user declined, or the provider refused the request: nothing to redeem.
        return page(res, 400, `the provider answered ${q.get('error')}: ${q.get('error_description') || ''}`);
    }
    if (!q.get('state') || !q.get('code')) return page(res, 400, 'state or code missing');
    const session = sessionKey(req);
    let row;
    try {
        const r = await pool.query('SELECT * FROM upstream_token.complete_login($1, $2, $3)',
            [q.get('state'), q.get('code'), q.get('iss')]);
        row = r.rows[0];
    } catch (e) {
        if (e.code === 'UT013') {
            // Also what a double-submitted callback gets: if this browser's session is signed
            // in already, carry on.
            const done = session && (await pool.query(
                'SELECT 1 FROM upstream_token.token_status WHERE session = $1 AND provider = $2',
                [session, provider])).rows.length > 0;
            if (done) return page(res, 200, 'already signed in');
            return page(res, 400, 'this sign-in link expired or was already used: sign in again');
        }
        if (e.code === 'UT014') return page(res, 400, `the sign-in failed: ${e.message}`);
        throw e;
    }
    // The tokens are stored for the session that began the login. Someone else's login
    // (login CSRF: an attacker's state and code sent to this browser) ends here.
    if (!session || row.session !== session) {
        return page(res, 403, 'this sign-in was not started by this browser');
    }
    return page(res, 200, `signed in as ${row.subject ?? '(no subject)'} with ${row.provider}`);
}

async function me(req, res) {
    const session = sessionKey(req);
    if (!session) return page(res, 401, 'not signed in');
    try {
        const r = await pool.query('SELECT upstream_token.get_upstream_token($1, $2) AS t', [session, provider]);
        // A real application would call the provider's API with it here.
        return page(res, 200, `access token: ${r.rows[0].t.length} characters`);
    } catch (e) {
        switch (e.code) {
            case 'UT001': return page(res, 401, 'not signed in');
            // A login was begun for this session and neither completed nor expired yet (also
            // after the user declined at the provider: the login stays pending until
            // upstream_token.login_timeout).
            case 'UT015': return page(res, 409, 'sign-in not completed');
            case 'UT002': case 'UT004': case 'UT005': return page(res, 401, 'please sign in again');
            case 'UT003': case 'UT007': return page(res, 503, 'the provider is unavailable, try again shortly');
            default: throw e;
        }
    }
}

async function logout(req, res) {
    const session = sessionKey(req);
    // Deletes the tokens now; the engine revokes them at the provider after the commit.
    if (session) await pool.query('SELECT upstream_token.revoke_upstream_token($1)', [session]);
    return page(res, 200, 'signed out', { 'set-cookie': sessionCookie('', 0) });
}

const routes = { '/login': login, '/callback': callback, '/me': me, '/logout': logout };

const server = http.createServer((req, res) => {
    const url = new URL(req.url, `http://${req.headers.host || 'localhost'}`);
    const route = req.method === 'GET' ? routes[url.pathname] : null;
    if (!route) return page(res, 404, 'GET /login, /callback, /me or /logout');
    route(req, res, url).catch((e) => {
        // Messages of the extension never contain a secret; log the SQLSTATE and the message.
        console.error(`${url.pathname}: ${e.code || ''} ${e.message}`);
        if (!res.headersSent) page(res, 500, 'internal error');
    });
});

server.listen(port, host, () => console.log(`listening http://${host}:${port}  (redirect URI ${redirectUri})`));
for (const sig of ['SIGINT', 'SIGTERM']) {
    process.on(sig, () => {
        server.close(() => pool.end().then(() => process.exit(0)));
        server.closeAllConnections();
    });
}
