//! The optimizer engine: configuration, registered buffers, state, counters and threads.
//!
//! The host owns parameters and gradients and passes them to every [`Optimizer::step`]; the
//! optimizer owns the state it needs (moments, momentum, AMSGrad maximum, slow weights), sized
//! once at registration. After registration an update on the caller's thread (the default, one
//! thread) allocates nothing; with a private pool, rayon's job queue may allocate now and then.
//!
//! One update (docs/numerics.md, "Pipeline"): validate every input, run the sum-of-squares pass if
//! clipping by norm or checking for non-finite values, build the [`Plan`] of per-step scalars in
//! f64, run one fused pass per buffer, advance counters. Hosts with their own threads split the
//! middle step themselves: [`Optimizer::begin_step`], then [`Step::apply`] on disjoint element
//! ranges from any threads, then [`Optimizer::end_step`].
//!
//! Every entry point that computes runs in flatopt's floating-point mode whatever the host's
//! ([`FpMode`]: set on the caller's thread for the call, on the pool's workers for good).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::config::{Config, NonFinitePolicy, ScheduleMode};
use crate::error::Error;
use crate::kernels::{
    self, AsGrad, GradScale, HeldRounding, ParamCopy, Plan, Q8Code, Rule, StateDtype,
};
use crate::scaler::LossScaler;
use crate::schedule::ScheduleState;
use crate::simd::{self, FpMode, Tier};

mod coverage;
mod deprecated;
mod groups;
mod pass;
mod pool;
mod state;
mod step;

pub(crate) use coverage::Coverage;
pub use groups::{Group, GroupOptions, MAX_GROUPS};
use pass::{
    grads_finite, in_group, par_apply, par_partials, scan_suffices, seq_apply, seq_partials, Pass,
    Plans,
};
use pool::Pool;
pub(crate) use state::Store;
use state::{alloc_error, filled, BufState};
pub use state::{RawState, StateMut, PLACED_MIN_LEN};
pub use step::Step;

/// Below this many elements in total an update stays on the caller's thread even with a pool:
/// waking workers costs more than it saves. Measured with `cargo bench --bench threshold` on the
/// 2-vCPU development machines (full pipeline, 1 vs 2 threads, interleaved medians): 2 threads
/// were no faster up to 256K elements (0.94..1.14x the time), break-even at 512K, and 0.65x the
/// time from 1M to 16M elements.
pub const PARALLEL_MIN_ELEMENTS: usize = 1 << 19;
/// Elements per task of the threaded fused pass (a multiple of the sum-of-squares block).
const PARALLEL_GRAIN: usize = 1 << 15;

/// What an update did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    /// The update was applied; `step` is its 1-based number, `synced` whether Lookahead synced.
    Applied {
        /// The update's number, from 1.
        step: u64,
        /// Whether this update ended with a Lookahead sync (parameters set to the slow weights).
        synced: bool,
    },
    /// A gradient held a non-finite value (the first one, by buffer and index, after any
    /// gradient scale is divided out: a finite value that the division overflows counts) and
    /// the policy is `Skip`: nothing changed except the skipped-updates counter. `buffer` and `index` are
    /// `usize::MAX` when the non-finite sum of squares was supplied by the caller
    /// ([`Optimizer::step_with_sum_squares`]) and this process's gradients are finite.
    Skipped {
        /// The buffer, by registration order.
        buffer: usize,
        /// The element within the buffer.
        index: usize,
        /// The value found there.
        value: f32,
    },
}

/// Source of [`Optimizer`] ids (a [`Step`] names the optimizer that began it).
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A plan that no step uses: the filler of the per-group plan storage.
const IDLE_PLAN: Plan = Plan {
    clip_scale: None,
    clip_value: None,
    weight_decay: None,
    rule: Rule::Sgd { lr: 0.0 },
    sync_alpha: None,
};

/// An optimizer over host-owned flat f32 buffers. See the module docs.
#[derive(Debug)]
pub struct Optimizer {
    cfg: Config,
    tier: Tier,
    /// The schedule's base learning rate (see [`Schedule::base_lr`](crate::Schedule::base_lr)).
    base_lr: f64,
    /// Parameter groups; group 0 is the optimizer's own configuration.
    groups: Vec<Group>,
    /// The plan of each group in the begun (or last) update.
    plans: Vec<Plan>,
    /// Where the next update's plans are built (swapped with `plans` once all are valid, so
    /// that a refused update leaves a pending one's plans alone).
    next_plans: Vec<Plan>,
    /// The group of each registered buffer.
    group_of: Vec<usize>,
    lens: Vec<usize>,
    /// Where each buffer starts in the concatenation of the registered buffers.
    starts: Vec<usize>,
    /// Registered elements in all.
    total: usize,
    state: Vec<BufState>,
    /// The elements applied in a begun split update.
    coverage: Coverage,
    /// Whether the state is as registration leaves it (moments zero): true after `register`
    /// and `reset`, false once an update may have changed it or a checkpoint was loaded.
    fresh: bool,
    /// Applied updates.
    step: u64,
    /// Skipped updates (non-finite gradients).
    skipped: u64,
    schedule: ScheduleState,
    pool: Option<Pool>,
    /// The dynamic loss scaler, if set ([`Optimizer::set_loss_scaler`]).
    scaler: Option<LossScaler>,
}

impl Optimizer {
    /// Validates `cfg` and makes an optimizer with no buffers registered yet.
    pub fn new(cfg: Config) -> Result<Optimizer, Error> {
        cfg.validate()?;
        if matches!(cfg.base, crate::config::Base::Adafactor { .. }) {
            for (field, dtype) in [
                ("state_dtype", cfg.state_dtype),
                ("slow_dtype", cfg.slow_dtype),
            ] {
                if dtype != StateDtype::F32 {
                    return Err(Error::invalid(
                        field,
                        format!("{} (base rule {})", dtype.name(), cfg.base.name()),
                        "must be float32 for Adafactor: its passes compute per-buffer \
                         reductions from the f32 state and step the slow weights in place",
                    ));
                }
            }
        }
        if cfg.state_dtype == StateDtype::Int8 && q8_codes(&cfg.base).is_none() {
            return Err(Error::invalid(
                "state_dtype",
                format!("int8 (base rule {})", cfg.base.name()),
                "must be float32 or bfloat16 for Rprop: its step sizes and previous gradients \
                 are meaningless relative to a block's largest value",
            ));
        }
        let tier = match cfg.tier {
            Some(t) => t,
            None => simd::default_tier(),
        };
        let pool = if cfg.num_threads > 1 {
            Some(Pool::new(cfg.num_threads)?)
        } else {
            None
        };
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        Ok(Optimizer {
            schedule: ScheduleState::new(&cfg.lr),
            base_lr: cfg.lr.base_lr(),
            groups: vec![Group::of(&cfg)],
            plans: vec![IDLE_PLAN],
            next_plans: vec![IDLE_PLAN],
            group_of: Vec::new(),
            cfg,
            tier,
            lens: Vec::new(),
            starts: Vec::new(),
            total: 0,
            state: Vec::new(),
            coverage: Coverage::new(id, 0)?,
            fresh: true,
            step: 0,
            skipped: 0,
            pool,
            scaler: None,
        })
    }

    /// Registers the parameter buffers (their current values become the slow weights) and
    /// sizes the state. Replaces any earlier registration (and ends a begun split update) and
    /// resets counters and schedule. Time and memory are linear in the number of buffers and
    /// elements: state buffers of at least [`PLACED_MIN_LEN`] elements take up to a page more
    /// for their placement (see `STATE_PLACEMENT`), shorter ones take their length.
    ///
    /// Every buffer goes into parameter group 0 ([`Optimizer::register_in_groups`] places
    /// them in other groups); the groups themselves are kept.
    pub fn register(&mut self, params: &[&[f32]]) -> Result<(), Error> {
        self.register_with(params, |_| 0, |_| None)
    }

    /// [`Optimizer::register`] with an optional 2-D shape per buffer (`shapes` has one entry
    /// per buffer): with Adafactor, a buffer with a shape `(rows, cols)` keeps factored second
    /// moments (`rows + cols` averages per `rows x cols` row-major matrix; the buffer is
    /// `len / (rows * cols)` of them), one without keeps them elementwise. The other rules
    /// ignore shapes. A shape whose `rows * cols` does not divide the buffer's length is
    /// refused.
    pub fn register_shaped(
        &mut self,
        params: &[&[f32]],
        shapes: &[Option<(usize, usize)>],
    ) -> Result<(), Error> {
        if shapes.len() != params.len() {
            return Err(Error::LengthMismatch {
                what: "shapes (one per buffer)".to_string(),
                expected: params.len(),
                got: shapes.len(),
            });
        }
        self.register_with(params, |_| 0, |i| shapes[i])
    }

    /// [`Optimizer::register`] with buffer `i` in parameter group `groups[i]` (from
    /// [`Optimizer::add_group`]; 0 is the optimizer's own). `groups` has one entry per buffer.
    pub fn register_in_groups(&mut self, params: &[&[f32]], groups: &[usize]) -> Result<(), Error> {
        if groups.len() != params.len() {
            return Err(Error::LengthMismatch {
                what: "groups (one per buffer)".to_string(),
                expected: params.len(),
                got: groups.len(),
            });
        }
        for &g in groups {
            self.check_group(g)?;
        }
        self.register_with(params, |i| groups[i], |_| None)
    }

    fn register_with(
        &mut self,
        params: &[&[f32]],
        group: impl Fn(usize) -> usize,
        shape: impl Fn(usize) -> Option<(usize, usize)>,
    ) -> Result<(), Error> {
        if params.is_empty() {
            return Err(Error::invalid(
                "params",
                "an empty list",
                "register at least one buffer",
            ));
        }
        let mut state = Vec::with_capacity(params.len());
        let mut at = 0;
        for (i, p) in params.iter().enumerate() {
            let mut st = self.buf_state(p, group(i), shape(i))?;
            st.start = at;
            at += p.len();
            state.push(st);
        }
        let total = params.iter().map(|p| p.len()).sum();
        let coverage = Coverage::new(self.coverage.owner, total)?;
        self.group_of = (0..params.len()).map(group).collect();
        self.lens = params.iter().map(|p| p.len()).collect();
        self.starts = self
            .lens
            .iter()
            .scan(0, |at, &n| {
                let start = *at;
                *at += n;
                Some(start)
            })
            .collect();
        self.total = total;
        self.state = state;
        self.coverage = coverage;
        self.fresh = true;
        self.reset_counters();
        Ok(())
    }

    /// Registers one more buffer after those registered so far: the same as [`register`] with
    /// the longer list, in time and memory for the new buffer only (for hosts that register
    /// buffers one by one, such as the C ABI's `flatopt_optimizer_add_param`). Its current
    /// values become its slow weights. Allowed before the first update and after
    /// [`Optimizer::reset`]; resets counters and schedule like `register`.
    ///
    /// [`register`]: Optimizer::register
    pub fn add_buffer(&mut self, param: &[f32]) -> Result<(), Error> {
        self.add_buffer_to_group(param, 0)
    }

    /// [`Optimizer::add_buffer`] into parameter group `group` (from [`Optimizer::add_group`];
    /// 0 is the optimizer's own).
    pub fn add_buffer_to_group(&mut self, param: &[f32], group: usize) -> Result<(), Error> {
        self.add_buffer_shaped(param, group, None)
    }

    /// [`Optimizer::add_buffer_to_group`] with an optional 2-D shape `(rows, cols)` (see
    /// [`Optimizer::register_shaped`]).
    pub fn add_buffer_shaped(
        &mut self,
        param: &[f32],
        group: usize,
        shape: Option<(usize, usize)>,
    ) -> Result<(), Error> {
        self.check_group(group)?;
        if self.step > 0 || self.coverage.pending != 0 {
            return Err(Error::InvalidState(
                "adding a buffer after the first update (reset first, or register anew)",
            ));
        }
        let total = self
            .total
            .checked_add(param.len())
            .ok_or_else(|| Error::invalid("param", param.len(), "too many elements in all"))?;
        let st = self.buf_state(param, group, shape)?;
        self.coverage.grow(total)?;
        self.group_of
            .try_reserve(1)
            .map_err(|_| alloc_error(total))?;
        self.lens.try_reserve(1).map_err(|_| alloc_error(total))?;
        self.starts.try_reserve(1).map_err(|_| alloc_error(total))?;
        self.state.try_reserve(1).map_err(|_| alloc_error(total))?;
        if !self.fresh {
            // A loaded checkpoint at step 0 may hold moments: registration zeroes them.
            for (st, &g) in self.state.iter_mut().zip(&self.group_of) {
                st.fill_init(&self.groups[g].base);
            }
            self.fresh = true;
        }
        self.group_of.push(group);
        self.lens.push(param.len());
        self.starts.push(self.total);
        self.state.push(st);
        self.total = total;
        self.reset_counters();
        Ok(())
    }

    /// The initial state of one buffer registered with the values of `p`: moments at the
    /// rule's initial values (zero but for Adagrad's and RMSprop's initial accumulator).
    fn buf_state(
        &self,
        p: &[f32],
        group: usize,
        shape: Option<(usize, usize)>,
    ) -> Result<BufState, Error> {
        let base = &self.groups[group].base;
        let shape = match shape {
            Some((rows, cols)) => {
                let s = kernels::Shape { rows, cols };
                s.check(p.len())?;
                matches!(base, crate::config::Base::Adafactor { .. }).then_some(s)
            }
            None => None,
        };
        let v_len = shape.map_or(p.len(), |s| s.state_len(p.len()));
        let (m, v, v_max) = base.state_used();
        let [m0, v0, v_max0] = base.state_init();
        let [cm, cv, cx] = q8_codes(base).unwrap_or([Q8Code::Signed; 3]);
        let lookahead = self.cfg.lookahead.is_some();
        let dtype = self.cfg.state_dtype;
        let sized = |used: bool, code, x: f32| {
            Store::filled(dtype, code, if used { p.len() } else { 0 }, x, p.as_ptr())
        };
        let v_store = Store::filled(dtype, cv, if v { v_len } else { 0 }, v0, p.as_ptr())?;
        let n = if lookahead { p.len() } else { 0 };
        let mut slow = Store::filled(self.cfg.slow_dtype, Q8Code::Signed, n, 0.0, p.as_ptr())?;
        slow.copy_from(self.tier, &p[..n]);
        Ok(BufState {
            m: sized(m, cm, m0)?,
            v: v_store,
            v_max: sized(v_max, cx, v_max0)?,
            slow,
            start: self.total,
            partials: {
                let blocks = kernels::sumsq_block_count(p.len());
                filled(blocks, 0.0f64, blocks)?
            },
            norm_sums: {
                let blocks = kernels::sumsq_block_count(p.len());
                let n = if per_buffer_norms(base) {
                    2 * blocks
                } else {
                    0
                };
                filled(n, 0.0f64, n)?
            },
            shape,
            colsum: {
                let c = shape.map_or(0, |s| 2 * s.cols);
                filled(c, 0.0f64, c)?
            },
            rowf: {
                let r = shape.map_or(0, |s| p.len() / s.cols);
                filled(r, 0.0f32, r)?
            },
            colf: {
                let c = shape.map_or(0, |s| p.len() / s.rows);
                filled(c, 0.0f32, c)?
            },
            fsums: {
                let c = shape.map_or(0, |s| s.block_sums_len(p.len()));
                filled(c, 0.0f64, c)?
            },
            vcopy: {
                let c = shape.map_or(0, |s| p.len() / s.rows);
                filled(c, 0.0f32, c)?
            },
        })
    }

    /// The shape buffer `i` was registered with, if its rule keeps factored second moments
    /// (Adafactor); `None` otherwise.
    pub fn buffer_shape(&self, i: usize) -> Option<(usize, usize)> {
        self.state
            .get(i)
            .and_then(|s| s.shape)
            .map(|s| (s.rows, s.cols))
    }

    /// Back to the state right after registration: moments at their initial values (zero but
    /// for Adagrad's and RMSprop's initial accumulator), slow weights copied from
    /// `params`, counters and schedule reset, a begun split update ended. No allocation.
    pub fn reset(&mut self, params: &[&[f32]]) -> Result<(), Error> {
        self.check_lengths("param", params.iter().map(|p| p.len()), params.len())?;
        for ((st, p), &g) in self.state.iter_mut().zip(params).zip(&self.group_of) {
            st.fill_init(&self.groups[g].base);
            if !st.slow.is_empty() {
                st.slow.copy_from(self.tier, p);
            }
        }
        self.fresh = true;
        self.reset_counters();
        Ok(())
    }

    /// Sets counters and schedule state (checkpoint loading; validated by the caller).
    pub(crate) fn restore_counters(&mut self, step: u64, skipped: u64, schedule: ScheduleState) {
        self.step = step;
        self.skipped = skipped;
        self.schedule = schedule;
        self.fresh = false;
        self.coverage.abandon();
    }

    fn reset_counters(&mut self) {
        self.coverage.abandon();
        self.step = 0;
        self.skipped = 0;
        self.schedule = ScheduleState::new(&self.cfg.lr);
    }

    /// One full update of every registered buffer, in place. `params[i]` and `grads[i]` must
    /// have the length registered for buffer `i`. On any error nothing has changed (with the
    /// `Error` policy for non-finite gradients, the skipped counter has gone up).
    ///
    /// With a dynamic loss scaler set, the gradients are divided by its scale (see
    /// [`Optimizer::step_mixed`]).
    pub fn step(&mut self, params: &mut [&mut [f32]], grads: &[&[f32]]) -> Result<Outcome, Error> {
        self.step_mixed(params, grads, &mut [], None)
    }

    /// One full update with gradients in any format ([`Grad`](crate::kernels::Grad): f32, bf16 or fp16, widened
    /// exactly in the pass), divided by a loss scale before the pipeline, writing a 16-bit copy
    /// of the new parameters in the same pass where `copies[i]` is `Some` (`copies` is empty
    /// for none, else one entry per buffer). The scale is `grad_scale` (finite, > 0) or, with
    /// `None`, the dynamic loss scaler's if one is set ([`Optimizer::set_loss_scaler`]; then
    /// `grad_scale` must be `None`), else 1. Bit for bit the f32 update of the widened,
    /// divided gradients followed by narrowing the parameters (`docs/numerics.md`, "16-bit
    /// floats"). With a scaler, a non-finite gradient skips the update whatever the non-finite
    /// policy (counted as skipped, nothing else changed) and the scaler records the outcome.
    /// On any error nothing has changed.
    pub fn step_mixed<G: AsGrad>(
        &mut self,
        params: &mut [&mut [f32]],
        grads: &[G],
        copies: &mut [Option<ParamCopy<'_>>],
        grad_scale: Option<f32>,
    ) -> Result<Outcome, Error> {
        self.step_checked(params, grads, copies, grad_scale, None, None)
    }

    /// [`Optimizer::step_mixed`] (`sum_squares` None) and
    /// [`Optimizer::step_with_sum_squares_mixed`]: the checks, one hand-over to the pool (waking
    /// workers is the main fixed cost), the loss scaler's record of the outcome.
    fn step_checked<G: AsGrad>(
        &mut self,
        params: &mut [&mut [f32]],
        grads: &[G],
        copies: &mut [Option<ParamCopy<'_>>],
        grad_scale: Option<f32>,
        sum: Option<f64>,
        norms: Option<&[f64]>,
    ) -> Result<Outcome, Error> {
        let _mode = FpMode::enter();
        if sum.is_some() && norms.is_none() {
            self.refuse_per_buffer_norms("step_with_sum_squares")?;
        }
        self.check_lengths("param", params.iter().map(|p| p.len()), params.len())?;
        if sum.is_some() {
            // (Without a sum, the norm pass checks them.)
            self.check_lengths("grad", grads.iter().map(|g| g.as_grad().len()), grads.len())?;
        }
        self.check_copies(copies)?;
        let unscale = self.unscale_for(grad_scale)?;
        self.refuse_partly_applied()?;
        let outcome = match self.active_pool() {
            Some(pool) => {
                pool.install(|| self.step_on(params, grads, copies, (unscale, sum, norms), true))
            }
            None => self.step_on(params, grads, copies, (unscale, sum, norms), false),
        }?;
        self.record_outcome(&outcome);
        Ok(outcome)
    }

    /// The loss scale of an update: `grad_scale` (finite, > 0; refused while a dynamic loss
    /// scaler is set), else the scaler's, else none.
    fn unscale_for(&self, grad_scale: Option<f32>) -> Result<GradScale, Error> {
        match (grad_scale, &self.scaler) {
            (Some(s), Some(_)) => Err(Error::invalid(
                "grad_scale",
                s,
                "must be none while a dynamic loss scaler is set (it supplies the scale)",
            )),
            (Some(s), None) => kernels::grad_scale(s),
            (None, Some(sc)) => kernels::grad_scale(sc.scale()),
            (None, None) => Ok(GradScale::One),
        }
    }

    /// Lets the dynamic loss scaler, if set, record an update's outcome.
    fn record_outcome(&mut self, outcome: &Outcome) {
        if let Some(sc) = &mut self.scaler {
            sc.update(matches!(outcome, Outcome::Skipped { .. }));
        }
    }

    /// Refuses copies that are neither none nor one per buffer of the registered lengths.
    fn check_copies(&self, copies: &[Option<ParamCopy<'_>>]) -> Result<(), Error> {
        if copies.is_empty() {
            return Ok(());
        }
        if copies.len() != self.lens.len() {
            return Err(Error::LengthMismatch {
                what: "copies (none, or one entry per registered buffer)".to_string(),
                expected: self.lens.len(),
                got: copies.len(),
            });
        }
        for (i, (c, &n)) in copies.iter().zip(&self.lens).enumerate() {
            if let Some(c) = c {
                if c.out.len() != n {
                    return Err(Error::LengthMismatch {
                        what: format!("{} copy of buffer {i}", c.half.name()),
                        expected: n,
                        got: c.out.len(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Sets (or, with `None`, removes) the dynamic loss scaler: each update then divides the
    /// gradients by its scale, skips on a non-finite gradient and lets it grow or back off
    /// (PyTorch `GradScaler`'s rules, [`LossScaler`]).
    pub fn set_loss_scaler(&mut self, scaler: Option<LossScaler>) {
        self.scaler = scaler;
    }

    /// The dynamic loss scaler, if set: its current scale and whether the last update found a
    /// non-finite gradient.
    pub fn loss_scaler(&self) -> Option<&LossScaler> {
        self.scaler.as_ref()
    }

    /// The non-finite policy in force: skip whenever a loss scaler is set.
    fn policy(&self) -> NonFinitePolicy {
        if self.scaler.is_some() {
            NonFinitePolicy::Skip
        } else {
            self.cfg.nonfinite
        }
    }

    /// [`Optimizer::step`] with the global sum of squares of the gradients supplied by the
    /// caller, for sharded training: each process owns a shard of the parameters, computes the
    /// block partials of its gradient shard ([`Optimizer::sum_squares_partials`]), the
    /// processes exchange them, and each adds all partials in global block order. When shards
    /// start on block boundaries that sum is bit-identical to a single process's, and so is the
    /// update. A non-finite `sum_squares` skips (or fails) the update on every shard alike.
    pub fn step_with_sum_squares(
        &mut self,
        params: &mut [&mut [f32]],
        grads: &[&[f32]],
        sum_squares: f64,
    ) -> Result<Outcome, Error> {
        self.step_with_sum_squares_mixed(params, grads, &mut [], sum_squares)
    }

    /// [`Optimizer::step_with_sum_squares`] with gradients in any format and 16-bit copies, as
    /// [`Optimizer::step_mixed`] takes them; the scale is the dynamic loss scaler's, if set
    /// (the partials of every shard must have been computed with the same scale:
    /// [`Optimizer::sum_squares_partials`] does), and a non-finite sum then skips the update
    /// and backs the scale off on every shard alike.
    pub fn step_with_sum_squares_mixed<G: AsGrad>(
        &mut self,
        params: &mut [&mut [f32]],
        grads: &[G],
        copies: &mut [Option<ParamCopy<'_>>],
        sum_squares: f64,
    ) -> Result<Outcome, Error> {
        self.step_checked(params, grads, copies, None, Some(sum_squares), None)
    }

    /// The number of values [`Optimizer::norm_partials_with_sum_squares`] writes: two per
    /// sum-of-squares block of every registered buffer.
    pub fn norm_partial_count(&self) -> usize {
        2 * self.sum_squares_block_count()
    }

    /// Sharded training with the rules with per-buffer norms (LAMB, LARS, NovoGrad), phase two
    /// of three (after the global sum of squares of the gradients, as for
    /// [`Optimizer::step_with_sum_squares`]): the pass before the update over this process's
    /// buffers with the scalars of the coming update (clipped with `sum_squares`), reading the
    /// state and writing nothing but `out`: two sums per sum-of-squares block of every buffer
    /// ([`Optimizer::norm_partial_count`] values: the sum of squares of the vector whose norm
    /// the rule needs, then the parameters'), in blocks of [`kernels::SUMSQ_BLOCK`] elements
    /// from each buffer's start. The processes exchange them; for each buffer, the two sums
    /// over all blocks of the whole buffer it is a shard of, added in global block order from
    /// 0.0 (even and odd values apart), go to [`Optimizer::step_with_sum_squares_and_norms`].
    /// Shards starting on block boundaries give the sums, and so the update, of one process.
    /// `params` are read only. With a non-finite `sum_squares` (the update will be skipped, or
    /// fail, unless the policy propagates) `out` is set to zeros.
    pub fn norm_partials_with_sum_squares<G: AsGrad>(
        &mut self,
        params: &mut [&mut [f32]],
        grads: &[G],
        sum_squares: f64,
        out: &mut [f64],
    ) -> Result<(), Error> {
        let _mode = FpMode::enter();
        self.require_per_buffer_norms("norm_partials_with_sum_squares")?;
        self.check_lengths("param", params.iter().map(|p| p.len()), params.len())?;
        self.check_lengths("grad", grads.iter().map(|g| g.as_grad().len()), grads.len())?;
        let want = self.norm_partial_count();
        if out.len() != want {
            return Err(Error::LengthMismatch {
                what: "norm partials (two per sum-of-squares block of every buffer)".to_string(),
                expected: want,
                got: out.len(),
            });
        }
        if sum_squares < 0.0 {
            return Err(Error::invalid(
                "sum_squares",
                sum_squares,
                "must be >= 0 (a sum of squares), or NaN/Inf for a non-finite gradient",
            ));
        }
        let unscale = self.unscale_for(None)?;
        self.refuse_partly_applied()?;
        if !sum_squares.is_finite() && self.policy() != NonFinitePolicy::Propagate {
            out.fill(0.0);
            return Ok(());
        }
        self.build_plans(Some(sum_squares))?;
        match self.active_pool() {
            Some(pool) => pool.install(|| self.norm_partials_on(params, grads, unscale, out, true)),
            None => self.norm_partials_on(params, grads, unscale, out, false),
        }
        Ok(())
    }

    /// The read-only pass before the update of every buffer with the plans just built.
    fn norm_partials_on<G: AsGrad>(
        &mut self,
        params: &mut [&mut [f32]],
        grads: &[G],
        unscale: GradScale,
        out: &mut [f64],
        parallel: bool,
    ) {
        let mut at = 0;
        for (i, (p, g)) in params.iter_mut().zip(grads).enumerate() {
            let n = 2 * kernels::sumsq_block_count(p.len());
            let sums = &mut out[at..at + n];
            at += n;
            let Some(pre) = kernels::pre_plan(&self.next_plans[self.group_of[i]]) else {
                sums.fill(0.0);
                continue;
            };
            let st = &mut self.state[i];
            let b = kernels::PreBuffers {
                param: p,
                grad: g.as_grad(),
                m: st.m.held(),
                v: st.v.held(),
            };
            if parallel {
                pass::par_pre(self.tier, &pre, unscale, b, sums, false);
            } else {
                kernels::pre_blocks(self.tier, &pre, unscale, b, sums, false);
            }
        }
    }

    /// Sharded training with the rules with per-buffer norms, phase three: the update of
    /// [`Optimizer::step_with_sum_squares_mixed`] with each buffer's norms from `norms` (two
    /// per registered buffer: the totals over the whole buffer of the two sums
    /// [`Optimizer::norm_partials_with_sum_squares`] writes per block, each >= 0 and finite)
    /// instead of its own pass before the update. Bit-identical to one process's update when
    /// the totals are added as that says.
    pub fn step_with_sum_squares_and_norms<G: AsGrad>(
        &mut self,
        params: &mut [&mut [f32]],
        grads: &[G],
        copies: &mut [Option<ParamCopy<'_>>],
        sum_squares: f64,
        norms: &[f64],
    ) -> Result<Outcome, Error> {
        self.require_per_buffer_norms("step_with_sum_squares_and_norms")?;
        if norms.len() != 2 * self.lens.len() {
            return Err(Error::LengthMismatch {
                what: "norms (two per registered buffer)".to_string(),
                expected: 2 * self.lens.len(),
                got: norms.len(),
            });
        }
        if let Some(i) = norms.iter().position(|x| !(x.is_finite() && *x >= 0.0)) {
            return Err(Error::invalid(
                "norms",
                format!("{} (value {i}: buffer {}, sum {})", norms[i], i / 2, i % 2),
                "must be finite and >= 0 (totals of sums of squares)",
            ));
        }
        self.step_checked(params, grads, copies, None, Some(sum_squares), Some(norms))
    }

    /// Refuses `what` unless the base rule has per-buffer norms.
    fn require_per_buffer_norms(&self, what: &'static str) -> Result<(), Error> {
        if matches!(self.cfg.base, crate::config::Base::Adafactor { .. }) {
            // Its reductions (row and column means, the update's and the parameters' RMS)
            // are not the two sums per block this exchange carries.
            return Err(Error::invalid(
                what,
                format!("base rule {}", self.cfg.base.name()),
                "is refused for Adafactor: sharded Adafactor is not supported (use the whole \
                 update in one process)",
            ));
        }
        if per_buffer_norms(&self.cfg.base) {
            return Ok(());
        }
        Err(Error::invalid(
            what,
            format!("base rule {}", self.cfg.base.name()),
            "is for LAMB, LARS and NovoGrad, the rules with per-buffer norms (the others need              only step_with_sum_squares)",
        ))
    }

    /// Writes the block partial sums of squares of `grads` (divided by the dynamic loss
    /// scaler's scale if one is set; buffer by buffer, blocks of [`kernels::SUMSQ_BLOCK`]
    /// elements) into `out`, which must hold [`Optimizer::sum_squares_block_count`] values.
    /// Adding them in order gives exactly the sum an update computes.
    pub fn sum_squares_partials(&self, grads: &[&[f32]], out: &mut [f64]) -> Result<(), Error> {
        self.sum_squares_partials_mixed(grads, out)
    }

    /// [`Optimizer::sum_squares_partials`] of gradients in any format ([`Grad`](kernels::Grad)).
    pub fn sum_squares_partials_mixed<G: AsGrad>(
        &self,
        grads: &[G],
        out: &mut [f64],
    ) -> Result<(), Error> {
        let _mode = FpMode::enter();
        self.check_lengths("grad", grads.iter().map(|g| g.as_grad().len()), grads.len())?;
        let unscale = self.unscale_for(None)?;
        let want = self.sum_squares_block_count();
        if out.len() != want {
            return Err(Error::LengthMismatch {
                what: "partials (one per sum-of-squares block of every buffer)".to_string(),
                expected: want,
                got: out.len(),
            });
        }
        let mut at = 0;
        for g in grads {
            let g = g.as_grad();
            let n = kernels::sumsq_block_count(g.len());
            kernels::sumsq_partials_mixed_unchecked(self.tier, g, unscale, &mut out[at..at + n]);
            at += n;
        }
        Ok(())
    }

    /// The number of sum-of-squares blocks over all registered buffers.
    pub fn sum_squares_block_count(&self) -> usize {
        self.lens
            .iter()
            .map(|&n| kernels::sumsq_block_count(n))
            .sum()
    }

    /// The pool if this optimizer has one and the registered size makes it pay.
    fn active_pool(&mut self) -> Option<Arc<rayon::ThreadPool>> {
        let total: usize = self.lens.iter().sum();
        self.pool
            .as_mut()
            .filter(|_| total >= PARALLEL_MIN_ELEMENTS)
            .and_then(Pool::get)
    }

    /// [`Optimizer::step`] after the length checks; `parallel`: running inside the pool.
    fn step_on<G: AsGrad>(
        &mut self,
        params: &mut [&mut [f32]],
        grads: &[G],
        copies: &mut [Option<ParamCopy<'_>>],
        (unscale, sum_squares, norms): (GradScale, Option<f64>, Option<&[f64]>),
        parallel: bool,
    ) -> Result<Outcome, Error> {
        let begun = match sum_squares {
            None => self.plan_step(grads, unscale, parallel)?,
            Some(s) => self.plan_with_sum_squares(Some(s), unscale, |b| {
                kernels::first_non_finite_unscaled(grads[b].as_grad(), unscale)
            })?,
        };
        // A begun split update with nothing applied yet is replaced by this one.
        self.coverage.abandon();
        let step = match begun {
            Ok(step) => step,
            Err(skipped) => return Ok(skipped),
        };
        self.fresh = false;
        let plans = Plans {
            plans: &self.plans,
            group_of: &self.group_of,
        };
        let pass = Pass {
            step: &step,
            plans,
            unscale,
            norms,
        };
        if parallel {
            par_apply(pass, params, grads, copies, &mut self.state);
        } else {
            seq_apply(pass, params, grads, copies, &mut self.state);
        }
        let synced = step.syncs();
        self.count_step(step)?;
        Ok(Outcome::Applied {
            step: self.step,
            synced,
        })
    }

    /// First phase of an update for hosts that split the work themselves: checks the gradient
    /// lengths, runs the norm / non-finite pass, and returns the [`Step`] to apply, or the
    /// [`Outcome::Skipped`] it decided on (already counted). Changes nothing else.
    ///
    /// Then apply the step with [`Step::apply`] to ranges of the buffers (views from
    /// [`Optimizer::states_mut`], split with [`StateMut::split_at`]), from any threads, each
    /// element exactly once, and end it with [`Optimizer::end_step`]. The optimizer keeps
    /// track of the applied elements (without allocating): a range applied twice is refused,
    /// and so is a `end_step` before every element was applied. A begun update of which
    /// nothing is applied yet is replaced by the next `begin_step` or `update`; once part of
    /// it is applied, it must be completed (or the state reset, registered anew or loaded).
    ///
    /// With a dynamic loss scaler set the gradients are divided by its scale (the [`Step`]
    /// carries it), a non-finite one skips the update and backs the scale off, and
    /// [`Optimizer::end_step`] records a finite update.
    pub fn begin_step(&mut self, grads: &[&[f32]]) -> Result<Result<Step, Outcome>, Error> {
        self.begin_step_mixed(grads)
    }

    /// [`Optimizer::begin_step`] with gradients in any format ([`Grad`](kernels::Grad)). Apply
    /// the step to ranges with the C ABI's `flatopt_optimizer_step_range` (which widens them)
    /// or, for f32 gradients, with [`Step::apply`].
    pub fn begin_step_mixed<G: AsGrad>(
        &mut self,
        grads: &[G],
    ) -> Result<Result<Step, Outcome>, Error> {
        self.begin_step_scaled(grads, None)
    }

    /// [`Optimizer::begin_step_mixed`] with an explicit loss scale, as
    /// [`Optimizer::step_mixed`] takes it: `grad_scale` (finite, > 0; refused while a dynamic
    /// loss scaler is set) divides the gradients in the norm / non-finite pass and in every
    /// range applied (the [`Step`] carries it); `None` is the dynamic loss scaler's scale if
    /// one is set, else 1. The split update is bit for bit the whole one with that scale, and
    /// skips (or fails) on the same non-finite values.
    pub fn begin_step_scaled<G: AsGrad>(
        &mut self,
        grads: &[G],
        grad_scale: Option<f32>,
    ) -> Result<Result<Step, Outcome>, Error> {
        let _mode = FpMode::enter();
        self.refuse_per_buffer_norms("begin_step")?;
        self.refuse_partly_applied()?;
        let unscale = self.unscale_for(grad_scale)?;
        // `plan_step` checks the gradient lengths.
        let begun = match self.active_pool() {
            Some(pool) => pool.install(|| self.plan_step(grads, unscale, true))?,
            None => self.plan_step(grads, unscale, false)?,
        };
        if let Err(skipped) = &begun {
            self.record_outcome(skipped);
        }
        Ok(self.pend(begun))
    }

    /// Records a begun split update as pending (or none, for a skipped one).
    fn pend(&mut self, begun: Result<Step, Outcome>) -> Result<Step, Outcome> {
        match &begun {
            Ok(step) => {
                self.coverage.begin(step.number);
                self.fresh = false;
            }
            Err(_) => self.coverage.abandon(),
        }
        begun
    }

    /// Refuses the split and sharded steps (`what`) for the rules with per-buffer norms (LAMB,
    /// LARS, NovoGrad): their update needs the norms of each whole buffer before any element
    /// is updated, which a range or a shard of a buffer cannot compute alone.
    fn refuse_per_buffer_norms(&self, what: &'static str) -> Result<(), Error> {
        if per_buffer_norms(&self.cfg.base) {
            return Err(Error::invalid(
                what,
                format!("base rule {}", self.cfg.base.name()),
                "is refused for LAMB, LARS, NovoGrad and Adafactor: their update needs each whole \
                 buffer's norms before any element is updated, which a range or a shard of a \
                 buffer cannot compute alone (use the whole update; shards: \
                 norm_partials_with_sum_squares, then step_with_sum_squares_and_norms)",
            ));
        }
        Ok(())
    }

    /// Refuses to start another update while one is partly applied.
    fn refuse_partly_applied(&self) -> Result<(), Error> {
        if self.coverage.partly_applied() {
            return Err(Error::InvalidState(
                "a split update is partly applied: apply the rest of it (each element exactly \
                 once) and end_step first",
            ));
        }
        Ok(())
    }

    /// The norm / non-finite pass and the plan of the next update (no split bookkeeping).
    fn plan_step<G: AsGrad>(
        &mut self,
        grads: &[G],
        unscale: GradScale,
        parallel: bool,
    ) -> Result<Result<Step, Outcome>, Error> {
        self.check_lengths("grad", grads.iter().map(|g| g.as_grad().len()), grads.len())?;
        let checked = self.policy() != NonFinitePolicy::Propagate;
        let sumsq = if self.cfg.grad_clip_norm.is_some() {
            Some(self.sum_squares(grads, unscale, parallel))
        } else if checked && scan_suffices(grads, unscale) {
            // No norm to compute: 16-bit gradients are checked by their exponent bits (2 bytes
            // read per element, no widening); the sum stands in for the same decision.
            Some(if grads_finite(self.tier, grads, parallel) {
                0.0
            } else {
                f64::INFINITY
            })
        } else if checked {
            Some(self.sum_squares(grads, unscale, parallel))
        } else {
            None
        };
        self.plan_with_sum_squares(sumsq, unscale, |b| {
            kernels::first_non_finite_unscaled(grads[b].as_grad(), unscale)
        })
    }

    /// Like [`Optimizer::begin_step`] with the global sum of squares computed by the host
    /// (for example across shards). `sumsq` must be `Some` if clipping by norm or checking for
    /// non-finite values; `find` locates the first non-finite value of buffer `b` for the report.
    /// With a dynamic loss scaler set, the sum must be that of the gradients divided by its
    /// scale ([`Optimizer::sum_squares_partials`]), and the step divides by it.
    pub fn begin_step_with_sum_squares(
        &mut self,
        sumsq: Option<f64>,
        find: impl Fn(usize) -> Option<(usize, f32)>,
    ) -> Result<Result<Step, Outcome>, Error> {
        let _mode = FpMode::enter();
        self.refuse_per_buffer_norms("begin_step_with_sum_squares")?;
        self.refuse_partly_applied()?;
        let unscale = self.unscale_for(None)?;
        let begun = self.plan_with_sum_squares(sumsq, unscale, find)?;
        if let Err(skipped) = &begun {
            self.record_outcome(skipped);
        }
        Ok(self.pend(begun))
    }

    /// The plan of the next update from the sum of squares (no split bookkeeping).
    fn plan_with_sum_squares(
        &mut self,
        sumsq: Option<f64>,
        unscale: GradScale,
        find: impl Fn(usize) -> Option<(usize, f32)>,
    ) -> Result<Result<Step, Outcome>, Error> {
        if self.lens.is_empty() {
            return Err(Error::InvalidState(
                "update before any buffer was registered",
            ));
        }
        let checked =
            self.cfg.grad_clip_norm.is_some() || self.policy() != NonFinitePolicy::Propagate;
        let mut clip_scale = None;
        match sumsq {
            None if checked => {
                return Err(Error::invalid(
                    "sum_squares",
                    "none",
                    "required with grad_clip_norm or a non-finite policy other than propagate",
                ));
            }
            None => {}
            Some(s) if s < 0.0 => {
                return Err(Error::invalid(
                    "sum_squares",
                    s,
                    "must be >= 0 (a sum of squares), or NaN/Inf for a non-finite gradient",
                ));
            }
            Some(s) => {
                if !s.is_finite() && self.policy() != NonFinitePolicy::Propagate {
                    // Not found here: the caller's sum came from other shards' gradients.
                    let (buffer, index, value) = (0..self.lens.len())
                        .find_map(|b| find(b).map(|(i, v)| (b, i, v)))
                        .unwrap_or((usize::MAX, usize::MAX, f32::NAN));
                    self.skipped = self.skipped.saturating_add(1);
                    return match self.policy() {
                        NonFinitePolicy::Error => Err(Error::NonFinite {
                            buffer,
                            index,
                            value,
                        }),
                        _ => Ok(Err(Outcome::Skipped {
                            buffer,
                            index,
                            value,
                        })),
                    };
                }
                if let Some(c) = self.cfg.grad_clip_norm {
                    let norm = s.sqrt();
                    if norm > c {
                        clip_scale = Some((c / norm) as f32);
                    }
                }
            }
        }
        let number = self.build_plans_clipped(clip_scale)?;
        std::mem::swap(&mut self.plans, &mut self.next_plans);
        Ok(Ok(Step {
            plan: self.plans[0],
            tier: self.tier,
            number,
            owner: self.coverage.owner,
            unscale,
            rounding: HeldRounding {
                rounding: self.cfg.state_rounding,
                seed: self.cfg.state_seed,
                step: number,
            },
            index_offset: self.cfg.state_index_offset,
        }))
    }

    /// The plans of the next update with the sum of squares `sumsq` (clipping by norm) into
    /// `next_plans`, nothing else changed (the sharded pass before the update: the update
    /// itself builds the same plans again).
    fn build_plans(&mut self, sumsq: Option<f64>) -> Result<u64, Error> {
        let clip_scale = match (self.cfg.grad_clip_norm, sumsq) {
            (Some(c), Some(s)) if s.sqrt() > c => Some((c / s.sqrt()) as f32),
            _ => None,
        };
        self.build_plans_clipped(clip_scale)
    }

    /// One plan per group into `next_plans` with `clip_scale`; the number of the update.
    fn build_plans_clipped(&mut self, clip_scale: Option<f32>) -> Result<u64, Error> {
        let number = self.step.checked_add(1).ok_or(Error::InvalidState(
            "the step counter is exhausted (2^64 - 1 updates)",
        ))?;
        let lr = self.schedule.lr(&self.cfg.lr);
        let sync_alpha = self
            .cfg
            .lookahead
            .filter(|la| number.is_multiple_of(la.sync_period))
            .map(|la| la.alpha as f32);
        // One plan per group: the global parts (clipping, sync) shared, the rule and the weight
        // decay the group's. Built aside and swapped in once every group's is valid, so that a
        // refused update leaves the plans of a pending one alone.
        for (g, group) in self.groups.iter().enumerate() {
            let group_lr = group.lr_at(lr, self.base_lr);
            let wd = group.coupled_weight_decay;
            let plan = Plan {
                clip_scale,
                clip_value: self.cfg.grad_clip_value.map(|c| c as f32),
                weight_decay: (wd != 0.0).then_some(wd as f32),
                rule: Rule::for_step(&group.base, number, group_lr),
                sync_alpha,
            };
            crate::config::check_step(group_lr, &plan.rule).map_err(|e| in_group(g, e))?;
            self.next_plans[g] = plan;
        }
        Ok(number)
    }

    /// The state of each registered buffer, in registration order, for [`Step::apply`] (each
    /// view carries the plan of its buffer's parameter group in the begun update).
    pub fn states_mut(&mut self) -> impl Iterator<Item = StateMut<'_>> {
        let coverage = &self.coverage;
        let plans = &self.plans;
        self.state
            .iter_mut()
            .zip(self.starts.iter().zip(&self.lens))
            .zip(&self.group_of)
            .map(move |((st, (&at, &len)), &g)| st.view(at, len, coverage, &plans[g]))
    }

    /// The plan (per-step scalars) of parameter group `group` in the begun split update (or
    /// the last update), `None` if there is no such group.
    pub fn group_plan(&self, group: usize) -> Option<&Plan> {
        self.plans.get(group)
    }

    /// The plan of buffer `buffer`'s parameter group in the begun (or last) update.
    pub(crate) fn buffer_plan(&self, buffer: usize) -> &Plan {
        &self.plans[self.group_of[buffer]]
    }

    /// Marks elements `[begin, end)` of the concatenated buffers applied by `step` (the C ABI's
    /// range entry point, which writes through raw pointers): refused, marking nothing, unless
    /// `step` is the pending update and no element of the range was applied in it yet.
    pub(crate) fn claim_range(&self, step: &Step, begin: usize, end: usize) -> Result<(), Error> {
        self.coverage.check_step(step)?;
        if begin > end || end > self.total {
            return Err(Error::invalid(
                "range",
                format!("[{begin}, {end})"),
                "must satisfy begin <= end <= total registered length",
            ));
        }
        self.coverage.claim(begin, end)
    }

    /// Last phase of an update: counts it and advances the schedule (per-update mode).
    /// `step` must come from this optimizer's latest `begin_step`, and every registered
    /// element must have been applied exactly once; otherwise nothing changes (the update
    /// stays pending: apply what is missing and finish it again).
    pub fn end_step(&mut self, step: Step) -> Result<(), Error> {
        let _mode = FpMode::enter();
        if self.coverage.check_step(&step).is_err() {
            return Err(Error::InvalidState(
                "end_step with a step that is not the one begun last",
            ));
        }
        let applied = self.coverage.applied.load(Ordering::Acquire);
        if applied != self.total {
            return Err(Error::LengthMismatch {
                what: format!(
                    "elements applied in update {} before end_step (every registered \
                     element exactly once)",
                    step.number
                ),
                expected: self.total,
                got: applied,
            });
        }
        self.count_step(step)?;
        self.coverage.pending = 0;
        self.record_outcome(&Outcome::Applied {
            step: step.number,
            synced: step.syncs(),
        });
        Ok(())
    }

    /// Counts an applied update and advances the schedule (per-update mode).
    fn count_step(&mut self, step: Step) -> Result<(), Error> {
        if self.step.checked_add(1) != Some(step.number) {
            return Err(Error::InvalidState(
                "end_step with a step that is not the one begun last",
            ));
        }
        self.step = step.number;
        if self.cfg.schedule_mode == ScheduleMode::PerUpdate {
            self.schedule.advance(&self.cfg.lr);
        }
        Ok(())
    }

    /// Sum of squares of all gradients in the fixed order of the determinism contract.
    fn sum_squares<G: AsGrad>(&mut self, grads: &[G], unscale: GradScale, parallel: bool) -> f64 {
        if parallel {
            par_partials(self.tier, unscale, grads, &mut self.state);
        } else {
            seq_partials(self.tier, unscale, grads, &mut self.state);
        }
        let mut sum = 0.0;
        for st in &self.state {
            for p in &st.partials {
                sum += p;
            }
        }
        sum
    }

    /// The schedule's base learning rate (see [`Group::lr_at`]).
    pub fn base_lr(&self) -> f64 {
        self.base_lr
    }

    fn check_lengths(
        &self,
        what: &str,
        lens: impl Iterator<Item = usize>,
        count: usize,
    ) -> Result<(), Error> {
        if self.lens.is_empty() {
            return Err(Error::InvalidState(
                "update before any buffer was registered",
            ));
        }
        if count != self.lens.len() {
            return Err(Error::LengthMismatch {
                what: format!("number of {what} buffers"),
                expected: self.lens.len(),
                got: count,
            });
        }
        for (i, (got, &want)) in lens.zip(&self.lens).enumerate() {
            if got != want {
                return Err(Error::LengthMismatch {
                    what: format!("{what} buffer {i}"),
                    expected: want,
                    got,
                });
            }
        }
        Ok(())
    }

    /// Advances a manual (epoch-style) schedule by one.
    pub fn step_schedule(&mut self) {
        let _mode = FpMode::enter();
        self.schedule.advance(&self.cfg.lr);
    }

    /// Sets the schedule counter to `epoch`: the schedule is then exactly as after `epoch`
    /// [`step_schedule`](Self::step_schedule) calls from its start (registration or reset),
    /// in time independent of `epoch`. Per-update schedules too (their counter is the one
    /// updates advance). Errors, nothing changed: [`Error::InvalidState`] for ReduceOnPlateau
    /// (it moves by metrics).
    pub fn set_schedule_epoch(&mut self, epoch: u64) -> Result<(), Error> {
        let _mode = FpMode::enter();
        self.schedule = ScheduleState::at(&self.cfg.lr, epoch)?;
        Ok(())
    }

    /// Feeds a metric to a ReduceOnPlateau schedule.
    pub fn step_schedule_metric(&mut self, metric: f64) -> Result<(), Error> {
        let _mode = FpMode::enter();
        self.schedule.step_metric(&self.cfg.lr, metric)
    }

    /// Applied updates so far.
    pub fn step_count(&self) -> u64 {
        self.step
    }
    /// Updates skipped because of non-finite gradients.
    pub fn skipped_count(&self) -> u64 {
        self.skipped
    }
    /// The learning rate the next update will use (f64 schedule value rounded to f32).
    pub fn current_lr(&self) -> f32 {
        self.schedule.lr(&self.cfg.lr) as f32
    }
    /// The schedule counter and state.
    pub fn schedule_state(&self) -> &ScheduleState {
        &self.schedule
    }
    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }
    /// Registered buffer lengths, in registration order.
    pub fn buffer_lens(&self) -> &[usize] {
        &self.lens
    }
    /// The SIMD tier this optimizer runs on.
    pub fn tier(&self) -> Tier {
        self.tier
    }
    /// Switches the SIMD tier (results do not change: all tiers are bit-identical).
    pub fn set_tier(&mut self, tier: Tier) -> Result<(), Error> {
        self.tier = tier.check()?;
        Ok(())
    }
    /// Threads used by `update` (1: the caller's thread).
    pub fn num_threads(&self) -> usize {
        self.cfg.num_threads
    }
    /// Changes the thread count (results do not change: the update is thread-count invariant).
    pub fn set_num_threads(&mut self, n: usize) -> Result<(), Error> {
        let mut cfg = self.cfg.clone();
        cfg.num_threads = n;
        cfg.validate()?;
        self.pool = if n > 1 { Some(Pool::new(n)?) } else { None };
        self.cfg.num_threads = n;
        Ok(())
    }
    /// The Lookahead slow weights of buffer `i` (`None` without Lookahead, out of range, or
    /// when they are held in bfloat16: [`Optimizer::slow_weights_f32`] decodes them).
    pub fn slow_weights(&self, i: usize) -> Option<&[f32]> {
        self.state
            .get(i)
            .filter(|_| self.cfg.lookahead.is_some())
            .and_then(|s| s.slow.as_f32())
    }
    /// The state buffers of buffer `i`: (m, v, v_max), each empty if the rule does not use it
    /// (`None` out of range, or when the state is not held as float32:
    /// [`Optimizer::moments_f32`] decodes it).
    pub fn moments(&self, i: usize) -> Option<(&[f32], &[f32], &[f32])> {
        self.state
            .get(i)
            .and_then(|s| Some((s.m.as_f32()?, s.v.as_f32()?, s.v_max.as_f32()?)))
    }
    /// The state buffers of buffer `i` decoded to f32 into `m`, `v`, `v_max` (each the
    /// buffer's length where the rule uses it, else empty), whatever the state dtype. Refused
    /// for a buffer out of range or outputs of the wrong length.
    pub fn moments_f32(&self, i: usize, out: [&mut [f32]; 3]) -> Result<(), Error> {
        let st = self.buffer_state(i)?;
        for ((s, o), what) in [&st.m, &st.v, &st.v_max]
            .into_iter()
            .zip(out)
            .zip(["m", "v", "v_max"])
        {
            s.decode_into(
                self.tier,
                Self::code_of(&self.groups[self.group_of[i]].base, what),
                o,
            )?;
        }
        Ok(())
    }
    /// The Lookahead slow weights of buffer `i` decoded to f32 into `out` (its length).
    pub fn slow_weights_f32(&self, i: usize, out: &mut [f32]) -> Result<(), Error> {
        let st = self.buffer_state(i)?;
        if self.cfg.lookahead.is_none() {
            return Err(Error::InvalidState("no slow weights: Lookahead is off"));
        }
        st.slow.decode_into(self.tier, Q8Code::Signed, out)
    }
    /// Bytes of optimizer state per registered element: the moments the rule keeps (each 4
    /// bytes in float32, 2 in bfloat16, `1 + 4/256` in int8) and the slow weights.
    pub fn state_bytes_per_element(&self) -> f64 {
        let (m, v, v_max) = self.cfg.base.state_used();
        let moments = [m, v, v_max].iter().filter(|&&u| u).count() as f64;
        let slow = if self.cfg.lookahead.is_some() {
            self.cfg.slow_dtype.bytes_per_element()
        } else {
            0.0
        };
        moments * self.cfg.state_dtype.bytes_per_element() + slow
    }
    /// Bytes of optimizer state held for the registered buffers: every state buffer as it is
    /// held (8-bit codes and their scales), the slow weights included; without the slack that
    /// places f32 state within a page.
    pub fn state_bytes(&self) -> usize {
        self.state
            .iter()
            .flat_map(|s| [&s.m, &s.v, &s.v_max, &s.slow])
            .map(|s| s.held_bytes())
            .sum()
    }
    /// The state arrays of buffer `i` (m, v, v_max, slow) as f32 values, each empty where
    /// unused (checkpoints save these): borrowed when held as f32, else decoded.
    pub(crate) fn state_f32(&self, i: usize) -> [std::borrow::Cow<'_, [f32]>; 4] {
        let st = &self.state[i];
        let base = &self.groups[self.group_of[i]].base;
        let codes = q8_codes(base).unwrap_or([Q8Code::Signed; 3]);
        let stores = [&st.m, &st.v, &st.v_max, &st.slow];
        let code = [codes[0], codes[1], codes[2], Q8Code::Signed];
        std::array::from_fn(|j| match stores[j].as_f32() {
            Some(x) => std::borrow::Cow::Borrowed(x),
            None => {
                let mut out = vec![0.0; stores[j].len()];
                // The length is the store's own: no error.
                let _ = stores[j].decode_into(self.tier, code[j], &mut out);
                std::borrow::Cow::Owned(out)
            }
        })
    }

    /// Sets state array `which` (0 m, 1 v, 2 v_max, 3 slow) of buffer `i` from f32 values of
    /// its length, encoded as held (bf16 to nearest).
    pub(crate) fn put_state_f32(&mut self, i: usize, which: usize, values: &[f32]) {
        let base = &self.groups[self.group_of[i]].base;
        let codes = q8_codes(base).unwrap_or([Q8Code::Signed; 3]);
        let st = &mut self.state[i];
        let (store, code) = match which {
            0 => (&mut st.m, codes[0]),
            1 => (&mut st.v, codes[1]),
            2 => (&mut st.v_max, codes[2]),
            _ => (&mut st.slow, Q8Code::Signed),
        };
        let _mode = FpMode::enter();
        store.encode_from(self.tier, code, values);
    }

    /// The state buffers of buffer `i` (m, v, v_max, slow) as held, each empty where unused,
    /// with the 8-bit code of each (checkpoints, format 4).
    pub(crate) fn stores(&self, i: usize) -> [(&Store, Q8Code); 4] {
        let st = &self.state[i];
        let base = &self.groups[self.group_of[i]].base;
        let [cm, cv, cx] = q8_codes(base).unwrap_or([Q8Code::Signed; 3]);
        [
            (&st.m, cm),
            (&st.v, cv),
            (&st.v_max, cx),
            (&st.slow, Q8Code::Signed),
        ]
    }

    /// State array `which` (0 m, 1 v, 2 v_max, 3 slow) of buffer `i`, to be set as held.
    pub(crate) fn store_mut(&mut self, i: usize, which: usize) -> &mut Store {
        let st = &mut self.state[i];
        match which {
            0 => &mut st.m,
            1 => &mut st.v,
            2 => &mut st.v_max,
            _ => &mut st.slow,
        }
    }

    /// Whether every state buffer is held as float32 (checkpoints of other state are refused).
    pub(crate) fn state_is_f32(&self) -> bool {
        self.cfg.state_dtype == StateDtype::F32 && self.cfg.slow_dtype == StateDtype::F32
    }
    fn buffer_state(&self, i: usize) -> Result<&BufState, Error> {
        self.state.get(i).ok_or_else(|| {
            Error::invalid(
                "buffer",
                i,
                "must be below the number of registered buffers",
            )
        })
    }
    fn code_of(base: &crate::config::Base, what: &str) -> Q8Code {
        let codes = q8_codes(base).unwrap_or([Q8Code::Signed; 3]);
        match what {
            "m" => codes[0],
            "v" => codes[1],
            _ => codes[2],
        }
    }
}

/// Whether `base` needs per-buffer norms before its update (LAMB, LARS, NovoGrad, Adafactor).
fn per_buffer_norms(base: &crate::config::Base) -> bool {
    matches!(base, crate::config::Base::Adafactor { .. })
        || Rule::for_step(base, 1, 0.0).pre_pass().is_some()
}

/// The 8-bit codes of `base`'s state buffers (m, v, v_max), `None` where int8 is refused.
pub(crate) fn q8_codes(base: &crate::config::Base) -> Option<[Q8Code; 3]> {
    kernels::q8_codes(&Rule::for_step(base, 1, 0.0))
}

impl BufState {
    /// The moments at `base`'s initial values (registration, `reset`).
    fn fill_init(&mut self, base: &crate::config::Base) {
        let [m0, v0, v_max0] = base.state_init();
        let [cm, cv, cx] = q8_codes(base).unwrap_or([Q8Code::Signed; 3]);
        self.m.fill(cm, m0);
        self.v.fill(cv, v0);
        self.v_max.fill(cx, v_max0);
    }
}
