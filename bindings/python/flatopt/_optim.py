"""Optimizers: optax-style base optimizers, Lookahead, and braintools-style classes.

Every optimizer object owns one handle of the C library. ``register_trainable_weights`` hands
the library the addresses of your parameter arrays (and optionally of gradient arrays that
stay put); ``update`` is then a single foreign call that updates the parameters in place.
"""

from __future__ import annotations

import copy
import ctypes
import functools
import math
import threading
from collections.abc import Mapping

import numpy as np

from . import _groups, _lib, _tree, _validate
from ._buffers import (
    DTYPE_F32,
    DTYPE_NAMES,
    F32,
    as_mixed_view,
    as_view,
    describe,
    pointer,
)
from ._errors import (
    ArgumentTypeError,
    DTypeError,
    InternalError,
    InvalidArgumentError,
    InvalidStateError,
    OverlapError,
    StructureError,
    UnsupportedError,
    CheckpointError,
)
from ._schedules import LRScheduler, _Composite, _Count, _Handle

__all__ = [
    "BaseOptimizer",
    "sgd",
    "adam",
    "adamw",
    "radam",
    "adagrad",
    "rmsprop",
    "Optimizer",
    "Lookahead",
    "SGD",
    "Momentum",
    "MomentumNesterov",
    "Adam",
    "AdamW",
    "RAdam",
]

_STATE_FORMAT = "flatopt"
_STATE_FORMAT_VERSION = 1


def _check_lr(lr, what):
    """A learning rate: a schedule object, or a number (as a float) that is finite and >= 0
    (the library checks it too, and that it is finite as f32; this says "learning rate", as
    braintools does)."""
    if isinstance(lr, LRScheduler):
        return lr
    try:
        value = _validate.real(what, lr)
    except ArgumentTypeError:
        raise ArgumentTypeError(
            f"invalid {what} = {_validate.show(lr)}: must be a float or a flatopt schedule "
            f"(e.g. flatopt.StepLR(...)), got {describe(lr)}"
        ) from None
    return _validate.nonneg_finite(what, value, "the learning rate", given=lr)


def _optional_positive(name, value):
    """None disables (the C value 0). Anything else must be > 0, as braintools requires: a 0,
    which the C API reads as "off", is refused here (pass None); the library checks the rest
    (finite, > 0)."""
    out = _validate.optional_real(name, value, off=None)
    if out is not None and out == 0.0:
        raise InvalidArgumentError(
            f"invalid {name} = {_validate.show(value)}: must be > 0, or None for no clipping"
        )
    return out


# Compressed optimizer state (docs/numerics.md, "Compressed state"): the options every
# optimizer takes, and which of them an optax-style function (a base optimizer without state of
# its own) takes. Values are kept as given (names), checked here, mapped to the C values in
# Optimizer.__init__.
_STATE_DEFAULTS = {
    "state_dtype": "float32",
    "state_rounding": "stochastic",
    "state_seed": 0,
    "state_index_offset": 0,
    "slow_dtype": "float32",
}


def _state(*values):
    """The compressed-state options given (not None), by name, in the order of
    ``_STATE_DEFAULTS``: ``_state(state_dtype, state_rounding, state_seed, ...)``."""
    return {k: v for k, v in zip(_STATE_DEFAULTS, values) if v is not None}


def _check_state_options(options):
    """The compressed-state options in ``options`` (a dict name -> value, none of them None),
    checked: ``state_dtype`` one of ``"float32"``, ``"bfloat16"``, ``"int8"``, ``slow_dtype``
    likewise (the library refuses ``"int8"``), ``state_rounding`` ``"stochastic"`` or
    ``"nearest"``, ``state_seed`` and ``state_index_offset`` integers in ``[0, 2**64)``."""
    out = {}
    for key, value in options.items():
        if key in ("state_dtype", "slow_dtype"):
            _validate.choice(key, value, _lib.STATE_DTYPES)
        elif key == "state_rounding":
            _validate.choice(key, value, _lib.STATE_ROUNDING)
        else:
            value = _validate.integer(key, value, 0, _validate.U64_MAX)
        out[key] = value
    return out


def _merge_state_options(base, own):
    """The options of a base optimizer (``adam(..., state_dtype=...)``) and those given to the
    optimizer wrapping it; the same option given to both with other values is refused."""
    merged = dict(base)
    for key, value in own.items():
        if key in merged and merged[key] != value:
            raise InvalidArgumentError(
                f"invalid {key} = {_validate.show(value)}: the base optimizer was made with "
                f"{key}={_validate.show(merged[key])} (give it in one place)"
            )
        merged[key] = value
    return merged


# ---------------------------------------------------------------------------------------------
# optax-style base optimizers.


class BaseOptimizer:
    """A base optimizer and its hyperparameters, as returned by :func:`sgd`, :func:`adam`,
    :func:`adamw` and :func:`radam`. It holds no state: wrap it in :class:`Lookahead` (which
    owns the state) to use it. ``state_options``: the compressed-state options given to the
    function (``state_dtype``, ``state_rounding``, ``state_seed``), which the wrapping
    optimizer's state takes."""

    def __init__(self, kind, name, learning_rate, state_options=None, **hyper):
        self.kind = kind
        self.name = name
        self.learning_rate = _check_lr(learning_rate, "learning_rate")
        self.state_options = _check_state_options(state_options or {})
        # Checked here, so that a bad value is reported by the function the user called.
        for key, value in hyper.items():
            if key in ("nesterov", "amsgrad", "centered", "eps_inside_sqrt"):
                hyper[key] = _validate.flag(key, value)
            elif key == "momentum":
                hyper[key] = None if value is None else _validate.real(key, value)
            else:
                hyper[key] = _validate.real(key, value)
        self.hyperparams = hyper

    def _fill(self, base):
        h = self.hyperparams
        if self.kind == _lib.SGD:
            base.momentum = h["momentum"] or 0.0
            base.dampening = h["dampening"]
            base.nesterov = int(h["nesterov"])
        elif self.kind in (_lib.ADAGRAD, _lib.RMSPROP):
            base.eps = h["eps"]
            base.eps_inside_sqrt = int(h["eps_inside_sqrt"])
            if self.kind == _lib.ADAGRAD:
                base.lr_decay = h["lr_decay"]
                base.initial_accumulator = h["initial_accumulator_value"]
            else:
                base.alpha = h["alpha"]
                base.momentum = h["momentum"] or 0.0
                base.centered = int(h["centered"])
                base.initial_accumulator = h["initial_scale"]
        else:
            base.b1 = h["b1"]
            base.b2 = h["b2"]
            base.eps = h["eps"]
            if self.kind == _lib.ADAM:
                base.amsgrad = int(h["amsgrad"])
            if self.kind == _lib.ADAMW:
                base.decoupled_weight_decay = h["weight_decay"]

    def __repr__(self):
        items = {**self.hyperparams, **getattr(self, "state_options", {})}
        args = ", ".join(f"{k}={v!r}" for k, v in items.items())
        return f"flatopt.{self.name}({self.learning_rate!r}, {args})"


def sgd(learning_rate, momentum=None, nesterov=False, dampening=0.0, state_dtype=None,
        state_rounding=None, state_seed=None):
    """SGD (optax signature). ``momentum`` None or 0: plain SGD; else PyTorch's momentum with
    ``dampening`` (``b = g`` on the first update, then ``b = momentum*b + (1-dampening)*g``);
    ``nesterov`` uses ``g + momentum*b``. ``learning_rate``: a float or a schedule."""
    return BaseOptimizer(
        _lib.SGD, "sgd", learning_rate, _state(state_dtype, state_rounding, state_seed),
        momentum=momentum, nesterov=nesterov, dampening=dampening,
    )


def adam(learning_rate, b1=0.9, b2=0.999, eps=1e-8, amsgrad=False, state_dtype=None,
         state_rounding=None, state_seed=None):
    """Adam (optax signature; eps outside the square root). ``amsgrad`` keeps the maximum of
    the raw second moment (PyTorch's definition)."""
    return BaseOptimizer(
        _lib.ADAM, "adam", learning_rate, _state(state_dtype, state_rounding, state_seed),
        b1=b1, b2=b2, eps=eps, amsgrad=amsgrad,
    )


def adamw(learning_rate, b1=0.9, b2=0.999, eps=1e-8, weight_decay=1e-2, state_dtype=None,
          state_rounding=None, state_seed=None):
    """AdamW (optax signature): decoupled weight decay scaled by the learning rate."""
    return BaseOptimizer(
        _lib.ADAMW, "adamw", learning_rate, _state(state_dtype, state_rounding, state_seed),
        b1=b1, b2=b2, eps=eps, weight_decay=weight_decay,
    )


def radam(learning_rate, b1=0.9, b2=0.999, eps=1e-8, state_dtype=None, state_rounding=None,
          state_seed=None):
    """RAdam (optax signature, threshold 5)."""
    return BaseOptimizer(_lib.RADAM, "radam", learning_rate,
                         _state(state_dtype, state_rounding, state_seed), b1=b1, b2=b2, eps=eps)


def adagrad(learning_rate, initial_accumulator_value=0.1, eps=1e-7, eps_inside_sqrt=True,
            lr_decay=0.0, state_dtype=None, state_rounding=None, state_seed=None):
    """Adagrad with optax's defaults (``eps`` inside the square root:
    ``p -= lr * g / sqrt(s + eps)``, ``s`` from ``initial_accumulator_value``);
    ``eps_inside_sqrt=False`` and ``lr_decay`` give PyTorch's form."""
    return BaseOptimizer(
        _lib.ADAGRAD, "adagrad", learning_rate, _state(state_dtype, state_rounding, state_seed),
        initial_accumulator_value=initial_accumulator_value, eps=eps,
        eps_inside_sqrt=eps_inside_sqrt, lr_decay=lr_decay,
    )


def rmsprop(learning_rate, alpha=0.9, eps=1e-8, initial_scale=0.0, eps_inside_sqrt=True,
            centered=False, momentum=None, state_dtype=None, state_rounding=None, state_seed=None):
    """RMSprop with optax's defaults (``alpha`` is optax's ``decay``, ``eps_inside_sqrt`` its
    ``eps_in_sqrt``); ``momentum`` None or 0: none; ``eps_inside_sqrt=False`` and
    ``alpha=0.99`` give PyTorch's form."""
    return BaseOptimizer(
        _lib.RMSPROP, "rmsprop", learning_rate, _state(state_dtype, state_rounding, state_seed),
        alpha=alpha, eps=eps, initial_scale=initial_scale, eps_inside_sqrt=eps_inside_sqrt,
        centered=centered, momentum=momentum,
    )


# ---------------------------------------------------------------------------------------------
# The optimizer.


class Optimizer:
    """An optimizer over your float32 arrays (base class of :class:`Lookahead`, :class:`SGD`,
    :class:`Adam`, :class:`AdamW` and :class:`RAdam`).

    Usage::

        opt.register_trainable_weights(params)           # dict name -> array, or a list
        opt.update(grads)                                # same structure; params change in place

    or, with gradient arrays that stay the same objects from step to step (you write new
    values into them), with nothing marshalled per step::

        opt.register_trainable_weights(params, grads=grads)
        opt.update()                                     # one foreign call

    Every argument is checked before anything changes; errors raise subclasses of
    :class:`flatopt.FlatoptError` (also ``TypeError`` / ``ValueError`` / ...). One optimizer
    object may be used from several threads, one call at a time (calls are serialised).

    Compressed state (every optimizer class and optax-style function takes these keywords;
    docs/numerics.md, "Compressed state"): ``state_dtype`` ``"float32"`` (default),
    ``"bfloat16"`` or ``"int8"`` (8-bit blockwise, one float32 scale per 256 elements; refused
    for Rprop) holds the moments in 4, 2 or about 1 byte per element; ``state_rounding``
    ``"stochastic"`` (default; deterministic: a hash of ``state_seed``, the element's index and
    the step) or ``"nearest"`` for bfloat16 state; ``state_seed`` (0); ``state_index_offset``
    (0: the index of the first registered element in the whole model, for a shard, so that it
    rounds as one process would). :class:`Lookahead` also takes ``slow_dtype`` (``"float32"``,
    the default, or ``"bfloat16"``) for the slow weights. :attr:`state_bytes` reports the
    memory held.
    """

    def __init__(self, base, lr, *, lookahead, sync_period=5, alpha=0.5, weight_decay=0.0,
                 grad_clip_norm=None, grad_clip_value=None, nonfinite="skip", num_threads=1,
                 simd_tier=None, state_dtype=None, state_rounding=None, state_seed=None,
                 state_index_offset=None, slow_dtype=None):
        if not isinstance(base, BaseOptimizer):
            raise DTypeError(
                f"base_optimizer must be flatopt.sgd(...), flatopt.adam(...), "
                f"flatopt.adamw(...) or flatopt.radam(...), got {describe(base)}"
            )
        own = _check_state_options(
            _state(state_dtype, state_rounding, state_seed, state_index_offset, slow_dtype)
        )
        if "slow_dtype" in own and not _validate.flag("lookahead", lookahead):
            raise InvalidArgumentError(
                f"invalid slow_dtype = {_validate.show(slow_dtype)}: the slow weights are "
                "Lookahead's (lookahead=True)"
            )
        state = {**_STATE_DEFAULTS, **_merge_state_options(getattr(base, "state_options", {}), own)}
        self._lock = threading.RLock()
        self._base = base
        self._lr_given = lr
        self._lr = base.learning_rate if lr is None else _check_lr(lr, "lr")
        nonfinite_code = _validate.choice("nonfinite", nonfinite, _lib.NONFINITE)
        tier_code = _validate.choice(
            "simd_tier", simd_tier, {None: 0, **_lib.SIMD_TIERS}
        )
        num_threads = _validate.integer("num_threads", num_threads, 1, _validate.U32_MAX)
        self._lookahead = _validate.flag("lookahead", lookahead)
        weight_decay = _validate.real("weight_decay", weight_decay)
        grad_clip_norm = _optional_positive("grad_clip_norm", grad_clip_norm)
        grad_clip_value = _optional_positive("grad_clip_value", grad_clip_value)
        if self._lookahead:
            sync_period = _validate.integer("sync_period", sync_period, 1, _validate.U64_MAX)
            alpha = _validate.real("alpha", alpha)
        self._settings = dict(
            sync_period=sync_period, alpha=alpha, weight_decay=weight_decay,
            grad_clip_norm=grad_clip_norm, grad_clip_value=grad_clip_value,
            nonfinite=nonfinite, num_threads=num_threads, simd_tier=simd_tier, **own,
        )
        self._state_options = state

        cfg = _lib.new_config()
        cfg.base = ctypes.pointer(_lib.new_base_params(base.kind))
        base._fill(cfg.base.contents)
        cfg.nonfinite = nonfinite_code
        cfg.weight_decay = weight_decay
        cfg.grad_clip_norm = grad_clip_norm or 0.0  # None: off (0 in the C API)
        cfg.grad_clip_value = grad_clip_value or 0.0
        cfg.num_threads = num_threads
        cfg.simd_tier = tier_code
        if self._lookahead:
            cfg.lookahead = 1
            cfg.sync_period = sync_period
            cfg.alpha = alpha
        cfg.state_dtype = _lib.STATE_DTYPES[state["state_dtype"]]
        cfg.state_rounding = _lib.STATE_ROUNDING[state["state_rounding"]]
        cfg.state_seed = state["state_seed"]
        cfg.state_index_offset = state["state_index_offset"]
        cfg.slow_dtype = _lib.STATE_DTYPES[state["slow_dtype"]]
        self._config = cfg
        # A ChainedScheduler / SequentialLR is computed here and sets the groups' rates
        # (the library runs one schedule per optimizer): the library sees a constant rate.
        self._driver = self._lr if isinstance(self._lr, _Composite) else None
        self._schedule = (
            self._lr if isinstance(self._lr, LRScheduler) and self._driver is None else None
        )
        if self._driver is not None:
            self._require_groups(f"{type(self).__name__}(lr={type(self._lr).__name__}(...))")
            if not self._driver.base_lr > 0.0:
                raise InvalidArgumentError(
                    f"invalid lr = {type(self._lr).__name__}(...) with base_lr "
                    f"{_validate.show(self._driver.base_lr)}: a schedule that sets the groups' "
                    "learning rates needs a base_lr > 0"
                )
            cfg.lr = self._driver.base_lr
        elif self._schedule is not None:
            self._sched_struct = self._schedule._struct()
            cfg.schedule = ctypes.pointer(self._sched_struct)
            cfg.schedule_manual = 0 if self._schedule.per_update else 1
        else:
            cfg.lr = self._lr
        # Validates the whole configuration now (the library's message names the bad field).
        self._handle = _Handle(cfg, type(self).__name__)
        if self._schedule is not None:
            self._schedule._attach(self)
            self._schedule._replay(self._handle.ptr)
        self._registered = False
        self._keys = None  # the leaves' names (param_names)
        self._tree = None  # the registered structure (a _tree.Node)
        self._labels = ()  # each leaf's path as indexing reads: "['a'][0]"
        self._states = ()  # a _tree.StateLink per registered brainstate state
        self._state_leaf = ()  # per leaf: True where it is (part of) a state's value
        self._shapes = ()
        self._params = ()  # ndarray views, in registration order
        self._param_objs = ()  # the objects given (kept alive: the library holds pointers)
        self._grads = None  # registered gradient views, or None
        self._fast = None  # (handle, raw step bound to it, arrays): update()'s hot path
        self._grad_objs = None
        self._ptrs = None  # per-call gradient pointer array
        self._grad_cache = None  # last per-call gradient objects (ndarrays only)
        self._grad_keep = None
        self._grouped = False  # registered as a list of groups (or add_param_group was used)
        self._layout = None  # the groups' trees, flattened (a _groups.Layout)
        self._options = [{}]  # each group's checked options (keys given besides "params")
        self._cgroups = [0]  # each group's index in the library
        self._tree_alt = None  # the list of the groups' trees, when they merged into one dict
        self._group_dicts = []  # param_groups
        self._lr_set = None  # group 0's learning rate set through current_lr / param_groups
        self._gcodes = None  # each leaf's gradient format (flatopt_dtype), None: all float32
        self._copies = None  # each leaf's 16-bit copy (uint16 view, format), or None
        self._copy_objs = None
        self._loss_scale = None  # the attached DynamicLossScale
        self._grad_dtype = None  # grad_dtype as given to register_trainable_weights
        if self._driver is not None:
            self._driver._attach_driver(self)
            self._drive(self._driver.get_lr()[0])

    # -- registration --------------------------------------------------------------------

    def _leaf_label(self, what, i):
        return what + self._labels[i]

    def register_trainable_weights(self, params, grads=None, copies=None, grad_dtype=None):
        """Registers the parameters: a dict name -> array, a list of arrays, or a tree of
        dicts, lists and tuples nested to any depth (any JAX pytree when ``jax`` is imported),
        whose leaves are float32, C-contiguous, writeable arrays (NumPy arrays, PyTorch CPU
        tensors, or objects exposing ``__array_interface__`` / the buffer protocol), updated
        in place, or brainstate states (``model.states(brainstate.ParamState)``): flatopt
        updates float32 host copies of their values and assigns ``state.value`` after every
        update, each leaf of the value as an array of its own type, dtype and shape. The
        objects must stay alive (the optimizer keeps a reference). Order of the leaves and
        their names (:attr:`param_names`): :mod:`flatopt._tree` and docs/numerics.md,
        "Parameter trees".

        ``params`` may also be a PyTorch-style list of parameter groups,
        ``[{"params": tree, "lr": 1e-3, "weight_decay": 0.0, "betas": (0.9, 0.95)}, ...]``:
        each group's keys besides ``params`` are optional (what a group leaves out is the
        optimizer's), any other key is refused by name (:mod:`flatopt._groups`). Clipping by
        global norm, the non-finite check, the step counter, the schedule and Lookahead stay
        global. The gradients (here and in :meth:`update`) are then one dict over all groups
        when every group's ``params`` is a dict and no name is in two groups, else a list with
        one entry per group (the merged dict also accepts that list). See
        :attr:`param_groups` and docs/numerics.md, "Parameter groups".

        ``grads`` (optional, same structure and shapes): gradient arrays that stay the same
        objects for the whole training; write each step's gradients into them and call
        ``update()`` without arguments. They may be float32, or 16-bit for mixed precision:
        NumPy float16, ``ml_dtypes.bfloat16`` arrays, or PyTorch bfloat16 / float16 CPU
        tensors, widened exactly inside the update (the master parameters and the state stay
        float32). Gradients given with each ``update(grads)`` instead are in the format
        ``grad_dtype`` names (``"float32"``, the default, ``"bfloat16"`` or ``"float16"``).

        ``copies`` (optional, same structure and shapes): 16-bit arrays or tensors (float16
        or bfloat16, e.g. the weights of a model kept in bf16) that every applied update
        writes from the new parameters in the same pass (round to nearest even); written at
        registration too. See docs/numerics.md, "16-bit floats".

        The current parameter values become the Lookahead slow weights. Registering again
        replaces the registration and starts from fresh state (moments, counters), keeping the
        schedule's manual steps and a learning rate set through :attr:`current_lr`.
        """
        grouped = _groups.is_group_list(params)
        if grouped:
            options = [
                _groups.check_group(g, self._base, f"params[{i}]") for i, g in enumerate(params)
            ]
            trees = [g["params"] for g in params]
        else:
            options, trees = [{}], [params]
        lay = _groups.Layout(trees, grouped)
        values, states = lay.leaves, lay.states
        _groups.check_distinct_states(states)
        state_leaf = [False] * len(values)
        for link in states:
            state_leaf[link.first:link.stop] = [True] * (link.stop - link.first)
        views = [
            _tree.host_copy(v, lab) if in_state else as_view(v, lab, True)
            for v, lab, in_state in zip(values, lay.labels_in, state_leaf)
        ]
        shapes = tuple(v.shape for v in views)
        root, alt, merged = lay.root(grouped)
        labels = lay.final_labels(grouped, merged)
        keys = lay.final_names(grouped, merged)

        gviews = None
        gvalues = None
        declared = _validate.choice(
            "grad_dtype", grad_dtype, {None: None, **{v: k for k, v in DTYPE_NAMES.items()}}
        )
        gcodes = [DTYPE_F32 if declared is None else declared] * len(values)
        if grads is not None:
            groot = alt if alt is not None and isinstance(grads, (list, tuple)) else root
            gvalues = _tree.match(groot, grads, "grads", len(values))
            gviews = []
            for i, (g, lab, shape) in enumerate(zip(gvalues, labels, shapes)):
                v, code = self._mixed_view(g, "grads" + lab, shape, False, True)
                if declared is not None and code != declared:
                    raise DTypeError(
                        f"grads{lab}: {DTYPE_NAMES[code]}, but grad_dtype is "
                        f"{DTYPE_NAMES[declared]!r}"
                    )
                gviews.append(v)
                gcodes[i] = code
        cviews = None
        cvalues = None
        if copies is not None:
            croot = alt if alt is not None and isinstance(copies, (list, tuple)) else root
            cvalues = _tree.match(croot, copies, "copies", len(values))
            cviews = [
                self._mixed_view(c, "copies" + lab, shape, True, True, allow_f32=False)
                for c, lab, shape in zip(cvalues, labels, shapes)
            ]
        mixed = cviews is not None or any(c != DTYPE_F32 for c in gcodes)
        if mixed and states:
            raise UnsupportedError(
                "register_trainable_weights: 16-bit gradients or copies with brainstate "
                "states are not supported (register arrays or tensors)"
            )
        if mixed and _lib.optimizer_add_param_with_options is None:
            raise UnsupportedError(
                f"register_trainable_weights: the library at {_lib.library_path} is too old "
                "for 16-bit gradients and copies"
            )
        need_groups = grouped and (len(options) > 1 or any(options))
        if need_groups or self._lr_set is not None:
            self._require_groups("register_trainable_weights (parameter groups)")

        with self._lock:
            handle = _Handle(self._config, type(self).__name__)
            try:
                cgroups = []
                for g, opts in enumerate(options):
                    lr = opts.get("lr", self._default_group_lr(g))
                    if g == 0 and not _groups.has_rule_options(opts):
                        cgroups.append(0)
                        if lr is not None:
                            _lib.check(_lib.optimizer_set_group_lr(handle.ptr, 0, lr),
                                       _group_context(grouped, "lr"))
                        if "weight_decay" in opts:
                            _lib.check(
                                _lib.optimizer_set_group_weight_decay(
                                    handle.ptr, 0, opts["weight_decay"]
                                ),
                                _group_context(grouped, "weight_decay"),
                            )
                    else:
                        if lr is not None:
                            opts = dict(opts, lr=lr)
                        cgroups.append(
                            _groups.add_c_group(handle, self._base, opts, f"params[{g}]")
                        )
                for i, v in enumerate(views):
                    # NULL gradient: this buffer's gradients come with each update(grads).
                    gptr = None if gviews is None else (pointer(gviews[i]) or None)
                    cg = cgroups[lay.group_of[i]]
                    rc = _factor_shape(self._base, shapes[i])
                    if mixed or rc is not None:
                        o = _lib.ParamOptions()
                        _lib.check(_lib.param_options_init(ctypes.byref(o), ctypes.sizeof(o)))
                        o.grad_dtype = gcodes[i]
                        o.group = cg
                        if rc is not None:
                            o.rows, o.cols = rc
                        if cviews is not None:
                            o.copy = pointer(cviews[i][0]) or None
                            o.copy_dtype = cviews[i][1]
                        st = _lib.optimizer_add_param_with_options(
                            handle.ptr, pointer(v) or None, gptr, v.size, ctypes.byref(o)
                        )
                    elif cg == 0:
                        st = _lib.optimizer_add_param(handle.ptr, pointer(v) or None, gptr, v.size)
                    else:
                        st = _lib.optimizer_add_param_to_group(
                            handle.ptr, cg, pointer(v) or None, gptr, v.size
                        )
                    if st != _lib.OK:
                        self._raise_registration(st, labels)
                if self._schedule is not None:
                    self._schedule._replay(handle.ptr)
                if self._loss_scale is not None:
                    self._apply_loss_scale(handle, self._loss_scale)
                if self._driver is not None:
                    rates = self._driver_rates(self._driver.get_lr()[0], options)
                    for cg, rate in zip(cgroups, rates):
                        _lib.check(_lib.optimizer_set_group_lr(handle.ptr, cg, rate), "lr")
            except BaseException:
                handle.free()
                raise
            # The old handle is freed when its last reference goes: now, or when an update() that
            # another thread is running on it without the lock returns (see update()).
            self._handle = handle
            self._registered = True
            self._grouped = grouped
            self._layout = lay
            self._options = options
            self._cgroups = cgroups
            self._tree = root
            self._tree_alt = alt
            self._keys = keys
            self._labels = labels
            self._states = states
            self._state_leaf = state_leaf
            self._shapes = shapes
            self._params = views
            self._param_objs = values
            self._grads = gviews
            self._group_dicts = [self._new_group_dict(g) for g in range(len(options))]
            # With the handle go the arrays it points into, so that a lock-free update() holding
            # this tuple keeps them alive too.
            # (brainstate states are written back after each update: not on the lock-free path)
            self._fast = (
                None
                if gviews is None or states
                else (
                    handle,
                    functools.partial(_lib.optimizer_step.raw, handle.ptr),
                    views,
                    gviews,
                    values,
                    gvalues,
                )
            )
            self._grad_objs = gvalues
            self._gcodes = gcodes if mixed else None
            self._grad_dtype = grad_dtype
            self._copies = cviews
            self._copy_objs = cvalues
            self._reset_pointers()

    def _mixed_view(self, g, what, shape, writable, in_place, allow_f32=True):
        """A gradient or copy of any format viewed in place: (ndarray, flatopt_dtype)."""
        v, code = as_mixed_view(g, what, writable=writable, in_place=in_place, allow_f32=allow_f32)
        if v.shape != shape:
            raise StructureError(f"{what}: shape {v.shape}, but the parameter has shape {shape}")
        return v, code

    # -- mixed precision: the dynamic loss scaler ----------------------------------------

    @property
    def loss_scale(self):
        """The attached :class:`flatopt.DynamicLossScale` (None: none). Assigning one makes
        every update divide the gradients by its scale, skip on NaN / Inf and adjust the scale
        (PyTorch GradScaler's rules, in the library); assigning None removes it. It restarts
        from its ``init_scale`` when assigned and when the parameters are registered again."""
        return self._loss_scale

    @loss_scale.setter
    def loss_scale(self, scaler):
        from ._mixed import DynamicLossScale

        if scaler is not None and not isinstance(scaler, DynamicLossScale):
            raise DTypeError(
                f"loss_scale must be a flatopt.DynamicLossScale or None, got {describe(scaler)}"
            )
        if scaler is not None and scaler._opt is not None and scaler._opt is not self:
            raise InvalidStateError("loss_scale: this DynamicLossScale is attached to another optimizer")
        if _lib.optimizer_set_loss_scaler is None:
            raise UnsupportedError(
                f"loss_scale: the library at {_lib.library_path} is too old for loss scaling"
            )
        with self._lock:
            self._apply_loss_scale(self._handle, scaler)
            if self._loss_scale is not None and self._loss_scale is not scaler:
                self._loss_scale._opt = None
            self._loss_scale = scaler
            if scaler is not None:
                scaler._opt = self

    @staticmethod
    def _apply_loss_scale(handle, scaler):
        if scaler is None:
            st = _lib.optimizer_set_loss_scaler(handle.ptr, None)
        else:
            o = scaler._struct()
            st = _lib.optimizer_set_loss_scaler(handle.ptr, ctypes.byref(o))
        _lib.check(st, "loss_scale")

    def _loss_scaler_state(self):
        scale, tracker, found = ctypes.c_float(), ctypes.c_uint32(), ctypes.c_uint32()
        with self._lock:
            _lib.check(
                _lib.optimizer_loss_scaler_state(
                    self._handle.ptr, ctypes.byref(scale), ctypes.byref(tracker),
                    ctypes.byref(found),
                ),
                "loss_scale",
            )
        return scale.value, tracker.value, bool(found.value)

    def _set_loss_scaler_state(self, scale, tracker):
        with self._lock:
            _lib.check(
                _lib.optimizer_set_loss_scaler_state(self._handle.ptr, scale, tracker),
                "DynamicLossScale.load_state_dict",
            )

    def _reset_pointers(self):
        n = len(self._params)
        self._ptrs = (ctypes.c_void_p * n)()
        self._grad_cache = [None] * n
        self._grad_keep = [None] * n

    # -- parameter groups ----------------------------------------------------------------

    def _require_groups(self, what):
        if _lib.optimizer_add_group is None:
            raise UnsupportedError(
                f"{what}: the flatopt library at {_lib.library_path} (version "
                f"{_lib.library_version}) has no parameter groups; rebuild or reinstall it"
            )

    def _driver_rates(self, value, options):
        """Each group's learning rate when a composite schedule gives ``value``: the group's
        own ``lr`` scaled as a library schedule scales it (``value * lr / base_lr``), the value
        itself for a group without one."""
        base = self._driver.base_lr
        out = []
        for opts in options:
            own = opts.get("lr", base)
            out.append(value if own == base else own * (value / base))
        return out

    def _drive(self, value):
        """Sets every group's learning rate from a ChainedScheduler / SequentialLR's value
        (its step() calls this); the next update uses them."""
        value = _groups.check_lr(f"lr = {type(self._driver).__name__}(...): its rate", value)
        with self._lock:
            if not self._registered:
                _lib.check(_lib.optimizer_set_group_lr(self._handle.ptr, 0, value), "lr")
                return
            for cg, rate in zip(self._cgroups, self._driver_rates(value, self._options)):
                _lib.check(_lib.optimizer_set_group_lr(self._handle.ptr, cg, rate), "lr")

    def _default_group_lr(self, g):
        """The learning rate of group ``g`` when its dict has none: group 0's set through
        :attr:`current_lr`, else the schedule's per-group ``base_lr`` list entry (None: the
        optimizer's)."""
        if g == 0:
            return self._lr_set
        lrs = getattr(self._schedule, "_group_lrs", None)
        return lrs[g] if lrs is not None and g < len(lrs) else None

    def _new_group_dict(self, g):
        lay = self._layout
        entries = {"params": lay.trees[g], "lr": None, "weight_decay": None}
        entries.update(_groups.rule_values(self._base, self._options[g]))
        out = _groups.ParamGroup(self, g, entries)
        out._sync()
        return out

    @property
    def param_groups(self):
        """The parameter groups, PyTorch style: a list with one dict per group (one group when
        the parameters were registered without groups; [] before registration) holding
        ``"params"`` (the tree as registered), ``"lr"``, ``"weight_decay"`` and the rule's
        hyperparameters (``"betas"``, ``"eps"``, ...). ``"lr"`` and ``"weight_decay"`` are
        live: reading one gives the value the optimizer holds now, assigning one (checked)
        takes effect at the next update, as PyTorch's schedulers write ``group["lr"]``. Under
        a flatopt schedule a group's ``"lr"`` is the rate the schedule scales (the group uses
        ``schedule(t) * lr / base_lr``; :meth:`get_last_lr` gives what each group uses now).
        The other entries are fixed at registration."""
        return list(self._group_dicts) if self._registered else []

    def _group_value(self, g, key):
        """The live value of group ``g``'s "lr" or "weight_decay"."""
        cg = self._cgroups[g]
        out = ctypes.c_double()
        with self._lock:
            if key == "lr":
                if _lib.optimizer_group_lr is None:
                    return self.base_lr
                _lib.check(_lib.optimizer_group_lr(self._handle.ptr, cg, ctypes.byref(out)))
                return self.base_lr if math.isnan(out.value) else out.value
            if _lib.optimizer_group_weight_decay is None:
                return self.weight_decay
            _lib.check(
                _lib.optimizer_group_weight_decay(self._handle.ptr, cg, ctypes.byref(out))
            )
            return out.value

    def _set_group_value(self, g, key, value, name):
        """Sets group ``g``'s "lr" or "weight_decay" (checked by the caller and the library)."""
        self._require_groups(name)
        with self._lock:
            cg = self._cgroups[g]
            fn = _lib.optimizer_set_group_lr if key == "lr" else (
                _lib.optimizer_set_group_weight_decay)
            _lib.check(fn(self._handle.ptr, cg, value), name)
            if key == "lr" and g == 0:
                self._lr_set = value

    def add_param_group(self, param_group, **hyperparameters):
        """Adds a parameter group to the registered parameters, PyTorch style
        (``add_param_group({"params": tree, "lr": ..., ...})``) or braintools style
        (``add_param_group(tree, lr=..., weight_decay=...)``); keys as for the groups of
        :meth:`register_trainable_weights`. The registered parameters keep their state; the
        new ones start from fresh state (and become Lookahead slow weights as they are).

        The gradients are then keyed as the parameters: one dict over all groups when every
        group is a dict and no name is in two groups (a registration without groups is group
        0), else a list with one entry per group. Needs a registration first, without
        registered gradient arrays (register every group at once with
        ``register_trainable_weights(groups, grads=...)`` instead). Checked before anything
        changes."""
        if hyperparameters or not (isinstance(param_group, Mapping) and "params" in param_group):
            param_group = {"params": param_group, **hyperparameters}
        self._require_groups("add_param_group")
        with self._lock:
            if not self._registered:
                raise InvalidStateError(
                    "add_param_group before register_trainable_weights(params): register the "
                    "parameters (or every group: register_trainable_weights([{...}, ...])) first"
                )
            if self._grads is not None:
                raise InvalidStateError(
                    "add_param_group: this optimizer has registered gradient arrays; register "
                    "every group at once with register_trainable_weights(groups, grads=...)"
                )
            if self._counters()[0] > 0:
                raise InvalidStateError(
                    "add_param_group after the first update: the library registers arrays only "
                    "before the first update; give every group to register_trainable_weights"
                    "([...]) (or add the groups before training)"
                )
            g = len(self._options)
            what = "add_param_group(param_group)"
            opts = _groups.check_group(param_group, self._base, what)
            lay = _groups.Layout([param_group["params"]], True, len(self._params),
                                 len(self._states), g, what + "['params']")
            _groups.check_distinct_states(list(self._states) + lay.states)
            new_leaf = [False] * len(lay.leaves)
            for link in lay.states:
                for i in range(link.first, link.stop):
                    new_leaf[i - len(self._params)] = True
            views = [
                _tree.host_copy(v, lab) if in_state else as_view(v, lab, True)
                for v, lab, in_state in zip(lay.leaves, lay.labels_in, new_leaf)
            ]
            old_labels = list(self._layout.labels_in)
            for j, v in enumerate(views):
                others = list(zip(old_labels, self._params)) + list(
                    zip(lay.labels_in[:j], views[:j])
                )
                for lab, w in others:
                    if np.may_share_memory(v, w):
                        raise OverlapError(
                            f"add_param_group: {lay.labels_in[j]} shares memory with the "
                            f"registered {lab}"
                        )
            layout = self._layout.plus(lay)
            root, alt, merged = layout.root(True)
            labels = layout.final_labels(True, merged)
            keys = layout.final_names(True, merged)
            lr = opts.get("lr", self._default_group_lr(g))
            if self._driver is not None:
                lr = self._driver_rates(self._driver.get_lr()[0], [opts])[0]
            cg = _groups.add_c_group(self._handle, self._base,
                                     opts if lr is None else dict(opts, lr=lr), what)
            added = 0
            try:
                for v in views:
                    o = _lib.ParamOptions()
                    _lib.check(_lib.param_options_init(ctypes.byref(o), ctypes.sizeof(o)))
                    o.group = cg
                    o.rows, o.cols = _factor_shape(self._base, v.shape) or (0, 0)
                    _lib.check(
                        _lib.optimizer_add_param_with_options(
                            self._handle.ptr, pointer(v) or None, None, v.size, ctypes.byref(o)
                        ),
                        "add_param_group",
                    )
                    added += 1
            except BaseException:
                if added:  # the library holds part of the group: the registration is gone
                    self._registered = False
                    self._fast = None
                    raise InvalidStateError(
                        f"add_param_group failed after {added} of the group's arrays were "
                        "registered; register the parameters again"
                    ) from None
                raise
            self._grouped = True
            self._layout = layout
            self._options = self._options + [opts]
            self._cgroups = self._cgroups + [cg]
            self._tree, self._tree_alt = root, alt
            self._keys, self._labels = keys, labels
            self._states = tuple(self._states) + tuple(lay.states)
            self._state_leaf = list(self._state_leaf) + new_leaf
            self._shapes = tuple(self._shapes) + tuple(v.shape for v in views)
            self._params = list(self._params) + views
            self._param_objs = list(self._param_objs) + list(lay.leaves)
            self._group_dicts = list(self._group_dicts) + [self._new_group_dict(g)]
            self._reset_pointers()

    def _raise_registration(self, status, labels):
        msg = _lib.message()
        if status == _lib.ERR_OVERLAP:
            names = ", ".join(f"{i} = params{lab}" for i, lab in enumerate(labels))
            raise OverlapError(
                f"register_trainable_weights: {msg} (buffer numbers: {names})", status=status
            )
        _lib.raise_for(status, "register_trainable_weights")

    @staticmethod
    def _grad_view(g, what, shape, in_place):
        v = as_view(g, what, False, in_place)
        if v.shape != shape:
            raise StructureError(
                f"{what}: shape {v.shape}, but the parameter has shape {shape}"
            )
        return v

    # -- update --------------------------------------------------------------------------

    def update(self, grads=None, grad_scale=None):
        """One optimizer update of every registered parameter, in place.

        ``grads``: the gradients, with the structure and shapes of the registered params; or
        nothing if gradient arrays were registered. Returns True if the update was applied,
        False if it was skipped because a gradient held NaN or Inf (``nonfinite="skip"``, the
        default: nothing changed, ``skipped_count`` went up). With ``nonfinite="error"`` that
        case raises :class:`flatopt.NonFiniteError` instead.

        ``grad_scale``: a loss scale (finite, > 0) the gradients are divided by inside the
        update, before clipping (a power of two exactly); not with a :attr:`loss_scale`
        attached, which supplies its own. Registered 16-bit copies are written by the update.
        """
        if grad_scale is not None or (grads is not None and self._gcodes is not None):
            return self._update_mixed(grads, grad_scale)
        if grads is None:
            # The hot path, one foreign call and no lock (a `with self._lock` block would add a
            # quarter to a step at 1e3 elements). `fast` is (handle, the raw step function
            # bound to it, the arrays it points into), set by register_trainable_weights when
            # it got gradients. Holding the tuple keeps the handle and the arrays alive even if
            # another thread registers again meanwhile (the old handle is freed when its last
            # reference goes). The library refuses, changing nothing, a call on a handle
            # another thread is inside: then this waits for it like every other call does (see
            # _lib._waiting).
            fast = self._fast
            if fast is not None:
                st = fast[1]()
                if st == 0:  # _lib.OK
                    return True
                if st == _lib.ERR_BUSY:
                    st = _lib.optimizer_step(fast[0].ptr)  # waits
            else:
                with self._lock:  # also where state_dict() pauses the lock-free path
                    if self._grads is not None:
                        self._states_in()
                        st = _lib.optimizer_step(self._handle.ptr)
                        if st == _lib.OK:
                            self._states_out()
                    elif not self._registered:
                        raise InvalidStateError(
                            "update() before register_trainable_weights(params)"
                        )
                    else:
                        raise InvalidStateError(
                            "update() without gradients: pass them (update(grads)) or register "
                            "gradient arrays with register_trainable_weights(params, grads=...)"
                        )
            if st == 0:  # _lib.OK
                return True
        else:
            if not self._registered:
                raise InvalidStateError("update() before register_trainable_weights(params)")
            with self._lock:
                ptrs = self._grad_pointers(grads)
                states = self._states
                if states:
                    self._states_in()
                st = _lib.optimizer_step_with_grads(self._handle.ptr, ptrs, len(self._params))
                if states and st == _lib.OK:
                    self._states_out()
            if st == _lib.OK:
                return True
        return self._result(st)

    @staticmethod
    def _result(st):
        """update()'s result of a step's status: True applied, False skipped, else raises."""
        if st == _lib.OK:
            return True
        if st == _lib.SKIPPED:
            return False
        _lib.raise_for(st, "update")

    def step(self, grads=None):
        """braintools' name for :meth:`update`: the same arguments, the same result (True if
        the update was applied, False if skipped)."""
        return self.update(grads)

    def _update_mixed(self, grads, grad_scale):
        """``update`` with a loss scale or per-call gradients of a mixed registration."""
        if grad_scale is None:
            scale = 0.0  # the attached loss scale's, or none
        else:
            scale = _validate.real("grad_scale", grad_scale)
            f32 = ctypes.c_float(scale).value
            if not (math.isfinite(f32) and f32 > 0.0):
                raise InvalidArgumentError(
                    f"invalid grad_scale = {_validate.show(grad_scale)}: must be finite and > 0 "
                    "(as a float32)"
                )
            scale = f32
        if not self._registered:
            raise InvalidStateError("update() before register_trainable_weights(params)")
        if _lib.optimizer_step_mixed is None:
            raise UnsupportedError(
                f"update: the library at {_lib.library_path} is too old for grad_scale"
            )
        with self._lock:
            if grads is None and self._grads is None:
                raise InvalidStateError(
                    "update() without gradients: pass them (update(grads)) or register "
                    "gradient arrays with register_trainable_weights(params, grads=...)"
                )
            # The views of per-call gradients stay alive (`keep`) until the call returns.
            ptrs, keep = (None, None) if grads is None else self._mixed_grad_pointers(grads)
            n = 0 if grads is None else len(self._params)
            if self._states:
                self._states_in()
            st = _lib.optimizer_step_mixed(self._handle.ptr, ptrs, n, scale)
            if self._states and st == _lib.OK:
                self._states_out()
            del keep
        return self._result(st)

    def _mixed_grad_pointers(self, grads):
        """The per-call pointer array of gradients in the registered formats (and the views
        to keep alive during the call)."""
        if self._gcodes is None:
            return self._grad_pointers(grads), None
        root = self._tree
        if self._tree_alt is not None and isinstance(grads, (list, tuple)):
            root = self._tree_alt
        values = _tree.match(root, grads, "grads", len(self._params))
        ptrs = self._ptrs
        keep = []
        for i, g in enumerate(values):
            what = self._leaf_label("grads", i)
            v, code = self._mixed_view(g, what, self._shapes[i], False, False)
            if code != self._gcodes[i]:
                raise DTypeError(
                    f"{what}: {DTYPE_NAMES[code]}, but the parameter was registered with "
                    f"{DTYPE_NAMES[self._gcodes[i]]} gradients"
                )
            ptrs[i] = pointer(v) or None
            keep.append(v)
        return ptrs, keep

    def _grad_pointers(self, grads):
        """Fills the per-call pointer array from `grads` (checked; the hot path for ndarrays
        is a few attribute reads per array, and nothing at all but identity, dtype, shape and
        flags for the same array object as in the previous call)."""
        root = self._tree
        if self._tree_alt is not None and isinstance(grads, (list, tuple)):
            root = self._tree_alt  # groups merged into one dict, gradients given per group
        values = _tree.match(root, grads, "grads", len(self._params))
        cache = self._grad_cache
        keep = self._grad_keep
        shapes = self._shapes
        ptrs = self._ptrs
        nd = np.ndarray
        for i, g in enumerate(values):
            if type(g) is nd:
                fl = g.flags
                if g.dtype is F32 and g.shape == shapes[i] and fl.c_contiguous and fl.aligned:
                    if g is not cache[i]:
                        ptrs[i] = _address(g)
                        keep[i] = g
                        cache[i] = g
                    continue  # the same ndarray object as last time: same memory
            what = self._leaf_label("grads", i)
            if self._state_leaf[i]:
                # A brainstate state's gradient (a JAX array, any float dtype): read once, as
                # float32, like the host copy of the state's value it updates.
                g = _tree.host_copy(g, what, "the gradient")
            v = self._grad_view(g, what, shapes[i], False)
            ptrs[i] = pointer(v) or None
            keep[i] = v
            cache[i] = None
        return ptrs

    # -- sharded training (two-phase step) -----------------------------------------------

    def _require_sharding(self, what):
        if _lib.optimizer_step_with_sum_squares is None:
            raise UnsupportedError(
                f"{what}: the flatopt library at {_lib.library_path} (version "
                f"{_lib.library_version}) has no sharded-training functions; rebuild or "
                "reinstall it"
            )
        if not self._registered:
            raise InvalidStateError(f"{what} before register_trainable_weights(params)")
        if self._grads is None:
            raise InvalidStateError(
                f"{what} needs gradient arrays registered with the parameters: "
                "register_trainable_weights(params, grads=grads), then write each step's "
                "gradients into them"
            )

    @property
    def sum_squares_block_count(self):
        """The number of sum-of-squares blocks of the registered parameters: one per
        ``flatopt.sharded.block_size()`` (4096) elements or part of it, buffer by buffer. The
        length of :meth:`sum_squares_partials`."""
        self._require_sharding("sum_squares_block_count")
        return self._query(_lib.optimizer_sum_squares_block_count, ctypes.c_size_t)

    def sum_squares_partials(self, out=None):
        """Sharded training, phase one: the block partial sums of squares of the registered
        gradients, as a float64 array of :attr:`sum_squares_block_count` values (written into
        ``out`` if given: a C-contiguous float64 array of that length).

        Exchange them between the processes (e.g. ``comm.allgather``), add all of them in
        global block order starting from 0.0 (:func:`flatopt.sharded.ordered_sum`) and pass the
        sum to :meth:`update_with_sum_squares`. When each process's parameters are a shard of
        one flat buffer that starts on a block boundary, the sharded run is bit-identical to a
        single process updating the whole buffer. Needs gradient arrays registered
        (``register_trainable_weights(params, grads=...)``)."""
        self._require_sharding("sum_squares_partials")
        with self._lock:
            n = ctypes.c_size_t()
            _lib.check(
                _lib.optimizer_sum_squares_block_count(self._handle.ptr, ctypes.byref(n)),
                "sum_squares_partials",
            )
            if out is None:
                out = np.empty(n.value, dtype=np.float64)
            elif not (
                isinstance(out, np.ndarray)
                and out.dtype == np.float64
                and out.flags.c_contiguous
                and out.flags.writeable
                and out.flags.aligned
            ):
                raise DTypeError(
                    f"sum_squares_partials: out must be a writeable, C-contiguous float64 "
                    f"ndarray, got {describe(out)}"
                    + (f" of dtype {out.dtype}" if isinstance(out, np.ndarray) else "")
                )
            elif out.size != n.value:
                raise InvalidArgumentError(
                    f"sum_squares_partials: out has {out.size} elements, the registered "
                    f"gradients have {n.value} sum-of-squares blocks"
                )
            else:
                self._refuse_overlap("sum_squares_partials: out", out)
            ptr = out.__array_interface__["data"][0] if out.size else None
            _lib.check(
                _lib.optimizer_sum_squares_partials(self._handle.ptr, ptr, out.size),
                "sum_squares_partials",
            )
        return out

    def _refuse_overlap(self, what, out):
        """Refuses an output array that shares memory with a registered parameter or
        gradient (it would overwrite them), as the library refuses every written buffer."""
        registered = [("params", i, v) for i, v in enumerate(self._params)]
        registered += [("grads", i, v) for i, v in enumerate(self._grads or ())]
        for kind, i, arr in registered:
            if np.may_share_memory(out, arr):
                raise OverlapError(
                    f"{what} shares memory with the registered "
                    f"{self._leaf_label(kind, i)}: it would overwrite it"
                )

    @property
    def needs_buffer_norms(self):
        """Whether the base rule takes norms per registered buffer (LAMB, LARS, NovoGrad): a
        sharded update then exchanges :meth:`norm_partials` too (:func:`flatopt.sharded.step`
        does)."""
        return self._base.kind in (_lib.LAMB, _lib.LARS, _lib.NOVOGRAD)

    def _require_buffer_norms(self, what):
        self._require_sharding(what)
        if _lib.optimizer_norm_partials is None:
            raise UnsupportedError(
                f"{what}: the flatopt library at {_lib.library_path} (version "
                f"{_lib.library_version}) has no sharded steps for LAMB, LARS and NovoGrad; "
                "rebuild or reinstall it"
            )

    def norm_partials(self, sum_squares):
        """Sharded training with LAMB, LARS or NovoGrad, phase two of three: with the global
        sum of squares of the gradients (phase one), the pass before the update over the
        registered shards, as a float64 array of two sums per sum-of-squares block (the sum of
        squares of the vector whose norm the rule needs, then the parameters'). Nothing else
        changes. Exchange them; for each buffer, add the even and the odd values of all blocks
        of the whole buffer in global block order from 0.0 (:func:`flatopt.sharded.ordered_sum`
        of each) and pass the totals to :meth:`update_with_norms`."""
        self._require_buffer_norms("norm_partials")
        sum_squares = _validate.real("sum_squares", sum_squares)
        with self._lock:
            n = ctypes.c_size_t()
            _lib.check(
                _lib.optimizer_sum_squares_block_count(self._handle.ptr, ctypes.byref(n)),
                "norm_partials",
            )
            out = np.empty(2 * n.value, dtype=np.float64)
            ptr = out.__array_interface__["data"][0] if out.size else None
            _lib.check(
                _lib.optimizer_norm_partials(self._handle.ptr, sum_squares, ptr, out.size),
                "norm_partials",
            )
        return out

    def update_with_norms(self, sum_squares, norms):
        """Sharded training with LAMB, LARS or NovoGrad, phase three: the update of
        :meth:`update_with_sum_squares` with each registered buffer's two norm totals (``norms``:
        two floats per registered array, see :meth:`norm_partials`). Returns True if applied,
        False if skipped."""
        self._require_buffer_norms("update_with_norms")
        sum_squares = _validate.real("sum_squares", sum_squares)
        try:
            given = np.ascontiguousarray(norms, dtype=np.float64).ravel()
        except (TypeError, ValueError):
            raise ArgumentTypeError(
                f"invalid norms = {_validate.show(norms)}: must be a sequence of floats (two per "
                "registered array)"
            ) from None
        with self._lock:
            ptr = given.__array_interface__["data"][0] if given.size else None
            st = _lib.optimizer_step_with_norms(self._handle.ptr, sum_squares, ptr, given.size)
        if st == _lib.OK:
            return True
        if st == _lib.SKIPPED:
            return False
        _lib.raise_for(st, "update_with_norms")

    def update_with_sum_squares(self, sum_squares):
        """Sharded training, phase two: one update of the registered parameters with the
        registered gradients, using ``sum_squares`` (the global sum of squares of the
        gradients of all shards, see :meth:`sum_squares_partials`) for clipping by norm and the
        non-finite check. Returns True if applied, False if skipped: a non-finite
        ``sum_squares`` (a NaN or Inf gradient in any shard) skips the update on every shard
        alike (with ``nonfinite="error"`` it raises :class:`flatopt.NonFiniteError`)."""
        self._require_sharding("update_with_sum_squares")
        sum_squares = _validate.real("sum_squares", sum_squares)
        with self._lock:
            st = _lib.optimizer_step_with_sum_squares(self._handle.ptr, sum_squares)
        if st == _lib.OK:
            return True
        if st == _lib.SKIPPED:
            return False
        _lib.raise_for(st, "update_with_sum_squares")

    # -- queries -------------------------------------------------------------------------

    def _query(self, fn, ctype):
        out = ctype()
        with self._lock:
            _lib.check(fn(self._handle.ptr, ctypes.byref(out)))
        return out.value

    @property
    def step_count(self):
        """Number of applied updates (an int; ``.value`` also reads it, as braintools'
        ``step_count.value``)."""
        return _Count(self._query(_lib.optimizer_step_count, ctypes.c_uint64))

    @property
    def skipped_count(self):
        """Number of steps skipped because a gradient held NaN or Inf (C
        ``flatopt_optimizer_skipped_count``)."""
        return self._query(_lib.optimizer_skipped_count, ctypes.c_uint64)

    @property
    def skipped_steps(self):
        """The name of 0.1 for :attr:`skipped_count` (kept for compatibility)."""
        return self.skipped_count

    @property
    def current_lr(self):
        """The learning rate the next update will use (group 0's, with parameter groups), as
        a Python float. With a constant learning rate it is the exact value given or set
        (``Adam(lr=0.001).current_lr == 0.001``), and with a schedule the schedule's exact value
        (computed in f64, as PyTorch and braintools compute it); the update applies it rounded
        to float32 (the kernels compute in f32).

        Assigning it (braintools) sets group 0's learning rate (``param_groups[0]["lr"]``;
        the other groups keep theirs), from the next update on; it survives registering
        again and is saved by :meth:`state_dict`. Under a schedule it sets the rate the
        schedule scales: group 0 then uses ``schedule(t) * value / base_lr`` (docs/numerics.md,
        "Differences from braintools, optax and PyTorch": braintools overrides the value until
        the next scheduler step instead)."""
        if _lib.optimizer_group_lr is None:  # an older library: no groups
            if self._schedule is None:
                return self._lr
            return float(self._query(_lib.optimizer_current_lr, ctypes.c_float))
        cg = self._cgroups[0] if self._registered else 0
        with self._lock:
            if self._schedule is None:
                own = ctypes.c_double()
                _lib.check(_lib.optimizer_group_lr(self._handle.ptr, cg, ctypes.byref(own)))
                return self._lr if math.isnan(own.value) else own.value
            return _lib.group_rate(self._handle.ptr, cg)

    @current_lr.setter
    def current_lr(self, value):
        if isinstance(value, LRScheduler):
            raise ArgumentTypeError(
                f"current_lr = {_validate.show(value)}: must be a number (give a schedule at "
                "construction)"
            )
        value = _groups.check_lr("current_lr", value)
        self._require_groups("current_lr =")
        with self._lock:
            if self._registered:
                self._set_group_value(0, "lr", value, "current_lr")
            else:
                _lib.check(_lib.optimizer_set_group_lr(self._handle.ptr, 0, value), "current_lr")
                self._lr_set = value

    def lr_apply(self, apply_fn):
        """braintools' ``lr_apply``: sets every group's learning rate to
        ``apply_fn(group's lr)`` (group 0 only before registration), as :attr:`current_lr`
        and ``param_groups[i]["lr"]`` set it. Every new value is computed and checked before
        any is set."""
        if not callable(apply_fn):
            raise ArgumentTypeError(
                f"lr_apply: apply_fn must be callable, got {describe(apply_fn)}"
            )
        with self._lock:
            if not self._registered:
                self.current_lr = apply_fn(self.current_lr if self._schedule is None
                                           else self._group0_rate())
                return
            new = [
                _groups.check_lr(f"lr_apply: apply_fn(param_groups[{g}]['lr'])",
                                 apply_fn(self._group_value(g, "lr")))
                for g in range(len(self._group_dicts))
            ]
            for g, lr in enumerate(new):
                self._group_dicts[g]["lr"] = lr

    def _group0_rate(self):
        """Group 0's rate before registration (the one a schedule scales)."""
        return self.base_lr if self._lr_set is None else self._lr_set

    @property
    def lr(self):
        """The learning rate given at construction: a float or the schedule object. (braintools
        returns a ``ConstantLR`` object for a float.)"""
        return self._lr

    @property
    def base_lr(self):
        """The base learning rate: the float given as ``lr``, or the schedule's ``base_lr``."""
        if self._driver is not None:
            return self._driver.base_lr
        return self._lr if self._schedule is None else self._schedule.base_lr

    @property
    def weight_decay(self):
        """The weight decay given at construction (coupled: ``g += weight_decay * p``; for
        :class:`AdamW` the decoupled one). Read only, like every hyperparameter attribute:
        the library keeps the configuration it was created with."""
        return self._settings["weight_decay"]

    @property
    def grad_clip_norm(self):
        """The maximum global gradient norm, or None (no clipping by norm)."""
        return self._settings["grad_clip_norm"]

    @property
    def grad_clip_value(self):
        """The maximum absolute gradient value, or None (no clipping by value)."""
        return self._settings["grad_clip_value"]

    @property
    def schedule(self):
        """The schedule this optimizer's learning rate follows, or None."""
        return self._schedule

    @property
    def lr_scheduler(self):
        """braintools' name for :attr:`schedule` (None for a constant learning rate, where
        braintools makes a ``ConstantLR``)."""
        return self._schedule

    def get_last_lr(self):
        """braintools / PyTorch style: the learning rate each group's next update uses, one
        per group (``[current_lr]`` without groups), exact (f64) values; the updates apply them
        rounded to float32."""
        if not self._registered or len(self._cgroups) == 1 or _lib.optimizer_group_lr is None:
            return [self.current_lr]
        out = []
        with self._lock:
            for g, cg in enumerate(self._cgroups):
                if self._schedule is None:
                    out.append(self._group_value(g, "lr"))
                    continue
                out.append(_lib.group_rate(self._handle.ptr, cg))
        return out

    @property
    def num_threads(self):
        return self._query(_lib.optimizer_num_threads, ctypes.c_uint32)

    @property
    def simd_tier(self):
        """The SIMD tier the updates run on ('scalar', 'portable', 'avx2', ...)."""
        t = self._query(_lib.optimizer_simd_tier, ctypes.c_uint32)
        return _lib.simd_tier_name(t).decode()

    state_dtype = property(
        lambda self: self._state_options["state_dtype"],
        doc="How the moments are held: 'float32', 'bfloat16' or 'int8'.",
    )
    state_rounding = property(
        lambda self: self._state_options["state_rounding"],
        doc="How bfloat16 state is rounded: 'stochastic' or 'nearest'.",
    )
    state_seed = property(
        lambda self: self._state_options["state_seed"], doc="The seed of stochastic rounding."
    )
    state_index_offset = property(
        lambda self: self._state_options["state_index_offset"],
        doc="The index of the first registered element in the whole model (shards).",
    )
    slow_dtype = property(
        lambda self: self._state_options["slow_dtype"],
        doc="How the Lookahead slow weights are held: 'float32' or 'bfloat16'.",
    )

    @property
    def state_bytes(self):
        """Bytes of optimizer state held for the registered parameters: the moments as held
        (``state_dtype``: 4, 2 or ``1 + 4/256`` bytes per element and moment, 8-bit scales
        included) and the Lookahead slow weights (``slow_dtype``); 0 before registration.
        Adam over n elements: 8n (float32), 4n (bfloat16), about 2.03n (int8)."""
        if _lib.optimizer_state_bytes is None:
            raise UnsupportedError(
                f"the flatopt library at {_lib.library_path} (version {_lib.library_version}) "
                "has no flatopt_optimizer_state_bytes; rebuild or reinstall it"
            )
        return int(self._query(_lib.optimizer_state_bytes, ctypes.c_uint64))

    @property
    def state_bytes_per_element(self):
        """:attr:`state_bytes` divided by the number of registered elements (0.0 before
        registration): Adam 8.0 (float32), 4.0 (bfloat16), about 2.03 (int8), plus 4 or 2 for
        Lookahead's slow weights."""
        n = self._query(_lib.optimizer_total_len, ctypes.c_size_t)
        return self.state_bytes / n if n else 0.0

    @property
    def param_names(self):
        """The registered leaves' names, in registration order: the key (dict) or index
        (list) of a leaf directly under the root, the tuple of keys from the root for a deeper
        one (docs/numerics.md, "Parameter trees")."""
        return list(self._keys) if self._registered else []

    def _structure(self, arrays):
        """A tree of the registered structure with `arrays` as leaves (a brainstate state's
        place holds the structure of its value)."""
        return _tree.unflatten(self._tree, arrays)

    # -- brainstate states ---------------------------------------------------------------

    def _states_in(self):
        """Reads again the host copies of every state whose value was assigned since
        flatopt last wrote it (checked before anything changes; under the lock)."""
        for link in self._states:
            value = link.state.value
            if value is link.written:
                continue
            leaves = _tree.match(
                link.node, value, link.label + " (the state's value)", link.stop - link.first,
                link.first,
            )
            copies = []
            for i, leaf in enumerate(leaves, link.first):
                c = _tree.host_copy(leaf, self._leaf_label("params", i))
                if c.shape != self._shapes[i]:
                    raise StructureError(
                        f"{self._leaf_label('params', i)}: the state's value now has shape "
                        f"{c.shape}, registered with shape {self._shapes[i]}; register again"
                    )
                copies.append(c)
            for i, c in enumerate(copies, link.first):
                np.copyto(self._params[i], c)
            link.written = value

    def _states_out(self):
        """Assigns every state's value from its updated host copies (under the lock)."""
        if not self._states:
            return
        jnp = None
        for link in self._states:
            leaves = [None] * link.stop
            for j, i in enumerate(range(link.first, link.stop)):
                host = self._params[i]
                if link.jax[j]:
                    if jnp is None:
                        import jax.numpy as jnp  # brainstate is imported, so jax is
                    leaves[i] = jnp.array(host, dtype=link.dtypes[j])  # a copy
                else:
                    leaves[i] = np.array(host, dtype=link.dtypes[j])
            value = _tree.unflatten(link.node, leaves)
            link.state.value = value
            link.written = link.state.value

    # -- checkpoints ---------------------------------------------------------------------

    def _require_checkpoints(self):
        if _lib.optimizer_save is None or _lib.optimizer_load is None:
            raise UnsupportedError(
                f"the flatopt library at {_lib.library_path} (version {_lib.library_version}) "
                "has no checkpoint functions; rebuild or reinstall it"
            )
        if not self._registered:
            raise InvalidStateError(
                "state_dict / load_state_dict before register_trainable_weights(params)"
            )

    def _consistent(self, read):
        """``read()`` with no update running meanwhile, and the counters it saw.

        Under the lock, with update()'s lock-free path paused (it takes the lock while
        ``_fast`` is None, so it waits), ``read`` runs between two readings of the counters,
        and again until they agree: an update that was already inside the library when the
        pause began (at most one per thread) ends first, and every later one waits. The
        library refuses a call on a handle another thread is inside (``_lib._waiting`` then
        retries), so the counters cannot move while ``read`` is inside a call either; equal
        counters before and after mean no update was applied or skipped in between.
        Returns ``((step_count, skipped_steps), read())``."""
        with self._lock:
            fast, self._fast = self._fast, None
            try:
                for _ in range(1000):
                    before = self._counters()
                    out = read()
                    if self._counters() == before:
                        return before, out
            finally:
                self._fast = fast
        raise InternalError("could not take a consistent snapshot of the optimizer state")

    def _counters(self):
        return (
            self._query(_lib.optimizer_step_count, ctypes.c_uint64),
            self._query(_lib.optimizer_skipped_count, ctypes.c_uint64),
        )

    def _save_blob(self):
        size = ctypes.c_size_t()
        _lib.check(
            _lib.optimizer_checkpoint_size(self._handle.ptr, ctypes.byref(size)), "state_dict"
        )
        buf = (ctypes.c_uint8 * max(size.value, 1))()
        written = ctypes.c_size_t()
        _lib.check(
            _lib.optimizer_save(self._handle.ptr, buf, size.value, ctypes.byref(written)),
            "state_dict",
        )
        return bytes(memoryview(buf).cast("B")[: written.value])

    def _checkpoint_info(self, blob):
        """(step_count, skipped_steps, current_lr) stored in a checkpoint of this optimizer."""
        buf = (ctypes.c_uint8 * max(len(blob), 1)).from_buffer_copy(blob or b"\0")
        step, skipped, lr = ctypes.c_uint64(), ctypes.c_uint64(), ctypes.c_float()
        _lib.check(
            _lib.optimizer_checkpoint_info(
                self._handle.ptr, buf, len(blob), ctypes.byref(step), ctypes.byref(skipped),
                ctypes.byref(lr),
            ),
            "state_dict",
        )
        return step.value, skipped.value, float(lr.value)

    @property
    def opt_state(self):
        """braintools' ``opt_state``: None before ``register_trainable_weights``, then the
        optimizer state of this moment (moments, counters, schedule state, Lookahead slow
        weights) as the library checkpoint bytes, ``state_dict()['checkpoint']``."""
        return self.state_dict()["checkpoint"] if self._registered else None

    def state_dict(self):
        """The optimizer state as a picklable dict: the library checkpoint (counters, schedule
        state, moments, Lookahead slow weights) as bytes under ``'checkpoint'`` (also under
        braintools' ``'opt_state'``), plus readable copies of the counters and the learning
        rate (``'current_lr'``, also braintools' ``'lr'``, and ``'base_lr'``), all of one moment
        even while another thread runs ``update()``. Parameters are not included: like PyTorch, save and restore
        them yourself. ``load_state_dict`` on an optimizer of the same configuration and
        registered shapes, with the parameters restored, continues bit-identically."""
        self._require_checkpoints()
        sched = self._schedule
        if _lib.optimizer_checkpoint_info is not None:
            # The counters and the learning rate are read from the checkpoint itself: one
            # snapshot, whatever other threads' lock-free updates do meanwhile. The schedule
            # object's own state moves only under the lock.
            with self._lock:
                blob = self._save_blob()
                sched_state = None if sched is None else sched.state_dict()
                step_count, skipped, lr = self._checkpoint_info(blob)
        else:  # an older library: counters and checkpoint taken while no update ran

            def read():
                return (
                    self._save_blob(),
                    # As checkpoint_info records it: the rate the next update applies (f32).
                    float(self._query(_lib.optimizer_current_lr, ctypes.c_float)),
                    None if sched is None else sched.state_dict(),
                )

            (step_count, skipped), (blob, lr, sched_state) = self._consistent(read)
        # The exact float for a constant learning rate, as current_lr reports it; group 0's.
        if self._schedule is None or self._lr_set is not None or self._cgroups[0] != 0:
            lr = self.current_lr
        return {
            "format": _STATE_FORMAT,
            "format_version": _STATE_FORMAT_VERSION,
            "library_version": _lib.library_version,
            "optimizer": type(self).__name__,
            "step_count": step_count,
            "skipped_steps": skipped,
            "current_lr": lr,
            # braintools' names for the same: its state_dict has 'lr', 'base_lr', 'opt_state'.
            "lr": lr,
            "base_lr": self.base_lr,
            "opt_state": blob,
            "param_names": list(self._keys),
            "param_shapes": [list(s) for s in self._shapes],
            "schedule": sched_state,
            "checkpoint": blob,
            # braintools / PyTorch: each group's hyperparameters and its parameters' names
            # (the live values are also in the checkpoint, which restores them).
            "param_groups": self._group_summaries(),
            # The attached DynamicLossScale's state (GradScaler's keys; the checkpoint has it).
            "loss_scale": None if self._loss_scale is None else self._loss_scale.state_dict(),
        }

    def _group_summaries(self):
        out = []
        names = self._keys
        for g, group in enumerate(self._group_dicts):
            entry = {"params": [n for n, k in zip(names, self._layout.group_of) if k == g]}
            entry.update((k, v) for k, v in group.items() if k != "params")
            out.append(entry)
        return out

    _STATE_KEYS = ("format", "format_version", "param_names", "param_shapes", "schedule",
                   "checkpoint")

    def _check_state_dict(self, state):
        """Checks every entry of a state dict this optimizer would use, changing nothing;
        returns (checkpoint bytes, checked schedule state or None). Raises CheckpointError
        naming the entry at fault."""
        ctx = "load_state_dict"
        if not isinstance(state, dict) or state.get("format") != _STATE_FORMAT:
            raise CheckpointError(f"{ctx}: not a flatopt state_dict")
        missing = [k for k in self._STATE_KEYS if k not in state]
        if missing:
            raise CheckpointError(
                f"{ctx}: the state_dict has no {', '.join(map(repr, missing))}"
            )
        version = state["format_version"]
        if type(version) is not int or version != _STATE_FORMAT_VERSION:
            raise CheckpointError(
                f"{ctx}: state format version {_validate.show(version)}, this flatopt reads "
                f"{_STATE_FORMAT_VERSION}"
            )
        names, shapes = state["param_names"], state["param_shapes"]
        if not isinstance(names, (list, tuple)):
            raise CheckpointError(
                f"{ctx}: 'param_names' must be a list, got {_validate.show(names)}"
            )
        if not isinstance(shapes, (list, tuple)) or not all(
            isinstance(s, (list, tuple)) and all(type(d) is int for d in s) for s in shapes
        ):
            raise CheckpointError(
                f"{ctx}: 'param_shapes' must be a list of lists of integers, got "
                f"{_validate.show(shapes)}"
            )
        shapes = [tuple(s) for s in shapes]
        if list(names) != list(self._keys) or shapes != list(self._shapes):
            saved = list(zip(names, shapes))
            ours = list(zip(self._keys, self._shapes))
            raise CheckpointError(
                f"{ctx}: the state was saved for parameters {_validate.show(saved)}, this "
                f"optimizer has {_validate.show(ours)}"
            )
        groups = state.get("param_groups")
        if groups is not None:
            ours = [g["params"] for g in self._group_summaries()]
            try:
                saved = [list(g["params"]) for g in groups]
            except (TypeError, KeyError):
                raise CheckpointError(
                    f"{ctx}: 'param_groups' must be a list of dicts with 'params', got "
                    f"{_validate.show(groups)}"
                ) from None
            if saved != ours:
                raise CheckpointError(
                    f"{ctx}: the state was saved with the parameter groups "
                    f"{_validate.show(saved)} (each group's parameter names), this optimizer "
                    f"has {_validate.show(ours)}"
                )
        sched_state = state["schedule"]
        if (sched_state is None) != (self._schedule is None):
            raise CheckpointError(
                f"{ctx}: the state was saved "
                + ("with" if sched_state is not None else "without")
                + " a schedule object, this optimizer has "
                + ("one" if self._schedule is not None else "none")
            )
        checked = None
        if self._schedule is not None:
            checked = self._schedule._check_state(sched_state, ctx)
        blob = state["checkpoint"]
        if not isinstance(blob, (bytes, bytearray)):
            raise CheckpointError(
                f"{ctx}: 'checkpoint' must be bytes, got {type(blob).__name__}"
            )
        return bytes(blob), checked

    def load_state_dict(self, state):
        """Restores :meth:`state_dict` (see there). The parameters must be registered first
        (and restored by you). Every entry is checked before anything changes: a state that
        does not fit this optimizer raises :class:`flatopt.CheckpointError` (naming the entry)
        and nothing changed."""
        self._require_checkpoints()
        blob, sched_checked = self._check_state_dict(state)
        buf = (ctypes.c_uint8 * max(len(blob), 1)).from_buffer_copy(blob or b"\0")
        with self._lock:
            _check_load(_lib.optimizer_load(self._handle.ptr, buf, len(blob)), "load_state_dict")
            if self._schedule is not None:
                self._schedule._apply_state(sched_checked)
            self._loaded_groups()

    def _loaded_groups(self):
        """After a checkpoint restored the groups' live values: group 0's own learning rate
        is the one kept when registering again."""
        if _lib.optimizer_group_lr is None:
            return
        own = ctypes.c_double()
        _lib.check(_lib.optimizer_group_lr(self._handle.ptr, self._cgroups[0], ctypes.byref(own)))
        self._lr_set = None if math.isnan(own.value) else own.value

    def save(self, path):
        """Writes the library checkpoint (as in ``state_dict()['checkpoint']``) to a file.
        ``path``: str, bytes or os.PathLike (a NUL character in it is refused)."""
        self._require_checkpoints()
        name = _validate.path("path", path)
        with self._lock:
            _lib.check(_lib.optimizer_save_file(self._handle.ptr, name), "save")

    def load(self, path):
        """Restores a checkpoint file written by :meth:`save` (parameters are yours to
        restore). A schedule object's Python-side counter is not in the file: prefer
        ``state_dict`` when the schedule object is stepped manually and queried."""
        self._require_checkpoints()
        name = _validate.path("path", path)
        with self._lock:
            _check_load(_lib.optimizer_load_file(self._handle.ptr, name), "load")
            self._loaded_groups()

    # -- copying and pickling ------------------------------------------------------------

    def __reduce_ex__(self, protocol):
        """Copies and pickles by value, never the library handle (a raw address): the copy
        is a new optimizer of the same configuration (with a copy of the schedule), with the
        same registration and the state of :meth:`state_dict`. ``copy.deepcopy`` and pickle
        copy the registered arrays too (deep-copy or pickle the model's parameters together
        with the optimizer, so that the copy updates the copied parameters); ``copy.copy``
        makes an optimizer with its own state over the same arrays."""
        with self._lock:
            params = grads = state = None
            if self._registered and self._grouped:
                params = [
                    {"params": _tree.unflatten(root, self._param_objs, self._states), **opts}
                    for root, opts in zip(self._layout.roots, self._options)
                ]
                if self._grad_objs is not None:
                    grads = self._structure(self._grad_objs)
                state = self.state_dict()
            elif self._registered:
                params = _tree.unflatten(self._tree, self._param_objs, self._states)
                if self._grad_objs is not None:
                    grads = self._structure(self._grad_objs)
                state = self.state_dict()
            public = {k: v for k, v in self.__dict__.items() if not k.startswith("_")}
            # Group 0's learning rate set before registration (afterwards the state has it).
            public["_lr_set"] = self._lr_set
            # Mixed precision: the copies, the declared per-call gradient format, the loss scale.
            public["_mixed"] = (
                None if self._copy_objs is None or not self._registered
                else self._structure(self._copy_objs),
                self._grad_dtype,
                None if self._loss_scale is None else self._loss_scale._options,
            )
            return (
                _rebuild_optimizer,
                (type(self), self._base, self._lr_given, self._lookahead, self._settings,
                 public, params, grads, state),
            )

    def __copy__(self):
        # Shallow in the registered arrays only: the configuration and the schedule (which
        # drives one optimizer) are copied by value.
        func, (cls, base, lr, lookahead, settings, public, params, grads, state) = (
            self.__reduce_ex__(4)
        )
        base, lr, public = copy.deepcopy((base, lr, public))
        return func(cls, base, lr, lookahead, settings, public, params, grads, state)

    def __repr__(self):
        base = self._base
        reg = f"{len(self._params)} params" if self._registered else "unregistered"
        state = "".join(
            f" {k}={v!r}" for k, v in self._state_options.items() if v != _STATE_DEFAULTS[k]
        )
        return f"<flatopt.{type(self).__name__} {base!r} lr={self._lr!r}{state} {reg}>"


_c_byte = ctypes.c_byte


def _address(arr):
    """The address of a C-contiguous ndarray's data (the fastest way ctypes offers for a
    writeable array; read-only and empty arrays take the slower general path)."""
    try:
        return ctypes.addressof(_c_byte.from_buffer(arr))
    except (TypeError, ValueError):
        return pointer(arr) or None


def _group_context(grouped, key):
    """How a message names group 0's value at registration."""
    return f"params[0][{key!r}]" if grouped else key


def _check_load(status, context):
    """A refused checkpoint is a CheckpointError whatever the library's reason (corrupt,
    other configuration, other lengths, newer format); a file error a CheckpointIOError."""
    if status in (_lib.OK, _lib.SKIPPED):
        return
    if status in (_lib.ERR_CORRUPT, _lib.ERR_INVALID_ARGUMENT, _lib.ERR_LENGTH_MISMATCH,
                  _lib.ERR_UNSUPPORTED):
        raise CheckpointError(f"{context}: {_lib.message()}", status=status)
    _lib.raise_for(status, context)


def _rebuild_optimizer(cls, base, lr, lookahead, settings, public, params, grads, state):
    """Unpickles / copies an optimizer (see Optimizer.__reduce_ex__)."""
    opt = cls.__new__(cls)
    Optimizer.__init__(opt, base, lr, lookahead=lookahead, **settings)
    lr_set = public.pop("_lr_set", None)
    copies, grad_dtype, loss_scale = public.pop("_mixed", None) or (None, None, None)
    opt.__dict__.update(public)
    if lr_set is not None:
        opt.current_lr = lr_set
    if loss_scale is not None:
        from ._mixed import DynamicLossScale

        opt.loss_scale = DynamicLossScale(*loss_scale)
    if params is not None:
        opt.register_trainable_weights(params, grads, copies=copies, grad_dtype=grad_dtype)
        opt.load_state_dict(state)
    return opt


# ---------------------------------------------------------------------------------------------


class Lookahead(Optimizer):
    """Lookahead (Zhang et al., 2019) around a base optimizer.

    ``base_optimizer``: :func:`flatopt.sgd`, :func:`flatopt.adam`, :func:`flatopt.adamw` or
    :func:`flatopt.radam`. Every ``sync_period`` applied updates the slow weights move
    ``alpha`` of the way to the fast weights and the parameters are set to them (bit-equal).

    ``lr``: None (default) uses the base optimizer's ``learning_rate``; a float or schedule
    given here replaces it. (braintools 0.4.0 ignores its ``Lookahead(lr=...)``; flatopt
    applies it: docs/numerics.md, "Differences from braintools, optax and PyTorch".)

    ``weight_decay`` (coupled, ``g += wd * p``), ``grad_clip_norm`` (global norm over all
    parameters), ``grad_clip_value``: applied to the gradients before the base optimizer.
    ``nonfinite``: ``"skip"`` (default), ``"error"`` or ``"propagate"``. ``num_threads``:
    threads for one update (results do not depend on it).

    Compressed state: ``state_dtype``, ``state_rounding``, ``state_seed``,
    ``state_index_offset`` (see :class:`Optimizer`; given here or to the base optimizer's
    function, not both with other values) and ``slow_dtype`` (``"float32"``, the default, or
    ``"bfloat16"``: the slow weights in 2 bytes per element; after a sync the parameters are
    the slow weights as held).
    """

    def __init__(self, base_optimizer, sync_period=5, alpha=0.5, lr=None, weight_decay=0.0,
                 grad_clip_norm=None, grad_clip_value=None, nonfinite="skip", num_threads=1,
                 simd_tier=None, state_dtype=None, state_rounding=None, state_seed=None,
                 state_index_offset=None, slow_dtype=None):
        super().__init__(
            base_optimizer, lr, lookahead=True, sync_period=sync_period, alpha=alpha,
            weight_decay=weight_decay, grad_clip_norm=grad_clip_norm,
            grad_clip_value=grad_clip_value, nonfinite=nonfinite, num_threads=num_threads,
            simd_tier=simd_tier,
            **_state(state_dtype, state_rounding, state_seed, state_index_offset, slow_dtype),
        )
        self.sync_period = self._settings["sync_period"]
        self.alpha = self._settings["alpha"]
        self.base_optimizer = base_optimizer

    @property
    def slow_weights(self):
        """Copies of the slow weights, in the structure and shapes of the parameters."""
        if not self._registered:
            raise InvalidStateError("slow_weights before register_trainable_weights(params)")

        def read():  # all buffers of one moment, even while another thread runs update()
            out = []
            for i, shape in enumerate(self._shapes):
                a = np.empty(shape, dtype=np.float32)
                _lib.check(
                    _lib.optimizer_copy_slow_weights(
                        self._handle.ptr, i, pointer(a) or None, a.size
                    ),
                    "slow_weights",
                )
                out.append(a)
            return out

        return self._structure(self._consistent(read)[1])


def _betas(betas):
    return _validate.pair("betas", betas)


def _hyper(name, doc):
    """A read-only attribute reading the base optimizer's hyperparameter ``name``."""

    def get(self):
        return self._base.hyperparams[name]

    return property(get, doc=doc)


def _pair(first, second, doc):
    """A read-only attribute: the pair of the base optimizer's hyperparameters ``first`` and
    ``second`` (braintools' ``betas``, ``etas``, ``step_sizes``)."""

    def get(self):
        h = self._base.hyperparams
        return (h[first], h[second])

    return property(get, doc=doc)


class _SGDFamily(Optimizer):
    """The attributes of :class:`SGD`, :class:`Momentum` and :class:`MomentumNesterov`."""

    @property
    def momentum(self):
        """The momentum factor (0.0: none)."""
        return self._base.hyperparams["momentum"] or 0.0

    nesterov = _hyper("nesterov", "Whether the update uses Nesterov momentum.")
    dampening = _hyper("dampening", "PyTorch's dampening of the momentum buffer.")


class SGD(_SGDFamily):
    """braintools / PyTorch-style SGD: ``SGD(lr=1e-3, momentum=0.0, nesterov=False,
    weight_decay=0.0, grad_clip_norm=None, grad_clip_value=None)``; ``lr`` a float or a
    schedule. ``weight_decay`` is coupled (added to the gradient), as in braintools and
    PyTorch."""

    def __init__(self, lr=1e-3, momentum=0.0, nesterov=False, weight_decay=0.0, grad_clip_norm=None,
                 grad_clip_value=None, dampening=0.0, nonfinite="skip", num_threads=1,
                 simd_tier=None, state_dtype=None, state_rounding=None, state_seed=None,
                 state_index_offset=None):
        _check_lr(lr, "lr")
        super().__init__(
            sgd(lr, momentum=momentum, nesterov=nesterov, dampening=dampening), None,
            lookahead=False, weight_decay=weight_decay, grad_clip_norm=grad_clip_norm,
            grad_clip_value=grad_clip_value, nonfinite=nonfinite, num_threads=num_threads,
            simd_tier=simd_tier,
            **_state(state_dtype, state_rounding, state_seed, state_index_offset),
        )


class Momentum(_SGDFamily):
    """braintools' ``Momentum(lr=1e-3, momentum=0.9, weight_decay=0.0, grad_clip_norm=None,
    grad_clip_value=None)``: ``v = momentum * v + g`` (``v = g`` on the first update), ``p -=
    lr * v``; the same update as ``SGD(lr, momentum=momentum)`` (optax ``trace`` and PyTorch
    momentum agree). ``weight_decay`` is coupled."""

    def __init__(self, lr=1e-3, momentum=0.9, weight_decay=0.0, grad_clip_norm=None,
                 grad_clip_value=None, nonfinite="skip", num_threads=1, simd_tier=None,
                 state_dtype=None, state_rounding=None, state_seed=None, state_index_offset=None):
        _check_lr(lr, "lr")
        super().__init__(
            sgd(lr, momentum=momentum), None, lookahead=False, weight_decay=weight_decay,
            grad_clip_norm=grad_clip_norm, grad_clip_value=grad_clip_value,
            nonfinite=nonfinite, num_threads=num_threads, simd_tier=simd_tier,
            **_state(state_dtype, state_rounding, state_seed, state_index_offset),
        )


class MomentumNesterov(_SGDFamily):
    """braintools' ``MomentumNesterov(lr=1e-3, momentum=0.9, weight_decay=0.0,
    grad_clip_norm=None, grad_clip_value=None)``: ``v = momentum * v + g``, ``p -= lr * (g +
    momentum * v)``; the same update as ``SGD(lr, momentum=momentum, nesterov=True)``."""

    def __init__(self, lr=1e-3, momentum=0.9, weight_decay=0.0, grad_clip_norm=None,
                 grad_clip_value=None, nonfinite="skip", num_threads=1, simd_tier=None,
                 state_dtype=None, state_rounding=None, state_seed=None, state_index_offset=None):
        _check_lr(lr, "lr")
        super().__init__(
            sgd(lr, momentum=momentum, nesterov=True), None, lookahead=False,
            weight_decay=weight_decay, grad_clip_norm=grad_clip_norm,
            grad_clip_value=grad_clip_value, nonfinite=nonfinite, num_threads=num_threads,
            simd_tier=simd_tier,
            **_state(state_dtype, state_rounding, state_seed, state_index_offset),
        )


class _AdamFamily(Optimizer):
    """The attributes of :class:`Adam`, :class:`AdamW` and :class:`RAdam`."""

    betas = _pair("b1", "b2", "``(b1, b2)``, the decay rates of the first and second moments.")
    eps = _hyper("eps", "The term added to the denominator.")


class Adam(_AdamFamily):
    """braintools / PyTorch-style Adam: ``Adam(lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
    weight_decay=0.0, amsgrad=False, grad_clip_norm=None, grad_clip_value=None)``.
    ``weight_decay`` is coupled (L2 added to the gradient), as in PyTorch's Adam."""

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
                 grad_clip_norm=None, grad_clip_value=None, nonfinite="skip", num_threads=1,
                 simd_tier=None, state_dtype=None, state_rounding=None, state_seed=None,
                 state_index_offset=None):
        _check_lr(lr, "lr")
        b1, b2 = _betas(betas)
        super().__init__(
            adam(lr, b1=b1, b2=b2, eps=eps, amsgrad=amsgrad), None, lookahead=False,
            weight_decay=weight_decay, grad_clip_norm=grad_clip_norm,
            grad_clip_value=grad_clip_value, nonfinite=nonfinite, num_threads=num_threads,
            simd_tier=simd_tier,
            **_state(state_dtype, state_rounding, state_seed, state_index_offset),
        )

    amsgrad = _hyper("amsgrad", "Whether the AMSGrad maximum of the second moment is used.")


class AdamW(_AdamFamily):
    """braintools / PyTorch-style AdamW: ``AdamW(lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
    weight_decay=1e-2, ...)`` with decoupled weight decay. AMSGrad is not available for
    AdamW."""

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False,
                 grad_clip_norm=None, grad_clip_value=None, nonfinite="skip", num_threads=1,
                 simd_tier=None, state_dtype=None, state_rounding=None, state_seed=None,
                 state_index_offset=None):
        _check_lr(lr, "lr")
        if _validate.flag("amsgrad", amsgrad):
            raise UnsupportedError("AdamW(amsgrad=True) is not supported (AMSGrad: use Adam)")
        b1, b2 = _betas(betas)
        super().__init__(
            adamw(lr, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay), None,
            lookahead=False, grad_clip_norm=grad_clip_norm, grad_clip_value=grad_clip_value,
            nonfinite=nonfinite, num_threads=num_threads, simd_tier=simd_tier,
            **_state(state_dtype, state_rounding, state_seed, state_index_offset),
        )

    amsgrad = property(lambda self: False, doc="Always False (AMSGrad: use Adam).")

    @property
    def weight_decay(self):
        """The decoupled weight decay (``p -= lr * weight_decay * p`` each update)."""
        return self._base.hyperparams["weight_decay"]


class RAdam(_AdamFamily):
    """braintools / PyTorch-style RAdam: ``RAdam(lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
    weight_decay=0.0, ...)`` (coupled weight decay)."""

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, grad_clip_norm=None,
                 grad_clip_value=None, nonfinite="skip", num_threads=1, simd_tier=None,
                 state_dtype=None, state_rounding=None, state_seed=None, state_index_offset=None):
        _check_lr(lr, "lr")
        b1, b2 = _betas(betas)
        super().__init__(
            radam(lr, b1=b1, b2=b2, eps=eps), None, lookahead=False,
            weight_decay=weight_decay, grad_clip_norm=grad_clip_norm,
            grad_clip_value=grad_clip_value, nonfinite=nonfinite, num_threads=num_threads,
            simd_tier=simd_tier,
            **_state(state_dtype, state_rounding, state_seed, state_index_offset),
        )


def _factor_shape(base, shape):
    """The 2-D shape ``(rows, cols)`` an array of ``shape`` is registered with: the base rule's
    choice (Adafactor factors some arrays), else None."""
    f = getattr(base, "factor_shape", None)
    return None if f is None else f(tuple(shape))
