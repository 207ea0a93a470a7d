#!/usr/bin/env bash
# bindings/csharp/test/run.sh: the C# binding's tests under Mono (`make test-csharp`).
#
#   1. Mono: bindings/csharp/ensure_mono.sh installs mono-devel when missing (root, apt-get);
#      where it cannot, the C# tests are skipped with a message and this exits 0
#   2. every function of the header has its DllImport in src/Native.cs (and no other)
#      the binding built and laid out as NuGet expects (bindings/csharp/build.sh), checked:
#      the assembly (lib/netstandard2.0/, or lib/net471/ where the .NET Standard reference
#      assembly cannot be fetched), its docs and runtimes/linux-x64/native/libflatopt.so; the
#      .csproj's version and native item agree with the header and the layout; the test
#      program's first rows check the assembly's target framework and its only reference
#   3. the header's ABI facts: gen_layout.py writes a C program from include/flatopt.h
#      (C11, -Werror) that prints every constant, enum value, struct size and field offset
#   4. golden JSON -> text (tests/c/golden_to_text.py), the C timing loop (cbench.c, a small
#      shared library) and the test program (mcs, warnings as errors)
#   5. the test program run from a directory laid out as an application ships the package
#      (Flatopt.dll and libflatopt.so side by side): its closing line is
#      "test_csharp: N passed, N failed"; its poisoned-handle rows run a copy of it beside the
#      library built with the test-only fault-injection feature (target/fault, as tests/c)
#   6. the example game loop in --check mode (it learns, zero managed allocations per frame)
# Build artefacts go to target/csharp/.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
cd "$root"
out="$root/target/csharp"
app="$out/test-app"

set +e
bash bindings/csharp/ensure_mono.sh
rc=$?
set -e
if [[ $rc != 0 ]]; then
    echo "test-csharp: SKIPPED: Mono (mcs, mono) is not available and cannot be installed here"
    exit 0
fi
echo "test-csharp: $(mono --version | head -n 1); mcs $(mcs --version | awk '{print $NF}')"

[[ -f target/release/libflatopt.so ]] || { echo "test-csharp: target/release/libflatopt.so missing (make lib)" >&2; exit 1; }
dll="$(bash bindings/csharp/build.sh "$out" | tail -n 1)"
pkg="$out/package"
tfm="$(basename "$(dirname "$dll")")"
# A .NET Framework program (the tests, built with -sdk:4.7.1) that uses a .NET Standard library
# compiles against Mono's netstandard facade, which forwards netstandard's types to mscorlib.
app_refs=()
[[ "$tfm" != netstandard2.0 ]] || app_refs=(-r:Facades/netstandard.dll)
echo "test-csharp: testing lib/$tfm/Flatopt.dll"
for f in "lib/$tfm/Flatopt.dll" "lib/$tfm/Flatopt.xml" runtimes/linux-x64/native/libflatopt.so; do
    [[ -s "$pkg/$f" ]] || { echo "test-csharp: package file $f missing" >&2; exit 1; }
done
header_version="$(sed -nE 's/^#define FLATOPT_VERSION_STRING "(.*)"/\1/p' include/flatopt.h)"
csproj_version="$(sed -nE 's#.*<Version>(.*)</Version>.*#\1#p' bindings/csharp/Flatopt.csproj)"
if [[ "$header_version" != "$csproj_version" ]]; then
    echo "test-csharp: Flatopt.csproj <Version> $csproj_version != header $header_version" >&2
    exit 1
fi
grep -q 'PackagePath="runtimes/linux-x64/native/libflatopt.so"' bindings/csharp/Flatopt.csproj ||
    { echo "test-csharp: Flatopt.csproj does not pack runtimes/linux-x64/native/libflatopt.so" >&2; exit 1; }
echo "test-csharp: package layout and Flatopt.csproj ($csproj_version) agree"

# Every function of the header has its DllImport in Native.cs, and nothing else does.
sed -nE 's/^[A-Za-z][^(]*[ *](flatopt_[a-z0-9_]+)\(.*/\1/p' include/flatopt.h | sort -u >"$out/api_header.txt"
grep -oE 'extern [^ ]+ flatopt_[a-z0-9_]+\(' bindings/csharp/src/Native.cs |
    sed -E 's/.* (flatopt_[a-z0-9_]+)\(/\1/' | sort -u >"$out/api_csharp.txt"
if ! diff -u "$out/api_header.txt" "$out/api_csharp.txt"; then
    echo "test-csharp: include/flatopt.h and bindings/csharp/src/Native.cs declare different functions (- header only, + C# only)" >&2
    exit 1
fi
echo "test-csharp: all $(wc -l <"$out/api_header.txt") functions of the header declared in Native.cs"

python3 bindings/csharp/test/gen_layout.py include/flatopt.h "$out/layout.c"
"${CC:-gcc}" -std=c11 -Wall -Wextra -pedantic -Werror -Iinclude "$out/layout.c" -o "$out/layout"
"$out/layout" >"$out/layout.txt"
python3 tests/c/golden_to_text.py tests/data/braintools-0.4.0-dev.json "$out/golden.txt"

rm -rf "$app"
mkdir -p "$app" "$out/tmp"
cp "$dll" "$app/"
cp "$pkg/runtimes/linux-x64/native/libflatopt.so" "$app/"
soname="$(readelf -d "$app/libflatopt.so" | sed -n 's/.*Library soname: \[\(.*\)\].*/\1/p')"
[[ -z "$soname" ]] || ln -sf libflatopt.so "$app/$soname"
"${CC:-gcc}" -std=c99 -O2 -Wall -Wextra -pedantic -Werror -fPIC -shared -Iinclude \
    bindings/csharp/test/cbench.c -o "$app/libflatopt_cbench.so" -L"$app" -lflatopt -Wl,-rpath,'$ORIGIN'
mcs -target:exe -sdk:4.7.1 -unsafe -optimize+ -warnaserror+ -r:"$app/Flatopt.dll" "${app_refs[@]}" -r:System.Core.dll \
    -out:"$app/test_csharp.exe" bindings/csharp/test/*.cs
mcs -target:exe -sdk:4.7.1 -optimize+ -warnaserror+ -r:"$app/Flatopt.dll" "${app_refs[@]}" \
    -out:"$app/GameLoop.exe" examples/csharp/GameLoop.cs

# The same program beside the library built with the test-only fault-injection feature (the
# opt-level 0 build tests/c/run.sh makes too, in target/fault/unoptimized), for the
# poisoned-handle rows.
poison="$out/poison-app"
rm -rf "$poison"
mkdir -p "$poison"
if ! "${CARGO:-cargo}" build --profile unoptimized --features fault-injection \
    --target-dir target/fault >"$out/cargo_fault.log" 2>&1; then
    tail -n 30 "$out/cargo_fault.log"
    echo "test-csharp: the fault-injection build failed (log: $out/cargo_fault.log)" >&2
    exit 1
fi
cp target/fault/unoptimized/libflatopt.so "$app/Flatopt.dll" "$app/test_csharp.exe" "$poison/"
[[ -z "$soname" ]] || ln -sf libflatopt.so "$poison/$soname"

rm -rf "$out/tmp" && mkdir -p "$out/tmp"
status=0
FLATOPT_TEST_TFM="$tfm" mono "$app/test_csharp.exe" "$out/layout.txt" "$out/golden.txt" "$out/tmp" "$poison" |
    tee "$out/test_csharp.log" || status=1
echo
echo "test-csharp: the example game loop (--check: it learns, 0 bytes allocated per frame)"
mono "$app/GameLoop.exe" --seconds 30 --check | tee "$out/gameloop.log" || status=1
exit $status
