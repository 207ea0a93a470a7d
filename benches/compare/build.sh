#!/usr/bin/env bash
# benches/compare/build.sh: builds the C side of the comparison into target/compare/:
#   driver                  flatopt through the C ABI + the bandwidth probe + latency benchmark
#   libcompare_probe.so     the same probe and data generator, for compare.py (ctypes)
# against target/release/libflatopt.so (built here with cargo unless FLATOPT_SKIP_CARGO=1).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"
CC="${CC:-gcc}"
CARGO="${CARGO:-cargo}"
out="$root/target/compare"
mkdir -p "$out"
if [ "${FLATOPT_SKIP_CARGO:-0}" != 1 ]; then
    "$CARGO" build --release --quiet
    bash packaging/dev-soname-link.sh target/release
fi
# The probe: plain C, -O3 with the machine's widest vectors (what a C compiler gives a plain loop).
PROBE_FLAGS=(-std=c11 -O3 -march=native -fno-math-errno -Wall -Wextra -pthread)
"$CC" "${PROBE_FLAGS[@]}" -fPIC -shared -o "$out/libcompare_probe.so" "$here/probe.c" -lm
"$CC" "${PROBE_FLAGS[@]}" -c -o "$out/probe.o" "$here/probe.c"
# The driver: -rdynamic exports its malloc wrappers so libflatopt's allocations are counted.
"$CC" -std=c11 -O2 -Wall -Wextra -Werror -pthread -rdynamic -I"$root/include" \
    -o "$out/driver" "$here/driver.c" "$out/probe.o" \
    -L"$root/target/release" -Wl,-rpath,"$root/target/release" -lflatopt -lm
echo "built $out/driver and $out/libcompare_probe.so"
