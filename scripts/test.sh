#!/usr/bin/env bash
# The one test command: installs what is missing, builds with PGXS and CMake, runs the core
# unit tests, then pg_regress, pgTAP and the integration tests against a throwaway cluster
# and a real HTTPS identity provider on loopback. Exits non-zero on any failure.
#
# The server is this machine's (UT_PG_BIN, default Debian's 15), or with UT_PG_MAJOR=17|18
# Debian's own server of that major in a Debian root (scripts/pgroot.sh, built once per
# machine): the extension is then built, installed and unit-tested inside the root, the
# server runs there, and the same suites talk to it from outside.
# scripts/test-matrix.sh runs this for every tested major.
set -uo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here" || exit 1
log_dir=${UT_LOG_DIR:-$here/.tmp/test-logs}
mkdir -p "$log_dir"

major=${UT_PG_MAJOR:-}
root=${UT_PG_ROOT:-}
if [ -n "$root" ] || { [ -n "$major" ] && [ "$major" != 15 ]; }; then
    [ -n "$major" ] || { echo "UT_PG_ROOT needs UT_PG_MAJOR"; exit 2; }
    root=${root:-$(bash scripts/pgroot.sh "$major" path)} || exit 2
    # One test run per root at a time: the extension is built and installed inside it.
    if [ -z "${UT_ROOT_LOCKED:-}" ]; then
        mkdir -p "$(dirname "$root")"
        exec env UT_ROOT_LOCKED=1 UT_PG_ROOT="$root" flock -o "$root.use.lock" bash "$0" "$@"
    fi
    export UT_PG_ROOT=$root UT_PG_MAJOR=$major
    pg_config=/usr/lib/postgresql/$major/bin/pg_config
    build_dir=$root/build/upstream_token
    in_build() { bash scripts/pgroot.sh "$major" exec -C /build/upstream_token "$@"; }
else
    unset UT_PG_ROOT UT_PG_MAJOR
    # UT_PG_BIN selects the server (default Debian's 15): build, install and run against the same one.
    pg_config=${UT_PG_BIN:-/usr/lib/postgresql/15/bin}/pg_config
    build_dir=$here
    in_build() { "$@"; }
fi

bash scripts/deps.sh || exit 1

passed=0
failed=0
failures=()
suites=()
# count PASSED FAILED SUITE: adds one suite's result to the totals and to the summary.
count() {
    passed=$((passed + $1)); failed=$((failed + $2)); [ "$2" -eq 0 ] || failures+=("$3")
    suites+=("$(printf '%-12s %5d passed, %d failed' "$3:" "$1" "$2")")
}
section() { printf '\n== %s ==\n' "$1"; }

section "build (PGXS)"
if [ -n "${UT_PG_ROOT:-}" ]; then
    echo "PostgreSQL $major in $UT_PG_ROOT"
    { bash scripts/pgroot.sh "$major" >/dev/null && bash scripts/pgroot.sh "$major" install; } \
        >"$log_dir/make.log" 2>&1
else
    make -s -j2 PG_CONFIG="$pg_config" >"$log_dir/make.log" 2>&1 &&
        make -s install PG_CONFIG="$pg_config" >>"$log_dir/make.log" 2>&1
fi || { cat "$log_dir/make.log"; echo "build failed"; exit 1; }
if grep -E '^src/.*(warning|error):' "$log_dir/make.log"; then
    echo "the build printed warnings from our code"; count 0 1 "build warnings"
fi

section "unit tests (CMake + GoogleTest)"
# test_programs: the unit tests and the fuzz replays; PGXS has just built the extension.
if in_build cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$log_dir/cmake.log" 2>&1 &&
   in_build cmake --build build -j2 --target test_programs >>"$log_dir/cmake.log" 2>&1; then
    in_build ctest --test-dir build --output-on-failure 2>&1 | tee "$log_dir/ctest.log" | tail -n 3
    total=$(sed -n 's/.* tests passed, \([0-9]*\) tests failed out of \([0-9]*\)/\2/p' "$log_dir/ctest.log")
    bad=$(sed -n 's/.* tests passed, \([0-9]*\) tests failed out of.*/\1/p' "$log_dir/ctest.log")
    count $(( ${total:-0} - ${bad:-0} )) "${bad:-1}" "unit tests"
else
    tail -n 30 "$log_dir/cmake.log"; count 0 1 "unit build"
fi

section "cluster"
bash scripts/cluster.sh init && bash scripts/cluster.sh start || { echo "cluster did not start"; exit 1; }
eval "$(bash scripts/cluster.sh env)"
trap 'bash scripts/cluster.sh stop' EXIT

section "pg_regress"
rm -f "$build_dir/regression.diffs"
in_build make -s installcheck PG_CONFIG="$pg_config" \
    REGRESS_OPTS="--inputdir=. --use-existing --dbname=$PGDATABASE" >"$log_dir/regress.log" 2>&1
rc=$?
grep -E '^(ok|not ok|test|#)' "$log_dir/regress.log" | tail -n 40
# 15's pg_regress prints "test NAME ... ok|FAILED"; 16's and later print TAP: "ok 1 - NAME",
# "not ok 2 - NAME" ("+" instead of "-" inside a parallel group).
n=$(grep -cE '^test .* \.\.\. +(ok|FAILED|failed)|^(not )?ok [0-9]+ +[-+] ' "$log_dir/regress.log")
bad=$(grep -cE '^test .* \.\.\. +(FAILED|failed)|^not ok [0-9]+ ' "$log_dir/regress.log")
[ "$rc" -eq 0 ] || [ "$bad" -gt 0 ] || bad=1
[ "$n" -gt 0 ] || { bad=1; tail -n 20 "$log_dir/regress.log"; }
[ -f "$build_dir/regression.diffs" ] && [ "$rc" -ne 0 ] && head -n 80 "$build_dir/regression.diffs"
count $((n - bad < 0 ? 0 : n - bad)) "$bad" "pg_regress"

section "pgTAP"
pg_prove --verbose --ext .sql test/pgtap/ >"$log_dir/pgtap.log" 2>&1
grep -E '^(not ok|.*# (TODO|SKIP)|# Looks like)' "$log_dir/pgtap.log" | head -n 40
tail -n 15 "$log_dir/pgtap.log"
tests=$(sed -n 's/.*Tests=\([0-9]*\),.*/\1/p' "$log_dir/pgtap.log")
# pg_prove passes a TODO or SKIP test, and a file whose own summary says it failed while its
# lines read "ok": every such line counts as a failure here (no test may be skipped or TODO).
sum_of() { grep -oE "$1" "$log_dir/pgtap.log" | grep -oE '[0-9]+' | paste -sd+ | bc 2>/dev/null; }
bad=$(sum_of 'Failed [0-9]+/')
todo=$(grep -cE '^(not )?ok [0-9]+.*# (TODO|SKIP)' "$log_dir/pgtap.log")
claimed=$(sum_of 'Looks like you failed [0-9]+')
bad=$(( ${bad:-0} > ${claimed:-0} ? ${bad:-0} : ${claimed:-0} ))
bad=$(( bad > todo ? bad : todo ))
if grep -q '^Result: PASS' "$log_dir/pgtap.log" && [ "$bad" -eq 0 ]; then count "${tests:-0}" 0 pgtap; else
    [ "$bad" -gt 0 ] || bad=1
    count $(( ${tests:-0} - bad < 0 ? 0 : ${tests:-0} - bad )) "$bad" pgtap; fi

section "integration (node --test)"
(cd test && node --test --test-concurrency=1 --test-reporter=tap integration/) \
    >"$log_dir/integration.log" 2>&1
grep -E '^(not ok|ok|# (pass|fail|tests))' "$log_dir/integration.log" | tail -n 60
p=$(sed -n 's/^# pass \([0-9]*\)/\1/p' "$log_dir/integration.log"); f=$(sed -n 's/^# fail \([0-9]*\)/\1/p' "$log_dir/integration.log")
[ -n "$p" ] || { tail -n 40 "$log_dir/integration.log"; f=1; }
grep -q '^not ok' "$log_dir/integration.log" && grep -B2 -A30 '^not ok' "$log_dir/integration.log" | head -n 120
count "${p:-0}" "${f:-1}" "integration"

section "summary${UT_PG_MAJOR:+ (PostgreSQL $UT_PG_MAJOR)}"
printf '  %s\n' "${suites[@]}"
[ ${#failures[@]} -eq 0 ] || echo "failed: ${failures[*]}"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
