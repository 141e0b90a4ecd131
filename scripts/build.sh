#!/usr/bin/env bash
# build.sh — install what is missing, configure with CMake and build barrel.
#
#   scripts/build.sh [options] [-- extra cmake configure arguments]
#
#   -d, --build-dir DIR   build directory (default: build/ in the repository)
#   -t, --type TYPE       Debug | RelWithDebInfo | Release | MinSizeRel (default: RelWithDebInfo)
#   -s, --sanitize LIST   "address;undefined" | thread | none (default: none)
#       --fuzz            also build the libFuzzer harnesses: clang, everything instrumented
#                         for coverage (-fsanitize=fuzzer-no-link), and ASan+UBSan unless
#                         -s is given
#       --cc COMPILER     C compiler (default: cc, or clang with --fuzz)
#       --target NAME     build only this target (repeatable; default: all)
#       --no-deps         skip scripts/deps.sh
#   -h, --help
#
# Warnings are errors (-DBARREL_WERROR=ON) and the build uses every core (nproc).
# A directory configured earlier with another compiler is wiped and configured again.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=$root/build
build_type=RelWithDebInfo
sanitize=
sanitize_set=0
fuzz=OFF
cc=
deps=1
targets=()
extra=()

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

need_arg() {
    if (($# < 2)) || [[ -z $2 ]]; then
        echo "build.sh: $1 needs a value" >&2
        exit 2
    fi
}

while (($# > 0)); do
    case $1 in
    -d | --build-dir)
        need_arg "$@"
        build_dir=$2
        shift 2
        ;;
    -t | --type)
        need_arg "$@"
        build_type=$2
        shift 2
        ;;
    -s | --sanitize)
        need_arg "$@"
        sanitize=$2
        sanitize_set=1
        shift 2
        ;;
    --fuzz)
        fuzz=ON
        shift
        ;;
    --cc)
        need_arg "$@"
        cc=$2
        shift 2
        ;;
    --target)
        need_arg "$@"
        targets+=("$2")
        shift 2
        ;;
    --no-deps)
        deps=0
        shift
        ;;
    -h | --help)
        usage
        exit 0
        ;;
    --)
        shift
        extra=("$@")
        break
        ;;
    *)
        echo "build.sh: unknown option '$1' (see --help)" >&2
        exit 2
        ;;
    esac
done

case $build_type in
Debug | RelWithDebInfo | Release | MinSizeRel) ;;
*)
    echo "build.sh: unknown build type '$build_type'" >&2
    exit 2
    ;;
esac
case $sanitize in
none | off | OFF) sanitize= ;;
"" | address | undefined | "address;undefined" | "undefined;address" | thread) ;;
*)
    echo "build.sh: unknown sanitizer list '$sanitize' (address;undefined | thread | none)" >&2
    exit 2
    ;;
esac
if [[ -z $cc ]]; then
    if [[ $fuzz == ON ]]; then
        cc=clang
    else
        cc=${CC:-cc}
    fi
fi

# CMAKE_C_FLAGS is always passed so that a directory's flags follow this run's options (and
# $CFLAGS), not whatever an earlier run left in its cache.
cflags=${CFLAGS:-}
if [[ $fuzz == ON ]]; then
    # The harness alone gets -fsanitize=fuzzer (tests/CMakeLists.txt); the libraries need the
    # coverage instrumentation too, or libFuzzer cannot see the decoders' branches.
    cflags="${cflags:+$cflags }-fsanitize=fuzzer-no-link"
    if ((!sanitize_set)); then
        sanitize="address;undefined"
    fi
fi

if ((deps)); then
    "$root/scripts/deps.sh"
fi

cc_path=$(command -v "$cc" || true)
if [[ -z $cc_path ]]; then
    echo "build.sh: C compiler '$cc' not found" >&2
    exit 1
fi

# CMake cannot change the compiler of a configured directory; start that one afresh.
cache=$build_dir/CMakeCache.txt
if [[ -f $cache ]]; then
    old_cc=$(sed -n 's/^CMAKE_C_COMPILER:[A-Z]*=//p' "$cache")
    if [[ -n $old_cc && $(readlink -f "$old_cc") != $(readlink -f "$cc_path") ]]; then
        echo "build.sh: $build_dir was configured with $old_cc; reconfiguring with $cc_path"
        rm -rf "$build_dir/CMakeCache.txt" "$build_dir/CMakeFiles"
    fi
fi

jobs=$(nproc)
cmake -S "$root" -B "$build_dir" \
    -DCMAKE_C_COMPILER="$cc_path" \
    -DCMAKE_BUILD_TYPE="$build_type" \
    -DBARREL_SANITIZE="$sanitize" \
    -DBARREL_FUZZ="$fuzz" \
    -DBARREL_WERROR=ON \
    -DCMAKE_C_FLAGS="$cflags" \
    ${extra[@]+"${extra[@]}"}

target_args=()
if ((${#targets[@]} > 0)); then
    target_args=(--target "${targets[@]}") # one make run, so the targets build in parallel
fi
cmake --build "$build_dir" --parallel "$jobs" ${target_args[@]+"${target_args[@]}"}
desc=$build_type
if [[ -n $sanitize ]]; then
    desc+=", sanitize=$sanitize"
fi
if [[ $fuzz == ON ]]; then
    desc+=", fuzz harnesses"
fi
echo "build.sh: built ($desc) in $build_dir"
