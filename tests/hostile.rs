//! Hostile inputs through the Rust API, PyTorch `OptimizerInfo` style: a table of bad inputs per
//! entry point, each with the error it must give, and the check that the refused call left the
//! parameters and the whole optimizer state bit-identical (digest: the checkpoint bytes of
//! `Optimizer::save` plus the parameter bits plus the caller's other buffers).
//!
//! - every float field of `Base`, `Config`, `Lookahead` and every `Schedule` variant with NaN,
//!   ±Inf, negative and out-of-range values, and the integer fields with their bad values;
//! - zero, wrong and enormous lengths (a 32 GiB `MAP_NORESERVE` mapping that is never touched)
//!   for every call taking buffers, stateless kernels included;
//! - wrong call order (before registration, a stale `Step`, begin twice);
//! - damaged, crafted and mismatched checkpoints and bad paths;
//! - non-finite gradients: a skipped update changes no byte of the checkpoint but the skipped
//!   counter, and does not advance the step (bias correction), the Lookahead sync timing or
//!   the schedule state; the report names the first bad buffer and index.

use flatopt::kernels::{self, Buffers, Op, Plan, Rule};
use flatopt::schedule::{Anneal, CyclicMode, PlateauMode, ThresholdMode};
use flatopt::{
    Base, Config, Error, NonFinitePolicy, Optimizer, Outcome, Schedule, ScheduleMode,
    ScheduleState, Step, Tier,
};

// ---------------------------------------------------------------------------------------------
// Expected errors.

#[derive(Debug, Clone)]
enum Expect {
    /// `InvalidArgument` naming this argument.
    Invalid(&'static str),
    /// `LengthMismatch` whose `what` contains this.
    Length(&'static str),
    State,
    Unsupported,
    Corrupt,
    Io,
}

fn check_error(r: Result<(), Error>, want: &Expect, ctx: &str) {
    let e = match r {
        Ok(()) => panic!("{ctx}: accepted, expected {want:?}"),
        Err(e) => e,
    };
    let ok = match (want, &e) {
        (Expect::Invalid(n), Error::InvalidArgument { name, .. }) => {
            name == n && e.to_string().contains(&format!("invalid {n} = "))
        }
        (Expect::Length(w), Error::LengthMismatch { what, .. }) => what.contains(w),
        (Expect::State, Error::InvalidState(_))
        | (Expect::Unsupported, Error::Unsupported(_))
        | (Expect::Corrupt, Error::Corrupt(_))
        | (Expect::Io, Error::Io(_)) => true,
        _ => false,
    };
    assert!(ok, "{ctx}: got {e:?} ({e}), expected {want:?}");
}

// ---------------------------------------------------------------------------------------------
// Configuration fields.

#[derive(Debug, Clone, Copy)]
enum Domain {
    /// Finite and >= 0.
    NonNeg,
    /// Finite and > 0.
    Positive,
    /// [0, 1).
    UnitOpen,
    /// [0, 1].
    UnitClosed,
    /// (0, 1).
    UnitExclusive,
}

/// Values outside the domain: NaN (both signs), ±Inf, negatives, and the domain's own edges.
fn bad_values(d: Domain) -> Vec<f64> {
    let mut v = vec![
        f64::NAN,
        -f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        -1.0,
        -5e-324,
        -1e300,
    ];
    match d {
        Domain::NonNeg => {}
        Domain::Positive => v.extend([0.0, -0.0]),
        Domain::UnitOpen => v.extend([1.0, 1.5, f64::MAX]),
        Domain::UnitClosed => v.extend([1.000_000_000_000_000_2, 2.0]),
        Domain::UnitExclusive => v.extend([0.0, -0.0, 1.0]),
    }
    v
}

/// Values at the edge of the domain that must be accepted. Fields the kernels use in f32 are
/// checked after rounding to f32 too (tests/hostile_values.rs has the values refused there),
/// so the edges are the f32 ones: the largest finite f32, the smallest subnormal, the largest
/// f32 below 1.
fn edge_values(d: Domain) -> Vec<f64> {
    match d {
        Domain::NonNeg => vec![0.0, -0.0, f32::MAX as f64],
        Domain::Positive => vec![1.401_298_464_324_817e-45, f32::MAX as f64],
        Domain::UnitOpen => vec![0.0, 0.999_999_940_395_355_2],
        Domain::UnitClosed => vec![0.0, 1.0],
        Domain::UnitExclusive => vec![5e-324, 0.999_999_999_999_999_9],
    }
}

/// A float field: (where, the argument name the error must give, domain, whether the domain's
/// edges are valid on their own, the config with the field set).
type Field = (&'static str, &'static str, Domain, bool, fn(f64) -> Config);

fn sched(s: Schedule) -> Config {
    Config::with_schedule(Base::sgd(), s)
}

fn adam(b1: f64, b2: f64, eps: f64) -> Config {
    Config::new(
        Base::Adam {
            b1,
            b2,
            eps,
            amsgrad: false,
        },
        1e-3,
    )
}

fn adamw(b1: f64, b2: f64, eps: f64, weight_decay: f64) -> Config {
    Config::new(
        Base::AdamW {
            b1,
            b2,
            eps,
            weight_decay,
        },
        1e-3,
    )
}

fn radam(b1: f64, b2: f64, eps: f64) -> Config {
    Config::new(Base::RAdam { b1, b2, eps }, 1e-3)
}

fn sgd(momentum: f64, dampening: f64) -> Config {
    Config::new(
        Base::Sgd {
            momentum,
            dampening,
            nesterov: false,
        },
        0.1,
    )
}

fn one_cycle(max_lr: f64, pct: f64, div: f64, fin: f64) -> Config {
    sched(Schedule::OneCycle {
        max_lr,
        total_steps: 100,
        pct_start: pct,
        div_factor: div,
        final_div_factor: fin,
        anneal: Anneal::Cos,
    })
}

fn cyclic(base: f64, max_lr: f64, gamma: f64) -> Config {
    sched(Schedule::Cyclic {
        base,
        max_lr,
        step_size_up: 4,
        step_size_down: 4,
        mode: CyclicMode::Triangular,
        gamma,
    })
}

fn plateau(base: f64, factor: f64, threshold: f64, abs: bool, min_lr: f64) -> Config {
    sched(Schedule::ReduceOnPlateau {
        base,
        mode: PlateauMode::Min,
        factor,
        patience: 2,
        threshold,
        threshold_mode: if abs {
            ThresholdMode::Abs
        } else {
            ThresholdMode::Rel
        },
        cooldown: 1,
        min_lr,
    })
}

fn exp_decay(base: f64, rate: f64, end: f64) -> Config {
    sched(Schedule::ExponentialDecay {
        base,
        decay_steps: 10,
        decay_rate: rate,
        transition_begin: 2,
        staircase: true,
        end_value: Some(end),
    })
}

fn warmup_cosine(base: f64, start: f64, eta: f64) -> Config {
    sched(Schedule::warmup_cosine(base, 5, 50, start, eta))
}

fn fields() -> Vec<Field> {
    use Domain::*;
    vec![
        ("Sgd", "momentum", UnitOpen, true, |x| sgd(x, 0.0)),
        ("Sgd", "dampening", UnitClosed, true, |x| sgd(0.9, x)),
        ("Adam", "b1", UnitOpen, true, |x| adam(x, 0.999, 1e-8)),
        ("Adam", "b2", UnitOpen, true, |x| adam(0.9, x, 1e-8)),
        ("Adam", "eps", Positive, true, |x| adam(0.9, 0.999, x)),
        ("AdamW", "b1", UnitOpen, true, |x| {
            adamw(x, 0.999, 1e-8, 0.01)
        }),
        ("AdamW", "b2", UnitOpen, true, |x| adamw(0.9, x, 1e-8, 0.01)),
        ("AdamW", "eps", Positive, true, |x| {
            adamw(0.9, 0.999, x, 0.01)
        }),
        ("AdamW", "weight_decay (decoupled)", NonNeg, true, |x| {
            adamw(0.9, 0.999, 1e-8, x)
        }),
        ("RAdam", "b1", UnitOpen, true, |x| radam(x, 0.999, 1e-8)),
        ("RAdam", "b2", UnitOpen, true, |x| radam(0.9, x, 1e-8)),
        ("RAdam", "eps", Positive, true, |x| radam(0.9, 0.999, x)),
        ("Config", "weight_decay", NonNeg, true, |x| {
            adam(0.9, 0.999, 1e-8).weight_decay(x)
        }),
        ("Config", "grad_clip_norm", Positive, true, |x| {
            adam(0.9, 0.999, 1e-8).clip_norm(x)
        }),
        ("Config", "grad_clip_value", Positive, true, |x| {
            adam(0.9, 0.999, 1e-8).clip_value(x)
        }),
        ("Lookahead", "alpha", UnitClosed, true, |x| {
            adam(0.9, 0.999, 1e-8).lookahead(5, x)
        }),
        ("Fixed", "lr", NonNeg, true, |x| {
            Config::new(Base::adam(), x)
        }),
        ("Constant", "base", NonNeg, true, |x| {
            sched(Schedule::constant(x, 0.5, 5))
        }),
        ("Constant", "factor", UnitClosed, true, |x| {
            sched(Schedule::constant(0.1, x, 5))
        }),
        ("Linear", "base", NonNeg, true, |x| {
            sched(Schedule::linear(x, 0.3, 1.0, 5))
        }),
        ("Linear", "start_factor", UnitClosed, true, |x| {
            sched(Schedule::linear(0.1, x, 1.0, 5))
        }),
        ("Linear", "end_factor", UnitClosed, true, |x| {
            sched(Schedule::linear(0.1, 0.3, x, 5))
        }),
        ("Step", "base", NonNeg, true, |x| {
            sched(Schedule::step(x, 3, 0.5))
        }),
        ("Step", "gamma", Positive, true, |x| {
            sched(Schedule::step(0.1, 3, x))
        }),
        ("MultiStep", "base", NonNeg, true, |x| {
            sched(Schedule::multi_step(x, vec![2, 4], 0.5))
        }),
        ("MultiStep", "gamma", Positive, true, |x| {
            sched(Schedule::multi_step(0.1, vec![2, 4], x))
        }),
        ("Exponential", "base", NonNeg, true, |x| {
            sched(Schedule::exponential(x, 0.9))
        }),
        ("Exponential", "gamma", Positive, true, |x| {
            sched(Schedule::exponential(0.1, x))
        }),
        ("ExponentialDecay", "base", NonNeg, true, |x| {
            exp_decay(x, 0.5, 1e-4)
        }),
        ("ExponentialDecay", "decay_rate", Positive, true, |x| {
            exp_decay(0.1, x, 1e-4)
        }),
        ("ExponentialDecay", "end_value", NonNeg, true, |x| {
            exp_decay(0.1, 0.5, x)
        }),
        ("CosineAnnealing", "base", NonNeg, true, |x| {
            sched(Schedule::cosine_annealing(x, 10, 0.0))
        }),
        ("CosineAnnealing", "eta_min", NonNeg, true, |x| {
            sched(Schedule::cosine_annealing(0.1, 10, x))
        }),
        ("CosineAnnealingWarmRestarts", "base", NonNeg, true, |x| {
            sched(Schedule::cosine_annealing_warm_restarts(x, 3, 2, 0.0))
        }),
        (
            "CosineAnnealingWarmRestarts",
            "eta_min",
            NonNeg,
            true,
            |x| sched(Schedule::cosine_annealing_warm_restarts(0.1, 3, 2, x)),
        ),
        ("Polynomial", "base", NonNeg, true, |x| {
            sched(Schedule::polynomial(x, 5, 2.0))
        }),
        ("Polynomial", "power", NonNeg, true, |x| {
            sched(Schedule::polynomial(0.1, 5, x))
        }),
        ("Warmup", "base", NonNeg, true, |x| {
            sched(Schedule::warmup(x, 5, 0.0))
        }),
        ("Warmup", "start_lr", NonNeg, true, |x| {
            sched(Schedule::warmup(0.1, 5, x))
        }),
        ("WarmupCosine", "base", NonNeg, true, |x| {
            warmup_cosine(x, 0.0, 0.0)
        }),
        ("WarmupCosine", "start_lr", NonNeg, true, |x| {
            warmup_cosine(0.1, x, 0.0)
        }),
        ("WarmupCosine", "eta_min", NonNeg, true, |x| {
            warmup_cosine(0.1, 0.0, x)
        }),
        ("OneCycle", "max_lr", NonNeg, true, |x| {
            one_cycle(x, 0.3, 25.0, 1e4)
        }),
        ("OneCycle", "pct_start", UnitExclusive, true, |x| {
            one_cycle(0.1, x, 25.0, 1e4)
        }),
        // A tiny div factor makes max_lr / div_factor overflow (refused too): no edge check.
        ("OneCycle", "div_factor", Positive, false, |x| {
            one_cycle(0.1, 0.3, x, 1e4)
        }),
        ("OneCycle", "final_div_factor", Positive, false, |x| {
            one_cycle(0.1, 0.3, 25.0, x)
        }),
        ("Cyclic", "base", NonNeg, true, |x| cyclic(x, 0.1, 1.0)),
        ("Cyclic", "max_lr", NonNeg, true, |x| cyclic(0.01, x, 1.0)),
        ("Cyclic", "gamma", Positive, true, |x| cyclic(0.01, 0.1, x)),
        ("PiecewiseConstant", "values", NonNeg, true, |x| {
            sched(Schedule::piecewise_constant(vec![3, 6], vec![0.1, x, 0.01]))
        }),
        ("ReduceOnPlateau", "base", NonNeg, true, |x| {
            plateau(x, 0.1, 1e-4, false, 0.0)
        }),
        ("ReduceOnPlateau", "factor", UnitExclusive, true, |x| {
            plateau(0.1, x, 1e-4, false, 0.0)
        }),
        ("ReduceOnPlateau (rel)", "threshold", UnitOpen, true, |x| {
            plateau(0.1, 0.1, x, false, 0.0)
        }),
        ("ReduceOnPlateau (abs)", "threshold", NonNeg, true, |x| {
            plateau(0.1, 0.1, x, true, 0.0)
        }),
        ("ReduceOnPlateau", "min_lr", NonNeg, true, |x| {
            plateau(0.1, 0.1, 1e-4, false, x)
        }),
    ]
}

/// Invalid integer fields, lists, combinations and tiers.
fn other_config_rows() -> Vec<(String, Config, Expect)> {
    use Expect::*;
    let ok = || adam(0.9, 0.999, 1e-8);
    let mut rows: Vec<(String, Config, Expect)> = vec![
        (
            "sync_period 0".into(),
            ok().lookahead(0, 0.5),
            Invalid("sync_period"),
        ),
        (
            "num_threads 0".into(),
            ok().threads(0),
            Invalid("num_threads"),
        ),
        (
            "num_threads 257".into(),
            ok().threads(257),
            Invalid("num_threads"),
        ),
        (
            "num_threads usize::MAX".into(),
            ok().threads(usize::MAX),
            Invalid("num_threads"),
        ),
        (
            "nesterov without momentum".into(),
            Config::new(Base::momentum(0.0, true), 0.1),
            Invalid("nesterov"),
        ),
        (
            "nesterov with dampening".into(),
            Config::new(
                Base::Sgd {
                    momentum: 0.9,
                    dampening: 0.5,
                    nesterov: true,
                },
                0.1,
            ),
            Invalid("nesterov"),
        ),
        (
            "Linear total_iters 0".into(),
            sched(Schedule::linear(0.1, 0.3, 1.0, 0)),
            Invalid("total_iters"),
        ),
        (
            "Step step_size 0".into(),
            sched(Schedule::step(0.1, 0, 0.5)),
            Invalid("step_size"),
        ),
        (
            "ExponentialDecay decay_steps 0".into(),
            sched(Schedule::exponential_decay(0.1, 0, 0.5)),
            Invalid("decay_steps"),
        ),
        (
            "CosineAnnealing t_max 0".into(),
            sched(Schedule::cosine_annealing(0.1, 0, 0.0)),
            Invalid("t_max"),
        ),
        (
            "CosineAnnealingWarmRestarts t_0 0".into(),
            sched(Schedule::cosine_annealing_warm_restarts(0.1, 0, 2, 0.0)),
            Invalid("t_0"),
        ),
        (
            "CosineAnnealingWarmRestarts t_mult 0".into(),
            sched(Schedule::cosine_annealing_warm_restarts(0.1, 3, 0, 0.0)),
            Invalid("t_mult"),
        ),
        (
            "Polynomial total_iters 0".into(),
            sched(Schedule::polynomial(0.1, 0, 1.0)),
            Invalid("total_iters"),
        ),
        (
            "WarmupCosine total_steps 0".into(),
            sched(Schedule::warmup_cosine(0.1, 0, 0, 0.0, 0.0)),
            Invalid("total_steps"),
        ),
        (
            "WarmupCosine warmup_steps > total_steps".into(),
            sched(Schedule::warmup_cosine(0.1, 11, 10, 0.0, 0.0)),
            Invalid("warmup_steps"),
        ),
        (
            "WarmupCosine warmup_steps u64::MAX".into(),
            sched(Schedule::warmup_cosine(0.1, u64::MAX, 10, 0.0, 0.0)),
            Invalid("warmup_steps"),
        ),
        (
            "OneCycle total_steps 0".into(),
            sched(Schedule::one_cycle(0.1, 0)),
            Invalid("total_steps"),
        ),
        (
            "OneCycle max_lr / div_factor overflows".into(),
            one_cycle(1e30, 0.3, 1e-10, 1e4),
            Invalid("div_factor"),
        ),
        (
            "OneCycle initial / final_div_factor overflows".into(),
            one_cycle(1.0, 0.3, 1.0, 1e-320),
            Invalid("final_div_factor"),
        ),
        (
            "Cyclic step_size_up 0".into(),
            sched(Schedule::cyclic(0.01, 0.1, 0)),
            Invalid("step_size_up"),
        ),
        (
            "Cyclic exp_range gamma > 1".into(),
            sched(Schedule::Cyclic {
                base: 0.01,
                max_lr: 0.1,
                step_size_up: 4,
                step_size_down: 4,
                mode: CyclicMode::ExpRange,
                gamma: 1.5,
            }),
            Invalid("gamma"),
        ),
        (
            "PiecewiseConstant one value for one boundary".into(),
            sched(Schedule::piecewise_constant(vec![5], vec![0.1])),
            Invalid("values"),
        ),
        (
            "PiecewiseConstant three values for one boundary".into(),
            sched(Schedule::piecewise_constant(vec![5], vec![0.1, 0.2, 0.3])),
            Invalid("values"),
        ),
        (
            "PiecewiseConstant no values".into(),
            sched(Schedule::piecewise_constant(vec![], vec![])),
            Invalid("values"),
        ),
    ];
    // A tier this CPU lacks, where there is one (all four run on an AVX-512 machine).
    match Tier::ALL.into_iter().find(|t| !t.is_available()) {
        Some(t) => rows.push((format!("tier {t}"), ok().tier(t), Unsupported)),
        None => eprintln!("every SIMD tier is available here: no unavailable-tier row"),
    }
    for (what, list) in [
        ("repeated", vec![3, 3]),
        ("decreasing", vec![5, 2]),
        ("wrapping", vec![u64::MAX, 0]),
    ] {
        rows.push((
            format!("MultiStep milestones {what}"),
            sched(Schedule::multi_step(0.1, list.clone(), 0.5)),
            Invalid("milestones"),
        ));
        let n = list.len();
        rows.push((
            format!("PiecewiseConstant boundaries {what}"),
            sched(Schedule::piecewise_constant(list, vec![0.1; n + 1])),
            Invalid("boundaries"),
        ));
    }
    rows
}

/// Every bad configuration: validate and new both refuse it with the named argument.
#[test]
fn hostile_configurations() {
    let mut count = 0;
    for (place, name, domain, edges_valid, make) in fields() {
        for x in bad_values(domain) {
            let cfg = make(x);
            let ctx = format!("{place}.{name} = {x:?}");
            check_error(cfg.validate(), &Expect::Invalid(name), &ctx);
            check_error(
                Optimizer::new(cfg).map(|_| ()),
                &Expect::Invalid(name),
                &format!("Optimizer::new: {ctx}"),
            );
            count += 1;
        }
        if edges_valid {
            for x in edge_values(domain) {
                let cfg = make(x);
                cfg.validate()
                    .unwrap_or_else(|e| panic!("{place}.{name} = {x:?} refused: {e}"));
            }
        }
    }
    for (what, cfg, want) in other_config_rows() {
        check_error(cfg.validate(), &want, &what);
        check_error(Optimizer::new(cfg).map(|_| ()), &want, &what);
        count += 1;
    }
    println!("hostile inputs (Rust API), configurations: {count}");
    assert!(count >= 450, "{count}");
}

// ---------------------------------------------------------------------------------------------
// Calls on an optimizer.

/// An enormous `f32` buffer: a `MAP_NORESERVE` anonymous mapping (zero pages, never touched by
/// the library, which must refuse the length before reading anything).
struct Huge {
    ptr: *mut libc::c_void,
    bytes: usize,
}

const HUGE_LEN: usize = 1 << 33; // 2^33 floats: 32 GiB of address space

impl Huge {
    fn new() -> Option<Huge> {
        if cfg!(miri) {
            return None; // Miri would back the mapping with real memory
        }
        let bytes = HUGE_LEN * 4;
        // SAFETY: an anonymous private mapping with no address hint; checked for failure.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        (ptr != libc::MAP_FAILED).then_some(Huge { ptr, bytes })
    }
    fn f32s(&mut self) -> &mut [f32] {
        // SAFETY: a live, zero-initialised, readable and writable mapping of `bytes` bytes,
        // page-aligned, borrowed mutably from `self` (no other reference exists).
        unsafe { std::slice::from_raw_parts_mut(self.ptr.cast::<f32>(), HUGE_LEN) }
    }
    fn f64s(&mut self) -> &mut [f64] {
        // SAFETY: as in `f32s`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.cast::<f64>(), HUGE_LEN / 2) }
    }
}

impl Drop for Huge {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping once.
        unsafe { libc::munmap(self.ptr, self.bytes) };
    }
}

const LENS: [usize; 3] = [5, 17, 3];

/// An optimizer with non-trivial state, its parameters and gradients, and a set of caller
/// buffers for the stateless kernels (param, grad, m, v, v_max, slow).
struct Fx {
    cfg: Config,
    opt: Optimizer,
    params: Vec<Vec<f32>>,
    grads: Vec<Vec<f32>>,
    /// A step begun before the last update (stale).
    stale: Step,
    /// A checkpoint of this configuration in another state (one more update).
    other_state: Vec<u8>,
    extra: Vec<Vec<f32>>,
}

fn vals(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7 + seed * 13) % 19) as f32 * 0.05 - 0.45)
        .collect()
}

fn refs(p: &mut [Vec<f32>]) -> Vec<&mut [f32]> {
    p.iter_mut().map(|x| x.as_mut_slice()).collect()
}

fn crefs(p: &[Vec<f32>]) -> Vec<&[f32]> {
    p.iter().map(|x| x.as_slice()).collect()
}

fn registered(cfg: &Config, params: &[Vec<f32>]) -> Optimizer {
    let mut opt = Optimizer::new(cfg.clone()).unwrap();
    opt.register(&crefs(params)).unwrap();
    opt
}

fn fixture(cfg: &Config) -> Fx {
    let mut params: Vec<Vec<f32>> = LENS.iter().map(|&n| vals(n, n)).collect();
    let grads: Vec<Vec<f32>> = LENS.iter().map(|&n| vals(n, n + 1)).collect();
    let mut opt = registered(cfg, &params);
    opt.update(&mut refs(&mut params), &crefs(&grads)).unwrap();
    let stale = opt.begin_update(&crefs(&grads)).unwrap().unwrap();
    opt.update(&mut refs(&mut params), &crefs(&grads)).unwrap();
    let mut twin = registered(cfg, &params);
    twin.load(&opt.save()).unwrap();
    let mut p2 = params.clone();
    twin.update(&mut refs(&mut p2), &crefs(&grads)).unwrap();
    let other_state = twin.save();
    assert_ne!(other_state, opt.save());
    Fx {
        cfg: cfg.clone(),
        opt,
        params,
        grads,
        stale,
        other_state,
        extra: (0..6).map(|k| vals(8, k)).collect(),
    }
}

/// Everything a refused call must leave as it was.
fn digest(f: &Fx) -> Vec<u8> {
    let mut d = f.opt.save();
    for b in f.params.iter().chain(&f.extra) {
        d.extend(b.iter().flat_map(|x| x.to_le_bytes()));
    }
    d.push(f.opt.tier() as u8);
    d.extend(f.opt.num_threads().to_le_bytes());
    d
}

type Action = Box<dyn Fn(&mut Fx) -> Result<(), Error>>;
/// A checkpoint edit: (case, expected error, edit).
type RawEdit = (&'static str, Expect, fn(&mut Vec<u8>));
/// A checkpoint edit with the CRC fixed afterwards; the `usize` is the offset after the
/// configuration section.
type CraftedEdit = (&'static str, Expect, fn(&mut Vec<u8>, usize));
/// A call on an unregistered optimizer.
type Call = (
    &'static str,
    Box<dyn Fn(&mut Optimizer) -> Result<(), Error>>,
);

struct Row {
    entry: &'static str,
    case: String,
    run: Action,
    expect: Expect,
}

fn row(
    entry: &'static str,
    case: impl Into<String>,
    expect: Expect,
    run: impl Fn(&mut Fx) -> Result<(), Error> + 'static,
) -> Row {
    Row {
        entry,
        case: case.into(),
        run: Box::new(run),
        expect,
    }
}

/// Checkpoint field surgery: the CRC and length are fixed after `edit`.
fn crafted(bytes: &[u8], edit: impl FnOnce(&mut Vec<u8>, usize)) -> Vec<u8> {
    let mut b = bytes.to_vec();
    let c = u64::from_le_bytes(b[32..40].try_into().unwrap()) as usize;
    // `at`: offset of the step counter (right after the configuration section).
    edit(&mut b, 40 + c);
    let n = b.len();
    b[16..24].copy_from_slice(&(n as u64).to_le_bytes());
    let crc = crc32fast::hash(&b[..n - 4]);
    b[n - 4..].copy_from_slice(&crc.to_le_bytes());
    b
}

fn put_u64(b: &mut [u8], at: usize, x: u64) {
    b[at..at + 8].copy_from_slice(&x.to_le_bytes());
}

/// Offsets after the configuration section (`at`): step 0, skipped 8, schedule count 16,
/// t_cur 24, t_i 32, plateau lr 40, best 48, bad epochs 56, cooldown 64, buffer count 72,
/// first buffer record 80 (length 80, present 88, reserved 92, arrays 96).
const BUFFERS: usize = 72;

fn call_rows(cfg: &Config, dir: &std::path::Path) -> Vec<Row> {
    use Expect::*;
    let mut rows = vec![
        // update
        row(
            "update",
            "no buffers",
            Length("number of param buffers"),
            |f| f.opt.update(&mut [], &[]).map(|_| ()),
        ),
        row(
            "update",
            "one param buffer too few",
            Length("number of param buffers"),
            |f| {
                let mut p = refs(&mut f.params);
                p.pop();
                f.opt.update(&mut p, &crefs(&f.grads)).map(|_| ())
            },
        ),
        row(
            "update",
            "one param buffer too many",
            Length("number of param buffers"),
            |f| {
                let mut spare = vec![0.0f32; 5];
                let mut p = refs(&mut f.params);
                p.push(&mut spare);
                f.opt.update(&mut p, &crefs(&f.grads)).map(|_| ())
            },
        ),
        row(
            "update",
            "one grad buffer too few",
            Length("number of grad buffers"),
            |f| {
                let mut g = crefs(&f.grads);
                g.pop();
                f.opt.update(&mut refs(&mut f.params), &g).map(|_| ())
            },
        ),
        row(
            "update",
            "param 1 one element longer",
            Length("param buffer 1"),
            |f| {
                let mut p = f.params.clone();
                p[1].push(0.0);
                f.opt
                    .update(&mut refs(&mut p), &crefs(&f.grads))
                    .map(|_| ())
            },
        ),
        row("update", "param 0 empty", Length("param buffer 0"), |f| {
            let mut p = refs(&mut f.params);
            p[0] = &mut [];
            f.opt.update(&mut p, &crefs(&f.grads)).map(|_| ())
        }),
        row(
            "update",
            "grad 2 one element shorter",
            Length("grad buffer 2"),
            |f| {
                let mut g = crefs(&f.grads);
                g[2] = &f.grads[2][1..];
                f.opt.update(&mut refs(&mut f.params), &g).map(|_| ())
            },
        ),
        row("update", "grad 0 empty", Length("grad buffer 0"), |f| {
            let mut g = crefs(&f.grads);
            g[0] = &[];
            f.opt.update(&mut refs(&mut f.params), &g).map(|_| ())
        }),
        // update_with_sum_squares
        row(
            "update_with_sum_squares",
            "no buffers",
            Length("number of param buffers"),
            |f| f.opt.update_with_sum_squares(&mut [], &[], 1.0).map(|_| ()),
        ),
        row(
            "update_with_sum_squares",
            "grad 1 longer",
            Length("grad buffer 1"),
            |f| {
                let mut g = f.grads.clone();
                g[1].push(1.0);
                f.opt
                    .update_with_sum_squares(&mut refs(&mut f.params), &crefs(&g), 1.0)
                    .map(|_| ())
            },
        ),
        row(
            "update_with_sum_squares",
            "grads missing",
            Length("number of grad buffers"),
            |f| {
                f.opt
                    .update_with_sum_squares(&mut refs(&mut f.params), &[], 1.0)
                    .map(|_| ())
            },
        ),
        // begin_update, begin_update_with_sum_squares, Step::apply, finish_update
        row(
            "begin_update",
            "no grads",
            Length("number of grad buffers"),
            |f| f.opt.begin_update(&[]).map(|_| ()),
        ),
        row(
            "begin_update",
            "grad 2 empty",
            Length("grad buffer 2"),
            |f| {
                let mut g = crefs(&f.grads);
                g[2] = &[];
                f.opt.begin_update(&g).map(|_| ())
            },
        ),
        row(
            "Step::apply",
            "param shorter than grad",
            Length("grad"),
            |f| {
                let step = f.opt.begin_update(&crefs(&f.grads))?.unwrap();
                let st = f.opt.states_mut().nth(1).unwrap();
                step.apply(&mut f.params[1][..16], &f.grads[1], st)
            },
        ),
        row(
            "Step::apply",
            "empty param, full grad",
            Length("grad"),
            |f| {
                let step = f.opt.begin_update(&crefs(&f.grads))?.unwrap();
                let st = f.opt.states_mut().next().unwrap();
                step.apply(&mut [], &f.grads[0], st)
            },
        ),
        row(
            "Step::apply",
            "state split elsewhere than the param",
            Length(""),
            |f| {
                let step = f.opt.begin_update(&crefs(&f.grads))?.unwrap();
                let st = f.opt.states_mut().nth(1).unwrap();
                let (s0, _) = st.split_at(4);
                step.apply(&mut f.params[1][..6], &f.grads[1][..6], s0)
            },
        ),
        row("finish_update", "a stale step", State, |f| {
            f.opt.finish_update(f.stale)
        }),
        // sum_squares_partials
        row(
            "sum_squares_partials",
            "out empty",
            Length("partials"),
            |f| f.opt.sum_squares_partials(&crefs(&f.grads), &mut []),
        ),
        row(
            "sum_squares_partials",
            "out one too long",
            Length("partials"),
            |f| {
                let mut out = vec![0.0; f.opt.sum_squares_block_count() + 1];
                f.opt.sum_squares_partials(&crefs(&f.grads), &mut out)
            },
        ),
        row(
            "sum_squares_partials",
            "grad 1 shorter",
            Length("grad buffer 1"),
            |f| {
                let mut g = crefs(&f.grads);
                g[1] = &f.grads[1][..3];
                let mut out = vec![0.0; f.opt.sum_squares_block_count()];
                f.opt.sum_squares_partials(&g, &mut out)
            },
        ),
        // reset, register
        row("reset", "param 0 longer", Length("param buffer 0"), |f| {
            let mut p = f.params.clone();
            p[0].push(1.0);
            f.opt.reset(&crefs(&p))
        }),
        row(
            "reset",
            "no params",
            Length("number of param buffers"),
            |f| f.opt.reset(&[]),
        ),
        row("register", "an empty list", Invalid("params"), |f| {
            f.opt.register(&[])
        }),
    ];
    // set_tier to a tier this CPU lacks, where there is one; set_num_threads
    match Tier::ALL.into_iter().find(|t| !t.is_available()) {
        Some(t) => rows.push(row("set_tier", t.name(), Unsupported, move |f| {
            f.opt.set_tier(t)
        })),
        None => eprintln!("every SIMD tier is available here: no set_tier row"),
    }
    for n in [0, 257, 100_000, usize::MAX] {
        rows.push(row(
            "set_num_threads",
            format!("{n}"),
            Invalid("num_threads"),
            move |f| f.opt.set_num_threads(n),
        ));
    }
    // step_schedule_metric
    for m in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let want = if cfg.lr.is_metric_driven() {
            Invalid("metric")
        } else {
            State
        };
        rows.push(row(
            "step_schedule_metric",
            format!("{m}"),
            want,
            move |f| f.opt.step_schedule_metric(m),
        ));
    }
    if !cfg.lr.is_metric_driven() {
        rows.push(row(
            "step_schedule_metric",
            "not a plateau schedule",
            State,
            |f| f.opt.step_schedule_metric(1.0),
        ));
    }
    if cfg.nonfinite == NonFinitePolicy::Propagate {
        rows.push(row(
            "begin_update_with_sum_squares",
            "no sum with clipping",
            Invalid("sum_squares"),
            |f| {
                f.opt
                    .begin_update_with_sum_squares(None, |_| None)
                    .map(|_| ())
            },
        ));
    } else {
        rows.push(row(
            "begin_update_with_sum_squares",
            "no sum with a non-finite check",
            Invalid("sum_squares"),
            |f| {
                f.opt
                    .begin_update_with_sum_squares(None, |_| None)
                    .map(|_| ())
            },
        ));
    }

    // Enormous lengths (2^33 elements), refused before anything is read.
    rows.extend([
        row(
            "update",
            "param 0 of 2^33 elements",
            Length("param buffer 0"),
            |f| {
                let Some(mut h) = Huge::new() else {
                    return Err(Error::LengthMismatch {
                        what: "param buffer 0 (mmap unavailable: row not run)".into(),
                        expected: 0,
                        got: 0,
                    });
                };
                let mut p = refs(&mut f.params);
                p[0] = h.f32s();
                f.opt.update(&mut p, &crefs(&f.grads)).map(|_| ())
            },
        ),
        row(
            "update",
            "grad 1 of 2^33 elements",
            Length("grad buffer 1"),
            |f| {
                let Some(mut h) = Huge::new() else {
                    return Err(Error::LengthMismatch {
                        what: "grad buffer 1 (mmap unavailable: row not run)".into(),
                        expected: 0,
                        got: 0,
                    });
                };
                let mut g = crefs(&f.grads);
                g[1] = h.f32s();
                f.opt.update(&mut refs(&mut f.params), &g).map(|_| ())
            },
        ),
        row(
            "begin_update",
            "grad 0 of 2^33 elements",
            Length("grad buffer 0"),
            |f| {
                let Some(mut h) = Huge::new() else {
                    return Err(Error::LengthMismatch {
                        what: "grad buffer 0 (mmap unavailable: row not run)".into(),
                        expected: 0,
                        got: 0,
                    });
                };
                let mut g = crefs(&f.grads);
                g[0] = h.f32s();
                f.opt.begin_update(&g).map(|_| ())
            },
        ),
        row(
            "sum_squares_partials",
            "out of 2^32 doubles",
            Length("partials"),
            |f| {
                let Some(mut h) = Huge::new() else {
                    return Err(Error::LengthMismatch {
                        what: "partials (mmap unavailable: row not run)".into(),
                        expected: 0,
                        got: 0,
                    });
                };
                f.opt.sum_squares_partials(&crefs(&f.grads), h.f64s())
            },
        ),
        row(
            "reset",
            "param 2 of 2^33 elements",
            Length("param buffer 2"),
            |f| {
                let Some(mut h) = Huge::new() else {
                    return Err(Error::LengthMismatch {
                        what: "param buffer 2 (mmap unavailable: row not run)".into(),
                        expected: 0,
                        got: 0,
                    });
                };
                let mut p = crefs(&f.params);
                p[2] = h.f32s();
                f.opt.reset(&p)
            },
        ),
        row(
            "Step::apply",
            "param of 2^33 elements",
            Length("grad"),
            |f| {
                let Some(mut h) = Huge::new() else {
                    return Err(Error::LengthMismatch {
                        what: "grad (mmap unavailable: row not run)".into(),
                        expected: 0,
                        got: 0,
                    });
                };
                let step = f.opt.begin_update(&crefs(&f.grads))?.unwrap();
                let st = f.opt.states_mut().next().unwrap();
                step.apply(h.f32s(), &f.grads[0], st)
            },
        ),
    ]);

    // Checkpoints: damaged, crafted, mismatched.
    let raw: [RawEdit; 11] = [
        ("empty", Corrupt, |b| b.clear()),
        ("35 bytes", Corrupt, |b| b.truncate(35)),
        ("one byte short", Corrupt, |b| {
            b.pop();
        }),
        ("one byte extra", Corrupt, |b| b.push(0)),
        ("bad magic", Corrupt, |b| b[0] = b'G'),
        ("format version 2", Unsupported, |b| b[8] = 2),
        ("format version 0", Unsupported, |b| b[8] = 0),
        ("big-endian byte-order mark", Corrupt, |b| {
            b[12..16].copy_from_slice(&0x0A0B_0C0Du32.to_be_bytes())
        }),
        ("total length field off by one", Corrupt, |b| b[16] ^= 1),
        ("one bit flipped in the state", Corrupt, |b| {
            let n = b.len();
            b[n - 9] ^= 0x10;
        }),
        ("checksum flipped", Corrupt, |b| {
            let n = b.len();
            b[n - 1] ^= 0x80;
        }),
    ];
    for (case, want, edit) in raw {
        rows.push(row("load", case, want, move |f| {
            let mut b = f.other_state.clone();
            edit(&mut b);
            f.opt.load(&b)
        }));
    }
    let crafted_rows: [CraftedEdit; 8] = [
        ("configuration length u64::MAX", Corrupt, |b, _| {
            put_u64(b, 32, u64::MAX)
        }),
        (
            "configuration length one short",
            Invalid("checkpoint"),
            |b, _| {
                let c = u64::from_le_bytes(b[32..40].try_into().unwrap());
                put_u64(b, 32, c - 1)
            },
        ),
        (
            "a configuration field changed",
            Invalid("checkpoint"),
            |b, _| b[44] ^= 0x01,
        ),
        ("buffer count u64::MAX", Corrupt, |b, at| {
            put_u64(b, at + BUFFERS, u64::MAX)
        }),
        ("buffer count 2", Length("number of buffers"), |b, at| {
            put_u64(b, at + BUFFERS, 2)
        }),
        (
            "buffer 0 length 6",
            Length("buffer 0 in the checkpoint"),
            |b, at| put_u64(b, at + BUFFERS + 8, 6),
        ),
        ("buffer 0 state flags 0xff", Corrupt, |b, at| {
            b[at + BUFFERS + 16] = 0xff
        }),
        ("four bytes after the last buffer", Corrupt, |b, _| {
            let n = b.len();
            b.splice(n - 4..n - 4, [0u8; 4]);
        }),
    ];
    for (case, want, edit) in crafted_rows {
        rows.push(row("load", format!("crafted: {case}"), want, move |f| {
            f.opt.load(&crafted(&f.other_state, edit))
        }));
    }
    if matches!(cfg.lr, Schedule::CosineAnnealingWarmRestarts { .. }) {
        for (case, t_cur, t_i) in [("t_cur = t_i", 3u64, 3u64), ("t_i = 0", 0, 0)] {
            rows.push(row(
                "load",
                format!("crafted: warm restarts {case}"),
                Corrupt,
                move |f| {
                    f.opt.load(&crafted(&f.other_state, |b, at| {
                        put_u64(b, at + 24, t_cur);
                        put_u64(b, at + 32, t_i);
                    }))
                },
            ));
        }
    }
    if cfg.lr.is_metric_driven() {
        for (case, lr, best) in [
            ("NaN learning rate", f64::NAN, 1.0),
            ("negative learning rate", -0.5, 1.0),
            ("infinite learning rate", f64::INFINITY, 1.0),
            ("NaN best", 0.1, f64::NAN),
        ] {
            rows.push(row(
                "load",
                format!("crafted: plateau {case}"),
                Corrupt,
                move |f| {
                    f.opt.load(&crafted(&f.other_state, |b, at| {
                        put_u64(b, at + 40, lr.to_bits());
                        put_u64(b, at + 48, best.to_bits());
                    }))
                },
            ));
        }
    }
    rows.push(row(
        "load",
        "another base optimizer's checkpoint",
        Invalid("checkpoint"),
        |f| {
            let other = Config {
                base: match f.cfg.base {
                    Base::Sgd { .. } => Base::adam(),
                    _ => Base::sgd(),
                },
                ..f.cfg.clone()
            };
            f.opt.load(&registered(&other, &f.params).save())
        },
    ));
    rows.push(row(
        "load",
        "another learning rate's checkpoint",
        Invalid("checkpoint"),
        |f| {
            let other = Config {
                lr: Schedule::fixed(0.123),
                ..f.cfg.clone()
            };
            f.opt.load(&registered(&other, &f.params).save())
        },
    ));
    rows.push(row(
        "load",
        "a checkpoint with other buffer lengths",
        Length("buffer 1 in the checkpoint"),
        |f| {
            let mut p = f.params.clone();
            p[1].pop();
            f.opt.load(&registered(&f.cfg, &p).save())
        },
    ));

    // Files.
    let missing = dir.join("no-such-file");
    let garbage = dir.join("garbage");
    std::fs::write(
        &garbage,
        b"not a checkpoint at all, but long enough to have a header",
    )
    .unwrap();
    let dir_path = dir.to_path_buf();
    rows.extend([
        row("load_file", "a missing file", Io, {
            let p = missing.clone();
            move |f| f.opt.load_file(&p)
        }),
        row("load_file", "a directory", Io, {
            let p = dir_path.clone();
            move |f| f.opt.load_file(&p)
        }),
        row("load_file", "a file of garbage", Corrupt, {
            let p = garbage.clone();
            move |f| f.opt.load_file(&p)
        }),
        row("save_file", "an empty path", Invalid("path"), |f| {
            f.opt.save_file("")
        }),
        row("save_file", "the root directory", Invalid("path"), |f| {
            f.opt.save_file("/")
        }),
        row("save_file", "in a missing directory", Io, {
            let p = missing.join("ckpt");
            move |f| f.opt.save_file(&p)
        }),
        row("save_file", "over a directory", Io, {
            let p = dir_path.clone();
            move |f| f.opt.save_file(&p)
        }),
        row("save_file", "a path with a NUL byte", Invalid("path"), {
            let p = dir_path.join("a\0b");
            move |f| f.opt.save_file(&p)
        }),
    ]);

    // The stateless kernels (caller-owned buffers `extra`: param, grad, m, v, v_max, slow).
    let plan = Plan {
        clip_scale: Some(0.5),
        clip_value: Some(1.0),
        weight_decay: Some(0.01),
        rule: Rule::for_step(
            &Base::Adam {
                b1: 0.9,
                b2: 0.999,
                eps: 1e-8,
                amsgrad: true,
            },
            3,
            0.01,
        ),
        sync_alpha: Some(0.5),
    };
    for (k, what) in [
        (1, "grad"),
        (2, "m (first moment"),
        (3, "v (second moment)"),
        (4, "v_max"),
        (5, "slow weights"),
    ] {
        for (case, cut) in [("one shorter", 1usize), ("empty", 8)] {
            rows.push(row(
                "kernels::apply",
                format!("{what} {case}"),
                Length(what),
                move |f| {
                    let [p, g, m, v, x, s] = &mut f.extra[..] else {
                        unreachable!()
                    };
                    let mut bufs = [&mut m[..], &mut v[..], &mut x[..], &mut s[..]];
                    let mut g: &[f32] = g;
                    if k == 1 {
                        g = &g[cut..];
                    } else {
                        let b = std::mem::take(&mut bufs[k - 2]);
                        bufs[k - 2] = &mut b[cut..];
                    }
                    let [m, v, x, s] = bufs;
                    kernels::apply(
                        Tier::Scalar,
                        &plan,
                        Buffers {
                            param: p,
                            grad: g,
                            m,
                            v,
                            v_max: x,
                            slow: s,
                        },
                    )
                },
            ));
        }
    }
    rows.push(row(
        "kernels::apply",
        "param of 2^33 elements",
        Length("grad"),
        move |f| {
            let Some(mut h) = Huge::new() else {
                return Err(Error::LengthMismatch {
                    what: "grad (mmap unavailable: row not run)".into(),
                    expected: 0,
                    got: 0,
                });
            };
            let [_, g, m, v, x, s] = &mut f.extra[..] else {
                unreachable!()
            };
            let b = Buffers {
                param: h.f32s(),
                grad: g,
                m,
                v,
                v_max: x,
                slow: s,
            };
            kernels::apply(Tier::Scalar, &plan, b)
        },
    ));
    for n in [0usize, 2, 1 << 20] {
        rows.push(row(
            "kernels::sum_squares_partials",
            format!("{n} partials for 8 elements"),
            Length("partials"),
            move |f| {
                let mut out = vec![0.0; n];
                kernels::sum_squares_partials(Tier::Scalar, &f.extra[1], &mut out)
            },
        ));
    }
    let ops: Vec<(String, Op, Expect)> = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY]
        .into_iter()
        .map(|s| (format!("scale {s}"), Op::Scale(s), Invalid("scale")))
        .chain(
            [f32::NAN, -1.0, f32::NEG_INFINITY, -1e-45]
                .into_iter()
                .map(|c| {
                    (
                        format!("clip_value {c}"),
                        Op::ClipValue(c),
                        Invalid("clip_value"),
                    )
                }),
        )
        .chain(
            [f32::NAN, -0.1, 1.5, f32::INFINITY, -1e-45]
                .into_iter()
                .map(|a| (format!("sync alpha {a}"), Op::Sync(a), Invalid("alpha"))),
        )
        .collect();
    for (case, op, want) in ops {
        for tier in [Tier::Scalar, Tier::best()] {
            rows.push(row(
                "kernels::apply_op",
                format!("{case} ({tier})"),
                want.clone(),
                move |f| {
                    let (a, b) = f.extra.split_at_mut(5);
                    kernels::apply_op(tier, op, &mut a[0], &mut b[0])
                },
            ));
        }
    }
    rows.push(row(
        "kernels::apply_op",
        "sync with a shorter y",
        Length("slow weights"),
        |f| {
            let (a, b) = f.extra.split_at_mut(5);
            kernels::apply_op(Tier::Scalar, Op::Sync(0.5), &mut a[0], &mut b[0][1..])
        },
    ));
    rows.push(row(
        "kernels::apply_op",
        "sync with y of 2^33 elements",
        Length("slow weights"),
        |f| {
            let Some(mut h) = Huge::new() else {
                return Err(Error::LengthMismatch {
                    what: "slow weights (mmap unavailable: row not run)".into(),
                    expected: 0,
                    got: 0,
                });
            };
            kernels::apply_op(Tier::Scalar, Op::Sync(0.5), &mut f.extra[0], h.f32s())
        },
    ));
    rows
}

/// The configurations the call table runs on: every base, every state array, schedules with
/// extra state, all three policies.
fn call_configs() -> Vec<Config> {
    vec![
        Config::with_schedule(
            Base::Adam {
                b1: 0.9,
                b2: 0.99,
                eps: 1e-8,
                amsgrad: true,
            },
            Schedule::cosine_annealing_warm_restarts(0.01, 2, 2, 1e-4),
        )
        .lookahead(2, 0.5)
        .clip_norm(1.0)
        .clip_value(0.5)
        .weight_decay(0.01)
        .nonfinite(NonFinitePolicy::Error),
        Config::with_schedule(
            Base::Sgd {
                momentum: 0.9,
                dampening: 0.1,
                nesterov: false,
            },
            Schedule::reduce_on_plateau(0.1),
        )
        .lookahead(3, 0.3),
        Config::with_schedule(Base::radam(), Schedule::one_cycle(0.05, 30))
            .nonfinite(NonFinitePolicy::Propagate)
            .clip_norm(0.5),
        Config::new(Base::adamw(), 1e-3).schedule_mode(ScheduleMode::Manual),
    ]
}

/// Temporary directory removed on drop.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir(tag: &str) -> TempDir {
    let d = std::env::temp_dir().join(format!("flatopt-hostile-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    TempDir(d)
}

/// Every row of the call table on every configuration: the documented error, and nothing
/// changed (checkpoint bytes, parameters, caller buffers, tier, threads); afterwards the
/// optimizer still gives the results of one that never saw the refused calls.
#[test]
fn hostile_calls_change_nothing() {
    let dir = temp_dir("calls");
    let mut count = 0;
    let mut skipped_mmap = 0;
    // Under Miri (scripts/miri.sh), two of the configurations: it is a million times slower.
    let configs = call_configs();
    let configs = if cfg!(miri) {
        &configs[..2]
    } else {
        &configs[..]
    };
    for cfg in configs {
        let mut f = fixture(cfg);
        let rows = call_rows(cfg, &dir.0);
        for r in &rows {
            let before = digest(&f);
            let ctx = format!("{} / {}: {}", cfg.base.name(), r.entry, r.case);
            let result = (r.run)(&mut f);
            if let Err(Error::LengthMismatch { what, .. }) = &result {
                if what.contains("mmap unavailable") {
                    skipped_mmap += 1;
                    continue;
                }
            }
            check_error(result, &r.expect, &ctx);
            assert!(
                digest(&f) == before,
                "{ctx}: the refused call changed something"
            );
            count += 1;
        }
        // No temporary files left behind by the refused saves.
        let left: Vec<_> = std::fs::read_dir(&dir.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "garbage")
            .collect();
        assert!(left.is_empty(), "files left by refused saves: {left:?}");
        // The run continues exactly as an undisturbed one.
        let mut clean = fixture(cfg);
        for _ in 0..3 {
            f.opt
                .update(&mut refs(&mut f.params), &crefs(&f.grads))
                .unwrap();
            clean
                .opt
                .update(&mut refs(&mut clean.params), &crefs(&clean.grads))
                .unwrap();
        }
        assert!(digest(&f) == digest(&clean), "{:?}: diverged", cfg.base);
    }
    if skipped_mmap > 0 {
        println!("{skipped_mmap} enormous-length rows not run: mmap of 32 GiB refused");
    }
    println!("hostile inputs (Rust API), calls on an optimizer: {count}");
    assert!(count >= configs.len() * 90, "{count}");
}

/// Wrong call order before registration, begin twice, finishing a step twice.
#[test]
fn wrong_call_order() {
    use Expect::*;
    let mut count = 0;
    for cfg in call_configs() {
        let mut opt = Optimizer::new(cfg.clone()).unwrap();
        let fresh = opt.save();
        let p = vec![vec![1.0f32; 4]];
        let mut pm = p.clone();
        let other = registered(&cfg, &p).save();
        let calls: Vec<Call> = vec![
            (
                "update, nothing registered",
                Box::new(|o: &mut Optimizer| o.update(&mut [], &[]).map(|_| ())),
            ),
            (
                "update with buffers before register",
                Box::new(move |o: &mut Optimizer| {
                    let mut q = vec![1.0f32; 4];
                    o.update(&mut [&mut q], &[&[0.5; 4]]).map(|_| ())
                }),
            ),
            (
                "update_with_sum_squares before register",
                Box::new(|o: &mut Optimizer| {
                    o.update_with_sum_squares(&mut [], &[], 1.0).map(|_| ())
                }),
            ),
            (
                "begin_update before register",
                Box::new(|o: &mut Optimizer| o.begin_update(&[]).map(|_| ())),
            ),
            (
                "begin_update_with_sum_squares before register",
                Box::new(|o: &mut Optimizer| {
                    o.begin_update_with_sum_squares(Some(1.0), |_| None)
                        .map(|_| ())
                }),
            ),
            (
                "reset before register",
                Box::new(|o: &mut Optimizer| o.reset(&[])),
            ),
            (
                "load before register",
                Box::new(move |o: &mut Optimizer| o.load(&other)),
            ),
            (
                "sum_squares_partials before register",
                Box::new(|o: &mut Optimizer| o.sum_squares_partials(&[], &mut [])),
            ),
        ];
        for (what, call) in &calls {
            check_error(call(&mut opt), &State, what);
            assert_eq!(opt.save(), fresh, "{what} changed the optimizer");
            assert_eq!(opt.buffer_lens(), &[] as &[usize]);
            count += 1;
        }
        // Begin twice: both steps are for update 1; the second one finished is refused.
        opt.register(&crefs(&p)).unwrap();
        let g = [0.25f32; 4];
        let a = opt.begin_update(&[&g]).unwrap().unwrap();
        let b = opt.begin_update(&[&g]).unwrap().unwrap();
        assert_eq!((a.number(), b.number()), (1, 1));
        for st in opt.states_mut() {
            a.apply(&mut pm[0], &g, st).unwrap();
        }
        opt.finish_update(a).unwrap();
        let after = opt.save();
        check_error(
            opt.finish_update(b),
            &State,
            "finish_update of the second begun step",
        );
        check_error(
            opt.finish_update(a),
            &State,
            "finish_update of a step twice",
        );
        assert_eq!(
            opt.save(),
            after,
            "refused finish_update changed the optimizer"
        );
        count += 2;
    }
    println!("hostile inputs (Rust API), call order: {count}");
}

/// Schedule states: a bad metric leaves the state unchanged.
#[test]
fn hostile_schedule_metric() {
    let s = Schedule::reduce_on_plateau(0.1);
    let mut st = ScheduleState::new(&s);
    st.step_metric(&s, 1.0).unwrap();
    for m in [f64::NAN, -f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let before = st.clone();
        check_error(st.step_metric(&s, m), &Expect::Invalid("metric"), "metric");
        assert_eq!(st, before);
    }
    let other = Schedule::fixed(0.1);
    let before = ScheduleState::new(&other);
    let mut st = before.clone();
    check_error(
        st.step_metric(&other, 1.0),
        &Expect::State,
        "metric on a fixed rate",
    );
    assert_eq!(st, before);
    println!("hostile inputs (Rust API), schedule state: 5");
}

// ---------------------------------------------------------------------------------------------
// Non-finite gradients.

/// The skipped-updates counter in a checkpoint (so that two checkpoints can be compared on
/// every other byte).
fn with_skipped(bytes: &[u8], skipped: u64) -> Vec<u8> {
    crafted(bytes, |b, at| put_u64(b, at + 8, skipped))
}

fn skipped_of(bytes: &[u8]) -> u64 {
    let c = u64::from_le_bytes(bytes[32..40].try_into().unwrap()) as usize;
    u64::from_le_bytes(bytes[40 + c + 8..40 + c + 16].try_into().unwrap())
}

/// Configurations whose every part depends on the step counter: bias correction (Adam family),
/// momentum's first step, Lookahead sync timing (k = 3), and schedules with state.
fn timing_configs() -> Vec<Config> {
    let schedules = [
        Schedule::cosine_annealing_warm_restarts(0.02, 2, 2, 1e-3),
        Schedule::one_cycle(0.05, 12),
        Schedule::multi_step(0.02, vec![2, 4, 5], 0.5),
        Schedule::Cyclic {
            base: 0.001,
            max_lr: 0.03,
            step_size_up: 2,
            step_size_down: 3,
            mode: CyclicMode::Triangular2,
            gamma: 1.0,
        },
        Schedule::reduce_on_plateau(0.02),
    ];
    let bases = [
        Base::Adam {
            b1: 0.8,
            b2: 0.9,
            eps: 1e-8,
            amsgrad: true,
        },
        Base::momentum(0.9, true),
        Base::radam(),
        Base::adamw(),
    ];
    let mut out = Vec::new();
    for (i, s) in schedules.iter().enumerate() {
        for (j, b) in bases.iter().enumerate() {
            let mut c = Config::with_schedule(*b, s.clone()).lookahead(3, 0.5);
            if (i + j) % 2 == 0 {
                c = c.clip_norm(0.3);
            }
            out.push(c);
        }
    }
    out
}

/// How a run performs one update.
#[derive(Clone, Copy, Debug)]
enum Path {
    Update,
    /// `update_with_sum_squares` with the sum computed from the block partials.
    SumSquares,
    /// `begin_update`, `Step::apply` per buffer, `finish_update`.
    ThreePhase,
}

fn one_update(
    opt: &mut Optimizer,
    params: &mut [Vec<f32>],
    grads: &[Vec<f32>],
    path: Path,
) -> Result<Outcome, Error> {
    let g = crefs(grads);
    match path {
        Path::Update => opt.update(&mut refs(params), &g),
        Path::SumSquares => {
            let mut partials = vec![0.0; opt.sum_squares_block_count()];
            opt.sum_squares_partials(&g, &mut partials)?;
            let sum: f64 = partials.iter().sum();
            opt.update_with_sum_squares(&mut refs(params), &g, sum)
        }
        Path::ThreePhase => match opt.begin_update(&g)? {
            Err(skipped) => Ok(skipped),
            Ok(step) => {
                for ((p, g), st) in params.iter_mut().zip(&g).zip(opt.states_mut()) {
                    step.apply(p, g, st)?;
                }
                let (n, synced) = (step.number(), step.syncs());
                opt.finish_update(step)?;
                Ok(Outcome::Applied { step: n, synced })
            }
        },
    }
}

/// A skipped update (Skip and Error policies, three update paths) changes no byte of the
/// checkpoint or the parameters except the skipped counter, which goes up by one; the run then
/// continues exactly as one that never saw the bad gradients (same bias correction, sync timing
/// and schedule state: every byte of the final checkpoint but the counter). The report names the
/// first non-finite value by buffer (registration order), then index, with its bits.
#[test]
fn skipped_updates_change_nothing_and_keep_timing() {
    let lens = [9usize, 40, 3];
    let steps = 9;
    let grads_of = |s: usize| -> Vec<Vec<f32>> {
        lens.iter()
            .enumerate()
            .map(|(b, &n)| vals(n, 3 * s + b).iter().map(|x| x * 0.3).collect())
            .collect()
    };
    // Bad gradients before steps 2 (so that update 3, a sync, comes right after) and 5 (twice).
    // The first bad value by buffer then index is buffer 1, index 7 (buffer 1 index 30 and
    // buffer 2 index 0 come later in that order).
    let bad_before = [2usize, 5, 5];
    let poisons = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -f32::NAN];
    let mut checked = 0;
    for cfg in timing_configs() {
        for policy in [NonFinitePolicy::Skip, NonFinitePolicy::Error] {
            for path in [Path::Update, Path::SumSquares, Path::ThreePhase] {
                let cfg = cfg.clone().nonfinite(policy);
                let init: Vec<Vec<f32>> = lens.iter().map(|&n| vals(n, n)).collect();
                let mut clean_p = init.clone();
                let mut clean = registered(&cfg, &init);
                let mut p = init.clone();
                let mut opt = registered(&cfg, &init);
                let metric = cfg.lr.is_metric_driven();
                let mut skips = 0u64;
                let mut bad_iter = 0;
                for s in 0..steps {
                    while bad_iter < bad_before.len() && bad_before[bad_iter] == s {
                        let poison = poisons[(bad_iter + checked) % poisons.len()];
                        let mut g = grads_of(s);
                        g[1][30] = f32::NAN;
                        g[2][0] = f32::INFINITY;
                        g[1][7] = poison;
                        let before = opt.save();
                        let p_before: Vec<Vec<u32>> = p
                            .iter()
                            .map(|b| b.iter().map(|x| x.to_bits()).collect())
                            .collect();
                        let r = one_update(&mut opt, &mut p, &g, path);
                        let ctx = format!("{cfg:?} {path:?} bad update {bad_iter}");
                        let (buffer, index, value, shown) = match (&r, policy) {
                            (
                                Ok(Outcome::Skipped {
                                    buffer,
                                    index,
                                    value,
                                }),
                                NonFinitePolicy::Skip,
                            ) => (*buffer, *index, *value, None),
                            (
                                Err(
                                    e @ Error::NonFinite {
                                        buffer,
                                        index,
                                        value,
                                    },
                                ),
                                NonFinitePolicy::Error,
                            ) => (*buffer, *index, *value, Some(e.to_string())),
                            _ => panic!("{ctx}: got {r:?}"),
                        };
                        assert_eq!((buffer, index), (1, 7), "{ctx}: reported position");
                        assert_eq!(value.to_bits(), poison.to_bits(), "{ctx}: reported value");
                        if let Some(msg) = shown {
                            assert!(
                                msg.contains("buffer 1") && msg.contains("index 7"),
                                "{ctx}: message {msg:?}"
                            );
                        }
                        skips += 1;
                        let after = opt.save();
                        assert_eq!(skipped_of(&after), skipped_of(&before) + 1, "{ctx}");
                        assert_eq!(
                            with_skipped(&after, 0),
                            with_skipped(&before, 0),
                            "{ctx}: a skipped update changed a byte of the checkpoint"
                        );
                        let p_after: Vec<Vec<u32>> = p
                            .iter()
                            .map(|b| b.iter().map(|x| x.to_bits()).collect())
                            .collect();
                        assert_eq!(p_after, p_before, "{ctx}: params changed");
                        bad_iter += 1;
                    }
                    let g = grads_of(s);
                    let a = one_update(&mut opt, &mut p, &g, path).unwrap();
                    let b = clean.update(&mut refs(&mut clean_p), &crefs(&g)).unwrap();
                    assert_eq!(a, b, "{cfg:?} {path:?}: outcome of update {s}");
                    if metric {
                        let m = 1.0 / (1.0 + (s % 3) as f64);
                        opt.step_schedule_metric(m).unwrap();
                        clean.step_schedule_metric(m).unwrap();
                    }
                }
                assert_eq!(opt.skipped_count(), skips);
                assert_eq!(clean.skipped_count(), 0);
                assert_eq!(
                    with_skipped(&opt.save(), 0),
                    clean.save(),
                    "{cfg:?} {path:?}: the skipped updates shifted the run"
                );
                for (a, b) in p.iter().zip(&clean_p) {
                    assert_eq!(
                        a.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                        b.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                        "{cfg:?} {path:?}: params"
                    );
                }
                checked += 1;
            }
        }
    }
    println!(
        "non-finite: {checked} runs with {} skipped updates each",
        bad_before.len()
    );
    assert_eq!(checked, 20 * 2 * 3);
}

/// A non-finite sum of squares supplied by the caller (another shard's gradients) while this
/// process's gradients are finite: skipped with buffer and index `usize::MAX`, and the message
/// says where the value is.
#[test]
fn non_finite_supplied_sum_is_reported_as_another_shard() {
    for policy in [NonFinitePolicy::Skip, NonFinitePolicy::Error] {
        for sum in [f64::NAN, f64::INFINITY] {
            let cfg = Config::new(Base::adam(), 1e-2)
                .lookahead(2, 0.5)
                .nonfinite(policy);
            let mut p = vec![vals(6, 1)];
            let g = vec![vals(6, 2)];
            let mut opt = registered(&cfg, &p);
            let before = opt.save();
            let r = opt.update_with_sum_squares(&mut refs(&mut p), &crefs(&g), sum);
            match (policy, &r) {
                (
                    NonFinitePolicy::Skip,
                    Ok(Outcome::Skipped {
                        buffer: usize::MAX,
                        index: usize::MAX,
                        ..
                    }),
                ) => {}
                (
                    NonFinitePolicy::Error,
                    Err(
                        e @ Error::NonFinite {
                            buffer: usize::MAX,
                            index: usize::MAX,
                            ..
                        },
                    ),
                ) => assert!(e.to_string().contains("another shard"), "{e}"),
                _ => panic!("{policy:?} {sum}: {r:?}"),
            }
            assert_eq!(with_skipped(&opt.save(), 0), with_skipped(&before, 0));
            assert_eq!(opt.skipped_count(), 1);
            assert_eq!(p[0], vals(6, 1));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The C ABI handle shared between threads.

/// A handle pointer that may cross threads (misusing it is the point).
#[derive(Clone, Copy)]
struct SharedHandle(*mut flatopt::ffi::flatopt_optimizer);
// SAFETY: the library detects and refuses conflicting concurrent use of a handle.
unsafe impl Send for SharedHandle {}
// SAFETY: as above.
unsafe impl Sync for SharedHandle {}

impl SharedHandle {
    fn ptr(&self) -> *mut flatopt::ffi::flatopt_optimizer {
        self.0
    }
}

/// A C handle (Lookahead(Adam), clip by norm) over `p` with gradient `g`.
fn c_handle(p: &mut [f32], g: &[f32]) -> SharedHandle {
    use flatopt::ffi::*;
    // SAFETY: plain C-ABI use with valid structs and live buffers that outlive the handle.
    unsafe {
        let mut cfg = std::mem::zeroed::<flatopt_config>();
        assert_eq!(
            flatopt_config_init(&mut cfg, std::mem::size_of::<flatopt_config>()),
            flatopt_status::FLATOPT_OK
        );
        cfg.lookahead = 1;
        cfg.sync_period = 2;
        cfg.grad_clip_norm = 1.0;
        cfg.simd_tier = flatopt_simd_tier::FLATOPT_SIMD_SCALAR as u32;
        let mut h = std::ptr::null_mut();
        assert_eq!(
            flatopt_optimizer_new(&cfg, &mut h),
            flatopt_status::FLATOPT_OK
        );
        assert_eq!(
            flatopt_optimizer_add_param(h, p.as_mut_ptr(), g.as_ptr(), p.len()),
            flatopt_status::FLATOPT_OK
        );
        SharedHandle(h)
    }
}

/// Hostile use of one C handle from two threads: conflicting calls are refused with
/// `FLATOPT_ERR_BUSY` (never a data race), accepted steps are counted once, and the split step
/// (`begin_step`, `step_range` on disjoint ranges from two threads, `end_step`) equals a plain
/// step; a second `begin_step` and a range outside the buffers are refused. Small, so that it
/// also runs under Miri (`scripts/miri.sh`), which checks the unsafe code of the handle for data
/// races and aliasing violations.
#[test]
fn c_handle_shared_between_threads() {
    use flatopt::ffi::flatopt_status::*;
    use flatopt::ffi::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    let n = 48;
    let mut p = vals(n, 1);
    let g = vals(n, 2);
    let mut p_ref = p.clone();
    let h = c_handle(&mut p, &g);
    let r = c_handle(&mut p_ref, &g);
    let (ok, busy) = (AtomicU64::new(0), AtomicU64::new(0));
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                for _ in 0..6 {
                    // SAFETY: a live handle; the concurrent use is what is tested.
                    match unsafe { flatopt_optimizer_step(h.ptr()) } {
                        FLATOPT_OK => ok.fetch_add(1, Ordering::Relaxed),
                        FLATOPT_ERR_BUSY => busy.fetch_add(1, Ordering::Relaxed),
                        other => panic!("step from two threads: {other:?}"),
                    };
                }
            });
        }
    });
    let accepted = ok.into_inner();
    assert_eq!(accepted + busy.into_inner(), 12);
    let mut count = 0u64;
    // SAFETY: live handles, valid out pointers, ranges inside the registered length.
    unsafe {
        assert_eq!(
            flatopt_optimizer_step_count(h.ptr(), &mut count),
            FLATOPT_OK
        );
        assert_eq!(
            count, accepted,
            "accepted steps counted once, refused ones not at all"
        );
        for _ in 0..accepted {
            assert_eq!(flatopt_optimizer_step(r.ptr()), FLATOPT_OK);
        }
        // The split step, ranges from two threads.
        assert_eq!(
            flatopt_optimizer_step_range(h.ptr(), 0, 1),
            FLATOPT_ERR_INVALID_STATE
        );
        assert_eq!(flatopt_optimizer_begin_step(h.ptr()), FLATOPT_OK);
        assert_eq!(
            flatopt_optimizer_begin_step(h.ptr()),
            FLATOPT_ERR_INVALID_STATE
        );
        assert_eq!(flatopt_optimizer_step(h.ptr()), FLATOPT_ERR_INVALID_STATE);
        assert_eq!(
            flatopt_optimizer_step_range(h.ptr(), 0, n + 1),
            FLATOPT_ERR_INVALID_ARGUMENT
        );
        assert_eq!(
            flatopt_optimizer_step_range(h.ptr(), 5, 4),
            FLATOPT_ERR_INVALID_ARGUMENT
        );
    }
    std::thread::scope(|s| {
        for (a, b) in [(0, 17), (17, n)] {
            s.spawn(move || {
                // SAFETY: between begin_step and end_step, disjoint ranges from two threads (the
                // documented exception to one thread per handle).
                let st = unsafe { flatopt_optimizer_step_range(h.ptr(), a, b) };
                assert_eq!(st, FLATOPT_OK);
            });
        }
    });
    // SAFETY: live handles, freed once each at the end.
    unsafe {
        assert_eq!(flatopt_optimizer_end_step(h.ptr()), FLATOPT_OK);
        assert_eq!(
            flatopt_optimizer_end_step(h.ptr()),
            FLATOPT_ERR_INVALID_STATE
        );
        assert_eq!(flatopt_optimizer_step(r.ptr()), FLATOPT_OK);
        flatopt_optimizer_free(h.ptr());
        flatopt_optimizer_free(r.ptr());
    }
    assert_eq!(
        p.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        p_ref.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        "shared handle vs plain steps"
    );
}
