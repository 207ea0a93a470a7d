#!/usr/bin/env python3
"""Reference trajectories from braintools for the Python tests, and the check that this
braintools reproduces the golden file.

    python tests/record/braintools_reference.py verify-golden
    python tests/record/braintools_reference.py record [--out PATH]

Needs braintools, brainstate, optax and jax (the pinned set of
bindings/python/requirements-extras.txt: `bash bindings/python/extras_venv.sh` prints the path
of a virtualenv that has them). Runs eagerly (no jax.jit), float32, JAX x64 off, on the CPU.

verify-golden: replays every case of tests/data/braintools-0.4.0-dev.json (recorded from
braintools 0.4.0, which is not on PyPI) through this braintools' ``Lookahead`` and compares
every parameter after every step, and the final slow weights, bit for bit. Exit status 1 on
the first difference.

record: runs every example of braintools' ``Lookahead`` documentation (the seed) as
bindings/python/tests/seed_examples.py defines it, with braintools and optax as documented,
and writes tests/data/braintools-0.3.0-lookahead-examples.json (format in
docs/numerics.md, "The seed examples' file"), which test_seed_examples.py replays through
flatopt with and without JAX.
"""

import argparse
import json
import os
import platform
import sys
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bindings" / "python" / "tests"))

import seed_examples  # noqa: E402

import braintools  # noqa: E402
import brainstate  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

F32 = np.float32
GOLDEN = REPO / "tests" / "data" / "braintools-0.4.0-dev.json"
OUT = REPO / "tests" / "data" / "braintools-0.3.0-lookahead-examples.json"


def _floats(a):
    """Shortest decimals that read back as the same float32 values."""
    return [float(str(v)) for v in np.asarray(a, dtype=F32).ravel()]


def _f32(values, shape):
    return np.asarray(values, dtype=np.float64).astype(F32).reshape(shape)


def _slow_weights(opt):
    """The Lookahead slow weights in braintools' optimizer state (its _LookaheadState)."""
    found = []

    def visit(node):
        if hasattr(node, "slow") and hasattr(node, "fast_state"):
            found.append(node.slow)
            return
        if isinstance(node, (tuple, list)):
            for c in node:
                visit(c)

    visit(opt.opt_state.value)
    if len(found) != 1:
        raise SystemExit("braintools_reference.py: no single Lookahead state in opt_state")
    return found[0]


# -- verify-golden ----------------------------------------------------------------------------


def _golden_base(base):
    if base["kind"] == "sgd":
        return optax.sgd(base["lr"], momentum=base["momentum"], nesterov=base["nesterov"]), None
    if base["kind"] == "adam":
        return optax.adam(base["lr"], b1=base["b1"], b2=base["b2"], eps=base["eps"],
                          eps_root=base["eps_root"]), None
    if base["kind"] == "scheduled_sgd":
        s = base["schedule"]
        sched = braintools.optim.ExponentialLR(base_lr=s["base_lr"], gamma=s["gamma"])
        return optax.scale_by_schedule(sched), sched
    raise SystemExit(f"braintools_reference.py: unknown golden base kind {base['kind']!r}")


def verify_golden():
    with open(GOLDEN) as f:
        golden = json.load(f)
    total = 0
    for case in golden["cases"]:
        cfg = case["config"]
        names = case["param_order"]
        shapes = {n: tuple(case["shapes"][n]) for n in names}
        base, sched = _golden_base(cfg["base"])
        lr = cfg["lookahead_lr"]
        if isinstance(lr, dict):  # ignored by braintools either way
            lr = braintools.optim.ExponentialLR(base_lr=lr["base_lr"], gamma=lr["gamma"])
        opt = braintools.optim.Lookahead(
            base_optimizer=base, sync_period=cfg["sync_period"], alpha=cfg["alpha"], lr=lr,
            weight_decay=cfg["weight_decay"], grad_clip_norm=cfg["grad_clip_norm"],
            grad_clip_value=cfg["grad_clip_value"],
        )
        states = {
            n: brainstate.ParamState(jnp.asarray(_f32(case["init"][n], shapes[n])))
            for n in names
        }
        opt.register_trainable_weights(states)
        for t, grads in enumerate(case["grads"]):
            opt.update({n: jnp.asarray(_f32(grads[n], shapes[n])) for n in names})
            if cfg["scheduler_step_after_each_update"]:
                sched.step()
            for n in names:
                ours = np.asarray(states[n].value)
                ref = _f32(case["params"][t][n], shapes[n])
                if not np.array_equal(ours.view(np.uint32), ref.view(np.uint32)):
                    bad = int(np.flatnonzero(ours.ravel() != ref.ravel())[0])
                    raise SystemExit(
                        f"{case['name']}: step {t + 1}, {n}[{bad}]: braintools "
                        f"{braintools.__version__} gives {ours.ravel()[bad]!r}, the golden file "
                        f"{ref.ravel()[bad]!r}"
                    )
            total += sum(int(np.prod(shapes[n])) for n in names)
        slow = _slow_weights(opt)
        for n in names:
            ref = _f32(case["slow_final"][n], shapes[n])
            if not np.array_equal(np.asarray(slow[n]).view(np.uint32), ref.view(np.uint32)):
                raise SystemExit(f"{case['name']}: final slow weights of {n} differ")
        print(f"{case['name']:20} {len(case['grads'])} steps: bit-identical")
    print(
        f"braintools {braintools.__version__} (brainstate {brainstate.__version__}, optax "
        f"{optax.__version__}, jax {jax.__version__}) reproduces {GOLDEN.name} bit for bit: "
        f"{len(golden['cases'])} cases, {total} parameter values and the final slow weights"
    )


# -- record -----------------------------------------------------------------------------------


def _braintools_optimizer(example):
    """The documented braintools code of the example."""
    base = example["base"]
    if base["kind"] == "sgd":
        if base["momentum"] is None:
            base_opt = optax.sgd(learning_rate=base["learning_rate"])
        else:
            base_opt = optax.sgd(learning_rate=base["learning_rate"], momentum=base["momentum"])
    else:
        base_opt = optax.adam(learning_rate=base["learning_rate"])
    kwargs = {}
    if example["lr"] is not None:
        lr = example["lr"]
        kwargs["lr"] = braintools.optim.ExponentialLR(base_lr=lr["base_lr"], gamma=lr["gamma"])
    return braintools.optim.Lookahead(
        base_optimizer=base_opt, sync_period=example["sync_period"], alpha=example["alpha"],
        **kwargs,
    )


def set_values(states, tree):
    """Assigns the states' values from a NumPy tree {key: {"weight", "bias"}}."""
    for key, value in tree.items():
        states[key].value = {k: jnp.asarray(v) for k, v in value.items()}


def run_braintools(example, steps_out=None):
    """Trains the example with braintools; returns (losses, params per step as flat lists of
    NumPy arrays in flatopt's order, grads per step likewise, slow weights, states)."""
    model = seed_examples.brainstate_model(brainstate, example)
    states = model.states(brainstate.ParamState)
    assert list(states.keys()) == seed_examples.state_keys(example), list(states.keys())
    set_values(states, seed_examples.init(example))
    optimizer = _braintools_optimizer(example)
    optimizer.register_trainable_weights(model.states(brainstate.ParamState))

    def flat(tree):
        return [np.array(tree[k][n], dtype=F32) for k in tree for n in ("weight", "bias")]

    losses, params, grads = [], [], []
    for _epoch in range(example["epochs"]):
        for batch_x, batch_y in seed_examples.data_loader(example):
            batch_x, batch_y = jnp.asarray(batch_x), jnp.asarray(batch_y)

            def loss_fn():
                logits = model(batch_x)
                return jnp.mean(braintools.metric.softmax_cross_entropy(logits, batch_y))

            losses.append(float(loss_fn()))
            g = brainstate.transform.grad(loss_fn, model.states(brainstate.ParamState))()
            grads.append(flat(g))
            optimizer.update(g)
            params.append(flat({k: s.value for k, s in states.items()}))
    slow = flat(_slow_weights(optimizer))
    return losses, params, grads, slow


def record(out):
    examples = []
    for example in seed_examples.EXAMPLES:
        losses, params, grads, slow = run_braintools(example)
        entry = dict(example)
        entry["steps"] = len(losses)
        entry["losses"] = [float(str(F32(x))) for x in losses]
        if seed_examples.n_params(example) <= seed_examples.FULL_LIMIT:
            entry["grads"] = [[_floats(a) for a in step] for step in grads]
            entry["params"] = [[_floats(a) for a in step] for step in params]
            entry["slow_final"] = [_floats(a) for a in slow]
        else:
            idx = seed_examples.sample_indices(example)
            entry["sample_indices"] = idx
            entry["params"] = [
                [_floats(a.ravel()[i]) for a, i in zip(step, idx)] for step in params
            ]
            entry["slow_final"] = [_floats(a.ravel()[i]) for a, i in zip(slow, idx)]
        examples.append(entry)
        print(f"{example['name']:20} {entry['steps']} steps, loss {losses[0]:.4f} -> "
              f"{losses[-1]:.4f}")
    meta = {
        "generator": "tests/record/braintools_reference.py record",
        "braintools": braintools.__version__,
        "brainstate": brainstate.__version__,
        "optax": optax.__version__,
        "jax": jax.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "mode": "eager (no jax.jit); float32; jax x64 disabled; CPU",
        "float_format": "shortest decimal that reads back as the same float32",
        "note": ("The examples of braintools.optim.Lookahead's documentation, trained with "
                 "its complete example's loop; bindings/python/tests/seed_examples.py "
                 "defines them."),
    }
    with open(out, "w") as f:
        json.dump({"meta": meta, "examples": examples}, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {out} ({os.path.getsize(out) // 1024} KiB)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("verify-golden")
    rec = sub.add_parser("record")
    rec.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    jax.config.update("jax_enable_x64", False)
    if args.cmd == "verify-golden":
        verify_golden()
    else:
        record(args.out)


if __name__ == "__main__":
    main()
