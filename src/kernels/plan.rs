//! The plan of one update: the base rule with its per-step scalars (computed in f64, rounded to
//! f32 once), the optional pipeline steps, and the buffers a fused pass reads and writes, with
//! their length check. Plain data and arithmetic: no loop, no tier.

use crate::config::Base;
use crate::error::Error;
pub use crate::rules::Rule;
use crate::simd::FpMode;

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
    /// its entry in the base-rule catalog (its file in `src/rules/`).
    pub fn for_step(base: &Base, t: u64, lr: f64) -> Rule {
        // The f64 scalars are computed in the IEEE default mode (see `FpMode`).
        let _mode = FpMode::enter();
        base.rule_for_step(t, lr)
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
