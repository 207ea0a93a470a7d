//! Rprop with step-size bounds (PyTorch's `torch.optim.Rprop`).

use super::Rule;
use crate::error::Error;
use crate::kernels::{sign, specialize, Lanes, Switch, Window};
use crate::simd::Vf32;

super::rule! {
    base {
        /// Rprop (PyTorch's `torch.optim.Rprop`): per element a step size, from the learning
        /// rate of the first step; `s = g * g_prev`; the step size times `eta_plus` if `s > 0`,
        /// `eta_minus` if `s < 0`, clamped to `[min_step_size, max_step_size]`; after a sign
        /// change the gradient counts as 0; `p -= sign(g) * step size`.
        Rprop = 12, "rprop" {
            /// Step-size factor after a sign change, in (0, 1).
            eta_minus: f64 = 0.5; UnitExclusive, f32; c eta_minus;
            /// Step-size factor while the sign holds, > 1.
            eta_plus: f64 = 1.2; Positive, f32; c eta_plus;
            /// Lower bound of the step sizes.
            min_step_size: f64 = 1e-6; NonNeg, f32; c min_step_size;
            /// Upper bound of the step sizes.
            max_step_size: f64 = 50.0; Positive, f32; c max_step_size;
        }
        @state { (true, true, false) }
        @rule(t, lr) {
            Rule::Rprop {
                initial_step: lr as f32,
                eta_minus: eta_minus as f32,
                eta_plus: eta_plus as f32,
                min_step: min_step_size as f32,
                max_step: max_step_size as f32,
                first: t == 1,
            }
        }
        @check {
            if eta_plus <= 1.0 {
                return Err(Error::invalid(
                    "eta_plus",
                    eta_plus,
                    "must be > 1 (the step size grows while the gradient keeps its sign)",
                ));
            }
            if min_step_size > max_step_size {
                return Err(Error::invalid(
                    "min_step_size",
                    format!("{min_step_size} (max_step_size = {max_step_size})"),
                    "must not exceed max_step_size",
                ));
            }
            Ok(())
        }
    }
    kernel {
        /// Rprop: `s = g * prev` (`prev` in `m`, 0 on the first step); the step size (in `v`;
        /// `initial_step` on the first step) times `eta_plus` if `s > 0`, `eta_minus` if
        /// `s < 0`, 1 otherwise, clamped to `[min_step, max_step]`; `g = 0` where `s < 0`;
        /// `p -= sign(g) * step size`; `prev = g`.
        Rprop {
            /// The step size every element starts from: the learning rate of the first step.
            initial_step: f32,
            /// Factor after a sign change.
            eta_minus: f32,
            /// Factor while the sign holds.
            eta_plus: f32,
            /// Lower bound of the step sizes.
            min_step: f32,
            /// Upper bound of the step sizes.
            max_step: f32,
            /// The first step: the state is not read (previous gradient 0, step size
            /// `initial_step`).
            first: bool,
        }
        @state { (true, true, false) }
        @finite { [("initial step size (lr)", initial_step)] }
        @span<V>(s) {
            let r = [initial_step, eta_minus, eta_plus, min_step, max_step].map(V::splat);
            specialize!(V, s, rprop, (r); first)
        }
    }
}

/// Rprop, `[initial step, eta_minus, eta_plus, min step, max step]` (see [`Rule::Rprop`]): the
/// previous gradient is `m`, the step sizes `v`; on the first step neither is read.
#[inline(always)]
fn rprop<V: Vf32>(
    k: &Lanes<V>,
    [initial, eta_minus, eta_plus, lo, hi]: [V; 5],
    w: &mut Window<'_>,
    (cs, cv, wd, sy, first): (
        impl Switch,
        impl Switch,
        impl Switch,
        impl Switch,
        impl Switch,
    ),
) {
    let n = w.len(true, true, false, sy);
    let (zero, one) = (V::splat(0.0), V::splat(1.0));
    let mut i = 0;
    while n - i >= V::LANES {
        let p = V::load(&w.param[i..]);
        let g = k.grad(V::load(&w.grad[i..]), p, cs, cv, wd);
        let (prev, size) = if first.on() {
            (zero, initial)
        } else {
            (V::load(&w.m[i..]), V::load(&w.v[i..]))
        };
        let s = g.mul(prev);
        let factor = s.select_gt(zero, eta_plus, zero.select_gt(s, eta_minus, one));
        // PyTorch's clamp_(min, max): min(max(x, lo), hi), the possibly-NaN value second.
        let size = hi.min(lo.max(size.mul(factor)));
        let g = zero.select_gt(s, zero, g);
        g.store(&mut w.m[i..]);
        size.store(&mut w.v[i..]);
        k.store_param(p.sub(sign(g).mul(size)), w, i, sy);
        i += V::LANES;
    }
}
