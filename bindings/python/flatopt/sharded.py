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
compressed state: format 4, whose 8-bit blocks every shard but the last must hold whole).
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
    rank: skipped on every rank alike). With LAMB, LARS or NovoGrad (norms per buffer: here
    the one flat buffer) a second exchange carries the pass before the update's block sums
    (:meth:`flatopt.Optimizer.norm_partials`), whose totals go to
    :meth:`flatopt.Optimizer.update_with_norms`."""
    mine = opt.sum_squares_partials()
    total = ordered_sum(allgather(mine))
    if not opt.needs_buffer_norms:
        return opt.update_with_sum_squares(total)
    if len(opt._params) != 1:
        raise InvalidArgumentError(
            f"sharded.step with {type(opt).__name__}'s per-buffer norms: each rank must "
            f"register one array (its shard of the flat buffer), not {len(opt._params)}; "
            "for other layouts exchange norm_partials and call update_with_norms yourself"
        )
    # LAMB, LARS, NovoGrad: a second exchange, of the pass before the update's two sums per
    # block; this rank's one buffer is a shard of the one flat buffer, whose totals are the
    # even and the odd values of every rank's partials, each added in global block order.
    parts = [np.asarray(x, dtype=np.float64) for x in allgather(opt.norm_partials(total))]
    norms = [ordered_sum([x[0::2] for x in parts]), ordered_sum([x[1::2] for x in parts])]
    return opt.update_with_norms(total, norms)


# ---------------------------------------------------------------------------------------------
# Resharding checkpoints (format: docs/checkpoint-format.md of the repository, versions 1 and 4).

_MAGIC = b"FLATOPTC"
_BOM = 0x0A0B0C0D
# step, skipped, schedule e, T_cur, T_i, plateau lr, plateau best, bad epochs, cooldown
_COUNTERS = 9 * 8
# Elements per block of the 8-bit state code (one float32 scale each; docs/numerics.md).
_Q8_BLOCK = 256
# The longest group record searched for (a group's learning rate, weight decay and base rule:
# a few dozen fields), and the most groups: the groups section of a shard's checkpoint is at
# most this many records of at most this many bytes.
_GROUP_RECORD_MAX = 1024
_GROUPS_MAX = 4096


def _array_bytes(fmt, n):
    """The bytes of an array of `n` elements in version 4's state format `fmt`: 0 float32,
    1 bfloat16 (u16 patterns), 2 int8 (codes, then one float32 scale per block)."""
    return {0: 4 * n, 1: 2 * n, 2: n + 4 * -(-n // _Q8_BLOCK)}[fmt]


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


def _locate_v4_state(b, start, what):
    """The offset of version 4's state formats (then the buffer count 1 and the buffer
    record, which end the checkpoint) in `b` (without its checksum), searched after the groups
    section that starts at `start`: the groups and the loss scaler section are the same on
    every shard, but their length depends on the rules' encodings, so the record is found
    from the end: the one offset whose formats, buffer count, length and present bits account
    for the rest of the checkpoint exactly, after a loss scaler flag and reserved word."""
    end = len(b)
    if end < start + 8:
        raise CheckpointError(f"{what}: the groups section runs past the end of the checkpoint")
    (groups,) = struct.unpack_from("<Q", b, start)
    hi = min(end - 32, start + 8 + min(groups, _GROUPS_MAX) * _GROUP_RECORD_MAX + 32)
    found = []
    for h in range(start + 16, hi + 1, 4):
        fm, fs, nbuf, n, present, _group = struct.unpack_from("<IIQQII", b, h)
        if fm > 2 or fs > 1 or nbuf != 1 or n < 1 or not 0 < present < 16:
            continue
        size = sum(_array_bytes(fs if bit == 3 else fm, n)
                   for bit in range(4) if present & (1 << bit))
        if h + 32 + size != end:
            continue
        no_scaler = struct.unpack_from("<II", b, h - 8) == (0, 0)
        scaler = h - 32 >= start + 8 and struct.unpack_from("<II", b, h - 32) == (1, 0)
        if no_scaler or scaler:
            found.append(h)
    if len(found) != 1:
        raise CheckpointError(
            f"{what}: the state record of a version 4 checkpoint with one buffer was not found "
            f"after its groups section ({len(found)} candidates; resharding expects each "
            "shard's optimizer to hold one buffer)"
        )
    return found[0]


def _parse(blob, what):
    """(head, counters, group, present, n, arrays) of a shard's checkpoint: `head` every byte
    before the buffer record (configuration, counters, groups, loss scaler, formats and the
    buffer count 1: the same on every shard of one run), `arrays` one (format, parts) per
    present array in the order m, v, v_max, slow: `parts` the float32 values, the bfloat16
    patterns, or the 8-bit codes and block scales."""
    b = _validate.blob(what, blob)
    if len(b) < 36 or b[:8] != _MAGIC:
        raise CheckpointError(f"{what}: not a flatopt checkpoint")
    version, bom, total = struct.unpack_from("<IIQ", b, 8)
    if version not in (1, 4):
        raise CheckpointError(
            f"{what}: checkpoint format version {version}, resharding reads 1 and 4 (version 2 "
            "holds parameter groups or a learning rate set on a group, e.g. through current_lr, "
            "version 3 a loss scaler, with float32 state: a shard's optimizer has one buffer "
            "and needs neither)"
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
    counters = r.take(_COUNTERS, "the counters")
    if version == 4:
        r.at = _locate_v4_state(r.data, r.at, what)
        fm, fs = r.unpack("<II", "the state formats")
    else:
        fm = fs = 0
    head_end = r.at
    (nbuf,) = r.unpack("<Q", "the buffer count")
    if nbuf != 1:
        raise CheckpointError(
            f"{what}: {nbuf} buffers; resharding expects each shard's optimizer to hold one "
            "buffer (its shard of the flat parameter buffer)"
        )
    head = b[: head_end + 8]
    n, present, group = r.unpack("<QII", "the buffer record")
    if present >= 16:
        raise CheckpointError(f"{what}: unknown present bits {present:#x} in the buffer record")
    arrays = []
    for bit in range(4):
        if not present & (1 << bit):
            continue
        fmt = fs if bit == 3 else fm
        if fmt == 0:
            parts = (np.frombuffer(r.take(4 * n, "a state array"), dtype="<f4"),)
        elif fmt == 1:
            parts = (np.frombuffer(r.take(2 * n, "a state array"), dtype="<u2"),)
        else:
            codes = np.frombuffer(r.take(n, "a state array"), dtype=np.uint8)
            nb = -(-n // _Q8_BLOCK)
            parts = (codes, np.frombuffer(r.take(4 * nb, "a state array"), dtype="<f4"))
        arrays.append((fmt, parts))
    if r.at != len(b) - 4:
        raise CheckpointError(f"{what}: unexpected length of the buffer record")
    return head, counters, group, present, n, arrays


def reshard_checkpoints(blobs, lengths):
    """Reshards optimizer checkpoints: ``blobs`` are the checkpoints (bytes) of the shards of
    one flat buffer in rank order, each saved by an optimizer holding exactly one buffer;
    ``lengths`` the shard lengths of the new layout (summing to the same total, e.g.
    ``[e - b for b, e in shard_ranges(total, new_ranks)]``). Returns one checkpoint per new
    shard, which loads into an optimizer of the same configuration with that shard
    registered, and continues bit-identically (moments and slow weights are elementwise;
    counters and schedule state are the same on every shard and are copied).

    Float32 state (checkpoint format 1) and compressed state (format 4: bfloat16 patterns are
    elementwise too; 8-bit codes are cut with their block scales). 8-bit blocks (256 elements)
    start at each shard's start, so with int8 state every shard but the last, old and new, must
    hold a multiple of 256 elements (the shards of :func:`shard_ranges` do): a layout that would
    cut a block is refused (re-blocking could not be exact). Give each new optimizer
    ``state_index_offset`` = its shard's first element, as for the original run."""
    blobs = _validate.sequence("blobs", blobs)
    if not blobs:
        raise InvalidArgumentError("reshard_checkpoints: no checkpoints given")
    lengths = [
        _validate.integer(f"lengths[{i}]", n, 1)
        for i, n in enumerate(_validate.sequence("lengths", lengths))
    ]
    parsed = [_parse(b, f"checkpoint {i}") for i, b in enumerate(blobs)]
    head0, counters0, group0, present0, _, arrays0 = parsed[0]
    for i, (head, counters, group, present, _, _) in enumerate(parsed[1:], 1):
        if counters != counters0:
            raise CheckpointError(
                f"reshard_checkpoints: checkpoint {i} has other counters or schedule state "
                "than checkpoint 0 (saved at another step?)"
            )
        if head[32:] != head0[32:] or present != present0 or group != group0:
            raise CheckpointError(
                f"reshard_checkpoints: checkpoint {i} has another configuration than "
                "checkpoint 0"
            )
    total = sum(p[4] for p in parsed)
    if sum(lengths) != total:
        raise InvalidArgumentError(
            f"reshard_checkpoints: new shard lengths {lengths} must be >= 1 and sum to "
            f"{total}, the length of the checkpointed shards together"
        )
    formats = [fmt for fmt, _ in arrays0]
    if 2 in formats:
        for i, p in enumerate(parsed[:-1]):
            if p[4] % _Q8_BLOCK:
                raise CheckpointError(
                    f"reshard_checkpoints: checkpoint {i} holds {p[4]} elements of int8 state, "
                    f"not a multiple of its {_Q8_BLOCK}-element blocks: its shard's blocks are "
                    "not those of one buffer, so they cannot be joined (every shard but the "
                    "last must hold whole blocks)"
                )
        for i, n in enumerate(lengths[:-1]):
            if n % _Q8_BLOCK:
                raise InvalidArgumentError(
                    f"invalid lengths[{i}] = {n}: with int8 state every new shard but the last "
                    f"must hold a multiple of {_Q8_BLOCK} elements (an 8-bit block, keyed to "
                    "the element's index from the buffer's start); this layout would cut a "
                    "block (shard_ranges gives multiples of 4096)"
                )
    whole = [
        [np.concatenate([p[5][k][1][j] for p in parsed]) for j in range(len(parts))]
        for k, (_, parts) in enumerate(arrays0)
    ]
    out = []
    at = 0
    for n in lengths:
        body = bytearray(head0)
        body += struct.pack("<QII", n, present0, group0)
        for fmt, parts in zip(formats, whole):
            body += parts[0][at : at + n].tobytes()
            if fmt == 2:
                b0 = at // _Q8_BLOCK
                body += parts[1][b0 : b0 + -(-n // _Q8_BLOCK)].tobytes()
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
