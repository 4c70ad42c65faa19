#!/usr/bin/env bash
# The chaos soak: test/chaos/run.sh [SECONDS]   (default 240 s of faults; about 2 more minutes
# for set-up, warm-up and the audit). Builds and installs the extension, starts a cluster of
# its own (port CHAOS_PORT, default 25440, in .tmp/chaos/<run>/cluster), runs test/chaos/soak.js
# against it and the test IdP, prints the summary and exits 0 only when every check passed.
#
# CHAOS_SEED=N replays a fault schedule; CHAOS_FAULTS=none runs the same traffic without faults
# (a baseline that must pass); CHAOS_KEEP=1 keeps the cluster's data directory afterwards.
# Other knobs (sessions, token lifetime, readers) are listed at the top of soak.js.
set -uo pipefail

here=$(cd "$(dirname "$0")/../.." && pwd)
cd "$here"
seconds=${1:-240}
case "$seconds" in ''|*[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;; esac

bash scripts/deps.sh || exit 1
export UT_PG_BIN=${UT_PG_BIN:-/usr/lib/postgresql/15/bin}
make -s -j2 PG_CONFIG="$UT_PG_BIN/pg_config" >/dev/null && make -s install PG_CONFIG="$UT_PG_BIN/pg_config" >/dev/null || {
    echo "chaos: build failed"; exit 1; }

export CHAOS_SEED=${CHAOS_SEED:-$(( (RANDOM << 15) | RANDOM ))}
run_dir=${CHAOS_RUN_DIR:-$here/.tmp/chaos/$(date +%Y%m%d-%H%M%S)-$CHAOS_SEED}
mkdir -p "$run_dir"
chmod 755 "$here/.tmp" "$here/.tmp/chaos" "$run_dir" 2>/dev/null || true  # the server reads the CA there
export CHAOS_RUN_DIR=$run_dir
export UT_CLUSTER_DIR=$run_dir/cluster UT_PORT=${CHAOS_PORT:-25440}
# A small request table, so a leaked slot shows within minutes.
export CHAOS_MAX_REQUESTS=${CHAOS_MAX_REQUESTS:-32}
export UT_EXTRA_CONF="upstream_token.max_requests = $CHAOS_MAX_REQUESTS
log_line_prefix = '%m [%p] '"

bash scripts/cluster.sh init && bash scripts/cluster.sh start || { echo "chaos: cluster did not start"; exit 1; }
eval "$(bash scripts/cluster.sh env)"
cleanup() {
    bash scripts/cluster.sh stop
    [ -n "${CHAOS_KEEP:-}" ] || rm -rf "$UT_CLUSTER_DIR/data"
}
trap cleanup EXIT

# Bounded: the soak stops itself; this is the backstop.
timeout --kill-after=30 $((seconds + 900)) node test/chaos/soak.js "$seconds"
