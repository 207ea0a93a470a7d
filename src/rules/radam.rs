//! RAdam with the rectification threshold 5 (PyTorch's `torch.optim.RAdam`).

use super::adam::Moments;
use super::{pow_step, Rule};
use crate::kernels::{specialize, Lanes, Switch, Window};
use crate::simd::Vf32;

super::rule! {
    base {
        /// RAdam with the rectification threshold 5.
        RAdam = 3, "radam" {
            /// First-moment decay.
            b1: f64 = 0.9; UnitOpen, f32; c b1;
            /// Second-moment decay.
            b2: f64 = 0.999; UnitOpen, f32; c b2;
            /// Added outside the square root.
            eps: f64 = 1e-8; Positive, f32; c eps;
        }
        @state { (true, true, false) }
        @rule(t, lr) {
            let tf = t as f64;
            let bc1 = 1.0 - pow_step(b1, tf);
            let bc2 = 1.0 - pow_step(b2, tf);
            let rho_inf = 2.0 / (1.0 - b2) - 1.0;
            let rho_t = rho_inf - 2.0 * tf * pow_step(b2, tf) / bc2;
            let rectified = rho_t >= 5.0;
            let step = if rectified {
                let r = ((rho_t - 4.0) * (rho_t - 2.0) * rho_inf
                    / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t))
                    .sqrt();
                lr * r / bc1
            } else {
                lr / bc1
            };
            Rule::RAdam {
                b1: b1 as f32,
                one_minus_b1: (1.0 - b1) as f32,
                b2: b2 as f32,
                one_minus_b2: (1.0 - b2) as f32,
                step: step as f32,
                inv_sqrt_bc2: (1.0 / bc2.sqrt()) as f32,
                eps: eps as f32,
                rectified,
            }
        }
    }
    kernel {
        /// RAdam: moments as Adam; if `rectified`,
        /// `p -= step * (m / (sqrt(v)*inv_sqrt_bc2 + eps))` with `step = lr * r / (1 - b1^t)`,
        /// else `p -= step * m` with `step = lr / (1 - b1^t)`.
        RAdam {
            /// First-moment decay.
            b1: f32,
            /// `1 - b1`, rounded once.
            one_minus_b1: f32,
            /// Second-moment decay.
            b2: f32,
            /// `1 - b2`, rounded once.
            one_minus_b2: f32,
            /// `lr * r / (1 - b1^t)` when rectified, else `lr / (1 - b1^t)`.
            step: f32,
            /// `1 / sqrt(1 - b2^t)`.
            inv_sqrt_bc2: f32,
            /// Added to the denominator.
            eps: f32,
            /// Whether the variance is tractable at this step (the adaptive update applies).
            rectified: bool,
        }
        @state { (true, true, false) }
        @finite {
            [
                ("step size (lr * r / (1 - b1^t))", step),
                ("inv_sqrt_bc2 (1 / sqrt(1 - b2^t))", inv_sqrt_bc2),
            ]
        }
        @span<V>(s) {
            let r = Moments::new(
                [b1, one_minus_b1, b2, one_minus_b2],
                [step, inv_sqrt_bc2, eps, 1.0],
            );
            specialize!(V, s, radam, (&r); rectified)
        }
    }
}

/// RAdam (see [`Rule::RAdam`]).
#[inline(always)]
fn radam<V: Vf32>(
    k: &Lanes<V>,
    r: &Moments<V>,
    w: &mut Window<'_>,
    (cs, cv, wd, sy, rectified): (
        impl Switch,
        impl Switch,
        impl Switch,
        impl Switch,
        impl Switch,
    ),
) {
    let n = w.len(true, true, false, sy);
    let mut i = 0;
    while n - i >= V::LANES {
        let p = V::load(&w.param[i..]);
        let g = k.grad(V::load(&w.grad[i..]), p, cs, cv, wd);
        let (m, v) = r.update(g, w, i);
        let u = if rectified.on() { r.direction(m, v) } else { m };
        k.store_param(p.sub(r.step.mul(u)), w, i, sy);
        i += V::LANES;
    }
}
