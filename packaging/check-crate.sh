#!/usr/bin/env bash
# The crate as crates.io would get it (make test-package): `cargo publish --dry-run` packages it
# and stops before the upload; every target of the packaged crate (library, integration tests,
# benches, examples) is then type-checked from the packaged sources alone, in a directory of
# its own (`cargo check --all-targets --offline`: a file missing from the package fails here as
# it would fail a user; code generation is left to the other stages, which build the same
# sources, so this stage costs seconds where the dry run's verification build cost minutes).
# Then the list of files
# the package carries is checked: the library's sources, the header, the build script, the
# documents, the integration tests and the data they need are there; no fuzz corpus, benchmark
# results, bindings, C/C++ programs or example data. Any warning of the dry run fails the check
# (cargo's closing "aborting upload due to dry run" is not a warning about the package).
# Needs the crates.io index (network). Environment: CARGO (default cargo).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cargo=${CARGO:-cargo}
log=$(mktemp)
trap 'rm -f "$log"' EXIT

echo "== cargo publish --dry-run"
if ! "$cargo" publish --dry-run --no-verify --allow-dirty --color never >"$log" 2>&1; then
  cat "$log" >&2
  echo "check-crate: cargo publish --dry-run failed" >&2
  exit 1
fi
grep -E '^ *(Packaged|Finished|Uploading)' "$log" || true
warnings=$(grep '^warning' "$log" | grep -vx 'warning: aborting upload due to dry run' || true)
if [ -n "$warnings" ]; then
  echo "check-crate: unexpected warnings from cargo publish --dry-run:" >&2
  echo "$warnings" >&2
  exit 1
fi

echo "== the files the package carries"
list=$("$cargo" package --list --allow-dirty --offline --color never 2>/dev/null)
status=0
for required in Cargo.toml Cargo.lock build.rs src/lib.rs include/flatopt.h README.md \
  CHANGELOG.md LICENSE-MIT LICENSE-APACHE docs/checkpoint-format.md cbindgen.toml \
  tests/common/mod.rs tests/fuzz_checks/mod.rs tests/data/braintools-0.4.0-dev.json; do
  grep -qx "$required" <<<"$list" || { echo "check-crate: $required is missing" >&2; status=1; }
done
# Every file of the package must match one of these.
allowed='^(\.cargo_vcs_info\.json|Cargo\.toml|Cargo\.toml\.orig|Cargo\.lock|build\.rs|cbindgen\.toml|src/.*\.rs|include/flatopt\.h|examples/[a-z_0-9]+\.rs|benches/[a-z_0-9]+\.rs|tests/(common/|fuzz_checks/)?[a-z_0-9]+\.rs|tests/data/[a-z0-9._-]+\.json|docs/[a-z_0-9-]+\.md|README\.md|ARCHITECTURE\.md|CHANGELOG\.md|LICENSE-MIT|LICENSE-APACHE)$'
unexpected=$(grep -Ev "$allowed" <<<"$list" || true)
if [ -n "$unexpected" ]; then
  echo "check-crate: files that do not belong in the crate:" >&2
  echo "$unexpected" >&2
  status=1
fi
# Every Rust source file of the library, every integration test and the files they share or
# read are in it.
for f in $(git ls-files 'src/*.rs' 'src/**/*.rs' 'tests/*.rs' 'tests/common/*.rs' \
  'tests/fuzz_checks/*.rs' 'tests/data/*'); do
  grep -qx "$f" <<<"$list" || { echo "check-crate: $f is not packaged" >&2; status=1; }
done
# crates.io takes at most 10 MB compressed; stay well below. (The dry run deletes its .crate:
# pack it again, without the verification build the dry run has done.)
"$cargo" package --no-verify --allow-dirty --offline --color never >"$log" 2>&1 ||
  { cat "$log" >&2; echo "check-crate: cargo package failed" >&2; exit 1; }
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
crate=target/package/flatopt-$version.crate
size=$(stat -c %s "$crate")
if [ "$size" -gt 3000000 ]; then
  echo "check-crate: $crate is $size bytes (keep it under 3 MB)" >&2
  status=1
fi
[ "$status" = 0 ] || exit 1

echo "== cargo check --all-targets on the packaged sources alone"
unpacked=$(mktemp -d)
trap 'rm -f "$log"; rm -rf "$unpacked"' EXIT
tar -xzf "$crate" -C "$unpacked" --strip-components=1
if ! (cd "$unpacked" && CARGO_TARGET_DIR="$root/target/package-check" \
  "$cargo" check --all-targets --offline --locked --color never) >"$log" 2>&1; then
  cat "$log" >&2
  echo "check-crate: the packaged crate does not build from its own files" >&2
  exit 1
fi
warnings=$(grep '^warning' "$log" || true)
if [ -n "$warnings" ]; then
  echo "check-crate: warnings building the packaged crate:" >&2
  echo "$warnings" >&2
  exit 1
fi
grep -E '^ *Finished' "$log" || true
echo "check-crate: ok ($(wc -l <<<"$list") files, $crate $size bytes)"
