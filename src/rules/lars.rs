//! LARS (optax's `lars`; PyTorch has none): SGD with momentum whose step is scaled per
//! registered buffer by the trust ratio `trust_coefficient * ||p|| / (||g + wd*p|| + eps)`.

use super::{trust_ratio, Norms, Rule};
use crate::kernels::{specialize, Lanes, Switch, Window};
use crate::simd::Vf32;

super::rule! {
    base {
        /// LARS (You et al., 2017; optax's `lars`): `x = g + weight_decay*p`, per registered
        /// buffer `r = trust_coefficient * ||p|| / (||x|| + eps)` (1 where either norm is 0),
        /// `m = momentum*m + lr*r*x`, `p -= m` (Nesterov: `p -= lr*r*x + momentum*m`).
        Lars = 14, "lars" {
            /// Momentum of the trace.
            momentum: f64 = 0.9; UnitOpen, f32; c momentum;
            /// Nesterov momentum.
            nesterov: bool = false; Any; c nesterov;
            /// Weight decay added to the gradient before the trust ratio.
            weight_decay as "weight_decay (decoupled)": f64 = 0.0; NonNeg, f32;
                c decoupled_weight_decay;
            /// Multiplier of the trust ratio.
            trust_coefficient: f64 = 0.001; Positive; c trust_coefficient;
            /// Added to `||x||` in the trust ratio's denominator.
            eps: f64 = 0.0; NonNeg; c eps;
        }
        @state { (true, false, false) }
        @rule(t, lr) {
            Rule::Lars {
                pre: false,
                sc: Scalars {
                    wd: weight_decay as f32,
                    mu: momentum as f32,
                    nesterov,
                    lr,
                    tc: trust_coefficient,
                    eps,
                    c: lr as f32,
                    d: 1.0,
                },
            }
        }
    }
    kernel {
        /// LARS in two passes over each buffer (see `kernels::trust`): with `pre`,
        /// `x = g + wd*p` into the `v_max` slot (a block scratch); then `s = c * (x / d)`,
        /// `m = mu*m + s`, `p -= m` (Nesterov: `p -= s + mu*m`), with
        /// `c = lr * trust_coefficient * ||p||` and `d = ||x|| + eps` (`c = lr`, `d = 1` where
        /// either norm is 0).
        Lars {
            /// The pass before the update.
            pre: bool,
            /// The per-step scalars.
            sc: crate::rules::lars::Scalars,
        }
        @state { (true, false, pre) }
        @finite { [("step (lr * trust_coefficient * ||p||)", sc.c)] }
        @span<V>(s) {
            let r = [sc.wd, sc.mu, sc.c, sc.d].map(V::splat);
            if pre {
                specialize!(V, s, lars_pre, (r))
            } else {
                let nesterov = sc.nesterov;
                specialize!(V, s, lars_apply, (r); nesterov)
            }
        }
    }
}

/// LARS's per-step scalars (see [`Rule::Lars`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scalars {
    /// Weight decay added to the gradient.
    pub wd: f32,
    /// Momentum of the trace.
    pub mu: f32,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// The learning rate of this step.
    pub lr: f64,
    /// The trust coefficient.
    pub tc: f64,
    /// Added to `||x||`.
    pub eps: f64,
    /// `lr * trust_coefficient * ||p||` (`lr` where a norm is 0), rounded once.
    pub c: f32,
    /// `||x|| + eps` (1 where a norm is 0), rounded once.
    pub d: f32,
}

impl Scalars {
    /// The scalars of the update pass from the buffer's norms.
    pub(super) fn with_norms(self, n: Norms) -> Scalars {
        let (c, d) = trust_ratio(self.lr, self.tc, self.eps, n);
        Scalars { c, d, ..self }
    }
}

/// The vector whose norm LARS's trust ratio takes: the gradient after the pipeline plus the
/// decoupled weight decay, `g + wd*p`.
#[inline(always)]
pub(crate) fn lars_vector<V: Vf32>(g: V, p: V, wd: V) -> V {
    g.add(wd.mul(p))
}

/// LARS's first pass: `x = g + wd*p` into `v_max` (the block scratch).
#[inline(always)]
fn lars_pre<V: Vf32>(
    k: &Lanes<V>,
    [wd, _, _, _]: [V; 4],
    w: &mut Window<'_>,
    (cs, cv, cw, sy): (impl Switch, impl Switch, impl Switch, impl Switch),
) {
    let n = w.len(false, false, true, sy);
    let mut i = 0;
    while n - i >= V::LANES {
        let p = V::load(&w.param[i..]);
        let g = k.grad(V::load(&w.grad[i..]), p, cs, cv, cw);
        lars_vector(g, p, wd).store(&mut w.v_max[i..]);
        i += V::LANES;
    }
}

/// LARS's update pass: `s = c * (x / d)`, `m = mu*m + s`, `p -= m` (Nesterov `s + mu*m`).
#[inline(always)]
fn lars_apply<V: Vf32>(
    k: &Lanes<V>,
    [wd, mu, c, d]: [V; 4],
    w: &mut Window<'_>,
    (cs, cv, cw, sy, ne): (impl Switch, impl Switch, impl Switch, impl Switch, impl Switch),
) {
    let n = w.len(true, false, false, sy);
    let mut i = 0;
    while n - i >= V::LANES {
        let p = V::load(&w.param[i..]);
        let g = k.grad(V::load(&w.grad[i..]), p, cs, cv, cw);
        let s = c.mul(g.add(wd.mul(p)).div(d));
        let m = mu.mul(V::load(&w.m[i..])).add(s);
        m.store(&mut w.m[i..]);
        let step = if ne.on() { s.add(mu.mul(m)) } else { m };
        k.store_param(p.sub(step), w, i, sy);
        i += V::LANES;
    }
}
