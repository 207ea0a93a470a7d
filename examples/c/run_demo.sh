#!/usr/bin/env bash
# Builds flatopt, compiles the C demo examples/c/train_mlp.c against include/flatopt.h and the
# shared library, and runs it on examples/data/digits.bin (`make demo` calls this).
# Linux. Works from any directory (it changes to the repository root). Overrides: CARGO, CC,
# CFLAGS, CARGO_TARGET_DIR. Exit status: the demo's (non-zero if its accuracy check fails).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."

CARGO=${CARGO:-cargo}
CC=${CC:-cc}
CFLAGS=${CFLAGS:--O2}
target=${CARGO_TARGET_DIR:-target}
lib="$target/release/libflatopt.so"
out="$target/demo"

"$CARGO" build --release

mkdir -p "$out"
# The executable records the library's SONAME (libflatopt.so.0.<minor>, see build.rs), but
# cargo writes only libflatopt.so: add the SONAME link next to it.
packaging/dev-soname-link.sh "$target/release"

# shellcheck disable=SC2086 # CFLAGS may hold several flags
"$CC" -std=c99 $CFLAGS -Wall -Wextra -pedantic -Werror -Iinclude \
    examples/c/train_mlp.c -o "$out/train_mlp" \
    -L"$target/release" -lflatopt -lm -Wl,-rpath,"$(cd "$target/release" && pwd)"

echo "+ $out/train_mlp examples/data/digits.bin"
TIMEFORMAT='demo wall time: %Rs'
time "$out/train_mlp" examples/data/digits.bin
