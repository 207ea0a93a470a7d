#!/usr/bin/env bash
# tests/rt/run.sh: the real-time tests of flatopt. Run from anywhere: `bash tests/rt/run.sh`.
#
# Stages:
#   1. cargo build --release; compile (C99, -Wall -Wextra -pedantic -Werror) the counting
#      LD_PRELOAD shim (malloc_shim.c), no_malloc.c and latency.c into target/rt/
#   2. no_malloc under the shim: after registration, 10,000 steps per configuration through
#      every step API make no malloc / calloc / realloc / free / posix_memalign /
#      aligned_alloc / memalign / valloc call, no pthread mutex / rwlock call and no syscall()
#      call; canaries prove the shim sees allocations by the program and inside libflatopt.so
#   3. the same under strace -f: not one system call between the window markers (a canary
#      window with one deliberate getppid() proves the check finds one). strace is installed
#      with apt-get if missing and possible; if it cannot be had or cannot trace here (no
#      ptrace permission), the stage is skipped with a message, and stage 2 still stands
#   4. latency --quick: 5,000 timed steps per layout (20,014 params in 6 buffers; 10 x 10,000),
#      sanity checks only, no timing assertion
#   RT_FULL=1 adds 5. the full benchmark: 100,000 steps per layout, plain and with --rt
#   (pinned, mlockall, SCHED_FIFO if allowed), as Markdown tables (the README's numbers).
#
# Environment: CARGO (default cargo), CC (default gcc), RT_FULL=1, SKIP_STRACE=1.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

CARGO="${CARGO:-cargo}"
CC="${CC:-gcc}"
out="$root/target/rt"
mkdir -p "$out"
start=$SECONDS

stage() { printf '\n=== %s ===\n' "$*"; }
die() {
    printf '\ntests/rt/run.sh: FAILED: %s\n' "$*" >&2
    exit 1
}

stage "[1] build"
"$CARGO" build --release --lib
bash packaging/dev-soname-link.sh target/release
lib_dir="$root/target/release"
CFLAGS=(-std=c99 -O2 -g -Wall -Wextra -pedantic -Werror -I"$root/include")
LINK=(-L"$lib_dir" -lflatopt -lm -Wl,-rpath,"$lib_dir")
# The shim needs GNU extensions (RTLD_NEXT, __libc_* entry points): gnu99.
"$CC" -std=gnu99 -O2 -g -Wall -Wextra -Werror -shared -fPIC -o "$out/libmalloc_shim.so" \
    "$here/malloc_shim.c" -ldl
"$CC" "${CFLAGS[@]}" "$here/no_malloc.c" -o "$out/no_malloc" "${LINK[@]}" -ldl
"$CC" "${CFLAGS[@]}" "$here/latency.c" -o "$out/latency" "${LINK[@]}"
shim="$out/libmalloc_shim.so"

stage "[2] no allocation, no lock call, no syscall() in steps (LD_PRELOAD counting shim)"
LD_PRELOAD="$shim" "$out/no_malloc" || die "allocation or lock during steps (stage 2)"

stage "[3] no system call in steps (strace)"
if [ "${SKIP_STRACE:-0}" = 1 ]; then
    echo "skipped (SKIP_STRACE=1)"
else
    if ! command -v strace >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "+ apt-get install strace"
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq strace) \
            >/dev/null 2>&1 || true
    fi
    if ! command -v strace >/dev/null 2>&1; then
        echo "skipped: strace is not installed and cannot be installed here (stage 2 stands)"
    elif ! strace -f -o /dev/null true >/dev/null 2>&1; then
        echo "skipped: strace cannot trace in this environment (no ptrace permission)"
    else
        log="$out/no_malloc.strace"
        LD_PRELOAD="$shim" strace -f -o "$log" "$out/no_malloc" >/dev/null ||
            die "no_malloc failed under strace"
        # Lines between each BEGIN and END marker are system calls made inside a window.
        awk -v tag=RT_WINDOW '
            index($0, "\"" tag "_BEGIN\"") { w = 1; n++; next }
            index($0, "\"" tag "_END\"")   { w = 0; next }
            w { bad++; print "  in window " n ": " $0 }
            END { printf "  %d windows, %d system calls inside them\n", n, bad + 0;
                  exit (n >= 4 && bad == 0) ? 0 : 1 }' "$log" ||
            die "system calls during steps (stage 3; full trace in $log)"
        canary=$(awk '
            index($0, "\"RT_CANARY_BEGIN\"") { w = 1; next }
            index($0, "\"RT_CANARY_END\"")   { w = 0; next }
            w { c++ } END { print c + 0 }' "$log")
        [ "$canary" -ge 1 ] || die "the strace canary window shows no system call: the check is blind"
        echo "  canary window: $canary system call(s) seen: ok"
        total=$(wc -l <"$log")
        echo "  (the whole trace has $total lines, every one outside the step windows)"
    fi
fi

stage "[4] latency benchmark, quick mode (sanity only)"
"$out/latency" --quick || die "latency --quick"

if [ "${RT_FULL:-0}" = 1 ]; then
    stage "[5] latency benchmark, full (100,000 steps per layout)"
    "$out/latency" --markdown
    "$out/latency" --rt --markdown
fi

printf '\ntests/rt/run.sh: passed (%d s)\n' "$((SECONDS - start))"
