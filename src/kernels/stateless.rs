//! The stateless public entry points: the caller owns every buffer. Each checks its arguments
//! before writing anything, sets flatopt's floating-point mode for the call ([`FpMode`]) and
//! runs the kernel of its tier from the tier's table (`Tier::kernels`, chosen once).

use super::codec::{q8_block_count, Q8Code, SrKey};
use super::convert::Half;
use super::factored::apply as apply_factored;
use super::held::{fused_held, HeldBuffers, HeldRounding};
use super::mixed::{fused_mixed, sumsq_partials_mixed, Grad, GradScale, MixedBuffers};
use super::ops::Op;
use super::plan::Rule;
use super::plan::{Buffers, Plan};
use super::reduce::{sumsq_block_count, SUMSQ_BLOCK};
use super::trust::{apply_whole, pre_plan};
use crate::error::Error;
use crate::simd::{FpMode, Tier};

/// Applies one fused update to one buffer on `tier`, after checking every length.
/// Nothing is written if a length is wrong.
pub fn apply(tier: Tier, plan: &Plan, b: Buffers<'_>) -> Result<(), Error> {
    let _mode = FpMode::enter();
    b.check(plan)?;
    let pre = pre_plan(plan);
    if pre.is_some() || matches!(plan.rule, Rule::Adafactor { .. }) {
        // A rule with per-buffer norms (Adafactor unfactored: a stateless call has no shape):
        // `b` is the whole buffer.
        let Buffers {
            param,
            grad,
            m,
            v,
            v_max,
            slow,
        } = b;
        let b = MixedBuffers {
            param,
            grad: Grad::F32(grad),
            m,
            v,
            v_max,
            slow,
            copy: None,
        };
        match pre {
            Some(pre) => apply_whole(tier, plan, &pre, GradScale::One, b),
            None => apply_factored(tier, plan, GradScale::One, b, None, false),
        }
        return Ok(());
    }
    apply_unchecked_lengths(tier, plan, b);
    Ok(())
}

/// [`apply`] without the length check (the engine checks once at registration). Still memory
/// safe: a short state buffer panics on its bounds check.
pub(crate) fn apply_unchecked_lengths(tier: Tier, plan: &Plan, b: Buffers<'_>) {
    (tier.kernels().fused)(plan, b);
}

/// Block partial sums of squares of `x` on `tier` (see [`SUMSQ_BLOCK`]).
pub fn sum_squares_partials(tier: Tier, x: &[f32], partials: &mut [f64]) -> Result<(), Error> {
    let _mode = FpMode::enter();
    let want = sumsq_block_count(x.len());
    if partials.len() != want {
        return Err(Error::LengthMismatch {
            what: "partials (one per block of the sum of squares)".to_string(),
            expected: want,
            got: partials.len(),
        });
    }
    sumsq_partials_unchecked(tier, x, partials);
    Ok(())
}

pub(crate) fn sumsq_partials_unchecked(tier: Tier, x: &[f32], partials: &mut [f64]) {
    (tier.kernels().sumsq_partials)(x, partials);
}

/// Sum of squares of `x`, accumulated in f64 in the fixed order of the determinism contract:
/// block partials added in block order. Finite for any finite input (an f64 cannot overflow on
/// squares of f32), NaN or +Inf if `x` holds a non-finite value.
pub fn sum_squares(tier: Tier, x: &[f32]) -> f64 {
    let _mode = FpMode::enter();
    let kernels = tier.kernels();
    let mut total = 0.0;
    for block in x.chunks(SUMSQ_BLOCK) {
        let mut partial = [0.0];
        (kernels.sumsq_partials)(block, &mut partial);
        total += partial[0];
    }
    total
}

/// Index and value of the first NaN or ±Inf in `x` (a cold path: only run once a sum of squares
/// came out non-finite).
pub fn first_non_finite(x: &[f32]) -> Option<(usize, f32)> {
    x.iter()
        .enumerate()
        .find(|(_, v)| !v.is_finite())
        .map(|(i, v)| (i, *v))
}

/// Index and value (widened) of the first NaN or ±Inf in `g`, of any format (a cold path).
pub fn first_non_finite_grad(g: Grad<'_>) -> Option<(usize, f32)> {
    let find = |h: &[u16], exp: u16, widen: fn(u16) -> f32| {
        h.iter()
            .position(|&x| x & exp == exp)
            .map(|i| (i, widen(h[i])))
    };
    match g {
        Grad::F32(x) => first_non_finite(x),
        Grad::Bf16(h) => find(h, 0x7f80, crate::simd::half::bf16_to_f32),
        Grad::F16(h) => find(h, 0x7c00, crate::simd::half::f16_to_f32),
    }
}

/// Index and value of the first element of `g` that is not finite once divided by `scale`
/// (a NaN or ±Inf, or a finite value that the division overflows), the value divided (a cold
/// path: it locates what made a checked update's sum of squares non-finite).
pub fn first_non_finite_unscaled(g: Grad<'_>, scale: GradScale) -> Option<(usize, f32)> {
    let find = |n: usize, at: &dyn Fn(usize) -> f32| {
        (0..n)
            .map(|i| (i, scale.apply(at(i))))
            .find(|(_, v)| !v.is_finite())
    };
    match (scale, g) {
        (GradScale::One, g) => first_non_finite_grad(g),
        (_, Grad::F32(x)) => find(x.len(), &|i| x[i]),
        (_, Grad::Bf16(h)) => find(h.len(), &|i| crate::simd::half::bf16_to_f32(h[i])),
        (_, Grad::F16(h)) => find(h.len(), &|i| crate::simd::half::f16_to_f32(h[i])),
    }
}

/// Applies an elementwise operation on `tier`. `y` is used by [`Op::Sync`] only (the slow
/// weights; pass an empty slice otherwise). Checks its arguments before writing anything.
pub fn apply_op(tier: Tier, op: Op, x: &mut [f32], y: &mut [f32]) -> Result<(), Error> {
    let _mode = FpMode::enter();
    match op {
        Op::Scale(s) if !s.is_finite() => {
            return Err(Error::invalid("scale", s, "must be finite"));
        }
        Op::ClipValue(c) if c.is_nan() || c < 0.0 => {
            return Err(Error::invalid(
                "clip_value",
                c,
                "must be >= 0 (+inf allowed)",
            ));
        }
        Op::Sync(a) if !(0.0..=1.0).contains(&a) => {
            return Err(Error::invalid("alpha", a, "must be in [0, 1]"));
        }
        Op::Sync(_) if y.len() != x.len() => {
            return Err(Error::LengthMismatch {
                what: "slow weights".to_string(),
                expected: x.len(),
                got: y.len(),
            });
        }
        _ => {}
    }
    (tier.kernels().elementwise)(op, x, y);
    Ok(())
}

fn check_same_length(what: &str, expected: usize, got: usize) -> Result<(), Error> {
    if expected == got {
        Ok(())
    } else {
        Err(Error::LengthMismatch {
            what: what.to_string(),
            expected,
            got,
        })
    }
}

/// Widens the 16-bit floats `src` (bit patterns of format `ty`) into `dst` on `tier`, exactly
/// (`docs/numerics.md`, "16-bit floats"). The lengths must be equal; nothing is written if not.
pub fn widen_to_f32(tier: Tier, ty: Half, src: &[u16], dst: &mut [f32]) -> Result<(), Error> {
    check_same_length("f32 output of the widening", src.len(), dst.len())?;
    let _mode = FpMode::enter();
    (tier.kernels().widen)(ty, src, dst);
    Ok(())
}

/// Narrows `src` into 16-bit floats of format `ty` (bit patterns) in `dst` on `tier`: round to
/// nearest even, subnormals kept, overflow to ±Inf, NaN kept NaN (`docs/numerics.md`, "16-bit
/// floats"). The lengths must be equal; nothing is written if not.
pub fn narrow_from_f32(tier: Tier, ty: Half, src: &[f32], dst: &mut [u16]) -> Result<(), Error> {
    check_same_length("16-bit output of the narrowing", src.len(), dst.len())?;
    let _mode = FpMode::enter();
    (tier.kernels().narrow)(ty, src, dst);
    Ok(())
}

/// Narrows `src` into bf16 (bit patterns) in `dst` on `tier` with deterministic stochastic
/// rounding: element `j` rounds with the random bits of index `first + j` under `key`
/// (`docs/numerics.md`, "Compressed state"). The lengths must be equal; nothing is written if
/// not.
pub fn narrow_bf16_stochastic(
    tier: Tier,
    key: SrKey,
    first: u64,
    src: &[f32],
    dst: &mut [u16],
) -> Result<(), Error> {
    check_same_length("bf16 output of the narrowing", src.len(), dst.len())?;
    let _mode = FpMode::enter();
    (tier.kernels().encode_bf16_sr)(key, first, src, dst);
    Ok(())
}

/// Checks the lengths of 8-bit state: `codes` as long as the values, one scale per block.
fn check_q8(values: usize, codes: usize, scales: usize) -> Result<(), Error> {
    check_same_length("8-bit codes", values, codes)?;
    let want = q8_block_count(values);
    if scales != want {
        return Err(Error::LengthMismatch {
            what: format!("scales (one per block of {} elements)", super::Q8_BLOCK),
            expected: want,
            got: scales,
        });
    }
    Ok(())
}

/// Quantizes `src` to the 8-bit blockwise `code` on `tier`: the codes and one scale per block
/// of [`Q8_BLOCK`](super::Q8_BLOCK) elements from the start of `src` (`docs/numerics.md`,
/// "Compressed state"). Nothing is written if a length is wrong.
pub fn quantize_q8(
    tier: Tier,
    code: Q8Code,
    src: &[f32],
    codes: &mut [u8],
    scales: &mut [f32],
) -> Result<(), Error> {
    check_q8(src.len(), codes.len(), scales.len())?;
    let _mode = FpMode::enter();
    (tier.kernels().encode_q8)(code, None, src, codes, scales);
    Ok(())
}

/// [`quantize_q8`] with stochastic rounding: element `j` rounds with the 16 random bits of
/// index `first + j` under `key`, as the engine rounds 8-bit state (`docs/numerics.md`,
/// "Compressed state"). Nothing is written if a length is wrong.
pub fn quantize_q8_stochastic(
    tier: Tier,
    code: Q8Code,
    key: SrKey,
    first: u64,
    src: &[f32],
    codes: &mut [u8],
    scales: &mut [f32],
) -> Result<(), Error> {
    check_q8(src.len(), codes.len(), scales.len())?;
    let _mode = FpMode::enter();
    (tier.kernels().encode_q8)(code, Some((key, first)), src, codes, scales);
    Ok(())
}

/// Decodes the 8-bit blockwise `codes` with their `scales` into `dst` on `tier`. Nothing is
/// written if a length is wrong.
pub fn dequantize_q8(
    tier: Tier,
    code: Q8Code,
    codes: &[u8],
    scales: &[f32],
    dst: &mut [f32],
) -> Result<(), Error> {
    check_q8(dst.len(), codes.len(), scales.len())?;
    let _mode = FpMode::enter();
    (tier.kernels().decode_q8)(code, codes, scales, dst);
    Ok(())
}

/// The loss scale `scale` as a [`GradScale`], or an error naming it.
pub(crate) fn grad_scale(scale: f32) -> Result<GradScale, Error> {
    GradScale::new(scale)
        .ok_or_else(|| Error::invalid("grad_scale", scale, "must be finite and > 0"))
}

/// Applies one mixed-precision fused update to one buffer on `tier`: the gradients (f32, bf16 or
/// fp16) widened exactly and divided by `grad_scale` (1 for none) before the pipeline, and the
/// 16-bit copy, if any, written from the new parameters. Bit for bit the f32 pass on the
/// widened, unscaled gradients followed by [`narrow_from_f32`]. Nothing is written if an
/// argument is wrong.
pub fn apply_mixed(tier: Tier, plan: &Plan, scale: f32, b: MixedBuffers<'_>) -> Result<(), Error> {
    let _mode = FpMode::enter();
    let unscale = grad_scale(scale)?;
    b.check(plan)?;
    match pre_plan(plan) {
        // Adafactor, unfactored: `b` is the whole buffer.
        None if matches!(plan.rule, Rule::Adafactor { .. }) => {
            apply_factored(tier, plan, unscale, b, None, false)
        }
        // A rule with per-buffer norms: `b` is the whole buffer.
        Some(pre) => apply_whole(tier, plan, &pre, unscale, b),
        None => fused_mixed(tier.kernels(), plan, unscale, b),
    }
    Ok(())
}

/// Block partial sums of squares of `grad` (any format) divided by `scale`, as the mixed
/// pass applies them (see [`sum_squares_partials`]).
pub fn sum_squares_partials_mixed(
    tier: Tier,
    grad: Grad<'_>,
    scale: f32,
    partials: &mut [f64],
) -> Result<(), Error> {
    let _mode = FpMode::enter();
    let unscale = grad_scale(scale)?;
    check_same_length(
        "partials (one per block of the sum of squares)",
        sumsq_block_count(grad.len()),
        partials.len(),
    )?;
    sumsq_partials_mixed(tier.kernels(), grad, unscale, partials);
    Ok(())
}

/// One buffer's pass in any gradient format without the length check (the engine checks at
/// registration and per call): the f32 pass itself when there is nothing to convert.
pub(crate) fn apply_mixed_unchecked_lengths(
    tier: Tier,
    plan: &Plan,
    unscale: GradScale,
    b: MixedBuffers<'_>,
) {
    fused_mixed(tier.kernels(), plan, unscale, b);
}

/// Block partials of `grad` divided by the scale, without the length check.
pub(crate) fn sumsq_partials_mixed_unchecked(
    tier: Tier,
    grad: Grad<'_>,
    unscale: GradScale,
    partials: &mut [f64],
) {
    sumsq_partials_mixed(tier.kernels(), grad, unscale, partials);
}

/// The fused pass over held (compressed) state on `tier`, without checks (the engine checks
/// lengths at registration and block alignment when splitting).
pub(crate) fn apply_held_unchecked(
    tier: Tier,
    plan: &Plan,
    unscale: GradScale,
    rounding: HeldRounding,
    b: HeldBuffers<'_>,
) {
    fused_held(tier.kernels(), plan, unscale, rounding, b);
}
