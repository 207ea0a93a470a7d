#!/usr/bin/env bash
# Builds the library, compiles the C++ binding's test program against include/ +
# bindings/cpp/ and target/release/libflatopt.so, runs it, then runs it again under valgrind.
# Run from the repository root:  bash bindings/cpp/test/run.sh
# Artefacts: target/cpptest/ (binary, library link, logs).
# Environment: CXX (default g++), CXXFLAGS (extra flags), VALGRIND=0 to skip valgrind.
set -euo pipefail

root="$(pwd)"
if [[ ! -f "$root/Cargo.toml" || ! -f "$root/include/flatopt.h" ]]; then
  echo "run.sh: run from the repository root (bash bindings/cpp/test/run.sh)" >&2
  exit 2
fi

out="$root/target/cpptest"
mkdir -p "$out/lib"

echo "== cargo build --release"
cargo build --release

lib="$root/target/release/libflatopt.so"
[[ -f "$lib" ]] || { echo "run.sh: $lib not built" >&2; exit 1; }

# The library's SONAME (libflatopt.so.0.<minor>) is what the test binary records as NEEDED, but
# cargo only writes libflatopt.so. Provide the SONAME as a link to the fresh build in a
# directory of our own and point the rpath there.
soname="$(readelf -d "$lib" | sed -n 's/.*(SONAME).*\[\(.*\)\].*/\1/p')"
ln -sf "$lib" "$out/lib/libflatopt.so"
if [[ -n "$soname" ]]; then
  ln -sf "$lib" "$out/lib/$soname"
fi

cxx="${CXX:-g++}"
# shellcheck disable=SC2206
extra=(${CXXFLAGS:-})
flags=(-std=c++17 -Wall -Wextra -pedantic -Werror -O1 -g -pthread)

echo "== $cxx: header self-containment (bindings/cpp/flatopt.hpp alone)"
printf '#include "flatopt.hpp"\nint main() { return flatopt::version_matches() ? 0 : 1; }\n' \
  > "$out/include_only.cpp"
"$cxx" "${flags[@]}" "${extra[@]}" -I"$root/include" -I"$root/bindings/cpp" \
  -c "$out/include_only.cpp" -o "$out/include_only.o"

echo "== $cxx: test_flatopt"
"$cxx" "${flags[@]}" "${extra[@]}" \
  -I"$root/include" -I"$root/bindings/cpp" \
  "$root/bindings/cpp/test/test_flatopt.cpp" \
  -L"$out/lib" -lflatopt -Wl,-rpath,"$out/lib" \
  -o "$out/test_flatopt"

echo "== $cxx: catalog_mirror (the C++ enums and names against the Rust catalogs)"
"$cxx" "${flags[@]}" "${extra[@]}" \
  -I"$root/include" -I"$root/bindings/cpp" \
  "$root/bindings/cpp/test/catalog_mirror.cpp" \
  -L"$out/lib" -lflatopt -Wl,-rpath,"$out/lib" \
  -o "$out/catalog_mirror"
"$out/catalog_mirror"

if command -v clang++ >/dev/null 2>&1 && [[ "$cxx" != clang++* ]]; then
  echo "== clang++: test_flatopt (compile only)"
  clang++ "${flags[@]}" -I"$root/include" -I"$root/bindings/cpp" \
    -c "$root/bindings/cpp/test/test_flatopt.cpp" -o "$out/test_flatopt.clang.o"
fi

echo "== run"
"$out/test_flatopt" 2>&1 | tee "$out/test.log"

if [[ "${VALGRIND:-1}" != "0" ]]; then
  echo "== valgrind"
  valgrind --leak-check=full --error-exitcode=1 --errors-for-leak-kinds=definite,indirect \
    --log-file="$out/valgrind.log" "$out/test_flatopt" > "$out/test.valgrind.log" 2>&1 || {
    status=$?
    echo "valgrind run failed (exit $status); see $out/valgrind.log and $out/test.valgrind.log" >&2
    tail -n 40 "$out/valgrind.log" >&2 || true
    tail -n 20 "$out/test.valgrind.log" >&2 || true
    exit "$status"
  }
  grep -E 'ERROR SUMMARY|definitely lost|indirectly lost|possibly lost|still reachable|All heap' \
    "$out/valgrind.log" || true
  tail -n 1 "$out/test.valgrind.log"
fi
echo "== ok"
