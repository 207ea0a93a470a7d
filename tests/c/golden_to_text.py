#!/usr/bin/env python3
"""Converts the golden trajectories (tests/data/braintools-0.4.0-dev.json, format in
docs/numerics.md, "The golden file") into a whitespace-separated text file that
tests/c/test_golden.c reads.

Usage: golden_to_text.py INPUT.json OUTPUT.txt

Numbers are copied as the decimal text of the JSON file (never through a Python float), so that
the C side rounds every data value to f32 exactly once (strtof) and every hyperparameter to f64
once (strtod), as tests/golden.rs does. Python standard library only.

Mapping (as in tests/golden.rs): base kinds sgd / adam / adamw / scheduled_sgd; scheduled_sgd is
SGD on Exponential(base_lr, gamma) advanced once per update (the file must say so);
`lookahead_lr` is ignored on purpose (braintools ignores it: docs/numerics.md). Anything this
converter does not know how to map is an error, so that a new kind of case cannot be skipped
silently.

Output grammar (one token per word, names without blanks):
    flatopt-golden-text 1
    cases N
    then per case:
    case NAME
    base KIND lr X momentum X dampening X nesterov 0|1 b1 X b2 X eps X decoupled_wd X
    schedule none | schedule exponential BASE_LR GAMMA
    lookahead SYNC_PERIOD ALPHA            (SYNC_PERIOD 0: no Lookahead)
    weight_decay X clip_norm X clip_value X   (0: disabled)
    buffers B NAME LEN ... (B pairs)
    steps T
    sync_steps N S1 .. SN
    lr_per_step T values
    init TOTAL values       (buffers concatenated in registration order)
    step t grads TOTAL values params TOTAL values     (T times, t = 1..T)
    slow_final 0 | slow_final 1 TOTAL values
    end
"""

import json
import sys

CONFIG_KEYS = {
    "steps", "seed", "sync_period", "alpha", "weight_decay", "grad_clip_norm",
    "grad_clip_value", "lookahead_lr", "base", "scheduler_step_after_each_update",
}
BASE_KEYS = {
    "kind", "lr", "momentum", "dampening", "nesterov", "b1", "b2", "eps", "eps_root",
    "weight_decay", "wd", "schedule",
}


class GoldenError(Exception):
    pass


def num(v, what):
    """A JSON number kept as its decimal text (json.load with parse_float/parse_int=str)."""
    if isinstance(v, bool) or not isinstance(v, str):
        raise GoldenError(f"{what}: expected a number, got {v!r}")
    text = v.strip()
    try:
        float(text)
    except ValueError as e:
        raise GoldenError(f"{what}: {text!r} is not a number") from e
    return text


def opt_num(obj, key, what, default):
    v = obj.get(key)
    return default if v is None else num(v, f"{what}.{key}")


def integer(v, what):
    text = num(v, what)
    try:
        n = int(text)
    except ValueError as e:
        raise GoldenError(f"{what}: {text!r} is not an integer") from e
    if n < 0:
        raise GoldenError(f"{what}: negative")
    return n


def flag(v, what):
    if v is None:
        return "0"
    if not isinstance(v, bool):
        raise GoldenError(f"{what}: expected true/false, got {v!r}")
    return "1" if v else "0"


def floats(v, n, what):
    if not isinstance(v, list):
        raise GoldenError(f"{what}: expected a list")
    if len(v) != n:
        raise GoldenError(f"{what}: {len(v)} values, expected {n}")
    return [num(x, f"{what}[{i}]") for i, x in enumerate(v)]


def per_buffer(v, names, lens, what):
    if not isinstance(v, dict):
        raise GoldenError(f"{what}: expected a dict of buffers")
    if set(v) != set(names):
        raise GoldenError(f"{what}: buffers {sorted(v)} but param_order {names}")
    out = []
    for name, n in zip(names, lens):
        out.extend(floats(v[name], n, f"{what}.{name}"))
    return out


def convert_case(c, meta_steps):
    name = c.get("name")
    if not isinstance(name, str) or not name or any(ch.isspace() for ch in name):
        raise GoldenError(f"case name {name!r}: expected a non-empty name without blanks")
    cfg = c["config"]
    unknown = set(cfg) - CONFIG_KEYS
    if unknown:
        raise GoldenError(f"{name}: unknown config keys {sorted(unknown)}")
    base = cfg["base"]
    unknown = set(base) - BASE_KEYS
    if unknown:
        raise GoldenError(f"{name}: unknown base keys {sorted(unknown)}")
    kind = base.get("kind")
    w = f"{name}.config.base"

    eps_root = opt_num(base, "eps_root", w, "0")
    if float(eps_root) != 0.0:
        raise GoldenError(f"{w}.eps_root = {eps_root}: flatopt has no eps_root")
    per_update = cfg.get("scheduler_step_after_each_update")
    lines = []
    if kind in ("sgd", "scheduled_sgd"):
        momentum = opt_num(base, "momentum", w, "0")
        dampening = opt_num(base, "dampening", w, "0")
        nesterov = flag(base.get("nesterov"), f"{w}.nesterov")
        b1 = b2 = eps = dwd = "0"
    elif kind in ("adam", "adamw"):
        momentum = dampening = "0"
        nesterov = "0"
        b1 = num(base.get("b1"), f"{w}.b1")
        b2 = num(base.get("b2"), f"{w}.b2")
        eps = num(base.get("eps"), f"{w}.eps")
        if kind == "adamw":
            dwd = base.get("weight_decay", base.get("wd"))
            if dwd is None:
                raise GoldenError(f"{w}: adamw without weight_decay")
            dwd = num(dwd, f"{w}.weight_decay")
        else:
            dwd = "0"
    else:
        raise GoldenError(f"{w}.kind = {kind!r}: not mapped by this converter")

    if kind == "scheduled_sgd":
        s = base.get("schedule")
        if not isinstance(s, dict) or s.get("type") != "ExponentialLR":
            raise GoldenError(f"{w}.schedule: only ExponentialLR is mapped, got {s!r}")
        if base.get("lr") is not None:
            raise GoldenError(f"{w}: both lr and schedule given")
        if per_update is not True:
            raise GoldenError(f"{name}: a schedule not stepped after each update is not mapped")
        lr = "0"
        sched = f"schedule exponential {num(s.get('base_lr'), w + '.schedule.base_lr')} " \
                f"{num(s.get('gamma'), w + '.schedule.gamma')}"
    else:
        if base.get("schedule") is not None:
            raise GoldenError(f"{w}: schedule given for kind {kind}")
        lr = num(base.get("lr"), f"{w}.lr")
        sched = "schedule none"
    # `lookahead_lr` is deliberately not read: braintools ignores it (docs/numerics.md).

    lines.append(f"case {name}")
    lines.append(f"base {kind} lr {lr} momentum {momentum} dampening {dampening} "
                 f"nesterov {nesterov} b1 {b1} b2 {b2} eps {eps} decoupled_wd {dwd}")
    lines.append(sched)
    k = cfg.get("sync_period")
    if k is None:
        lines.append("lookahead 0 0")
        lookahead = False
    else:
        kk = integer(k, f"{name}.config.sync_period")
        if kk < 1:
            raise GoldenError(f"{name}: sync_period {kk}")
        lines.append(f"lookahead {kk} {num(cfg.get('alpha'), name + '.config.alpha')}")
        lookahead = True
    lines.append(f"weight_decay {opt_num(cfg, 'weight_decay', name, '0')} "
                 f"clip_norm {opt_num(cfg, 'grad_clip_norm', name, '0')} "
                 f"clip_value {opt_num(cfg, 'grad_clip_value', name, '0')}")

    names = c["param_order"]
    if not isinstance(names, list) or not names:
        raise GoldenError(f"{name}: empty param_order")
    lens = []
    for n in names:
        shape = c["shapes"][n]
        size = 1
        for d in shape:
            size *= integer(d, f"{name}.shapes.{n}")
        lens.append(size)
    total = sum(lens)
    lines.append("buffers %d %s" % (len(names), " ".join(f"{n} {l}" for n, l in zip(names, lens))))

    grads, params = c["grads"], c["params"]
    steps = len(grads)
    if steps == 0 or len(params) != steps:
        raise GoldenError(f"{name}: {steps} grad steps, {len(params)} param steps")
    if cfg.get("steps") is not None and integer(cfg["steps"], "config.steps") != steps:
        raise GoldenError(f"{name}: config.steps differs from the recorded steps")
    if meta_steps is not None and meta_steps != steps:
        raise GoldenError(f"{name}: {steps} steps, meta.steps {meta_steps}")
    lines.append(f"steps {steps}")
    sync = [integer(s, f"{name}.sync_steps") for s in c["sync_steps"]]
    if not lookahead and sync:
        raise GoldenError(f"{name}: sync steps without Lookahead")
    lines.append("sync_steps %d %s" % (len(sync), " ".join(map(str, sync))))
    lines.append("lr_per_step %d %s" % (steps, " ".join(floats(c["lr_per_step"], steps,
                                                                f"{name}.lr_per_step"))))
    lines.append("init %d %s" % (total, " ".join(per_buffer(c["init"], names, lens,
                                                            f"{name}.init"))))
    for t in range(steps):
        g = per_buffer(grads[t], names, lens, f"{name}.grads[{t}]")
        p = per_buffer(params[t], names, lens, f"{name}.params[{t}]")
        lines.append("step %d grads %d %s params %d %s" % (t + 1, total, " ".join(g), total,
                                                            " ".join(p)))
    slow = c.get("slow_final")
    if (slow is not None) != lookahead:
        raise GoldenError(f"{name}: slow_final present iff Lookahead configured")
    if slow is None:
        lines.append("slow_final 0")
    else:
        lines.append("slow_final 1 %d %s" % (total, " ".join(per_buffer(slow, names, lens,
                                                                         f"{name}.slow_final"))))
    lines.append("end")
    return lines


def main(argv):
    if len(argv) != 3:
        print(__doc__.splitlines()[0], file=sys.stderr)
        print("usage: golden_to_text.py INPUT.json OUTPUT.txt", file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        root = json.load(f, parse_float=str, parse_int=str)
    meta = root.get("meta") or {}
    meta_steps = integer(meta["steps"], "meta.steps") if meta.get("steps") is not None else None
    cases = root.get("cases")
    if not isinstance(cases, list) or not cases:
        raise GoldenError("no cases")
    out = ["flatopt-golden-text 1", f"cases {len(cases)}"]
    for c in cases:
        out.extend(convert_case(c, meta_steps))
    with open(argv[2], "w", encoding="utf-8") as f:
        f.write("\n".join(out) + "\n")
    print(f"golden_to_text: {len(cases)} cases from {argv[1]} -> {argv[2]}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except (GoldenError, KeyError) as e:
        print(f"golden_to_text: error: {e}", file=sys.stderr)
        sys.exit(1)
