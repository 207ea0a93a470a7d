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

/// The fixed-order sum of squares of `x` (at most one block: [`sumsq_partials`]'s partial),
/// with each square (exact in f64) also added to its column's sum, `cols[j] += x[j]^2`
/// (`cols.len() == x.len()`): Adafactor's row and column sums from one read of the row.
#[inline(always)]
pub(crate) fn sumsq_cols<V: Vf32>(x: &[f32], cols: &mut [f64]) -> f64 {
    debug_assert!(x.len() <= SUMSQ_BLOCK && cols.len() == x.len());
    let mut acc = V::acc_zero();
    let mut chunks = x.chunks_exact(SUMSQ_LANES);
    let mut sums = cols.chunks_exact_mut(SUMSQ_LANES);
    for (c, s) in (&mut chunks).zip(&mut sums) {
        // The squares once (exact in f64; `0 + x^2` is `x^2`), added to both sums.
        let sq = V::acc_add_squares(V::acc_zero(), c);
        acc = V::acc_add(acc, sq);
        s.copy_from_slice(&V::acc_lanes(V::acc_add(V::acc_load(s), sq)));
    }
    let mut lanes = V::acc_lanes(acc);
    let rest = chunks.remainder();
    for ((lane, &v), s) in lanes.iter_mut().zip(rest).zip(sums.into_remainder()) {
        let d = f64::from(v);
        *lane += d * d;
        *s += d * d;
    }
    fold_lanes(lanes)
}

/// Folds the 16 lanes pairwise: ((l0+l1)+(l2+l3)) + ... in a fixed tree.
#[inline(always)]
pub(crate) fn fold_lanes(mut l: [f64; SUMSQ_LANES]) -> f64 {
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

#[cfg(test)]
mod tests {
    use super::SUMSQ_BLOCK;
    use crate::simd::Tier;

    /// `sumsq_cols` on every tier available: the block's sum of squares bit for bit as
    /// `sumsq_partials` takes it, and each column's sum exactly `cols[j] + x[j]^2` in f64, over
    /// lengths around the lane count and the block, with hostile values (subnormals, the
    /// largest finite, Inf, NaN) and misaligned starts.
    #[test]
    fn sumsq_cols_is_the_block_sum_and_the_column_sums() {
        let mut x: Vec<f32> = (0..4200)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.013)
            .collect();
        for (i, v) in [
            1e-45f32,
            -1.17e-38,
            3.4e38,
            -2.5e-20,
            f32::INFINITY,
            f32::NAN,
        ]
        .into_iter()
        .enumerate()
        {
            x[1000 + 97 * i] = v;
        }
        let cols0: Vec<f64> = (0..4200).map(|i| f64::from(i as u32 % 7) * 0.5).collect();
        for tier in Tier::ALL {
            if !tier.is_available() {
                eprintln!("sumsq_cols: tier {tier} not available on this CPU, skipped");
                continue;
            }
            let k = tier.kernels();
            for (start, len) in [
                (0, 0),
                (0, 1),
                (3, 15),
                (1, 16),
                (5, 17),
                (0, 333),
                (7, SUMSQ_BLOCK),
            ] {
                let xs = &x[start..start + len];
                let mut cols = cols0[start..start + len].to_vec();
                let got = (k.sumsq_cols)(xs, &mut cols);
                let mut want = vec![0.0f64; len.div_ceil(SUMSQ_BLOCK)];
                (Tier::Scalar.kernels().sumsq_partials)(xs, &mut want);
                let want = want.first().copied().unwrap_or(0.0);
                assert_eq!(
                    got.to_bits(),
                    want.to_bits(),
                    "{tier:?} start {start} len {len}"
                );
                for (j, (&c, &v)) in cols.iter().zip(xs).enumerate() {
                    let d = f64::from(v);
                    let w = cols0[start + j] + d * d;
                    assert_eq!(c.to_bits(), w.to_bits(), "{tier:?} column {j} of len {len}");
                }
            }
        }
    }
}
