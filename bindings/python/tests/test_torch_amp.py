"""flatopt.torch with mixed precision: torch.amp.GradScaler handing its scale and found-inf flag
to flatopt's pass (as to PyTorch's fused optimizers), and bfloat16 / float16 parameters with
float32 master weights held by the optimizer (skipped when torch is not installed)."""

import io

import pytest

from conftest import needs

torch = needs("torch")

import flatopt  # noqa: E402
import flatopt.torch as ft  # noqa: E402

HALF = {"bf16": torch.bfloat16, "fp16": torch.float16, "f32": torch.float32}


def make_model(dtype=torch.float32, seed=0, width=12):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(6, width), torch.nn.Tanh(), torch.nn.Linear(width, width),
        torch.nn.Tanh(), torch.nn.Linear(width, 1),
    )
    return model.to(dtype)


def batch(t, n=16):
    g = torch.Generator().manual_seed(1000 + t)
    x = torch.randn(n, 6, generator=g)
    return x, x.sum(1, keepdim=True).sin()


def loss_of(model, t, n=16):
    x, y = batch(t, n)
    dtype = next(model.parameters()).dtype
    return ((model(x.to(dtype)).float() - y) ** 2).mean()


def flat_state(opt):
    sd = opt.state_dict()
    return {(i, k): v.clone() for i, st in sd["state"].items() for k, v in st.items()}


def same_state(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# -- GradScaler against torch.optim.AdamW(fused=True) ------------------------------------------

# (id, gradient dtype, init_scale, steps whose gradients get an inf, wrapper, unscale_ first)
# f32: the same float32 model under both optimizers. fp16: flatopt on a float16 model (its
# float32 masters inside) against fused AdamW on float32 masters of a float16 model whose
# float16 gradients are widened to them, the float16 weights copied back after each step.
SCALER_ROWS = [
    ("f32", "f32", 1024.0, (5,), None, False),
    ("f32-two-infs-in-a-row", "f32", 2.0**16, (3, 4), None, False),
    ("f32-unscale_-first", "f32", 1024.0, (6,), None, True),
    ("f32-lookahead", "f32", 1024.0, (5,), "lookahead", False),
    ("fp16", "fp16", 1024.0, (5,), None, False),
    ("fp16-init-scale-2^16", "fp16", 2.0**16, (2,), None, False),
]


class _Reference:
    """torch.optim.AdamW(fused=True) + GradScaler; for 16-bit models on float32 masters."""

    def __init__(self, dtype, init_scale, lr):
        self.model = make_model(dtype)
        self.dtype = dtype
        params = list(self.model.parameters())
        self.masters = (params if dtype == torch.float32 else
                        [p.detach().float().requires_grad_() for p in params])
        self.opt = torch.optim.AdamW(self.masters, lr=lr, fused=True)
        self.scaler = torch.amp.GradScaler("cpu", init_scale=init_scale)

    def step(self, t, inf, unscale_first):
        self.opt.zero_grad()
        self.model.zero_grad()
        self.scaler.scale(loss_of(self.model, t)).backward()
        params = list(self.model.parameters())
        if inf:
            params[0].grad[0, 0] = float("inf")
        if self.dtype != torch.float32:
            for m, p in zip(self.masters, params):
                m.grad = p.grad.float()
        if unscale_first:
            self.scaler.unscale_(self.opt)
        self.scaler.step(self.opt)
        self.scaler.update()
        if self.dtype != torch.float32:
            with torch.no_grad():
                for m, p in zip(self.masters, params):
                    p.copy_(m)


@pytest.mark.parametrize("row", SCALER_ROWS, ids=[r[0] for r in SCALER_ROWS])
def test_grad_scaler_hands_its_scale_to_flatopt_as_to_fused_adamw(row):
    _, kind, init_scale, infs, wrap, unscale_first = row
    dtype = HALF[kind]
    lr = 1e-2
    ref = _Reference(dtype, init_scale, lr)
    model = make_model(dtype)
    base = ft.AdamW(model.parameters(), lr=lr)
    opt = ft.Lookahead(base, k=3, alpha=0.5) if wrap == "lookahead" else base
    if wrap == "lookahead":  # the same rule on the reference: timm's sync every k-th step
        slow = [m.detach().clone() for m in ref.masters]
    scaler = torch.amp.GradScaler("cpu", init_scale=init_scale)
    done = 0
    for t in range(16):
        before = (flat_state(opt), [p.detach().clone() for p in model.parameters()])
        opt.zero_grad()
        scaler.scale(loss_of(model, t)).backward()
        if t in infs:
            next(model.parameters()).grad[0, 0] = float("inf")
        if unscale_first:
            scaler.unscale_(opt)
        scaler.step(opt)
        scaler.update()
        ref.step(t, t in infs, unscale_first)
        assert scaler.get_scale() == ref.scaler.get_scale(), f"step {t}"
        if t in infs:  # skipped: parameters and state untouched
            assert same_state(flat_state(opt), before[0]), f"step {t}: state changed"
            assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before[1]))
        else:
            done += 1
            if wrap == "lookahead" and done % 3 == 0:
                with torch.no_grad():
                    for s, m in zip(slow, ref.masters):
                        s.add_(m - s, alpha=0.5)
                        m.copy_(s)
        ours = [base._masters.get(p, p) for p in model.parameters()]
        for i, (a, b) in enumerate(zip(ours, ref.masters)):
            assert torch.allclose(a, b, rtol=1e-4, atol=2e-5), f"step {t}, parameter {i}"
    assert scaler.get_scale() < init_scale  # backed off
    steps = opt.state_dict()["state"][0]["step"]
    assert int(steps) == 16 - len(infs)


# (id, model dtype, optimizer keyword arguments, Lookahead, first layer frozen: never, until
# step 3 (then two cohorts step: the all-or-nothing check over both), inf steps)
OWN_SCALER_ROWS = [
    ("f32", "f32", dict(), False, None, (4,)),
    ("f32-clipped", "f32", dict(max_grad_norm=0.5), False, None, (4, 5)),
    ("fp16", "fp16", dict(), False, None, (3,)),
    ("bf16-clipped", "bf16", dict(max_grad_norm=0.5), False, None, (6,)),
    ("f32-lookahead", "f32", dict(), True, None, (4,)),
    ("f32-lookahead-clipped", "f32", dict(max_grad_norm=0.5), True, None, (4,)),
    ("fp16-lookahead", "fp16", dict(), True, None, (3, 5)),
    ("f32-frozen-layer", "f32", dict(), False, "frozen", (4,)),
    ("fp16-frozen-layer", "fp16", dict(), False, "frozen", (2, 7)),
    ("f32-layer-unfrozen-late", "f32", dict(), False, "late", (5,)),
    ("bf16-layer-unfrozen-late", "bf16", dict(), False, "late", (4, 8)),
]


@pytest.mark.parametrize("row", OWN_SCALER_ROWS, ids=[r[0] for r in OWN_SCALER_ROWS])
def test_flatopt_grad_scaler_checks_in_flatopts_pass_with_torchs_bits(row, monkeypatch,
                                                                     hand_over):
    """flatopt.torch.GradScaler: the same bits and scales as torch.amp.GradScaler, without
    GradScaler's own inf/NaN pass over the gradients."""
    _, kind, kw, lookahead, frozen, infs = row
    dtype = HALF[kind]
    runs = []
    for scaler_class in (torch.amp.GradScaler, ft.GradScaler):
        model = make_model(dtype)
        if frozen:  # a layer whose gradients stay None: two cohorts after the first step
            for p in model[0].parameters():
                p.requires_grad_(False)
        opt = ft.AdamW(model.parameters(), lr=1e-2, **kw)
        if lookahead:
            opt = ft.Lookahead(opt, k=3)
        scaler = scaler_class("cpu", init_scale=2.0**12)
        checks = []
        real = torch._amp_foreach_non_finite_check_and_unscale_
        monkeypatch.setattr(torch, "_amp_foreach_non_finite_check_and_unscale_",
                            lambda *a: (checks.append(1), real(*a))[1])
        scales = []
        for t in range(10):
            if frozen == "late" and t == 3:
                for p in model[0].parameters():
                    p.requires_grad_(True)
            opt.zero_grad()
            scaler.scale(loss_of(model, t)).backward()
            if t in infs:
                model[2].weight.grad[1, 1] = float("nan") if t % 2 else float("inf")
            scaler.step(opt)
            scaler.update()
            scales.append(scaler.get_scale())
        monkeypatch.undo()
        runs.append(([p.detach().clone() for p in model.parameters()], flat_state(opt), scales,
                     len(checks)))
    (p0, s0, sc0, n0), (p1, s1, sc1, n1) = runs
    assert all(torch.equal(a, b) for a, b in zip(p0, p1))
    assert same_state(s0, s1)
    assert sc0 == sc1 and sc0[-1] < 2.0**12
    # torch.amp.GradScaler checks in a pass of its own; ours leaves the check to flatopt's
    # pass where that is the norm pass or a scan of 16-bit gradients.
    cheap = "max_grad_norm" in kw or dtype != torch.float32
    assert n0 == 10 and n1 == (0 if cheap else 10)


def test_flatopt_grad_scaler_after_unscale_and_with_other_optimizers_is_torchs():
    for make_opt in (lambda ps: torch.optim.AdamW(ps, lr=1e-2),
                     lambda ps: ft.AdamW(ps, lr=1e-2)):
        runs = []
        for scaler_class in (torch.amp.GradScaler, ft.GradScaler):
            model = make_model()
            opt = make_opt(model.parameters())
            scaler = scaler_class("cpu", init_scale=256.0)
            for t in range(4):
                opt.zero_grad()
                scaler.scale(loss_of(model, t)).backward()
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
                scaler.step(opt)
                scaler.update()
            with pytest.raises(RuntimeError, match="already been called"):
                scaler.scale(loss_of(model, 9)).backward()
                scaler.step(opt)
                scaler.step(opt)
            runs.append([p.detach().clone() for p in model.parameters()])
        assert all(torch.equal(a, b) for a, b in zip(*runs))


def test_grad_scaler_found_inf_skips_even_a_parameter_without_gradient_yet():
    """A skipped step changes nothing, not even the split into cohorts a partial step makes."""
    p, q = torch.zeros(3, requires_grad=True), torch.zeros(2, requires_grad=True)
    opt = ft.SGD([p, q], lr=0.1, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", init_scale=4.0)
    scaler.scale(torch.ones(()))
    p.grad = torch.tensor([4.0, float("nan"), 4.0])
    scaler.step(opt)
    scaler.update()
    assert not p.any() and len(opt._cohorts) == 1 and scaler.get_scale() == 2.0
    p.grad = torch.full((3,), 2.0)
    scaler.step(opt)
    scaler.update()
    assert torch.equal(p.detach(), torch.full((3,), -0.1)) and not q.any()


def test_bad_grad_scale_is_refused_and_changes_nothing():
    p = torch.ones(3, requires_grad=True)
    opt = ft.AdamW([p], lr=0.1)
    p.grad = torch.ones(3)
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        opt.grad_scale = torch.tensor(bad)
        opt.found_inf = torch.tensor(0.0)
        with pytest.raises(flatopt.InvalidArgumentError, match="grad_scale"):
            opt.step()
    assert torch.equal(p.detach(), torch.ones(3)) and opt.state_dict()["state"] == {}


# -- 16-bit parameters ---------------------------------------------------------------------------

# (id, model dtype, optimizer, keyword arguments, GradScaler)
CURVE_ROWS = [
    ("bf16-AdamW", "bf16", "AdamW", dict(lr=5e-3, weight_decay=0.01), False),
    ("fp16-AdamW-GradScaler", "fp16", "AdamW", dict(lr=5e-3, weight_decay=0.01), True),
    ("bf16-SGD-momentum", "bf16", "SGD", dict(lr=0.05, momentum=0.9), False),
    ("bf16-Adam-clipped", "bf16", "Adam", dict(lr=5e-3, max_grad_norm=0.5), False),
]


@pytest.mark.parametrize("row", CURVE_ROWS, ids=[r[0] for r in CURVE_ROWS])
def test_16_bit_model_follows_the_float32_loss_curve(row):
    _, kind, name, kw, use_scaler = row
    dtype = HALF[kind]
    half, full = make_model(dtype, width=32), make_model(width=32)
    opt = getattr(ft, name)(half.parameters(), **kw)
    ref = getattr(ft, name)(full.parameters(), **kw)
    scaler = torch.amp.GradScaler("cpu", enabled=use_scaler)
    curve, ref_curve = [], []
    for t in range(300):
        opt.zero_grad()
        loss = loss_of(half, t, 64)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        ref.zero_grad()
        ref_loss = loss_of(full, t, 64)
        ref_loss.backward()
        ref.step()
        curve.append(loss.item())
        ref_curve.append(ref_loss.item())
        # The model weights are the masters rounded to 16 bits, written in the same pass.
        for p in half.parameters():
            assert p.dtype == dtype
            assert torch.equal(p.detach(), opt._masters[p].to(dtype)), f"step {t}"
    assert ref_curve[-1] < 0.5 * ref_curve[0]  # it learns
    tail = slice(250, 300)
    mean, ref_mean = (sum(c[tail]) / 50 for c in (curve, ref_curve))
    assert abs(mean - ref_mean) <= 0.05 * ref_mean, (mean, ref_mean)
    gap = max(abs(a - b) for a, b in zip(curve, ref_curve))
    assert gap <= 0.1 * max(ref_curve), gap


@pytest.mark.parametrize("kind", ["bf16", "fp16"])
def test_16_bit_state_dict_carries_the_masters_and_resumes_bit_for_bit(kind):
    dtype = HALF[kind]

    def run(model, opt, steps):
        for t in steps:
            opt.zero_grad()
            loss_of(model, t).backward()
            opt.step()

    a = make_model(dtype)
    opt = ft.AdamW(a.parameters(), lr=1e-2)
    run(a, opt, range(5))
    buf = io.BytesIO()
    torch.save({"model": a.state_dict(), "opt": opt.state_dict()}, buf)
    sd = opt.state_dict()
    for i, st in sd["state"].items():
        assert st["master_param"].dtype == torch.float32
        assert st["exp_avg"].dtype == st["exp_avg_sq"].dtype == torch.float32
    run(a, opt, range(5, 10))
    buf.seek(0)
    ck = torch.load(buf)
    b = make_model(dtype, seed=7)
    b.load_state_dict(ck["model"])
    opt_b = ft.AdamW(b.parameters(), lr=1e-2)
    opt_b.load_state_dict(ck["opt"])
    run(b, opt_b, range(5, 10))
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
        assert torch.equal(opt._masters[p], opt_b._masters[q])
    assert same_state(flat_state(opt), flat_state(opt_b))


def test_mixed_float32_and_bf16_parameters_in_one_optimizer(hand_over):
    """A model with some layers in bfloat16 (gradients read as 16 bits, masters inside) and the
    rest in float32 (updated in place): one pass, each as if alone."""
    model = make_model()
    model[2].to(torch.bfloat16)
    model[4].to(torch.bfloat16)

    class Cast(torch.nn.Module):
        def forward(self, x):
            return x.to(torch.bfloat16)

    net = torch.nn.Sequential(model[0], model[1], Cast(), model[2], model[3], model[4])
    ref = make_model()
    ref[2].to(torch.bfloat16)
    ref[4].to(torch.bfloat16)
    ref_net = torch.nn.Sequential(ref[0], ref[1], Cast(), ref[2], ref[3], ref[4])
    opt = ft.Adam(net.parameters(), lr=1e-2)
    # The reference: flatopt's NumPy-level mixed API is not used here; torch.optim.Adam on
    # float32 masters of the bf16 layers with their widened gradients.
    params = list(ref_net.parameters())
    masters = [p if p.dtype == torch.float32 else p.detach().float().requires_grad_()
               for p in params]
    ref_opt = torch.optim.Adam(masters, lr=1e-2)
    for t in range(20):
        for n, o in ((net, opt), (ref_net, None)):
            n.zero_grad()
            x, y = batch(t)
            ((n(x).float() - y) ** 2).mean().backward()
        for m, p in zip(masters, params):
            if m is not p:
                m.grad = p.grad.float()
        opt.step()
        ref_opt.step()
        with torch.no_grad():
            for m, p in zip(masters, params):
                if m is not p:
                    p.copy_(m)
        for p, q, m in zip(net.parameters(), params, masters):
            assert p.dtype == q.dtype
            mine = opt._masters.get(p, p)
            assert torch.allclose(mine, m, rtol=1e-4, atol=2e-5), f"step {t}"
    assert not any(p.dtype == torch.float32 for p in opt._masters)


@pytest.mark.parametrize("kind", ["bf16", "fp16"])
def test_16_bit_lookahead_slow_weights_start_at_the_masters(kind):
    dtype = HALF[kind]
    model = make_model(dtype)
    base = ft.AdamW(model.parameters(), lr=1e-2)
    opt = ft.Lookahead(base, k=2, alpha=0.5)
    for t in range(6):
        opt.zero_grad()
        loss_of(model, t).backward()
        opt.step()
        for p in model.parameters():
            assert torch.equal(p.detach(), base._masters[p].to(dtype))
    sd = opt.state_dict()["state"][0]
    assert sd["lookahead_slow_buff"].dtype == torch.float32
    # after the sync of step 6 the slow weights are the masters
    assert torch.equal(sd["lookahead_slow_buff"], sd["master_param"])


def test_torch_optim_state_loads_into_a_bf16_model_without_casting():
    full = make_model()
    ref = torch.optim.AdamW(full.parameters(), lr=1e-2)
    for t in range(3):
        ref.zero_grad()
        loss_of(full, t).backward()
        ref.step()
    half = make_model(torch.bfloat16)
    half.load_state_dict(full.state_dict())
    opt = ft.AdamW(half.parameters(), lr=1e-2)
    opt.load_state_dict(ref.state_dict())
    sd = opt.state_dict()
    for i, p in enumerate(full.parameters()):
        st, ref_st = sd["state"][i], ref.state[p]
        assert torch.equal(st["exp_avg"], ref_st["exp_avg"])  # float32 kept, not cast to bf16
        # no masters saved: taken from the (rounded) model weights
        assert torch.equal(st["master_param"], p.detach().to(torch.bfloat16).float())


BAD_MASTERS = [
    ("wrong-size", lambda m: m[:1], "elements"),
    ("not-a-tensor", lambda m: 3.0, "master_param"),
    ("integer-tensor", lambda m: m.to(torch.int32), "master_param"),
]


@pytest.mark.parametrize("what,spoil,text", BAD_MASTERS, ids=[b[0] for b in BAD_MASTERS])
def test_bad_master_weights_are_refused_and_change_nothing(what, spoil, text):
    model = make_model(torch.bfloat16)
    opt = ft.AdamW(model.parameters(), lr=1e-2)
    for t in range(2):
        opt.zero_grad()
        loss_of(model, t).backward()
        opt.step()
    good = opt.state_dict()
    bad = opt.state_dict()
    bad["state"][1]["master_param"] = spoil(bad["state"][1]["master_param"])
    weights = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(flatopt.CheckpointError, match=text):
        opt.load_state_dict(bad)
    assert all(torch.equal(p, w) for p, w in zip(model.parameters(), weights))
    after = opt.state_dict()
    assert all(torch.equal(after["state"][i][k], v)
               for i, st in good["state"].items() for k, v in st.items())


def test_moved_16_bit_parameter_takes_its_new_values_as_masters(hand_over):
    p = torch.zeros(3, dtype=torch.bfloat16, requires_grad=True)
    opt = ft.SGD([p], lr=0.5)
    p.grad = torch.ones(3, dtype=torch.bfloat16)
    opt.step()
    p.data = torch.full((3,), 10.0, dtype=torch.bfloat16)
    p.grad = torch.ones(3, dtype=torch.bfloat16)
    opt.step()
    assert torch.equal(p.detach(), torch.full((3,), 9.5, dtype=torch.bfloat16))
    assert torch.equal(opt._masters[p], torch.full((3,), 9.5))


def test_amp_example_script_trains_resumes_and_matches_torch_optim():
    """examples/torch/train_amp.py: autocast, GradScaler, OneCycleLR, torch.save, the import
    line the only change; the bf16 model reaches the float32 run's accuracy."""
    import re
    import subprocess
    import sys

    from conftest import REPO

    out = subprocess.run([sys.executable, str(REPO / "examples" / "torch" / "train_amp.py")],
                         check=True, capture_output=True, text=True).stdout
    assert "identical to the uninterrupted run: True" in out, out
    acc = dict(re.findall(r"^(flatopt.torch.AdamW|torch.optim.AdamW|bfloat16 model).*?"
                          r"test accuracy ([0-9.]+)", out, re.M))
    assert len(acc) == 3, out
    ours, ref, half = (float(acc[k]) for k in
                       ("flatopt.torch.AdamW", "torch.optim.AdamW", "bfloat16 model"))
    assert ref > 0.85, out  # the task is learned
    assert abs(ours - ref) <= 0.01 and abs(half - ref) <= 0.02, out


def test_parameter_changing_between_float32_and_bf16_is_followed(hand_over):
    """p.data = ... of another precision: re-registered as that precision, state kept."""
    p = torch.zeros(3, requires_grad=True)
    opt = ft.SGD([p], lr=0.5, momentum=0.5)
    p.grad = torch.ones(3)
    opt.step()  # p = -0.5, momentum buffer 1
    p.data = p.data.to(torch.bfloat16)
    p.grad = torch.ones(3, dtype=torch.bfloat16)
    opt.step()  # buffer 1.5, p = -0.5 - 0.75
    assert p.dtype == torch.bfloat16 and torch.equal(opt._masters[p], torch.full((3,), -1.25))
    p.data = torch.full((3,), 2.0)
    p.grad = torch.ones(3)
    opt.step()  # buffer 1.75, p = 2 - 0.875
    assert p not in opt._masters and torch.equal(p.detach(), torch.full((3,), 1.125))
    assert "master_param" not in opt.state_dict()["state"][0]


# (id, how the 16-bit weights are written after the optimizer was built)
REWRITES = [
    ("model.load_state_dict", lambda model, new: model.load_state_dict(new.state_dict())),
    ("copy_ under no_grad", lambda model, new: [p.copy_(q) for p, q in
                                                zip(model.parameters(), new.parameters())]),
    ("torch.nn.init", lambda model, new: [torch.nn.init.constant_(p, 0.25)
                                          for p in model.parameters()]),
]


@pytest.mark.parametrize("what,write", REWRITES, ids=[r[0] for r in REWRITES])
def test_16_bit_weights_written_in_place_become_the_masters(what, write, hand_over):
    """E.g. pretrained weights loaded after the optimizer was built: the next step starts from
    them (the parameters' version counters tell), not from stale masters."""
    model, new = make_model(torch.bfloat16), make_model(torch.bfloat16, seed=5)
    opt = ft.SGD(model.parameters(), lr=0.0)
    handle = opt._cohorts[0].handle
    for t in range(2):
        if t == 1:
            with torch.no_grad():
                write(model, new)
        expect = [p.detach().clone() for p in model.parameters()]
        opt.zero_grad()
        loss_of(model, t).backward()
        opt.step()
        assert all(torch.equal(p, e) for p, e in zip(model.parameters(), expect)), t
        assert all(torch.equal(opt._masters[p], e.float()) for p, e in
                   zip(model.parameters(), expect))
    assert opt._cohorts[0].handle is handle  # masters refreshed in place, not re-registered


def test_16_bit_weights_moved_and_written_in_place_in_one_step(hand_over):
    p = torch.zeros(3, dtype=torch.bfloat16, requires_grad=True)
    q = torch.zeros(2, dtype=torch.bfloat16, requires_grad=True)
    opt = ft.SGD([p, q], lr=0.5)
    p.grad, q.grad = torch.ones(3, dtype=torch.bfloat16), torch.ones(2, dtype=torch.bfloat16)
    opt.step()
    p.data = torch.full((3,), 4.0, dtype=torch.bfloat16)  # moved
    with torch.no_grad():
        q.fill_(8.0)  # written in place
    p.grad, q.grad = torch.ones(3, dtype=torch.bfloat16), torch.ones(2, dtype=torch.bfloat16)
    opt.step()
    assert torch.equal(p.detach().float(), torch.full((3,), 3.5))
    assert torch.equal(q.detach().float(), torch.full((2,), 7.5))
    assert torch.equal(opt._masters[q], torch.full((2,), 7.5))
