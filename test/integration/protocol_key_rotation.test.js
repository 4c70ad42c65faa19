'use strict';
// Online key rotation with 10,000 stored tokens while 8 clients call get_upstream_token
// without pause (fresh tokens: no network), a ninth keeps forcing real refreshes and a
// revocation waits in the queue (its endpoint is down): the
// documented procedure (new key file, previous_key_file = old, key_file = new, reload,
// CALL rotate_key()) causes no error and no wrong value in any client before, during or after;
// afterwards key_usage shows only current_key_id(), the old key can be removed, and all 10,000
// values, the provider's client secret and the queued revocation still open. The original key is restored at the end
// (this test's rows are dropped first; anything else is rotated back).
const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const path = require('node:path');
const crypto = require('node:crypto');
const { execFileSync } = require('node:child_process');
const {
    setup, unique, storeMany, storeLogin, connect, waitFor, introspector, providerWith, revocationQueue,
} = require('./harness.js');

const N = 10000;
const READERS = 8;
const GET = 'SELECT upstream_token.get_upstream_token($1, $2) AS t';

let ctx;
test.before(async () => { ctx = await setup({ poolSize: 6 }); });
test.after(async () => { await ctx.close(); });

// Sets (string) or resets (null) the key GUCs with ALTER SYSTEM, reloads, and waits until a
// new session sees `expect` (key_file's reset value comes from postgresql.conf, not boot_val).
async function setKeyGucs(changes, expect) {
    for (const [name, value] of Object.entries(changes)) {
        if (value === null) await ctx.pool.query(`ALTER SYSTEM RESET ${name}`);
        else await ctx.pool.query(`ALTER SYSTEM SET ${name} = '${value.replace(/'/g, "''")}'`);
    }
    await ctx.pool.query('SELECT pg_reload_conf()');
    await waitFor(async () => {
        const c = await connect();
        try {
            for (const [name, want] of Object.entries(expect)) {
                if ((await c.query('SELECT current_setting($1) AS v', [name])).rows[0].v !== want) return false;
            }
            return true;
        } finally { await c.end(); }
    }, { what: `key settings ${JSON.stringify(expect)}` });
}

// The key ids that seal stored values, with counts.
async function keyUsage() {
    const r = await ctx.pool.query('SELECT key_id, ciphertexts::int AS n FROM upstream_token.key_usage ORDER BY key_id');
    return r.rows;
}

// CALL rotate_key() on a connection of its own (it commits between batches).
async function rotate() {
    const c = await connect();
    try {
        await c.query('CALL upstream_token.rotate_key()');
    } finally { await c.end(); }
}

// One client: gets random sessions until told to stop, comparing every value; counts per phase.
async function reader(id, rows, provider, state, out) {
    const c = await connect();
    try {
        while (!state.stop) {
            const i = crypto.randomInt(rows.length);
            const phase = state.phase;
            try {
                const t = (await c.query(GET, [rows[i].session, provider])).rows[0].t;
                if (t !== rows[i].access) out.mismatches.push(`${id}: session ${i} in phase ${phase}`);
            } catch (e) {
                out.errors.push(`${id} (${phase}): ${e.code} ${e.message}`);
            }
            out.counts[id][phase] = (out.counts[id][phase] || 0) + 1;
        }
    } finally { await c.end(); }
}

// A client forcing real refreshes of a few logins in turn (rows being refreshed are skipped by
// the rotation and revisited); counts outcomes.
async function refresher(provider, sessions, state, out) {
    const c = await connect();
    try {
        for (let i = 0; !state.stop; i++) {
            const r = (await c.query('SELECT * FROM upstream_token.refresh_upstream_token($1, $2)',
                [sessions[i % sessions.length], provider])).rows[0];
            if (r.refreshed) out.refreshed[state.phase] = (out.refreshed[state.phase] || 0) + 1;
            else out.errors.push(`refresher (${state.phase}): ${r.sqlstate} ${r.error}`);
        }
    } finally { await c.end(); }
}

test('rotate_key under load: no client error, only the new key left, old key removable, every value intact', async (t) => {
    const clusterDir = process.env.UT_CLUSTER_DIR;
    assert.ok(clusterDir, 'UT_CLUSTER_DIR is set (scripts/cluster.sh env)');
    const oldPath = (await ctx.pool.query("SELECT current_setting('upstream_token.key_file') AS v")).rows[0].v;
    const oldId = (await ctx.pool.query('SELECT upstream_token.current_key_id() AS k')).rows[0].k;
    const newPath = path.join(clusterDir, `key-rotated-${process.pid}`);

    const p = await providerWith(ctx, {
        args: { refresh_threshold: '1 second', revocation_endpoint: `${ctx.idp.url}/revoke`,
            authorization_endpoint: `${ctx.idp.url}/authorize` },
    });
    let dropped = false;
    // Restores the original key: drop this test's rows, rotate anything else back, forget NEW.
    t.after(async () => {
        await ctx.clearFaults();
        if (!dropped) await ctx.pool.query('SELECT upstream_token.drop_provider($1, cascade => true)', [p.provider]).catch(() => {});
        const cur = (await ctx.pool.query("SELECT current_setting('upstream_token.key_file') AS v")).rows[0].v;
        if (cur !== oldPath) {
            await setKeyGucs({ 'upstream_token.previous_key_file': cur, 'upstream_token.key_file': null },
                { 'upstream_token.previous_key_file': cur, 'upstream_token.key_file': oldPath });
            await rotate();
        }
        await setKeyGucs({ 'upstream_token.previous_key_file': null }, { 'upstream_token.previous_key_file': '' });
        fs.rmSync(newPath, { force: true });
    });

    const rows = Array.from({ length: N }, (_, i) => ({
        session: `${unique('rot')}-${i}`, access: crypto.randomBytes(24).toString('base64url'),
        refresh: crypto.randomBytes(24).toString('base64url'), expiresIn: 86400,
    }));
    for (let i = 0; i < N; i += 2500) await storeMany(ctx.pool, p.provider, rows.slice(i, i + 2500));
    const logins = [];
    for (let i = 0; i < 3; i++) logins.push(await storeLogin(ctx, p, { expiresIn: 86400 }));
    // A revocation that cannot be delivered yet: its ciphertext must survive the rotation too.
    const victim = await storeLogin(ctx, p, { expiresIn: 86400 });
    const down = await ctx.fault({ match: { client_id: p.clientId, endpoint: 'revoke' }, action: { status: 503 } });
    await ctx.pool.query('SELECT upstream_token.revoke_upstream_token($1, $2)', [victim.session, p.provider]);
    await waitFor(async () => (await revocationQueue(ctx.pool, p.provider)).some((q) => q.attempts >= 1),
        { timeoutMs: 10000, what: 'a failed revocation attempt' });
    // A login under way (sealed PKCE verifier and nonce) and a cached client token.
    await ctx.pool.query('SELECT upstream_token.begin_login($1, $2, $3, $4)',
        [unique('rot-login'), p.provider, 'https://app.example/cb', 'openid']);
    const clientToken = (await ctx.pool.query('SELECT upstream_token.get_client_token($1, $2) AS t',
        [p.provider, 'rotation'])).rows[0].t;
    assert.deepStrictEqual((await keyUsage()).map((r) => r.key_id), [oldId], 'everything under the old key');

    const state = { phase: 'before', stop: false };
    const out = { errors: [], mismatches: [], counts: Array.from({ length: READERS }, () => ({})), refreshed: {} };
    const loops = [
        ...Array.from({ length: READERS }, (_, id) => reader(id, rows, p.provider, state, out)),
        refresher(p.provider, logins.map((l) => l.session), state, out),
    ];
    const progressed = (phase, n) => waitFor(() => out.counts.every((c) => (c[phase] || 0) >= n),
        { timeoutMs: 20000, what: `every client to do ${n} gets in phase ${phase}` });
    let rotationError = null;
    try {
        await progressed('before', 100);

        // The documented procedure.
        execFileSync('bash', ['-c', `umask 077; openssl rand -hex 32 > '${newPath}'; chown postgres:postgres '${newPath}'; chmod 600 '${newPath}'`]);
        await setKeyGucs({ 'upstream_token.previous_key_file': oldPath, 'upstream_token.key_file': newPath },
            { 'upstream_token.previous_key_file': oldPath, 'upstream_token.key_file': newPath });
        state.phase = 'during';
        await rotate().catch((e) => { rotationError = e; });
        state.phase = 'after';
        await progressed('after', 100);
    } finally {
        state.stop = true;
        await Promise.all(loops);
    }
    assert.strictEqual(rotationError, null, `rotate_key failed: ${rotationError && rotationError.message}`);
    assert.deepStrictEqual(out.errors.slice(0, 5), [], `${out.errors.length} client errors`);
    assert.deepStrictEqual(out.mismatches.slice(0, 5), [], `${out.mismatches.length} wrong values`);
    const total = (phase) => out.counts.reduce((s, c) => s + (c[phase] || 0), 0);
    const during = total('during');
    t.diagnostic(`gets before/during/after: ${total('before')}/${during}/${total('after')}; ` +
        `forced refreshes: ${JSON.stringify(out.refreshed)}`);
    assert.ok(during > 0, 'clients were reading while rotate_key ran');
    assert.ok((out.refreshed.before || 0) + (out.refreshed.during || 0) + (out.refreshed.after || 0) > 0, 'real refreshes ran');

    const newId = (await ctx.pool.query('SELECT upstream_token.current_key_id() AS k')).rows[0].k;
    assert.notStrictEqual(newId, oldId);
    assert.deepStrictEqual((await keyUsage()).map((r) => r.key_id), [newId], 'only the new key is in use');

    // The old key can go: every value still opens.
    await setKeyGucs({ 'upstream_token.previous_key_file': null }, { 'upstream_token.previous_key_file': '' });
    const c = await connect();
    try {
        const r = await c.query(
            'SELECT x.s AS session, upstream_token.get_upstream_token(x.s, $1) AS t FROM unnest($2::text[]) AS x(s)',
            [p.provider, rows.map((x) => x.session)]);
        assert.strictEqual(r.rows.length, N);
        const want = new Map(rows.map((x) => [x.session, x.access]));
        const wrong = r.rows.filter((x) => want.get(x.session) !== x.t).length;
        assert.strictEqual(wrong, 0, `${wrong} of ${N} values differ after removing the old key`);
        assert.strictEqual((await c.query('SELECT upstream_token.get_client_token($1, $2) AS t',
            [p.provider, 'rotation'])).rows[0].t, clientToken, 'the cached client token opens');
        const resealed = await c.query(
            `SELECT count(*)::int AS n FROM upstream_token.login
              WHERE provider = $1 AND substring(code_verifier FROM 2 FOR 4) = decode($2, 'hex')
                AND substring(nonce FROM 2 FOR 4) = decode($2, 'hex')`, [p.provider, newId]);
        assert.strictEqual(resealed.rows[0].n, 1, 'the pending login is sealed under the new key');
        // Client secret and refresh tokens too: a real refresh of each login, served token active.
        const active = await introspector(ctx);
        for (const l of logins) {
            const f = (await c.query('SELECT * FROM upstream_token.refresh_upstream_token($1, $2)', [l.session, p.provider])).rows[0];
            assert.strictEqual(f.refreshed, true, `refresh after rotation: ${f.sqlstate} ${f.error}`);
            const tok = (await c.query(GET, [l.session, p.provider])).rows[0].t;
            assert.strictEqual((await active(tok)).active, true);
            const g = await ctx.grant(l.grant.grant_id);
            assert.strictEqual(g.reuse_detected, 0, 'no refresh token was lost or replayed');
        }
    } finally { await c.end(); }
    assert.strictEqual((await revocationQueue(ctx.pool, p.provider)).length, 1, 'the revocation is still queued');
    await ctx.idp.client.admin('DELETE', `/admin/faults/${down.fault_id}`);
    await waitFor(async () => (await revocationQueue(ctx.pool, p.provider)).length === 0,
        { timeoutMs: 30000, intervalMs: 200, what: 'the queued revocation to be delivered under the new key' });
    assert.strictEqual((await ctx.grant(victim.grant.grant_id)).revoked, true);

    // Drop this test's rows before the original key comes back (t.after restores it).
    await ctx.pool.query('SELECT upstream_token.drop_provider($1, cascade => true)', [p.provider]);
    dropped = true;
});
