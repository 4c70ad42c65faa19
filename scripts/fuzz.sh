#!/usr/bin/env bash
# libFuzzer runs of the PostgreSQL-free parsers (test/fuzz/*.cpp): builds each target with
# clang++-14 -fsanitize=fuzzer,address,undefined against src/core (no server), runs them one
# at a time for SECONDS_PER_TARGET each, and prints executions and crashes per target.
#
#   bash scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     default 60 s, every target
#   UT_FUZZ_MERGE=1 bash scripts/fuzz.sh ...   then minimise what was found into the
#                                              committed corpus (test/fuzz/corpus/TARGET/)
#
# New inputs go to .tmp/fuzz/work/TARGET; the committed corpus and test/fuzz/regressions/TARGET/
# (inputs that once crashed) are read, not written. Crash inputs go to
# .tmp/fuzz/artifacts/TARGET/. One process per target (the machine is shared); UT_FUZZ_ARGS
# adds libFuzzer flags. Exits non-zero when a target crashed.
set -uo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
seconds=60
if [ $# -gt 0 ] && [[ $1 =~ ^[0-9]+$ ]]; then seconds=$1; shift; fi
all_targets=(token_response id_token discovery key_file http_header)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all_targets[@]}")

cxx=${UT_FUZZ_CXX:-clang++-14}
out=$here/.tmp/fuzz
mkdir -p "$out/obj" "$out/bin" "$out/logs"
flags=(-std=c++17 -g -O1 -fno-omit-frame-pointer -fno-sanitize-recover=all -Isrc
       -DUPSTREAM_TOKEN_CORE -Wall -Wextra -Wno-missing-field-initializers)
libs=(-lcurl -lcrypto)

# Core objects, rebuilt when any core file changed (a header change can touch every object).
stamp=$out/obj/.stamp
if [ ! -f "$stamp" ] || [ -n "$(find src/core -type f -newer "$stamp" | head -n 1)" ]; then
    echo "building src/core with $cxx (fuzzer-no-link, address, undefined)"
    rm -f "$out"/obj/*.o "$out"/bin/*
    build_failed=0
    for f in src/core/*.cpp; do
        "$cxx" "${flags[@]}" -fsanitize=fuzzer-no-link,address,undefined -c "$f" \
            -o "$out/obj/$(basename "$f" .cpp).o" &
        # At most two compilers at once (two shared cores).
        while [ "$(jobs -rp | wc -l)" -ge 2 ]; do wait -n || build_failed=1; done
    done
    while [ "$(jobs -rp | wc -l)" -gt 0 ]; do wait -n || build_failed=1; done
    [ "$build_failed" -eq 0 ] || { echo "core build failed"; exit 1; }
    touch "$stamp"
fi
for t in "${targets[@]}"; do
    [ -f "test/fuzz/$t.cpp" ] || { echo "no target test/fuzz/$t.cpp"; exit 2; }
    bin=$out/bin/$t
    if [ ! -x "$bin" ] || [ "test/fuzz/$t.cpp" -nt "$bin" ] || [ test/fuzz/fuzz_check.hpp -nt "$bin" ]; then
        "$cxx" "${flags[@]}" -fsanitize=fuzzer,address,undefined "test/fuzz/$t.cpp" \
            "$out"/obj/*.o "${libs[@]}" -o "$bin" || { echo "build of $t failed"; exit 1; }
    fi
done

status=0
rows=()
for t in "${targets[@]}"; do
    corpus=test/fuzz/corpus/$t
    work=$out/work/$t
    art=$out/artifacts/$t
    mkdir -p "$corpus" "$work" "$art"
    before=$(find "$art" -type f | wc -l)
    log=$out/logs/$t.log
    echo "== $t: ${seconds}s"
    # shellcheck disable=SC2086
    "$out/bin/$t" -max_total_time="$seconds" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="$art/" ${UT_FUZZ_ARGS:-} "$work" "$corpus" \
        $( [ -d "test/fuzz/regressions/$t" ] && echo "test/fuzz/regressions/$t" ) >"$log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -n 1)
    [ -n "$execs" ] || execs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$log" | tail -n 1)
    crashes=$(( $(find "$art" -type f | wc -l) - before ))
    if [ "$rc" -ne 0 ] && [ "$crashes" -eq 0 ]; then crashes=1; fi
    [ "$crashes" -eq 0 ] || { status=1; grep -E 'ERROR|invariant|runtime error|Test unit written' "$log" | head -n 5; }
    cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -n 1 | grep -oE '[0-9]+')
    rows+=("$(printf '%-16s %14s %8s %8s %10s' "$t" "${execs:-?}" "$crashes" "${cov:-?}" "$(find "$corpus" -type f | wc -l)")")
    if [ "${UT_FUZZ_MERGE:-0}" = 1 ]; then
        merged=$out/merged/$t
        rm -rf "$merged"; mkdir -p "$merged"
        "$out/bin/$t" -merge=1 "$merged" "$corpus" "$work" >"$out/logs/$t.merge.log" 2>&1 &&
            rm -f "$corpus"/* && cp "$merged"/* "$corpus"/ && rm -rf "$work" &&
            echo "   corpus minimised: $(find "$corpus" -type f | wc -l) files, $(cat "$corpus"/* | wc -c) bytes"
    fi
done

printf '\n%-16s %14s %8s %8s %10s\n' target executions crashes coverage corpus
printf '%s\n' "${rows[@]}"
echo "logs: $out/logs/"
exit "$status"
