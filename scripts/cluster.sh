#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for upstream_token: owned by the postgres user, its own
# port and socket directory, the extension preloaded, a freshly generated key file.
#
#   scripts/cluster.sh init|start|stop|restart|destroy|env
#   scripts/cluster.sh pg PROGRAM ARGS...   run a server program (initdb, pg_ctl, pg_basebackup,
#                                           ...) of this cluster's server as the postgres user
#   scripts/cluster.sh serverdir DIR        make DIR a directory the server sees at the same path
#   scripts/cluster.sh rmserverdir DIR      remove such a directory
#
# Environment: UT_CLUSTER_DIR (default .tmp/cluster), UT_PORT (default 25432),
# UT_DATABASE (default ut_test, the database the engine serves), UT_PG_BIN (the server's bin
# directory, default Debian's 15; a relocated copy lets several checkouts test side by side).
# UT_PG_ROOT with UT_PG_MAJOR: the server of a Debian root (scripts/pgroot.sh) instead, run
# there with chroot. Every directory the server uses (cluster, certificates, a standby) then
# lives inside the root, and the path outside is a symbolic link to it: the same path names
# the same file for the server inside and the tests outside (key file, CA file, socket).
# UT_SERVER_PRELOAD (libraries put first in the server's LD_PRELOAD, before any the caller
# set: scripts/memcheck.sh preloads the AddressSanitizer runtime this way), UT_LOG_ARCHIVE (a
# directory that receives the server log of a cluster before init or destroy removes it).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
root=${UT_PG_ROOT:-}
if [ -n "$root" ]; then
    major=${UT_PG_MAJOR:?UT_PG_MAJOR must name the major of UT_PG_ROOT}
    bin=/usr/lib/postgresql/$major/bin
else
    bin=${UT_PG_BIN:-/usr/lib/postgresql/15/bin}
fi
dir=${UT_CLUSTER_DIR:-$here/.tmp/cluster}
port=${UT_PORT:-25432}  # below the ephemeral range, where test servers pick ports
db=${UT_DATABASE:-ut_test}
data=$dir/data
sock=$dir/sock

# A server program as the postgres user (the server refuses root).
as_pg() {
    if [ -n "$root" ]; then
        UT_PG_ROOT=$root bash "$here/scripts/pgroot.sh" "$major" exec -u postgres "$@"
    else
        runuser -u postgres -- "$@"
    fi
}

# Creates DIR (and its parents) where the server sees it at the same path: inside the root,
# with DIR a symbolic link to it (replacing a directory an earlier run without the root left).
server_dir() {
    local d=$1
    if [ -z "$root" ]; then
        [ ! -L "$d" ] || rm -f "$d"  # a link into a root an earlier run used
        mkdir -p "$d"
        return
    fi
    mkdir -p "$root$d"
    [ "$(readlink "$d" 2>/dev/null)" = "$root$d" ] && return
    rm -rf "$d"
    mkdir -p "$(dirname "$d")"
    ln -s "$root$d" "$d"
}

# Removes DIR and, with a root, what it points to there.
rm_server_dir() {
    rm -rf "$1"
    if [ -n "$root" ]; then rm -rf --one-file-system "${root:?}$1"; fi
}

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
    rm_server_dir "$dir"
    server_dir "$dir"
    mkdir -p "$sock"
    chown postgres:postgres "$dir/" "$sock"
    chmod 700 "$dir/"
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
    destroy) stop; keep_log; rm_server_dir "$dir" ;;
    pg) shift; [ $# -gt 0 ] || { echo "usage: $0 pg PROGRAM ARGS..." >&2; exit 2; }
        prog=$1; shift; as_pg "$bin/$prog" "$@" ;;
    serverdir) server_dir "${2:?usage: $0 serverdir DIR}" ;;
    rmserverdir) rm_server_dir "${2:?usage: $0 rmserverdir DIR}" ;;
    env)
        echo "export PGHOST=$sock PGPORT=$port PGUSER=postgres PGDATABASE=$db"
        echo "export UT_CLUSTER_DIR=$dir UT_SERVER_LOG=$dir/server.log UT_DATA=$data UT_PG_BIN=$bin"
        if [ -n "$root" ]; then echo "export UT_PG_ROOT=$root UT_PG_MAJOR=$major"; fi
        ;;
    *) echo "usage: $0 init|start|stop|restart|destroy|env|pg|serverdir|rmserverdir" >&2; exit 2 ;;
esac
