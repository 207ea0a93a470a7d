#!/usr/bin/env bash
# Installs flatopt into a temporary prefix with `make install`, then builds and runs a C
# consumer against the installed tree through pkg-config and through CMake's find_package,
# with no paths written by hand: only PREFIX is chosen, everything else is discovered.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
work="$root/target/installtest"
rm -rf "$work"; mkdir -p "$work"
prefix="$work/prefix"
CMAKE=${CMAKE:-cmake}

echo "== make install PREFIX=$prefix"
make --no-print-directory install PREFIX="$prefix" >/dev/null
readelf -d "$prefix/lib/libflatopt.so" | grep -q 'SONAME.*libflatopt.so' || {
  echo "installed library has no SONAME" >&2; exit 1; }
bad=$(nm -D --defined-only "$prefix/lib/libflatopt.so" | awk '{print $3}' | grep -v '^flatopt_' || true)
[ -z "$bad" ] || { echo "non-flatopt symbols exported: $bad" >&2; exit 1; }

echo "== pkg-config consumer"
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
cc ${CFLAGS:-} -std=c99 -Wall -Wextra -pedantic -Werror tests/install/consumer.c \
  $(pkg-config --cflags --libs flatopt) -o "$work/consumer_pc"
LD_LIBRARY_PATH="$(pkg-config --variable=libdir flatopt)" "$work/consumer_pc"

echo "== CMake find_package consumer (shared and static)"
"$CMAKE" -S tests/install/cmake -B "$work/cmake" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
"$CMAKE" --build "$work/cmake" >/dev/null
"$work/cmake/consumer_shared"
"$work/cmake/consumer_static"
echo "install test: ok"
