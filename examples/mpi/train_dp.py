#!/usr/bin/env python3
"""Data-parallel training with a sharded optimizer (ZeRO stage 1) over MPI, with flatopt.

    mpirun -np 2 python examples/mpi/train_dp.py            # 2 ranks
    python examples/mpi/train_dp.py --single                # one process, no MPI: the reference

The model is an MLP 64-256-10 (tanh, softmax) on the handwritten digits of examples/data,
its 19,210 parameters held in ONE flat float32 buffer that every rank keeps whole (for the
forward and backward pass). The optimizer is Lookahead(Adam) with clipping by global norm and
coupled weight decay; each rank owns a contiguous, block-aligned shard of the flat buffer
(``flatopt.sharded.shard_ranges``) and keeps the optimizer state and slow weights of that
shard only.

One step:

1. The global batch (``--micro-batches`` x ``--micro-batch-size`` samples, drawn from a
   generator seeded by the step number) is cut into micro-batches; rank r computes the
   gradients of a contiguous run of them.
2. Reduce-scatter in a fixed order: ``MPI_Alltoallv`` sends each rank the slices of all
   micro-batch gradients that fall into its shard; the rank adds them in global micro-batch
   order. (``MPI_Allreduce`` / ``MPI_Reduce_scatter`` add in an order that depends on the
   rank count and the MPI implementation: the result would differ in the last bits between
   1, 2 and 3 ranks.)
3. The optimizer step, two-phase: the block partial sums of squares of the gradient shard
   (``opt.sum_squares_partials()``) are exchanged with ``MPI_Allgather`` and added in global
   block order from 0.0 (``flatopt.sharded.ordered_sum``); ``opt.update_with_sum_squares``
   clips with that global norm (and skips the step on every rank if any gradient is NaN/Inf).
4. ``MPI_Allgatherv`` of the updated parameter shards: every rank has the whole model again.

So the averaged gradient, the global norm and each update are formed in the same order as in
one process, and a run on any number of ranks is bit-identical to ``--single`` (which uses the
plain ``opt.update()`` over the whole buffer). ``examples/mpi/test_mpi.sh`` checks that for 1,
2 and 3 ranks, and for checkpoints saved per shard on 2 ranks and resumed on 3 (and on 1).

Checkpoints: ``--save-at K --ckpt DIR`` writes, after step K, one optimizer checkpoint per
rank (``DIR/opt-<rank>-of-<size>.bin``) plus the parameters and a small JSON index from
rank 0; ``--resume DIR`` continues from such a directory with any rank count (the optimizer
checkpoints are resharded with ``flatopt.sharded.reshard_checkpoints``).
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import time

# One BLAS thread: the matrix products must be bit-reproducible from process to process.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

import flatopt  # noqa: E402
from flatopt import sharded  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DIGITS = os.path.join(HERE, "..", "data", "digits.bin")
D_IN, HIDDEN, D_OUT = 64, 256, 10
# Layout of the flat parameter buffer: name, shape.
LAYOUT = [("w1", (D_IN, HIDDEN)), ("b1", (HIDDEN,)), ("w2", (HIDDEN, D_OUT)), ("b2", (D_OUT,))]
N_PARAMS = sum(int(np.prod(s)) for _, s in LAYOUT)  # 19,210: 5 blocks of 4096 (the last partial)


def fnv1a32(data):
    h = 0x811C9DC5
    for b in data:
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


def load_digits(path=DIGITS):
    """(X float32 [n, 64] in [0, 1], y int [n]): the format of examples/data/README.md."""
    with open(path, "rb") as f:
        raw = f.read()
    magic, count, rows, cols, classes, maxval, checksum = struct.unpack_from("<8sIBBBBI", raw)
    body = raw[20:]
    if magic != b"FODIGIT1" or len(body) != count * (rows * cols + 1):
        raise SystemExit(f"{path}: not a digits file")
    if fnv1a32(body) != checksum:
        raise SystemExit(f"{path}: checksum mismatch")
    pixels = np.frombuffer(body, np.uint8, count * rows * cols).reshape(count, rows * cols)
    labels = np.frombuffer(body, np.uint8, count, offset=count * rows * cols)
    return (pixels / np.float32(maxval)).astype(np.float32), labels.astype(np.int64)


def views(flat):
    """Named views (no copies) of a flat buffer with the layout of the model."""
    out, at = {}, 0
    for name, shape in LAYOUT:
        n = int(np.prod(shape))
        out[name] = flat[at : at + n].reshape(shape)
        at += n
    return out


def init_params(seed):
    rng = np.random.default_rng(seed)
    flat = np.zeros(N_PARAMS, np.float32)
    v = views(flat)
    v["w1"][...] = rng.normal(0.0, 1.0 / np.sqrt(D_IN), (D_IN, HIDDEN))
    v["w2"][...] = rng.normal(0.0, 1.0 / np.sqrt(HIDDEN), (HIDDEN, D_OUT))
    return flat


def forward(p, x):
    h = np.tanh(x @ p["w1"] + p["b1"])
    z = h @ p["w2"] + p["b2"]
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return h, e / e.sum(axis=1, keepdims=True)


def micro_grad(params, x, y, scale, out):
    """Gradient of scale * (sum of the cross-entropy losses of (x, y)) into the flat float32
    array `out`; returns the summed loss (a Python float). Pure NumPy, float32: the same
    inputs give the same bits in every process."""
    p = views(params)
    g = views(out)
    h, prob = forward(p, x)
    loss = float(-np.log(prob[np.arange(len(y)), y] + 1e-12).sum())
    dz = prob
    dz[np.arange(len(y)), y] -= 1.0
    dz *= np.float32(scale)
    g["w2"][...] = h.T @ dz
    g["b2"][...] = dz.sum(axis=0)
    dh = (dz @ p["w2"].T) * (1.0 - h * h)
    g["w1"][...] = x.T @ dh
    g["b1"][...] = dh.sum(axis=0)
    return loss


def batch_indices(step, n_train, n_micro, micro_size, seed):
    """The samples of each micro-batch of global step `step` (a function of the step alone,
    so a resumed run sees the same data)."""
    rng = np.random.default_rng([seed, step])
    idx = rng.choice(n_train, n_micro * micro_size, replace=False)
    return idx.reshape(n_micro, micro_size)


def micro_range(rank, size, n_micro):
    """The contiguous run of micro-batches rank `rank` computes."""
    base, extra = divmod(n_micro, size)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)


def make_optimizer(args, offset):
    """Lookahead(Adam) with its moments held as --state-dtype; ``offset``: the index of this
    rank's first element in the flat buffer, so that compressed state rounds as one process."""
    rule = {"adam": lambda: flatopt.adam(args.lr),
            # LAMB: a trust ratio per buffer (here the one flat buffer, sharded over the ranks:
            # sharded.step exchanges the pass before the update's block sums too).
            "lamb": lambda: flatopt.lamb(args.lr, weight_decay=1e-2)}[args.rule]
    return flatopt.Lookahead(
        rule(),
        sync_period=5,
        alpha=0.5,
        grad_clip_norm=args.clip,
        weight_decay=1e-4,
        state_dtype=args.state_dtype,
        state_index_offset=offset,
    )


def accuracy(params, x, y):
    _, prob = forward(views(params), x)
    return float((prob.argmax(axis=1) == y).mean())


class Comm:
    """The MPI world, or a stand-in for the single-process reference."""

    def __init__(self, single):
        self.single = single
        if single:
            self.rank, self.size, self.mpi = 0, 1, None
        else:
            from mpi4py import MPI

            self.mpi = MPI
            self.world = MPI.COMM_WORLD
            self.rank, self.size = self.world.Get_rank(), self.world.Get_size()

    def barrier(self):
        if not self.single:
            self.world.Barrier()


def poison(args, step, grads_of_micro, lo):
    """--nan-step: a NaN in the last micro-batch's gradient, near the end of the buffer (so in
    the last rank's shard and computed by the last rank): every rank must skip that step."""
    if step == args.nan_step and lo <= args.n_micro - 1 < lo + len(grads_of_micro):
        grads_of_micro[args.n_micro - 1 - lo][N_PARAMS - 5] = np.nan


def train(args):
    comm = Comm(args.single)
    rank, size = comm.rank, comm.size
    x, y = load_digits()
    order = np.random.default_rng(args.seed).permutation(len(y))
    n_test = 297
    test, train_idx = order[:n_test], order[n_test:]
    xtr, ytr, xte, yte = x[train_idx], y[train_idx], x[test], y[test]
    global_batch = args.n_micro * args.micro_size
    scale = 1.0 / global_batch

    params = init_params(args.seed)
    start = 0
    resume_meta = None
    if args.resume:
        with open(os.path.join(args.resume, "index.json")) as f:
            resume_meta = json.load(f)
        start = resume_meta["step"]
        params[:] = np.load(os.path.join(args.resume, "params.npy"))

    ranges = sharded.shard_ranges(N_PARAMS, size)
    b, e = ranges[rank]
    grad_shard = np.zeros(e - b, np.float32)
    opt = make_optimizer(args, b)
    # This rank's shard of the flat buffer: a view, so the update lands in `params`.
    opt.register_trainable_weights([params[b:e]], grads=[grad_shard])
    if resume_meta is not None:
        blobs = []
        for r in range(resume_meta["size"]):
            path = os.path.join(args.resume, f"opt-{r}-of-{resume_meta['size']}.bin")
            with open(path, "rb") as f:
                blobs.append(f.read())
        lengths = [end - begin for begin, end in ranges]
        sharded.load_checkpoint(opt, sharded.reshard_checkpoints(blobs, lengths)[rank])

    lo, hi = micro_range(rank, size, args.n_micro)
    mine_g = np.zeros((hi - lo, N_PARAMS), np.float32)
    if not args.single:
        MPI = comm.mpi
        # Alltoallv layout: to rank j goes [micro-batch, shard j elements] of each of mine.
        send_counts = [(hi - lo) * (re - rb) for rb, re in ranges]
        send_displs = np.concatenate([[0], np.cumsum(send_counts)[:-1]]).tolist()
        sendbuf = np.zeros(sum(send_counts), np.float32)
        micro_counts = [micro_range(r, size, args.n_micro) for r in range(size)]
        counts = [(mh - ml) * (e - b) for ml, mh in micro_counts]
        recv_displs = np.concatenate([[0], np.cumsum(counts)[:-1]]).tolist()
        recvbuf = np.zeros(args.n_micro * (e - b), np.float32)
        shard_counts = [re - rb for rb, re in ranges]
        shard_displs = [rb for rb, _ in ranges]

    log = []
    t0 = time.perf_counter()
    for step in range(start, args.steps):
        idx = batch_indices(step, len(ytr), args.n_micro, args.micro_size, args.seed)
        losses = [
            micro_grad(params, xtr[idx[i]], ytr[idx[i]], scale, mine_g[i - lo])
            for i in range(lo, hi)
        ]
        poison(args, step, mine_g, lo)
        if args.single:
            all_g = mine_g  # every micro-batch, in global order
            all_losses = losses
        elif args.allreduce:
            # The usual way, for comparison: sum my micro-batches, MPI_Allreduce the sums. The
            # order of the additions now depends on the rank count (and the MPI library).
            local = mine_g[0].copy()
            for i in range(1, hi - lo):
                local += mine_g[i]
            total = np.empty_like(local)
            comm.world.Allreduce(local, total, op=MPI.SUM)
            all_g = total[b:e].reshape(1, e - b)
            all_losses = [v for part in comm.world.allgather(losses) for v in part]
        else:
            # Fixed-order reduce-scatter, part 1: everyone's micro-batch slices of my shard.
            at = 0
            for rb, re in ranges:
                n = (hi - lo) * (re - rb)
                sendbuf[at : at + n] = mine_g[:, rb:re].ravel()
                at += n
            comm.world.Alltoallv(
                [sendbuf, (send_counts, send_displs), MPI.FLOAT],
                [recvbuf, (counts, recv_displs), MPI.FLOAT],
            )
            all_g = recvbuf.reshape(args.n_micro, e - b)  # rank order = micro-batch order
            all_losses = [v for part in comm.world.allgather(losses) for v in part]
        # Part 2: add the micro-batch gradients in global order (elementwise float32 adds:
        # the same operations, in the same order, as the single process does).
        np.copyto(grad_shard, all_g[0])
        for i in range(1, len(all_g)):
            grad_shard += all_g[i]

        if args.single:
            applied = opt.update()  # plain flatopt_optimizer_step over the whole buffer
        else:
            applied = sharded.step(opt, comm.world.allgather)
            comm.world.Allgatherv(
                MPI.IN_PLACE, [params, (shard_counts, shard_displs), MPI.FLOAT]
            )
        loss = 0.0
        for v in all_losses:
            loss += v
        loss *= scale
        log.append((step, loss, applied))
        if rank == 0 and not args.quiet and (step % args.log_every == 0 or not applied):
            note = "" if applied else "  (non-finite gradient: step skipped on every rank)"
            print(f"step {step:4d}  loss {loss:.4f}{note}", flush=True)

        if args.save_at is not None and step + 1 == args.save_at:
            save(args, comm, opt, params, step + 1)

    elapsed = time.perf_counter() - t0
    # Slow weights of every shard, gathered on rank 0 (in shard order).
    slow = opt.slow_weights[0]
    if not args.single:
        slow_parts = comm.world.gather(slow, root=0)
        if rank == 0:
            slow = np.concatenate(slow_parts)
    if rank == 0:
        acc = accuracy(params, xte, yte)
        how = "1 process (plain update)" if args.single else f"{size} rank(s), sharded"
        if args.allreduce:
            how += ", MPI_Allreduce"
        print(
            f"{how}: {args.steps - start} steps in {elapsed:.2f} s; final loss "
            f"{log[-1][1]:.4f}; test accuracy {acc:.3f}; applied {opt.step_count}, skipped "
            f"{opt.skipped_steps}; params fnv1a {fnv1a32(params.tobytes()):08x}",
            flush=True,
        )
        if args.out:
            np.savez(args.out, params=params, slow=slow, step_count=opt.step_count,
                     skipped=opt.skipped_steps, ranks=size)
    comm.barrier()
    return 0


def save(args, comm, opt, params, step):
    """One optimizer checkpoint per rank; the parameters and the index from rank 0."""
    os.makedirs(args.ckpt, exist_ok=True)
    path = os.path.join(args.ckpt, f"opt-{comm.rank}-of-{comm.size}.bin")
    with open(path, "wb") as f:
        f.write(sharded.save_checkpoint(opt))
    comm.barrier()
    if comm.rank == 0:
        np.save(os.path.join(args.ckpt, "params.npy"), params)
        with open(os.path.join(args.ckpt, "index.json"), "w") as f:
            json.dump({"step": step, "size": comm.size, "n_params": N_PARAMS}, f)
        if not args.quiet:
            print(f"saved a checkpoint after step {step} in {args.ckpt} ({comm.size} shards)")
    comm.barrier()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--single", action="store_true",
                    help="one process without MPI, plain opt.update() (the reference)")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--n-micro", type=int, default=12, help="micro-batches per step")
    ap.add_argument("--micro-size", type=int, default=16, help="samples per micro-batch")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--state-dtype", default="float32", choices=["float32", "bfloat16", "int8"],
                    help="how the moments are held (compressed state)")
    ap.add_argument("--rule", default="adam", choices=["adam", "lamb"],
                    help="the base rule of Lookahead")
    ap.add_argument("--clip", type=float, default=1.0, help="global-norm clip")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--nan-step", type=int, default=-1,
                    help="put a NaN into one gradient at this step (default: none)")
    ap.add_argument("--allreduce", action="store_true",
                    help="average the gradients with MPI_Allreduce instead of the fixed-order "
                    "reduce-scatter (for comparison: not bit-identical across rank counts)")
    ap.add_argument("--save-at", type=int, default=None, help="checkpoint after this step")
    ap.add_argument("--ckpt", default=None, help="checkpoint directory (--save-at)")
    ap.add_argument("--resume", default=None, help="resume from this checkpoint directory")
    ap.add_argument("--out", default=None, help="rank 0 writes params and slow weights (.npz)")
    ap.add_argument("--log-every", type=int, default=25)
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    if args.save_at is not None and not args.ckpt:
        ap.error("--save-at needs --ckpt DIR")
    return train(args)


if __name__ == "__main__":
    sys.exit(main())
