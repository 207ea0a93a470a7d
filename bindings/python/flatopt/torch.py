"""PyTorch drop-in optimizers: ``torch.optim.Optimizer`` subclasses whose step is flatopt's.

Change one import line::

    from flatopt.torch import AdamW          # was: from torch.optim import AdamW
    opt = AdamW(model.parameters(), lr=3e-4, weight_decay=0.1)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=1000)
    for x, y in data:
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
        sched.step()
    torch.save(opt.state_dict(), "opt.pt")   # PyTorch's layout: exp_avg, exp_avg_sq, step

:class:`SGD`, :class:`Adam`, :class:`AdamW`, :class:`RAdam`, :class:`Adagrad`,
:class:`RMSprop`, :class:`Adamax`, :class:`NAdam`, :class:`Adadelta` and :class:`Rprop` take
PyTorch's arguments with PyTorch's defaults; :class:`Lion`, :class:`AdaBelief` and
:class:`Yogi` (no torch.optim class) those of their common PyTorch packages (lion-pytorch,
adabelief-pytorch's names for the state, torch-optimizer) with optax's rules; :class:`Lamb`,
:class:`Lars` and :class:`Novograd` (no torch.optim class either) PyTorch-style signatures
(``params, lr, betas, eps, weight_decay``, ...) with optax's rules; :class:`Adafactor` is
``torch.optim.Adafactor`` (PyTorch's signature, defaults and factoring: a parameter of two
or more dims keeps row and column averages over its last two). All take two
arguments of flatopt's:
``max_grad_norm`` (clipping by the global norm of the gradients, ``clip_grad_norm_``'s
semantics, done in flatopt's own norm pass instead of a separate one) and ``num_threads``
(default None: the step runs on PyTorch's own intra-op threads, through the C++ extension's
split step, where that extension is built with OpenMP on torch's runtime, else on the calling
thread; a number: a pool of flatopt's own; LAMB, LARS, NovoGrad and Adafactor, whose updates
need whole-buffer norms first, always run on flatopt's threads; see docs/torch.md, "OpenMP
interference").
:class:`Lookahead` (timm's ``Lookahead(optimizer, k, alpha)``) fuses the slow-weight sync into
the same pass.

How it maps onto the library:

* Every parameter group is a flatopt parameter group. Its hyperparameters are read at every
  ``step()`` (a comparison per group) and take effect when they changed, as in PyTorch, so
  LR schedulers drive these optimizers unchanged: ``lr``, ``weight_decay`` and the others
  (``betas``, ``eps``, ``momentum``, ...; e.g. ``OneCycleLR(cycle_momentum=True)``) are
  handed to the library's group (no allocation); a change that adds or drops a state array
  (``amsgrad``, ``momentum`` from or to 0, ``centered``) rebuilds the handles holding the
  group's parameters, their state copied over bit for bit. An invalid value raises at that
  step and changes nothing.
* Gradients are handed over as pointers at every step (``zero_grad(set_to_none=True)`` makes new
  gradient tensors each step), then one foreign call for the whole step. The hand-over is one
  call into a small C++ extension (``_torch_handover.cpp``) that reads the C++ gradients
  without making their Python objects: compiled against the installed torch at the first
  optimizer of a process that finds no build (about 12 s once, if a C++ compiler is found;
  cached under ``~/.cache/flatopt/torch-ext``; ``FLATOPT_TORCH_EXT=0`` turns it off,
  :func:`build_extension` or ``python -m flatopt.torch --build-ext`` builds it ahead of time).
  Without it, the same checks from Python: one ``.grad`` read, one ``data_ptr()`` and one
  contiguity check per tensor and a ``data_ptr()`` per parameter (has its storage moved?).
* A parameter whose ``.grad`` is ``None`` in a step is skipped with its state untouched, as in
  PyTorch: flatopt keeps one library handle per *cohort* of parameters that have been updated
  the same number of times (PyTorch's per-parameter ``step``). All parameters start in one
  cohort; a step in which only part of a cohort has gradients splits it in two (its state
  moves into two new handles once, bit for bit), after which each cohort steps with one
  foreign call. Parameters that never get a gradient (frozen ones) thus cost nothing after the
  first step. Limits: ``max_grad_norm`` needs the parameters with gradients in a step to form
  one cohort (else :class:`flatopt.UnsupportedError`); under :class:`Lookahead` each cohort
  counts its own updates towards the sync period.
* ``state_dict()`` is PyTorch's layout (``state[i]`` with tensors ``step``, ``exp_avg``,
  ``exp_avg_sq``, ``max_exp_avg_sq``, ``momentum_buffer``, ``sum``, ``square_avg``,
  ``grad_avg``, ``exp_inf``, ``mu_product``, ``acc_delta``, ``prev``, ``step_size``,
  ``exp_avg_var``, Adafactor's ``row_var`` / ``col_var`` (shapes ``(..., rows, 1)`` and
  ``(..., 1, cols)``) or ``variance``, ``lookahead_slow_buff``; ``param_groups`` with the
  hyperparameters), read out
  of the library's checkpoint; ``load_state_dict()`` writes the tensors back into checkpoints
  of the library, so a restored optimizer continues bit for bit as the uninterrupted one.
  ``opt.state`` is the snapshot of the last ``state_dict()`` / ``load_state_dict()``; the live
  state is in the library.
* Compressed state (docs/numerics.md, "Compressed state"): ``state_dtype="bfloat16"`` or
  ``"int8"``, ``state_rounding``, ``state_seed`` on every optimizer, ``slow_dtype`` on
  :class:`Lookahead`. ``state_dict()`` carries the state as held: bfloat16 tensors, or uint8
  codes with their float32 block scales under ``<key>_absmax`` (``exp_avg``,
  ``exp_avg_absmax``); ``load_state_dict()`` restores them bit for bit, and converts a state
  dict of another precision through the library's checkpoint load.
* Non-finite gradients propagate into the parameters as in PyTorch (``nonfinite="propagate"``).
  ``torch.amp.GradScaler`` treats these optimizers as PyTorch's fused ones
  (``_step_supports_amp_scaling``): ``GradScaler.step`` checks the gradients for inf/NaN and
  sets ``opt.grad_scale`` and ``opt.found_inf``; ``step()`` then does nothing when an inf was
  found (parameters, state and step counts untouched; ``update()`` backs the scale off) and
  otherwise divides the gradients by the scale inside flatopt's pass
  (``flatopt_optimizer_step_mixed``), so GradScaler's unscaling pass is not made.
  :class:`GradScaler` (``torch.amp.GradScaler`` with the same arguments and bits) also leaves
  the inf/NaN check to flatopt's pass where that costs less than GradScaler's own pass (with
  ``max_grad_norm``, whose norm pass makes the check, or when every parameter is 16-bit).
* bfloat16 and float16 parameters (a model kept in 16 bits: ``model.to(torch.bfloat16)``) get
  float32 master weights inside the optimizer, made from their values at construction: the
  pass reads the 16-bit gradients, updates the masters and the float32 state and writes the
  masters rounded to nearest even into the 16-bit parameters (the library's copy buffer), all
  in one pass over memory. Float32 and 16-bit parameters mix freely. ``state_dict()`` carries
  each 16-bit parameter's masters as the float32 tensor ``master_param`` beside its (float32)
  moments; ``load_state_dict()`` restores them (and, unlike torch.optim, does not cast the
  state to the parameter's dtype), or takes them from the parameters' values when a state has
  none (a torch.optim state dict). Weights written by the user after the optimizer was built
  (``model.load_state_dict``, ``torch.nn.init``, ``p.copy_``, ``p.data = ...``) become the
  masters at the next step: the parameters' version counters (one read per 16-bit parameter
  and step) and addresses tell; a written one's masters are refreshed in place. (Writes
  through ``p.data.copy_(...)`` bypass the version counter and are overwritten by the next
  step.)
* Refused, naming the parameter: tensors that are not CPU, strided, contiguous and float32,
  bfloat16 or float16 (CUDA, sparse, complex, float64, integers, non-contiguous);
  ``maximize=True``, ``capturable``, ``differentiable``; gradients that are sparse or
  non-contiguous, or of another dtype than their parameter (torch >= 2.9 after
  ``p.grad_dtype = None``; checked on every step).

The numerics (and how they differ from torch.optim: float32 arithmetic throughout, no FMA) are
docs/numerics.md in the repository.
"""

from __future__ import annotations

import ctypes
import functools
import math
import struct
import zlib
from collections import OrderedDict

import torch
try:
    from torch.amp.grad_scaler import GradScaler as _TorchGradScaler
    from torch.amp.grad_scaler import OptState as _OptState
except ImportError:  # torch < 2.3: the CUDA one (disabled without CUDA: its plain path)
    from torch.cuda.amp.grad_scaler import GradScaler as _TorchGradScaler
    from torch.cuda.amp.grad_scaler import OptState as _OptState
from torch.optim import Optimizer as _TorchOptimizer

try:
    from torch.optim.optimizer import _global_optimizer_post_hooks as _GLOBAL_POST_HOOKS
    from torch.optim.optimizer import _global_optimizer_pre_hooks as _GLOBAL_PRE_HOOKS

    _profiling = torch.autograd._profiler_enabled
except (ImportError, AttributeError):  # another PyTorch: its own wrapper, always
    _GLOBAL_PRE_HOOKS = None

from . import _lib, _torch_ext
from ._errors import (
    CheckpointError,
    DTypeError,
    InternalError,
    InvalidArgumentError,
    InvalidStateError,
    LayoutError,
    UnsupportedError,
)
from ._optim import _STATE_DEFAULTS, _check_state_options, _state
from ._schedules import _Handle

__all__ = [
    "SGD", "Adam", "AdamW", "RAdam", "Adagrad", "RMSprop", "Adamax", "NAdam", "Adadelta",
    "Rprop", "Lion", "AdaBelief", "Yogi", "Lamb", "Lars", "Novograd", "Adafactor", "Lookahead",
    "GradScaler", "build_extension",
]

# The per-step hot path calls these C-level methods through `map` (no attribute lookup, no
# bound method per tensor). The `.grad` reads are a comprehension instead: CPython 3.11+
# specializes the attribute read, which beats calling the getter's method-wrapper.
_GRAD = torch._C.TensorBase.grad.__get__
_PTR = torch._C.TensorBase.data_ptr
_CONTIG = torch._C.TensorBase.is_contiguous
_DTYPE = torch._C.TensorBase.dtype.__get__
_VERSION = torch._C.TensorBase._version.__get__


# 16-bit parameters: the library's format code of each (gradients and the model-weight copy).
_HALF = {torch.bfloat16: _lib.DTYPES["bf16"], torch.float16: _lib.DTYPES["f16"]}
_FLOATS = (torch.float32, torch.bfloat16, torch.float16)

# Checkpoint layout (docs/checkpoint-format.md): the counters after the configuration section,
# the buffer records at the end, before the CRC-32.
_HEADER = 40
_COUNTERS = 72  # applied, skipped, e, T_cur, T_i, plateau lr, best, bad epochs, cooldown
_ARRAYS = ("m", "v", "v_max", "slow")
# How the library holds an array (flatopt_state_dtype): float32, bfloat16, or 8-bit codes with
# one float32 scale per block of 256 elements (docs/checkpoint-format.md, version 4).
_F32, _BF16, _Q8 = (_lib.STATE_DTYPES[k] for k in ("float32", "bfloat16", "int8"))
_Q8_BLOCK = 256
_FORMAT_NAMES = {v: k for k, v in _lib.STATE_DTYPES.items()}
_F32_EPS = float(torch.finfo(torch.float32).eps)  # Adafactor's eps[0] when None


def _blocks(n):
    return -(-n // _Q8_BLOCK)


def _array_size(fmt, n):
    """Bytes of an array of `n` elements held in format `fmt` in a checkpoint."""
    if fmt == _BF16:
        return 2 * n
    if fmt == _Q8:
        return n + 4 * _blocks(n)
    return 4 * n


def _format_of(value):
    """The format a state value is held in: a float32 tensor (or any float, taken as float32),
    a bfloat16 tensor, or a (uint8 codes, float32 block scales) pair."""
    if isinstance(value, tuple):
        return _Q8
    return _BF16 if value.dtype == torch.bfloat16 else _F32


def _read_array(blob, pos, fmt, shape):
    """The array of `shape` (a parameter's, or a factored second moment's) held at `pos` of a
    checkpoint, as held (a copy)."""
    n = math.prod(shape)

    def take(start, count, dtype):
        size = count * torch.empty((), dtype=dtype).element_size()
        return torch.frombuffer(bytearray(blob[start : start + size]), dtype=dtype)

    if fmt == _Q8:
        return take(pos, n, torch.uint8).view(shape), take(pos + n, _blocks(n), torch.float32)
    return take(pos, n, torch.bfloat16 if fmt == _BF16 else torch.float32).view(shape)


def _array_bytes(value, fmt, shape, name):
    """The checkpoint bytes of state value `value`, an array of `shape` (its parameter's, or a
    factored second moment's), held in format `fmt` (its own format, or float32 for a bfloat16
    one: exact)."""
    n = math.prod(shape)
    if fmt == _Q8:
        codes, scales = value
        if codes.numel() != n or scales.numel() != _blocks(n):
            raise CheckpointError(
                f"an 8-bit state '{name}' has {codes.numel()} codes and {scales.numel()} block "
                f"scales, its parameter of {n} elements needs {n} and {_blocks(n)}"
            )
        if not scales.is_floating_point():
            raise CheckpointError(f"the block scales of state '{name}' must be float32, got "
                                  f"{scales.dtype}")
        return (codes.detach().contiguous().reshape(-1).numpy().tobytes()
                + scales.detach().to(torch.float32).contiguous().reshape(-1).numpy().tobytes())
    value = value.detach()
    if value.numel() != n:
        raise CheckpointError(
            f"a state tensor '{name}' has {value.numel()} elements, its parameter {n}"
        )
    if fmt == _BF16:
        return value.contiguous().reshape(-1).view(torch.int16).numpy().tobytes()
    return value.to(torch.float32).contiguous().reshape(-1).numpy().tobytes()


def _one_format(found, held, what):
    """The format to write a cohort's `what` arrays in, from the formats of the values given
    (`found`): the held one when none is given, else theirs; bfloat16 beside float32 widens
    to float32 (exact); 8-bit codes beside anything else cannot be written in one format."""
    if not found:
        return held
    if len(found) == 1:
        return next(iter(found))
    if _Q8 in found:
        raise CheckpointError(
            f"the {what} arrays of parameters updated alike are held in several formats "
            f"({', '.join(sorted(_FORMAT_NAMES[f] for f in found))}), 8-bit codes among them: "
            "load a state dict saved by one optimizer"
        )
    return _F32


def _array_shape(p, rc, name):
    """The shape of state array `name` of parameter `p` registered with the 2-D shape `rc`
    (or None): the parameter's, but for a factored second moment (`v` of a shaped buffer),
    rows + cols averages per matrix, flat."""
    if rc is None or name != "v":
        return tuple(p.shape)
    rows, cols = rc
    return ((p.numel() // (rows * cols)) * (rows + cols),)


def _param_label(g, i, p):
    return f"param_groups[{g}]['params'][{i}] (shape {tuple(p.shape)}, {p.dtype}, {p.device})"


def _check_param(p, label):
    if not isinstance(p, torch.Tensor):
        raise DTypeError(f"{label}: a parameter must be a torch.Tensor, got {type(p).__name__}")
    if p.device.type != "cpu":
        raise UnsupportedError(
            f"{label}: flatopt.torch updates CPU tensors only, this one is on {p.device}"
        )
    if p.layout != torch.strided:
        raise LayoutError(f"{label}: {p.layout} tensors are not supported (dense tensors only)")
    if p.is_complex():
        raise DTypeError(
            f"{label}: complex tensors are not supported (float32, bfloat16 or float16 only)"
        )
    if p.dtype not in _FLOATS:
        raise DTypeError(
            f"{label}: flatopt.torch updates float32, bfloat16 and float16 tensors (16-bit ones "
            f"with float32 master weights), this one is {p.dtype}"
        )
    if not p.is_contiguous():
        raise LayoutError(
            f"{label}: the tensor is not contiguous (strides {p.stride()}); make the parameter "
            "contiguous (p.data = p.data.contiguous()) before creating the optimizer"
        )


def _check_grad(g, p, label):
    """The error for gradient `g` of parameter `p` the step cannot take (called on the slow
    path only)."""
    if g.layout != torch.strided:
        return LayoutError(f"{label}: its gradient is {g.layout}; flatopt takes dense gradients")
    if g.dtype != p.dtype:  # torch >= 2.9 takes one after p.grad_dtype = None
        return DTypeError(f"{label}: its gradient is {g.dtype}, the parameter {p.dtype}; "
                          "flatopt reads gradients of the parameter's dtype")
    if not g.is_contiguous():
        return LayoutError(
            f"{label}: its gradient is not contiguous (strides {g.stride()}); flatopt reads "
            "gradients as flat float32 buffers"
        )
    return None


class _Cohort:
    """Parameters updated the same number of times, under one library handle."""

    __slots__ = ("handle", "params", "groups", "ngroups", "present", "ptrs", "pptrs", "dtypes",
                 "fast", "split", "mixed", "halves", "versions", "formats", "shapes")

    def __init__(self, handle, params, groups, ngroups, present, mixed, formats, shapes):
        self.formats = formats  # (moments, slow weights): how the handle holds them
        # each parameter's registered 2-D shape (rows, cols), or None (Adafactor factors)
        self.shapes = shapes
        self.handle = handle
        self.params = params  # the tensors (kept alive: the library holds their pointers)
        self.groups = groups  # each parameter's group index
        self.ngroups = ngroups  # groups the handle has
        self.present = present  # each parameter's state arrays (of _ARRAYS) in the handle
        self.ptrs = (ctypes.c_void_p * len(params))()  # the gradients' pointers of a step
        self.pptrs = [_PTR(p) for p in params]
        self.dtypes = [p.dtype for p in params]  # what their gradients must be
        # The hand-over of every step: the C++ extension's (one call) where it is built, else
        # None and _hand_over's Python reads (docs/torch.md, "The per-step hand-over").
        self.fast = _fast_hand_over(params, self.pptrs, self.ptrs)
        # The extension's HandOver again where the steps run on PyTorch's threads (its
        # step(): the hand-over and the split step in one call), else None (set by the
        # optimizer: _FlatoptOptimizer._new_cohort).
        self.split = None
        self.mixed = mixed  # has 16-bit parameters: steps through flatopt_optimizer_step_mixed
        # The 16-bit parameters and their version counters: an in-place write by the user
        # (model.load_state_dict, torch.nn.init, p.copy_) bumps it, flatopt's copy does not.
        self.halves = [p for p in params if p.dtype in _HALF]
        self.versions = list(map(_VERSION, self.halves))


def _profile_hook_step(func):
    """PyTorch's step wrapper (``Optimizer.profile_hook_step``: step pre- and post-hooks, a
    profiler range) where a hook is registered or a profiler runs, else the step alone: the
    profiler range costs two dispatcher calls (about 6 us) on every step, profiled or not."""
    hooked = _TorchOptimizer.profile_hook_step(func)
    if _GLOBAL_PRE_HOOKS is None:
        return hooked

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        self = args[0]
        if (_GLOBAL_PRE_HOOKS or _GLOBAL_POST_HOOKS or self._optimizer_step_pre_hooks
                or self._optimizer_step_post_hooks or _profiling()):
            return hooked(*args, **kwargs)
        out = func(*args, **kwargs)
        self._optimizer_step_code()
        return out

    return wrapper


def _same_storage(c):
    """True if every parameter of cohort `c` still has the address it was registered with."""
    # (`map` and a list comparison: 9.0 us for 200 parameters; PyTorch's one C call over the
    # list, torch._C._tensors_data_ptrs_at_indices_equal, 9.4)
    return list(map(_PTR, c.params)) == c.pptrs


def _hand_over(c):
    """The gradients of cohort `c`'s parameters into `c.ptrs`, the hot path of every step: True
    when every parameter has a dense, contiguous gradient of its dtype and no parameter moved
    (else False: the general path sorts it out, with its errors). Per tensor: the `.grad`
    read, its `data_ptr()` written into the ctypes array, its `is_contiguous()` and dtype, the
    parameter's `data_ptr()` compared. Device and shape need no check: PyTorch's `.grad`
    setter and autograd's accumulation refuse a gradient that differs from its parameter in
    either; the dtype does, as torch >= 2.9 takes another after `p.grad_dtype = None`
    (docs/torch.md, "The per-step hand-over")."""
    try:
        grads = [p.grad for p in c.params]
        c.ptrs[:] = list(map(_PTR, grads))
        return (all(map(_CONTIG, grads)) and list(map(_DTYPE, grads)) == c.dtypes
                and _same_storage(c))
    except (TypeError, RuntimeError):  # a None gradient, a sparse one
        return False


def _fast_hand_over(params, pptrs, ptrs):
    """The C++ hand-over of a cohort (flatopt/_torch_handover.cpp) over `params` registered at
    `pptrs`, writing into the ctypes array `ptrs`: a callable returning what _hand_over would;
    None where the extension is off or not built (flatopt/_torch_ext.py: built at the first
    optimizer of a process that finds none cached, if a C++ compiler is there)."""
    ext = _torch_ext.load()
    if ext is None:
        return None
    try:
        return ext.HandOver(params, pptrs, ctypes.addressof(ptrs), ptrs)
    except TypeError:  # a parameter of a Tensor subclass: its own attribute reads, Python's path
        return None


def build_extension(force=True):
    """Builds flatopt.torch's C++ gradient hand-over now (``force``: even if a build is cached
    or failed before) and uses it for the optimizers made from now on; returns the path of
    the built module, raises ``RuntimeError`` saying why it could not be built. The same as
    ``python -m flatopt.torch --build-ext``; without it the extension is built at the first
    optimizer a process makes (docs/torch.md, "The per-step hand-over")."""
    return _torch_ext.build_and_load(force)


def _refresh_masters(c, masters):
    """The masters of cohort `c`'s 16-bit parameters that were written in place since the last
    step (model.load_state_dict, torch.nn.init, copy_: their version counters moved) taken
    anew from their values, in place (the library keeps their addresses)."""
    now = list(map(_VERSION, c.halves))
    if now != c.versions:
        for p, was, v in zip(c.halves, c.versions, now):
            if v != was:
                masters[p].copy_(p.detach())
        c.versions = now


# The rules whose update needs each whole buffer's norms first: the library refuses a split
# step for them, so their steps run on the library's own threads.
_WHOLE_BUFFER_NORMS = frozenset((_lib.LAMB, _lib.LARS, _lib.NOVOGRAD, _lib.ADAFACTOR))


def _split_step(c, scale, hand_over=True):
    """Cohort `c`'s step on PyTorch's intra-op threads (the extension's split step: see
    _torch_handover.cpp); False when the hand-over says no (nothing was begun: the general
    path takes the step), else True or the library's error raised."""
    done = c.split.step(c.handle.ptr, 1.0 if scale is None else scale, hand_over)
    if done is None:
        return False
    status, where = done
    if status == _lib.OK:
        return True
    if where == "step_range":
        # (on a PyTorch thread, whose message this thread cannot read)
        name = _lib.status_str(status).decode("utf-8", "replace")
        raise _lib._EXC.get(status, InternalError)(
            f"step: a range of the split step failed on a PyTorch thread ({name}); the step "
            "is partly applied and the optimizer unusable", status=status)
    _lib.raise_for(status, "step")


class _FlatoptOptimizer(_TorchOptimizer):
    """Base of the flatopt.torch optimizers (see the module documentation)."""

    _kind = None
    # The names, in PyTorch's state layout, of the library's m, v and v_max arrays.
    _names = (None, None, None)
    # Group keys besides lr and weight_decay that the base rule reads; a change rebuilds the
    # handles of the group's parameters (state kept).
    _static = ()
    # True where the library's group weight decay is not the group's "weight_decay" (NAdam's
    # decoupled form, whose decay lives in the base rule): a change rebuilds too.
    _wd_in_base = False
    # Group key -> the flatopt_base_params field it sets (a tuple of fields for a pair such as
    # betas), for the rules whose _fill_base is this table; their _static is its keys.
    _fields = {}
    # The library arrays (m, v, v_max) of a rule whose arrays do not depend on the group.
    _used = (True, True, False)
    # torch.amp.GradScaler hands over its scale and found-inf flag (the attributes grad_scale
    # and found_inf during step()) instead of unscaling the gradients itself.
    _step_supports_amp_scaling = True
    profile_hook_step = staticmethod(_profile_hook_step)

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if "_fields" in cls.__dict__ and "_static" not in cls.__dict__:
            cls._static = tuple(cls._fields)

    def __init__(self, params, defaults, *, max_grad_norm=None, num_threads=None,
                 maximize=False, capturable=False, differentiable=False,
                 state=(None, None, None)):
        for name, value in (("maximize", maximize), ("capturable", capturable),
                            ("differentiable", differentiable)):
            if value:
                raise UnsupportedError(f"{type(self).__name__}: {name}=True is not supported")
        if max_grad_norm is not None:
            max_grad_norm = float(max_grad_norm)
            if not (max_grad_norm > 0 and math.isfinite(max_grad_norm)):
                raise InvalidArgumentError(
                    f"max_grad_norm must be a finite number > 0 (or None), got {max_grad_norm}"
                )
        # num_threads=None: the step runs on PyTorch's own intra-op threads (its OpenMP team,
        # through the C++ extension's split step), where they are available, else on the
        # calling thread alone. Right after backward() PyTorch's OpenMP workers spin-wait on
        # the other cores, and a pool of flatopt threads would compete with them; on them the
        # step competes with nothing (docs/torch.md, "OpenMP interference"). A number: the
        # library's own pool of that many threads.
        self._on_torch_threads = num_threads is None
        if num_threads is None:
            num_threads = 1
        options = {**_STATE_DEFAULTS, **_check_state_options(_state(*state))}
        self.state_dtype = options["state_dtype"]
        self.state_rounding = options["state_rounding"]
        self.state_seed = options["state_seed"]
        # How the handles hold (moments, Lookahead slow weights).
        self._formats = (_lib.STATE_DTYPES[self.state_dtype], _F32)
        self._max_grad_norm = max_grad_norm
        self._num_threads = int(num_threads)
        self._lookahead = None  # (k, alpha) once Lookahead wraps this optimizer
        self._cohorts = []
        self._masters = {}  # 16-bit parameter -> its float32 master weights
        self._applied = []  # per group: (lr, weight_decay, static values) handed to the library
        self._ready = False
        super().__init__(params, defaults)
        self._ready = True
        self._rebuild({})

    # -- hyperparameters ---------------------------------------------------------------------

    def _fill_base(self, base, group):
        for key, field in self._fields.items():
            value = group[key]
            for f, v in zip(field, value) if isinstance(field, tuple) else ((field, value),):
                setattr(base, f, float(v))

    def _coupled(self):
        """True if the rule's weight decay is the coupled one (g += wd * p)."""
        return True

    def _static_of(self, group):
        out = tuple(
            tuple(v) if isinstance(v, (list, tuple)) else v
            for v in (group[k] for k in self._static)
        )
        return out + (_wd(group),) if self._wd_in_base else out

    def _lib_wd(self, group):
        """The weight decay handed to the library's group (flatopt_optimizer_set_group_weight_
        decay: the rule's own decoupled decay where it has one, else the coupled one)."""
        return 0.0 if self._wd_in_base else _wd(group)

    def _base_params(self, group):
        base = _lib.new_base_params(self._kind)
        self._fill_base(base, group)
        if not self._coupled():
            base.decoupled_weight_decay = _wd(group)
        return base

    def add_param_group(self, param_group):
        g = len(self.param_groups)
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        for i, p in enumerate(group["params"]):
            _check_param(p, _param_label(g, i, p))
        for k in ("lr", "weight_decay"):
            v = float(group.get(k, 0.0))
            if not (v >= 0 and math.isfinite(v)):
                raise InvalidArgumentError(f"param_groups[{g}]['{k}'] must be >= 0, got {v}")
        if getattr(self, "_ready", False):
            # The new group's parameters form a cohort of their own (step 0).
            params = [p for p in group["params"] if p.numel() > 0]
            self._applied.append(None)
            self._sync_groups()  # existing cohorts up to date; the new group's values noted
            if params:
                self._cohorts.append(self._new_cohort(params, [g] * len(params)))

    # -- handles -----------------------------------------------------------------------------

    def _config(self, formats=None):
        g0 = self.param_groups[0]
        cfg = _lib.new_config()
        base = self._base_params(g0)
        cfg.base = ctypes.pointer(base)
        cfg.lr = 1.0  # fixed: every group has its own lr, used as is (lr * 1.0 / 1.0)
        cfg.nonfinite = _lib.NONFINITE["propagate"]
        cfg.weight_decay = self._lib_wd(g0) if self._coupled() else 0.0
        cfg.grad_clip_norm = self._max_grad_norm or 0.0
        cfg.num_threads = self._num_threads
        cfg.state_dtype, cfg.slow_dtype = self._formats if formats is None else formats
        cfg.state_rounding = _lib.STATE_ROUNDING[self.state_rounding]
        cfg.state_seed = self.state_seed
        if self._lookahead is not None:
            cfg.lookahead = 1
            cfg.sync_period, cfg.alpha = self._lookahead
        return cfg

    def _master(self, p, masters=None):
        """The float32 master weights of 16-bit parameter `p` (made from its values if new)."""
        masters = self._masters if masters is None else masters
        m = masters.get(p)
        if m is None:
            m = masters[p] = p.detach().to(torch.float32).contiguous()
        return m

    def _new_cohort(self, params, groups, masters=None, formats=None):
        """A handle over `params` (each in its group) with every group's live values; a 16-bit
        parameter is registered as its float32 master weights (of `masters`, default the
        optimizer's) with 16-bit gradients and itself as the 16-bit copy the pass writes. The
        state held in `formats` ((moments, slow weights), default the optimizer's)."""
        formats = self._formats if formats is None else formats
        cfg = self._config(formats)
        handle = _Handle(cfg, type(self).__name__)
        ptr = handle.ptr
        ngroups = len(self.param_groups)
        for g, group in enumerate(self.param_groups):
            if g > 0:
                opts = _lib.GroupOptions()
                _lib.check(_lib.group_options_init(ctypes.byref(opts), ctypes.sizeof(opts)))
                opts.lr = float(group["lr"])
                opts.weight_decay = self._lib_wd(group)
                base = self._base_params(group)
                opts.base = ctypes.pointer(base)
                out = ctypes.c_size_t()
                _lib.check(
                    _lib.optimizer_add_group(ptr, ctypes.byref(opts), ctypes.byref(out)),
                    f"param_groups[{g}]",
                )
            else:
                _lib.check(_lib.optimizer_set_group_lr(ptr, 0, float(group["lr"])),
                           "param_groups[0]['lr']")
        mixed = False
        shapes = [self._shape_of(p) for p in params]
        for p, g, rc in zip(params, groups, shapes):
            what = f"param_groups[{g}]: registering a parameter of shape {tuple(p.shape)}"
            code = _HALF.get(p.dtype)
            if code is None and rc is None:
                _lib.check(_lib.optimizer_add_param_to_group(ptr, g, _PTR(p), None, p.numel()),
                           what)
                continue
            if _lib.optimizer_add_param_with_options is None:
                raise UnsupportedError(
                    f"{what}: {p.dtype} parameters and shaped ones need a library with "
                    f"flatopt_optimizer_add_param_with_options; {_lib.library_path} has none"
                )
            opts = _lib.ParamOptions()
            _lib.check(_lib.param_options_init(ctypes.byref(opts), ctypes.sizeof(opts)))
            opts.group = g
            if rc is not None:
                opts.rows, opts.cols = rc
            if code is None:
                _lib.check(_lib.optimizer_add_param_with_options(
                    ptr, _PTR(p), None, p.numel(), ctypes.byref(opts)), what)
                continue
            mixed = True
            opts.grad_dtype = opts.copy_dtype = code
            opts.copy = _PTR(p)
            master = self._master(p, masters)
            _lib.check(_lib.optimizer_add_param_with_options(
                ptr, _PTR(master), None, p.numel(), ctypes.byref(opts)), what)
        present = [self._present(self.param_groups[g]) for g in groups]
        c = _Cohort(handle, params, groups, ngroups, present, mixed, formats, shapes)
        if (self._on_torch_threads and self._kind not in _WHOLE_BUFFER_NORMS
                and c.fast is not None and _torch_ext.split()):
            c.split = c.fast
        return c

    def _shape_of(self, p):
        """The 2-D shape ``(rows, cols)`` parameter `p` is registered with (the rule factors
        its state by it), or None."""
        return None

    def _applied_set(self, g, group):
        while len(self._applied) <= g:
            self._applied.append(None)
        self._applied[g] = (float(group["lr"]), _wd(group), self._static_of(group))

    def _sync_groups(self):
        """Hands changed group hyperparameters to the library (a comparison per group): lr,
        weight decay and the base rule's (betas, eps, momentum, ...) through the library's
        group setters (no allocation); a change of the state arrays the rule keeps (AMSGrad,
        momentum or centering on or off) by rebuilding the handles of the group's parameters
        with their state (a copy of it)."""
        applied = self._applied
        static = self._static or self._wd_in_base
        for g, group in enumerate(self.param_groups):
            a = applied[g]
            lr = group["lr"]
            wd = group.get("weight_decay", 0.0)
            same = a is not None and lr == a[0] and wd == a[1]
            if static and a is not None and self._static_of(group) != a[2]:
                self._set_group_base(g, group)  # the rebuilt handles take every live value
            elif same:
                continue
            if not same:
                for c in self._cohorts:
                    if g < c.ngroups:
                        _lib.check(_lib.optimizer_set_group_lr(c.handle.ptr, g, float(lr)),
                                   f"param_groups[{g}]['lr']")
                        _lib.check(
                            _lib.optimizer_set_group_weight_decay(
                                c.handle.ptr, g, self._lib_wd(group)
                            ),
                            f"param_groups[{g}]['weight_decay']",
                        )
            self._applied_set(g, group)

    def _set_group_base(self, g, group):
        """Group `g`'s new base-rule hyperparameters into every handle (all or none), or the
        handles rebuilt where the rule's state arrays change."""
        base = self._base_params(group)
        # Only the handles with parameters of the group: in the others the group holds no
        # buffer, and its stale values there are never used.
        holding = [c for c in self._cohorts if g in c.groups]
        new = self._present(group)
        if _lib.optimizer_set_group_base_params is None or any(
            p != new for c in holding for p, h in zip(c.present, c.groups) if h == g
        ):
            self._rebuild_group(g)
            return
        done = []
        try:
            for c in holding:
                old = _lib.new_base_params(self._kind)
                _lib.check(_lib.optimizer_group_base_params(c.handle.ptr, g, ctypes.byref(old),
                                                            ctypes.sizeof(old)))
                _lib.check(_lib.optimizer_set_group_base_params(c.handle.ptr, g,
                                                                ctypes.byref(base)),
                           f"param_groups[{g}]")
                done.append((c, old))
        except BaseException:
            for c, old in done:  # put the values back: nothing changed
                _lib.check(_lib.optimizer_set_group_base_params(c.handle.ptr, g,
                                                                ctypes.byref(old)))
            raise

    def _rebuild_group(self, g):
        """New handles, with the state, for the cohorts holding parameters of group `g` (its
        hyperparameters changed); swapped in only when all are built."""
        new = {}
        for i, c in enumerate(self._cohorts):
            if g in c.groups:
                states, counters = self._cohort_states(c)
                n = self._new_cohort(c.params, c.groups)
                self._import(n, states, None, counters)
                new[i] = n
        for i, n in new.items():
            self._cohorts[i] = n

    # -- state transfer through the library's checkpoints -------------------------------------

    def _present(self, group):
        """The arrays (of _ARRAYS) a parameter of `group` carries."""
        m, v, vmax = self._state_used(group)
        out = [m, v, vmax, self._lookahead is not None]
        return [name for name, used in zip(_ARRAYS, out) if used]

    def _state_used(self, group):
        return self._used

    @staticmethod
    def _blob(handle):
        size = ctypes.c_size_t()
        _lib.check(_lib.optimizer_checkpoint_size(handle.ptr, ctypes.byref(size)), "state_dict")
        buf = (ctypes.c_uint8 * size.value)()
        written = ctypes.c_size_t()
        _lib.check(
            _lib.optimizer_save(handle.ptr, buf, size.value, ctypes.byref(written)), "state_dict"
        )
        return bytearray(buf)[: written.value]

    def _layout(self, cohort, blob):
        """(counters offset, [(param, {array name: (byte offset, format, shape)}) ...]) of a
        cohort's blob. A buffer registered with a shape (rows, cols) has 16 bytes more in its
        record (the shape) and a `v` of rows + cols elements per matrix
        (docs/checkpoint-format.md)."""
        (clen,) = struct.unpack_from("<Q", blob, 32)
        counters = _HEADER + clen
        fm, fs = cohort.formats
        records = [
            (p, 16 if rc is None else 32,
             [(name, fs if name == "slow" else fm, _array_shape(p, rc, name)) for name in names])
            for p, names, rc in zip(cohort.params, cohort.present, cohort.shapes)
        ]
        total = sum(head + sum(_array_size(f, math.prod(shape)) for _, f, shape in arrays)
                    for _, head, arrays in records)
        off = len(blob) - 4 - total
        out = []
        for p, head, arrays in records:
            n = p.numel()
            (n_rec,) = struct.unpack_from("<Q", blob, off)
            if n_rec != n:
                raise CheckpointError(f"internal: buffer of {n_rec} elements, expected {n}")
            where = {}
            pos = off + head
            for name, f, shape in arrays:
                where[name] = (pos, f, shape)
                pos += _array_size(f, math.prod(shape))
            out.append((p, where))
            off = pos
        return counters, out

    def _cohort_states(self, c):
        """({param: {array name: state as held}}, the 72 counter bytes) of cohort `c`: a
        float32 or bfloat16 tensor of the parameter's shape, or (uint8 codes of its shape,
        float32 block scales) for 8-bit state."""
        blob = self._blob(c.handle)
        counters, layout = self._layout(c, blob)
        states = {
            p: {name: _read_array(blob, pos, f, shape)
                for name, (pos, f, shape) in arrays.items()}
            for p, arrays in layout
        }
        return states, bytes(blob[counters : counters + _COUNTERS])

    def _export(self):
        """{param: {"step": int, array name: float32 tensor}} of every parameter."""
        out = {}
        for c in self._cohorts:
            states, counters = self._cohort_states(c)
            (step,) = struct.unpack_from("<Q", counters, 0)
            for p, st in states.items():
                st["step"] = step
                if p in self._masters:
                    st["master"] = self._masters[p].clone()
                out[p] = st
        return out

    def _import(self, cohort, states, step, counter_bytes=None, masters=None):
        """Writes `states` ({param: {array name: state value}}, values as `_cohort_states`
        gives them) and the counters (`counter_bytes` of another cohort's checkpoint, or `step`
        updates) into a cohort's handle (slow weights not given start at the parameters: the
        master weights in `masters`, default the optimizer's, of a 16-bit one). State held in
        other formats than the handle's is written into a checkpoint of a handle holding
        those (arrays not given keep that fresh handle's values) and converted by the
        library's load (docs/checkpoint-format.md, "version 4")."""
        masters = self._masters if masters is None else masters
        values = {}
        found = ({}, {})  # the formats given of the moments and of the slow weights
        for p, names in zip(cohort.params, cohort.present):
            st = states.get(p, {})
            vals = values[p] = {}
            for name in names:
                v = st.get(name)
                if v is None and name == "slow":
                    v = masters.get(p, p).detach()
                if v is not None:
                    vals[name] = v
                    found[name == "slow"][_format_of(v)] = True
        formats = (_one_format(found[0], cohort.formats[0], "state"),
                   _one_format(found[1], cohort.formats[1], "slow-weight"))
        writer = cohort
        if formats != cohort.formats:
            writer = self._new_cohort(cohort.params, cohort.groups, masters, formats)
        blob = self._blob(writer.handle)
        counters, layout = self._layout(writer, blob)
        if counter_bytes is not None:
            blob[counters : counters + _COUNTERS] = counter_bytes
        else:
            struct.pack_into("<QQQ", blob, counters, step, 0, step)
        shown = dict(zip(_ARRAYS, (*self._names, "lookahead_slow_buff")))
        for p, arrays in layout:
            for name, (pos, f, shape) in arrays.items():
                v = values[p].get(name)
                if v is not None:
                    data = _array_bytes(v, f, shape, shown[name] or name)
                    blob[pos : pos + len(data)] = data
        struct.pack_into("<I", blob, len(blob) - 4, zlib.crc32(bytes(blob[:-4])) & 0xFFFFFFFF)
        buf = (ctypes.c_uint8 * len(blob)).from_buffer(blob)
        status = _lib.optimizer_load(cohort.handle.ptr, buf, len(blob))
        if status != _lib.OK:
            try:
                _lib.raise_for(status, "load_state_dict")
            except Exception as e:
                raise CheckpointError(str(e)) from None

    def _rebuild(self, states):
        """New cohorts from `states` ({param: {"step": int, arrays..., "master": tensor}}): one
        per step count; a 16-bit parameter's master weights from its "master" (else from its
        values)."""
        by_step = OrderedDict()
        masters = {}
        for g, group in enumerate(self.param_groups):
            for p in group["params"]:
                if p.numel() == 0:
                    continue
                if p.dtype in _HALF:
                    masters[p] = _master_from(states.get(p, {}).get("master"), p)
                step = int(states.get(p, {}).get("step", 0))
                by_step.setdefault(step, ([], []))
                by_step[step][0].append(p)
                by_step[step][1].append(g)
        cohorts = []
        for step, (params, groups) in by_step.items():
            c = self._new_cohort(params, groups, masters)
            if step > 0 or self._lookahead is not None:
                self._import(c, states, step, masters=masters)
            cohorts.append(c)
        # Only now, with every handle built and loaded, does anything of this object change.
        self._applied = [None] * len(self.param_groups)
        for g, group in enumerate(self.param_groups):
            self._applied_set(g, group)
        self._cohorts = cohorts
        self._masters = masters

    def _split(self, index, has):
        """Splits cohort `index` into its parameters with a gradient (has[i]) and without."""
        c = self._cohorts[index]
        states, counters = self._cohort_states(c)
        parts = []
        for want in (True, False):
            params = [p for p, h in zip(c.params, has) if h is want]
            groups = [g for g, h in zip(c.groups, has) if h is want]
            n = self._new_cohort(params, groups)
            self._import(n, states, None, counters)
            parts.append(n)
        self._cohorts[index : index + 1] = parts

    # -- the step ----------------------------------------------------------------------------

    def step(self, closure=None):
        """One update of every parameter that has a gradient; returns the closure's loss.

        Under ``torch.amp.GradScaler.step`` (the attributes ``grad_scale`` and ``found_inf``
        are set): nothing happens when ``found_inf`` is non-zero; otherwise the gradients are
        divided by ``grad_scale`` inside flatopt's pass. Under :class:`GradScaler` flatopt's
        pass also makes the inf/NaN check."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        scale, checked = _amp_scale(self)
        if scale == 0.0:
            return loss  # GradScaler found an inf/NaN: skipped, nothing changes
        self._sync_groups()
        cohorts = self._cohorts
        if len(cohorts) == 1:
            c = cohorts[0]
            if c.split is not None and not checked:
                if c.halves:
                    _refresh_masters(c, self._masters)
                if _split_step(c, scale):
                    return loss
                self._step_general(scale, checked)
                return loss
            fast = c.fast
            if (fast() if fast is not None else _hand_over(c)):
                if c.halves:
                    _refresh_masters(c, self._masters)
                if checked:
                    self._flatopt_found = _step_checked(c, scale)
                    return loss
                if scale is None and not c.mixed:
                    st = _lib.optimizer_step_with_grads.raw(c.handle.ptr, c.ptrs,
                                                            len(c.params))
                else:
                    st = _lib.optimizer_step_mixed.raw(c.handle.ptr, c.ptrs, len(c.params),
                                                       1.0 if scale is None else scale)
                if st != _lib.OK:
                    _lib.raise_for(st, "step")
                return loss
        self._step_general(scale, checked)
        return loss

    def _step_general(self, scale=None, checked=False):
        """Missing gradients, several cohorts, moved parameters, bad gradients."""
        i = 0
        stepping = []
        while i < len(self._cohorts):
            c = self._cohorts[i]
            grads = [_GRAD(p) for p in c.params]
            has = [g is not None for g in grads]
            if not any(has):
                i += 1
                continue
            if not all(has):
                self._split(i, has)
                continue  # cohort i is now the part with gradients
            for p, g in zip(c.params, grads):
                err = _check_grad(g, p, self._label_of(p))
                if err is not None:
                    raise err
            if not _same_storage(c):
                self._moved(i)
                continue
            if c.halves:
                _refresh_masters(c, self._masters)
            stepping.append((c, grads))
            i += 1
        if len(stepping) > 1 and self._max_grad_norm is not None:
            raise UnsupportedError(
                "max_grad_norm: the parameters with a gradient in this step were updated "
                "different numbers of times before (some had no gradient in an earlier step); "
                "the global norm over such cohorts is not supported yet"
            )
        if checked:
            # The library checks one handle's gradients; for several, all or none step.
            if len(stepping) == 1:
                c, grads = stepping[0]
                c.ptrs[:] = [_PTR(g) for g in grads]
                self._flatopt_found = _step_checked(c, scale)
                return
            self._flatopt_found = not all(
                bool(torch.isfinite(g.to(torch.float32) / scale).all())
                for _, grads in stepping for g in grads
            )
            if self._flatopt_found:
                return
        for c, grads in stepping:
            c.ptrs[:] = [_PTR(g) for g in grads]
            if c.split is not None:
                _split_step(c, scale, hand_over=False)
                continue
            if scale is None and not c.mixed:
                st = _lib.optimizer_step_with_grads(c.handle.ptr, c.ptrs, len(c.params))
            else:
                st = _lib.optimizer_step_mixed(c.handle.ptr, c.ptrs, len(c.params),
                                               1.0 if scale is None else scale)
            _lib.check(st, "step")

    def _inf_check_is_cheap(self):
        """Whether the library's inf/NaN check of a step's gradients costs no more than
        GradScaler's pass: it is the norm pass (max_grad_norm) or a scan of 16-bit bits."""
        return self._max_grad_norm is not None or all(
            p.dtype in _HALF for c in self._cohorts for p in c.params
        )

    def _moved(self, index):
        """A parameter's storage moved (p.data = ...): re-register its cohort, state kept (the
        master weights of a 16-bit parameter that moved or was written in place are taken
        anew from its values)."""
        c = self._cohorts[index]
        # New masters in a new dict: the old handle keeps using the old ones until replaced.
        masters = dict(self._masters)
        versions = {id(p): v for p, v in zip(c.halves, c.versions)}
        for p, ptr in zip(c.params, c.pptrs):
            _check_param(p, self._label_of(p))
            if p.dtype in _HALF and (_PTR(p) != ptr or _VERSION(p) != versions.get(id(p))):
                masters[p] = _master_from(None, p)
            elif p.dtype not in _HALF:
                masters.pop(p, None)  # (it may have been 16-bit before)
        states, counters = self._cohort_states(c)
        n = self._new_cohort(c.params, c.groups, masters)
        self._import(n, states, None, counters, masters=masters)
        self._cohorts[index] = n
        self._masters = masters

    def _label_of(self, p):
        for g, group in enumerate(self.param_groups):
            for i, q in enumerate(group["params"]):
                if q is p:
                    return _param_label(g, i, p)
        return f"a parameter of shape {tuple(p.shape)}"

    # -- state dicts -------------------------------------------------------------------------

    def _to_torch_state(self, st, group, p):
        names = dict(zip(_ARRAYS, (*self._names, "lookahead_slow_buff")), master="master_param")
        out = {}
        if st["step"] == 0:
            return out
        out["step"] = torch.tensor(float(st["step"]), dtype=torch.float32)
        for name, t in st.items():
            if isinstance(t, tuple):  # 8-bit state: the codes and their block scales
                out[names[name]], out[names[name] + "_absmax"] = t
            elif name != "step":
                out[names[name]] = t
        return out

    def _from_torch_state(self, st, p):
        names = dict(zip((*self._names, "lookahead_slow_buff"), _ARRAYS), master_param="master")
        out = {}
        step = st.get("step")
        if step is None:
            step = 1 if any(k in st for k in names) else 0
        step = float(step.item() if isinstance(step, torch.Tensor) else step)
        if not (step >= 0 and step == int(step)):
            raise CheckpointError(f"a state 'step' must be a whole number >= 0, got {step}")
        out["step"] = int(step)
        for k, v in st.items():
            if k in names and v is not None:
                if not isinstance(v, torch.Tensor):
                    raise CheckpointError(f"state '{k}' must be a tensor, got {type(v).__name__}")
                if v.dtype == torch.uint8:
                    scales = st.get(k + "_absmax")
                    if not isinstance(scales, torch.Tensor):
                        raise CheckpointError(
                            f"state '{k}' holds 8-bit codes (uint8) but its block scales "
                            f"'{k}_absmax' (a float32 tensor) are missing"
                        )
                    v = (v, scales)
                elif not v.is_floating_point():
                    raise CheckpointError(
                        f"state '{k}' must be a floating-point tensor or 8-bit codes (uint8), "
                        f"got {v.dtype}"
                    )
                out[names[k]] = v
        return out

    def state_dict(self):
        exported = self._export()
        self.state.clear()
        for g, group in enumerate(self.param_groups):
            for p in group["params"]:
                if p in exported:
                    st = self._to_torch_state(exported[p], group, p)
                    if st:
                        self.state[p] = st
        return super().state_dict()

    def load_state_dict(self, state_dict):
        """PyTorch's load_state_dict, then the library's state from the tensors. A state dict
        that does not fit (sizes, values a step cannot produce, hyperparameters out of their
        domains) raises and leaves the optimizer as it was."""
        groups, state = self.param_groups, self.state
        try:
            super().load_state_dict(state_dict)
            # torch.optim casts floating-point state to its parameter's dtype: take the state
            # as saved instead (the float32 moments and master weights of a 16-bit parameter,
            # bfloat16 moments, the float32 scales of 8-bit ones).
            saved = state_dict["state"]
            ids = [i for group in state_dict["param_groups"] for i in group["params"]]
            params = [p for group in self.param_groups for p in group["params"]]
            for i, p in zip(ids, params):
                if i in saved:
                    self.state[p] = {
                        k: v.detach().to("cpu", copy=True) if isinstance(v, torch.Tensor) else v
                        for k, v in saved[i].items()
                    }
            for g, group in enumerate(self.param_groups):
                for i, p in enumerate(group["params"]):
                    _check_param(p, _param_label(g, i, p))
            states = {p: self._from_torch_state(st, p) for p, st in self.state.items()}
            self._rebuild(states)
        except BaseException:
            self.param_groups, self.state = groups, state
            raise

    def _set_lookahead(self, k, alpha, slow_dtype):
        states = self._export()
        was = self._lookahead, self._formats
        self._lookahead = (k, alpha)
        self._formats = (self._formats[0], slow_dtype)
        try:
            self._rebuild(states)
        except BaseException:
            self._lookahead, self._formats = was
            raise


def _amp_scale(opt):
    """(scale, checked) of a step: what torch.amp.GradScaler.step hands to an optimizer with
    _step_supports_amp_scaling, scale None (no scaler, or the gradients were unscaled already),
    0.0 (found_inf: skip the step) or the float > 0 to divide the gradients by; or what
    flatopt.torch.GradScaler hands over (`_flatopt_check`, the scale): checked True, the inf
    check is flatopt's."""
    scale = getattr(opt, "_flatopt_check", None)
    checked = scale is not None
    if not checked:
        found = getattr(opt, "found_inf", None)
        if found is not None and float(found) != 0.0:
            return 0.0, False
        scale = getattr(opt, "grad_scale", None)
        if scale is None:
            return None, False
    scale = float(scale)
    if not (scale > 0.0 and math.isfinite(scale)):
        raise InvalidArgumentError(f"grad_scale must be finite and > 0, got {scale}")
    return scale, checked


def _step_checked(c, scale):
    """Steps cohort `c` (its gradient pointers in c.ptrs) dividing by `scale`, with the inf/NaN
    check in the library's pass: a dynamic loss scaler set at `scale` for this call only.
    Returns True when a gradient was not finite (skipped, nothing changed)."""
    ptr = c.handle.ptr
    opts = _lib.LossScalerOptions()
    _lib.check(_lib.loss_scaler_options_init(ctypes.byref(opts), ctypes.sizeof(opts)))
    opts.init_scale = scale
    _lib.check(_lib.optimizer_set_loss_scaler(ptr, ctypes.byref(opts)), "GradScaler scale")
    try:
        st = _lib.optimizer_step_mixed(ptr, c.ptrs, len(c.params), 0.0)
    finally:
        _lib.check(_lib.optimizer_set_loss_scaler(ptr, None))
    if st == _lib.SKIPPED:
        return True
    _lib.check(st, "step")
    return False


def _wd(group):
    return float(group.get("weight_decay", 0.0))


def _master_from(value, p):
    """A new float32 tensor of `p`'s shape: master weights from a state dict's `value`, or
    from the 16-bit parameter's own values when `value` is None."""
    if value is None:
        return p.detach().to(torch.float32).contiguous()
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        raise CheckpointError(
            f"state 'master_param' must be a floating-point tensor, got {value!r:.60}"
        )
    if value.numel() != p.numel():
        raise CheckpointError(
            f"a state tensor 'master_param' has {value.numel()} elements, its parameter "
            f"{p.numel()}"
        )
    out = torch.empty(p.shape, dtype=torch.float32)
    out.copy_(value.detach().reshape(p.shape))
    return out


def _betas(betas):
    b1, b2 = (float(b) for b in betas)
    return b1, b2


class _AdamFamily(_FlatoptOptimizer):
    _names = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    _static = ("betas", "eps", "amsgrad")

    def _fill_base(self, base, group):
        base.b1, base.b2 = _betas(group["betas"])
        base.eps = float(group["eps"])
        base.amsgrad = int(bool(group.get("amsgrad", False)))

    def _state_used(self, group):
        return True, True, bool(group.get("amsgrad", False))


class Adam(_AdamFamily):
    """``torch.optim.Adam`` with flatopt's fused step (coupled weight decay, ``amsgrad``)."""

    _kind = _lib.ADAM

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 amsgrad=False, *, foreach=None, maximize=False, capturable=False,
                 differentiable=False, fused=None, decoupled_weight_decay=False,
                 max_grad_norm=None, num_threads=None,
                 state_dtype=None, state_rounding=None, state_seed=None):
        if decoupled_weight_decay:
            raise UnsupportedError("Adam: decoupled_weight_decay=True: use flatopt.torch.AdamW")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        amsgrad=amsgrad, maximize=False, foreach=foreach,
                        capturable=False, differentiable=False, fused=fused,
                        decoupled_weight_decay=False)
        super().__init__(params, defaults, max_grad_norm=max_grad_norm,
                         state=(state_dtype, state_rounding, state_seed),
                         num_threads=num_threads, maximize=maximize, capturable=capturable,
                         differentiable=differentiable)


class AdamW(_AdamFamily):
    """``torch.optim.AdamW`` with flatopt's fused step (decoupled weight decay)."""

    _kind = _lib.ADAMW

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, maximize=False, foreach=None, capturable=False,
                 differentiable=False, fused=None, max_grad_norm=None, num_threads=None,
                 state_dtype=None, state_rounding=None, state_seed=None):
        if amsgrad:
            raise UnsupportedError("AdamW: amsgrad=True is not supported by flatopt's AdamW yet")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        amsgrad=False, maximize=False, foreach=foreach, capturable=False,
                        differentiable=False, fused=fused)
        super().__init__(params, defaults, max_grad_norm=max_grad_norm,
                         state=(state_dtype, state_rounding, state_seed),
                         num_threads=num_threads, maximize=maximize, capturable=capturable,
                         differentiable=differentiable)

    def _coupled(self):
        return False


class RAdam(_AdamFamily):
    """``torch.optim.RAdam`` with flatopt's fused step (coupled weight decay)."""

    _kind = _lib.RADAM
    _static = ("betas", "eps")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 decoupled_weight_decay=False, *, foreach=None, maximize=False,
                 capturable=False, differentiable=False, max_grad_norm=None, num_threads=None,
                 state_dtype=None, state_rounding=None, state_seed=None):
        if decoupled_weight_decay:
            raise UnsupportedError("RAdam: decoupled_weight_decay=True is not supported yet")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        foreach=foreach, maximize=False, capturable=False,
                        differentiable=False, decoupled_weight_decay=False)
        super().__init__(params, defaults, max_grad_norm=max_grad_norm,
                         state=(state_dtype, state_rounding, state_seed),
                         num_threads=num_threads, maximize=maximize, capturable=capturable,
                         differentiable=differentiable)


class SGD(_FlatoptOptimizer):
    """``torch.optim.SGD`` (momentum, dampening, Nesterov) with flatopt's fused step."""

    _kind = _lib.SGD
    _names = ("momentum_buffer", None, None)
    _static = ("momentum", "dampening", "nesterov")

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0,
                 nesterov=False, *, maximize=False, foreach=None, differentiable=False,
                 fused=None, max_grad_norm=None, num_threads=None,
                 state_dtype=None, state_rounding=None, state_seed=None):
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening,
                        weight_decay=weight_decay, nesterov=nesterov, maximize=False,
                        foreach=foreach, differentiable=False, fused=fused)
        super().__init__(params, defaults, max_grad_norm=max_grad_norm,
                         state=(state_dtype, state_rounding, state_seed),
                         num_threads=num_threads, maximize=maximize,
                         differentiable=differentiable)

    def _fill_base(self, base, group):
        base.momentum = float(group["momentum"])
        base.dampening = float(group["dampening"])
        base.nesterov = int(bool(group["nesterov"]))

    def _state_used(self, group):
        return float(group["momentum"]) > 0, False, False


class Adagrad(_FlatoptOptimizer):
    """``torch.optim.Adagrad`` with flatopt's fused step."""

    _kind = _lib.ADAGRAD
    _names = (None, "sum", None)
    _static = ("lr_decay", "initial_accumulator_value", "eps")

    def __init__(self, params, lr=1e-2, lr_decay=0, weight_decay=0,
                 initial_accumulator_value=0, eps=1e-10, foreach=None, *, maximize=False,
                 differentiable=False, fused=None, max_grad_norm=None, num_threads=None,
                 state_dtype=None, state_rounding=None, state_seed=None):
        defaults = dict(lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay,
                        initial_accumulator_value=initial_accumulator_value, foreach=foreach,
                        maximize=False, differentiable=False, fused=fused)
        super().__init__(params, defaults, max_grad_norm=max_grad_norm,
                         state=(state_dtype, state_rounding, state_seed),
                         num_threads=num_threads, maximize=maximize,
                         differentiable=differentiable)

    def _fill_base(self, base, group):
        base.lr_decay = float(group["lr_decay"])
        base.initial_accumulator = float(group["initial_accumulator_value"])
        base.eps = float(group["eps"])
        base.eps_inside_sqrt = 0

    def _state_used(self, group):
        return False, True, False


class RMSprop(_FlatoptOptimizer):
    """``torch.optim.RMSprop`` (momentum, centered) with flatopt's fused step."""

    _kind = _lib.RMSPROP
    _names = ("momentum_buffer", "square_avg", "grad_avg")
    _static = ("alpha", "eps", "momentum", "centered")

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0,
                 centered=False, capturable=False, foreach=None, maximize=False,
                 differentiable=False, *, max_grad_norm=None, num_threads=None,
                 state_dtype=None, state_rounding=None, state_seed=None):
        defaults = dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                        momentum=momentum, centered=centered, capturable=False,
                        foreach=foreach, maximize=False, differentiable=False)
        super().__init__(params, defaults, max_grad_norm=max_grad_norm,
                         state=(state_dtype, state_rounding, state_seed),
                         num_threads=num_threads, maximize=maximize, capturable=capturable,
                         differentiable=differentiable)

    def _fill_base(self, base, group):
        base.alpha = float(group["alpha"])
        base.eps = float(group["eps"])
        base.momentum = float(group["momentum"])
        base.centered = int(bool(group["centered"]))
        base.eps_inside_sqrt = 0

    def _state_used(self, group):
        return float(group["momentum"]) > 0, True, bool(group["centered"])


class Adamax(_FlatoptOptimizer):
    """``torch.optim.Adamax`` with flatopt's fused step (``eps`` inside the maximum, as
    PyTorch; coupled weight decay)."""

    _kind = _lib.ADAMAX
    _names = ("exp_avg", "exp_inf", None)
    _fields = {"betas": ("b1", "b2"), "eps": "eps"}  # eps_outside_max off: PyTorch's

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 foreach=None, *, maximize=False, differentiable=False, capturable=False,
                 max_grad_norm=None, num_threads=None,
                 state_dtype=None, state_rounding=None, state_seed=None):
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        foreach=foreach, maximize=False, differentiable=False,
                        capturable=False)
        super().__init__(params, defaults, max_grad_norm=max_grad_norm,
                         state=(state_dtype, state_rounding, state_seed),
                         num_threads=num_threads, maximize=maximize, capturable=capturable,
                         differentiable=differentiable)


class NAdam(_FlatoptOptimizer):
    """``torch.optim.NAdam`` with flatopt's fused step (PyTorch's momentum schedule; coupled
    weight decay, or decoupled with ``decoupled_weight_decay=True``). The state dict carries
    ``mu_product`` as PyTorch's does (flatopt computes the product from the step: see
    docs/numerics.md, "NAdam")."""

    _kind = _lib.NADAM
    _names = ("exp_avg", "exp_avg_sq", None)
    # constant_momentum off: PyTorch's schedule
    _fields = {"betas": ("b1", "b2"), "eps": "eps", "momentum_decay": "momentum_decay"}
    _static = (*_fields, "decoupled_weight_decay")

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 momentum_decay=4e-3, decoupled_weight_decay=False, *, foreach=None,
                 maximize=False, capturable=False, differentiable=False, max_grad_norm=None,
                 num_threads=None,
                 state_dtype=None, state_rounding=None, state_seed=None):
        self._wd_in_base = bool(decoupled_weight_decay)
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        momentum_decay=momentum_decay,
                        decoupled_weight_decay=bool(decoupled_weight_decay), foreach=foreach,
                        maximize=False, capturable=False, differentiable=False)
        super().__init__(params, defaults, max_grad_norm=max_grad_norm,
                         state=(state_dtype, state_rounding, state_seed),
                         num_threads=num_threads, maximize=maximize, capturable=capturable,
                         differentiable=differentiable)

    def _coupled(self):
        return not self._wd_in_base

    def _fill_base(self, base, group):
        if bool(group["decoupled_weight_decay"]) != self._wd_in_base:
            raise UnsupportedError(
                "NAdam: decoupled_weight_decay is the optimizer's (fixed at construction), "
                f"not a group's: got {group['decoupled_weight_decay']!r}"
            )
        super()._fill_base(base, group)

    def _to_torch_state(self, st, group, p):
        out = super()._to_torch_state(st, group, p)
        if out:
            out["mu_product"] = _nadam_mu_product(
                _betas(group["betas"])[0], float(group["momentum_decay"]), st["step"]
            )
        return out


def _nadam_mu_product(b1, psi, steps):
    """PyTorch's running NAdam ``mu_product`` after `steps` updates (its float32 products)."""
    return _mu_product(b1, psi, steps).clone()


@functools.lru_cache(maxsize=16)
def _mu_product(b1, psi, steps):
    prod = torch.ones((), dtype=torch.float32)
    for t in range(1, steps + 1):
        prod *= b1 * (1.0 - 0.5 * (0.96 ** (float(t) * psi)))
    return prod


class Adadelta(_FlatoptOptimizer):
    """``torch.optim.Adadelta`` with flatopt's fused step (coupled weight decay)."""

    _kind = _lib.ADADELTA
    _names = ("acc_delta", "square_avg", None)
    _fields = {"rho": "rho", "eps": "eps"}

    def __init__(self, params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0, foreach=None, *,
                 capturable=False, maximize=False, differentiable=False, max_grad_norm=None,
                 num_threads=None,
                 state_dtype=None, state_rounding=None, state_seed=None):
        defaults = dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, foreach=foreach,
                        capturable=False, maximize=False, differentiable=False)
        super().__init__(params, defaults, max_grad_norm=max_grad_norm,
                         state=(state_dtype, state_rounding, state_seed),
                         num_threads=num_threads, maximize=maximize, capturable=capturable,
                         differentiable=differentiable)



class Rprop(_FlatoptOptimizer):
    """``torch.optim.Rprop`` with flatopt's fused step. As in PyTorch, the learning rate is
    the initial step size (it matters on a parameter's first update only) and the groups have
    no weight decay (a group given a ``weight_decay`` gets flatopt's coupled one)."""

    _kind = _lib.RPROP
    _names = ("prev", "step_size", None)
    _fields = {"etas": ("eta_minus", "eta_plus"), "step_sizes": ("min_step_size", "max_step_size")}

    def __init__(self, params, lr=1e-2, etas=(0.5, 1.2), step_sizes=(1e-6, 50), *,
                 capturable=False, foreach=None, maximize=False, differentiable=False,
                 max_grad_norm=None, num_threads=None,
                 state_dtype=None, state_rounding=None, state_seed=None):
        defaults = dict(lr=lr, etas=tuple(etas), step_sizes=tuple(step_sizes),
                        foreach=foreach, maximize=False, differentiable=False,
                        capturable=False)
        super().__init__(params, defaults, max_grad_norm=max_grad_norm,
                         state=(state_dtype, state_rounding, state_seed),
                         num_threads=num_threads, maximize=maximize, capturable=capturable,
                         differentiable=differentiable)



class Lion(_FlatoptOptimizer):
    """Lion (Chen et al. 2023; PyTorch has none) with flatopt's fused step, in lion-pytorch's
    signature: ``u = sign(b1*m + (1-b1)*g)``, ``m = b2*m + (1-b2)*g``,
    ``p = p*(1 - lr*weight_decay) - lr*u`` (decoupled decay). State: ``exp_avg``."""

    _kind = _lib.LION
    _names = ("exp_avg", None, None)
    _fields = {"betas": ("b1", "b2")}
    _used = (True, False, False)

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, *,
                 max_grad_norm=None, num_threads=None,
                 state_dtype=None, state_rounding=None, state_seed=None):
        defaults = dict(lr=lr, betas=tuple(betas), weight_decay=weight_decay)
        super().__init__(params, defaults, max_grad_norm=max_grad_norm,
                         state=(state_dtype, state_rounding, state_seed),
                         num_threads=num_threads)

    def _coupled(self):
        return False


class AdaBelief(_FlatoptOptimizer):
    """AdaBelief (Zhuang et al. 2020; PyTorch has none) with flatopt's fused step, optax's
    rule: ``s = b2*s + (1-b2)*(g - m)^2 + eps_root``, ``p -= lr/(1-b1^t) * m /
    (sqrt(s/(1-b2^t)) + eps)``; coupled weight decay (the authors' package decouples by
    default: use ``AdamW``-style decay through ``weight_decay`` of the pipeline there). State:
    ``exp_avg``, ``exp_avg_var`` (the authors' names)."""

    _kind = _lib.ADABELIEF
    _names = ("exp_avg", "exp_avg_var", None)
    _fields = {"betas": ("b1", "b2"), "eps": "eps", "eps_root": "eps_root"}

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-16, weight_decay=0, *,
                 eps_root=1e-16, max_grad_norm=None, num_threads=None,
                 state_dtype=None, state_rounding=None, state_seed=None):
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, eps_root=eps_root,
                        weight_decay=weight_decay)
        super().__init__(params, defaults, max_grad_norm=max_grad_norm,
                         state=(state_dtype, state_rounding, state_seed),
                         num_threads=num_threads)



class Yogi(_FlatoptOptimizer):
    """Yogi (Zaheer et al. 2018; PyTorch has none) with flatopt's fused step, optax's rule
    (``v = v - (1-b2)*sign(v - g^2)*g^2``; both moments start from ``initial_accumulator``)
    in torch-optimizer's signature; coupled weight decay. State: ``exp_avg``, ``exp_avg_sq``."""

    _kind = _lib.YOGI
    _names = ("exp_avg", "exp_avg_sq", None)
    _fields = {"betas": ("b1", "b2"), "eps": "eps", "initial_accumulator": "initial_accumulator"}

    def __init__(self, params, lr=1e-2, betas=(0.9, 0.999), eps=1e-3,
                 initial_accumulator=1e-6, weight_decay=0, *, max_grad_norm=None,
                 num_threads=None,
                 state_dtype=None, state_rounding=None, state_seed=None):
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps,
                        initial_accumulator=initial_accumulator, weight_decay=weight_decay)
        super().__init__(params, defaults, max_grad_norm=max_grad_norm,
                         state=(state_dtype, state_rounding, state_seed),
                         num_threads=num_threads)



class Lamb(_FlatoptOptimizer):
    """LAMB (You et al. 2019; PyTorch has none) with flatopt's two passes, optax's rule: Adam's
    direction ``u = (m/(1-b1^t)) / (sqrt(v/(1-b2^t)) + eps) + weight_decay*p`` scaled per
    parameter tensor by ``||p|| / ||u||``. ``weight_decay`` is the rule's own (added to ``u``).
    State: ``exp_avg``, ``exp_avg_sq``."""

    _kind = _lib.LAMB
    _names = ("exp_avg", "exp_avg_sq", None)
    _fields = {"betas": ("b1", "b2"), "eps": "eps"}

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0, *,
                 max_grad_norm=None, num_threads=None,
                 state_dtype=None, state_rounding=None, state_seed=None):
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
        super().__init__(params, defaults, max_grad_norm=max_grad_norm,
                         state=(state_dtype, state_rounding, state_seed),
                         num_threads=num_threads)

    def _coupled(self):
        return False


class Lars(_FlatoptOptimizer):
    """LARS (You et al. 2017; PyTorch has none) with flatopt's two passes, optax's rule:
    ``x = g + weight_decay*p``, per parameter tensor ``r = trust_coefficient * ||p|| / (||x||
    + eps)``, ``m = momentum*m + lr*r*x``, ``p -= m`` (Nesterov: ``p -= lr*r*x + momentum*m``).
    State: ``momentum_buffer``."""

    _kind = _lib.LARS
    _names = ("momentum_buffer", None, None)
    _fields = {"momentum": "momentum", "trust_coefficient": "trust_coefficient", "eps": "eps"}
    _used = (True, False, False)

    def __init__(self, params, lr=1.0, momentum=0.9, weight_decay=0.0, trust_coefficient=1e-3,
                 eps=0.0, nesterov=False, *, max_grad_norm=None, num_threads=None,
                 state_dtype=None, state_rounding=None, state_seed=None):
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                        trust_coefficient=trust_coefficient, eps=eps, nesterov=nesterov)
        super().__init__(params, defaults, max_grad_norm=max_grad_norm,
                         state=(state_dtype, state_rounding, state_seed),
                         num_threads=num_threads)

    def _fill_base(self, base, group):
        super()._fill_base(base, group)
        base.nesterov = int(bool(group["nesterov"]))

    def _coupled(self):
        return False


class Novograd(_FlatoptOptimizer):
    """NovoGrad (Ginsburg et al. 2019; PyTorch has none) with flatopt's two passes, optax's
    rule: per parameter tensor ``nu = ||g||^2`` (first step), then ``b2*nu + (1-b2)*||g||^2``;
    ``m = b1*m + g / (sqrt(nu) + eps) + weight_decay*p``, ``p -= lr*m``. State: ``exp_avg``,
    ``exp_avg_sq`` (its element 0 is ``nu``)."""

    _kind = _lib.NOVOGRAD
    _names = ("exp_avg", "exp_avg_sq", None)
    _fields = {"betas": ("b1", "b2"), "eps": "eps"}

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.25), eps=1e-6, weight_decay=0.0, *,
                 max_grad_norm=None, num_threads=None,
                 state_dtype=None, state_rounding=None, state_seed=None):
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
        super().__init__(params, defaults, max_grad_norm=max_grad_norm,
                         state=(state_dtype, state_rounding, state_seed),
                         num_threads=num_threads)

    def _coupled(self):
        return False


class Adafactor(_FlatoptOptimizer):
    """``torch.optim.Adafactor`` with flatopt's passes (docs/numerics.md, "Adafactor"): as in
    PyTorch, a parameter of two or more dims keeps row and column averages of its squared
    gradients over its last two dims (``row_var`` of shape ``(..., rows, 1)``, ``col_var`` of
    ``(..., 1, cols)`` in the state dict; the parameter is registered with the shape
    ``(rows, cols)``, the library factoring each matrix of the batch), any other one an
    elementwise ``variance``. The relative step ``min(lr, 1/sqrt(t))``, the parameter scale
    ``max(eps[1], rms(p))``, clipping of the update's RMS at ``d`` and the decay
    ``p *= 1 - lr*weight_decay`` are PyTorch's. ``eps[0]`` None is float32's machine epsilon
    (also for 16-bit parameters, whose moments and master weights are float32; PyTorch takes
    the parameter dtype's). The state is float32 only (``state_dtype`` compressed is refused,
    as the library refuses it for Adafactor)."""

    _kind = _lib.ADAFACTOR
    _names = (None, "variance", None)
    _static = ("beta2_decay", "eps", "d")
    _used = (False, True, False)

    def __init__(self, params, lr=1e-2, beta2_decay=-0.8, eps=(None, 1e-3), d=1.0,
                 weight_decay=0.0, *, foreach=None, maximize=False, max_grad_norm=None,
                 num_threads=None, state_dtype=None, state_rounding=None, state_seed=None):
        # torch.optim.Adafactor's checks, in its words (InvalidArgumentError is a ValueError)
        eps = tuple(eps)
        for ok, text in ((float(lr) >= 0.0, f"Learning rate should be >= 0 but is: {lr}"),
                         (beta2_decay <= 0.0, f"beta2_decay should be <= 0 but is: {beta2_decay}"),
                         (len(eps) == 2, f"eps should be a pair (eps1, eps2), got {eps!r}"),
                         (eps[0] is None or eps[0] >= 0.0,
                          f"epsilon1 should be >= 0 but is: {eps[0]}"),
                         (eps[-1] >= 0.0, f"epsilon2 should be >= 0 but is: {eps[-1]}"),
                         (d >= 1.0, f"Clipping threshold d should be >= 1 but is: {d}"),
                         (weight_decay >= 0.0,
                          f"weight_decay should be >= 0 but is: {weight_decay}")):
            if not ok:
                raise InvalidArgumentError(f"Adafactor: {text}")
        defaults = dict(lr=lr, beta2_decay=beta2_decay, eps=eps, d=d,
                        weight_decay=weight_decay, foreach=foreach, maximize=False)
        super().__init__(params, defaults, max_grad_norm=max_grad_norm,
                         state=(state_dtype, state_rounding, state_seed),
                         num_threads=num_threads, maximize=maximize)

    def _fill_base(self, base, group):
        eps1, eps2 = group["eps"]
        base.decay_rate = -float(group["beta2_decay"])
        base.eps = _F32_EPS if eps1 is None else float(eps1)
        base.eps_scale = float(eps2)
        base.clipping_threshold = float(group["d"])

    def _coupled(self):
        return False

    def _shape_of(self, p):
        return (p.shape[-2], p.shape[-1]) if p.dim() >= 2 else None

    def _to_torch_state(self, st, group, p):
        out = super()._to_torch_state(st, group, p)
        if out and p.dim() >= 2 and "variance" in out:
            # v holds rows averages then cols averages per matrix
            rows, cols = p.shape[-2:]
            v = out.pop("variance").view(-1, rows + cols)
            out["row_var"] = v[:, :rows].reshape(*p.shape[:-1], 1).clone()
            out["col_var"] = v[:, rows:].reshape(*p.shape[:-2], 1, cols).clone()
        return out

    def _from_torch_state(self, st, p):
        out = super()._from_torch_state(st, p)
        factored = p.dim() >= 2
        keys = ("row_var", "col_var") if factored else ("variance",)
        wrong = [k for k in ("row_var", "col_var", "variance") if k in st and k not in keys]
        if wrong:
            raise CheckpointError(
                f"Adafactor: a parameter of shape {tuple(p.shape)} keeps "
                f"{' and '.join(keys)}, the state has {', '.join(wrong)}"
            )
        if not factored or not any(k in st for k in keys):
            return out
        rows, cols = p.shape[-2:]
        want = {"row_var": (*p.shape[:-1], 1), "col_var": (*p.shape[:-2], 1, cols)}
        parts = []
        for k in keys:
            v = st.get(k)
            if not isinstance(v, torch.Tensor) or not v.is_floating_point():
                raise CheckpointError(
                    f"Adafactor: state '{k}' of a parameter of shape {tuple(p.shape)} must be a "
                    f"float32 tensor of shape {want[k]}, got {v!r:.60}"
                )
            if tuple(v.shape) != want[k]:
                raise CheckpointError(
                    f"Adafactor: state '{k}' of a parameter of shape {tuple(p.shape)} must have "
                    f"the shape {want[k]}, got {tuple(v.shape)}"
                )
            parts.append(v.detach().to(torch.float32).reshape(-1, rows if k == "row_var"
                                                              else cols))
        if "step" not in st:
            out["step"] = max(out["step"], 1)
        out["v"] = torch.cat(parts, dim=1).reshape(-1)
        return out


class Lookahead(_TorchOptimizer):
    """timm's ``Lookahead(optimizer, alpha, k)``, fused into the base optimizer's pass.

    ``optimizer`` is a flatopt.torch optimizer; from now on its step also keeps slow weights
    (initialised from the parameters' current values) and every ``k``-th update moves them
    ``alpha`` of the way to the fast weights and copies them back, in the same pass over memory
    as the update. Step, zero_grad, schedulers and state dicts work through this object (the
    base optimizer's ``param_groups`` are shared). The per-parameter slow weights appear in the
    state dict as ``lookahead_slow_buff`` (timm's name). Unlike timm, whose slow weights start
    at the first sync, they start at the weights at wrapping time (the Lookahead paper's rule).
    ``slow_dtype="bfloat16"`` holds the slow weights in bfloat16 (rounded as the base
    optimizer's ``state_rounding`` says; default ``"float32"``).
    """

    _step_supports_amp_scaling = True
    profile_hook_step = staticmethod(_profile_hook_step)

    def __init__(self, optimizer, k=5, alpha=0.5, *, slow_dtype=None):
        if not isinstance(optimizer, _FlatoptOptimizer):
            raise DTypeError(
                "Lookahead wraps a flatopt.torch optimizer (SGD, Adam, AdamW, ..., Adafactor), "
                "got "
                f"{type(optimizer).__name__}"
            )
        if optimizer._lookahead is not None:
            raise InvalidStateError("this optimizer is already wrapped by a Lookahead")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InvalidArgumentError(f"Lookahead k must be an integer >= 1, got {k!r}")
        alpha = float(alpha)
        if not (0.0 <= alpha <= 1.0):
            raise InvalidArgumentError(f"Lookahead alpha must lie in [0, 1], got {alpha}")
        slow = _check_state_options({"slow_dtype": slow_dtype or "float32"})["slow_dtype"]
        self._base = optimizer
        optimizer._set_lookahead(k, alpha, _lib.STATE_DTYPES[slow])
        super().__init__(optimizer.param_groups, optimizer.defaults)
        self.defaults.update(lookahead_k=k, lookahead_alpha=alpha)
        self.k = k
        self.alpha = alpha
        self.slow_dtype = slow

    # The base optimizer's groups and state are this object's.
    @property
    def param_groups(self):
        return self._base.param_groups

    @param_groups.setter
    def param_groups(self, value):
        if getattr(self, "_base", None) is not None and value:
            self._base.param_groups = value

    @property
    def state(self):
        return self._base.state

    @state.setter
    def state(self, value):
        pass  # torch.optim.Optimizer.__init__ sets it; the base optimizer's is used

    def add_param_group(self, param_group):
        if any(param_group is g for g in self._base.param_groups):
            return  # Optimizer.__init__ re-adding the shared groups
        self._base.add_param_group(param_group)

    def step(self, closure=None):
        # torch.amp.GradScaler sets grad_scale and found_inf on this object: the base's step
        # reads them from itself.
        amp = [(k, getattr(self, k)) for k in ("grad_scale", "found_inf", "_flatopt_check")
               if k in self.__dict__]
        base = self._base
        for k, v in amp:
            setattr(base, k, v)
        # This object's step wrapper ran the hooks (global ones and this object's) and the
        # profiler range; the base's wrapper would run the global hooks a second time, so
        # its step runs unwrapped unless something hooks the base itself: step hooks
        # registered on it, or an LR scheduler built on it (which wraps its bound `step` to
        # note that it was called).
        if ("step" in base.__dict__ or base._optimizer_step_pre_hooks
                or base._optimizer_step_post_hooks):
            step = base.step
        else:
            step = type(base).step
            step = functools.partial(getattr(step, "__wrapped__", step), base)
        try:
            return step(closure)
        finally:
            for k, _ in amp:
                delattr(base, k)

    def state_dict(self):
        return self._base.state_dict()

    def load_state_dict(self, state_dict):
        self._base.load_state_dict(state_dict)

    def zero_grad(self, set_to_none=True):
        self._base.zero_grad(set_to_none)


class GradScaler(_TorchGradScaler):
    """``torch.amp.GradScaler`` (same arguments, state dict and rules) whose ``step()`` leaves
    the inf/NaN check of a flatopt.torch optimizer's gradients to flatopt's own pass.

    ``torch.amp.GradScaler`` works with these optimizers as with PyTorch's fused ones: it
    checks the gradients for inf/NaN in a pass of its own, then the optimizer divides by the
    scale in its pass. This subclass hands the scale to the optimizer and lets the library
    check where that costs less: in the norm pass it makes anyway with ``max_grad_norm`` (no
    extra pass at all), or in its scan of the bits of 16-bit gradients when every parameter is
    bfloat16 / float16. Otherwise (float32 gradients without ``max_grad_norm``, where the
    library would sum squares) it leaves the check to ``torch.amp.GradScaler``. A step with a non-finite gradient changes nothing and ``update()`` backs the scale off,
    as with ``torch.amp.GradScaler``; the trajectories are the same bits. Other optimizers,
    a step after ``unscale_()`` and a disabled scaler take ``torch.amp.GradScaler``'s path.
    """

    def step(self, optimizer, *args, **kwargs):
        base = optimizer._base if isinstance(optimizer, Lookahead) else optimizer
        if args or kwargs or not self._enabled or not isinstance(base, _FlatoptOptimizer):
            return super().step(optimizer, *args, **kwargs)
        state = self._per_optimizer_states[id(optimizer)]  # a defaultdict: READY when new
        if state["stage"] is not _OptState.READY or not base._inf_check_is_cheap():
            # after unscale_() (the gradients are unscaled), a second step() (its error), or
            # where GradScaler's check is the cheaper one
            return super().step(optimizer)
        scale, _ = self._check_scale_growth_tracker("step")
        optimizer._flatopt_check = float(scale)
        base.__dict__.pop("_flatopt_found", None)
        try:
            retval = optimizer.step()
        finally:
            del optimizer._flatopt_check
        found = bool(base.__dict__.pop("_flatopt_found", False))
        state["found_inf_per_device"] = {
            scale.device: torch.full((), float(found), dtype=torch.float32, device=scale.device)
        }
        state["stage"] = _OptState.STEPPED
        return retval


if __name__ == "__main__":  # python -m flatopt.torch --build-ext
    import sys

    sys.exit(_torch_ext.main(sys.argv[1:]))
