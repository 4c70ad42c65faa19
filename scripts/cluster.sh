#!/usr/bin/env bash
# A throwaway PostgreSQL 15 cluster for upstream_token: owned by the postgres user, its own
# port and socket directory, the extension preloaded, a freshly generated key file.
#
#   scripts/cluster.sh init|start|stop|destroy|env
#
# Environment: UT_CLUSTER_DIR (default .tmp/cluster), UT_PORT (default 25432),
# UT_DATABASE (default ut_test, the database the engine serves), UT_PG_BIN (the server's bin
# directory, default Debian's 15; a relocated copy lets several checkouts test side by side),
# UT_SERVER_PRELOAD (libraries put first in the server's LD_PRELOAD, before any the caller
# set: scripts/memcheck.sh preloads the AddressSanitizer runtime this way), UT_LOG_ARCHIVE (a
# directory that receives the server log of a cluster before init or destroy removes it).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
bin=${UT_PG_BIN:-/usr/lib/postgresql/15/bin}
dir=${UT_CLUSTER_DIR:-$here/.tmp/cluster}
port=${UT_PORT:-25432}  # below the ephemeral range, where test servers pick ports
db=${UT_DATABASE:-ut_test}
data=$dir/data
sock=$dir/sock

as_pg() { runuser -u postgres -- "$@"; }

# Keeps the server log of a cluster about to be removed, when UT_LOG_ARCHIVE asks for it.
keep_log() {
    if [ -n "${UT_LOG_ARCHIVE:-}" ] && [ -f "$dir/server.log" ]; then
        mkdir -p "$UT_LOG_ARCHIVE"
        cp "$dir/server.log" "$UT_LOG_ARCHIVE/$(basename "$dir").$(date +%s%N).log"
    fi
}

init() {
    stop
    keep_log
    rm -rf "$dir"
    mkdir -p "$dir" "$sock"
    chown postgres:postgres "$dir" "$sock"
    chmod 700 "$dir"
    as_pg "$bin/initdb" -D "$data" -A trust -U postgres --no-instructions >/dev/null
    openssl rand -hex 32 >"$dir/key"
    chown postgres:postgres "$dir/key"
    chmod 600 "$dir/key"
    cat >>"$data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$sock'
shared_preload_libraries = 'upstream_token'
upstream_token.key_file = '$dir/key'
upstream_token.database = '$db'
max_connections = 200
log_min_messages = info
logging_collector = off
fsync = off
CONF
    if [ -n "${UT_EXTRA_CONF:-}" ]; then printf '%s\n' "$UT_EXTRA_CONF" >>"$data/postgresql.conf"; fi
}

start() {
    local preload=${UT_SERVER_PRELOAD:-}${LD_PRELOAD:+${UT_SERVER_PRELOAD:+:}$LD_PRELOAD}
    as_pg env ${preload:+LD_PRELOAD="$preload"} "$bin/pg_ctl" -D "$data" -l "$dir/server.log" -w -t 60 start >/dev/null
    as_pg "$bin/psql" -h "$sock" -p "$port" -U postgres -d postgres -qAtc \
        "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1 ||
        as_pg "$bin/createdb" -h "$sock" -p "$port" -U postgres "$db"
}

stop() {
    if [ -f "$data/postmaster.pid" ]; then
        as_pg "$bin/pg_ctl" -D "$data" -m fast -w -t 60 stop >/dev/null || true
    fi
}

case "${1:-}" in
    init) init ;;
    start) start ;;
    stop) stop ;;
    restart) stop; start ;;
    destroy) stop; keep_log; rm -rf "$dir" ;;
    env)
        echo "export PGHOST=$sock PGPORT=$port PGUSER=postgres PGDATABASE=$db"
        echo "export UT_CLUSTER_DIR=$dir UT_SERVER_LOG=$dir/server.log UT_DATA=$data UT_PG_BIN=$bin"
        ;;
    *) echo "usage: $0 init|start|stop|restart|destroy|env" >&2; exit 2 ;;
esac
