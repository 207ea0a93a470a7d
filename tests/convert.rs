//! The 16-bit float conversions (bf16 and fp16 <-> f32) on every tier: every one of the 65,536
//! bit patterns of each format widened, and a large sample of f32 values narrowed (every
//! rounding tie and its neighbours, subnormals, NaN payloads, ±Inf, the largest finite values,
//! the values that round to overflow, random bit patterns), each against a readable model
//! written here in f64 and integers, and every tier bit for bit against the scalar tier over
//! odd lengths and misaligned starts.

#[macro_use]
mod common;

use common::{on_tier, Rng};
use flatopt::kernels::{
    apply_mixed, narrow_from_f32, widen_to_f32, Grad, Half, MixedBuffers, ParamCopy, Plan, Rule,
};
use flatopt::{Error, Tier};

/// A format's parameters for the model: precision `p` (mantissa bits plus the implicit one),
/// the smallest normal exponent, the largest exponent, the exponent and mantissa field widths.
struct Format {
    p: i32,
    emin: i32,
    emax: i32,
    exp_bits: u32,
    man_bits: u32,
}

fn format(ty: Half) -> Format {
    match ty {
        Half::Bf16 => Format {
            p: 8,
            emin: -126,
            emax: 127,
            exp_bits: 8,
            man_bits: 7,
        },
        Half::F16 => Format {
            p: 11,
            emin: -14,
            emax: 15,
            exp_bits: 5,
            man_bits: 10,
        },
    }
}

fn pow2(e: i32) -> f64 {
    2f64.powi(e)
}

/// The model of a 16-bit pattern's value, from the textbook definition: `(-1)^s * 2^(e - bias) *
/// 1.m` for a normal, `(-1)^s * 2^emin * 0.m` for a subnormal, ±Inf, NaN.
fn model_value(ty: Half, h: u16) -> f64 {
    let f = format(ty);
    let h = u32::from(h);
    let sign = if h >> 15 == 1 { -1.0 } else { 1.0 };
    let exp = (h >> f.man_bits) & ((1 << f.exp_bits) - 1);
    let man = f64::from(h & ((1 << f.man_bits) - 1));
    let frac = man / pow2(f.man_bits as i32);
    let top = (1 << f.exp_bits) - 1;
    let bias = f.emax;
    sign * if exp == top {
        if man == 0.0 {
            f64::INFINITY
        } else {
            f64::NAN
        }
    } else if exp == 0 {
        pow2(f.emin) * frac
    } else {
        pow2(exp as i32 - bias) * (1.0 + frac)
    }
}

/// The f32 bits a NaN widens to: bf16 keeps its bits; fp16 is quieted, payload shifted up.
fn model_widened_nan(ty: Half, h: u16) -> u32 {
    let h = u32::from(h);
    match ty {
        Half::Bf16 => h << 16,
        Half::F16 => ((h & 0x8000) << 16) | 0x7fc0_0000 | ((h & 0x3ff) << 13),
    }
}

/// The 16-bit pattern a NaN narrows to: quiet, its sign and the top bits of its payload.
fn model_narrowed_nan(ty: Half, x: f32) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 31) << 15) as u16;
    match ty {
        Half::Bf16 => sign | 0x7fc0 | ((b >> 16) & 0x3f) as u16,
        Half::F16 => sign | 0x7e00 | ((b >> 13) & 0x1ff) as u16,
    }
}

/// `x` rounded to the format in f64: the unit in the last place at `x`'s exponent (not below
/// the smallest normal's, which gives the subnormals), the quotient rounded half to even
/// (exact: powers of two divide exactly), and overflow where the rounded magnitude exceeds the
/// largest finite value. NaN for NaN.
fn model_round(ty: Half, x: f32) -> f64 {
    let f = format(ty);
    let v = f64::from(x);
    if v.is_nan() || v.is_infinite() || v == 0.0 {
        return v;
    }
    let a = v.abs();
    let e = ((a.to_bits() >> 52) as i32 - 1023).max(f.emin);
    let ulp = pow2(e - (f.p - 1));
    let r = (a / ulp).round_ties_even() * ulp;
    let max = (2.0 - pow2(1 - f.p)) * pow2(f.emax);
    let r = if r > max { f64::INFINITY } else { r };
    r.copysign(v)
}

/// Checks one narrowed value against the model: the value (zero's sign included), or the NaN
/// rule's bits.
fn check_narrowed(ty: Half, x: f32, got: u16, what: &str) {
    if x.is_nan() {
        assert_eq!(
            got,
            model_narrowed_nan(ty, x),
            "{what}: {} of NaN {:#010x}",
            ty.name(),
            x.to_bits()
        );
        return;
    }
    let want = model_round(ty, x);
    let got_value = model_value(ty, got);
    assert!(
        got_value == want && got_value.is_sign_negative() == want.is_sign_negative(),
        "{what}: {} of {x:e} ({:#010x}) is {got:#06x} = {got_value:e}, the model says {want:e}",
        ty.name(),
        x.to_bits()
    );
}

/// Every 16-bit pattern, in order.
fn every_pattern() -> Vec<u16> {
    (0..=u16::MAX).collect()
}

/// The narrowing sample for `ty`: for every pair of adjacent non-negative patterns (the largest
/// finite paired with the first value that overflows, 2^(emax+1)), their midpoint (the tie) and
/// its two f32 neighbours, and each value itself and its neighbours, both signs; f32's extremes
/// and subnormals; NaNs with payloads only in the bits narrowing drops, only in the bits it
/// keeps, and both, signalling and quiet, both signs; and random bit patterns.
fn narrow_sample(ty: Half) -> Vec<f32> {
    let f = format(ty);
    let top = ((1u32 << f.exp_bits) - 1) << f.man_bits;
    let mut values: Vec<f64> = (0..top).map(|h| model_value(ty, h as u16)).collect();
    values.push(pow2(f.emax + 1));
    let mut out = Vec::new();
    let push_around = |x: f32, out: &mut Vec<f32>| {
        for y in [x, x.next_up(), x.next_down()] {
            out.push(y);
            out.push(-y);
        }
    };
    for w in values.windows(2) {
        let mid = (w[0] + w[1]) / 2.0;
        let mid32 = mid as f32;
        assert_eq!(f64::from(mid32), mid, "ties are f32 values");
        push_around(mid32, &mut out);
        push_around(w[0] as f32, &mut out);
    }
    for x in [
        0.0,
        f32::MIN_POSITIVE,
        f32::from_bits(1),
        f32::from_bits(0x007f_ffff),
        f32::from_bits(0x0040_0000),
        f32::MAX,
        f32::INFINITY,
        65504.0,
        65519.996,
        65520.0,
        65536.0,
    ] {
        push_around(x, &mut out);
    }
    for payload in [
        1, 0x1fff, 0x2000, 0xffff, 0x1_0000, 0x3f_ffff, 0x40_0000, 0x40_0001, 0x7f_ffff, 0x12_3456,
    ] {
        for sign in [0, 0x8000_0000] {
            out.push(f32::from_bits(sign | 0x7f80_0000 | payload));
        }
    }
    let mut rng = Rng(0x5eed_0016 + ty as u64);
    for _ in 0..1 << 20 {
        out.push(f32::from_bits(rng.next_u64() as u32));
    }
    // Every 4099th f32 subnormal pattern, both signs.
    for b in (1..0x80_0000u32).step_by(4099) {
        out.push(f32::from_bits(b));
        out.push(f32::from_bits(b | 0x8000_0000));
    }
    out
}

fn widen_on(tier: Tier, ty: Half, src: &[u16]) -> Vec<u32> {
    let mut dst = vec![0f32; src.len()];
    widen_to_f32(tier, ty, src, &mut dst).unwrap();
    dst.iter().map(|x| x.to_bits()).collect()
}

fn narrow_on(tier: Tier, ty: Half, src: &[f32]) -> Vec<u16> {
    let mut dst = vec![0u16; src.len()];
    narrow_from_f32(tier, ty, src, &mut dst).unwrap();
    dst
}

/// Every pattern widened on `tier` against the model, the f32 holding the exact value (NaN:
/// the rule's bits).
fn check_widen_every_pattern(tier: Tier, ty: Half) {
    let all = every_pattern();
    let got = widen_on(tier, ty, &all);
    for (&h, &g) in all.iter().zip(&got) {
        let want = model_value(ty, h);
        let gv = f64::from(f32::from_bits(g));
        if want.is_nan() {
            assert_eq!(
                g,
                model_widened_nan(ty, h),
                "{tier}: {} NaN {h:#06x}",
                ty.name()
            );
        } else {
            assert!(
                gv == want && gv.is_sign_negative() == want.is_sign_negative(),
                "{tier}: {} {h:#06x} widened to {g:#010x} = {gv:e}, the model says {want:e}",
                ty.name()
            );
        }
    }
    eprintln!("{tier}: {} patterns of {} widened", all.len(), ty.name());
}

/// The narrowing sample on `tier` against the model.
fn check_narrow_sample(tier: Tier, ty: Half) {
    let sample = narrow_sample(ty);
    let got = narrow_on(tier, ty, &sample);
    for (&x, &g) in sample.iter().zip(&got) {
        check_narrowed(ty, x, g, tier.name());
    }
    eprintln!(
        "{tier}: {} f32 values narrowed to {}",
        sample.len(),
        ty.name()
    );
}

/// Lengths of the cross-tier runs: below, at and around every vector width, odd tails, long.
const LENS: [usize; 12] = [0, 1, 7, 8, 9, 15, 16, 17, 31, 33, 1001, 65_537];

/// `tier` against the scalar tier, bit for bit, on windows of the inputs at every start offset
/// modulo 64 bytes of the f32 side (and so every alignment of the 16-bit side) and odd lengths.
fn check_against_scalar(tier: Tier, ty: Half) {
    let mut patterns = every_pattern();
    patterns.extend(every_pattern().iter().rev());
    let sample = narrow_sample(ty);
    let mut runs = 0;
    for len in LENS {
        for off in 0..16 {
            let src16 = &patterns[off..off + len];
            assert_eq!(
                widen_on(tier, ty, src16),
                widen_on(Tier::Scalar, ty, src16),
                "{tier}: widen {} len {len} offset {off}",
                ty.name()
            );
            let src32 = &sample[off..off + len];
            assert_eq!(
                narrow_on(tier, ty, src32),
                narrow_on(Tier::Scalar, ty, src32),
                "{tier}: narrow {} len {len} offset {off}",
                ty.name()
            );
            runs += 2;
        }
    }
    // The whole sample in one call, at two alignments.
    for off in [0, 5] {
        assert_eq!(
            narrow_on(tier, ty, &sample[off..]),
            narrow_on(Tier::Scalar, ty, &sample[off..]),
            "{tier}: narrow {} whole sample offset {off}",
            ty.name()
        );
    }
    eprintln!("{tier}: {runs} windows of {} against scalar", ty.name());
}

/// An Adam step whose first moment is the gradient and whose parameters stay as they are:
/// `b1 = 0` with `m = -0` (so `0 * m + 1 * g` is `g` itself, signed zeros included), step 0
/// with `m = v = 0` for the parameters (`p - 0 * 0 = p`). The mixed pass runs Adam's fused
/// loop, which widens the gradients and narrows the copy in registers.
fn identity_adam() -> Plan {
    Plan {
        clip_scale: None,
        clip_value: None,
        weight_decay: None,
        rule: Rule::Adam {
            b1: 0.0,
            one_minus_b1: 1.0,
            b2: 0.999,
            one_minus_b2: 0.001,
            step: 0.0,
            inv_sqrt_bc2: 1.0,
            eps: 1e-8,
            amsgrad: false,
            decay: None,
        },
        sync_alpha: None,
    }
}

/// One mixed Adam pass on `tier` over elements `off..` of the buffers (every head / vector /
/// tail split of the loop): returns the first moments and the copy.
fn mixed_adam_on(
    tier: Tier,
    ty: Half,
    grad: &[u16],
    param: &[f32],
    m0: f32,
    off: usize,
) -> (Vec<f32>, Vec<u16>) {
    let n = grad.len() - off;
    let mut p = param.to_vec();
    let mut m = vec![m0; grad.len()];
    let mut v = vec![0f32; grad.len()];
    let mut copy = vec![0x5a5au16; grad.len()];
    let g = &grad[off..];
    apply_mixed(
        tier,
        &identity_adam(),
        1.0,
        MixedBuffers {
            param: &mut p[off..],
            grad: match ty {
                Half::Bf16 => Grad::Bf16(g),
                Half::F16 => Grad::F16(g),
            },
            m: &mut m[off..],
            v: &mut v[off..],
            v_max: &mut [],
            slow: &mut [],
            copy: Some(ParamCopy {
                half: ty,
                out: &mut copy[off..],
            }),
        },
    )
    .unwrap();
    assert_eq!(n, p.len() - off);
    (m.split_off(off), copy.split_off(off))
}

/// Every pattern widened inside the mixed Adam pass on `tier` against the model (a NaN comes
/// out quieted, as any arithmetic on it does), at three alignments.
fn check_widen_every_pattern_in_pass(tier: Tier, ty: Half) {
    let mut all = vec![0u16; 3];
    all.extend(every_pattern());
    let param = vec![1f32; all.len()];
    for off in [0, 1, 3] {
        let (m, _) = mixed_adam_on(tier, ty, &all, &param, -0.0, off);
        for (&h, &g) in all[off..].iter().zip(&m) {
            let g = g.to_bits();
            let want = model_value(ty, h);
            if want.is_nan() {
                let nan = model_widened_nan(ty, h) | 0x0040_0000;
                assert_eq!(g, nan, "{tier}: {} NaN {h:#06x} in the pass", ty.name());
            } else {
                let gv = f64::from(f32::from_bits(g));
                assert!(
                    gv == want && gv.is_sign_negative() == want.is_sign_negative(),
                    "{tier}: {} {h:#06x} widened to {g:#010x} in the pass, the model says {want:e}",
                    ty.name()
                );
            }
        }
    }
    eprintln!(
        "{tier}: {} patterns of {} widened in the mixed pass, 3 alignments",
        all.len() - 3,
        ty.name()
    );
}

/// The narrowing sample written as the mixed Adam pass's copy on `tier` against the model and
/// the chunk conversion of the scalar tier, at two alignments. The parameters come out of the
/// pass as they went in, except that a signalling NaN is quieted (its payload kept); the copy
/// is the narrowing of what the pass stored.
fn check_narrow_sample_in_pass(tier: Tier, ty: Half) {
    let sample = narrow_sample(ty);
    let zeros = vec![0u16; sample.len()];
    for off in [0, 5] {
        let (_, copy) = mixed_adam_on(tier, ty, &zeros, &sample, 0.0, off);
        let stored: Vec<f32> = sample[off..]
            .iter()
            .map(|&x| {
                if x.is_nan() {
                    f32::from_bits(x.to_bits() | 0x0040_0000)
                } else {
                    x
                }
            })
            .collect();
        for (&x, &g) in stored.iter().zip(&copy) {
            check_narrowed(ty, x, g, &format!("{tier} in the pass"));
        }
        assert_eq!(
            copy,
            narrow_on(Tier::Scalar, ty, &stored),
            "{tier}: {} copy against the scalar chunk conversion, offset {off}",
            ty.name()
        );
    }
    eprintln!(
        "{tier}: {} f32 values narrowed to {} in the mixed pass, 2 alignments",
        sample.len(),
        ty.name()
    );
}

/// Unequal lengths are refused, naming both, and write nothing.
fn check_length_errors(tier: Tier) {
    for ty in Half::ALL {
        let mut dst = [7f32; 3];
        let e = widen_to_f32(tier, ty, &[0, 1], &mut dst).unwrap_err();
        assert!(
            matches!(
                e,
                Error::LengthMismatch {
                    expected: 2,
                    got: 3,
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(dst, [7.0; 3]);
        let mut dst = [7u16; 1];
        let e = narrow_from_f32(tier, ty, &[0.0, 1.0], &mut dst).unwrap_err();
        assert!(
            matches!(
                e,
                Error::LengthMismatch {
                    expected: 2,
                    got: 1,
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(dst, [7; 1]);
    }
}

per_tier_tests! {
    {
        widen_every_bf16 => |t| check_widen_every_pattern(t, Half::Bf16),
        widen_every_f16 => |t| check_widen_every_pattern(t, Half::F16),
        narrow_bf16_sample => |t| check_narrow_sample(t, Half::Bf16),
        narrow_f16_sample => |t| check_narrow_sample(t, Half::F16),
        bf16_matches_scalar_at_every_offset => |t| check_against_scalar(t, Half::Bf16),
        f16_matches_scalar_at_every_offset => |t| check_against_scalar(t, Half::F16),
        unequal_lengths_are_refused => check_length_errors,
        widen_every_bf16_in_the_mixed_pass => |t| check_widen_every_pattern_in_pass(t, Half::Bf16),
        widen_every_f16_in_the_mixed_pass => |t| check_widen_every_pattern_in_pass(t, Half::F16),
        narrow_bf16_sample_in_the_mixed_pass => |t| check_narrow_sample_in_pass(t, Half::Bf16),
        narrow_f16_sample_in_the_mixed_pass => |t| check_narrow_sample_in_pass(t, Half::F16),
    };
    scalar => Tier::Scalar,
    portable => Tier::Portable,
    avx2 => Tier::Avx2,
    avx512 => Tier::Avx512,
}

/// The model itself on values known by heart, so that a wrong model cannot pass the checks.
#[test]
fn model_knows_the_landmarks() {
    let rows: [(Half, u16, f64); 10] = [
        (Half::Bf16, 0x3f80, 1.0),
        (Half::Bf16, 0x0001, 9.183_549_615_799_121e-41),
        (Half::Bf16, 0x7f7f, 3.389_531_389_251_535_5e38),
        (Half::Bf16, 0xc000, -2.0),
        (Half::F16, 0x3c00, 1.0),
        (Half::F16, 0x0001, 5.960_464_477_539_063e-8),
        (Half::F16, 0x03ff, 6.097_555_160_522_461e-5),
        (Half::F16, 0x0400, 6.103_515_625e-5),
        (Half::F16, 0x7bff, 65504.0),
        (Half::F16, 0xfc00, f64::NEG_INFINITY),
    ];
    for (ty, h, v) in rows {
        assert_eq!(model_value(ty, h), v, "{} {h:#06x}", ty.name());
    }
    let rounding: [(Half, f32, f64); 8] = [
        (Half::F16, 65519.0, 65504.0),
        (Half::F16, 65520.0, f64::INFINITY),
        (Half::F16, 2.980_232_2e-8, 0.0), // 2^-25, a tie, to even (zero)
        (Half::F16, 1.0 + 1.0 / 2048.0, 1.0), // tie to even
        (Half::F16, 1.0 + 3.0 / 2048.0, 1.0 + 2.0 / 1024.0), // tie to even, up
        (Half::Bf16, 1.0 + 1.0 / 256.0, 1.0),
        (Half::Bf16, 1.0 + 3.0 / 256.0, 1.0 + 2.0 / 128.0),
        (Half::Bf16, f32::MAX, f64::INFINITY),
    ];
    for (ty, x, want) in rounding {
        assert_eq!(model_round(ty, x), want, "{} {x:e}", ty.name());
    }
}
