//! x86-64 state shared by every x86 tier: the MXCSR register, which holds the SSE/AVX
//! floating-point mode of the calling thread (flush-to-zero, denormals-are-zero, rounding,
//! exception masks) and its sticky exception flags. Used by [`super::fpmode`] only.

use std::arch::asm;

/// Bits 0-5: the sticky exception flags (invalid, denormal, divide-by-zero, overflow,
/// underflow, precision).
pub(super) const FLAGS: u32 = 0x3f;
/// Bits 6-15: denormals-are-zero (6), the six exception masks (7-12), rounding control (13-14)
/// and flush-to-zero (15). Bits 16-31 are reserved and always zero.
pub(super) const CONTROL: u32 = 0xffc0;
/// The IEEE-754 default mode, the one Rust code is compiled for: every exception masked,
/// round to nearest even, no flush-to-zero, no denormals-are-zero.
pub(super) const IEEE: u32 = 0x1f80;

/// The calling thread's MXCSR.
#[inline]
pub(super) fn read() -> u32 {
    let mut csr: u32 = 0;
    // SAFETY: `stmxcsr` stores the 4-byte MXCSR at the address given, here that of `csr`, a
    // live, 4-byte aligned, writable local; it touches no other memory, no stack and no flags,
    // and SSE is part of the x86-64 baseline, so the instruction exists on every x86-64 CPU.
    unsafe {
        asm!("stmxcsr [{}]", in(reg) &mut csr, options(nostack, preserves_flags));
    }
    csr
}

/// Sets the calling thread's MXCSR to `csr`, which must come from [`read`] with only bits of
/// [`CONTROL`] and [`FLAGS`] changed (a reserved bit set would fault).
#[inline]
pub(super) fn write(csr: u32) {
    debug_assert_eq!(csr & !(CONTROL | FLAGS), 0, "reserved MXCSR bits");
    let csr = csr & (CONTROL | FLAGS);
    // SAFETY: `ldmxcsr` reads 4 bytes at the address given, here that of `csr`, a live,
    // aligned local; it writes no memory, no stack and no flags; the reserved bits 16-31 were
    // cleared just above, so it cannot fault. Changing the mode is what the caller wants: the
    // only values written are the IEEE default (the mode Rust code assumes) and, on the way out
    // of an entry point, the host's own mode, right before control returns to the host.
    unsafe {
        asm!("ldmxcsr [{}]", in(reg) &csr, options(nostack, preserves_flags, readonly));
    }
}
