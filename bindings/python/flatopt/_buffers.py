"""Validation of user buffers and zero-copy NumPy views of them.

A parameter must be updatable in place: a float32, C-contiguous, aligned, writeable block of
CPU memory. Accepted are NumPy arrays, PyTorch CPU tensors (viewed through ``.numpy()``, which
shares memory), and any object exposing its memory through ``__array_interface__`` or the
buffer protocol (``memoryview`` with format ``'f'``). Nothing is ever converted: a float64
array is an error, not a silent float32 copy that would be updated instead of the original.

Gradients are only read, so read-only arrays are fine; they must be float32 and C-contiguous
too, and may in addition be any object whose ``__array__`` gives a float32 array (e.g. a JAX
CPU array).
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
    if not t.is_contiguous():
        raise LayoutError(
            f"{what}: the torch tensor is not contiguous (call .contiguous() once, before "
            "registering, and keep that tensor)"
        )
    view = t.detach().numpy()  # shares memory with the tensor
    if view.size and view.__array_interface__["data"][0] != t.data_ptr():
        raise LayoutError(f"{what}: could not view the torch tensor's memory without a copy")
    return view


def _generic_view(obj, what, param):
    """A zero-copy ndarray over `obj`, or an error saying why there is none."""
    if hasattr(obj, "__array_interface__"):
        return np.asarray(obj)  # views the exposed memory (never copies)
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
    if not param and hasattr(obj, "__array__"):
        return np.asarray(obj)  # gradients are only read: a copy would be harmless
    hint = (
        "a float32 NumPy array, a PyTorch CPU tensor, or an object exposing "
        "__array_interface__ or the buffer protocol"
    )
    if isinstance(obj, (dict, list, tuple)):
        raise StructureError(
            f"{what}: a {describe(obj)} where an array was expected (nested structures are "
            f"not supported: pass a flat dict or list of arrays, each {hint})"
        )
    raise DTypeError(f"{what}: {describe(obj)} is not an array: pass {hint}")


def as_view(obj, what, param):
    """Returns an ndarray viewing `obj`'s memory after checking everything flatopt needs.

    `param`: True for a parameter (must be writeable and viewable without a copy)."""
    if isinstance(obj, np.ndarray):
        arr = obj
    elif _is_torch_tensor(obj):
        arr = _torch_view(obj, what)
    else:
        arr = _generic_view(obj, what, param)
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
