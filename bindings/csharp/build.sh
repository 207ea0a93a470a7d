#!/usr/bin/env bash
# bindings/csharp/build.sh: builds the C# binding with Mono's compiler and lays it out as the
# NuGet package expects, in target/csharp/package/:
#   lib/netstandard2.0/Flatopt.dll, Flatopt.xml  the assembly (its only framework reference is
#                                               netstandard 2.0.0.0) and its XML documentation
#   runtimes/linux-x64/native/libflatopt.so     the native library (from target/release)
# (Unity: copy Flatopt.dll to Assets/Plugins/ and libflatopt.so to Assets/Plugins/x86_64/;
# see README.md.) mcs compiles against .NET Standard 2.0's reference assembly (NuGet's
# NETStandard.Library 2.0.3 netstandard.dll, which netstandard_ref.sh beside this script
# fetches once into a cache outside the clone) with no standard library of its own, as
# `dotnet build` of Flatopt.csproj does. Where that reference assembly cannot be had (no npm
# registry, no 7-Zip), it says so and builds lib/net471/ instead (.NET Framework 4.7.1,
# mscorlib: the same sources, which Mono and Unity load too).
# Needs mcs (bindings/csharp/ensure_mono.sh) and the release library (`make lib`).
# Usage: bash bindings/csharp/build.sh [OUTDIR]   (default target/csharp)
# Prints the assembly's path as its last line.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
out="${1:-$root/target/csharp}"
pkg="$out/package"
so="$root/target/release/libflatopt.so"
[[ -f "$so" ]] || { echo "build.sh: $so not built (make lib)" >&2; exit 1; }
rm -rf "$pkg/lib"
mkdir -p "$pkg/runtimes/linux-x64/native" "$out/obj"

if ref="$(bash "$root/bindings/csharp/netstandard_ref.sh")"; then
    tfm=netstandard2.0
    framework=".NETStandard,Version=v2.0"
    display=""
    refs=(-nostdlib -noconfig -r:"$ref/netstandard.dll")
else
    echo "build.sh: .NET Standard 2.0 reference assembly not available (above): building lib/net471 instead" >&2
    tfm=net471
    framework=".NETFramework,Version=v4.7.1"
    display=".NET Framework 4.7.1"
    refs=(-sdk:4.7.1)
fi
# The attribute `dotnet build` generates for the target framework.
printf '[assembly: System.Runtime.Versioning.TargetFramework("%s", FrameworkDisplayName = "%s")]\n' \
    "$framework" "$display" >"$out/obj/TargetFramework.cs"
mkdir -p "$pkg/lib/$tfm"
mcs -target:library "${refs[@]}" -unsafe -optimize+ -warnaserror+ -nowarn:1591 \
    -out:"$pkg/lib/$tfm/Flatopt.dll" -doc:"$pkg/lib/$tfm/Flatopt.xml" \
    "$root"/bindings/csharp/src/*.cs "$out/obj/TargetFramework.cs"
cp -f "$so" "$pkg/runtimes/linux-x64/native/libflatopt.so"
echo "build.sh: $pkg/runtimes/linux-x64/native/libflatopt.so and"
echo "$pkg/lib/$tfm/Flatopt.dll"
