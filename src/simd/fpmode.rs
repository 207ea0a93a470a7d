//! The floating-point mode flatopt computes in, set for the duration of every entry point.
//!
//! A host may have changed its thread's floating-point mode: PyTorch's
//! `torch.set_flush_denormal(True)`, game engines and audio code set flush-to-zero (FTZ: a
//! subnormal result becomes zero) and denormals-are-zero (DAZ: a subnormal input is read as
//! zero). Left alone, results would depend on that mode and, since a private pool's threads
//! have their own, on the thread count. flatopt therefore always computes in the IEEE-754
//! default mode: round to nearest even, subnormals kept, every exception masked
//! (non-trapping). [`FpMode::enter`] sets it on the calling thread and restores the caller's
//! mode when the guard drops (on return, on an error return and while unwinding); the pool's
//! worker threads are set to it once when they start.
//!
//! On x86-64 the mode lives in the MXCSR register (see `simd::x86`); the guard writes it only
//! when the caller's mode differs, so in the default mode it costs one read. Status flags raised
//! during the call stay raised, as after any floating-point code. On other architectures (and
//! under Miri, which has no MXCSR) the guard does nothing: Rust code there runs in the default
//! mode unless a host changed it, and changing it is not supported yet.

/// A guard that holds the calling thread in flatopt's floating-point mode (the IEEE-754
/// default) until it drops, then restores the mode the thread had. See the module docs.
#[must_use = "the mode is restored when the guard drops"]
#[derive(Debug)]
pub struct FpMode {
    /// The caller's MXCSR if it had to be changed, `None` if it already was the default.
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    saved: Option<u32>,
}

impl FpMode {
    /// Sets the IEEE-754 default mode on the calling thread until the guard drops.
    #[inline]
    pub fn enter() -> FpMode {
        #[cfg(all(target_arch = "x86_64", not(miri)))]
        {
            use super::x86;
            let csr = x86::read();
            if csr & x86::CONTROL == x86::IEEE {
                return FpMode { saved: None };
            }
            x86::write(csr & x86::FLAGS | x86::IEEE);
            FpMode { saved: Some(csr) }
        }
        #[cfg(not(all(target_arch = "x86_64", not(miri))))]
        FpMode {}
    }

    /// Sets the IEEE-754 default mode on the calling thread for good (the pool's worker
    /// threads, which run nothing but flatopt's work).
    pub(crate) fn set_for_thread() {
        std::mem::forget(FpMode::enter());
    }
}

impl Drop for FpMode {
    #[inline]
    fn drop(&mut self) {
        #[cfg(all(target_arch = "x86_64", not(miri)))]
        if let Some(saved) = self.saved {
            use super::x86;
            // The caller's control bits; its flags and those raised meanwhile.
            x86::write(saved | x86::read() & x86::FLAGS);
        }
    }
}
