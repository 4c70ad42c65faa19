'use strict';
// The fault catalogue of the chaos soak. Each fault draws its parameters from its own seeded
// generator when the driver schedules it (so a seed replays the same schedule), runs for a
// bounded time, and returns its outcome for the event log. Server faults (restarts, signals,
// read-only, key rotation) run one at a time; the others overlap freely.

const fs = require('node:fs');
const path = require('node:path');
const { sleep, waitFor, connect, errorCode } = require('./lib.js');
const { expire, call } = require('./workload.js');
const {
    OUTSIDE_READ_ONLY, engineStatus, startedAt, waitEngine, idpFault, slowProvider, setReadOnly, lockRows, release,
    setKeyGuc, writeKey, chownToServer, rotateUntilDone, refreshUnderWay,
} = require('./ops.js');

// Since when received answers may have been held back without interruption up to `at`: the
// start of the chain of blocking faults (locks, read-only) active at `at` or ended less than
// 10 s before it, each linked to the next the same way (a held answer is retried and saved
// within a few seconds once nothing blocks it).
function heldSince(h, at) {
    const blocking = h.log.events.filter((e) => FAULTS[e.kind] && FAULTS[e.kind].blocking);
    let since = at;
    for (let changed = true; changed;) {
        changed = false;
        for (const e of blocking) {
            if (e.start_ms < since && (e.end_ms ?? Infinity) >= since - 10000) {
                since = e.start_ms;
                changed = true;
            }
        }
    }
    return since;
}

// ------------------------------------------------------------------ faults

// Restarts with `pg_ctl -m fast` (or SIGTERMs the engine) while exchanges are in flight.
async function orderlyStop(h, p, ev, how) {
    if (p.slow) await slowProvider(h, ev, p.slowMs, 4000);
    const e = await engineStatus(h);
    const idpIn = (await h.idp.client.admin('GET', '/admin/stats')).in_flight;
    const t0 = Date.now();
    if (how === 'restart') await h.cluster.restart();
    else process.kill(e.worker_pid, 'SIGTERM');
    const back = await waitEngine(h, e.worker_pid);
    return `${how === 'restart' ? 'server restarted (fast)' : 'engine SIGTERMed'}, new engine ready after ${Date.now() - t0} ms; ` +
        `in flight when stopped: engine ${e.in_flight}, provider ${idpIn}; new pid ${back.worker_pid}`;
}

const FAULTS = {
    fast_restart: {
        group: 'server', weight: 3,
        params: (r) => ({ slow: r.chance(0.7), slowMs: r.int(600, 1500) }),
        run: (h, p, ev) => orderlyStop(h, p, ev, 'restart'),
    },
    engine_sigterm: {
        group: 'server', weight: 3,
        params: (r) => ({ slow: r.chance(0.7), slowMs: r.int(600, 1500) }),
        run: (h, p, ev) => orderlyStop(h, p, ev, 'sigterm'),
    },
    engine_sigkill: {
        group: 'server', weight: 2,
        params: (r) => ({ slow: r.chance(0.5), slowMs: r.int(600, 1500) }),
        async run(h, p, ev) {
            if (p.slow) await slowProvider(h, ev, p.slowMs, 4000);
            let rec;
            await h.ledger.mutex.run(async () => {
                const e = await engineStatus(h);
                // A received answer may legitimately wait uncommitted behind held locks or a
                // read-only database, and a little after them (its next retry).
                const W = 2000 + (Date.now() - heldSince(h, Date.now()));
                const tSnap = Date.now();
                const stored = await h.ledger.stored();
                const idpIn = (await h.idp.client.admin('GET', '/admin/stats')).in_flight;
                process.kill(e.worker_pid, 'SIGKILL');
                const K = Date.now();
                const uncommitted = [];
                for (const t of h.ledger.live()) {
                    const s = stored.get(t.key);
                    if (s && s.info && s.info.used && !s.info.revoked && s.info.used_ms >= K - W) uncommitted.push(s.info.grant_id);
                }
                rec = { event: ev.id, K, tSnap, W, uncommitted, enginePid: e.worker_pid, engineInFlight: e.in_flight, idpInFlight: idpIn };
                h.kills.push(rec);
            });
            const back = await waitEngine(h, rec.enginePid);
            // Requests reaching the provider before the next engine existed were the killed one's.
            rec.nextStart = startedAt(back.worker_pid) ?? Date.now();
            return `engine pid ${rec.enginePid} killed; at that instant ${rec.uncommitted.length} rotations answered but not ` +
                `committed, engine in_flight ${rec.engineInFlight}, provider in_flight ${rec.idpInFlight}; ` +
                `server and engine back after ${Date.now() - rec.K} ms (pid ${back.worker_pid})`;
        },
    },
    terminate_waiters: {
        group: 'session', weight: 2,
        params: (r) => ({ n: r.int(4, 10), r: r.fork() }),
        async run(h, p, ev) {
            const toks = p.r.sample(h.ledger.live(), p.n);
            for (const t of toks) {  // the refresh takes a while, so its callers are waiting
                await idpFault(h, ev, { match: { grant_id: t.grantId }, action: { delay_ms: 1500 }, count: 1 });
            }
            await expire(h.sim, toks);
            const clients = [];
            for (const t of toks) clients.push(await connect({ application_name: 'chaos waiter' }));
            const calls = clients.map((c, i) => c.query('SELECT upstream_token.get_upstream_token($1, $2)', [toks[i].session, toks[i].provider])
                .then(() => 'ok', (e) => errorCode(e)));
            const pids = clients.map((c) => c.processID);
            await waitFor(async () => (await h.sys.query(
                "SELECT count(*)::int AS n FROM pg_stat_activity WHERE pid = ANY($1) AND wait_event_type = 'Extension'", [pids])).rows[0].n >= Math.ceil(pids.length / 2),
            { timeoutMs: 3000, intervalMs: 20, what: 'callers waiting for the engine' }).catch(() => {});
            const waiting = (await h.sys.query(
                "SELECT pid FROM pg_stat_activity WHERE pid = ANY($1) AND wait_event_type = 'Extension'", [pids])).rows.map((x) => x.pid);
            for (const pid of waiting) await h.sys.query('SELECT pg_catalog.pg_terminate_backend($1)', [pid]);
            const results = await Promise.all(calls);
            for (const c of clients) await c.end().catch(() => {});
            return `terminated ${waiting.length} of ${toks.length} callers while they waited for a refresh ` +
                `(answers: ${results.filter((x) => x === 'ok').length} ok, ${results.filter((x) => x !== 'ok').length} cut)`;
        },
    },
    row_lock: {
        group: 'session', weight: 3, blocking: true,
        params: (r) => ({ n: r.int(1, 25), holdMs: r.int(1000, 12000), r: r.fork() }),
        async run(h, p) {
            const { client, rows } = await lockRows(p.r.sample(h.ledger.live(), p.n));
            await sleep(p.holdMs);
            await release(client);
            return `held ${rows} token rows locked for ${p.holdMs} ms`;
        },
    },
    revocation_lock: {
        group: 'session', weight: 2, blocking: true,
        params: (r) => ({ holdMs: r.int(3000, 10000), r: r.fork() }),
        async run(h, p, ev) {
            // A revocation the provider refuses for a moment stays queued and is retried.
            const victims = p.r.sample([...h.ledger.liveSessions().keys()], 2);
            for (const pr of h.providers) {
                await idpFault(h, ev, { match: { client_id: pr.clientId, endpoint: 'revoke' }, action: { status: 503 }, until_ms: Date.now() + 2500 });
            }
            const done = [];
            for (const s of victims) done.push((await h.ledger.mutex.run(() => h.ledger.revoke(s))).what);
            await h.ledger.mutex.run(() => h.ledger.addSessions(victims.length, { expiresIn: () => h.settings.accessTtl }));
            await waitFor(async () => (await h.sys.query('SELECT count(*)::int AS n FROM upstream_token.revocation WHERE attempts >= 1')).rows[0].n > 0,
                { timeoutMs: 8000, what: 'a failed revocation attempt' }).catch(() => {});
            const c = await connect(OUTSIDE_READ_ONLY);
            let rows = 0;
            try {
                await c.query("SET lock_timeout = '3s'");
                await c.query('BEGIN');
                rows = (await c.query('SELECT id FROM upstream_token.revocation FOR UPDATE SKIP LOCKED')).rowCount;
                await sleep(p.holdMs);
            } finally { await release(c); }
            return `revoked ${victims.length} sessions (${done.join(', ')}), then held ${rows} queued revocation rows locked for ${p.holdMs} ms`;
        },
    },
    refresh_lock: {
        group: 'session', weight: 1, blocking: true,
        params: (r) => ({ n: r.int(10, 40), holdMs: r.int(2000, 8000), r: r.fork() }),
        async run(h, p) {
            const live = h.ledger.live();
            const toks = p.r.sample(live, p.n);
            const held = new Set(toks.map((t) => t.key));
            const c = await connect(OUTSIDE_READ_ONLY);
            try {
                // The documented way for another refresher to hold off the engine (docs/engine.md).
                await c.query('BEGIN');
                for (const t of toks) await c.query('SELECT upstream_token.lock_token($1, $2)', [t.provider, t.session]);
                await expire(h.sim, toks.slice(0, Math.ceil(toks.length / 2)));
                // Does an unrelated token still refresh at once?
                const other = live.find((t) => !held.has(t.key));
                const t0 = Date.now();
                await expire(h.sim, [other]);
                const code = await call(h.db, h.ledger, other, 'probe', h.outcomes);
                const probeMs = Date.now() - t0;
                await sleep(Math.max(0, p.holdMs - probeMs));
                return `a manual refresher held ${toks.length} token locks for ${p.holdMs} ms; an unrelated expired token ` +
                    `was served in ${probeMs} ms (${code || 'ok'})`;
            } finally { await release(c); }
        },
    },
    read_only: {
        group: 'server', weight: 2, blocking: true,
        params: (r) => ({ flips: Array.from({ length: r.int(1, 3) }, () => ({ on: r.chance(0.3) ? r.int(8000, 25000) : r.int(1000, 6000), off: r.int(300, 1500) })) }),
        async run(h, p) {
            try {
                for (const f of p.flips) {
                    await setReadOnly(h, true);
                    await sleep(f.on);
                    await setReadOnly(h, false);
                    await sleep(f.off);
                }
            } finally { await setReadOnly(h, false); }
            return `read-only ${p.flips.map((f) => `${f.on} ms`).join(', then ')}`;
        },
    },
    locked_then_read_only: {
        group: 'server', weight: 1, blocking: true,
        params: (r) => ({ n: r.int(15, 40), lockMs: r.int(7000, 11000), roMs: r.int(2000, 5000), r: r.fork() }),
        async run(h, p) {
            const { client, rows } = await lockRows(p.r.sample(h.ledger.live(), p.n));
            try {
                await sleep(p.lockMs);
                await setReadOnly(h, true);
                await release(client);
                await sleep(p.roMs);
            } finally {
                await release(client);
                await setReadOnly(h, false);
            }
            return `held ${rows} token rows for ${p.lockMs} ms; the database turned read-only before they were released, for ${p.roMs} ms`;
        },
    },
    relogin: {
        group: 'session', weight: 4,
        params: (r) => ({ n: r.int(1, 4), r: r.fork() }),
        async run(h, p, ev) {
            const done = [];
            for (const t of p.r.sample(h.ledger.live(), p.n)) {
                const sameGrant = p.r.chance(0.5);
                const racing = p.r.chance(0.5);
                const expiresIn = p.r.pick([0, 3, h.settings.accessTtl]);
                // Half of them while a refresh of the same token is under way at the provider
                // (the user signs in again while the engine refreshes in the background).
                const raced = racing ? await refreshUnderWay(h, ev, t) : false;
                const res = await h.ledger.mutex.run(() => h.ledger.relogin(t, { sameGrant, expiresIn }));
                done.push(`${t.session}/${t.provider}: ${res.what}${raced ? ' during a refresh' : ''}${res.ok ? '' : ' (not stored)'}`);
            }
            return done.join('; ');
        },
    },
    revoke: {
        group: 'session', weight: 2,
        params: (r) => ({ n: r.int(1, 2), r: r.fork() }),
        async run(h, p) {
            const victims = p.r.sample([...h.ledger.liveSessions().keys()], p.n);
            const done = [];
            for (const s of victims) done.push(`${s}: ${(await h.ledger.mutex.run(() => h.ledger.revoke(s))).what}`);
            const added = await h.ledger.mutex.run(() => h.ledger.addSessions(victims.length, { expiresIn: () => h.settings.accessTtl }));
            return `${done.join('; ')}; new sessions ${added.join(', ')}`;
        },
    },
    key_rotation: {
        group: 'server', weight: 2,
        params: (r) => ({ inPlace: r.chance(0.35) }),
        async run(h, p) {
            const ks = h.keyState;
            if (ks.pendingPrevious) {  // an earlier rotation could not finish: finish it first
                const res = await rotateUntilDone(h);
                if (!res.done) throw new Error(`the earlier rotation still cannot finish: key_usage ${JSON.stringify(res.usage)}`);
                await setKeyGuc(h, 'upstream_token.previous_key_file', null, '');
                fs.rmSync(ks.pendingPrevious, { force: true });
                ks.pendingPrevious = null;
                return 'finished the earlier rotation';
            }
            const n = ++ks.n;
            const old = ks.path;
            let previous;
            if (p.inPlace) {  // the old key is kept under another name, the file overwritten in place
                previous = path.join(h.cluster.dir, `key-previous-${n}`);
                fs.copyFileSync(old, previous);
                chownToServer(previous);
                await setKeyGuc(h, 'upstream_token.previous_key_file', previous, previous);
                h.keys.add(writeKey(old));
                await h.sys.query('SELECT pg_catalog.pg_reload_conf()');
            } else {           // docs/security.md: a new file, previous = old, key_file = new
                previous = old;
                const fresh = path.join(h.cluster.dir, `key-${n}`);
                h.keys.add(writeKey(fresh));
                await setKeyGuc(h, 'upstream_token.previous_key_file', old, old);
                await setKeyGuc(h, 'upstream_token.key_file', fresh, fresh);
                ks.path = fresh;
            }
            const t0 = Date.now();
            const res = await rotateUntilDone(h);
            if (!res.done) {
                ks.pendingPrevious = previous;  // the old key stays configured: nothing becomes unreadable
                throw new Error(`after ${res.tries} rotate_key runs key_usage still shows ${JSON.stringify(res.usage)}: ` +
                    'something seals under a key other than the configured one; the previous key stays set');
            }
            await setKeyGuc(h, 'upstream_token.previous_key_file', null, '');
            fs.rmSync(previous, { force: true });
            return `${p.inPlace ? 'key file overwritten in place' : 'new key file'}; rotate_key done in ${Date.now() - t0} ms ` +
                `(${res.tries} run${res.tries > 1 ? 's' : ''}); old key removed`;
        },
    },
};

// Provider faults: the rule, how widely it applies, and for how long (or how many answers).
const ODD_FIELDS = [{ expires_in: '' }, { expires_in: -5 }, { expires_in: '3600.0' }, { scope: 42 }, { expires_in: null },
    { token_type: 'bearer' }, { refresh_token_expires_in: 'soon' }, { x_vendor: { nested: [1, { a: null }] } }, { expires_in: 0 }];
const IDP_FAULTS = {
    idp_5xx: (r, h) => ({ action: { status: r.pick([500, 502, 503]), ...(r.chance(0.3) ? { retry_after: String(r.int(1, 2)) } : {}) }, endpoint: r.chance(0.2) ? 'revoke' : 'token', ms: r.int(1000, 6000) }),
    idp_429: (r) => ({ action: { status: 429, retry_after: String(r.int(1, 3)) }, ms: r.int(1000, 5000) }),
    idp_timeout: (r, h) => ({ action: { delay_ms: h.settings.requestTimeoutMs + 1000, drop: 'before' }, count: r.int(3, 20) }),
    idp_drop: (r) => ({ action: { drop: 'before' }, count: r.int(3, 20) }),
    idp_cut: (r) => ({ action: { cut_answer: true }, count: r.int(3, 20) }),
    idp_malformed: (r) => ({ action: { malformed_json: true }, count: r.int(3, 15) }),
    idp_odd_fields: (r) => ({ action: { patch_fields: r.pick(ODD_FIELDS) }, count: r.int(2, 8) }),
    idp_slow: (r, h) => ({ action: r.chance(0.5) ? { delay_ms: r.int(200, 800) } : { respond_delay_ms: r.int(200, 800) }, ms: r.int(2000, 8000) }),
};
const IDP_WEIGHTS = { idp_5xx: 2, idp_429: 2, idp_timeout: 2, idp_drop: 2, idp_cut: 2, idp_malformed: 1, idp_odd_fields: 3, idp_slow: 2 };

for (const [name, make] of Object.entries(IDP_FAULTS)) {
    FAULTS[name] = {
        group: 'idp', weight: IDP_WEIGHTS[name],
        params: (r, h) => ({ ...make(r, h), scope: r.pick(['all', 'client', 'grants']), r: r.fork() }),
        async run(h, p, ev) {
            const until = p.ms ? Date.now() + p.ms : undefined;
            let matches;
            if (p.scope === 'all') matches = [{}];
            else if (p.scope === 'client') matches = [{ client_id: p.r.pick(h.providers).clientId }];
            else matches = p.r.sample(h.ledger.live(), p.r.int(3, 15)).map((t) => ({ grant_id: t.grantId }));
            for (const m of matches) {
                const match = p.endpoint === 'revoke' ? { ...m, endpoint: 'revoke' } : m;
                const count = p.count ? (p.scope === 'grants' ? 1 : p.count) : undefined;
                await idpFault(h, ev, { match, action: p.action, ...(count ? { count } : {}), ...(until ? { until_ms: until } : {}) });
            }
            if (p.ms) await sleep(p.ms);
            return `${JSON.stringify(p.action)} at /${p.endpoint || 'token'} for ${p.scope === 'grants' ? `${matches.length} grants` : p.scope}` +
                (p.ms ? `, ${p.ms} ms` : `, ${p.scope === 'grants' ? 1 : p.count} answer(s) each`);
        },
    };
}

module.exports = { FAULTS, engineStatus, waitEngine, setReadOnly, heldSince };
