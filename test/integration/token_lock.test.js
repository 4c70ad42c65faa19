'use strict';
// Issue 9, defect 6: the engine's per-token lock is one that roles without the extension's
// grant cannot take. (a) A role with no grant at all holds pg_advisory_lock on every key it can
// compute for 40 sessions (the 0.1.0 FNV-1a key, and 0.2.0's SHA-256 key in both the bigint and
// the (int, int) form): every caller is still served at once. (b) upstream_token.lock_token,
// held by a client transaction, keeps the engine away from that one token (its caller times
// out, no provider call) while other tokens refresh; the lock ends with the transaction, and
// try_lock_token sees the engine's own hold during an exchange. (c) Without the grant,
// lock_token and try_lock_token are refused (42501).
const test = require('node:test');
const assert = require('node:assert');
const crypto = require('node:crypto');
const {
    setup, connect, waitFor, unique, pgConfig, storeMany, grantCalls, sqlError,
} = require('./harness.js');
const { Client, Pool } = require('pg');

const GET = 'SELECT upstream_token.get_upstream_token($1, $2) AS t';

let ctx;
const roles = [];
test.before(async () => { ctx = await setup({ poolSize: 10 }); });
test.after(async () => {
    for (const r of roles) await ctx.pool.query(`DROP ROLE IF EXISTS ${r}`).catch(() => {});
    await ctx.close();
});

// 0.1.0's lock key (FNV-1a over provider, a 0 byte, session): what refresh_lock_key returned.
function fnvKey(provider, session) {
    let h = 14695981039346656037n;
    for (const b of Buffer.concat([Buffer.from(provider), Buffer.from([0]), Buffer.from(session)])) {
        h ^= BigInt(b);
        h = (h * 1099511628211n) & 0xFFFFFFFFFFFFFFFFn;
    }
    return BigInt.asIntN(64, h);
}

// 0.2.0's key: the first 8 bytes of SHA-256 over the length-prefixed provider and session.
function shaKey(provider, session) {
    const len = (s) => { const b = Buffer.alloc(4); b.writeUInt32BE(Buffer.byteLength(s)); return b; };
    const d = crypto.createHash('sha256')
        .update(len(provider)).update(provider).update(len(session)).update(session).digest();
    return d.readBigInt64BE(0);
}

// A login role with no grant on the extension (it may connect: PUBLIC has CONNECT).
async function roleWithoutGrant() {
    const name = unique('nogrant').replace(/-/g, '_');
    await ctx.pool.query(`CREATE ROLE ${name} LOGIN`);
    roles.push(name);
    return name;
}

// A login role that is a member of upstream_token_client (the application's role).
async function appRole() {
    const name = unique('app').replace(/-/g, '_');
    await ctx.pool.query(`CREATE ROLE ${name} LOGIN IN ROLE upstream_token_client`);
    roles.push(name);
    return name;
}

// Mints one login per session at the IdP (nothing stored yet).
async function mint(p, n) {
    return (await ctx.idp.client.admin('POST', '/admin/grants',
        { client_id: p.clientId, subject: unique('user'), count: n })).grants;
}

// Stores minted logins, already expired, under the given session names.
async function storeExpired(p, sessions, grants) {
    await storeMany(ctx.pool, p.provider, grants.map((g, i) => ({
        session: sessions[i], access: g.access_token, refresh: g.refresh_token, expiresIn: 0,
    })));
    return grants;
}

test('token lock (a): a role with no grant holding advisory locks on every computable key stalls no refresh', async () => {
    const p = await ctx.provider();
    const sessions = Array.from({ length: 40 }, () => unique('sess'));
    const attackerRole = await roleWithoutGrant();
    const attacker = new Client(pgConfig({ user: attackerRole }));
    attacker.on('error', () => {});
    await attacker.connect();
    const callers = new Pool(pgConfig({ max: 10, options: '-c upstream_token.wait_timeout=4000' }));
    callers.on('error', () => {});
    try {
        // Every key a user can compute from public values, in every form pg_advisory_lock takes.
        for (const s of sessions) {
            for (const k of [fnvKey(p.provider, s), shaKey(p.provider, s)]) {
                await attacker.query('SELECT pg_advisory_lock($1::bigint)', [k.toString()]);
                const hi = Number(BigInt.asIntN(32, k >> 32n));
                const lo = Number(BigInt.asIntN(32, k));
                await attacker.query('SELECT pg_advisory_lock($1::int, $2::int)', [hi, lo]);
            }
        }
        const held = await ctx.pool.query(
            "SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND pid = $1 AND granted",
            [attacker.processID]);
        assert.strictEqual(held.rows[0].n, sessions.length * 4, 'the role holds all its locks');

        const grants = await storeExpired(p, sessions, await mint(p, sessions.length));
        const started = Date.now();
        const results = await Promise.allSettled(sessions.map((s) => callers.query(GET, [s, p.provider])));
        const failed = results.filter((r) => r.status === 'rejected');
        const codes = [...new Set(failed.map((r) => r.reason.code))].join(', ');
        assert.strictEqual(failed.length, 0,
            `${failed.length} of ${sessions.length} callers failed (${codes}) after ${Date.now() - started} ms`);
        results.forEach((r, i) => assert.notStrictEqual(r.value.rows[0].t, grants[i].access_token,
            'a refreshed token is served'));
        for (const g of grants) {
            assert.strictEqual((await ctx.grant(g.grant_id)).refresh_calls, 1, 'one provider call per token');
        }
    } finally {
        await callers.end().catch(() => {});
        await attacker.end().catch(() => {});
    }
});

test('token lock (b): lock_token in a client transaction holds off the engine for that token only', async () => {
    const p = await ctx.provider({ requestTimeout: '30 s' });
    const [locked, other, busy] = [unique('sess'), unique('sess'), unique('sess')];
    const app = await appRole();
    const holder = new Client(pgConfig({ user: app }));
    holder.on('error', () => {});
    await holder.connect();
    const waiter = await connect();
    try {
        await holder.query('BEGIN');
        const r = await holder.query('SELECT upstream_token.lock_token($1, $2) AS v', [p.provider, locked]);
        assert.strictEqual(r.rows[0].v, '', 'lock_token returns void');
        const since = Date.now();
        const grants = await storeExpired(p, [locked, other], await mint(p, 2));

        // The other token refreshes while the lock is held.
        const tok = (await ctx.pool.query(GET, [other, p.provider])).rows[0].t;
        assert.notStrictEqual(tok, grants[1].access_token, 'another token refreshes meanwhile');

        // The locked one: its caller times out, and the provider never saw a call for it.
        await waiter.query("SET upstream_token.wait_timeout = '1500ms'");
        const err = await sqlError(waiter.query(GET, [locked, p.provider]), 'get of the locked token');
        assert.strictEqual(err.code, 'UT007', `the caller times out: ${err.message}`);
        assert.strictEqual((await grantCalls(ctx.idp, grants[0].grant_id, since)).length, 0,
            'no provider call while a client holds the lock');

        // Another client sees the lock; an unrelated key is free (and released at commit).
        const tries = await ctx.pool.query(
            `SELECT upstream_token.try_lock_token($1, $2) AS a, upstream_token.try_lock_token($1, $3) AS b`,
            [p.provider, locked, unique('sess')]);
        assert.deepStrictEqual(tries.rows[0], { a: false, b: true });

        // The lock is transaction-level: COMMIT releases it and the refresh goes on.
        await holder.query('COMMIT');
        await waiter.query('RESET upstream_token.wait_timeout');
        const after = (await waiter.query(GET, [locked, p.provider])).rows[0].t;
        assert.notStrictEqual(after, grants[0].access_token, 'refreshed once the transaction ended');
        assert.strictEqual((await ctx.grant(grants[0].grant_id)).refresh_calls, 1, 'one provider call');

        // And the other way round: while the engine's exchange for a token is in flight, the
        // lock is taken (the engine holds the same lock, at session level).
        const [g] = await mint(p, 1);
        await ctx.fault({ match: { grant_id: g.grant_id }, action: { delay_ms: 1500 }, count: 1 });
        await storeExpired(p, [busy], [g]);
        const pending = ctx.pool.query(GET, [busy, p.provider]);
        pending.catch(() => {});
        await waitFor(async () => (await grantCalls(ctx.idp, g.grant_id, since)).length === 1,
            { what: 'the engine to call the provider' });
        const during = await ctx.pool.query('SELECT upstream_token.try_lock_token($1, $2) AS v', [p.provider, busy]);
        assert.strictEqual(during.rows[0].v, false, 'the engine holds the lock during the exchange');
        await pending;
        const later = await ctx.pool.query('SELECT upstream_token.try_lock_token($1, $2) AS v', [p.provider, busy]);
        assert.strictEqual(later.rows[0].v, true, 'released once the result is committed');
    } finally {
        await holder.end().catch(() => {});
        await waiter.end().catch(() => {});
    }
});

test('token lock (c): a role without the grant cannot take the token lock (42501)', async () => {
    const name = await roleWithoutGrant();
    const c = new Client(pgConfig({ user: name }));
    c.on('error', () => {});
    await c.connect();
    try {
        for (const fn of ['lock_token', 'try_lock_token']) {
            const err = await sqlError(c.query(`SELECT upstream_token.${fn}('p', 's')`), fn);
            assert.strictEqual(err.code, '42501', `${fn}: ${err.message}`);
        }
    } finally {
        await c.end().catch(() => {});
    }
    // Nothing is granted to PUBLIC, and the app role has both.
    const acl = await ctx.pool.query(
        `SELECT p.proname, has_function_privilege('public', p.oid, 'EXECUTE') AS pub,
                has_function_privilege('upstream_token_client', p.oid, 'EXECUTE') AS app
           FROM pg_proc p WHERE p.pronamespace = 'upstream_token'::regnamespace
            AND p.proname IN ('lock_token', 'try_lock_token') ORDER BY 1`);
    assert.deepStrictEqual(acl.rows, [
        { proname: 'lock_token', pub: false, app: true },
        { proname: 'try_lock_token', pub: false, app: true },
    ]);
});
