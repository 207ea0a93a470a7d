"""The optional C++ extension of flatopt.torch: the per-step gradient hand-over in one call.

``_torch_handover.cpp`` (shipped in the package) reads each parameter's C++ gradient without
making its Python object (docs/torch.md, "The per-step hand-over"). It is compiled against the
installed torch's headers, so it cannot ship prebuilt: it is built on this machine, once, and
cached outside the package under ``${XDG_CACHE_HOME:-~/.cache}/flatopt/torch-ext/<key>/``,
the key naming the torch version, the Python version and a hash of the source and the compile
command (a new torch or a changed source gets a build of its own).

When: at the first flatopt.torch optimizer a process makes (not in a step), if the cache has
no build yet and a C++ compiler is found (``$CXX``, else ``c++``, ``g++`` or ``clang++`` on
the PATH). It takes about 12 s, once per torch version, and says so on stderr. The environment
variable ``FLATOPT_TORCH_EXT`` decides:

* ``1`` (the default): use the cached build; build it if there is none;
* ``0``: never; the pure-Python hand-over (same results, slower);
* ``build``: build again now even if a build is cached or failed before.

``python -m flatopt.torch --build-ext`` (or :func:`flatopt.torch.build_extension`) builds it
ahead of time and reports where it went, or why it failed. Nothing here can fail a user's
step: no compiler means the Python hand-over, silently; a failed build or load is one warning
(the compiler's output kept in ``failed.log`` beside where the build would have gone, and not
retried until ``FLATOPT_TORCH_EXT=build`` or ``--build-ext``), then the Python hand-over.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
import warnings

import torch

from . import _lib

ENV = "FLATOPT_TORCH_EXT"
SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_torch_handover.cpp")
MODULE = "_torch_handover"  # the PyInit_ name in the source


class BuildError(RuntimeError):
    """The extension could not be built or loaded (the message says why)."""


def cache_root():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "flatopt", "torch-ext")


def compiler():
    """The C++ compiler command (a list), or None: ``$CXX``, else the first on the PATH."""
    cxx = os.environ.get("CXX")
    if cxx:
        cmd = shlex.split(cxx)
        return cmd if cmd and shutil.which(cmd[0]) else None
    for name in ("c++", "g++", "clang++"):
        path = shutil.which(name)
        if path:
            return [path]
    return None


def _std_flag():
    # PyTorch's headers need C++20 from 2.12 on (what torch.utils.cpp_extension passes),
    # C++17 before.
    major, minor = (int(x) for x in torch.__version__.split("+")[0].split(".")[:2])
    return "-std=c++20" if (major, minor) >= (2, 12) else "-std=c++17"


def _openmp():
    """Whether to build with OpenMP: where PyTorch's intra-op threads are an OpenMP team
    (``at::parallel_for`` compiled into the module then runs on that team: the split step's
    ranges run on PyTorch's threads) and the runtime is GNU's (Linux: the module's
    ``libgomp.so.1`` is then the one torch loaded, which :func:`parallel` checks)."""
    return sys.platform.startswith("linux") and "OpenMP" in torch.__config__.parallel_info()


def _command(cxx, output, source=SOURCE, openmp=None):
    """The one compile-and-link command (no ninja, no setuptools): torch's headers as system
    headers (their warnings are theirs), the libraries the module's symbols come from, found
    again at run time through the rpath."""
    root = os.path.dirname(torch.__file__)
    lib = os.path.join(root, "lib")
    # torch.utils.cpp_extension.include_paths() without the C++ frontend's directory (not
    # used), and without importing it: it imports setuptools, a second at every start.
    includes = [os.path.join(root, "include"), sysconfig.get_paths()["include"]]
    # (macOS: Python's symbols are found in the interpreter when the module loads)
    darwin = ["-undefined", "dynamic_lookup"] if sys.platform == "darwin" else []
    omp = ["-fopenmp"] if (_openmp() if openmp is None else openmp) else []
    return [
        *cxx, "-O2", "-shared", "-fPIC", _std_flag(), "-Wall", "-Wextra", *omp,
        f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}",
        *(arg for d in includes for arg in ("-isystem", d)),
        source, "-o", output, *darwin,
        f"-L{lib}", f"-Wl,-rpath,{lib}", "-lc10", "-ltorch", "-ltorch_cpu", "-ltorch_python",
    ]


def build_dir(cxx):
    """Where the build for this torch, this Python, this source and this compiler goes."""
    digest = hashlib.sha256()
    with open(SOURCE, "rb") as f:
        digest.update(f.read())
    # The command but for where the source is (each installation of the package shares the
    # build) and the output: the flags, the include paths, the compiler.
    digest.update("\0".join(_command(cxx, "OUT", "SOURCE")).encode())
    key = (f"torch-{torch.__version__}-py{sys.version_info[0]}{sys.version_info[1]}-"
           f"{platform.machine()}-{digest.hexdigest()[:16]}")
    return os.path.join(cache_root(), key)


def _import(path):
    import importlib.machinery
    import importlib.util

    name = f"flatopt.{MODULE}"
    loader = importlib.machinery.ExtensionFileLoader(name, path)
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ImportError as e:
        raise BuildError(f"{path} does not load: {e}") from None
    _self_check(module, path)
    _bind(module)
    return module


# A split step over fewer elements runs on the calling thread (the library's own pool starts
# its threads from the same count: PARALLEL_MIN_ELEMENTS in src/engine/mod.rs).
SPLIT_MIN_ELEMENTS = 1 << 19
# Cuts fall on multiples of 256 elements within a buffer: 8-bit state's blocks (Q8_BLOCK).
SPLIT_ALIGN = 256


def _bind(module, min_elements=SPLIT_MIN_ELEMENTS):
    """Hands the library's split-step functions to the module (their addresses) with the
    number of elements from which a step is split, where the library has them and the module
    runs them on PyTorch's own OpenMP team; else the module is used for the hand-over alone."""
    fns = (_lib.optimizer_begin_step_mixed, _lib.optimizer_step_range, _lib.optimizer_end_step)
    module.flatopt_split = False
    if any(f is None for f in fns) or not module.parallel():
        return
    addresses = [ctypes.cast(getattr(f, "raw", f), ctypes.c_void_p).value for f in fns]
    module.bind(*addresses, min_elements, SPLIT_ALIGN)
    module.flatopt_split = True


def split():
    """Whether flatopt.torch's steps can run on PyTorch's intra-op threads (the extension is
    loaded, built with OpenMP, on torch's OpenMP runtime, and the library has the split
    step)."""
    module = load()
    return module is not None and getattr(module, "flatopt_split", False)


def _self_check(module, path):
    """One hand-over against the Python reads, so that a module built against other headers
    (a torch upgraded in place under the same version) is caught here, not in a step."""
    p = torch.zeros(3, requires_grad=True)
    out = (ctypes.c_void_p * 1)()
    h = module.HandOver([p], [p.data_ptr()], ctypes.addressof(out), out)
    missing = h()
    p.grad = torch.ones(3)
    if missing or not h() or out[0] != p.grad.data_ptr():
        raise BuildError(f"{path} loads but reads the gradients wrongly: rebuild it "
                         "(FLATOPT_TORCH_EXT=build)")


def build(force=False):
    """The built extension module's path, built now if needed (``force``: even if built or
    failed before); raises :class:`BuildError` with the compiler's output when it fails."""
    global last_build_seconds
    try:
        import fcntl
    except ImportError:
        raise BuildError("builds need POSIX file locks (fcntl)") from None
    cxx = compiler()
    if cxx is None:
        raise BuildError("no C++ compiler found ($CXX, c++, g++ or clang++ on the PATH)")
    where = build_dir(cxx)
    target = os.path.join(where, MODULE + sysconfig.get_config_var("EXT_SUFFIX"))
    failed = os.path.join(where, "failed.log")
    os.makedirs(where, exist_ok=True)
    # One builder at a time (processes starting together, distributed ranks): the others wait
    # for its result and use it.
    with open(os.path.join(where, "lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not force:
            if os.path.exists(target):
                return target
            if os.path.exists(failed):
                raise BuildError(f"an earlier build failed (see {failed}; FLATOPT_TORCH_EXT="
                                 "build or python -m flatopt.torch --build-ext tries again)")
        print(f"flatopt.torch: compiling the C++ gradient hand-over for torch "
              f"{torch.__version__} (once, about 12 s; {ENV}=0 turns it off) into {where}",
              file=sys.stderr, flush=True)
        for name in os.listdir(where):  # what a killed build left (no other builds now)
            if name.startswith(".build-"):
                os.unlink(os.path.join(where, name))
        # Into a temporary file renamed into place: a reader sees the whole module or none.
        fd, tmp = tempfile.mkstemp(dir=where, prefix=".build-", suffix=".so")
        os.close(fd)
        cmd = _command(cxx, tmp)
        t0 = time.perf_counter()
        try:
            run = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, text=True)
            if run.returncode != 0 and _openmp():
                # A compiler without OpenMP: the hand-over alone (steps on the calling thread)
                cmd = _command(cxx, tmp, openmp=False)
                run = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, text=True)
            if run.returncode != 0:
                with open(failed, "w") as f:
                    f.write(shlex.join(cmd) + "\n\n" + run.stdout)
                raise BuildError(f"the compiler failed (exit {run.returncode}); its output is "
                                 f"in {failed}")
            os.chmod(tmp, 0o755)  # (mkstemp made it private; a shared library is not)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        if os.path.exists(failed):
            os.unlink(failed)
        last_build_seconds = time.perf_counter() - t0
        return target


last_build_seconds = None  # how long this process's last build took
_loaded = {}  # "module": the module, or None for the Python hand-over, once decided


def load():
    """The extension module, or None for the Python hand-over; decided once per process (see
    the module's docstring), never raising."""
    if "module" in _loaded:
        return _loaded["module"]
    module = None
    value = os.environ.get(ENV, "1").strip().lower()
    if value not in ("0", "1", "build"):
        warnings.warn(f"{ENV}={value!r} is not 0, 1 or build: taken as 1", stacklevel=4)
        value = "1"
    # No compiler: silently the Python hand-over (unless a build was asked for).
    if value != "0" and (compiler() is not None or value == "build"):
        try:
            module = _import(build(force=value == "build"))
        except BuildError as e:
            if "an earlier build failed" not in str(e):  # (warned when it failed)
                warnings.warn(f"flatopt.torch: the C++ gradient hand-over is not used, the "
                              f"Python one is: {e}", stacklevel=4)
        except Exception as e:  # an unwritable cache, ...: never a failed optimizer or step
            warnings.warn(f"flatopt.torch: the C++ gradient hand-over is not used, the Python "
                          f"one is: {type(e).__name__}: {e}", stacklevel=4)
    _loaded["module"] = module
    return module


def build_and_load(force=True):
    """Builds (``force``: again), loads, and makes it this process's hand-over for the
    optimizers made from now on; the module's path. Raises :class:`BuildError`."""
    path = build(force=force)
    _loaded["module"] = _import(path)
    return path


def main(argv):
    """``python -m flatopt.torch --build-ext``: build (again) and load, report, exit status."""
    if argv != ["--build-ext"]:
        print("usage: python -m flatopt.torch --build-ext", file=sys.stderr)
        return 2
    try:
        path = build_and_load()
    except BuildError as e:
        print(f"flatopt.torch: the C++ gradient hand-over was not built: {e}", file=sys.stderr)
        return 1
    print(f"flatopt.torch: built {path} in {last_build_seconds:.1f} s")
    return 0
