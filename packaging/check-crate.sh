#!/usr/bin/env bash
# The crate as crates.io would get it (make test-package): `cargo publish --dry-run` packages it,
# builds it from the packaged sources alone and stops before the upload. Then the list of files
# the package carries is checked: the library's sources, the header, the build script and the
# documents are there; no test data, fuzz corpus, benchmark results, bindings or example data.
# The only warnings allowed are cargo's notes that the integration tests are left out.
# Needs the crates.io index (network). Environment: CARGO (default cargo).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cargo=${CARGO:-cargo}
log=$(mktemp)
trap 'rm -f "$log"' EXIT

echo "== cargo publish --dry-run"
if ! "$cargo" publish --dry-run --allow-dirty --color never >"$log" 2>&1; then
  cat "$log" >&2
  echo "check-crate: cargo publish --dry-run failed" >&2
  exit 1
fi
grep -E '^ *(Packaged|Verifying|Finished|Uploading)' "$log" || true
warnings=$(grep '^warning:' "$log" |
  grep -v -e '^warning: ignoring test `[a-z_0-9]*` as `tests/[a-z_0-9]*\.rs` is not included' \
          -e '^warning: aborting upload due to dry run$' || true)
if [ -n "$warnings" ]; then
  echo "check-crate: unexpected warnings from cargo publish --dry-run:" >&2
  echo "$warnings" >&2
  exit 1
fi

echo "== the files the package carries"
list=$("$cargo" package --list --allow-dirty --offline --color never 2>/dev/null)
status=0
for required in Cargo.toml Cargo.lock build.rs src/lib.rs include/flatopt.h README.md \
  CHANGELOG.md LICENSE-MIT LICENSE-APACHE docs/checkpoint-format.md; do
  grep -qx "$required" <<<"$list" || { echo "check-crate: $required is missing" >&2; status=1; }
done
# Every file of the package must match one of these.
allowed='^(\.cargo_vcs_info\.json|Cargo\.toml|Cargo\.toml\.orig|Cargo\.lock|build\.rs|src/.*\.rs|include/flatopt\.h|examples/[a-z_0-9]+\.rs|benches/[a-z_0-9]+\.rs|docs/[a-z_0-9-]+\.md|README\.md|ARCHITECTURE\.md|CHANGELOG\.md|LICENSE-MIT|LICENSE-APACHE)$'
unexpected=$(grep -Ev "$allowed" <<<"$list" || true)
if [ -n "$unexpected" ]; then
  echo "check-crate: files that do not belong in the crate:" >&2
  echo "$unexpected" >&2
  status=1
fi
# Every Rust source file of the library is in it.
for f in $(git ls-files 'src/*.rs' 'src/**/*.rs'); do
  grep -qx "$f" <<<"$list" || { echo "check-crate: $f is not packaged" >&2; status=1; }
done
[ "$status" = 0 ] || exit 1
echo "check-crate: ok ($(wc -l <<<"$list") files)"
