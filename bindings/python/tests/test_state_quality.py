"""Training quality with compressed optimizer state, in seconds: the digits MLP of
examples/python/state_quality.py (NumPy, flatopt.Adam) trained 400 updates with the moments in
bf16 and in 8 bits, its final loss over the training set compared with the f32 run of the same
seed (same initial weights, same batches). The full experiment, with more seeds, a language
model and bitsandbytes, is the script itself (results: examples/python/state_quality.md).

Tolerances are the issue's target (1 % relative) where the precision meets it, and a stated
bound where it does not: round-to-nearest bf16 loses the small updates of v (0.1 % per step
with beta2 = 0.999, below bf16's resolution). The 8-bit code, rounded stochastically (the
default), is within 1 % since its unsigned code holds 5 mantissa bits of the square root of v
(-0.34 % here, +0.04 % and -0.01 % with seeds 1 and 2; the former code, 3 bits of v itself,
gave -1.06 %: docs/numerics.md, "8-bit blockwise code").
"""

import importlib.util

import numpy as np
import pytest

from conftest import REPO

SCRIPT = REPO / "examples" / "python" / "state_quality.py"
EPOCHS = 20  # 400 updates
SEED = 0


def _script():
    spec = importlib.util.spec_from_file_location("state_quality", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def digits():
    sq = _script()
    task = sq.Digits(quick=False)
    task.epochs = EPOCHS
    task.steps = EPOCHS * task.per_epoch
    return task


@pytest.fixture(scope="module")
def f32_loss(digits):
    return digits.run("f32", SEED)[-1][1]


# precision, largest |final loss / f32's - 1| allowed (measured, seed 0, 400 updates: bf16
# stochastic +0.02 %, bf16 nearest +0.64 %, int8 -0.34 %)
ROWS = [
    pytest.param("bf16 stochastic", 0.01, id="bf16-stochastic-1%"),
    pytest.param("bf16 nearest", 0.02, id="bf16-nearest-2%"),
    pytest.param("int8", 0.01, id="int8-1%"),
]


@pytest.mark.parametrize("precision, tolerance", ROWS)
def test_final_loss_near_f32(digits, f32_loss, precision, tolerance):
    loss = digits.run(precision, SEED)[-1][1]
    assert np.isfinite(loss)
    rel = loss / f32_loss - 1.0
    assert abs(rel) <= tolerance, (
        f"{precision}: final loss {loss:.6f} vs f32 {f32_loss:.6f}: {100 * rel:+.2f} % "
        f"(allowed ±{100 * tolerance:g} %)")


def test_training_learns(f32_loss):
    # The comparison means something only if the runs learn: ln(10) = 2.30 at the start.
    assert f32_loss < 0.3
