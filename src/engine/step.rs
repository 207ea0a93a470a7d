//! One begun split update ([`Step`]), applied range by range from any threads.

use super::StateMut;
use crate::error::Error;
use crate::kernels::{
    self, Buffers, Grad, GradScale, HeldBuffers, HeldRounding, MixedBuffers, Plan,
};
use crate::simd::{FpMode, Tier};

/// The per-step scalars of one update between [`Optimizer::begin_step`](super::Optimizer::begin_step) and
/// [`Optimizer::end_step`](super::Optimizer::end_step). Plain data: copy it to every thread. With parameter groups, the
/// plan of each group is kept by the optimizer and handed out with the state views
/// ([`Optimizer::states_mut`](super::Optimizer::states_mut)): [`Step::apply`] runs each view with its group's plan.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    /// The plan of group 0.
    pub(super) plan: Plan,
    pub(super) tier: Tier,
    /// 1-based number of this update.
    pub(super) number: u64,
    /// The optimizer that began it (its [`Optimizer`] id).
    pub(super) owner: u64,
    /// The loss scale its gradients are divided by (the dynamic loss scaler's, or 1).
    pub(super) unscale: GradScale,
    /// How compressed state is rounded in this update.
    pub(super) rounding: HeldRounding,
    /// The configured index of the optimizer's first element (stochastic rounding's counter).
    pub(super) index_offset: u64,
}

impl Step {
    /// The fused update of one buffer range: `param` and `grad` must cover the same elements as
    /// `state` (for example `param[a..b]` with the state of that buffer split at `a` and `b`).
    /// Each element must be applied exactly once per update: a range that overlaps one already
    /// applied (or being applied by another thread) in this update is refused with
    /// [`Error::Overlap`] before anything is written. Also refused, writing nothing: lengths
    /// that differ, a step that is not the one begun last on the optimizer of `state`.
    ///
    /// With int8 state, a view that a split cut inside an 8-bit block (see
    /// [`StateMut::split_at`]) is refused, naming the element where the block was cut.
    pub fn apply(&self, param: &mut [f32], grad: &[f32], state: StateMut<'_>) -> Result<(), Error> {
        let (at, len, coverage, plan) = (state.at, state.len, state.coverage, state.plan);
        if let Some(e) = state.cut {
            return Err(Error::invalid(
                "range",
                format!("split at element {e} of its buffer"),
                "must start and end on a multiple of 256 elements (Q8_BLOCK) of its buffer (or \
                 at its end) with int8 state: 8-bit blocks are requantized whole",
            ));
        }
        let view_len = |got: usize| {
            if got == len {
                Ok(())
            } else {
                Err(Error::LengthMismatch {
                    what: "param (the length of the state view)".to_string(),
                    expected: len,
                    got,
                })
            }
        };
        if state.all_f32() {
            let b = self.buffers(param, grad, state);
            b.check(plan)?;
            view_len(b.param.len())?;
            coverage.check_step(self)?;
            coverage.claim(at, at + len)?;
            // The host's thread: flatopt's floating-point mode for the pass (as `kernels::apply`).
            let _mode = FpMode::enter();
            let Buffers {
                param,
                grad,
                m,
                v,
                v_max,
                slow,
            } = b;
            let mixed = MixedBuffers {
                param,
                grad: Grad::F32(grad),
                m,
                v,
                v_max,
                slow,
                copy: None,
            };
            kernels::apply_mixed_unchecked_lengths(self.tier, plan, self.unscale, mixed);
            return Ok(());
        }
        let [m, v, v_max, slow] = state.into_parts();
        let lens = [m.len(), v.len(), v_max.len(), slow.len()];
        kernels::check_lengths(plan, param.len(), grad.len(), lens)?;
        view_len(param.len())?;
        coverage.check_step(self)?;
        coverage.claim(at, at + len)?;
        let _mode = FpMode::enter();
        let b = HeldBuffers {
            param,
            grad: Grad::F32(grad),
            m,
            v,
            v_max,
            slow,
            copy: None,
            index: self.index_of(at),
        };
        kernels::apply_held_unchecked(self.tier, plan, self.unscale, self.rounding, b);
        Ok(())
    }

    /// The stochastic-rounding index of element `at` of the concatenation.
    pub(crate) fn index_of(&self, at: usize) -> u64 {
        self.index_offset.wrapping_add(at as u64)
    }

    /// How compressed state is rounded in this update.
    pub(crate) fn rounding(&self) -> HeldRounding {
        self.rounding
    }

    pub(super) fn buffers<'a>(
        &self,
        param: &'a mut [f32],
        grad: &'a [f32],
        state: StateMut<'a>,
    ) -> Buffers<'a> {
        let [m, v, v_max, slow] = state.into_parts().map(|h| h.f32_mut().unwrap_or_default());
        Buffers {
            param,
            grad,
            m,
            v,
            v_max,
            slow,
        }
    }

    /// The SIMD tier the step runs on.
    pub fn tier(&self) -> Tier {
        self.tier
    }
    /// The 1-based number of this update.
    pub fn number(&self) -> u64 {
        self.number
    }
    /// Whether Lookahead syncs on this update.
    pub fn syncs(&self) -> bool {
        self.plan.sync_alpha.is_some()
    }
    /// The plan (per-step scalars) of this update for parameter group 0 (the optimizer's own
    /// hyperparameters; [`Optimizer::group_plan`](super::Optimizer::group_plan) gives every group's).
    pub fn plan(&self) -> &Plan {
        &self.plan
    }
    /// How the gradients are divided by the loss scale in this update (the dynamic loss
    /// scaler's scale when one is set, else none).
    pub fn unscale(&self) -> GradScale {
        self.unscale
    }
}
