//! The AVX-512 tier: `core::arch` intrinsics on 512-bit registers, sixteen f32 lanes.
//!
//! Only AVX-512F is needed (packed add/sub/mul/div/sqrt/compare-select, the f32 -> f64
//! conversion, the integer operations of the bf16 conversions, and `vcvtph2ps` /
//! `vcvtps2ph` for fp16, exact and bit for bit the reference in `half.rs`). AVX512_BF16's
//! `vcvtneps2bf16` is not used: it flushes subnormal inputs to zero. The kernels' heads and tails run on the scalar tier, as on every vector tier.
//! No FMA is ever used: LLVM counts FMA as part of AVX-512F, but Rust never contracts a
//! multiplication and an addition into one, so `a*b + c` still rounds twice, as on the other
//! tiers (and `tests/tiers.rs` checks every bit).
//!
//! The vector type [`Avx512`] is private to this module and only ever used inside the
//! `#[target_feature(enable = "avx512f")]` functions that `table!` stamps out, which are
//! reachable only through the table [`table`] returns after run-time detection. That is the
//! argument behind every `unsafe` block here.

use std::arch::x86_64::*;

use super::{Kernels, Tier, Vf32, Vu32, SUMSQ_LANES};

#[derive(Clone, Copy)]
struct Avx512(__m512);

impl Vf32 for Avx512 {
    const LANES: usize = 16;
    type Acc = [__m512d; 2];
    type U = Avx512U;

    #[inline(always)]
    fn to_bits(self) -> Avx512U {
        // SAFETY: AVX-512F was detected (see `splat`); a cast compiles to nothing.
        Avx512U(unsafe { _mm512_castps_si512(self.0) })
    }
    #[inline(always)]
    fn from_bits(u: Avx512U) -> Self {
        // SAFETY: AVX-512F was detected (see `splat`); a cast compiles to nothing.
        Avx512(unsafe { _mm512_castsi512_ps(u.0) })
    }

    #[inline(always)]
    fn splat(x: f32) -> Self {
        // SAFETY: `Avx512` values only exist inside the `#[target_feature(enable = "avx512f")]`
        // kernels of this module's table, which run only after AVX-512F was detected.
        Avx512(unsafe { _mm512_set1_ps(x) })
    }
    #[inline(always)]
    fn load(s: &[f32]) -> Self {
        let s = &s[..16];
        // SAFETY: `s` has exactly 16 readable f32 (the slice above is bounds-checked);
        // `loadu` has no alignment requirement; AVX-512F was detected (see `splat`).
        Avx512(unsafe { _mm512_loadu_ps(s.as_ptr()) })
    }
    #[inline(always)]
    fn store(self, s: &mut [f32]) {
        let s = &mut s[..16];
        // SAFETY: `s` has exactly 16 writable f32 (bounds-checked slice), `storeu` has no
        // alignment requirement; AVX-512F was detected (see `splat`).
        unsafe { _mm512_storeu_ps(s.as_mut_ptr(), self.0) }
    }
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        // SAFETY: AVX-512F was detected (see `splat`).
        Avx512(unsafe { _mm512_add_ps(self.0, o.0) })
    }
    #[inline(always)]
    fn sub(self, o: Self) -> Self {
        // SAFETY: AVX-512F was detected (see `splat`).
        Avx512(unsafe { _mm512_sub_ps(self.0, o.0) })
    }
    #[inline(always)]
    fn mul(self, o: Self) -> Self {
        // SAFETY: AVX-512F was detected (see `splat`).
        Avx512(unsafe { _mm512_mul_ps(self.0, o.0) })
    }
    #[inline(always)]
    fn div(self, o: Self) -> Self {
        // SAFETY: AVX-512F was detected (see `splat`).
        Avx512(unsafe { _mm512_div_ps(self.0, o.0) })
    }
    #[inline(always)]
    fn sqrt(self) -> Self {
        // SAFETY: AVX-512F was detected (see `splat`).
        Avx512(unsafe { _mm512_sqrt_ps(self.0) })
    }
    #[inline(always)]
    fn max(self, o: Self) -> Self {
        // `vmaxps a, b` returns `a > b ? a : b` (the second operand when either is NaN),
        // exactly the contract of `Vf32::max`.
        // SAFETY: AVX-512F was detected (see `splat`).
        Avx512(unsafe { _mm512_max_ps(self.0, o.0) })
    }
    #[inline(always)]
    fn min(self, o: Self) -> Self {
        // `vminps a, b` returns `a < b ? a : b`, exactly the contract of `Vf32::min`.
        // SAFETY: AVX-512F was detected (see `splat`).
        Avx512(unsafe { _mm512_min_ps(self.0, o.0) })
    }
    #[inline(always)]
    fn abs(self) -> Self {
        // `_mm512_abs_ps` is an and with `!-0.0` (AVX-512F): the sign bit cleared, as
        // `f32::abs`.
        // SAFETY: AVX-512F was detected (see `splat`).
        Avx512(unsafe { _mm512_abs_ps(self.0) })
    }
    #[inline(always)]
    fn select_gt(self, o: Self, a: Self, b: Self) -> Self {
        // `_CMP_GT_OQ` is the ordered, quiet `>` (mask bits clear where either is NaN);
        // `mask_blend` takes `a` where the bit is set: `if self > o { a } else { b }` per lane.
        // SAFETY: AVX-512F was detected (see `splat`).
        Avx512(unsafe {
            _mm512_mask_blend_ps(_mm512_cmp_ps_mask::<_CMP_GT_OQ>(self.0, o.0), b.0, a.0)
        })
    }
    #[inline(always)]
    fn mul_if(self, o: Self, keep: Avx512U) -> Self {
        // `test` sets the mask bits of the lanes where `keep` is not 0; the zero-masked
        // multiplication writes +0 to the others.
        // SAFETY: AVX-512F was detected (see `splat`).
        Avx512(unsafe {
            let k = _mm512_test_epi32_mask(keep.0, keep.0);
            _mm512_maskz_mul_ps(k, self.0, o.0)
        })
    }

    #[inline(always)]
    fn load_bf16(s: &[u16]) -> Self {
        let s = &s[..16];
        // SAFETY: `s` has exactly 16 readable u16, the 32 bytes of the unaligned load
        // (bounds-checked slice); AVX-512F was detected (see `splat`).
        unsafe {
            let h = _mm512_cvtepu16_epi32(_mm256_loadu_si256(s.as_ptr().cast()));
            Avx512(_mm512_castsi512_ps(_mm512_slli_epi32::<16>(h)))
        }
    }
    #[inline(always)]
    fn load_f16(s: &[u16]) -> Self {
        let s = &s[..16];
        // SAFETY: `s` has exactly 16 readable u16 (bounds-checked slice); AVX-512F was
        // detected (see `splat`).
        unsafe { Avx512(_mm512_cvtph_ps(_mm256_loadu_si256(s.as_ptr().cast()))) }
    }
    #[inline(always)]
    fn store_bf16(self, s: &mut [u16]) {
        let s = &mut s[..16];
        // Integer rounding as in `f32_to_bf16` (see the module comment for why not
        // `vcvtneps2bf16`).
        // SAFETY: `s` has exactly 16 writable u16, the 32 bytes of the unaligned store
        // (bounds-checked slice); AVX-512F was detected (see `splat`).
        unsafe {
            let b = _mm512_castps_si512(self.0);
            let lsb = _mm512_and_si512(_mm512_srli_epi32::<16>(b), _mm512_set1_epi32(1));
            let bias = _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff));
            let rounded = _mm512_srli_epi32::<16>(_mm512_add_epi32(b, bias));
            let quiet = _mm512_or_si512(_mm512_srli_epi32::<16>(b), _mm512_set1_epi32(0x40));
            let abs = _mm512_and_si512(b, _mm512_set1_epi32(0x7fff_ffff));
            let nan = _mm512_cmpgt_epu32_mask(abs, _mm512_set1_epi32(0x7f80_0000));
            let r = _mm512_mask_blend_epi32(nan, rounded, quiet);
            // Every lane is at most 0xffff, so the truncating `vpmovdw` keeps it.
            _mm256_storeu_si256(s.as_mut_ptr().cast(), _mm512_cvtepi32_epi16(r))
        }
    }
    #[inline(always)]
    fn store_f16(self, s: &mut [u16]) {
        let s = &mut s[..16];
        // SAFETY: `s` has exactly 16 writable u16 (bounds-checked slice); AVX-512F was
        // detected (see `splat`). The immediate selects round to nearest even itself.
        unsafe {
            let h = _mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(self.0);
            _mm256_storeu_si256(s.as_mut_ptr().cast(), h)
        }
    }

    #[inline(always)]
    fn acc_zero() -> Self::Acc {
        // SAFETY: AVX-512F was detected (see `splat`).
        unsafe { [_mm512_setzero_pd(); 2] }
    }
    #[inline(always)]
    fn acc_add_squares(acc: Self::Acc, x: &[f32]) -> Self::Acc {
        let x = &x[..SUMSQ_LANES];
        // SAFETY: `x` has exactly 16 readable f32 (bounds-checked slice), so the two 8-lane
        // unaligned loads at offsets 0 and 8 stay inside it; AVX-512F was detected (see
        // `splat`), and it includes the AVX load.
        unsafe {
            let p = x.as_ptr();
            let mut out = acc;
            for (k, a) in out.iter_mut().enumerate() {
                let d = _mm512_cvtps_pd(_mm256_loadu_ps(p.add(8 * k)));
                *a = _mm512_add_pd(*a, _mm512_mul_pd(d, d));
            }
            out
        }
    }
    #[inline(always)]
    fn acc_lanes(acc: Self::Acc) -> [f64; SUMSQ_LANES] {
        let mut out = [0.0; SUMSQ_LANES];
        for (k, a) in acc.iter().enumerate() {
            // SAFETY: `out[8k..8k+8]` is 8 writable f64 (bounds-checked slice); AVX-512F was
            // detected (see `splat`).
            unsafe { _mm512_storeu_pd(out[8 * k..8 * k + 8].as_mut_ptr(), *a) }
        }
        out
    }
    #[inline(always)]
    fn acc_load(l: &[f64]) -> Self::Acc {
        let l = &l[..SUMSQ_LANES];
        // SAFETY: `l` has exactly 16 readable f64 (bounds-checked slice), so the two 8-lane
        // unaligned loads at offsets 0 and 8 stay inside it; AVX-512F was detected (see
        // `splat`).
        unsafe {
            let p = l.as_ptr();
            [_mm512_loadu_pd(p), _mm512_loadu_pd(p.add(8))]
        }
    }
    #[inline(always)]
    fn acc_add(a: Self::Acc, b: Self::Acc) -> Self::Acc {
        // SAFETY: register arithmetic only; AVX-512F was detected (see `splat`).
        unsafe { [_mm512_add_pd(a[0], b[0]), _mm512_add_pd(a[1], b[1])] }
    }
}

/// Sixteen u32 lanes in a 512-bit register; like [`Avx512`], only ever used inside the
/// module's `#[target_feature(enable = "avx512f")]` kernels, which run only after AVX-512F was
/// detected: the argument behind every `unsafe` block of its implementation.
#[derive(Clone, Copy)]
struct Avx512U(__m512i);

impl Vu32 for Avx512U {
    const LANES: usize = 16;

    #[inline(always)]
    fn splat(x: u32) -> Self {
        // SAFETY: AVX-512F was detected (see `Avx512U`).
        Avx512U(unsafe { _mm512_set1_epi32(x as i32) })
    }
    #[inline(always)]
    fn index(base: u32) -> Self {
        // SAFETY: AVX-512F was detected (see `Avx512U`).
        Avx512U(unsafe {
            _mm512_add_epi32(
                _mm512_set1_epi32(base as i32),
                _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
            )
        })
    }
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        // SAFETY: AVX-512F was detected (see `Avx512U`).
        Avx512U(unsafe { _mm512_add_epi32(self.0, o.0) })
    }
    #[inline(always)]
    fn mul_lo(self, o: Self) -> Self {
        // SAFETY: AVX-512F was detected (see `Avx512U`).
        Avx512U(unsafe { _mm512_mullo_epi32(self.0, o.0) })
    }
    #[inline(always)]
    fn and(self, o: Self) -> Self {
        // SAFETY: AVX-512F was detected (see `Avx512U`).
        Avx512U(unsafe { _mm512_and_si512(self.0, o.0) })
    }
    #[inline(always)]
    fn or(self, o: Self) -> Self {
        // SAFETY: AVX-512F was detected (see `Avx512U`).
        Avx512U(unsafe { _mm512_or_si512(self.0, o.0) })
    }
    #[inline(always)]
    fn xor(self, o: Self) -> Self {
        // SAFETY: AVX-512F was detected (see `Avx512U`).
        Avx512U(unsafe { _mm512_xor_si512(self.0, o.0) })
    }
    #[inline(always)]
    fn shr<const N: i32>(self) -> Self {
        // SAFETY: AVX-512F was detected (see `Avx512U`).
        Avx512U(unsafe { _mm512_srl_epi32(self.0, _mm_cvtsi32_si128(N)) })
    }
    #[inline(always)]
    fn shl<const N: i32>(self) -> Self {
        // SAFETY: AVX-512F was detected (see `Avx512U`).
        Avx512U(unsafe { _mm512_sll_epi32(self.0, _mm_cvtsi32_si128(N)) })
    }
    #[inline(always)]
    fn select_lt(self, o: Self, a: Self, b: Self) -> Self {
        // The blend takes its third operand where the mask bit is set.
        // SAFETY: AVX-512F was detected (see `Avx512U`).
        Avx512U(unsafe { _mm512_mask_blend_epi32(_mm512_cmplt_epu32_mask(self.0, o.0), b.0, a.0) })
    }
    #[inline(always)]
    fn max(self, o: Self) -> Self {
        // SAFETY: AVX-512F was detected (see `Avx512U`).
        Avx512U(unsafe { _mm512_max_epu32(self.0, o.0) })
    }
    #[inline(always)]
    fn max_lane(self) -> u32 {
        // SAFETY: AVX-512F was detected (see `Avx512U`).
        unsafe { _mm512_reduce_max_epu32(self.0) }
    }
    #[inline(always)]
    fn store_u16(self, s: &mut [u16]) {
        let s = &mut s[..16];
        // `vpmovdw` truncates each lane to its low 16 bits.
        // SAFETY: `s` has exactly 16 writable u16, the 32 bytes of the unaligned store
        // (bounds-checked slice); AVX-512F was detected (see `Avx512U`).
        unsafe { _mm256_storeu_si256(s.as_mut_ptr().cast(), _mm512_cvtepi32_epi16(self.0)) }
    }
    #[inline(always)]
    fn store_u8(self, s: &mut [u8]) {
        let s = &mut s[..16];
        // `vpmovdb` truncates each lane to its low 8 bits.
        // SAFETY: `s` has exactly 16 writable u8, the 16 bytes of the unaligned store
        // (bounds-checked slice); AVX-512F was detected (see `Avx512U`).
        unsafe { _mm_storeu_si128(s.as_mut_ptr().cast(), _mm512_cvtepi32_epi8(self.0)) }
    }
    #[inline(always)]
    fn load_u8(s: &[u8]) -> Self {
        let s = &s[..16];
        // SAFETY: `s` has exactly 16 readable u8, the 16 bytes of the unaligned load
        // (bounds-checked slice); AVX-512F was detected (see `Avx512U`).
        Avx512U(unsafe { _mm512_cvtepu8_epi32(_mm_loadu_si128(s.as_ptr().cast())) })
    }
    #[inline(always)]
    fn store_u8x4(x: [Self; 4], s: &mut [u8]) {
        let s = &mut s[..64];
        // The four truncations in registers and one store (as `store_u16x2`: `vpmovdb` to
        // memory is microcoded on AMD's AVX-512 cores).
        // SAFETY: `s` has exactly 64 writable u8, the 64 bytes of the unaligned store
        // (bounds-checked slice); AVX-512F was detected (see `Avx512U`).
        unsafe {
            let [a, b, c, d] = x.map(|x| _mm512_cvtepi32_epi8(x.0));
            let ab = _mm512_inserti32x4::<1>(_mm512_castsi128_si512(a), b);
            let abc = _mm512_inserti32x4::<2>(ab, c);
            _mm512_storeu_si512(s.as_mut_ptr().cast(), _mm512_inserti32x4::<3>(abc, d))
        }
    }
    #[inline(always)]
    fn store_u16x2(a: Self, b: Self, s: &mut [u16]) {
        let s = &mut s[..32];
        // Both halves truncated in registers and stored at once: a truncation stored alone
        // becomes `vpmovdw` to memory, microcoded and several times slower on AMD's AVX-512
        // cores.
        // SAFETY: `s` has exactly 32 writable u16, the 64 bytes of the unaligned store
        // (bounds-checked slice); AVX-512F was detected (see `Avx512U`).
        unsafe {
            let lo = _mm512_castsi256_si512(_mm512_cvtepi32_epi16(a.0));
            let both = _mm512_inserti64x4::<1>(lo, _mm512_cvtepi32_epi16(b.0));
            _mm512_storeu_si512(s.as_mut_ptr().cast(), both)
        }
    }
}

super::table::table!(Tier::Avx512, Avx512, "avx512f");

/// The AVX-512 tier's kernels, if this CPU has AVX-512F (detected here: a cached load in `std`;
/// the dispatch calls it once per process).
pub(super) fn table() -> Option<&'static Kernels> {
    std::arch::is_x86_feature_detected!("avx512f").then_some(&TABLE)
}
