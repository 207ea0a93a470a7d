//! Configuration of an optimizer: the base rule and its hyperparameters, the learning rate or
//! schedule, the gradient transforms, Lookahead, the non-finite policy and threads. Plain data
//! with defaults and one `validate` that names the first bad value.

use crate::catalog::{Field, FieldSpec, Spec, Ty, Value};
use crate::error::Error;
use crate::schedule::Schedule;
use crate::simd::Tier;

pub use crate::rules::{check_step, Base};

/// Every base rule of the catalog, in kind order.
pub fn base_specs() -> &'static [Spec] {
    static SPECS: std::sync::OnceLock<Vec<Spec>> = std::sync::OnceLock::new();
    SPECS.get_or_init(crate::rules::build_specs)
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
    /// Adagrad as PyTorch defines it: no lr decay, accumulator from 0, eps = 1e-10 outside the
    /// square root.
    pub fn adagrad() -> Base {
        Base::default_of(4)
    }
    /// RMSprop as PyTorch defines it: alpha = 0.99, eps = 1e-8 outside the square root, no
    /// momentum, not centered.
    pub fn rmsprop() -> Base {
        Base::default_of(5)
    }
    /// Adamax as PyTorch defines it: b1 = 0.9, b2 = 0.999, eps = 1e-8 inside the maximum.
    pub fn adamax() -> Base {
        Base::default_of(6)
    }
    /// NAdam as PyTorch defines it: b1 = 0.9, b2 = 0.999, eps = 1e-8, momentum_decay = 0.004,
    /// no decoupled weight decay.
    pub fn nadam() -> Base {
        Base::default_of(7)
    }
    /// Lion: b1 = 0.9, b2 = 0.99, no weight decay.
    pub fn lion() -> Base {
        Base::default_of(8)
    }
    /// AdaBelief as optax defines it: b1 = 0.9, b2 = 0.999, eps = eps_root = 1e-16.
    pub fn adabelief() -> Base {
        Base::default_of(9)
    }
    /// Yogi as optax defines it: b1 = 0.9, b2 = 0.999, eps = 1e-3, moments from 1e-6.
    pub fn yogi() -> Base {
        Base::default_of(10)
    }
    /// Adadelta as PyTorch defines it: rho = 0.9, eps = 1e-6.
    pub fn adadelta() -> Base {
        Base::default_of(11)
    }
    /// Rprop as PyTorch defines it: etas (0.5, 1.2), step sizes in [1e-6, 50].
    pub fn rprop() -> Base {
        Base::default_of(12)
    }
    /// LAMB as optax defines it: b1 = 0.9, b2 = 0.999, eps = 1e-6, eps_root = 0, no weight
    /// decay; a trust ratio per registered buffer.
    pub fn lamb() -> Base {
        Base::default_of(13)
    }
    /// LARS as optax defines it: momentum 0.9, trust coefficient 0.001, eps 0, no weight decay;
    /// a trust ratio per registered buffer.
    pub fn lars() -> Base {
        Base::default_of(14)
    }
    /// NovoGrad as optax defines it: b1 = 0.9, b2 = 0.25, eps = 1e-6, eps_root = 0, no weight
    /// decay; a second moment per registered buffer.
    pub fn novograd() -> Base {
        Base::default_of(15)
    }
    /// Adafactor as PyTorch defines it (`torch.optim.Adafactor`): decay rate 0.8, eps 1.19e-7
    /// (f32's epsilon) and 1e-3, clipping threshold 1, the parameter scale and the relative
    /// step on, no weight decay; factored second moments for buffers registered with a shape
    /// ([`Optimizer::register_shaped`](crate::Optimizer::register_shaped)).
    pub fn adafactor() -> Base {
        Base::default_of(16)
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

    /// The value of field `index` (declaration order), without allocating for scalar fields.
    fn value_at(&self, index: usize) -> Option<Value> {
        let mut out = None;
        let _ = self.try_for_each_value(|i, v| {
            if i == index {
                out = Some(v);
                return Err(());
            }
            Ok(())
        });
        out
    }

    /// The rule's own weight decay, if its catalog entry has a `weight_decay` field (a decay
    /// the rule applies itself, decoupled from the gradient: AdamW's). `None` for a rule
    /// without one (the coupled `Config::weight_decay` is then its weight decay).
    pub fn decoupled_weight_decay(&self) -> Option<f64> {
        let index = self
            .spec()
            .fields
            .iter()
            .position(|f| f.name == "weight_decay")?;
        match self.value_at(index)? {
            Value::F64(x) => Some(x),
            _ => None,
        }
    }

    /// This rule with its own weight decay set to `wd` (see
    /// [`Base::decoupled_weight_decay`]), without allocating; `None` if it has none. Not
    /// validated.
    pub fn with_decoupled_weight_decay(&self, wd: f64) -> Option<Base> {
        let index = self
            .spec()
            .fields
            .iter()
            .position(|f| f.name == "weight_decay")?;
        let got = Base::try_from_fields(self.kind(), |i| {
            if i == index {
                Ok(Value::F64(wd))
            } else {
                self.value_at(i).ok_or(())
            }
        })?;
        got.ok()
    }
}

crate::catalog::choice! {
    /// What an update does when a gradient holds NaN or ±Inf (docs/numerics.md, "Non-finite
    /// values").
    #[derive(Default)]
    pub enum NonFinitePolicy {
        /// Skip the whole update, count it, report it (the default).
        #[default]
        Skip = "skip",
        /// Skip the whole update, count it, and return an error.
        Error = "error",
        /// No check: non-finite values flow into the parameters (fastest).
        Propagate = "propagate",
    }
}

crate::catalog::choice! {
    /// When the learning-rate schedule advances.
    #[derive(Default)]
    pub enum ScheduleMode {
        /// Once per applied update (the first update uses e = 0).
        #[default]
        PerUpdate = "per_update",
        /// Only when the host calls `Optimizer::step_schedule` (epoch style).
        Manual = "manual",
    }
}

/// The SIMD tier of a configuration as a catalog choice: its index is the C
/// `flatopt_simd_tier` value (0: the process default).
impl Field for Option<Tier> {
    const TY: Ty = Ty::Choice(&["default", "scalar", "portable", "avx2", "avx512"]);
    type View<'a> = Option<Tier>;
    fn view(&self) -> Option<Tier> {
        *self
    }
    fn to_value(&self) -> Value {
        Value::Choice(self.map_or(0, |t| t as u32))
    }
    fn from_value(v: Value) -> Option<Self> {
        match v {
            Value::Choice(0) => Some(None),
            Value::Choice(i) => Some(Some(Tier::from_u8(u8::try_from(i).ok()?)?)),
            _ => None,
        }
    }
}

/// Declares the configuration-field catalog (`fields.rs`): the [`Config`] struct (the base
/// rule, the learning rate, then one field per entry), its option groups (such as
/// [`Lookahead`]), their defaults, their [`Spec`] ([`config_spec`]), the walk over their values
/// that validation, the checkpoint encoding and the C conversion share, and the entries'
/// checks. An entry:
///
/// ```text
/// /// Docs.
/// name: RustType = default; Domain[, f32]; c c_field[ = CForm::...][, local];
///                               // local: not in checkpoints (threads, SIMD tier)
/// [@group /// Docs.
///  Name { fields }]             // name: Option<Name>: the C field is the flag, the group's
///                               // fields follow it (in C, checkpoints and validation)
/// [@check { ... }]              // the field is a local variable; returns Result<(), Error>
/// ```
macro_rules! config_fields {
    (@f32) => { false };
    (@f32 f32) => { true };
    (@form) => { $crate::catalog::CForm::Plain };
    (@form $e:expr) => { $e };
    (@saved) => { true };
    (@saved local) => { false };
    (@field $f:ident, $fty:ty, $def:expr, $dom:ident, [$($prec:ident)?], $c:ident, [$($form:expr)?], [$($local:ident)?], [$($doc:literal)*]) => {
        $crate::catalog::FieldSpec {
            name: stringify!($f),
            label: stringify!($f),
            key: stringify!($f),
            ty: <$fty as $crate::catalog::Field>::TY,
            domain: $crate::catalog::Domain::$dom,
            f32: $crate::config::config_fields!(@f32 $($prec)?),
            default: {
                let d: $fty = $def;
                $crate::catalog::Field::to_value(&d)
            },
            c: stringify!($c),
            c_label: stringify!($c),
            c_zero_means: None,
            c_form: $crate::config::config_fields!(@form $($form)?),
            saved: $crate::config::config_fields!(@saved $($local)?),
            doc: concat!($($doc, "\n"),*),
        }
    };
    (@group [$($doc:literal)*] $G:ident { $( [$($gdoc:literal)*] $g:ident : $gty:ty = $gdef:expr ; )+ }) => {
        $(#[doc = $doc])*
        #[derive(Debug, Clone, Copy, PartialEq)]
        pub struct $G {
            $( $(#[doc = $gdoc])* pub $g: $gty, )+
        }

        impl Default for $G {
            fn default() -> Self {
                $G { $( $g: $gdef, )+ }
            }
        }

        /// In the catalog: the flag that turns the group on (its fields follow it).
        impl $crate::catalog::Field for Option<$G> {
            const TY: $crate::catalog::Ty = $crate::catalog::Ty::Bool;
            type View<'a> = Option<$G>;
            fn view(&self) -> Option<$G> {
                *self
            }
            fn to_value(&self) -> $crate::catalog::Value {
                $crate::catalog::Value::Bool(self.is_some())
            }
            /// The group's defaults when on: its fields are read after the flag.
            fn from_value(v: $crate::catalog::Value) -> Option<Self> {
                match v {
                    $crate::catalog::Value::Bool(b) => Some(b.then($G::default)),
                    _ => None,
                }
            }
        }
    };
    (
        $(
            $(#[doc = $doc:literal])*
            $f:ident : $fty:ty = $def:expr ; $dom:ident $(, $prec:ident)? ;
            c $c:ident $(= $form:expr)? $(, $local:ident)? ;
            $(
                @group $(#[doc = $Gdoc:literal])* $G:ident {
                    $(
                        $(#[doc = $gdoc:literal])*
                        $g:ident : $gty:ty = $gdef:expr ; $gdom:ident $(, $gprec:ident)? ; c $gc:ident ;
                    )+
                }
            )?
            $( @check $check:block )?
        )+
    ) => {
        /// The full configuration of an optimizer: the base rule, the learning rate, and the
        /// fields of the configuration-field catalog (`src/config/fields.rs`, which lists each
        /// field's default, domain and C field). Build it with [`Config::new`] (or
        /// [`Config::with_schedule`]) and the builder methods;
        /// [`Optimizer::new`](crate::Optimizer::new) validates it and names the first bad value.
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
            pub base: $crate::config::Base,
            /// Learning rate: `Schedule::Fixed { lr }` for a constant one.
            pub lr: $crate::schedule::Schedule,
            $( $(#[doc = $doc])* pub $f: $fty, )+
        }

        $($(
            $crate::config::config_fields!(@group [$($Gdoc)*] $G { $( [$($gdoc)*] $g: $gty = $gdef; )+ });
        )?)+

        pub(crate) fn build_spec() -> $crate::catalog::Spec {
            $crate::catalog::Spec {
                kind: 0,
                name: "config",
                variant: "Config",
                doc: "The configuration's own fields (besides the base rule and the learning rate).",
                fields: vec![$(
                    $crate::config::config_fields!(@field $f, $fty, $def, $dom, [$($prec)?], $c, [$($form)?], [$($local)?], [$($doc)*]),
                    $($(
                        $crate::config::config_fields!(@field $g, $gty, $gdef, $gdom, [$($gprec)?], $gc, [], [], [$($gdoc)*]),
                    )+)?
                )+],
            }
        }

        impl Config {
            /// `base` with a learning-rate schedule, every catalog field at its default.
            pub fn with_schedule(base: $crate::config::Base, lr: $crate::schedule::Schedule) -> Config {
                Config { base, lr, $( $f: $def, )+ }
            }

            /// Calls `f` with each catalog field that applies to this configuration (a group's
            /// fields only when it is on) and its value, in catalog order, without allocating;
            /// stops at `f`'s first error. Validation, the checkpoint encoding and the fuzz
            /// oracles walk the configuration with it.
            pub fn try_for_each_field<E>(
                &self,
                mut f: impl FnMut(&'static $crate::catalog::FieldSpec, $crate::catalog::Value) -> Result<(), E>,
            ) -> Result<(), E> {
                let fields = &$crate::config::config_spec().fields;
                let mut i = 0;
                $(
                    f(&fields[i], $crate::catalog::Field::to_value(&self.$f))?;
                    i += 1;
                    $(
                        match &self.$f {
                            Some(group) => {
                                $(
                                    f(&fields[i], $crate::catalog::Field::to_value(&group.$g))?;
                                    i += 1;
                                )+
                            }
                            None => i += [$(stringify!($g)),+].len(),
                        }
                        let _: Option<&$G> = self.$f.as_ref();
                    )?
                )+
                let _ = i;
                Ok(())
            }

            /// The configuration of `base`, `lr` and each catalog field's value from `get` (in
            /// catalog order, a group's fields always, after its flag), without allocating:
            /// `None` if a value has the wrong type, `Some(Err)` with `get`'s first error.
            pub fn try_from_fields<E>(
                base: $crate::config::Base,
                lr: $crate::schedule::Schedule,
                mut get: impl FnMut(&'static $crate::catalog::FieldSpec) -> Result<$crate::catalog::Value, E>,
            ) -> Option<Result<Config, E>> {
                let fields = &$crate::config::config_spec().fields;
                let mut i = 0;
                let mut next = || {
                    let v = get(&fields[i]);
                    i += 1;
                    v
                };
                Some(Ok(Config {
                    base,
                    lr,
                    $( $f: {
                        #[allow(unused_mut)]
                        let mut v: $fty = match next() {
                            Ok(v) => $crate::catalog::Field::from_value(v)?,
                            Err(e) => return Some(Err(e)),
                        };
                        $(
                            let group = $G {
                                $( $g: match next() {
                                    Ok(v) => <$gty as $crate::catalog::Field>::from_value(v)?,
                                    Err(e) => return Some(Err(e)),
                                }, )+
                            };
                            v = v.map(|_| group);
                        )?
                        v
                    }, )+
                }))
            }

            /// The entries' own checks, in catalog order.
            #[allow(unused_variables)]
            pub(crate) fn check_entries(&self) -> Result<(), $crate::error::Error> {
                $( $(
                    {
                        let $f = self.$f;
                        let r: Result<(), $crate::error::Error> = $check;
                        r?;
                    }
                )? )+
                Ok(())
            }
        }
    };
}
pub(crate) use config_fields;

mod fields;
pub(crate) use fields::config_table;
pub use fields::{Config, Lookahead};

/// The catalog of the configuration's own fields (besides the base rule and the schedule),
/// declared in `src/config/fields.rs`: type, default, domain, f32 use, C field and form,
/// whether checkpoints carry it.
pub fn config_spec() -> &'static Spec {
    static SPEC: std::sync::OnceLock<Spec> = std::sync::OnceLock::new();
    SPEC.get_or_init(fields::build_spec)
}

/// Largest thread count accepted.
pub const MAX_THREADS: usize = 256;

impl Config {
    /// `base` at a constant learning rate, everything else at its default.
    pub fn new(base: Base, lr: f64) -> Config {
        Config::with_schedule(base, Schedule::Fixed { lr })
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
    /// configuration (a group's only when it is on), in catalog order.
    pub fn field_values(&self) -> Vec<(&'static str, Value)> {
        let mut out = Vec::new();
        self.for_each_field(|f, v| out.push((f.name, v)));
        out
    }

    /// [`Config::try_for_each_field`] with an `f` that cannot fail.
    pub fn for_each_field(&self, mut f: impl FnMut(&'static FieldSpec, Value)) {
        let done: Result<(), std::convert::Infallible> = self.try_for_each_field(|field, v| {
            f(field, v);
            Ok(())
        });
        match done {
            Ok(()) => {}
            Err(never) => match never {},
        }
    }

    /// Checks every field; the error names the first bad one and its value: the base rule, the
    /// schedule, then each field of [`config_spec`] that applies against its domain (f32 fields
    /// also after rounding to f32), then the entries' own checks (threads, tier). Allocates
    /// nothing on success.
    pub fn validate(&self) -> Result<(), Error> {
        self.base.validate()?;
        self.lr.validate()?;
        self.try_for_each_field(|f, v| f.check(f.label, &v))?;
        self.check_entries()
    }
}
