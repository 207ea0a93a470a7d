//! Compressed optimizer state through the engine (`docs/numerics.md`, "Compressed state"):
//! every base rule of the shared table under the pipeline variants, with its moments held as
//! bf16 (stochastic and nearest rounding) or int8 and its slow weights as bf16, against the
//! composition that defines it (decode, the f32 pass, encode with the public codecs), bit for
//! bit; every tier, 2 threads, split ranges and shards bit-identical to one scalar process;
//! refusals; checkpoint round trips and conversions; memory per element; and the quality of
//! training against f32 state.

mod common;

use common::{bases, bits, pipelines, precisions, trust_bases, Rng};
use flatopt::kernels::{
    self, dequantize_q8, narrow_bf16_stochastic, narrow_from_f32, q8_block_count, quantize_q8,
    quantize_q8_stochastic, widen_to_f32, Buffers, Half, Q8Code, SrKey, StateDtype, StateRounding,
    Stream, Q8_BLOCK,
};
use flatopt::{Base, Config, Error, Optimizer, Tier};

fn is_rprop(base: &Base) -> bool {
    matches!(base, Base::Rprop { .. })
}

/// The rules with per-buffer norms (no split step).
fn is_trust(base: &Base) -> bool {
    matches!(
        base,
        Base::Lamb { .. } | Base::Lars { .. } | Base::Novograd { .. }
    )
}

/// Every (name, config) row: each base (the rules with per-buffer norms too) under each
/// pipeline and precision (Rprop without int8, which it refuses).
fn rows() -> Vec<(String, Config)> {
    let mut rows = Vec::new();
    for (bname, base, lr) in bases().into_iter().chain(trust_bases()) {
        for (pname, f) in pipelines() {
            for (sname, s) in precisions() {
                if is_rprop(&base) && s(Config::new(base, lr)).state_dtype == StateDtype::Int8 {
                    continue;
                }
                rows.push((
                    format!("{bname}/{pname}/{sname}"),
                    s(f(Config::new(base, lr))),
                ));
            }
        }
    }
    rows
}

/// The reference state of one buffer: the f32 values the held state decodes to.
struct RefState {
    /// m, v, v_max, slow (empty where unused).
    x: [Vec<f32>; 4],
}

fn state_of(o: &Optimizer, i: usize, n: usize) -> RefState {
    let (m, v, vm) = o.config().base.state_used();
    let mut x: [Vec<f32>; 4] = std::array::from_fn(|_| Vec::new());
    for (j, used) in [m, v, vm].into_iter().enumerate() {
        if used {
            x[j] = vec![0.0; n];
        }
    }
    let [a, b, c, d] = &mut x;
    o.moments_f32(i, [a, b, c]).unwrap();
    if o.config().lookahead.is_some() {
        *d = vec![0.0; n];
        o.slow_weights_f32(i, d).unwrap();
    }
    RefState { x }
}

/// `x` encoded as `dtype` and decoded again, the way the engine holds it: bf16 rounded
/// stochastically with the key of `stream` (index `first + j`) or to nearest, int8 blocks
/// from the start rounded the same way.
fn held(
    cfg: &Config,
    dtype: StateDtype,
    code: Q8Code,
    stream: Stream,
    step: u64,
    first: u64,
    x: &[f32],
) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    match dtype {
        StateDtype::F32 => out.copy_from_slice(x),
        StateDtype::Bf16 => {
            let mut h = vec![0u16; x.len()];
            match cfg.state_rounding {
                StateRounding::Stochastic => {
                    let key = SrKey {
                        seed: cfg.state_seed,
                        step,
                        stream,
                    };
                    narrow_bf16_stochastic(Tier::Scalar, key, first, x, &mut h).unwrap()
                }
                StateRounding::Nearest => {
                    narrow_from_f32(Tier::Scalar, Half::Bf16, x, &mut h).unwrap()
                }
            }
            widen_to_f32(Tier::Scalar, Half::Bf16, &h, &mut out).unwrap();
        }
        StateDtype::Int8 => {
            let mut c = vec![0u8; x.len()];
            let mut s = vec![0f32; q8_block_count(x.len())];
            match cfg.state_rounding {
                StateRounding::Stochastic => {
                    let key = SrKey {
                        seed: cfg.state_seed,
                        step,
                        stream,
                    };
                    quantize_q8_stochastic(Tier::Scalar, code, key, first, x, &mut c, &mut s)
                }
                StateRounding::Nearest => quantize_q8(Tier::Scalar, code, x, &mut c, &mut s),
            }
            .unwrap();
            dequantize_q8(Tier::Scalar, code, &c, &s, &mut out).unwrap();
        }
    }
    out
}

const LENS: [usize; 3] = [700, 1, 2 * 1024 + 300];

/// Each row through the engine on the scalar tier against the composition that defines it,
/// step by step: the reference decodes the engine's state before the update, runs the public
/// f32 kernel with the update's plan, and encodes the new state with the public codecs; the
/// parameters and the decoded state must agree bit for bit.
#[test]
fn engine_equals_decode_f32_pass_encode_for_every_row() {
    let mut count = 0;
    for (name, cfg) in rows() {
        check_composition(&name, &cfg, &|rng, _, n| rng.vec(n, 0.3));
        count += 1;
    }
    assert!(count > 300, "{count} rows");
}

/// Gradients of buffer `i` (of `n` elements) at step `t`: `rng` as random source.
type GradSource = dyn Fn(&mut Rng, (u64, usize), usize) -> Vec<f32>;

/// Gradients that put every kind of block into 8-bit state: normal values, a NaN and
/// infinities at one step (their codes stay in the state, which later steps decode with finite
/// gradients), magnitudes so small that a block's scale is subnormal, so large that the
/// second moment overflows, and zeros.
fn hostile_grads(rng: &mut Rng, (t, i): (u64, usize), n: usize) -> Vec<f32> {
    let mut g = rng.vec(n, 0.3);
    for (j, x) in g.iter_mut().enumerate() {
        match (i, j / Q8_BLOCK) {
            (0, 1) if t == 2 && j == 300 => *x = f32::NAN,
            (0, 2) if t == 3 && j % 50 == 0 => {
                *x = if j % 100 == 0 {
                    f32::INFINITY
                } else {
                    -f32::INFINITY
                }
            }
            (2, 1) => *x *= 1e-40,
            (2, 2) if j % 7 == 0 => *x *= 1e25,
            (2, 4) => *x = 0.0,
            _ => {}
        }
    }
    g
}

/// The 8-bit state of Adam, AMSGrad and AdamW (the fused pass) with hostile gradients
/// ([`hostile_grads`]) under the `propagate` policy, so that NaN and Inf reach the state:
/// against the composition on the scalar tier, and every tier against the scalar one.
#[test]
fn int8_state_with_hostile_values_equals_the_composition_on_every_tier() {
    let mut count = 0;
    for (name, base, lr) in bases() {
        if !matches!(base, Base::Adam { .. }) {
            continue;
        }
        for (offset, rounding) in [
            (0, StateRounding::Stochastic),
            ((1 << 32) - 1000, StateRounding::Stochastic),
            (0, StateRounding::Nearest),
        ] {
            let cfg = Config {
                state_dtype: StateDtype::Int8,
                state_rounding: rounding,
                state_seed: 5,
                state_index_offset: offset,
                ..Config::new(base, lr).nonfinite(flatopt::NonFinitePolicy::Propagate)
            };
            let name = format!("{name}/int8/{rounding:?}/offset {offset}");
            check_composition(&name, &cfg, &hostile_grads);
            let want = run_with(&cfg.clone().tier(Tier::Scalar), &LENS, 5, 0, &hostile_grads);
            for tier in Tier::ALL.into_iter().filter(|t| t.is_available()) {
                let got = run_with(&cfg.clone().tier(tier), &LENS, 5, 0, &hostile_grads);
                assert!(got == want, "{name} on {tier}");
            }
            count += 1;
        }
    }
    assert!(count >= 6, "{count} rows");
}

/// `cfg` through the engine on the scalar tier against the composition that defines it, six
/// steps with the gradients of `grads`.
fn check_composition(name: &str, cfg: &Config, grads: &GradSource) {
    {
        let cfg = cfg.clone().tier(Tier::Scalar);
        let mut rng = Rng(21);
        let mut params: Vec<Vec<f32>> = LENS.iter().map(|&n| rng.vec(n, 1.0)).collect();
        let mut o = Optimizer::new(cfg.clone()).unwrap();
        let views: Vec<&[f32]> = params.iter().map(|p| &p[..]).collect();
        o.register(&views).unwrap();
        let codes = kernels::q8_codes(&kernels::Rule::for_step(&cfg.base, 1, 0.0))
            .unwrap_or([Q8Code::Signed; 3]);
        for t in 1..=6u64 {
            let grads: Vec<Vec<f32>> = LENS
                .iter()
                .enumerate()
                .map(|(i, &n)| grads(&mut rng, (t, i), n))
                .collect();
            let before: Vec<RefState> = LENS
                .iter()
                .enumerate()
                .map(|(i, &n)| state_of(&o, i, n))
                .collect();
            let mut want = params.clone();
            {
                let mut ps: Vec<&mut [f32]> = params.iter_mut().map(|p| &mut p[..]).collect();
                let gs: Vec<&[f32]> = grads.iter().map(|g| &g[..]).collect();
                o.step(&mut ps, &gs).unwrap();
            }
            let plan = *o.group_plan(0).unwrap();
            let mut first = cfg.state_index_offset;
            for (i, &n) in LENS.iter().enumerate() {
                let mut st = RefState {
                    x: before[i].x.clone(),
                };
                let [m, v, vm, slow] = &mut st.x;
                let b = Buffers {
                    param: &mut want[i],
                    grad: &grads[i],
                    m,
                    v,
                    v_max: vm,
                    slow,
                };
                kernels::apply(Tier::Scalar, &plan, b).unwrap();
                let streams = [Stream::M, Stream::V, Stream::VMax];
                // NovoGrad's nu (element 0 of v) is rounded to nearest whatever the rounding
                // (docs/numerics.md, "Per-buffer norms"); its other elements are 0.
                let nu = matches!(cfg.base, Base::Novograd { .. }).then(|| st.x[1][0]);
                for j in 0..3 {
                    if !st.x[j].is_empty() {
                        st.x[j] = held(
                            &cfg,
                            cfg.state_dtype,
                            codes[j],
                            streams[j],
                            t,
                            first,
                            &st.x[j],
                        );
                    }
                }
                if let Some(nu) = nu {
                    let nearest = Config {
                        state_rounding: StateRounding::Nearest,
                        ..cfg.clone()
                    };
                    st.x[1][0] = held(
                        &nearest,
                        cfg.state_dtype,
                        codes[1],
                        Stream::V,
                        t,
                        first,
                        &[nu],
                    )[0];
                }
                if plan.sync_alpha.is_some() {
                    st.x[3] = held(
                        &cfg,
                        cfg.slow_dtype,
                        Q8Code::Signed,
                        Stream::Slow,
                        t,
                        first,
                        &st.x[3],
                    );
                    want[i].copy_from_slice(&st.x[3]);
                }
                let got = state_of(&o, i, n);
                for j in 0..4 {
                    assert_eq!(
                        bits(&got.x[j]),
                        bits(&st.x[j]),
                        "{name} step {t} buffer {i} state {j}"
                    );
                }
                assert_eq!(
                    bits(&params[i]),
                    bits(&want[i]),
                    "{name} step {t} buffer {i} params"
                );
                first += n as u64;
            }
        }
    }
}

/// Runs `steps` updates of `cfg` over buffers of `lens` with the given split and returns the
/// parameters and the decoded state. `how`: 0 `step`, 1 the split step with ranges of 512
/// elements (on 8-bit block boundaries) applied in reverse order.
fn run(cfg: &Config, lens: &[usize], steps: usize, how: u8) -> (Vec<Vec<u32>>, Vec<Vec<u32>>) {
    run_with(cfg, lens, steps, how, &|rng, _, n| rng.vec(n, 0.3))
}

/// [`run`] with the gradients of `grads`.
fn run_with(
    cfg: &Config,
    lens: &[usize],
    steps: usize,
    how: u8,
    grads: &GradSource,
) -> (Vec<Vec<u32>>, Vec<Vec<u32>>) {
    let mut rng = Rng(22);
    let mut params: Vec<Vec<f32>> = lens.iter().map(|&n| rng.vec(n, 1.0)).collect();
    let mut o = Optimizer::new(cfg.clone()).unwrap();
    let views: Vec<&[f32]> = params.iter().map(|p| &p[..]).collect();
    o.register(&views).unwrap();
    for t in 1..=steps as u64 {
        let grads: Vec<Vec<f32>> = lens
            .iter()
            .enumerate()
            .map(|(i, &n)| grads(&mut rng, (t, i), n))
            .collect();
        let gs: Vec<&[f32]> = grads.iter().map(|g| &g[..]).collect();
        if how == 0 {
            let mut ps: Vec<&mut [f32]> = params.iter_mut().map(|p| &mut p[..]).collect();
            o.step(&mut ps, &gs).unwrap();
        } else {
            let step = o.begin_step(&gs).unwrap().unwrap();
            for ((p, g), st) in params.iter_mut().zip(&grads).zip(o.states_mut()) {
                let mut pieces = Vec::new();
                let (mut p, mut g, mut st) = (&mut p[..], &g[..], st);
                while p.len() > 512 {
                    let (p0, p1) = p.split_at_mut(512);
                    let (g0, g1) = g.split_at(512);
                    let (s0, s1) = st.split_at(512);
                    pieces.push((p0, g0, s0));
                    (p, g, st) = (p1, g1, s1);
                }
                pieces.push((p, g, st));
                for (p, g, s) in pieces.into_iter().rev() {
                    step.apply(p, g, s).unwrap();
                }
            }
            o.end_step(step).unwrap();
        }
    }
    let state = lens
        .iter()
        .enumerate()
        .flat_map(|(i, &n)| state_of(&o, i, n).x.map(|x| bits(&x)))
        .collect();
    (params.iter().map(|p| bits(p)).collect(), state)
}

/// A few rows on every tier and the split step, bit-identical to the scalar tier.
#[test]
fn tiers_and_splits_are_bit_identical() {
    let picks = [
        "adam/everything",
        "adam_amsgrad/lookahead_k1",
        "sgd_momentum/plain",
        "rmsprop_centered_momentum/plain",
        "lion_decay/clip_norm",
        "adadelta/scheduled",
        "rprop/lookahead_k5",
        "lamb/everything",
        "lamb_decay_eps_root/scheduled",
        "lars_nesterov_eps_decay/clip_norm",
        "novograd_decay_eps_root/lookahead_k1",
    ];
    let lens = [1000, 300, 2048 + 77];
    let mut count = 0;
    for (name, cfg) in rows() {
        if !picks.iter().any(|p| name.starts_with(p)) {
            continue;
        }
        let want = run(&cfg.clone().tier(Tier::Scalar), &lens, 3, 0);
        for tier in Tier::ALL {
            if tier.is_available() {
                assert!(
                    run(&cfg.clone().tier(tier), &lens, 3, 0) == want,
                    "{name} on {tier}"
                );
            }
        }
        if !is_trust(&cfg.base) {
            assert!(run(&cfg.clone(), &lens, 3, 1) == want, "{name}: split step");
        }
        count += 1;
    }
    assert!(count >= 50, "{count} rows");
}

/// 2 threads (past the parallel threshold) bit-identical to one, for each precision.
#[test]
fn threads_are_bit_identical() {
    let lens = [
        flatopt::engine::PARALLEL_MIN_ELEMENTS / 2 + 1000,
        300,
        flatopt::engine::PARALLEL_MIN_ELEMENTS / 2 + 77,
    ];
    for (name, cfg) in rows() {
        if !(name.starts_with("adam/everything/") || name.starts_with("lamb/everything/")) {
            continue;
        }
        let want = run(&cfg, &lens, 2, 0);
        assert!(
            run(&cfg.clone().threads(2), &lens, 2, 0) == want,
            "{name} on 2 threads"
        );
    }
}

/// Two shards (the second starting on a sum-of-squares block, given its index offset) step
/// bit-identically with one optimizer over the whole buffer.
#[test]
fn shards_match_one_process() {
    let n = 3 * 4096 + 77;
    let cut = 2 * 4096;
    for (name, cfg) in rows() {
        if !(name.starts_with("adam/")
            || name.starts_with("rmsprop_centered_momentum/")
            || name.starts_with("sgd_nesterov/"))
        {
            continue;
        }
        let mut rng = Rng(23);
        let mut whole_p = rng.vec(n, 1.0);
        let mut shard_p = whole_p.clone();
        let mut whole = Optimizer::new(cfg.clone()).unwrap();
        whole.register(&[&whole_p]).unwrap();
        let offsets = [cfg.state_index_offset, cfg.state_index_offset + cut as u64];
        let mut shards: Vec<Optimizer> = [(0, cut), (cut, n)]
            .iter()
            .zip(offsets)
            .map(|(&(a, b), off)| {
                let mut o = Optimizer::new(Config {
                    state_index_offset: off,
                    ..cfg.clone()
                })
                .unwrap();
                o.register(&[&shard_p[a..b]]).unwrap();
                o
            })
            .collect();
        for t in 0..5 {
            let g = rng.vec(n, 0.3);
            whole.step(&mut [&mut whole_p], &[&g]).unwrap();
            let mut sum = 0.0;
            for (o, (a, b)) in shards.iter().zip([(0, cut), (cut, n)]) {
                let mut part = vec![0.0; o.sum_squares_block_count()];
                o.sum_squares_partials(&[&g[a..b]], &mut part).unwrap();
                sum = part.iter().fold(sum, |acc, x| acc + x);
            }
            let (p0, p1) = shard_p.split_at_mut(cut);
            shards[0]
                .step_with_sum_squares(&mut [p0], &[&g[..cut]], sum)
                .unwrap();
            shards[1]
                .step_with_sum_squares(&mut [p1], &[&g[cut..]], sum)
                .unwrap();
            assert_eq!(bits(&whole_p), bits(&shard_p), "{name} step {t}");
        }
        let w = state_of(&whole, 0, n);
        let s0 = state_of(&shards[0], 0, cut);
        let s1 = state_of(&shards[1], 0, n - cut);
        for j in 0..4 {
            let joined: Vec<f32> = s0.x[j].iter().chain(&s1.x[j]).copied().collect();
            assert_eq!(bits(&w.x[j]), bits(&joined), "{name} state {j}");
        }
    }
}

/// A split that cuts an 8-bit block is refused by `Step::apply`, naming the block size and
/// the element, and changes nothing; bf16 state splits anywhere.
#[test]
fn a_range_cutting_an_8bit_block_is_refused() {
    let cfg = Config {
        state_dtype: StateDtype::Int8,
        ..Config::new(Base::adam(), 1e-2)
    };
    let mut p = vec![0.5f32; 1000];
    let g = vec![0.1f32; 1000];
    let mut o = Optimizer::new(cfg).unwrap();
    o.register(&[&p]).unwrap();
    let before = state_of(&o, 0, 1000).x;
    let step = o.begin_step(&[&g]).unwrap().unwrap();
    let st = o.states_mut().next().unwrap();
    let (s0, s1) = st.split_at(300);
    let (p0, p1) = p.split_at_mut(300);
    let e = step.apply(p0, &g[..300], s0).unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(e, Error::InvalidArgument { name: "range", .. }),
        "{msg}"
    );
    assert!(msg.contains("256") && msg.contains("300"), "{msg}");
    assert!(step.apply(p1, &g[300..], s1).is_err());
    assert_eq!(p, vec![0.5; 1000]);
    assert_eq!(bits(&state_of(&o, 0, 1000).x[0]), bits(&before[0]));
}

/// Refused configurations, each naming the field.
#[test]
fn refused_configurations_name_the_field() {
    let rprop = Config {
        state_dtype: StateDtype::Int8,
        ..Config::new(Base::rprop(), 1e-2)
    };
    let e = Optimizer::new(rprop).unwrap_err().to_string();
    assert!(e.contains("state_dtype") && e.contains("Rprop"), "{e}");
    let slow = Config {
        slow_dtype: StateDtype::Int8,
        ..Config::new(Base::adam(), 1e-2).lookahead(5, 0.5)
    };
    let e = Optimizer::new(slow).unwrap_err().to_string();
    assert!(e.contains("slow_dtype"), "{e}");
    // Rprop takes bf16.
    let ok = Config {
        state_dtype: StateDtype::Bf16,
        ..Config::new(Base::rprop(), 1e-2)
    };
    Optimizer::new(ok).unwrap();
}

/// Checkpoints of compressed state resume bit-identically (saved as the decoded f32 values,
/// which encode back to the same state), in f32, bf16 and int8; a checkpoint of another
/// precision is converted (encoded as the loading optimizer holds its state).
#[test]
fn checkpoints_resume_and_convert() {
    for (name, cfg) in rows() {
        if !(name.starts_with("adam/")
            || name.starts_with("sgd_momentum/lookahead_k5")
            || name.starts_with("adagrad/"))
        {
            continue;
        }
        let mut rng = Rng(24);
        let mut p = rng.vec(1500, 1.0);
        let mut a = Optimizer::new(cfg.clone()).unwrap();
        a.register(&[&p]).unwrap();
        for _ in 0..3 {
            a.step(&mut [&mut p], &[&rng.vec(1500, 0.3)]).unwrap();
        }
        let bytes = a.save();
        let mut q = p.clone();
        let mut b = Optimizer::new(cfg.clone()).unwrap();
        b.register(&[&q]).unwrap();
        b.load(&bytes).unwrap();
        assert_eq!(a.save(), b.save(), "{name}");
        for _ in 0..3 {
            let g = rng.vec(1500, 0.3);
            a.step(&mut [&mut p], &[&g]).unwrap();
            b.step(&mut [&mut q], &[&g]).unwrap();
        }
        assert_eq!(bits(&p), bits(&q), "{name}: resumed");
        // Into f32: the decoded values exactly.
        let f32cfg = Config {
            state_dtype: StateDtype::F32,
            slow_dtype: StateDtype::F32,
            ..cfg.clone()
        };
        let mut c = Optimizer::new(f32cfg).unwrap();
        c.register(&[&q]).unwrap();
        c.load(&a.save()).unwrap();
        for j in 0..4 {
            assert_eq!(
                bits(&state_of(&c, 0, 1500).x[j]),
                bits(&state_of(&a, 0, 1500).x[j]),
                "{name}"
            );
        }
        // And an f32 checkpoint into this precision: encoded to nearest / the 8-bit code.
        let mut d = Optimizer::new(cfg.clone()).unwrap();
        d.register(&[&q]).unwrap();
        d.load(&c.save()).unwrap();
        assert_eq!(d.save(), a.save(), "{name}: converted back");
    }
}

/// The bytes a state array of `n` elements takes in a format-4 checkpoint.
fn held_bytes(dtype: StateDtype, n: usize) -> usize {
    match dtype {
        StateDtype::F32 => 4 * n,
        StateDtype::Bf16 => 2 * n,
        StateDtype::Int8 => n + 4 * q8_block_count(n),
    }
}

/// `rounds` updates of `o` over buffers of `LENS` (parameters `p`), gradients from `rng`.
fn train(o: &mut Optimizer, p: &mut [Vec<f32>], rng: &mut Rng, rounds: usize) {
    for _ in 0..rounds {
        let g: Vec<Vec<f32>> = LENS.iter().map(|&n| rng.vec(n, 0.3)).collect();
        let gs: Vec<&[f32]> = g.iter().map(|x| x.as_slice()).collect();
        let mut ps: Vec<&mut [f32]> = p.iter_mut().map(|x| x.as_mut_slice()).collect();
        o.step(&mut ps, &gs).unwrap();
    }
}

/// Format 4: every row's checkpoint holds its state as held (the size of the held arrays:
/// bf16 2 bytes, int8 a byte and a scale per 256 elements), loads back bit for bit (the next
/// save is the same bytes) and continues bit-identically; f32 optimizers keep format 1.
#[test]
fn checkpoints_hold_state_as_held_for_every_row() {
    let mut checked = 0;
    for (name, cfg) in rows() {
        let mut rng = Rng(31);
        let mut p: Vec<Vec<f32>> = LENS.iter().map(|&n| rng.vec(n, 1.0)).collect();
        let mut a = Optimizer::new(cfg.clone()).unwrap();
        a.register(&p.iter().map(|x| x.as_slice()).collect::<Vec<_>>())
            .unwrap();
        train(&mut a, &mut p, &mut rng, 3);
        let bytes = a.save();
        assert_eq!(bytes.len(), a.checkpoint_size(), "{name}");
        assert_eq!(&bytes[8..12], &4u32.to_le_bytes(), "{name}: format version");
        // Against the f32 configuration's checkpoint (format 1): the arrays shrink as held.
        let f32cfg = Config {
            state_dtype: StateDtype::F32,
            slow_dtype: StateDtype::F32,
            ..cfg.clone()
        };
        let mut f = Optimizer::new(f32cfg).unwrap();
        f.register(&p.iter().map(|x| x.as_slice()).collect::<Vec<_>>())
            .unwrap();
        let (m, v, vm) = cfg.base.state_used();
        let moments = [m, v, vm].iter().filter(|&&u| u).count();
        let slow = usize::from(cfg.lookahead.is_some());
        // (An 8-bit array of one element takes 5 bytes: it may grow.)
        let shrink: i64 = LENS
            .iter()
            .map(|&n| {
                let d = |t| 4 * n as i64 - held_bytes(t, n) as i64;
                moments as i64 * d(cfg.state_dtype) + slow as i64 * d(cfg.slow_dtype)
            })
            .sum();
        assert_eq!(
            &f.save()[8..12],
            &1u32.to_le_bytes(),
            "{name}: f32 state, format 1"
        );
        // Format 4 is format 3's layout (the groups, here with a loss scaler) with the scaler
        // behind a flag word and a reserved word (8 bytes) and the two format words (8).
        f.set_loss_scaler(Some(flatopt::LossScaler::default()));
        let v3 = f.checkpoint_size();
        assert_eq!(&f.save()[8..12], &3u32.to_le_bytes(), "{name}");
        assert_eq!(
            bytes.len() as i64 + shrink,
            v3 as i64 - 24 + 16,
            "{name}: checkpoint size"
        );
        let mut q = p.clone();
        let mut b = Optimizer::new(cfg.clone()).unwrap();
        b.register(&q.iter().map(|x| x.as_slice()).collect::<Vec<_>>())
            .unwrap();
        b.load(&bytes).unwrap();
        assert_eq!(b.save(), bytes, "{name}: loaded state saves the same bytes");
        let mut rng_b = Rng(99);
        let mut rng_a = Rng(99);
        train(&mut a, &mut p, &mut rng_a, 3);
        train(&mut b, &mut q, &mut rng_b, 3);
        for (x, y) in p.iter().zip(&q) {
            assert_eq!(bits(x), bits(y), "{name}: resumed");
        }
        assert_eq!(a.save(), b.save(), "{name}: resumed state");
        checked += 1;
    }
    assert!(checked > 300, "{checked} rows");
}

/// A checkpoint of one precision loaded into an optimizer of another: each array decoded and
/// encoded as the loading optimizer holds it (bf16 to nearest, 8-bit with fresh scales), for
/// every pair of state and slow-weight formats (Adam with AMSGrad under Lookahead, so that
/// signed and unsigned codes and the slow weights are all converted).
#[test]
fn checkpoints_convert_between_precisions() {
    let formats = [
        (StateDtype::F32, StateDtype::F32),
        (StateDtype::Bf16, StateDtype::F32),
        (StateDtype::Int8, StateDtype::Bf16),
        (StateDtype::Bf16, StateDtype::Bf16),
        (StateDtype::Int8, StateDtype::F32),
    ];
    let base = Base::Adam {
        b1: 0.9,
        b2: 0.999,
        eps: 1e-8,
        amsgrad: true,
    };
    let of = |(state_dtype, slow_dtype): (StateDtype, StateDtype)| Config {
        state_dtype,
        slow_dtype,
        state_rounding: StateRounding::Nearest,
        ..Config::new(base, 1e-2).lookahead(5, 0.5)
    };
    let codes = kernels::q8_codes(&kernels::Rule::for_step(&base, 1, 0.0)).unwrap();
    for from in formats {
        let mut rng = Rng(41);
        let mut p: Vec<Vec<f32>> = LENS.iter().map(|&n| rng.vec(n, 1.0)).collect();
        let mut a = Optimizer::new(of(from)).unwrap();
        a.register(&p.iter().map(|x| x.as_slice()).collect::<Vec<_>>())
            .unwrap();
        train(&mut a, &mut p, &mut rng, 4);
        let bytes = a.save();
        for to in formats {
            let cfg = of(to);
            let mut b = Optimizer::new(cfg.clone()).unwrap();
            b.register(&p.iter().map(|x| x.as_slice()).collect::<Vec<_>>())
                .unwrap();
            b.load(&bytes).unwrap();
            for (i, &n) in LENS.iter().enumerate() {
                let (src, got) = (state_of(&a, i, n), state_of(&b, i, n));
                let kinds = [(to.0, codes[0]), (to.0, codes[1]), (to.0, codes[2])];
                for (j, (dtype, code)) in kinds
                    .into_iter()
                    .chain([(to.1, Q8Code::Signed)])
                    .enumerate()
                {
                    let want = held(&cfg, dtype, code, Stream::M, 0, 0, &src.x[j]);
                    assert_eq!(
                        bits(&got.x[j]),
                        bits(&want),
                        "{from:?} -> {to:?}: buffer {i} array {j}"
                    );
                }
            }
            assert_eq!(b.step_count(), 4, "{from:?} -> {to:?}");
        }
    }
}

/// Crafted format-4 checkpoints (resealed) that no optimizer writes are refused, naming what
/// is wrong: an unknown state format, 8-bit slow weights, an 8-bit scale that is NaN or
/// negative, int8 state for Rprop (whose state cannot be held in 8 bits), a bad scaler flag.
#[test]
fn crafted_format4_checkpoints_are_refused() {
    let reseal = |mut b: Vec<u8>| {
        let n = b.len();
        let crc = crc32fast::hash(&b[..n - 4]);
        b[n - 4..].copy_from_slice(&crc.to_le_bytes());
        b
    };
    let int8 = Config {
        state_dtype: StateDtype::Int8,
        ..Config::new(Base::adam(), 1e-2)
    };
    let mut o = Optimizer::new(int8.clone()).unwrap();
    let mut p = vec![0.5f32; 300];
    o.register(&[&p]).unwrap();
    o.step(&mut [&mut p], &[&vec![0.25f32; 300]]).unwrap();
    let good = o.save();
    // The buffer record's end: the formats are the two words before the buffer count (8),
    // the buffer's length, flags and group (16) and its arrays (2 x (300 + 2 * 4)).
    let arrays = 2 * (300 + 8);
    let formats_at = good.len() - 4 - arrays - 16 - 8 - 8;
    assert_eq!(&good[formats_at..formats_at + 8], &[2, 0, 0, 0, 0, 0, 0, 0]);
    let scale_at = good.len() - 4 - arrays + 300; // m's first scale
    let flag_at = formats_at - 8;
    let rows: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "state format 3",
            {
                let mut b = good.clone();
                b[formats_at] = 3;
                b
            },
            "state format 3",
        ),
        (
            "slow format 2",
            {
                let mut b = good.clone();
                b[formats_at + 4] = 2;
                b
            },
            "slow-weight format 2",
        ),
        (
            "NaN scale",
            {
                let mut b = good.clone();
                b[scale_at..scale_at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
                b
            },
            "8-bit block 0 has the scale NaN",
        ),
        (
            "negative scale",
            {
                let mut b = good.clone();
                b[scale_at..scale_at + 4].copy_from_slice(&(-1.0f32).to_le_bytes());
                b
            },
            "8-bit block 0 has the scale -1.0",
        ),
        (
            "scaler flag 2",
            {
                let mut b = good.clone();
                b[flag_at] = 2;
                b
            },
            "loss scaler flag 2",
        ),
    ];
    for (what, bytes, needle) in rows {
        let mut q = Optimizer::new(int8.clone()).unwrap();
        q.register(&[&p]).unwrap();
        let before = q.save();
        let e = q.load(&reseal(bytes)).unwrap_err().to_string();
        assert!(e.contains(needle), "{what}: {e}");
        assert_eq!(q.save(), before, "{what}: changed the optimizer");
    }
    // Rprop held as bf16, relabelled int8: 4 elements take 8 bytes either way (4 x 2, or 4
    // codes and a scale), so only the meaning is wrong.
    let rprop = Config {
        state_dtype: StateDtype::Bf16,
        ..Config::new(Base::rprop(), 1e-2)
    };
    let mut r = Optimizer::new(rprop.clone()).unwrap();
    let q = vec![0.5f32; 4];
    r.register(&[&q]).unwrap();
    let mut b = r.save();
    let at = b.len() - 4 - 2 * 8 - 16 - 8 - 8;
    assert_eq!(b[at], 1, "the bf16 format word");
    b[at] = 2;
    let e = r.load(&reseal(b)).unwrap_err().to_string();
    assert!(e.contains("int8 state for base rule rprop"), "{e}");
}

/// Bytes of state per element, as documented: f32 8, bf16 4, int8 about 2 for Adam.
#[test]
fn state_bytes_per_element() {
    let adam = Config::new(Base::adam(), 1e-3);
    let of = |c: Config| Optimizer::new(c).unwrap().state_bytes_per_element();
    assert_eq!(of(adam.clone()), 8.0);
    assert_eq!(
        of(Config {
            state_dtype: StateDtype::Bf16,
            ..adam.clone()
        }),
        4.0
    );
    assert_eq!(
        of(Config {
            state_dtype: StateDtype::Int8,
            ..adam.clone()
        }),
        2.0 + 8.0 / Q8_BLOCK as f64
    );
    let la = Config {
        state_dtype: StateDtype::Int8,
        slow_dtype: StateDtype::Bf16,
        ..adam.lookahead(5, 0.5)
    };
    assert_eq!(of(la), 2.0 + 8.0 / Q8_BLOCK as f64 + 2.0);
}

/// Training quality: a least-squares regression (200 features, 2000 samples, noise) with Adam
/// for 1500 full-batch steps; the final loss with bf16 (stochastic) and int8 state within 1%
/// of the f32 run, for three seeds.
#[test]
fn training_quality_is_within_one_percent_of_f32() {
    let (d, n) = (200usize, 2000usize);
    for seed in 0..3u64 {
        let mut rng = Rng(100 + seed);
        let x: Vec<f32> = (0..n * d).map(|_| rng.normal(1.0)).collect();
        let w_true: Vec<f32> = (0..d).map(|_| rng.normal(1.0)).collect();
        let y: Vec<f32> = (0..n)
            .map(|i| (0..d).map(|j| x[i * d + j] * w_true[j]).sum::<f32>() + rng.normal(0.5))
            .collect();
        let train = |dtype: StateDtype| -> f64 {
            let cfg = Config {
                state_dtype: dtype,
                state_seed: seed,
                ..Config::new(Base::adam(), 1e-2)
            };
            let mut w = vec![0f32; d];
            let mut o = Optimizer::new(cfg).unwrap();
            o.register(&[&w]).unwrap();
            let mut loss = 0.0;
            for _ in 0..1500 {
                let mut g = vec![0f32; d];
                loss = 0.0;
                for i in 0..n {
                    let r: f32 = (0..d).map(|j| x[i * d + j] * w[j]).sum::<f32>() - y[i];
                    loss += f64::from(r * r) / n as f64;
                    for j in 0..d {
                        g[j] += 2.0 * r * x[i * d + j] / n as f32;
                    }
                }
                o.step(&mut [&mut w], &[&g]).unwrap();
            }
            loss
        };
        let f = train(StateDtype::F32);
        for dtype in [StateDtype::Bf16, StateDtype::Int8] {
            let l = train(dtype);
            println!(
                "seed {seed}: f32 {f:.6}, {dtype:?} {l:.6} ({:+.3}%)",
                100.0 * (l - f) / f
            );
            assert!(
                (l - f).abs() <= 0.01 * f,
                "seed {seed} {dtype:?}: {l} vs f32 {f}"
            );
        }
    }
}
