//! SGD: plain, heavy-ball momentum with dampening, Nesterov (PyTorch's `torch.optim.SGD`).

use super::Rule;
use crate::error::Error;
use crate::kernels::{specialize, Lanes, Switch, Window};
use crate::simd::Vf32;

super::rule! {
    base {
        /// SGD; `momentum = 0` is plain SGD. PyTorch's dampening; Nesterov needs momentum > 0 and
        /// dampening 0.
        Sgd = 0, "sgd" {
            /// Heavy-ball momentum (0: plain SGD).
            momentum: f64 = 0.0; UnitOpen, f32; c momentum;
            /// Dampening of the gradient in the momentum trace.
            dampening: f64 = 0.0; UnitClosed; c dampening;
            /// Nesterov momentum.
            nesterov: bool = false; Any; c nesterov;
        }
        @state { (momentum > 0.0, false, false) }
        @rule(t, lr) {
            if momentum > 0.0 {
                Rule::Momentum {
                    lr: lr as f32,
                    mu: momentum as f32,
                    damp: (1.0 - dampening) as f32,
                    nesterov,
                    first: t == 1,
                }
            } else {
                Rule::Sgd { lr: lr as f32 }
            }
        }
        @check {
            if nesterov && !(momentum > 0.0 && dampening == 0.0) {
                return Err(Error::invalid(
                    "nesterov",
                    format!("true (momentum = {momentum}, dampening = {dampening})"),
                    "Nesterov momentum requires momentum > 0 and dampening = 0",
                ));
            }
            Ok(())
        }
    }
    kernel {
        /// `p -= lr * g`.
        Sgd {
            /// Learning rate of this step.
            lr: f32,
        }
        @state { (false, false, false) }
        @finite { [("lr", lr)] }
        @span<V>(s) {
            let lr = V::splat(lr);
            specialize!(V, s, sgd, (lr))
        }

        /// Heavy-ball momentum: `b = g` on the first step, else `b = mu*b + damp*g` with
        /// `damp = 1 - dampening`; `d = g + mu*b` (Nesterov) or `b`; `p -= lr * d`.
        Momentum {
            /// Learning rate of this step.
            lr: f32,
            /// Momentum factor.
            mu: f32,
            /// `1 - dampening`.
            damp: f32,
            /// Nesterov momentum.
            nesterov: bool,
            /// The first step (the trace starts as the gradient).
            first: bool,
        }
        @state { (true, false, false) }
        @finite { [("lr", lr)] }
        @span<V>(s) {
            let r = [lr, mu, damp].map(V::splat);
            specialize!(V, s, momentum, (r); nesterov, first)
        }
    }
}

/// SGD: `p -= lr * g`.
#[inline(always)]
fn sgd<V: Vf32>(
    k: &Lanes<V>,
    lr: V,
    w: &mut Window<'_>,
    (cs, cv, wd, sy): (impl Switch, impl Switch, impl Switch, impl Switch),
) {
    let n = w.len(false, false, false, sy);
    let mut i = 0;
    while n - i >= V::LANES {
        let p = V::load(&w.param[i..]);
        let g = k.grad(V::load(&w.grad[i..]), p, cs, cv, wd);
        k.store_param(p.sub(lr.mul(g)), w, i, sy);
        i += V::LANES;
    }
}

/// Heavy-ball momentum, `[lr, mu, damp]` (see [`Rule::Momentum`]).
#[inline(always)]
fn momentum<V: Vf32>(
    k: &Lanes<V>,
    [lr, mu, damp]: [V; 3],
    w: &mut Window<'_>,
    (cs, cv, wd, sy, nesterov, first): (
        impl Switch,
        impl Switch,
        impl Switch,
        impl Switch,
        impl Switch,
        impl Switch,
    ),
) {
    let n = w.len(true, false, false, sy);
    let mut i = 0;
    while n - i >= V::LANES {
        let p = V::load(&w.param[i..]);
        let g = k.grad(V::load(&w.grad[i..]), p, cs, cv, wd);
        let t = if first.on() {
            g
        } else {
            mu.mul(V::load(&w.m[i..])).add(damp.mul(g))
        };
        t.store(&mut w.m[i..]);
        let d = if nesterov.on() { g.add(mu.mul(t)) } else { t };
        k.store_param(p.sub(lr.mul(d)), w, i, sy);
        i += V::LANES;
    }
}
