"""Per-step Python cost of flatopt.torch's step with tiny tensors (so the update itself is
negligible): the hand-over of the gradient pointers after zero_grad(set_to_none=True), which
makes new gradient tensors every step. Prints medians in microseconds for n tensors.

    python bindings/python/benchmarks/torch_handover.py [n_tensors]
"""

import os
import statistics
import sys
import time

import torch

import flatopt.torch as ft


def median_us(f, reps=2000, rounds=15):
    f()
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(reps):
            f()
        out.append((time.perf_counter() - t0) / reps * 1e6)
    return statistics.median(out)


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    torch.set_num_threads(1)
    ps = [torch.zeros(4, requires_grad=True) for _ in range(n)]
    grads = [torch.zeros(4) for _ in range(n)]
    opt = ft.SGD(ps, lr=0.0, num_threads=1)
    _grad = torch._C.TensorBase.grad.__set__

    def new_grads():  # what backward() does after zero_grad(set_to_none=True)
        for p, g in zip(ps, grads):
            _grad(p, g)

    opt.step()  # fills the pointer array the raw call below reuses
    c = opt._cohorts[0]

    def raw_call():
        opt._cohorts[0]  # noqa: B018 (the attribute read the step makes)
        ft._lib.optimizer_step_with_grads.raw(c.handle.ptr, c.ptrs, n)

    def handover():
        gs = list(map(ft._GRAD, c.params))
        c.ptrs[:] = list(map(ft._PTR, gs))
        all(map(ft._CONTIG, gs))
        ft._same_storage(c)

    def step():
        new_grads()
        opt.step()

    assign = median_us(new_grads)
    print(f"{n} tensors, load average {os.getloadavg()[0]:.1f}")
    print(f"  foreign call alone (SGD lr=0 on 4-float tensors): {median_us(raw_call):7.2f} us")
    print(f"  hand-over (.grad, data_ptr, is_contiguous, storage check): "
          f"{median_us(handover):7.2f} us")
    print(f"  opt.step() with hooks wrapper, minus the grad assignment: "
          f"{median_us(step) - assign:7.2f} us")
    print(f"  (for scale: [p.grad for p in params]: {median_us(lambda: [p.grad for p in ps]):7.2f} us)")


if __name__ == "__main__":
    main()
