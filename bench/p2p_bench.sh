#!/bin/sh
# p2p_bench.sh — replication over a link (WS /_p2p, encrypted frames) between two
# `barrel serve` processes on loopback, with PouchDB as the anchor, in one run:
#   1. one-shot pull: A holds N sensor docs; B (fresh db) runs POST /_replicate from
#      ws://A/bench: docs/s, and bytes on the wire per doc (barrel_p2p_bytes_*_total on B,
#      both directions, WebSocket headers included) against the stored CBOR body per doc
#      (A's sizes.external / N);
#   2. incremental: 1,000 docs updated on A, the same one-shot again: time, docs_read;
#   3. continuous: B pulls continuously from A; W single writes on A one at a time, latency
#      from A's PUT returning to the doc being readable on B (polled every 1 ms), p50/p99;
#   4. peak RSS (VmHWM) of A and B;
#   5. PouchDB 9 local to local: PouchDB.replicate of the same N docs between two memory dbs
#      (bench/pouchdb/pouch_local.js; the client pinned in bench/pouchdb/package-lock.json is
#      installed with npm ci into BUILD_DIR/npm/pouchdb-bench when missing).
#
#   bench/p2p_bench.sh [BUILD_DIR]          (default /tmp/p2p-rel; N=100000 W=200)
#
# POUCH=0 skips step 5; PULLS=k repeats the one-shot pull k times (default 1), each into a fresh
# database on B, and prints every run and the best (the machine may be shared: compare best), and
# the CPU time (utime + stime) of A and B per doc over the pull, which load disturbs less.
#
# Needs curl, python3 and node. Prints figures (and `uptime`); not a test.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
BUILD=$(cd "${1:-/tmp/p2p-rel}" && pwd)
N=${N:-100000}
W=${W:-200}
POUCH=${POUCH:-1}
PULLS=${PULLS:-1}
PA=${PA:-7461}
PB=${PB:-7462}
WORK=$(mktemp -d /tmp/p2p-bench.XXXXXX)
A=http://127.0.0.1:$PA
B=http://127.0.0.1:$PB
NA=
NB=
trap 'kill $NA $NB 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT INT TERM
echo "uptime (start): $(uptime)"

IDA=$("$BUILD/barrel" --data "$WORK/a" id 2>/dev/null)
IDB=$("$BUILD/barrel" --data "$WORK/b" id 2>/dev/null)
"$BUILD/barrel" --data "$WORK/a" serve --port "$PA" --allow "$IDB" >"$WORK/a.log" 2>&1 &
NA=$!
"$BUILD/barrel" --data "$WORK/b" serve --port "$PB" --allow "$IDA" >"$WORK/b.log" 2>&1 &
NB=$!
for _ in $(seq 50); do curl -sf "$A/" >/dev/null && curl -sf "$B/" >/dev/null && break; sleep 0.1; done
curl -sf -X PUT "$A/bench" >/dev/null
curl -sf -X PUT "$B/bench" >/dev/null

python3 - "$A" "$B" "$N" "$W" "$PA" "$PULLS" "$NA" "$NB" <<'PY'
import http.client, json, os, random, sys, time, urllib.request
a, b, n, w, pa = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
pulls = int(sys.argv[6])
pids = (sys.argv[7], sys.argv[8])

def cpu_s(pid):
    # utime + stime of a process, in seconds (fields 14 and 15 of /proc/PID/stat)
    f = open("/proc/%s/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")

def call(base, method, path, body=None):
    req = urllib.request.Request(base + path, method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"content-type": "application/json"})
    return json.load(urllib.request.urlopen(req, timeout=600))

def link_bytes(base):
    m = urllib.request.urlopen(base + "/_metrics").read().decode()
    v = {}
    for line in m.splitlines():
        if line.startswith("barrel_p2p_bytes_"):
            k, x = line.split()
            v[k] = int(x)
    return v.get("barrel_p2p_bytes_sent_total", 0), v.get("barrel_p2p_bytes_received_total", 0)

rnd = random.Random(42)
def sensor(i):
    return {"_id": "doc-%08d" % i, "type": "sensor", "site": "site-%d" % (i % 50),
            "value": round(rnd.uniform(-20, 45), 3), "ts": 1700000000 + i,
            "tags": [rnd.choice(["a", "b", "c", "d"]) + str(rnd.randint(0, 9)) for _ in range(3)]}
for start in range(0, n, 2000):
    call(a, "POST", "/bench/_bulk_docs", {"docs": [sensor(i) for i in range(start, min(n, start + 2000))]})
info = call(a, "GET", "/bench")
assert info["doc_count"] == n, info
cbor = info["sizes"]["external"] / n
print("loaded docs=%d cbor_body_bytes_per_doc=%.1f" % (n, cbor))

src = "ws://127.0.0.1:%s/bench" % pa
best = None
for k in range(pulls):
    tgt = "bench" if k == pulls - 1 else "bench_try%d" % k
    if tgt != "bench":
        call(b, "PUT", "/" + tgt)
    b0 = link_bytes(b)
    c0 = [cpu_s(x) for x in pids]
    t = time.perf_counter()
    r = call(b, "POST", "/_replicate", {"source": src, "target": tgt})
    dt = time.perf_counter() - t
    c1 = [cpu_s(x) for x in pids]
    cpu = (c1[0] - c0[0], c1[1] - c0[1])
    h = r["history"][0]
    assert h["docs_written"] == n and call(b, "GET", "/" + tgt)["doc_count"] == n, r
    b1 = link_bytes(b)
    if tgt != "bench":
        call(b, "DELETE", "/" + tgt)
    sent, recv = (b1[0] - b0[0]) / n, (b1[1] - b0[1]) / n
    wire = sent + recv
    if pulls > 1:
        print("  pull %d seconds=%.2f docs_per_s=%.0f cpu_us_per_doc A=%.2f B=%.2f" %
              (k + 1, dt, n / dt, cpu[0] * 1e6 / n, cpu[1] * 1e6 / n))
    best = dt if best is None else min(best, dt)
    best_cpu = cpu if k == 0 else tuple(min(x, y) for x, y in zip(best_cpu, cpu))
print("one_shot_pull docs=%d seconds=%.2f docs_per_s=%.0f%s" %
      (n, best, n / best, " (best of %d)" % pulls if pulls > 1 else ""))
print("one_shot_cpu_us_per_doc A=%.2f B=%.2f (source, target; best of each)" %
      (best_cpu[0] * 1e6 / n, best_cpu[1] * 1e6 / n))
print("wire_bytes_per_doc=%.1f (to_source=%.1f from_source=%.1f) cbor_bytes_per_doc=%.1f "
      "overhead_pct=%.1f" % (wire, sent, recv, cbor, (wire / cbor - 1) * 100))

# incremental: 1,000 docs updated on A, then the same one-shot
rows = call(a, "GET", "/bench/_all_docs?limit=1000")["rows"]
upd = []
for row in rows:
    d = sensor(int(row["id"][4:]))
    d["_rev"] = row["value"]["rev"]
    d["value"] = 99.5
    upd.append(d)
call(a, "POST", "/bench/_bulk_docs", {"docs": upd})
t = time.perf_counter()
r = call(b, "POST", "/_replicate", {"source": src, "target": "bench"})
dt = time.perf_counter() - t
h = r["history"][0]
print("incremental docs_updated=%d docs_read=%d seconds=%.3f" % (len(upd), h["docs_read"], dt))
assert call(b, "GET", "/bench/" + rows[-1]["id"])["value"] == 99.5

# continuous
call(b, "POST", "/_replicate", {"source": src, "target": "bench", "continuous": True})
ca = http.client.HTTPConnection(a[7:])
cb = http.client.HTTPConnection(b[7:])
lat = []
for i in range(w):
    body = json.dumps({"type": "sensor", "site": "site-1", "value": i * 0.5, "ts": 1800000000 + i,
                       "tags": ["x1", "y2", "z3"]})
    ca.request("PUT", "/bench/live-%05d" % i, body, {"content-type": "application/json"})
    r = ca.getresponse(); r.read()
    t = time.perf_counter()
    while True:
        cb.request("GET", "/bench/live-%05d" % i)
        r = cb.getresponse(); r.read()
        if r.status == 200:
            break
        time.sleep(0.001)
    lat.append((time.perf_counter() - t) * 1000)
lat.sort()
print("continuous_latency writes=%d p50_ms=%.2f p99_ms=%.2f max_ms=%.2f" %
      (w, lat[len(lat) // 2], lat[int(len(lat) * 0.99) - 1], lat[-1]))
PY
echo "peak_rss_mb A=$(awk '/VmHWM/ {printf "%.0f", $2/1024}' /proc/$NA/status)" \
    "B=$(awk '/VmHWM/ {printf "%.0f", $2/1024}' /proc/$NB/status)"

npmdir="$BUILD/npm/pouchdb-bench"
if [ "$POUCH" = 0 ]; then
    echo "uptime (end): $(uptime)"
    exit 0
fi
if ! cmp -s "$here/pouchdb/package-lock.json" "$npmdir/.lock-stamp" || [ ! -d "$npmdir/node_modules" ]; then
    mkdir -p "$npmdir"
    cp "$here/pouchdb/package.json" "$here/pouchdb/package-lock.json" "$npmdir/"
    (cd "$npmdir" && npm ci --no-audit --no-fund --loglevel=error)
    cp "$here/pouchdb/package-lock.json" "$npmdir/.lock-stamp"
fi
echo "pouchdb_local_to_local $(NODE_PATH="$npmdir/node_modules" node "$here/pouchdb/pouch_local.js" "$N")"
echo "uptime (end): $(uptime)"
