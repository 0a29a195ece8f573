#!/usr/bin/env bash
# Runs shoal's test suites and prints the closing "N passed, N failed, N skipped" line.
# Usage: tests/run.sh [unit] [fuzz] [sim] [integration]   (default: all four)
#   unit:        every build/tests/unit/* (cmocka); one binary = one result per test case
#   fuzz:        every build/tests/fuzz/* over its seed corpus plus bounded random mutations
#   sim:         build/tests/sim/shoal-sim over $SIM_SEEDS seeds (default 2000); one result
#   integration: every tests/integration/*.sh against a real cluster and dockerd
# An integration script exits 0 (pass), 77 (skip, with the reason on its last output line) or
# anything else (fail). Logs of each suite go to build/test-logs/.
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
suites=("$@"); ((${#suites[@]})) || suites=(unit fuzz sim integration)
logs=$BUILD/test-logs; mkdir -p "$logs"
pass=0 fail=0 skip=0 failed=()

for suite in "${suites[@]}"; do
    case $suite in
    unit)
        for t in "$BUILD"/tests/unit/*; do
            [ -x "$t" ] || continue
            n=$(basename "$t")
            out=$(CMOCKA_MESSAGE_OUTPUT=stdout timeout 600 "$t" 2>&1); rc=$?
            echo "$out" >"$logs/unit-$n.log"
            # cmocka's summary lines: "[  PASSED  ] N test(s)." "[  FAILED  ] N test(s), listed below:"
            p=$(grep -c '^\[       OK \]' <<<"$out")
            f=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test(s).*/\1/p' <<<"$out" | head -1); f=${f:-0}
            s=$(sed -n 's/^\[  SKIPPED \] \([0-9]*\) test(s).*/\1/p' <<<"$out" | head -1); s=${s:-0}
            if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
            pass=$((pass + p)) fail=$((fail + f)) skip=$((skip + s))
            [ "$f" -gt 0 ] && failed+=("unit/$n") && echo "$out" | grep -E 'FAILED|ERROR|error' | head -20
            printf '%-44s %3d passed %3d failed\n' "unit/$n" "$p" "$f"
        done ;;
    fuzz)
        for t in "$BUILD"/tests/fuzz/*; do
            [ -x "$t" ] || continue
            n=$(basename "$t"); corpus=tests/fuzz/corpus/${n#fuzz_}
            if timeout 300 "$t" -runs=${FUZZ_RUNS:-20000} "$corpus" >"$logs/fuzz-$n.log" 2>&1; then
                pass=$((pass + 1)); printf '%-44s passed\n' "fuzz/$n"
            else
                fail=$((fail + 1)); failed+=("fuzz/$n"); printf '%-44s FAILED\n' "fuzz/$n"; tail -5 "$logs/fuzz-$n.log"
            fi
        done ;;
    sim)
        t=$BUILD/tests/sim/shoal-sim
        [ -x "$t" ] || continue
        if timeout 1800 "$t" --seeds "${SIM_SEEDS:-2000}" >"$logs/sim.log" 2>&1; then
            pass=$((pass + 1)); printf '%-44s passed  (%s)\n' "sim/shoal-sim" "$(tail -1 "$logs/sim.log")"
        else
            fail=$((fail + 1)); failed+=("sim/shoal-sim"); printf '%-44s FAILED\n' "sim/shoal-sim"; tail -15 "$logs/sim.log"
        fi ;;
    integration)
        for t in tests/integration/*.sh; do
            [ -f "$t" ] || continue
            n=$(basename "$t" .sh); start=$(date +%s)
            timeout 900 bash "$t" >"$logs/integration-$n.log" 2>&1; rc=$?
            secs=$(($(date +%s) - start))
            case $rc in
            0) pass=$((pass + 1)); printf '%-44s passed  (%ds)\n' "integration/$n" $secs ;;
            77) skip=$((skip + 1)); printf '%-44s SKIPPED (%s)\n' "integration/$n" "$(tail -1 "$logs/integration-$n.log")" ;;
            *) fail=$((fail + 1)); failed+=("integration/$n")
               printf '%-44s FAILED  (rc=%d, %ds)\n' "integration/$n" $rc $secs; tail -25 "$logs/integration-$n.log" ;;
            esac
        done ;;
    *) echo "run.sh: unknown suite $suite" >&2; exit 2 ;;
    esac
done
((${#failed[@]})) && echo "failed: ${failed[*]}"
echo "$pass passed, $fail failed, $skip skipped"
[ $fail -eq 0 ]
