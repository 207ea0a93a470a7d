#!/usr/bin/env bash
# The C library as distributions package it. For each layout below: `make install` (staged with
# DESTDIR where the layout says so), checks of the installed tree (SONAME, exported symbols, no
# staging path written into any file), a C consumer built through pkg-config (shared, and
# static with Libs.private) and through CMake's find_package with no paths written by hand, then `make uninstall`, which must remove exactly
# what install put there (a file of someone else's in the same directories stays).
#   1. PREFIX=<tmp>/prefix              plain install into a private prefix
#   2. DESTDIR=<tmp>/stage PREFIX=/usr  staged, as a distribution's package build does it
#   3. as 2 with LIBDIR=/usr/lib/<multiarch>   Debian's library directory
# Environment: CMAKE (default cmake).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
work="$root/target/installtest"
rm -rf "$work"; mkdir -p "$work"
CMAKE=${CMAKE:-cmake}
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
major=${version%%.*}; rest=${version#*.}; minor=${rest%%.*}
multiarch=$(gcc -print-multiarch 2>/dev/null || true)
[ -n "$multiarch" ] || multiarch=x86_64-linux-gnu

fail() { echo "install test ($layout): $*" >&2; exit 1; }

# check_layout NAME DESTDIR PREFIX LIBDIR
check_layout() {
  layout=$1
  local destdir=$2 prefix=$3 libdir=$4
  local includedir=$prefix/include
  local D=$destdir
  local vars=(PREFIX="$prefix" LIBDIR="$libdir" DESTDIR="$destdir")
  echo "== $layout: make install ${vars[*]}"
  make --no-print-directory install "${vars[@]}" >/dev/null

  # Where the files went.
  local expected actual
  expected=$(printf '%s\n' \
    "$D$libdir/libflatopt.so" "$D$libdir/libflatopt.so.$version" \
    "$D$libdir/libflatopt.a" "$D$libdir/pkgconfig/flatopt.pc" \
    "$D$libdir/cmake/flatopt/flatoptConfig.cmake" \
    "$D$libdir/cmake/flatopt/flatoptConfigVersion.cmake" \
    "$D$includedir/flatopt.h" "$D$includedir/flatopt.hpp" | sort)
  local soname
  soname=$(readelf -d "$D$libdir/libflatopt.so" | sed -n 's/.*Library soname: \[\(.*\)\].*/\1/p')
  [ -n "$soname" ] || fail "installed library has no SONAME"
  expected=$(printf '%s\n%s\n' "$expected" "$D$libdir/$soname" | sort)
  local top=${D:-$prefix}
  actual=$(find "$top" \( -type f -o -type l \) | sort)
  [ "$actual" = "$expected" ] || fail "installed files differ from the expected list:
$(diff <(echo "$expected") <(echo "$actual") || true)"
  [ "$(readlink "$D$libdir/libflatopt.so")" = "$soname" ] || fail "libflatopt.so -> not $soname"
  [ "$(readlink "$D$libdir/$soname")" = "libflatopt.so.$version" ] ||
    fail "$soname -> not libflatopt.so.$version"
  local bad
  bad=$(nm -D --defined-only "$D$libdir/libflatopt.so" | awk '{print $3}' | grep -v '^flatopt_' || true)
  [ -z "$bad" ] || fail "non-flatopt symbols exported: $bad"
  if [ -n "$D" ] && grep -rl -- "$D" "$D" >/dev/null 2>&1; then
    fail "the staging directory is written into: $(grep -rl -- "$D" "$D" | tr '\n' ' ')"
  fi
  grep -qx "prefix=$prefix" "$D$libdir/pkgconfig/flatopt.pc" ||
    fail "flatopt.pc does not say prefix=$prefix"

  echo "== $layout: pkg-config consumer"
  local pc=(env PKG_CONFIG_PATH= PKG_CONFIG_LIBDIR="$D$libdir/pkgconfig")
  if [ -n "$D" ]; then
    # The staged tree as a sysroot; /usr/include and /usr/lib are the system's directories,
    # which pkg-config leaves out unless told: here they are the staged ones.
    pc+=(PKG_CONFIG_SYSROOT_DIR="$D" PKG_CONFIG_ALLOW_SYSTEM_CFLAGS=1 PKG_CONFIG_ALLOW_SYSTEM_LIBS=1)
  fi
  [ "$("${pc[@]}" pkg-config --modversion flatopt)" = "$version" ] || fail "pkg-config version"
  local out=$work/build-$layout
  mkdir -p "$out"
  # shellcheck disable=SC2046
  cc ${CFLAGS:-} -std=c99 -Wall -Wextra -pedantic -Werror tests/install/consumer.c \
    $("${pc[@]}" pkg-config --cflags --libs flatopt) -o "$out/consumer_pc"
  LD_LIBRARY_PATH="$D$libdir" "$out/consumer_pc"
  # Static: the archive, then the libraries Libs.private names.
  local libs_static
  libs_static=$("${pc[@]}" pkg-config --static --libs-only-l flatopt)
  # shellcheck disable=SC2046,SC2086
  cc ${CFLAGS:-} -std=c99 -Wall -Wextra -pedantic -Werror tests/install/consumer.c \
    $("${pc[@]}" pkg-config --cflags flatopt) "$D$libdir/libflatopt.a" ${libs_static//-lflatopt/} \
    -o "$out/consumer_pc_static"
  "$out/consumer_pc_static"
  local loaded
  loaded=$(LD_LIBRARY_PATH="$D$libdir" ldd "$out/consumer_pc")
  grep -q "$D$libdir/$soname" <<<"$loaded" || fail "consumer_pc does not load $D$libdir/$soname"

  echo "== $layout: CMake find_package consumer (shared and static)"
  "$CMAKE" -S tests/install/cmake -B "$out/cmake" -DCMAKE_PREFIX_PATH="$D$prefix" \
    -DFLATOPT_WANT="$major.$minor" >/dev/null
  "$CMAKE" --build "$out/cmake" >/dev/null
  LD_LIBRARY_PATH="$D$libdir" "$out/cmake/consumer_shared"
  "$out/cmake/consumer_static"
  # The version file refuses a release of another ABI (before 1.0: another minor).
  local other="$major.$((minor + 1))"
  [ "$major" = 0 ] || other="$((major + 1)).0"
  if "$CMAKE" -S tests/install/cmake -B "$out/cmake-other" -DCMAKE_PREFIX_PATH="$D$prefix" \
    -DFLATOPT_WANT="$other" >/dev/null 2>&1; then
    fail "find_package(flatopt $other) accepted flatopt $version"
  fi

  echo "== $layout: make uninstall"
  # Someone else's file in the same directory must survive.
  echo other >"$D$libdir/libother.so.1"
  make --no-print-directory uninstall "${vars[@]}" >/dev/null
  actual=$(find "$top" \( -type f -o -type l \) | sort)
  [ "$actual" = "$D$libdir/libother.so.1" ] || fail "after uninstall, expected only $D$libdir/libother.so.1, found:
$actual"
  rm "$D$libdir/libother.so.1"
  make --no-print-directory uninstall "${vars[@]}" >/dev/null # nothing left: no error
  actual=$(find "$top" -mindepth 1)
  if [ -n "$D" ]; then
    [ -z "$actual" ] || fail "staged tree not empty after uninstall: $actual"
  else
    # Without DESTDIR the prefix's own directories go when empty, the prefix stays.
    [ -z "$actual" ] || fail "prefix not empty after uninstall: $actual"
  fi
}

check_layout prefix "" "$work/prefix" "$work/prefix/lib"
check_layout staged "$work/stage" /usr /usr/lib
check_layout multiarch "$work/stage-ma" /usr "/usr/lib/$multiarch"
echo "install test: ok (3 layouts)"
