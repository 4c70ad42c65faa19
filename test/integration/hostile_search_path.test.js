'use strict';
// No object a non-superuser can create changes what the engine (or a SECURITY DEFINER function)
// executes. A role that owns the engine's database (so it has CREATE on public) plants hostile
// operators, functions, aggregates and type names (domains whose CHECK runs its code) in
// `public`, then `ALTER DATABASE ... SET search_path = public, pg_catalog`. Each hostile object
// does what it is meant to (so nothing visibly breaks) and also counts itself, records
// current_user and tries `ALTER ROLE ... SUPERUSER`. Then the engine restarts (picking up the
// database's settings), and every path runs: scan, on-demand refresh, revocation queue,
// discovery, maintenance; and superuser "victims" on the hostile search path call store, get,
// refresh, credentials, delete, revoke, register, drop and rotate_key. Nothing hostile may run.
// A second test shows the engine's transactions run as the extension's owner inside a
// security-restricted operation.
const test = require('node:test');
const assert = require('node:assert');
const {
    setup, connect, waitFor, unique, providerWith, revocationQueue, revokeCalls, tokenStatus,
} = require('./harness.js');

const EVIL = 'ut_evil_owner';
const DB = process.env.PGDATABASE;
const PINNED = '-c search_path=pg_catalog';  // the test's own connections never see public

// Hostile operators: [name, left, right, result]; each forwards to pg_catalog's.
const OPERATORS = [
    ['/', 'float8', 'int4', 'float8'], ['*', 'numeric', 'int4', 'numeric'],
    ['=', 'text', 'text', 'bool'], ['=', 'bytea', 'bytea', 'bool'], ['=', 'int8', 'int4', 'bool'],
    ['=', 'int8', 'int8', 'bool'], ['<>', 'bytea', 'bytea', 'bool'], ['<>', 'text', 'text', 'bool'],
    ['<=', 'timestamptz', 'timestamptz', 'bool'], ['>', 'timestamptz', 'timestamptz', 'bool'],
    ['>=', 'int8', 'int8', 'bool'], ['>', 'int4', 'int4', 'bool'], ['-', 'timestamptz', 'interval', 'timestamptz'],
    ['+', 'timestamptz', 'interval', 'timestamptz'], ['+', 'int8', 'int4', 'int8'], ['+', 'int4', 'int4', 'int4'],
    ['||', 'text', 'text', 'text'],
];
// Type names the engine's statements spell (casts): domains over pg_catalog's, with a CHECK.
const DOMAINS = ['float8', 'int8', 'int4', 'jsonb', 'timestamptz', 'bytea', 'text'];

// The hostile role's objects, created on its own connection (qualified: its path is pinned).
function hostileDdl() {
    const sql = [
        `CREATE TABLE public.evil_log (who text, app text, what text)`,
        `GRANT INSERT ON public.evil_log TO PUBLIC`,
        `CREATE SEQUENCE public.evil_hits`,
        `GRANT USAGE, UPDATE ON SEQUENCE public.evil_hits TO PUBLIC`,
        // Counts itself (a sequence survives a rolled-back or read-only transaction), records
        // who ran it, and tries to make its owner a superuser.
        `CREATE FUNCTION public.evil_note(what text) RETURNS bool LANGUAGE plpgsql
           SET search_path = pg_catalog AS $f$
         BEGIN
             PERFORM pg_catalog.nextval('public.evil_hits');
             BEGIN
                 INSERT INTO public.evil_log VALUES (current_user,
                     pg_catalog.current_setting('application_name'), what);
             EXCEPTION WHEN OTHERS THEN NULL;
             END;
             BEGIN
                 EXECUTE 'ALTER ROLE ${EVIL} SUPERUSER';
             EXCEPTION WHEN OTHERS THEN NULL;
             END;
             RETURN true;
         END $f$`,
    ];
    OPERATORS.forEach(([op, l, r, res], i) => {
        sql.push(`CREATE FUNCTION public.evil_op${i}(${l}, ${r}) RETURNS ${res} LANGUAGE plpgsql
                    SET search_path = pg_catalog AS $f$
                  BEGIN PERFORM public.evil_note('${op.replace(/'/g, "''")}(${l}, ${r})');
                        RETURN $1 OPERATOR(pg_catalog.${op}) $2; END $f$`);
        sql.push(`CREATE OPERATOR public.${op} (LEFTARG = ${l}, RIGHTARG = ${r}, FUNCTION = public.evil_op${i})`);
    });
    sql.push(
        `CREATE FUNCTION public.now() RETURNS timestamptz LANGUAGE plpgsql SET search_path = pg_catalog
           AS $f$ BEGIN PERFORM public.evil_note('now()'); RETURN pg_catalog.now(); END $f$`,
        `CREATE FUNCTION public.make_interval(secs float8) RETURNS interval LANGUAGE plpgsql
           SET search_path = pg_catalog AS $f$
           BEGIN PERFORM public.evil_note('make_interval'); RETURN pg_catalog.make_interval(secs => secs); END $f$`,
        `CREATE FUNCTION public.evil_larger(interval, interval) RETURNS interval LANGUAGE plpgsql
           SET search_path = pg_catalog AS $f$
           BEGIN PERFORM public.evil_note('max(interval)'); RETURN pg_catalog.interval_larger($1, $2); END $f$`,
        `CREATE AGGREGATE public.max(interval) (SFUNC = public.evil_larger, STYPE = interval)`,
        `CREATE FUNCTION public.evil_smaller(timestamptz, timestamptz) RETURNS timestamptz LANGUAGE plpgsql
           SET search_path = pg_catalog AS $f$
           BEGIN PERFORM public.evil_note('min(timestamptz)'); RETURN pg_catalog.timestamptz_smaller($1, $2); END $f$`,
        `CREATE AGGREGATE public.min(timestamptz) (SFUNC = public.evil_smaller, STYPE = timestamptz)`,
        `CREATE FUNCTION public.evil_count(int8) RETURNS int8 LANGUAGE plpgsql SET search_path = pg_catalog
           AS $f$ BEGIN PERFORM public.evil_note('count(*)'); RETURN $1 + 1; END $f$`,
        `CREATE AGGREGATE public.count(*) (SFUNC = public.evil_count, STYPE = int8, INITCOND = '0')`,
    );
    // Last: once a domain named "text" exists, unqualified type names on this path change too.
    for (const d of DOMAINS) {
        sql.push(`CREATE DOMAIN public.${d} AS pg_catalog.${d} CHECK (public.evil_note('cast to ${d}'))`);
    }
    return sql;
}

// Restarts the engine (it reads the database's settings when it connects) and waits until the
// new process is ready.
async function restartEngine(pool) {
    const before = (await pool.query('SELECT worker_pid FROM upstream_token.engine_status')).rows[0].worker_pid;
    await pool.query('SELECT pg_catalog.pg_terminate_backend($1)', [before]);
    await waitFor(async () => {
        const r = (await pool.query('SELECT worker_pid, ready FROM upstream_token.engine_status')).rows[0];
        return r.worker_pid !== before && r.worker_pid !== 0;
    }, { timeoutMs: 30000, what: 'the engine to exit' });
    return waitFor(async () => {
        const r = (await pool.query('SELECT worker_pid, ready FROM upstream_token.engine_status')).rows[0];
        return r.ready && r.worker_pid !== before ? r.worker_pid : false;
    }, { timeoutMs: 30000, what: 'the engine to be ready again' });
}

test('hostile objects in public and a hostile database search_path never run', async (t) => {
    const ctx = await setup({ poolSize: 6 });
    ctx.pool.options.options = PINNED;  // connections made from now on
    // Drop the pool's idle connections, made before: every query below uses a pinned path.
    await Promise.all(Array.from({ length: 6 }, async () => {
        const c = await ctx.pool.connect();
        c.release(true);
    }));
    const admin = await connect({ options: PINNED });
    let evil;
    const victims = [];
    t.after(async () => {
        for (const v of victims) await v.end().catch(() => {});
        if (evil) await evil.end().catch(() => {});
        await admin.query(`ALTER DATABASE ${DB} RESET search_path`);
        await admin.query(`ALTER DATABASE ${DB} OWNER TO postgres`);
        await admin.query(`DROP OWNED BY ${EVIL} CASCADE`).catch(() => {});
        await admin.query(`DROP ROLE IF EXISTS ${EVIL}`);
        await restartEngine(ctx.pool).catch(() => {});
        await admin.end();
        await ctx.close();
    });

    // The database's owner is a plain role: it has CREATE on public (PostgreSQL 15's
    // pg_database_owner) and may set the database's search_path.
    await admin.query(`DO $d$ BEGIN IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = '${EVIL}')
        THEN DROP OWNED BY ${EVIL} CASCADE; DROP ROLE ${EVIL}; END IF; END $d$`);
    await admin.query(`CREATE ROLE ${EVIL} LOGIN NOSUPERUSER`);
    await admin.query(`ALTER DATABASE ${DB} OWNER TO ${EVIL}`);
    evil = await connect({ user: EVIL, options: PINNED, application_name: 'hostile-control' });
    for (const stmt of hostileDdl()) await evil.query(stmt);
    await evil.query(`ALTER DATABASE ${DB} SET search_path = public, pg_catalog`);

    // Control: on the database's default path the hostile objects are live.
    const control = await connect({ user: EVIL, application_name: 'hostile-control' });
    victims.push(control);
    assert.strictEqual((await control.query('SHOW search_path')).rows[0].search_path, 'public, pg_catalog');
    assert.strictEqual((await control.query(`SELECT 'a'::text = 'b'::text AS eq,
        (2::float8 / 1000000) > 0 AS div`)).rows[0].eq, false, 'the hostile "=" answers truthfully');
    const controlHits = Number((await admin.query('SELECT last_value FROM public.evil_hits')).rows[0].last_value);
    assert.ok(controlHits >= 2, `the control query ran hostile code (${controlHits} hits)`);

    // Providers and tokens (the test's own pinned connections), before the engine restarts.
    const revocable = await providerWith(ctx, { args: { revocation_endpoint: `${ctx.idp.url}/revoke` } });
    const grants = (await ctx.idp.client.admin('POST', '/admin/grants',
        { client_id: revocable.clientId, subject: unique('u'), count: 5 })).grants;
    const [expired, forced, soon, toRevoke, viaVictim] = grants.map((g) => ({ session: unique('hsp'), grant: g }));
    const store = (l, expiresIn) => ctx.pool.query(
        'SELECT upstream_token.store_upstream_token($1, $2, $3, $4, $5)',
        [l.session, revocable.provider, l.grant.access_token, l.grant.refresh_token, expiresIn]);

    // The engine stops; while none runs, a token whose refresh token is already past its end
    // is stored, so the first maintenance pass of the new engine (under the hostile database
    // path) is the one that marks it.
    const oldPid = (await ctx.pool.query('SELECT worker_pid FROM upstream_token.engine_status')).rows[0].worker_pid;
    await ctx.pool.query('SELECT pg_catalog.pg_terminate_backend($1)', [oldPid]);
    await waitFor(async () => (await ctx.pool.query('SELECT worker_pid FROM upstream_token.engine_status')).rows[0].worker_pid !== oldPid,
        { timeoutMs: 30000, what: 'the engine to exit' });
    const maint = { session: unique('hsp-maint') };
    await ctx.pool.query(`SELECT upstream_token.store_upstream_token($1, $2, 'a-maint', 'r-maint', 3600,
        refresh_expires_in => 1)`, [maint.session, revocable.provider]);
    await store(soon, 330);  // inside the 5-minute window within the next minute: planned by the scan
    await waitFor(async () => {
        const r = (await ctx.pool.query('SELECT worker_pid, ready FROM upstream_token.engine_status')).rows[0];
        return r.ready && r.worker_pid !== oldPid && r.worker_pid !== 0;
    }, { timeoutMs: 30000, what: 'the engine to start again on the hostile database path' });

    // Maintenance and the scan of the new engine.
    await waitFor(async () => (await tokenStatus(ctx.pool, maint.session, revocable.provider))?.status === 'expired',
        { timeoutMs: 15000, what: 'maintenance to mark the refresh-expired token' });
    await waitFor(async () => (await ctx.engine()).planned >= 1, { what: 'the scan to plan the soon-due token' });

    // Victims: superusers on the database's (hostile) default search path.
    const victim = await connect({ application_name: 'victim' });
    victims.push(victim);
    assert.strictEqual((await victim.query('SHOW search_path')).rows[0].search_path, 'public, pg_catalog');
    const P = revocable.provider;
    const q = (sql) => victim.query(sql.replace(/:p\b/g, `'${P}'`));

    // store + on-demand refresh (the engine's begin, exchange, save and NOTIFY).
    await q(`SELECT upstream_token.store_upstream_token('${expired.session}', :p,
        '${expired.grant.access_token}', '${expired.grant.refresh_token}', 0)`);
    const got = (await q(`SELECT upstream_token.get_upstream_token('${expired.session}', :p) AS t`)).rows[0].t;
    assert.ok(got && got !== expired.grant.access_token, 'the victim got a refreshed token');
    await q(`SELECT upstream_token.store_upstream_token('${forced.session}', :p,
        '${forced.grant.access_token}', '${forced.grant.refresh_token}', 3600)`);
    const forcedRow = (await q(`SELECT * FROM upstream_token.refresh_upstream_token('${forced.session}', :p)`)).rows[0];
    assert.strictEqual(forcedRow.refreshed, true, `forced refresh: ${JSON.stringify(forcedRow)}`);
    const creds = (await q(`SELECT * FROM upstream_token.get_upstream_credentials('${forced.session}')`)).rows;
    assert.strictEqual(creds.length, 1);
    assert.ok(creds[0].access_token && creds[0].sqlstate === null, 'credentials served');

    // Revocation: queued in the victim's transaction, delivered by the engine.
    const since = Date.now();
    await q(`SELECT upstream_token.store_upstream_token('${toRevoke.session}', :p,
        '${toRevoke.grant.access_token}', '${toRevoke.grant.refresh_token}', 3600)`);
    assert.strictEqual((await q(`SELECT upstream_token.revoke_upstream_token('${toRevoke.session}', :p) AS n`)).rows[0].n, 1);
    await waitFor(async () => (await revocationQueue(ctx.pool, P)).length === 0,
        { timeoutMs: 20000, what: 'the engine to deliver the revocation' });
    assert.ok((await revokeCalls(ctx.idp, revocable.clientId, since)).length >= 1, 'the provider saw /revoke');

    // Discovery: the engine fetches and saves the metadata; the victim registers from it.
    const discovered = unique('hsp-disc').replace(/[^A-Za-z0-9_.:-]/g, '_').slice(0, 60);
    await q(`SELECT upstream_token.register_provider_from_issuer('${discovered}', '${ctx.idp.url}',
        '${revocable.clientId}', '${revocable.secret}')`);
    assert.strictEqual((await ctx.pool.query('SELECT token_endpoint FROM upstream_token.provider WHERE name = $1',
        [discovered])).rows[0]?.token_endpoint, `${ctx.idp.url}/token`, 'registered from the discovered metadata');

    // The rest of the surface, as the victim.
    await q(`SELECT upstream_token.store_upstream_token('${viaVictim.session}', :p, 'a-victim', 'r-victim', 3600)`);
    assert.strictEqual((await q(`SELECT upstream_token.get_upstream_token('${viaVictim.session}', :p) AS t`)).rows[0].t, 'a-victim');
    assert.strictEqual((await q(`SELECT upstream_token.delete_upstream_token('${viaVictim.session}', :p) AS n`)).rows[0].n, 1);
    const spare = unique('hsp-spare').replace(/[^A-Za-z0-9_.:-]/g, '_').slice(0, 60);
    await q(`SELECT upstream_token.register_provider('${spare}', 'https://spare.example/token', 'c', 's')`);
    await q(`SELECT upstream_token.drop_provider('${spare}')`);
    await q(`SELECT upstream_token.drop_provider('${discovered}', true)`);
    await q('CALL upstream_token.rotate_key()');
    await q(`SELECT * FROM upstream_token.token_status`);
    await q(`SELECT * FROM upstream_token.key_usage`);

    // Nothing hostile ran anywhere: the control's hits are all there are.
    const hits = Number((await admin.query('SELECT last_value FROM public.evil_hits')).rows[0].last_value);
    const log = (await admin.query(`SELECT who, app, what, count(*)::int AS n FROM public.evil_log
                                     WHERE app <> 'hostile-control' GROUP BY 1, 2, 3 ORDER BY 2, 3`)).rows;
    assert.deepStrictEqual(log, [], `hostile code ran: ${JSON.stringify(log)}`);
    assert.strictEqual(hits, controlHits, `hostile objects were called ${hits - controlHits} more time(s)`);
    const su = (await admin.query('SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = $1', [EVIL])).rows[0];
    assert.strictEqual(su.rolsuper, false, 'the hostile role did not become a superuser');
});

test('the engine runs its transactions as the extension owner, security-restricted', async (t) => {
    const ctx = await setup({ poolSize: 4 });
    const admin = await connect();
    t.after(async () => {
        await admin.query('DROP TRIGGER IF EXISTS ut_whoami ON upstream_token.token');
        await admin.query('DROP FUNCTION IF EXISTS public.ut_whoami()');
        await admin.query('DROP TABLE IF EXISTS public.ut_whoami_log');
        await admin.end();
        await ctx.close();
    });
    // A trigger (the owner's own object, trusted) records who saves a refresh and whether a
    // role change is possible there.
    await admin.query('DROP TABLE IF EXISTS public.ut_whoami_log');
    await admin.query('CREATE TABLE public.ut_whoami_log (who text, app text, set_role text)');
    await admin.query(`CREATE FUNCTION public.ut_whoami() RETURNS trigger LANGUAGE plpgsql
        SET search_path = pg_catalog AS $f$
        DECLARE st text := 'allowed';
        BEGIN
            BEGIN
                PERFORM pg_catalog.set_config('role', current_user::text, true);
            EXCEPTION WHEN OTHERS THEN st := SQLSTATE || ': ' || SQLERRM;
            END;
            INSERT INTO public.ut_whoami_log VALUES (current_user, pg_catalog.current_setting('application_name'), st);
            RETURN NEW;
        END $f$`);
    await admin.query(`CREATE TRIGGER ut_whoami AFTER UPDATE ON upstream_token.token
        FOR EACH ROW EXECUTE FUNCTION public.ut_whoami()`);
    const p = await ctx.provider();
    const [login] = await ctx.logins(p, { expiresIn: 0 });
    const tok = (await ctx.pool.query('SELECT upstream_token.get_upstream_token($1, $2) AS t',
        [login.session, p.provider])).rows[0].t;
    assert.ok(tok && tok !== login.grant.access_token, 'refreshed');
    const owner = (await admin.query(`SELECT r.rolname FROM pg_catalog.pg_extension e
        JOIN pg_catalog.pg_roles r ON r.oid = e.extowner WHERE e.extname = 'upstream_token'`)).rows[0].rolname;
    const rows = (await admin.query(`SELECT * FROM public.ut_whoami_log WHERE app = 'upstream_token engine'`)).rows;
    assert.ok(rows.length >= 1, 'the engine saved the refresh');
    for (const r of rows) {
        assert.strictEqual(r.who, owner, 'as the extension\'s owner');
        assert.match(r.set_role, /^42501: cannot set parameter "role" within security-restricted operation/,
            'inside a security-restricted operation');
    }
});
