#!/usr/bin/env python3
"""mesh_bench.py — issue 6's figures with real `barrel serve` processes on loopback.

  bench/mesh_bench.py BUILD_DIR [--nodes 10] [--writes 1000] [--rate 100] [--docs 10000]

1. N nodes with one mesh key (no mDNS on loopback: each node is given one --peer, the first
   node; gossip does the rest; links are bounded at 8), settled until every node sees N-1
   alive members;
2. one node writes W docs at R per second (single PUTs, sync=full); a continuous _changes
   feed on every other node records when each doc arrives: time from the PUT's answer to its
   arrival on each node, p50/p99/max over all (doc, node) pairs, and per doc the time until it
   was everywhere;
3. the mesh is idle for 20 s: link bytes sent per node per second (barrel_p2p_bytes_sent_total,
   WebSocket headers included: heartbeats, gossip, digests);
4. the first node bulk-writes up to D docs in all; a new node (given one --peer) starts: time
   until it has discovered every member, and until its copy has all D docs with the same set
   hash as the writer;
5. one member is killed with SIGKILL: time until every other node holds it dead (defaults).
Prints the figures and `uptime`; not a test.
"""
import argparse, base64, json, os, shutil, signal, socket, statistics, subprocess, sys, tempfile
import threading, time, urllib.request

p = argparse.ArgumentParser()
p.add_argument("build")
p.add_argument("--nodes", type=int, default=10)
p.add_argument("--writes", type=int, default=1000)
p.add_argument("--rate", type=float, default=100.0)
p.add_argument("--docs", type=int, default=10000)
a = p.parse_args()
B = os.path.join(os.path.abspath(a.build), "barrel")
work = tempfile.mkdtemp(prefix="barrel-mesh-bench-")
procs = []


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def call(port, method, path, body=None, timeout=30):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return json.loads(e.read() or b"null")


def start(i, peer):
    d = os.path.join(work, "n%d" % i)
    port = free_port()
    args = [B, "--log-level", "warn", "--data", d, "serve", "--port", str(port), "--mesh-key",
            os.path.join(work, "mesh.key"), "--no-mdns"]
    if peer:
        args += ["--peer", "ws://127.0.0.1:%d" % peer]
    log = open(os.path.join(work, "n%d.log" % i), "w")
    pr = subprocess.Popen(args, stdout=log, stderr=log)
    procs.append(pr)
    for _ in range(200):
        try:
            call(port, "GET", "/")
            return port
        except Exception:
            time.sleep(0.05)
    raise SystemExit("node %d did not start" % i)


def alive(port):
    d = call(port, "GET", "/_peers")
    return sum(1 for m in d["members"] if m["state"] == "alive")


def metric(port, name):
    with urllib.request.urlopen("http://127.0.0.1:%d/_metrics" % port) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


def pct(v, q):
    v = sorted(v)
    return v[min(len(v) - 1, int(q * len(v)))]


def main():
    subprocess.run([B, "mesh-key", "new", os.path.join(work, "mesh.key")], check=True,
                   stdout=subprocess.DEVNULL)
    print("uptime (start): " + subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    n = a.nodes
    ports = [start(0, None)]
    for i in range(1, n):
        ports.append(start(i, ports[0]))
    t0 = time.time()
    while any(alive(pt) < n - 1 for pt in ports):
        if time.time() - t0 > 60:
            raise SystemExit("the mesh did not settle: %s" % [alive(pt) for pt in ports])
        time.sleep(0.1)
    print("nodes=%d settled (every node sees %d alive) in %.1f s" % (n, n - 1, time.time() - t0))
    call(ports[0], "PUT", "/bench")
    t0 = time.time()
    while any(call(pt, "GET", "/bench").get("db_name") != "bench" for pt in ports):
        time.sleep(0.05)
    print("database reached every node in %.2f s" % (time.time() - t0))

    # 2. write-to-everywhere latency
    arrivals = {}  # (node index, doc id) -> time
    lock = threading.Lock()
    stop = threading.Event()

    def feed(i, port):
        url = "http://127.0.0.1:%d/bench/_changes?feed=continuous&since=now&heartbeat=1000" % port
        with urllib.request.urlopen(url, timeout=120) as r:
            for line in r:
                if stop.is_set():
                    return
                line = line.strip()
                if not line:
                    continue
                c = json.loads(line)
                if "id" in c:
                    now = time.time()
                    with lock:
                        arrivals.setdefault((i, c["id"]), now)

    threads = [threading.Thread(target=feed, args=(i, ports[i]), daemon=True)
               for i in range(1, n)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    written = {}
    gap = 1.0 / a.rate
    t_next = time.time()
    for k in range(a.writes):
        doc = "w-%05d" % k
        call(ports[0], "PUT", "/bench/" + doc, {"type": "sensor", "site": "site-%d" % (k % 50),
                                               "value": k / a.writes, "ts": k})
        written[doc] = time.time()
        t_next += gap
        d = t_next - time.time()
        if d > 0:
            time.sleep(d)
    deadline = time.time() + 30
    while time.time() < deadline:
        with lock:
            if len(arrivals) >= a.writes * (n - 1):
                break
        time.sleep(0.1)
    stop.set()
    lat, everywhere, missing = [], [], 0
    with lock:
        for doc, tw in written.items():
            last = 0.0
            for i in range(1, n):
                ta = arrivals.get((i, doc))
                if ta is None:
                    missing += 1
                    continue
                lat.append(max(0.0, ta - tw) * 1000)
                last = max(last, ta - tw)
            everywhere.append(last * 1000)
    print("write_to_node  writes=%d nodes=%d pairs=%d missing=%d p50_ms=%.1f p99_ms=%.1f max_ms=%.1f"
          % (a.writes, n - 1, len(lat), missing, pct(lat, .5), pct(lat, .99), max(lat)))
    print("write_to_everywhere p50_ms=%.1f p99_ms=%.1f max_ms=%.1f"
          % (pct(everywhere, .5), pct(everywhere, .99), max(everywhere)))

    # 3. idle gossip
    time.sleep(3)
    b0 = [metric(pt, "barrel_p2p_bytes_sent_total") for pt in ports]
    time.sleep(20)
    b1 = [metric(pt, "barrel_p2p_bytes_sent_total") for pt in ports]
    per = [(y - x) / 20 for x, y in zip(b0, b1)]
    print("idle_link_bytes_per_s_per_node mean=%.0f max=%.0f (links per node: %s)"
          % (statistics.mean(per), max(per),
             [call(pt, "GET", "/_node")["links"] for pt in ports]))

    # 4. a new node joins and converges on D docs
    left = a.docs - a.writes
    k = 0
    while k < left:
        batch = [{"_id": "b-%06d" % (k + j), "type": "sensor", "site": "site-%d" % ((k + j) % 50),
                  "value": 0.5, "ts": k + j} for j in range(min(1000, left - k))]
        call(ports[0], "POST", "/bench/_bulk_docs", {"docs": batch})
        k += len(batch)
    target = call(ports[0], "GET", "/bench")
    t0 = time.time()
    while any(call(pt, "GET", "/bench").get("digest") != target["digest"] for pt in ports):
        if time.time() - t0 > 120:
            raise SystemExit("the mesh did not converge on the bulk load")
        time.sleep(0.2)
    print("bulk %d docs reached all %d nodes in %.2f s" % (left, n, time.time() - t0))
    t0 = time.time()
    newp = start(n, ports[0])
    t_start = time.time() - t0
    t_members = t_conv = None
    while time.time() - t0 < 120 and t_conv is None:
        if t_members is None and alive(newp) >= n:
            t_members = time.time() - t0
        info = call(newp, "GET", "/bench")
        if info.get("digest") == target["digest"] and info.get("doc_count") == a.docs:
            t_conv = time.time() - t0
        time.sleep(0.05)
    print("new_node docs=%d started_s=%.2f discovered_all_s=%s converged_s=%s"
          % (a.docs, t_start, "%.2f" % t_members if t_members else "-",
             "%.2f" % t_conv if t_conv else "not within 120 s"))
    # 5. a member killed with SIGKILL: time until every other node holds it dead (defaults:
    # probe 1 s, suspicion 3 s)
    victim = procs[n - 1]
    vid = call(ports[n - 1], "GET", "/_node")["node_id"]
    others = ports[: n - 1] + [newp]
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    t0 = time.time()
    seen = {}
    while len(seen) < len(others) and time.time() - t0 < 30:
        for pt in others:
            if pt in seen:
                continue
            d = call(pt, "GET", "/_peers")
            if any(m["id"] == vid and m["state"] == "dead" for m in d["members"]):
                seen[pt] = time.time() - t0
        time.sleep(0.05)
    v = list(seen.values())
    print("dead_detection nodes=%d detected=%d first_s=%.2f last_s=%.2f"
          % (len(others), len(v), min(v) if v else -1, max(v) if v else -1))
    print("uptime (end): " + subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


try:
    main()
finally:
    for pr in procs:
        pr.send_signal(signal.SIGTERM)
    for pr in procs:
        try:
            pr.wait(10)
        except Exception:
            pr.kill()
    if not os.environ.get("KEEP"):
        shutil.rmtree(work, ignore_errors=True)
