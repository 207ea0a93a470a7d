//! The Rust names of 0.2 and earlier, kept as deprecated aliases.

use super::{Optimizer, Outcome, Step};
use crate::error::Error;

/// The names of 0.2 and earlier. The C names are the project's vocabulary (one step of the
/// optimizer is a *step*: `flatopt_optimizer_step`, `_begin_step`, `_end_step`), and the Rust
/// API follows them from 0.2 on; these aliases keep older Rust callers compiling.
impl Optimizer {
    /// Renamed [`Optimizer::step`].
    #[deprecated(since = "0.2.0", note = "renamed to `step`, as in the C API")]
    pub fn update(
        &mut self,
        params: &mut [&mut [f32]],
        grads: &[&[f32]],
    ) -> Result<Outcome, Error> {
        self.step(params, grads)
    }
    /// Renamed [`Optimizer::step_with_sum_squares`].
    #[deprecated(
        since = "0.2.0",
        note = "renamed to `step_with_sum_squares`, as in the C API"
    )]
    pub fn update_with_sum_squares(
        &mut self,
        params: &mut [&mut [f32]],
        grads: &[&[f32]],
        sum_squares: f64,
    ) -> Result<Outcome, Error> {
        self.step_with_sum_squares(params, grads, sum_squares)
    }
    /// Renamed [`Optimizer::begin_step`].
    #[deprecated(since = "0.2.0", note = "renamed to `begin_step`, as in the C API")]
    pub fn begin_update(&mut self, grads: &[&[f32]]) -> Result<Result<Step, Outcome>, Error> {
        self.begin_step(grads)
    }
    /// Renamed [`Optimizer::begin_step_with_sum_squares`].
    #[deprecated(
        since = "0.2.0",
        note = "renamed to `begin_step_with_sum_squares`, as in the C API"
    )]
    pub fn begin_update_with_sum_squares(
        &mut self,
        sumsq: Option<f64>,
        find: impl Fn(usize) -> Option<(usize, f32)>,
    ) -> Result<Result<Step, Outcome>, Error> {
        self.begin_step_with_sum_squares(sumsq, find)
    }
    /// Renamed [`Optimizer::end_step`].
    #[deprecated(since = "0.2.0", note = "renamed to `end_step`, as in the C API")]
    pub fn finish_update(&mut self, step: Step) -> Result<(), Error> {
        self.end_step(step)
    }
}
