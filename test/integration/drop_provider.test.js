'use strict';
// drop_provider and the revocation queue: revocations the app asked for (revoke_upstream_token)
// and the engine has not delivered yet are never forgotten silently. drop_provider refuses with
// 55006 (object_in_use) while any is pending, whatever `cascade` says; the operator waits for
// delivery, or discards them explicitly with discard_revocations => true.
const test = require('node:test');
const assert = require('node:assert');
const {
    setup, storeLogin, providerWith, introspector, revocationQueue, waitFor, sqlError,
} = require('./harness.js');

const REVOKE = 'SELECT upstream_token.revoke_upstream_token($1, $2) AS n';

let ctx;
let active;
test.before(async () => {
    ctx = await setup({ poolSize: 5 });
    active = await introspector(ctx);
});
test.after(async () => { await ctx.close(); });

// A provider whose revocation endpoint answers 503 (until the returned fault is deleted),
// with one login revoked by the app: its revocation is queued and stays pending.
async function pendingRevocation() {
    const p = await providerWith(ctx, { args: { revocation_endpoint: `${ctx.idp.url}/revoke` } });
    const down = await ctx.fault({ match: { client_id: p.clientId, endpoint: 'revoke' }, action: { status: 503 } });
    const login = await storeLogin(ctx, p, { expiresIn: 3600 });
    const other = await storeLogin(ctx, p, { expiresIn: 3600 });
    assert.strictEqual((await ctx.pool.query(REVOKE, [login.session, p.provider])).rows[0].n, 1);
    await waitFor(async () => {
        const q = await revocationQueue(ctx.pool, p.provider);
        return q.length === 1 && q[0].attempts >= 1;
    }, { timeoutMs: 10000, what: 'a failed delivery attempt' });
    return { p, login, other, down };
}

// Whether the provider is still registered.
async function exists(name) {
    return (await ctx.pool.query('SELECT 1 FROM upstream_token.provider WHERE name = $1', [name])).rows.length === 1;
}

test('a: drop_provider refuses (55006) while a revocation is pending, with or without cascade', async () => {
    const { p, login, other, down } = await pendingRevocation();
    await ctx.pool.query('SELECT upstream_token.delete_upstream_token($1, $2)', [other.session, p.provider]);
    for (const sql of ['SELECT upstream_token.drop_provider($1)',
        'SELECT upstream_token.drop_provider($1, cascade => true)']) {
        const e = await sqlError(ctx.pool.query(sql, [p.provider]), sql);
        assert.strictEqual(e.code, '55006', `${sql}: ${e.code} ${e.message}`);
        assert.match(e.message, /1 revocation\(s\) not yet delivered/);
        assert.match(e.hint || '', /discard_revocations => true/);
    }
    assert.ok(await exists(p.provider), 'the provider is still there');
    assert.strictEqual((await revocationQueue(ctx.pool, p.provider)).length, 1, 'the revocation is still queued');

    // Once the provider takes it, the revocation is delivered and the drop goes through.
    await ctx.idp.client.admin('DELETE', `/admin/faults/${down.fault_id}`);
    await waitFor(async () => (await revocationQueue(ctx.pool, p.provider)).length === 0,
        { timeoutMs: 30000, intervalMs: 200, what: 'the revocation to be delivered' });
    assert.strictEqual((await ctx.grant(login.grant.grant_id)).revoked, true, 'what the app asked for happened');
    await ctx.pool.query('SELECT upstream_token.drop_provider($1, cascade => true)', [p.provider]);
    assert.strictEqual(await exists(p.provider), false);
});

test('b: discard_revocations => true drops the provider and its pending revocations, undelivered', async () => {
    const { p, login, other } = await pendingRevocation();
    // Tokens still stored: discarding revocations does not imply cascade.
    const e = await sqlError(ctx.pool.query(
        'SELECT upstream_token.drop_provider($1, discard_revocations => true)', [p.provider]), 'drop without cascade');
    assert.strictEqual(e.code, '2BP01');
    await ctx.pool.query(
        'SELECT upstream_token.drop_provider($1, cascade => true, discard_revocations => true)', [p.provider]);
    assert.strictEqual(await exists(p.provider), false);
    const left = await ctx.pool.query('SELECT count(*)::int AS n FROM upstream_token.revocation WHERE provider = $1', [p.provider]);
    assert.strictEqual(left.rows[0].n, 0);
    assert.strictEqual((await ctx.grant(login.grant.grant_id)).revoked, false, 'discarded: never sent');
    assert.strictEqual((await active(other.grant.refresh_token)).active, true, 'cascade does not contact the provider');
});

test('c: the queue itself refuses to lose a pending revocation to a direct DELETE of the provider (23503)', async () => {
    const { p } = await pendingRevocation();
    await ctx.pool.query('DELETE FROM upstream_token.token WHERE provider = $1', [p.provider]);
    const e = await sqlError(ctx.pool.query('DELETE FROM upstream_token.provider WHERE name = $1', [p.provider]), 'DELETE');
    assert.strictEqual(e.code, '23503');
    assert.strictEqual((await revocationQueue(ctx.pool, p.provider)).length, 1);
    await ctx.pool.query('SELECT upstream_token.drop_provider($1, discard_revocations => true)', [p.provider]);
    assert.strictEqual(await exists(p.provider), false);
});
