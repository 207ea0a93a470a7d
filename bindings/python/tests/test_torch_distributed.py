"""ZeRO stage 1 over torch.distributed (gloo): examples/torch/train_zero1.py (Lookahead over
AdamW, and over LAMB) on 2 and 3 processes gives the bits of the single process (skipped, with the reason, where torch or its
gloo backend is missing)."""

import subprocess
import sys

import pytest

from conftest import REPO, needs

torch = needs("torch")

if not (torch.distributed.is_available() and torch.distributed.is_gloo_available()):
    pytest.skip("torch.distributed with the gloo backend is not available in this torch build "
                f"({torch.__version__})", allow_module_level=True)

EXAMPLE = REPO / "examples" / "torch" / "train_zero1.py"
# 30 steps with a NaN gradient at step 7 (skipped on every rank), 6 micro-batches.
ARGS = ["--steps", "30", "--nan-step", "7", "--quiet"]


def run(tmp_path, how):
    out = tmp_path / f"{'-'.join(how)}.pt"
    subprocess.run([sys.executable, str(EXAMPLE), *how, *ARGS, "--out", str(out)], check=True,
                   timeout=600)
    return torch.load(out, weights_only=True)


@pytest.fixture(scope="module", params=["adamw", "lamb"])
def rule(request):
    return request.param


@pytest.fixture(scope="module")
def reference(tmp_path_factory, rule):
    return run(tmp_path_factory.mktemp("single"), ["--single", "--rule", rule])


# LAMB: a trust ratio per buffer (the flat buffer, sharded): sharded.step exchanges the norm
# partials of the pass before the update as well.
@pytest.mark.parametrize("ranks", [2, 3])
def test_zero1_over_gloo_is_bit_identical_to_one_process(tmp_path, reference, rule, ranks):
    got = run(tmp_path, ["--ranks", str(ranks), "--rule", rule])
    assert (got["applied"], got["skipped"]) == (reference["applied"], reference["skipped"])
    assert reference["skipped"] == 1
    assert torch.equal(got["params"], reference["params"])
    assert torch.equal(got["slow"], reference["slow"])
