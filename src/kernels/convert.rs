//! The 16-bit float conversions ([`Half`]), written once, generic over [`Vf32`]: slices of
//! bf16 or fp16 bit patterns widened to f32 and f32 narrowed to them. The per-element rules
//! are the vector trait's (`load_bf16`, `store_f16`, ...), bit for bit the scalar reference on
//! every tier.

use crate::simd::Vf32;

/// A 16-bit floating-point format, stored as its bit pattern in a `u16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Half {
    /// bfloat16: 8 exponent bits (f32's range), 7 mantissa bits.
    Bf16,
    /// IEEE 754 binary16: 5 exponent bits (largest finite 65504), 10 mantissa bits.
    F16,
}

impl Half {
    /// Both formats.
    pub const ALL: [Half; 2] = [Half::Bf16, Half::F16];

    /// `bf16` or `f16`.
    pub fn name(self) -> &'static str {
        match self {
            Half::Bf16 => "bf16",
            Half::F16 => "f16",
        }
    }
}

/// Elements before the first one whose f32 lies on a vector boundary (0 on the scalar tier):
/// the scalar head of the conversions, as in the fused pass, so that the f32 loads or stores
/// of the vector loop never straddle a cache line.
#[inline(always)]
fn head<V: Vf32>(p: *const f32, n: usize) -> usize {
    if V::LANES > 1 {
        p.align_offset(V::LANES * 4).min(n)
    } else {
        0
    }
}

/// Widens `src` into `dst` (equal lengths: panics otherwise), exactly.
#[inline(always)]
pub(crate) fn widen<V: Vf32>(ty: Half, src: &[u16], dst: &mut [f32]) {
    let n = dst.len();
    let src = &src[..n];
    let h = head::<V>(dst.as_ptr(), n);
    let split = n - (n - h) % V::LANES;
    match ty {
        Half::Bf16 => {
            widen_span::<f32>(src, dst, 0, h, f32::load_bf16);
            widen_span::<V>(src, dst, h, split, V::load_bf16);
            widen_span::<f32>(src, dst, split, n, f32::load_bf16);
        }
        Half::F16 => {
            widen_span::<f32>(src, dst, 0, h, f32::load_f16);
            widen_span::<V>(src, dst, h, split, V::load_f16);
            widen_span::<f32>(src, dst, split, n, f32::load_f16);
        }
    }
}

#[inline(always)]
fn widen_span<V: Vf32>(
    src: &[u16],
    dst: &mut [f32],
    start: usize,
    end: usize,
    load: impl Fn(&[u16]) -> V,
) {
    let mut i = start;
    while i < end {
        load(&src[i..]).store(&mut dst[i..]);
        i += V::LANES;
    }
}

/// Narrows `src` into `dst` (equal lengths: panics otherwise), rounding to nearest even.
#[inline(always)]
pub(crate) fn narrow<V: Vf32>(ty: Half, src: &[f32], dst: &mut [u16]) {
    let n = dst.len();
    let src = &src[..n];
    let h = head::<V>(src.as_ptr(), n);
    let split = n - (n - h) % V::LANES;
    match ty {
        Half::Bf16 => {
            narrow_span::<f32>(src, dst, 0, h, f32::store_bf16);
            narrow_span::<V>(src, dst, h, split, V::store_bf16);
            narrow_span::<f32>(src, dst, split, n, f32::store_bf16);
        }
        Half::F16 => {
            narrow_span::<f32>(src, dst, 0, h, f32::store_f16);
            narrow_span::<V>(src, dst, h, split, V::store_f16);
            narrow_span::<f32>(src, dst, split, n, f32::store_f16);
        }
    }
}

#[inline(always)]
fn narrow_span<V: Vf32>(
    src: &[f32],
    dst: &mut [u16],
    start: usize,
    end: usize,
    store: impl Fn(V, &mut [u16]),
) {
    let mut i = start;
    while i < end {
        store(V::load(&src[i..]), &mut dst[i..]);
        i += V::LANES;
    }
}
