'use strict';
// ALTER EXTENSION upstream_token UPDATE from a populated 0.1.0: the result has exactly the
// catalog a fresh 0.2.0 install has, and existing rows read the safe way: every refresh
// expiry 0.1.0 stored is an estimate (0.1.0 did not record where it came from), rows 0.1.0
// marked 'expired' on one are active again (the provider decides at their next refresh), and
// queued revocations no longer vanish with their provider.
const test = require('node:test');
const assert = require('node:assert');
const { connect, unique, sqlError } = require('./harness.js');

// The extension's objects as the catalog describes them, to compare two databases.
const CATALOG = `
WITH ns AS (SELECT oid FROM pg_namespace WHERE nspname = 'upstream_token')
SELECT 'column' AS kind, c.relname || '.' || a.attname AS name,
       concat_ws(' ', a.attnum, format_type(a.atttypid, a.atttypmod), a.attnotnull,
                 pg_get_expr(d.adbin, d.adrelid), a.attidentity) AS def
  FROM pg_class c JOIN ns ON c.relnamespace = ns.oid
  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
  LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
UNION ALL
SELECT 'relation', c.relname, concat_ws(' ', c.relkind, c.relacl::text, obj_description(c.oid, 'pg_class'),
       CASE WHEN c.relkind = 'v' THEN pg_get_viewdef(c.oid) END)
  FROM pg_class c JOIN ns ON c.relnamespace = ns.oid
UNION ALL
SELECT 'constraint', conrelid::regclass::text || '.' || conname, pg_get_constraintdef(oid)
  FROM pg_constraint WHERE connamespace = (SELECT oid FROM ns)
UNION ALL
SELECT 'index', indexrelid::regclass::text, pg_get_indexdef(indexrelid)
  FROM pg_index WHERE indrelid IN (SELECT c.oid FROM pg_class c JOIN ns ON c.relnamespace = ns.oid)
UNION ALL
SELECT 'function', p.oid::regprocedure::text,
       concat_ws(' | ', pg_get_function_result(p.oid), pg_get_function_arguments(p.oid), p.prokind,
                 p.prosecdef, p.provolatile, p.proconfig::text, p.prosrc, p.proacl::text,
                 obj_description(p.oid, 'pg_proc'))
  FROM pg_proc p JOIN ns ON p.pronamespace = ns.oid
UNION ALL
SELECT 'config_dump', unnest(extconfig)::regclass::text, '' FROM pg_extension WHERE extname = 'upstream_token'
ORDER BY 1, 2`;

// Runs `fn` with a connection to a new, empty database, dropped afterwards.
async function withDatabase(fn) {
    const name = unique('ut_upgrade').replace(/[^a-z0-9_]/gi, '_').toLowerCase();
    const admin = await connect();
    await admin.query(`CREATE DATABASE ${name}`);
    const c = await connect({ database: name });
    try {
        return await fn(c);
    } finally {
        await c.end().catch(() => {});
        await admin.query(`DROP DATABASE ${name} WITH (FORCE)`).catch(() => {});
        await admin.end();
    }
}

test('a populated 0.1.0 updates to the 0.2.0 catalog; its expiries read as estimates, expired rows come back', async () => {
    const fresh = await withDatabase(async (c) => {
        await c.query('CREATE EXTENSION upstream_token');
        return (await c.query(CATALOG)).rows;
    });
    await withDatabase(async (c) => {
        await c.query("CREATE EXTENSION upstream_token VERSION '0.1.0'");
        // Rows as 0.1.0 wrote them (the ciphertexts are never opened by the update).
        await c.query(`INSERT INTO upstream_token.provider (name, token_endpoint, client_id, auth_method, revocation_endpoint)
                       VALUES ('p', 'https://127.0.0.1:9/token', 'c', 'none', 'https://127.0.0.1:9/revoke')`);
        await c.query(`INSERT INTO upstream_token.token (session, provider, client_id, access_token, refresh_token,
                              expires_at, refresh_expires_at, status, last_error) VALUES
            ('live', 'p', 'c', '\\x01', '\\x02', now() + interval '1 hour', now() + interval '30 days', 'active', NULL),
            ('no-refresh', 'p', 'c', '\\x01', NULL, now() + interval '1 hour', NULL, 'active', NULL),
            ('estimated-out', 'p', 'c', '\\x01', '\\x03', now() - interval '1 day', now() - interval '1 hour', 'expired',
             'expired: the refresh token reached the end of its lifetime'),
            ('refused', 'p', 'c', '\\x01', '\\x04', now() - interval '1 day', now() + interval '1 day', 'reauth_required',
             'reauth_required: invalid_grant')`);
        await c.query(`INSERT INTO upstream_token.revocation (provider, session, token, token_column)
                       VALUES ('p', 'gone', '\\x05', 'refresh_token')`);

        await c.query("ALTER EXTENSION upstream_token UPDATE TO '0.2.0'");
        const upgraded = (await c.query(CATALOG)).rows;
        assert.deepStrictEqual(upgraded, fresh, 'the updated catalog is what a fresh 0.2.0 install creates');

        const rows = (await c.query(
            `SELECT session, status, refresh_expiry_source, last_error FROM upstream_token.token ORDER BY session`)).rows;
        assert.deepStrictEqual(rows, [
            { session: 'estimated-out', status: 'active', refresh_expiry_source: 'estimate', last_error: null },
            { session: 'live', status: 'active', refresh_expiry_source: 'estimate', last_error: null },
            { session: 'no-refresh', status: 'active', refresh_expiry_source: null, last_error: null },
            { session: 'refused', status: 'reauth_required', refresh_expiry_source: 'estimate', last_error: 'reauth_required: invalid_grant' },
        ]);
        const view = (await c.query(
            "SELECT refresh_expiry_source FROM upstream_token.token_status WHERE session = 'live'")).rows;
        assert.deepStrictEqual(view, [{ refresh_expiry_source: 'estimate' }]);

        // The queued revocation now holds its provider.
        await c.query('DELETE FROM upstream_token.token');
        const e = await sqlError(c.query("SELECT upstream_token.drop_provider('p', cascade => true)"), 'drop_provider');
        assert.strictEqual(e.code, '55006');
        const fk = await sqlError(c.query("DELETE FROM upstream_token.provider WHERE name = 'p'"), 'DELETE provider');
        assert.strictEqual(fk.code, '23503');
        await c.query("SELECT upstream_token.drop_provider('p', discard_revocations => true)");
        assert.strictEqual((await c.query('SELECT count(*)::int AS n FROM upstream_token.revocation')).rows[0].n, 0);
    });
});
