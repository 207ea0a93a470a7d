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

use crate::error::Error;
use std::f64::consts::PI;

mod catalog;

use crate::catalog::{choice, Spec};

choice! {
    /// How [`Schedule::OneCycle`] moves between its end points.
    pub enum Anneal {
        /// `anneal(a -> b, q) = b + (a - b) / 2 * (cos(pi * q) + 1)` (PyTorch `anneal_strategy="cos"`).
        Cos = "cos",
        /// `anneal(a -> b, q) = (b - a) * q + a` (PyTorch `anneal_strategy="linear"`).
        Linear = "linear",
    }
}

choice! {
    /// Amplitude scaling of [`Schedule::Cyclic`] (PyTorch `CyclicLR(mode=...)`).
    pub enum CyclicMode {
        /// Constant amplitude: `scale = 1`.
        Triangular = "triangular",
        /// Amplitude halved every cycle: `scale = 1 / 2^(cycle - 1)`.
        Triangular2 = "triangular2",
        /// Amplitude decayed every iteration: `scale = gamma^e`.
        ExpRange = "exp_range",
    }
}

choice! {
    /// Whether [`Schedule::ReduceOnPlateau`] watches a metric that should go down or up.
    pub enum PlateauMode {
        /// Lower is better (a loss).
        Min = "min",
        /// Higher is better (an accuracy).
        Max = "max",
    }
}

choice! {
    /// How [`Schedule::ReduceOnPlateau`] decides that a metric improved on the best one so far.
    pub enum ThresholdMode {
        /// Relative: better if `metric < best * (1 - threshold)` (min) or
        /// `metric > best * (1 + threshold)` (max).
        Rel = "rel",
        /// Absolute: better if `metric < best - threshold` (min) or `metric > best + threshold` (max).
        Abs = "abs",
    }
}

/// Declares the schedule catalog (`catalog.rs`): the [`Schedule`] enum, its [`Spec`]s and the
/// per-entry code (formula, cross-field check, initial state, advance, possible states).
/// Inside each block the entry's fields are local variables (scalars by value, lists as
/// slices).
macro_rules! schedules {
    (@f32) => { false };
    (@f32 f32) => { true };
    (@zero) => { None };
    (@zero $z:ident) => { Some(stringify!($z)) };
    (@check) => { Ok(()) };
    (@check $b:block) => { $b };
    (@advance $this:ident) => { $this.count = $this.count.saturating_add(1) };
    (@advance $this:ident $b:block) => { $b };
    (@position $this:ident $n:ident) => {{ $this.count = $n; Ok(()) }};
    (@position $this:ident $n:ident $b:block) => { $b };
    (@state) => { Ok(()) };
    (@state $b:block) => { $b };
    (
        $(
            $(#[doc = $vdoc:literal])*
            $V:ident = $kind:literal, $name:literal {
                $(
                    $(#[doc = $fdoc:literal])*
                    $f:ident : $fty:ty = $def:expr ; $dom:ident $(, $prec:ident)? ;
                    c $c:ident $(, zero = $zero:ident)? ;
                )+
            }
            lr($lst:ident) $lr:block
            $( @check $check:block )?
            $( @init($ist:ident) $init:block )?
            $( @advance($ast:ident) $adv:block @position($pst:ident, $pn:ident) $pos:block )?
            $( @state($sst:ident) $sblock:block )?
        )+
    ) => {
        $crate::catalog::catalog_enum! {
            /// A learning-rate schedule: hyperparameters only (the counter lives in
            /// [`ScheduleState`](crate::schedule::ScheduleState)). Declared in the schedule catalog
            /// (`src/schedule/catalog.rs`).
            ///
            /// In the formulas, `e` is the counter (0, 1, 2, ...), `base` the base learning rate, and
            /// all arithmetic is `f64`. Integer hyperparameters are converted to `f64` where they
            /// enter a division. The defaults listed in the catalog are those of the C `_init` (and
            /// of PyTorch / optax); the variants themselves have no defaults. Every field's domain
            /// is listed in the catalog; learning-rate fields must also be finite as f32.
            #[derive(Debug, Clone, PartialEq)]
            pub enum Schedule {
                $(
                    $(#[doc = $vdoc])*
                    $V = $kind, $name {
                        $( $(#[doc = $fdoc])* $f: $fty ),+
                    }
                )+
            }
        }

        pub(crate) fn build_specs() -> Vec<$crate::catalog::Spec> {
            vec![$(
                $crate::catalog::Spec {
                    kind: $kind,
                    name: $name,
                    variant: stringify!($V),
                    doc: concat!($($vdoc, "\n"),*),
                    fields: vec![$(
                        $crate::catalog::FieldSpec {
                            name: stringify!($f),
                            label: stringify!($f),
                            key: concat!("schedule.", stringify!($f)),
                            ty: <$fty as $crate::catalog::Field>::TY,
                            domain: $crate::catalog::Domain::$dom,
                            f32: $crate::schedule::schedules!(@f32 $($prec)?),
                            default: {
                                let d: $fty = $def;
                                $crate::catalog::Field::to_value(&d)
                            },
                            c: stringify!($c),
                            c_label: $crate::catalog::c_label(
                                stringify!($c),
                                stringify!($f),
                                concat!(stringify!($c), " (", stringify!($f), ")"),
                            ),
                            c_zero_means: $crate::schedule::schedules!(@zero $($zero)?),
                            c_form: $crate::catalog::CForm::Plain,
                            saved: true,
                            doc: concat!($($fdoc, "\n"),*),
                        },
                    )+],
                },
            )+]
        }

        impl Schedule {
            /// The cross-field checks of the entry (after every field's own domain).
            #[allow(unused_variables)]
            pub(crate) fn check_entry(&self) -> Result<(), $crate::error::Error> {
                match self {
                    $( Schedule::$V { $($f),+ } => {
                        let ($($f,)+) = ($($crate::catalog::Field::view($f),)+);
                        $crate::schedule::schedules!(@check $($check)?)
                    } )+
                }
            }
        }

        impl $crate::schedule::ScheduleState {
            /// The learning rate at the current counter, in `f64`. See each [`Schedule`]
            /// variant for the formula.
            #[allow(unused_variables)]
            pub fn lr(&self, s: &Schedule) -> f64 {
                match s {
                    $( Schedule::$V { $($f),+ } => {
                        let ($($f,)+) = ($($crate::catalog::Field::view($f),)+);
                        let $lst = self;
                        $lr
                    } )+
                }
            }

            /// The state at `e = 0` (and, for ReduceOnPlateau, before any metric).
            #[allow(unused_variables)]
            pub fn new(s: &Schedule) -> Self {
                let mut state = $crate::schedule::ScheduleState::zero();
                match s {
                    $( Schedule::$V { $($f),+ } => {
                        let ($($f,)+) = ($($crate::catalog::Field::view($f),)+);
                        $( let $ist = &mut state; $init )?
                    } )+
                }
                state
            }

            /// Advances the counter by one (once per applied update, or epoch-style). For
            /// ReduceOnPlateau it does nothing: that schedule is stepped with
            /// [`step_metric`](Self::step_metric).
            #[allow(unused_variables)]
            pub fn advance(&mut self, s: &Schedule) {
                match s {
                    $( Schedule::$V { $($f),+ } => {
                        let ($($f,)+) = ($($crate::catalog::Field::view($f),)+);
                        let this = &mut *self;
                        $crate::schedule::schedules!(@advance this $( { let $ast = &mut *this; $adv } )?)
                    } )+
                }
            }

            /// The state after `n` [`advance`](Self::advance) calls from [`new`](Self::new),
            /// bit-identical to making them, in time independent of `n` (at most one loop
            /// turn per warm-restart cycle until the cycle length saturates). Every `u64` is a
            /// position `advance` reaches (its counter saturates at `u64::MAX`).
            ///
            /// Errors: [`Error::InvalidState`] for ReduceOnPlateau, whose state follows the
            /// metrics fed, not a count (and which `advance` does not move).
            #[allow(unused_variables)]
            pub fn at(s: &Schedule, n: u64) -> Result<Self, Error> {
                let mut state = Self::new(s);
                let r: Result<(), Error> = match s {
                    $( Schedule::$V { $($f),+ } => {
                        let ($($f,)+) = ($($crate::catalog::Field::view($f),)+);
                        let this = &mut state;
                        $crate::schedule::schedules!(
                            @position this n $( { let $pst = &mut *this; let $pn = n; $pos } )?
                        )
                    } )+
                };
                r.map(|()| state)
            }

            /// Whether this state is one that `s` can reach (a crafted checkpoint with a valid
            /// checksum must not produce a NaN learning rate or a division by zero): the reason
            /// if not.
            #[allow(unused_variables)]
            pub fn check(&self, s: &Schedule) -> Result<(), String> {
                match s {
                    $( Schedule::$V { $($f),+ } => {
                        let ($($f,)+) = ($($crate::catalog::Field::view($f),)+);
                        $crate::schedule::schedules!(@state $( { let $sst = self; $sblock } )?)
                    } )+
                }
            }
        }
    };
}
pub(crate) use schedules;

/// Every schedule of the catalog, in kind order.
pub fn specs() -> &'static [Spec] {
    static SPECS: std::sync::OnceLock<Vec<Spec>> = std::sync::OnceLock::new();
    SPECS.get_or_init(catalog::build_specs)
}

pub use catalog::Schedule;

/// The minimal decrease ReduceOnPlateau applies (PyTorch's `eps`).
const PLATEAU_EPS: f64 = 1e-8;

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

    /// The catalog entry of this schedule.
    pub fn spec(&self) -> &'static Spec {
        let kind = self.kind();
        specs()
            .iter()
            .find(|s| s.kind == kind)
            .expect("every variant is in the catalog")
    }

    /// Checks every hyperparameter; the error names the first one at fault and its value: each
    /// field against its domain (learning rates also after rounding to f32), in declaration
    /// order, then the entry's cross-field checks. A valid schedule yields finite, non-negative
    /// learning rates (but see the variants that allow unbounded growth: the engine refuses
    /// the step whose rate is not finite in f32).
    pub fn validate(&self) -> Result<(), Error> {
        self.spec().check(&self.values())?;
        self.check_entry()
    }

    /// The base learning rate: the value of the field that C carries in `base_lr` (`lr`,
    /// `base`, OneCycle's `max_lr`), for a piecewise-constant schedule its first value. A
    /// parameter group with its own learning rate `g` follows `g * lr(e) / base_lr`
    /// (`Optimizer::add_group`), as PyTorch's schedulers scale each group's initial rate.
    pub fn base_lr(&self) -> f64 {
        let spec = self.spec();
        let values = self.values();
        let first = |v: &crate::catalog::Value| match v {
            crate::catalog::Value::F64(x) => Some(*x),
            crate::catalog::Value::F64s(xs) => xs.first().copied(),
            _ => None,
        };
        let at = |c: &str| {
            spec.fields
                .iter()
                .position(|f| f.c == c)
                .and_then(|i| first(&values[i]))
        };
        at("base_lr").or_else(|| at("values")).unwrap_or(0.0)
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
    /// All zero: the state every entry's `init` starts from.
    pub(crate) fn zero() -> Self {
        ScheduleState {
            count: 0,
            t_cur: 0,
            t_i: 0,
            plateau_lr: 0.0,
            best: 0.0,
            num_bad_epochs: 0,
            cooldown_counter: 0,
        }
    }

    /// The counter `e`: the number of [`advance`](Self::advance) calls so far. For
    /// ReduceOnPlateau, which ignores `advance`, the number of metrics fed (PyTorch's
    /// `last_epoch`).
    pub fn count(&self) -> u64 {
        self.count
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
