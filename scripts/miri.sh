#!/usr/bin/env bash
# Runs a focused set of tests under Miri (nightly), on the scalar SIMD tier: Miri cannot run
# the AVX2 intrinsics, and thread pools and big buffers are too slow under it. The set covers
# the unsafe code that Miri can check: the C ABI (pointer checks, slices from C memory, the
# versioned struct reads, the handle's atomic guard and the range API from two threads),
# checkpoint parsing, and the engine on the scalar kernels.
#
#   scripts/miri.sh            run the set
#   scripts/miri.sh --list     print it
#
# Needs `rustup +nightly component add miri`. Takes a few minutes (mostly building std and the
# dependencies for Miri once).
set -euo pipefail
cd "$(dirname "$0")/.."

# (test file, test name) pairs, each run with --exact.
TESTS=(
    "hostile c_handle_shared_between_threads"
    "hostile wrong_call_order"
    "hostile hostile_schedule_metric"
    "hostile non_finite_supplied_sum_is_reported_as_another_shard"
    "hostile hostile_calls_change_nothing"
    "fuzz_corpus seeds_pass"
)

if [[ "${1:-}" == "--list" ]]; then
    printf '%s\n' "${TESTS[@]}"
    exit 0
fi

if ! cargo +nightly miri --version >/dev/null 2>&1; then
    echo "miri.sh: Miri is needed (rustup +nightly component add miri)" >&2
    exit 2
fi

export FLATOPT_SIMD=scalar
# Isolation off: the tests use temporary files and the clock.
export MIRIFLAGS="${MIRIFLAGS:--Zmiri-disable-isolation}"

cargo +nightly miri setup >/dev/null 2>&1 || cargo +nightly miri setup
failed=()
for entry in "${TESTS[@]}"; do
    read -r file name <<<"$entry"
    start=$(date +%s)
    if cargo +nightly miri test --quiet --test "$file" -- --exact "$name" >"target/miri-$file-$name.log" 2>&1; then
        echo "ok      $file::$name ($(($(date +%s) - start)) s)"
    else
        echo "FAILED  $file::$name ($(($(date +%s) - start)) s): see target/miri-$file-$name.log"
        failed+=("$file::$name")
    fi
done
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "miri.sh: ${#failed[@]} failed: ${failed[*]}" >&2
    exit 1
fi
echo "miri.sh: all ${#TESTS[@]} tests passed under Miri"
