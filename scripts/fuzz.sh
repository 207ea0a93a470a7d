#!/usr/bin/env bash
# Runs each cargo-fuzz target of fuzz/ for a fixed time and prints executions and crashes per
# target (`make fuzz`).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]   run each target SECONDS (default 60), all targets by
#                                          default; exits 1 if any target crashed
#   scripts/fuzz.sh --cmin [TARGET...]     merge what the runs found (fuzz/target/work-corpus)
#                                          into the committed corpus fuzz/corpus/<target> and
#                                          minimise it with `cargo fuzz cmin`
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). Builds with debug
# assertions (integer overflow checks) and AddressSanitizer. New inputs go to
# fuzz/target/work-corpus/<target> (not committed); the committed corpus is only read (except
# files named crash-*: known crashes, left out so that they are not counted again). Crashing
# inputs are written to fuzz/artifacts/<target>/; replay one with
# `cargo +nightly fuzz run -a <target> artifacts/<target>/<file>` (from fuzz/), and add it to
# fuzz/corpus/<target>/ as crash-<what> so that `cargo test --test fuzz_corpus` keeps checking
# it.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

ALL_TARGETS=(checkpoint_load config step checkpoint_values split_order)

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz.sh: the nightly toolchain is needed (rustup toolchain install nightly)" >&2
    exit 2
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: cargo-fuzz is needed (cargo install cargo-fuzz)" >&2
    exit 2
fi

if [[ "${1:-}" == "--cmin" ]]; then
    shift
    targets=("$@")
    [[ ${#targets[@]} -gt 0 ]] || targets=("${ALL_TARGETS[@]}")
    for t in "${targets[@]}"; do
        mkdir -p "corpus/$t"
        if [[ -d "target/work-corpus/$t" ]]; then
            cp -n target/work-corpus/"$t"/* "corpus/$t/" 2>/dev/null || true
        fi
        # Named files (seeds, inputs that once crashed a target) are kept as they are: set them
        # aside (cmin renames files to their hash and drops crashing ones), minimise the rest,
        # put them back, and drop hash-named copies of them.
        keep=$(mktemp -d)
        find "corpus/$t" -type f -regextype posix-extended ! -regex '.*/[0-9a-f]{40}' -exec mv {} "$keep/" \;
        cargo +nightly fuzz cmin -a "$t" "corpus/$t" -- -rss_limit_mb=2048 >"target/cmin-$t.log" 2>&1
        for f in "$keep"/*; do
            [[ -e "$f" ]] || continue
            rm -f "corpus/$t/$(sha1sum "$f" | cut -d' ' -f1)"
            mv "$f" "corpus/$t/"
        done
        rmdir "$keep"
        echo "$t: $(find "corpus/$t" -type f | wc -l) files, $(du -sb "corpus/$t" | cut -f1) bytes"
    done
    exit 0
fi

secs=60
if [[ "${1:-}" =~ ^[0-9]+$ ]]; then
    secs=$1
    shift
fi
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=("${ALL_TARGETS[@]}")

cargo +nightly fuzz build -a >/dev/null 2>&1 || cargo +nightly fuzz build -a
mkdir -p target/logs
failed=0
printf '%-16s %12s %10s %8s  %s\n' target executions exec/s crashes artifacts
for t in "${targets[@]}"; do
    mkdir -p "target/work-corpus/$t" "artifacts/$t" "corpus/$t"
    log="target/logs/$t.log"
    before=$(find "artifacts/$t" -type f | wc -l)
    # The committed corpus minus the inputs named crash-* (known crashes, kept so that
    # `cargo test --test fuzz_corpus` checks them; they would only be counted again here).
    seeds="target/seed-corpus/$t"
    rm -rf "$seeds"
    mkdir -p "$seeds"
    for f in corpus/"$t"/*; do
        [[ -f "$f" && "$(basename "$f")" != crash-* ]] && ln -s "$PWD/$f" "$seeds/"
    done
    # Fork mode keeps fuzzing after a crash (each one is saved as an artifact and counted).
    cargo +nightly fuzz run -a "$t" "target/work-corpus/$t" "$seeds" -- \
        -max_total_time="$secs" -fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1 \
        -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=1024 >"$log" 2>&1 || true
    last=$(grep -E '^#[0-9]+: cov:' "$log" | tail -1 || true)
    execs=$(sed -E 's/^#([0-9]+):.*/\1/' <<<"$last")
    rate=$(sed -E 's/.*exec\/s: ([0-9]+).*/\1/' <<<"$last")
    crashes=$(sed -E 's/.*oom\/timeout\/crash: ([0-9]+)\/([0-9]+)\/([0-9]+).*/\1+\2+\3/' <<<"$last")
    if [[ -z "$last" ]]; then
        echo "$t: no statistics in $log (did the build or the first run fail?)" >&2
        tail -20 "$log" >&2
        failed=1
        continue
    fi
    crashes=$((crashes))
    after=$(find "artifacts/$t" -type f | wc -l)
    printf '%-16s %12s %10s %8s  %s\n' "$t" "$execs" "$rate" "$crashes" \
        "$((after - before)) new in fuzz/artifacts/$t"
    [[ $crashes -eq 0 ]] || failed=1
done
exit $failed
