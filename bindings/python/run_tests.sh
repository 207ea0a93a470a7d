#!/usr/bin/env bash
# Tests of the Python binding, as a user gets it: installs numpy, pytest and the package
# (`pip install ./bindings/python`, which builds the Rust library with cargo and bundles it)
# into the repository's virtualenv .venv (created if missing, reused otherwise; the Makefile
# uses the same one), then runs pytest from a temporary directory outside the source tree with
# FLATOPT_LIBRARY unset, so the installed package and its bundled library are what is tested.
# Extra arguments go to pytest. Environment: PYTHON (to create the venv, default python3).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
venv="$root/.venv"
if [ ! -x "$venv/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$venv"
fi
py="$venv/bin/python"
pip=("$py" -m pip --disable-pip-version-check --quiet)
"${pip[@]}" install numpy pytest
"${pip[@]}" install --force-reinstall --no-deps "$here"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
unset FLATOPT_LIBRARY
export PYTHONDONTWRITEBYTECODE=1  # no __pycache__ in the source tree
"$py" - "$root" <<'PY'
import os, sys, flatopt
root = os.path.realpath(sys.argv[1])
mod = os.path.realpath(flatopt.__file__)
lib = os.path.realpath(flatopt.library_path)
print(f"python binding: {mod}\n  library {lib} (version {flatopt.library_version})")
if mod.startswith(root + os.sep + "bindings") or not lib.startswith(os.path.dirname(mod)):
    sys.exit("run_tests.sh: not testing the installed package with its bundled library")
PY
exec "$py" -m pytest -p no:cacheprovider -q "$here/tests" "$@"
