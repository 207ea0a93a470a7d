//! The C ABI: thin adapters over the engine and the stateless kernels.
//!
//! Every exported function follows the same shape (see "API conventions" in the README): check
//! pointers and integers coming from C, convert them into safe Rust values, call safe Rust, map
//! the result to a `flatopt_status`, all inside `boundary::guard`, which also catches panics
//! so that none crosses the boundary. Outputs are written only on success. The message of the
//! last failure on the calling thread is kept in a fixed thread-local buffer
//! (`flatopt_last_error_message`).
//!
//! One module per object or concern:
//! - `boundary`: status codes, error mapping, the panic guard, the last message, versions;
//! - `ptr`: every conversion of a raw C pointer (and its checks);
//! - `structs`: the C option structs, their defaults and their conversion to `Config`;
//! - `handle`: the optimizer handle and its lock;
//! - `optimizer`: the functions on a handle;
//! - `group`: parameter groups (`flatopt_group_options` and the functions on a handle's groups);
//! - `mixed`: mixed precision (gradient formats and 16-bit copies per buffer through
//!   `flatopt_param_options`, the loss scale of a step, the dynamic loss scaler, the stateless
//!   conversions and mixed-precision update);
//! - `tier`: the process-wide SIMD tier;
//! - `stateless`: the stateless kernels;
//! - `checkpoint`: saving and loading a handle's state.
//!
//! `include/flatopt.h` is generated from these files by cbindgen (`make header`), in the order
//! of the `mod` lines below; a test fails when the committed header is stale. Doc comments here
//! are the C documentation.

#![allow(non_camel_case_types)]

// cbindgen writes the header in the order of these lines (rustfmt would sort one block of
// `mod` lines, hence one block each).
mod boundary;

mod structs;

mod handle;

mod optimizer;

mod group;

mod mixed;

mod tier;

mod stateless;

mod checkpoint;

mod ptr;

/// The C side of the catalogs (public for the fuzz harness, which builds C structs from Rust
/// configurations with it).
pub mod catalog;

#[cfg(any(test, feature = "fault-injection"))]
mod fault;

#[cfg(test)]
mod tests;

pub use boundary::*;
pub use checkpoint::*;
pub use group::*;
pub use handle::flatopt_optimizer;
pub use mixed::*;
pub use optimizer::*;
pub use stateless::*;
pub use structs::*;
pub use tier::*;
