//! The exported functions on an optimizer handle: creation and release, registration, the
//! step variants (whole, with gradients, sharded, split over the host's threads), queries,
//! settings, Lookahead slow weights and the schedule.

use std::ffi::{c_double, c_float, c_void};

use crate::engine::Optimizer;
use crate::error::Error;
use crate::kernels::{self, HeldBuffers, MixedBuffers, StateDtype, Q8_BLOCK};
use crate::simd;

use super::boundary::{flatopt_status, flatopt_status::*, guard, guard_value, set_message};
use super::handle::{
    check_no_pending, copy_slice, flatopt_optimizer, grad_slice, handle, handle_even_poisoned,
    handle_ref, outcome_status, query, HostBuf, Inner, RawHeld,
};
use super::ptr::{
    check_buf, check_f64_aligned, free_handle, slice, slice_mut, sub_slice_mut, write_out,
};
use super::structs::{flatopt_config, read_config, tier_from_c};

/// Creates an optimizer from `config` (validated: the message names the first bad field) and
/// writes the handle to `*out`. Release it with `flatopt_optimizer_free`.
///
/// # Safety
/// `config` is NULL (refused) or points to `config->struct_size` readable bytes whose
/// `base` and `schedule` are NULL or valid (the schedule's lists valid for their
/// counts; everything is copied). `out` is NULL (refused) or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn flatopt_optimizer_new(
    config: *const flatopt_config,
    out: *mut *mut flatopt_optimizer,
) -> flatopt_status {
    guard(|| {
        if out.is_null() {
            return Err(Error::NullPointer { name: "out" });
        }
        // SAFETY: NULL (refused) or a flatopt_config of `struct_size` bytes whose pointers are
        // NULL or valid (this function's contract).
        let cfg = unsafe { read_config(config)? };
        let engine = Optimizer::new(cfg)?;
        let h = Box::new(flatopt_optimizer::new(engine));
        // SAFETY: `out` is non-null (checked) and valid for writes (C contract).
        unsafe { write_out("out", out, Box::into_raw(h))? };
        Ok(FLATOPT_OK)
    })
}

/// Releases an optimizer. NULL is accepted and ignored. The handle must not be used afterwards.
///
/// # Safety
/// `opt` is NULL (ignored) or a live handle, not used by any other call now nor
/// afterwards.
#[no_mangle]
pub unsafe extern "C" fn flatopt_optimizer_free(opt: *mut flatopt_optimizer) {
    if opt.is_null() {
        return;
    }
    guard_value((), || {
        // SAFETY: a live handle from `flatopt_optimizer_new` (C contract); taking it
        // exclusively proves no other thread is inside a call on it right now.
        match unsafe { handle_even_poisoned(opt) } {
            Ok(h) => {
                std::mem::forget(h); // keep the lock taken: the handle is going away
                                     // SAFETY: a handle from `flatopt_optimizer_new`, freed once (C contract), and
                                     // no call is using it (the lock is ours).
                unsafe { free_handle(opt) };
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
///
/// # Safety
/// `opt` is NULL (refused) or a live handle from `flatopt_optimizer_new`.
/// `param` and `grad` (if not NULL) hold `len` floats each and stay valid, and
/// untouched by others while a call on the handle runs, until the handle is freed.
#[no_mangle]
pub unsafe extern "C" fn flatopt_optimizer_add_param(
    opt: *mut flatopt_optimizer,
    param: *mut c_float,
    grad: *const c_float,
    len: usize,
) -> flatopt_status {
    // SAFETY: the arguments are passed on as received; this function's `# Safety` promises
    // what `add_param_in` requires.
    unsafe { add_param_in(opt, 0, HostBuf::f32(param, grad, len)) }
}

/// Registers a buffer into parameter group `group` (`flatopt_optimizer_add_param`,
/// `flatopt_optimizer_add_param_to_group` and `flatopt_optimizer_add_param_with_options`).
///
/// # Safety
/// As `flatopt_optimizer_add_param`, the gradients and the copy in the formats `buf` names.
pub(crate) unsafe fn add_param_in(
    opt: *mut flatopt_optimizer,
    group: usize,
    buf: HostBuf,
) -> flatopt_status {
    // SAFETY: this function's contract is `add_buf`'s.
    guard(|| unsafe { add_buf(opt, group, buf) })
}

/// [`add_param_in`] inside the caller's guard.
///
/// # Safety
/// As `flatopt_optimizer_add_param`, the gradients and the copy in the formats `buf` names.
pub(crate) unsafe fn add_buf(
    opt: *mut flatopt_optimizer,
    group: usize,
    buf: HostBuf,
) -> Result<flatopt_status, Error> {
    // SAFETY: see `handle`.
    let mut h = unsafe { handle(opt)? };
    if buf.param.is_null() && buf.len > 0 {
        return Err(Error::NullPointer { name: "param" });
    }
    h.add(buf, group)?;
    Ok(FLATOPT_OK)
}

/// One update of every registered buffer with the registered gradient buffers. Returns
/// `FLATOPT_OK`, `FLATOPT_SKIPPED` (a gradient held NaN/Inf under the skip policy, or with a
/// dynamic loss scaler: nothing changed) or an error (nothing changed). Gradients registered
/// in 16 bits are widened in the pass, divided by the dynamic loss scaler's scale if one is
/// set (`flatopt_optimizer_set_loss_scaler`), and the registered 16-bit copies are written
/// from the new parameters (see `flatopt_optimizer_add_param_with_options`).
///
/// # Safety
/// `opt` is NULL (refused) or a live handle from `flatopt_optimizer_new`.
/// The registered buffers are valid and untouched by others during the call.
#[no_mangle]
pub unsafe extern "C" fn flatopt_optimizer_step(opt: *mut flatopt_optimizer) -> flatopt_status {
    guard(|| {
        // SAFETY: see `handle`.
        let mut h = unsafe { handle(opt)? };
        check_no_pending(&h)?;
        // SAFETY: registered host pointers, valid during the call (C contract).
        let outcome = unsafe { h.with_slices(None, |e, p, g, c| e.step_mixed(p, g, c, None))? };
        Ok(outcome_status(outcome))
    })
}

/// One update with gradients passed for this call: `grads[i]` is the gradient of registered
/// buffer `i` (same length); `n_grads` must equal the number of registered buffers. Every
/// buffer must have been registered with f32 gradients (pass 16-bit ones with
/// `flatopt_optimizer_step_mixed`).
///
/// # Safety
/// `opt` is NULL (refused) or a live handle from `flatopt_optimizer_new`.
/// `grads` is NULL (refused) or holds `n_grads` pointers, each to as many floats
/// as its registered buffer, valid during the call.
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
        if let Some(i) = h.bufs.iter().position(|b| b.grad_type.is_some()) {
            return Err(Error::invalid(
                "grads",
                format!("buffer {i} (registered with 16-bit gradients)"),
                "must be f32 in flatopt_optimizer_step_with_grads: pass 16-bit gradients with \
                 flatopt_optimizer_step_mixed",
            ));
        }
        // SAFETY: `grads` is non-null (checked) and holds `n_grads` pointers (C contract), a
        // count equal to the number of registered buffers (checked); a `*const float` and a
        // `*const void` have the same representation.
        let given = unsafe { slice(grads.cast::<*const c_void>(), n_grads) };
        // SAFETY: registered host pointers and the given gradients, valid during the call (C
        // contract).
        let outcome =
            unsafe { h.with_slices(Some(given), |e, p, g, c| e.step_mixed(p, g, c, None))? };
        Ok(outcome_status(outcome))
    })
}

/// The number of sum-of-squares blocks over all registered buffers (`ceil(len / block size)`
/// per buffer): the length of the array `flatopt_optimizer_sum_squares_partials` fills.
///
/// # Safety
/// `opt` is NULL (refused) or a live handle from `flatopt_optimizer_new`.
/// `out` is NULL (refused) or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn flatopt_optimizer_sum_squares_block_count(
    opt: *const flatopt_optimizer,
    out: *mut usize,
) -> flatopt_status {
    // SAFETY: `opt` and `out` are passed on as received, and this function's `# Safety`
    // promises what `query` requires of them: NULL or a live handle; NULL or one writable value.
    unsafe { query(opt, out, |h| h.engine.sum_squares_block_count()) }
}

/// Sharded training, phase one: writes the block partial sums of squares of the registered
/// gradients into `partials` (`n` = `flatopt_optimizer_sum_squares_block_count`). Exchange
/// them between processes (e.g. MPI_Allgather), add all of them in global block order
/// starting from 0.0, and pass the sum to `flatopt_optimizer_step_with_sum_squares`. When every
/// shard starts on a block boundary (`flatopt_sum_squares_block_size`), the sharded run is
/// bit-identical to a single process.
///
/// # Safety
/// `opt` is NULL (refused) or a live handle from `flatopt_optimizer_new`.
/// `partials` is NULL (refused unless `n` is 0) or valid for writes of `n`
/// doubles; the registered gradients are valid during the call.
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
        let want = h.engine.sum_squares_block_count();
        let what = "n (see flatopt_optimizer_sum_squares_block_count)";
        // SAFETY: `partials` as this function's `# Safety` promises.
        let out = unsafe { partials_out(&h, partials, n, want, what)? };
        // SAFETY: registered host pointers, valid during the call (C contract).
        unsafe { h.with_slices(None, |e, _, g, _| e.sum_squares_partials_mixed(g, out))? };
        Ok(FLATOPT_OK)
    })
}

/// Sharded training, phase two: one update of the registered buffers using the global sum of
/// squares `sum_squares` (see `flatopt_optimizer_sum_squares_partials`) for clipping by norm
/// and the non-finite check. A non-finite sum skips the update on every shard alike
/// (`FLATOPT_SKIPPED` or `FLATOPT_ERR_NON_FINITE` by policy).
///
/// # Safety
/// `opt` is NULL (refused) or a live handle from `flatopt_optimizer_new`.
/// The registered buffers are valid and untouched by others during the call.
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
        let outcome = unsafe {
            h.with_slices(None, |e, p, g, c| {
                e.step_with_sum_squares_mixed(p, g, c, sum_squares)
            })?
        };
        Ok(outcome_status(outcome))
    })
}

/// The caller's array `partials` of `n` doubles as an output of `want` values: refused unless
/// non-null (or `n` is 0), aligned, of `want` values (`what` names the count) and disjoint
/// from every registered buffer (writing it would overwrite a gradient or parameter, and alias
/// the slices the call reads).
///
/// # Safety
/// `partials` is NULL or valid for writes of `n` doubles, owned by the caller for the call.
unsafe fn partials_out<'a>(
    h: &Inner,
    partials: *mut c_double,
    n: usize,
    want: usize,
    what: &str,
) -> Result<&'a mut [f64], Error> {
    if partials.is_null() && n > 0 {
        return Err(Error::NullPointer { name: "partials" });
    }
    check_f64_aligned("partials", partials)?;
    if n != want {
        return Err(Error::LengthMismatch {
            what: what.to_string(),
            expected: want,
            got: n,
        });
    }
    h.check_output_disjoint("partials", partials as usize, n, std::mem::size_of::<f64>())?;
    // SAFETY: non-null unless `n` is 0, aligned (checked), `n` (a block count, whose byte size
    // fits isize) writable doubles owned by the caller (this function's contract), disjoint
    // from every registered buffer (checked above).
    Ok(unsafe { slice_mut(partials, n) })
}

/// Sharded training with LAMB, LARS or NovoGrad (the rules with per-buffer norms), phase two of
/// three: after the global sum of squares `sum_squares` (phase one, as for
/// `flatopt_optimizer_step_with_sum_squares`), the pass before the update over the registered
/// buffers with the coming update's scalars, writing two sums per sum-of-squares block of each
/// buffer into `partials` (`n` = 2 * `flatopt_optimizer_sum_squares_block_count`: the sum of
/// squares of the vector whose norm the rule needs, then the parameters'). Reads the
/// parameters, gradients and state; writes nothing else. Exchange the partials; for each
/// buffer, add the even values and the odd values of all blocks of the whole buffer it is a
/// shard of, each in global block order from 0.0, and pass the two totals per buffer to
/// `flatopt_optimizer_step_with_norms`. Refused for the other rules. With a non-finite
/// `sum_squares` (the update will skip, unless the policy propagates) the partials are 0.
///
/// # Safety
/// `opt` is NULL (refused) or a live handle from `flatopt_optimizer_new`.
/// `partials` is NULL (refused unless `n` is 0) or valid for writes of `n` doubles; the
/// registered buffers are valid during the call.
#[no_mangle]
pub unsafe extern "C" fn flatopt_optimizer_norm_partials(
    opt: *mut flatopt_optimizer,
    sum_squares: c_double,
    partials: *mut c_double,
    n: usize,
) -> flatopt_status {
    guard(|| {
        // SAFETY: see `handle`.
        let mut h = unsafe { handle(opt)? };
        check_no_pending(&h)?;
        let want = h.engine.norm_partial_count();
        let what = "n (2 * flatopt_optimizer_sum_squares_block_count)";
        // SAFETY: `partials` as this function's `# Safety` promises.
        let out = unsafe { partials_out(&h, partials, n, want, what)? };
        // SAFETY: registered host pointers, valid during the call (C contract).
        unsafe {
            h.with_slices(None, |e, p, g, _| {
                e.norm_partials_with_sum_squares(p, g, sum_squares, out)
            })?
        };
        Ok(FLATOPT_OK)
    })
}

/// Sharded training with LAMB, LARS or NovoGrad, phase three: the update of
/// `flatopt_optimizer_step_with_sum_squares` with each registered buffer's norms given:
/// `norms` holds two values per registered buffer (`n` = 2 * `flatopt_optimizer_num_params`),
/// the totals over the whole buffer of the two sums per block of
/// `flatopt_optimizer_norm_partials`, each finite and >= 0. Shards on block boundaries with
/// totals added in global block order update bit for bit as one process.
///
/// # Safety
/// `opt` is NULL (refused) or a live handle from `flatopt_optimizer_new`.
/// `norms` is NULL (refused unless `n` is 0) or valid for reads of `n` doubles; the registered
/// buffers are valid and untouched by others during the call.
#[no_mangle]
pub unsafe extern "C" fn flatopt_optimizer_step_with_norms(
    opt: *mut flatopt_optimizer,
    sum_squares: c_double,
    norms: *const c_double,
    n: usize,
) -> flatopt_status {
    guard(|| {
        // SAFETY: see `handle`.
        let mut h = unsafe { handle(opt)? };
        check_no_pending(&h)?;
        if norms.is_null() && n > 0 {
            return Err(Error::NullPointer { name: "norms" });
        }
        check_f64_aligned("norms", norms)?;
        // Read during the update: it must not be (part of) a registered buffer.
        h.check_output_disjoint("norms", norms as usize, n, std::mem::size_of::<f64>())?;
        // SAFETY: non-null unless `n` is 0, aligned (checked), `n` readable doubles (C
        // contract), disjoint from every registered buffer (checked), so no write of the update
        // aliases it.
        let given = unsafe { slice(norms, n) };
        // SAFETY: registered host pointers, valid during the call (C contract).
        let outcome = unsafe {
            h.with_slices(None, |e, p, g, c| {
                e.step_with_sum_squares_and_norms(p, g, c, sum_squares, given)
            })?
        };
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
///
/// # Safety
/// `opt` is NULL (refused) or a live handle from `flatopt_optimizer_new`.
/// The registered buffers stay valid until `flatopt_optimizer_end_step`.
#[no_mangle]
pub unsafe extern "C" fn flatopt_optimizer_begin_step(
    opt: *mut flatopt_optimizer,
) -> flatopt_status {
    // SAFETY: this function's contract is `begin`'s.
    guard(|| unsafe { begin(opt, None, std::ptr::null(), 0) })
}

/// `flatopt_optimizer_begin_step`, `_begin_step_scaled` and `_begin_step_mixed`: begins a
/// split step whose gradients are divided by `grad_scale` (`None`: the dynamic loss scaler's
/// scale if one is set, else 1) and keeps the state pointers the ranges need, and the
/// gradients passed for this step (`grads` NULL with `n_grads` 0: the registered ones).
///
/// # Safety
/// `opt` is NULL (refused) or a live handle from `flatopt_optimizer_new`; `grads` is NULL or
/// holds `n_grads` pointers during the call; the registered buffers and the given gradients
/// (each as many elements of its buffer's format as the buffer) stay valid until
/// `flatopt_optimizer_end_step`.
pub(super) unsafe fn begin(
    opt: *mut flatopt_optimizer,
    grad_scale: Option<f32>,
    grads: *const *const c_void,
    n_grads: usize,
) -> Result<flatopt_status, Error> {
    // SAFETY: see `handle`.
    let mut h = unsafe { handle(opt)? };
    check_no_pending(&h)?;
    // SAFETY: `grads` is NULL or holds `n_grads` pointers (this function's contract).
    let given = unsafe { super::mixed::given_grads(h.bufs.len(), grads, n_grads)? };
    // SAFETY: registered host pointers and the given gradients, valid during the call (C
    // contract); `with_slices` checks the given ones as `flatopt_optimizer_step_mixed` does.
    let begun = unsafe { h.with_slices(given, |e, _, g, _| e.begin_step_scaled(g, grad_scale))? };
    match begun {
        Err(skipped) => Ok(outcome_status(skipped)),
        Ok(step) => {
            let inner: &mut Inner = &mut h;
            inner.raw.clear(); // capacity reserved at registration: no allocation
            let states = inner.engine.states_mut().zip(&inner.bufs);
            inner
                .raw
                .extend(states.map(|(s, _)| s.into_parts().map(RawHeld::of)));
            inner.step_grads.clear(); // as `raw`
            inner.step_grads.extend(given.unwrap_or(&[]));
            inner.pending = Some(step);
            Ok(FLATOPT_OK)
        }
    }
}

/// Applies the begun step to elements `[begin, end)` of the concatenation of the registered
/// buffers. Concurrent calls on disjoint ranges of one handle are allowed (and are the point);
/// the result does not depend on how the range is split. With int8 state (`state_dtype`) a
/// range must start and end on a multiple of 256 elements of each buffer it touches (or at the
/// buffer's end): one that cuts an 8-bit block is refused (`FLATOPT_ERR_INVALID_ARGUMENT`)
/// before anything is written or counted as applied.
///
/// # Safety
/// `opt` is NULL (refused) or a live handle from `flatopt_optimizer_new`.
/// Concurrent calls on one handle use disjoint ranges.
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
        // With 8-bit state, a range that cuts a block is refused before anything is claimed
        // or written (blocks are requantized whole).
        check_q8_blocks(&h, begin, end)?;
        // Checks the range and marks it applied, or refuses an overlap with a range already
        // applied in this step before anything is written.
        h.engine.claim_range(&step, begin, end)?;
        let mut offset = 0;
        for (i, (b, raw)) in h.bufs.iter().zip(&h.raw).enumerate() {
            let (lo, hi) = (begin.max(offset), end.min(offset + b.len));
            // The gradients given to begin_step_mixed for this step, else the registered ones.
            let grad = h.step_grads.get(i).copied().unwrap_or(b.grad);
            if lo < hi && !raw.iter().all(RawHeld::is_f32) {
                let (a, n) = (lo - offset, hi - lo);
                let [m, v, v_max, slow] = *raw;
                // SAFETY: as below for the host buffers; the state buffers are the optimizer's
                // own (pointers taken at begin_step, valid until end_step: registration and
                // reset are refused meanwhile) of `b.len >= a + n` elements, and
                // `check_q8_blocks` made an 8-bit range start and end on its blocks, so
                // concurrent disjoint ranges never share a block's scale.
                let buffers = unsafe {
                    HeldBuffers {
                        param: sub_slice_mut(b.param, a, n),
                        grad: grad_slice(grad, b.grad_type, a, n),
                        m: m.range(a, n),
                        v: v.range(a, n),
                        v_max: v_max.range(a, n),
                        slow: slow.range(a, n),
                        copy: copy_slice(b, a, n),
                        index: step.index_of(lo),
                    }
                };
                #[cfg(any(test, feature = "fault-injection"))]
                super::fault::panic_if_armed();
                let plan = h.engine.buffer_plan(i);
                let _mode = simd::FpMode::enter();
                kernels::apply_held_unchecked(
                    step.tier(),
                    plan,
                    step.unscale(),
                    step.rounding(),
                    buffers,
                );
            } else if lo < hi {
                let (a, n) = (lo - offset, hi - lo);
                let [m, v, v_max, slow] = raw.map(|r| match r {
                    RawHeld::F32(p) => p,
                    _ => std::ptr::null_mut(),
                });
                // SAFETY: `[a, a+n)` lies inside buffer `b` (clamped above). Param, grad (the
                // registered one, or the one given to begin_step_mixed), copy and the
                // optimizer-owned state (NULL when the rule does not use it) were validated at
                // registration / begin_step and stay valid until end_step;
                // disjoint ranges from concurrent callers touch disjoint elements (the
                // documented contract), so these slices never alias.
                let buffers = unsafe {
                    MixedBuffers {
                        param: sub_slice_mut(b.param, a, n),
                        grad: grad_slice(grad, b.grad_type, a, n),
                        m: sub_slice_mut(m, a, n),
                        v: sub_slice_mut(v, a, n),
                        v_max: sub_slice_mut(v_max, a, n),
                        slow: sub_slice_mut(slow, a, n),
                        copy: copy_slice(b, a, n),
                    }
                };
                #[cfg(any(test, feature = "fault-injection"))]
                super::fault::panic_if_armed();
                // Each buffer with the plan of its parameter group and the loss scale (fixed
                // by begin_step).
                let (plan, scale) = (h.engine.buffer_plan(i), step.unscale().scale());
                kernels::apply_mixed(step.tier(), plan, scale, buffers)?;
            }
            offset += b.len;
        }
        Ok(FLATOPT_OK)
    })
}

/// Refuses a range `[begin, end)` of the concatenation that starts or ends inside an 8-bit
/// block of a buffer whose state is held in 8 bits (blocks of [`Q8_BLOCK`] elements from each
/// buffer's start; a buffer's end also ends its last block), naming the range, the buffer and
/// the element.
fn check_q8_blocks(h: &Inner, begin: usize, end: usize) -> Result<(), Error> {
    let mut offset = 0;
    for (i, (b, raw)) in h.bufs.iter().zip(&h.raw).enumerate() {
        let (lo, hi) = (begin.max(offset), end.min(offset + b.len));
        if lo < hi && raw.iter().any(|r| matches!(r, RawHeld::Q8 { .. })) {
            let cut = [lo - offset, hi - offset]
                .into_iter()
                .find(|&e| !e.is_multiple_of(Q8_BLOCK) && e != b.len);
            if let Some(e) = cut {
                return Err(Error::invalid(
                    "range",
                    format!("[{begin}, {end}), which cuts buffer {i} at its element {e}"),
                    "must start and end on a multiple of 256 elements (Q8_BLOCK) of each buffer \
                     (or at its end) with int8 state: 8-bit blocks are requantized whole",
                ));
            }
        }
        offset += b.len;
    }
    Ok(())
}

/// Last phase of a split step: counts the update and advances the schedule.
///
/// # Safety
/// `opt` is NULL (refused) or a live handle from `flatopt_optimizer_new`.
#[no_mangle]
pub unsafe extern "C" fn flatopt_optimizer_end_step(opt: *mut flatopt_optimizer) -> flatopt_status {
    guard(|| {
        // SAFETY: see `handle`.
        let mut h = unsafe { handle(opt)? };
        let step = h.pending.ok_or(Error::InvalidState(
            "flatopt_optimizer_end_step without flatopt_optimizer_begin_step",
        ))?;
        h.engine.end_step(step)?;
        h.pending = None;
        h.raw.clear();
        h.step_grads.clear();
        Ok(FLATOPT_OK)
    })
}

/// Resets the optimizer to its state right after registration: moments zeroed, counters and
/// schedule reset, slow weights copied from the current parameter values. Registration is
/// allowed again afterwards.
///
/// # Safety
/// `opt` is NULL (refused) or a live handle from `flatopt_optimizer_new`.
/// The registered parameter buffers are valid during the call.
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
        // SAFETY: registered param and copy pointers, checked at registration, valid and ours
        // during this call (C contract).
        unsafe { h.write_copies() };
        Ok(FLATOPT_OK)
    })
}

/// Number of applied updates.
///
/// # Safety
/// `opt` is NULL (refused) or a live handle from `flatopt_optimizer_new`.
/// `out` is NULL (refused) or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn flatopt_optimizer_step_count(
    opt: *const flatopt_optimizer,
    out: *mut u64,
) -> flatopt_status {
    // SAFETY: `opt` and `out` are passed on as received, and this function's `# Safety`
    // promises what `query` requires of them: NULL or a live handle; NULL or one writable value.
    unsafe { query(opt, out, |h| h.engine.step_count()) }
}

/// Number of updates skipped because of non-finite gradients.
///
/// # Safety
/// `opt` is NULL (refused) or a live handle from `flatopt_optimizer_new`.
/// `out` is NULL (refused) or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn flatopt_optimizer_skipped_count(
    opt: *const flatopt_optimizer,
    out: *mut u64,
) -> flatopt_status {
    // SAFETY: `opt` and `out` are passed on as received, and this function's `# Safety`
    // promises what `query` requires of them: NULL or a live handle; NULL or one writable value.
    unsafe { query(opt, out, |h| h.engine.skipped_count()) }
}

/// The learning rate the next update will use.
///
/// # Safety
/// `opt` is NULL (refused) or a live handle from `flatopt_optimizer_new`.
/// `out` is NULL (refused) or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn flatopt_optimizer_current_lr(
    opt: *const flatopt_optimizer,
    out: *mut c_float,
) -> flatopt_status {
    // SAFETY: `opt` and `out` are passed on as received, and this function's `# Safety`
    // promises what `query` requires of them: NULL or a live handle; NULL or one writable value.
    unsafe { query(opt, out, |h| h.engine.current_lr()) }
}

/// The SIMD tier (a `flatopt_simd_tier` value) this optimizer runs on.
///
/// # Safety
/// `opt` is NULL (refused) or a live handle from `flatopt_optimizer_new`.
/// `out` is NULL (refused) or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn flatopt_optimizer_simd_tier(
    opt: *const flatopt_optimizer,
    out: *mut u32,
) -> flatopt_status {
    // SAFETY: `opt` and `out` are passed on as received, and this function's `# Safety`
    // promises what `query` requires of them: NULL or a live handle; NULL or one writable value.
    unsafe { query(opt, out, |h| h.engine.tier() as u32) }
}

/// The number of threads used by `flatopt_optimizer_step`.
///
/// # Safety
/// `opt` is NULL (refused) or a live handle from `flatopt_optimizer_new`.
/// `out` is NULL (refused) or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn flatopt_optimizer_num_threads(
    opt: *const flatopt_optimizer,
    out: *mut u32,
) -> flatopt_status {
    // SAFETY: `opt` and `out` are passed on as received, and this function's `# Safety`
    // promises what `query` requires of them: NULL or a live handle; NULL or one writable value.
    unsafe { query(opt, out, |h| h.engine.num_threads() as u32) }
}

/// The number of registered buffers.
///
/// # Safety
/// `opt` is NULL (refused) or a live handle from `flatopt_optimizer_new`.
/// `out` is NULL (refused) or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn flatopt_optimizer_num_params(
    opt: *const flatopt_optimizer,
    out: *mut usize,
) -> flatopt_status {
    // SAFETY: `opt` and `out` are passed on as received, and this function's `# Safety`
    // promises what `query` requires of them: NULL or a live handle; NULL or one writable value.
    unsafe { query(opt, out, |h| h.bufs.len()) }
}

/// The total number of registered elements (the range of `flatopt_optimizer_step_range`).
///
/// # Safety
/// `opt` is NULL (refused) or a live handle from `flatopt_optimizer_new`.
/// `out` is NULL (refused) or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn flatopt_optimizer_total_len(
    opt: *const flatopt_optimizer,
    out: *mut usize,
) -> flatopt_status {
    // SAFETY: `opt` and `out` are passed on as received, and this function's `# Safety`
    // promises what `query` requires of them: NULL or a live handle; NULL or one writable value.
    unsafe { query(opt, out, |h| h.bufs.iter().map(|b| b.len).sum()) }
}

/// Bytes of optimizer state the handle holds for its registered buffers: every state buffer
/// as it is held (`state_dtype`: 4, 2 or `1 + 4/256` bytes per element and buffer, 8-bit
/// scales included; `slow_dtype` for the Lookahead slow weights), without the slack that places
/// f32 state within a page. 0 before registration.
///
/// # Safety
/// `opt` is NULL (refused) or a live handle from `flatopt_optimizer_new`.
/// `out` is NULL (refused) or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn flatopt_optimizer_state_bytes(
    opt: *const flatopt_optimizer,
    out: *mut u64,
) -> flatopt_status {
    // SAFETY: `opt` and `out` are passed on as received, and this function's `# Safety`
    // promises what `query` requires of them: NULL or a live handle; NULL or one writable value.
    unsafe { query(opt, out, |h| h.engine.state_bytes() as u64) }
}

/// Sets the thread count (1: the caller's thread). Results do not depend on it.
///
/// # Safety
/// `opt` is NULL (refused) or a live handle from `flatopt_optimizer_new`.
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
///
/// # Safety
/// `opt` is NULL (refused) or a live handle from `flatopt_optimizer_new`.
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
    if h.engine.config().slow_dtype != StateDtype::F32 {
        return Err(Error::InvalidState(
            "the slow weights are held in bfloat16 (slow_dtype): copy them as f32 with \
             flatopt_optimizer_copy_slow_weights",
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

/// Refuses a caller buffer that lies in memory the optimizer owns: its slow weights, the only
/// state whose address a caller can learn (`flatopt_optimizer_slow_weights`, read only).
/// Writing there would change the state behind the optimizer's back.
pub(crate) fn check_not_owned(
    h: &Inner,
    name: &'static str,
    ptr: *const u8,
    bytes: usize,
) -> Result<(), Error> {
    let (start, end) = (ptr as usize, (ptr as usize).saturating_add(bytes));
    for i in 0..h.engine.buffer_lens().len() {
        if let Some(s) = h.engine.slow_weights(i) {
            let (a, b) = (s.as_ptr() as usize, s.as_ptr() as usize + 4 * s.len());
            if start < b && a < end {
                return Err(Error::Overlap {
                    what: format!("{name} and the optimizer's slow weights of buffer {i} share memory (they are read only)"),
                });
            }
        }
    }
    Ok(())
}

/// Borrows the Lookahead slow weights of buffer `index`: `*out` points to `*out_len` floats
/// owned by the optimizer, valid until the next step, reset or free. Read only.
///
/// # Safety
/// `opt` is NULL (refused) or a live handle from `flatopt_optimizer_new`.
/// `out` and `out_len` are NULL (refused) or valid for one write each.
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
        check_not_owned(&h, "out", out.cast(), std::mem::size_of::<*const c_float>())?;
        check_not_owned(&h, "out_len", out_len.cast(), std::mem::size_of::<usize>())?;
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
///
/// # Safety
/// `opt` is NULL (refused) or a live handle from `flatopt_optimizer_new`.
/// `dst` is NULL (refused unless `len` is 0) or valid for writes of `len` floats.
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
        if h.engine.config().lookahead.is_some() && h.engine.config().slow_dtype != StateDtype::F32
        {
            // Held in bf16: decoded into the caller's buffer (the engine checks index and
            // length, writing nothing on an error).
            check_buf("dst", dst, len)?;
            // SAFETY: checked pointer, `len` writable floats owned by the caller (C contract);
            // the optimizer's bf16 slow weights are not f32 memory a caller can know, so this
            // slice aliases nothing the call holds.
            let out = unsafe { slice_mut(dst, len) };
            h.engine.slow_weights_f32(index, out)?;
            return Ok(FLATOPT_OK);
        }
        let s = slow_of(&h, index)?;
        check_buf("dst", dst, len)?;
        if len != s.len() {
            return Err(Error::LengthMismatch {
                what: format!("dst for slow weights of buffer {index}"),
                expected: s.len(),
                got: len,
            });
        }
        check_not_owned(&h, "dst", dst.cast(), 4 * len)?;
        // SAFETY: checked pointer, `len` writable floats owned by the caller (C contract),
        // outside every slow-weight buffer of the optimizer (checked just above), so it
        // aliases no slice this call holds.
        unsafe { slice_mut(dst, len) }.copy_from_slice(s);
        Ok(FLATOPT_OK)
    })
}

/// Advances the learning-rate schedule by one (epoch style; meant for `schedule_manual`).
///
/// # Safety
/// `opt` is NULL (refused) or a live handle from `flatopt_optimizer_new`.
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

/// Sets the learning-rate schedule's counter to `epoch`: the schedule is then exactly (bit for
/// bit) as after `epoch` calls of `flatopt_optimizer_schedule_step` from its start
/// (registration or reset), whatever it was before, in time independent of `epoch`. Every
/// `uint64_t` is such a position (the counter of `flatopt_optimizer_schedule_step` stops at
/// `UINT64_MAX`), so no value overflows. Every counter-driven kind (all but ReduceOnPlateau)
/// is a closed form of the counter; warm restarts' cycle position and length follow from it
/// too. Meant for `schedule_manual` (restoring an epoch, PyTorch `last_epoch`); on a
/// per-update schedule it sets the counter that updates advance. The update counters do not
/// change.
///
/// Errors, nothing changed: `FLATOPT_ERR_INVALID_STATE` for ReduceOnPlateau, whose state
/// follows the metrics fed (`flatopt_optimizer_schedule_step_metric`), not a count.
///
/// # Safety
/// `opt` is NULL (refused) or a live handle from `flatopt_optimizer_new`.
#[no_mangle]
pub unsafe extern "C" fn flatopt_optimizer_schedule_set_epoch(
    opt: *mut flatopt_optimizer,
    epoch: u64,
) -> flatopt_status {
    guard(|| {
        // SAFETY: `opt` is NULL or a live handle (this function's contract).
        let mut h = unsafe { handle(opt)? };
        h.engine.set_schedule_epoch(epoch)?;
        Ok(FLATOPT_OK)
    })
}

/// Feeds a metric to a ReduceOnPlateau schedule.
///
/// # Safety
/// `opt` is NULL (refused) or a live handle from `flatopt_optimizer_new`.
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
