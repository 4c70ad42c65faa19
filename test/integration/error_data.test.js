'use strict';
// A PostgreSQL error caught in C++ (PgError) owns what it carries. It used to point into the
// memory context that was current when it was raised (SPI's, the transaction's), and the
// engine read it after aborting that transaction, which frees the context. Shown here: (1) the
// engine's save fails inside its transaction (a read-only database), the engine aborts, then
// logs the error: the log line carries PostgreSQL's message intact, and once writes are
// allowed again the token is saved; (2) an error raised by PostgreSQL inside a function keeps
// its SQLSTATE, message and context when the guard rethrows it to the caller.
const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const {
    setup, connect, waitFor, setSystemGucs, storeLogin, tokenStatus, sqlError,
} = require('./harness.js');

test('an engine error logged after its transaction aborted keeps its message', async (t) => {
    const ctx = await setup({ poolSize: 4 });
    t.after(async () => {
        await setSystemGucs(ctx.pool, { default_transaction_read_only: null }).catch(() => {});
        await ctx.close();
    });
    const p = await ctx.provider();
    const login = await storeLogin(ctx, p, { expiresIn: 3600 });
    const before = await tokenStatus(ctx.pool, login.session, p.provider);
    const logStart = fs.statSync(process.env.UT_SERVER_LOG).size;

    await setSystemGucs(ctx.pool, { default_transaction_read_only: 'on' });
    // The forced refresh reaches the provider; saving its answer fails in the engine's own
    // transaction, which the engine aborts before it logs the error.
    const c = await connect();
    t.after(() => c.end());
    await c.query("SET upstream_token.wait_timeout = '1s'");
    const forced = c.query('SELECT * FROM upstream_token.refresh_upstream_token($1, $2)', [login.session, p.provider])
        .catch((e) => e);
    const line = await waitFor(() => {
        const log = fs.readFileSync(process.env.UT_SERVER_LOG).subarray(logStart).toString('utf8');
        return log.split('\n').find((l) => /upstream_token engine: .*read-only transaction/.test(l));
    }, { timeoutMs: 20000, what: 'the engine to log the failed save' });
    assert.match(line, /upstream_token engine: [a-z ,()]+: cannot execute [A-Z]+ in a read-only transaction$/,
        `the message survives the abort intact: ${line}`);
    await forced;

    await setSystemGucs(ctx.pool, { default_transaction_read_only: null });
    const after = await waitFor(async () => {
        const s = await tokenStatus(ctx.pool, login.session, p.provider);
        return s.generation > before.generation ? s : null;
    }, { timeoutMs: 30000, what: 'the held answer to be saved once writes are allowed' });
    assert.strictEqual(after.status, 'active');
    const g = await ctx.grant(login.grant.grant_id);
    assert.strictEqual(g.revoked, false, 'the rotated token was saved, not lost');
});

test('a PostgreSQL error inside a function reaches the caller with its fields', async (t) => {
    const ctx = await setup({ poolSize: 2 });
    const holder = await connect();
    const c = await connect();
    t.after(async () => {
        await holder.end();
        await c.end();
        await ctx.close();
    });
    const p = await ctx.provider();
    const login = await storeLogin(ctx, p, { expiresIn: 3600 });
    await holder.query('BEGIN');
    await holder.query('SELECT 1 FROM upstream_token.token WHERE session = $1 FOR UPDATE', [login.session]);
    await c.query("SET lock_timeout = '100ms'");
    const e = await sqlError(c.query('SELECT upstream_token.store_upstream_token($1, $2, $3, $4, 60)',
        [login.session, p.provider, 'a', 'r']), 'a store behind a row lock');
    await holder.query('ROLLBACK');
    assert.strictEqual(e.code, '55P03');
    assert.strictEqual(e.message, 'canceling statement due to lock timeout');
    assert.match(e.where || '', /while locking tuple .* in relation "token"/, `its context: ${e.where}`);
    assert.strictEqual(e.severity, 'ERROR');
    assert.strictEqual(e.routine, 'ProcessInterrupts', 'raised where PostgreSQL raised it');
});
