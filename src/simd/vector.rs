//! The vector abstraction every kernel is written over. Every operation is exactly rounded
//! IEEE-754 (add, sub, mul, div, sqrt, compare-select): no FMA, no approximate reciprocal or
//! rsqrt. The same sequence of operations therefore gives the same bits on every tier.

/// Lanes of the f64 accumulator used by the sum of squares, on every tier (the fixed lane
/// layout of the determinism contract: element `i` of a block goes to lane `i % 16`).
pub(crate) const SUMSQ_LANES: usize = 16;

/// A vector of f32 lanes. `f32` itself implements it with one lane (the scalar tier).
///
/// `max` and `min` are defined as compare-and-select, `max(a, b) = if a > b { a } else { b }`
/// and `min(a, b) = if a < b { a } else { b }`, which is what `maxps` / `minps` do: when either
/// input is NaN the result is `b`. Kernels put the value that may be NaN second, so NaN passes
/// through a clamp unchanged on every tier. `select_gt` is the same compare with any two
/// values to choose from (Rprop's step factors, the sign function in `kernels::ops`).
pub(crate) trait Vf32: Copy {
    /// Number of f32 lanes.
    const LANES: usize;
    /// Whether the fused loops get one copy per combination of their switches on this tier
    /// (`specialize!`): the vector tiers, where a tested flag costs a vector instruction per
    /// element. The scalar tier (and so every tier's heads and tails) runs the one copy that
    /// tests its flags. So does every tier of an unoptimized build (opt-level 0, `build.rs`),
    /// whose specialized copies would not share stack slots and need megabytes of stack.
    const SPECIALIZED: bool = Self::LANES > 1 && !cfg!(flatopt_unoptimized);
    /// f64 accumulator of [`SUMSQ_LANES`] lanes.
    type Acc: Copy;
    /// The integer vector of as many `u32` lanes.
    type U: Vu32;

    /// The lanes' bit patterns.
    fn to_bits(self) -> Self::U;
    /// The lanes whose bit patterns are `u`'s (the inverse of [`Vf32::to_bits`]).
    fn from_bits(u: Self::U) -> Self;

    fn splat(x: f32) -> Self;
    /// Loads `LANES` values from the start of `s` (panics if `s` is shorter).
    fn load(s: &[f32]) -> Self;
    /// Stores `LANES` values to the start of `s` (panics if `s` is shorter).
    fn store(self, s: &mut [f32]);
    fn add(self, o: Self) -> Self;
    fn sub(self, o: Self) -> Self;
    fn mul(self, o: Self) -> Self;
    fn div(self, o: Self) -> Self;
    fn sqrt(self) -> Self;
    fn max(self, o: Self) -> Self;
    fn min(self, o: Self) -> Self;
    /// `|x|`: the sign bit cleared (NaN stays NaN, `-0` becomes `+0`), exact on every tier.
    fn abs(self) -> Self;
    /// Per lane `if self > o { a } else { b }` (an ordered compare: false when either input is
    /// NaN, so a NaN comparison selects `b`).
    fn select_gt(self, o: Self, a: Self, b: Self) -> Self;
    /// Per lane `if keep != 0 { self * o } else { +0 }`: a product kept only where an integer
    /// lane is not 0 (the 8-bit codes' value 0, `kernels::codec`), one masked multiplication
    /// on AVX-512.
    fn mul_if(self, o: Self, keep: Self::U) -> Self;

    /// Widens `LANES` bf16 values (bit patterns) from the start of `s`, exactly as
    /// `half::bf16_to_f32` does (panics if `s` is shorter).
    fn load_bf16(s: &[u16]) -> Self;
    /// Widens `LANES` fp16 values (bit patterns) from the start of `s`, exactly as
    /// `half::f16_to_f32` does (panics if `s` is shorter).
    fn load_f16(s: &[u16]) -> Self;
    /// Narrows to bf16 into the start of `s`, bit for bit as `half::f32_to_bf16` does (panics
    /// if `s` is shorter).
    fn store_bf16(self, s: &mut [u16]);
    /// Narrows to fp16 into the start of `s`, bit for bit as `half::f32_to_f16` does (panics if
    /// `s` is shorter).
    fn store_f16(self, s: &mut [u16]);

    fn acc_zero() -> Self::Acc;
    /// Adds `(x[j] as f64)^2` to lane `j`, for `j` in `0..16` (panics if `x` is shorter).
    fn acc_add_squares(acc: Self::Acc, x: &[f32]) -> Self::Acc;
    fn acc_lanes(acc: Self::Acc) -> [f64; SUMSQ_LANES];
    /// The accumulator holding `l[j]` in lane `j`, for `j` in `0..16` (panics if `l` is
    /// shorter): the inverse of [`Vf32::acc_lanes`].
    fn acc_load(l: &[f64]) -> Self::Acc;
    /// Lane by lane `a + b`.
    fn acc_add(a: Self::Acc, b: Self::Acc) -> Self::Acc;
}

/// A vector of `u32` lanes, as many as its [`Vf32`]'s (`Vf32::U`): the integer operations of
/// the compressed-state codecs (the stochastic rounding hash, bf16 bit patterns).
/// Arithmetic wraps, shifts are logical, compares are unsigned; every operation is exact, so
/// every tier computes the same bits.
pub(crate) trait Vu32: Copy {
    /// Number of lanes.
    const LANES: usize;

    fn splat(x: u32) -> Self;
    /// Lane `j` is `base + j` (wrapping).
    fn index(base: u32) -> Self;
    fn add(self, o: Self) -> Self;
    /// The low 32 bits of the product.
    fn mul_lo(self, o: Self) -> Self;
    fn and(self, o: Self) -> Self;
    fn or(self, o: Self) -> Self;
    fn xor(self, o: Self) -> Self;
    /// Logical shift right by `N` (`N < 32`).
    fn shr<const N: i32>(self) -> Self;
    /// Shift left by `N` (`N < 32`).
    fn shl<const N: i32>(self) -> Self;
    /// Per lane `if self < o { a } else { b }`.
    fn select_lt(self, o: Self, a: Self, b: Self) -> Self;
    /// Per lane the larger (unsigned).
    fn max(self, o: Self) -> Self;
    /// The largest lane (unsigned).
    fn max_lane(self) -> u32;
    /// Zero-extends `LANES` bytes from the start of `s` into the lanes (panics if `s` is
    /// shorter).
    fn load_u8(s: &[u8]) -> Self;
    /// Stores the low 16 bits of each lane to the start of `s` (panics if `s` is shorter).
    fn store_u16(self, s: &mut [u16]);
    /// Stores the low 8 bits of each lane to the start of `s` (panics if `s` is shorter).
    fn store_u8(self, s: &mut [u8]);
    /// Stores the low 8 bits of each lane of `x[0]`, then `x[1]`, `x[2]` and `x[3]`, to the
    /// start of `s` (panics if `s` is shorter than `4 * LANES`).
    #[inline(always)]
    fn store_u8x4(x: [Self; 4], s: &mut [u8]) {
        for (j, x) in x.into_iter().enumerate() {
            x.store_u8(&mut s[j * Self::LANES..]);
        }
    }
    /// Stores the low 16 bits of each lane of `a`, then of `b`, to the start of `s` (panics if
    /// `s` is shorter than `2 * LANES`).
    #[inline(always)]
    fn store_u16x2(a: Self, b: Self, s: &mut [u16]) {
        a.store_u16(s);
        b.store_u16(&mut s[Self::LANES..]);
    }
}
