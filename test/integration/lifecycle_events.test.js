'use strict';
// NOTIFY on channel upstream_token_events: a listening client receives `refreshed`,
// `reauth_required` (provider says invalid_grant), `invalid_binding` (refreshed ID token for
// another subject) and `expired` (refresh token past its lifetime). Each payload is JSON with
// exactly {session, provider, event}, carries no token or secret, and arrives only once the
// change it announces is committed (it is sent in the same transaction).
const test = require('node:test');
const assert = require('node:assert');
const { setup, connect, waitFor, unique, storeMany } = require('./harness.js');

test('events: refreshed, reauth_required, invalid_binding, expired', async (t) => {
    const t0 = Date.now();
    const ctx = await setup({ poolSize: 6 });
    t.after(() => ctx.close());
    const p = await ctx.provider({ accessTtl: 3600 });

    // Every notification on the channel, with the row's state read when it arrived.
    const listener = await connect();
    t.after(() => listener.end());
    const received = [];
    listener.on('notification', (n) => {
        const entry = { channel: n.channel, payload: n.payload, state: null };
        received.push(entry);
        let ev;
        try { ev = JSON.parse(n.payload); } catch { return; }
        ctx.pool.query('SELECT status, generation FROM upstream_token.token_status WHERE session = $1 AND provider = $2',
            [ev.session, ev.provider]).then((r) => { entry.state = r.rows[0] || 'absent'; }, (e) => { entry.state = e.message; });
    });
    await listener.query('LISTEN upstream_token_events');

    const { grants } = await ctx.idp.client.admin('POST', '/admin/grants',
        { client_id: p.clientId, subject: unique('user'), count: 4 });
    const [gRefreshed, gReauth, gBinding, gExpired] = grants;
    await ctx.fault({ match: { grant_id: gReauth.grant_id }, action: { oauth_error: 'invalid_grant' } });
    await ctx.fault({ match: { grant_id: gBinding.grant_id }, action: { id_token_claims: { sub: 'someone-else' } } });
    // A store row for a minted grant.
    const row = (g, name, expiresIn, refreshExpiresIn) => ({
        session: unique(name), access: g.access_token, refresh: g.refresh_token, idToken: g.id_token,
        expiresIn, refreshExpiresIn });
    const sRefreshed = row(gRefreshed, 'ev-refreshed', 0);
    const sReauth = row(gReauth, 'ev-reauth', 0);
    const sBinding = row(gBinding, 'ev-binding', 0);
    const sExpired = row(gExpired, 'ev-expired', 3600, 1);
    await storeMany(ctx.pool, p.provider, [sRefreshed, sReauth, sBinding, sExpired]);

    // The three due tokens: the outcome callers see.
    // get_upstream_token as {ok, token} or {ok: false, code}.
    const get = async (s) => {
        try {
            const r = await ctx.pool.query('SELECT upstream_token.get_upstream_token($1, $2) AS t', [s.session, p.provider]);
            return { ok: true, token: r.rows[0].t };
        } catch (e) { return { ok: false, code: e.code }; }
    };
    const refreshed = await get(sRefreshed);
    assert.ok(refreshed.ok && refreshed.token !== sRefreshed.access, 'refreshed token served');
    assert.deepStrictEqual(await get(sReauth), { ok: false, code: 'UT004' });
    assert.deepStrictEqual(await get(sBinding), { ok: false, code: 'UT005' });

    // The refresh token of the fourth passes its end; a refresh attempt finds it expired.
    await waitFor(async () => (await ctx.pool.query(
        'SELECT refresh_expires_at <= now() AS over FROM upstream_token.token_status WHERE session = $1',
        [sExpired.session])).rows[0].over, { timeoutMs: 5000, what: 'the refresh token to pass its lifetime' });
    const forced = (await ctx.pool.query(
        'SELECT refreshed, sqlstate FROM upstream_token.refresh_upstream_token($1, $2)', [sExpired.session, p.provider])).rows[0];
    assert.deepStrictEqual(forced, { refreshed: false, sqlstate: 'UT004' });

    const ours = new Map([[sRefreshed.session, 'refreshed'], [sReauth.session, 'reauth_required'],
        [sBinding.session, 'invalid_binding'], [sExpired.session, 'expired']]);
    // The notifications about this test's sessions (and any payload that is not JSON).
    const mine = () => received.filter((e) => {
        try { return ours.has(JSON.parse(e.payload).session); } catch { return true; }
    });
    await waitFor(() => new Set(mine().map((e) => JSON.parse(e.payload).event)).size >= 4 && mine().every((e) => e.state !== null),
        { timeoutMs: 10000, what: 'four events and the row state at each' });

    const wantStatus = { refreshed: 'active', reauth_required: 'reauth_required',
        invalid_binding: 'invalid_binding', expired: 'expired' };
    const secrets = [p.secret, refreshed.token, ...grants.flatMap((g) => [g.access_token, g.refresh_token, g.id_token])];
    for (const e of mine()) {
        assert.strictEqual(e.channel, 'upstream_token_events');
        const ev = JSON.parse(e.payload);
        assert.deepStrictEqual(Object.keys(ev).sort(), ['event', 'provider', 'session'], 'exactly three keys');
        assert.strictEqual(ev.provider, p.provider);
        for (const s of secrets) if (s) assert.ok(!e.payload.includes(s), 'no token or secret in the payload');
        // Sent in the transaction that made the change: visible once the event is delivered.
        if (ev.event === 'refreshed') {
            assert.ok(Number(e.state.generation) >= 2, 'the refresh is committed when its event arrives');
        } else {
            assert.strictEqual(e.state.status, wantStatus[ev.event], `row state when ${ev.event} arrived`);
        }
    }
    // Per session, in order. The binding check runs after the new tokens are committed (I3),
    // so that session may first announce `refreshed`, then `invalid_binding`.
    // The events of one session, in arrival order.
    const bySession = (s) => mine().map((e) => JSON.parse(e.payload)).filter((e) => e.session === s).map((e) => e.event);
    assert.deepStrictEqual(bySession(sRefreshed.session), ['refreshed']);
    assert.deepStrictEqual(bySession(sReauth.session), ['reauth_required']);
    const binding = bySession(sBinding.session);
    assert.ok(['invalid_binding', 'refreshed,invalid_binding'].includes(binding.join(',')), `binding events: ${binding}`);
    assert.deepStrictEqual(bySession(sExpired.session), ['expired']);
    t.diagnostic(`${received.length} notifications on the channel, ${mine().length} for this test's sessions (binding: ${binding.join(' then ')}); ${Date.now() - t0} ms`);
});
