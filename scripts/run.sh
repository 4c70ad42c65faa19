#!/usr/bin/env bash
# The product at work: builds and installs the extension, starts a local cluster with it
# preloaded and a local HTTPS identity provider, stores a few logins with short-lived
# tokens, and shows them being refreshed by the engine while an "app" keeps reading them.
#
#   scripts/run.sh            # runs for 60 s (UT_DEMO_SECONDS to change, 0 = until Ctrl-C)
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
seconds=${UT_DEMO_SECONDS:-60}
export UT_CLUSTER_DIR=${UT_CLUSTER_DIR:-$here/.tmp/demo-cluster} UT_PORT=${UT_PORT:-25433}
certs=$here/.tmp/certs

bash scripts/deps.sh
echo "== building and installing upstream_token"
make -s -j2 && make -s install
echo "== starting a throwaway cluster on port $UT_PORT (upstream_token preloaded)"
bash scripts/cluster.sh init
bash scripts/cluster.sh start
eval "$(bash scripts/cluster.sh env)"

mkdir -p "$certs" && chmod 755 "$here/.tmp"
bash test/idp/make-certs.sh "$certs" && chmod 755 "$certs"
idp_log=$UT_CLUSTER_DIR/idp.out
node test/idp/server.js --port 0 --cert "$certs/server.pem" --key "$certs/server.key" >"$idp_log" 2>&1 &
idp_pid=$!
cleanup() { kill "$idp_pid" 2>/dev/null || true; bash scripts/cluster.sh stop; }
trap cleanup EXIT
for _ in $(seq 100); do grep -q '^listening' "$idp_log" && break; sleep 0.1; done
port=$(sed -n 's/^listening \([0-9]*\)/\1/p' "$idp_log")
[ -n "$port" ] || { echo "identity provider did not start"; cat "$idp_log"; exit 1; }
idp=https://127.0.0.1:$port
admin() { curl -sf --cacert "$certs/ca.pem" -H 'content-type: application/json' -X "$1" "$idp/admin$2" ${3:+-d "$3"}; }
echo "== identity provider at $idp (access tokens live 20 s, refresh tokens rotate)"

secret=$(openssl rand -hex 16)
admin POST /clients "{\"client_id\":\"demo-app\",\"client_secret\":\"$secret\",\"access_ttl\":20,\"id_token\":true}" >/dev/null
psql -qX -v ON_ERROR_STOP=1 <<SQL
CREATE EXTENSION upstream_token;
ALTER SYSTEM SET upstream_token.ca_file = '$certs/ca.pem';
SELECT pg_reload_conf();
SELECT upstream_token.register_provider('demo-idp', '$idp/token', 'demo-app', '$secret',
                                        refresh_threshold => '8 seconds');
SQL
echo "== five users log in (the app stores what its code exchange returned)"
GRANTS=$(admin POST /grants '{"client_id":"demo-app","subject":"user","count":5}') node - <<'JS' | psql -qX -v ON_ERROR_STOP=1 >/dev/null
// Turns the minted logins into store_upstream_token calls (values passed as literals).
const lit = (s) => "'" + String(s).replace(/'/g, "''") + "'";
JSON.parse(process.env.GRANTS).grants.forEach((g, i) => console.log(
    `SELECT upstream_token.store_upstream_token(${lit('session-' + (i + 1))}, 'demo-idp', ` +
    `${lit(g.access_token)}, ${lit(g.refresh_token)}, ${g.expires_in}, ${lit(g.id_token)});`));
JS

echo "== the engine refreshes each token on its own 8 to 3 s before it expires; the app reads them every 2 s and never waits"
start=$(date +%s)
while :; do
    now=$(date +%s)
    [ "$seconds" -gt 0 ] && [ $((now - start)) -ge "$seconds" ] && break
    psql -qXAt -c "SELECT count(upstream_token.get_upstream_token('session-' || i, 'demo-idp')) FROM generate_series(1, 5) i" >/dev/null
    printf '\n-- t+%ss --\n' $((now - start))
    psql -qX -P footer=off -c "
      SELECT session, status, generation - 1 AS refreshes,
             greatest(0, extract(epoch FROM expires_at - now()))::int AS expires_in_s,
             coalesce(to_char(refreshed_at, 'HH24:MI:SS'), '-') AS last_refresh,
             to_char(next_refresh_at, 'HH24:MI:SS') AS next_refresh
        FROM upstream_token.token_status ORDER BY session"
    psql -qXAt -c "SELECT format('engine: %s refreshed (%s on its own, %s asked for by callers), %s failed, %s planned',
                                 refreshed, proactive_refreshes, requests,
                                 failed_transient + failed_reauth + failed_client, planned)
                     FROM upstream_token.engine_status"
    STATS=$(admin GET /stats) node -e 'const s = JSON.parse(process.env.STATS);
      console.log("provider: " + s.token_success + " refreshes served, " + s.reuse_detected +
                  " reused refresh tokens, " + s.revoked_grants + " revoked grants")'
    sleep 2
done
echo "== done; stopping the identity provider and the cluster"
