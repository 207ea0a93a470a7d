//! The C option structs (`flatopt_base_params`, `flatopt_schedule`, `flatopt_config`), their
//! kind enums, their defaults and init functions, and their conversion into the validated Rust
//! configuration.

use std::ffi::c_double;

use crate::config::{base_specs, config_spec, Base, Config};
use crate::error::Error;
use crate::schedule::{self, Schedule};
use crate::simd::Tier;

use super::boundary::{flatopt_status, flatopt_status::*, guard};
use super::catalog;
use super::ptr::{read_versioned, write_versioned, Versions};

pub(crate) fn flag(name: &'static str, x: u32) -> Result<bool, Error> {
    match x {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(Error::invalid(name, x, "must be 0 or 1")),
    }
}

/// Base optimizer kinds (values of `flatopt_base_params.kind`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum flatopt_base_kind {
    /// SGD: plain, heavy-ball momentum (with dampening) or Nesterov.
    FLATOPT_SGD = 0,
    /// Adam, optionally AMSGrad.
    FLATOPT_ADAM = 1,
    /// AdamW: Adam with decoupled weight decay.
    FLATOPT_ADAMW = 2,
    /// RAdam (rectification threshold 5).
    FLATOPT_RADAM = 3,
    /// Adagrad (PyTorch's; optax's with `initial_accumulator = 0.1`, `eps = 1e-7`,
    /// `eps_inside_sqrt = 1`). Since `FLATOPT_BASE_PARAMS_SIZE_V2`.
    FLATOPT_ADAGRAD = 4,
    /// RMSprop, optionally with momentum and centered (PyTorch's; optax's with `alpha = 0.9`,
    /// `eps_inside_sqrt = 1`). Since `FLATOPT_BASE_PARAMS_SIZE_V2`.
    FLATOPT_RMSPROP = 5,
    /// Adamax (PyTorch's; optax's with `eps_outside_max = 1`). Since
    /// `FLATOPT_BASE_PARAMS_SIZE_V3`.
    FLATOPT_ADAMAX = 6,
    /// NAdam with PyTorch's momentum schedule (`momentum_decay`); optax's with
    /// `constant_momentum = 1`. Since `FLATOPT_BASE_PARAMS_SIZE_V3`.
    FLATOPT_NADAM = 7,
    /// Lion (optax's; `decoupled_weight_decay` is its weight decay). Since
    /// `FLATOPT_BASE_PARAMS_SIZE_V3`.
    FLATOPT_LION = 8,
    /// AdaBelief (optax's). Since `FLATOPT_BASE_PARAMS_SIZE_V4`.
    FLATOPT_ADABELIEF = 9,
    /// Yogi (optax's; both moments from `initial_accumulator`, default 1e-6). Since
    /// `FLATOPT_BASE_PARAMS_SIZE_V4`.
    FLATOPT_YOGI = 10,
    /// Adadelta (PyTorch's, optax's alike). Since `FLATOPT_BASE_PARAMS_SIZE_V4`.
    FLATOPT_ADADELTA = 11,
    /// Rprop (PyTorch's; the learning rate of the first step is the initial step size). Since
    /// `FLATOPT_BASE_PARAMS_SIZE_V4`.
    FLATOPT_RPROP = 12,
    /// LAMB (optax's; a trust ratio per registered buffer). Since `FLATOPT_BASE_PARAMS_SIZE_V4`
    /// (its fields are older ones).
    FLATOPT_LAMB = 13,
    /// LARS (optax's; a trust ratio per registered buffer). Since
    /// `FLATOPT_BASE_PARAMS_SIZE_V5` (`trust_coefficient`).
    FLATOPT_LARS = 14,
    /// NovoGrad (optax's; a second moment per registered buffer). Since
    /// `FLATOPT_BASE_PARAMS_SIZE_V4` (its fields are older ones).
    FLATOPT_NOVOGRAD = 15,
    /// Adafactor (PyTorch's by default; optax's with `eps_root = 1e-30`, `eps = 0`,
    /// `relative_step = 0`, `weight_decay_by_lr = 0`): factored second moments for buffers
    /// registered with a shape (`flatopt_param_options.rows` / `.cols`). Since
    /// `FLATOPT_BASE_PARAMS_SIZE_V6` (`decay_rate` to `weight_decay_by_lr`).
    FLATOPT_ADAFACTOR = 16,
}

/// Size in bytes of the first version of `flatopt_base_params` (flatopt 0.2.0), the smallest
/// `struct_size` accepted. Frozen: a later version adds fields at the end and a constant
/// `FLATOPT_BASE_PARAMS_SIZE_V2`.
pub const FLATOPT_BASE_PARAMS_SIZE_V1: u32 = 64;

/// Size in bytes of the second version of `flatopt_base_params` (after 0.2.0: Adagrad and
/// RMSprop's fields `lr_decay` to `eps_inside_sqrt`). Frozen. A V1 caller's struct gets those
/// fields' defaults.
pub const FLATOPT_BASE_PARAMS_SIZE_V2: u32 = 96;

/// Size in bytes of the third version of `flatopt_base_params` (Adamax, NAdam and Lion's
/// fields `momentum_decay` to `constant_momentum`). Frozen. An older caller's struct gets those
/// fields' defaults.
pub const FLATOPT_BASE_PARAMS_SIZE_V3: u32 = 112;

/// Size in bytes of the fourth version of `flatopt_base_params` (AdaBelief's, Adadelta's and
/// Rprop's fields `eps_root` to `max_step_size`). Frozen. An older caller's struct gets those
/// fields' defaults.
pub const FLATOPT_BASE_PARAMS_SIZE_V4: u32 = 160;

/// Size in bytes of the fifth version of `flatopt_base_params` (LARS's `trust_coefficient`).
/// Frozen. An older caller's struct gets its default.
pub const FLATOPT_BASE_PARAMS_SIZE_V5: u32 = 168;
/// Size in bytes of the sixth version of `flatopt_base_params` (Adafactor's fields
/// `decay_rate` to `weight_decay_by_lr`). Frozen. An older caller's struct gets their defaults.
pub const FLATOPT_BASE_PARAMS_SIZE_V6: u32 = 216;

/// Size in bytes of the first version of `flatopt_schedule` (flatopt 0.2.0). Frozen.
pub const FLATOPT_SCHEDULE_SIZE_V1: u32 = 248;

/// Size in bytes of the first version of `flatopt_config` (flatopt 0.2.0). Frozen.
pub const FLATOPT_CONFIG_SIZE_V1: u32 = 88;

/// Size in bytes of the second version of `flatopt_config` (compressed state: the fields
/// `state_dtype` to `slow_dtype`). Frozen. A V1 caller's config gets float32 state.
pub const FLATOPT_CONFIG_SIZE_V2: u32 = 120;

/// The base optimizer and its hyperparameters. Initialise with
/// `flatopt_base_params_init(&p, sizeof p, kind)` or `FLATOPT_BASE_PARAMS_INIT(kind)`, which
/// set `struct_size` and the defaults of the chosen kind, then change fields.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct flatopt_base_params {
    /// The caller's `sizeof(flatopt_base_params)`, set by the init function or macro (ABI
    /// versioning: see "Versioned structs" at the top of this header).
    pub struct_size: u32,
    /// A `flatopt_base_kind` value.
    pub kind: u32,
    /// SGD: momentum in [0, 1) (0: plain SGD).
    pub momentum: c_double,
    /// SGD: dampening in [0, 1].
    pub dampening: c_double,
    /// SGD: 1 for Nesterov momentum (needs momentum > 0 and dampening 0).
    pub nesterov: u32,
    /// Adam family: 1 for AMSGrad (Adam only).
    pub amsgrad: u32,
    /// Adam family: first-moment decay in [0, 1) (default 0.9).
    pub b1: c_double,
    /// Adam family: second-moment decay in [0, 1) (default 0.999).
    pub b2: c_double,
    /// Adam family: eps > 0, added outside the square root (default 1e-8).
    pub eps: c_double,
    /// AdamW: decoupled weight decay >= 0 (default 0.01).
    pub decoupled_weight_decay: c_double,
    /// Adagrad: learning-rate decay >= 0, step t uses `lr / (1 + (t - 1) * lr_decay)`
    /// (default 0). Since `FLATOPT_BASE_PARAMS_SIZE_V2`.
    pub lr_decay: c_double,
    /// Adagrad: the initial sum of squares; RMSprop: the initial squared average (optax's
    /// `initial_scale`); >= 0 (default 0; optax's adagrad: 0.1). The optimizer fills its
    /// state with it; callers of the stateless kernels fill theirs. Since `_SIZE_V2`.
    pub initial_accumulator: c_double,
    /// RMSprop: smoothing constant in [0, 1) (default 0.99; optax's `decay`: 0.9). Since
    /// `_SIZE_V2`.
    pub alpha: c_double,
    /// RMSprop: 1 for the centered form (default 0). Since `_SIZE_V2`.
    pub centered: u32,
    /// Adagrad, RMSprop: 1 to add eps inside the square root as optax does (default 0: outside,
    /// as PyTorch). Since `_SIZE_V2`.
    pub eps_inside_sqrt: u32,
    /// NAdam: psi >= 0 of the momentum schedule `mu_t = b1*(1 - 0.5*0.96^(t*psi))` (default
    /// 0.004). Since `FLATOPT_BASE_PARAMS_SIZE_V3`.
    pub momentum_decay: c_double,
    /// Adamax: 1 to add eps after the maximum, `m / (max(b2*u, |g|) + eps)`, as optax does
    /// (default 0: inside, `max(b2*u, |g| + eps)`, as PyTorch). Since `_SIZE_V3`.
    pub eps_outside_max: u32,
    /// NAdam: 1 for optax's form, `mu_t = b1` at every step (default 0: PyTorch's schedule).
    /// Since `_SIZE_V3`.
    pub constant_momentum: u32,
    /// AdaBelief: added to the belief at every step, >= 0 (default 1e-16). Since
    /// `FLATOPT_BASE_PARAMS_SIZE_V4`.
    pub eps_root: c_double,
    /// Adadelta: decay of both running averages in [0, 1) (default 0.9). Since `_SIZE_V4`.
    pub rho: c_double,
    /// Rprop: step-size factor after a sign change, in (0, 1) (default 0.5). Since `_SIZE_V4`.
    pub eta_minus: c_double,
    /// Rprop: step-size factor while the sign holds, > 1 (default 1.2). Since `_SIZE_V4`.
    pub eta_plus: c_double,
    /// Rprop: lower bound of the step sizes, >= 0 (default 1e-6). Since `_SIZE_V4`.
    pub min_step_size: c_double,
    /// Rprop: upper bound of the step sizes, >= `min_step_size` (default 50). Since `_SIZE_V4`.
    pub max_step_size: c_double,
    /// LARS: multiplier of the trust ratio, > 0 (default 0.001). Since `_SIZE_V5`.
    pub trust_coefficient: c_double,
    /// Adafactor: exponent of the second-moment decay `1 - t^-decay_rate`, >= 0 (default 0.8,
    /// PyTorch's `-beta2_decay`). Since `_SIZE_V6`.
    pub decay_rate: c_double,
    /// Adafactor: steps subtracted from the count in the decay, a whole number >= 0 (default
    /// 0). Since `_SIZE_V6`.
    pub decay_offset: c_double,
    /// Adafactor: floor of the parameters' RMS in the parameter scale, >= 0 (default 1e-3).
    /// Since `_SIZE_V6`.
    pub eps_scale: c_double,
    /// Adafactor: threshold of the update's RMS, > 0, or NaN for no clipping (default 1).
    /// Since `_SIZE_V6`.
    pub clipping_threshold: c_double,
    /// Adafactor: 1 to scale the step by the parameters' RMS (default 1). Since `_SIZE_V6`.
    pub multiply_by_parameter_scale: u32,
    /// Adafactor: 1 to cap the learning rate at `1/sqrt(t)` (default 1, PyTorch's). Since
    /// `_SIZE_V6`.
    pub relative_step: u32,
    /// Adafactor: 1 to multiply `decoupled_weight_decay` by the learning rate (default 1,
    /// PyTorch's). Since `_SIZE_V6`.
    pub weight_decay_by_lr: u32,
    /// Reserved, must be 0 (keeps the struct free of padding). Since `_SIZE_V6`.
    pub reserved: u32,
}

/// The defaults of `kind` (a kind of the base-rule catalog): the catalog's defaults in the
/// fields the kind uses, fixed values in the others.
pub(crate) fn base_defaults(kind: u32) -> flatopt_base_params {
    let mut p = flatopt_base_params {
        struct_size: std::mem::size_of::<flatopt_base_params>() as u32,
        kind,
        momentum: 0.0,
        dampening: 0.0,
        nesterov: 0,
        amsgrad: 0,
        b1: 0.9,
        b2: 0.999,
        eps: 1e-8,
        decoupled_weight_decay: 0.0,
        lr_decay: 0.0,
        initial_accumulator: 0.0,
        alpha: 0.99,
        centered: 0,
        eps_inside_sqrt: 0,
        momentum_decay: 0.004,
        eps_outside_max: 0,
        constant_momentum: 0,
        eps_root: 1e-16,
        rho: 0.9,
        eta_minus: 0.5,
        eta_plus: 1.2,
        min_step_size: 1e-6,
        max_step_size: 50.0,
        trust_coefficient: 0.001,
        decay_rate: 0.8,
        decay_offset: 0.0,
        eps_scale: 1e-3,
        clipping_threshold: 1.0,
        multiply_by_parameter_scale: 1,
        relative_step: 1,
        weight_decay_by_lr: 1,
        reserved: 0,
    };
    if let Some(spec) = base_specs().iter().find(|s| s.kind == kind) {
        catalog::set_defaults(&mut p, spec);
    }
    p
}

impl flatopt_base_params {
    /// The validated base rule (the catalog entry of `kind`, its fields read from theirs).
    /// Allocates nothing.
    pub(crate) fn to_base(mut self) -> Result<Base, Error> {
        if self.reserved != 0 {
            return Err(Error::invalid("reserved", self.reserved, "must be 0"));
        }
        let spec =
            catalog::kind_spec(base_specs(), self.kind, "must be a flatopt_base_kind value")?;
        // Field by field, without allocating: the stateless kernels convert on every call.
        let base = Base::try_from_fields(spec.kind, |i| {
            // SAFETY: base rules have no list fields.
            unsafe { catalog::read_field(&mut self, &spec.fields[i]) }
        })
        .expect("values read by the catalog")?;
        base.validate().map_err(|e| catalog::relabel(e, spec))?;
        Ok(base)
    }
}

/// The published sizes of `flatopt_base_params`, oldest first.
pub(crate) const BASE_PARAMS_VERSIONS: Versions = Versions {
    name: "flatopt_base_params",
    sizes: &[
        FLATOPT_BASE_PARAMS_SIZE_V1,
        FLATOPT_BASE_PARAMS_SIZE_V2,
        FLATOPT_BASE_PARAMS_SIZE_V3,
        FLATOPT_BASE_PARAMS_SIZE_V4,
        FLATOPT_BASE_PARAMS_SIZE_V5,
        FLATOPT_BASE_PARAMS_SIZE_V6,
    ],
};

/// Fills the caller's `size` bytes at `params` with the defaults of `kind` (a
/// `flatopt_base_kind`) and sets `struct_size = size`; pass `sizeof *params`. Never writes
/// more than `size` bytes.
///
/// # Safety
/// `params` is NULL (refused) or valid for writes of `size` bytes.
#[no_mangle]
pub unsafe extern "C" fn flatopt_base_params_init(
    params: *mut flatopt_base_params,
    size: usize,
    kind: u32,
) -> flatopt_status {
    guard(|| {
        catalog::kind_spec(base_specs(), kind, "must be a flatopt_base_kind value")?;
        let defaults = base_defaults(kind);
        // SAFETY: NULL (refused) or `size` writable bytes (this function's contract).
        unsafe { write_versioned("params", params, size, defaults, &BASE_PARAMS_VERSIONS)? };
        Ok(FLATOPT_OK)
    })
}

/// Learning-rate schedule kinds (values of `flatopt_schedule.kind`). Formulas: docs/numerics.md
/// ("Schedules") and the Rust docs of `flatopt::Schedule`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum flatopt_schedule_kind {
    /// `base_lr` at every step.
    FLATOPT_SCHEDULE_FIXED = 0,
    /// PyTorch ConstantLR: `base_lr * factor` for `period` (total_iters) steps, then `base_lr`.
    FLATOPT_SCHEDULE_CONSTANT = 1,
    /// PyTorch LinearLR: factor from `start_factor` to `end_factor` over `period` steps.
    FLATOPT_SCHEDULE_LINEAR = 2,
    /// PyTorch StepLR: times `gamma` every `period` (step_size) steps.
    FLATOPT_SCHEDULE_STEP = 3,
    /// PyTorch MultiStepLR: times `gamma` at each of `milestones`.
    FLATOPT_SCHEDULE_MULTI_STEP = 4,
    /// PyTorch ExponentialLR: `base_lr * gamma^e`.
    FLATOPT_SCHEDULE_EXPONENTIAL = 5,
    /// optax exponential_decay: `decay_rate` per `period` steps after `warmup`
    /// (transition_begin), optionally `staircase`, clamped at `end_value`.
    FLATOPT_SCHEDULE_EXPONENTIAL_DECAY = 6,
    /// Cosine from `base_lr` to `eta_min` over `period` (T_max) steps, then `eta_min`.
    FLATOPT_SCHEDULE_COSINE_ANNEALING = 7,
    /// PyTorch CosineAnnealingWarmRestarts: cycles of `period` (T_0) steps, times `t_mult`.
    FLATOPT_SCHEDULE_COSINE_WARM_RESTARTS = 8,
    /// PyTorch PolynomialLR: `base_lr * (1 - min(e, period)/period)^power`.
    FLATOPT_SCHEDULE_POLYNOMIAL = 9,
    /// Linear warmup from `start_lr` to `base_lr` over `warmup` steps.
    FLATOPT_SCHEDULE_WARMUP = 10,
    /// Linear warmup over `warmup` steps, then cosine to `eta_min` until `period` steps.
    FLATOPT_SCHEDULE_WARMUP_COSINE = 11,
    /// PyTorch OneCycleLR with peak `base_lr` over `period` steps.
    FLATOPT_SCHEDULE_ONE_CYCLE = 12,
    /// PyTorch CyclicLR between `base_lr` and `max_lr`.
    FLATOPT_SCHEDULE_CYCLIC = 13,
    /// `values[number of milestones <= e]` (absolute learning rates).
    FLATOPT_SCHEDULE_PIECEWISE_CONSTANT = 14,
    /// PyTorch ReduceLROnPlateau, driven by `flatopt_optimizer_schedule_step_metric`.
    FLATOPT_SCHEDULE_REDUCE_ON_PLATEAU = 15,
}

/// A learning-rate schedule: `kind` picks the formula, which reads the fields it names.
/// Initialise with `flatopt_schedule_init(&s, sizeof s, kind)` or
/// `FLATOPT_SCHEDULE_INIT(kind)` (PyTorch's defaults), then set fields.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct flatopt_schedule {
    /// The caller's `sizeof(flatopt_schedule)`, set by the init function or macro.
    pub struct_size: u32,
    /// A `flatopt_schedule_kind` value.
    pub kind: u32,
    /// Base learning rate (OneCycle: the peak, max_lr).
    pub base_lr: c_double,
    /// Cyclic: the upper learning rate.
    pub max_lr: c_double,
    /// Step, MultiStep, Exponential, Cyclic (exp_range): the decay factor.
    pub gamma: c_double,
    /// Constant: factor; ReduceOnPlateau: reduction factor in (0, 1).
    pub factor: c_double,
    /// Linear: start factor (default 1/3).
    pub start_factor: c_double,
    /// Linear: end factor (default 1).
    pub end_factor: c_double,
    /// CosineAnnealing, warm restarts, WarmupCosine: floor.
    pub eta_min: c_double,
    /// Polynomial: power.
    pub power: c_double,
    /// Warmup, WarmupCosine: the learning rate at e = 0.
    pub start_lr: c_double,
    /// ExponentialDecay: decay rate per `period` steps.
    pub decay_rate: c_double,
    /// ExponentialDecay: clamp value (NaN, the default: no clamp).
    pub end_value: c_double,
    /// OneCycle: fraction of the cycle spent increasing (default 0.3).
    pub pct_start: c_double,
    /// OneCycle: initial learning rate = `base_lr / div_factor` (default 25).
    pub div_factor: c_double,
    /// OneCycle: final learning rate = initial / `final_div_factor` (default 1e4).
    pub final_div_factor: c_double,
    /// ReduceOnPlateau: improvement threshold (default 1e-4).
    pub threshold: c_double,
    /// ReduceOnPlateau: lower bound of the learning rate (default 0).
    pub min_lr: c_double,
    /// Step: period; Constant, Linear, Polynomial: total_iters; CosineAnnealing: T_max;
    /// warm restarts: T_0; OneCycle, WarmupCosine: total steps; ExponentialDecay: decay steps.
    pub period: u64,
    /// Warm restarts: T_mult (>= 1).
    pub t_mult: u64,
    /// Warmup, WarmupCosine: warmup steps; ExponentialDecay: transition_begin.
    pub warmup: u64,
    /// Cyclic: steps of the rising half-cycle (default 2000).
    pub step_size_up: u64,
    /// Cyclic: steps of the falling half-cycle (0, the default: same as up).
    pub step_size_down: u64,
    /// ReduceOnPlateau: metrics without improvement before reducing (default 10).
    pub patience: u64,
    /// ReduceOnPlateau: metrics to wait after a reduction (default 0).
    pub cooldown: u64,
    /// ExponentialDecay: 1 for staircase.
    pub staircase: u32,
    /// OneCycle: 0 cosine anneal, 1 linear.
    pub anneal_linear: u32,
    /// Cyclic: 0 triangular, 1 triangular2, 2 exp_range.
    pub cyclic_mode: u32,
    /// ReduceOnPlateau: 0 minimise the metric, 1 maximise it.
    pub plateau_mode: u32,
    /// ReduceOnPlateau: 0 relative threshold, 1 absolute.
    pub threshold_mode: u32,
    /// MultiStep: milestones; PiecewiseConstant: boundaries (strictly increasing). Copied by
    /// `flatopt_optimizer_new`.
    pub milestones: *const u64,
    /// Number of `milestones`.
    pub n_milestones: usize,
    /// PiecewiseConstant: the learning rates (`n_milestones + 1` of them). Copied.
    pub values: *const c_double,
    /// Number of `values`.
    pub n_values: usize,
}

/// The defaults of `kind` (a kind of the schedule catalog): the catalog's defaults in the
/// fields the kind uses, fixed values in the others.
pub(crate) fn schedule_defaults(kind: u32) -> flatopt_schedule {
    let mut s = flatopt_schedule {
        struct_size: std::mem::size_of::<flatopt_schedule>() as u32,
        kind,
        base_lr: 1e-3,
        max_lr: 1e-2,
        gamma: 0.1,
        factor: 1.0 / 3.0,
        start_factor: 1.0 / 3.0,
        end_factor: 1.0,
        eta_min: 0.0,
        power: 1.0,
        start_lr: 0.0,
        decay_rate: 0.5,
        end_value: f64::NAN,
        pct_start: 0.3,
        div_factor: 25.0,
        final_div_factor: 1e4,
        threshold: 1e-4,
        min_lr: 0.0,
        period: 100,
        t_mult: 1,
        warmup: 0,
        step_size_up: 2000,
        step_size_down: 0,
        patience: 10,
        cooldown: 0,
        staircase: 0,
        anneal_linear: 0,
        cyclic_mode: 0,
        plateau_mode: 0,
        threshold_mode: 0,
        milestones: std::ptr::null(),
        n_milestones: 0,
        values: std::ptr::null(),
        n_values: 0,
    };
    if let Some(spec) = schedule::specs().iter().find(|s| s.kind == kind) {
        catalog::set_defaults(&mut s, spec);
    }
    s
}

/// The published sizes of `flatopt_schedule`, oldest first.
pub(crate) const SCHEDULE_VERSIONS: Versions = Versions {
    name: "flatopt_schedule",
    sizes: &[FLATOPT_SCHEDULE_SIZE_V1],
};

/// Fills the caller's `size` bytes at `schedule` with the defaults of `kind` (a
/// `flatopt_schedule_kind`) and sets `struct_size = size`; pass `sizeof *schedule`.
///
/// # Safety
/// `schedule` is NULL (refused) or valid for writes of `size` bytes.
#[no_mangle]
pub unsafe extern "C" fn flatopt_schedule_init(
    schedule: *mut flatopt_schedule,
    size: usize,
    kind: u32,
) -> flatopt_status {
    guard(|| {
        catalog::kind_spec(
            schedule::specs(),
            kind,
            "must be a flatopt_schedule_kind value",
        )?;
        let defaults = schedule_defaults(kind);
        // SAFETY: NULL (refused) or `size` writable bytes (this function's contract).
        unsafe { write_versioned("schedule", schedule, size, defaults, &SCHEDULE_VERSIONS)? };
        Ok(FLATOPT_OK)
    })
}

impl flatopt_schedule {
    /// # Safety
    /// `milestones` / `values` point to `n_milestones` / `n_values` readable elements.
    unsafe fn to_schedule(mut self) -> Result<Schedule, Error> {
        let spec = catalog::kind_spec(
            schedule::specs(),
            self.kind,
            "must be a flatopt_schedule_kind value",
        )?;
        // SAFETY: the list pointers hold their counts (caller contract).
        let values = unsafe { catalog::read(&mut self, spec)? };
        let s = Schedule::from_values(spec.kind, values).expect("values read by the catalog");
        s.validate().map_err(|e| catalog::relabel(e, spec))?;
        Ok(s)
    }
}

/// Non-finite gradient policies (values of `flatopt_config.nonfinite`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum flatopt_nonfinite {
    /// Skip the update, count it, return `FLATOPT_SKIPPED` (default).
    FLATOPT_NONFINITE_SKIP = 0,
    /// Skip the update, count it, return `FLATOPT_ERR_NON_FINITE`.
    FLATOPT_NONFINITE_ERROR = 1,
    /// No check: NaN and Inf flow into the parameters.
    FLATOPT_NONFINITE_PROPAGATE = 2,
}

/// SIMD tiers (values for `flatopt_config.simd_tier` and the tier functions). 0 means "the
/// process default" where a tier is an input.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum flatopt_simd_tier {
    /// The process default (`FLATOPT_SIMD`, else the best available); inputs only.
    FLATOPT_SIMD_DEFAULT = 0,
    /// Plain scalar code: the reference.
    FLATOPT_SIMD_SCALAR = 1,
    /// Portable vectors (SSE2 on x86_64, NEON on aarch64).
    FLATOPT_SIMD_PORTABLE = 2,
    /// AVX2 (x86_64, detected at run time).
    FLATOPT_SIMD_AVX2 = 3,
    /// AVX-512F (x86_64, detected at run time).
    FLATOPT_SIMD_AVX512 = 4,
}

/// Optimizer configuration. Initialise with `flatopt_config_init(&c, sizeof c)` or
/// `FLATOPT_CONFIG_INIT`, then set fields.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct flatopt_config {
    /// The caller's `sizeof(flatopt_config)`, set by `flatopt_config_init` or the macro.
    pub struct_size: u32,
    /// Non-finite policy: a `flatopt_nonfinite` value.
    pub nonfinite: u32,
    /// The base optimizer (read by `flatopt_optimizer_new`, not kept); NULL for Adam with its
    /// defaults (`FLATOPT_BASE_PARAMS_INIT(FLATOPT_ADAM)`).
    pub base: *const flatopt_base_params,
    /// Constant learning rate, used when `schedule` is NULL.
    pub lr: c_double,
    /// Optional schedule (copied by `flatopt_optimizer_new`; NULL for the constant `lr`).
    pub schedule: *const flatopt_schedule,
    /// 1: the schedule advances only through `flatopt_optimizer_schedule_step` (epoch style);
    /// 0: once per applied update (default).
    pub schedule_manual: u32,
    /// 1 to wrap the base optimizer in Lookahead.
    pub lookahead: u32,
    /// Lookahead: sync every `sync_period` applied updates (>= 1, default 5).
    pub sync_period: u64,
    /// Lookahead: slow-weight step in [0, 1] (default 0.5).
    pub alpha: c_double,
    /// Coupled weight decay >= 0 (`g += wd * p`), default 0.
    pub weight_decay: c_double,
    /// Clip by global norm over all buffers; 0 disables (default).
    pub grad_clip_norm: c_double,
    /// Clip each gradient element to [-c, c]; 0 disables (default).
    pub grad_clip_value: c_double,
    /// Threads: 1 (default) runs on the caller's thread; more starts a private pool.
    pub num_threads: u32,
    /// A `flatopt_simd_tier`; 0 takes the process default.
    pub simd_tier: u32,
    /// How the moments (m, v, v_max) are held: a `flatopt_state_dtype` value (default
    /// `FLATOPT_STATE_FLOAT32`).
    pub state_dtype: u32,
    /// How bfloat16 state is rounded: a `flatopt_state_rounding` value (default stochastic).
    pub state_rounding: u32,
    /// The seed of stochastic rounding (default 0).
    pub state_seed: u64,
    /// The index of this optimizer's first element in the whole model (sharded training: each
    /// shard passes its offset so that stochastic rounding matches one process). Default 0.
    pub state_index_offset: u64,
    /// How the Lookahead slow weights are held: `FLATOPT_STATE_FLOAT32` (default) or
    /// `FLATOPT_STATE_BFLOAT16`.
    pub slow_dtype: u32,
    /// Reserved, must be 0 (keeps the struct free of padding).
    pub reserved: u32,
}

/// How optimizer state is held (values of `flatopt_config.state_dtype` and `slow_dtype`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum flatopt_state_dtype {
    /// f32: 4 bytes per element and state buffer (default).
    FLATOPT_STATE_FLOAT32 = 0,
    /// bf16: 2 bytes per element and state buffer.
    FLATOPT_STATE_BFLOAT16 = 1,
    /// The 8-bit blockwise code: 1 byte per element and state buffer, plus one f32 scale per
    /// 256 elements.
    FLATOPT_STATE_INT8 = 2,
}

/// How f32 values are rounded into bfloat16 state (values of `flatopt_config.state_rounding`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum flatopt_state_rounding {
    /// Deterministic stochastic rounding (default).
    FLATOPT_ROUNDING_STOCHASTIC = 0,
    /// Round to nearest, ties to even.
    FLATOPT_ROUNDING_NEAREST = 1,
}

/// Generates, from the configuration-field catalog (`config_table!` in
/// `src/config/fields.rs`), the accessors of `flatopt_config`'s catalog fields by C name and
/// the struct with those fields zeroed: a field added to the catalog and to the C struct needs
/// nothing else here.
macro_rules! c_config_fields {
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
        impl flatopt_config {
            /// The catalog field called `c` if it has type `T`.
            fn catalog_field<T: 'static>(&mut self, c: &str) -> Option<&mut T> {
                let field: &mut dyn std::any::Any = match c {
                    $(
                        stringify!($c) => &mut self.$c,
                        $($( stringify!($gc) => &mut self.$gc, )+)?
                    )+
                    _ => return None,
                };
                field.downcast_mut()
            }

            /// The struct with these fields and every catalog field 0 (`set_defaults` then
            /// writes the catalog's defaults).
            fn with_catalog_fields_zero(
                base: *const flatopt_base_params,
                lr: c_double,
                schedule: *const flatopt_schedule,
            ) -> flatopt_config {
                flatopt_config {
                    struct_size: std::mem::size_of::<flatopt_config>() as u32,
                    base,
                    lr,
                    schedule,
                    reserved: 0,
                    $(
                        $c: 0 as _,
                        $($( $gc: 0 as _, )+)?
                    )+
                }
            }
        }
    };
}
crate::config::config_table!(c_config_fields);

impl catalog::CFields for flatopt_config {
    fn f64_field(&mut self, c: &str) -> Option<&mut f64> {
        self.catalog_field(c)
    }
    fn u64_field(&mut self, c: &str) -> Option<&mut u64> {
        self.catalog_field(c)
    }
    fn u32_field(&mut self, c: &str) -> Option<&mut u32> {
        self.catalog_field(c)
    }
}

/// The defaults: Adam (a NULL `base`) at the constant learning rate 1e-3, and the catalog's
/// defaults in every catalog field.
pub(crate) fn config_defaults() -> flatopt_config {
    let mut c = flatopt_config::with_catalog_fields_zero(std::ptr::null(), 1e-3, std::ptr::null());
    catalog::set_defaults(&mut c, config_spec());
    c
}

/// The published sizes of `flatopt_config`, oldest first.
pub(crate) const CONFIG_VERSIONS: Versions = Versions {
    name: "flatopt_config",
    sizes: &[FLATOPT_CONFIG_SIZE_V1, FLATOPT_CONFIG_SIZE_V2],
};

// The newest published size of each struct is this library's struct: adding a field means
// adding its `_SIZE_V<n>` constant to the list (the older constants never change).
const _: () = assert!(BASE_PARAMS_VERSIONS.newest() == size_of::<flatopt_base_params>());
const _: () = assert!(SCHEDULE_VERSIONS.newest() == size_of::<flatopt_schedule>());
const _: () = assert!(CONFIG_VERSIONS.newest() == size_of::<flatopt_config>());

/// Fills the caller's `size` bytes at `config` with the defaults (Adam at lr 1e-3, no
/// Lookahead, no clipping, skip non-finite updates, one thread, default SIMD tier) and sets
/// `struct_size = size`; pass `sizeof *config`.
///
/// # Safety
/// `config` is NULL (refused) or valid for writes of `size` bytes.
#[no_mangle]
pub unsafe extern "C" fn flatopt_config_init(
    config: *mut flatopt_config,
    size: usize,
) -> flatopt_status {
    guard(|| {
        let defaults = config_defaults();
        // SAFETY: NULL (refused) or `size` writable bytes (this function's contract).
        unsafe { write_versioned("config", config, size, defaults, &CONFIG_VERSIONS)? };
        Ok(FLATOPT_OK)
    })
}

pub(crate) fn tier_from_c(name: &'static str, x: u32) -> Result<Option<Tier>, Error> {
    if x == 0 {
        return Ok(None);
    }
    let t = u8::try_from(x)
        .ok()
        .and_then(Tier::from_u8)
        .ok_or_else(|| Error::invalid(name, x, "must be a flatopt_simd_tier value"))?;
    Ok(Some(t.check()?))
}

/// Reads a caller's `flatopt_base_params`: the fields an older caller lacks take the defaults
/// of the kind it names.
///
/// # Safety
/// `p` is NULL or points to a `flatopt_base_params` of `struct_size` readable bytes.
pub(crate) unsafe fn read_base(
    name: &'static str,
    field: &'static str,
    p: *const flatopt_base_params,
) -> Result<flatopt_base_params, Error> {
    let v = &BASE_PARAMS_VERSIONS;
    // SAFETY: this function's contract; `kind` lies in the first version's bytes.
    let kind = unsafe { read_versioned(name, field, p, base_defaults(0), v)? }.kind;
    // SAFETY: as above.
    unsafe { read_versioned(name, field, p, base_defaults(kind), v) }
}

/// Reads a caller's `flatopt_schedule` (defaults of its kind for the fields it lacks).
///
/// # Safety
/// `p` is NULL or points to a `flatopt_schedule` of `struct_size` readable bytes.
unsafe fn read_schedule(p: *const flatopt_schedule) -> Result<flatopt_schedule, Error> {
    let (name, field, v) = ("schedule", "schedule.struct_size", &SCHEDULE_VERSIONS);
    // SAFETY: this function's contract; `kind` lies in the first version's bytes.
    let kind = unsafe { read_versioned(name, field, p, schedule_defaults(0), v)? }.kind;
    // SAFETY: as above.
    unsafe { read_versioned(name, field, p, schedule_defaults(kind), v) }
}

/// Reads a caller's `flatopt_config` and converts it (its base and schedule structs too).
///
/// # Safety
/// `config` is NULL or points to a `flatopt_config` of `struct_size` readable bytes whose
/// `base` and `schedule` are NULL or valid, and the schedule's lists valid for their counts.
pub(crate) unsafe fn read_config(config: *const flatopt_config) -> Result<Config, Error> {
    let (v, defaults) = (&CONFIG_VERSIONS, config_defaults());
    // SAFETY: this function's contract.
    let c = unsafe { read_versioned("config", "struct_size", config, defaults, v)? };
    // SAFETY: as above, for the structs it points to.
    unsafe { config_from_c(&c) }
}

/// # Safety
/// `c` is a valid config (its `base` and `schedule` NULL or valid).
unsafe fn config_from_c(c: &flatopt_config) -> Result<Config, Error> {
    if c.reserved != 0 {
        return Err(Error::invalid("reserved", c.reserved, "must be 0"));
    }
    let base = if c.base.is_null() {
        base_defaults(flatopt_base_kind::FLATOPT_ADAM as u32)
    } else {
        // SAFETY: non-null, points to a flatopt_base_params (caller contract).
        unsafe { read_base("base", "base.struct_size", c.base)? }
    }
    .to_base()?;
    let lr = if c.schedule.is_null() {
        let s = Schedule::Fixed { lr: c.lr };
        s.validate()?;
        s
    } else {
        // SAFETY: non-null, points to a flatopt_schedule (caller contract).
        let s = unsafe { read_schedule(c.schedule)? };
        // SAFETY: its list pointers are valid for their counts (caller contract).
        unsafe { s.to_schedule()? }
    };
    // The catalog fields, each from its C field (no lists: nothing is allocated).
    let mut c = *c;
    let cfg = Config::try_from_fields(base, lr, |f| {
        // SAFETY: the configuration catalog has no list fields.
        unsafe { catalog::read_field(&mut c, f) }
    })
    .expect("values read by the catalog")?;
    cfg.validate()
        .map_err(|e| catalog::relabel(e, config_spec()))?;
    Ok(cfg)
}
