//! The AVX2 tier: `core::arch` intrinsics on 256-bit registers, eight f32 lanes.
//!
//! The AVX subset of instructions does the arithmetic (packed add/sub/mul/div/sqrt/compare, the
//! f32 -> f64 conversion), AVX2's integer operations the bf16 conversions and F16C's
//! `vcvtph2ps` / `vcvtps2ph` the fp16 ones (exact IEEE conversions, round to nearest even,
//! subnormals kept whatever MXCSR says, NaN quieted with sign and top payload: bit for bit the
//! reference in `half.rs`). The tier is gated on AVX2 and F16C (every AVX2 CPU has F16C) so
//! that one detection covers the machines it is tuned for. No FMA is ever enabled: a fused multiply-add rounds once where the other
//! tiers round twice and would break bit-identity.
//!
//! The vector type [`Avx2`] is private to this module and only ever used inside the
//! `#[target_feature(enable = "avx2")]` functions that `table!` stamps out, which are reachable
//! only through the table [`table`] returns after run-time detection. That is the argument
//! behind every `unsafe` block here.

use std::arch::x86_64::*;

use super::{Kernels, Tier, Vf32, Vu32, SUMSQ_LANES};

#[derive(Clone, Copy)]
struct Avx2(__m256);

impl Vf32 for Avx2 {
    const LANES: usize = 8;
    type Acc = [__m256d; 4];
    type U = Avx2U;

    #[inline(always)]
    fn to_bits(self) -> Avx2U {
        // SAFETY: AVX2 was detected (see `splat`); a cast compiles to nothing.
        Avx2U(unsafe { _mm256_castps_si256(self.0) })
    }
    #[inline(always)]
    fn from_bits(u: Avx2U) -> Self {
        // SAFETY: AVX2 was detected (see `splat`); a cast compiles to nothing.
        Avx2(unsafe { _mm256_castsi256_ps(u.0) })
    }

    #[inline(always)]
    fn splat(x: f32) -> Self {
        // SAFETY: `Avx2` values only exist inside the `#[target_feature(enable = "avx2")]`
        // kernels of this module's table, which run only after AVX2 was detected.
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
    fn abs(self) -> Self {
        // `andnot(-0.0, x)` clears the sign bit only: exactly `f32::abs` per lane.
        // SAFETY: AVX2 was detected (see `splat`).
        Avx2(unsafe { _mm256_andnot_ps(_mm256_set1_ps(-0.0), self.0) })
    }
    #[inline(always)]
    fn select_gt(self, o: Self, a: Self, b: Self) -> Self {
        // `_CMP_GT_OQ` is the ordered, quiet `>` (all-ones lanes where `self > o`, zero where
        // either is NaN), and `blendv` takes `a` where the mask lane is set: the scalar
        // `if self > o { a } else { b }` per lane.
        // SAFETY: AVX2 was detected (see `splat`).
        Avx2(unsafe { _mm256_blendv_ps(b.0, a.0, _mm256_cmp_ps::<_CMP_GT_OQ>(self.0, o.0)) })
    }
    #[inline(always)]
    fn mul_if(self, o: Self, keep: Avx2U) -> Self {
        // `andnot` clears the lanes whose `keep` compares equal to 0 (all ones there).
        // SAFETY: AVX2 was detected (see `splat`).
        Avx2(unsafe {
            let zero = _mm256_cmpeq_epi32(keep.0, _mm256_setzero_si256());
            _mm256_andnot_ps(_mm256_castsi256_ps(zero), _mm256_mul_ps(self.0, o.0))
        })
    }

    #[inline(always)]
    fn load_bf16(s: &[u16]) -> Self {
        let s = &s[..8];
        // SAFETY: `s` has exactly 8 readable u16, the 16 bytes of the unaligned load
        // (bounds-checked slice); AVX2 was detected (see `splat`).
        unsafe {
            let h = _mm256_cvtepu16_epi32(_mm_loadu_si128(s.as_ptr().cast()));
            Avx2(_mm256_castsi256_ps(_mm256_slli_epi32::<16>(h)))
        }
    }
    #[inline(always)]
    fn load_f16(s: &[u16]) -> Self {
        let s = &s[..8];
        // SAFETY: `s` has exactly 8 readable u16 (bounds-checked slice); F16C was detected
        // with AVX2 (see `splat` and `table`).
        unsafe { Avx2(_mm256_cvtph_ps(_mm_loadu_si128(s.as_ptr().cast()))) }
    }
    #[inline(always)]
    fn store_bf16(self, s: &mut [u16]) {
        let s = &mut s[..8];
        // `vcvtneps2bf16` flushes subnormal inputs to zero, so the rounding of `f32_to_bf16`
        // is done with integer operations: add 0x7fff plus the lowest kept bit, shift, and
        // take `bits >> 16 | 0x40` where the input is NaN.
        // SAFETY: `s` has exactly 8 writable u16, the 16 bytes of the unaligned store
        // (bounds-checked slice); AVX2 (and the SSE4.1 pack it includes) was detected (see
        // `splat`).
        unsafe {
            let b = _mm256_castps_si256(self.0);
            let lsb = _mm256_and_si256(_mm256_srli_epi32::<16>(b), _mm256_set1_epi32(1));
            let bias = _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff));
            let rounded = _mm256_srli_epi32::<16>(_mm256_add_epi32(b, bias));
            let quiet = _mm256_or_si256(_mm256_srli_epi32::<16>(b), _mm256_set1_epi32(0x40));
            let abs = _mm256_and_si256(b, _mm256_set1_epi32(0x7fff_ffff));
            let nan = _mm256_cmpgt_epi32(abs, _mm256_set1_epi32(0x7f80_0000));
            let r = _mm256_blendv_epi8(rounded, quiet, nan);
            // Every lane is at most 0xffff, so the unsigned saturating pack keeps it.
            let packed =
                _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256::<1>(r));
            _mm_storeu_si128(s.as_mut_ptr().cast(), packed)
        }
    }
    #[inline(always)]
    fn store_f16(self, s: &mut [u16]) {
        let s = &mut s[..8];
        // SAFETY: `s` has exactly 8 writable u16 (bounds-checked slice); F16C was detected
        // with AVX2 (see `load_f16`). The immediate selects round to nearest even itself,
        // whatever MXCSR's rounding field says.
        unsafe {
            let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(self.0);
            _mm_storeu_si128(s.as_mut_ptr().cast(), h)
        }
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
    #[inline(always)]
    fn acc_load(l: &[f64]) -> Self::Acc {
        let l = &l[..SUMSQ_LANES];
        // SAFETY: `l` has exactly 16 readable f64 (bounds-checked slice), so the four 4-lane
        // unaligned loads at offsets 0, 4, 8, 12 stay inside it; AVX2 was detected (see
        // `splat`).
        unsafe {
            let p = l.as_ptr();
            [
                _mm256_loadu_pd(p),
                _mm256_loadu_pd(p.add(4)),
                _mm256_loadu_pd(p.add(8)),
                _mm256_loadu_pd(p.add(12)),
            ]
        }
    }
    #[inline(always)]
    fn acc_add(a: Self::Acc, b: Self::Acc) -> Self::Acc {
        // SAFETY: register arithmetic only; AVX2 was detected (see `splat`).
        unsafe {
            [
                _mm256_add_pd(a[0], b[0]),
                _mm256_add_pd(a[1], b[1]),
                _mm256_add_pd(a[2], b[2]),
                _mm256_add_pd(a[3], b[3]),
            ]
        }
    }
}

/// Eight u32 lanes in a 256-bit register; like [`Avx2`], only ever used inside the module's
/// `#[target_feature(enable = "avx2")]` kernels, which run only after AVX2 was detected: the
/// argument behind every `unsafe` block of its implementation.
#[derive(Clone, Copy)]
struct Avx2U(__m256i);

impl Vu32 for Avx2U {
    const LANES: usize = 8;

    #[inline(always)]
    fn splat(x: u32) -> Self {
        // SAFETY: AVX2 was detected (see `Avx2U`).
        Avx2U(unsafe { _mm256_set1_epi32(x as i32) })
    }
    #[inline(always)]
    fn index(base: u32) -> Self {
        // SAFETY: AVX2 was detected (see `Avx2U`).
        Avx2U(unsafe {
            _mm256_add_epi32(
                _mm256_set1_epi32(base as i32),
                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
            )
        })
    }
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        // SAFETY: AVX2 was detected (see `Avx2U`).
        Avx2U(unsafe { _mm256_add_epi32(self.0, o.0) })
    }
    #[inline(always)]
    fn mul_lo(self, o: Self) -> Self {
        // SAFETY: AVX2 was detected (see `Avx2U`).
        Avx2U(unsafe { _mm256_mullo_epi32(self.0, o.0) })
    }
    #[inline(always)]
    fn and(self, o: Self) -> Self {
        // SAFETY: AVX2 was detected (see `Avx2U`).
        Avx2U(unsafe { _mm256_and_si256(self.0, o.0) })
    }
    #[inline(always)]
    fn or(self, o: Self) -> Self {
        // SAFETY: AVX2 was detected (see `Avx2U`).
        Avx2U(unsafe { _mm256_or_si256(self.0, o.0) })
    }
    #[inline(always)]
    fn xor(self, o: Self) -> Self {
        // SAFETY: AVX2 was detected (see `Avx2U`).
        Avx2U(unsafe { _mm256_xor_si256(self.0, o.0) })
    }
    #[inline(always)]
    fn shr<const N: i32>(self) -> Self {
        // SAFETY: AVX2 was detected (see `Avx2U`).
        Avx2U(unsafe { _mm256_srli_epi32::<N>(self.0) })
    }
    #[inline(always)]
    fn shl<const N: i32>(self) -> Self {
        // SAFETY: AVX2 was detected (see `Avx2U`).
        Avx2U(unsafe { _mm256_slli_epi32::<N>(self.0) })
    }
    #[inline(always)]
    fn select_lt(self, o: Self, a: Self, b: Self) -> Self {
        // `self >= o` exactly where `max(self, o) == self` (unsigned): those lanes take `b`.
        // SAFETY: AVX2 was detected (see `Avx2U`).
        Avx2U(unsafe {
            let ge = _mm256_cmpeq_epi32(_mm256_max_epu32(self.0, o.0), self.0);
            _mm256_blendv_epi8(a.0, b.0, ge)
        })
    }
    #[inline(always)]
    fn max(self, o: Self) -> Self {
        // SAFETY: AVX2 was detected (see `Avx2U`).
        Avx2U(unsafe { _mm256_max_epu32(self.0, o.0) })
    }
    #[inline(always)]
    fn max_lane(self) -> u32 {
        // Halves folded onto each other: 8 lanes to 4, 2, 1.
        // SAFETY: AVX2 was detected (see `Avx2U`).
        unsafe {
            let m = _mm_max_epu32(
                _mm256_castsi256_si128(self.0),
                _mm256_extracti128_si256::<1>(self.0),
            );
            let m = _mm_max_epu32(m, _mm_shuffle_epi32::<0b00_00_11_10>(m));
            let m = _mm_max_epu32(m, _mm_shuffle_epi32::<0b00_00_00_01>(m));
            _mm_cvtsi128_si32(m) as u32
        }
    }
    #[inline(always)]
    fn store_u16(self, s: &mut [u16]) {
        let s = &mut s[..8];
        // The low halves, so that the unsigned saturating pack keeps every lane.
        // SAFETY: `s` has exactly 8 writable u16, the 16 bytes of the unaligned store
        // (bounds-checked slice); AVX2 was detected (see `Avx2U`).
        unsafe {
            let r = _mm256_and_si256(self.0, _mm256_set1_epi32(0xffff));
            let packed =
                _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256::<1>(r));
            _mm_storeu_si128(s.as_mut_ptr().cast(), packed)
        }
    }
    #[inline(always)]
    fn store_u8(self, s: &mut [u8]) {
        let s = &mut s[..8];
        // The low bytes, so that the two unsigned saturating packs keep every lane.
        // SAFETY: `s` has exactly 8 writable u8, the 8 bytes of the unaligned 64-bit store
        // (bounds-checked slice); AVX2 was detected (see `Avx2U`).
        unsafe {
            let r = _mm256_and_si256(self.0, _mm256_set1_epi32(0xff));
            let words =
                _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256::<1>(r));
            _mm_storel_epi64(s.as_mut_ptr().cast(), _mm_packus_epi16(words, words))
        }
    }
    #[inline(always)]
    fn load_u8(s: &[u8]) -> Self {
        let s = &s[..8];
        // SAFETY: `s` has exactly 8 readable u8, the 8 bytes of the unaligned 64-bit load
        // (bounds-checked slice); AVX2 was detected (see `Avx2U`).
        Avx2U(unsafe { _mm256_cvtepu8_epi32(_mm_loadl_epi64(s.as_ptr().cast())) })
    }
}

super::table::table!(Tier::Avx2, Avx2, "avx2,f16c");

/// The AVX2 tier's kernels, if this CPU has AVX2 and F16C (detected here, once per call: a
/// cached load in `std`; the dispatch calls it once per process).
pub(super) fn table() -> Option<&'static Kernels> {
    (std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("f16c"))
        .then_some(&TABLE)
}
