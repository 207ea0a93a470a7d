//! The C side of the catalogs: the fields of `flatopt_base_params` and `flatopt_schedule` by
//! name (those of `flatopt_config` are generated from its catalog in `structs.rs`), and the
//! catalog-driven defaults and conversions. A catalog field names the C field that carries it
//! (`c base_lr`); the conversion reads that field, typed by the catalog and its `CForm` (flags
//! must be 0 or 1, choices in range, NaN is "none" for optional values unless C spells none as
//! 0, a count may sit in a `uint32_t`, lists are pointer and count), and C messages call the
//! field by its C name. A new schedule or base rule needs nothing here: the accessors of
//! `flatopt_base_params` are generated from the rule files (`crate::rules::c_field`); a new C
//! field of `flatopt_schedule` is one arm in its accessors below.

use crate::catalog::{CForm, FieldSpec, Spec, Ty, Value};
use crate::error::Error;

use super::ptr::copy_list;
use super::structs::{flag, flatopt_base_params, flatopt_schedule};

/// The longest milestone or value list a schedule accepts.
const MAX_LIST: usize = 1 << 24;

/// A C option struct whose catalog fields can be reached by their C name.
pub trait CFields {
    /// The `double` field called `c`.
    fn f64_field(&mut self, c: &str) -> Option<&mut f64>;
    /// The `uint64_t` field called `c`.
    fn u64_field(&mut self, c: &str) -> Option<&mut u64>;
    /// The `uint32_t` field (a flag or a choice) called `c`.
    fn u32_field(&mut self, c: &str) -> Option<&mut u32>;
    /// The list (pointer and count) called `c`: `milestones` (u64) or `values` (double).
    fn list(&self, c: &str) -> Option<(*const u8, usize)> {
        let _ = c;
        None
    }
}

/// The fields the base-rule catalog names, generated from the rule files (`src/rules/`).
impl CFields for flatopt_base_params {
    fn f64_field(&mut self, c: &str) -> Option<&mut f64> {
        crate::rules::c_field(self, c)
    }
    fn u64_field(&mut self, c: &str) -> Option<&mut u64> {
        crate::rules::c_field(self, c)
    }
    fn u32_field(&mut self, c: &str) -> Option<&mut u32> {
        crate::rules::c_field(self, c)
    }
}

impl CFields for flatopt_schedule {
    fn f64_field(&mut self, c: &str) -> Option<&mut f64> {
        Some(match c {
            "base_lr" => &mut self.base_lr,
            "max_lr" => &mut self.max_lr,
            "gamma" => &mut self.gamma,
            "factor" => &mut self.factor,
            "start_factor" => &mut self.start_factor,
            "end_factor" => &mut self.end_factor,
            "eta_min" => &mut self.eta_min,
            "power" => &mut self.power,
            "start_lr" => &mut self.start_lr,
            "decay_rate" => &mut self.decay_rate,
            "end_value" => &mut self.end_value,
            "pct_start" => &mut self.pct_start,
            "div_factor" => &mut self.div_factor,
            "final_div_factor" => &mut self.final_div_factor,
            "threshold" => &mut self.threshold,
            "min_lr" => &mut self.min_lr,
            _ => return None,
        })
    }
    fn u64_field(&mut self, c: &str) -> Option<&mut u64> {
        Some(match c {
            "period" => &mut self.period,
            "t_mult" => &mut self.t_mult,
            "warmup" => &mut self.warmup,
            "step_size_up" => &mut self.step_size_up,
            "step_size_down" => &mut self.step_size_down,
            "patience" => &mut self.patience,
            "cooldown" => &mut self.cooldown,
            _ => return None,
        })
    }
    fn u32_field(&mut self, c: &str) -> Option<&mut u32> {
        Some(match c {
            "staircase" => &mut self.staircase,
            "anneal_linear" => &mut self.anneal_linear,
            "cyclic_mode" => &mut self.cyclic_mode,
            "plateau_mode" => &mut self.plateau_mode,
            "threshold_mode" => &mut self.threshold_mode,
            _ => return None,
        })
    }
    fn list(&self, c: &str) -> Option<(*const u8, usize)> {
        match c {
            "milestones" => Some((self.milestones.cast(), self.n_milestones)),
            "values" => Some((self.values.cast(), self.n_values)),
            _ => None,
        }
    }
}

fn missing(f: &FieldSpec) -> ! {
    panic!(
        "catalog field {} names C field {}, which has no accessor of its type",
        f.name, f.c
    )
}

/// Writes `v` into the C field of `f` (lists are left alone: their pointers belong to the
/// caller). An absent optional value is written as NaN, or 0 where C spells none as 0; a count
/// carried in a `uint32_t` saturates.
pub fn set<S: CFields>(s: &mut S, f: &FieldSpec, v: &Value) {
    match *v {
        Value::F64(x) | Value::OptF64(Some(x)) => {
            *s.f64_field(f.c).unwrap_or_else(|| missing(f)) = x
        }
        Value::OptF64(None) => {
            *s.f64_field(f.c).unwrap_or_else(|| missing(f)) = match f.c_form {
                CForm::ZeroIsNone => 0.0,
                _ => f64::NAN,
            }
        }
        Value::U64(x) if f.c_form == CForm::U32 => {
            *s.u32_field(f.c).unwrap_or_else(|| missing(f)) = u32::try_from(x).unwrap_or(u32::MAX)
        }
        Value::U64(x) => *s.u64_field(f.c).unwrap_or_else(|| missing(f)) = x,
        Value::Bool(b) => *s.u32_field(f.c).unwrap_or_else(|| missing(f)) = b as u32,
        Value::Choice(i) => *s.u32_field(f.c).unwrap_or_else(|| missing(f)) = i,
        Value::U64s(_) | Value::F64s(_) => {}
    }
}

/// Writes the catalog defaults of `spec` into `s`.
pub fn set_defaults<S: CFields>(s: &mut S, spec: &Spec) {
    for f in &spec.fields {
        set(s, f, &f.default);
    }
}

/// Reads the value of field `f` from `s`, checking what C can get wrong beyond the domains
/// (flags, choices, list pointers). Allocates only for lists. A 0 that stands for another field
/// (`c_zero_means`) is returned as 0: [`read`] resolves it.
///
/// # Safety
/// If `f` is a list, its pointer in `s` points to its count of readable elements.
pub unsafe fn read_field<S: CFields>(s: &mut S, f: &FieldSpec) -> Result<Value, Error> {
    Ok(match f.ty {
        Ty::F64 => Value::F64(*s.f64_field(f.c).unwrap_or_else(|| missing(f))),
        Ty::OptF64 => {
            let x = *s.f64_field(f.c).unwrap_or_else(|| missing(f));
            let none = match f.c_form {
                // -0.0 too: both zeros disable.
                CForm::ZeroIsNone => x == 0.0,
                _ => x.is_nan(),
            };
            Value::OptF64((!none).then_some(x))
        }
        Ty::U64 if f.c_form == CForm::U32 => {
            Value::U64(*s.u32_field(f.c).unwrap_or_else(|| missing(f)) as u64)
        }
        Ty::U64 => Value::U64(*s.u64_field(f.c).unwrap_or_else(|| missing(f))),
        Ty::Bool => Value::Bool(flag(
            f.c_label,
            *s.u32_field(f.c).unwrap_or_else(|| missing(f)),
        )?),
        Ty::Choice(names) => {
            let x = *s.u32_field(f.c).unwrap_or_else(|| missing(f));
            if x as usize >= names.len() {
                let rule = match f.c_form {
                    CForm::Enum(rule) => rule,
                    _ => "unknown mode value",
                };
                return Err(Error::invalid(f.c_label, x, rule));
            }
            Value::Choice(x)
        }
        Ty::U64s => {
            let (p, n) = s.list(f.c).unwrap_or_else(|| missing(f));
            // SAFETY: `p` holds `n` readable u64 (caller contract), checked by copy_list.
            Value::U64s(unsafe { copy_list(f.c, p.cast::<u64>(), n, MAX_LIST)? })
        }
        Ty::F64s => {
            let (p, n) = s.list(f.c).unwrap_or_else(|| missing(f));
            // SAFETY: as above, `n` readable doubles.
            Value::F64s(unsafe { copy_list(f.c, p.cast::<f64>(), n, MAX_LIST)? })
        }
    })
}

/// Reads the values of `spec`'s fields from `s` ([`read_field`]), a 0 that stands for another
/// field replaced by that field's value.
///
/// # Safety
/// The list pointers of `s` that `spec` uses point to their counts of readable elements.
pub unsafe fn read<S: CFields>(s: &mut S, spec: &Spec) -> Result<Vec<Value>, Error> {
    let mut out: Vec<Value> = Vec::with_capacity(spec.fields.len());
    for f in &spec.fields {
        // SAFETY: the caller's contract for the lists.
        let mut v = unsafe { read_field(s, f)? };
        if let (Value::U64(0), Some(other)) = (&v, f.c_zero_means) {
            if let Some((_, earlier)) = spec.fields.iter().zip(&out).find(|(g, _)| g.name == other)
            {
                v = earlier.clone();
            }
        }
        out.push(v);
    }
    Ok(out)
}

/// An error naming a Rust field renamed to what C calls it (`spec`'s C labels).
pub fn relabel(e: Error, spec: &Spec) -> Error {
    match e {
        Error::InvalidArgument {
            name,
            value,
            expected,
        } => Error::InvalidArgument {
            name: spec
                .fields
                .iter()
                .find(|f| f.label == name)
                .map_or(name, |f| f.c_label),
            value,
            expected,
        },
        other => other,
    }
}

/// The catalog entry of kind `kind` in `specs`, or an error naming the C enum.
pub fn kind_spec<'a>(
    specs: &'a [Spec],
    kind: u32,
    c_enum: &'static str,
) -> Result<&'a Spec, Error> {
    specs
        .iter()
        .find(|s| s.kind == kind)
        .ok_or_else(|| Error::invalid("kind", kind, c_enum))
}
