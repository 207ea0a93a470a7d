#!/usr/bin/env bash
# Cargo writes target/<profile>/libflatopt.so, but the library's SONAME is
# libflatopt.so.0.<minor> (see build.rs), which is what programs linked against it look for at
# run time. This adds that name as a symlink next to the build output so that in-tree programs
# (tests, demos) run with a plain rpath. Usage: packaging/dev-soname-link.sh [DIR]
set -euo pipefail
dir=${1:-target/release}
lib="$dir/libflatopt.so"
[ -f "$lib" ] || { echo "dev-soname-link.sh: $lib not built" >&2; exit 1; }
soname=$(readelf -d "$lib" | sed -n 's/.*Library soname: \[\(.*\)\].*/\1/p')
[ -n "$soname" ] || { echo "dev-soname-link.sh: $lib has no SONAME" >&2; exit 1; }
ln -sf libflatopt.so "$dir/$soname"
