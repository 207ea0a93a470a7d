"""Every argument of every public constructor and function, given malformed values.

The table is generated from the signatures: each argument has a kind (KINDS), each kind a
list of bad values with the error it must raise, and each (callable, argument, bad value) is
one test. A malformed value must raise a flatopt error (never a bare TypeError, ValueError or
OverflowError from ctypes or float()) whose message names the argument; a value out of its C
type's range must be refused, never truncated. A new argument without a kind fails
test_every_argument_has_a_kind.
"""

import inspect

import numpy as np
import pytest

import flatopt
from flatopt import sharded

TYPE, VALUE = flatopt.ArgumentTypeError, flatopt.InvalidArgumentError

# kind -> [(label, bad value, exception type)]
BAD = {
    "real": [("None", None, TYPE), ("a string", "1", TYPE), ("10**400", 10**400, VALUE),
             ("a list", [1.0], TYPE), ("True", True, TYPE)],
    # A learning rate of a schedule, or a per-group list of them (braintools / PyTorch).
    "real or list": [("None", None, TYPE), ("a string", "1", TYPE), ("10**400", 10**400, VALUE),
                     ("True", True, TYPE), ("an empty list", [], VALUE),
                     ("a string in a list", [0.1, "x"], TYPE),
                     ("10**400 in a list", [0.1, 10**400], VALUE)],
    "optional real": [("a string", "1", TYPE), ("10**400", 10**400, VALUE)],
    "lr": [("None", None, TYPE), ("a string", "fast", TYPE), ("10**400", 10**400, VALUE)],
    "optional lr": [("a string", "fast", TYPE), ("-10**400", -10**400, VALUE)],
    "uint": [("None", None, TYPE), ("2**64", 2**64, VALUE), ("-1", -1, VALUE),
             ("1.5", 1.5, VALUE), ("a string", "3", TYPE), ("inf", float("inf"), VALUE)],
    "optional uint": [("2**64", 2**64, VALUE), ("a string", "3", TYPE), ("nan", float("nan"), VALUE)],
    "u32 >= 1": [("2**32 + 2", 2**32 + 2, VALUE), ("0", 0, VALUE), ("None", None, TYPE)],
    "u64 >= 1": [("2**64 + 1", 2**64 + 1, VALUE), ("0", 0, VALUE), ("2.5", 2.5, VALUE)],
    "flag": [("'yes'", "yes", TYPE), ("2", 2, TYPE), ("None", None, TYPE)],
    "choice": [("a list", ["x"], VALUE), ("unknown", "nope", VALUE), ("a dict", {}, VALUE)],
    "optional choice": [("a list", ["x"], VALUE), ("unknown", "nope", VALUE)],
    "betas": [("None", None, TYPE), ("strings", ("a", "b"), TYPE), ("one", (0.9,), VALUE)],
    "uint list": [("an int", 5, TYPE), ("None in it", [None], TYPE), ("2**64 in it", [2**64], VALUE)],
    "real list": [("an int", 5, TYPE), ("None in it", [None, 0.1, 0.01], TYPE)],
    "schedule list": [("an int", 5, TYPE), ("None in it", [None], TYPE), ("empty", [], VALUE),
                      ("a string", "StepLR", TYPE)],
}

SCHEDULES = [
    flatopt.ConstantLR, flatopt.LinearLR, flatopt.StepLR, flatopt.MultiStepLR,
    flatopt.ExponentialLR, flatopt.ExponentialDecayLR, flatopt.CosineAnnealingLR,
    flatopt.CosineAnnealingWarmRestarts, flatopt.PolynomialLR, flatopt.WarmupScheduler,
    flatopt.WarmupCosineSchedule, flatopt.OneCycleLR, flatopt.CyclicLR,
    flatopt.PiecewiseConstantSchedule, flatopt.ReduceLROnPlateau, flatopt.ChainedScheduler,
    flatopt.SequentialLR,
]
OPTIMIZERS = [flatopt.SGD, flatopt.Momentum, flatopt.MomentumNesterov, flatopt.Adam,
              flatopt.AdamW, flatopt.RAdam, flatopt.Lookahead, flatopt.Optimizer, flatopt.sgd,
              flatopt.adam, flatopt.adamw, flatopt.radam]
# The optimizer family (flatopt/_family.py): the optax-style functions need a learning rate.
FAMILY = [flatopt.adagrad, flatopt.rmsprop, flatopt.adamax, flatopt.nadam, flatopt.lion,
          flatopt.adabelief, flatopt.yogi, flatopt.adadelta, flatopt.rprop]
OPTIMIZERS += FAMILY + [flatopt.Adagrad, flatopt.RMSprop, flatopt.Adamax, flatopt.Nadam,
                        flatopt.Lion, flatopt.AdaBelief, flatopt.Yogi, flatopt.Adadelta,
                        flatopt.Rprop]
FUNCTIONS = [sharded.shard_ranges, flatopt.DynamicLossScale]

# The valid arguments each callable needs besides the one under test.
VALID = {
    flatopt.OneCycleLR: {"epochs": 2, "steps_per_epoch": 5},
    flatopt.Lookahead: {"base_optimizer": flatopt.sgd(0.1)},
    flatopt.ChainedScheduler: {"schedulers": [flatopt.StepLR(0.1)]},
    flatopt.SequentialLR: {"schedulers": [flatopt.StepLR(0.1), flatopt.ExponentialLR(0.1)],
                           "milestones": [5]},
    flatopt.Optimizer: {"base": flatopt.sgd(0.1), "lr": None, "lookahead": True},
    flatopt.sgd: {"learning_rate": 0.1}, flatopt.adam: {"learning_rate": 0.1},
    flatopt.adamw: {"learning_rate": 0.1}, flatopt.radam: {"learning_rate": 0.1},
    sharded.shard_ranges: {"total": 10, "n_shards": 2},
}
VALID.update({fn: {"learning_rate": 0.1} for fn in FAMILY})

# (argument name, or "Callable.argument") -> kind; None: checked by a row elsewhere.
KINDS = {
    "base_lr": "real or list", "max_lr": "real or list", "factor": "real", "start_factor": "real",
    "end_factor": "real", "gamma": "real", "decay_rate": "real", "eta_min": "real",
    "power": "real", "warmup_start_lr": "real", "pct_start": "real", "div_factor": "real",
    "final_div_factor": "real", "threshold": "real", "min_lr": "real", "eps": "real",
    "alpha": "real", "weight_decay": "real", "dampening": "real", "b1": "real", "b2": "real",
    "end_value": "optional real", "momentum": "optional real",
    "grad_clip_norm": "optional real", "grad_clip_value": "optional real",
    "total_iters": "uint", "step_size": "uint", "decay_steps": "uint",
    "transition_begin": "uint", "T_max": "uint", "T_0": "uint", "T_mult": "uint",
    "warmup_epochs": "uint", "warmup_steps": "uint", "total_steps": "uint",
    "step_size_up": "uint", "patience": "uint", "cooldown": "uint", "last_epoch": "uint",
    "OneCycleLR.total_steps": "optional uint", "epochs": "optional uint",
    "steps_per_epoch": "optional uint", "ReduceLROnPlateau.min_lr": "real or list",
    "step_size_down": "optional uint",
    "num_threads": "u32 >= 1", "sync_period": "u64 >= 1",
    "staircase": "flag", "per_update": "flag", "nesterov": "flag", "amsgrad": "flag",
    "lookahead": "flag",
    "lr_decay": "real", "initial_accumulator_value": "real", "initial_scale": "real",
    "momentum_decay": "real", "decoupled_weight_decay": "real",
    "eps_inside_sqrt": "flag", "centered": "flag", "eps_outside_max": "flag",
    "constant_momentum": "flag",
    "eps_root": "real", "rho": "real", "eta_minus": "real", "eta_plus": "real",
    "min_step_size": "real", "max_step_size": "real", "etas": "betas", "step_sizes": "betas",
    "mode": "choice", "threshold_mode": "choice", "anneal_strategy": "choice",
    "scale_mode": "choice", "nonfinite": "choice", "simd_tier": "optional choice",
    "lr": "lr", "learning_rate": "lr", "Lookahead.lr": "optional lr", "Optimizer.lr": "optional lr",
    "betas": "betas", "milestones": "uint list", "schedulers": "schedule list", "boundaries": "uint list", "values": "real list",
    "total": "u64 >= 1", "n_shards": "u64 >= 1", "block": "u64 >= 1",
    "init_scale": "real", "growth_factor": "real", "backoff_factor": "real",
    "growth_interval": "u32 >= 1",
    # Compressed state (None: as the base optimizer's / the default).
    "state_dtype": "optional choice", "state_rounding": "optional choice",
    "slow_dtype": "optional choice", "state_seed": "optional uint",
    "state_index_offset": "optional uint",
    # Rows of test_bad_input.py: a callable, not a value, and the base optimizer's type.
    "scale_fn": None, "base_optimizer": None, "base": None,
}


def _kind(fn, arg):
    return KINDS.get(f"{fn.__name__}.{arg}", KINDS.get(arg, "missing"))


def _args(fn):
    return [p for p in inspect.signature(fn).parameters if p != "self"]


ROWS = []
for _fn in SCHEDULES + OPTIMIZERS + FUNCTIONS:
    for _arg in _args(_fn):
        _k = _kind(_fn, _arg)
        if _k in (None, "missing"):
            continue
        for _label, _value, _exc in BAD[_k]:
            ROWS.append((f"{_fn.__name__}({_arg}={_label})", _fn, _arg, _value, _exc))


@pytest.mark.parametrize("desc,fn,arg,value,exc", ROWS, ids=[r[0] for r in ROWS])
def test_malformed_argument(desc, fn, arg, value, exc):
    kwargs = dict(VALID.get(fn, {}))
    kwargs[arg] = value
    with pytest.raises(flatopt.FlatoptError) as info:
        fn(**kwargs)
    err = info.value
    assert isinstance(err, exc), f"{desc}: {type(err).__name__}: {err}"
    assert f"invalid {arg}" in str(err), f"{desc}: message {str(err)!r}"


@pytest.mark.parametrize("fn", SCHEDULES + OPTIMIZERS + FUNCTIONS,
                         ids=lambda f: f.__name__)
def test_every_argument_has_a_kind(fn):
    missing = [a for a in _args(fn) if _kind(fn, a) == "missing"]
    assert not missing, f"{fn.__name__}: add a kind (and so malformed-value rows) for {missing}"


@pytest.mark.parametrize("value,expected", [
    (np.float32(0.5), 0.5), (np.int64(3), 3.0), (np.array(0.25), 0.25), (2, 2.0),
])
def test_numbers_of_every_numeric_type_are_accepted(value, expected):
    opt = flatopt.SGD(lr=value)
    assert opt.current_lr == np.float32(expected)
