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

// Polls `check` until it returns a truthy value or the deadline passes (then throws).
async function waitFor(check, { timeoutMs = 15000, intervalMs = 50, what = 'condition' } = {}) {
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
    fs.mkdirSync(CERT_DIR, { recursive: true });
    fs.chmodSync(path.dirname(CERT_DIR), 0o755);
    execFileSync('bash', [path.join(REPO, 'test', 'idp', 'make-certs.sh'), CERT_DIR]);
    fs.chmodSync(CERT_DIR, 0o755);
    const idp = await startIdp({ certDir: CERT_DIR });
    const pool = new Pool(pgConfig({ max: poolSize }));
    pool.on('error', () => {});  // a backend killed by a test must not crash the runner
    await trustTestCa(pool);
    await ensureEngine(pool);

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
        async close() {
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

module.exports = { setup, connect, waitFor, unique, pgConfig, serverLog, cluster, ensureEngine, REPO, CERT_DIR };
