"""Bad input: a table of (description, call, expected exception type, message substring).

Every row runs against a Lookahead(Adam) optimizer that is registered (dict params w, b, v
with per-call gradients, or the list variant) and has done 3 updates, next to a twin that
never sees the bad call. After the bad call raises:
- the params are bit-identical to before, and so are step_count, the slow weights and (with
  checkpoints) the whole library state (``state_dict()['checkpoint']``);
- two more valid updates on both optimizers give bit-identical params: nothing changed.
Construction errors are a second table (no optimizer exists afterwards).
"""

import math
import pathlib
import socket
import stat

import numpy as np
import pytest

import flatopt

from conftest import HAS_CHECKPOINTS, grad_stream

SHAPES = {"w": (4, 3), "b": (3,), "v": (4, 3)}


def _params():
    rng = np.random.default_rng(7)
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()}


def _make(as_list=False, nonfinite="skip", schedule=False):
    lr = flatopt.StepLR(1e-2, step_size=2, gamma=0.5) if schedule else 1e-2
    opt = flatopt.Lookahead(flatopt.adam(lr), sync_period=2, alpha=0.5, grad_clip_norm=10.0,
                            nonfinite=nonfinite)
    if schedule:
        opt.schedule.step()
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


class _ArrayOnly:
    """Like a JAX array: only __array__, which gives a copy."""

    def __init__(self, arr):
        self._arr = arr

    def __array__(self, dtype=None, copy=None):
        return self._arr.copy()


class _BrokenInterface:
    __array_interface__ = {"shape": (3,), "typestr": "<f4", "version": 3, "data": "x"}


def _save_over_socket(opt):
    """save() onto a Unix socket in the current (temporary) directory: refused, and the socket
    is still there (renaming over it would replace it, as it would /dev/null when run as
    root)."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind("sock")
        try:
            opt.save("sock")
        finally:
            kept = stat.S_ISSOCK(pathlib.Path("sock").lstat().st_mode)
            pathlib.Path("sock").unlink()
            assert kept, "the socket was replaced"


def _other_state(**over):
    """The state_dict of another run of the same configuration (8 updates, 2 schedule steps),
    with entries replaced (KeyError: removed; manual_steps / metrics: in the schedule)."""
    opt, params, g = _make(schedule=True)
    for t in range(3, 8):
        opt.update(dict(zip(SHAPES, g(t))))
    state = opt.state_dict()
    for key, value in over.items():
        if key in ("manual_steps", "metrics"):
            state["schedule"] = dict(state["schedule"], **{key: value})
        elif value is KeyError:
            del state[key]
        else:
            state[key] = value
    return state


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
     flatopt.StructureError, "grads['b']: a list where an array was expected", {}),
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
    # Objects that cannot be used in place: a copy would be updated (or read) instead.
    ("register NumPy scalar param", lambda o, p: o.register_trainable_weights({"x": np.float32(1.0)}),
     flatopt.LayoutError, "NumPy scalar (numpy.float32) is an immutable value", {}),
    ("register NumPy scalar grad", lambda o, p: o.register_trainable_weights({"x": np.zeros((), F32)}, grads={"x": np.float32(1.0)}),
     flatopt.LayoutError, "NumPy scalar", {}),
    ("register __array__-only grad", lambda o, p: o.register_trainable_weights({"x": np.ones(3, F32)}, grads={"x": _ArrayOnly(np.ones(3, F32))}),
     flatopt.DTypeError, "stale gradients", {}),
    ("register __array__-only param", lambda o, p: o.register_trainable_weights({"x": _ArrayOnly(np.ones(3, F32))}),
     flatopt.DTypeError, "is not an array", {}),
    ("register broken __array_interface__ param", lambda o, p: o.register_trainable_weights({"x": _BrokenInterface()}),
     flatopt.DTypeError, "unusable __array_interface__", {}),
    # Files: a NUL would cut the name short in C ("model\0.ckpt" -> "model").
    ("save path with NUL", lambda o, p: o.save("model\0.ckpt"),
     flatopt.InvalidArgumentError, "invalid path = 'model\\x00.ckpt': a file name cannot contain a NUL", {"checkpoints": True}),
    ("save bytes path with NUL", lambda o, p: o.save(b"model\0.ckpt"),
     ValueError, "NUL", {"checkpoints": True}),
    ("save PathLike with NUL", lambda o, p: o.save(pathlib.PurePosixPath("model\0.ckpt")),
     flatopt.InvalidArgumentError, "NUL", {"checkpoints": True}),
    ("load path with NUL", lambda o, p: o.load("model\0.ckpt"),
     flatopt.InvalidArgumentError, "NUL", {"checkpoints": True}),
    ("save path None", lambda o, p: o.save(None),
     flatopt.ArgumentTypeError, "invalid path = None", {"checkpoints": True}),
    ("load path an int", lambda o, p: o.load(3),
     TypeError, "invalid path = 3", {"checkpoints": True}),
    ("save empty path", lambda o, p: o.save(""),
     flatopt.InvalidArgumentError, "empty file name", {"checkpoints": True}),
    ("save over a socket", lambda o, p: _save_over_socket(o),
     flatopt.InvalidArgumentError, "names a device, FIFO or socket", {"checkpoints": True}),
    # State dicts: checked completely before anything changes (the step count stays).
    ("load_state_dict manual_steps -1", lambda o, p: o.load_state_dict(_other_state(manual_steps=-1)),
     flatopt.CheckpointError, "schedule['manual_steps'] = -1", {"checkpoints": True, "schedule": True}),
    ("load_state_dict metrics ['x']", lambda o, p: o.load_state_dict(_other_state(metrics=["x"])),
     flatopt.CheckpointError, "schedule['metrics'][0] = 'x'", {"checkpoints": True, "schedule": True}),
    ("load_state_dict metrics on a StepLR", lambda o, p: o.load_state_dict(_other_state(metrics=[1.0])),
     flatopt.CheckpointError, "only a ReduceLROnPlateau has metrics", {"checkpoints": True, "schedule": True}),
    ("load_state_dict schedule not a dict", lambda o, p: o.load_state_dict(_other_state(schedule=[1])),
     flatopt.CheckpointError, "schedule state must be a dict", {"checkpoints": True, "schedule": True}),
    ("load_state_dict param_shapes of ints", lambda o, p: o.load_state_dict(_other_state(param_shapes=[4, 3, 4])),
     flatopt.CheckpointError, "'param_shapes' must be a list of lists", {"checkpoints": True, "schedule": True}),
    ("load_state_dict param_names None", lambda o, p: o.load_state_dict(_other_state(param_names=None)),
     flatopt.CheckpointError, "'param_names' must be a list", {"checkpoints": True, "schedule": True}),
    ("load_state_dict format_version array", lambda o, p: o.load_state_dict(_other_state(format_version=np.array([1, 1]))),
     flatopt.CheckpointError, "state format version", {"checkpoints": True, "schedule": True}),
    ("load_state_dict without checkpoint", lambda o, p: o.load_state_dict(_other_state(checkpoint=KeyError)),
     flatopt.CheckpointError, "has no 'checkpoint'", {"checkpoints": True, "schedule": True}),
    ("load_state_dict checkpoint an int", lambda o, p: o.load_state_dict(_other_state(checkpoint=5)),
     flatopt.CheckpointError, "'checkpoint' must be bytes, got int", {"checkpoints": True, "schedule": True}),
]


@pytest.mark.parametrize(
    "desc,bad,exc,substring,opts", UPDATE_ROWS, ids=[r[0] for r in UPDATE_ROWS]
)
def test_bad_input_changes_nothing(desc, bad, exc, substring, opts, tmp_path, monkeypatch):
    if opts.get("checkpoints") and not HAS_CHECKPOINTS:
        pytest.skip("the library has no checkpoints")
    monkeypatch.chdir(tmp_path)  # files a bad save could create land here (and are looked for)
    as_list = opts.get("as_list", False)
    nonfinite = opts.get("nonfinite", "skip")
    schedule = opts.get("schedule", False)
    opt, params, g = _make(as_list, nonfinite, schedule)
    twin, twin_params, _ = _make(as_list, nonfinite, schedule)
    before = _snapshot(opt, params)
    sched_before = None if not schedule else opt.schedule.state_dict()
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
    if schedule:
        assert opt.schedule.state_dict() == sched_before, f"{desc}: schedule state changed"
    assert sorted(p.name for p in tmp_path.iterdir()) == [], f"{desc}: a file was written"

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
    # Integers are range-checked before ctypes, which would truncate them silently.
    ("num_threads 2**32 + 2", lambda: flatopt.SGD(num_threads=2**32 + 2),
     flatopt.InvalidArgumentError, "invalid num_threads = 4294967298: must be an integer in [1, 2**32 - 1]"),
    ("num_threads -1", lambda: flatopt.SGD(num_threads=-1),
     flatopt.InvalidArgumentError, "invalid num_threads = -1"),
    ("num_threads 2.5", lambda: flatopt.SGD(num_threads=2.5),
     flatopt.InvalidArgumentError, "invalid num_threads = 2.5"),
    ("num_threads None", lambda: flatopt.SGD(num_threads=None),
     flatopt.ArgumentTypeError, "invalid num_threads = None: must be an integer"),
    ("num_threads True", lambda: flatopt.SGD(num_threads=True),
     TypeError, "invalid num_threads = True"),
    ("num_threads '2'", lambda: flatopt.SGD(num_threads="2"),
     TypeError, "invalid num_threads = '2'"),
    ("sync_period 2**64 + 1", lambda: flatopt.Lookahead(flatopt.sgd(0.1), sync_period=2**64 + 1),
     flatopt.InvalidArgumentError, "invalid sync_period = 18446744073709551617: must be an integer in [1, 2**64 - 1]"),
    ("sync_period inf", lambda: flatopt.Lookahead(flatopt.sgd(0.1), sync_period=math.inf),
     flatopt.InvalidArgumentError, "invalid sync_period = inf"),
    ("sync_period 2**200", lambda: flatopt.Lookahead(flatopt.sgd(0.1), sync_period=2**200),
     flatopt.InvalidArgumentError, "invalid sync_period = <an integer of 201 bits>"),
    ("sync_period 10**5000 (repr limit)", lambda: flatopt.Lookahead(flatopt.sgd(0.1), sync_period=10**5000),
     flatopt.InvalidArgumentError, "invalid sync_period = <an integer of 16610 bits>"),
    ("StepLR step_size 2**64", lambda: flatopt.StepLR(0.1, step_size=2**64),
     flatopt.InvalidArgumentError, "invalid step_size = 18446744073709551616"),
    ("T_max inf", lambda: flatopt.CosineAnnealingLR(0.1, T_max=math.inf),
     flatopt.InvalidArgumentError, "invalid T_max = inf"),
    ("T_0 None", lambda: flatopt.CosineAnnealingWarmRestarts(0.1, T_0=None),
     flatopt.ArgumentTypeError, "invalid T_0 = None"),
    ("patience 2**64", lambda: flatopt.ReduceLROnPlateau(patience=2**64),
     flatopt.InvalidArgumentError, "invalid patience = 18446744073709551616"),
    ("milestone 2**64", lambda: flatopt.MultiStepLR(0.1, milestones=[1, 2**64]),
     flatopt.InvalidArgumentError, "invalid milestones[1] = 18446744073709551616"),
    ("OneCycleLR epochs * steps_per_epoch past 2**64", lambda: flatopt.OneCycleLR(0.1, epochs=2**40, steps_per_epoch=2**40),
     flatopt.InvalidArgumentError, "invalid total_steps"),
    ("last_epoch -1", lambda: flatopt.StepLR(0.1, last_epoch=-1),
     flatopt.InvalidArgumentError, "invalid last_epoch = -1"),
    # Malformed arguments: the library's own errors, naming the argument and the value.
    ("eps None", lambda: flatopt.Adam(eps=None),
     flatopt.ArgumentTypeError, "invalid eps = None: must be a number"),
    ("alpha None", lambda: flatopt.Lookahead(flatopt.sgd(0.1), alpha=None),
     flatopt.ArgumentTypeError, "invalid alpha = None"),
    ("betas ('a', 'b')", lambda: flatopt.Adam(betas=("a", "b")),
     flatopt.ArgumentTypeError, "invalid betas = ('a', 'b'): must be a pair of numbers"),
    ("betas of three", lambda: flatopt.AdamW(betas=(0.9, 0.99, 0.999)),
     flatopt.InvalidArgumentError, "invalid betas = (0.9, 0.99, 0.999): must be a pair"),
    ("betas a string", lambda: flatopt.RAdam(betas="ab"),
     flatopt.ArgumentTypeError, "invalid betas = 'ab'"),
    ("lr 10**400", lambda: flatopt.SGD(lr=10**400),
     flatopt.InvalidArgumentError, "invalid lr = <an integer of 1329 bits>: too large for a double"),
    ("lr None", lambda: flatopt.Adam(lr=None),
     flatopt.ArgumentTypeError, "invalid lr = None: must be a float or a flatopt schedule"),
    ("lr a list", lambda: flatopt.AdamW(lr=[0.1]),
     flatopt.ArgumentTypeError, "invalid lr = [0.1]"),
    ("lr True", lambda: flatopt.RAdam(lr=True),
     flatopt.ArgumentTypeError, "invalid lr = True"),
    ("learning_rate None", lambda: flatopt.sgd(None),
     flatopt.ArgumentTypeError, "invalid learning_rate = None"),
    ("Lookahead lr a string", lambda: flatopt.Lookahead(flatopt.sgd(0.1), lr="fast"),
     flatopt.ArgumentTypeError, "invalid lr = 'fast'"),
    ("nonfinite ['skip']", lambda: flatopt.SGD(nonfinite=["skip"]),
     flatopt.InvalidArgumentError, "invalid nonfinite = ['skip']: must be one of 'skip', 'error', 'propagate'"),
    ("simd_tier a list", lambda: flatopt.SGD(simd_tier=["avx2"]),
     flatopt.InvalidArgumentError, "invalid simd_tier = ['avx2']"),
    ("weight_decay None", lambda: flatopt.Adam(weight_decay=None),
     flatopt.ArgumentTypeError, "invalid weight_decay = None"),
    ("weight_decay 10**400 (AdamW)", lambda: flatopt.AdamW(weight_decay=10**400),
     flatopt.InvalidArgumentError, "invalid weight_decay"),
    ("grad_clip_norm a string", lambda: flatopt.SGD(grad_clip_norm="1"),
     flatopt.ArgumentTypeError, "invalid grad_clip_norm = '1'"),
    ("grad_clip_value a list", lambda: flatopt.SGD(grad_clip_value=[1.0]),
     flatopt.ArgumentTypeError, "invalid grad_clip_value = [1.0]"),
    ("momentum a string", lambda: flatopt.SGD(momentum="0.9"),
     flatopt.ArgumentTypeError, "invalid momentum = '0.9'"),
    ("dampening None", lambda: flatopt.SGD(momentum=0.9, dampening=None),
     flatopt.ArgumentTypeError, "invalid dampening = None"),
    ("nesterov 'yes'", lambda: flatopt.SGD(momentum=0.9, nesterov="yes"),
     flatopt.ArgumentTypeError, "invalid nesterov = 'yes': must be True or False"),
    ("amsgrad 'no'", lambda: flatopt.Adam(amsgrad="no"),
     flatopt.ArgumentTypeError, "invalid amsgrad = 'no'"),
    ("adam b1 None", lambda: flatopt.adam(1e-3, b1=None),
     flatopt.ArgumentTypeError, "invalid b1 = None"),
    ("radam eps an array", lambda: flatopt.radam(1e-3, eps=np.ones(2)),
     flatopt.ArgumentTypeError, "invalid eps = array"),
    ("base_lr 10**400", lambda: flatopt.StepLR(10**400),
     flatopt.InvalidArgumentError, "invalid base_lr"),
    ("gamma None", lambda: flatopt.ExponentialLR(0.1, gamma=None),
     flatopt.ArgumentTypeError, "invalid gamma = None"),
    ("milestones not a list", lambda: flatopt.MultiStepLR(0.1, milestones=5),
     flatopt.ArgumentTypeError, "invalid milestones = 5: must be a list or tuple"),
    ("milestone a string", lambda: flatopt.MultiStepLR(0.1, milestones=[1, "2"]),
     flatopt.ArgumentTypeError, "invalid milestones[1] = '2'"),
    ("piecewise value None", lambda: flatopt.PiecewiseConstantSchedule(boundaries=[5], values=[0.1, None]),
     flatopt.ArgumentTypeError, "invalid values[1] = None"),
    ("staircase 'yes'", lambda: flatopt.ExponentialDecayLR(0.1, staircase="yes"),
     flatopt.ArgumentTypeError, "invalid staircase = 'yes'"),
    ("per_update 'no'", lambda: flatopt.StepLR(0.1, per_update="no"),
     flatopt.ArgumentTypeError, "invalid per_update = 'no'"),
    ("anneal_strategy a list", lambda: flatopt.OneCycleLR(0.1, total_steps=10, anneal_strategy=["cos"]),
     flatopt.InvalidArgumentError, "invalid anneal_strategy = ['cos']"),
    ("CyclicLR scale_mode", lambda: flatopt.CyclicLR(scale_mode="epoch"),
     flatopt.InvalidArgumentError, "invalid scale_mode = 'epoch'"),
    ("plateau mode a dict", lambda: flatopt.ReduceLROnPlateau(mode={}),
     flatopt.InvalidArgumentError, "invalid mode = {}"),
    ("plateau eps an array", lambda: flatopt.ReduceLROnPlateau(eps=np.ones(2)),
     flatopt.ArgumentTypeError, "invalid eps = array"),
    # Values a double holds but float32 does not (the library checks them after rounding).
    ("lr 1e39 (inf as f32)", lambda: flatopt.SGD(lr=1e39),
     flatopt.InvalidArgumentError, "invalid lr = 1e39 (inf as f32)"),
    ("weight_decay 1e39 (inf as f32)", lambda: flatopt.Adam(weight_decay=1e39),
     flatopt.InvalidArgumentError, "invalid weight_decay = 1e39 (inf as f32)"),
    ("AdamW weight_decay 1e39 (inf as f32)", lambda: flatopt.AdamW(weight_decay=1e39),
     flatopt.InvalidArgumentError, "invalid weight_decay (decoupled) = 1e39"),
    ("eps 1e-50 (0 as f32)", lambda: flatopt.Adam(eps=1e-50),
     flatopt.InvalidArgumentError, "invalid eps = 1e-50 (0.0 as f32)"),
    ("grad_clip_norm 1e39 (inf as f32)", lambda: flatopt.SGD(grad_clip_norm=1e39),
     flatopt.InvalidArgumentError, "invalid grad_clip_norm = 1e39 (inf as f32)"),
    ("plateau last_epoch 3", lambda: flatopt.ReduceLROnPlateau(last_epoch=3),
     flatopt.InvalidArgumentError, "invalid last_epoch = 3: a ReduceLROnPlateau counts the metrics"),
    ("plateau min_lr per group without base_lr list",
     lambda: flatopt.ReduceLROnPlateau(min_lr=[0.0, 0.1]),
     flatopt.InvalidArgumentError, "invalid min_lr = [0.0, 0.1]: a per-group min_lr needs a "
     "base_lr list of the same length"),
]

# Calls of the public functions and methods with malformed arguments (no optimizer state is
# involved, or it is checked elsewhere): (description, call, exception type, substring).
CALL_ROWS = [
    ("schedule step(epoch=2**64)", lambda: flatopt.StepLR(0.1).step(epoch=2**64),
     flatopt.InvalidArgumentError, "invalid epoch = 18446744073709551616"),
    ("schedule step(epoch='3')", lambda: flatopt.StepLR(0.1).step(epoch="3"),
     flatopt.ArgumentTypeError, "invalid epoch = '3'"),
    ("plateau step(None)", lambda: flatopt.ReduceLROnPlateau().step(None),
     flatopt.ArgumentTypeError, "invalid metric = None"),
    ("plateau step(10**400)", lambda: flatopt.ReduceLROnPlateau().step(10**400),
     flatopt.InvalidArgumentError, "invalid metric"),
    ("schedule load_state_dict not a dict", lambda: flatopt.StepLR(0.1).load_state_dict([1]),
     flatopt.CheckpointError, "must be a dict"),
    ("schedule load_state_dict manual_steps 2**64", lambda: flatopt.StepLR(0.1).load_state_dict({"type": "StepLR", "manual_steps": 2**64, "metrics": []}),
     flatopt.CheckpointError, "invalid schedule['manual_steps'] = 18446744073709551616"),
    ("schedule load_state_dict without metrics", lambda: flatopt.StepLR(0.1).load_state_dict({"type": "StepLR", "manual_steps": 1}),
     flatopt.CheckpointError, "has no 'metrics'"),
    ("plateau load_state_dict metric nan", lambda: flatopt.ReduceLROnPlateau().load_state_dict({"type": "ReduceLROnPlateau", "manual_steps": 0, "metrics": [1.0, math.nan]}),
     flatopt.CheckpointError, "invalid schedule['metrics'][1] = nan: must be finite"),
    ("shard_ranges total None", lambda: flatopt.sharded.shard_ranges(None, 2),
     flatopt.ArgumentTypeError, "invalid total = None"),
    ("shard_ranges n_shards 2**64 + 1", lambda: flatopt.sharded.shard_ranges(10, 2**64 + 1),
     flatopt.InvalidArgumentError, "invalid n_shards"),
    ("shard_ranges block 0", lambda: flatopt.sharded.shard_ranges(10, 2, block=0),
     flatopt.InvalidArgumentError, "invalid block = 0"),
    ("ordered_sum of strings", lambda: flatopt.sharded.ordered_sum([["a"]]),
     flatopt.ArgumentTypeError, "invalid partials[0]"),
    ("ordered_sum not a list", lambda: flatopt.sharded.ordered_sum(None),
     flatopt.ArgumentTypeError, "invalid partials = None"),
    ("reshard_checkpoints blobs None", lambda: flatopt.sharded.reshard_checkpoints(None, [1]),
     flatopt.ArgumentTypeError, "invalid blobs = None"),
    ("reshard_checkpoints blob an int", lambda: flatopt.sharded.reshard_checkpoints([40], [1]),
     flatopt.ArgumentTypeError, "invalid checkpoint 0 = 40: must be bytes"),
    ("reshard_checkpoints length 'a'", lambda: flatopt.sharded.reshard_checkpoints([b""], ["a"]),
     flatopt.ArgumentTypeError, "invalid lengths[0] = 'a'"),
    ("reshard_checkpoints length 0", lambda: flatopt.sharded.reshard_checkpoints([b""], [0]),
     flatopt.InvalidArgumentError, "invalid lengths[0] = 0"),
]


@pytest.mark.parametrize(
    "desc,make,exc,substring", CONSTRUCT_ROWS + CALL_ROWS,
    ids=[r[0] for r in CONSTRUCT_ROWS + CALL_ROWS],
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
    assert opt.skipped_count == 1 and opt.skipped_steps == 1 and opt.step_count == 3
    for k in SHAPES:
        assert np.array_equal(_bits(before[k]), _bits(params[k]))


# Schedules that grow past the float32 range: the update whose learning rate is not finite as
# float32 is refused, naming it, with nothing changed. (description, schedule, manual steps
# before the updates, updates that succeed before the refused one)
GROWING_ROWS = [
    ("ExponentialLR gamma 1e10, stepped 4 times", lambda: flatopt.ExponentialLR(1.0, gamma=1e10), 4, 0),
    ("StepLR gamma 1e30, stepped twice", lambda: flatopt.StepLR(1.0, step_size=1, gamma=1e30), 2, 0),
    ("ExponentialLR gamma 1e10 per update", lambda: flatopt.ExponentialLR(1.0, gamma=1e10, per_update=True), 0, 4),
]


@pytest.mark.parametrize("desc,make,steps,good", GROWING_ROWS, ids=[r[0] for r in GROWING_ROWS])
def test_schedule_past_float32_refuses_the_update(desc, make, steps, good):
    sched = make()
    opt = flatopt.SGD(lr=sched)
    p = {"w": np.full(3, 1e-30, F32)}
    opt.register_trainable_weights(p)
    for _ in range(steps):
        sched.step()
    g = {"w": np.full(3, 1e-30, F32)}
    for _ in range(good):
        assert opt.update(g) is True
    before = p["w"].copy()
    with pytest.raises(flatopt.InvalidArgumentError, match="invalid lr = .* as f32"):
        opt.update(g)
    assert np.array_equal(_bits(before), _bits(p["w"])), desc
    assert opt.step_count == good
