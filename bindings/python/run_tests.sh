#!/usr/bin/env bash
# Tests of the Python binding, as a user gets it, in two runs of the same pytest suite:
#
# 1. light: numpy, pytest and the package in the repository's virtualenv .venv (created if
#    missing, reused otherwise; the Makefile uses the same one). The tests that need JAX,
#    brainstate, braintools or torch print a skip with the reason.
# 2. extras: the same package in the virtualenv of bindings/python/requirements-extras.txt
#    (JAX, brainstate, braintools, torch; outside the clone, kept between runs: see
#    extras_venv.sh), where those tests must run (FLATOPT_REQUIRE_EXTRAS=1 turns their skips
#    into failures). Where the extras cannot be installed (no network, Python < 3.11), this run
#    is skipped with the reason printed, and the exit status is that of the light run.
#
# The package is built once (`pip wheel ./bindings/python`, which builds the Rust library with
# cargo and bundles it) and installed into .venv and, for the second run, into a directory of
# this run (the extras virtualenv is shared between clones and never changed); pytest runs
# from a temporary directory outside the source tree with FLATOPT_LIBRARY unset, so the
# installed package and its bundled library are what is tested. Extra arguments go to pytest (both runs).
# Environment: PYTHON (to create the virtualenvs, default python3), FLATOPT_SKIP_EXTRAS=1 (the
# light run only), FLATOPT_EXTRAS_VENV (see extras_venv.sh).
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

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"${pip[@]}" wheel --no-deps --wheel-dir "$work/dist" "$here"
wheel=("$work"/dist/flatopt-*.whl)
"${pip[@]}" install --force-reinstall --no-deps "${wheel[0]}"

cd "$work"
unset FLATOPT_LIBRARY
export PYTHONDONTWRITEBYTECODE=1  # no __pycache__ in the source tree

# run_suite PYTHON LABEL [pytest args...]
run_suite() {
    local python=$1 label=$2
    shift 2
    echo "== python tests ($label): $python"
    "$python" - "$root" <<'PY'
import os, sys, flatopt
root = os.path.realpath(sys.argv[1])
mod = os.path.realpath(flatopt.__file__)
lib = os.path.realpath(flatopt.library_path)
print(f"python binding: {mod}\n  library {lib} (version {flatopt.library_version})")
if mod.startswith(root + os.sep + "bindings") or not lib.startswith(os.path.dirname(mod)):
    sys.exit("run_tests.sh: not testing the installed package with its bundled library")
PY
    "$python" -m pytest -p no:cacheprovider -q "$here/tests" "$@"
}

run_suite "$py" "light: numpy only" "$@"

if [ -n "${FLATOPT_SKIP_EXTRAS:-}" ]; then
    echo "== python tests (extras): skipped (FLATOPT_SKIP_EXTRAS is set)"
    exit 0
fi
if ! extras=$(bash "$here/extras_venv.sh"); then
    echo "== python tests (extras): SKIPPED: the extras (JAX, brainstate, braintools, torch)" \
         "could not be installed (reason above); their tests were skipped in the light run"
    exit 0
fi
# The extras virtualenv is shared by every clone on the machine and only read: this run's
# package goes into a directory of its own, first on the path (another clone's concurrent run
# cannot swap it).
"$extras/bin/python" -m pip --disable-pip-version-check --quiet install --no-deps \
    --target "$work/extras-site" "${wheel[0]}"
PYTHONPATH="$work/extras-site" FLATOPT_REQUIRE_EXTRAS=1 \
    run_suite "$extras/bin/python" "extras: jax, brainstate, braintools, torch" "$@"
