'use strict';
// No secret reaches the server log from any error of any function that takes one, under
// default logging settings. Applications often call these functions with the secrets written
// into the SQL text (psql scripts, simple-protocol drivers, format()): an ERROR then logs a
// STATEMENT line with the whole text under the default log_min_error_statement = error. Each
// function that takes a secret (store_upstream_token: access, refresh and ID tokens;
// register_provider and register_provider_from_issuer: client secrets and private keys) is
// called with every class of error: raised in its body (bad argument, unknown provider, no
// key), raised by PostgreSQL inside it (a lock timeout rethrown through the guard), raised
// before its body runs (an argument that fails its cast, a value in the wrong position, a
// wrong signature, a missing privilege, a syntax error), and through a wrapper function. The
// server log written meanwhile must contain none of the secrets, while it does show the
// errors.
const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const crypto = require('node:crypto');
const { setup, connect, unique, sqlError } = require('./harness.js');

// A secret of its own for each use, recognisable in the log.
function secret(label) {
    return `${label}-${crypto.randomBytes(12).toString('hex')}`;
}

// A SQL string literal.
function lit(s) {
    return `'${String(s).replace(/'/g, "''")}'`;
}

test('errors of functions taking secrets log no secret under default settings', async (t) => {
    const ctx = await setup({ poolSize: 4 });
    const c = await connect();          // simple protocol: the literals are in the statement text
    const holder = await connect();     // holds a row lock
    const outsider = await connect();
    t.after(async () => {
        await holder.end();
        await outsider.end();
        await c.query('DROP ROLE IF EXISTS ut_log_outsider').catch(() => {});
        await c.end();
        await ctx.close();
    });

    // The defaults this test is about.
    const settings = Object.fromEntries((await c.query(`SELECT name, setting FROM pg_settings WHERE name IN
        ('log_statement', 'log_min_error_statement', 'log_min_duration_statement',
         'log_parameter_max_length_on_error', 'log_error_verbosity')`)).rows.map((r) => [r.name, r.setting]));
    assert.deepStrictEqual(settings, {
        log_statement: 'none', log_min_error_statement: 'error', log_min_duration_statement: '-1',
        log_parameter_max_length_on_error: '0', log_error_verbosity: 'default',
    });

    const p = await ctx.provider();
    const session = unique('logsec');
    await ctx.pool.query('SELECT upstream_token.store_upstream_token($1, $2, $3, $4, 3600)',
        [session, p.provider, secret('seed-access'), secret('seed-refresh')]);
    const logStart = fs.statSync(process.env.UT_SERVER_LOG).size;
    const secrets = [];
    const S = (label) => { const s = secret(label); secrets.push(s); return s; };
    const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
    const pem = privateKey.export({ type: 'pkcs8', format: 'pem' });
    // Lines of the key's body: each one is secret.
    secrets.push(...pem.split('\n').filter((l) => l.length >= 40 && !l.startsWith('-----')));

    const cases = [];
    const expect = async (what, code, sql, client = c) => {
        const e = await sqlError(client.query(sql), what);
        assert.strictEqual(e.code, code, `${what}: ${e.code} ${e.message}`);
        cases.push(what);
    };
    const store = (args) => `SELECT upstream_token.store_upstream_token(${args})`;

    // store_upstream_token: errors raised in its body.
    await expect('store: unknown provider', '42704',
        store(`${lit(session)}, 'no-such-provider', ${lit(S('access'))}, ${lit(S('refresh'))}, 3600`));
    await expect('store: negative expires_in', '22023',
        store(`${lit(session)}, ${lit(p.provider)}, ${lit(S('access'))}, ${lit(S('refresh'))}, -1`));
    await expect('store: malformed id_token', '22023',
        store(`${lit(session)}, ${lit(p.provider)}, ${lit(S('access'))}, ${lit(S('refresh'))}, 60, ${lit(S('idtoken'))}`));
    await expect('store: no key', 'UT008',
        `SET upstream_token.key_file = '/nonexistent/key'; ${store(`${lit(session)}, ${lit(p.provider)}, ${lit(S('access'))}, ${lit(S('refresh'))}, 60`)}`);
    await c.query('RESET upstream_token.key_file');
    // ...raised by PostgreSQL inside it and rethrown through the guard: a lock timeout.
    await holder.query('BEGIN');
    await holder.query('SELECT 1 FROM upstream_token.token WHERE session = $1 FOR UPDATE', [session]);
    await expect('store: lock timeout', '55P03',
        `SET lock_timeout = '100ms'; ${store(`${lit(session)}, ${lit(p.provider)}, ${lit(S('access'))}, ${lit(S('refresh'))}, 60`)}`);
    await c.query('RESET lock_timeout');
    await holder.query('ROLLBACK');
    // ...raised before its body runs.
    await expect('store: cast of an argument', '22P02',
        store(`${lit(session)}, ${lit(p.provider)}, ${lit(S('access'))}, ${lit(S('refresh'))}, 'soon'`));
    await expect('store: a token where a number goes', '22P02',
        store(`${lit(session)}, ${lit(p.provider)}, ${lit(S('access'))}, NULL, ${lit(S('refresh'))}`));
    await expect('store: wrong signature', '42883',
        store(`${lit(session)}, ${lit(p.provider)}, ${lit(S('access'))}, ${lit(S('refresh'))}, 60, 1, 2, 3, 4, 5`));
    await expect('store: syntax error', '42601',
        `${store(`${lit(session)}, ${lit(p.provider)}, ${lit(S('access'))}, ${lit(S('refresh'))}, 60`)} )`);
    await expect('store: syntax error inside a literal', '42601',
        `SELECT upstream_token.store_upstream_token(${lit(session)}, ${lit(p.provider)}, ${lit(S('access'))}, '${S('refresh')}`);
    // ...and through a wrapper whose call does not name the function.
    await c.query(`CREATE FUNCTION pg_temp.save_login(a text, r text) RETURNS void LANGUAGE plpgsql AS $f$
        BEGIN PERFORM upstream_token.store_upstream_token('w', 'no-such-provider', a, r, 60); END $f$`);
    await expect('store: through a wrapper', '42704',
        `SELECT pg_temp.save_login(${lit(S('access'))}, ${lit(S('refresh'))})`);

    // register_provider: client secrets and private keys.
    const reg = (args) => `SELECT upstream_token.register_provider(${args})`;
    await expect('register: bad endpoint', '22023',
        reg(`'logsec-p', 'http://insecure.example/token', 'c', ${lit(S('client-secret'))}`));
    await expect('register: secret for auth_method none', '22023',
        reg(`'logsec-p', 'https://ok.example/token', 'c', ${lit(S('client-secret'))}, 'none'`));
    await expect('register: unknown auth_method', '22023',
        reg(`'logsec-p', 'https://ok.example/token', 'c', ${lit(S('client-secret'))}, 'telepathy'`));
    await expect('register: max_concurrent 0', '22023',
        reg(`'logsec-p', 'https://ok.example/token', 'c', ${lit(S('client-secret'))}, max_concurrent => 0`));
    await expect('register: private key with the wrong algorithm', '22023',
        reg(`'logsec-p', 'https://ok.example/token', 'c', ${lit(pem)}, 'private_key_jwt', assertion_alg => 'ES256'`));
    await expect('register: a malformed private key', '22023',
        reg(`'logsec-p', 'https://ok.example/token', 'c', ${lit(`-----BEGIN PRIVATE KEY-----\n${S('pem-body')}\n-----END PRIVATE KEY-----\n`)}, 'private_key_jwt'`));
    await expect('register: cast of an interval', '22007',
        reg(`'logsec-p', 'https://ok.example/token', 'c', ${lit(S('client-secret'))}, refresh_threshold => 'whenever'`));
    await c.query('CREATE ROLE ut_log_outsider LOGIN');
    await outsider.query('SET ROLE ut_log_outsider');
    await expect('register: no privilege', '42501',
        reg(`'logsec-p', 'https://ok.example/token', 'c', ${lit(S('client-secret'))}`), outsider);
    await outsider.query('RESET ROLE');

    // register_provider_from_issuer: refused issuer, an issuer that cannot be reached (the
    // engine's fetch fails), and a private key that does not fit after discovery.
    const fromIssuer = (args) => `SELECT upstream_token.register_provider_from_issuer(${args})`;
    await expect('from issuer: not https', '22023',
        fromIssuer(`'logsec-q', 'http://issuer.example', 'c', ${lit(S('client-secret'))}`));
    const unreachable = await sqlError(c.query(fromIssuer(`'logsec-q', 'https://127.0.0.1:9', 'c', ${lit(S('client-secret'))}`)));
    assert.match(unreachable.code, /^UT0/, `unreachable issuer: ${unreachable.code} ${unreachable.message}`);
    cases.push('from issuer: unreachable');
    await expect('from issuer: private key with the wrong algorithm', '22023',
        fromIssuer(`'logsec-q', ${lit(ctx.idp.url)}, 'c', ${lit(pem)}, 'private_key_jwt', assertion_alg => 'ES256'`));

    // Bound parameters (extended protocol) are not logged on error by default either.
    await expect('store with parameters: unknown provider', '42704', {
        text: 'SELECT upstream_token.store_upstream_token($1, $2, $3, $4, 60)',
        values: [session, 'no-such-provider', S('access'), S('refresh')],
    });

    const log = fs.readFileSync(process.env.UT_SERVER_LOG).subarray(logStart).toString('utf8');
    const errors = log.split('\n').filter((l) => / ERROR: /.test(l));
    assert.ok(errors.length >= cases.length, `the log shows the ${cases.length} errors (${errors.length} ERROR lines)`);
    assert.match(log, /provider "no-such-provider" does not exist/, 'the scanned text is the server log');
    const leaked = secrets.filter((s) => log.includes(s));
    const lines = log.split('\n').filter((l) => secrets.some((s) => l.includes(s)))
        .map((l) => l.replace(/(access|refresh|idtoken|client-secret|pem-body)-[0-9a-f]{24}/g, '$1-<secret>').slice(0, 160));
    assert.deepStrictEqual(lines, [], `${leaked.length} of ${secrets.length} secrets are in the server log`);
    t.diagnostic(`${cases.length} error cases, ${errors.length} ERROR lines, ${secrets.length} secrets, none logged`);
});
