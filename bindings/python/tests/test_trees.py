"""Nested parameter trees (flatopt/_tree.py; docs/numerics.md, "Parameter trees"): dicts,
lists, tuples and named tuples nested to any depth, flattened depth first in each node's own
order (dicts in insertion order), leaves named by their path, gradients matched by key and
index (never by position), and every structural error naming the path, with nothing changed.
JAX pytree nodes are in test_brainstate.py (they need jax)."""

import collections
import copy
import pickle

import numpy as np
import pytest

import flatopt

from conftest import grad_stream

F32 = np.float32
Pair = collections.namedtuple("Pair", "w b")


def _bits(a):
    return np.ascontiguousarray(a).view(np.uint32)


def _tree():
    """A tree with every kind of node: dict (keys not sorted), list, tuple, named tuple, None
    and an empty dict; and its leaves in the documented order, with their names."""
    rng = np.random.default_rng(7)

    def a(*shape):
        return rng.standard_normal(shape).astype(F32)

    tree = {
        "enc": [a(4, 3), (a(3), None), Pair(w=a(3, 2), b=a(2))],
        "dec": {"z": a(2, 5), "a": {"deep": [[a(5)]]}},
        "empty": {},
        "head": a(7),
    }
    leaves = [
        tree["enc"][0], tree["enc"][1][0], tree["enc"][2].w, tree["enc"][2].b,
        tree["dec"]["z"], tree["dec"]["a"]["deep"][0][0], tree["head"],
    ]
    names = [
        ("enc", 0), ("enc", 1, 0), ("enc", 2, "w"), ("enc", 2, "b"), ("dec", "z"),
        ("dec", "a", "deep", 0, 0), "head",
    ]
    return tree, leaves, names


def _grads_like(tree, arrays):
    """The gradient tree of `tree`'s structure with `arrays` in the documented order, its
    dicts built in reversed key order (gradients are matched by key, not position)."""
    it = iter(arrays)

    def build(node):
        if node is None:
            return None
        if isinstance(node, dict):
            built = {k: build(v) for k, v in node.items()}
            return {k: built[k] for k in reversed(list(built))}
        if isinstance(node, Pair):
            return Pair(*[build(c) for c in node])
        if isinstance(node, (list, tuple)):
            return type(node)(build(c) for c in node)
        return next(it)

    return build(tree)


def _make():
    return flatopt.Lookahead(flatopt.adam(1e-2), sync_period=3, alpha=0.5, grad_clip_norm=2.0)


STEPS = 12


def test_nested_tree_equals_the_flat_list_of_its_leaves_in_documented_order():
    tree, leaves, names = _tree()
    shapes = [x.shape for x in leaves]
    flat = [x.copy() for x in leaves]
    opt_tree, opt_flat = _make(), _make()
    opt_tree.register_trainable_weights(tree)
    opt_flat.register_trainable_weights(flat)
    assert opt_tree.param_names == names
    g = grad_stream(shapes, 3)
    for t in range(STEPS):
        assert opt_tree.update(_grads_like(tree, g(t))) is True
        assert opt_flat.update(g(t)) is True
    for mine, ref in zip(leaves, flat):  # the tree's arrays were updated in place
        assert np.array_equal(_bits(mine), _bits(ref))
    slow = opt_tree.slow_weights
    assert list(slow) == ["enc", "dec", "empty", "head"] and slow["empty"] == {}
    assert isinstance(slow["enc"][1], tuple) and slow["enc"][1][1] is None
    assert isinstance(slow["enc"][2], Pair)
    assert np.array_equal(_bits(slow["dec"]["a"]["deep"][0][0]), _bits(opt_flat.slow_weights[5]))


def test_registered_gradient_tree():
    tree, leaves, _ = _tree()
    ref_tree, _, _ = _tree()
    grads = _grads_like(tree, [np.zeros(x.shape, F32) for x in leaves])
    gleaves = [grads["enc"][0], grads["enc"][1][0], grads["enc"][2].w, grads["enc"][2].b,
               grads["dec"]["z"], grads["dec"]["a"]["deep"][0][0], grads["head"]]
    opt, ref = _make(), _make()
    opt.register_trainable_weights(tree, grads=grads)
    ref.register_trainable_weights(ref_tree)
    g = grad_stream([x.shape for x in leaves], 4)
    for t in range(STEPS):
        for dst, src in zip(gleaves, g(t)):
            np.copyto(dst, src)
        assert opt.update() is True
        ref.update(_grads_like(ref_tree, g(t)))
    assert np.array_equal(_bits(tree["dec"]["a"]["deep"][0][0]),
                          _bits(ref_tree["dec"]["a"]["deep"][0][0]))


def test_dict_order_is_insertion_order_not_sorted():
    a, b = np.zeros(2, F32), np.zeros(3, F32)
    opt = flatopt.SGD(lr=1.0)
    opt.register_trainable_weights({"b": b, "a": a})
    assert opt.param_names == ["b", "a"]
    assert opt.state_dict()["param_shapes"] == [[3], [2]]


def test_deep_nesting():
    leaf = np.zeros(3, F32)
    tree = leaf
    for i in range(200):
        tree = {"x": [tree]} if i % 2 else [tree]
    opt = flatopt.SGD(lr=1.0)
    opt.register_trainable_weights({"root": tree})
    assert len(opt.param_names[0]) == 1 + 100 + 2 * 100  # root, 100 lists, 100 dicts of lists
    grads = np.ones(3, F32)
    for i in range(200):
        grads = {"x": [grads]} if i % 2 else [grads]
    opt.update({"root": grads})
    assert np.array_equal(leaf, np.full(3, -1.0, F32))


def test_state_dict_pickle_and_copy_keep_the_tree():
    tree, leaves, names = _tree()
    opt = _make()
    opt.register_trainable_weights(tree)
    g = grad_stream([x.shape for x in leaves], 5)
    for t in range(4):
        opt.update(_grads_like(tree, g(t)))
    state = pickle.loads(pickle.dumps(opt.state_dict()))
    assert state["param_names"] == names
    twin_tree = copy.deepcopy(tree)
    twin = _make()
    twin.register_trainable_weights(twin_tree)
    twin.load_state_dict(state)
    clone = copy.deepcopy(opt)  # copies the registered tree with it
    for t in range(4, 8):
        for o, tr in ((opt, tree), (twin, twin_tree)):
            o.update(_grads_like(tr, g(t)))
        clone.update(_grads_like(tree, g(t)))
    assert np.array_equal(_bits(tree["head"]), _bits(twin_tree["head"]))
    assert clone.param_names == names
    assert np.array_equal(_bits(clone.slow_weights["head"]), _bits(opt.slow_weights["head"]))


def _ok():
    """Gradients of the right structure for _tree()'s params (ones)."""
    tree, leaves, _ = _tree()
    return _grads_like(tree, [np.ones(x.shape, F32) for x in leaves])


def _edit(fn):
    def make():
        g = _ok()
        fn(g)
        return g
    return make


BAD_GRADS = [
    ("missing deep key", _edit(lambda g: g["dec"]["a"].pop("deep")),
     "grads['dec']['a']: missing keys 'deep'"),
    ("extra deep key", _edit(lambda g: g["dec"].__setitem__("y", np.ones(2, F32))),
     "grads['dec']: unexpected keys 'y'"),
    ("wrong shape deep", _edit(lambda g: g["dec"]["a"]["deep"][0].__setitem__(0, np.ones(4, F32))),
     "grads['dec']['a']['deep'][0][0]: shape (4,), but the parameter has shape (5,)"),
    ("missing gradient (None)", _edit(lambda g: g["enc"].__setitem__(0, None)),
     "grads['enc'][0]: missing (None), but a parameter is registered there"),
    ("tuple too short", _edit(lambda g: g["enc"].__setitem__(1, (np.ones(3, F32),))),
     "grads['enc'][1]: tuple of length 1, but a tuple of length 2 was registered"),
    ("list where a dict was", _edit(lambda g: g.__setitem__("dec", [1])),
     "grads['dec']: a dict was registered, got list"),
    ("array where a list was", _edit(lambda g: g.__setitem__("enc", np.ones(3, F32))),
     "grads['enc']: a list was registered, got numpy.ndarray"),
    ("dict where an array was", _edit(lambda g: g.__setitem__("head", {"x": np.ones(7, F32)})),
     "grads['head']: a dict where an array was expected"),
    ("value where None was", _edit(lambda g: g["enc"].__setitem__(1, (np.ones(3, F32), 1.0))),
     "grads['enc'][1][1]: expected None"),
    ("named tuple field wrong", _edit(lambda g: g["enc"].__setitem__(2, Pair(w=np.ones(3, np.float64), b=g["enc"][2].b))),
     "grads['enc'][2].w: dtype float64"),
    ("missing root key", _edit(lambda g: g.pop("empty")), "grads: missing keys 'empty'"),
]


@pytest.mark.parametrize("desc,make,message", BAD_GRADS, ids=[r[0] for r in BAD_GRADS])
def test_bad_gradient_tree_names_the_path_and_changes_nothing(desc, make, message):
    tree, leaves, _ = _tree()
    opt = _make()
    opt.register_trainable_weights(tree)
    opt.update(_ok())
    before = [x.copy() for x in leaves]
    state = opt.state_dict()
    with pytest.raises((flatopt.FlatoptError, TypeError, ValueError)) as info:
        opt.update(make())
    assert message in str(info.value), str(info.value)
    for x, y in zip(leaves, before):
        assert np.array_equal(_bits(x), _bits(y)), desc
    assert opt.state_dict()["checkpoint"] == state["checkpoint"]


BAD_PARAMS = [
    ("float64 leaf deep", lambda: {"a": [{"b": np.ones(2)}]}, flatopt.DTypeError,
     "params['a'][0]['b']: dtype float64"),
    ("only empty subtrees", lambda: {"a": {}, "b": [None, ()]}, flatopt.StructureError,
     "no parameters"),
    ("a string leaf", lambda: {"a": [np.ones(2, F32), "w"]}, flatopt.DTypeError,
     "params['a'][1]: str is not an array"),
    ("same array twice", lambda: (lambda x: {"a": x, "b": [x]})(np.ones(3, F32)),
     flatopt.OverlapError, "params['b'][0]"),
    ("a number at the root", lambda: 3.0, flatopt.StructureError, "got float"),
]


@pytest.mark.parametrize("desc,make,error,message", BAD_PARAMS, ids=[r[0] for r in BAD_PARAMS])
def test_bad_parameter_tree(desc, make, error, message):
    opt = flatopt.SGD(lr=0.1)
    with pytest.raises(error) as info:
        opt.register_trainable_weights(make())
    assert message in str(info.value), str(info.value)
    assert opt.param_names == []
