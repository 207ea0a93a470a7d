"""Loading of the flatopt shared library and its C ABI, declared with ctypes.

The library is looked up, in this order:

1. the path in the environment variable ``FLATOPT_LIBRARY`` (if it is set and cannot be
   loaded, that is an error: there is no silent fallback);
2. the copy bundled inside this package (``pip install`` builds and bundles it);
3. the system: ``ctypes.util.find_library("flatopt")`` and the plain library names, which the
   dynamic loader searches in its usual places (``LD_LIBRARY_PATH``, ``/usr/local/lib``, ...).

If none loads, :class:`ImportError` lists every place tried and why it failed.

Every C function returns a ``flatopt_status``; :func:`check` turns an error status into the
matching exception of :mod:`flatopt._errors`, with the library's message (which names the
argument and the value at fault).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import time
from ctypes import (
    POINTER,
    Structure,
    c_char_p,
    c_double,
    c_float,
    c_int32,
    c_size_t,
    c_uint8,
    c_uint32,
    c_uint64,
    c_void_p,
)

from . import _errors

# ---------------------------------------------------------------------------------------------
# Status codes and enum values (include/flatopt.h).

OK = 0
SKIPPED = 1
ERR_NULL_POINTER = 2
ERR_INVALID_ARGUMENT = 3
ERR_LENGTH_MISMATCH = 4
ERR_NON_FINITE = 5
ERR_INVALID_STATE = 6
ERR_UNSUPPORTED = 7
ERR_OVERLAP = 8
ERR_IO = 9
ERR_CORRUPT = 10
ERR_INTERNAL = 11
ERR_BUSY = 12
ERR_POISONED = 13

SGD, ADAM, ADAMW, RADAM, ADAGRAD, RMSPROP = 0, 1, 2, 3, 4, 5
ADAMAX, NADAM, LION = 6, 7, 8
ADABELIEF, YOGI, ADADELTA, RPROP = 9, 10, 11, 12
LAMB, LARS, NOVOGRAD = 13, 14, 15
ADAFACTOR = 16

SCHEDULE_KINDS = {
    "fixed": 0,
    "constant": 1,
    "linear": 2,
    "step": 3,
    "multi_step": 4,
    "exponential": 5,
    "exponential_decay": 6,
    "cosine_annealing": 7,
    "cosine_warm_restarts": 8,
    "polynomial": 9,
    "warmup": 10,
    "warmup_cosine": 11,
    "one_cycle": 12,
    "cyclic": 13,
    "piecewise_constant": 14,
    "reduce_on_plateau": 15,
}

NONFINITE = {"skip": 0, "error": 1, "propagate": 2}
SIMD_TIERS = {"default": 0, "scalar": 1, "portable": 2, "avx2": 3, "avx512": 4}
# Element formats of gradients and parameter copies (flatopt_dtype).
DTYPES = {"f32": 0, "bf16": 1, "f16": 2}
STATE_DTYPES = {"float32": 0, "bfloat16": 1, "int8": 2}
STATE_ROUNDING = {"stochastic": 0, "nearest": 1}

# Frozen sizes of the first version of each versioned struct (FLATOPT_*_SIZE_V1).
BASE_PARAMS_SIZE_V1 = 64
BASE_PARAMS_SIZE_V2 = 96
BASE_PARAMS_SIZE_V3 = 112
BASE_PARAMS_SIZE_V4 = 160
BASE_PARAMS_SIZE_V5 = 168
BASE_PARAMS_SIZE_V6 = 216
SCHEDULE_SIZE_V1 = 248
CONFIG_SIZE_V1 = 88
CONFIG_SIZE_V2 = 120
STEP_ARGS_SIZE_V1 = 56
GROUP_OPTIONS_SIZE_V1 = 32
PARAM_OPTIONS_SIZE_V1 = 32
PARAM_OPTIONS_SIZE_V2 = 48
LOSS_SCALER_OPTIONS_SIZE_V1 = 24

# ---------------------------------------------------------------------------------------------
# Configuration structs, field for field as in include/flatopt.h (the tests check the layouts
# and the constants above against the header).


class BaseParams(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("kind", c_uint32),
        ("momentum", c_double),
        ("dampening", c_double),
        ("nesterov", c_uint32),
        ("amsgrad", c_uint32),
        ("b1", c_double),
        ("b2", c_double),
        ("eps", c_double),
        ("decoupled_weight_decay", c_double),
        ("lr_decay", c_double),
        ("initial_accumulator", c_double),
        ("alpha", c_double),
        ("centered", c_uint32),
        ("eps_inside_sqrt", c_uint32),
        ("momentum_decay", c_double),
        ("eps_outside_max", c_uint32),
        ("constant_momentum", c_uint32),
        ("eps_root", c_double),
        ("rho", c_double),
        ("eta_minus", c_double),
        ("eta_plus", c_double),
        ("min_step_size", c_double),
        ("max_step_size", c_double),
        ("trust_coefficient", c_double),
        ("decay_rate", c_double),
        ("decay_offset", c_double),
        ("eps_scale", c_double),
        ("clipping_threshold", c_double),
        ("multiply_by_parameter_scale", c_uint32),
        ("relative_step", c_uint32),
        ("weight_decay_by_lr", c_uint32),
        ("reserved", c_uint32),
    ]


class ScheduleStruct(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("kind", c_uint32),
        ("base_lr", c_double),
        ("max_lr", c_double),
        ("gamma", c_double),
        ("factor", c_double),
        ("start_factor", c_double),
        ("end_factor", c_double),
        ("eta_min", c_double),
        ("power", c_double),
        ("start_lr", c_double),
        ("decay_rate", c_double),
        ("end_value", c_double),
        ("pct_start", c_double),
        ("div_factor", c_double),
        ("final_div_factor", c_double),
        ("threshold", c_double),
        ("min_lr", c_double),
        ("period", c_uint64),
        ("t_mult", c_uint64),
        ("warmup", c_uint64),
        ("step_size_up", c_uint64),
        ("step_size_down", c_uint64),
        ("patience", c_uint64),
        ("cooldown", c_uint64),
        ("staircase", c_uint32),
        ("anneal_linear", c_uint32),
        ("cyclic_mode", c_uint32),
        ("plateau_mode", c_uint32),
        ("threshold_mode", c_uint32),
        ("milestones", POINTER(c_uint64)),
        ("n_milestones", c_size_t),
        ("values", POINTER(c_double)),
        ("n_values", c_size_t),
    ]


class ConfigStruct(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("nonfinite", c_uint32),
        ("base", POINTER(BaseParams)),
        ("lr", c_double),
        ("schedule", POINTER(ScheduleStruct)),
        ("schedule_manual", c_uint32),
        ("lookahead", c_uint32),
        ("sync_period", c_uint64),
        ("alpha", c_double),
        ("weight_decay", c_double),
        ("grad_clip_norm", c_double),
        ("grad_clip_value", c_double),
        ("num_threads", c_uint32),
        ("simd_tier", c_uint32),
        ("state_dtype", c_uint32),
        ("state_rounding", c_uint32),
        ("state_seed", c_uint64),
        ("state_index_offset", c_uint64),
        ("slow_dtype", c_uint32),
        ("reserved", c_uint32),
    ]


class GroupOptions(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("reserved", c_uint32),
        ("lr", c_double),
        ("weight_decay", c_double),
        ("base", POINTER(BaseParams)),
    ]


class ParamOptions(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("grad_dtype", c_uint32),
        ("group", c_size_t),
        ("copy", c_void_p),
        ("copy_dtype", c_uint32),
        ("reserved", c_uint32),
        ("rows", c_size_t),
        ("cols", c_size_t),
    ]


class LossScalerOptions(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("growth_interval", c_uint32),
        ("init_scale", c_float),
        ("growth_factor", c_float),
        ("backoff_factor", c_float),
        ("reserved", c_uint32),
    ]


c_float_p = POINTER(c_float)
_opt_p = c_void_p  # flatopt_optimizer *: opaque

# ---------------------------------------------------------------------------------------------
# Loading.


def _candidate_names():
    if sys.platform == "win32":
        return ["flatopt.dll", "libflatopt.dll"]
    if sys.platform == "darwin":
        return ["libflatopt.dylib"]
    return ["libflatopt.so", "libflatopt.so.0.2"]


def _load():
    tried = []

    env = os.environ.get("FLATOPT_LIBRARY")
    if env:
        try:
            return ctypes.CDLL(env), env
        except OSError as e:
            raise ImportError(
                f"flatopt: FLATOPT_LIBRARY={env!r} cannot be loaded: {e}. Unset it to use the "
                "library bundled with the package or the system's."
            ) from None

    tried.append("FLATOPT_LIBRARY: not set")
    here = os.path.dirname(os.path.abspath(__file__))
    for name in _candidate_names():
        path = os.path.join(here, name)
        if not os.path.exists(path):
            tried.append(f"{path}: no such file")
            continue
        try:
            return ctypes.CDLL(path), path
        except OSError as e:
            tried.append(f"{path}: {e}")

    found = ctypes.util.find_library("flatopt")
    system_names = ([found] if found else []) + _candidate_names()
    if not found:
        tried.append("ctypes.util.find_library('flatopt'): nothing found")
    for name in system_names:
        try:
            return ctypes.CDLL(name), name
        except OSError as e:
            tried.append(f"system loader, {name!r}: {e}")

    raise ImportError(
        "flatopt: cannot find the flatopt shared library. Looked in:\n  - "
        + "\n  - ".join(tried)
        + "\nInstall the package with `pip install ./bindings/python` (it builds and bundles "
        "the library; needs cargo), or set FLATOPT_LIBRARY to the path of libflatopt.so."
    )


lib, library_path = _load()


def _fn(name, restype, argtypes, required=True):
    f = getattr(lib, name, None)
    if f is None:
        if required:
            raise ImportError(
                f"flatopt: the library at {library_path} has no symbol {name}: it is too old "
                "for this Python package (rebuild or reinstall it)"
            )
        return None
    f.restype = restype
    f.argtypes = argtypes
    return f


st = c_int32  # enum flatopt_status

status_str = _fn("flatopt_status_str", c_char_p, [c_int32])
last_error_message = _fn("flatopt_last_error_message", c_char_p, [])
version = _fn("flatopt_version", c_char_p, [])
version_number = _fn("flatopt_version_number", c_uint32, [])
base_params_init = _fn("flatopt_base_params_init", st, [c_void_p, c_size_t, c_uint32])
schedule_init = _fn("flatopt_schedule_init", st, [c_void_p, c_size_t, c_uint32])
config_init = _fn("flatopt_config_init", st, [c_void_p, c_size_t])
optimizer_new = _fn("flatopt_optimizer_new", st, [POINTER(ConfigStruct), POINTER(c_void_p)])
optimizer_free = _fn("flatopt_optimizer_free", None, [_opt_p])
optimizer_add_param = _fn(
    "flatopt_optimizer_add_param", st, [_opt_p, c_void_p, c_void_p, c_size_t]
)
optimizer_step = _fn("flatopt_optimizer_step", st, [_opt_p])
optimizer_step_with_grads = _fn(
    "flatopt_optimizer_step_with_grads", st, [_opt_p, c_void_p, c_size_t]
)
optimizer_reset = _fn("flatopt_optimizer_reset", st, [_opt_p])
optimizer_step_count = _fn("flatopt_optimizer_step_count", st, [_opt_p, POINTER(c_uint64)])
optimizer_skipped_count = _fn(
    "flatopt_optimizer_skipped_count", st, [_opt_p, POINTER(c_uint64)]
)
optimizer_current_lr = _fn("flatopt_optimizer_current_lr", st, [_opt_p, POINTER(c_float)])
optimizer_simd_tier = _fn("flatopt_optimizer_simd_tier", st, [_opt_p, POINTER(c_uint32)])
optimizer_num_threads = _fn("flatopt_optimizer_num_threads", st, [_opt_p, POINTER(c_uint32)])
optimizer_num_params = _fn("flatopt_optimizer_num_params", st, [_opt_p, POINTER(c_size_t)])
optimizer_total_len = _fn("flatopt_optimizer_total_len", st, [_opt_p, POINTER(c_size_t)])
# Compressed state (issue 16); optional so that an older library still loads.
optimizer_state_bytes = _fn(
    "flatopt_optimizer_state_bytes", st, [_opt_p, POINTER(c_uint64)], required=False
)
optimizer_copy_slow_weights = _fn(
    "flatopt_optimizer_copy_slow_weights", st, [_opt_p, c_size_t, c_void_p, c_size_t]
)
optimizer_schedule_step = _fn("flatopt_optimizer_schedule_step", st, [_opt_p])
optimizer_schedule_step_metric = _fn(
    "flatopt_optimizer_schedule_step_metric", st, [_opt_p, c_double]
)
# Moves a schedule to a position at once (0.2.0): the schedules' last_epoch, copies and
# unpickling use it instead of stepping there one call at a time.
optimizer_schedule_set_epoch = _fn(
    "flatopt_optimizer_schedule_set_epoch", st, [_opt_p, c_uint64]
)
# Parameter groups (0.3.0); optional so that an older library still loads.
group_options_init = _fn("flatopt_group_options_init", st, [c_void_p, c_size_t], required=False)
optimizer_add_group = _fn(
    "flatopt_optimizer_add_group",
    st,
    [_opt_p, POINTER(GroupOptions), POINTER(c_size_t)],
    required=False,
)
optimizer_add_param_to_group = _fn(
    "flatopt_optimizer_add_param_to_group",
    st,
    [_opt_p, c_size_t, c_void_p, c_void_p, c_size_t],
    required=False,
)
optimizer_num_groups = _fn(
    "flatopt_optimizer_num_groups", st, [_opt_p, POINTER(c_size_t)], required=False
)
optimizer_param_group = _fn(
    "flatopt_optimizer_param_group", st, [_opt_p, c_size_t, POINTER(c_size_t)], required=False
)
optimizer_group_lr = _fn(
    "flatopt_optimizer_group_lr", st, [_opt_p, c_size_t, POINTER(c_double)], required=False
)
optimizer_group_current_lr = _fn(
    "flatopt_optimizer_group_current_lr", st, [_opt_p, c_size_t, POINTER(c_float)], required=False
)
optimizer_group_current_lr_exact = _fn(
    "flatopt_optimizer_group_current_lr_exact",
    st,
    [_opt_p, c_size_t, POINTER(c_double)],
    required=False,
)
optimizer_group_weight_decay = _fn(
    "flatopt_optimizer_group_weight_decay",
    st,
    [_opt_p, c_size_t, POINTER(c_double)],
    required=False,
)
optimizer_set_group_lr = _fn(
    "flatopt_optimizer_set_group_lr", st, [_opt_p, c_size_t, c_double], required=False
)
optimizer_set_group_weight_decay = _fn(
    "flatopt_optimizer_set_group_weight_decay", st, [_opt_p, c_size_t, c_double], required=False
)
optimizer_group_base_params = _fn(
    "flatopt_optimizer_group_base_params",
    st,
    [_opt_p, c_size_t, POINTER(BaseParams), c_size_t],
    required=False,
)
# Mixed precision (0.2.0); optional so that an older library still loads.
param_options_init = _fn("flatopt_param_options_init", st, [c_void_p, c_size_t], required=False)
optimizer_add_param_with_options = _fn(
    "flatopt_optimizer_add_param_with_options",
    st,
    [_opt_p, c_void_p, c_void_p, c_size_t, POINTER(ParamOptions)],
    required=False,
)
optimizer_step_mixed = _fn(
    "flatopt_optimizer_step_mixed", st, [_opt_p, c_void_p, c_size_t, c_float], required=False
)
# The split step (flatopt.torch runs its ranges on PyTorch's threads); optional so that an
# older library still loads (begin_step_mixed is 0.2.0's).
optimizer_begin_step_mixed = _fn(
    "flatopt_optimizer_begin_step_mixed", st, [_opt_p, c_void_p, c_size_t, c_float],
    required=False,
)
optimizer_step_range = _fn(
    "flatopt_optimizer_step_range", st, [_opt_p, c_size_t, c_size_t], required=False
)
optimizer_end_step = _fn("flatopt_optimizer_end_step", st, [_opt_p], required=False)
loss_scaler_options_init = _fn(
    "flatopt_loss_scaler_options_init", st, [c_void_p, c_size_t], required=False
)
optimizer_set_loss_scaler = _fn(
    "flatopt_optimizer_set_loss_scaler", st, [_opt_p, POINTER(LossScalerOptions)], required=False
)
optimizer_loss_scaler_state = _fn(
    "flatopt_optimizer_loss_scaler_state",
    st,
    [_opt_p, POINTER(c_float), POINTER(c_uint32), POINTER(c_uint32)],
    required=False,
)
optimizer_set_loss_scaler_state = _fn(
    "flatopt_optimizer_set_loss_scaler_state", st, [_opt_p, c_float, c_uint32], required=False
)
widen_to_f32 = _fn(
    "flatopt_widen_to_f32", st, [c_uint32, c_void_p, c_void_p, c_size_t], required=False
)
narrow_from_f32 = _fn(
    "flatopt_narrow_from_f32", st, [c_uint32, c_void_p, c_void_p, c_size_t], required=False
)
optimizer_set_group_base_params = _fn(
    "flatopt_optimizer_set_group_base_params",
    st,
    [_opt_p, c_size_t, POINTER(BaseParams)],
    required=False,
)
default_simd_tier = _fn("flatopt_default_simd_tier", c_uint32, [])
simd_tier_available = _fn("flatopt_simd_tier_available", c_int32, [c_uint32])
simd_tier_name = _fn("flatopt_simd_tier_name", c_char_p, [c_uint32])

# Checkpoints: newer than 0.1's first cut; optional so that an older library still loads
# (state_dict() then raises UnsupportedError).
optimizer_checkpoint_size = _fn(
    "flatopt_optimizer_checkpoint_size", st, [_opt_p, POINTER(c_size_t)], required=False
)
optimizer_save = _fn(
    "flatopt_optimizer_save",
    st,
    [_opt_p, POINTER(c_uint8), c_size_t, POINTER(c_size_t)],
    required=False,
)
optimizer_load = _fn(
    "flatopt_optimizer_load", st, [_opt_p, POINTER(c_uint8), c_size_t], required=False
)
optimizer_save_file = _fn("flatopt_optimizer_save_file", st, [_opt_p, c_char_p], required=False)
optimizer_load_file = _fn("flatopt_optimizer_load_file", st, [_opt_p, c_char_p], required=False)
# A checkpoint's counters and learning rate, read from the checkpoint itself (one snapshot).
optimizer_checkpoint_info = _fn(
    "flatopt_optimizer_checkpoint_info",
    st,
    [_opt_p, POINTER(c_uint8), c_size_t, POINTER(c_uint64), POINTER(c_uint64), POINTER(c_float)],
    required=False,
)

# Sharded training (two-phase step with a global sum of squares); optional so that an older
# library still loads (the sharding methods then raise UnsupportedError).
sum_squares_block_size = _fn("flatopt_sum_squares_block_size", c_size_t, [], required=False)
sum_squares_partials = _fn(
    "flatopt_sum_squares_partials", st, [c_void_p, c_size_t, c_void_p, c_size_t], required=False
)
optimizer_sum_squares_block_count = _fn(
    "flatopt_optimizer_sum_squares_block_count", st, [_opt_p, POINTER(c_size_t)], required=False
)
optimizer_sum_squares_partials = _fn(
    "flatopt_optimizer_sum_squares_partials", st, [_opt_p, c_void_p, c_size_t], required=False
)
optimizer_step_with_sum_squares = _fn(
    "flatopt_optimizer_step_with_sum_squares", st, [_opt_p, c_double], required=False
)
# Sharded training with per-buffer norms (LAMB, LARS, NovoGrad): optional as above.
optimizer_norm_partials = _fn(
    "flatopt_optimizer_norm_partials", st, [_opt_p, c_double, c_void_p, c_size_t], required=False
)
optimizer_step_with_norms = _fn(
    "flatopt_optimizer_step_with_norms", st, [_opt_p, c_double, c_void_p, c_size_t],
    required=False
)

library_version = version().decode()


def _waiting(f):
    """``f`` (a function taking an optimizer handle) made to wait out ``FLATOPT_ERR_BUSY``.

    The library refuses a call on a handle another thread is using, before touching anything.
    The Python classes serialise their calls with a lock, except the hot path of ``update()``,
    which calls the raw function without it (see ``Optimizer.update``); a call that meets such
    an update retries, yielding the GIL, until it is over. So Python callers wait, as with a
    lock, and never see ``BusyError``. The raw function is ``.raw``.
    """

    def call(*args):
        status = f(*args)
        while status == ERR_BUSY:
            time.sleep(0)
            status = f(*args)
        return status

    call.raw = f
    call.__name__ = call.__qualname__ = f.__name__
    return call


for _name, _f in list(globals().items()):
    if _name.startswith("optimizer_") and _name not in ("optimizer_new", "optimizer_free"):
        if _f is not None:
            globals()[_name] = _waiting(_f)
del _name, _f

# ---------------------------------------------------------------------------------------------
# Status handling.

_EXC = {
    ERR_NULL_POINTER: _errors.InternalError,
    ERR_INVALID_ARGUMENT: _errors.InvalidArgumentError,
    ERR_LENGTH_MISMATCH: _errors.LengthMismatchError,
    ERR_NON_FINITE: _errors.NonFiniteError,
    ERR_INVALID_STATE: _errors.InvalidStateError,
    ERR_UNSUPPORTED: _errors.UnsupportedError,
    ERR_OVERLAP: _errors.OverlapError,
    ERR_IO: _errors.CheckpointIOError,
    ERR_CORRUPT: _errors.CheckpointError,
    ERR_INTERNAL: _errors.InternalError,
    ERR_BUSY: _errors.BusyError,
    ERR_POISONED: _errors.InternalError,
}


def message():
    """The library's last message on this thread (empty if none)."""
    m = last_error_message()
    return m.decode("utf-8", "replace") if m else ""


def raise_for(status, context=""):
    """Raises the exception of an error status, with the library's message."""
    msg = message()
    name = status_str(status).decode("utf-8", "replace")
    text = msg or name
    if context:
        text = f"{context}: {text}"
    exc = _EXC.get(status, _errors.InternalError)
    raise exc(text, status=status)


def check(status, context=""):
    """Returns the status if it is OK or SKIPPED, else raises its exception."""
    if status == OK or status == SKIPPED:
        return status
    raise_for(status, context)


# ---------------------------------------------------------------------------------------------
# Struct initialisation: the init function writes exactly the size we pass (our struct's), so a
# newer library with bigger structs gives the fields we lack their defaults (README "API
# conventions", "Versioned structs").


def _init_into(struct_type, init, *args):
    out = struct_type()
    check(init(ctypes.byref(out), ctypes.sizeof(struct_type), *args), f"{init.__name__}")
    return out


def new_config():
    return _init_into(ConfigStruct, config_init)


def new_base_params(kind):
    return _init_into(BaseParams, base_params_init, c_uint32(kind))


def new_schedule(kind):
    return _init_into(ScheduleStruct, schedule_init, c_uint32(kind))




def group_rate(opt, group):
    """The learning rate group ``group`` of optimizer handle ``opt`` uses in its next update, as
    a Python float: the exact (f64) value of the schedule times the group's ratio, which the
    update applies rounded to float32; a library without the exact query gives that float32."""
    if optimizer_group_current_lr_exact is not None:
        out = c_double()
        check(optimizer_group_current_lr_exact(opt, group, ctypes.byref(out)))
        return out.value
    out32 = c_float()
    check(optimizer_group_current_lr(opt, group, ctypes.byref(out32)))
    return float(out32.value)
