//! The schedule catalog: every learning-rate schedule, once. Each entry gives its kind number
//! (C `flatopt_schedule_kind`, checkpoints), its name, its fields (type, default, domain, `f32`
//! where the value is a learning rate the kernels use in f32, the `flatopt_schedule` field that
//! carries it in C) and its formula; optionally a cross-field `check`, the state it starts
//! from (`init`), how it advances (`advance`, default: the counter goes up by one) and which
//! saved states are possible (`state`). The `Schedule` enum, its validation, evaluation, C
//! conversion and defaults, checkpoint encoding and the fuzz generator all follow from it.
//!
//! In the formulas `e` is `st.count`, and all arithmetic is `f64`. Field declaration order is
//! the checkpoint encoding order: append new fields at the end of an entry, new entries at the
//! end of the table (with the next kind number).

use super::{anneal_cos, anneal_linear, cosine, Anneal, CyclicMode, PlateauMode, ThresholdMode};
use crate::error::Error;

super::schedules! {
    /// Constant learning rate: `lr(e) = lr`.
    Fixed = 0, "fixed" {
        /// The learning rate.
        lr: f64 = 1e-3; NonNeg, f32; c base_lr;
    }
    lr(st) { lr }

    /// PyTorch `ConstantLR`: `lr(e) = base * factor` if `e < total_iters`, else `base`.
    /// `total_iters = 0` means `base` throughout.
    Constant = 1, "constant" {
        /// The base learning rate.
        base: f64 = 1e-3; NonNeg, f32; c base_lr;
        /// The factor applied for the first `total_iters` counts.
        factor: f64 = 1.0 / 3.0; UnitClosed; c factor;
        /// How many counts the factor applies.
        total_iters: u64 = 5; Any; c period;
    }
    lr(st) { if st.count < total_iters { base * factor } else { base } }

    /// PyTorch `LinearLR`:
    /// `lr(e) = base * (start_factor + (end_factor - start_factor) * min(e, total_iters) / total_iters)`.
    /// (PyTorch also rejects `start_factor = 0` because its recursive form divides by it; this
    /// closed form does not.)
    Linear = 2, "linear" {
        /// The base learning rate.
        base: f64 = 1e-3; NonNeg, f32; c base_lr;
        /// The factor at `e = 0`.
        start_factor: f64 = 1.0 / 3.0; UnitClosed; c start_factor;
        /// The factor from `e = total_iters` on.
        end_factor: f64 = 1.0; UnitClosed; c end_factor;
        /// Length of the ramp.
        total_iters: u64 = 5; AtLeastOne; c period;
    }
    lr(st) {
        let q = st.count.min(total_iters) as f64 / total_iters as f64;
        base * (start_factor + (end_factor - start_factor) * q)
    }

    /// PyTorch `StepLR`: `lr(e) = base * gamma^floor(e / step_size)`. A `gamma > 1` grows
    /// until the learning rate leaves the f32 range; that step is then refused.
    Step = 3, "step" {
        /// The base learning rate.
        base: f64 = 1e-3; NonNeg, f32; c base_lr;
        /// Counts between decays.
        step_size: u64 = 100; AtLeastOne; c period;
        /// The factor per `step_size` counts.
        gamma: f64 = 0.1; Positive; c gamma;
    }
    lr(st) { base * gamma.powf((st.count / step_size.max(1)) as f64) }

    /// PyTorch `MultiStepLR`: `lr(e) = base * gamma^k`, `k` = the number of milestones `<= e`.
    /// (PyTorch counts a repeated milestone twice; here repeats are refused: use a smaller
    /// `gamma` or two schedules.)
    MultiStep = 4, "multi_step" {
        /// The base learning rate.
        base: f64 = 1e-3; NonNeg, f32; c base_lr;
        /// The counts at which the rate is multiplied by `gamma` (may be empty).
        milestones: Vec<u64> = Vec::new(); Increasing; c milestones;
        /// The factor per milestone.
        gamma: f64 = 0.1; Positive; c gamma;
    }
    lr(st) {
        let k = milestones.partition_point(|&m| m <= st.count);
        base * gamma.powf(k as f64)
    }

    /// PyTorch `ExponentialLR`: `lr(e) = base * gamma^e`. A `gamma > 1` grows until the
    /// learning rate leaves the f32 range; that step is then refused.
    Exponential = 5, "exponential" {
        /// The base learning rate.
        base: f64 = 1e-3; NonNeg, f32; c base_lr;
        /// The factor per count.
        gamma: f64 = 0.95; Positive; c gamma;
    }
    lr(st) { base * gamma.powf(st.count as f64) }

    /// optax `exponential_decay`: with `d = e - transition_begin` and
    /// `p = d / decay_steps` (`floor(p)` if `staircase`),
    /// `v = base` if `d <= 0`, else `v = base * decay_rate^p`; then, if `end_value` is given,
    /// `lr(e) = max(v, end_value)` when `decay_rate < 1` (a floor) and `min(v, end_value)`
    /// otherwise (a ceiling, also when `decay_rate = 1`, as in optax), else `lr(e) = v`.
    /// Without `end_value`, a `decay_rate > 1` grows until the learning rate leaves the f32
    /// range (that step is refused). As in optax the clamp also applies before
    /// `transition_begin` (an `end_value` on the wrong side of `base` clamps from the start).
    ExponentialDecay = 6, "exponential_decay" {
        /// The base learning rate.
        base: f64 = 1e-3; NonNeg, f32; c base_lr;
        /// Counts per factor `decay_rate`.
        decay_steps: u64 = 100; AtLeastOne; c period;
        /// The factor per `decay_steps` counts.
        decay_rate: f64 = 0.5; Positive; c decay_rate;
        /// Counts at `base` before the decay starts.
        transition_begin: u64 = 0; Any; c warmup;
        /// Whether the exponent is floored (a step function).
        staircase: bool = false; Any; c staircase;
        /// The clamp value (C: NaN for none).
        end_value: Option<f64> = None; NonNeg, f32; c end_value;
    }
    lr(st) {
        let e = st.count;
        let v = if e <= transition_begin {
            base
        } else {
            let mut p = (e - transition_begin) as f64 / decay_steps as f64;
            if staircase {
                p = p.floor();
            }
            base * decay_rate.powf(p)
        };
        match end_value {
            Some(end) if decay_rate < 1.0 => v.max(end),
            Some(end) => v.min(end),
            None => v,
        }
    }

    /// Cosine annealing (PyTorch `CosineAnnealingLR`, closed form):
    /// `lr(e) = eta_min + (base - eta_min) * (1 + cos(pi * min(e, t_max) / t_max)) / 2`.
    /// It holds at `eta_min` after `t_max`, where PyTorch's turns back up.
    CosineAnnealing = 7, "cosine_annealing" {
        /// The learning rate at `e = 0`.
        base: f64 = 1e-3; NonNeg, f32; c base_lr;
        /// Counts to reach `eta_min`.
        t_max: u64 = 100; AtLeastOne; c period;
        /// The floor.
        eta_min: f64 = 0.0; NonNeg, f32; c eta_min;
    }
    lr(st) { cosine(base, eta_min, st.count.min(t_max) as f64, t_max as f64) }

    /// SGDR, PyTorch `CosineAnnealingWarmRestarts`:
    /// `lr = eta_min + (base - eta_min) * (1 + cos(pi * t_cur / t_i)) / 2`, where `t_i` is the
    /// current cycle's length (starting at `t_0`) and `t_cur` the position in it (starting at 0).
    /// Each advance does `t_cur += 1; if t_cur >= t_i { t_cur -= t_i; t_i *= t_mult }`.
    CosineAnnealingWarmRestarts = 8, "cosine_warm_restarts" {
        /// The learning rate at the start of each cycle.
        base: f64 = 1e-3; NonNeg, f32; c base_lr;
        /// The first cycle's length.
        t_0: u64 = 100; AtLeastOne; c period;
        /// The factor between cycle lengths.
        t_mult: u64 = 1; AtLeastOne; c t_mult;
        /// The floor.
        eta_min: f64 = 0.0; NonNeg, f32; c eta_min;
    }
    lr(st) { cosine(base, eta_min, st.t_cur as f64, st.t_i as f64) }
    @init(st) { st.t_i = t_0; }
    @advance(st) {
        st.count = st.count.saturating_add(1);
        st.t_cur = st.t_cur.saturating_add(1);
        if st.t_cur >= st.t_i {
            st.t_cur -= st.t_i;
            st.t_i = st.t_i.saturating_mul(t_mult);
        }
    }
    @position(st, n) {
        // Whole cycles first (t_0, t_0 * t_mult, ... saturating: at most 64 distinct lengths),
        // then, once the length stops growing, the rest modulo it.
        st.count = n;
        let (mut rest, mut len) = (n, t_0);
        while rest >= len {
            rest -= len;
            let next = len.saturating_mul(t_mult);
            if next == len {
                rest = rest.checked_rem(len).unwrap_or(rest); // len 0: only if not validated
                break;
            }
            len = next;
        }
        st.t_cur = rest;
        st.t_i = len;
        Ok(())
    }
    @state(st) {
        // t_i runs through t_0 * t_mult^k (saturating), t_cur through [0, t_i).
        let mut t = t_0;
        while t < st.t_i && t_mult > 1 && t != u64::MAX {
            t = t.saturating_mul(t_mult);
        }
        if st.t_i == 0 || st.t_cur >= st.t_i || t != st.t_i {
            return Err(format!(
                "warm-restart state t_cur = {}, t_i = {} is impossible (t_i runs through \
                 t_0 * t_mult^k with t_0 = {t_0}, t_mult = {t_mult}; t_cur < t_i)",
                st.t_cur, st.t_i
            ));
        }
        Ok(())
    }

    /// PyTorch `PolynomialLR`: `lr(e) = base * (1 - min(e, total_iters) / total_iters)^power`.
    Polynomial = 9, "polynomial" {
        /// The base learning rate.
        base: f64 = 1e-3; NonNeg, f32; c base_lr;
        /// Counts to reach 0.
        total_iters: u64 = 5; AtLeastOne; c period;
        /// The power.
        power: f64 = 1.0; NonNeg; c power;
    }
    lr(st) {
        let q = st.count.min(total_iters) as f64 / total_iters as f64;
        base * (1.0 - q).powf(power)
    }

    /// Linear warmup: `lr(e) = start_lr + (base - start_lr) * e / warmup_steps` for
    /// `e < warmup_steps`, then `base` (exactly). `warmup_steps = 0` means `base` from the start.
    Warmup = 10, "warmup" {
        /// The learning rate after the warmup.
        base: f64 = 1e-3; NonNeg, f32; c base_lr;
        /// Length of the warmup.
        warmup_steps: u64 = 5; Any; c warmup;
        /// The learning rate at `e = 0`.
        start_lr: f64 = 0.0; NonNeg, f32; c start_lr;
    }
    lr(st) {
        if st.count >= warmup_steps {
            base
        } else {
            start_lr + (base - start_lr) * (st.count as f64 / warmup_steps as f64)
        }
    }

    /// Linear warmup then cosine decay (optax `warmup_cosine_decay_schedule`, with
    /// `total_steps` counting the warmup). With `W = warmup_steps` and `D = total_steps - W`:
    /// for `e < W`, `lr(e) = start_lr + (base - start_lr) * e / W`; for `e >= W`,
    /// `lr(e) = eta_min + (base - eta_min) * (1 + cos(pi * min(e - W, D) / D)) / 2`, so it
    /// reaches `eta_min` at `e = total_steps` and holds there. If `D = 0` there is no cosine
    /// phase: `lr(e) = eta_min` for `e >= W`. Valid: `warmup_steps <= total_steps`.
    WarmupCosine = 11, "warmup_cosine" {
        /// The peak learning rate, at the end of the warmup.
        base: f64 = 1e-3; NonNeg, f32; c base_lr;
        /// Length of the warmup.
        warmup_steps: u64 = 5; Any; c warmup;
        /// Counts to reach `eta_min`, warmup included.
        total_steps: u64 = 100; AtLeastOne; c period;
        /// The learning rate at `e = 0`.
        start_lr: f64 = 0.0; NonNeg, f32; c start_lr;
        /// The floor.
        eta_min: f64 = 0.0; NonNeg, f32; c eta_min;
    }
    lr(st) {
        let (e, w) = (st.count, warmup_steps);
        if e < w {
            start_lr + (base - start_lr) * (e as f64 / w as f64)
        } else {
            let d = total_steps.saturating_sub(w);
            if d == 0 {
                eta_min
            } else {
                cosine(base, eta_min, (e - w).min(d) as f64, d as f64)
            }
        }
    }
    @check {
        if warmup_steps > total_steps {
            return Err(Error::invalid("warmup_steps", warmup_steps, "must be <= total_steps"));
        }
        Ok(())
    }

    /// PyTorch `OneCycleLR` (two phases, `three_phase=False`). With
    /// `init = max_lr / div_factor`, `min = init / final_div_factor`,
    /// `e1 = pct_start * total_steps - 1`, `e2 = total_steps - 1` and `x = min(e, e2)`:
    /// if `x <= e1`, `lr = anneal(init -> max_lr, x / e1)`; otherwise
    /// `lr = anneal(max_lr -> min, (x - e1) / (e2 - e1))` (see [`Anneal`]).
    /// So `lr(0) = init` (when `e1 > 0`), `lr(e1) = max_lr`, and `lr(e) = min` for
    /// `e >= total_steps - 1` (PyTorch raises an error past `total_steps` instead of holding).
    /// When `pct_start * total_steps < 1` the first phase is empty (`e1 < 0`) and the schedule
    /// starts in the second phase, as in PyTorch; when `e1 = 0` exactly (where PyTorch divides
    /// by zero), `lr(0) = init`. Valid: `init` and `min` finite as f32.
    OneCycle = 12, "one_cycle" {
        /// The peak learning rate.
        max_lr: f64 = 1e-3; NonNeg, f32; c base_lr;
        /// Length of the cycle.
        total_steps: u64 = 100; AtLeastOne; c period;
        /// Fraction of the cycle spent increasing.
        pct_start: f64 = 0.3; UnitExclusive; c pct_start;
        /// `init = max_lr / div_factor`.
        div_factor: f64 = 25.0; Positive; c div_factor;
        /// `min = init / final_div_factor`.
        final_div_factor: f64 = 1e4; Positive; c final_div_factor;
        /// How the rate moves between its end points.
        anneal: Anneal = Anneal::Cos; Any; c anneal_linear;
    }
    lr(st) {
        let total = total_steps as f64;
        let init = max_lr / div_factor;
        let min = init / final_div_factor;
        let e1 = pct_start * total - 1.0;
        let e2 = total - 1.0;
        let x = (st.count as f64).min(e2);
        let (a, b, q) = if x <= e1 {
            (init, max_lr, if e1 > 0.0 { x / e1 } else { 0.0 })
        } else {
            (max_lr, min, (x - e1) / (e2 - e1))
        };
        match anneal {
            Anneal::Cos => anneal_cos(a, b, q),
            Anneal::Linear => anneal_linear(a, b, q),
        }
    }
    @check {
        // The rates it starts and ends at are learning rates: finite as f32.
        let init = max_lr / div_factor;
        if !(init as f32).is_finite() {
            return Err(Error::invalid(
                "div_factor",
                div_factor,
                "max_lr / div_factor must be finite as f32",
            ));
        }
        if !((init / final_div_factor) as f32).is_finite() {
            return Err(Error::invalid(
                "final_div_factor",
                final_div_factor,
                "max_lr / div_factor / final_div_factor must be finite as f32",
            ));
        }
        Ok(())
    }

    /// PyTorch `CyclicLR`. With `tot = step_size_up + step_size_down`, `r = step_size_up / tot`,
    /// `cycle = floor(1 + e / tot)`, `x = 1 + e / tot - cycle`, `h = x / r` if `x <= r` else
    /// `(x - 1) / (r - 1)`: `lr(e) = base + (max_lr - base) * h * scale`, where `scale` is `1`
    /// (`Triangular`), `1 / 2^(cycle - 1)` (`Triangular2`) or `gamma^e` (`ExpRange`).
    /// `max_lr` may be below `base` (the cycle then dips); `step_size_down = 0` gives a
    /// sawtooth (in C, 0 means "as `step_size_up`", PyTorch's `None`); `gamma <= 1` in
    /// `ExpRange` mode (PyTorch allows more, which grows without bound or turns negative).
    /// `gamma` is unused by the other modes.
    Cyclic = 13, "cyclic" {
        /// The lower learning rate.
        base: f64 = 1e-3; NonNeg, f32; c base_lr;
        /// The upper learning rate.
        max_lr: f64 = 1e-2; NonNeg, f32; c max_lr;
        /// Counts of the rising half-cycle.
        step_size_up: u64 = 2000; AtLeastOne; c step_size_up;
        /// Counts of the falling half-cycle.
        step_size_down: u64 = 0; Any; c step_size_down, zero = step_size_up;
        /// Amplitude scaling.
        mode: CyclicMode = CyclicMode::Triangular; Any; c cyclic_mode;
        /// `ExpRange`: the amplitude factor per count.
        gamma: f64 = 1.0; Positive; c gamma;
    }
    lr(st) {
        let ef = st.count as f64;
        let up = step_size_up as f64;
        let tot = up + step_size_down as f64;
        let ratio = up / tot;
        let cycle = (1.0 + ef / tot).floor();
        let x = 1.0 + ef / tot - cycle;
        let h = if x <= ratio { x / ratio } else { (x - 1.0) / (ratio - 1.0) };
        let scale = match mode {
            CyclicMode::Triangular => 1.0,
            CyclicMode::Triangular2 => 1.0 / 2f64.powf(cycle - 1.0),
            CyclicMode::ExpRange => gamma.powf(ef),
        };
        base + (max_lr - base) * h * scale
    }
    @check {
        if mode == CyclicMode::ExpRange && gamma > 1.0 {
            return Err(Error::invalid("gamma", gamma, "must be in (0, 1] in exp_range mode"));
        }
        Ok(())
    }

    /// Piecewise constant, absolute values: `lr(e) = values[k]`, `k` = the number of boundaries
    /// `<= e`. So `values[0]` applies before the first boundary, `values[i]` from
    /// `boundaries[i - 1]` on. (Unlike optax's `piecewise_constant_schedule`, whose values are
    /// multiplicative.) Valid: `values.len() == boundaries.len() + 1`.
    PiecewiseConstant = 14, "piecewise_constant" {
        /// The counts at which the next value starts.
        boundaries: Vec<u64> = Vec::new(); Increasing; c milestones;
        /// The learning rates, one more than boundaries.
        values: Vec<f64> = Vec::new(); NonNeg, f32; c values;
    }
    lr(st) {
        let k = boundaries.partition_point(|&b| b <= st.count);
        values.get(k).or(values.last()).copied().unwrap_or(f64::NAN)
    }
    @check {
        if values.len() != boundaries.len() + 1 {
            return Err(Error::invalid(
                "values",
                format!("{} values for {} boundaries", values.len(), boundaries.len()),
                "must hold exactly one more value than boundaries",
            ));
        }
        Ok(())
    }

    /// PyTorch `ReduceLROnPlateau`, driven by [`ScheduleState::step_metric`]. It starts at
    /// `lr = base`, `best = +inf` (`Min`) or `-inf` (`Max`). Each metric: if it is better than
    /// `best` (see [`ThresholdMode`]) it becomes `best` and the bad-epoch count is reset, else
    /// the count goes up; during a cooldown the cooldown counter goes down and the bad-epoch
    /// count is reset; if the count then exceeds `patience`, `new = max(lr * factor, min_lr)`
    /// replaces `lr` if `lr - new > 1e-8`, the cooldown counter is set to `cooldown` and the
    /// count is reset. Valid: in `Rel` mode `threshold < 1` (at 1 the first metric would never
    /// count as better).
    ///
    /// [`ScheduleState::step_metric`]: super::ScheduleState::step_metric
    ReduceOnPlateau = 15, "reduce_on_plateau" {
        /// The learning rate before the first reduction.
        base: f64 = 1e-3; NonNeg, f32; c base_lr;
        /// Whether lower or higher metrics are better.
        mode: PlateauMode = PlateauMode::Min; Any; c plateau_mode;
        /// The reduction factor.
        factor: f64 = 0.1; UnitExclusive; c factor;
        /// Metrics without improvement tolerated before a reduction.
        patience: u64 = 10; Any; c patience;
        /// The improvement threshold.
        threshold: f64 = 1e-4; NonNeg; c threshold;
        /// Whether the threshold is relative or absolute.
        threshold_mode: ThresholdMode = ThresholdMode::Rel; Any; c threshold_mode;
        /// Metrics to wait after a reduction.
        cooldown: u64 = 0; Any; c cooldown;
        /// The lower bound of the learning rate.
        min_lr: f64 = 0.0; NonNeg, f32; c min_lr;
    }
    lr(st) { st.plateau_lr }
    @check {
        if threshold_mode == ThresholdMode::Rel && threshold >= 1.0 {
            return Err(Error::invalid("threshold", threshold, "must be in [0, 1)"));
        }
        Ok(())
    }
    @init(st) {
        st.plateau_lr = base;
        st.best = match mode {
            PlateauMode::Min => f64::INFINITY,
            PlateauMode::Max => f64::NEG_INFINITY,
        };
    }
    @advance(st) {}
    @position(st, n) {
        Err(Error::InvalidState(
            "a ReduceOnPlateau schedule moves by the metrics fed to it (step_metric), not to a \
             position",
        ))
    }
    @state(st) {
        // The rate starts at `base` and only goes down, to `min_lr` at the lowest; the best is
        // one of the (finite) metrics or the start value; the counters are reset past
        // `patience` and count down from `cooldown`.
        let lr = st.plateau_lr;
        let lowest = min_lr.min(base);
        let start_best = match mode {
            PlateauMode::Min => f64::INFINITY,
            PlateauMode::Max => f64::NEG_INFINITY,
        };
        if !(lr >= lowest && lr <= base && (lr as f32).is_finite()) {
            return Err(format!(
                "plateau state holds an impossible learning rate {lr:?} (it lies in \
                 [{lowest:?}, {base:?}])"
            ));
        }
        if st.best.is_nan() || (st.best.is_infinite() && st.best != start_best) {
            return Err(format!(
                "plateau state holds an impossible best metric {:?} (mode {mode:?})",
                st.best
            ));
        }
        if st.num_bad_epochs > patience || st.cooldown_counter > cooldown {
            return Err(format!(
                "plateau state holds impossible counters: {} bad epochs (patience {patience}), \
                 cooldown counter {} (cooldown {cooldown})",
                st.num_bad_epochs, st.cooldown_counter
            ));
        }
        Ok(())
    }
}
