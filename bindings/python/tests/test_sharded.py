"""Sharded (ZeRO-1) training in one process: the shards of one flat buffer, each with its own
optimizer, stepped through sum_squares_partials / update_with_sum_squares with the partials
added in global block order, must match one optimizer over the whole buffer bit for bit, for
any shard count; checkpoints of N shards reshard into M shards and continue bit-identically.
(examples/mpi/ runs the same across real MPI processes.)"""

import struct
import zlib

import numpy as np
import pytest

import flatopt
from flatopt import sharded

from conftest import needs_checkpoints

HAS_SHARDING = flatopt._lib.optimizer_step_with_sum_squares is not None
pytestmark = pytest.mark.skipif(
    not HAS_SHARDING, reason="the library has no sharded-training functions yet"
)

BLOCK = 4096
N = 5 * BLOCK + 77  # 6 blocks, the last one partial


def make_opt(nonfinite="skip"):
    return flatopt.Lookahead(
        flatopt.adam(0.01), sync_period=3, alpha=0.5, grad_clip_norm=5.0, weight_decay=1e-3,
        nonfinite=nonfinite,
    )


def init_params():
    return np.sin(0.37 * np.arange(N)).astype(np.float32)


def grads_at(t):
    g = np.cos(0.11 * np.arange(N) * (t + 1)).astype(np.float32)
    if t == 4:
        g[4 * BLOCK + 3] = np.nan  # in the last shard only, whatever the shard count
    return g


class Shards:
    """n shard optimizers over views of one flat parameter / gradient buffer."""

    def __init__(self, n, params=None):
        self.p = init_params() if params is None else params
        self.g = np.zeros(N, np.float32)
        self.ranges = sharded.shard_ranges(N, n)
        self.opts = []
        for b, e in self.ranges:
            o = make_opt()
            o.register_trainable_weights([self.p[b:e]], grads=[self.g[b:e]])
            self.opts.append(o)

    def step(self, grad):
        self.g[:] = grad
        parts = [o.sum_squares_partials() for o in self.opts]  # the "allgather"
        total = sharded.ordered_sum(parts)
        return [o.update_with_sum_squares(total) for o in self.opts]

    def slow(self):
        return np.concatenate([o.slow_weights[0] for o in self.opts])


def reference(steps):
    p = init_params()
    opt = make_opt()
    opt.register_trainable_weights([p])
    applied = [opt.update([grads_at(t)]) for t in range(steps)]
    return p, opt, applied


def same_bits(a, b):
    return np.array_equal(a.view(np.uint32), b.view(np.uint32))


def test_block_size_and_ranges():
    assert sharded.block_size() == BLOCK
    assert sharded.shard_ranges(N, 1) == [(0, N)]
    assert sharded.shard_ranges(N, 2) == [(0, 3 * BLOCK), (3 * BLOCK, N)]
    assert sharded.shard_ranges(N, 4) == [
        (0, 2 * BLOCK), (2 * BLOCK, 4 * BLOCK), (4 * BLOCK, 5 * BLOCK), (5 * BLOCK, N)
    ]
    for n in range(1, 7):
        r = sharded.shard_ranges(N, n)
        assert r[0][0] == 0 and r[-1][1] == N
        assert all(b % BLOCK == 0 and e > b for b, e in r)
        assert all(r[i][1] == r[i + 1][0] for i in range(n - 1))
    with pytest.raises(flatopt.InvalidArgumentError, match="n_shards = 7"):
        sharded.shard_ranges(N, 7)
    with pytest.raises(flatopt.InvalidArgumentError, match="total"):
        sharded.shard_ranges(0, 1)


def test_ordered_sum_is_sequential_double_addition():
    parts = [np.array([1e16, 1.0]), np.array([-1e16, 1.0])]
    # ((0 + 1e16) + 1) + -1e16 + 1 = 0 + 1 = 1 in sequential doubles; fsum would give 2.
    assert sharded.ordered_sum(parts) == 1.0
    assert sharded.ordered_sum([]) == 0.0


def test_partials_match_the_library_kernel():
    p = init_params()
    g = grads_at(0)
    opt = make_opt()
    opt.register_trainable_weights([p], grads=[g])
    assert opt.sum_squares_block_count == 6
    parts = opt.sum_squares_partials()
    assert parts.dtype == np.float64 and parts.shape == (6,)
    # Each partial is the sum of squares of its block (not bitwise: another order).
    for k in range(6):
        blk = g[k * BLOCK : (k + 1) * BLOCK].astype(np.float64)
        assert parts[k] == pytest.approx(float(blk @ blk), rel=1e-12)
    out = np.full(6, -1.0)
    assert opt.sum_squares_partials(out) is out
    assert np.array_equal(out, parts)


@pytest.mark.parametrize("n_shards", [1, 2, 3, 6])
def test_sharded_run_is_bit_identical_to_one_process(n_shards):
    steps = 12
    ref_p, ref_opt, ref_applied = reference(steps)
    s = Shards(n_shards)
    applied = [s.step(grads_at(t)) for t in range(steps)]
    for t, row in enumerate(applied):
        assert row == [ref_applied[t]] * n_shards, f"step {t}"
    assert ref_applied[4] is False  # the NaN step was skipped everywhere
    assert same_bits(s.p, ref_p)
    assert same_bits(s.slow(), ref_opt.slow_weights[0])
    for o in s.opts:
        assert o.step_count == steps - 1 and o.skipped_steps == 1


def test_step_helper_with_an_allgather_function():
    ref_p, _, _ = reference(6)
    s = Shards(3)
    for t in range(6):
        s.g[:] = grads_at(t)
        # A fake allgather: every rank's partials in rank order (what comm.allgather returns).
        everyone = [o.sum_squares_partials() for o in s.opts]
        for o in s.opts:
            sharded.step(o, lambda mine, o=o: everyone)
    assert same_bits(s.p, ref_p)


def test_nonfinite_error_policy_raises_on_every_shard():
    p = init_params()
    g = grads_at(4)
    opts = []
    for b, e in sharded.shard_ranges(N, 2):
        o = make_opt(nonfinite="error")
        o.register_trainable_weights([p[b:e]], grads=[g[b:e]])
        opts.append(o)
    total = sharded.ordered_sum([o.sum_squares_partials() for o in opts])
    assert not np.isfinite(total)
    before = p.copy()
    for o in opts:
        with pytest.raises(flatopt.NonFiniteError):
            o.update_with_sum_squares(total)
        assert o.skipped_steps == 1
    assert same_bits(p, before)


def test_bad_input():
    p = init_params()
    opt = make_opt()
    with pytest.raises(flatopt.InvalidStateError, match="before register"):
        opt.sum_squares_partials()
    opt.register_trainable_weights([p])  # no gradient arrays
    with pytest.raises(flatopt.InvalidStateError, match="grads="):
        opt.sum_squares_partials()
    with pytest.raises(flatopt.InvalidStateError, match="grads="):
        opt.update_with_sum_squares(1.0)
    g = np.zeros(N, np.float32)
    opt.register_trainable_weights([p], grads=[g])
    with pytest.raises(flatopt.DTypeError, match="float64"):
        opt.sum_squares_partials(np.zeros(6, np.float32))
    with pytest.raises(flatopt.InvalidArgumentError, match="6 sum-of-squares blocks"):
        opt.sum_squares_partials(np.zeros(5))
    for bad in ("1.0", None, True, [1.0]):
        with pytest.raises(flatopt.DTypeError, match="sum_squares"):
            opt.update_with_sum_squares(bad)
    assert opt.step_count == 0


def resume(new, blobs, cut, steps):
    """`new` (shards) with the checkpoints `blobs` (of other shards, after `cut` updates, one
    of them skipped) resharded into it and loaded, then updated to `steps`."""
    lengths = [e - b for b, e in new.ranges]
    for o, blob in zip(new.opts, sharded.reshard_checkpoints(blobs, lengths)):
        sharded.load_checkpoint(o, blob)
        assert o.step_count == cut - 1 and o.skipped_steps == 1
    for t in range(cut, steps):
        new.step(grads_at(t))
    return new


@needs_checkpoints
@pytest.mark.parametrize("before,after", [(2, 3), (3, 1), (1, 6), (6, 2)])
def test_checkpoints_reshard_to_another_rank_count(before, after):
    steps, cut = 12, 7
    ref_p, ref_opt, _ = reference(steps)

    s = Shards(before)
    for t in range(cut):
        s.step(grads_at(t))
    blobs = [sharded.save_checkpoint(o) for o in s.opts]
    params = s.p.copy()  # the parameters are saved by the host, not by the optimizer

    new = resume(Shards(after, params=params), blobs, cut, steps)
    assert same_bits(new.p, ref_p)
    assert same_bits(new.slow(), ref_opt.slow_weights[0])


# Compressed state (checkpoint format 4): (id, keyword arguments of the Lookahead optimizer).
# Every shard layout here is made of multiples of 4096 (shard_ranges) but the cut rows, so the
# 8-bit blocks (256 elements) of one process are kept.
COMPRESSED = [
    ("bf16", dict(state_dtype="bfloat16", state_seed=5)),
    ("bf16-nearest-bf16-slow", dict(state_dtype="bfloat16", state_rounding="nearest",
                                    slow_dtype="bfloat16")),
    ("int8", dict(state_dtype="int8", state_seed=7)),
    ("int8-bf16-slow", dict(state_dtype="int8", slow_dtype="bfloat16")),
    ("f32-bf16-slow", dict(slow_dtype="bfloat16")),
]


def make_compressed(state, offset, nonfinite="skip"):
    return flatopt.Lookahead(
        flatopt.adam(0.01), sync_period=3, alpha=0.5, grad_clip_norm=5.0, weight_decay=1e-3,
        nonfinite=nonfinite, state_index_offset=offset, **state,
    )


class CompressedShards(Shards):
    """Shards whose optimizers hold compressed state, each with its state_index_offset."""

    def __init__(self, state, ranges, params=None):
        self.p = init_params() if params is None else params
        self.g = np.zeros(N, np.float32)
        self.ranges = ranges
        self.opts = []
        for b, e in ranges:
            o = make_compressed(state, b)
            o.register_trainable_weights([self.p[b:e]], grads=[self.g[b:e]])
            self.opts.append(o)


def _ranges(lengths):
    at, out = 0, []
    for n in lengths:
        out.append((at, at + n))
        at += n
    return out


def make_registered(state, p, offset=0):
    o = make_compressed(state, offset)
    o.register_trainable_weights([p])
    return o


def compressed_reference(state, steps, cut):
    """(parameters, optimizer) of one process after `steps` updates, and its checkpoint after
    `cut` of them."""
    p = init_params()
    opt = make_registered(state, p)
    for t in range(steps):
        opt.update([grads_at(t)])
        if t == cut - 1:
            blob = opt.state_dict()["checkpoint"]
    return p, opt, blob


@needs_checkpoints
@pytest.mark.parametrize("state", [s for _, s in COMPRESSED], ids=[i for i, _ in COMPRESSED])
@pytest.mark.parametrize("before,after", [(2, 3), (3, 1), (1, 6), (6, 2)])
def test_compressed_checkpoints_reshard_to_another_rank_count(state, before, after):
    """N shards with compressed state (format 4) -> M shards -> continued training is bit for
    bit one process's, state included (bf16 patterns; 8-bit codes with their block scales)."""
    steps, cut = 12, 7
    ref_p, ref, ref_blob = compressed_reference(state, steps, cut)
    s = CompressedShards(state, sharded.shard_ranges(N, before))
    for t in range(cut):
        s.step(grads_at(t))
    blobs = [sharded.save_checkpoint(o) for o in s.opts]
    assert all(b[8:12] == (4).to_bytes(4, "little") for b in blobs)
    # Joined into one shard: the one process's checkpoint, byte for byte.
    assert sharded.reshard_checkpoints(blobs, [N]) == [ref_blob]
    new = CompressedShards(state, sharded.shard_ranges(N, after), params=s.p.copy())
    assert same_bits(resume(new, blobs, cut, steps).p, ref_p)
    joined = sharded.reshard_checkpoints([sharded.save_checkpoint(o) for o in new.opts], [N])
    assert joined == [ref.state_dict()["checkpoint"]]


@needs_checkpoints
@pytest.mark.parametrize("state", [s for _, s in COMPRESSED], ids=[i for i, _ in COMPRESSED])
@pytest.mark.parametrize("lengths", [(256, N - 256), (N - 512 - 77, 512 + 77), (512,) * 3
                                     + (N - 1536,)])
def test_compressed_checkpoints_cut_on_8bit_blocks(state, lengths):
    """Layouts of whole 8-bit blocks that are not sum-of-squares blocks: each piece loads into
    an optimizer of its shard (the library checks it), saves the same bytes back, and the
    pieces join into the whole checkpoint again."""
    _, _, blob = compressed_reference(state, 4, 4)
    pieces = sharded.reshard_checkpoints([blob], list(lengths))
    p = init_params()
    for (b, e), piece in zip(_ranges(lengths), pieces):
        o = make_registered(state, p[b:e].copy(), b)
        sharded.load_checkpoint(o, piece)
        assert sharded.save_checkpoint(o) == piece
    assert sharded.reshard_checkpoints(pieces, [N]) == [blob]


@needs_checkpoints
def test_reshard_refuses_to_cut_8bit_blocks():
    int8 = dict(state_dtype="int8")
    _, _, blob = compressed_reference(int8, 1, 1)
    with pytest.raises(flatopt.InvalidArgumentError,
                       match=r"invalid lengths\[0\] = 300: with int8 state .* cut a block"):
        sharded.reshard_checkpoints([blob], [300, N - 300])
    # The last shard may end anywhere; bf16 state is elementwise: any layout.
    assert len(sharded.reshard_checkpoints([blob], [512, N - 512])) == 2
    _, _, bf = compressed_reference(dict(state_dtype="bfloat16"), 1, 1)
    parts = sharded.reshard_checkpoints([bf], [300, N - 300])
    assert sharded.reshard_checkpoints(parts, [N]) == [bf]
    # Shards that held cut blocks (a layout no one process has) are refused too.
    p = init_params()
    cut = [sharded.save_checkpoint(make_registered(int8, p[b:e], b))
           for b, e in ((0, 300), (300, N))]
    with pytest.raises(flatopt.CheckpointError,
                       match="checkpoint 0 holds 300 elements of int8 state, not a multiple"):
        sharded.reshard_checkpoints(cut, [N])
    # Shards of other precisions are other configurations.
    mixed = [sharded.save_checkpoint(make_registered(int8, p[:BLOCK])),
             sharded.save_checkpoint(make_registered(dict(state_dtype="bfloat16"),
                                                     p[BLOCK:], BLOCK))]
    with pytest.raises(flatopt.CheckpointError, match="checkpoint 1 has another configuration"):
        sharded.reshard_checkpoints(mixed, [N])


def _record(blob):
    """The offset of the buffer record of a checkpoint of make_compressed(int8 state) over N
    elements: m and v in 8 bits (codes and block scales), float32 slow weights, then the CRC."""
    return len(blob) - 4 - (2 * (N + 4 * -(-N // 256)) + 4 * N) - 16


# Crafted version 4 checkpoints with a valid checksum: (description, craft(blob) -> blob,
# message substring).
CRAFTED_V4_ROWS = [
    ("buffer length one short", lambda b: _field(b, _record(b), "<Q", N - 1),
     "state record of a version 4 checkpoint with one buffer was not found"),
    ("buffer length 2**62", lambda b: _field(b, _record(b), "<Q", 2**62), "was not found"),
    ("state format 3", lambda b: _field(b, _record(b) - 16, "<I", 3), "was not found"),
    ("slow weights claimed int8", lambda b: _field(b, _record(b) - 12, "<I", 2),
     "was not found"),
    ("buffer count 2", lambda b: _field(b, _record(b) - 8, "<Q", 2), "was not found"),
    ("loss scaler flag 2", lambda b: _field(b, _record(b) - 24, "<I", 2), "was not found"),
    ("truncated before the groups", lambda b: _field(b[:40 + _clen(b) + 76], 16, "<Q",
                                                     40 + _clen(b) + 76),
     "runs past the end"),
]


@needs_checkpoints
@pytest.mark.parametrize("desc,craft,substring", CRAFTED_V4_ROWS,
                         ids=[r[0] for r in CRAFTED_V4_ROWS])
def test_reshard_refuses_crafted_version_4(desc, craft, substring):
    _, _, blob = compressed_reference(dict(state_dtype="int8"), 2, 2)
    assert struct.unpack_from("<Q", blob, _record(blob))[0] == N
    with pytest.raises(flatopt.CheckpointError) as info:
        sharded.reshard_checkpoints([craft(blob)], [N])
    assert substring in str(info.value), f"{desc}: message {str(info.value)!r}"


@needs_checkpoints
def test_reshard_refuses_mismatched_checkpoints():
    a = Shards(2)
    a.step(grads_at(0))
    blobs = [o.state_dict()["checkpoint"] for o in a.opts]
    assert len(sharded.reshard_checkpoints(blobs, [N])) == 1
    with pytest.raises(flatopt.InvalidArgumentError, match="sum to"):
        sharded.reshard_checkpoints(blobs, [N - 1])
    with pytest.raises(flatopt.CheckpointError, match="checksum"):
        bad = bytearray(blobs[1])
        bad[60] ^= 1
        sharded.reshard_checkpoints([blobs[0], bytes(bad)], [N])
    with pytest.raises(flatopt.CheckpointError, match="load_checkpoint"):
        sharded.load_checkpoint(a.opts[0], blobs[1])  # the other shard's length
    b = Shards(2)
    b.step(grads_at(0))
    b.step(grads_at(1))
    with pytest.raises(flatopt.CheckpointError, match="counters"):
        sharded.reshard_checkpoints([blobs[0], b.opts[1].state_dict()["checkpoint"]], [N])
    c = Shards(2)
    c.opts[0].current_lr = c.opts[0].current_lr / 2  # a group value: checkpoint format 2
    with pytest.raises(flatopt.CheckpointError, match="format version 2, resharding reads 1 and 4"):
        sharded.reshard_checkpoints([sharded.save_checkpoint(o) for o in c.opts], [N])


@needs_checkpoints
def test_load_checkpoint_restores_a_learning_rate_set_on_group_0():
    a, b = Shards(1), Shards(1)
    a.opts[0].current_lr = a.opts[0].current_lr / 2
    sharded.load_checkpoint(b.opts[0], sharded.save_checkpoint(a.opts[0]))
    assert b.opts[0].current_lr == a.opts[0].current_lr
    assert b.opts[0]._lr_set == a.opts[0].current_lr  # kept when registering again


# ---------------------------------------------------------------------------------------------
# Hostile input of the sharded-training calls: (description, bad(opt, p, g), exception type,
# message substring). The optimizer holds one shard with registered gradients; after the
# refused call its parameters, gradients and state are unchanged.


def _alias_f64(arr, n):
    """A float64 view of the first 8*n bytes of a float32 array (same memory)."""
    return arr[: 2 * n].view(np.float64)


SHARDED_BAD_ROWS = [
    ("partials out aliases the registered gradient",
     lambda o, p, g: o.sum_squares_partials(out=_alias_f64(g, o.sum_squares_block_count)),
     flatopt.OverlapError, "shares memory with the registered grads[0]"),
    ("partials out aliases the registered parameter",
     lambda o, p, g: o.sum_squares_partials(out=_alias_f64(p, o.sum_squares_block_count)),
     flatopt.OverlapError, "shares memory with the registered params[0]"),
    ("update_with_sum_squares 10**400", lambda o, p, g: o.update_with_sum_squares(10**400),
     flatopt.InvalidArgumentError, "invalid sum_squares = <an integer of 1329 bits>"),
    ("update_with_sum_squares an array", lambda o, p, g: o.update_with_sum_squares(np.ones(2)),
     flatopt.ArgumentTypeError, "invalid sum_squares = array"),
    ("load_checkpoint of an int", lambda o, p, g: sharded.load_checkpoint(o, 64),
     flatopt.ArgumentTypeError, "invalid blob = 64: must be bytes"),
    ("load_checkpoint of None", lambda o, p, g: sharded.load_checkpoint(o, None),
     TypeError, "invalid blob = None"),
]


@needs_checkpoints
@pytest.mark.parametrize(
    "desc,bad,exc,substring", SHARDED_BAD_ROWS, ids=[r[0] for r in SHARDED_BAD_ROWS]
)
def test_sharded_bad_input_changes_nothing(desc, bad, exc, substring):
    p = init_params()
    g = grads_at(1)
    opt = make_opt()
    opt.register_trainable_weights([p], grads=[g])
    opt.update_with_sum_squares(sharded.ordered_sum([opt.sum_squares_partials()]))
    before = (p.copy(), g.copy(), opt.state_dict()["checkpoint"])
    with pytest.raises(exc) as info:
        bad(opt, p, g)
    assert substring in str(info.value), f"{desc}: message {str(info.value)!r}"
    assert isinstance(info.value, flatopt.FlatoptError)
    assert same_bits(p, before[0]) and same_bits(g, before[1])
    assert opt.state_dict()["checkpoint"] == before[2]


def _recrc(blob):
    body = bytes(blob[:-4])
    return body + struct.pack("<I", zlib.crc32(body) & 0xFFFFFFFF)


def _field(blob, offset, fmt, value):
    b = bytearray(blob)
    struct.pack_into(fmt, b, offset, value)
    return _recrc(b)


def _clen(blob):
    return struct.unpack_from("<Q", blob, 32)[0]


def _n(blob):
    return struct.unpack_from("<Q", blob, 40 + _clen(blob) + 80)[0]


# Crafted checkpoints with a valid checksum and impossible length fields:
# (description, craft(blob) -> blob, message substring).
CRAFTED_ROWS = [
    ("configuration length 2**64 - 1", lambda b: _field(b, 32, "<Q", 2**64 - 1),
     "the configuration section runs past the end"),
    ("configuration length past the counters", lambda b: _field(b, 32, "<Q", len(b) - 40 - 8),
     "runs past the end"),
    ("buffer count 2", lambda b: _field(b, 40 + _clen(b) + 72, "<Q", 2), "2 buffers"),
    ("buffer length 2**62", lambda b: _field(b, 40 + _clen(b) + 80, "<Q", 2**62),
     "a state array runs past the end"),
    ("buffer length one short", lambda b: _field(b, 40 + _clen(b) + 80, "<Q", _n(b) - 1),
     "unexpected length of the buffer record"),
    ("unknown present bits", lambda b: _field(b, 40 + _clen(b) + 88, "<I", 0x13),
     "unknown present bits"),
    ("truncated to 36 bytes", lambda b: _field(b[:36], 16, "<Q", 36), "runs past the end"),
]


@needs_checkpoints
@pytest.mark.parametrize("desc,craft,substring", CRAFTED_ROWS, ids=[r[0] for r in CRAFTED_ROWS])
def test_reshard_refuses_crafted_lengths(desc, craft, substring):
    a = Shards(2)
    a.step(grads_at(0))
    blobs = [o.state_dict()["checkpoint"] for o in a.opts]
    crafted = craft(blobs[1])
    with pytest.raises(flatopt.CheckpointError) as info:
        sharded.reshard_checkpoints([blobs[0], crafted], [N])
    assert substring in str(info.value), f"{desc}: message {str(info.value)!r}"
