#!/usr/bin/env bash
# test.sh — barrel's whole test suite, as CI runs it (.ci/run calls this).
#
# Stages, each reported in the summary:
#   headers   every public header (*/include/barrel/*.h) compiles alone (gcc -fsyntax-only)
#   default   build/       RelWithDebInfo build + ctest
#   asan      build-asan/  Debug build with -DBARREL_SANITIZE="address;undefined" + ctest
#   fuzz      build-fuzz/  only with BARREL_FUZZ=1: clang libFuzzer harnesses, each run over a
#             copy of its corpus for BARREL_FUZZ_SECONDS, or else an equal share of
#             BARREL_FUZZ_BUDGET (90 s in all, at least 5 s each). Off by default: its own
#             instrumented build and the runs took five of the suite's 15 minutes, and every
#             corpus is replayed by ctest in both builds anyway (fuzz/<name> entries).
#
# The last line is "N passed, N failed": N passed counts ctest tests that passed in the
# default and asan stages; N failed counts failed ctest tests plus every other failed step
# (a build, a header, a fuzz run), so it is 0 exactly when the script exits 0.
#
# Leaks fail the run. Criterion runs each test in a forked worker and has already recorded the
# test as passed when LeakSanitizer reports at the worker's exit, so LSan's exit code alone is
# ignored (deps-notes section 6). With abort_on_error=1 the leak report ends in abort(): the
# worker dies of SIGABRT, Criterion prints "Warning! The test `suite::name` crashed during its
# setup or teardown" below the LeakSanitizer report, and the binary exits 1, which fails its
# ctest entry. Verified with a deliberately leaking test (exit 0 without the option, 1 with it).
#
# Environment: BARREL_FUZZ=1, BARREL_FUZZ_SECONDS=N, BARREL_FUZZ_BUDGET=N, BARREL_NPM_DIR=DIR,
# BARREL_CTEST_JOBS=N (default 2).
set -euo pipefail
exec </dev/null # nothing here reads stdin; CI has none

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

ctest_jobs=${BARREL_CTEST_JOBS:-2}
fuzz_seconds=${BARREL_FUZZ_SECONDS:-}
fuzz_budget=${BARREL_FUZZ_BUDGET:-90}
skip_fuzz=1
[[ ${BARREL_FUZZ:-0} == 1 ]] && skip_fuzz=0
[[ ${BARREL_SKIP_FUZZ:-0} == 1 ]] && skip_fuzz=1

passed=0
failed=0
report=()
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

stage() {
    printf '\n==== %s\n' "$*"
}

# Sanitizer settings for the asan and fuzz stages; values the caller set come last and win.
asan_defaults=abort_on_error=1:halt_on_error=1:detect_leaks=1:strict_string_checks=1
ubsan_defaults=abort_on_error=1:halt_on_error=1:print_stacktrace=1
export ASAN_OPTIONS="$asan_defaults${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="$ubsan_defaults${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"

"$root/scripts/deps.sh"
# The npm packages the PouchDB and pouchdb-server tests install (pinned by their lockfiles) go
# to one folder that both builds share: installing them twice cost minutes.
export BARREL_NPM_DIR=${BARREL_NPM_DIR:-$root/build-npm}

# ---- headers: each public header compiles on its own (STYLE.md, "Headers") ----
check_headers() {
    local t0=$SECONDS n=0 bad=0 h
    local inc=()
    for d in "$root"/*/include; do
        inc+=(-I "$d")
    done
    local pc
    read -r -a pc <<<"$(pkg-config --cflags rocksdb libsodium libcbor libxxhash jansson \
        libwebsockets avahi-client)"
    shopt -s nullglob
    for h in "$root"/*/include/barrel/*.h; do
        n=$((n + 1))
        # Included twice: the include guard must work as well.
        if ! printf '#include "%s"\n#include "%s"\n' "$h" "$h" |
            gcc -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -Wall -Wextra -Wpedantic \
                -Wstrict-prototypes -Werror -fsyntax-only "${inc[@]}" ${pc[@]+"${pc[@]}"} \
                -x c - 2>"$logs/header.err"; then
            echo "header ${h#"$root"/} does not compile on its own:"
            cat "$logs/header.err"
            bad=$((bad + 1))
        fi
    done
    shopt -u nullglob
    failed=$((failed + bad))
    report+=("headers: $((n - bad))/$n self-contained ($((SECONDS - t0)) s)")
    echo "headers: $((n - bad)) of $n compile on their own"
}

# ---- build + ctest in one directory ----
# run_stage NAME DIR BUILD_ARGS...
run_stage() {
    local name=$1 dir=$2
    shift 2
    local t0=$SECONDS
    stage "$name: build in ${dir#"$root"/}"
    if ! "$root/scripts/build.sh" --no-deps -d "$dir" "$@"; then
        failed=$((failed + 1))
        report+=("$name: BUILD FAILED ($((SECONDS - t0)) s)")
        return
    fi
    local tb=$((SECONDS - t0))
    stage "$name: ctest in ${dir#"$root"/}"
    local log=$logs/ctest-$name.log rc=0
    ctest --test-dir "$dir" --parallel "$ctest_jobs" --output-on-failure --no-tests=error \
        --timeout 900 2>&1 | tee "$log" || rc=$?
    local line p=0 f=0 total=0
    line=$(grep -Eo '[0-9]+ tests? failed out of [0-9]+' "$log" | tail -n 1 || true)
    if [[ -n $line ]]; then
        f=$(awk '{print $1}' <<<"$line")
        total=$(awk '{print $NF}' <<<"$line")
        p=$((total - f))
    fi
    if ((rc != 0 && f == 0)); then
        f=1 # ctest failed without a count (no tests found, or it could not run)
    fi
    passed=$((passed + p))
    failed=$((failed + f))
    report+=("$name: $p passed, $f failed (build $tb s, ctest $((SECONDS - t0 - tb)) s)")
}

# ---- fuzz: short bounded runs of every libFuzzer harness ----
run_fuzz() {
    local t0=$SECONDS dir=$root/build-fuzz
    stage "fuzz"
    if [[ $skip_fuzz == 1 ]]; then
        report+=("fuzz: not run (BARREL_FUZZ=1 runs it)")
        echo "not run (BARREL_FUZZ=1 runs it)"
        return
    fi
    local names=() src
    shopt -s nullglob
    for src in "$root"/tests/fuzz/fuzz_*.c; do
        names+=("$(basename "$src" .c)")
    done
    shopt -u nullglob
    if ((${#names[@]} == 0)); then
        report+=("fuzz: no harnesses in tests/fuzz")
        echo "no harnesses in tests/fuzz"
        return
    fi
    if [[ -z $fuzz_seconds ]]; then
        fuzz_seconds=$((fuzz_budget / ${#names[@]}))
        ((fuzz_seconds >= 5)) || fuzz_seconds=5
    fi
    local targets=() n
    for n in "${names[@]}"; do
        targets+=(--target "$n")
    done
    # --fuzz instruments the libraries as well (coverage + ASan/UBSan); only the harnesses
    # are built here.
    if ! "$root/scripts/build.sh" --no-deps -d "$dir" -t RelWithDebInfo --fuzz "${targets[@]}"; then
        failed=$((failed + 1))
        report+=("fuzz: BUILD FAILED ($((SECONDS - t0)) s)")
        return
    fi
    local ok=0 bad=0 short corpus work bin
    mkdir -p "$dir/artifacts"
    for n in "${names[@]}"; do
        short=${n#fuzz_}
        corpus=$root/tests/fuzz/corpus/$short
        bin=$(find "$dir" -type f -name "$n" -perm -u+x | head -n 1)
        if [[ -z $bin ]]; then
            echo "fuzz: $n was not built"
            bad=$((bad + 1))
            continue
        fi
        work=$(mktemp -d "$logs/corpus-$short-XXXX")
        if [[ -d $corpus ]]; then
            cp -a "$corpus/." "$work/"
        fi
        echo "fuzz: $n for ${fuzz_seconds} s over $(find "$work" -type f | wc -l) corpus file(s)"
        if "$bin" -max_total_time="$fuzz_seconds" -timeout=10 -rss_limit_mb=2048 \
            -artifact_prefix="$dir/artifacts/$short-" "$work" >"$logs/fuzz-$short.log" 2>&1; then
            ok=$((ok + 1))
            grep -E '^(#[0-9]+.*DONE|Done [0-9]+ runs)' "$logs/fuzz-$short.log" | tail -n 1 || true
        else
            bad=$((bad + 1))
            echo "fuzz: $n FAILED; the end of its log:"
            tail -n 60 "$logs/fuzz-$short.log"
            echo "fuzz: crashing inputs are in ${dir#"$root"/}/artifacts/; add them to" \
                "tests/fuzz/corpus/$short/ once fixed"
        fi
    done
    failed=$((failed + bad))
    report+=("fuzz: $ok of $((ok + bad)) harnesses clean, ${fuzz_seconds} s each ($((SECONDS - t0)) s)")
}

start=$SECONDS
stage "headers"
check_headers
run_stage default "$root/build" -t RelWithDebInfo
run_stage asan "$root/build-asan" -t Debug -s "address;undefined"
run_fuzz

stage "summary ($((SECONDS - start)) s)"
printf '%s\n' "${report[@]}"
echo "$passed passed, $failed failed"
if ((failed > 0)); then
    exit 1
fi
