'use strict';
// What the soak expects to exist, and what actually is stored.
//
// The ledger knows every login the driver made: for each token (session, provider) its current
// grant at the provider, and for each grant the moment the driver legitimately ended its life
// (a re-login with a new grant replaced it, or the session was revoked). A grant that the
// provider revoked, or refused with invalid_grant, before that moment is a lost session.
//
// The key ring opens stored refresh tokens the way the extension seals them (AES-256-GCM, the
// layout and associated data of src/core/crypto.hpp), so the soak can ask the provider whether
// what the database holds is the grant's current token: the ground truth of "committed".
// Nothing it opens is ever printed or logged.

const crypto = require('node:crypto');
const { Mutex, errorCode, waitFor } = require('./lib.js');

const AAD_LABEL = 'upstream_token/v1';

// Keys by their id, as the extension names them (first 4 bytes of SHA-256(label || key)).
class KeyRing {
    constructor() { this.keys = new Map(); }

    // Adds a key file's text; returns its id as 8 hex characters.
    add(text) {
        const bytes = Buffer.from(text.trim(), 'hex');
        if (bytes.length !== 32) throw new Error('a key is 64 hex characters');
        const id = crypto.createHash('sha256').update('upstream_token key id').update(bytes).digest().subarray(0, 4);
        this.keys.set(id.toString('hex'), bytes);
        return id.toString('hex');
    }

    // Opens one sealed value of (provider, session, column); null when no known key opens it.
    open(provider, session, column, sealed) {
        if (!sealed || sealed.length < 1 + 4 + 12 + 16 || sealed[0] !== 1) return null;
        const key = this.keys.get(sealed.subarray(1, 5).toString('hex'));
        if (!key) return null;
        const field = (s) => {
            const b = Buffer.from(s, 'utf8');
            const len = Buffer.alloc(4);
            len.writeUInt32BE(b.length);
            return Buffer.concat([len, b]);
        };
        const aad = Buffer.concat([Buffer.from(AAD_LABEL), Buffer.from([0]), field(provider), field(session), field(column)]);
        try {
            const d = crypto.createDecipheriv('aes-256-gcm', key, sealed.subarray(5, 17));
            d.setAAD(aad);
            d.setAuthTag(sealed.subarray(sealed.length - 16));
            return Buffer.concat([d.update(sealed.subarray(17, sealed.length - 16)), d.final()]).toString('utf8');
        } catch {
            return null;
        }
    }
}

class Ledger {
    // idp: {client}; db: a pool; providers: [{provider, clientId}]; keys: a KeyRing.
    constructor({ idp, db, providers, keys }) {
        this.idp = idp;
        this.db = db;
        this.providers = providers;
        this.keys = keys;
        this.tokens = new Map();   // "session|provider" -> {key, session, provider, clientId, grantId, state}
        this.grants = new Map();   // grantId -> {grantId, key, clientId, minted_ms, until_ms, end}
        this.mutex = new Mutex();  // a SIGKILL snapshot sees no half-done login or revocation
        this.nextSession = 0;
        this.seenSecrets = new Set();  // every token value the soak handled (checked against the server log)
    }

    static keyOf(session, provider) { return `${session}|${provider}`; }

    // Tokens of sessions that exist (not revoked by the driver).
    live() { return [...this.tokens.values()].filter((t) => t.state === 'live'); }

    // Sessions that exist, each with its live tokens.
    liveSessions() {
        const out = new Map();
        for (const t of this.live()) {
            if (!out.has(t.session)) out.set(t.session, []);
            out.get(t.session).push(t);
        }
        return out;
    }

    // Records a grant minted at the provider (for one token).
    addGrant(g, key, clientId) {
        this.grants.set(g.grant_id, { grantId: g.grant_id, key, clientId, minted_ms: Date.now(), until_ms: null, end: null });
        for (const v of [g.access_token, g.refresh_token, g.id_token]) if (v) this.seenSecrets.add(v);
    }

    // Ends a grant's legitimate life (a new login replaced it, the session was revoked, or it
    // was never stored).
    // `at` is when the replacing call began: the engine may act on its commit (an orphan
    // revocation) before the call returns here.
    endGrant(grantId, end, at = Date.now()) {
        const g = this.grants.get(grantId);
        if (g && g.until_ms === null) {
            g.until_ms = at;
            g.end = end;
        }
    }

    // Mints and stores the first login of `count` new sessions in one statement; every session
    // gets the first provider, every third one the second too. Returns the session names.
    async addSessions(count, { expiresIn }) {
        const sessions = [];
        for (let i = 0; i < count; i++) sessions.push(`chaos-s${this.nextSession++}`);
        for (const [pi, p] of this.providers.entries()) {
            const mine = sessions.filter((s) => pi === 0 || Number(s.slice(7)) % 3 === 0);
            if (mine.length === 0) continue;
            const { grants } = await this.idp.client.admin('POST', '/admin/grants', { client_id: p.clientId, subject: 'user', count: mine.length });
            const rows = mine.map((s, i) => ({ s, g: grants[i], e: expiresIn(i) }));
            for (const r of rows) this.addGrant(r.g, Ledger.keyOf(r.s, p.provider), p.clientId);
            try {
                await this.db.query(
                    `SELECT upstream_token.store_upstream_token(x.s, $1, x.a, x.r, x.e, x.i)
                       FROM unnest($2::text[], $3::text[], $4::text[], $5::int[], $6::text[]) AS x(s, a, r, e, i)`,
                    [p.provider, rows.map((r) => r.s), rows.map((r) => r.g.access_token), rows.map((r) => r.g.refresh_token),
                        rows.map((r) => r.e), rows.map((r) => r.g.id_token || null)]);
            } catch (e) {
                for (const r of rows) this.endGrant(r.g.grant_id, 'never_stored');
                throw e;
            }
            for (const r of rows) {
                const key = Ledger.keyOf(r.s, p.provider);
                this.tokens.set(key, { key, session: r.s, provider: p.provider, clientId: p.clientId, grantId: r.g.grant_id, state: 'live' });
            }
        }
        return sessions;
    }

    // A new login for a token: a new grant, or the same grant continued (a re-login in the same
    // browser session). Returns a short description of what happened.
    async relogin(tok, { sameGrant, expiresIn }) {
        const p = this.providers.find((x) => x.provider === tok.provider);
        let g;
        if (sameGrant) {
            try {
                g = await this.idp.client.admin('POST', `/admin/grants/${tok.grantId}/login`);
            } catch (e) {
                if (e.status !== 409) throw e;
                sameGrant = false;  // the grant is revoked: the provider starts a new one
            }
        }
        if (!g) g = (await this.idp.client.admin('POST', '/admin/grants', { client_id: p.clientId, subject: 'user' })).grants[0];
        if (!sameGrant) this.addGrant(g, tok.key, p.clientId);
        else for (const v of [g.access_token, g.refresh_token, g.id_token]) if (v) this.seenSecrets.add(v);
        const began = Date.now();
        try {
            await this.db.query('SELECT upstream_token.store_upstream_token($1, $2, $3, $4, $5, $6)',
                [tok.session, tok.provider, g.access_token, g.refresh_token, expiresIn, g.id_token || null]);
        } catch (e) {
            const code = errorCode(e);
            if (code !== 'connection') {
                if (!sameGrant) this.endGrant(g.grant_id, 'never_stored');
                return { ok: false, what: `store refused (${code})` };
            }
            // The connection broke: whether the store committed is read back from the row.
            const held = (await waitFor(async () => ({ g: await this.storedGrant(tok) }),
                { timeoutMs: 90000, intervalMs: 500, what: 'the database after a broken store' })).g;
            if (held !== g.grant_id) {
                if (!sameGrant) this.endGrant(g.grant_id, 'never_stored');
                return { ok: false, what: 'store lost with its connection' };
            }
        }
        if (!sameGrant) {
            this.endGrant(tok.grantId, 'relogin', began);
            tok.grantId = g.grant_id;
        }
        (tok.logins = tok.logins || []).push({ t: began, grantId: g.grant_id, sameGrant });
        return { ok: true, what: sameGrant ? 'same grant' : 'new grant' };
    }

    // Revokes a session (all its providers) through revoke_upstream_token; its grants' life ends.
    async revoke(session) {
        const toks = this.live().filter((t) => t.session === session);
        const began = Date.now();
        let n;
        try {
            n = (await this.db.query('SELECT upstream_token.revoke_upstream_token($1) AS n', [session])).rows[0].n;
        } catch (e) {
            const code = errorCode(e);
            if (code !== 'connection') return { ok: false, what: `revoke refused (${code})` };
            const left = await waitFor(async () => ({ n: (await this.db.query('SELECT count(*)::int AS n FROM upstream_token.token WHERE session = $1', [session])).rows[0].n }),
                { timeoutMs: 90000, intervalMs: 500, what: 'the database after a broken revocation' });
            n = left.n === 0 ? toks.length : 0;
            if (n === 0) return { ok: false, what: 'revoke lost with its connection' };
        }
        for (const t of toks) {
            t.state = 'revoked';
            t.revoked_ms = began;
            this.endGrant(t.grantId, 'revoke', began);
        }
        return { ok: true, what: `${n} token(s) removed` };
    }

    // The grant whose refresh token the row of `tok` holds now (null when none or unreadable).
    async storedGrant(tok) {
        const r = await this.db.query('SELECT refresh_token FROM upstream_token.token WHERE session = $1 AND provider = $2', [tok.session, tok.provider]);
        if (r.rows.length === 0) return null;
        const plain = this.keys.open(tok.provider, tok.session, 'refresh_token', r.rows[0].refresh_token);
        if (!plain) return null;
        const { tokens } = await this.idp.client.admin('POST', '/admin/lookup', { refresh_tokens: [plain] });
        return tokens[0] ? tokens[0].grant_id : null;
    }

    // Every stored token, opened and looked up at the provider: Map key -> {status, sealedKeyId,
    // opened, info: {grant_id, seq, used, used_ms, current, revoked} | null}.
    async stored() {
        const r = await this.db.query(
            'SELECT session, provider, status, refresh_token, updated_at FROM upstream_token.token');
        const rows = r.rows.map((x) => ({
            key: Ledger.keyOf(x.session, x.provider), status: x.status, updated_at: x.updated_at,
            sealedKeyId: x.refresh_token ? x.refresh_token.subarray(1, 5).toString('hex') : null,
            plain: this.keys.open(x.provider, x.session, 'refresh_token', x.refresh_token),
            hasRefresh: x.refresh_token !== null,
        }));
        const asked = rows.filter((x) => x.plain);
        const { tokens } = await this.idp.client.admin('POST', '/admin/lookup', { refresh_tokens: asked.map((x) => x.plain) });
        asked.forEach((x, i) => { x.info = tokens[i]; this.seenSecrets.add(x.plain); });
        const out = new Map();
        for (const x of rows) {
            out.set(x.key, { status: x.status, sealedKeyId: x.sealedKeyId, opened: x.plain !== null, hasRefresh: x.hasRefresh, info: x.info || null });
        }
        return out;
    }
}

module.exports = { Ledger, KeyRing };
