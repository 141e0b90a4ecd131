#!/bin/sh
# npm-pinned.sh — install the npm packages pinned by SRC/package.json and SRC/package-lock.json
# into DEST (npm ci from the registry), when DEST lacks CHECK (a path under DEST) or the
# lockfile changed since the last install. One installer at a time per DEST (flock): tests
# running in parallel, and both builds of scripts/test.sh, share folders.
# Exit 0: installed. Exit 77 with "SKIP: reason": node, npm or the registry is unavailable
# (callers that are tests then skip). Exit 1 with "FAIL: reason": the install failed although
# the registry answers.
# usage: npm-pinned.sh SRC DEST CHECK
set -u
src=${1:?usage: npm-pinned.sh SRC DEST CHECK}
dest=${2:?usage: npm-pinned.sh SRC DEST CHECK}
check=${3:?usage: npm-pinned.sh SRC DEST CHECK}

skip() {
    echo "SKIP: $*"
    exit 77
}

command -v node >/dev/null 2>&1 || skip "node is not installed"
command -v npm >/dev/null 2>&1 || skip "npm is not installed"
stamp="$dest/.lock-stamp"
mkdir -p "$(dirname "$dest")"
exec 9>"$dest.lock"
flock 9
if ! cmp -s "$src/package-lock.json" "$stamp" || [ ! -e "$dest/$check" ]; then
    echo "installing the pinned packages of $src into $dest"
    mkdir -p "$dest"
    cp "$src/package.json" "$src/package-lock.json" "$dest/"
    if ! (cd "$dest" && npm ci --no-audit --no-fund --loglevel=error); then
        if ! npm ping >/dev/null 2>&1; then
            skip "the npm registry cannot be reached (npm ci failed, npm ping failed)"
        fi
        echo "FAIL: npm ci failed although the registry answers"
        exit 1
    fi
    cp "$src/package-lock.json" "$stamp"
fi
[ -e "$dest/$check" ] || { echo "FAIL: no $check in $dest after npm ci"; exit 1; }
exit 0
