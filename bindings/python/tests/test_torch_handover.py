"""flatopt.torch's per-step gradient hand-over: the C++ extension (flatopt/_torch_handover.cpp)
against the Python reads it replaces, and how the extension is built, cached and turned off
(flatopt/_torch_ext.py). Skipped without torch; the tests of the extension itself skip, with
the reason, where it cannot be built."""

import ctypes
import os
import subprocess
import sys
import sysconfig
import textwrap

import pytest

from conftest import _torch_extension, needs

torch = needs("torch")

import flatopt  # noqa: E402
import flatopt.torch as ft  # noqa: E402
from flatopt import _torch_ext  # noqa: E402


def extension():
    module, reason = _torch_extension()
    if module is None:
        pytest.skip(f"flatopt.torch's C++ hand-over is not available: {reason}")
    return module


def small_model(dtype=torch.float32):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(),
                               torch.nn.Linear(4, 3)).to(dtype)


def backward(model, t=0):
    g = torch.Generator().manual_seed(t)
    x = torch.randn(6, 5, generator=g).to(next(model.parameters()).dtype)
    model(x).float().square().mean().backward()


def grad(p, g):
    """Sets gradient `g` (made as float32) on `p`, in `p`'s dtype as the setter wants."""
    p.grad = g.to(p.dtype)


# (what, change the gradients or parameters of `model` after a backward(), what both
# hand-overs say: True = hand over, False = the general path)
CASES = [
    ("every gradient new after backward()", lambda m: None, True),
    ("gradients assigned from Python",
     lambda m: [grad(p, torch.ones(p.shape)) for p in m.parameters()], True),
    ("one gradient None", lambda m: setattr(m[2].bias, "grad", None), False),
    ("every gradient None", lambda m: m.zero_grad(set_to_none=True), False),
    ("a sparse gradient", lambda m: grad(m[0].weight, torch.ones(4, 5).to_sparse()), False),
    ("a transposed gradient", lambda m: grad(m[0].weight, torch.ones(5, 4).t()), False),
    ("an expanded gradient (stride 0)",
     lambda m: setattr(m[2].bias, "grad", torch.ones(1, dtype=m[2].bias.dtype).expand(3)),
     False),
    ("a gradient of another dtype (grad_dtype=None)", lambda m: other_dtype(m[2].bias), False),
    ("a parameter moved (p.data = ...)",
     lambda m: setattr(m[0].bias, "data", m[0].bias.data.clone()), False),
    ("a parameter swapped (torch.utils.swap_tensors)",
     lambda m: torch.utils.swap_tensors(m[2].weight, torch.nn.Parameter(torch.zeros(3, 4))),
     False),
    ("a parameter written in place (no move)", lambda m: m[0].bias.data.add_(1.0), True),
]


def other_dtype(p):
    if not hasattr(p, "grad_dtype"):
        pytest.skip(f"torch {torch.__version__} refuses a gradient of another dtype")
    p.grad_dtype = None  # torch >= 2.9: any dtype goes
    p.grad = torch.ones(p.shape, dtype=torch.float64)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("what, change, expected", CASES, ids=[c[0] for c in CASES])
def test_the_extension_hands_over_what_the_python_reads_do(what, change, expected, dtype):
    extension()
    model = small_model(dtype)
    opt = ft.AdamW(model.parameters(), lr=1e-3)
    (c,) = opt._cohorts
    assert c.fast is not None
    backward(model)
    change(model)
    fast = c.fast()
    ptrs = list(c.ptrs)
    if "another dtype" in what:  # both leave it to the general path, which refuses it
        assert ft._hand_over(c) is fast is False
        with pytest.raises(flatopt.DTypeError, match=r"\['params'\]\[3\].*float64"):
            opt.step()
        return
    assert ft._hand_over(c) is fast is expected
    if expected:
        assert ptrs == list(c.ptrs) == [p.grad.data_ptr() for p in model.parameters()]


def test_under_a_torch_function_mode_the_extension_leaves_the_step_to_the_general_path():
    # (Python's `p.grad` goes through the mode there: the general path reads it so.)
    extension()
    model = small_model()
    opt = ft.SGD(model.parameters(), lr=0.1)
    backward(model)
    with torch.device("cpu"):  # a TorchFunctionMode
        assert opt._cohorts[0].fast() is False
    assert opt._cohorts[0].fast() is True


def test_a_parameter_of_a_tensor_subclass_takes_the_python_reads():
    class Marked(torch.nn.Parameter):
        pass

    extension()
    p = Marked(torch.zeros(3))
    opt = ft.SGD([p, torch.nn.Parameter(torch.zeros(2))], lr=0.5)
    assert opt._cohorts[0].fast is None
    p.grad = torch.ones(3)
    opt.param_groups[0]["params"][1].grad = torch.ones(2)
    opt.step()
    assert torch.equal(p.detach(), torch.full((3,), -0.5))


def adamw(m):
    return ft.AdamW(m.parameters(), lr=1e-2, weight_decay=0.1)


# (name, model dtype, the optimizer, a gradient pattern): trained with either hand-over
RUNS = [
    ("AdamW", torch.float32, adamw, "all"),
    ("AdamW, a layer without gradients at times", torch.float32, adamw, "gaps"),
    ("AdamW, bf16 model", torch.bfloat16, adamw, "all"),
    ("SGD momentum, max_grad_norm", torch.float32,
     lambda m: ft.SGD(m.parameters(), lr=0.05, momentum=0.9, max_grad_norm=0.5), "all"),
    ("Lookahead(Adam)", torch.float32,
     lambda m: ft.Lookahead(ft.Adam(m.parameters(), lr=1e-2), k=3), "all"),
    ("AdamW, parameters moved mid-run", torch.float32, adamw, "moved"),
    ("AdamW under flatopt's GradScaler", torch.float16, adamw, "scaled"),
]


def train(dtype, make, pattern, steps=8):
    model = small_model(dtype)
    opt = make(model)
    scaler = ft.GradScaler("cpu", init_scale=2.0**10) if pattern == "scaled" else None
    for t in range(steps):
        opt.zero_grad()
        if pattern == "gaps":
            model[0].requires_grad_(t % 3 != 1)
        if pattern == "moved" and t == 4:
            for p in model[2].parameters():
                p.data = p.data.clone()
        if scaler is None:
            backward(model, t)
            opt.step()
        else:
            g = torch.Generator().manual_seed(t)
            x = torch.randn(6, 5, generator=g).to(dtype)
            scaler.scale(model(x).float().square().mean()).backward()
            scaler.step(opt)
            scaler.update()
    return [p.detach().clone() for p in model.parameters()], opt.state_dict()["state"]


@pytest.mark.parametrize("name, dtype, make, pattern", RUNS, ids=[r[0] for r in RUNS])
def test_training_gives_the_same_bits_with_either_hand_over(name, dtype, make, pattern):
    module = extension()
    runs = []
    saved = _torch_ext._loaded
    try:
        for loaded in (None, module):
            _torch_ext._loaded = {"module": loaded}
            runs.append(train(dtype, make, pattern))
    finally:
        _torch_ext._loaded = saved
    (p0, s0), (p1, s1) = runs
    assert all(torch.equal(a, b) for a, b in zip(p0, p1))
    assert s0.keys() == s1.keys()
    for i in s0:
        for k, v in s0[i].items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(s1[i][k])), (name, i, k)


def test_the_handover_object_refuses_what_it_cannot_read():
    module = extension()
    out = (ctypes.c_void_p * 2)()
    p = torch.zeros(2, requires_grad=True)
    with pytest.raises(TypeError):
        module.HandOver((p,), [p.data_ptr()], ctypes.addressof(out), out)  # not a list
    with pytest.raises(TypeError, match="not a torch.Tensor"):
        module.HandOver([p, 3], [0, 0], ctypes.addressof(out), out)
    with pytest.raises(ValueError, match="one registered address per parameter"):
        module.HandOver([p], [0, 0], ctypes.addressof(out), out)
    with pytest.raises(ValueError, match="null"):
        module.HandOver([p], [p.data_ptr()], 0, out)
    h = module.HandOver([p], [p.data_ptr()], ctypes.addressof(out), out)
    with pytest.raises(TypeError):
        h(1)


# -- building, caching, turning off (each in a process of its own) -------------------------

def run(code, env, timeout=240):
    """Runs `code` in a fresh Python with the environment `env` added; (stdout, stderr)."""
    full = {k: v for k, v in os.environ.items() if k != _torch_ext.ENV}
    full.update(env)
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr
    return done.stdout, done.stderr


# Prints which hand-over the optimizer's cohort got.
WHICH = """
    import torch, flatopt.torch as ft
    opt = ft.SGD([torch.nn.Parameter(torch.zeros(3))], lr=0.1)
    print("extension" if opt._cohorts[0].fast is not None else "python")
"""


def test_flatopt_torch_ext_0_builds_nothing_and_takes_the_python_reads(tmp_path):
    out, err = run(WHICH, {"FLATOPT_TORCH_EXT": "0", "XDG_CACHE_HOME": str(tmp_path)})
    assert out.split() == ["python"] and err == ""
    assert not (tmp_path / "flatopt").exists()


def test_without_a_compiler_the_python_reads_silently(tmp_path):
    env = {"XDG_CACHE_HOME": str(tmp_path), "CXX": str(tmp_path / "no-such-compiler")}
    out, err = run(WHICH, env)
    assert out.split() == ["python"] and err == ""


def test_a_failed_build_warns_once_and_is_not_retried_until_asked(tmp_path):
    env = {"XDG_CACHE_HOME": str(tmp_path), "CXX": "false"}  # a compiler that always fails
    out, err = run(WHICH, env)
    assert out.split() == ["python"]
    assert "compiling the C++ gradient hand-over" in err
    assert "the compiler failed" in err and "failed.log" in err
    (log,) = (tmp_path / "flatopt" / "torch-ext").glob("*/failed.log")
    assert "_torch_handover.cpp" in log.read_text()
    out, err = run(WHICH, env)  # the next process: silent, no second attempt
    assert out.split() == ["python"] and err == ""
    out, err = run(WHICH, {**env, "FLATOPT_TORCH_EXT": "build"})  # asked: tried again
    assert out.split() == ["python"] and "the compiler failed" in err
    done = subprocess.run([sys.executable, "-m", "flatopt.torch", "--build-ext"],
                          env={**os.environ, **env}, capture_output=True, text=True)
    assert done.returncode == 1 and "was not built: the compiler failed" in done.stderr
    assert not list(log.parent.glob(".build-*"))  # no temporary file left


def test_processes_starting_together_build_once_and_share_the_build(tmp_path):
    if _torch_ext.compiler() is None:
        pytest.skip("no C++ compiler ($CXX, c++, g++ or clang++ on the PATH)")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    env.pop("FLATOPT_TORCH_EXT", None)
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(WHICH)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e for _, e in outs]
    if any("python" in o for o, _ in outs):
        pytest.skip(f"the extension does not build here: {outs[0][1]}")
    assert [o.split() for o, _ in outs] == [["extension"], ["extension"]]
    assert sum(e.count("compiling the C++ gradient hand-over") for _, e in outs) == 1
    (where,) = (tmp_path / "flatopt" / "torch-ext").iterdir()
    assert f"torch-{torch.__version__}-py{sys.version_info[0]}{sys.version_info[1]}" in where.name
    assert sorted(f.name for f in where.iterdir() if f.name != "lock") == [
        "_torch_handover" + sysconfig.get_config_var("EXT_SUFFIX")]
    out, err = run(WHICH, {"XDG_CACHE_HOME": str(tmp_path)})  # later: the cached build
    assert out.split() == ["extension"] and err == ""


def test_the_cache_key_follows_the_source_and_not_where_the_package_is(tmp_path, monkeypatch):
    cxx = ["c++"]
    here = _torch_ext.build_dir(cxx)
    copy = tmp_path / "_torch_handover.cpp"
    copy.write_bytes(open(_torch_ext.SOURCE, "rb").read())
    monkeypatch.setattr(_torch_ext, "SOURCE", str(copy))
    assert _torch_ext.build_dir(cxx) == here  # another installation: the same build
    copy.write_bytes(copy.read_bytes() + b"// changed\n")
    assert _torch_ext.build_dir(cxx) != here  # another source: a build of its own
    assert _torch_ext.build_dir(["clang++"]) != _torch_ext.build_dir(cxx)


# -- the step on PyTorch's intra-op threads (HandOver.step: the library's split step) ----------


def wide_model(dtype=torch.float32):
    """About 0.64 M parameters in 4 tensors whose sizes are no multiples of 256: above the
    split's threshold (the step runs in one range per PyTorch thread), cuts inside tensors."""
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Linear(701, 903), torch.nn.Tanh(),
                               torch.nn.Linear(903, 5)).to(dtype)


def wide_backward(model, t):
    g = torch.Generator().manual_seed(100 + t)
    x = torch.randn(4, 701, generator=g).to(next(model.parameters()).dtype)
    model(x).float().square().mean().backward()


# (name, model dtype, the optimizer given num_threads): on PyTorch's threads where the
# rule allows a split step
SPLIT_RUNS = [
    ("AdamW", torch.float32, lambda ps, n: ft.AdamW(ps, lr=1e-2, weight_decay=0.1,
                                                     num_threads=n)),
    ("AdamW, int8 state", torch.float32,
     lambda ps, n: ft.AdamW(ps, lr=1e-2, state_dtype="int8", num_threads=n)),
    ("Adam, bf16 state", torch.float32,
     lambda ps, n: ft.Adam(ps, lr=1e-2, state_dtype="bfloat16", num_threads=n)),
    ("Lookahead(AdamW), bf16 slow weights", torch.float32,
     lambda ps, n: ft.Lookahead(ft.AdamW(ps, lr=1e-2, num_threads=n), k=2,
                                slow_dtype="bfloat16")),
    ("SGD momentum, max_grad_norm", torch.float32,
     lambda ps, n: ft.SGD(ps, lr=0.05, momentum=0.9, max_grad_norm=0.5, num_threads=n)),
    ("Rprop", torch.float32, lambda ps, n: ft.Rprop(ps, lr=1e-3, num_threads=n)),
    ("AdamW, bf16 model", torch.bfloat16, lambda ps, n: ft.AdamW(ps, lr=1e-2, num_threads=n)),
]


def train_wide(dtype, make, num_threads, steps=5, gaps=False):
    model = wide_model(dtype)
    opt = make(model.parameters(), num_threads)
    for t in range(steps):
        opt.zero_grad()
        if gaps:
            model[2].requires_grad_(t != 2)
        wide_backward(model, t)
        opt.step()
    return model, opt


def same_training(a, b):
    (ma, oa), (mb, ob) = a, b
    assert all(torch.equal(x, y) for x, y in zip(ma.parameters(), mb.parameters()))
    sa, sb = oa.state_dict()["state"], ob.state_dict()["state"]
    assert sa.keys() == sb.keys()
    for i in sa:
        for k, v in sa[i].items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(sb[i][k])), (i, k)


def cohorts(opt):
    return getattr(opt, "_base", opt)._cohorts


@pytest.fixture
def torch_threads():
    """Two PyTorch intra-op threads (restored after): the split step's two ranges."""
    extension()
    if not _torch_ext.split():
        pytest.skip("the extension does not run steps on PyTorch's threads here (built "
                    "without OpenMP, or another OpenMP runtime than torch's)")
    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(saved)


@pytest.mark.parametrize("name, dtype, make", SPLIT_RUNS, ids=[r[0] for r in SPLIT_RUNS])
def test_steps_on_torch_threads_give_the_bits_of_the_whole_step(name, dtype, make,
                                                                torch_threads):
    split = train_wide(dtype, make, None)
    assert all(c.split is not None for c in cohorts(split[1])), name
    whole = train_wide(dtype, make, 1)
    assert all(c.split is None for c in cohorts(whole[1]))
    same_training(split, whole)


def test_steps_on_torch_threads_with_a_layer_without_gradients_at_times(torch_threads):
    make = SPLIT_RUNS[0][2]
    split = train_wide(torch.float32, make, None, steps=6, gaps=True)
    assert len(cohorts(split[1])) == 2 and all(c.split is not None for c in cohorts(split[1]))
    same_training(split, train_wide(torch.float32, make, 1, steps=6, gaps=True))


def test_split_cuts_fall_on_256_element_blocks_of_each_tensor(torch_threads):
    """Many PyTorch threads over small tensors, every range of an int8-state step on its
    blocks (the library refuses a range that cuts one): the cuts are taken within tensors."""
    module = extension()
    torch.set_num_threads(7)
    _torch_ext._bind(module, min_elements=0)  # split every step
    try:
        assert module.flatopt_split
        make = SPLIT_RUNS[1][2]
        same_training(train_wide(torch.float32, make, None), train_wide(torch.float32, make, 1))
    finally:
        _torch_ext._bind(module)


@pytest.mark.parametrize("cls", [ft.Lamb, ft.Lars, ft.Novograd, ft.Adafactor],
                         ids=lambda c: c.__name__)
def test_rules_that_need_whole_buffer_norms_step_on_the_library_threads(cls, torch_threads):
    model = wide_model()
    opt = cls(model.parameters(), lr=1e-3)
    wide_backward(model, 0)
    opt.step()
    assert all(c.split is None for c in opt._cohorts)


def test_an_explicit_num_threads_uses_the_library_pool(torch_threads):
    model, opt = train_wide(torch.float32, SPLIT_RUNS[0][2], 2, steps=1)
    assert all(c.split is None for c in opt._cohorts)
