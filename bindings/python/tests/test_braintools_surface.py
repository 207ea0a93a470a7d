"""The braintools surface of the optimizers and schedules (issue 13): ``step()``, the
hyperparameter attributes, ``current_lr``, ``Momentum`` / ``MomentumNesterov``, ``get_lr()``,
the schedule state attributes (``last_epoch`` assignable, ``T_cur``, ``T_i``, ``best``,
``num_bad_epochs``, ``cooldown_counter``, each also readable as ``.value`` as braintools keeps
them), ``ChainedScheduler`` and ``SequentialLR``, and the arguments braintools refuses. One
test per table row."""

import copy
import math
import pickle

import numpy as np
import pytest

import flatopt

f32 = np.float32


def _params():
    rng = np.random.default_rng(3)
    return {"w": rng.standard_normal((5, 3)).astype(f32), "b": rng.standard_normal(3).astype(f32)}


def _grads(step):
    rng = np.random.default_rng(100 + step)
    return {"w": rng.standard_normal((5, 3)).astype(f32), "b": rng.standard_normal(3).astype(f32)}


def _bits(tree):
    return {k: v.tobytes() for k, v in tree.items()}


# ---------------------------------------------------------------------------------------------
# step(grads=None): braintools' name for update.

STEP_ROWS = {
    "SGD": lambda: flatopt.SGD(lr=0.1, momentum=0.9),
    "Momentum": lambda: flatopt.Momentum(lr=0.1),
    "MomentumNesterov": lambda: flatopt.MomentumNesterov(lr=0.1),
    "Adam": lambda: flatopt.Adam(lr=1e-2, amsgrad=True),
    "AdamW": lambda: flatopt.AdamW(lr=1e-2),
    "RAdam": lambda: flatopt.RAdam(lr=1e-2),
    "Lookahead": lambda: flatopt.Lookahead(flatopt.adam(1e-2), sync_period=2),
}


@pytest.mark.parametrize("name", list(STEP_ROWS))
def test_step_is_update(name):
    a, b = STEP_ROWS[name](), STEP_ROWS[name]()
    pa, pb = _params(), _params()
    a.register_trainable_weights(pa)
    b.register_trainable_weights(pb)
    for t in range(5):
        assert a.step(_grads(t)) is True
        assert b.update(_grads(t)) is True
        assert _bits(pa) == _bits(pb), f"{name}: step {t}"
    assert a.step_count == b.step_count == 5


@pytest.mark.parametrize("name", list(STEP_ROWS))
def test_step_without_grads_uses_the_registered_ones(name):
    a, b = STEP_ROWS[name](), STEP_ROWS[name]()
    pa, pb = _params(), _params()
    g = _grads(0)
    a.register_trainable_weights(pa, grads=g)
    b.register_trainable_weights(pb)
    for t in range(3):
        assert a.step() is True
        b.update(g)
    assert _bits(pa) == _bits(pb)


STEP_BAD = {
    "before registration": (lambda o: o.step(_grads(0)), flatopt.InvalidStateError,
                            "before register_trainable_weights"),
    "no grads registered": (lambda o: (o.register_trainable_weights(_params()), o.step()),
                            flatopt.InvalidStateError, "without gradients"),
    "missing key": (lambda o: (o.register_trainable_weights(_params()), o.step({"w": 1})),
                    flatopt.StructureError, "missing keys 'b'"),
}


@pytest.mark.parametrize("desc", list(STEP_BAD))
def test_step_refuses_what_update_refuses(desc):
    call, exc, text = STEP_BAD[desc]
    with pytest.raises(exc, match=text):
        call(flatopt.Adam(lr=1e-3))


def test_step_skips_a_nonfinite_gradient():
    opt, p = flatopt.Adam(lr=1e-2), _params()
    opt.register_trainable_weights(p)
    before = _bits(p)
    g = _grads(0)
    g["b"][1] = np.nan
    assert opt.step(g) is False
    assert _bits(p) == before and opt.skipped_count == 1 and opt.step_count.value == 0


# ---------------------------------------------------------------------------------------------
# Hyperparameter attributes, as braintools names them.

ATTR_ROWS = [
    # (label, make, attribute, expected)
    ("SGD lr", lambda: flatopt.SGD(lr=0.1), "lr", 0.1),
    ("SGD base_lr", lambda: flatopt.SGD(lr=0.1), "base_lr", 0.1),
    ("SGD momentum default", lambda: flatopt.SGD(), "momentum", 0.0),
    ("SGD momentum", lambda: flatopt.SGD(momentum=0.5), "momentum", 0.5),
    ("SGD nesterov", lambda: flatopt.SGD(momentum=0.5, nesterov=True), "nesterov", True),
    ("SGD weight_decay", lambda: flatopt.SGD(weight_decay=0.01), "weight_decay", 0.01),
    ("SGD grad_clip_norm", lambda: flatopt.SGD(grad_clip_norm=1), "grad_clip_norm", 1.0),
    ("SGD grad_clip_norm default", lambda: flatopt.SGD(), "grad_clip_norm", None),
    ("SGD grad_clip_value", lambda: flatopt.SGD(grad_clip_value=0.5), "grad_clip_value", 0.5),
    ("SGD grad_clip_value default", lambda: flatopt.SGD(), "grad_clip_value", None),
    ("Momentum momentum", lambda: flatopt.Momentum(), "momentum", 0.9),
    ("Momentum nesterov", lambda: flatopt.Momentum(), "nesterov", False),
    ("MomentumNesterov momentum", lambda: flatopt.MomentumNesterov(momentum=0.8), "momentum",
     0.8),
    ("MomentumNesterov nesterov", lambda: flatopt.MomentumNesterov(), "nesterov", True),
    ("Adam betas", lambda: flatopt.Adam(betas=(0.8, 0.99)), "betas", (0.8, 0.99)),
    ("Adam betas default", lambda: flatopt.Adam(), "betas", (0.9, 0.999)),
    ("Adam eps", lambda: flatopt.Adam(eps=1e-6), "eps", 1e-6),
    ("Adam amsgrad", lambda: flatopt.Adam(amsgrad=True), "amsgrad", True),
    ("Adam weight_decay", lambda: flatopt.Adam(weight_decay=0.1), "weight_decay", 0.1),
    ("AdamW weight_decay (decoupled)", lambda: flatopt.AdamW(), "weight_decay", 0.01),
    ("AdamW amsgrad", lambda: flatopt.AdamW(), "amsgrad", False),
    ("AdamW betas", lambda: flatopt.AdamW(betas=[0.5, 0.6]), "betas", (0.5, 0.6)),
    ("RAdam eps", lambda: flatopt.RAdam(eps=1e-7), "eps", 1e-7),
    ("Lookahead weight_decay", lambda: flatopt.Lookahead(flatopt.sgd(0.1), weight_decay=0.2),
     "weight_decay", 0.2),
    ("Lookahead base_lr", lambda: flatopt.Lookahead(flatopt.sgd(0.1)), "base_lr", 0.1),
    ("schedule base_lr", lambda: flatopt.Adam(lr=flatopt.StepLR(0.25)), "base_lr", 0.25),
    ("current_lr exact", lambda: flatopt.Adam(lr=0.001), "current_lr", 0.001),
    ("lr_scheduler of a constant lr", lambda: flatopt.Adam(lr=0.001), "lr_scheduler", None),
    ("current_lr of the base", lambda: flatopt.Lookahead(flatopt.adam(0.003)), "current_lr",
     0.003),
    # The family (issue 14): braintools' attribute names, non-default values.
    ("Adagrad eps", lambda: flatopt.Adagrad(eps=1e-6), "eps", 1e-6),
    ("Adagrad initial_accumulator_value", lambda: flatopt.Adagrad(initial_accumulator_value=0.1),
     "initial_accumulator_value", 0.1),
    ("Adagrad lr_decay", lambda: flatopt.Adagrad(lr_decay=0.01), "lr_decay", 0.01),
    ("RMSprop alpha", lambda: flatopt.RMSprop(alpha=0.9), "alpha", 0.9),
    ("RMSprop centered", lambda: flatopt.RMSprop(centered=True), "centered", True),
    ("RMSprop momentum", lambda: flatopt.RMSprop(momentum=0.5), "momentum", 0.5),
    ("RMSprop eps", lambda: flatopt.RMSprop(eps=1e-6), "eps", 1e-6),
    ("Adamax betas", lambda: flatopt.Adamax(betas=(0.8, 0.99)), "betas", (0.8, 0.99)),
    ("Adamax eps", lambda: flatopt.Adamax(eps=1e-6), "eps", 1e-6),
    ("Nadam betas", lambda: flatopt.Nadam(betas=(0.8, 0.99)), "betas", (0.8, 0.99)),
    ("Nadam momentum_decay", lambda: flatopt.Nadam(momentum_decay=0.01), "momentum_decay",
     0.01),
    ("Lion betas", lambda: flatopt.Lion(betas=(0.95, 0.98)), "betas", (0.95, 0.98)),
    ("Lion weight_decay (decoupled)", lambda: flatopt.Lion(weight_decay=0.1), "weight_decay",
     0.1),
    ("AdaBelief betas", lambda: flatopt.AdaBelief(betas=(0.8, 0.99)), "betas", (0.8, 0.99)),
    ("AdaBelief eps", lambda: flatopt.AdaBelief(eps=1e-12), "eps", 1e-12),
    ("Yogi betas", lambda: flatopt.Yogi(betas=(0.8, 0.99)), "betas", (0.8, 0.99)),
    ("Yogi eps", lambda: flatopt.Yogi(eps=1e-4), "eps", 1e-4),
    ("Adadelta rho", lambda: flatopt.Adadelta(rho=0.95), "rho", 0.95),
    ("Adadelta eps", lambda: flatopt.Adadelta(eps=1e-5), "eps", 1e-5),
    ("Rprop etas", lambda: flatopt.Rprop(etas=(0.4, 1.5)), "etas", (0.4, 1.5)),
    ("Rprop step_sizes", lambda: flatopt.Rprop(step_sizes=(1e-5, 10.0)), "step_sizes",
     (1e-5, 10.0)),
]

# Every braintools hyperparameter attribute of the family classes, by class.
FAMILY_ATTRS = {
    "Adagrad": ["eps", "initial_accumulator_value", "lr_decay"],
    "RMSprop": ["alpha", "centered", "eps", "momentum"],
    "Adamax": ["betas", "eps"],
    "Nadam": ["betas", "eps", "momentum_decay"],
    "Lion": ["betas", "weight_decay"],
    "AdaBelief": ["betas", "eps"],
    "Yogi": ["betas", "eps"],
    "Adadelta": ["eps", "rho"],
    "Rprop": ["etas", "step_sizes"],
}
FAMILY_ATTR_ROWS = [(c, a) for c, attrs in FAMILY_ATTRS.items() for a in attrs]


@pytest.mark.parametrize("cls,attr", FAMILY_ATTR_ROWS, ids=[f"{c}.{a}" for c, a in FAMILY_ATTR_ROWS])
def test_family_attribute_defaults_match_braintools(cls, attr):
    braintools = pytest.importorskip("braintools", reason="braintools not installed")
    ours = getattr(getattr(flatopt, cls)(), attr)
    theirs = getattr(getattr(braintools.optim, cls)(), attr)
    assert ours == theirs, f"{cls}.{attr}: {ours!r} != braintools' {theirs!r}"


@pytest.mark.parametrize("cls,attr", FAMILY_ATTR_ROWS, ids=[f"{c}.{a}" for c, a in FAMILY_ATTR_ROWS])
def test_family_attributes_are_read_only(cls, attr):
    opt = getattr(flatopt, cls)()
    before = getattr(opt, attr)
    with pytest.raises(AttributeError):
        setattr(opt, attr, 0.5)
    assert getattr(opt, attr) == before


@pytest.mark.parametrize("label,make,attr,expected", ATTR_ROWS, ids=[r[0] for r in ATTR_ROWS])
def test_attribute(label, make, attr, expected):
    got = getattr(make(), attr)
    assert got == expected and type(got) is type(expected), f"{label}: {got!r}"


READ_ONLY = ["lr", "base_lr", "momentum", "nesterov", "weight_decay", "grad_clip_norm",
             "grad_clip_value"]


@pytest.mark.parametrize("attr", READ_ONLY + ["betas", "eps", "amsgrad"])
def test_hyperparameter_attributes_are_read_only(attr):
    opt = flatopt.Adam() if attr in ("betas", "eps", "amsgrad") else flatopt.SGD()
    before = getattr(opt, attr)
    with pytest.raises(AttributeError, match=attr):
        setattr(opt, attr, 0.5)
    assert getattr(opt, attr) == before


def test_current_lr_of_a_schedule_is_its_exact_value():
    # The schedule's f64 value (as braintools and PyTorch report it); updates apply f32 of it.
    opt = flatopt.Adam(lr=flatopt.ExponentialLR(0.1, gamma=0.3))
    assert opt.current_lr == 0.1 and opt.lr_scheduler is opt.schedule is opt.lr
    opt.schedule.step()
    assert opt.current_lr == 0.1 * 0.3 and opt.get_last_lr() == [opt.current_lr]
    assert opt.current_lr != float(f32(0.1 * 0.3))  # the test would not see f32 rounding else
    assert opt.schedule.current_lr == opt.current_lr == opt.schedule.get_last_lr()[0]


def test_get_last_lr_of_a_constant_learning_rate():
    assert flatopt.SGD(lr=0.3).get_last_lr() == [0.3]


@pytest.mark.parametrize("lr,value,want_next", [
    (0.5, 0.1, 0.1),  # constant: the exact value, from the next update on
    (0.5, 0.0, 0.0),
    (flatopt.StepLR(0.5, step_size=10), 0.3, 0.3),  # scales the schedule: 0.5 * (0.3 / 0.5)
], ids=["constant", "zero", "schedule"])
def test_current_lr_assigned_sets_group_0_from_the_next_update(lr, value, want_next):
    opt, p = flatopt.SGD(lr=lr), {"w": np.ones(2, f32)}
    opt.register_trainable_weights(p)
    opt.current_lr = value
    assert opt.current_lr == want_next and opt.param_groups[0]["lr"] == value
    opt.step({"w": np.ones(2, f32)})
    assert np.array_equal(p["w"], np.full(2, f32(1) - f32(value), f32))


@pytest.mark.parametrize("value,error,match", [
    (-0.1, flatopt.InvalidArgumentError, r"invalid current_lr = -0\.1: the learning rate"),
    (float("nan"), flatopt.InvalidArgumentError, "invalid current_lr = nan"),
    (float("inf"), flatopt.InvalidArgumentError, "invalid current_lr = inf"),
    (1e39, flatopt.InvalidArgumentError, "lr"),
    ("0.1", flatopt.ArgumentTypeError, "current_lr"),
    (flatopt.StepLR(0.1), flatopt.ArgumentTypeError, "current_lr = .*must be a number"),
], ids=["negative", "nan", "inf", "past f32", "string", "schedule"])
def test_current_lr_refused_and_nothing_changes(value, error, match):
    opt, p = flatopt.SGD(lr=0.5), {"w": np.ones(2, f32)}
    opt.register_trainable_weights(p)
    with pytest.raises(error, match=match):
        opt.current_lr = value
    opt.step({"w": np.ones(2, f32)})
    assert opt.current_lr == 0.5 and np.array_equal(p["w"], np.full(2, 0.5, f32))


def test_step_count_reads_as_value():
    opt = flatopt.SGD(lr=0.1)
    opt.register_trainable_weights({"w": np.ones(2, f32)})
    opt.step({"w": np.ones(2, f32)})
    assert opt.step_count == 1 and opt.step_count.value == 1 and type(opt.step_count.value) is int


def test_state_dict_reports_the_exact_constant_learning_rate():
    opt = flatopt.Adam(lr=1e-3)
    opt.register_trainable_weights(_params())
    assert opt.state_dict()["current_lr"] == 1e-3


@pytest.mark.parametrize("lr,want_lr,want_base", [
    (1e-3, 1e-3, 1e-3),
    (flatopt.ExponentialLR(0.5, gamma=0.5), float(f32(0.25)), 0.5),
])
def test_braintools_state_dict_keys_and_opt_state(lr, want_lr, want_base):
    opt = flatopt.Adam(lr=lr)
    assert opt.opt_state is None
    opt.register_trainable_weights(_params())
    if opt.schedule is not None:
        opt.schedule.step()
    opt.step(_grads(0))
    st = opt.state_dict()
    assert (st["lr"], st["base_lr"]) == (want_lr, want_base) and st["lr"] == st["current_lr"]
    assert st["opt_state"] == st["checkpoint"] == opt.opt_state
    twin = flatopt.Adam(lr=copy.deepcopy(lr) if opt.schedule is None else
                        flatopt.ExponentialLR(0.5, gamma=0.5))
    twin.register_trainable_weights(_params())
    twin.load_state_dict(st)
    assert twin.opt_state == opt.opt_state and twin.step_count.value == 1


# ---------------------------------------------------------------------------------------------
# Momentum and MomentumNesterov: braintools' (optax trace) update, the same as SGD's.

def _reference_momentum(nesterov, lr, mu, steps):
    """optax.trace(decay=mu, nesterov) then scale by -lr, in float32 as the kernels compute."""
    p, v = _params(), None
    for t in range(steps):
        g = _grads(t)
        v = {k: g[k] if v is None else f32(mu) * v[k] + g[k] for k in g}
        upd = {k: g[k] + f32(mu) * v[k] for k in g} if nesterov else v
        p = {k: p[k] - f32(lr) * upd[k] for k in p}
    return p


MOMENTUM_ROWS = {
    "Momentum": (flatopt.Momentum, False, lambda lr, mu: flatopt.SGD(lr, momentum=mu)),
    "MomentumNesterov": (flatopt.MomentumNesterov, True,
                         lambda lr, mu: flatopt.SGD(lr, momentum=mu, nesterov=True)),
}


@pytest.mark.parametrize("name", list(MOMENTUM_ROWS))
def test_momentum_classes_follow_optax_trace(name):
    cls, nesterov, same_sgd = MOMENTUM_ROWS[name]
    opt, twin = cls(lr=0.05, momentum=0.8), same_sgd(0.05, 0.8)
    p, q = _params(), _params()
    opt.register_trainable_weights(p)
    twin.register_trainable_weights(q)
    for t in range(6):
        opt.step(_grads(t))
        twin.step(_grads(t))
    assert _bits(p) == _bits(q)
    ref = _reference_momentum(nesterov, 0.05, 0.8, 6)
    for k in p:
        np.testing.assert_allclose(p[k], ref[k], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", list(MOMENTUM_ROWS))
def test_momentum_classes_copy_and_pickle(name):
    opt = MOMENTUM_ROWS[name][0](lr=0.05, momentum=0.7, weight_decay=0.1)
    for dup in (copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))):
        assert type(dup) is type(opt)
        assert (dup.momentum, dup.nesterov, dup.weight_decay) == (0.7, opt.nesterov, 0.1)


# ---------------------------------------------------------------------------------------------
# Arguments braintools refuses, with messages naming them (and "learning rate"); the
# composite schedules' rows are added below, one test (test_refused, at the end) runs them all.

BAD = [
    ("lr negative", lambda: flatopt.Adam(lr=-1e-3), flatopt.InvalidArgumentError,
     "invalid lr = -0.001: the learning rate must be finite and >= 0"),
    ("lr nan", lambda: flatopt.SGD(lr=float("nan")), flatopt.InvalidArgumentError,
     "invalid lr = nan: the learning rate"),
    ("lr inf", lambda: flatopt.Momentum(lr=float("inf")), flatopt.InvalidArgumentError,
     "invalid lr = inf: the learning rate"),
    ("learning_rate negative", lambda: flatopt.sgd(-0.1), flatopt.InvalidArgumentError,
     "invalid learning_rate = -0.1: the learning rate"),
    ("Lookahead lr negative", lambda: flatopt.Lookahead(flatopt.sgd(0.1), lr=-1),
     flatopt.InvalidArgumentError, "invalid lr = -1: the learning rate"),
    ("lr a string", lambda: flatopt.MomentumNesterov(lr="0.1"), flatopt.ArgumentTypeError,
     "invalid lr = '0.1'"),
    ("grad_clip_norm 0", lambda: flatopt.SGD(grad_clip_norm=0), flatopt.InvalidArgumentError,
     "invalid grad_clip_norm = 0: must be > 0, or None"),
    ("grad_clip_norm 0.0", lambda: flatopt.Adam(grad_clip_norm=0.0),
     flatopt.InvalidArgumentError, "invalid grad_clip_norm = 0.0: must be > 0"),
    ("grad_clip_norm -1", lambda: flatopt.Adam(grad_clip_norm=-1),
     flatopt.InvalidArgumentError, "invalid grad_clip_norm = -1"),
    ("grad_clip_value 0", lambda: flatopt.Momentum(grad_clip_value=0),
     flatopt.InvalidArgumentError, "invalid grad_clip_value = 0: must be > 0"),
    ("Lookahead grad_clip_norm 0", lambda: flatopt.Lookahead(flatopt.sgd(0.1), grad_clip_norm=0),
     flatopt.InvalidArgumentError, "invalid grad_clip_norm = 0"),
    ("Momentum momentum 1", lambda: flatopt.Momentum(momentum=1.0),
     flatopt.InvalidArgumentError, "invalid momentum = 1"),
    ("Momentum momentum a string", lambda: flatopt.Momentum(momentum="0.9"),
     flatopt.ArgumentTypeError, "invalid momentum = '0.9'"),
    ("MomentumNesterov momentum None", lambda: flatopt.MomentumNesterov(momentum=None),
     flatopt.InvalidArgumentError, "momentum"),
    ("MomentumNesterov weight_decay -1", lambda: flatopt.MomentumNesterov(weight_decay=-1),
     flatopt.InvalidArgumentError, "invalid weight_decay = -1"),
    ("CyclicLR scale_mode", lambda: flatopt.CyclicLR(scale_mode="epochs"),
     flatopt.InvalidArgumentError, "invalid scale_mode = 'epochs': must be one of 'cycle', "
     "'iterations'"),
    ("CyclicLR scale_mode None", lambda: flatopt.CyclicLR(scale_mode=None),
     flatopt.InvalidArgumentError, "invalid scale_mode = None"),
]


# ---------------------------------------------------------------------------------------------
# Schedules: get_lr(), .value views, last_epoch assignment, T_cur / T_i, plateau state.

SCHEDULES = {
    "StepLR": lambda: flatopt.StepLR(0.1, step_size=3, gamma=0.5),
    "MultiStepLR": lambda: flatopt.MultiStepLR(0.1, milestones=[2, 5], gamma=0.1),
    "ExponentialLR": lambda: flatopt.ExponentialLR(0.1, gamma=0.9),
    "CosineAnnealingLR": lambda: flatopt.CosineAnnealingLR(0.1, T_max=7, eta_min=0.01),
    "CosineAnnealingWarmRestarts": lambda: flatopt.CosineAnnealingWarmRestarts(0.1, T_0=3,
                                                                               T_mult=2),
    "LinearLR": lambda: flatopt.LinearLR(0.1, total_iters=4),
    "OneCycleLR": lambda: flatopt.OneCycleLR(0.1, total_steps=12),
    "CyclicLR": lambda: flatopt.CyclicLR(0.01, 0.1, step_size_up=3),
}


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_get_lr_and_value_views(name):
    s = SCHEDULES[name]()
    for e in range(10):
        assert s.get_lr() == [s.current_lr] == s.current_lrs.value == s.get_last_lr()
        assert s.last_epoch == e and s.last_epoch.value == e and type(s.last_epoch.value) is int
        assert s.base_lrs == [s.base_lr]
        s.step()


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_last_epoch_assignment_moves_the_schedule(name):
    for n in (0, 1, 6, 11, 4, 0):  # forwards and backwards
        s, fresh = SCHEDULES[name](), SCHEDULES[name]()
        s.step()
        s.step()
        s.last_epoch = n
        for _ in range(n):
            fresh.step()
        assert s.last_epoch == n and s.current_lr == fresh.current_lr, f"{name}: {n}"
        s.last_epoch.value = n + 1  # braintools spelling
        fresh.step()
        assert s.last_epoch == n + 1 and s.current_lr == fresh.current_lr, f"{name}: {n} + 1"


@pytest.mark.parametrize("per_update", [False, True])
def test_last_epoch_assignment_of_a_bound_schedule(per_update):
    s = flatopt.StepLR(1.0, step_size=2, gamma=0.5, per_update=per_update)
    opt = flatopt.SGD(lr=s)
    opt.register_trainable_weights({"w": np.zeros(2, f32)})
    opt.step({"w": np.ones(2, f32)})
    s.last_epoch = 5
    assert s.last_epoch == 5 and opt.current_lr == 0.25
    opt.step({"w": np.ones(2, f32)})
    assert s.last_epoch == (6 if per_update else 5)


LAST_EPOCH_BAD = [
    ("negative", lambda s: setattr(s, "last_epoch", -1), flatopt.InvalidArgumentError,
     "invalid last_epoch = -1"),
    ("a string", lambda s: setattr(s, "last_epoch", "3"), flatopt.ArgumentTypeError,
     "invalid last_epoch = '3'"),
    ("2**64", lambda s: setattr(s, "last_epoch", 2**64), flatopt.InvalidArgumentError,
     "invalid last_epoch"),
    ("1.5 as .value", lambda s: setattr(s.last_epoch, "value", 1.5),
     flatopt.InvalidArgumentError, "invalid last_epoch = 1.5"),
]


@pytest.mark.parametrize("desc,call,exc,text", LAST_EPOCH_BAD, ids=[r[0] for r in LAST_EPOCH_BAD])
def test_last_epoch_assignment_refused(desc, call, exc, text):
    s = flatopt.StepLR(0.1, step_size=1, gamma=0.5)
    s.step()
    with pytest.raises(exc, match=text.replace("*", r"\*")):
        call(s)
    assert s.last_epoch == 1 and s.current_lr == 0.05


def test_last_epoch_of_a_per_update_schedule_not_below_its_updates():
    s = flatopt.StepLR(1.0, step_size=1, gamma=0.5, per_update=True)
    opt = flatopt.SGD(lr=s)
    opt.register_trainable_weights({"w": np.zeros(2, f32)})
    for _ in range(3):
        opt.step({"w": np.ones(2, f32)})
    with pytest.raises(flatopt.InvalidArgumentError, match="counts the 3 updates"):
        s.last_epoch = 2
    assert s.last_epoch == 3 and opt.current_lr == 0.125


def test_plateau_last_epoch_not_assignable():
    s = flatopt.ReduceLROnPlateau(0.1)
    s.step(1.0)
    with pytest.raises(flatopt.InvalidStateError, match="moves by the metrics"):
        s.last_epoch = 0
    assert s.last_epoch.value == 1


def _warm_restarts_by_steps(T_0, T_mult, n):
    """PyTorch's CosineAnnealingWarmRestarts.step() bookkeeping, one epoch at a time."""
    t_cur, t_i = 0, T_0
    for _ in range(n):
        t_cur += 1
        if t_cur >= t_i:
            t_cur -= t_i
            t_i *= T_mult
    return t_cur, t_i


WARM = [(3, 1), (3, 2), (1, 3), (5, 1), (2, 10)]


@pytest.mark.parametrize("T_0,T_mult", WARM)
def test_warm_restarts_T_cur_and_T_i(T_0, T_mult):
    s = flatopt.CosineAnnealingWarmRestarts(1.0, T_0=T_0, T_mult=T_mult)
    for n in range(40):
        want = _warm_restarts_by_steps(T_0, T_mult, n)
        assert (s.T_cur, s.T_i) == want and (s.T_cur.value, s.T_i.value) == want, n
        s.step()


def test_warm_restarts_T_i_at_the_last_epoch():
    # Cycles 1, 2, 4, ..., 2**63 end exactly at 2**64 - 1; the next length saturates.
    s = flatopt.CosineAnnealingWarmRestarts(1.0, T_0=1, T_mult=2, last_epoch=2**64 - 1)
    assert (s.T_cur, s.T_i) == (0, 2**64 - 1) and s.current_lr == 1.0
    s.last_epoch = 2**64 - 2
    assert (s.T_cur, s.T_i) == (2**63 - 1, 2**63)


# (label, schedule kwargs, metrics, [(best, num_bad_epochs, cooldown_counter) after each])
PLATEAU = [
    ("min, patience 1, cooldown 2", dict(patience=1, cooldown=2), [1, 1, 1, 1, 1, 1],
     [(1, 0, 0), (1, 1, 0), (1, 0, 2), (1, 0, 1), (1, 0, 0), (1, 1, 0)]),
    ("min, improving", dict(patience=0), [3, 2, 1],
     [(3, 0, 0), (2, 0, 0), (1, 0, 0)]),
    ("max, abs threshold", dict(mode="max", threshold=0.5, threshold_mode="abs", patience=2),
     [1, 1.4, 1.6, 1.7, 0],
     [(1, 0, 0), (1, 1, 0), (1.6, 0, 0), (1.6, 1, 0), (1.6, 2, 0)]),
    ("min, rel threshold", dict(threshold=0.1, patience=5), [10, 9.5, 8.9],
     [(10, 0, 0), (10, 1, 0), (8.9, 0, 0)]),
]


@pytest.mark.parametrize("label,kw,metrics,want", PLATEAU, ids=[r[0] for r in PLATEAU])
def test_plateau_state(label, kw, metrics, want):
    s = flatopt.ReduceLROnPlateau(1.0, **kw)
    start = math.inf if kw.get("mode", "min") == "min" else -math.inf
    assert (s.best, s.num_bad_epochs, s.cooldown_counter) == (start, 0, 0)
    for m, w in zip(metrics, want):
        s.step(m)
        got = (s.best.value, s.num_bad_epochs.value, s.cooldown_counter.value)
        assert got == w, f"{label}: after {m}: {got}"


def test_plateau_state_agrees_with_the_reductions_the_library_made():
    s = flatopt.ReduceLROnPlateau(1.0, patience=2, cooldown=1, factor=0.5)
    reductions = 0
    for t in range(30):
        lr = s.current_lr
        s.step(5.0 if t % 7 else 1.0 - t / 100)
        if s.current_lr < lr:
            reductions += 1
            assert s.cooldown_counter == 1 and s.num_bad_epochs == 0, t
    assert reductions > 3 and s.current_lr == float(f32(0.5**reductions))


# ---------------------------------------------------------------------------------------------
# ChainedScheduler and SequentialLR.

def _lrs(s, n, by_epoch=False):
    out = []
    for e in range(n):
        out.append(s.get_lr()[0])
        s.step(e + 1) if by_epoch else s.step()
    return out


def _alone(make, n):
    return [float(v) for v in _lrs(make(), n)]


def test_chained_scheduler_multiplies_the_factors():
    warm = lambda: flatopt.LinearLR(1.0, start_factor=0.1, end_factor=1.0, total_iters=5)
    decay = lambda: flatopt.StepLR(1.0, step_size=3, gamma=0.5)
    chained = _lrs(flatopt.ChainedScheduler([warm(), decay()]), 12)
    want = [a * b for a, b in zip(_alone(warm, 12), _alone(decay, 12))]
    assert chained == want


def test_chained_scheduler_uses_the_first_base_lr():
    a = flatopt.ConstantLR(0.1, factor=0.5, total_iters=3)
    b = flatopt.ExponentialLR(0.2, gamma=0.9)
    c = flatopt.ChainedScheduler([a, b])
    assert c.base_lr == 0.1 and c.base_lrs == [0.1]
    got = _lrs(c, 6)
    ea = _alone(lambda: flatopt.ConstantLR(0.1, factor=0.5, total_iters=3), 6)
    eb = _alone(lambda: flatopt.ExponentialLR(0.2, gamma=0.9), 6)
    assert got == [0.1 * (x / 0.1) * (y / 0.2) for x, y in zip(ea, eb)]


def test_chained_scheduler_zero_base_lr_factor_is_zero():
    c = flatopt.ChainedScheduler([flatopt.StepLR(1.0), flatopt.StepLR(0.0)])
    assert c.get_lr() == [0.0]


def test_sequential_lr_restarts_each_schedule_at_its_milestone():
    warm = lambda: flatopt.LinearLR(1.0, start_factor=0.1, end_factor=1.0, total_iters=5)
    decay = lambda: flatopt.ExponentialLR(1.0, gamma=0.9)
    flat = lambda: flatopt.ConstantLR(0.3, factor=1.0, total_iters=0)
    s = flatopt.SequentialLR([warm(), decay(), flat()], milestones=[5, 9])
    idx = []
    got = []
    for e in range(14):
        got.append(s.get_lr()[0])
        idx.append(s.current_scheduler_idx)
        s.step()
    want = _alone(warm, 5) + _alone(decay, 4) + _alone(flat, 5)
    assert got == want
    assert idx == [0] * 5 + [1] * 4 + [2] * 5


def test_sequential_lr_step_to_epoch_and_last_epoch():
    s = flatopt.SequentialLR([flatopt.StepLR(1.0, step_size=1, gamma=0.5),
                              flatopt.ExponentialLR(1.0, gamma=0.1)], milestones=[3])
    s.step(epoch=5)
    assert s.last_epoch == 5 and s.last_epoch.value == 5 and s.current_scheduler_idx == 1
    assert s.get_lr()[0] == 0.1 ** 2
    s.last_epoch = 2
    assert s.current_scheduler_idx == 0 and s.current_lr == 0.25


def test_sequential_lr_initial_last_epoch():
    s = flatopt.SequentialLR([flatopt.StepLR(1.0, step_size=1, gamma=0.5),
                              flatopt.ExponentialLR(1.0, gamma=0.5)], milestones=[2],
                             last_epoch=4)
    assert s.last_epoch == 4 and s.current_lr == 0.25


COMPOSITES = {
    "ChainedScheduler": lambda: flatopt.ChainedScheduler(
        [flatopt.LinearLR(1.0, 0.1, 1.0, 5), flatopt.StepLR(1.0, 10, 0.5)]),
    "SequentialLR": lambda: flatopt.SequentialLR(
        [flatopt.LinearLR(1.0, 0.1, 1.0, 5), flatopt.ExponentialLR(1.0, 0.9)], [5]),
}


@pytest.mark.parametrize("name", list(COMPOSITES))
def test_composite_state_dict_round_trip(name):
    a, b = COMPOSITES[name](), COMPOSITES[name]()
    for _ in range(8):
        a.step()
    b.load_state_dict(a.state_dict())
    assert b.last_epoch == 8 and b.get_lr() == a.get_lr()
    a.step()
    b.step()
    assert b.get_lr() == a.get_lr()


@pytest.mark.parametrize("name", list(COMPOSITES))
def test_composite_copies(name):
    a = COMPOSITES[name]()
    for _ in range(7):
        a.step()
    for dup in (copy.deepcopy(a), pickle.loads(pickle.dumps(a))):
        assert dup.last_epoch == 7 and dup.get_lr() == a.get_lr()
        dup.step()
        assert a.last_epoch == 7


@pytest.mark.parametrize("name", list(COMPOSITES))
def test_composite_drives_the_groups_of_one_optimizer(name):
    sched = COMPOSITES[name]()
    ref = COMPOSITES[name]()
    opt = flatopt.SGD(lr=sched)
    p = [np.ones(1, f32), np.ones(1, f32)]
    opt.register_trainable_weights([{"params": [p[0]]}, {"params": [p[1]],
                                                         "lr": sched.base_lr / 4}])
    for _ in range(6):
        want = ref.get_lr()[0]
        assert opt.current_lr == want and opt.param_groups[0]["lr"] == want
        assert opt.get_last_lr() == [want, sched.base_lr / 4 * (want / sched.base_lr)]
        before = [x.copy() for x in p]
        opt.update([[np.ones(1, f32)], [np.ones(1, f32)]])
        assert p[0][0] == before[0][0] - f32(want)
        sched.step()
        ref.step()
    with pytest.raises(flatopt.InvalidArgumentError, match="already drives another optimizer"):
        flatopt.SGD(lr=sched)
    copied = pickle.loads(pickle.dumps(opt))
    assert copied.get_last_lr() == opt.get_last_lr()
    copied.lr.step()
    assert opt.lr.last_epoch == 6 and copied.lr.last_epoch == 7


_ALIVE = []


def _bound_step():
    s = flatopt.StepLR(0.1)
    _ALIVE.append(flatopt.SGD(lr=s))  # kept alive: the schedule stays bound
    return s


COMPOSITE_BAD = [
    ("Chained not a list", lambda: flatopt.ChainedScheduler(flatopt.StepLR(0.1)),
     flatopt.ArgumentTypeError, "invalid schedulers"),
    ("Chained empty", lambda: flatopt.ChainedScheduler([]), flatopt.InvalidArgumentError,
     "invalid schedulers = []"),
    ("Chained a float", lambda: flatopt.ChainedScheduler([flatopt.StepLR(0.1), 0.1]),
     flatopt.ArgumentTypeError, "invalid schedulers[1] = 0.1"),
    ("Chained plateau", lambda: flatopt.ChainedScheduler([flatopt.ReduceLROnPlateau(0.1)]),
     flatopt.UnsupportedError, "a ReduceLROnPlateau cannot be part of a ChainedScheduler"),
    ("Chained nested", lambda: flatopt.ChainedScheduler([COMPOSITES["ChainedScheduler"]()]),
     flatopt.UnsupportedError, "invalid schedulers[0]"),
    ("Chained twice the same", lambda: (lambda s: flatopt.ChainedScheduler([s, s]))(
        flatopt.StepLR(0.1)), flatopt.InvalidArgumentError, "listed twice"),
    ("Chained bound", lambda: flatopt.ChainedScheduler([_bound_step()]),
     flatopt.InvalidArgumentError, "already drives an optimizer"),
    ("Sequential too few milestones", lambda: flatopt.SequentialLR(
        [flatopt.StepLR(0.1), flatopt.StepLR(0.1)], milestones=[]),
     flatopt.InvalidArgumentError, "2 schedulers need 1 milestones"),
    ("Sequential too many milestones", lambda: flatopt.SequentialLR(
        [flatopt.StepLR(0.1)], milestones=[3]),
     flatopt.InvalidArgumentError, "1 schedulers need 0 milestones"),
    ("Sequential milestones not increasing", lambda: flatopt.SequentialLR(
        [flatopt.StepLR(0.1), flatopt.StepLR(0.1), flatopt.StepLR(0.1)], milestones=[5, 5]),
     flatopt.InvalidArgumentError, "must be increasing"),
    ("Sequential milestone negative", lambda: flatopt.SequentialLR(
        [flatopt.StepLR(0.1), flatopt.StepLR(0.1)], milestones=[-1]),
     flatopt.InvalidArgumentError, "invalid milestones[0] = -1"),
    ("Sequential last_epoch a string", lambda: flatopt.SequentialLR(
        [flatopt.StepLR(0.1)], milestones=[], last_epoch="2"),
     flatopt.ArgumentTypeError, "invalid last_epoch = '2'"),
]

BAD += COMPOSITE_BAD


COMPOSITE_STATE_BAD = [
    ("not a dict", lambda st: [1], "must be a dict"),
    ("no last_epoch", lambda st: {k: v for k, v in st.items() if k != "last_epoch"},
     "no 'last_epoch'"),
    ("one schedule state", lambda st: {**st, "schedulers": st["schedulers"][:1]},
     "must be a list of 2 schedule states"),
    ("negative last_epoch", lambda st: {**st, "last_epoch": -3}, "invalid last_epoch = -3"),
    ("a sub-state of another type", lambda st: {
        **st, "schedulers": [st["schedulers"][1], st["schedulers"][1]]},
     "schedulers[0]: schedule state of a"),
]


@pytest.mark.parametrize("name", list(COMPOSITES))
@pytest.mark.parametrize("desc,mutate,text", COMPOSITE_STATE_BAD,
                         ids=[r[0] for r in COMPOSITE_STATE_BAD])
def test_composite_bad_state_changes_nothing(name, desc, mutate, text):
    a, b = COMPOSITES[name](), COMPOSITES[name]()
    for _ in range(6):
        a.step()
    b.step()
    before = (b.last_epoch, b.get_lr(), [int(s.last_epoch) for s in b.schedulers])
    with pytest.raises(flatopt.CheckpointError, match=text.replace("[", r"\[")):
        b.load_state_dict(mutate(a.state_dict()))
    assert (b.last_epoch, b.get_lr(), [int(s.last_epoch) for s in b.schedulers]) == before


def test_sequential_state_of_other_milestones_refused():
    a = COMPOSITES["SequentialLR"]()
    b = flatopt.SequentialLR([flatopt.LinearLR(1.0, 0.1, 1.0, 5),
                              flatopt.ExponentialLR(1.0, 0.9)], [6])
    with pytest.raises(flatopt.CheckpointError, match="milestones"):
        b.load_state_dict(a.state_dict())


@pytest.mark.parametrize("desc,make,exc,text", BAD, ids=[r[0] for r in BAD])
def test_refused(desc, make, exc, text):
    with pytest.raises(exc) as info:
        make()
    assert text in str(info.value), f"{desc}: {info.value}"
