"""Schedules: ``.step()`` (manual, epoch style) and ``.current_lr``, unbound and bound to an
optimizer, the per-update option, the learning rate actually applied, and every schedule class
against a Python transcription of the formulas in docs/numerics.md."""

import math

import numpy as np
import pytest

import flatopt


def f32(x):
    return float(np.float32(x))


def _cos(top, eta_min, pos, length):
    return eta_min + (top - eta_min) * (1.0 + math.cos(math.pi * pos / length)) / 2.0


def one_cycle(e, max_lr, total, pct=0.3, div=25.0, final_div=1e4):
    init = max_lr / div
    lo = init / final_div
    e1 = pct * total - 1
    e2 = total - 1
    x = min(e, e2)

    def anneal(a, b, q):
        return b + (a - b) / 2.0 * (math.cos(math.pi * q) + 1.0)

    if x <= e1:
        return init if e1 == 0 else anneal(init, max_lr, x / e1)
    return anneal(max_lr, lo, (x - e1) / (e2 - e1))


def cyclic(e, base, max_lr, up, down, mode="triangular", gamma=1.0):
    tot = up + down
    r = up / tot
    cycle = math.floor(1 + e / tot)
    x = 1.0 + e / tot - cycle
    h = x / r if x <= r else (x - 1) / (r - 1)
    scale = {"triangular": 1.0, "triangular2": 1 / 2 ** (cycle - 1), "exp_range": gamma**e}[mode]
    return base + (max_lr - base) * h * scale


def warm_restarts(n, base, t0, tmult, eta_min):
    out, t_cur, t_i = [], 0, t0
    for _ in range(n):
        out.append(_cos(base, eta_min, t_cur, t_i))
        t_cur += 1
        if t_cur >= t_i:
            t_cur -= t_i
            t_i *= tmult
    return out


N = 40
CASES = [
    ("ConstantLR", lambda: flatopt.ConstantLR(0.1, factor=0.25, total_iters=4),
     lambda e: 0.1 * 0.25 if e < 4 else 0.1),
    ("LinearLR", lambda: flatopt.LinearLR(0.1, start_factor=0.2, end_factor=0.9, total_iters=10),
     lambda e: 0.1 * (0.2 + (0.9 - 0.2) * min(e, 10) / 10)),
    ("StepLR", lambda: flatopt.StepLR(0.1, step_size=7, gamma=0.5),
     lambda e: 0.1 * 0.5 ** (e // 7)),
    ("MultiStepLR", lambda: flatopt.MultiStepLR(0.1, milestones=[25, 5, 12], gamma=0.3),
     lambda e: 0.1 * 0.3 ** sum(m <= e for m in [5, 12, 25])),
    ("ExponentialLR", lambda: flatopt.ExponentialLR(0.1, gamma=0.9),
     lambda e: 0.1 * 0.9**e),
    ("ExponentialDecayLR", lambda: flatopt.ExponentialDecayLR(0.1, decay_steps=4, decay_rate=0.5, transition_begin=3, staircase=True, end_value=0.01),
     lambda e: max(0.1 * 0.5 ** math.floor(max(e - 3, 0) / 4), 0.01)),
    ("CosineAnnealingLR", lambda: flatopt.CosineAnnealingLR(0.1, T_max=30, eta_min=0.001),
     lambda e: _cos(0.1, 0.001, min(e, 30), 30)),
    ("PolynomialLR", lambda: flatopt.PolynomialLR(0.1, total_iters=20, power=2.0),
     lambda e: 0.1 * (1 - min(e, 20) / 20) ** 2),
    ("WarmupScheduler", lambda: flatopt.WarmupScheduler(0.1, warmup_epochs=8, warmup_start_lr=0.01),
     lambda e: 0.01 + (0.1 - 0.01) * min(e / 8, 1)),
    ("WarmupCosineSchedule", lambda: flatopt.WarmupCosineSchedule(0.1, warmup_steps=5, total_steps=30, warmup_start_lr=0.0, eta_min=0.002),
     lambda e: 0.1 * e / 5 if e < 5 else _cos(0.1, 0.002, min(e - 5, 25), 25)),
    ("OneCycleLR", lambda: flatopt.OneCycleLR(0.1, total_steps=30),
     lambda e: one_cycle(e, 0.1, 30)),
    ("OneCycleLR epochs", lambda: flatopt.OneCycleLR(0.2, epochs=5, steps_per_epoch=7, pct_start=0.4, div_factor=10.0, final_div_factor=100.0),
     lambda e: one_cycle(e, 0.2, 35, 0.4, 10.0, 100.0)),
    ("CyclicLR", lambda: flatopt.CyclicLR(0.01, max_lr=0.1, step_size_up=6, step_size_down=4),
     lambda e: cyclic(e, 0.01, 0.1, 6, 4)),
    ("CyclicLR triangular2", lambda: flatopt.CyclicLR(0.01, max_lr=0.1, step_size_up=5, mode="triangular2"),
     lambda e: cyclic(e, 0.01, 0.1, 5, 5, "triangular2")),
    ("CyclicLR exp_range", lambda: flatopt.CyclicLR(0.01, max_lr=0.1, step_size_up=5, mode="exp_range", gamma=0.97),
     lambda e: cyclic(e, 0.01, 0.1, 5, 5, "exp_range", 0.97)),
    ("PiecewiseConstantSchedule", lambda: flatopt.PiecewiseConstantSchedule(boundaries=[3, 10, 20], values=[0.1, 0.05, 0.02, 0.001]),
     lambda e: [0.1, 0.05, 0.02, 0.001][sum(b <= e for b in [3, 10, 20])]),
]
RESTARTS = warm_restarts(N, 0.1, 5, 2, 0.001)
CASES.append(
    ("CosineAnnealingWarmRestarts",
     lambda: flatopt.CosineAnnealingWarmRestarts(0.1, T_0=5, T_mult=2, eta_min=0.001),
     lambda e: RESTARTS[e])
)


def _close(got, want):
    assert got == pytest.approx(f32(want), rel=2e-7, abs=1e-12)


@pytest.mark.parametrize("name,make,formula", CASES, ids=[c[0] for c in CASES])
def test_schedule_formula_unbound_and_bound(name, make, formula):
    s = make()
    unbound = []
    for e in range(N):
        assert s.last_epoch == e
        unbound.append(s.current_lr)
        s.step()
    for e, lr in enumerate(unbound):
        _close(lr, formula(e))

    # Bound: the optimizer's current_lr follows .step(); updates do not move it.
    s = make()
    opt = flatopt.SGD(lr=s)
    w = np.zeros(3, np.float32)
    opt.register_trainable_weights([w], grads=[np.ones(3, np.float32)])
    for e in range(N):
        assert opt.current_lr == s.current_lr == unbound[e]
        opt.update()
        opt.update()
        assert s.current_lr == unbound[e]  # manual: updates do not move it
        s.step()


@pytest.mark.parametrize("name,make,formula", CASES[:6], ids=[c[0] for c in CASES[:6]])
def test_per_update_schedule_advances_on_applied_updates(name, make, formula):
    s = make()
    s.per_update = True  # the option is read when the optimizer is created
    opt = flatopt.Lookahead(flatopt.sgd(s), sync_period=100)
    w = np.zeros(2, np.float32)
    opt.register_trainable_weights([w])
    applied = 0
    for t in range(30):
        _close(opt.current_lr, formula(applied))
        g = np.ones(2, np.float32)
        if t % 7 == 3:
            g[1] = np.inf  # skipped: does not advance the schedule
        if opt.update([g]):
            applied += 1
    assert opt.step_count == applied == s.last_epoch


def test_learning_rate_actually_applied():
    # SGD on grads of ones moves every element by exactly -lr.
    s = flatopt.StepLR(0.5, step_size=2, gamma=0.5)
    opt = flatopt.SGD(lr=s)
    w = np.zeros(1, np.float32)
    opt.register_trainable_weights([w], grads=[np.ones(1, np.float32)])
    for _ in range(6):
        lr = opt.current_lr
        before = float(w[0])
        opt.update()
        assert float(w[0]) == float(np.float32(before) - np.float32(lr))
        s.step()


def test_steps_before_binding_and_registration_are_kept():
    s = flatopt.StepLR(1.0, step_size=1, gamma=0.5)
    s.step()
    s.step()  # before the optimizer exists
    opt = flatopt.Adam(lr=s)
    assert opt.current_lr == 0.25
    s.step()  # after creation, before registration
    assert opt.current_lr == 0.125
    opt.register_trainable_weights([np.zeros(2, np.float32)])
    assert opt.current_lr == s.current_lr == 0.125
    assert s.last_epoch == 3


def test_last_epoch_argument_and_epoch_jumps():
    s = flatopt.ExponentialLR(1.0, gamma=0.5, last_epoch=3)
    assert s.last_epoch == 3 and s.current_lr == 0.125
    s.step(5)
    assert s.last_epoch == 5 and s.current_lr == 1 / 32
    with pytest.raises(flatopt.InvalidArgumentError, match="backwards"):
        s.step(2)


def test_lookahead_lr_replaces_the_base_learning_rate():
    s = flatopt.ExponentialLR(0.2, gamma=0.5)
    opt = flatopt.Lookahead(flatopt.adam(1e-3), lr=s)
    assert opt.current_lr == pytest.approx(0.2) and opt.schedule is s
    # A constant learning rate reads back exactly as given (the update applies f32(lr)).
    opt = flatopt.Lookahead(flatopt.adam(1e-3), lr=0.05)
    assert opt.current_lr == 0.05
    opt = flatopt.Lookahead(flatopt.adam(1e-3))
    assert opt.current_lr == 1e-3


def test_reduce_lr_on_plateau():
    s = flatopt.ReduceLROnPlateau(1.0, mode="min", factor=0.5, patience=2, cooldown=1,
                                  min_lr=0.2)
    opt = flatopt.SGD(lr=s)
    opt.register_trainable_weights([np.zeros(1, np.float32)])
    lrs = []
    for metric in [5, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 3]:
        s.step(metric)
        lrs.append(opt.current_lr)
    # PyTorch: bad epochs 1, 2, 3 > patience -> 0.5; cooldown 1 epoch; then 3 more -> 0.25;
    # then the floor 0.2.
    assert lrs == [1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.25]
    with pytest.raises(flatopt.InvalidArgumentError, match="finite"):
        s.step(float("nan"))
    assert s.last_epoch == 12 and s.current_lr == 0.25


def test_schedule_state_dict_unbound():
    s = flatopt.StepLR(0.1, step_size=2)
    for _ in range(5):
        s.step()
    t = flatopt.StepLR(0.1, step_size=2)
    t.load_state_dict(s.state_dict())
    assert t.current_lr == s.current_lr and t.last_epoch == 5
    opt = flatopt.SGD(lr=s)
    with pytest.raises(flatopt.InvalidStateError):
        s.load_state_dict(t.state_dict())
    assert opt.current_lr == s.current_lr
    del opt  # the schedule is free again and keeps its state
    assert s.current_lr == t.current_lr and s.last_epoch == 5
    flatopt.Adam(lr=s)


def test_pytorch_and_braintools_accessors():
    s = flatopt.CosineAnnealingLR(0.1, T_max=10)
    assert s.get_last_lr() == s.current_lrs == [s.current_lr]
    s.step_epoch()
    assert s.last_epoch == 1
