#!/usr/bin/env bash
# Builds flatopt and the online-learning control-loop example examples/c/online_control.c (C99,
# -Wall -Wextra -pedantic -Werror, against include/flatopt.h and the shared library) and runs
# it: a cart-pole at 500 Hz, paced in real time for 6 s, learning its dynamics online.
# Arguments go to the program (--fast: unpaced, --seconds S, --hz F, --rt, --seed N).
# Linux. Works from any directory. Overrides: CARGO, CC, CFLAGS, CARGO_TARGET_DIR.
# Exit status: the example's (non-zero if the model did not improve or a step failed).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."

CARGO=${CARGO:-cargo}
CC=${CC:-cc}
CFLAGS=${CFLAGS:--O2}
target=${CARGO_TARGET_DIR:-target}
out="$target/demo"

"$CARGO" build --release --lib
mkdir -p "$out"
# The executable records the library's SONAME (libflatopt.so.0.<minor>): add that link.
packaging/dev-soname-link.sh "$target/release"

# shellcheck disable=SC2086 # CFLAGS may hold several flags
"$CC" -std=c99 $CFLAGS -Wall -Wextra -pedantic -Werror -Iinclude \
    examples/c/online_control.c -o "$out/online_control" \
    -L"$target/release" -lflatopt -lm -Wl,-rpath,"$(cd "$target/release" && pwd)"

echo "+ $out/online_control $*"
"$out/online_control" "$@"
