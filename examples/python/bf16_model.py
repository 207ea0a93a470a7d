"""A model kept in bfloat16, trained through flatopt's float32 master weights, in NumPy.

The digits MLP of lookahead_vs_base.py (64-64-10, tanh, softmax) with its weights held as
``ml_dtypes.bfloat16`` arrays, as a bf16 model keeps them: the forward and backward passes read
the bf16 weights (widened to float32 for NumPy's matrix products) and hand over bf16 gradients.
``flatopt.Adam`` holds float32 master weights and its state; in its one pass per step it widens
the bf16 gradients, updates the masters, and writes them rounded to nearest even into the
model's bf16 arrays (``register_trainable_weights(masters, grads=..., copies=...)``,
docs/numerics.md, "16-bit floats"). The same training in float32 (the same initial weights,
the same batches) gives the accuracy to reach. (examples/torch/train_amp.py does the same with
a PyTorch model: ``model.to(torch.bfloat16)``.)

Needs numpy, ml_dtypes (``pip install "./bindings/python[mixed]"``) and flatopt. Runs in a few
seconds; exits with status 1 if the bf16 model ends more than one point of test accuracy
below the float32 one, averaged over the seeds.

    python examples/python/bf16_model.py [--seeds 3] [--epochs 40]
"""

import argparse
import os
import sys

import numpy as np

try:
    import ml_dtypes
except ImportError as e:  # the mixed-precision extra
    print(f"skipped: ml_dtypes is not installed ({e}); pip install \"./bindings/python[mixed]\"")
    sys.exit(0)

import flatopt

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from lookahead_vs_base import (  # noqa: E402
    BATCH, N_TEST, accuracy, init_params, load_digits, loss_and_grads,
)

BF16 = ml_dtypes.bfloat16
LR = 1e-2


def train(seed, data, epochs, bf16):
    """Test accuracy and final training loss of one run; the model in bf16 or in float32."""
    xtr, ytr, xte, yte = data
    rng = np.random.default_rng(seed)
    init = init_params(rng)
    opt = flatopt.Adam(lr=LR)
    if bf16:
        masters = {k: v.copy() for k, v in init.items()}
        model = {k: np.zeros(v.shape, BF16) for k, v in init.items()}  # written at registration
        grads = {k: np.zeros(v.shape, BF16) for k, v in init.items()}
        opt.register_trainable_weights(masters, grads=grads, copies=model)
    else:
        model = init
        grads = {k: np.zeros_like(v) for k, v in init.items()}
        opt.register_trainable_weights(model, grads=grads)
    g32 = {k: np.zeros(v.shape, np.float32) for k, v in init.items()}
    batches = len(xtr) // BATCH
    loss = float("nan")
    for _ in range(epochs):
        order = rng.permutation(len(xtr))
        total = 0.0
        for b in range(batches):
            idx = order[b * BATCH:(b + 1) * BATCH]
            # What the model computes with: its own weights (bf16 widened exactly to f32).
            weights = {k: v.astype(np.float32) for k, v in model.items()}
            with np.errstate(all="ignore"):
                total += loss_and_grads(weights, g32, xtr[idx], ytr[idx])
            for k in grads:
                grads[k][...] = g32[k]  # bf16 gradients (rounded to nearest) or f32 as they are
            opt.update()
        loss = total / batches
    if bf16:
        # The model's weights are the masters rounded to nearest even, after every step.
        for k in model:
            assert np.array_equal(model[k].view(np.uint16),
                                  masters[k].astype(BF16).view(np.uint16)), k
    weights = {k: v.astype(np.float32) for k, v in model.items()}
    return accuracy(weights, xte, yte), loss


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=40)
    args = ap.parse_args()
    x, y = load_digits()
    data = (x[N_TEST:], y[N_TEST:], x[:N_TEST], y[:N_TEST])
    print(f"digits MLP, flatopt.Adam(lr={LR}), {args.epochs} epochs, batch {BATCH}; "
          f"test accuracy on {N_TEST} held-out digits (final training loss)")
    rows = []
    for seed in range(args.seeds):
        acc32, loss32 = train(seed, data, args.epochs, bf16=False)
        acc16, loss16 = train(seed, data, args.epochs, bf16=True)
        rows.append((acc32, acc16))
        print(f"  seed {seed}: float32 model {acc32:.3f} ({loss32:.4f}), "
              f"bf16 model with f32 masters {acc16:.3f} ({loss16:.4f})")
    a32, a16 = (float(np.mean(c)) for c in zip(*rows))
    ok = a16 >= a32 - 0.01
    print(f"mean: float32 {a32:.4f}, bf16 {a16:.4f}: "
          f"{'reaches' if ok else 'DOES NOT reach'} the float32 accuracy (within 0.01)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
