//! The plan of one update: the base rule with its per-step scalars (computed in f64, rounded to
//! f32 once), the optional pipeline steps, and the buffers a fused pass reads and writes, with
//! their length check. Plain data and arithmetic: no loop, no tier.

use crate::config::Base;
use crate::error::Error;
use crate::simd::FpMode;

/// The base update rule of one step with its per-step scalars, already rounded to f32 (they are
/// computed in f64 by [`Rule::for_step`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rule {
    /// `p -= lr * g`.
    Sgd { lr: f32 },
    /// Heavy-ball momentum: `b = g` on the first step, else `b = mu*b + damp*g` with
    /// `damp = 1 - dampening`; `d = g + mu*b` (Nesterov) or `b`; `p -= lr * d`.
    Momentum {
        lr: f32,
        mu: f32,
        damp: f32,
        nesterov: bool,
        first: bool,
    },
    /// Adam / AMSGrad / AdamW: `m = b1*m + (1-b1)*g`, `v = b2*v + (1-b2)*g*g`
    /// (AMSGrad: `v_max = max(v_max, v)` used in place of v),
    /// `p = p*decay - step * (m / (sqrt(v)*inv_sqrt_bc2 + eps))`
    /// with `step = lr / (1 - b1^t)`, `inv_sqrt_bc2 = 1 / sqrt(1 - b2^t)` and, for AdamW only,
    /// `decay = 1 - lr*lambda`.
    Adam {
        b1: f32,
        one_minus_b1: f32,
        b2: f32,
        one_minus_b2: f32,
        step: f32,
        inv_sqrt_bc2: f32,
        eps: f32,
        amsgrad: bool,
        decay: Option<f32>,
    },
    /// RAdam: moments as Adam; if `rectified`, `p -= step * (m / (sqrt(v)*inv_sqrt_bc2 + eps))`
    /// with `step = lr * r / (1 - b1^t)`, else `p -= step * m` with `step = lr / (1 - b1^t)`.
    RAdam {
        b1: f32,
        one_minus_b1: f32,
        b2: f32,
        one_minus_b2: f32,
        step: f32,
        inv_sqrt_bc2: f32,
        eps: f32,
        rectified: bool,
    },
}

/// Everything one fused pass needs besides the buffers: the gradient transforms in pipeline
/// order, the base rule, and the Lookahead sync if this step is a sync step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plan {
    /// Global-norm clipping: `g *= scale` (only when the norm exceeded the threshold).
    pub clip_scale: Option<f32>,
    /// Value clipping: `g = min(max(g, -c), c)`.
    pub clip_value: Option<f32>,
    /// Coupled weight decay: `g += wd * p`.
    pub weight_decay: Option<f32>,
    pub rule: Rule,
    /// Lookahead sync on this step: `s = s + alpha*(p - s); p = s`.
    pub sync_alpha: Option<f32>,
}

/// The buffers of one fused pass, all of the same length as `param`. State buffers a rule does
/// not use may be empty: `m` is the momentum trace (SGD with momentum) or the first moment
/// (Adam family), `v` the second moment, `v_max` the AMSGrad maximum, `slow` the Lookahead slow
/// weights (read and written on sync steps only).
pub struct Buffers<'a> {
    pub param: &'a mut [f32],
    pub grad: &'a [f32],
    pub m: &'a mut [f32],
    pub v: &'a mut [f32],
    pub v_max: &'a mut [f32],
    pub slow: &'a mut [f32],
}

impl Rule {
    /// The rule for applied step `t` (1-based) of `base` at learning rate `lr`: every per-step
    /// scalar is computed in f64 and rounded to f32 once. `t` counts base-optimizer steps
    /// (bias correction, RAdam's rho_t, momentum's first step).
    pub fn for_step(base: &Base, t: u64, lr: f64) -> Rule {
        let _mode = FpMode::enter();
        let t = t.max(1);
        let tf = t as f64;
        let pow = |b: f64| pow_step(b, tf);
        match *base {
            Base::Sgd {
                momentum,
                dampening,
                nesterov,
            } => {
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
            Base::Adam {
                b1,
                b2,
                eps,
                amsgrad,
            } => adam_rule(b1, b2, eps, t, lr, amsgrad, None),
            Base::AdamW {
                b1,
                b2,
                eps,
                weight_decay,
            } => adam_rule(b1, b2, eps, t, lr, false, Some(weight_decay)),
            Base::RAdam { b1, b2, eps } => {
                let bc1 = 1.0 - pow(b1);
                let bc2 = 1.0 - pow(b2);
                let rho_inf = 2.0 / (1.0 - b2) - 1.0;
                let rho_t = rho_inf - 2.0 * tf * pow(b2) / bc2;
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
    }

    /// Which state buffers the rule reads and writes: (m, v, v_max).
    pub fn state_used(&self) -> (bool, bool, bool) {
        match self {
            Rule::Sgd { .. } => (false, false, false),
            Rule::Momentum { .. } => (true, false, false),
            Rule::Adam { amsgrad, .. } => (true, true, *amsgrad),
            Rule::RAdam { .. } => (true, true, false),
        }
    }
}

/// `b^t` for a decay rate `b` in [0, 1) and step `t >= 1`, as `powf` computes it (an f64
/// exponential of the step: exact for small t, smooth for huge ones). Beyond the point where it
/// is below half the smallest subnormal its correctly rounded value is 0, which is returned
/// directly: `powf` would take its slow underflow path (errno included) on every step of a long
/// run (for b = 0.9 from about step 7,000 on).
#[inline]
fn pow_step(b: f64, t: f64) -> f64 {
    if t > 1100.0 && t * b.log2() < -1100.0 {
        0.0
    } else {
        b.powf(t)
    }
}

fn adam_rule(
    b1: f64,
    b2: f64,
    eps: f64,
    t: u64,
    lr: f64,
    amsgrad: bool,
    decoupled: Option<f64>,
) -> Rule {
    let tf = t as f64;
    let bc1 = 1.0 - pow_step(b1, tf);
    let bc2 = 1.0 - pow_step(b2, tf);
    Rule::Adam {
        b1: b1 as f32,
        one_minus_b1: (1.0 - b1) as f32,
        b2: b2 as f32,
        one_minus_b2: (1.0 - b2) as f32,
        step: (lr / bc1) as f32,
        inv_sqrt_bc2: (1.0 / bc2.sqrt()) as f32,
        eps: eps as f32,
        amsgrad,
        decay: decoupled.map(|wd| (1.0 - lr * wd) as f32),
    }
}

impl Buffers<'_> {
    /// Checks that every buffer the plan touches has the length of `param`.
    pub fn check(&self, plan: &Plan) -> Result<(), Error> {
        let n = self.param.len();
        let (m, v, vmax) = plan.rule.state_used();
        let checks = [
            ("grad", true, self.grad.len()),
            ("m (first moment / momentum)", m, self.m.len()),
            ("v (second moment)", v, self.v.len()),
            ("v_max (AMSGrad maximum)", vmax, self.v_max.len()),
            ("slow weights", plan.sync_alpha.is_some(), self.slow.len()),
        ];
        for (what, used, len) in checks {
            if used && len != n {
                return Err(Error::LengthMismatch {
                    what: what.to_string(),
                    expected: n,
                    got: len,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::pow_step;

    /// The underflow shortcut returns exactly what `powf` returns, around every boundary.
    #[test]
    fn pow_step_is_powf() {
        let rates = [
            0.0, 1e-300, 0.1, 0.5, 0.8, 0.9, 0.95, 0.99, 0.999, 0.9999, 0.999_999,
        ];
        for b in rates {
            let mut steps: Vec<u64> = (1..2000).chain([7068, 7069, 1 << 20, 1 << 40]).collect();
            steps.push(u64::MAX);
            if b > 0.0 {
                // Around the steps where b^t crosses 2^-1100 and the smallest subnormal.
                for edge in [1100.0, 1074.0] {
                    let t0 = (edge / -f64::log2(b)) as u64;
                    steps.extend(t0.saturating_sub(300)..t0 + 300);
                }
            }
            for t in steps {
                let t = t as f64;
                assert_eq!(pow_step(b, t).to_bits(), b.powf(t).to_bits(), "{b}^{t}");
            }
        }
    }
}
