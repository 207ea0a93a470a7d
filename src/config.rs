//! Configuration of an optimizer: the base rule and its hyperparameters, the learning rate or
//! schedule, the gradient transforms, Lookahead, the non-finite policy and threads. Plain data
//! with defaults and one `validate` that names the first bad value.

use crate::error::{non_negative, positive, unit_closed, unit_open, Error};
use crate::schedule::Schedule;
use crate::simd::Tier;

/// The base optimizer and its hyperparameters (SPEC.md, step 4).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Base {
    /// SGD; `momentum = 0` is plain SGD. PyTorch's dampening; Nesterov needs momentum > 0 and
    /// dampening 0.
    Sgd {
        momentum: f64,
        dampening: f64,
        nesterov: bool,
    },
    /// Adam with optional AMSGrad (PyTorch's definition: the max of the raw second moment).
    Adam {
        b1: f64,
        b2: f64,
        eps: f64,
        amsgrad: bool,
    },
    /// AdamW: Adam with decoupled weight decay scaled by the learning rate.
    AdamW {
        b1: f64,
        b2: f64,
        eps: f64,
        weight_decay: f64,
    },
    /// RAdam with the rectification threshold 5.
    RAdam { b1: f64, b2: f64, eps: f64 },
}

impl Base {
    /// Plain SGD.
    pub fn sgd() -> Base {
        Base::Sgd {
            momentum: 0.0,
            dampening: 0.0,
            nesterov: false,
        }
    }
    /// SGD with heavy-ball momentum (no dampening).
    pub fn momentum(momentum: f64, nesterov: bool) -> Base {
        Base::Sgd {
            momentum,
            dampening: 0.0,
            nesterov,
        }
    }
    /// Adam with b1 = 0.9, b2 = 0.999, eps = 1e-8.
    pub fn adam() -> Base {
        Base::Adam {
            b1: 0.9,
            b2: 0.999,
            eps: 1e-8,
            amsgrad: false,
        }
    }
    /// AdamW with b1 = 0.9, b2 = 0.999, eps = 1e-8, weight decay 0.01.
    pub fn adamw() -> Base {
        Base::AdamW {
            b1: 0.9,
            b2: 0.999,
            eps: 1e-8,
            weight_decay: 1e-2,
        }
    }
    /// RAdam with b1 = 0.9, b2 = 0.999, eps = 1e-8.
    pub fn radam() -> Base {
        Base::RAdam {
            b1: 0.9,
            b2: 0.999,
            eps: 1e-8,
        }
    }

    /// Short name: `sgd`, `adam`, `adamw`, `radam`.
    pub fn name(&self) -> &'static str {
        match self {
            Base::Sgd { .. } => "sgd",
            Base::Adam { .. } => "adam",
            Base::AdamW { .. } => "adamw",
            Base::RAdam { .. } => "radam",
        }
    }

    /// Which state buffers the rule keeps: (m, v, v_max).
    pub fn state_used(&self) -> (bool, bool, bool) {
        match *self {
            Base::Sgd { momentum, .. } => (momentum > 0.0, false, false),
            Base::Adam { amsgrad, .. } => (true, true, amsgrad),
            Base::AdamW { .. } | Base::RAdam { .. } => (true, true, false),
        }
    }

    /// Rejects any hyperparameter outside its domain.
    pub fn validate(&self) -> Result<(), Error> {
        match *self {
            Base::Sgd {
                momentum,
                dampening,
                nesterov,
            } => {
                unit_open("momentum", momentum)?;
                unit_closed("dampening", dampening)?;
                if nesterov && !(momentum > 0.0 && dampening == 0.0) {
                    return Err(Error::invalid(
                        "nesterov",
                        format!("true (momentum = {momentum}, dampening = {dampening})"),
                        "Nesterov momentum requires momentum > 0 and dampening = 0",
                    ));
                }
                Ok(())
            }
            Base::Adam { b1, b2, eps, .. } | Base::RAdam { b1, b2, eps } => {
                unit_open("b1", b1)?;
                unit_open("b2", b2)?;
                positive("eps", eps)
            }
            Base::AdamW {
                b1,
                b2,
                eps,
                weight_decay,
            } => {
                unit_open("b1", b1)?;
                unit_open("b2", b2)?;
                positive("eps", eps)?;
                non_negative("weight_decay (decoupled)", weight_decay)
            }
        }
    }
}

/// Lookahead: fast weights stepped by the base optimizer, pulled into the slow weights every
/// `sync_period` applied updates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lookahead {
    /// k >= 1: syncs happen at updates k, 2k, 3k, ...
    pub sync_period: u64,
    /// In [0, 1]: `s = s + alpha*(p - s)`.
    pub alpha: f64,
}

impl Default for Lookahead {
    fn default() -> Self {
        Lookahead {
            sync_period: 5,
            alpha: 0.5,
        }
    }
}

/// What an update does when a gradient holds NaN or ±Inf (SPEC.md, "Non-finite gradients").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NonFinitePolicy {
    /// Skip the whole update, count it, report it (the default).
    #[default]
    Skip,
    /// Skip the whole update, count it, and return an error.
    Error,
    /// No check: non-finite values flow into the parameters (fastest).
    Propagate,
}

/// When the learning-rate schedule advances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ScheduleMode {
    /// Once per applied update (the first update uses e = 0).
    #[default]
    PerUpdate,
    /// Only when the host calls `Optimizer::step_schedule` (epoch style).
    Manual,
}

/// Largest thread count accepted.
pub const MAX_THREADS: usize = 256;

/// The full configuration of an optimizer.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub base: Base,
    /// Learning rate: `Schedule::Fixed { lr }` for a constant one.
    pub lr: Schedule,
    pub schedule_mode: ScheduleMode,
    /// Coupled weight decay (`g += wd * p`), 0 for none.
    pub weight_decay: f64,
    /// Clip by global norm over all registered buffers.
    pub grad_clip_norm: Option<f64>,
    /// Clip each gradient element to `[-c, c]`.
    pub grad_clip_value: Option<f64>,
    pub lookahead: Option<Lookahead>,
    pub nonfinite: NonFinitePolicy,
    /// 1: the caller's thread (default). More: a private pool of that many threads.
    pub num_threads: usize,
    /// SIMD tier; `None` takes the process default (`FLATOPT_SIMD` or the best available).
    pub tier: Option<Tier>,
}

impl Config {
    /// `base` at a constant learning rate, everything else at its default.
    pub fn new(base: Base, lr: f64) -> Config {
        Config::with_schedule(base, Schedule::Fixed { lr })
    }

    /// `base` with a learning-rate schedule.
    pub fn with_schedule(base: Base, lr: Schedule) -> Config {
        Config {
            base,
            lr,
            schedule_mode: ScheduleMode::PerUpdate,
            weight_decay: 0.0,
            grad_clip_norm: None,
            grad_clip_value: None,
            lookahead: None,
            nonfinite: NonFinitePolicy::Skip,
            num_threads: 1,
            tier: None,
        }
    }

    /// Wraps the base optimizer in Lookahead.
    pub fn lookahead(mut self, sync_period: u64, alpha: f64) -> Config {
        self.lookahead = Some(Lookahead { sync_period, alpha });
        self
    }
    pub fn weight_decay(mut self, wd: f64) -> Config {
        self.weight_decay = wd;
        self
    }
    pub fn clip_norm(mut self, c: f64) -> Config {
        self.grad_clip_norm = Some(c);
        self
    }
    pub fn clip_value(mut self, c: f64) -> Config {
        self.grad_clip_value = Some(c);
        self
    }
    pub fn nonfinite(mut self, policy: NonFinitePolicy) -> Config {
        self.nonfinite = policy;
        self
    }
    pub fn threads(mut self, n: usize) -> Config {
        self.num_threads = n;
        self
    }
    pub fn tier(mut self, tier: Tier) -> Config {
        self.tier = Some(tier);
        self
    }
    pub fn schedule_mode(mut self, mode: ScheduleMode) -> Config {
        self.schedule_mode = mode;
        self
    }

    /// Checks every field; the error names the first bad one and its value.
    pub fn validate(&self) -> Result<(), Error> {
        self.base.validate()?;
        self.lr.validate()?;
        non_negative("weight_decay", self.weight_decay)?;
        if let Some(c) = self.grad_clip_norm {
            positive("grad_clip_norm", c)?;
        }
        if let Some(c) = self.grad_clip_value {
            positive("grad_clip_value", c)?;
        }
        if let Some(la) = self.lookahead {
            if la.sync_period == 0 {
                return Err(Error::invalid("sync_period", 0, "must be >= 1"));
            }
            unit_closed("alpha", la.alpha)?;
        }
        if self.num_threads == 0 || self.num_threads > MAX_THREADS {
            return Err(Error::invalid(
                "num_threads",
                self.num_threads,
                "must be in 1..=256",
            ));
        }
        if let Some(t) = self.tier {
            t.check()?;
        }
        Ok(())
    }
}
