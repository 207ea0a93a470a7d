//! AdaBelief (optax's `adabelief`; PyTorch has none).

use super::adam::Moments;
use super::{pow_step, Rule};
use crate::kernels::{specialize, Lanes, Switch, Window};
use crate::simd::Vf32;

super::rule! {
    base {
        /// AdaBelief (optax's `adabelief`; PyTorch has none): `m = b1*m + (1-b1)*g`,
        /// `s = b2*s + (1-b2)*(g - m)^2 + eps_root`, `p -= lr / (1 - b1^t) * m / (sqrt(s) /
        /// sqrt(1 - b2^t) + eps)`.
        AdaBelief = 9, "adabelief" {
            /// First-moment decay.
            b1: f64 = 0.9; UnitOpen, f32; c b1;
            /// Decay of the belief (the squared prediction error).
            b2: f64 = 0.999; UnitOpen, f32; c b2;
            /// Added outside the square root.
            eps: f64 = 1e-16; Positive, f32; c eps;
            /// Added to the belief at every step (kept in the state, as optax and the paper do).
            eps_root: f64 = 1e-16; NonNeg, f32; c eps_root;
        }
        @state { (true, true, false) }
        @rule(t, lr) {
            let tf = t as f64;
            Rule::AdaBelief {
                b1: b1 as f32,
                one_minus_b1: (1.0 - b1) as f32,
                b2: b2 as f32,
                one_minus_b2: (1.0 - b2) as f32,
                step: (lr / (1.0 - pow_step(b1, tf))) as f32,
                inv_sqrt_bc2: (1.0 / (1.0 - pow_step(b2, tf)).sqrt()) as f32,
                eps: eps as f32,
                eps_root: eps_root as f32,
            }
        }
    }
    kernel {
        /// AdaBelief: `m = b1*m + one_minus_b1*g`, `v = b2*v + one_minus_b2*((g - m)*(g - m)) +
        /// eps_root`, `p -= step * (m / (sqrt(v)*inv_sqrt_bc2 + eps))`.
        AdaBelief {
            /// First-moment decay.
            b1: f32,
            /// `1 - b1`, rounded once.
            one_minus_b1: f32,
            /// Belief decay.
            b2: f32,
            /// `1 - b2`, rounded once.
            one_minus_b2: f32,
            /// `lr / (1 - b1^t)`.
            step: f32,
            /// `1 / sqrt(1 - b2^t)`.
            inv_sqrt_bc2: f32,
            /// Added to the denominator.
            eps: f32,
            /// Added to the belief.
            eps_root: f32,
        }
        @state { (true, true, false) }
        @finite {
            [
                ("step size (lr / (1 - b1^t))", step),
                ("inv_sqrt_bc2 (1 / sqrt(1 - b2^t))", inv_sqrt_bc2),
            ]
        }
        @span<V>(s) {
            let r = Moments::new(
                [b1, one_minus_b1, b2, one_minus_b2],
                [step, inv_sqrt_bc2, eps, eps_root],
            );
            specialize!(V, s, adabelief, (&r))
        }
    }
}

/// AdaBelief (see [`Rule::AdaBelief`]): `r.decay` carries `eps_root`; the belief is `v`.
#[inline(always)]
fn adabelief<V: Vf32>(
    k: &Lanes<V>,
    r: &Moments<V>,
    w: &mut Window<'_>,
    (cs, cv, wd, sy): (impl Switch, impl Switch, impl Switch, impl Switch),
) {
    let n = w.len(true, true, false, sy);
    let mut i = 0;
    while n - i >= V::LANES {
        let p = V::load(&w.param[i..]);
        let g = k.grad(V::load(&w.grad[i..]), p, cs, cv, wd);
        let m = r.b1.mul(V::load(&w.m[i..])).add(r.c1.mul(g));
        let e = g.sub(m);
        let s =
            r.b2.mul(V::load(&w.v[i..]))
                .add(r.c2.mul(e.mul(e)))
                .add(r.decay);
        m.store(&mut w.m[i..]);
        s.store(&mut w.v[i..]);
        k.store_param(p.sub(r.step.mul(r.direction(m, s))), w, i, sy);
        i += V::LANES;
    }
}
