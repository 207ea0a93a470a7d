//! Adamax (PyTorch's `torch.optim.Adamax`; optax's as an option).

use super::{eps_split, pow_step, Rule};
use crate::kernels::{specialize, Lanes, Switch, Window};
use crate::simd::Vf32;

super::rule! {
    base {
        /// Adamax (PyTorch's `torch.optim.Adamax`): `m = b1*m + (1-b1)*g`,
        /// `u = max(b2*u, |g| + eps)`, `p -= lr / (1 - b1^t) * (m / u)`. optax's `adamax` is
        /// `eps_outside_max = true`: `u = max(b2*u, |g|)`, `p -= lr / (1 - b1^t) * (m / (u + eps))`.
        Adamax = 6, "adamax" {
            /// First-moment decay.
            b1: f64 = 0.9; UnitOpen, f32; c b1;
            /// Decay of the infinity norm.
            b2: f64 = 0.999; UnitOpen, f32; c b2;
            /// Added to `|g|` inside the maximum (outside with `eps_outside_max`).
            eps: f64 = 1e-8; Positive, f32; c eps;
            /// optax's form: `m / (u + eps)` with `u = max(b2*u, |g|)`.
            eps_outside_max: bool = false; Any; c eps_outside_max;
        }
        @state { (true, true, false) }
        @rule(t, lr) {
            let (eps_in, eps_out) = eps_split(eps, !eps_outside_max);
            Rule::Adamax {
                b1: b1 as f32,
                one_minus_b1: (1.0 - b1) as f32,
                b2: b2 as f32,
                step: (lr / (1.0 - pow_step(b1, t as f64))) as f32,
                eps_in,
                eps_out,
            }
        }
    }
    kernel {
        /// Adamax: `m = b1*m + one_minus_b1*g`, `v = max(b2*v, |g| + eps_in)` (the infinity
        /// norm), `p -= step * (m / (v + eps_out))` with `step = lr / (1 - b1^t)`.
        Adamax {
            /// First-moment decay.
            b1: f32,
            /// `1 - b1`, rounded once.
            one_minus_b1: f32,
            /// Decay of the infinity norm.
            b2: f32,
            /// `lr / (1 - b1^t)`.
            step: f32,
            /// eps added to `|g|` inside the maximum (PyTorch's form), else 0.
            eps_in: f32,
            /// eps added after the maximum (optax's form), else 0.
            eps_out: f32,
        }
        @state { (true, true, false) }
        @finite { [("step size (lr / (1 - b1^t))", step)] }
        @span<V>(s) {
            let r = [b1, one_minus_b1, b2, step, eps_in, eps_out].map(V::splat);
            specialize!(V, s, adamax, (r))
        }
    }
}

/// Adamax, `[b1, 1 - b1, b2, step, eps_in, eps_out]` (see [`Rule::Adamax`]): the infinity
/// norm is `v`. `|g| + eps_in` goes second into the maximum, so a NaN gradient stays NaN.
#[inline(always)]
fn adamax<V: Vf32>(
    k: &Lanes<V>,
    [b1, c1, b2, step, eps_in, eps_out]: [V; 6],
    w: &mut Window<'_>,
    (cs, cv, wd, sy): (impl Switch, impl Switch, impl Switch, impl Switch),
) {
    let n = w.len(true, true, false, sy);
    let mut i = 0;
    while n - i >= V::LANES {
        let p = V::load(&w.param[i..]);
        let g = k.grad(V::load(&w.grad[i..]), p, cs, cv, wd);
        let m = b1.mul(V::load(&w.m[i..])).add(c1.mul(g));
        let u = b2.mul(V::load(&w.v[i..])).max(g.abs().add(eps_in));
        m.store(&mut w.m[i..]);
        u.store(&mut w.v[i..]);
        k.store_param(p.sub(step.mul(m.div(u.add(eps_out)))), w, i, sy);
        i += V::LANES;
    }
}
