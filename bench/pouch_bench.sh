#!/bin/sh
# pouch_bench.sh — PouchDB replication throughput, barrel vs pouchdb-server, in one run.
# The same client script (bench/pouchdb/pouch_bench.js: PouchDB 9, memory adapter) pushes N
# sensor docs to each server and pulls them into a fresh local db. Servers: BUILD_DIR/barrel
# serve, and pouchdb-server 4.2.0 (leveldb/LevelDOWN backend), both pinned in
# bench/pouchdb/package-lock.json and installed (npm ci) into BUILD_DIR/npm/pouchdb-bench when
# missing. Prints docs/s each way, barrel's ratio to pouchdb-server, each server's peak RSS
# (VmHWM) after the run, each server's CPU time per doc each way, and the load average.
# usage: bench/pouch_bench.sh BUILD_DIR [N=100000]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${1:?usage: pouch_bench.sh BUILD_DIR [N]}" && pwd)
n=${2:-100000}
npmdir="$build/npm/pouchdb-bench"
"$here/../scripts/npm-pinned.sh" "$here/pouchdb" "$npmdir" node_modules/.bin/pouchdb-server
export NODE_PATH="$npmdir/node_modules"
work=$(mktemp -d /tmp/pouch-bench.XXXXXX)
srv=
cleanup() {
    [ -n "$srv" ] && kill "$srv" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}
wait_http() {
    i=0
    until node -e 'fetch(process.argv[1]).then(r=>process.exit(r.ok?0:1),()=>process.exit(1))' "$1"; do
        i=$((i + 1))
        [ $i -lt 100 ] || { echo "server at $1 did not start" >&2; exit 1; }
        sleep 0.1
    done
}
hwm_mb() {
    awk '/VmHWM/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"
}
field() { # json name
    echo "$1" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s)[process.argv[1]]))' "$2"
}
run() { # name url pid -> "push pull rss push_cpu pull_cpu"
    out=$(BENCH_SERVER_PID=$3 node "$here/pouchdb/pouch_bench.js" "$2" "$n")
    echo "$1: $out" >&2
    echo "$(field "$out" push_docs_s) $(field "$out" pull_docs_s) $(hwm_mb "$3")" \
        "$(field "$out" server_push_us_doc) $(field "$out" server_pull_us_doc)"
}

# barrel
port=$(free_port)
"$build/barrel" --data "$work/barrel" serve --port "$port" >"$work/barrel.log" 2>&1 &
srv=$!
wait_http "http://127.0.0.1:$port/"
set -- $(run barrel "http://127.0.0.1:$port" "$srv")
b_push=$1 b_pull=$2 b_rss=$3 b_pushc=$4 b_pullc=$5
kill "$srv" 2>/dev/null
wait "$srv" 2>/dev/null || true
srv=

# pouchdb-server (leveldb)
port=$(free_port)
mkdir -p "$work/ps"
(cd "$work/ps" && exec node "$npmdir/node_modules/pouchdb-server/bin/pouchdb-server" \
    --port "$port" --host 127.0.0.1 --dir "$work/ps" --no-stdout-logs) >"$work/ps.log" 2>&1 &
srv=$!
wait_http "http://127.0.0.1:$port/"
set -- $(run pouchdb-server "http://127.0.0.1:$port" "$srv")
p_push=$1 p_pull=$2 p_rss=$3 p_pushc=$4 p_pullc=$5
kill "$srv" 2>/dev/null
wait "$srv" 2>/dev/null || true
srv=

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
printf '\nPouchDB 9 (memory adapter) replicating %s sensor docs\n' "$n"
printf '%-22s %12s %12s %14s\n' server push_docs/s pull_docs/s peak_RSS_MiB
printf '%-22s %12s %12s %14s\n' barrel "$b_push" "$b_pull" "$b_rss"
printf '%-22s %12s %12s %14s\n' "pouchdb-server 4.2.0" "$p_push" "$p_pull" "$p_rss"
printf '%-22s %12s %12s\n' "barrel / pouchdb-srv" "$(ratio "$b_push" "$p_push")x" "$(ratio "$b_pull" "$p_pull")x"
printf '\nserver CPU (user+sys) per doc, us\n'
printf '%-22s %12s %12s\n' server push pull
printf '%-22s %12s %12s\n' barrel "$b_pushc" "$b_pullc"
printf '%-22s %12s %12s\n' "pouchdb-server 4.2.0" "$p_pushc" "$p_pullc"
printf 'load average: %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
