'use strict';
// The catalog comparison the upgrade test relies on (upgrade_catalog.js), on the suite's cluster:
// every older version plus ALTER EXTENSION UPDATE equals a fresh install (the command the lead
// runs after each merge, run as a command), and the comparison itself sees each kind of
// difference it claims to compare: two fresh installs are identical until one of them gets a
// column, a SET clause, a grant, a comment, a default, an index, a constraint, a trigger, a
// view change, an owner change, and loses a member; each shows in the diff under its own entry.
const test = require('node:test');
const assert = require('node:assert');
const path = require('node:path');
const { execFile } = require('node:child_process');
const { Client } = require('pg');
const { pgConfig, unique } = require('./harness.js');
const { compareDatabases, envConn } = require('./upgrade_catalog.js');

// Runs statements on a database of the suite's cluster, one connection.
async function run(database, ...sql) {
    const c = new Client(pgConfig({ database }));
    c.on('error', () => {});
    await c.connect();
    try { for (const s of sql) await c.query(s); } finally { await c.end(); }
}

test('the upgrade check command: each older version + ALTER EXTENSION UPDATE is identical to a fresh install', async () => {
    const script = path.join(__dirname, 'upgrade_catalog.js');
    const { code, stdout, stderr } = await new Promise((resolve) => {
        execFile(process.execPath, [script], { env: process.env, timeout: 120000 }, (err, out, errOut) =>
            resolve({ code: err ? (err.code ?? 1) : 0, stdout: out, stderr: errOut }));
    });
    assert.strictEqual(code, 0, `upgrade_catalog.js exited ${code}:\n${stdout}${stderr}`);
    assert.match(stdout, /^0\.1\.0 -> \d+\.\d+\.\d+: identical \(\d+ entries\)$/m, stdout);
    // Its scratch databases are gone again.
    const c = new Client(pgConfig());
    await c.connect();
    try {
        const left = await c.query("SELECT datname FROM pg_database WHERE datname LIKE 'ut\\_catalog\\_%'");
        assert.deepStrictEqual(left.rows, []);
    } finally { await c.end(); }
});

test('the comparison sees every kind of difference it compares, each under its own entry', async (t) => {
    const a = unique('ut_cmp_a').replace(/-/g, '_');
    const b = unique('ut_cmp_b').replace(/-/g, '_');
    const admin = pgConfig().database;
    await run(admin, `CREATE DATABASE ${a}`, `CREATE DATABASE ${b}`);
    t.after(() => run(admin, `DROP DATABASE IF EXISTS ${a}`, `DROP DATABASE IF EXISTS ${b}`));
    await run(a, 'CREATE EXTENSION upstream_token');
    await run(b, 'CREATE EXTENSION upstream_token');

    const same = await compareDatabases(envConn(a), envConn(b));
    assert.strictEqual(same.equal, true, `two fresh installs differ:\n${same.text}`);
    assert.ok(same.entries > 200, `${same.entries} entries compared`);

    await run(b,
        'ALTER TABLE upstream_token.discovery ADD COLUMN extra integer',
        "ALTER FUNCTION upstream_token.refresh_lock_key(text, text) SET work_mem = '1MB'",
        'GRANT SELECT ON upstream_token.key_usage TO upstream_token_client',
        "COMMENT ON COLUMN upstream_token.token.scope IS 'changed'",
        "ALTER TABLE upstream_token.provider ALTER COLUMN default_lifetime SET DEFAULT '2 hours'",
        'CREATE INDEX discovery_fetched_idx ON upstream_token.discovery (fetched_at)',
        'ALTER TABLE upstream_token.revocation ADD CONSTRAINT revocation_attempts_check CHECK (attempts >= 0)',
        `CREATE FUNCTION upstream_token.noop_trigger() RETURNS trigger LANGUAGE plpgsql
             AS $$BEGIN RETURN NEW; END$$`,
        `CREATE TRIGGER noop BEFORE UPDATE ON upstream_token.discovery
             FOR EACH ROW EXECUTE FUNCTION upstream_token.noop_trigger()`,
        'CREATE OR REPLACE VIEW upstream_token.engine_status AS SELECT * FROM upstream_token.engine_stats() WHERE true',
        'ALTER FUNCTION upstream_token.current_key_id() OWNER TO upstream_token_client',
        'ALTER EXTENSION upstream_token DROP VIEW upstream_token.key_usage');
    const r = await compareDatabases(envConn(a), envConn(b), { aName: 'a', bName: 'b' });
    for (const line of r.text.split('\n').slice(0, 12)) t.diagnostic(line);
    assert.strictEqual(r.equal, false);
    const keys = r.differences.map((d) => d.key);
    for (const want of [
        'column upstream_token.discovery.extra',
        'column order of upstream_token.discovery',
        'function upstream_token.refresh_lock_key(text,text): definition',
        'relation upstream_token.key_usage',
        'comment on column scope of table upstream_token.token',
        'column upstream_token.provider.default_lifetime',
        'index upstream_token.discovery_fetched_idx',
        'constraint revocation_attempts_check on upstream_token.revocation',
        'trigger noop on upstream_token.discovery',
        'view definition upstream_token.engine_status',
        'function upstream_token.current_key_id(): owner',
        'function upstream_token.current_key_id(): acl',
        'member view upstream_token.key_usage',
        'psql \\dx+ upstream_token',
    ]) assert.ok(keys.includes(want), `the diff names "${want}"; it has:\n${keys.join('\n')}`);
    // The readable form: one header line per entry and the two sides of the change.
    assert.match(r.text, /^only in b: column upstream_token\.discovery\.extra\n {4}\+ type integer/m);
    assert.match(r.text, /^differs: column order of upstream_token\.discovery\n {4}- issuer, document, fetched_at\n {4}\+ issuer, document, fetched_at, extra$/m);
    assert.match(r.text, /^only in a: member view upstream_token\.key_usage$/m);
});
