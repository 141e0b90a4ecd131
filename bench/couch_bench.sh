#!/bin/sh
# couch_bench.sh — barrel's CouchDB-HTTP endpoint against pouchdb-server 4.2.0 (in-memory): a
# barrel node pushes N sensor docs to pouchdb-server and pulls them back into a fresh db, both
# through POST /_replicate. Prints docs/s each way and `uptime`.
# usage: bench/couch_bench.sh BUILD_DIR [N=10000]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${1:?usage: couch_bench.sh BUILD_DIR [N]}" && pwd)
n=${2:-10000}
sh "$here/../tests/couchdb/install.sh" "$build" >/dev/null
work=$(mktemp -d /tmp/couch-bench.XXXXXX)
bpid= ppid=
cleanup() {
    [ -n "$bpid" ] && kill "$bpid" 2>/dev/null || true
    [ -n "$ppid" ] && kill "$ppid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
pport=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
(cd "$work" && exec node "$build/npm/pouchdb-bench/node_modules/pouchdb-server/bin/pouchdb-server" \
    --port "$pport" --host 127.0.0.1 -m --no-stdout-logs) >"$work/ps.log" 2>&1 &
ppid=$!
"$build/barrel" --data "$work/b" serve --port 0 --request-timeout 600 >"$work/b.log" 2>&1 &
bpid=$!
for i in $(seq 100); do grep -q listening "$work/b.log" && curl -sf "http://127.0.0.1:$pport/" >/dev/null && break; sleep 0.1; done
bport=$(sed -n 's|.*http://127.0.0.1:\([0-9]*\).*|\1|p' "$work/b.log" | head -1)
B="http://127.0.0.1:$bport" P="http://127.0.0.1:$pport"
curl -sf -XPUT "$B/src" >/dev/null
python3 - "$n" >"$work/docs.json" <<'PY'
import json,sys
n=int(sys.argv[1])
print(json.dumps({"docs":[{"_id":"s%07d"%i,"sensor":"t%d"%(i%50),"ts":1700000000+i,"temp":20+(i%100)/10,"unit":"C"} for i in range(n)]}))
PY
curl -sf -XPOST -H 'Content-Type: application/json' --data-binary @"$work/docs.json" "$B/src/_bulk_docs" >/dev/null
t0=$(date +%s.%N)
curl -sf -XPOST -H 'Content-Type: application/json' -d "{\"source\":\"src\",\"target\":\"$P/bench\",\"create_target\":true}" "$B/_replicate" >"$work/push.json"
t1=$(date +%s.%N)
curl -sf -XPOST -H 'Content-Type: application/json' -d "{\"source\":\"$P/bench\",\"target\":\"back\",\"create_target\":true}" "$B/_replicate" >"$work/pull.json"
t2=$(date +%s.%N)
python3 - "$n" "$t0" "$t1" "$t2" "$work/push.json" "$work/pull.json" <<'PY'
import json,sys
n=int(sys.argv[1]);t0,t1,t2=map(float,sys.argv[2:5])
pw=json.load(open(sys.argv[5]))["history"][0]["docs_written"];pl=json.load(open(sys.argv[6]))["history"][0]["docs_written"]
print(f"docs={n} push: {pw} written in {t1-t0:.2f}s = {pw/(t1-t0):.0f} docs/s; pull: {pl} written in {t2-t1:.2f}s = {pl/(t2-t1):.0f} docs/s")
PY
uptime
