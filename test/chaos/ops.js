'use strict';
// Operations the chaos faults are made of: the engine's status and restarts, provider fault
// rules, read-only windows, row locks, key files and rotation, a refresh made to be under way.

const fs = require('node:fs');
const crypto = require('node:crypto');
const { sleep, waitFor, connect } = require('./lib.js');
const { expire } = require('./workload.js');

// Lock holders stand for application transactions that began before the database turned
// read-only: the read-only fault does not stop them.
const OUTSIDE_READ_ONLY = { options: '-c default_transaction_read_only=off' };

async function engineStatus(h) {
    return (await h.sys.query('SELECT * FROM upstream_token.engine_status')).rows[0];
}

// When a process started (epoch ms, 10 ms resolution), from /proc; null when it is gone.
function startedAt(pid) {
    try {
        const st = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
        const ticks = Number(st.slice(st.lastIndexOf(')') + 2).split(' ')[19]);
        const boot = Number(/^btime (\d+)$/m.exec(fs.readFileSync('/proc/stat', 'utf8'))[1]);
        return boot * 1000 + ticks * 10;
    } catch {
        return null;
    }
}

// Waits for a ready engine whose pid differs from `oldPid` (server and engine back).
async function waitEngine(h, oldPid, timeoutMs = 90000) {
    return waitFor(async () => {
        const e = await engineStatus(h);
        return e && e.ready && e.worker_pid > 0 && e.worker_pid !== oldPid && e;
    }, { timeoutMs, intervalMs: 100, what: 'a ready engine' });
}

// Adds a provider fault rule on behalf of event `ev`; the verdict maps the rule's id, which
// the provider's call log names, back to the event.
async function idpFault(h, ev, body) {
    const { fault_id: id } = await h.idp.client.admin('POST', '/admin/faults', body);
    h.faultIds.set(id, `${ev.kind}#${ev.id}`);
    return id;
}

// Makes the provider slow for a while (it rotates at once and answers `ms` later), and waits
// until exchanges are in flight: a stop or a kill then meets answers the engine has not got.
async function slowProvider(h, ev, ms, forMs) {
    await idpFault(h, ev, { match: {}, action: { respond_delay_ms: ms }, until_ms: Date.now() + forMs });
    await waitFor(async () => (await h.idp.client.admin('GET', '/admin/stats')).in_flight > 0,
        { timeoutMs: 4000, intervalMs: 20, what: 'exchanges in flight' }).catch(() => {});
}

// Sets or resets default_transaction_read_only for the whole cluster (a failover or a
// maintenance window), and waits until new sessions see it.
async function setReadOnly(h, on) {
    await h.sys.query(on ? 'ALTER SYSTEM SET default_transaction_read_only = on' : 'ALTER SYSTEM RESET default_transaction_read_only');
    await h.sys.query('SELECT pg_catalog.pg_reload_conf()');
    await waitFor(async () => {
        const c = await connect();
        try {
            return (await c.query('SHOW default_transaction_read_only')).rows[0].default_transaction_read_only === (on ? 'on' : 'off');
        } finally { await c.end().catch(() => {}); }
    }, { timeoutMs: 10000, what: `read-only ${on ? 'on' : 'off'}` });
}

// Locks the token rows of `toks` in an open transaction on a connection of its own (an
// application's store or delete in progress). Returns {client, rows}.
async function lockRows(toks) {
    const c = await connect(OUTSIDE_READ_ONLY);
    await c.query("SET lock_timeout = '3s'");
    await c.query('BEGIN');
    const r = await c.query(
        `SELECT 1 FROM upstream_token.token WHERE (session, provider) IN (SELECT * FROM unnest($1::text[], $2::text[])) FOR UPDATE`,
        [toks.map((t) => t.session), toks.map((t) => t.provider)]);
    return { client: c, rows: r.rowCount };
}

// Ends a lock-holding transaction and its connection, whatever state they are in.
async function release(c) {
    await c.query('COMMIT').catch(() => {});
    await c.end().catch(() => {});
}

// Sets a key GUC (or resets it with null) and reloads; waits until new sessions see `expect`.
async function setKeyGuc(h, name, value, expect) {
    await h.sys.query(value === null ? `ALTER SYSTEM RESET ${name}` : `ALTER SYSTEM SET ${name} = '${value}'`);
    await h.sys.query('SELECT pg_catalog.pg_reload_conf()');
    await waitFor(async () => {
        const c = await connect();
        try {
            return (await c.query('SELECT pg_catalog.current_setting($1) AS v', [name])).rows[0].v === expect;
        } finally { await c.end().catch(() => {}); }
    }, { timeoutMs: 10000, what: `${name} = ${expect}` });
}

// Writes a fresh key file owned by the server's user (mode 0600); returns its text.
function writeKey(file) {
    const text = crypto.randomBytes(32).toString('hex') + '\n';
    fs.writeFileSync(file, text, { mode: 0o600 });
    chownToServer(file);
    return text;
}

// Gives a file to the server's OS user (the owner of the data directory).
function chownToServer(file) {
    const st = fs.statSync(process.env.UT_DATA);
    fs.chownSync(file, st.uid, st.gid);
}

// CALL rotate_key() until key_usage shows only the current key (as docs/security.md says to
// check before removing the old key); returns {done, tries, usage}.
async function rotateUntilDone(h, tries = 3) {
    let usage = [];
    for (let i = 1; i <= tries; i++) {
        const c = await connect({ options: '-c default_transaction_read_only=off' });
        try {
            await c.query('CALL upstream_token.rotate_key()');
            const cur = (await c.query('SELECT upstream_token.current_key_id() AS k')).rows[0].k;
            usage = (await c.query('SELECT key_id, ciphertexts::int AS n FROM upstream_token.key_usage ORDER BY key_id')).rows;
            if (usage.every((u) => u.key_id === cur)) return { done: true, tries: i, usage };
        } finally { await c.end().catch(() => {}); }
        await sleep(500);
    }
    return { done: false, tries, usage };
}

// Starts a refresh of `tok` that the provider answers slowly (it rotates at once), and waits
// until it is under way there; true when it is.
async function refreshUnderWay(h, ev, tok) {
    const since = Date.now();
    await idpFault(h, ev, { match: { grant_id: tok.grantId }, action: { respond_delay_ms: 800 }, count: 1 });
    await expire(h.sim, [tok]);
    h.db.query('SELECT upstream_token.get_upstream_token($1, $2)', [tok.session, tok.provider]).catch(() => {});
    return waitFor(async () => (await h.idp.client.admin('GET', `/admin/calls?since_ms=${since}&grant_id=${tok.grantId}`)).calls.some((c) => c.status === null),
        { timeoutMs: 2000, intervalMs: 20, what: 'a refresh under way' }).then(() => true, () => false);
}

module.exports = {
    OUTSIDE_READ_ONLY, engineStatus, startedAt, waitEngine, idpFault, slowProvider, setReadOnly, lockRows, release,
    setKeyGuc, writeKey, chownToServer, rotateUntilDone, refreshUnderWay,
};
