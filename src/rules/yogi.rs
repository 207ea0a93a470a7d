//! Yogi (optax's `yogi`; PyTorch has none).

use super::adam::Moments;
use super::{pow_step, Rule};
use crate::kernels::{sign, specialize, Lanes, Switch, Window};
use crate::simd::Vf32;

super::rule! {
    base {
        /// Yogi (optax's `yogi`; PyTorch has none): `m = b1*m + (1-b1)*g`,
        /// `v = v - (1-b2)*sign(v - g^2)*g^2`, `p -= lr / (1 - b1^t) * m / (sqrt(v) /
        /// sqrt(1 - b2^t) + eps)`; both moments start from `initial_accumulator_value`.
        Yogi = 10, "yogi" {
            /// First-moment decay.
            b1: f64 = 0.9; UnitOpen, f32; c b1;
            /// Second-moment rate.
            b2: f64 = 0.999; UnitOpen, f32; c b2;
            /// Added outside the square root.
            eps: f64 = 1e-3; Positive, f32; c eps;
            /// The value both moments start from.
            initial_accumulator_value: f64 = 1e-6; NonNeg, f32; c initial_accumulator;
        }
        @state { (true, true, false) }
        @init { [initial_accumulator_value as f32, initial_accumulator_value as f32, 0.0] }
        @rule(t, lr) {
            let tf = t as f64;
            Rule::Yogi {
                b1: b1 as f32,
                one_minus_b1: (1.0 - b1) as f32,
                one_minus_b2: (1.0 - b2) as f32,
                step: (lr / (1.0 - pow_step(b1, tf))) as f32,
                inv_sqrt_bc2: (1.0 / (1.0 - pow_step(b2, tf)).sqrt()) as f32,
                eps: eps as f32,
            }
        }
    }
    kernel {
        /// Yogi: `m = b1*m + one_minus_b1*g`, `v = v - sign(v - g*g) * (one_minus_b2*(g*g))`,
        /// `p -= step * (m / (sqrt(v)*inv_sqrt_bc2 + eps))`.
        Yogi {
            /// First-moment decay.
            b1: f32,
            /// `1 - b1`, rounded once.
            one_minus_b1: f32,
            /// `1 - b2`, rounded once.
            one_minus_b2: f32,
            /// `lr / (1 - b1^t)`.
            step: f32,
            /// `1 / sqrt(1 - b2^t)`.
            inv_sqrt_bc2: f32,
            /// Added to the denominator.
            eps: f32,
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
                [b1, one_minus_b1, 1.0, one_minus_b2],
                [step, inv_sqrt_bc2, eps, 1.0],
            );
            specialize!(V, s, yogi, (&r))
        }
    }
}

/// Yogi (see [`Rule::Yogi`]): `r.c2` is `1 - b2` (`r.b2` unused).
#[inline(always)]
fn yogi<V: Vf32>(
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
        let v0 = V::load(&w.v[i..]);
        let g2 = g.mul(g);
        let v = v0.sub(sign(v0.sub(g2)).mul(r.c2.mul(g2)));
        m.store(&mut w.m[i..]);
        v.store(&mut w.v[i..]);
        k.store_param(p.sub(r.step.mul(r.direction(m, v))), w, i, sy);
        i += V::LANES;
    }
}
