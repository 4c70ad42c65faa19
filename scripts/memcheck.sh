#!/usr/bin/env bash
# Memory-checker run: builds the extension with AddressSanitizer + UndefinedBehaviorSanitizer,
# installs it into a relocated copy of the server (never the system's), starts a cluster whose
# server processes have the ASan runtime preloaded, runs the engine's fault tests against it,
# then scans the sanitizer report files and the server log. Prints `N passed, N failed`: one
# check per test file, one that the server really ran under the sanitizers, one for "no
# sanitizer report". Exits non-zero on any failure.
#
# Environment: UT_PG_BIN (the server to copy, default Debian's 15), UT_MEMCHECK_PORT (default
# 25433), UT_MEMCHECK_DIR (default .tmp/memcheck: the build, the server copy, the cluster, the
# reports and logs), UT_TIME_SCALE (default 3: the harness stretches its deadlines by it).
# Optional arguments: test file names (e.g. crash) to run only those, or `all` for every
# integration test file (lifecycle_standby starts its standby with pg_ctl itself, without the
# preload: the sanitized library cannot load there, so that file fails under `all`).
set -uo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
src_bin=${UT_PG_BIN:-/usr/lib/postgresql/15/bin}
mc=${UT_MEMCHECK_DIR:-$here/.tmp/memcheck}
port=${UT_MEMCHECK_PORT:-25433}
# The engine's fault tests (and protocol_quirks: provider numbers through the parsers).
tests=(orderly_stop failure_domains save_held crash failures singleflight rollback_cancel
       persist_race backoff protocol_revocation protocol_discovery lifecycle_signals secrets clock_step
       protocol_quirks)
if [ "${1:-}" = all ]; then
    tests=($(cd test/integration && ls ./*.test.js | sed 's#^\./##; s#\.test\.js$##'))
elif [ $# -gt 0 ]; then
    tests=("$@")
fi
# float-cast-overflow is not part of GCC's "undefined" group; the engine turns provider numbers
# (expires_in, ...) from doubles into integers.
san="-fsanitize=address,undefined,float-cast-overflow -fno-omit-frame-pointer"
started=$(date +%s)

passed=0
failed=0
failures=()
count() { if [ "$1" -eq 0 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); failures+=("$2"); fi; }
section() { printf '\n== %s ==\n' "$1"; }

bash scripts/deps.sh || exit 1
mkdir -p "$mc"
chmod 755 "$here/.tmp" "$mc"

section "relocated server"
# PostgreSQL finds its share and lib directories relative to its binary: copy the three trees
# with their layout kept (prefix/lib/postgresql/V, prefix/share/postgresql/V, prefix/include/...).
ver=$(basename "$(dirname "$src_bin")")
prefix=$(cd "$src_bin/../../../.." && pwd)
root=$mc/server
bin=$root/usr/lib/postgresql/$ver/bin
if [ ! -x "$bin/postgres" ]; then
    mkdir -p "$root/usr/lib/postgresql" "$root/usr/share/postgresql" "$root/usr/include/postgresql"
    cp -a "$prefix/lib/postgresql/$ver" "$root/usr/lib/postgresql/"
    cp -a "$prefix/share/postgresql/$ver" "$root/usr/share/postgresql/"
    cp -a "$prefix/include/postgresql/$ver" "$root/usr/include/postgresql/"
fi
echo "server copy: $bin"

section "build (PGXS, $san)"
# Its own build tree: the sanitized objects never mix with the normal build's.
build=$mc/build
mkdir -p "$build"
find "$build" -maxdepth 1 -name 'upstream_token*.sql' -delete
[ ! -d "$build/src" ] || find "$build/src" -name '*.[ch]pp' -delete
cp -a Makefile upstream_token.control upstream_token--*.sql src "$build/"
# Objects built with other sanitizer flags are rebuilt (make sees sources, not flags).
if [ "$(cat "$build/.flags" 2>/dev/null)" != "$san" ]; then
    find "$build/src" \( -name '*.o' -o -name '*.d' \) -delete
    rm -f "$build"/*.so
    echo "$san" >"$build/.flags"
fi
# PGXS compiles C++ with $(CXX) and links with $(CC) $(CFLAGS) ... $(LDFLAGS): the sanitizer
# flags go into CXX for the objects and into COPT (added to CFLAGS and LDFLAGS) for the link,
# so the .so needs libasan and libubsan.
make -s -j2 -C "$build" PG_CONFIG="$bin/pg_config" CXX="g++ $san" COPT="$san" >"$mc/make.log" 2>&1 &&
    make -s -C "$build" install PG_CONFIG="$bin/pg_config" >>"$mc/make.log" 2>&1 || {
    cat "$mc/make.log"; echo "build failed"; exit 1; }
so=$("$bin/pg_config" --pkglibdir)/upstream_token.so
ldd "$so" | grep -E 'lib(asan|ubsan)' || { echo "$so is not linked with the sanitizers"; exit 1; }

section "cluster (ASan runtime preloaded)"
reports=$mc/reports
rm -rf "$reports"
mkdir -p "$reports"
chown postgres:postgres "$reports"
asan_rt=$(g++ -print-file-name=libasan.so)
# The runtime must initialize without re-entering glibc's locale lock: see the shim's comment.
shim=$mc/memcheck_shim.so
control=$mc/memcheck_control.so
gcc -shared -fPIC -O2 -Wall -Wextra -o "$shim" scripts/memcheck_shim.c &&
    gcc -shared -fPIC -O0 $san -o "$control" scripts/memcheck_control.c || exit 1
export UT_PG_BIN=$bin UT_PORT=$port UT_CLUSTER_DIR=$mc/cluster UT_TIME_SCALE=${UT_TIME_SCALE:-3}
# Every cluster scripts/cluster.sh starts from here on (this one, and those the tests start of
# their own, e.g. clock_step's) gets the runtime first in its LD_PRELOAD and these options:
# - detect_leaks=0: PostgreSQL frees its memory contexts at process exit by design;
# - halt_on_error=1 (ASan's default): a process with a memory error stops there instead of
#   running on with corrupt memory; UBSan reports and goes on, so one run shows them all;
# - log_path: each process writes its ASan report to its own file, $reports/asan.PID.
#   libubsan's start-up sets the report path through libasan's exported setter, so UBSan's
#   log_path must name the same place (left unset, it would reset ASan's to stderr); UBSan's
#   own reports still go to stderr, i.e. the server log. The server logs of clusters the tests
#   remove are kept in $mc/logs (UT_LOG_ARCHIVE) and scanned as well;
# - quarantine_size_mb: freed memory kept poisoned per process, bounded (200 backends);
# - allocator_release_to_os_interval_ms=-1: otherwise the allocator reads the clock through
#   libc's clock_gettime while holding its lock; under libfaketime (clock_step's cluster) that
#   call lands in libfaketime, whose lazy dlsym mallocs: the process deadlocks at start.
export UT_SERVER_PRELOAD=$asan_rt:$shim UT_LOG_ARCHIVE=$mc/logs
rm -rf "$UT_LOG_ARCHIVE"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=0:halt_on_error=1:log_path=$reports/asan:quarantine_size_mb=64:malloc_context_size=20:disable_coredump=1:allocator_release_to_os_interval_ms=-1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=0:log_path=$reports/asan:suppressions=$here/scripts/ubsan.supp"
UT_LOG_ARCHIVE= bash scripts/cluster.sh init && bash scripts/cluster.sh start || {
    tail -n 30 "$mc/cluster/server.log" 2>/dev/null; echo "cluster did not start"; exit 1; }
eval "$(bash scripts/cluster.sh env)"
trap 'bash scripts/cluster.sh stop' EXIT

# Positive control: the server processes carry the runtimes and the sanitized library, and a
# bug planted in one backend (scripts/memcheck_control.c) is reported into $reports (a clean
# result from a server that cannot report would prove nothing). Its reports are then moved
# aside, so the final scan sees the tests' only.
pm=$(head -n 1 "$UT_DATA/postmaster.pid")
engine=
for _ in $(seq 1 150); do
    engine=$(psql -qAtc "SELECT pid FROM pg_stat_activity WHERE backend_type = 'upstream_token engine'")
    [ -n "$engine" ] && break
    sleep 0.2
done
ok=0
for pid in "$pm" "$engine"; do
    [ -n "$pid" ] && grep -q libasan "/proc/$pid/maps" 2>/dev/null || { echo "process ${pid:-?}: no libasan mapped"; ok=1; }
done
{ [ -n "$engine" ] && grep -q "$so" "/proc/$engine/maps" && grep -q libubsan "/proc/$engine/maps"; } ||
    { echo "engine ${engine:-?}: the sanitized upstream_token.so or libubsan is not mapped"; ok=1; }
log_from=$(stat -c %s "$UT_SERVER_LOG")
cpid=$(psql -qAt -c 'SELECT pg_backend_pid()' -c "LOAD '$control'" 2>/dev/null | head -n 1)
mkdir -p "$mc/control"
rm -f "$mc/control"/*
tail -c +"$((log_from + 1))" "$UT_SERVER_LOG" >"$mc/control/server.log"
# The tests' part of the server log starts after the control's report.
log_from=$(stat -c %s "$UT_SERVER_LOG")
if grep -qs 'ERROR: AddressSanitizer: heap-buffer-overflow' "$reports/asan.$cpid" &&
   grep -qs 'memcheck_control.c:.*runtime error: signed integer overflow' "$mc/control/server.log"; then
    mv "$reports/asan.$cpid" "$mc/control/"
    echo "postmaster $pm and engine $engine run with libasan; the engine maps $so and libubsan;"
    echo "the planted bugs in backend $cpid were reported (ASan and UBSan): $mc/control/"
else
    echo "the planted bugs in backend ${cpid:-?} were not reported in $reports"; ok=1
fi
count "$ok" "server under the sanitizers, reports reach $reports"

section "engine fault tests (node --test)"
for t in "${tests[@]}"; do
    log=$mc/test-$t.log
    t0=$(date +%s)
    (cd test && timeout 1200 node --test --test-concurrency=1 --test-reporter=tap "integration/$t.test.js") >"$log" 2>&1
    rc=$?
    p=$(sed -n 's/^# pass \([0-9]*\)/\1/p' "$log"); f=$(sed -n 's/^# fail \([0-9]*\)/\1/p' "$log")
    if [ "$rc" -eq 0 ]; then r=ok; else r=FAILED; fi
    printf '%-22s %-6s %s passed, %s failed (%ss)\n' "$t" "$r" "${p:-?}" "${f:-?}" $(($(date +%s) - t0))
    [ "$rc" -eq 0 ] || grep -A25 '^not ok\|^    not ok' "$log" | head -n 60
    count "$rc" "$t"
done

section "sanitizer reports"
bash scripts/cluster.sh stop
trap - EXIT
# ASan's report files (one per process that reported), the server log since the control
# (UBSan's reports, and anything written before the options were read) and the logs of the
# clusters the tests started and removed.
pattern='ERROR: AddressSanitizer|runtime error:|ERROR: LeakSanitizer|UndefinedBehaviorSanitizer|AddressSanitizer:DEADLYSIGNAL'
tail -c +"$((log_from + 1))" "$UT_SERVER_LOG" >"$mc/server-tests.log"
found=$( { grep -lE "$pattern" "$reports"/* "$mc/server-tests.log" "$UT_LOG_ARCHIVE"/* 2>/dev/null || true; } )
n=$(ls "$reports" | wc -l)
logs=$(ls "$UT_LOG_ARCHIVE" 2>/dev/null | wc -l)
if [ -z "$found" ]; then
    echo "no sanitizer report ($n report files; the server log and $logs removed clusters' logs clean)"
    count 0 "sanitizer reports"
else
    for f in $found; do
        echo "--- $f"
        grep -E "$pattern|^    #[0-9]+ .*(/src/|upstream_token)|^SUMMARY" "$f" | head -n 40
    done
    count 1 "sanitizer reports"
fi

section "summary"
echo "wall time: $(($(date +%s) - started)) s; logs and reports in $mc"
[ ${#failures[@]} -eq 0 ] || echo "failed: ${failures[*]}"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
