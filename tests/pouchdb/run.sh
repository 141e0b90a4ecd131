#!/bin/sh
# run.sh — ctest entry pouchdb/sync: install the pinned PouchDB client (package.json and
# package-lock.json here) into BUILD_DIR/npm/pouchdb-test (scripts/npm-pinned.sh) when missing
# or when the lockfile changed, then run sync_test.js against BUILD_DIR/barrel. Exit 77 (ctest: skipped) with a
# printed reason when node, npm or the npm registry is unavailable.
# usage: run.sh BUILD_DIR
set -u
here=$(cd "$(dirname "$0")" && pwd)
build=${1:?usage: run.sh BUILD_DIR}
npmdir="${BARREL_NPM_DIR:-$build/npm}/pouchdb-test" # test.sh shares one across builds

skip() {
    echo "SKIP: $*"
    exit 77
}

command -v node >/dev/null 2>&1 || skip "node is not installed"
command -v npm >/dev/null 2>&1 || skip "npm is not installed"
major=$(node -e 'process.stdout.write(process.versions.node.split(".")[0])')
[ "$major" -ge 18 ] || skip "node $major is too old (PouchDB 9 needs >= 18)"

"$here/../../scripts/npm-pinned.sh" "$here" "$npmdir" node_modules/pouchdb-core || exit $?

NODE_PATH="$npmdir/node_modules" exec node "$here/sync_test.js" "$build/barrel"
