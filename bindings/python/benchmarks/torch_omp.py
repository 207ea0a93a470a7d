"""The OpenMP interference on flatopt's step (issue 17): an AdamW step over 4 M floats in 40
tensors timed right after a PyTorch operation that ran on PyTorch's OpenMP threads ("hot":
their workers are still spin-waiting) and after a 50 ms pause ("cold": they sleep), for
flatopt on PyTorch's own intra-op threads (flatopt.torch's default, num_threads=None), with
its own pool of 1 and 2 threads, and for torch's fused AdamW, interleaved, medians.

    python bindings/python/benchmarks/torch_omp.py
    GOMP_SPINCOUNT=0 python bindings/python/benchmarks/torch_omp.py
    OMP_WAIT_POLICY=PASSIVE python bindings/python/benchmarks/torch_omp.py

(The environment variables act only when set before torch is imported: libgomp reads them
when it is loaded.)
"""

import os
import statistics
import sys
import time

import torch

import flatopt.torch as ft


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    torch.manual_seed(0)
    shapes = [(1000, 100)] * 40
    x = torch.randn(384, 384)

    def make(kind):
        ps = [torch.randn(s, requires_grad=True) for s in shapes]
        for p in ps:
            p.grad = torch.randn(s) * 1e-3 if (s := p.shape) else None
        if kind == "torch fused":
            return torch.optim.AdamW(ps, 1e-4, fused=True)
        if kind == "flatopt torch's":
            return ft.AdamW(ps, 1e-4)
        return ft.AdamW(ps, 1e-4, num_threads=int(kind[-1]))

    kinds = ["flatopt torch's", "flatopt t=1", "flatopt t=2", "torch fused"]
    opts = {k: make(k) for k in kinds}
    hot = {k: [] for k in kinds}
    cold = {k: [] for k in kinds}
    for r in range(rounds + 3):
        for k in kinds[r % len(kinds):] + kinds[: r % len(kinds)]:
            o = opts[k]
            for mode in (hot, cold):
                if mode is hot:
                    for _ in range(4):
                        x @ x  # PyTorch parallel work: its OpenMP workers spin afterwards
                else:
                    time.sleep(0.05)
                t0 = time.perf_counter()
                o.step()
                if r >= 3:
                    mode[k].append(time.perf_counter() - t0)
    print(f"AdamW step, 4.0 M floats in 40 tensors; torch {torch.get_num_threads()} threads; "
          f"GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT', '-')} "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '-')}; "
          f"load average {os.getloadavg()[0]:.1f}")
    for k in kinds:
        h = statistics.median(hot[k]) * 1e3
        c = statistics.median(cold[k]) * 1e3
        print(f"  {k:15}  after a torch op {h:7.2f} ms   after 50 ms {c:7.2f} ms   "
              f"hot/cold {h / c:.2f}")


if __name__ == "__main__":
    main()
