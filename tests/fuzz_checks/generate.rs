//! Configurations from fuzz input, generated from the library's catalogs (every schedule and
//! base rule, every field by its type, values often outside the domains), and their C form
//! (through the library's own C field accessors, `flatopt::ffi::catalog`).

use flatopt::catalog::{CForm, Spec, Ty, Value};
use flatopt::config::base_specs;
use flatopt::ffi::catalog as c_catalog;
use flatopt::ffi::flatopt_status::*;
use flatopt::ffi::*;
use flatopt::schedule;
use flatopt::{Base, Config, Lookahead, NonFinitePolicy, Schedule, ScheduleMode, Tier};

use super::input::Input;

/// A value of a field of type `ty`. Lists are short; an `f64` list is as long as the last
/// `u64` list drawn before it (the boundaries of its values) plus 0 to 2, so that it is often
/// of the right length.
fn draw(inp: &mut Input, ty: Ty, drawn: &[Value]) -> Value {
    match ty {
        Ty::F64 => Value::F64(inp.f64v()),
        Ty::U64 => Value::U64(inp.u64v()),
        Ty::Bool => Value::Bool(inp.bool()),
        Ty::Choice(names) => Value::Choice((inp.u8() as usize % names.len()) as u32),
        Ty::OptF64 => Value::OptF64(inp.bool().then(|| inp.f64v())),
        Ty::U64s => Value::U64s((0..inp.u8() % 5).map(|_| inp.u64v()).collect()),
        Ty::F64s => {
            let n = drawn
                .iter()
                .rev()
                .find_map(|v| match v {
                    Value::U64s(xs) => Some(xs.len()),
                    _ => None,
                })
                .unwrap_or(0);
            Value::F64s(
                (0..n + (inp.u8() % 3) as usize)
                    .map(|_| inp.f64v())
                    .collect(),
            )
        }
    }
}

/// A schedule of any kind of the catalog with fuzz-chosen (often invalid) hyperparameters.
///
/// Input: the kind byte, one `f64` (the first field's value when that field is an `f64`: the
/// format of the committed corpus, written when every schedule but one began with its base
/// rate), then each field in declaration order.
pub fn decode_schedule(inp: &mut Input) -> Schedule {
    let specs = schedule::specs();
    let spec = &specs[inp.u8() as usize % specs.len()];
    let first = inp.f64v();
    let mut values = Vec::with_capacity(spec.fields.len());
    for (i, f) in spec.fields.iter().enumerate() {
        let v = match f.ty {
            Ty::F64 if i == 0 => Value::F64(first),
            ty => draw(inp, ty, &values),
        };
        values.push(v);
    }
    Schedule::from_values(spec.kind, values).expect("values drawn by the catalog's types")
}

/// A base rule of any kind of the catalog: the selector byte `b` picks the kind (`b % count`)
/// and gives the flags (bit 2 for the first, bit 3 for the second, ...); every other field is
/// drawn in declaration order.
fn decode_base(inp: &mut Input, b: u8) -> Base {
    let specs = base_specs();
    let spec: &Spec = &specs[b as usize % specs.len()];
    let mut bit = 2;
    let mut values = Vec::with_capacity(spec.fields.len());
    for f in &spec.fields {
        let v = match f.ty {
            Ty::Bool => {
                let on = (b >> bit) & 1 == 1;
                bit += 1;
                Value::Bool(on)
            }
            ty => draw(inp, ty, &values),
        };
        values.push(v);
    }
    Base::from_values(spec.kind, values).expect("values drawn by the catalog's types")
}

/// A valid thread count of 2 (a private rayon pool), except under Miri, where it is 1: rayon's
/// crossbeam-epoch is known not to pass Miri's Stacked Borrows check
/// (crossbeam-rs/crossbeam#545), which would hide anything else.
pub fn pool_threads(n: usize) -> usize {
    if cfg!(miri) && n == 2 {
        1
    } else {
        n
    }
}

/// A configuration with fuzz-chosen (often invalid) fields. With `for_stepping`, the thread
/// count is 1 or 2 and the tier is left to the caller.
pub fn decode_config(inp: &mut Input, for_stepping: bool) -> Config {
    let b = inp.u8();
    let base = decode_base(inp, b);
    let lr = decode_schedule(inp);
    let flags = inp.u8();
    let opt = |inp: &mut Input, bit: u8| (flags & bit != 0).then(|| inp.f64v());
    let weight_decay = if flags & 1 != 0 { inp.f64v() } else { 0.0 };
    let grad_clip_norm = opt(inp, 2);
    let grad_clip_value = opt(inp, 4);
    let lookahead = (flags & 8 != 0).then(|| Lookahead {
        sync_period: inp.u64v(),
        alpha: inp.f64v(),
    });
    let nonfinite = [
        NonFinitePolicy::Skip,
        NonFinitePolicy::Error,
        NonFinitePolicy::Propagate,
    ][(flags >> 4) as usize % 3];
    let schedule_mode = if flags & 64 != 0 {
        ScheduleMode::Manual
    } else {
        ScheduleMode::PerUpdate
    };
    let (num_threads, tier) = if for_stepping {
        (pool_threads(1 + (flags >> 7) as usize), None)
    } else {
        // 3..=256 are valid and start that many threads: left to the engine tests (slow).
        let threads = [1, 2, 0, 257, 1000, usize::MAX, 1 << 32][inp.u8() as usize % 7];
        let threads = pool_threads(threads);
        let tier = match inp.u8() % 6 {
            0 | 1 => None,
            t => Tier::from_u8(t - 1),
        };
        (threads, tier)
    };
    // Every other catalog field (one added later) at its default until a line here draws it.
    let mut cfg = Config::with_schedule(base, lr);
    cfg.schedule_mode = schedule_mode;
    cfg.weight_decay = weight_decay;
    cfg.grad_clip_norm = grad_clip_norm;
    cfg.grad_clip_value = grad_clip_value;
    cfg.lookahead = lookahead;
    cfg.nonfinite = nonfinite;
    cfg.num_threads = num_threads;
    cfg.tier = tier;
    cfg
}

/// A Rust configuration in C form: the config struct, its schedule and the schedule's lists.
/// The pointers between them are set by [`CConfig::as_ptr`], right before use (moving the
/// struct moves its `Box`, which invalidates pointers derived from it earlier: Miri checks).
pub struct CConfig {
    pub cfg: flatopt_config,
    pub base: Box<flatopt_base_params>,
    sched: Box<flatopt_schedule>,
    use_schedule: bool,
    milestones: Vec<u64>,
    values: Vec<f64>,
}

impl CConfig {
    pub fn as_ptr(&mut self) -> *const flatopt_config {
        fn list<T>(v: &[T]) -> *const T {
            if v.is_empty() {
                std::ptr::null()
            } else {
                v.as_ptr()
            }
        }
        self.sched.milestones = list(&self.milestones);
        self.sched.n_milestones = self.milestones.len();
        self.sched.values = list(&self.values);
        self.sched.n_values = self.values.len();
        self.cfg.base = &*self.base;
        self.cfg.schedule = if self.use_schedule {
            &*self.sched
        } else {
            std::ptr::null()
        };
        &self.cfg
    }
}

/// The C form of `cfg`, or `None` where the C structs cannot say the same thing (a clip
/// threshold of exactly 0, which C reads as "off"; an optional value of NaN, which C reads as
/// "none"; a 0 where C reads 0 as another field's value, such as Cyclic's `step_size_down`;
/// more than 2^32 threads). Every catalog field goes into the C field the catalog names.
pub fn to_c(cfg: &Config) -> Option<CConfig> {
    // SAFETY: all-zero is a valid value of these plain structs (NULL pointers).
    let (mut c, mut b, mut s): (flatopt_config, flatopt_base_params, flatopt_schedule) =
        unsafe { (std::mem::zeroed(), std::mem::zeroed(), std::mem::zeroed()) };
    // SAFETY: valid, writable structs of the sizes passed.
    unsafe {
        assert_eq!(flatopt_config_init(&mut c, size_of_val(&c)), FLATOPT_OK);
        assert_eq!(
            flatopt_base_params_init(&mut b, size_of_val(&b), cfg.base.kind()),
            FLATOPT_OK
        );
        assert_eq!(
            flatopt_schedule_init(&mut s, size_of_val(&s), cfg.lr.kind()),
            FLATOPT_OK
        );
    }
    for (f, v) in cfg.base.spec().fields.iter().zip(cfg.base.values()) {
        c_catalog::set(&mut b, f, &v);
    }
    let (mut milestones, mut values) = (Vec::new(), Vec::new());
    let use_schedule = !matches!(cfg.lr, Schedule::Fixed { .. });
    for (f, v) in cfg.lr.spec().fields.iter().zip(cfg.lr.values()) {
        match &v {
            Value::OptF64(Some(x)) if x.is_nan() => return None,
            Value::U64(0) if f.c_zero_means.is_some() => return None,
            Value::U64s(xs) => milestones = xs.clone(),
            Value::F64s(xs) => values = xs.clone(),
            _ => {}
        }
        if use_schedule {
            c_catalog::set(&mut s, f, &v);
        } else if let Value::F64(lr) = v {
            // The constant rate is `config.lr` (no schedule struct).
            c.lr = lr;
        }
    }
    // The configuration catalog's fields, each into the C field it names (a group's only when
    // it is on), except what C cannot say: a threshold of exactly 0 (C's "none"), a count past
    // the `uint32_t` that carries it.
    let mut expressible = true;
    cfg.for_each_field(|f, v| {
        match (&v, f.c_form) {
            (Value::OptF64(Some(x)), CForm::ZeroIsNone) if *x == 0.0 => expressible = false,
            (Value::U64(x), CForm::U32) if u32::try_from(*x).is_err() => expressible = false,
            _ => {}
        }
        c_catalog::set(&mut c, f, &v);
    });
    if !expressible {
        return None;
    }
    Some(CConfig {
        cfg: c,
        base: Box::new(b),
        sched: Box::new(s),
        use_schedule,
        milestones,
        values,
    })
}
