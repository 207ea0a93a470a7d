//! Adafactor (Shazeer & Stern, 2018; PyTorch's `torch.optim.Adafactor`, optax's `adafactor`):
//! a second moment factored into row and column averages for buffers registered with a 2-D
//! shape, elementwise for the others, with the update clipped by its RMS and scaled by the
//! parameters' RMS. Its passes (per-buffer reductions first) are in `kernels::factored`.

use super::Rule;
use crate::error::Error;
use crate::kernels::{grad_into_scratch, specialize, Lanes, Switch, Window};
use crate::simd::Vf32;

super::rule! {
    base {
        /// Adafactor: per registered buffer, with `beta2_t = 1 - t'^-decay_rate`
        /// (`t' = max(t - decay_offset, 1)`) and `q = g*g + eps_root`: a buffer registered with
        /// a shape `(rows, cols)` keeps row and column averages `R = beta2_t*R +
        /// (1-beta2_t)*mean_j(q)`, `C = beta2_t*C + (1-beta2_t)*mean_i(q)` and estimates
        /// `v_ij = R_i / max(mean(R), eps) * C_j`; any other buffer keeps
        /// `v = beta2_t*v + (1-beta2_t)*q`. Then `u = g / sqrt(max(v, eps^2))`,
        /// `u /= max(1, rms(u) / clipping_threshold)`, `s = lr_t * max(eps_scale, rms(p)) * u`
        /// (`lr_t = min(lr, 1/sqrt(t))` with `relative_step`; the parameter scale 1 without
        /// `multiply_by_parameter_scale`), `m = momentum*m + (1-momentum)*s` if `momentum > 0`,
        /// `p -= s + k*p` (`k = lr*weight_decay` with `weight_decay_by_lr`, else
        /// `weight_decay`). Defaults are PyTorch's; optax's `adafactor` is `eps_root = 1e-30`,
        /// `eps = 0`, `relative_step = 0`, `weight_decay_by_lr = 0`.
        Adafactor = 16, "adafactor" {
            /// Exponent of the second-moment decay `beta2_t = 1 - t'^-decay_rate` (PyTorch's
            /// `-beta2_decay`, optax's `decay_rate`).
            decay_rate: f64 = 0.8; NonNeg; c decay_rate;
            /// Steps subtracted from the count in the decay (optax's `decay_offset`; a whole
            /// number).
            decay_offset: f64 = 0.0; NonNeg; c decay_offset;
            /// Added to each squared gradient before it is averaged (optax's `eps`, 1e-30;
            /// PyTorch adds none).
            eps_root: f64 = 0.0; NonNeg, f32; c eps_root;
            /// Floor of the row averages' mean and, squared, of the second-moment estimate
            /// (PyTorch's `eps[0]`, f32's machine epsilon; optax has none: 0).
            eps: f64 = 1.1920928955078125e-7; NonNeg; c eps;
            /// Floor of the parameters' RMS in the parameter scale (PyTorch's `eps[1]`,
            /// optax's `min_scale`).
            eps_scale: f64 = 1e-3; NonNeg; c eps_scale;
            /// The update is divided by `max(1, rms(u) / clipping_threshold)` (PyTorch's `d`,
            /// optax's `clipping_threshold`); none: no clipping.
            clipping_threshold: Option<f64> = Some(1.0); Positive; c clipping_threshold;
            /// Scale the step by `max(eps_scale, rms(p))` (PyTorch always does; optax's
            /// `multiply_by_parameter_scale`).
            multiply_by_parameter_scale: bool = true; Any; c multiply_by_parameter_scale;
            /// The learning rate capped at `1/sqrt(t)`: `lr_t = min(lr, 1/sqrt(t))`
            /// (PyTorch's `rho_t`); off, `lr_t = lr` (optax).
            relative_step: bool = true; Any; c relative_step;
            /// Momentum of the scaled update (optax's `momentum`; 0: none, no `m` kept).
            momentum: f64 = 0.0; UnitOpen, f32; c momentum;
            /// Weight decay: `p -= k*p` with the update.
            weight_decay as "weight_decay (decoupled)": f64 = 0.0; NonNeg;
                c decoupled_weight_decay;
            /// `k = lr * weight_decay` (PyTorch); off, `k = weight_decay` (optax's
            /// `weight_decay_rate`).
            weight_decay_by_lr: bool = true; Any; c weight_decay_by_lr;
        }
        @state { (momentum > 0.0, true, false) }
        @rule(t, lr) {
            let t0 = t as f64;
            let tt = (t0 - decay_offset).max(1.0);
            let w = tt.powf(-decay_rate);
            let lr_t = if relative_step { lr.min(1.0 / t0.sqrt()) } else { lr };
            let k = if weight_decay_by_lr { lr * weight_decay } else { weight_decay };
            Rule::Adafactor {
                mode: Mode::Apply,
                sc: Scalars {
                    b: (1.0 - w) as f32,
                    c: w as f32,
                    b64: 1.0 - w,
                    c64: w,
                    eps_root: eps_root as f32,
                    eps_root64: eps_root,
                    eps,
                    e1sq: (eps * eps) as f32,
                    einv: (1.0 / eps) as f32,
                    eps_scale,
                    param_scale: multiply_by_parameter_scale,
                    clip: clipping_threshold,
                    lr_t,
                    mom: momentum as f32,
                    mom_c: (1.0 - momentum) as f32,
                    momentum: momentum > 0.0,
                    k: k as f32,
                    decay: weight_decay > 0.0,
                    r: 1.0,
                    factored: false,
                    step: lr_t as f32,
                },
            }
        }
        @check {
            if decay_offset.fract() != 0.0 || decay_offset > 9.007_199_254_740_992e15 {
                return Err(Error::invalid(
                    "decay_offset",
                    decay_offset,
                    "must be a whole number of steps below 2^53",
                ));
            }
            if !((eps * eps) as f32).is_finite() {
                return Err(Error::invalid(
                    "eps",
                    eps,
                    "its square (the floor of the second-moment estimate) must be finite as \
                     f32",
                ));
            }
            if eps == 0.0 && eps_root == 0.0 {
                return Err(Error::invalid(
                    "eps",
                    "0 with eps_root = 0",
                    "eps and eps_root must not both be 0: a buffer of zero gradients would \
                     divide 0 by 0",
                ));
            }
            Ok(())
        }
    }
    kernel {
        /// Adafactor's passes over a buffer (see `kernels::factored`): `Pre` (unfactored: the
        /// new `v` and `u` into the `v_max` slot, a block scratch), `Square` (factored: the
        /// gradient into the scratch, whose squares are summed by row and column), `Direction`
        /// (factored: `u` into the scratch from the row factor `r` and the column averages in
        /// the `v` slot) and `Apply` (the update with the buffer's `step`).
        Adafactor {
            /// Which pass.
            mode: crate::rules::adafactor::Mode,
            /// The per-step scalars.
            sc: crate::rules::adafactor::Scalars,
        }
        @state {
            (
                sc.momentum && mode == Mode::Apply,
                mode != Mode::Square,
                mode != Mode::Apply,
            )
        }
        @finite {
            [
                ("lr_t", sc.lr_t as f32),
                ("step (lr_t * parameter scale / clip denominator)", sc.step),
                ("weight decay factor", sc.k),
            ]
        }
        @span<V>(s) {
            let r = [
                sc.b, sc.c, sc.eps_root, sc.e1sq, sc.r, sc.step, sc.mom, sc.mom_c, sc.k, sc.einv,
            ]
            .map(V::splat);
            match mode {
                Mode::Pre => specialize!(V, s, adafactor_pre, (r)),
                Mode::Square => specialize!(V, s, grad_into_scratch, (r)),
                Mode::Direction => specialize!(V, s, adafactor_direction, (r)),
                Mode::Apply => specialize!(
                    V, s, adafactor_apply, (r); sc.momentum, sc.decay, sc.factored
                ),
            }
        }
    }
}

/// Which of Adafactor's passes a [`Rule::Adafactor`] runs (see `kernels::factored`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Unfactored, before the update: `v = b*v + c*(g*g + eps_root)`, `u` into `v_max`.
    Pre,
    /// Factored, first: the gradient into `v_max`.
    Square,
    /// Factored, second (with clipping): `u` into `v_max`, `v` holding the column averages.
    Direction,
    /// The update.
    Apply,
}

/// Adafactor's per-step scalars (see [`Rule::Adafactor`]): f32 for the loops, f64 for the
/// per-buffer scalars computed between the passes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scalars {
    /// `beta2_t`.
    pub b: f32,
    /// `1 - beta2_t`.
    pub c: f32,
    /// `beta2_t` in f64 (the factored averages).
    pub b64: f64,
    /// `1 - beta2_t` in f64.
    pub c64: f64,
    /// Added to each squared gradient.
    pub eps_root: f32,
    /// The same in f64.
    pub eps_root64: f64,
    /// Floor of the row averages' mean.
    pub eps: f64,
    /// `eps^2`, the floor of the estimate, rounded once.
    pub e1sq: f32,
    /// `1/eps` rounded once (+Inf for `eps = 0`): the ceiling of the factored estimate's
    /// inverse root.
    pub einv: f32,
    /// Floor of the parameters' RMS.
    pub eps_scale: f64,
    /// Whether the step is scaled by the parameters' RMS.
    pub param_scale: bool,
    /// The clipping threshold of the update's RMS.
    pub clip: Option<f64>,
    /// The learning rate of this step (capped with `relative_step`).
    pub lr_t: f64,
    /// Momentum.
    pub mom: f32,
    /// `1 - momentum`.
    pub mom_c: f32,
    /// Whether `m` is kept.
    pub momentum: bool,
    /// The weight-decay factor `k`.
    pub k: f32,
    /// Whether weight decay is on.
    pub decay: bool,
    /// The row factor of a factored buffer, `sqrt(max(mean(R), eps) / R_i)` (1 unfactored).
    pub r: f32,
    /// Whether the update pass runs over a factored buffer (`v` holding the column factors
    /// `sqrt(1 / C_j)`, `r` the row's factor) or an unfactored one (`v` the elementwise
    /// second moments).
    pub factored: bool,
    /// `lr_t * parameter scale / clip denominator`, rounded once.
    pub step: f32,
}

impl Scalars {
    /// The step from the buffer's sums of squares of `u` and of the parameters over `n`
    /// elements: `lr_t * max(eps_scale, rms(p)) / max(1, rms(u) / clipping_threshold)`.
    pub(crate) fn with_sums(self, sum_u: f64, sum_p: f64, n: usize) -> Scalars {
        let n = n.max(1) as f64;
        let scale = if self.param_scale {
            self.eps_scale.max((sum_p / n).sqrt())
        } else {
            1.0
        };
        let denom = match self.clip {
            Some(d) => 1.0f64.max((sum_u / n).sqrt() / d),
            None => 1.0,
        };
        Scalars {
            step: (self.lr_t * scale / denom) as f32,
            ..self
        }
    }
}

/// Unfactored: `u = g / sqrt(max(v, e1sq))` (the estimate second in the compare-select, so
/// that a NaN estimate stays NaN).
#[inline(always)]
fn direction<V: Vf32>(g: V, v: V, e1sq: V) -> V {
    g.div(e1sq.max(v).sqrt())
}

/// Factored: `u = g * min(einv, r*c)` from the row's factor `r` and the column's `c` (their
/// product second in the compare-select, so that a NaN stays NaN): no division or root per
/// element.
#[inline(always)]
pub(crate) fn direction_factored<V: Vf32>(g: V, c: V, r: V, einv: V) -> V {
    g.mul(einv.min(r.mul(c)))
}

/// Unfactored pass before the update: the new `v`, and `u` into `v_max` (the scratch).
#[inline(always)]
fn adafactor_pre<V: Vf32>(
    k: &Lanes<V>,
    [b, c, eps_root, e1sq, ..]: [V; 10],
    w: &mut Window<'_>,
    (cs, cv, cw, sy): (impl Switch, impl Switch, impl Switch, impl Switch),
) {
    let n = w.len(false, true, true, sy);
    // Slices of length `n` in locals, so that the loop's bounds checks go.
    let (param, grad) = (&w.param[..n], &w.grad[..n]);
    let (vs, out) = (&mut w.v[..n], &mut w.v_max[..n]);
    let mut i = 0;
    while n - i >= V::LANES {
        let p = V::load(&param[i..]);
        let g = k.grad(V::load(&grad[i..]), p, cs, cv, cw);
        let v = b.mul(V::load(&vs[i..])).add(c.mul(g.mul(g).add(eps_root)));
        v.store(&mut vs[i..]);
        direction(g, v, e1sq).store(&mut out[i..]);
        i += V::LANES;
    }
}

/// Factored second pass: `u` into `v_max` from the row factor and the column factors (`v`).
#[inline(always)]
fn adafactor_direction<V: Vf32>(
    k: &Lanes<V>,
    [_, _, _, _, r, _, _, _, _, einv]: [V; 10],
    w: &mut Window<'_>,
    (cs, cv, cw, sy): (impl Switch, impl Switch, impl Switch, impl Switch),
) {
    let n = w.len(false, true, true, sy);
    // Slices of length `n` in locals, so that the loop's bounds checks go.
    let (param, grad, cols, out) = (&w.param[..n], &w.grad[..n], &w.v[..n], &mut w.v_max[..n]);
    let mut i = 0;
    while n - i >= V::LANES {
        let p = V::load(&param[i..]);
        let g = k.grad(V::load(&grad[i..]), p, cs, cv, cw);
        direction_factored(g, V::load(&cols[i..]), r, einv).store(&mut out[i..]);
        i += V::LANES;
    }
}

/// The update: `s = step*u` (`u` of the factored form where `sf` is on, else the unfactored),
/// the momentum, `p -= s + k*p`.
#[inline(always)]
fn adafactor_apply<V: Vf32>(
    k: &Lanes<V>,
    [_, _, _, e1sq, r, step, mom, mom_c, kd, einv]: [V; 10],
    w: &mut Window<'_>,
    (cs, cv, cw, sy, sm, sd, sf): (
        impl Switch,
        impl Switch,
        impl Switch,
        impl Switch,
        impl Switch,
        impl Switch,
        impl Switch,
    ),
) {
    let n = w.len(sm.on(), true, false, sy);
    // Slices of length `n` (or empty, unused) in locals, so that the loop's bounds checks go.
    let Window {
        param,
        grad,
        m,
        v: vs,
        slow,
        ..
    } = w;
    let (param, grad, vs) = (&mut param[..n], &grad[..n], &vs[..n]);
    let m: &mut [f32] = if sm.on() { &mut m[..n] } else { &mut [] };
    let slow: &mut [f32] = if sy.on() { &mut slow[..n] } else { &mut [] };
    let mut i = 0;
    while n - i >= V::LANES {
        let p = V::load(&param[i..]);
        let g = k.grad(V::load(&grad[i..]), p, cs, cv, cw);
        let v = V::load(&vs[i..]);
        let u = if sf.on() {
            direction_factored(g, v, r, einv)
        } else {
            direction(g, v, e1sq)
        };
        let mut s = step.mul(u);
        if sm.on() {
            s = mom.mul(V::load(&m[i..])).add(mom_c.mul(s));
            s.store(&mut m[i..]);
        }
        if sd.on() {
            s = s.add(kd.mul(p));
        }
        k.store_param_in(p.sub(s), [&mut *param, &mut *slow], i, sy);
        i += V::LANES;
    }
}
