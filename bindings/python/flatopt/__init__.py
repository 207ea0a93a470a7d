"""flatopt: fused, deterministic SIMD optimizer updates on your NumPy arrays.

Python binding over ctypes of the flatopt C library, with the braintools / optax / PyTorch
API::

    import numpy as np
    import flatopt

    params = {"w": np.zeros((64, 10), np.float32), "b": np.zeros(10, np.float32)}
    opt = flatopt.Lookahead(flatopt.adam(1e-3), sync_period=5, alpha=0.5)
    opt.register_trainable_weights(params)
    opt.update(grads)            # same structure as params; params change in place

* Base optimizers (optax style): :func:`sgd`, :func:`adam`, :func:`adamw`, :func:`radam`,
  wrapped by :class:`Lookahead`.
* braintools / PyTorch-style optimizers: :class:`SGD`, :class:`Momentum`,
  :class:`MomentumNesterov`, :class:`Adam`, :class:`AdamW`, :class:`RAdam`, with braintools'
  ``step(grads)`` (an alias of ``update``) and hyperparameter attributes (``lr``, ``base_lr``,
  ``current_lr``, ``betas``, ``eps``, ``momentum``, ``nesterov``, ``amsgrad``,
  ``weight_decay``, ``grad_clip_norm``, ``grad_clip_value``).
* Schedules: :class:`StepLR`, :class:`CosineAnnealingLR`, ... (see :mod:`flatopt._schedules`
  for how they drive an optimizer).
* Errors: :class:`FlatoptError` and its subclasses.
* Sharded (ZeRO-1) data-parallel training over MPI, ``torch.distributed`` or NCCL:
  :mod:`flatopt.sharded` and the optimizers' ``sum_squares_partials()`` /
  ``update_with_sum_squares()``.

The numerical contract (and where it differs from braintools, optax and PyTorch) is docs/numerics.md
in the repository. The shared library is found as described in :mod:`flatopt._lib`
(``FLATOPT_LIBRARY``, then the copy bundled in this package, then the system); :data:`library_path`
says which one was loaded.
"""

from ._errors import (
    ArgumentTypeError,
    BusyError,
    CheckpointError,
    CheckpointIOError,
    DTypeError,
    FlatoptError,
    InternalError,
    InvalidArgumentError,
    InvalidStateError,
    LayoutError,
    LengthMismatchError,
    NonFiniteError,
    OverlapError,
    StructureError,
    UnsupportedError,
)
from ._lib import library_path, library_version
from ._mixed import DynamicLossScale
from ._optim import (
    SGD,
    Adam,
    AdamW,
    BaseOptimizer,
    Lookahead,
    Momentum,
    MomentumNesterov,
    Optimizer,
    RAdam,
    adam,
    adamw,
    radam,
    adagrad,
    rmsprop,
    sgd,
)
from ._family import (
    AdaBelief,
    Adadelta,
    Adagrad,
    Adamax,
    Lamb,
    Adafactor,
    Lars,
    Lion,
    Nadam,
    Novograd,
    RMSprop,
    Rprop,
    Yogi,
    adabelief,
    adadelta,
    adamax,
    lamb,
    adafactor,
    lars,
    lion,
    nadam,
    novograd,
    rprop,
    yogi,
)
from . import sharded
from ._schedules import (
    ChainedScheduler,
    ConstantLR,
    CosineAnnealingLR,
    CosineAnnealingWarmRestarts,
    CyclicLR,
    ExponentialDecayLR,
    ExponentialLR,
    LinearLR,
    LRScheduler,
    MultiStepLR,
    OneCycleLR,
    PiecewiseConstantSchedule,
    PolynomialLR,
    ReduceLROnPlateau,
    SequentialLR,
    StepLR,
    WarmupCosineSchedule,
    WarmupScheduler,
)

__version__ = "0.2.0"


def simd_tiers():
    """The SIMD tiers available on this CPU in this build, e.g. ['scalar', 'portable',
    'avx2'] (pass one as ``simd_tier=`` to an optimizer; results are bit-identical)."""
    from . import _lib

    return [name for name, t in _lib.SIMD_TIERS.items() if t and _lib.simd_tier_available(t)]


__all__ = [
    "__version__",
    "library_path",
    "library_version",
    "simd_tiers",
    "sharded",
    # optimizers
    "BaseOptimizer",
    "sgd",
    "adam",
    "adamw",
    "radam",
    "adagrad",
    "rmsprop",
    "Optimizer",
    "DynamicLossScale",
    "Lookahead",
    "SGD",
    "Momentum",
    "MomentumNesterov",
    "Adam",
    "AdamW",
    "RAdam",
    # the optimizer family (_family.py)
    "adamax",
    "nadam",
    "lion",
    "Adagrad",
    "RMSprop",
    "Adamax",
    "Nadam",
    "Lion",
    "adabelief",
    "yogi",
    "adadelta",
    "rprop",
    "AdaBelief",
    "Yogi",
    "Adadelta",
    "Rprop",
    "lamb",
    "adafactor",
    "lars",
    "novograd",
    "Lamb",
    "Adafactor",
    "Lars",
    "Novograd",
    # schedules
    "LRScheduler",
    "ConstantLR",
    "LinearLR",
    "StepLR",
    "MultiStepLR",
    "ExponentialLR",
    "ExponentialDecayLR",
    "CosineAnnealingLR",
    "CosineAnnealingWarmRestarts",
    "PolynomialLR",
    "WarmupScheduler",
    "WarmupCosineSchedule",
    "OneCycleLR",
    "CyclicLR",
    "PiecewiseConstantSchedule",
    "ReduceLROnPlateau",
    "ChainedScheduler",
    "SequentialLR",
    # errors
    "FlatoptError",
    "DTypeError",
    "LayoutError",
    "StructureError",
    "InvalidArgumentError",
    "ArgumentTypeError",
    "LengthMismatchError",
    "NonFiniteError",
    "InvalidStateError",
    "UnsupportedError",
    "OverlapError",
    "CheckpointError",
    "CheckpointIOError",
    "InternalError",
    "BusyError",
]
