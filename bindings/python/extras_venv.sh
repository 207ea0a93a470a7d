#!/usr/bin/env bash
# Prints the path of the virtualenv with the optional heavy dependencies of the Python tests
# (bindings/python/requirements-extras.txt: JAX, brainstate, braintools, PyTorch), creating
# it first when missing. It lives outside the clone and survives between runs:
#   ${XDG_CACHE_HOME:-$HOME/.cache}/flatopt/venv-extras-<key>
# where <key> hashes the requirement lines (not the comments) and the Python version, so a
# changed pin makes a new virtualenv and an unchanged one is reused as is (no network then).
# A virtualenv counts as ready only once its install finished (the file .complete in it);
# concurrent runs on one machine wait for each other (flock). Virtualenvs of other keys unused
# for 30 days are removed, so old pins do not pile up (each is about 5 GB).
#
# Exit status 0 with the path on stdout; otherwise a message on stderr saying why (no
# network, an unsupported Python, ...) and status 1: the caller then skips the tests that need
# the extras. Environment: PYTHON (default python3), FLATOPT_EXTRAS_VENV (use that virtualenv
# instead, created the same way).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
reqs="$here/requirements-extras.txt"
python=${PYTHON:-python3}

if ! pyver=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null); then
    echo "extras_venv.sh: no Python interpreter '$python'" >&2
    exit 1
fi
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "extras_venv.sh: Python $pyver is too old for the extras (braintools needs >= 3.11)" >&2
    exit 1
fi
key=$( { echo "python $pyver"; grep -v '^[[:space:]]*\(#\|$\)' "$reqs"; } | sha256sum | cut -c1-16)
cache=${XDG_CACHE_HOME:-$HOME/.cache}/flatopt
venv=${FLATOPT_EXTRAS_VENV:-$cache/venv-extras-$key}
mkdir -p "$(dirname "$venv")"

exec 9>"$venv.lock"
flock 9
if [ ! -f "$venv/.complete" ]; then
    rm -rf "$venv"
    echo "extras_venv.sh: creating $venv (JAX, brainstate, braintools, torch: a few GB, once)" >&2
    log=$(mktemp)
    if ! { "$python" -m venv "$venv" &&
           "$venv/bin/python" -m pip install --disable-pip-version-check --quiet \
               --progress-bar off -r "$reqs"; } >"$log" 2>&1; then
        echo "extras_venv.sh: could not install the extras into $venv:" >&2
        tail -n 5 "$log" | sed 's/^/    /' >&2
        rm -rf "$venv" "$log"
        exit 1
    fi
    rm -f "$log"
    touch "$venv/.complete"
fi
touch "$venv/.complete"  # last use, for the clean-up below
exec 9>&-

if [ -z "${FLATOPT_EXTRAS_VENV:-}" ]; then
    for old in "$cache"/venv-extras-*/.complete; do
        [ -e "$old" ] || continue
        dir=$(dirname "$old")
        [ "$dir" = "$venv" ] && continue
        if [ -n "$(find "$old" -mtime +30 2>/dev/null)" ]; then
            ( exec 8>"$dir.lock"; flock -n 8 && rm -rf "$dir") || true
        fi
    done
fi
echo "$venv"
