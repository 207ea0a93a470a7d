#!/usr/bin/env python3
"""flatopt side by side with PyTorch, DeepSpeed, NumPy and optax, next to a memory-bandwidth probe.

    python benches/compare/compare.py            # the full Adam comparison (run.sh sets it up)
    python benches/compare/compare.py --family   # every base rule vs PyTorch and optax (below)
    python benches/compare/compare.py --quick    # seconds: sanity checks only (make test)

What runs, interleaved by repetition in one process (and the C driver as a subprocess between
them), at every size and thread count, on identical random data (never zeros; the same
generator and seeds in C and Python: probe.c):

* ``probe``: a plain C loop with Adam's memory pattern (probe.c, -O3 -march=native), called
  through ctypes in this process: what the machine can move (28 bytes per element).
* ``flatopt-py``: flatopt through its Python binding (one ctypes call per step, gradients
  registered): Adam with the non-finite check off (``propagate``), Adam with the default
  check (``skip``, +4 B/element), and the full pipeline.
* ``flatopt-c``: the same through the C driver (driver.c), to separate the ctypes overhead,
  with the driver's own probe (``c-probe``), the best plain C Adam a compiler gives
  (``c-adam``: the same formula as a simple loop, gcc -O3 -march=native -fno-math-errno), and
  the floor of exact arithmetic (``c-floor``: one sqrt and one division per element and
  nothing else, in cache, one thread). The C driver's figures are compared with the C driver's
  probe (same process, same run).
* ``torch-fused`` / ``torch-foreach``: ``torch.optim.Adam(fused=True)`` / ``(foreach=True)``.
* ``torch-pipeline``: ``clip_grad_norm_(foreach=True)`` + ``Adam(fused=True, weight_decay)``
  + a Lookahead sync every k steps exactly as timm's ``Lookahead`` does it.
* ``deepspeed``: ``DeepSpeedCPUAdam(adamw_mode=False)`` (its C++ op is built on first use;
  skipped with the reason if that fails).
* ``numpy``: Adam (and the pipeline) with NumPy ufuncs into preallocated temporaries; on two
  threads the arrays are split in halves run by two Python threads (ufuncs release the GIL).
* compressed state (issue 16): ``flatopt-py`` Adam with m and v in bf16 or in 8 bits
  (``state_dtype``), next to ``bitsandbytes``' ``Adam8bit`` (blockwise 8-bit state on the CPU;
  skipped with the reason when bitsandbytes is not installed or its CPU step fails).

The pipeline is Lookahead(Adam) with k = 5, alpha = 0.5, coupled weight decay 1e-4 and
global-norm clipping at max_norm = 4 * sqrt(n), above the gradients' norm, so the gradients
are not changed (PyTorch multiplies them by the clamped factor 1.0 anyway; flatopt scales in
registers when clipping: the same work either way). Bytes it must move: 28 per element for the
update, 4 for the norm pass, 8/k for the syncs.

The gradients are random with magnitudes in [1, 2) (never near zero) and stay the same every
step. With a constant gradient, coupled weight decay would otherwise cancel it, g + wd * p = 0,
once a parameter reached -g / wd; from there the moments decay into subnormal floats, which
every CPU computes several times slower. The fast implementations run millions of steps at
small sizes and would reach that regime, the slow ones would not: the comparison would time
subnormal arithmetic. With |g| >= 1 the parameters would have to move 10^4 to get there.

Each (size, threads) point: every implementation is warmed up, then timed over blocks of steps
(at least --min-time seconds and 5 steps per block, a multiple of k); --reps blocks per
implementation, in rotating order. Medians and the interquartile spread are reported. Sizes
whose state does not fit the memory budget are run one implementation at a time (set up, warm
up, time, free) within each repetition.

Outputs (full mode): benches/compare/results/<date>.{md,json,png} and latest.{md,json,png}.

``--family``: every base rule flatopt has (the FAMILY table, one row per rule) through the
Python binding, against PyTorch's fastest implementation of the rule (``fused=True`` where
torch.optim has a fused CPU kernel for it, else ``foreach=True``) and optax's under
``jax.jit`` (update + apply_updates, params and state donated), next to a C probe with the
rule's own memory pattern; identical data and hyperparameters, agreement checked first
(benches/compare/README.md). Outputs results/<date>-family.{md,json} and latest-family.*.
"""

import argparse
import contextlib
import ctypes
import datetime as _dt
import gc
import io
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
BUILD = os.path.join(ROOT, "target", "compare")

# Shared with driver.c (keep in sync).
# (seed, scale): p, m, v uniform in (-scale, scale); g of magnitude in [scale, 2 scale) with
# random sign (compare_fill_gradient: bounded away from zero, see probe.c).
DATA = {"p": (1, 1.0), "g": (2, 1.0), "m": (3, 0.001), "v": (4, 0.001)}
LR, B1, B2, EPS = 1e-3, 0.9, 0.999, 1e-8
WEIGHT_DECAY, SYNC_PERIOD, ALPHA = 1e-4, 5, 0.5
BYTES = {"adam": 28.0, "adam-skip": 32.0, "pipeline": 32.0 + 8.0 / SYNC_PERIOD, "probe": 28.0,
         "floor": 12.0,
         # Mixed precision (issue 15): Adam reading a 2-byte gradient and writing a 2-byte copy
         # of the parameters, 28 B/element like f32 Adam; "mixed" is its probe.
         "mixed": 28.0, "mixed-bf16": 28.0, "mixed-fp16": 28.0,
         # Compressed state (issue 16): p read and written, g read (12 B) plus m and v read and
         # written in bf16 (8 B), or in 8 bits with one f32 scale per 256-element block of
         # each (4 + 4 * 4 / 256 B).
         "adam-bf16": 20.0, "adam-int8": 16.0 + 16.0 / 256}
# Optimizer state bytes per element held for Adam (m and v), per workload.
STATE_BYTES = {"adam": 8.0, "adam-bf16": 4.0, "adam-int8": 2.0 + 8.0 / 256}
# The loss scale of the fp16 workloads (a power of two, as GradScaler's is).
FP16_SCALE = 1024.0


def max_norm_for(n):
    return 4.0 * DATA["g"][1] * math.sqrt(n)  # above the gradients' norm (< 2 scale sqrt(n))


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# The probe library (C, ctypes) and the data


class Probe:
    def __init__(self, path):
        self.lib = ctypes.CDLL(path)
        f32p = ctypes.POINTER(ctypes.c_float)
        self.lib.compare_fill_random.argtypes = [f32p, ctypes.c_size_t, ctypes.c_uint64,
                                                 ctypes.c_float]
        self.lib.compare_fill_random.restype = None
        self.lib.compare_fill_gradient.argtypes = self.lib.compare_fill_random.argtypes
        self.lib.compare_fill_gradient.restype = None
        self.lib.compare_probe.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_size_t, ctypes.c_int]
        self.lib.compare_probe.restype = ctypes.c_int
        self.lib.compare_probe_states.argtypes = [ctypes.c_void_p] * 5 + [
            ctypes.c_size_t, ctypes.c_int, ctypes.c_int]
        self.lib.compare_probe_states.restype = ctypes.c_int
        self.lib.compare_probe_passes.argtypes = [ctypes.c_void_p] * 4 + [
            ctypes.c_size_t, ctypes.c_size_t, ctypes.c_int, ctypes.c_int]
        self.lib.compare_probe_passes.restype = ctypes.c_int
        self.lib.compare_probe_mixed.argtypes = [ctypes.c_void_p] * 5 + [ctypes.c_size_t,
                                                                          ctypes.c_int]
        self.lib.compare_probe_mixed.restype = ctypes.c_int

    def random(self, n, which):
        seed, scale = DATA[which]
        x = np.empty(n, dtype=np.float32)
        fill = self.lib.compare_fill_gradient if which == "g" else self.lib.compare_fill_random
        fill(x.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), n, seed, scale)
        return x


# ---------------------------------------------------------------------------------------------
# Implementations. Each: make(ctx, n, threads, p0, g) -> (step, sync[, read]). `step()` does one
# full update; `sync()` (or None) waits until the updates issued so far are done (JAX dispatches
# asynchronously: the timers call it at the end of every block); `read()` (the family's
# implementations) returns the parameters as a NumPy array. `p0` must not be modified (copy it).


class Unavailable(Exception):
    pass


def _torch():
    try:
        import torch
    except Exception as e:  # noqa: BLE001
        raise Unavailable(f"torch not importable ({type(e).__name__}: {e})") from None
    return torch


def make_probe(ctx, n, threads, p0, g):
    p, m, v = p0.copy(), ctx.probe.random(n, "m"), ctx.probe.random(n, "v")
    fn = ctx.probe.lib.compare_probe
    args = (p.ctypes.data, g.ctypes.data, m.ctypes.data, v.ctypes.data, n, threads)
    keep = (p, g, m, v)  # the closure holds the arrays: `args` only has their addresses

    def step():
        fn(*args)
        return keep
    return step, None


def make_probe_mixed(ctx, n, threads, p0, g):
    p, m, v = p0.copy(), ctx.probe.random(n, "m"), ctx.probe.random(n, "v")
    g16 = (g.view(np.uint32) >> 16).astype(np.uint16)  # bf16 bits
    c = np.empty(n, np.uint16)
    fn = ctx.probe.lib.compare_probe_mixed
    args = (p.ctypes.data, g16.ctypes.data, m.ctypes.data, v.ctypes.data, c.ctypes.data, n,
            threads)
    keep = (p, g16, m, v, c)

    def step():
        fn(*args)
        return keep
    return step, None


def _half(kind, x):
    """The 16-bit gradients of a mixed workload (`x` times the loss scale for fp16, rounded):
    a torch bf16 / fp16 tensor when torch is importable (the PyTorch composition uses the same
    ones), else a NumPy float16 or ml_dtypes bfloat16 array."""
    x = x * np.float32(FP16_SCALE) if kind == "fp16" else x
    try:
        import torch
        return torch.from_numpy(x).to(torch.bfloat16 if kind == "bf16" else torch.float16)
    except ImportError:
        pass
    if kind == "fp16":
        return x.astype(np.float16)
    try:
        import ml_dtypes
    except ImportError:
        raise Unavailable("bf16 needs torch or ml_dtypes") from None
    return x.astype(ml_dtypes.bfloat16)


def _empty_like_half(h):
    return h.new_empty(h.shape) if hasattr(h, "new_empty") else np.empty_like(h)


def make_flatopt_mixed(kind):
    """Adam over f32 master weights with 16-bit gradients and a 16-bit copy written in the
    pass; fp16 under flatopt.DynamicLossScale (the default non-finite check included)."""
    def make(ctx, n, threads, p0, g):
        import flatopt
        p = p0.copy()
        g16 = _half(kind, g)
        w16 = _empty_like_half(g16)
        opt = flatopt.Adam(lr=LR, betas=(B1, B2), eps=EPS, num_threads=threads)
        if kind == "fp16":
            opt.loss_scale = flatopt.DynamicLossScale(init_scale=FP16_SCALE)
        opt.register_trainable_weights([p], grads=[g16], copies=[w16])
        keep = (p, g16, w16)

        def step():
            opt.update()
            return keep
        return step, None
    return make


def make_torch_mixed(kind):
    """PyTorch's composition: the 16-bit gradients converted into the f32 master weights'
    .grad, for fp16 GradScaler's unscale_ (non-finite check and division), fused Adam, and the
    new weights copy_'d into the 16-bit model weights."""
    def make(ctx, n, threads, p0, g):
        torch = _torch()
        torch.set_num_threads(threads)
        g16 = _half(kind, g)
        master = torch.nn.Parameter(torch.from_numpy(p0.copy()))
        master.grad = torch.empty(n, dtype=torch.float32)
        w16 = torch.empty(n, dtype=g16.dtype)
        opt = torch.optim.Adam([master], lr=LR, betas=(B1, B2), eps=EPS, fused=True)
        weights = master.detach()
        if kind == "bf16":
            def step():
                master.grad.copy_(g16)
                opt.step()
                w16.copy_(weights)
        else:
            scaler = torch.amp.GradScaler("cpu", init_scale=FP16_SCALE)
            scaler.scale(torch.ones(()))  # creates its scale tensor (it does so lazily)

            def step():
                master.grad.copy_(g16)
                scaler.unscale_(opt)
                scaler.step(opt)
                scaler.update()
                w16.copy_(weights)
        return step, None
    return make


def make_flatopt(workload):
    def make(ctx, n, threads, p0, g):
        import flatopt
        p = p0.copy()
        if workload == "pipeline":
            opt = flatopt.Lookahead(
                flatopt.adam(LR, b1=B1, b2=B2, eps=EPS), sync_period=SYNC_PERIOD, alpha=ALPHA,
                weight_decay=WEIGHT_DECAY, grad_clip_norm=max_norm_for(n), num_threads=threads)
        elif workload in ("adam-bf16", "adam-int8"):
            dtype = "bfloat16" if workload == "adam-bf16" else "int8"
            opt = flatopt.Adam(lr=LR, betas=(B1, B2), eps=EPS, num_threads=threads,
                               nonfinite="propagate", state_dtype=dtype)
        else:
            opt = flatopt.Adam(lr=LR, betas=(B1, B2), eps=EPS, num_threads=threads,
                               nonfinite="propagate" if workload == "adam" else "skip")
        opt.register_trainable_weights([p], grads=[g])
        return opt.update, None
    return make


def _torch_param(torch, p0, g):
    p = torch.nn.Parameter(torch.from_numpy(p0.copy()))
    p.grad = torch.from_numpy(g)  # shared, never written (clip factor is 1.0: see module doc)
    return p


def make_torch_adam(kind):
    def make(ctx, n, threads, p0, g):
        torch = _torch()
        torch.set_num_threads(threads)
        p = _torch_param(torch, p0, g)
        opt = torch.optim.Adam([p], lr=LR, betas=(B1, B2), eps=EPS, **{kind: True})
        return opt.step, None
    return make


class TimmLookahead:
    """timm.optim.Lookahead (timm 1.0, timm/optim/lookahead.py), reproduced: after the base
    step, every k steps ``slow.add_(fast_p - slow, alpha=alpha); fast_p.copy_(slow)`` per
    parameter (the slow buffer cloned from the parameter at the first sync)."""

    def __init__(self, torch, base, alpha=0.5, k=6):
        self.torch, self.base, self.alpha, self.k = torch, base, alpha, k
        self.count = 0
        self.slow = {}

    def update_slow(self):
        for group in self.base.param_groups:
            for fast_p in group["params"]:
                if fast_p.grad is None:
                    continue
                slow = self.slow.get(fast_p)
                if slow is None:
                    slow = self.slow[fast_p] = self.torch.empty_like(fast_p)
                    slow.copy_(fast_p)
                slow.add_(fast_p - slow, alpha=self.alpha)
                fast_p.copy_(slow)

    def step(self):
        with self.torch.no_grad():
            self.base.step()
            self.count += 1
            if self.count % self.k == 0:
                self.update_slow()


def make_torch_pipeline(ctx, n, threads, p0, g):
    torch = _torch()
    torch.set_num_threads(threads)
    p = _torch_param(torch, p0, g)
    params = [p]
    base = torch.optim.Adam(params, lr=LR, betas=(B1, B2), eps=EPS, fused=True,
                            weight_decay=WEIGHT_DECAY)
    la = TimmLookahead(torch, base, alpha=ALPHA, k=SYNC_PERIOD)
    max_norm = max_norm_for(n)
    clip = torch.nn.utils.clip_grad_norm_

    def step():
        clip(params, max_norm, foreach=True)
        la.step()
    return step, None


_DS = {}


def _deepspeed_adam():
    if "cls" in _DS:
        return _DS["cls"]
    if "err" in _DS:
        raise Unavailable(_DS["err"])
    try:
        _torch()
        import contextlib
        import io
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            from deepspeed.ops.adam import DeepSpeedCPUAdam
            import torch
            t0 = time.time()
            # Build (or load the cached build of) the op now, not inside a timed step.
            DeepSpeedCPUAdam([torch.nn.Parameter(torch.ones(8))], lr=LR)
        log(f"  deepspeed: cpu_adam op ready in {time.time() - t0:.1f} s")
        _DS["cls"] = DeepSpeedCPUAdam
    except Unavailable as e:
        _DS["err"] = str(e)
        raise
    except Exception as e:  # noqa: BLE001
        msg = str(e).strip().splitlines()
        cause = e.__cause__
        _DS["err"] = (f"DeepSpeedCPUAdam unavailable: {type(e).__name__}: "
                      f"{msg[-1] if msg else ''}"
                      + (f" (cause: {type(cause).__name__}: {str(cause)[:200]})" if cause else ""))
        raise Unavailable(_DS["err"]) from None
    return _DS["cls"]


def make_deepspeed(ctx, n, threads, p0, g):
    cls = _deepspeed_adam()
    torch = _torch()
    torch.set_num_threads(threads)
    p = _torch_param(torch, p0, g)
    opt = cls([p], lr=LR, betas=(B1, B2), eps=EPS, weight_decay=0.0, adamw_mode=False)

    def step():
        with torch.no_grad():
            opt.step()
    return step, None


def make_deepspeed_mixed(ctx, n, threads, p0, g):
    """DeepSpeed's fp16 step over f32 master weights. Releases whose
    `DeepSpeedCPUAdam.step` takes `fp16_param_groups` write the fp16 copy inside the step
    (ZeRO-Offload's old path): f32 gradients, the copy written in its loop. Later ones (0.19.8
    on PyPI when this was written) dropped the argument (their CPU Adam takes fp16 / bf16
    parameters themselves, without f32 master weights), and ZeRO-Offload composes the step from
    tensor operations: the fp16 gradients converted into the f32 master's `.grad`, unscaled
    (`mul_(1 / scale)`, as ZeRO's `unscale_and_clip_grads`), `DeepSpeedCPUAdam.step()`, and the
    new weights `copy_`'d into the fp16 model weights; that composition is measured then (its
    overflow check, which ZeRO runs on the device, left out). Which one ran is in
    `DEEPSPEED_MIXED_MODE` and the results' notes."""
    import inspect
    cls = _deepspeed_adam()
    torch = _torch()
    torch.set_num_threads(threads)
    if "fp16_param_groups" in inspect.signature(cls.step).parameters:
        DEEPSPEED_MIXED_MODE["mode"] = "step(fp16_param_groups=...)"
        p = _torch_param(torch, p0, g)
        opt = cls([p], lr=LR, betas=(B1, B2), eps=EPS, weight_decay=0.0, adamw_mode=False)
        w16 = [[torch.empty(n, dtype=torch.float16)]]

        def step():
            with torch.no_grad():
                opt.step(fp16_param_groups=w16)
    else:
        DEEPSPEED_MIXED_MODE["mode"] = (
            "convert + unscale + step() + copy_: this DeepSpeed's DeepSpeedCPUAdam.step has no "
            "fp16_param_groups argument (the fp16 copy inside its step was removed)")
        g16 = _half("fp16", g)
        master = torch.nn.Parameter(torch.from_numpy(p0.copy()))
        master.grad = torch.empty(n, dtype=torch.float32)
        opt = cls([master], lr=LR, betas=(B1, B2), eps=EPS, weight_decay=0.0, adamw_mode=False)
        w16 = torch.empty(n, dtype=torch.float16)
        weights = master.detach()
        inv = 1.0 / FP16_SCALE

        def step():
            with torch.no_grad():
                master.grad.copy_(g16)
                master.grad.mul_(inv)
                opt.step()
                w16.copy_(weights)
    try:
        step()
    except Exception as e:  # noqa: BLE001
        raise Unavailable(f"DeepSpeed mixed step ({DEEPSPEED_MIXED_MODE['mode'][:40]}) failed: "
                          f"{type(e).__name__}: {e}") from None
    return step, None


# How the DeepSpeed mixed step ran (make_deepspeed_mixed), for the results' notes.
DEEPSPEED_MIXED_MODE = {}


_BNB = {}


def make_bitsandbytes(ctx, n, threads, p0, g):
    """bitsandbytes' Adam8bit on the CPU (blockwise 8-bit m and v, 256-element blocks with one
    f32 absmax each: the layout of flatopt's int8 state), every element in 8 bits
    (min_8bit_size=0); threads through torch.set_num_threads."""
    if "err" in _BNB:
        raise Unavailable(_BNB["err"])
    torch = _torch()
    try:
        import bitsandbytes as bnb
        torch.set_num_threads(threads)
        p = _torch_param(torch, p0, g)
        opt = bnb.optim.Adam8bit([p], lr=LR, betas=(B1, B2), eps=EPS, min_8bit_size=0)
        with torch.no_grad():
            opt.step()
        if opt.state[p]["state1"].dtype != torch.uint8:
            raise RuntimeError(f"state held as {opt.state[p]['state1'].dtype}, not 8 bits")
    except Exception as e:  # noqa: BLE001: not installable / no CPU backend: skipped, reason shown
        msg = str(e).strip().splitlines()
        _BNB["err"] = (f"bitsandbytes Adam8bit unavailable: {type(e).__name__}: "
                       f"{msg[-1] if msg else ''}")
        raise Unavailable(_BNB["err"]) from None

    def step():
        with torch.no_grad():
            opt.step()
    return step, None


class NumpyAdam:
    """Adam (and the pipeline) in NumPy: ufuncs with out= into preallocated temporaries, the
    per-step scalars in f64 as the other implementations. On two threads, halves of the arrays
    run in two Python threads."""

    def __init__(self, n, threads, p0, g, pipeline, pool):
        self.p, self.g = p0.copy(), g
        self.m = np.zeros(n, np.float32)
        self.v = np.zeros(n, np.float32)
        self.t1 = np.empty(n, np.float32)
        self.t2 = np.empty(n, np.float32)
        self.pipeline = pipeline
        self.slow = self.p.copy() if pipeline else None
        self.max_norm = max_norm_for(n)
        self.t = 0
        self.threads = threads
        self.pool = pool
        cut = (n // 2 + 63) // 64 * 64 if threads > 1 and n >= 4096 else n
        self.parts = [slice(0, cut), slice(cut, n)] if cut < n else [slice(0, n)]

    def _sumsq(self, s):
        g = self.g[s]
        return float(np.dot(g, g))  # f32 accumulation: only the clip threshold depends on it

    def _update(self, s, scale, step, isb2, sync):
        p, g, m, v, t1, t2 = (a[s] for a in (self.p, self.g, self.m, self.v, self.t1, self.t2))
        f = np.float32
        if scale != 1.0:
            np.multiply(g, f(scale), out=t2)
            g = t2
        if self.pipeline:
            np.multiply(p, f(WEIGHT_DECAY), out=t1)
            np.add(g, t1, out=t2)
            g = t2
        np.multiply(m, f(B1), out=m)
        np.multiply(g, f(1 - B1), out=t1)
        np.add(m, t1, out=m)
        np.multiply(g, g, out=t1)
        np.multiply(t1, f(1 - B2), out=t1)
        np.multiply(v, f(B2), out=v)
        np.add(v, t1, out=v)
        np.sqrt(v, out=t1)
        np.multiply(t1, f(isb2), out=t1)
        np.add(t1, f(EPS), out=t1)
        np.divide(m, t1, out=t1)
        np.multiply(t1, f(step), out=t1)
        np.subtract(p, t1, out=p)
        if sync:
            slow = self.slow[s]
            np.subtract(p, slow, out=t1)
            np.multiply(t1, f(ALPHA), out=t1)
            np.add(slow, t1, out=slow)
            p[...] = slow

    def _map(self, fn):
        if len(self.parts) == 1:
            return [fn(self.parts[0])]
        futs = [self.pool.submit(fn, s) for s in self.parts[1:]]
        first = fn(self.parts[0])
        return [first] + [f.result() for f in futs]

    def step(self):
        self.t += 1
        scale = 1.0
        if self.pipeline:
            norm = math.sqrt(sum(self._map(self._sumsq)))
            if norm > self.max_norm:
                scale = self.max_norm / norm
        step = LR / (1 - B1 ** self.t)
        isb2 = 1 / math.sqrt(1 - B2 ** self.t)
        sync = self.pipeline and self.t % SYNC_PERIOD == 0
        self._map(lambda s: self._update(s, scale, step, isb2, sync))


def make_numpy(workload):
    def make(ctx, n, threads, p0, g):
        impl = NumpyAdam(n, threads, p0, g, workload == "pipeline", ctx.pool)
        return impl.step, None
    return make


# name, workload, factory, state bytes per element (for the memory budget)
IMPLS = [
    ("probe", "probe", make_probe, 12),
    ("flatopt-py", "adam", make_flatopt("adam"), 12),
    ("flatopt-py", "adam-skip", make_flatopt("adam-skip"), 12),
    ("flatopt-py", "pipeline", make_flatopt("pipeline"), 16),
    ("torch-fused", "adam", make_torch_adam("fused"), 12),
    ("torch-foreach", "adam", make_torch_adam("foreach"), 12),
    ("torch-pipeline", "pipeline", make_torch_pipeline, 20),
    ("deepspeed", "adam", make_deepspeed, 12),
    ("numpy", "adam", make_numpy("adam"), 20),
    ("numpy", "pipeline", make_numpy("pipeline"), 24),
    ("probe", "mixed", make_probe_mixed, 16),
    ("flatopt-py", "mixed-bf16", make_flatopt_mixed("bf16"), 16),
    ("flatopt-py", "mixed-fp16", make_flatopt_mixed("fp16"), 16),
    ("torch-mixed", "mixed-bf16", make_torch_mixed("bf16"), 20),
    ("torch-mixed", "mixed-fp16", make_torch_mixed("fp16"), 20),
    ("deepspeed", "mixed-fp16", make_deepspeed_mixed, 20),
    ("flatopt-py", "adam-bf16", make_flatopt("adam-bf16"), 8),
    ("flatopt-py", "adam-int8", make_flatopt("adam-int8"), 6),
    ("bitsandbytes", "adam-int8", make_bitsandbytes, 6),
]

LABELS = {
    ("probe", "probe"): "bandwidth probe (C, in process)",
    ("c-probe", "probe"): "bandwidth probe (C driver)",
    ("c-adam", "adam"): "C Adam (gcc -O3 -march=native)",
    ("c-floor", "floor"): "exact sqrt + div floor (C)",
    ("flatopt-c", "adam"): "flatopt C",
    ("flatopt-c", "adam-skip"): "flatopt C (skip)",
    ("flatopt-c", "pipeline"): "flatopt C",
    ("flatopt-py", "adam"): "flatopt Python",
    ("flatopt-py", "adam-skip"): "flatopt Python (skip)",
    ("flatopt-py", "pipeline"): "flatopt Python",
    ("torch-fused", "adam"): "torch fused",
    ("torch-foreach", "adam"): "torch foreach",
    ("torch-pipeline", "pipeline"): "torch (clip+fused+timm LA)",
    ("deepspeed", "adam"): "DeepSpeedCPUAdam",
    ("numpy", "adam"): "NumPy",
    ("numpy", "pipeline"): "NumPy",
    ("probe", "mixed"): "mixed-precision probe (C)",
    ("flatopt-py", "mixed-bf16"): "flatopt bf16 grads + copy",
    ("flatopt-py", "mixed-fp16"): "flatopt fp16 + loss scale",
    ("torch-mixed", "mixed-bf16"): "torch convert + fused + copy_",
    ("torch-mixed", "mixed-fp16"): "torch GradScaler + fused + copy_",
    ("deepspeed", "mixed-fp16"): "DeepSpeed fp16 (CPU Adam)",
    ("flatopt-py", "adam-bf16"): "flatopt bf16 state",
    ("flatopt-py", "adam-int8"): "flatopt 8-bit state",
    ("bitsandbytes", "adam-int8"): "bitsandbytes Adam8bit",
}


# ---------------------------------------------------------------------------------------------
# Measurement


class Ctx:
    def __init__(self, probe, pool):
        self.probe = probe
        self.pool = pool


def calibrate(step, sync, min_time, warm_time, period=SYNC_PERIOD, min_steps=5):
    """Warm-up (at least `period` steps and warm_time seconds); returns steps per timed block
    (at least min_steps and min_time seconds, a multiple of `period`: every block holds the
    same share of Lookahead syncs)."""
    t0 = time.perf_counter()
    k = 0
    while k < period or (time.perf_counter() - t0 < warm_time and k < 1_000_000):
        step()
        if sync:
            sync()  # each step done: the estimate must not count queued, unfinished steps
        k += 1
    per = (time.perf_counter() - t0) / k
    s = max(min_steps, math.ceil(min_time / per))
    return (s + period - 1) // period * period


def timed_block(step, sync, steps):
    """Seconds per step over `steps` steps, and the CPU seconds this process used per step
    (all its threads: over the wall time, the cores an implementation keeps busy)."""
    c0 = time.process_time()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if sync:
        sync()
    t1 = time.perf_counter()
    return (t1 - t0) / steps, (time.process_time() - c0) / steps


def run_driver(args, n, threads, reps):
    cmd = [args.driver, "bench", str(n), str(threads), str(reps), str(args.min_time)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def measure_point(args, ctx, n, threads, impls, records, skipped, bytes_per_element=None):
    """Every implementation of `impls` (name, workload, make, state bytes per element) at one
    size and thread count, interleaved by repetition; appends a record per implementation.
    `bytes_per_element`: what the update must move (default: BYTES[workload])."""
    p0 = ctx.probe.random(n, "p")
    g = ctx.probe.random(n, "g")
    per_elem = sum(b for *_, b in impls) + 8
    keep_alive = per_elem * n <= args.mem_budget * 1e9
    samples = {(name, wl): [] for name, wl, *_ in impls}
    cpu = {(name, wl): [] for name, wl, *_ in impls}
    steps_of = {}
    live = {}
    driver_recs = {}

    def setup(name, wl, make):
        try:
            made = make(ctx, n, threads, p0, g)
        except Unavailable as e:
            skipped.setdefault(name, str(e))
            return None
        return made[0], made[1]

    order = list(impls)
    n_slots = len(order) + (1 if args.driver else 0)
    for r in range(args.reps):
        rot = r % n_slots
        slots = list(range(n_slots))
        slots = slots[rot:] + slots[:rot]
        for slot in slots:
            if slot == len(order):  # the C driver, one repetition, as a subprocess
                for rec in run_driver(args, n, threads, 1):
                    key = (rec["impl"], rec["workload"])
                    if key in driver_recs:
                        driver_recs[key]["sec_per_step"] += rec["sec_per_step"]
                    else:
                        driver_recs[key] = rec
                continue
            name, wl, make, _ = order[slot]
            if name in skipped:
                continue
            key = (name, wl)
            made = live.get(key)
            fresh = made is None
            if fresh:
                made = setup(name, wl, make)
                if made is None:
                    continue
            step, sync = made
            if fresh or key not in steps_of:
                s = calibrate(step, sync, args.min_time, args.warm_time, args.period,
                              args.min_steps)
                steps_of.setdefault(key, s)
            else:
                for _ in range(args.period):  # warm again after the other implementations ran
                    step()
                if sync:
                    sync()  # the warm-up's steps done before the clock starts
            wall, cpu_s = timed_block(step, sync, steps_of[key])
            samples[key].append(wall)
            cpu[key].append(cpu_s)
            if keep_alive:
                live[key] = made
            else:
                del step, sync, made
                gc.collect()
            time.sleep(args.pause)
        if not keep_alive:
            live.clear()
    live.clear()
    gc.collect()
    for (name, wl), xs in samples.items():
        if xs:
            rec = {"source": "python", "impl": name, "workload": wl, "n": n,
                   "threads": threads, "steps": steps_of[(name, wl)], "sec_per_step": xs,
                   "cpu_sec_per_step": cpu[(name, wl)]}
            if bytes_per_element:
                rec["bytes_per_element"] = bytes_per_element
            records.append(rec)
    records.extend(driver_recs.values())


def bytes_of(rec):
    """The bytes per element the record's update must move."""
    return rec.get("bytes_per_element") or BYTES[rec["workload"]]


def summarize(rec):
    xs = sorted(rec["sec_per_step"])
    med = statistics.median(xs)
    if len(xs) >= 4:
        q = statistics.quantiles(xs, n=4)
        lo, hi = q[0], q[2]
    else:
        lo, hi = xs[0], xs[-1]
    n = rec["n"]
    rec["median_s"] = med
    rec["q1_s"], rec["q3_s"] = lo, hi
    rec["spread_pct"] = 100.0 * (hi - lo) / med if med > 0 else float("nan")
    rec["ns_per_element"] = med / n * 1e9
    rec["gb_per_s"] = bytes_of(rec) * n / med / 1e9
    return rec


# ---------------------------------------------------------------------------------------------
# Reporting


def fmt_time(s):
    if s < 1e-3:
        return f"{s * 1e6:.3g} µs"
    if s < 1:
        return f"{s * 1e3:.3g} ms"
    return f"{s:.3g} s"


def fmt_n(n):
    e = int(round(math.log10(n)))
    return f"1e{e}" if 10 ** e == n else str(n)


def index(records):
    return {(r["impl"], r["workload"], r["n"], r["threads"]): r for r in records
            if "median_s" in r}


# What the C driver measures (compared with its own probe, c-probe).
C_DRIVER_IMPLS = ("flatopt-c", "c-adam", "c-floor")


def paired_median(xs, ys):
    """Median over repetitions of xs[r] / ys[r]. Every repetition runs each implementation once,
    back to back (the C driver's figures come from one driver run per repetition), so the
    per-repetition ratio cancels what drifts between repetitions (this host's memory bandwidth
    swings by tens of percent over minutes); falls back to the ratio of medians if the
    repetitions do not pair up."""
    if len(xs) == len(ys) and xs:
        return statistics.median(x / y for x, y in zip(xs, ys))
    return statistics.median(xs) / statistics.median(ys)


def ratio(idx, a, b, n, t):
    """time(b) / time(a), median of per-repetition ratios: how many times faster a is than b
    (None if either is missing)."""
    ra, rb = idx.get(a + (n, t)), idx.get(b + (n, t))
    if ra is None or rb is None:
        return None
    return paired_median(rb["sec_per_step"], ra["sec_per_step"])


def bw_fraction(idx, a, n, t, probe=None):
    """Achieved bytes/s of `a` (its own bytes) over the probe's bytes/s, same run, median of
    per-repetition ratios: the C driver's figures over the C driver's probe, the others over
    the in-process probe."""
    if probe is None and a[1].startswith("mixed"):
        probe = ("probe", "mixed")
    elif probe is None:
        probe = ("c-probe", "probe") if a[0] in C_DRIVER_IMPLS else ("probe", "probe")
    ra, rp = idx.get(a + (n, t)), idx.get(probe + (n, t))
    if ra is None or rp is None:
        return None
    scale = bytes_of(ra) / bytes_of(rp)
    return scale * paired_median(rp["sec_per_step"], ra["sec_per_step"])


def fit_linear(points):
    """Least-squares t = a + b*n with relative weights (1/t): returns a (s), b (s/element)."""
    if len(points) < 2:
        return None
    w = [1.0 / t for _, t in points]
    sw = sum(x * x for x in w)
    sx = sum(x * x * n for x, (n, _) in zip(w, points))
    sxx = sum(x * x * n * n for x, (n, _) in zip(w, points))
    sy = sum(x * x * t for x, (_, t) in zip(w, points))
    sxy = sum(x * x * n * t for x, (n, t) in zip(w, points))
    det = sw * sxx - sx * sx
    if det == 0:
        return None
    a = (sxx * sy - sx * sxy) / det
    b = (sw * sxy - sx * sy) / det
    return a, b


def table(idx, sizes, threads, cols, workload_bytes_note):
    head = "| n | threads | " + " | ".join(label for label, _ in cols) + " |"
    lines = [head, "|" + "---|" * (len(cols) + 2)]
    for n in sizes:
        for t in threads:
            cells = []
            for _, key in cols:
                r = idx.get(key + (n, t))
                if r is None:
                    cells.append("–")
                    continue
                frac = bw_fraction(idx, key, n, t) if key[0] not in ("probe", "c-probe") else None
                cell = f"{fmt_time(r['median_s'])} ±{r['spread_pct']:.0f}%<br>{r['gb_per_s']:.1f} GB/s"
                if frac is not None:
                    cell += f" ({frac:.2f}×)"
                cells.append(cell)
            lines.append(f"| {fmt_n(n)} | {t} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n" + workload_bytes_note + "\n"


def verdict(value, bar):
    if value is None:
        return "not measured"
    return f"**{value:.2f}×** (target ≥ {bar}×: {'met' if value >= bar else 'NOT met'})"


def targets(idx, latency, threads, sizes):
    out = []
    big = max(sizes)
    t2 = 2 if 2 in threads else max(threads)
    fa = ("flatopt-py", "adam")
    fc = ("flatopt-c", "adam")
    fp = ("flatopt-py", "pipeline")
    out.append(f"### Plain Adam (propagate), n = {fmt_n(big)}, {t2} threads")
    out.append(f"- vs the bandwidth probe (same run): Python {verdict(bw_fraction(idx, fa, big, t2), 0.95)}, "
               f"C {verdict(bw_fraction(idx, fc, big, t2), 0.95)}")
    out.append(f"- vs PyTorch `Adam(fused=True)`: {verdict(ratio(idx, fa, ('torch-fused', 'adam'), big, t2), 1.0)}")
    out.append(f"- vs `DeepSpeedCPUAdam`: {verdict(ratio(idx, fa, ('deepspeed', 'adam'), big, t2), 1.3)}")
    out.append(f"- default `skip` configuration (+4 B/element): {verdict(bw_fraction(idx, ('flatopt-py', 'adam-skip'), big, t2), 0.95)} of the probe, "
               f"{verdict(ratio(idx, ('flatopt-py', 'adam-skip'), ('torch-fused', 'adam'), big, t2), 1.0)} vs torch fused")
    out.append("")
    out.append(f"### Full pipeline (Lookahead(Adam) + clip-norm + weight decay), {t2} threads")
    for n in [s for s in sizes if s >= 10_000_000]:
        out.append(f"- n = {fmt_n(n)}: vs the PyTorch composition {verdict(ratio(idx, fp, ('torch-pipeline', 'pipeline'), n, t2), 1.3)}; "
                   f"vs the probe for its {BYTES['pipeline']:.1f} B/element {verdict(bw_fraction(idx, fp, n, t2), 0.90)} "
                   f"(C driver: {verdict(bw_fraction(idx, ('flatopt-c', 'pipeline'), n, t2), 0.90)})")
    out.append("")
    out.append(f"### Mixed precision (Adam, 16-bit gradients, 16-bit copy written in the pass), n = {fmt_n(big)}, {t2} threads")
    mb, mf = ("flatopt-py", "mixed-bf16"), ("flatopt-py", "mixed-fp16")
    out.append(f"- bf16 gradients + bf16 copy vs the probe of its access pattern (28 B/element): "
               f"{verdict(bw_fraction(idx, mb, big, t2, probe=('probe', 'mixed')), 0.9)}")
    out.append(f"- vs PyTorch's composition (convert the bf16 gradients, fused Adam, `copy_`): "
               f"{verdict(ratio(idx, mb, ('torch-mixed', 'mixed-bf16'), big, t2), 1.35)}")
    out.append(f"- fp16 with dynamic loss scaling vs GradScaler `unscale_` + fused Adam + `copy_`: "
               f"{verdict(ratio(idx, mf, ('torch-mixed', 'mixed-fp16'), big, t2), 1.5)}")
    out.append(f"- fp16 vs DeepSpeed's fp16 step over f32 master weights (`DeepSpeedCPUAdam`; how it "
               f"ran: the mixed table's note): "
               f"{verdict(ratio(idx, mf, ('deepspeed', 'mixed-fp16'), big, t2), 1.0)}")
    out.append(f"- fp16 with dynamic loss scaling vs flatopt's f32 Adam with its default non-finite "
               f"check and no scaling (no extra pass: 30 against 32 B/element): "
               f"{verdict(ratio(idx, mf, ('flatopt-py', 'adam-skip'), big, t2), 1.0)}")
    out.append("")
    out.append(f"### Compressed state (Adam, m and v in bf16 or 8 bits), {t2} threads")
    fb, f8, bnb = ("flatopt-py", "adam-bf16"), ("flatopt-py", "adam-int8"), ("bitsandbytes", "adam-int8")
    for n in [s for s in sizes if s >= 10_000_000]:
        out.append(f"- n = {fmt_n(n)}: bf16 vs flatopt's f32 Adam {verdict(ratio(idx, fb, fa, n, t2), 1.3)}; "
                   f"8-bit vs f32 {verdict(ratio(idx, f8, fa, n, t2), 1.6)} "
                   f"(the bytes allow {BYTES['adam'] / BYTES['adam-int8']:.2f}×); "
                   f"8-bit vs bitsandbytes' Adam8bit {verdict(ratio(idx, f8, bnb, n, t2), 30)}")
    out.append("- optimizer state per element: " + ", ".join(
        f"{name} {STATE_BYTES[wl]:.2f} B" for name, wl in
        (("f32", "adam"), ("bf16", "adam-bf16"), ("8-bit", "adam-int8"))))
    out.append("")
    out.append("### In cache, 1 thread: arithmetic-bound")
    ca, cf = ("c-adam", "adam"), ("c-floor", "floor")
    for n in [s for s in sizes if 10_000 <= s <= 100_000]:
        fl = idx.get(cf + (n, 1))
        line = (f"- n = {fmt_n(n)}: vs the best compiler-vectorized C Adam, C driver {verdict(ratio(idx, fc, ca, n, 1), 1.2)}, "
                f"Python {verdict(ratio(idx, fa, ca, n, 1), 1.2)}; vs torch fused {verdict(ratio(idx, fa, ('torch-fused', 'adam'), n, 1), 4)}")
        r_c, r_f = idx.get(ca + (n, 1)), idx.get(fc + (n, 1))
        if fl and r_c:
            want = r_c["ns_per_element"] / 1.2
            line += (f". Per element: the exact sqrt + division alone (no Adam around them) "
                     f"{fl['ns_per_element']:.3f} ns, C Adam {r_c['ns_per_element']:.3f}"
                     + (f", flatopt {r_f['ns_per_element']:.3f}" if r_f else "")
                     + f"; 1.2× the C Adam is {want:.3f} ns")
            if want < fl["ns_per_element"]:
                line += (f", {fl['ns_per_element'] / want:.2f}× faster than the sqrt and division "
                         "alone: out of reach for any exact Adam")
            else:
                line += " (above that floor: here memory, not arithmetic, sets the pace)"
        out.append(line)
    out.append("")
    out.append("### Small sizes: per-step time, flatopt Python vs the per-call overhead of the others")
    for n in [s for s in sizes if s <= 10_000]:
        for t in threads:
            ceil = ratio(idx, ("probe", "probe"), ("deepspeed", "adam"), n, t)
            out.append(f"- n = {fmt_n(n)}, {t} thread(s): vs torch fused {verdict(ratio(idx, fa, ('torch-fused', 'adam'), n, t), 20)}, "
                       f"vs DeepSpeed {verdict(ratio(idx, fa, ('deepspeed', 'adam'), n, t), 20)}"
                       + (f"; the bandwidth probe itself (a plain C loop without Adam's arithmetic, called through ctypes) is {ceil:.1f}× DeepSpeed here"
                          if ceil else ""))
    out.append("")
    out.append("### Small-model latency (C, 1 thread, 10 buffers, 10,000 params, Lookahead(Adam) + clip-norm)")
    if latency:
        ok = latency["p99_us"] <= 10.0 and latency["allocations_during_steps"] == 0
        out.append(f"- p50 {latency['p50_us']:.2f} µs, p99 **{latency['p99_us']:.2f} µs**, p99.9 {latency['p999_us']:.2f} µs, "
                   f"max {latency['max_us']:.1f} µs over {latency['steps']:,} steps; heap allocations during the steps: "
                   f"**{latency['allocations_during_steps']}** (the counter saw {latency['canary_allocations']} in optimizer creation). "
                   f"Target p99 ≤ 10 µs with zero allocations: {'met' if ok else 'NOT met'}")
    else:
        out.append("- not measured")
    out.append("")
    out.append("### Linearity and threads (flatopt Python, plain Adam)")
    for t in threads:
        pts = [(n, idx[fa + (n, t)]["median_s"]) for n in sizes if fa + (n, t) in idx]
        fit = fit_linear(pts)
        if fit:
            a, b = fit
            per = ", ".join(f"{fmt_n(n)}: {s / n * 1e9:.2f}" for n, s in pts)
            out.append(f"- {t} thread(s): fitted t = {a * 1e6:.2f} µs + {b * 1e9:.3f} ns × n (relative least squares over all sizes); "
                       f"ns/element per size: {per}")
    if 1 in threads and 2 in threads:
        sp = []
        for n in sizes:
            r1, r2 = idx.get(fa + (n, 1)), idx.get(fa + (n, 2))
            p1, p2 = idx.get(("probe", "probe", n, 1)), idx.get(("probe", "probe", n, 2))
            if r1 and r2:
                txt = f"{fmt_n(n)}: {r1['median_s'] / r2['median_s']:.2f}×"
                if p1 and p2:
                    txt += f" (probe {p1['median_s'] / p2['median_s']:.2f}×)"
                sp.append(txt)
        out.append("- 2 threads over 1 (target ≥ 1.6× where bandwidth allows; the probe's own 2/1 speed-up shows what it allows): "
                   + "; ".join(sp))
    return "\n".join(out) + "\n"


def plot(idx, sizes, threads, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as e:  # noqa: BLE001
        log(f"plot skipped: matplotlib not importable ({e})")
        return False
    series = {
        "adam": [("flatopt-py", "adam"), ("flatopt-c", "adam"), ("flatopt-py", "adam-skip"),
                 ("c-adam", "adam"),
                 ("torch-fused", "adam"), ("torch-foreach", "adam"), ("deepspeed", "adam"),
                 ("numpy", "adam")],
        "pipeline": [("flatopt-py", "pipeline"), ("flatopt-c", "pipeline"),
                     ("torch-pipeline", "pipeline"), ("numpy", "pipeline")],
    }
    fig, axes = plt.subplots(2, len(threads), figsize=(6.5 * len(threads), 9), squeeze=False)
    for col, t in enumerate(threads):
        for row, wl in enumerate(["adam", "pipeline"]):
            ax = axes[row][col]
            xs = [n for n in sizes if ("probe", "probe", n, t) in idx]
            ax.plot(xs, [idx[("probe", "probe", n, t)]["gb_per_s"] for n in xs], "k--", lw=2,
                    label="bandwidth probe (28 B/elem)")
            xc = [n for n in sizes if ("c-probe", "probe", n, t) in idx]
            if xc:
                ax.plot(xc, [idx[("c-probe", "probe", n, t)]["gb_per_s"] for n in xc], ":",
                        color="0.5", lw=1.5, label="bandwidth probe (C driver process)")
            for key in series[wl]:
                pts = [(n, idx[key + (n, t)]) for n in sizes if key + (n, t) in idx]
                if not pts:
                    continue
                style = "-o" if key[0].startswith("flatopt") else ":^" if key[0] == "c-adam" else "-s"
                ax.plot([n for n, _ in pts], [r["gb_per_s"] for _, r in pts], style, ms=4,
                        label=LABELS[key])
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("elements")
            ax.set_ylabel("GB/s (bytes the update must move / time)")
            title = "plain Adam" if wl == "adam" else "Lookahead(Adam) + clip-norm + wd"
            ax.set_title(f"{title}, {t} thread{'s' if t > 1 else ''}")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def machine_info():
    info = {"date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "python": platform.python_version(), "platform": platform.platform()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info["cpus"] = os.cpu_count()
    try:
        flags = open("/proc/cpuinfo").read()
        info["avx512f"] = " avx512f" in flags
    except OSError:
        pass
    try:
        info["mem_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    try:
        info["commit"] = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                                        capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", "src"],
                               capture_output=True, text=True).stdout.strip()
        info["src_dirty"] = bool(dirty)
    except OSError:
        pass
    info["numpy"] = np.__version__
    for mod in ("torch", "deepspeed", "matplotlib"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            info[mod] = None
    try:
        import torch
        info["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    except Exception:  # noqa: BLE001
        pass
    import flatopt
    info["flatopt"] = flatopt.library_version
    info["flatopt_library"] = flatopt.library_path
    return info


def cpu_busy(seconds=0.5):
    """Fraction of all CPUs busy over `seconds` (while this process sleeps: other load)."""
    def read():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v), v[3] + v[4]
    try:
        t0, i0 = read()
        time.sleep(seconds)
        t1, i1 = read()
    except OSError:
        return None
    return 1.0 - (i1 - i0) / max(t1 - t0, 1)


def wait_idle(limit_s, threshold=0.25):
    """Waits (up to limit_s) until other processes keep less than `threshold` of the CPUs
    busy; returns the last busy fraction seen and the seconds waited."""
    t0 = time.time()
    busy = cpu_busy()
    while busy is not None and busy > threshold and time.time() - t0 < limit_s:
        busy = cpu_busy(1.0)
    return busy, time.time() - t0


def loadavg():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def header_lines(meta, title, software):
    """The title, the machine and the load the run saw (`software`: the versions compared)."""
    m = meta["machine"]
    lines = [f"# {title} ({m['date'][:10]})", ""]
    lines.append(f"Machine: {m.get('cpu', '?')}, {m.get('cpus')} vCPUs, {m.get('mem_gib')} GiB"
                 f"{', AVX-512 present' if m.get('avx512f') else ''}; {m['platform']}. "
                 f"flatopt {m['flatopt']} (commit {m.get('commit', '?')}"
                 f"{', src/ modified' if m.get('src_dirty') else ''}, SIMD tier {meta.get('tier')}), "
                 f"{software}, numpy {m['numpy']}, Python {m['python']}. "
                 f"Load average at start {meta['load_start']}, at end {meta['load_end']}; "
                 f"run took {meta['seconds'] / 60:.1f} min.")
    cond = meta.get("conditions") or []
    if cond:
        worst = max((c["other_cpu_busy_before"] or 0.0, c["other_cpu_busy_after"] or 0.0) for c in cond)
        lines.append("")
        lines.append("Other processes share this machine: before each point the run waits (up to "
                     "--wait-idle s) for them to use < 25% of the CPUs; the share measured before / "
                     "after each point: " + ", ".join(
                         f"{fmt_n(c['n'])}/{c['threads']}t {100 * (c['other_cpu_busy_before'] or 0):.0f}/"
                         f"{100 * (c['other_cpu_busy_after'] or 0):.0f}%" for c in cond)
                     + f" (worst {100 * max(worst):.0f}%).")
    lines.append("")
    return lines


def render_md(meta, idx, sizes, threads, latency, skipped, png_name):
    m = meta["machine"]
    lines = header_lines(
        meta, "flatopt vs PyTorch, DeepSpeed and NumPy",
        f"torch {m.get('torch')} (CPU capability {m.get('torch_cpu_capability', '?')}), "
        f"deepspeed {m.get('deepspeed')}")
    lines.append(f"How: `make bench-compare` (benches/compare/run.sh → compare.py {' '.join(meta['argv'])}). "
                 f"Every implementation on identical random data, warmed up, {meta['reps']} timed blocks of "
                 f"≥ {meta['min_time']} s and ≥ 5 steps each, interleaved in rotating order in one process "
                 "(the C driver as a subprocess in its turn); cells give the median time per step ± the "
                 "interquartile range (% of the median), the bytes the update must move per second "
                 "(Adam 28 B/element, pipeline 33.6), and in parentheses that rate over the bandwidth "
                 "probe's at the same size and thread count in the same run (the C driver's columns "
                 "over the C driver's own probe, \"C probe\"). Every ratio (in parentheses and in the "
                 "targets) is the median over repetitions of the ratio within each repetition, where "
                 "the implementations run back to back: it cancels what drifts between repetitions "
                 "(this host's memory bandwidth swings by tens of percent over minutes).")
    lines.append("")
    if skipped:
        lines.append("Skipped: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
        lines.append("")
    lines.append(f"![throughput against size]({png_name})")
    lines.append("")
    lines.append("## Plain Adam")
    lines.append("")
    cols = [("probe", ("probe", "probe")), ("C probe", ("c-probe", "probe")),
            ("flatopt C", ("flatopt-c", "adam")), ("C Adam (gcc)", ("c-adam", "adam")),
            ("flatopt Py", ("flatopt-py", "adam")), ("flatopt Py skip", ("flatopt-py", "adam-skip")),
            ("torch fused", ("torch-fused", "adam")), ("torch foreach", ("torch-foreach", "adam")),
            ("DeepSpeed", ("deepspeed", "adam")), ("NumPy", ("numpy", "adam"))]
    lines.append(table(idx, sizes, threads, cols,
                       "flatopt: non-finite check off (`propagate`) unless marked skip (default; its "
                       "extra gradient read counts 32 B/element). DeepSpeedCPUAdam with "
                       "`adamw_mode=False`."))
    lines.append("## Full pipeline: Lookahead(Adam, k=5, α=0.5) + global-norm clipping + weight decay 1e-4")
    lines.append("")
    cols = [("probe", ("probe", "probe")), ("C probe", ("c-probe", "probe")),
            ("flatopt C", ("flatopt-c", "pipeline")),
            ("flatopt Py", ("flatopt-py", "pipeline")),
            ("torch: clip + fused Adam + timm Lookahead", ("torch-pipeline", "pipeline")),
            ("NumPy", ("numpy", "pipeline"))]
    lines.append(table(idx, sizes, threads, cols,
                       "Bytes the pipeline must move: 28/element for the update, 4 for the norm pass, "
                       "8/k for the syncs = 33.6 B/element."))
    lines.append("## Mixed precision: Adam with 16-bit gradients and a 16-bit copy of the parameters")
    lines.append("")
    cols = [("probe (28 B)", ("probe", "mixed")),
            ("flatopt bf16", ("flatopt-py", "mixed-bf16")),
            ("torch bf16: convert + fused + copy_", ("torch-mixed", "mixed-bf16")),
            ("flatopt fp16 + loss scale", ("flatopt-py", "mixed-fp16")),
            ("torch fp16: GradScaler + fused + copy_", ("torch-mixed", "mixed-fp16")),
            ("DeepSpeed fp16", ("deepspeed", "mixed-fp16"))]
    ds_mode = meta.get("deepspeed_mixed") or "not run"
    ds_bytes = ("4-byte gradients and the copy in its step, 30" if ds_mode.startswith("step(")
                else "convert, unscale, step and copy_ as PyTorch fp16, 48")
    lines.append(table(idx, sizes, threads, cols,
                       "28 B/element for each (f32 p, m, v read and written, a 2-byte gradient "
                       "read, a 2-byte copy written); what the compositions move beyond that "
                       f"(PyTorch bf16: 40, fp16 with unscale_: 48; DeepSpeed: {ds_bytes}) "
                       f"shows in their rates. Rates over the mixed probe. DeepSpeed ran as: "
                       f"{ds_mode}."))
    lines.append("## Compressed state: Adam with m and v held in bf16 or 8 bits")
    lines.append("")
    cols = [("probe (28 B)", ("probe", "probe")), ("flatopt f32", ("flatopt-py", "adam")),
            ("flatopt bf16", ("flatopt-py", "adam-bf16")),
            ("flatopt 8-bit", ("flatopt-py", "adam-int8")),
            ("bitsandbytes Adam8bit", ("bitsandbytes", "adam-int8"))]
    lines.append(table(idx, sizes, threads, cols,
                       f"Bytes each must move per element: f32 {BYTES['adam']:g}, bf16 "
                       f"{BYTES['adam-bf16']:g}, 8-bit {BYTES['adam-int8']:.2f} (bitsandbytes "
                       "likewise); non-finite check off (`propagate`); bitsandbytes' "
                       "`Adam8bit(min_8bit_size=0)`, every element's state in 8 bits. Rates over "
                       "the 28-byte probe's bytes per second, so the compressed columns can pass 1×."))
    lines.append("## Targets (medians of per-repetition ratios, this run)")
    lines.append("")
    lines.append(targets(idx, latency, threads, sizes))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The optimizer family (--family): every base rule of flatopt through its Python binding, next
# to PyTorch's fastest implementation of the rule and optax's under jax.jit, and a probe with
# the rule's own memory pattern


# One row per base rule: the learning rate; flatopt's factory and its arguments in PyTorch's
# form (`flatopt`) and, where optax defines the rule differently, in optax's (`flatopt_optax`);
# PyTorch's class, its arguments and its fastest CPU implementation ("fused" where torch.optim
# has a fused CPU kernel for the rule, else "foreach"), or why there is none; optax's function
# and its arguments. Every hyperparameter is given explicitly (the rule's usual default), the
# same value to each library. `optax_lag`: optax applies each update that many steps late (its
# step t + lag is flatopt's step t).
FAMILY = [
    dict(rule="sgd", flatopt=("sgd", {}), torch=("SGD", {}, "fused"), optax=("sgd", {})),
    dict(rule="momentum", flatopt=("sgd", {"momentum": 0.9}),
         torch=("SGD", {"momentum": 0.9}, "fused"), optax=("sgd", {"momentum": 0.9})),
    dict(rule="adam", flatopt=("adam", {"b1": 0.9, "b2": 0.999, "eps": 1e-8}),
         torch=("Adam", {"betas": (0.9, 0.999), "eps": 1e-8}, "fused"),
         optax=("adam", {"b1": 0.9, "b2": 0.999, "eps": 1e-8})),
    dict(rule="adamw", flatopt=("adamw", {"weight_decay": 1e-2}),
         torch=("AdamW", {"weight_decay": 1e-2}, "fused"),
         optax=("adamw", {"weight_decay": 1e-2})),
    dict(rule="radam", flatopt=("radam", {}), torch=("RAdam", {}, "foreach"),
         optax=("radam", {})),
    dict(rule="adagrad",
         flatopt=("adagrad", {"initial_accumulator_value": 0.0, "eps": 1e-10,
                              "eps_inside_sqrt": False}),
         flatopt_optax=("adagrad", {"initial_accumulator_value": 0.1, "eps": 1e-7}),
         torch=("Adagrad", {"initial_accumulator_value": 0.0, "eps": 1e-10}, "fused"),
         optax=("adagrad", {"initial_accumulator_value": 0.1, "eps": 1e-7})),
    dict(rule="rmsprop",
         flatopt=("rmsprop", {"alpha": 0.99, "eps": 1e-8, "eps_inside_sqrt": False}),
         flatopt_optax=("rmsprop", {"alpha": 0.9, "eps": 1e-8}),
         torch=("RMSprop", {"alpha": 0.99, "eps": 1e-8}, "foreach"),
         optax=("rmsprop", {"decay": 0.9, "eps": 1e-8})),
    dict(rule="adamax", flatopt=("adamax", {"eps_outside_max": False}),
         flatopt_optax=("adamax", {}), torch=("Adamax", {"eps": 1e-8}, "foreach"),
         optax=("adamax", {"eps": 1e-8})),
    dict(rule="nadam", flatopt=("nadam", {"constant_momentum": False, "momentum_decay": 4e-3}),
         flatopt_optax=("nadam", {}), torch=("NAdam", {"momentum_decay": 4e-3}, "foreach"),
         optax=("nadam", {})),
    dict(rule="lion", flatopt=("lion", {"b1": 0.9, "b2": 0.99, "weight_decay": 1e-3}),
         torch="torch.optim has no Lion",
         optax=("lion", {"b1": 0.9, "b2": 0.99, "weight_decay": 1e-3})),
    dict(rule="adabelief", flatopt=("adabelief", {"eps": 1e-16, "eps_root": 1e-16}),
         torch="torch.optim has no AdaBelief",
         optax=("adabelief", {"eps": 1e-16, "eps_root": 1e-16})),
    dict(rule="yogi", flatopt=("yogi", {"eps": 1e-3, "initial_accumulator_value": 1e-6}),
         torch="torch.optim has no Yogi",
         optax=("yogi", {"eps": 1e-3})),  # optax's yogi: scale_by_yogi's 1e-6 start
    dict(rule="adadelta", lr=1.0, flatopt=("adadelta", {"rho": 0.9, "eps": 1e-6}),
         torch=("Adadelta", {"rho": 0.9, "eps": 1e-6}, "foreach"),
         optax=("adadelta", {"rho": 0.9, "eps": 1e-6})),
    dict(rule="rprop", flatopt=("rprop", {}),
         torch=("Rprop", {"etas": (0.5, 1.2), "step_sizes": (1e-6, 50.0)}, "foreach"),
         optax=("rprop", {"eta_minus": 0.5, "eta_plus": 1.2, "min_step_size": 1e-6,
                          "max_step_size": 50.0}),
         optax_lag=(1, "optax's rprop returns the previous step's update (docs/numerics.md, "
                       "\"Rprop\"): its step t + 1 is flatopt's and PyTorch's step t")),
    # The rules with passes before the update (docs/numerics.md, "Per-buffer norms" and
    # "Adafactor"): `passes` is (the probe's pattern, compare_probe_passes' kind; the bytes per
    # element the rule moves, from numerics.md's tables). A registered buffer is one layer.
    dict(rule="lamb", flatopt=("lamb", {"b1": 0.9, "b2": 0.999, "eps": 1e-6,
                                        "weight_decay": 1e-2}),
         torch="torch.optim has no LAMB", passes=("lamb", 40),
         optax=("lamb", {"b1": 0.9, "b2": 0.999, "eps": 1e-6, "weight_decay": 1e-2})),
    dict(rule="lars", lr=1.0, flatopt=("lars", {"weight_decay": 1e-4, "trust_coefficient": 1e-3,
                                                "eps": 1e-8, "momentum": 0.9}),
         torch="torch.optim has no LARS", passes=("lars", 28),
         optax=("lars", {"weight_decay": 1e-4, "trust_coefficient": 1e-3, "eps": 1e-8,
                         "momentum": 0.9})),
    dict(rule="novograd", flatopt=("novograd", {"b1": 0.9, "b2": 0.25, "eps": 1e-6,
                                                "weight_decay": 1e-3}),
         torch="torch.optim has no NovoGrad", passes=("novograd", 24),
         optax=("novograd", {"b1": 0.9, "b2": 0.25, "eps": 1e-6, "weight_decay": 1e-3})),
    # Adafactor on one near-square matrix per size (matrix_shape: 1e8 = 10000 x 10000), factored
    # as PyTorch factors every 2-D tensor, and optax (its defaults) where both dims are at
    # least min_dim_size_to_factor = 128 (not at 1e3 = 25 x 40 and 1e4 = 100 x 100: there its
    # form is the unfactored one, 32 B/element). Both clip the update by its RMS (d = 1,
    # clipping_threshold = 1) and scale by the parameters' RMS: 24 B/element factored.
    dict(rule="adafactor", lr=1e-2, matrix=True, passes=("adafactor", 24), agree_n=128 * 160,
         flatopt=("adafactor", {"min_dim_size_to_factor": 0, "eps": 0.0,
                                "eps_floor": float(np.finfo(np.float32).eps), "eps_scale": 1e-3,
                                "relative_step": True, "weight_decay_by_lr": True}),
         flatopt_optax=("adafactor", {}),
         torch=("Adafactor", {"beta2_decay": -0.8, "eps": (None, 1e-3), "d": 1.0,
                              "weight_decay": 0.0}, "foreach"),
         optax=("adafactor", {})),
]
# compare_probe_passes' kinds (probe.c, enum passes).
PASSES_KIND = {"lamb": 0, "lars": 1, "novograd": 2, "adafactor": 3}
# Adafactor's unfactored form (optax's below min_dim_size_to_factor): bytes per element.
ADAFACTOR_UNFACTORED_BYTES = 32
FAMILY_STEPS = 12  # steps of the agreement check
# SPEC's tolerance (docs/numerics.md, "Test tolerances": |a - b| <= 1e-5 + 1e-5 |b| for every
# element) after FAMILY_STEPS steps: max |a - b| / (1 + |b|) <= FAMILY_TOL.
FAMILY_TOL = 1e-5


def family_rows(names=""):
    keep = [s for s in names.split(",") if s]
    unknown = sorted(set(keep) - {r["rule"] for r in FAMILY})
    if unknown:
        sys.exit(f"compare.py: unknown --rules {unknown}; known: {[r['rule'] for r in FAMILY]}")
    return [r for r in FAMILY if not keep or r["rule"] in keep]


def flatopt_forms(row):
    """(workload, (factory, kwargs)) of flatopt's forms of the rule: (PyTorch's, optax's), the
    same workload twice where both libraries define the rule alike."""
    torch_form = (row["rule"], row["flatopt"])
    if "flatopt_optax" in row:
        return torch_form, (row["rule"] + "/optax", row["flatopt_optax"])
    return torch_form, torch_form


def flatopt_base(row, form):
    import flatopt
    fn, kw = form
    return getattr(flatopt, fn)(row.get("lr", LR), **kw)


def state_buffers(row, form):
    """How many state buffers flatopt keeps for the rule (from the library:
    flatopt_base_state_buffers), so 12 + 8 * that many bytes per element move per step."""
    import flatopt._lib as L
    base = flatopt_base(row, form)
    hp = L.new_base_params(base.kind)
    base._fill(hp)
    mask = ctypes.c_uint32(0)
    fn = getattr(L.lib, "flatopt_base_state_buffers", None)
    if fn is None:
        sys.exit(f"compare.py: the flatopt library at {L.library_path} predates the optimizer "
                 "family (no flatopt_base_state_buffers): reinstall the package "
                 "(pip install ./bindings/python) or set FLATOPT_LIBRARY")
    fn.argtypes = [ctypes.POINTER(L.BaseParams), ctypes.POINTER(ctypes.c_uint32)]
    fn.restype = ctypes.c_int
    status = fn(ctypes.byref(hp), ctypes.byref(mask))
    if status != 0:
        raise RuntimeError(f"flatopt_base_state_buffers({row['rule']}): status {status}")
    return bin(mask.value).count("1")


def family_bytes(row):
    """Bytes per element the rule moves (PyTorch's form where it differs; Adafactor factored):
    12 + 8 per state buffer for the one-pass rules, numerics.md's figure for the others."""
    if "passes" in row:
        return row["passes"][1]
    return 12 + 8 * state_buffers(row, row["flatopt"])


def matrix_shape(n):
    """The near-square matrix of n elements: (rows, cols), rows the largest divisor of n up to
    sqrt(n) (1e8: 10000 x 10000, 1e7: 3125 x 3200, 1e6: 1000 x 1000, 1e5: 250 x 400)."""
    r = math.isqrt(n)
    while n % r:
        r -= 1
    return r, n // r


def form_bytes(row, workload, n):
    """Bytes per element of flatopt's form `workload` of the rule at n elements: optax's
    Adafactor is unfactored where the matrix has a dim below its min_dim_size_to_factor."""
    if row.get("matrix") and workload.endswith("/optax"):
        limit = row["flatopt_optax"][1].get("min_dim_size_to_factor", 128)
        if min(matrix_shape(n)) < limit:
            return ADAFACTOR_UNFACTORED_BYTES
    return family_bytes(row)


def shaped(row, x):
    """x as the rule's parameter array: a near-square matrix for Adafactor, else flat."""
    return x.reshape(matrix_shape(x.size)) if row.get("matrix") else x


def make_probe_passes(row):
    kind = PASSES_KIND[row["rule"]]

    def make(ctx, n, threads, p0, g):
        p = p0.copy()
        m = ctx.probe.random(n, "m") if kind != PASSES_KIND["adafactor"] else None
        v = ctx.probe.random(n, "v") if kind == PASSES_KIND["lamb"] else None
        cols = matrix_shape(n)[1] if row.get("matrix") else n
        fn = ctx.probe.lib.compare_probe_passes
        args = (p.ctypes.data, g.ctypes.data, None if m is None else m.ctypes.data,
                None if v is None else v.ctypes.data, n, cols, threads, kind)
        keep = (p, g, m, v)
        if fn(*args) != 0:
            raise RuntimeError(f"compare_probe_passes({row['rule']}, n={n}) failed")

        def step():
            fn(*args)
            return keep
        return step, None, lambda: p.copy()
    return make


def make_probe_states(states):
    def make(ctx, n, threads, p0, g):
        p = p0.copy()
        bufs = [ctx.probe.random(n, "m") for _ in range(states)]
        ptrs = [b.ctypes.data for b in bufs] + [None] * (3 - len(bufs))
        fn = ctx.probe.lib.compare_probe_states
        args = (p.ctypes.data, g.ctypes.data, *ptrs, n, threads, states)
        keep = (p, g, bufs)

        def step():
            fn(*args)
            return keep
        return step, None, lambda: p.copy()
    return make


# flatopt's state bytes per element (Optimizer.state_bytes_per_element) per (workload, n), as
# the measured optimizers report them.
STATE_SEEN = {}


def make_flatopt_rule(row, form, workload=None):
    def make(ctx, n, threads, p0, g):
        import flatopt
        p = shaped(row, p0.copy())
        opt = flatopt.Optimizer(flatopt_base(row, form), None, lookahead=False,
                                nonfinite="propagate", num_threads=threads)
        opt.register_trainable_weights([p], grads=[shaped(row, g)])
        STATE_SEEN[(workload or row["rule"], n)] = opt.state_bytes_per_element
        return opt.update, None, lambda: p.reshape(-1).copy()
    return make


def make_torch_rule(row):
    cls_name, kw, kind = row["torch"]

    def make(ctx, n, threads, p0, g):
        torch = _torch()
        torch.set_num_threads(threads)
        p = _torch_param(torch, shaped(row, p0), shaped(row, g))
        opt = getattr(torch.optim, cls_name)([p], lr=row.get("lr", LR), **kw, **{kind: True})
        return opt.step, None, lambda: p.detach().numpy().reshape(-1).copy()
    return make


_JAX = {}


def _jax():
    """jax and optax on the CPU, imported once (JAX_PLATFORMS=cpu unless set)."""
    if "err" in _JAX:
        raise Unavailable(_JAX["err"])
    if "mods" not in _JAX:
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
        try:
            import jax
            import optax
        except Exception as e:  # noqa: BLE001
            _JAX["err"] = f"jax/optax not importable ({type(e).__name__}: {e})"
            raise Unavailable(_JAX["err"]) from None
        _JAX["mods"] = (jax, optax)
    return _JAX["mods"]


def _optax_step(row):
    """The jitted `update + apply_updates` of the rule's optax transformation (cached: one
    compilation per rule and size), with params and state donated so XLA updates them in
    place."""
    jax, optax = _jax()
    if row["rule"] not in _JAX:
        fn, kw = row["optax"]
        tx = getattr(optax, fn)(row.get("lr", LR), **kw)

        def update(params, state, grads):
            updates, state = tx.update(grads, state, params)
            return optax.apply_updates(params, updates), state
        _JAX[row["rule"]] = (tx, jax.jit(update, donate_argnums=(0, 1)))
    return _JAX[row["rule"]]


def optax_in_place(row, n=1000):
    """Whether the jitted optax step writes the parameters into the buffer it was given (the
    donation took effect) over three steps."""
    jax, _ = _jax()
    import jax.numpy as jnp
    tx, update = _optax_step(row)
    params = jnp.ones(n, jnp.float32)
    state, grads = tx.init(params), jnp.ones(n, jnp.float32)
    seen = {params.unsafe_buffer_pointer()}
    for _ in range(3):
        params, state = update(params, state, grads)
        seen.add(params.unsafe_buffer_pointer())
    return len(seen) == 1


def make_optax_rule(row):
    def make(ctx, n, threads, p0, g):
        jax, _ = _jax()
        import jax.numpy as jnp
        tx, update = _optax_step(row)
        params = jnp.array(shaped(row, p0))  # a copy: donated, so XLA writes into it
        grads = jnp.asarray(shaped(row, g))
        cur = [params, tx.init(params)]

        def step():
            cur[0], cur[1] = update(cur[0], cur[1], grads)

        def sync():
            cur[0].block_until_ready()
        # Compile now (not in the warm-up's per-step estimate) on a throwaway copy.
        spare = [jnp.array(shaped(row, p0))]
        spare.append(tx.init(spare[0]))
        update(*spare, grads)[0].block_until_ready()
        del spare
        return step, sync, lambda: np.asarray(cur[0]).reshape(-1).copy()
    return make


def family_impls(row, torch_ok, optax_ok):
    """The implementations measured for one rule: (name, workload, make, state bytes/element)."""
    (wt, ft), (wo, fo) = flatopt_forms(row)
    states = state_buffers(row, ft)
    size = 4 + 4 * states
    probe = make_probe_passes(row) if "passes" in row else make_probe_states(states)
    impls = [("probe", row["rule"], probe, size),
             ("flatopt-py", wt, make_flatopt_rule(row, ft, wt), size)]
    if wo != wt:
        impls.append(("flatopt-py", wo, make_flatopt_rule(row, fo, wo), size))
    if torch_ok and isinstance(row["torch"], tuple):
        impls.append(("torch", row["rule"], make_torch_rule(row), size + 8))  # + temporaries
    if optax_ok:
        impls.append(("optax", row["rule"], make_optax_rule(row), size + 4))  # + g's copy
    return impls


def annotate_family_records(row, recs):
    """Each flatopt form's own bytes per element (optax's Adafactor is unfactored on small
    matrices) and the state bytes per element its optimizer reported."""
    for r in recs:
        if r["impl"] == "flatopt-py":
            r["bytes_per_element"] = form_bytes(row, r["workload"], r["n"])
            r["state_bytes_per_element"] = STATE_SEEN.get((r["workload"], r["n"]))


def family_agreement(ctx, row, n, torch_ok, optax_ok, steps=FAMILY_STEPS):
    """flatopt (each form) against PyTorch and optax on identical data: `steps` updates each
    from the same p0 and g, then max |a - b| / (1 + |b|) (SPEC's tolerance: FAMILY_TOL).
    Returns [(pair, err, tol, note)], err None where the other is unavailable (note says why)."""
    n = row.get("agree_n", n)  # Adafactor: a matrix both libraries factor (128 x 160)
    p0, g = ctx.probe.random(n, "p"), ctx.probe.random(n, "g")
    (wt, ft), (wo, fo) = flatopt_forms(row)

    def run(make, k):
        step, sync, read = make(ctx, n, 1, p0, g)
        for _ in range(k):
            step()
        if sync:
            sync()
        return read()

    def err(a, b):
        return float(np.max(np.abs(a - b) / (1.0 + np.abs(b))))

    out = []
    mine_t = run(make_flatopt_rule(row, ft), steps)
    mine_o = mine_t if wo == wt else run(make_flatopt_rule(row, fo), steps)
    moved = float(np.max(np.abs(mine_t - p0)))
    out.append(("flatopt moved p", moved if np.all(np.isfinite(mine_t)) else float("nan"), None,
                "finite, largest change"))
    if isinstance(row["torch"], str):
        out.append((f"vs torch ({wt})", None, None, row["torch"]))
    elif not torch_ok:
        out.append((f"vs torch ({wt})", None, None, "torch not importable"))
    else:
        out.append((f"vs torch.optim.{row['torch'][0]}({row['torch'][2]}=True) ({wt})",
                    err(mine_t, run(make_torch_rule(row), steps)), FAMILY_TOL, ""))
    if not optax_ok:
        out.append((f"vs optax ({wo})", None, None, "jax/optax not importable"))
    else:
        lag, lag_note = row.get("optax_lag", (0, ""))
        out.append((f"vs optax.{row['optax'][0]} under jax.jit ({wo})",
                    err(mine_o, run(make_optax_rule(row), steps + lag)), FAMILY_TOL, lag_note))
    return out


def _family_available():
    try:
        _torch()
        torch_ok, torch_why = True, ""
    except Unavailable as e:
        torch_ok, torch_why = False, str(e)
    try:
        _jax()
        optax_ok, optax_why = True, ""
    except Unavailable as e:
        optax_ok, optax_why = False, str(e)
    return torch_ok, torch_why, optax_ok, optax_why


def jax_info():
    try:
        jax, optax = _jax()
    except Unavailable as e:
        return {"jax": None, "why": str(e)}
    import jaxlib
    dev = jax.devices()
    return {"jax": jax.__version__, "jaxlib": jaxlib.__version__, "optax": optax.__version__,
            "devices": [str(d) for d in dev], "xla_flags": os.environ.get("XLA_FLAGS", "")}


def run_family(args, probe):
    """The full family comparison: every rule at every size and thread count."""
    import flatopt
    rows = family_rows(args.rules)
    sizes = [int(float(s)) for s in args.sizes.split(",") if s]
    threads = [int(t) for t in args.threads.split(",") if t]
    args.period = 1  # no Lookahead here: any number of steps per block
    args.driver = None  # the C driver measures the Adam comparison only
    torch_ok, torch_why, optax_ok, optax_why = _family_available()
    skipped = {}
    if not torch_ok:
        skipped["torch"] = torch_why
    if not optax_ok:
        skipped["optax"] = optax_why
    for k, v in skipped.items():
        log(f"  skip {k}: {v}")
    ctx = Ctx(probe, args.pool)
    machine = machine_info()
    meta = {"machine": machine, "jax": jax_info(), "tier": flatopt.Adam(lr=LR).simd_tier,
            "load_start": loadavg(), "argv": sys.argv[1:], "reps": args.reps,
            "min_time": args.min_time, "min_steps": args.min_steps, "sizes": sizes,
            "threads": threads, "rules": [r["rule"] for r in rows]}
    log(f"compare.py --family: {len(rows)} rules, sizes {sizes}, threads {threads}, reps "
        f"{args.reps}; load {meta['load_start']}")
    t_start = time.time()
    agreement = {}
    for row in rows:
        agreement[row["rule"]] = family_agreement(ctx, row, 5003, torch_ok, optax_ok)
        for pair, e, tol, note in agreement[row["rule"]]:
            if tol is not None and not e <= tol:
                log(f"  WARNING {row['rule']} {pair}: max rel diff {e:.1e} > {tol:.0e}")
    records, conditions, done = [], [], []
    for n in sizes:
        for t in threads:
            busy, waited = wait_idle(args.wait_idle)
            t0 = time.time()
            for row in rows:
                impls = family_impls(row, torch_ok, optax_ok)
                before = len(records)
                measure_point(args, ctx, n, t, impls, records, skipped, family_bytes(row))
                annotate_family_records(row, records[before:])
                gc.collect()
            busy_after = cpu_busy()
            conditions.append({"n": n, "threads": t, "other_cpu_busy_before": busy,
                               "waited_s": round(waited, 1), "other_cpu_busy_after": busy_after,
                               "loadavg_after": loadavg(), "seconds": round(time.time() - t0, 1)})
            log(f"  n={fmt_n(n)} threads={t}: {time.time() - t0:.1f} s; other CPU load before "
                f"{busy:.2f} (waited {waited:.0f} s), after {busy_after:.2f}; load {loadavg()}")
            # Written after every point: an interrupted run keeps the points it finished.
            done = sorted(set(done) | {n})
            for r in records:
                summarize(r)
            meta.update({"load_end": loadavg(), "seconds": time.time() - t_start,
                         "skipped": skipped, "conditions": conditions, "sizes": done,
                         "sizes_asked": sizes,
                         "agreement": {k: [list(x) for x in v] for k, v in agreement.items()}})
            md = render_family_md(meta, index(records), rows)
            base = write_results(args.out, "family", md, {"meta": meta, "records": records},
                                 None)
            log(f"  wrote {base}.md/.json and latest-family.*")
    print(md)


def merge_family(paths, out):
    """One family table from several --family runs (their .json files, in order): all the
    records of a rule at a size and thread count come from one run, the last file that has
    that point, so every ratio is between implementations interleaved in one process. Writes
    out/<date>-family.{md,json} and latest-family.*."""
    groups, runs, agreement, conditions = {}, [], {}, []
    meta = None
    for i, path in enumerate(paths):
        with open(path) as f:
            saved = json.load(f)
        meta = saved["meta"]
        if "agreement" not in meta:
            sys.exit(f"compare.py --merge: {path} is not a --family run")
        by = {}
        for r in saved["records"]:
            by.setdefault((r["workload"].split("/")[0], r["n"], r["threads"]), []).append(r)
        for key, rs in by.items():
            groups[key] = (i, rs)
        agreement.update(meta["agreement"])
        conditions += [dict(c, run=i + 1) for c in meta.get("conditions", [])]
        runs.append({"file": os.path.basename(path), "date": meta["machine"]["date"],
                     "commit": meta["machine"].get("commit"), "argv": meta["argv"],
                     "load_start": meta["load_start"], "load_end": meta["load_end"],
                     "seconds": meta["seconds"], "conditions": meta.get("conditions", [])})
    if meta is None:
        sys.exit("compare.py --merge: no files")
    for i, run in enumerate(runs):
        run["points"] = sorted(f"{rule} {fmt_n(n)}/{t}t" for (rule, n, t), (j, _) in
                               groups.items() if j == i)
    records = [r for _, rs in groups.values() for r in rs]
    for r in records:
        summarize(r)
    names = {k[0] for k in groups}
    merged = dict(meta, runs=runs, agreement=agreement, conditions=conditions,
                  argv=["--merge", ",".join(r["file"] for r in runs)],
                  load_start=runs[0]["load_start"], load_end=runs[-1]["load_end"],
                  seconds=sum(r["seconds"] for r in runs),
                  sizes=sorted({k[1] for k in groups}), threads=sorted({k[2] for k in groups}),
                  rules=[r["rule"] for r in FAMILY if r["rule"] in names])
    md = render_family_md(merged, index(records), family_rows(",".join(merged["rules"])))
    base = write_results(out, "family", md, {"meta": merged, "records": records}, None)
    print(md)
    log(f"wrote {base}.md/.json and latest-family.* from {len(runs)} runs")


def _speedup(value):
    """A speed-up cell: how many times faster flatopt is (bold where it is slower)."""
    if value is None:
        return "–"
    return f"{value:.2f}×" if value >= 1.0 else f"**{value:.2f}×**"


def family_ratios(idx, row, n, t):
    """(flatopt vs torch, flatopt vs optax, flatopt's fraction of its probe): time ratios, medians
    of per-repetition ratios."""
    (wt, _), (wo, _) = flatopt_forms(row)
    fr = ("flatopt-py", wt)
    return (ratio(idx, fr, ("torch", row["rule"]), n, t),
            ratio(idx, ("flatopt-py", wo), ("optax", row["rule"]), n, t),
            bw_fraction(idx, fr, n, t, probe=("probe", row["rule"])))


def render_family_md(meta, idx, rows):
    m, jx = meta["machine"], meta["jax"]
    sizes, threads = meta["sizes"], meta["threads"]
    lines = header_lines(
        meta, "flatopt's optimizer family vs PyTorch and optax",
        f"torch {m.get('torch')} (CPU capability {m.get('torch_cpu_capability', '?')}), "
        f"jax {jx.get('jax')} / jaxlib {jx.get('jaxlib')} ({', '.join(jx.get('devices') or [])}), "
        f"optax {jx.get('optax')}")
    how = ("How: each run below" if meta.get("runs") else
           f"How: `compare.py {' '.join(meta['argv'])}` (`make bench-compare` runs it after the "
           "Adam comparison)")
    lines.append(
        f"{how}. Per rule, size and thread count, interleaved in rotating order in one "
        f"process, {meta['reps'] if not meta.get('runs') else '--reps'} timed blocks each (≥ {meta['min_time']} s and ≥ "
        f"{meta['min_steps']} steps): a plain C probe with the rule's memory pattern (probe.c, "
        "`compare_probe_states`: read p, g and the rule's state buffers, write p and the state; "
        "`compare_probe_passes` for the rules with passes before the update), "
        "flatopt through its Python binding (`flatopt.Optimizer(flatopt.<rule>(...), "
        "nonfinite=\"propagate\", num_threads=t)`, gradients registered: one ctypes call per "
        "step), PyTorch's fastest implementation of the rule (`fused=True` where torch.optim "
        "has a fused CPU kernel for it, else `foreach=True`; `torch.set_num_threads(t)`), and "
        "optax's rule as one `jax.jit`-compiled `update` + `apply_updates` on the flat float32 "
        "array with params and state donated (updated in place), asynchronous dispatch waited "
        "for at the end of each block. JAX's CPU client sizes its own thread pool to the "
        "machine whatever `t` is (the optax column's cpu/wall says how many cores it kept "
        "busy). Same data (`compare_fill_random` / `compare_fill_gradient`), same "
        "hyperparameters: where PyTorch and optax define a rule differently, flatopt runs in "
        "each one's form against it (\"/optax\"). Bytes per element: what the rule must move, "
        "12 + 8 per state buffer flatopt keeps (asked from the library). Speed-ups: the other's "
        "time per step over flatopt's (above 1: flatopt is faster; bold: slower), medians of "
        "per-repetition ratios.")
    lines.append("")
    for k, run in enumerate(meta.get("runs") or []):
        if k == 0:
            lines.append(f"Assembled from {len(meta['runs'])} runs (`compare.py --merge`): each "
                         "row's figures at one size, and so every ratio, come from one run, "
                         "whose implementations ran interleaved in one process. The runs:")
            lines.append("")
        busy = ", ".join(f"{fmt_n(c['n'])}/{c['threads']}t "
                         f"{100 * (c['other_cpu_busy_before'] or 0):.0f}/"
                         f"{100 * (c['other_cpu_busy_after'] or 0):.0f}%"
                         for c in run["conditions"])
        lines.append(f"{k + 1}. {run['date'][:16]}, commit {run['commit']}, "
                     f"`compare.py {' '.join(run['argv'])}`, {run['seconds'] / 60:.1f} min, load "
                     f"{run['load_start']} → {run['load_end']}; other processes' CPU share "
                     f"before / after each point {busy}; gives "
                     f"{', '.join(run['points']) or 'nothing (a later run measured its points again)'}.")
    if meta.get("runs"):
        lines.append("")
    skipped = meta.get("skipped") or {}
    if skipped:
        lines.append("Skipped: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
        lines.append("")
    lines.append(f"## Same work: agreement after {FAMILY_STEPS} steps (n = 5003; Adafactor: a "
                 "128 x 160 matrix, which both libraries factor)")
    lines.append("")
    lines.append("max |a − b| / (1 + |b|) over the parameters, against SPEC's tolerance "
                 f"({FAMILY_TOL:.0e}: |a − b| ≤ 1e-5 + 1e-5 |b| for every element).")
    lines.append("")
    lines.append("| rule | against | max rel diff | bound | note |")
    lines.append("|---|---|---|---|---|")
    for row in rows:
        for pair, e, tol, note in meta["agreement"].get(row["rule"], []):
            if pair == "flatopt moved p":
                continue
            cell = "–" if e is None else f"{e:.1e}"
            ok = "" if tol is None or e is None else (" ok" if e <= tol else " **NOT met**")
            bound = "–" if tol is None else f"{tol:.0e}{ok}"
            lines.append(f"| {row['rule']} | {pair} | {cell} | {bound} | {note} |")
    lines.append("")
    for t in threads:
        lines.append(f"## Speed-up of flatopt, {t} thread{'s' if t > 1 else ''}: over PyTorch / over optax")
        lines.append("")
        lines.append("| rule | B/element | state B/element | PyTorch | "
                     + " | ".join(fmt_n(n) for n in sizes)
                     + f" | of its probe at {fmt_n(max(sizes))} |")
        lines.append("|" + "---|" * (len(sizes) + 5))
        for row in rows:
            torch_impl = (f"{row['torch'][0]} {row['torch'][2]}" if isinstance(row["torch"], tuple)
                          else "none")
            cells = []
            for n in sizes:
                rt, ro, _ = family_ratios(idx, row, n, t)
                cells.append(f"{_speedup(rt)} / {_speedup(ro)}")
            frac = family_ratios(idx, row, max(sizes), t)[2]
            mine = idx.get(("flatopt-py", flatopt_forms(row)[0][0], max(sizes), t)) or {}
            state = mine.get("state_bytes_per_element")
            state = "–" if state is None else f"{state:.4g}"
            moved = family_bytes(row)
            if row.get("matrix"):
                moved = f"{moved} (optax's form unfactored below 128 x 128: " \
                        f"{ADAFACTOR_UNFACTORED_BYTES})"
            lines.append(f"| {row['rule']} | {moved} | {state} | {torch_impl} | "
                         + " | ".join(cells) + f" | {'–' if frac is None else f'{frac:.2f}×'} |")
        lines.append("")
    lines.append("## Targets: faster than both at every size (issue 14)")
    lines.append("")
    for t in threads:
        for row in rows:
            worst = {}
            for n in sizes:
                rt, ro, _ = family_ratios(idx, row, n, t)
                for who, r in (("PyTorch", rt), ("optax", ro)):
                    if r is not None and (who not in worst or r < worst[who][0]):
                        worst[who] = (r, n)
            parts = [f"{who} slowest margin {r:.2f}× at {fmt_n(n)} "
                     f"({'met' if r > 1.0 else 'NOT met'})" for who, (r, n) in worst.items()]
            lines.append(f"- {row['rule']}, {t} thread(s): " + ("; ".join(parts) or "not measured"))
    lines.append("")
    lines.append("## Times per step")
    lines.append("")
    lines.append("Median ± interquartile range (% of the median), GB/s of the bytes the rule must "
                 "move; flatopt in parentheses: its fraction of the probe's rate; optax: the "
                 "cores it kept busy (process CPU time over wall time).")
    lines.append("")
    lines.append("| rule | n | threads | probe | flatopt | flatopt (optax form) | PyTorch | optax |")
    lines.append("|---|---|---|---|---|---|---|---|")
    for row in rows:
        (wt, _), (wo, _) = flatopt_forms(row)
        keys = [("probe", row["rule"]), ("flatopt-py", wt),
                ("flatopt-py", wo) if wo != wt else None, ("torch", row["rule"]),
                ("optax", row["rule"])]
        for n in sizes:
            for t in threads:
                cells = []
                for key in keys:
                    r = key and idx.get(key + (n, t))
                    if not r:
                        cells.append("–")
                        continue
                    cell = f"{fmt_time(r['median_s'])} ±{r['spread_pct']:.0f}%<br>{r['gb_per_s']:.1f} GB/s"
                    if key[0] == "flatopt-py":
                        frac = bw_fraction(idx, key, n, t, probe=("probe", row["rule"]))
                        cell += f" ({frac:.2f}×)" if frac is not None else ""
                    if key[0] == "optax" and r.get("cpu_sec_per_step"):
                        busy = statistics.median(c / w for c, w in zip(r["cpu_sec_per_step"],
                                                                        r["sec_per_step"]))
                        cell += f"<br>cpu/wall {busy:.1f}"
                    cells.append(cell)
                lines.append(f"| {row['rule']} | {fmt_n(n)} | {t} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Quick mode: seconds, sanity checks only (no timing assertions)


def quick_family(args, ctx, check):
    """The family in quick mode: every rule's forms run and move the parameters; flatopt agrees
    with PyTorch and optax (where importable) after FAMILY_STEPS steps on identical data, the
    bytes per element come from the library, every implementation gives sane timings, the
    family's tables render."""
    torch_ok, torch_why, optax_ok, optax_why = _family_available()
    if not torch_ok:
        print(f"  skip the family against torch: {torch_why}")
    if not optax_ok:
        print(f"  skip the family against optax: {optax_why}")
    rows = family_rows(args.rules)
    agreement = {}
    for row in rows:
        if optax_ok:
            check(optax_in_place(row), f"family {row['rule']}: optax under jax.jit updates the "
                                       "donated parameters in place")
        b = family_bytes(row)
        if "passes" in row:
            # The probe's buffers are the state the library keeps (LAMB m, v; LARS m; NovoGrad
            # m, v whose element 0 holds nu; Adafactor v, its row and column averages).
            want = {"lamb": 2, "lars": 1, "novograd": 2, "adafactor": 1}[row["rule"]]
            got = state_buffers(row, row["flatopt"])
            check(got == want, f"family {row['rule']}: {b} B/element (numerics.md), the library "
                               f"keeps {got} state buffers (the probe's pattern: {want})")
        else:
            check(b in (12, 20, 28, 36), f"family {row['rule']}: {b} B/element (from the library)")
        for n in (1000, 5003):
            res = family_agreement(ctx, row, n, torch_ok, optax_ok)
            agreement[row["rule"]] = res
            for pair, e, tol, note in res:
                if pair == "flatopt moved p":
                    check(e is not None and math.isfinite(e) and e > 0,
                          f"family {row['rule']} n={n}: flatopt finite and moved p (by up to {e:.1e})")
                elif e is None:
                    if n == 1000 and note == row["torch"]:  # the rule's own (modules: above)
                        print(f"  skip family {row['rule']} {pair}: {note}")
                else:
                    check(e <= tol, f"family {row['rule']} n={n} {pair}: max rel diff {e:.1e} "
                                    f"(bound {tol:.0e}{'; ' + note if note else ''})")
    records, skipped = [], {}
    saved = args.period, args.driver
    args.period, args.driver = 1, None  # no Lookahead; the C driver measures Adam only
    for row in rows:
        impls = family_impls(row, torch_ok, optax_ok)
        before = len(records)
        measure_point(args, ctx, 1000, 1, impls, records, skipped, family_bytes(row))
        annotate_family_records(row, records[before:])
    args.period, args.driver = saved
    for r in records:
        summarize(r)
        ok = all(math.isfinite(x) and x > 0 for x in r["sec_per_step"]) and r["gb_per_s"] > 0
        check(ok, f"family {r['impl']:>10} {r['workload']:<14} n=1000 t=1: "
                  f"{r['ns_per_element']:.2f} ns/element (timing sane)")
    meta = {"machine": machine_info(), "jax": jax_info(), "tier": "?", "load_start": loadavg(),
            "load_end": loadavg(), "seconds": 0.0, "argv": ["--quick"], "reps": args.reps,
            "min_time": args.min_time, "min_steps": args.min_steps, "sizes": [1000],
            "threads": [1], "skipped": skipped,
            "agreement": {k: [list(x) for x in v] for k, v in agreement.items()}}
    md = render_family_md(meta, index(records), rows)
    check(all(f"| {r['rule']} | {family_bytes(r)} " in md for r in rows),
          "family tables render (a row per rule)")
    # --merge: the rules' points split over two runs' files give the same rows, from both runs.
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for k, part in enumerate((rows[::2], rows[1::2])):
            names = {r["rule"] for r in part}
            recs = [r for r in records if r["workload"].split("/")[0] in names]
            conds = [{"n": 1000, "threads": 1, "other_cpu_busy_before": 0.0,
                      "other_cpu_busy_after": 0.0}]
            paths.append(os.path.join(tmp, f"run{k}.json"))
            with open(paths[-1], "w") as f:
                json.dump({"meta": dict(meta, conditions=conds), "records": recs}, f)
        with contextlib.redirect_stdout(io.StringIO()):
            merge_family(paths, tmp)
        with open(os.path.join(tmp, "latest-family.md")) as f:
            merged = f.read()
    check("Assembled from 2 runs" in merged
          and all(f"| {r['rule']} | {family_bytes(r)} " in merged for r in rows)
          and merged.count("| 1e3 | 1 |") == md.count("| 1e3 | 1 |"),
          "family --merge: two runs' files give every rule's rows once")


def quick(args, probe):
    import flatopt
    failures = []

    def check(cond, what):
        print(f"  {'ok  ' if cond else 'FAIL'} {what}")
        if not cond:
            failures.append(what)

    print(f"compare.py --quick: flatopt {flatopt.library_version} from {flatopt.library_path}")
    for n in (1, 1000, 5003):
        for t in (1, 2):
            p0, g = probe.random(n, "p"), probe.random(n, "g")
            check(bool(np.all(g != 0)) and bool(np.all(np.isfinite(g))), f"n={n}: data finite, no zeros")
            for wl in ("adam", "pipeline"):
                ref = NumpyAdam(n, t, p0, g, wl == "pipeline", args.pool)
                p = p0.copy()
                if wl == "pipeline":
                    # Clipping active here (threshold below the norm) to check the scale as well.
                    opt = flatopt.Lookahead(flatopt.adam(LR, b1=B1, b2=B2, eps=EPS),
                                            sync_period=SYNC_PERIOD, alpha=ALPHA,
                                            weight_decay=WEIGHT_DECAY,
                                            grad_clip_norm=0.5 * float(np.linalg.norm(g)),
                                            num_threads=t)
                    ref.max_norm = 0.5 * float(np.linalg.norm(g))
                else:
                    opt = flatopt.Adam(lr=LR, betas=(B1, B2), eps=EPS, num_threads=t,
                                       nonfinite="propagate")
                opt.register_trainable_weights([p], grads=[g])
                for _ in range(12):
                    opt.update()
                    ref.step()
                err = float(np.max(np.abs(p - ref.p) / (np.abs(ref.p) + 1e-3)))
                check(err < 1e-5, f"n={n} threads={t} {wl}: flatopt vs NumPy max rel diff {err:.1e}")
    # Each implementation runs a few steps and its timings are finite and positive.
    torch_ok = True
    try:
        _torch()
    except Unavailable as e:
        torch_ok = False
        print(f"  skip torch and deepspeed: {e}")
    if torch_ok:
        import torch
        n = 5003
        p0, g = probe.random(n, "p"), probe.random(n, "g")
        pt = torch.nn.Parameter(torch.from_numpy(p0.copy()))
        pt.grad = torch.from_numpy(g)
        topt = torch.optim.Adam([pt], lr=LR, betas=(B1, B2), eps=EPS, fused=True)
        ref = NumpyAdam(n, 1, p0, g, False, args.pool)
        for _ in range(12):
            topt.step()
            ref.step()
        err = float(np.max(np.abs(pt.detach().numpy() - ref.p) / (np.abs(ref.p) + 1e-3)))
        check(err < 1e-4, f"torch fused vs NumPy Adam max rel diff {err:.1e}")
    ctx = Ctx(probe, args.pool)
    records, skipped = [], {}
    impls = IMPLS if torch_ok else [i for i in IMPLS if not i[0].startswith(("torch", "deep"))]
    if torch_ok and not args.quick_deepspeed:
        impls = [i for i in impls if i[0] != "deepspeed"]
        skipped["deepspeed"] = "not built in --quick (its first build takes a minute)"
    args.reps, args.min_time, args.warm_time, args.pause = 2, 0.002, 0.001, 0.0
    for n in (1000, 4096):
        for t in (1, 2):
            measure_point(args, ctx, n, t, impls, records, skipped)
    for r in records:
        summarize(r)
        ok = all(math.isfinite(x) and x > 0 for x in r["sec_per_step"]) and r["gb_per_s"] > 0
        check(ok, f"{r['impl']:>14} {r['workload']:<9} n={r['n']} t={r['threads']}: "
                  f"{r['ns_per_element']:.2f} ns/element (timing sane)")
    if args.driver:
        out = subprocess.run([args.driver, "check"], capture_output=True, text=True)
        check(out.returncode == 0, f"driver check: {out.stdout.strip()}")
        out = subprocess.run([args.driver, "latency", "10", "10000", "2000"], capture_output=True,
                             text=True)
        lat = json.loads(out.stdout) if out.returncode == 0 else None
        check(lat is not None and lat["p50_us"] > 0 and lat["failed_steps"] == 0,
              f"driver latency runs: {lat and round(lat['p50_us'], 2)} µs p50")
        check(lat is not None and lat["canary_allocations"] > 0
              and lat["allocations_during_steps"] == 0,
              "latency step allocates nothing (and the allocation counter works)")
    else:
        print("  skip the C driver: not built (bash benches/compare/build.sh)")
    idx = index(records)
    with tempfile.TemporaryDirectory() as d:
        sizes, threads = sorted({r["n"] for r in records}), [1, 2]
        meta = {"machine": machine_info(), "tier": "?", "load_start": loadavg(),
                "load_end": loadavg(), "seconds": 0.0, "argv": ["--quick"], "reps": 2,
                "min_time": args.min_time}
        md = render_md(meta, idx, sizes, threads, None, skipped, "x.png")
        check("| 1e3 | 1 |" in md, "markdown table renders")
        try:
            import matplotlib  # noqa: F401
            check(plot(idx, sizes, threads, os.path.join(d, "x.png")), "plot renders")
        except ImportError:
            print("  skip plot: matplotlib not importable")
    quick_family(args, ctx, check)
    print(f"compare.py --quick: {len(failures)} failed" if failures else "compare.py --quick: all ok")
    return 1 if failures else 0


# ---------------------------------------------------------------------------------------------


def write_results(out, suffix, md, payload, png):
    """Writes out/<date>[-suffix].{md,json} (and the .png from `png`, a file written before, if
    any) and copies them to latest[-suffix].*; "@PNG@" in `md` names the plot. Returns the
    dated base path."""
    os.makedirs(out, exist_ok=True)
    stamp = _dt.datetime.now().strftime("%Y-%m-%d") + (f"-{suffix}" if suffix else "")
    latest = "latest" + (f"-{suffix}" if suffix else "")
    base = os.path.join(out, stamp)
    if png:
        shutil.move(png, base + ".png")
        shutil.copyfile(base + ".png", os.path.join(out, latest + ".png"))
    for name in (stamp, latest):
        with open(os.path.join(out, name + ".md"), "w") as f:
            f.write(md.replace("@PNG@", name + ".png"))
    with open(base + ".json", "w") as f:
        json.dump(payload, f, indent=1)
    shutil.copyfile(base + ".json", os.path.join(out, latest + ".json"))
    return base


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="sanity checks only, in seconds")
    ap.add_argument("--quick-deepspeed", action="store_true", help="include DeepSpeed in --quick")
    ap.add_argument("--sizes", default="1e3,1e4,1e5,1e6,1e7,1e8")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--min-time", type=float, default=0.25, help="seconds per timed block")
    ap.add_argument("--min-steps", type=int, default=5, help="steps per timed block, at least")
    ap.add_argument("--family", action="store_true",
                    help="the optimizer family: every base rule against PyTorch and optax "
                         "(writes results/<date>-family.{md,json} and latest-family.*)")
    ap.add_argument("--rules", default="", help="--family: comma list of rules (default all)")
    ap.add_argument("--warm-time", type=float, default=0.1)
    ap.add_argument("--pause", type=float, default=0.1,
                    help="seconds between implementations (lets other thread pools go idle)")
    ap.add_argument("--mem-budget", type=float, default=5.0,
                    help="GB of state kept alive across repetitions at one size")
    ap.add_argument("--only", default="", help="comma list of implementation names")
    ap.add_argument("--workloads", default="",
                    help="comma list of workloads: a name keeps itself and its '-' variants "
                         "(mixed: mixed, mixed-bf16, mixed-fp16); the results are written as "
                         "<date>-<first workload>.* and latest-<first workload>.*")
    ap.add_argument("--latency-steps", type=int, default=100_000)
    ap.add_argument("--wait-idle", type=float, default=180.0,
                    help="before each point, wait up to this many seconds for other processes "
                         "to leave the CPUs (< 25%% busy); the load seen is recorded")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--merge", metavar="JSON,JSON,...",
                    help="--family: one table from several runs' .json files (each point from "
                         "the last file that has it), written to --out as latest-family.*")
    ap.add_argument("--render", metavar="JSON",
                    help="only re-render the .md and .png of an earlier run's .json")
    ap.add_argument("--driver", default=os.path.join(BUILD, "driver"))
    ap.add_argument("--probe-lib", default=os.path.join(BUILD, "libcompare_probe.so"))
    args = ap.parse_args()
    args.period = SYNC_PERIOD

    try:
        import flatopt  # noqa: F401
    except ImportError:
        # In-tree fallback (make test before the package is installed).
        sys.path.insert(0, os.path.join(ROOT, "bindings", "python"))
        os.environ.setdefault("FLATOPT_LIBRARY", os.path.join(ROOT, "target", "release",
                                                              "libflatopt.so"))
    if args.merge:
        merge_family([p for p in args.merge.split(",") if p], args.out)
        return
    if args.render:
        with open(args.render) as f:
            saved = json.load(f)
        meta, records = saved["meta"], saved["records"]
        for r in records:
            if "sec_per_step" in r:
                summarize(r)
        latency = next((r for r in records if r.get("workload") == "latency"), None)
        base = os.path.splitext(args.render)[0]
        idx = index(records)
        if "agreement" in meta:  # a --family run
            md = render_family_md(meta, idx, family_rows(",".join(meta["rules"])))
            with open(base + ".md", "w") as f:
                f.write(md)
            print(md)
            return
        png_ok = plot(idx, meta["sizes"], meta["threads"], base + ".png")
        md = render_md(meta, idx, meta["sizes"], meta["threads"], latency, meta["skipped"],
                       os.path.basename(base) + ".png" if png_ok else "(no plot)")
        with open(base + ".md", "w") as f:
            f.write(md)
        print(md)
        return
    if not os.path.exists(args.probe_lib):
        sys.exit(f"compare.py: {args.probe_lib} missing: run bash benches/compare/build.sh")
    if not os.path.exists(args.driver):
        args.driver = None
    probe = Probe(args.probe_lib)
    from concurrent.futures import ThreadPoolExecutor
    args.pool = ThreadPoolExecutor(max_workers=1)

    if args.quick:
        sys.exit(quick(args, probe))
    if args.family:
        run_family(args, probe)
        return

    sizes = [int(float(s)) for s in args.sizes.split(",") if s]
    threads = [int(t) for t in args.threads.split(",") if t]
    impls = IMPLS
    if args.only:
        keep = set(args.only.split(","))
        impls = [i for i in IMPLS if i[0] in keep]
        if "flatopt-c" not in keep:
            args.driver = None
    suffix = ""
    if args.workloads:
        wls = [w for w in args.workloads.split(",") if w]
        impls = [i for i in impls if any(i[1] == w or i[1].startswith(w + "-") for w in wls)]
        args.driver = None  # the C driver measures the Adam comparison only
        suffix = wls[0]
    import flatopt
    machine = machine_info()
    tier = flatopt.Adam(lr=LR).simd_tier
    load_start = loadavg()
    log(f"compare.py: sizes {sizes}, threads {threads}, reps {args.reps}; load {load_start}")
    t_start = time.time()
    ctx = Ctx(probe, args.pool)
    records, skipped = [], {}
    if args.driver is None:
        skipped["flatopt-c"] = "C driver not built or not selected"
    conditions = []
    for n in sizes:
        for t in threads:
            busy, waited = wait_idle(args.wait_idle)
            t0 = time.time()
            before = len(records)
            measure_point(args, ctx, n, t, impls, records, skipped)
            busy_after = cpu_busy()
            for r in records[before:]:
                r["other_cpu_busy_before"] = busy
            conditions.append({"n": n, "threads": t, "other_cpu_busy_before": busy,
                               "waited_s": round(waited, 1), "other_cpu_busy_after": busy_after,
                               "loadavg_after": loadavg(), "seconds": round(time.time() - t0, 1)})
            log(f"  n={fmt_n(n)} threads={t}: {time.time() - t0:.1f} s; other CPU load before "
                f"{busy:.2f} (waited {waited:.0f} s), after {busy_after:.2f}; load {loadavg()}")
            gc.collect()
    latency = None
    if args.driver:
        busy, waited = wait_idle(args.wait_idle)
        out = subprocess.run([args.driver, "latency", "10", "10000", str(args.latency_steps)],
                             capture_output=True, text=True, check=True)
        latency = json.loads(out.stdout)
        latency["other_cpu_busy_before"] = busy
        records.append(latency)
    for r in records:
        if "sec_per_step" in r:
            summarize(r)
    idx = index(records)
    meta = {"machine": machine, "tier": tier, "load_start": load_start, "load_end": loadavg(),
            "seconds": time.time() - t_start, "argv": sys.argv[1:], "reps": args.reps,
            "min_time": args.min_time, "sizes": sizes, "threads": threads, "skipped": skipped,
            "bytes_per_element": BYTES, "conditions": conditions,
            "deepspeed_mixed": DEEPSPEED_MIXED_MODE.get("mode")}
    png = os.path.join(args.out, "plot.png")
    os.makedirs(args.out, exist_ok=True)
    # The plot shows the Adam comparison: none for a subset of other workloads.
    png_ok = plot(idx, sizes, threads, png) if not suffix else False
    md = render_md(meta, idx, sizes, threads, latency, skipped, "@PNG@" if png_ok else "(no plot)")
    base = write_results(args.out, suffix, md, {"meta": meta, "records": records},
                         png if png_ok else None)
    print(md)
    log(f"wrote {base}.md/.json/.png and latest.*")


if __name__ == "__main__":
    main()
