//! The boundary every exported function goes through: status codes, the mapping of
//! [`Error`] to a status, the thread-local message of the last failure, the panic guard, and
//! the version functions.

use std::cell::RefCell;
use std::ffi::c_char;
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::error::Error;

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
    /// An earlier call on this handle failed with `FLATOPT_ERR_INTERNAL` (a caught panic) and
    /// may have left it half-updated: every later call on it is refused with this status; only
    /// `flatopt_optimizer_free` works.
    FLATOPT_ERR_POISONED = 13,
}

use flatopt_status::*;

/// The status the C ABI returns for an error (public so that the fuzz harness and the tests
/// use this mapping instead of a copy).
pub fn status_of(e: &Error) -> flatopt_status {
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
        Error::Poisoned => FLATOPT_ERR_POISONED,
    }
}

const MESSAGE_CAPACITY: usize = 1024;

thread_local! {
    /// NUL-terminated message of the last failed or skipped call on this thread. A fixed buffer:
    /// recording a message never allocates.
    static LAST_ERROR: RefCell<[u8; MESSAGE_CAPACITY]> = const { RefCell::new([0; MESSAGE_CAPACITY]) };
}

/// Records a message (truncated to the buffer, always NUL-terminated).
pub(crate) fn set_message(args: std::fmt::Arguments<'_>) {
    LAST_ERROR.with(|buf| {
        let mut buf = buf.borrow_mut();
        let mut cursor = std::io::Cursor::new(&mut buf[..MESSAGE_CAPACITY - 1]);
        let _ = cursor.write_fmt(args); // a full buffer truncates the message, by design
        let end = cursor.position() as usize;
        buf[end] = 0;
    });
}

/// Runs `f`, turning its error or a panic into a status and a recorded message.
pub(crate) fn guard(f: impl FnOnce() -> Result<flatopt_status, Error>) -> flatopt_status {
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
pub(crate) fn guard_value<T>(fallback: T, f: impl FnOnce() -> T) -> T {
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
        13 => b"handle poisoned by an earlier internal error\0",
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

/// The library version as a NUL-terminated string, e.g. "0.2.0". Compare it with
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
