"""A mixed-precision PyTorch training script with flatopt: the import line is the only change.

Trains a small MLP classifier on a synthetic task the way a PyTorch script does: AdamW in two
parameter groups (no weight decay on biases and norms), a OneCycleLR schedule (it cycles
AdamW's betas too), float16 autocast on the CPU with a torch.amp.GradScaler (bfloat16 autocast
where this torch has no float16 autocast on the CPU; the scaler is then off), and a
checkpoint written with torch.save halfway and resumed in fresh objects: the resumed run ends
on the same bits as the uninterrupted one. The scaler hands its scale to flatopt's step, which
divides it out in its own pass, and steps with an inf/NaN gradient are skipped with nothing
changed (docs/torch.md, "GradScaler").

Then the same script with torch.optim.AdamW (the line this example changed, put back) for the
loss and accuracy to compare, and a model kept in bfloat16 (`model.to(torch.bfloat16)`, no
autocast), for which flatopt.torch holds float32 master weights and writes the bf16 weights
in the same pass.

    pip install "./bindings/python[torch]"
    python examples/torch/train_amp.py
"""

import os
import sys
import tempfile

try:
    import torch
except ImportError as e:  # torch is an optional dependency of flatopt
    print(f"skipped: torch is not installed ({e}); pip install \"./bindings/python[torch]\"")
    sys.exit(0)

from flatopt.torch import AdamW  # was: from torch.optim import AdamW

STEPS = 600
CLASSES = 4


def autocast_dtype():
    """float16 where this torch autocasts to it on the CPU, else bfloat16."""
    try:
        with torch.autocast("cpu", dtype=torch.float16):
            out = torch.nn.Linear(2, 2)(torch.ones(1, 2))
        if out.dtype == torch.float16:
            return torch.float16
    except (RuntimeError, ValueError):
        pass
    return torch.bfloat16


AMP = autocast_dtype()


def batch(t, n=128):
    """Inputs and labels of a fixed teacher: 16 features, 4 classes."""
    g = torch.Generator().manual_seed(t)
    x = torch.randn(n, 16, generator=g)
    w = torch.Generator().manual_seed(12345)
    teacher = torch.randn(16, CLASSES, generator=w)
    logits = x @ teacher + 0.5 * torch.sin(3 * x[:, :CLASSES])
    return x, logits.argmax(1)


TEST = batch(10**6, 4096)


def make(optimizer_class=AdamW, model_dtype=torch.float32):
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(16, 128), torch.nn.LayerNorm(128), torch.nn.GELU(),
        torch.nn.Linear(128, 128), torch.nn.GELU(), torch.nn.Linear(128, CLASSES),
    ).to(model_dtype)
    decay = [p for n, p in model.named_parameters() if p.dim() > 1]
    no_decay = [p for n, p in model.named_parameters() if p.dim() <= 1]
    opt = optimizer_class([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}],
                          lr=3e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=STEPS)
    use_amp = model_dtype == torch.float32
    scaler = torch.amp.GradScaler("cpu", enabled=use_amp and AMP == torch.float16)
    return model, opt, sched, scaler


def train(model, opt, sched, scaler, steps):
    use_amp = next(model.parameters()).dtype == torch.float32
    dtype = next(model.parameters()).dtype
    for t in steps:
        x, y = batch(t)
        opt.zero_grad()
        with torch.autocast("cpu", dtype=AMP, enabled=use_amp):
            loss = torch.nn.functional.cross_entropy(model(x.to(dtype)).float(), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        sched.step()
    return loss.item()


def accuracy(model):
    x, y = TEST
    with torch.no_grad():
        out = model(x.to(next(model.parameters()).dtype))
    return (out.argmax(1) == y).float().mean().item()


def main():
    torch.set_num_threads(1)  # the same bits on every run and machine load
    print(f"autocast to {AMP} on the CPU, GradScaler {'on' if AMP == torch.float16 else 'off'}")
    model, opt, sched, scaler = make()
    loss = train(model, opt, sched, scaler, range(STEPS))
    print(f"flatopt.torch.AdamW: loss after {STEPS} steps {loss:.4f}, test accuracy "
          f"{accuracy(model):.3f}, loss scale {scaler.get_scale():g}")

    # Halfway checkpoint with torch.save, resumed in fresh objects.
    model2, opt2, sched2, scaler2 = make()
    train(model2, opt2, sched2, scaler2, range(STEPS // 2))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "checkpoint.pt")
        torch.save({"model": model2.state_dict(), "opt": opt2.state_dict(),
                    "sched": sched2.state_dict(), "scaler": scaler2.state_dict()}, path)
        ckpt = torch.load(path, weights_only=True)
    model3, opt3, sched3, scaler3 = make()
    model3.load_state_dict(ckpt["model"])
    opt3.load_state_dict(ckpt["opt"])
    sched3.load_state_dict(ckpt["sched"])
    scaler3.load_state_dict(ckpt["scaler"])
    train(model3, opt3, sched3, scaler3, range(STEPS // 2, STEPS))
    same = all(torch.equal(a, b) for a, b in zip(model.parameters(), model3.parameters()))
    print(f"resumed from the step-{STEPS // 2} checkpoint: identical to the uninterrupted run: "
          f"{same}")

    # The import line put back: torch.optim.AdamW in the same script.
    ref, ref_opt, ref_sched, ref_scaler = make(torch.optim.AdamW)
    ref_loss = train(ref, ref_opt, ref_sched, ref_scaler, range(STEPS))
    print(f"torch.optim.AdamW:   loss after {STEPS} steps {ref_loss:.4f}, test accuracy "
          f"{accuracy(ref):.3f}")

    # A model kept in bfloat16: flatopt holds the float32 master weights.
    half, half_opt, half_sched, half_scaler = make(model_dtype=torch.bfloat16)
    half_loss = train(half, half_opt, half_sched, half_scaler, range(STEPS))
    print(f"bfloat16 model, flatopt.torch.AdamW with float32 masters: loss {half_loss:.4f}, "
          f"test accuracy {accuracy(half):.3f}")
    if not same:
        sys.exit("the resumed run differs from the uninterrupted one")


if __name__ == "__main__":
    main()
