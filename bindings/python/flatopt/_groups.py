"""Parameter groups (PyTorch ``param_groups``): the group dicts ``register_trainable_weights``
and ``add_param_group`` take, their checking, and the live dicts of ``Optimizer.param_groups``.

A group is a dict ``{"params": tree, "lr": ..., "weight_decay": ..., <rule keys>}``: ``params``
any parameter tree (dicts, lists, tuples nested to any depth, brainstate states), the other
keys optional (what a group leaves out is the optimizer's). The rule keys are the base rule's
hyperparameters under their PyTorch / braintools names (``betas``, ``eps``, ``amsgrad``;
``momentum``, ``dampening``, ``nesterov``; ...) or their optax names (``b1``, ``b2``, ...). Any
other key is refused by name. Each group becomes one parameter group of the C library
(docs/numerics.md, "Parameter groups"): under a schedule the group's learning rate follows
``schedule(t) * lr / base_lr``; ``weight_decay`` is the rule's (AdamW's decoupled one, else
the coupled one), 0 turns it off.
"""

from __future__ import annotations

import ctypes
import math
from collections.abc import Mapping

from . import _lib, _tree, _validate
from ._errors import ArgumentTypeError, InvalidArgumentError, StructureError
from ._schedules import LRScheduler, _Real

#: The keys every group takes besides the rule's hyperparameters.
COMMON_KEYS = ("params", "lr", "weight_decay")
#: Keys a group's live dict lets you assign (the C library has setters for them).
LIVE_KEYS = ("lr", "weight_decay")


def is_group_list(obj):
    """Whether ``obj`` is a PyTorch-style list of group dicts: a list or tuple whose entries are
    all dicts with a ``"params"`` key (a parameter tree never has that shape: its dicts hold
    arrays, and a group's other values are numbers)."""
    return (
        isinstance(obj, (list, tuple))
        and len(obj) > 0
        and all(isinstance(g, Mapping) and "params" in g for g in obj)
    )


def rule_keys(base):
    """The group keys of the base rule's hyperparameters: its own names (optax's), plus
    ``betas`` for a rule with ``b1`` / ``b2``. AdamW's ``weight_decay`` is the common key."""
    keys = [k for k in base.hyperparams if k != "weight_decay"]
    if "b1" in keys:
        keys.insert(0, "betas")
    return keys


def check_group(group, base, what):
    """The checked options of one group dict (every key but ``params``), as a dict of the keys
    given. Raises naming ``what`` (e.g. ``params[1]``) and the key."""
    if not isinstance(group, Mapping):
        raise ArgumentTypeError(f"{what}: a parameter group must be a dict, got {type(group).__name__}")
    if "params" not in group:
        raise StructureError(f"{what}: a parameter group needs a 'params' entry")
    allowed = list(COMMON_KEYS) + rule_keys(base)
    if base.kind == _lib.ADAMW:
        allowed.append("amsgrad")  # PyTorch's AdamW takes it: False only (checked below)
    unknown = [k for k in group if k not in allowed]
    if unknown:
        raise InvalidArgumentError(
            f"{what}: unknown key {unknown[0]!r} in a parameter group of "
            f"flatopt.{base.name} (allowed: {', '.join(map(repr, allowed))})"
        )
    options = {}
    for key, value in group.items():
        name = f"{what}[{key!r}]"
        if key == "params":
            continue
        if key == "lr":
            if isinstance(value, LRScheduler):
                raise ArgumentTypeError(
                    f"invalid {name} = {_validate.show(value)}: a group's learning rate must "
                    "be a number (the optimizer's schedule scales it: schedule(t) * lr / "
                    "base_lr)"
                )
            value = check_lr(name, value)
        elif key == "weight_decay":
            value = check_weight_decay(name, value)
        elif key == "betas":
            if "b1" in group or "b2" in group:
                raise InvalidArgumentError(
                    f"{what}: give either 'betas' or 'b1' / 'b2', not both"
                )
            value = _validate.pair(name, value)
        options[key] = value
    if base.kind == _lib.ADAMW and "amsgrad" in options:
        if _validate.flag(f"{what}['amsgrad']", options.pop("amsgrad")):
            raise InvalidArgumentError(
                f"{what}['amsgrad'] = True: AdamW has no AMSGrad (use Adam)"
            )
    return options


def check_lr(name, value):
    """A group's learning rate: a finite number >= 0 (the library also checks it as f32)."""
    return _validate.nonneg_finite(name, _validate.real(name, value), "the learning rate")


def check_weight_decay(name, value):
    """A group's weight decay: a finite number >= 0."""
    return _validate.nonneg_finite(name, _validate.real(name, value), "the weight decay")


def has_rule_options(options):
    """Whether a group sets base-rule hyperparameters (not only lr / weight decay)."""
    return any(k not in COMMON_KEYS for k in options)


def c_options(base, options):
    """(GroupOptions, keepalive) for ``flatopt_optimizer_add_group``: NaN / NULL inherit."""
    from ._optim import BaseOptimizer  # noqa: PLC0415 - circular at import time

    o = _lib.GroupOptions()
    o.struct_size = ctypes.sizeof(_lib.GroupOptions)
    o.lr = options.get("lr", math.nan)
    o.weight_decay = options.get("weight_decay", math.nan)
    keep = None
    if has_rule_options(options):
        hyper = dict(base.hyperparams)
        for key, value in options.items():
            if key == "betas":
                hyper["b1"], hyper["b2"] = value
            elif key not in COMMON_KEYS:
                hyper[key] = value
        # Checked as the factory checks them (the library checks the domains); the rule's own
        # class (flatopt.rprop(...) etc. map their arguments onto other fields).
        rule = type(base)(base.kind, base.name, 0.0, **hyper)
        keep = _lib.new_base_params(base.kind)
        rule._fill(keep)
        o.base = ctypes.pointer(keep)
    return o, keep


def rule_values(base, options):
    """A group's rule hyperparameters under the group keys (``betas`` as a tuple), the given
    ones over the optimizer's."""
    hyper = dict(base.hyperparams)
    hyper.pop("weight_decay", None)
    if "b1" in hyper:
        b1, b2 = hyper.pop("b1"), hyper.pop("b2")
        b1, b2 = options.get("b1", b1), options.get("b2", b2)
        hyper = {"betas": options.get("betas", (b1, b2)), **hyper}
    for key in hyper:
        if key in options:
            hyper[key] = options[key]
    return hyper


def shift(node, leaf_off, state_off):
    """Moves a freshly flattened tree's leaf and state numbers by the given offsets (a group's
    tree flattened on its own, placed after the groups before it)."""
    if node.kind == _tree.LEAF:
        node.index += leaf_off
    elif node.kind in (_tree.STATE, _tree.ALIAS):
        node.index += state_off
    for child in node.children:
        shift(child, leaf_off, state_off)


def combine(roots):
    """The registered structure of several groups: one dict over all groups when every group's
    tree is a dict and no key is in two of them (the gradients are then one dict, as for a
    single dict), else a list with one entry per group. Returns (root, merged)."""
    if all(r.kind == _tree.MAP for r in roots):
        keys = [k for r in roots for k in r.keys]
        try:
            distinct = len(set(keys)) == len(keys)
        except TypeError:  # unhashable keys cannot be a dict's anyway
            distinct = False
        if distinct:
            children = [c for r in roots for c in r.children]
            frags = [f for r in roots for f in r.frags]
            return _tree.Node(_tree.MAP, keys, children, frags), True
    n = len(roots)
    return (
        _tree.Node(_tree.SEQ, list(range(n)), list(roots), [f"[{i}]" for i in range(n)],
                   rebuild=list),
        False,
    )


class ParamGroup(dict):
    """One entry of ``Optimizer.param_groups``: a dict whose ``"lr"`` and ``"weight_decay"``
    are live. Reading them gives the value the optimizer holds now; assigning one checks it
    and hands it to the library (``flatopt_optimizer_set_group_lr`` /
    ``_set_group_weight_decay``), and the next update uses it. ``"params"`` and the rule's
    hyperparameters are fixed at registration: assigning them is refused."""

    __slots__ = ("_opt", "_index")

    def __init__(self, opt, index, entries):
        super().__init__(entries)
        self._opt = opt
        self._index = index

    def __getitem__(self, key):
        if key in LIVE_KEYS and self._opt is not None:
            # A float also readable as .value (braintools keeps group["lr"] in a state).
            value = _Real(self._opt._group_value(self._index, key))
            dict.__setitem__(self, key, value)
            return value
        return dict.__getitem__(self, key)

    def get(self, key, default=None):
        return self[key] if key in self else default

    def __setitem__(self, key, value):
        if key not in LIVE_KEYS:
            what = "params" if key == "params" else f"{key!r}"
            if key in self:
                raise InvalidArgumentError(
                    f"param_groups[{self._index}][{key!r}] cannot be changed: only 'lr' and "
                    f"'weight_decay' are live ({what} is fixed when the group is registered)"
                )
            raise InvalidArgumentError(
                f"param_groups[{self._index}]: unknown key {key!r} (a group has "
                f"{', '.join(map(repr, self))})"
            )
        name = f"param_groups[{self._index}][{key!r}]"
        value = (check_lr if key == "lr" else check_weight_decay)(name, value)
        self._opt._set_group_value(self._index, key, value, name)
        dict.__setitem__(self, key, value)

    def update(self, *args, **kwargs):
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def setdefault(self, key, default=None):
        if key in self:
            return self[key]
        self[key] = default
        return default

    def _refuse(self, *_args, **_kwargs):
        raise InvalidArgumentError(
            f"param_groups[{self._index}]: entries cannot be removed from a parameter group"
        )

    __delitem__ = pop = popitem = clear = _refuse

    def __reduce__(self):  # copied or pickled: a plain dict of the values now
        return (dict, (dict(self.items()),))

    def items(self):
        self._sync()
        return dict.items(self)

    def values(self):
        self._sync()
        return dict.values(self)

    def __repr__(self):
        self._sync()
        return dict.__repr__(self)

    def __eq__(self, other):
        self._sync()
        return dict.__eq__(self, other)

    __hash__ = None

    def _sync(self):
        for key in LIVE_KEYS:
            if key in self:
                self[key]  # noqa: B018 - reads the live value into the dict


class Layout:
    """The registered groups' trees, each flattened on its own (so that a group's leaves are
    contiguous) and numbered after the groups before it: per group its tree as given, root
    node, names and labels (relative to the group); over all groups the leaves, the brainstate
    states, each leaf's group and its path as the caller wrote it (``labels_in``, for the
    messages of registration)."""

    __slots__ = ("trees", "roots", "names", "labels", "leaves", "states", "group_of",
                 "labels_in")

    def __init__(self, trees=(), grouped=False, leaf_off=0, state_off=0, first_group=0,
                 what=None):
        self.trees, self.roots, self.names, self.labels = [], [], [], []
        self.leaves, self.states, self.group_of, self.labels_in = [], [], [], []
        for g, tree in enumerate(trees, first_group):
            w = what or (f"params[{g}]['params']" if grouped else "params")
            root, leaves, names, labels, states = _tree.flatten(tree, w)
            off = leaf_off + len(self.leaves)
            shift(root, off, state_off + len(self.states))
            for link in states:
                link.first += off
                link.stop += off
            self.trees.append(tree)
            self.roots.append(root)
            self.names.append(names)
            self.labels.append(labels)
            self.leaves += leaves
            self.states += states
            self.group_of += [g] * len(leaves)
            self.labels_in += [w + lab for lab in labels]

    def plus(self, other):
        """This layout followed by ``other`` (made with the offsets of this one)."""
        out = Layout()
        for name in self.__slots__:
            setattr(out, name, list(getattr(self, name)) + list(getattr(other, name)))
        return out

    def root(self, grouped):
        """(root, alternative root, merged): the registered structure. Without groups the one
        tree; with groups see :func:`combine`; the alternative root (the list of the groups'
        trees) also matches gradients given as a list when the groups merged into one dict."""
        if not grouped:
            return self.roots[0], None, False
        root, merged = combine(self.roots)
        if not merged:
            return root, None, False
        n = len(self.roots)
        alt = _tree.Node(_tree.SEQ, list(range(n)), list(self.roots),
                         [f"[{i}]" for i in range(n)], rebuild=list)
        return root, alt, True

    def final_labels(self, grouped, merged):
        """Each leaf's path in the registered structure (how ``grads`` is indexed)."""
        if not grouped or merged:
            return [lab for labels in self.labels for lab in labels]
        return [f"[{g}]" + lab for g, labels in enumerate(self.labels) for lab in labels]

    def final_names(self, grouped, merged):
        """``param_names``: a group's names as for its tree alone when the groups merged into
        one dict (or there are no groups), else ``(group, name)``."""
        if not grouped or merged:
            return [n for names in self.names for n in names]
        return [(g, n) for g, names in enumerate(self.names) for n in names]


def check_distinct_states(states):
    """Refuses a brainstate state registered in two groups (a parameter belongs to one)."""
    seen = {}
    for link in states:
        other = seen.setdefault(id(link.state), link)
        if other is not link:
            raise StructureError(
                f"{link.label}: this brainstate state is also registered as {other.label}; a "
                "parameter belongs to one group"
            )


def add_c_group(handle, base, options, what):
    """Adds a parameter group to a library handle; returns its index."""
    o, keep = c_options(base, options)
    index = ctypes.c_size_t()
    _lib.check(_lib.optimizer_add_group(handle.ptr, ctypes.byref(o), ctypes.byref(index)), what)
    del keep  # the library copied the base parameters
    return index.value
