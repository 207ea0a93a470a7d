#!/usr/bin/env bash
# The sdist as pip uses it where no wheel fits (make test-sdist, after make sdist): a fresh
# virtualenv, `pip install flatopt-<version>.tar.gz` with no binary of flatopt allowed, so pip
# builds it in isolation and setup.py compiles the crate the sdist carries with cargo; then
# check_installed.py and the pytest suite against the result, from outside the source tree.
# To keep it quick, cargo builds into target/sdist-build (kept between runs, so only flatopt
# itself is recompiled) and without the release profile's single codegen unit and LTO, which
# only decide how much inlining the optimizer sees; the arithmetic is the same. Environment: PYTHON (default python3).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
sdist=$root/target/wheels/flatopt-$version.tar.gz
[ -f "$sdist" ] || { echo "test-sdist: no $sdist (make sdist)" >&2; exit 1; }
command -v "${CARGO:-cargo}" >/dev/null || { echo "test-sdist: building from the sdist needs cargo" >&2; exit 1; }
work=$root/target/sdisttest
rm -rf "$work"; mkdir -p "$work"
# shellcheck source=tests/install/python_env.sh
. "$root/tests/install/python_env.sh"
unset FLATOPT_LIBRARY FLATOPT_SOURCE_DIR FLATOPT_PREBUILT_LIBRARY FLATOPT_BUILD_BASE

echo "== fresh virtualenv"
fresh_venv "${PYTHON:-python3}"
echo "== pip install $(basename "$sdist") (built from source with cargo)"
CARGO_TARGET_DIR=$root/target/sdist-build CARGO_PROFILE_RELEASE_LTO=off \
  CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
  "${pip[@]}" install --no-binary flatopt "$sdist"
test_installed "the package built from the sdist"
