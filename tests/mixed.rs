//! The mixed-precision fused pass (gradients in f32, bf16 or fp16, a loss scale divided out, a
//! 16-bit copy of the parameters written in the pass) on every tier, bit for bit against its
//! definition composed of plain steps on the scalar tier: widen the gradients, divide each by
//! the scale with `/` (so the power-of-two shortcut is checked against a real division), the
//! f32 pass, narrow the new parameters. Over every base rule with and without the pipeline's
//! optional steps, odd lengths across chunk boundaries, misaligned starts, and gradients with
//! subnormals, infinities and NaN.

#[macro_use]
mod common;

use common::{bases, on_tier, Rng};
use flatopt::kernels::{
    self, Buffers, Grad, Half, MixedBuffers, ParamCopy, Plan, Rule, CHUNK, SUMSQ_BLOCK,
};
use flatopt::{Error, Tier};

/// The gradient formats.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Format {
    F32,
    Half(Half),
}

const FORMATS: [Format; 3] = [
    Format::F32,
    Format::Half(Half::Bf16),
    Format::Half(Half::F16),
];
const COPIES: [Option<Half>; 3] = [None, Some(Half::Bf16), Some(Half::F16)];
/// Loss scales: none, powers of two (the multiplication path, one very large, one below 1),
/// and others (the division path).
const SCALES: [f32; 6] = [1.0, 65536.0, 0.125, 3.0, 1000.0, 1.7014118e38];
/// Lengths: around the vector widths, around chunk boundaries, several chunks, across
/// sum-of-squares blocks (several chunks each).
const LENS: [usize; 11] = [
    0,
    1,
    17,
    100,
    CHUNK - 1,
    CHUNK,
    CHUNK + 1,
    2 * CHUNK + 33,
    3 * CHUNK + 517,
    SUMSQ_BLOCK + 1,
    2 * SUMSQ_BLOCK + 3 * CHUNK + 7,
];

/// What is sprinkled into the gradients.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Inputs {
    Finite,
    Inf,
    Nan,
}

/// Gradients of length `n` at offset `off` in a longer buffer, in format `f`: the loss-scaled
/// values (normal, tiny and subnormal, huge), with infinities or NaNs sprinkled in if asked.
struct GradData {
    f32s: Vec<f32>,
    halves: Vec<u16>,
    format: Format,
    off: usize,
    n: usize,
}

impl GradData {
    fn new(
        rng: &mut Rng,
        format: Format,
        scale: f32,
        n: usize,
        off: usize,
        inputs: Inputs,
    ) -> Self {
        let mut f32s = vec![0f32; n + 16];
        for x in &mut f32s[off..off + n] {
            let v = match rng.below(10) {
                0 => 1e-41,
                1 => -6e-8,
                2 => 3e4,
                _ => rng.normal(1.0),
            };
            *x = v * scale;
        }
        let special: &[f32] = match inputs {
            Inputs::Finite => &[],
            Inputs::Inf => &[f32::INFINITY, f32::NEG_INFINITY],
            Inputs::Nan => &[f32::NAN, f32::INFINITY],
        };
        if !special.is_empty() && n > 0 {
            for _ in 0..(n / 13).max(1) {
                let i = off + rng.below(n);
                f32s[i] = special[rng.below(special.len())];
            }
        }
        let halves = match format {
            Format::F32 => Vec::new(),
            Format::Half(h) => {
                let mut out = vec![0u16; f32s.len()];
                kernels::narrow_from_f32(Tier::Scalar, h, &f32s, &mut out).unwrap();
                out
            }
        };
        GradData {
            f32s,
            halves,
            format,
            off,
            n,
        }
    }

    fn grad(&self) -> Grad<'_> {
        let r = self.off..self.off + self.n;
        match self.format {
            Format::F32 => Grad::F32(&self.f32s[r]),
            Format::Half(Half::Bf16) => Grad::Bf16(&self.halves[r]),
            Format::Half(Half::F16) => Grad::F16(&self.halves[r]),
        }
    }

    /// The definition: widened on the scalar tier, divided by `scale` with `/` unless 1.
    fn unscaled(&self, scale: f32) -> Vec<f32> {
        let r = self.off..self.off + self.n;
        let mut g = match self.format {
            Format::F32 => self.f32s[r].to_vec(),
            Format::Half(h) => {
                let mut out = vec![0f32; self.n];
                kernels::widen_to_f32(Tier::Scalar, h, &self.halves[r], &mut out).unwrap();
                out
            }
        };
        if scale != 1.0 {
            for x in &mut g {
                *x /= scale;
            }
        }
        g
    }
}

/// Optimizer state and parameters at an offset.
#[derive(Clone)]
struct State {
    param: Vec<f32>,
    m: Vec<f32>,
    v: Vec<f32>,
    v_max: Vec<f32>,
    slow: Vec<f32>,
    copy: Vec<u16>,
}

impl State {
    fn new(rng: &mut Rng, n: usize) -> State {
        let v: Vec<f32> = rng.vec(n, 1.0).iter().map(|x| x * x).collect();
        State {
            param: rng.vec(n, 1.0),
            m: rng.vec(n, 0.1),
            v: v.clone(),
            v_max: v.iter().map(|x| x * 1.5).collect(),
            slow: rng.vec(n, 1.0),
            copy: vec![0xdead; n],
        }
    }

    fn bits(&self) -> Vec<Vec<u32>> {
        let b = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        vec![
            b(&self.param),
            b(&self.m),
            b(&self.v),
            b(&self.v_max),
            b(&self.slow),
            self.copy.iter().map(|&h| u32::from(h)).collect(),
        ]
    }
}

/// Every base rule at steps 1 and 3, bare and with every optional step of the pipeline.
fn plans() -> Vec<(String, Plan)> {
    let mut out = Vec::new();
    for (name, base, lr) in bases() {
        for t in [1, 3] {
            let rule = Rule::for_step(&base, t, lr);
            let bare = Plan {
                clip_scale: None,
                clip_value: None,
                weight_decay: None,
                rule,
                sync_alpha: None,
            };
            out.push((format!("{name}/t{t}"), bare));
            out.push((
                format!("{name}/t{t}/all-steps"),
                Plan {
                    clip_scale: Some(0.5),
                    clip_value: Some(2.0),
                    weight_decay: Some(0.01),
                    rule,
                    sync_alpha: Some(0.5),
                },
            ));
        }
    }
    out
}

/// The mixed pass on `tier` against the composed definition on scalar, for every plan, format,
/// copy and scale, at the lengths and a few offsets.
fn check_pass(tier: Tier, inputs: Inputs) {
    let mut rng = Rng(0x3117_ed00 + inputs as u64);
    let mut cases = 0;
    for (name, plan) in plans() {
        for format in FORMATS {
            for copy in COPIES {
                for scale in SCALES {
                    if format != Format::F32 && scale > 1e30 {
                        continue; // 16-bit gradients would all be infinite
                    }
                    let len = LENS[rng.below(LENS.len())];
                    let off = rng.below(16);
                    let g = GradData::new(&mut rng, format, scale, len, off, inputs);
                    let start = State::new(&mut rng, len);

                    let mut want = start.clone();
                    let gw = g.unscaled(scale);
                    kernels::apply(
                        Tier::Scalar,
                        &plan,
                        Buffers {
                            param: &mut want.param,
                            grad: &gw,
                            m: &mut want.m,
                            v: &mut want.v,
                            v_max: &mut want.v_max,
                            slow: &mut want.slow,
                        },
                    )
                    .unwrap();
                    if let Some(h) = copy {
                        kernels::narrow_from_f32(Tier::Scalar, h, &want.param, &mut want.copy)
                            .unwrap();
                    }

                    let mut got = start.clone();
                    kernels::apply_mixed(
                        tier,
                        &plan,
                        scale,
                        MixedBuffers {
                            param: &mut got.param,
                            grad: g.grad(),
                            m: &mut got.m,
                            v: &mut got.v,
                            v_max: &mut got.v_max,
                            slow: &mut got.slow,
                            copy: copy.map(|half| ParamCopy {
                                half,
                                out: &mut got.copy,
                            }),
                        },
                    )
                    .unwrap();
                    let (w, o) = (want.bits(), got.bits());
                    let row = format!(
                        "{tier} {name} {format:?} copy {copy:?} scale {scale} len {len} off {off}"
                    );
                    if inputs == Inputs::Nan {
                        // Several NaN payloads may meet: NaN at the same places (see tiers.rs).
                        let canon = |b: &Vec<Vec<u32>>| {
                            b.iter()
                                .map(|x| {
                                    x.iter()
                                        .map(|&v| {
                                            if f32::from_bits(v).is_nan() {
                                                0x7fc0_0000
                                            } else {
                                                v
                                            }
                                        })
                                        .collect::<Vec<_>>()
                                })
                                .collect::<Vec<_>>()
                        };
                        assert_eq!(canon(&o)[..5], canon(&w)[..5], "{row}");
                    } else {
                        assert_eq!(o, w, "{row}");
                    }
                    cases += 1;
                }
            }
        }
    }
    eprintln!("{tier}: {cases} mixed passes matched the composition");
}

/// Block partials of unscaled gradients in every format against the f32 partials of the
/// composed values.
fn check_partials(tier: Tier) {
    let mut rng = Rng(0x50_5e);
    for format in FORMATS {
        for scale in SCALES {
            if format != Format::F32 && scale > 1e30 {
                continue;
            }
            for len in [0, 1, SUMSQ_BLOCK - 1, SUMSQ_BLOCK, 3 * SUMSQ_BLOCK + 7] {
                for inputs in [Inputs::Finite, Inputs::Inf] {
                    let off = rng.below(16);
                    let g = GradData::new(&mut rng, format, scale, len, off, inputs);
                    let blocks = kernels::sumsq_block_count(len);
                    let mut want = vec![0f64; blocks];
                    kernels::sum_squares_partials(Tier::Scalar, &g.unscaled(scale), &mut want)
                        .unwrap();
                    let mut got = vec![0f64; blocks];
                    kernels::sum_squares_partials_mixed(tier, g.grad(), scale, &mut got).unwrap();
                    let b = |x: &[f64]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                    assert_eq!(
                        b(&got),
                        b(&want),
                        "{tier} {format:?} scale {scale} len {len} {inputs:?}"
                    );
                }
            }
        }
    }
}

/// Bad scales and lengths are refused, naming the problem, with nothing written.
fn check_errors(tier: Tier) {
    let plan = Plan {
        clip_scale: None,
        clip_value: None,
        weight_decay: None,
        rule: Rule::Sgd { lr: 0.1 },
        sync_alpha: None,
    };
    let grad = [0x3f80u16; 4];
    let rows: [(&str, f32, usize, usize, &str); 6] = [
        ("zero scale", 0.0, 4, 4, "grad_scale"),
        ("negative scale", -2.0, 4, 4, "grad_scale"),
        ("NaN scale", f32::NAN, 4, 4, "grad_scale"),
        ("infinite scale", f32::INFINITY, 4, 4, "grad_scale"),
        ("short copy", 1.0, 4, 3, "copy"),
        ("short gradient", 1.0, 3, 4, "grad"),
    ];
    for (row, scale, glen, clen, names) in rows {
        let mut param = [1f32; 4];
        let mut copy = vec![7u16; clen];
        let e = kernels::apply_mixed(
            tier,
            &plan,
            scale,
            MixedBuffers {
                param: &mut param,
                grad: Grad::Bf16(&grad[..glen]),
                m: &mut [],
                v: &mut [],
                v_max: &mut [],
                slow: &mut [],
                copy: Some(ParamCopy {
                    half: Half::F16,
                    out: &mut copy,
                }),
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains(names), "{row}: {e}");
        assert_eq!(param, [1.0; 4], "{row}");
        assert!(copy.iter().all(|&h| h == 7), "{row}");
    }
    let mut partials = [0f64; 2];
    let e = kernels::sum_squares_partials_mixed(tier, Grad::F16(&grad), 1.0, &mut partials)
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::LengthMismatch {
                expected: 1,
                got: 2,
                ..
            }
        ),
        "{e}"
    );
}

per_tier_tests! {
    {
        pass_finite_matches_composition => |t| check_pass(t, Inputs::Finite),
        pass_infinities_match_composition => |t| check_pass(t, Inputs::Inf),
        pass_nans_match_composition => |t| check_pass(t, Inputs::Nan),
        partials_match_composition => check_partials,
        bad_arguments_are_refused => check_errors,
    };
    scalar => Tier::Scalar,
    portable => Tier::Portable,
    avx2 => Tier::Avx2,
    avx512 => Tier::Avx512,
}
