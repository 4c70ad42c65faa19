'use strict';
// The release files agree with each other and with what `make install` put on the server: the
// control file's default_version is META.json's version and the newest CHANGELOG section; every
// install script's version has a CHANGELOG section, is installed byte for byte, is listed by the
// server and has an update path to the default version; META.json carries what PGXN's spec
// 1.0.0 requires; README links only to files inside the repository.
const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const path = require('node:path');
const { Client } = require('pg');
const { REPO, pgConfig } = require('./harness.js');

const read = (f) => fs.readFileSync(path.join(REPO, f), 'utf8');
const control = read('upstream_token.control');
const defaultVersion = /^default_version\s*=\s*'([^']+)'/m.exec(control)[1];
const scripts = fs.readdirSync(REPO).filter((f) => /^upstream_token--[^-]+(--[^-]+)?\.sql$/.test(f)).sort();
const installVersions = scripts.map((f) => /^upstream_token--([^-]+)\.sql$/.exec(f)).filter(Boolean).map((m) => m[1]);

test('control, META.json and CHANGELOG name the same version; every version has its section', () => {
    const meta = JSON.parse(read('META.json'));
    for (const k of ['name', 'version', 'abstract', 'maintainer', 'license', 'provides', 'meta-spec']) {
        assert.ok(meta[k], `META.json has ${k} (required by the PGXN meta spec)`);
    }
    assert.strictEqual(meta['meta-spec'].version, '1.0.0');
    assert.strictEqual(meta.version, defaultVersion, 'META.json version = control default_version');
    assert.strictEqual(meta.license, 'postgresql');
    const ext = meta.provides.upstream_token;
    assert.strictEqual(ext.version, defaultVersion);
    assert.strictEqual(ext.file, `upstream_token--${defaultVersion}.sql`);
    assert.ok(fs.existsSync(path.join(REPO, ext.file)), `${ext.file} exists`);
    assert.ok(fs.existsSync(path.join(REPO, ext.docfile)), `${ext.docfile} exists`);
    assert.match(meta.prereqs.runtime.requires.PostgreSQL, /^>= 15\.0\.0$/);
    assert.ok(['stable', 'testing', 'unstable'].includes(meta.release_status));

    const sections = [...read('CHANGELOG.md').matchAll(/^## (\d+\.\d+\.\d+)\b/gm)].map((m) => m[1]);
    assert.strictEqual(sections[0], defaultVersion, 'the newest CHANGELOG section is the default version');
    assert.deepStrictEqual([...sections].sort(), [...installVersions].sort(), 'one CHANGELOG section per install script');
    assert.match(read('LICENSE'), /Copyright \(c\) 2026, upstream_token contributors/);
    assert.match(read('LICENSE'), /Permission to use, copy, modify, and distribute this software/);
});

test('make install put every script on the server; each older version updates to the default one', async () => {
    const c = new Client(pgConfig());
    await c.connect();
    try {
        // The server's own share directory (inside its Debian root, when it runs in one).
        const share = (await c.query("SELECT setting FROM pg_catalog.pg_config WHERE name = 'SHAREDIR'")).rows[0].setting;
        for (const f of scripts) {
            const installed = path.join(process.env.UT_PG_ROOT || '/', share, 'extension', f);
            assert.ok(fs.existsSync(installed), `${f} is installed in ${path.dirname(installed)}`);
            assert.ok(fs.readFileSync(installed).equals(fs.readFileSync(path.join(REPO, f))), `the installed ${f} is the repository's`);
        }
        const listed = (await c.query(
            "SELECT version FROM pg_available_extension_versions WHERE name = 'upstream_token' ORDER BY version")).rows.map((r) => r.version);
        assert.deepStrictEqual(listed, [...installVersions].sort());
        const paths = (await c.query(
            "SELECT source, path FROM pg_extension_update_paths('upstream_token') WHERE target = $1", [defaultVersion])).rows;
        for (const v of installVersions.filter((x) => x !== defaultVersion)) {
            const p = paths.find((r) => r.source === v);
            assert.ok(p && p.path, `an update path from ${v} to ${defaultVersion}`);
        }
    } finally { await c.end(); }
});

test('README links and names only files inside the repository', () => {
    const readme = read('README.md');
    assert.doesNotMatch(readme, /\.\.\//, 'no path leaves the repository');
    for (const m of readme.matchAll(/\]\(([^)#]+)(#[^)]*)?\)/g)) {
        if (/^[a-z]+:/.test(m[1])) continue;
        assert.ok(fs.existsSync(path.join(REPO, m[1])), `README links to ${m[1]}, which exists`);
    }
});
