#!/usr/bin/env bash
# tests/c/run.sh: the C ABI tests of flatopt. Run from anywhere: `bash tests/c/run.sh`.
#
# Stages:
#   1. cargo build --release (target/release/libflatopt.so and libflatopt.a)
#   2. API list: the functions declared in include/flatopt.h, the functions exported by the
#      library and the list test_api exercises (k_api[]) must be the same set
#   3. golden JSON -> text (tests/c/golden_to_text.py, python3 stdlib)
#   4. compile test_api and test_golden (C99, -Wall -Wextra -pedantic -Werror) against the
#      shared library (with an rpath), and test_api once more against libflatopt.a
#   5. ABI compatibility: tests/c/compat/old_caller.c built against the frozen first versioned
#      header (tests/c/compat/v1/) and against the current one must print the same digest;
#      tests/c/compat/newer_caller.c (structs with extra trailing fields) must pass every row;
#      poisoning: tests/c/test_poison.c against a library built with the test-only feature
#      fault-injection (target/fault), which makes a step panic on demand
#   6. run them; the functions test_api really called must be every function of the header
#   7. valgrind (memcheck, full leak check): 0 errors, 0 definite / indirect leaks
#   8. AddressSanitizer + LeakSanitizer: the library built by nightly Rust with
#      -Zsanitizer=address, the programs with -fsanitize=address
#   Stages 7 and 8 first run tests/c/canary.c, which breaks the C contract on purpose (a heap
#   overflow inside flatopt_scale, a leaked optimizer): the checker must report both, with the
#   library's own frames, or its clean reports on the real tests would mean nothing.
# Build artefacts go to target/ctest/ (nothing is written in the source tree).
#
# Environment: CARGO (default cargo), CC (default gcc), SKIP_VALGRIND=1, SKIP_ASAN=1.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

CARGO="${CARGO:-cargo}"
CC="${CC:-gcc}"
out="$root/target/ctest"
logs="$out/logs"
mkdir -p "$out" "$logs" "$out/tmp"
# test_api writes its checkpoint files into a fresh directory under $TMPDIR (and removes it).
export TMPDIR="$out/tmp"

CFLAGS=(-std=c99 -Wall -Wextra -pedantic -Werror -O1 -g -I"$root/include")
golden_json="$root/tests/data/braintools-0.4.0-dev.json"
golden_txt="$out/golden.txt"

start_all=$SECONDS
stage_start=$SECONDS
stage_no=0
summary=()

stage() {
    stage_no=$((stage_no + 1))
    stage_start=$SECONDS
    printf '\n=== [%d] %s ===\n' "$stage_no" "$*"
}
done_stage() {
    local line="[$stage_no] $1 ($((SECONDS - stage_start)) s)"
    summary+=("$line")
    printf -- '--- %s\n' "$line"
}
die() {
    printf '\nrun.sh: FAILED in stage %d: %s\n' "$stage_no" "$*" >&2
    if ((${#summary[@]})); then
        printf 'stages passed before the failure:\n' >&2
        printf '  %s\n' "${summary[@]}" >&2
    fi
    exit 1
}
need() {
    command -v "$1" >/dev/null 2>&1 || die "$1 not found (needed for: $2)"
}

# The shared library's SONAME (libflatopt.so.0.<minor>) is what the programs ask the loader for;
# cargo writes only libflatopt.so, so give each build a directory with that name in it.
soname_dir() { # $1 = path of libflatopt.so, $2 = directory to create
    local so="$1" dir="$2" soname
    mkdir -p "$dir"
    soname="$(objdump -p "$so" 2>/dev/null | awk '$1 == "SONAME" { print $2 }')"
    ln -sfn "$so" "$dir/libflatopt.so"
    if [[ -n "$soname" ]]; then
        ln -sfn "$so" "$dir/$soname"
    fi
}

need "$CARGO" "building the library"
need "$CC" "compiling the tests"
need python3 "converting the golden JSON"
need objdump "reading the SONAME"
need nm "listing the exported functions"

# ---------------------------------------------------------------------------------------------
stage "cargo build --release"
if ! "$CARGO" build --release >"$logs/cargo_release.log" 2>&1; then
    tail -n 40 "$logs/cargo_release.log"
    die "cargo build --release failed (log: $logs/cargo_release.log)"
fi
tail -n 1 "$logs/cargo_release.log"
lib_dir="$root/target/release"
[[ -f "$lib_dir/libflatopt.so" && -f "$lib_dir/libflatopt.a" ]] ||
    die "target/release/libflatopt.so or libflatopt.a missing after the build"
soname_dir "$lib_dir/libflatopt.so" "$out/lib"
done_stage "library built"

# ---------------------------------------------------------------------------------------------
stage "compile (C99, -Werror): test_api, test_golden, canary (shared) and test_api_static (libflatopt.a)"
"$CC" "${CFLAGS[@]}" tests/c/test_api.c -o "$out/test_api" \
    -L"$out/lib" -lflatopt -Wl,-rpath,"$out/lib" -lm -pthread
"$CC" "${CFLAGS[@]}" tests/c/test_golden.c -o "$out/test_golden" \
    -L"$out/lib" -lflatopt -Wl,-rpath,"$out/lib" -lm -pthread
"$CC" "${CFLAGS[@]}" tests/c/test_f32.c -o "$out/test_f32" \
    -L"$out/lib" -lflatopt -Wl,-rpath,"$out/lib"
"$CC" "${CFLAGS[@]}" tests/c/canary.c -o "$out/canary" \
    -L"$out/lib" -lflatopt -Wl,-rpath,"$out/lib" -pthread
"$CC" "${CFLAGS[@]}" tests/c/test_api.c -o "$out/test_api_static" \
    "$lib_dir/libflatopt.a" -lpthread -ldl -lm
if objdump -p "$out/test_api_static" | grep -q 'NEEDED.*libflatopt'; then
    die "test_api_static depends on the shared library"
fi
# The header on its own, included twice: C99 pedantic and C++17 pedantic, warnings as errors.
"$CC" "${CFLAGS[@]}" tests/c/header_twice.c -o "$out/header_twice_c" \
    -L"$out/lib" -lflatopt -Wl,-rpath,"$out/lib"
"${CXX:-c++}" -x c++ -std=c++17 -Wall -Wextra -pedantic -Werror -I"$root/include" \
    tests/c/header_twice.c -o "$out/header_twice_cxx" -L"$out/lib" -lflatopt -Wl,-rpath,"$out/lib"
"$out/header_twice_c" && "$out/header_twice_cxx" || die "header_twice failed"
done_stage "6 programs compiled without warnings (test_api, test_golden, canary, test_api_static, header twice as C99 and C++17)"

# ---------------------------------------------------------------------------------------------
stage "API list: header declarations == library exports == test_api's list; only flatopt_ exported"
sed -nE 's/^[A-Za-z][^(]*[ *](flatopt_[a-z0-9_]+)\(.*/\1/p' include/flatopt.h | sort -u \
    >"$out/api_header.txt"
nm -D --defined-only "$lib_dir/libflatopt.so" | awk '$2 == "T" && $3 ~ /^flatopt_/ { print $3 }' |
    sort -u >"$out/api_exports.txt"
"$out/test_api" --list-api | sort -u >"$out/api_tested.txt"
n_header=$(wc -l <"$out/api_header.txt")
others="$(nm -D --defined-only "$lib_dir/libflatopt.so" | awk '$3 !~ /^flatopt_/ { print $3 }')"
[[ -z "$others" ]] || die "libflatopt.so exports symbols without the flatopt_ prefix: $others"
((n_header > 0)) || die "no function declarations found in include/flatopt.h"
if ! diff -u "$out/api_header.txt" "$out/api_exports.txt" >"$logs/api_exports.diff"; then
    cat "$logs/api_exports.diff"
    die "include/flatopt.h and the exports of libflatopt.so differ (- header, + library)"
fi
if ! diff -u "$out/api_header.txt" "$out/api_tested.txt" >"$logs/api_tested.diff"; then
    cat "$logs/api_tested.diff"
    die "test_api's k_api[] differs from include/flatopt.h (- header only: add a test; + test only)"
fi
echo "$n_header functions in the header, all exported, all listed in test_api"
done_stage "API list: $n_header functions"

# ---------------------------------------------------------------------------------------------
stage "ABI compatibility: an older caller (frozen v1 header) and a newer caller (bigger structs)"
# old_caller.c against the frozen header of the first versioned ABI and against the current
# one: both run against the current library and must print the same digest.
old_cflags=(-std=c99 -Wall -Wextra -pedantic -Werror -O1 -g -I"$here/compat/v1")
"$CC" "${old_cflags[@]}" tests/c/compat/old_caller.c \
    -o "$out/old_caller_v1" -L"$out/lib" -lflatopt -Wl,-rpath,"$out/lib" -lm
"$CC" "${CFLAGS[@]}" tests/c/compat/old_caller.c -o "$out/old_caller_now" \
    -L"$out/lib" -lflatopt -Wl,-rpath,"$out/lib" -lm
"$CC" "${CFLAGS[@]}" tests/c/compat/newer_caller.c -o "$out/newer_caller" \
    -L"$out/lib" -lflatopt -Wl,-rpath,"$out/lib" -lm
old_v1="$("$out/old_caller_v1")" || die "old_caller (v1 header) failed: $old_v1"
old_now="$("$out/old_caller_now")" || die "old_caller (current header) failed: $old_now"
echo "v1 header:      $old_v1"
echo "current header: $old_now"
[[ "${old_v1##*digest }" == "${old_now##*digest }" ]] ||
    die "an old caller's results differ from a current caller's"
"$out/newer_caller" | tee "$logs/newer_caller.log" || die "newer_caller failed"
compat_line="ABI: old caller (v1 header) = current caller; $(tail -n 1 "$logs/newer_caller.log")"
done_stage "$compat_line"

# ---------------------------------------------------------------------------------------------
stage "poisoning: a panic inside a call (library built with the test-only fault-injection feature)"
# A separate build (target/fault, the `unoptimized` profile: opt-level 0, what a Rust
# dependent's debug build compiles, in seconds instead of the minutes of opt-level 1): the
# feature exports a panic trigger that no shipped library has. test_poison checks
# FLATOPT_ERR_POISONED after the panic, row by row, and that flatopt_optimizer_free still
# releases the handle (valgrind: nothing lost).
if ! "$CARGO" build --profile unoptimized --features fault-injection --target-dir target/fault \
    >"$logs/cargo_fault.log" 2>&1; then
    tail -n 40 "$logs/cargo_fault.log"
    die "the fault-injection build failed (log: $logs/cargo_fault.log)"
fi
soname_dir "$root/target/fault/unoptimized/libflatopt.so" "$out/fault-lib"
"$CC" "${CFLAGS[@]}" tests/c/test_poison.c -o "$out/test_poison" \
    -L"$out/fault-lib" -lflatopt -Wl,-rpath,"$out/fault-lib"
# The injected panics print Rust's panic report on stderr: into the log.
"$out/test_poison" 2>"$logs/test_poison.err" | tee "$logs/test_poison.log" ||
    die "test_poison failed (log: $logs/test_poison.log, $logs/test_poison.err)"
if [[ "${SKIP_VALGRIND:-0}" != 1 ]] && command -v valgrind >/dev/null 2>&1; then
    valgrind --leak-check=full --error-exitcode=1 --errors-for-leak-kinds=definite,indirect \
        --log-file="$logs/valgrind_test_poison.log" "$out/test_poison" >/dev/null 2>&1 ||
        die "valgrind: errors or leaks in test_poison (log: $logs/valgrind_test_poison.log)"
fi
poison_line="$(tail -n 1 "$logs/test_poison.log")"
done_stage "$poison_line"

# ---------------------------------------------------------------------------------------------
stage "golden JSON -> text"
[[ -f "$golden_json" ]] || die "$golden_json not found"
python3 tests/c/golden_to_text.py "$golden_json" "$golden_txt"
done_stage "golden trajectories converted"

# ---------------------------------------------------------------------------------------------
stage "run test_api (shared), test_api_static, test_golden"
rm -f "$out/api_covered.txt"
"$out/test_api" --coverage "$out/api_covered.txt" 2>&1 | tee "$logs/test_api.log" ||
    die "test_api failed (log: $logs/test_api.log)"
sort -u "$out/api_covered.txt" -o "$out/api_covered.txt"
if ! diff -u "$out/api_header.txt" "$out/api_covered.txt" >"$logs/api_covered.diff"; then
    cat "$logs/api_covered.diff"
    die "test_api did not call every function of the header (- never called)"
fi
api_line="$(grep -E '^test_api: [0-9]+ checks passed' "$logs/test_api.log")"
"$out/test_api_static" >"$logs/test_api_static.log" 2>&1 ||
    { cat "$logs/test_api_static.log"; die "test_api_static failed"; }
static_line="$(grep -E '^test_api: [0-9]+ checks passed' "$logs/test_api_static.log")"
echo "static: $static_line"
"$out/test_golden" "$golden_txt" 2>&1 | tee "$logs/test_golden.log" ||
    die "test_golden failed (log: $logs/test_golden.log)"
golden_line="$(grep -E '^test_golden: [0-9]+ cases' "$logs/test_golden.log")"
"$out/test_f32" 2>&1 | tee "$logs/test_f32.log" || die "test_f32 failed (log: $logs/test_f32.log)"
done_stage "tests pass; every header function called"

# ---------------------------------------------------------------------------------------------
valgrind_line="valgrind: skipped (SKIP_VALGRIND=1)"
if [[ "${SKIP_VALGRIND:-0}" != 1 ]]; then
    stage "valgrind memcheck (leak-check=full; definite/indirect leaks are errors)"
    need valgrind "the memcheck stage (SKIP_VALGRIND=1 to skip)"
    vg=(valgrind --leak-check=full --error-exitcode=1 --errors-for-leak-kinds=definite,indirect
        --show-leak-kinds=definite,indirect)
    vg_run() { # $1 = name, rest = command; sets $report
        local name="$1" log="$logs/valgrind_$1.log" errors def ind pos reach
        shift
        if ! "${vg[@]}" --log-file="$log" "$@" >"$logs/valgrind_$name.out" 2>&1; then
            tail -n 20 "$logs/valgrind_$name.out"
            grep -vE '^==[0-9]+== *$' "$log" | tail -n 60
            die "valgrind found errors or leaks in $name (log: $log)"
        fi
        grep -qE 'ERROR SUMMARY: 0 errors' "$log" || die "valgrind: no clean ERROR SUMMARY for $name"
        errors="$(sed -nE 's/.*ERROR SUMMARY: ([0-9,]+) errors.*/\1/p' "$log" | tail -n 1)"
        def="$(sed -nE 's/.*definitely lost: ([0-9,]+) bytes.*/\1/p' "$log" | tail -n 1)"
        ind="$(sed -nE 's/.*indirectly lost: ([0-9,]+) bytes.*/\1/p' "$log" | tail -n 1)"
        pos="$(sed -nE 's/.*possibly lost: ([0-9,]+) bytes.*/\1/p' "$log" | tail -n 1)"
        reach="$(sed -nE 's/.*still reachable: ([0-9,]+) bytes.*/\1/p' "$log" | tail -n 1)"
        report="$name: ${errors:-?} errors, definitely lost ${def:-0} B, indirectly lost ${ind:-0} B"
        report+=" (possibly lost ${pos:-0} B, still reachable ${reach:-0} B: process-lifetime"
        report+=" statics of the runtime, e.g. crossbeam-epoch's global collector)"
        echo "$report"
    }
    # negative controls: memcheck must see the library's own bad accesses and leaks
    if "${vg[@]}" --log-file="$logs/valgrind_canary_overflow.log" "$out/canary" overflow \
        >/dev/null 2>&1; then
        die "valgrind did not flag the canary's heap overflow (log: $logs/valgrind_canary_overflow.log)"
    fi
    grep -qE 'Invalid (read|write)' "$logs/valgrind_canary_overflow.log" &&
        grep -qE 'kernels\.rs|flatopt' "$logs/valgrind_canary_overflow.log" ||
        die "valgrind: the canary overflow is not reported inside libflatopt"
    if "${vg[@]}" --log-file="$logs/valgrind_canary_leak.log" "$out/canary" leak >/dev/null 2>&1; then
        die "valgrind did not flag the canary's leaked optimizer"
    fi
    grep -qE 'definitely lost: [1-9]' "$logs/valgrind_canary_leak.log" ||
        die "valgrind: the canary leak is not reported as definitely lost"
    echo "canary: valgrind reports the overflow inside libflatopt and the leaked optimizer"
    vg_run test_api "$out/test_api"
    vg_api="$report"
    vg_run test_golden "$out/test_golden" "$golden_txt"
    vg_golden="$report"
    valgrind_line="valgrind: $vg_api; $vg_golden"
    done_stage "valgrind clean"
fi

# ---------------------------------------------------------------------------------------------
asan_line="ASan: skipped (SKIP_ASAN=1)"
if [[ "${SKIP_ASAN:-0}" != 1 ]]; then
    stage "AddressSanitizer + LeakSanitizer (nightly Rust -Zsanitizer=address)"
    rustup toolchain list 2>/dev/null | grep -q '^nightly' ||
        die "the nightly toolchain is not installed (rustup toolchain install nightly), or SKIP_ASAN=1"
    triple=x86_64-unknown-linux-gnu
    # The release profile's single codegen unit, LTO and optimization only decide how fast the
    # machine code is; ASan checks the memory accesses the code makes, and at opt-level 0 it
    # sees every one of them (none optimized away). Built so the instrumented library takes
    # seconds (opt-level 1: five minutes; the release profile: a quarter of an hour).
    if ! RUSTFLAGS="-Zsanitizer=address" CARGO_PROFILE_RELEASE_OPT_LEVEL=0 \
        CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 CARGO_PROFILE_RELEASE_LTO=off \
        "$CARGO" +nightly build --release --target "$triple" \
        --target-dir target/asan >"$logs/cargo_asan.log" 2>&1; then
        tail -n 40 "$logs/cargo_asan.log"
        die "the nightly ASan build failed (log: $logs/cargo_asan.log)"
    fi
    tail -n 1 "$logs/cargo_asan.log"
    asan_lib="$root/target/asan/$triple/release/libflatopt.so"
    [[ -f "$asan_lib" ]] || die "$asan_lib missing after the ASan build"
    soname_dir "$asan_lib" "$out/asan-lib"
    ASAN_CFLAGS=("${CFLAGS[@]}" -fsanitize=address -fno-omit-frame-pointer)
    "$CC" "${ASAN_CFLAGS[@]}" tests/c/test_api.c -o "$out/test_api_asan" \
        -L"$out/asan-lib" -lflatopt -Wl,-rpath,"$out/asan-lib" -lm -pthread
    "$CC" "${ASAN_CFLAGS[@]}" tests/c/test_golden.c -o "$out/test_golden_asan" \
        -L"$out/asan-lib" -lflatopt -Wl,-rpath,"$out/asan-lib" -lm -pthread
    "$CC" "${ASAN_CFLAGS[@]}" tests/c/canary.c -o "$out/canary_asan" \
        -L"$out/asan-lib" -lflatopt -Wl,-rpath,"$out/asan-lib" -pthread
    supp="$here/lsan.supp"
    lsan_opts="print_suppressions=1"
    if [[ -f "$supp" ]]; then
        lsan_opts="suppressions=$supp:$lsan_opts"
    fi
    asan_run() { # $1 = name, rest = command; sets $report
        local name="$1" log="$logs/asan_$1.log"
        shift
        if ! ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:halt_on_error=1:detect_stack_use_after_return=1:strict_string_checks=1:check_initialization_order=1" \
            LSAN_OPTIONS="$lsan_opts" "$@" >"$log" 2>&1; then
            tail -n 80 "$log"
            die "AddressSanitizer / LeakSanitizer reported a problem in $name (log: $log)"
        fi
        if grep -qE 'ERROR: (Address|Leak)Sanitizer' "$log"; then
            tail -n 80 "$log"
            die "sanitizer report in $name (log: $log)"
        fi
        local suppressed
        suppressed="$(grep -cE '^ *[0-9]+ +[0-9]+ +leak:' "$log" || true)"
        report="$name: 0 ASan errors, 0 leaks (${suppressed:-0} LSan suppressions used)"
        echo "$report"
    }
    # negative controls: ASan must see inside the (instrumented) Rust code, LSan its allocations
    if ASAN_OPTIONS="detect_leaks=1" "$out/canary_asan" overflow >"$logs/asan_canary_overflow.log" 2>&1; then
        die "ASan did not flag the canary's heap overflow"
    fi
    grep -q 'heap-buffer-overflow' "$logs/asan_canary_overflow.log" &&
        grep -qE 'kernels\.rs|7flatopt' "$logs/asan_canary_overflow.log" ||
        die "ASan: the canary overflow is not reported inside libflatopt (is the library instrumented?)"
    if ASAN_OPTIONS="detect_leaks=1" "$out/canary_asan" leak >"$logs/asan_canary_leak.log" 2>&1; then
        die "LeakSanitizer did not flag the canary's leaked optimizer"
    fi
    grep -q 'detected memory leaks' "$logs/asan_canary_leak.log" &&
        grep -q 'flatopt_optimizer_new' "$logs/asan_canary_leak.log" ||
        die "LeakSanitizer: the canary leak is not reported from flatopt_optimizer_new"
    echo "canary: ASan reports the overflow inside libflatopt, LSan the leaked optimizer"
    asan_run test_api "$out/test_api_asan"
    as_api="$report"
    grep -E '^test_api: [0-9]+ checks passed' "$logs/asan_test_api.log"
    asan_run test_golden "$out/test_golden_asan" "$golden_txt"
    as_golden="$report"
    grep -E '^test_golden: [0-9]+ cases' "$logs/asan_test_golden.log"
    asan_line="ASan: $as_api; $as_golden"
    done_stage "ASan/LSan clean"
fi

# ---------------------------------------------------------------------------------------------
printf '\n=== summary ===\n'
printf '  %s\n' "${summary[@]}"
printf '  %s\n' "$api_line" "static: $static_line" "$golden_line" "$compat_line" "$poison_line" \
    "$valgrind_line" "$asan_line"
printf 'run.sh: PASSED in %d s\n' "$((SECONDS - start_all))"
