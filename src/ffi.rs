//! The C ABI: thin adapters over the engine and the stateless kernels.
//!
//! Every exported function follows the same shape (see "API conventions" in the README): check
//! pointers and integers coming from C, convert them into safe Rust values, call safe Rust, map
//! the result to a `flatopt_status`, all inside [`guard`], which also catches panics so that none
//! crosses the boundary. Outputs are written only on success. The message of the last failure on
//! the calling thread is kept in a fixed thread-local buffer (`flatopt_last_error_message`).
//!
//! `include/flatopt.h` is generated from this file by cbindgen (`make header`); a test fails when
//! the committed header is stale. Doc comments here are the C documentation.

#![allow(non_camel_case_types)]
#![allow(clippy::missing_safety_doc)] // Safety is documented per function in C terms.

use std::cell::{RefCell, UnsafeCell};
use std::ffi::{c_char, c_double, c_float};
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::config::{Base, Config, Lookahead, NonFinitePolicy, ScheduleMode};
use crate::engine::{Optimizer, Outcome, RawState, Step};
use crate::error::Error;
use crate::kernels::{self, Buffers, Op, Plan, Rule};
use crate::schedule::{Anneal, CyclicMode, PlateauMode, Schedule, ThresholdMode};
use crate::simd::{self, Tier};

// ---------------------------------------------------------------------------------------------
// Status codes, errors, the panic boundary.

/// Result of every fallible call. `FLATOPT_OK` is 0; `FLATOPT_SKIPPED` is not an error but says
/// that an update was skipped because a gradient held NaN or Inf (nothing changed); every other
/// value is an error kind, described further by `flatopt_last_error_message()`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum flatopt_status {
    /// Success.
    FLATOPT_OK = 0,
    /// The update was skipped: a gradient holds NaN or Inf and the policy is "skip".
    FLATOPT_SKIPPED = 1,
    /// A required pointer argument was NULL.
    FLATOPT_ERR_NULL_POINTER = 2,
    /// An argument or hyperparameter is outside its domain (the message names it).
    FLATOPT_ERR_INVALID_ARGUMENT = 3,
    /// A length differs from the registered or expected one.
    FLATOPT_ERR_LENGTH_MISMATCH = 4,
    /// A gradient holds NaN or Inf and the policy is "error" (nothing changed).
    FLATOPT_ERR_NON_FINITE = 5,
    /// The call is not allowed in the optimizer's current state (for example stepping before
    /// any buffer is registered).
    FLATOPT_ERR_INVALID_STATE = 6,
    /// The feature is not available in this build or on this CPU.
    FLATOPT_ERR_UNSUPPORTED = 7,
    /// Buffers that must be disjoint overlap.
    FLATOPT_ERR_OVERLAP = 8,
    /// An input/output error (files).
    FLATOPT_ERR_IO = 9,
    /// Data failed validation (checkpoints).
    FLATOPT_ERR_CORRUPT = 10,
    /// An internal error was caught at the boundary (a bug: please report it).
    FLATOPT_ERR_INTERNAL = 11,
    /// The handle is being used by another thread at the same time (nothing changed).
    FLATOPT_ERR_BUSY = 12,
}

use flatopt_status::*;

fn status_of(e: &Error) -> flatopt_status {
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

const MESSAGE_CAPACITY: usize = 1024;

thread_local! {
    /// NUL-terminated message of the last failed or skipped call on this thread. A fixed buffer:
    /// recording a message never allocates.
    static LAST_ERROR: RefCell<[u8; MESSAGE_CAPACITY]> = const { RefCell::new([0; MESSAGE_CAPACITY]) };
}

/// Records a message (truncated to the buffer, always NUL-terminated).
fn set_message(args: std::fmt::Arguments<'_>) {
    LAST_ERROR.with(|buf| {
        let mut buf = buf.borrow_mut();
        let mut cursor = std::io::Cursor::new(&mut buf[..MESSAGE_CAPACITY - 1]);
        let _ = cursor.write_fmt(args); // a full buffer truncates the message, by design
        let end = cursor.position() as usize;
        buf[end] = 0;
    });
}

/// Runs `f`, turning its error or a panic into a status and a recorded message.
fn guard(f: impl FnOnce() -> Result<flatopt_status, Error>) -> flatopt_status {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(status)) => status,
        Ok(Err(e)) => {
            set_message(format_args!("{e}"));
            status_of(&e)
        }
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("unknown panic");
            set_message(format_args!(
                "internal error (caught at the C boundary): {what}"
            ));
            FLATOPT_ERR_INTERNAL
        }
    }
}

/// Runs a function without a status result (queries), turning a panic into `fallback`.
fn guard_value<T>(fallback: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        set_message(format_args!("internal error (caught at the C boundary)"));
        fallback
    })
}

/// A short, static description of a status code (also for unknown codes).
#[no_mangle]
pub extern "C" fn flatopt_status_str(status: i32) -> *const c_char {
    let s: &'static [u8] = match status {
        0 => b"ok\0",
        1 => b"update skipped: non-finite gradient\0",
        2 => b"null pointer\0",
        3 => b"invalid argument\0",
        4 => b"length mismatch\0",
        5 => b"non-finite gradient\0",
        6 => b"invalid call order\0",
        7 => b"unsupported\0",
        8 => b"overlapping buffers\0",
        9 => b"I/O error\0",
        10 => b"corrupt data\0",
        11 => b"internal error\0",
        12 => b"handle busy in another thread\0",
        _ => b"unknown status code\0",
    };
    s.as_ptr().cast()
}

/// The message of the last failed (or skipped) call on the calling thread, naming the argument
/// and value at fault; an empty string if there was none. The pointer stays valid until the
/// next flatopt call on this thread; copy the text to keep it.
#[no_mangle]
pub extern "C" fn flatopt_last_error_message() -> *const c_char {
    LAST_ERROR.with(|buf| buf.borrow().as_ptr().cast())
}

// ---------------------------------------------------------------------------------------------
// Version.

/// The library version as a NUL-terminated string, e.g. "0.1.0". Compare it with
/// `FLATOPT_VERSION_STRING` to detect a header / library mismatch.
#[no_mangle]
pub extern "C" fn flatopt_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The library version as `major * 10000 + minor * 100 + patch`; compare it with
/// `FLATOPT_VERSION_NUMBER`.
#[no_mangle]
pub extern "C" fn flatopt_version_number() -> u32 {
    version_number()
}

pub(crate) fn version_number() -> u32 {
    let part = |s: &str| s.parse::<u32>().unwrap_or(0);
    part(env!("CARGO_PKG_VERSION_MAJOR")) * 10000
        + part(env!("CARGO_PKG_VERSION_MINOR")) * 100
        + part(env!("CARGO_PKG_VERSION_PATCH"))
}

// ---------------------------------------------------------------------------------------------
// Pointer helpers. Every `unsafe` conversion of C memory into Rust slices is here.

/// Checks a (pointer, length) pair for a slice of f32: non-NULL unless empty, 4-byte aligned,
/// and a length whose byte size fits in `isize`.
fn check_buf(name: &'static str, ptr: *const f32, len: usize) -> Result<(), Error> {
    if len > isize::MAX as usize / std::mem::size_of::<f32>() {
        return Err(Error::invalid(
            name,
            format!("length {len}"),
            "length is too large",
        ));
    }
    if ptr.is_null() {
        if len == 0 {
            return Ok(());
        }
        return Err(Error::NullPointer { name });
    }
    if !(ptr as usize).is_multiple_of(std::mem::align_of::<f32>()) {
        return Err(Error::invalid(
            name,
            format!("{ptr:p}"),
            "must be aligned to 4 bytes (a float array)",
        ));
    }
    Ok(())
}

/// # Safety
/// `check_buf(ptr, len)` passed and the host guarantees `len` readable floats at `ptr`, not
/// written by anyone else for the lifetime `'a`.
unsafe fn slice<'a>(ptr: *const f32, len: usize) -> &'a [f32] {
    if len == 0 {
        &[]
    } else {
        // SAFETY: non-null, aligned, size fits isize (check_buf); validity and absence of
        // concurrent writes are the caller's contract, documented on each C function.
        unsafe { std::slice::from_raw_parts(ptr, len) }
    }
}

/// # Safety
/// As [`slice`], writable, and not accessed through any other pointer during `'a`.
unsafe fn slice_mut<'a>(ptr: *mut f32, len: usize) -> &'a mut [f32] {
    if len == 0 {
        &mut []
    } else {
        // SAFETY: as in `slice`; exclusivity is the caller's contract, and overlap between the
        // buffers of one call is rejected before this is reached (see `check_disjoint`).
        unsafe { std::slice::from_raw_parts_mut(ptr, len) }
    }
}

/// A memory interval of one buffer: (start address, end address, written, name, index).
type Span = (usize, usize, bool, &'static str, usize);

/// Rejects any overlap between a written buffer and any other buffer. Sorts `spans` in place
/// (no allocation) and sweeps once: O(n log n).
fn check_disjoint(spans: &mut [Span]) -> Result<(), Error> {
    spans.sort_unstable_by_key(|s| s.0);
    let mut any: Option<Span> = None; // the earlier span reaching furthest
    let mut written: Option<Span> = None; // the earlier written span reaching furthest
    for &cur in spans.iter().filter(|s| s.1 > s.0) {
        let hit = if cur.2 { any } else { written };
        if let Some(prev) = hit.filter(|p| p.1 > cur.0) {
            return Err(Error::Overlap {
                what: format!("{} {} and {} {} share memory", prev.3, prev.4, cur.3, cur.4),
            });
        }
        if any.is_none_or(|a| cur.1 > a.1) {
            any = Some(cur);
        }
        if cur.2 && written.is_none_or(|w| cur.1 > w.1) {
            written = Some(cur);
        }
    }
    Ok(())
}

/// The memory interval of a buffer (empty for NULL, which `check_disjoint` then ignores).
fn span(ptr: *const f32, len: usize, written: bool, name: &'static str, index: usize) -> Span {
    let start = ptr as usize;
    let end = if ptr.is_null() {
        start
    } else {
        start + len * 4
    };
    (start, end, written, name, index)
}

/// Reads a versioned configuration struct whose first field is `struct_size`: copies the first
/// `struct_size` bytes over the defaults, so an older caller (smaller struct) gets defaults for
/// the fields it does not know.
///
/// # Safety
/// `ptr` is NULL or points to at least `struct_size` readable bytes (its first 4 bytes).
unsafe fn read_versioned<T: Copy>(
    name: &'static str,
    ptr: *const T,
    defaults: T,
    min_size: usize,
) -> Result<T, Error> {
    if ptr.is_null() {
        return Err(Error::NullPointer { name });
    }
    // SAFETY: every versioned struct starts with a u32 `struct_size`; `ptr` is non-null and
    // points to such a struct (caller contract). `read_unaligned` needs no alignment.
    let size = unsafe { std::ptr::read_unaligned(ptr.cast::<u32>()) } as usize;
    if size < min_size {
        return Err(Error::invalid(
            name,
            format!("struct_size = {size}"),
            "struct_size is too small: initialise the struct with its _init function",
        ));
    }
    let mut out = defaults;
    let n = size.min(std::mem::size_of::<T>());
    // SAFETY: the source holds `size >= n` readable bytes (caller contract), the destination
    // is a local `T` of `size_of::<T>() >= n` bytes, they do not overlap, and every bit pattern
    // is valid for the plain-data structs this is used with (integers and floats only).
    unsafe {
        std::ptr::copy_nonoverlapping(ptr.cast::<u8>(), (&mut out as *mut T).cast::<u8>(), n)
    };
    Ok(out)
}

/// Writes `value` to `out` (the out-parameter convention: written only on success).
///
/// # Safety
/// `out` is NULL (rejected) or valid for a write of `T`.
unsafe fn write_out<T>(name: &'static str, out: *mut T, value: T) -> Result<(), Error> {
    if out.is_null() {
        return Err(Error::NullPointer { name });
    }
    // SAFETY: non-null and valid for writes (caller contract).
    unsafe { out.write(value) };
    Ok(())
}

fn flag(name: &'static str, x: u32) -> Result<bool, Error> {
    match x {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(Error::invalid(name, x, "must be 0 or 1")),
    }
}

// ---------------------------------------------------------------------------------------------
// Configuration structs.

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
}

/// The base optimizer and its hyperparameters. Initialise with `flatopt_base_params_init`,
/// which sets `struct_size` and the defaults of the chosen kind, then change fields.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct flatopt_base_params {
    /// `sizeof(flatopt_base_params)`, set by the init function (ABI versioning).
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
}

fn base_defaults(kind: u32) -> flatopt_base_params {
    flatopt_base_params {
        struct_size: std::mem::size_of::<flatopt_base_params>() as u32,
        kind,
        momentum: 0.0,
        dampening: 0.0,
        nesterov: 0,
        amsgrad: 0,
        b1: 0.9,
        b2: 0.999,
        eps: 1e-8,
        decoupled_weight_decay: if kind == flatopt_base_kind::FLATOPT_ADAMW as u32 {
            1e-2
        } else {
            0.0
        },
    }
}

impl flatopt_base_params {
    fn to_base(self) -> Result<Base, Error> {
        let base = match self.kind {
            0 => Base::Sgd {
                momentum: self.momentum,
                dampening: self.dampening,
                nesterov: flag("nesterov", self.nesterov)?,
            },
            1 => Base::Adam {
                b1: self.b1,
                b2: self.b2,
                eps: self.eps,
                amsgrad: flag("amsgrad", self.amsgrad)?,
            },
            2 => Base::AdamW {
                b1: self.b1,
                b2: self.b2,
                eps: self.eps,
                weight_decay: self.decoupled_weight_decay,
            },
            3 => Base::RAdam {
                b1: self.b1,
                b2: self.b2,
                eps: self.eps,
            },
            k => {
                return Err(Error::invalid(
                    "kind",
                    k,
                    "must be FLATOPT_SGD, FLATOPT_ADAM, FLATOPT_ADAMW or FLATOPT_RADAM",
                ))
            }
        };
        base.validate()?;
        Ok(base)
    }
}

/// Fills `params` with the defaults of `kind` (a `flatopt_base_kind`) and sets `struct_size`.
#[no_mangle]
pub unsafe extern "C" fn flatopt_base_params_init(
    params: *mut flatopt_base_params,
    kind: u32,
) -> flatopt_status {
    guard(|| {
        if kind > 3 {
            return Err(Error::invalid(
                "kind",
                kind,
                "must be a flatopt_base_kind value",
            ));
        }
        // SAFETY: `params` is NULL (rejected) or valid for writes (C contract).
        unsafe { write_out("params", params, base_defaults(kind))? };
        Ok(FLATOPT_OK)
    })
}

/// Learning-rate schedule kinds (values of `flatopt_schedule.kind`). Formulas: SPEC.md and the
/// Rust docs of `flatopt::Schedule`.
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
/// Initialise with `flatopt_schedule_init` (PyTorch's defaults), then set fields.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct flatopt_schedule {
    /// `sizeof(flatopt_schedule)`, set by the init function.
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

fn schedule_defaults(kind: u32) -> flatopt_schedule {
    flatopt_schedule {
        struct_size: std::mem::size_of::<flatopt_schedule>() as u32,
        kind,
        base_lr: 1e-3,
        max_lr: 1e-2,
        // Exponential decays by 0.95 per step; Cyclic's exp_range keeps the range (1.0);
        // Step / MultiStep divide by 10.
        gamma: match kind {
            5 => 0.95,
            13 => 1.0,
            _ => 0.1,
        },
        factor: if kind == 15 { 0.1 } else { 1.0 / 3.0 },
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
        // PyTorch's total_iters = 5 for Constant, Linear and Polynomial.
        period: if kind <= 2 || kind == 9 { 5 } else { 100 },
        t_mult: 1,
        // Warmup and WarmupCosine: 5 warmup steps; ExponentialDecay: transition_begin 0.
        warmup: if kind == 10 || kind == 11 { 5 } else { 0 },
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
    }
}

/// Fills `schedule` with the defaults of `kind` (a `flatopt_schedule_kind`) and sets
/// `struct_size`.
#[no_mangle]
pub unsafe extern "C" fn flatopt_schedule_init(
    schedule: *mut flatopt_schedule,
    kind: u32,
) -> flatopt_status {
    guard(|| {
        if kind > 15 {
            return Err(Error::invalid(
                "kind",
                kind,
                "must be a flatopt_schedule_kind value",
            ));
        }
        // SAFETY: NULL (rejected) or valid for writes (C contract).
        unsafe { write_out("schedule", schedule, schedule_defaults(kind))? };
        Ok(FLATOPT_OK)
    })
}

impl flatopt_schedule {
    /// # Safety
    /// `milestones` / `values` point to `n_milestones` / `n_values` readable elements.
    unsafe fn to_schedule(self) -> Result<Schedule, Error> {
        let base = self.base_lr;
        let list = |name: &'static str, p: *const u64, n: usize| -> Result<Vec<u64>, Error> {
            if n == 0 {
                return Ok(Vec::new());
            }
            if p.is_null() {
                return Err(Error::NullPointer { name });
            }
            if n > 1 << 24 {
                return Err(Error::invalid(
                    name,
                    format!("count {n}"),
                    "at most 2^24 entries",
                ));
            }
            // SAFETY: non-null, count bounded, `n` readable u64 (caller contract).
            Ok(unsafe { std::slice::from_raw_parts(p, n) }.to_vec())
        };
        let mode = |name: &'static str, x: u32, max: u32| -> Result<u32, Error> {
            if x > max {
                Err(Error::invalid(name, x, "unknown mode value"))
            } else {
                Ok(x)
            }
        };
        let s = match self.kind {
            0 => Schedule::Fixed { lr: base },
            1 => Schedule::Constant {
                base,
                factor: self.factor,
                total_iters: self.period,
            },
            2 => Schedule::Linear {
                base,
                start_factor: self.start_factor,
                end_factor: self.end_factor,
                total_iters: self.period,
            },
            3 => Schedule::Step {
                base,
                step_size: self.period,
                gamma: self.gamma,
            },
            4 => Schedule::MultiStep {
                base,
                milestones: list("milestones", self.milestones, self.n_milestones)?,
                gamma: self.gamma,
            },
            5 => Schedule::Exponential {
                base,
                gamma: self.gamma,
            },
            6 => Schedule::ExponentialDecay {
                base,
                decay_steps: self.period,
                decay_rate: self.decay_rate,
                transition_begin: self.warmup,
                staircase: flag("staircase", self.staircase)?,
                end_value: (!self.end_value.is_nan()).then_some(self.end_value),
            },
            7 => Schedule::CosineAnnealing {
                base,
                t_max: self.period,
                eta_min: self.eta_min,
            },
            8 => Schedule::CosineAnnealingWarmRestarts {
                base,
                t_0: self.period,
                t_mult: self.t_mult,
                eta_min: self.eta_min,
            },
            9 => Schedule::Polynomial {
                base,
                total_iters: self.period,
                power: self.power,
            },
            10 => Schedule::Warmup {
                base,
                warmup_steps: self.warmup,
                start_lr: self.start_lr,
            },
            11 => Schedule::WarmupCosine {
                base,
                warmup_steps: self.warmup,
                total_steps: self.period,
                start_lr: self.start_lr,
                eta_min: self.eta_min,
            },
            12 => Schedule::OneCycle {
                max_lr: base,
                total_steps: self.period,
                pct_start: self.pct_start,
                div_factor: self.div_factor,
                final_div_factor: self.final_div_factor,
                anneal: if flag("anneal_linear", self.anneal_linear)? {
                    Anneal::Linear
                } else {
                    Anneal::Cos
                },
            },
            13 => Schedule::Cyclic {
                base,
                max_lr: self.max_lr,
                step_size_up: self.step_size_up,
                step_size_down: if self.step_size_down == 0 {
                    self.step_size_up
                } else {
                    self.step_size_down
                },
                mode: match mode("cyclic_mode", self.cyclic_mode, 2)? {
                    0 => CyclicMode::Triangular,
                    1 => CyclicMode::Triangular2,
                    _ => CyclicMode::ExpRange,
                },
                gamma: self.gamma,
            },
            14 => {
                let boundaries = list("milestones", self.milestones, self.n_milestones)?;
                let values = if self.n_values == 0 {
                    Vec::new()
                } else if self.values.is_null() {
                    return Err(Error::NullPointer { name: "values" });
                } else if self.n_values > 1 << 24 {
                    return Err(Error::invalid(
                        "values",
                        self.n_values,
                        "at most 2^24 entries",
                    ));
                } else {
                    // SAFETY: non-null, bounded, `n_values` readable doubles (caller contract).
                    unsafe { std::slice::from_raw_parts(self.values, self.n_values) }.to_vec()
                };
                Schedule::PiecewiseConstant { boundaries, values }
            }
            15 => Schedule::ReduceOnPlateau {
                base,
                mode: if mode("plateau_mode", self.plateau_mode, 1)? == 0 {
                    PlateauMode::Min
                } else {
                    PlateauMode::Max
                },
                factor: self.factor,
                patience: self.patience,
                threshold: self.threshold,
                threshold_mode: if mode("threshold_mode", self.threshold_mode, 1)? == 0 {
                    ThresholdMode::Rel
                } else {
                    ThresholdMode::Abs
                },
                cooldown: self.cooldown,
                min_lr: self.min_lr,
            },
            k => {
                return Err(Error::invalid(
                    "kind",
                    k,
                    "must be a flatopt_schedule_kind value",
                ))
            }
        };
        s.validate().map_err(|e| match e {
            Error::InvalidArgument {
                name,
                value,
                expected,
            } => Error::InvalidArgument {
                name: c_schedule_field(self.kind, name),
                value,
                expected,
            },
            other => other,
        })?;
        Ok(s)
    }
}

/// The `flatopt_schedule` field behind a `Schedule` parameter name, so that C messages name
/// the field the caller set (the Rust name in parentheses where they differ).
fn c_schedule_field(kind: u32, rust: &'static str) -> &'static str {
    match (kind, rust) {
        (0, "lr") | (_, "base") => "base_lr",
        (12, "max_lr") => "base_lr (max_lr)",
        (_, "total_iters") => "period (total_iters)",
        (_, "step_size") => "period (step_size)",
        (_, "t_max") => "period (t_max)",
        (_, "t_0") => "period (t_0)",
        (_, "total_steps") => "period (total_steps)",
        (_, "decay_steps") => "period (decay_steps)",
        (_, "warmup_steps") => "warmup (warmup_steps)",
        (_, "transition_begin") => "warmup (transition_begin)",
        (_, "boundaries") => "milestones (boundaries)",
        (_, "mode") if kind == 13 => "cyclic_mode",
        (_, "mode") => "plateau_mode",
        (_, other) => other,
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
    /// AVX-512F: reserved, not compiled into this build (never available).
    FLATOPT_SIMD_AVX512 = 4,
}

/// Optimizer configuration. Initialise with `flatopt_config_init`, then set fields.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct flatopt_config {
    /// `sizeof(flatopt_config)`, set by `flatopt_config_init`.
    pub struct_size: u32,
    /// Non-finite policy: a `flatopt_nonfinite` value.
    pub nonfinite: u32,
    /// The base optimizer.
    pub base: flatopt_base_params,
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
}

fn config_defaults() -> flatopt_config {
    flatopt_config {
        struct_size: std::mem::size_of::<flatopt_config>() as u32,
        nonfinite: 0,
        base: base_defaults(1),
        lr: 1e-3,
        schedule: std::ptr::null(),
        schedule_manual: 0,
        lookahead: 0,
        sync_period: 5,
        alpha: 0.5,
        weight_decay: 0.0,
        grad_clip_norm: 0.0,
        grad_clip_value: 0.0,
        num_threads: 1,
        simd_tier: 0,
    }
}

/// Fills `config` with the defaults (Adam at lr 1e-3, no Lookahead, no clipping, skip
/// non-finite updates, one thread, default SIMD tier) and sets `struct_size`.
#[no_mangle]
pub unsafe extern "C" fn flatopt_config_init(config: *mut flatopt_config) -> flatopt_status {
    guard(|| {
        // SAFETY: NULL (rejected) or valid for writes (C contract).
        unsafe { write_out("config", config, config_defaults())? };
        Ok(FLATOPT_OK)
    })
}

fn tier_from_c(name: &'static str, x: u32) -> Result<Option<Tier>, Error> {
    if x == 0 {
        return Ok(None);
    }
    let t = u8::try_from(x)
        .ok()
        .and_then(Tier::from_u8)
        .ok_or_else(|| Error::invalid(name, x, "must be a flatopt_simd_tier value"))?;
    Ok(Some(t.check()?))
}

/// # Safety
/// `c` is a valid config (its `schedule` NULL or valid).
unsafe fn config_from_c(c: &flatopt_config) -> Result<Config, Error> {
    let base = {
        let b = c.base;
        if (b.struct_size as usize) < std::mem::size_of::<flatopt_base_params>() {
            return Err(Error::invalid(
                "base.struct_size",
                b.struct_size,
                "initialise config.base with flatopt_base_params_init or flatopt_config_init",
            ));
        }
        b.to_base()?
    };
    let lr = if c.schedule.is_null() {
        let s = Schedule::Fixed { lr: c.lr };
        s.validate()?;
        s
    } else {
        let min = std::mem::offset_of!(flatopt_schedule, n_values) + std::mem::size_of::<usize>();
        // SAFETY: non-null, points to a flatopt_schedule (caller contract).
        let s = unsafe { read_versioned("schedule", c.schedule, schedule_defaults(0), min)? };
        // SAFETY: its list pointers are valid for their counts (caller contract).
        unsafe { s.to_schedule()? }
    };
    let clip = |name: &'static str, x: f64| -> Result<Option<f64>, Error> {
        if x == 0.0 {
            Ok(None)
        } else if x.is_finite() && x > 0.0 {
            Ok(Some(x))
        } else {
            Err(Error::invalid(
                name,
                x,
                "must be finite and > 0 (0 disables)",
            ))
        }
    };
    let cfg = Config {
        base,
        lr,
        schedule_mode: if flag("schedule_manual", c.schedule_manual)? {
            ScheduleMode::Manual
        } else {
            ScheduleMode::PerUpdate
        },
        weight_decay: c.weight_decay,
        grad_clip_norm: clip("grad_clip_norm", c.grad_clip_norm)?,
        grad_clip_value: clip("grad_clip_value", c.grad_clip_value)?,
        lookahead: flag("lookahead", c.lookahead)?.then_some(Lookahead {
            sync_period: c.sync_period,
            alpha: c.alpha,
        }),
        nonfinite: match c.nonfinite {
            0 => NonFinitePolicy::Skip,
            1 => NonFinitePolicy::Error,
            2 => NonFinitePolicy::Propagate,
            x => {
                return Err(Error::invalid(
                    "nonfinite",
                    x,
                    "must be a flatopt_nonfinite value",
                ))
            }
        },
        num_threads: c.num_threads as usize,
        tier: tier_from_c("simd_tier", c.simd_tier)?,
    };
    cfg.validate()?;
    Ok(cfg)
}

// ---------------------------------------------------------------------------------------------
// The optimizer handle.

/// A host buffer pair as registered.
#[derive(Debug, Clone, Copy)]
struct HostBuf {
    param: *mut f32,
    grad: *const f32,
    len: usize,
}

/// An optimizer over host-owned buffers. Create with `flatopt_optimizer_new`, release with
/// `flatopt_optimizer_free`. One handle must not be used from two threads at once, except
/// `flatopt_optimizer_step_range` between `flatopt_optimizer_begin_step` and
/// `flatopt_optimizer_end_step` (and read-only queries among themselves). A call that overlaps
/// a conflicting call on the same handle from another thread is detected and refused with
/// `FLATOPT_ERR_BUSY` (nothing changes) rather than being undefined behaviour.
pub struct flatopt_optimizer {
    /// Who uses the handle now: 0 nobody, `EXCLUSIVE` one changing call, n > 0 n shared calls.
    lock: AtomicUsize,
    inner: UnsafeCell<Inner>,
}

const EXCLUSIVE: usize = usize::MAX;

/// The handle's contents, reached only through [`Exclusive`] or [`Shared`].
struct Inner {
    engine: Optimizer,
    bufs: Vec<HostBuf>,
    /// Scratch for the slices of one step, capacity reserved at registration (no allocation
    /// per step); always empty between calls.
    params: Vec<&'static mut [f32]>,
    grads: Vec<&'static [f32]>,
    /// The step begun by `flatopt_optimizer_begin_step`, with the state pointers it needs.
    pending: Option<Step>,
    raw: Vec<RawState>,
    /// Scratch for the overlap check of per-call gradient pointers (capacity 2 per buffer).
    spans: Vec<Span>,
}

/// Empties the per-step slice scratch when dropped, so that references built from host
/// pointers never outlive the call that made them (also on unwind).
struct ScratchGuard<'a> {
    params: &'a mut Vec<&'static mut [f32]>,
    grads: &'a mut Vec<&'static [f32]>,
}

impl Drop for ScratchGuard<'_> {
    fn drop(&mut self) {
        self.params.clear();
        self.grads.clear();
    }
}

/// Exclusive access to a handle for the duration of one call (released on drop).
struct Exclusive<'a> {
    lock: &'a AtomicUsize,
    inner: &'a mut Inner,
}

/// Shared, read-only access to a handle for the duration of one call (released on drop).
struct Shared<'a> {
    lock: &'a AtomicUsize,
    inner: &'a Inner,
}

impl Drop for Exclusive<'_> {
    fn drop(&mut self) {
        self.lock.store(0, Ordering::Release);
    }
}

impl Drop for Shared<'_> {
    fn drop(&mut self) {
        self.lock.fetch_sub(1, Ordering::Release);
    }
}

impl std::ops::Deref for Exclusive<'_> {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        self.inner
    }
}

impl std::ops::DerefMut for Exclusive<'_> {
    fn deref_mut(&mut self) -> &mut Inner {
        self.inner
    }
}

impl std::ops::Deref for Shared<'_> {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        self.inner
    }
}

fn busy() -> Error {
    Error::Busy(
        "the optimizer handle is in use by another thread (one handle, one thread at a time)",
    )
}

/// Takes a handle for a call that changes it.
///
/// # Safety
/// `opt` is NULL (rejected) or a live handle from `flatopt_optimizer_new`.
unsafe fn handle<'a>(opt: *mut flatopt_optimizer) -> Result<Exclusive<'a>, Error> {
    // SAFETY: NULL is rejected; otherwise a live handle (C contract). Only a shared reference
    // is formed here; concurrent callers may form the same one.
    let h: &'a flatopt_optimizer =
        unsafe { opt.as_ref() }.ok_or(Error::NullPointer { name: "opt" })?;
    h.lock
        .compare_exchange(0, EXCLUSIVE, Ordering::Acquire, Ordering::Relaxed)
        .map_err(|_| busy())?;
    // SAFETY: the lock is ours alone (0 -> EXCLUSIVE succeeded), so no other reference to the
    // contents exists until `Exclusive` is dropped and stores 0.
    let inner = unsafe { &mut *h.inner.get() };
    Ok(Exclusive {
        lock: &h.lock,
        inner,
    })
}

/// Takes a handle for a call that only reads it (or, for `step_range`, writes disjoint
/// host-owned elements through pointers set up by `begin_step`).
///
/// # Safety
/// `opt` is NULL (rejected) or a live handle from `flatopt_optimizer_new`.
unsafe fn handle_ref<'a>(opt: *const flatopt_optimizer) -> Result<Shared<'a>, Error> {
    // SAFETY: NULL is rejected; otherwise a live handle (C contract).
    let h: &'a flatopt_optimizer =
        unsafe { opt.as_ref() }.ok_or(Error::NullPointer { name: "opt" })?;
    let mut seen = h.lock.load(Ordering::Relaxed);
    loop {
        if seen == EXCLUSIVE || seen == EXCLUSIVE - 1 {
            return Err(busy());
        }
        match h
            .lock
            .compare_exchange_weak(seen, seen + 1, Ordering::Acquire, Ordering::Relaxed)
        {
            Ok(_) => break,
            Err(now) => seen = now,
        }
    }
    // SAFETY: no exclusive user exists while the count is above 0, so shared references to
    // the contents may coexist.
    let inner = unsafe { &*h.inner.get() };
    Ok(Shared {
        lock: &h.lock,
        inner,
    })
}

impl Inner {
    /// Registers one more buffer: allowed until the first update (or after a reset).
    fn add(&mut self, buf: HostBuf) -> Result<(), Error> {
        if self.engine.step_count() > 0 || self.pending.is_some() {
            return Err(Error::InvalidState(
                "registering a buffer after the first update (call flatopt_optimizer_reset first)",
            ));
        }
        check_buf("param", buf.param, buf.len)?;
        if !buf.grad.is_null() {
            // NULL is allowed here: gradients then come with each step_with_grads call.
            check_buf("grad", buf.grad, buf.len)?;
        }
        let mut all = self.bufs.clone();
        all.push(buf);
        let mut spans = Vec::with_capacity(2 * all.len());
        for (i, b) in all.iter().enumerate() {
            spans.push(span(b.param, b.len, true, "param", i));
            spans.push(span(b.grad, b.len, false, "grad", i));
        }
        check_disjoint(&mut spans)?;
        let params: Vec<&[f32]> = all
            .iter()
            // SAFETY: checked above; the host guarantees each param buffer is readable.
            .map(|b| unsafe { slice(b.param, b.len) })
            .collect();
        self.engine.register(&params)?;
        self.params = Vec::with_capacity(all.len());
        self.grads = Vec::with_capacity(all.len());
        self.raw = Vec::with_capacity(all.len());
        self.spans = spans;
        self.bufs = all;
        Ok(())
    }

    /// Runs `f` with slices over every registered param and the gradients: the registered
    /// ones (`given` = None) or `given[i]` for buffer `i`. Checks the gradient pointers and
    /// their overlap with the params first.
    ///
    /// # Safety
    /// Host pointers are valid and not accessed by anyone else during the call; `given` is
    /// `None` or points to one pointer per registered buffer.
    unsafe fn with_slices<R>(
        &mut self,
        given: Option<*const *const f32>,
        f: impl FnOnce(&mut Optimizer, &mut [&mut [f32]], &[&[f32]]) -> Result<R, Error>,
    ) -> Result<R, Error> {
        let bufs = &self.bufs;
        let grad_ptr = |i: usize| match given {
            None => bufs[i].grad,
            // SAFETY: `given` holds one pointer per registered buffer (caller contract).
            Some(p) => unsafe { p.add(i).read() },
        };
        for (i, b) in bufs.iter().enumerate() {
            check_buf("grad", grad_ptr(i), b.len)?;
        }
        if given.is_some() {
            // Registered gradients were checked for overlap at registration; these are new.
            self.spans.clear();
            for (i, b) in bufs.iter().enumerate() {
                self.spans.push(span(b.param, b.len, true, "param", i));
                self.spans.push(span(grad_ptr(i), b.len, false, "grad", i));
            }
            check_disjoint(&mut self.spans)?;
        }
        let guard = ScratchGuard {
            params: &mut self.params,
            grads: &mut self.grads,
        };
        for (i, b) in bufs.iter().enumerate() {
            // SAFETY: pointers checked (non-null unless empty, aligned, size fits, disjoint
            // from every other buffer of this call); the host guarantees they are valid and
            // ours alone during this call. The 'static lifetime is never observed:
            // `ScratchGuard` empties the vectors before this function returns or unwinds.
            guard.params.push(unsafe { slice_mut(b.param, b.len) });
            // SAFETY: as above.
            guard.grads.push(unsafe { slice(grad_ptr(i), b.len) });
        }
        f(&mut self.engine, guard.params, guard.grads)
    }
}

fn check_no_pending(h: &Inner) -> Result<(), Error> {
    if h.pending.is_some() {
        return Err(Error::InvalidState(
            "a step begun with flatopt_optimizer_begin_step is not finished (call flatopt_optimizer_end_step)",
        ));
    }
    Ok(())
}

/// Maps an update outcome to a status, recording a message for a skipped update.
fn outcome_status(outcome: Outcome) -> flatopt_status {
    match outcome {
        Outcome::Applied { .. } => FLATOPT_OK,
        Outcome::Skipped {
            buffer,
            index,
            value,
        } => {
            if buffer == usize::MAX {
                set_message(format_args!(
                    "update skipped: the supplied sum of squares is not finite (a non-finite \
                     gradient in another shard)"
                ));
            } else {
                set_message(format_args!(
                    "update skipped: non-finite gradient: buffer {buffer} holds {value} at index {index}"
                ));
            }
            FLATOPT_SKIPPED
        }
    }
}

/// Creates an optimizer from `config` (validated: the message names the first bad field) and
/// writes the handle to `*out`. Release it with `flatopt_optimizer_free`.
#[no_mangle]
pub unsafe extern "C" fn flatopt_optimizer_new(
    config: *const flatopt_config,
    out: *mut *mut flatopt_optimizer,
) -> flatopt_status {
    guard(|| {
        if out.is_null() {
            return Err(Error::NullPointer { name: "out" });
        }
        let min = std::mem::size_of::<flatopt_config>();
        // SAFETY: NULL is rejected; otherwise points to a flatopt_config (C contract).
        let c = unsafe { read_versioned("config", config, config_defaults(), min)? };
        // SAFETY: the config's schedule pointer is NULL or valid (C contract).
        let cfg = unsafe { config_from_c(&c)? };
        let engine = Optimizer::new(cfg)?;
        let h = Box::new(flatopt_optimizer {
            lock: AtomicUsize::new(0),
            inner: UnsafeCell::new(Inner {
                engine,
                bufs: Vec::new(),
                params: Vec::new(),
                grads: Vec::new(),
                pending: None,
                raw: Vec::new(),
                spans: Vec::new(),
            }),
        });
        // SAFETY: `out` is non-null (checked) and valid for writes (C contract).
        unsafe { write_out("out", out, Box::into_raw(h))? };
        Ok(FLATOPT_OK)
    })
}

/// Releases an optimizer. NULL is accepted and ignored. The handle must not be used afterwards.
#[no_mangle]
pub unsafe extern "C" fn flatopt_optimizer_free(opt: *mut flatopt_optimizer) {
    if opt.is_null() {
        return;
    }
    guard_value((), || {
        // SAFETY: a live handle from `flatopt_optimizer_new` (C contract); taking it
        // exclusively proves no other thread is inside a call on it right now.
        match unsafe { handle(opt) } {
            Ok(h) => {
                std::mem::forget(h); // keep the lock taken: the handle is going away
                                     // SAFETY: a handle from `flatopt_optimizer_new`, freed once (C contract), and
                                     // no call is using it (the lock is ours).
                drop(unsafe { Box::from_raw(opt) });
            }
            Err(_) => set_message(format_args!(
                "flatopt_optimizer_free: the handle is in use by another thread; not freed"
            )),
        }
    })
}

/// Registers a parameter buffer of `len` floats and its gradient buffer (the gradient may be
/// NULL if every step passes gradients with `flatopt_optimizer_step_with_grads`). The current
/// parameter values become the Lookahead slow weights. Both buffers stay owned by the caller and
/// must stay valid while the optimizer uses them. Allowed before the first update and after
/// `flatopt_optimizer_reset`. Parameters must not overlap each other or any gradient.
/// Registering re-sizes the optimizer's state: like `flatopt_optimizer_reset` it sets the
/// counters and the schedule back to zero, and pointers from `flatopt_optimizer_slow_weights`
/// become invalid.
#[no_mangle]
pub unsafe extern "C" fn flatopt_optimizer_add_param(
    opt: *mut flatopt_optimizer,
    param: *mut c_float,
    grad: *const c_float,
    len: usize,
) -> flatopt_status {
    guard(|| {
        // SAFETY: see `handle`.
        let mut h = unsafe { handle(opt)? };
        if param.is_null() && len > 0 {
            return Err(Error::NullPointer { name: "param" });
        }
        h.add(HostBuf { param, grad, len })?;
        Ok(FLATOPT_OK)
    })
}

/// One update of every registered buffer with the registered gradient buffers. Returns
/// `FLATOPT_OK`, `FLATOPT_SKIPPED` (a gradient held NaN/Inf under the skip policy: nothing
/// changed) or an error (nothing changed).
#[no_mangle]
pub unsafe extern "C" fn flatopt_optimizer_step(opt: *mut flatopt_optimizer) -> flatopt_status {
    guard(|| {
        // SAFETY: see `handle`.
        let mut h = unsafe { handle(opt)? };
        check_no_pending(&h)?;
        // SAFETY: registered host pointers, valid during the call (C contract).
        let outcome = unsafe { h.with_slices(None, |e, p, g| e.update(p, g))? };
        Ok(outcome_status(outcome))
    })
}

/// One update with gradients passed for this call: `grads[i]` is the gradient of registered
/// buffer `i` (same length); `n_grads` must equal the number of registered buffers.
#[no_mangle]
pub unsafe extern "C" fn flatopt_optimizer_step_with_grads(
    opt: *mut flatopt_optimizer,
    grads: *const *const c_float,
    n_grads: usize,
) -> flatopt_status {
    guard(|| {
        // SAFETY: see `handle`.
        let mut h = unsafe { handle(opt)? };
        check_no_pending(&h)?;
        if grads.is_null() {
            return Err(Error::NullPointer { name: "grads" });
        }
        if n_grads != h.bufs.len() {
            return Err(Error::LengthMismatch {
                what: "n_grads (number of registered buffers)".to_string(),
                expected: h.bufs.len(),
                got: n_grads,
            });
        }
        // SAFETY: `grads` holds `n_grads` = registered-count pointers (C contract).
        let outcome = unsafe { h.with_slices(Some(grads), |e, p, g| e.update(p, g))? };
        Ok(outcome_status(outcome))
    })
}

/// The number of sum-of-squares blocks over all registered buffers (`ceil(len / block size)`
/// per buffer): the length of the array `flatopt_optimizer_sum_squares_partials` fills.
#[no_mangle]
pub unsafe extern "C" fn flatopt_optimizer_sum_squares_block_count(
    opt: *const flatopt_optimizer,
    out: *mut usize,
) -> flatopt_status {
    // SAFETY: C contract of this function.
    unsafe { query(opt, out, |h| h.engine.sum_squares_block_count()) }
}

/// Sharded training, phase one: writes the block partial sums of squares of the registered
/// gradients into `partials` (`n` = `flatopt_optimizer_sum_squares_block_count`). Exchange
/// them between processes (e.g. MPI_Allgather), add all of them in global block order
/// starting from 0.0, and pass the sum to `flatopt_optimizer_step_with_sum_squares`. When every
/// shard starts on a block boundary (`flatopt_sum_squares_block_size`), the sharded run is
/// bit-identical to a single process.
#[no_mangle]
pub unsafe extern "C" fn flatopt_optimizer_sum_squares_partials(
    opt: *mut flatopt_optimizer,
    partials: *mut c_double,
    n: usize,
) -> flatopt_status {
    guard(|| {
        // SAFETY: see `handle`.
        let mut h = unsafe { handle(opt)? };
        check_no_pending(&h)?;
        if partials.is_null() && n > 0 {
            return Err(Error::NullPointer { name: "partials" });
        }
        if !(partials as usize).is_multiple_of(std::mem::align_of::<f64>()) {
            return Err(Error::invalid(
                "partials",
                format!("{partials:p}"),
                "must be aligned to 8 bytes",
            ));
        }
        let want = h.engine.sum_squares_block_count();
        if n != want {
            return Err(Error::LengthMismatch {
                what: "n (see flatopt_optimizer_sum_squares_block_count)".to_string(),
                expected: want,
                got: n,
            });
        }
        let out: &mut [f64] = if n == 0 {
            &mut []
        } else {
            // SAFETY: non-null, aligned, `n` writable doubles owned by the caller (C contract);
            // doubles cannot be the caller's float buffers registered with this handle.
            unsafe { std::slice::from_raw_parts_mut(partials, n) }
        };
        // SAFETY: registered host pointers, valid during the call (C contract).
        unsafe { h.with_slices(None, |e, _, g| e.sum_squares_partials(g, out))? };
        Ok(FLATOPT_OK)
    })
}

/// Sharded training, phase two: one update of the registered buffers using the global sum of
/// squares `sum_squares` (see `flatopt_optimizer_sum_squares_partials`) for clipping by norm
/// and the non-finite check. A non-finite sum skips the update on every shard alike
/// (`FLATOPT_SKIPPED` or `FLATOPT_ERR_NON_FINITE` by policy).
#[no_mangle]
pub unsafe extern "C" fn flatopt_optimizer_step_with_sum_squares(
    opt: *mut flatopt_optimizer,
    sum_squares: c_double,
) -> flatopt_status {
    guard(|| {
        // SAFETY: see `handle`.
        let mut h = unsafe { handle(opt)? };
        check_no_pending(&h)?;
        // SAFETY: registered host pointers, valid during the call (C contract).
        let outcome =
            unsafe { h.with_slices(None, |e, p, g| e.update_with_sum_squares(p, g, sum_squares))? };
        Ok(outcome_status(outcome))
    })
}

/// First phase of a step split over the host's own threads: validates, runs the gradient norm
/// / non-finite pass over the registered gradients and fixes the per-step scalars. Returns
/// `FLATOPT_SKIPPED` (nothing to apply; the step is over) or `FLATOPT_OK`, after which the host
/// calls `flatopt_optimizer_step_range` on disjoint element ranges covering
/// `[0, flatopt_optimizer_total_len)` (from any threads, concurrently) and then
/// `flatopt_optimizer_end_step`. Element indices run over the registered buffers in order.
/// A begun step cannot be abandoned (ranges already applied cannot be undone): finish it.
#[no_mangle]
pub unsafe extern "C" fn flatopt_optimizer_begin_step(
    opt: *mut flatopt_optimizer,
) -> flatopt_status {
    guard(|| {
        // SAFETY: see `handle`.
        let mut h = unsafe { handle(opt)? };
        check_no_pending(&h)?;
        // SAFETY: registered host pointers, valid during the call (C contract).
        let begun = unsafe { h.with_slices(None, |e, _, g| e.begin_update(g))? };
        match begun {
            Err(skipped) => Ok(outcome_status(skipped)),
            Ok(step) => {
                let inner: &mut Inner = &mut h;
                inner.raw.clear(); // capacity reserved at registration: no allocation
                let states = inner.engine.states_mut().zip(&inner.bufs);
                inner.raw.extend(states.map(|(s, b)| s.into_raw(b.len)));
                inner.pending = Some(step);
                Ok(FLATOPT_OK)
            }
        }
    })
}

/// Applies the begun step to elements `[begin, end)` of the concatenation of the registered
/// buffers. Concurrent calls on disjoint ranges of one handle are allowed (and are the point);
/// the result does not depend on how the range is split.
#[no_mangle]
pub unsafe extern "C" fn flatopt_optimizer_step_range(
    opt: *const flatopt_optimizer,
    begin: usize,
    end: usize,
) -> flatopt_status {
    guard(|| {
        // SAFETY: see `handle_ref`. Only shared access is taken here, so concurrent range calls
        // do not alias a `&mut`.
        let h = unsafe { handle_ref(opt)? };
        let step = h.pending.ok_or(Error::InvalidState(
            "flatopt_optimizer_step_range outside begin_step / end_step",
        ))?;
        let total: usize = h.bufs.iter().map(|b| b.len).sum();
        if begin > end || end > total {
            return Err(Error::invalid(
                "range",
                format!("[{begin}, {end})"),
                "must satisfy begin <= end <= total registered length",
            ));
        }
        let mut offset = 0;
        for (b, raw) in h.bufs.iter().zip(&h.raw) {
            let (lo, hi) = (begin.max(offset), end.min(offset + b.len));
            if lo < hi {
                let (a, n) = (lo - offset, hi - lo);
                let at = |p: *mut f32| if p.is_null() { p } else { p.wrapping_add(a) };
                // SAFETY: `[a, a+n)` lies inside buffer `b` (clamped above). Param, grad and
                // the optimizer-owned state were validated at registration / begin_step and
                // stay valid until end_step; disjoint ranges from concurrent callers touch
                // disjoint elements (the documented contract), so these slices never alias.
                let buffers = unsafe {
                    Buffers {
                        param: slice_mut(b.param.add(a), n),
                        grad: slice(b.grad.add(a), n),
                        m: slice_mut(at(raw.m), if raw.m.is_null() { 0 } else { n }),
                        v: slice_mut(at(raw.v), if raw.v.is_null() { 0 } else { n }),
                        v_max: slice_mut(at(raw.v_max), if raw.v_max.is_null() { 0 } else { n }),
                        slow: slice_mut(at(raw.slow), if raw.slow.is_null() { 0 } else { n }),
                    }
                };
                kernels::apply(step.tier(), step.plan(), buffers)?;
            }
            offset += b.len;
        }
        Ok(FLATOPT_OK)
    })
}

/// Last phase of a split step: counts the update and advances the schedule.
#[no_mangle]
pub unsafe extern "C" fn flatopt_optimizer_end_step(opt: *mut flatopt_optimizer) -> flatopt_status {
    guard(|| {
        // SAFETY: see `handle`.
        let mut h = unsafe { handle(opt)? };
        let step = h.pending.ok_or(Error::InvalidState(
            "flatopt_optimizer_end_step without flatopt_optimizer_begin_step",
        ))?;
        h.engine.finish_update(step)?;
        h.pending = None;
        h.raw.clear();
        Ok(FLATOPT_OK)
    })
}

/// Resets the optimizer to its state right after registration: moments zeroed, counters and
/// schedule reset, slow weights copied from the current parameter values. Registration is
/// allowed again afterwards.
#[no_mangle]
pub unsafe extern "C" fn flatopt_optimizer_reset(opt: *mut flatopt_optimizer) -> flatopt_status {
    guard(|| {
        // SAFETY: see `handle`.
        let mut h = unsafe { handle(opt)? };
        check_no_pending(&h)?;
        if h.bufs.is_empty() {
            return Err(Error::InvalidState(
                "reset before any buffer was registered",
            ));
        }
        let params: Vec<&[f32]> = h
            .bufs
            .iter()
            // SAFETY: registered param pointers were checked at registration (non-null unless
            // empty, aligned, disjoint) and are valid and only read during this call (C
            // contract). Gradients are not needed (and may be NULL).
            .map(|b| unsafe { slice(b.param, b.len) })
            .collect();
        h.engine.reset(&params)?;
        Ok(FLATOPT_OK)
    })
}

/// Writes a value read from a handle to `out` (the shape of every query).
///
/// # Safety
/// `opt` NULL or a live handle; `out` NULL or writable.
unsafe fn query<T>(
    opt: *const flatopt_optimizer,
    out: *mut T,
    read: impl FnOnce(&Inner) -> T,
) -> flatopt_status {
    guard(|| {
        // SAFETY: see `handle_ref`.
        let h = unsafe { handle_ref(opt)? };
        let value = read(&h);
        // SAFETY: NULL is rejected; otherwise valid for writes (C contract).
        unsafe { write_out("out", out, value)? };
        Ok(FLATOPT_OK)
    })
}

/// Number of applied updates.
#[no_mangle]
pub unsafe extern "C" fn flatopt_optimizer_step_count(
    opt: *const flatopt_optimizer,
    out: *mut u64,
) -> flatopt_status {
    // SAFETY: C contract of this function.
    unsafe { query(opt, out, |h| h.engine.step_count()) }
}

/// Number of updates skipped because of non-finite gradients.
#[no_mangle]
pub unsafe extern "C" fn flatopt_optimizer_skipped_count(
    opt: *const flatopt_optimizer,
    out: *mut u64,
) -> flatopt_status {
    // SAFETY: C contract of this function.
    unsafe { query(opt, out, |h| h.engine.skipped_count()) }
}

/// The learning rate the next update will use.
#[no_mangle]
pub unsafe extern "C" fn flatopt_optimizer_current_lr(
    opt: *const flatopt_optimizer,
    out: *mut c_float,
) -> flatopt_status {
    // SAFETY: C contract of this function.
    unsafe { query(opt, out, |h| h.engine.current_lr()) }
}

/// The SIMD tier (a `flatopt_simd_tier` value) this optimizer runs on.
#[no_mangle]
pub unsafe extern "C" fn flatopt_optimizer_simd_tier(
    opt: *const flatopt_optimizer,
    out: *mut u32,
) -> flatopt_status {
    // SAFETY: C contract of this function.
    unsafe { query(opt, out, |h| h.engine.tier() as u32) }
}

/// The number of threads used by `flatopt_optimizer_step`.
#[no_mangle]
pub unsafe extern "C" fn flatopt_optimizer_num_threads(
    opt: *const flatopt_optimizer,
    out: *mut u32,
) -> flatopt_status {
    // SAFETY: C contract of this function.
    unsafe { query(opt, out, |h| h.engine.num_threads() as u32) }
}

/// The number of registered buffers.
#[no_mangle]
pub unsafe extern "C" fn flatopt_optimizer_num_params(
    opt: *const flatopt_optimizer,
    out: *mut usize,
) -> flatopt_status {
    // SAFETY: C contract of this function.
    unsafe { query(opt, out, |h| h.bufs.len()) }
}

/// The total number of registered elements (the range of `flatopt_optimizer_step_range`).
#[no_mangle]
pub unsafe extern "C" fn flatopt_optimizer_total_len(
    opt: *const flatopt_optimizer,
    out: *mut usize,
) -> flatopt_status {
    // SAFETY: C contract of this function.
    unsafe { query(opt, out, |h| h.bufs.iter().map(|b| b.len).sum()) }
}

/// Sets the thread count (1: the caller's thread). Results do not depend on it.
#[no_mangle]
pub unsafe extern "C" fn flatopt_optimizer_set_num_threads(
    opt: *mut flatopt_optimizer,
    num_threads: u32,
) -> flatopt_status {
    guard(|| {
        // SAFETY: see `handle`.
        let mut h = unsafe { handle(opt)? };
        check_no_pending(&h)?;
        h.engine.set_num_threads(num_threads as usize)?;
        Ok(FLATOPT_OK)
    })
}

/// Sets the SIMD tier (a `flatopt_simd_tier`; 0: the process default). Results do not depend
/// on it.
#[no_mangle]
pub unsafe extern "C" fn flatopt_optimizer_set_simd_tier(
    opt: *mut flatopt_optimizer,
    tier: u32,
) -> flatopt_status {
    guard(|| {
        // SAFETY: see `handle`.
        let mut h = unsafe { handle(opt)? };
        check_no_pending(&h)?;
        let t = tier_from_c("tier", tier)?.unwrap_or_else(simd::default_tier);
        h.engine.set_tier(t)?;
        Ok(FLATOPT_OK)
    })
}

fn slow_of(h: &Inner, index: usize) -> Result<&[f32], Error> {
    if h.engine.config().lookahead.is_none() {
        return Err(Error::InvalidState(
            "slow weights requested without Lookahead",
        ));
    }
    h.engine.slow_weights(index).ok_or_else(|| {
        Error::invalid(
            "index",
            index,
            "must be less than the number of registered buffers",
        )
    })
}

/// Borrows the Lookahead slow weights of buffer `index`: `*out` points to `*out_len` floats
/// owned by the optimizer, valid until the next step, reset or free. Read only.
#[no_mangle]
pub unsafe extern "C" fn flatopt_optimizer_slow_weights(
    opt: *const flatopt_optimizer,
    index: usize,
    out: *mut *const c_float,
    out_len: *mut usize,
) -> flatopt_status {
    guard(|| {
        // SAFETY: see `handle_ref`.
        let h = unsafe { handle_ref(opt)? };
        if out.is_null() || out_len.is_null() {
            return Err(Error::NullPointer {
                name: if out.is_null() { "out" } else { "out_len" },
            });
        }
        let s = slow_of(&h, index)?;
        // SAFETY: both non-null (checked) and valid for writes (C contract).
        unsafe {
            write_out("out", out, s.as_ptr())?;
            write_out("out_len", out_len, s.len())?;
        }
        Ok(FLATOPT_OK)
    })
}

/// Copies the Lookahead slow weights of buffer `index` into `dst` (`len` must equal the
/// buffer's length).
#[no_mangle]
pub unsafe extern "C" fn flatopt_optimizer_copy_slow_weights(
    opt: *const flatopt_optimizer,
    index: usize,
    dst: *mut c_float,
    len: usize,
) -> flatopt_status {
    guard(|| {
        // SAFETY: see `handle_ref`.
        let h = unsafe { handle_ref(opt)? };
        let s = slow_of(&h, index)?;
        check_buf("dst", dst, len)?;
        if len != s.len() {
            return Err(Error::LengthMismatch {
                what: format!("dst for slow weights of buffer {index}"),
                expected: s.len(),
                got: len,
            });
        }
        // SAFETY: checked pointer, `len` writable floats owned by the caller (C contract);
        // it cannot alias the optimizer's own slow weights, which the caller only sees
        // read-only.
        unsafe { slice_mut(dst, len) }.copy_from_slice(s);
        Ok(FLATOPT_OK)
    })
}

/// Advances the learning-rate schedule by one (epoch style; meant for `schedule_manual`).
#[no_mangle]
pub unsafe extern "C" fn flatopt_optimizer_schedule_step(
    opt: *mut flatopt_optimizer,
) -> flatopt_status {
    guard(|| {
        // SAFETY: see `handle`.
        let mut h = unsafe { handle(opt)? };
        h.engine.step_schedule();
        Ok(FLATOPT_OK)
    })
}

/// Feeds a metric to a ReduceOnPlateau schedule.
#[no_mangle]
pub unsafe extern "C" fn flatopt_optimizer_schedule_step_metric(
    opt: *mut flatopt_optimizer,
    metric: c_double,
) -> flatopt_status {
    guard(|| {
        // SAFETY: see `handle`.
        let mut h = unsafe { handle(opt)? };
        h.engine.step_schedule_metric(metric)?;
        Ok(FLATOPT_OK)
    })
}

// ---------------------------------------------------------------------------------------------
// SIMD tier selection.

/// The process-wide default SIMD tier (a `flatopt_simd_tier` value): `FLATOPT_SIMD` if it
/// names an available tier, else the best one.
#[no_mangle]
pub extern "C" fn flatopt_default_simd_tier() -> u32 {
    guard_value(Tier::Scalar as u32, || simd::default_tier() as u32)
}

/// Sets the process-wide default SIMD tier (used by optimizers created afterwards and by the
/// stateless kernels).
#[no_mangle]
pub extern "C" fn flatopt_set_default_simd_tier(tier: u32) -> flatopt_status {
    guard(|| {
        let t = tier_from_c("tier", tier)?.unwrap_or_else(Tier::best);
        simd::set_default_tier(t)?;
        Ok(FLATOPT_OK)
    })
}

/// 1 if the tier can run in this build on this CPU, else 0.
#[no_mangle]
pub extern "C" fn flatopt_simd_tier_available(tier: u32) -> i32 {
    guard_value(0, || {
        u8::try_from(tier)
            .ok()
            .and_then(Tier::from_u8)
            .is_some_and(Tier::is_available) as i32
    })
}

/// The name of a tier ("scalar", "portable", "avx2", "avx512"), "default" for 0, "unknown" for
/// other values. Static storage.
#[no_mangle]
pub extern "C" fn flatopt_simd_tier_name(tier: u32) -> *const c_char {
    let s: &'static [u8] = match tier {
        0 => b"default\0",
        1 => b"scalar\0",
        2 => b"portable\0",
        3 => b"avx2\0",
        4 => b"avx512\0",
        _ => b"unknown\0",
    };
    s.as_ptr().cast()
}

// ---------------------------------------------------------------------------------------------
// The stateless kernels: the caller owns every buffer and passes the per-step scalars.

/// Per-step arguments of the stateless update functions. Initialise with
/// `flatopt_step_args_init`, then set fields.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct flatopt_step_args {
    /// `sizeof(flatopt_step_args)`, set by the init function.
    pub struct_size: u32,
    /// 1 to run the Lookahead sync after the update (needs the `slow` buffer).
    pub sync: u32,
    /// 1-based number of this base-optimizer step (bias correction, momentum's first step).
    pub step: u64,
    /// Learning rate of this step.
    pub lr: c_double,
    /// Multiply gradients by this first (global-norm clipping: `min(1, max_norm / norm)`,
    /// see `flatopt_clip_scale`); 1 disables.
    pub clip_scale: c_double,
    /// Clip gradient elements to [-c, c]; 0 disables.
    pub clip_value: c_double,
    /// Coupled weight decay (`g += wd * p`); 0 disables.
    pub weight_decay: c_double,
    /// Lookahead slow-weight step in [0, 1] (used when `sync` is 1).
    pub alpha: c_double,
}

fn step_args_defaults() -> flatopt_step_args {
    flatopt_step_args {
        struct_size: std::mem::size_of::<flatopt_step_args>() as u32,
        sync: 0,
        step: 1,
        lr: 1e-3,
        clip_scale: 1.0,
        clip_value: 0.0,
        weight_decay: 0.0,
        alpha: 0.5,
    }
}

/// Fills `args` with defaults (step 1, lr 1e-3, no clipping, no decay, no sync).
#[no_mangle]
pub unsafe extern "C" fn flatopt_step_args_init(args: *mut flatopt_step_args) -> flatopt_status {
    guard(|| {
        // SAFETY: NULL (rejected) or valid for writes (C contract).
        unsafe { write_out("args", args, step_args_defaults())? };
        Ok(FLATOPT_OK)
    })
}

/// Builds the plan of one stateless update after validating every argument.
///
/// # Safety
/// `hp` / `args` NULL or valid.
unsafe fn stateless_plan(
    hp: *const flatopt_base_params,
    args: *const flatopt_step_args,
    expect_kind: flatopt_base_kind,
) -> Result<Plan, Error> {
    let min_hp = std::mem::size_of::<flatopt_base_params>();
    // SAFETY: NULL rejected, else a valid struct (C contract).
    let hp = unsafe { read_versioned("hp", hp, base_defaults(expect_kind as u32), min_hp)? };
    let min_args = std::mem::size_of::<flatopt_step_args>();
    // SAFETY: as above.
    let a = unsafe { read_versioned("args", args, step_args_defaults(), min_args)? };
    if hp.kind != expect_kind as u32 {
        return Err(Error::invalid(
            "hp.kind",
            hp.kind,
            "does not match the update function called",
        ));
    }
    let base = hp.to_base()?;
    if a.step == 0 {
        return Err(Error::invalid(
            "step",
            0,
            "must be >= 1 (1-based step number)",
        ));
    }
    crate::error::non_negative("lr", a.lr)?;
    if !(a.clip_scale.is_finite() && a.clip_scale > 0.0 && a.clip_scale <= 1.0) {
        return Err(Error::invalid(
            "clip_scale",
            a.clip_scale,
            "must be in (0, 1]",
        ));
    }
    crate::error::non_negative("clip_value", a.clip_value)?;
    crate::error::non_negative("weight_decay", a.weight_decay)?;
    let sync = flag("sync", a.sync)?;
    if sync {
        crate::error::unit_closed("alpha", a.alpha)?;
    }
    Ok(Plan {
        clip_scale: (a.clip_scale != 1.0).then_some(a.clip_scale as f32),
        clip_value: (a.clip_value != 0.0).then_some(a.clip_value as f32),
        weight_decay: (a.weight_decay != 0.0).then_some(a.weight_decay as f32),
        rule: Rule::for_step(&base, a.step, a.lr),
        sync_alpha: sync.then_some(a.alpha as f32),
    })
}

/// Runs a stateless update: checks every buffer (NULL where required, alignment, pairwise
/// overlap), then one fused pass on the default tier.
///
/// # Safety
/// Each non-NULL pointer holds `len` floats, valid for the call (C contract).
unsafe fn stateless_run(
    plan: Plan,
    param: *mut f32,
    grad: *const f32,
    state: [(&'static str, *mut f32); 4],
    len: usize,
) -> Result<flatopt_status, Error> {
    let (m_used, v_used, vmax_used) = plan.rule.state_used();
    let used = [m_used, v_used, vmax_used, plan.sync_alpha.is_some()];
    check_buf("param", param, len)?;
    check_buf("grad", grad, len)?;
    let mut spans: [Span; 6] = [(0, 0, false, "", 0); 6];
    spans[0] = span(param, len, true, "param", 0);
    spans[1] = span(grad, len, false, "grad", 0);
    for (k, ((name, p), u)) in state.iter().zip(used).enumerate() {
        if u {
            if p.is_null() && len > 0 {
                return Err(Error::NullPointer { name });
            }
            check_buf(name, *p, len)?;
            spans[2 + k] = span(*p, len, true, name, 0);
        }
    }
    check_disjoint(&mut spans)?;
    let get = |k: usize| -> &mut [f32] {
        if used[k] {
            // SAFETY: checked above (non-null unless empty, aligned, disjoint).
            unsafe { slice_mut(state[k].1, len) }
        } else {
            &mut []
        }
    };
    let b = Buffers {
        // SAFETY: checked above.
        param: unsafe { slice_mut(param, len) },
        // SAFETY: checked above.
        grad: unsafe { slice(grad, len) },
        m: get(0),
        v: get(1),
        v_max: get(2),
        slow: get(3),
    };
    kernels::apply(simd::default_tier(), &plan, b)?;
    Ok(FLATOPT_OK)
}

/// Stateless SGD step on one buffer: `momentum_buf` (NULL if `hp->momentum` is 0) holds the
/// momentum trace, `slow` (NULL unless `args->sync`) the Lookahead slow weights; all `len`
/// floats. `hp->kind` must be `FLATOPT_SGD`. Nothing is written on error.
#[no_mangle]
pub unsafe extern "C" fn flatopt_sgd_update(
    hp: *const flatopt_base_params,
    args: *const flatopt_step_args,
    param: *mut c_float,
    grad: *const c_float,
    momentum_buf: *mut c_float,
    slow: *mut c_float,
    len: usize,
) -> flatopt_status {
    guard(|| {
        // SAFETY: C contract of this function.
        unsafe {
            let plan = stateless_plan(hp, args, flatopt_base_kind::FLATOPT_SGD)?;
            let none = std::ptr::null_mut();
            let st = [
                ("momentum_buf", momentum_buf),
                ("v", none),
                ("v_max", none),
                ("slow", slow),
            ];
            stateless_run(plan, param, grad, st, len)
        }
    })
}

/// Stateless Adam step (AMSGrad if `hp->amsgrad`: `v_max` required, else may be NULL).
/// `hp->kind` must be `FLATOPT_ADAM`. See `flatopt_sgd_update` for the conventions.
#[no_mangle]
pub unsafe extern "C" fn flatopt_adam_update(
    hp: *const flatopt_base_params,
    args: *const flatopt_step_args,
    param: *mut c_float,
    grad: *const c_float,
    m: *mut c_float,
    v: *mut c_float,
    v_max: *mut c_float,
    slow: *mut c_float,
    len: usize,
) -> flatopt_status {
    guard(|| {
        // SAFETY: C contract of this function.
        unsafe {
            let plan = stateless_plan(hp, args, flatopt_base_kind::FLATOPT_ADAM)?;
            let st = [("m", m), ("v", v), ("v_max", v_max), ("slow", slow)];
            stateless_run(plan, param, grad, st, len)
        }
    })
}

/// The stateless AdamW and RAdam updates: the same buffers (m, v, slow), no AMSGrad maximum.
///
/// # Safety
/// As `flatopt_adamw_update`.
#[allow(clippy::too_many_arguments)]
unsafe fn two_moment_update(
    kind: flatopt_base_kind,
    hp: *const flatopt_base_params,
    args: *const flatopt_step_args,
    param: *mut f32,
    grad: *const f32,
    m: *mut f32,
    v: *mut f32,
    slow: *mut f32,
    len: usize,
) -> flatopt_status {
    guard(|| {
        // SAFETY: C contract of the calling function.
        unsafe {
            let plan = stateless_plan(hp, args, kind)?;
            let st = [
                ("m", m),
                ("v", v),
                ("v_max", std::ptr::null_mut()),
                ("slow", slow),
            ];
            stateless_run(plan, param, grad, st, len)
        }
    })
}

/// Stateless AdamW step. `hp->kind` must be `FLATOPT_ADAMW`.
#[no_mangle]
pub unsafe extern "C" fn flatopt_adamw_update(
    hp: *const flatopt_base_params,
    args: *const flatopt_step_args,
    param: *mut c_float,
    grad: *const c_float,
    m: *mut c_float,
    v: *mut c_float,
    slow: *mut c_float,
    len: usize,
) -> flatopt_status {
    // SAFETY: C contract of this function.
    unsafe {
        two_moment_update(
            flatopt_base_kind::FLATOPT_ADAMW,
            hp,
            args,
            param,
            grad,
            m,
            v,
            slow,
            len,
        )
    }
}

/// Stateless RAdam step. `hp->kind` must be `FLATOPT_RADAM`.
#[no_mangle]
pub unsafe extern "C" fn flatopt_radam_update(
    hp: *const flatopt_base_params,
    args: *const flatopt_step_args,
    param: *mut c_float,
    grad: *const c_float,
    m: *mut c_float,
    v: *mut c_float,
    slow: *mut c_float,
    len: usize,
) -> flatopt_status {
    // SAFETY: C contract of this function.
    unsafe {
        two_moment_update(
            flatopt_base_kind::FLATOPT_RADAM,
            hp,
            args,
            param,
            grad,
            m,
            v,
            slow,
            len,
        )
    }
}

/// Sum of squares of `x` (f64, fixed order: see SPEC.md "Determinism"), written to `*out`.
/// NaN or Inf if `x` holds a non-finite value, never overflowing for finite input.
#[no_mangle]
pub unsafe extern "C" fn flatopt_sum_squares(
    x: *const c_float,
    len: usize,
    out: *mut c_double,
) -> flatopt_status {
    guard(|| {
        check_buf("x", x, len)?;
        // SAFETY: checked; `len` readable floats (C contract).
        let s = kernels::sum_squares(simd::default_tier(), unsafe { slice(x, len) });
        // SAFETY: NULL rejected, else writable (C contract).
        unsafe { write_out("out", out, s)? };
        Ok(FLATOPT_OK)
    })
}

/// The number of elements per block of the fixed-order sum of squares.
#[no_mangle]
pub extern "C" fn flatopt_sum_squares_block_size() -> usize {
    kernels::SUMSQ_BLOCK
}

/// Block partial sums of squares of `x` into `partials` (`n_partials` must be
/// `ceil(len / flatopt_sum_squares_block_size())`). Adding the partials of all buffers in order
/// reproduces the optimizer's global sum exactly, also when buffers are split across processes
/// at block boundaries.
#[no_mangle]
pub unsafe extern "C" fn flatopt_sum_squares_partials(
    x: *const c_float,
    len: usize,
    partials: *mut c_double,
    n_partials: usize,
) -> flatopt_status {
    guard(|| {
        check_buf("x", x, len)?;
        if partials.is_null() && n_partials > 0 {
            return Err(Error::NullPointer { name: "partials" });
        }
        let want = kernels::sumsq_block_count(len);
        if n_partials != want {
            return Err(Error::LengthMismatch {
                what: "n_partials (one per block)".to_string(),
                expected: want,
                got: n_partials,
            });
        }
        let (p0, x0) = (partials as usize, x as usize);
        let (p1, x1) = (p0 + 8 * n_partials, x0 + 4 * len);
        if n_partials > 0 && len > 0 && p0 < x1 && x0 < p1 {
            return Err(Error::Overlap {
                what: "x and partials share memory".to_string(),
            });
        }
        if !(partials as usize).is_multiple_of(std::mem::align_of::<f64>()) {
            return Err(Error::invalid(
                "partials",
                format!("{partials:p}"),
                "must be aligned to 8 bytes",
            ));
        }
        // SAFETY: checked; `len` readable floats (C contract).
        let x = unsafe { slice(x, len) };
        let out: &mut [f64] = if n_partials == 0 {
            &mut []
        } else {
            // SAFETY: non-null, aligned, `n_partials` writable doubles that cannot overlap
            // `x` (different types of caller-owned arrays; C contract).
            unsafe { std::slice::from_raw_parts_mut(partials, n_partials) }
        };
        kernels::sum_squares_partials(simd::default_tier(), x, out)?;
        Ok(FLATOPT_OK)
    })
}

/// The global-norm clip factor for a sum of squares: `max_norm / sqrt(sum_squares)` if that is
/// below 1, else 1 (computed in f64, as the optimizer does). Error if `sum_squares` is not
/// finite (a non-finite gradient) or `max_norm` is not > 0.
#[no_mangle]
pub unsafe extern "C" fn flatopt_clip_scale(
    sum_squares: c_double,
    max_norm: c_double,
    out: *mut c_double,
) -> flatopt_status {
    guard(|| {
        crate::error::positive("max_norm", max_norm)?;
        if !sum_squares.is_finite() || sum_squares < 0.0 {
            return Err(Error::invalid(
                "sum_squares",
                sum_squares,
                "must be finite and >= 0 (a gradient holds NaN or Inf)",
            ));
        }
        let norm = sum_squares.sqrt();
        let scale = if norm > max_norm {
            max_norm / norm
        } else {
            1.0
        };
        // SAFETY: NULL rejected, else writable (C contract).
        unsafe { write_out("out", out, scale)? };
        Ok(FLATOPT_OK)
    })
}

/// # Safety
/// `x` holds `len` floats (C contract); `y` NULL or `len` floats.
unsafe fn run_op(
    op: Op,
    x_name: &'static str,
    x: *mut f32,
    y: *mut f32,
    len: usize,
) -> Result<flatopt_status, Error> {
    check_buf(x_name, x, len)?;
    // Validate with the C argument names (`apply_op` validates again, with Rust's).
    match op {
        Op::Scale(v) if !v.is_finite() => return Err(Error::invalid("s", v, "must be finite")),
        Op::ClipValue(c) if c.is_nan() || c < 0.0 => {
            return Err(Error::invalid("c", c, "must be >= 0 (+inf allowed)"))
        }
        _ => {}
    }
    let with_y = matches!(op, Op::Sync(_));
    if with_y {
        check_buf("slow", y, len)?;
        let mut spans = [span(x, len, true, "fast", 0), span(y, len, true, "slow", 0)];
        check_disjoint(&mut spans)?;
    }
    // SAFETY: checked above; caller-owned memory valid for the call.
    let xs = unsafe { slice_mut(x, len) };
    // SAFETY: as above, disjoint from `xs` (checked).
    let ys = if with_y {
        unsafe { slice_mut(y, len) }
    } else {
        &mut []
    };
    kernels::apply_op(simd::default_tier(), op, xs, ys)?;
    Ok(FLATOPT_OK)
}

/// Clamps every element of `x` to `[-c, c]` in place (NaN stays NaN). `c >= 0`.
#[no_mangle]
pub unsafe extern "C" fn flatopt_clip_by_value(
    x: *mut c_float,
    len: usize,
    c: c_float,
) -> flatopt_status {
    // SAFETY: C contract of this function.
    guard(|| unsafe { run_op(Op::ClipValue(c), "x", x, std::ptr::null_mut(), len) })
}

/// Multiplies every element of `x` by `s` in place. `s` finite.
#[no_mangle]
pub unsafe extern "C" fn flatopt_scale(x: *mut c_float, len: usize, s: c_float) -> flatopt_status {
    // SAFETY: C contract of this function.
    guard(|| unsafe { run_op(Op::Scale(s), "x", x, std::ptr::null_mut(), len) })
}

/// Lookahead sync: `slow = slow + alpha * (fast - slow)`, then `fast = slow` (bit-equal).
#[no_mangle]
pub unsafe extern "C" fn flatopt_lookahead_sync(
    fast: *mut c_float,
    slow: *mut c_float,
    len: usize,
    alpha: c_float,
) -> flatopt_status {
    // SAFETY: C contract of this function.
    guard(|| unsafe { run_op(Op::Sync(alpha), "fast", fast, slow, len) })
}

// ---------------------------------------------------------------------------------------------
// Checkpoints (format: docs/checkpoint-format.md).

/// The size in bytes of the checkpoint `flatopt_optimizer_save` would write now.
#[no_mangle]
pub unsafe extern "C" fn flatopt_optimizer_checkpoint_size(
    opt: *const flatopt_optimizer,
    out: *mut usize,
) -> flatopt_status {
    // SAFETY: C contract of this function.
    unsafe { query(opt, out, |h| h.engine.checkpoint_size()) }
}

/// Writes the complete optimizer state (configuration, counters, schedule state, moments,
/// AMSGrad maximum, slow weights; not the parameters, which the caller owns) into `buf` of
/// `cap` bytes and its length to `*written`. `FLATOPT_ERR_LENGTH_MISMATCH` if `cap` is smaller
/// than `flatopt_optimizer_checkpoint_size`.
#[no_mangle]
pub unsafe extern "C" fn flatopt_optimizer_save(
    opt: *const flatopt_optimizer,
    buf: *mut u8,
    cap: usize,
    written: *mut usize,
) -> flatopt_status {
    guard(|| {
        // SAFETY: see `handle_ref`.
        let h = unsafe { handle_ref(opt)? };
        check_no_pending(&h)?;
        if buf.is_null() {
            return Err(Error::NullPointer { name: "buf" });
        }
        if written.is_null() {
            return Err(Error::NullPointer { name: "written" });
        }
        let bytes = h.engine.save();
        if cap < bytes.len() {
            return Err(Error::LengthMismatch {
                what: "buf capacity (see flatopt_optimizer_checkpoint_size)".to_string(),
                expected: bytes.len(),
                got: cap,
            });
        }
        // SAFETY: `buf` is non-null with `cap >= bytes.len()` writable bytes (C contract) and
        // cannot overlap the freshly allocated `bytes`.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), buf, bytes.len()) };
        // SAFETY: non-null (checked), writable (C contract).
        unsafe { write_out("written", written, bytes.len())? };
        Ok(FLATOPT_OK)
    })
}

/// Restores a checkpoint from `buf` (`len` bytes). The optimizer must have the configuration
/// the checkpoint was saved with (threads and SIMD tier may differ) and the same registered
/// buffer lengths. Validated completely (magic, version, checksum, configuration, lengths)
/// before anything changes: `FLATOPT_ERR_CORRUPT`, `FLATOPT_ERR_INVALID_ARGUMENT` (different
/// configuration), `FLATOPT_ERR_LENGTH_MISMATCH` or `FLATOPT_ERR_UNSUPPORTED` (newer format)
/// leave the optimizer exactly as it was.
#[no_mangle]
pub unsafe extern "C" fn flatopt_optimizer_load(
    opt: *mut flatopt_optimizer,
    buf: *const u8,
    len: usize,
) -> flatopt_status {
    guard(|| {
        // SAFETY: see `handle`.
        let mut h = unsafe { handle(opt)? };
        check_no_pending(&h)?;
        if buf.is_null() {
            return Err(Error::NullPointer { name: "buf" });
        }
        if len > isize::MAX as usize {
            return Err(Error::invalid("len", len, "length is too large"));
        }
        // SAFETY: non-null, `len` readable bytes owned by the caller (C contract).
        let bytes = unsafe { std::slice::from_raw_parts(buf, len) };
        h.engine.load(bytes)?;
        Ok(FLATOPT_OK)
    })
}

/// # Safety
/// `path` is NULL or a NUL-terminated string.
unsafe fn path_from_c<'a>(path: *const c_char) -> Result<&'a std::path::Path, Error> {
    use std::os::unix::ffi::OsStrExt;
    if path.is_null() {
        return Err(Error::NullPointer { name: "path" });
    }
    // SAFETY: non-null, NUL-terminated (C contract).
    let bytes = unsafe { std::ffi::CStr::from_ptr(path) }.to_bytes();
    if bytes.is_empty() {
        return Err(Error::invalid("path", "\"\"", "must not be empty"));
    }
    Ok(std::path::Path::new(std::ffi::OsStr::from_bytes(bytes)))
}

/// Saves a checkpoint to the file `path` atomically (temporary file in the same directory,
/// fsync, rename, fsync of the directory): after a crash the file holds the previous
/// checkpoint or the new one, never a mix.
#[no_mangle]
pub unsafe extern "C" fn flatopt_optimizer_save_file(
    opt: *const flatopt_optimizer,
    path: *const c_char,
) -> flatopt_status {
    guard(|| {
        // SAFETY: see `handle_ref`.
        let h = unsafe { handle_ref(opt)? };
        check_no_pending(&h)?;
        // SAFETY: C contract.
        let path = unsafe { path_from_c(path)? };
        h.engine.save_file(path)?;
        Ok(FLATOPT_OK)
    })
}

/// Loads a checkpoint file (see `flatopt_optimizer_load`).
#[no_mangle]
pub unsafe extern "C" fn flatopt_optimizer_load_file(
    opt: *mut flatopt_optimizer,
    path: *const c_char,
) -> flatopt_status {
    guard(|| {
        // SAFETY: see `handle`.
        let mut h = unsafe { handle(opt)? };
        check_no_pending(&h)?;
        // SAFETY: C contract.
        let path = unsafe { path_from_c(path)? };
        h.engine.load_file(path)?;
        Ok(FLATOPT_OK)
    })
}
