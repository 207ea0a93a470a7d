//! Target 2: configuration parsing and validation.

use flatopt::catalog::{Domain, Value};
use flatopt::config::config_spec;
use flatopt::ffi::flatopt_status::*;
use flatopt::ffi::*;
use flatopt::kernels::Rule;
use flatopt::{Config, Error, Optimizer, Outcome, Schedule, ScheduleState, Tier};

use super::c_api::{last_message, Handle};
use super::common::{crefs, refs};
use super::generate::{decode_config, pool_threads, to_c};
use super::input::Input;
use super::surgery::with_counters;

/// Independent oracle: the schedules documented to grow without bound (their f64 learning
/// rate may overflow; the engine then refuses the step).
fn may_grow(s: &Schedule) -> bool {
    match s {
        Schedule::Step { gamma, .. }
        | Schedule::MultiStep { gamma, .. }
        | Schedule::Exponential { gamma, .. } => *gamma > 1.0,
        Schedule::ExponentialDecay {
            decay_rate,
            end_value,
            ..
        } => *decay_rate > 1.0 && end_value.is_none(),
        _ => false,
    }
}

/// Independent oracle: every value of an accepted configuration that the kernels use in f32
/// (the catalogs mark them) is inside its domain after rounding to f32 (issue 11: a value valid
/// in f64 but Inf, 0 or 1 in f32 is refused when configured). Written from the domains'
/// definitions, not with the library's checks.
fn assert_f32_domains(cfg: &Config) {
    let inside = |x: f64, d: Domain| {
        let r = x as f32;
        r.is_finite()
            && match d {
                Domain::Positive => r > 0.0,
                Domain::UnitOpen => (0.0..1.0).contains(&r),
                Domain::UnitClosed => (0.0..=1.0).contains(&r),
                Domain::UnitExclusive => r > 0.0 && r < 1.0,
                _ => r >= 0.0,
            }
    };
    let specs = [cfg.base.spec(), cfg.lr.spec(), config_spec()];
    let values = [
        cfg.base.values(),
        cfg.lr.values(),
        cfg.field_values().into_iter().map(|(_, v)| v).collect(),
    ];
    for (spec, values) in specs.iter().zip(&values) {
        let fields: Vec<_> = if spec.name == "config" {
            cfg.field_values()
                .iter()
                .map(|(n, _)| spec.field(n).expect("catalog field"))
                .collect()
        } else {
            spec.fields.iter().collect()
        };
        for (f, v) in fields.iter().zip(values) {
            let xs: Vec<f64> = match v {
                Value::F64(x) | Value::OptF64(Some(x)) => vec![*x],
                Value::F64s(xs) => xs.clone(),
                _ => vec![],
            };
            for x in xs {
                assert!(
                    !f.f32 || inside(x, f.domain),
                    "{}: accepted {} = {x:e}, which is {:e} as f32",
                    spec.name,
                    f.name,
                    x as f32
                );
            }
        }
    }
}

/// The outcome the first update of `opt` must have with finite gradients: applied, unless the
/// learning rate or a per-step scalar of this step is not finite as f32 (refused, nothing
/// changed). The per-step scalars come from the library's own rule table.
fn assert_update(opt: &mut Optimizer, params: &mut [Vec<f32>], g: &[Vec<f32>], ctx: &str) {
    let lr = opt.schedule_state().lr(&opt.config().lr);
    let next = opt.step_count() + 1;
    let expect_refusal =
        flatopt::config::check_step(lr, &Rule::for_step(&opt.config().base, next, lr)).is_err();
    let before = opt.save();
    let params_before = params.to_vec();
    let out = opt.step(&mut refs(params), &crefs(g));
    match out {
        Ok(Outcome::Applied { step, .. }) => {
            assert!(!expect_refusal, "{ctx}: applied at lr = {lr}");
            assert_eq!(step, next, "{ctx}");
        }
        Err(Error::InvalidArgument { .. }) if expect_refusal => {
            assert_eq!(
                opt.save(),
                before,
                "{ctx}: a refused step changed the state"
            );
            assert_eq!(
                params,
                &params_before[..],
                "{ctx}: a refused step changed params"
            );
        }
        other => panic!("{ctx}: update gave {other:?} at lr = {lr}"),
    }
}

/// Input: one mode byte; mode 0: raw C structs; mode 1: a Rust configuration (also through C
/// where expressible).
pub fn check_config(data: &[u8]) {
    let mut inp = Input::new(data);
    if inp.u8() & 1 == 0 {
        check_config_c_raw(&mut inp);
    } else {
        check_config_rust(&mut inp);
    }
}

/// Arbitrary bytes as a `flatopt_config`, optionally with a `flatopt_base_params` and a
/// `flatopt_schedule` (also arbitrary bytes) whose list pointers are NULL or point to small
/// fuzz-filled arrays (the counts are cut to the arrays' sizes when the pointer is set, left
/// arbitrary when it is NULL). Each struct sits at the start of a buffer of the largest
/// `struct_size` the library accepts, so that an arbitrary `struct_size` is always backed by
/// memory; bit 4 of the control byte puts a non-zero byte after each struct (a newer caller's
/// field).
fn check_config_c_raw(inp: &mut Input) {
    let ctrl = inp.u8();
    let cfg_bytes = inp.take(std::mem::size_of::<flatopt_config>());
    let base_bytes = inp.take(std::mem::size_of::<flatopt_base_params>());
    let sched_bytes = inp.take(std::mem::size_of::<flatopt_schedule>());
    let milestones: Vec<u64> = (0..(inp.u8() % 9)).map(|_| inp.u64v()).collect();
    let values: Vec<f64> = (0..(inp.u8() % 9)).map(|_| inp.f64v()).collect();
    // SAFETY: the buffers hold size_of bytes of the struct; every field is an integer, a float
    // or a raw pointer, for which any bit pattern is a valid value (the pointers are replaced
    // below before the library sees them).
    let mut c: flatopt_config = unsafe { std::ptr::read_unaligned(cfg_bytes.as_ptr().cast()) };
    // SAFETY: as above (integers and floats only).
    let b: flatopt_base_params = unsafe { std::ptr::read_unaligned(base_bytes.as_ptr().cast()) };
    // SAFETY: as above.
    let mut s: flatopt_schedule = unsafe { std::ptr::read_unaligned(sched_bytes.as_ptr().cast()) };
    if ctrl & 2 != 0 {
        s.milestones = milestones.as_ptr();
        s.n_milestones %= milestones.len() + 1;
        if milestones.is_empty() {
            s.milestones = std::ptr::null();
        }
    } else {
        s.milestones = std::ptr::null();
    }
    if ctrl & 4 != 0 {
        s.values = values.as_ptr();
        s.n_values %= values.len() + 1;
        if values.is_empty() {
            s.values = std::ptr::null();
        }
    } else {
        s.values = std::ptr::null();
    }
    // Valid thread counts above 2 start that many threads: slow, covered by the engine tests.
    if (2..=256).contains(&c.num_threads) {
        c.num_threads = pool_threads(2) as u32;
    }
    let tail = (ctrl & 16 != 0).then_some(inp.u8() | 1);
    let b = Padded::new(b, tail);
    let s = Padded::new(s, tail);
    c.base = if ctrl & 8 != 0 {
        b.ptr()
    } else {
        std::ptr::null()
    };
    c.schedule = if ctrl & 1 != 0 {
        s.ptr()
    } else {
        std::ptr::null()
    };
    let c = Padded::new(c, tail);
    let sentinel = std::ptr::NonNull::<flatopt_optimizer>::dangling().as_ptr();
    let mut out = sentinel;
    // SAFETY: `c` is a struct followed by zeros (or one set byte) up to the largest size the
    // library reads; its base pointer is NULL or `b` and its schedule pointer NULL or `s` (the
    // same), whose list pointers are NULL or point to at least their counts.
    let st = unsafe { flatopt_optimizer_new(c.ptr(), &mut out) };
    match st {
        FLATOPT_OK => {
            assert!(!out.is_null() && out != sentinel, "OK without a handle");
            exercise_c_handle(Handle(out));
        }
        FLATOPT_ERR_INVALID_ARGUMENT | FLATOPT_ERR_NULL_POINTER | FLATOPT_ERR_UNSUPPORTED => {
            assert_eq!(out, sentinel, "*out written on failure");
            assert!(!last_message().is_empty(), "failure without a message");
        }
        other => panic!("flatopt_optimizer_new gave {other:?}: {}", last_message()),
    }
    // NULL config and NULL out.
    // SAFETY: NULL pointers are refused by the library.
    unsafe {
        assert_eq!(
            flatopt_optimizer_new(std::ptr::null(), &mut out),
            FLATOPT_ERR_NULL_POINTER
        );
        assert_eq!(
            flatopt_optimizer_new(c.ptr(), std::ptr::null_mut()),
            FLATOPT_ERR_NULL_POINTER
        );
    }
}

/// A C struct at the start of a zeroed, 8-aligned buffer of the largest `struct_size` the
/// library reads (4096 bytes), optionally with one non-zero byte right after the struct.
struct Padded<T> {
    words: Vec<u64>,
    _t: std::marker::PhantomData<T>,
}

impl<T: Copy> Padded<T> {
    fn new(value: T, tail: Option<u8>) -> Self {
        let mut words = vec![0u64; 4096 / 8];
        let p = words.as_mut_ptr().cast::<T>();
        // SAFETY: the buffer is 8-aligned (enough for these structs) and larger than `T`.
        unsafe { p.write(value) };
        if let Some(byte) = tail {
            // SAFETY: `size_of::<T>() < 4096`: inside the buffer.
            unsafe { p.cast::<u8>().add(std::mem::size_of::<T>()).write(byte) };
        }
        Padded {
            words,
            _t: std::marker::PhantomData,
        }
    }

    fn ptr(&self) -> *const T {
        self.words.as_ptr().cast()
    }
}

/// A handle that was accepted must work: register, step, save, load.
fn exercise_c_handle(h: Handle) {
    let mut p = vec![vec![0.5f32, -1.0, 2.0, 0.0, 1e-3]];
    h.register(&mut p);
    let g = vec![vec![0.1f32, -0.2, 0.3, 0.0, 1.0]];
    let st = h.step_with(&g);
    // Applied, or refused because a per-step scalar (a learning rate that C can set up to the
    // f32 maximum, times a bias correction) is not finite as f32.
    assert!(
        st == FLATOPT_OK
            || (st == FLATOPT_ERR_INVALID_ARGUMENT && last_message().contains("as f32")),
        "step on a fresh optimizer gave {st:?}: {}",
        last_message()
    );
    let saved = h.save();
    assert_eq!(h.load(&saved), FLATOPT_OK, "{}", last_message());
    assert_eq!(h.save(), saved);
}

fn check_config_rust(inp: &mut Input) {
    let cfg = decode_config(inp, false);
    let valid = cfg.validate();
    let made = Optimizer::new(cfg.clone());
    match (&valid, &made) {
        (Ok(()), Ok(_)) => {}
        (Err(a), Err(b)) => assert_eq!(a, b, "validate and new disagree"),
        (Ok(()), Err(Error::Unsupported(_))) => {} // threads could not start
        _ => panic!("validate {valid:?} but new {:?}", made.as_ref().map(|_| ())),
    }
    if let Err(Error::InvalidArgument { name, value, .. }) = &valid {
        assert!(!name.is_empty() && !value.is_empty());
    }

    // The C ABI decides the same where its structs can say the same thing.
    if let Some(mut c) = to_c(&cfg) {
        let sentinel = std::ptr::NonNull::<flatopt_optimizer>::dangling().as_ptr();
        let mut out = sentinel;
        // SAFETY: a complete config whose pointers point into `c`.
        let st = unsafe { flatopt_optimizer_new(c.as_ptr(), &mut out) };
        if st == FLATOPT_OK {
            assert!(made.is_ok(), "C accepted what Rust refused: {made:?}");
            drop(Handle(out));
        } else {
            assert_eq!(out, sentinel);
            let Err(e) = &made else {
                panic!("C refused ({st:?}: {}) what Rust accepted", last_message());
            };
            // The two check in different orders when several fields are bad, and C checks the
            // tier earlier; compare the kind when only one kind of error is possible.
            if cfg.tier.is_none() || cfg.tier == Some(Tier::Scalar) {
                assert_eq!(st, status_of(e), "C vs Rust ({e}): {}", last_message());
            }
        }
    }

    let Ok(mut opt) = made else { return };
    // A valid schedule gives finite, non-negative learning rates (except the documented
    // unbounded growth), at the first counters and at crafted large ones.
    assert_f32_domains(&cfg);
    let grows = may_grow(&cfg.lr);
    let check_lr = |st: &ScheduleState, at: &str| {
        let lr = st.lr(&cfg.lr);
        if !grows {
            assert!(
                lr.is_finite() && lr >= 0.0,
                "{:?}: learning rate {lr} at {at}",
                cfg.lr
            );
        } else {
            assert!(
                lr.is_nan() || lr >= 0.0,
                "{:?}: learning rate {lr} at {at}",
                cfg.lr
            );
        }
    };
    let mut st = ScheduleState::new(&cfg.lr);
    for e in 0..40 {
        check_lr(&st, &format!("e = {e}"));
        st.advance(&cfg.lr);
    }
    if cfg.lr.is_metric_driven() {
        let mut st = ScheduleState::new(&cfg.lr);
        for (k, m) in [1.0, 1.0, 0.5, 2.0, 2.0, 2.0, 1e300, -1e300, 0.0]
            .iter()
            .enumerate()
        {
            st.step_metric(&cfg.lr, *m).unwrap();
            check_lr(&st, &format!("metric {k}"));
        }
    }
    // Large counters, through a crafted checkpoint.
    let mut params = vec![vec![0.25f32, -0.5, 1.0]];
    opt.register(&crefs(&params)).unwrap();
    let saved = opt.save();
    let e = inp.u64v();
    for count in [e, 1 << 40, u64::MAX - 1, u64::MAX] {
        let crafted = with_counters(&saved, None, Some(count));
        if opt.load(&crafted).is_ok() {
            check_lr(opt.schedule_state(), &format!("e = {count}"));
            // A schedule grown past the f32 range refuses the step, changing nothing.
            let g = vec![vec![0.1f32, 0.2, -0.3]];
            assert_update(&mut opt, &mut params, &g, &format!("e = {count}"));
        }
    }
    // And an update runs (finite gradients: applied, whatever the policy, unless a per-step
    // scalar is not finite as f32).
    opt.load(&saved).unwrap();
    let g = vec![vec![0.1f32, 0.2, -0.3]];
    assert_update(&mut opt, &mut params, &g, "first update");
}
