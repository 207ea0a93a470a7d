//! RMSprop, optionally with momentum and centered (PyTorch's `torch.optim.RMSprop`; optax's
//! as options).

use super::{eps_split, Rule};
use crate::kernels::{specialize, Lanes, Switch, Window};
use crate::simd::Vf32;

super::rule! {
    base {
        /// RMSprop (PyTorch's `torch.optim.RMSprop`): `v = alpha*v + (1-alpha)*g*g`; centered:
        /// `a = alpha*a + (1-alpha)*g`, `max(v - a*a, 0)` in place of `v`; `u = g / (sqrt(v) + eps)`;
        /// with momentum `b = momentum*b + u`, `p -= lr*b`, else `p -= lr*u`. optax's `rmsprop`
        /// is `alpha = decay = 0.9, eps_inside_sqrt = true` (its `initial_scale` here too).
        RmsProp = 5, "rmsprop" {
            /// Smoothing constant of the squared-gradient average (optax: `decay`, 0.9).
            alpha: f64 = 0.99; UnitOpen, f32; c alpha;
            /// Added outside the square root (inside with `eps_inside_sqrt`).
            eps: f64 = 1e-8; Positive, f32; c eps;
            /// Momentum of the scaled update (0: none).
            momentum: f64 = 0.0; UnitOpen, f32; c momentum;
            /// Centered: normalise by the estimated variance `v - a*a`.
            centered: bool = false; Any; c centered;
            /// optax's form: `g / sqrt(v + eps)` instead of PyTorch's `g / (sqrt(v) + eps)`.
            eps_inside_sqrt: bool = false; Any; c eps_inside_sqrt;
            /// The value the squared-gradient average starts from (optax's `initial_scale`).
            initial_scale: f64 = 0.0; NonNeg, f32; c initial_accumulator;
        }
        @state { (momentum > 0.0, true, centered) }
        @init { [0.0, initial_scale as f32, 0.0] }
        @rule(t, lr) {
            let (eps_in, eps_out) = eps_split(eps, eps_inside_sqrt);
            Rule::RmsProp {
                lr: lr as f32,
                alpha: alpha as f32,
                one_minus_alpha: (1.0 - alpha) as f32,
                eps_in,
                eps_out,
                mu: (momentum > 0.0).then_some(momentum as f32),
                centered,
            }
        }
    }
    kernel {
        /// RMSprop: `v = alpha*v + one_minus_alpha*(g*g)`; centered: `a = alpha*a +
        /// one_minus_alpha*g` (in `v_max`) and `d = max(v - a*a, 0)`, else `d = v`;
        /// `u = g / (sqrt(d + eps_in) + eps_out)`; with momentum `mu`, `m = mu*m + u` and
        /// `p -= lr*m`, else `p -= lr*u`.
        RmsProp {
            /// The learning rate.
            lr: f32,
            /// Smoothing constant of the averages.
            alpha: f32,
            /// `1 - alpha`, rounded once.
            one_minus_alpha: f32,
            /// eps under the square root (optax's form), else 0.
            eps_in: f32,
            /// eps added to the square root (PyTorch's form), else 0.
            eps_out: f32,
            /// The momentum of the scaled update, `None` without momentum.
            mu: Option<f32>,
            /// Centered: the gradient average's square is subtracted from `v`.
            centered: bool,
        }
        @state { (mu.is_some(), true, centered) }
        @finite { [("lr", lr)] }
        @span<V>(s) {
            let r = [
                lr,
                alpha,
                one_minus_alpha,
                eps_in,
                eps_out,
                mu.unwrap_or(0.0),
            ]
            .map(V::splat);
            let momentum = mu.is_some();
            specialize!(V, s, rmsprop, (r); centered, momentum)
        }
    }
}

/// RMSprop, `[lr, alpha, 1 - alpha, eps_in, eps_out, mu]` (see [`Rule::RmsProp`]): the squared
/// average is `v`, the momentum buffer `m`, the centered gradient average `v_max`.
#[inline(always)]
fn rmsprop<V: Vf32>(
    k: &Lanes<V>,
    [lr, alpha, c, eps_in, eps_out, mu]: [V; 6],
    w: &mut Window<'_>,
    (cs, cv, wd, sy, centered, momentum): (
        impl Switch,
        impl Switch,
        impl Switch,
        impl Switch,
        impl Switch,
        impl Switch,
    ),
) {
    let n = w.len(momentum.on(), true, centered.on(), sy);
    let mut i = 0;
    while n - i >= V::LANES {
        let p = V::load(&w.param[i..]);
        let g = k.grad(V::load(&w.grad[i..]), p, cs, cv, wd);
        let v = alpha.mul(V::load(&w.v[i..])).add(c.mul(g.mul(g)));
        v.store(&mut w.v[i..]);
        let d = if centered.on() {
            let a = alpha.mul(V::load(&w.v_max[i..])).add(c.mul(g));
            a.store(&mut w.v_max[i..]);
            // The variance estimate is >= 0 in exact arithmetic; rounding can take `v - a*a`
            // below 0 (a gradient that stays constant), where PyTorch's and optax's square
            // roots give NaN. Clamped at 0 with NaN second, so a NaN still passes.
            V::splat(0.0).max(v.sub(a.mul(a)))
        } else {
            v
        };
        let u = g.div(d.add(eps_in).sqrt().add(eps_out));
        let u = if momentum.on() {
            let b = mu.mul(V::load(&w.m[i..])).add(u);
            b.store(&mut w.m[i..]);
            b
        } else {
            u
        };
        k.store_param(p.sub(lr.mul(u)), w, i, sy);
        i += V::LANES;
    }
}
