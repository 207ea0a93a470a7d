//! The base-rule catalog: every base optimizer, once. Each entry gives its kind number
//! (C `flatopt_base_kind`, checkpoints), its name, its hyperparameters (type, default, domain,
//! `f32` where the kernels use the value in f32, the `flatopt_base_params` field that carries it
//! in C), the state buffers it keeps, optional cross-field checks, and its per-step scalars:
//! `rule(t, lr)` computes them in f64 for applied step `t` (1-based) at learning rate `lr` and
//! rounds each to f32 once, giving the [`Rule`] the kernels run. The `Base` enum, its
//! validation, C conversion and defaults, checkpoint encoding and the fuzz generator follow.
//!
//! Field declaration order is the checkpoint encoding order: append new fields at the end of
//! an entry, new entries at the end of the table (with the next kind number). A new rule is
//! one entry here plus its [`Rule`] variant and kernel loop in `crate::kernels`.

use crate::error::Error;
use crate::kernels::Rule;

super::bases! {
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

    /// Adam with optional AMSGrad (PyTorch's definition: the max of the raw second moment).
    Adam = 1, "adam" {
        /// First-moment decay.
        b1: f64 = 0.9; UnitOpen, f32; c b1;
        /// Second-moment decay.
        b2: f64 = 0.999; UnitOpen, f32; c b2;
        /// Added outside the square root.
        eps: f64 = 1e-8; Positive, f32; c eps;
        /// AMSGrad: the maximum of the second moment.
        amsgrad: bool = false; Any; c amsgrad;
    }
    @state { (true, true, amsgrad) }
    @rule(t, lr) { adam_rule(b1, b2, eps, t, lr, amsgrad, None) }

    /// AdamW: Adam with decoupled weight decay scaled by the learning rate.
    AdamW = 2, "adamw" {
        /// First-moment decay.
        b1: f64 = 0.9; UnitOpen, f32; c b1;
        /// Second-moment decay.
        b2: f64 = 0.999; UnitOpen, f32; c b2;
        /// Added outside the square root.
        eps: f64 = 1e-8; Positive, f32; c eps;
        /// Decoupled weight decay: `p *= 1 - lr * weight_decay`.
        weight_decay as "weight_decay (decoupled)": f64 = 1e-2; NonNeg, f32;
            c decoupled_weight_decay;
    }
    @state { (true, true, false) }
    @rule(t, lr) { adam_rule(b1, b2, eps, t, lr, false, Some(weight_decay)) }

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

    /// Adagrad (PyTorch's `torch.optim.Adagrad`): `s += g*g`, `p -= clr * g / (sqrt(s) + eps)`
    /// with `clr = lr / (1 + (t - 1) * lr_decay)`. optax's `adagrad` is
    /// `initial_accumulator_value = 0.1, eps = 1e-7, eps_inside_sqrt = true`, no lr decay.
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

    /// RMSprop (PyTorch's `torch.optim.RMSprop`): `v = alpha*v + (1-alpha)*g*g`; centered:
    /// `a = alpha*a + (1-alpha)*g`, `v - a*a` in place of `v`; `u = g / (sqrt(v) + eps)`;
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

    /// Adamax (PyTorch's `torch.optim.Adamax`): `m = b1*m + (1-b1)*g`,
    /// `u = max(b2*u, |g| + eps)`, `p -= lr / (1 - b1^t) * (m / u)`. optax's `adamax` is
    /// `eps_outside_max = true`: `u = max(b2*u, |g|)`, `p -= lr / (1 - b1^t) * (m / (u + eps))`.
    Adamax = 6, "adamax" {
        /// First-moment decay.
        b1: f64 = 0.9; UnitOpen, f32; c b1;
        /// Decay of the infinity norm.
        b2: f64 = 0.999; UnitOpen, f32; c b2;
        /// Added to `|g|` inside the maximum (outside with `eps_outside_max`).
        eps: f64 = 1e-8; Positive, f32; c eps;
        /// optax's form: `m / (u + eps)` with `u = max(b2*u, |g|)`.
        eps_outside_max: bool = false; Any; c eps_outside_max;
    }
    @state { (true, true, false) }
    @rule(t, lr) {
        let (eps_in, eps_out) = eps_split(eps, !eps_outside_max);
        Rule::Adamax {
            b1: b1 as f32,
            one_minus_b1: (1.0 - b1) as f32,
            b2: b2 as f32,
            step: (lr / (1.0 - pow_step(b1, t as f64))) as f32,
            eps_in,
            eps_out,
        }
    }

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

    /// AdaBelief (optax's `adabelief`; PyTorch has none): `m = b1*m + (1-b1)*g`,
    /// `s = b2*s + (1-b2)*(g - m)^2 + eps_root`, `p -= lr / (1 - b1^t) * m / (sqrt(s) /
    /// sqrt(1 - b2^t) + eps)`.
    AdaBelief = 9, "adabelief" {
        /// First-moment decay.
        b1: f64 = 0.9; UnitOpen, f32; c b1;
        /// Decay of the belief (the squared prediction error).
        b2: f64 = 0.999; UnitOpen, f32; c b2;
        /// Added outside the square root.
        eps: f64 = 1e-16; Positive, f32; c eps;
        /// Added to the belief at every step (kept in the state, as optax and the paper do).
        eps_root: f64 = 1e-16; NonNeg, f32; c eps_root;
    }
    @state { (true, true, false) }
    @rule(t, lr) {
        let tf = t as f64;
        Rule::AdaBelief {
            b1: b1 as f32,
            one_minus_b1: (1.0 - b1) as f32,
            b2: b2 as f32,
            one_minus_b2: (1.0 - b2) as f32,
            step: (lr / (1.0 - pow_step(b1, tf))) as f32,
            inv_sqrt_bc2: (1.0 / (1.0 - pow_step(b2, tf)).sqrt()) as f32,
            eps: eps as f32,
            eps_root: eps_root as f32,
        }
    }

    /// Yogi (optax's `yogi`; PyTorch has none): `m = b1*m + (1-b1)*g`,
    /// `v = v - (1-b2)*sign(v - g^2)*g^2`, `p -= lr / (1 - b1^t) * m / (sqrt(v) /
    /// sqrt(1 - b2^t) + eps)`; both moments start from `initial_accumulator_value`.
    Yogi = 10, "yogi" {
        /// First-moment decay.
        b1: f64 = 0.9; UnitOpen, f32; c b1;
        /// Second-moment rate.
        b2: f64 = 0.999; UnitOpen, f32; c b2;
        /// Added outside the square root.
        eps: f64 = 1e-3; Positive, f32; c eps;
        /// The value both moments start from.
        initial_accumulator_value: f64 = 1e-6; NonNeg, f32; c initial_accumulator;
    }
    @state { (true, true, false) }
    @init { [initial_accumulator_value as f32, initial_accumulator_value as f32, 0.0] }
    @rule(t, lr) {
        let tf = t as f64;
        Rule::Yogi {
            b1: b1 as f32,
            one_minus_b1: (1.0 - b1) as f32,
            one_minus_b2: (1.0 - b2) as f32,
            step: (lr / (1.0 - pow_step(b1, tf))) as f32,
            inv_sqrt_bc2: (1.0 / (1.0 - pow_step(b2, tf)).sqrt()) as f32,
            eps: eps as f32,
        }
    }

    /// Adadelta (PyTorch's `torch.optim.Adadelta`, optax's `adadelta` alike):
    /// `v = rho*v + (1-rho)*g^2`, `d = sqrt(u + eps) / sqrt(v + eps) * g`,
    /// `u = rho*u + (1-rho)*d^2`, `p -= lr*d`.
    Adadelta = 11, "adadelta" {
        /// Decay of both running averages.
        rho: f64 = 0.9; UnitOpen, f32; c rho;
        /// Added inside both square roots.
        eps: f64 = 1e-6; Positive, f32; c eps;
    }
    @state { (true, true, false) }
    @rule(t, lr) {
        Rule::Adadelta {
            lr: lr as f32,
            rho: rho as f32,
            one_minus_rho: (1.0 - rho) as f32,
            eps: eps as f32,
        }
    }

    /// Rprop (PyTorch's `torch.optim.Rprop`): per element a step size, from the learning rate
    /// of the first step; `s = g * g_prev`; the step size times `eta_plus` if `s > 0`,
    /// `eta_minus` if `s < 0`, clamped to `[min_step_size, max_step_size]`; after a sign change
    /// the gradient counts as 0; `p -= sign(g) * step size`.
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

/// eps as the kernels add it, `sqrt(x + eps_in) + eps_out`: one of the two is `eps` (rounded
/// to f32), the other 0 (adding an exact 0 leaves every value the same, so either placement is
/// one loop).
fn eps_split(eps: f64, inside: bool) -> (f32, f32) {
    let e = eps as f32;
    if inside {
        (e, 0.0)
    } else {
        (0.0, e)
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

/// The per-step scalars of Adam, AMSGrad and AdamW.
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

/// Refuses a step whose per-step scalars are not finite after rounding to f32: the learning
/// rate itself (a schedule that grew past the f32 range), and each scalar of the rule (the step
/// size `lr / (1 - b1^t)`, the decoupled decay factor `1 - lr * weight_decay`, ...). The error
/// names the scalar and its f64 value; the caller has changed nothing yet. A new [`Rule`]
/// variant lists its scalars here.
pub fn check_step(lr: f64, rule: &Rule) -> Result<(), Error> {
    // Up to three scalars per rule; unused slots hold a finite filler.
    const NONE: (&str, f32) = ("", 0.0);
    let scalars: [(&'static str, f32); 3] = match *rule {
        Rule::Sgd { lr } | Rule::Momentum { lr, .. } => [("lr", lr), NONE, NONE],
        Rule::Adam {
            step,
            inv_sqrt_bc2,
            decay,
            ..
        } => [
            ("step size (lr / (1 - b1^t))", step),
            ("inv_sqrt_bc2 (1 / sqrt(1 - b2^t))", inv_sqrt_bc2),
            decay.map_or(NONE, |d| ("decay factor (1 - lr * weight_decay)", d)),
        ],
        Rule::RAdam {
            step, inv_sqrt_bc2, ..
        } => [
            ("step size (lr * r / (1 - b1^t))", step),
            ("inv_sqrt_bc2 (1 / sqrt(1 - b2^t))", inv_sqrt_bc2),
            NONE,
        ],
        Rule::Adagrad { step, .. } => [
            ("step size (lr / (1 + (t - 1) * lr_decay))", step),
            NONE,
            NONE,
        ],
        Rule::RmsProp { lr, .. } => [("lr", lr), NONE, NONE],
        Rule::Adamax { step, .. } => [("step size (lr / (1 - b1^t))", step), NONE, NONE],
        Rule::NAdam {
            grad_step,
            momentum_step,
            decay,
            ..
        } => [
            ("gradient step (lr * (1 - mu_t) / (1 - P_t))", grad_step),
            (
                "momentum step (lr * mu_{t+1} / (1 - P_t * mu_{t+1}))",
                momentum_step,
            ),
            decay.map_or(NONE, |d| {
                ("decay factor (1 - lr * decoupled_weight_decay)", d)
            }),
        ],
        Rule::Lion { lr, decay, .. } => [
            ("lr", lr),
            ("decay factor (1 - lr * weight_decay)", decay),
            NONE,
        ],
        Rule::AdaBelief {
            step, inv_sqrt_bc2, ..
        }
        | Rule::Yogi {
            step, inv_sqrt_bc2, ..
        } => [
            ("step size (lr / (1 - b1^t))", step),
            ("inv_sqrt_bc2 (1 / sqrt(1 - b2^t))", inv_sqrt_bc2),
            NONE,
        ],
        Rule::Adadelta { lr, .. } => [("lr", lr), NONE, NONE],
        Rule::Rprop { initial_step, .. } => [("initial step size (lr)", initial_step), NONE, NONE],
    };
    let lr32 = lr as f32;
    if !lr32.is_finite() {
        return Err(Error::invalid(
            "lr",
            format!("{lr:?} ({lr32:?} as f32)"),
            "the learning rate of this step must be finite as f32 (the schedule grew past \
             3.4028235e38): the step is refused, nothing changed",
        ));
    }
    for (name, x) in scalars {
        if !x.is_finite() {
            return Err(Error::invalid(
                name,
                format!("{x:?} as f32 (lr = {lr:?})"),
                "a per-step scalar must be finite as f32: the step is refused, nothing changed",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{nadam_mu_product, pow_step};

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
