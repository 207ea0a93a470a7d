"""Training quality with compressed optimizer state (issue 16): f32 moments against bf16
(round to nearest and stochastic rounding) and the 8-bit blockwise code, on two tasks.

1. digits (NumPy): the 64-64-10 tanh MLP of lookahead_vs_base.py on the handwritten digits
   (examples/data/digits.bin), flatopt.Adam, batch 64, 40 epochs (800 updates).
2. charlm (PyTorch): a character-level language model (Bengio-style MLP: 16 characters of
   context, embeddings of 24, two tanh layers of 256, softmax over the byte vocabulary; 0.2 M
   parameters) on the repository's own Markdown documentation (README.md, ARCHITECTURE.md,
   docs/*.md as of commit a5b5220, read with git; a held-out tenth for validation),
   flatopt.AdamW, batch 64, 3000 updates.
3. diagnose (NumPy): the digits runs again with Adam written in NumPy and a model of the 8-bit
   code applied to m, to v or to both: which moment moves the 8-bit result away from f32's,
   how far the held v drifts from an f32 v, rounding to nearest against stochastic rounding,
   and the former code of v (3 mantissa bits of v itself, which drifted by more than 1 %)
   against the current one (5 mantissa bits of its square root).

Each task also runs f32 once more per seed with other batches (same initial weights): how much
the final loss moves with the order of the data alone, against which the 1 % target is set.

When bitsandbytes (and torch) are installed, its CPU Adam8bit / AdamW8bit runs on both tasks too,
same weights and batches (8-bit state for every tensor, min_8bit_size=0, as flatopt's int8
holds every buffer; its blocks are 256 elements with one f32 absmax each, as flatopt's).

Both tasks use Adam's defaults (betas 0.9 / 0.999, eps 1e-8), 50 warm-up updates and a cosine
decay of the learning rate to a tenth (so the final losses are not dominated by the noise
of a large step). Every precision of one seed starts from the same initial weights and sees
the same batches: the runs are paired, and the per-seed ratio final_loss(precision) /
final_loss(f32) isolates the state's precision. The "final loss" is the loss over a fixed
evaluation set after the last update (digits: the whole training set; charlm: 8192 fixed
contexts of the training text, and of the held-out text).

Writes examples/python/state_quality.{json,md,png}. Needs numpy and matplotlib; charlm needs
torch (skipped with the reason otherwise); bitsandbytes is optional. With the default 5 seeds it
runs in about 10 minutes on two quiet cores, half of them in bitsandbytes' CPU steps (--quick:
seconds, no files written unless --out is given; --render JSON redraws a saved run).

    python examples/python/state_quality.py [--seeds 5] [--tasks digits,diagnose,charlm]
"""

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

import flatopt

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
from lookahead_vs_base import init_params, load_digits, loss_and_grads, save_png  # noqa: E402

# name -> keyword arguments of the flatopt optimizer class (state_seed is added per seed)
PRECISIONS = {
    "f32": dict(state_dtype="float32"),
    "bf16 nearest": dict(state_dtype="bfloat16", state_rounding="nearest"),
    "bf16 stochastic": dict(state_dtype="bfloat16", state_rounding="stochastic"),
    "int8": dict(state_dtype="int8"),
}
BNB = "bitsandbytes 8-bit"
# Optimizer state bytes per parameter, Adam (m and v): f32 4 + 4; bf16 2 + 2; 8-bit 1 + 1 plus
# one f32 scale per 256-element block of each buffer (docs/numerics.md, "Compressed state").
# bitsandbytes' blockwise 8-bit state has the same layout (256-element blocks, one f32 absmax).
STATE_BYTES = {"f32": 8.0, "bf16 nearest": 4.0, "bf16 stochastic": 4.0,
               "int8": 2 + 2 * 4 / 256, BNB: 2 + 2 * 4 / 256}
TARGET = 0.01  # issue 16: final loss within 1 % (relative) of the f32 run
WARMUP = 50


def lr_at(step, steps, peak):
    """Linear warm-up over WARMUP updates, then cosine decay from peak to peak / 10."""
    if step < WARMUP:
        return peak * (step + 1) / WARMUP
    t = (step - WARMUP) / max(1, steps - WARMUP - 1)
    return peak * (0.1 + 0.45 * (1.0 + np.cos(np.pi * t)))


def flatopt_updater(cls, precision, seed, params, grads, **kw):
    """update(lr): one step of flatopt's `cls` holding its state in `precision` over the
    arrays `params` with the gradients written into the arrays `grads` (registered once)."""
    options = dict(PRECISIONS[precision])
    if options.get("state_rounding") == "stochastic":
        options["state_seed"] = seed
    opt = cls(**kw, **options)
    opt.register_trainable_weights(params, grads=grads)

    def update(lr):
        opt.current_lr = lr
        opt.update()
        assert opt.skipped_steps == 0
    return update


def bnb_updater(cls_name, params, grads, **kw):
    """update(lr): one step of bitsandbytes' `cls_name` (Adam8bit, AdamW8bit) over the NumPy
    arrays `params` / `grads` (torch tensors sharing their memory), every tensor's state in
    8 bits (min_8bit_size=0)."""
    import bitsandbytes as bnb
    import torch

    tensors = [torch.nn.Parameter(torch.from_numpy(p)) for p in params]
    for t, g in zip(tensors, grads):
        t.grad = torch.from_numpy(g)
    opt = getattr(bnb.optim, cls_name)(tensors, min_8bit_size=0, **kw)

    def update(lr):
        opt.param_groups[0]["lr"] = lr
        with torch.no_grad():
            opt.step()
    return update


# ---------------------------------------------------------------------------------------------
# The diagnosis: Adam in NumPy with the 8-bit code of docs/numerics.md ("8-bit blockwise code")
# applied to m, to v or to both after each update, to find which moment moves the result and
# whether a stochastic rounding of the codes (as bf16 state has) would remove the drift. A
# model of the library's int8 state, not the library: it reproduces flatopt's int8 runs to a
# fraction of their difference from f32 (the report compares them).

def q8_model(x, signed, rng=None, former=False):
    """x through the 8-bit blockwise code of docs/numerics.md (256-element blocks, scale = the
    block's largest magnitude): signed, 3 mantissa bits of the value (below half the smallest
    code, 0); unsigned, 5 mantissa bits of the value's square root (a positive value below the
    smallest code goes to it), or with `former` the code before it: 3 mantissa bits of the value
    itself, down to 1.5 * 2^-32. Rounded to nearest, or stochastically when `rng` is given."""
    flat = x.ravel().astype(np.float64)
    blocks = np.concatenate([flat, np.zeros(-len(flat) % 256)]).reshape(-1, 256)
    scale = np.abs(blocks).max(axis=1, keepdims=True)
    q = np.abs(blocks) / np.where(scale > 0, scale, 1.0)
    root = not signed and not former
    y = np.sqrt(q) if root else q
    bits, lo = ((5, 1.125 * 2.0**-8) if root else
                (3, 1.375 * 2.0**-16 if signed else 1.5 * 2.0**-32))
    frac, exp = np.frexp(y)  # y = frac 2^exp, frac in [0.5, 1): bits + 1 significant bits kept
    f = frac * 2.0 ** (bits + 1)
    if rng is None:
        r = np.ldexp(np.rint(f) / 2.0 ** (bits + 1), exp)
        small = np.where(y >= lo / 2, lo, 0.0)
    else:
        r = np.ldexp((np.floor(f) + (rng.random(f.shape) < f - np.floor(f))) / 2.0 ** (bits + 1),
                     exp)
        small = np.where(rng.random(y.shape) * lo < y, lo, 0.0)
    if root:
        small = np.where(y > 0, lo, 0.0)
    r = np.minimum(np.where(r < lo, small, r), 1.0)
    out = np.sign(blocks) * (r * r if root else r) * scale
    return out.ravel()[:len(flat)].reshape(x.shape).astype(np.float32)


# name -> (m held in 8 bits, v held in 8 bits, rounded stochastically, v in the former code)
MODELS = {
    "model: f32": (False, False, False, False),
    "model: 8-bit m and v (flatopt's int8)": (True, True, True, False),
    "model: 8-bit m only": (True, False, True, False),
    "model: 8-bit v only": (False, True, True, False),
    "model: 8-bit m and v, rounded to nearest": (True, True, False, False),
    "model: 8-bit m and v, the former code of v (3 bits of v)": (True, True, True, True),
}


class ModelAdam:
    """Adam (betas 0.9 / 0.999, eps 1e-8) over NumPy arrays with its moments held as MODELS
    says; keeps a shadow v in f32 (same gradients) to measure how far the held v drifted."""

    def __init__(self, model, params, grads, seed):
        self.quant_m, self.quant_v, stochastic, self.former = MODELS[model]
        self.rng = np.random.default_rng(seed) if stochastic else None
        self.params, self.grads, self.t = params, grads, 0
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]
        self.shadow = [np.zeros_like(p) for p in params]

    def __call__(self, lr):
        self.t += 1
        b1, b2, eps, t = 0.9, 0.999, 1e-8, self.t
        for p, g, m, v, sh in zip(self.params, self.grads, self.m, self.v, self.shadow):
            m[...] = b1 * m + (1 - b1) * g
            v[...] = b2 * v + (1 - b2) * g * g
            sh[...] = b2 * sh + (1 - b2) * g * g
            p -= lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
            if self.quant_m:
                m[...] = q8_model(m, True, self.rng)
            if self.quant_v:
                v[...] = q8_model(v, False, self.rng, self.former)

    def v_ratio(self):
        """Percentiles 10, 50, 90 of held v / f32 v over the elements with a nonzero v."""
        ratios = np.concatenate([(v / np.where(sh > 0, sh, 1.0))[sh > 0]
                                 for v, sh in zip(self.v, self.shadow)])
        return np.percentile(ratios, [10, 50, 90]).tolist()


# ---------------------------------------------------------------------------------------------
# Task 1: the digits MLP (NumPy)


class Digits:
    name = "digits"
    epochs, batch, peak_lr = 40, 64, 3e-3
    title = "digits MLP 64-64-10 (NumPy), Adam"

    def __init__(self, quick):
        if quick:
            self.epochs = 6
        x, y = load_digits()
        perm = np.random.default_rng(1234).permutation(len(x))
        self.xtr, self.ytr = x[perm[500:]], y[perm[500:]]
        self.xte, self.yte = x[perm[:500]], y[perm[:500]]
        self.per_epoch = len(self.xtr) // self.batch
        self.steps = self.epochs * self.per_epoch
        self.eval_every = self.per_epoch
        self.describe = (f"{len(self.xtr)} training / {len(self.xte)} test images, batch "
                         f"{self.batch}, {self.epochs} epochs = {self.steps} updates, Adam peak "
                         f"lr {self.peak_lr:g}; final loss: the whole training set")

    def run(self, precision, seed, order_seed=None):
        rng = np.random.default_rng(seed)
        params = init_params(rng)
        if order_seed is not None:  # the same initial weights, other batches
            rng = np.random.default_rng(order_seed)
        grads = {k: np.zeros_like(v) for k, v in params.items()}
        scratch = {k: np.zeros_like(v) for k, v in params.items()}
        arrays = [params[k] for k in params], [grads[k] for k in params]
        if precision == BNB:
            update = bnb_updater("Adam8bit", *arrays, lr=self.peak_lr)
        elif precision in MODELS:
            update = self.model = ModelAdam(precision, *arrays, seed)
        else:
            update = flatopt_updater(flatopt.Adam, precision, seed, *arrays, lr=self.peak_lr)

        def evaluate():
            return (loss_and_grads(params, scratch, self.xtr, self.ytr),
                    loss_and_grads(params, scratch, self.xte, self.yte))

        curve, step = [(0, *evaluate())], 0
        for _ in range(self.epochs):
            order = rng.permutation(len(self.xtr))
            for b in range(self.per_epoch):
                idx = order[b * self.batch:(b + 1) * self.batch]
                loss_and_grads(params, grads, self.xtr[idx], self.ytr[idx])
                update(lr_at(step, self.steps, self.peak_lr))
                step += 1
            curve.append((step, *evaluate()))
        return curve


# ---------------------------------------------------------------------------------------------
# Task 2: a character-level language model (PyTorch)


CORPUS = ["README.md", "ARCHITECTURE.md", "docs/checkpoint-format.md", "docs/numerics.md",
          "docs/torch.md"]
# The documents as they were at this commit (the docs keep changing; the committed results were
# computed on these bytes), read with git; without git or that commit, the working tree's.
CORPUS_COMMIT = "a5b522074ceaab5372ce39632cf5d4d3973a7938"


def read_corpus():
    """(bytes, where they came from)."""
    import subprocess

    try:
        text = b"".join(subprocess.run(["git", "-C", ROOT, "show", f"{CORPUS_COMMIT}:{f}"],
                                       check=True, capture_output=True).stdout for f in CORPUS)
        return text, f"at commit {CORPUS_COMMIT[:7]}"
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"charlm: the corpus of commit {CORPUS_COMMIT[:7]} is not readable ({e}); using "
              "the working tree's documents: the numbers will differ from the committed ones")
        return b"".join(open(os.path.join(ROOT, f), "rb").read() for f in CORPUS), "working tree"


class CharLM:
    name = "charlm"
    context, embed, hidden = 16, 24, 256
    steps, batch, peak_lr, weight_decay = 3000, 64, 3e-3, 0.01
    eval_every, eval_size = 100, 8192

    def __init__(self, quick):
        import hashlib

        import torch

        self.torch = torch
        torch.set_num_threads(1)
        if quick:
            self.steps, self.eval_every, self.eval_size = 200, 50, 1024
        text, source = read_corpus()
        self.sha256 = hashlib.sha256(text).hexdigest()
        vocab, ids = np.unique(np.frombuffer(text, np.uint8), return_inverse=True)
        self.vocab = len(vocab)
        cut = len(ids) * 9 // 10
        self.train_ids, self.val_ids = ids[:cut].astype(np.int64), ids[cut:].astype(np.int64)
        rng = np.random.default_rng(999)
        self.eval_sets = [self._contexts(ids, rng.integers(0, len(ids) - self.context,
                                                           self.eval_size))
                          for ids in (self.train_ids, self.val_ids)]
        self.title = ("char-level LM (PyTorch, 16-char context MLP, "
                      f"{self.n_params() / 1e6:.2f} M params), AdamW")
        self.describe = (f"corpus: {' + '.join(CORPUS)} {source} ({len(text)} bytes, sha256 "
                         f"{self.sha256[:16]}...; vocabulary {self.vocab} bytes; last tenth "
                         f"held out), batch {self.batch}, {self.steps} updates, AdamW peak lr "
                         f"{self.peak_lr:g}, weight decay {self.weight_decay:g}; final loss: "
                         f"{self.eval_size} fixed training contexts")

    def _contexts(self, ids, starts):
        torch = self.torch
        window = starts[:, None] + np.arange(self.context + 1)
        block = torch.from_numpy(ids[window])
        return block[:, :-1], block[:, -1]

    def model(self, seed):
        nn = self.torch.nn
        self.torch.manual_seed(seed)
        return nn.Sequential(
            nn.Embedding(self.vocab, self.embed), nn.Flatten(),
            nn.Linear(self.context * self.embed, self.hidden), nn.Tanh(),
            nn.Linear(self.hidden, self.hidden), nn.Tanh(),
            nn.Linear(self.hidden, self.vocab),
        )

    def n_params(self):
        return sum(p.numel() for p in self.model(0).parameters())

    def run(self, precision, seed, order_seed=None):
        torch = self.torch
        model = self.model(seed)
        params = list(model.parameters())
        for p in params:
            p.grad = torch.zeros_like(p)
        # The tensors' memory, shared: backward() accumulates into the same .grad arrays.
        arrays = [p.detach().numpy() for p in params], [p.grad.numpy() for p in params]
        addresses = [p.grad.data_ptr() for p in params]
        kw = dict(lr=self.peak_lr, weight_decay=self.weight_decay)
        if precision == BNB:
            update = bnb_updater("AdamW8bit", *arrays, **kw)
        else:
            update = flatopt_updater(flatopt.AdamW, precision, seed, *arrays, **kw)

        loss_fn = torch.nn.functional.cross_entropy

        def evaluate():
            with torch.no_grad():
                return tuple(float(loss_fn(model(x), y)) for x, y in self.eval_sets)

        rng = np.random.default_rng(seed if order_seed is None else order_seed)
        curve = [(0, *evaluate())]
        for step in range(self.steps):
            x, y = self._contexts(self.train_ids, rng.integers(
                0, len(self.train_ids) - self.context, self.batch))
            model.zero_grad(set_to_none=False)
            loss_fn(model(x), y).backward()
            assert [p.grad.data_ptr() for p in params] == addresses
            update(lr_at(step, self.steps, self.peak_lr))
            if (step + 1) % self.eval_every == 0:
                curve.append((step + 1, *evaluate()))
        return curve


# ---------------------------------------------------------------------------------------------
# Running, summarizing, plotting


def bitsandbytes_status():
    """(True, version) or (False, why not)."""
    try:
        import bitsandbytes as bnb
        import torch

        p = torch.nn.Parameter(torch.ones(512))
        p.grad = torch.ones(512)
        bnb.optim.AdamW8bit([p], lr=1e-3, min_8bit_size=0).step()
        return True, bnb.__version__
    except Exception as e:  # noqa: BLE001: any failure means "not available here"
        return False, f"{type(e).__name__}: {str(e).strip().splitlines()[-1:] or ''}"


def summarize(runs, names):
    """Per precision: final losses per seed, their ratio to f32's of the same seed."""
    f32 = np.array([c[-1][1] for c in runs["f32"]])
    out = {}
    for name in names:
        final = np.array([c[-1][1] for c in runs[name]])
        held = np.array([c[-1][2] for c in runs[name]])
        rel = final / f32 - 1.0
        out[name] = dict(
            state_bytes_per_element=STATE_BYTES[name],
            final_loss=final.tolist(), final_heldout_loss=held.tolist(),
            mean_final_loss=float(final.mean()), mean_final_heldout_loss=float(held.mean()),
            relative_to_f32=rel.tolist(), mean_relative_to_f32=float(rel.mean()),
            max_abs_relative_to_f32=float(np.abs(rel).max()),
            within_target=bool(np.abs(rel).max() <= TARGET),
        )
    return out


def run_task(task, seeds, names):
    runs, seconds = {}, {}
    for name in names:
        t0 = time.time()
        runs[name] = [task.run(name, s) for s in range(seeds)]
        seconds[name] = time.time() - t0
        final = [c[-1][1] for c in runs[name]]
        print(f"  {name:>24}: final loss {np.mean(final):.5f} "
              f"(seeds {', '.join(f'{v:.5f}' for v in final)}) in {seconds[name]:.1f} s",
              flush=True)
    return runs, seconds


def table(summary, f32_spread, other_order=None):
    lines = [
        "| state | bytes / param | final loss (mean) | vs f32, per seed | worst | within 1 % "
        "| held-out loss (mean) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, s in summary.items():
        per_seed = ", ".join(f"{100 * r:+.2f} %" for r in s["relative_to_f32"])
        ok = "—" if name == "f32" else ("yes" if s["within_target"] else "**no**")
        lines.append(
            f"| {name} | {s['state_bytes_per_element']:.2f} | {s['mean_final_loss']:.4f} | "
            f"{per_seed} | {100 * s['max_abs_relative_to_f32']:.2f} % | {ok} | "
            f"{s['mean_final_heldout_loss']:.4f} |")
    lines.append("")
    lines.append(f"Seed-to-seed spread of the f32 final loss (standard deviation / mean): "
                 f"{100 * f32_spread:.2f} %.")
    if other_order is not None:
        lines.append("")
        lines.append("f32 again with the same initial weights and other batches (another "
                     "order of the data) vs f32, per seed: "
                     + ", ".join(f"{100 * r:+.2f} %" for r in other_order)
                     + f" (largest {100 * np.abs(other_order).max():.2f} %). Where this "
                     "exceeds 1 %, the order of the data alone moves the final loss more than "
                     "the target allows: the target is meaningful for paired runs (same "
                     "weights, same batches), as in the table, not across data orders.")
    return lines


COLORS = {"f32": "#000000", "bf16 nearest": "#d62728", "bf16 stochastic": "#1f77b4",
          "int8": "#2ca02c", BNB: "#ff7f0e"}
STYLES = {"f32": "-", "bf16 nearest": "--", "bf16 stochastic": "-", "int8": "-", BNB: ":"}


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(results["tasks"].values())
    fig, axes = plt.subplots(2, len(tasks), figsize=(6.5 * len(tasks), 7.5), squeeze=False,
                             gridspec_kw={"height_ratios": [1.6, 1]})
    for col, task in enumerate(tasks):
        f32 = np.array(task["curves"]["f32"])  # [seed, point, (step, train, held-out)]
        for name, curves in task["curves"].items():
            c = np.array(curves)
            steps = c[0, :, 0]
            label = f"{name} ({STATE_BYTES[name]:.2f} B/param)"
            kw = dict(color=COLORS[name], ls=STYLES[name], lw=1.8)
            axes[0, col].plot(steps, c[:, :, 1].mean(axis=0), label=label, **kw)
            rel = 100 * (c[:, 1:, 1] / f32[:, 1:, 1] - 1.0)
            axes[1, col].plot(steps[1:], rel.mean(axis=0), **kw)
            if name != "f32":
                axes[1, col].fill_between(steps[1:], rel.min(axis=0), rel.max(axis=0),
                                          color=COLORS[name], alpha=0.12, lw=0)
        axes[0, col].set_yscale("log")
        axes[0, col].set_ylabel("training loss (fixed evaluation set)")
        axes[0, col].set_title(task["title"], fontsize=10)
        axes[0, col].legend(fontsize=9)
        axes[1, col].axhspan(-100 * TARGET, 100 * TARGET, color="#999999", alpha=0.2, lw=0)
        axes[1, col].set_ylabel("loss vs f32, same seed (%)")
        axes[1, col].set_xlabel("update")
        for ax in axes[:, col]:
            ax.grid(True, which="major", alpha=0.3)
    fig.suptitle(f"Compressed Adam state: mean over {results['seeds']} seeds (band: min-max "
                 "over seeds; grey: the 1 % target)", fontsize=11)
    fig.tight_layout()
    save_png(fig, path)


def diagnose(task, seeds):
    """The MODELS variants on the digits task: final losses, and held v / f32 v at the end."""
    out = {}
    for name in MODELS:
        finals, ratios = [], []
        for seed in range(seeds):
            finals.append(task.run(name, seed)[-1][1])
            ratios.append(task.model.v_ratio())
        out[name] = dict(final_loss=finals, v_ratio_p10_p50_p90=ratios)
        print(f"  {name:>40}: final loss {np.mean(finals):.5f}; held v / f32 v at the end "
              f"(p10, median, p90) {np.round(np.mean(ratios, axis=0), 3).tolist()}", flush=True)
    return out


def diagnosis_lines(diag, digits):
    base = np.array(diag["model: f32"]["final_loss"])
    lines = [
        "## Diagnosis: which moment drifts in 8 bits (digits, a NumPy model of the code)",
        "",
        "Adam in NumPy with the 8-bit code of docs/numerics.md applied to m, v or both after "
        "each update (`q8_model` in the script; rounded stochastically unless said, as the "
        "library's default), same weights and batches as above; \"held v / "
        "f32 v\": each element's stored v over the v an f32 Adam accumulates from the same "
        "gradients, percentiles over the elements at the end (mean over seeds).",
        "",
        "| variant | final loss (mean) | vs model f32, per seed | held v / f32 v: p10, median, p90 |",
        "|---|---|---|---|",
    ]
    for name, d in diag.items():
        final = np.array(d["final_loss"])
        rel = ", ".join(f"{100 * r:+.2f} %" for r in final / base - 1.0)
        ratio = ", ".join(f"{r:.2f}" for r in np.mean(d["v_ratio_p10_p50_p90"], axis=0))
        lines.append(f"| {name[len('model: '):]} | {final.mean():.4f} | {rel} | {ratio} |")
    if digits and "int8" in digits["summary"]:
        lib = np.array(digits["summary"]["int8"]["final_loss"])
        model = np.array(diag["model: 8-bit m and v (flatopt's int8)"]["final_loss"])
        lines += ["", "The model against the library: flatopt's int8 final loss / the model's "
                  "- 1, per seed: " + ", ".join(f"{100 * r:+.2f} %" for r in lib / model - 1.0)
                  + "."]
    return lines + [""]


def write_markdown(results, path):
    lines = [
        "# Training quality with compressed optimizer state",
        "",
        "Generated by `examples/python/state_quality.py` (issue 16, \"Proof / Quality\"); "
        "figure: `state_quality.png`, numbers: `state_quality.json`.",
        "",
        f"flatopt {results['flatopt']}, {results['python']}, numpy {results['numpy']}, "
        f"torch {results.get('torch', '-')}, bitsandbytes {results['bitsandbytes']}; "
        f"{results['seeds']} seeds; total {results['seconds']:.0f} s on {results['machine']}.",
        "",
        "\"vs f32, per seed\": final loss / final loss of the f32 run of the same seed (same "
        "initial weights, same batches) - 1. Target: within 1 % for bf16 and 8-bit.",
        "",
    ]
    for task in results["tasks"].values():
        lines += [f"## {task['title']}", "", task["describe"] + ".", ""]
        lines += table(task["summary"], task["f32_spread"], task.get("f32_other_order"))
        lines += [""]
    if "diagnosis" in results:
        lines += diagnosis_lines(results["diagnosis"], results["tasks"].get("digits"))
    if results.get("notes"):
        lines += ["## Notes", ""] + results["notes"] + [""]
    with open(path, "w") as f:
        f.write("\n".join(lines))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--tasks", default="digits,diagnose,charlm")
    ap.add_argument("--quick", action="store_true", help="short runs, nothing written")
    ap.add_argument("--out", default=None,
                    help="output prefix (default examples/python/state_quality, not with --quick)")
    ap.add_argument("--render", metavar="JSON", help="rewrite the .md and .png of a saved run")
    args = ap.parse_args()
    out = args.out or (None if args.quick else os.path.join(HERE, "state_quality"))
    if args.render:
        with open(args.render) as f:
            results = json.load(f)
        base = os.path.splitext(args.render)[0]
        write_markdown(results, base + ".md")
        plot(results, base + ".png")
        print(f"wrote {base}.md, {base}.png")
        return

    bnb_ok, bnb_info = bitsandbytes_status()
    print(f"bitsandbytes: {bnb_info if bnb_ok else 'not used: ' + bnb_info}")
    results = dict(seeds=args.seeds, flatopt=flatopt.library_version, numpy=np.__version__,
                   python=f"Python {platform.python_version()}",
                   machine=f"{platform.machine()}, {os.cpu_count()} CPUs",
                   bitsandbytes=bnb_info if bnb_ok else f"not available ({bnb_info})",
                   tasks={}, notes=[])
    t0 = time.time()
    for name in args.tasks.split(","):
        if name == "diagnose":
            print("diagnose: Adam with a NumPy model of the 8-bit code, digits", flush=True)
            results["diagnosis"] = diagnose(Digits(args.quick), args.seeds)
            continue
        if name == "digits":
            task = Digits(args.quick)
        elif name == "charlm":
            try:
                import torch
            except ImportError as e:
                print(f"charlm: skipped, PyTorch is not installed ({e})")
                results["notes"].append(f"charlm skipped: PyTorch is not installed ({e}).")
                continue
            results["torch"] = torch.__version__
            task = CharLM(args.quick)
        else:
            raise SystemExit(f"unknown task {name!r} (digits, diagnose, charlm)")
        names = list(PRECISIONS) + ([BNB] if bnb_ok else [])
        print(f"{task.name}: {task.title}\n  {task.describe}", flush=True)
        runs, seconds = run_task(task, args.seeds, names)
        f32 = np.array([c[-1][1] for c in runs["f32"]])
        other = np.array([task.run("f32", s, order_seed=1000 + s)[-1][1]
                          for s in range(args.seeds)])
        results["tasks"][name] = dict(
            f32_other_order=(other / f32 - 1.0).tolist(),
            title=task.title, describe=task.describe, steps=task.steps,
            summary=summarize(runs, names), f32_spread=float(f32.std() / f32.mean()),
            seconds=seconds, curves={n: runs[n] for n in names},
        )
        for line in table(results["tasks"][name]["summary"],
                          results["tasks"][name]["f32_spread"],
                          results["tasks"][name]["f32_other_order"]):
            print("  " + line)
    results["seconds"] = time.time() - t0
    if out is None:
        return
    with open(out + ".json", "w") as f:
        json.dump(results, f, indent=1)
    write_markdown(results, out + ".md")
    plot(results, out + ".png")
    print(f"wrote {out}.json, {out}.md, {out}.png")


if __name__ == "__main__":
    main()
