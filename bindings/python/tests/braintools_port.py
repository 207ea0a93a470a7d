"""What the ported braintools tests (test_braintools_port_*.py) share: their optional modules,
imported on first use (a test using one is skipped without it), whether the tests registering
brainstate states can run, and the strict xfail marks of the tests that fail on flatopt."""

import pytest


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
    """Whether the tests that register brainstate states can run: brainstate is importable
    (flatopt registers states since issue 13; a failure to register is then a failure of the
    test, not a skip)."""
    try:
        import brainstate  # noqa: F401
    except ImportError:
        return False
    return True


NEEDS_STATES = (
    "registers brainstate states: needs brainstate (pip install './bindings/python[jax]')"
)


def mark_failing(namespace, failing):
    """Marks each ``"Class::test"`` of ``failing`` (-> reason) in a module's ``namespace`` as a
    strict xfail: it must fail, and a test that starts to pass fails until its mark goes."""
    for key, reason in failing.items():
        cls_name, name = key.split("::")
        cls = namespace[cls_name]
        setattr(cls, name, pytest.mark.xfail(strict=True, reason=reason)(getattr(cls, name)))
