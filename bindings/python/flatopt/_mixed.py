"""Mixed precision: the dynamic loss scaler (:class:`DynamicLossScale`).

Gradients and the copies of the parameters in 16 bits are taken by
:meth:`flatopt.Optimizer.register_trainable_weights` (``grads=...`` of float16 / bfloat16
arrays or tensors, ``copies=...``) and :meth:`flatopt.Optimizer.update` (``grad_scale=...``);
see docs/numerics.md, "16-bit floats".
"""

from __future__ import annotations

import ctypes
import math

from . import _lib, _validate
from ._errors import InvalidArgumentError, InvalidStateError


class DynamicLossScale:
    """Dynamic loss scaling with PyTorch ``torch.amp.GradScaler``'s rules, run by the library
    inside the optimizer's pass: multiply the loss by :attr:`scale` before the backward pass
    (:meth:`scale_loss`); the optimizer divides the gradients by it before clipping, skips an
    update whose gradients hold NaN or Inf (``update`` returns False, nothing changes), halves
    the scale then (``backoff_factor``), and doubles it after ``growth_interval`` finite
    updates in a row (``growth_factor``). Attach it with ``opt.loss_scale = scaler``; its state
    is in the optimizer's ``state_dict()`` (and in :meth:`state_dict`, GradScaler's keys).

    ::

        scaler = flatopt.DynamicLossScale()
        opt.loss_scale = scaler
        loss = scaler.scale_loss(loss)   # then backward in fp16
        opt.update()                     # False when skipped
    """

    def __init__(self, init_scale=2.0**16, growth_factor=2.0, backoff_factor=0.5,
                 growth_interval=2000):
        init_scale = _validate.real("init_scale", init_scale)
        growth_factor = _validate.real("growth_factor", growth_factor)
        backoff_factor = _validate.real("backoff_factor", backoff_factor)
        growth_interval = _validate.integer("growth_interval", growth_interval, 1, _validate.U32_MAX)
        checks = [
            ("init_scale", init_scale, math.isfinite(init_scale) and init_scale > 0,
             "must be finite and > 0"),
            ("growth_factor", growth_factor, math.isfinite(growth_factor) and growth_factor > 1,
             "must be finite and > 1"),
            ("backoff_factor", backoff_factor, 0 < backoff_factor < 1, "must be in (0, 1)"),
        ]
        for name, value, ok, rule in checks:
            f32 = ctypes.c_float(value).value
            if not ok or not (math.isfinite(f32) and f32 > 0) or (name == "backoff_factor" and f32 >= 1):
                raise InvalidArgumentError(
                    f"invalid {name} = {_validate.show(value)}: {rule} (also as a float32)"
                )
        self._options = (init_scale, growth_factor, backoff_factor, growth_interval)
        self._opt = None  # the optimizer it is attached to

    # -- the C options and the attached optimizer ---------------------------------------

    def _struct(self):
        o = _lib.LossScalerOptions()
        _lib.check(_lib.loss_scaler_options_init(ctypes.byref(o), ctypes.sizeof(o)))
        o.init_scale, o.growth_factor, o.backoff_factor, o.growth_interval = self._options
        return o

    def _state(self):
        opt = self._opt
        if opt is None:
            return self._options[0], 0, False
        return opt._loss_scaler_state()

    @property
    def init_scale(self):
        return self._options[0]

    @property
    def growth_factor(self):
        return self._options[1]

    @property
    def backoff_factor(self):
        return self._options[2]

    @property
    def growth_interval(self):
        return self._options[3]

    @property
    def scale(self):
        """The scale the next update divides the gradients by (multiply the loss by it)."""
        return self._state()[0]

    @property
    def growth_tracker(self):
        """Finite updates in a row since the scale last changed."""
        return self._state()[1]

    @property
    def found_inf(self):
        """Whether the last update found a non-finite gradient (and was skipped)."""
        return self._state()[2]

    def scale_loss(self, loss):
        """``loss * scale``: the loss to run the backward pass on."""
        return loss * self.scale

    def state_dict(self):
        """GradScaler's ``state_dict`` keys: ``scale``, ``growth_factor``, ``backoff_factor``,
        ``growth_interval``, ``_growth_tracker``."""
        scale, tracker, _ = self._state()
        return {
            "scale": scale,
            "growth_factor": self.growth_factor,
            "backoff_factor": self.backoff_factor,
            "growth_interval": self.growth_interval,
            "_growth_tracker": tracker,
        }

    def load_state_dict(self, state):
        """Restores :meth:`state_dict` into the attached optimizer's scaler (the factors must
        be this scaler's)."""
        if self._opt is None:
            raise InvalidStateError(
                "DynamicLossScale.load_state_dict: attach it first (opt.loss_scale = scaler)"
            )
        for key, mine in (("growth_factor", self.growth_factor),
                          ("backoff_factor", self.backoff_factor),
                          ("growth_interval", self.growth_interval)):
            if state.get(key) != mine:
                raise InvalidArgumentError(
                    f"DynamicLossScale.load_state_dict: {key} = {_validate.show(state.get(key))}, "
                    f"this scaler's is {_validate.show(mine)}"
                )
        scale = _validate.real("scale", state.get("scale"))
        tracker = _validate.integer("_growth_tracker", state.get("_growth_tracker"), 0,
                                    _validate.U32_MAX)
        self._opt._set_loss_scaler_state(scale, tracker)

    def __repr__(self):
        i, g, b, n = self._options
        return (f"DynamicLossScale(init_scale={i!r}, growth_factor={g!r}, "
                f"backoff_factor={b!r}, growth_interval={n!r})")
