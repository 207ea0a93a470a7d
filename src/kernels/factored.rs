//! Adafactor's passes over one buffer (`docs/numerics.md`, "Adafactor"). Its update needs, per
//! buffer, reductions over every element before any parameter is written: the row and column
//! sums of the squared gradients (factored buffers), the sum of squares of the update direction
//! `u` (clipping by its RMS) and of the parameters (the parameter scale). Every sum is taken in
//! a fixed order: blocks of [`SUMSQ_BLOCK`] elements (of a row, for a factored buffer) summed
//! by the tier's fixed-order block sum of squares and added in block order; column sums added
//! row by row in f64 over each half of a matrix's rows, the two halves then added. So results
//! are the same on every tier and thread count. On the engine's pool every pass over a large
//! factored buffer runs on two threads: the first pass over each large matrix on the halves of
//! its rows, the others on halves of the buffer's rows (of its blocks for the parameters' sum),
//! each block's sum stored and the sums added in block order afterwards, exactly as on one
//! thread.
//!
//! - Unfactored (no shape): one pass before the update, block by block, writes the new `v` and
//!   `u` into a stack scratch and sums the squares of `u` and of the parameters; then the update
//!   pass.
//! - Factored (a shape `(rows, cols)`; the buffer is `len / (rows * cols)` row-major matrices):
//!   the first pass writes each row's gradient (after clipping and coupled decay) into the
//!   scratch and sums its squares for the row and per column in one loop (`sumsq_cols`); then
//!   the new row and column averages (`v` holds `rows` row averages then `cols` column averages
//!   per matrix) and the row and column factors (their inverse roots, in f64), with clipping a
//!   second pass summing `u`'s squares, then the update pass row by row with the row's factor
//!   and the column factors in the `v` slot: `u = g * min(1/eps, a_i * b_j)`, no division or
//!   square root per element.

use super::fused::{pipe, specialize, Off};
use super::mixed::{fused_mixed, Grad, GradScale, MixedBuffers, ParamCopy};
use super::plan::Plan;
use super::reduce::SUMSQ_BLOCK;
use super::trust::{stream_sums, State};
use crate::rules::adafactor_direction_factored;
use crate::rules::Rule;
use crate::rules::{AdafactorMode as Mode, AdafactorScalars as Scalars};
use crate::simd::Vf32;
use crate::simd::{Kernels, Tier};

/// Sum-of-squares blocks a factored pass writes into its scratch per call of the rule's loop:
/// each call streams that many blocks of a row from memory before the sums run over them in
/// cache (the sums are per block, in block order, whatever this is). A stream that stops for
/// the sums after every block restarts cold each time: one thread read the gradients at
/// about 11 GB/s through blocks of one, against 27 GB/s for the parameters' plain sum.
const ROW_BLOCKS: usize = 4;

/// A pass's scratch of `B` elements, aligned for the widest vector: one sum block for the
/// unfactored pass, as [`rows_blocks`] sizes it for the factored ones.
#[repr(align(64))]
struct Scratch<const B: usize>([f32; B]);

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
/// matrix's two halves of rows (`2 * cols`), the row factors of every row (`len / cols`), the
/// column factors of every matrix (`len / rows`) and, for the passes on two threads
/// ([`apply`]'s `parallel`), the block sums (`Shape::block_sums_len`) and a copy of the column
/// factors (read by the second half); those two may be empty (one thread).
pub(crate) struct FactorScratch<'a> {
    pub(crate) colsum: &'a mut [f64],
    pub(crate) rowf: &'a mut [f32],
    pub(crate) colf: &'a mut [f32],
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

/// The factored direction's block sums of squares over one row's columns `a..` (whole blocks
/// of [`SUMSQ_BLOCK`] from `a`, the row's last block shorter): `u = g * min(einv, r*c)` of
/// every element, through the plan's gradient pipeline, squared and summed in the order of
/// [`block_sumsq`] over the `u` a `Direction` pass writes, so the same bits, in one read of the
/// gradients with no scratch and no pause between blocks. `param`, `grad` and `colf` (the
/// column factors) are the row's `a..`, `out` one sum per block. Only for f32 gradients
/// without a loss scale (the callers check).
#[inline(always)]
pub(crate) fn direction_sums<V: Vf32>(
    plan: &Plan,
    r: f32,
    param: &[f32],
    grad: &[f32],
    colf: &[f32],
    out: &mut [f64],
) {
    let [cs, cv, wd, _] = pipe(plan);
    let colf = &colf[..grad.len()];
    let einv = scalars(plan).einv;
    let (rv, ev) = (V::splat(r), V::splat(einv));
    let u = (
        #[inline(always)]
        |g: V, _, j: usize, _: &mut State<'_>| {
            adafactor_direction_factored(g, V::load(&colf[j..]), rv, ev)
        },
        #[inline(always)]
        |g: f32, _, j: usize, _: &mut State<'_>| adafactor_direction_factored(g, colf[j], r, einv),
    );
    let none: State<'_> = [&mut [], &mut []];
    let args = ([param, grad], none, &mut [][..], u, |b: usize, x, _| {
        out[b] = x
    });
    specialize!(@choose V, stream_sums, (plan, args, Off); cs, cv, wd)
}

/// Adafactor's factored `Square` pass over one row's columns `a..` (whole blocks of
/// [`SUMSQ_BLOCK`] from `a`, the row's last block shorter): each gradient through the plan's
/// pipeline, its square (exact in f64) added to its column's sum in `colsum` and to its
/// block's sum in `out`, as [`sumsq_cols`](super::reduce::sumsq_cols) over the scratch the
/// `Square` pass writes, so the same bits, in one read of the gradients with no scratch. Only
/// for f32 gradients without a loss scale (the callers check).
#[inline(always)]
pub(crate) fn square_sums<V: Vf32>(
    plan: &Plan,
    param: &[f32],
    grad: &[f32],
    colsum: &mut [f64],
    out: &mut [f64],
) {
    let [cs, cv, wd, _] = pipe(plan);
    let args = (
        [param, grad],
        [&mut [][..], &mut []],
        colsum,
        (
            #[inline(always)]
            |g: V, _, _, _: &mut State<'_>| g,
            #[inline(always)]
            |g: f32, _, _, _: &mut State<'_>| g,
        ),
        |b: usize, x, _| out[b] = x,
    );
    specialize!(@choose V, stream_sums, (plan, args, Off); cs, cv, wd)
}

/// Adds to `acc`, in order, the block sums of a row of `cols` columns that `f(a, e, o)` writes
/// into `o` (one per block) for columns `a..e`, in groups of up to 16 blocks on the stack.
#[inline]
fn add_row_sums(acc: &mut f64, cols: usize, mut f: impl FnMut(usize, usize, &mut [f64])) {
    let mut o = [0.0f64; 16];
    for a in (0..cols).step_by(16 * SUMSQ_BLOCK) {
        let e = (a + 16 * SUMSQ_BLOCK).min(cols);
        let o = &mut o[..(e - a).div_ceil(SUMSQ_BLOCK)];
        f(a, e, o);
        for &x in o.iter() {
            *acc += x;
        }
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
                && scratch.vcopy.len() == scratch.colf.len();
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
/// `m`, `slow` and `copy` hold those rows; `colf` the column factors of every matrix, or empty
/// where the pass reads none): `after(row, a, e, scratch)` gets the row's index (over all
/// matrices), the block's columns `a..e` and the scratch (`v_max`) the block's pass wrote.
///
/// The scratch (zeroed on the stack at each call) is sized for the pass: none where it writes
/// none (the update), one block for rows of at most one block, else [`ROW_BLOCKS`] blocks.
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
    colf: &mut [f32],
    slow: &mut [f32],
    copy: Option<ParamCopy<'_>>,
    row_plan: impl FnMut(usize, &Plan) -> Plan,
    after: impl FnMut(usize, usize, usize, &[f32]),
) {
    let args = (param, grad, m, colf, slow, copy);
    if !plan.rule.state_used().2 {
        rows_blocks_in::<0>(k, plan, unscale, s, row0, args, row_plan, after)
    } else if s.cols <= SUMSQ_BLOCK {
        rows_blocks_in::<SUMSQ_BLOCK>(k, plan, unscale, s, row0, args, row_plan, after)
    } else {
        rows_blocks_in::<{ ROW_BLOCKS * SUMSQ_BLOCK }>(
            k, plan, unscale, s, row0, args, row_plan, after,
        )
    }
}

/// The buffers [`rows_blocks`] passes on: `param`, `grad`, `m`, `colf`, `slow`, `copy`.
type RowArgs<'a, 'g> = (
    &'a mut [f32],
    Grad<'g>,
    &'a mut [f32],
    &'a mut [f32],
    &'a mut [f32],
    Option<ParamCopy<'a>>,
);

/// [`rows_blocks`] with a scratch of `B` elements (0: the pass writes none; else it writes
/// one, in calls of up to `B` elements of a row).
#[allow(clippy::too_many_arguments)]
fn rows_blocks_in<const B: usize>(
    k: &Kernels,
    plan: &Plan,
    unscale: GradScale,
    s: Shape,
    row0: usize,
    (param, grad, m, colf, slow, mut copy): RowArgs<'_, '_>,
    mut row_plan: impl FnMut(usize, &Plan) -> Plan,
    mut after: impl FnMut(usize, usize, usize, &[f32]),
) {
    let (rows, cols) = (s.rows, s.cols);
    let n = param.len();
    let mut x = Scratch([0.0; B]);
    let (_, v_used, _) = plan.rule.state_used();
    let scratch_used = B > 0;
    // Up to B elements where the pass writes the scratch (for the sums), else the whole row in
    // one call.
    let block = if scratch_used { B } else { cols };
    for row in row0..row0 + n / cols {
        let matrix = row / rows;
        let p = row_plan(row, plan);
        let cf = matrix * cols;
        for a in (0..cols).step_by(block) {
            let e = (a + block).min(cols);
            let (pa, pe) = ((row - row0) * cols + a, (row - row0) * cols + e);
            let xs = &mut x.0[..if scratch_used { e - a } else { 0 }];
            fused_mixed(
                k,
                &p,
                unscale,
                MixedBuffers {
                    param: &mut param[pa..pe],
                    grad: grad.slice(pa, pe),
                    m: part(m, pa, pe),
                    v: if v_used {
                        &mut colf[cf + a..cf + e]
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
            // `after` block by block of the sums' size, in order.
            if scratch_used {
                for (j, sub) in xs.chunks(SUMSQ_BLOCK).enumerate() {
                    let sa = a + j * SUMSQ_BLOCK;
                    after(row, sa, sa + sub.len(), sub);
                }
            } else {
                after(row, a, e, xs);
            }
        }
    }
}

/// The first pass over rows `row0..` (all in one matrix) of a factored buffer: each row's
/// gradient (after the pipeline) into the scratch, its sum of squares into its row average
/// (`ravg`, the matrix's `R` from `row0`), each element's square added to its column's sum
/// (`colsum`, zeroed first).
#[allow(clippy::too_many_arguments)]
fn square_rows(
    k: &Kernels,
    plan: &Plan,
    unscale: GradScale,
    s: Shape,
    row0: usize,
    param: &mut [f32],
    grad: Grad<'_>,
    colsum: &mut [f64],
    ravg: &mut [f32],
) {
    let sc = scalars(plan);
    let (b64, c64, er) = (sc.b64, sc.c64, sc.eps_root64);
    let cols = s.cols;
    colsum.fill(0.0);
    if let (Grad::F32(g), GradScale::One) = (grad, unscale) {
        // f32 gradients without a loss scale: the sums straight from the gradients
        // ([`square_sums`]), the same bits as the pass below; a row's block sums on the stack
        // in groups of 16 blocks, added in order.
        for (i, (pr, gr)) in param.chunks(cols).zip(g.chunks(cols)).enumerate() {
            let mut row_sum = 0.0f64;
            add_row_sums(&mut row_sum, cols, |a, e, o| {
                (k.square_sums)(plan, &pr[a..e], &gr[a..e], &mut colsum[a..e], o)
            });
            let r = &mut ravg[i];
            *r = (b64 * f64::from(*r) + c64 * (row_sum / cols as f64 + er)) as f32;
        }
        return;
    }
    let mut row_sum = 0.0f64;
    rows_blocks(
        k,
        plan,
        unscale,
        s,
        row0,
        param,
        grad,
        &mut [],
        &mut [],
        &mut [],
        None,
        |_, p| *p,
        |row, a, e, xs| {
            if a == 0 {
                row_sum = 0.0;
            }
            row_sum += (k.sumsq_cols)(xs, &mut colsum[a..e]);
            if e == cols {
                let r = &mut ravg[row - row0];
                *r = (b64 * f64::from(*r) + c64 * (row_sum / cols as f64 + er)) as f32;
            }
        },
    );
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
        colf,
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
    // First pass, matrix by matrix: the row averages, and the column sums of the first
    // `rows / 2` rows and of the others, each added row by row (on two threads for a large
    // matrix: the same sums); then the matrix's column averages and its row and column factors.
    let square = with(plan, Mode::Square, sc);
    let (b64, c64, er) = (sc.b64, sc.c64, sc.eps_root64);
    let size = rows * cols;
    let h = rows / 2;
    let (cs0, cs1) = colsum.split_at_mut(cols);
    for (i, ((pm, vm), (rf, cf))) in param
        .chunks_mut(size)
        .zip(v.chunks_mut(rows + cols))
        .zip(rowf.chunks_mut(rows).zip(colf.chunks_mut(cols)))
        .enumerate()
    {
        let gm = grad.slice(i * size, (i + 1) * size);
        let (ravg, cavg) = vm.split_at_mut(rows);
        let (r0, r1) = ravg.split_at_mut(h);
        let (p0, p1) = pm.split_at_mut(h * cols);
        let (g0, g1) = gm.split_at(h * cols);
        // Rows `row0..` of matrix `i` (its first half, or its second from row `h`).
        let half = |row0: usize, p: &mut [f32], g: Grad<'_>, cs: &mut [f64], r: &mut [f32]| {
            square_rows(k, &square, unscale, s, i * rows + row0, p, g, cs, r)
        };
        if two && size >= PARALLEL_MIN {
            rayon::join(|| half(0, p0, g0, cs0, r0), || half(h, p1, g1, cs1, r1));
        } else {
            half(0, p0, g0, cs0, r0);
            half(h, p1, g1, cs1, r1);
        }
        for ((c, &a), &b) in cavg.iter_mut().zip(cs0.iter()).zip(cs1.iter()) {
            *c = (b64 * f64::from(*c) + c64 * ((a + b) / rows as f64 + er)) as f32;
        }
        let mut total = 0.0f64;
        for &r in ravg.iter() {
            total += f64::from(r);
        }
        let mean = total / rows as f64;
        // NaN stays NaN (compare-select with the mean second).
        let den = if sc.eps > mean { sc.eps } else { mean };
        for (f, &r) in rf.iter_mut().zip(ravg.iter()) {
            *f = (den / f64::from(r)).sqrt() as f32;
        }
        for (f, &c) in cf.iter_mut().zip(cavg.iter()) {
            *f = (1.0 / f64::from(c)).sqrt() as f32;
        }
    }
    // The passes after the column sums: on two threads, halves of the rows, the second half
    // reading a copy of the column factors, which they only read.
    let mid = (n / cols) / 2;
    if two {
        vcopy.copy_from_slice(colf);
    }
    let rowf = &*rowf;
    // With clipping, the sum of squares of `u`: block by block in row order (stored first on
    // two threads).
    let mut su = 0.0f64;
    let f32_grads = match (grad, unscale) {
        (Grad::F32(g), GradScale::One) => Some(g),
        _ => None,
    };
    if let (Some(_), Some(g)) = (sc.clip, f32_grads) {
        // f32 gradients without a loss scale: the sums straight from the gradients, one call
        // per row ([`direction_sums`]), the same bits as the pass below.
        let dir = with(plan, Mode::Direction, sc);
        let bpr = cols.div_ceil(SUMSQ_BLOCK);
        let param: &[f32] = param;
        let rows_of = |row0: usize, p: &[f32], g: &[f32], cf: &[f32], out: &mut [f64]| {
            let rows_here = p.chunks(cols).zip(g.chunks(cols));
            for (i, ((pr, gr), o)) in rows_here.zip(out.chunks_mut(bpr)).enumerate() {
                let row = row0 + i;
                let c = (row / rows) * cols;
                (k.direction_sums)(&dir, rowf[row], pr, gr, &cf[c..c + cols], o);
            }
        };
        if two {
            let sums = &mut sums[..(n / cols) * bpr];
            let (s0, s1) = sums.split_at_mut(mid * bpr);
            let (p0, p1) = param.split_at(mid * cols);
            let (g0, g1) = g.split_at(mid * cols);
            rayon::join(
                || rows_of(0, p0, g0, colf, s0),
                || rows_of(mid, p1, g1, vcopy, s1),
            );
            for &x in sums.iter() {
                su += x;
            }
        } else {
            // Row by row, a row's sums added in order.
            for (row, (pr, gr)) in param.chunks(cols).zip(g.chunks(cols)).enumerate() {
                let cf = &colf[(row / rows) * cols..][..cols];
                add_row_sums(&mut su, cols, |a, e, o| {
                    (k.direction_sums)(&dir, rowf[row], &pr[a..e], &gr[a..e], &cf[a..e], o)
                });
            }
        }
    } else if sc.clip.is_some() {
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
            rayon::join(
                || half(0, p0, g0, colf, s0),
                || half(mid, p1, g1, vcopy, s1),
            );
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
                colf,
                &mut [],
                None,
                row_plan,
                |_, _, _, xs| su += block_sumsq(k, xs),
            );
        }
    }
    let sc = Scalars {
        factored: true,
        ..sc.with_sums(su, sp, n)
    };
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
            colf,
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
                colf,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// [`direction_sums`] is the `Direction` pass into a scratch followed by [`block_sumsq`] of
    /// each block, bit for bit: every tier, with and without the gradient pipeline, rows
    /// around the vector and block sizes, factors past `einv`.
    #[test]
    fn direction_sums_are_the_scratch_pass() {
        let sc = match crate::Base::adafactor().rule_for_step(3, 1e-2) {
            Rule::Adafactor { sc, .. } => sc,
            _ => unreachable!("an Adafactor rule"),
        };
        let r = 0.83f32;
        for cols in [1, 15, 16, 17, 33, 4095, 4096, 4097, 9000, 12289] {
            let g: Vec<f32> = (0..cols)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) * 1e-3)
                .collect();
            let p: Vec<f32> = (0..cols)
                .map(|i| ((i * 11 % 29) as f32 - 14.0) * 1e-2)
                .collect();
            let c: Vec<f32> = (0..cols)
                .map(|i| {
                    if i % 7 == 3 {
                        1e8
                    } else {
                        0.5 + (i % 13) as f32 * 0.37
                    }
                })
                .collect();
            for (cs, cv, wd) in [(None, None, None), (Some(0.7), Some(0.02), Some(1e-3))] {
                let plan = Plan {
                    clip_scale: cs,
                    clip_value: cv,
                    weight_decay: wd,
                    rule: Rule::Adafactor {
                        mode: Mode::Direction,
                        sc,
                    },
                    sync_alpha: None,
                };
                let dir = with(&plan, Mode::Direction, Scalars { r, ..sc });
                for tier in Tier::ALL.into_iter().filter(|t| t.is_available()) {
                    let k = tier.kernels();
                    let (mut pp, mut cc, mut u) = (p.clone(), c.clone(), vec![0.0f32; cols]);
                    let b = MixedBuffers {
                        param: &mut pp,
                        grad: Grad::F32(&g),
                        m: &mut [],
                        v: &mut cc,
                        v_max: &mut u,
                        slow: &mut [],
                        copy: None,
                    };
                    fused_mixed(k, &dir, GradScale::One, b);
                    let want: Vec<u64> = u
                        .chunks(SUMSQ_BLOCK)
                        .map(|x| block_sumsq(k, x).to_bits())
                        .collect();
                    let mut out = vec![0.0f64; cols.div_ceil(SUMSQ_BLOCK)];
                    (k.direction_sums)(&dir, r, &p, &g, &c, &mut out);
                    let got: Vec<u64> = out.iter().map(|x| x.to_bits()).collect();
                    assert_eq!(
                        got, want,
                        "{tier:?} cols {cols} pipeline {cs:?} {cv:?} {wd:?}"
                    );
                }
            }
        }
    }

    /// [`square_sums`] is the `Square` pass into a scratch followed by
    /// [`sumsq_cols`](crate::kernels::sumsq_cols) of each block, bit for bit (block sums and
    /// column sums, from column sums that are not zero): every tier, with and without the
    /// gradient pipeline, rows around the vector and block sizes.
    #[test]
    fn square_sums_are_the_scratch_pass() {
        let sc = match crate::Base::adafactor().rule_for_step(3, 1e-2) {
            Rule::Adafactor { sc, .. } => sc,
            _ => unreachable!("an Adafactor rule"),
        };
        for cols in [1, 15, 16, 17, 33, 4095, 4096, 4097, 9000, 12289] {
            let g: Vec<f32> = (0..cols)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) * 1e-3)
                .collect();
            let p: Vec<f32> = (0..cols)
                .map(|i| ((i * 11 % 29) as f32 - 14.0) * 1e-2)
                .collect();
            let start: Vec<f64> = (0..cols).map(|i| (i % 5) as f64 * 0.1).collect();
            for (cs, cv, wd) in [(None, None, None), (Some(0.7), Some(0.02), Some(1e-3))] {
                let plan = Plan {
                    clip_scale: cs,
                    clip_value: cv,
                    weight_decay: wd,
                    rule: Rule::Adafactor {
                        mode: Mode::Square,
                        sc,
                    },
                    sync_alpha: None,
                };
                for tier in Tier::ALL.into_iter().filter(|t| t.is_available()) {
                    let k = tier.kernels();
                    let (mut pp, mut x) = (p.clone(), vec![0.0f32; cols]);
                    let b = MixedBuffers {
                        param: &mut pp,
                        grad: Grad::F32(&g),
                        m: &mut [],
                        v: &mut [],
                        v_max: &mut x,
                        slow: &mut [],
                        copy: None,
                    };
                    fused_mixed(k, &plan, GradScale::One, b);
                    let mut want_cols = start.clone();
                    let want: Vec<u64> = x
                        .chunks(SUMSQ_BLOCK)
                        .zip(want_cols.chunks_mut(SUMSQ_BLOCK))
                        .map(|(x, c)| (k.sumsq_cols)(x, c).to_bits())
                        .collect();
                    let mut got_cols = start.clone();
                    let mut out = vec![0.0f64; cols.div_ceil(SUMSQ_BLOCK)];
                    (k.square_sums)(&plan, &p, &g, &mut got_cols, &mut out);
                    let got: Vec<u64> = out.iter().map(|x| x.to_bits()).collect();
                    let label = format!("{tier:?} cols {cols} pipeline {cs:?} {cv:?} {wd:?}");
                    assert_eq!(got, want, "{label}");
                    let bits = |c: &[f64]| c.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&got_cols), bits(&want_cols), "{label}");
                }
            }
        }
    }
}
