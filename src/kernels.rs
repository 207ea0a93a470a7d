//! The kernels: one fused pass per buffer that applies a whole update, and the fixed-order sum of
//! squares. Each is written once, generic over [`Vf32`], and stamped per tier in `crate::simd`.
//!
//! The public functions here are the stateless layer: the caller owns every buffer and passes
//! the per-step scalars in a [`Plan`]. The engine (`crate::engine`) builds plans from its
//! configuration and counters and calls these same functions. Each computes in flatopt's
//! floating-point mode whatever the caller's ([`FpMode`]).

use crate::config::Base;
use crate::error::Error;
use crate::simd::{self, FpMode, Tier, Vf32, SUMSQ_LANES};

/// Elements per block of the sum of squares. Each block is summed on its own (16 f64 lanes,
/// element `i` of the block into lane `i % 16`, lanes folded pairwise), and block partials are
/// then added in block order. Part of the determinism contract: changing it changes results.
pub const SUMSQ_BLOCK: usize = 4096;

/// The base update rule of one step with its per-step scalars, already rounded to f32 (they are
/// computed in f64 by [`Rule::for_step`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rule {
    /// `p -= lr * g`.
    Sgd { lr: f32 },
    /// Heavy-ball momentum: `b = g` on the first step, else `b = mu*b + damp*g` with
    /// `damp = 1 - dampening`; `d = g + mu*b` (Nesterov) or `b`; `p -= lr * d`.
    Momentum {
        lr: f32,
        mu: f32,
        damp: f32,
        nesterov: bool,
        first: bool,
    },
    /// Adam / AMSGrad / AdamW: `m = b1*m + (1-b1)*g`, `v = b2*v + (1-b2)*g*g`
    /// (AMSGrad: `v_max = max(v_max, v)` used in place of v),
    /// `p = p*decay - step * (m / (sqrt(v)*inv_sqrt_bc2 + eps))`
    /// with `step = lr / (1 - b1^t)`, `inv_sqrt_bc2 = 1 / sqrt(1 - b2^t)` and, for AdamW only,
    /// `decay = 1 - lr*lambda`.
    Adam {
        b1: f32,
        one_minus_b1: f32,
        b2: f32,
        one_minus_b2: f32,
        step: f32,
        inv_sqrt_bc2: f32,
        eps: f32,
        amsgrad: bool,
        decay: Option<f32>,
    },
    /// RAdam: moments as Adam; if `rectified`, `p -= step * (m / (sqrt(v)*inv_sqrt_bc2 + eps))`
    /// with `step = lr * r / (1 - b1^t)`, else `p -= step * m` with `step = lr / (1 - b1^t)`.
    RAdam {
        b1: f32,
        one_minus_b1: f32,
        b2: f32,
        one_minus_b2: f32,
        step: f32,
        inv_sqrt_bc2: f32,
        eps: f32,
        rectified: bool,
    },
}

/// Everything one fused pass needs besides the buffers: the gradient transforms in pipeline
/// order, the base rule, and the Lookahead sync if this step is a sync step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plan {
    /// Global-norm clipping: `g *= scale` (only when the norm exceeded the threshold).
    pub clip_scale: Option<f32>,
    /// Value clipping: `g = min(max(g, -c), c)`.
    pub clip_value: Option<f32>,
    /// Coupled weight decay: `g += wd * p`.
    pub weight_decay: Option<f32>,
    pub rule: Rule,
    /// Lookahead sync on this step: `s = s + alpha*(p - s); p = s`.
    pub sync_alpha: Option<f32>,
}

/// The buffers of one fused pass, all of the same length as `param`. State buffers a rule does
/// not use may be empty: `m` is the momentum trace (SGD with momentum) or the first moment
/// (Adam family), `v` the second moment, `v_max` the AMSGrad maximum, `slow` the Lookahead slow
/// weights (read and written on sync steps only).
pub struct Buffers<'a> {
    pub param: &'a mut [f32],
    pub grad: &'a [f32],
    pub m: &'a mut [f32],
    pub v: &'a mut [f32],
    pub v_max: &'a mut [f32],
    pub slow: &'a mut [f32],
}

impl Rule {
    /// The rule for applied step `t` (1-based) of `base` at learning rate `lr`: every per-step
    /// scalar is computed in f64 and rounded to f32 once. `t` counts base-optimizer steps
    /// (bias correction, RAdam's rho_t, momentum's first step).
    pub fn for_step(base: &Base, t: u64, lr: f64) -> Rule {
        let _mode = FpMode::enter();
        let t = t.max(1);
        let tf = t as f64;
        let pow = |b: f64| pow_step(b, tf);
        match *base {
            Base::Sgd {
                momentum,
                dampening,
                nesterov,
            } => {
                if momentum > 0.0 {
                    Rule::Momentum {
                        lr: lr as f32,
                        mu: momentum as f32,
                        damp: (1.0 - dampening) as f32,
                        nesterov,
                        first: t == 1,
                    }
                } else {
                    Rule::Sgd { lr: lr as f32 }
                }
            }
            Base::Adam {
                b1,
                b2,
                eps,
                amsgrad,
            } => adam_rule(b1, b2, eps, t, lr, amsgrad, None),
            Base::AdamW {
                b1,
                b2,
                eps,
                weight_decay,
            } => adam_rule(b1, b2, eps, t, lr, false, Some(weight_decay)),
            Base::RAdam { b1, b2, eps } => {
                let bc1 = 1.0 - pow(b1);
                let bc2 = 1.0 - pow(b2);
                let rho_inf = 2.0 / (1.0 - b2) - 1.0;
                let rho_t = rho_inf - 2.0 * tf * pow(b2) / bc2;
                let rectified = rho_t >= 5.0;
                let step = if rectified {
                    let r = ((rho_t - 4.0) * (rho_t - 2.0) * rho_inf
                        / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t))
                        .sqrt();
                    lr * r / bc1
                } else {
                    lr / bc1
                };
                Rule::RAdam {
                    b1: b1 as f32,
                    one_minus_b1: (1.0 - b1) as f32,
                    b2: b2 as f32,
                    one_minus_b2: (1.0 - b2) as f32,
                    step: step as f32,
                    inv_sqrt_bc2: (1.0 / bc2.sqrt()) as f32,
                    eps: eps as f32,
                    rectified,
                }
            }
        }
    }

    /// Which state buffers the rule reads and writes: (m, v, v_max).
    pub fn state_used(&self) -> (bool, bool, bool) {
        match self {
            Rule::Sgd { .. } => (false, false, false),
            Rule::Momentum { .. } => (true, false, false),
            Rule::Adam { amsgrad, .. } => (true, true, *amsgrad),
            Rule::RAdam { .. } => (true, true, false),
        }
    }
}

/// `b^t` for a decay rate `b` in [0, 1) and step `t >= 1`, as `powf` computes it (an f64
/// exponential of the step: exact for small t, smooth for huge ones). Beyond the point where it
/// is below half the smallest subnormal its correctly rounded value is 0, which is returned
/// directly: `powf` would take its slow underflow path (errno included) on every step of a long
/// run (for b = 0.9 from about step 7,000 on).
#[inline]
fn pow_step(b: f64, t: f64) -> f64 {
    if t > 1100.0 && t * b.log2() < -1100.0 {
        0.0
    } else {
        b.powf(t)
    }
}

fn adam_rule(
    b1: f64,
    b2: f64,
    eps: f64,
    t: u64,
    lr: f64,
    amsgrad: bool,
    decoupled: Option<f64>,
) -> Rule {
    let tf = t as f64;
    let bc1 = 1.0 - pow_step(b1, tf);
    let bc2 = 1.0 - pow_step(b2, tf);
    Rule::Adam {
        b1: b1 as f32,
        one_minus_b1: (1.0 - b1) as f32,
        b2: b2 as f32,
        one_minus_b2: (1.0 - b2) as f32,
        step: (lr / bc1) as f32,
        inv_sqrt_bc2: (1.0 / bc2.sqrt()) as f32,
        eps: eps as f32,
        amsgrad,
        decay: decoupled.map(|wd| (1.0 - lr * wd) as f32),
    }
}

impl Buffers<'_> {
    /// Checks that every buffer the plan touches has the length of `param`.
    pub fn check(&self, plan: &Plan) -> Result<(), Error> {
        let n = self.param.len();
        let (m, v, vmax) = plan.rule.state_used();
        let checks = [
            ("grad", true, self.grad.len()),
            ("m (first moment / momentum)", m, self.m.len()),
            ("v (second moment)", v, self.v.len()),
            ("v_max (AMSGrad maximum)", vmax, self.v_max.len()),
            ("slow weights", plan.sync_alpha.is_some(), self.slow.len()),
        ];
        for (what, used, len) in checks {
            if used && len != n {
                return Err(Error::LengthMismatch {
                    what: what.to_string(),
                    expected: n,
                    got: len,
                });
            }
        }
        Ok(())
    }
}

/// Value clipping, `min(max(x, lo), hi)`. The possibly-NaN value goes second so that NaN
/// passes through on every tier (see `Vf32::max`). Shared by the fused pass and `Op::ClipValue`.
#[inline(always)]
fn clamp<V: Vf32>(x: V, lo: V, hi: V) -> V {
    hi.min(lo.max(x))
}

/// The Lookahead pull of slow weights `s` toward fast weights `p`: `s + alpha*(p - s)`. Shared by
/// the fused pass and `Op::Sync`, so both round identically.
#[inline(always)]
fn pull<V: Vf32>(s: V, p: V, alpha: V) -> V {
    s.add(alpha.mul(p.sub(s)))
}

/// Whether an optional step of the fused pass runs. The vector tiers compile one copy of a rule's
/// loop per combination of [`On`] and [`Off`] (see `specialize!`), so no flag is tested inside
/// their hot loops; the scalar tier and the tails pass plain `bool`s (one copy, a predictable
/// branch per element). The same operations run either way: a switch never changes a result.
trait Switch: Copy {
    fn on(self) -> bool;
}

#[derive(Clone, Copy)]
struct On;

#[derive(Clone, Copy)]
struct Off;

impl Switch for On {
    #[inline(always)]
    fn on(self) -> bool {
        true
    }
}

impl Switch for Off {
    #[inline(always)]
    fn on(self) -> bool {
        false
    }
}

impl Switch for bool {
    #[inline(always)]
    fn on(self) -> bool {
        self
    }
}

/// `specialize!(f, (args..); c1, .., ck)` calls `f(args.., (s1, .., sk))` with each condition
/// `ci` turned into the type `On` or `Off`, if `specialized` is true: 2^k copies of `f` and one
/// run-time choice among them. Otherwise it calls the one copy `f(args.., (c1, .., ck))` that
/// tests the `bool`s as it goes.
macro_rules! specialize {
    ($specialized:expr, $f:path, ($($arg:expr),*); $($c:expr),*) => {
        if $specialized {
            specialize!(@on $f, ($($arg),*), (); $($c),*)
        } else {
            $f($($arg,)* ($($c,)*))
        }
    };
    (@on $f:path, ($($arg:expr),*), ($($sw:expr),*); ) => {
        $f($($arg,)* ($($sw,)*))
    };
    (@on $f:path, ($($arg:expr),*), ($($sw:expr),*); $c:expr $(, $rest:expr)*) => {
        if $c {
            specialize!(@on $f, ($($arg),*), ($($sw,)* On); $($rest),*)
        } else {
            specialize!(@on $f, ($($arg),*), ($($sw,)* Off); $($rest),*)
        }
    };
}

/// The optional steps of a pass with their scalars splatted once (zero for a step that is off:
/// its switch keeps it unused).
struct Lanes<V> {
    clip_scale: V,
    clip_lo: V,
    clip_hi: V,
    weight_decay: V,
    sync_alpha: V,
}

impl<V: Vf32> Lanes<V> {
    #[inline(always)]
    fn new(plan: &Plan) -> Self {
        let c = plan.clip_value.unwrap_or(0.0);
        Lanes {
            clip_scale: V::splat(plan.clip_scale.unwrap_or(0.0)),
            clip_lo: V::splat(-c),
            clip_hi: V::splat(c),
            weight_decay: V::splat(plan.weight_decay.unwrap_or(0.0)),
            sync_alpha: V::splat(plan.sync_alpha.unwrap_or(0.0)),
        }
    }

    /// Steps 1-3 of the pipeline: clip scale, value clip, coupled weight decay.
    #[inline(always)]
    fn grad(&self, mut g: V, p: V, cs: impl Switch, cv: impl Switch, wd: impl Switch) -> V {
        if cs.on() {
            g = g.mul(self.clip_scale);
        }
        if cv.on() {
            g = clamp(g, self.clip_lo, self.clip_hi);
        }
        if wd.on() {
            g = g.add(self.weight_decay.mul(p));
        }
        g
    }

    /// Step 5: writes the new parameters `p` of lanes `i..`, through the Lookahead sync on sync
    /// steps.
    #[inline(always)]
    fn store_param(&self, p: V, w: &mut Window<'_>, i: usize, sync: impl Switch) {
        if sync.on() {
            let s = pull(V::load(&w.slow[i..]), p, self.sync_alpha);
            s.store(&mut w.slow[i..]);
            s.store(&mut w.param[i..]);
        } else {
            p.store(&mut w.param[i..]);
        }
    }
}

/// The buffers of one pass, each used one cut to exactly `param`'s length up front (an unused
/// one is empty and never touched): with every length equal to the loop bound, the compiler
/// drops the bounds checks inside the loops.
struct Window<'a> {
    param: &'a mut [f32],
    grad: &'a [f32],
    m: &'a mut [f32],
    v: &'a mut [f32],
    v_max: &'a mut [f32],
    slow: &'a mut [f32],
}

impl<'a> Window<'a> {
    /// Elements `start..end` of the buffers `plan` uses.
    #[inline(always)]
    fn new(plan: &Plan, b: &'a mut Buffers<'_>, start: usize, end: usize) -> Self {
        fn cut(s: &mut [f32], used: bool, start: usize, end: usize) -> &mut [f32] {
            if used {
                &mut s[start..end]
            } else {
                &mut []
            }
        }
        let (m, v, vmax) = plan.rule.state_used();
        Window {
            param: &mut b.param[start..end],
            grad: &b.grad[start..end],
            m: cut(b.m, m, start, end),
            v: cut(b.v, v, start, end),
            v_max: cut(b.v_max, vmax, start, end),
            slow: cut(b.slow, plan.sync_alpha.is_some(), start, end),
        }
    }
}

impl Window<'_> {
    /// The number of elements; re-cuts every used buffer to it in place, where the loop can see
    /// it, so that indexing any of them below the bound needs no check.
    #[inline(always)]
    fn len(&mut self, m: bool, v: bool, v_max: bool, slow: impl Switch) -> usize {
        fn fit(s: &mut &mut [f32], used: bool, n: usize) {
            if used {
                let t = std::mem::take(s);
                *s = &mut t[..n];
            }
        }
        let n = self.param.len();
        self.grad = &self.grad[..n];
        fit(&mut self.m, m, n);
        fit(&mut self.v, v, n);
        fit(&mut self.v_max, v_max, n);
        fit(&mut self.slow, slow.on(), n);
        n
    }
}

/// One fused pass over `b` with vectors `V`, the head and tail with the scalar tier.
/// Callers must have run [`Buffers::check`].
///
/// The head runs up to the first vector-aligned element (`V::LANES * 4` bytes) of the state
/// (`m`; `param` for plain SGD), so that the vector loads and stores of the state, which has the
/// most traffic, never straddle two cache lines. The engine places its state at its parameters'
/// offset within a page, so this aligns the parameters too; buffers the host owns are aligned
/// alike when they come from one allocator. A vector access across a line costs about a third
/// of the in-cache speed. Every element goes through the same operations on either path, so
/// where the split falls never changes a result.
#[inline(always)]
pub(crate) fn fused<V: Vf32>(plan: &Plan, mut b: Buffers<'_>) {
    let n = b.param.len();
    let anchor = if plan.rule.state_used().0 {
        b.m.as_ptr()
    } else {
        b.param.as_ptr()
    };
    let head = if V::LANES > 1 {
        anchor.align_offset(V::LANES * 4).min(n)
    } else {
        0
    };
    let split = n - (n - head) % V::LANES;
    span::<f32>(plan, Window::new(plan, &mut b, 0, head), false);
    span::<V>(plan, Window::new(plan, &mut b, head, split), V::LANES > 1);
    span::<f32>(plan, Window::new(plan, &mut b, split, n), false);
}

/// The fused update of a window whose length is a multiple of `V::LANES`, through a loop
/// specialised for the plan's switches if `specialized`.
#[inline(always)]
fn span<V: Vf32>(plan: &Plan, mut w: Window<'_>, specialized: bool) {
    let k = Lanes::<V>::new(plan);
    let w = &mut w;
    let (cs, cv, wd, sy) = (
        plan.clip_scale.is_some(),
        plan.clip_value.is_some(),
        plan.weight_decay.is_some(),
        plan.sync_alpha.is_some(),
    );
    match plan.rule {
        Rule::Sgd { lr } => {
            let lr = V::splat(lr);
            specialize!(specialized, sgd, (&k, lr, w); cs, cv, wd, sy)
        }
        Rule::Momentum {
            lr,
            mu,
            damp,
            nesterov,
            first,
        } => {
            let r = [lr, mu, damp].map(V::splat);
            specialize!(specialized, momentum, (&k, r, w); cs, cv, wd, sy, nesterov, first)
        }
        Rule::Adam {
            b1,
            one_minus_b1,
            b2,
            one_minus_b2,
            step,
            inv_sqrt_bc2,
            eps,
            amsgrad,
            decay,
        } => {
            let r = Moments::new(
                [b1, one_minus_b1, b2, one_minus_b2],
                [step, inv_sqrt_bc2, eps, decay.unwrap_or(1.0)],
            );
            let decoupled = decay.is_some();
            specialize!(specialized, adam, (&k, &r, w); cs, cv, wd, sy, amsgrad, decoupled)
        }
        Rule::RAdam {
            b1,
            one_minus_b1,
            b2,
            one_minus_b2,
            step,
            inv_sqrt_bc2,
            eps,
            rectified,
        } => {
            let r = Moments::new(
                [b1, one_minus_b1, b2, one_minus_b2],
                [step, inv_sqrt_bc2, eps, 1.0],
            );
            specialize!(specialized, radam, (&k, &r, w); cs, cv, wd, sy, rectified)
        }
    }
}

/// SGD: `p -= lr * g`.
#[inline(always)]
fn sgd<V: Vf32>(
    k: &Lanes<V>,
    lr: V,
    w: &mut Window<'_>,
    (cs, cv, wd, sy): (impl Switch, impl Switch, impl Switch, impl Switch),
) {
    let n = w.len(false, false, false, sy);
    let mut i = 0;
    while n - i >= V::LANES {
        let p = V::load(&w.param[i..]);
        let g = k.grad(V::load(&w.grad[i..]), p, cs, cv, wd);
        k.store_param(p.sub(lr.mul(g)), w, i, sy);
        i += V::LANES;
    }
}

/// Heavy-ball momentum, `[lr, mu, damp]` (see [`Rule::Momentum`]).
#[inline(always)]
fn momentum<V: Vf32>(
    k: &Lanes<V>,
    [lr, mu, damp]: [V; 3],
    w: &mut Window<'_>,
    (cs, cv, wd, sy, nesterov, first): (
        impl Switch,
        impl Switch,
        impl Switch,
        impl Switch,
        impl Switch,
        impl Switch,
    ),
) {
    let n = w.len(true, false, false, sy);
    let mut i = 0;
    while n - i >= V::LANES {
        let p = V::load(&w.param[i..]);
        let g = k.grad(V::load(&w.grad[i..]), p, cs, cv, wd);
        let t = if first.on() {
            g
        } else {
            mu.mul(V::load(&w.m[i..])).add(damp.mul(g))
        };
        t.store(&mut w.m[i..]);
        let d = if nesterov.on() { g.add(mu.mul(t)) } else { t };
        k.store_param(p.sub(lr.mul(d)), w, i, sy);
        i += V::LANES;
    }
}

/// The splatted scalars of the Adam family (see [`Rule::Adam`]); `decay` is 1 unless AdamW.
struct Moments<V> {
    b1: V,
    c1: V,
    b2: V,
    c2: V,
    step: V,
    isb2: V,
    eps: V,
    decay: V,
}

impl<V: Vf32> Moments<V> {
    #[inline(always)]
    fn new([b1, c1, b2, c2]: [f32; 4], [step, isb2, eps, decay]: [f32; 4]) -> Self {
        Moments {
            b1: V::splat(b1),
            c1: V::splat(c1),
            b2: V::splat(b2),
            c2: V::splat(c2),
            step: V::splat(step),
            isb2: V::splat(isb2),
            eps: V::splat(eps),
            decay: V::splat(decay),
        }
    }

    /// Updates the moments of lanes `i..` from gradient `g` and returns them.
    #[inline(always)]
    fn update(&self, g: V, w: &mut Window<'_>, i: usize) -> (V, V) {
        let m = self.b1.mul(V::load(&w.m[i..])).add(self.c1.mul(g));
        let v = self.b2.mul(V::load(&w.v[i..])).add(self.c2.mul(g.mul(g)));
        m.store(&mut w.m[i..]);
        v.store(&mut w.v[i..]);
        (m, v)
    }

    /// The bias-corrected direction `m / (sqrt(v) * inv_sqrt_bc2 + eps)`.
    #[inline(always)]
    fn direction(&self, m: V, v: V) -> V {
        m.div(v.sqrt().mul(self.isb2).add(self.eps))
    }
}

/// Adam, AMSGrad and AdamW (see [`Rule::Adam`]).
#[inline(always)]
fn adam<V: Vf32>(
    k: &Lanes<V>,
    r: &Moments<V>,
    w: &mut Window<'_>,
    (cs, cv, wd, sy, amsgrad, decoupled): (
        impl Switch,
        impl Switch,
        impl Switch,
        impl Switch,
        impl Switch,
        impl Switch,
    ),
) {
    let n = w.len(true, true, amsgrad.on(), sy);
    let mut i = 0;
    while n - i >= V::LANES {
        let p = V::load(&w.param[i..]);
        let g = k.grad(V::load(&w.grad[i..]), p, cs, cv, wd);
        let (m, v) = r.update(g, w, i);
        let vd = if amsgrad.on() {
            let vm = V::load(&w.v_max[i..]).max(v);
            vm.store(&mut w.v_max[i..]);
            vm
        } else {
            v
        };
        let u = r.direction(m, vd);
        let pd = if decoupled.on() { p.mul(r.decay) } else { p };
        k.store_param(pd.sub(r.step.mul(u)), w, i, sy);
        i += V::LANES;
    }
}

/// RAdam (see [`Rule::RAdam`]).
#[inline(always)]
fn radam<V: Vf32>(
    k: &Lanes<V>,
    r: &Moments<V>,
    w: &mut Window<'_>,
    (cs, cv, wd, sy, rectified): (
        impl Switch,
        impl Switch,
        impl Switch,
        impl Switch,
        impl Switch,
    ),
) {
    let n = w.len(true, true, false, sy);
    let mut i = 0;
    while n - i >= V::LANES {
        let p = V::load(&w.param[i..]);
        let g = k.grad(V::load(&w.grad[i..]), p, cs, cv, wd);
        let (m, v) = r.update(g, w, i);
        let u = if rectified.on() { r.direction(m, v) } else { m };
        k.store_param(p.sub(r.step.mul(u)), w, i, sy);
        i += V::LANES;
    }
}

/// Writes the sum of squares of each [`SUMSQ_BLOCK`]-element block of `x` into `partials`
/// (`partials.len()` must be `x.len().div_ceil(SUMSQ_BLOCK)`).
#[inline(always)]
pub(crate) fn sumsq_partials<V: Vf32>(x: &[f32], partials: &mut [f64]) {
    for (block, out) in x.chunks(SUMSQ_BLOCK).zip(partials.iter_mut()) {
        let mut acc = V::acc_zero();
        let mut chunks = block.chunks_exact(SUMSQ_LANES);
        for c in &mut chunks {
            acc = V::acc_add_squares(acc, c);
        }
        let mut lanes = V::acc_lanes(acc);
        for (lane, &v) in lanes.iter_mut().zip(chunks.remainder()) {
            let d = f64::from(v);
            *lane += d * d;
        }
        *out = fold_lanes(lanes);
    }
}

/// Folds the 16 lanes pairwise: ((l0+l1)+(l2+l3)) + ... in a fixed tree.
#[inline(always)]
fn fold_lanes(mut l: [f64; SUMSQ_LANES]) -> f64 {
    let mut width = SUMSQ_LANES;
    while width > 1 {
        width /= 2;
        for j in 0..width {
            l[j] = l[2 * j] + l[2 * j + 1];
        }
    }
    l[0]
}

/// Number of sum-of-squares blocks of a buffer of `len` elements.
pub fn sumsq_block_count(len: usize) -> usize {
    len.div_ceil(SUMSQ_BLOCK)
}

// ---------------------------------------------------------------------------------------------
// The stateless layer: tier dispatch.

/// Applies one fused update to one buffer on `tier`, after checking every length.
/// Nothing is written if a length is wrong.
pub fn apply(tier: Tier, plan: &Plan, b: Buffers<'_>) -> Result<(), Error> {
    let _mode = FpMode::enter();
    b.check(plan)?;
    apply_unchecked_lengths(tier, plan, b);
    Ok(())
}

/// [`apply`] without the length check (the engine checks once at registration). Still memory
/// safe: a short state buffer panics on its bounds check.
pub(crate) fn apply_unchecked_lengths(tier: Tier, plan: &Plan, b: Buffers<'_>) {
    match tier {
        Tier::Scalar => fused::<f32>(plan, b),
        Tier::Portable => fused::<simd::portable::Portable>(plan, b),
        #[cfg(target_arch = "x86_64")]
        Tier::Avx2 | Tier::Avx512 => simd::avx2::fused(plan, b),
        #[cfg(not(target_arch = "x86_64"))]
        Tier::Avx2 | Tier::Avx512 => fused::<simd::portable::Portable>(plan, b),
    }
}

/// Block partial sums of squares of `x` on `tier` (see [`SUMSQ_BLOCK`]).
pub fn sum_squares_partials(tier: Tier, x: &[f32], partials: &mut [f64]) -> Result<(), Error> {
    let _mode = FpMode::enter();
    let want = sumsq_block_count(x.len());
    if partials.len() != want {
        return Err(Error::LengthMismatch {
            what: "partials (one per block of the sum of squares)".to_string(),
            expected: want,
            got: partials.len(),
        });
    }
    sumsq_partials_unchecked(tier, x, partials);
    Ok(())
}

pub(crate) fn sumsq_partials_unchecked(tier: Tier, x: &[f32], partials: &mut [f64]) {
    match tier {
        Tier::Scalar => sumsq_partials::<f32>(x, partials),
        Tier::Portable => sumsq_partials::<simd::portable::Portable>(x, partials),
        #[cfg(target_arch = "x86_64")]
        Tier::Avx2 | Tier::Avx512 => simd::avx2::sumsq(x, partials),
        #[cfg(not(target_arch = "x86_64"))]
        Tier::Avx2 | Tier::Avx512 => sumsq_partials::<simd::portable::Portable>(x, partials),
    }
}

/// Sum of squares of `x`, accumulated in f64 in the fixed order of the determinism contract:
/// block partials added in block order. Finite for any finite input (an f64 cannot overflow on
/// squares of f32), NaN or +Inf if `x` holds a non-finite value.
pub fn sum_squares(tier: Tier, x: &[f32]) -> f64 {
    let _mode = FpMode::enter();
    let mut total = 0.0;
    for block in x.chunks(SUMSQ_BLOCK) {
        let mut partial = [0.0];
        sumsq_partials_unchecked(tier, block, &mut partial);
        total += partial[0];
    }
    total
}

/// Index and value of the first NaN or ±Inf in `x` (a cold path: only run once a sum of squares
/// came out non-finite).
pub fn first_non_finite(x: &[f32]) -> Option<(usize, f32)> {
    x.iter()
        .enumerate()
        .find(|(_, v)| !v.is_finite())
        .map(|(i, v)| (i, *v))
}

/// A standalone elementwise operation, for hosts that compose their own pipeline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Op {
    /// `x *= s`.
    Scale(f32),
    /// `x = min(max(x, -c), c)` (NaN stays NaN).
    ClipValue(f32),
    /// Lookahead sync of fast weights `x` and slow weights `y`: `y = y + alpha*(x - y); x = y`.
    Sync(f32),
}

/// Applies `op` to `x` (and `y` for [`Op::Sync`], which must then have `x`'s length).
#[inline(always)]
pub(crate) fn elementwise<V: Vf32>(op: Op, x: &mut [f32], y: &mut [f32]) {
    elementwise_span::<V>(op, x, y, 0, x.len() - x.len() % V::LANES);
    elementwise_span::<f32>(op, x, y, x.len() - x.len() % V::LANES, x.len());
}

#[inline(always)]
fn elementwise_span<V: Vf32>(op: Op, x: &mut [f32], y: &mut [f32], start: usize, end: usize) {
    let mut i = start;
    match op {
        Op::Scale(s) => {
            let s = V::splat(s);
            while i < end {
                V::load(&x[i..]).mul(s).store(&mut x[i..]);
                i += V::LANES;
            }
        }
        Op::ClipValue(c) => {
            let (lo, hi) = (V::splat(-c), V::splat(c));
            while i < end {
                clamp(V::load(&x[i..]), lo, hi).store(&mut x[i..]);
                i += V::LANES;
            }
        }
        Op::Sync(alpha) => {
            let alpha = V::splat(alpha);
            while i < end {
                let s = V::load(&y[i..]);
                let s = pull(s, V::load(&x[i..]), alpha);
                s.store(&mut y[i..]);
                s.store(&mut x[i..]);
                i += V::LANES;
            }
        }
    }
}

/// Applies an elementwise operation on `tier`. `y` is used by [`Op::Sync`] only (the slow
/// weights; pass an empty slice otherwise). Checks its arguments before writing anything.
pub fn apply_op(tier: Tier, op: Op, x: &mut [f32], y: &mut [f32]) -> Result<(), Error> {
    let _mode = FpMode::enter();
    match op {
        Op::Scale(s) if !s.is_finite() => {
            return Err(Error::invalid("scale", s, "must be finite"));
        }
        Op::ClipValue(c) if c.is_nan() || c < 0.0 => {
            return Err(Error::invalid(
                "clip_value",
                c,
                "must be >= 0 (+inf allowed)",
            ));
        }
        Op::Sync(a) if !(0.0..=1.0).contains(&a) => {
            return Err(Error::invalid("alpha", a, "must be in [0, 1]"));
        }
        Op::Sync(_) if y.len() != x.len() => {
            return Err(Error::LengthMismatch {
                what: "slow weights".to_string(),
                expected: x.len(),
                got: y.len(),
            });
        }
        _ => {}
    }
    match tier {
        Tier::Scalar => elementwise::<f32>(op, x, y),
        Tier::Portable => elementwise::<simd::portable::Portable>(op, x, y),
        #[cfg(target_arch = "x86_64")]
        Tier::Avx2 | Tier::Avx512 => simd::avx2::elementwise(op, x, y),
        #[cfg(not(target_arch = "x86_64"))]
        Tier::Avx2 | Tier::Avx512 => elementwise::<simd::portable::Portable>(op, x, y),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::pow_step;

    /// The underflow shortcut returns exactly what `powf` returns, around every boundary.
    #[test]
    fn pow_step_is_powf() {
        let rates = [
            0.0, 1e-300, 0.1, 0.5, 0.8, 0.9, 0.95, 0.99, 0.999, 0.9999, 0.999_999,
        ];
        for b in rates {
            let mut steps: Vec<u64> = (1..2000).chain([7068, 7069, 1 << 20, 1 << 40]).collect();
            steps.push(u64::MAX);
            if b > 0.0 {
                // Around the steps where b^t crosses 2^-1100 and the smallest subnormal.
                for edge in [1100.0, 1074.0] {
                    let t0 = (edge / -f64::log2(b)) as u64;
                    steps.extend(t0.saturating_sub(300)..t0 + 300);
                }
            }
            for t in steps {
                let t = t as f64;
                assert_eq!(pow_step(b, t).to_bits(), b.powf(t).to_bits(), "{b}^{t}");
            }
        }
    }
}
