"""Per-``update`` overhead of the Python binding for many small tensors.

    python bindings/python/benchmarks/overhead.py [--tensors 100] [--size 10] [--reps 20000]

Adam (no Lookahead, no clipping), 100 float32 arrays of 10 elements. Timed variants:

* ``update()`` with gradient arrays registered once (one foreign call, nothing marshalled);
* ``update(grads)`` passing the same gradient arrays every call (pointers cached per array);
* ``update(grads)`` with fresh arrays every call (every array checked and its address read);
* for scale, the library alone: one ``flatopt_optimizer_step`` through ctypes on the same
  handle (what the first variant costs without the Python method around it).

Prints the median and the 10th / 90th percentile in microseconds per update, over batches of
calls (the median of ``reps / batch`` batch means).
"""

import argparse
import statistics
import time

import numpy as np

import flatopt
from flatopt import _lib


def timed(fn, reps, batch=100):
    for _ in range(min(reps, 2000)):  # warm-up
        fn()
    means = []
    for _ in range(max(reps // batch, 1)):
        t0 = time.perf_counter_ns()
        for _ in range(batch):
            fn()
        means.append((time.perf_counter_ns() - t0) / batch / 1000)
    means.sort()
    q = lambda f: means[min(int(f * len(means)), len(means) - 1)]  # noqa: E731
    return statistics.median(means), q(0.1), q(0.9)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tensors", type=int, default=100)
    ap.add_argument("--size", type=int, default=10)
    ap.add_argument("--reps", type=int, default=20000)
    a = ap.parse_args()

    rng = np.random.default_rng(0)
    names = [f"t{i}" for i in range(a.tensors)]
    make = lambda: {n: rng.standard_normal(a.size).astype(np.float32) * 1e-3 for n in names}  # noqa: E731

    rows = []

    params, grads = make(), make()
    opt = flatopt.Adam(lr=1e-3)
    opt.register_trainable_weights(params, grads=grads)
    rows.append(("update(), grads registered", timed(opt.update, a.reps)))

    ptr = opt._handle.ptr
    step = _lib.optimizer_step
    rows.append(("  (library call alone via ctypes)", timed(lambda: step(ptr), a.reps)))

    params2, grads2 = make(), make()
    opt2 = flatopt.Adam(lr=1e-3)
    opt2.register_trainable_weights(params2)
    rows.append(("update(grads), same arrays", timed(lambda: opt2.update(grads2), a.reps)))

    pool = [make() for _ in range(64)]
    it = iter(range(1 << 62))
    rows.append((
        "update(grads), fresh arrays each call",
        timed(lambda: opt2.update(pool[next(it) % 64]), a.reps // 4),
    ))

    print(
        f"flatopt {flatopt.library_version} ({flatopt.library_path}), tier {opt.simd_tier}; "
        f"Adam, {a.tensors} tensors x {a.size} float32"
    )
    print(f"{'variant':<40} {'median us':>10} {'p10':>8} {'p90':>8}")
    for name, (med, lo, hi) in rows:
        print(f"{name:<40} {med:>10.2f} {lo:>8.2f} {hi:>8.2f}")


if __name__ == "__main__":
    main()
