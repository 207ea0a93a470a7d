//! The two passes of the rules with per-buffer norms (LAMB, LARS, NovoGrad): a trust ratio or
//! a second moment per registered buffer needs a norm over the whole buffer before any element
//! is updated. The pass before the update (the rule's `pre` form) runs block by block over
//! [`SUMSQ_BLOCK`]-element blocks: the f32 (or mixed) fused pass writes the rule's state and
//! the vector whose norm is needed into a stack scratch (the `v_max` slot), then the fixed-order
//! sum of squares of that block of the scratch (and of the parameters, for a trust ratio) is
//! taken while it is in L1. The block partials are added in block order, so the norms are the
//! same on every tier, thread count and split. The update pass is then an ordinary fused pass
//! with the buffer's scalars (`Rule::with_norms`).
//!
//! With compressed state (`held.rs`) the pass before decodes the state it reads (LAMB's `m`,
//! `v`) chunk by chunk into f32 scratch and runs the same loop on it, writing nothing back; the
//! update pass is the pass over held state, which for LAMB computes the new moments again from
//! the same decoded values and gradients (`lamb::Scalars::moments`): so the norms are those of
//! exactly the f32 values the update applies, and one update is the composition "decode, the
//! f32 two-pass update, encode" of `docs/numerics.md` ("Compressed state"). The sharded update
//! runs the pass before in the same read-only way over f32 state too (its block sums are
//! exchanged before the update pass, which must find the state as it was).

use super::codec::{Q8Code, Q8_BLOCK};
use super::convert::Half;
use super::fused::{pipe, specialize, Lanes, Off, On, Switch, Window};
use super::held::{q8_codes, Held, HELD_CHUNK};
use super::mixed::{fused_mixed, Grad, GradScale, MixedBuffers};
use super::plan::{Plan, Rule};
use super::reduce::{fold_lanes, SUMSQ_BLOCK};
use crate::rules::{lamb_moments_direction, lamb_scalars, lars_vector, Norms};
use crate::simd::{Kernels, Tier, Vf32, SUMSQ_LANES};

// The engine splits the pass before on sum-of-squares blocks: they must keep the 8-bit blocks.
const _: () =
    assert!(SUMSQ_BLOCK.is_multiple_of(Q8_BLOCK) && SUMSQ_BLOCK.is_multiple_of(HELD_CHUNK));

/// The loop of a pass before a per-buffer reduction whose vector is the gradient itself
/// (NovoGrad's `pre` form, Adafactor's factored `Square` pass): the gradient after the pipeline
/// (clip scale, value clip, coupled weight decay) into `v_max`, the block scratch. The rule's
/// `N` splatted scalars are not read.
#[inline(always)]
pub(crate) fn grad_into_scratch<V: Vf32, const N: usize>(
    k: &Lanes<V>,
    _: [V; N],
    w: &mut Window<'_>,
    (cs, cv, cw, sy): (impl Switch, impl Switch, impl Switch, impl Switch),
) {
    let n = w.len(false, false, true, sy);
    // Slices of length `n` in locals, so that the loop's bounds checks go.
    let (param, grad, out) = (&w.param[..n], &w.grad[..n], &mut w.v_max[..n]);
    let mut i = 0;
    while n - i >= V::LANES {
        let p = V::load(&param[i..]);
        k.grad(V::load(&grad[i..]), p, cs, cv, cw)
            .store(&mut out[i..]);
        i += V::LANES;
    }
}

/// The streaming form of a pass before a per-buffer reduction whose vector `u` is a function
/// of the gradient after the pipeline, the parameter and the index (LARS's and NovoGrad's pass
/// before the update, Adafactor's factored passes): for each [`SUMSQ_BLOCK`]-element block of
/// `grad` (from its start, the last block shorter), the sum of squares of `u` and, with
/// `want_p`, of the parameters, handed to `emit(block, u_sum, p_sum)` (`p_sum` 0 without).
/// `u(g, p, j, state)` (vectors) / `us(g, p, j, state)` (the block's last elements short of
/// 16; `state`: the rule's state slices, which they may update at `j`, e.g. LAMB's moments),
/// squared
/// (exact in f64) into the 16 lanes of its block's sum, element `j` of a block in lane
/// `j mod 16`, the lanes folded in [`fold_lanes`]' tree; where `colsum` is not empty, each
/// square also added to its column's sum. That is [`sumsq_partials`] (or, with column sums,
/// [`sumsq_cols`](super::reduce::sumsq_cols)) over the `u` a scratch pass writes and over the
/// parameters, the same operations in the same order, so the same bits, in one read of the
/// gradients and parameters with no scratch and no pause between blocks for the sums. `(cs,
/// cv, wd)`: the pipeline's switches (clip scale, value clip, coupled weight decay).
///
/// The callers mark `u` and `us` `#[inline(always)]`: a closure left out of line takes its
/// vector arguments through memory.
///
/// [`sumsq_partials`]: super::reduce::sumsq_partials
#[inline(always)]
#[allow(clippy::type_complexity)]
pub(crate) fn stream_sums<V: Vf32>(
    plan: &Plan,
    ([param, grad], mut state, colsum, (u, us), mut emit): (
        [&[f32]; 2],
        State<'_>,
        &mut [f64],
        (
            impl Fn(V, V, usize, &mut State<'_>) -> V,
            impl Fn(f32, f32, usize, &mut State<'_>) -> f32,
        ),
        impl FnMut(usize, f64, f64),
    ),
    want_p: impl Switch,
    (cs, cv, wd): (impl Switch, impl Switch, impl Switch),
) {
    let (k, ks) = (Lanes::<V>::new(plan), Lanes::<f32>::new(plan));
    let n = grad.len();
    let param = &param[..n];
    let with_cols = !colsum.is_empty();
    for (b, start) in (0..n).step_by(SUMSQ_BLOCK).enumerate() {
        let end = (start + SUMSQ_BLOCK).min(n);
        let (g, p) = (&grad[start..end], &param[start..end]);
        let sums: &mut [f64] = if with_cols {
            &mut colsum[start..end]
        } else {
            &mut []
        };
        let len = g.len();
        let (mut acc, mut acc_p) = (V::acc_zero(), V::acc_zero());
        let mut x = [0.0f32; SUMSQ_LANES];
        let mut j = 0;
        while len - j >= SUMSQ_LANES {
            for q in (0..SUMSQ_LANES).step_by(V::LANES) {
                let pv = V::load(&p[j + q..]);
                let gv = k.grad(V::load(&g[j + q..]), pv, cs, cv, wd);
                u(gv, pv, start + j + q, &mut state).store(&mut x[q..]);
            }
            if with_cols {
                // As `sumsq_cols`: the squares once, added to both sums.
                let sq = V::acc_add_squares(V::acc_zero(), &x);
                acc = V::acc_add(acc, sq);
                let s = &mut sums[j..j + SUMSQ_LANES];
                s.copy_from_slice(&V::acc_lanes(V::acc_add(V::acc_load(s), sq)));
            } else {
                // As `sumsq_partials` (the same operands in the same order: NaNs too).
                acc = V::acc_add_squares(acc, &x);
            }
            if want_p.on() {
                acc_p = V::acc_add_squares(acc_p, &p[j..j + SUMSQ_LANES]);
            }
            j += SUMSQ_LANES;
        }
        let (mut lanes, mut lanes_p) = (V::acc_lanes(acc), V::acc_lanes(acc_p));
        for ((lane, lane_p), i) in lanes.iter_mut().zip(lanes_p.iter_mut()).zip(j..len) {
            let gs = ks.grad(g[i], p[i], cs, cv, wd);
            let d = f64::from(us(gs, p[i], start + i, &mut state));
            *lane += d * d;
            if with_cols {
                sums[i] += d * d;
            }
            let dp = f64::from(p[i]);
            *lane_p += dp * dp;
        }
        let p_sum = if want_p.on() {
            fold_lanes(lanes_p)
        } else {
            0.0
        };
        emit(b, fold_lanes(lanes), p_sum);
    }
}

/// The state slices a streaming pass updates as it goes ([`stream_sums`]): LAMB's `m` and
/// `v` (empty for the rules whose pass before reads no state).
pub(crate) type State<'a> = [&'a mut [f32]; 2];

/// The pass before the update of LARS (`u = g + wd*p`), NovoGrad (`u = g`) and LAMB (the new
/// moments, written into `state`, and Adam's direction from them plus the decoupled decay)
/// over f32 gradients without a loss scale, in the streaming form ([`stream_sums`]):
/// [`pre_blocks`]' two sums per block into `sums`, the same bits and the same state.
/// `pre` is the rule's pass before ([`pre_plan`]); `state` is empty but for LAMB.
#[inline(always)]
pub(crate) fn pre_sums<V: Vf32>(
    pre: &Plan,
    [param, grad]: [&[f32]; 2],
    state: State<'_>,
    sums: &mut [f64],
) {
    let [cs, cv, wd, _] = pipe(pre);
    let emit = |b: usize, x, p| {
        sums[2 * b] = x;
        sums[2 * b + 1] = p;
    };
    let io = [param, grad];
    match pre.rule {
        Rule::Lars { sc, .. } => {
            let (w, ws) = (V::splat(sc.wd), sc.wd);
            let u = (
                #[inline(always)]
                move |g: V, p: V, _, _: &mut State<'_>| lars_vector(g, p, w),
                #[inline(always)]
                move |g: f32, p: f32, _, _: &mut State<'_>| lars_vector(g, p, ws),
            );
            let args = (io, state, &mut [][..], u, emit);
            specialize!(@choose V, stream_sums, (pre, args, On); cs, cv, wd)
        }
        Rule::Lamb { sc, .. } => {
            let rs = lamb_scalars(&sc);
            let rv = rs.map(V::splat);
            // `inline(always)` on the closures: LLVM left LAMB's (a division, a square root)
            // out of line, and a vector argument across that call made the pass 10x slower.
            let u = (
                #[inline(always)]
                move |g: V, p: V, j: usize, [m, v]: &mut State<'_>| {
                    lamb_moments_direction(rv, g, p, [&mut m[j..], &mut v[j..]])
                },
                #[inline(always)]
                move |g: f32, p: f32, j: usize, [m, v]: &mut State<'_>| {
                    lamb_moments_direction(rs, g, p, [&mut m[j..], &mut v[j..]])
                },
            );
            let args = (io, state, &mut [][..], u, emit);
            specialize!(@choose V, stream_sums, (pre, args, On); cs, cv, wd)
        }
        _ => {
            let u = (
                #[inline(always)]
                |g: V, _, _, _: &mut State<'_>| g,
                #[inline(always)]
                |g: f32, _, _, _: &mut State<'_>| g,
            );
            let args = (io, state, &mut [][..], u, emit);
            specialize!(@choose V, stream_sums, (pre, args, Off); cs, cv, wd)
        }
    }
}

/// Whether [`pre_blocks`] over f32 gradients runs as [`pre_sums`] for `pre` with `unscale`
/// (`state_in_place`: the pass may write its state, held as f32): the rules whose pass before
/// reads no state, and LAMB's with its state in place, without a loss scale.
fn streams(pre: &Plan, unscale: GradScale, state_in_place: bool) -> bool {
    let rule = match pre.rule {
        Rule::Lars { .. } | Rule::Novograd { .. } => true,
        Rule::Lamb { .. } => state_in_place,
        _ => false,
    };
    rule && matches!(unscale, GradScale::One)
}

/// One block of the vector whose norm is needed, aligned for the widest vector.
#[repr(align(64))]
struct Scratch([f32; SUMSQ_BLOCK]);

/// One chunk of decoded state, aligned for the widest vector.
#[repr(align(64))]
struct Chunk([f32; HELD_CHUNK]);

/// The buffers of the pass before the update (a part of one buffer that starts on a block
/// boundary): `m` and `v` as the rule keeps them (empty where unused).
pub(crate) struct PreBuffers<'a> {
    /// The parameters (read only in this pass).
    pub(crate) param: &'a mut [f32],
    /// The gradients.
    pub(crate) grad: Grad<'a>,
    /// First moment / momentum.
    pub(crate) m: Held<'a>,
    /// Second moment.
    pub(crate) v: Held<'a>,
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

/// Whether the pass before the update reads the state (LAMB's moments; LARS and NovoGrad read
/// only the gradients and parameters).
fn pre_reads_state(rule: &Rule) -> bool {
    matches!(rule, Rule::Lamb { .. })
}

/// The f32 view the pass before the update runs on for elements `a..e` of `h` (`a` on a chunk
/// boundary): the values themselves when held as f32 and `write`, else `scratch`, holding them
/// decoded (copied) if `decode` (the pass's writes there are dropped), empty where `used` is
/// false.
fn pre_view<'s>(
    k: &Kernels,
    code: Q8Code,
    h: &'s mut Held<'_>,
    (used, decode, write): (bool, bool, bool),
    (a, e): (usize, usize),
    scratch: &'s mut Chunk,
) -> &'s mut [f32] {
    if !used {
        return &mut [];
    }
    if write && matches!(h, Held::F32(_)) {
        return match h {
            Held::F32(x) => &mut x[a..e],
            _ => &mut [],
        };
    }
    let out = &mut scratch.0[..e - a];
    match h {
        _ if !decode => {}
        Held::F32(x) => out.copy_from_slice(&x[a..e]),
        Held::Bf16(x) => (k.widen)(Half::Bf16, &x[a..e], out),
        Held::Q8 { codes, scales } => {
            let s = &scales[a / Q8_BLOCK..e.div_ceil(Q8_BLOCK)];
            (k.decode_q8)(code, &codes[a..e], s, out)
        }
    }
    out
}

/// Runs the pass before the update `pre` (from [`pre_plan`]) over `b`, writing two sums per
/// block into `sums` (`2 * blocks` values: the scratch's sum of squares, then the
/// parameters', 0 where the rule needs none). With `write`, state held as f32 takes the pass's
/// writes (LAMB's new moments: its update pass then reads them); compressed state, and any
/// state without `write`, is only read (decoded or copied chunk by chunk: the update pass then
/// computes the moments itself, `update_plan`'s `full`). Over f32 gradients without a loss
/// scale, LARS and NovoGrad, and LAMB with its state f32 and `write`, take the streaming form,
/// [`pre_sums`] (the same sums and state).
pub(crate) fn pre_blocks(
    tier: Tier,
    pre: &Plan,
    unscale: GradScale,
    b: PreBuffers<'_>,
    sums: &mut [f64],
    write: bool,
) {
    let k = tier.kernels();
    let in_place = write && matches!((&b.m, &b.v), (Held::F32(_), Held::F32(_)));
    match (b.grad, b.m, b.v) {
        (Grad::F32(g), m, v) if streams(pre, unscale, in_place) => {
            let state: State<'_> = match (m, v) {
                (Held::F32(m), Held::F32(v)) if pre_reads_state(&pre.rule) => [m, v],
                _ => [&mut [], &mut []],
            };
            (k.pre_sums)(pre, [b.param, g], state, sums)
        }
        (grad, m, v) => {
            scratch_blocks(k, pre, unscale, PreBuffers { grad, m, v, ..b }, sums, write)
        }
    }
}

/// [`pre_blocks`] through a block scratch: the pass's fused loop writes each block's vector
/// into the scratch, then its sums of squares are taken in cache.
fn scratch_blocks(
    k: &Kernels,
    pre: &Plan,
    unscale: GradScale,
    b: PreBuffers<'_>,
    sums: &mut [f64],
    write: bool,
) {
    let want_p = pre.rule.needs_param_norm();
    let (m_used, v_used, _) = pre.rule.state_used();
    let [cm, cv, _] = q8_codes(&pre.rule).unwrap_or([Q8Code::Signed; 3]);
    let decode = pre_reads_state(&pre.rule);
    let PreBuffers {
        param,
        grad,
        mut m,
        mut v,
    } = b;
    let in_place = write && matches!((&m, &v), (Held::F32(_), Held::F32(_)));
    let step = if in_place { SUMSQ_BLOCK } else { HELD_CHUNK };
    let n = param.len();
    let mut x = Scratch([0.0; SUMSQ_BLOCK]);
    let (mut sm, mut sv) = (Chunk([0.0; HELD_CHUNK]), Chunk([0.0; HELD_CHUNK]));
    for (i, out) in sums.chunks_exact_mut(2).enumerate() {
        let (a, e) = (i * SUMSQ_BLOCK, ((i + 1) * SUMSQ_BLOCK).min(n));
        for c in (a..e).step_by(step) {
            let ce = (c + step).min(e);
            fused_mixed(
                k,
                pre,
                unscale,
                MixedBuffers {
                    param: &mut param[c..ce],
                    grad: grad.slice(c, ce),
                    m: pre_view(k, cm, &mut m, (m_used, decode, write), (c, ce), &mut sm),
                    v: pre_view(k, cv, &mut v, (v_used, decode, write), (c, ce), &mut sv),
                    v_max: &mut x.0[c - a..ce - a],
                    slow: &mut [],
                    copy: None,
                },
            );
        }
        (k.sumsq_partials)(&x.0[..e - a], &mut out[..1]);
        out[1] = 0.0;
        if want_p {
            (k.sumsq_partials)(&param[a..e], &mut out[1..]);
        }
    }
}

/// Element 0 of `v` as f32 (0 for an empty buffer).
fn first_value(k: &Kernels, code: Q8Code, v: &Held<'_>) -> f32 {
    let mut x = [0.0f32];
    match v {
        Held::F32(s) => return s.first().copied().unwrap_or(0.0),
        Held::Bf16(h) if !h.is_empty() => (k.widen)(Half::Bf16, &h[..1], &mut x),
        Held::Q8 { codes, scales } if !codes.is_empty() => {
            (k.decode_q8)(code, &codes[..1], &scales[..1], &mut x)
        }
        _ => {}
    }
    x[0]
}

/// Sets element 0 of `v` to `x`, encoded as held: bf16 rounded to nearest (one value per
/// buffer: stochastic rounding keyed by its index would round it differently in a shard whose
/// buffer starts inside the whole buffer), 8 bits as element 0 of its block, whose other
/// elements are 0 (NovoGrad's `v`), so the block's scale is `|x|` and its code exact.
fn set_first(k: &Kernels, code: Q8Code, v: &mut Held<'_>, x: f32) {
    match v {
        Held::F32(s) => {
            if let Some(first) = s.first_mut() {
                *first = x;
            }
        }
        Held::Bf16(h) if !h.is_empty() => (k.narrow)(Half::Bf16, &[x], &mut h[..1]),
        Held::Q8 { codes, scales } if !codes.is_empty() => {
            (k.encode_q8)(code, None, &[x], &mut codes[..1], &mut scales[..1])
        }
        _ => {}
    }
}

/// The totals of a buffer's block sums from [`pre_blocks`], added in block order from 0.0:
/// the pre-pass vector's sum of squares and the parameters'.
pub(crate) fn block_totals(sums: &[f64]) -> (f64, f64) {
    let (mut x, mut p) = (0.0, 0.0);
    for s in sums.chunks_exact(2) {
        x += s[0];
        p += s[1];
    }
    (x, p)
}

/// The update plan of one buffer after its pass before: `plan` with the rule's scalars from the
/// buffer's totals `(x, p)` ([`block_totals`], or the totals over every shard of the buffer)
/// and element 0 of `v`, which takes NovoGrad's new second moment (encoded as held). `full`:
/// the pass before wrote no state, so LAMB's update pass computes the new moments
/// (`lamb::Scalars::moments`).
pub(crate) fn update_plan(
    tier: Tier,
    plan: &Plan,
    (x, p): (f64, f64),
    mut v: Held<'_>,
    full: bool,
) -> Plan {
    let k = tier.kernels();
    let [_, cv, _] = q8_codes(&plan.rule).unwrap_or([Q8Code::Signed; 3]);
    let v0 = first_value(k, cv, &v);
    let (mut rule, nu) = plan.rule.with_norms(Norms { x, p, v0 });
    if let Some(nu) = nu {
        set_first(k, cv, &mut v, nu);
    }
    if let Rule::Lamb { sc, .. } = &mut rule {
        sc.moments = full;
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
    let (m_used, v_used, _) = pre.rule.state_used();
    for a in (0..n).step_by(SUMSQ_BLOCK) {
        let e = (a + SUMSQ_BLOCK).min(n);
        let mut s = [0.0f64; 2];
        pre_blocks(
            tier,
            pre,
            unscale,
            PreBuffers {
                param: &mut param[a..e],
                grad: grad.slice(a, e),
                m: Held::F32(part(m, m_used, a, e)),
                v: Held::F32(part(v, v_used, a, e)),
            },
            &mut s,
            true,
        );
        total[0] += s[0];
        total[1] += s[1];
    }
    let upd = update_plan(tier, plan, (total[0], total[1]), Held::F32(&mut *v), false);
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

/// Elements `a..e` of `x` where `used`, else none.
fn part(x: &mut [f32], used: bool, a: usize, e: usize) -> &mut [f32] {
    if used {
        &mut x[a..e]
    } else {
        &mut []
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Base;

    /// [`pre_sums`] (the streaming form) gives the block sums of [`scratch_blocks`] (the fused
    /// pass into a scratch, then the block sums) and LAMB's new moments bit for bit: LARS,
    /// NovoGrad and LAMB, every tier,
    /// with and without the gradient pipeline, lengths around the vector and block sizes,
    /// misaligned starts, hostile values (subnormals, the largest finite, infinities, NaN).
    #[test]
    fn pre_sums_are_the_scratch_pass() {
        let hostile = [
            1e-40,
            -3e-45,
            f32::MAX,
            -f32::MAX,
            f32::INFINITY,
            f32::NAN,
            0.0,
            -0.0,
        ];
        for base in [Base::lars(), Base::novograd(), Base::lamb()] {
            let rule = base.rule_for_step(3, 1e-2);
            for len in [1, 15, 16, 17, 33, 4095, 4096, 4097, 9000, 12289] {
                let m0: Vec<f32> = (0..len)
                    .map(|i| ((i * 13 % 31) as f32 - 15.0) * 1e-3)
                    .collect();
                let v0: Vec<f32> = (0..len).map(|i| (i % 17) as f32 * 1e-5).collect();
                for (off, bad) in [(0, false), (1, false), (3, true)] {
                    let mut g: Vec<f32> = (0..len + off)
                        .map(|i| ((i * 37 % 101) as f32 - 50.0) * 1e-3)
                        .collect();
                    let mut p: Vec<f32> = (0..len + off)
                        .map(|i| ((i * 11 % 29) as f32 - 14.0) * 1e-2)
                        .collect();
                    if bad {
                        for (j, &x) in hostile.iter().enumerate() {
                            if let Some(v) = g.get_mut(off + j * 7 % len.max(1)) {
                                *v = x;
                            }
                            if let Some(v) = p.get_mut(off + (j * 5 + 2) % len.max(1)) {
                                *v = hostile[hostile.len() - 1 - j];
                            }
                        }
                    }
                    for (cs, cv, wd) in [(None, None, None), (Some(0.7), Some(0.02), Some(1e-3))] {
                        let plan = Plan {
                            clip_scale: cs,
                            clip_value: cv,
                            weight_decay: wd,
                            rule,
                            sync_alpha: None,
                        };
                        let pre = pre_plan(&plan).expect("a rule with a pass before");
                        for tier in Tier::ALL.into_iter().filter(|t| t.is_available()) {
                            let k = tier.kernels();
                            let blocks = len.div_ceil(SUMSQ_BLOCK);
                            let (mut want, mut got) =
                                (vec![0.0; 2 * blocks], vec![1.0; 2 * blocks]);
                            let (mut pp, mut m, mut v) =
                                (p[off..].to_vec(), m0.clone(), v0.clone());
                            let b = PreBuffers {
                                param: &mut pp,
                                grad: Grad::F32(&g[off..]),
                                m: Held::F32(&mut m),
                                v: Held::F32(&mut v),
                            };
                            scratch_blocks(k, &pre, GradScale::One, b, &mut want, true);
                            let (mut m2, mut v2) = (m0.clone(), v0.clone());
                            let state: State<'_> = if pre_reads_state(&pre.rule) {
                                [&mut m2, &mut v2]
                            } else {
                                [&mut [], &mut []]
                            };
                            (k.pre_sums)(&pre, [&p[off..], &g[off..]], state, &mut got);
                            // Bits, but only the position of a NaN: two NaNs of different
                            // signs meet here (f32::NAN and the 0 * inf of a decay), and which
                            // comes out is open (docs/numerics.md, "NaN payloads").
                            let bits = |x: &[f64]| {
                                x.iter()
                                    .map(|s| if s.is_nan() { u64::MAX } else { s.to_bits() })
                                    .collect::<Vec<_>>()
                            };
                            let bits32 = |x: &[f32]| {
                                x.iter()
                                    .map(|s| if s.is_nan() { u32::MAX } else { s.to_bits() })
                                    .collect::<Vec<_>>()
                            };
                            let what = format!("{base:?} {tier:?} len {len} offset {off}");
                            assert_eq!(bits32(&m2), bits32(&m), "m: {what}");
                            assert_eq!(bits32(&v2), bits32(&v), "v: {what}");
                            assert_eq!(
                                bits(&got),
                                bits(&want),
                                "{base:?} {tier:?} len {len} offset {off} hostile {bad} \
                                 pipeline {cs:?} {cv:?} {wd:?}"
                            );
                        }
                    }
                }
            }
        }
    }
}
