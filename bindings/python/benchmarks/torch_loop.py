"""flatopt.torch measured inside real PyTorch training loops on this CPU (issue 17).

Two models, forward + backward + step, every variant with its own copy of the same model and
the same batches, the variants interleaved (one iteration of each in turn, the order rotated
each round) so that the machine's load hits them alike; per iteration the step time and the
whole-iteration time, medians over the measured rounds:

* ``gpt``: a GPT-style decoder (8 layers, d=320, vocab 8192, context 64; 15 M parameters in
  101 tensors), batch 4;
* ``cnn``: a small ResNet (3 stages of 2 basic blocks with batch norm; 2.8 M parameters in 50
  tensors), batch 16 of 16x16 images.

Printed: medians of the step and the iteration, their ratios to the fused AdamW, the mean step
and the period step (Lookahead syncs every k-th step only: the median misses that cost; the
mean carries it but also every outlier of a loaded machine; the period step is
``((k-1) * median of the other steps + median of the sync steps) / k`` with k = 5, robust
to both, and the one to compare Lookahead variants by).
Variants: ``torch.optim.AdamW(fused=True)``, ``AdamW(foreach=True)``, ``flatopt.torch.AdamW``
(the default: on PyTorch's own intra-op threads; and with flatopt's own pool of 1 and of 2
threads, ``t=1``, ``t=2``), timm's Lookahead logic (written out below: timm is not a
dependency) over the fused AdamW, and ``flatopt.torch.Lookahead`` over flatopt's AdamW; and
the model kept in bfloat16 (``torch bf16``: float32 masters, the gradients widened, fused
AdamW, the masters copied back; ``flatopt bf16``: flatopt.torch.AdamW's masters, one pass);
flatopt's AdamW with compressed state (``flatopt bf16 state``, ``flatopt int8 state``, on
PyTorch's threads and with one thread of flatopt's own) and Lookahead over it with bfloat16
slow weights (``flatopt LA bf16 state``). With ``--alone`` it also times flatopt's step
once more after a pause of 50 ms (PyTorch's OpenMP workers asleep) to measure the interference
of their spin-waiting (see docs/torch.md).

    python bindings/python/benchmarks/torch_loop.py gpt --rounds 30
    OMP_WAIT_POLICY=PASSIVE python bindings/python/benchmarks/torch_loop.py gpt --alone
"""

import argparse
import copy
import os
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

import flatopt.torch as ft


class Block(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, 4 * d)
        self.fc2 = nn.Linear(4 * d, d)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, d))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class GPT(nn.Module):
    def __init__(self, vocab=8192, d=320, layers=8, heads=5, ctx=64):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(ctx, d)
        self.blocks = nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.lnf = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)

    def forward(self, idx):
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1]))
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.lnf(x))


class Basic(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.short = None
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                       nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.b1(self.c1(x)))
        y = self.b2(self.c2(y))
        return F.relu(y + (x if self.short is None else self.short(x)))


def cnn():
    layers = [nn.Conv2d(3, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU()]
    cin = 32
    for cout, stride in ((64, 1), (128, 2), (256, 2)):
        layers += [Basic(cin, cout, stride), Basic(cout, cout, 1)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 10)]
    return nn.Sequential(*layers)


class TimmLookahead:
    """timm.optim.Lookahead's logic (timm 0.9-1.0), over any torch optimizer."""

    def __init__(self, base, alpha=0.5, k=5):
        self.base = base
        self.param_groups = base.param_groups
        for g in self.param_groups:
            g.setdefault("lookahead_alpha", alpha)
            g.setdefault("lookahead_k", k)
            g.setdefault("lookahead_step", 0)

    @torch.no_grad()
    def update_slow(self, group):
        for fast_p in group["params"]:
            if fast_p.grad is None:
                continue
            st = self.base.state[fast_p]
            if "lookahead_slow_buff" not in st:
                st["lookahead_slow_buff"] = torch.empty_like(fast_p)
                st["lookahead_slow_buff"].copy_(fast_p)
            slow = st["lookahead_slow_buff"]
            slow.lerp_(fast_p, group["lookahead_alpha"])
            fast_p.copy_(slow)

    def step(self):
        self.base.step()
        for g in self.param_groups:
            g["lookahead_step"] += 1
            if g["lookahead_step"] % g["lookahead_k"] == 0:
                self.update_slow(g)

    def zero_grad(self, set_to_none=True):
        self.base.zero_grad(set_to_none)


class MasterAdamW:
    """PyTorch's composition for a bf16 model: float32 master weights, the bf16 gradients
    widened into theirs, fused AdamW on the masters, the masters copied back."""

    def __init__(self, params):
        self.params = list(params)
        self.masters = [p.detach().float().requires_grad_() for p in self.params]
        self.opt = torch.optim.AdamW(self.masters, LR, weight_decay=WD, fused=True)

    def step(self):
        for m, p in zip(self.masters, self.params):
            m.grad = None if p.grad is None else p.grad.float()
        self.opt.step()
        with torch.no_grad():
            torch._foreach_copy_(self.params, self.masters)

    def zero_grad(self, set_to_none=True):
        for p in self.params:
            p.grad = None


LR, WD = 3e-4, 0.1
K = 5  # the Lookahead period of both Lookahead variants
VARIANTS = {
    "torch fused": lambda m: torch.optim.AdamW(m.parameters(), LR, weight_decay=WD, fused=True),
    "torch foreach": lambda m: torch.optim.AdamW(m.parameters(), LR, weight_decay=WD,
                                                 foreach=True),
    "flatopt": lambda m: ft.AdamW(m.parameters(), LR, weight_decay=WD),
    "flatopt t=1": lambda m: ft.AdamW(m.parameters(), LR, weight_decay=WD, num_threads=1),
    "flatopt t=2": lambda m: ft.AdamW(m.parameters(), LR, weight_decay=WD, num_threads=2),
    "timm LA(fused)": lambda m: TimmLookahead(
        torch.optim.AdamW(m.parameters(), LR, weight_decay=WD, fused=True), 0.5, K),
    "flatopt LA": lambda m: ft.Lookahead(ft.AdamW(m.parameters(), LR, weight_decay=WD), K, 0.5),
    # compressed optimizer state (issue 16)
    "flatopt bf16 state": lambda m: ft.AdamW(m.parameters(), LR, weight_decay=WD,
                                             state_dtype="bfloat16"),
    "flatopt int8 state": lambda m: ft.AdamW(m.parameters(), LR, weight_decay=WD,
                                             state_dtype="int8"),
    "flatopt bf16 state t=1": lambda m: ft.AdamW(m.parameters(), LR, weight_decay=WD,
                                                 state_dtype="bfloat16", num_threads=1),
    "flatopt int8 state t=1": lambda m: ft.AdamW(m.parameters(), LR, weight_decay=WD,
                                                 state_dtype="int8", num_threads=1),
    "flatopt LA bf16 state": lambda m: ft.Lookahead(
        ft.AdamW(m.parameters(), LR, weight_decay=WD, state_dtype="bfloat16"), K, 0.5,
        slow_dtype="bfloat16"),
    # the model in bfloat16, float32 master weights in the optimizer
    "torch bf16": lambda m: MasterAdamW(m.parameters()),
    "flatopt bf16": lambda m: ft.AdamW(m.parameters(), LR, weight_decay=WD),
}
BF16 = {"torch bf16", "flatopt bf16"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model", choices=["gpt", "cnn"])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--alone", action="store_true",
                    help="also time flatopt's step after a 50 ms pause")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    args = ap.parse_args()
    torch.manual_seed(0)
    if args.model == "gpt":
        base = GPT()

        def batch(i):
            g = torch.Generator().manual_seed(i)
            idx = torch.randint(0, 8192, (4, 65), generator=g)
            return idx[:, :-1], idx[:, 1:]

        def loss_fn(m, xb):
            x, y = xb
            return F.cross_entropy(m(x).reshape(-1, 8192), y.reshape(-1))
    else:
        base = cnn()

        def batch(i):
            g = torch.Generator().manual_seed(i)
            return torch.randn(16, 3, 16, 16, generator=g), torch.randint(0, 10, (16,),
                                                                          generator=g)

        def loss_fn(m, xb):
            x, y = xb
            return F.cross_entropy(m(x.to(next(m.parameters()).dtype)), y)

    names = args.variants.split(",")
    models = {n: copy.deepcopy(base).to(torch.bfloat16 if n in BF16 else torch.float32)
              for n in names}
    opts = {n: VARIANTS[n](models[n]) for n in names}
    n_params = sum(p.numel() for p in base.parameters())
    n_tensors = len(list(base.parameters()))
    step_t = {n: [] for n in names}
    phase_t = {n: ([], []) for n in names}  # steps 1..4 and 5 of each Lookahead period
    iter_t = {n: [] for n in names}
    alone_t = []
    losses = {n: None for n in names}
    for r in range(args.warmup + args.rounds):
        xb = batch(r)
        order = names[r % len(names):] + names[: r % len(names)]
        for n in order:
            m, o = models[n], opts[n]
            t0 = time.perf_counter()
            o.zero_grad(set_to_none=True)
            loss = loss_fn(m, xb)
            loss.backward()
            t1 = time.perf_counter()
            o.step()
            t2 = time.perf_counter()
            losses[n] = loss.item()
            if r >= args.warmup:
                step_t[n].append(t2 - t1)
                phase_t[n][(r + 1) % K == 0].append(t2 - t1)
                iter_t[n].append(t2 - t0)
            if args.alone and n == "flatopt" and r >= args.warmup:
                # the same model's next step, but with PyTorch's OpenMP workers asleep
                o.zero_grad(set_to_none=True)
                loss_fn(m, xb).backward()
                time.sleep(0.05)
                t3 = time.perf_counter()
                o.step()
                alone_t.append(time.perf_counter() - t3)
    med = {n: (statistics.median(step_t[n]) * 1e3, statistics.median(iter_t[n]) * 1e3)
           for n in names}
    # Lookahead's sync runs every k-th step only: the mean step shows its cost, the median not.
    mean = {n: statistics.fmean(step_t[n]) * 1e3 for n in names}
    period = {n: ((K - 1) * statistics.median(phase_t[n][0]) + statistics.median(phase_t[n][1]))
              / K * 1e3 for n in names}
    ref = med.get("torch fused")
    print(f"{args.model}: {n_params / 1e6:.1f} M parameters in {n_tensors} tensors; "
          f"{args.rounds} rounds; torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '-')}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'variant':22} {'step ms':>9} {'iter ms':>9} {'step/fused':>11} {'iter/fused':>11}"
          f" {'mean step':>10} {'mean/fused':>11} {'period':>8} {'per/fused':>10}  last loss")
    for n in names:
        s, i = med[n]
        rs = f"{s / ref[0]:.2f}" if ref else "-"
        ri = f"{i / ref[1]:.2f}" if ref else "-"
        rm = f"{mean[n] / mean['torch fused']:.2f}" if ref else "-"
        rp = f"{period[n] / period['torch fused']:.2f}" if ref else "-"
        print(f"{n:22} {s:9.2f} {i:9.2f} {rs:>11} {ri:>11} {mean[n]:10.2f} {rm:>11}"
              f" {period[n]:8.2f} {rp:>10}  {losses[n]:.4f}")
    if "timm LA(fused)" in period and "flatopt LA" in period:
        print(f"Lookahead, period step: timm / flatopt = "
              f"{period['timm LA(fused)'] / period['flatopt LA']:.2f}; mean step: "
              f"{mean['timm LA(fused)'] / mean['flatopt LA']:.2f}")
    if alone_t:
        a = statistics.median(alone_t) * 1e3
        print(f"flatopt step alone (after 50 ms): {a:.2f} ms; in the loop / alone: "
              f"{med['flatopt'][0] / a:.2f}")


if __name__ == "__main__":
    main()
