#!/usr/bin/env bash
# make sdist: the Python package's source distribution, for platforms no wheel fits. It carries
# the Rust crate exactly as `cargo package` packs it for crates.io, in rust/, and setup.py builds
# that with cargo at install time (`pip install flatopt-<version>.tar.gz` needs a Rust toolchain).
#
# Usage: packaging/sdist.sh [OUTDIR]   (default target/wheels; an earlier sdist there is removed)
# Environment: VENV (the tools' virtualenv, default .venv), PYTHON, CARGO, CARGO_TARGET_DIR.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
out=${1:-$root/target/wheels}
venv=${VENV:-$root/.venv}
cargo=${CARGO:-cargo}
target_dir=${CARGO_TARGET_DIR:-$root/target}
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)

[ -x "$venv/bin/python" ] || "${PYTHON:-python3}" -m venv "$venv"
py=$venv/bin/python
"$py" -m pip install --quiet --disable-pip-version-check "setuptools>=77" build==1.6.1

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
stage=$scratch/flatopt-$version

echo "== cargo package (the crate the sdist carries)"
"$cargo" package --no-verify --allow-dirty --offline --color never >"$scratch/package.log" 2>&1 ||
  { cat "$scratch/package.log" >&2; exit 1; }
mkdir -p "$stage/rust"
tar -xzf "$target_dir/package/flatopt-$version.crate" -C "$stage/rust" --strip-components=1

echo "== python -m build --sdist"
# The Python package's files as git knows them (tracked, or new and not ignored).
git ls-files --cached --others --exclude-standard -z -- bindings/python |
  while IFS= read -r -d '' f; do
    [ -f "$f" ] || continue
    mkdir -p "$stage/$(dirname "${f#bindings/python/}")"
    cp -p "$f" "$stage/${f#bindings/python/}"
  done
cat >"$stage/MANIFEST.in" <<'EOF'
graft rust
graft tests
include run_tests.sh extras_venv.sh requirements-extras.txt
global-exclude *.py[cod] __pycache__
EOF
mkdir -p "$out"
rm -f "$out"/flatopt-*.tar.gz
FLATOPT_BUILD_BASE=$scratch/build "$py" -m build --sdist --no-isolation --outdir "$out" "$stage" \
  >"$scratch/build.log" 2>&1 || { cat "$scratch/build.log" >&2; exit 1; }
sdist=$out/flatopt-$version.tar.gz
[ -f "$sdist" ] || { echo "sdist.sh: $sdist was not written" >&2; exit 1; }
tar -tzf "$sdist" >"$scratch/list"
for f in rust/Cargo.toml rust/src/lib.rs setup.py pyproject.toml flatopt/__init__.py \
         flatopt/_torch_handover.cpp; do
  grep -qx "flatopt-$version/$f" "$scratch/list" ||
    { echo "sdist.sh: $sdist does not carry $f" >&2; exit 1; }
done
echo "sdist: $sdist ($(du -k "$sdist" | cut -f1) KiB, $(grep -c -v '/$' "$scratch/list") files)"
