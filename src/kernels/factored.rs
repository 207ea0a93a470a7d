//! Adafactor's passes over one buffer (`docs/numerics.md`, "Adafactor"). Its update needs, per
//! buffer, reductions over every element before any parameter is written: the row and column
//! sums of the squared gradients (factored buffers), the sum of squares of the update direction
//! `u` (clipping by its RMS) and of the parameters (the parameter scale). Every sum is taken in
//! a fixed order: blocks of [`SUMSQ_BLOCK`] elements (of a row, for a factored buffer) summed
//! by the tier's fixed-order block sum of squares and added in block order; column sums added
//! row by row in f64. So results are the same on every tier and thread count. On the engine's
//! pool a large factored buffer's passes other than the column sums run on two threads, halves
//! of its rows (of its blocks for the parameters' sum): each block's sum is stored and the sums
//! are added in block order afterwards, exactly as on one thread.
//!
//! - Unfactored (no shape): one pass before the update, block by block, writes the new `v` and
//!   `u` into a stack scratch and sums the squares of `u` and of the parameters; then the update
//!   pass.
//! - Factored (a shape `(rows, cols)`; the buffer is `len / (rows * cols)` row-major matrices):
//!   the first pass writes each row's gradient (after clipping and coupled decay) into the
//!   scratch, sums its squares for the row and adds them per column; the new row and column
//!   averages (`v` holds `rows` row averages then `cols` column averages per matrix), each
//!   row's factor, and with clipping a second pass summing `u`'s squares; then the update pass
//!   row by row with the row's factor and the column averages in the `v` slot.

use super::mixed::{fused_mixed, Grad, GradScale, MixedBuffers, ParamCopy};
use super::plan::Plan;
use super::reduce::SUMSQ_BLOCK;
use crate::rules::Rule;
use crate::rules::{AdafactorMode as Mode, AdafactorScalars as Scalars};
use crate::simd::{Kernels, Tier};

/// One block of the scratch, aligned for the widest vector.
#[repr(align(64))]
struct Scratch([f32; SUMSQ_BLOCK]);

/// The registered shape of a factored buffer: `rows x cols` matrices, row-major.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Rows of each matrix.
    pub rows: usize,
    /// Columns of each matrix.
    pub cols: usize,
}

impl Shape {
    /// Elements of the `v` state of a factored buffer of `n` elements: `rows + cols` per
    /// matrix.
    pub fn state_len(self, n: usize) -> usize {
        (n / (self.rows * self.cols)) * (self.rows + self.cols)
    }

    /// Block sums a buffer of `n` elements with this shape stores on two threads: one per
    /// block of each row (at least one per block of the whole buffer).
    pub(crate) fn block_sums_len(self, n: usize) -> usize {
        (n / self.cols) * self.cols.div_ceil(SUMSQ_BLOCK)
    }

    /// Checks the shape against a buffer of `n` elements.
    pub fn check(self, n: usize) -> Result<(), crate::error::Error> {
        let fits = self.rows >= 1
            && self.cols >= 1
            && self.rows.checked_mul(self.cols).is_some_and(|rc| {
                n.is_multiple_of(rc) && self.rows.checked_add(self.cols).is_some()
            });
        if fits {
            Ok(())
        } else {
            Err(crate::error::Error::invalid(
                "shape",
                format!(
                    "({}, {}) for a buffer of {n} elements",
                    self.rows, self.cols
                ),
                "rows and cols must be >= 1 and rows * cols must divide the buffer's length \
                 (the buffer is len / (rows * cols) row-major matrices)",
            ))
        }
    }
}

/// Per-buffer scratch of a factored buffer, sized at registration: the column sums of one
/// matrix (`cols`), the row factors of every row (`len / cols`) and, for the passes on two
/// threads ([`apply`]'s `parallel`), the block sums (`Shape::block_sums_len`) and a copy of `v`
/// (the second half's column averages); those two may be empty (one thread).
pub(crate) struct FactorScratch<'a> {
    pub(crate) colsum: &'a mut [f64],
    pub(crate) rowf: &'a mut [f32],
    pub(crate) sums: &'a mut [f64],
    pub(crate) vcopy: &'a mut [f32],
}

/// Fewest elements of a factored buffer whose passes run on two threads.
const PARALLEL_MIN: usize = 1 << 16;

/// The scalars of `plan`'s Adafactor rule.
fn scalars(plan: &Plan) -> Scalars {
    match plan.rule {
        Rule::Adafactor { sc, .. } => sc,
        _ => unreachable!("an Adafactor plan"),
    }
}

/// `plan` running `mode` with `sc` (the passes before the update without the Lookahead sync).
fn with(plan: &Plan, mode: Mode, sc: Scalars) -> Plan {
    Plan {
        rule: Rule::Adafactor { mode, sc },
        sync_alpha: if mode == Mode::Apply {
            plan.sync_alpha
        } else {
            None
        },
        ..*plan
    }
}

/// `s[a..e]`, or an empty slice where `s` is unused (empty).
fn part(s: &mut [f32], a: usize, e: usize) -> &mut [f32] {
    if s.is_empty() {
        &mut []
    } else {
        &mut s[a..e]
    }
}

/// The fixed-order sum of squares of `x` (at most one block).
fn block_sumsq(k: &Kernels, x: &[f32]) -> f64 {
    let mut o = [0.0f64];
    (k.sumsq_partials)(x, &mut o);
    o[0]
}

/// The parameters' sum of squares, block by block in order.
fn param_sumsq(k: &Kernels, p: &[f32]) -> f64 {
    p.chunks(SUMSQ_BLOCK).map(|b| block_sumsq(k, b)).sum()
}

/// [`param_sumsq`] on two threads: each block's sum into `sums`, then added in block order
/// (the same fold).
fn param_sumsq_two(k: &Kernels, p: &[f32], sums: &mut [f64]) -> f64 {
    let blocks = p.len().div_ceil(SUMSQ_BLOCK);
    let sums = &mut sums[..blocks];
    let half = blocks / 2;
    let (p0, p1) = p.split_at(half * SUMSQ_BLOCK);
    let (s0, s1) = sums.split_at_mut(half);
    let fill = |p: &[f32], s: &mut [f64]| {
        for (b, o) in p.chunks(SUMSQ_BLOCK).zip(s.iter_mut()) {
            *o = block_sumsq(k, b);
        }
    };
    rayon::join(|| fill(p0, s0), || fill(p1, s1));
    sums.iter().copied().sum()
}

/// Every pass of Adafactor over one buffer: `plan`'s rule is `Rule::Adafactor` (mode
/// `Apply`, from `Rule::for_step`); `shape` with `scratch` for a factored buffer, whose `v`
/// holds `shape.state_len(n)` elements; else `v` has the buffer's length. On the calling
/// thread, except a factored buffer of at least [`PARALLEL_MIN`] elements with `parallel` (on
/// the engine's pool) and its scratch's block sums and `v` copy: then the passes but the column
/// sums on two threads (`rayon::join`), with the same bits. Allocates nothing.
pub(crate) fn apply(
    tier: Tier,
    plan: &Plan,
    unscale: GradScale,
    b: MixedBuffers<'_>,
    shape: Option<(Shape, FactorScratch<'_>)>,
    parallel: bool,
) {
    match shape {
        None => unfactored(tier.kernels(), plan, unscale, b),
        Some((s, scratch)) => {
            let n = b.param.len();
            let two = parallel
                && n >= PARALLEL_MIN
                && n / s.cols >= 2
                && scratch.sums.len() >= s.block_sums_len(n)
                && scratch.vcopy.len() == b.v.len();
            factored(tier.kernels(), plan, unscale, b, s, scratch, two)
        }
    }
}

fn unfactored(k: &Kernels, plan: &Plan, unscale: GradScale, b: MixedBuffers<'_>) {
    let sc = scalars(plan);
    let MixedBuffers {
        param,
        grad,
        m,
        v,
        slow,
        copy,
        ..
    } = b;
    let n = param.len();
    let pre = with(plan, Mode::Pre, sc);
    let mut x = Scratch([0.0; SUMSQ_BLOCK]);
    let (mut su, mut sp) = (0.0f64, 0.0f64);
    for a in (0..n).step_by(SUMSQ_BLOCK) {
        let e = (a + SUMSQ_BLOCK).min(n);
        let xs = &mut x.0[..e - a];
        fused_mixed(
            k,
            &pre,
            unscale,
            MixedBuffers {
                param: &mut param[a..e],
                grad: grad.slice(a, e),
                m: &mut [],
                v: &mut v[a..e],
                v_max: &mut *xs,
                slow: &mut [],
                copy: None,
            },
        );
        if sc.clip.is_some() {
            su += block_sumsq(k, xs);
        }
        if sc.param_scale {
            sp += block_sumsq(k, &param[a..e]);
        }
    }
    let upd = with(plan, Mode::Apply, sc.with_sums(su, sp, n));
    fused_mixed(
        k,
        &upd,
        unscale,
        MixedBuffers {
            param,
            grad,
            m,
            v,
            v_max: &mut [],
            slow,
            copy,
        },
    );
}

/// Runs `plan` over each row's blocks of rows `row0..` of a factored buffer (`param`, `grad`,
/// `m`, `slow` and `copy` hold those rows; `v` is the whole state): `f(row, a, e, buffers)`
/// gets the row's index (over all matrices), the block's columns `a..e` and the buffers of the
/// block (`v`: the matrix's column averages `a..e`; `v_max`: the scratch).
#[allow(clippy::too_many_arguments)]
fn rows_blocks(
    k: &Kernels,
    plan: &Plan,
    unscale: GradScale,
    s: Shape,
    row0: usize,
    param: &mut [f32],
    grad: Grad<'_>,
    m: &mut [f32],
    v: &mut [f32],
    slow: &mut [f32],
    mut copy: Option<ParamCopy<'_>>,
    mut row_plan: impl FnMut(usize, &Plan) -> Plan,
    mut after: impl FnMut(usize, usize, usize, &[f32]),
) {
    let (rows, cols) = (s.rows, s.cols);
    let n = param.len();
    let mut x = Scratch([0.0; SUMSQ_BLOCK]);
    let (_, v_used, scratch_used) = plan.rule.state_used();
    for row in row0..row0 + n / cols {
        let matrix = row / rows;
        let p = row_plan(row, plan);
        let col_avgs = matrix * (rows + cols) + rows;
        for a in (0..cols).step_by(SUMSQ_BLOCK) {
            let e = (a + SUMSQ_BLOCK).min(cols);
            let (pa, pe) = ((row - row0) * cols + a, (row - row0) * cols + e);
            let xs = &mut x.0[..e - a];
            fused_mixed(
                k,
                &p,
                unscale,
                MixedBuffers {
                    param: &mut param[pa..pe],
                    grad: grad.slice(pa, pe),
                    m: part(m, pa, pe),
                    v: if v_used {
                        &mut v[col_avgs + a..col_avgs + e]
                    } else {
                        &mut []
                    },
                    v_max: if scratch_used { &mut *xs } else { &mut [] },
                    slow: part(slow, pa, pe),
                    copy: copy.as_mut().map(|c| ParamCopy {
                        half: c.half,
                        out: &mut c.out[pa..pe],
                    }),
                },
            );
            after(row, a, e, xs);
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn factored(
    k: &Kernels,
    plan: &Plan,
    unscale: GradScale,
    b: MixedBuffers<'_>,
    s: Shape,
    scratch: FactorScratch<'_>,
    two: bool,
) {
    let sc = scalars(plan);
    let MixedBuffers {
        param,
        grad,
        m,
        v,
        slow,
        copy,
        ..
    } = b;
    let FactorScratch {
        colsum,
        rowf,
        sums,
        vcopy,
    } = scratch;
    let (rows, cols) = (s.rows, s.cols);
    let n = param.len();
    let sp = match (sc.param_scale, two) {
        (false, _) => 0.0,
        (true, false) => param_sumsq(k, param),
        (true, true) => param_sumsq_two(k, param, sums),
    };
    // First pass: row sums into `rowf` (as f64 sums, rounded after), column sums per matrix.
    let square = with(plan, Mode::Square, sc);
    let mut row_sum = 0.0f64;
    let (b64, c64, er) = (sc.b64, sc.c64, sc.eps_root64);
    {
        let v = &mut *v;
        rows_blocks(
            k,
            &square,
            unscale,
            s,
            0,
            param,
            grad,
            &mut [],
            &mut [],
            &mut [],
            None,
            |_, p| *p,
            |row, a, e, xs| {
                let matrix = row / rows;
                let i = row % rows;
                if i == 0 && a == 0 {
                    colsum.fill(0.0);
                }
                if a == 0 {
                    row_sum = 0.0;
                }
                row_sum += block_sumsq(k, xs);
                for (c, &g) in colsum[a..e].iter_mut().zip(xs.iter()) {
                    let g = f64::from(g);
                    *c += g * g;
                }
                let base = matrix * (rows + cols);
                if e == cols {
                    let r = &mut v[base + i];
                    *r = (b64 * f64::from(*r) + c64 * (row_sum / cols as f64 + er)) as f32;
                }
                if e == cols && i == rows - 1 {
                    // The matrix's last row: its column averages and row factors.
                    let (ra, ca) = v[base..base + rows + cols].split_at_mut(rows);
                    for (c, &sum) in ca.iter_mut().zip(colsum.iter()) {
                        *c = (b64 * f64::from(*c) + c64 * (sum / rows as f64 + er)) as f32;
                    }
                    let mut total = 0.0f64;
                    for &r in ra.iter() {
                        total += f64::from(r);
                    }
                    let mean = total / rows as f64;
                    // NaN stays NaN (compare-select with the mean second).
                    let den = if sc.eps > mean { sc.eps } else { mean };
                    for (f, &r) in rowf[matrix * rows..][..rows].iter_mut().zip(ra.iter()) {
                        *f = (f64::from(r) / den) as f32;
                    }
                }
            },
        );
    }
    // The passes after the column sums: on two threads, halves of the rows, the second half
    // reading a copy of the column averages (`v`), which they only read.
    let mid = (n / cols) / 2;
    if two {
        vcopy.copy_from_slice(v);
    }
    let rowf = &*rowf;
    // With clipping, the sum of squares of `u`: block by block in row order (stored first on
    // two threads).
    let mut su = 0.0f64;
    if sc.clip.is_some() {
        let dir = with(plan, Mode::Direction, sc);
        let row_plan =
            |row: usize, p: &Plan| with(p, Mode::Direction, Scalars { r: rowf[row], ..sc });
        if two {
            let bpr = cols.div_ceil(SUMSQ_BLOCK);
            let sums = &mut sums[..(n / cols) * bpr];
            let (s0, s1) = sums.split_at_mut(mid * bpr);
            let (p0, p1) = param.split_at_mut(mid * cols);
            let (g0, g1) = grad.split_at(mid * cols);
            let half = |row0: usize, p: &mut [f32], g: Grad<'_>, v: &mut [f32], out: &mut [f64]| {
                rows_blocks(
                    k,
                    &dir,
                    unscale,
                    s,
                    row0,
                    p,
                    g,
                    &mut [],
                    v,
                    &mut [],
                    None,
                    row_plan,
                    |row, a, _, xs| out[(row - row0) * bpr + a / SUMSQ_BLOCK] = block_sumsq(k, xs),
                );
            };
            rayon::join(|| half(0, p0, g0, v, s0), || half(mid, p1, g1, vcopy, s1));
            for &x in sums.iter() {
                su += x;
            }
        } else {
            rows_blocks(
                k,
                &dir,
                unscale,
                s,
                0,
                param,
                grad,
                &mut [],
                v,
                &mut [],
                None,
                row_plan,
                |_, _, _, xs| su += block_sumsq(k, xs),
            );
        }
    }
    let sc = sc.with_sums(su, sp, n);
    let upd = with(plan, Mode::Apply, sc);
    let row_plan = |row: usize, p: &Plan| with(p, Mode::Apply, Scalars { r: rowf[row], ..sc });
    if !two {
        rows_blocks(
            k,
            &upd,
            unscale,
            s,
            0,
            param,
            grad,
            m,
            v,
            slow,
            copy,
            row_plan,
            |_, _, _, _| {},
        );
        return;
    }
    let at = mid * cols;
    let (p0, p1) = param.split_at_mut(at);
    let (g0, g1) = grad.split_at(at);
    let (m0, m1) = split(m, at);
    let (w0, w1) = split(slow, at);
    let (c0, c1) = match copy {
        Some(c) => {
            let (a, b) = c.out.split_at_mut(at);
            let half = c.half;
            (
                Some(ParamCopy { half, out: a }),
                Some(ParamCopy { half, out: b }),
            )
        }
        None => (None, None),
    };
    rayon::join(
        || {
            rows_blocks(
                k,
                &upd,
                unscale,
                s,
                0,
                p0,
                g0,
                m0,
                v,
                w0,
                c0,
                row_plan,
                |_, _, _, _| {},
            )
        },
        || {
            rows_blocks(
                k,
                &upd,
                unscale,
                s,
                mid,
                p1,
                g1,
                m1,
                vcopy,
                w1,
                c1,
                row_plan,
                |_, _, _, _| {},
            )
        },
    );
}

/// `s` split at `at`, or two empty slices where it is empty (unused).
fn split(s: &mut [f32], at: usize) -> (&mut [f32], &mut [f32]) {
    if s.is_empty() {
        (&mut [], &mut [])
    } else {
        s.split_at_mut(at)
    }
}
