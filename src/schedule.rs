//! Learning-rate schedules.
//!
//! A [`Schedule`] holds hyperparameters only; the mutable part (the counter `e` and, for warm
//! restarts and plateau reduction, their running state) lives in a [`ScheduleState`]. The
//! learning rate is a pure function of the two, evaluated in `f64` (the engine rounds it to `f32`
//! once per update).
//!
//! The counter `e` starts at 0 and goes up by one per [`ScheduleState::advance`]: by default once
//! per applied update (so the first update uses `e = 0`), or epoch-style when the host steps the
//! schedule itself. [`Schedule::ReduceOnPlateau`] is the exception: it ignores `advance` and is
//! driven by [`ScheduleState::step_metric`].
//!
//! Every schedule must pass [`Schedule::validate`] before use. Once valid, every learning rate it
//! yields is finite and `>= 0`, except for the schedules whose documentation says that a
//! `gamma` / `decay_rate` above 1 grows without bound (then the rate overflows to `+inf` only
//! after a very large number of steps, as in PyTorch and optax). On a schedule that did not pass
//! `validate` the learning rate is unspecified (possibly NaN), but no method panics.
//!
//! `lr`, `advance` and `step_metric` never allocate.

use crate::error::{non_negative, positive, unit_closed, unit_open, Error};
use std::f64::consts::PI;

/// How [`Schedule::OneCycle`] moves between its end points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anneal {
    /// `anneal(a -> b, q) = b + (a - b) / 2 * (cos(pi * q) + 1)` (PyTorch `anneal_strategy="cos"`).
    Cos,
    /// `anneal(a -> b, q) = (b - a) * q + a` (PyTorch `anneal_strategy="linear"`).
    Linear,
}

/// Amplitude scaling of [`Schedule::Cyclic`] (PyTorch `CyclicLR(mode=...)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CyclicMode {
    /// Constant amplitude: `scale = 1`.
    Triangular,
    /// Amplitude halved every cycle: `scale = 1 / 2^(cycle - 1)`.
    Triangular2,
    /// Amplitude decayed every iteration: `scale = gamma^e`.
    ExpRange,
}

/// Whether [`Schedule::ReduceOnPlateau`] watches a metric that should go down or up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlateauMode {
    /// Lower is better (a loss).
    Min,
    /// Higher is better (an accuracy).
    Max,
}

/// How [`Schedule::ReduceOnPlateau`] decides that a metric improved on the best one so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThresholdMode {
    /// Relative: better if `metric < best * (1 - threshold)` (min) or
    /// `metric > best * (1 + threshold)` (max).
    Rel,
    /// Absolute: better if `metric < best - threshold` (min) or `metric > best + threshold` (max).
    Abs,
}

/// A learning-rate schedule: hyperparameters only (the counter lives in [`ScheduleState`]).
///
/// In the formulas, `e` is the counter (0, 1, 2, ...), `base` the base learning rate, and all
/// arithmetic is `f64`. Integer hyperparameters are converted to `f64` where they enter a
/// division. The defaults quoted are those of the convenience constructors (and of PyTorch /
/// optax); the variants themselves have no defaults.
#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    /// Constant learning rate: `lr(e) = lr`.
    ///
    /// Valid: `lr` finite and `>= 0`.
    Fixed { lr: f64 },

    /// PyTorch `ConstantLR`: `lr(e) = base * factor` if `e < total_iters`, else `base`.
    /// (Defaults: `factor = 1/3`, `total_iters = 5`.)
    ///
    /// Valid: `base >= 0`, `factor` in `[0, 1]`; `total_iters = 0` means `base` throughout.
    Constant {
        base: f64,
        factor: f64,
        total_iters: u64,
    },

    /// PyTorch `LinearLR`:
    /// `lr(e) = base * (start_factor + (end_factor - start_factor) * min(e, total_iters) / total_iters)`.
    /// (Defaults: `start_factor = 1/3`, `end_factor = 1`, `total_iters = 5`.)
    ///
    /// Valid: `base >= 0`, both factors in `[0, 1]`, `total_iters >= 1`. (PyTorch also rejects
    /// `start_factor = 0` because its recursive form divides by it; this closed form does not.)
    Linear {
        base: f64,
        start_factor: f64,
        end_factor: f64,
        total_iters: u64,
    },

    /// PyTorch `StepLR`: `lr(e) = base * gamma^floor(e / step_size)`. (Default `gamma = 0.1`.)
    ///
    /// Valid: `base >= 0`, `step_size >= 1`, `gamma` finite and `> 0`. A `gamma > 1` grows
    /// without bound.
    Step {
        base: f64,
        step_size: u64,
        gamma: f64,
    },

    /// PyTorch `MultiStepLR`: `lr(e) = base * gamma^k`, `k` = the number of milestones `<= e`.
    /// (Default `gamma = 0.1`.)
    ///
    /// Valid: `base >= 0`, `milestones` strictly increasing (may be empty), `gamma` finite and
    /// `> 0`. (PyTorch counts a repeated milestone twice; here repeats are refused: use a smaller
    /// `gamma` or two schedules.)
    MultiStep {
        base: f64,
        milestones: Vec<u64>,
        gamma: f64,
    },

    /// PyTorch `ExponentialLR`: `lr(e) = base * gamma^e`.
    ///
    /// Valid: `base >= 0`, `gamma` finite and `> 0`. A `gamma > 1` grows without bound.
    Exponential { base: f64, gamma: f64 },

    /// optax `exponential_decay`: with `d = e - transition_begin` and
    /// `p = d / decay_steps` (`floor(p)` if `staircase`),
    /// `v = base` if `d <= 0`, else `v = base * decay_rate^p`; then, if `end_value` is given,
    /// `lr(e) = max(v, end_value)` when `decay_rate < 1` (a floor) and `min(v, end_value)`
    /// otherwise (a ceiling, also when `decay_rate = 1`, as in optax), else `lr(e) = v`.
    /// (Defaults: `transition_begin = 0`, `staircase = false`, `end_value = None`.)
    ///
    /// Valid: `base >= 0`, `decay_steps >= 1`, `decay_rate` finite and `> 0`, `end_value`
    /// finite and `>= 0`. Without `end_value`, a `decay_rate > 1` grows without bound. As in
    /// optax the clamp also applies before `transition_begin` (an `end_value` on the wrong side
    /// of `base` clamps from the start).
    ExponentialDecay {
        base: f64,
        decay_steps: u64,
        decay_rate: f64,
        transition_begin: u64,
        staircase: bool,
        end_value: Option<f64>,
    },

    /// Cosine annealing (PyTorch `CosineAnnealingLR`, closed form):
    /// `lr(e) = eta_min + (base - eta_min) * (1 + cos(pi * min(e, t_max) / t_max)) / 2`.
    /// It holds at `eta_min` after `t_max`, where PyTorch's turns back up.
    /// (Default `eta_min = 0`.)
    ///
    /// Valid: `base >= 0`, `eta_min >= 0`, `t_max >= 1`.
    CosineAnnealing { base: f64, t_max: u64, eta_min: f64 },

    /// SGDR, PyTorch `CosineAnnealingWarmRestarts`:
    /// `lr = eta_min + (base - eta_min) * (1 + cos(pi * t_cur / t_i)) / 2`, where `t_i` is the
    /// current cycle's length (starting at `t_0`) and `t_cur` the position in it (starting at 0).
    /// Each advance does `t_cur += 1; if t_cur >= t_i { t_cur -= t_i; t_i *= t_mult }`.
    /// (Defaults: `t_mult = 1`, `eta_min = 0`.)
    ///
    /// Valid: `base >= 0`, `eta_min >= 0`, `t_0 >= 1`, `t_mult >= 1`.
    CosineAnnealingWarmRestarts {
        base: f64,
        t_0: u64,
        t_mult: u64,
        eta_min: f64,
    },

    /// PyTorch `PolynomialLR`: `lr(e) = base * (1 - min(e, total_iters) / total_iters)^power`.
    /// (Defaults: `total_iters = 5`, `power = 1`.)
    ///
    /// Valid: `base >= 0`, `total_iters >= 1`, `power` finite and `>= 0`.
    Polynomial {
        base: f64,
        total_iters: u64,
        power: f64,
    },

    /// Linear warmup: `lr(e) = start_lr + (base - start_lr) * e / warmup_steps` for
    /// `e < warmup_steps`, then `base` (exactly). `warmup_steps = 0` means `base` from the start.
    /// (Default `start_lr = 0`.)
    ///
    /// Valid: `base >= 0`, `start_lr >= 0`.
    Warmup {
        base: f64,
        warmup_steps: u64,
        start_lr: f64,
    },

    /// Linear warmup then cosine decay (optax `warmup_cosine_decay_schedule`, with
    /// `total_steps` counting the warmup). With `W = warmup_steps` and `D = total_steps - W`:
    /// for `e < W`, `lr(e) = start_lr + (base - start_lr) * e / W`; for `e >= W`,
    /// `lr(e) = eta_min + (base - eta_min) * (1 + cos(pi * min(e - W, D) / D)) / 2`, so it
    /// reaches `eta_min` at `e = total_steps` and holds there. If `D = 0` there is no cosine
    /// phase: `lr(e) = eta_min` for `e >= W`. (Defaults: `start_lr = 0`, `eta_min = 0`.)
    ///
    /// Valid: `base, start_lr, eta_min >= 0`, `total_steps >= 1`,
    /// `warmup_steps <= total_steps`.
    WarmupCosine {
        base: f64,
        warmup_steps: u64,
        total_steps: u64,
        start_lr: f64,
        eta_min: f64,
    },

    /// PyTorch `OneCycleLR` (two phases, `three_phase=False`). With
    /// `init = max_lr / div_factor`, `min = init / final_div_factor`,
    /// `e1 = pct_start * total_steps - 1`, `e2 = total_steps - 1` and `x = min(e, e2)`:
    /// if `x <= e1`, `lr = anneal(init -> max_lr, x / e1)`; otherwise
    /// `lr = anneal(max_lr -> min, (x - e1) / (e2 - e1))` (see [`Anneal`]).
    /// So `lr(0) = init` (when `e1 > 0`), `lr(e1) = max_lr`, and `lr(e) = min` for
    /// `e >= total_steps - 1` (PyTorch raises an error past `total_steps` instead of holding).
    /// When `pct_start * total_steps < 1` the first phase is empty (`e1 < 0`) and the schedule
    /// starts in the second phase, as in PyTorch; when `e1 = 0` exactly (where PyTorch divides
    /// by zero), `lr(0) = init`.
    /// (Defaults: `pct_start = 0.3`, `div_factor = 25`, `final_div_factor = 1e4`, `Cos`.)
    ///
    /// Valid: `max_lr >= 0`, `total_steps >= 1`, `pct_start` in `(0, 1)`, `div_factor` and
    /// `final_div_factor` finite and `> 0` (with `init` and `min` finite).
    OneCycle {
        max_lr: f64,
        total_steps: u64,
        pct_start: f64,
        div_factor: f64,
        final_div_factor: f64,
        anneal: Anneal,
    },

    /// PyTorch `CyclicLR`. With `tot = step_size_up + step_size_down`, `r = step_size_up / tot`,
    /// `cycle = floor(1 + e / tot)`, `x = 1 + e / tot - cycle`, `h = x / r` if `x <= r` else
    /// `(x - 1) / (r - 1)`: `lr(e) = base + (max_lr - base) * h * scale`, where `scale` is `1`
    /// (`Triangular`), `1 / 2^(cycle - 1)` (`Triangular2`) or `gamma^e` (`ExpRange`).
    /// (Defaults: `step_size_down = step_size_up`, `Triangular`, `gamma = 1`.)
    ///
    /// Valid: `base >= 0`, `max_lr >= 0` (it may be below `base`: the cycle then dips),
    /// `step_size_up >= 1` (`step_size_down = 0` gives a sawtooth), `gamma` finite and `> 0`,
    /// and `gamma <= 1` in `ExpRange` mode (PyTorch allows more, which grows without bound or
    /// turns negative). `gamma` is unused by the other modes.
    Cyclic {
        base: f64,
        max_lr: f64,
        step_size_up: u64,
        step_size_down: u64,
        mode: CyclicMode,
        gamma: f64,
    },

    /// Piecewise constant, absolute values: `lr(e) = values[k]`, `k` = the number of boundaries
    /// `<= e`. So `values[0]` applies before the first boundary, `values[i]` from
    /// `boundaries[i - 1]` on. (Unlike optax's `piecewise_constant_schedule`, whose values are
    /// multiplicative.)
    ///
    /// Valid: `boundaries` strictly increasing, `values.len() == boundaries.len() + 1`, every
    /// value finite and `>= 0`.
    PiecewiseConstant {
        boundaries: Vec<u64>,
        values: Vec<f64>,
    },

    /// PyTorch `ReduceLROnPlateau`, driven by [`ScheduleState::step_metric`]. It starts at
    /// `lr = base`, `best = +inf` (`Min`) or `-inf` (`Max`). Each metric: if it is better than
    /// `best` (see [`ThresholdMode`]) it becomes `best` and the bad-epoch count is reset, else
    /// the count goes up; during a cooldown the cooldown counter goes down and the bad-epoch
    /// count is reset; if the count then exceeds `patience`, `new = max(lr * factor, min_lr)`
    /// replaces `lr` if `lr - new > 1e-8`, the cooldown counter is set to `cooldown` and the
    /// count is reset. (Defaults: `Min`, `factor = 0.1`, `patience = 10`, `threshold = 1e-4`,
    /// `Rel`, `cooldown = 0`, `min_lr = 0`.)
    ///
    /// Valid: `base >= 0`, `min_lr >= 0`, `factor` in `(0, 1)`, `threshold` finite and `>= 0`
    /// and, in `Rel` mode, `< 1` (at 1 the first metric would never count as better).
    ReduceOnPlateau {
        base: f64,
        mode: PlateauMode,
        factor: f64,
        patience: u64,
        threshold: f64,
        threshold_mode: ThresholdMode,
        cooldown: u64,
        min_lr: f64,
    },
}

/// The minimal decrease ReduceOnPlateau applies (PyTorch's `eps`).
const PLATEAU_EPS: f64 = 1e-8;

/// Checks an integer hyperparameter that must be at least 1.
fn at_least_one(name: &'static str, x: u64) -> Result<(), Error> {
    if x >= 1 {
        Ok(())
    } else {
        Err(Error::invalid(name, x, "must be >= 1"))
    }
}

/// Checks that a list of counters is strictly increasing.
fn strictly_increasing(name: &'static str, xs: &[u64]) -> Result<(), Error> {
    if xs.windows(2).all(|w| w[0] < w[1]) {
        Ok(())
    } else {
        Err(Error::invalid(
            name,
            format!("{xs:?}"),
            "must be strictly increasing",
        ))
    }
}

/// Checks that `x` lies in `(0, 1)`.
fn unit_exclusive(name: &'static str, x: f64) -> Result<(), Error> {
    if x > 0.0 && x < 1.0 {
        Ok(())
    } else {
        Err(Error::invalid(name, x, "must be in (0, 1)"))
    }
}

/// PyTorch's `_annealing_cos`: from `start` (q = 0) to `end` (q = 1).
fn anneal_cos(start: f64, end: f64, q: f64) -> f64 {
    end + (start - end) / 2.0 * ((PI * q).cos() + 1.0)
}

/// PyTorch's `_annealing_linear`: from `start` (q = 0) to `end` (q = 1).
fn anneal_linear(start: f64, end: f64, q: f64) -> f64 {
    (end - start) * q + start
}

/// `eta_min + (top - eta_min) * (1 + cos(pi * pos / len)) / 2`, PyTorch's operation order.
fn cosine(top: f64, eta_min: f64, pos: f64, len: f64) -> f64 {
    // The factor in [0, 1] first, so that huge rates cannot overflow the product.
    eta_min + (top - eta_min) * ((1.0 + (PI * pos / len).cos()) / 2.0)
}

impl Schedule {
    /// A constant learning rate.
    pub fn fixed(lr: f64) -> Self {
        Schedule::Fixed { lr }
    }

    /// PyTorch `ConstantLR(factor, total_iters)`.
    pub fn constant(base: f64, factor: f64, total_iters: u64) -> Self {
        Schedule::Constant {
            base,
            factor,
            total_iters,
        }
    }

    /// PyTorch `LinearLR(start_factor, end_factor, total_iters)`.
    pub fn linear(base: f64, start_factor: f64, end_factor: f64, total_iters: u64) -> Self {
        Schedule::Linear {
            base,
            start_factor,
            end_factor,
            total_iters,
        }
    }

    /// PyTorch `StepLR(step_size, gamma)`.
    pub fn step(base: f64, step_size: u64, gamma: f64) -> Self {
        Schedule::Step {
            base,
            step_size,
            gamma,
        }
    }

    /// PyTorch `MultiStepLR(milestones, gamma)`.
    pub fn multi_step(base: f64, milestones: Vec<u64>, gamma: f64) -> Self {
        Schedule::MultiStep {
            base,
            milestones,
            gamma,
        }
    }

    /// PyTorch `ExponentialLR(gamma)`.
    pub fn exponential(base: f64, gamma: f64) -> Self {
        Schedule::Exponential { base, gamma }
    }

    /// optax `exponential_decay(base, decay_steps, decay_rate)` with `transition_begin = 0`,
    /// `staircase = false` and no `end_value`.
    pub fn exponential_decay(base: f64, decay_steps: u64, decay_rate: f64) -> Self {
        Schedule::ExponentialDecay {
            base,
            decay_steps,
            decay_rate,
            transition_begin: 0,
            staircase: false,
            end_value: None,
        }
    }

    /// PyTorch `CosineAnnealingLR(t_max, eta_min)` (holding at `eta_min` after `t_max`).
    pub fn cosine_annealing(base: f64, t_max: u64, eta_min: f64) -> Self {
        Schedule::CosineAnnealing {
            base,
            t_max,
            eta_min,
        }
    }

    /// PyTorch `CosineAnnealingWarmRestarts(t_0, t_mult, eta_min)`.
    pub fn cosine_annealing_warm_restarts(base: f64, t_0: u64, t_mult: u64, eta_min: f64) -> Self {
        Schedule::CosineAnnealingWarmRestarts {
            base,
            t_0,
            t_mult,
            eta_min,
        }
    }

    /// PyTorch `PolynomialLR(total_iters, power)`.
    pub fn polynomial(base: f64, total_iters: u64, power: f64) -> Self {
        Schedule::Polynomial {
            base,
            total_iters,
            power,
        }
    }

    /// Linear warmup from `start_lr` to `base` over `warmup_steps`.
    pub fn warmup(base: f64, warmup_steps: u64, start_lr: f64) -> Self {
        Schedule::Warmup {
            base,
            warmup_steps,
            start_lr,
        }
    }

    /// Linear warmup from `start_lr` to `base`, then cosine to `eta_min` at `total_steps`.
    pub fn warmup_cosine(
        base: f64,
        warmup_steps: u64,
        total_steps: u64,
        start_lr: f64,
        eta_min: f64,
    ) -> Self {
        Schedule::WarmupCosine {
            base,
            warmup_steps,
            total_steps,
            start_lr,
            eta_min,
        }
    }

    /// PyTorch `OneCycleLR(max_lr, total_steps)` with its defaults: `pct_start = 0.3`,
    /// `div_factor = 25`, `final_div_factor = 1e4`, cosine annealing.
    pub fn one_cycle(max_lr: f64, total_steps: u64) -> Self {
        Schedule::OneCycle {
            max_lr,
            total_steps,
            pct_start: 0.3,
            div_factor: 25.0,
            final_div_factor: 1e4,
            anneal: Anneal::Cos,
        }
    }

    /// PyTorch `CyclicLR(base, max_lr, step_size_up)` with its defaults:
    /// `step_size_down = step_size_up`, triangular mode, `gamma = 1`.
    pub fn cyclic(base: f64, max_lr: f64, step_size_up: u64) -> Self {
        Schedule::Cyclic {
            base,
            max_lr,
            step_size_up,
            step_size_down: step_size_up,
            mode: CyclicMode::Triangular,
            gamma: 1.0,
        }
    }

    /// `values[number of boundaries <= e]`.
    pub fn piecewise_constant(boundaries: Vec<u64>, values: Vec<f64>) -> Self {
        Schedule::PiecewiseConstant { boundaries, values }
    }

    /// PyTorch `ReduceLROnPlateau` with its defaults: min mode, `factor = 0.1`,
    /// `patience = 10`, `threshold = 1e-4` relative, `cooldown = 0`, `min_lr = 0`.
    pub fn reduce_on_plateau(base: f64) -> Self {
        Schedule::ReduceOnPlateau {
            base,
            mode: PlateauMode::Min,
            factor: 0.1,
            patience: 10,
            threshold: 1e-4,
            threshold_mode: ThresholdMode::Rel,
            cooldown: 0,
            min_lr: 0.0,
        }
    }

    /// Checks every hyperparameter; the error names the first one at fault and its value. The
    /// rules are listed on each variant. A valid schedule yields finite, non-negative learning
    /// rates (but see the variants that allow unbounded growth).
    pub fn validate(&self) -> Result<(), Error> {
        match self {
            Schedule::Fixed { lr } => non_negative("lr", *lr),
            Schedule::Constant { base, factor, .. } => {
                non_negative("base", *base)?;
                unit_closed("factor", *factor)
            }
            Schedule::Linear {
                base,
                start_factor,
                end_factor,
                total_iters,
            } => {
                non_negative("base", *base)?;
                unit_closed("start_factor", *start_factor)?;
                unit_closed("end_factor", *end_factor)?;
                at_least_one("total_iters", *total_iters)
            }
            Schedule::Step {
                base,
                step_size,
                gamma,
            } => {
                non_negative("base", *base)?;
                at_least_one("step_size", *step_size)?;
                positive("gamma", *gamma)
            }
            Schedule::MultiStep {
                base,
                milestones,
                gamma,
            } => {
                non_negative("base", *base)?;
                strictly_increasing("milestones", milestones)?;
                positive("gamma", *gamma)
            }
            Schedule::Exponential { base, gamma } => {
                non_negative("base", *base)?;
                positive("gamma", *gamma)
            }
            Schedule::ExponentialDecay {
                base,
                decay_steps,
                decay_rate,
                end_value,
                ..
            } => {
                non_negative("base", *base)?;
                at_least_one("decay_steps", *decay_steps)?;
                positive("decay_rate", *decay_rate)?;
                match end_value {
                    Some(v) => non_negative("end_value", *v),
                    None => Ok(()),
                }
            }
            Schedule::CosineAnnealing {
                base,
                t_max,
                eta_min,
            } => {
                non_negative("base", *base)?;
                at_least_one("t_max", *t_max)?;
                non_negative("eta_min", *eta_min)
            }
            Schedule::CosineAnnealingWarmRestarts {
                base,
                t_0,
                t_mult,
                eta_min,
            } => {
                non_negative("base", *base)?;
                at_least_one("t_0", *t_0)?;
                at_least_one("t_mult", *t_mult)?;
                non_negative("eta_min", *eta_min)
            }
            Schedule::Polynomial {
                base,
                total_iters,
                power,
            } => {
                non_negative("base", *base)?;
                at_least_one("total_iters", *total_iters)?;
                non_negative("power", *power)
            }
            Schedule::Warmup { base, start_lr, .. } => {
                non_negative("base", *base)?;
                non_negative("start_lr", *start_lr)
            }
            Schedule::WarmupCosine {
                base,
                warmup_steps,
                total_steps,
                start_lr,
                eta_min,
            } => {
                non_negative("base", *base)?;
                at_least_one("total_steps", *total_steps)?;
                if warmup_steps > total_steps {
                    return Err(Error::invalid(
                        "warmup_steps",
                        warmup_steps,
                        "must be <= total_steps",
                    ));
                }
                non_negative("start_lr", *start_lr)?;
                non_negative("eta_min", *eta_min)
            }
            Schedule::OneCycle {
                max_lr,
                total_steps,
                pct_start,
                div_factor,
                final_div_factor,
                ..
            } => {
                non_negative("max_lr", *max_lr)?;
                at_least_one("total_steps", *total_steps)?;
                unit_exclusive("pct_start", *pct_start)?;
                positive("div_factor", *div_factor)?;
                positive("final_div_factor", *final_div_factor)?;
                let init = max_lr / div_factor;
                if !init.is_finite() {
                    return Err(Error::invalid(
                        "div_factor",
                        div_factor,
                        "max_lr / div_factor must be finite",
                    ));
                }
                if !(init / final_div_factor).is_finite() {
                    return Err(Error::invalid(
                        "final_div_factor",
                        final_div_factor,
                        "max_lr / div_factor / final_div_factor must be finite",
                    ));
                }
                Ok(())
            }
            Schedule::Cyclic {
                base,
                max_lr,
                step_size_up,
                mode,
                gamma,
                ..
            } => {
                non_negative("base", *base)?;
                non_negative("max_lr", *max_lr)?;
                at_least_one("step_size_up", *step_size_up)?;
                positive("gamma", *gamma)?;
                if *mode == CyclicMode::ExpRange && *gamma > 1.0 {
                    return Err(Error::invalid(
                        "gamma",
                        gamma,
                        "must be in (0, 1] in exp_range mode",
                    ));
                }
                Ok(())
            }
            Schedule::PiecewiseConstant { boundaries, values } => {
                strictly_increasing("boundaries", boundaries)?;
                if values.len() != boundaries.len() + 1 {
                    return Err(Error::invalid(
                        "values",
                        format!(
                            "{} values for {} boundaries",
                            values.len(),
                            boundaries.len()
                        ),
                        "must hold exactly one more value than boundaries",
                    ));
                }
                values.iter().try_for_each(|&v| non_negative("values", v))
            }
            Schedule::ReduceOnPlateau {
                base,
                factor,
                threshold,
                threshold_mode,
                min_lr,
                ..
            } => {
                non_negative("base", *base)?;
                unit_exclusive("factor", *factor)?;
                match threshold_mode {
                    ThresholdMode::Rel => unit_open("threshold", *threshold)?,
                    ThresholdMode::Abs => non_negative("threshold", *threshold)?,
                }
                non_negative("min_lr", *min_lr)
            }
        }
    }

    /// Whether the schedule is driven by a metric ([`Schedule::ReduceOnPlateau`]) rather than by
    /// the counter.
    pub fn is_metric_driven(&self) -> bool {
        matches!(self, Schedule::ReduceOnPlateau { .. })
    }
}

/// Mutable state of a schedule: the counter and, for warm restarts and ReduceOnPlateau, their
/// running state. Plain fields so that a checkpoint can save and restore them.
///
/// A state belongs to the schedule it was made from: pass that same schedule to every method.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleState {
    /// The counter `e`: advances so far (for ReduceOnPlateau: metrics fed so far).
    pub(crate) count: u64,
    /// Warm restarts: position in the current cycle.
    pub(crate) t_cur: u64,
    /// Warm restarts: length of the current cycle.
    pub(crate) t_i: u64,
    /// ReduceOnPlateau: the current learning rate.
    pub(crate) plateau_lr: f64,
    /// ReduceOnPlateau: the best metric so far (`±inf` before the first).
    pub(crate) best: f64,
    /// ReduceOnPlateau: consecutive metrics without improvement.
    pub(crate) num_bad_epochs: u64,
    /// ReduceOnPlateau: metrics left in the current cooldown.
    pub(crate) cooldown_counter: u64,
}

impl ScheduleState {
    /// The state at `e = 0` (and, for ReduceOnPlateau, before any metric).
    pub fn new(s: &Schedule) -> Self {
        let mut st = ScheduleState {
            count: 0,
            t_cur: 0,
            t_i: 0,
            plateau_lr: 0.0,
            best: 0.0,
            num_bad_epochs: 0,
            cooldown_counter: 0,
        };
        match s {
            Schedule::CosineAnnealingWarmRestarts { t_0, .. } => st.t_i = *t_0,
            Schedule::ReduceOnPlateau { base, mode, .. } => {
                st.plateau_lr = *base;
                st.best = match mode {
                    PlateauMode::Min => f64::INFINITY,
                    PlateauMode::Max => f64::NEG_INFINITY,
                };
            }
            _ => {}
        }
        st
    }

    /// The counter `e`: the number of [`advance`](Self::advance) calls so far. For
    /// ReduceOnPlateau, which ignores `advance`, the number of metrics fed (PyTorch's
    /// `last_epoch`).
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The learning rate at the current counter, in `f64`. See each [`Schedule`] variant for
    /// the formula.
    pub fn lr(&self, s: &Schedule) -> f64 {
        let e = self.count;
        let ef = e as f64;
        match s {
            Schedule::Fixed { lr } => *lr,
            Schedule::Constant {
                base,
                factor,
                total_iters,
            } => {
                if e < *total_iters {
                    base * factor
                } else {
                    *base
                }
            }
            Schedule::Linear {
                base,
                start_factor,
                end_factor,
                total_iters,
            } => {
                let q = e.min(*total_iters) as f64 / *total_iters as f64;
                base * (start_factor + (end_factor - start_factor) * q)
            }
            Schedule::Step {
                base,
                step_size,
                gamma,
            } => base * gamma.powf((e / (*step_size).max(1)) as f64),
            Schedule::MultiStep {
                base,
                milestones,
                gamma,
            } => {
                let k = milestones.partition_point(|&m| m <= e);
                base * gamma.powf(k as f64)
            }
            Schedule::Exponential { base, gamma } => base * gamma.powf(ef),
            Schedule::ExponentialDecay {
                base,
                decay_steps,
                decay_rate,
                transition_begin,
                staircase,
                end_value,
            } => {
                let v = if e <= *transition_begin {
                    *base
                } else {
                    let mut p = (e - transition_begin) as f64 / *decay_steps as f64;
                    if *staircase {
                        p = p.floor();
                    }
                    base * decay_rate.powf(p)
                };
                match end_value {
                    Some(end) if *decay_rate < 1.0 => v.max(*end),
                    Some(end) => v.min(*end),
                    None => v,
                }
            }
            Schedule::CosineAnnealing {
                base,
                t_max,
                eta_min,
            } => cosine(*base, *eta_min, e.min(*t_max) as f64, *t_max as f64),
            Schedule::CosineAnnealingWarmRestarts { base, eta_min, .. } => {
                cosine(*base, *eta_min, self.t_cur as f64, self.t_i as f64)
            }
            Schedule::Polynomial {
                base,
                total_iters,
                power,
            } => {
                let q = e.min(*total_iters) as f64 / *total_iters as f64;
                base * (1.0 - q).powf(*power)
            }
            Schedule::Warmup {
                base,
                warmup_steps,
                start_lr,
            } => {
                if e >= *warmup_steps {
                    *base
                } else {
                    start_lr + (base - start_lr) * (ef / *warmup_steps as f64)
                }
            }
            Schedule::WarmupCosine {
                base,
                warmup_steps,
                total_steps,
                start_lr,
                eta_min,
            } => {
                let w = *warmup_steps;
                if e < w {
                    start_lr + (base - start_lr) * (ef / w as f64)
                } else {
                    let d = total_steps.saturating_sub(w);
                    if d == 0 {
                        *eta_min
                    } else {
                        cosine(*base, *eta_min, (e - w).min(d) as f64, d as f64)
                    }
                }
            }
            Schedule::OneCycle {
                max_lr,
                total_steps,
                pct_start,
                div_factor,
                final_div_factor,
                anneal,
            } => {
                let total = *total_steps as f64;
                let init = max_lr / div_factor;
                let min = init / final_div_factor;
                let e1 = pct_start * total - 1.0;
                let e2 = total - 1.0;
                let x = ef.min(e2);
                let (a, b, q) = if x <= e1 {
                    (init, *max_lr, if e1 > 0.0 { x / e1 } else { 0.0 })
                } else {
                    (*max_lr, min, (x - e1) / (e2 - e1))
                };
                match anneal {
                    Anneal::Cos => anneal_cos(a, b, q),
                    Anneal::Linear => anneal_linear(a, b, q),
                }
            }
            Schedule::Cyclic {
                base,
                max_lr,
                step_size_up,
                step_size_down,
                mode,
                gamma,
            } => {
                let up = *step_size_up as f64;
                let tot = up + *step_size_down as f64;
                let ratio = up / tot;
                let cycle = (1.0 + ef / tot).floor();
                let x = 1.0 + ef / tot - cycle;
                let h = if x <= ratio {
                    x / ratio
                } else {
                    (x - 1.0) / (ratio - 1.0)
                };
                let scale = match mode {
                    CyclicMode::Triangular => 1.0,
                    CyclicMode::Triangular2 => 1.0 / 2f64.powf(cycle - 1.0),
                    CyclicMode::ExpRange => gamma.powf(ef),
                };
                base + (max_lr - base) * h * scale
            }
            Schedule::PiecewiseConstant { boundaries, values } => {
                let k = boundaries.partition_point(|&b| b <= e);
                values.get(k).or(values.last()).copied().unwrap_or(f64::NAN)
            }
            Schedule::ReduceOnPlateau { .. } => self.plateau_lr,
        }
    }

    /// Advances the counter by one (once per applied update, or epoch-style). For
    /// ReduceOnPlateau it does nothing: that schedule is stepped with
    /// [`step_metric`](Self::step_metric).
    pub fn advance(&mut self, s: &Schedule) {
        match s {
            Schedule::ReduceOnPlateau { .. } => {}
            Schedule::CosineAnnealingWarmRestarts { t_mult, .. } => {
                self.count = self.count.saturating_add(1);
                self.t_cur = self.t_cur.saturating_add(1);
                if self.t_cur >= self.t_i {
                    self.t_cur -= self.t_i;
                    self.t_i = self.t_i.saturating_mul(*t_mult);
                }
            }
            _ => self.count = self.count.saturating_add(1),
        }
    }

    /// ReduceOnPlateau: feeds one metric (PyTorch `ReduceLROnPlateau.step(metric)` semantics, see
    /// [`Schedule::ReduceOnPlateau`]) and counts it.
    ///
    /// Errors, leaving the state unchanged: [`Error::InvalidState`] if `s` is not
    /// ReduceOnPlateau; [`Error::InvalidArgument`] named `"metric"` if `metric` is NaN or ±inf.
    pub fn step_metric(&mut self, s: &Schedule, metric: f64) -> Result<(), Error> {
        let Schedule::ReduceOnPlateau {
            mode,
            factor,
            patience,
            threshold,
            threshold_mode,
            cooldown,
            min_lr,
            ..
        } = s
        else {
            return Err(Error::InvalidState(
                "step_metric needs a ReduceOnPlateau schedule",
            ));
        };
        if !metric.is_finite() {
            return Err(Error::invalid("metric", metric, "must be finite"));
        }
        self.count = self.count.saturating_add(1);

        let better = match (mode, threshold_mode) {
            (PlateauMode::Min, ThresholdMode::Rel) => metric < self.best * (1.0 - threshold),
            (PlateauMode::Min, ThresholdMode::Abs) => metric < self.best - threshold,
            (PlateauMode::Max, ThresholdMode::Rel) => metric > self.best * (threshold + 1.0),
            (PlateauMode::Max, ThresholdMode::Abs) => metric > self.best + threshold,
        };
        if better {
            self.best = metric;
            self.num_bad_epochs = 0;
        } else {
            self.num_bad_epochs = self.num_bad_epochs.saturating_add(1);
        }

        if self.cooldown_counter > 0 {
            self.cooldown_counter -= 1;
            self.num_bad_epochs = 0;
        }

        if self.num_bad_epochs > *patience {
            let old = self.plateau_lr;
            let new = (old * factor).max(*min_lr);
            if old - new > PLATEAU_EPS {
                self.plateau_lr = new;
            }
            self.cooldown_counter = *cooldown;
            self.num_bad_epochs = 0;
        }
        Ok(())
    }
}
