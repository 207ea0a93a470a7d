//! Every available SIMD tier against the scalar reference, bit for bit.
//!
//! The checks are written once as functions taking the tier under test and stamped into one
//! module per tier by `tier_tests!` (memchr style). Each check runs the scalar tier on the same
//! inputs and compares every output bit, NaN payloads and signed zeros included, over many
//! lengths, misaligned start offsets, hostile finite values and non-finite values.

mod common;

use common::{bits, hostile_vec, Rng, HOSTILE_FINITE};
use flatopt::error::Error;
use flatopt::kernels::{self, Buffers, Op, Plan, Rule, SUMSQ_BLOCK};
use flatopt::{Base, Tier};

/// Buffer lengths: empty, below / at / around one vector, odd tails, long.
const LENS: [usize; 11] = [0, 1, 7, 8, 9, 15, 16, 17, 31, 1000, 100_003];
/// Lengths for the sum of squares, adding block boundaries and several blocks.
const SUMSQ_LENS: [usize; 17] = [
    0,
    1,
    7,
    8,
    9,
    15,
    16,
    17,
    31,
    1000,
    SUMSQ_BLOCK - 1,
    SUMSQ_BLOCK,
    SUMSQ_BLOCK + 1,
    2 * SUMSQ_BLOCK + 17,
    3 * SUMSQ_BLOCK + 5,
    7 * SUMSQ_BLOCK,
    100_003,
];
/// Start offsets (in f32) into a larger buffer: every residue modulo 64 bytes (an AVX-512
/// vector, the largest alignment a kernel's scalar head aligns to).
const OFFSETS: [usize; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];

/// What is sprinkled into the (otherwise hostile finite) inputs.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Inputs {
    /// Nothing: finite inputs only.
    Finite,
    /// `+inf` and `-inf` (NaN may still arise inside, as `inf - inf` or `0 * inf`).
    Inf,
    /// `+inf`, `-inf` and one NaN bit pattern (`NAN_ONE`).
    OneNan,
    /// Both infinities and NaNs of both signs and two payloads.
    MixedNan,
}

/// The one NaN of [`Inputs::OneNan`]: the x86 "default NaN" (sign set, quiet, no payload), the
/// value an invalid operation produces there.
const NAN_ONE: u32 = 0xffc0_0000;

impl Inputs {
    fn values(self) -> &'static [f32] {
        const INF: [f32; 2] = [f32::INFINITY, f32::NEG_INFINITY];
        const ONE: [f32; 3] = [f32::INFINITY, f32::NEG_INFINITY, f32::from_bits(NAN_ONE)];
        const MIXED: [f32; 5] = [
            f32::NAN,
            f32::from_bits(NAN_ONE),
            f32::from_bits(0x7fc1_2345),
            f32::INFINITY,
            f32::NEG_INFINITY,
        ];
        match self {
            Inputs::Finite => &[],
            Inputs::Inf => &INF,
            Inputs::OneNan => &ONE,
            Inputs::MixedNan => &MIXED,
        }
    }
}

/// How outputs are compared.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Compare {
    /// Every bit, NaN sign and payload included.
    Bits,
    /// Every bit of every non-NaN value, and NaN at exactly the same positions (sign and payload
    /// of a NaN ignored).
    NanPositions,
}

fn canon(mut b: Vec<u32>, cmp: Compare) -> Vec<u32> {
    if cmp == Compare::NanPositions {
        for x in &mut b {
            if f32::from_bits(*x).is_nan() {
                *x = 0x7fc0_0000;
            }
        }
    }
    b
}

/// The tiers this build and CPU can run.
fn available() -> Vec<Tier> {
    Tier::ALL.into_iter().filter(|t| t.is_available()).collect()
}

/// Offsets used at a given length: all of them for short buffers, a few for long ones (the
/// vector loop does not depend on the offset beyond its residue, and long buffers are slow on
/// the scalar reference).
fn offsets_for(len: usize) -> &'static [usize] {
    if len >= 100_000 {
        &[0, 3]
    } else if len >= 1000 {
        &[0, 1, 5, 7, 13]
    } else {
        &OFFSETS
    }
}

/// `n` values starting at `off` inside a vector of `n + 16` (so that the data pointer takes every
/// alignment), with non-finite values sprinkled in if asked.
struct Shifted {
    buf: Vec<f32>,
    off: usize,
    n: usize,
}

impl Shifted {
    fn new(mut values: Vec<f32>, off: usize, rng: &mut Rng, inputs: Inputs) -> Shifted {
        let n = values.len();
        let nf = inputs.values();
        if !nf.is_empty() && n > 0 {
            // About one element in 11, at least one, at varying positions (head, vector body, tail).
            let count = (n / 11).max(1);
            for _ in 0..count {
                let i = rng.below(n);
                values[i] = nf[rng.below(nf.len())];
            }
            values[n - 1] = nf[rng.below(nf.len())];
        }
        let mut buf = vec![f32::from_bits(0x7f80_0001); n + OFFSETS.len()];
        buf[off..off + n].copy_from_slice(&values);
        Shifted { buf, off, n }
    }
    fn get(&self) -> &[f32] {
        &self.buf[self.off..self.off + self.n]
    }
    fn get_mut(&mut self) -> &mut [f32] {
        &mut self.buf[self.off..self.off + self.n]
    }
}

/// The six buffers of one fused pass, shifted.
struct Set {
    param: Shifted,
    grad: Shifted,
    m: Shifted,
    v: Shifted,
    v_max: Shifted,
    slow: Shifted,
}

impl Set {
    fn new(seed: u64, n: usize, off: usize, sprinkle: Inputs) -> Set {
        let mut rng = Rng(seed);
        let abs = |x: Vec<f32>| x.into_iter().map(f32::abs).collect::<Vec<_>>();
        let param = hostile_vec(&mut rng, n, 1.0);
        let grad = hostile_vec(&mut rng, n, 0.1);
        let m = hostile_vec(&mut rng, n, 0.01);
        let v = abs(hostile_vec(&mut rng, n, 1e-3));
        let v_max = abs(hostile_vec(&mut rng, n, 1e-3));
        let slow = hostile_vec(&mut rng, n, 1.0);
        Set {
            param: Shifted::new(param, off, &mut rng, sprinkle),
            grad: Shifted::new(grad, off, &mut rng, sprinkle),
            m: Shifted::new(m, off, &mut rng, sprinkle),
            v: Shifted::new(v, off, &mut rng, sprinkle),
            v_max: Shifted::new(v_max, off, &mut rng, sprinkle),
            slow: Shifted::new(slow, off, &mut rng, sprinkle),
        }
    }

    fn apply(&mut self, tier: Tier, plan: &Plan) {
        let grad = self.grad.get().to_vec();
        kernels::apply(
            tier,
            plan,
            Buffers {
                param: self.param.get_mut(),
                grad: &grad,
                m: self.m.get_mut(),
                v: self.v.get_mut(),
                v_max: self.v_max.get_mut(),
                slow: self.slow.get_mut(),
            },
        )
        .expect("lengths are right");
    }

    /// Bits of the whole backing vectors (the padding around the slice must be untouched too).
    fn snapshot(&self) -> [Vec<u32>; 6] {
        [
            bits(&self.param.buf),
            bits(&self.grad.buf),
            bits(&self.m.buf),
            bits(&self.v.buf),
            bits(&self.v_max.buf),
            bits(&self.slow.buf),
        ]
    }
}

/// The optional steps of a plan, as switched on by variation bits: clip scale, value clip,
/// coupled weight decay, Lookahead sync (alpha 0.6).
const STEP_BITS: usize = 4;
/// Variations per rule: every combination of the optional steps (the SIMD tiers compile one
/// loop per combination, so each is checked), then a sync at alpha 0 and at alpha 1.
const VARIATIONS: usize = (1 << STEP_BITS) + 2;

/// `rule` under variation `k` (see [`VARIATIONS`]), with its name.
fn variation(rule: Rule, k: usize) -> (String, Plan) {
    if k >= 1 << STEP_BITS {
        let alpha = (k - (1 << STEP_BITS)) as f32;
        let plan = Plan {
            clip_scale: None,
            clip_value: None,
            weight_decay: None,
            rule,
            sync_alpha: Some(alpha),
        };
        return (format!("sync_{alpha}"), plan);
    }
    let on = |bit: usize| k & (1 << bit) != 0;
    let plan = Plan {
        clip_scale: on(0).then_some(0.372_1),
        clip_value: on(1).then_some(0.05),
        weight_decay: on(2).then_some(0.1),
        rule,
        sync_alpha: on(3).then_some(0.6),
    };
    let names = ["clip_scale", "clip_value", "weight_decay", "sync_0.6"];
    let name: Vec<&str> = (0..STEP_BITS)
        .filter(|&b| on(b))
        .map(|b| names[b])
        .collect();
    let name = if name.is_empty() {
        "bare".to_string()
    } else {
        name.join("+")
    };
    (name, plan)
}

/// Rules `Rule::for_step` never builds but the stateless API accepts: AMSGrad with decoupled
/// decay, and momentum with Nesterov on its first step.
fn hand_made_rules() -> Vec<(&'static str, Rule)> {
    let adamw = Rule::for_step(&Base::adamw(), 3, 1e-2);
    let Rule::Adam {
        b1,
        one_minus_b1,
        b2,
        one_minus_b2,
        step,
        inv_sqrt_bc2,
        eps,
        decay,
        ..
    } = adamw
    else {
        panic!("AdamW builds an Adam rule");
    };
    vec![
        (
            "amsgrad_decoupled",
            Rule::Adam {
                b1,
                one_minus_b1,
                b2,
                one_minus_b2,
                step,
                inv_sqrt_bc2,
                eps,
                amsgrad: true,
                decay,
            },
        ),
        (
            "nesterov_first",
            Rule::Momentum {
                lr: 0.05,
                mu: 0.9,
                damp: 0.7,
                nesterov: true,
                first: true,
            },
        ),
    ]
}

/// The rules under test: every base at several steps, and the hand-made rules.
fn rules() -> Vec<(String, Rule)> {
    let mut out = Vec::new();
    for (bname, base, lr) in common::bases() {
        for t in [1u64, 2, 7, 1000] {
            out.push((format!("{bname}/t{t}"), Rule::for_step(&base, t, lr)));
        }
    }
    for (name, rule) in hand_made_rules() {
        out.push((name.to_string(), rule));
    }
    out
}

/// The plans under test: every rule under every variation, [`VARIATIONS`] consecutive plans
/// per rule. Returns (description, plan).
fn plans() -> Vec<(String, Plan)> {
    let mut out = Vec::new();
    for (rname, rule) in rules() {
        for k in 0..VARIATIONS {
            let (vname, plan) = variation(rule, k);
            out.push((format!("{rname}/{vname}"), plan));
        }
    }
    out
}

/// Checks that the plan table covers every rule shape (momentum first and later steps, RAdam
/// rectified and not, AMSGrad, AdamW decay, plain SGD).
#[test]
fn plan_table_covers_every_rule_shape() {
    let plans = plans();
    let count = |f: &dyn Fn(&Rule) -> bool| plans.iter().filter(|(_, p)| f(&p.rule)).count();
    assert!(count(&|r| matches!(r, Rule::Sgd { .. })) > 0);
    assert!(count(&|r| matches!(r, Rule::Momentum { first: true, .. })) > 0);
    assert!(count(&|r| matches!(r, Rule::Momentum { first: false, .. })) > 0);
    assert!(
        count(&|r| matches!(
            r,
            Rule::Momentum {
                nesterov: true,
                first: false,
                ..
            }
        )) > 0
    );
    assert!(count(&|r| matches!(r, Rule::Adam { amsgrad: true, .. })) > 0);
    assert!(count(&|r| matches!(r, Rule::Adam { decay: Some(_), .. })) > 0);
    assert!(
        count(&|r| matches!(
            r,
            Rule::Adam {
                decay: None,
                amsgrad: false,
                ..
            }
        )) > 0
    );
    assert!(
        count(&|r| matches!(
            r,
            Rule::RAdam {
                rectified: true,
                ..
            }
        )) > 0
    );
    assert!(
        count(&|r| matches!(
            r,
            Rule::RAdam {
                rectified: false,
                ..
            }
        )) > 0
    );
    assert!(
        count(&|r| matches!(
            r,
            Rule::Adam {
                decay: Some(_),
                amsgrad: true,
                ..
            }
        )) > 0
    );
    assert!(count(&|r| matches!(r, Rule::Adagrad { .. })) > 0);
    for (m, c) in [(false, false), (false, true), (true, false), (true, true)] {
        assert!(
            count(&|r| matches!(r, Rule::RmsProp { mu, centered, .. }
                if mu.is_some() == m && *centered == c))
                > 0,
            "rmsprop momentum {m} centered {c}"
        );
    }
    for eps_in in [false, true] {
        assert!(
            count(&|r| matches!(r, Rule::Adamax { eps_in: e, .. } if (*e != 0.0) == eps_in)) > 0,
            "adamax eps inside the maximum: {eps_in}"
        );
    }
    for decoupled in [false, true] {
        assert!(
            count(&|r| matches!(r, Rule::NAdam { decay, .. } if decay.is_some() == decoupled)) > 0,
            "nadam decoupled decay: {decoupled}"
        );
    }
    assert!(count(&|r| matches!(r, Rule::Lion { .. })) > 0);
    assert!(count(&|r| matches!(r, Rule::AdaBelief { .. })) > 0);
    assert!(count(&|r| matches!(r, Rule::Yogi { .. })) > 0);
    assert!(count(&|r| matches!(r, Rule::Adadelta { .. })) > 0);
    for first in [false, true] {
        assert!(
            count(&|r| matches!(r, Rule::Rprop { first: f, .. } if *f == first)) > 0,
            "rprop first step: {first}"
        );
    }
    assert_eq!(plans.len(), (common::bases().len() * 4 + 2) * VARIATIONS);
    // Every combination of the optional steps, with every rule.
    let combos: std::collections::HashSet<_> = plans
        .iter()
        .map(|(_, p)| {
            (
                p.clip_scale.is_some(),
                p.clip_value.is_some(),
                p.weight_decay.is_some(),
                p.sync_alpha.is_some(),
                std::mem::discriminant(&p.rule),
            )
        })
        .collect();
    let rule_kinds: std::collections::HashSet<_> = plans
        .iter()
        .map(|(_, p)| std::mem::discriminant(&p.rule))
        .collect();
    assert_eq!(combos.len(), 16 * rule_kinds.len());
}

/// Fused updates on `tier` against the scalar tier. Long buffers get a subset of the plans (the
/// bare and the all-steps variation of every rule at 1000 elements, one in 16 of those at
/// 100003) to keep the run short.
fn check_apply(tier: Tier, inputs: Inputs, cmp: Compare) {
    let plans = plans();
    let all_steps = (1 << STEP_BITS) - 1;
    let mut cases = 0usize;
    let mut changed = 0usize;
    let mut with_nan_out = 0usize;
    for (pi, (name, plan)) in plans.iter().enumerate() {
        for &n in &LENS {
            let k = pi % VARIATIONS;
            if n >= 1000 && k != 0 && k != all_steps {
                continue;
            }
            if n >= 100_000 && (k != all_steps || !(pi / VARIATIONS).is_multiple_of(8)) {
                continue;
            }
            for &off in offsets_for(n) {
                let seed = (pi as u64) << 32 ^ (n as u64) << 8 ^ off as u64;
                let mut want = Set::new(seed, n, off, inputs);
                let before = want.snapshot();
                let mut got = Set::new(seed, n, off, inputs);
                want.apply(Tier::Scalar, plan);
                got.apply(tier, plan);
                let (w, g) = (want.snapshot(), got.snapshot());
                for (k, what) in ["param", "grad", "m", "v", "v_max", "slow"]
                    .iter()
                    .enumerate()
                {
                    let (wk, gk) = (canon(w[k].clone(), cmp), canon(g[k].clone(), cmp));
                    if wk != gk {
                        let i = (0..wk.len()).find(|&i| wk[i] != gk[i]).unwrap();
                        panic!(
                            "{tier} != scalar: {name}, len {n}, offset {off}, inputs {inputs:?}: \
                             {what}[{}] = {:#010x}, scalar {:#010x}",
                            i as isize - off as isize,
                            g[k][i],
                            w[k][i]
                        );
                    }
                }
                // Padding around the slices is never touched, and the gradient is read-only.
                for k in 0..6 {
                    assert_eq!(
                        &w[k][..off],
                        &before[k][..off],
                        "{name}: wrote before slice"
                    );
                    assert_eq!(
                        &w[k][off + n..],
                        &before[k][off + n..],
                        "{name}: wrote after slice"
                    );
                }
                assert_eq!(w[1], before[1], "{name}: gradient modified");
                if w[0] != before[0] {
                    changed += 1;
                }
                if want.param.get().iter().any(|x| x.is_nan()) {
                    with_nan_out += 1;
                }
                cases += 1;
            }
        }
    }
    // Every plan at 9 short lengths x 16 offsets; 2 per rule at 1000 x 5 offsets; the all-steps
    // plan of one rule in 8 at 100003 x 2 offsets.
    let n_rules = plans.len() / VARIATIONS;
    assert_eq!(
        cases,
        plans.len() * 9 * OFFSETS.len() + n_rules * 2 * 5 + n_rules.div_ceil(8) * 2,
        "cases checked on {tier}"
    );
    // Nearly every non-empty case moves the params (a length-1 case may see a zero gradient).
    let non_empty = cases - plans.len() * OFFSETS.len();
    assert!(
        changed * 10 >= non_empty * 9,
        "only {changed} of {non_empty} non-empty cases changed params"
    );
    if inputs != Inputs::Finite {
        assert!(
            with_nan_out > non_empty / 2,
            "non-finite inputs reached few outputs: {with_nan_out} of {non_empty}"
        );
    }
}

/// Sum of squares and its block partials on `tier` against the scalar tier, and against a
/// naive f64 sum for finite inputs.
fn check_sum_squares(tier: Tier, inputs: Inputs, cmp: Compare) {
    let canon64 = |x: f64| {
        if cmp == Compare::NanPositions && x.is_nan() {
            f64::NAN.to_bits()
        } else {
            x.to_bits()
        }
    };
    let mut cases = 0usize;
    for &n in &SUMSQ_LENS {
        for &off in offsets_for(n) {
            let mut rng = Rng(n as u64 * 31 + off as u64);
            let s = Shifted::new(hostile_vec(&mut rng, n, 1.0), off, &mut rng, inputs);
            let x = s.get();
            let want = kernels::sum_squares(Tier::Scalar, x);
            let got = kernels::sum_squares(tier, x);
            assert_eq!(
                canon64(got),
                canon64(want),
                "sum_squares on {tier}, len {n}, offset {off}, {inputs:?}: {:#x} vs scalar {:#x}",
                got.to_bits(),
                want.to_bits()
            );
            let blocks = kernels::sumsq_block_count(n);
            assert_eq!(blocks, n.div_ceil(SUMSQ_BLOCK));
            let mut pw = vec![f64::NAN; blocks];
            let mut pg = vec![f64::NAN; blocks];
            kernels::sum_squares_partials(Tier::Scalar, x, &mut pw).unwrap();
            kernels::sum_squares_partials(tier, x, &mut pg).unwrap();
            let pwb: Vec<u64> = pw.iter().map(|&v| canon64(v)).collect();
            let pgb: Vec<u64> = pg.iter().map(|&v| canon64(v)).collect();
            assert_eq!(
                pgb, pwb,
                "partials on {tier}, len {n}, offset {off}, {inputs:?}"
            );
            // The total is the partials added in block order.
            let mut total = 0.0f64;
            for p in &pg {
                total += p;
            }
            assert_eq!(canon64(total), canon64(got), "total vs partials, len {n}");
            if inputs != Inputs::Finite && n > 0 {
                assert!(!got.is_finite(), "non-finite input gave {got} (len {n})");
            } else {
                assert!(got.is_finite(), "finite input gave {got} (len {n})");
                let naive: f64 = x.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
                assert!(
                    (got - naive).abs() <= 1e-12 * naive,
                    "len {n}: {got} vs naive {naive}"
                );
            }
            cases += 1;
        }
    }
    // 9 lengths below 1000 at 8 offsets, 7 up to 28672 at 4, 100003 at 2.
    assert_eq!(
        cases,
        9 * OFFSETS.len() + 7 * 5 + 2,
        "sum of squares cases on {tier}"
    );
}

/// Huge magnitudes over several blocks: the f64 sum stays finite and is exact enough; a lone
/// infinity gives +inf and a NaN gives NaN.
fn check_sum_squares_extremes(tier: Tier) {
    let n = 3 * SUMSQ_BLOCK + 5;
    for off in OFFSETS {
        let mut buf = vec![0.0f32; n + OFFSETS.len()];
        for (i, x) in buf[off..off + n].iter_mut().enumerate() {
            *x = if i % 2 == 0 { 3e38 } else { -3e38 };
        }
        let x = &buf[off..off + n];
        let s = kernels::sum_squares(tier, x);
        let want = n as f64 * f64::from(3e38f32) * f64::from(3e38f32);
        assert!(
            s.is_finite(),
            "{tier}: sum of squares of 3e38 overflowed: {s}"
        );
        assert!((s - want).abs() <= 1e-12 * want, "{tier}: {s} vs {want}");
        assert_eq!(s.to_bits(), kernels::sum_squares(Tier::Scalar, x).to_bits());
        // f32::MAX everywhere: still finite in f64.
        let big = vec![f32::MAX; n];
        assert!(kernels::sum_squares(tier, &big).is_finite());
        // Subnormals only: positive, not flushed to zero.
        let tiny = vec![1e-45f32; n];
        let st = kernels::sum_squares(tier, &tiny);
        assert!(st > 0.0, "{tier}: subnormal squares flushed: {st}");
        assert_eq!(
            st.to_bits(),
            kernels::sum_squares(Tier::Scalar, &tiny).to_bits()
        );

        for pos in [0, 17, SUMSQ_BLOCK - 1, SUMSQ_BLOCK, n - 1] {
            let mut y = x.to_vec();
            y[pos] = f32::INFINITY;
            assert_eq!(
                kernels::sum_squares(tier, &y),
                f64::INFINITY,
                "inf at {pos}"
            );
            y[pos] = f32::NEG_INFINITY;
            assert_eq!(
                kernels::sum_squares(tier, &y),
                f64::INFINITY,
                "-inf at {pos}"
            );
            y[pos] = f32::NAN;
            assert!(kernels::sum_squares(tier, &y).is_nan(), "NaN at {pos}");
            let mut partials = vec![0.0; kernels::sumsq_block_count(n)];
            kernels::sum_squares_partials(tier, &y, &mut partials).unwrap();
            let bad = partials.iter().position(|p| !p.is_finite());
            assert_eq!(
                bad,
                Some(pos / SUMSQ_BLOCK),
                "partial with the NaN at {pos}"
            );
            assert_eq!(partials.iter().filter(|p| !p.is_finite()).count(), 1);
        }
    }
    // A wrong number of partials is refused, and nothing is written.
    let x = vec![1.0f32; SUMSQ_BLOCK + 1];
    for wrong in [0usize, 1, 3] {
        let mut partials = vec![-7.0; wrong];
        match kernels::sum_squares_partials(tier, &x, &mut partials) {
            Err(Error::LengthMismatch { expected, got, .. }) => {
                assert_eq!((expected, got), (2, wrong));
            }
            other => panic!("{tier}: {wrong} partials gave {other:?}"),
        }
        assert!(partials.iter().all(|&p| p == -7.0));
    }
}

/// Standalone elementwise operations on `tier` against the scalar tier.
fn check_apply_op(tier: Tier, inputs: Inputs, cmp: Compare) {
    let ops = [
        Op::Scale(0.0),
        Op::Scale(-1.5),
        Op::Scale(0.372_1),
        Op::Scale(1e-30),
        Op::Scale(3e38),
        Op::ClipValue(0.0),
        Op::ClipValue(0.05),
        Op::ClipValue(1e19),
        Op::ClipValue(f32::INFINITY),
        Op::Sync(0.0),
        Op::Sync(0.3),
        Op::Sync(0.5),
        Op::Sync(1.0),
    ];
    let mut cases = 0usize;
    for (oi, op) in ops.iter().enumerate() {
        for &n in &LENS {
            for &off in offsets_for(n) {
                let seed = (oi as u64) << 40 ^ (n as u64) << 8 ^ off as u64;
                let make = || {
                    let mut rng = Rng(seed);
                    let x = hostile_vec(&mut rng, n, 1.0);
                    let y = hostile_vec(&mut rng, n, 1.0);
                    let x = Shifted::new(x, off, &mut rng, inputs);
                    let y = Shifted::new(y, off, &mut rng, inputs);
                    (x, y)
                };
                let (mut wx, mut wy) = make();
                let (mut gx, mut gy) = make();
                let mut empty: [f32; 0] = [];
                let is_sync = matches!(op, Op::Sync(_));
                {
                    let y: &mut [f32] = if is_sync { wy.get_mut() } else { &mut empty };
                    kernels::apply_op(Tier::Scalar, *op, wx.get_mut(), y).unwrap();
                }
                {
                    let y: &mut [f32] = if is_sync { gy.get_mut() } else { &mut empty };
                    kernels::apply_op(tier, *op, gx.get_mut(), y).unwrap();
                }
                for (what, w, g) in [("x", &wx, &gx), ("y", &wy, &gy)] {
                    let (wb, gb) = (canon(bits(&w.buf), cmp), canon(bits(&g.buf), cmp));
                    if wb != gb {
                        let i = (0..wb.len()).find(|&i| wb[i] != gb[i]).unwrap();
                        panic!(
                            "{op:?} on {tier}, len {n}, offset {off}, {inputs:?}: {what}[{}] = \
                             {:#010x}, scalar {:#010x}",
                            i as isize - off as isize,
                            g.buf[i].to_bits(),
                            w.buf[i].to_bits()
                        );
                    }
                }
                // Semantics against one-line references (NaN-ness only for NaN results).
                let (x0, y0) = make();
                let same = |r: f32, e: f32| {
                    if e.is_nan() {
                        r.is_nan()
                    } else {
                        r.to_bits() == e.to_bits()
                    }
                };
                for i in 0..n {
                    let (a, b, r) = (x0.get()[i], y0.get()[i], gx.get()[i]);
                    match *op {
                        Op::Scale(s) => assert!(same(r, a * s), "{a} * {s} gave {r}"),
                        Op::ClipValue(c) => {
                            if a.is_nan() {
                                assert!(r.is_nan(), "clip lost a NaN");
                            } else {
                                assert_eq!(r, a.clamp(-c, c), "clip {a} to {c}");
                            }
                        }
                        Op::Sync(al) => {
                            let s = b + al * (a - b);
                            assert!(same(r, s), "sync of {a}, {b}: {r} vs {s}");
                            assert_eq!(r.to_bits(), gy.get()[i].to_bits(), "x != y after sync");
                        }
                    }
                }
                cases += 1;
            }
        }
    }
    assert_eq!(
        cases,
        13 * (9 * OFFSETS.len() + 5 + 2),
        "apply_op cases on {tier}"
    );
}

/// Invalid arguments of the stateless entry points: refused on every tier, nothing written.
fn check_stateless_errors(tier: Tier) {
    let mut x = vec![1.5f32; 9];
    let mut y = vec![2.5f32; 9];
    let mut short = vec![2.5f32; 8];
    let cases: [(Op, &str); 6] = [
        (Op::Scale(f32::NAN), "scale"),
        (Op::Scale(f32::INFINITY), "scale"),
        (Op::ClipValue(-1.0), "clip_value"),
        (Op::ClipValue(f32::NAN), "clip_value"),
        (Op::Sync(1.5), "alpha"),
        (Op::Sync(f32::NAN), "alpha"),
    ];
    for (op, want) in cases {
        match kernels::apply_op(tier, op, &mut x, &mut y) {
            Err(Error::InvalidArgument { name, .. }) => assert_eq!(name, want, "{op:?}"),
            other => panic!("{op:?} on {tier} gave {other:?}"),
        }
    }
    assert!(matches!(
        kernels::apply_op(tier, Op::Sync(0.5), &mut x, &mut short),
        Err(Error::LengthMismatch {
            expected: 9,
            got: 8,
            ..
        })
    ));
    assert!(x.iter().all(|&v| v == 1.5) && y.iter().all(|&v| v == 2.5));
    assert!(short.iter().all(|&v| v == 2.5));

    // Fused pass: a wrong length of any buffer the plan uses is refused before writing.
    let plan = Plan {
        clip_scale: None,
        clip_value: None,
        weight_decay: None,
        rule: Rule::for_step(&Base::adam(), 3, 1e-2),
        sync_alpha: Some(0.5),
    };
    for (k, what) in [(0, "grad"), (1, "m"), (2, "v"), (4, "slow")] {
        let mut bufs: Vec<Vec<f32>> = (0..5).map(|_| vec![0.25f32; 10]).collect();
        bufs[k].pop();
        let mut param = vec![1.0f32; 10];
        let [g, m, v, vm, s] = &mut bufs[..] else {
            unreachable!()
        };
        let r = kernels::apply(
            tier,
            &plan,
            Buffers {
                param: &mut param,
                grad: g,
                m,
                v,
                v_max: vm,
                slow: s,
            },
        );
        match r {
            Err(Error::LengthMismatch { what: w, .. }) => {
                assert!(w.starts_with(what), "{w} should name {what}")
            }
            other => panic!("short {what} on {tier} gave {other:?}"),
        }
        assert!(param.iter().all(|&p| p == 1.0), "param written on error");
        assert!(
            bufs.iter().flatten().all(|&b| b == 0.25),
            "state written on error"
        );
    }
    // Unused state buffers may be empty (v_max without AMSGrad, slow without a sync).
    let plan = Plan {
        sync_alpha: None,
        ..plan
    };
    let (mut p, g, mut m, mut v) = (
        vec![1.0f32; 10],
        vec![0.5f32; 10],
        vec![0.0; 10],
        vec![0.0; 10],
    );
    kernels::apply(
        tier,
        &plan,
        Buffers {
            param: &mut p,
            grad: &g,
            m: &mut m,
            v: &mut v,
            v_max: &mut [],
            slow: &mut [],
        },
    )
    .unwrap();
    assert!(p.iter().all(|&x| x < 1.0));
}

/// Stamps every check into a module per tier.
macro_rules! tier_tests {
    ($($module:ident => $tier:expr),* $(,)?) => {$(
        mod $module {
            use super::*;

            fn tier() -> Option<Tier> {
                let t: Tier = $tier;
                if t.is_available() {
                    Some(t)
                } else {
                    eprintln!("tier {t} not available here: skipped");
                    None
                }
            }

            #[test]
            fn apply_finite_matches_scalar() {
                if let Some(t) = tier() {
                    check_apply(t, Inputs::Finite, Compare::Bits);
                }
            }

            #[test]
            fn apply_infinities_match_scalar() {
                if let Some(t) = tier() {
                    check_apply(t, Inputs::Inf, Compare::Bits);
                }
            }

            #[test]
            fn apply_one_nan_matches_scalar() {
                if let Some(t) = tier() {
                    check_apply(t, Inputs::OneNan, Compare::Bits);
                }
            }

            #[test]
            fn apply_mixed_nans_match_scalar_up_to_nan_payload() {
                if let Some(t) = tier() {
                    check_apply(t, Inputs::MixedNan, Compare::NanPositions);
                }
            }


            #[test]
            fn sum_squares_matches_scalar() {
                if let Some(t) = tier() {
                    check_sum_squares(t, Inputs::Finite, Compare::Bits);
                    check_sum_squares(t, Inputs::Inf, Compare::Bits);
                    check_sum_squares(t, Inputs::OneNan, Compare::Bits);
                    check_sum_squares(t, Inputs::MixedNan, Compare::NanPositions);
                }
            }


            #[test]
            fn apply_op_matches_scalar() {
                if let Some(t) = tier() {
                    check_apply_op(t, Inputs::Finite, Compare::Bits);
                    check_apply_op(t, Inputs::Inf, Compare::Bits);
                    check_apply_op(t, Inputs::OneNan, Compare::Bits);
                    check_apply_op(t, Inputs::MixedNan, Compare::NanPositions);
                }
            }


            #[test]
            fn sum_squares_extremes() {
                if let Some(t) = tier() {
                    check_sum_squares_extremes(t);
                }
            }

            #[test]
            fn stateless_errors() {
                if let Some(t) = tier() {
                    check_stateless_errors(t);
                }
            }
        }
    )*};
}

tier_tests! {
    portable => Tier::Portable,
    avx2 => Tier::Avx2,
    avx512 => Tier::Avx512,
}

/// The tiers that must exist: scalar and portable everywhere, AVX2 and AVX-512 wherever the CPU
/// has them.
/// Guards against every tier module above silently skipping.
#[test]
fn expected_tiers_are_available() {
    let tiers = available();
    assert!(tiers.contains(&Tier::Scalar) && tiers.contains(&Tier::Portable));
    #[cfg(target_arch = "x86_64")]
    assert_eq!(
        tiers.contains(&Tier::Avx2),
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("f16c")
    );
    #[cfg(target_arch = "x86_64")]
    assert_eq!(
        tiers.contains(&Tier::Avx512),
        std::arch::is_x86_feature_detected!("avx512f")
    );
    #[cfg(not(target_arch = "x86_64"))]
    assert!(!tiers.contains(&Tier::Avx2) && !tiers.contains(&Tier::Avx512));
    assert_eq!(Tier::best(), *tiers.last().unwrap());
    eprintln!(
        "tiers checked against scalar: {:?}",
        tiers.iter().map(|t| t.name()).collect::<Vec<_>>()
    );
    // Names and numbers round-trip.
    for t in Tier::ALL {
        assert_eq!(Tier::from_name(t.name()), Some(t));
        assert_eq!(
            Tier::from_name(&format!(" {} ", t.name().to_uppercase())),
            Some(t)
        );
        assert_eq!(Tier::from_u8(t as u8), Some(t));
        assert_eq!(t.check().is_ok(), t.is_available());
    }
    for t in Tier::ALL.into_iter().filter(|t| !t.is_available()) {
        assert!(matches!(t.check(), Err(Error::Unsupported(m)) if m.contains(t.name())));
    }
    assert_eq!(Tier::from_name("sse9"), None);
    assert_eq!(Tier::from_u8(0), None);
}

/// The hostile table is what the checks rely on: it has both zeros, subnormals and near-MAX.
#[test]
fn hostile_values_are_hostile() {
    assert!(HOSTILE_FINITE.iter().any(|x| x.to_bits() == 0x8000_0000));
    assert!(HOSTILE_FINITE.iter().any(|x| x.is_subnormal()));
    assert!(HOSTILE_FINITE.iter().any(|x| x.abs() > 1e38));
    assert!(HOSTILE_FINITE.iter().all(|x| x.is_finite()));
}
