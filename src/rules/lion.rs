//! Lion (optax's `lion`; PyTorch has none).

use super::Rule;
use crate::kernels::{sign, specialize, Lanes, Switch, Window};
use crate::simd::Vf32;

super::rule! {
    base {
        /// Lion (optax's `lion`; PyTorch has none): `u = sign(b1*m + (1-b1)*g)`,
        /// `m = b2*m + (1-b2)*g`, `p = p*(1 - lr*weight_decay) - lr*u`.
        Lion = 8, "lion" {
            /// Interpolation of the update direction.
            b1: f64 = 0.9; UnitOpen, f32; c b1;
            /// Decay of the momentum.
            b2: f64 = 0.99; UnitOpen, f32; c b2;
            /// Decoupled weight decay: `p *= 1 - lr * weight_decay` (optax: 1e-3).
            weight_decay as "weight_decay (decoupled)": f64 = 0.0; NonNeg, f32;
                c decoupled_weight_decay;
        }
        @state { (true, false, false) }
        @rule(t, lr) {
            Rule::Lion {
                lr: lr as f32,
                b1: b1 as f32,
                one_minus_b1: (1.0 - b1) as f32,
                b2: b2 as f32,
                one_minus_b2: (1.0 - b2) as f32,
                decay: (1.0 - lr * weight_decay) as f32,
            }
        }
    }
    kernel {
        /// Lion: `u = sign(b1*m + one_minus_b1*g)` (a zero or NaN kept as is),
        /// `m = b2*m + one_minus_b2*g`, `p = p*decay - lr*u` with `decay = 1 - lr*weight_decay`.
        Lion {
            /// Learning rate of this step.
            lr: f32,
            /// Interpolation of the update direction.
            b1: f32,
            /// `1 - b1`, rounded once.
            one_minus_b1: f32,
            /// Decay of the momentum.
            b2: f32,
            /// `1 - b2`, rounded once.
            one_minus_b2: f32,
            /// `1 - lr * weight_decay` (exactly 1 without decay).
            decay: f32,
        }
        @state { (true, false, false) }
        @finite { [("lr", lr), ("decay factor (1 - lr * weight_decay)", decay)] }
        @span<V>(s) {
            let r = [lr, b1, one_minus_b1, b2, one_minus_b2, decay].map(V::splat);
            specialize!(V, s, lion, (r))
        }
    }
}

/// Lion, `[lr, b1, 1 - b1, b2, 1 - b2, decay]` (see [`Rule::Lion`]): the momentum is `m`.
#[inline(always)]
fn lion<V: Vf32>(
    k: &Lanes<V>,
    [lr, b1, c1, b2, c2, decay]: [V; 6],
    w: &mut Window<'_>,
    (cs, cv, wd, sy): (impl Switch, impl Switch, impl Switch, impl Switch),
) {
    let n = w.len(true, false, false, sy);
    let mut i = 0;
    while n - i >= V::LANES {
        let p = V::load(&w.param[i..]);
        let g = k.grad(V::load(&w.grad[i..]), p, cs, cv, wd);
        let m0 = V::load(&w.m[i..]);
        let u = sign(b1.mul(m0).add(c1.mul(g)));
        b2.mul(m0).add(c2.mul(g)).store(&mut w.m[i..]);
        k.store_param(p.mul(decay).sub(lr.mul(u)), w, i, sy);
        i += V::LANES;
    }
}
