//! Configuration of an optimizer: the base rule and its hyperparameters, the learning rate or
//! schedule, the gradient transforms, Lookahead, the non-finite policy and threads. Plain data
//! with defaults and one `validate` that names the first bad value.

use crate::catalog::{Domain, FieldSpec, Spec, Ty, Value};
use crate::error::Error;
use crate::schedule::Schedule;
use crate::simd::Tier;

mod base;

/// Declares the base-rule catalog (`base.rs`): the [`Base`] enum, its [`Spec`]s and the
/// per-entry code (state buffers, per-step scalars, cross-field check). Inside each block the
/// entry's fields are local variables.
macro_rules! bases {
    (@f32) => { false };
    (@f32 f32) => { true };
    (@label $f:ident) => { stringify!($f) };
    (@label $f:ident $l:literal) => { $l };
    (@check) => { Ok(()) };
    (@check $b:block) => { $b };
    (
        $(
            $(#[doc = $vdoc:literal])*
            $V:ident = $kind:literal, $name:literal {
                $(
                    $(#[doc = $fdoc:literal])*
                    $f:ident $(as $label:literal)? : $fty:ty = $def:expr ; $dom:ident $(, $prec:ident)? ;
                    c $c:ident ;
                )+
            }
            @state $state:block
            @rule($t:ident, $lr:ident) $rule:block
            $( @check $check:block )?
        )+
    ) => {
        /// The base optimizer and its hyperparameters, declared in the base-rule catalog
        /// (`src/config/base.rs`, which lists each field's default and domain).
        #[derive(Debug, Clone, Copy, PartialEq)]
        pub enum Base {
            $(
                $(#[doc = $vdoc])*
                $V {
                    $( $(#[doc = $fdoc])* $f: $fty, )+
                },
            )+
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
                            label: $crate::config::bases!(@label $f $($label)?),
                            key: $crate::config::bases!(@label $f $($label)?),
                            ty: <$fty as $crate::catalog::Field>::TY,
                            domain: $crate::catalog::Domain::$dom,
                            f32: $crate::config::bases!(@f32 $($prec)?),
                            default: {
                                let d: $fty = $def;
                                $crate::catalog::Field::to_value(&d)
                            },
                            c: stringify!($c),
                            // C messages name base-rule fields as Rust does.
                            c_label: $crate::config::bases!(@label $f $($label)?),
                            c_zero_means: None,
                            doc: concat!($($fdoc, "\n"),*),
                        },
                    )+],
                },
            )+]
        }

        impl Base {
            /// The kind number (C `flatopt_base_kind`, checkpoints).
            pub fn kind(&self) -> u32 {
                match self {
                    $( Base::$V { .. } => $kind, )+
                }
            }

            /// Short name: `sgd`, `adam`, `adamw`, `radam`, ...
            pub fn name(&self) -> &'static str {
                match self {
                    $( Base::$V { .. } => $name, )+
                }
            }

            /// The hyperparameter values, in declaration order.
            pub fn values(&self) -> Vec<$crate::catalog::Value> {
                match self {
                    $( Base::$V { $($f),+ } => vec![$($crate::catalog::Field::to_value($f)),+], )+
                }
            }

            /// The rule of kind `kind` with these values (in declaration order), or `None` if
            /// the kind is unknown or a value has the wrong type or count.
            pub fn from_values(kind: u32, values: Vec<$crate::catalog::Value>) -> Option<Base> {
                let mut it = values.into_iter();
                let b = match kind {
                    $( $kind => Base::$V {
                        $( $f: <$fty as $crate::catalog::Field>::from_value(it.next()?)?, )+
                    }, )+
                    _ => return None,
                };
                it.next().is_none().then_some(b)
            }

            /// The rule of kind `kind` with each field's value from `get(index)` (in
            /// declaration order), without allocating (the stateless C kernels convert their
            /// arguments on every call): `None` if the kind is unknown or a value has the wrong
            /// type, `Some(Err)` with `get`'s first error.
            pub fn try_from_fields<E>(
                kind: u32,
                mut get: impl FnMut(usize) -> Result<$crate::catalog::Value, E>,
            ) -> Option<Result<Base, E>> {
                let mut i = 0;
                let mut next = || {
                    let v = get(i);
                    i += 1;
                    v
                };
                Some(Ok(match kind {
                    $( $kind => Base::$V {
                        $( $f: match next() {
                            Ok(v) => <$fty as $crate::catalog::Field>::from_value(v)?,
                            Err(e) => return Some(Err(e)),
                        }, )+
                    }, )+
                    _ => return None,
                }))
            }

            /// Calls `f` with each field's index and value, in declaration order, without
            /// allocating; stops at `f`'s first error.
            pub fn try_for_each_value<E>(
                &self,
                mut f: impl FnMut(usize, $crate::catalog::Value) -> Result<(), E>,
            ) -> Result<(), E> {
                let mut i = 0;
                match self {
                    $( Base::$V { $($f),+ } => {
                        $(
                            f(i, $crate::catalog::Field::to_value($f))?;
                            i += 1;
                        )+
                    } )+
                }
                let _ = i;
                Ok(())
            }

            /// Which state buffers the rule keeps: (m, v, v_max).
            #[allow(unused_variables)]
            pub fn state_used(&self) -> (bool, bool, bool) {
                match *self {
                    $( Base::$V { $($f),+ } => $state, )+
                }
            }

            /// The rule for applied step `t` (1-based; 0 counts as 1) at learning rate `lr`:
            /// every per-step scalar is computed in f64 and rounded to f32 once. `t` counts
            /// base-optimizer steps (bias correction, RAdam's rho_t, momentum's first step).
            #[allow(unused_variables)]
            pub fn rule_for_step(&self, t: u64, lr: f64) -> $crate::kernels::Rule {
                let step = t.max(1);
                match *self {
                    $( Base::$V { $($f),+ } => {
                        let ($t, $lr) = (step, lr);
                        $rule
                    } )+
                }
            }

            #[allow(unused_variables)]
            pub(crate) fn check_entry(&self) -> Result<(), $crate::error::Error> {
                match *self {
                    $( Base::$V { $($f),+ } => $crate::config::bases!(@check $($check)?), )+
                }
            }
        }
    };
}
pub(crate) use bases;

pub use base::{check_step, Base};

/// Every base rule of the catalog, in kind order.
pub fn base_specs() -> &'static [Spec] {
    static SPECS: std::sync::OnceLock<Vec<Spec>> = std::sync::OnceLock::new();
    SPECS.get_or_init(base::build_specs)
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
        Base::default_of(1)
    }
    /// AdamW with b1 = 0.9, b2 = 0.999, eps = 1e-8, weight decay 0.01.
    pub fn adamw() -> Base {
        Base::default_of(2)
    }
    /// RAdam with b1 = 0.9, b2 = 0.999, eps = 1e-8.
    pub fn radam() -> Base {
        Base::default_of(3)
    }

    /// The rule of kind `kind` with the catalog's defaults.
    ///
    /// # Panics
    /// If `kind` is not in the catalog.
    pub fn default_of(kind: u32) -> Base {
        let spec = base_specs()
            .iter()
            .find(|s| s.kind == kind)
            .expect("a base kind of the catalog");
        Base::from_values(kind, spec.defaults()).expect("defaults have the field types")
    }

    /// The catalog entry of this rule.
    pub fn spec(&self) -> &'static Spec {
        let kind = self.kind();
        base_specs()
            .iter()
            .find(|s| s.kind == kind)
            .expect("every variant is in the catalog")
    }

    /// Rejects any hyperparameter outside its domain (f32 fields also after rounding to f32),
    /// then the entry's cross-field checks. Allocates nothing.
    pub fn validate(&self) -> Result<(), Error> {
        let spec = self.spec();
        self.try_for_each_value(|i, v| spec.fields[i].check(spec.fields[i].label, &v))?;
        self.check_entry()
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

/// What an update does when a gradient holds NaN or ±Inf (docs/numerics.md, "Non-finite values").
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

/// The catalog of the configuration's own numeric fields (besides the base rule and the
/// schedule): type, default, domain, f32 use, C field. A new field is one entry here, its
/// `Config` field and its line in [`Config::field_values`] (plus the C struct field).
pub fn config_spec() -> &'static Spec {
    static SPEC: std::sync::OnceLock<Spec> = std::sync::OnceLock::new();
    SPEC.get_or_init(|| {
        let field = |name, ty, domain, f32, default, doc| FieldSpec {
            name,
            label: name,
            key: name,
            ty,
            domain,
            f32,
            default,
            c: name,
            c_label: name,
            c_zero_means: None,
            doc,
        };
        Spec {
            kind: 0,
            name: "config",
            variant: "Config",
            doc: "The configuration's own fields.",
            fields: vec![
                field(
                    "weight_decay",
                    Ty::F64,
                    Domain::NonNeg,
                    true,
                    Value::F64(0.0),
                    "Coupled weight decay (`g += wd * p`), 0 for none.",
                ),
                field(
                    "grad_clip_norm",
                    Ty::OptF64,
                    Domain::Positive,
                    true,
                    Value::OptF64(None),
                    "Clip by global norm over all registered buffers (C: 0 for none).",
                ),
                field(
                    "grad_clip_value",
                    Ty::OptF64,
                    Domain::Positive,
                    true,
                    Value::OptF64(None),
                    "Clip each gradient element to `[-c, c]` (C: 0 for none).",
                ),
                field(
                    "sync_period",
                    Ty::U64,
                    Domain::AtLeastOne,
                    false,
                    Value::U64(5),
                    "Lookahead: sync every `sync_period` applied updates.",
                ),
                field(
                    "alpha",
                    Ty::F64,
                    Domain::UnitClosed,
                    true,
                    Value::F64(0.5),
                    "Lookahead: the slow-weight step `s += alpha * (p - s)`.",
                ),
            ],
        }
    })
}

/// Largest thread count accepted.
pub const MAX_THREADS: usize = 256;

/// The full configuration of an optimizer: build it with [`Config::new`] (or
/// [`Config::with_schedule`]) and the builder methods; [`Optimizer::new`](crate::Optimizer::new)
/// validates it and names the first bad value.
///
/// ```
/// use flatopt::{Base, Config, NonFinitePolicy, Optimizer};
/// let cfg = Config::new(Base::adam(), 1e-3)
///     .weight_decay(1e-4)
///     .clip_norm(1.0)
///     .lookahead(5, 0.5)
///     .nonfinite(NonFinitePolicy::Error);
/// assert!(Optimizer::new(cfg.clone()).is_ok());
/// let bad = cfg.lookahead(5, 1.5); // alpha must be in [0, 1]
/// assert!(Optimizer::new(bad).unwrap_err().to_string().contains("alpha"));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The base optimizer and its hyperparameters.
    pub base: Base,
    /// Learning rate: `Schedule::Fixed { lr }` for a constant one.
    pub lr: Schedule,
    /// When the schedule advances (default: once per applied update).
    pub schedule_mode: ScheduleMode,
    /// Coupled weight decay (`g += wd * p`), 0 for none.
    pub weight_decay: f64,
    /// Clip by global norm over all registered buffers.
    pub grad_clip_norm: Option<f64>,
    /// Clip each gradient element to `[-c, c]`.
    pub grad_clip_value: Option<f64>,
    /// Lookahead around the base optimizer, `None` for none.
    pub lookahead: Option<Lookahead>,
    /// What an update does with a NaN or ±Inf gradient (default: skip it).
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
    /// Sets [`Config::weight_decay`].
    pub fn weight_decay(mut self, wd: f64) -> Config {
        self.weight_decay = wd;
        self
    }
    /// Clips by global norm `c` ([`Config::grad_clip_norm`]).
    pub fn clip_norm(mut self, c: f64) -> Config {
        self.grad_clip_norm = Some(c);
        self
    }
    /// Clips each gradient element to `[-c, c]` ([`Config::grad_clip_value`]).
    pub fn clip_value(mut self, c: f64) -> Config {
        self.grad_clip_value = Some(c);
        self
    }
    /// Sets [`Config::nonfinite`].
    pub fn nonfinite(mut self, policy: NonFinitePolicy) -> Config {
        self.nonfinite = policy;
        self
    }
    /// Sets [`Config::num_threads`].
    pub fn threads(mut self, n: usize) -> Config {
        self.num_threads = n;
        self
    }
    /// Forces a SIMD tier ([`Config::tier`]).
    pub fn tier(mut self, tier: Tier) -> Config {
        self.tier = Some(tier);
        self
    }
    /// Sets [`Config::schedule_mode`].
    pub fn schedule_mode(mut self, mode: ScheduleMode) -> Config {
        self.schedule_mode = mode;
        self
    }

    /// The values of the catalog's configuration fields ([`config_spec`]) that apply to this
    /// configuration (Lookahead's only with Lookahead), in catalog order.
    pub fn field_values(&self) -> Vec<(&'static str, Value)> {
        let mut out = vec![("weight_decay", Value::F64(self.weight_decay))];
        out.push(("grad_clip_norm", Value::OptF64(self.grad_clip_norm)));
        out.push(("grad_clip_value", Value::OptF64(self.grad_clip_value)));
        if let Some(la) = self.lookahead {
            out.push(("sync_period", Value::U64(la.sync_period)));
            out.push(("alpha", Value::F64(la.alpha)));
        }
        out
    }

    /// Checks every field; the error names the first bad one and its value: the base rule, the
    /// schedule, then each field of [`config_spec`] against its domain (f32 fields also after
    /// rounding to f32), threads and tier.
    pub fn validate(&self) -> Result<(), Error> {
        self.base.validate()?;
        self.lr.validate()?;
        let spec = config_spec();
        for (name, value) in self.field_values() {
            let field = spec
                .field(name)
                .expect("every configuration field is in the catalog");
            field.check(field.label, &value)?;
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
