//! Mixed precision through C: gradients in bf16 or fp16 per registered buffer and an optional
//! 16-bit copy of its parameters (`flatopt_param_options`, a versioned struct), an explicit
//! loss scale per step, the dynamic loss scaler (PyTorch `GradScaler`'s rules) and the
//! stateless conversions and mixed-precision update.
//!
//! 16-bit floats travel as their bit patterns (`uint16_t`); the formats are `flatopt_dtype`
//! values. The rules of the conversions are those of `docs/numerics.md`, "16-bit floats".

use std::ffi::{c_double, c_float, c_void};

use crate::error::Error;
use crate::kernels::{self, Half, MixedBuffers, ParamCopy};
use crate::scaler::LossScaler;
use crate::simd;

use super::boundary::{flatopt_status, flatopt_status::*, guard};
use super::handle::{
    check_grad, check_no_pending, elem_size, flatopt_optimizer, grad_slice, handle, handle_ref,
    outcome_status, HostBuf,
};
use super::ptr::{
    check_buf, check_disjoint, check_elems, check_f64_aligned, read_versioned, slice, slice_mut,
    span, write_out, write_versioned, Span, Versions,
};
use super::stateless::{flatopt_step_args, stateless_plan};
use super::structs::flatopt_base_params;

/// Element formats of gradients and parameter copies.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum flatopt_dtype {
    /// IEEE binary32 (`float`). As a copy format: no copy.
    FLATOPT_DTYPE_F32 = 0,
    /// bfloat16 (8 exponent bits, 7 mantissa bits), as `uint16_t` bit patterns.
    FLATOPT_DTYPE_BF16 = 1,
    /// IEEE binary16 (fp16), as `uint16_t` bit patterns.
    FLATOPT_DTYPE_F16 = 2,
}

/// A `flatopt_dtype` value from C: `None` for f32.
fn dtype_from_c(name: &'static str, x: u32) -> Result<Option<Half>, Error> {
    match x {
        0 => Ok(None),
        1 => Ok(Some(Half::Bf16)),
        2 => Ok(Some(Half::F16)),
        _ => Err(Error::invalid(
            name,
            x,
            "must be a flatopt_dtype value (0 f32, 1 bf16, 2 f16)",
        )),
    }
}

/// `sizeof(flatopt_param_options)` of the first version (frozen).
pub const FLATOPT_PARAM_OPTIONS_SIZE_V1: u32 = 32;
/// `sizeof(flatopt_param_options)` of the second version (frozen): the buffer's shape (`rows`,
/// `cols`). A V1 caller's options register no shape.
pub const FLATOPT_PARAM_OPTIONS_SIZE_V2: u32 = 48;

/// How a buffer is registered by `flatopt_optimizer_add_param_with_options`: its gradients'
/// format, its parameter group and an optional 16-bit copy of its parameters. Initialise with
/// `flatopt_param_options_init(&o, sizeof o)` or `FLATOPT_PARAM_OPTIONS_INIT` (f32 gradients,
/// group 0, no copy), then set fields.
///
/// A bf16 model with f32 master weights:
/// `flatopt_param_options o = FLATOPT_PARAM_OPTIONS_INIT; o.grad_dtype = FLATOPT_DTYPE_BF16;`
/// `o.copy = model_weights; o.copy_dtype = FLATOPT_DTYPE_BF16;` then
/// `flatopt_optimizer_add_param_with_options(opt, master, model_grads, n, &o)`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct flatopt_param_options {
    /// The caller's `sizeof(flatopt_param_options)`, set by the init function or macro.
    pub struct_size: u32,
    /// The gradients' format, a `flatopt_dtype` (default `FLATOPT_DTYPE_F32`). 16-bit
    /// gradients are widened exactly in the pass (2 bytes read per element).
    pub grad_dtype: u32,
    /// The parameter group (default 0, the optimizer's own; see `flatopt_optimizer_add_group`).
    pub group: usize,
    /// The 16-bit copy of the parameters, `len` elements of `copy_dtype` (NULL, the default:
    /// none). Written from the parameters at registration, by every applied update (after a
    /// Lookahead sync on sync steps), by `flatopt_optimizer_reset` and by a checkpoint load:
    /// round to nearest even, NaN kept NaN, fp16 overflow to ±Inf. A skipped update leaves it
    /// alone. It must not share memory with any parameter, gradient, other copy or the
    /// optimizer's state, and must stay valid while the optimizer uses it.
    pub copy: *mut c_void,
    /// The copy's format: `FLATOPT_DTYPE_BF16` or `FLATOPT_DTYPE_F16` with `copy` set;
    /// `FLATOPT_DTYPE_F32` (the default) for no copy.
    pub copy_dtype: u32,
    /// Reserved, must be 0.
    pub reserved: u32,
    /// The buffer's 2-D shape: `rows` x `cols` (both 0, the default: none). With Adafactor a
    /// buffer with a shape keeps factored second moments (`rows + cols` averages per
    /// `rows x cols` row-major matrix; the buffer is `len / (rows * cols)` of them); the other
    /// rules ignore it. Since `FLATOPT_PARAM_OPTIONS_SIZE_V2`.
    pub rows: usize,
    /// The shape's columns (see `rows`). Since `FLATOPT_PARAM_OPTIONS_SIZE_V2`.
    pub cols: usize,
}

/// The published sizes of `flatopt_param_options`, oldest first.
pub(crate) const PARAM_OPTIONS_VERSIONS: Versions = Versions {
    name: "flatopt_param_options",
    sizes: &[FLATOPT_PARAM_OPTIONS_SIZE_V1, FLATOPT_PARAM_OPTIONS_SIZE_V2],
};

const _: () = assert!(PARAM_OPTIONS_VERSIONS.newest() == size_of::<flatopt_param_options>());

fn param_options_defaults() -> flatopt_param_options {
    flatopt_param_options {
        struct_size: size_of::<flatopt_param_options>() as u32,
        grad_dtype: flatopt_dtype::FLATOPT_DTYPE_F32 as u32,
        group: 0,
        copy: std::ptr::null_mut(),
        copy_dtype: flatopt_dtype::FLATOPT_DTYPE_F32 as u32,
        reserved: 0,
        rows: 0,
        cols: 0,
    }
}

/// Fills the caller's `size` bytes at `options` with the defaults (f32 gradients, group 0, no
/// copy) and sets `struct_size = size`; pass `sizeof *options`.
///
/// # Safety
/// `options` is NULL (refused) or valid for writes of `size` bytes.
#[no_mangle]
pub unsafe extern "C" fn flatopt_param_options_init(
    options: *mut flatopt_param_options,
    size: usize,
) -> flatopt_status {
    guard(|| {
        let d = param_options_defaults();
        // SAFETY: NULL (refused) or `size` writable bytes (this function's contract).
        unsafe { write_versioned("options", options, size, d, &PARAM_OPTIONS_VERSIONS)? };
        Ok(FLATOPT_OK)
    })
}

/// Registers a parameter buffer of `len` floats with the gradients and the 16-bit copy
/// `options` describes (NULL: f32 gradients, group 0, no copy: `flatopt_optimizer_add_param`).
/// `grad` holds `len` elements of `options->grad_dtype` (`uint16_t` bit patterns for bf16 and
/// fp16) or is NULL (gradients then come with each `flatopt_optimizer_step_mixed`). Everything
/// else is as `flatopt_optimizer_add_param`: allowed before the first update and after a reset;
/// no buffer may share memory with a parameter, a copy or (for parameters and copies) a
/// gradient. Refused, registering nothing: an unknown dtype, a copy dtype without a copy or a
/// copy without one, a misaligned buffer, overlapping memory, an unknown group.
///
/// # Safety
/// `opt` is NULL (refused) or a live handle from `flatopt_optimizer_new`. `options` is NULL or
/// points to `options->struct_size` readable bytes. `param`, `grad` (if not NULL) and
/// `options->copy` (if not NULL) hold `len` elements of their formats each and stay valid,
/// and untouched by others while a call on the handle runs, until the handle is freed.
#[no_mangle]
pub unsafe extern "C" fn flatopt_optimizer_add_param_with_options(
    opt: *mut flatopt_optimizer,
    param: *mut c_float,
    grad: *const c_void,
    len: usize,
    options: *const flatopt_param_options,
) -> flatopt_status {
    guard(|| {
        let o = if options.is_null() {
            param_options_defaults()
        } else {
            let (v, d) = (&PARAM_OPTIONS_VERSIONS, param_options_defaults());
            // SAFETY: non-null, `struct_size` readable bytes (this function's contract).
            unsafe { read_versioned("options", "options.struct_size", options, d, v)? }
        };
        if o.reserved != 0 {
            return Err(Error::invalid("options.reserved", o.reserved, "must be 0"));
        }
        let grad_type = dtype_from_c("options.grad_dtype", o.grad_dtype)?;
        let copy_type = dtype_from_c("options.copy_dtype", o.copy_dtype)?;
        match (copy_type, o.copy.is_null()) {
            (None, false) => {
                return Err(Error::invalid(
                    "options.copy_dtype",
                    "FLATOPT_DTYPE_F32 with a copy",
                    "must be FLATOPT_DTYPE_BF16 or FLATOPT_DTYPE_F16 when options.copy is set",
                ))
            }
            (Some(h), true) if len > 0 => {
                return Err(Error::invalid(
                    "options.copy",
                    format!("NULL with copy_dtype {}", h.name()),
                    "must hold len elements when options.copy_dtype is bf16 or f16",
                ))
            }
            _ => {}
        }
        let shape = match (o.rows, o.cols) {
            (0, 0) => None,
            rc => Some(rc),
        };
        let buf = HostBuf {
            param,
            grad,
            grad_type,
            copy: o.copy.cast(),
            copy_type,
            len,
            shape,
        };
        // SAFETY: the handle and the buffers are passed on as received; this function's
        // `# Safety` promises what `add_buf` requires (the formats are `buf`'s).
        unsafe { super::optimizer::add_buf(opt, o.group, buf) }
    })
}

/// One update with an explicit loss scale and, optionally, gradients passed for this call:
/// `grads` NULL with `n_grads` 0 uses the registered gradients, else `grads[i]` points to the
/// gradients of registered buffer `i` in its registered format (`n_grads` = the number of
/// buffers). Each gradient is widened exactly and divided by `grad_scale` in f32 before
/// clipping, weight decay and the rule (a power of two divides exactly); the norm and the
/// non-finite check are those of the divided values. `grad_scale` 0 means none: the dynamic
/// loss scaler's scale if one is set, else 1; any other value must be finite and > 0 and is
/// refused while a dynamic loss scaler is set. Registered 16-bit copies are written from the
/// new parameters in the same pass. Returns as `flatopt_optimizer_step`.
///
/// # Safety
/// `opt` is NULL (refused) or a live handle from `flatopt_optimizer_new`. `grads` is NULL or
/// holds `n_grads` pointers, each to as many elements of its buffer's format as the buffer,
/// valid during the call. The registered buffers are valid and untouched by others during the
/// call.
#[no_mangle]
pub unsafe extern "C" fn flatopt_optimizer_step_mixed(
    opt: *mut flatopt_optimizer,
    grads: *const *const c_void,
    n_grads: usize,
    grad_scale: c_float,
) -> flatopt_status {
    guard(|| {
        // SAFETY: see `handle`.
        let mut h = unsafe { handle(opt)? };
        check_no_pending(&h)?;
        let scale = given_scale(grad_scale)?;
        // SAFETY: `grads` is NULL or holds `n_grads` pointers (C contract).
        let given = unsafe { given_grads(h.bufs.len(), grads, n_grads)? };
        // SAFETY: registered host pointers and the given gradients, valid during the call (C
        // contract).
        let outcome = unsafe { h.with_slices(given, |e, p, g, c| e.step_mixed(p, g, c, scale))? };
        Ok(outcome_status(outcome))
    })
}

/// The gradients a call passes for its step: `grads` NULL with `n_grads` 0 for the registered
/// ones (`None`), else `n_grads` (= `n_bufs`, the number of registered buffers) pointers.
///
/// # Safety
/// `grads` is NULL or valid for reads of `n_grads` pointers for the returned lifetime.
pub(super) unsafe fn given_grads<'a>(
    n_bufs: usize,
    grads: *const *const c_void,
    n_grads: usize,
) -> Result<Option<&'a [*const c_void]>, Error> {
    if grads.is_null() {
        if n_grads != 0 {
            return Err(Error::NullPointer { name: "grads" });
        }
        return Ok(None);
    }
    if n_grads != n_bufs {
        return Err(Error::LengthMismatch {
            what: "n_grads (number of registered buffers)".to_string(),
            expected: n_bufs,
            got: n_grads,
        });
    }
    // SAFETY: non-null (checked), `n_grads` pointers (this function's contract), the number of
    // registered buffers (checked).
    Ok(Some(unsafe { slice(grads, n_grads) }))
}

/// `flatopt_optimizer_begin_step` with an explicit loss scale, as `flatopt_optimizer_step_mixed`
/// takes it: the registered gradients are widened and divided by `grad_scale` in f32 in the
/// norm / non-finite pass and in every `flatopt_optimizer_step_range` of this step, so the split
/// step is bit for bit the whole `flatopt_optimizer_step_mixed(opt, NULL, 0, grad_scale)` and
/// skips (`FLATOPT_SKIPPED`, or `FLATOPT_ERR_NON_FINITE` by policy) on the same gradients.
/// `grad_scale` 0 means none: the dynamic loss scaler's scale if one is set, else 1 (then this
/// is `flatopt_optimizer_begin_step`); any other value must be finite and > 0 and is refused
/// while a dynamic loss scaler is set. Then `flatopt_optimizer_step_range` and
/// `flatopt_optimizer_end_step` as after `flatopt_optimizer_begin_step`.
///
/// # Safety
/// `opt` is NULL (refused) or a live handle from `flatopt_optimizer_new`.
/// The registered buffers stay valid until `flatopt_optimizer_end_step`.
#[no_mangle]
pub unsafe extern "C" fn flatopt_optimizer_begin_step_scaled(
    opt: *mut flatopt_optimizer,
    grad_scale: c_float,
) -> flatopt_status {
    guard(|| {
        let scale = given_scale(grad_scale)?;
        // SAFETY: this function's contract is `begin`'s.
        unsafe { super::optimizer::begin(opt, scale, std::ptr::null(), 0) }
    })
}

/// The split form of `flatopt_optimizer_step_mixed`: begins a step with an explicit loss scale
/// and, optionally, gradients passed for this step (`grads` NULL with `n_grads` 0: the
/// registered ones; else one pointer per registered buffer, in its registered format), as
/// `flatopt_optimizer_step_mixed` takes them. The step's `flatopt_optimizer_step_range` calls
/// read these gradients, so the split step is bit for bit the whole
/// `flatopt_optimizer_step_mixed(opt, grads, n_grads, grad_scale)`, on the same host threads
/// or on others: this is how a host whose gradients are new buffers every step (PyTorch's
/// `zero_grad(set_to_none=True)`) runs the update on its own thread pool. Returns as
/// `flatopt_optimizer_begin_step`; then `flatopt_optimizer_step_range` and
/// `flatopt_optimizer_end_step`.
///
/// # Safety
/// `opt` is NULL (refused) or a live handle from `flatopt_optimizer_new`. `grads` is NULL or
/// holds `n_grads` pointers, each to as many elements of its buffer's format as the buffer; the
/// pointer array may be reused after this call, but the gradients it points to, like the
/// registered buffers, stay valid and unwritten until `flatopt_optimizer_end_step`.
#[no_mangle]
pub unsafe extern "C" fn flatopt_optimizer_begin_step_mixed(
    opt: *mut flatopt_optimizer,
    grads: *const *const c_void,
    n_grads: usize,
    grad_scale: c_float,
) -> flatopt_status {
    guard(|| {
        let scale = given_scale(grad_scale)?;
        // SAFETY: this function's contract is `begin`'s.
        unsafe { super::optimizer::begin(opt, scale, grads, n_grads) }
    })
}

/// A C `grad_scale`: 0 for none, else finite and > 0.
fn given_scale(grad_scale: c_float) -> Result<Option<f32>, Error> {
    if grad_scale == 0.0 {
        Ok(None)
    } else {
        kernels::grad_scale(grad_scale)?;
        Ok(Some(grad_scale))
    }
}

/// `sizeof(flatopt_loss_scaler_options)` of the first version (frozen).
pub const FLATOPT_LOSS_SCALER_OPTIONS_SIZE_V1: u32 = 24;

/// The dynamic loss scaler (`flatopt_optimizer_set_loss_scaler`), PyTorch
/// `torch.amp.GradScaler`'s rules and defaults. Initialise with
/// `flatopt_loss_scaler_options_init(&o, sizeof o)` or `FLATOPT_LOSS_SCALER_OPTIONS_INIT`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct flatopt_loss_scaler_options {
    /// The caller's `sizeof(flatopt_loss_scaler_options)`, set by the init function or macro.
    pub struct_size: u32,
    /// Finite updates in a row after which the scale grows (>= 1, default 2000).
    pub growth_interval: u32,
    /// The first scale (finite, > 0; default 65536 = 2^16).
    pub init_scale: c_float,
    /// The factor the scale grows by (finite, > 1; default 2). Kept if the product would
    /// overflow.
    pub growth_factor: c_float,
    /// The factor the scale backs off by on an update with a non-finite gradient (in (0, 1);
    /// default 0.5). Kept if the product would reach 0.
    pub backoff_factor: c_float,
    /// Reserved, must be 0.
    pub reserved: u32,
}

/// The published sizes of `flatopt_loss_scaler_options`, oldest first.
pub(crate) const LOSS_SCALER_OPTIONS_VERSIONS: Versions = Versions {
    name: "flatopt_loss_scaler_options",
    sizes: &[FLATOPT_LOSS_SCALER_OPTIONS_SIZE_V1],
};

const _: () =
    assert!(LOSS_SCALER_OPTIONS_VERSIONS.newest() == size_of::<flatopt_loss_scaler_options>());

fn loss_scaler_defaults() -> flatopt_loss_scaler_options {
    let d = LossScaler::default();
    let (growth_factor, backoff_factor, growth_interval) = d.factors();
    flatopt_loss_scaler_options {
        struct_size: size_of::<flatopt_loss_scaler_options>() as u32,
        growth_interval,
        init_scale: d.scale(),
        growth_factor,
        backoff_factor,
        reserved: 0,
    }
}

/// Fills the caller's `size` bytes at `options` with PyTorch GradScaler's defaults (scale
/// 65536, growth 2 every 2000 finite updates, backoff 0.5) and sets `struct_size = size`.
///
/// # Safety
/// `options` is NULL (refused) or valid for writes of `size` bytes.
#[no_mangle]
pub unsafe extern "C" fn flatopt_loss_scaler_options_init(
    options: *mut flatopt_loss_scaler_options,
    size: usize,
) -> flatopt_status {
    guard(|| {
        let (d, v) = (loss_scaler_defaults(), &LOSS_SCALER_OPTIONS_VERSIONS);
        // SAFETY: NULL (refused) or `size` writable bytes (this function's contract).
        unsafe { write_versioned("options", options, size, d, v)? };
        Ok(FLATOPT_OK)
    })
}

/// Sets the dynamic loss scaler (NULL removes it). With one set, every update (each step
/// variant, the split and the sharded ones included) divides the gradients by its scale inside
/// the pass; an update whose divided gradients hold NaN or ±Inf is skipped whatever the
/// non-finite policy (`FLATOPT_SKIPPED`, counted in `flatopt_optimizer_skipped_count`:
/// parameters, state, copies, step counter and schedule unchanged), the scale backs off and
/// `found_inf` is set; after `growth_interval` finite updates in a row the scale grows. Its
/// state is in checkpoints (format 3). Setting one starts at `init_scale` with the counts at
/// 0. Refused between `flatopt_optimizer_begin_step` and `_end_step`.
///
/// # Safety
/// `opt` is NULL (refused) or a live handle from `flatopt_optimizer_new`. `options` is NULL
/// or points to `options->struct_size` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn flatopt_optimizer_set_loss_scaler(
    opt: *mut flatopt_optimizer,
    options: *const flatopt_loss_scaler_options,
) -> flatopt_status {
    guard(|| {
        // SAFETY: see `handle`.
        let mut h = unsafe { handle(opt)? };
        check_no_pending(&h)?;
        let scaler = if options.is_null() {
            None
        } else {
            let (v, d) = (&LOSS_SCALER_OPTIONS_VERSIONS, loss_scaler_defaults());
            // SAFETY: non-null, `struct_size` readable bytes (this function's contract).
            let o = unsafe { read_versioned("options", "options.struct_size", options, d, v)? };
            if o.reserved != 0 {
                return Err(Error::invalid("options.reserved", o.reserved, "must be 0"));
            }
            Some(
                LossScaler::new(
                    o.init_scale,
                    o.growth_factor,
                    o.backoff_factor,
                    o.growth_interval,
                )
                .map_err(prefix_options)?,
            )
        };
        h.engine.set_loss_scaler(scaler);
        Ok(FLATOPT_OK)
    })
}

/// Names a scaler field as its C struct member (`options.init_scale`).
fn prefix_options(e: Error) -> Error {
    match e {
        Error::InvalidArgument {
            name,
            value,
            expected,
        } => Error::InvalidArgument {
            name: match name {
                "init_scale" => "options.init_scale",
                "growth_factor" => "options.growth_factor",
                "backoff_factor" => "options.backoff_factor",
                "growth_interval" => "options.growth_interval",
                other => other,
            },
            value,
            expected,
        },
        other => other,
    }
}

fn no_scaler() -> Error {
    Error::InvalidState("no dynamic loss scaler is set (flatopt_optimizer_set_loss_scaler)")
}

/// The dynamic loss scaler's state: the scale the next update divides by, the finite updates
/// in a row since the scale last changed (`GradScaler`'s growth tracker), and whether the
/// last update found a non-finite gradient and was skipped (1) or not (0). Each output may be
/// NULL (not written). `FLATOPT_ERR_INVALID_STATE` when no scaler is set.
///
/// # Safety
/// `opt` is NULL (refused) or a live handle from `flatopt_optimizer_new`. Each output is NULL
/// or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn flatopt_optimizer_loss_scaler_state(
    opt: *const flatopt_optimizer,
    scale: *mut c_float,
    growth_tracker: *mut u32,
    found_inf: *mut u32,
) -> flatopt_status {
    guard(|| {
        // SAFETY: see `handle_ref`.
        let h = unsafe { handle_ref(opt)? };
        let sc = *h.engine.loss_scaler().ok_or_else(no_scaler)?;
        // SAFETY (each): non-null (tested) and valid for one write (C contract).
        unsafe {
            if !scale.is_null() {
                write_out("scale", scale, sc.scale())?;
            }
            if !growth_tracker.is_null() {
                write_out("growth_tracker", growth_tracker, sc.growth_tracker())?;
            }
            if !found_inf.is_null() {
                write_out("found_inf", found_inf, u32::from(sc.found_inf()))?;
            }
        }
        Ok(FLATOPT_OK)
    })
}

/// Restores the dynamic loss scaler's scale (finite, > 0) and growth tracker (below its
/// `growth_interval`), as `GradScaler.load_state_dict` does; `found_inf` becomes 0. Checkpoints
/// carry this state already: this is for hosts that keep it elsewhere.
/// `FLATOPT_ERR_INVALID_STATE` when no scaler is set.
///
/// # Safety
/// `opt` is NULL (refused) or a live handle from `flatopt_optimizer_new`.
#[no_mangle]
pub unsafe extern "C" fn flatopt_optimizer_set_loss_scaler_state(
    opt: *mut flatopt_optimizer,
    scale: c_float,
    growth_tracker: u32,
) -> flatopt_status {
    guard(|| {
        // SAFETY: see `handle`.
        let mut h = unsafe { handle(opt)? };
        check_no_pending(&h)?;
        let sc = *h.engine.loss_scaler().ok_or_else(no_scaler)?;
        let restored = sc.with_state(scale, growth_tracker, false)?;
        h.engine.set_loss_scaler(Some(restored));
        Ok(FLATOPT_OK)
    })
}

/// Checks the (pointer, count) of a 16-bit array.
fn check_half(name: &'static str, ptr: *const u16, len: usize) -> Result<(), Error> {
    check_elems(name, ptr, len)
}

/// A 16-bit format that must not be f32.
fn half_from_c(name: &'static str, x: u32) -> Result<Half, Error> {
    dtype_from_c(name, x)?.ok_or_else(|| {
        Error::invalid(
            name,
            "FLATOPT_DTYPE_F32",
            "must be FLATOPT_DTYPE_BF16 or FLATOPT_DTYPE_F16",
        )
    })
}

/// Widens `len` 16-bit floats of format `dtype` (bf16 or f16) at `src` into floats at `dst`,
/// exactly (a NaN stays NaN). The buffers must not overlap.
///
/// # Safety
/// `src` holds `len` readable `uint16_t` and `dst` `len` writable floats (each NULL only when
/// `len` is 0), not accessed by anyone else during the call.
#[no_mangle]
pub unsafe extern "C" fn flatopt_widen_to_f32(
    dtype: u32,
    src: *const u16,
    dst: *mut c_float,
    len: usize,
) -> flatopt_status {
    guard(|| {
        let ty = half_from_c("dtype", dtype)?;
        check_half("src", src, len)?;
        check_buf("dst", dst, len)?;
        let mut spans = [
            span(src, len, false, "src", 0),
            span(dst, len, true, "dst", 0),
        ];
        check_disjoint(&mut spans)?;
        // SAFETY: checked (non-null unless empty, aligned, size fits, disjoint); valid for the
        // call (C contract).
        let (s, d) = unsafe { (slice(src, len), slice_mut(dst, len)) };
        kernels::widen_to_f32(simd::default_tier(), ty, s, d)?;
        Ok(FLATOPT_OK)
    })
}

/// Narrows `len` floats at `src` into 16-bit floats of format `dtype` (bf16 or f16) at `dst`:
/// round to nearest even, subnormals kept, overflow to ±Inf, NaN kept NaN. The buffers must
/// not overlap.
///
/// # Safety
/// `src` holds `len` readable floats and `dst` `len` writable `uint16_t` (each NULL only when
/// `len` is 0), not accessed by anyone else during the call.
#[no_mangle]
pub unsafe extern "C" fn flatopt_narrow_from_f32(
    dtype: u32,
    src: *const c_float,
    dst: *mut u16,
    len: usize,
) -> flatopt_status {
    guard(|| {
        let ty = half_from_c("dtype", dtype)?;
        check_buf("src", src, len)?;
        check_half("dst", dst, len)?;
        let mut spans = [
            span(src, len, false, "src", 0),
            span(dst, len, true, "dst", 0),
        ];
        check_disjoint(&mut spans)?;
        // SAFETY: checked (non-null unless empty, aligned, size fits, disjoint); valid for the
        // call (C contract).
        let (s, d) = unsafe { (slice(src, len), slice_mut(dst, len)) };
        kernels::narrow_from_f32(simd::default_tier(), ty, s, d)?;
        Ok(FLATOPT_OK)
    })
}

/// Block partial sums of squares (see `flatopt_sum_squares_partials`) of `len` gradients of
/// format `grad_dtype` at `grad`, widened and divided by `grad_scale` (finite, > 0; 1 for
/// none) as the mixed-precision update applies them.
///
/// # Safety
/// `grad` holds `len` readable elements of its format and `partials` is valid for writes of
/// `n_partials` doubles (each NULL only when its count is 0).
#[no_mangle]
pub unsafe extern "C" fn flatopt_sum_squares_partials_mixed(
    grad: *const c_void,
    grad_dtype: u32,
    len: usize,
    grad_scale: c_float,
    partials: *mut c_double,
    n_partials: usize,
) -> flatopt_status {
    guard(|| {
        let ty = dtype_from_c("grad_dtype", grad_dtype)?;
        check_grad("grad", grad, ty, len)?;
        if partials.is_null() && n_partials > 0 {
            return Err(Error::NullPointer { name: "partials" });
        }
        check_f64_aligned("partials", partials)?;
        let want = kernels::sumsq_block_count(len);
        if n_partials != want {
            return Err(Error::LengthMismatch {
                what: "n_partials (one per block)".to_string(),
                expected: want,
                got: n_partials,
            });
        }
        let mut spans = [
            span(grad.cast::<u8>(), len * elem_size(ty), false, "grad", 0),
            span(partials, n_partials, true, "partials", 0),
        ];
        check_disjoint(&mut spans)?;
        // SAFETY: checked (non-null unless empty, aligned, size fits); valid for the call (C
        // contract).
        let g = unsafe { grad_slice(grad, ty, 0, len) };
        // SAFETY: non-null unless empty, aligned (checked), `n_partials` writable doubles
        // disjoint from `grad` (checked; C contract).
        let out = unsafe { slice_mut(partials, n_partials) };
        kernels::sum_squares_partials_mixed(simd::default_tier(), g, grad_scale, out)?;
        Ok(FLATOPT_OK)
    })
}

/// The stateless mixed-precision update of one buffer, for any base rule (`hp->kind`): the
/// gradients (`len` elements of `grad_dtype` at `grad`) widened exactly and divided by
/// `grad_scale` (finite, > 0; 1 for none) before the pipeline `args` describes, the f32
/// parameters and state updated in place, and `copy` (`len` elements of `copy_dtype`, bf16 or
/// f16; NULL with `FLATOPT_DTYPE_F32` for none) written from the new parameters in the same
/// pass. Bit for bit the stateless f32 update of the widened, divided gradients followed by
/// `flatopt_narrow_from_f32`. The state buffers the rule uses are required (`m` for momentum
/// and the Adam family, `v` for second moments, `v_max` for AMSGrad and the rules keeping a
/// third array, `slow` with `args->sync`), the others may be NULL. Nothing is written on
/// error.
#[allow(clippy::too_many_arguments)]
///
/// # Safety
/// `hp` and `args` are NULL (refused) or point to their `struct_size` readable bytes. Each
/// buffer is NULL (refused where required) or holds `len` elements of its format, valid for
/// the call and not accessed by anyone else during it.
#[no_mangle]
pub unsafe extern "C" fn flatopt_mixed_update(
    hp: *const flatopt_base_params,
    args: *const flatopt_step_args,
    grad_scale: c_float,
    param: *mut c_float,
    grad: *const c_void,
    grad_dtype: u32,
    m: *mut c_float,
    v: *mut c_float,
    v_max: *mut c_float,
    slow: *mut c_float,
    copy: *mut c_void,
    copy_dtype: u32,
    len: usize,
) -> flatopt_status {
    guard(|| {
        // SAFETY: NULL (refused) or `struct_size` readable bytes each (C contract).
        let plan = unsafe { stateless_plan(hp, args, None)? };
        let gty = dtype_from_c("grad_dtype", grad_dtype)?;
        let cty = dtype_from_c("copy_dtype", copy_dtype)?;
        let (m_used, v_used, vmax_used) = plan.rule.state_used();
        let used = [m_used, v_used, vmax_used, plan.sync_alpha.is_some()];
        let names = ["m", "v", "v_max", "slow"];
        let ptrs = [m, v, v_max, slow];
        check_buf("param", param, len)?;
        check_grad("grad", grad, gty, len)?;
        match (cty, copy.is_null()) {
            (None, false) => {
                return Err(Error::invalid(
                    "copy_dtype",
                    "FLATOPT_DTYPE_F32 with a copy",
                    "must be FLATOPT_DTYPE_BF16 or FLATOPT_DTYPE_F16 when copy is set",
                ))
            }
            (Some(_), _) => check_half("copy", copy.cast(), len)?,
            (None, true) => {}
        }
        let mut spans: [Span; 7] = [(0, 0, false, "", 0); 7];
        spans[0] = span(param, len, true, "param", 0);
        spans[1] = span(grad.cast::<u8>(), len * elem_size(gty), false, "grad", 0);
        spans[2] = span(
            copy.cast::<u16>(),
            if cty.is_some() { len } else { 0 },
            true,
            "copy",
            0,
        );
        for (k, ((name, p), u)) in names.iter().zip(ptrs).zip(used).enumerate() {
            if u {
                if p.is_null() && len > 0 {
                    return Err(Error::NullPointer { name });
                }
                check_buf(name, p, len)?;
                spans[3 + k] = span(p, len, true, name, 0);
            }
        }
        check_disjoint(&mut spans)?;
        let get = |k: usize| -> &mut [f32] {
            if used[k] {
                // SAFETY: checked above (non-null unless empty, aligned, disjoint).
                unsafe { slice_mut(ptrs[k], len) }
            } else {
                &mut []
            }
        };
        let b = MixedBuffers {
            // SAFETY: checked above.
            param: unsafe { slice_mut(param, len) },
            // SAFETY: checked above.
            grad: unsafe { grad_slice(grad, gty, 0, len) },
            m: get(0),
            v: get(1),
            v_max: get(2),
            slow: get(3),
            copy: cty.map(|half| ParamCopy {
                half,
                // SAFETY: checked above (non-null unless empty, aligned, disjoint).
                out: unsafe { slice_mut(copy.cast::<u16>(), len) },
            }),
        };
        kernels::apply_mixed(simd::default_tier(), &plan, grad_scale, b)?;
        Ok(FLATOPT_OK)
    })
}
