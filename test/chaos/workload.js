'use strict';
// The soak's traffic: readers (get_upstream_token / get_upstream_credentials in a paced loop)
// and on-demand storms (a handful of tokens made expired, then many callers at once on each).
// Every caller outcome is counted, and every error is kept with its time so the verdict can
// tell errors inside a fault's window from errors when nothing was injected.

const { sleep, errorCode, bump } = require('./lib.js');

// Caller outcomes: counts per source and code, and the errors with their times.
class Outcomes {
    constructor() {
        this.bySource = {};  // source -> {ok, warnings, codes: {code: n}}
        this.errors = [];    // {t, source, code}
    }

    src(source) {
        if (!this.bySource[source]) this.bySource[source] = { ok: 0, warnings: 0, codes: {} };
        return this.bySource[source];
    }

    ok(source) { this.src(source).ok += 1; }

    error(source, code) {
        bump(this.src(source).codes, code);
        this.errors.push({ t: Date.now(), source, code });
    }
}

// Sets the stored expiry of tokens to the past (time passing, as the soak's clock sees it): the
// next caller needs a refresh at once. Rows locked by someone are left alone. Returns how many.
async function expire(sim, toks) {
    if (toks.length === 0) return 0;
    const r = await sim.query(
        `UPDATE upstream_token.token t SET expires_at = pg_catalog.now() - interval '1 second'
           FROM (SELECT session, provider FROM upstream_token.token
                  WHERE (session, provider) IN (SELECT * FROM unnest($1::text[], $2::text[]))
                    AND status = 'active' FOR UPDATE SKIP LOCKED) x
          WHERE t.session = x.session AND t.provider = x.provider`,
        [toks.map((t) => t.session), toks.map((t) => t.provider)]);
    return r.rowCount;
}

// One call as an application makes it; records the outcome under `source`. A code of a
// session the driver revoked meanwhile is recorded as such, not as an error.
async function call(db, ledger, tok, source, out, { credentials = false } = {}) {
    try {
        if (credentials) {
            const r = await db.query('SELECT provider, sqlstate FROM upstream_token.get_upstream_credentials($1)', [tok.session]);
            if (r.rows.length === 0) return record(out, ledger, tok, source, 'UT001');
            for (const row of r.rows) record(out, ledger, { ...tok, provider: row.provider }, source, row.sqlstate);
            return null;
        }
        await db.query('SELECT upstream_token.get_upstream_token($1, $2) AS t', [tok.session, tok.provider]);
        return record(out, ledger, tok, source, null);
    } catch (e) {
        return record(out, ledger, tok, source, errorCode(e));
    }
}

// Counts one outcome; returns the code (null for success).
function record(out, ledger, tok, source, code) {
    if (code === null) {
        out.ok(source);
        return null;
    }
    const now = ledger.tokens.get(`${tok.session}|${tok.provider}`);
    if (code === 'UT001' && (!now || now.state !== 'live')) {
        bump(out.src(source).codes, 'UT001 (session revoked by the driver)');
        return code;
    }
    out.error(source, code);
    return code;
}

// Reader loops: `readers` loops sharing `rate` calls per second; 30% ask for all credentials
// of a session, the rest for one token.
function startReaders(h, { readers, rate }, rng, stop) {
    const interval = (1000 * readers) / rate;
    const loops = [];
    for (let i = 0; i < readers; i++) {
        const r = rng.fork();
        loops.push((async () => {
            while (!stop.flag) {
                const t0 = Date.now();
                const live = h.ledger.live();
                if (live.length > 0) {
                    await call(h.db, h.ledger, r.pick(live), 'reader', h.outcomes, { credentials: r.chance(0.3) });
                }
                await sleep(Math.max(0, interval - (Date.now() - t0)));
            }
        })());
    }
    return Promise.all(loops);
}

// One on-demand storm: `tokens` tokens made expired, `callers` callers on each at once.
// Returns {tokens, expired, calls, ok}.
async function storm(h, toks, callers, source = 'storm') {
    let expired;
    try {
        expired = await expire(h.sim, toks);
    } catch (e) {
        return { tokens: toks.length, expired: 0, calls: 0, ok: 0, skipped: errorCode(e) };
    }
    const jobs = [];
    for (const tok of toks) {
        for (let i = 0; i < callers; i++) jobs.push(call(h.stormDb, h.ledger, tok, source, h.outcomes, { credentials: i % 4 === 3 }));
    }
    const codes = await Promise.all(jobs);
    return { tokens: toks.length, expired, calls: jobs.length, ok: codes.filter((c) => c === null).length };
}

// Storms every few seconds until stopped.
async function runStorms(h, rng, stop) {
    while (!stop.flag) {
        await sleep(rng.int(3000, 6000));
        if (stop.flag) break;
        const live = h.ledger.live();
        const s = await storm(h, rng.sample(live, rng.int(5, 12)), rng.int(3, 6));
        h.stormStats.push(s);
    }
}

module.exports = { Outcomes, expire, call, startReaders, storm, runStorms };
