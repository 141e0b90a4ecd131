#!/usr/bin/env bash
# run.sh — install what is missing, build, and run barrel with the given arguments.
#
#   scripts/run.sh                      # no arguments: barrel serve (http://127.0.0.1:7070)
#   scripts/run.sh help
#   scripts/run.sh db create mydb
#   scripts/run.sh put mydb doc1 '{"a": 1}'
#
# Every run gets `--data ./barrel-data` (relative to the directory you run this from) unless
# the arguments hold their own --data/-d; set BARREL_DATA_DIR to change that default. The
# build goes to build/ in the repository (RelWithDebInfo; BARREL_BUILD_DIR moves it); pass
# other build options with BARREL_BUILD_ARGS, e.g. BARREL_BUILD_ARGS="-t Debug". Build
# output goes to stderr, so stdout carries only barrel's output.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${BARREL_BUILD_DIR:-$root/build}
data_dir=${BARREL_DATA_DIR:-./barrel-data}

read -r -a build_args <<<"${BARREL_BUILD_ARGS:-}"
"$root/scripts/build.sh" -d "$build_dir" ${build_args[@]+"${build_args[@]}"} >&2

# node/ is expected to put the program at build/barrel; build/node/barrel is accepted too.
bin=
for candidate in "$build_dir/barrel" "$build_dir/node/barrel"; do
    if [[ -f $candidate && -x $candidate ]]; then
        bin=$candidate
        break
    fi
done
if [[ -z $bin ]]; then
    echo "run.sh: the build succeeded but produced no barrel program ($build_dir/barrel)." >&2
    echo "run.sh: it is built from node/; check that node/CMakeLists.txt defines it." >&2
    exit 1
fi

if (($# == 0)); then
    set -- serve
fi
args=("$@")
has_data=0
for a in "$@"; do
    case $a in
    --data | -d) has_data=1 ;;
    esac
done
if ((!has_data)); then
    args=(--data "$data_dir" "$@")
fi

exec "$bin" "${args[@]}"
