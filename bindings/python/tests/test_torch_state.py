"""flatopt.torch with compressed optimizer state (issue 16): ``state_dtype`` "bfloat16" /
"int8", ``state_rounding``, ``state_seed``, Lookahead's ``slow_dtype``; state dicts carry the
state as held (bfloat16 tensors; uint8 codes and float32 block scales ``<name>_absmax``) and
restore it bit for bit; a state dict of another precision is converted by the library."""

import io

import pytest

from conftest import needs

torch = needs("torch")

import flatopt  # noqa: E402
import flatopt.torch as ft  # noqa: E402

BLOCK = 256


def make_model():
    torch.manual_seed(0)
    # 2400 + 300 + 300 + 1 elements: several 8-bit blocks, a partial last block, a 1-element
    # buffer
    return torch.nn.Sequential(torch.nn.Linear(8, 300), torch.nn.Tanh(), torch.nn.Linear(300, 1))


def train(model, opt, steps, frozen=None):
    for t in steps:
        g = torch.Generator().manual_seed(t)
        x = torch.randn(16, 8, generator=g)
        opt.zero_grad()
        model(x).square().mean().backward()
        if frozen is not None:
            frozen.grad = None
        opt.step()


def through_torch_save(state_dict):
    buf = io.BytesIO()
    torch.save(state_dict, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def build(name, kw, model):
    lookahead = kw.pop("lookahead", None)
    opt = getattr(ft, name)(model.parameters(), **kw)
    kw["lookahead"] = lookahead
    return opt if lookahead is None else ft.Lookahead(opt, **lookahead)


# (class, arguments, the state keys held compressed): every rule whose state is moments, in
# both compressed formats where the rule allows them.
ROWS = [
    ("AdamW", dict(lr=1e-2, state_dtype="bfloat16"), ("exp_avg", "exp_avg_sq")),
    ("AdamW", dict(lr=1e-2, state_dtype="bfloat16", state_rounding="nearest"),
     ("exp_avg", "exp_avg_sq")),
    ("AdamW", dict(lr=1e-2, state_dtype="int8"), ("exp_avg", "exp_avg_sq")),
    ("Adam", dict(lr=1e-2, amsgrad=True, state_dtype="int8", state_seed=7),
     ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")),
    ("SGD", dict(lr=1e-2, momentum=0.9, state_dtype="bfloat16"), ("momentum_buffer",)),
    ("SGD", dict(lr=1e-2, momentum=0.9, nesterov=True, state_dtype="int8"),
     ("momentum_buffer",)),
    ("RMSprop", dict(lr=1e-3, momentum=0.5, centered=True, state_dtype="int8"),
     ("momentum_buffer", "square_avg", "grad_avg")),
    ("Adagrad", dict(lr=1e-2, state_dtype="bfloat16"), ("sum",)),
    ("Adadelta", dict(lr=0.5, state_dtype="int8"), ("acc_delta", "square_avg")),
    ("Lion", dict(lr=1e-3, state_dtype="int8"), ("exp_avg",)),
    ("Rprop", dict(lr=1e-3, state_dtype="bfloat16"), ("prev", "step_size")),
    ("Lamb", dict(lr=1e-3, state_dtype="bfloat16"), ("exp_avg", "exp_avg_sq")),
    ("Lamb", dict(lr=1e-3, weight_decay=0.01, state_dtype="int8"), ("exp_avg", "exp_avg_sq")),
    ("Lars", dict(lr=1e-2, momentum=0.9, state_dtype="int8"), ("momentum_buffer",)),
    ("Novograd", dict(lr=1e-3, state_dtype="bfloat16"), ("exp_avg", "exp_avg_sq")),
    ("AdamW", dict(lr=1e-2, state_dtype="int8", lookahead=dict(k=3, slow_dtype="bfloat16")),
     ("exp_avg", "exp_avg_sq", "lookahead_slow_buff")),
    ("AdamW", dict(lr=1e-2, state_dtype="bfloat16", lookahead=dict(k=3)),
     ("exp_avg", "exp_avg_sq")),
]
IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for n, kw, _ in ROWS]


def held_dtype(kw, key):
    if key == "lookahead_slow_buff":
        return kw["lookahead"].get("slow_dtype", "float32")
    return kw["state_dtype"]


@pytest.mark.parametrize("name, kw, keys", ROWS, ids=IDS)
def test_state_dict_holds_the_state_as_held_and_restores_bit_for_bit(name, kw, keys):
    model = make_model()
    opt = build(name, dict(kw), model)
    train(model, opt, range(7))
    saved = opt.state_dict()
    for i, p in enumerate(model.parameters()):
        st = saved["state"][i]
        for key in keys:
            dtype = held_dtype(kw, key)
            if dtype == "int8":
                assert st[key].dtype == torch.uint8 and st[key].shape == p.shape, key
                scales = st[key + "_absmax"]
                assert scales.dtype == torch.float32, key
                assert scales.shape == (-(-p.numel() // BLOCK),), key
            else:
                assert st[key].dtype == getattr(torch, dtype) and st[key].shape == p.shape, key
    loaded = through_torch_save(saved)

    twin = make_model()
    twin.load_state_dict(model.state_dict())
    opt2 = build(name, dict(kw), twin)
    opt2.load_state_dict(loaded)
    again = opt2.state_dict()["state"]
    for i, st in saved["state"].items():
        assert st.keys() == again[i].keys()
        for key, value in st.items():
            assert torch.equal(value, again[i][key]), (i, key)
    train(model, opt, range(7, 14))
    train(twin, opt2, range(7, 14))
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)


def test_bfloat16_to_nearest_rounds_the_float32_moments():
    """After one step the moments are the float32 ones rounded to nearest even: the options
    reach the library, and the state dict shows what it holds."""
    ref, model = make_model(), make_model()
    ref_opt = ft.AdamW(ref.parameters(), lr=1e-2)
    opt = ft.AdamW(model.parameters(), lr=1e-2, state_dtype="bfloat16", state_rounding="nearest")
    train(ref, ref_opt, range(1))
    train(model, opt, range(1))
    want, got = ref_opt.state_dict()["state"], opt.state_dict()["state"]
    for i in want:
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(got[i][key], want[i][key].to(torch.bfloat16)), (i, key)


@pytest.mark.parametrize("seeds, same", [((3, 3), True), ((3, 4), False)],
                         ids=["same seed", "other seed"])
def test_stochastic_rounding_follows_the_seed(seeds, same):
    runs = []
    for seed in seeds:
        model = make_model()
        opt = ft.AdamW(model.parameters(), lr=1e-2, state_dtype="bfloat16", state_seed=seed)
        train(model, opt, range(5))
        runs.append(opt.state_dict()["state"][0]["exp_avg_sq"])
    assert torch.equal(*runs) is same


# (saved with, loaded into): every pair of precisions converts through the library's load.
PAIRS = [(a, b) for a in ("float32", "bfloat16", "int8") for b in ("float32", "bfloat16", "int8")
         if a != b]


@pytest.mark.parametrize("saved_as, loaded_as", PAIRS, ids=[f"{a}->{b}" for a, b in PAIRS])
def test_a_state_dict_of_another_precision_is_converted(saved_as, loaded_as):
    model = make_model()
    opt = ft.AdamW(model.parameters(), lr=1e-2, state_dtype=saved_as)
    train(model, opt, range(5))
    saved = opt.state_dict()
    twin = make_model()
    twin.load_state_dict(model.state_dict())
    opt2 = ft.AdamW(twin.parameters(), lr=1e-2, state_dtype=loaded_as)
    opt2.load_state_dict(through_torch_save(saved))
    got = opt2.state_dict()["state"]
    # what the loaded optimizer holds, read back as float32 through a float32 optimizer
    check = ft.AdamW(make_model().parameters(), lr=1e-2)
    check.load_state_dict(opt2.state_dict())
    back = check.state_dict()["state"]
    source = ft.AdamW(make_model().parameters(), lr=1e-2)
    source.load_state_dict(saved)
    orig = source.state_dict()["state"]
    for i in orig:
        assert int(got[i]["step"]) == 5
        for key in ("exp_avg", "exp_avg_sq"):
            want_dtype = torch.uint8 if loaded_as == "int8" else getattr(torch, loaded_as)
            assert got[i][key].dtype == want_dtype
            a, b = orig[i][key], back[i][key]
            if loaded_as == "float32":  # widening (decoding 8 bits: code value times scale)
                assert torch.equal(a, b), (i, key)
            elif loaded_as == "bfloat16":  # to nearest even, as torch rounds
                assert torch.equal(b, a.to(torch.bfloat16).to(torch.float32)), (i, key)
            else:  # into 8 bits, to nearest: half a step of 3 mantissa bits, or below the
                # smallest code of the block
                scale = a.abs().reshape(-1)
                scale = torch.nn.functional.pad(scale, (0, -scale.numel() % BLOCK))
                block_max = scale.reshape(-1, BLOCK).amax(1).repeat_interleave(BLOCK)
                block_max = block_max[: a.numel()].reshape(a.shape)
                tol = a.abs() / 16 + block_max * 2.0**-15
                assert bool(((a - b).abs() <= tol).all()), (i, key)
    train(twin, opt2, range(5, 8))  # and it steps on
    assert all(bool(torch.isfinite(p).all()) for p in twin.parameters())


def test_a_frozen_parameter_keeps_its_compressed_state_bit_for_bit():
    model = make_model()
    opt = ft.AdamW(model.parameters(), lr=1e-2, state_dtype="int8")
    train(model, opt, range(3))
    frozen = model[2].weight
    before = {k: v.clone() for k, v in opt.state_dict()["state"][2].items()}
    train(model, opt, range(3, 6), frozen=frozen)  # its cohort splits off
    after = opt.state_dict()["state"]
    for k, v in before.items():
        assert torch.equal(after[2][k], v), k
    assert int(after[0]["step"]) == 6


def saved_int8():
    model = make_model()
    opt = ft.AdamW(model.parameters(), lr=1e-2, state_dtype="int8")
    train(model, opt, range(2))
    return opt.state_dict()


def drop_scales(sd):
    del sd["state"][0]["exp_avg_absmax"]


def short_codes(sd):
    sd["state"][0]["exp_avg"] = sd["state"][0]["exp_avg"].reshape(-1)[:-1]


def short_scales(sd):
    sd["state"][0]["exp_avg_absmax"] = sd["state"][0]["exp_avg_absmax"][:-1]


def integer_scales(sd):
    sd["state"][0]["exp_avg_absmax"] = sd["state"][0]["exp_avg_absmax"].to(torch.int32)


def negative_scale(sd):
    sd["state"][0]["exp_avg_absmax"][0] = -1.0


def mixed_formats(sd):
    # one parameter's moments in float32, the others' in 8 bits: no one format for them
    sd["state"][0]["exp_avg"] = torch.zeros(300, 8)
    del sd["state"][0]["exp_avg_absmax"]


def integer_state(sd):
    sd["state"][1]["exp_avg_sq"] = torch.zeros(300, dtype=torch.int32)


# (what is wrong, the change to a saved int8 state dict, words the error must contain)
BAD = [
    ("missing block scales", drop_scales, "'exp_avg_absmax'"),
    ("codes of the wrong size", short_codes, "codes"),
    ("block scales of the wrong size", short_scales, "block scales"),
    ("integer block scales", integer_scales, "float32"),
    ("a negative block scale", negative_scale, "scale"),
    ("8-bit beside float32 in one cohort", mixed_formats, "several formats"),
    ("an integer state tensor", integer_state, "exp_avg_sq"),
]


@pytest.mark.parametrize("what, change, words", BAD, ids=[b[0] for b in BAD])
def test_a_bad_compressed_state_dict_is_refused_and_changes_nothing(what, change, words):
    model = make_model()
    opt = ft.AdamW(model.parameters(), lr=1e-2, state_dtype="int8")
    train(model, opt, range(3))
    before = opt.state_dict()
    sd = saved_int8()
    change(sd)
    with pytest.raises(flatopt.CheckpointError, match=words):
        opt.load_state_dict(sd)
    after = opt.state_dict()
    for i, st in before["state"].items():
        for k, v in st.items():
            assert torch.equal(after["state"][i][k], v), (i, k)


# (constructor, words of the error): options refused at construction.
REFUSED = [
    (lambda ps: ft.AdamW(ps, state_dtype="float16"), "state_dtype"),
    (lambda ps: ft.AdamW(ps, state_rounding="up"), "state_rounding"),
    (lambda ps: ft.AdamW(ps, state_seed=-1), "state_seed"),
    (lambda ps: ft.Rprop(ps, state_dtype="int8"), "Rprop"),
    (lambda ps: ft.Adafactor(ps, state_dtype="int8"), "float32 for Adafactor"),
    (lambda ps: ft.Adafactor(ps, state_dtype="bfloat16"), "Adafactor"),
    (lambda ps: ft.Lookahead(ft.AdamW(ps), slow_dtype="int8"), "slow_dtype"),
]


@pytest.mark.parametrize("make, words", REFUSED, ids=[r[1] for r in REFUSED])
def test_invalid_options_are_refused(make, words):
    with pytest.raises(flatopt.InvalidArgumentError, match=words):
        make(list(make_model().parameters()))


def test_a_refused_lookahead_leaves_the_base_optimizer_as_it_was():
    model = make_model()
    opt = ft.AdamW(model.parameters(), lr=1e-2, state_dtype="bfloat16")
    train(model, opt, range(2))
    before = opt.state_dict()
    with pytest.raises(flatopt.InvalidArgumentError):
        ft.Lookahead(opt, slow_dtype="int8")
    assert opt._lookahead is None
    after = opt.state_dict()
    for i, st in before["state"].items():
        assert st.keys() == after["state"][i].keys()
        for k, v in st.items():
            assert torch.equal(after["state"][i][k], v)
    ft.Lookahead(opt, slow_dtype="bfloat16")  # and it can still be wrapped


@pytest.mark.parametrize("state_dtype", ["bfloat16", "int8"])
def test_a_bfloat16_model_with_compressed_state_resumes_bit_for_bit(state_dtype):
    """16-bit parameters: float32 master weights beside compressed moments, both carried."""
    def make():
        return make_model().to(torch.bfloat16)

    def steps(model, opt, ts):
        for t in ts:
            x = torch.randn(16, 8, generator=torch.Generator().manual_seed(t))
            opt.zero_grad()
            model(x.to(torch.bfloat16)).float().square().mean().backward()
            opt.step()

    model = make()
    opt = ft.Lookahead(ft.AdamW(model.parameters(), lr=1e-2, state_dtype=state_dtype), k=2)
    steps(model, opt, range(5))
    saved = through_torch_save(opt.state_dict())
    assert saved["state"][0]["master_param"].dtype == torch.float32
    twin = make()
    twin.load_state_dict(model.state_dict())
    opt2 = ft.Lookahead(ft.AdamW(twin.parameters(), lr=1e-2, state_dtype=state_dtype), k=2)
    opt2.load_state_dict(saved)
    steps(model, opt, range(5, 9))
    steps(twin, opt2, range(5, 9))
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)
