"""Copying and pickling of every object that holds a library handle (schedules, optimizers):
by value, never the raw handle.

One row per (object, way of copying). Each row builds the object, moves it along, copies it
(pickle in this process, pickle into another process, copy.deepcopy with the original then
collected, copy.copy), then drives the original's twin and the copy the same way: results
must be bit-identical, and the copy must never touch the original's memory (a crash in the
child process, or a copy reading freed memory, fails the row).
"""

import copy
import gc
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import flatopt

from conftest import HAS_CHECKPOINTS, grad_stream

SHAPES = [(5, 3), (4,)]


def _params():
    rng = np.random.default_rng(5)
    return {f"p{i}": rng.standard_normal(s).astype(np.float32) for i, s in enumerate(SHAPES)}


def _drive_schedule(s, n):
    """n steps of a schedule; returns the learning rates seen."""
    out = []
    for i in range(n):
        if isinstance(s, flatopt.ReduceLROnPlateau):
            s.step(1.0 + (i % 2))
        else:
            s.step()
        out.append(s.current_lr)
    return out


SCHEDULES = {
    "StepLR": lambda: flatopt.StepLR(0.1, step_size=2, gamma=0.5),
    "MultiStepLR": lambda: flatopt.MultiStepLR(0.1, milestones=[1, 3, 4], gamma=0.5),
    "CosineAnnealingWarmRestarts": lambda: flatopt.CosineAnnealingWarmRestarts(0.1, T_0=2, T_mult=2),
    "OneCycleLR": lambda: flatopt.OneCycleLR(0.1, total_steps=12),
    "CyclicLR": lambda: flatopt.CyclicLR(0.01, 0.1, step_size_up=3, mode="triangular2"),
    "PiecewiseConstantSchedule": lambda: flatopt.PiecewiseConstantSchedule(boundaries=[2, 5], values=[0.1, 0.05, 0.01]),
    "ReduceLROnPlateau": lambda: flatopt.ReduceLROnPlateau(0.1, patience=1, factor=0.5),
    "ExponentialDecayLR per-update": lambda: flatopt.ExponentialDecayLR(0.1, decay_steps=3, decay_rate=0.5, per_update=True),
}


def _drive_optimizer(opt, params, t0, n):
    g = grad_stream(SHAPES, seed=8)
    for t in range(t0, t0 + n):
        opt.update(dict(zip(params, g(t))))
        if opt.schedule is not None and not opt.schedule.per_update:
            if isinstance(opt.schedule, flatopt.ReduceLROnPlateau):
                opt.schedule.step(2.0)
            else:
                opt.schedule.step()
    return {k: v.copy() for k, v in params.items()}


OPTIMIZERS = {
    "Lookahead(adam) StepLR": lambda: flatopt.Lookahead(
        flatopt.adam(flatopt.StepLR(1e-2, step_size=2, gamma=0.5)), sync_period=3, alpha=0.5),
    "SGD momentum per-update cosine": lambda: flatopt.SGD(
        lr=flatopt.CosineAnnealingLR(0.1, T_max=9, per_update=True), momentum=0.9, nesterov=True),
    "AdamW": lambda: flatopt.AdamW(lr=3e-3, weight_decay=0.1, grad_clip_norm=1.0),
    "RAdam plateau": lambda: flatopt.RAdam(lr=flatopt.ReduceLROnPlateau(1e-2, patience=0)),
    "Adam amsgrad": lambda: flatopt.Adam(lr=1e-2, amsgrad=True, nonfinite="error"),
}


def _pickle(obj):
    return pickle.loads(pickle.dumps(obj))


def _deepcopy_collected(obj):
    """deepcopy, then the original (and everything only it refers to) collected."""
    out = copy.deepcopy(obj)
    del obj
    gc.collect()
    return out


COPIES = {"pickle": _pickle, "deepcopy+gc": _deepcopy_collected}


@pytest.mark.parametrize("how", list(COPIES))
@pytest.mark.parametrize("name", list(SCHEDULES))
def test_schedule_copies_by_value(name, how):
    orig, twin = SCHEDULES[name](), SCHEDULES[name]()
    _drive_schedule(orig, 3)
    _drive_schedule(twin, 3)
    dup = COPIES[how](orig)
    orig = None  # noqa: F841 (the copy must live on its own)
    gc.collect()
    assert dup.last_epoch == twin.last_epoch
    assert dup.current_lr == twin.current_lr
    assert _drive_schedule(dup, 6) == _drive_schedule(twin, 6)
    # The copy is unbound: it can drive an optimizer of its own.
    flatopt.SGD(lr=dup)


@pytest.mark.skipif(not HAS_CHECKPOINTS, reason="copying an optimizer needs checkpoints")
@pytest.mark.parametrize("how", list(COPIES))
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_registered_optimizer_copies_by_value(name, how):
    """The model's parameters and the optimizer are copied together (as a trainer
    checkpoints them): the copy updates the copied parameters, bit-identically to the
    original continuing."""
    params, opt = _params(), OPTIMIZERS[name]()
    opt.register_trainable_weights(params)
    _drive_optimizer(opt, params, 0, 4)
    dup_params, dup = COPIES[how]((params, opt))
    expected = _drive_optimizer(opt, params, 4, 5)
    del opt, params
    gc.collect()
    got = _drive_optimizer(dup, dup_params, 4, 5)
    for k in expected:
        assert np.array_equal(expected[k].view(np.uint32), got[k].view(np.uint32)), k


@pytest.mark.parametrize("how", list(COPIES) + ["copy.copy"])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_unregistered_optimizer_copies_by_value(name, how):
    opt = OPTIMIZERS[name]()
    if opt.schedule is not None and not opt.schedule.per_update:
        _drive_schedule(opt.schedule, 2)
    lr = opt.current_lr
    dup = copy.copy(opt) if how == "copy.copy" else COPIES[how](opt)
    del opt
    gc.collect()
    assert dup.current_lr == lr
    params = _params()
    dup.register_trainable_weights(params)
    _drive_optimizer(dup, params, 0, 2)
    assert dup.step_count == 2


@pytest.mark.skipif(not HAS_CHECKPOINTS, reason="copying an optimizer needs checkpoints")
def test_shallow_copy_has_own_state_over_the_same_arrays():
    params = _params()
    opt = OPTIMIZERS["Adam amsgrad"]()
    opt.register_trainable_weights(params)
    _drive_optimizer(opt, params, 0, 2)
    dup = copy.copy(opt)
    assert all(a is b for a, b in zip(dup._param_objs, opt._param_objs))
    assert dup.state_dict()["checkpoint"] == opt.state_dict()["checkpoint"]
    dup.update({k: np.ones_like(v) for k, v in params.items()})
    assert dup.step_count == 3 and opt.step_count == 2


# ---------------------------------------------------------------------------------------------
# Across processes: pickled here, unpickled and stepped in a fresh interpreter (a raw handle
# in the pickle would crash it).

_CHILD = textwrap.dedent(
    """
    import pickle, sys
    import numpy as np
    import flatopt
    obj = pickle.loads(sys.stdin.buffer.read())
    if isinstance(obj, flatopt.LRScheduler):
        out = []
        for i in range(6):
            if isinstance(obj, flatopt.ReduceLROnPlateau):
                obj.step(1.0 + (i % 2))
            else:
                obj.step()
            out.append(obj.current_lr)
    else:
        params, opt = obj
        for t in range(3):
            rng = np.random.default_rng([8, t])
            g = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in params.items()}
            opt.update(g)
        out = params
    sys.stdout.buffer.write(pickle.dumps(out))
    """
)


def _in_child(obj):
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD], input=pickle.dumps(obj), capture_output=True,
        timeout=120,
    )
    assert proc.returncode == 0, (
        f"child exited with {proc.returncode}: {proc.stderr.decode(errors='replace')[-2000:]}"
    )
    return pickle.loads(proc.stdout)


PROCESS_ROWS = ["schedule StepLR", "schedule ReduceLROnPlateau", "optimizer Lookahead(adam)"]


@pytest.mark.parametrize("row", PROCESS_ROWS)
def test_pickle_into_another_process(row):
    if row.startswith("schedule"):
        name = row.split()[1]
        s = SCHEDULES[name]()
        _drive_schedule(s, 2)
        got = _in_child(s)
        assert got == _drive_schedule(s, 6)
        return
    if not HAS_CHECKPOINTS:
        pytest.skip("copying an optimizer needs checkpoints")
    params = _params()
    opt = flatopt.Lookahead(flatopt.adam(1e-2), sync_period=2, alpha=0.5)
    opt.register_trainable_weights(params)
    _drive_optimizer(opt, params, 0, 3)
    got = _in_child((params, opt))
    for t in range(3):
        rng = np.random.default_rng([8, t])
        opt.update({k: rng.standard_normal(v.shape).astype(np.float32) for k, v in params.items()})
    for k in params:
        assert np.array_equal(params[k].view(np.uint32), got[k].view(np.uint32)), k


def test_a_raw_handle_refuses_to_be_copied():
    s = flatopt.StepLR(0.1)
    for how in (pickle.dumps, copy.copy, copy.deepcopy):
        with pytest.raises(flatopt.UnsupportedError, match="cannot be pickled or copied"):
            how(s._shadow)
