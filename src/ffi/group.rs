//! Parameter groups through C: `flatopt_group_options` (a versioned struct), adding a group,
//! registering a buffer into one, and reading and changing a group's hyperparameters.
//!
//! A group inherits what its options leave unset: NaN in `lr` or `weight_decay`, NULL in
//! `base` (the convention of the other option structs, where NaN marks "no value"). Group 0 is
//! the optimizer's own configuration; `flatopt_optimizer_add_param` registers into it.

use std::ffi::{c_double, c_float};

use crate::engine::GroupOptions;
use crate::error::Error;

use super::boundary::{flatopt_status, flatopt_status::*, guard};
use super::catalog;
use super::handle::{check_no_pending, flatopt_optimizer, handle, handle_ref, Inner};
use super::ptr::{read_versioned, write_out, write_versioned, Versions};
use super::structs::{base_defaults, flatopt_base_params, read_base, BASE_PARAMS_VERSIONS};

/// `sizeof(flatopt_group_options)` of the first version (frozen).
pub const FLATOPT_GROUP_OPTIONS_SIZE_V1: u32 = 32;

/// The hyperparameters of a new parameter group (`flatopt_optimizer_add_group`). Initialise
/// with `flatopt_group_options_init(&o, sizeof o)` or `FLATOPT_GROUP_OPTIONS_INIT`, which make
/// every field "inherit the optimizer's", then set the fields the group changes.
///
/// The AdamW recipe (decay on weights, none on biases):
/// `flatopt_group_options o = FLATOPT_GROUP_OPTIONS_INIT; o.weight_decay = 0.0;`
/// then `flatopt_optimizer_add_group(opt, &o, &no_decay)` and register the biases with
/// `flatopt_optimizer_add_param_to_group(opt, no_decay, ...)`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct flatopt_group_options {
    /// The caller's `sizeof(flatopt_group_options)`, set by the init function or macro.
    pub struct_size: u32,
    /// Reserved, must be 0.
    pub reserved: u32,
    /// The group's learning rate, >= 0; NaN (the default): the optimizer's. Under a schedule
    /// the group follows `lr * schedule(t) / base_lr` (`base_lr`: the schedule's `base_lr`
    /// field, for a piecewise-constant schedule its first value), as PyTorch's schedulers
    /// scale each group's initial learning rate; an own rate needs `base_lr > 0`.
    pub lr: c_double,
    /// The group's weight decay as the base rule defines it: AdamW's decoupled
    /// `decoupled_weight_decay`, for the other rules the coupled `flatopt_config.weight_decay`:
    /// at least 0, and 0 turns decay off for the group; NaN (the default): the optimizer's (or
    /// that of `base`, if set).
    pub weight_decay: c_double,
    /// The group's base-rule hyperparameters (betas, eps, momentum, ...), of the optimizer's
    /// kind; NULL (the default): the optimizer's. Copied.
    pub base: *const flatopt_base_params,
}

/// The published sizes of `flatopt_group_options`, oldest first.
pub(crate) const GROUP_OPTIONS_VERSIONS: Versions = Versions {
    name: "flatopt_group_options",
    sizes: &[FLATOPT_GROUP_OPTIONS_SIZE_V1],
};

const _: () = assert!(GROUP_OPTIONS_VERSIONS.newest() == size_of::<flatopt_group_options>());

/// The defaults: inherit everything.
fn group_options_defaults() -> flatopt_group_options {
    flatopt_group_options {
        struct_size: size_of::<flatopt_group_options>() as u32,
        reserved: 0,
        lr: f64::NAN,
        weight_decay: f64::NAN,
        base: std::ptr::null(),
    }
}

/// Fills the caller's `size` bytes at `options` with the defaults (every field inherits the
/// optimizer's: `lr` and `weight_decay` NaN, `base` NULL) and sets `struct_size = size`; pass
/// `sizeof *options`.
///
/// # Safety
/// `options` is NULL (refused) or valid for writes of `size` bytes.
#[no_mangle]
pub unsafe extern "C" fn flatopt_group_options_init(
    options: *mut flatopt_group_options,
    size: usize,
) -> flatopt_status {
    guard(|| {
        let d = group_options_defaults();
        // SAFETY: NULL (refused) or `size` writable bytes (this function's contract).
        unsafe { write_versioned("options", options, size, d, &GROUP_OPTIONS_VERSIONS)? };
        Ok(FLATOPT_OK)
    })
}

/// Reads and converts a caller's options (NULL: inherit everything).
///
/// # Safety
/// `p` is NULL or points to `struct_size` readable bytes whose `base` is NULL or valid.
unsafe fn read_group_options(p: *const flatopt_group_options) -> Result<GroupOptions, Error> {
    if p.is_null() {
        return Ok(GroupOptions::default());
    }
    let (v, d) = (&GROUP_OPTIONS_VERSIONS, group_options_defaults());
    // SAFETY: non-null, `struct_size` readable bytes (this function's contract).
    let o = unsafe { read_versioned("options", "options.struct_size", p, d, v)? };
    if o.reserved != 0 {
        return Err(Error::invalid("options.reserved", o.reserved, "must be 0"));
    }
    let base = if o.base.is_null() {
        None
    } else {
        // SAFETY: non-null, points to a flatopt_base_params (this function's contract).
        Some(unsafe { read_base("options.base", "options.base.struct_size", o.base)? }.to_base()?)
    };
    let given = |x: f64| (!x.is_nan()).then_some(x);
    Ok(GroupOptions {
        lr: given(o.lr),
        weight_decay: given(o.weight_decay),
        base,
    })
}

/// Adds a parameter group with `options` (NULL: every value the optimizer's) and writes its
/// index to `*group` (1, 2, ...; group 0 is the optimizer's own configuration). Validated as
/// the configuration is (the message names the first bad field); the group's base rule must
/// be of the optimizer's kind. Clipping by global norm, the non-finite check, Lookahead and
/// the step counter stay global. Allowed at any time but between
/// `flatopt_optimizer_begin_step` and `_end_step`.
///
/// # Safety
/// `opt` is NULL (refused) or a live handle from `flatopt_optimizer_new`. `options` is NULL or
/// points to `options->struct_size` readable bytes whose `base` is NULL or valid. `group` is
/// NULL (refused) or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn flatopt_optimizer_add_group(
    opt: *mut flatopt_optimizer,
    options: *const flatopt_group_options,
    group: *mut usize,
) -> flatopt_status {
    guard(|| {
        // SAFETY: see `handle`.
        let mut h = unsafe { handle(opt)? };
        check_no_pending(&h)?;
        if group.is_null() {
            return Err(Error::NullPointer { name: "group" });
        }
        // SAFETY: NULL or valid for its struct_size, its base NULL or valid (contract).
        let opts = unsafe { read_group_options(options)? };
        let g = h.engine.add_group(opts)?;
        // SAFETY: non-null (checked) and valid for one write (contract).
        unsafe { write_out("group", group, g)? };
        Ok(FLATOPT_OK)
    })
}

/// `flatopt_optimizer_add_param` into parameter group `group` (from
/// `flatopt_optimizer_add_group`; 0 is the optimizer's own).
///
/// # Safety
/// As `flatopt_optimizer_add_param`.
#[no_mangle]
pub unsafe extern "C" fn flatopt_optimizer_add_param_to_group(
    opt: *mut flatopt_optimizer,
    group: usize,
    param: *mut c_float,
    grad: *const c_float,
    len: usize,
) -> flatopt_status {
    // SAFETY: the arguments are passed on as received; this function's `# Safety` promises
    // what `add_param_in` requires.
    let buf = super::handle::HostBuf::f32(param, grad, len);
    unsafe { super::optimizer::add_param_in(opt, group, buf) }
}

/// Reads a group's value into `*out` (refused, writing nothing, for an unknown group).
///
/// # Safety
/// `opt` NULL or a live handle; `out` NULL or valid for one write.
unsafe fn group_query<T>(
    opt: *const flatopt_optimizer,
    group: usize,
    out: *mut T,
    read: impl FnOnce(&Inner, usize) -> T,
) -> flatopt_status {
    guard(|| {
        // SAFETY: see `handle_ref`.
        let h = unsafe { handle_ref(opt)? };
        check_group(&h, group)?;
        let value = read(&h, group);
        // SAFETY: NULL is refused; otherwise valid for one write (contract).
        unsafe { write_out("out", out, value)? };
        Ok(FLATOPT_OK)
    })
}

fn check_group(h: &Inner, group: usize) -> Result<(), Error> {
    let n = h.engine.num_groups();
    if group >= n {
        return Err(Error::invalid(
            "group",
            format!("{group} (this optimizer has {n} groups)"),
            "must be a parameter group of this optimizer (0 or an index from add_group)",
        ));
    }
    Ok(())
}

/// The number of parameter groups (at least 1: group 0, the optimizer's own).
///
/// # Safety
/// `opt` is NULL (refused) or a live handle from `flatopt_optimizer_new`.
/// `out` is NULL (refused) or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn flatopt_optimizer_num_groups(
    opt: *const flatopt_optimizer,
    out: *mut usize,
) -> flatopt_status {
    // SAFETY: `opt` and `out` are passed on as received, and this function's `# Safety`
    // promises what `query` requires of them: NULL or a live handle; NULL or one writable value.
    unsafe { super::handle::query(opt, out, |h| h.engine.num_groups()) }
}

/// The parameter group of registered buffer `index` (registration order).
///
/// # Safety
/// `opt` is NULL (refused) or a live handle from `flatopt_optimizer_new`.
/// `out` is NULL (refused) or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn flatopt_optimizer_param_group(
    opt: *const flatopt_optimizer,
    index: usize,
    out: *mut usize,
) -> flatopt_status {
    guard(|| {
        // SAFETY: see `handle_ref`.
        let h = unsafe { handle_ref(opt)? };
        let groups = h.engine.buffer_groups();
        let g = *groups.get(index).ok_or_else(|| {
            Error::invalid(
                "index",
                format!("{index} ({} buffers registered)", groups.len()),
                "must be a registered buffer",
            )
        })?;
        // SAFETY: NULL is refused; otherwise valid for one write (contract).
        unsafe { write_out("out", out, g)? };
        Ok(FLATOPT_OK)
    })
}

/// Group `group`'s own learning rate, NaN when it follows the optimizer's schedule.
///
/// # Safety
/// `opt` is NULL (refused) or a live handle from `flatopt_optimizer_new`.
/// `out` is NULL (refused) or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn flatopt_optimizer_group_lr(
    opt: *const flatopt_optimizer,
    group: usize,
    out: *mut c_double,
) -> flatopt_status {
    // SAFETY: `opt` and `out` are passed on as received, and this function's `# Safety`
    // promises what `group_query` requires: NULL or a live handle; NULL or one writable value.
    unsafe {
        group_query(opt, group, out, |h, g| {
            h.engine.groups()[g].lr().unwrap_or(f64::NAN)
        })
    }
}

/// The learning rate group `group` uses in the next update (its rate scaled by the schedule,
/// rounded to f32 as the kernels use it).
///
/// # Safety
/// `opt` is NULL (refused) or a live handle from `flatopt_optimizer_new`.
/// `out` is NULL (refused) or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn flatopt_optimizer_group_current_lr(
    opt: *const flatopt_optimizer,
    group: usize,
    out: *mut c_float,
) -> flatopt_status {
    // SAFETY: as `flatopt_optimizer_group_lr`.
    unsafe {
        group_query(opt, group, out, |h, g| {
            h.engine.group_current_lr(g).unwrap_or(f32::NAN)
        })
    }
}

/// The learning rate group `group` uses in the next update before its rounding to f32: the
/// schedule's value times the group's ratio, computed in f64 (the value a Python or PyTorch
/// scheduler reports). The kernels apply `(float)` of it, `flatopt_optimizer_group_current_lr`.
///
/// # Safety
/// `opt` is NULL (refused) or a live handle from `flatopt_optimizer_new`.
/// `out` is NULL (refused) or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn flatopt_optimizer_group_current_lr_exact(
    opt: *const flatopt_optimizer,
    group: usize,
    out: *mut c_double,
) -> flatopt_status {
    // SAFETY: as `flatopt_optimizer_group_lr`.
    unsafe {
        group_query(opt, group, out, |h, g| {
            h.engine.group_current_lr_exact(g).unwrap_or(f64::NAN)
        })
    }
}

/// Group `group`'s weight decay as the base rule defines it (see
/// `flatopt_group_options.weight_decay`).
///
/// # Safety
/// `opt` is NULL (refused) or a live handle from `flatopt_optimizer_new`.
/// `out` is NULL (refused) or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn flatopt_optimizer_group_weight_decay(
    opt: *const flatopt_optimizer,
    group: usize,
    out: *mut c_double,
) -> flatopt_status {
    // SAFETY: as `flatopt_optimizer_group_lr`.
    unsafe { group_query(opt, group, out, |h, g| h.engine.groups()[g].weight_decay()) }
}

/// Sets group `group`'s learning rate (NaN: follow the optimizer's schedule again); the next
/// update uses it. Validated (at least 0 and finite as f32; an own rate needs a base learning
/// rate above 0); allocates nothing. Refused between `flatopt_optimizer_begin_step` and `_end_step`.
///
/// # Safety
/// `opt` is NULL (refused) or a live handle from `flatopt_optimizer_new`.
#[no_mangle]
pub unsafe extern "C" fn flatopt_optimizer_set_group_lr(
    opt: *mut flatopt_optimizer,
    group: usize,
    lr: c_double,
) -> flatopt_status {
    guard(|| {
        // SAFETY: see `handle`.
        let mut h = unsafe { handle(opt)? };
        check_no_pending(&h)?;
        h.engine.set_group_lr(group, (!lr.is_nan()).then_some(lr))?;
        Ok(FLATOPT_OK)
    })
}

/// Sets group `group`'s weight decay as the base rule defines it (>= 0, 0 for none); the next
/// update uses it. Otherwise as `flatopt_optimizer_set_group_lr` (NaN is refused).
///
/// # Safety
/// `opt` is NULL (refused) or a live handle from `flatopt_optimizer_new`.
#[no_mangle]
pub unsafe extern "C" fn flatopt_optimizer_set_group_weight_decay(
    opt: *mut flatopt_optimizer,
    group: usize,
    weight_decay: c_double,
) -> flatopt_status {
    guard(|| {
        // SAFETY: see `handle`.
        let mut h = unsafe { handle(opt)? };
        check_no_pending(&h)?;
        h.engine.set_group_weight_decay(group, weight_decay)?;
        Ok(FLATOPT_OK)
    })
}

/// Replaces group `group`'s base-rule hyperparameters (betas, eps, momentum, ...) with `*base`
/// (read as `flatopt_group_options.base` is: an older caller's smaller struct gets the
/// defaults of the fields it lacks); the next update uses them. `base` must be of the
/// optimizer's kind, with valid values (the message names the first bad field), and keep the
/// group's state buffers (turning AMSGrad, momentum or centering on or off is refused).
/// Allocates nothing; on error nothing changes. Refused between `flatopt_optimizer_begin_step`
/// and `_end_step`.
///
/// # Safety
/// `opt` is NULL (refused) or a live handle from `flatopt_optimizer_new`.
/// `base` is NULL (refused) or points to a `flatopt_base_params` of `struct_size` readable
/// bytes.
#[no_mangle]
pub unsafe extern "C" fn flatopt_optimizer_set_group_base_params(
    opt: *mut flatopt_optimizer,
    group: usize,
    base: *const flatopt_base_params,
) -> flatopt_status {
    guard(|| {
        // SAFETY: see `handle`.
        let mut h = unsafe { handle(opt)? };
        check_no_pending(&h)?;
        // SAFETY: NULL (refused) or a readable struct (this function's contract).
        let b = unsafe { read_base("base", "base.struct_size", base)? }.to_base()?;
        h.engine.set_group_base(group, b)?;
        Ok(FLATOPT_OK)
    })
}

/// Writes group `group`'s base-rule hyperparameters into the caller's `size` bytes at `out`
/// (pass `sizeof *out`; an older caller's struct gets the fields it has), with
/// `struct_size = size`.
///
/// # Safety
/// `opt` is NULL (refused) or a live handle from `flatopt_optimizer_new`.
/// `out` is NULL (refused) or valid for writes of `size` bytes.
#[no_mangle]
pub unsafe extern "C" fn flatopt_optimizer_group_base_params(
    opt: *const flatopt_optimizer,
    group: usize,
    out: *mut flatopt_base_params,
    size: usize,
) -> flatopt_status {
    guard(|| {
        // SAFETY: see `handle_ref`.
        let h = unsafe { handle_ref(opt)? };
        check_group(&h, group)?;
        let base = h.engine.groups()[group].base();
        let mut p = base_defaults(base.kind());
        let spec = base.spec();
        base.try_for_each_value(|i, v| {
            catalog::set(&mut p, &spec.fields[i], &v);
            Ok::<(), ()>(())
        })
        .expect("infallible");
        // SAFETY: NULL (refused) or `size` writable bytes (this function's contract).
        unsafe { write_versioned("out", out, size, p, &BASE_PARAMS_VERSIONS)? };
        Ok(FLATOPT_OK)
    })
}
