"""Bad input: a table of (description, call, expected exception type, message substring).

Every row runs against a Lookahead(Adam) optimizer that is registered (dict params w, b, v
with per-call gradients, or the list variant) and has done 3 updates, next to a twin that
never sees the bad call. After the bad call raises:
- the params are bit-identical to before, and so are step_count, the slow weights and (with
  checkpoints) the whole library state (``state_dict()['checkpoint']``);
- two more valid updates on both optimizers give bit-identical params: nothing changed.
Construction errors are a second table (no optimizer exists afterwards).
"""

import numpy as np
import pytest

import flatopt

from conftest import HAS_CHECKPOINTS, grad_stream

SHAPES = {"w": (4, 3), "b": (3,), "v": (4, 3)}


def _params():
    rng = np.random.default_rng(7)
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()}


def _make(as_list=False, nonfinite="skip"):
    opt = flatopt.Lookahead(flatopt.adam(1e-2), sync_period=2, alpha=0.5, grad_clip_norm=10.0,
                            nonfinite=nonfinite)
    params = _params()
    opt.register_trainable_weights(list(params.values()) if as_list else params)
    g = grad_stream(list(SHAPES.values()), seed=3)
    for t in range(3):
        gs = g(t)
        opt.update(gs if as_list else dict(zip(SHAPES, gs)))
    return opt, params, g


def _snapshot(opt, params):
    snap = {
        "params": {k: v.copy() for k, v in params.items()},
        "step_count": opt.step_count,
        "slow": opt.slow_weights,
    }
    if HAS_CHECKPOINTS:
        snap["checkpoint"] = opt.state_dict()["checkpoint"]
    return snap


def _bits(a):
    return np.ascontiguousarray(a).view(np.uint32)


# Each row: (description, bad(opt, params) -> None, exception type, message substring,
#            options). The bad call receives the registered optimizer and its params dict.
F32 = np.float32


def _g(**over):
    g = {k: np.ones(s, F32) for k, s in SHAPES.items()}
    g.update(over)
    return g


def _noncontig():
    return np.ones((4, 6), F32)[:, ::2]


def _readonly():
    a = np.ones((4, 3), F32)
    a.flags.writeable = False
    return a


UPDATE_ROWS = [
    ("grad float64", lambda o, p: o.update(_g(w=np.ones((4, 3)))),
     flatopt.DTypeError, "dtype float64, expected float32", {}),
    ("grad float16", lambda o, p: o.update(_g(b=np.ones(3, np.float16))),
     TypeError, "expected float32", {}),
    ("grad big-endian float32", lambda o, p: o.update(_g(b=np.ones(3, ">f4"))),
     flatopt.DTypeError, "non-native byte order", {}),
    ("grad non-contiguous", lambda o, p: o.update(_g(w=_noncontig())),
     flatopt.LayoutError, "not C-contiguous", {}),
    ("grad Fortran order", lambda o, p: o.update(_g(w=np.asfortranarray(np.ones((4, 3), F32)))),
     ValueError, "not C-contiguous", {}),
    ("grad is a Python list", lambda o, p: o.update(_g(b=[1.0, 2.0, 3.0])),
     flatopt.StructureError, "nested structures are not supported", {}),
    ("grad is a float", lambda o, p: o.update(_g(b=1.0)),
     flatopt.DTypeError, "is not an array", {}),
    ("grad missing key", lambda o, p: o.update({"w": np.ones((4, 3), F32), "v": np.ones((4, 3), F32)}),
     flatopt.StructureError, "missing keys 'b'", {}),
    ("grad extra key", lambda o, p: o.update(_g(c=np.ones(3, F32))),
     flatopt.StructureError, "unexpected keys 'c'", {}),
    ("grad wrong shape, same size", lambda o, p: o.update(_g(w=np.ones((3, 4), F32))),
     flatopt.StructureError, "shape (3, 4), but the parameter has shape (4, 3)", {}),
    ("grad wrong length", lambda o, p: o.update(_g(b=np.ones(4, F32))),
     ValueError, "shape (4,), but the parameter has shape (3,)", {}),
    ("grads as list for dict params", lambda o, p: o.update(list(_g().values())),
     flatopt.StructureError, "a dict was registered", {}),
    ("grads as a single array", lambda o, p: o.update(np.ones(3, F32)),
     flatopt.StructureError, "a dict was registered", {}),
    ("grads list with wrong count", lambda o, p: o.update([np.ones(s, F32) for s in list(SHAPES.values())[:2]]),
     flatopt.StructureError, "2 arrays, but 3 parameters", {"as_list": True}),
    ("grads dict for list params", lambda o, p: o.update(_g()),
     flatopt.StructureError, "a list was registered", {"as_list": True}),
    ("grads are the params", lambda o, p: o.update(p),
     flatopt.OverlapError, "share memory", {}),
    ("grad overlaps another param", lambda o, p: o.update(_g(w=p["v"])),
     flatopt.OverlapError, "share memory", {}),
    ("NaN grad under nonfinite='error'", lambda o, p: o.update(_g(b=np.array([1, np.nan, 1], F32))),
     flatopt.NonFiniteError, "non-finite", {"nonfinite": "error", "skip_counts": True}),
    ("Inf grad under nonfinite='error'", lambda o, p: o.update(_g(w=np.full((4, 3), np.inf, F32))),
     FloatingPointError, "non-finite", {"nonfinite": "error", "skip_counts": True}),
    ("update() without registered grads", lambda o, p: o.update(),
     flatopt.InvalidStateError, "register gradient arrays", {}),
    # Registration attempts on the registered optimizer: the old registration must survive.
    ("register float64 param", lambda o, p: o.register_trainable_weights({"x": np.ones(3)}),
     flatopt.DTypeError, "params['x']: dtype float64", {}),
    ("register int32 param", lambda o, p: o.register_trainable_weights([np.ones(3, np.int32)]),
     TypeError, "params[0]: dtype int32", {}),
    ("register non-contiguous param", lambda o, p: o.register_trainable_weights({"x": _noncontig()}),
     flatopt.LayoutError, "not C-contiguous", {}),
    ("register read-only param", lambda o, p: o.register_trainable_weights({"x": _readonly()}),
     flatopt.LayoutError, "read-only", {}),
    ("register read-only buffer", lambda o, p: o.register_trainable_weights([memoryview(np.ones(3, F32).tobytes()).cast("f")]),
     flatopt.LayoutError, "read-only", {}),
    ("register bytearray (uint8 buffer)", lambda o, p: o.register_trainable_weights([bytearray(12)]),
     flatopt.DTypeError, "format 'B'", {}),
    ("register empty dict", lambda o, p: o.register_trainable_weights({}),
     flatopt.StructureError, "no parameters", {}),
    ("register a single array", lambda o, p: o.register_trainable_weights(np.ones(3, F32)),
     flatopt.StructureError, "single array", {}),
    ("register overlapping params", lambda o, p: (lambda a: o.register_trainable_weights({"x": a[:5], "y": a[3:]}))(np.ones(8, F32)),
     flatopt.OverlapError, "share memory", {}),
    ("register grads equal to params", lambda o, p: (lambda a: o.register_trainable_weights({"x": a}, grads={"x": a}))(np.ones(3, F32)),
     flatopt.OverlapError, "share memory", {}),
    ("register grads with missing key", lambda o, p: o.register_trainable_weights({"x": np.ones(3, F32), "y": np.ones(2, F32)}, grads={"x": np.ones(3, F32)}),
     flatopt.StructureError, "missing keys 'y'", {}),
    ("register grads with wrong shape", lambda o, p: o.register_trainable_weights({"x": np.ones(3, F32)}, grads={"x": np.ones(4, F32)}),
     flatopt.StructureError, "shape (4,), but the parameter has shape (3,)", {}),
]


@pytest.mark.parametrize(
    "desc,bad,exc,substring,opts", UPDATE_ROWS, ids=[r[0] for r in UPDATE_ROWS]
)
def test_bad_input_changes_nothing(desc, bad, exc, substring, opts):
    as_list = opts.get("as_list", False)
    nonfinite = opts.get("nonfinite", "skip")
    opt, params, g = _make(as_list, nonfinite)
    twin, twin_params, _ = _make(as_list, nonfinite)
    before = _snapshot(opt, params)
    skipped = opt.skipped_steps

    with pytest.raises(exc) as info:
        bad(opt, params)
    assert substring in str(info.value), f"{desc}: message {str(info.value)!r}"
    assert isinstance(info.value, flatopt.FlatoptError)

    after = _snapshot(opt, params)
    for k in SHAPES:
        assert np.array_equal(_bits(before["params"][k]), _bits(after["params"][k])), desc
    assert after["step_count"] == before["step_count"]
    slow_b = before["slow"] if isinstance(before["slow"], list) else list(before["slow"].values())
    slow_a = after["slow"] if isinstance(after["slow"], list) else list(after["slow"].values())
    for a, b in zip(slow_a, slow_b):
        assert np.array_equal(_bits(a), _bits(b))
    assert opt.skipped_steps == skipped + (1 if opts.get("skip_counts") else 0)
    if HAS_CHECKPOINTS and not opts.get("skip_counts"):
        assert after["checkpoint"] == before["checkpoint"], f"{desc}: library state changed"
    assert opt.param_names == (list(range(3)) if as_list else list(SHAPES))

    # Nothing changed: two more valid updates agree bit for bit with the twin.
    for t in (3, 4):
        gs = g(t)
        for o in (opt, twin):
            assert o.update(gs if as_list else dict(zip(SHAPES, gs))) is True
    for k in SHAPES:
        assert np.array_equal(_bits(params[k]), _bits(twin_params[k])), desc


def test_update_before_registration():
    opt = flatopt.Adam(lr=1e-3)
    with pytest.raises(flatopt.InvalidStateError, match="before register_trainable_weights"):
        opt.update({"w": np.ones(3, F32)})
    with pytest.raises(flatopt.InvalidStateError, match="before register_trainable_weights"):
        opt.update()


def test_failed_first_registration_leaves_optimizer_unregistered():
    opt = flatopt.SGD(lr=0.1)
    p = {"w": np.ones(3, F32), "x": np.ones(3)}
    with pytest.raises(flatopt.DTypeError):
        opt.register_trainable_weights(p)
    assert opt.param_names == []
    assert np.array_equal(p["w"], np.ones(3, F32))
    with pytest.raises(flatopt.InvalidStateError):
        opt.update({"w": np.ones(3, F32)})
    opt.register_trainable_weights({"w": p["w"]})
    opt.update({"w": np.ones(3, F32)})
    assert np.allclose(p["w"], 0.9)


# Construction errors: (description, make, exception type, message substring).
CONSTRUCT_ROWS = [
    ("alpha > 1", lambda: flatopt.Lookahead(flatopt.sgd(0.1), alpha=1.5),
     flatopt.InvalidArgumentError, "invalid alpha = 1.5"),
    ("sync_period 0", lambda: flatopt.Lookahead(flatopt.sgd(0.1), sync_period=0),
     flatopt.InvalidArgumentError, "sync_period"),
    ("negative lr", lambda: flatopt.SGD(lr=-0.1),
     ValueError, "lr"),
    ("lr is a string", lambda: flatopt.Adam(lr="fast"),
     flatopt.DTypeError, "lr"),
    ("base optimizer is not one", lambda: flatopt.Lookahead("adam"),
     TypeError, "base_optimizer must be"),
    ("momentum 1", lambda: flatopt.SGD(lr=0.1, momentum=1.0),
     flatopt.InvalidArgumentError, "momentum"),
    ("nesterov without momentum", lambda: flatopt.SGD(lr=0.1, nesterov=True),
     flatopt.InvalidArgumentError, "nesterov"),
    ("b2 = 1", lambda: flatopt.Adam(betas=(0.9, 1.0)),
     flatopt.InvalidArgumentError, "b2"),
    ("betas not a pair", lambda: flatopt.Adam(betas=0.9),
     flatopt.InvalidArgumentError, "betas"),
    ("eps 0", lambda: flatopt.Lookahead(flatopt.adam(1e-3, eps=0.0)),
     flatopt.InvalidArgumentError, "eps"),
    ("negative weight decay", lambda: flatopt.Adam(weight_decay=-1.0),
     flatopt.InvalidArgumentError, "weight_decay"),
    ("negative grad_clip_norm", lambda: flatopt.SGD(grad_clip_norm=-1.0),
     flatopt.InvalidArgumentError, "grad_clip_norm"),
    ("nan grad_clip_value", lambda: flatopt.SGD(grad_clip_value=float("nan")),
     flatopt.InvalidArgumentError, "grad_clip_value"),
    ("unknown nonfinite policy", lambda: flatopt.SGD(nonfinite="ignore"),
     flatopt.InvalidArgumentError, "nonfinite"),
    ("zero threads", lambda: flatopt.SGD(num_threads=0),
     flatopt.InvalidArgumentError, "num_threads"),
    ("unknown SIMD tier", lambda: flatopt.SGD(simd_tier="sse9"),
     flatopt.InvalidArgumentError, "simd_tier"),
    ("AdamW amsgrad", lambda: flatopt.AdamW(amsgrad=True),
     NotImplementedError, "amsgrad"),
    ("StepLR step_size 0", lambda: flatopt.StepLR(0.1, step_size=0),
     flatopt.InvalidArgumentError, "step_size"),
    ("MultiStepLR repeated milestone", lambda: flatopt.MultiStepLR(0.1, milestones=[3, 3]),
     flatopt.InvalidArgumentError, "milestones"),
    ("negative integer hyperparameter", lambda: flatopt.CosineAnnealingLR(0.1, T_max=-3),
     flatopt.InvalidArgumentError, "T_max"),
    ("piecewise values count", lambda: flatopt.PiecewiseConstantSchedule(boundaries=[5], values=[0.1]),
     flatopt.InvalidArgumentError, "len(boundaries) + 1"),
    ("OneCycleLR without length", lambda: flatopt.OneCycleLR(0.1),
     flatopt.InvalidArgumentError, "total_steps"),
    ("CyclicLR scale_fn", lambda: flatopt.CyclicLR(scale_fn=lambda x: 1.0),
     flatopt.UnsupportedError, "scale_fn"),
    ("unknown cyclic mode", lambda: flatopt.CyclicLR(mode="sine"),
     flatopt.InvalidArgumentError, "mode"),
    ("plateau per_update", lambda: flatopt.ReduceLROnPlateau(per_update=True),
     flatopt.InvalidArgumentError, "per_update"),
]


@pytest.mark.parametrize(
    "desc,make,exc,substring", CONSTRUCT_ROWS, ids=[r[0] for r in CONSTRUCT_ROWS]
)
def test_bad_construction(desc, make, exc, substring):
    with pytest.raises(exc) as info:
        make()
    assert substring in str(info.value), f"{desc}: message {str(info.value)!r}"
    assert isinstance(info.value, flatopt.FlatoptError)


def test_schedule_drives_one_optimizer():
    s = flatopt.StepLR(0.1, step_size=2)
    opt = flatopt.SGD(lr=s)
    with pytest.raises(flatopt.InvalidArgumentError, match="already drives another optimizer"):
        flatopt.Adam(lr=s)
    assert opt.schedule is s


def test_nan_grad_under_skip_is_skipped_not_raised():
    opt, params, g = _make()
    before = {k: v.copy() for k, v in params.items()}
    assert opt.update(_g(b=np.array([1, np.nan, 1], F32))) is False
    assert opt.skipped_steps == 1 and opt.step_count == 3
    for k in SHAPES:
        assert np.array_equal(_bits(before[k]), _bits(params[k]))
