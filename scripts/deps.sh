#!/usr/bin/env bash
# deps.sh — install the Debian 12 packages that barrel needs to build, test and run.
#
# Idempotent: it asks dpkg which packages are missing and installs only those (apt-get update
# first, then a non-interactive install without recommends). With everything installed it
# changes nothing and needs no root. Not root and something missing: it prints the command to
# run and exits 1.
set -euo pipefail

packages=(
    build-essential cmake pkg-config git ca-certificates curl
    clang libclang-rt-14-dev # libFuzzer and sanitizer runtimes for clang builds
    librocksdb-dev libsodium-dev libcbor-dev libxxhash-dev libjansson-dev
    libwebsockets-dev libavahi-client-dev libssl-dev # libcrypto (store)
    libpcre2-dev # query regexes (store)
    libcurl4-openssl-dev # CouchDB-compatible HTTP endpoint (sync/ep_http.c)
    libzstd-dev # compression of large wire messages (sync/wire.c)
    libcriterion-dev
    avahi-daemon avahi-utils dbus iproute2 # mDNS tests in network namespaces
    gnuplot-nox # the simulator's plots (simulations/plots.sh)
)

missing=()
for p in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    if [[ $status != installed ]]; then
        missing+=("$p")
    fi
done

if ((${#missing[@]} == 0)); then
    echo "deps: all ${#packages[@]} packages are installed"
    exit 0
fi

install_cmd="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${missing[*]}"
if ((EUID != 0)); then
    echo "deps: missing packages: ${missing[*]}" >&2
    echo "deps: run as root:" >&2
    echo "    $install_cmd" >&2
    exit 1
fi

# Installing avahi-daemon and dbus would start them where no init system can (containers,
# sandboxes) and fail the install, or start avahi on the host's real interfaces. Where no
# systemd runs and no policy is in place, deny service starts for the time of the install.
policy=/usr/sbin/policy-rc.d
made_policy=0
if [[ ! -e $policy && ! -d /run/systemd/system ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    made_policy=1
fi
cleanup() {
    if ((made_policy)); then
        rm -f "$policy"
    fi
}
trap cleanup EXIT

echo "deps: installing ${missing[*]}"
apt-get -q -o DPkg::Lock::Timeout=300 update
DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=300 install -y \
    --no-install-recommends "${missing[@]}"

# Check that apt really delivered every package (a typo or a held package would not fail it).
still=()
for p in "${missing[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    if [[ $status != installed ]]; then
        still+=("$p")
    fi
done
if ((${#still[@]} > 0)); then
    echo "deps: still missing after install: ${still[*]}" >&2
    exit 1
fi
echo "deps: installed ${#missing[@]} package(s)"
