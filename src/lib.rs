//! flatopt: fused, deterministic SIMD optimizer updates on flat f32 buffers the host owns.
//!
//! Layers, bottom up (see ARCHITECTURE.md):
//! - [`simd`]: the vector abstraction, one module per instruction-set tier, the dispatch point;
//! - [`kernels`]: each update written once over the abstraction, plus the stateless entry
//!   points (caller owns every buffer);
//! - [`schedule`], [`config`]: learning-rate schedules and the validated configuration;
//! - [`engine`]: the [`Optimizer`] (registered buffers, state, counters, threads).
//!
//! ```
//! use flatopt::{Base, Config, Optimizer, Outcome};
//! let mut w = vec![1.0f32; 10];
//! let g = vec![0.5f32; 10];
//! let cfg = Config::new(Base::adam(), 1e-2).lookahead(5, 0.5).clip_norm(1.0);
//! let mut opt = Optimizer::new(cfg).unwrap();
//! opt.register(&[&w]).unwrap();
//! let out = opt.step(&mut [&mut w], &[&g]).unwrap();
//! assert_eq!(out, Outcome::Applied { step: 1, synced: false });
//! assert!(w[0] < 1.0);
//! ```

#![warn(missing_docs)]

pub mod catalog;
pub mod checkpoint;
pub mod config;
pub mod engine;
pub mod error;
pub mod ffi;
pub mod kernels;
mod rules;
pub mod scaler;
pub mod schedule;
pub mod simd;

pub use config::{Base, Config, Lookahead, NonFinitePolicy, ScheduleMode};
pub use engine::{Optimizer, Outcome, StateMut, Step};
pub use error::Error;
pub use scaler::LossScaler;
pub use schedule::{Schedule, ScheduleState};
pub use simd::{default_tier, set_default_tier, Tier};

/// The README's examples compile and run as doc tests, so the README stays true to the code.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
