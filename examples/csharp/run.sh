#!/usr/bin/env bash
# examples/csharp/run.sh: the C# game-loop example (`make demo-csharp`): builds the binding
# (Mono's mcs; bindings/csharp/ensure_mono.sh installs mono-devel when missing), lays the
# program out next to Flatopt.dll and libflatopt.so as a shipped game would, and runs it.
# Arguments go to the program: --seconds S, --realtime (paced at 60 fps), --check.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
out="$root/target/csharp"
app="$out/demo-app"
if ! bash bindings/csharp/ensure_mono.sh; then
    echo "demo-csharp: SKIPPED: Mono (mcs, mono) is not available and cannot be installed here"
    exit 0
fi
dll="$(bash bindings/csharp/build.sh "$out" | tail -n 1)"
rm -rf "$app"
mkdir -p "$app"
cp "$dll" "$out/package/runtimes/linux-x64/native/libflatopt.so" "$app/"
# lib/netstandard2.0/Flatopt.dll: this .NET Framework 4.7.1 program compiles against Mono's
# netstandard facade too (lib/net471/ where build.sh could not fetch the reference assembly).
app_refs=()
[[ "$(basename "$(dirname "$dll")")" != netstandard2.0 ]] || app_refs=(-r:Facades/netstandard.dll)
mcs -target:exe -sdk:4.7.1 -optimize+ -warnaserror+ -r:"$app/Flatopt.dll" "${app_refs[@]}" \
    -out:"$app/GameLoop.exe" examples/csharp/GameLoop.cs
exec mono "$app/GameLoop.exe" "$@"
