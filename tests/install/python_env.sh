# Shared by tests/install/wheel.sh and sdist.sh (sourced; they set root and work).

# fresh_venv PYTHON: a new virtualenv in $work/venv with numpy and pytest (from PyPI or pip's
# cache); sets py and pip for the caller.
fresh_venv() {
  "$1" -m venv "$work/venv"
  py=$work/venv/bin/python
  pip=("$py" -m pip --disable-pip-version-check --quiet)
  "${pip[@]}" install numpy pytest
}

# test_installed WHAT: from a directory outside the source tree, check_installed.py (versions,
# the bundled library, the README's quick start), then the pytest suite; replaces the shell.
test_installed() {
  mkdir -p "$work/run"
  cd "$work/run"
  export PYTHONDONTWRITEBYTECODE=1
  "$py" "$root/tests/install/check_installed.py" "$root" "$work/venv"
  echo "== pytest against $1"
  exec "$py" -m pytest -p no:cacheprovider -q "$root/bindings/python/tests"
}
