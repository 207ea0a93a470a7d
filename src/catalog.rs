//! The generic half of the catalogs: what a configurable field is (its type, domain, default,
//! C field and precision), its dynamic [`Value`], and the code that every catalog shares (domain
//! checks, the checkpoint encoding, the JSON dump the binding tests compare against).
//!
//! A catalog is one table of entries, each declared once with all of its facts:
//! [`crate::schedule`]'s learning-rate schedules (`src/schedule/catalog.rs`), [`crate::config`]'s
//! base rules (`src/rules/`) and configuration fields (`src/config/mod.rs`). From a
//! declaration the catalog macros generate the Rust enum, its [`Spec`] (kind number, name,
//! fields) and the conversions between the enum and its field [`Value`]s; validation, the C
//! conversion and defaults, checkpoint encoding and the fuzz generator are written once over
//! specs and values, so they follow the table.

use crate::error::Error;

/// The type of a field, as the generic code sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    /// A real number, `f64`.
    F64,
    /// A counter, `u64`.
    U64,
    /// A flag (C and checkpoints: a `u32`, 0 or 1).
    Bool,
    /// One of the named options (stored as its index, in C and in checkpoints as a `u32`).
    Choice(&'static [&'static str]),
    /// An optional `f64` (C and checkpoints: NaN for none).
    OptF64,
    /// A list of counters (C: pointer and count).
    U64s,
    /// A list of `f64` (C: pointer and count).
    F64s,
}

impl Ty {
    /// The name used in the JSON dump.
    pub fn name(self) -> &'static str {
        match self {
            Ty::F64 => "f64",
            Ty::U64 => "u64",
            Ty::Bool => "bool",
            Ty::Choice(_) => "choice",
            Ty::OptF64 => "optional f64",
            Ty::U64s => "list of u64",
            Ty::F64s => "list of f64",
        }
    }
}

/// The set of values a field accepts. Float domains exclude NaN and ±Inf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain {
    /// Anything of the type (integers, flags, choices).
    Any,
    /// Finite and `>= 0`.
    NonNeg,
    /// Finite and `> 0`.
    Positive,
    /// `[0, 1)` (a decay rate).
    UnitOpen,
    /// `[0, 1]`.
    UnitClosed,
    /// `(0, 1)`.
    UnitExclusive,
    /// An integer `>= 1`.
    AtLeastOne,
    /// A list of counters, strictly increasing.
    Increasing,
}

impl Domain {
    /// The rule, as error messages state it.
    pub fn rule(self) -> &'static str {
        match self {
            Domain::Any => "any value",
            Domain::NonNeg => "must be finite and >= 0",
            Domain::Positive => "must be finite and > 0",
            Domain::UnitOpen => "must be in [0, 1)",
            Domain::UnitClosed => "must be in [0, 1]",
            Domain::UnitExclusive => "must be in (0, 1)",
            Domain::AtLeastOne => "must be >= 1",
            Domain::Increasing => "must be strictly increasing",
        }
    }

    /// The same rule for the value rounded to f32.
    fn rule_f32(self) -> &'static str {
        match self {
            Domain::NonNeg => "must be finite and >= 0 after rounding to f32",
            Domain::Positive => "must be finite and > 0 after rounding to f32",
            Domain::UnitOpen => "must be in [0, 1) after rounding to f32",
            Domain::UnitClosed => "must be in [0, 1] after rounding to f32",
            Domain::UnitExclusive => "must be in (0, 1) after rounding to f32",
            _ => "must be finite after rounding to f32",
        }
    }

    fn contains_f64(self, x: f64) -> bool {
        match self {
            Domain::NonNeg => x.is_finite() && x >= 0.0,
            Domain::Positive => x.is_finite() && x > 0.0,
            Domain::UnitOpen => (0.0..1.0).contains(&x),
            Domain::UnitClosed => (0.0..=1.0).contains(&x),
            Domain::UnitExclusive => x > 0.0 && x < 1.0,
            Domain::Any | Domain::AtLeastOne | Domain::Increasing => x.is_finite(),
        }
    }

    /// The JSON name of the domain.
    pub fn name(self) -> &'static str {
        match self {
            Domain::Any => "any",
            Domain::NonNeg => ">= 0",
            Domain::Positive => "> 0",
            Domain::UnitOpen => "[0, 1)",
            Domain::UnitClosed => "[0, 1]",
            Domain::UnitExclusive => "(0, 1)",
            Domain::AtLeastOne => ">= 1",
            Domain::Increasing => "strictly increasing",
        }
    }
}

/// Checks an `f64` against a domain; with `f32`, its f32 rounding too (the kernels compute in
/// f32: a value that is valid in f64 but becomes Inf, 0 or 1 in f32 is refused when configured).
pub fn check_f64(name: &'static str, x: f64, domain: Domain, f32: bool) -> Result<(), Error> {
    if !domain.contains_f64(x) {
        return Err(Error::invalid(name, x, domain.rule()));
    }
    let r = x as f32;
    if f32 && !domain.contains_f64(r as f64) {
        return Err(Error::invalid(
            name,
            format!("{x:?} ({r:?} as f32)"),
            domain.rule_f32(),
        ));
    }
    Ok(())
}

/// A field's value, as the generic code handles it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Of a [`Ty::F64`] field.
    F64(f64),
    /// Of a [`Ty::U64`] field.
    U64(u64),
    /// Of a [`Ty::Bool`] field.
    Bool(bool),
    /// Of a [`Ty::Choice`] field: the index of the option.
    Choice(u32),
    /// Of a [`Ty::OptF64`] field.
    OptF64(Option<f64>),
    /// Of a [`Ty::U64s`] field.
    U64s(Vec<u64>),
    /// Of a [`Ty::F64s`] field.
    F64s(Vec<f64>),
}

impl Value {
    /// The value as JSON (non-finite floats as strings).
    pub fn json(&self) -> String {
        fn num(x: f64) -> String {
            if x.is_finite() {
                format!("{x:?}")
            } else {
                format!("\"{x}\"")
            }
        }
        match self {
            Value::F64(x) => num(*x),
            Value::U64(x) => x.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Choice(i) => i.to_string(),
            Value::OptF64(None) => "null".to_string(),
            Value::OptF64(Some(x)) => num(*x),
            Value::U64s(xs) => format!("{xs:?}"),
            Value::F64s(xs) => {
                format!(
                    "[{}]",
                    xs.iter().map(|x| num(*x)).collect::<Vec<_>>().join(", ")
                )
            }
        }
    }
}

/// A Rust type that can be a catalog field.
pub trait Field: Sized {
    /// The field's type in the catalog.
    const TY: Ty;
    /// How formulas see the field: a copy of scalars, a slice of lists.
    type View<'a>
    where
        Self: 'a;
    /// The field as formulas see it.
    fn view(&self) -> Self::View<'_>;
    /// The field as a dynamic [`Value`].
    fn to_value(&self) -> Value;
    /// `None` if the value is of another type (or an unknown choice).
    fn from_value(v: Value) -> Option<Self>;
}

macro_rules! scalar_field {
    ($t:ty, $ty:ident) => {
        impl Field for $t {
            const TY: Ty = Ty::$ty;
            type View<'a> = $t;
            fn view(&self) -> $t {
                *self
            }
            fn to_value(&self) -> Value {
                Value::$ty(*self)
            }
            fn from_value(v: Value) -> Option<Self> {
                match v {
                    Value::$ty(x) => Some(x),
                    _ => None,
                }
            }
        }
    };
}
scalar_field!(f64, F64);
scalar_field!(u64, U64);
scalar_field!(bool, Bool);

/// A count (a thread count): a `u64` value in the catalog.
impl Field for usize {
    const TY: Ty = Ty::U64;
    type View<'a> = usize;
    fn view(&self) -> usize {
        *self
    }
    fn to_value(&self) -> Value {
        Value::U64(*self as u64)
    }
    fn from_value(v: Value) -> Option<Self> {
        match v {
            Value::U64(x) => usize::try_from(x).ok(),
            _ => None,
        }
    }
}

impl Field for Option<f64> {
    const TY: Ty = Ty::OptF64;
    type View<'a> = Option<f64>;
    fn view(&self) -> Option<f64> {
        *self
    }
    fn to_value(&self) -> Value {
        Value::OptF64(*self)
    }
    fn from_value(v: Value) -> Option<Self> {
        match v {
            Value::OptF64(x) => Some(x),
            _ => None,
        }
    }
}

macro_rules! list_field {
    ($t:ty, $ty:ident) => {
        impl Field for Vec<$t> {
            const TY: Ty = Ty::$ty;
            type View<'a> = &'a [$t];
            fn view(&self) -> &[$t] {
                self
            }
            fn to_value(&self) -> Value {
                Value::$ty(self.clone())
            }
            fn from_value(v: Value) -> Option<Self> {
                match v {
                    Value::$ty(x) => Some(x),
                    _ => None,
                }
            }
        }
    };
}
list_field!(u64, U64s);
list_field!(f64, F64s);

/// Declares a fieldless enum usable as a [`Ty::Choice`] field: its options in order (the index
/// is the value in C and in checkpoints) with their names.
macro_rules! choice {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $label:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every option, in the order of their index.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// The option names, in the order of their index.
            pub const NAMES: &'static [&'static str] = &[$($label),+];
        }

        impl $crate::catalog::Field for $name {
            const TY: $crate::catalog::Ty = $crate::catalog::Ty::Choice(Self::NAMES);
            type View<'a> = $name;
            fn view(&self) -> $name {
                *self
            }
            fn to_value(&self) -> $crate::catalog::Value {
                let i = Self::ALL.iter().position(|x| x == self).unwrap_or(0);
                $crate::catalog::Value::Choice(i as u32)
            }
            fn from_value(v: $crate::catalog::Value) -> Option<Self> {
                match v {
                    $crate::catalog::Value::Choice(i) => Self::ALL.get(i as usize).copied(),
                    _ => None,
                }
            }
        }
    };
}
pub(crate) use choice;

/// The part of a catalog enum that does not depend on what the entries mean: the enum itself
/// and its conversions to and from the catalog's values (kind number, short name, the field
/// values in declaration order). The base-rule catalog (`rules::generate!`) and the schedule
/// catalog (`schedule::schedules!`) both declare their enum through it, adding the code that
/// is theirs (specs, per-step scalars, learning rates) next to it.
macro_rules! catalog_enum {
    (
        $(#[$emeta:meta])*
        pub enum $E:ident {
            $(
                $(#[doc = $vdoc:literal])*
                $V:ident = $kind:literal, $name:literal {
                    $( $(#[doc = $fdoc:literal])* $f:ident : $fty:ty ),+
                }
            )+
        }
    ) => {
        $(#[$emeta])*
        pub enum $E {
            $(
                $(#[doc = $vdoc])*
                $V {
                    $( $(#[doc = $fdoc])* $f: $fty, )+
                },
            )+
        }

        impl $E {
            /// The kind number (C enum value, checkpoints).
            pub fn kind(&self) -> u32 {
                match self {
                    $( $E::$V { .. } => $kind, )+
                }
            }

            /// The catalog's short name of the entry.
            pub fn name(&self) -> &'static str {
                match self {
                    $( $E::$V { .. } => $name, )+
                }
            }

            /// The field values, in declaration order.
            pub fn values(&self) -> Vec<$crate::catalog::Value> {
                match self {
                    $( $E::$V { $($f),+ } => vec![$($crate::catalog::Field::to_value($f)),+], )+
                }
            }

            /// The entry of kind `kind` with these field values (in declaration order), or
            /// `None` if the kind is unknown or a value has the wrong type or count.
            pub fn from_values(kind: u32, values: Vec<$crate::catalog::Value>) -> Option<$E> {
                let mut it = values.into_iter();
                let x = match kind {
                    $( $kind => $E::$V {
                        $( $f: <$fty as $crate::catalog::Field>::from_value(it.next()?)?, )+
                    }, )+
                    _ => return None,
                };
                it.next().is_none().then_some(x)
            }

            /// The entry of kind `kind` with each field's value from `get(index)` (in
            /// declaration order), without allocating (the stateless C kernels convert their
            /// arguments on every call): `None` if the kind is unknown or a value has the wrong
            /// type, `Some(Err)` with `get`'s first error.
            pub fn try_from_fields<Err>(
                kind: u32,
                mut get: impl FnMut(usize) -> Result<$crate::catalog::Value, Err>,
            ) -> Option<Result<$E, Err>> {
                let mut i = 0;
                let mut next = || {
                    let v = get(i);
                    i += 1;
                    v
                };
                Some(Ok(match kind {
                    $( $kind => $E::$V {
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
            pub fn try_for_each_value<Err>(
                &self,
                mut f: impl FnMut(usize, $crate::catalog::Value) -> Result<(), Err>,
            ) -> Result<(), Err> {
                let mut i = 0;
                match self {
                    $( $E::$V { $($f),+ } => {
                        $(
                            f(i, $crate::catalog::Field::to_value($f))?;
                            i += 1;
                        )+
                    } )+
                }
                let _ = i;
                Ok(())
            }
        }
    };
}
pub(crate) use catalog_enum;

/// How the C struct spells a field, where it differs from the type's plain C form (`double`,
/// `uint64_t`, `uint32_t` for flags and choices, NaN for an absent optional value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CForm {
    /// The type's plain C form.
    Plain,
    /// An optional `f64` whose C field is 0 for none (a threshold that 0 disables).
    ZeroIsNone,
    /// A `u64` carried in a `uint32_t`.
    U32,
    /// A flag or choice whose C value out of range is refused with this rule (naming the C
    /// enum).
    Enum(&'static str),
}

impl CForm {
    /// The JSON name (`None` for the plain form, which the dump leaves out).
    pub fn name(self) -> Option<&'static str> {
        match self {
            CForm::Plain | CForm::Enum(_) => None,
            CForm::ZeroIsNone => Some("zero is none"),
            CForm::U32 => Some("uint32_t"),
        }
    }
}

/// One field of a catalog entry.
#[derive(Debug, Clone)]
pub struct FieldSpec {
    /// The Rust name (the enum variant's field).
    pub name: &'static str,
    /// The name errors give (the Rust name unless the catalog says otherwise).
    pub label: &'static str,
    /// The name of the field in the checkpoint encoding (named in a mismatch on loading).
    pub key: &'static str,
    /// The type.
    pub ty: Ty,
    /// The values it accepts.
    pub domain: Domain,
    /// Whether the kernels use the value as f32: the domain then applies after rounding too.
    pub f32: bool,
    /// The default (C `_init`, and PyTorch's where it has one).
    pub default: Value,
    /// The C struct field that carries it.
    pub c: &'static str,
    /// What C error messages call it: the C field, with the Rust name in parentheses when
    /// they differ.
    pub c_label: &'static str,
    /// C only: 0 in the C field stands for the value of this other field (PyTorch's `None`).
    pub c_zero_means: Option<&'static str>,
    /// How the C field spells the value.
    pub c_form: CForm,
    /// Whether checkpoints carry the field (not the thread count and SIMD tier, which do not
    /// change results).
    pub saved: bool,
    /// The documentation of the field.
    pub doc: &'static str,
}

impl FieldSpec {
    /// Checks `v` against the domain (and, for f32 fields, its f32 rounding). `name` is what
    /// the error calls the field.
    pub fn check(&self, name: &'static str, v: &Value) -> Result<(), Error> {
        match v {
            Value::F64(x) => check_f64(name, *x, self.domain, self.f32),
            Value::OptF64(Some(x)) => check_f64(name, *x, self.domain, self.f32),
            Value::F64s(xs) => xs
                .iter()
                .try_for_each(|x| check_f64(name, *x, self.domain, self.f32)),
            Value::U64(x) if self.domain == Domain::AtLeastOne && *x == 0 => {
                Err(Error::invalid(name, x, self.domain.rule()))
            }
            Value::U64s(xs)
                if self.domain == Domain::Increasing && !xs.windows(2).all(|w| w[0] < w[1]) =>
            {
                Err(Error::invalid(name, format!("{xs:?}"), self.domain.rule()))
            }
            _ => Ok(()),
        }
    }
}

/// One entry of a catalog: a schedule or a base rule.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The kind number (C `kind`, checkpoints).
    pub kind: u32,
    /// The short name (C enum suffix in lower case, Python and C++ factory names).
    pub name: &'static str,
    /// The Rust enum variant.
    pub variant: &'static str,
    /// The fields, in declaration order (the order of the checkpoint encoding).
    pub fields: Vec<FieldSpec>,
    /// The documentation of the entry.
    pub doc: &'static str,
}

impl Spec {
    /// The field called `name`.
    pub fn field(&self, name: &str) -> Option<&FieldSpec> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// Checks every value against its field's domain, in declaration order.
    pub fn check(&self, values: &[Value]) -> Result<(), Error> {
        self.fields
            .iter()
            .zip(values)
            .try_for_each(|(f, v)| f.check(f.label, v))
    }

    /// The defaults of every field, in declaration order.
    pub fn defaults(&self) -> Vec<Value> {
        self.fields.iter().map(|f| f.default.clone()).collect()
    }
}

/// What the C error messages call a field: `c`, with `rust` in parentheses when they differ
/// (the base learning rate keeps the C name alone).
pub const fn c_label(c: &'static str, rust: &'static str, both: &'static str) -> &'static str {
    if str_eq(c, rust) || str_eq(rust, "base") || str_eq(rust, "lr") {
        c
    } else {
        both
    }
}

const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Where the checkpoint encoding of a configuration goes: little-endian fields, each named (a
/// mismatch on loading is reported by name).
pub trait Sink {
    /// A `u32` (kinds, flags, choices) called `name`.
    fn u32(&mut self, name: &'static str, x: u32);
    /// A `u64` called `name`.
    fn u64(&mut self, name: &'static str, x: u64);
    /// An `f64` called `name`.
    fn f64(&mut self, name: &'static str, x: f64);
    /// A list of `u64` called `name`.
    fn u64s(&mut self, name: &'static str, xs: &[u64]);
    /// A list of `f64` called `name`.
    fn f64s(&mut self, name: &'static str, xs: &[f64]);
}

/// Encodes one entry: its kind as a `u32` named `kind_name`, then every field in declaration
/// order (flags and choices as `u32`, an absent optional as NaN, lists as a count and the
/// elements). This is the checkpoint format: declaration order is part of it.
pub fn encode(sink: &mut dyn Sink, kind_name: &'static str, spec: &Spec, values: &[Value]) {
    sink.u32(kind_name, spec.kind);
    for (v, f) in values.iter().zip(&spec.fields) {
        encode_value(sink, f, v);
    }
}

/// Encodes one field's value under its key: flags and choices as `u32`, an absent optional as
/// NaN, lists as a count and the elements.
pub fn encode_value(sink: &mut dyn Sink, f: &FieldSpec, v: &Value) {
    let name = f.key;
    match v {
        Value::F64(x) => sink.f64(name, *x),
        Value::U64(x) => sink.u64(name, *x),
        Value::Bool(b) => sink.u32(name, *b as u32),
        Value::Choice(i) => sink.u32(name, *i),
        // NaN never validates as a value, so it can stand for "none".
        Value::OptF64(x) => sink.f64(name, x.unwrap_or(f64::NAN)),
        Value::U64s(xs) => sink.u64s(name, xs),
        Value::F64s(xs) => sink.f64s(name, xs),
    }
}

/// A catalog as JSON: every entry with its kind, name, variant and fields (name, type, domain,
/// f32, default, C field, choices). Compared against the bindings' mirrors by their tests.
pub fn json(specs: &[Spec]) -> String {
    let q = |s: &str| format!("{s:?}");
    let entries: Vec<String> = specs
        .iter()
        .map(|s| {
            let fields: Vec<String> = s
                .fields
                .iter()
                .map(|f| {
                    let choices = match f.ty {
                        Ty::Choice(names) => {
                            format!(
                                ", \"choices\": [{}]",
                                names.iter().map(|n| q(n)).collect::<Vec<_>>().join(", ")
                            )
                        }
                        _ => String::new(),
                    };
                    format!(
                        "{{\"name\": {}, \"type\": {}, \"domain\": {}, \"f32\": {}, \
                         \"default\": {}, \"c\": {}{}{}{}{}}}",
                        q(f.name),
                        q(f.ty.name()),
                        q(f.domain.name()),
                        f.f32,
                        f.default.json(),
                        q(f.c),
                        f.c_zero_means
                            .map(|z| format!(", \"c_zero_means\": {}", q(z)))
                            .unwrap_or_default(),
                        f.c_form
                            .name()
                            .map(|n| format!(", \"c_form\": {}", q(n)))
                            .unwrap_or_default(),
                        if f.saved { "" } else { ", \"saved\": false" },
                        choices
                    )
                })
                .collect();
            format!(
                "    {{\"kind\": {}, \"name\": {}, \"variant\": {}, \"fields\": [\n      {}\n    ]}}",
                s.kind,
                q(s.name),
                q(s.variant),
                fields.join(",\n      ")
            )
        })
        .collect();
    format!("[\n{}\n  ]", entries.join(",\n"))
}
