"""Validation of user buffers and zero-copy NumPy views of them.

A parameter must be updatable in place: a float32, C-contiguous, aligned, writeable block of
CPU memory. Accepted are NumPy arrays, PyTorch CPU tensors (viewed through ``.numpy()``, which
shares memory), and any object exposing its memory through ``__array_interface__`` or the
buffer protocol (``memoryview`` with format ``'f'``). Nothing is ever converted: a float64
array is an error, not a silent float32 copy that would be updated instead of the original.

Parameters arrive here one leaf at a time: flatopt._tree flattens the trees (nested dicts,
lists, tuples, JAX pytrees) and handles brainstate states (float32 host copies).

Gradients are only read, so read-only arrays are fine; they must be float32 and C-contiguous
too. Gradients passed with each ``update(grads)`` may in addition be any object whose
``__array__`` gives a float32 array (e.g. a JAX CPU array): a copy is read once, right away.
Gradients *registered* with the parameters are read at every later update, so they must be
viewed in place like parameters: an ``__array__``-only object or a NumPy scalar (``np.float32``,
an immutable value that ``np.asarray`` copies) is refused there, since later writes into the
object would never reach the copy (stale gradients, silently).
"""

from __future__ import annotations

import numpy as np

from ._errors import DTypeError, LayoutError, StructureError

F32 = np.dtype(np.float32)
_FLOAT_FORMATS = ("f", "<f", "=f", "@f")


def describe(obj):
    t = type(obj)
    mod = t.__module__
    return t.__qualname__ if mod in ("builtins", None) else f"{mod}.{t.__qualname__}"


def _is_torch_tensor(obj):
    t = type(obj)
    return t.__module__.startswith("torch") and hasattr(obj, "data_ptr") and hasattr(
        obj, "is_contiguous"
    )


def _torch_view(t, what):
    import torch  # imported only when a tensor is passed

    if t.device.type != "cpu":
        raise LayoutError(
            f"{what}: a torch tensor on device {t.device}: flatopt updates host memory; "
            "pass CPU tensors"
        )
    if t.dtype != torch.float32:
        raise DTypeError(
            f"{what}: torch dtype {t.dtype}, expected torch.float32 (flatopt never converts: "
            "updates are in place)"
        )
    try:
        contiguous = t.layout == torch.strided and t.is_contiguous()
        view = t.detach().numpy() if contiguous else None  # shares memory with the tensor
    except RuntimeError as e:  # e.g. a tensor with the negative or conjugate bit set
        raise LayoutError(f"{what}: the torch tensor's memory cannot be viewed in place: {e}")
    if view is None:
        raise LayoutError(
            f"{what}: the torch tensor is not contiguous (layout {t.layout}; call "
            ".contiguous() once, before registering, and keep that tensor)"
        )
    if view.size and view.__array_interface__["data"][0] != t.data_ptr():
        raise LayoutError(f"{what}: could not view the torch tensor's memory without a copy")
    return view


_HINT = (
    "a float32 NumPy array, a PyTorch CPU tensor, or an object exposing "
    "__array_interface__ or the buffer protocol"
)


def _interface_view(obj, what, in_place):
    """np.asarray(obj) for an object with ``__array_interface__`` (a view of the memory the
    interface exposes, never a copy), except a NumPy scalar, which NumPy copies."""
    if isinstance(obj, np.generic):
        if in_place:
            raise LayoutError(
                f"{what}: a NumPy scalar ({describe(obj)}) is an immutable value, not an array: "
                "it cannot be updated or read in place (np.asarray would copy it). Use a 0-d "
                "array, np.array(x, dtype=np.float32), and keep that array"
            )
        return np.asarray(obj)
    try:
        return np.asarray(obj)
    except (TypeError, ValueError, AttributeError) as e:
        raise DTypeError(f"{what}: {describe(obj)} has an unusable __array_interface__: {e}")


def _generic_view(obj, what, param, in_place):
    """A zero-copy ndarray over `obj` (any ndarray for a per-call gradient, which may be a
    copy: `in_place` False), or an error saying why there is none."""
    if hasattr(obj, "__array_interface__"):
        return _interface_view(obj, what, in_place or param)
    try:
        mv = memoryview(obj)
    except TypeError:
        mv = None
    if mv is not None:
        if mv.format not in _FLOAT_FORMATS or mv.itemsize != 4:
            raise DTypeError(
                f"{what}: buffer of format {mv.format!r} (itemsize {mv.itemsize}), expected "
                "float32 ('f')"
            )
        return np.asarray(mv)  # views the buffer (never copies)
    if hasattr(obj, "__array__"):
        if not (param or in_place):
            return np.asarray(obj)  # per-call gradients are read once: a copy is harmless
        if not param:
            raise DTypeError(
                f"{what}: {describe(obj)} offers only __array__, which may give a copy, so "
                "writes into it after registration would never be seen (stale gradients). "
                f"Register {_HINT}, or pass such gradients with each update(grads)"
            )
    if isinstance(obj, (dict, list, tuple)):
        raise StructureError(
            f"{what}: a {describe(obj)} where an array was expected (the parameter registered "
            f"there is an array: pass {_HINT})"
        )
    raise DTypeError(f"{what}: {describe(obj)} is not an array: pass {_HINT}")


def as_view(obj, what, param, in_place=True):
    """Returns an ndarray viewing `obj`'s memory after checking everything flatopt needs.

    `param`: True for a parameter (must be writeable and viewable without a copy).
    `in_place`: False for a gradient passed with one update, which may be read from a copy;
    True (the default) for a registered gradient, read at every later update."""
    if isinstance(obj, np.ndarray):
        arr = obj
    elif param and type(obj).__module__.startswith(("jax", "jaxlib")):
        raise LayoutError(
            f"{what}: a JAX array is immutable, but parameters are updated in place: register "
            "brainstate states (e.g. model.states(brainstate.ParamState)), whose values "
            "flatopt assigns after each update, or NumPy arrays"
        )
    elif _is_torch_tensor(obj):
        arr = _torch_view(obj, what)
    else:
        arr = _generic_view(obj, what, param, in_place)
    check_array(arr, what, param)
    return arr


def check_array(arr, what, param):
    if arr.dtype != F32:
        extra = ""
        if arr.dtype.kind == "f" and arr.dtype.itemsize == 4:
            extra = " (non-native byte order)"
        raise DTypeError(
            f"{what}: dtype {arr.dtype}{extra}, expected float32. flatopt never converts "
            "(updates are in place): convert once, e.g. arr = arr.astype(np.float32), and use "
            "that array from then on"
        )
    if not arr.flags.c_contiguous:
        raise LayoutError(
            f"{what}: the array is not C-contiguous (strides {arr.strides} for shape "
            f"{arr.shape}): pass a contiguous array, e.g. np.ascontiguousarray(arr) once, and "
            "use that array from then on"
        )
    if not arr.flags.aligned:
        raise LayoutError(f"{what}: the array's memory is not aligned to 4 bytes")
    if param and not arr.flags.writeable:
        raise LayoutError(
            f"{what}: the array is read-only, but parameters are updated in place"
        )


def pointer(arr):
    """The address of an ndarray's first element (0 for an empty array)."""
    return arr.__array_interface__["data"][0] if arr.size else 0


# --- 16-bit floats (mixed precision) ------------------------------------------------------
# Gradients and parameter copies may be bf16 or fp16: NumPy float16 arrays, ml_dtypes.bfloat16
# arrays (the NumPy bf16 dtype JAX uses; imported by the caller, never here) or PyTorch
# bfloat16 / float16 CPU tensors. The library reads and writes their bit patterns, so each is
# viewed in place as a uint16 array of the same memory; the format travels beside it.

F16 = np.dtype(np.float16)
U16 = np.dtype(np.uint16)
# flatopt_dtype values (include/flatopt.h).
DTYPE_F32, DTYPE_BF16, DTYPE_F16 = 0, 1, 2
DTYPE_NAMES = {DTYPE_F32: "float32", DTYPE_BF16: "bfloat16", DTYPE_F16: "float16"}

_HALF_HINT = (
    "a NumPy float16 array, an ml_dtypes.bfloat16 array, or a PyTorch bfloat16 / float16 CPU "
    "tensor"
)


def half_code(dtype):
    """The flatopt_dtype of a NumPy dtype (float32, float16 or ml_dtypes' bfloat16), or None."""
    if dtype == F32:
        return DTYPE_F32
    if dtype == F16:
        return DTYPE_F16
    if dtype.name == "bfloat16" and dtype.itemsize == 2:
        return DTYPE_BF16
    return None


def _torch_half_view(t, what, writable):
    import torch

    if t.device.type != "cpu":
        raise LayoutError(f"{what}: a torch tensor on device {t.device}: pass CPU tensors")
    codes = {torch.bfloat16: DTYPE_BF16, torch.float16: DTYPE_F16, torch.float32: DTYPE_F32}
    code = codes.get(t.dtype)
    if code is None:
        raise DTypeError(
            f"{what}: torch dtype {t.dtype}, expected torch.bfloat16, torch.float16 or "
            "torch.float32"
        )
    if not (t.layout == torch.strided and t.is_contiguous()):
        raise LayoutError(
            f"{what}: the torch tensor is not contiguous (call .contiguous() once and keep "
            "that tensor)"
        )
    base = t.detach()  # writes go through its memory, as writes under torch.no_grad() do
    if code == DTYPE_F32:
        view = base.numpy()
    else:
        # The same memory reinterpreted as int16 (no copy), viewed as uint16 bit patterns.
        view = base.view(torch.int16).numpy().view(U16)
    if view.size and view.__array_interface__["data"][0] != t.data_ptr():
        raise LayoutError(f"{what}: could not view the torch tensor's memory without a copy")
    return view, code


def as_mixed_view(obj, what, *, writable, in_place=True, allow_f32=True):
    """A zero-copy view of a gradient (``writable`` False) or a parameter copy (True) in any
    format flatopt reads: (ndarray, flatopt_dtype code). 16-bit arrays are viewed as uint16
    bit patterns of the same memory; anything else goes through :func:`as_view` (float32, the
    same checks and messages as without mixed precision) when ``allow_f32``."""
    if _is_torch_tensor(obj):
        arr, code = _torch_half_view(obj, what, writable)
        if code == DTYPE_F32:
            if not allow_f32:
                raise DTypeError(
                    f"{what}: torch dtype torch.float32, expected torch.bfloat16 or "
                    "torch.float16: a copy of the parameters is 16-bit"
                )
            check_array(arr, what, writable)
        elif writable and not arr.flags.writeable:
            raise LayoutError(f"{what}: the tensor is read-only, but the copy is written in place")
        return arr, code
    arr = None
    if isinstance(obj, np.ndarray):
        arr = obj
    elif hasattr(obj, "__array_interface__") and not isinstance(obj, np.generic):
        arr = _interface_view(obj, what, True)
    code = None if arr is None else half_code(arr.dtype)
    if code in (DTYPE_BF16, DTYPE_F16):
        if not arr.flags.c_contiguous:
            raise LayoutError(
                f"{what}: the array is not C-contiguous (strides {arr.strides} for shape "
                f"{arr.shape}): pass a contiguous array"
            )
        if not arr.flags.aligned:
            raise LayoutError(f"{what}: the array's memory is not aligned to 2 bytes")
        if writable and not arr.flags.writeable:
            raise LayoutError(f"{what}: the array is read-only, but the copy is written in place")
        return arr.view(U16), code
    if not allow_f32:
        shown = arr.dtype if arr is not None else describe(obj)
        raise DTypeError(
            f"{what}: {shown}, expected float16 or bfloat16 ({_HALF_HINT}): a copy of the "
            "parameters is 16-bit"
        )
    return as_view(obj, what, writable, in_place), DTYPE_F32
