#!/usr/bin/env bash
# soak.sh [BUILD_DIR] [SEEDS] — the long run: every scenario of simulations/scenarios/ over
# SEEDS seeds (default 2000; laptop-week and scale over SEEDS/100), two scenarios at a time. Prints each
# failing seed with its replay command; exits 1 if any failed.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${1:-$root/build}
seeds=${2:-2000}
sim=$build/simulations/barrel-sim
[[ -x $sim ]] || { echo "soak: $sim not built (scripts/build.sh)" >&2; exit 1; }
logs=$(mktemp -d)
pids=()
for f in "$root"/simulations/scenarios/*.scn; do
    n=$seeds
    case $(basename "$f") in # the long ones: a simulated week; 50 nodes
    laptop-week.scn | scale.scn) n=$(( seeds / 100 > 0 ? seeds / 100 : 1 )) ;;
    esac
    "$sim" "$f" --seeds "1-$n" --quiet >"$logs/$(basename "$f").log" 2>&1 &
    pids+=($!)
    if (( ${#pids[@]} >= 2 )); then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
done
wait
failed=0
for l in "$logs"/*.log; do
    tail -1 "$l"
    grep -A1 '^FAIL' "$l" && failed=1
done
rm -rf "$logs"
exit $failed
