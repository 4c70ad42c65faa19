#!/usr/bin/env bash
# A Debian root holding another PostgreSQL major (Debian's own packages), for testing
# upstream_token on majors this machine's Debian does not ship: 17 from trixie, 18 from sid.
#
#   scripts/pgroot.sh MAJOR                   build the root if missing or incomplete; print its path
#   scripts/pgroot.sh MAJOR path              print the root's path (built or not)
#   scripts/pgroot.sh MAJOR install [SRC]     copy the source tree (default: this checkout) into the
#                                             root's /build/upstream_token, build and install there
#   scripts/pgroot.sh MAJOR exec [-u USER] [-C DIR] CMD...
#                                             run CMD inside the root (chroot) in a mount namespace of
#                                             its own with /proc (and a tmpfs /dev/shm) mounted: the
#                                             mounts go away when the last process of CMD exits
#
# Roots are cached outside the clone (UT_ROOT_CACHE, default /var/cache/upstream_token/roots),
# one per Debian suite, built once per machine with debootstrap from the archive apt already
# uses (UT_DEBIAN_MIRROR overrides it); UT_PG_ROOT names another root. A marker file written
# last says a root is complete: a root without it (an interrupted build) is built again. The
# root's postgres user gets this machine's postgres uid and gid, so files the tests create and
# chown outside belong to the server inside.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
major=${1:-}
cmd=${2:-ensure}
cache=${UT_ROOT_CACHE:-/var/cache/upstream_token/roots}
usage="usage: $0 17|18 [ensure|path|install [SRC]|exec [-u USER] [-C DIR] CMD...]"

case "$major" in
    17) suite=trixie ;;
    18) suite=sid ;;
    *) echo "$usage" >&2; exit 2 ;;
esac
root=${UT_PG_ROOT:-$cache/$suite}
marker=$root/.upstream_token-root
# Server, headers and pgTAP for the suites; compilers and libraries for the build; CMake and
# GoogleTest for the unit tests (built and run inside too).
packages="postgresql-$major,postgresql-server-dev-$major,postgresql-$major-pgtap,libcurl4-openssl-dev"
packages+=",nlohmann-json3-dev,libssl-dev,g++,make,cmake,libgtest-dev,ca-certificates,tzdata,faketime"

# The Debian archive apt uses on this machine (deb822 sources first, then sources.list).
mirror() {
    if [ -n "${UT_DEBIAN_MIRROR:-}" ]; then echo "$UT_DEBIAN_MIRROR"; return; fi
    local m
    m=$(sed -n 's/^URIs:[[:space:]]*\(\S*\/debian\/\?\)\s*$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1)
    [ -n "$m" ] || m=$(sed -n 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\(\S*\/debian\/\?\)[[:space:]].*/\2/p' \
        /etc/apt/sources.list 2>/dev/null | head -n 1)
    echo "${m:-http://deb.debian.org/debian}"
}

# What the marker records: a root built for other packages or another uid is brought up to date.
wanted() { echo "$packages $(id -u postgres):$(id -g postgres)"; }

# Unmounts whatever an interrupted run left mounted under the root (deepest first).
unmount_all() {
    local m
    for m in $(awk -v r="$root/" 'index($2, r) == 1 { print $2 }' /proc/self/mounts | sort -r); do
        umount -l "$m" 2>/dev/null || true
    done
}

# debootstrap of a minbase root with the packages (a few minutes, about 2 GB).
bootstrap() {
    command -v debootstrap >/dev/null || {
        echo "pgroot: installing debootstrap" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -qq debootstrap >/dev/null 2>&1 ||
            { apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null; }
    }
    unmount_all
    rm -rf --one-file-system "$root"
    echo "pgroot: building $root (Debian $suite, PostgreSQL $major: a few minutes, about 2 GB)" >&2
    local url log=$cache/$suite.debootstrap.log
    url=$(mirror)
    # Its own mount namespace: whatever debootstrap mounts (proc, sys) cannot outlive it.
    if ! unshare -m --propagation private debootstrap --variant=minbase --include="$packages" \
            "$suite" "$root" "$url" >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        echo "pgroot: debootstrap of $suite failed (log: $log)" >&2
        return 1
    fi
}

# Settles a bootstrapped root: apt options, missing packages, the postgres uid/gid, the marker.
configure() {
    # sid's Release file may be past its Valid-Until here; signatures are still checked.
    printf 'Acquire::Check-Valid-Until "false";\n' >"$root/etc/apt/apt.conf.d/99upstream-token"
    local missing=() p
    for p in ${packages//,/ }; do
        chroot "$root" dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
            missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "pgroot: installing ${missing[*]} in $root" >&2
        run_in_root_sh "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ${missing[*]}" \
            >"$cache/$suite.apt.log" 2>&1 || { tail -n 20 "$cache/$suite.apt.log" >&2; return 1; }
    fi
    local uid gid old_uid old_gid
    uid=$(id -u postgres) gid=$(id -g postgres)
    old_uid=$(chroot "$root" id -u postgres) old_gid=$(chroot "$root" id -g postgres)
    if [ "$old_uid:$old_gid" != "$uid:$gid" ]; then
        chroot "$root" groupmod -o -g "$gid" postgres
        chroot "$root" usermod -o -u "$uid" -g "$gid" postgres
        find "$root" -xdev \( -uid "$old_uid" -o -gid "$old_gid" \) -print0 | while IFS= read -r -d '' f; do
            local o g
            o=$(stat -c %u "$f") g=$(stat -c %g "$f")
            [ "$o" != "$old_uid" ] || o=$uid
            [ "$g" != "$old_gid" ] || g=$gid
            chown -h "$o:$g" "$f"
        done
    fi
    wanted >"$marker"
}

# Builds or completes the root unless its marker says it is ready for these packages.
ensure() {
    mkdir -p "$cache"
    exec 9>"$cache/$suite.lock"
    flock 9  # two checkouts asking at once: one builds, the other waits and reuses it
    if [ -f "$marker" ] && [ "$(cat "$marker")" = "$(wanted)" ]; then return 0; fi
    if [ ! -f "$marker" ] || ! configure; then
        bootstrap
        configure
    fi
}

# sh -c SCRIPT inside the root, as root, with /proc mounted (used while configuring).
run_in_root_sh() {
    unshare -m --propagation private -- sh -c 'mount -t proc proc "$1/proc" && exec chroot "$1" sh -c "$2"' \
        sh "$root" "$1"
}

# Runs a command inside the root: private mount namespace, /proc and a tmpfs /dev/shm mounted.
run_in_root() {
    local user="" dir=/
    while [ $# -gt 0 ]; do
        case "$1" in
            -u) user=$2; shift 2 ;;
            -C) dir=$2; shift 2 ;;
            *) break ;;
        esac
    done
    [ $# -gt 0 ] || { echo "$usage" >&2; return 2; }
    [ -f "$marker" ] || { echo "pgroot: $root is not built (run: $0 $major)" >&2; return 1; }
    local spec=() ids
    if [ -n "$user" ]; then  # numeric: chroot must not look the name up outside
        ids=$(awk -F: -v u="$user" '$1 == u { print $3 ":" $4 }' "$root/etc/passwd")
        [ -n "$ids" ] || { echo "pgroot: no user $user in $root" >&2; return 1; }
        spec=(--userspec="$ids" --groups="${ids#*:}")
    fi
    # shellcheck disable=SC2016
    exec unshare -m --propagation private -- sh -c '
        root=$1; shift
        mount -t proc proc "$root/proc" && mount -t tmpfs -o mode=1777 shm "$root/dev/shm" || exit 1
        exec chroot "$@"' sh "$root" "${spec[@]}" "$root" sh -c 'cd "$0" && exec "$@"' "$dir" "$@"
}

# Copies the source tree into the root and builds and installs the extension there.
install_ext() {
    local src=${1:-$here} dst=$root/build/upstream_token
    [ -f "$marker" ] || { echo "pgroot: $root is not built (run: $0 $major)" >&2; return 1; }
    rm -rf "$dst" && mkdir -p "$dst"
    # The checkout's files (tracked or not), without build products or local state.
    (cd "$src" && tar -c --exclude=./.git --exclude=./.tmp --exclude=./build --exclude=./results \
        --exclude=./regression.diffs --exclude=./regression.out --exclude='*.o' --exclude='*.so' \
        --exclude='*.bc' --exclude='*.d' --exclude=./test/node_modules .) | tar -x -C "$dst"
    "$0" "$major" exec -C /build/upstream_token sh -c \
        "make -s -j2 PG_CONFIG=/usr/lib/postgresql/$major/bin/pg_config &&
         make -s install PG_CONFIG=/usr/lib/postgresql/$major/bin/pg_config"
}

case "$cmd" in
    ensure) ensure; echo "$root" ;;
    path) echo "$root" ;;
    install) shift 2; install_ext "$@" ;;
    exec) shift 2; run_in_root "$@" ;;
    *) echo "$usage" >&2; exit 2 ;;
esac
