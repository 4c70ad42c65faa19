#!/usr/bin/env bash
# Benchmarks of upstream_token, each measured side by side with its baseline in the same run:
# hot-path reads against a plain primary-key SELECT (B1), a refresh storm against the
# provider's own capacity (B2), proactive throughput (B3), on-demand overhead (B4), memory
# bounds (B5) and a naive client's storm (B6). Writes bench/RESULTS.md and bench/chart.png;
# exits non-zero when a target is missed.
#
#   bench/run.sh        B1-B7 (about 10 minutes)
#   bench/run.sh b8     B8, a million tokens (about 25 minutes; writes bench/RESULTS-B8.md)
#
# Environment: UT_BENCH_PORT (default 24360), UT_BENCH_ONLY=b1,b1c (a subset of the scenarios:
# b1 b1c b2b3 b4 b5 b6 b7), UT_BENCH_QUICK=1 (shorter runs, for trying it
# out; the published results are from a full run).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
started=$(date +%s)
export UT_CLUSTER_DIR=$here/.tmp/bench-cluster UT_PORT=${UT_BENCH_PORT:-24360}
# Room for 32 callers, pgbench and the engine; autovacuum kept from falling behind the
# hundreds of thousands of row versions the refresh scenarios write.
export UT_EXTRA_CONF="max_connections = 200
shared_buffers = 256MB
autovacuum_naptime = 5s"
# B8 judges autovacuum as an operator would run it: its settings are left at their defaults.
# WAL segments are kept so that pg_waldump can say what one refresh pass wrote.
if [ "${1:-}" = b8 ]; then
    export UT_EXTRA_CONF="max_connections = 200
shared_buffers = 256MB
wal_keep_size = 16GB"
fi
certs=$here/.tmp/certs
work=$here/.tmp/bench
pgbin=/usr/lib/postgresql/15/bin

echo "== dependencies"
bash scripts/deps.sh
missing=()
[ -x "$pgbin/pgbench" ] || missing+=(postgresql-contrib)
command -v gnuplot >/dev/null || missing+=(gnuplot-nox)
if [ ${#missing[@]} -gt 0 ]; then
    echo "bench: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 ||
        { apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null; }
fi

echo "== building and installing upstream_token"
# Someone may be mid-edit in src/: retry a failed build twice, half a minute apart.
for attempt in 1 2 3; do
    if make -s -j2 && make -s install; then break; fi
    [ "$attempt" -lt 3 ] || { echo "bench: the build failed"; exit 1; }
    echo "bench: the build failed; retrying in 30 s"
    sleep 30
done

echo "== a throwaway cluster on port $UT_PORT"
bash scripts/cluster.sh init
bash scripts/cluster.sh start
eval "$(bash scripts/cluster.sh env)"

rm -rf "$work"
mkdir -p "$work" "$certs"
chmod 755 "$here/.tmp"
bash test/idp/make-certs.sh "$certs"
chmod 755 "$certs"
node --max-old-space-size=4096 test/idp/server.js --port 0 --cert "$certs/server.pem" --key "$certs/server.key" \
    >"$work/idp.out" 2>"$work/idp.err" &
idp_pid=$!
cleanup() {
    kill "$idp_pid" 2>/dev/null || true
    bash scripts/cluster.sh stop || true
}
trap cleanup EXIT
for _ in $(seq 100); do grep -qs "^listening" "$work/idp.out" && break; sleep 0.1; done
idp_port=$(sed -n 's/^listening \([0-9]*\)$/\1/p' "$work/idp.out")
[ -n "$idp_port" ] || { echo "the identity provider did not start"; cat "$work/idp.err"; exit 1; }
export UT_BENCH_IDP=https://127.0.0.1:$idp_port UT_BENCH_CA=$certs/ca.pem UT_BENCH_WORK=$work
export UT_BENCH_IDP_PID=$idp_pid
echo "== identity provider at $UT_BENCH_IDP"

psql -qX -v ON_ERROR_STOP=1 <<SQL
CREATE EXTENSION upstream_token;
ALTER SYSTEM SET upstream_token.ca_file = '$certs/ca.pem';
SELECT pg_reload_conf();
SQL

# The scenarios; their status is the verdict, but the report and chart are written first.
status=0
if [ "${1:-}" = b8 ]; then
    node --max-old-space-size=4096 bench/b8.js || status=$?
    echo "== finished in $(( $(date +%s) - started )) s; report in bench/RESULTS-B8.md"
    exit "$status"
fi
node bench/bench.js || status=$?
if [ -f "$work/chart.gp" ]; then
    (cd "$work" && gnuplot chart.gp) && cp "$work/chart.png" bench/chart.png ||
        { echo "bench: gnuplot failed"; status=1; }
fi
echo "== finished in $(( $(date +%s) - started )) s; report in bench/RESULTS.md, chart in bench/chart.png"
exit "$status"
