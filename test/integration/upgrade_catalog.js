'use strict';
// Is an upgraded upstream_token the same as a fresh install? The catalog of one database's
// installed extension, reduced to comparable text (one entry per object and property), and a
// readable diff of two such snapshots. Used by the upgrade tests and on its own:
//
//   eval "$(bash scripts/cluster.sh env)"
//   node test/integration/upgrade_catalog.js            # every older version + UPDATE vs fresh
//   node test/integration/upgrade_catalog.js --from 0.1.0 [--keep]
//   node test/integration/upgrade_catalog.js --upgraded DB1 --fresh DB2   # two existing databases
//
// Scratch mode creates two databases in the PG* cluster (the upgraded one: CREATE EXTENSION
// VERSION <from>, then ALTER EXTENSION UPDATE; the fresh one: CREATE EXTENSION), compares,
// prints the diff and drops them again (--keep leaves them). Exit status 0: identical; 1: differs.
//
// Compared: psql's `\dx+ upstream_token`; the pg_extension row (version, schema, owner, tables
// kept by pg_dump); extension membership (pg_depend 'e'); schema owner and ACL; every relation
// of the schema or the extension (kind, persistence, RLS flags, reloptions, owner, ACL), its
// columns (type, not null, default, identity, generated, collation, column ACL) and their order;
// view definitions; indexes; sequences (parameters, owning column); constraints; triggers;
// policies; rules; extended statistics; functions and procedures (pg_get_functiondef: volatility,
// strictness, SECURITY DEFINER, parallel, cost, SET clauses, body; arguments with defaults;
// result; owner; ACL); types (enum labels, domain base, owner, ACL); event triggers of the
// extension; comments on all of these (columns too); pg_init_privs (the privileges pg_dump treats
// as the extension's own). ACLs are compared as sorted sets of aclitems with NULL expanded to the
// owner's defaults (acldefault), so the order of GRANTs does not matter but every grantee,
// privilege and grantor does. Column order matters (SELECT * and INSERT without a column list
// see it): a column an upgrade adds with ALTER TABLE lands at the end, so the install script
// must list it last too. Not compared: data, statistics, sequence positions, the cluster-wide
// role upstream_token_client itself (one per cluster), objects of other kinds beyond their
// membership (operators, casts, ...: the extension has none).

const path = require('node:path');
const fs = require('node:fs');
const { execFileSync } = require('node:child_process');
const { Client } = require('pg');

const EXT = 'upstream_token';
const SCHEMA = 'upstream_token';

// The sorted aclitems of an ACL column, NULL read as the owner's default privileges (kind: an
// SQL expression giving acldefault's object type letter).
function acl(column, kind, owner) {
    return `(SELECT pg_catalog.string_agg(a::text, ' ' ORDER BY a::text)
               FROM pg_catalog.unnest(coalesce(${column}, pg_catalog.acldefault(${kind}, ${owner}))) a)`;
}

// Objects of the extension (pg_depend 'e') and the schema: the set every query below covers.
const WITH = `
WITH ext AS (SELECT * FROM pg_catalog.pg_extension WHERE extname = '${EXT}'),
     nsp AS (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = '${SCHEMA}'),
     mem AS (SELECT classid, objid FROM pg_catalog.pg_depend
              WHERE refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
                AND refobjid = (SELECT oid FROM ext) AND deptype = 'e'),
     rel AS (SELECT c.* , c.oid AS roid FROM pg_catalog.pg_class c
              WHERE c.relnamespace = (SELECT oid FROM nsp)
                 OR (('pg_catalog.pg_class'::pg_catalog.regclass, c.oid) IN (SELECT classid, objid FROM mem))),
     fn AS (SELECT p.*, p.oid AS poid FROM pg_catalog.pg_proc p
             WHERE p.pronamespace = (SELECT oid FROM nsp)
                OR (('pg_catalog.pg_proc'::pg_catalog.regclass, p.oid) IN (SELECT classid, objid FROM mem)))`;

// Each query yields (k, v): k names the object and property, v is its comparable text.
const QUERIES = {
    extension: `${WITH}
        SELECT 'extension ${EXT}' AS k,
               pg_catalog.format('version %s, schema %s, relocatable %s, owner %s, dumped tables [%s]',
                   e.extversion, e.extnamespace::pg_catalog.regnamespace, e.extrelocatable,
                   pg_catalog.pg_get_userbyid(e.extowner),
                   (SELECT pg_catalog.string_agg(pg_catalog.format('%s WHERE %L', x.c::pg_catalog.regclass, x.cond),
                                                 ', ' ORDER BY x.c::pg_catalog.regclass::text)
                      FROM ROWS FROM (pg_catalog.unnest(e.extconfig), pg_catalog.unnest(e.extcondition)) AS x(c, cond))) AS v
          FROM ext e`,
    membership: `${WITH}
        SELECT 'member ' || pg_catalog.pg_describe_object(classid, objid, 0) AS k, 'yes' AS v FROM mem`,
    schema: `${WITH}
        SELECT 'schema ' || n.nspname AS k,
               pg_catalog.format('owner %s; acl %s', pg_catalog.pg_get_userbyid(n.nspowner),
                                 ${acl('n.nspacl', "'n'", 'n.nspowner')}) AS v
          FROM pg_catalog.pg_namespace n WHERE n.oid = (SELECT oid FROM nsp)`,
    relations: `${WITH}
        SELECT 'relation ' || r.roid::pg_catalog.regclass AS k,
               pg_catalog.format('kind %s, persistence %s, row security %s (forced %s), options %s, replica identity %s, owner %s; acl %s',
                   r.relkind, r.relpersistence, r.relrowsecurity, r.relforcerowsecurity,
                   coalesce(r.reloptions::text, '{}'), r.relreplident, pg_catalog.pg_get_userbyid(r.relowner),
                   CASE WHEN r.relkind IN ('i', 'I') THEN '-'
                        ELSE ${acl('r.relacl', "CASE WHEN r.relkind = 'S' THEN 's' ELSE 'r' END::\"char\"", 'r.relowner')}
                   END) AS v
          FROM rel r`,
    columns: `${WITH}
        SELECT 'column ' || r.roid::pg_catalog.regclass || '.' || pg_catalog.quote_ident(a.attname) AS k,
               pg_catalog.format('type %s, %s, default %s, identity %L, generated %L, collation %s, acl %s',
                   pg_catalog.format_type(a.atttypid, a.atttypmod),
                   CASE WHEN a.attnotnull THEN 'not null' ELSE 'null' END,
                   coalesce(pg_catalog.pg_get_expr(d.adbin, d.adrelid), '(none)'),
                   a.attidentity, a.attgenerated,
                   CASE WHEN a.attcollation = t.typcollation THEN '(type default)'
                        ELSE (SELECT co.collname FROM pg_catalog.pg_collation co WHERE co.oid = a.attcollation) END,
                   coalesce((SELECT pg_catalog.string_agg(x::text, ' ' ORDER BY x::text)
                               FROM pg_catalog.unnest(a.attacl) x), '(none)')) AS v
          FROM rel r
          JOIN pg_catalog.pg_attribute a ON a.attrelid = r.roid AND a.attnum > 0 AND NOT a.attisdropped
          JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
          LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
         WHERE r.relkind IN ('r', 'p', 'v', 'm', 'c', 'f')`,
    columnOrder: `${WITH}
        SELECT 'column order of ' || r.roid::pg_catalog.regclass AS k,
               pg_catalog.string_agg(pg_catalog.quote_ident(a.attname), ', ' ORDER BY a.attnum) AS v
          FROM rel r
          JOIN pg_catalog.pg_attribute a ON a.attrelid = r.roid AND a.attnum > 0 AND NOT a.attisdropped
         WHERE r.relkind IN ('r', 'p', 'v', 'm', 'c', 'f')
         GROUP BY r.roid`,
    views: `${WITH}
        SELECT 'view definition ' || r.roid::pg_catalog.regclass AS k,
               pg_catalog.pg_get_viewdef(r.roid, true) AS v
          FROM rel r WHERE r.relkind IN ('v', 'm')`,
    indexes: `${WITH}
        SELECT 'index ' || r.roid::pg_catalog.regclass AS k,
               pg_catalog.pg_get_indexdef(r.roid) ||
               CASE WHEN i.indisclustered THEN ' (clustered)' ELSE '' END ||
               CASE WHEN i.indisreplident THEN ' (replica identity)' ELSE '' END AS v
          FROM rel r JOIN pg_catalog.pg_index i ON i.indexrelid = r.roid`,
    sequences: `${WITH}
        SELECT 'sequence ' || r.roid::pg_catalog.regclass AS k,
               pg_catalog.format('type %s, start %s, increment %s, min %s, max %s, cache %s, cycle %s, owned by %s',
                   s.seqtypid::pg_catalog.regtype, s.seqstart, s.seqincrement, s.seqmin, s.seqmax, s.seqcache, s.seqcycle,
                   coalesce((SELECT pg_catalog.pg_describe_object(dd.refclassid, dd.refobjid, dd.refobjsubid) || ' (' || dd.deptype::text || ')'
                               FROM pg_catalog.pg_depend dd
                              WHERE dd.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND dd.objid = r.roid
                                AND dd.deptype IN ('a', 'i') AND dd.refobjsubid > 0), '(none)')) AS v
          FROM rel r JOIN pg_catalog.pg_sequence s ON s.seqrelid = r.roid`,
    constraints: `${WITH}
        SELECT 'constraint ' || pg_catalog.quote_ident(c.conname) || ' on ' ||
               CASE WHEN c.conrelid <> 0 THEN c.conrelid::pg_catalog.regclass::text
                    ELSE 'domain ' || c.contypid::pg_catalog.regtype::text END AS k,
               pg_catalog.format('type %s: %s%s', c.contype, pg_catalog.pg_get_constraintdef(c.oid),
                                 CASE WHEN c.convalidated THEN '' ELSE ' (not validated)' END) AS v
          FROM pg_catalog.pg_constraint c
         WHERE c.connamespace = (SELECT oid FROM nsp) OR c.conrelid IN (SELECT roid FROM rel)`,
    triggers: `${WITH}
        SELECT 'trigger ' || pg_catalog.quote_ident(tg.tgname) || ' on ' || tg.tgrelid::pg_catalog.regclass AS k,
               pg_catalog.pg_get_triggerdef(tg.oid) || ' (enabled ' || tg.tgenabled::text || ')' AS v
          FROM pg_catalog.pg_trigger tg
         WHERE tg.tgrelid IN (SELECT roid FROM rel) AND NOT tg.tgisinternal`,
    policies: `${WITH}
        SELECT 'policy ' || pg_catalog.quote_ident(p.polname) || ' on ' || p.polrelid::pg_catalog.regclass AS k,
               pg_catalog.format('cmd %s, permissive %s, roles %s, using %s, check %s', p.polcmd, p.polpermissive,
                   (SELECT pg_catalog.string_agg(CASE WHEN ro = 0 THEN 'public' ELSE pg_catalog.pg_get_userbyid(ro) END, ',' ORDER BY 1)
                      FROM pg_catalog.unnest(p.polroles) ro),
                   pg_catalog.pg_get_expr(p.polqual, p.polrelid), pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid)) AS v
          FROM pg_catalog.pg_policy p WHERE p.polrelid IN (SELECT roid FROM rel)`,
    rules: `${WITH}
        SELECT 'rule ' || pg_catalog.quote_ident(ru.rulename) || ' on ' || ru.ev_class::pg_catalog.regclass AS k,
               pg_catalog.pg_get_ruledef(ru.oid) AS v
          FROM pg_catalog.pg_rewrite ru
         WHERE ru.ev_class IN (SELECT roid FROM rel) AND ru.rulename <> '_RETURN'`,
    statistics: `${WITH}
        SELECT 'statistics ' || s.oid::pg_catalog.regclass::text AS k, pg_catalog.pg_get_statisticsobjdef(s.oid) AS v
          FROM pg_catalog.pg_statistic_ext s
         WHERE s.stxnamespace = (SELECT oid FROM nsp) OR s.stxrelid IN (SELECT roid FROM rel)`,
    functions: `${WITH}
        SELECT pg_catalog.format('%s %s: %s', CASE f.prokind WHEN 'p' THEN 'procedure' WHEN 'a' THEN 'aggregate'
                                                 WHEN 'w' THEN 'window function' ELSE 'function' END,
                                 f.poid::pg_catalog.regprocedure, x.prop) AS k, x.val AS v
          FROM fn f,
               LATERAL (VALUES
                   ('definition', CASE WHEN f.prokind = 'a' THEN '(aggregate)' ELSE pg_catalog.pg_get_functiondef(f.poid) END),
                   ('arguments', pg_catalog.pg_get_function_arguments(f.poid)),
                   ('result', coalesce(pg_catalog.pg_get_function_result(f.poid), '(procedure)')),
                   ('owner', pg_catalog.pg_get_userbyid(f.proowner)),
                   ('acl', ${acl('f.proacl', "'f'", 'f.proowner')})) AS x(prop, val)`,
    types: `${WITH}
        SELECT 'type ' || pg_catalog.format_type(t.oid, NULL) AS k,
               pg_catalog.format('typtype %s, owner %s, acl %s%s', t.typtype, pg_catalog.pg_get_userbyid(t.typowner),
                   ${acl('t.typacl', "'T'", 't.typowner')},
                   CASE t.typtype
                       WHEN 'e' THEN ', labels ' || (SELECT pg_catalog.string_agg(en.enumlabel, ',' ORDER BY en.enumsortorder)
                                                       FROM pg_catalog.pg_enum en WHERE en.enumtypid = t.oid)
                       WHEN 'd' THEN pg_catalog.format(', base %s, not null %s, default %s',
                                         pg_catalog.format_type(t.typbasetype, t.typtypmod), t.typnotnull,
                                         coalesce(t.typdefault, '(none)'))
                       ELSE '' END) AS v
          FROM pg_catalog.pg_type t
         WHERE (t.typnamespace = (SELECT oid FROM nsp)
                OR (('pg_catalog.pg_type'::pg_catalog.regclass, t.oid) IN (SELECT classid, objid FROM mem)))
           AND NOT (t.typelem <> 0 AND t.typlen = -1 AND t.typcategory = 'A')        -- implicit array types
           AND NOT (t.typrelid <> 0 AND (SELECT c.relkind FROM pg_catalog.pg_class c WHERE c.oid = t.typrelid) <> 'c')`,
    eventTriggers: `${WITH}
        SELECT 'event trigger ' || pg_catalog.quote_ident(e.evtname) AS k,
               pg_catalog.format('on %s, function %s, tags %s, enabled %s, owner %s', e.evtevent,
                   e.evtfoid::pg_catalog.regprocedure, coalesce(e.evttags::text, '(all)'), e.evtenabled,
                   pg_catalog.pg_get_userbyid(e.evtowner)) AS v
          FROM pg_catalog.pg_event_trigger e
         WHERE ('pg_catalog.pg_event_trigger'::pg_catalog.regclass, e.oid) IN (SELECT classid, objid FROM mem)`,
    comments: `${WITH}
        SELECT 'comment on ' || pg_catalog.pg_describe_object(d.classoid, d.objoid, d.objsubid) AS k, d.description AS v
          FROM pg_catalog.pg_description d
         WHERE (d.classoid, d.objoid) IN (SELECT classid, objid FROM mem)
            OR (d.classoid = 'pg_catalog.pg_extension'::pg_catalog.regclass AND d.objoid = (SELECT oid FROM ext))
            OR (d.classoid = 'pg_catalog.pg_namespace'::pg_catalog.regclass AND d.objoid = (SELECT oid FROM nsp))
            OR (d.classoid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objoid IN (SELECT roid FROM rel))
            OR (d.classoid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND d.objoid IN (SELECT poid FROM fn))
            OR (d.classoid = 'pg_catalog.pg_constraint'::pg_catalog.regclass AND d.objoid IN
                   (SELECT c.oid FROM pg_catalog.pg_constraint c
                     WHERE c.connamespace = (SELECT oid FROM nsp) OR c.conrelid IN (SELECT roid FROM rel)))
            OR (d.classoid = 'pg_catalog.pg_trigger'::pg_catalog.regclass AND d.objoid IN
                   (SELECT tg.oid FROM pg_catalog.pg_trigger tg WHERE tg.tgrelid IN (SELECT roid FROM rel)))
            OR (d.classoid = 'pg_catalog.pg_policy'::pg_catalog.regclass AND d.objoid IN
                   (SELECT p.oid FROM pg_catalog.pg_policy p WHERE p.polrelid IN (SELECT roid FROM rel)))
            OR (d.classoid = 'pg_catalog.pg_type'::pg_catalog.regclass AND d.objoid IN
                   (SELECT t.oid FROM pg_catalog.pg_type t WHERE t.typnamespace = (SELECT oid FROM nsp)))`,
    initPrivs: `${WITH}
        SELECT 'initial privileges (pg_init_privs) of ' || pg_catalog.pg_describe_object(ip.classoid, ip.objoid, ip.objsubid) AS k,
               pg_catalog.format('type %s: %s', ip.privtype,
                   (SELECT pg_catalog.string_agg(x::text, ' ' ORDER BY x::text) FROM pg_catalog.unnest(ip.initprivs) x)) AS v
          FROM pg_catalog.pg_init_privs ip
         WHERE (ip.classoid, ip.objoid) IN (SELECT classid, objid FROM mem)
            OR (ip.classoid = 'pg_catalog.pg_namespace'::pg_catalog.regclass AND ip.objoid = (SELECT oid FROM nsp))
            OR (ip.classoid = 'pg_catalog.pg_class'::pg_catalog.regclass AND ip.objoid IN (SELECT roid FROM rel))
            OR (ip.classoid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND ip.objoid IN (SELECT poid FROM fn))`,
};

// The psql binary of the server under test (UT_PG_BIN), or the one on PATH.
function psqlPath() {
    const bin = process.env.UT_PG_BIN;
    if (bin && fs.existsSync(path.join(bin, 'psql'))) return path.join(bin, 'psql');
    return 'psql';
}

// psql's own listing of the extension's objects (`\dx+`), as a user would compare it.
function dxPlus(conn) {
    return execFileSync(psqlPath(), ['-X', '-q', '-P', 'pager=off', '-h', conn.host, '-p', String(conn.port),
        '-U', conn.user || 'postgres', '-d', conn.database, '-c', `\\dx+ ${EXT}`],
    { encoding: 'utf8', env: { ...process.env, PGOPTIONS: '' } });
}

// The snapshot of one database: Map of "object: property" -> text, sorted by key.
async function catalogSnapshot(conn) {
    const c = new Client(conn);
    c.on('error', () => {});
    await c.connect();
    const entries = [];
    try {
        // Names print schema-qualified whatever the caller's search_path.
        await c.query('SET search_path = pg_catalog');
        const ext = await c.query('SELECT extversion FROM pg_catalog.pg_extension WHERE extname = $1', [EXT]);
        if (ext.rows.length !== 1) throw new Error(`${EXT} is not installed in database ${conn.database}`);
        for (const [name, sql] of Object.entries(QUERIES)) {
            let rows;
            try {
                rows = (await c.query(sql)).rows;
            } catch (e) {
                throw new Error(`catalog query "${name}" failed in ${conn.database}: ${e.message}`);
            }
            for (const r of rows) entries.push([r.k, r.v === null ? '(null)' : String(r.v)]);
        }
    } finally {
        await c.end().catch(() => {});
    }
    entries.push([`psql \\dx+ ${EXT}`, dxPlus(conn)]);
    const map = new Map();
    for (const [k, v] of entries.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))) {
        map.set(k, map.has(k) ? `${map.get(k)}\n${v}` : v);
    }
    return map;
}

// A unified-style line diff of two texts (LCS; values are small), with 2 lines of context.
function lineDiff(a, b, indent) {
    const x = a.split('\n');
    const y = b.split('\n');
    const n = x.length;
    const m = y.length;
    const lcs = Array.from({ length: n + 1 }, () => new Int32Array(m + 1));
    for (let i = n - 1; i >= 0; i--) {
        for (let j = m - 1; j >= 0; j--) {
            lcs[i][j] = x[i] === y[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
        }
    }
    const ops = [];
    let i = 0;
    let j = 0;
    while (i < n || j < m) {
        if (i < n && j < m && x[i] === y[j]) { ops.push([' ', x[i]]); i++; j++; }
        else if (i < n && (j === m || lcs[i + 1][j] >= lcs[i][j + 1])) { ops.push(['-', x[i]]); i++; }
        else { ops.push(['+', y[j]]); j++; }
    }
    const keep = ops.map((o, k) => o[0] !== ' ' || ops.slice(Math.max(0, k - 2), k + 3).some((p) => p[0] !== ' '));
    const out = [];
    let skipped = false;
    ops.forEach((o, k) => {
        if (keep[k]) { out.push(`${indent}${o[0]} ${o[1]}`); skipped = false; }
        else if (!skipped) { out.push(`${indent}  ...`); skipped = true; }
    });
    return out.join('\n');
}

// The lines of a value present on one side only, marked with that side's sign.
function sideOnly(sign, value) {
    return (value === '' ? ['(empty)'] : value.replace(/\n+$/, '').split('\n')).map((l) => `    ${sign} ${l}`).join('\n');
}

// For two one-line lists (column order, ACLs) the first item where they part, as a hint line.
function firstItem(a, b) {
    if (a.includes('\n') || b.includes('\n') || !a.includes(', ')) return [];
    const x = a.split(', ');
    const y = b.split(', ');
    const i = x.findIndex((v, k) => v !== y[k]);
    const at = i < 0 ? x.length : i;
    return [`    (first difference at item ${at + 1}: ${x[at] ?? '(end)'} vs ${y[at] ?? '(end)'})`];
}

// Compares two snapshots: {equal, differences: [{key, a, b}], text} (text: readable report).
function diffSnapshots(a, b, { aName = 'upgraded', bName = 'fresh' } = {}) {
    const keys = [...new Set([...a.keys(), ...b.keys()])].sort();
    const differences = keys.filter((k) => a.get(k) !== b.get(k)).map((k) => ({ key: k, a: a.get(k), b: b.get(k) }));
    const lines = [];
    if (differences.length > 0) {
        lines.push(`catalog differs in ${differences.length} of ${keys.length} entries ('-' ${aName}, '+' ${bName}):`);
        for (const d of differences) {
            if (d.a === undefined) lines.push(`only in ${bName}: ${d.key}`, sideOnly('+', d.b));
            else if (d.b === undefined) lines.push(`only in ${aName}: ${d.key}`, sideOnly('-', d.a));
            else lines.push(`differs: ${d.key}`, lineDiff(d.a, d.b, '    '), ...firstItem(d.a, d.b));
        }
    }
    return { equal: differences.length === 0, differences, entries: keys.length, text: lines.join('\n') };
}

// Snapshots two databases and compares them (a: the upgraded one, b: the fresh one).
async function compareDatabases(connA, connB, names = {}) {
    const [a, b] = [await catalogSnapshot(connA), await catalogSnapshot(connB)];
    return diffSnapshots(a, b, { aName: names.aName || connA.database, bName: names.bName || connB.database });
}

// Connection settings from the PG* environment (scripts/cluster.sh env), for another database.
function envConn(database) {
    for (const v of ['PGHOST', 'PGPORT']) {
        if (!process.env[v]) throw new Error(`${v} is not set: eval "$(bash scripts/cluster.sh env)" first`);
    }
    return { host: process.env.PGHOST, port: Number(process.env.PGPORT), user: process.env.PGUSER || 'postgres',
        database: database || process.env.PGDATABASE || 'postgres' };
}

// Scratch mode: for each older version (all installable ones by default), install it in a new
// database and ALTER EXTENSION UPDATE; compare with a fresh install of the default version.
// Returns [{from, to, result}]; drops the databases unless keep.
async function checkUpgradePaths({ base = envConn('postgres'), from = null, keep = false, log = () => {} } = {}) {
    const admin = new Client(base);
    admin.on('error', () => {});
    await admin.connect();
    const tag = `${process.pid}_${Date.now().toString(36)}`;
    const created = [];
    const results = [];
    // Runs statements in a database of its own connection (CREATE/ALTER EXTENSION).
    const inDb = async (database, ...sql) => {
        const c = new Client({ ...base, database });
        c.on('error', () => {});
        await c.connect();
        try { for (const s of sql) await c.query(s); } finally { await c.end().catch(() => {}); }
    };
    try {
        const def = (await admin.query('SELECT default_version FROM pg_catalog.pg_available_extensions WHERE name = $1', [EXT])).rows[0];
        if (!def) throw new Error(`${EXT} is not installed on this server (make install)`);
        const versions = from ? [].concat(from) : (await admin.query(
            'SELECT version FROM pg_catalog.pg_available_extension_versions WHERE name = $1 AND version <> $2 ORDER BY version',
            [EXT, def.default_version])).rows.map((r) => r.version);
        const freshDb = `ut_catalog_fresh_${tag}`;
        await admin.query(`CREATE DATABASE ${freshDb}`);
        created.push(freshDb);
        await inDb(freshDb, `CREATE EXTENSION ${EXT}`);
        const fresh = await catalogSnapshot({ ...base, database: freshDb });
        for (const [i, v] of versions.entries()) {
            const db = `ut_catalog_upgraded_${i}_${tag}`;
            await admin.query(`CREATE DATABASE ${db}`);
            created.push(db);
            await inDb(db, `CREATE EXTENSION ${EXT} VERSION '${v.replace(/'/g, "''")}'`, `ALTER EXTENSION ${EXT} UPDATE`);
            const upgraded = await catalogSnapshot({ ...base, database: db });
            const result = diffSnapshots(upgraded, fresh, { aName: 'upgraded', bName: 'fresh' });
            log(`${v} -> ${def.default_version}: ${result.equal ? `identical (${result.entries} entries)`
                : `upgraded = ${v} + ALTER EXTENSION UPDATE (database ${db}), fresh = CREATE EXTENSION (database ${freshDb})\n${result.text}`}`);
            results.push({ from: v, to: def.default_version, result });
        }
    } finally {
        if (!keep) for (const db of created) await admin.query(`DROP DATABASE IF EXISTS ${db}`).catch(() => {});
        else if (created.length) log(`kept databases: ${created.join(', ')}`);
        await admin.end().catch(() => {});
    }
    return results;
}

module.exports = { catalogSnapshot, diffSnapshots, compareDatabases, checkUpgradePaths, envConn };

// The command line (see the top of the file).
if (require.main === module) {
    const args = process.argv.slice(2);
    const opt = (name) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : null; };
    (async () => {
        if (opt('--upgraded') || opt('--fresh')) {
            if (!opt('--upgraded') || !opt('--fresh')) throw new Error('give both --upgraded DB and --fresh DB');
            const r = await compareDatabases(envConn(opt('--upgraded')), envConn(opt('--fresh')));
            console.log(r.equal ? `identical (${r.entries} entries)` : r.text);
            return r.equal;
        }
        const results = await checkUpgradePaths({ from: opt('--from'), keep: args.includes('--keep'), log: (s) => console.log(s) });
        if (results.length === 0) console.log('no older version to upgrade from');
        return results.every((r) => r.result.equal);
    })().then((ok) => { process.exitCode = ok ? 0 : 1; }, (e) => { console.error(e.message); process.exitCode = 2; });
}
