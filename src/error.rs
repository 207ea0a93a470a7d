//! The one error type of the crate. Every variant names what was wrong and the value at fault,
//! so that a message reaching a C or Python user is enough to fix the call.

use std::fmt;

/// Why a call was refused. A refused call has changed nothing.
#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// A hyperparameter or argument is outside its domain: `name` is the argument, `value` the
    /// value given (formatted), `expected` the rule it broke.
    InvalidArgument {
        /// The argument or field, e.g. `"alpha"`.
        name: &'static str,
        /// The value given, formatted.
        value: String,
        /// The rule it broke, e.g. `"must be in [0, 1]"`.
        expected: &'static str,
    },
    /// Two lengths that must agree do not: `what` names the buffer.
    LengthMismatch {
        /// The buffer or list, e.g. `"grad"`.
        what: String,
        /// The length it must have.
        expected: usize,
        /// The length it has.
        got: usize,
    },
    /// A gradient holds NaN or ±Inf and the policy is `Error`: the first one found, by buffer
    /// (registration order) and element index.
    NonFinite {
        /// The buffer, by registration order.
        buffer: usize,
        /// The element within the buffer.
        index: usize,
        /// The value found there (NaN, +Inf or -Inf).
        value: f32,
    },
    /// A call came in an order the optimizer does not allow (for example stepping before any
    /// buffer is registered).
    InvalidState(&'static str),
    /// A requested feature (a SIMD tier, ...) is not available in this build or on this CPU.
    Unsupported(String),
    /// A required pointer argument was NULL (C ABI): `name` is the argument.
    NullPointer {
        /// The argument.
        name: &'static str,
    },
    /// Reading or writing a file failed.
    Io(String),
    /// An object was used from two threads at once (C ABI handles).
    Busy(&'static str),
    /// A C ABI handle on which an earlier call panicked (its state may be half-updated): every
    /// later call on it is refused; only freeing it works.
    Poisoned,
    /// Data (a checkpoint) failed validation: bad magic, checksum, truncation, ...
    Corrupt(String),
    /// Two buffers that must be disjoint overlap (a parameter with a gradient or another
    /// parameter).
    Overlap {
        /// The two buffers, e.g. `"param 1 and grad 0 share memory"`.
        what: String,
    },
}

impl Error {
    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(name: &'static str, value: impl fmt::Display, expected: &'static str) -> Self {
        Error::InvalidArgument {
            name,
            value: value.to_string(),
            expected,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidArgument {
                name,
                value,
                expected,
            } => write!(f, "invalid {name} = {value}: {expected}"),
            Error::LengthMismatch {
                what,
                expected,
                got,
            } => write!(
                f,
                "length mismatch for {what}: expected {expected}, got {got}"
            ),
            Error::NonFinite {
                buffer: usize::MAX, ..
            } => write!(
                f,
                "non-finite gradient: the supplied sum of squares is not finite (the value is \
                 in another shard's gradients)"
            ),
            Error::NonFinite {
                buffer,
                index,
                value,
            } => write!(
                f,
                "non-finite gradient: buffer {buffer} holds {value} at index {index}"
            ),
            Error::InvalidState(what) => write!(f, "invalid call order: {what}"),
            Error::Unsupported(what) => write!(f, "unsupported: {what}"),
            Error::NullPointer { name } => write!(f, "null pointer: {name} must not be NULL"),
            Error::Overlap { what } => write!(f, "overlapping buffers: {what}"),
            Error::Io(what) => write!(f, "I/O error: {what}"),
            Error::Corrupt(what) => write!(f, "corrupt checkpoint: {what}"),
            Error::Busy(what) => write!(f, "busy: {what}"),
            Error::Poisoned => write!(
                f,
                "poisoned handle: an earlier call on this optimizer panicked inside flatopt (a bug: \
                 please report it) and may have left its state half-updated; every call but \
                 flatopt_optimizer_free is refused"
            ),
        }
    }
}

impl std::error::Error for Error {}
