"""Lookahead vs its base optimizer across learning rates: the robustness picture of the
Lookahead paper (Zhang, Lucas, Hinton & Ba, 2019), in small.

A 64-64-10 MLP (tanh, softmax cross-entropy; forward and backward in NumPy) learns the
handwritten digits (examples/data/digits.bin: scikit-learn's copy of the UCI optdigits test
set, 1797 8x8 images) with four optimizers, each over the same grid of learning rates and
several seeds:

    SGD (momentum 0.9)  flatopt.SGD(lr, momentum=0.9)
    Lookahead(SGD)      flatopt.Lookahead(flatopt.sgd(lr, momentum=0.9), sync_period=5, alpha=0.5)
    Adam                flatopt.Adam(lr)
    Lookahead(Adam)     flatopt.Lookahead(flatopt.adam(lr), sync_period=5, alpha=0.5)

The gradients are written into arrays registered once with the parameters
(``register_trainable_weights(params, grads=grads)``), so each ``opt.update()`` is a single
foreign call with nothing marshalled.

It saves examples/python/lookahead_vs_base.png: training-loss curves at one learning rate per
family, and the final test accuracy against the learning rate (mean and range over seeds).

Needs numpy, matplotlib and flatopt (``pip install matplotlib ./bindings/python``); no
scikit-learn and no network. Runs in well under a minute.

    python examples/python/lookahead_vs_base.py [--epochs 30] [--seeds 5] [--out FILE]
"""

import argparse
import os
import struct
import time

import numpy as np

import flatopt

HERE = os.path.dirname(os.path.abspath(__file__))
DIGITS = os.path.join(HERE, "..", "data", "digits.bin")

LRS = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0]
HIDDEN = 64
BATCH = 64
N_TEST = 500
SYNC_PERIOD, ALPHA = 5, 0.5
# The learning rate of the loss-curve panels, per family: a large one, where the base
# optimizer struggles and Lookahead's slow weights steady it.
CURVE_LR = {"SGD": 1.0, "Adam": 0.3}


# ---------------------------------------------------------------------------------------------
# Data


def fnv1a32(data):
    h = 0x811C9DC5
    for b in data:
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


def load_digits(path=DIGITS):
    """(X float32 [n, 64] in [0, 1], y int [n]) from the binary format of
    examples/data/README.md, checksum verified."""
    with open(path, "rb") as f:
        raw = f.read()
    magic, count, rows, cols, classes, maxval, checksum = struct.unpack_from("<8sIBBBBI", raw)
    if magic != b"FODIGIT1":
        raise SystemExit(f"{path}: not a digits file (magic {magic!r})")
    body = raw[20:]
    if len(body) != count * (rows * cols + 1):
        raise SystemExit(f"{path}: {len(body)} bytes after the header, expected {count * 65}")
    if fnv1a32(body) != checksum:
        raise SystemExit(f"{path}: checksum mismatch")
    pixels = np.frombuffer(body, np.uint8, count * rows * cols).reshape(count, rows * cols)
    labels = np.frombuffer(body, np.uint8, count, offset=count * rows * cols)
    assert classes == 10 and labels.max() < classes
    return (pixels / np.float32(maxval)).astype(np.float32), labels.astype(np.int64)


# ---------------------------------------------------------------------------------------------
# The model: x -> tanh(x W1 + b1) -> W2 + b2 -> softmax


def init_params(rng, n_in=64, n_hidden=HIDDEN, n_out=10):
    return {
        "W1": (rng.standard_normal((n_in, n_hidden)) / np.sqrt(n_in)).astype(np.float32),
        "b1": np.zeros(n_hidden, np.float32),
        "W2": (rng.standard_normal((n_hidden, n_out)) / np.sqrt(n_hidden)).astype(np.float32),
        "b2": np.zeros(n_out, np.float32),
    }


def logits_of(p, x):
    return np.tanh(x @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"]


def loss_and_grads(p, g, x, y):
    """Mean cross-entropy of a batch; writes the gradients into the arrays of `g` in place."""
    h = np.tanh(x @ p["W1"] + p["b1"])
    z = h @ p["W2"] + p["b2"]
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    n = len(y)
    loss = -float(logp[np.arange(n), y].mean())
    dz = np.exp(logp)
    dz[np.arange(n), y] -= 1.0
    dz /= np.float32(n)
    np.matmul(h.T, dz, out=g["W2"])
    np.sum(dz, axis=0, out=g["b2"])
    dh = (dz @ p["W2"].T) * (1.0 - h * h)
    np.matmul(x.T, dh, out=g["W1"])
    np.sum(dh, axis=0, out=g["b1"])
    return loss


def accuracy(p, x, y):
    with np.errstate(all="ignore"):
        return float((logits_of(p, x).argmax(axis=1) == y).mean())


# ---------------------------------------------------------------------------------------------
# Training


def make_optimizer(name, lr):
    if name == "SGD":
        return flatopt.SGD(lr=lr, momentum=0.9)
    if name == "Lookahead(SGD)":
        return flatopt.Lookahead(
            flatopt.sgd(lr, momentum=0.9), sync_period=SYNC_PERIOD, alpha=ALPHA
        )
    if name == "Adam":
        return flatopt.Adam(lr=lr)
    if name == "Lookahead(Adam)":
        return flatopt.Lookahead(flatopt.adam(lr), sync_period=SYNC_PERIOD, alpha=ALPHA)
    raise ValueError(name)


def train(name, lr, seed, data, epochs):
    xtr, ytr, xte, yte = data
    rng = np.random.default_rng(seed)
    params = init_params(rng)
    grads = {k: np.zeros_like(v) for k, v in params.items()}
    opt = make_optimizer(name, lr)
    opt.register_trainable_weights(params, grads=grads)
    batches = len(xtr) // BATCH  # 20 batches per epoch: a multiple of the sync period
    curve = []
    for _ in range(epochs):
        order = rng.permutation(len(xtr))
        total = 0.0
        for b in range(batches):
            idx = order[b * BATCH:(b + 1) * BATCH]
            with np.errstate(all="ignore"):
                total += loss_and_grads(params, grads, xtr[idx], ytr[idx])
            opt.update()  # one foreign call; non-finite gradients are skipped and counted
        curve.append(total / batches)
    # The last update was a sync, so the params equal the slow weights for Lookahead.
    return np.array(curve), accuracy(params, xte, yte), opt.skipped_steps


def save_png(fig, path, dpi=100):
    """Saves a 256-colour PNG (a third of the size of matplotlib's RGBA output for line
    plots, so the figure is cheap to keep in the repository)."""
    import io

    from PIL import Image  # a dependency of matplotlib

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    buf.seek(0)
    img = Image.open(buf).convert("RGB").quantize(colors=256, dither=Image.Dither.NONE)
    img.save(path, optimize=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--out", default=os.path.join(HERE, "lookahead_vs_base.png"))
    args = ap.parse_args()

    x, y = load_digits()
    perm = np.random.default_rng(1234).permutation(len(x))
    te, tr = perm[:N_TEST], perm[N_TEST:]
    data = (x[tr], y[tr], x[te], y[te])
    names = ["SGD", "Lookahead(SGD)", "Adam", "Lookahead(Adam)"]

    t0 = time.time()
    acc = {n: np.zeros((len(LRS), args.seeds)) for n in names}
    curves = {}
    skipped = {n: 0 for n in names}
    for n in names:
        for i, lr in enumerate(LRS):
            for s in range(args.seeds):
                curve, a, sk = train(n, lr, s, data, args.epochs)
                acc[n][i, s] = a
                skipped[n] += sk
                family = "SGD" if "SGD" in n else "Adam"
                if lr == CURVE_LR[family]:
                    curves.setdefault(n, []).append(curve)
    elapsed = time.time() - t0

    steps = args.epochs * (len(tr) // BATCH)
    print(f"digits: {len(tr)} train / {len(te)} test; MLP 64-{HIDDEN}-10; batch {BATCH}; "
          f"{args.epochs} epochs ({steps} updates); {args.seeds} seeds; {elapsed:.1f} s")
    print("final test accuracy (mean over seeds)")
    print(f"{'lr':>8} " + " ".join(f"{n:>16}" for n in names))
    for i, lr in enumerate(LRS):
        print(f"{lr:>8g} " + " ".join(f"{acc[n][i].mean():>16.3f}" for n in names))
    for n in names:
        if skipped[n]:
            print(f"{n}: {skipped[n]} updates skipped for non-finite gradients (diverged runs)")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"SGD": "#1f77b4", "Lookahead(SGD)": "#ff7f0e", "Adam": "#2ca02c",
              "Lookahead(Adam)": "#d62728"}
    styles = {"SGD": "--", "Lookahead(SGD)": "-", "Adam": "--", "Lookahead(Adam)": "-"}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.3), gridspec_kw={"width_ratios": [1, 1, 1.35]})
    epochs = np.arange(1, args.epochs + 1)
    for ax, family in zip(axes[:2], ["SGD", "Adam"]):
        for n in names:
            if (family == "SGD") != ("SGD" in n):
                continue
            c = np.array(curves[n])
            ax.plot(epochs, np.nanmean(c, axis=0), styles[n], color=colors[n], lw=2, label=n)
            ax.fill_between(epochs, np.nanmin(c, axis=0), np.nanmax(c, axis=0),
                            color=colors[n], alpha=0.15, lw=0)
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel("training loss (cross-entropy)")
        mom = ", momentum 0.9" if family == "SGD" else ""
        ax.set_title(f"{family}{mom}: lr = {CURVE_LR[family]:g}")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend()
    ax = axes[2]
    for n in names:
        m = acc[n].mean(axis=1)
        ax.plot(LRS, m, styles[n], marker="o", color=colors[n], lw=2, label=n)
        ax.fill_between(LRS, acc[n].min(axis=1), acc[n].max(axis=1), color=colors[n],
                        alpha=0.15, lw=0)
    ax.set_xscale("log")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("learning rate")
    ax.set_ylabel(f"test accuracy after {args.epochs} epochs")
    ax.set_title("Robustness to the learning rate")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="lower center")
    fig.suptitle(
        f"Lookahead (k = {SYNC_PERIOD}, alpha = {ALPHA}) vs its base optimizer: MLP on the "
        f"digits, {args.seeds} seeds (line: mean, band: min-max)", fontsize=11,
    )
    fig.tight_layout()
    save_png(fig, args.out)
    print(f"saved {args.out} ({os.path.getsize(args.out) // 1024} KB)")


if __name__ == "__main__":
    main()
