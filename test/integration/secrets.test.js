'use strict';
// No plaintext secret reaches disk or logs (invariant I5): tokens and a client secret carrying
// unique markers, and the tokens the provider issues in a refresh the engine makes, appear in
// none of the relation files (heap, TOAST, indexes) of upstream_token.token/provider, the WAL,
// the server log, the views, or the errors of calls made to echo them. Also: a ciphertext moved
// to another row (or another column) does not decrypt (UT009) and the source row still works.
const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const path = require('node:path');
const crypto = require('node:crypto');
const { setup, waitFor, unique } = require('./harness.js');

// Every readable file of a relation: the main fork and its 1 GB segments (path, path.1, ...).
function relationFiles(dataDir, relPath) {
    const out = [];
    for (let seg = 0; ; seg += 1) {
        const f = path.join(dataDir, seg === 0 ? relPath : `${relPath}.${seg}`);
        if (!fs.existsSync(f)) break;
        out.push(f);
    }
    return out;
}

// Counts, per needle, the files (by label) whose raw bytes contain it.
function scan(files, needles) {
    const hits = {};
    for (const [label, buf] of files) {
        for (const [name, value] of Object.entries(needles)) {
            if (buf.indexOf(Buffer.from(value, 'utf8')) >= 0) (hits[name] ||= []).push(label);
        }
    }
    return hits;
}

// A JWT-shaped ID token with the given claims whose signature part is `sig` (never verified).
function fakeJwt(claims, sig) {
    const b = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
    return `${b({ alg: 'RS256', typ: 'JWT' })}.${b(claims)}.${sig}`;
}

// All the text of an error the client received (message, detail, hint, context...).
function errorText(e) {
    return [e.message, e.detail, e.hint, e.where, e.internalQuery, e.schema, e.table, e.column,
        e.constraint].filter(Boolean).join('\n');
}

// Mints a login at the IdP, installs a fault for its grant, then stores it already expired.
async function loginWithFault(ctx, p, action) {
    const grant = (await ctx.idp.client.admin('POST', '/admin/grants',
        { client_id: p.clientId, subject: unique('user') })).grants[0];
    await ctx.fault({ match: { grant_id: grant.grant_id }, action: action(grant) });
    const session = unique('sess');
    await ctx.pool.query('SELECT upstream_token.store_upstream_token($1, $2, $3, $4, 0, $5)',
        [session, p.provider, grant.access_token, grant.refresh_token, grant.id_token || null]);
    return { session, grant };
}

test('no plaintext secret in relation files, WAL, server log, views or errors', async (t) => {
    const dataDir = process.env.UT_DATA;
    assert.ok(dataDir, 'UT_DATA is set (scripts/cluster.sh env)');
    const ctx = await setup({ poolSize: 10 });
    t.after(() => ctx.close());
    const M = `MARKER-${crypto.randomBytes(16).toString('hex')}`;
    const notices = [];
    ctx.pool.on('connect', (c) => c.on('notice', (n) => notices.push(errorText(n))));
    const logStart = fs.statSync(process.env.UT_SERVER_LOG).size;

    // 1. Stored by the application: tokens and a client secret carrying the marker.
    const p = await ctx.provider({ secret: `client-secret-${M}` });
    const sessA = unique('sec-a');
    const idA = fakeJwt({ iss: ctx.idp.url, sub: 'alice', aud: p.clientId, nonce: `nonce-${M}` }, `sig-${M}`);
    await ctx.pool.query('SELECT upstream_token.store_upstream_token($1, $2, $3, $4, $5, $6)',
        [sessA, p.provider, `access-${M}`, `refresh-${M}`, 3600, idA]);
    assert.ok((await ctx.pool.query('SELECT upstream_token.get_upstream_token($1, $2) AS t',
        [sessA, p.provider])).rows[0].t === `access-${M}`, 'the stored token is served');

    // 2. Written by the engine: a real refresh; the provider's new tokens are the markers.
    const [b] = await ctx.logins(p, { expiresIn: 0 });
    const newAccessB = (await ctx.pool.query('SELECT upstream_token.get_upstream_token($1, $2) AS t',
        [b.session, p.provider])).rows[0].t;
    assert.ok(newAccessB && newAccessB !== b.grant.access_token, 'a new access token');
    const newRefreshB = (await ctx.grant(b.grant.grant_id)).refresh_token;
    assert.ok(newRefreshB && newRefreshB !== b.grant.refresh_token, 'the provider rotated');
    const credsB = (await ctx.pool.query(
        'SELECT id_token FROM upstream_token.get_upstream_credentials($1) WHERE provider = $2',
        [b.session, p.provider])).rows[0];
    // (The test IdP's ID token is deterministic per second: it may equal the login one.)
    const newIdSigB = credsB.id_token.split('.')[2];

    // 3. Errors that might echo a secret.
    const clientErrors = [];
    const malformed = await ctx.pool.query('SELECT upstream_token.store_upstream_token($1, $2, $3, $4, $5, $6)',
        [unique('sec-m'), p.provider, `access2-${M}`, `refresh2-${M}`, 3600, `not-a-jwt-${M}`]).then(() => null, (e) => e);
    assert.ok(malformed, 'a malformed id_token is refused');
    clientErrors.push(errorText(malformed));

    // The fault goes in before the login is stored: the engine refreshes an expired token as
    // soon as it is committed.
    const cLogin = await loginWithFault(ctx, p, (g) => ({ oauth_error: 'invalid_request', status: 400,
        error_description: `bad refresh_token "${g.refresh_token}" (${M}) rt=${g.refresh_token}` }));
    const failed = await ctx.pool.query('SELECT upstream_token.get_upstream_token($1, $2) AS t',
        [cLogin.session, p.provider]).then(() => null, (e) => e);
    assert.ok(failed, 'the refresh failed');
    assert.match(failed.code, /^UT0/);
    clientErrors.push(errorText(failed));

    const dLogin = await loginWithFault(ctx, p, (g) => ({ oauth_error: 'invalid_grant',
        error_description: `${g.refresh_token} is dead ${M}` }));
    const reauth = await ctx.pool.query('SELECT upstream_token.get_upstream_token($1, $2) AS t',
        [dLogin.session, p.provider]).then(() => null, (e) => e);
    assert.strictEqual(reauth && reauth.code, 'UT004');
    clientErrors.push(errorText(reauth));
    await waitFor(async () => (await ctx.pool.query(
        'SELECT count(*)::int AS n FROM upstream_token.token_status WHERE session = ANY($1) AND last_error IS NOT NULL',
        [[cLogin.session, dLogin.session]])).rows[0].n === 2, { what: 'the failures to be recorded' });

    const needles = {
        marker: M,
        loginAccessB: b.grant.access_token,
        loginRefreshB: b.grant.refresh_token,
        loginIdSigB: b.grant.id_token.split('.')[2],
        newAccessB,
        newRefreshB,
        newIdSigB,
        refreshC: cLogin.grant.refresh_token,
        refreshD: dLogin.grant.refresh_token,
        clientSecret: p.secret,
    };

    // Messages the client received, notices, and the views.
    assert.deepStrictEqual(scan(clientErrors.map((s, i) => [`error ${i}`, Buffer.from(s)]), needles), {},
        'no secret in error messages');
    assert.deepStrictEqual(scan(notices.map((s, i) => [`notice ${i}`, Buffer.from(s)]), needles), {},
        'no secret in notices');
    const views = await ctx.pool.query(
        `SELECT (SELECT json_agg(s) FROM upstream_token.token_status s)::text AS ts,
                (SELECT json_agg(e) FROM upstream_token.engine_status e)::text AS es`);
    assert.deepStrictEqual(scan([['token_status', Buffer.from(views.rows[0].ts)],
        ['engine_status', Buffer.from(views.rows[0].es)]], needles), {}, 'no secret in the views');

    // Disk: relation files (heap, TOAST, indexes) after a checkpoint, all WAL, the server log.
    await ctx.pool.query('CHECKPOINT');
    const rels = await ctx.pool.query(`
        WITH t AS (SELECT oid FROM pg_class WHERE oid IN ('upstream_token.token'::regclass, 'upstream_token.provider'::regclass)),
             toast AS (SELECT reltoastrelid AS oid FROM pg_class WHERE oid IN (SELECT oid FROM t) AND reltoastrelid <> 0),
             idx AS (SELECT indexrelid AS oid FROM pg_index WHERE indrelid IN (SELECT oid FROM t UNION SELECT oid FROM toast))
        SELECT oid::regclass::text AS name, pg_relation_filepath(oid) AS f
          FROM (SELECT oid FROM t UNION SELECT oid FROM toast UNION SELECT oid FROM idx) x`);
    assert.ok(rels.rows.length >= 7, `heap, TOAST and index relations (${rels.rows.map((r) => r.name)})`);
    const relFiles = [];
    for (const r of rels.rows) {
        for (const f of relationFiles(dataDir, r.f)) relFiles.push([`${r.name} (${path.relative(dataDir, f)})`, fs.readFileSync(f)]);
    }
    const walDir = path.join(dataDir, 'pg_wal');
    const walFiles = fs.readdirSync(walDir).filter((n) => /^[0-9A-F]{24}$/.test(n))
        .map((n) => [`pg_wal/${n}`, fs.readFileSync(path.join(walDir, n))]);
    assert.ok(walFiles.length > 0);
    const log = fs.readFileSync(process.env.UT_SERVER_LOG);

    // Positive control: the scan does see what is stored in clear (session names, provider).
    const control = { sessionA: sessA, sessionB: b.session, provider: p.provider };
    const seen = scan(relFiles, control);
    assert.ok(seen.sessionA && seen.sessionB && seen.provider, 'the relation files hold the rows');
    assert.ok(Object.keys(scan(walFiles, control)).length === 3, 'the WAL holds the rows');

    assert.deepStrictEqual(scan(relFiles, needles), {}, 'no secret in relation files');
    assert.deepStrictEqual(scan(walFiles, needles), {}, 'no secret in WAL');
    assert.deepStrictEqual(scan([['server log', log]], needles), {}, 'no secret in the server log');
    const logTail = log.subarray(logStart).toString('utf8');
    assert.match(logTail, /invalid_grant|invalid_request|sign-in is required/,
        'the scanned log is the server log (it has the failed refreshes)');
    t.diagnostic(`scanned ${relFiles.length} relation files, ${walFiles.length} WAL files, ` +
        `${log.length} log bytes (${logTail.split('\n').length - 1} new lines); ${clientErrors.length} errors, ${notices.length} notices`);
});

test('a ciphertext moved to another row or column does not decrypt', async (t) => {
    const ctx = await setup({ poolSize: 5 });
    t.after(() => ctx.close());
    const p = await ctx.provider();
    const [a, b, c] = [unique('mv-a'), unique('mv-b'), unique('mv-c')];
    for (const s of [a, b, c]) {
        await ctx.pool.query('SELECT upstream_token.store_upstream_token($1, $2, $3, $4, $5)',
            [s, p.provider, `access-of-${s}`, `refresh-of-${s}`, 3600]);
    }
    // Row B gets row A's access-token ciphertext; row C gets its own refresh-token ciphertext
    // in the access-token column.
    await ctx.pool.query(`UPDATE upstream_token.token b SET access_token = a.access_token
                            FROM upstream_token.token a
                           WHERE a.session = $1 AND a.provider = $3 AND b.session = $2 AND b.provider = $3`,
        [a, b, p.provider]);
    await ctx.pool.query(`UPDATE upstream_token.token SET access_token = refresh_token
                           WHERE session = $1 AND provider = $2`, [c, p.provider]);

    for (const s of [b, c]) {
        const r = await ctx.pool.query('SELECT upstream_token.get_upstream_token($1, $2) AS t', [s, p.provider])
            .then((x) => ({ token: x.rows[0].t }), (e) => ({ code: e.code, text: errorText(e) }));
        assert.strictEqual(r.code, 'UT009', `moved ciphertext: ${JSON.stringify(r.code)}`);
        assert.ok(!r.text.includes('access-of-') && !r.text.includes('refresh-of-'), 'no plaintext in the error');
    }
    const ok = await ctx.pool.query('SELECT upstream_token.get_upstream_token($1, $2) AS t', [a, p.provider]);
    assert.ok(ok.rows[0].t === `access-of-${a}`, 'the source row still works');
});

test('a provider echoing the exact client secret in error_description does not get it logged', async (t) => {
    // The redaction must not depend on the secret looking like a token: a 32-letter secret
    // with no digit is as secret as any other (the engine redacts the exact secrets it sent).
    const ctx = await setup({ poolSize: 3 });
    t.after(() => ctx.close());
    const secret = Array.from(crypto.randomBytes(32), (x) => String.fromCharCode(97 + (x % 26))).join('');
    const p = await ctx.provider({ secret });
    const logStart = fs.statSync(process.env.UT_SERVER_LOG).size;
    // The fault first: the engine refreshes an expired login as soon as it is stored.
    await ctx.fault({ match: { client_id: p.clientId },
        action: { oauth_error: 'invalid_client', error_description: `client authentication failed for secret ${secret}` } });
    const [l] = await ctx.logins(p, { expiresIn: 0 });
    const e = await ctx.pool.query('SELECT upstream_token.get_upstream_token($1, $2) AS t', [l.session, p.provider])
        .then(() => null, (x) => x);
    assert.ok(e && e.code === 'UT010', `provider_misconfigured, got ${e && e.code}`);
    assert.ok(!errorText(e).includes(secret), 'the client secret is not in the error the client got');
    const log = fs.readFileSync(process.env.UT_SERVER_LOG).subarray(logStart);
    assert.match(log.toString('utf8'), /invalid_client/, 'the failure was logged');
    assert.ok(log.indexOf(Buffer.from(secret)) < 0, 'the client secret is not in the server log');
    const st = await ctx.pool.query('SELECT last_error FROM upstream_token.token_status WHERE session = $1', [l.session]);
    assert.ok(!(st.rows[0].last_error || '').includes(secret), 'nor in token_status.last_error');
});
