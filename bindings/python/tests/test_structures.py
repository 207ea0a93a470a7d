"""Structures and buffer kinds: dict and list registration, gradients registered once
(``update()`` without arguments) vs passed per call, reused vs fresh gradient arrays, objects
exposing ``__array_interface__`` or the buffer protocol, and the update rules of the
braintools-style classes against a small NumPy reference of docs/numerics.md."""

import array
import gc
import threading

import numpy as np
import pytest

import flatopt

from conftest import grad_stream

SHAPES = {"w1": (8, 4), "b1": (4,), "w2": (4, 3), "b2": (3,)}


def _init():
    rng = np.random.default_rng(1)
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()}


def _make():
    return flatopt.Lookahead(flatopt.adam(1e-2), sync_period=3, alpha=0.5, grad_clip_norm=3.0)


def _bits(a):
    return np.ascontiguousarray(a).view(np.uint32)


def _same(a, b):
    for k in a:
        assert np.array_equal(_bits(a[k]), _bits(b[k])), k


STEPS = 25


def _run_dict_per_call():
    p = _init()
    opt = _make()
    opt.register_trainable_weights(p)
    g = grad_stream(list(SHAPES.values()), 0)
    for t in range(STEPS):
        assert opt.update(dict(zip(SHAPES, g(t))))
    return p, opt


def test_dict_and_list_give_the_same_trajectory():
    p_dict, opt_d = _run_dict_per_call()
    p = _init()
    opt = _make()
    plist = list(p.values())
    opt.register_trainable_weights(plist)
    g = grad_stream(list(SHAPES.values()), 0)
    for t in range(STEPS):
        opt.update(g(t))
    _same(p_dict, p)
    assert opt.param_names == [0, 1, 2, 3]
    assert isinstance(opt.slow_weights, list)
    assert isinstance(opt_d.slow_weights, dict) and list(opt_d.slow_weights) == list(SHAPES)


def test_registered_grads_equal_per_call_grads():
    p_ref, _ = _run_dict_per_call()
    p = _init()
    grads = {k: np.zeros(s, np.float32) for k, s in SHAPES.items()}
    opt = _make()
    opt.register_trainable_weights(p, grads=grads)
    g = grad_stream(list(SHAPES.values()), 0)
    for t in range(STEPS):
        for k, v in zip(SHAPES, g(t)):
            np.copyto(grads[k], v)  # write into the registered arrays
        assert opt.update() is True
    _same(p_ref, p)


def test_registered_grads_can_be_overridden_per_call():
    p_ref, _ = _run_dict_per_call()
    p = _init()
    opt = _make()
    opt.register_trainable_weights(p, grads={k: np.full(s, np.nan, np.float32) for k, s in SHAPES.items()})
    g = grad_stream(list(SHAPES.values()), 0)
    for t in range(STEPS):
        opt.update(dict(zip(SHAPES, g(t))))
    _same(p_ref, p)


def test_reused_grad_arrays_are_read_every_call():
    # The same gradient objects every call (the pointer cache), new values written in place.
    p_ref, _ = _run_dict_per_call()
    p = _init()
    opt = _make()
    opt.register_trainable_weights(p)
    grads = {k: np.zeros(s, np.float32) for k, s in SHAPES.items()}
    g = grad_stream(list(SHAPES.values()), 0)
    for t in range(STEPS):
        for k, v in zip(SHAPES, g(t)):
            grads[k][...] = v
        if t == 10:  # swap one array for another object in the middle
            grads["w2"] = grads["w2"].copy()
        opt.update(grads)
    _same(p_ref, p)


def test_cache_does_not_hide_a_reshaped_or_retyped_array():
    p = _init()
    opt = _make()
    opt.register_trainable_weights(p)
    grads = {k: np.zeros(s, np.float32) for k, s in SHAPES.items()}
    opt.update(grads)
    grads["w1"].shape = (4, 8)
    with pytest.raises(flatopt.StructureError, match="shape"):
        opt.update(grads)
    grads["w1"].shape = (8, 4)
    grads["b1"].dtype = np.int32
    with pytest.raises(flatopt.DTypeError):
        opt.update(grads)


class Interface:
    """An object exposing memory through __array_interface__ only."""

    def __init__(self, arr):
        self._arr = arr
        self.__array_interface__ = arr.__array_interface__


def test_array_interface_and_buffer_protocol_params():
    base = np.zeros(6, np.float32)
    via_interface = Interface(base)
    stdlib = array.array("f", [1.0, 2.0, 3.0])
    mv_src = np.ones((2, 2), np.float32)
    opt = flatopt.SGD(lr=0.5)
    opt.register_trainable_weights([via_interface, stdlib, memoryview(mv_src)])
    opt.update([np.ones(6, np.float32), np.ones(3, np.float32), np.ones((2, 2), np.float32)])
    assert np.array_equal(base, np.full(6, -0.5, np.float32))  # updated in place
    assert list(stdlib) == [0.5, 1.5, 2.5]
    assert np.array_equal(mv_src, np.full((2, 2), 0.5, np.float32))


class ArrayOnly:
    """Like a JAX array: __array__ only (np.asarray may copy)."""

    def __init__(self, arr):
        self._arr = arr

    def __array__(self, dtype=None, copy=None):
        return self._arr.copy()


def test_array_only_objects_are_gradients_not_params():
    p = np.zeros(3, np.float32)
    opt = flatopt.SGD(lr=1.0)
    with pytest.raises(flatopt.DTypeError, match="is not an array"):
        opt.register_trainable_weights([ArrayOnly(p)])
    opt.register_trainable_weights([p])
    opt.update([ArrayOnly(np.ones(3, np.float32))])
    assert np.array_equal(p, -np.ones(3, np.float32))
    with pytest.raises(flatopt.DTypeError, match="float64"):
        opt.update([ArrayOnly(np.ones(3))])


def test_registered_arrays_are_kept_alive():
    opt = flatopt.SGD(lr=1.0)
    opt.register_trainable_weights({"w": np.zeros(1000, np.float32)},
                                   grads={"w": np.ones(1000, np.float32)})
    gc.collect()
    for _ in range(3):
        opt.update()
    assert opt.step_count == 3


def test_scalar_and_empty_params():
    s = np.array(2.0, np.float32)
    e = np.zeros((0, 3), np.float32)
    w = np.ones(4, np.float32)
    opt = flatopt.SGD(lr=0.5)
    opt.register_trainable_weights({"s": s, "e": e, "w": w})
    opt.update({"s": np.array(1.0, np.float32), "e": np.zeros((0, 3), np.float32),
                "w": np.ones(4, np.float32)})
    assert s == 1.5 and np.all(w == 0.5)


def test_slow_weights_are_copies():
    p = {"w": np.zeros(3, np.float32)}
    opt = flatopt.Lookahead(flatopt.sgd(1.0), sync_period=2, alpha=0.5)
    opt.register_trainable_weights(p)
    opt.update({"w": np.ones(3, np.float32)})
    s = opt.slow_weights
    s["w"][:] = 99
    assert np.all(opt.slow_weights["w"] == 0)
    opt.update({"w": np.ones(3, np.float32)})  # sync: s = 0 + 0.5 * (-2 - 0)
    assert np.all(opt.slow_weights["w"] == -1) and np.all(p["w"] == -1)


def test_reregistration_starts_fresh():
    a = np.zeros(2, np.float32)
    opt = flatopt.Adam(lr=0.1)
    opt.register_trainable_weights([a])
    opt.update([np.ones(2, np.float32)])
    b = np.zeros(3, np.float32)
    opt.register_trainable_weights({"b": b})
    assert opt.step_count == 0 and opt.param_names == ["b"]
    opt.update({"b": np.ones(3, np.float32)})
    assert np.allclose(b, -0.1)


def test_concurrent_updates_are_serialised():
    p = {"w": np.zeros(1000, np.float32)}
    opt = flatopt.SGD(lr=1.0)
    opt.register_trainable_weights(p, grads={"w": np.ones(1000, np.float32)})

    def work():
        for _ in range(200):
            opt.update()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert opt.step_count == 800
    assert np.all(p["w"] == -800)


def test_lock_free_updates_meet_queries_checkpoints_and_reregistration():
    """update() with registered gradients takes no Python lock; every other call waits for it
    (the library refuses concurrent use of a handle, the binding retries), and registering
    again while other threads update keeps the old handle and arrays alive until they return.
    Nothing may raise, crash or lose a step."""
    n = 5000
    opt = flatopt.Lookahead(flatopt.adam(1e-3), sync_period=3, alpha=0.5)
    errors = []
    stop = threading.Event()
    counts = {"updates": 0, "registrations": 0, "queries": 0}

    def register():
        p = np.linspace(-1, 1, n, dtype=np.float32)
        g = np.full(n, 0.01, np.float32)
        opt.register_trainable_weights([p], grads=[g])  # the arrays live only in the optimizer

    register()

    def guard(fn):
        def run():
            try:
                while not stop.is_set():
                    fn()
            except BaseException as e:  # noqa: BLE001
                errors.append(e)
                stop.set()
        return run

    def updater():
        assert opt.update() is True
        counts["updates"] += 1

    def reregister():
        register()
        counts["registrations"] += 1

    def querier():
        assert opt.step_count >= 0 and opt.current_lr > 0
        blob = opt.state_dict()
        assert blob["step_count"] >= 0
        counts["queries"] += 1

    threads = [threading.Thread(target=guard(f)) for f in (updater, updater, reregister, querier)]
    for t in threads:
        t.start()
    import time
    time.sleep(1.5)
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors
    assert counts["updates"] > 100 and counts["registrations"] > 10 and counts["queries"] > 10
    # After the storm the optimizer works as usual.
    before = opt.step_count
    assert opt.update() is True and opt.step_count == before + 1


# ---------------------------------------------------------------------------------------------
# The braintools-style classes against a NumPy reference of docs/numerics.md (f32 elementwise,
# f64 per-step scalars rounded once).


def _ref_run(kind, hp, lr, wd, steps, g, x0):
    f = np.float32
    x = x0.copy()
    m = np.zeros_like(x)
    v = np.zeros_like(x)
    vmax = np.zeros_like(x)
    b = np.zeros_like(x)
    for t in range(1, steps + 1):
        gr = g(t - 1)[0]
        if wd:
            gr = gr + f(wd) * x
        if kind == "sgd":
            mu, tau, nest = hp["momentum"], hp["dampening"], hp["nesterov"]
            if mu:
                b = gr.copy() if t == 1 else f(mu) * b + f(1 - tau) * gr
                d = gr + f(mu) * b if nest else b
            else:
                d = gr
            x = x - f(lr) * d
            continue
        b1, b2, eps = hp["b1"], hp["b2"], hp["eps"]
        m = f(b1) * m + f(1 - b1) * gr
        v = f(b2) * v + f(1 - b2) * gr * gr
        bc1 = f(1 - b1**t)
        bc2 = f(1 - b2**t)
        if kind == "radam":
            rho_inf = 2 / (1 - b2) - 1
            rho = rho_inf - 2 * t * b2**t / (1 - b2**t)
            if rho >= 5:
                r = np.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
                x = x - f(lr * r) * (m / bc1) / (np.sqrt(v / bc2) + f(eps))
            else:
                x = x - f(lr) * (m / bc1)
            continue
        vv = v
        if hp.get("amsgrad"):
            vmax = np.maximum(vmax, v)
            vv = vmax
        upd = (m / bc1) / (np.sqrt(vv / bc2) + f(eps))
        if kind == "adamw":
            upd = upd + f(hp["weight_decay"]) * x
        x = x - f(lr) * upd
    return x


REF_CASES = [
    ("SGD momentum dampening", lambda: flatopt.SGD(lr=0.05, momentum=0.9, dampening=0.3),
     "sgd", dict(momentum=0.9, dampening=0.3, nesterov=False), 0.05, 0.0),
    ("SGD nesterov weight decay", lambda: flatopt.SGD(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.01),
     "sgd", dict(momentum=0.8, dampening=0.0, nesterov=True), 0.05, 0.01),
    ("Adam amsgrad", lambda: flatopt.Adam(lr=1e-2, betas=(0.8, 0.99), amsgrad=True),
     "adam", dict(b1=0.8, b2=0.99, eps=1e-8, amsgrad=True), 1e-2, 0.0),
    ("Adam coupled weight decay", lambda: flatopt.Adam(lr=1e-2, weight_decay=0.1),
     "adam", dict(b1=0.9, b2=0.999, eps=1e-8), 1e-2, 0.1),
    ("AdamW", lambda: flatopt.AdamW(lr=1e-2, weight_decay=0.05),
     "adamw", dict(b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.05), 1e-2, 0.0),
    ("RAdam", lambda: flatopt.RAdam(lr=1e-2, betas=(0.9, 0.9)),
     "radam", dict(b1=0.9, b2=0.9, eps=1e-8), 1e-2, 0.0),
]


@pytest.mark.parametrize("desc,make,kind,hp,lr,wd", REF_CASES, ids=[r[0] for r in REF_CASES])
def test_update_rules_against_numpy_reference(desc, make, kind, hp, lr, wd):
    x0 = np.random.default_rng(3).standard_normal(257).astype(np.float32)
    g = grad_stream([(257,)], 8)
    opt = make()
    x = x0.copy()
    opt.register_trainable_weights([x])
    steps = 20
    for t in range(steps):
        opt.update(g(t))
    ref = _ref_run(kind, hp, lr, wd, steps, g, x0)
    np.testing.assert_allclose(x, ref, rtol=2e-5, atol=2e-6)
