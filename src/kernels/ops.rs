//! The standalone elementwise operations ([`Op`]), written once, generic over [`Vf32`], and the
//! two vector steps they share with the fused pass (value clipping, the Lookahead pull).

use crate::simd::Vf32;

/// Value clipping, `min(max(x, lo), hi)`. The possibly-NaN value goes second so that NaN
/// passes through on every tier (see `Vf32::max`). Shared by the fused pass and `Op::ClipValue`.
#[inline(always)]
pub(super) fn clamp<V: Vf32>(x: V, lo: V, hi: V) -> V {
    hi.min(lo.max(x))
}

/// The Lookahead pull of slow weights `s` toward fast weights `p`: `s + alpha*(p - s)`. Shared by
/// the fused pass and `Op::Sync`, so both round identically.
#[inline(always)]
pub(super) fn pull<V: Vf32>(s: V, p: V, alpha: V) -> V {
    s.add(alpha.mul(p.sub(s)))
}

/// The sign function: 1 for `x > 0`, -1 for `x < 0`, `x` itself otherwise (a signed zero or
/// NaN), built from two ordered compares so that every tier selects the same lanes.
#[inline(always)]
pub(crate) fn sign<V: Vf32>(x: V) -> V {
    let zero = V::splat(0.0);
    x.select_gt(zero, V::splat(1.0), zero.select_gt(x, V::splat(-1.0), x))
}

/// A standalone elementwise operation, for hosts that compose their own pipeline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Op {
    /// `x *= s`.
    Scale(f32),
    /// `x = min(max(x, -c), c)` (NaN stays NaN).
    ClipValue(f32),
    /// Lookahead sync of fast weights `x` and slow weights `y`: `y = y + alpha*(x - y); x = y`.
    Sync(f32),
}

/// Applies `op` to `x` (and `y` for [`Op::Sync`], which must then have `x`'s length).
///
/// As in the fused pass, a scalar head runs up to the first vector-aligned element of `x`, so
/// that the vector loads and stores do not straddle cache lines (with 64-byte AVX-512 vectors,
/// every access of a misaligned buffer would); the operations per element are the same on
/// either path, so the split never changes a result.
#[inline(always)]
pub(crate) fn elementwise<V: Vf32>(op: Op, x: &mut [f32], y: &mut [f32]) {
    let n = x.len();
    let head = if V::LANES > 1 {
        x.as_ptr().align_offset(V::LANES * 4).min(n)
    } else {
        0
    };
    let split = n - (n - head) % V::LANES;
    elementwise_span::<f32>(op, x, y, 0, head);
    elementwise_span::<V>(op, x, y, head, split);
    elementwise_span::<f32>(op, x, y, split, n);
}

#[inline(always)]
fn elementwise_span<V: Vf32>(op: Op, x: &mut [f32], y: &mut [f32], start: usize, end: usize) {
    let mut i = start;
    match op {
        Op::Scale(s) => {
            let s = V::splat(s);
            while i < end {
                V::load(&x[i..]).mul(s).store(&mut x[i..]);
                i += V::LANES;
            }
        }
        Op::ClipValue(c) => {
            let (lo, hi) = (V::splat(-c), V::splat(c));
            while i < end {
                clamp(V::load(&x[i..]), lo, hi).store(&mut x[i..]);
                i += V::LANES;
            }
        }
        Op::Sync(alpha) => {
            let alpha = V::splat(alpha);
            while i < end {
                let s = V::load(&y[i..]);
                let s = pull(s, V::load(&x[i..]), alpha);
                s.store(&mut y[i..]);
                s.store(&mut x[i..]);
                i += V::LANES;
            }
        }
    }
}
