//! The table of kernel functions one tier exports: every kernel of `crate::kernels`
//! instantiated for the tier's vector type. Callers get a table from `Tier::kernels` and call
//! through it; nothing above this layer knows which instruction sets exist.

use super::Tier;
use crate::kernels::{
    Bf16Pass, Buffers, GradScale, Half, MixedBuffers, Op, Plan, Q8Code, Q8Pass, SrKey,
};

/// The pair encoder's signature: the pair's key, the index of the first element, the pair's
/// two value slices and their two bf16 outputs (all four lengths equal).
pub(crate) type EncodePair = fn(SrKey, u64, [&[f32]; 2], [&mut [u16]; 2]);

/// The 8-bit encoder's signature: the code, the stochastic rounding's key and first index (or
/// `None`: to nearest), the values, the codes and the block scales.
pub(crate) type EncodeQ8 = fn(Q8Code, Option<(SrKey, u64)>, &[f32], &mut [u8], &mut [f32]);

/// The 8-bit pair encoder's signature (`crate::kernels::encode_q8_sr2`): the two codes, the
/// pair's key, the index of the first element, the two value slices, their codes and scales.
pub(crate) type EncodeQ8Pair =
    fn([Q8Code; 2], SrKey, u64, [&[f32]; 2], [&mut [u8]; 2], [&mut [f32]; 2]);

/// Adafactor's factored direction sums' signature (`crate::kernels::direction_sums`).
pub(crate) type DirectionSums = fn(&Plan, f32, &[f32], &[f32], &[f32], &mut [f64]);

/// Adafactor's factored square sums' signature (`crate::kernels::square_sums`).
pub(crate) type SquareSums = fn(&Plan, &[f32], &[f32], &mut [f64], &mut [f64]);

/// The streaming pass before LARS's, NovoGrad's and LAMB's updates' signature
/// (`crate::kernels::pre_sums`): the pass's plan, the parameters and gradients, the state it
/// updates (LAMB's `m` and `v`, else empty), two sums per block.
pub(crate) type PreSums = fn(&Plan, [&[f32]; 2], [&mut [f32]; 2], &mut [f64]);

/// One tier's kernels. Adding a kernel: write it generic over `Vf32` in `crate::kernels`, add
/// its field here and its line to each tier's table (`table!` below and the scalar and portable
/// tables).
#[derive(Debug)]
pub(crate) struct Kernels {
    /// The tier whose code this is.
    pub tier: Tier,
    /// The fused update of one buffer (`crate::kernels::fused`); lengths already checked.
    pub fused: fn(&Plan, Buffers<'_>),
    /// The fused update over bf16 moments rounded stochastically
    /// (`crate::kernels::fused_bf16`).
    pub fused_bf16: fn(&Plan, Bf16Pass<'_>),
    /// The fused update over 8-bit moments (`crate::kernels::fused_q8`).
    pub fused_q8: fn(&Plan, Q8Pass<'_>),
    /// The mixed-precision pass of the rules whose loop reads 16-bit gradients and writes the
    /// 16-bit copy itself (`crate::kernels::fused_mixed_io`); lengths already checked.
    pub fused_mixed: fn(&Plan, GradScale, MixedBuffers<'_>),
    /// Whether every 16-bit value is finite (`crate::kernels::half_all_finite`).
    pub half_finite: fn(Half, &[u16]) -> bool,
    /// Block partial sums of squares (`crate::kernels::sumsq_partials`).
    pub sumsq_partials: fn(&[f32], &mut [f64]),
    /// One block's sum of squares, each square also added to its column's sum
    /// (`crate::kernels::sumsq_cols`).
    pub sumsq_cols: fn(&[f32], &mut [f64]) -> f64,
    /// Adafactor's factored direction, block sums of squares of one row's part
    /// (`crate::kernels::direction_sums`): the plan, the row factor, the row's parameters,
    /// gradients and column factors, one sum per block.
    pub direction_sums: DirectionSums,
    /// Adafactor's factored `Square` pass over one row's part (`crate::kernels::square_sums`):
    /// the plan, the row's parameters and gradients, its column sums, one sum per block.
    pub square_sums: SquareSums,
    /// The pass before LARS's, NovoGrad's and LAMB's updates over f32 gradients without a
    /// loss scale, summing as it streams (`crate::kernels::pre_sums`).
    pub pre_sums: PreSums,
    /// A standalone elementwise operation (`crate::kernels::elementwise`).
    pub elementwise: fn(Op, &mut [f32], &mut [f32]),
    /// 16-bit floats (bit patterns) widened to f32 (`crate::kernels::widen`); lengths equal.
    pub widen: fn(Half, &[u16], &mut [f32]),
    /// f32 narrowed to 16-bit floats (`crate::kernels::narrow`); lengths equal.
    pub narrow: fn(Half, &[f32], &mut [u16]),
    /// Gradients divided by a loss scale in place (`crate::kernels::unscale`).
    pub unscale: fn(GradScale, &mut [f32]),
    /// f32 state quantized to the 8-bit blockwise code (`crate::kernels::encode_q8`): codes
    /// as long as the values, one scale per block.
    /// Rounded to nearest, or stochastically with a key and the index of the first element.
    pub encode_q8: EncodeQ8,
    /// 8-bit blockwise state decoded to f32 (`crate::kernels::decode_q8`).
    pub decode_q8: fn(Q8Code, &[u8], &[f32], &mut [f32]),
    /// f32 narrowed to bf16 with stochastic rounding (`crate::kernels::encode_bf16_sr`): the
    /// key, the index of the first element, the values, the bf16 patterns (equal lengths).
    pub encode_bf16_sr: fn(SrKey, u64, &[f32], &mut [u16]),
    /// Two buffers of a stream pair narrowed to bf16 with one hash per element
    /// (`crate::kernels::encode_bf16_sr2`).
    pub encode_bf16_sr2: EncodePair,
    /// Two buffers of a stream pair quantized to 8 bits with one hash per element.
    pub encode_q8_sr2: EncodeQ8Pair,
}

/// `table!(TIER, V, "features")` defines, in a tier module, `static TABLE: Kernels` of every
/// kernel instantiated for vector type `V` inside `#[target_feature(enable = "features")]`
/// functions. The table's entries are safe functions that enter those without a check, so the
/// module must hand `TABLE` out only after detecting the features (its `table()` does).
#[cfg(target_arch = "x86_64")]
macro_rules! table {
    ($tier:expr, $v:ty, $features:literal) => {
        mod instances {
            use super::*;
            use crate::kernels::{
                self, Bf16Pass, Buffers, GradScale, Half, MixedBuffers, Op, Plan, Q8Code, Q8Pass,
                SrKey,
            };

            #[target_feature(enable = $features)]
            fn fused(plan: &Plan, b: Buffers<'_>) {
                kernels::fused::<$v>(plan, b)
            }
            #[target_feature(enable = $features)]
            fn fused_bf16(plan: &Plan, b: Bf16Pass<'_>) {
                kernels::fused_bf16::<$v>(plan, b)
            }
            #[target_feature(enable = $features)]
            fn fused_q8(plan: &Plan, b: Q8Pass<'_>) {
                kernels::fused_q8::<$v>(plan, b)
            }
            #[target_feature(enable = $features)]
            fn fused_mixed(plan: &Plan, scale: GradScale, b: MixedBuffers<'_>) {
                kernels::fused_mixed_io::<$v>(plan, scale, b)
            }
            #[target_feature(enable = $features)]
            fn half_finite(ty: Half, h: &[u16]) -> bool {
                kernels::half_all_finite(ty, h)
            }
            #[target_feature(enable = $features)]
            fn sumsq_partials(x: &[f32], partials: &mut [f64]) {
                kernels::sumsq_partials::<$v>(x, partials)
            }
            #[target_feature(enable = $features)]
            fn sumsq_cols(x: &[f32], cols: &mut [f64]) -> f64 {
                kernels::sumsq_cols::<$v>(x, cols)
            }
            #[target_feature(enable = $features)]
            fn direction_sums(
                plan: &Plan,
                r: f32,
                param: &[f32],
                grad: &[f32],
                colf: &[f32],
                out: &mut [f64],
            ) {
                kernels::direction_sums::<$v>(plan, r, param, grad, colf, out)
            }
            #[target_feature(enable = $features)]
            fn square_sums(
                plan: &Plan,
                param: &[f32],
                grad: &[f32],
                colsum: &mut [f64],
                out: &mut [f64],
            ) {
                kernels::square_sums::<$v>(plan, param, grad, colsum, out)
            }
            #[target_feature(enable = $features)]
            fn pre_sums(pre: &Plan, io: [&[f32]; 2], state: [&mut [f32]; 2], sums: &mut [f64]) {
                kernels::pre_sums::<$v>(pre, io, state, sums)
            }
            #[target_feature(enable = $features)]
            fn elementwise(op: Op, x: &mut [f32], y: &mut [f32]) {
                kernels::elementwise::<$v>(op, x, y)
            }
            #[target_feature(enable = $features)]
            fn widen(ty: Half, src: &[u16], dst: &mut [f32]) {
                kernels::widen::<$v>(ty, src, dst)
            }
            #[target_feature(enable = $features)]
            fn narrow(ty: Half, src: &[f32], dst: &mut [u16]) {
                kernels::narrow::<$v>(ty, src, dst)
            }
            #[target_feature(enable = $features)]
            fn unscale(scale: GradScale, x: &mut [f32]) {
                kernels::unscale::<$v>(scale, x)
            }
            #[target_feature(enable = $features)]
            fn encode_q8(
                code: Q8Code,
                sr: Option<(SrKey, u64)>,
                src: &[f32],
                codes: &mut [u8],
                scales: &mut [f32],
            ) {
                kernels::encode_q8(code, sr, src, codes, scales)
            }
            #[target_feature(enable = $features)]
            fn decode_q8(code: Q8Code, codes: &[u8], scales: &[f32], dst: &mut [f32]) {
                kernels::decode_q8::<$v>(code, codes, scales, dst)
            }
            #[target_feature(enable = $features)]
            fn encode_bf16_sr(key: SrKey, first: u64, src: &[f32], dst: &mut [u16]) {
                kernels::encode_bf16_sr(key, first, src, dst)
            }
            #[target_feature(enable = $features)]
            fn encode_bf16_sr2(key: SrKey, first: u64, src: [&[f32]; 2], dst: [&mut [u16]; 2]) {
                kernels::encode_bf16_sr2(key, first, src, dst)
            }
            #[target_feature(enable = $features)]
            fn encode_q8_sr2(
                code: [Q8Code; 2],
                key: SrKey,
                first: u64,
                src: [&[f32]; 2],
                codes: [&mut [u8]; 2],
                scales: [&mut [f32]; 2],
            ) {
                kernels::encode_q8_sr2::<$v>(code, key, first, src, codes, scales)
            }

            pub(super) static TABLE: $crate::simd::Kernels = $crate::simd::Kernels {
                tier: $tier,
                // SAFETY: runs only through `TABLE`, which the tier module's `table()` returns
                // only after detecting `$features` on this CPU.
                fused: |plan, b| unsafe { fused(plan, b) },
                // SAFETY: as for `fused`.
                fused_bf16: |plan, b| unsafe { fused_bf16(plan, b) },
                // SAFETY: as for `fused`.
                fused_q8: |plan, b| unsafe { fused_q8(plan, b) },
                // SAFETY: as for `fused`.
                fused_mixed: |plan, scale, b| unsafe { fused_mixed(plan, scale, b) },
                // SAFETY: as for `fused`.
                half_finite: |ty, h| unsafe { half_finite(ty, h) },
                // SAFETY: as for `fused`.
                sumsq_partials: |x, partials| unsafe { sumsq_partials(x, partials) },
                // SAFETY: as for `fused`.
                sumsq_cols: |x, cols| unsafe { sumsq_cols(x, cols) },
                // SAFETY: as for `fused`.
                direction_sums: |plan, r, param, grad, colf, out| unsafe {
                    direction_sums(plan, r, param, grad, colf, out)
                },
                // SAFETY: as for `fused`.
                square_sums: |plan, param, grad, colsum, out| unsafe {
                    square_sums(plan, param, grad, colsum, out)
                },
                // SAFETY: as for `fused`.
                pre_sums: |pre, io, state, sums| unsafe { pre_sums(pre, io, state, sums) },
                // SAFETY: as for `fused`.
                elementwise: |op, x, y| unsafe { elementwise(op, x, y) },
                // SAFETY: as for `fused`.
                widen: |ty, src, dst| unsafe { widen(ty, src, dst) },
                // SAFETY: as for `fused`.
                narrow: |ty, src, dst| unsafe { narrow(ty, src, dst) },
                // SAFETY: as for `fused`.
                unscale: |scale, x| unsafe { unscale(scale, x) },
                // SAFETY: as for `fused`.
                encode_q8: |code, sr, src, codes, scales| unsafe {
                    encode_q8(code, sr, src, codes, scales)
                },
                // SAFETY: as for `fused`.
                decode_q8: |code, codes, scales, dst| unsafe {
                    decode_q8(code, codes, scales, dst)
                },
                // SAFETY: as for `fused`.
                encode_bf16_sr: |key, first, src, dst| unsafe {
                    encode_bf16_sr(key, first, src, dst)
                },
                // SAFETY: as for `fused`.
                encode_bf16_sr2: |key, first, src, dst| unsafe {
                    encode_bf16_sr2(key, first, src, dst)
                },
                // SAFETY: as for `fused`.
                encode_q8_sr2: |code, key, first, src, codes, scales| unsafe {
                    encode_q8_sr2(code, key, first, src, codes, scales)
                },
            };
        }
        use instances::TABLE;
    };
}
#[cfg(target_arch = "x86_64")]
pub(super) use table;
