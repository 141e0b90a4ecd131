#!/usr/bin/env bash
# determinism.sh SIM SCENARIO_DIR — a run is a pure function of (scenario, seed): the same seed
# gives the same trace byte for byte, another seed another trace; and a run that cannot
# converge fails with the invariant it broke and the command that replays it.
set -euo pipefail
sim=$1
dir=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for scn in mesh crash-storm partition-heal; do
    "$sim" "$dir/$scn.scn" --seed 7 --trace "$work/a.txt" >"$work/a.out"
    "$sim" "$dir/$scn.scn" --seed 7 --trace "$work/b.txt" >"$work/b.out"
    "$sim" "$dir/$scn.scn" --seed 8 --trace "$work/c.txt" >/dev/null
    [[ $(wc -l <"$work/a.txt") -gt 100 ]] || { echo "FAIL: $scn: trace too short"; exit 1; }
    cmp "$work/a.txt" "$work/b.txt" || { echo "FAIL: $scn: seed 7 gave two traces"; exit 1; }
    if cmp -s "$work/a.txt" "$work/c.txt"; then
        echo "FAIL: $scn: seeds 7 and 8 gave the same trace"
        exit 1
    fi
    # the summaries agree too, except the wall time
    diff <(grep -v '^wall' "$work/a.out") <(grep -v '^wall' "$work/b.out")
    echo "ok: $scn seed 7 twice: $(wc -l <"$work/a.txt") identical trace lines"
done
# a settle too short to converge: exit 1, the failed invariant, the replay command
cat >"$work/short.scn" <<'SCN'
nodes 6
topology chain
net latency=50ms
db items
at 0s write nodes=0 db=items docs=10
settle 100ms
SCN
set +e
"$sim" "$work/short.scn" --seed 3 >"$work/short.out" 2>&1
rc=$?
set -e
cat "$work/short.out"
[[ $rc == 1 ]] || { echo "FAIL: expected exit 1, got $rc"; exit 1; }
grep -q 'FAIL: not converged .*\[convergence\]' "$work/short.out"
grep -q "^replay: .* --seed 3 --nodes 6" "$work/short.out"
# bad usage: exit 2 with a message
set +e
"$sim" "$dir/chain.scn" >/dev/null 2>&1; rc1=$?
"$sim" "$dir/chain.scn" --seed x >/dev/null 2>&1; rc2=$?
"$sim" /nonexistent.scn --seed 1 >/dev/null 2>&1; rc3=$?
set -e
[[ $rc1 == 2 && $rc2 == 2 && $rc3 == 2 ]] || { echo "FAIL: usage exits $rc1 $rc2 $rc3"; exit 1; }
echo "ok: determinism, failing seed, usage"
