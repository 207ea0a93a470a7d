#!/usr/bin/env bash
# benches/compare/run.sh: the side-by-side comparison, as `make bench-compare` runs it.
#
#   1. a virtualenv .venv-bench at the repository root (created if missing, reused otherwise;
#      separate from .venv, which the tests use) with numpy, matplotlib, torch, deepspeed,
#      jax[cpu], optax and bitsandbytes from PyPI, and flatopt itself (pip install ./bindings/python: builds
#      the library with cargo and bundles it). PyPI's Linux torch wheel pulls in the CUDA
#      runtime packages (about 5 GB in all); they are installed but unused (no GPU here). Each
#      package is installed on its own: one that cannot be installed is reported and skipped
#      (compare.py prints why it leaves that implementation out), never a failure.
#   2. the C side (build.sh): target/compare/driver and target/compare/libcompare_probe.so
#   3. without arguments: compare.py (the Adam comparison, 1e3..1e8 elements, 1 and 2 threads,
#      7 repetitions), then compare.py --family (every base rule against PyTorch and optax),
#      writing benches/compare/results/; with arguments, one compare.py run with them (e.g.
#      --family --threads 2 for the family alone).
#
# DeepSpeed builds its cpu_adam op with the machine's compiler on first use (ninja must be on
# the PATH: the venv's bin/ is put first); if that fails compare.py skips it and says why.
# Environment: PYTHON (to create the venv, default python3), BENCH_VENV (default .venv-bench).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"
venv="${BENCH_VENV:-$root/.venv-bench}"
if [ ! -x "$venv/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
fi
py="$venv/bin/python"
pip=("$py" -m pip --disable-pip-version-check --quiet)
# module to import -> what pip installs (jax on the CPU: jax[cpu])
for spec in numpy:numpy matplotlib:matplotlib torch:torch deepspeed:deepspeed "jax:jax[cpu]" \
            optax:optax bitsandbytes:bitsandbytes; do
    mod=${spec%%:*}
    "$py" -c "import $mod" 2>/dev/null && continue
    echo "run.sh: installing ${spec#*:} into $venv"
    "${pip[@]}" install "${spec#*:}" \
        || echo "run.sh: installing ${spec#*:} failed; compare.py skips what needs it and says why"
done
"${pip[@]}" install --force-reinstall --no-deps ./bindings/python
bash "$here/build.sh"
export PATH="$venv/bin:$PATH"
unset FLATOPT_LIBRARY
# NumPy: an OPENBLAS_CORETYPE set for old OpenBLAS bugs only slows it. One BLAS thread: the
# NumPy pipeline's norm pass calls np.dot, after which OpenBLAS's workers spin for about 0.1 s
# on the other core, taking it from whatever implementation runs next (the NumPy reference
# splits its own work over two Python threads).
unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE
export OPENBLAS_NUM_THREADS=1
# JAX on the CPU only (no probing for accelerator plugins).
export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}"
echo "run.sh: load average $(cut -d' ' -f1-3 /proc/loadavg) before the run"
if [ $# -gt 0 ]; then
    exec "$py" "$here/compare.py" "$@"
fi
"$py" "$here/compare.py"
echo "run.sh: load average $(cut -d' ' -f1-3 /proc/loadavg) before the family run"
exec "$py" "$here/compare.py" --family
