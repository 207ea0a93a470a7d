"""The optimizer step of a model kept in bfloat16 (or float16 with a GradScaler): flatopt.torch
AdamW (float32 masters inside; 16-bit gradients read and 16-bit weights written in its pass)
against PyTorch's composition (the 16-bit gradients widened into float32 master gradients,
torch.optim.AdamW(fused=True) on the masters, the masters copied back into the 16-bit
weights). Medians in milliseconds, interleaved rounds.

    python bindings/python/benchmarks/torch_mixed.py [millions of elements, default 16]
"""

import statistics
import time

import torch
from torch_amp import setup  # (this directory)

import flatopt.torch as ft


def main():
    n = setup()
    for dtype in (torch.bfloat16, torch.float16):
        model = [torch.nn.Parameter(torch.randn(n // 8).to(dtype)) for _ in range(8)]
        grads = [(torch.randn(n // 8) * 1e-3).to(dtype) for _ in range(8)]
        mine = [torch.nn.Parameter(p.detach().clone()) for p in model]  # flatopt's own model
        ours = ft.AdamW(mine, lr=1e-9)
        masters = [p.detach().float().requires_grad_() for p in model]
        ref = torch.optim.AdamW(masters, lr=1e-9, fused=True)

        def flatopt_step():
            for p, g in zip(mine, grads):
                p.grad = g
            ours.step()

        def torch_step():
            for m, g in zip(masters, grads):
                m.grad = g.float()
            ref.step()
            with torch.no_grad():
                torch._foreach_copy_(model, masters)

        times = {"flatopt": [], "torch": []}
        for f in (flatopt_step, torch_step):
            f()
        for _ in range(9):
            for name, f in (("flatopt", flatopt_step), ("torch", torch_step)):
                t0 = time.perf_counter()
                f()
                times[name].append(time.perf_counter() - t0)
        a, b = (statistics.median(times[k]) * 1e3 for k in ("flatopt", "torch"))
        print(f"  {str(dtype):15s} flatopt.torch.AdamW {a:7.2f} ms   widen + fused AdamW + "
              f"copy_ {b:7.2f} ms   ({b / a:.2f}x)")


if __name__ == "__main__":
    main()
