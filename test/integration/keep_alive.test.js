'use strict';
// Refresh-token keep-alive: a provider whose refresh tokens die after an idle lifetime (the test
// IdP's refresh_token_idle_ttl) kills a session nobody reads. With keep_alive the engine
// refreshes such a session before its refresh token idles out, though its access token is far
// from expiry; without it the same session dies. And the refresh_expiring event: a refresh
// token's stated end is announced once its warning window has opened.
const test = require('node:test');
const assert = require('node:assert');
const { setup, unique, storeLogin, listenEvents, waitFor, sleep } = require('./harness.js');

const IDLE_S = 3;
const FORCE = 'SELECT refreshed FROM upstream_token.refresh_upstream_token($1, $2)';

// A provider for an IdP client whose refresh tokens idle out after IDLE_S seconds.
async function idleProvider(ctx, keepAlive) {
    const clientId = unique('idle');
    const secret = `s-${unique('s')}`;
    await ctx.idp.client.admin('POST', '/admin/clients', {
        client_id: clientId, client_secret: secret, access_ttl: 3600, refresh_token_idle_ttl: IDLE_S,
    });
    const provider = unique('ka').replace(/[^A-Za-z0-9_.:-]/g, '_');
    await ctx.pool.query(
        `SELECT upstream_token.register_provider($1, $2, $3, $4, refresh_token_idle_ttl => $5::interval,
                keep_alive => $6)`,
        [provider, `${ctx.idp.url}/token`, clientId, secret, `${IDLE_S} seconds`, keepAlive]);
    return { provider, clientId, secret };
}

test(`keep_alive keeps an unread session alive across 5x the provider's idle lifetime (${IDLE_S} s)`, async (t) => {
    const ctx = await setup({ poolSize: 4 });
    const providers = [];
    t.after(async () => {
        for (const p of providers) {
            await ctx.pool.query('SELECT upstream_token.drop_provider($1, cascade => true)', [p.provider]).catch(() => {});
        }
        await ctx.close();
    });
    const kept = await idleProvider(ctx, true);
    const idle = await idleProvider(ctx, false);
    providers.push(kept, idle);
    const a = await storeLogin(ctx, kept, { expiresIn: 3600 });
    const b = await storeLogin(ctx, idle, { expiresIn: 3600 });
    const t0 = Date.now();
    // token_status shows the keep-alive refresh, before the idle lifetime ends; the other
    // session's next refresh is its access token's, an hour away.
    const next = async (session, provider) => new Date((await ctx.pool.query(
        'SELECT next_refresh_at FROM upstream_token.token_status WHERE session = $1 AND provider = $2',
        [session, provider])).rows[0].next_refresh_at) - Date.now();
    assert.ok(await next(a.session, kept.provider) <= IDLE_S * 1000 - 500,
        'the kept session is due before its refresh token would idle out');
    assert.ok(await next(b.session, idle.provider) > 3000 * 1000, 'the other one when its access token is due');

    // Nobody reads either session for 5 idle lifetimes; the kept one's grant stays usable the
    // whole time (checked all along, not only at the end).
    while (Date.now() - t0 < 5 * IDLE_S * 1000) {
        const g = await ctx.grant(a.grant.grant_id);
        assert.strictEqual(g.idle_expired, false, `the kept session's refresh token idled out after ${Date.now() - t0} ms`);
        assert.strictEqual(g.active, true);
        await sleep(200);
    }
    const g = await ctx.grant(a.grant.grant_id);
    assert.ok(g.rotations >= 5, `refreshed at least once per idle lifetime: ${g.rotations} refreshes in ${Date.now() - t0} ms`);
    assert.ok(g.rotations <= 5 * 5 + 2, `not in a loop: ${g.rotations} refreshes`);
    assert.strictEqual(g.reuse_detected, 0);
    assert.strictEqual((await ctx.pool.query(FORCE, [a.session, kept.provider])).rows[0].refreshed, true,
        'the kept session still refreshes at the end');

    // The same session without keep_alive died at the provider: the engine had no reason to
    // refresh it (its access token lives an hour), and the provider refuses the idle token.
    const dead = await ctx.grant(b.grant.grant_id);
    assert.strictEqual(dead.idle_expired, true, 'without keep_alive the refresh token idled out');
    assert.strictEqual(dead.rotations, 0);
    const forced = (await ctx.pool.query('SELECT refreshed, sqlstate FROM upstream_token.refresh_upstream_token($1, $2)',
        [b.session, idle.provider])).rows[0];
    assert.deepStrictEqual(forced, { refreshed: false, sqlstate: 'UT004' }, 'the provider refused the idle refresh token');
    const stats = await ctx.stats();
    assert.strictEqual(stats.reuse_detected, 0);
    assert.strictEqual(stats.revoked_grants, 0);
});

test('refresh_expiring: a stated end is announced once its window opens; a restated end or an estimate is not', async (t) => {
    const ctx = await setup({ poolSize: 4 });
    const listener = await listenEvents();
    t.after(async () => { await listener.close(); await ctx.close(); });
    const p = await ctx.provider();
    // All signed in 10 days ago (created_at moved back). The window is a tenth of the lifetime
    // the end was stated with (at most 7 days): an end stated 10 days ago and one day away is
    // inside it; the same end restated just now (a refresh that pushed it on) is not; one 60
    // days away is not; an estimated end (not stated) is never announced.
    const store = async (session, refreshExpiresIn, statedDaysAgo) => {
        await ctx.pool.query(`SELECT upstream_token.store_upstream_token($1, $2, 'a', 'r', 3600,
                              refresh_expires_in => $3)`, [session, p.provider, refreshExpiresIn]);
        await ctx.pool.query(`UPDATE upstream_token.token SET created_at = now() - interval '10 days',
                              refresh_expires_stated_at = now() - make_interval(days => $3)
                              WHERE session = $1 AND provider = $2`, [session, p.provider, statedDaysAgo]);
    };
    const soon = unique('soon');
    const restated = unique('restated');
    const later = unique('later');
    const estimated = unique('est');
    await store(soon, 86400, 10);
    await store(restated, 86400, 0);
    await store(later, 60 * 86400, 10);
    await store(estimated, null, 10);
    await ctx.pool.query(`UPDATE upstream_token.token SET refresh_expires_at = now() + interval '1 hour'
                          WHERE session = $1 AND provider = $2`, [estimated, p.provider]);

    // A new engine's first maintenance pass announces every window already open.
    const before = (await ctx.engine()).worker_pid;
    await ctx.pool.query('SELECT pg_catalog.pg_terminate_backend($1)', [before]);
    const mine = () => listener.events.filter((ev) => ev.provider === p.provider && ev.event === 'refresh_expiring');
    await waitFor(() => mine().length > 0, { timeoutMs: 30000, what: 'the refresh_expiring event' });
    await waitFor(async () => {
        const e = await ctx.engine();
        return e && e.ready && e.worker_pid !== before;
    }, { what: 'the new engine' });
    assert.deepStrictEqual(mine(), [{ session: soon, provider: p.provider, event: 'refresh_expiring' }],
        'only the stated end inside its window, and no secret in the payload');
});
