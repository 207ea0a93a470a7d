//! Adagrad (PyTorch's `torch.optim.Adagrad`; optax's as options).

use super::{eps_split, Rule};
use crate::kernels::{specialize, Lanes, Switch, Window};
use crate::simd::Vf32;

super::rule! {
    base {
        /// Adagrad (PyTorch's `torch.optim.Adagrad`): `s += g*g`,
        /// `p -= clr * g / (sqrt(s) + eps)` with `clr = lr / (1 + (t - 1) * lr_decay)`. optax's
        /// `adagrad` is `initial_accumulator_value = 0.1, eps = 1e-7, eps_inside_sqrt = true`,
        /// no lr decay.
        Adagrad = 4, "adagrad" {
            /// Learning-rate decay: step `t` uses `lr / (1 + (t - 1) * lr_decay)`.
            lr_decay: f64 = 0.0; NonNeg; c lr_decay;
            /// The value the sum of squared gradients starts from (optax: 0.1).
            initial_accumulator_value: f64 = 0.0; NonNeg, f32; c initial_accumulator;
            /// Added outside the square root (inside with `eps_inside_sqrt`; optax: 1e-7, inside).
            eps: f64 = 1e-10; Positive, f32; c eps;
            /// optax's form: `g / sqrt(s + eps)` instead of PyTorch's `g / (sqrt(s) + eps)`.
            eps_inside_sqrt: bool = false; Any; c eps_inside_sqrt;
        }
        @state { (false, true, false) }
        @init { [0.0, initial_accumulator_value as f32, 0.0] }
        @rule(t, lr) {
            let (eps_in, eps_out) = eps_split(eps, eps_inside_sqrt);
            Rule::Adagrad {
                step: (lr / (1.0 + (t - 1) as f64 * lr_decay)) as f32,
                eps_in,
                eps_out,
            }
        }
    }
    kernel {
        /// Adagrad: `v = v + g*g`, `p -= step * (g / (sqrt(v + eps_in) + eps_out))` with
        /// `step = lr / (1 + (t-1)*lr_decay)`; one of `eps_in` (optax) and `eps_out` (PyTorch)
        /// is 0.
        Adagrad {
            /// `lr / (1 + (t-1)*lr_decay)`.
            step: f32,
            /// eps under the square root (optax's form), else 0.
            eps_in: f32,
            /// eps added to the square root (PyTorch's form), else 0.
            eps_out: f32,
        }
        @state { (false, true, false) }
        @finite { [("step size (lr / (1 + (t - 1) * lr_decay))", step)] }
        @span<V>(s) {
            let r = [step, eps_in, eps_out].map(V::splat);
            specialize!(V, s, adagrad, (r))
        }
    }
}

/// Adagrad, `[step, eps_in, eps_out]` (see [`Rule::Adagrad`]); the sum of squares is `v`.
#[inline(always)]
fn adagrad<V: Vf32>(
    k: &Lanes<V>,
    [step, eps_in, eps_out]: [V; 3],
    w: &mut Window<'_>,
    (cs, cv, wd, sy): (impl Switch, impl Switch, impl Switch, impl Switch),
) {
    let n = w.len(false, true, false, sy);
    let mut i = 0;
    while n - i >= V::LANES {
        let p = V::load(&w.param[i..]);
        let g = k.grad(V::load(&w.grad[i..]), p, cs, cv, wd);
        let s = V::load(&w.v[i..]).add(g.mul(g));
        s.store(&mut w.v[i..]);
        let u = g.div(s.add(eps_in).sqrt().add(eps_out));
        k.store_param(p.sub(step.mul(u)), w, i, sy);
        i += V::LANES;
    }
}
