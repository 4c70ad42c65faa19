'use strict';
// A command-line sign-in with the device authorization grant (RFC 8628): upstream_token asks
// the provider for a code, polls until the user approves it in a browser elsewhere, stores the
// tokens and announces the outcome on the channel upstream_token_events (docs/logins.md).
//
// Environment: PG* (connection; the role needs upstream_token_client), APP_PROVIDER (provider
// name), APP_SESSION (the session to sign in; default a new random one), APP_SCOPE (default:
// the provider's scope).
//
//   NODE_PATH=test/node_modules APP_PROVIDER=demo node examples/device_login.js

const crypto = require('node:crypto');
const { Client } = require('pg');

const provider = process.env.APP_PROVIDER;
if (!provider) {
    console.error('set APP_PROVIDER to the name of a registered provider');
    process.exit(2);
}
const session = process.env.APP_SESSION || `device-${crypto.randomBytes(16).toString('hex')}`;
const scope = process.env.APP_SCOPE || null;

async function main() {
    // One connection for everything: a notification reaches only the connection that listens.
    const db = new Client();
    await db.connect();

    let settle;
    const outcome = new Promise((resolve) => { settle = resolve; });
    db.on('notification', (n) => {
        let e;
        try { e = JSON.parse(n.payload); } catch { return; }
        if (e.session !== session || e.provider !== provider) return;
        if (e.event === 'login_completed' || e.event === 'login_failed') settle(e.event);
    });
    // Listen before beginning, so the outcome cannot be announced before we are listening.
    await db.query('LISTEN upstream_token_events');

    const d = (await db.query('SELECT * FROM upstream_token.begin_device_login($1, $2, $3)',
        [session, provider, scope])).rows[0];
    console.log(`session:      ${session}`);
    console.log(`open:         ${d.verification_uri}`);
    console.log(`and enter:    ${d.user_code}`);
    if (d.verification_uri_complete) console.log(`(or open ${d.verification_uri_complete})`);
    console.log(`before:       ${d.expires_at.toISOString()}`);

    // A notification is lost if the connection drops; login_status is the record to fall back
    // on, and it also tells when the code expires with nobody approving it.
    const check = async () => {
        const s = (await db.query(
            `SELECT status FROM upstream_token.login_status
              WHERE session = $1 AND provider = $2 AND flow = 'device_code'
              ORDER BY created_at DESC LIMIT 1`, [session, provider])).rows[0];
        if (s && s.status === 'completed') settle('login_completed');
        else if (s && s.status === 'failed') settle('login_failed');
        else if (Date.now() > d.expires_at.getTime() + 5000) settle('login_failed');
    };
    const timer = setInterval(() => check().catch(() => {}), 10000);
    const event = await outcome;
    clearInterval(timer);

    if (event === 'login_failed') {
        const s = (await db.query(
            `SELECT status, error FROM upstream_token.login_status
              WHERE session = $1 AND provider = $2 ORDER BY created_at DESC LIMIT 1`,
            [session, provider])).rows[0];
        console.log(`sign-in failed: ${s ? s.error || s.status : 'no login found'}`);
        await db.end();
        return 1;
    }
    const t = (await db.query('SELECT upstream_token.get_upstream_token($1, $2) AS t',
        [session, provider])).rows[0].t;
    console.log(`signed in; access token: ${t.length} characters`);
    await db.end();
    return 0;
}

main().then((code) => process.exit(code), (e) => {
    console.error(`${e.code || ''} ${e.message}`);
    process.exit(1);
});
