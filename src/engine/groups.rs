//! Parameter groups: per-group learning rate, weight decay and base-rule hyperparameters.

use super::state::alloc_error;
use super::{Optimizer, IDLE_PLAN};
use crate::catalog::{check_f64, Domain};
use crate::config::{Base, Config};
use crate::error::Error;

/// The most parameter groups one optimizer holds.
pub const MAX_GROUPS: usize = 1 << 16;

/// What a new parameter group sets (see [`Optimizer::add_group`]); `None` inherits the
/// optimizer's value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GroupOptions {
    /// The group's learning rate: under a schedule the group follows
    /// `lr * schedule(t) / base_lr`. `None`: the optimizer's schedule itself.
    pub lr: Option<f64>,
    /// The group's weight decay as the base rule defines it: the rule's own decoupled decay
    /// if it has one (AdamW's and Lion's `weight_decay`), else the coupled `Config::weight_decay`. 0
    /// turns it off for the group. `None`: the optimizer's (or `base`'s).
    pub weight_decay: Option<f64>,
    /// The group's base-rule hyperparameters (betas, eps, momentum, ...): a rule of the same
    /// kind as the optimizer's. `None`: the optimizer's.
    pub base: Option<Base>,
}

/// The live hyperparameters of one parameter group. Group 0 starts as the optimizer's own
/// configuration; every registered buffer belongs to one group.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// Own learning rate, `None` to follow the optimizer's schedule.
    pub(super) lr: Option<f64>,
    /// Coupled weight decay (`g += wd * p`), 0 for none.
    pub(super) coupled_weight_decay: f64,
    /// The base rule with the group's hyperparameters.
    pub(super) base: Base,
}

impl Group {
    /// The group of an optimizer's own configuration (group 0 at creation).
    pub(super) fn of(cfg: &Config) -> Group {
        Group {
            lr: None,
            coupled_weight_decay: cfg.weight_decay,
            base: cfg.base,
        }
    }

    /// A group from its parts, validated against `cfg` (the optimizer's configuration):
    /// `base` of `cfg`'s kind, every value in its domain.
    pub fn new(
        cfg: &Config,
        lr: Option<f64>,
        coupled_weight_decay: f64,
        base: Base,
    ) -> Result<Group, Error> {
        if base.kind() != cfg.base.kind() {
            return Err(Error::invalid(
                "base",
                base.name(),
                "a parameter group's base rule must be of the optimizer's kind",
            ));
        }
        base.validate()?;
        check_f64("weight_decay", coupled_weight_decay, Domain::NonNeg, true)?;
        let g = Group {
            lr: None,
            coupled_weight_decay,
            base,
        };
        g.with_lr(cfg.lr.base_lr(), lr)
    }

    /// This group with its learning rate set to `lr`, validated against the schedule's base
    /// learning rate `base_lr`. Allocates nothing.
    pub(super) fn with_lr(mut self, base_lr: f64, lr: Option<f64>) -> Result<Group, Error> {
        if let Some(x) = lr {
            check_f64("lr", x, Domain::NonNeg, true)?;
            if base_lr == 0.0 && x != 0.0 {
                return Err(Error::invalid(
                    "lr",
                    x,
                    "a parameter group's own learning rate needs a base learning rate > 0 \
                     (the group follows lr * schedule(t) / base_lr)",
                ));
            }
        }
        self.lr = lr;
        Ok(self)
    }

    /// This group with its weight decay (as the base rule defines it) set to `wd`, validated.
    pub(super) fn with_weight_decay(mut self, wd: f64) -> Result<Group, Error> {
        check_f64("weight_decay", wd, Domain::NonNeg, true)?;
        match self.base.with_decoupled_weight_decay(wd) {
            Some(base) => self.base = base,
            None => self.coupled_weight_decay = wd,
        }
        Ok(self)
    }

    /// The group's own learning rate, `None` if it follows the optimizer's schedule.
    pub fn lr(&self) -> Option<f64> {
        self.lr
    }
    /// The group's weight decay as the base rule defines it (see [`GroupOptions`]).
    pub fn weight_decay(&self) -> f64 {
        self.base
            .decoupled_weight_decay()
            .unwrap_or(self.coupled_weight_decay)
    }
    /// The coupled weight decay (`g += wd * p`) of the group (for a rule with its own decay,
    /// the configuration's, which applies besides it).
    pub fn coupled_weight_decay(&self) -> f64 {
        self.coupled_weight_decay
    }
    /// The base rule with the group's hyperparameters.
    pub fn base(&self) -> &Base {
        &self.base
    }

    /// The learning rate of the group when the schedule gives `sched` and its base learning
    /// rate is `base_lr`: the schedule's value itself without an own rate (or with one equal
    /// to `base_lr`), else `lr * (sched / base_lr)`.
    pub fn lr_at(&self, sched: f64, base_lr: f64) -> f64 {
        match self.lr {
            Some(x) if x != base_lr => x * (sched / base_lr),
            _ => sched,
        }
    }
}

impl Optimizer {
    /// Refuses a group index that is not one of this optimizer's groups.
    pub(super) fn check_group(&self, group: usize) -> Result<(), Error> {
        if group >= self.groups.len() {
            return Err(Error::invalid(
                "group",
                format!("{group} (this optimizer has {} groups)", self.groups.len()),
                "must be a parameter group of this optimizer (0 or an index from add_group)",
            ));
        }
        Ok(())
    }

    /// Adds a parameter group and returns its index (1, 2, ...; group 0 is the optimizer's own
    /// configuration). What `opts` leaves `None` is the optimizer's. Validated (the base rule
    /// of the optimizer's kind, every value in its domain as for the configuration; an own
    /// learning rate needs a base learning rate > 0, since the group follows
    /// `lr * schedule(t) / base_lr`). Buffers join it with [`Optimizer::add_buffer_to_group`]
    /// or [`Optimizer::register_in_groups`]. Allowed at any time but while a split update is
    /// partly applied; allocates (the group's plan storage), so that updates do not.
    pub fn add_group(&mut self, opts: GroupOptions) -> Result<usize, Error> {
        self.refuse_partly_applied()?;
        if self.groups.len() >= MAX_GROUPS {
            return Err(Error::invalid(
                "group",
                format!("{} groups", self.groups.len()),
                "an optimizer holds at most 65536 parameter groups",
            ));
        }
        let mut group = Group::new(
            &self.cfg,
            opts.lr,
            self.cfg.weight_decay,
            opts.base.unwrap_or(self.cfg.base),
        )?;
        if let Some(wd) = opts.weight_decay {
            group = group.with_weight_decay(wd)?;
        }
        let n = self.groups.len() + 1;
        let more = |_| alloc_error(n);
        self.groups.try_reserve(1).map_err(more)?;
        self.plans.try_reserve(1).map_err(more)?;
        self.next_plans.try_reserve(1).map_err(more)?;
        self.groups.push(group);
        self.plans.push(IDLE_PLAN);
        self.next_plans.push(IDLE_PLAN);
        Ok(self.groups.len() - 1)
    }

    /// The parameter groups (group 0 first).
    pub fn groups(&self) -> &[Group] {
        &self.groups
    }
    /// The number of parameter groups (at least 1).
    pub fn num_groups(&self) -> usize {
        self.groups.len()
    }
    /// The parameter group of each registered buffer, in registration order.
    pub fn buffer_groups(&self) -> &[usize] {
        &self.group_of
    }

    /// Changes group `group`'s learning rate (`None`: follow the optimizer's schedule); the
    /// next update uses it. Validated like [`Optimizer::add_group`]; no allocation. Refused
    /// while a split update is partly applied; a begun one with nothing applied is dropped
    /// (begin it again).
    pub fn set_group_lr(&mut self, group: usize, lr: Option<f64>) -> Result<(), Error> {
        self.check_group(group)?;
        self.refuse_partly_applied()?;
        let g = self.groups[group].clone().with_lr(self.base_lr, lr)?;
        self.coverage.abandon();
        self.groups[group] = g;
        Ok(())
    }

    /// Changes group `group`'s weight decay as the base rule defines it (see
    /// [`GroupOptions::weight_decay`]); like [`Optimizer::set_group_lr`] otherwise.
    pub fn set_group_weight_decay(&mut self, group: usize, wd: f64) -> Result<(), Error> {
        self.check_group(group)?;
        self.refuse_partly_applied()?;
        let g = self.groups[group].clone().with_weight_decay(wd)?;
        self.coverage.abandon();
        self.groups[group] = g;
        Ok(())
    }

    /// Replaces group `group`'s base-rule hyperparameters (betas, eps, momentum, ...; and a
    /// rule's own decoupled weight decay, which lives there) with `base`, as a scheduler that
    /// cycles the momentum needs; the next update uses them. `base` must be of the optimizer's
    /// kind and keep the state buffers the group's rule has (they exist from registration on:
    /// turning AMSGrad, momentum or centering on or off is refused), its values are validated
    /// as [`Optimizer::add_group`]'s; like [`Optimizer::set_group_lr`] otherwise.
    pub fn set_group_base(&mut self, group: usize, base: Base) -> Result<(), Error> {
        self.check_group(group)?;
        self.refuse_partly_applied()?;
        let old = &self.groups[group];
        let g = Group::new(&self.cfg, old.lr, old.coupled_weight_decay, base)?;
        if base.state_used() != old.base.state_used() {
            let show = |(m, v, v_max): (bool, bool, bool)| format!("m {m}, v {v}, v_max {v_max}");
            return Err(Error::invalid(
                "base",
                format!(
                    "state buffers ({}) where group {group} has ({})",
                    show(base.state_used()),
                    show(old.base.state_used())
                ),
                "the state buffers the group's buffers were registered with (AMSGrad, \
                 momentum or centering cannot be turned on or off)",
            ));
        }
        self.coverage.abandon();
        self.groups[group] = g;
        Ok(())
    }

    /// The learning rate group `group` will use in the next update (rounded to f32, as the
    /// kernels use it), `None` if there is no such group.
    pub fn group_current_lr(&self, group: usize) -> Option<f32> {
        self.group_current_lr_exact(group).map(|lr| lr as f32)
    }

    /// [`Optimizer::group_current_lr`] before its rounding to f32: the rate as the schedule
    /// and the group's ratio compute it in f64 (what braintools and PyTorch report).
    pub fn group_current_lr_exact(&self, group: usize) -> Option<f64> {
        let sched = self.schedule.lr(&self.cfg.lr);
        self.groups.get(group).map(|g| g.lr_at(sched, self.base_lr))
    }

    /// Replaces every group's hyperparameters (checkpoint loading; validated by the caller:
    /// as many groups as this optimizer's, each of its kind).
    pub(crate) fn restore_groups(&mut self, groups: Vec<Group>) {
        debug_assert_eq!(groups.len(), self.groups.len());
        self.groups = groups;
    }

    /// Whether the only group is the configuration unchanged (checkpoints of such an
    /// optimizer are of format version 1).
    pub(crate) fn groups_are_config(&self) -> bool {
        self.groups.len() == 1 && self.groups[0] == Group::of(&self.cfg)
    }

    /// The groups of a version-1 checkpoint: the configuration's one.
    pub(crate) fn config_group(&self) -> Vec<Group> {
        vec![Group::of(&self.cfg)]
    }
}
