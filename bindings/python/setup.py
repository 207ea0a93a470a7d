"""Build step of the flatopt Python package.

The package itself is pure Python (ctypes); what this adds is the shared library: building
the package runs ``cargo build --release --lib`` in the Rust crate (the repository root two
levels up; in an sdist made by ``make sdist``, the crate it carries in ``rust/``; or
``FLATOPT_SOURCE_DIR``) and copies ``libflatopt.so`` from cargo's target directory (the crate's
``target/`` unless ``CARGO_TARGET_DIR`` says otherwise) into the package. So
``pip install ./bindings/python`` (or ``pip install flatopt-<version>.tar.gz``) on a machine
with a Rust toolchain gives an ``import flatopt`` that works from any directory, with no build
artefact in the source tree. Binary wheels that need no toolchain: ``make wheel``
(``packaging/wheel.sh``), which builds the library first and passes it in with
``FLATOPT_PREBUILT_LIBRARY``.

Environment variables:

* ``FLATOPT_PREBUILT_LIBRARY=/path/to/libflatopt.so``: bundle that file, skip cargo.
* ``FLATOPT_SOURCE_DIR=/path/to/flatopt``: the Rust crate to build (default: ``rust/`` in an
  sdist, ``../..`` in the repository).
* ``FLATOPT_BUILD_BASE``: setuptools' scratch directory (default: ``python-build/`` in cargo's
  target directory).
* ``CARGO``: the cargo executable (default: ``cargo`` on the PATH).

The wheel is tagged ``py3-none-<platform>``: it holds a native library but no Python
extension module, so it does not depend on the Python version.
"""

import json
import os
import shutil
import subprocess
import sys

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py

try:
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # setuptools < 70.1 (pyproject.toml asks for >= 77)
    from wheel.bdist_wheel import bdist_wheel

HERE = os.path.dirname(os.path.abspath(__file__))


def library_filename():
    if sys.platform == "win32":
        return "flatopt.dll"
    if sys.platform == "darwin":
        return "libflatopt.dylib"
    return "libflatopt.so"


def fail(msg):
    sys.stderr.write(f"\nflatopt build: {msg}\n\n")
    raise SystemExit(1)


def source_dir_or_none():
    """The Rust crate to build: ``FLATOPT_SOURCE_DIR``, else the crate an sdist carries in
    ``rust/`` (``make sdist``), else the repository two levels up; None if none has a
    Cargo.toml."""
    env = os.environ.get("FLATOPT_SOURCE_DIR")
    candidates = [env] if env else [os.path.join(HERE, "rust"), os.path.join(HERE, "..", "..")]
    for root in candidates:
        if os.path.isfile(os.path.join(root, "Cargo.toml")):
            return os.path.normpath(root)
    return None


def source_dir():
    root = source_dir_or_none()
    if root is None:
        fail(
            "no Cargo.toml found: the Python package is built from the flatopt repository "
            "(pip install ./bindings/python) or from its sdist (which carries the crate in "
            "rust/). Set FLATOPT_SOURCE_DIR to the crate, or FLATOPT_PREBUILT_LIBRARY to a "
            "built libflatopt.so."
        )
    return root


def build_library():
    prebuilt = os.environ.get("FLATOPT_PREBUILT_LIBRARY")
    if prebuilt:
        if not os.path.isfile(prebuilt):
            fail(f"FLATOPT_PREBUILT_LIBRARY={prebuilt!r} is not a file")
        return prebuilt
    root = source_dir()
    cargo = os.environ.get("CARGO", "cargo")
    if shutil.which(cargo) is None:
        fail(
            f"{cargo!r} not found on the PATH: building the package needs the Rust toolchain "
            "(https://rustup.rs), or FLATOPT_PREBUILT_LIBRARY=/path/to/libflatopt.so"
        )
    sys.stderr.write(f"flatopt build: cargo build --release --lib in {root}\n")
    subprocess.run([cargo, "build", "--release", "--lib"], cwd=root, check=True)
    meta = subprocess.run(
        [cargo, "metadata", "--format-version", "1", "--no-deps"],
        cwd=root,
        check=True,
        stdout=subprocess.PIPE,
        universal_newlines=True,
    )
    target = json.loads(meta.stdout)["target_directory"]
    path = os.path.join(target, "release", library_filename())
    if not os.path.isfile(path):
        fail(f"cargo finished but {path} does not exist")
    return path


class BuildPyWithLibrary(build_py):
    """build_py, then the Rust library copied into the package."""

    def run(self):
        super().run()
        src = build_library()
        dest_dir = os.path.join(self.build_lib, "flatopt")
        os.makedirs(dest_dir, exist_ok=True)
        dest = os.path.join(dest_dir, library_filename())
        shutil.copyfile(src, dest)
        os.chmod(dest, 0o755)
        # The release profile keeps line tables (debug = 1) for profiling; the bundled copy
        # does not need them (6 MB -> about 1 MB).
        strip = shutil.which("strip")
        if strip and sys.platform.startswith("linux"):
            subprocess.run([strip, "--strip-debug", dest], check=False)
        sys.stderr.write(f"flatopt build: bundled {src} as {dest}\n")


class BinaryDistribution(Distribution):
    """The package carries a native library: a platform wheel whose files land in platlib (the
    wheel's root, as auditwheel requires), not under ``*.data/purelib``."""

    def has_ext_modules(self):
        return True


class PlatformWheel(bdist_wheel):
    """A py3-none-<platform> wheel: native library, no extension module."""

    def get_tag(self):
        _, _, plat = super().get_tag()
        return "py3", "none", plat


def scratch_options():
    """setuptools' own scratch dirs (build/, *.egg-info) go under cargo's target dir of the
    repository, not into the source tree (or into ``FLATOPT_BUILD_BASE`` if set: a fresh
    directory there guarantees that no file of an earlier build ends up in the wheel)."""
    base = os.environ.get("FLATOPT_BUILD_BASE")
    if base:
        os.makedirs(base, exist_ok=True)
        return {"build": {"build_base": base}, "egg_info": {"egg_base": base}}
    root = source_dir_or_none()
    if root is None:
        return {}
    base = os.path.join(os.environ.get("CARGO_TARGET_DIR") or os.path.join(root, "target"),
                        "python-build")
    os.makedirs(base, exist_ok=True)
    return {"build": {"build_base": base}, "egg_info": {"egg_base": base}}


setup(
    distclass=BinaryDistribution,
    cmdclass={"build_py": BuildPyWithLibrary, "bdist_wheel": PlatformWheel},
    options=scratch_options(),
)
