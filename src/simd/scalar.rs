//! The scalar tier: `f32` as a one-lane vector. Every kernel instantiated with it is the plain
//! reference the other tiers are checked against, and it also runs the tails shorter than a
//! vector on every tier.

use super::half::{bf16_to_f32, f16_to_f32, f32_to_bf16, f32_to_f16};
use super::{Kernels, Tier, Vf32, Vu32, SUMSQ_LANES};
use crate::kernels;

static TABLE: Kernels = Kernels {
    tier: Tier::Scalar,
    fused: kernels::fused::<f32>,
    fused_bf16: kernels::fused_bf16::<f32>,
    fused_q8: kernels::fused_q8::<f32>,
    fused_mixed: kernels::fused_mixed_io::<f32>,
    half_finite: kernels::half_all_finite,
    sumsq_partials: kernels::sumsq_partials::<f32>,
    sumsq_cols: kernels::sumsq_cols::<f32>,
    direction_sums: kernels::direction_sums::<f32>,
    square_sums: kernels::square_sums::<f32>,
    pre_sums: kernels::pre_sums::<f32>,
    elementwise: kernels::elementwise::<f32>,
    widen: kernels::widen::<f32>,
    narrow: kernels::narrow::<f32>,
    unscale: kernels::unscale::<f32>,
    encode_q8: kernels::encode_q8,
    decode_q8: kernels::decode_q8::<f32>,
    encode_bf16_sr: kernels::encode_bf16_sr,
    encode_bf16_sr2: kernels::encode_bf16_sr2,
    encode_q8_sr2: kernels::encode_q8_sr2::<f32>,
};

/// The scalar tier's kernels (every CPU runs them).
pub(super) fn table() -> &'static Kernels {
    &TABLE
}

impl Vf32 for f32 {
    const LANES: usize = 1;
    type Acc = [f64; SUMSQ_LANES];
    type U = u32;

    #[inline(always)]
    fn to_bits(self) -> u32 {
        f32::to_bits(self)
    }
    #[inline(always)]
    fn from_bits(u: u32) -> f32 {
        f32::from_bits(u)
    }

    #[inline(always)]
    fn splat(x: f32) -> Self {
        x
    }
    #[inline(always)]
    fn load(s: &[f32]) -> Self {
        s[0]
    }
    #[inline(always)]
    fn store(self, s: &mut [f32]) {
        s[0] = self;
    }
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        self + o
    }
    #[inline(always)]
    fn sub(self, o: Self) -> Self {
        self - o
    }
    #[inline(always)]
    fn mul(self, o: Self) -> Self {
        self * o
    }
    #[inline(always)]
    fn div(self, o: Self) -> Self {
        self / o
    }
    #[inline(always)]
    fn sqrt(self) -> Self {
        f32::sqrt(self)
    }
    #[inline(always)]
    fn max(self, o: Self) -> Self {
        if self > o {
            self
        } else {
            o
        }
    }
    #[inline(always)]
    fn min(self, o: Self) -> Self {
        if self < o {
            self
        } else {
            o
        }
    }
    #[inline(always)]
    fn abs(self) -> Self {
        f32::abs(self)
    }
    #[inline(always)]
    fn select_gt(self, o: Self, a: Self, b: Self) -> Self {
        if self > o {
            a
        } else {
            b
        }
    }
    #[inline(always)]
    fn mul_if(self, o: Self, keep: u32) -> Self {
        if keep != 0 {
            self * o
        } else {
            0.0
        }
    }

    #[inline(always)]
    fn load_bf16(s: &[u16]) -> Self {
        bf16_to_f32(s[0])
    }
    #[inline(always)]
    fn load_f16(s: &[u16]) -> Self {
        f16_to_f32(s[0])
    }
    #[inline(always)]
    fn store_bf16(self, s: &mut [u16]) {
        s[0] = f32_to_bf16(self);
    }
    #[inline(always)]
    fn store_f16(self, s: &mut [u16]) {
        s[0] = f32_to_f16(self);
    }

    #[inline(always)]
    fn acc_zero() -> Self::Acc {
        [0.0; SUMSQ_LANES]
    }
    #[inline(always)]
    fn acc_add_squares(mut acc: Self::Acc, x: &[f32]) -> Self::Acc {
        for (a, &v) in acc.iter_mut().zip(&x[..SUMSQ_LANES]) {
            let d = f64::from(v);
            *a += d * d;
        }
        acc
    }
    #[inline(always)]
    fn acc_lanes(acc: Self::Acc) -> [f64; SUMSQ_LANES] {
        acc
    }
    #[inline(always)]
    fn acc_load(l: &[f64]) -> Self::Acc {
        let mut acc = [0.0; SUMSQ_LANES];
        acc.copy_from_slice(&l[..SUMSQ_LANES]);
        acc
    }
    #[inline(always)]
    fn acc_add(mut a: Self::Acc, b: Self::Acc) -> Self::Acc {
        for (x, y) in a.iter_mut().zip(b) {
            *x += y;
        }
        a
    }
}

impl Vu32 for u32 {
    const LANES: usize = 1;

    #[inline(always)]
    fn splat(x: u32) -> Self {
        x
    }
    #[inline(always)]
    fn index(base: u32) -> Self {
        base
    }
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        self.wrapping_add(o)
    }
    #[inline(always)]
    fn mul_lo(self, o: Self) -> Self {
        self.wrapping_mul(o)
    }
    #[inline(always)]
    fn and(self, o: Self) -> Self {
        self & o
    }
    #[inline(always)]
    fn or(self, o: Self) -> Self {
        self | o
    }
    #[inline(always)]
    fn xor(self, o: Self) -> Self {
        self ^ o
    }
    #[inline(always)]
    fn shr<const N: i32>(self) -> Self {
        self >> N
    }
    #[inline(always)]
    fn shl<const N: i32>(self) -> Self {
        self << N
    }
    #[inline(always)]
    fn select_lt(self, o: Self, a: Self, b: Self) -> Self {
        if self < o {
            a
        } else {
            b
        }
    }
    #[inline(always)]
    fn max(self, o: Self) -> Self {
        Ord::max(self, o)
    }
    #[inline(always)]
    fn max_lane(self) -> u32 {
        self
    }
    #[inline(always)]
    fn store_u16(self, s: &mut [u16]) {
        s[0] = self as u16;
    }
    #[inline(always)]
    fn store_u8(self, s: &mut [u8]) {
        s[0] = self as u8;
    }
    #[inline(always)]
    fn load_u8(s: &[u8]) -> u32 {
        u32::from(s[0])
    }
}
