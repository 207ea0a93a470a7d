//! The kernels: each algorithm written once, generic over [`Vf32`](crate::simd), and the
//! stateless public entry points.
//!
//! Files, bottom up (each uses only the ones above it and `crate::simd`'s vector trait):
//! - `plan.rs`: [`Plan`], [`Buffers`]: the base rule's per-step scalars ([`Rule`], declared
//!   with the rules in `src/rules/`), computed in f64 and rounded to f32 once
//!   ([`Rule::for_step`]), the pipeline steps, and the length check;
//! - `ops.rs`, `reduce.rs`, `fused.rs`, `convert.rs`: the generic kernels (the standalone
//!   elementwise operations, the fixed-order sum of squares, the fused update pass's driver and
//!   the pieces every rule's loop (in `src/rules/`) is written with, the 16-bit float
//!   conversions);
//! - `mixed.rs`: the fused pass and the sum of squares with gradients in any format
//!   ([`Grad`]) divided by a loss scale ([`GradScale`]) and a 16-bit copy of the parameters
//!   ([`ParamCopy`]), chunk by chunk around the f32 kernels;
//! - `codec.rs`: the codecs of compressed optimizer state (bf16 with stochastic rounding, the
//!   8-bit blockwise code), element by element and over slices;
//! - `held.rs`: the fused pass over compressed state ([`Held`]), chunk by chunk around the
//!   f32 kernels (decode, f32 pass, encode);
//! - `trust.rs`: the two passes of the rules with per-buffer norms (LAMB, LARS, NovoGrad):
//!   the pass before the update block by block with fixed-order block sums of squares, then the
//!   update with the buffer's scalars;
//! - `factored.rs`: Adafactor's passes over one buffer (row and column sums of the squared
//!   gradients, the update's and the parameters' sums of squares, then the update);
//! - `stateless.rs`: [`apply`], [`sum_squares`], [`sum_squares_partials`], [`apply_op`],
//!   [`widen_to_f32`], [`narrow_from_f32`]: check
//!   the arguments, then call the kernel of the tier's table.
//!
//! The tiers (`crate::simd::{scalar, portable, avx2, avx512}`) instantiate the generic kernels
//! for their vector type, inside `#[target_feature]` functions where needed, and each exports
//! one table of them (`simd::Kernels`); `Tier::kernels` picks a table once.
//! The engine (`crate::engine`) builds plans from its configuration and counters and calls the
//! same tables.

mod codec;
mod convert;
mod factored;
mod fused;
mod held;
mod mixed;
mod ops;
mod plan;
mod reduce;
mod stateless;
mod trust;

pub(crate) use codec::{
    bf16_stochastic_lanes, decode_q8, encode_bf16_sr, encode_bf16_sr2, encode_q8, encode_q8_sr2,
    mix32_lanes,
};
pub use codec::{q8_block_count, Q8Code, SrKey, Stream, Q8_BLOCK};
pub use convert::Half;
pub(crate) use convert::{narrow, widen};
pub use factored::Shape;
pub(crate) use factored::{apply as apply_factored, direction_sums, square_sums, FactorScratch};
pub(crate) use fused::{fused, specialize, F32Grads, GradIo, Lanes, Off, On, Span, Switch, Window};
pub(crate) use held::{fused_bf16, fused_q8, Bf16Pass, Q8Pass};
pub use held::{q8_codes, Held, HeldBuffers, HeldRounding, StateDtype, StateRounding, HELD_CHUNK};
pub(crate) use mixed::fused_mixed_io;
pub(crate) use mixed::{half_all_finite, unscale};
pub use mixed::{AsGrad, Grad, GradScale, MixedBuffers, ParamCopy, CHUNK};
pub use ops::Op;
pub(crate) use ops::{elementwise, sign};
pub(crate) use plan::check_lengths;
pub use plan::{Buffers, Plan, Rule};
pub use reduce::{sumsq_block_count, SUMSQ_BLOCK};
pub(crate) use reduce::{sumsq_cols, sumsq_partials};
pub use stateless::{
    apply, apply_mixed, apply_op, dequantize_q8, first_non_finite, first_non_finite_grad,
    first_non_finite_unscaled, narrow_bf16_stochastic, narrow_from_f32, quantize_q8,
    quantize_q8_stochastic, sum_squares, sum_squares_partials, sum_squares_partials_mixed,
    widen_to_f32,
};
pub(crate) use stateless::{
    apply_held_unchecked, apply_mixed_unchecked_lengths, apply_unchecked_lengths, grad_scale,
    sumsq_partials_mixed_unchecked, sumsq_partials_unchecked,
};
pub(crate) use trust::{
    block_totals, grad_into_scratch, pre_blocks, pre_plan, pre_sums, update_plan, PreBuffers,
};
