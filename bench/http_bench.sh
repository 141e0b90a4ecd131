#!/bin/sh
# http_bench.sh — HTTP figures for `barrel serve` with wrk: GET /{db}/{id} of random ids and
# PUT of new documents (sync=full, the default for client writes), 64 connections each, over
# a node holding 100,000 sensor documents; plus the node's RSS idle and under load.
#
#   bench/http_bench.sh [BUILD_DIR] [SECONDS]      (default /tmp/surf-rel, 15)
#
# Needs wrk (apt-get install wrk), curl and python3 (to load the documents). Prints figures;
# not a test. The node and wrk share the machine, so on a 2-core box wrk takes one core.
set -eu
BUILD=${1:-/tmp/surf-rel}
DUR=${2:-15}
PORT=${PORT:-7455}
N=${N:-100000}
CONNS=${CONNS:-64}
WORK=$(mktemp -d /tmp/http-bench.XXXXXX)
URL=http://127.0.0.1:$PORT
trap 'kill $NODE 2>/dev/null; wait $NODE 2>/dev/null; rm -rf "$WORK"' EXIT INT TERM

"$BUILD/barrel" --data "$WORK/data" serve --port "$PORT" >"$WORK/node.log" 2>&1 &
NODE=$!
for _ in $(seq 50); do curl -sf "$URL/" >/dev/null && break; sleep 0.1; done
curl -sf -X PUT "$URL/bench" >/dev/null

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$NODE/status"; }
echo "rss_start_kb=$(rss_kb)"

t0=$(date +%s.%N)
python3 - "$URL" "$N" <<'PY'
import json, random, sys, urllib.request
url, n = sys.argv[1], int(sys.argv[2])
rnd = random.Random(42)
for start in range(0, n, 1000):
    docs = [{"_id": "doc-%08d" % i, "type": "sensor", "site": "site-%d" % (i % 50),
             "value": round(rnd.uniform(-20, 45), 3), "ts": 1700000000 + i,
             "tags": [rnd.choice(["a", "b", "c", "d"]) + str(rnd.randint(0, 9)) for _ in range(3)]}
            for i in range(start, min(n, start + 1000))]
    req = urllib.request.Request(url + "/bench/_bulk_docs", data=json.dumps({"docs": docs}).encode(),
                                 headers={"content-type": "application/json"})
    urllib.request.urlopen(req).read()
PY
t1=$(date +%s.%N)
echo "load_docs=$N load_s=$(echo "$t1 $t0" | awk '{printf "%.1f", $1-$2}')"
curl -sf "$URL/bench" | python3 -c 'import json,sys; d=json.load(sys.stdin); print("doc_count=%d" % d["doc_count"])'
sleep 3
echo "rss_idle_kb=$(rss_kb)"
sleep 7 # serve flushes memtables after 5 s without writes (--idle-flush)
echo "rss_idle10s_kb=$(rss_kb)"

cat >"$WORK/get.lua" <<LUA
math.randomseed(os.time())
request = function()
  return wrk.format("GET", string.format("/bench/doc-%08d", math.random(0, $N - 1)))
end
LUA
cat >"$WORK/put.lua" <<'LUA'
local counter = 0
local nthreads = 0
setup = function(thread) thread:set("tid", nthreads); nthreads = nthreads + 1 end
request = function()
  counter = counter + 1
  local body = string.format('{"type":"sensor","site":"site-%d","value":%.3f,"ts":%d,"tags":["a1","b2","c3"]}',
                             counter % 50, math.random() * 60 - 20, 1800000000 + counter)
  return wrk.format("PUT", string.format("/bench/new-%d-%09d", tid, counter),
                    {["Content-Type"] = "application/json"}, body)
end
LUA

# RSS peak while wrk runs
sample() { peak=0; while kill -0 "$1" 2>/dev/null; do r=$(rss_kb); [ "$r" -gt "$peak" ] && peak=$r; sleep 0.2; done; echo "$peak"; }

run() { # name script
  wrk -t2 -c"$CONNS" -d"${DUR}s" --latency -s "$2" "$URL" >"$WORK/$1.out" 2>&1 &
  W=$!
  sample $W >"$WORK/$1.peak" &
  S=$!
  wait $W || true
  wait $S
  rps=$(awk '/^Requests\/sec/ {print $2}' "$WORK/$1.out")
  p50=$(awk '$1=="50%" {print $2}' "$WORK/$1.out")
  p99=$(awk '$1=="99%" {print $2}' "$WORK/$1.out")
  errs=$(grep -E "Non-2xx|Socket errors" "$WORK/$1.out" | tr '\n' ' ' || true)
  echo "$1: conns=$CONNS secs=$DUR req_per_s=$rps p50=$p50 p99=$p99 rss_peak_kb=$(cat "$WORK/$1.peak") $errs"
}
run get "$WORK/get.lua"
run put "$WORK/put.lua"
sleep 3
echo "rss_after_kb=$(rss_kb)"
