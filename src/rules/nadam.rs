//! NAdam with PyTorch's momentum schedule (`torch.optim.NAdam`; optax's as an option).

use super::adam::Moments;
use super::{pow_step, Rule};
use crate::kernels::{specialize, Lanes, Switch, Window};
use crate::simd::Vf32;

super::rule! {
    base {
        /// NAdam (PyTorch's `torch.optim.NAdam`): momentum schedule
        /// `mu_t = b1*(1 - 0.5*0.96^(t*momentum_decay))`, `P_t = mu_1*...*mu_t`; moments as Adam;
        /// `d = sqrt(v)/sqrt(1 - b2^t) + eps`,
        /// `p -= lr*(1 - mu_t)/(1 - P_t) * g/d + lr*mu_{t+1}/(1 - P_t*mu_{t+1}) * m/d`.
        /// optax's `nadam` is `constant_momentum = true` (`mu_t = b1`, `P_t = b1^t`). PyTorch's
        /// `decoupled_weight_decay` form: `p *= 1 - lr*decoupled_weight_decay` first.
        NAdam = 7, "nadam" {
            /// First-moment decay.
            b1: f64 = 0.9; UnitOpen, f32; c b1;
            /// Second-moment decay.
            b2: f64 = 0.999; UnitOpen, f32; c b2;
            /// Added outside the square root.
            eps: f64 = 1e-8; Positive, f32; c eps;
            /// psi of the momentum schedule `mu_t = b1*(1 - 0.5*0.96^(t*psi))`.
            momentum_decay: f64 = 0.004; NonNeg; c momentum_decay;
            /// optax's form: `mu_t = b1` at every step (no schedule).
            constant_momentum: bool = false; Any; c constant_momentum;
            /// Decoupled weight decay (PyTorch's NAdamW): `p *= 1 - lr * decoupled_weight_decay`.
            decoupled_weight_decay: f64 = 0.0; NonNeg, f32; c decoupled_weight_decay;
        }
        @state { (true, true, false) }
        @rule(t, lr) {
            let tf = t as f64;
            let (mu, mu_next, product) = if constant_momentum {
                (b1, b1, pow_step(b1, tf))
            } else {
                let mu_at = |t: f64| b1 * (1.0 - 0.5 * 0.96f64.powf(t * momentum_decay));
                (mu_at(tf), mu_at(tf + 1.0), nadam_mu_product(b1, momentum_decay, tf))
            };
            let bc2 = 1.0 - pow_step(b2, tf);
            Rule::NAdam {
                b1: b1 as f32,
                one_minus_b1: (1.0 - b1) as f32,
                b2: b2 as f32,
                one_minus_b2: (1.0 - b2) as f32,
                grad_step: (lr * (1.0 - mu) / (1.0 - product)) as f32,
                momentum_step: (lr * mu_next / (1.0 - product * mu_next)) as f32,
                inv_sqrt_bc2: (1.0 / bc2.sqrt()) as f32,
                eps: eps as f32,
                decay: (decoupled_weight_decay > 0.0)
                    .then_some((1.0 - lr * decoupled_weight_decay) as f32),
            }
        }
    }
    kernel {
        /// NAdam: moments as Adam, `d = sqrt(v)*inv_sqrt_bc2 + eps`,
        /// `p = p*decay - (grad_step*g + momentum_step*m) / d` (`decay` only with decoupled
        /// weight decay).
        NAdam {
            /// First-moment decay.
            b1: f32,
            /// `1 - b1`, rounded once.
            one_minus_b1: f32,
            /// Second-moment decay.
            b2: f32,
            /// `1 - b2`, rounded once.
            one_minus_b2: f32,
            /// `lr * (1 - mu_t) / (1 - P_t)`.
            grad_step: f32,
            /// `lr * mu_{t+1} / (1 - P_t * mu_{t+1})`.
            momentum_step: f32,
            /// `1 / sqrt(1 - b2^t)`.
            inv_sqrt_bc2: f32,
            /// Added to the denominator.
            eps: f32,
            /// `1 - lr * decoupled_weight_decay`, `None` without decoupled decay.
            decay: Option<f32>,
        }
        @state { (true, true, false) }
        @finite {
            [
                ("gradient step (lr * (1 - mu_t) / (1 - P_t))", grad_step),
                (
                    "momentum step (lr * mu_{t+1} / (1 - P_t * mu_{t+1}))",
                    momentum_step,
                ),
                (
                    "decay factor (1 - lr * decoupled_weight_decay)",
                    decay.unwrap_or(1.0),
                ),
            ]
        }
        @span<V>(s) {
            let r = Moments::new(
                [b1, one_minus_b1, b2, one_minus_b2],
                [momentum_step, inv_sqrt_bc2, eps, decay.unwrap_or(1.0)],
            );
            let (gs, decoupled) = (V::splat(grad_step), decay.is_some());
            specialize!(V, s, nadam, (&r, gs); decoupled)
        }
    }
}

/// NAdam's momentum product `P_t = mu_1 * ... * mu_t` with `mu_i = b1*(1 - 0.5*q^i)`,
/// `q = 0.96^psi`, at once for any `t`: `P_t = b1^t * exp(S)` with
/// `S = sum_i ln(1 - 0.5*q^i) = -sum_{k>=1} (0.5^k / k) * q^k * (1 - q^(k t)) / (1 - q^k)`
/// (the series of `ln(1 - x)`, each geometric sum over `i` in closed form; `t` for `q = 1`).
/// 60 terms: term `k` is below `0.5^(k-1) / k` of the first, so the rest is under an f64 ulp.
/// PyTorch multiplies the `mu_i` step by step; this is its value without a running state
/// (the step counter is the state, as for every other per-step scalar).
fn nadam_mu_product(b1: f64, psi: f64, t: f64) -> f64 {
    let ln_q = psi * 0.96f64.ln();
    let mut s = 0.0;
    let mut half_k = 1.0;
    for k in 1..=60 {
        let k = f64::from(k);
        half_k *= 0.5;
        let geometric = if ln_q == 0.0 {
            t
        } else {
            (k * t * ln_q).exp_m1() / (k * ln_q).exp_m1()
        };
        s -= half_k / k * (k * ln_q).exp() * geometric;
    }
    pow_step(b1, t) * s.exp()
}

/// NAdam (see [`Rule::NAdam`]): `r.step` is the momentum step, `gs` the gradient step.
#[inline(always)]
fn nadam<V: Vf32>(
    k: &Lanes<V>,
    r: &Moments<V>,
    gs: V,
    w: &mut Window<'_>,
    (cs, cv, wd, sy, decoupled): (
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
        let d = v.sqrt().mul(r.isb2).add(r.eps);
        let u = gs.mul(g).add(r.step.mul(m)).div(d);
        let pd = if decoupled.on() { p.mul(r.decay) } else { p };
        k.store_param(pd.sub(u), w, i, sy);
        i += V::LANES;
    }
}

#[cfg(test)]
mod tests {
    use super::nadam_mu_product;

    /// The closed form of NAdam's momentum product against the running product, and its
    /// limits (psi = 0: `(b1/2)^t`; huge psi: `b1^t`).
    #[test]
    fn nadam_mu_product_is_the_running_product() {
        for (b1, psi) in [
            (0.9, 0.004),
            (0.99, 0.004),
            (0.5, 0.1),
            (0.9, 0.0),
            (0.9, 1e300),
        ] {
            let mut running = 1.0f64;
            for t in 1..=3000u32 {
                let t = f64::from(t);
                running *= b1 * (1.0 - 0.5 * 0.96f64.powf(t * psi));
                let closed = nadam_mu_product(b1, psi, t);
                let tol = 1e-12 * running + 1e-300;
                assert!(
                    (closed - running).abs() <= tol,
                    "b1 {b1} psi {psi} t {t}: {closed} vs {running}"
                );
            }
        }
        assert_eq!(nadam_mu_product(0.9, 0.004, 1e19), 0.0);
        assert_eq!(nadam_mu_product(0.0, 0.004, 3.0), 0.0);
    }
}
