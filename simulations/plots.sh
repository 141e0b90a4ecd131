#!/usr/bin/env bash
# plots.sh [BUILD_DIR] [OUT_DIR] — the simulator's figures: runs barrel-sim over the sweeps
# below, writes their CSVs and PNG plots (gnuplot) into OUT_DIR (default simulations/plots/)
# and prints a table.
#   convergence.png  convergence time after the last write against N (10..200), 1% loss
#   traffic.png      bytes and messages per change per node against N
#   heal.png         convergence after a heal against the partition's length
#   latency.png      distribution of propagation latency (write -> each node), N = 50
# Environment: SEEDS (default 3 per point), NODES (default "10 20 50 100 200").
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${1:-$root/build}
out=${2:-$root/simulations/plots}
sim=$build/simulations/barrel-sim
seeds=${SEEDS:-3}
nodes=${NODES:-10 20 50 100 200}
[[ -x $sim ]] || { echo "plots: $sim not built (scripts/build.sh)" >&2; exit 1; }
command -v gnuplot >/dev/null || { echo "plots: gnuplot missing (scripts/deps.sh installs it)" >&2; exit 1; }
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# 1. scale: N nodes, 1% loss, Serf's gossip setting
rm -f "$out/scale.csv"
for n in $nodes; do
    "$sim" "$root/simulations/scenarios/scale.scn" --seeds "1-$seeds" --nodes "$n" --quiet \
        --csv "$out/scale.csv" >/dev/null
done
"$sim" "$root/simulations/scenarios/scale.scn" --seed 1 --nodes 50 \
    --latency-csv "$out/latency.csv" >/dev/null

# 2. partition length: 10 nodes, half against half, writes on both sides, then heal
rm -f "$out/heal.csv"
for len in 5 10 30 60 120 300; do
    cat >"$work/heal-$len.scn" <<EOF
name heal-$len
nodes 10
topology mesh
gossip interval=200ms fanout=3
net latency=10ms jitter=10ms loss=1%
db items
at 10s write nodes=all db=items docs=5
at 15s partition half | other-half
at $((15 + len / 2))s write nodes=all db=items docs=5
at $((15 + len))s heal
settle 120s
EOF
    "$sim" "$work/heal-$len.scn" --seeds "1-$seeds" --quiet --csv "$work/h.csv" >/dev/null
done
awk -F, 'NR == 1 { print "partition_s," $0; next } { split($1, a, "-"); print a[2] "," $0 }' \
    "$work/h.csv" >"$out/heal.csv"

# mean per N (or per partition length) of a CSV column, for the plots and the table
mean() { # file keycol valcol
    awk -F, -v k="$2" -v v="$3" 'NR > 1 { s[$k] += $v; c[$k]++ } END { for (x in s) printf "%s %.2f\n", x, s[x] / c[x] }' "$1" | sort -n
}
mean "$out/scale.csv" 3 6 >"$work/conv.dat"
mean "$out/scale.csv" 3 11 >"$work/bytes.dat"
mean "$out/scale.csv" 3 10 >"$work/msgs.dat"
mean "$out/heal.csv" 1 8 >"$work/heal.dat"

gnuplot <<EOF
set terminal pngcairo size 800,500 noenhanced
set grid
set key left top
set output "$out/convergence.png"
set title "barrel-sim: convergence after the last write (mesh, interval 200 ms, fanout 3, 1% loss)"
set xlabel "nodes"; set ylabel "ms"; set logscale x; set xrange [8:250]
plot "$work/conv.dat" using 1:2 with linespoints lw 2 title "convergence time (mean of $seeds seeds)"
set output "$out/traffic.png"
set title "barrel-sim: traffic per change per node (first write to convergence)"
set ylabel "bytes"; set y2label "messages"; set y2tics; set ytics nomirror
plot "$work/bytes.dat" using 1:2 axes x1y1 with linespoints lw 2 title "bytes", \
     "$work/msgs.dat" using 1:2 axes x1y2 with linespoints lw 2 title "messages"
unset logscale x; unset y2tics; unset y2label; set ytics mirror
set output "$out/heal.png"
set title "barrel-sim: convergence after a heal (10 nodes, half against half)"
set xlabel "partition length (s)"; set ylabel "ms after the heal"
plot "$work/heal.dat" using 1:2 with linespoints lw 2 title "convergence after the heal"
set output "$out/latency.png"
set title "barrel-sim: propagation latency, write to each node (50 nodes, 1% loss)"
set xlabel "ms"; set ylabel "arrivals"; set style fill solid 0.5
bin(x) = 10 * floor(x / 10)
plot "$out/latency.csv" using (bin(\$1)):(1) smooth frequency with boxes title "arrivals per 10 ms"
EOF

echo "nodes  convergence_ms  bytes/change/node  msgs/change/node"
join "$work/conv.dat" "$work/bytes.dat" | join - "$work/msgs.dat" |
    awk '{ printf "%5s  %14s  %17s  %16s\n", $1, $2, $3, $4 }'
echo "partition_s  convergence_after_heal_ms"
awk '{ printf "%11s  %25s\n", $1, $2 }' "$work/heal.dat"
echo "plots: $out/{convergence,traffic,heal,latency}.png"
