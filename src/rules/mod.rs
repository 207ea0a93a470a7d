//! The base rules, one file each: `src/rules/<rule>.rs` holds a rule's catalog entries (kind
//! number, name, hyperparameters with type, default, domain, `f32` use and C field; the state
//! buffers it keeps and their initial values; its per-step scalars in f64; cross-field checks)
//! and its kernels (the [`Rule`] variant with its per-step scalars as f32, the state buffers
//! it touches, the scalars a step must have finite, and its fused loop, generic over
//! [`Vf32`](crate::simd::Vf32)). The list at the end of this file registers each file with one
//! word; from it follow the [`Base`] enum and its catalog ([`build_specs`]), the [`Rule`] enum,
//! and every `match` over them ([`Base::rule_for_step`], [`Base::state_used`],
//! [`Rule::state_used`], [`check_step`], the fused pass's dispatch [`span`]), and the C
//! accessors of `flatopt_base_params` by field name ([`c_field`]).
//!
//! A file declares its rule with [`rule!`]:
//!
//! ```text
//! super::rule! {
//!     base {                                   // catalog entries (0 or more)
//!         /// Docs.
//!         Name = <kind>, "name" {
//!             /// Docs.
//!             field [as "label"]: type = default; Domain[, f32]; c c_field;
//!         }
//!         @state { (m, v, v_max) }             // which state buffers the entry keeps
//!         [@init { [m0, v0, v_max0] }]         // their initial values if not 0
//!         @rule(t, lr) { ... -> Rule }         // the per-step scalars of step t (1-based)
//!         [@check { ... -> Result<(), Error> }] // cross-field checks
//!     }
//!     kernel {                                 // Rule variants (0 or more)
//!         /// Docs.
//!         Name {
//!             /// Docs.
//!             scalar: f32,
//!         }
//!         @state { (m, v, v_max) }             // which state buffers the loop touches
//!         @finite { [("name in messages", scalar), ...] } // must be finite as f32
//!         @span<V>(s) { ... specialize!(V, s, loop, (splatted scalars); switches) }
//!     }
//! }
//! ```
//!
//! Inside each block the entry's fields (or the kernel's scalars) are local variables, and
//! everything the file can name is in scope: the blocks run in the file's own module, so its
//! helpers and imports need no `pub`. Entries and kernels of one file may be used by another
//! (Adam and AdamW share the kernel `Adam`; RAdam and others reuse `adam::Moments`).
//!
//! Kinds are numbered densely in list order (checkpoints and C arrays index by them): a new rule
//! takes the next number and goes at the end of the list.

use crate::catalog::Spec;
use crate::error::Error;
use crate::kernels::Span;
use crate::simd::Vf32;

/// Declares a file's base rules and kernels (see the module docs for the syntax). Expands, in
/// the file, to one module per entry (`entries::<Name>`) and per kernel (`kernels::<Name>`)
/// holding the blocks as functions, and to the macro `tokens!` that hands the declarations'
/// shapes to the central list ([`rules!`]).
macro_rules! rule {
    (@f32) => { false };
    (@f32 f32) => { true };
    (@label $f:ident) => { stringify!($f) };
    (@label $f:ident $l:literal) => { $l };
    (@check) => { Ok(()) };
    (@check $b:block) => { $b };
    (@init) => { [0.0f32; 3] };
    (@init $b:block) => { $b };
    (
        $(
            base {
                $(
                    $(#[doc = $vdoc:literal])*
                    $V:ident = $kind:literal, $name:literal {
                        $(
                            $(#[doc = $fdoc:literal])*
                            $f:ident $(as $label:literal)? : $fty:ty = $def:expr ;
                            $dom:ident $(, $prec:ident)? ; c $c:ident ;
                        )+
                    }
                    @state $state:block
                    $( @init $init:block )?
                    @rule($t:ident, $lr:ident) $rule:block
                    $( @check $check:block )?
                )+
            }
        )?
        $(
            kernel {
                $(
                    $(#[doc = $kdoc:literal])*
                    $K:ident {
                        $( $(#[doc = $kfdoc:literal])* $kf:ident : $kty:ty ),* $(,)?
                    }
                    @state $kstate:block
                    @finite $finite:block
                    @span<$SV:ident>($s:ident) $span:block
                )+
            }
        )?
    ) => {
        $(
            /// The catalog entries' blocks as functions of their fields.
            pub(super) mod entries {
                $(
                    #[allow(non_snake_case, unused_imports, unused_variables, clippy::too_many_arguments)]
                    pub(in $crate::rules) mod $V {
                        use super::super::*;

                        pub(in $crate::rules) fn state_used($($f: $fty),+) -> (bool, bool, bool) {
                            $state
                        }

                        pub(in $crate::rules) fn state_init($($f: $fty),+) -> [f32; 3] {
                            $crate::rules::rule!(@init $($init)?)
                        }

                        pub(in $crate::rules) fn rule(
                            $($f: $fty,)+
                            $t: u64,
                            $lr: f64,
                        ) -> $crate::rules::Rule {
                            $rule
                        }

                        pub(in $crate::rules) fn check(
                            $($f: $fty),+
                        ) -> Result<(), $crate::error::Error> {
                            $crate::rules::rule!(@check $($check)?)
                        }
                    }
                )+
            }
        )?
        $(
            /// The kernels' blocks as functions of their per-step scalars.
            pub(super) mod kernels {
                $(
                    #[allow(non_snake_case, unused_imports, unused_variables, clippy::too_many_arguments)]
                    pub(in $crate::rules) mod $K {
                        use super::super::*;

                        #[inline(always)]
                        pub(in $crate::rules) fn state_used($($kf: $kty),*) -> (bool, bool, bool) {
                            $kstate
                        }

                        pub(in $crate::rules) fn finite(
                            $($kf: $kty),*
                        ) -> impl IntoIterator<Item = (&'static str, f32)> {
                            $finite
                        }

                        #[inline(always)]
                        pub(in $crate::rules) fn span<$SV: $crate::simd::Vf32>(
                            $s: $crate::kernels::Span<'_, '_, $SV>,
                            $($kf: $kty),*
                        ) {
                            $span
                        }
                    }
                )+
            }
        )?

        /// This file's declarations for the central list ([`rules!`](crate::rules)): calls
        /// `collect!` with the list's state and their shapes.
        macro_rules! tokens {
            ($pending:tt) => {
                $crate::rules::collect! { $pending {
                    bases [$($(
                        [$(#[doc = $vdoc])*] $V = $kind, $name {
                            $(
                                [$(#[doc = $fdoc])*]
                                $f [$crate::rules::rule!(@label $f $($label)?)] : $fty = $def;
                                $dom [$crate::rules::rule!(@f32 $($prec)?)] $c;
                            )+
                        }
                    )+)?]
                    kernels [$($(
                        [$(#[doc = $kdoc])*] $K { $( [$(#[doc = $kfdoc])*] $kf : $kty; )* }
                    )+)?]
                } }
            };
        }
        pub(super) use tokens;
    };
}
pub(crate) use rule;

/// One step of the central list: appends the current file's shapes and hands the list's state
/// to the next file's `tokens!`, or, after the last file, everything to `generate!`.
macro_rules! collect {
    ([$cur:ident [$next:ident $($rest:ident)*] [$($acc:tt)*]] $shapes:tt) => {
        $next::tokens! { [$next [$($rest)*] [$($acc)* $cur $shapes]] }
    };
    ([$cur:ident [] [$($acc:tt)*]] $shapes:tt) => {
        $crate::rules::generate! { $($acc)* $cur $shapes }
    };
}
pub(crate) use collect;

/// The central list: declares each file's module and collects their declarations (see
/// `collect!`) into one `generate!`.
macro_rules! rules {
    ($first:ident $($file:ident)*) => {
        mod $first;
        $( mod $file; )*

        /// The files of the list, in order.
        #[cfg(test)]
        const FILES: &[&str] = &[stringify!($first) $(, stringify!($file))*];

        $first::tokens! { [$first [$($file)*] []] }
    };
}

/// Generates, from every file's shapes, the [`Base`] and [`Rule`] enums and every `match` over
/// them, each arm calling the file's function.
macro_rules! generate {
    ($(
        $file:ident {
            bases [$(
                [$(#[doc = $vdoc:literal])*] $V:ident = $kind:literal, $name:literal {
                    $(
                        [$(#[doc = $fdoc:literal])*]
                        $f:ident [$label:expr] : $fty:ty = $def:expr;
                        $dom:ident [$f32:expr] $c:ident;
                    )+
                }
            )*]
            kernels [$(
                [$(#[doc = $kdoc:literal])*] $K:ident {
                    $( [$(#[doc = $kfdoc:literal])*] $kf:ident : $kty:ty; )*
                }
            )*]
        }
    )+) => {
        $crate::catalog::catalog_enum! {
            /// The base optimizer and its hyperparameters, declared in the base-rule catalog
            /// (one file per rule in `src/rules/`, which lists each field's default and
            /// domain).
            #[derive(Debug, Clone, Copy, PartialEq)]
            pub enum Base {
                $($(
                    $(#[doc = $vdoc])*
                    $V = $kind, $name {
                        $( $(#[doc = $fdoc])* $f: $fty ),+
                    }
                )*)+
            }
        }

        /// Every entry of the catalog, in kind order.
        pub(crate) fn build_specs() -> Vec<Spec> {
            vec![$($(
                Spec {
                    kind: $kind,
                    name: $name,
                    variant: stringify!($V),
                    doc: concat!($($vdoc, "\n"),*),
                    fields: vec![$(
                        $crate::catalog::FieldSpec {
                            name: stringify!($f),
                            label: $label,
                            key: $label,
                            ty: <$fty as $crate::catalog::Field>::TY,
                            domain: $crate::catalog::Domain::$dom,
                            f32: $f32,
                            default: {
                                let d: $fty = $def;
                                $crate::catalog::Field::to_value(&d)
                            },
                            c: stringify!($c),
                            // C messages name base-rule fields as Rust does.
                            c_label: $label,
                            c_zero_means: None,
                            c_form: $crate::catalog::CForm::Plain,
                            saved: true,
                            doc: concat!($($fdoc, "\n"),*),
                        },
                    )+],
                },
            )*)+]
        }

        impl Base {
            /// Which state buffers the rule keeps: (m, v, v_max).
            pub fn state_used(&self) -> (bool, bool, bool) {
                match *self {
                    $($( Base::$V { $($f),+ } => $file::entries::$V::state_used($($f),+), )*)+
                }
            }

            /// The value each state buffer (m, v, v_max) starts from at registration and reset
            /// (0 unless the entry's `@init` says otherwise, as Adagrad's initial accumulator).
            pub fn state_init(&self) -> [f32; 3] {
                match *self {
                    $($( Base::$V { $($f),+ } => $file::entries::$V::state_init($($f),+), )*)+
                }
            }

            /// The rule for applied step `t` (1-based; 0 counts as 1) at learning rate `lr`:
            /// every per-step scalar is computed in f64 and rounded to f32 once. `t` counts
            /// base-optimizer steps (bias correction, RAdam's rho_t, momentum's first step).
            pub fn rule_for_step(&self, t: u64, lr: f64) -> Rule {
                let step = t.max(1);
                match *self {
                    $($(
                        Base::$V { $($f),+ } => $file::entries::$V::rule($($f,)+ step, lr),
                    )*)+
                }
            }

            /// The entry's cross-field checks.
            pub(crate) fn check_entry(&self) -> Result<(), Error> {
                match *self {
                    $($( Base::$V { $($f),+ } => $file::entries::$V::check($($f),+), )*)+
                }
            }
        }

        /// The base update rule of one step with its per-step scalars, already rounded to f32
        /// (they are computed in f64 by [`Rule::for_step`]). One variant per kernel of the
        /// files in `src/rules/`.
        #[derive(Debug, Clone, Copy, PartialEq)]
        pub enum Rule {
            $($(
                $(#[doc = $kdoc])*
                $K {
                    $( $(#[doc = $kfdoc])* $kf: $kty, )*
                },
            )*)+
        }

        impl Rule {
            /// Which state buffers the rule reads and writes: (m, v, v_max).
            #[inline]
            pub fn state_used(&self) -> (bool, bool, bool) {
                match *self {
                    $($( Rule::$K { $($kf),* } => $file::kernels::$K::state_used($($kf),*), )*)+
                }
            }
        }

        /// Refuses a step whose per-step scalars are not finite after rounding to f32: the
        /// learning rate itself (a schedule that grew past the f32 range), and each scalar of
        /// the rule (the kernel's `@finite` list: the step size `lr / (1 - b1^t)`, the
        /// decoupled decay factor `1 - lr * weight_decay`, ...). The error names the scalar and
        /// its f64 value; the caller has changed nothing yet.
        pub fn check_step(lr: f64, rule: &Rule) -> Result<(), Error> {
            let lr32 = lr as f32;
            if !lr32.is_finite() {
                return Err(Error::invalid(
                    "lr",
                    format!("{lr:?} ({lr32:?} as f32)"),
                    "the learning rate of this step must be finite as f32 (the schedule grew \
                     past 3.4028235e38): the step is refused, nothing changed",
                ));
            }
            let check = |(name, x): (&'static str, f32)| {
                if x.is_finite() {
                    Ok(())
                } else {
                    Err(Error::invalid(
                        name,
                        format!("{x:?} as f32 (lr = {lr:?})"),
                        "a per-step scalar must be finite as f32: the step is refused, nothing \
                         changed",
                    ))
                }
            };
            match *rule {
                $($(
                    Rule::$K { $($kf),* } => {
                        $file::kernels::$K::finite($($kf),*).into_iter().try_for_each(check)
                    }
                )*)+
            }
        }

        /// The field of `flatopt_base_params` called `c` if it has type `T` (`f64`, or `u32`
        /// for flags): the C side of the catalog (`ffi::catalog::CFields`), from the C fields
        /// the entries name, so that an entry naming a field the struct lacks does not compile.
        #[allow(unreachable_patterns)]
        pub(crate) fn c_field<'a, T: 'static>(
            p: &'a mut $crate::ffi::flatopt_base_params,
            c: &str,
        ) -> Option<&'a mut T> {
            let field: &mut dyn std::any::Any = match c {
                $($($( stringify!($c) => &mut p.$c, )+)*)+
                _ => return None,
            };
            field.downcast_mut()
        }

        /// The fused update of a window with the rule's loop (see `kernels::fused`).
        #[inline(always)]
        pub(crate) fn span<V: Vf32>(rule: Rule, s: Span<'_, '_, V>) {
            match rule {
                $($( Rule::$K { $($kf),* } => $file::kernels::$K::span::<V>(s, $($kf),*), )*)+
            }
        }
    };
}
pub(crate) use generate;

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

/// A buffer's sums of squares from the pass before the update of a rule with per-buffer norms
/// (LAMB, LARS, NovoGrad; `kernels::trust`), and its stored per-buffer value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Norms {
    /// Sum of squares of the vector the pass wrote (LAMB's update direction, LARS's decayed
    /// gradient, NovoGrad's gradient), in the fixed block order.
    pub(crate) x: f64,
    /// Sum of squares of the parameters before the update (LAMB, LARS; else 0).
    pub(crate) p: f64,
    /// Element 0 of `v` before the update (NovoGrad's per-buffer second moment; else 0).
    pub(crate) v0: f32,
}

/// `(c, d)` of a trust-ratio update `p -= c * (u / d)` (optax's `scale_by_trust_ratio`, with
/// the learning rate folded in): `c = lr * tc * ||p||` and `d = ||u|| + eps`, each computed in
/// f64 and rounded once, or `(lr, 1)` where either norm is 0. `|u / d| <= 1`, so a tiny
/// `||u||` cannot overflow the step as `lr * ratio` would.
fn trust_ratio(lr: f64, tc: f64, eps: f64, n: Norms) -> (f32, f32) {
    let (pn, un) = (n.p.sqrt(), n.x.sqrt());
    if pn == 0.0 || un == 0.0 {
        (lr as f32, 1.0)
    } else {
        ((lr * tc * pn) as f32, (un + eps) as f32)
    }
}

impl Rule {
    /// For a rule with per-buffer norms (LAMB, LARS, NovoGrad), the rule of the pass before the
    /// update, which writes the vector whose norm it needs into the `v_max` slot (a block
    /// scratch, `kernels::trust`); `None` for the elementwise rules.
    #[inline]
    pub(crate) fn pre_pass(&self) -> Option<Rule> {
        match *self {
            Rule::Lamb { sc, .. } => Some(Rule::Lamb { pre: true, sc }),
            Rule::Lars { sc, .. } => Some(Rule::Lars { pre: true, sc }),
            Rule::Novograd { sc, .. } => Some(Rule::Novograd { pre: true, sc }),
            _ => None,
        }
    }

    /// Whether the pass before the update also sums the parameters' squares (the trust ratios
    /// of LAMB and LARS).
    #[inline]
    pub(crate) fn needs_param_norm(&self) -> bool {
        matches!(self, Rule::Lamb { .. } | Rule::Lars { .. })
    }

    /// Whether this update pass leaves `v`, which its rule uses, alone: NovoGrad's, whose `v`
    /// holds the per-buffer second moment in element 0, written between the passes (the pass
    /// over compressed state then neither decodes nor encodes it).
    #[inline]
    pub(crate) fn update_skips_v(&self) -> bool {
        matches!(self, Rule::Novograd { pre: false, .. })
    }

    /// The update pass's rule of a buffer from its [`Norms`], and the value to store in element
    /// 0 of `v` (NovoGrad's `nu`). An elementwise rule is returned as it is.
    pub(crate) fn with_norms(&self, n: Norms) -> (Rule, Option<f32>) {
        match *self {
            Rule::Lamb { sc, .. } => (
                Rule::Lamb {
                    pre: false,
                    sc: sc.with_norms(n),
                },
                None,
            ),
            Rule::Lars { sc, .. } => (
                Rule::Lars {
                    pre: false,
                    sc: sc.with_norms(n),
                },
                None,
            ),
            Rule::Novograd { sc, .. } => {
                let (sc, nu) = sc.with_norms(n);
                (Rule::Novograd { pre: false, sc }, Some(nu))
            }
            r => (r, None),
        }
    }
}

// The base rules, in kind order: one word per file `src/rules/<word>.rs`.
rules! { sgd adam radam adagrad rmsprop adamax nadam lion adabelief yogi adadelta rprop lamb lars novograd adafactor }

pub(crate) use adafactor::direction_factored as adafactor_direction_factored;
pub use adafactor::{Mode as AdafactorMode, Scalars as AdafactorScalars};
pub(crate) use lamb::{moments_direction as lamb_moments_direction, pre_scalars as lamb_scalars};
pub(crate) use lars::lars_vector;

// The fused loops over compressed state (`kernels::held`, "Fused passes").
pub(crate) use adam::{
    adam_bf16_span, adam_io_span, adam_io_span_tested, has_bf16_span, has_io_span, Bf16Moments,
};

#[cfg(test)]
mod tests {
    use super::pow_step;

    /// Every file in `src/rules/` is in the list (a file left out would not be compiled).
    #[test]
    fn every_rule_file_is_registered() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/rules");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .expect("src/rules")
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                let stem = name.strip_suffix(".rs")?;
                (stem != "mod").then(|| stem.to_string())
            })
            .collect();
        files.sort();
        let mut listed: Vec<String> = super::FILES.iter().map(|s| s.to_string()).collect();
        listed.sort();
        assert_eq!(
            files, listed,
            "the files in src/rules/ vs the list in src/rules/mod.rs"
        );
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
