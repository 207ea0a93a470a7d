"""Shared fixtures of the flatopt Python tests.

These tests are meant to run against the *installed* package (bindings/python/run_tests.sh
installs it into a virtualenv and runs pytest from outside the source tree); the first line of
the report says which flatopt module and which shared library were imported.
"""

import importlib
import os
import sys
from pathlib import Path

import numpy as np
import pytest

import flatopt

REPO = Path(os.environ.get("FLATOPT_REPO", Path(__file__).resolve().parents[3]))
GOLDEN = REPO / "tests" / "data" / "braintools-0.4.0-dev.json"

# Lines the golden test wants printed at the end of the run (worst error per case).
REPORT = []

HAS_CHECKPOINTS = (
    flatopt._lib.optimizer_save is not None and flatopt._lib.optimizer_load is not None
)
needs_checkpoints = pytest.mark.skipif(
    not HAS_CHECKPOINTS,
    reason=f"the library ({flatopt.library_version}) has no flatopt_optimizer_save/load yet",
)


# Set by run_tests.sh for its run in the virtualenv of requirements-extras.txt: there, a test
# that needs JAX, brainstate, braintools or torch must run, so a missing module is a failure.
REQUIRE_EXTRAS = bool(os.environ.get("FLATOPT_REQUIRE_EXTRAS"))


def needs(module):
    """Imports an optional module (jax, brainstate, braintools, torch) or skips the calling
    test / test module with the reason (run_tests.sh prints it), or fails under
    FLATOPT_REQUIRE_EXTRAS."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        caller = sys._getframe(1).f_globals.get("__name__", "?")
        reason = (
            f"{caller}: {module} is not installed ({e}); `make test` installs it "
            "(bindings/python/requirements-extras.txt), or pip install "
            '"./bindings/python[jax]" / "[torch]"'
        )
        if REQUIRE_EXTRAS:
            pytest.fail(f"FLATOPT_REQUIRE_EXTRAS is set but {reason}", pytrace=False)
        pytest.skip(reason, allow_module_level=True)


def pytest_report_header(config):
    return [
        f"flatopt module: {flatopt.__file__}",
        f"flatopt library: {flatopt.library_path} (version {flatopt.library_version}, "
        f"tiers {', '.join(flatopt.simd_tiers())}, checkpoints "
        f"{'yes' if HAS_CHECKPOINTS else 'no'})",
    ]


def pytest_terminal_summary(terminalreporter):
    if REPORT:
        terminalreporter.section(
            "flatopt against braintools: golden file (0.4.0), seed examples (0.3.0)"
        )
        for line in REPORT:
            terminalreporter.write_line(line)


def grad_stream(shapes, seed):
    """Deterministic float32 gradients for step t: grad_stream(...)(t) -> list of arrays."""

    def at(t):
        rng = np.random.default_rng([seed, t])
        return [rng.standard_normal(s).astype(np.float32) for s in shapes]

    return at


_EXTENSION = {}  # the outcome of building flatopt.torch's C++ hand-over, once per session


def _torch_extension():
    """flatopt.torch's C++ hand-over module (built into the user's cache if needed), or the
    reason it cannot be had here."""
    if not _EXTENSION:
        from flatopt import _torch_ext

        if os.environ.get(_torch_ext.ENV, "1").strip() == "0":
            _EXTENSION["reason"] = f"{_torch_ext.ENV}=0 is set"
        else:
            try:
                _EXTENSION["module"] = _torch_ext._import(_torch_ext.build())
            except _torch_ext.BuildError as e:
                _EXTENSION["reason"] = str(e)
    return _EXTENSION.get("module"), _EXTENSION.get("reason")


@pytest.fixture(params=["python", "extension"])
def hand_over(request):
    """The per-step gradient hand-over of the flatopt.torch optimizers a test makes: the
    Python reads (what FLATOPT_TORCH_EXT=0 gives), or the C++ extension (skipped, with the
    reason, where it cannot be built). (Not through `monkeypatch`: tests undo theirs.)"""
    from flatopt import _torch_ext

    module = None
    if request.param == "extension":
        module, reason = _torch_extension()
        if module is None:
            pytest.skip(f"flatopt.torch's C++ hand-over is not available: {reason}")
    saved = _torch_ext._loaded
    _torch_ext._loaded = {"module": module}
    yield request.param
    _torch_ext._loaded = saved
