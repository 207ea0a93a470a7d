"""Checks of the arguments of every public function, one helper per kind of argument.

Each helper takes the argument's name and the value the user gave, and returns the value
converted for the library (a Python ``float`` for a C ``double``, an ``int`` known to fit its
C integer type, ...) or raises :class:`~flatopt.InvalidArgumentError` (a wrong value) or
:class:`~flatopt.ArgumentTypeError` (a value of the wrong type) with a message that names the
argument and shows the value. Nothing reaches ctypes unchecked: ctypes silently truncates an
integer to its C type (``2**32 + 2`` becomes 2 as a ``uint32_t``) and raises its own bare
``TypeError`` / ``OverflowError`` for the rest.

The domains of the values (``lr > 0``, ``0 <= b1 < 1``, representable as float32, ...) are the
library's to check, with its own messages; these helpers check what Python must check before
the call: the type, that a number converts to a C double or fits its integer type, and the
Python-only choices (strings naming an option).
"""

from __future__ import annotations

import math
import os

import numpy as np

from ._errors import ArgumentTypeError, InvalidArgumentError

U32_MAX = 2**32 - 1
U64_MAX = 2**64 - 1


def show(value):
    """The value as it appears in a message: its repr, shortened if long (an int of 400
    digits, a long list); never fails (``repr`` of a huge int raises on Python >= 3.11)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"{'-' if value < 0 else ''}<an integer of {value.bit_length()} bits>"
    try:
        text = repr(value)
    except Exception:  # a broken __repr__ or an int too long to print
        return f"<{type(value).__name__} object>"
    return text if len(text) <= 80 else text[:60] + "..." + text[-12:]


def _is_bool(value):
    return isinstance(value, (bool, np.bool_))


def real(name, value):
    """A number (int, float, NumPy scalar or 0-d array, anything with ``__float__`` that is
    not a bool or a string) as a Python float that a C double holds. Infinity and NaN pass
    here (the library refuses them where they are not allowed, with its own message); a
    number too large for a double (``10**400``) does not."""
    if (
        value is None
        or _is_bool(value)
        or isinstance(value, (str, bytes, bytearray))
        or (isinstance(value, np.ndarray) and value.ndim != 0)
        or not hasattr(value, "__float__")
    ):
        raise ArgumentTypeError(
            f"invalid {name} = {show(value)}: must be a number, got {type(value).__name__}"
        )
    try:
        return float(value)
    except OverflowError:
        raise InvalidArgumentError(
            f"invalid {name} = {show(value)}: too large for a double"
        ) from None
    except (TypeError, ValueError) as e:
        raise ArgumentTypeError(f"invalid {name} = {show(value)}: must be a number ({e})") from None


def finite(name, value):
    """A finite :func:`real`."""
    out = real(name, value)
    if not math.isfinite(out):
        raise InvalidArgumentError(f"invalid {name} = {show(value)}: must be finite")
    return out


def nonneg_finite(name, value, quantity, given=None):
    """``value`` (a :func:`real`) if it is finite and >= 0; else InvalidArgumentError naming
    ``name`` and the ``quantity`` ("the learning rate"), showing ``given`` (the argument as the
    caller wrote it; default ``value``)."""
    if not value >= 0.0 or math.isinf(value):
        raise InvalidArgumentError(
            f"invalid {name} = {show(value if given is None else given)}: {quantity} must be "
            "finite and >= 0"
        )
    return value


def optional_real(name, value, off=0.0):
    """None means "off" (the C value ``off``); anything else is a :func:`real`."""
    return off if value is None else real(name, value)


def integer(name, value, lo=0, hi=U64_MAX):
    """An integer in ``[lo, hi]`` (the range of the C type it is passed as, or narrower):
    an int, a NumPy integer, or a float with an integral value (``3.0``). Never truncated."""
    if _is_bool(value):
        raise ArgumentTypeError(f"invalid {name} = {show(value)}: must be an integer, got bool")
    if isinstance(value, (int, np.integer)):
        out = int(value)
    elif isinstance(value, (float, np.floating)):
        f = float(value)
        if not math.isfinite(f) or f != math.floor(f):
            raise InvalidArgumentError(
                f"invalid {name} = {show(value)}: must be an integer in {_range(lo, hi)}"
            )
        out = int(f)
    else:
        raise ArgumentTypeError(
            f"invalid {name} = {show(value)}: must be an integer, got {type(value).__name__}"
        )
    if out < lo or out > hi:
        raise InvalidArgumentError(
            f"invalid {name} = {show(value)}: must be an integer in {_range(lo, hi)}"
        )
    return out


def _range(lo, hi):
    names = {U32_MAX: "2**32 - 1", U64_MAX: "2**64 - 1"}
    return f"[{lo}, {names.get(hi, hi)}]"


def flag(name, value):
    """A boolean: ``True`` / ``False`` (also NumPy's, and the integers 0 and 1). A string
    (``"no"`` would be true) or anything else is refused."""
    if _is_bool(value):
        return bool(value)
    if isinstance(value, (int, np.integer)) and int(value) in (0, 1):
        return bool(value)
    raise ArgumentTypeError(f"invalid {name} = {show(value)}: must be True or False")


def choice(name, value, choices):
    """One of the keys of ``choices`` (a dict key -> what the library takes); returns the
    mapped value. Unhashable values (a list) are refused like any other."""
    try:
        found = value in choices
    except TypeError:
        found = False
    if not found or isinstance(value, bool):
        raise InvalidArgumentError(
            f"invalid {name} = {show(value)}: must be one of {', '.join(map(repr, choices))}"
        )
    return choices[value]


def sequence(name, value):
    """A list or tuple (or any sized iterable that is not a string, a dict or an array
    element): its items as a list."""
    if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__iter__"):
        raise ArgumentTypeError(
            f"invalid {name} = {show(value)}: must be a list or tuple, got "
            f"{type(value).__name__}"
        )
    try:
        return list(value)
    except TypeError as e:
        raise ArgumentTypeError(f"invalid {name} = {show(value)}: {e}") from None


def pair(name, value):
    """Two numbers (``betas``): a list or tuple of two :func:`real`."""
    items = sequence(name, value)
    if len(items) != 2:
        raise InvalidArgumentError(
            f"invalid {name} = {show(value)}: must be a pair (b1, b2), got {len(items)} items"
        )
    for item in items:
        try:
            real(name, item)
        except InvalidArgumentError as e:
            raise type(e)(f"invalid {name} = {show(value)}: must be a pair of numbers") from None
    return real(name, items[0]), real(name, items[1])


def blob(name, value):
    """Bytes of a checkpoint: ``bytes``, ``bytearray`` or a contiguous ``memoryview`` of bytes
    (an int would otherwise make ``bytes(n)``: n zero bytes)."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, memoryview) and value.c_contiguous:
        return value.tobytes()
    raise ArgumentTypeError(
        f"invalid {name} = {show(value)}: must be bytes (a checkpoint), got "
        f"{type(value).__name__}"
    )


def path(name, value):
    """A file name for the C library: ``str``, ``bytes`` or ``os.PathLike``, as bytes in the
    file-system encoding. An embedded NUL byte (which C would take as the end of the name, so
    ``"model\\0.ckpt"`` would become ``"model"``) is refused, as is an empty name."""
    try:
        p = os.fspath(value)
    except TypeError:
        raise ArgumentTypeError(
            f"invalid {name} = {show(value)}: must be a str, bytes or os.PathLike file name, "
            f"got {type(value).__name__}"
        ) from None
    try:
        encoded = os.fsencode(p)
    except (UnicodeError, TypeError) as e:
        raise InvalidArgumentError(f"invalid {name} = {show(value)}: {e}") from None
    if b"\0" in encoded:
        raise InvalidArgumentError(
            f"invalid {name} = {show(value)}: a file name cannot contain a NUL character"
        )
    if not encoded:
        raise InvalidArgumentError(f"invalid {name} = {show(value)}: an empty file name")
    return encoded
