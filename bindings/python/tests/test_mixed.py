"""Mixed precision: 16-bit gradients (NumPy float16, ml_dtypes.bfloat16, PyTorch bf16 / fp16
CPU tensors), 16-bit copies of the parameters, ``update(grad_scale=...)`` and
:class:`flatopt.DynamicLossScale`. Every mixed run is checked bit for bit against a float32
run given the widened (and divided) gradients, and every copy against the narrowed parameters.
The bf16 rows need ml_dtypes (a dependency of the mixed-precision path only) and the tensor
rows torch: each prints a skip with the reason where it is missing."""

import copy
import importlib
import pickle

import numpy as np
import pytest

import flatopt

from conftest import REQUIRE_EXTRAS


def _optional(module):
    try:
        return importlib.import_module(module)
    except ImportError as e:
        return e


ML = _optional("ml_dtypes")
TORCH = _optional("torch")


def _need(mod, name):
    if isinstance(mod, ImportError):
        reason = (
            f"{name} is not installed ({mod}); pip install \"./bindings/python[mixed]\" "
            "(ml_dtypes) or \"[torch]\""
        )
        if REQUIRE_EXTRAS:
            pytest.fail(f"FLATOPT_REQUIRE_EXTRAS is set but {reason}", pytrace=False)
        pytest.skip(reason)
    return mod


def _bf16():
    return _need(ML, "ml_dtypes").bfloat16


# Independent references of the conversions: NumPy's float16 cast rounds to nearest even (the
# IEEE rule); bf16 by integer arithmetic on the f32 bits (round to nearest even).
def widen(h):
    return np.asarray(h).astype(np.float32)


def narrow_bf16_bits(x):
    b = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    rounded = (b + 0x7FFF + ((b >> 16) & 1)) >> 16
    nan = np.isnan(np.asarray(x, np.float32))
    out = rounded.astype(np.uint16)
    out[nan] = ((b[nan] >> 16) | 0x40).astype(np.uint16)
    return out


def narrowed_bits(kind, x):
    if kind == "float16":
        return np.asarray(x, np.float32).astype(np.float16).view(np.uint16)
    return narrow_bf16_bits(x)


def make_half(kind, x):
    """16-bit gradients of the row's kind holding x rounded (numpy float16, ml_dtypes bf16,
    torch bf16 / fp16)."""
    if kind == "float16":
        return np.asarray(x, np.float32).astype(np.float16)
    if kind == "bfloat16":
        return narrow_bf16_bits(x).view(_bf16())
    torch = _need(TORCH, "torch")
    dt = torch.bfloat16 if kind == "torch.bfloat16" else torch.float16
    return torch.from_numpy(np.asarray(x, np.float32)).to(dt)


def as_f32(h):
    if hasattr(h, "float") and not isinstance(h, np.ndarray):
        return h.float().numpy()
    return widen(h)


def bits(h):
    if hasattr(h, "view") and not isinstance(h, np.ndarray):
        import torch

        return h.view(torch.int16).numpy().view(np.uint16)
    return np.asarray(h).view(np.uint16)


def empty_like_kind(kind, shape):
    if kind == "float16":
        return np.zeros(shape, np.float16)
    if kind == "bfloat16":
        return np.zeros(shape, _bf16())
    torch = _need(TORCH, "torch")
    return torch.zeros(shape, dtype=torch.bfloat16 if kind == "torch.bfloat16" else torch.float16)


def base_kind(kind):
    return "float16" if kind in ("float16", "torch.float16") else "bfloat16"


KINDS = ["float16", "bfloat16", "torch.bfloat16", "torch.float16"]


def pair(seed, n=(37, 4100)):
    rng = np.random.default_rng(seed)
    params = {"w": rng.standard_normal(n[1]).astype(np.float32),
              "b": rng.standard_normal(n[0]).astype(np.float32)}
    ref = {k: v.copy() for k, v in params.items()}
    return rng, params, ref


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("registered", [True, False], ids=["registered grads", "per-call grads"])
def test_16bit_grads_and_copies_match_float32(kind, registered):
    rng, params, ref = pair(1)
    opt = flatopt.Lookahead(flatopt.adam(1e-2), sync_period=3, grad_clip_norm=30.0)
    plain = flatopt.Lookahead(flatopt.adam(1e-2), sync_period=3, grad_clip_norm=30.0)
    shapes = {k: v.shape for k, v in params.items()}
    grads = {k: make_half(kind, np.zeros(s, np.float32)) for k, s in shapes.items()}
    copies = {k: empty_like_kind(base_kind(kind) if not kind.startswith("torch") else kind, s)
              for k, s in shapes.items()}
    if registered:
        opt.register_trainable_weights(params, grads=grads, copies=copies)
    else:
        opt.register_trainable_weights(params, copies=copies, grad_dtype=base_kind(kind))
    ref_grads = {k: np.zeros(s, np.float32) for k, s in shapes.items()}
    plain.register_trainable_weights(ref, grads=ref_grads)
    for k in params:
        assert np.array_equal(bits(copies[k]), narrowed_bits(base_kind(kind), params[k]))
    for t in range(6):
        new = {k: make_half(kind, rng.standard_normal(s) * 3) for k, s in shapes.items()}
        for k in params:
            ref_grads[k][...] = as_f32(new[k])
            if registered:
                bits(grads[k])[...] = bits(new[k])
        applied = opt.update() if registered else opt.update(new)
        assert applied and plain.update()
        for k in params:
            assert np.array_equal(params[k].view(np.uint32), ref[k].view(np.uint32)), (t, k)
            assert np.array_equal(bits(copies[k]), narrowed_bits(base_kind(kind), params[k]))


@pytest.mark.parametrize("scale", [1024.0, 1000.0, 0.5])
def test_grad_scale_divides_before_clipping(scale):
    rng, params, ref = pair(2)
    opt = flatopt.Adam(lr=1e-2, grad_clip_norm=1.0)
    plain = flatopt.Adam(lr=1e-2, grad_clip_norm=1.0)
    opt.register_trainable_weights(params, grad_dtype="float16")
    plain.register_trainable_weights(ref)
    for _ in range(3):
        g = {k: (rng.standard_normal(v.shape) * 100).astype(np.float16) for k, v in params.items()}
        assert opt.update(g, grad_scale=scale)
        assert plain.update({k: widen(v) / np.float32(scale) for k, v in g.items()})
    for k in params:
        assert np.array_equal(params[k].view(np.uint32), ref[k].view(np.uint32))


def test_dynamic_loss_scale_rules_and_state():
    rng, params, ref = pair(3, (8, 64))
    grads = {k: np.zeros(v.shape, np.float16) for k, v in params.items()}
    copies = {k: np.zeros(v.shape, np.float16) for k, v in params.items()}
    opt = flatopt.Adam(lr=1e-2)
    scaler = flatopt.DynamicLossScale(init_scale=1024.0, growth_interval=2)
    assert scaler.scale == 1024.0 and scaler.growth_tracker == 0
    opt.loss_scale = scaler
    opt.register_trainable_weights(params, grads=grads, copies=copies)
    assert opt.loss_scale is scaler
    seen = []
    for t in range(5):
        for k, v in grads.items():
            v[...] = (rng.standard_normal(v.shape) * 10).astype(np.float16)
        if t == 2:
            grads["w"][3] = np.float16(np.inf)
        before = {k: v.copy() for k, v in params.items()}
        cbefore = {k: v.copy() for k, v in copies.items()}
        applied = opt.update()
        seen.append((applied, scaler.scale, scaler.growth_tracker, scaler.found_inf))
        if not applied:
            for k in params:
                assert np.array_equal(before[k], params[k]) and np.array_equal(cbefore[k], copies[k])
    assert seen == [(True, 1024.0, 1, False), (True, 2048.0, 0, False), (False, 1024.0, 0, True),
                    (True, 1024.0, 1, False), (True, 2048.0, 0, False)]
    assert opt.skipped_count == 1
    assert scaler.scale_loss(2.0) == 4096.0
    sd = scaler.state_dict()
    assert sd == {"scale": 2048.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                  "growth_interval": 2, "_growth_tracker": 0}
    state = opt.state_dict()
    assert state["loss_scale"] == sd
    assert state["checkpoint"][8] == 3  # checkpoint format 3: the scaler is in it

    # Resumed: another optimizer with a scaler loads the state and continues bit-identically.
    p2 = {k: v.copy() for k, v in params.items()}
    c2 = {k: np.zeros(v.shape, np.float16) for k, v in params.items()}
    again = flatopt.Adam(lr=1e-2)
    again.register_trainable_weights(p2, grads=grads, copies=c2)
    with pytest.raises(flatopt.FlatoptError, match="loss scaler"):
        again.load_state_dict(state)
    again.loss_scale = flatopt.DynamicLossScale(init_scale=8.0, growth_interval=2)
    again.load_state_dict(state)
    assert again.loss_scale.scale == 2048.0
    for k, v in grads.items():
        v[...] = (rng.standard_normal(v.shape)).astype(np.float16)
    assert opt.update() and again.update()
    for k in params:
        assert np.array_equal(params[k], p2[k]) and np.array_equal(copies[k], c2[k])

    # Copies and pickles carry the scaler, the copies and the state.
    for clone in (copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))):
        assert clone.loss_scale.scale == opt.loss_scale.scale
        assert clone.state_dict()["checkpoint"] == opt.state_dict()["checkpoint"]

    # GradScaler-style restore of the scale and the tracker.
    scaler.load_state_dict(dict(sd, scale=64.0, _growth_tracker=1))
    assert scaler.scale == 64.0 and scaler.growth_tracker == 1
    with pytest.raises(flatopt.InvalidArgumentError, match="growth_interval"):
        scaler.load_state_dict(dict(sd, growth_interval=7))
    with pytest.raises(flatopt.FlatoptError, match="dynamic loss scaler"):
        opt.update(grad_scale=2.0)
    opt.loss_scale = None
    assert scaler._opt is None
    assert opt.update(grad_scale=2.0)


def test_ml_dtypes_bfloat16_registered_and_torch_bf16_model():
    bf16 = _bf16()
    torch = _need(TORCH, "torch")
    # A bf16 model: its weights are the copy, its gradients the bf16 grads (torch autograd).
    rng = np.random.default_rng(4)
    master = rng.standard_normal((8, 3)).astype(np.float32)
    model_w = torch.zeros(8, 3, dtype=torch.bfloat16, requires_grad=True)
    opt = flatopt.Adam(lr=5e-2)
    opt.register_trainable_weights([master], copies=[model_w], grad_dtype="bfloat16")
    assert torch.equal(model_w.detach(), torch.from_numpy(master).to(torch.bfloat16))
    x = torch.randn(32, 8).to(torch.bfloat16)
    y = (x.float() @ torch.ones(8, 3)).to(torch.bfloat16)
    first = None
    for _ in range(60):
        model_w.grad = None
        loss = ((x @ model_w - y).float() ** 2).mean()
        loss.backward()
        first = first if first is not None else float(loss.detach())
        assert opt.update([model_w.grad])
        assert torch.equal(model_w.detach(), torch.from_numpy(master).to(torch.bfloat16))
    assert float(loss.detach()) < 0.2 * first
    # ml_dtypes arrays are viewed in place too (registered gradients).
    g = np.zeros(5, bf16)
    w = np.ones(5, np.float32)
    o2 = flatopt.SGD(lr=0.5)
    o2.register_trainable_weights([w], grads=[g])
    g[...] = np.array([1, 2, 3, 4, 0.5], np.float32).astype(bf16)
    assert o2.update()
    assert np.array_equal(w, np.float32([0.5, 0, -0.5, -1, 0.75]))


def test_numpy_bf16_model_example_reaches_the_float32_accuracy():
    """examples/python/bf16_model.py: a NumPy model kept in ml_dtypes bf16, flatopt holding the
    f32 masters and writing the model's weights in its pass, ends within a point of test
    accuracy of the same training in float32 (the script checks the weights after every run)."""
    import re
    import subprocess
    import sys

    from conftest import REPO

    _bf16()
    out = subprocess.run([sys.executable, str(REPO / "examples" / "python" / "bf16_model.py")],
                         check=True, capture_output=True, text=True).stdout
    m = re.search(r"^mean: float32 ([0-9.]+), bf16 ([0-9.]+): reaches", out, re.M)
    assert m, out
    a32, a16 = float(m.group(1)), float(m.group(2))
    assert a32 > 0.9 and a16 >= a32 - 0.01, out


BAD = [
    ("float64 gradients", lambda p: dict(grads=[np.zeros(4)]), flatopt.DTypeError, "float64"),
    ("int16 copy", lambda p: dict(copies=[np.zeros(4, np.int16)]), flatopt.DTypeError, "int16"),
    ("a list as a copy", lambda p: dict(copies=[[0.0] * 4]), flatopt.DTypeError, "16-bit"),
    ("float32 copy", lambda p: dict(copies=[np.zeros(4, np.float32)]), flatopt.DTypeError,
     "16-bit"),
    ("copy of another shape", lambda p: dict(copies=[np.zeros(5, np.float16)]),
     flatopt.StructureError, "shape"),
    ("read-only copy", lambda p: dict(copies=[_readonly()]), flatopt.LayoutError, "read-only"),
    ("non-contiguous copy", lambda p: dict(copies=[np.zeros(8, np.float16)[::2]]),
     flatopt.LayoutError, "contiguous"),
    ("copy is the parameter's memory", lambda p: dict(copies=[p[0].view(np.float16)[:4]]),
     flatopt.OverlapError, "share memory"),
    ("copy is the gradient", lambda p: dict(grads=[_g16], copies=[_g16]),
     flatopt.OverlapError, "share memory"),
    ("grad_dtype unknown", lambda p: dict(grad_dtype="float8"), flatopt.InvalidArgumentError,
     "grad_dtype"),
    ("grad_dtype disagrees with the gradients", lambda p: dict(grads=[np.zeros(4, np.float16)],
                                                               grad_dtype="bfloat16"),
     flatopt.DTypeError, "grad_dtype"),
]
_g16 = np.zeros(4, np.float16)


def _readonly():
    a = np.zeros(4, np.float16)
    a.flags.writeable = False
    return a


@pytest.mark.parametrize("what,kwargs,exc,needle", BAD, ids=[b[0] for b in BAD])
def test_bad_registration_changes_nothing(what, kwargs, exc, needle):
    p = [np.arange(4, dtype=np.float32)]
    opt = flatopt.Adam(lr=0.1)
    opt.register_trainable_weights([np.ones(4, np.float32)])
    before = opt.state_dict()["checkpoint"]
    with pytest.raises(exc, match=needle):
        opt.register_trainable_weights(p, **kwargs(p))
    assert opt.state_dict()["checkpoint"] == before
    assert np.array_equal(p[0], np.arange(4, dtype=np.float32))


BAD_UPDATE = [
    ("grad_scale NaN", dict(grad_scale=float("nan")), flatopt.InvalidArgumentError, "grad_scale"),
    ("grad_scale 0", dict(grad_scale=0.0), flatopt.InvalidArgumentError, "grad_scale"),
    ("grad_scale -1", dict(grad_scale=-1.0), flatopt.InvalidArgumentError, "grad_scale"),
    ("grad_scale 1e39 (inf as float32)", dict(grad_scale=1e39), flatopt.InvalidArgumentError,
     "grad_scale"),
    ("grad_scale a string", dict(grad_scale="2"), flatopt.ArgumentTypeError, "grad_scale"),
    ("float32 gradients for float16", dict(grads=[np.zeros(4, np.float32)]), flatopt.DTypeError,
     "float16"),
    ("gradients of another shape", dict(grads=[np.zeros(3, np.float16)]),
     flatopt.StructureError, "shape"),
]


@pytest.mark.parametrize("what,kwargs,exc,needle", BAD_UPDATE, ids=[b[0] for b in BAD_UPDATE])
def test_bad_update_changes_nothing(what, kwargs, exc, needle):
    p = [np.arange(4, dtype=np.float32)]
    c = [np.zeros(4, np.float16)]
    opt = flatopt.Adam(lr=0.1)
    opt.register_trainable_weights(p, copies=c, grad_dtype="float16")
    before = (p[0].copy(), c[0].copy(), opt.state_dict()["checkpoint"])
    kwargs = dict(kwargs)
    kwargs.setdefault("grads", [np.ones(4, np.float16)])
    with pytest.raises(exc, match=needle):
        opt.update(**kwargs)
    assert np.array_equal(p[0], before[0]) and np.array_equal(c[0], before[1])
    assert opt.state_dict()["checkpoint"] == before[2]


@pytest.mark.parametrize("kw,needle", [
    (dict(init_scale=0.0), "init_scale"), (dict(init_scale=float("inf")), "init_scale"),
    (dict(growth_factor=1.0), "growth_factor"), (dict(backoff_factor=1.0), "backoff_factor"),
    (dict(backoff_factor=0.0), "backoff_factor"), (dict(growth_interval=0), "growth_interval"),
    (dict(init_scale=1e39), "init_scale"),
])
def test_dynamic_loss_scale_refuses(kw, needle):
    with pytest.raises(flatopt.InvalidArgumentError, match=needle):
        flatopt.DynamicLossScale(**kw)


def test_loss_scale_must_be_a_dynamic_loss_scale():
    opt = flatopt.Adam(lr=0.1)
    with pytest.raises(flatopt.DTypeError, match="DynamicLossScale"):
        opt.loss_scale = 1024.0
    s = flatopt.DynamicLossScale()
    opt.loss_scale = s
    with pytest.raises(flatopt.InvalidStateError, match="another optimizer"):
        flatopt.Adam(lr=0.1).loss_scale = s
