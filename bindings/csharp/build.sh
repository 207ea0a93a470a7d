#!/usr/bin/env bash
# bindings/csharp/build.sh: builds the C# binding with Mono's compiler and lays it out as the
# NuGet package expects, in target/csharp/package/:
#   lib/net471/Flatopt.dll, Flatopt.xml       the assembly and its XML documentation
#   runtimes/linux-x64/native/libflatopt.so   the native library (from target/release)
# (Unity: copy Flatopt.dll to Assets/Plugins/ and libflatopt.so to Assets/Plugins/x86_64/;
# see README.md.) Needs mcs (bindings/csharp/ensure_mono.sh) and the release library
# (`make lib`). Usage: bash bindings/csharp/build.sh [OUTDIR]   (default target/csharp)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
out="${1:-$root/target/csharp}"
pkg="$out/package"
so="$root/target/release/libflatopt.so"
[[ -f "$so" ]] || { echo "build.sh: $so not built (make lib)" >&2; exit 1; }
mkdir -p "$pkg/lib/net471" "$pkg/runtimes/linux-x64/native"
# Mono's compiler has no .NET Standard reference assemblies, so this build targets .NET Framework
# 4.7.1 (mscorlib), which Unity's Mono and .NET 6+ (Godot 4) both load; the sources use only
# .NET Standard 2.0 APIs, and Flatopt.csproj beside this script builds the same sources as a
# netstandard2.0 assembly with the dotnet SDK (`dotnet pack`, lib/netstandard2.0/).
mcs -target:library -sdk:4.7.1 -unsafe -optimize+ -warnaserror+ -nowarn:1591 \
    -out:"$pkg/lib/net471/Flatopt.dll" -doc:"$pkg/lib/net471/Flatopt.xml" \
    "$root"/bindings/csharp/src/*.cs
cp -f "$so" "$pkg/runtimes/linux-x64/native/libflatopt.so"
echo "build.sh: $pkg/lib/net471/Flatopt.dll, $pkg/runtimes/linux-x64/native/libflatopt.so"
