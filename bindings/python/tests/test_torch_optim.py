"""flatopt.torch: torch.optim.Optimizer drop-ins (skipped when torch is not installed)."""

import contextlib
import io
import subprocess
import sys
import warnings

import pytest

from conftest import needs

torch = needs("torch")

import flatopt  # noqa: E402
import flatopt.torch as ft  # noqa: E402

# (flatopt.torch class name, keyword arguments): each against torch.optim's class of that name.
RULES = [
    ("SGD", dict(lr=0.05)),
    ("SGD", dict(lr=0.05, momentum=0.9, weight_decay=1e-3)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True)),
    ("Adam", dict(lr=1e-2)),
    ("Adam", dict(lr=1e-2, weight_decay=1e-2, amsgrad=True)),
    ("AdamW", dict(lr=1e-2)),
    ("AdamW", dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
    ("RAdam", dict(lr=1e-2, eps=1e-10, weight_decay=1e-2)),
    ("Adagrad", dict(lr=5e-2, lr_decay=1e-3, initial_accumulator_value=0.1)),
    ("RMSprop", dict(lr=1e-3)),
    ("RMSprop", dict(lr=1e-3, momentum=0.5, centered=True, weight_decay=1e-3)),
    ("Adamax", dict(lr=1e-2, weight_decay=1e-3)),
    ("NAdam", dict(lr=1e-2)),
    ("NAdam", dict(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True)),
    ("NAdam", dict(lr=1e-2, betas=(0.8, 0.99), weight_decay=1e-2, momentum_decay=1e-2)),
    ("Adadelta", dict(lr=0.5, rho=0.8, weight_decay=1e-3)),
    ("Rprop", dict(lr=1e-3)),
    ("Rprop", dict(lr=1e-3, etas=(0.4, 1.5), step_sizes=(1e-5, 0.1))),
    ("Adafactor", dict(lr=1e-2)),
    ("Adafactor", dict(lr=2e-2, beta2_decay=-0.6, eps=(1e-6, 1e-2), d=2.0, weight_decay=0.1)),
]
IDS = [f"{name}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for name, kw in RULES]


def make_model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(6, 12), torch.nn.Tanh(), torch.nn.Linear(12, 12), torch.nn.Tanh(),
        torch.nn.Linear(12, 1),
    )


def batch(t):
    g = torch.Generator().manual_seed(1000 + t)
    x = torch.randn(16, 6, generator=g)
    return x, x.sum(1, keepdim=True).sin()


def groups(model, kw):
    """Two parameter groups: the weights with the arguments, the biases with half the lr
    and no weight decay."""
    ws = [p for n, p in model.named_parameters() if n.endswith("weight")]
    bs = [p for n, p in model.named_parameters() if n.endswith("bias")]
    return [{"params": ws}, {"params": bs, "lr": kw["lr"] / 2, "weight_decay": 0.0}]


def train_step(model, opt, t):
    x, y = batch(t)
    opt.zero_grad()
    loss = ((model(x) - y) ** 2).mean()
    loss.backward()
    opt.step()
    return loss.item()


def close(a, b, tol):
    return all(
        bool(((p - q).abs() <= tol + tol * q.abs()).all())
        for p, q in zip(a.parameters(), b.parameters())
    )


@pytest.mark.parametrize("name,kw", RULES, ids=IDS)
def test_parity_with_torch_optim_two_groups_and_a_scheduler(name, kw):
    ours, ref = make_model(), make_model()
    opt = getattr(ft, name)(groups(ours, kw), **kw)
    ref_opt = getattr(torch.optim, name)(groups(ref, kw), **kw)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=30, gamma=0.5)
    ref_sched = torch.optim.lr_scheduler.StepLR(ref_opt, step_size=30, gamma=0.5)
    # RAdam's eps sits where PyTorch's bias correction moves it (docs/numerics.md).
    tol = 2e-4 if name == "RAdam" else 2e-5
    for t in range(120):
        train_step(ours, opt, t)
        train_step(ref, ref_opt, t)
        sched.step()
        ref_sched.step()
        assert close(ours, ref, tol), f"step {t}"
    assert [g["lr"] for g in opt.param_groups] == [g["lr"] for g in ref_opt.param_groups]


def test_adamw_loss_curve_matches_torch_within_float32_noise():
    ours, ref = make_model(3), make_model(3)
    opt = ft.AdamW(ours.parameters(), lr=3e-3, weight_decay=0.05)
    ref_opt = torch.optim.AdamW(ref.parameters(), lr=3e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=300)
    ref_sched = torch.optim.lr_scheduler.CosineAnnealingLR(ref_opt, T_max=300)
    for t in range(300):
        a = train_step(ours, opt, t)
        b = train_step(ref, ref_opt, t)
        sched.step()
        ref_sched.step()
        assert abs(a - b) <= 1e-5 + 1e-4 * abs(b), f"step {t}: loss {a} vs {b}"


RESUME = RULES + [("Lookahead", dict(lr=1e-2)),
                  ("Lookahead", dict(base="Adafactor", lr=1e-2, weight_decay=0.1))]


def build(name, model, kw):
    if name == "Lookahead":
        kw = dict(kw)
        base = getattr(ft, kw.pop("base", "AdamW"))
        return ft.Lookahead(base(groups(model, kw), **kw), k=3, alpha=0.5)
    return getattr(ft, name)(groups(model, kw), **kw)


@pytest.mark.parametrize("name,kw", RESUME, ids=IDS + ["Lookahead-AdamW", "Lookahead-Adafactor"])
def test_save_load_continues_bit_for_bit(name, kw, hand_over):
    """Train, torch.save model + optimizer + scheduler, load into fresh objects, continue:
    the same bits as the uninterrupted run."""
    full, part = make_model(), make_model()
    opt_full, opt_part = build(name, full, kw), build(name, part, kw)
    sched_full = torch.optim.lr_scheduler.ExponentialLR(opt_full, 0.97)
    sched_part = torch.optim.lr_scheduler.ExponentialLR(opt_part, 0.97)
    for t in range(17):
        train_step(full, opt_full, t)
        train_step(part, opt_part, t)
        sched_full.step()
        sched_part.step()
    buf = io.BytesIO()
    torch.save({"model": part.state_dict(), "opt": opt_part.state_dict(),
                "sched": sched_part.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    fresh = make_model(7)
    fresh.load_state_dict(ckpt["model"])
    opt_fresh = build(name, fresh, kw)
    sched_fresh = torch.optim.lr_scheduler.ExponentialLR(opt_fresh, 0.97)
    opt_fresh.load_state_dict(ckpt["opt"])
    sched_fresh.load_state_dict(ckpt["sched"])
    for t in range(17, 40):
        train_step(full, opt_full, t)
        train_step(fresh, opt_fresh, t)
        sched_full.step()
        sched_fresh.step()
    for p, q in zip(full.parameters(), fresh.parameters()):
        assert torch.equal(p, q)
    sa, sb = opt_full.state_dict(), opt_fresh.state_dict()
    assert sa["state"].keys() == sb["state"].keys()
    for i in sa["state"]:
        for k in sa["state"][i]:
            assert torch.equal(sa["state"][i][k], sb["state"][i][k]), (i, k)


@pytest.mark.parametrize("name,keys", [
    ("SGD", {"step", "momentum_buffer"}),
    ("Adam", {"step", "exp_avg", "exp_avg_sq"}),
    ("AdamW", {"step", "exp_avg", "exp_avg_sq"}),
    ("RAdam", {"step", "exp_avg", "exp_avg_sq"}),
    ("Adagrad", {"step", "sum"}),
    ("RMSprop", {"step", "square_avg"}),
    ("Adamax", {"step", "exp_avg", "exp_inf"}),
    ("NAdam", {"step", "exp_avg", "exp_avg_sq", "mu_product"}),
    ("Adadelta", {"step", "square_avg", "acc_delta"}),
    ("Rprop", {"step", "prev", "step_size"}),
    ("Adafactor", {"step", "row_var", "col_var"}),  # state[0]: a weight matrix, factored
])
def test_state_dict_has_pytorchs_layout_and_loads_into_torch_optim(name, keys):
    kw = dict(lr=1e-2, momentum=0.9) if name == "SGD" else dict(lr=1e-2)
    ours, ref = make_model(), make_model()
    opt = getattr(ft, name)(ours.parameters(), **kw)
    for t in range(5):
        train_step(ours, opt, t)
    sd = opt.state_dict()
    assert set(sd["state"][0]) == keys
    assert sd["param_groups"][0]["params"] == [0, 1, 2, 3, 4, 5]
    # torch.optim takes it and continues like flatopt, within float32 noise
    ref.load_state_dict(ours.state_dict())
    ref_opt = getattr(torch.optim, name)(ref.parameters(), **kw)
    ref_opt.load_state_dict(sd)
    for t in range(5, 10):
        train_step(ours, opt, t)
        train_step(ref, ref_opt, t)
    assert close(ours, ref, 1e-5)


@pytest.mark.parametrize("name", ["Adam", "Adafactor"])
def test_torch_optim_state_loads_into_flatopt(name):
    ours, ref = make_model(), make_model()
    ref_opt = getattr(torch.optim, name)(ref.parameters(), lr=1e-2)
    for t in range(6):
        train_step(ref, ref_opt, t)
    ours.load_state_dict(ref.state_dict())
    opt = getattr(ft, name)(ours.parameters(), lr=1e-2)
    opt.load_state_dict(ref_opt.state_dict())
    for t in range(6, 20):
        train_step(ours, opt, t)
        train_step(ref, ref_opt, t)
    assert close(ours, ref, 1e-5)


def test_missing_gradients_skip_the_parameter_and_its_state(hand_over):
    """A parameter without gradient keeps its value and state; its own step count lags, as in
    PyTorch (checked against torch.optim.Adam with the same pattern)."""
    torch.manual_seed(0)
    ps = [torch.randn(5, requires_grad=True) for _ in range(4)]
    rs = [p.detach().clone().requires_grad_(True) for p in ps]
    opt = ft.Adam(ps, lr=0.1)
    ref = torch.optim.Adam(rs, lr=0.1)
    for t in range(12):
        with_grad = [i for i in range(4) if (i + t) % 3 != 0 or i == 0]
        for mine, theirs, o in ((ps, None, opt), (rs, None, ref)):
            o.zero_grad()
            for i in with_grad:
                mine[i].grad = torch.full((5,), float(t + i) - 5.0)
        before = {i: ps[i].detach().clone() for i in range(4) if i not in with_grad}
        state_before = opt.state_dict()["state"]
        opt.step()
        ref.step()
        for i, v in before.items():
            assert torch.equal(ps[i], v)
            after = opt.state_dict()["state"].get(i)
            if i in state_before:
                for k in state_before[i]:
                    assert torch.equal(after[k], state_before[i][k])
        for p, r in zip(ps, rs):
            assert torch.allclose(p, r, rtol=1e-5, atol=1e-6)
    steps = {i: int(s["step"]) for i, s in opt.state_dict()["state"].items()}
    assert steps == {i: int(s["step"].item()) for i, s in ref.state_dict()["state"].items()}


def test_frozen_parameters_have_no_state_and_do_not_block_clipping(hand_over):
    model = make_model()
    model[0].weight.requires_grad_(False)
    ref = make_model()
    ref[0].weight.requires_grad_(False)
    opt = ft.AdamW(model.parameters(), lr=1e-2, max_grad_norm=0.1)
    ref_opt = torch.optim.AdamW(ref.parameters(), lr=1e-2)
    for t in range(20):
        train_step(model, opt, t)
        x, y = batch(t)
        ref_opt.zero_grad()
        ((ref(x) - y) ** 2).mean().backward()
        torch.nn.utils.clip_grad_norm_(ref.parameters(), 0.1)
        ref_opt.step()
    assert close(model, ref, 2e-5)
    assert 0 not in opt.state_dict()["state"]


def test_hooks_closure_zero_grad_and_add_param_group():
    model = make_model()
    opt = ft.SGD(list(model[0].parameters()), lr=0.1)
    calls = []
    opt.register_step_pre_hook(lambda o, a, k: calls.append("pre"))
    opt.register_step_post_hook(lambda o, a, k: calls.append("post"))
    x, y = batch(0)

    def closure():
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert isinstance(loss, torch.Tensor) and calls == ["pre", "post"]
    opt.add_param_group({"params": list(model[2].parameters()) + list(model[4].parameters()),
                         "lr": 0.05})
    before = model[4].weight.detach().clone()
    opt.step(closure)
    assert not torch.equal(before, model[4].weight)
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())


# How a step is observed: (name, setup returning what to read after one step, expected).
# flatopt.torch's step wrapper skips PyTorch's profiler range when nothing observes it; each
# way of observing must still see the step.
def _observe_own_hooks(opt):
    calls = []
    opt.register_step_pre_hook(lambda o, a, k: calls.append("pre"))
    opt.register_step_post_hook(lambda o, a, k: calls.append("post"))
    return contextlib.nullcontext(), lambda: calls


def _observe_global_hooks(opt):
    from torch.optim.optimizer import (
        register_optimizer_step_post_hook,
        register_optimizer_step_pre_hook,
    )
    calls = []
    handles = [register_optimizer_step_pre_hook(lambda o, a, k: calls.append("pre")),
               register_optimizer_step_post_hook(lambda o, a, k: calls.append("post"))]

    @contextlib.contextmanager
    def scope():
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    return scope(), lambda: calls


def _observe_profiler(opt):
    prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
    name = f"Optimizer.step#{type(opt).__name__}.step"
    return prof, lambda: [e.name for e in prof.events() if e.name == name][:1]


OBSERVERS = [
    ("own pre and post hooks", _observe_own_hooks, ["pre", "post"]),
    ("global pre and post hooks", _observe_global_hooks, ["pre", "post"]),
    ("profiler range", _observe_profiler, None),
]


@pytest.mark.parametrize("lookahead", [False, True], ids=["base", "lookahead"])
@pytest.mark.parametrize("name, observe, expected", OBSERVERS, ids=[o[0] for o in OBSERVERS])
def test_step_is_observed(name, observe, expected, lookahead):
    model = make_model()
    opt = ft.AdamW(model.parameters(), lr=1e-2)
    if lookahead:
        opt = ft.Lookahead(opt)
    scope, seen = observe(opt)
    x, y = batch(0)
    ((model(x) - y) ** 2).mean().backward()
    before = model[0].weight.detach().clone()
    with scope:
        opt.step()
    assert not torch.equal(before, model[0].weight)
    want = [f"Optimizer.step#{type(opt).__name__}.step"] if expected is None else expected
    assert seen() == want


@pytest.mark.parametrize("on", ["base", "lookahead"])
def test_a_scheduler_sees_the_steps_made_through_lookahead(on):
    """An LR scheduler built on the wrapped optimizer or on the Lookahead notes the steps (no
    "lr_scheduler.step() before optimizer.step()" warning) and drives the learning rate."""
    model = make_model()
    base = ft.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(base, 1, gamma=0.5) if on == "base" else None
    opt = ft.Lookahead(base)
    if sched is None:
        sched = torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5)
    x, y = batch(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(3):
            opt.zero_grad()
            ((model(x) - y) ** 2).mean().backward()
            opt.step()
            sched.step()
    assert base.param_groups[0]["lr"] == 1e-2 * 0.5**3


# (class, arguments, group key, new value): the value changed in both groups after 10 steps,
# in flatopt.torch and in torch.optim alike; the runs stay together.
CHANGES = [
    ("Adam", dict(lr=1e-2), "betas", (0.8, 0.99)),
    ("Adam", dict(lr=1e-2), "eps", 1e-4),
    ("Adam", dict(lr=1e-2, amsgrad=True), "weight_decay", 0.05),
    ("AdamW", dict(lr=1e-2), "weight_decay", 0.3),
    ("AdamW", dict(lr=1e-2), "lr", 3e-3),
    ("SGD", dict(lr=0.05, momentum=0.9), "momentum", 0.5),
    ("SGD", dict(lr=0.05, momentum=0.9), "nesterov", True),
    ("SGD", dict(lr=0.05, momentum=0.9), "momentum", 0.0),  # the state arrays change
    ("RMSprop", dict(lr=1e-3, momentum=0.5), "alpha", 0.9),
    ("Adagrad", dict(lr=5e-2), "eps", 0.1),
    ("Adamax", dict(lr=1e-2), "betas", (0.7, 0.9)),
    ("NAdam", dict(lr=1e-2), "momentum_decay", 0.02),
    ("NAdam", dict(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True), "weight_decay",
     0.02),
    ("Adadelta", dict(lr=0.5), "rho", 0.5),
    ("Rprop", dict(lr=1e-3), "etas", (0.3, 1.1)),
    ("Adafactor", dict(lr=1e-2), "beta2_decay", -0.5),
    ("Adafactor", dict(lr=1e-2), "eps", (1e-5, 1e-2)),
    ("Adafactor", dict(lr=1e-2, weight_decay=0.1), "weight_decay", 0.3),
]


@pytest.mark.parametrize("name,kw,key,value", CHANGES,
                         ids=[f"{c[0]}-{c[2]}" for c in CHANGES])
def test_changed_group_hyperparameters_take_effect_as_in_torch_optim(name, kw, key, value):
    ours, ref = make_model(), make_model()
    opt = getattr(ft, name)(groups(ours, kw), **kw)
    ref_opt = getattr(torch.optim, name)(groups(ref, kw), **kw)
    for t in range(40):
        if t == 10:
            for o in (opt, ref_opt):
                for g in o.param_groups:
                    g[key] = value
        train_step(ours, opt, t)
        train_step(ref, ref_opt, t)
        assert close(ours, ref, 2e-5), f"step {t}"
    if t >= 10 and key not in ("lr", "weight_decay"):
        assert opt.state_dict()["param_groups"][0][key] == value


def test_one_cycle_lr_cycling_momentum_follows_torch_optim():
    ours, ref = make_model(), make_model()
    opt = ft.AdamW(ours.parameters(), lr=1e-2)
    ref_opt = torch.optim.AdamW(ref.parameters(), lr=1e-2)
    scheds = [torch.optim.lr_scheduler.OneCycleLR(o, max_lr=1e-2, total_steps=30)
              for o in (opt, ref_opt)]
    handles = [c.handle for c in opt._cohorts]
    for t in range(30):
        train_step(ours, opt, t)
        train_step(ref, ref_opt, t)
        for s in scheds:
            s.step()
        assert close(ours, ref, 2e-5), f"step {t}"
    assert opt.param_groups[0]["betas"] == ref_opt.param_groups[0]["betas"]
    # the betas went to the library's group (flatopt_optimizer_set_group_base_params), no
    # handle was rebuilt
    assert [c.handle for c in opt._cohorts] == handles


def test_invalid_changed_hyperparameter_is_refused_and_changes_nothing():
    a, b = make_model(), make_model()
    opt_a, opt_b = ft.Adam(a.parameters(), lr=1e-2), ft.Adam(b.parameters(), lr=1e-2)
    for t in range(5):
        train_step(a, opt_a, t)
        train_step(b, opt_b, t)
    opt_a.param_groups[0]["betas"] = (1.5, 0.999)
    with pytest.raises(flatopt.InvalidArgumentError, match="1.5"):
        train_step(a, opt_a, 5)
    opt_a.param_groups[0]["betas"] = (0.9, 0.999)
    for t in range(5, 10):
        train_step(a, opt_a, t)
        train_step(b, opt_b, t)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


def _lion(p, g, st, lr, b1=0.9, b2=0.99, weight_decay=0.0):
    m = st.setdefault("m", torch.zeros_like(p))
    p.mul_(1 - lr * weight_decay)
    p.add_(torch.sign(m * b1 + g * (1 - b1)), alpha=-lr)
    m.mul_(b2).add_(g, alpha=1 - b2)


def _adabelief(p, g, st, lr, b1=0.9, b2=0.999, eps=1e-16, eps_root=1e-16, weight_decay=0.0):
    t = st["t"] = st.get("t", 0) + 1
    m = st.setdefault("m", torch.zeros_like(p))
    s = st.setdefault("s", torch.zeros_like(p))
    g = g + weight_decay * p
    m.mul_(b1).add_(g, alpha=1 - b1)
    s.mul_(b2).addcmul_(g - m, g - m, value=1 - b2).add_(eps_root)
    p.sub_(lr * (m / (1 - b1**t)) / ((s / (1 - b2**t)).sqrt() + eps))


def _yogi(p, g, st, lr, b1=0.9, b2=0.999, eps=1e-3, initial_accumulator=1e-6,
          weight_decay=0.0):
    t = st["t"] = st.get("t", 0) + 1
    m = st.setdefault("m", torch.full_like(p, initial_accumulator))
    v = st.setdefault("v", torch.full_like(p, initial_accumulator))
    g = g + weight_decay * p
    m.mul_(b1).add_(g, alpha=1 - b1)
    v.sub_((1 - b2) * torch.sign(v - g * g) * g * g)
    p.sub_(lr * (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + eps))


def _trust(tc, eps, pn, un):
    return 1.0 if pn == 0 or un == 0 else tc * pn / (un + eps)


def _lamb(p, g, st, lr, b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.0):
    t = st["t"] = st.get("t", 0) + 1
    m = st.setdefault("m", torch.zeros_like(p))
    v = st.setdefault("v", torch.zeros_like(p))
    m.mul_(b1).add_(g, alpha=1 - b1)
    v.mul_(b2).addcmul_(g, g, value=1 - b2)
    u = (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + eps) + weight_decay * p
    r = _trust(1.0, 0.0, float(p.norm()), float(u.norm()))
    p.sub_(lr * r * u)


def _lars(p, g, st, lr, momentum=0.9, weight_decay=0.0, trust_coefficient=1e-3, eps=0.0,
          nesterov=False):
    m = st.setdefault("m", torch.zeros_like(p))
    x = g + weight_decay * p
    s = lr * _trust(trust_coefficient, eps, float(p.norm()), float(x.norm())) * x
    m.mul_(momentum).add_(s)
    p.sub_(s + momentum * m if nesterov else m)


def _novograd(p, g, st, lr, b1=0.9, b2=0.25, eps=1e-6, weight_decay=0.0):
    t = st["t"] = st.get("t", 0) + 1
    m = st.setdefault("m", torch.zeros_like(p))
    ss = float((g.double() ** 2).sum())
    st["nu"] = ss if t == 1 else b2 * st["nu"] + (1 - b2) * ss
    m.mul_(b1).add_(g / (st["nu"] ** 0.5 + eps) + weight_decay * p)
    p.sub_(lr * m)


# flatopt-only rules (no torch.optim class): against the formula written out in torch.
OWN_RULES = [
    ("Lion", _lion, dict(lr=1e-3)),
    ("Lion", _lion, dict(lr=1e-3, b1=0.8, b2=0.9, weight_decay=0.1)),
    ("AdaBelief", _adabelief, dict(lr=1e-2)),
    ("AdaBelief", _adabelief, dict(lr=1e-2, b1=0.8, eps=1e-8, eps_root=1e-12,
                                   weight_decay=1e-2)),
    ("Yogi", _yogi, dict(lr=1e-2)),
    ("Yogi", _yogi, dict(lr=1e-2, b2=0.99, eps=1e-4, initial_accumulator=0.1,
                         weight_decay=1e-3)),
    ("Lamb", _lamb, dict(lr=1e-2, b1=0.9, b2=0.999)),
    ("Lamb", _lamb, dict(lr=1e-2, b1=0.8, b2=0.99, eps=1e-8, weight_decay=1e-2)),
    ("Lars", _lars, dict(lr=1.0)),
    ("Lars", _lars, dict(lr=0.5, momentum=0.8, weight_decay=1e-2, trust_coefficient=1e-2,
                         eps=1e-3, nesterov=True)),
    ("Novograd", _novograd, dict(lr=1e-2, b1=0.9, b2=0.25)),
    ("Novograd", _novograd, dict(lr=1e-2, b1=0.95, b2=0.5, eps=1e-8, weight_decay=1e-2)),
]


@pytest.mark.parametrize("name,rule,kw", OWN_RULES,
                         ids=[f"{r[0]}-{'-'.join(f'{k}={v}' for k, v in r[2].items())}"
                              for r in OWN_RULES])
def test_flatopt_only_rules_follow_their_formula(name, rule, kw):
    ours, ref = make_model(), make_model()
    args = dict(kw)
    if "b1" in args or "b2" in args:
        args["betas"] = (args.pop("b1", 0.9), args.pop("b2", 0.99 if name == "Lion" else 0.999))
    opt = getattr(ft, name)(ours.parameters(), **args)
    states = {p: {} for p in ref.parameters()}
    for t in range(60):
        train_step(ours, opt, t)
        x, y = batch(t)
        ref.zero_grad()
        ((ref(x) - y) ** 2).mean().backward()
        with torch.no_grad():
            for p in ref.parameters():
                rule(p, p.grad, states[p], **kw)
        # Lion's sign makes a rounding difference a full step: looser there.
        assert close(ours, ref, 2e-4 if name == "Lion" else 2e-5), f"step {t}"
    keys = set(opt.state_dict()["state"][0])
    assert keys == {"step", *(k for k in opt._names if k)}


def test_lookahead_fused_matches_the_rule_over_torch_adamw():
    ours, ref = make_model(), make_model()
    opt = ft.Lookahead(ft.AdamW(ours.parameters(), lr=1e-2), k=4, alpha=0.5)
    ref_opt = torch.optim.AdamW(ref.parameters(), lr=1e-2)
    slow = [p.detach().clone() for p in ref.parameters()]
    for t in range(41):
        train_step(ours, opt, t)
        train_step(ref, ref_opt, t)
        if (t + 1) % 4 == 0:
            with torch.no_grad():
                for s, p in zip(slow, ref.parameters()):
                    s.add_(p - s, alpha=0.5)
                    p.copy_(s)
        assert close(ours, ref, 2e-5), f"step {t}"
    assert "lookahead_slow_buff" in opt.state_dict()["state"][0]


def test_grad_scaler_works_and_skips_on_inf(hand_over):
    ours, ref = make_model(), make_model()
    opt = ft.AdamW(ours.parameters(), lr=1e-2)
    ref_opt = torch.optim.AdamW(ref.parameters(), lr=1e-2)
    scalers = [torch.amp.GradScaler("cpu", init_scale=1024.0) for _ in range(2)]
    for t in range(10):
        x, y = batch(t)
        for m, o, s in ((ours, opt, scalers[0]), (ref, ref_opt, scalers[1])):
            o.zero_grad()
            s.scale(((m(x) - y) ** 2).mean()).backward()
            if t == 5:
                next(m.parameters()).grad[0, 0] = float("inf")
            s.step(o)
            s.update()
    assert close(ours, ref, 2e-5)
    assert scalers[0].get_scale() == scalers[1].get_scale() == 512.0


BAD = [
    ("float64", lambda: torch.zeros(3, dtype=torch.float64), flatopt.DTypeError, "float64"),
    ("int64", lambda: torch.zeros(3, dtype=torch.int64), flatopt.DTypeError, "int64"),
    ("complex", lambda: torch.zeros(3, dtype=torch.complex64), flatopt.DTypeError, "complex"),
    ("noncontiguous", lambda: torch.zeros(4, 3).t(), flatopt.LayoutError, "not contiguous"),
    ("sparse", lambda: torch.zeros(4, 3).to_sparse(), flatopt.LayoutError, "sparse"),
    ("meta-device", lambda: torch.zeros(3, device="meta"), flatopt.UnsupportedError, "meta"),
]


@pytest.mark.parametrize("what,make,exc,text", BAD, ids=[b[0] for b in BAD])
def test_bad_parameters_are_refused_naming_the_parameter(what, make, exc, text):
    good = torch.zeros(2, requires_grad=True)
    with pytest.raises(exc, match=text) as info:
        ft.Adam([{"params": [good]}, {"params": [good.new_zeros(1), make()]}])
    assert "param_groups[1]['params'][1]" in str(info.value)


# (what, a gradient the setter takes for a (4, 4) parameter but the step must refuse, words)
BAD_GRADS = [
    ("transposed", lambda: torch.ones(4, 4).t(), "not contiguous"),
    ("expanded (stride 0)", lambda: torch.ones(1, 4).expand(4, 4), "not contiguous"),
    ("a strided slice", lambda: torch.ones(4, 8)[:, ::2], "not contiguous"),
    ("sparse", lambda: torch.ones(4, 4).to_sparse(), "sparse"),
]


@pytest.mark.parametrize("stepped", [False, True], ids=["first step", "after a good step"])
@pytest.mark.parametrize("what, make, words", BAD_GRADS, ids=[b[0] for b in BAD_GRADS])
def test_a_bad_gradient_is_refused_naming_its_parameter_and_nothing_changes(what, make, words,
                                                                          stepped, hand_over):
    q = torch.zeros(3, requires_grad=True)
    p = torch.zeros(4, 4, requires_grad=True)
    opt = ft.SGD([q, p], lr=0.1)
    if stepped:  # the hot path has handed over this parameter's gradients before
        q.grad, p.grad = torch.ones(3), torch.ones(4, 4)
        opt.step()
    q0, p0 = q.detach().clone(), p.detach().clone()
    q.grad = torch.ones(3)
    p.grad = make()
    with pytest.raises(flatopt.LayoutError,
                       match=rf"param_groups\[0\]\['params'\]\[1\].*{words}"):
        opt.step()
    assert torch.equal(q, q0) and torch.equal(p, p0)


def test_moved_parameter_storage_is_followed(hand_over):
    p = torch.zeros(3, requires_grad=True)
    opt = ft.SGD([p], lr=0.5, momentum=0.5)
    p.grad = torch.ones(3)
    opt.step()
    p.data = torch.full((3,), 10.0)
    opt.step()
    assert torch.equal(p.detach(), torch.full((3,), 10.0 - 0.5 * 1.5))


def test_import_flatopt_does_not_import_torch():
    code = "import sys, flatopt; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_example_script_resumes_bit_for_bit():
    from conftest import REPO

    out = subprocess.run([sys.executable, str(REPO / "examples" / "torch" / "train.py")],
                         check=True, capture_output=True, text=True).stdout
    assert "identical to the uninterrupted run: True" in out


def _bad_size(sd):
    sd["state"][0]["exp_avg"] = sd["state"][0]["exp_avg"][:1]


def _negative_v(sd):
    sd["state"][1]["exp_avg_sq"] = -sd["state"][1]["exp_avg_sq"] - 1.0


def _one_group_missing(sd):
    sd["param_groups"] = sd["param_groups"][:0]


def _negative_lr(sd):
    sd["param_groups"][0]["lr"] = -1.0


def _bad_step(sd):
    sd["state"][0]["step"] = torch.tensor(2.5)


def _row_var_shape(sd):
    sd["state"][0]["row_var"] = sd["state"][0]["row_var"].reshape(1, -1)


def _row_var_short(sd):
    sd["state"][0]["row_var"] = sd["state"][0]["row_var"][:-1]


def _variance_of_a_matrix(sd):
    st = sd["state"][0]
    st["variance"] = st.pop("row_var")


def _negative_col_var(sd):
    sd["state"][2]["col_var"] = -sd["state"][2]["col_var"] - 1.0


def _col_var_integers(sd):
    sd["state"][0]["col_var"] = sd["state"][0]["col_var"].to(torch.int32)


# (NaN moments are not refused: with PyTorch's semantics non-finite gradients propagate, so a
# NaN state is one that steps can produce.)
BAD_STATE = [("bad-size", "AdamW", _bad_size, "elements"),
             ("negative-v", "AdamW", _negative_v, None),
             ("no-groups", "AdamW", _one_group_missing, "parameter groups"),
             ("negative-lr", "AdamW", _negative_lr, "lr"),
             ("fractional-step", "AdamW", _bad_step, "step"),
             ("adafactor-row-var-shape", "Adafactor", _row_var_shape, r"\(12, 1\)"),
             ("adafactor-row-var-short", "Adafactor", _row_var_short, "row_var"),
             ("adafactor-variance-of-a-matrix", "Adafactor", _variance_of_a_matrix,
              "row_var and col_var"),
             ("adafactor-negative-col-var", "Adafactor", _negative_col_var, None),
             ("adafactor-integer-col-var", "Adafactor", _col_var_integers, "float32")]


@pytest.mark.parametrize("what,name,spoil,text", BAD_STATE, ids=[b[0] for b in BAD_STATE])
def test_bad_state_dict_is_refused_and_changes_nothing(what, name, spoil, text):
    a, b = make_model(), make_model()
    opt_a, opt_b = (getattr(ft, name)(m.parameters(), lr=1e-2) for m in (a, b))
    for t in range(5):
        train_step(a, opt_a, t)
        train_step(b, opt_b, t)
    sd = opt_a.state_dict()
    spoil(sd)
    with pytest.raises((flatopt.FlatoptError, ValueError), match=text):
        opt_a.load_state_dict(sd)
    for t in range(5, 10):
        train_step(a, opt_a, t)
        train_step(b, opt_b, t)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


def _adafactor_model(seed=0):
    """Parameters of every shape class torch.optim.Adafactor treats: a convolution's kernel
    stack (4-D: factored over its last two dims), a batch of matrices (3-D), a column (5, 1),
    a row (1, 4), a vector, a 0-d scalar."""
    torch.manual_seed(seed)
    return torch.nn.ParameterList([
        torch.nn.Parameter(torch.randn(3, 2, 3, 3)),
        torch.nn.Parameter(torch.randn(2, 3, 4)),
        torch.nn.Parameter(torch.randn(5, 1)),
        torch.nn.Parameter(torch.randn(1, 4)),
        torch.nn.Parameter(torch.randn(7)),
        torch.nn.Parameter(torch.randn(())),
    ])


def _adafactor_loss(ps, t):
    g = torch.Generator().manual_seed(500 + t)
    return sum((p * torch.randn(p.shape, generator=g)).sin().sum() + 0.1 * (p**2).sum()
               for p in ps)


def _adafactor_step(ps, opt, t):
    opt.zero_grad()
    _adafactor_loss(ps, t).backward()
    opt.step()


# (flatopt.torch.Adafactor arguments, the shapes' parity with torch.optim.Adafactor)
ADAFACTOR_SHAPES = [
    dict(lr=1e-2),
    dict(lr=5e-2, beta2_decay=-0.7, eps=(1e-5, 1e-2), d=1.5, weight_decay=0.05),
]


@pytest.mark.parametrize("kw", ADAFACTOR_SHAPES, ids=["defaults", "all-arguments"])
def test_adafactor_factors_each_shape_as_torch_optim_does(kw):
    ours, ref = _adafactor_model(), _adafactor_model()
    opt = ft.Adafactor(ours, **kw)
    ref_opt = torch.optim.Adafactor(ref, **kw)
    scheds = [torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=60) for o in (opt, ref_opt)]
    for t in range(60):
        _adafactor_step(ours, opt, t)
        _adafactor_step(ref, ref_opt, t)
        for s in scheds:
            s.step()
        assert close(ours, ref, 2e-5), f"step {t}"
    sd, ref_sd = opt.state_dict()["state"], ref_opt.state_dict()["state"]
    for i in ref_sd:
        assert sd[i].keys() == ref_sd[i].keys(), i
        for k, v in ref_sd[i].items():
            assert sd[i][k].shape == v.shape, (i, k)
            assert torch.allclose(sd[i][k], v, rtol=1e-4, atol=1e-12), (i, k)
    # flatopt's state dict continues in torch.optim as flatopt does
    ref.load_state_dict(ours.state_dict())
    ref_opt.load_state_dict(opt.state_dict())
    for t in range(60, 70):
        _adafactor_step(ours, opt, t)
        _adafactor_step(ref, ref_opt, t)
    assert close(ours, ref, 2e-5)


def test_lookahead_over_adafactor_matches_the_rule_over_torch_optim():
    ours, ref = _adafactor_model(), _adafactor_model()
    opt = ft.Lookahead(ft.Adafactor(ours, lr=3e-2, weight_decay=0.01), k=3, alpha=0.6)
    ref_opt = torch.optim.Adafactor(ref, lr=3e-2, weight_decay=0.01)
    slow = [p.detach().clone() for p in ref]
    for t in range(51):
        _adafactor_step(ours, opt, t)
        _adafactor_step(ref, ref_opt, t)
        if (t + 1) % 3 == 0:
            with torch.no_grad():
                for s, p in zip(slow, ref):
                    s.add_(p - s, alpha=0.6)
                    p.copy_(s)
        assert close(ours, ref, 2e-5), f"step {t}"
    st = opt.state_dict()["state"][0]
    assert set(st) == {"step", "row_var", "col_var", "lookahead_slow_buff"}


# (arguments torch.optim.Adafactor refuses, words of the error): refused alike.
ADAFACTOR_BAD = [
    (dict(lr=-1.0), "Learning rate"),
    (dict(beta2_decay=0.5), "beta2_decay"),
    (dict(eps=(-1.0, 1e-3)), "epsilon1"),
    (dict(eps=(None, -1e-3)), "epsilon2"),
    (dict(d=0.5), "Clipping threshold"),
    (dict(weight_decay=-0.1), "weight_decay"),
    (dict(eps=(0.0, 1e-3)), "eps"),  # flatopt's own: a zero gradient would divide 0 by 0
    (dict(maximize=True), "maximize"),
]


@pytest.mark.parametrize("kw, words", ADAFACTOR_BAD, ids=[w for _, w in ADAFACTOR_BAD])
def test_adafactor_refuses_what_torch_optim_refuses(kw, words):
    with pytest.raises((flatopt.InvalidArgumentError, flatopt.UnsupportedError), match=words):
        ft.Adafactor(_adafactor_model(), **kw)
