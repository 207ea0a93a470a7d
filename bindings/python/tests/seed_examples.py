"""The examples of braintools' ``Lookahead`` documentation (the seed,
``braintools.optim.Lookahead``'s docstring; braintools 0.3.0) as data, shared by
test_seed_examples.py and the recording script tests/record/braintools_reference.py.

Each example is the documented code with only the base optimizer spelled the flatopt way
(``flatopt.sgd(0.1, momentum=0.9)`` for ``optax.sgd(learning_rate=0.1, momentum=0.9)``; the
scheduler of "With learning rate scheduler" is ``flatopt.ExponentialLR``). The documentation
shows a training loop only in its last example ("Complete training example": softmax cross
entropy over ``data_loader``, gradients from ``brainstate.transform.grad``, then
``optimizer.update(grads)``); every example is trained with that loop here, on its own model.
What the documentation leaves open is fixed here, in NumPy, so that a run without JAX
reproduces it: the initial weights (normal, scaled by 1/sqrt(fan_in); biases 0.1 * normal) and
``data_loader`` (normal inputs, one-hot labels of uniformly drawn classes).
"""

import numpy as np

F32 = np.float32

EXAMPLES = [
    {
        "name": "basic_sgd",
        "title": "Basic usage with SGD as base optimizer",
        "layers": [[10, 5]],
        "base": {"kind": "sgd", "learning_rate": 0.1, "momentum": None},
        "sync_period": 5, "alpha": 0.5, "lr": None,
        "epochs": 6, "batches": 4, "batch_size": 16, "seed": 11,
    },
    {
        "name": "adam",
        "title": "With Adam as base optimizer",
        "layers": [[10, 5]],
        "base": {"kind": "adam", "learning_rate": 0.001},
        "sync_period": 6, "alpha": 0.5, "lr": None,
        "epochs": 6, "batches": 4, "batch_size": 16, "seed": 12,
    },
    {
        "name": "custom_sync_period",
        "title": "Custom synchronization period",
        "layers": [[10, 5]],
        "base": {"kind": "sgd", "learning_rate": 0.1, "momentum": 0.9},
        "sync_period": 10, "alpha": 0.5, "lr": None,
        "epochs": 6, "batches": 4, "batch_size": 16, "seed": 13,
    },
    {
        "name": "small_alpha",
        "title": "Adjusting slow weights step size",
        "layers": [[10, 5]],
        "base": {"kind": "adam", "learning_rate": 0.001},
        "sync_period": 5, "alpha": 0.3, "lr": None,
        "epochs": 6, "batches": 4, "batch_size": 16, "seed": 14,
    },
    {
        "name": "scheduler",
        "title": "With learning rate scheduler",
        "layers": [[10, 5]],
        "base": {"kind": "sgd", "learning_rate": 0.1, "momentum": None},
        "sync_period": 5, "alpha": 0.5,
        "lr": {"type": "ExponentialLR", "base_lr": 0.1, "gamma": 0.95},
        "epochs": 6, "batches": 4, "batch_size": 16, "seed": 15,
    },
    {
        "name": "complete_training",
        "title": "Complete training example",
        "layers": [[784, 128], [128, 10]],
        "base": {"kind": "sgd", "learning_rate": 0.1, "momentum": 0.9},
        "sync_period": 5, "alpha": 0.5, "lr": None,
        "epochs": 10, "batches": 2, "batch_size": 32, "seed": 16,
    },
]

BY_NAME = {e["name"]: e for e in EXAMPLES}

# Above this many parameters an example's recorded trajectory keeps SAMPLES elements of each
# buffer per step (at recorded indices) and no gradients; below, everything.
FULL_LIMIT = 1000
SAMPLES = 64


def state_keys(example):
    """The keys of ``model.states(brainstate.ParamState)``: a lone ``Linear`` or the
    ``Sequential(Linear, ReLU, Linear)`` of the complete example."""
    if len(example["layers"]) == 1:
        return [("weight",)]
    return [("layers", 2 * i, "weight") for i in range(len(example["layers"]))]


def brainstate_model(brainstate, example):
    """The example's model as the documentation builds it: ``brainstate.nn.Linear(10, 5)``,
    or ``Sequential(Linear(784, 128), ReLU(), Linear(128, 10))``."""
    layers = example["layers"]
    if len(layers) == 1:
        return brainstate.nn.Linear(*layers[0])
    mods = []
    for i, (n_in, n_out) in enumerate(layers):
        if i:
            mods.append(brainstate.nn.ReLU())
        mods.append(brainstate.nn.Linear(n_in, n_out))
    return brainstate.nn.Sequential(*mods)


def init(example):
    """The initial weights, as the tree of the model's states' values:
    ``{state key: {"weight": (in, out), "bias": (out,)}}``."""
    rng = np.random.default_rng([example["seed"], 0])
    tree = {}
    for key, (n_in, n_out) in zip(state_keys(example), example["layers"]):
        w = (rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(F32)
        b = (0.1 * rng.standard_normal(n_out)).astype(F32)
        tree[key] = {"weight": w, "bias": b}
    return tree


def data_loader(example):
    """The batches of one epoch, the same every epoch: [(x, one-hot y), ...]."""
    rng = np.random.default_rng([example["seed"], 1])
    n_in, n_out = example["layers"][0][0], example["layers"][-1][1]
    out = []
    for _ in range(example["batches"]):
        x = rng.standard_normal((example["batch_size"], n_in)).astype(F32)
        y = np.eye(n_out, dtype=F32)[rng.integers(0, n_out, example["batch_size"])]
        out.append((x, y))
    return out


def numpy_loss_and_grads(tree, x, y):
    """The example's loss (mean softmax cross entropy of the MLP, ReLU between layers) and its
    gradients, in float32 NumPy: what brainstate.transform.grad computes, up to rounding."""
    layers = list(tree.values())
    acts = [x]
    h = x
    for i, p in enumerate(layers):
        h = h @ p["weight"] + p["bias"]
        if i < len(layers) - 1:
            h = np.maximum(h, F32(0))
            acts.append(h)
    z = h - h.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    loss = F32(-(y * logp).sum(axis=1).mean())
    d = ((np.exp(logp) - y) / F32(len(x))).astype(F32)
    grads = [None] * len(layers)
    for i in reversed(range(len(layers))):
        grads[i] = {"weight": acts[i].T @ d, "bias": d.sum(axis=0)}
        if i > 0:
            d = (d @ layers[i]["weight"].T) * (acts[i] > 0)
    return loss, dict(zip(tree.keys(), grads))


def n_params(example):
    return sum(i * o + o for i, o in example["layers"])


def sample_indices(example):
    """Per buffer of a large example (in flatten order), the recorded element indices."""
    rng = np.random.default_rng([example["seed"], 2])
    out = []
    for n_in, n_out in example["layers"]:
        for size in (n_in * n_out, n_out):
            k = min(SAMPLES, size)
            out.append(np.sort(rng.choice(size, k, replace=False)).tolist())
    return out


def flatopt_optimizer(flatopt, example):
    """The example's optimizer, the braintools code with the flatopt spelling."""
    base = example["base"]
    if base["kind"] == "sgd":
        opt = flatopt.sgd(base["learning_rate"], momentum=base["momentum"])
    else:
        opt = flatopt.adam(base["learning_rate"])
    kwargs = {}
    if example["lr"] is not None:
        lr = example["lr"]
        kwargs["lr"] = flatopt.ExponentialLR(base_lr=lr["base_lr"], gamma=lr["gamma"])
    return flatopt.Lookahead(
        base_optimizer=opt, sync_period=example["sync_period"], alpha=example["alpha"],
        **kwargs,
    )
