//! Dynamic loss scaling with PyTorch `torch.amp.GradScaler`'s semantics: the gradients of an
//! fp16 model are computed from the loss times `scale`; the optimizer divides them by `scale`
//! inside its pass ([`Optimizer::set_loss_scaler`](crate::Optimizer::set_loss_scaler)). A step
//! whose gradients hold a non-finite value is skipped with nothing changed and the scale backs
//! off; after `growth_interval` finite steps in a row it grows.

use crate::error::Error;

/// The dynamic loss scaler's configuration and state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossScaler {
    scale: f32,
    growth_factor: f32,
    backoff_factor: f32,
    growth_interval: u32,
    /// Finite steps in a row since the last change of the scale.
    growth_tracker: u32,
    /// Whether the last step found a non-finite gradient (and was skipped).
    found_inf: bool,
}

impl Default for LossScaler {
    /// PyTorch's defaults: scale 2^16, growth 2.0 every 2000 finite steps, backoff 0.5.
    fn default() -> Self {
        LossScaler {
            scale: 65536.0,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 2000,
            growth_tracker: 0,
            found_inf: false,
        }
    }
}

impl LossScaler {
    /// A scaler starting at `init_scale` (finite, > 0), multiplying it by `growth_factor` (> 1)
    /// after `growth_interval` (>= 1) finite steps in a row and by `backoff_factor` (in (0, 1))
    /// on a non-finite one. Each value is refused by name otherwise.
    pub fn new(
        init_scale: f32,
        growth_factor: f32,
        backoff_factor: f32,
        growth_interval: u32,
    ) -> Result<LossScaler, Error> {
        if !(init_scale.is_finite() && init_scale > 0.0) {
            return Err(Error::invalid(
                "init_scale",
                init_scale,
                "must be finite and > 0",
            ));
        }
        if !(growth_factor.is_finite() && growth_factor > 1.0) {
            return Err(Error::invalid(
                "growth_factor",
                growth_factor,
                "must be finite and > 1",
            ));
        }
        if !(backoff_factor > 0.0 && backoff_factor < 1.0) {
            return Err(Error::invalid(
                "backoff_factor",
                backoff_factor,
                "must be in (0, 1)",
            ));
        }
        if growth_interval == 0 {
            return Err(Error::invalid("growth_interval", 0, "must be >= 1"));
        }
        Ok(LossScaler {
            scale: init_scale,
            growth_factor,
            backoff_factor,
            growth_interval,
            ..LossScaler::default()
        })
    }

    /// The scale the next step divides the gradients by.
    pub fn scale(&self) -> f32 {
        self.scale
    }

    /// Whether the last step found a non-finite gradient (and was skipped).
    pub fn found_inf(&self) -> bool {
        self.found_inf
    }

    /// Finite steps in a row since the scale last changed.
    pub fn growth_tracker(&self) -> u32 {
        self.growth_tracker
    }

    /// `(growth_factor, backoff_factor, growth_interval)`.
    pub fn factors(&self) -> (f32, f32, u32) {
        (
            self.growth_factor,
            self.backoff_factor,
            self.growth_interval,
        )
    }

    /// Records the outcome of a step, as `GradScaler.update` does: a non-finite step backs the
    /// scale off (not below the smallest positive f32) and restarts the count; the
    /// `growth_interval`-th finite step in a row grows it (unless that would overflow, as
    /// PyTorch keeps the scale finite) and restarts the count.
    pub fn update(&mut self, found_inf: bool) {
        self.found_inf = found_inf;
        if found_inf {
            let s = self.scale * self.backoff_factor;
            self.scale = if s > 0.0 { s } else { self.scale };
            self.growth_tracker = 0;
        } else {
            self.growth_tracker += 1;
            if self.growth_tracker == self.growth_interval {
                let s = self.scale * self.growth_factor;
                if s.is_finite() {
                    self.scale = s;
                }
                self.growth_tracker = 0;
            }
        }
    }

    /// Restores a saved state (checked like [`LossScaler::new`], and the tracker below the
    /// interval).
    pub fn with_state(
        mut self,
        scale: f32,
        growth_tracker: u32,
        found_inf: bool,
    ) -> Result<LossScaler, Error> {
        if !(scale.is_finite() && scale > 0.0) {
            return Err(Error::invalid("scale", scale, "must be finite and > 0"));
        }
        if growth_tracker >= self.growth_interval {
            return Err(Error::invalid(
                "growth_tracker",
                growth_tracker,
                "must be below growth_interval",
            ));
        }
        self.scale = scale;
        self.growth_tracker = growth_tracker;
        self.found_inf = found_inf;
        Ok(self)
    }
}
