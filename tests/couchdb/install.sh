#!/bin/sh
# install.sh — install the pinned pouchdb-server 4.2.0 (bench/pouchdb/package.json and its
# package-lock.json, shared with bench/pouch_bench.sh) into BUILD_DIR/npm/pouchdb-bench
# (BARREL_NPM_DIR, set by scripts/test.sh, replaces BUILD_DIR/npm so the release and sanitizer
# builds share one install). Exit 77 with a printed reason when node, npm or the npm registry is
# unavailable (the calling test then skips). See scripts/npm-pinned.sh.
# usage: install.sh BUILD_DIR
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:?usage: install.sh BUILD_DIR}
exec "$root/scripts/npm-pinned.sh" "$root/bench/pouchdb" "${BARREL_NPM_DIR:-$build/npm}/pouchdb-bench" \
    node_modules/.bin/pouchdb-server
