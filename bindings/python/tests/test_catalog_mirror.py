"""The binding's mirrors of the library's catalogs, against ``bindings/catalog.json`` (the
schedule and base-rule tables and the configuration fields, generated from the Rust catalogs by
``tests/catalog.rs``, which fails when the file is stale). A schedule, rule or field added to
the library without its Python counterpart, or a renumbered kind, fails here: the mirrors
cannot drift silently.

Checked: the kind numbers (``SCHEDULE_KINDS``, ``SGD`` ...), the configuration's choice tables
(``NONFINITE``, ``SIMD_TIERS``), the ctypes structs (every catalog
field present with its C type), each scheduler class (its kind exists, and ``_fill`` writes
exactly the C fields of its kind), the choice values (``mode="exp_range"`` gives the
catalog's number), and the defaults: equal to the catalog's (the C ``_init`` defaults, from
PyTorch) except where the Python classes follow braintools, listed in ``BRAINTOOLS_DEFAULTS``;
the optax-style base-rule factories (``flatopt.adam(learning_rate, b1=...)``) take the
catalog's fields with its defaults.
"""

import ctypes
import inspect
import json
import math
import pathlib

import pytest

import flatopt
from flatopt import _lib, _schedules

CATALOG_PATH = pathlib.Path(__file__).resolve().parents[2] / "catalog.json"
CATALOG = json.loads(CATALOG_PATH.read_text())
SCHEDULES = {s["name"]: s for s in CATALOG["schedules"]}
BASES = {b["name"]: b for b in CATALOG["base_rules"]}
CONFIG = CATALOG["config"][0]

C_TYPES = {
    "f64": ctypes.c_double,
    "optional f64": ctypes.c_double,
    "u64": ctypes.c_uint64,
    "bool": ctypes.c_uint32,
    "choice": ctypes.c_uint32,
    # A catalog field whose C form says so (the thread count) sits in a uint32_t.
    "uint32_t": ctypes.c_uint32,
}

# Scheduler classes, by catalog kind name.
CLASSES = {
    cls._kind: cls
    for cls in vars(_schedules).values()
    if isinstance(cls, type) and issubclass(cls, _schedules.LRScheduler) and cls._kind
}

# The arguments a class needs besides its defaults.
REQUIRED = {"one_cycle": {"total_steps": 100}}

# Python parameter names that differ from the catalog field names (PyTorch's spelling).
PARAM = {("one_cycle", "anneal"): "anneal_strategy"}

# Defaults of the braintools-named classes that differ from the catalog's (C) defaults, by
# (kind, C field): the Python value. A default changed on either side fails the test until
# this table says so.
BRAINTOOLS_DEFAULTS = {
    ("step", "period"): 30,
    ("multi_step", "n_milestones"): 3,
    ("exponential_decay", "period"): 1000,
    ("exponential_decay", "decay_rate"): 0.96,
    ("cosine_annealing", "period"): 50,
    ("cosine_warm_restarts", "period"): 10,
    ("warmup_cosine", "warmup"): 1000,
    ("warmup_cosine", "period"): 10000,
    ("one_cycle", "base_lr"): 1e-2,
    ("piecewise_constant", "n_milestones"): 2,
    ("piecewise_constant", "n_values"): 3,
}


class Recorder:
    """Stands in for a ``flatopt_schedule`` and records what ``_fill`` writes."""

    def __init__(self):
        object.__setattr__(self, "writes", {})

    def __setattr__(self, name, value):
        self.writes[name] = value


def filled(kind, **kwargs):
    """The C fields (and values) a default scheduler of ``kind`` writes, ``base_lr`` included."""
    obj = CLASSES[kind](**{**REQUIRED.get(kind, {}), **kwargs})
    rec = Recorder()
    rec.base_lr = obj.base_lr
    obj._fill(rec)
    return rec.writes


def c_fields(entry):
    """The C fields that carry a catalog entry (lists: pointer and count)."""
    out = set()
    for f in entry["fields"]:
        out.add(f["c"])
        if f["type"].startswith("list"):
            out.add("n_" + f["c"])
    return out


def test_schedule_kind_numbers():
    assert _lib.SCHEDULE_KINDS == {name: s["kind"] for name, s in SCHEDULES.items()}


def test_base_kind_numbers():
    assert {name: getattr(_lib, name.upper()) for name in BASES} == {
        name: b["kind"] for name, b in BASES.items()
    }


def test_every_schedule_has_a_class():
    # The constant rate is a float, not a class.
    assert set(CLASSES) == set(SCHEDULES) - {"fixed"}


def struct_rows(struct, entries):
    fields = dict(struct._fields_)
    return [
        (struct.__name__, e["name"], f, fields.get(f["c"]))
        for e in entries
        for f in e["fields"]
    ]


@pytest.mark.parametrize(
    "struct,entry,field,ctype",
    struct_rows(_lib.ScheduleStruct, SCHEDULES.values())
    + struct_rows(_lib.BaseParams, BASES.values())
    + struct_rows(_lib.ConfigStruct, [CONFIG]),
    ids=lambda x: x if isinstance(x, str) else None,
)
def test_struct_carries_field(struct, entry, field, ctype):
    if field["type"].startswith("list"):
        assert ctype is not None, f"{struct} has no {field['c']}"
        return
    want = C_TYPES[field.get("c_form")] if field.get("c_form") in C_TYPES else C_TYPES[field["type"]]
    assert ctype is want, f"{struct}.{field['c']} for {entry}.{field['name']}"


@pytest.mark.parametrize("kind", sorted(CLASSES))
def test_class_fills_exactly_its_fields(kind):
    # The base class writes base_lr for every kind (piecewise_constant accepts and ignores it,
    # as braintools does).
    assert set(filled(kind)) == c_fields(SCHEDULES[kind]) | {"base_lr"}


@pytest.mark.parametrize("kind", sorted(CLASSES))
def test_class_defaults(kind):
    writes = filled(kind)
    for f in SCHEDULES[kind]["fields"]:
        names = [f["c"]] + (["n_" + f["c"]] if f["type"].startswith("list") else [])
        for c in names:
            got = writes[c]
            if c.startswith("n_"):
                want = BRAINTOOLS_DEFAULTS.get((kind, c), 0)
            elif (kind, c) in BRAINTOOLS_DEFAULTS:
                want = BRAINTOOLS_DEFAULTS[(kind, c)]
            elif f["default"] is None:
                assert math.isnan(got), f"{kind}.{c} = {got!r}, expected none (NaN)"
                continue
            elif f["type"].startswith("list"):
                continue
            else:
                want = f["default"]
            assert got == want, f"{kind}.{c} = {got!r}, catalog default {want!r}"


def choice_rows():
    for kind, s in SCHEDULES.items():
        for f in s["fields"]:
            for i, option in enumerate(f.get("choices", [])):
                yield kind, f["name"], f["c"], option, i


@pytest.mark.parametrize("kind,field,c,option,value", list(choice_rows()))
def test_choice_values(kind, field, c, option, value):
    param = PARAM.get((kind, field), field)
    assert filled(kind, **{param: option})[c] == value


# optax's spellings where they differ from the catalog's default: sgd(momentum=None) is no
# momentum, the catalog's 0.
OPTAX_DEFAULTS = {
    ("sgd", "momentum"): None,
    ("adagrad", "initial_accumulator_value"): 0.1,
    ("adagrad", "eps"): 1e-7,
    ("adagrad", "eps_inside_sqrt"): True,
    ("rmsprop", "alpha"): 0.9,
    ("rmsprop", "eps_inside_sqrt"): True,
    ("rmsprop", "momentum"): None,
    ("adamax", "eps_outside_max"): True,
    ("nadam", "constant_momentum"): True,
    ("lion", "weight_decay"): 1e-3,
    ("adafactor", "eps_root"): 1e-30,
    ("adafactor", "eps"): 0.0,
    ("adafactor", "clipping_threshold"): 1.0,
    ("adafactor", "momentum"): None,
    ("adafactor", "weight_decay"): None,
    ("adafactor", "relative_step"): False,
    ("adafactor", "weight_decay_by_lr"): False,
}

# optax's argument names where they differ from the catalog's (catalog name -> argument), and
# the arguments that are the binding's (which arrays are factored, the momentum's dtype).
OPTAX_NAMES = {
    "adafactor": {"eps_root": "eps", "eps": "eps_floor", "weight_decay": "weight_decay_rate"},
}
BINDING_ARGS = {"adafactor": {"min_dim_size_to_factor", "dtype_momentum", "factored"}}


@pytest.mark.parametrize("name", sorted(BASES))
def test_base_rule_factory(name):
    """``flatopt.<rule>(learning_rate, ...)`` takes exactly the catalog's fields, with its
    defaults."""
    params = inspect.signature(getattr(flatopt, name)).parameters
    fields = BASES[name]["fields"]
    # Every factory ends with the compressed-state options its optimizer's state takes
    # (flatopt_config fields, not the rule's: test_state.py).
    state = ["state_dtype", "state_rounding", "state_seed"]
    assert list(params)[-3:] == state
    # The order is optax's (sgd: momentum, nesterov, dampening); the set is the catalog's.
    names = OPTAX_NAMES.get(name, {})
    arg = lambda f: names.get(f["name"], f["name"])  # noqa: E731
    own = BINDING_ARGS.get(name, set())
    assert sorted(p for p in list(params)[1:-3] if p not in own) == sorted(map(arg, fields))
    for f in fields:
        want = OPTAX_DEFAULTS.get((name, f["name"]), f["default"])
        assert params[arg(f)].default == want, f"{name}({arg(f)}=...)"


# The binding's tables of the configuration's choice fields, by catalog field name.
CONFIG_CHOICES = {"nonfinite": _lib.NONFINITE, "tier": _lib.SIMD_TIERS}


@pytest.mark.parametrize("field", sorted(CONFIG_CHOICES))
def test_config_choice_values(field):
    (f,) = [f for f in CONFIG["fields"] if f["name"] == field]
    assert CONFIG_CHOICES[field] == {option: i for i, option in enumerate(f["choices"])}
