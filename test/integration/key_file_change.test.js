'use strict';
// A key file overwritten in place (same path, same inode, new content) and reloaded is noticed
// by every process: backends that were open before, the engine, and new backends. The
// operator's in-place rotation: copy the key aside, point previous_key_file at the copy and
// reload; write the new key into key_file and reload. Then open backends and the engine read
// old and new tokens, everything new is sealed under the new key (an open backend's store,
// the engine's refresh), and a fresh backend reads everything. Without previous_key_file, a
// value sealed under the old key is a clear UT009 naming that key's id, in every backend.
const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const crypto = require('node:crypto');
const { setup, connect, unique, storeLogin, setSystemGucs, sqlError, waitFor } = require('./harness.js');

const GET = 'SELECT upstream_token.get_upstream_token($1, $2) AS t';

// The id a ciphertext names for a key (SHA-256 over a label and the key bytes, first 4 bytes).
function keyId(hex) {
    return crypto.createHash('sha256').update('upstream_token key id')
        .update(Buffer.from(hex.trim(), 'hex')).digest().subarray(0, 4).toString('hex');
}

// The key ids of one token row's ciphertexts (as the superuser reads the table).
async function sealedUnder(pool, session, provider) {
    const r = await pool.query(`SELECT pg_catalog.encode(pg_catalog.substr(access_token, 2, 4), 'hex') AS a,
        pg_catalog.encode(pg_catalog.substr(refresh_token, 2, 4), 'hex') AS r
        FROM upstream_token.token WHERE session = $1 AND provider = $2`, [session, provider]);
    return r.rows[0];
}

test('a key file overwritten in place is noticed by open backends, the engine and new ones', async (t) => {
    const ctx = await setup({ poolSize: 4 });
    const keyPath = (await ctx.pool.query("SELECT pg_catalog.current_setting('upstream_token.key_file') AS v")).rows[0].v;
    const original = fs.readFileSync(keyPath, 'utf8');
    const st = fs.statSync(keyPath);
    const prevPath = `${keyPath}.previous`;
    const open = await connect();  // a backend open from before the change
    t.after(async () => {
        fs.writeFileSync(keyPath, original);  // in place again: same inode, original content
        await setSystemGucs(ctx.pool, { 'upstream_token.previous_key_file': null }).catch(() => {});
        await open.end();
        await ctx.close();  // drops this test's provider and tokens (sealed under the new key)
        fs.rmSync(prevPath, { force: true });
    });
    const id0 = keyId(original);
    const newHex = crypto.randomBytes(32).toString('hex');
    const id1 = keyId(newHex);

    const p = await ctx.provider();
    const a = await storeLogin(ctx, p, { expiresIn: 3600 });   // sealed under the old key
    const r = await storeLogin(ctx, p, { expiresIn: 3600 });   // refreshed by the engine later
    assert.deepStrictEqual(await sealedUnder(ctx.pool, a.session, p.provider), { a: id0, r: id0 });
    // The open backend and the engine have the old key in hand.
    assert.strictEqual((await open.query(GET, [a.session, p.provider])).rows[0].t, a.grant.access_token);
    assert.strictEqual((await open.query('SELECT upstream_token.current_key_id() AS k')).rows[0].k, id0);
    const forced = async (session) => (await ctx.pool.query(
        'SELECT * FROM upstream_token.refresh_upstream_token($1, $2)', [session, p.provider])).rows[0];
    assert.strictEqual((await forced(r.session)).refreshed, true);

    // 1. The old key is copied aside and named previous_key_file; reload.
    fs.copyFileSync(keyPath, prevPath);
    fs.chownSync(prevPath, st.uid, st.gid);
    fs.chmodSync(prevPath, 0o600);
    await setSystemGucs(ctx.pool, { 'upstream_token.previous_key_file': prevPath });
    assert.strictEqual((await open.query(GET, [a.session, p.provider])).rows[0].t, a.grant.access_token);
    assert.strictEqual((await forced(r.session)).refreshed, true);

    // 2. The new key is written into key_file in place; reload.
    fs.writeFileSync(keyPath, `${newHex}\n`);
    assert.strictEqual(fs.statSync(keyPath).ino, st.ino, 'the same file, overwritten in place');
    await ctx.pool.query('SELECT pg_catalog.pg_reload_conf()');

    // The open backend seals under the new key and reads old and new values.
    assert.strictEqual((await open.query('SELECT upstream_token.current_key_id() AS k')).rows[0].k, id1,
        'the open backend names the new key as current');
    const b = { session: unique('kf-b'), access: `access-${unique('b')}`, refresh: `refresh-${unique('b')}` };
    await open.query('SELECT upstream_token.store_upstream_token($1, $2, $3, $4, 3600)',
        [b.session, p.provider, b.access, b.refresh]);
    assert.deepStrictEqual(await sealedUnder(ctx.pool, b.session, p.provider), { a: id1, r: id1 },
        'a store in the open backend is sealed under the new key');
    assert.strictEqual((await open.query(GET, [a.session, p.provider])).rows[0].t, a.grant.access_token);
    assert.strictEqual((await open.query(GET, [b.session, p.provider])).rows[0].t, b.access);

    // The engine opens the old refresh token and client secret and seals under the new key.
    const refreshed = await forced(r.session);
    assert.strictEqual(refreshed.refreshed, true, `the engine refreshed: ${JSON.stringify(refreshed)}`);
    assert.deepStrictEqual(await sealedUnder(ctx.pool, r.session, p.provider), { a: id1, r: id1 },
        'the engine sealed the refreshed tokens under the new key');
    const usage = (await ctx.pool.query('SELECT key_id FROM upstream_token.key_usage')).rows.map((x) => x.key_id);
    assert.ok(usage.includes(id1) && usage.includes(id0), `key_usage shows both keys: ${usage}`);

    // A fresh backend reads everything.
    const fresh = await connect();
    try {
        assert.strictEqual((await fresh.query(GET, [a.session, p.provider])).rows[0].t, a.grant.access_token);
        assert.strictEqual((await fresh.query(GET, [b.session, p.provider])).rows[0].t, b.access);
        assert.ok((await fresh.query(GET, [r.session, p.provider])).rows[0].t);
        assert.strictEqual((await fresh.query('SELECT upstream_token.current_key_id() AS k')).rows[0].k, id1);
    } finally { await fresh.end(); }

    // 3. Without previous_key_file: values under the old key are a clear error naming it.
    await setSystemGucs(ctx.pool, { 'upstream_token.previous_key_file': null });
    for (const [who, c] of [['open', open], ['fresh', await connect()]]) {
        try {
            const e = await sqlError(c.query(GET, [a.session, p.provider]), `${who}: a value under the old key`);
            assert.strictEqual(e.code, 'UT009', `${who}: ${e.code} ${e.message}`);
            assert.match(e.message, /is sealed under a key that is not configured/, `${who}: ${e.message}`);
            assert.ok((e.detail || '').includes(`names key ${id0}`) && e.detail.includes(`holds key ${id1}`),
                `${who}: the error names the key ids (${id0}, configured ${id1}): ${e.detail}`);
            assert.ok(!e.message.includes(original.trim()) && !(e.detail || '').includes(original.trim()));
            assert.match(e.hint || '', /previous_key_file/, `${who}: the hint says what to do`);
            assert.strictEqual((await c.query(GET, [b.session, p.provider])).rows[0].t, b.access,
                `${who}: values under the new key still open`);
        } finally { if (who === 'fresh') await c.end(); }
    }
});

// The configured key file's path, and a new key written next to it (owned like it, mode 0600).
async function newKeyFile(ctx, suffix) {
    const keyPath = (await ctx.pool.query("SELECT pg_catalog.current_setting('upstream_token.key_file') AS v")).rows[0].v;
    const st = fs.statSync(keyPath);
    const nextPath = `${keyPath}.${suffix}`;
    const newHex = crypto.randomBytes(32).toString('hex');
    fs.writeFileSync(nextPath, `${newHex}\n`, { mode: 0o600 });
    fs.chownSync(nextPath, st.uid, st.gid);
    return { keyPath, nextPath, newHex };
}

// A statement that began before a reload keeps the settings it started with, while the engine
// (which reloads between passes) already seals under the new key: a caller waiting on a refresh
// through a rotation must still read the answer (it gave UT009 in the chaos soak, seed 68183903,
// and UT008 once the old key file was gone, seed 11).
test('a caller waiting on a refresh while key_file changes reads the answer sealed under the new key', async (t) => {
    const ctx = await setup({ poolSize: 4 });
    const { keyPath, nextPath, newHex } = await newKeyFile(ctx, 'next');
    const waiter = await connect();
    const admin = await connect();  // outlives ctx.pool, which ctx.close() ends
    const movedPath = `${keyPath}.moved`;
    t.after(async () => {
        await waiter.end();
        await ctx.close();  // drops this test's provider and tokens before the old key returns
        if (fs.existsSync(movedPath)) fs.renameSync(movedPath, keyPath);
        await setSystemGucs(admin, { 'upstream_token.key_file': null, 'upstream_token.previous_key_file': null });
        await admin.end();
        fs.rmSync(nextPath, { force: true });
    });
    const id0 = keyId(fs.readFileSync(keyPath, 'utf8'));
    const id1 = keyId(newHex);

    const p = await ctx.provider();
    await ctx.fault({ match: { client_id: p.clientId }, action: { delay_ms: 4000 }, count: 1 });
    const r = await storeLogin(ctx, p, { expiresIn: 0 });  // expired: the engine refreshes it now
    const wpid = (await waiter.query('SELECT pg_catalog.pg_backend_pid() AS p')).rows[0].p;
    const answer = waiter.query(GET, [r.session, p.provider]).then((x) => ({ t: x.rows[0].t }), (e) => ({ e }));
    await waitFor(async () => (await ctx.stats()).in_flight > 0 && (await ctx.pool.query(
        "SELECT 1 FROM pg_catalog.pg_stat_activity WHERE pid = $1 AND state = 'active'", [wpid])).rowCount === 1,
    { what: 'the refresh at the provider and the caller waiting on it' });
    assert.deepStrictEqual(await sealedUnder(ctx.pool, r.session, p.provider), { a: id0, r: id0 });

    // The operator's rotation (docs/security.md): previous_key_file = the old file, key_file = a
    // new one; then, rotate_key done, previous_key_file reset and the old file removed. All of it
    // while the caller waits: its settings and key files are those of before.
    await setSystemGucs(ctx.pool, { 'upstream_token.previous_key_file': keyPath, 'upstream_token.key_file': nextPath });
    await setSystemGucs(admin, { 'upstream_token.previous_key_file': null });
    fs.renameSync(keyPath, movedPath);
    const got = await answer;
    assert.ok(!got.e, `the waiting caller got ${got.e && got.e.code} ${got.e && got.e.message}`);
    assert.ok(got.t && got.t !== r.grant.access_token, 'the waiting caller got the refreshed access token');
    assert.deepStrictEqual(await sealedUnder(ctx.pool, r.session, p.provider), { a: id1, r: id1 },
        'the engine sealed the answer under the new key while the caller waited (the case under test)');
    assert.strictEqual((await waiter.query(GET, [r.session, p.provider])).rows[0].t, got.t);
});

// A value sealed under the old key by a transaction that began before the key changed may be
// committed after rotate_key's last batch looked (the chaos soak, seed 61046395: a reader got
// UT009 once previous_key_file was reset). rotate_key waits for every transaction running at
// its end, then looks again: it returns only once nothing under the old key can still appear.
test('rotate_key waits for a transaction that sealed under the old key, then re-seals its value', async (t) => {
    const ctx = await setup({ poolSize: 4 });
    const { keyPath, nextPath, newHex } = await newKeyFile(ctx, 'rotated');
    const writer = await connect();
    const rotator = await connect();
    const admin = await connect();
    t.after(async () => {
        await writer.query('ROLLBACK').catch(() => {});
        await writer.end();
        await rotator.end();
        await ctx.close();
        await setSystemGucs(admin, { 'upstream_token.key_file': null, 'upstream_token.previous_key_file': null });
        await admin.end();
        fs.rmSync(nextPath, { force: true });
    });
    const id0 = keyId(fs.readFileSync(keyPath, 'utf8'));
    const id1 = keyId(newHex);
    const p = await ctx.provider();
    const session = unique('late');

    await writer.query('BEGIN');
    await writer.query("SELECT upstream_token.store_upstream_token($1, $2, 'late-access', 'late-refresh', 3600)",
        [session, p.provider]);  // sealed under the old key, not committed yet
    await setSystemGucs(ctx.pool, { 'upstream_token.previous_key_file': keyPath, 'upstream_token.key_file': nextPath });
    const rpid = (await rotator.query('SELECT pg_catalog.pg_backend_pid() AS p')).rows[0].p;
    let done = false;
    const rotation = rotator.query('CALL upstream_token.rotate_key()').then(() => { done = true; });
    await waitFor(async () => (await ctx.pool.query(
        "SELECT 1 FROM pg_catalog.pg_stat_activity WHERE pid = $1 AND wait_event = 'virtualxid'", [rpid])).rowCount === 1,
    { what: 'rotate_key to wait for the transaction that began before it' });
    assert.strictEqual(done, false, 'rotate_key has not returned while that transaction is open');
    await writer.query('COMMIT');
    await rotation;
    const usage = (await ctx.pool.query('SELECT key_id FROM upstream_token.key_usage ORDER BY 1')).rows.map((r) => r.key_id);
    assert.deepStrictEqual(usage, [id1], `only the new key once rotate_key returned (old ${id0}): ${usage}`);
    assert.deepStrictEqual(await sealedUnder(ctx.pool, session, p.provider), { a: id1, r: id1 });
    await setSystemGucs(ctx.pool, { 'upstream_token.previous_key_file': null });
    assert.strictEqual((await ctx.pool.query(GET, [session, p.provider])).rows[0].t, 'late-access');
});
