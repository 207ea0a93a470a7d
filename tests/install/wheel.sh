#!/usr/bin/env bash
# The binary wheel as a Python user without a Rust toolchain gets it (make test-wheel, after
# make wheel): a fresh virtualenv, a PATH with no cargo or rustc on it (checked), the wheel
# installed from target/wheels with pip allowed no index and no source build, then from a
# directory outside the source tree: check_installed.py (versions agree with Cargo.toml, the
# README's Python quick start prints what the README says) and the pytest suite against the
# installed wheel. numpy and pytest come from PyPI (pip's cache makes reruns quick).
# Environment: PYTHON (default python3).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
wheels=(target/wheels/flatopt-"$version"-py3-none-*manylinux*.whl)
[ -f "${wheels[0]}" ] || { echo "test-wheel: no wheel for $version in target/wheels (make wheel)" >&2; exit 1; }
[ "${#wheels[@]}" = 1 ] || { echo "test-wheel: several wheels: ${wheels[*]}" >&2; exit 1; }
wheel=$root/${wheels[0]}
python=$(command -v "${PYTHON:-python3}")
work=$root/target/wheeltest
rm -rf "$work"; mkdir -p "$work"
# shellcheck source=tests/install/python_env.sh
. "$root/tests/install/python_env.sh"

# A PATH without the Rust toolchain: every directory that holds cargo or rustc is left out.
path=
IFS=: read -r -a dirs <<<"$PATH"
for d in "${dirs[@]}"; do
  [ -n "$d" ] || continue
  if [ -e "$d/cargo" ] || [ -e "$d/rustc" ]; then continue; fi
  path=${path:+$path:}$d
done
export PATH=$path
unset CARGO RUSTC RUSTUP_TOOLCHAIN FLATOPT_LIBRARY FLATOPT_SOURCE_DIR FLATOPT_PREBUILT_LIBRARY
if command -v cargo >/dev/null || command -v rustc >/dev/null; then
  echo "test-wheel: cargo or rustc is still on the PATH: $PATH" >&2
  exit 1
fi
echo "== fresh virtualenv, PATH without cargo and rustc"
fresh_venv "$python"
echo "== pip install $(basename "$wheel") (no index, binary only)"
"${pip[@]}" install --no-index --only-binary=:all: "$wheel"
test_installed "the installed wheel"
