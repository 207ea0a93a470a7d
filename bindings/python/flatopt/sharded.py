"""Sharded (ZeRO stage 1) training helpers, independent of the communication library.

Each process (rank) owns a contiguous shard of one flat float32 parameter buffer, registers
only that shard (and its gradient shard) with its own optimizer, and so holds only that
shard's optimizer state and Lookahead slow weights. A step has two phases:

1. ``opt.sum_squares_partials()``: the block partial sums of squares of the local gradient
   shard (one float64 per :func:`block_size` elements);
2. exchange them (``mpi4py``'s ``comm.allgather``, ``torch.distributed.all_gather_object``,
   NCCL, ...), add all of them in global block order from 0.0 (:func:`ordered_sum`) and call
   ``opt.update_with_sum_squares(total)``.

When every shard starts on a block boundary (:func:`shard_ranges` makes such shards), the
global sum is formed in exactly the order a single process forms it, so clipping by global
norm, the non-finite check and therefore the whole run are bit-identical to one process
updating the whole buffer, for any number of shards. :func:`step` does both phases given an
``allgather`` function.

Compressed state (``state_dtype="bfloat16"`` or ``"int8"``): give each rank's optimizer
``state_index_offset=begin`` (its shard's first element in the whole buffer), so that
stochastic rounding is that of one process; the shards of :func:`shard_ranges` start on
multiples of 4096 elements, so they keep the 8-bit blocks (256 elements) of one process too::

    b, e = shard_ranges(total, size)[rank]
    opt = flatopt.AdamW(1e-3, state_dtype="int8", state_index_offset=b)

Checkpoints: each rank saves its own optimizer's checkpoint (``opt.state_dict()["checkpoint"]``
or ``opt.save(path)``); :func:`reshard_checkpoints` turns the checkpoints of N shards into
those of M shards (another rank count), bit for bit (float32 state: checkpoint format 1;
compressed state, format 4, is refused with the way out).
"""

from __future__ import annotations

import ctypes
import struct
import zlib

import numpy as np

from . import _lib, _validate
from ._errors import ArgumentTypeError, CheckpointError, InvalidArgumentError, UnsupportedError
from ._optim import _check_load

__all__ = [
    "block_size",
    "shard_ranges",
    "ordered_sum",
    "step",
    "reshard_checkpoints",
    "save_checkpoint",
    "load_checkpoint",
]


def block_size():
    """The number of elements per block of the fixed-order sum of squares (4096): shards must
    start at a multiple of it for sharded runs to be bit-identical to a single process."""
    if _lib.sum_squares_block_size is None:
        raise UnsupportedError(
            f"the flatopt library at {_lib.library_path} (version {_lib.library_version}) has "
            "no sharded-training functions; rebuild or reinstall it"
        )
    return int(_lib.sum_squares_block_size())


def shard_ranges(total, n_shards, block=None):
    """Splits ``[0, total)`` into ``n_shards`` contiguous ``(begin, end)`` ranges that start
    on block boundaries, as even as whole blocks allow (earlier shards get the extra blocks;
    the last block may be partial). Raises if there are fewer blocks than shards (a shard
    would be empty: the optimizer refuses empty registrations)."""
    total = _validate.integer("total", total, 1)
    n_shards = _validate.integer("n_shards", n_shards, 1)
    block = block_size() if block is None else _validate.integer("block", block, 1)
    n_blocks = -(-total // block)
    if n_shards > n_blocks:
        raise InvalidArgumentError(
            f"invalid n_shards = {n_shards}: {total} elements are only {n_blocks} blocks of "
            f"{block}; every shard needs at least one block"
        )
    base, extra = divmod(n_blocks, n_shards)
    out = []
    at = 0
    for r in range(n_shards):
        nb = base + (1 if r < extra else 0)
        end = min(at + nb * block, total)
        out.append((at, end))
        at = end
    return out


def ordered_sum(partials):
    """The sum of the partial sums of squares of all shards in global block order, starting
    from 0.0, one IEEE double addition at a time: exactly how the library adds them in one
    process. ``partials``: the per-rank arrays in rank order (or one flat sequence). Never use
    ``math.fsum`` or ``np.sum`` here: they add in another order (or exactly) and break
    bit-identity with a single process."""
    s = 0.0
    for i, part in enumerate(_validate.sequence("partials", partials)):
        if isinstance(part, (float, int, np.floating, np.integer)):
            s += _validate.real(f"partials[{i}]", part)
            continue
        try:
            values = np.asarray(part, dtype=np.float64).ravel().tolist()
        except (TypeError, ValueError, OverflowError):
            raise ArgumentTypeError(
                f"invalid partials[{i}] = {_validate.show(part)}: must be a number or an array "
                "of float64 partial sums"
            ) from None
        for x in values:
            s += x
    return s


def step(opt, allgather):
    """One sharded update of ``opt`` (an optimizer whose registered parameters and gradients
    are this rank's shard): its block partials are exchanged with ``allgather`` (a function
    taking this rank's float64 array and returning the list of every rank's arrays in rank
    order, e.g. ``comm.allgather`` of mpi4py), added in order, and the update applied with
    the global sum. Returns True if applied, False if skipped (a non-finite gradient on any
    rank: skipped on every rank alike)."""
    mine = opt.sum_squares_partials()
    return opt.update_with_sum_squares(ordered_sum(allgather(mine)))


# ---------------------------------------------------------------------------------------------
# Resharding checkpoints (format: docs/checkpoint-format.md of the repository, version 1).

_MAGIC = b"FLATOPTC"
_BOM = 0x0A0B0C0D
# step, skipped, schedule e, T_cur, T_i, plateau lr, plateau best, bad epochs, cooldown
_COUNTERS = 9 * 8


class _Reader:
    """Reads little-endian fields of a checkpoint, refusing any read past its end (a crafted
    length field is a CheckpointError, never a struct.error or a huge allocation)."""

    def __init__(self, data, what):
        self.data, self.what, self.at = data, what, 0

    def take(self, n, field):
        if n < 0 or n > len(self.data) - self.at:
            raise CheckpointError(
                f"{self.what}: {field} runs past the end of the checkpoint ({n} bytes at "
                f"offset {self.at}, {len(self.data)} in all)"
            )
        out = self.data[self.at : self.at + n]
        self.at += n
        return out

    def unpack(self, fmt, field):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), field))


def _parse(blob, what):
    b = _validate.blob(what, blob)
    if len(b) < 36 or b[:8] != _MAGIC:
        raise CheckpointError(f"{what}: not a flatopt checkpoint")
    version, bom, total = struct.unpack_from("<IIQ", b, 8)
    if version == 4:
        raise CheckpointError(
            f"{what}: checkpoint format version 4 (compressed state: state_dtype or slow_dtype "
            "not 'float32'); resharding reads version 1 only: load the shards into optimizers "
            "with float32 state (checkpoints convert), reshard their checkpoints, and load "
            "those into the compressed optimizers"
        )
    if version != 1:
        raise CheckpointError(
            f"{what}: checkpoint format version {version}, resharding reads 1 (version 2 holds "
            "parameter groups or a learning rate set on a group, e.g. through current_lr: a "
            "shard's optimizer has one buffer and needs neither)"
        )
    if bom != _BOM or total != len(b):
        raise CheckpointError(f"{what}: bad byte-order mark or length")
    (crc,) = struct.unpack_from("<I", b, len(b) - 4)
    if zlib.crc32(b[:-4]) & 0xFFFFFFFF != crc:
        raise CheckpointError(f"{what}: checksum mismatch")
    r = _Reader(b[:-4], what)
    r.take(32, "the header")
    (clen,) = r.unpack("<Q", "the configuration length")
    r.take(clen, "the configuration section")
    head = b[: r.at]
    counters = r.take(_COUNTERS, "the counters")
    (nbuf,) = r.unpack("<Q", "the buffer count")
    if nbuf != 1:
        raise CheckpointError(
            f"{what}: {nbuf} buffers; resharding expects each shard's optimizer to hold one "
            "buffer (its shard of the flat parameter buffer)"
        )
    n, present, _reserved = r.unpack("<QII", "the buffer record")
    if present >= 16:
        raise CheckpointError(f"{what}: unknown present bits {present:#x} in the buffer record")
    arrays = []
    for bit in range(4):
        if present & (1 << bit):
            arrays.append(np.frombuffer(r.take(4 * n, "a state array"), dtype="<f4"))
    if r.at != len(b) - 4:
        raise CheckpointError(f"{what}: unexpected length of the buffer record")
    return head, counters, present, n, arrays


def reshard_checkpoints(blobs, lengths):
    """Reshards optimizer checkpoints: ``blobs`` are the checkpoints (bytes) of the shards of
    one flat buffer in rank order, each saved by an optimizer holding exactly one buffer;
    ``lengths`` the shard lengths of the new layout (summing to the same total, e.g.
    ``[e - b for b, e in shard_ranges(total, new_ranks)]``). Returns one checkpoint per new
    shard, which loads into an optimizer of the same configuration with that shard
    registered, and continues bit-identically (moments and slow weights are elementwise;
    counters and schedule state are the same on every shard and are copied)."""
    blobs = _validate.sequence("blobs", blobs)
    if not blobs:
        raise InvalidArgumentError("reshard_checkpoints: no checkpoints given")
    lengths = [
        _validate.integer(f"lengths[{i}]", n, 1)
        for i, n in enumerate(_validate.sequence("lengths", lengths))
    ]
    parsed = [_parse(b, f"checkpoint {i}") for i, b in enumerate(blobs)]
    head0, counters0, present0, _, _ = parsed[0]
    for i, (head, counters, present, _, _) in enumerate(parsed[1:], 1):
        if head[32:] != head0[32:] or present != present0:
            raise CheckpointError(
                f"reshard_checkpoints: checkpoint {i} has another configuration than "
                "checkpoint 0"
            )
        if counters != counters0:
            raise CheckpointError(
                f"reshard_checkpoints: checkpoint {i} has other counters or schedule state "
                "than checkpoint 0 (saved at another step?)"
            )
    total = sum(p[3] for p in parsed)
    if sum(lengths) != total:
        raise InvalidArgumentError(
            f"reshard_checkpoints: new shard lengths {lengths} must be >= 1 and sum to "
            f"{total}, the length of the checkpointed shards together"
        )
    n_arrays = len(parsed[0][4])
    whole = [np.concatenate([p[4][k] for p in parsed]) for k in range(n_arrays)]
    out = []
    at = 0
    for n in lengths:
        body = bytearray(head0)
        body += counters0
        body += struct.pack("<Q", 1)
        body += struct.pack("<QII", n, present0, 0)
        for arr in whole:
            body += arr[at : at + n].astype("<f4").tobytes()
        at += n
        struct.pack_into("<Q", body, 16, len(body) + 4)  # total length with the checksum
        body += struct.pack("<I", zlib.crc32(bytes(body)) & 0xFFFFFFFF)
        out.append(bytes(body))
    return out


def save_checkpoint(opt):
    """This rank's optimizer checkpoint as bytes (``opt.state_dict()["checkpoint"]``): the
    counters, schedule state, moments and slow weights of its shard."""
    return opt.state_dict()["checkpoint"]


def load_checkpoint(opt, blob):
    """Restores a checkpoint (bytes, e.g. one of :func:`reshard_checkpoints`) into ``opt``,
    whose registered parameters must be the shard the checkpoint describes. Validated
    completely before anything changes (:class:`flatopt.CheckpointError` otherwise). Like
    :meth:`flatopt.Optimizer.load`, this restores the library's state: a schedule object
    stepped by hand keeps its own Python-side counter."""
    opt._require_checkpoints()
    data = _validate.blob("blob", blob)
    buf = (ctypes.c_uint8 * max(len(data), 1)).from_buffer_copy(data or b"\0")
    with opt._lock:
        _check_load(_lib.optimizer_load(opt._handle.ptr, buf, len(data)), "load_checkpoint")
        opt._loaded_groups()
