'use strict';
// ALTER EXTENSION upstream_token UPDATE from a populated 0.1.0: the result has exactly the
// catalog a fresh install of the default version has, and existing rows read the safe way: every refresh
// expiry 0.1.0 stored is an estimate (0.1.0 did not record where it came from), rows 0.1.0
// marked 'expired' on one are active again (the provider decides at their next refresh), every
// row is an application's login (grant_type 'refresh_token', no audience, no subject session),
// and queued revocations no longer vanish with their provider.
const test = require('node:test');
const assert = require('node:assert');
const { connect, unique, sqlError } = require('./harness.js');
const { catalogSnapshot, diffSnapshots, envConn } = require('./upgrade_catalog.js');

// Runs `fn` with a connection to a new, empty database (and its name), dropped afterwards.
async function withDatabase(fn) {
    const name = unique('ut_upgrade').replace(/[^a-z0-9_]/gi, '_').toLowerCase();
    const admin = await connect();
    await admin.query(`CREATE DATABASE ${name}`);
    const c = await connect({ database: name });
    try {
        return await fn(c, name);
    } finally {
        await c.end().catch(() => {});
        await admin.query(`DROP DATABASE ${name} WITH (FORCE)`).catch(() => {});
        await admin.end();
    }
}

test('a populated 0.1.0 updates to the current catalog; its expiries read as estimates, expired rows come back', async () => {
    const fresh = await withDatabase(async (c, name) => {
        await c.query('CREATE EXTENSION upstream_token');
        return catalogSnapshot(envConn(name));
    });
    await withDatabase(async (c, name) => {
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

        await c.query('ALTER EXTENSION upstream_token UPDATE');
        const diff = diffSnapshots(await catalogSnapshot(envConn(name)), fresh);
        assert.ok(diff.equal, `the updated catalog is what a fresh install creates\n${diff.text}`);

        const rows = (await c.query(
            `SELECT session, status, refresh_expiry_source, last_error, grant_type, audience, subject_session
               FROM upstream_token.token ORDER BY session`)).rows;
        const login = { grant_type: 'refresh_token', audience: null, subject_session: null };
        assert.deepStrictEqual(rows, [
            { session: 'estimated-out', status: 'active', refresh_expiry_source: 'estimate', last_error: null, ...login },
            { session: 'live', status: 'active', refresh_expiry_source: 'estimate', last_error: null, ...login },
            { session: 'no-refresh', status: 'active', refresh_expiry_source: null, last_error: null, ...login },
            { session: 'refused', status: 'reauth_required', refresh_expiry_source: 'estimate', last_error: 'reauth_required: invalid_grant', ...login },
        ]);
        const view = (await c.query(
            "SELECT refresh_expiry_source, grant_type FROM upstream_token.token_status WHERE session = 'live'")).rows;
        assert.deepStrictEqual(view, [{ refresh_expiry_source: 'estimate', grant_type: 'refresh_token' }]);
        // A 0.1.0 provider has no login endpoints; the login table starts empty.
        const prov = (await c.query(
            'SELECT authorization_endpoint, device_authorization_endpoint FROM upstream_token.provider')).rows;
        assert.deepStrictEqual(prov, [{ authorization_endpoint: null, device_authorization_endpoint: null }]);
        assert.strictEqual((await c.query('SELECT count(*)::int AS n FROM upstream_token.login')).rows[0].n, 0);

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
