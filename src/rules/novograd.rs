//! NovoGrad (optax's `novograd`; PyTorch has none): a second moment per registered buffer
//! (of the gradient's squared norm) normalizing the gradient before the momentum.

use super::{Norms, Rule};
use crate::kernels::{grad_into_scratch, specialize, Lanes, Switch, Window};
use crate::simd::Vf32;

super::rule! {
    base {
        /// NovoGrad (Ginsburg et al., 2019; optax's `novograd`): per registered buffer
        /// `nu = ||g||^2` on the first step, else `nu = b2*nu + (1-b2)*||g||^2`; then
        /// `m = b1*m + g / (sqrt(nu + eps_root) + eps) + weight_decay*p`, `p -= lr * m`. `nu`
        /// is kept in element 0 of `v` (f32, as optax keeps it).
        Novograd = 15, "novograd" {
            /// Momentum of the normalized gradient.
            b1: f64 = 0.9; UnitOpen, f32; c b1;
            /// Decay of the per-buffer second moment.
            b2: f64 = 0.25; UnitOpen; c b2;
            /// Added outside the square root.
            eps: f64 = 1e-6; Positive; c eps;
            /// Added inside the square root.
            eps_root: f64 = 0.0; NonNeg; c eps_root;
            /// Weight decay added to the normalized gradient: `+ weight_decay * p`.
            weight_decay as "weight_decay (decoupled)": f64 = 0.0; NonNeg, f32;
                c decoupled_weight_decay;
        }
        @state { (true, true, false) }
        @rule(t, lr) {
            Rule::Novograd {
                pre: false,
                sc: Scalars {
                    b1: b1 as f32,
                    wd: weight_decay as f32,
                    lr: lr as f32,
                    b2,
                    eps,
                    eps_root,
                    first: t == 1,
                    d: 1.0,
                },
            }
        }
    }
    kernel {
        /// NovoGrad in two passes over each buffer (see `kernels::trust`): with `pre`, the
        /// gradient (after clipping and coupled decay) into the `v_max` slot (a block scratch),
        /// whose sum of squares updates `nu` (element 0 of `v`); then
        /// `m = b1*m + g / d + wd*p`, `p -= lr * m` with `d = sqrt(nu + eps_root) + eps`.
        Novograd {
            /// The pass before the update.
            pre: bool,
            /// The per-step scalars.
            sc: crate::rules::novograd::Scalars,
        }
        @state { (true, true, pre) }
        @finite { [("lr", sc.lr), ("denominator (sqrt(nu + eps_root) + eps)", sc.d)] }
        @span<V>(s) {
            let r = [sc.b1, sc.wd, sc.lr, sc.d].map(V::splat);
            if pre {
                specialize!(V, s, grad_into_scratch, (r))
            } else {
                specialize!(V, s, novograd_apply, (r))
            }
        }
    }
}

/// NovoGrad's per-step scalars (see [`Rule::Novograd`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scalars {
    /// Momentum of the normalized gradient.
    pub b1: f32,
    /// Weight decay.
    pub wd: f32,
    /// The learning rate of this step.
    pub lr: f32,
    /// Decay of the per-buffer second moment.
    pub b2: f64,
    /// Added outside the square root.
    pub eps: f64,
    /// Added inside the square root.
    pub eps_root: f64,
    /// The first step: `nu = ||g||^2`.
    pub first: bool,
    /// `sqrt(nu + eps_root) + eps`, rounded once.
    pub d: f32,
}

impl Scalars {
    /// The scalars of the update pass from the gradient's sum of squares and the stored `nu`
    /// (`n.v0`), with the new `nu` (rounded to f32, as stored).
    pub(super) fn with_norms(self, n: Norms) -> (Scalars, f32) {
        let nu = if self.first {
            n.x
        } else {
            self.b2 * f64::from(n.v0) + (1.0 - self.b2) * n.x
        } as f32;
        let d = ((f64::from(nu) + self.eps_root).sqrt() + self.eps) as f32;
        (Scalars { d, ..self }, nu)
    }
}

/// NovoGrad's update pass: `m = b1*m + g / d + wd*p`, `p -= lr * m`.
#[inline(always)]
fn novograd_apply<V: Vf32>(
    k: &Lanes<V>,
    [b1, wd, lr, d]: [V; 4],
    w: &mut Window<'_>,
    (cs, cv, cw, sy): (impl Switch, impl Switch, impl Switch, impl Switch),
) {
    let n = w.len(true, false, false, sy);
    let mut i = 0;
    while n - i >= V::LANES {
        let p = V::load(&w.param[i..]);
        let g = k.grad(V::load(&w.grad[i..]), p, cs, cv, cw);
        let m = b1
            .mul(V::load(&w.m[i..]))
            .add(g.div(d).add(wd.mul(p)));
        m.store(&mut w.m[i..]);
        k.store_param(p.sub(lr.mul(m)), w, i, sy);
        i += V::LANES;
    }
}
