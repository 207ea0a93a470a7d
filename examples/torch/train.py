"""A PyTorch training script with flatopt: the import line is the only change.

Trains a small MLP on a synthetic regression task with AdamW in two parameter groups (no
weight decay on biases), a cosine LR schedule, gradient clipping in flatopt's own norm pass,
Lookahead fused into the same pass, and a checkpoint saved halfway and resumed: the resumed
run ends on the same bits as the uninterrupted one.

    pip install "./bindings/python[torch]"
    python examples/torch/train.py
"""

import io

import torch

from flatopt.torch import AdamW, Lookahead  # was: from torch.optim import AdamW


def make():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.GELU(), torch.nn.Linear(64, 1))
    decay = [p for n, p in model.named_parameters() if n.endswith("weight")]
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias")]
    opt = AdamW([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}],
                lr=3e-3, weight_decay=0.05, max_grad_norm=1.0)
    opt = Lookahead(opt, k=5, alpha=0.5)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=400)
    return model, opt, sched


def batch(t):
    g = torch.Generator().manual_seed(t)
    x = torch.randn(64, 8, generator=g)
    return x, (x[:, :4].sum(1, keepdim=True) * x[:, 4:5]).tanh()


def train(model, opt, sched, steps):
    for t in steps:
        x, y = batch(t)
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        sched.step()
    return loss.item()


def main():
    model, opt, sched = make()
    print(f"loss after 400 steps: {train(model, opt, sched, range(400)):.5f}")

    model2, opt2, sched2 = make()
    train(model2, opt2, sched2, range(200))
    buf = io.BytesIO()
    torch.save({"model": model2.state_dict(), "opt": opt2.state_dict(),
                "sched": sched2.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    model3, opt3, sched3 = make()
    model3.load_state_dict(ckpt["model"])
    opt3.load_state_dict(ckpt["opt"])
    sched3.load_state_dict(ckpt["sched"])
    train(model3, opt3, sched3, range(200, 400))
    same = all(torch.equal(a, b) for a, b in zip(model.parameters(), model3.parameters()))
    print(f"resumed from the step-200 checkpoint: identical to the uninterrupted run: {same}")
    assert same


if __name__ == "__main__":
    main()
