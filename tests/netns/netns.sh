#!/bin/bash
# netns.sh — N "hosts" in network namespaces on a private bridge, each with its own system bus
# (dbus-daemon) and avahi-daemon, so that mDNS really crosses a (virtual) link. For tests of
# discovery and of 3-to-6-node meshes of `barrel` processes. Root only; no systemd needed.
#
# Every run has its own prefix P (default "bn<PID>-"), so runs can overlap (ctest --parallel):
# namespaces ${P}sw (holds the bridge) and ${P}h1..${P}hN, state (configs, sockets, logs, pid
# files) in $NETNS_ROOT/$P (NETNS_ROOT defaults to /tmp/barrel-netns). Host i has eth0 with
# 10.99.0.i/24 (NETNS_SUBNET=a.b.c changes the first three bytes) and, with NETNS_IPV6=1, also
# fd99::i/64 and IPv6 in Avahi. Nothing is done in the root namespace: its interfaces, routes
# and daemons are never touched, and no avahi-daemon runs there.
#
# Use 1 — from a program (C test, Python): run `netns.sh hold N` as a child with a pipe on its
# stdin and its stdout to a file. It sets up, prints
#     netns: ready prefix=P state=DIR hosts=N subnet=S
# and waits. When its stdin reaches EOF (the owner closed it, or died) or it gets SIGTERM or
# SIGINT, it tears everything down and exits 0. Lines written to its stdin are commands, each
# answered on stdout with "netns: ok LINE" or "netns: error LINE: why":
#     avahi-stop H | avahi-start H | down
# Run programs on a host with `netns.sh run H CMD...` (env NETNS_PREFIX=P): it execs in place,
# so the PID of your fork is the program's PID, and the program stays your child.
# Exit status 77 (nothing set up; the reason on stderr) when this machine cannot create network
# namespaces (not root, or `ip netns add` fails); 1 for any other failure.
#
# Use 2 — from a shell script: source it and call the functions. Daemons and spawned programs
# are children of your shell, so they are reaped; netns_up installs an EXIT/INT/TERM trap that
# tears down even when the script fails:
#     . tests/netns/netns.sh
#     netns_up 3 || exit                 # status 77: cannot create namespaces here (skip)
#                                        # (the trap replaces an EXIT trap of yours)
#     netns_spawn h1 "$d/b1.pid" "$d/b1.log" barrel serve --bind "$(netns_addr h1)" ...
#     netns_run h2 curl -s "http://$(netns_addr h1):7070/"
#     netns_avahi_stop h2; netns_avahi_start h2
#     # netns_down runs on exit (or call it yourself)
#
# Commands, as functions (netns_up, netns_down, netns_run, ...) or as `netns.sh CMD ...`; from
# another process, set NETNS_PREFIX (as printed by up/hold) to address a run:
#   up N                    N hosts (1..50), daemons started; prints "export NETNS_PREFIX=P"
#   hold N                  see use 1
#   down                    kill spawned programs and daemons, delete the namespaces and state
#   run H CMD...            CMD on host H: in its namespace, DBUS_SYSTEM_BUS_ADDRESS set to its
#                           bus (libavahi-client and avahi-utils use it), NETNS_HOST=H
#   spawn H PIDFILE LOG CMD...   the same in the background; PID to PIDFILE; killed by down
#   addr H | ns H | bus H   print host H's IPv4 address, namespace name, bus address
#   avahi-stop H | avahi-start H   stop, or (re)start, host H's avahi-daemon
#   gc                      remove runs whose owner process is gone (namespaces, processes)
# H is "h1".."hN" or just the number. As separate commands (`netns.sh up` then `netns.sh down`)
# the daemons are no process's children once `up` returns: this sandbox's PID 1 does not reap,
# so they linger as zombies after down (harmless; down checks /proc state, not kill -0). Prefer
# hold or sourcing. A run whose owner died without down is removed by the next up/hold (gc).
#
# Needs (Debian 12): iproute2 dbus avahi-daemon util-linux (unshare); bash 4.3+.

NETNS_ROOT=${NETNS_ROOT:-/tmp/barrel-netns}
NETNS_SUBNET=${NETNS_SUBNET:-10.99.0}

_netns_err() {
    echo "netns: $*" >&2
}

# Host name from "h3" or "3".
_netns_h() {
    local h=${1#h}
    [[ $h =~ ^[0-9]+$ ]] || {
        _netns_err "bad host '$1'"
        return 1
    }
    echo "h$h"
}

# Load the run named by NETNS_PREFIX (for commands run as separate processes).
_netns_load() {
    [[ -n ${NETNS_PREFIX:-} ]] || {
        _netns_err "NETNS_PREFIX is not set (up and hold print it)"
        return 1
    }
    _NETNS_P=$NETNS_PREFIX
    _NETNS_STATE=$NETNS_ROOT/$_NETNS_P
    [[ -f $_NETNS_STATE/run ]] || {
        _netns_err "no run '$_NETNS_P' in $NETNS_ROOT"
        return 1
    }
    _NETNS_N=$(<"$_NETNS_STATE/run")
    NETNS_SUBNET=$(<"$_NETNS_STATE/subnet")
}

netns_ns() {
    local h
    h=$(_netns_h "$1") || return 1
    echo "${_NETNS_P}$h"
}

netns_bus() {
    local h
    h=$(_netns_h "$1") || return 1
    echo "unix:path=$_NETNS_STATE/$h/system_bus_socket"
}

netns_addr() {
    local h
    h=$(_netns_h "$1") || return 1
    echo "$NETNS_SUBNET.${h#h}"
}

# True when PID has exited (gone, or a zombie nobody reaps).
_netns_gone() {
    local st
    st=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 0
    [[ -z $st || $st == Z ]]
}

# Stop the process whose PID is in file $1: SIGTERM, up to $2 tenths of a second, SIGKILL;
# reap it if it is our child.
_netns_stop_pidfile() {
    local f=$1 tenths=${2:-30} pid i
    [[ -f $f ]] || return 0
    pid=$(<"$f")
    rm -f "$f"
    [[ $pid =~ ^[0-9]+$ ]] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < tenths; i++)); do
        _netns_gone "$pid" && break
        sleep 0.1
    done
    _netns_gone "$pid" || kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# Launch host $1's avahi-daemon without waiting. avahi keeps its pid file and socket in the
# fixed directory /run/avahi-daemon, so each one gets a private mount namespace with its own
# /run (tmpfs). ip, env, unshare (without --fork) and sh -c 'exec ...' all exec in place: $! is
# the daemon itself.
_netns_avahi_launch() {
    local h=$1 d=$_NETNS_STATE/$1
    : >"$d/avahi.log"
    # shellcheck disable=SC2016 # $1 is expanded by the inner sh
    ip netns exec "${_NETNS_P}$h" env DBUS_SYSTEM_BUS_ADDRESS="unix:path=$d/system_bus_socket" \
        unshare --mount --propagation private sh -c \
        'mount -t tmpfs tmpfs /run && exec avahi-daemon -f "$1" --no-drop-root --no-chroot --no-rlimits --no-proc-title' \
        sh "$d/avahi.conf" >"$d/avahi.log" 2>&1 </dev/null &
    echo $! >"$d/avahi.pid"
}

# Wait until host $1's avahi-daemon is up ("Server startup complete", ~1 s).
_netns_avahi_wait() {
    local h=$1 d=$_NETNS_STATE/$1 i
    for ((i = 0; i < 100; i++)); do
        grep -q 'Server startup complete' "$d/avahi.log" 2>/dev/null && return 0
        _netns_gone "$(<"$d/avahi.pid")" && break
        sleep 0.1
    done
    _netns_err "avahi-daemon on $h did not start: $(cat "$d/avahi.log")"
    return 1
}

# Start host $1's avahi-daemon (if not running) and wait until it is up.
netns_avahi_start() {
    local h d
    h=$(_netns_h "$1") || return 1
    d=$_NETNS_STATE/$h
    if [[ -f $d/avahi.pid ]] && ! _netns_gone "$(<"$d/avahi.pid")"; then
        return 0
    fi
    _netns_avahi_launch "$h"
    _netns_avahi_wait "$h"
}

netns_avahi_stop() {
    local h
    h=$(_netns_h "$1") || return 1
    _netns_stop_pidfile "$_NETNS_STATE/$h/avahi.pid"
}

_netns_write_confs() {
    local h=$1 d=$2 v6=no
    [[ ${NETNS_IPV6:-0} == 1 ]] && v6=yes
    cat >"$d/dbus.conf" <<EOF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=$d/system_bus_socket</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
EOF
    # host-name: otherwise every host is named after the shared UTS name and they conflict.
    cat >"$d/avahi.conf" <<EOF
[server]
host-name=barrel-${_NETNS_P%-}-$h
domain-name=local
use-ipv4=yes
use-ipv6=$v6
allow-interfaces=eth0
enable-dbus=yes
ratelimit-interval-usec=1000000
ratelimit-burst=1000
[wide-area]
enable-wide-area=no
[publish]
publish-hinfo=no
publish-workstation=no
publish-aaaa-on-ipv4=no
publish-a-on-ipv6=no
[reflector]
[rlimits]
EOF
}

# Remove runs under NETNS_ROOT whose owner process is gone.
netns_gc() {
    local dir owner p ns pid
    for dir in "$NETNS_ROOT"/*/; do
        [[ -f $dir/owner && -f $dir/run ]] || continue
        owner=$(<"$dir/owner")
        _netns_gone "$owner" || continue
        p=$(basename "$dir")
        [[ $p == "${_NETNS_P:-}" ]] && continue
        _netns_err "gc: removing run $p (owner $owner is gone)"
        for ns in $(ip netns list 2>/dev/null | awk '{print $1}'); do
            [[ $ns == "${p}sw" || $ns =~ ^${p}h[0-9]+$ ]] || continue
            for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
            ip netns del "$ns" 2>/dev/null
        done
        rm -rf "$dir"
    done
}

# Set up N hosts. Status 77: namespaces cannot be created here.
netns_up() {
    local n=${1:-3} i h d
    if ! [[ $n =~ ^[0-9]+$ ]] || ((n < 1 || n > 50)); then
        _netns_err "up: N must be 1..50"
        return 1
    fi
    if ((EUID != 0)); then
        _netns_err "cannot create network namespaces: not root"
        return 77
    fi
    for i in ip dbus-daemon avahi-daemon unshare; do
        command -v "$i" >/dev/null || {
            _netns_err "missing program '$i' (scripts/deps.sh installs it)"
            return 1
        }
    done
    _NETNS_P=${NETNS_PREFIX:-bn$$-}
    if [[ -z ${NETNS_PREFIX:-} ]]; then
        while [[ -e $NETNS_ROOT/$_NETNS_P || -e /run/netns/${_NETNS_P}sw ]]; do
            _NETNS_P=bn$$r$RANDOM-
        done
    fi
    _NETNS_STATE=$NETNS_ROOT/$_NETNS_P
    _NETNS_N=$n
    _NETNS_DOWN_DONE=0
    mkdir -p "$NETNS_ROOT"
    netns_gc
    mkdir -p "$_NETNS_STATE" || return 1
    echo "${_NETNS_OWNER:-$$}" >"$_NETNS_STATE/owner"
    echo "$n" >"$_NETNS_STATE/run"
    echo "$NETNS_SUBNET" >"$_NETNS_STATE/subnet"
    if [[ ${_NETNS_NO_TRAP:-0} != 1 ]]; then
        trap netns_down EXIT
        trap 'exit 130' INT
        trap 'exit 143' TERM
    fi
    local out
    if ! out=$(ip netns add "${_NETNS_P}sw" 2>&1); then
        _netns_err "cannot create network namespaces: ip netns add: $out"
        rm -rf "$_NETNS_STATE"
        return 77
    fi
    {
        ip -n "${_NETNS_P}sw" link set lo up &&
            ip -n "${_NETNS_P}sw" link add br0 type bridge &&
            ip -n "${_NETNS_P}sw" link set br0 up
    } || {
        netns_down
        return 1
    }
    for ((i = 1; i <= n; i++)); do
        h=h$i
        d=$_NETNS_STATE/$h
        mkdir -p "$d"
        _netns_write_confs "$h" "$d"
        # shellcheck disable=SC2016 # $f is expanded by the inner sh
        {
            ip netns add "${_NETNS_P}$h" &&
                ip netns exec "${_NETNS_P}$h" sh -c \
                    'for f in /proc/sys/net/ipv6/conf/all/accept_dad /proc/sys/net/ipv6/conf/default/accept_dad; do [ -w "$f" ] && echo 0 >"$f"; done; true' &&
                ip -n "${_NETNS_P}sw" link add "v$h" type veth peer name eth0 netns "${_NETNS_P}$h" &&
                ip -n "${_NETNS_P}sw" link set "v$h" master br0 up &&
                ip -n "${_NETNS_P}$h" link set lo up &&
                ip -n "${_NETNS_P}$h" addr add "$NETNS_SUBNET.$i/24" dev eth0 &&
                if [[ ${NETNS_IPV6:-0} == 1 ]]; then
                    ip -n "${_NETNS_P}$h" -6 addr add "fd99::$i/64" dev eth0 nodad
                fi &&
                ip -n "${_NETNS_P}$h" link set eth0 up
        } || {
            _netns_err "up: network setup of $h failed"
            netns_down
            return 1
        }
        ip netns exec "${_NETNS_P}$h" dbus-daemon --config-file="$d/dbus.conf" --nofork \
            --nopidfile >"$d/dbus.log" 2>&1 </dev/null &
        echo $! >"$d/dbus.pid"
    done
    for ((i = 1; i <= n; i++)); do
        d=$_NETNS_STATE/h$i
        local k
        for ((k = 0; k < 50; k++)); do
            [[ -S $d/system_bus_socket ]] && break
            sleep 0.1
        done
        [[ -S $d/system_bus_socket ]] || {
            _netns_err "dbus-daemon on h$i did not start: $(cat "$d/dbus.log")"
            netns_down
            return 1
        }
    done
    for ((i = 1; i <= n; i++)); do
        _netns_avahi_launch "h$i"
    done
    for ((i = 1; i <= n; i++)); do
        _netns_avahi_wait "h$i" || {
            netns_down
            return 1
        }
    done
}

# Stop everything of this run and delete its namespaces and state. Idempotent.
netns_down() {
    local f ns pid
    [[ -n ${_NETNS_P:-} && ${_NETNS_DOWN_DONE:-0} != 1 ]] || return 0
    _NETNS_DOWN_DONE=1
    if [[ -f $_NETNS_STATE/spawned ]]; then
        while IFS= read -r f; do _netns_stop_pidfile "$f" 20; done <"$_NETNS_STATE/spawned"
    fi
    for f in "$_NETNS_STATE"/h*/avahi.pid; do [[ -f $f ]] && _netns_stop_pidfile "$f" 20; done
    for f in "$_NETNS_STATE"/h*/dbus.pid; do [[ -f $f ]] && _netns_stop_pidfile "$f" 20; done
    # Whatever still runs inside our namespaces (started by hand, or orphaned): kill it.
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}'); do
        [[ $ns == "${_NETNS_P}sw" || $ns =~ ^${_NETNS_P}h[0-9]+$ ]] || continue
        for pid in $(ip netns pids "$ns" 2>/dev/null); do
            kill -KILL "$pid" 2>/dev/null
            wait "$pid" 2>/dev/null
        done
        ip netns del "$ns" 2>/dev/null || _netns_err "down: cannot delete namespace $ns"
    done
    rm -rf "$_NETNS_STATE"
}

netns_run() {
    local h ns
    h=$(_netns_h "$1") || return 1
    ns=$(netns_ns "$h") || return 1
    shift
    ip netns exec "$ns" env DBUS_SYSTEM_BUS_ADDRESS="$(netns_bus "$h")" NETNS_HOST="$h" "$@"
}

netns_spawn() {
    local h=$1 pidf=$2 log=$3 ns
    h=$(_netns_h "$h") || return 1
    ns=$(netns_ns "$h") || return 1
    shift 3
    ip netns exec "$ns" env DBUS_SYSTEM_BUS_ADDRESS="$(netns_bus "$h")" NETNS_HOST="$h" "$@" \
        >"$log" 2>&1 </dev/null &
    echo $! >"$pidf"
    echo "$pidf" >>"$_NETNS_STATE/spawned"
}

# Use 1: set up, answer commands on stdin until EOF or a signal, tear down.
_netns_hold() {
    local line rc cmd arg
    _NETNS_OWNER=$$ _NETNS_NO_TRAP=1 netns_up "$1"
    rc=$?
    if ((rc != 0)); then
        exit "$rc"
    fi
    trap 'netns_down; exit 0' INT TERM HUP
    trap netns_down EXIT
    echo "netns: ready prefix=$_NETNS_P state=$_NETNS_STATE hosts=$_NETNS_N subnet=$NETNS_SUBNET"
    while IFS= read -r line; do
        read -r cmd arg _ <<<"$line"
        case $cmd in
        avahi-stop | avahi-start)
            if "netns_${cmd/-/_}" "$arg"; then
                echo "netns: ok $line"
            else
                echo "netns: error $line: failed"
            fi
            ;;
        down) break ;;
        "") ;;
        *) echo "netns: error $line: unknown command" ;;
        esac
    done
    netns_down
    exit 0
}

# Sourced: define the functions and stop here.
if [[ ${BASH_SOURCE[0]} != "$0" ]]; then
    return 0
fi

set -u
case ${1:-} in
hold)
    _netns_hold "${2:-3}"
    ;;
up)
    _NETNS_OWNER=$PPID _NETNS_NO_TRAP=1 netns_up "${2:-3}" || exit $?
    echo "export NETNS_PREFIX=$_NETNS_P"
    ;;
down)
    _netns_load && netns_down
    ;;
run)
    [[ $# -ge 3 ]] || exit 2
    _netns_load || exit 1
    h=$(_netns_h "$2") || exit 1
    shift 2
    exec ip netns exec "${_NETNS_P}$h" env DBUS_SYSTEM_BUS_ADDRESS="$(netns_bus "$h")" \
        NETNS_HOST="$h" "$@"
    ;;
spawn)
    [[ $# -ge 5 ]] || exit 2
    _netns_load || exit 1
    shift
    netns_spawn "$@"
    ;;
addr | ns | bus)
    [[ $# -eq 2 ]] || exit 2
    _netns_load || exit 1
    "netns_$1" "$2"
    ;;
avahi-stop | avahi-start)
    [[ $# -eq 2 ]] || exit 2
    _netns_load || exit 1
    "netns_${1/-/_}" "$2"
    ;;
gc)
    netns_gc
    ;;
*)
    sed -n '2,/^# Needs/p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
