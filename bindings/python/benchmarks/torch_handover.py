"""Per-step Python cost of flatopt.torch's step for a model of many small tensors (so that the
update itself is negligible): the hand-over of the gradient pointers, piece by piece, before
and after the rewrite of issue 17, the C++ extension's hand-over (flatopt/_torch_ext.py; built
first if needed), and the whole ``opt.step()`` with either hand-over.

The model is 100 ``nn.Linear(4, 4)`` layers: 200 ``nn.Parameter``s, what models have (reads
of a Parameter's attributes cost more than a plain tensor's). Two cases:

* new gradients each step (``zero_grad(set_to_none=True)``, PyTorch's default): three sets of
  gradient tensors assigned in turn, so that every step sees other objects at other addresses;
* the same gradient tensors each step (``zero_grad(set_to_none=False)``).

Medians over rounds of many calls, in microseconds. Then the same model in a real loop
(forward, backward, step; medians over 2800 iterations): right after ``backward()`` the
gradients have no Python objects yet, and the first ``.grad`` read of each makes one; the
pieces of the hand-over timed there, the whole hand-over either way, the foreign call, and
the whole ``opt.step()`` of flatopt's AdamW (either hand-over) beside
``torch.optim.AdamW(fused=True)``'s.

    python bindings/python/benchmarks/torch_handover.py [n_tensors]
"""

import ctypes
import os
import statistics
import sys
import time

import torch

import flatopt.torch as ft

EXT = ft._torch_ext.load()  # the C++ hand-over (built now if needed), or None


def extension_hand_over(c):
    """The C++ hand-over of cohort `c` (what an optimizer made with it has), or None."""
    if EXT is None:
        return None
    return EXT.HandOver(c.params, c.pptrs, ctypes.addressof(c.ptrs), c.ptrs)


def hand_over_with(module):
    """The optimizers made from now on hand over through `module` (None: the Python reads)."""
    ft._torch_ext._loaded = {"module": module}


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
    model = torch.nn.Sequential(*[torch.nn.Linear(4, 4) for _ in range(n // 2)])
    ps = list(model.parameters())
    sets = [[torch.zeros_like(p) for p in ps] for _ in range(3)]
    hand_over_with(None)
    opt = ft.SGD(ps, lr=0.0)
    setter = torch._C.TensorBase.grad.__set__
    turn = [0]

    def new_grads():  # what backward() does after zero_grad(set_to_none=True)
        turn[0] = (turn[0] + 1) % 3
        for p, g in zip(ps, sets[turn[0]]):
            setter(p, g)

    new_grads()
    opt.step()
    c = opt._cohorts[0]
    grads = [p.grad for p in ps]
    ptrs = list(map(ft._PTR, grads))
    index = list(range(n))

    def before():  # the hand-over as shipped before issue 17's rewrite
        gs = list(map(ft._GRAD, c.params))
        c.ptrs[:] = list(map(ft._PTR, gs))
        all(map(ft._CONTIG, gs)) and list(map(ft._PTR, c.params)) == c.pptrs

    def after():
        ft._hand_over(c)

    fast = extension_hand_over(c)

    def raw_call():
        ft._lib.optimizer_step_with_grads.raw(c.handle.ptr, c.ptrs, n)

    def assign_and(f):
        def g():
            new_grads()
            f()
        return g

    print(f"{n} nn.Parameters, load average {os.getloadavg()[0]:.1f}; microseconds per step")
    rows = [
        ("pieces", None),
        ("  .grad reads, comprehension [p.grad for p in ps]", lambda: [p.grad for p in ps]),
        ("  .grad reads, list(map(getter, ps))", lambda: list(map(ft._GRAD, ps))),
        ("  data_ptr() of each gradient, list(map(...))", lambda: list(map(ft._PTR, grads))),
        ("  the pointers into the ctypes array", lambda: c.ptrs.__setitem__(slice(None), ptrs)),
        ("  is_contiguous() of each gradient", lambda: all(map(ft._CONTIG, grads))),
        ("  parameters' pointers, list(map(...)) ==", lambda: list(map(ft._PTR, ps)) == c.pptrs),
        ("  parameters' pointers compared in one C call (PyTorch's)",
         lambda: torch._C._tensors_data_ptrs_at_indices_equal(ps, c.pptrs, index)),
        ("hand-over", None),
    ]
    assign = median_us(new_grads)
    for name, f in rows:
        print(name if f is None else f"{name:56} {median_us(f):7.2f}")
    ways = [("before", before), ("after", after)]
    if fast is not None:
        ways.append(("extension", fast))
    else:
        print("  (the C++ extension is not available: see the warning above)")
    for label, f in ways:
        print(f"  {label + ', new gradients each step':54} "
              f"{median_us(assign_and(f)) - assign:7.2f}")
        print(f"  {label + ', the same gradients each step':54} {median_us(f):7.2f}")
    print("the step")
    print(f"  {'the foreign call alone (SGD lr=0, 200 tiny buffers)':54} "
          f"{median_us(raw_call):7.2f}")
    for label, module in (("Python hand-over", None), ("extension", EXT)):
        if label == "extension" and module is None:
            continue
        hand_over_with(module)
        step = ft.SGD(ps, lr=0.0).step
        print(f"  {'opt.step() (' + label + '), new gradients each step':54} "
              f"{median_us(assign_and(step)) - assign:7.2f}")
        print(f"  {'opt.step() (' + label + '), the same gradients':54} "
              f"{median_us(step):7.2f}")


def in_the_loop(n, iters=3000, warmup=200):
    def model_and_batch():
        torch.manual_seed(0)
        return torch.nn.Sequential(*[torch.nn.Linear(4, 4) for _ in range(n // 2)]), \
            torch.randn(2, 4)

    model, x = model_and_batch()
    ps = list(model.parameters())
    hand_over_with(None)
    opt = ft.AdamW(ps, lr=1e-4)
    opt.zero_grad()
    model(x).sum().backward()
    opt.step()
    c = opt._cohorts[0]
    names = [".grad, first read after backward()", ".grad, read again",
             "data_ptr() of each gradient", "the pointers into the ctypes array",
             "is_contiguous() of each gradient", "the parameters' pointers compared",
             "the foreign call (AdamW)"]
    times = {k: [] for k in names}
    for i in range(iters):
        opt.zero_grad()
        model(x).sum().backward()
        t = [time.perf_counter()]
        grads = [p.grad for p in ps]
        t.append(time.perf_counter())
        grads = [p.grad for p in ps]
        t.append(time.perf_counter())
        ptrs = list(map(ft._PTR, grads))
        t.append(time.perf_counter())
        c.ptrs[:] = ptrs
        t.append(time.perf_counter())
        all(map(ft._CONTIG, grads))
        t.append(time.perf_counter())
        ft._same_storage(c)
        t.append(time.perf_counter())
        ft._lib.optimizer_step_with_grads.raw(c.handle.ptr, c.ptrs, n)
        t.append(time.perf_counter())
        if i >= warmup:
            for k, a, b in zip(names, t, t[1:]):
                times[k].append(b - a)
    print(f"in a real loop (forward, backward, step; {iters - warmup} iterations)")
    for k in names:
        print(f"  {k:54} {statistics.median(times[k]) * 1e6:7.2f}")
    fast = extension_hand_over(c)
    for label, f in (("Python, _hand_over", lambda: ft._hand_over(c)), ("the extension", fast)):
        if f is None:
            continue
        whole = []
        for i in range(iters):
            opt.zero_grad()
            model(x).sum().backward()
            t0 = time.perf_counter()
            ok = f()
            whole.append(time.perf_counter() - t0)
            assert ok
            ft._lib.optimizer_step_with_grads.raw(c.handle.ptr, c.ptrs, n)
        print(f"  {'the hand-over as a whole (' + label + ')':54} "
              f"{statistics.median(whole[warmup:]) * 1e6:7.2f}")
    for label, make in (("flatopt.torch.AdamW (Python hand-over)",
                         lambda ps: (hand_over_with(None), ft.AdamW(ps, lr=1e-4))[1]),
                        ("flatopt.torch.AdamW (extension)",
                         lambda ps: (hand_over_with(EXT), ft.AdamW(ps, lr=1e-4))[1]),
                        ("torch.optim.AdamW(fused=True)",
                         lambda ps: torch.optim.AdamW(ps, lr=1e-4, fused=True))):
        if "extension" in label and EXT is None:
            continue
        model, x = model_and_batch()
        opt = make(list(model.parameters()))
        steps = []
        for i in range(iters):
            opt.zero_grad()
            model(x).sum().backward()
            t0 = time.perf_counter()
            opt.step()
            steps.append(time.perf_counter() - t0)
        print(f"  {'opt.step() of ' + label:54} {statistics.median(steps[warmup:]) * 1e6:7.2f}")


if __name__ == "__main__":
    main()
    in_the_loop(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
