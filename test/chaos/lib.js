'use strict';
// Small pieces the chaos soak shares: a seeded random generator (replays with CHAOS_SEED), an
// async mutex, waiting on conditions with a deadline, the event log, and connections to the
// soak's own cluster.

const fs = require('node:fs');
const { Pool, Client } = require('pg');

// Seeded PRNG (mulberry32): the same seed gives the same fault schedule and parameters.
class Rng {
    constructor(seed) { this.state = seed >>> 0; }

    // Uniform in [0, 1).
    next() {
        this.state = (this.state + 0x6d2b79f5) >>> 0;
        let t = this.state;
        t = Math.imul(t ^ (t >>> 15), t | 1);
        t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
        return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    }

    // Integer in [lo, hi].
    int(lo, hi) { return lo + Math.floor(this.next() * (hi - lo + 1)); }

    // True with probability p.
    chance(p) { return this.next() < p; }

    // One element of a non-empty array.
    pick(list) { return list[Math.floor(this.next() * list.length)]; }

    // Up to n distinct elements of an array, in random order.
    sample(list, n) {
        const copy = list.slice();
        for (let i = copy.length - 1; i > 0; i--) {
            const j = Math.floor(this.next() * (i + 1));
            [copy[i], copy[j]] = [copy[j], copy[i]];
        }
        return copy.slice(0, Math.min(n, copy.length));
    }

    // A child generator with its own stream (one per fault, so its draws do not depend on timing).
    fork() { return new Rng(Math.floor(this.next() * 4294967296)); }
}

// A promise-based mutex: run(fn) executes fn alone among the callers of this mutex.
class Mutex {
    constructor() { this.tail = Promise.resolve(); }

    run(fn) {
        const result = this.tail.then(() => fn());
        this.tail = result.catch(() => {});
        return result;
    }
}

// Pauses on purpose (pacing workload and faults; conditions are waited for with waitFor).
function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }

// Polls `check` until it returns a truthy value or the deadline passes (then throws).
async function waitFor(check, { timeoutMs = 15000, intervalMs = 100, what = 'condition' } = {}) {
    const deadline = Date.now() + timeoutMs;
    let last;
    for (;;) {
        try {
            last = await check();
            if (last) return last;
        } catch (e) {
            last = e;
        }
        if (Date.now() > deadline) {
            throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}` +
                (last instanceof Error ? `: ${last.message}` : ''));
        }
        await sleep(intervalMs);
    }
}

// Connection settings of the soak's cluster (run.sh exports them through scripts/cluster.sh env).
function pgConfig(extra = {}) {
    for (const v of ['PGHOST', 'PGPORT', 'PGDATABASE']) {
        if (!process.env[v]) throw new Error(`${v} is not set: run test/chaos/run.sh`);
    }
    return {
        host: process.env.PGHOST, port: Number(process.env.PGPORT), user: process.env.PGUSER || 'postgres',
        database: process.env.PGDATABASE, connectionTimeoutMillis: 5000, ...extra,
    };
}

// A pool whose broken connections (restarts, crashes) are dropped quietly.
function pool(max, extra = {}) {
    const p = new Pool(pgConfig({ max, idleTimeoutMillis: 30000, ...extra }));
    p.on('error', () => {});
    return p;
}

// A single connection of its own (locks, waiters to terminate, session settings).
async function connect(extra = {}) {
    const c = new Client(pgConfig(extra));
    c.on('error', () => {});
    await c.connect();
    return c;
}

// The SQLSTATE of an error, or a short class for errors without one (connection lost).
function errorCode(e) {
    if (e && typeof e.code === 'string' && /^[0-9A-Z]{5}$/.test(e.code) && !/^E[A-Z]+$/.test(e.code)) return e.code;
    return 'connection';
}

// Counts values into a plain object.
function bump(obj, key, n = 1) { obj[key] = (obj[key] || 0) + n; }

// The event log: every injected fault with its time, parameters and outcome, one JSON line
// each in events.jsonl (a begin line and an end line, so a run cut short still shows what
// was under way).
class EventLog {
    constructor(file, t0) {
        this.file = file;
        this.t0 = t0;
        this.events = [];
        this.nextId = 1;
        fs.writeFileSync(file, '');
    }

    // Seconds since the start of the soak, for messages.
    rel(ms = Date.now()) { return `+${((ms - this.t0) / 1000).toFixed(1)}s`; }

    begin(kind, params) {
        const ev = { id: this.nextId++, kind, params, start_ms: Date.now(), end_ms: null, ok: null, outcome: null };
        this.events.push(ev);
        this.write({ phase: 'begin', ...ev });
        return ev;
    }

    // status: 'ok', 'interrupted' (another fault broke it: a restart, a kill) or 'failed'.
    end(ev, status, outcome) {
        ev.end_ms = Date.now();
        ev.ok = status;
        ev.outcome = outcome;
        this.write({ phase: 'end', ...ev });
        const dur = ((ev.end_ms - ev.start_ms) / 1000).toFixed(1);
        const tag = status === 'ok' ? '' : `${status.toUpperCase()}: `;
        process.stdout.write(`  ${this.rel(ev.start_ms).padStart(7)} #${String(ev.id).padEnd(3)} ${ev.kind.padEnd(22)} ${dur.padStart(5)}s  ${tag}${outcome}\n`);
    }

    write(obj) {
        fs.appendFileSync(this.file, JSON.stringify({ ...obj, t: this.rel(obj.start_ms) }) + '\n');
    }
}

module.exports = { Rng, Mutex, sleep, waitFor, pgConfig, pool, connect, errorCode, bump, EventLog };
