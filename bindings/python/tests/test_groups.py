"""Parameter groups in Python (issue 13): PyTorch-style group dicts in
``register_trainable_weights`` and ``add_param_group``, live ``param_groups``, the gradients
keyed as the parameters, checkpoints and copies; the PyTorch AdamW recipe (decay on weights,
none on biases and norm weights, two learning rates, OneCycleLR) against ``torch.optim.AdamW``
when torch is installed (the extras run of ``make test-python``)."""

import copy
import pickle

import numpy as np
import pytest

import flatopt

from conftest import grad_stream, needs, needs_checkpoints

f32 = np.float32
HAS_GROUPS = flatopt._lib.optimizer_add_group is not None
pytestmark = pytest.mark.skipif(not HAS_GROUPS, reason="the library has no parameter groups")


def _arrays(shapes, seed):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(f32) for s in shapes]


# ---------------------------------------------------------------------------------------------
# Each group steps bit for bit as a separate optimizer with the group's hyperparameters (no
# clipping: nothing global couples them).

SHAPES = [(5,), (3, 4), (7,), (2,)]
ORACLE = [
    # (id, optimizer factory, group options of groups 0 and 1, factory of the group-1 optimizer)
    ("sgd two lrs", lambda: flatopt.SGD(lr=0.1, momentum=0.9), {}, {"lr": 0.03},
     lambda: flatopt.SGD(lr=0.03, momentum=0.9)),
    ("sgd momentum nesterov", lambda: flatopt.SGD(lr=0.1, momentum=0.9), {},
     {"momentum": 0.5, "nesterov": True, "weight_decay": 0.01},
     lambda: flatopt.SGD(lr=0.1, momentum=0.5, nesterov=True, weight_decay=0.01)),
    ("adam betas eps", lambda: flatopt.Adam(lr=1e-2), {"lr": 2e-2},
     {"betas": (0.8, 0.99), "eps": 1e-6, "amsgrad": True},
     lambda: flatopt.Adam(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, amsgrad=True)),
    ("adamw no decay", lambda: flatopt.AdamW(lr=1e-2, weight_decay=0.1), {},
     {"weight_decay": 0.0, "lr": 3e-3, "amsgrad": False},
     lambda: flatopt.AdamW(lr=3e-3, weight_decay=0.0)),
    ("adamw group 0 with betas", lambda: flatopt.AdamW(lr=1e-2, weight_decay=0.1),
     {"betas": (0.9, 0.95)}, {"b1": 0.5, "weight_decay": 0.2},
     lambda: flatopt.AdamW(lr=1e-2, betas=(0.5, 0.999), weight_decay=0.2)),
    ("radam", lambda: flatopt.RAdam(lr=1e-2), {}, {"betas": (0.5, 0.9), "weight_decay": 0.1},
     lambda: flatopt.RAdam(lr=1e-2, betas=(0.5, 0.9), weight_decay=0.1)),
    ("lookahead sgd", lambda: flatopt.Lookahead(flatopt.sgd(0.1, momentum=0.9), 3, 0.5), {},
     {"lr": 0.05, "momentum": 0.8},
     lambda: flatopt.Lookahead(flatopt.sgd(0.05, momentum=0.8), 3, 0.5)),
    ("rmsprop", lambda: flatopt.Lookahead(flatopt.rmsprop(0.01), 5, 0.5), {},
     {"alpha": 0.99, "centered": True},
     lambda: flatopt.Lookahead(flatopt.rmsprop(0.01, alpha=0.99, centered=True), 5, 0.5)),
    # The later rules' own options (their fields are not Adam's); the rule's other
    # hyperparameters are the optimizer's, not the library's defaults.
    ("adamax", lambda: _rule(flatopt.adamax(0.01, eps_outside_max=False)), {},
     {"betas": (0.8, 0.99)},
     lambda: _rule(flatopt.adamax(0.01, b1=0.8, b2=0.99, eps_outside_max=False))),
    ("nadam", lambda: flatopt.Nadam(lr=0.01), {}, {"momentum_decay": 0.01, "eps": 1e-6},
     lambda: flatopt.Nadam(lr=0.01, momentum_decay=0.01, eps=1e-6)),
    ("lion", lambda: flatopt.Lion(lr=1e-3), {}, {"betas": (0.8, 0.9), "lr": 3e-4},
     lambda: flatopt.Lion(lr=3e-4, betas=(0.8, 0.9))),
    ("adabelief", lambda: _rule(flatopt.adabelief(0.01, eps_root=1e-10)), {}, {"b2": 0.99},
     lambda: _rule(flatopt.adabelief(0.01, b2=0.99, eps_root=1e-10))),
    ("yogi", lambda: _rule(flatopt.yogi(0.01, initial_accumulator_value=1e-3)), {},
     {"eps": 1e-4},
     lambda: _rule(flatopt.yogi(0.01, eps=1e-4, initial_accumulator_value=1e-3))),
    ("adadelta", lambda: flatopt.Adadelta(lr=1.0), {}, {"rho": 0.5, "eps": 1e-4},
     lambda: flatopt.Adadelta(lr=1.0, rho=0.5, eps=1e-4)),
    ("rprop", lambda: flatopt.Rprop(lr=0.01), {},
     {"eta_plus": 1.5, "min_step_size": 1e-4, "max_step_size": 1.0},
     lambda: flatopt.Rprop(lr=0.01, etas=(0.5, 1.5), step_sizes=(1e-4, 1.0))),
]


def _rule(base):
    return flatopt.Optimizer(base, None, lookahead=False)


@pytest.mark.parametrize("row", ORACLE, ids=[r[0] for r in ORACLE])
@pytest.mark.parametrize("form", ["dict", "list"])
def test_each_group_steps_as_a_separate_optimizer(row, form):
    _, make, opts0, opts1, make1 = row
    a, b = _arrays(SHAPES[:2], 1), _arrays(SHAPES[2:], 2)
    if form == "dict":
        p0, p1 = {"w": a[0].copy(), "x": a[1].copy()}, {"b": b[0].copy(), "n": b[1].copy()}
    else:
        p0, p1 = [a[0].copy(), a[1].copy()], [b[0].copy(), b[1].copy()]
    opt = make()
    opt.register_trainable_weights([{"params": p0, **opts0}, {"params": p1, **opts1}])
    # group 0 alone: its options through the group dict of a one-group registration
    q0 = [a[0].copy(), a[1].copy()]
    ref0 = make()
    ref0.register_trainable_weights([{"params": q0, **opts0}])
    q1 = [b[0].copy(), b[1].copy()]
    ref1 = make1()
    ref1.register_trainable_weights(q1)
    grads = grad_stream(SHAPES, 7)
    for t in range(12):
        g = grads(t)
        if form == "dict":
            opt.update({"w": g[0], "x": g[1], "b": g[2], "n": g[3]})
        else:
            opt.update([g[:2], g[2:]])
        ref0.update([g[:2]])
        ref1.update(g[2:])
    got0 = list(p0.values()) if form == "dict" else p0
    got1 = list(p1.values()) if form == "dict" else p1
    for x, y in zip(got0 + got1, q0 + q1):
        assert np.array_equal(x, y)


def test_clipping_by_global_norm_sees_every_group():
    p = [np.ones(4, f32), np.ones(4, f32)]
    opt = flatopt.SGD(lr=1.0, grad_clip_norm=1.0)
    opt.register_trainable_weights([{"params": [p[0]]}, {"params": [p[1]], "lr": 0.5}])
    opt.update([[np.full(4, 3.0, f32)], [np.full(4, 4.0, f32)]])  # norm 10: scale 0.1
    assert np.allclose(p[0], 1 - 0.3) and np.allclose(p[1], 1 - 0.5 * 0.4)


# ---------------------------------------------------------------------------------------------
# Structures: names, gradient forms.

STRUCTURES = [
    # (id, groups' params, param_names, a gradient form accepted)
    ("dicts merge", [{"w": (2,)}, {"b": (1,)}], ["w", "b"], "dict"),
    ("dicts merge, list grads", [{"w": (2,)}, {"b": (1,)}], ["w", "b"], "list"),
    ("shared key: list", [{"w": (2,)}, {"w": (1,)}], [(0, "w"), (1, "w")], "list"),
    ("lists", [[(2,), (3,)], [(1,)]], [(0, 0), (0, 1), (1, 0)], "list"),
    ("nested", [{"enc": {"w": (2,)}}, {"dec": [(1,)]}], [("enc", "w"), ("dec", 0)], "dict"),
    ("mixed", [{"w": (2,)}, [(1,)]], [(0, "w"), (1, 0)], "list"),
]


def _build(spec, fill):
    if isinstance(spec, tuple):
        return np.full(spec, fill, f32)
    if isinstance(spec, dict):
        return {k: _build(v, fill) for k, v in spec.items()}
    return [_build(v, fill) for v in spec]


@pytest.mark.parametrize("row", STRUCTURES, ids=[r[0] for r in STRUCTURES])
def test_names_and_gradient_forms(row):
    _, specs, names, form = row
    params = [_build(s, 1.0) for s in specs]
    opt = flatopt.SGD(lr=0.5)
    opt.register_trainable_weights([{"params": p, "lr": 0.5 * (g + 1)} for g, p in
                                    enumerate(params)])
    assert opt.param_names == names
    grads = [_build(s, 1.0) for s in specs]
    if form == "dict":
        merged = {}
        for g in grads:
            merged.update(g)
        grads = merged
    assert opt.update(grads)
    leaves = [x for p in params for x in _leaves(p)]
    groups = [g for g, p in enumerate(params) for _ in _leaves(p)]
    for x, g in zip(leaves, groups):
        assert np.array_equal(x, np.full(x.shape, 1 - 0.5 * (g + 1), f32))
    assert [pg["params"] for pg in opt.param_groups] == params


def _leaves(tree):
    if isinstance(tree, dict):
        return [x for v in tree.values() for x in _leaves(v)]
    if isinstance(tree, list):
        return [x for v in tree for x in _leaves(v)]
    return [tree]


# ---------------------------------------------------------------------------------------------
# Refused: the message names the argument; nothing changes (the registration before stays).

def _registered():
    w, b = np.ones(2, f32), np.ones(3, f32)
    opt = flatopt.AdamW(lr=1e-2)
    opt.register_trainable_weights([{"params": {"w": w}}, {"params": {"b": b},
                                                           "weight_decay": 0.0}])
    return opt, w, b


def _other():
    return np.ones(2, f32)


BAD_GROUPS = [
    ("unknown key", [{"params": [_other()], "momentum": 0.9}], flatopt.InvalidArgumentError,
     r"params\[0\]: unknown key 'momentum' in a parameter group of flatopt.adamw"),
    ("typo key", [{"params": [_other()]}, {"params": [_other()], "weight_decy": 0.0}],
     flatopt.InvalidArgumentError, r"params\[1\]: unknown key 'weight_decy'"),
    ("negative lr", [{"params": [_other()], "lr": -1.0}], flatopt.InvalidArgumentError,
     r"invalid params\[0\]\['lr'\] = -1.0"),
    ("nan lr", [{"params": [_other()], "lr": float("nan")}], flatopt.InvalidArgumentError,
     r"params\[0\]\['lr'\] = nan"),
    ("lr past f32", [{"params": [_other()], "lr": 1e39}], flatopt.InvalidArgumentError, "lr"),
    ("lr a schedule", [{"params": [_other()], "lr": flatopt.StepLR(0.1)}],
     flatopt.ArgumentTypeError, r"params\[0\]\['lr'\].*must be a number"),
    ("lr a string", [{"params": [_other()], "lr": "0.1"}], flatopt.ArgumentTypeError,
     r"params\[0\]\['lr'\]"),
    ("negative weight decay", [{"params": [_other()], "weight_decay": -0.1}],
     flatopt.InvalidArgumentError, r"params\[0\]\['weight_decay'\] = -0.1"),
    ("betas of one", [{"params": [_other()], "betas": (0.9,)}], flatopt.InvalidArgumentError,
     r"params\[0\]\['betas'\]"),
    ("betas and b1", [{"params": [_other()], "betas": (0.9, 0.9), "b1": 0.5}],
     flatopt.InvalidArgumentError, r"params\[0\]: give either 'betas' or 'b1'"),
    ("beta out of range", [{"params": [_other()], "betas": (1.5, 0.9)}],
     flatopt.InvalidArgumentError, "b1"),
    ("amsgrad on adamw", [{"params": [_other()], "amsgrad": True}],
     flatopt.InvalidArgumentError, r"params\[0\]\['amsgrad'\] = True: AdamW has no AMSGrad"),
    ("empty group", [{"params": [_other()]}, {"params": []}], flatopt.StructureError,
     r"params\[1\]\['params'\]: no parameters"),
    ("bad leaf", [{"params": [_other()]}, {"params": {"x": np.ones(2)}}], flatopt.DTypeError,
     r"params\[1\]\['params'\]\['x'\]"),
]


@pytest.mark.parametrize("row", BAD_GROUPS, ids=[r[0] for r in BAD_GROUPS])
def test_bad_groups_are_refused_and_nothing_changes(row):
    _, groups, error, match = row
    opt, w, b = _registered()
    with pytest.raises(error, match=match):
        opt.register_trainable_weights(groups)
    assert opt.param_names == ["w", "b"]
    opt.update({"w": np.ones(2, f32), "b": np.ones(3, f32)})
    assert opt.step_count == 1 and not np.array_equal(w, np.ones(2, f32))


# The later rules' group options: checked as their factories check them, as f32 by the library
# (a value that rounds to inf or 0 is refused), naming the group and the option.
RULE_OPTION_ROWS = [
    ("rprop eta_plus past f32", flatopt.Rprop, {"eta_plus": 1e39}, flatopt.InvalidArgumentError,
     r"params\[1\]: invalid eta_plus = 1e39 \(inf as f32\)"),
    ("rprop max_step_size past f32", flatopt.Rprop, {"max_step_size": 1e39},
     flatopt.InvalidArgumentError, r"params\[1\]: invalid max_step_size = 1e39"),
    ("rprop min above max", flatopt.Rprop, {"min_step_size": 100.0},
     flatopt.InvalidArgumentError, r"params\[1\]: invalid min_step_size = 100"),
    ("rprop eta_minus a string", flatopt.Rprop, {"eta_minus": "0.5"}, flatopt.ArgumentTypeError,
     "eta_minus"),
    ("adadelta rho 1", flatopt.Adadelta, {"rho": 1.0}, flatopt.InvalidArgumentError,
     r"params\[1\]: invalid rho = 1"),
    ("adadelta eps rounds to 0", flatopt.Adadelta, {"eps": 1e-50}, flatopt.InvalidArgumentError,
     r"params\[1\]: invalid eps = 1e-50 \(0.0 as f32\)"),
    ("yogi eps rounds to 0", flatopt.Yogi, {"eps": 1e-50}, flatopt.InvalidArgumentError,
     r"params\[1\]: invalid eps = 1e-50"),
    ("nadam momentum_decay negative", flatopt.Nadam, {"momentum_decay": -1.0},
     flatopt.InvalidArgumentError, "momentum_decay"),
    ("lion b1 above 1", flatopt.Lion, {"betas": (1.5, 0.9)}, flatopt.InvalidArgumentError, "b1"),
    ("adabelief eps None", flatopt.AdaBelief, {"eps": None}, flatopt.ArgumentTypeError, "eps"),
    ("adamax weight decay past f32", flatopt.Adamax, {"weight_decay": 1e39},
     flatopt.InvalidArgumentError, r"params\[1\]: invalid weight_decay = 1e39"),
]


@pytest.mark.parametrize("row", RULE_OPTION_ROWS, ids=[r[0] for r in RULE_OPTION_ROWS])
def test_bad_rule_options_of_later_rules_are_refused(row):
    _, cls, options, error, match = row
    opt = cls()
    a, b = np.ones(3, f32), np.ones(2, f32)
    with pytest.raises(error, match=match):
        opt.register_trainable_weights([{"params": {"a": a}}, {"params": {"b": b}, **options}])
    assert opt.param_names == []
    opt.register_trainable_weights([{"params": {"a": a}}, {"params": {"b": b}}])
    opt.update({"a": np.ones(3, f32), "b": np.ones(2, f32)})
    assert opt.step_count == 1 and np.all(np.isfinite(a)) and np.all(np.isfinite(b))


def test_an_array_in_two_groups_is_refused():
    w = np.ones(2, f32)
    opt = flatopt.SGD(lr=0.1)
    with pytest.raises(flatopt.OverlapError, match=r"params\[1\]\['w2'\]|w2"):
        opt.register_trainable_weights([{"params": {"w": w}}, {"params": {"w2": w}}])


BAD_GRADS = [
    ("missing key", {"w": np.ones(2, f32)}, flatopt.StructureError, "grads: missing keys 'b'"),
    ("extra key", {"w": np.ones(2, f32), "b": np.ones(3, f32), "z": np.ones(1, f32)},
     flatopt.StructureError, "unexpected keys 'z'"),
    ("one group short", [{"w": np.ones(2, f32)}], flatopt.StructureError,
     "grads: .* of length 1, but a list of length 2"),
    ("group's dict wrong", [{"w": np.ones(2, f32)}, {"c": np.ones(3, f32)}],
     flatopt.StructureError, r"grads\[1\]: missing keys 'b'"),
    ("wrong shape", {"w": np.ones(2, f32), "b": np.ones(4, f32)}, flatopt.StructureError,
     r"grads\['b'\]: shape \(4,\)"),
]


@pytest.mark.parametrize("row", BAD_GRADS, ids=[r[0] for r in BAD_GRADS])
def test_bad_gradients_are_refused_and_nothing_changes(row):
    _, grads, error, match = row
    opt, w, b = _registered()
    with pytest.raises(error, match=match):
        opt.update(grads)
    assert opt.step_count == 0 and np.array_equal(w, np.ones(2, f32))


# ---------------------------------------------------------------------------------------------
# Live param_groups.

def test_param_groups_entries():
    opt, w, b = _registered()
    g0, g1 = opt.param_groups
    assert g0 == {"params": {"w": w}, "lr": 1e-2, "weight_decay": 1e-2,
                  "betas": (0.9, 0.999), "eps": 1e-8}
    assert g1["weight_decay"] == 0.0 and g1["lr"].value == 1e-2
    assert opt.param_groups[1] is g1


def test_writing_lr_and_weight_decay_takes_effect_at_the_next_step():
    p = [np.ones(2, f32), np.ones(2, f32)]
    opt = flatopt.SGD(lr=0.5)
    opt.register_trainable_weights([{"params": [p[0]]}, {"params": [p[1]]}])
    opt.update([[np.ones(2, f32)], [np.ones(2, f32)]])
    opt.param_groups[1]["lr"] = 0.25
    opt.param_groups[1]["weight_decay"] = 1.0
    assert opt.param_groups[1]["lr"] == 0.25 and opt.get_last_lr() == [0.5, 0.25]
    opt.update([[np.ones(2, f32)], [np.ones(2, f32)]])
    assert np.array_equal(p[0], np.zeros(2, f32))
    # group 1: 0.5 - 0.25 * (1 + 1.0 * 0.5)
    assert np.array_equal(p[1], np.full(2, 0.125, f32))


def test_a_group_follows_the_schedule_scaled_by_its_lr():
    p = [np.ones(2, f32), np.ones(2, f32)]
    opt = flatopt.SGD(lr=flatopt.ExponentialLR(0.5, gamma=0.5, per_update=True))
    opt.register_trainable_weights([{"params": [p[0]]}, {"params": [p[1]], "lr": 0.25}])
    assert opt.get_last_lr() == [0.5, 0.25]
    opt.update([[np.ones(2, f32)], [np.ones(2, f32)]])
    assert opt.get_last_lr() == [0.25, 0.125]
    opt.param_groups[0]["lr"] = 1.0
    assert opt.get_last_lr() == [0.5, 0.125] and opt.current_lr == 0.5


LIVE_BAD = [
    ("negative lr", "lr", -1.0, flatopt.InvalidArgumentError,
     r"invalid param_groups\[1\]\['lr'\] = -1.0"),
    ("inf weight decay", "weight_decay", float("inf"), flatopt.InvalidArgumentError,
     r"param_groups\[1\]\['weight_decay'\] = inf"),
    ("lr past f32", "lr", 1e39, flatopt.InvalidArgumentError, "lr"),
    ("lr a string", "lr", "x", flatopt.ArgumentTypeError, r"param_groups\[1\]\['lr'\]"),
    ("fixed betas", "betas", (0.5, 0.5), flatopt.InvalidArgumentError,
     r"param_groups\[1\]\['betas'\] cannot be changed"),
    ("fixed params", "params", {}, flatopt.InvalidArgumentError,
     r"param_groups\[1\]\['params'\] cannot be changed"),
    ("unknown key", "momentum", 0.9, flatopt.InvalidArgumentError,
     r"param_groups\[1\]: unknown key 'momentum'"),
]


@pytest.mark.parametrize("row", LIVE_BAD, ids=[r[0] for r in LIVE_BAD])
def test_bad_writes_to_a_group_are_refused_and_nothing_changes(row):
    _, key, value, error, match = row
    opt, _, _ = _registered()
    before = dict(opt.param_groups[1].items())
    with pytest.raises(error, match=match):
        opt.param_groups[1][key] = value
    assert dict(opt.param_groups[1].items()) == before


@pytest.mark.parametrize("how", ["del", "pop", "clear", "popitem"])
def test_entries_of_a_group_cannot_be_removed(how):
    opt, _, _ = _registered()
    g = opt.param_groups[0]
    with pytest.raises(flatopt.InvalidArgumentError, match="cannot be removed"):
        if how == "del":
            del g["lr"]
        else:
            getattr(g, how)(*(["lr"] if how == "pop" else []))
    assert "lr" in g


def test_lr_apply_sets_every_group():
    opt, _, _ = _registered()
    opt.param_groups[1]["lr"] = 0.004
    opt.lr_apply(lambda lr: lr * 0.5)
    assert opt.get_last_lr() == [0.005, 0.002]
    with pytest.raises(flatopt.InvalidArgumentError, match=r"lr_apply: .*param_groups\[0\]"):
        opt.lr_apply(lambda lr: -lr)
    assert opt.get_last_lr() == [0.005, 0.002]
    with pytest.raises(flatopt.ArgumentTypeError, match="apply_fn must be callable"):
        opt.lr_apply(0.5)


def test_current_lr_set_before_registration_is_kept():
    opt = flatopt.SGD(lr=0.5)
    opt.current_lr = 0.25
    p = {"w": np.ones(2, f32)}
    opt.register_trainable_weights(p)
    assert opt.current_lr == 0.25 and opt.param_groups[0]["lr"] == 0.25
    opt.update({"w": np.ones(2, f32)})
    assert np.array_equal(p["w"], np.full(2, 0.75, f32))


# ---------------------------------------------------------------------------------------------
# add_param_group.

@pytest.mark.parametrize("style", ["pytorch", "braintools"])
def test_add_param_group_before_the_first_update(style):
    a, a_ref, c = np.ones(3, f32), np.ones(3, f32), np.ones(2, f32)
    opt, ref = flatopt.Adam(lr=0.01), flatopt.Adam(lr=0.01)
    opt.register_trainable_weights({"a": a})
    ref.register_trainable_weights({"a": a_ref})
    g = np.full(3, 0.5, f32)
    if style == "pytorch":
        opt.add_param_group({"params": {"c": c}, "lr": 0.1})
    else:
        opt.add_param_group({"c": c}, lr=0.1)
    assert opt.param_names == ["a", "c"] and opt.get_last_lr() == [0.01, 0.1]
    for _ in range(3):
        opt.update({"a": g, "c": np.ones(2, f32)})
        ref.update({"a": g})
    assert np.array_equal(a, a_ref) and np.all(c < 1)


ADD_BAD = [
    ("unknown key", ({"params": {"c": np.ones(2, f32)}, "lrr": 0.1},), {},
     flatopt.InvalidArgumentError, r"add_param_group\(param_group\): unknown key 'lrr'"),
    ("overlap", "overlap", {}, flatopt.OverlapError,
     r"add_param_group\(param_group\)\['params'\]\['c'\] shares memory with the registered"),
    ("bad lr kwarg", ({"c": np.ones(2, f32)},), {"lr": -1.0}, flatopt.InvalidArgumentError,
     r"add_param_group\(param_group\)\['lr'\] = -1.0"),
]


@pytest.mark.parametrize("row", ADD_BAD, ids=[r[0] for r in ADD_BAD])
def test_add_param_group_refused_and_nothing_changes(row):
    _, args, kwargs, error, match = row
    a = np.ones(4, f32)
    opt = flatopt.SGD(lr=0.5)
    opt.register_trainable_weights({"a": a})
    if args == "overlap":
        args = ({"params": {"c": a[1:3]}},)
    with pytest.raises(error, match=match):
        opt.add_param_group(*args, **kwargs)
    assert opt.param_names == ["a"] and len(opt.param_groups) == 1
    opt.update({"a": np.ones(4, f32)})
    assert np.array_equal(a, np.full(4, 0.5, f32))


def test_add_param_group_after_the_first_update_is_refused_and_nothing_changes():
    a = np.ones(2, f32)
    opt = flatopt.SGD(lr=0.5)
    opt.register_trainable_weights({"a": a})
    opt.update({"a": np.ones(2, f32)})
    with pytest.raises(flatopt.InvalidStateError, match="after the first update"):
        opt.add_param_group({"params": {"c": np.ones(1, f32)}})
    assert opt.param_names == ["a"] and len(opt.param_groups) == 1
    opt.update({"a": np.ones(2, f32)})
    assert np.array_equal(a, np.zeros(2, f32))


def test_add_param_group_needs_a_registration_without_gradient_arrays():
    opt = flatopt.SGD(lr=0.5)
    with pytest.raises(flatopt.InvalidStateError, match="before register_trainable_weights"):
        opt.add_param_group({"params": [np.ones(2, f32)]})
    opt.register_trainable_weights([np.ones(2, f32)], grads=[np.ones(2, f32)])
    with pytest.raises(flatopt.InvalidStateError, match="registered gradient arrays"):
        opt.add_param_group({"params": [np.ones(2, f32)]})


def test_add_param_group_to_a_list_makes_the_gradients_a_list_per_group():
    a, c = np.ones(2, f32), np.ones(1, f32)
    opt = flatopt.SGD(lr=0.5)
    opt.register_trainable_weights([a])
    opt.add_param_group({"params": [c], "lr": 0.25})
    assert opt.param_names == [(0, 0), (1, 0)]
    opt.update([[np.ones(2, f32)], [np.ones(1, f32)]])
    assert np.array_equal(a, np.full(2, 0.5, f32)) and np.array_equal(c, np.full(1, 0.75, f32))


def test_registered_gradient_arrays_with_groups():
    p, g = [np.ones(2, f32), np.ones(2, f32)], [np.ones(2, f32), np.ones(2, f32)]
    opt = flatopt.SGD(lr=0.5)
    opt.register_trainable_weights([{"params": {"w": p[0]}}, {"params": {"b": p[1]}, "lr": 0.25}],
                                   grads={"w": g[0], "b": g[1]})
    opt.update()
    assert np.array_equal(p[0], np.full(2, 0.5, f32))
    assert np.array_equal(p[1], np.full(2, 0.75, f32))


# ---------------------------------------------------------------------------------------------
# Checkpoints and copies carry the groups and their live values.

def _group_run(opt, params, start, stop):
    grads = grad_stream([(2,), (3,)], 11)
    for t in range(start, stop):
        g = grads(t)
        opt.update({"w": g[0], "b": g[1]})
    return params


def _make_grouped():
    params = {"w": np.ones(2, f32), "b": np.ones(3, f32)}
    opt = flatopt.Adam(lr=flatopt.StepLR(1e-2, step_size=2, gamma=0.5, per_update=True))
    opt.register_trainable_weights([{"params": {"w": params["w"]}},
                                    {"params": {"b": params["b"]}, "lr": 5e-3,
                                     "betas": (0.5, 0.9)}])
    return opt, params


@needs_checkpoints
@pytest.mark.parametrize("how", ["state_dict", "file", "pickle", "deepcopy"])
def test_groups_survive_checkpoints_and_copies(how, tmp_path):
    opt, params = _make_grouped()
    _group_run(opt, params, 0, 3)
    opt.param_groups[1]["lr"] = 2e-3
    opt.param_groups[0]["weight_decay"] = 0.5
    if how in ("state_dict", "file"):
        other, oparams = _make_grouped()
        for k in params:
            oparams[k][...] = params[k]
        if how == "state_dict":
            other.load_state_dict(pickle.loads(pickle.dumps(opt.state_dict())))
        else:
            opt.save(tmp_path / "c.bin")
            other.load(tmp_path / "c.bin")
            other.schedule.last_epoch  # noqa: B018 - the per-update counter comes from the file
    else:
        other = pickle.loads(pickle.dumps(opt)) if how == "pickle" else copy.deepcopy(opt)
        oparams = {"w": other.param_groups[0]["params"]["w"],
                   "b": other.param_groups[1]["params"]["b"]}
    assert other.param_groups[1]["lr"] == 2e-3 and other.param_groups[0]["weight_decay"] == 0.5
    assert other.param_groups[1]["betas"] == (0.5, 0.9)
    _group_run(opt, params, 3, 8)
    _group_run(other, oparams, 3, 8)
    for k in params:
        assert np.array_equal(params[k], oparams[k])


@needs_checkpoints
def test_a_state_of_other_groups_is_refused():
    opt, _ = _make_grouped()
    state = opt.state_dict()
    assert [g["params"] for g in state["param_groups"]] == [["w"], ["b"]]
    other = flatopt.Adam(lr=flatopt.StepLR(1e-2, step_size=2, gamma=0.5, per_update=True))
    other.register_trainable_weights([{"params": {"w": np.ones(2, f32), "b": np.ones(3, f32)}}])
    with pytest.raises(flatopt.CheckpointError, match="parameter groups"):
        other.load_state_dict(state)
    del state["param_groups"]  # the library still refuses other groups
    with pytest.raises(flatopt.CheckpointError):
        other.load_state_dict(state)


# ---------------------------------------------------------------------------------------------
# The PyTorch AdamW recipe: decay on the weights, none on biases and norm weights, two
# learning rates, OneCycleLR; torch.optim.AdamW with the same groups as the reference.

TORCH_RECIPES = [
    # (id, anneal_strategy, max_lr of the decay group, of the no-decay group, steps)
    ("cos", "cos", 1e-2, 3e-3, 150),
    ("linear", "linear", 5e-3, 2e-2, 120),
]


@pytest.mark.parametrize("row", TORCH_RECIPES, ids=[r[0] for r in TORCH_RECIPES])
def test_adamw_recipe_follows_torch(row):
    """PyTorch's OneCycleLR gives each group its own max_lr; flatopt's schedule is the first
    group's, and each group's lr is its max_lr: the group follows schedule(t) * max_lr_g /
    max_lr_0, PyTorch's curve for that group (every OneCycle value is max_lr times a factor of
    t). cycle_momentum=False: flatopt does not cycle Adam's b1 (docs/numerics.md)."""
    torch = needs("torch")
    _, anneal, lr_decay, lr_plain, steps = row

    def model():
        torch.manual_seed(0)
        return torch.nn.Sequential(
            torch.nn.Linear(8, 16), torch.nn.LayerNorm(16), torch.nn.Tanh(),
            torch.nn.Linear(16, 4),
        )

    def split(m):
        decay = {n: p for n, p in m.named_parameters() if p.ndim >= 2}
        plain = {n: p for n, p in m.named_parameters() if p.ndim < 2}
        return decay, plain

    ref, ours = model(), model()
    rd, rp = split(ref)
    od, op = split(ours)
    assert len(rd) == 2 and len(rp) == 4  # 2 weights; 2 biases, the norm's weight and bias
    topt = torch.optim.AdamW(
        [{"params": list(rd.values()), "weight_decay": 0.1},
         {"params": list(rp.values()), "weight_decay": 0.0}], lr=1e-3, betas=(0.9, 0.95))
    tsched = torch.optim.lr_scheduler.OneCycleLR(
        topt, max_lr=[lr_decay, lr_plain], total_steps=steps, anneal_strategy=anneal,
        cycle_momentum=False)
    opt = flatopt.AdamW(
        lr=flatopt.OneCycleLR(max_lr=lr_decay, total_steps=steps, anneal_strategy=anneal,
                              per_update=True),
        betas=(0.9, 0.95), weight_decay=0.1)
    opt.register_trainable_weights([
        {"params": od, "lr": lr_decay, "weight_decay": 0.1},
        {"params": op, "lr": lr_plain, "weight_decay": 0.0},
    ])
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 8, generator=gen), torch.randn(64, 4, generator=gen)
    worst = 0.0
    for _ in range(steps):
        want_lrs = [g["lr"] for g in topt.param_groups]
        got_lrs = opt.get_last_lr()
        for got, want in zip(got_lrs, want_lrs):
            assert abs(got - want) <= 1e-7 * want  # the f32 rounding of the same value
        for m in (ref, ours):
            m.zero_grad()
            torch.nn.functional.mse_loss(m(x), y).backward()
        topt.step()
        tsched.step()
        assert opt.update({n: p.grad for n, p in ours.named_parameters()})
        for (n, a), (_, b) in zip(ours.named_parameters(), ref.named_parameters()):
            a, b = a.detach().numpy(), b.detach().numpy()
            err = np.abs(a.astype(np.float64) - b)
            tol = 1e-5 + 1e-5 * np.abs(b.astype(np.float64))
            assert np.all(err <= tol), (n, float(np.max(err / tol)))
            worst = max(worst, float(np.max(err / tol)))
    assert opt.step_count == steps
    print(f"AdamW recipe ({anneal}): worst error / tolerance {worst:.3g} over {steps} steps")


# ---------------------------------------------------------------------------------------------
# Per-group lists in schedules (braintools / PyTorch: one value per group). Group i follows
# schedule(t) * base_lr[i] / base_lr[0]: lists the rule expresses are taken, the others refused
# naming the difference.

def _f32(x):
    return float(f32(x))


SCHEDULE_LISTS = [
    # (id, schedule factory, steps, expected per-group lrs after the steps)
    ("step", lambda: flatopt.StepLR(base_lr=[0.1, 0.01], step_size=5, gamma=0.1), 5,
     [0.1 * 0.1, 0.01 * (0.1 * 0.1 / 0.1)]),
    ("exponential", lambda: flatopt.ExponentialLR(base_lr=[1.0, 0.25], gamma=0.5), 3,
     [0.125, 0.03125]),
    ("linear", lambda: flatopt.LinearLR(base_lr=[1.0, 0.5], start_factor=0.5, total_iters=2),
     1, [0.75, 0.375]),
    ("warmup from 0", lambda: flatopt.WarmupScheduler(base_lr=[1.0, 0.5], warmup_epochs=4),
     1, [0.25, 0.125]),
    ("cosine without floor", lambda: flatopt.CosineAnnealingLR(base_lr=[1.0, 0.5], T_max=2),
     1, [0.5, 0.25]),
    ("onecycle max_lr list", lambda: flatopt.OneCycleLR(max_lr=[1.0, 0.5], total_steps=10),
     # PyTorch's anneal at t = 0: 1 + (1/25 - 1) / 2 * (cos(0) + 1) = 0.040000000000000036
     0, [1.0 + (1.0 / 25 - 1.0) / 2 * 2, 0.5 * (1.0 + (1.0 / 25 - 1.0) / 2 * 2)]),
    ("cyclic lists in ratio", lambda: flatopt.CyclicLR(base_lr=[0.5, 0.25], max_lr=[1.0, 0.5],
                                                        step_size_up=2), 1, [0.75, 0.375]),
    ("plateau min_lr list", lambda: flatopt.ReduceLROnPlateau(base_lr=[1.0, 0.5], factor=0.5,
                                                              patience=0,
                                                              min_lr=[0.5, 0.25]), 3,
     [0.5, 0.25]),
    ("piecewise: absolute values", lambda: flatopt.PiecewiseConstantSchedule(
        base_lr=[1.0, 0.1], boundaries=[1], values=[1.0, 0.5]), 1, [0.5, 0.5]),
    ("equal values with a floor", lambda: flatopt.CosineAnnealingLR(
        base_lr=[1.0, 1.0], T_max=2, eta_min=0.5), 2, [0.5, 0.5]),
]


@pytest.mark.parametrize("row", SCHEDULE_LISTS, ids=[r[0] for r in SCHEDULE_LISTS])
def test_per_group_schedule_lists_alone_and_driving_groups(row):
    _, make, steps, want = row
    alone = make()
    plateau = isinstance(alone, flatopt.ReduceLROnPlateau)
    for _ in range(steps):
        alone.step(1.0) if plateau else alone.step()
    assert alone.get_lr() == want and alone.current_lrs.value == want
    assert len(alone.base_lrs) == 2
    # The same list drives an optimizer's two groups (a group without "lr" takes its entry).
    sched = make()
    opt = flatopt.SGD(lr=sched)
    p = [np.ones(1, f32), np.ones(1, f32)]
    opt.register_trainable_weights([{"params": [p[0]]}, {"params": [p[1]]}])
    for _ in range(steps):
        sched.step(1.0) if plateau else sched.step()
    assert opt.get_last_lr() == want and sched.get_lr() == want
    opt.update([[np.ones(1, f32)], [np.ones(1, f32)]])
    assert [float(x[0]) for x in p] == [float(f32(1) - f32(w)) for w in want]


SCHEDULE_LISTS_BAD = [
    ("cosine shared eta_min", lambda: flatopt.CosineAnnealingLR(base_lr=[1.0, 0.1],
                                                                eta_min=0.01),
     r"CosineAnnealingLR\(base_lr=\[1.0, 0.1\], eta_min=0.01\): .* scales eta_min too \(to "
     r"0.001 for group 1\), where PyTorch and braintools share eta_min"),
    ("warmup shared start", lambda: flatopt.WarmupScheduler(base_lr=[1.0, 0.1],
                                                            warmup_start_lr=0.1),
     "scales warmup_start_lr too"),
    ("warmup cosine shared floor", lambda: flatopt.WarmupCosineSchedule(
        base_lr=[1.0, 0.1], eta_min=0.01), "scales eta_min too"),
    ("restarts shared floor", lambda: flatopt.CosineAnnealingWarmRestarts(
        base_lr=[1.0, 0.1], eta_min=0.01), "scales eta_min too"),
    ("decay shared end", lambda: flatopt.ExponentialDecayLR(base_lr=[1.0, 0.1], end_value=0.01),
     "scales end_value too"),
    ("cyclic shared max", lambda: flatopt.CyclicLR(base_lr=[0.1, 0.01], max_lr=1.0),
     "scales max_lr too .* use a max_lr list in the ratio"),
    ("cyclic max not in ratio", lambda: flatopt.CyclicLR(base_lr=[0.1, 0.01],
                                                         max_lr=[1.0, 0.2]),
     r"group 1's max_lr would be 0.0999.*, not 0.2"),
    ("cyclic max list without base list", lambda: flatopt.CyclicLR(max_lr=[1.0, 0.2]),
     "a per-group max_lr needs a base_lr list of the same length"),
    ("plateau shared min", lambda: flatopt.ReduceLROnPlateau(base_lr=[1.0, 0.1], min_lr=0.01),
     "scales min_lr too"),
    ("plateau min lengths", lambda: flatopt.ReduceLROnPlateau(base_lr=[1.0, 0.1, 0.1],
                                                              min_lr=[0.1, 0.01]),
     "a per-group min_lr needs a base_lr list of the same length"),
    ("empty list", lambda: flatopt.StepLR(base_lr=[]), r"invalid base_lr = \[\]"),
    ("negative entry", lambda: flatopt.StepLR(base_lr=[0.1, -0.1]),
     r"invalid base_lr\[1\] = -0.1: the learning rate must be finite and >= 0"),
    ("nan entry", lambda: flatopt.OneCycleLR(max_lr=[0.1, float("nan")], total_steps=5),
     r"invalid max_lr\[1\] = nan"),
    ("zero first", lambda: flatopt.StepLR(base_lr=[0.0, 0.1]), r"needs base_lr\[0\] > 0"),
]


@pytest.mark.parametrize("row", SCHEDULE_LISTS_BAD, ids=[r[0] for r in SCHEDULE_LISTS_BAD])
def test_per_group_schedule_lists_refused(row):
    _, make, match = row
    with pytest.raises(flatopt.InvalidArgumentError, match=match):
        make()
