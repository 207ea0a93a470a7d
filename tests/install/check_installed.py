"""Checks an installed flatopt Python package (tests/install/wheel.sh and sdist.sh run it with
the virtualenv's python, from a directory outside the source tree):

1. flatopt is imported from VENV, with the library bundled next to it, and the source of
   flatopt.torch's optional C++ hand-over (compiled on first use, flatopt/_torch_ext.py);
2. Cargo.toml's version, the distribution's, ``flatopt.__version__`` and the library's agree;
3. the README's Python quick start prints what the README says it prints.

Usage: python check_installed.py REPO VENV
"""

import contextlib
import importlib.metadata
import io
import os
import re
import sys

import flatopt

root, venv = (os.path.realpath(p) for p in sys.argv[1:3])

mod, lib = os.path.realpath(flatopt.__file__), os.path.realpath(flatopt.library_path)
print(f"installed: {mod}\n  library {lib} (version {flatopt.library_version})")
assert mod.startswith(venv + os.sep), f"flatopt imported from {mod}, not from {venv}"
bundled = os.path.join(os.path.dirname(mod), "libflatopt.so")
assert lib == bundled, f"library {lib} is not the bundled {bundled}"
cpp = os.path.join(os.path.dirname(mod), "_torch_handover.cpp")
assert os.path.isfile(cpp), f"the package does not carry {cpp} (package-data)"

with open(os.path.join(root, "Cargo.toml"), encoding="utf-8") as f:
    cargo = re.search(r'^version = "(.*)"', f.read(), re.M).group(1)
found = {
    "Cargo.toml": cargo,
    "distribution": importlib.metadata.version("flatopt"),
    "flatopt.__version__": flatopt.__version__,
    "library": flatopt.library_version,
}
assert len(set(found.values())) == 1, f"versions disagree: {found}"

with open(os.path.join(root, "README.md"), encoding="utf-8") as f:
    readme = f.read()
section = readme.split("## Python quick start", 1)[1].split("\n## ", 1)[0]
code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
# The README shows the output as a comment on the print line.
expected = re.search(r"^print\(.*#\s*(.+)$", code, re.M).group(1).strip()
out = io.StringIO()
with contextlib.redirect_stdout(out):
    exec(compile(code, "README.md: Python quick start", "exec"), {})
got = out.getvalue().strip()
print(f"README quick start: {got}")
assert got == expected, f"the quick start printed {got!r}, the README says {expected!r}"
