'use strict';
// Shared set-up for the integration tests: the throwaway cluster started by scripts/test.sh
// (connection from PG* environment variables), the test identity provider over HTTPS, and
// helpers to register providers, mint logins and wait on conditions with a deadline.

const fs = require('node:fs');
const path = require('node:path');
const { execFileSync } = require('node:child_process');
const { Pool, Client } = require('pg');
const { startIdp } = require('../idp/client.js');

const REPO = path.resolve(__dirname, '..', '..');
const CERT_DIR = path.join(REPO, '.tmp', 'certs');

// Connection settings of the test cluster (scripts/cluster.sh env exports them).
function pgConfig(extra = {}) {
    for (const v of ['PGHOST', 'PGPORT', 'PGDATABASE']) {
        if (!process.env[v]) throw new Error(`${v} is not set: run through scripts/test.sh`);
    }
    return {
        host: process.env.PGHOST,
        port: Number(process.env.PGPORT),
        user: process.env.PGUSER || 'postgres',
        database: process.env.PGDATABASE,
        ...extra,
    };
}

// Deadlines stretch by UT_TIME_SCALE (default 1): scripts/memcheck.sh runs the server under
// AddressSanitizer, two to three times slower.
const TIME_SCALE = Math.max(1, Number(process.env.UT_TIME_SCALE) || 1);

// Polls `check` until it returns a truthy value or the deadline passes (then throws).
async function waitFor(check, { timeoutMs: baseMs = 15000, intervalMs = 50, what = 'condition' } = {}) {
    const timeoutMs = baseMs * TIME_SCALE;
    const deadline = Date.now() + timeoutMs;
    let last;
    for (;;) {
        try {
            last = await check();
            if (last) return last;
        } catch (e) {
            last = e;
        }
        if (Date.now() > deadline) {
            throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}` +
                (last instanceof Error ? `: ${last.message}` : ''));
        }
        await new Promise((r) => setTimeout(r, intervalMs));
    }
}

// Creates the extension if needed and waits until the engine takes requests.
async function ensureEngine(pool) {
    await pool.query('CREATE EXTENSION IF NOT EXISTS upstream_token');
    await waitFor(async () => {
        const r = await pool.query('SELECT ready FROM upstream_token.engine_status');
        return r.rows.length === 1 && r.rows[0].ready;
    }, { timeoutMs: 30000, what: 'the refresh engine to be ready' });
}

// Points the server at the test CA (idempotent; reloads the configuration).
async function trustTestCa(pool) {
    const ca = path.join(CERT_DIR, 'ca.pem');
    const cur = await pool.query("SELECT current_setting('upstream_token.ca_file') AS v");
    if (cur.rows[0].v === ca) return;
    await pool.query(`ALTER SYSTEM SET upstream_token.ca_file = '${ca}'`);
    await pool.query('SELECT pg_reload_conf()');
    await waitFor(async () => {
        const r = await pool.query("SELECT current_setting('upstream_token.ca_file') AS v");
        return r.rows[0].v === ca;
    }, { what: 'ca_file to be reloaded' });
}

let counter = 0;
// A name unique within this test process (providers, sessions, clients).
function unique(prefix) {
    counter += 1;
    return `${prefix}-${process.pid}-${Date.now().toString(36)}-${counter}`;
}

// Starts the IdP and a pool; returns helpers bound to them. Call ctx.close() at the end.
async function setup({ poolSize = 60 } = {}) {
    serverDir(CERT_DIR);  // the server reads ca.pem from it
    fs.chmodSync(path.dirname(CERT_DIR), 0o755);
    execFileSync('bash', [path.join(REPO, 'test', 'idp', 'make-certs.sh'), CERT_DIR]);
    fs.chmodSync(CERT_DIR, 0o755);
    const idp = await startIdp({ certDir: CERT_DIR });
    const pool = new Pool(pgConfig({ max: poolSize }));
    pool.on('error', () => {});  // a backend killed by a test must not crash the runner
    await trustTestCa(pool);
    await ensureEngine(pool);

    const created = [];  // providers this context registered, dropped again by close()
    const ctx = {
        idp,
        pool,
        // Registers an IdP client and a matching provider; returns {provider, clientId, secret}.
        async provider(opts = {}) {
            const clientId = opts.clientId || unique('client');
            const provider = opts.provider || unique('p').replace(/[^A-Za-z0-9_.:-]/g, '_').slice(0, 60);
            const authMethod = opts.authMethod || 'client_secret_basic';
            const secret = authMethod === 'none' ? null : (opts.secret || `secret ${unique('s')} :+%`);
            await idp.client.admin('POST', '/admin/clients', {
                client_id: clientId, client_secret: secret || undefined, auth_method: authMethod,
                access_ttl: opts.accessTtl ?? 3600, id_token: opts.idToken ?? true,
                ...(opts.quirks || {}),
            });
            await pool.query(
                `SELECT upstream_token.register_provider(name => $1, token_endpoint => $2,
                        client_id => $3, client_secret => $4, auth_method => $5,
                        refresh_threshold => $6::interval, request_timeout => $7::interval)`,
                [provider, `${idp.url}/token`, clientId, secret, authMethod,
                 opts.threshold || null, opts.requestTimeout || null]);
            created.push(provider);
            return { provider, clientId, secret };
        },
        // Mints `count` logins at the IdP and stores them; expiresIn 0 makes them due now.
        async logins(p, { count = 1, expiresIn = 0, subject = unique('user') } = {}) {
            const res = await idp.client.admin('POST', '/admin/grants', { client_id: p.clientId, subject, count });
            const out = [];
            for (const g of res.grants) {
                const session = unique('sess');
                await pool.query(
                    'SELECT upstream_token.store_upstream_token($1, $2, $3, $4, $5, $6)',
                    [session, p.provider, g.access_token, g.refresh_token, expiresIn, g.id_token || null]);
                out.push({ session, grant: g });
            }
            return out;
        },
        grant(id) { return idp.client.admin('GET', `/admin/grants/${id}`); },
        stats() { return idp.client.admin('GET', '/admin/stats'); },
        fault(body) { return idp.client.admin('POST', '/admin/faults', body); },
        clearFaults() { return idp.client.admin('DELETE', '/admin/faults'); },
        async engine() { return (await pool.query('SELECT * FROM upstream_token.engine_status')).rows[0]; },
        // Drops what this context registered (so the engine stops refreshing it for later
        // tests), then stops the pool and the IdP.
        async close() {
            for (const name of created) {
                await pool.query('SELECT upstream_token.drop_provider($1, cascade => true)', [name])
                    .catch(() => {});
            }
            await pool.end().catch(() => {});
            idp.client.close?.();
            await idp.stop();
        },
    };
    return ctx;
}

// A single connection (for tests that need session state: SET, transactions, cancel).
async function connect(extra = {}) {
    const c = new Client(pgConfig(extra));
    c.on('error', () => {});
    await c.connect();
    return c;
}

// The server log of the test cluster (for tests that check what reaches it).
function serverLog() {
    const file = process.env.UT_SERVER_LOG;
    if (!file) throw new Error('UT_SERVER_LOG is not set: run through scripts/test.sh');
    return fs.readFileSync(file, 'utf8');
}

// Runs scripts/cluster.sh with the test cluster's settings (restart, stop, ...).
function cluster(...args) {
    execFileSync('bash', [path.join(REPO, 'scripts', 'cluster.sh'), ...args], { stdio: 'inherit' });
}

// Runs a program of the test cluster's server (pg_ctl, pg_basebackup, ...) as the postgres
// user, where the server runs (with another major, chrooted into its Debian root); returns
// its standard output.
function asPostgres(program, args) {
    return execFileSync('bash', [path.join(REPO, 'scripts', 'cluster.sh'), 'pg', program, ...args],
        { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
}

// Creates a directory the server sees at the same path as the tests (with another major it
// lives inside the server's Debian root and `dir` links to it); removeServerDir undoes it.
function serverDir(dir) {
    execFileSync('bash', [path.join(REPO, 'scripts', 'cluster.sh'), 'serverdir', dir]);
}
function removeServerDir(dir) {
    execFileSync('bash', [path.join(REPO, 'scripts', 'cluster.sh'), 'rmserverdir', dir]);
}

module.exports = { setup, connect, waitFor, unique, pgConfig, serverLog, cluster, ensureEngine, REPO, CERT_DIR,
    asPostgres, serverDir, removeServerDir, TIME_SCALE };

// ---- Helpers added for the lifecycle tests (proactive refresh, limits, standby, events). ----

// Sets (value) or resets (null) server GUCs with ALTER SYSTEM, reloads, and waits until a new
// session sees the values: tests that change SIGHUP settings need them live, then restored.
async function setSystemGucs(pool, settings) {
    for (const [name, value] of Object.entries(settings)) {
        if (!/^[a-z_.]+$/.test(name)) throw new Error(`bad GUC name ${name}`);
        if (value === null) {
            await pool.query(`ALTER SYSTEM RESET ${name}`);
        } else {
            await pool.query(`ALTER SYSTEM SET ${name} = '${String(value).replace(/'/g, "''")}'`);
        }
    }
    await pool.query('SELECT pg_reload_conf()');
    await waitFor(async () => {
        const c = await connect();
        try {
            for (const [name, value] of Object.entries(settings)) {
                const r = (await c.query(
                    'SELECT setting, sourcefile FROM pg_settings WHERE name = $1', [name])).rows[0];
                if (value === null) {
                    if ((r.sourcefile || '').endsWith('postgresql.auto.conf')) return false;
                } else if (r.setting !== String(value)) {
                    return false;
                }
            }
            return true;
        } finally { await c.end(); }
    }, { what: `settings ${Object.keys(settings).join(', ')} to be reloaded` });
}

// Stores many logins in one statement (one transaction, one now()): tests that need tokens
// "issued at the same instant" or a thousand of them quickly. rows: [{session, access,
// refresh, expiresIn, idToken?, refreshExpiresIn?}].
async function storeMany(pool, provider, rows) {
    await pool.query(
        `SELECT upstream_token.store_upstream_token(x.s, $1, x.a, x.r, x.e, x.i, NULL, NULL, x.re)
           FROM unnest($2::text[], $3::text[], $4::text[], $5::int[], $6::text[], $7::int[])
                AS x(s, a, r, e, i, re)`,
        [provider, rows.map((r) => r.session), rows.map((r) => r.access), rows.map((r) => r.refresh),
         rows.map((r) => r.expiresIn), rows.map((r) => r.idToken ?? null),
         rows.map((r) => r.refreshExpiresIn ?? null)]);
}

// The IdP's /token call log for one client since an instant (epoch ms): what the provider saw.
async function callLog(idp, clientId, sinceMs = 0) {
    const q = `since_ms=${sinceMs}&client_id=${encodeURIComponent(clientId)}`;
    return (await idp.client.admin('GET', `/admin/calls?${q}`)).calls;
}

// Whether the IdP considers an access token active (RFC 7662), asked as the given client.
async function introspectActive(idp, token, clientId, secret) {
    const r = await idp.client.request('POST', '/introspect', { form: { token }, basic: [clientId, secret] });
    return JSON.parse(r.text).active === true;
}

// Pauses a test on purpose (pacing a scenario, never to wait for a condition: use waitFor).
function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }

Object.assign(module.exports, { setSystemGucs, storeMany, callLog, introspectActive, sleep });

// ---- Helpers added for the refresh-engine tests (singleflight, rollback_cancel, binding, backoff, failures, force_refresh). ----

// Awaits a query that must fail and returns its error: tests branch on the SQLSTATE, and a
// success must not print the token it returned.
async function sqlError(promise, what = 'the query') {
    try {
        await promise;
    } catch (e) {
        return e;
    }
    throw new Error(`${what} succeeded but was expected to fail`);
}

// Checks that no token a test handled reaches the server log (I5); names only how many leaked.
function assertNoSecretsInLog(secrets) {
    const log = serverLog();
    const leaked = [...new Set(secrets)].filter((s) => typeof s === 'string' && s.length >= 16 && log.includes(s));
    if (leaked.length > 0) throw new Error(`${leaked.length} token value(s) appear in the server log`);
}

// Mints one login at the IdP and stores it under a session the caller may choose (the same
// session for two providers); returns {session, grant}.
async function storeLogin(ctx, p, { session = unique('sess'), expiresIn = 0, subject = unique('user') } = {}) {
    const res = await ctx.idp.client.admin('POST', '/admin/grants', { client_id: p.clientId, subject });
    const g = res.grants[0];
    await ctx.pool.query('SELECT upstream_token.store_upstream_token($1, $2, $3, $4, $5, $6)',
        [session, p.provider, g.access_token, g.refresh_token, expiresIn, g.id_token || null]);
    return { session, grant: g };
}

// Holds the engine's token lock for (provider, session) in an open transaction on a connection
// of its own (upstream_token.lock_token), so no refresh of that token (proactive or asked for)
// can start until release() commits it.
async function holdRefreshLock(provider, session) {
    const c = await connect();
    await c.query('BEGIN');
    await c.query('SELECT upstream_token.lock_token($1, $2)', [provider, session]);
    return {
        client: c,
        async release() {
            await c.query('COMMIT');
            await c.end();
        },
    };
}

// The token_status row of one token (no secrets), or undefined.
async function tokenStatus(pool, session, provider) {
    const r = await pool.query(
        'SELECT * FROM upstream_token.token_status WHERE session = $1 AND provider = $2', [session, provider]);
    return r.rows[0];
}

// The IdP's /token call log for one grant since an instant (epoch ms).
async function grantCalls(idp, grantId, sinceMs = 0) {
    const q = `since_ms=${sinceMs}&grant_id=${encodeURIComponent(grantId)}`;
    return (await idp.client.admin('GET', `/admin/calls?${q}`)).calls;
}

Object.assign(module.exports, { sqlError, assertNoSecretsInLog, storeLogin, holdRefreshLock, tokenStatus, grantCalls });

// Stores a login and reads its token_status row before any refresh can touch it (the refresh
// lock is held meanwhile): the "before" state a test compares with; returns {session, grant, before}.
async function storeLoginWithStatus(ctx, p, opts = {}) {
    const session = opts.session || unique('sess');
    const lock = await holdRefreshLock(p.provider, session);
    try {
        const login = await storeLogin(ctx, p, { ...opts, session });
        return { ...login, before: await tokenStatus(ctx.pool, session, p.provider) };
    } finally {
        await lock.release();
    }
}

Object.assign(module.exports, { storeLoginWithStatus });

// ---- Helpers added for the protocol tests (client authentication, revocation, quirks, binding, key rotation). ----

const INTERVAL_ARGS = new Set(['refresh_threshold', 'refresh_token_ttl', 'default_lifetime', 'request_timeout']);

// Registers an IdP client (any auth method, key or quirk: `client` is the /admin/clients body)
// and a provider with any register_provider named arguments (`args`), for what ctx.provider()
// cannot express; the provider is dropped by ctx.close() like ctx.provider()'s. Returns
// {provider, clientId, secret, authMethod}.
async function providerWith(ctx, { client = {}, args = {} } = {}) {
    const clientId = client.client_id || unique('client');
    const authMethod = client.auth_method || 'client_secret_basic';
    const secret = authMethod === 'none' || authMethod === 'private_key_jwt'
        ? null : (client.client_secret || `secret ${unique('s')} :+%`);
    await ctx.idp.client.admin('POST', '/admin/clients', {
        id_token: true, ...client, client_id: clientId, auth_method: authMethod,
        ...(secret ? { client_secret: secret } : {}),
    });
    const provider = args.name || unique('p').replace(/[^A-Za-z0-9_.:-]/g, '_').slice(0, 60);
    const named = {
        token_endpoint: `${ctx.idp.url}/token`, client_id: clientId, client_secret: secret,
        auth_method: authMethod, ...args, name: provider,
    };
    const keys = Object.keys(named);
    for (const k of keys) if (!/^[a-z_]+$/.test(k)) throw new Error(`bad argument name ${k}`);
    const list = keys.map((k, i) => `${k} => $${i + 1}::${INTERVAL_ARGS.has(k) ? 'interval' : k === 'max_concurrent' ? 'integer' : 'text'}`);
    if (!ctx.protocolProviders) {
        ctx.protocolProviders = [];
        const close = ctx.close;
        ctx.close = async () => {
            for (const name of ctx.protocolProviders) {
                await ctx.pool.query('SELECT upstream_token.drop_provider($1, cascade => true)', [name]).catch(() => {});
            }
            return close.call(ctx);
        };
    }
    await ctx.pool.query(`SELECT upstream_token.register_provider(${list.join(', ')})`, keys.map((k) => named[k]));
    ctx.protocolProviders.push(provider);
    return { provider, clientId, secret, authMethod };
}

// A basic-auth client of the test IdP that only introspects: any client may introspect any
// token, so tests of public or private_key_jwt clients can still ask "is this token active?".
async function introspector(ctx) {
    const id = unique('introspector');
    const secret = `s-${unique('i')}`;
    await ctx.idp.client.admin('POST', '/admin/clients', { client_id: id, client_secret: secret });
    return async (token) => {
        const r = await ctx.idp.client.request('POST', '/introspect', { form: { token }, basic: [id, secret] });
        if (r.status !== 200) throw new Error(`introspection answered HTTP ${r.status}`);
        return r.json;
    };
}

// LISTENs on upstream_token_events on a connection of its own and collects the parsed
// payloads, so tests can wait for an event (or check one never came) without polling tables.
async function listenEvents() {
    const c = await connect();
    const events = [];
    c.on('notification', (n) => {
        if (n.channel !== 'upstream_token_events') return;
        try {
            events.push(JSON.parse(n.payload));
        } catch {
            events.push({ unparsed: n.payload });
        }
    });
    await c.query('LISTEN upstream_token_events');
    return { events, close: () => c.end().catch(() => {}) };
}

// The revocation queue rows of one provider (no token column): what is still to be delivered.
async function revocationQueue(pool, provider) {
    const r = await pool.query(
        `SELECT id, session, token_column, attempts, next_attempt_at, last_error
           FROM upstream_token.revocation WHERE provider = $1 ORDER BY id`, [provider]);
    return r.rows;
}

// The IdP's /revoke call log for one client since an instant (epoch ms).
async function revokeCalls(idp, clientId, sinceMs = 0) {
    const q = `since_ms=${sinceMs}&client_id=${encodeURIComponent(clientId)}&endpoint=revoke`;
    return (await idp.client.admin('GET', `/admin/calls?${q}`)).calls;
}

Object.assign(module.exports, { providerWith, introspector, listenEvents, revocationQueue, revokeCalls });

// Whether a process has exited (gone, or a zombie the postmaster has not reaped yet).
function processGone(pid) {
    try {
        const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
        return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
    } catch {
        return true;
    }
}

Object.assign(module.exports, { processGone });
