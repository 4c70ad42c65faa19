'use strict';
// Issue 9, defect 9: a successful, rotated token answer with one odd OPTIONAL field
// ("expires_in": "", -5, "3600.0", a numeric scope, null, arrays, booleans, huge numbers, ...)
// must still be saved when it carries an access token. The odd field is defaulted and named
// in last_error ("warning: ..."), the row stays active, and the rotated refresh token is
// kept, so the next refresh presents the new one: the rotating test IdP (which revokes the
// whole grant on reuse) sees 0 reuse and 0 revoked grants across the whole matrix.
const { describe, test, before, after } = require('node:test');
const assert = require('node:assert');
const { setup, providerWith, introspector, assertNoSecretsInLog, unique } = require('./harness.js');

const GET = 'SELECT upstream_token.get_upstream_token($1, $2) AS t';
const FORCE = 'SELECT * FROM upstream_token.refresh_upstream_token($1, $2)';
// Looks like a credential: it must never reach last_error or the log.
const SECRETISH = 'odd-field-secret-0123456789abcdefghijklmnopqrstuvwxyz';
const STORED_SCOPE = 'openid (as stored)';

// Each case: the fault action that makes every answer of the grant odd, and the field the
// warning must name (null: a sensible encoding, accepted silently).
const MATRIX = [
    { name: 'expires_in ""', action: { set_fields: { expires_in: '' } }, warns: 'expires_in' },
    { name: 'expires_in -5', action: { set_fields: { expires_in: -5 } }, warns: 'expires_in' },
    { name: 'expires_in "3600.0"', action: { set_fields: { expires_in: '3600.0' } }, warns: null, lifetime: 3600 },
    { name: 'scope 42 (number)', action: { set_fields: { scope: 42 } }, warns: 'scope' },
    { name: 'expires_in null', action: { set_fields: { expires_in: null } }, warns: null },
    { name: 'expires_in [3600] (array)', action: { set_fields: { expires_in: [3600] } }, warns: 'expires_in' },
    { name: 'expires_in true (boolean)', action: { set_fields: { expires_in: true } }, warns: 'expires_in' },
    { name: 'expires_in {} (object)', action: { set_fields: { expires_in: {} } }, warns: 'expires_in' },
    { name: 'expires_in "1h" (garbage string)', action: { set_fields: { expires_in: '1h' } }, warns: 'expires_in' },
    { name: 'expires_in "-5"', action: { set_fields: { expires_in: '-5' } }, warns: 'expires_in' },
    { name: 'expires_in 3599.7 (fractional)', action: { set_fields: { expires_in: 3599.7 } }, warns: null, lifetime: 3599 },
    { name: 'expires_in 99999999999999999999999 (huge)', action: { raw_fields: { expires_in: '99999999999999999999999' } }, warns: 'expires_in' },
    { name: 'expires_in 1e400 (overflows a double)', action: { raw_fields: { expires_in: '1e400' } }, warns: 'expires_in' },
    { name: 'expires_in -1e400', action: { raw_fields: { expires_in: '-1e400' } }, warns: 'expires_in' },
    { name: 'scope true (boolean)', action: { set_fields: { scope: true } }, warns: 'scope' },
    { name: 'scope [1, "openid"] (array with a number)', action: { set_fields: { scope: [1, 'openid'] } }, warns: 'scope' },
    { name: 'scope {"x": secret} (object)', action: { set_fields: { scope: { x: SECRETISH } } }, warns: 'scope' },
    { name: 'token_type 7', action: { set_fields: { token_type: 7 } }, warns: 'token_type' },
    { name: 'token_type null', action: { set_fields: { token_type: null } }, warns: null },
    { name: 'id_token 5', action: { set_fields: { id_token: 5 } }, warns: 'id_token' },
    { name: 'id_token [secret] (array)', action: { set_fields: { id_token: [SECRETISH] } }, warns: 'id_token' },
    { name: 'refresh_token_expires_in ""', action: { set_fields: { refresh_token_expires_in: '' } }, warns: 'refresh_token_expires_in' },
    { name: 'refresh_expires_in -1', action: { set_fields: { refresh_expires_in: -1 } }, warns: 'refresh_expires_in' },
    { name: 'refresh_expires_in false', action: { set_fields: { refresh_expires_in: false } }, warns: 'refresh_expires_in' },
    { name: 'three odd fields at once', action: { set_fields: { expires_in: '', scope: 42, token_type: [] } }, warns: ['expires_in', 'scope', 'token_type'] },
];

let ctx;
let introspect;
let rotating;  // a provider that rotates every refresh token and revokes the grant on reuse
before(async () => {
    ctx = await setup({ poolSize: 8 });
    introspect = await introspector(ctx);
    rotating = await providerWith(ctx, { client: { id_token: true } });
});
after(async () => { await ctx.close(); });

// The row's non-secret columns (read as superuser).
async function row(p, session) {
    return (await ctx.pool.query(
        `SELECT status, last_error, generation, scope, token_type,
                extract(epoch FROM expires_at - refreshed_at)::float8 AS lifetime
           FROM upstream_token.token WHERE session = $1 AND provider = $2`, [session, p.provider])).rows[0];
}

// Installs the fault for a new user's grant, then stores that user's login (due at once when
// expiresIn is 0): the fault is in place before the engine can see the token.
// The login is stored with scope STORED_SCOPE, which a clean answer replaces.
async function oddLogin(p, action, { expiresIn = 0, count } = {}) {
    const subject = unique('odd-user');
    await ctx.fault({ match: { client_id: p.clientId, subject }, action, ...(count ? { count } : {}) });
    const g = (await ctx.idp.client.admin('POST', '/admin/grants', { client_id: p.clientId, subject })).grants[0];
    const session = unique('sess');
    await ctx.pool.query('SELECT upstream_token.store_upstream_token($1, $2, $3, $4, $5, $6, NULL, $7)',
        [session, p.provider, g.access_token, g.refresh_token, expiresIn, g.id_token || null, STORED_SCOPE]);
    return { session, grant: g };
}

// get_upstream_token, checking the token it returns is active at the provider.
async function served(p, session, what) {
    const r = await ctx.pool.query(GET, [session, p.provider])
        .catch((e) => { throw new Error(`${what}: get_upstream_token failed: ${e.code} ${e.message}`); });
    const t = r.rows[0].t;
    assert.ok(t, `${what}: a token`);
    assert.strictEqual((await introspect(t)).active, true, `${what}: the served token is active at the provider`);
    return t;
}

// Checks the row after a refresh with an odd answer: active, saved, warning named.
async function checkRow(p, session, c, generation, what) {
    const r = await row(p, session);
    assert.strictEqual(r.status, 'active', `${what}: status (last_error: ${r.last_error})`);
    assert.strictEqual(Number(r.generation), generation, `${what}: the answer was saved`);
    if (c.warns) {
        assert.ok(r.last_error && r.last_error.startsWith('warning: '), `${what}: last_error is a warning: ${r.last_error}`);
        for (const field of [].concat(c.warns)) {
            assert.ok(r.last_error.includes(field), `${what}: the warning names ${field}: ${r.last_error}`);
        }
        assert.ok(!r.last_error.includes(SECRETISH), `${what}: no value in the warning`);
    } else {
        assert.strictEqual(r.last_error, null, `${what}: no warning`);
    }
    if (c.lifetime) {
        assert.ok(Math.abs(r.lifetime - c.lifetime) <= 2, `${what}: expires_at is ${r.lifetime} s after the refresh`);
    }
    return r;
}

describe('odd optional fields in a successful, rotated answer', () => {
    for (const c of MATRIX) {
        test(`${c.name}: saved, defaulted, warned; the next refresh uses the rotated token`, async () => {
            const login = await oddLogin(rotating, c.action);  // every answer for it is odd
            const t1 = await served(rotating, login.session, 'first refresh (on demand)');
            const r1 = await checkRow(rotating, login.session, c, 2, 'after the first refresh');
            const oddScope = [].concat(c.warns).includes('scope');
            assert.strictEqual(r1.scope, oddScope ? STORED_SCOPE : 'openid offline_access',
                oddScope ? 'an unusable scope keeps the stored one' : "the answer's scope is saved");
            const forced = (await ctx.pool.query(FORCE, [login.session, rotating.provider])).rows[0];
            assert.strictEqual(forced.refreshed, true, `forced refresh: ${forced.sqlstate} ${forced.error}`);
            const t2 = await served(rotating, login.session, 'after the forced refresh');
            assert.ok(t2 !== t1, 'a new access token');
            await checkRow(rotating, login.session, c, 3, 'after the forced refresh');
            const g = await ctx.grant(login.grant.grant_id);
            assert.deepStrictEqual({ calls: g.refresh_calls, rotations: g.rotations, reuse: g.reuse_detected, revoked: g.revoked },
                { calls: 2, rotations: 2, reuse: 0, revoked: false }, 'the grant at the provider');
            assertNoSecretsInLog([t1, t2, login.grant.refresh_token, g.refresh_token, SECRETISH]);
        });
    }

    test('refresh_token 5 from a provider that does not rotate: ignored, the stored one is kept', async () => {
        const p = await providerWith(ctx, { client: { no_rotation: true } });
        const login = await oddLogin(p, { set_fields: { refresh_token: 5 } });
        await served(p, login.session, 'first refresh');
        await checkRow(p, login.session, { warns: 'refresh_token' }, 2, 'after the first refresh');
        const forced = (await ctx.pool.query(FORCE, [login.session, p.provider])).rows[0];
        assert.strictEqual(forced.refreshed, true, `forced refresh: ${forced.sqlstate} ${forced.error}`);
        const g = await ctx.grant(login.grant.grant_id);
        assert.deepStrictEqual([g.refresh_calls, g.reuse_detected, g.revoked], [2, 0, false]);
    });

    test('a clean answer after odd ones clears the warning', async () => {
        const login = await oddLogin(rotating, { set_fields: { expires_in: '' } }, { count: 1 });
        await served(rotating, login.session, 'odd refresh');
        assert.match((await row(rotating, login.session)).last_error || '', /^warning: /);
        const forced = (await ctx.pool.query(FORCE, [login.session, rotating.provider])).rows[0];
        assert.strictEqual(forced.refreshed, true, `forced refresh: ${forced.sqlstate} ${forced.error}`);
        const r = await row(rotating, login.session);
        assert.deepStrictEqual([r.status, r.last_error, Number(r.generation)], ['active', null, 3]);
    });

    test('an answer without a usable access_token is still a failure (nothing saved, no rotation lost)', async () => {
        // The IdP answers without rotating (refresh_token omitted), so the old one stays valid.
        const login = await oddLogin(rotating, { omit: ['refresh_token'], set_fields: { access_token: 42 } },
            { expiresIn: 3600, count: 1 });
        const forced = (await ctx.pool.query(FORCE, [login.session, rotating.provider])).rows[0];
        assert.strictEqual(forced.refreshed, false);
        const r = await row(rotating, login.session);
        assert.strictEqual(Number(r.generation), 1, 'nothing saved');
        assert.match(r.last_error || '', /access_token/);
        assert.ok(!/^warning: /.test(r.last_error), 'a failure, not a warning');
    });

    test('across the matrix the provider saw 0 reuse and revoked 0 grants (0 sessions lost)', async () => {
        const s = await ctx.stats();
        assert.deepStrictEqual({ reuse: s.reuse_detected, revoked: s.revoked_grants }, { reuse: 0, revoked: 0 });
    });
});
