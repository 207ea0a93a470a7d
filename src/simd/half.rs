//! The 16-bit float conversions, one element at a time: the reference every tier's vector
//! conversion is checked against (`tests/convert.rs`), and what the scalar tier and every
//! tier's heads and tails run. Integer bit operations only, so no floating-point mode (rounding
//! direction, flush-to-zero, denormals-are-zero) can change a result.
//!
//! The rules (`docs/numerics.md`, "16-bit floats"):
//! - widening is exact; a bf16 keeps its bits (the upper half of the f32), an fp16 NaN comes
//!   out quiet with its sign and payload (what F16C's `vcvtph2ps` does);
//! - narrowing rounds to nearest, ties to even, subnormals kept, a finite value too large
//!   overflows to ±Inf; a NaN comes out a quiet NaN with its sign and the top bits of its
//!   payload (what `vcvtps2ph` and `vcvtneps2bf16` do), so NaN stays NaN.

/// bf16 (bit pattern) to f32: exact, the bits shifted into the upper half.
#[inline(always)]
pub(crate) fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits(u32::from(h) << 16)
}

/// f32 to bf16 (bit pattern): round to nearest even; NaN quieted, sign and top payload kept.
#[inline(always)]
pub(crate) fn f32_to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    if b & 0x7fff_ffff > 0x7f80_0000 {
        ((b >> 16) | 0x40) as u16
    } else {
        // Adding 0x7fff plus the lowest kept bit carries into the kept bits exactly when the
        // dropped half is above one half, or equal to it with an odd kept part; a carry out of
        // the largest finite exponent gives the infinity's bits. No overflow: the largest
        // non-NaN pattern is 0xff80_0000.
        ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
    }
}

/// fp16 (bit pattern) to f32: exact; a NaN is quieted (the payload shifted up, sign kept).
#[inline(always)]
pub(crate) fn f16_to_f32(h: u16) -> f32 {
    let h = u32::from(h);
    let sign = (h & 0x8000) << 16;
    let exp = (h >> 10) & 0x1f;
    let man = h & 0x3ff;
    let bits = match exp {
        0 if man == 0 => 0,
        0 => {
            // Subnormal: man * 2^-24. Normalize: the leading one at bit `p` (0..=9) gives
            // exponent p - 24, the bits below it the f32 mantissa.
            let p = 31 - man.leading_zeros();
            ((p + 127 - 24) << 23) | ((man << (23 - p)) & 0x7f_ffff)
        }
        0x1f if man == 0 => 0x7f80_0000,
        0x1f => 0x7fc0_0000 | (man << 13),
        _ => ((exp + 127 - 15) << 23) | (man << 13),
    };
    f32::from_bits(sign | bits)
}

/// f32 to fp16 (bit pattern): round to nearest even, subnormals kept, too large to ±Inf; NaN
/// quieted with its sign and the top ten bits of its payload.
#[inline(always)]
pub(crate) fn f32_to_f16(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let a = b & 0x7fff_ffff;
    let h = if a > 0x7f80_0000 {
        (0x7e00 | ((a >> 13) & 0x3ff)) as u16
    } else if a >= 0x4780_0000 {
        // |x| >= 65536 (Inf included): beyond the rounding range of 65504.
        0x7c00
    } else if a >= 0x3880_0000 {
        // |x| >= 2^-14, a normal fp16 (or, rounding up from 65504 + 16, Inf): rebias the
        // exponent from 127 to 15 and round the 13 dropped bits as in `f32_to_bf16`.
        let r = a - ((127 - 15) << 23);
        (((r + 0xfff + ((r >> 13) & 1)) >> 13) & 0x7fff) as u16
    } else if a >= 0x3300_0000 {
        // 2^-25 <= |x| < 2^-14: a subnormal fp16, the value in units of 2^-24 rounded (may
        // round up to the smallest normal, 0x0400, which is the right pattern).
        let e = a >> 23;
        let m = (a & 0x7f_ffff) | 0x80_0000;
        let shift = 126 - e; // 14..=24
        let q = m >> shift;
        let rest = m & ((1 << shift) - 1);
        let half = 1 << (shift - 1);
        (q + u32::from(rest > half || (rest == half && q & 1 == 1))) as u16
    } else {
        // Below 2^-25, half the smallest subnormal: rounds to zero.
        0
    };
    sign | h
}
