#!/bin/bash
# mesh_test.sh — the mesh on a real (virtual) network: six hosts in network namespaces on one
# bridge, each with its own D-Bus and Avahi daemon (netns.sh), each running `barrel serve`
# bound to its own address with the same mesh key and no --peer.
#   1. mDNS: h1..h3 find each other by mDNS alone and converge on a database written on h1;
#      a hostile service on h3 that claims h2's node id is dialled and refused
#      (peer_id_mismatch: the handshake proves who answers);
#   2. h4..h6 join the same way; all six converge, with one link per pair although they all
#      discovered, and dialled, each other at once;
#   3. partition: h4..h6's ports move to a second bridge (the link between the halves is
#      down, no FIN or RST: links die by heartbeat timeout); both halves write the same
#      documents; the members of the other half become suspect, then dead;
#   4. heal: the ports move back; dead members are redialled (gossip's reconnect) and every
#      node ends with the same set hash, the same winners and the same conflicts.
# usage: mesh_test.sh BUILD_DIR   (ctest: netns/mesh; exit 77 = skipped, with the reason)
set -u
build=$(cd "${1:?usage: mesh_test.sh BUILD_DIR}" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
B=$build/barrel
# shellcheck source=netns.sh
. "$here/netns.sh"
netns_up 6
rc=$?
if ((rc == 77)); then
    echo "SKIP: this machine cannot create network namespaces"
    exit 77
fi
((rc == 0)) || exit 1
work=$(mktemp -d /tmp/barrel-mesh-netns.XXXXXX)
fails=0
trap 'netns_down >/dev/null 2>&1; [[ ${KEEP:-} ]] || rm -rf "$work"' EXIT

fail() {
    echo "FAIL: $*"
    fails=$((fails + 1))
}

"$B" mesh-key new "$work/mesh.key" >/dev/null || exit 1
hash=$(echo secret | "$B" passwd) || exit 1
cat >"$work/config.json" <<JSON
{"admin": {"username": "admin", "password_hash": "$hash"},
 "p2p": {"heartbeat_ms": 500, "timeout_ms": 2000}}
JSON

start() { # start HOST
    local h=$1
    mkdir -p "$work/$h"
    netns_spawn "$h" "$work/$h.pid" "$work/$h.log" "$B" --log-level info --data "$work/$h" \
        serve --bind "$(netns_addr "$h")" --port 7070 --config "$work/config.json" \
        --mesh-key "$work/mesh.key" --gossip-interval 250 --probe-ms 500 --dead-ms 1500
}

# call HOST METHOD PATH [BODY]: the body of the answer on stdout
call() {
    local h=$1 m=$2 p=$3
    shift 3
    netns_run "$h" curl -s -m 5 -u admin:secret -X "$m" -H 'Content-Type: application/json' \
        "http://$(netns_addr "$h"):7070$p" "$@"
}

# wait_for SECONDS CMD...: retry CMD every 0.2 s until it succeeds
wait_for() {
    local t=$1 i
    shift
    for ((i = 0; i < t * 5; i++)); do
        "$@" && return 0
        sleep 0.2
    done
    return 1
}

has_doc() { # HOST PATH NEEDLE
    call "$1" GET "$2" | grep -q "$3"
}

members_alive() { # HOST N: exactly N members alive with a link up
    local out
    out=$(call "$1" GET /_peers) || return 1
    [[ $(grep -o '"state":"alive","addresses":[^}]*"link":"up"' <<<"$out" | wc -l) == "$2" ]]
}

dead_count() { # HOST N: at least N members dead
    local out
    out=$(call "$1" GET /_peers) || return 1
    (($(grep -o '"state":"dead"' <<<"$out" | wc -l) >= $2))
}

digest() { # HOST DB: "doc_count digest" (GET /{db} lists doc_count before digest)
    call "$1" GET "/$2" | sed -n 's/.*"doc_count":\([0-9]*\),.*"digest":"\([0-9a-f]*\)".*/\1 \2/p'
}

same_digest() { # DB HOSTS...: equal and non-empty on every host
    local db=$1 first= d h
    shift
    for h in "$@"; do
        d=$(digest "$h" "$db")
        [[ -n $d ]] || return 1
        if [[ -z $first ]]; then first=$d; elif [[ $d != "$first" ]]; then return 1; fi
    done
}

up() { # HOST: answering
    call "$1" GET / | grep -q barrel
}

echo "== 1. three nodes, no --peer, find each other by mDNS"
for h in h1 h2 h3; do start $h; done
for h in h1 h2 h3; do wait_for 10 up $h || fail "$h did not start: $(tail -3 "$work/$h.log")"; done
t0=$(date +%s.%N)
for h in h1 h2 h3; do
    wait_for 20 members_alive $h 2 || fail "$h does not see 2 alive members: $(call $h GET /_peers)"
done
echo "discovered in $(awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN{printf "%.1f", a-b}') s"
grep -q "event=mdns_found" "$work/h2.log" || fail "h2 found nobody by mDNS"
call h1 PUT /notes >/dev/null
rev=$(call h1 PUT /notes/hello -d '{"text":"from h1"}' | sed -n 's/.*"rev":"\([^"]*\)".*/\1/p')
[[ -n $rev ]] || fail "no write on h1"
for h in h2 h3; do
    wait_for 15 has_doc $h /notes/hello "$rev" || fail "$h did not get h1's write"
done
id_of() { call "$1" GET /_node | sed -n 's/.*"node_id":"\([^"]*\)".*/\1/p'; }
fp=$(netns_run h1 avahi-browse -rtp _barrel._tcp 2>/dev/null | sed -n 's/.*"mesh=\([0-9a-f]*\)".*/\1/p' | head -1)
[[ -n $fp ]] || fail "cannot read the mesh fingerprint from mDNS"
# an impostor: a service on h3 announcing the id of a node that is not there (a valid id)
fake=$("$B" --data "$work/nobody" id 2>/dev/null)
netns_spawn h3 "$work/fake.pid" "$work/fake.log" avahi-publish -s impostor _barrel._tcp 7070 \
    "id=$fake" v=2 "mesh=$fp" port=7070
wait_for 15 grep -q "reason=peer_id_mismatch" "$work/h1.log" ||
    fail "a service claiming another id on h3's address was not refused"
wait_for 10 grep -q "event=address_dropped id=${fake:0:8}" "$work/h1.log" ||
    fail "the impostor's address was kept"
kill "$(cat "$work/fake.pid")" 2>/dev/null
call h1 GET /_peers | grep -q "\"id\":\"$fake\",\"state\":\"alive\",[^}]*\"link\":\"up\"" &&
    fail "h1 linked to the impostor"
members_alive h1 2 || fail "h1 lost its members: $(call h1 GET /_peers)"

echo "== 2. three more join; all six converge"
for h in h4 h5 h6; do start $h; done
for h in h1 h2 h3 h4 h5 h6; do
    wait_for 30 members_alive $h 5 || fail "$h does not see 5 alive members"
done
for h in h4 h5 h6; do
    wait_for 15 has_doc $h /notes/hello "$rev" || fail "$h did not get the database"
done
links_of() { call "$1" GET /_node | sed -n 's/.*"links":\([0-9]*\).*/\1/p'; }
sleep 1
for h in h1 h2 h3 h4 h5 h6; do
    [[ $(links_of $h) == 5 ]] || fail "$h holds $(links_of $h) links, not one per member"
done
call h5 PUT /notes/from-h5 -d '{"text":"from h5"}' >/dev/null
for h in h1 h2 h3 h4 h6; do
    wait_for 15 has_doc $h /notes/from-h5 "from h5" || fail "$h did not get h5's write"
done

echo "== 3. partition {h1,h2,h3} | {h4,h5,h6}, writes on both sides"
sw="${_NETNS_P}sw" # the namespace that holds the bridge
ip -n "$sw" link add br1 type bridge && ip -n "$sw" link set br1 up || fail "no second bridge"
for h in h4 h5 h6; do ip -n "$sw" link set "v$h" master br1 || fail "cannot move v$h"; done
for i in $(seq 0 9); do
    call h1 PUT "/notes/doc-$i" -d "{\"side\":\"left\",\"i\":$i}" >/dev/null
    call h6 PUT "/notes/doc-$i" -d "{\"side\":\"right\",\"i\":$i}" >/dev/null
done
call h2 PUT /notes/only-left -d '{"v":1}' >/dev/null
call h4 PUT /notes/only-right -d '{"v":2}' >/dev/null
for h in h1 h2 h3; do
    wait_for 20 dead_count $h 3 || fail "$h did not declare the other half dead: $(call $h GET /_peers)"
done
wait_for 10 same_digest notes h1 h2 h3 || fail "the left half did not converge"
wait_for 10 same_digest notes h4 h5 h6 || fail "the right half did not converge"
[[ $(digest h1 notes) != $(digest h4 notes) ]] || fail "the halves agree during the partition"
has_doc h4 /notes/only-left '"v":1' && fail "a write crossed the partition"

echo "== 4. heal"
for h in h4 h5 h6; do ip -n "$sw" link set "v$h" master br0 || fail "cannot move v$h back"; done
t0=$(date +%s.%N)
wait_for 60 same_digest notes h1 h2 h3 h4 h5 h6 || fail "no convergence after the heal"
echo "converged $(awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN{printf "%.1f", a-b}') s after the heal"
for h in h1 h2 h3 h4 h5 h6; do
    wait_for 30 members_alive $h 5 || fail "$h does not see every member alive again"
done
ref=$(call h1 GET '/notes/doc-3?conflicts=true')
grep -q '_conflicts' <<<"$ref" || fail "no conflict on doc-3: $ref"
for h in h2 h3 h4 h5 h6; do
    [[ $(call $h GET '/notes/doc-3?conflicts=true') == "$ref" ]] || fail "$h has another winner"
    has_doc $h /notes/only-left '"v":1' || fail "$h lacks only-left"
    has_doc $h /notes/only-right '"v":2' || fail "$h lacks only-right"
done

if ((fails)); then
    for h in h1 h4; do
        echo "---- $h log (tail)"
        tail -25 "$work/$h.log"
    done
    echo "mesh_test: $fails failure(s)"
    exit 1
fi
echo "mesh_test: all checks passed"
