"""The optimizer family beyond Adam and SGD (issue 14): optax-style factories (``adamax``,
``nadam``, ``lion``, ...; optax's signatures and defaults, usable as a :class:`Lookahead` base)
and braintools-named classes (``Adamax``, ``Nadam``, ``Lion``, ``Adagrad``, ``RMSprop``, ...;
braintools' signatures and defaults). Each rule's formula and its PyTorch / optax variants:
docs/numerics.md, "Base rules".
"""

from __future__ import annotations

from . import _lib, _validate
from ._optim import (
    BaseOptimizer, Optimizer, _betas, _check_lr, _check_state_options, _hyper, _pair,
    _state, adagrad, rmsprop,
)

__all__ = [
    "adamax",
    "nadam",
    "lion",
    "adabelief",
    "yogi",
    "adadelta",
    "rprop",
    "lamb",
    "lars",
    "novograd",
    "adafactor",
    "Adagrad",
    "RMSprop",
    "Adamax",
    "Nadam",
    "Lion",
    "AdaBelief",
    "Yogi",
    "Adadelta",
    "Rprop",
    "Lamb",
    "Lars",
    "Novograd",
    "Adafactor",
]

# Per rule: each argument of its factory -> (the flatopt_base_params field, is a flag).
_C_FIELDS = {
    _lib.ADAMAX: {
        "b1": ("b1", False),
        "b2": ("b2", False),
        "eps": ("eps", False),
        "eps_outside_max": ("eps_outside_max", True),
    },
    _lib.NADAM: {
        "b1": ("b1", False),
        "b2": ("b2", False),
        "eps": ("eps", False),
        "momentum_decay": ("momentum_decay", False),
        "constant_momentum": ("constant_momentum", True),
        "decoupled_weight_decay": ("decoupled_weight_decay", False),
    },
    _lib.LION: {
        "b1": ("b1", False),
        "b2": ("b2", False),
        "weight_decay": ("decoupled_weight_decay", False),
    },
    _lib.ADABELIEF: {
        "b1": ("b1", False),
        "b2": ("b2", False),
        "eps": ("eps", False),
        "eps_root": ("eps_root", False),
    },
    _lib.YOGI: {
        "b1": ("b1", False),
        "b2": ("b2", False),
        "eps": ("eps", False),
        "initial_accumulator_value": ("initial_accumulator", False),
    },
    _lib.ADADELTA: {"rho": ("rho", False), "eps": ("eps", False)},
    _lib.RPROP: {
        "eta_minus": ("eta_minus", False),
        "eta_plus": ("eta_plus", False),
        "min_step_size": ("min_step_size", False),
        "max_step_size": ("max_step_size", False),
    },
    _lib.LAMB: {
        "b1": ("b1", False),
        "b2": ("b2", False),
        "eps": ("eps", False),
        "eps_root": ("eps_root", False),
        "weight_decay": ("decoupled_weight_decay", False),
    },
    _lib.LARS: {
        "weight_decay": ("decoupled_weight_decay", False),
        "trust_coefficient": ("trust_coefficient", False),
        "eps": ("eps", False),
        "momentum": ("momentum", False),
        "nesterov": ("nesterov", True),
    },
    _lib.NOVOGRAD: {
        "b1": ("b1", False),
        "b2": ("b2", False),
        "eps": ("eps", False),
        "eps_root": ("eps_root", False),
        "weight_decay": ("decoupled_weight_decay", False),
    },
    # optax's names: its eps is added to the squared gradients; eps_floor is PyTorch's eps[0].
    _lib.ADAFACTOR: {
        "decay_rate": ("decay_rate", False),
        "decay_offset": ("decay_offset", False),
        "multiply_by_parameter_scale": ("multiply_by_parameter_scale", True),
        "clipping_threshold": ("clipping_threshold", False),
        "momentum": ("momentum", False),
        "weight_decay_rate": ("decoupled_weight_decay", False),
        "eps": ("eps_root", False),
        "eps_floor": ("eps", False),
        "eps_scale": ("eps_scale", False),
        "relative_step": ("relative_step", True),
        "weight_decay_by_lr": ("weight_decay_by_lr", True),
    },
}


class _Rule(BaseOptimizer):
    """A base rule whose arguments map one to one onto ``flatopt_base_params`` fields."""

    def __init__(self, kind, name, learning_rate, state_options=None, **hyper):
        fields = _C_FIELDS[kind]
        checked = {}
        for key, value in hyper.items():
            is_flag = fields[key][1]
            checked[key] = _validate.flag(key, value) if is_flag else _validate.real(key, value)
        self.kind = kind
        self.name = name
        self.learning_rate = _check_lr(learning_rate, "learning_rate")
        self.state_options = _check_state_options(state_options or {})
        self.hyperparams = checked

    def _fill(self, base):
        for key, value in self.hyperparams.items():
            c_field, is_flag = _C_FIELDS[self.kind][key]
            setattr(base, c_field, int(value) if is_flag else value)


# ---------------------------------------------------------------------------------------------
# optax-style factories.


def adamax(learning_rate, b1=0.9, b2=0.999, eps=1e-8, eps_outside_max=True, state_dtype=None,
           state_rounding=None, state_seed=None):
    """Adamax with optax's defaults: ``u = max(b2*u, |g|)``,
    ``p -= lr / (1 - b1^t) * m / (u + eps)``; ``eps_outside_max=False`` is PyTorch's
    ``u = max(b2*u, |g| + eps)``, ``p -= lr / (1 - b1^t) * m / u``."""
    return _Rule(
        _lib.ADAMAX, "adamax", learning_rate, _state(state_dtype, state_rounding, state_seed),
        b1=b1, b2=b2, eps=eps, eps_outside_max=eps_outside_max,
    )


def nadam(learning_rate, b1=0.9, b2=0.999, eps=1e-8, momentum_decay=0.004, constant_momentum=True,
          decoupled_weight_decay=0.0, state_dtype=None, state_rounding=None, state_seed=None):
    """NAdam with optax's defaults (``constant_momentum``: ``mu_t = b1``, optax's
    ``scale_by_adam(nesterov=True)``); ``constant_momentum=False`` is PyTorch's NAdam with the
    momentum schedule ``mu_t = b1*(1 - 0.5*0.96^(t*momentum_decay))``;
    ``decoupled_weight_decay`` is PyTorch's NAdamW decay (``p *= 1 - lr*decay``)."""
    return _Rule(
        _lib.NADAM, "nadam", learning_rate, _state(state_dtype, state_rounding, state_seed),
        b1=b1, b2=b2, eps=eps, momentum_decay=momentum_decay, constant_momentum=constant_momentum,
        decoupled_weight_decay=decoupled_weight_decay,
    )


def lion(learning_rate, b1=0.9, b2=0.99, weight_decay=1e-3, state_dtype=None, state_rounding=None,
         state_seed=None):
    """Lion (optax's signature and defaults): ``u = sign(b1*m + (1-b1)*g)``,
    ``m = b2*m + (1-b2)*g``, ``p = p*(1 - lr*weight_decay) - lr*u``."""
    return _Rule(
        _lib.LION, "lion", learning_rate, _state(state_dtype, state_rounding, state_seed),
        b1=b1, b2=b2, weight_decay=weight_decay,
    )


def adabelief(learning_rate, b1=0.9, b2=0.999, eps=1e-16, eps_root=1e-16, state_dtype=None,
              state_rounding=None, state_seed=None):
    """AdaBelief (optax's signature and defaults): ``m = b1*m + (1-b1)*g``,
    ``s = b2*s + (1-b2)*(g - m)^2 + eps_root``,
    ``p -= lr * (m / (1 - b1^t)) / (sqrt(s / (1 - b2^t)) + eps)``."""
    return _Rule(_lib.ADABELIEF, "adabelief", learning_rate,
                 _state(state_dtype, state_rounding, state_seed), b1=b1, b2=b2, eps=eps,
                 eps_root=eps_root)


def yogi(learning_rate, b1=0.9, b2=0.999, eps=1e-3, initial_accumulator_value=1e-6,
         state_dtype=None, state_rounding=None, state_seed=None):
    """Yogi (optax's signature and defaults): ``m = b1*m + (1-b1)*g``,
    ``v = v - (1-b2)*sign(v - g^2)*g^2``, ``p -= lr * (m / (1 - b1^t)) /
    (sqrt(v / (1 - b2^t)) + eps)``; both moments start from ``initial_accumulator_value``."""
    return _Rule(_lib.YOGI, "yogi", learning_rate, _state(state_dtype, state_rounding, state_seed),
                 b1=b1, b2=b2, eps=eps, initial_accumulator_value=initial_accumulator_value)


def adadelta(learning_rate, rho=0.9, eps=1e-6, state_dtype=None, state_rounding=None,
             state_seed=None):
    """Adadelta (optax's and PyTorch's): ``v = rho*v + (1-rho)*g^2``,
    ``d = sqrt(u + eps) / sqrt(v + eps) * g``, ``u = rho*u + (1-rho)*d^2``, ``p -= lr*d``.
    optax's ``weight_decay`` is the optimizer's coupled ``weight_decay``."""
    return _Rule(_lib.ADADELTA, "adadelta", learning_rate,
                 _state(state_dtype, state_rounding, state_seed), rho=rho, eps=eps)


def rprop(learning_rate, eta_minus=0.5, eta_plus=1.2, min_step_size=1e-6, max_step_size=50.0,
          state_dtype=None, state_rounding=None, state_seed=None):
    """Rprop with optax's signature and defaults and PyTorch's definition (docs/numerics.md,
    "Rprop": optax 0.2.8 applies each step's update one step late). The learning rate of the
    first step is every element's initial step size."""
    return _Rule(_lib.RPROP, "rprop", learning_rate,
                 _state(state_dtype, state_rounding, state_seed), eta_minus=eta_minus,
                 eta_plus=eta_plus, min_step_size=min_step_size, max_step_size=max_step_size)


def lamb(learning_rate, b1=0.9, b2=0.999, eps=1e-6, eps_root=0.0, weight_decay=0.0,
         state_dtype=None, state_rounding=None, state_seed=None):
    """LAMB (optax's signature and defaults, without ``mask``): Adam's direction
    ``u = (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t) + eps_root) + eps) + weight_decay*p``, scaled
    per registered buffer by the trust ratio ``||p|| / ||u||`` (1 where either norm is 0):
    ``p -= lr * ||p|| / ||u|| * u``. A registered array is a layer."""
    return _Rule(_lib.LAMB, "lamb", learning_rate,
                 _state(state_dtype, state_rounding, state_seed), b1=b1, b2=b2, eps=eps,
                 eps_root=eps_root, weight_decay=weight_decay)


def lars(learning_rate, weight_decay=0.0, trust_coefficient=0.001, eps=0.0, momentum=0.9,
         nesterov=False, state_dtype=None, state_rounding=None, state_seed=None):
    """LARS (optax's signature and defaults, without the masks): ``x = g + weight_decay*p``,
    per registered buffer ``r = trust_coefficient * ||p|| / (||x|| + eps)`` (1 where either
    norm is 0), ``m = momentum*m + lr*r*x``, ``p -= m`` (Nesterov: ``p -= lr*r*x +
    momentum*m``)."""
    return _Rule(_lib.LARS, "lars", learning_rate,
                 _state(state_dtype, state_rounding, state_seed), weight_decay=weight_decay,
                 trust_coefficient=trust_coefficient, eps=eps, momentum=momentum,
                 nesterov=nesterov)


def novograd(learning_rate, b1=0.9, b2=0.25, eps=1e-6, eps_root=0.0, weight_decay=0.0,
             state_dtype=None, state_rounding=None, state_seed=None):
    """NovoGrad (optax's signature and defaults): per registered buffer ``nu = ||g||^2`` on
    the first update, then ``nu = b2*nu + (1-b2)*||g||^2``;
    ``m = b1*m + g / (sqrt(nu + eps_root) + eps) + weight_decay*p``, ``p -= lr*m``."""
    return _Rule(_lib.NOVOGRAD, "novograd", learning_rate,
                 _state(state_dtype, state_rounding, state_seed), b1=b1, b2=b2, eps=eps,
                 eps_root=eps_root, weight_decay=weight_decay)


class _Adafactor(_Rule):
    """Adafactor: a rule whose factored second moments follow each registered array's shape
    (``factor_shape``, called at registration)."""

    def __init__(self, learning_rate, state_options, min_dim_size_to_factor, factored,
                 **hyper):
        super().__init__(_lib.ADAFACTOR, "adafactor", learning_rate, state_options, **hyper)
        self.min_dim_size_to_factor = _validate.integer(
            "min_dim_size_to_factor", min_dim_size_to_factor, 0, 2**63 - 1
        )
        self.factored = _validate.flag("factored", factored)

    def factor_shape(self, shape):
        """``(rows, cols)`` for an array of ``shape`` whose second moments are factored (optax's
        rule: the two largest dims, both at least ``min_dim_size_to_factor``), else None.
        flatopt factors row-major matrices, the array's last two dims: an array whose two
        largest dims are not its last two is refused."""
        if not self.factored or len(shape) < 2:
            return None
        order = sorted(range(len(shape)), key=lambda d: (shape[d], d))
        d1, d0 = order[-2], order[-1]
        if shape[d1] < self.min_dim_size_to_factor or shape[d1] == 0:
            return None
        if sorted((d1, d0)) != [len(shape) - 2, len(shape) - 1]:
            raise ValueError(
                f"adafactor: an array of shape {tuple(shape)}: optax factors its dims {d1} and "
                f"{d0}, flatopt the last two dims (row-major matrices): move the two largest "
                "dims last, or pass factored=False"
            )
        return (int(shape[-2]), int(shape[-1]))


def adafactor(learning_rate=None, min_dim_size_to_factor=128, decay_rate=0.8, decay_offset=0,
              multiply_by_parameter_scale=True, clipping_threshold=1.0, momentum=None,
              dtype_momentum="float32", weight_decay_rate=None, eps=1e-30, factored=True,
              eps_floor=0.0, eps_scale=1e-3, relative_step=False, weight_decay_by_lr=False,
              state_dtype=None, state_rounding=None, state_seed=None):
    """Adafactor (optax's signature and defaults, without ``weight_decay_mask``; numerics.md,
    "Adafactor"): an array whose two largest dims are at least ``min_dim_size_to_factor``
    keeps row and column averages of ``g^2 + eps`` (its last two dims), any other array an
    elementwise average; the decay is ``1 - (t - decay_offset)^-decay_rate``; the update
    ``g / sqrt(v)`` is divided by ``max(1, rms / clipping_threshold)`` (None: no clipping),
    scaled by the learning rate (None: 1) and ``max(eps_scale, rms(p))``, averaged with
    ``momentum`` (None: none), and ``weight_decay_rate * p`` is added. ``eps_floor``,
    ``relative_step`` and ``weight_decay_by_lr`` give PyTorch's variant (``eps[0]``,
    ``lr = min(lr, 1/sqrt(t))``, ``p *= 1 - lr * weight_decay``). Momentum is kept in
    float32 (``dtype_momentum`` float32 only)."""
    if str(getattr(dtype_momentum, "__name__", dtype_momentum)) not in ("float32", "f4"):
        raise ValueError(
            f"adafactor: dtype_momentum {dtype_momentum!r}: only float32 momentum is supported"
        )
    return _Adafactor(
        1.0 if learning_rate is None else learning_rate,
        _state(state_dtype, state_rounding, state_seed), min_dim_size_to_factor, factored,
        decay_rate=decay_rate, decay_offset=decay_offset,
        multiply_by_parameter_scale=multiply_by_parameter_scale,
        clipping_threshold=float("nan") if clipping_threshold is None else clipping_threshold,
        momentum=0.0 if momentum is None else momentum,
        weight_decay_rate=0.0 if weight_decay_rate is None else weight_decay_rate,
        eps=eps, eps_floor=eps_floor, eps_scale=eps_scale, relative_step=relative_step,
        weight_decay_by_lr=weight_decay_by_lr,
    )


# ---------------------------------------------------------------------------------------------
# braintools-named classes: braintools' signatures and defaults (its optax transforms), plus
# flatopt's nonfinite, num_threads and simd_tier. ``weight_decay`` is coupled (added to the
# gradient) as in braintools, except Lion's (decoupled, as braintools adds it after the sign).


_BETAS = _pair("b1", "b2", "``(b1, b2)``, the decay rates of the first and second moments.")
_EPS = _hyper("eps", "The term added to the denominator.")


class _Family(Optimizer):
    """The braintools-named family classes; each carries braintools' read-only hyperparameter
    attributes (``betas``, ``eps``, ``rho``, ...), read from the configuration."""

    def __init__(self, base, weight_decay, grad_clip_norm, grad_clip_value, nonfinite,
                 num_threads, simd_tier, **state):
        super().__init__(
            base, None, lookahead=False, weight_decay=weight_decay,
            grad_clip_norm=grad_clip_norm, grad_clip_value=grad_clip_value,
            nonfinite=nonfinite, num_threads=num_threads, simd_tier=simd_tier, **state,
        )


class Adagrad(_Family):
    """braintools' ``Adagrad(lr=1e-2, lr_decay=0.0, weight_decay=0.0,
    initial_accumulator_value=0.0, eps=1e-10, grad_clip_norm=None, grad_clip_value=None)``:
    optax's ``scale_by_rss`` (eps inside the square root) with PyTorch's ``lr_decay``."""

    def __init__(self, lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0,
                 eps=1e-10, grad_clip_norm=None, grad_clip_value=None, nonfinite="skip",
                 num_threads=1, simd_tier=None, state_dtype=None, state_rounding=None,
                 state_seed=None, state_index_offset=None):
        _check_lr(lr, "lr")
        base = adagrad(
            lr, initial_accumulator_value=initial_accumulator_value, eps=eps,
            eps_inside_sqrt=True, lr_decay=lr_decay,
        )
        super().__init__(base, weight_decay, grad_clip_norm, grad_clip_value, nonfinite,
                         num_threads, simd_tier,
                         **_state(state_dtype, state_rounding, state_seed, state_index_offset))

    eps = _EPS
    initial_accumulator_value = _hyper(
        "initial_accumulator_value", "The sum of squares' value before the first update.")
    lr_decay = _hyper("lr_decay", "PyTorch's learning-rate decay: lr / (1 + (t - 1) * lr_decay).")


class RMSprop(_Family):
    """braintools' ``RMSprop(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
    centered=False, grad_clip_norm=None, grad_clip_value=None)``: optax's ``scale_by_rms`` /
    ``scale_by_stddev`` (eps inside the square root), then ``trace(momentum)``."""

    def __init__(self, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False, grad_clip_norm=None, grad_clip_value=None, nonfinite="skip",
                 num_threads=1, simd_tier=None, state_dtype=None, state_rounding=None,
                 state_seed=None, state_index_offset=None):
        _check_lr(lr, "lr")
        base = rmsprop(
            lr, alpha=alpha, eps=eps, eps_inside_sqrt=True, centered=centered,
            momentum=momentum,
        )
        super().__init__(base, weight_decay, grad_clip_norm, grad_clip_value, nonfinite,
                         num_threads, simd_tier,
                         **_state(state_dtype, state_rounding, state_seed, state_index_offset))

    alpha = _hyper("alpha", "The decay rate of the squared-gradient average.")
    eps = _EPS
    centered = _hyper("centered", "Whether the gradient's variance is used (centered RMSprop).")
    momentum = _hyper("momentum", "The momentum factor (0.0: none).")


class Adamax(_Family):
    """braintools' ``Adamax(lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
    grad_clip_norm=None, grad_clip_value=None)``: optax's ``scale_by_adamax`` (eps after the
    maximum)."""

    def __init__(self, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, grad_clip_norm=None,
                 grad_clip_value=None, nonfinite="skip", num_threads=1, simd_tier=None,
                 state_dtype=None, state_rounding=None, state_seed=None, state_index_offset=None):
        _check_lr(lr, "lr")
        b1, b2 = _betas(betas)
        base = adamax(lr, b1=b1, b2=b2, eps=eps, eps_outside_max=True)
        super().__init__(base, weight_decay, grad_clip_norm, grad_clip_value, nonfinite,
                         num_threads, simd_tier,
                         **_state(state_dtype, state_rounding, state_seed, state_index_offset))

    betas = _BETAS
    eps = _EPS


class Nadam(_Family):
    """braintools' ``Nadam(lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
    momentum_decay=4e-3, grad_clip_norm=None, grad_clip_value=None)``: PyTorch's momentum
    schedule ``mu_t = b1*(1 - 0.5*0.96^(t*momentum_decay))``."""

    def __init__(self, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, momentum_decay=4e-3,
                 grad_clip_norm=None, grad_clip_value=None, nonfinite="skip", num_threads=1,
                 simd_tier=None, state_dtype=None, state_rounding=None, state_seed=None,
                 state_index_offset=None):
        _check_lr(lr, "lr")
        b1, b2 = _betas(betas)
        base = nadam(lr, b1=b1, b2=b2, eps=eps, momentum_decay=momentum_decay,
                     constant_momentum=False)
        super().__init__(base, weight_decay, grad_clip_norm, grad_clip_value, nonfinite,
                         num_threads, simd_tier,
                         **_state(state_dtype, state_rounding, state_seed, state_index_offset))

    betas = _BETAS
    eps = _EPS
    momentum_decay = _hyper("momentum_decay", "PyTorch's momentum-schedule decay.")


class Lion(_Family):
    """braintools' ``Lion(lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, grad_clip_norm=None,
    grad_clip_value=None)``; ``weight_decay`` is decoupled (``p *= 1 - lr*weight_decay``)."""

    def __init__(self, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, grad_clip_norm=None,
                 grad_clip_value=None, nonfinite="skip", num_threads=1, simd_tier=None,
                 state_dtype=None, state_rounding=None, state_seed=None, state_index_offset=None):
        _check_lr(lr, "lr")
        b1, b2 = _betas(betas)
        base = lion(lr, b1=b1, b2=b2, weight_decay=weight_decay)
        super().__init__(base, 0.0, grad_clip_norm, grad_clip_value, nonfinite, num_threads,
                         simd_tier,
                         **_state(state_dtype, state_rounding, state_seed, state_index_offset))

    betas = _pair("b1", "b2", "``(b1, b2)``: the interpolation and the momentum decay rates.")

    @property
    def weight_decay(self):
        """The decoupled weight decay (``p *= 1 - lr * weight_decay`` each update)."""
        return self._base.hyperparams["weight_decay"]


class AdaBelief(_Family):
    """braintools' ``AdaBelief(lr=1e-3, betas=(0.9, 0.999), eps=1e-16, weight_decay=0.0,
    grad_clip_norm=None, grad_clip_value=None)``: optax's ``scale_by_belief`` (``eps_root``
    1e-16)."""

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-16, weight_decay=0.0,
                 grad_clip_norm=None, grad_clip_value=None, nonfinite="skip", num_threads=1,
                 simd_tier=None, state_dtype=None, state_rounding=None, state_seed=None,
                 state_index_offset=None):
        _check_lr(lr, "lr")
        b1, b2 = _betas(betas)
        base = adabelief(lr, b1=b1, b2=b2, eps=eps)
        super().__init__(base, weight_decay, grad_clip_norm, grad_clip_value, nonfinite,
                         num_threads, simd_tier,
                         **_state(state_dtype, state_rounding, state_seed, state_index_offset))

    betas = _BETAS
    eps = _EPS


class Yogi(_Family):
    """braintools' ``Yogi(lr=1e-3, betas=(0.9, 0.999), eps=1e-3, weight_decay=0.0,
    grad_clip_norm=None, grad_clip_value=None)``: optax's ``scale_by_yogi`` (moments from
    1e-6)."""

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-3, weight_decay=0.0, grad_clip_norm=None,
                 grad_clip_value=None, nonfinite="skip", num_threads=1, simd_tier=None,
                 state_dtype=None, state_rounding=None, state_seed=None, state_index_offset=None):
        _check_lr(lr, "lr")
        b1, b2 = _betas(betas)
        base = yogi(lr, b1=b1, b2=b2, eps=eps)
        super().__init__(base, weight_decay, grad_clip_norm, grad_clip_value, nonfinite,
                         num_threads, simd_tier,
                         **_state(state_dtype, state_rounding, state_seed, state_index_offset))

    betas = _BETAS
    eps = _EPS


class Adadelta(_Family):
    """braintools' ``Adadelta(lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0,
    grad_clip_norm=None, grad_clip_value=None)``."""

    def __init__(self, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, grad_clip_norm=None,
                 grad_clip_value=None, nonfinite="skip", num_threads=1, simd_tier=None,
                 state_dtype=None, state_rounding=None, state_seed=None, state_index_offset=None):
        _check_lr(lr, "lr")
        base = adadelta(lr, rho=rho, eps=eps)
        super().__init__(base, weight_decay, grad_clip_norm, grad_clip_value, nonfinite,
                         num_threads, simd_tier,
                         **_state(state_dtype, state_rounding, state_seed, state_index_offset))

    rho = _hyper("rho", "The decay rate of the squared-gradient and squared-update averages.")
    eps = _EPS


class Rprop(_Family):
    """braintools' ``Rprop(lr=1e-2, etas=(0.5, 1.2), step_sizes=(1e-6, 50.0),
    grad_clip_norm=None, grad_clip_value=None)`` with PyTorch's definition (braintools runs
    optax's ``rprop``, which applies each update one step late: docs/numerics.md, "Rprop")."""

    def __init__(self, lr=1e-2, etas=(0.5, 1.2), step_sizes=(1e-6, 50.0), grad_clip_norm=None,
                 grad_clip_value=None, nonfinite="skip", num_threads=1, simd_tier=None,
                 state_dtype=None, state_rounding=None, state_seed=None, state_index_offset=None):
        _check_lr(lr, "lr")
        eta_minus, eta_plus = _validate.pair("etas", etas)
        lo, hi = _validate.pair("step_sizes", step_sizes)
        base = rprop(lr, eta_minus=eta_minus, eta_plus=eta_plus, min_step_size=lo,
                     max_step_size=hi)
        super().__init__(base, 0.0, grad_clip_norm, grad_clip_value, nonfinite, num_threads,
                         simd_tier,
                         **_state(state_dtype, state_rounding, state_seed, state_index_offset))

    etas = _pair("eta_minus", "eta_plus", "``(eta_minus, eta_plus)``, the step-size factors.")
    step_sizes = _pair("min_step_size", "max_step_size",
                       "``(min, max)``, the bounds of every element's step size.")


class _RuleDecay(_Family):
    """A family class whose ``weight_decay`` is the rule's own (added where optax adds it)."""

    @property
    def weight_decay(self):
        """The rule's weight decay (added to the update as optax's ``add_decayed_weights``)."""
        return self._base.hyperparams["weight_decay"]


class Lamb(_RuleDecay):
    """braintools' ``Lamb(lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0,
    grad_clip_norm=None, grad_clip_value=None)``: optax's ``scale_by_adam``,
    ``add_decayed_weights(weight_decay)``, ``scale_by_trust_ratio`` per registered array."""

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0,
                 grad_clip_norm=None, grad_clip_value=None, nonfinite="skip", num_threads=1,
                 simd_tier=None, state_dtype=None, state_rounding=None, state_seed=None,
                 state_index_offset=None):
        _check_lr(lr, "lr")
        b1, b2 = _betas(betas)
        base = lamb(lr, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)
        super().__init__(base, 0.0, grad_clip_norm, grad_clip_value, nonfinite, num_threads,
                         simd_tier,
                         **_state(state_dtype, state_rounding, state_seed, state_index_offset))

    betas = _BETAS
    eps = _EPS


class Lars(_RuleDecay):
    """braintools' ``Lars(lr=1.0, momentum=0.9, weight_decay=0.0, trust_coefficient=0.001,
    eps=1e-8, grad_clip_norm=None, grad_clip_value=None)``: ``add_decayed_weights``,
    ``scale_by_trust_ratio`` per registered array, the momentum trace. The learning rate
    enters before the trace (optax's ``lars``); braintools scales after it, which differs
    only while the learning rate changes."""

    def __init__(self, lr=1.0, momentum=0.9, weight_decay=0.0, trust_coefficient=0.001,
                 eps=1e-8, grad_clip_norm=None, grad_clip_value=None, nonfinite="skip",
                 num_threads=1, simd_tier=None, state_dtype=None, state_rounding=None,
                 state_seed=None, state_index_offset=None):
        _check_lr(lr, "lr")
        base = lars(lr, weight_decay=weight_decay, trust_coefficient=trust_coefficient,
                    eps=eps, momentum=momentum)
        super().__init__(base, 0.0, grad_clip_norm, grad_clip_value, nonfinite, num_threads,
                         simd_tier,
                         **_state(state_dtype, state_rounding, state_seed, state_index_offset))

    momentum = _hyper("momentum", "The momentum of the trace.")
    trust_coefficient = _hyper("trust_coefficient", "The multiplier of the trust ratio.")
    eps = _hyper("eps", "Added to the update's norm in the trust ratio.")


class Novograd(_RuleDecay):
    """braintools' ``Novograd(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
    grad_clip_norm=None, grad_clip_value=None)``: optax's ``scale_by_novograd`` (a second
    moment per registered array)."""

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 grad_clip_norm=None, grad_clip_value=None, nonfinite="skip", num_threads=1,
                 simd_tier=None, state_dtype=None, state_rounding=None, state_seed=None,
                 state_index_offset=None):
        _check_lr(lr, "lr")
        b1, b2 = _betas(betas)
        base = novograd(lr, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)
        super().__init__(base, 0.0, grad_clip_norm, grad_clip_value, nonfinite, num_threads,
                         simd_tier,
                         **_state(state_dtype, state_rounding, state_seed, state_index_offset))

    betas = _BETAS
    eps = _EPS


class Adafactor(_RuleDecay):
    """``Adafactor(lr=None, min_dim_size_to_factor=128, decay_rate=0.8, decay_offset=0,
    multiply_by_parameter_scale=True, clipping_threshold=1.0, momentum=None,
    weight_decay_rate=None, eps=1e-30, factored=True, grad_clip_norm=None,
    grad_clip_value=None)``: optax's ``adafactor`` (braintools wraps it) as a class; factored
    second moments for arrays whose two largest dims are at least ``min_dim_size_to_factor``."""

    def __init__(self, lr=None, min_dim_size_to_factor=128, decay_rate=0.8, decay_offset=0,
                 multiply_by_parameter_scale=True, clipping_threshold=1.0, momentum=None,
                 weight_decay_rate=None, eps=1e-30, factored=True, grad_clip_norm=None,
                 grad_clip_value=None, nonfinite="skip", num_threads=1, simd_tier=None,
                 state_dtype=None, state_rounding=None, state_seed=None,
                 state_index_offset=None):
        if lr is not None:
            _check_lr(lr, "lr")
        base = adafactor(lr, min_dim_size_to_factor=min_dim_size_to_factor,
                         decay_rate=decay_rate, decay_offset=decay_offset,
                         multiply_by_parameter_scale=multiply_by_parameter_scale,
                         clipping_threshold=clipping_threshold, momentum=momentum,
                         weight_decay_rate=weight_decay_rate, eps=eps, factored=factored)
        super().__init__(base, 0.0, grad_clip_norm, grad_clip_value, nonfinite, num_threads,
                         simd_tier,
                         **_state(state_dtype, state_rounding, state_seed, state_index_offset))

    @property
    def weight_decay(self):
        """The rule's weight decay rate (added to the update as optax's
        ``add_decayed_weights``)."""
        return self._base.hyperparams["weight_decay_rate"]

    decay_rate = _hyper("decay_rate", "The exponent of the second-moment decay.")
    clipping_threshold = _hyper("clipping_threshold", "The update's RMS threshold (NaN: none).")
