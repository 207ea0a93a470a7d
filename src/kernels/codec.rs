//! The codecs of compressed optimizer state (`docs/numerics.md`, "Compressed state"): bf16 with
//! deterministic stochastic rounding, and an 8-bit blockwise code with one f32 scale per
//! [`Q8_BLOCK`] elements. Integer operations and exactly rounded f32 multiplications only, so
//! every tier computes the same bits; the element functions here are the definition (the
//! scalar tier runs them one by one, the vector tiers compile the same loops for their
//! instruction sets, where LLVM vectorizes the integer arithmetic; the pair encoders run lane
//! functions over `Vf32` / `Vu32`, whose one-lane instances are the element functions:
//! `bf16_stochastic_lanes`, and `q8_lanes`, tested against `q8_encode_signed` /
//! `q8_encode_unsigned`; `tests/codec.rs` checks every tier bit for bit against the scalar one,
//! and the element functions against a model).
//!
//! **Stochastic rounding.** A value's bits plus 16 random bits `r`, truncated to the upper
//! half (`(bits + r) >> 16`): it rounds away from zero with probability equal to the dropped
//! fraction, so the expected stored value is the f32 value. The random bits of an element are
//! one half of a 32-bit counter-based hash of the seed, the update number, the pair of state
//! buffers ([`Stream`]: the moments m and v are one pair, v_max and the slow weights the other)
//! and the element's index (a `u64`: see [`SrKey`]): the low half for the pair's first buffer,
//! the high half for its second. So they do not depend on the tier, the thread split, the range
//! split or the shard layout, and one hash serves the two buffers of a pair.
//!
//! **The 8-bit code.** Each block's scale `s` is the largest magnitude of its finite values
//! (exactly, an f32). A value `x` is normalized as `q = (|x| * pre) * inv` with `inv = f32(1 /
//! (s * pre))` (`pre = 2^64` when `s` is subnormal, so that `inv` is finite, else 1: both
//! products by `pre` are exact) and rounded to a float with few mantissa bits, whose bit
//! pattern, shifted, is the code. Signed code (moments that may be negative): `q` to 3 mantissa
//! bits; bit 7 the sign, `k` = the low 7 bits: `k = 0` is 0 (and `0x80` NaN), `k = 127` is
//! ±Inf, `k` in 1..=126 is `f32::from_bits((k + 890) << 20)` (`k = 126` is 1.0, `k = 1` is
//! `1.375 * 2^-16`); a magnitude below half the smallest code becomes 0. Unsigned code (buffers
//! that are never negative: second moments, sums of squares) holds the square root: `t =
//! sqrt(q)` (f32, exactly rounded) to 5 mantissa bits; 0 is 0, 254 is +Inf, 255 is NaN, `c` in
//! 1..=253 is `w(c)^2` with `w(c) = f32::from_bits((c + 3811) << 18)` (`c = 253` is 1.0, `c = 1`
//! is `(1.125 * 2^-8)^2`); a negative value becomes 0, and a positive `t` below the smallest
//! code goes to it (never to 0: a second moment's small value must not become a division by
//! epsilon). Decoding multiplies the code's value by `s` (one rounding: `w(c)^2` is exact); the
//! block's largest value comes back exactly.
//!
//! Why the square root and 5 bits: a second moment with `b2 = 0.999` moves 0.1 % per step, so
//! its codes are rounded stochastically, which leaves noise in the held value; Adam divides by
//! its square root. Rounded there, with steps of 3 to 6 %, the rounding is unbiased in the value
//! Adam divides by and training stays within 0.3 % of f32 state, where 3 mantissa bits of `v`
//! itself (steps of 6 to 12 % in `v`) ended 0.95 to 1.40 % off (`examples/python/
//! state_quality.py`).

use crate::simd::{Vf32, Vu32};

/// Elements per block of the 8-bit code (one f32 scale each). Divides the sum-of-squares
/// block ([`super::SUMSQ_BLOCK`]), so every shard layout that keeps the global norm
/// bit-identical (shards starting on those blocks) also keeps the 8-bit blocks.
pub const Q8_BLOCK: usize = 256;

/// The number of 8-bit blocks (scales) of a buffer of `n` elements.
pub const fn q8_block_count(n: usize) -> usize {
    n.div_ceil(Q8_BLOCK)
}

/// Which of the two 8-bit codes a buffer uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Q8Code {
    /// Sign and magnitude: for moments that may be negative.
    Signed,
    /// Magnitude only (a negative value becomes 0): for buffers that are never negative.
    Unsigned,
}

/// The signed code's `k` as a float pattern: `(k + SIGNED_BASE) << SIGNED_SHIFT`.
const SIGNED_BASE: u32 = 890;
/// The signed code keeps 3 mantissa bits: its patterns are shifted by 23 - 3.
const SIGNED_SHIFT: u32 = 20;
/// The unsigned code's `c` as the float pattern of its square root:
/// `(c + UNSIGNED_BASE) << UNSIGNED_SHIFT`.
const UNSIGNED_BASE: u32 = 3811;
/// The unsigned code keeps 5 mantissa bits of the square root: shifted by 23 - 5.
const UNSIGNED_SHIFT: u32 = 18;
/// The signed code's largest finite magnitude `k` (1.0).
const SIGNED_MAX: u32 = 126;
/// The unsigned code's largest finite `c` (1.0).
const UNSIGNED_MAX: u32 = 253;
/// Half the signed code's smallest nonzero magnitude (`1.375 * 2^-17`): below it, 0.
const SIGNED_HALF_MIN: u32 = 0x3730_0000;
/// The unsigned code's square root becomes 0 only when it is 0 (bits below 1): any positive
/// value goes to the smallest code at least.
const UNSIGNED_ZERO_BELOW: u32 = 1;
const INF: u32 = 0x7f80_0000;
/// The NaN every code decodes its NaN code to.
const QNAN: u32 = 0x7fc0_0000;
/// `2^64`: the exact pre-scale of a block whose scale is subnormal.
const PRE: f32 = 18_446_744_073_709_551_616.0;

/// The float of a finite code's magnitude field: `(k + base) << shift` (the signed code's
/// value, the unsigned code's square root), before the scale.
#[cfg(test)]
fn code_float(k: u32, base: u32, shift: u32) -> f32 {
    f32::from_bits((k + base) << shift)
}

/// The per-block factors of the quantizer: `(pre, inv)` with `q = (|x| * pre) * inv`.
#[inline(always)]
pub(crate) fn q8_factors(scale: f32) -> (f32, f32) {
    if scale == 0.0 {
        (1.0, 0.0)
    } else if scale < f32::MIN_POSITIVE {
        (PRE, 1.0 / (scale * PRE))
    } else {
        (1.0, 1.0 / scale)
    }
}

/// `|x|`'s bits as a candidate for the block's scale: 0 for a non-finite value.
#[inline(always)]
fn finite_abs_bits(x: f32) -> u32 {
    let a = x.to_bits() & 0x7fff_ffff;
    a & 0u32.wrapping_sub(u32::from(a < INF))
}

/// The scale of a block: the largest magnitude of its finite values (0 if none), exactly. The
/// maximum of integers is exact in any order; 16 running maxima let it vectorize.
#[inline(always)]
pub(crate) fn q8_scale(block: &[f32]) -> f32 {
    let mut acc = [0u32; 16];
    let mut lanes = block.chunks_exact(16);
    for c in &mut lanes {
        for (m, &x) in acc.iter_mut().zip(c) {
            *m = Ord::max(*m, finite_abs_bits(x));
        }
    }
    let tail = lanes.remainder().iter().map(|&x| finite_abs_bits(x));
    f32::from_bits(acc.into_iter().chain(tail).max().unwrap_or(0))
}

/// The rounding of a normalized magnitude `q` (`0 <= q <= 1 + 2^-23`) to `23 - shift`
/// mantissa bits as a pattern shifted right by `shift` (20 or 18), then the code's field: 0
/// when `q`'s bits are below `zero_below`, else clamped to `1..=max`. `r` is the stochastic
/// rounding's 16 random bits, or `None` for round to nearest, ties to even: the rounding adds
/// `r << (shift - 16)` (stochastic: the dropped bits round up with probability their value over
/// `2^shift`, to 16 bits) or `2^(shift - 1) - 1` plus the kept lowest bit.
#[inline(always)]
fn magnitude_code(q: f32, shift: u32, base: u32, max: u32, zero_below: u32, r: Option<u32>) -> u32 {
    let b = q.to_bits();
    let add = match r {
        Some(r) => r << (shift - 16),
        None => ((1 << (shift - 1)) - 1) + ((b >> shift) & 1),
    };
    let k = Ord::max(b.wrapping_add(add) >> shift, base + 1) - base;
    pick(b < zero_below, 0, Ord::min(k, max))
}

/// `a` where `keep`, else `b` (branch-free, so that the loops vectorize).
#[inline(always)]
fn pick(keep: bool, a: u32, b: u32) -> u32 {
    let m = 0u32.wrapping_sub(u32::from(keep));
    (a & m) | (b & !m)
}

/// One element of the signed code, with the block's factors; `r` as in [`magnitude_code`].
#[inline(always)]
pub(crate) fn q8_encode_signed(x: f32, pre: f32, inv: f32, r: Option<u32>) -> u8 {
    let b = x.to_bits();
    let sign = (b >> 24) & 0x80;
    let a = b & 0x7fff_ffff;
    let q = (f32::from_bits(a) * pre) * inv;
    let k = magnitude_code(q, SIGNED_SHIFT, SIGNED_BASE, SIGNED_MAX, SIGNED_HALF_MIN, r);
    let finite = pick(k == 0, 0, sign | k);
    let special = pick(a > INF, 0x80, sign | 127);
    pick(a >= INF, special, finite) as u8
}

/// One element of the unsigned code, with the block's factors; `r` as in [`magnitude_code`].
#[inline(always)]
pub(crate) fn q8_encode_unsigned(x: f32, pre: f32, inv: f32, r: Option<u32>) -> u8 {
    let b = x.to_bits();
    let a = b & 0x7fff_ffff;
    // A negative x (whose root is NaN) is masked below; sqrt is exactly rounded on every tier.
    let t = ((x * pre) * inv).sqrt();
    let k = magnitude_code(
        t,
        UNSIGNED_SHIFT,
        UNSIGNED_BASE,
        UNSIGNED_MAX,
        UNSIGNED_ZERO_BELOW,
        r,
    );
    let finite = pick(b >> 31 == 1, 0, k);
    let special = pick(a > INF, 255, pick(b == INF, 254, 0));
    pick(a >= INF, special, finite) as u8
}

/// One element of the signed code decoded with the block's scale.
/// The readable definition, which the lane decoder ([`q8_decode_lanes`], which every tier
/// runs) is tested against.
#[cfg(test)]
fn q8_decode_signed(c: u8, scale: f32) -> f32 {
    let c = u32::from(c);
    let k = c & 127;
    let sign = (c & 0x80) << 24;
    let finite = (code_float(k, SIGNED_BASE, SIGNED_SHIFT) * scale).to_bits();
    let mag = if k == 0 {
        0
    } else if k == 127 {
        INF
    } else {
        finite
    };
    f32::from_bits(if c == 0x80 { QNAN } else { sign | mag })
}

/// One element of the unsigned code decoded with the block's scale.
/// The readable definition, which the lane decoder ([`q8_decode_lanes`], which every tier
/// runs) is tested against.
#[cfg(test)]
fn q8_decode_unsigned(c: u8, scale: f32) -> f32 {
    let c = u32::from(c);
    let w = code_float(Ord::min(c, UNSIGNED_MAX), UNSIGNED_BASE, UNSIGNED_SHIFT);
    // w has 6 significant bits: w * w is exact.
    let finite = ((w * w) * scale).to_bits();
    let bits = match c {
        0 => 0,
        254 => INF,
        255 => QNAN,
        _ => finite,
    };
    f32::from_bits(bits)
}

/// Quantizes `src` into `codes` and `scales` (one per [`Q8_BLOCK`] elements from the start of
/// `src`; the last block may be shorter). Lengths: `codes` as `src`, `scales` one per block.
/// Rounded to nearest with `sr` `None`; with `Some((key, first))` stochastically, element `j`
/// with the 16 random bits of index `first + j` under `key` ([`SrKey::bits`], as bf16 state).
#[inline(always)]
pub(crate) fn encode_q8(
    code: Q8Code,
    sr: Option<(SrKey, u64)>,
    src: &[f32],
    codes: &mut [u8],
    scales: &mut [f32],
) {
    match sr {
        None => encode_q8_with(code, src, codes, scales, |_, _| |_| None),
        Some((key, first)) => encode_q8_sr(code, key, first, src, codes, scales),
    }
}

/// [`encode_q8`] with stochastic rounding.
#[inline(always)]
fn encode_q8_sr(
    code: Q8Code,
    key: SrKey,
    first: u64,
    src: &[f32],
    codes: &mut [u8],
    scales: &mut [f32],
) {
    let shift = key.stream.shift();
    encode_q8_with(code, src, codes, scales, |at, len| {
        let (lo, cross, k0, k1) = block_keys(key, first.wrapping_add(at as u64), len);
        move |j: usize| {
            let k = if j < cross { k0 } else { k1 };
            Some((mix32(lo.wrapping_add(j as u32) ^ k) >> shift) & 0xffff)
        }
    })
}

/// The keys of a block of `len` elements starting at index `i0`: its indices have one upper
/// half, or two if they cross a multiple of 2^32 (at element `cross` of the block).
#[inline(always)]
fn block_keys(key: SrKey, i0: u64, len: usize) -> (u32, usize, u32, u32) {
    let lo = i0 as u32;
    let cross = ((1u64 << 32) - u64::from(lo)).min(len as u64) as usize;
    let hi = (i0 >> 32) as u32;
    (lo, cross, key.key(hi), key.key(hi.wrapping_add(1)))
}

/// [`encode_q8`] with stochastic rounding of the two buffers of a stream pair at once, one
/// hash per element: `a` (the stream of `key`, the pair's first: M or VMax) with code
/// `code[0]` into `ca`, `sa`, its partner `b` with `code[1]` into `cb`, `sb`. The same codes
/// and scales as two calls of [`encode_q8`].
#[inline(always)]
pub(crate) fn encode_q8_sr2<V: Vf32>(
    code: [Q8Code; 2],
    key: SrKey,
    first: u64,
    [a, b]: [&[f32]; 2],
    [ca, cb]: [&mut [u8]; 2],
    [sa, sb]: [&mut [f32]; 2],
) {
    let n = a.len();
    let (b, ca, cb) = (&b[..n], &mut ca[..n], &mut cb[..n]);
    let blocks = a.chunks(Q8_BLOCK).zip(b.chunks(Q8_BLOCK));
    let outs = ca.chunks_mut(Q8_BLOCK).zip(cb.chunks_mut(Q8_BLOCK));
    let scales = sa.iter_mut().zip(sb.iter_mut());
    for (bi, (((xa, xb), (da, db)), (s_a, s_b))) in blocks.zip(outs).zip(scales).enumerate() {
        let at = first.wrapping_add((bi * Q8_BLOCK) as u64);
        let tops = [q8_top::<V>(code[0], xa), q8_top::<V>(code[1], xb)];
        encode_q8_sr2_block::<V>(code, key, at, [xa, xb], [da, db], [s_a, s_b], tops);
    }
}

/// One block of [`encode_q8_sr2`] starting at index `at`, with the largest bit patterns
/// [`q8_top`] of its two blocks, which the caller took: the codes and the scales.
#[inline(always)]
pub(crate) fn encode_q8_sr2_block<V: Vf32>(
    code: [Q8Code; 2],
    key: SrKey,
    at: u64,
    [xa, xb]: [&[f32]; 2],
    [da, db]: [&mut [u8]; 2],
    [s_a, s_b]: [&mut f32; 2],
    [top_a, top_b]: [u32; 2],
) {
    use Q8Code::{Signed as S, Unsigned as U};
    let ((scale_a, plain_a), (scale_b, plain_b)) =
        (q8_scale_of_top(top_a, xa), q8_scale_of_top(top_b, xb));
    (*s_a, *s_b) = (scale_a, scale_b);
    let f = [q8_factors(scale_a), q8_factors(scale_b)];
    let keys = block_keys(key, at, xa.len());
    let x = [xa, xb];
    // Each arm's codes are constants, so that the element loops are specialized; blocks
    // of finite values with normal (or zero) scales whose indices share one key (all but
    // a block that crosses a multiple of 2^32) take the plain lane functions.
    let d = [da, db];
    let plain = plain_a && plain_b && keys.1 >= xa.len();
    match (code, plain) {
        ([S, S], true) => pair_block::<V, true>([S, S], x, d, f, keys),
        ([S, U], true) => pair_block::<V, true>([S, U], x, d, f, keys),
        ([U, S], true) => pair_block::<V, true>([U, S], x, d, f, keys),
        ([U, U], true) => pair_block::<V, true>([U, U], x, d, f, keys),
        ([S, S], false) => pair_block::<V, false>([S, S], x, d, f, keys),
        ([S, U], false) => pair_block::<V, false>([S, U], x, d, f, keys),
        ([U, S], false) => pair_block::<V, false>([U, S], x, d, f, keys),
        ([U, U], false) => pair_block::<V, false>([U, U], x, d, f, keys),
    }
}

/// The bits of `x` of which a block of code `code` takes the largest ([`q8_top`]): of the
/// magnitude for the signed code, all of them for the unsigned code (whose negative values,
/// which no rule writes, come out above Inf's).
#[inline(always)]
pub(crate) fn q8_top_bits<U: Vu32>(code: Q8Code, x: U) -> U {
    match code {
        Q8Code::Signed => x.and(U::splat(0x7fff_ffff)),
        Q8Code::Unsigned => x,
    }
}

/// The largest [`q8_top_bits`] of a block of code `code`, one vector pass.
#[inline(always)]
fn q8_top<V: Vf32>(code: Q8Code, block: &[f32]) -> u32 {
    let (mut acc, mut j) = (V::U::splat(0), 0);
    while block.len() - j >= V::LANES {
        acc = acc.max(q8_top_bits(code, V::load(&block[j..]).to_bits()));
        j += V::LANES;
    }
    let tail = block[j..].iter().map(|&x| q8_top_bits(code, x.to_bits()));
    tail.fold(acc.max_lane(), Ord::max)
}

/// The scale of a block ([`q8_scale`]) from its largest bit pattern `top` ([`q8_top`]), and
/// whether the block is plain: every value finite (and, for the unsigned code, none negative)
/// and the scale 0 or normal, so that `pre` is 1 and no lane takes a special code
/// ([`q8_plain_lanes`]). Below Inf's pattern, `top` is the scale; otherwise the block holds a
/// non-finite or negative value and its scale takes a pass of its own.
#[inline(always)]
fn q8_scale_of_top(top: u32, block: &[f32]) -> (f32, bool) {
    if top < INF {
        (
            f32::from_bits(top),
            top == 0 || top >= f32::MIN_POSITIVE.to_bits(),
        )
    } else {
        (q8_scale(block), false)
    }
}

/// The element loop of [`encode_q8_sr2`] over one block pair with vectors `V` (four at a
/// time, whose codes are stored at once: `Vu32::store_u8x4`), the rest one lane at a time:
/// the codes, the blocks' factors and keys.
#[inline(always)]
fn pair_block<V: Vf32, const PLAIN: bool>(
    [ca, cb]: [Q8Code; 2],
    [xa, xb]: [&[f32]; 2],
    [da, db]: [&mut [u8]; 2],
    [(pa, ia), (pb, ib)]: [(f32, f32); 2],
    (lo, cross, k0, k1): (u32, usize, u32, u32),
) {
    let n = xa.len();
    let (xb, da, db) = (&xb[..n], &mut da[..n], &mut db[..n]);
    let group = 4 * V::LANES;
    let (spa, sia, spb, sib) = (V::splat(pa), V::splat(ia), V::splat(pb), V::splat(ib));
    let (low, cross32) = (V::U::splat(0xffff), V::U::splat(cross as u32));
    let (key0, key1) = (V::U::splat(k0), V::U::splat(k1));
    // The lanes' indices (low halves), a vector ahead each time.
    let (mut index, lanes) = (V::U::index(lo), V::U::splat(V::LANES as u32));
    let mut j = 0;
    while n - j >= group {
        let (mut outa, mut outb) = ([V::U::splat(0); 4], [V::U::splat(0); 4]);
        for (q, (oa, ob)) in outa.iter_mut().zip(&mut outb).enumerate() {
            let at = j + q * V::LANES;
            // Lanes before `cross` take the first key (`cross <= n <= Q8_BLOCK`); a plain
            // block has one key.
            let key = if PLAIN {
                key0
            } else {
                V::U::index(at as u32).select_lt(cross32, key0, key1)
            };
            let r = mix32_lanes(index.xor(key));
            index = index.add(lanes);
            if PLAIN {
                *oa = q8_plain_lanes(ca, V::load(&xa[at..]), sia, r.and(low));
                *ob = q8_plain_lanes(cb, V::load(&xb[at..]), sib, r.shr::<16>());
            } else {
                *oa = q8_lanes(ca, V::load(&xa[at..]), spa, sia, r.and(low));
                *ob = q8_lanes(cb, V::load(&xb[at..]), spb, sib, r.shr::<16>());
            }
        }
        V::U::store_u8x4(outa, &mut da[j..]);
        V::U::store_u8x4(outb, &mut db[j..]);
        j += group;
    }
    for j in j..n {
        let r = mix32(lo.wrapping_add(j as u32) ^ if j < cross { k0 } else { k1 });
        da[j] = q8_lanes::<f32>(ca, xa[j], pa, ia, r & 0xffff) as u8;
        db[j] = q8_lanes::<f32>(cb, xb[j], pb, ib, r >> 16) as u8;
    }
}

/// The stochastically rounded code `code` of every lane of `x` with the block's factors
/// `pre`, `inv` and the random bits `r` (`0..=0xffff` per lane): bit for bit
/// [`q8_encode_signed`] / [`q8_encode_unsigned`] with `Some(r)`, in the lanes' low bytes.
#[inline(always)]
fn q8_lanes<V: Vf32>(code: Q8Code, x: V, pre: V, inv: V, r: V::U) -> V::U {
    match code {
        Q8Code::Signed => q8_signed_lanes(x, pre, inv, r),
        Q8Code::Unsigned => q8_unsigned_lanes(x, pre, inv, r),
    }
}

/// [`q8_encode_signed`] of every lane, rounded stochastically with `r`.
#[inline(always)]
fn q8_signed_lanes<V: Vf32>(x: V, pre: V, inv: V, r: V::U) -> V::U {
    let u = |c: u32| V::U::splat(c);
    let b = x.to_bits();
    let a = b.and(u(0x7fff_ffff));
    // A finite x: the plain code of x * pre (exact, and of x's sign: |x| <= s, and pre > 1
    // only when s is subnormal), whose magnitude times inv is q.
    let finite = q8_plain_lanes(Q8Code::Signed, x.mul(pre), inv, r);
    let sign = b.shr::<24>().and(u(0x80));
    let special = u(INF).select_lt(a, u(0x80), sign.or(u(127)));
    a.select_lt(u(INF), finite, special)
}

/// [`q8_encode_unsigned`] of every lane, rounded stochastically with `r`.
#[inline(always)]
fn q8_unsigned_lanes<V: Vf32>(x: V, pre: V, inv: V, r: V::U) -> V::U {
    let u = |c: u32| V::U::splat(c);
    let b = x.to_bits();
    let a = b.and(u(0x7fff_ffff));
    // A finite x >= 0: the plain code of x * pre (exact, as for the signed code); a negative
    // x (its sign bit set, its root NaN) is 0.
    let plain = q8_plain_lanes(Q8Code::Unsigned, x.mul(pre), inv, r);
    let finite = b.select_lt(u(0x8000_0000), plain, u(0));
    // a == INF: +Inf (254) if the sign bit is clear, else 0.
    let inf = b.select_lt(u(0x8000_0000), u(254), u(0));
    let special = u(INF).select_lt(a, u(255), inf);
    a.select_lt(u(INF), finite, special)
}

/// The codes of finite lanes `x` (not negative for the unsigned code) with `pre` 1: the
/// rounding and clamping of [`magnitude_code`], which [`q8_lanes`] takes for the finite lanes
/// of `x * pre`. A plain block ([`q8_scale_of_top`]) needs no more.
#[inline(always)]
fn q8_plain_lanes<V: Vf32>(code: Q8Code, x: V, inv: V, r: V::U) -> V::U {
    let u = |c: u32| V::U::splat(c);
    match code {
        Q8Code::Signed => {
            let sign = x.to_bits().shr::<24>().and(u(0x80));
            let q = x.abs().mul(inv).to_bits();
            let k = q
                .add(r.shl::<{ (SIGNED_SHIFT - 16) as i32 }>())
                .shr::<{ SIGNED_SHIFT as i32 }>();
            q.select_lt(u(SIGNED_HALF_MIN), u(0), sign.or(field(k, SIGNED_BASE)))
        }
        Q8Code::Unsigned => {
            let t = x.mul(inv).sqrt().to_bits();
            let k = t
                .add(r.shl::<{ (UNSIGNED_SHIFT - 16) as i32 }>())
                .shr::<{ UNSIGNED_SHIFT as i32 }>();
            t.select_lt(u(UNSIGNED_ZERO_BELOW), u(0), field(k, UNSIGNED_BASE))
        }
    }
}

/// A rounded pattern `k` (shifted) of a finite `q <= 1 + 2^-23` as a code's magnitude field:
/// `max(k, base + 1) - base`, as in [`magnitude_code`], whose clamp to the largest code
/// never acts for such a `q`: with every rounding bit set, `1 + 2^-23` still rounds to 1.0's
/// pattern (the signed code's `0x3f80_0001 + 0xffff0 >> 20`, the unsigned code's root
/// `0x3f80_0001 + 0x3fffc >> 18`), the largest code. A non-finite `q` gives any field: the
/// full encoders override its lane.
#[inline(always)]
fn field<U: Vu32>(k: U, base: u32) -> U {
    k.max(U::splat(base + 1)).add(U::splat(base.wrapping_neg()))
}

/// The quantizer over blocks; `block_rand(start, len)` gives the rounding bits of the block's
/// elements by their place in it (`None`: to nearest).
#[inline(always)]
fn encode_q8_with<R: Fn(usize) -> Option<u32>>(
    code: Q8Code,
    src: &[f32],
    codes: &mut [u8],
    scales: &mut [f32],
    block_rand: impl Fn(usize, usize) -> R,
) {
    let codes = &mut codes[..src.len()];
    let blocks = src.chunks(Q8_BLOCK).zip(codes.chunks_mut(Q8_BLOCK));
    for (bi, ((x, c), s)) in blocks.zip(scales.iter_mut()).enumerate() {
        let scale = q8_scale(x);
        *s = scale;
        let (pre, inv) = q8_factors(scale);
        let c = &mut c[..x.len()];
        let rand = block_rand(bi * Q8_BLOCK, x.len());
        match code {
            Q8Code::Signed => {
                for (j, (c, &x)) in c.iter_mut().zip(x).enumerate() {
                    *c = q8_encode_signed(x, pre, inv, rand(j));
                }
            }
            Q8Code::Unsigned => {
                for (j, (c, &x)) in c.iter_mut().zip(x).enumerate() {
                    *c = q8_encode_unsigned(x, pre, inv, rand(j));
                }
            }
        }
    }
}

/// Decodes `codes` with their `scales` (one per [`Q8_BLOCK`] elements from the start) into
/// `dst` (the length of `codes`), with vectors `V` and the last block's tail one lane at a time
/// ([`q8_decode_lanes`]).
#[inline(always)]
pub(crate) fn decode_q8<V: Vf32>(code: Q8Code, codes: &[u8], scales: &[f32], dst: &mut [f32]) {
    let dst = &mut dst[..codes.len()];
    let blocks = codes.chunks(Q8_BLOCK).zip(dst.chunks_mut(Q8_BLOCK));
    for ((c, x), &s) in blocks.zip(scales) {
        let x = &mut x[..c.len()];
        let sv = V::splat(s);
        let mut j = 0;
        while c.len() - j >= V::LANES {
            q8_decode_lanes(code, V::U::load_u8(&c[j..]), sv).store(&mut x[j..]);
            j += V::LANES;
        }
        for j in j..c.len() {
            x[j] = q8_decode_lanes(code, u32::from(c[j]), s);
        }
    }
}

/// The values of the codes `c` (one per lane, zero-extended) of code `code` with the block's
/// scale: bit for bit [`q8_decode_signed`] / [`q8_decode_unsigned`].
#[inline(always)]
pub(crate) fn q8_decode_lanes<V: Vf32>(code: Q8Code, c: V::U, scale: V) -> V {
    match code {
        Q8Code::Signed => q8_decode_signed_lanes(c, scale),
        Q8Code::Unsigned => q8_decode_unsigned_lanes(c, scale),
    }
}

/// [`q8_decode_signed`] of every lane.
#[inline(always)]
fn q8_decode_signed_lanes<V: Vf32>(c: V::U, scale: V) -> V {
    let u = |x: u32| V::U::splat(x);
    // k in 0..=126 is the plain decoder's; 127 is ±Inf and 0x80 (c ^ 0x80 == 0) NaN.
    let plain = q8_decode_plain_lanes(Q8Code::Signed, c, scale).to_bits();
    let inf = c.shl::<24>().and(u(0x8000_0000)).or(u(INF));
    let x = c.and(u(127)).select_lt(u(127), plain, inf);
    V::from_bits(c.xor(u(0x80)).select_lt(u(1), u(QNAN), x))
}

/// [`q8_decode_unsigned`] of every lane.
#[inline(always)]
fn q8_decode_unsigned_lanes<V: Vf32>(c: V::U, scale: V) -> V {
    let u = |x: u32| V::U::splat(x);
    // c in 0..=253 is the plain decoder's; 254 is Inf, 255 NaN.
    let plain = q8_decode_plain_lanes(Q8Code::Unsigned, c, scale).to_bits();
    let special = c.select_lt(u(255), u(INF), u(QNAN));
    V::from_bits(c.select_lt(u(254), plain, special))
}

/// [`q8_decode_lanes`] of codes that are all finite values (no NaN or Inf code: see
/// [`q8_codes_plain`]), which the full decoders take for those codes: the signed code's sign
/// goes through the multiplication (exact: rounding to nearest is symmetric).
#[inline(always)]
pub(crate) fn q8_decode_plain_lanes<V: Vf32>(code: Q8Code, c: V::U, scale: V) -> V {
    let u = |x: u32| V::U::splat(x);
    // The code 0 (k = 0 for the signed code) is +0: its product is dropped.
    match code {
        Q8Code::Signed => {
            let k = c.and(u(127));
            let magnitude = k.add(u(SIGNED_BASE)).shl::<{ SIGNED_SHIFT as i32 }>();
            let sign = c.shl::<24>().and(u(0x8000_0000));
            V::from_bits(magnitude.or(sign)).mul_if(scale, k)
        }
        Q8Code::Unsigned => {
            let w = V::from_bits(c.add(u(UNSIGNED_BASE)).shl::<{ UNSIGNED_SHIFT as i32 }>());
            // w has 6 significant bits: w * w is exact.
            w.mul(w).mul_if(scale, c)
        }
    }
}

/// Whether `codes` of code `code` hold finite values only (no NaN or Inf code), so that
/// [`q8_decode_plain_lanes`] decodes them. One pass over the bytes that vectorizes.
#[inline(always)]
pub(crate) fn q8_codes_plain(code: Q8Code, codes: &[u8]) -> bool {
    let special = |c: u8| match code {
        Q8Code::Signed => c & 127 == 127 || c == 0x80,
        Q8Code::Unsigned => c >= 254,
    };
    codes.iter().fold(0u8, |any, &c| any | u8::from(special(c))) == 0
}

/// The state buffer a random stream belongs to: part of the counter, so that the buffers of
/// one element round independently. Buffers `2j` and `2j + 1` share pair `j`'s hash, the first
/// taking its low 16 bits, the second its high 16 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    /// The first moment / momentum trace (pair 0, low half).
    M = 0,
    /// The second moment (pair 0, high half).
    V = 1,
    /// The AMSGrad maximum / RMSprop's centered average (pair 1, low half).
    VMax = 2,
    /// Lookahead's slow weights (pair 1, high half).
    Slow = 3,
}

impl Stream {
    /// The other buffer of its pair.
    pub fn partner(self) -> Stream {
        match self {
            Stream::M => Stream::V,
            Stream::V => Stream::M,
            Stream::VMax => Stream::Slow,
            Stream::Slow => Stream::VMax,
        }
    }

    /// The shift of its half of the pair's hash: 0 or 16.
    fn shift(self) -> u32 {
        (self as u32 & 1) * 16
    }
}

/// The counter of stochastic rounding without the element: the seed, the update number and
/// the state buffer. An element `i` (its index: the optimizer's index offset plus its place in
/// the concatenation of the registered buffers) rounds with 16 bits of the pair's hash
/// `mix32(lo32(i) ^ key(hi32(i)))` ([`SrKey::key`], [`SrKey::bits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SrKey {
    /// The configured seed.
    pub seed: u64,
    /// The 1-based number of the update.
    pub step: u64,
    /// The state buffer.
    pub stream: Stream,
}

/// SplitMix64's finalizer (Steele, Lea and Flood): a bijection of `u64` with full avalanche.
#[inline(always)]
fn splitmix64(z: u64) -> u64 {
    let z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A 32-bit integer hash with low bias (Chris Wellons' `lowbias32`): a bijection of `u32`.
#[inline(always)]
pub(crate) fn mix32(x: u32) -> u32 {
    mix32_lanes(x)
}

/// [`mix32`] of every lane.
#[inline(always)]
pub(crate) fn mix32_lanes<U: Vu32>(x: U) -> U {
    let x = x.xor(x.shr::<16>()).mul_lo(U::splat(0x7feb_352d));
    let x = x.xor(x.shr::<15>()).mul_lo(U::splat(0x846c_a68b));
    x.xor(x.shr::<16>())
}

impl SrKey {
    /// The 32-bit key of the elements whose index has upper half `hi`:
    /// `splitmix64(splitmix64(splitmix64(seed) ^ step) ^ (pair << 32 | hi))` (`pair` the
    /// stream's pair, 0 or 1), its two halves xored.
    #[inline(always)]
    pub fn key(&self, hi: u32) -> u32 {
        let pair = self.stream as u64 >> 1;
        let z = splitmix64(
            splitmix64(splitmix64(self.seed) ^ self.step) ^ (pair << 32 | u64::from(hi)),
        );
        (z >> 32) as u32 ^ z as u32
    }

    /// The 32-bit hash of element `index` that the stream's pair shares.
    #[inline(always)]
    pub fn pair_bits(&self, index: u64) -> u32 {
        mix32(index as u32 ^ self.key((index >> 32) as u32))
    }

    /// The 16 random bits of element `index` in this stream (`0..=0xffff`).
    #[inline(always)]
    pub fn bits(&self, index: u64) -> u32 {
        (self.pair_bits(index) >> self.stream.shift()) & 0xffff
    }
}

/// f32 to bf16 rounded stochastically with the 16 random bits `r`: `(bits + r) >> 16`; a NaN
/// is quieted as in round-to-nearest (`half::f32_to_bf16`). ±Inf stays; a value above the
/// largest bf16 may round up to Inf, with the probability of its dropped fraction.
#[inline(always)]
pub(crate) fn bf16_stochastic(x: f32, r: u32) -> u16 {
    bf16_stochastic_lanes(x, r) as u16
}

/// [`bf16_stochastic`] of every lane, with the random bits `r` of each (the bf16 patterns in
/// the low halves of the lanes).
#[inline(always)]
pub(crate) fn bf16_stochastic_lanes<V: Vf32>(x: V, r: V::U) -> V::U {
    let b = x.to_bits();
    let (zero, inf) = (V::U::splat(0), V::U::splat(INF));
    let a = b.and(V::U::splat(0x7fff_ffff));
    // Branch-free: a NaN adds nothing (a carry could turn it into a number) and is quieted.
    let r = inf.select_lt(a, zero, r);
    let quiet = inf.select_lt(a, V::U::splat(0x40), zero);
    b.add(r).shr::<16>().or(quiet)
}

/// The runs of indices `first ..` of `n` elements with the same upper half: the run's first
/// offset, its length and the key of its upper half.
#[inline(always)]
fn key_run(key: SrKey, first: u64, n: usize, done: usize) -> (usize, u32, u32) {
    let at = first + done as u64;
    let run = ((1u64 << 32) - u64::from(at as u32)).min((n - done) as u64) as usize;
    (run, at as u32, key.key((at >> 32) as u32))
}

/// Narrows `src` into `dst` (the same length) with stochastic rounding; element `j` has index
/// `first + j`.
#[inline(always)]
pub(crate) fn encode_bf16_sr(key: SrKey, first: u64, src: &[f32], dst: &mut [u16]) {
    let dst = &mut dst[..src.len()];
    let high = key.stream.shift() != 0;
    let mut done = 0;
    while done < src.len() {
        let (run, lo, k) = key_run(key, first, src.len(), done);
        let (s, d) = (&src[done..done + run], &mut dst[done..done + run]);
        let r = |j: usize| mix32(lo.wrapping_add(j as u32) ^ k);
        // One loop per half, so that each vectorizes with a constant shift.
        if high {
            for (j, (d, &x)) in d.iter_mut().zip(s).enumerate() {
                *d = bf16_stochastic(x, r(j) >> 16);
            }
        } else {
            for (j, (d, &x)) in d.iter_mut().zip(s).enumerate() {
                *d = bf16_stochastic(x, r(j) & 0xffff);
            }
        }
        done += run;
    }
}

/// [`encode_bf16_sr`] of the two buffers of a pair at once, one hash per element: `a` (the
/// stream of `key`, which must be the pair's first: M or VMax) into `da`, its partner `b` into
/// `db`. All four lengths equal.
#[inline(always)]
pub(crate) fn encode_bf16_sr2(
    key: SrKey,
    first: u64,
    [a, b]: [&[f32]; 2],
    [da, db]: [&mut [u16]; 2],
) {
    let n = a.len();
    let (b, da, db) = (&b[..n], &mut da[..n], &mut db[..n]);
    let mut done = 0;
    while done < n {
        let (run, lo, k) = key_run(key, first, n, done);
        let src = a[done..done + run].iter().zip(&b[done..done + run]);
        let dst = da[done..done + run]
            .iter_mut()
            .zip(&mut db[done..done + run]);
        for (j, ((da, db), (&x, &y))) in dst.zip(src).enumerate() {
            let r = mix32(lo.wrapping_add(j as u32) ^ k);
            *da = bf16_stochastic(x, r & 0xffff);
            *db = bf16_stochastic(y, r >> 16);
        }
        done += run;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pair encoder is the two single encoders, across the 2^32 boundary of the index.
    #[test]
    fn pair_encoder_is_two_single_encoders() {
        let x: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.37).sin() * 1e-3).collect();
        let y: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.11).cos() + 2.0).collect();
        for (first, pair) in [
            (0u64, Stream::M),
            ((1 << 32) - 300, Stream::VMax),
            (7 << 40, Stream::M),
        ] {
            let key = SrKey {
                seed: 5,
                step: 9,
                stream: pair,
            };
            let (mut a, mut b) = (vec![0u16; 1000], vec![0u16; 1000]);
            encode_bf16_sr2(key, first, [&x, &y], [&mut a, &mut b]);
            let (mut a1, mut b1) = (vec![0u16; 1000], vec![0u16; 1000]);
            encode_bf16_sr(key, first, &x, &mut a1);
            let partner = SrKey {
                stream: pair.partner(),
                ..key
            };
            encode_bf16_sr(partner, first, &y, &mut b1);
            assert_eq!((a, b), (a1, b1), "first {first}");
        }
    }

    /// The lane encoders with one lane are the element encoders with stochastic rounding, on
    /// hostile values (zeros, subnormals, the block's maximum, Inf, NaN, negatives) and random
    /// bits at both ends. Finite values above the scale are outside the lane encoders' domain
    /// (a scale is its block's largest finite magnitude), which leaves out their clamp.
    #[test]
    fn q8_lane_encoders_are_the_element_encoders() {
        let xs = [
            0.0f32,
            -0.0,
            1e-45,
            -1e-45,
            1.17e-38,
            1e-20,
            3e-6,
            0.25,
            -0.7,
            1.0,
            -1.0,
            1.0000001,
            3.4e38,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            -f32::NAN,
            f32::from_bits(0x7f80_0001),
        ];
        for scale in [1.0f32, 0.7, 1e-40, 3e38, 0.0] {
            let (pre, inv) = q8_factors(scale);
            for x in xs
                .into_iter()
                .filter(|x| !(x.abs() > scale && scale > 0.0 && x.is_finite()))
            {
                for r in [0u32, 1, 0x7fff, 0x8000, 0xfffe, 0xffff] {
                    let s = u32::from(q8_encode_signed(x, pre, inv, Some(r)));
                    let u = u32::from(q8_encode_unsigned(x, pre, inv, Some(r)));
                    let ls = q8_lanes::<f32>(Q8Code::Signed, x, pre, inv, r);
                    let lu = q8_lanes::<f32>(Q8Code::Unsigned, x, pre, inv, r);
                    assert_eq!((ls, lu), (s, u), "x {x:e} scale {scale:e} r {r}");
                }
            }
        }
    }

    /// The lane decoders with one lane are the element decoders: every code, with scales of
    /// every kind (zero, subnormal, normal, the largest finite).
    #[test]
    fn q8_lane_decoders_are_the_element_decoders() {
        for scale in [0.0f32, 1e-45, 1e-40, 1.17e-38, 3e-6, 0.7, 1.0, 3.4e38] {
            for c in 0..=255u8 {
                let (s, u) = (q8_decode_signed(c, scale), q8_decode_unsigned(c, scale));
                let ls = q8_decode_lanes::<f32>(Q8Code::Signed, u32::from(c), scale);
                let lu = q8_decode_lanes::<f32>(Q8Code::Unsigned, u32::from(c), scale);
                assert_eq!(
                    (ls.to_bits(), lu.to_bits()),
                    (s.to_bits(), u.to_bits()),
                    "code {c} scale {scale:e}"
                );
            }
        }
    }

    /// The 8-bit pair encoder is the two single encoders (every pair of codes, across the 2^32
    /// boundary of the index, a short last block).
    #[test]
    fn q8_pair_encoder_is_two_single_encoders() {
        use Q8Code::{Signed as S, Unsigned as U};
        let n = 3 * Q8_BLOCK + 77;
        let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin() * 1e-3).collect();
        let y: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos() + 1.5).collect();
        for code in [[S, U], [U, S], [S, S], [U, U]] {
            for (first, pair) in [(0u64, Stream::M), ((1 << 32) - 300, Stream::VMax)] {
                let key = SrKey {
                    seed: 5,
                    step: 9,
                    stream: pair,
                };
                let nb = q8_block_count(n);
                let (mut a, mut b) = (vec![0u8; n], vec![0u8; n]);
                let (mut sa, mut sb) = (vec![0f32; nb], vec![0f32; nb]);
                encode_q8_sr2::<f32>(
                    code,
                    key,
                    first,
                    [&x, &y],
                    [&mut a, &mut b],
                    [&mut sa, &mut sb],
                );
                let (mut a1, mut b1) = (vec![0u8; n], vec![0u8; n]);
                let (mut sa1, mut sb1) = (vec![0f32; nb], vec![0f32; nb]);
                encode_q8(code[0], Some((key, first)), &x, &mut a1, &mut sa1);
                let partner = SrKey {
                    stream: pair.partner(),
                    ..key
                };
                encode_q8(code[1], Some((partner, first)), &y, &mut b1, &mut sb1);
                assert_eq!((a, b, sa, sb), (a1, b1, sa1, sb1), "{code:?} first {first}");
            }
        }
    }
}
