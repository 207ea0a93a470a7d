//! The AVX2 tier: `core::arch` intrinsics on 256-bit registers, eight f32 lanes.
//!
//! Only the AVX subset of instructions is needed (packed add/sub/mul/div/sqrt/compare, the
//! f32 -> f64 conversion); the tier is gated on AVX2 so that one detection covers the machines
//! it is tuned for. No FMA is ever enabled: a fused multiply-add rounds once where the other
//! tiers round twice and would break bit-identity.
//!
//! The vector type [`Avx2`] is private to this module and only ever used inside the
//! `#[target_feature(enable = "avx2")]` functions below, which are entered only after run-time
//! detection. That is the argument behind every `unsafe` block here.

use std::arch::x86_64::*;

use super::{Vf32, SUMSQ_LANES};
use crate::kernels::{self, Buffers, Op, Plan};

#[derive(Clone, Copy)]
struct Avx2(__m256);

impl Vf32 for Avx2 {
    const LANES: usize = 8;
    type Acc = [__m256d; 4];

    #[inline(always)]
    fn splat(x: f32) -> Self {
        // SAFETY: `Avx2` values only exist inside the `#[target_feature(enable = "avx2")]`
        // entry points of this module, which run only after AVX2 was detected.
        Avx2(unsafe { _mm256_set1_ps(x) })
    }
    #[inline(always)]
    fn load(s: &[f32]) -> Self {
        let s = &s[..8];
        // SAFETY: `s` has exactly 8 readable f32 (the slice above is bounds-checked);
        // `loadu` has no alignment requirement; AVX2 was detected (see `splat`).
        Avx2(unsafe { _mm256_loadu_ps(s.as_ptr()) })
    }
    #[inline(always)]
    fn store(self, s: &mut [f32]) {
        let s = &mut s[..8];
        // SAFETY: `s` has exactly 8 writable f32 (bounds-checked slice), `storeu` has no
        // alignment requirement; AVX2 was detected (see `splat`).
        unsafe { _mm256_storeu_ps(s.as_mut_ptr(), self.0) }
    }
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        // SAFETY: AVX2 was detected (see `splat`).
        Avx2(unsafe { _mm256_add_ps(self.0, o.0) })
    }
    #[inline(always)]
    fn sub(self, o: Self) -> Self {
        // SAFETY: AVX2 was detected (see `splat`).
        Avx2(unsafe { _mm256_sub_ps(self.0, o.0) })
    }
    #[inline(always)]
    fn mul(self, o: Self) -> Self {
        // SAFETY: AVX2 was detected (see `splat`).
        Avx2(unsafe { _mm256_mul_ps(self.0, o.0) })
    }
    #[inline(always)]
    fn div(self, o: Self) -> Self {
        // SAFETY: AVX2 was detected (see `splat`).
        Avx2(unsafe { _mm256_div_ps(self.0, o.0) })
    }
    #[inline(always)]
    fn sqrt(self) -> Self {
        // SAFETY: AVX2 was detected (see `splat`).
        Avx2(unsafe { _mm256_sqrt_ps(self.0) })
    }
    #[inline(always)]
    fn max(self, o: Self) -> Self {
        // `vmaxps a, b` returns `a > b ? a : b`, exactly the contract of `Vf32::max`.
        // SAFETY: AVX2 was detected (see `splat`).
        Avx2(unsafe { _mm256_max_ps(self.0, o.0) })
    }
    #[inline(always)]
    fn min(self, o: Self) -> Self {
        // `vminps a, b` returns `a < b ? a : b`, exactly the contract of `Vf32::min`.
        // SAFETY: AVX2 was detected (see `splat`).
        Avx2(unsafe { _mm256_min_ps(self.0, o.0) })
    }

    #[inline(always)]
    fn acc_zero() -> Self::Acc {
        // SAFETY: AVX2 was detected (see `splat`).
        unsafe { [_mm256_setzero_pd(); 4] }
    }
    #[inline(always)]
    fn acc_add_squares(acc: Self::Acc, x: &[f32]) -> Self::Acc {
        let x = &x[..SUMSQ_LANES];
        // SAFETY: `x` has exactly 16 readable f32 (bounds-checked slice), so the four 4-lane
        // unaligned loads at offsets 0, 4, 8, 12 stay inside it; AVX2 was detected (see `splat`).
        unsafe {
            let p = x.as_ptr();
            let mut out = acc;
            for (k, a) in out.iter_mut().enumerate() {
                let d = _mm256_cvtps_pd(_mm_loadu_ps(p.add(4 * k)));
                *a = _mm256_add_pd(*a, _mm256_mul_pd(d, d));
            }
            out
        }
    }
    #[inline(always)]
    fn acc_lanes(acc: Self::Acc) -> [f64; SUMSQ_LANES] {
        let mut out = [0.0; SUMSQ_LANES];
        for (k, a) in acc.iter().enumerate() {
            // SAFETY: `out[4k..4k+4]` is 4 writable f64 (bounds-checked slice); AVX2 was
            // detected (see `splat`).
            unsafe { _mm256_storeu_pd(out[4 * k..4 * k + 4].as_mut_ptr(), *a) }
        }
        out
    }
}

#[target_feature(enable = "avx2")]
fn fused_avx2(plan: &Plan, b: Buffers<'_>) {
    kernels::fused::<Avx2>(plan, b)
}

#[target_feature(enable = "avx2")]
fn sumsq_avx2(x: &[f32], partials: &mut [f64]) {
    kernels::sumsq_partials::<Avx2>(x, partials)
}

#[target_feature(enable = "avx2")]
fn elementwise_avx2(op: Op, x: &mut [f32], y: &mut [f32]) {
    kernels::elementwise::<Avx2>(op, x, y)
}

fn detected() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
}

/// The fused update on the AVX2 tier (the portable tier if AVX2 is missing, which the dispatch
/// never allows to happen; the check is a cached load and keeps this function safe).
pub(crate) fn fused(plan: &Plan, b: Buffers<'_>) {
    if detected() {
        // SAFETY: AVX2 is present on this CPU (checked just above).
        unsafe { fused_avx2(plan, b) }
    } else {
        kernels::fused::<super::portable::Portable>(plan, b)
    }
}

/// Block partial sums of squares on the AVX2 tier (see [`fused`] for the fallback).
pub(crate) fn sumsq(x: &[f32], partials: &mut [f64]) {
    if detected() {
        // SAFETY: AVX2 is present on this CPU (checked just above).
        unsafe { sumsq_avx2(x, partials) }
    } else {
        kernels::sumsq_partials::<super::portable::Portable>(x, partials)
    }
}

/// A standalone elementwise operation on the AVX2 tier (see [`fused`] for the fallback).
pub(crate) fn elementwise(op: Op, x: &mut [f32], y: &mut [f32]) {
    if detected() {
        // SAFETY: AVX2 is present on this CPU (checked just above).
        unsafe { elementwise_avx2(op, x, y) }
    } else {
        kernels::elementwise::<super::portable::Portable>(op, x, y)
    }
}
