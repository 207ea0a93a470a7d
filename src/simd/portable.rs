//! The portable tier, built on `wide`: `f32x8` is two SSE2 registers on x86_64 and two NEON
//! registers on aarch64. This file must stay free of architecture-specific code so that every
//! target gets it. `wide`'s `max` / `min` have their own NaN rules, so the compare-select
//! semantics of [`Vf32`] are built from `simd_gt` / `simd_lt` and `select`.

use wide::{f32x8, f64x4};

use super::half::{bf16_to_f32, f16_to_f32, f32_to_bf16, f32_to_f16};
use super::{Kernels, Tier, Vf32, Vu32, SUMSQ_LANES};
use crate::kernels;

static TABLE: Kernels = Kernels {
    tier: Tier::Portable,
    fused: kernels::fused::<Portable>,
    fused_bf16: kernels::fused_bf16::<Portable>,
    fused_q8: kernels::fused_q8::<Portable>,
    fused_mixed: kernels::fused_mixed_io::<Portable>,
    half_finite: kernels::half_all_finite,
    sumsq_partials: kernels::sumsq_partials::<Portable>,
    sumsq_cols: kernels::sumsq_cols::<Portable>,
    direction_sums: kernels::direction_sums::<Portable>,
    square_sums: kernels::square_sums::<Portable>,
    pre_sums: kernels::pre_sums::<Portable>,
    elementwise: kernels::elementwise::<Portable>,
    widen: kernels::widen::<Portable>,
    narrow: kernels::narrow::<Portable>,
    unscale: kernels::unscale::<Portable>,
    encode_q8: kernels::encode_q8,
    decode_q8: kernels::decode_q8::<Portable>,
    encode_bf16_sr: kernels::encode_bf16_sr,
    encode_bf16_sr2: kernels::encode_bf16_sr2,
    encode_q8_sr2: kernels::encode_q8_sr2::<Portable>,
};

/// The portable tier's kernels (every CPU of every target runs them).
pub(super) fn table() -> &'static Kernels {
    &TABLE
}

/// Eight f32 lanes on `wide`.
#[derive(Clone, Copy)]
struct Portable(f32x8);

impl Vf32 for Portable {
    const LANES: usize = 8;
    type Acc = [f64x4; 4];
    type U = PortableU;

    #[inline(always)]
    fn to_bits(self) -> PortableU {
        PortableU(self.0.to_array().map(f32::to_bits))
    }
    #[inline(always)]
    fn from_bits(u: PortableU) -> Self {
        Portable(f32x8::new(u.0.map(f32::from_bits)))
    }

    #[inline(always)]
    fn splat(x: f32) -> Self {
        Portable(f32x8::splat(x))
    }
    #[inline(always)]
    fn load(s: &[f32]) -> Self {
        let a: [f32; 8] = s[..8].try_into().expect("8 lanes");
        Portable(f32x8::new(a))
    }
    #[inline(always)]
    fn store(self, s: &mut [f32]) {
        s[..8].copy_from_slice(&self.0.to_array());
    }
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        Portable(self.0 + o.0)
    }
    #[inline(always)]
    fn sub(self, o: Self) -> Self {
        Portable(self.0 - o.0)
    }
    #[inline(always)]
    fn mul(self, o: Self) -> Self {
        Portable(self.0 * o.0)
    }
    #[inline(always)]
    fn div(self, o: Self) -> Self {
        Portable(self.0 / o.0)
    }
    #[inline(always)]
    fn sqrt(self) -> Self {
        Portable(self.0.sqrt())
    }
    #[inline(always)]
    fn max(self, o: Self) -> Self {
        Portable(self.0.simd_gt(o.0).select(self.0, o.0))
    }
    #[inline(always)]
    fn min(self, o: Self) -> Self {
        Portable(self.0.simd_lt(o.0).select(self.0, o.0))
    }
    #[inline(always)]
    fn abs(self) -> Self {
        // `wide` clears the sign bit (an and with `!-0.0`), as the other tiers do.
        Portable(self.0.abs())
    }
    #[inline(always)]
    fn select_gt(self, o: Self, a: Self, b: Self) -> Self {
        // `simd_gt` is the ordered compare (false lanes for NaN), as `max` uses it.
        Portable(self.0.simd_gt(o.0).select(a.0, b.0))
    }
    #[inline(always)]
    fn mul_if(self, o: Self, keep: PortableU) -> Self {
        let product = (self.0 * o.0).to_array();
        Portable(f32x8::new(std::array::from_fn(|j| {
            if keep.0[j] != 0 {
                product[j]
            } else {
                0.0
            }
        })))
    }

    // The 16-bit conversions lane by lane with the reference functions: integer operations
    // on eight lanes that the compiler vectorizes for the target, with no
    // architecture-specific code here.
    #[inline(always)]
    fn load_bf16(s: &[u16]) -> Self {
        let s: &[u16; 8] = s[..8].try_into().expect("8 lanes");
        Portable(f32x8::new(s.map(bf16_to_f32)))
    }
    #[inline(always)]
    fn load_f16(s: &[u16]) -> Self {
        let s: &[u16; 8] = s[..8].try_into().expect("8 lanes");
        Portable(f32x8::new(s.map(f16_to_f32)))
    }
    #[inline(always)]
    fn store_bf16(self, s: &mut [u16]) {
        s[..8].copy_from_slice(&self.0.to_array().map(f32_to_bf16));
    }
    #[inline(always)]
    fn store_f16(self, s: &mut [u16]) {
        s[..8].copy_from_slice(&self.0.to_array().map(f32_to_f16));
    }

    #[inline(always)]
    fn acc_zero() -> Self::Acc {
        [f64x4::ZERO; 4]
    }
    #[inline(always)]
    fn acc_add_squares(mut acc: Self::Acc, x: &[f32]) -> Self::Acc {
        let x = &x[..SUMSQ_LANES];
        for (k, a) in acc.iter_mut().enumerate() {
            let q = &x[4 * k..4 * k + 4];
            let d = f64x4::new([
                f64::from(q[0]),
                f64::from(q[1]),
                f64::from(q[2]),
                f64::from(q[3]),
            ]);
            *a += d * d;
        }
        acc
    }
    #[inline(always)]
    fn acc_lanes(acc: Self::Acc) -> [f64; SUMSQ_LANES] {
        let mut out = [0.0; SUMSQ_LANES];
        for (k, a) in acc.iter().enumerate() {
            out[4 * k..4 * k + 4].copy_from_slice(&a.to_array());
        }
        out
    }
    #[inline(always)]
    fn acc_load(l: &[f64]) -> Self::Acc {
        let l = &l[..SUMSQ_LANES];
        [0, 4, 8, 12].map(|k| f64x4::new([l[k], l[k + 1], l[k + 2], l[k + 3]]))
    }
    #[inline(always)]
    fn acc_add(a: Self::Acc, b: Self::Acc) -> Self::Acc {
        [0, 1, 2, 3].map(|k| a[k] + b[k])
    }
}

/// Eight u32 lanes as an array: lane by lane operations that the compiler vectorizes for the
/// target, with no architecture-specific code here.
#[derive(Clone, Copy)]
struct PortableU([u32; 8]);

impl PortableU {
    #[inline(always)]
    fn zip(self, o: Self, f: impl Fn(u32, u32) -> u32) -> Self {
        PortableU(std::array::from_fn(|j| f(self.0[j], o.0[j])))
    }
}

impl Vu32 for PortableU {
    const LANES: usize = 8;

    #[inline(always)]
    fn splat(x: u32) -> Self {
        PortableU([x; 8])
    }
    #[inline(always)]
    fn index(base: u32) -> Self {
        PortableU(std::array::from_fn(|j| base.wrapping_add(j as u32)))
    }
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        self.zip(o, u32::wrapping_add)
    }
    #[inline(always)]
    fn mul_lo(self, o: Self) -> Self {
        self.zip(o, u32::wrapping_mul)
    }
    #[inline(always)]
    fn and(self, o: Self) -> Self {
        self.zip(o, |a, b| a & b)
    }
    #[inline(always)]
    fn or(self, o: Self) -> Self {
        self.zip(o, |a, b| a | b)
    }
    #[inline(always)]
    fn xor(self, o: Self) -> Self {
        self.zip(o, |a, b| a ^ b)
    }
    #[inline(always)]
    fn shr<const N: i32>(self) -> Self {
        PortableU(self.0.map(|a| a >> N))
    }
    #[inline(always)]
    fn shl<const N: i32>(self) -> Self {
        PortableU(self.0.map(|a| a << N))
    }
    #[inline(always)]
    fn select_lt(self, o: Self, a: Self, b: Self) -> Self {
        PortableU(std::array::from_fn(|j| {
            if self.0[j] < o.0[j] {
                a.0[j]
            } else {
                b.0[j]
            }
        }))
    }
    #[inline(always)]
    fn max(self, o: Self) -> Self {
        self.zip(o, Ord::max)
    }
    #[inline(always)]
    fn max_lane(self) -> u32 {
        self.0.into_iter().fold(0, Ord::max)
    }
    #[inline(always)]
    fn store_u16(self, s: &mut [u16]) {
        s[..8].copy_from_slice(&self.0.map(|a| a as u16));
    }
    #[inline(always)]
    fn store_u8(self, s: &mut [u8]) {
        s[..8].copy_from_slice(&self.0.map(|a| a as u8));
    }
    #[inline(always)]
    fn load_u8(s: &[u8]) -> Self {
        let s: &[u8; 8] = s[..8].try_into().unwrap();
        PortableU(s.map(u32::from))
    }
}
