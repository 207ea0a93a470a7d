//! The C ABI from the harness: an owning handle and the thread's last message.

use flatopt::ffi::flatopt_status::{self, *};
use flatopt::ffi::*;

use super::generate::CConfig;

pub fn last_message() -> String {
    // SAFETY: the library returns a NUL-terminated string in a thread-local buffer, valid until
    // the next flatopt call on this thread; it is copied at once.
    unsafe { std::ffi::CStr::from_ptr(flatopt_last_error_message()) }
        .to_string_lossy()
        .into_owned()
}

/// Owns a C handle; frees it on drop.
pub struct Handle(pub *mut flatopt_optimizer);

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: a live handle from flatopt_optimizer_new, freed once.
        unsafe { flatopt_optimizer_free(self.0) };
    }
}

impl Handle {
    pub fn new(c: &mut CConfig) -> Handle {
        let mut h = std::ptr::null_mut();
        // SAFETY: a valid config (its pointers into `c` live for the call) and out-pointer.
        let st = unsafe { flatopt_optimizer_new(c.as_ptr(), &mut h) };
        assert_eq!(st, FLATOPT_OK, "{}", last_message());
        Handle(h)
    }
    /// Registers every buffer of `params` (gradients passed per step).
    pub fn register(&self, params: &mut [Vec<f32>]) {
        for p in params.iter_mut() {
            // SAFETY: live handle, a live buffer that outlives the handle's use (the caller
            // keeps `params` alive and does not move its heap blocks), no gradient.
            let st = unsafe {
                flatopt_optimizer_add_param(self.0, p.as_mut_ptr(), std::ptr::null(), p.len())
            };
            assert_eq!(st, FLATOPT_OK, "{}", last_message());
        }
    }
    /// Adds the groups `opts` (their learning rate and weight decay; no base) and registers
    /// buffer `i` into group `group_of(i)`.
    pub fn register_in_groups(
        &self,
        params: &mut [Vec<f32>],
        opts: &[flatopt::engine::GroupOptions],
        group_of: fn(usize) -> usize,
    ) {
        for o in opts {
            assert!(o.base.is_none(), "the harness passes no base rule");
            let c = flatopt_group_options {
                struct_size: std::mem::size_of::<flatopt_group_options>() as u32,
                reserved: 0,
                lr: o.lr.unwrap_or(f64::NAN),
                weight_decay: o.weight_decay.unwrap_or(f64::NAN),
                base: std::ptr::null(),
            };
            let mut g = 0usize;
            // SAFETY: live handle, a valid options struct, a writable out.
            let st = unsafe { flatopt_optimizer_add_group(self.0, &c, &mut g) };
            assert_eq!(st, FLATOPT_OK, "{}", last_message());
        }
        for (i, p) in params.iter_mut().enumerate() {
            // SAFETY: as `register`.
            let st = unsafe {
                flatopt_optimizer_add_param_to_group(
                    self.0,
                    group_of(i),
                    p.as_mut_ptr(),
                    std::ptr::null(),
                    p.len(),
                )
            };
            assert_eq!(st, FLATOPT_OK, "{}", last_message());
        }
    }

    pub fn save(&self) -> Vec<u8> {
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
    pub fn load(&self, bytes: &[u8]) -> flatopt_status {
        // A non-null pointer even for an empty input (NULL is refused before the length).
        let ptr = if bytes.is_empty() {
            std::ptr::NonNull::<u8>::dangling().as_ptr().cast_const()
        } else {
            bytes.as_ptr()
        };
        // SAFETY: live handle; `ptr` holds `bytes.len()` readable bytes.
        unsafe { flatopt_optimizer_load(self.0, ptr, bytes.len()) }
    }
    pub fn step_with(&self, grads: &[Vec<f32>]) -> flatopt_status {
        let ptrs: Vec<*const f32> = grads.iter().map(|g| g.as_ptr()).collect();
        // SAFETY: one live gradient per registered buffer, of its length.
        unsafe { flatopt_optimizer_step_with_grads(self.0, ptrs.as_ptr(), ptrs.len()) }
    }
}
