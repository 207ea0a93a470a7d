"""GradScaler.step + update() over a flatopt.torch AdamW step: torch.amp.GradScaler (its own
inf/NaN pass over the gradients, then flatopt's pass dividing by the scale) against
flatopt.torch.GradScaler (the check in flatopt's pass), with float32 and float16 gradients,
without and with max_grad_norm. Prints medians in milliseconds.

    python bindings/python/benchmarks/torch_amp.py [millions of elements, default 16]
"""

import os
import statistics
import sys
import time

import torch

import flatopt.torch as ft


def median_ms(f, rounds=9):
    f()
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        f()
        out.append(time.perf_counter() - t0)
    return statistics.median(out) * 1e3


def setup():
    """The element count (argv[1] in millions, default 16), one torch thread, the header."""
    n = int(float(sys.argv[1]) * 1e6) if len(sys.argv) > 1 else 16_000_000
    torch.set_num_threads(1)
    print(f"{n / 1e6:g} M elements in 8 tensors, 1 thread, load average "
          f"{os.getloadavg()[0]:.1f}")
    return n


def main():
    n = setup()
    for dtype in (torch.float32, torch.float16):
        for clip in (None, 1.0):
            row = []
            for scaler_class in (torch.amp.GradScaler, ft.GradScaler):
                ps = [torch.nn.Parameter(torch.randn(n // 8).to(dtype)) for _ in range(8)]
                for p in ps:
                    p.grad = (torch.randn(n // 8) * 1e-3).to(dtype)
                opt = ft.AdamW(ps, lr=1e-9, max_grad_norm=clip)
                scaler = scaler_class("cpu", init_scale=1024.0)

                def step():
                    scaler.scale(torch.ones(()))
                    scaler.step(opt)
                    scaler.update()

                row.append(median_ms(step))
            print(f"  {str(dtype):14s} max_grad_norm={clip!s:5s} torch.amp.GradScaler "
                  f"{row[0]:7.2f} ms   flatopt.torch.GradScaler {row[1]:7.2f} ms   "
                  f"({row[0] / row[1]:.2f}x)")


if __name__ == "__main__":
    main()
