#!/usr/bin/env python3
"""ZeRO stage 1 over torch.distributed (gloo) with flatopt: each rank keeps the optimizer state
of its shard only, and the run is bit-identical to one process.

    python examples/torch/train_zero1.py --ranks 2      # 2 processes (gloo, on this machine)
    python examples/torch/train_zero1.py --single       # one process: the reference

The model is a PyTorch MLP 32-256-16 (tanh) regressing a fixed random teacher network; its
12,560 parameters are moved into ONE flat float32 tensor (each ``nn.Parameter`` becomes a view
of it), which every rank keeps whole for the forward and backward pass. The optimizer is
flatopt's Lookahead(AdamW) with clipping by global norm; each rank registers only its
contiguous, block-aligned shard of the flat tensor (``flatopt.sharded.shard_ranges``), so the
moments and slow weights of the other shards exist on no other rank. One step:

1. The global batch is cut into micro-batches; rank r computes the gradients of a contiguous
   run of them (``torch.autograd.grad`` per micro-batch, flattened in parameter order).
2. Fixed-order reduce-scatter: ``all_to_all_single`` sends each rank the slices of every
   micro-batch gradient that fall into its shard; the rank adds them in global micro-batch
   order. (``all_reduce`` adds in an order that depends on the rank count: the result would
   differ in the last bits between 1, 2 and 3 ranks.)
3. The two-phase step: the block partial sums of squares of the gradient shard
   (``opt.sum_squares_partials()``) are exchanged (``all_gather_object``), added in global
   block order (``flatopt.sharded.step``), and ``update_with_sum_squares`` clips with that
   global norm (skipping the step on every rank if any gradient is NaN/Inf).
4. Every rank broadcasts its updated shard: all ranks have the whole model again.

The single process computes every micro-batch itself, adds them in the same order and calls
the plain ``opt.update()`` over the whole buffer: the parameters and slow weights printed (and
written with ``--out``) are the same bits for any rank count, which
bindings/python/tests/test_torch_distributed.py checks for 1, 2 and 3 ranks.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import zlib

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
import torch.nn.functional as F

import flatopt
from flatopt import sharded

D_IN, HIDDEN, D_OUT = 32, 256, 16


def model_and_flat(seed):
    """The MLP with its parameters moved into one flat float32 tensor (returned too)."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(D_IN, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, D_OUT))
    params = list(model.parameters())
    flat = torch.zeros(sum(p.numel() for p in params))
    at = 0
    for p in params:
        n = p.numel()
        flat[at : at + n] = p.detach().reshape(-1)
        p.data = flat[at : at + n].view_as(p)  # the parameter is now a view of `flat`
        at += n
    return model, params, flat


def batch(step, i, micro_size, seed):
    """Micro-batch `i` of step `step` (a function of both alone) and its teacher targets."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + step * 1009 + i)
    x = torch.randn(micro_size, D_IN, generator=g)
    teacher = torch.Generator().manual_seed(seed + 17)
    w = torch.randn(D_IN, D_OUT, generator=teacher) / D_IN**0.5
    return x, torch.sin(x @ w)


def micro_range(rank, size, n_micro):
    """The contiguous run of micro-batches rank `rank` computes."""
    base, extra = divmod(n_micro, size)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)


def make_optimizer(args):
    rule = {"adamw": flatopt.adamw, "lamb": flatopt.lamb}[args.rule]
    return flatopt.Lookahead(
        rule(args.lr, weight_decay=1e-2),
        sync_period=5,
        alpha=0.5,
        grad_clip_norm=args.clip,
    )


def allgather_objects(mine):
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, mine)
    return out


def train(rank, size, args, store_path):
    torch.set_num_threads(1)  # the same bits from every process
    single = store_path is None
    if not single:
        dist.init_process_group("gloo", init_method=f"file://{store_path}", rank=rank,
                                world_size=size)
    model, params, flat = model_and_flat(args.seed)
    n = flat.numel()
    ranges = sharded.shard_ranges(n, size)
    b, e = ranges[rank]
    grad_shard = torch.zeros(e - b)
    opt = make_optimizer(args)
    # This rank's shard of the flat tensor (NumPy views share the memory): the update lands in
    # `flat`, so in the model's parameters.
    opt.register_trainable_weights([flat.numpy()[b:e]], grads=[grad_shard.numpy()])

    lo, hi = micro_range(rank, size, args.n_micro)
    micro_counts = [micro_range(r, size, args.n_micro) for r in range(size)]
    scale = 1.0 / (args.n_micro * args.micro_size)
    for step in range(args.steps):
        mine = torch.empty(hi - lo, n)
        for i in range(lo, hi):
            x, y = batch(step, i, args.micro_size, args.seed)
            loss = F.mse_loss(model(x), y, reduction="sum") * scale
            grads = torch.autograd.grad(loss, params)
            torch.cat([g.reshape(-1) for g in grads], out=mine[i - lo])
        if step == args.nan_step and lo <= args.n_micro - 1 < hi:
            mine[args.n_micro - 1 - lo, n - 5] = float("nan")  # the last shard's last rank
        if single:
            all_g = mine  # every micro-batch, in global order
        else:
            # To rank j: [my micro-batches x shard j]; from rank j: [its micro-batches x mine].
            send = torch.cat([mine[:, rb:re].reshape(-1) for rb, re in ranges])
            recv = torch.empty(args.n_micro * (e - b))
            dist.all_to_all_single(
                recv, send,
                output_split_sizes=[(mh - ml) * (e - b) for ml, mh in micro_counts],
                input_split_sizes=[(hi - lo) * (re - rb) for rb, re in ranges],
            )
            all_g = recv.view(args.n_micro, e - b)  # rank order = micro-batch order
        # Add the micro-batch gradients in global order: the same float32 additions, in the
        # same order, as the single process.
        grad_shard.copy_(all_g[0])
        for i in range(1, args.n_micro):
            grad_shard += all_g[i]
        if single:
            applied = opt.update()
        else:
            applied = sharded.step(opt, allgather_objects)
            for r, (rb, re) in enumerate(ranges):
                dist.broadcast(flat[rb:re], src=r)
        if rank == 0 and not args.quiet and (step % 20 == 0 or not applied):
            note = "" if applied else "  (non-finite gradient: skipped on every rank)"
            print(f"step {step:4d}{note}", flush=True)

    slow = torch.from_numpy(np.ascontiguousarray(opt.slow_weights[0]))
    if not single:
        parts = allgather_objects(slow)
        slow = torch.cat(parts)
    if rank == 0:
        how = "1 process" if single else f"{size} ranks (gloo), sharded"
        crc = zlib.crc32(flat.numpy().tobytes() + slow.numpy().tobytes())
        print(f"{how}: {args.steps} steps, applied {opt.step_count}, skipped "
              f"{opt.skipped_steps}; state per rank {4 * 3 * (e - b)} bytes of "
              f"{4 * 3 * n}; params + slow weights crc32 {crc:08x}", flush=True)
        if args.out:
            torch.save({"params": flat.clone(), "slow": slow.clone(),
                        "applied": int(opt.step_count), "skipped": int(opt.skipped_steps)},
                       args.out)
    if not single:
        dist.barrier()
        dist.destroy_process_group()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--single", action="store_true", help="one process, no torch.distributed")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--n-micro", type=int, default=6)
    ap.add_argument("--micro-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--clip", type=float, default=0.5)
    ap.add_argument("--rule", default="adamw", choices=["adamw", "lamb"],
                    help="the base rule of Lookahead (lamb: a trust ratio per buffer, here the "
                    "one flat buffer: sharded.step exchanges its norm partials too)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--nan-step", type=int, default=-1,
                    help="put a NaN into one gradient at this step (skipped everywhere)")
    ap.add_argument("--out", help="write the final parameters and slow weights (torch.save)")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    if args.single:
        train(0, 1, args, None)
        return 0
    if not (dist.is_available() and dist.is_gloo_available()):
        print("torch.distributed with the gloo backend is not available in this torch build",
              file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(train, args=(args.ranks, args, os.path.join(tmp, "store")),
                 nprocs=args.ranks)
    return 0


if __name__ == "__main__":
    sys.exit(main())
