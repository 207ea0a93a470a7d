"""Exceptions. Every one derives from :class:`FlatoptError` and from the built-in exception a
Python user would expect (``TypeError`` for a wrong dtype, ``ValueError`` for a wrong value,
length, layout or structure, ...), so both ``except flatopt.FlatoptError`` and
``except ValueError`` work.

When an exception is raised, nothing has changed: parameters, optimizer state, counters and
schedule are as they were before the call.
"""


class FlatoptError(Exception):
    """Base class of every flatopt exception. ``status`` is the C status code, or ``None`` when
    the error was detected by the Python binding before calling the library."""

    def __init__(self, message, status=None):
        super().__init__(message)
        self.status = status


class DTypeError(FlatoptError, TypeError):
    """An array of the wrong dtype, an object that is not an array at all, or (as
    :class:`ArgumentTypeError`) an argument of the wrong type. flatopt updates
    parameters in place and never makes a silent converted copy."""


class LayoutError(FlatoptError, ValueError):
    """An array whose memory cannot be updated in place: non-contiguous, read-only, misaligned,
    or on a device other than the CPU."""


class StructureError(FlatoptError, ValueError):
    """Gradients whose structure differs from the registered parameters: missing or extra
    keys, another number of arrays, another shape, or no parameters at all."""


class InvalidArgumentError(FlatoptError, ValueError):
    """A hyperparameter or argument outside its domain (the message names it and its value)."""


class ArgumentTypeError(DTypeError, InvalidArgumentError):
    """An argument of the wrong type: ``None``, a string or a list where a number is expected,
    a string where ``True`` / ``False`` is. Both a ``TypeError`` and a ``ValueError`` (and a
    :class:`DTypeError` and an :class:`InvalidArgumentError`), so code catching either keeps
    working; the message names the argument and its value."""


class LengthMismatchError(FlatoptError, ValueError):
    """A length differs from the registered or expected one."""


class NonFiniteError(FlatoptError, FloatingPointError):
    """A gradient holds NaN or Inf and the policy is ``nonfinite="error"``. The update was
    skipped (nothing changed except the ``skipped_count`` counter)."""


class InvalidStateError(FlatoptError, RuntimeError):
    """The call is not allowed now (for example ``update`` before
    ``register_trainable_weights``)."""


class UnsupportedError(FlatoptError, NotImplementedError):
    """A feature this library build or this CPU does not have."""


class OverlapError(FlatoptError, ValueError):
    """Buffers that must be disjoint share memory (a parameter and a gradient, or two
    parameters)."""


class CheckpointError(FlatoptError, ValueError):
    """A checkpoint (``state_dict``) that does not match this optimizer or failed
    validation."""


class CheckpointIOError(FlatoptError, OSError):
    """A checkpoint file could not be read or written."""


class InternalError(FlatoptError, RuntimeError):
    """A bug in flatopt, caught at the library boundary: please report it."""


class BusyError(FlatoptError, RuntimeError):
    """The optimizer is being used by another thread at the same time: one optimizer, one
    thread at a time (nothing changed)."""
