//! The fixed-order sum of squares: block partials in f64 over 16 lanes, written once, generic
//! over [`Vf32`]. Part of the determinism contract (see [`SUMSQ_BLOCK`]).

use crate::simd::{Vf32, SUMSQ_LANES};

/// Elements per block of the sum of squares. Each block is summed on its own (16 f64 lanes,
/// element `i` of the block into lane `i % 16`, lanes folded pairwise), and block partials are
/// then added in block order. Part of the determinism contract: changing it changes results.
pub const SUMSQ_BLOCK: usize = 4096;

/// Writes the sum of squares of each [`SUMSQ_BLOCK`]-element block of `x` into `partials`
/// (`partials.len()` must be `x.len().div_ceil(SUMSQ_BLOCK)`).
#[inline(always)]
pub(crate) fn sumsq_partials<V: Vf32>(x: &[f32], partials: &mut [f64]) {
    for (block, out) in x.chunks(SUMSQ_BLOCK).zip(partials.iter_mut()) {
        let mut acc = V::acc_zero();
        let mut chunks = block.chunks_exact(SUMSQ_LANES);
        for c in &mut chunks {
            acc = V::acc_add_squares(acc, c);
        }
        let mut lanes = V::acc_lanes(acc);
        for (lane, &v) in lanes.iter_mut().zip(chunks.remainder()) {
            let d = f64::from(v);
            *lane += d * d;
        }
        *out = fold_lanes(lanes);
    }
}

/// Folds the 16 lanes pairwise: ((l0+l1)+(l2+l3)) + ... in a fixed tree.
#[inline(always)]
fn fold_lanes(mut l: [f64; SUMSQ_LANES]) -> f64 {
    let mut width = SUMSQ_LANES;
    while width > 1 {
        width /= 2;
        for j in 0..width {
            l[j] = l[2 * j] + l[2 * j + 1];
        }
    }
    l[0]
}

/// Number of sum-of-squares blocks of a buffer of `len` elements.
pub fn sumsq_block_count(len: usize) -> usize {
    len.div_ceil(SUMSQ_BLOCK)
}
