"""Golden trajectories: every case of tests/data/braintools-0.4.0-dev.json (recorded from
braintools 0.4.0 ``Lookahead`` over optax 0.2.8, float32, eager; format in docs/numerics.md,
"The golden file") replayed through the Python API, checked at every step.

Per case and replay mode:
- before every update, ``current_lr`` against ``lr_per_step[t]`` (relative 1e-7);
- every update is applied (returns True) and ``step_count`` counts it;
- after every update, every parameter element: ``|ours - ref| <= 1e-5 + 1e-5*|ref|``;
- after a sync step (``sync_steps``), the params are bit-equal to the slow weights;
- at the end, the slow weights against ``slow_final`` (same tolerance).

Mapping of the configuration (docs/numerics.md, "Differences from braintools, optax and PyTorch"):
``lookahead_lr`` is what braintools ignored, so it is NOT passed as ``Lookahead(lr=...)``; the
learning rate is the base optimizer's (``scheduled_sgd``: ``ExponentialLR(per_update=True)``,
advanced once per update as braintools' run did).

Replay modes: a dict of params with per-call gradients; a list with gradient arrays
registered once (``update()`` without arguments); and the dict mode again on every SIMD tier
with 2 threads, which must be bit-identical to the first.
"""

import json

import numpy as np
import pytest

import flatopt

from conftest import GOLDEN, REPORT

ATOL = 1e-5
RTOL = 1e-5
LR_RTOL = 1e-7


def _f32(values, what, strict=True):
    x64 = np.asarray(values, dtype=np.float64)
    x = x64.astype(np.float32)
    if strict:
        # The file promises the shortest decimals of float32 values: reading them through
        # float64 must then give the same float32 as reading them directly.
        back = np.array([float(str(v)) for v in x.ravel()], dtype=np.float64)
        finite = np.isfinite(x64.ravel())
        assert np.array_equal(back[finite], x64.ravel()[finite]), (
            f"{what}: values that are not shortest float32 decimals"
        )
    return x


def _load():
    with open(GOLDEN) as f:
        data = json.load(f)
    cases = []
    for c in data["cases"]:
        names = c["param_order"]
        shapes = {n: tuple(c["shapes"][n]) for n in names}

        def per_buffer(d, what, names=names, shapes=shapes):
            assert set(d) == set(names), what
            return {n: _f32(d[n], f"{what}.{n}").reshape(shapes[n]) for n in names}

        cases.append(
            dict(
                name=c["name"],
                config=c["config"],
                names=names,
                shapes=shapes,
                init=per_buffer(c["init"], "init"),
                grads=[per_buffer(g, f"grads[{t}]") for t, g in enumerate(c["grads"])],
                params=[per_buffer(p, f"params[{t}]") for t, p in enumerate(c["params"])],
                sync_steps=set(c["sync_steps"]),
                lr_per_step=_f32(c["lr_per_step"], "lr_per_step", strict=False),
                slow_final=None
                if c.get("slow_final") is None
                else per_buffer(c["slow_final"], "slow_final"),
            )
        )
    return data["meta"], cases


META, CASES = _load()


def make_optimizer(cfg, **extra):
    b = cfg["base"]
    kind = b["kind"]
    assert float(b.get("eps_root") or 0.0) == 0.0, "flatopt has no eps_root"
    sgd_kw = dict(
        momentum=b.get("momentum"),
        nesterov=bool(b.get("nesterov") or False),
        dampening=float(b.get("dampening") or 0.0),
    )
    if kind == "sgd":
        base = flatopt.sgd(b["lr"], **sgd_kw)
    elif kind == "adam":
        base = flatopt.adam(b["lr"], b1=b["b1"], b2=b["b2"], eps=b["eps"])
    elif kind == "adamw":
        wd = b.get("weight_decay", b.get("wd"))
        base = flatopt.adamw(b["lr"], b1=b["b1"], b2=b["b2"], eps=b["eps"], weight_decay=wd)
    elif kind == "scheduled_sgd":
        s = b["schedule"]
        assert s["type"] == "ExponentialLR", "only ExponentialLR is mapped"
        assert b.get("lr") is None, "both lr and schedule given"
        assert cfg.get("scheduler_step_after_each_update") is True
        sched = flatopt.ExponentialLR(base_lr=s["base_lr"], gamma=s["gamma"], per_update=True)
        base = flatopt.sgd(sched, **sgd_kw)
    else:
        raise AssertionError(f"base kind {kind!r} is not mapped by this test")
    common = dict(
        weight_decay=float(cfg.get("weight_decay") or 0.0),
        grad_clip_norm=cfg.get("grad_clip_norm"),
        grad_clip_value=cfg.get("grad_clip_value"),
        **extra,
    )
    # cfg["lookahead_lr"] is deliberately not read: braintools ignores it (docs/numerics.md).
    if cfg.get("sync_period") is None:
        return flatopt.Optimizer(base, None, lookahead=False, **common)
    return flatopt.Lookahead(
        base, sync_period=cfg["sync_period"], alpha=cfg["alpha"], **common
    )


def replay(case, mode, **extra):
    """Runs a case; returns (params after each step as {name: array}, lrs, slow)."""
    opt = make_optimizer(case["config"], **extra)
    names = case["names"]
    params = {n: case["init"][n].copy() for n in names}
    if mode == "dict":
        opt.register_trainable_weights(params)
    elif mode == "list-registered":
        grads = [np.zeros(case["shapes"][n], np.float32) for n in names]
        opt.register_trainable_weights([params[n] for n in names], grads=grads)
    else:
        raise AssertionError(mode)
    history, lrs, sync_ok = [], [], []
    for t, g in enumerate(case["grads"]):
        lrs.append(opt.current_lr)
        if mode == "dict":
            applied = opt.update({n: g[n] for n in names})
        else:
            for buf, n in zip(grads, names):
                np.copyto(buf, g[n])
            applied = opt.update()
        assert applied is True, f"{case['name']} step {t + 1}: update skipped"
        assert opt.step_count == t + 1
        history.append({n: params[n].copy() for n in names})
        if isinstance(opt, flatopt.Lookahead) and (t + 1) in case["sync_steps"]:
            slow = opt.slow_weights
            if isinstance(slow, list):
                slow = dict(zip(names, slow))
            sync_ok.append(all(np.array_equal(slow[n].view(np.uint32), params[n].view(np.uint32))
                               for n in names))
    slow = opt.slow_weights if isinstance(opt, flatopt.Lookahead) else None
    if isinstance(slow, list):
        slow = dict(zip(names, slow))
    return history, np.array(lrs, np.float32), sync_ok, slow


def _compare(ours, ref, worst, where):
    ours = ours.astype(np.float64).ravel()
    ref = ref.astype(np.float64).ravel()
    err = np.abs(ours - ref)
    err = np.where(np.isnan(err), np.inf, err)
    tol = ATOL + RTOL * np.abs(ref)
    ratio = err / tol
    i = int(np.argmax(ratio))
    if ratio[i] > worst["ratio"] or not worst["at"]:
        worst["ratio"] = float(ratio[i])
        worst["at"] = f"{where}[{i}]"
    worst["abs"] = max(worst["abs"], float(err.max()))
    worst["checked"] += err.size
    bad = np.flatnonzero(err > tol)
    return [
        f"{where}[{j}]: ours {ours[j]:.9g} ref {ref[j]:.9g} |diff| {err[j]:.3e} > {tol[j]:.3e}"
        for j in bad[:5]
    ]


@pytest.mark.parametrize("mode", ["dict", "list-registered"])
@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_golden_case(case, mode):
    history, lrs, sync_ok, slow = replay(case, mode)
    failures = []
    want_lr = case["lr_per_step"]
    lr_err = np.abs(lrs.astype(np.float64) - want_lr.astype(np.float64))
    for t in np.flatnonzero(lr_err > LR_RTOL * np.abs(want_lr.astype(np.float64))):
        failures.append(f"step {t + 1}: current_lr {lrs[t]!r} but lr_per_step {want_lr[t]!r}")
    worst = dict(ratio=0.0, abs=0.0, at="", checked=0)
    for t, (ours, ref) in enumerate(zip(history, case["params"])):
        for n in case["names"]:
            failures += _compare(ours[n], ref[n], worst, f"step {t + 1} {n}")
    if case["slow_final"] is not None:
        assert slow is not None
        for n in case["names"]:
            failures += _compare(slow[n], case["slow_final"][n], worst, f"slow_final {n}")
    if not all(sync_ok):
        failures.append("after a sync the params are not bit-equal to the slow weights")
    elements = sum(int(np.prod(s)) for s in case["shapes"].values())
    expected = len(case["grads"]) * elements + (elements if case["slow_final"] is not None else 0)
    assert worst["checked"] == expected
    if mode == "dict":
        REPORT.append(
            f"{case['name']:<22} steps {len(case['grads']):>3}  elements {elements:>5}  "
            f"worst |err| {worst['abs']:.3e}  err/tol {worst['ratio']:.4f}  at {worst['at']}"
        )
    assert not failures, f"{case['name']} [{mode}]: {len(failures)} failure(s):\n" + "\n".join(
        failures[:40]
    )


def test_golden_file_covers_every_step():
    steps = META.get("steps")
    assert CASES, "no golden cases"
    for c in CASES:
        assert len(c["grads"]) == len(c["params"]) == len(c["lr_per_step"])
        if steps is not None:
            assert len(c["grads"]) == steps


@pytest.mark.parametrize("tier", flatopt.simd_tiers())
def test_golden_bit_identical_across_tiers_and_threads(tier):
    for case in CASES:
        ref, ref_lrs, _, ref_slow = replay(case, "dict")
        got, lrs, _, slow = replay(case, "dict", simd_tier=tier, num_threads=2)
        assert np.array_equal(ref_lrs.view(np.uint32), lrs.view(np.uint32))
        for a, b in zip(ref, got):
            for n in case["names"]:
                assert np.array_equal(a[n].view(np.uint32), b[n].view(np.uint32)), (
                    f"{case['name']} differs on tier {tier} with 2 threads"
                )
        if ref_slow is not None:
            for n in case["names"]:
                assert np.array_equal(ref_slow[n].view(np.uint32), slow[n].view(np.uint32))
