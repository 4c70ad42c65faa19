'use strict';
// The end of the soak: everything back to normal, then the evidence (stored tokens opened and
// looked up at the provider, a forced refresh of every session, a storm as wide as the request
// table, the provider's grants and call log, the key usage, the server log) and the verdict.
//
// Accounting. A grant is LOST when, during its legitimate life (until the driver replaced it
// with a new login or revoked its session), the provider refused it (invalid_grant, reuse of a
// rotated token) or revoked it, or when at the end its session does not hold the provider's
// current token and refresh with it. A loss is attributable to a SIGKILL of the engine when
// the rotation whose answer never got saved was in flight at that kill: counted at the kill
// instant from the stored tokens (opened and looked up: rotated at the provider, not
// committed) plus the provider's rotations still under way; that count is the kill's budget.

const fs = require('node:fs');
const { sleep, waitFor, errorCode } = require('./lib.js');
const { engineStatus, waitEngine, setReadOnly, heldSince } = require('./faults.js');
const { storm } = require('./workload.js');

const TRANSIENT = new Set(['UT003', 'UT006', 'UT007', 'connection', '57P01', '57P02', '57P03']);
// Codes a caller may see under faults: transient, restarts, a driver-revoked session, and
// UT004 (a lost session, judged by the loss accounting, not here).
const ALLOWED = new Set([...TRANSIENT, 'UT004', 'UT001 (session revoked by the driver)']);

// Brings everything back to normal and gathers what the verdict needs.
async function collect(h) {
    const d = { notes: [] };
    await h.idp.client.admin('DELETE', '/admin/faults');
    await setReadOnly(h, false).catch((e) => d.notes.push(`read-only reset: ${e.message}`));
    d.engineBack = await waitEngine(h, 0, 60000).then(() => true, (e) => { d.notes.push(e.message); return false; });
    // Queued revocations are retried at once (the soak's time is short), and the engine woken.
    await h.sys.query('UPDATE upstream_token.revocation SET next_attempt_at = pg_catalog.now()').catch(() => {});
    await h.sys.query('SELECT upstream_token.wake_engine_at_commit()').catch(() => {});
    d.quiet = await waitFor(async () => {
        const e = await engineStatus(h);
        const s = await h.idp.client.admin('GET', '/admin/stats');
        const q = (await h.sys.query('SELECT count(*)::int AS n FROM upstream_token.revocation')).rows[0].n;
        return e.ready && e.in_flight === 0 && e.queued === 0 && s.in_flight === 0 && q === 0;
    }, { timeoutMs: 45000, intervalMs: 250, what: 'a quiet engine and an empty revocation queue' })
        .then(() => true, (e) => { d.notes.push(e.message); return false; });
    await sleep(2000);  // answers held for a busy row commit within a few hundred ms
    d.before = await settled(h);
    d.final = await finalRefresh(h);
    d.after = await settled(h);
    d.finalStorm = await finalStorm(h, d.after);
    const grants = [];
    for (const p of h.providers) grants.push(...(await h.idp.client.admin('GET', `/admin/grants?client_id=${p.clientId}`)).grants);
    d.grants = new Map(grants.map((g) => [g.grant_id, g]));
    d.calls = (await h.idp.client.admin('GET', '/admin/calls?since_ms=0&endpoint=all')).calls;
    d.idpStats = await h.idp.client.admin('GET', '/admin/stats');
    d.keyCurrent = (await h.sys.query('SELECT upstream_token.current_key_id() AS k')).rows[0].k;
    d.keyUsage = (await h.sys.query('SELECT key_id, ciphertexts::int AS n FROM upstream_token.key_usage ORDER BY 1')).rows;
    d.previousKey = (await h.sys.query("SELECT pg_catalog.current_setting('upstream_token.previous_key_file') AS v")).rows[0].v;
    d.keyIds = new Set([d.keyCurrent]);
    if (d.previousKey) d.keyIds.add(h.keys.add(fs.readFileSync(d.previousKey, 'utf8')));
    d.queue = (await h.sys.query('SELECT count(*)::int AS n FROM upstream_token.revocation')).rows[0].n;
    d.engine = await engineStatus(h);
    d.log = fs.readFileSync(process.env.UT_SERVER_LOG, 'utf8');
    return d;
}

// The stored tokens, looked up at the provider; a token the provider has rotated away is read
// again a little later, since the engine goes on refreshing (its save may be a moment behind
// the provider's answer). Stale means stale twice, 1.5 s apart.
async function settled(h) {
    const first = await h.ledger.stored();
    const stale = (m, k) => m.get(k) && m.get(k).info && m.get(k).info.used;
    if (![...first.keys()].some((k) => stale(first, k))) return first;
    await sleep(1500);
    const second = await h.ledger.stored();
    for (const [k, v] of second) if (stale(second, k) && !stale(first, k)) second.set(k, first.get(k));
    return second;
}

// Forces a refresh of every live token (transient failures retried a few times), within two
// minutes in all: a stalled engine makes every call wait its wait_timeout.
async function finalRefresh(h) {
    const live = h.ledger.live();
    const out = new Map();
    const deadline = Date.now() + 120000;
    let next = 0;
    const worker = async () => {
        while (next < live.length) {
            const t = live[next++];
            if (Date.now() > deadline) {
                out.set(t.key, 'not tried (2 minutes passed)');
                continue;
            }
            let code = null;
            for (let attempt = 1; attempt <= 3 && Date.now() < deadline; attempt++) {
                try {
                    const r = (await h.stormDb.query(
                        'SELECT refreshed, sqlstate FROM upstream_token.refresh_upstream_token($1, $2)', [t.session, t.provider])).rows[0];
                    code = r.refreshed ? null : (r.sqlstate || 'not refreshed');
                } catch (e) {
                    code = errorCode(e);
                }
                if (code === null || !TRANSIENT.has(code)) break;
                await sleep(1000);
            }
            out.set(t.key, code);
        }
    };
    await Promise.all(Array.from({ length: 16 }, worker));
    return out;
}

// A storm as wide as the request table: max_requests distinct healthy tokens made expired, one
// caller each, all at once. A leaked request slot or a stalled engine fails some of them.
async function finalStorm(h, after) {
    const healthy = h.ledger.live().filter((t) => {
        const s = after.get(t.key);
        return s && s.status === 'active' && s.info && !s.info.used && !s.info.revoked;
    });
    const toks = healthy.slice(0, h.settings.maxRequests);
    const res = await storm(h, toks, 1, 'final');
    return { ...res, codes: h.outcomes.src('final').codes };
}

// Seconds since the start, for messages.
function rel(h, ms) { return `+${((ms - h.t0) / 1000).toFixed(1)}s`; }

// Names the events that overlap [from, to], disruptive ones only.
function around(h, from, to) {
    const names = overlapping(h, from, to).filter((e) => !e.kind.startsWith('idp_')).map((e) => `${e.kind}#${e.id}`);
    return names.length ? names.join(', ') : 'no server or session fault';
}

// The events whose time overlaps [from, to].
function overlapping(h, from, to) {
    return h.log.events.filter((e) => e.start_ms <= to && (e.end_ms ?? Infinity) >= from);
}

const STOPS = new Set(['fast_restart', 'engine_sigterm', 'engine_sigkill']);
// Faults that keep a received answer from being committed, most telling first.
const BLOCKING = ['locked_then_read_only', 'read_only', 'revocation_lock', 'row_lock', 'refresh_lock', 'key_rotation'];

// How a grant lost its token: the token presented twice, {seq, first, second, R} with R the
// presentation that rotated, or {seq, first: R, second: null} when the row still holds the
// token R rotated away at the end. Usually R comes first and the old token comes back later;
// when a dead engine's request is handled late by the provider, the refused one came first.
function doubleUse(bads, calls) {
    const b = bads.find((x) => x.what === 'reuse' || x.staleSeq !== undefined);
    if (!b) return null;
    const seq = b.staleSeq ?? b.call.presented_seq;
    const R = calls.find((c) => c.presented_seq === seq && c.status === 200 && c.issued_seq != null);
    if (!R) return { seq, first: null, second: b.call || null, R: null };
    if (!b.call) return { seq, first: R, second: null, R };
    return R.t_ms <= b.call.t_ms ? { seq, first: R, second: b.call, R } : { seq, first: b.call, second: R, R };
}

// Why a grant was lost, as far as the provider's log and the ledger tell: {why, cause}, where
// cause names the fault most likely responsible (for the summary's tally).
function diagnose(h, d, lg, bads, calls) {
    let first = bads[0];
    const revoked = bads.find((b) => b.what === 'revoked');
    // A refusal answered while the grant was being revoked is explained by the revocation.
    if (first.what === 'invalid_grant' && revoked && revoked.t - first.t < 2000) first = revoked;
    const du = doubleUse(bads, calls);
    if (du) {
        const { R } = du;
        if (!R) return { why: `token #${du.seq} was rotated away without a rotation in the log`, cause: 'unknown' };
        const t1 = du.first.t_ms;
        const t2 = du.second ? du.second.t_ms : Date.now();
        const end = R.t_ms + (R.duration_ms || 0);
        const touched = R.fault_id ? h.faultIds.get(R.fault_id) : null;
        const stop = overlapping(h, t1 - 500, t2).find((e) => STOPS.has(e.kind) && e.start_ms >= t1 - 5000);
        const blockers = overlapping(h, R.t_ms - 100, end + 3000).filter((e) => BLOCKING.includes(e.kind));
        const blocking = blockers.sort((a, b) => BLOCKING.indexOf(a.kind) - BLOCKING.indexOf(b.kind))[0];
        // An answer held back by a blocking fault is the stop's loss only when the stop came
        // while it was held (during the fault or soon after); otherwise it was lost earlier.
        const heldUntilStop = stop && (end >= stop.start_ms - 2000 || heldSince(h, stop.start_ms) <= end + 2000);
        let cause;
        if (touched && touched.startsWith('idp_odd_fields')) cause = touched;
        else if (heldUntilStop) cause = `${stop.kind}#${stop.id}`;
        else if (blocking) cause = `${blocking.kind}#${blocking.id}`;
        else if (stop) cause = `${stop.kind}#${stop.id}`;
        else cause = touched || 'unknown';
        const rot = `rotation at ${rel(h, R.t_ms)} (answered in ${R.duration_ms} ms${R.client_gone ? ', after the engine had hung up' : ''}` +
            `${touched ? `, answer shaped by ${touched}` : ''})`;
        let why;
        if (!du.second) why = `${rot} never saved: the row still holds the old token at the end`;
        else if (du.first === R) why = `${rot} never saved; the old token came back at ${rel(h, t2)} and the grant was revoked`;
        else why = `token #${du.seq} sent at ${rel(h, t1)} (the provider handled it late${du.first.client_gone ? ', its sender gone' : ''}) and again at ${rel(h, t2)}: ${rot}, then the late one was reuse`;
        return { why: `${why}; around the answer: ${around(h, R.t_ms - 100, end + 3000)}${stop ? `; ${stop.kind}#${stop.id} at ${rel(h, stop.start_ms)}` : ''}`, cause };
    }
    if (first.what === 'revoked' || first.what === 'invalid_grant') {
        const tok = h.ledger.tokens.get(lg.key);
        const same = ((tok && tok.logins) || []).filter((l) => l.sameGrant && l.grantId === lg.grantId && l.t <= first.t);
        const rv = d.calls.find((c) => c.endpoint === 'revoke' && c.grant_id === lg.grantId && Math.abs(c.t_ms - first.t) < 2000);
        if (first.what === 'revoked') {
            return {
                why: `revoked at the provider at ${rel(h, first.t)}${rv ? ` by a /revoke (token #${rv.presented_seq})` : ''}` +
                    (same.length ? `, after a re-login that continued the grant at ${rel(h, same[same.length - 1].t)}` : '') +
                    `; around it: ${around(h, first.t - 3000, first.t)}`,
                cause: same.length ? 'orphan revocation after a same-grant re-login' : (rv ? 'revoked by the engine' : 'revoked'),
            };
        }
        return { why: `refused with invalid_grant at ${rel(h, first.t)}; around it: ${around(h, first.t - 3000, first.t)}`, cause: 'invalid_grant' };
    }
    return { why: first.what, cause: `at the end: ${first.what.replace(/\(.*\)|[0-9a-f]{8}|grant g\d+/g, '').trim()}` };
}

// What is wrong with a live token's stored state at the end (it is lost), or null.
function endProblem(h, d, tok) {
    const s = d.after.get(tok.key);
    const code = d.final.get(tok.key);
    if (!s) return 'its row is gone';
    if (s.status !== 'active') return `status ${s.status} (final refresh: ${code || 'ok'})`;
    if (!s.opened) return s.hasRefresh ? `its refresh token does not open with any key the soak knows (key id ${s.sealedKeyId})` : 'no refresh token stored';
    if (!d.keyIds.has(s.sealedKeyId)) return `its refresh token is sealed under key ${s.sealedKeyId}, which the server no longer has`;
    if (!s.info) return 'stores a refresh token the provider never issued';
    if (s.info.grant_id !== tok.grantId) return `holds grant ${s.info.grant_id}, the last login was grant ${tok.grantId}`;
    if (s.info.revoked) return `grant revoked at the provider (final refresh: ${code || 'ok'})`;
    if (s.info.used) return `stores a refresh token the provider already rotated away (final refresh: ${code || 'ok'})`;
    return null;
}

// Whether a /token call came from the engine killed by `k` (or an earlier one): its connection
// was established by the kill's instant (a killed process opens nothing after it; comparing
// with the next engine's start read from /proc was off by the clock's drift since boot, which
// gave a new engine's first request to the killed one). A call with no connection time: sent
// before the next engine started, at most 50 ms after the kill.
function sentBy(c, k) {
    if (c.conn_ms != null) return c.conn_ms <= k.K;
    return c.t_ms < Math.min(k.nextStart ?? Infinity, k.K + 50);
}

// The budget of each kill: the exchanges in flight at its instant: answered but not committed
// at the snapshot, plus those under way at the provider between the snapshot and the kill
// (that rotated, or that the provider handled late and refused as reuse).
function killSets(h, tokenCalls) {
    return h.kills.map((k) => {
        const set = new Set(k.uncommitted);
        let underway = 0;
        for (const c of tokenCalls) {
            // Sent by the killed engine: on a connection the provider saw open before the next
            // engine existed (a request may reach the provider a moment after the kill).
            if ((c.issued_seq == null && !c.reuse) || !sentBy(c, k)) continue;
            const end = c.duration_ms != null ? c.t_ms + c.duration_ms : Infinity;
            if (end >= k.tSnap && !set.has(c.grant_id)) {
                set.add(c.grant_id);
                underway++;
            }
        }
        return { ...k, set, underway, lost: [] };
    });
}

// The verdict: the checks, and the tables of the summary.
function judge(h, d) {
    const tokenCalls = d.calls.filter((c) => c.endpoint === 'token');
    const callsByGrant = new Map();
    for (const c of tokenCalls) {
        if (!callsByGrant.has(c.grant_id)) callsByGrant.set(c.grant_id, []);
        callsByGrant.get(c.grant_id).push(c);
    }
    const kills = killSets(h, tokenCalls);
    const liveGrant = new Map(h.ledger.live().map((t) => [t.grantId, t]));
    const lost = [];
    const revokedBad = [];
    for (const lg of h.ledger.grants.values()) {
        if (lg.end === 'never_stored') continue;
        const until = lg.until_ms ?? Infinity;
        const g = d.grants.get(lg.grantId);
        const calls = callsByGrant.get(lg.grantId) || [];
        const bads = [];
        for (const c of calls) {
            if (c.error === 'invalid_grant' && c.t_ms < until) bads.push({ t: c.t_ms, what: c.reuse ? 'reuse' : 'invalid_grant', call: c });
        }
        if (g && g.revoked && (g.revoked_ms < until || g.reuse_detected > 0)) bads.push({ t: g.revoked_ms, what: 'revoked' });
        const tok = liveGrant.get(lg.grantId);
        if (tok) {
            const p = endProblem(h, d, tok);
            const s = d.after.get(tok.key);
            if (p) bads.push({ t: Date.now(), what: p, ...(s && s.info && s.info.used && !s.info.revoked ? { staleSeq: s.info.seq } : {}) });
        }
        if (bads.length === 0) continue;
        bads.sort((a, b) => a.t - b.t);
        // Attributable to the last kill that came between the two presentations of the lost
        // token and had this grant's exchange in flight.
        const du = doubleUse(bads, calls);
        const kill = du && du.first ? [...kills].reverse().find((k) => k.set.has(lg.grantId) && sentBy(du.first, k) &&
            (!du.second || !sentBy(du.second, k))) : undefined;
        const entry = { grantId: lg.grantId, key: lg.key, kill: kill ? kill.event : null, ...diagnose(h, d, lg, bads, calls) };
        if (kill) kill.lost.push(entry);
        lost.push(entry);
        if (g && g.revoked) revokedBad.push(entry);
    }
    // Sessions whose stored state is sound but whose forced refresh at the end failed.
    const unrefreshed = {};
    for (const t of h.ledger.live()) {
        const code = d.final.get(t.key);
        if (code && !endProblem(h, d, t)) unrefreshed[code] = (unrefreshed[code] || 0) + 1;
    }
    const unknownCalls = tokenCalls.filter((c) => c.grant_id === null && c.status !== null).length;
    const notDelivered = [...h.ledger.grants.values()].filter((lg) => lg.end === 'revoke' && !(d.grants.get(lg.grantId) || {}).revoked).length;

    // Callers.
    const unexpected = {};
    for (const [src, s] of Object.entries(h.outcomes.bySource)) {
        if (src === 'final') continue;
        for (const [code, n] of Object.entries(s.codes)) if (!ALLOWED.has(code) && !/^08/.test(code)) unexpected[`${src} ${code}`] = n;
    }
    const windows = h.log.events.map((e) => ({ from: e.start_ms - 500, to: (e.end_ms ?? Date.now()), idp: e.kind.startsWith('idp_') }));
    const unexpectedErrors = h.outcomes.errors.filter((x) => x.source !== 'final' && !ALLOWED.has(x.code) && !/^08/.test(x.code))
        .map((x) => ({ ...x, at: rel(h, x.t), around: around(h, x.t - 2000, x.t) }));
    const outside = h.outcomes.errors.filter((x) => x.source !== 'final' && x.code !== 'UT004' && !x.code.startsWith('UT001') &&
        !windows.some((w) => x.t >= w.from && x.t <= w.to + (x.code === 'UT003' ? 90000 : 12000)));

    // Crashes and secrets in the server log.
    const signals = [...d.log.matchAll(/terminated by signal (\d+)/g)].map((m) => Number(m[1]));
    const crashes = signals.filter((s) => s !== 9).length + (d.log.match(/PANIC:|TRAP:/g) || []).length;
    const leaked = [...h.ledger.seenSecrets].filter((s) => s.length >= 16 && d.log.includes(s)).length;
    const loopErrors = [...d.log.matchAll(/upstream_token engine: ([^:\n]+): ([^\n]*)/g)].map((m) => `${m[1]}: ${m[2]}`);

    const enabled = h.enabledKinds;
    const injected = new Set(h.log.events.map((e) => e.kind));
    const missing = enabled.filter((k) => !injected.has(k));
    const noOutcome = h.log.events.filter((e) => e.outcome === null).length;
    const failedEvents = h.log.events.filter((e) => e.ok === 'failed');
    const fs_ = d.finalStorm;
    const unattributed = lost.filter((x) => !x.kill);
    const revokedUnattributed = revokedBad.filter((x) => !x.kill);
    const over = kills.filter((k) => k.lost.length > k.set.size);

    const checks = [
        ['no grant revoked at the provider except by a SIGKILL in flight', revokedUnattributed.length === 0,
            `${revokedUnattributed.length} revoked (${revokedBad.length - revokedUnattributed.length} attributable to SIGKILL); provider counted ${d.idpStats.reuse_detected} reuse detections, ${d.idpStats.revoked_grants} revoked grants in all`],
        ['no session lost except by a SIGKILL in flight', unattributed.length === 0 && unknownCalls === 0,
            `${unattributed.length} lost (${lost.length - unattributed.length} attributable to SIGKILL) of ${h.ledger.grants.size} logins; ${unknownCalls} refreshes presented a token the provider never issued`],
        ['each SIGKILL lost at most the exchanges in flight at that instant', over.length === 0,
            kills.map((k) => `#${k.event} budget ${k.set.size} lost ${k.lost.length}`).join('; ') || 'no SIGKILL injected'],
        ['every injected event logged with its outcome, every fault kind injected', noOutcome === 0 && missing.length === 0,
            `${h.log.events.length} events, ${noOutcome} without outcome${missing.length ? `; never injected: ${missing.join(', ')}` : ''}`],
        ['every injection completed (engine back after each stop, rotations finished)', failedEvents.length === 0,
            failedEvents.length ? failedEvents.slice(0, 3).map((e) => `${e.kind}#${e.id}: ${e.outcome}`).join(' | ') : 'all ok or interrupted'],
        ['every revocation delivered, queue empty', notDelivered === 0 && d.queue === 0,
            `${notDelivered} revoked sessions whose grant is still alive at the provider; ${d.queue} rows left in the queue`],
        ['callers never got UT009, UT011 or an internal error', Object.keys(unexpected).length === 0,
            Object.keys(unexpected).length ? JSON.stringify(unexpected) : 'only transient codes'],
        ['no caller error while nothing was injected', outside.length === 0,
            outside.length ? `${outside.length} errors, first at ${rel(h, outside[0].t)} (${outside[0].source} ${outside[0].code})` : 'none'],
        ['every session refreshes when forced at the end', Object.keys(unrefreshed).length === 0,
            `${h.ledger.live().length} forced refreshes; failed with a sound stored token: ${JSON.stringify(unrefreshed)}`],
        [`a storm on ${fs_.tokens} distinct expired tokens (max_requests) is fully served at the end`, fs_.tokens > 0 && fs_.ok === fs_.calls,
            `${fs_.ok} of ${fs_.calls} served ${JSON.stringify(fs_.codes)}`],
        ['nothing sealed under a key other than the configured one', d.keyUsage.every((u) => u.key_id === d.keyCurrent) && d.previousKey === '' && !h.keyState.pendingPrevious,
            `key_usage ${JSON.stringify(d.keyUsage)}, current ${d.keyCurrent}, previous_key_file '${d.previousKey}'`],
        ['no server process crashed except the injected SIGKILLs', crashes === 0 && signals.filter((s) => s === 9).length === h.kills.length,
            `${h.kills.length} SIGKILLs injected, ${signals.filter((s) => s === 9).length} signal-9 exits, ${crashes} other crashes`],
        ['no token in the server log', leaked === 0, `${leaked} of ${h.ledger.seenSecrets.size} token values found`],
    ];
    return { checks, lost, kills, loopErrors, unexpected, unexpectedErrors, outside };
}

module.exports = { collect, judge, TRANSIENT };
