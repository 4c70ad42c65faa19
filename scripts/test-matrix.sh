#!/usr/bin/env bash
# Every suite on every tested PostgreSQL major: scripts/test.sh as it is for this machine's 15,
# then with UT_PG_MAJOR=17 and 18 (Debian's own servers in Debian roots, scripts/pgroot.sh;
# the first run on a machine builds the roots, a few minutes each). Prints each major's
# summary line, each suite's line and the total time; exits non-zero if any major failed.
#
#   scripts/test-matrix.sh [MAJOR...]     (default: 15 17 18)
#
# Each major's full output is in .tmp/test-logs/matrix-MAJOR.log, its suite logs in
# .tmp/test-logs/MAJOR/. PostgreSQL 16 is supported (it builds from the same compatibility
# header) but not tested: no Debian suite reachable here packages it.
set -uo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here" || exit 1
logs=$here/.tmp/test-logs
mkdir -p "$logs"
majors=("$@")
[ ${#majors[@]} -gt 0 ] || majors=(15 17 18)

start=$(date +%s)
status=0
lines=()
for m in "${majors[@]}"; do
    t0=$(date +%s)
    log=$logs/matrix-$m.log
    echo "== PostgreSQL $m (log: ${log#"$here"/})"
    if [ "$m" = 15 ]; then
        # README's default command, unchanged (UT_PG_BIN, if set, picks the 15 server).
        env -u UT_PG_ROOT -u UT_PG_MAJOR UT_LOG_DIR="$logs/$m" bash scripts/test.sh >"$log" 2>&1
    else
        env -u UT_PG_ROOT -u UT_PG_BIN UT_PG_MAJOR="$m" UT_LOG_DIR="$logs/$m" \
            bash scripts/test.sh >"$log" 2>&1
    fi
    rc=$?
    summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -n 1)
    [ -n "$summary" ] || summary="no summary (the run stopped early)"
    [ "$rc" -eq 0 ] || { status=1; summary+="; $(grep '^failed: ' "$log" | tail -n 1)"; tail -n 40 "$log"; }
    lines+=("PostgreSQL $m: $summary ($(( ($(date +%s) - t0) / 60 )) min)")
    echo "${lines[-1]}"
    # Each suite's own line (unit tests, pg_regress, pgTAP, integration), from the summary.
    while IFS= read -r l; do lines+=("$l"); done < <(grep -E '^  [a-z].*: +[0-9]+ passed, [0-9]+ failed$' "$log")
done

total=$(( $(date +%s) - start ))
echo
echo "== matrix"
printf '%s\n' "${lines[@]}"
printf 'total time: %dm%02ds\n' $((total / 60)) $((total % 60))
exit $status
