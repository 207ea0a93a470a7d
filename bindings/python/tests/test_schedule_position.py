"""A schedule's position is set at once (C ``flatopt_optimizer_schedule_set_epoch``), never
stepped there call by call: ``last_epoch=``, ``step(epoch=)``, ``load_state_dict``, binding,
``register_trainable_weights``, copies and unpickling.

Rows: every counter-driven schedule at several positions (phase ends, cycle wraps, warm
restarts) gives the learning rate stepping gives, bit for bit; huge positions finish within a
time bound or are refused with a named error; copies of a schedule with a million manual steps
are fast.
"""

import copy
import pickle
import time

import numpy as np
import pytest

import flatopt

U64_MAX = 2**64 - 1
# Far below the ~1.4 s per million steps that stepping there one call at a time took.
FAST = 0.25

SCHEDULES = {
    "ConstantLR": lambda **k: flatopt.ConstantLR(0.1, factor=0.5, total_iters=4, **k),
    "LinearLR": lambda **k: flatopt.LinearLR(0.1, start_factor=0.2, total_iters=7, **k),
    "StepLR": lambda **k: flatopt.StepLR(0.1, step_size=3, gamma=0.5, **k),
    "MultiStepLR": lambda **k: flatopt.MultiStepLR(0.1, milestones=[2, 5, 40], gamma=0.3, **k),
    "ExponentialLR": lambda **k: flatopt.ExponentialLR(0.1, gamma=0.9, **k),
    "ExponentialDecayLR": lambda **k: flatopt.ExponentialDecayLR(
        0.1, decay_steps=5, decay_rate=0.5, transition_begin=3, staircase=True, **k
    ),
    "CosineAnnealingLR": lambda **k: flatopt.CosineAnnealingLR(0.1, T_max=9, **k),
    "CosineAnnealingWarmRestarts": lambda **k: flatopt.CosineAnnealingWarmRestarts(
        0.1, T_0=3, T_mult=2, eta_min=1e-3, **k
    ),
    "CosineAnnealingWarmRestarts T_mult=1": lambda **k: flatopt.CosineAnnealingWarmRestarts(
        0.1, T_0=4, **k
    ),
    "PolynomialLR": lambda **k: flatopt.PolynomialLR(0.1, total_iters=6, power=2.0, **k),
    "WarmupScheduler": lambda **k: flatopt.WarmupScheduler(0.1, warmup_epochs=5, **k),
    "WarmupCosineSchedule": lambda **k: flatopt.WarmupCosineSchedule(
        0.1, warmup_steps=4, total_steps=20, **k
    ),
    "OneCycleLR": lambda **k: flatopt.OneCycleLR(0.1, total_steps=30, **k),
    "CyclicLR": lambda **k: flatopt.CyclicLR(
        0.01, 0.1, step_size_up=3, step_size_down=2, mode="triangular2", **k
    ),
    "PiecewiseConstantSchedule": lambda **k: flatopt.PiecewiseConstantSchedule(
        boundaries=[3, 10], values=[0.1, 0.05, 0.01], **k
    ),
}

# Includes the warm restarts at 3, 9, 21, 45 (T_0 = 3, T_mult = 2) and the other phase ends.
POSITIONS = [0, 1, 2, 3, 4, 5, 8, 9, 10, 20, 21, 22, 29, 30, 45, 46, 100]


def _lrs_by_steps(make, n):
    s = make()
    out = []
    for _ in range(n + 1):
        out.append(s.current_lr)
        s.step()
    return out


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_position_set_equals_steps(name):
    make = SCHEDULES[name]
    want = _lrs_by_steps(make, max(POSITIONS))
    for n in POSITIONS:
        s = make(last_epoch=n)
        assert s.last_epoch == n
        assert s.current_lr == want[n], f"{name}: last_epoch={n}"
        t = make()
        t.step()
        t.step(epoch=max(n, 1))
        assert t.current_lr == want[max(n, 1)], f"{name}: step(epoch={n})"
        # bound to an optimizer (manual and per update): the same rate
        for per_update in (False, True):
            b = make(per_update=per_update)
            opt = flatopt.SGD(lr=b)
            b.step(epoch=n)
            assert opt.current_lr == want[n], f"{name}: bound, per_update={per_update}, {n}"
            opt.register_trainable_weights([np.zeros(3, np.float32)])
            assert opt.current_lr == want[n], f"{name}: after registration, {n}"


HUGE = [
    ("StepLR last_epoch 2**63-1", lambda: flatopt.StepLR(0.1, last_epoch=2**63 - 1)),
    ("StepLR last_epoch 2**64-1", lambda: flatopt.StepLR(0.1, last_epoch=U64_MAX)),
    ("ExponentialLR last_epoch 2**63", lambda: flatopt.ExponentialLR(0.1, last_epoch=2**63)),
    ("CosineAnnealingWarmRestarts last_epoch 2**64-1",
     lambda: flatopt.CosineAnnealingWarmRestarts(0.1, T_0=7, T_mult=3, last_epoch=U64_MAX)),
    ("CyclicLR last_epoch 2**62", lambda: flatopt.CyclicLR(0.01, 0.1, last_epoch=2**62)),
    ("step(epoch=2**64-1)", lambda: _stepped(flatopt.OneCycleLR(0.1, total_steps=50), U64_MAX)),
    ("bound step(epoch=2**63)", lambda: _bound_stepped(flatopt.LinearLR(0.1), 2**63)),
    ("bound per-update step(epoch=2**63)",
     lambda: _bound_stepped(flatopt.PolynomialLR(0.1, per_update=True), 2**63)),
    ("load_state_dict manual_steps 2**64-1", lambda: _loaded(flatopt.WarmupScheduler(0.1), U64_MAX)),
]


def _stepped(s, n):
    s.step(epoch=n)
    return s


def _bound_stepped(s, n):
    opt = flatopt.Adam(lr=s)
    opt.register_trainable_weights([np.zeros(4, np.float32)])
    s.step(epoch=n)
    opt.register_trainable_weights([np.zeros(4, np.float32)])  # replays the position
    return s


def _loaded(s, n):
    s.load_state_dict({"type": type(s).__name__, "manual_steps": n, "metrics": []})
    return s


@pytest.mark.parametrize("name,make", HUGE, ids=[h[0] for h in HUGE])
def test_huge_position_is_fast(name, make):
    t = time.perf_counter()
    s = make()
    lr = s.current_lr
    dup = pickle.loads(pickle.dumps(s))
    twin = copy.deepcopy(s)
    elapsed = time.perf_counter() - t
    assert elapsed < FAST, f"{name}: {elapsed:.3f} s"
    assert s.last_epoch >= 2**62
    assert dup.current_lr == twin.current_lr == lr
    assert dup.last_epoch == twin.last_epoch == s.last_epoch


REFUSED = [
    ("last_epoch 2**64", lambda: flatopt.StepLR(0.1, last_epoch=2**64),
     flatopt.InvalidArgumentError, "invalid last_epoch = 18446744073709551616"),
    ("step(epoch=2**64)", lambda: flatopt.StepLR(0.1).step(epoch=2**64),
     flatopt.InvalidArgumentError, "invalid epoch = 18446744073709551616"),
    ("step(epoch) backwards from 2**63", lambda: flatopt.StepLR(0.1, last_epoch=2**63).step(epoch=5),
     flatopt.InvalidArgumentError, "cannot move backwards"),
    ("load_state_dict manual_steps 2**64",
     lambda: _loaded(flatopt.StepLR(0.1), 2**64), flatopt.CheckpointError, "manual_steps"),
]


@pytest.mark.parametrize("name,call,exc,msg", REFUSED, ids=[r[0] for r in REFUSED])
def test_huge_position_refused(name, call, exc, msg):
    t = time.perf_counter()
    with pytest.raises(exc, match=msg.replace("(", r"\(").replace("[", r"\[")):
        call()
    assert time.perf_counter() - t < FAST, name


COPIES = [
    ("pickle", lambda s: pickle.loads(pickle.dumps(s))),
    ("deepcopy", copy.deepcopy),
    ("copy", copy.copy),
    ("load_state_dict", lambda s: _loaded(_restarts(), s.state_dict()["manual_steps"])),
]


def _restarts():
    return flatopt.CosineAnnealingWarmRestarts(0.1, T_0=1000, T_mult=2)


@pytest.mark.parametrize("how,dup", COPIES, ids=[c[0] for c in COPIES])
def test_million_manual_steps_copy_fast(how, dup):
    s = _restarts()
    s.step(epoch=1_000_000)
    t = time.perf_counter()
    d = dup(s)
    opt = flatopt.SGD(lr=d)
    opt.register_trainable_weights([np.zeros(2, np.float32)])
    elapsed = time.perf_counter() - t
    assert elapsed < FAST, f"{how}: {elapsed:.3f} s"
    assert d.last_epoch == 1_000_000 and opt.current_lr == s.current_lr
