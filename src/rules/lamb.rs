//! LAMB (optax's `lamb`; PyTorch has none): Adam's direction with decoupled weight decay,
//! scaled per registered buffer by the trust ratio `||p|| / ||u||`.

use super::{pow_step, trust_ratio, Norms, Rule};
use crate::kernels::{specialize, Lanes, Switch, Window};
use crate::simd::Vf32;

super::rule! {
    base {
        /// LAMB (You et al., 2019; optax's `lamb`): `m = b1*m + (1-b1)*g`,
        /// `v = b2*v + (1-b2)*g*g`, `u = (m/(1-b1^t)) / (sqrt(v/(1-b2^t) + eps_root) + eps)
        /// + weight_decay*p` (the bias corrections applied as multiplications by their
        /// reciprocals), then per registered buffer `r = ||p|| / ||u||` (1 where either norm is
        /// 0) and `p -= lr * r * u`.
        Lamb = 13, "lamb" {
            /// First-moment decay.
            b1: f64 = 0.9; UnitOpen, f32; c b1;
            /// Second-moment decay.
            b2: f64 = 0.999; UnitOpen, f32; c b2;
            /// Added outside the square root.
            eps: f64 = 1e-6; Positive, f32; c eps;
            /// Added inside the square root.
            eps_root: f64 = 0.0; NonNeg, f32; c eps_root;
            /// Weight decay added to the update before the trust ratio:
            /// `u += weight_decay * p`.
            weight_decay as "weight_decay (decoupled)": f64 = 0.0; NonNeg, f32;
                c decoupled_weight_decay;
        }
        @state { (true, true, false) }
        @rule(t, lr) {
            let t = t as f64;
            Rule::Lamb {
                pre: false,
                sc: Scalars {
                    b1: b1 as f32,
                    c1: (1.0 - b1) as f32,
                    b2: b2 as f32,
                    c2: (1.0 - b2) as f32,
                    inv_bc1: (1.0 / (1.0 - pow_step(b1, t))) as f32,
                    inv_bc2: (1.0 / (1.0 - pow_step(b2, t))) as f32,
                    eps: eps as f32,
                    eps_root: eps_root as f32,
                    wd: weight_decay as f32,
                    lr,
                    c: lr as f32,
                    d: 1.0,
                    moments: false,
                },
            }
        }
    }
    kernel {
        /// LAMB in two passes over each buffer (see `kernels::trust`): with `pre`, the moments
        /// and `u` (written into the `v_max` slot, a block scratch); then
        /// `p -= c * (u / d)` with `u` recomputed from the new moments, `c = lr * ||p||` and
        /// `d = ||u||` (`c = lr`, `d = 1` where either norm is 0). With `sc.moments` (compressed
        /// state, whose pass before leaves the moments as held) the update pass computes the
        /// new moments itself, from the same inputs, so to the same f32 values.
        Lamb {
            /// The pass before the update.
            pre: bool,
            /// The per-step scalars.
            sc: crate::rules::lamb::Scalars,
        }
        @state { (true, true, pre) }
        @finite {
            [
                ("inverse bias correction (1 / (1 - b1^t))", sc.inv_bc1),
                ("inverse bias correction (1 / (1 - b2^t))", sc.inv_bc2),
                ("step (lr * ||p||)", sc.c),
            ]
        }
        @span<V>(s) {
            let Scalars { b1, c1, b2, c2, inv_bc1, inv_bc2, eps, eps_root, wd, c, d, .. } = sc;
            let r = [b1, c1, b2, c2, inv_bc1, inv_bc2, eps, eps_root, wd, c, d].map(V::splat);
            if pre {
                specialize!(V, s, lamb_pre, (r))
            } else if sc.moments {
                specialize!(V, s, lamb_full, (r))
            } else {
                specialize!(V, s, lamb_apply, (r))
            }
        }
    }
}

/// LAMB's per-step scalars (see [`Rule::Lamb`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scalars {
    /// First-moment decay.
    pub b1: f32,
    /// `1 - b1`, rounded once.
    pub c1: f32,
    /// Second-moment decay.
    pub b2: f32,
    /// `1 - b2`, rounded once.
    pub c2: f32,
    /// `1 / (1 - b1^t)`, rounded once (a multiplication per element instead of a division).
    pub inv_bc1: f32,
    /// `1 / (1 - b2^t)`, rounded once.
    pub inv_bc2: f32,
    /// Added outside the square root.
    pub eps: f32,
    /// Added inside the square root.
    pub eps_root: f32,
    /// Weight decay added to the update.
    pub wd: f32,
    /// The learning rate of this step (f64: the trust ratio scales it before rounding).
    pub lr: f64,
    /// `lr * ||p||` (`lr` where a norm is 0), rounded once.
    pub c: f32,
    /// `||u||` (1 where a norm is 0), rounded once.
    pub d: f32,
    /// The update pass also updates the moments (from the moments before the update and the
    /// gradients): with compressed state, the pass before computes them into scratch only.
    pub moments: bool,
}

impl Scalars {
    /// The scalars of the update pass from the buffer's norms.
    pub(super) fn with_norms(self, n: Norms) -> Scalars {
        let (c, d) = trust_ratio(self.lr, 1.0, 0.0, n);
        Scalars { c, d, ..self }
    }
}

/// LAMB's direction `u` from the new moments (`ibc1`, `ibc2`: the bias corrections'
/// reciprocals): one division and one square root per element.
#[inline(always)]
fn direction<V: Vf32>(m: V, v: V, p: V, [ibc1, ibc2, eps, eps_root, wd]: [V; 5]) -> V {
    m.mul(ibc1)
        .div(v.mul(ibc2).add(eps_root).sqrt().add(eps))
        .add(wd.mul(p))
}

/// Vector `i` of the window's parameters and its direction `u` from the new moments, which
/// are stored (`r`: b1, 1-b1, b2, 1-b2, then [`direction`]'s scalars).
#[inline(always)]
fn step_moments<V: Vf32>(
    k: &Lanes<V>,
    [b1, c1, b2, c2, ibc1, ibc2, eps, eps_root, wd]: [V; 9],
    w: &mut Window<'_>,
    i: usize,
    (cs, cv, cw): (impl Switch, impl Switch, impl Switch),
) -> (V, V) {
    let p = V::load(&w.param[i..]);
    let g = k.grad(V::load(&w.grad[i..]), p, cs, cv, cw);
    let r = [b1, c1, b2, c2, ibc1, ibc2, eps, eps_root, wd];
    (p, moments_direction(r, g, p, [&mut w.m[i..], &mut w.v[i..]]))
}

/// The new moments of one vector of elements from the gradient `g` (after the pipeline),
/// stored at the starts of `m` and `v`, and the direction `u` ([`direction`]) from them
/// (`r`: as [`pre_scalars`]).
#[inline(always)]
pub(crate) fn moments_direction<V: Vf32>(
    [b1, c1, b2, c2, ibc1, ibc2, eps, eps_root, wd]: [V; 9],
    g: V,
    p: V,
    [ms, vs]: [&mut [f32]; 2],
) -> V {
    let m = b1.mul(V::load(ms)).add(c1.mul(g));
    let v = b2.mul(V::load(vs)).add(c2.mul(g.mul(g)));
    m.store(ms);
    v.store(vs);
    direction(m, v, p, [ibc1, ibc2, eps, eps_root, wd])
}

/// The scalars of [`moments_direction`]: b1, 1-b1, b2, 1-b2, the bias corrections'
/// reciprocals, eps, eps_root, the weight decay.
pub(crate) fn pre_scalars(sc: &Scalars) -> [f32; 9] {
    let Scalars { b1, c1, b2, c2, inv_bc1, inv_bc2, eps, eps_root, wd, .. } = *sc;
    [b1, c1, b2, c2, inv_bc1, inv_bc2, eps, eps_root, wd]
}

/// LAMB's first pass: the moments, and `u` into `v_max` (the block scratch).
#[inline(always)]
fn lamb_pre<V: Vf32>(
    k: &Lanes<V>,
    [b1, c1, b2, c2, ibc1, ibc2, eps, eps_root, wd, _, _]: [V; 11],
    w: &mut Window<'_>,
    (cs, cv, cw, sy): (impl Switch, impl Switch, impl Switch, impl Switch),
) {
    let r = [b1, c1, b2, c2, ibc1, ibc2, eps, eps_root, wd];
    let n = w.len(true, true, true, sy);
    let mut i = 0;
    while n - i >= V::LANES {
        let (_, u) = step_moments(k, r, w, i, (cs, cv, cw));
        u.store(&mut w.v_max[i..]);
        i += V::LANES;
    }
}

/// LAMB's update pass: `p -= c * (u / d)`, `u` recomputed from the moments.
#[inline(always)]
fn lamb_apply<V: Vf32>(
    k: &Lanes<V>,
    [_, _, _, _, ibc1, ibc2, eps, eps_root, wd, c, d]: [V; 11],
    w: &mut Window<'_>,
    (_cs, _cv, _cw, sy): (impl Switch, impl Switch, impl Switch, impl Switch),
) {
    let n = w.len(true, true, false, sy);
    // Slices of length `n` (or empty, unused) in locals, so that the loop's bounds checks go.
    let Window {
        param, m, v, slow, ..
    } = w;
    let (param, ms, vs) = (&mut param[..n], &m[..n], &v[..n]);
    let slow: &mut [f32] = if sy.on() { &mut slow[..n] } else { &mut [] };
    let mut i = 0;
    while n - i >= V::LANES {
        let p = V::load(&param[i..]);
        let m = V::load(&ms[i..]);
        let v = V::load(&vs[i..]);
        let u = direction(m, v, p, [ibc1, ibc2, eps, eps_root, wd]);
        k.store_param_in(p.sub(c.mul(u.div(d))), [&mut *param, &mut *slow], i, sy);
        i += V::LANES;
    }
}

/// LAMB's update pass over compressed state: the moments as [`lamb_pre`] computes them, then
/// `p -= c * (u / d)` as [`lamb_apply`].
#[inline(always)]
fn lamb_full<V: Vf32>(
    k: &Lanes<V>,
    [b1, c1, b2, c2, ibc1, ibc2, eps, eps_root, wd, c, d]: [V; 11],
    w: &mut Window<'_>,
    (cs, cv, cw, sy): (impl Switch, impl Switch, impl Switch, impl Switch),
) {
    let r = [b1, c1, b2, c2, ibc1, ibc2, eps, eps_root, wd];
    let n = w.len(true, true, false, sy);
    let mut i = 0;
    while n - i >= V::LANES {
        let (p, u) = step_moments(k, r, w, i, (cs, cv, cw));
        k.store_param(p.sub(c.mul(u.div(d))), w, i, sy);
        i += V::LANES;
    }
}
