"""state_dict / load_state_dict: 50 updates straight vs 20 + state_dict + load into a fresh
optimizer (params restored by the user, as in PyTorch) + 30 must be bit-identical (params,
slow weights, counters, learning rate), for several configurations; plus pickling, files and
refusals that change nothing."""

import pickle
import re
import struct
import threading
import time
import zlib

import numpy as np
import pytest

import flatopt

from conftest import grad_stream, needs_checkpoints

pytestmark = needs_checkpoints

SHAPES = [(7, 5), (5,), (33,), (1,)]


def _init():
    rng = np.random.default_rng(11)
    return {f"p{i}": rng.standard_normal(s).astype(np.float32) for i, s in enumerate(SHAPES)}


CONFIGS = {
    "lookahead-adam-steplr-manual": lambda: flatopt.Lookahead(
        flatopt.adam(flatopt.StepLR(1e-2, step_size=3, gamma=0.5)),
        sync_period=5, alpha=0.5, grad_clip_norm=2.0, weight_decay=1e-3,
    ),
    "lookahead-sgd-momentum-cosine-per-update": lambda: flatopt.Lookahead(
        flatopt.sgd(0.1, momentum=0.9, nesterov=True),
        lr=flatopt.CosineAnnealingLR(0.05, T_max=40, per_update=True),
        sync_period=6, alpha=0.7, grad_clip_value=1.5,
    ),
    "adam-amsgrad": lambda: flatopt.Adam(lr=3e-3, amsgrad=True, weight_decay=1e-2),
    "adamw": lambda: flatopt.AdamW(lr=3e-3),
    "radam-plateau": lambda: flatopt.RAdam(lr=flatopt.ReduceLROnPlateau(1e-2, patience=1)),
}


def _run(opt, params, g, start, stop):
    for t in range(start, stop):
        grads = dict(zip(params, g(t)))
        if t == 13:
            grads["p1"] = grads["p1"].copy()
            grads["p1"][2] = np.nan  # a skipped update is part of the state too
        opt.update(grads)
        if opt.schedule is not None and not opt.schedule.per_update and t % 4 == 3:
            if isinstance(opt.schedule, flatopt.ReduceLROnPlateau):
                opt.schedule.step(1.0)  # no improvement: reduces after patience
            else:
                opt.schedule.step()


def _bits(a):
    return a.view(np.uint32)


def _slow(opt):
    return opt.slow_weights if isinstance(opt, flatopt.Lookahead) else None


@pytest.mark.parametrize("name", list(CONFIGS))
def test_resume_is_bit_identical(name):
    make = CONFIGS[name]
    g = grad_stream(SHAPES, seed=5)

    straight = make()
    p_straight = _init()
    straight.register_trainable_weights(p_straight)
    _run(straight, p_straight, g, 0, 50)

    first = make()
    p_first = _init()
    first.register_trainable_weights(p_first)
    _run(first, p_first, g, 0, 20)
    state = pickle.loads(pickle.dumps(first.state_dict()))
    saved_params = {k: v.copy() for k, v in p_first.items()}
    lr_at_save = first.current_lr
    del first

    assert state["format"] == "flatopt"
    assert state["step_count"] == 19 and state["skipped_steps"] == 1
    assert isinstance(state["checkpoint"], bytes)

    resumed = make()
    p_resumed = _init()  # fresh values: the user restores the params
    resumed.register_trainable_weights(p_resumed)
    for k in p_resumed:
        np.copyto(p_resumed[k], saved_params[k])
    resumed.load_state_dict(state)
    assert resumed.step_count == 19 and resumed.skipped_steps == 1
    assert resumed.current_lr == lr_at_save
    sched = resumed.schedule
    if isinstance(sched, flatopt.ReduceLROnPlateau):
        assert sched.last_epoch == len(state["schedule"]["metrics"]) > 0
    elif sched is not None:
        want = state["schedule"]["manual_steps"] + (19 if sched.per_update else 0)
        assert sched.last_epoch == want
    _run(resumed, p_resumed, g, 20, 50)

    assert resumed.step_count == straight.step_count == 49
    assert resumed.skipped_steps == straight.skipped_steps == 1
    assert resumed.current_lr == straight.current_lr
    for k in p_straight:
        assert np.array_equal(_bits(p_resumed[k]), _bits(p_straight[k])), k
    if _slow(straight) is not None:
        for k in p_straight:
            assert np.array_equal(_bits(_slow(resumed)[k]), _bits(_slow(straight)[k])), k
    assert resumed.state_dict()["checkpoint"] == straight.state_dict()["checkpoint"]


def test_save_and_load_file(tmp_path):
    g = grad_stream(SHAPES, seed=9)
    a = CONFIGS["lookahead-adam-steplr-manual"]()
    pa = _init()
    a.register_trainable_weights(pa)
    _run(a, pa, g, 0, 10)
    a.save(tmp_path / "opt.ckpt")
    b = CONFIGS["lookahead-adam-steplr-manual"]()
    pb = {k: v.copy() for k, v in pa.items()}
    b.register_trainable_weights(pb)
    b.load(str(tmp_path / "opt.ckpt"))
    assert b.state_dict()["checkpoint"] == a.state_dict()["checkpoint"]
    with pytest.raises(flatopt.CheckpointIOError):
        b.load(tmp_path / "missing.ckpt")


def _trained():
    g = grad_stream(SHAPES, seed=2)
    opt = CONFIGS["lookahead-adam-steplr-manual"]()
    p = _init()
    opt.register_trainable_weights(p)
    _run(opt, p, g, 0, 8)
    return opt, p


def _corrupt(state):
    blob = bytearray(state["checkpoint"])
    blob[len(blob) // 2] ^= 0x10
    return dict(state, checkpoint=bytes(blob))


REFUSALS = [
    ("not a state dict", lambda s: {"foo": 1}, flatopt.CheckpointError, "not a flatopt state_dict"),
    ("other format version", lambda s: dict(s, format_version=99), flatopt.CheckpointError,
     "format version 99"),
    ("other parameter shapes", lambda s: dict(s, param_shapes=[[5, 7]] + s["param_shapes"][1:]),
     flatopt.CheckpointError, "saved for parameters"),
    ("other parameter names", lambda s: dict(s, param_names=["a", "b", "c", "d"]),
     flatopt.CheckpointError, "saved for parameters"),
    ("flipped bit", _corrupt, flatopt.CheckpointError, "checksum"),
    ("truncated", lambda s: dict(s, checkpoint=s["checkpoint"][:-9]), flatopt.CheckpointError,
     "corrupt"),
    ("checkpoint not bytes", lambda s: dict(s, checkpoint="abc"), flatopt.CheckpointError,
     "must be bytes"),
    ("no schedule in state", lambda s: dict(s, schedule=None), flatopt.CheckpointError,
     "without a schedule"),
]


@pytest.mark.parametrize("desc,mutate,exc,substring", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_bad_state_changes_nothing(desc, mutate, exc, substring):
    opt, p = _trained()
    before = opt.state_dict()
    other, _ = _trained()
    g = grad_stream(SHAPES, seed=4)
    _run(other, {k: v.copy() for k, v in p.items()}, g, 8, 12)  # a different state
    with pytest.raises(exc) as info:
        opt.load_state_dict(mutate(other.state_dict()))
    assert substring in str(info.value)
    assert opt.state_dict()["checkpoint"] == before["checkpoint"]
    assert opt.schedule.state_dict() == before["schedule"]


def test_other_configuration_is_refused():
    opt, p = _trained()
    before = opt.state_dict()
    other = flatopt.Lookahead(
        flatopt.adam(flatopt.StepLR(1e-2, step_size=3, gamma=0.5)), sync_period=4, alpha=0.5,
        grad_clip_norm=2.0, weight_decay=1e-3,
    )
    other.register_trainable_weights({k: v.copy() for k, v in p.items()})
    with pytest.raises(flatopt.CheckpointError, match="sync_period"):
        other.load_state_dict(before)
    assert other.step_count == 0


def test_state_dict_before_registration():
    with pytest.raises(flatopt.InvalidStateError):
        flatopt.Adam().state_dict()


def _blob_counters(blob):
    """(step count, skipped count) stored in a checkpoint (docs/checkpoint-format.md)."""
    (clen,) = struct.unpack_from("<Q", blob, 32)
    return struct.unpack_from("<QQ", blob, 40 + clen)


@pytest.mark.parametrize("way", ["checkpoint_info", "counters around the save (older library)"])
def test_state_dict_is_one_moment_while_another_thread_updates(way, monkeypatch):
    """state_dict() while another thread runs lock-free updates (registered gradients, a
    per-update schedule): the counters and the learning rate in the dict are those of the
    checkpoint in the same dict; slow_weights works meanwhile. About a second per row: the
    library's checkpoint_info, and the fallback without it."""
    if way != "checkpoint_info":
        monkeypatch.setattr(flatopt._lib, "optimizer_checkpoint_info", None)
    params = _init()
    grads = {k: np.full(v.shape, 0.01, np.float32) for k, v in params.items()}
    make = lambda: flatopt.Lookahead(  # noqa: E731
        flatopt.adam(flatopt.ExponentialLR(1e-2, gamma=0.999, per_update=True)),
        sync_period=3, alpha=0.5,
    )
    opt = make()
    opt.register_trainable_weights(params, grads=grads)
    probe = make()
    probe.register_trainable_weights({k: v.copy() for k, v in params.items()})
    stop = threading.Event()

    def updater():
        i = 0
        while not stop.is_set():
            opt.update()
            i += 1

    thread = threading.Thread(target=updater)
    thread.start()
    checked = 0
    try:
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            state = opt.state_dict()
            assert (state["step_count"], state["skipped_steps"]) == _blob_counters(
                state["checkpoint"]
            )
            probe.load_state_dict(state)  # the blob alone says what the learning rate is
            # Under a schedule the state records the rate as the next update applies it (f32).
            assert float(np.float32(probe.current_lr)) == state["current_lr"]
            assert probe.step_count == state["step_count"]
            opt.slow_weights  # noqa: B018 (must not fail or tear while updates run)
            checked += 1
    finally:
        stop.set()
        thread.join()
    assert checked > 5 and opt.step_count > checked


# ---------------------------------------------------------------------------------------------
# Crafted checkpoints: a valid checksum around state values no update can produce. Loading
# refuses them before anything changes (the next update would write NaN or Inf otherwise).


def _record_offset(blob):
    """Offset of the first buffer record's arrays (docs/checkpoint-format.md)."""
    (clen,) = struct.unpack_from("<Q", blob, 32)
    return 40 + clen + 72 + 8 + 16


def _with_value(state, array, value):
    """The state with element 0 of state array `array` (0 m, 1 v) of buffer 0 set to `value`
    and the checksum recomputed."""
    blob = bytearray(state["checkpoint"])
    at = _record_offset(blob)
    (n,) = struct.unpack_from("<Q", blob, at - 16)
    struct.pack_into("<f", blob, at + 4 * n * array, value)
    body = bytes(blob[:-4])
    return dict(state, checkpoint=body + struct.pack("<I", zlib.crc32(body) & 0xFFFFFFFF))


VALUE_DOMAIN_ROWS = [
    ("negative second moment", lambda s: _with_value(s, 1, -1.0)),
    ("NaN second moment", lambda s: _with_value(s, 1, float("nan"))),
    ("NaN first moment", lambda s: _with_value(s, 0, float("nan"))),
    ("infinite first moment", lambda s: _with_value(s, 0, float("inf"))),
    ("infinite slow weight", lambda s: _with_value(s, 2, float("inf"))),
]


@pytest.mark.parametrize("desc,craft", VALUE_DOMAIN_ROWS, ids=[r[0] for r in VALUE_DOMAIN_ROWS])
def test_impossible_state_values_are_refused(desc, craft):
    opt, p = _trained()
    before = opt.state_dict()
    with pytest.raises(flatopt.CheckpointError):
        opt.load_state_dict(craft(before))
    assert opt.state_dict()["checkpoint"] == before["checkpoint"]
    assert opt.schedule.state_dict() == before["schedule"]


# The same for the state arrays of other rules: (id, optimizer, state array index among the
# present ones, value, the value named in the refusal).
RULE_DOMAIN_ROWS = [
    ("AMSGrad maximum below zero", lambda: flatopt.Adam(lr=1e-2, amsgrad=True), 2, -0.5,
     "AMSGrad maximum v_max[0]"),
    ("Adadelta squared-update average below zero", lambda: flatopt.Adadelta(), 0, -1.0,
     "squared-update average m[0]"),
    ("Adadelta squared-update average -inf", lambda: flatopt.Adadelta(), 0, float("-inf"),
     "squared-update average m[0]"),
    ("Adagrad accumulator below zero", lambda: flatopt.Adagrad(lr=0.1), 0, -1.0,
     "second moment v[0]"),
    ("Rprop step size NaN", lambda: flatopt.Rprop(), 1, float("nan"), "second moment v[0]"),
    ("Rprop step size below zero", lambda: flatopt.Rprop(), 1, -0.01, "second moment v[0]"),
    ("centered RMSprop gradient average +inf",
     lambda: flatopt.RMSprop(centered=True, momentum=0.5), 2, float("inf"),
     "gradient average v_max[0]"),
]


@pytest.mark.parametrize("row", RULE_DOMAIN_ROWS, ids=[r[0] for r in RULE_DOMAIN_ROWS])
def test_impossible_state_values_of_other_rules_are_refused(row):
    _, make, array, value, named = row
    opt = make()
    p = _init()
    opt.register_trainable_weights(p)
    _run(opt, p, grad_stream(SHAPES, seed=3), 0, 4)
    before = opt.state_dict()
    with pytest.raises(flatopt.CheckpointError, match=re.escape(named)):
        opt.load_state_dict(_with_value(before, array, value))
    assert opt.state_dict()["checkpoint"] == before["checkpoint"]


def test_save_to_a_name_at_the_file_system_limit(tmp_path):
    opt, p = _trained()
    path = tmp_path / ("c" * 250)
    opt.save(path)
    other, _ = _trained()
    other.load(path)
    assert other.state_dict()["checkpoint"] == opt.state_dict()["checkpoint"]
    assert [q.name for q in tmp_path.iterdir()] == [path.name]


def _max_rss_mib():
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize("what", ["/dev/zero", "a 2 GiB file that is not a checkpoint"])
def test_load_reads_no_more_than_a_checkpoint(what, tmp_path):
    opt, p = _trained()
    before = opt.state_dict()["checkpoint"]
    path = what
    if not what.startswith("/"):
        path = tmp_path / "big.bin"
        with open(path, "wb") as f:
            f.write(before[:40])  # a checkpoint's header, then 2 GiB of (sparse) zeros
            f.truncate(2**31)
    rss = _max_rss_mib()
    with pytest.raises(flatopt.CheckpointError):
        opt.load(path)
    assert _max_rss_mib() - rss < 256, "the file was read into memory"
    assert opt.state_dict()["checkpoint"] == before
