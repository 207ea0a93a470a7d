"""The optimizer family (flatopt/_family.py, issue 14) against its references: optax (each rule's
optax form) and torch.optim (PyTorch's form, where PyTorch has the rule), over 60 steps with
global-norm clipping, coupled weight decay and an exponential schedule, and wrapped in Lookahead
(the syncs applied to the reference's parameters by hand). Within the golden tolerance of
docs/numerics.md ("Test tolerances"): every element at every step within
``1e-5 + 1e-5 * |ref|``. Skipped where optax or torch is not importable (the extras virtualenv
of ``make test`` has both).

Also without them: the braintools-named classes are the optax-style functions with braintools'
defaults, bit for bit.
"""

import numpy as np
import pytest

import flatopt

STEPS = 60
SIZES = (37, 64, 5)
CLIP = 1.0
WD = 1e-3
GAMMA = 0.98
SYNC, ALPHA = 5, 0.5


def _data(seed):
    rng = np.random.default_rng(seed)
    params = [rng.normal(0.0, 1.0, n).astype(np.float32) for n in SIZES]
    # Gradient scales vary per step, so that the norm clip binds on some steps and not others.
    grads = [
        [(rng.normal(0.0, 1.0, n) * rng.uniform(0.02, 0.25)).astype(np.float32) for n in SIZES]
        for _ in range(STEPS)
    ]
    return params, grads


def _flatopt_run(base, params, grads, lookahead, wd=WD):
    ps = [p.copy() for p in params]
    kw = dict(weight_decay=wd, grad_clip_norm=CLIP)
    if lookahead:
        opt = flatopt.Lookahead(base, sync_period=SYNC, alpha=ALPHA, **kw)
    else:
        opt = flatopt.Optimizer(base, None, lookahead=False, **kw)
    opt.register_trainable_weights(ps)
    out = []
    for g in grads:
        opt.update(g)
        out.append([p.copy() for p in ps])
    return out


def _sync(t, ps, slow):
    """Lookahead's sync after applied step t (1-based), in float32 as flatopt does it."""
    if t % SYNC == 0:
        for i, p in enumerate(ps):
            slow[i] = (slow[i] + np.float32(ALPHA) * (p - slow[i])).astype(np.float32)
            ps[i] = slow[i].copy()


def _optax_run(rule, lr, params, grads, lookahead):
    optax = pytest.importorskip("optax")
    jnp = pytest.importorskip("jax.numpy")
    schedule = optax.exponential_decay(lr, transition_steps=1, decay_rate=GAMMA)
    if isinstance(rule, _WithLr):
        # The rule places the learning rate itself (LARS: before its momentum trace).
        tail = rule.transforms(optax, schedule)
    else:
        tail = [*rule(optax), optax.scale_by_learning_rate(schedule)]
    tx = optax.chain(
        optax.clip_by_global_norm(CLIP),
        optax.add_decayed_weights(WD),
        *tail,
    )
    ps = [p.copy() for p in params]
    slow = [p.copy() for p in params]
    state = tx.init([jnp.asarray(p) for p in ps])
    out = []
    for t, g in enumerate(grads, 1):
        cur = [jnp.asarray(p) for p in ps]
        updates, state = tx.update([jnp.asarray(x) for x in g], state, cur)
        ps = [np.asarray(optax.apply_updates(c, u), dtype=np.float32) for c, u in zip(cur, updates)]
        if lookahead:
            _sync(t, ps, slow)
        out.append([p.copy() for p in ps])
    return out


def _torch_run(make, lr, params, grads, lookahead):
    torch = pytest.importorskip("torch")
    ts = [torch.tensor(p.copy()) for p in params]
    for t in ts:
        t.requires_grad_(True)
    opt = make(torch, ts, lr)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=GAMMA)
    slow = [p.copy() for p in params]
    out = []
    for t, g in enumerate(grads, 1):
        # Global-norm clipping as flatopt's: the norm in float64, one float32 factor.
        norm = float(np.sqrt(sum(float(np.sum(x.astype(np.float64) ** 2)) for x in g)))
        scale = np.float32(CLIP / norm) if norm > CLIP else np.float32(1.0)
        for p, x in zip(ts, g):
            p.grad = torch.tensor(x * scale if norm > CLIP else x)
        opt.step()
        sched.step()
        ps = [p.detach().numpy().copy() for p in ts]
        if lookahead:
            _sync(t, ps, slow)
            with torch.no_grad():
                for p, x in zip(ts, ps):
                    p.copy_(torch.tensor(x))
        out.append(ps)
    return out


def _worst(ours, ref):
    """The largest |ours - ref| / (1e-5 + 1e-5 |ref|) and |ours - ref| over every step."""
    ratio = err = 0.0
    for a_step, b_step in zip(ours, ref):
        for a, b in zip(a_step, b_step):
            d = np.abs(a.astype(np.float64) - b.astype(np.float64))
            ratio = max(ratio, float(np.max(d / (1e-5 + 1e-5 * np.abs(b)))))
            err = max(err, float(np.max(d)))
    return ratio, err


def _sched(lr):
    return flatopt.ExponentialLR(lr, GAMMA, per_update=True)


class _WithLr:
    """optax transforms that include the learning rate (a function of the optax module and the
    schedule)."""

    def __init__(self, transforms):
        self.transforms = transforms


# name -> (flatopt base from a schedule, optax transforms (a function of the optax module, the
# learning rate appended; or a _WithLr), learning rate). LAMB, LARS and NovoGrad take norms per
# registered array (optax: per leaf), which the three arrays of SIZES exercise.
OPTAX = {
    "adagrad": (
        lambda s: flatopt.adagrad(s),
        lambda o: [o.scale_by_rss(initial_accumulator_value=0.1, eps=1e-7)],
        0.05,
    ),
    "rmsprop": (
        lambda s: flatopt.rmsprop(s),
        lambda o: [o.scale_by_rms(decay=0.9, eps=1e-8)],
        1e-2,
    ),
    "rmsprop centered momentum": (
        lambda s: flatopt.rmsprop(s, centered=True, momentum=0.9),
        lambda o: [o.scale_by_stddev(decay=0.9, eps=1e-8), o.trace(decay=0.9)],
        1e-2,
    ),
    "adamax": (
        lambda s: flatopt.adamax(s),
        lambda o: [o.scale_by_adamax(b1=0.9, b2=0.999, eps=1e-8)],
        2e-3,
    ),
    "nadam": (
        lambda s: flatopt.nadam(s),
        lambda o: [o.scale_by_adam(b1=0.9, b2=0.999, eps=1e-8, nesterov=True)],
        2e-3,
    ),
    "adabelief": (
        lambda s: flatopt.adabelief(s),
        lambda o: [o.scale_by_belief(b1=0.9, b2=0.999, eps=1e-16, eps_root=1e-16)],
        1e-3,
    ),
    "yogi": (
        lambda s: flatopt.yogi(s),
        lambda o: [o.scale_by_yogi(b1=0.9, b2=0.999, eps=1e-3)],
        1e-2,
    ),
    "adadelta": (
        lambda s: flatopt.adadelta(s),
        lambda o: [o.scale_by_adadelta(rho=0.9, eps=1e-6)],
        1.0,
    ),
    "lion": (
        lambda s: flatopt.lion(s, weight_decay=1e-2),
        lambda o: [o.scale_by_lion(b1=0.9, b2=0.99), o.add_decayed_weights(1e-2)],
        1e-3,
    ),
    "lamb": (
        lambda s: flatopt.lamb(s, weight_decay=1e-2),
        lambda o: [o.scale_by_adam(b1=0.9, b2=0.999, eps=1e-6), o.add_decayed_weights(1e-2),
                   o.scale_by_trust_ratio()],
        1e-2,
    ),
    "lamb eps_root": (
        lambda s: flatopt.lamb(s, b1=0.8, b2=0.99, eps=1e-8, eps_root=1e-6),
        lambda o: [o.scale_by_adam(b1=0.8, b2=0.99, eps=1e-8, eps_root=1e-6),
                   o.scale_by_trust_ratio()],
        1e-2,
    ),
    "lars": (
        lambda s: flatopt.lars(s, weight_decay=1e-2),
        _WithLr(lambda o, s: [o.add_decayed_weights(1e-2), o.scale_by_trust_ratio(
            trust_coefficient=0.001, eps=0.0), o.scale_by_learning_rate(s), o.trace(decay=0.9)]),
        1.0,
    ),
    "lars nesterov eps": (
        lambda s: flatopt.lars(s, trust_coefficient=0.01, eps=1e-3, momentum=0.8, nesterov=True),
        _WithLr(lambda o, s: [o.scale_by_trust_ratio(trust_coefficient=0.01, eps=1e-3),
                              o.scale_by_learning_rate(s), o.trace(decay=0.8, nesterov=True)]),
        0.5,
    ),
    "novograd": (
        lambda s: flatopt.novograd(s, weight_decay=1e-2),
        lambda o: [o.scale_by_novograd(b1=0.9, b2=0.25, eps=1e-6, weight_decay=1e-2)],
        1e-2,
    ),
    "novograd eps_root": (
        lambda s: flatopt.novograd(s, b1=0.95, b2=0.5, eps=1e-8, eps_root=1e-6),
        lambda o: [o.scale_by_novograd(b1=0.95, b2=0.5, eps=1e-8, eps_root=1e-6)],
        1e-2,
    ),
}

# name -> (flatopt base from a schedule, torch.optim constructor, learning rate, the coupled
# weight decay both get)
TORCH = {
    "adagrad": (
        lambda s: flatopt.adagrad(s, initial_accumulator_value=0.0, eps=1e-10,
                                  eps_inside_sqrt=False, lr_decay=0.01),
        lambda torch, ps, lr: torch.optim.Adagrad(ps, lr=lr, lr_decay=0.01, weight_decay=WD),
        0.05,
        WD,
    ),
    "rmsprop centered momentum": (
        lambda s: flatopt.rmsprop(s, alpha=0.99, eps_inside_sqrt=False, centered=True,
                                  momentum=0.9),
        lambda torch, ps, lr: torch.optim.RMSprop(ps, lr=lr, momentum=0.9, centered=True,
                                                  weight_decay=WD),
        1e-2,
        WD,
    ),
    "adamax": (
        lambda s: flatopt.adamax(s, eps_outside_max=False),
        lambda torch, ps, lr: torch.optim.Adamax(ps, lr=lr, weight_decay=WD),
        2e-3,
        WD,
    ),
    "nadam": (
        lambda s: flatopt.nadam(s, constant_momentum=False),
        lambda torch, ps, lr: torch.optim.NAdam(ps, lr=lr, weight_decay=WD),
        2e-3,
        WD,
    ),
    "adadelta": (
        lambda s: flatopt.adadelta(s),
        lambda torch, ps, lr: torch.optim.Adadelta(ps, lr=lr, weight_decay=WD),
        1.0,
        WD,
    ),
    "rprop": (
        lambda s: flatopt.rprop(s),
        lambda torch, ps, lr: torch.optim.Rprop(ps, lr=lr),
        1e-2,
        0.0,
    ),
    "nadamw": (
        lambda s: flatopt.nadam(s, constant_momentum=False, decoupled_weight_decay=0.05),
        lambda torch, ps, lr: torch.optim.NAdam(ps, lr=lr, weight_decay=0.05,
                                                decoupled_weight_decay=True),
        2e-3,
        0.0,
    ),
}


def _check(name, ours, ref, what):
    ratio, err = _worst(ours, ref)
    print(f"{name} vs {what}: worst |error| {err:.3g}, {ratio:.3f} of the tolerance")
    assert ratio <= 1.0, f"{name} vs {what}: {ratio:.3f} of the tolerance (|error| {err:.3g})"


@pytest.mark.parametrize("lookahead", [False, True], ids=["plain", "lookahead"])
@pytest.mark.parametrize("name", sorted(OPTAX))
def test_parity_with_optax(name, lookahead):
    base, rule, lr = OPTAX[name]
    params, grads = _data(7)
    ref = _optax_run(rule, lr, params, grads, lookahead)
    ours = _flatopt_run(base(_sched(lr)), params, grads, lookahead)
    _check(name, ours, ref, "optax" + (" (Lookahead)" if lookahead else ""))


@pytest.mark.parametrize("lookahead", [False, True], ids=["plain", "lookahead"])
@pytest.mark.parametrize("name", sorted(TORCH))
def test_parity_with_torch(name, lookahead):
    base, make, lr, wd = TORCH[name]
    params, grads = _data(11)
    ref = _torch_run(make, lr, params, grads, lookahead)
    ours = _flatopt_run(base(_sched(lr)), params, grads, lookahead, wd)
    _check(name, ours, ref, "torch.optim" + (" (Lookahead)" if lookahead else ""))


# The braintools-named classes are the optax-style functions with braintools' defaults.
CLASSES = [
    (lambda: flatopt.Adagrad(), lambda: flatopt.adagrad(1e-2, initial_accumulator_value=0.0,
                                                          eps=1e-10), 0.0),
    (lambda: flatopt.RMSprop(), lambda: flatopt.rmsprop(1e-2, alpha=0.99), 0.0),
    (lambda: flatopt.Adamax(weight_decay=0.01), lambda: flatopt.adamax(2e-3), 0.01),
    (lambda: flatopt.Nadam(), lambda: flatopt.nadam(2e-3, constant_momentum=False), 0.0),
    (lambda: flatopt.Lion(weight_decay=0.1), lambda: flatopt.lion(1e-4, weight_decay=0.1), 0.0),
    (lambda: flatopt.AdaBelief(), lambda: flatopt.adabelief(1e-3), 0.0),
    (lambda: flatopt.Yogi(weight_decay=0.01), lambda: flatopt.yogi(1e-3), 0.01),
    (lambda: flatopt.Adadelta(), lambda: flatopt.adadelta(1.0), 0.0),
    (lambda: flatopt.Rprop(), lambda: flatopt.rprop(1e-2), 0.0),
    (lambda: flatopt.Lamb(weight_decay=0.01),
     lambda: flatopt.lamb(1e-3, weight_decay=0.01), 0.0),
    (lambda: flatopt.Lars(weight_decay=0.01),
     lambda: flatopt.lars(1.0, weight_decay=0.01, eps=1e-8), 0.0),
    (lambda: flatopt.Novograd(weight_decay=0.01),
     lambda: flatopt.novograd(1e-3, b2=0.999, eps=1e-8, weight_decay=0.01), 0.0),
]


@pytest.mark.parametrize("row", range(len(CLASSES)))
def test_braintools_classes_are_the_functions(row):
    make_class, make_base, wd = CLASSES[row]
    params, grads = _data(3)
    a = [p.copy() for p in params]
    b = [p.copy() for p in params]
    opt_a = make_class()
    opt_b = flatopt.Optimizer(make_base(), None, lookahead=False, weight_decay=wd)
    opt_a.register_trainable_weights(a)
    opt_b.register_trainable_weights(b)
    for g in grads[:10]:
        opt_a.update(g)
        opt_b.update(g)
    for x, y in zip(a, b):
        assert x.tobytes() == y.tobytes()
    assert any(not np.array_equal(x, p) for x, p in zip(a, params))


# LAMB, LARS and NovoGrad take compressed state as the other rules (their pass before the
# update decodes it: docs/numerics.md, "Per-buffer norms"): the bytes held, finite steps that
# stay near the float32 run (tests/state.rs checks the bits against decode -> f32 -> encode).
@pytest.mark.parametrize("dtype", ["bfloat16", "int8"])
@pytest.mark.parametrize("name", ["Lamb", "Lars", "Novograd"])
def test_per_buffer_norm_rules_take_compressed_state(name, dtype):
    rng = np.random.default_rng(5)
    params = [rng.standard_normal(n).astype(np.float32) for n in (300, 5000)]
    grads = [[rng.standard_normal(x.size).astype(np.float32) * 0.1 for x in params]
             for _ in range(10)]
    runs = []
    for d in ("float32", dtype):
        opt = getattr(flatopt, name)(state_dtype=d)
        ps = [x.copy() for x in params]
        opt.register_trainable_weights(ps)
        for g in grads:
            opt.update(g)
        runs.append((opt, ps))
    (f32, p32), (held, ph) = runs
    per = {"bfloat16": 2.0, "int8": 1.0 + 4.0 / 256}[dtype]
    assert held.state_bytes_per_element == pytest.approx(f32.state_bytes_per_element / 4 * per,
                                                        rel=0.01)  # 8-bit scales per block
    for a, b, p0 in zip(ph, p32, params):
        assert np.all(np.isfinite(a)) and not np.array_equal(a, p0)
        moved = np.linalg.norm(b - p0)
        assert np.linalg.norm(a - b) <= 0.1 * moved, (name, dtype)


# Adafactor factors 2-D (and batched) arrays: its own data, a matrix, a batch of matrices whose
# last two dims are the largest, a vector; 60 steps with clipping, coupled decay and a schedule.
SHAPES_2D = ((12, 20), (3, 6, 9), (37,))


def _data_2d(seed):
    rng = np.random.default_rng(seed)
    params = [rng.normal(0.0, 1.0, s).astype(np.float32) for s in SHAPES_2D]
    grads = [
        [(rng.normal(0.0, 1.0, s) * rng.uniform(0.02, 0.25)).astype(np.float32)
         for s in SHAPES_2D]
        for _ in range(STEPS)
    ]
    return params, grads


def _optax_adafactor(momentum, rate, clip, min_dim):
    def tail(o, s):
        t = [o.scale_by_factored_rms(min_dim_size_to_factor=min_dim)]
        if clip is not None:
            t.append(o.clip_by_block_rms(clip))
        t += [o.scale_by_learning_rate(s, flip_sign=False), o.scale_by_param_block_rms()]
        if momentum is not None:
            t.append(o.ema(momentum, debias=False))
        if rate is not None:
            t.append(o.add_decayed_weights(rate))
        return t + [o.scale(-1.0)]
    return _WithLr(tail)


# name -> (flatopt base from a schedule, optax transforms, learning rate)
ADAFACTOR_OPTAX = {
    "defaults, factored": (
        lambda s: flatopt.adafactor(s, min_dim_size_to_factor=4),
        _optax_adafactor(None, None, 1.0, 4), 1e-2,
    ),
    "unfactored (min_dim 128)": (
        lambda s: flatopt.adafactor(s),
        _optax_adafactor(None, None, 1.0, 128), 1e-2,
    ),
    "momentum, decay rate, tight clip": (
        lambda s: flatopt.adafactor(s, min_dim_size_to_factor=4, momentum=0.9,
                                    weight_decay_rate=1e-3, clipping_threshold=0.5),
        _optax_adafactor(0.9, 1e-3, 0.5, 4), 1e-2,
    ),
    "no clipping": (
        lambda s: flatopt.adafactor(s, min_dim_size_to_factor=4, clipping_threshold=None),
        _optax_adafactor(None, None, None, 4), 3e-3,
    ),
}


@pytest.mark.parametrize("lookahead", [False, True], ids=["plain", "lookahead"])
@pytest.mark.parametrize("name", sorted(ADAFACTOR_OPTAX))
def test_adafactor_parity_with_optax(name, lookahead):
    base, rule, lr = ADAFACTOR_OPTAX[name]
    params, grads = _data_2d(17)
    ref = _optax_run(rule, lr, params, grads, lookahead)
    ours = _flatopt_run(base(_sched(lr)), params, grads, lookahead)
    _check("adafactor " + name, ours, ref, "optax" + (" (Lookahead)" if lookahead else ""))


@pytest.mark.parametrize("lookahead", [False, True], ids=["plain", "lookahead"])
@pytest.mark.parametrize("wd", [0.0, 0.05], ids=["no decay", "decay"])
def test_adafactor_parity_with_torch(wd, lookahead):
    torch = pytest.importorskip("torch")
    if not hasattr(torch.optim, "Adafactor"):
        pytest.skip("torch.optim.Adafactor needs torch 2.5")
    params, grads = _data_2d(19)
    lr = 5e-3

    def make(torch, ps, lr):
        return torch.optim.Adafactor(ps, lr=lr, weight_decay=wd)

    ref = _torch_run(make, lr, params, grads, lookahead)
    base = flatopt.adafactor(_sched(lr), min_dim_size_to_factor=0, eps=0.0,
                             eps_floor=float(np.finfo(np.float32).eps), relative_step=True,
                             weight_decay_rate=wd, weight_decay_by_lr=True)
    ours = _flatopt_run(base, params, grads, lookahead, 0.0)
    _check("adafactor", ours, ref, "torch.optim" + (" (Lookahead)" if lookahead else ""))


def test_adafactor_factors_as_optax_and_refuses_other_layouts():
    rule = flatopt.adafactor(1e-2, min_dim_size_to_factor=4)
    assert rule.factor_shape((12, 20)) == (12, 20)
    assert rule.factor_shape((3, 6, 9)) == (6, 9)
    assert rule.factor_shape((3, 20)) is None  # the second largest dim below 4
    assert rule.factor_shape((37,)) is None
    assert flatopt.adafactor(1e-2, factored=False).factor_shape((200, 300)) is None
    with pytest.raises(ValueError, match="last two dims"):
        rule.factor_shape((9, 3, 6))
    with pytest.raises(ValueError, match="dtype_momentum"):
        flatopt.adafactor(1e-2, dtype_momentum="bfloat16")


def test_adafactor_class_is_the_function():
    params, grads = _data_2d(3)
    a = [p.copy() for p in params]
    b = [p.copy() for p in params]
    opt_a = flatopt.Adafactor(1e-2, min_dim_size_to_factor=4, momentum=0.5)
    opt_b = flatopt.Optimizer(flatopt.adafactor(1e-2, min_dim_size_to_factor=4, momentum=0.5),
                              None, lookahead=False)
    opt_a.register_trainable_weights(a)
    opt_b.register_trainable_weights(b)
    for g in grads[:10]:
        opt_a.update(g)
        opt_b.update(g)
    for x, y in zip(a, b):
        assert x.tobytes() == y.tobytes()
    assert any(not np.array_equal(x, p) for x, p in zip(a, params))
