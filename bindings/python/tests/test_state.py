"""Compressed optimizer state through Python (issue 16; docs/numerics.md, "Compressed state"):
``state_dtype`` / ``state_rounding`` / ``state_seed`` / ``state_index_offset`` on every
optimizer class and optax-style function, ``slow_dtype`` on Lookahead, their validation, the
memory accessors, copies and pickles, and sharded runs against one process.

The library's own tests (tests/state.rs) check the arithmetic bit for bit against the
composition decode -> f32 pass -> encode; here: that every Python entry point hands the options
to the library (a class and the optax-style function it wraps give the same bits; each
precision holds the bytes it should and gives other bits than float32), and that bad values
are refused naming them.
"""

import copy
import pickle

import numpy as np
import pytest

import flatopt
from flatopt import sharded

DTYPES = ("float32", "bfloat16", "int8")
N = 700  # three 8-bit blocks, the last one partial
STEPS = 6

# (class, its optax-style function with the same rule and defaults, or None, extra kwargs)
CLASSES = [
    (flatopt.SGD, None, dict(momentum=0.9)),
    (flatopt.Momentum, None, {}),
    (flatopt.MomentumNesterov, None, {}),
    (flatopt.Adam, None, dict(amsgrad=True)),
    (flatopt.Adam, None, {}),
    (flatopt.AdamW, None, {}),
    (flatopt.RAdam, None, {}),
    (flatopt.Adagrad, None, {}),
    (flatopt.RMSprop, None, dict(centered=True, momentum=0.5)),
    (flatopt.Adamax, None, {}),
    (flatopt.Nadam, None, {}),
    (flatopt.Lion, None, {}),
    (flatopt.AdaBelief, None, {}),
    (flatopt.Yogi, None, {}),
    (flatopt.Adadelta, None, {}),
    (flatopt.Rprop, None, {}),
    (flatopt.Lamb, None, {}),
    (flatopt.Lars, None, {}),
    (flatopt.Novograd, None, {}),
]

# Every optax-style function with arguments that give it state.
FUNCTIONS = [
    (flatopt.sgd, dict(momentum=0.9)),
    (flatopt.adam, {}),
    (flatopt.adamw, {}),
    (flatopt.radam, {}),
    (flatopt.adagrad, {}),
    (flatopt.rmsprop, dict(centered=True)),
    (flatopt.adamax, {}),
    (flatopt.nadam, {}),
    (flatopt.lion, {}),
    (flatopt.adabelief, {}),
    (flatopt.yogi, {}),
    (flatopt.adadelta, {}),
    (flatopt.rprop, {}),
    (flatopt.lamb, {}),
    (flatopt.lars, {}),
    (flatopt.novograd, {}),
]


def _grads(t, n=N):
    return [np.cos(0.07 * np.arange(n) * (t + 1) + t).astype(np.float32) * 0.1]


def _train(opt, n=N, steps=STEPS):
    p = np.sin(0.31 * np.arange(n)).astype(np.float32)
    opt.register_trainable_weights([p])
    for t in range(steps):
        opt.update(_grads(t, n))
    return p


def _bits(a):
    return a.view(np.uint32).copy()


def _held_bytes(dtype, moments, n=N):
    """Bytes of `moments` state buffers of n elements held as `dtype`."""
    per = {"float32": 4 * n, "bfloat16": 2 * n, "int8": n + 4 * -(-n // 256)}[dtype]
    return moments * per


def _allowed(cls_or_fn, dtype):
    return not (dtype == "int8" and cls_or_fn in (flatopt.Rprop, flatopt.rprop))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "cls,kw", [(c, k) for c, _, k in CLASSES], ids=lambda x: getattr(x, "__name__", str(x))
)
def test_class_holds_its_precision(cls, kw, dtype):
    if not _allowed(cls, dtype):
        pytest.skip("refused (test_int8_refused_for_rprop)")
    f32 = cls(1e-2, **kw)
    p32 = _train(f32)
    opt = cls(1e-2, state_dtype=dtype, state_rounding="nearest", **kw)
    p = _train(opt)
    assert opt.state_dtype == dtype and opt.state_rounding == "nearest"
    moments = f32.state_bytes // (4 * N)
    assert f32.state_bytes == 4 * N * moments and moments >= 1
    assert opt.state_bytes == _held_bytes(dtype, moments)
    assert opt.state_bytes_per_element == opt.state_bytes / N
    if dtype == "float32":
        assert np.array_equal(_bits(p), _bits(p32))
    elif cls is flatopt.Lion:  # a sign update: 6 steps may not show the rounding; the state does
        assert opt.state_dict()["checkpoint"] != f32.state_dict()["checkpoint"]
    else:  # the option reached the library: other bits than float32 state
        assert not np.array_equal(_bits(p), _bits(p32))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fn,kw", FUNCTIONS, ids=lambda x: getattr(x, "__name__", str(x)))
def test_function_state_options_reach_the_optimizer(fn, kw, dtype):
    """``fn(..., state_dtype=d)`` wrapped in an optimizer is bit for bit the optimizer given
    ``state_dtype=d`` itself, with Lookahead too."""
    if not _allowed(fn, dtype):
        with pytest.raises(flatopt.InvalidArgumentError, match="state_dtype = int8"):
            flatopt.Lookahead(fn(1e-2, state_dtype=dtype, **kw))
        return
    opts = dict(state_dtype=dtype, state_seed=7)
    a = flatopt.Lookahead(fn(1e-2, **opts, **kw), sync_period=3)
    b = flatopt.Lookahead(fn(1e-2, **kw), sync_period=3, **opts)
    c = flatopt.Optimizer(fn(1e-2, **opts, **kw), None, lookahead=False)
    d = flatopt.Optimizer(fn(1e-2, **kw), None, lookahead=False, **opts)
    pa, pb, pc, pd = (_train(o) for o in (a, b, c, d))
    assert np.array_equal(_bits(pa), _bits(pb))
    assert np.array_equal(_bits(pc), _bits(pd))
    for o in (a, b, c, d):
        assert (o.state_dtype, o.state_seed) == (dtype, 7)
    assert a.state_bytes == c.state_bytes + 4 * N  # float32 slow weights
    assert "state_dtype=" in repr(fn(1e-2, state_dtype=dtype, **kw))


@pytest.mark.parametrize("cls,fn,kw", [
    (flatopt.Adam, flatopt.adam, {}),
    (flatopt.AdamW, flatopt.adamw, dict(weight_decay=0.0)),
    (flatopt.RAdam, flatopt.radam, {}),
    (flatopt.Adamax, flatopt.adamax, {}),
    (flatopt.Yogi, flatopt.yogi, {}),
], ids=lambda x: getattr(x, "__name__", ""))
@pytest.mark.parametrize("dtype", ("bfloat16", "int8"))
def test_class_is_its_function(cls, fn, kw, dtype):
    """A braintools-named class is the optax-style function with the same hyperparameters,
    with compressed state too."""
    a = cls(1e-2, weight_decay=0.0, state_dtype=dtype, state_seed=3)
    b = flatopt.Optimizer(fn(1e-2, state_dtype=dtype, state_seed=3, **kw), None,
                          lookahead=False)
    assert np.array_equal(_bits(_train(a)), _bits(_train(b)))


def test_stochastic_rounding_seed():
    """bfloat16 stochastic rounding is deterministic: the same seed gives the same bits, another
    seed other bits; rounding to nearest does not depend on the seed."""
    run = lambda **kw: _bits(_train(flatopt.Adam(1e-2, state_dtype="bfloat16", **kw), steps=20))
    assert np.array_equal(run(state_seed=1), run(state_seed=1))
    assert not np.array_equal(run(state_seed=1), run(state_seed=2))
    assert not np.array_equal(run(state_seed=1), run(state_rounding="nearest"))
    assert np.array_equal(
        run(state_rounding="nearest", state_seed=1), run(state_rounding="nearest", state_seed=2)
    )
    assert not np.array_equal(run(state_index_offset=0), run(state_index_offset=1))


@pytest.mark.parametrize("slow", ("float32", "bfloat16"))
def test_lookahead_slow_dtype(slow):
    o = flatopt.Lookahead(flatopt.adam(1e-2), sync_period=2, slow_dtype=slow)
    p = _train(o)
    assert o.slow_dtype == slow
    assert o.state_bytes == 8 * N + (4 if slow == "float32" else 2) * N
    s = o.slow_weights[0]
    # Every second step synced: the parameters are the slow weights as held (bf16 exactly).
    assert np.array_equal(_bits(p), _bits(s))
    if slow == "bfloat16":
        assert np.all(_bits(s) & 0xFFFF == 0)


BAD = [
    ("state_dtype", "fp16", flatopt.InvalidArgumentError, "invalid state_dtype = 'fp16'"),
    ("state_dtype", "float16", flatopt.InvalidArgumentError, "invalid state_dtype = 'float16'"),
    ("state_dtype", 1, flatopt.InvalidArgumentError, "invalid state_dtype = 1"),
    ("state_dtype", True, flatopt.InvalidArgumentError, "invalid state_dtype = True"),
    ("state_dtype", np.float32, flatopt.InvalidArgumentError, "invalid state_dtype"),
    ("state_dtype", ["int8"], flatopt.InvalidArgumentError, r"invalid state_dtype = \['int8'\]"),
    ("state_rounding", "up", flatopt.InvalidArgumentError, "invalid state_rounding = 'up'"),
    ("state_rounding", "Nearest", flatopt.InvalidArgumentError, "state_rounding = 'Nearest'"),
    ("state_seed", -1, flatopt.InvalidArgumentError, "invalid state_seed = -1"),
    ("state_seed", 2**64, flatopt.InvalidArgumentError, "invalid state_seed = 18446744073709551616"),
    ("state_seed", 1.5, flatopt.InvalidArgumentError, "invalid state_seed = 1.5"),
    ("state_seed", "1", TypeError, "invalid state_seed = '1'"),
    ("state_index_offset", -3, flatopt.InvalidArgumentError, "invalid state_index_offset = -3"),
    ("slow_dtype", "bfloat16", TypeError, "unexpected keyword argument 'slow_dtype'"),
    ("state_type", "int8", TypeError, "unexpected keyword argument 'state_type'"),
]


@pytest.mark.parametrize("key,value,exc,msg", BAD, ids=lambda x: repr(x)[:30])
def test_bad_options_refused_naming_them(key, value, exc, msg):
    with pytest.raises(exc, match=msg):
        flatopt.Adam(1e-3, **{key: value})


@pytest.mark.parametrize("key,value,exc,msg", [
    ("state_dtype", "fp8", flatopt.InvalidArgumentError, "invalid state_dtype = 'fp8'"),
    ("state_rounding", 0, flatopt.InvalidArgumentError, "invalid state_rounding = 0"),
    ("state_seed", -1, flatopt.InvalidArgumentError, "invalid state_seed = -1"),
    ("state_index_offset", 0, TypeError, "adam\\(\\) got an unexpected keyword argument"),
    ("slow_dtype", "float32", TypeError, "adam\\(\\) got an unexpected keyword argument"),
    ("state_dtype", None, None, None),
], ids=lambda x: repr(x)[:30])
def test_bad_function_options_refused(key, value, exc, msg):
    if exc is None:  # None: not given (the optimizer's option or the default)
        assert flatopt.adam(1e-3, **{key: value}).state_options == {}
        return
    with pytest.raises(exc, match=msg):
        flatopt.adam(1e-3, **{key: value})


def test_slow_dtype_needs_lookahead():
    with pytest.raises(flatopt.InvalidArgumentError, match="invalid slow_dtype = 'bfloat16'"):
        flatopt.Optimizer(flatopt.adam(1e-3), None, lookahead=False, slow_dtype="bfloat16")


def test_slow_dtype_int8_refused():
    with pytest.raises(flatopt.InvalidArgumentError, match="slow_dtype = int8"):
        flatopt.Lookahead(flatopt.adam(1e-3), slow_dtype="int8")
    with pytest.raises(flatopt.InvalidArgumentError, match="invalid slow_dtype = 'half'"):
        flatopt.Lookahead(flatopt.adam(1e-3), slow_dtype="half")


def test_int8_refused_for_rprop():
    with pytest.raises(flatopt.InvalidArgumentError, match="state_dtype = int8"):
        flatopt.Rprop(state_dtype="int8")
    o = flatopt.Rprop(state_dtype="bfloat16")
    _train(o)


def test_conflicting_options_refused():
    with pytest.raises(flatopt.InvalidArgumentError, match="state_dtype='int8'"):
        flatopt.Lookahead(flatopt.adam(1e-3, state_dtype="int8"), state_dtype="bfloat16")
    # The same value in both places is fine.
    o = flatopt.Lookahead(flatopt.adam(1e-3, state_dtype="int8"), state_dtype="int8")
    assert o.state_dtype == "int8"


def test_unregistered_state_bytes():
    o = flatopt.Adam(state_dtype="int8")
    assert o.state_bytes == 0 and o.state_bytes_per_element == 0.0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("how", ("pickle", "deepcopy", "copy"))
def test_copies_keep_the_state_options(dtype, how):
    """A copy (pickle, deepcopy, copy) holds the same precision and continues bit for bit."""
    p = np.sin(0.31 * np.arange(N)).astype(np.float32)
    o = flatopt.Lookahead(flatopt.adam(1e-2, state_dtype=dtype, state_seed=5), sync_period=4,
                          slow_dtype="bfloat16", state_index_offset=9)
    o.register_trainable_weights([p])
    for t in range(3):
        o.update(_grads(t))
    if how == "pickle":
        o2 = pickle.loads(pickle.dumps(o))
        p2 = o2._params[0]
    elif how == "deepcopy":
        o2 = copy.deepcopy(o)
        p2 = o2._params[0]
    else:
        p2 = p.copy()
        o2 = copy.copy(o)
        o2.register_trainable_weights([p2])
        o2.load_state_dict(o.state_dict())
    assert (o2.state_dtype, o2.state_seed, o2.slow_dtype, o2.state_index_offset) == (
        dtype, 5, "bfloat16", 9)
    for t in range(3, 8):
        o.update(_grads(t))
        o2.update(_grads(t))
    assert np.array_equal(_bits(p), _bits(p2))


BLOCK = 4096
NS = 3 * BLOCK + 300


def _sharded_run(make, p0, grads, shards, offsets):
    """The shards of ``p0`` (each its own optimizer from ``make(offset)``, with its global
    offset or 0), stepped with the ordered global sum of squares; the final parameters."""
    p, gbuf = p0.copy(), np.zeros(p0.size, np.float32)
    opts = []
    for b, e in sharded.shard_ranges(p0.size, shards):
        o = make(b if offsets else 0)
        o.register_trainable_weights([p[b:e]], grads=[gbuf[b:e]])
        opts.append(o)
    for g in grads:
        gbuf[:] = g
        total = sharded.ordered_sum([o.sum_squares_partials() for o in opts])
        for o in opts:
            o.update_with_sum_squares(total)
    return p


@pytest.mark.parametrize("dtype", ("bfloat16", "int8"))
@pytest.mark.parametrize("shards", (2, 3))
def test_sharded_bit_identical(dtype, shards):
    """Shards with their state_index_offset, stepped with the ordered global sum, are bit for
    bit one optimizer over the whole buffer (stochastic rounding included)."""
    def make(offset=0):
        return flatopt.Lookahead(
            flatopt.adam(0.01, state_dtype=dtype, state_seed=11), sync_period=3,
            grad_clip_norm=1.0, state_index_offset=offset,
        )

    p0 = np.sin(0.37 * np.arange(NS)).astype(np.float32)
    grads = [np.cos(0.11 * np.arange(NS) * (t + 1)).astype(np.float32) for t in range(7)]
    one = p0.copy()
    ref = make()
    ref.register_trainable_weights([one])
    for g in grads:
        ref.update([g])
    p = _sharded_run(make, p0, grads, shards, offsets=True)
    assert np.array_equal(_bits(p), _bits(one))
    # Without the offsets, stochastic rounding differs from one process (bf16).
    if dtype == "bfloat16":
        q = _sharded_run(make, p0, grads, shards, offsets=False)
        assert not np.array_equal(_bits(q), _bits(one))


@pytest.mark.parametrize("dtype", ("bfloat16", "int8"))
def test_checkpoints_hold_the_state_as_held(dtype):
    """state_dict of compressed state is checkpoint format 4 with the arrays as held (smaller
    than float32's), round trips bit for bit, and loads into another precision (converted)."""
    def make(d, **kw):
        return flatopt.Lookahead(flatopt.adam(1e-2, state_dtype=d), sync_period=4, **kw)

    p = np.sin(0.31 * np.arange(N)).astype(np.float32)
    o = make(dtype)
    o.register_trainable_weights([p])
    for t in range(3):
        o.update(_grads(t))
    blob = o.state_dict()["checkpoint"]
    assert blob[8:12] == (4).to_bytes(4, "little")
    f = make("float32")
    f.register_trainable_weights([p.copy()])
    f_blob = f.state_dict()["checkpoint"]
    assert blob[8:12] != f_blob[8:12]
    assert len(blob) < len(f_blob) - N * (1 if dtype == "int8" else 3)
    # Same precision: the same bytes back.
    q = p.copy()
    o2 = make(dtype)
    o2.register_trainable_weights([q])
    o2.load_state_dict(o.state_dict())
    assert o2.state_dict()["checkpoint"] == blob
    # Another precision: converted, then the float32 checkpoint back into this precision.
    f.load_state_dict(o.state_dict())
    assert f.step_count == 3
    o3 = make(dtype)
    o3.register_trainable_weights([p.copy()])
    o3.load_state_dict(f.state_dict())
    assert o3.step_count == 3


def test_resharding_compressed_checkpoints():
    """Compressed checkpoints (format 4) reshard (the cases: tests/test_sharded.py)."""
    p = np.zeros(2 * BLOCK, np.float32)
    opts = []
    for b, e in sharded.shard_ranges(p.size, 2):
        o = flatopt.Adam(1e-2, state_dtype="bfloat16", state_index_offset=b)
        o.register_trainable_weights([p[b:e]])
        opts.append(o)
    blobs = [sharded.save_checkpoint(o) for o in opts]
    (whole,) = sharded.reshard_checkpoints(blobs, [p.size])
    one = flatopt.Adam(1e-2, state_dtype="bfloat16")
    one.register_trainable_weights([p.copy()])
    assert whole == sharded.save_checkpoint(one)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shards", (1, 2, 3))
@pytest.mark.parametrize("fn", (flatopt.lamb, flatopt.lars, flatopt.novograd),
                         ids=lambda f: f.__name__)
def test_sharded_per_buffer_norms_bit_identical(fn, dtype, shards):
    """LAMB, LARS, NovoGrad sharded with flatopt.sharded.step (the global sum, then the norm
    partials of the pass before the update, exchanged in process) are bit for bit one optimizer
    over the whole buffer, for every state precision."""
    def make(offset=0):
        return flatopt.Lookahead(fn(0.01, state_dtype=dtype, state_seed=11), sync_period=3,
                                 grad_clip_norm=1.0, state_index_offset=offset)

    p0 = np.sin(0.37 * np.arange(NS)).astype(np.float32)
    grads = [np.cos(0.11 * np.arange(NS) * (t + 1)).astype(np.float32) for t in range(7)]
    one = p0.copy()
    ref = make()
    ref.register_trainable_weights([one])
    for g in grads:
        ref.update([g])
    p, gbuf = p0.copy(), np.zeros(NS, np.float32)
    opts = []
    for b, e in sharded.shard_ranges(NS, shards):
        o = make(b)
        o.register_trainable_weights([p[b:e]], grads=[gbuf[b:e]])
        assert o.needs_buffer_norms
        opts.append(o)
    for g in grads:
        gbuf[:] = g
        # Every rank's step in turn: the allgather hands back what each rank gives, in rank
        # order (the parts are computed before any rank updates).
        sums = [o.sum_squares_partials() for o in opts]
        total = sharded.ordered_sum(sums)
        parts = [o.norm_partials(total) for o in opts]
        norms = [sharded.ordered_sum([x[0::2] for x in parts]),
                 sharded.ordered_sum([x[1::2] for x in parts])]
        for o in opts:
            assert o.update_with_norms(total, norms)
    assert np.array_equal(_bits(p), _bits(one))


def test_update_with_norms_refuses_bad_norms():
    o = flatopt.lamb(0.01)
    opt = flatopt.Optimizer(o, None, lookahead=False)
    p, g = np.ones(100, np.float32), np.ones(100, np.float32)
    opt.register_trainable_weights([p], grads=[g])
    with pytest.raises(flatopt.InvalidArgumentError, match="norms"):
        opt.update_with_norms(1.0, [1.0, -2.0])
    with pytest.raises(flatopt.FlatoptError, match="two per registered buffer"):
        opt.update_with_norms(1.0, [1.0])
    assert np.array_equal(p, np.ones(100, np.float32))
    adam = flatopt.Adam(0.01)
    adam.register_trainable_weights([p], grads=[g])
    assert not adam.needs_buffer_norms
    with pytest.raises(flatopt.InvalidArgumentError, match="adam"):
        adam.norm_partials(1.0)
