'use strict';
// The application's own token (client credentials) and a token for another API on behalf of a
// signed-in user (RFC 8693 token exchange), both cached and renewed by upstream_token
// (docs/logins.md). Prints lengths, never tokens.
//
// Environment: PG* (connection; the role needs upstream_token_client), APP_PROVIDER (provider
// name), APP_CC_SCOPE / APP_CC_AUDIENCE (scope and audience of the client token, both
// optional), APP_SESSION and APP_EXCHANGE_AUDIENCE (a signed-in session, e.g. from
// web_login.js or device_login.js, and the audience to exchange its token for; the exchange is
// skipped without them), APP_EXCHANGE_SCOPE (optional).
//
//   NODE_PATH=test/node_modules APP_PROVIDER=demo APP_CC_SCOPE=api:read node examples/service_token.js

const { Pool } = require('pg');

const env = (name) => process.env[name] || null;
const provider = env('APP_PROVIDER');
if (!provider) {
    console.error('set APP_PROVIDER to the name of a registered provider');
    process.exit(2);
}

async function main() {
    const pool = new Pool();
    try {
        // Client credentials: the first call may wait for the provider, later ones read the cache.
        const sql = 'SELECT upstream_token.get_client_token($1, $2, $3) AS t';
        const args = [provider, env('APP_CC_SCOPE'), env('APP_CC_AUDIENCE')];
        const first = (await pool.query(sql, args)).rows[0].t;
        const second = (await pool.query(sql, args)).rows[0].t;
        console.log(`client token: ${first.length} characters; second call ${first === second ? 'served the cached token' : 'got another token'}`);

        const session = env('APP_SESSION');
        const audience = env('APP_EXCHANGE_AUDIENCE');
        if (!session || !audience) {
            console.log('token exchange skipped (set APP_SESSION and APP_EXCHANGE_AUDIENCE)');
            return 0;
        }
        try {
            const x = (await pool.query('SELECT upstream_token.exchange_token($1, $2, $3, $4) AS t',
                [session, provider, audience, env('APP_EXCHANGE_SCOPE')])).rows[0].t;
            console.log(`exchanged token for ${audience}: ${x.length} characters`);
        } catch (e) {
            if (e.code === 'UT001') {
                console.log('the session is not signed in with this provider (UT001)');
                return 1;
            }
            if (e.code === 'UT002' || e.code === 'UT004' || e.code === 'UT015') {
                console.log(`the user must sign in (again) first (${e.code})`);
                return 1;
            }
            throw e;
        }
        return 0;
    } finally {
        await pool.end();
    }
}

main().then((code) => process.exit(code), (e) => {
    // For instance UT003 (provider unavailable) or UT010 (the provider refused the client).
    console.error(`${e.code || ''} ${e.message}${e.detail ? ` (${e.detail})` : ''}`);
    process.exit(1);
});
