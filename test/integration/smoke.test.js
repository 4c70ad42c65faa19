'use strict';
// The main job end to end: a stored login whose access token expired is refreshed by the
// engine, and the rotated refresh token is saved.
const test = require('node:test');
const assert = require('node:assert');
const { setup } = require('./harness.js');

test('an expired token is refreshed once and the rotation is saved', async (t) => {
    const ctx = await setup();
    t.after(() => ctx.close());
    const p = await ctx.provider();
    const [login] = await ctx.logins(p, { expiresIn: 0 });
    const r = await ctx.pool.query('SELECT upstream_token.get_upstream_token($1, $2) AS t', [login.session, p.provider]);
    assert.ok(r.rows[0].t && r.rows[0].t !== login.grant.access_token, 'a new access token');
    const g = await ctx.grant(login.grant.grant_id);
    assert.strictEqual(g.rotations, 1);
    assert.strictEqual(g.reuse_detected, 0);
    // The next call is served from the store: no second call to the provider.
    const again = await ctx.pool.query('SELECT upstream_token.get_upstream_token($1, $2) AS t', [login.session, p.provider]);
    assert.strictEqual(again.rows[0].t, r.rows[0].t);
    assert.strictEqual((await ctx.grant(login.grant.grant_id)).refresh_calls, 1);
});
