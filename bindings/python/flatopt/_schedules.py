"""Learning-rate schedules with the braintools / PyTorch names and parameters.

How a schedule object works with an optimizer
---------------------------------------------
The formulas live in the library (``docs/numerics.md``, "Schedules"); a schedule object
here holds the hyperparameters and a counter.

* **Manual (default, epoch style, as in braintools and PyTorch).** The schedule moves only
  when you call :meth:`LRScheduler.step` (``ReduceLROnPlateau``: ``step(metric)``). Updates do
  not move it.
* **Per update** (``per_update=True``). The schedule advances by itself after every applied
  update of the optimizer it drives (skipped updates do not count), optax style. ``step()``
  still advances it by one more.

Pass the schedule as the learning rate of an optimizer (``flatopt.Adam(lr=sched)``,
``flatopt.adam(sched)``, ``flatopt.Lookahead(base, lr=sched)``): creating the optimizer *binds*
the schedule to it. From then on ``step()`` drives that optimizer's schedule state (one
foreign call) and :attr:`LRScheduler.current_lr` reads the learning rate the optimizer's next
update will use. A schedule drives one optimizer: create one schedule object per optimizer.

Before it is bound, a schedule can be stepped and queried on its own (a tiny private handle
of the library computes ``current_lr``); the steps taken are carried over when it is bound
and when the optimizer registers its parameters.

Checkpoints: the optimizer's ``state_dict()`` carries the schedule's state (counter, plateau
best and patience, ...), so restoring the optimizer restores its schedule.

Where flatopt differs from braintools 0.4.0 or PyTorch (all listed in docs/numerics.md):
``CosineAnnealingLR`` holds at ``eta_min`` after ``T_max`` (PyTorch turns back up);
``OneCycleLR`` and ``CyclicLR`` follow PyTorch's formulas (braintools' differ slightly);
``PiecewiseConstantSchedule`` values are absolute learning rates (what braintools' code
computes, although its docstring calls them factors).
"""

from __future__ import annotations

import ctypes
import math
import weakref

from . import _lib, _validate
from ._errors import (
    ArgumentTypeError,
    CheckpointError,
    InvalidArgumentError,
    InvalidStateError,
    UnsupportedError,
)

__all__ = [
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
]


def _lr_list(name, value):
    """(first, list or None): a learning rate, or a per-group list of them (braintools /
    PyTorch: one value per parameter group)."""
    if isinstance(value, (list, tuple)):
        items = _validate.sequence(name, value)
        if not items:
            raise InvalidArgumentError(f"invalid {name} = []: needs one value per group")
        lrs = [_float(f"{name}[{i}]", v) for i, v in enumerate(items)]
        for i, lr in enumerate(lrs):
            if not (lr >= 0.0 and math.isfinite(lr)):
                raise InvalidArgumentError(
                    f"invalid {name}[{i}] = {_validate.show(lr)}: the learning rate must be "
                    "finite and >= 0"
                )
        return lrs[0], lrs
    return _float(name, value), None


def _uint(name, value):
    return _validate.integer(name, value, 0, _validate.U64_MAX)


def _uints(name, values):
    return [_uint(f"{name}[{i}]", v) for i, v in enumerate(_validate.sequence(name, values))]


_float = _validate.real
_choice = _validate.choice


class _Count(int):
    """An int that braintools code can also read as ``.value`` (braintools keeps its counters
    in state objects: ``optimizer.step_count.value``, ``scheduler.T_cur.value``)."""

    __slots__ = ()

    @property
    def value(self):
        return int(self)


class _Real(float):
    """A float also readable as ``.value`` (braintools' ``ReduceLROnPlateau.best.value``)."""

    __slots__ = ()

    @property
    def value(self):
        return float(self)


class _Epoch(int):
    """A schedule's ``last_epoch``: an int, also readable and assignable as ``.value``
    (braintools' ``scheduler.last_epoch.value = n`` moves the schedule to ``n``)."""

    def __new__(cls, n, schedule):
        out = super().__new__(cls, n)
        out._schedule = schedule
        return out

    @property
    def value(self):
        return int(self)

    @value.setter
    def value(self, n):
        self._schedule.last_epoch = n

    def __reduce__(self):  # copied or pickled: the number
        return (int, (int(self),))


class _Lrs(list):
    """A schedule's learning rates (one per group; flatopt has one), also readable as
    ``.value`` (braintools' ``scheduler.current_lrs.value[0]``)."""

    __slots__ = ()

    @property
    def value(self):
        return list(self)


def _set_epoch(handle_ptr, epoch):
    """Moves a handle's schedule to counter ``epoch`` at once (as ``epoch`` steps from its
    start would, bit for bit)."""
    _lib.check(_lib.optimizer_schedule_set_epoch(handle_ptr, epoch), "schedule position")


class _Handle:
    """Owns one flatopt_optimizer handle; frees it when garbage-collected."""

    __slots__ = ("ptr", "_finalizer", "__weakref__")

    def __init__(self, config, context):
        out = ctypes.c_void_p()
        _lib.check(_lib.optimizer_new(ctypes.byref(config), ctypes.byref(out)), context)
        self.ptr = out.value
        self._finalizer = weakref.finalize(self, _lib.optimizer_free, out.value)

    def free(self):
        self._finalizer()

    def __reduce__(self):
        # A raw address of this process, freed with its owner: never copied (the schedules and
        # optimizers that own handles copy and pickle by value and make their own).
        raise UnsupportedError(
            "a flatopt library handle cannot be pickled or copied; copy or pickle the "
            "optimizer or schedule that owns it"
        )


class LRScheduler:
    """Base class of the schedules.

    Manual by default (epoch style, as in braintools and PyTorch): the learning rate moves only
    when you call ``step()`` (``ReduceLROnPlateau``: ``step(metric)``), never by itself. With
    ``per_update=True`` it advances after every applied update of its optimizer instead
    (skipped updates do not count), optax style.

    Pass the schedule as an optimizer's learning rate: creating the optimizer binds the
    schedule to it (one optimizer per schedule object). Then ``step()`` drives that
    optimizer's schedule state (one foreign call) and ``current_lr`` is the learning rate its
    next update will use. Unbound, a schedule can be stepped and queried on its own; the steps
    carry over when it is bound. The optimizer's ``state_dict()`` includes the schedule state.

    Attributes: ``base_lr``; ``per_update``; ``last_epoch`` (the counter: ``step()`` calls,
    plus applied updates for a per-update schedule bound to an optimizer); ``current_lr``.
    """

    _kind = None  # a key of _lib.SCHEDULE_KINDS

    #: Hyperparameters holding absolute learning rates that PyTorch shares between groups and
    #: flatopt's group rule (schedule(t) * lr / base_lr) scales: a per-group base_lr list whose
    #: values differ needs them 0.
    _shared = ()

    def __init__(self, base_lr, last_epoch=0, per_update=False):
        self.base_lr, self._group_lrs = _lr_list("base_lr", base_lr)
        self._check_group_lrs()
        self.per_update = _validate.flag("per_update", per_update)
        self._manual_steps = 0  # step() calls (and the initial last_epoch), replayed on binding
        self._metrics = []  # ReduceLROnPlateau: metrics fed, replayed on binding
        self._owner = None  # weakref to the optimizer this schedule drives
        self._shadow = None  # private handle answering current_lr while unbound
        self._keepalive = ()
        self._shadow_handle()  # validates the hyperparameters now, with the library's message
        last_epoch = _uint("last_epoch", last_epoch)
        if last_epoch:
            _set_epoch(self._shadow.ptr, last_epoch)  # at once, whatever its size
            self._manual_steps = last_epoch

    # -- what subclasses provide ----------------------------------------------------------

    def _fill(self, s):
        """Writes this schedule's hyperparameters into a flatopt_schedule struct."""
        raise NotImplementedError

    # -- C struct ------------------------------------------------------------------------

    def _struct(self):
        """A fresh flatopt_schedule (its list pointers kept alive by self._keepalive)."""
        s = _lib.new_schedule(_lib.SCHEDULE_KINDS[self._kind])
        s.base_lr = self.base_lr
        self._fill(s)
        return s

    def _shadow_handle(self):
        if self._shadow is None:
            cfg = _lib.new_config()
            cfg.base = ctypes.pointer(_lib.new_base_params(_lib.SGD))
            sched = self._struct()
            cfg.schedule = ctypes.pointer(sched)
            cfg.schedule_manual = 1
            self._shadow = _Handle(cfg, f"{type(self).__name__}")
            for lr in (self._group_lrs or ())[1:]:  # one library group per further lr
                o = _lib.GroupOptions()
                o.struct_size = ctypes.sizeof(_lib.GroupOptions)
                o.lr = math.nan if lr is None else lr
                o.weight_decay = math.nan
                index = ctypes.c_size_t()
                _lib.check(
                    _lib.optimizer_add_group(self._shadow.ptr, ctypes.byref(o),
                                             ctypes.byref(index)),
                    f"{type(self).__name__}(base_lr=...)",
                )
            self._replay(self._shadow.ptr)  # e.g. after the optimizer it drove was deleted
        return self._shadow

    def _check_ratio_list(self, name, values):
        """A per-group list of an absolute rate (CyclicLR's ``max_lr``, ReduceLROnPlateau's
        ``min_lr``) that the group rule follows: one value per ``base_lr``, each in the ratio of
        group 0's (``values[i] / base_lr[i] == values[0] / base_lr[0]`` to a relative 1e-12,
        so the scaled value is within f64 rounding of the one given)."""
        lrs = self._group_lrs
        if lrs is None or len(values) != len(lrs):
            raise InvalidArgumentError(
                f"invalid {name} = {_validate.show(values)}: a per-group {name} needs a "
                f"base_lr list of the same length, got base_lr = "
                f"{_validate.show(lrs if lrs is not None else self.base_lr)}"
            )
        for i in range(1, len(values)):
            want, got = values[0] * lrs[i], values[i] * lrs[0]
            if abs(want - got) > 1e-12 * abs(want):
                raise InvalidArgumentError(
                    f"{type(self).__name__}(base_lr={_validate.show(lrs)}, {name}="
                    f"{_validate.show(values)}): flatopt's group i follows schedule(t) * "
                    f"base_lr[i] / base_lr[0], so group {i}'s {name} would be "
                    f"{_validate.show(values[0] * lrs[i] / lrs[0])}, not "
                    f"{_validate.show(values[i])}; give {name} values in the ratio of the "
                    "base_lr values (docs/numerics.md, \"Parameter groups\")"
                )

    def _check_group_lrs(self):
        """Refuses a per-group list the group rule cannot follow (see ``_shared``), naming
        the difference; for a schedule of absolute values (PiecewiseConstant) every group
        follows the schedule itself."""
        lrs = self._group_lrs
        if lrs is None:
            return
        if _lib.optimizer_add_group is None:
            raise UnsupportedError(
                f"{type(self).__name__}(base_lr={_validate.show(lrs)}): per-group lists need "
                f"parameter groups, which the flatopt library at {_lib.library_path} lacks"
            )
        if self._kind == "piecewise_constant":
            self._group_lrs = [None] * len(lrs)  # absolute values: the same for every group
            return
        if all(lr == lrs[0] for lr in lrs):
            return
        if lrs[0] == 0.0:
            raise InvalidArgumentError(
                f"invalid base_lr = {_validate.show(lrs)}: a group's learning rate follows "
                "schedule(t) * lr / base_lr[0], which needs base_lr[0] > 0"
            )
        for name in self._shared:
            self._refuse_shared(name, getattr(self, name))

    def _refuse_shared(self, name, value):
        """Refuses a single absolute rate ``name`` shared by groups of different base_lr."""
        lrs = self._group_lrs
        hint = (f"a {name} list in the ratio of the base_lr values" if name in ("max_lr", "min_lr")
                else f"{name}=0")
        if value and lrs is not None and any(lr != lrs[0] for lr in lrs):
            raise InvalidArgumentError(
                f"{type(self).__name__}(base_lr={_validate.show(lrs)}, {name}="
                f"{_validate.show(value)}): flatopt's group i follows schedule(t) * "
                f"base_lr[i] / base_lr[0], which scales {name} too (to "
                f"{_validate.show(value * lrs[1] / lrs[0])} for group 1), where PyTorch and "
                f"braintools share {name} between the groups; use {hint}, equal base_lr "
                "values, or one optimizer per learning rate (docs/numerics.md, \"Parameter "
                "groups\")"
            )

    # -- binding -------------------------------------------------------------------------

    def _bound(self):
        owner = self._owner() if self._owner is not None else None
        return owner

    def _attach(self, optimizer):
        owner = self._bound()
        if owner is not None and owner is not optimizer:
            raise InvalidArgumentError(
                f"this {type(self).__name__} already drives another optimizer "
                f"({type(owner).__name__}); create one schedule object per optimizer"
            )
        self._owner = weakref.ref(optimizer)
        if self._shadow is not None:
            self._shadow.free()
            self._shadow = None

    def _replay(self, handle_ptr):
        """Brings a new optimizer handle's schedule to this schedule's manual state: the
        position at once; a ReduceLROnPlateau's metrics one by one (its state follows them)."""
        if self._manual_steps:
            _set_epoch(handle_ptr, self._manual_steps)
        for m in self._metrics:
            _lib.check(_lib.optimizer_schedule_step_metric(handle_ptr, m), "schedule step")

    def _target(self):
        owner = self._bound()
        if owner is not None:
            return owner._handle.ptr
        return self._shadow_handle().ptr

    # -- public --------------------------------------------------------------------------

    def _advance(self):
        owner = self._bound()
        if owner is not None:
            with owner._lock:
                _lib.check(_lib.optimizer_schedule_step(owner._handle.ptr), "schedule step")
        else:
            _lib.check(_lib.optimizer_schedule_step(self._shadow_handle().ptr), "schedule step")
        self._manual_steps += 1

    def step(self, epoch=None):
        """Advances the schedule by one (epoch style). ``epoch`` (optional, braintools /
        PyTorch style) moves the counter forward to that value instead; it cannot move
        backwards."""
        if epoch is None:
            self._advance()
            return
        epoch = _uint("epoch", epoch)
        owner = self._bound()
        if owner is not None:
            with owner._lock:
                now = self._move_to(epoch)
                _set_epoch(owner._handle.ptr, epoch)
        else:
            now = self._move_to(epoch)
            _set_epoch(self._shadow_handle().ptr, epoch)
        self._manual_steps += epoch - now

    def _move_to(self, epoch):
        """The counter now, checked not to be past ``epoch``."""
        now = self.last_epoch
        if epoch < now:
            raise InvalidArgumentError(
                f"invalid epoch = {epoch}: the schedule is at {now} and cannot move backwards"
            )
        return now

    def step_epoch(self):
        """braintools' alias of :meth:`step`."""
        self.step()

    @property
    def last_epoch(self):
        """The counter (an int, also ``.value`` as in braintools). Assigning it moves the
        schedule to that position at once, forwards or backwards (braintools and PyTorch
        ``last_epoch``); for a per-update schedule bound to an optimizer, not below the
        optimizer's applied updates, which it counts."""
        owner = self._bound()
        n = self._manual_steps
        if owner is not None and self.per_update:
            n += owner.step_count
        return _Epoch(n, self)

    @last_epoch.setter
    def last_epoch(self, epoch):
        epoch = _uint("last_epoch", epoch)
        owner = self._bound()
        if owner is None:
            _set_epoch(self._shadow_handle().ptr, epoch)
            self._manual_steps = epoch
            return
        with owner._lock:
            updates = owner.step_count if self.per_update else 0
            if epoch < updates:
                raise InvalidArgumentError(
                    f"invalid last_epoch = {epoch}: this per-update schedule counts the "
                    f"{updates} updates its optimizer applied, it cannot go below that"
                )
            _set_epoch(owner._handle.ptr, epoch)
            self._manual_steps = epoch - updates

    @property
    def base_lrs(self):
        """braintools / PyTorch style: the base learning rate of each group (``[base_lr]``
        unless a list was given)."""
        if self._group_lrs is None:
            return [self.base_lr]
        return [self.base_lr if lr is None else lr for lr in self._group_lrs]

    def get_lr(self):
        """braintools / PyTorch style: the learning rates at the current position, one per
        group (``[current_lr]`` without a per-group list or groups)."""
        owner = self._bound()
        if owner is not None:
            return owner.get_last_lr()
        if self._group_lrs is None:
            return [self.current_lr]
        ptr = self._shadow_handle().ptr
        out = []
        for g in range(len(self._group_lrs)):
            out.append(_lib.group_rate(ptr, g))
        return out

    @property
    def current_lr(self):
        """The learning rate the next update will use: the schedule's exact (f64) value as a
        Python float; updates apply it rounded to float32."""
        owner = self._bound()
        if owner is not None:
            return owner.current_lr
        return _lib.group_rate(self._shadow_handle().ptr, 0)

    def get_last_lr(self):
        """PyTorch style: :meth:`get_lr`."""
        return self.get_lr()

    @property
    def current_lrs(self):
        """braintools style: :meth:`get_lr` (also ``.value``, as braintools'
        ``current_lrs.value``)."""
        return _Lrs(self.get_lr())

    def state_dict(self):
        """The schedule's counters. A schedule bound to an optimizer is saved with the
        optimizer's ``state_dict()``, which includes this."""
        return {
            "type": type(self).__name__,
            "manual_steps": self._manual_steps,
            "metrics": list(self._metrics),
        }

    def load_state_dict(self, state):
        """Restores :meth:`state_dict` into an unbound schedule (restore a bound one through
        its optimizer's ``load_state_dict``). The state is checked completely first: on an
        error (:class:`flatopt.CheckpointError`, naming the entry) nothing changed."""
        if self._bound() is not None:
            raise InvalidStateError(
                "this schedule drives an optimizer: restore the optimizer's state_dict, which "
                "carries the schedule"
            )
        manual_steps, metrics = self._check_state(state, "load_state_dict")
        shadow = self._shadow
        self._shadow = None
        old = self._manual_steps, self._metrics
        self._manual_steps, self._metrics = manual_steps, metrics
        try:
            self._shadow_handle()  # a fresh handle brought to the restored state
        except BaseException:
            self._manual_steps, self._metrics = old
            self._shadow = shadow
            raise
        if shadow is not None:
            shadow.free()

    def _check_state(self, state, context):
        """(manual_steps, metrics) of a schedule state dict, every entry checked; raises
        CheckpointError naming the entry at fault. Changes nothing."""
        if not isinstance(state, dict):
            raise CheckpointError(
                f"{context}: the schedule state must be a dict, got {type(state).__name__}"
            )
        if state.get("type") != type(self).__name__:
            raise CheckpointError(
                f"{context}: schedule state of a {_validate.show(state.get('type'))}, this is "
                f"a {type(self).__name__}"
            )
        for key in ("manual_steps", "metrics"):
            if key not in state:
                raise CheckpointError(f"{context}: the schedule state has no {key!r}")
        plateau = self._kind == "reduce_on_plateau"
        try:
            manual_steps = _uint("schedule['manual_steps']", state["manual_steps"])
            if plateau and manual_steps != 0:
                raise InvalidArgumentError(
                    f"invalid schedule['manual_steps'] = {manual_steps}: a ReduceLROnPlateau "
                    "moves by metrics only"
                )
            items = _validate.sequence("schedule['metrics']", state["metrics"])
            metrics = [
                _validate.finite(f"schedule['metrics'][{i}]", m) for i, m in enumerate(items)
            ]
            if metrics and not plateau:
                raise InvalidArgumentError(
                    f"invalid schedule['metrics'] = {_validate.show(state['metrics'])}: only a "
                    "ReduceLROnPlateau has metrics"
                )
        except InvalidArgumentError as e:
            raise CheckpointError(f"{context}: {e}") from None
        return manual_steps, metrics

    def _apply_state(self, checked):
        """Sets what :meth:`_check_state` returned (nothing can fail here)."""
        self._manual_steps, self._metrics = checked

    # -- copying and pickling ------------------------------------------------------------
    # A schedule is copied and pickled by value: its hyperparameters and its counters, never
    # the library handle (a raw address, meaningless in another process and freed with its
    # owner). The copy is unbound; a per-update schedule bound to an optimizer carries the
    # updates applied so far as steps, so that the copy reports the same last_epoch and
    # current_lr. Binding the copy to a new optimizer (or restoring that optimizer's
    # state_dict) goes on from there.

    def __getstate__(self):
        skip = ("_owner", "_shadow", "_keepalive")
        state = {k: v for k, v in self.__dict__.items() if k not in skip}
        if self._kind != "reduce_on_plateau":
            state["_manual_steps"] = int(self.last_epoch)
        state["_metrics"] = list(self._metrics)
        return state

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise CheckpointError(f"unpickling a {type(self).__name__}: not a schedule's state")
        self.__dict__.update(state)
        self._owner = None
        self._shadow = None
        self._keepalive = ()
        self._apply_state(self._check_state(self.state_dict(), "unpickling a schedule"))
        self._shadow_handle()  # checks the hyperparameters again, with the library's message

    def __repr__(self):
        return (
            f"{type(self).__name__}(base_lr={self.base_lr!r}, last_epoch={self.last_epoch}, "
            f"per_update={self.per_update})"
        )


# ---------------------------------------------------------------------------------------------


class ConstantLR(LRScheduler):
    """``base_lr * factor`` for the first ``total_iters`` epochs, then ``base_lr``."""

    _kind = "constant"

    def __init__(self, base_lr=1e-3, factor=1.0 / 3, total_iters=5, last_epoch=0,
                 per_update=False):
        self.factor = _float("factor", factor)
        self.total_iters = _uint("total_iters", total_iters)
        super().__init__(base_lr, last_epoch, per_update)

    def _fill(self, s):
        s.factor = self.factor
        s.period = self.total_iters


class LinearLR(LRScheduler):
    """``base_lr * (start_factor + (end_factor - start_factor) * min(e, total_iters) /
    total_iters)``."""

    _kind = "linear"

    def __init__(self, base_lr=1e-3, start_factor=1.0 / 3, end_factor=1.0, total_iters=5,
                 last_epoch=0, per_update=False):
        self.start_factor = _float("start_factor", start_factor)
        self.end_factor = _float("end_factor", end_factor)
        self.total_iters = _uint("total_iters", total_iters)
        super().__init__(base_lr, last_epoch, per_update)

    def _fill(self, s):
        s.start_factor = self.start_factor
        s.end_factor = self.end_factor
        s.period = self.total_iters


class StepLR(LRScheduler):
    """``base_lr * gamma ** (e // step_size)``."""

    _kind = "step"

    def __init__(self, base_lr=1e-3, step_size=30, gamma=0.1, last_epoch=0, per_update=False):
        self.step_size = _uint("step_size", step_size)
        self.gamma = _float("gamma", gamma)
        super().__init__(base_lr, last_epoch, per_update)

    def _fill(self, s):
        s.period = self.step_size
        s.gamma = self.gamma


class MultiStepLR(LRScheduler):
    """``base_lr * gamma ** (number of milestones <= e)``. Milestones are sorted; repeats are
    refused."""

    _kind = "multi_step"

    def __init__(self, base_lr=1e-3, milestones=(30, 60, 90), gamma=0.1, last_epoch=0,
                 per_update=False):
        self.milestones = sorted(_uints("milestones", milestones))
        self.gamma = _float("gamma", gamma)
        super().__init__(base_lr, last_epoch, per_update)

    def _fill(self, s):
        arr = (ctypes.c_uint64 * max(len(self.milestones), 1))(*self.milestones)
        self._keepalive = (arr,)
        s.milestones = ctypes.cast(arr, ctypes.POINTER(ctypes.c_uint64))
        s.n_milestones = len(self.milestones)
        s.gamma = self.gamma


class ExponentialLR(LRScheduler):
    """``base_lr * gamma ** e``."""

    _kind = "exponential"

    def __init__(self, base_lr=1e-3, gamma=0.95, last_epoch=0, per_update=False):
        self.gamma = _float("gamma", gamma)
        super().__init__(base_lr, last_epoch, per_update)

    def _fill(self, s):
        s.gamma = self.gamma


class ExponentialDecayLR(LRScheduler):
    """optax ``exponential_decay``: ``base_lr * decay_rate ** (max(e - transition_begin, 0) /
    decay_steps)`` (exponent floored if ``staircase``), clamped at ``end_value`` if given."""

    _kind = "exponential_decay"
    _shared = ("end_value",)

    def __init__(self, base_lr=1e-3, decay_steps=1000, decay_rate=0.96, transition_begin=0,
                 staircase=False, end_value=None, last_epoch=0, per_update=False):
        self.decay_steps = _uint("decay_steps", decay_steps)
        self.decay_rate = _float("decay_rate", decay_rate)
        self.transition_begin = _uint("transition_begin", transition_begin)
        self.staircase = _validate.flag("staircase", staircase)
        self.end_value = None if end_value is None else _float("end_value", end_value)
        if self.end_value is not None and math.isnan(self.end_value):
            raise InvalidArgumentError("invalid end_value = nan: must be a number or None")
        super().__init__(base_lr, last_epoch, per_update)

    def _fill(self, s):
        s.period = self.decay_steps
        s.decay_rate = self.decay_rate
        s.warmup = self.transition_begin
        s.staircase = int(self.staircase)
        s.end_value = math.nan if self.end_value is None else self.end_value


class CosineAnnealingLR(LRScheduler):
    """``eta_min + (base_lr - eta_min) * (1 + cos(pi * min(e, T_max) / T_max)) / 2`` (holds
    at ``eta_min`` after ``T_max``)."""

    _kind = "cosine_annealing"
    _shared = ("eta_min",)

    def __init__(self, base_lr=1e-3, T_max=50, eta_min=0.0, last_epoch=0, per_update=False):
        self.T_max = _uint("T_max", T_max)
        self.eta_min = _float("eta_min", eta_min)
        super().__init__(base_lr, last_epoch, per_update)

    def _fill(self, s):
        s.period = self.T_max
        s.eta_min = self.eta_min


class CosineAnnealingWarmRestarts(LRScheduler):
    """SGDR: cosine from ``base_lr`` to ``eta_min`` over cycles of ``T_0``, ``T_0 * T_mult``,
    ... epochs."""

    _kind = "cosine_warm_restarts"
    _shared = ("eta_min",)

    def __init__(self, base_lr=1e-3, T_0=10, T_mult=1, eta_min=0.0, last_epoch=0,
                 per_update=False):
        self.T_0 = _uint("T_0", T_0)
        self.T_mult = _uint("T_mult", T_mult)
        self.eta_min = _float("eta_min", eta_min)
        super().__init__(base_lr, last_epoch, per_update)

    def _fill(self, s):
        s.period = self.T_0
        s.t_mult = self.T_mult
        s.eta_min = self.eta_min

    def _cycle(self):
        """(T_cur, T_i) at ``last_epoch``: whole cycles of T_0, T_0 * T_mult, ... (lengths
        saturating at 2**64 - 1, as the library's), then the position in the current one."""
        rest, length = int(self.last_epoch), self.T_0
        while rest >= length:
            rest -= length
            grown = min(length * self.T_mult, _validate.U64_MAX)
            if grown == length:
                rest %= length
                break
            length = grown
        return rest, length

    @property
    def T_cur(self):
        """Epochs since the last restart (braintools / PyTorch ``T_cur``; also ``.value``)."""
        return _Count(self._cycle()[0])

    @property
    def T_i(self):
        """The length of the current cycle (braintools / PyTorch ``T_i``; also ``.value``)."""
        return _Count(self._cycle()[1])


class PolynomialLR(LRScheduler):
    """``base_lr * (1 - min(e, total_iters) / total_iters) ** power``."""

    _kind = "polynomial"

    def __init__(self, base_lr=1e-3, total_iters=5, power=1.0, last_epoch=0, per_update=False):
        self.total_iters = _uint("total_iters", total_iters)
        self.power = _float("power", power)
        super().__init__(base_lr, last_epoch, per_update)

    def _fill(self, s):
        s.period = self.total_iters
        s.power = self.power


class WarmupScheduler(LRScheduler):
    """Linear warmup from ``warmup_start_lr`` to ``base_lr`` over ``warmup_epochs``, then
    ``base_lr``."""

    _kind = "warmup"
    _shared = ("warmup_start_lr",)

    def __init__(self, base_lr=1e-3, warmup_epochs=5, warmup_start_lr=0.0, last_epoch=0,
                 per_update=False):
        self.warmup_epochs = _uint("warmup_epochs", warmup_epochs)
        self.warmup_start_lr = _float("warmup_start_lr", warmup_start_lr)
        super().__init__(base_lr, last_epoch, per_update)

    def _fill(self, s):
        s.warmup = self.warmup_epochs
        s.start_lr = self.warmup_start_lr


class WarmupCosineSchedule(LRScheduler):
    """Linear warmup over ``warmup_steps``, then cosine to ``eta_min`` at ``total_steps``."""

    _kind = "warmup_cosine"
    _shared = ("warmup_start_lr", "eta_min")

    def __init__(self, base_lr=1e-3, warmup_steps=1000, total_steps=10000, warmup_start_lr=0.0,
                 eta_min=0.0, last_epoch=0, per_update=False):
        self.warmup_steps = _uint("warmup_steps", warmup_steps)
        self.total_steps = _uint("total_steps", total_steps)
        self.warmup_start_lr = _float("warmup_start_lr", warmup_start_lr)
        self.eta_min = _float("eta_min", eta_min)
        super().__init__(base_lr, last_epoch, per_update)

    def _fill(self, s):
        s.warmup = self.warmup_steps
        s.period = self.total_steps
        s.start_lr = self.warmup_start_lr
        s.eta_min = self.eta_min


class OneCycleLR(LRScheduler):
    """PyTorch's two-phase 1cycle policy: from ``max_lr / div_factor`` up to ``max_lr`` over
    ``pct_start * total_steps``, then down to ``max_lr / div_factor / final_div_factor`` at
    ``total_steps - 1``. Give ``total_steps`` or ``epochs`` and ``steps_per_epoch``."""

    _kind = "one_cycle"

    def __init__(self, max_lr=1e-2, total_steps=None, epochs=None, steps_per_epoch=None,
                 pct_start=0.3, anneal_strategy="cos", div_factor=25.0, final_div_factor=1e4,
                 last_epoch=0, per_update=False):
        if total_steps is None:
            if epochs is None or steps_per_epoch is None:
                raise InvalidArgumentError(
                    "OneCycleLR needs total_steps, or both epochs and steps_per_epoch"
                )
            total_steps = _uint("epochs", epochs) * _uint("steps_per_epoch", steps_per_epoch)
        self.max_lr, max_lrs = _lr_list("max_lr", max_lr)
        self.total_steps = _uint("total_steps", total_steps)
        self.pct_start = _float("pct_start", pct_start)
        self.anneal_strategy = anneal_strategy
        self._anneal_linear = _choice("anneal_strategy", anneal_strategy, {"cos": 0, "linear": 1})
        self.div_factor = _float("div_factor", div_factor)
        self.final_div_factor = _float("final_div_factor", final_div_factor)
        # Per-group max_lr (PyTorch): every OneCycle value is max_lr times a factor of the
        # step, so group i follows schedule(t) * max_lr[i] / max_lr[0] exactly PyTorch's way.
        super().__init__(self.max_lr if max_lrs is None else max_lrs, last_epoch, per_update)

    def _fill(self, s):
        s.base_lr = self.max_lr
        s.period = self.total_steps
        s.pct_start = self.pct_start
        s.div_factor = self.div_factor
        s.final_div_factor = self.final_div_factor
        s.anneal_linear = self._anneal_linear


class CyclicLR(LRScheduler):
    """PyTorch's CyclicLR between ``base_lr`` and ``max_lr`` (modes ``'triangular'``,
    ``'triangular2'``, ``'exp_range'``). ``scale_fn`` is not supported."""

    _kind = "cyclic"

    def __init__(self, base_lr=1e-3, max_lr=1e-2, step_size_up=2000, step_size_down=None,
                 mode="triangular", gamma=1.0, scale_fn=None, scale_mode="cycle", last_epoch=0,
                 per_update=False):
        if scale_fn is not None:
            raise UnsupportedError(
                "CyclicLR(scale_fn=...): custom scale functions are not supported (the "
                "schedule runs inside the library); use mode='triangular', 'triangular2' or "
                "'exp_range'"
            )
        self.max_lr, self._max_lrs = _lr_list("max_lr", max_lr)
        self.step_size_up = _uint("step_size_up", step_size_up)
        self.step_size_down = None if step_size_down is None else _uint(
            "step_size_down", step_size_down
        )
        self.mode = mode
        self._mode = _choice(
            "mode", mode, {"triangular": 0, "triangular2": 1, "exp_range": 2}
        )
        self.gamma = _float("gamma", gamma)
        self.scale_mode = scale_mode
        # Only a scale_fn uses it (PyTorch), and scale_fn is not supported: checked, unused.
        _choice("scale_mode", scale_mode, {"cycle": 0, "iterations": 1})
        super().__init__(base_lr, last_epoch, per_update)

    def _check_group_lrs(self):
        # PyTorch shares a single max_lr between the groups; a list must be in the ratio of
        # the base_lr list (group i then cycles between base_lr[i] and max_lr[i]).
        if self._max_lrs is not None:
            self._check_ratio_list("max_lr", self._max_lrs)
        else:
            self._refuse_shared("max_lr", self.max_lr)
        super()._check_group_lrs()

    @property
    def max_lrs(self):
        """The maximum learning rate of each group (``[max_lr]`` unless a list was given)."""
        return [self.max_lr] if self._max_lrs is None else list(self._max_lrs)

    def _fill(self, s):
        s.max_lr = self.max_lr
        s.step_size_up = self.step_size_up
        s.step_size_down = self.step_size_down or 0  # 0: same as up (as braintools' `or`)
        s.cyclic_mode = self._mode
        s.gamma = self.gamma


class PiecewiseConstantSchedule(LRScheduler):
    """``values[number of boundaries <= e]``: absolute learning rates (``base_lr`` is
    accepted for braintools compatibility and not used, as in braintools 0.4.0's code)."""

    _kind = "piecewise_constant"

    def __init__(self, base_lr=1e-3, boundaries=None, values=None, last_epoch=0,
                 per_update=False):
        self.boundaries = _uints("boundaries", [1000, 2000] if boundaries is None else boundaries)
        self.values = [
            _float(f"values[{i}]", v)
            for i, v in enumerate(
                _validate.sequence("values", [1.0, 0.1, 0.01] if values is None else values)
            )
        ]
        if len(self.values) != len(self.boundaries) + 1:
            raise InvalidArgumentError(
                f"PiecewiseConstantSchedule: {len(self.values)} values for "
                f"{len(self.boundaries)} boundaries: needs len(boundaries) + 1 values"
            )
        super().__init__(base_lr, last_epoch, per_update)

    def _fill(self, s):
        b = (ctypes.c_uint64 * max(len(self.boundaries), 1))(*self.boundaries)
        v = (ctypes.c_double * len(self.values))(*self.values)
        self._keepalive = (b, v)
        s.milestones = ctypes.cast(b, ctypes.POINTER(ctypes.c_uint64))
        s.n_milestones = len(self.boundaries)
        s.values = ctypes.cast(v, ctypes.POINTER(ctypes.c_double))
        s.n_values = len(self.values)


class ReduceLROnPlateau(LRScheduler):
    """PyTorch's ReduceLROnPlateau: ``step(metric)`` once per epoch; after more than
    ``patience`` epochs without improvement the learning rate is multiplied by ``factor``
    (not below ``min_lr``). Only the default ``eps = 1e-8`` is supported."""

    _kind = "reduce_on_plateau"

    def __init__(self, base_lr=1e-3, mode="min", factor=0.1, patience=10, threshold=1e-4,
                 threshold_mode="rel", cooldown=0, min_lr=0.0, eps=1e-8, last_epoch=0,
                 per_update=False):
        if _validate.flag("per_update", per_update):
            raise InvalidArgumentError(
                "ReduceLROnPlateau is driven by metrics (step(metric)), not by updates: "
                "per_update=True is not possible"
            )
        if _uint("last_epoch", last_epoch) != 0:
            raise InvalidArgumentError(
                f"invalid last_epoch = {last_epoch!r}: a ReduceLROnPlateau counts the metrics "
                "fed to step(metric) and starts at 0"
            )
        if _float("eps", eps) != 1e-8:
            raise UnsupportedError(f"ReduceLROnPlateau(eps={eps!r}): only eps = 1e-8 is supported")
        self.mode = mode
        self._mode = _choice("mode", mode, {"min": 0, "max": 1})
        self.factor = _float("factor", factor)
        self.patience = _uint("patience", patience)
        self.threshold = _float("threshold", threshold)
        self.threshold_mode = threshold_mode
        self._threshold_mode = _choice("threshold_mode", threshold_mode, {"rel": 0, "abs": 1})
        self.cooldown = _uint("cooldown", cooldown)
        self.min_lr, self._min_lrs = _lr_list("min_lr", min_lr)
        self.eps = eps
        super().__init__(base_lr, 0, False)

    def _check_group_lrs(self):
        # PyTorch's min_lr is one value per group (a single one is shared); flatopt scales
        # group 0's floor, so a list must be in the ratio of the base_lr list.
        if self._min_lrs is not None:
            self._check_ratio_list("min_lr", self._min_lrs)
        else:
            self._refuse_shared("min_lr", self.min_lr)
        super()._check_group_lrs()

    @property
    def min_lrs(self):
        """The floor of each group (``[min_lr]`` unless a list was given)."""
        return [self.min_lr] if self._min_lrs is None else list(self._min_lrs)

    def _fill(self, s):
        s.plateau_mode = self._mode
        s.factor = self.factor
        s.patience = self.patience
        s.threshold = self.threshold
        s.threshold_mode = self._threshold_mode
        s.cooldown = self.cooldown
        s.min_lr = self.min_lr

    def step(self, metric, epoch=None):
        """Feeds one metric (once per epoch). ``epoch`` is accepted for compatibility and
        ignored."""
        metric = _float("metric", metric)
        if not math.isfinite(metric):
            raise InvalidArgumentError(f"invalid metric = {metric}: must be finite")
        owner = self._bound()
        if owner is not None:
            with owner._lock:
                _lib.check(
                    _lib.optimizer_schedule_step_metric(owner._handle.ptr, metric),
                    "ReduceLROnPlateau.step",
                )
        else:
            _lib.check(
                _lib.optimizer_schedule_step_metric(self._shadow_handle().ptr, metric),
                "ReduceLROnPlateau.step",
            )
        self._metrics.append(metric)

    def step_epoch(self):
        raise InvalidArgumentError("ReduceLROnPlateau needs a metric: call step(metric)")

    @property
    def last_epoch(self):
        """The number of metrics fed (an int, also ``.value``). Not assignable: the state
        follows the metrics."""
        return _Epoch(len(self._metrics), self)

    @last_epoch.setter
    def last_epoch(self, epoch):
        raise InvalidStateError(
            f"last_epoch = {_validate.show(epoch)}: a ReduceLROnPlateau moves by the metrics "
            "fed to step(metric), not to a position"
        )

    def _plateau(self):
        """(best, num_bad_epochs, cooldown_counter) after the metrics fed so far: the
        library's rule (PyTorch's, docs/numerics.md) replayed, as its C API does not expose
        them."""
        inf = math.inf if self.mode == "min" else -math.inf
        best, bad, cooldown = inf, 0, 0
        th, rel = self.threshold, self.threshold_mode == "rel"
        for m in self._metrics:
            if self.mode == "min":
                better = m < (best * (1.0 - th) if rel else best - th)
            else:
                better = m > (best * (th + 1.0) if rel else best + th)
            if better:
                best, bad = m, 0
            else:
                bad += 1
            if cooldown > 0:
                cooldown, bad = cooldown - 1, 0
            if bad > self.patience:
                cooldown, bad = self.cooldown, 0
        return best, bad, cooldown

    @property
    def best(self):
        """The best metric so far (``inf`` / ``-inf`` before the first; also ``.value``)."""
        return _Real(self._plateau()[0])

    @property
    def num_bad_epochs(self):
        """Metrics since the last improvement, as PyTorch counts them (also ``.value``)."""
        return _Count(self._plateau()[1])

    @property
    def cooldown_counter(self):
        """Metrics left in the cooldown after a reduction (also ``.value``)."""
        return _Count(self._plateau()[2])


# ---------------------------------------------------------------------------------------------
# Composite schedules (braintools / PyTorch). The library runs one schedule per optimizer and
# has no composite kind, so these combine their schedule objects here, on their own.


class _Composite(LRScheduler):
    """A schedule made of other schedule objects, computed here (not a library schedule): on
    its own, or setting the groups' learning rates of the optimizer it is given to."""

    _kind = None

    def __init__(self, schedulers, what):
        items = _validate.sequence("schedulers", schedulers)
        if not items:
            raise InvalidArgumentError(f"invalid schedulers = []: {what} needs at least one")
        seen = set()
        for i, s in enumerate(items):
            if not isinstance(s, LRScheduler):
                raise ArgumentTypeError(
                    f"invalid schedulers[{i}] = {_validate.show(s)}: must be a flatopt "
                    f"schedule, got {type(s).__name__}"
                )
            if isinstance(s, (ReduceLROnPlateau, _Composite)):
                raise UnsupportedError(
                    f"invalid schedulers[{i}]: a {type(s).__name__} cannot be part of a "
                    f"{type(self).__name__} (a plateau schedule moves by metrics; nest the "
                    "schedules it holds instead)"
                )
            if s._bound() is not None:
                raise InvalidArgumentError(
                    f"invalid schedulers[{i}]: this {type(s).__name__} already drives an "
                    "optimizer"
                )
            if id(s) in seen:
                raise InvalidArgumentError(
                    f"invalid schedulers[{i}]: the same schedule object is listed twice"
                )
            seen.add(id(s))
        self.schedulers = items
        self.base_lr = items[0].base_lr
        self._group_lrs = None
        self.per_update = False
        self._epoch = 0
        self._driven = None  # weakref to the optimizer whose group learning rates this sets

    def _struct(self):
        raise UnsupportedError(
            f"a {type(self).__name__} is not a library schedule: give it to an optimizer as "
            "its lr (it then sets the groups' learning rates), or use it on its own"
        )

    def _attach_driver(self, optimizer):
        """Binds this schedule to the optimizer whose groups' learning rates it sets after
        every move (one optimizer per schedule object)."""
        owner = self._driven() if self._driven is not None else None
        if owner is not None and owner is not optimizer:
            raise InvalidArgumentError(
                f"this {type(self).__name__} already drives another optimizer "
                f"({type(owner).__name__}); create one schedule object per optimizer"
            )
        self._driven = weakref.ref(optimizer)

    def _push(self):
        """Hands the learning rate at the new position to the optimizer it drives."""
        owner = self._driven() if self._driven is not None else None
        if owner is not None:
            owner._drive(self.get_lr()[0])

    def _bound(self):
        return None

    @property
    def current_lr(self):
        """The combined learning rate at the current position (see the class)."""
        return self.get_lr()[0]

    @property
    def last_epoch(self):
        """This schedule's own counter (an int, also ``.value``)."""
        return _Epoch(self._epoch, self)

    @last_epoch.setter
    def last_epoch(self, epoch):
        self._move(_uint("last_epoch", epoch))
        self._push()

    def step(self, epoch=None):
        """Advances by one, or to ``epoch`` (as assigning ``last_epoch``); an optimizer it
        drives uses the new learning rate from its next update on."""
        self._move(self._epoch + 1 if epoch is None else _uint("epoch", epoch))
        self._push()

    def _check_state(self, state, context):
        """The sub-schedules' checked states and this one's counter; changes nothing."""
        if not isinstance(state, dict):
            raise CheckpointError(
                f"{context}: the schedule state must be a dict, got {type(state).__name__}"
            )
        for key in ("last_epoch", "schedulers"):
            if key not in state:
                raise CheckpointError(f"{context}: the schedule state has no {key!r}")
        subs = state["schedulers"]
        if not isinstance(subs, (list, tuple)) or len(subs) != len(self.schedulers):
            raise CheckpointError(
                f"{context}: 'schedulers' must be a list of {len(self.schedulers)} schedule "
                f"states, got {_validate.show(subs)}"
            )
        try:
            epoch = _uint("last_epoch", state["last_epoch"])
        except InvalidArgumentError as e:
            raise CheckpointError(f"{context}: {e}") from None
        checked = [s._check_state(d, f"{context}: schedulers[{i}]")
                   for i, (s, d) in enumerate(zip(self.schedulers, subs))]
        return epoch, checked

    def state_dict(self):
        """``{'last_epoch': n, 'schedulers': [each schedule's state_dict()]}`` (braintools'
        keys)."""
        return {
            "type": type(self).__name__,
            "last_epoch": self._epoch,
            "schedulers": [s.state_dict() for s in self.schedulers],
        }

    def load_state_dict(self, state):
        """Restores :meth:`state_dict`; every entry is checked first (nothing changes on a
        :class:`flatopt.CheckpointError`)."""
        epoch, checked = self._check_state(state, "load_state_dict")
        for s, c in zip(self.schedulers, checked):
            s._apply_state(c)
            s._shadow, old = None, s._shadow
            s._shadow_handle()  # a fresh handle at the restored position
            if old is not None:
                old.free()
        self._epoch = epoch
        self._push()

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_driven"] = None  # the copy is unbound
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._driven = None

    def __repr__(self):
        subs = ", ".join(type(s).__name__ for s in self.schedulers)
        return f"{type(self).__name__}([{subs}], last_epoch={self._epoch})"


class ChainedScheduler(_Composite):
    """braintools' ``ChainedScheduler(schedulers)``: every ``step()`` steps all of them; the
    learning rate is the first one's ``base_lr`` times each schedule's factor
    ``current_lr / base_lr`` (0 for a schedule whose ``base_lr`` is 0), multiplied in f64 in
    list order (each ``current_lr`` being the float32 value the library computes).

    It has its own ``last_epoch`` and keeps the schedules' counters in step.

    Given to an optimizer as its ``lr``, it sets the learning rate of every parameter group
    after each ``step()`` (a group with its own ``lr`` gets ``value * lr / base_lr``): the
    optimizer's next update uses it. The library runs one schedule per optimizer, so the
    value is computed here and handed over as the groups' rates (read back exactly by
    ``current_lr``; applied rounded to float32). One optimizer per schedule object."""

    def __init__(self, schedulers):
        super().__init__(schedulers, "ChainedScheduler")
        self._starts = [int(s.last_epoch) for s in self.schedulers]

    def _move(self, epoch):
        # Every schedule moves with this one (braintools steps them all together): each is
        # at its starting position plus this one's counter.
        for s, start in zip(self.schedulers, self._starts):
            s.last_epoch = min(start + epoch, _validate.U64_MAX)
        self._epoch = epoch

    def get_lr(self):
        lr = self.base_lr
        for s in self.schedulers:
            lr *= s.current_lr / s.base_lr if s.base_lr != 0 else 0.0
        return [lr]


class SequentialLR(_Composite):
    """PyTorch / braintools ``SequentialLR(schedulers, milestones, last_epoch=0)``: schedule
    ``i`` is active from ``milestones[i - 1]`` (from 0 for the first) until the next
    milestone, and restarts its count there: at epoch ``e`` the learning rate is
    ``schedulers[i]`` at position ``e - milestones[i - 1]``. ``milestones``: increasing, one
    fewer than ``schedulers``.

    Given to an optimizer as its ``lr``, it sets the learning rate of every parameter group
    after each ``step()`` (a group with its own ``lr`` gets ``value * lr / base_lr``): the
    optimizer's next update uses it. The library runs one schedule per optimizer, so the
    value is computed here and handed over as the groups' rates (read back exactly by
    ``current_lr``; applied rounded to float32). One optimizer per schedule object."""

    def __init__(self, schedulers, milestones, last_epoch=0):
        super().__init__(schedulers, "SequentialLR")
        milestones = _uints("milestones", milestones)
        if len(milestones) != len(self.schedulers) - 1:
            raise InvalidArgumentError(
                f"invalid milestones = {_validate.show(milestones)}: {len(self.schedulers)} "
                f"schedulers need {len(self.schedulers) - 1} milestones"
            )
        for i in range(1, len(milestones)):
            if milestones[i] <= milestones[i - 1]:
                raise InvalidArgumentError(
                    f"invalid milestones = {_validate.show(milestones)}: must be increasing"
                )
        self.milestones = milestones
        self._move(_uint("last_epoch", last_epoch))

    @property
    def current_scheduler_idx(self):
        """The index of the active schedule (the number of milestones <= ``last_epoch``)."""
        return sum(1 for m in self.milestones if m <= self._epoch)

    def _move(self, epoch):
        self._epoch = epoch
        i = self.current_scheduler_idx
        self.schedulers[i].last_epoch = epoch - (self.milestones[i - 1] if i else 0)

    def get_lr(self):
        return self.schedulers[self.current_scheduler_idx].get_lr()

    def state_dict(self):
        """braintools' keys: ``schedulers``, ``milestones``, ``last_epoch``,
        ``current_scheduler_idx``."""
        out = super().state_dict()
        out["milestones"] = list(self.milestones)
        out["current_scheduler_idx"] = self.current_scheduler_idx
        return out

    def _check_state(self, state, context):
        out = super()._check_state(state, context)
        if list(state.get("milestones", self.milestones)) != self.milestones:
            raise CheckpointError(
                f"{context}: the state was saved with milestones "
                f"{_validate.show(state['milestones'])}, this SequentialLR has "
                f"{self.milestones}"
            )
        return out
