"""Where the Lookahead step time goes, without forward and backward: the GPT of torch_loop.py
(15.1 M parameters in 101 tensors) with fixed gradients, each variant on its own copy, the
variants interleaved; medians of the steps that sync (every k-th) and of the others, and the
period step ``((k-1) * other + sync) / k``.

    OMP_WAIT_POLICY=PASSIVE python bindings/python/benchmarks/torch_lookahead.py [periods]

The ratio of the two Lookahead variants is
``(fused + timm's sync / k) / (flatopt AdamW + flatopt's sync / k)``: flatopt's sync costs the
slow weights' read and write inside the pass (36 instead of 28 bytes per element on a sync
step), timm's two more passes (``lerp_`` and ``copy_``). See docs/torch.md.
"""

import os
import statistics
import sys
import time

import torch

import flatopt.torch as ft
from torch_loop import GPT, K, LR, WD, TimmLookahead

VARIANTS = {
    "torch fused": lambda ps: torch.optim.AdamW(ps, LR, weight_decay=WD, fused=True),
    "flatopt": lambda ps: ft.AdamW(ps, LR, weight_decay=WD),
    "timm LA(fused)": lambda ps: TimmLookahead(
        torch.optim.AdamW(ps, LR, weight_decay=WD, fused=True), 0.5, K),
    "flatopt LA": lambda ps: ft.Lookahead(ft.AdamW(ps, LR, weight_decay=WD), K, 0.5),
}


def main():
    periods = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    torch.manual_seed(0)
    base = [p.detach().clone() for p in GPT().parameters()]
    grads = [torch.randn_like(p) * 1e-3 for p in base]
    params = {n: [torch.nn.Parameter(p.clone()) for p in base] for n in VARIANTS}
    opts = {n: make(params[n]) for n, make in VARIANTS.items()}
    times = {n: ([], []) for n in VARIANTS}  # (other steps, sync steps)
    warmup = K
    for r in range(warmup + periods * K):
        for n, o in opts.items():
            for p, g in zip(params[n], grads):
                p.grad = g.clone()
            t0 = time.perf_counter()
            o.step()
            dt = time.perf_counter() - t0
            if r >= warmup:
                times[n][(r + 1) % K == 0].append(dt * 1e3)
    print(f"{sum(p.numel() for p in base) / 1e6:.1f} M parameters in {len(base)} tensors, "
          f"{periods} periods of {K}; load average {os.getloadavg()[0]:.1f}")
    period = {}
    for n, (other, sync) in times.items():
        a, b = statistics.median(other), statistics.median(sync)
        period[n] = ((K - 1) * a + b) / K
        print(f"{n:16} other steps {a:7.2f} ms  sync steps {b:7.2f} ms  period step "
              f"{period[n]:7.2f} ms")
    print(f"timm / flatopt Lookahead: {period['timm LA(fused)'] / period['flatopt LA']:.2f}; "
          f"the bound with a free sync, (fused + timm's sync / k) / flatopt AdamW: "
          f"{period['timm LA(fused)'] / period['flatopt']:.2f}")


if __name__ == "__main__":
    main()
