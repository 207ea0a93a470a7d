//! One update's fused passes and norm partials over every buffer, on the caller's thread or the
//! pool (splits fall on fixed element boundaries, so results never depend on the thread count).

use super::state::BufState;
use super::{StateMut, Step, PARALLEL_GRAIN};
use crate::error::Error;
use crate::kernels::{
    self, AsGrad, Grad, GradScale, Held, HeldBuffers, MixedBuffers, ParamCopy, Plan, PreBuffers,
    Q8_BLOCK,
};
use crate::simd::Tier;

/// The plans of one update: of each group, and the group of each buffer.
#[derive(Clone, Copy)]
pub(super) struct Plans<'a> {
    pub(super) plans: &'a [Plan],
    pub(super) group_of: &'a [usize],
}

/// What every buffer's pass of one update shares.
#[derive(Clone, Copy)]
pub(super) struct Pass<'a> {
    pub(super) step: &'a Step,
    pub(super) plans: Plans<'a>,
    pub(super) unscale: GradScale,
    /// A sharded update's per-buffer totals from the host (two per buffer, for the rules with
    /// per-buffer norms: `Optimizer::step_with_sum_squares_and_norms`); `None`: each buffer's
    /// own pass before the update computes them.
    pub(super) norms: Option<&'a [f64]>,
}

/// Copy `i` of `copies` (none where `copies` is empty), reborrowed.
pub(super) fn copy_at<'c>(
    copies: &'c mut [Option<ParamCopy<'_>>],
    i: usize,
) -> Option<ParamCopy<'c>> {
    copies.get_mut(i).and_then(|c| {
        c.as_mut().map(|c| ParamCopy {
            half: c.half,
            out: &mut *c.out,
        })
    })
}

/// `copies` split at `mid` (two empty lists where it is empty).
#[allow(clippy::type_complexity)]
pub(super) fn split_copies<'c, 'a>(
    copies: &'c mut [Option<ParamCopy<'a>>],
    mid: usize,
) -> (
    &'c mut [Option<ParamCopy<'a>>],
    &'c mut [Option<ParamCopy<'a>>],
) {
    if copies.is_empty() {
        (&mut [], &mut [])
    } else {
        copies.split_at_mut(mid)
    }
}

/// One buffer's fused pass: the f32 pass itself when there is nothing to convert.
pub(super) fn apply_one(
    pass: Pass<'_>,
    plan: &Plan,
    p: &mut [f32],
    g: Grad<'_>,
    st: StateMut<'_>,
    copy: Option<ParamCopy<'_>>,
) {
    if !st.all_f32() {
        let index = pass.step.index_of(st.at);
        let [m, v, v_max, slow] = st.into_parts();
        let b = HeldBuffers {
            param: p,
            grad: g,
            m,
            v,
            v_max,
            slow,
            copy,
            index,
        };
        let r = pass.step.rounding();
        return kernels::apply_held_unchecked(pass.step.tier, plan, pass.unscale, r, b);
    }
    match (g, copy) {
        (Grad::F32(g), None) if pass.unscale == GradScale::One => {
            kernels::apply_unchecked_lengths(pass.step.tier, plan, pass.step.buffers(p, g, st));
        }
        (grad, copy) => {
            let [m, v, v_max, slow] = st.into_parts().map(|h| h.f32_mut().unwrap_or_default());
            kernels::apply_mixed_unchecked_lengths(
                pass.step.tier,
                plan,
                pass.unscale,
                MixedBuffers {
                    param: p,
                    grad,
                    m,
                    v,
                    v_max,
                    slow,
                    copy,
                },
            )
        }
    }
}

pub(super) fn seq_apply<G: AsGrad>(
    pass: Pass<'_>,
    params: &mut [&mut [f32]],
    grads: &[G],
    copies: &mut [Option<ParamCopy<'_>>],
    states: &mut [BufState],
) {
    for (i, (((p, g), st), &group)) in params
        .iter_mut()
        .zip(grads)
        .zip(states.iter_mut())
        .zip(pass.plans.group_of)
        .enumerate()
    {
        let pass = Pass {
            norms: pass.norms.map(|x| &x[2 * i..2 * i + 2]),
            ..pass
        };
        if adafactor(
            pass,
            &pass.plans.plans[group],
            p,
            g.as_grad(),
            st,
            copy_at(copies, i),
            false,
        ) {
            continue;
        }
        let plan = norm_plan(pass, &pass.plans.plans[group], p, g.as_grad(), st, false);
        let n = p.len();
        apply_one(pass, &plan, p, g.as_grad(), st.whole(n), copy_at(copies, i));
    }
}

/// With Adafactor, every pass over the buffer (`kernels::factored`: on this thread, or on two
/// of the pool when `parallel`; its sums are taken in a fixed order, so the thread count cannot
/// change them) and true; false for the other rules. The engine refuses compressed state for
/// Adafactor, so it is f32 here.
fn adafactor(
    pass: Pass<'_>,
    plan: &Plan,
    p: &mut [f32],
    g: Grad<'_>,
    st: &mut BufState,
    copy: Option<ParamCopy<'_>>,
    parallel: bool,
) -> bool {
    if !matches!(plan.rule, kernels::Rule::Adafactor { .. }) {
        return false;
    }
    let shape = st.shape;
    let BufState {
        m,
        v,
        slow,
        colsum,
        rowf,
        colf,
        fsums,
        vcopy,
        ..
    } = st;
    let b = MixedBuffers {
        param: p,
        grad: g,
        m: m.held().f32_mut().unwrap_or_default(),
        v: v.held().f32_mut().unwrap_or_default(),
        v_max: &mut [],
        slow: slow.held().f32_mut().unwrap_or_default(),
        copy,
    };
    let scratch = shape.map(|s| {
        let (sums, vcopy) = (&mut fsums[..], &mut vcopy[..]);
        (
            s,
            kernels::FactorScratch {
                colsum,
                rowf,
                colf,
                sums,
                vcopy,
            },
        )
    });
    kernels::apply_factored(pass.step.tier, plan, pass.unscale, b, scratch, parallel);
    true
}

/// For a rule with per-buffer norms (LAMB, LARS, NovoGrad), the buffer's update plan: from the
/// host's totals (`pass.norms`, two values: a sharded update, whose pass before ran read-only),
/// else after the pass before the update over the whole buffer (`kernels::trust`; on the pool
/// when `parallel`, split on block boundaries); `plan` itself for an elementwise rule.
pub(super) fn norm_plan(
    pass: Pass<'_>,
    plan: &Plan,
    p: &mut [f32],
    g: Grad<'_>,
    st: &mut BufState,
    parallel: bool,
) -> Plan {
    let Some(pre) = kernels::pre_plan(plan) else {
        return *plan;
    };
    let tier = pass.step.tier;
    if let Some(&[x, q]) = pass.norms {
        return kernels::update_plan(tier, plan, (x, q), st.v.held(), true);
    }
    let b = PreBuffers {
        param: p,
        grad: g,
        m: st.m.held(),
        v: st.v.held(),
    };
    let in_place = matches!(b.m, Held::F32(_));
    if parallel {
        par_pre(tier, &pre, pass.unscale, b, &mut st.norm_sums, true);
    } else {
        kernels::pre_blocks(tier, &pre, pass.unscale, b, &mut st.norm_sums, true);
    }
    let totals = kernels::block_totals(&st.norm_sums);
    kernels::update_plan(tier, plan, totals, st.v.held(), !in_place)
}

/// The pass before the update on the pool: halves on block boundaries down to
/// [`PARALLEL_GRAIN`] elements; every block's sums are the same as on one thread.
pub(super) fn par_pre(
    tier: Tier,
    pre: &Plan,
    unscale: GradScale,
    b: PreBuffers<'_>,
    sums: &mut [f64],
    write: bool,
) {
    let blocks = sums.len() / 2;
    if blocks <= 2 * (PARALLEL_GRAIN / kernels::SUMSQ_BLOCK) {
        kernels::pre_blocks(tier, pre, unscale, b, sums, write);
        return;
    }
    let mid = (blocks / 2) * kernels::SUMSQ_BLOCK;
    let PreBuffers { param, grad, m, v } = b;
    // `mid` is a multiple of the sum-of-squares block, so of the 8-bit block (a compile-time
    // check in `kernels::trust`): the splits always succeed.
    let (Some((m0, m1)), Some((v0, v1))) = (m.split_at(mid), v.split_at(mid)) else {
        return;
    };
    let (p0, p1) = param.split_at_mut(mid);
    let (g0, g1) = grad.split_at(mid);
    let (s0, s1) = sums.split_at_mut(2 * (blocks / 2));
    let b0 = PreBuffers {
        param: p0,
        grad: g0,
        m: m0,
        v: v0,
    };
    let b1 = PreBuffers {
        param: p1,
        grad: g1,
        m: m1,
        v: v1,
    };
    rayon::join(
        || par_pre(tier, pre, unscale, b0, s0, write),
        || par_pre(tier, pre, unscale, b1, s1, write),
    );
}

/// Splits the buffer list, then each buffer, in halves until tasks are at most
/// [`PARALLEL_GRAIN`] elements, with `rayon::join` (no allocation per task). The update is
/// elementwise, so any split gives the same bits.
pub(super) fn par_apply<G: AsGrad>(
    pass: Pass<'_>,
    params: &mut [&mut [f32]],
    grads: &[G],
    copies: &mut [Option<ParamCopy<'_>>],
    states: &mut [BufState],
) {
    if params.len() > 1 {
        let mid = params.len() / 2;
        let (p0, p1) = params.split_at_mut(mid);
        let (g0, g1) = grads.split_at(mid);
        let (c0, c1) = split_copies(copies, mid);
        let (s0, s1) = states.split_at_mut(mid);
        let (q0, q1) = pass.plans.group_of.split_at(mid);
        let (n0, n1) = match pass.norms {
            Some(x) => {
                let (a, b) = x.split_at(2 * mid);
                (Some(a), Some(b))
            }
            None => (None, None),
        };
        let half = |group_of, norms| Pass {
            plans: Plans {
                group_of,
                ..pass.plans
            },
            norms,
            ..pass
        };
        let (pass0, pass1) = (half(q0, n0), half(q1, n1));
        rayon::join(
            || par_apply(pass0, p0, g0, c0, s0),
            || par_apply(pass1, p1, g1, c1, s1),
        );
    } else if let (Some(p), Some(g), Some(st), Some(&group)) = (
        params.first_mut(),
        grads.first(),
        states.first_mut(),
        pass.plans.group_of.first(),
    ) {
        if adafactor(
            pass,
            &pass.plans.plans[group],
            p,
            g.as_grad(),
            st,
            copy_at(copies, 0),
            true,
        ) {
            return;
        }
        let plan = norm_plan(pass, &pass.plans.plans[group], p, g.as_grad(), st, true);
        let n = p.len();
        let copy = copy_at(copies, 0);
        par_apply_one(pass, &plan, p, g.as_grad(), st.whole(n), copy);
    }
}

pub(super) fn par_apply_one(
    pass: Pass<'_>,
    plan: &Plan,
    p: &mut [f32],
    g: Grad<'_>,
    st: StateMut<'_>,
    copy: Option<ParamCopy<'_>>,
) {
    if p.len() <= PARALLEL_GRAIN {
        apply_one(pass, plan, p, g, st, copy);
        return;
    }
    // A multiple of the 8-bit block (and of 64 elements), so that no split cuts a block.
    let mid = (p.len() / 2).next_multiple_of(Q8_BLOCK);
    let (p0, p1) = p.split_at_mut(mid);
    let (g0, g1) = g.split_at(mid);
    let (s0, s1) = st.split_at(mid);
    let (c0, c1) = match copy {
        Some(c) => {
            let (a, b) = c.out.split_at_mut(mid);
            (
                Some(ParamCopy {
                    half: c.half,
                    out: a,
                }),
                Some(ParamCopy {
                    half: c.half,
                    out: b,
                }),
            )
        }
        None => (None, None),
    };
    rayon::join(
        || par_apply_one(pass, plan, p0, g0, s0, c0),
        || par_apply_one(pass, plan, p1, g1, s1, c1),
    );
}

/// `e` (from group `group`'s per-step check) naming the group, unless it is group 0 (the
/// optimizer's own configuration, whose messages stay as they were before groups).
pub(super) fn in_group(group: usize, e: Error) -> Error {
    match e {
        Error::InvalidArgument {
            name,
            value,
            expected,
        } if group != 0 => Error::InvalidArgument {
            name,
            value: format!("{value} (in parameter group {group})"),
            expected,
        },
        e => e,
    }
}

pub(super) fn seq_partials<G: AsGrad>(
    tier: Tier,
    unscale: GradScale,
    grads: &[G],
    states: &mut [BufState],
) {
    for (g, st) in grads.iter().zip(states.iter_mut()) {
        partials_of(tier, unscale, g.as_grad(), &mut st.partials);
    }
}

/// Block partials of one buffer: the f32 kernel itself when there is nothing to convert.
pub(super) fn partials_of(tier: Tier, unscale: GradScale, g: Grad<'_>, partials: &mut [f64]) {
    match g {
        Grad::F32(g) if unscale == GradScale::One => {
            kernels::sumsq_partials_unchecked(tier, g, partials)
        }
        g => kernels::sumsq_partials_mixed_unchecked(tier, g, unscale, partials),
    }
}

/// Whether the non-finite check of an update that needs no norm may scan the gradients' bits
/// instead of summing squares: every buffer is 16-bit and the scale is at least 1, so that
/// dividing by it cannot turn a finite value into an infinity (the sum of squares of the
/// divided values is finite exactly when every 16-bit value is).
pub(super) fn scan_suffices<G: AsGrad>(grads: &[G], unscale: GradScale) -> bool {
    unscale.scale() >= 1.0 && grads.iter().all(|g| g.as_grad().half().is_some())
}

/// Whether every (16-bit) gradient is finite ([`scan_suffices`]), on the pool when `parallel`,
/// split as the partials are.
pub(super) fn grads_finite<G: AsGrad>(tier: Tier, grads: &[G], parallel: bool) -> bool {
    if parallel && grads.len() > 1 {
        let (g0, g1) = grads.split_at(grads.len() / 2);
        let (a, b) = rayon::join(
            || grads_finite(tier, g0, true),
            || grads_finite(tier, g1, true),
        );
        return a && b;
    }
    grads
        .iter()
        .all(|g| grad_finite(tier, g.as_grad(), parallel))
}

fn grad_finite(tier: Tier, g: Grad<'_>, parallel: bool) -> bool {
    if parallel && g.len() > 2 * PARALLEL_GRAIN {
        let (g0, g1) = g.split_at(g.len() / 2);
        let (a, b) = rayon::join(
            || grad_finite(tier, g0, true),
            || grad_finite(tier, g1, true),
        );
        return a && b;
    }
    let k = tier.kernels();
    match g {
        Grad::Bf16(h) => (k.half_finite)(kernels::Half::Bf16, h),
        Grad::F16(h) => (k.half_finite)(kernels::Half::F16, h),
        Grad::F32(x) => x.iter().all(|v| v.is_finite()),
    }
}

/// Block partials on the pool. Splits fall on block boundaries, so every partial is the same
/// as on one thread; they are added up in block order afterwards.
pub(super) fn par_partials<G: AsGrad>(
    tier: Tier,
    unscale: GradScale,
    grads: &[G],
    states: &mut [BufState],
) {
    if grads.len() > 1 {
        let mid = grads.len() / 2;
        let (g0, g1) = grads.split_at(mid);
        let (s0, s1) = states.split_at_mut(mid);
        rayon::join(
            || par_partials(tier, unscale, g0, s0),
            || par_partials(tier, unscale, g1, s1),
        );
    } else if let (Some(g), Some(st)) = (grads.first(), states.first_mut()) {
        par_partials_one(tier, unscale, g.as_grad(), &mut st.partials);
    }
}

pub(super) fn par_partials_one(tier: Tier, unscale: GradScale, g: Grad<'_>, partials: &mut [f64]) {
    if partials.len() <= 2 * (PARALLEL_GRAIN / kernels::SUMSQ_BLOCK) {
        partials_of(tier, unscale, g, partials);
        return;
    }
    let mid_blocks = partials.len() / 2;
    let (g0, g1) = g.split_at(mid_blocks * kernels::SUMSQ_BLOCK);
    let (q0, q1) = partials.split_at_mut(mid_blocks);
    rayon::join(
        || par_partials_one(tier, unscale, g0, q0),
        || par_partials_one(tier, unscale, g1, q1),
    );
}
