"""brainstate states and JAX (skipped, with the reason, without jax and brainstate; `make test`
installs them): ``register_trainable_weights(model.states(brainstate.ParamState))``, then
``update(grads)`` with what ``brainstate.transform.grad`` returns. flatopt keeps float32 host
copies of the states' values, updates them in the fused pass and assigns ``state.value`` (a JAX
array of the original dtype and shape) after every applied update; a state assigned by the user
in between is read again. As braintools does, a state met twice in the tree is registered once.
Also any JAX pytree node as a node of the parameter tree."""

import dataclasses

import numpy as np
import pytest

import flatopt

from conftest import needs

jax = needs("jax")
brainstate = needs("brainstate")
jnp = jax.numpy

F32 = np.float32


def _bits(a):
    return np.ascontiguousarray(np.asarray(a)).view(np.uint32)


def _model(seed=0):
    brainstate.random.seed(seed)
    return brainstate.nn.Sequential(
        brainstate.nn.Linear(6, 4), brainstate.nn.ReLU(), brainstate.nn.Linear(4, 3)
    )


def _loss_fn(model, t):
    rng = np.random.default_rng(t)
    x = jnp.asarray(rng.standard_normal((8, 6)).astype(F32))
    y = jnp.asarray(rng.standard_normal((8, 3)).astype(F32))
    return lambda: jnp.mean((model(x) - y) ** 2)


def _values(states):
    """The states' values as a NumPy tree of the same structure (copies; dicts in their own
    order, as flatopt flattens them, not sorted as jax.tree.map would rebuild them)."""
    return {
        k: {name: np.array(a, dtype=F32) for name, a in s.value.items()}
        for k, s in states.items()
    }


def _make():
    return flatopt.Lookahead(flatopt.sgd(0.1, momentum=0.9), sync_period=3, alpha=0.5)


@pytest.mark.parametrize("method", ["update", "step"])
def test_param_states_follow_the_numpy_tree_bit_for_bit(method):
    model = _model()
    states = model.states(brainstate.ParamState)
    ref_params = _values(states)
    opt, ref = _make(), _make()
    opt.register_trainable_weights(states)
    ref.register_trainable_weights(ref_params)
    assert opt.param_names == ref.param_names
    assert opt.param_names[0] == (("layers", 0, "weight"), "weight")
    dtypes = {k: jax.tree.map(lambda a: (a.dtype, a.shape), s.value) for k, s in states.items()}
    for t in range(7):
        grads = brainstate.transform.grad(_loss_fn(model, t), states)()
        assert getattr(opt, method)(grads) is True
        assert ref.update(jax.tree.map(np.asarray, grads)) is True
        for k, s in states.items():
            for name, value in s.value.items():
                assert isinstance(value, jax.Array)
                assert (value.dtype, value.shape) == dtypes[k][name]
                assert np.array_equal(_bits(value), _bits(ref_params[k][name])), (t, k, name)
    slow = opt.slow_weights
    assert np.array_equal(_bits(slow[("layers", 2, "weight")]["bias"]),
                          _bits(ref.slow_weights[("layers", 2, "weight")]["bias"]))


def test_a_state_assigned_between_updates_is_read_again():
    s = brainstate.ParamState(jnp.zeros(3, jnp.float32))
    opt = flatopt.SGD(lr=0.5)
    opt.register_trainable_weights({"s": s})
    opt.update({"s": jnp.ones(3)})
    assert np.array_equal(np.asarray(s.value), np.full(3, -0.5, F32))
    s.value = jnp.full(3, 10.0, jnp.float32)
    opt.update({"s": jnp.ones(3)})
    assert np.array_equal(np.asarray(s.value), np.full(3, 9.5, F32))
    s.value = jnp.zeros(4, jnp.float32)  # another shape: refused, nothing changed
    with pytest.raises(flatopt.StructureError, match=r"params\['s'\]: the state's value now has shape \(4,\)"):
        opt.update({"s": jnp.ones(3)})
    assert opt.step_count == 2


def test_low_precision_state_keeps_a_float32_master_copy():
    s = brainstate.ParamState(jnp.ones(4, jnp.bfloat16))
    master = np.ones(4, F32)
    opt, ref = flatopt.SGD(lr=1e-4), flatopt.SGD(lr=1e-4)
    opt.register_trainable_weights({"s": s})
    ref.register_trainable_weights({"s": master})
    for _ in range(5):
        g = jnp.full(4, 0.5, jnp.bfloat16)
        opt.update({"s": g})
        ref.update({"s": np.asarray(g, dtype=F32)})
        assert s.value.dtype == jnp.bfloat16
        assert np.array_equal(np.asarray(s.value), master.astype(jnp.bfloat16))
    # The master copy moved although the rounded bfloat16 value did not (1 - 0.00025).
    assert master[0] != 1.0 and float(s.value[0]) == 1.0


def test_a_state_met_twice_is_registered_once_as_braintools_does():
    shared = brainstate.ParamState(jnp.zeros(2, jnp.float32))
    other = brainstate.ParamState(jnp.zeros(3, jnp.float32))
    opt = flatopt.SGD(lr=1.0)
    opt.register_trainable_weights({"a": shared, "b": other, "tied": shared})
    assert opt.param_names == ["a", "b"]
    opt.update({"a": jnp.ones(2), "b": jnp.ones(3), "tied": jnp.ones(2)})  # "tied" not used
    opt.update({"a": jnp.ones(2), "b": jnp.ones(3)})  # nor needed
    assert np.array_equal(np.asarray(shared.value), np.full(2, -2.0, F32))


@dataclasses.dataclass
class Layer:
    w: object
    b: object


jax.tree_util.register_dataclass(Layer, data_fields=["w", "b"], meta_fields=[])


def test_jax_pytree_nodes():
    params = {"layers": [Layer(np.zeros((2, 2), F32), np.zeros(2, F32))]}
    opt = flatopt.SGD(lr=1.0)
    opt.register_trainable_weights(params)
    assert opt.param_names == [("layers", 0, "w"), ("layers", 0, "b")]
    opt.update({"layers": [Layer(jnp.ones((2, 2)), jnp.full(2, 2.0))]})
    assert np.array_equal(params["layers"][0].b, np.full(2, -2.0, F32))
    slow = flatopt.Lookahead(flatopt.sgd(1.0))
    slow.register_trainable_weights(params)
    assert isinstance(slow.slow_weights["layers"][0], Layer)
    with pytest.raises(flatopt.StructureError, match=r"grads\['layers'\]\[0\]\.b: shape \(3,\)"):
        opt.update({"layers": [Layer(jnp.ones((2, 2)), jnp.ones(3))]})
    with pytest.raises(flatopt.StructureError, match=r"grads\['layers'\]\[0\]: dict does not have the structure"):
        opt.update({"layers": [{"w": jnp.ones((2, 2)), "b": jnp.ones(2)}]})
    assert np.array_equal(params["layers"][0].b, np.full(2, -2.0, F32))


BAD = [
    ("grads of a state: missing leaf",
     lambda s: {"s": {"w": jnp.ones(2)}}, flatopt.StructureError,
     "grads['s']: missing keys 'b'"),
    ("grads of a state: wrong shape",
     lambda s: {"s": {"w": jnp.ones(3), "b": jnp.ones(1)}}, flatopt.StructureError,
     "grads['s']['w']: shape (3,), but the parameter has shape (2,)"),
    ("grads of a state: an integer gradient",
     lambda s: {"s": {"w": jnp.ones(2, jnp.int32), "b": jnp.ones(1)}}, flatopt.DTypeError,
     "grads['s']['w']: the gradient has dtype int32"),
]


@pytest.mark.parametrize("desc,grads,error,message", BAD, ids=[r[0] for r in BAD])
def test_bad_state_gradients_change_nothing(desc, grads, error, message):
    s = brainstate.ParamState({"w": jnp.zeros(2), "b": jnp.zeros(1)})
    opt = flatopt.Adam(lr=0.1)
    opt.register_trainable_weights({"s": s})
    before = s.value
    with pytest.raises(error) as info:
        opt.update(grads(s))
    assert message in str(info.value), str(info.value)
    assert s.value is before and opt.step_count == 0


BAD_REGISTRATION = [
    ("an integer state", lambda: {"s": brainstate.ParamState(jnp.zeros(2, jnp.int32))},
     flatopt.DTypeError, "params['s']: the state's value has dtype int32"),
    ("a single state", lambda: brainstate.ParamState(jnp.zeros(2)),
     flatopt.StructureError, "a single brainstate state"),
    ("a JAX array as a parameter", lambda: {"w": jnp.zeros(2)},
     flatopt.LayoutError, "params['w']: a JAX array is immutable"),
]


@pytest.mark.parametrize("desc,params,error,message", BAD_REGISTRATION,
                         ids=[r[0] for r in BAD_REGISTRATION])
def test_bad_state_registration(desc, params, error, message):
    opt = flatopt.SGD(lr=0.1)
    with pytest.raises(error) as info:
        opt.register_trainable_weights(params())
    assert message in str(info.value), str(info.value)
    assert opt.param_names == []


@pytest.mark.skipif(flatopt._lib.optimizer_add_group is None, reason="no parameter groups")
@pytest.mark.parametrize("grads_as", ["dict", "list"])
def test_param_states_in_groups_follow_the_numpy_tree_bit_for_bit(grads_as):
    """Groups of brainstate states (one per layer, another lr and momentum for the last),
    with the gradients as brainstate.transform.grad returns them (one dict over all groups)
    or split per group; against the same groups over a NumPy tree."""
    model = _model()
    states = model.states(brainstate.ParamState)
    keys = list(states.keys())
    ref_params = _values(states)

    def groups(tree):
        return [{"params": {keys[0]: tree[keys[0]]}},
                {"params": {keys[1]: tree[keys[1]]}, "lr": 0.05, "momentum": 0.5}]

    opt, ref = _make(), _make()
    opt.register_trainable_weights(groups(states))
    ref.register_trainable_weights(groups(ref_params))
    assert opt.param_names == ref.param_names and len(opt.param_groups) == 2
    for t in range(7):
        grads = brainstate.transform.grad(_loss_fn(model, t), states)()
        if grads_as == "list":
            grads = [{keys[0]: grads[keys[0]]}, {keys[1]: grads[keys[1]]}]
        assert opt.update(grads) is True
        assert ref.update(jax.tree.map(np.asarray, grads)) is True
        for k, s in states.items():
            for name, value in s.value.items():
                assert np.array_equal(_bits(value), _bits(ref_params[k][name])), (t, k, name)


def test_a_state_in_two_groups_is_refused():
    s = brainstate.ParamState(jnp.zeros(3, jnp.float32))
    opt = flatopt.SGD(lr=0.1)
    with pytest.raises(flatopt.StructureError, match="also registered as .*one group"):
        opt.register_trainable_weights([{"params": {"a": s}}, {"params": {"b": s}}])
