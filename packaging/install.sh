#!/usr/bin/env bash
# Installs or uninstalls the C library the way distributions package it:
#   LIBDIR/libflatopt.so.X.Y.Z, its SONAME link and the development link libflatopt.so,
#   LIBDIR/libflatopt.a, INCLUDEDIR/flatopt.h and flatopt.hpp,
#   LIBDIR/pkgconfig/flatopt.pc, LIBDIR/cmake/flatopt/flatoptConfig{,Version}.cmake.
#
# Usage: packaging/install.sh install|uninstall   (the Makefile's install / uninstall targets)
# Environment, as in GNU makefiles:
#   PREFIX      final installation prefix (default /usr/local); written into flatopt.pc
#   DESTDIR     staging root (default empty): every file goes to $DESTDIR<final path>, while
#               the pkg-config file and the CMake package name the final paths only
#   LIBDIR      default $PREFIX/lib (e.g. /usr/lib/x86_64-linux-gnu, /usr/lib64)
#   INCLUDEDIR  default $PREFIX/include
#   BUILD       where cargo put the libraries (default target/release; install only)
# LIBDIR and INCLUDEDIR must lie inside PREFIX: the CMake package finds the prefix from its own
# location, so a staged or moved tree works as it is.
set -euo pipefail
action=${1:?usage: install.sh install|uninstall}
here=$(cd "$(dirname "$0")/.." && pwd)

abspath() { case $1 in /*) printf '%s' "$1" ;; *) printf '%s/%s' "$PWD" "$1" ;; esac; }
prefix=$(abspath "${PREFIX:-/usr/local}")
prefix=${prefix%/}
libdir=$(abspath "${LIBDIR:-$prefix/lib}")
libdir=${libdir%/}
includedir=$(abspath "${INCLUDEDIR:-$prefix/include}")
includedir=${includedir%/}
destdir=${DESTDIR:-}
if [ -n "$destdir" ]; then destdir=$(abspath "$destdir"); destdir=${destdir%/}; fi
build=$(abspath "${BUILD:-target/release}")
cd "$here"

# A path below the prefix, relative to it ("lib", "lib/x86_64-linux-gnu").
below_prefix() {
  case $1 in
    "$prefix"/*) printf '%s' "${1#"$prefix"/}" ;;
    *) echo "install.sh: $2=$1 is not inside PREFIX=$prefix" >&2; exit 1 ;;
  esac
}
libdir_rel=$(below_prefix "$libdir" LIBDIR)
includedir_rel=$(below_prefix "$includedir" INCLUDEDIR)
# From LIBDIR/cmake/flatopt back up to the prefix.
cmake_up=../..
rest=$libdir_rel
while [ -n "$rest" ]; do
  cmake_up=$cmake_up/..
  case $rest in */*) rest=${rest#*/} ;; *) rest= ;; esac
done

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
major=${version%%.*}; rest=${version#*.}; minor=${rest%%.*}
if [ "$major" = 0 ]; then soname="libflatopt.so.0.$minor"; else soname="libflatopt.so.$major"; fi
realname="libflatopt.so.$version"

D=$destdir
pcdir=$libdir/pkgconfig
cmakedir=$libdir/cmake/flatopt
# Every file this script installs, as final paths (uninstall removes exactly these).
files=(
  "$libdir/$realname" "$libdir/$soname" "$libdir/libflatopt.so" "$libdir/libflatopt.a"
  "$includedir/flatopt.h" "$includedir/flatopt.hpp"
  "$pcdir/flatopt.pc" "$cmakedir/flatoptConfig.cmake" "$cmakedir/flatoptConfigVersion.cmake"
)

subst() {
  sed -e "s|@PREFIX@|$prefix|g" -e "s|@LIBDIR_REL@|$libdir_rel|g" \
      -e "s|@INCLUDEDIR_REL@|$includedir_rel|g" -e "s|@CMAKE_UP@|$cmake_up|g" \
      -e "s|@CMAKEDIR@|$cmakedir|g" -e "s|@VERSION@|$version|g" -e "s|@MAJOR@|$major|g" \
      -e "s|@MINOR@|$minor|g" -e "s|@SONAME@|$soname|g" -e "s|@REALNAME@|$realname|g" "$1"
}

case $action in
install)
  for f in "$build/libflatopt.so" "$build/libflatopt.a"; do
    [ -f "$f" ] || { echo "install.sh: $f not built (run: cargo build --release)" >&2; exit 1; }
  done
  built=$(readelf -d "$build/libflatopt.so" | sed -n 's/.*Library soname: \[\(.*\)\].*/\1/p')
  [ "$built" = "$soname" ] || {
    echo "install.sh: $build/libflatopt.so has SONAME '$built', Cargo.toml's version $version says $soname" >&2
    exit 1
  }
  install -d "$D$libdir" "$D$includedir" "$D$pcdir" "$D$cmakedir"
  install -m 0755 "$build/libflatopt.so" "$D$libdir/$realname"
  ln -sfn "$realname" "$D$libdir/$soname"
  ln -sfn "$soname" "$D$libdir/libflatopt.so"
  install -m 0644 "$build/libflatopt.a" "$D$libdir/libflatopt.a"
  install -m 0644 include/flatopt.h "$D$includedir/flatopt.h"
  install -m 0644 bindings/cpp/flatopt.hpp "$D$includedir/flatopt.hpp"
  subst packaging/flatopt.pc.in > "$D$pcdir/flatopt.pc"
  subst packaging/flatoptConfig.cmake.in > "$D$cmakedir/flatoptConfig.cmake"
  subst packaging/flatoptConfigVersion.cmake.in > "$D$cmakedir/flatoptConfigVersion.cmake"
  chmod 0644 "$D$pcdir/flatopt.pc" "$D$cmakedir"/flatoptConfig*.cmake
  echo "installed flatopt $version into $D$prefix${D:+ (final prefix $prefix)}"
  ;;
uninstall)
  for f in "${files[@]}"; do
    if [ -e "$D$f" ] || [ -L "$D$f" ]; then rm -f "$D$f"; fi
  done
  # Then the directories left empty, bottom up: below the prefix, and when staging (DESTDIR)
  # the prefix itself and its parents up to DESTDIR.
  stop=$D$prefix
  [ -z "$D" ] || stop=$D
  for f in "${files[@]}"; do
    d=$(dirname "$D$f")
    while [ "$d" != "$stop" ] && [ "${d#"$stop"/}" != "$d" ]; do
      rmdir "$d" 2>/dev/null || break
      d=$(dirname "$d")
    done
  done
  echo "uninstalled flatopt $version from $D$prefix"
  ;;
*)
  echo "install.sh: unknown action $action (install or uninstall)" >&2
  exit 1
  ;;
esac
