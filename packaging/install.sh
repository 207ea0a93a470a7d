#!/usr/bin/env bash
# Installs the built library into PREFIX: lib/ (shared with SONAME symlinks, static),
# include/ (C header, C++ header), lib/pkgconfig/flatopt.pc, lib/cmake/flatopt/.
# Usage: packaging/install.sh PREFIX [LIBDIR_OF_BUILD]
set -euo pipefail
prefix=${1:?usage: install.sh PREFIX}
build=${2:-target/release}
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
major=${version%%.*}; rest=${version#*.}; minor=${rest%%.*}
if [ "$major" = 0 ]; then soname="libflatopt.so.0.$minor"; else soname="libflatopt.so.$major"; fi
realname="libflatopt.so.$version"
mkdir -p "$prefix"
prefix=$(cd "$prefix" && pwd)
for f in "$build/libflatopt.so" "$build/libflatopt.a"; do
  [ -f "$f" ] || { echo "install.sh: $f not built (run: cargo build --release)" >&2; exit 1; }
done
install -d "$prefix/lib/pkgconfig" "$prefix/lib/cmake/flatopt" "$prefix/include"
install -m 0755 "$build/libflatopt.so" "$prefix/lib/$realname"
ln -sf "$realname" "$prefix/lib/$soname"
ln -sf "$soname" "$prefix/lib/libflatopt.so"
install -m 0644 "$build/libflatopt.a" "$prefix/lib/libflatopt.a"
install -m 0644 include/flatopt.h "$prefix/include/flatopt.h"
if [ -f bindings/cpp/flatopt.hpp ]; then
  install -m 0644 bindings/cpp/flatopt.hpp "$prefix/include/flatopt.hpp"
fi
subst() {
  sed -e "s|@PREFIX@|$prefix|g" -e "s|@VERSION@|$version|g" -e "s|@MAJOR@|$major|g" \
      -e "s|@MINOR@|$minor|g" -e "s|@SONAME@|$soname|g" -e "s|@REALNAME@|$realname|g" "$1"
}
subst packaging/flatopt.pc.in > "$prefix/lib/pkgconfig/flatopt.pc"
subst packaging/flatoptConfig.cmake.in > "$prefix/lib/cmake/flatopt/flatoptConfig.cmake"
subst packaging/flatoptConfigVersion.cmake.in > "$prefix/lib/cmake/flatopt/flatoptConfigVersion.cmake"
echo "installed flatopt $version into $prefix"
