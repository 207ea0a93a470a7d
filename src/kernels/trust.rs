//! The two passes of the rules with per-buffer norms (LAMB, LARS, NovoGrad): a trust ratio or
//! a second moment per registered buffer needs a norm over the whole buffer before any element
//! is updated. The pass before the update (the rule's `pre` form) runs block by block over
//! [`SUMSQ_BLOCK`]-element blocks: the f32 (or mixed) fused pass writes the rule's state and
//! the vector whose norm is needed into a stack scratch (the `v_max` slot), then the fixed-order
//! sum of squares of that block of the scratch (and of the parameters, for a trust ratio) is
//! taken while it is in L1. The block partials are added in block order, so the norms are the
//! same on every tier, thread count and split. The update pass is then an ordinary fused pass
//! with the buffer's scalars (`Rule::with_norms`).

use super::mixed::{fused_mixed, Grad, GradScale, MixedBuffers};
use super::plan::Plan;
use super::reduce::SUMSQ_BLOCK;
use crate::rules::Norms;
use crate::simd::Tier;

/// One block of the vector whose norm is needed, aligned for the widest vector.
#[repr(align(64))]
struct Scratch([f32; SUMSQ_BLOCK]);

/// The buffers of the pass before the update (a part of one buffer that starts on a block
/// boundary): `m` and `v` as the rule keeps them (empty where unused).
pub(crate) struct PreBuffers<'a> {
    /// The parameters (read only in this pass).
    pub(crate) param: &'a mut [f32],
    /// The gradients.
    pub(crate) grad: Grad<'a>,
    /// First moment / momentum.
    pub(crate) m: &'a mut [f32],
    /// Second moment.
    pub(crate) v: &'a mut [f32],
}

/// The plan of the pass before the update of `plan`'s rule (no Lookahead sync: that belongs to
/// the update), `None` for an elementwise rule.
pub(crate) fn pre_plan(plan: &Plan) -> Option<Plan> {
    let rule = plan.rule.pre_pass()?;
    Some(Plan {
        rule,
        sync_alpha: None,
        ..*plan
    })
}

/// Runs the pass before the update `pre` (from [`pre_plan`]) over `b`, writing two sums per
/// block into `sums` (`2 * blocks` values: the scratch's sum of squares, then the
/// parameters', 0 where the rule needs none).
pub(crate) fn pre_blocks(
    tier: Tier,
    pre: &Plan,
    unscale: GradScale,
    b: PreBuffers<'_>,
    sums: &mut [f64],
) {
    let k = tier.kernels();
    let want_p = pre.rule.needs_param_norm();
    let (m_used, v_used, _) = pre.rule.state_used();
    let PreBuffers { param, grad, m, v } = b;
    let n = param.len();
    let mut x = Scratch([0.0; SUMSQ_BLOCK]);
    for (i, out) in sums.chunks_exact_mut(2).enumerate() {
        let (a, e) = (i * SUMSQ_BLOCK, ((i + 1) * SUMSQ_BLOCK).min(n));
        let xs = &mut x.0[..e - a];
        fused_mixed(
            k,
            pre,
            unscale,
            MixedBuffers {
                param: &mut param[a..e],
                grad: grad.slice(a, e),
                m: if m_used { &mut m[a..e] } else { &mut [] },
                v: if v_used { &mut v[a..e] } else { &mut [] },
                v_max: &mut *xs,
                slow: &mut [],
                copy: None,
            },
        );
        (k.sumsq_partials)(xs, &mut out[..1]);
        out[1] = 0.0;
        if want_p {
            (k.sumsq_partials)(&param[a..e], &mut out[1..]);
        }
    }
}

/// The update plan of one buffer after its pass before: `plan` with the rule's scalars from the
/// block `sums` (added in block order) and `v[0]`, which takes NovoGrad's new second moment.
pub(crate) fn update_plan(plan: &Plan, sums: &[f64], v: &mut [f32]) -> Plan {
    let (mut x, mut p) = (0.0, 0.0);
    for s in sums.chunks_exact(2) {
        x += s[0];
        p += s[1];
    }
    let v0 = v.first().copied().unwrap_or(0.0);
    let (rule, nu) = plan.rule.with_norms(Norms { x, p, v0 });
    if let (Some(nu), Some(first)) = (nu, v.first_mut()) {
        *first = nu;
    }
    Plan { rule, ..*plan }
}

/// Both passes over one whole buffer on the caller's thread (the stateless entry points; the
/// engine splits the first pass over its pool): `pre` from [`pre_plan`]. Allocates nothing:
/// the block sums are added as they come, in block order.
pub(crate) fn apply_whole(
    tier: Tier,
    plan: &Plan,
    pre: &Plan,
    unscale: GradScale,
    b: MixedBuffers<'_>,
) {
    let MixedBuffers {
        param,
        grad,
        m,
        v,
        v_max,
        slow,
        copy,
    } = b;
    let n = param.len();
    let mut total = [0.0f64; 2];
    for a in (0..n).step_by(SUMSQ_BLOCK) {
        let e = (a + SUMSQ_BLOCK).min(n);
        let mut s = [0.0f64; 2];
        let (m_used, v_used, _) = pre.rule.state_used();
        pre_blocks(
            tier,
            pre,
            unscale,
            PreBuffers {
                param: &mut param[a..e],
                grad: grad.slice(a, e),
                m: if m_used { &mut m[a..e] } else { &mut [] },
                v: if v_used { &mut v[a..e] } else { &mut [] },
            },
            &mut s,
        );
        total[0] += s[0];
        total[1] += s[1];
    }
    let upd = update_plan(plan, &total, v);
    fused_mixed(
        tier.kernels(),
        &upd,
        unscale,
        MixedBuffers {
            param,
            grad,
            m,
            v,
            v_max,
            slow,
            copy,
        },
    );
}
