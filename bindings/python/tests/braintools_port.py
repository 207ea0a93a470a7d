"""What the ported braintools tests (test_braintools_port_*.py) share: their optional modules,
imported on first use (a test using one is skipped without it), whether this flatopt registers
brainstate states, and the strict xfail marks of the tests that fail on flatopt."""

import pytest

import flatopt


class Optional:
    """A module imported on first use; the test using it is skipped when it is missing."""

    def __init__(self, name):
        self._name = name

    def __getattr__(self, attr):
        if attr.startswith("_") or attr == "pytestmark":  # pytest's collection looking
            raise AttributeError(attr)
        mod = pytest.importorskip(
            self._name, reason=f"needs {self._name} (pip install './bindings/python[jax]')"
        )
        return getattr(mod, attr)


def takes_states():
    """Whether this flatopt registers brainstate states (False also without brainstate: the
    tests that use them are skipped anyway)."""
    try:
        import brainstate
        import numpy

        flatopt.SGD().register_trainable_weights(
            {"w": brainstate.ParamState(numpy.zeros(2, "f4"))}
        )
        return True
    except (ImportError, flatopt.FlatoptError):
        return False


NEEDS_STATES = "registers brainstate states, which this flatopt does not take yet"


def mark_failing(namespace, failing):
    """Marks each ``"Class::test"`` of ``failing`` (-> reason) in a module's ``namespace`` as a
    strict xfail: it must fail, and a test that starts to pass fails until its mark goes."""
    for key, reason in failing.items():
        cls_name, name = key.split("::")
        cls = namespace[cls_name]
        setattr(cls, name, pytest.mark.xfail(strict=True, reason=reason)(getattr(cls, name)))
