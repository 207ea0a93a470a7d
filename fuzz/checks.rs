//! The check functions of the fuzz targets, shared by the cargo-fuzz targets
//! (`fuzz/fuzz_targets/*.rs`, nightly, libFuzzer) and the corpus replay test
//! (`tests/fuzz_corpus.rs`, stable, part of `cargo test`), which both include this file with
//! `#[path]`. Each `check_*` function takes arbitrary bytes; it must never panic, hang or
//! allocate without bound for any input, and it panics (an assertion) when the library breaks an
//! invariant, which libFuzzer reports as a crash.
//!
//! - [`check_checkpoint_load`]: arbitrary bytes into `Optimizer::load` and
//!   `flatopt_optimizer_load` of optimizers built from a few fixed configurations.
//! - [`check_config`]: arbitrary `flatopt_config` / `flatopt_schedule` structs through
//!   `flatopt_optimizer_new`, and arbitrary Rust `Config`s through `Config::validate` and
//!   `Optimizer::new` (compared with the C ABI where the C structs can express them).
//! - [`check_step`]: updates with random sizes, values (NaN, Inf, subnormals, huge), policies,
//!   tiers, thread counts 1-2 and the begin/apply/finish split.
//!
//! [`seeds`] gives the seed inputs of each target (written to `fuzz/corpus/<target>/` by the
//! ignored test `write_seed_corpus` of `tests/fuzz_corpus.rs`).
#![allow(dead_code)]

use flatopt::engine::PARALLEL_MIN_ELEMENTS;
use flatopt::ffi::flatopt_status::{self, *};
use flatopt::ffi::*;
use flatopt::kernels;
use flatopt::schedule::{Anneal, CyclicMode, PlateauMode, ThresholdMode};
use flatopt::{
    Base, Config, Error, Lookahead, NonFinitePolicy, Optimizer, Outcome, Schedule, ScheduleMode,
    ScheduleState, Tier,
};

/// The targets, by name (the directories under `fuzz/corpus/`).
pub const TARGETS: [&str; 3] = ["checkpoint_load", "config", "step"];

/// Runs the check of `target` on `data`.
pub fn check(target: &str, data: &[u8]) {
    match target {
        "checkpoint_load" => check_checkpoint_load(data),
        "config" => check_config(data),
        "step" => check_step(data),
        other => panic!("unknown fuzz target {other}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Reading fuzz input.

/// A cursor over the fuzz input that yields zeros once the input is exhausted.
pub struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Input { data, pos: 0 }
    }
    pub fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos = self.pos.saturating_add(1);
        b
    }
    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut a = [0u8; N];
        for x in a.iter_mut() {
            *x = self.u8();
        }
        a
    }
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }
    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }
    /// `n` bytes (zero-padded past the end).
    pub fn take(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.u8()).collect()
    }
    /// Everything not read yet.
    pub fn rest(&self) -> &'a [u8] {
        self.data.get(self.pos..).unwrap_or(&[])
    }
    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }
    /// A float that is usually one of a table of interesting values (valid and invalid for the
    /// various hyperparameters), sometimes any bit pattern.
    pub fn f64v(&mut self) -> f64 {
        let b = self.u8();
        if b >= 0xF0 {
            f64::from_bits(self.u64())
        } else {
            INTERESTING_F64[b as usize % INTERESTING_F64.len()]
        }
    }
    /// An integer that is usually one of a table of interesting values, sometimes any.
    pub fn u64v(&mut self) -> u64 {
        let b = self.u8();
        if b >= 0xF0 {
            self.u64()
        } else {
            INTERESTING_U64[b as usize % INTERESTING_U64.len()]
        }
    }
}

const INTERESTING_F64: [f64; 36] = [
    0.0,
    1e-3,
    0.9,
    0.999,
    1e-8,
    0.1,
    0.5,
    1.0,
    0.01,
    2.0,
    -0.0,
    10.0,
    -1.0,
    f64::NAN,
    f64::INFINITY,
    f64::NEG_INFINITY,
    1e300,
    f64::MAX,
    f64::MIN_POSITIVE,
    5e-324,
    0.999_999_999_999_999_9,
    1e-300,
    1e38,
    3.5e38,
    0.3,
    1.5,
    25.0,
    1e4,
    -5e-324,
    1e-45,
    0.95,
    1.0 / 3.0,
    -f64::NAN,
    1e-30,
    100.0,
    0.999_999,
];

const INTERESTING_U64: [u64; 16] = [
    0,
    1,
    2,
    3,
    5,
    10,
    100,
    4096,
    u64::MAX,
    u64::MAX - 1,
    1 << 63,
    1 << 32,
    7,
    1000,
    (1 << 53) + 1,
    u32::MAX as u64,
];

/// Finite and non-finite f32 values that stress the arithmetic.
const HOSTILE_F32: [f32; 24] = [
    0.0,
    -0.0,
    1e-45,
    -1e-45,
    1.175_494_2e-38,
    -1e-40,
    1e-30,
    -1e-20,
    3.0e38,
    -3.0e38,
    f32::MAX,
    f32::MIN,
    1e19,
    -65504.0,
    1.0,
    -0.999_999_94,
    f32::INFINITY,
    f32::NEG_INFINITY,
    f32::NAN,
    -f32::NAN,
    0.5,
    -2.0,
    1e-3,
    7.0,
];

/// More NaN patterns (sign, quiet / signalling, payload), by bits.
const NAN_BITS: [u32; 4] = [0x7fc0_0000, 0xffc0_0000, 0x7fa0_0001, 0x7fff_ffff];

/// Element `i` of a value stream derived from `pool` (cycled) and a `salt`: mostly small
/// ordinary values, often values from [`HOSTILE_F32`], sometimes raw bit patterns.
fn value(pool: &[u8], salt: usize, i: usize) -> f32 {
    if pool.is_empty() {
        return ((i % 7) as f32 - 3.0) * 0.25;
    }
    let at = |k: usize| pool[(salt.wrapping_add(k)) % pool.len()];
    let k = i.wrapping_mul(5);
    let b = at(k);
    match b >> 5 {
        0..=3 => ((b & 31) as f32 - 15.5) * 0.0625 + (i % 13) as f32 * 0.001,
        4 | 5 => HOSTILE_F32[(b & 31) as usize % HOSTILE_F32.len()],
        6 => f32::from_bits(u32::from_le_bytes([
            at(k + 1),
            at(k + 2),
            at(k + 3),
            at(k + 4),
        ])),
        _ => {
            if b & 16 != 0 {
                f32::from_bits(NAN_BITS[(b & 3) as usize])
            } else {
                ((b & 15) as f32 - 7.5) * 1e-3
            }
        }
    }
}

fn values(pool: &[u8], salt: usize, n: usize) -> Vec<f32> {
    (0..n).map(|i| value(pool, salt, i)).collect()
}

// ---------------------------------------------------------------------------------------------
// Rust configurations from fuzz input, and their C form.

/// A schedule of any kind with fuzz-chosen (often invalid) hyperparameters.
pub fn decode_schedule(inp: &mut Input) -> Schedule {
    let kind = inp.u8() % 16;
    let base = inp.f64v();
    match kind {
        0 => Schedule::Fixed { lr: base },
        1 => Schedule::Constant {
            base,
            factor: inp.f64v(),
            total_iters: inp.u64v(),
        },
        2 => Schedule::Linear {
            base,
            start_factor: inp.f64v(),
            end_factor: inp.f64v(),
            total_iters: inp.u64v(),
        },
        3 => Schedule::Step {
            base,
            step_size: inp.u64v(),
            gamma: inp.f64v(),
        },
        4 => Schedule::MultiStep {
            base,
            milestones: (0..inp.u8() % 5).map(|_| inp.u64v()).collect(),
            gamma: inp.f64v(),
        },
        5 => Schedule::Exponential {
            base,
            gamma: inp.f64v(),
        },
        6 => Schedule::ExponentialDecay {
            base,
            decay_steps: inp.u64v(),
            decay_rate: inp.f64v(),
            transition_begin: inp.u64v(),
            staircase: inp.bool(),
            end_value: inp.bool().then(|| inp.f64v()),
        },
        7 => Schedule::CosineAnnealing {
            base,
            t_max: inp.u64v(),
            eta_min: inp.f64v(),
        },
        8 => Schedule::CosineAnnealingWarmRestarts {
            base,
            t_0: inp.u64v(),
            t_mult: inp.u64v(),
            eta_min: inp.f64v(),
        },
        9 => Schedule::Polynomial {
            base,
            total_iters: inp.u64v(),
            power: inp.f64v(),
        },
        10 => Schedule::Warmup {
            base,
            warmup_steps: inp.u64v(),
            start_lr: inp.f64v(),
        },
        11 => Schedule::WarmupCosine {
            base,
            warmup_steps: inp.u64v(),
            total_steps: inp.u64v(),
            start_lr: inp.f64v(),
            eta_min: inp.f64v(),
        },
        12 => Schedule::OneCycle {
            max_lr: base,
            total_steps: inp.u64v(),
            pct_start: inp.f64v(),
            div_factor: inp.f64v(),
            final_div_factor: inp.f64v(),
            anneal: if inp.bool() {
                Anneal::Linear
            } else {
                Anneal::Cos
            },
        },
        13 => Schedule::Cyclic {
            base,
            max_lr: inp.f64v(),
            step_size_up: inp.u64v(),
            step_size_down: inp.u64v(),
            mode: [
                CyclicMode::Triangular,
                CyclicMode::Triangular2,
                CyclicMode::ExpRange,
            ][inp.u8() as usize % 3],
            gamma: inp.f64v(),
        },
        14 => {
            let n = inp.u8() as usize % 5;
            Schedule::PiecewiseConstant {
                boundaries: (0..n).map(|_| inp.u64v()).collect(),
                values: (0..n + (inp.u8() % 3) as usize)
                    .map(|_| inp.f64v())
                    .collect(),
            }
        }
        _ => Schedule::ReduceOnPlateau {
            base,
            mode: if inp.bool() {
                PlateauMode::Max
            } else {
                PlateauMode::Min
            },
            factor: inp.f64v(),
            patience: inp.u64v(),
            threshold: inp.f64v(),
            threshold_mode: if inp.bool() {
                ThresholdMode::Abs
            } else {
                ThresholdMode::Rel
            },
            cooldown: inp.u64v(),
            min_lr: inp.f64v(),
        },
    }
}

/// A valid thread count of 2 (a private rayon pool), except under Miri, where it is 1: rayon's
/// crossbeam-epoch is known not to pass Miri's Stacked Borrows check
/// (crossbeam-rs/crossbeam#545), which would hide anything else.
fn pool_threads(n: usize) -> usize {
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
    let base = match b % 4 {
        0 => Base::Sgd {
            momentum: inp.f64v(),
            dampening: inp.f64v(),
            nesterov: b & 4 != 0,
        },
        1 => Base::Adam {
            b1: inp.f64v(),
            b2: inp.f64v(),
            eps: inp.f64v(),
            amsgrad: b & 4 != 0,
        },
        2 => Base::AdamW {
            b1: inp.f64v(),
            b2: inp.f64v(),
            eps: inp.f64v(),
            weight_decay: inp.f64v(),
        },
        _ => Base::RAdam {
            b1: inp.f64v(),
            b2: inp.f64v(),
            eps: inp.f64v(),
        },
    };
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
    Config {
        base,
        lr,
        schedule_mode,
        weight_decay,
        grad_clip_norm,
        grad_clip_value,
        lookahead,
        nonfinite,
        num_threads,
        tier,
    }
}

/// A Rust configuration in C form: the config struct, its schedule and the schedule's lists.
/// The pointers between them are set by [`CConfig::as_ptr`], right before use (moving the
/// struct moves its `Box`, which invalidates pointers derived from it earlier: Miri checks).
pub struct CConfig {
    pub cfg: flatopt_config,
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
        self.cfg.schedule = if self.use_schedule {
            &*self.sched
        } else {
            std::ptr::null()
        };
        &self.cfg
    }
}

fn c_base(base: &Base) -> flatopt_base_params {
    let kind = match base {
        Base::Sgd { .. } => 0,
        Base::Adam { .. } => 1,
        Base::AdamW { .. } => 2,
        Base::RAdam { .. } => 3,
    };
    // SAFETY: an all-zero flatopt_base_params is valid (integers and floats).
    let mut p: flatopt_base_params = unsafe { std::mem::zeroed() };
    // SAFETY: `p` is a valid, writable struct.
    assert_eq!(
        unsafe { flatopt_base_params_init(&mut p, kind) },
        FLATOPT_OK
    );
    match *base {
        Base::Sgd {
            momentum,
            dampening,
            nesterov,
        } => {
            p.momentum = momentum;
            p.dampening = dampening;
            p.nesterov = nesterov as u32;
        }
        Base::Adam {
            b1,
            b2,
            eps,
            amsgrad,
        } => {
            (p.b1, p.b2, p.eps) = (b1, b2, eps);
            p.amsgrad = amsgrad as u32;
        }
        Base::AdamW {
            b1,
            b2,
            eps,
            weight_decay,
        } => {
            (p.b1, p.b2, p.eps) = (b1, b2, eps);
            p.decoupled_weight_decay = weight_decay;
        }
        Base::RAdam { b1, b2, eps } => (p.b1, p.b2, p.eps) = (b1, b2, eps),
    }
    p
}

/// The C form of `cfg`, or `None` where the C structs cannot say the same thing (a clip
/// threshold of exactly 0, which C reads as "off"; an `end_value` of NaN, which C reads as
/// "none"; a Cyclic `step_size_down` of 0, which C reads as "same as up"; more than 2^32
/// threads).
pub fn to_c(cfg: &Config) -> Option<CConfig> {
    // SAFETY: all-zero is a valid value of these plain structs (NULL pointers).
    let (mut c, mut s): (flatopt_config, flatopt_schedule) =
        unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
    // SAFETY: valid, writable structs.
    unsafe {
        assert_eq!(flatopt_config_init(&mut c), FLATOPT_OK);
    }
    c.base = c_base(&cfg.base);
    let kind = match &cfg.lr {
        Schedule::Fixed { .. } => 0,
        Schedule::Constant { .. } => 1,
        Schedule::Linear { .. } => 2,
        Schedule::Step { .. } => 3,
        Schedule::MultiStep { .. } => 4,
        Schedule::Exponential { .. } => 5,
        Schedule::ExponentialDecay { .. } => 6,
        Schedule::CosineAnnealing { .. } => 7,
        Schedule::CosineAnnealingWarmRestarts { .. } => 8,
        Schedule::Polynomial { .. } => 9,
        Schedule::Warmup { .. } => 10,
        Schedule::WarmupCosine { .. } => 11,
        Schedule::OneCycle { .. } => 12,
        Schedule::Cyclic { .. } => 13,
        Schedule::PiecewiseConstant { .. } => 14,
        Schedule::ReduceOnPlateau { .. } => 15,
    };
    // SAFETY: valid, writable struct.
    assert_eq!(unsafe { flatopt_schedule_init(&mut s, kind) }, FLATOPT_OK);
    let mut milestones = Vec::new();
    let mut values = Vec::new();
    let mut use_schedule = true;
    match cfg.lr.clone() {
        Schedule::Fixed { lr } => {
            c.lr = lr;
            use_schedule = false;
        }
        Schedule::Constant {
            base,
            factor,
            total_iters,
        } => (s.base_lr, s.factor, s.period) = (base, factor, total_iters),
        Schedule::Linear {
            base,
            start_factor,
            end_factor,
            total_iters,
        } => {
            (s.base_lr, s.start_factor, s.end_factor) = (base, start_factor, end_factor);
            s.period = total_iters;
        }
        Schedule::Step {
            base,
            step_size,
            gamma,
        } => (s.base_lr, s.period, s.gamma) = (base, step_size, gamma),
        Schedule::MultiStep {
            base,
            milestones: m,
            gamma,
        } => {
            (s.base_lr, s.gamma) = (base, gamma);
            milestones = m;
        }
        Schedule::Exponential { base, gamma } => (s.base_lr, s.gamma) = (base, gamma),
        Schedule::ExponentialDecay {
            base,
            decay_steps,
            decay_rate,
            transition_begin,
            staircase,
            end_value,
        } => {
            (s.base_lr, s.period, s.decay_rate) = (base, decay_steps, decay_rate);
            (s.warmup, s.staircase) = (transition_begin, staircase as u32);
            s.end_value = match end_value {
                None => f64::NAN,
                Some(v) if v.is_nan() => return None,
                Some(v) => v,
            };
        }
        Schedule::CosineAnnealing {
            base,
            t_max,
            eta_min,
        } => (s.base_lr, s.period, s.eta_min) = (base, t_max, eta_min),
        Schedule::CosineAnnealingWarmRestarts {
            base,
            t_0,
            t_mult,
            eta_min,
        } => {
            (s.base_lr, s.period, s.t_mult, s.eta_min) = (base, t_0, t_mult, eta_min);
        }
        Schedule::Polynomial {
            base,
            total_iters,
            power,
        } => (s.base_lr, s.period, s.power) = (base, total_iters, power),
        Schedule::Warmup {
            base,
            warmup_steps,
            start_lr,
        } => (s.base_lr, s.warmup, s.start_lr) = (base, warmup_steps, start_lr),
        Schedule::WarmupCosine {
            base,
            warmup_steps,
            total_steps,
            start_lr,
            eta_min,
        } => {
            (s.base_lr, s.warmup, s.period) = (base, warmup_steps, total_steps);
            (s.start_lr, s.eta_min) = (start_lr, eta_min);
        }
        Schedule::OneCycle {
            max_lr,
            total_steps,
            pct_start,
            div_factor,
            final_div_factor,
            anneal,
        } => {
            (s.base_lr, s.period, s.pct_start) = (max_lr, total_steps, pct_start);
            (s.div_factor, s.final_div_factor) = (div_factor, final_div_factor);
            s.anneal_linear = (anneal == Anneal::Linear) as u32;
        }
        Schedule::Cyclic {
            base,
            max_lr,
            step_size_up,
            step_size_down,
            mode,
            gamma,
        } => {
            if step_size_down == 0 {
                return None;
            }
            (s.base_lr, s.max_lr, s.gamma) = (base, max_lr, gamma);
            (s.step_size_up, s.step_size_down) = (step_size_up, step_size_down);
            s.cyclic_mode = match mode {
                CyclicMode::Triangular => 0,
                CyclicMode::Triangular2 => 1,
                CyclicMode::ExpRange => 2,
            };
        }
        Schedule::PiecewiseConstant {
            boundaries,
            values: v,
        } => {
            milestones = boundaries;
            values = v;
        }
        Schedule::ReduceOnPlateau {
            base,
            mode,
            factor,
            patience,
            threshold,
            threshold_mode,
            cooldown,
            min_lr,
        } => {
            (s.base_lr, s.factor, s.patience, s.threshold) = (base, factor, patience, threshold);
            (s.cooldown, s.min_lr) = (cooldown, min_lr);
            s.plateau_mode = (mode == PlateauMode::Max) as u32;
            s.threshold_mode = (threshold_mode == ThresholdMode::Abs) as u32;
        }
    }
    c.schedule_manual = (cfg.schedule_mode == ScheduleMode::Manual) as u32;
    c.weight_decay = cfg.weight_decay;
    let clip = |x: Option<f64>| match x {
        None => Some(0.0),
        Some(0.0) => None,
        Some(v) => Some(v),
    };
    c.grad_clip_norm = clip(cfg.grad_clip_norm)?;
    c.grad_clip_value = clip(cfg.grad_clip_value)?;
    if let Some(la) = cfg.lookahead {
        (c.lookahead, c.sync_period, c.alpha) = (1, la.sync_period, la.alpha);
    }
    c.nonfinite = match cfg.nonfinite {
        NonFinitePolicy::Skip => 0,
        NonFinitePolicy::Error => 1,
        NonFinitePolicy::Propagate => 2,
    };
    c.num_threads = u32::try_from(cfg.num_threads).ok()?;
    c.simd_tier = cfg.tier.map_or(0, |t| t as u32);
    Some(CConfig {
        cfg: c,
        sched: Box::new(s),
        use_schedule,
        milestones,
        values,
    })
}

/// The status the C ABI gives for an error.
pub fn status_of(e: &Error) -> flatopt_status {
    match e {
        Error::InvalidArgument { .. } => FLATOPT_ERR_INVALID_ARGUMENT,
        Error::LengthMismatch { .. } => FLATOPT_ERR_LENGTH_MISMATCH,
        Error::NonFinite { .. } => FLATOPT_ERR_NON_FINITE,
        Error::InvalidState(_) => FLATOPT_ERR_INVALID_STATE,
        Error::Unsupported(_) => FLATOPT_ERR_UNSUPPORTED,
        Error::NullPointer { .. } => FLATOPT_ERR_NULL_POINTER,
        Error::Overlap { .. } => FLATOPT_ERR_OVERLAP,
        Error::Io(_) => FLATOPT_ERR_IO,
        Error::Corrupt(_) => FLATOPT_ERR_CORRUPT,
        Error::Busy(_) => FLATOPT_ERR_BUSY,
    }
}

fn last_message() -> String {
    // SAFETY: the library returns a NUL-terminated string in a thread-local buffer, valid until
    // the next flatopt call on this thread; it is copied at once.
    unsafe { std::ffi::CStr::from_ptr(flatopt_last_error_message()) }
        .to_string_lossy()
        .into_owned()
}

/// Owns a C handle; frees it on drop.
pub struct Handle(*mut flatopt_optimizer);

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: a live handle from flatopt_optimizer_new, freed once.
        unsafe { flatopt_optimizer_free(self.0) };
    }
}

impl Handle {
    fn new(c: &mut CConfig) -> Handle {
        let mut h = std::ptr::null_mut();
        // SAFETY: a valid config (its pointers into `c` live for the call) and out-pointer.
        let st = unsafe { flatopt_optimizer_new(c.as_ptr(), &mut h) };
        assert_eq!(st, FLATOPT_OK, "{}", last_message());
        Handle(h)
    }
    /// Registers every buffer of `params` (gradients passed per step).
    fn register(&self, params: &mut [Vec<f32>]) {
        for p in params.iter_mut() {
            // SAFETY: live handle, a live buffer that outlives the handle's use (the caller
            // keeps `params` alive and does not move its heap blocks), no gradient.
            let st = unsafe {
                flatopt_optimizer_add_param(self.0, p.as_mut_ptr(), std::ptr::null(), p.len())
            };
            assert_eq!(st, FLATOPT_OK, "{}", last_message());
        }
    }
    fn save(&self) -> Vec<u8> {
        let mut n = 0usize;
        // SAFETY: live handle, writable out.
        assert_eq!(
            unsafe { flatopt_optimizer_checkpoint_size(self.0, &mut n) },
            FLATOPT_OK
        );
        let mut buf = vec![0u8; n];
        let mut written = 0usize;
        // SAFETY: `buf` holds `n` writable bytes.
        let st = unsafe { flatopt_optimizer_save(self.0, buf.as_mut_ptr(), n, &mut written) };
        assert_eq!(st, FLATOPT_OK, "{}", last_message());
        assert_eq!(written, n);
        buf
    }
    fn load(&self, bytes: &[u8]) -> flatopt_status {
        // A non-null pointer even for an empty input (NULL is refused before the length).
        let ptr = if bytes.is_empty() {
            std::ptr::NonNull::<u8>::dangling().as_ptr().cast_const()
        } else {
            bytes.as_ptr()
        };
        // SAFETY: live handle; `ptr` holds `bytes.len()` readable bytes.
        unsafe { flatopt_optimizer_load(self.0, ptr, bytes.len()) }
    }
    fn step_with(&self, grads: &[Vec<f32>]) -> flatopt_status {
        let ptrs: Vec<*const f32> = grads.iter().map(|g| g.as_ptr()).collect();
        // SAFETY: one live gradient per registered buffer, of its length.
        unsafe { flatopt_optimizer_step_with_grads(self.0, ptrs.as_ptr(), ptrs.len()) }
    }
}

// ---------------------------------------------------------------------------------------------
// Digests.

/// Everything observable about an optimizer and its parameters, as 32-bit words.
fn digest(opt: &Optimizer, params: &[Vec<f32>]) -> Vec<u32> {
    let mut out = vec![
        opt.step_count() as u32,
        (opt.step_count() >> 32) as u32,
        opt.skipped_count() as u32,
        (opt.skipped_count() >> 32) as u32,
        opt.schedule_state().count() as u32,
        opt.current_lr().to_bits(),
    ];
    for (i, p) in params.iter().enumerate() {
        out.extend(p.iter().map(|x| x.to_bits()));
        let (m, v, x) = opt.moments(i).expect("registered buffer");
        for a in [m, v, x, opt.slow_weights(i).unwrap_or_default()] {
            out.push(a.len() as u32);
            out.extend(a.iter().map(|x| x.to_bits()));
        }
    }
    out
}

fn is_nan_bits(x: u32) -> bool {
    f32::from_bits(x).is_nan()
}

/// Equal bits, except that any NaN equals any NaN (which NaN comes out when two different NaNs
/// meet may differ by tier; positions may not).
fn assert_same_modulo_nan(a: &[u32], b: &[u32], ctx: &str) {
    assert_eq!(a.len(), b.len(), "{ctx}: digest length");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        if x != y && !(is_nan_bits(*x) && is_nan_bits(*y)) {
            panic!(
                "{ctx}: word {i} differs: {x:#010x} ({}) vs {y:#010x} ({})",
                f32::from_bits(*x),
                f32::from_bits(*y)
            );
        }
    }
}

/// An outcome as comparable data (Outcome's f32 field makes NaN unequal to itself).
fn outcome_key(r: &Result<Outcome, Error>) -> String {
    match r {
        Ok(Outcome::Applied { step, synced }) => format!("applied {step} {synced}"),
        Ok(Outcome::Skipped {
            buffer,
            index,
            value,
        }) => format!("skipped {buffer} {index} {:#x}", value.to_bits()),
        Err(Error::NonFinite {
            buffer,
            index,
            value,
        }) => format!("nonfinite {buffer} {index} {:#x}", value.to_bits()),
        Err(e) => format!("error {e}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Checkpoint byte surgery.

/// Sets the total-length field and recomputes the CRC of a would-be checkpoint (no-op if it is
/// too short to have them).
pub fn fix_length_and_crc(bytes: &mut [u8]) {
    let n = bytes.len();
    if n < 36 {
        return;
    }
    bytes[16..24].copy_from_slice(&(n as u64).to_le_bytes());
    let crc = crc32fast::hash(&bytes[..n - 4]);
    bytes[n - 4..].copy_from_slice(&crc.to_le_bytes());
}

/// Writes a valid magic, format version and byte-order mark.
fn fix_header(bytes: &mut [u8]) {
    if bytes.len() >= 16 {
        bytes[..8].copy_from_slice(b"FLATOPTC");
        bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
        bytes[12..16].copy_from_slice(&0x0A0B_0C0Du32.to_le_bytes());
    }
}

/// Offset of the schedule counter in a checkpoint.
fn schedule_offset(bytes: &[u8]) -> usize {
    let c = u64::from_le_bytes(bytes[32..40].try_into().unwrap()) as usize;
    40 + c + 16
}

/// A checkpoint with the step counter and the schedule counter replaced (CRC fixed).
pub fn with_counters(bytes: &[u8], step: Option<u64>, count: Option<u64>) -> Vec<u8> {
    let mut b = bytes.to_vec();
    let at = schedule_offset(&b);
    if let Some(s) = step {
        b[at - 16..at - 8].copy_from_slice(&s.to_le_bytes());
    }
    if let Some(c) = count {
        b[at..at + 8].copy_from_slice(&c.to_le_bytes());
    }
    fix_length_and_crc(&mut b);
    b
}

// ---------------------------------------------------------------------------------------------
// Target 1: checkpoint loading.

/// The fixed configurations the checkpoint target loads into, with their buffer lengths:
/// every base optimizer, every state array, the schedules with extra state, an empty buffer.
pub fn checkpoint_configs() -> Vec<(Config, Vec<usize>)> {
    vec![
        (
            Config::with_schedule(
                Base::Adam {
                    b1: 0.9,
                    b2: 0.99,
                    eps: 1e-8,
                    amsgrad: true,
                },
                Schedule::cosine_annealing_warm_restarts(0.01, 3, 2, 1e-4),
            )
            .lookahead(3, 0.5)
            .clip_norm(1.0)
            .clip_value(0.5)
            .weight_decay(0.01),
            vec![3, 5],
        ),
        (
            Config::with_schedule(
                Base::Sgd {
                    momentum: 0.9,
                    dampening: 0.1,
                    nesterov: false,
                },
                Schedule::reduce_on_plateau(0.1),
            ),
            vec![4],
        ),
        (
            Config::with_schedule(
                Base::radam(),
                Schedule::multi_step(0.01, vec![2, 5, 9], 0.5),
            )
            .nonfinite(NonFinitePolicy::Error),
            vec![2, 0, 1],
        ),
        (
            Config::with_schedule(
                Base::sgd(),
                Schedule::piecewise_constant(vec![3], vec![0.1, 0.01]),
            )
            .nonfinite(NonFinitePolicy::Propagate)
            .schedule_mode(ScheduleMode::Manual),
            vec![1],
        ),
        (
            Config::with_schedule(Base::adamw(), Schedule::one_cycle(0.05, 20)).lookahead(1, 1.0),
            vec![6],
        ),
    ]
}

fn initial_params(lens: &[usize], salt: usize) -> Vec<Vec<f32>> {
    lens.iter()
        .enumerate()
        .map(|(i, &n)| {
            (0..n)
                .map(|j| ((i * 31 + j * 7 + salt) % 17) as f32 * 0.125 - 1.0)
                .collect()
        })
        .collect()
}

fn finite_grads(lens: &[usize], salt: usize) -> Vec<Vec<f32>> {
    lens.iter()
        .enumerate()
        .map(|(i, &n)| {
            (0..n)
                .map(|j| ((i * 13 + j * 5 + salt) % 11) as f32 * 0.05 - 0.25)
                .collect()
        })
        .collect()
}

fn refs(p: &mut [Vec<f32>]) -> Vec<&mut [f32]> {
    p.iter_mut().map(|x| x.as_mut_slice()).collect()
}

fn crefs(p: &[Vec<f32>]) -> Vec<&[f32]> {
    p.iter().map(|x| x.as_slice()).collect()
}

fn registered(cfg: &Config, params: &[Vec<f32>]) -> Optimizer {
    let mut opt = Optimizer::new(cfg.clone()).expect("valid configuration");
    opt.register(&crefs(params)).expect("register");
    opt
}

/// A checkpoint of configuration `which` after `steps` updates (one of them skipped).
pub fn sample_checkpoint(which: usize, steps: usize) -> Vec<u8> {
    let (cfg, lens) = &checkpoint_configs()[which];
    let mut params = initial_params(lens, which);
    let mut opt = registered(cfg, &params);
    for s in 0..steps {
        let mut g = finite_grads(lens, s);
        if s == 1 && cfg.nonfinite == NonFinitePolicy::Skip {
            if let Some(x) = g.iter_mut().find(|b| !b.is_empty()) {
                x[0] = f32::NAN;
            }
        }
        let _ = opt.update(&mut refs(&mut params), &crefs(&g));
        if cfg.lr.is_metric_driven() {
            opt.step_schedule_metric(1.0 / (s as f64 + 1.0)).unwrap();
        }
        if cfg.schedule_mode == ScheduleMode::Manual {
            opt.step_schedule();
        }
    }
    opt.save()
}

/// Input: one selector byte (configuration, and whether to repair the header and the
/// length / CRC fields so that the fuzzer reaches the inner validation), then the checkpoint.
/// Checks: no panic; on refusal nothing changed (Rust and C); Rust and C agree on the status and
/// the resulting state; an accepted checkpoint re-saves to one that loads to the same state, and
/// the optimizer then steps (Rust and C bit-identically) with a finite learning rate.
pub fn check_checkpoint_load(data: &[u8]) {
    let mut inp = Input::new(data);
    let sel = inp.u8() as usize;
    let configs = checkpoint_configs();
    let which = sel % configs.len();
    let mut bytes = inp.rest().to_vec();
    match (sel / configs.len()) % 4 {
        1 => fix_length_and_crc(&mut bytes),
        2 => {
            fix_header(&mut bytes);
            fix_length_and_crc(&mut bytes);
        }
        _ => {}
    }
    let (cfg, lens) = &configs[which];
    let params = initial_params(lens, 1);
    let mut opt = registered(cfg, &params);
    let before = opt.save();
    let r = opt.load(&bytes);
    if r.is_err() {
        assert_eq!(opt.save(), before, "a refused load changed the optimizer");
    }
    if let Err(e) = &r {
        assert!(
            matches!(
                e,
                Error::Corrupt(_)
                    | Error::Unsupported(_)
                    | Error::LengthMismatch { .. }
                    | Error::InvalidArgument { .. }
            ),
            "unexpected error kind from load: {e:?}"
        );
    }

    // The same through the C ABI.
    let mut c = to_c(cfg).expect("fixed configurations are expressible in C");
    let handle = Handle::new(&mut c);
    let mut cparams = params.clone();
    handle.register(&mut cparams);
    let cbefore = handle.save();
    assert_eq!(
        cbefore, before,
        "C and Rust optimizers differ before loading"
    );
    let st = handle.load(&bytes);
    let want = match &r {
        Ok(()) => FLATOPT_OK,
        Err(e) => status_of(e),
    };
    assert_eq!(st, want, "C load status vs Rust {r:?}");
    assert_eq!(handle.save(), opt.save(), "C and Rust state after load");
    if st != FLATOPT_OK {
        assert!(!last_message().is_empty(), "refused load without a message");
    }
    if r.is_err() {
        return;
    }

    // Accepted: the re-saved checkpoint has the same length and loads to the same state.
    let saved = opt.save();
    assert_eq!(saved.len(), bytes.len(), "re-saved checkpoint length");
    let mut other = registered(cfg, &initial_params(lens, 2));
    other.load(&saved).expect("a re-saved checkpoint loads");
    assert_eq!(other.save(), saved, "load(save()) round trip");

    // The learning rate is finite and not negative for these (non-growing) schedules.
    let lr = opt.schedule_state().lr(&cfg.lr);
    assert!(
        lr.is_finite() && lr >= 0.0,
        "learning rate {lr} after loading"
    );
    // It keeps working, identically through Rust and C: an update with finite gradients is
    // applied as the next step (or refused, changing nothing, if the counter is exhausted; it
    // must not wrap), and one with a NaN is counted as skipped (same rule for that counter).
    let mut p = params.clone();
    let loaded_step = opt.step_count();
    let g = finite_grads(lens, 3);
    let digest_before = digest(&opt, &p);
    let out = opt.update(&mut refs(&mut p), &crefs(&g));
    match &out {
        Ok(Outcome::Applied { step, .. }) => assert_eq!(
            Some(*step),
            loaded_step.checked_add(1),
            "step counter after an update from a loaded step count of {loaded_step}"
        ),
        Err(_) => assert_eq!(
            digest(&opt, &p),
            digest_before,
            "refused update changed state"
        ),
        other => panic!("finite update after loading gave {other:?}"),
    }
    let st = handle.step_with(&g);
    assert_eq!(st, out.as_ref().map_or_else(status_of, |_| FLATOPT_OK));
    for (a, b) in p.iter().zip(&cparams) {
        assert_same_modulo_nan(&bits(a), &bits(b), "params after a step, Rust vs C");
    }
    if cfg.nonfinite != NonFinitePolicy::Propagate {
        let mut bad = g.clone();
        if let Some(x) = bad.iter_mut().find(|b| !b.is_empty()) {
            x[0] = f32::NAN;
            let skipped = opt.skipped_count();
            let digest_before = digest(&opt, &p);
            let out = opt.update(&mut refs(&mut p), &crefs(&bad));
            match &out {
                Ok(Outcome::Skipped { .. }) | Err(Error::NonFinite { .. }) => assert_eq!(
                    Some(opt.skipped_count()),
                    skipped.checked_add(1),
                    "skipped counter from {skipped}"
                ),
                Err(_) => assert_eq!(digest(&opt, &p), digest_before),
                other => panic!("NaN update after loading gave {other:?}"),
            }
            let st = handle.step_with(&bad);
            let want = match &out {
                Ok(Outcome::Skipped { .. }) => FLATOPT_SKIPPED,
                Ok(_) => FLATOPT_OK,
                Err(e) => status_of(e),
            };
            assert_eq!(st, want);
        }
    }
    assert_eq!(handle.save(), opt.save(), "C and Rust state after stepping");
    if cfg.lr.is_metric_driven() {
        opt.step_schedule_metric(0.5).unwrap();
        let lr = opt.schedule_state().lr(&cfg.lr);
        assert!(lr.is_finite() && lr >= 0.0, "plateau learning rate {lr}");
    }
}

fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

// ---------------------------------------------------------------------------------------------
// Target 2: configuration parsing and validation.

/// Schedules documented to grow without bound (their learning rate may overflow).
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

/// Known issue (reported, not fixed here): a learning rate (or `eta_min`, `start_lr`, ...)
/// above `f64::MAX / 2` passes validation, but the cosine schedules compute
/// `(top - eta_min) * (1 + cos) / 2`, which overflows to +inf at e = 0 (for example
/// `CosineAnnealingWarmRestarts { base: f64::MAX, .. }`; corpus files `config/lr-overflow-cosine*`).
/// Set to `true` once fixed, to check such schedules too.
const CHECK_EXTREME_LR: bool = false;

/// Whether a schedule has a learning-rate value above 1e300 (see [`CHECK_EXTREME_LR`]).
fn extreme_lr(s: &Schedule) -> bool {
    let big = |x: &f64| *x > 1e300;
    match s {
        Schedule::Fixed { lr } => big(lr),
        Schedule::Constant { base, .. }
        | Schedule::Linear { base, .. }
        | Schedule::Step { base, .. }
        | Schedule::MultiStep { base, .. }
        | Schedule::Exponential { base, .. }
        | Schedule::Polynomial { base, .. } => big(base),
        Schedule::ExponentialDecay {
            base, end_value, ..
        } => big(base) || end_value.as_ref().is_some_and(big),
        Schedule::CosineAnnealing { base, eta_min, .. }
        | Schedule::CosineAnnealingWarmRestarts { base, eta_min, .. } => big(base) || big(eta_min),
        Schedule::Warmup { base, start_lr, .. } => big(base) || big(start_lr),
        Schedule::WarmupCosine {
            base,
            start_lr,
            eta_min,
            ..
        } => big(base) || big(start_lr) || big(eta_min),
        Schedule::OneCycle { max_lr, .. } => big(max_lr),
        Schedule::Cyclic { base, max_lr, .. } => big(base) || big(max_lr),
        Schedule::PiecewiseConstant { values, .. } => values.iter().any(big),
        Schedule::ReduceOnPlateau { base, min_lr, .. } => big(base) || big(min_lr),
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

/// Arbitrary bytes as a `flatopt_config`, optionally with a `flatopt_schedule` (also arbitrary
/// bytes) whose list pointers are NULL or point to small fuzz-filled arrays (the counts are cut
/// to the arrays' sizes when the pointer is set, left arbitrary when it is NULL).
fn check_config_c_raw(inp: &mut Input) {
    let ctrl = inp.u8();
    let cfg_bytes = inp.take(std::mem::size_of::<flatopt_config>());
    let sched_bytes = inp.take(std::mem::size_of::<flatopt_schedule>());
    let milestones: Vec<u64> = (0..(inp.u8() % 9)).map(|_| inp.u64v()).collect();
    let values: Vec<f64> = (0..(inp.u8() % 9)).map(|_| inp.f64v()).collect();
    // SAFETY: the buffers hold size_of bytes of the struct; every field is an integer, a float
    // or a raw pointer, for which any bit pattern is a valid value (the pointers are replaced
    // below before the library sees them).
    let mut c: flatopt_config = unsafe { std::ptr::read_unaligned(cfg_bytes.as_ptr().cast()) };
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
    c.schedule = if ctrl & 1 != 0 { &s } else { std::ptr::null() };
    // Valid thread counts above 2 start that many threads: slow, covered by the engine tests.
    if (2..=256).contains(&c.num_threads) {
        c.num_threads = pool_threads(2) as u32;
    }
    let sentinel = std::ptr::NonNull::<flatopt_optimizer>::dangling().as_ptr();
    let mut out = sentinel;
    // SAFETY: `c` is a complete struct; its schedule pointer is NULL or `&s`, whose list
    // pointers are NULL or point to at least their counts of elements.
    let st = unsafe { flatopt_optimizer_new(&c, &mut out) };
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
            flatopt_optimizer_new(&c, std::ptr::null_mut()),
            FLATOPT_ERR_NULL_POINTER
        );
    }
}

/// A handle that was accepted must work: register, step, save, load.
fn exercise_c_handle(h: Handle) {
    let mut p = vec![vec![0.5f32, -1.0, 2.0, 0.0, 1e-3]];
    h.register(&mut p);
    let g = vec![vec![0.1f32, -0.2, 0.3, 0.0, 1.0]];
    let st = h.step_with(&g);
    assert!(
        st == FLATOPT_OK,
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
    let grows = may_grow(&cfg.lr);
    let skip = !CHECK_EXTREME_LR && extreme_lr(&cfg.lr);
    let check_lr = |st: &ScheduleState, at: &str| {
        let lr = st.lr(&cfg.lr);
        if skip {
        } else if !grows {
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
        }
    }
    // And an update runs (finite gradients: applied, whatever the policy).
    opt.load(&saved).unwrap();
    let g = vec![vec![0.1f32, 0.2, -0.3]];
    let out = opt.update(&mut refs(&mut params), &crefs(&g));
    assert!(
        matches!(out, Ok(Outcome::Applied { step: 1, .. })),
        "{out:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Target 3: stepping.

/// Buffer lengths around the vector widths and the sum-of-squares block.
const LENS: [usize; 16] = [
    0, 1, 2, 3, 7, 8, 9, 15, 16, 17, 33, 64, 4095, 4096, 4097, 8193,
];

/// How one run applies updates.
#[derive(Clone, Copy, Debug)]
enum Mode {
    Update,
    /// begin_update, Step::apply on two ranges of every buffer split at this element, finish.
    Split(usize),
}

struct Run {
    outcomes: Vec<String>,
    digests: Vec<Vec<u32>>,
    saved: Vec<u8>,
}

struct Case {
    cfg: Config,
    params: Vec<Vec<f32>>,
    grads: Vec<Vec<Vec<f32>>>,
}

fn available_tiers() -> Vec<Tier> {
    if cfg!(miri) {
        return vec![Tier::Scalar];
    }
    Tier::ALL.into_iter().filter(|t| t.is_available()).collect()
}

/// One run of every step of `case` on `tier` with `threads`, checking the per-step invariants.
fn run_case(case: &Case, tier: Tier, threads: usize, mode: Mode) -> Run {
    let cfg = case.cfg.clone().tier(tier).threads(threads);
    let ctx = format!("{tier:?}/{threads} threads/{mode:?}");
    let mut params = case.params.clone();
    let mut opt = registered(&cfg, &params);
    let mut run = Run {
        outcomes: Vec::new(),
        digests: Vec::new(),
        saved: Vec::new(),
    };
    for grads in &case.grads {
        let before = digest(&opt, &params);
        let slow_before: Vec<Vec<u32>> = (0..params.len())
            .map(|i| bits(opt.slow_weights(i).unwrap_or_default()))
            .collect();
        let step_before = opt.step_count();
        let g = crefs(grads);
        let r = match mode {
            Mode::Update => opt.update(&mut refs(&mut params), &g),
            Mode::Split(at) => split_update(&mut opt, &mut params, &g, at),
        };
        let first_bad = g
            .iter()
            .enumerate()
            .find_map(|(b, x)| kernels::first_non_finite(x).map(|(i, v)| (b, i, v)));
        let key = outcome_key(&r);
        match (cfg.nonfinite, first_bad) {
            (NonFinitePolicy::Propagate, _) | (_, None) => {
                let k = cfg.lookahead.map_or(0, |la| la.sync_period);
                let n = step_before + 1;
                let synced = k > 0 && n.is_multiple_of(k);
                assert_eq!(
                    key,
                    outcome_key(&Ok(Outcome::Applied { step: n, synced })),
                    "{ctx}"
                );
                assert_eq!(opt.step_count(), n, "{ctx}");
                assert_eq!(opt.skipped_count(), before[2] as u64, "{ctx}");
                for (i, p) in params.iter().enumerate() {
                    let slow = bits(opt.slow_weights(i).unwrap_or_default());
                    if synced {
                        assert_eq!(slow, bits(p), "{ctx}: p != s after a sync");
                    } else {
                        assert_eq!(slow, slow_before[i], "{ctx}: slow weights moved");
                    }
                }
            }
            (policy, Some((b, i, v))) => {
                let want = if policy == NonFinitePolicy::Skip {
                    Ok(Outcome::Skipped {
                        buffer: b,
                        index: i,
                        value: v,
                    })
                } else {
                    Err(Error::NonFinite {
                        buffer: b,
                        index: i,
                        value: v,
                    })
                };
                assert_eq!(key, outcome_key(&want), "{ctx}: skip report");
                let mut after = digest(&opt, &params);
                assert_eq!(after[2], before[2].wrapping_add(1), "{ctx}: skipped count");
                after[2] = before[2];
                assert_eq!(after, before, "{ctx}: a skipped update changed something");
            }
        }
        run.outcomes.push(key);
        run.digests.push(digest(&opt, &params));
    }
    if case.params.iter().map(Vec::len).sum::<usize>() < PARALLEL_MIN_ELEMENTS {
        // The final state round-trips through a checkpoint.
        run.saved = opt.save();
        let mut other = registered(&cfg, &case.params);
        other.load(&run.saved).expect("loading our own checkpoint");
        assert_eq!(other.save(), run.saved, "{ctx}: checkpoint round trip");
    }
    run
}

/// One update through begin_update / Step::apply on two ranges per buffer / finish_update.
fn split_update(
    opt: &mut Optimizer,
    params: &mut [Vec<f32>],
    grads: &[&[f32]],
    at: usize,
) -> Result<Outcome, Error> {
    let step = match opt.begin_update(grads)? {
        Err(skipped) => return Ok(skipped),
        Ok(step) => step,
    };
    for ((p, g), st) in params.iter_mut().zip(grads).zip(opt.states_mut()) {
        let mid = at.min(p.len());
        let (p0, p1) = p.split_at_mut(mid);
        let (g0, g1) = g.split_at(mid);
        let (s0, s1) = st.split_at(mid);
        step.apply(p1, g1, s1)?;
        step.apply(p0, g0, s0)?;
    }
    let synced = step.syncs();
    let number = step.number();
    opt.finish_update(step)?;
    Ok(Outcome::Applied {
        step: number,
        synced,
    })
}

/// Input: a configuration (usually valid), buffer lengths, step count, then a pool of bytes
/// from which parameters and gradients are drawn. Checks: per-step invariants of every run (the
/// outcome and skip report, a skipped update changes nothing but the counter, syncs set
/// `p = s`), and every tier, thread count and split gives the scalar single-thread results
/// (bits, NaN positions).
pub fn check_step(data: &[u8]) {
    let mut inp = Input::new(data);
    let cfg = decode_config(&mut inp, true);
    if cfg.validate().is_err() {
        return;
    }
    let shape = inp.u8();
    let nbuf = 1 + (shape % 3) as usize;
    let big = shape == 0xB7 && !cfg!(miri);
    let mut lens: Vec<usize> = (0..nbuf)
        .map(|_| {
            let b = inp.u8();
            if b & 0x80 != 0 {
                LENS[(b & 0x7f) as usize % LENS.len()]
            } else {
                b as usize
            }
        })
        .collect();
    if big {
        lens[0] = PARALLEL_MIN_ELEMENTS + 17;
    }
    if cfg!(miri) {
        // Miri is about a million times slower: short buffers, few steps.
        lens.iter_mut().for_each(|n| *n = (*n).min(40));
    }
    let total: usize = lens.iter().sum();
    let steps = 1 + (inp.u8() % if total > 4000 || cfg!(miri) { 2 } else { 5 }) as usize;
    let at = inp.u8() as usize * 3;
    let pool = inp.rest();
    let case = Case {
        params: lens
            .iter()
            .enumerate()
            .map(|(b, &n)| values(pool, b * 7919, n))
            .collect(),
        grads: (0..steps)
            .map(|s| {
                lens.iter()
                    .enumerate()
                    .map(|(b, &n)| values(pool, (s + 1) * 104_729 + b * 7919 + 1, n))
                    .collect()
            })
            .collect(),
        cfg,
    };
    let tiers = available_tiers();
    let best = *tiers.last().expect("the scalar tier at least");
    // Every tier against scalar, one thread and two, and the split update at two points. With
    // big buffers (where the pool is used), the best tier on one thread against two only
    // (tiers are compared on the small cases; scalar on 512K elements is slow).
    let (reference_tier, mut variants) = if big {
        (best, vec![(best, 2, Mode::Update)])
    } else {
        let mut v: Vec<(Tier, usize, Mode)> = tiers
            .iter()
            .filter(|&&t| t != Tier::Scalar)
            .map(|&t| (t, 1, Mode::Update))
            .collect();
        if !cfg!(miri) {
            v.push((best, 2, Mode::Update));
        }
        v.push((Tier::Scalar, 1, Mode::Split(at)));
        (Tier::Scalar, v)
    };
    if !big || at.is_multiple_of(2) {
        variants.push((best, 1, Mode::Split(at / 2 + 1)));
    }
    let reference = run_case(&case, reference_tier, 1, Mode::Update);
    for (tier, threads, mode) in variants {
        let got = run_case(&case, tier, threads, mode);
        let ctx = format!("{tier:?}/{threads} threads/{mode:?} vs {reference_tier:?}");
        assert_eq!(got.outcomes, reference.outcomes, "{ctx}: outcomes");
        for (s, (a, b)) in got.digests.iter().zip(&reference.digests).enumerate() {
            assert_same_modulo_nan(a, b, &format!("{ctx}: after step {s}"));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Seeds.

fn put_f64(out: &mut Vec<u8>, x: f64) {
    let i = INTERESTING_F64
        .iter()
        .position(|v| v.to_bits() == x.to_bits());
    match i {
        Some(i) => out.push(i as u8),
        None => {
            out.push(0xF0);
            out.extend_from_slice(&x.to_bits().to_le_bytes());
        }
    }
}

fn put_u64(out: &mut Vec<u8>, x: u64) {
    match INTERESTING_U64.iter().position(|v| *v == x) {
        Some(i) => out.push(i as u8),
        None => {
            out.push(0xF0);
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
}

/// Writes the little-endian bytes of the listed fields of `$s` (a `$T`) at their offsets into
/// `$buf` (pointers and padding stay zero).
macro_rules! put_fields {
    ($buf:expr, $at:expr, $s:expr, $T:ty, [$($f:ident),*]) => {
        $(
            let off = $at + std::mem::offset_of!($T, $f);
            let b = $s.$f.to_le_bytes();
            $buf[off..off + b.len()].copy_from_slice(&b);
        )*
    };
}

/// The bytes of a `flatopt_config` (pointer fields zero), for seeds of the raw C mode.
fn config_bytes(c: &flatopt_config) -> Vec<u8> {
    let mut buf = vec![0u8; std::mem::size_of::<flatopt_config>()];
    put_fields!(
        buf,
        0,
        c,
        flatopt_config,
        [
            struct_size,
            nonfinite,
            lr,
            schedule_manual,
            lookahead,
            sync_period,
            alpha,
            weight_decay,
            grad_clip_norm,
            grad_clip_value,
            num_threads,
            simd_tier
        ]
    );
    let at = std::mem::offset_of!(flatopt_config, base);
    put_fields!(
        buf,
        at,
        c.base,
        flatopt_base_params,
        [
            struct_size,
            kind,
            momentum,
            dampening,
            nesterov,
            amsgrad,
            b1,
            b2,
            eps,
            decoupled_weight_decay
        ]
    );
    buf
}

/// The bytes of a `flatopt_schedule` (pointer fields and padding zero).
fn schedule_bytes(s: &flatopt_schedule) -> Vec<u8> {
    let mut buf = vec![0u8; std::mem::size_of::<flatopt_schedule>()];
    put_fields!(
        buf,
        0,
        s,
        flatopt_schedule,
        [
            struct_size,
            kind,
            base_lr,
            max_lr,
            gamma,
            factor,
            start_factor,
            end_factor,
            eta_min,
            power,
            start_lr,
            decay_rate,
            end_value,
            pct_start,
            div_factor,
            final_div_factor,
            threshold,
            min_lr,
            period,
            t_mult,
            warmup,
            step_size_up,
            step_size_down,
            patience,
            cooldown,
            staircase,
            anneal_linear,
            cyclic_mode,
            plateau_mode,
            threshold_mode,
            n_milestones,
            n_values
        ]
    );
    buf
}

/// The start of a Rust-decoded configuration: base kind byte `kind` and valid hyperparameters.
fn base_seed(kind: u8) -> Vec<u8> {
    let mut s = vec![kind];
    let vals: &[f64] = match kind % 4 {
        0 => &[0.9, 0.0],
        2 => &[0.9, 0.999, 1e-8, 0.01],
        _ => &[0.9, 0.999, 1e-8],
    };
    for v in vals {
        put_f64(&mut s, *v);
    }
    s
}

/// Seed inputs of `target`: valid and slightly invalid inputs of each shape.
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    match target {
        "checkpoint_load" => {
            let n = checkpoint_configs().len();
            for which in 0..n {
                for (steps, mode) in [(0, 0), (4, 0), (7, 1), (11, 2)] {
                    let mut s = vec![(which + mode * n) as u8];
                    s.extend(sample_checkpoint(which, steps));
                    out.push(s);
                }
            }
            // Another configuration's checkpoint, a truncated one, garbage.
            let mut s = vec![0u8];
            s.extend(sample_checkpoint(1, 3));
            out.push(s);
            let mut s = vec![(2 + n) as u8];
            s.extend(&sample_checkpoint(2, 3)[..60]);
            out.push(s);
            out.push(b"\x00FLATOPTC".to_vec());
        }
        "config" => {
            // Raw C mode: defaults of every base and schedule kind.
            for kind in 0..16u32 {
                let rust = Config::with_schedule(
                    [Base::sgd(), Base::adam(), Base::adamw(), Base::radam()][kind as usize % 4],
                    Schedule::fixed(1e-3),
                );
                let c = to_c(&rust).unwrap();
                // SAFETY: all-zero is valid for this struct.
                let mut s: flatopt_schedule = unsafe { std::mem::zeroed() };
                // SAFETY: valid, writable struct.
                unsafe { flatopt_schedule_init(&mut s, kind) };
                let mut cfg = c.cfg;
                cfg.lookahead = kind % 2;
                let mut seed = vec![0u8, 1];
                seed.extend(config_bytes(&cfg));
                seed.extend(schedule_bytes(&s));
                seed.extend([2, 0, 5, 0, 0]);
                out.push(seed);
            }
            // Rust mode: each schedule kind with mostly valid values.
            for kind in 0..16u8 {
                let mut seed = vec![1u8];
                seed.extend(base_seed(kind % 4));
                seed.push(kind);
                seed.extend([1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]);
                out.push(seed);
            }
        }
        "step" => {
            let rows = [
                (1u8, 0x0Eu8),
                (0, 0x08),
                (4 | 1, 0x1B),
                (2, 0x20),
                (3, 0x8A),
                (4, 0x01),
            ];
            for (kind, flags) in rows {
                let mut seed = base_seed(kind);
                seed.push(0); // Fixed schedule
                put_f64(&mut seed, 1e-3);
                seed.push(flags);
                if flags & 1 != 0 {
                    put_f64(&mut seed, 0.01);
                }
                if flags & 2 != 0 {
                    put_f64(&mut seed, 0.5);
                }
                if flags & 4 != 0 {
                    put_f64(&mut seed, 0.1);
                }
                if flags & 8 != 0 {
                    put_u64(&mut seed, 2);
                    put_f64(&mut seed, 0.5);
                }
                seed.extend([2, 17, 0x80 | 13, 5, 3, 9]);
                seed.extend((0..64u8).map(|i| i.wrapping_mul(37)));
                out.push(seed);
            }
        }
        other => panic!("unknown fuzz target {other}"),
    }
    out
}
