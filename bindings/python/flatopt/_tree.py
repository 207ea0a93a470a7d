"""Parameter trees: the structures ``register_trainable_weights`` and ``update`` accept.

A tree is a dict (any ``collections.abc.Mapping``), a list or a tuple (named tuples included)
of trees or arrays, nested to any depth; ``None`` is an empty subtree (no parameter), as in
JAX; when ``jax`` is imported, any other JAX pytree node (a registered class, a dataclass
pytree, ...) too, through ``jax.tree_util``. Its leaves are the arrays (NumPy arrays, PyTorch
CPU tensors, objects with ``__array_interface__`` / the buffer protocol, brainstate states; for
gradients also JAX arrays and other ``__array__`` objects).

Order (docs/numerics.md, "Parameter trees"): depth first, and within a node in the node's own
order: a dict in its iteration (insertion) order, a list or tuple by index, a JAX node in the
order ``jax.tree_util`` gives its children. Dicts are *not* sorted by key as JAX flattens them:
a flat dict keeps the buffer order it always had, so older checkpoints still load. Gradients
are matched to the parameters by key and index at every level, never by position, so the
gradients' own dict order does not matter.

Names: a leaf directly under the root is named by its key (dict) or index (list, tuple), as
before nesting was supported; a deeper leaf by the tuple of keys from the root, e.g.
``("encoder", 0, "w")`` (a brainstate ``model.states()`` dict is flat: its names are its keys,
tuples already). Error messages write the path as Python would index it:
``grads['encoder'][0]['w']``.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

import numpy as np

from ._buffers import describe
from ._errors import DTypeError, StructureError

LEAF, MAP, SEQ, NONE, JAX, STATE, ALIAS = range(7)


class Node:
    """One node of a registered tree. ``kind``: LEAF (``index`` into the flat leaves), MAP
    (``keys``), SEQ (a list or tuple; ``rebuild`` is its type), NONE, JAX (``rebuild``: the
    treedef of one level of a JAX pytree node, ``keys`` its children's keys), STATE (a
    brainstate state, ``index`` into the states, its one child the structure of its value)
    or ALIAS (a state met before in the tree, ``index`` its number: registered once)."""

    __slots__ = ("kind", "keys", "children", "frags", "rebuild", "index", "flat")

    def __init__(self, kind, keys=(), children=(), frags=(), rebuild=None, index=-1):
        self.kind = kind
        self.keys = keys
        self.children = children
        self.frags = frags  # how each child's key reads in a path: "['w']", "[0]", ".name"
        self.rebuild = rebuild
        self.index = index
        self.flat = all(c.kind == LEAF for c in children)


def _state_type():
    """brainstate.State when brainstate is imported (it is never imported here)."""
    mod = sys.modules.get("brainstate")
    return getattr(mod, "State", None) if mod is not None else None


def is_state(obj):
    st = _state_type()
    return st is not None and isinstance(obj, st)


class StateLink:
    """A registered brainstate state: flatopt updates float32 host copies of the leaves of
    its value (``first`` to ``stop`` in the flat leaves) and writes ``state.value`` back, each
    leaf as an array of its original type, dtype and shape. ``written`` is the value object
    flatopt wrote (or read) last: a different one means the user assigned the state, and the
    host copies are read again before the next update."""

    __slots__ = ("state", "node", "first", "stop", "label", "written", "dtypes", "jax")

    def __init__(self, state, node, first, stop, label, leaves):
        self.state = state
        self.node = node
        self.first = first
        self.stop = stop
        self.label = label
        self.written = state.value
        self.dtypes = [np.asarray(leaf).dtype for leaf in leaves[first:stop]]
        self.jax = [type(leaf).__module__.startswith("jax") for leaf in leaves[first:stop]]


def host_copy(value, what, role="the state's value"):
    """A float32, C-contiguous copy of a state's value leaf or of its gradient (a JAX or NumPy
    array of a float dtype: float16, bfloat16, float32 or float64)."""
    try:
        arr = np.asarray(value)
    except Exception as e:  # noqa: BLE001 - any object: say what it is
        raise DTypeError(f"{what}: {describe(value)} is not an array ({e})") from None
    if arr.dtype.kind in "biucOSUM" or arr.dtype.names is not None:
        raise DTypeError(
            f"{what}: {role} has dtype {arr.dtype}; flatopt updates floating-point "
            "parameters only (float16, bfloat16, float32, float64)"
        )
    return np.array(arr, dtype=np.float32, order="C")


def _looks_like_array(obj):
    if isinstance(obj, (np.ndarray, np.generic)):
        return True
    if hasattr(obj, "__array_interface__") or hasattr(obj, "__array__"):
        return True
    if type(obj).__module__.startswith("torch"):
        return True
    try:
        memoryview(obj)
    except TypeError:
        return False
    return True


def _jax_children(obj):
    """(keys, frags, children, treedef) of one level of a JAX pytree node, or None when `obj`
    is a JAX leaf or JAX is not imported."""
    jax = sys.modules.get("jax")
    if jax is None:
        return None
    tu = jax.tree_util
    try:
        pairs, treedef = tu.tree_flatten_with_path(obj, is_leaf=lambda x: x is not obj)
    except Exception:  # noqa: BLE001 - a broken flatten rule: treat the object as a leaf
        return None
    if treedef.num_nodes == 1 and treedef.num_leaves == 1:
        return None  # a leaf for JAX
    keys, frags, children = [], [], []
    for path, child in pairs:
        entry = path[0]
        if isinstance(entry, tu.DictKey):
            keys.append(entry.key)
            frags.append(f"[{entry.key!r}]")
        elif isinstance(entry, tu.SequenceKey):
            keys.append(entry.idx)
            frags.append(f"[{entry.idx}]")
        elif isinstance(entry, tu.GetAttrKey):
            keys.append(entry.name)
            frags.append(f".{entry.name}")
        else:  # FlattenedIndexKey or a custom key
            key = getattr(entry, "key", str(entry))
            keys.append(key)
            frags.append(f"[{key!r}]")
        children.append(child)
    return keys, frags, children, treedef


def _seq_frags(obj):
    fields = getattr(type(obj), "_fields", None)  # a named tuple: its field names
    if isinstance(obj, tuple) and fields is not None and len(fields) == len(obj):
        return list(fields), [f".{f}" for f in fields]
    return list(range(len(obj))), [f"[{i}]" for i in range(len(obj))]


def flatten(tree, what):
    """(root node, leaves, names, labels, states) of a parameter tree; labels are the leaves'
    paths as indexing reads (``"['a'][0]"``), names as documented above, states the
    :class:`StateLink` of each brainstate state (its value's leaves are in `leaves`). Raises
    StructureError for a single array or a tree without leaves."""
    if is_state(tree):
        raise StructureError(
            f"{what}: a single brainstate state; pass a dict of states, e.g. "
            "model.states(brainstate.ParamState)"
        )
    if not isinstance(tree, (Mapping, list, tuple)) and _looks_like_array(tree):
        raise StructureError(
            f"{what}: a single array; pass a dict name -> array, a list of arrays, or a "
            "nested tree of them"
        )
    leaves, paths, labels, states = [], [], [], []
    seen = {}  # id(state) -> its number: a state met twice is registered once (as braintools)

    def walk(obj, path, label, depth):
        if depth > 1000:
            raise StructureError(f"{what}{label}: the tree is nested more than 1000 deep")
        if obj is None:
            return Node(NONE)
        if is_state(obj):
            number = seen.get(id(obj))
            if number is not None:
                return Node(ALIAS, index=number)
            first = len(leaves)
            value = walk(obj.value, path, label, depth + 1)
            if value.kind in (STATE, ALIAS):
                raise StructureError(f"{what}{label}: a state whose value is a state")
            seen[id(obj)] = len(states)
            states.append(StateLink(obj, value, first, len(leaves), what + label, leaves))
            return Node(STATE, children=[value], index=len(states) - 1)
        if isinstance(obj, Mapping):
            keys = list(obj.keys())
            frags = [f"[{k!r}]" for k in keys]
            children = [
                walk(obj[k], path + (k,), label + f, depth + 1) for k, f in zip(keys, frags)
            ]
            return Node(MAP, keys, children, frags)
        if isinstance(obj, (list, tuple)):
            keys, frags = _seq_frags(obj)
            children = [
                walk(c, path + (k,), label + f, depth + 1) for c, k, f in zip(obj, keys, frags)
            ]
            return Node(SEQ, keys, children, frags, rebuild=type(obj))
        if not is_state(obj) and not _looks_like_array(obj):
            sub = _jax_children(obj)
            if sub is not None:
                keys, frags, kids, treedef = sub
                children = [
                    walk(c, path + (k,), label + f, depth + 1)
                    for c, k, f in zip(kids, keys, frags)
                ]
                return Node(JAX, keys, children, frags, rebuild=treedef)
        leaves.append(obj)
        paths.append(path)
        labels.append(label)
        return Node(LEAF, index=len(leaves) - 1)

    root = walk(tree, (), "", 0)
    if root.kind in (LEAF, NONE, STATE):
        # A JAX leaf that is no array (an int, a string): as_view reports it.
        raise StructureError(
            f"{what}: expected a dict name -> array, a list of arrays or a nested tree of "
            f"them, got {describe(tree)}"
        )
    if not leaves:
        raise StructureError(f"{what}: no parameters to register")
    names = [p[0] if len(p) == 1 else p for p in paths]
    return root, leaves, names, labels, states


def _kind_name(node):
    if node.kind == MAP:
        return "a dict"
    if node.kind == SEQ:
        return "a " + node.rebuild.__name__
    if node.kind == NONE:
        return "None"
    if node.kind == JAX:
        return "a JAX pytree node"
    return "an array"


def match(root, tree, what, count, first=0):
    """The leaves of `tree` (the gradients) in the registered order, checking its structure
    against `root` level by level (dicts by key, sequences by length); the error names the
    path and what is missing, extra or of the wrong kind. `count`: the number of leaves under
    `root`, `first` the index of the first (a subtree's)."""
    out = [None] * count

    def fail(label, msg):
        raise StructureError(f"{what}{label}: {msg}")

    def walk(node, obj, label):
        kind = node.kind
        if kind == LEAF:
            if obj is None:
                fail(label, "missing (None), but a parameter is registered there")
            out[node.index - first] = obj  # a container here is reported by as_view, with its path
            return
        if kind == STATE:  # the gradients of a state have the structure of its value
            walk(node.children[0], obj, label)
            return
        if kind == ALIAS:  # a state registered at an earlier path: its gradient is that one
            return
        if kind == NONE:
            if obj is not None:
                fail(label, f"expected None (the parameters have None there), got {describe(obj)}")
            return
        if kind == MAP:
            if not isinstance(obj, Mapping):
                fail(
                    label,
                    f"a dict was registered, got {describe(obj)}; pass a dict with the same "
                    "keys",
                )
            keys = node.keys
            if len(obj) != len(keys) or any(k not in obj for k in keys):
                key_set = set(keys)
                missing = [
                    k for k, c in zip(keys, node.children) if k not in obj and c.kind != ALIAS
                ]
                extra = [k for k in obj if k not in key_set]
                parts = []
                if missing:
                    parts.append("missing keys " + ", ".join(map(repr, missing)))
                if extra:
                    parts.append("unexpected keys " + ", ".join(map(repr, extra)))
                if parts:
                    fail(
                        label, f"{'; '.join(parts)} (registered: {', '.join(map(repr, keys))})"
                    )
            for k, f, c in zip(keys, node.frags, node.children):
                if c.kind != ALIAS:
                    walk(c, obj[k], label + f)
            return
        if kind == SEQ:
            if not isinstance(obj, (list, tuple)):
                fail(
                    label,
                    f"{_kind_name(node)} was registered, got {describe(obj)}; pass a list of "
                    f"{len(node.children)} entries",
                )
            if len(obj) != len(node.children):
                if node.flat:
                    fail(
                        label,
                        f"{len(obj)} arrays, but {len(node.children)} parameters are registered",
                    )
                fail(
                    label,
                    f"{describe(obj)} of length {len(obj)}, but {_kind_name(node)} of length "
                    f"{len(node.children)} was registered",
                )
            for c, f, g in zip(node.children, node.frags, obj):
                walk(c, g, label + f)
            return
        sub = None if obj is None else _jax_children(obj)
        if sub is None or sub[3] != node.rebuild:
            fail(
                label,
                f"{describe(obj)} does not have the structure of the registered JAX pytree "
                f"node ({node.rebuild})",
            )
        for c, f, g in zip(node.children, node.frags, sub[2]):
            walk(c, g, label + f)

    # The flat cases (a dict or list of arrays), checked as before trees were supported, fast.
    if root.flat and root.kind == MAP and isinstance(tree, Mapping) and len(tree) == len(root.keys):
        try:
            return [tree[k] for k in root.keys]
        except KeyError:
            pass
    if (
        root.flat
        and root.kind == SEQ
        and isinstance(tree, (list, tuple))
        and len(tree) == len(root.children)
    ):
        return list(tree)
    walk(root, tree, "")
    return out


def unflatten(root, leaves, states=None):
    """The tree of `root`'s structure with `leaves` (dicts as plain dicts in the registered key
    order, lists and tuples as their type, JAX nodes through their treedef). A brainstate
    state is replaced by the structure of its value with the leaves in it (a state met twice:
    None the second time); with `states` (the StateLinks) by the state object itself."""

    def build(node):
        kind = node.kind
        if kind == LEAF:
            return leaves[node.index]
        if kind == NONE:
            return None
        if kind == STATE:
            return build(node.children[0]) if states is None else states[node.index].state
        if kind == ALIAS:
            return None if states is None else states[node.index].state
        children = [build(c) for c in node.children]
        if kind == MAP:
            return dict(zip(node.keys, children))
        if kind == JAX:
            return node.rebuild.unflatten(children)
        t = node.rebuild
        if t is list:
            return children
        if t is tuple:
            return tuple(children)
        if hasattr(t, "_fields"):
            return t(*children)
        try:
            return t(children)
        except Exception:  # noqa: BLE001 - a sequence type that cannot be rebuilt
            return children

    return build(root)
