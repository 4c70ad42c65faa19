'use strict';
// Helpers for tests that use the test IdP (server.js): start it as a child process and talk to
// its admin API and OAuth endpoints over a keep-alive connection that trusts the test CA.

const http = require('node:http');
const https = require('node:https');
const fs = require('node:fs');
const path = require('node:path');
const { spawn, execFileSync } = require('node:child_process');

const SERVER = path.join(__dirname, 'server.js');
const TOKEN_EXCHANGE_GRANT = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
const MAKE_CERTS = path.join(__dirname, 'make-certs.sh');

// application/x-www-form-urlencoded encoding of one value (what RFC 6749 2.3.1 asks for).
function formEncode(value) {
    return new URLSearchParams({ v: value }).toString().slice(2);
}

// The Authorization header value for client_secret_basic.
function basicAuth(id, secret) {
    return 'Basic ' + Buffer.from(`${formEncode(id)}:${formEncode(secret)}`).toString('base64');
}

class IdpClient {
    // One keep-alive agent per server; for https it trusts only the given CA file.
    constructor(baseUrl, caPemPath) {
        this.baseUrl = baseUrl.replace(/\/+$/, '');
        const secure = this.baseUrl.startsWith('https:');
        this.transport = secure ? https : http;
        this.agent = secure
            ? new https.Agent({ keepAlive: true, ca: fs.readFileSync(caPemPath) })
            : new http.Agent({ keepAlive: true });
    }

    // One HTTP exchange; resolves {status, headers, text, json} (json undefined when not JSON).
    // opts: {json, form (object or string), headers, basic: [id, secret]}. Rejects on socket errors.
    request(method, urlPath, opts = {}) {
        const headers = { ...(opts.headers || {}) };
        let body = null;
        if (opts.json !== undefined) {
            body = JSON.stringify(opts.json);
            headers['Content-Type'] = 'application/json';
        } else if (opts.form !== undefined) {
            body = typeof opts.form === 'string' ? opts.form : new URLSearchParams(opts.form).toString();
            headers['Content-Type'] = headers['Content-Type'] || 'application/x-www-form-urlencoded';
        }
        if (opts.basic) headers.Authorization = basicAuth(opts.basic[0], opts.basic[1]);
        if (body !== null) headers['Content-Length'] = Buffer.byteLength(body);
        return new Promise((resolve, reject) => {
            const req = this.transport.request(this.baseUrl + urlPath, { method, headers, agent: this.agent }, (res) => {
                const chunks = [];
                res.on('data', (c) => chunks.push(c));
                res.on('error', reject);
                res.on('end', () => resolve(parseResponse(res, Buffer.concat(chunks).toString('utf8'))));
            });
            req.on('error', reject);
            req.end(body === null ? undefined : body);
        });
    }

    // POST a form to /token (shorthand used by most tests).
    token(form, opts = {}) {
        return this.request('POST', '/token', { ...opts, form });
    }

    // grant_type=client_credentials at /token; `form` adds scope, audience, ... (and client_id /
    // client_secret for client_secret_post); opts as for request() (basic: [id, secret]).
    clientCredentials(form = {}, opts = {}) {
        return this.token({ grant_type: 'client_credentials', ...form }, opts);
    }

    // RFC 8693 token exchange at /token: `form` is {subject_token, audience?, scope?, ...};
    // grant_type and subject_token_type (access token) are filled in unless given.
    exchangeToken(form, opts = {}) {
        return this.token({ grant_type: TOKEN_EXCHANGE_GRANT, subject_token_type: ACCESS_TOKEN_TYPE, ...form }, opts);
    }

    // What the IdP knows of access tokens (POST /admin/lookup): one view or null per token, in order.
    async lookupAccessTokens(tokens) {
        return (await this.admin('POST', '/admin/lookup', { access_tokens: tokens })).access_tokens;
    }

    // Admin API call; resolves the parsed JSON, rejects with err.status / err.body on non-2xx.
    // `urlPath` may be given with or without the leading "/admin".
    async admin(method, urlPath, jsonBody) {
        const full = urlPath.startsWith('/admin/') ? urlPath : `/admin${urlPath.startsWith('/') ? '' : '/'}${urlPath}`;
        const res = await this.request(method, full, jsonBody === undefined ? {} : { json: jsonBody });
        if (res.status < 200 || res.status > 299) {
            const err = new Error(`idp admin ${method} ${full}: HTTP ${res.status} ${res.text.slice(0, 300)}`);
            err.status = res.status;
            err.body = res.json;
            throw err;
        }
        return res.json;
    }

    // Closes idle keep-alive sockets so the process can exit.
    close() {
        this.agent.destroy();
    }
}

// Builds the result object of IdpClient.request.
function parseResponse(res, text) {
    let json;
    try {
        json = JSON.parse(text);
    } catch {
        json = undefined;
    }
    return { status: res.statusCode, headers: res.headers, text, json };
}

// Starts server.js on 127.0.0.1 and resolves once it prints "listening <port>".
// Options: certDir (created with make-certs.sh when needed; not used with http), http (plain
// HTTP), issuer, port (default 0 = any free port), timeoutMs (default 10000).
// Resolves {url, port, caPem, client, child, stop()}; stop() resolves the exit code.
async function startIdp({ certDir, http: plain = false, issuer, port = 0, timeoutMs = 10000 } = {}) {
    const args = [SERVER, '--port', String(port)];
    let caPem = null;
    if (plain) {
        args.push('--http');
    } else {
        if (!certDir) throw new Error('startIdp: certDir is required for https');
        execFileSync('bash', [MAKE_CERTS, certDir], { stdio: ['ignore', 'ignore', 'inherit'] });
        caPem = path.join(certDir, 'ca.pem');
        args.push('--cert', path.join(certDir, 'server.pem'), '--key', path.join(certDir, 'server.key'));
    }
    if (issuer) args.push('--issuer', issuer);
    const env = { ...process.env };
    delete env.NODE_TEST_CONTEXT; // the server is not a test file
    const child = spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    const actualPort = await waitForListening(child, timeoutMs);
    const url = `${plain ? 'http' : 'https'}://127.0.0.1:${actualPort}`;
    const client = new IdpClient(url, caPem);
    return { url, port: actualPort, caPem, client, child, stop: () => stopChild(child, client) };
}

// Waits for the "listening <port>" line; rejects on timeout or early exit (with the stderr tail).
function waitForListening(child, timeoutMs) {
    return new Promise((resolve, reject) => {
        let out = '';
        let err = '';
        const killOnExit = () => child.kill('SIGKILL');
        process.once('exit', killOnExit);
        child.once('exit', () => process.removeListener('exit', killOnExit));
        const timer = setTimeout(() => {
            child.kill('SIGKILL');
            reject(new Error(`idp did not start within ${timeoutMs} ms; stderr: ${err.slice(-2000)}`));
        }, timeoutMs);
        child.stderr.on('data', (d) => {
            err = (err + d).slice(-4000);
        });
        child.stdout.on('data', (d) => {
            out += d;
            const m = /^listening (\d+)\n/.exec(out);
            if (m) {
                clearTimeout(timer);
                resolve(Number(m[1]));
            }
        });
        child.once('exit', (code, signal) => {
            clearTimeout(timer);
            reject(new Error(`idp exited early (code ${code}, signal ${signal}); stderr: ${err.slice(-2000)}`));
        });
    });
}

// SIGTERM, then SIGKILL after 5 s; resolves the exit code (null when killed by a signal).
function stopChild(child, client) {
    client.close();
    if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode);
    return new Promise((resolve) => {
        const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
        child.once('exit', (code) => {
            clearTimeout(timer);
            resolve(code);
        });
        child.kill('SIGTERM');
    });
}

module.exports = { IdpClient, startIdp, basicAuth, formEncode, TOKEN_EXCHANGE_GRANT, ACCESS_TOKEN_TYPE };
