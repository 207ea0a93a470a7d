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
    Sgd {
        /// Learning rate of this step.
        lr: f32,
    },
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
    },
    /// Adam / AMSGrad / AdamW: `m = b1*m + (1-b1)*g`, `v = b2*v + (1-b2)*g*g`
    /// (AMSGrad: `v_max = max(v_max, v)` used in place of v),
    /// `p = p*decay - step * (m / (sqrt(v)*inv_sqrt_bc2 + eps))`
    /// with `step = lr / (1 - b1^t)`, `inv_sqrt_bc2 = 1 / sqrt(1 - b2^t)` and, for AdamW only,
    /// `decay = 1 - lr*lambda`.
    Adam {
        /// First-moment decay.
        b1: f32,
        /// `1 - b1`, rounded once.
        one_minus_b1: f32,
        /// Second-moment decay.
        b2: f32,
        /// `1 - b2`, rounded once.
        one_minus_b2: f32,
        /// `lr / (1 - b1^t)`.
        step: f32,
        /// `1 / sqrt(1 - b2^t)`.
        inv_sqrt_bc2: f32,
        /// Added to the denominator.
        eps: f32,
        /// AMSGrad: the running maximum of `v` in the denominator.
        amsgrad: bool,
        /// AdamW's decoupled decay factor `1 - lr*lambda`, `None` for Adam.
        decay: Option<f32>,
    },
    /// RAdam: moments as Adam; if `rectified`, `p -= step * (m / (sqrt(v)*inv_sqrt_bc2 + eps))`
    /// with `step = lr * r / (1 - b1^t)`, else `p -= step * m` with `step = lr / (1 - b1^t)`.
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
    },
    /// Adagrad: `v = v + g*g`, `p -= step * (g / (sqrt(v + eps_in) + eps_out))` with
    /// `step = lr / (1 + (t-1)*lr_decay)`; one of `eps_in` (optax) and `eps_out` (PyTorch) is 0.
    Adagrad {
        /// `lr / (1 + (t-1)*lr_decay)`.
        step: f32,
        /// eps under the square root (optax's form), else 0.
        eps_in: f32,
        /// eps added to the square root (PyTorch's form), else 0.
        eps_out: f32,
    },
    /// RMSprop: `v = alpha*v + one_minus_alpha*(g*g)`; centered: `a = alpha*a +
    /// one_minus_alpha*g` (in `v_max`) and `d = v - a*a`, else `d = v`;
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
    },
    /// Adamax: `m = b1*m + one_minus_b1*g`, `v = max(b2*v, |g| + eps_in)` (the infinity norm),
    /// `p -= step * (m / (v + eps_out))` with `step = lr / (1 - b1^t)`.
    Adamax {
        /// First-moment decay.
        b1: f32,
        /// `1 - b1`, rounded once.
        one_minus_b1: f32,
        /// Decay of the infinity norm.
        b2: f32,
        /// `lr / (1 - b1^t)`.
        step: f32,
        /// eps added to `|g|` inside the maximum (PyTorch's form), else 0.
        eps_in: f32,
        /// eps added after the maximum (optax's form), else 0.
        eps_out: f32,
    },
    /// NAdam: moments as Adam, `d = sqrt(v)*inv_sqrt_bc2 + eps`,
    /// `p = p*decay - (grad_step*g + momentum_step*m) / d` (`decay` only with decoupled weight
    /// decay).
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
    },
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
    },
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
    },
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
    },
    /// Adadelta: `v = rho*v + one_minus_rho*(g*g)`, `d = sqrt(m + eps) / sqrt(v + eps) * g`,
    /// `m = rho*m + one_minus_rho*(d*d)`, `p -= lr*d` (`v` the squared-gradient average, `m`
    /// the squared-update average).
    Adadelta {
        /// Learning rate of this step.
        lr: f32,
        /// Decay of both averages.
        rho: f32,
        /// `1 - rho`, rounded once.
        one_minus_rho: f32,
        /// Added inside both square roots.
        eps: f32,
    },
    /// Rprop: `s = g * prev` (`prev` in `m`, 0 on the first step); the step size (in `v`;
    /// `initial_step` on the first step) times `eta_plus` if `s > 0`, `eta_minus` if `s < 0`,
    /// 1 otherwise, clamped to `[min_step, max_step]`; `g = 0` where `s < 0`;
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
    /// The base rule with this step's scalars.
    pub rule: Rule,
    /// Lookahead sync on this step: `s = s + alpha*(p - s); p = s`.
    pub sync_alpha: Option<f32>,
}

/// The buffers of one fused pass, all of the same length as `param`. State buffers a rule does
/// not use may be empty: `m` is the momentum trace (SGD with momentum, RMSprop, Lion) or the
/// first moment (Adam family, Adamax, NAdam), `v` the second moment (Adagrad: the sum of
/// squares; Adamax: the infinity norm), `v_max` the
/// AMSGrad maximum or RMSprop's centered gradient average, `slow` the Lookahead slow
/// weights (read and written on sync steps only).
pub struct Buffers<'a> {
    /// The parameters, updated in place.
    pub param: &'a mut [f32],
    /// The gradients (read only).
    pub grad: &'a [f32],
    /// Momentum trace or first moment.
    pub m: &'a mut [f32],
    /// Second moment.
    pub v: &'a mut [f32],
    /// AMSGrad's running maximum of `v`.
    pub v_max: &'a mut [f32],
    /// Lookahead's slow weights.
    pub slow: &'a mut [f32],
}

impl Rule {
    /// The rule for applied step `t` (1-based) of `base` at learning rate `lr`: every per-step
    /// scalar is computed in f64 and rounded to f32 once. `t` counts base-optimizer steps
    /// (bias correction, RAdam's rho_t, momentum's first step). The computation of each rule is
    /// its entry in the base-rule catalog (`src/config/base.rs`).
    pub fn for_step(base: &Base, t: u64, lr: f64) -> Rule {
        // The f64 scalars are computed in the IEEE default mode (see `FpMode`).
        let _mode = FpMode::enter();
        base.rule_for_step(t, lr)
    }

    /// Which state buffers the rule reads and writes: (m, v, v_max).
    pub fn state_used(&self) -> (bool, bool, bool) {
        match self {
            Rule::Sgd { .. } => (false, false, false),
            Rule::Momentum { .. } => (true, false, false),
            Rule::Adam { amsgrad, .. } => (true, true, *amsgrad),
            Rule::RAdam { .. } => (true, true, false),
            Rule::Adagrad { .. } => (false, true, false),
            Rule::RmsProp { mu, centered, .. } => (mu.is_some(), true, *centered),
            Rule::Adamax { .. } | Rule::NAdam { .. } => (true, true, false),
            Rule::Lion { .. } => (true, false, false),
            Rule::AdaBelief { .. } | Rule::Yogi { .. } => (true, true, false),
            Rule::Adadelta { .. } | Rule::Rprop { .. } => (true, true, false),
        }
    }
}

impl Buffers<'_> {
    /// Checks that every buffer the plan touches has the length of `param`.
    pub fn check(&self, plan: &Plan) -> Result<(), Error> {
        check_lengths(
            plan,
            self.param.len(),
            self.grad.len(),
            [
                self.m.len(),
                self.v.len(),
                self.v_max.len(),
                self.slow.len(),
            ],
        )
    }
}

/// Checks that the gradient and every state buffer `plan` touches (lengths of `m`, `v`,
/// `v_max`, `slow`) have the parameters' length `n`.
pub(crate) fn check_lengths(
    plan: &Plan,
    n: usize,
    grad: usize,
    [m_len, v_len, vmax_len, slow_len]: [usize; 4],
) -> Result<(), Error> {
    let (m, v, vmax) = plan.rule.state_used();
    let checks = [
        ("grad", true, grad),
        ("m (first moment / momentum)", m, m_len),
        ("v (second moment)", v, v_len),
        ("v_max (AMSGrad maximum / RMSprop average)", vmax, vmax_len),
        ("slow weights", plan.sync_alpha.is_some(), slow_len),
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
