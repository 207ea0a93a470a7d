//! The stateless kernels: the caller owns every buffer (parameters, gradients, state) and
//! passes the per-step scalars in `flatopt_step_args`.

use std::ffi::{c_double, c_float};

use crate::catalog::{check_f64, Domain};
use crate::error::Error;
use crate::kernels::{self, Buffers, Op, Plan, Rule};
use crate::simd;

use super::boundary::{flatopt_status, flatopt_status::*, guard};
use super::ptr::{
    check_buf, check_disjoint, check_f64_aligned, read_versioned, slice, slice_mut, span,
    write_out, write_versioned, Span, Versions,
};
use super::structs::{flag, flatopt_base_kind, flatopt_base_params, read_base};

/// Size in bytes of the first version of `flatopt_step_args` (flatopt 0.2.0). Frozen.
pub const FLATOPT_STEP_ARGS_SIZE_V1: u32 = 56;

/// The published sizes of `flatopt_step_args`, oldest first.
const STEP_ARGS_VERSIONS: Versions = Versions {
    name: "flatopt_step_args",
    sizes: &[FLATOPT_STEP_ARGS_SIZE_V1],
};

// The newest published size is this library's struct (see structs.rs).
const _: () = assert!(STEP_ARGS_VERSIONS.newest() == size_of::<flatopt_step_args>());

/// Per-step arguments of the stateless update functions. Initialise with
/// `flatopt_step_args_init(&a, sizeof a)` or `FLATOPT_STEP_ARGS_INIT`, then set fields.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct flatopt_step_args {
    /// The caller's `sizeof(flatopt_step_args)`, set by the init function or macro.
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

/// Fills the caller's `size` bytes at `args` with defaults (step 1, lr 1e-3, no clipping, no
/// decay, no sync) and sets `struct_size = size`; pass `sizeof *args`.
///
/// # Safety
/// `args` is NULL (refused) or valid for writes of `size` bytes.
#[no_mangle]
pub unsafe extern "C" fn flatopt_step_args_init(
    args: *mut flatopt_step_args,
    size: usize,
) -> flatopt_status {
    guard(|| {
        let (defaults, v) = (step_args_defaults(), &STEP_ARGS_VERSIONS);
        // SAFETY: NULL (refused) or `size` writable bytes (this function's contract).
        unsafe { write_versioned("args", args, size, defaults, v)? };
        Ok(FLATOPT_OK)
    })
}

/// Builds the plan of one stateless update after validating every argument; `expect_kind` is
/// the kind the function called is for (`None`: `flatopt_base_update`, any kind).
///
/// # Safety
/// `hp` / `args` NULL or valid.
pub(crate) unsafe fn stateless_plan(
    hp: *const flatopt_base_params,
    args: *const flatopt_step_args,
    expect_kind: Option<flatopt_base_kind>,
) -> Result<Plan, Error> {
    // SAFETY: NULL (refused) or a struct of `struct_size` readable bytes (C contract).
    let hp = unsafe { read_base("hp", "hp.struct_size", hp)? };
    let (defaults, v) = (step_args_defaults(), &STEP_ARGS_VERSIONS);
    // SAFETY: as above.
    let a = unsafe { read_versioned("args", "args.struct_size", args, defaults, v)? };
    if expect_kind.is_some_and(|k| hp.kind != k as u32) {
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
    // Every value the kernels use in f32 is checked after its rounding too.
    check_f64("lr", a.lr, Domain::NonNeg, true)?;
    let scale32 = a.clip_scale as f32;
    if !(a.clip_scale.is_finite() && a.clip_scale > 0.0 && a.clip_scale <= 1.0 && scale32 > 0.0) {
        return Err(Error::invalid(
            "clip_scale",
            a.clip_scale,
            "must be in (0, 1], and > 0 after rounding to f32",
        ));
    }
    check_f64("clip_value", a.clip_value, Domain::NonNeg, true)?;
    check_f64("weight_decay", a.weight_decay, Domain::NonNeg, true)?;
    let sync = flag("sync", a.sync)?;
    if sync {
        check_f64("alpha", a.alpha, Domain::UnitClosed, true)?;
    }
    let plan = Plan {
        clip_scale: (a.clip_scale != 1.0).then_some(a.clip_scale as f32),
        clip_value: (a.clip_value != 0.0).then_some(a.clip_value as f32),
        weight_decay: (a.weight_decay != 0.0).then_some(a.weight_decay as f32),
        rule: Rule::for_step(&base, a.step, a.lr),
        sync_alpha: sync.then_some(a.alpha as f32),
    };
    // The per-step scalars (step size, decay factor) must be finite as f32.
    crate::config::check_step(a.lr, &plan.rule)?;
    Ok(plan)
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
///
/// # Safety
/// `hp` and `args` are NULL (refused) or point to their `struct_size` readable bytes.
/// Each buffer is NULL (refused where required) or holds `len` floats, valid for the
/// call and not accessed by anyone else during it.
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
        // SAFETY: `hp`, `args` and the buffers are passed on as received; this function's
        // `# Safety` promises exactly what `stateless_plan` (NULL or `struct_size` readable
        // bytes) and `stateless_run` (NULL or `len` floats, unaliased for the call) require;
        // both check every pointer for NULL and alignment before reading it.
        unsafe {
            let plan = stateless_plan(hp, args, Some(flatopt_base_kind::FLATOPT_SGD))?;
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
///
/// # Safety
/// `hp` and `args` are NULL (refused) or point to their `struct_size` readable bytes.
/// Each buffer is NULL (refused where required) or holds `len` floats, valid for the
/// call and not accessed by anyone else during it.
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
    let kind = Some(flatopt_base_kind::FLATOPT_ADAM);
    // SAFETY: the arguments are passed on as received, and this function's `# Safety` is the
    // one `four_buffer_update` requires (it says "as `flatopt_base_update`").
    unsafe { four_buffer_update(kind, hp, args, param, grad, m, v, v_max, slow, len) }
}

/// The stateless updates with every state buffer (m, v, v_max, slow): Adam's and the generic
/// one's; `kind` is the kind the function called is for (`None`: any).
///
/// # Safety
/// As `flatopt_base_update`.
#[allow(clippy::too_many_arguments)]
unsafe fn four_buffer_update(
    kind: Option<flatopt_base_kind>,
    hp: *const flatopt_base_params,
    args: *const flatopt_step_args,
    param: *mut f32,
    grad: *const f32,
    m: *mut f32,
    v: *mut f32,
    v_max: *mut f32,
    slow: *mut f32,
    len: usize,
) -> flatopt_status {
    guard(|| {
        // SAFETY: `hp`, `args` and the buffers are passed on as received; the `# Safety` of
        // the exported function that calls this one promises exactly what `stateless_plan`
        // (NULL or `struct_size` readable bytes) and `stateless_run` (NULL or `len` floats,
        // unaliased for the call) require; both check every pointer for NULL and alignment
        // before reading it.
        unsafe {
            let plan = stateless_plan(hp, args, kind)?;
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
        // SAFETY: `hp`, `args` and the buffers are passed on as received; the `# Safety` of
        // the exported function that calls this one promises exactly what `stateless_plan`
        // (NULL or `struct_size` readable bytes) and `stateless_run` (NULL or `len` floats,
        // unaliased for the call) require; both check every pointer for NULL and alignment
        // before reading it.
        unsafe {
            let plan = stateless_plan(hp, args, Some(kind))?;
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
///
/// # Safety
/// `hp` and `args` are NULL (refused) or point to their `struct_size` readable bytes.
/// Each buffer is NULL (refused where required) or holds `len` floats, valid for the
/// call and not accessed by anyone else during it.
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
    // SAFETY: the arguments are passed on as received, and this function's `# Safety` is
    // the one `two_moment_update` requires (it says "as `flatopt_adamw_update`").
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
///
/// # Safety
/// `hp` and `args` are NULL (refused) or point to their `struct_size` readable bytes.
/// Each buffer is NULL (refused where required) or holds `len` floats, valid for the
/// call and not accessed by anyone else during it.
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
    // SAFETY: the arguments are passed on as received, and this function's `# Safety` is
    // the one `two_moment_update` requires (it says "as `flatopt_adamw_update`").
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

/// Bit of `flatopt_base_state_buffers`' mask: the rule keeps a first state buffer `m` (Adam's
/// first moment, SGD's momentum trace, RMSprop's momentum, Rprop's previous gradient, ...).
pub const FLATOPT_STATE_M: u32 = 1;
/// Bit of `flatopt_base_state_buffers`' mask: the rule keeps a second state buffer `v` (a
/// second moment, Adagrad's sum of squares, Adadelta's squared-gradient average, Rprop's step
/// sizes, ...).
pub const FLATOPT_STATE_V: u32 = 2;
/// Bit of `flatopt_base_state_buffers`' mask: the rule keeps a third state buffer `v_max`
/// (AMSGrad's maximum, centered RMSprop's gradient average, Adadelta's squared-update average).
pub const FLATOPT_STATE_V_MAX: u32 = 4;

/// Writes to `*mask` which state buffers the base rule `hp` keeps (`FLATOPT_STATE_M`,
/// `FLATOPT_STATE_V`, `FLATOPT_STATE_V_MAX`; 0 for plain SGD): the buffers
/// `flatopt_base_update` requires non-NULL. `hp` is validated as for an optimizer.
///
/// # Safety
/// `hp` is NULL (refused) or points to its `struct_size` readable bytes; `mask` is NULL
/// (refused) or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn flatopt_base_state_buffers(
    hp: *const flatopt_base_params,
    mask: *mut u32,
) -> flatopt_status {
    guard(|| {
        // SAFETY: NULL (refused) or `struct_size` readable bytes (this function's contract).
        let base = unsafe { read_base("hp", "hp.struct_size", hp)? }.to_base()?;
        let (m, v, v_max) = base.state_used();
        let bits = [
            (m, FLATOPT_STATE_M),
            (v, FLATOPT_STATE_V),
            (v_max, FLATOPT_STATE_V_MAX),
        ]
        .iter()
        .filter(|(used, _)| *used)
        .fold(0, |acc, (_, bit)| acc | bit);
        // SAFETY: NULL (refused) or valid for one write (this function's contract).
        unsafe { write_out("mask", mask, bits)? };
        Ok(FLATOPT_OK)
    })
}

/// Fills the state buffers that the base rule `hp` keeps with their values before the first
/// step, as an optimizer's registration does (zero, but Adagrad's and RMSprop's initial
/// accumulator, Rprop's initial step size): each of `m`, `v`, `v_max` that the rule keeps (see
/// `flatopt_base_state_buffers`) must hold `len` floats; those it does not keep may be NULL and
/// are not touched. Nothing is written on error.
///
/// # Safety
/// `hp` is NULL (refused) or points to its `struct_size` readable bytes. Each buffer is NULL
/// (refused where the rule keeps it) or holds `len` floats, valid for the call and not
/// accessed by anyone else during it.
#[no_mangle]
pub unsafe extern "C" fn flatopt_base_state_init(
    hp: *const flatopt_base_params,
    m: *mut c_float,
    v: *mut c_float,
    v_max: *mut c_float,
    len: usize,
) -> flatopt_status {
    guard(|| {
        // SAFETY: NULL (refused) or `struct_size` readable bytes (this function's contract).
        let base = unsafe { read_base("hp", "hp.struct_size", hp)? }.to_base()?;
        let (m_used, v_used, vmax_used) = base.state_used();
        let bufs = [
            ("m", m, m_used),
            ("v", v, v_used),
            ("v_max", v_max, vmax_used),
        ];
        let mut spans: [Span; 3] = [(0, 0, false, "", 0); 3];
        for (k, (name, p, used)) in bufs.iter().enumerate() {
            if *used {
                if p.is_null() && len > 0 {
                    return Err(Error::NullPointer { name });
                }
                check_buf(name, *p, len)?;
                spans[k] = span(*p, len, true, name, 0);
            }
        }
        check_disjoint(&mut spans)?;
        for ((_, p, used), x) in bufs.iter().zip(base.state_init()) {
            if *used && len > 0 {
                // SAFETY: checked above: non-null, aligned, `len` floats (this function's
                // contract), pairwise disjoint.
                unsafe { slice_mut(*p, len) }.fill(x);
            }
        }
        Ok(FLATOPT_OK)
    })
}

/// Stateless step of any base rule (`hp->kind`): the rule's state buffers (see
/// `flatopt_base_state_buffers`; start them with `flatopt_base_state_init`) hold `len` floats
/// each, the others may be NULL; `slow` (NULL unless `args->sync`) holds the Lookahead slow
/// weights. The same update as an optimizer's step with the same scalars, bit for bit. See
/// `flatopt_sgd_update` for the conventions; nothing is written on error.
///
/// # Safety
/// `hp` and `args` are NULL (refused) or point to their `struct_size` readable bytes.
/// Each buffer is NULL (refused where required) or holds `len` floats, valid for the
/// call and not accessed by anyone else during it.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn flatopt_base_update(
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
    // SAFETY: the arguments are passed on as received, and this function's `# Safety` is the
    // one `four_buffer_update` requires.
    unsafe { four_buffer_update(None, hp, args, param, grad, m, v, v_max, slow, len) }
}

/// Sum of squares of `x` (f64, fixed order: see docs/numerics.md, "Determinism"), written to
/// `*out`. NaN or Inf if `x` holds a non-finite value, never overflowing for finite input.
///
/// # Safety
/// `x` is NULL (refused unless `len` is 0) or holds `len` readable floats; `out` is NULL (refused) or valid for one write.
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
///
/// # Safety
/// `x` holds `len` readable floats and `partials` is valid for writes of `n_partials`
/// doubles (each NULL only when its count is 0).
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
        check_f64_aligned("partials", partials)?;
        // SAFETY: checked; `len` readable floats (C contract).
        let x = unsafe { slice(x, len) };
        // SAFETY: non-null unless empty, aligned (checked), `n_partials` (the block count of
        // `len`, checked) writable doubles that do not overlap `x` (checked; C contract).
        let out = unsafe { slice_mut(partials, n_partials) };
        kernels::sum_squares_partials(simd::default_tier(), x, out)?;
        Ok(FLATOPT_OK)
    })
}

/// The global-norm clip factor for a sum of squares: `max_norm / sqrt(sum_squares)` if that is
/// below 1, else 1 (computed in f64, as the optimizer does). Error if `sum_squares` is not
/// finite (a non-finite gradient) or `max_norm` is not > 0.
///
/// # Safety
/// `out` is NULL (refused) or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn flatopt_clip_scale(
    sum_squares: c_double,
    max_norm: c_double,
    out: *mut c_double,
) -> flatopt_status {
    guard(|| {
        check_f64("max_norm", max_norm, Domain::Positive, false)?;
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
///
/// # Safety
/// `x` is NULL (refused unless `len` is 0) or holds `len` writable floats.
#[no_mangle]
pub unsafe extern "C" fn flatopt_clip_by_value(
    x: *mut c_float,
    len: usize,
    c: c_float,
) -> flatopt_status {
    // SAFETY: `x` is passed on as received: NULL or `len` writable floats (this function's
    // `# Safety`), what `run_op` requires of its first buffer; the second is NULL, unused.
    guard(|| unsafe { run_op(Op::ClipValue(c), "x", x, std::ptr::null_mut(), len) })
}

/// Multiplies every element of `x` by `s` in place. `s` finite.
///
/// # Safety
/// `x` is NULL (refused unless `len` is 0) or holds `len` writable floats.
#[no_mangle]
pub unsafe extern "C" fn flatopt_scale(x: *mut c_float, len: usize, s: c_float) -> flatopt_status {
    // SAFETY: as in `flatopt_clip_by_value`: `x` is NULL or `len` writable floats.
    guard(|| unsafe { run_op(Op::Scale(s), "x", x, std::ptr::null_mut(), len) })
}

/// Lookahead sync: `slow = slow + alpha * (fast - slow)`, then `fast = slow` (bit-equal).
///
/// # Safety
/// `fast` and `slow` are NULL (refused unless `len` is 0) or hold `len` writable floats each.
#[no_mangle]
pub unsafe extern "C" fn flatopt_lookahead_sync(
    fast: *mut c_float,
    slow: *mut c_float,
    len: usize,
    alpha: c_float,
) -> flatopt_status {
    // SAFETY: `fast` and `slow` are passed on as received: NULL or `len` writable floats each
    // (this function's `# Safety`), what `run_op` requires; it refuses overlapping buffers.
    guard(|| unsafe { run_op(Op::Sync(alpha), "fast", fast, slow, len) })
}
