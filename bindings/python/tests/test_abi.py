"""The Python binding follows include/flatopt.h: every status code, enum value and frozen struct
size the header defines has its Python constant with the same value, and every ctypes struct
has the header's fields, in order, at the offsets a C compiler gives them (a generated C
program prints sizeof / offsetof). A field or value added to the header cannot go missing in
the Python binding silently. One test per enum, constant and struct.
"""

import ctypes
import os
import re
import shutil
import subprocess

import pytest

from flatopt import _lib

from conftest import REPO

HEADER = (REPO / "include" / "flatopt.h").read_text()


def c_enums():
    """{enum name: {enumerator: value}} of every `typedef enum` of the header."""
    out = {}
    for name, body in re.findall(r"typedef enum (\w+) \{(.*?)\}", HEADER, re.S):
        out[name] = {k: int(v) for k, v in re.findall(r"^\s*(FLATOPT_\w+) = (-?\d+),", body, re.M)}
    return out


def c_structs():
    """{struct name: [field names]} of every `typedef struct ... {` of the header."""
    out = {}
    for name, body in re.findall(r"typedef struct (\w+) \{(.*?)\} \w+;", HEADER, re.S):
        lines = [l.strip() for l in body.splitlines()]
        fields = [l for l in lines if l.endswith(";") and not l.startswith(("*", "/"))]
        out[name] = [re.findall(r"(\w+);$", f)[0] for f in fields]
    return out


# How each C enum appears in Python: enumerator -> the Python value.
def _status(k):
    return getattr(_lib, k[len("FLATOPT_"):])


PY_ENUM = {
    "flatopt_status": _status,
    "flatopt_base_kind": _status,
    "flatopt_schedule_kind": lambda k: _lib.SCHEDULE_KINDS[k[len("FLATOPT_SCHEDULE_"):].lower()],
    "flatopt_nonfinite": lambda k: _lib.NONFINITE[k[len("FLATOPT_NONFINITE_"):].lower()],
    "flatopt_simd_tier": lambda k: _lib.SIMD_TIERS[k[len("FLATOPT_SIMD_"):].lower()],
    "flatopt_dtype": lambda k: _lib.DTYPES[k[len("FLATOPT_DTYPE_"):].lower()],
    "flatopt_state_dtype": lambda k: _lib.STATE_DTYPES[k[len("FLATOPT_STATE_"):].lower()],
    "flatopt_state_rounding": lambda k: _lib.STATE_ROUNDING[k[len("FLATOPT_ROUNDING_"):].lower()],
}
# The Python dicts that mirror a whole enum (no extra keys allowed).
PY_DICT = {
    "flatopt_schedule_kind": _lib.SCHEDULE_KINDS,
    "flatopt_nonfinite": _lib.NONFINITE,
    "flatopt_simd_tier": _lib.SIMD_TIERS,
    "flatopt_dtype": _lib.DTYPES,
    "flatopt_state_dtype": _lib.STATE_DTYPES,
    "flatopt_state_rounding": _lib.STATE_ROUNDING,
}
# ctypes mirrors of the header's structs; the others are not used by the binding.
PY_STRUCT = {
    "flatopt_base_params": _lib.BaseParams,
    "flatopt_schedule": _lib.ScheduleStruct,
    "flatopt_config": _lib.ConfigStruct,
    "flatopt_group_options": _lib.GroupOptions,
    "flatopt_param_options": _lib.ParamOptions,
    "flatopt_loss_scaler_options": _lib.LossScalerOptions,
}
NOT_BOUND = {"flatopt_step_args"}


def test_every_enum_is_mapped():
    assert set(c_enums()) == set(PY_ENUM), "a new C enum: map it in bindings/python"


@pytest.mark.parametrize("enum", sorted(PY_ENUM))
def test_enum_values(enum):
    values = c_enums()[enum]
    assert values, enum
    for k, v in values.items():
        try:
            got = PY_ENUM[enum](k)
        except (AttributeError, KeyError):
            pytest.fail(f"{k} = {v} of {enum} has no Python constant in flatopt/_lib.py")
        assert got == v, f"{k}: header {v}, Python {got}"
    if enum in PY_DICT:
        assert len(PY_DICT[enum]) == len(values), f"{enum}: Python has values the header lacks"


@pytest.mark.parametrize(
    "name,value", sorted(re.findall(r"#define FLATOPT_(\w+_SIZE_V\d+) (\d+)", HEADER))
)
def test_frozen_sizes(name, value):
    assert getattr(_lib, name, None) == int(value), f"FLATOPT_{name} = {value}"


def test_every_struct_is_mapped():
    assert set(c_structs()) == set(PY_STRUCT) | NOT_BOUND, "a new C struct: bind it or list it"


def _compiler_layout():
    """{struct: (sizeof, {field: offsetof})} from a C program compiled against the header."""
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler (CC, cc or gcc) to read the C layout with")
    lines = ["#include <stdio.h>", "#include <stddef.h>", '#include "flatopt.h"', "int main(void) {"]
    for struct, fields in c_structs().items():
        lines.append(f'printf("{struct} sizeof %zu\\n", sizeof({struct}));')
        for f in fields:
            lines.append(f'printf("{struct} {f} %zu\\n", offsetof({struct}, {f}));')
    lines += ["return 0;", "}"]
    work = REPO / "target" / "pytest-abi"
    work.mkdir(parents=True, exist_ok=True)
    src, exe = work / "layout.c", work / "layout"
    src.write_text("\n".join(lines) + "\n")
    subprocess.run([cc, "-std=c99", "-I", str(REPO / "include"), str(src), "-o", str(exe)], check=True)
    out = {}
    for line in subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout.splitlines():
        struct, field, n = line.split()
        size, offsets = out.setdefault(struct, [None, {}])
        if field == "sizeof":
            out[struct][0] = int(n)
        else:
            offsets[field] = int(n)
    return out


@pytest.fixture(scope="module")
def layout():
    return _compiler_layout()


@pytest.mark.parametrize("struct", sorted(PY_STRUCT))
def test_struct_layout(struct, layout):
    py = PY_STRUCT[struct]
    size, offsets = layout[struct]
    names = [f[0] for f in py._fields_]
    assert names == c_structs()[struct], f"{struct}: Python fields differ from the header's"
    for f in names:
        assert getattr(py, f).offset == offsets[f], f"{struct}.{f}"
    assert ctypes.sizeof(py) == size, f"sizeof({struct})"
