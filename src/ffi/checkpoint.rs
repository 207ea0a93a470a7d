//! Checkpoints of an optimizer handle, in memory and in files (format:
//! docs/checkpoint-format.md).

use std::ffi::c_char;

use crate::error::Error;

use super::boundary::{flatopt_status, flatopt_status::*, guard};
use super::handle::{check_no_pending, flatopt_optimizer, handle, handle_ref, query};
use super::ptr::{path_from_c, slice, slice_mut, write_out};

/// The size in bytes of the checkpoint `flatopt_optimizer_save` would write now.
///
/// # Safety
/// `opt` is NULL (refused) or a live handle from `flatopt_optimizer_new`.
/// `out` is NULL (refused) or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn flatopt_optimizer_checkpoint_size(
    opt: *const flatopt_optimizer,
    out: *mut usize,
) -> flatopt_status {
    // SAFETY: `opt` and `out` are passed on as received, and this function's `# Safety`
    // promises what `query` requires of them: NULL or a live handle; NULL or one writable value.
    unsafe { query(opt, out, |h| h.engine.checkpoint_size()) }
}

/// Writes the complete optimizer state (configuration, counters, schedule state, moments,
/// AMSGrad maximum, slow weights; not the parameters, which the caller owns) into `buf` of
/// `cap` bytes and its length to `*written`. `FLATOPT_ERR_LENGTH_MISMATCH` if `cap` is smaller
/// than `flatopt_optimizer_checkpoint_size`.
///
/// # Safety
/// `opt` is NULL (refused) or a live handle from `flatopt_optimizer_new`.
/// `buf` is NULL (refused) or valid for writes of `cap` bytes; `written` is NULL
/// (refused) or valid for one write.
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
        super::optimizer::check_not_owned(&h, "buf", buf, cap)?;
        let bytes = h.engine.save();
        if cap < bytes.len() {
            return Err(Error::LengthMismatch {
                what: "buf capacity (see flatopt_optimizer_checkpoint_size)".to_string(),
                expected: bytes.len(),
                got: cap,
            });
        }
        // SAFETY: `buf` is non-null with `cap >= bytes.len()` writable bytes (C contract); a
        // byte array has no alignment, and it cannot overlap the freshly allocated `bytes`.
        unsafe { slice_mut(buf, bytes.len()) }.copy_from_slice(&bytes);
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
///
/// # Safety
/// `opt` is NULL (refused) or a live handle from `flatopt_optimizer_new`.
/// `buf` is NULL (refused) or holds `len` readable bytes.
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
        // SAFETY: non-null, a byte count that fits isize (checked), `len` readable bytes owned
        // by the caller (C contract).
        let bytes = unsafe { slice(buf, len) };
        h.engine.load(bytes)?;
        // SAFETY: registered param and copy pointers, checked at registration, valid and ours
        // during this call (C contract); `bytes` is not used any more.
        unsafe { h.write_copies() };
        Ok(FLATOPT_OK)
    })
}

/// Checks a checkpoint from `buf` (`len` bytes) exactly as `flatopt_optimizer_load` does,
/// without loading it, and writes its applied-update count, skipped-update count and the
/// learning rate its next update would use to the non-NULL ones of `step_count`,
/// `skipped_count` and `current_lr`. A checkpoint is one consistent snapshot: read a saved
/// checkpoint's counters here rather than with `flatopt_optimizer_step_count` and friends, whose
/// values other threads' updates may have moved between the calls.
///
/// # Safety
/// `opt` is NULL (refused) or a live handle from `flatopt_optimizer_new`.
/// `buf` is NULL (refused) or holds `len` readable bytes. `step_count`, `skipped_count` and
/// `current_lr` are each NULL (not written) or valid for a write of their type.
#[no_mangle]
pub unsafe extern "C" fn flatopt_optimizer_checkpoint_info(
    opt: *const flatopt_optimizer,
    buf: *const u8,
    len: usize,
    step_count: *mut u64,
    skipped_count: *mut u64,
    current_lr: *mut f32,
) -> flatopt_status {
    guard(|| {
        // SAFETY: see `handle_ref`.
        let h = unsafe { handle_ref(opt)? };
        if buf.is_null() {
            return Err(Error::NullPointer { name: "buf" });
        }
        if len > isize::MAX as usize {
            return Err(Error::invalid("len", len, "length is too large"));
        }
        // SAFETY: non-null, a byte count that fits isize (checked), `len` readable bytes owned
        // by the caller (C contract).
        let bytes = unsafe { slice(buf, len) };
        let info = h.engine.checkpoint_info(bytes)?;
        if !step_count.is_null() {
            // SAFETY: non-null, writable (C contract).
            unsafe { write_out("step_count", step_count, info.step_count)? };
        }
        if !skipped_count.is_null() {
            // SAFETY: non-null, writable (C contract).
            unsafe { write_out("skipped_count", skipped_count, info.skipped_count)? };
        }
        if !current_lr.is_null() {
            // SAFETY: non-null, writable (C contract).
            unsafe { write_out("current_lr", current_lr, info.current_lr)? };
        }
        Ok(FLATOPT_OK)
    })
}

/// Saves a checkpoint to the file `path` atomically (temporary file in the same directory,
/// fsync, rename, fsync of the directory): after a crash the file holds the previous
/// checkpoint or the new one, never a mix.
///
/// # Safety
/// `opt` is NULL (refused) or a live handle from `flatopt_optimizer_new`.
/// `path` is NULL (refused) or a NUL-terminated string.
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
///
/// # Safety
/// `opt` is NULL (refused) or a live handle from `flatopt_optimizer_new`.
/// `path` is NULL (refused) or a NUL-terminated string.
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
        // SAFETY: registered param and copy pointers, checked at registration, valid and ours
        // during this call (C contract).
        unsafe { h.write_copies() };
        Ok(FLATOPT_OK)
    })
}
