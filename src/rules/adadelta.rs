//! Adadelta (PyTorch's `torch.optim.Adadelta`, optax's `adadelta` alike).

use super::Rule;
use crate::kernels::{specialize, Lanes, Switch, Window};
use crate::simd::Vf32;

super::rule! {
    base {
        /// Adadelta (PyTorch's `torch.optim.Adadelta`, optax's `adadelta` alike):
        /// `v = rho*v + (1-rho)*g^2`, `d = sqrt(u + eps) / sqrt(v + eps) * g`,
        /// `u = rho*u + (1-rho)*d^2`, `p -= lr*d`.
        Adadelta = 11, "adadelta" {
            /// Decay of both running averages.
            rho: f64 = 0.9; UnitOpen, f32; c rho;
            /// Added inside both square roots.
            eps: f64 = 1e-6; Positive, f32; c eps;
        }
        @state { (true, true, false) }
        @rule(t, lr) {
            Rule::Adadelta {
                lr: lr as f32,
                rho: rho as f32,
                one_minus_rho: (1.0 - rho) as f32,
                eps: eps as f32,
            }
        }
    }
    kernel {
        /// Adadelta: `v = rho*v + one_minus_rho*(g*g)`, `d = sqrt(m + eps) / sqrt(v + eps) * g`,
        /// `m = rho*m + one_minus_rho*(d*d)`, `p -= lr*d` (`v` the squared-gradient average, `m`
        /// the squared-update average).
        Adadelta {
            /// Learning rate of this step.
            lr: f32,
            /// Decay of both averages.
            rho: f32,
            /// `1 - rho`, rounded once.
            one_minus_rho: f32,
            /// Added inside both square roots.
            eps: f32,
        }
        @state { (true, true, false) }
        @finite { [("lr", lr)] }
        @span<V>(s) {
            let r = [lr, rho, one_minus_rho, eps].map(V::splat);
            specialize!(V, s, adadelta, (r))
        }
    }
}

/// Adadelta, `[lr, rho, 1 - rho, eps]` (see [`Rule::Adadelta`]): the squared-gradient
/// average is `v`, the squared-update average `m`.
#[inline(always)]
fn adadelta<V: Vf32>(
    k: &Lanes<V>,
    [lr, rho, c, eps]: [V; 4],
    w: &mut Window<'_>,
    (cs, cv, wd, sy): (impl Switch, impl Switch, impl Switch, impl Switch),
) {
    let n = w.len(true, true, false, sy);
    let mut i = 0;
    while n - i >= V::LANES {
        let p = V::load(&w.param[i..]);
        let g = k.grad(V::load(&w.grad[i..]), p, cs, cv, wd);
        let v = rho.mul(V::load(&w.v[i..])).add(c.mul(g.mul(g)));
        let u0 = V::load(&w.m[i..]);
        let d = u0.add(eps).sqrt().div(v.add(eps).sqrt()).mul(g);
        let u = rho.mul(u0).add(c.mul(d.mul(d)));
        v.store(&mut w.v[i..]);
        u.store(&mut w.m[i..]);
        k.store_param(p.sub(lr.mul(d)), w, i, sy);
        i += V::LANES;
    }
}
