//! The fused pass: one loop per base rule that applies the whole update to a buffer (gradient
//! transforms, the rule, the Lookahead sync), written once, generic over [`Vf32`], with one copy
//! per combination of the plan's switches on the vector tiers (`specialize!`). The tiers in
//! `crate::simd` stamp [`fused`] into their instruction sets.

use super::ops::{clamp, pull, sign};
use super::plan::{Buffers, Plan, Rule};
use crate::simd::Vf32;

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
        Rule::Adagrad {
            step,
            eps_in,
            eps_out,
        } => {
            let r = [step, eps_in, eps_out].map(V::splat);
            specialize!(specialized, adagrad, (&k, r, w); cs, cv, wd, sy)
        }
        Rule::RmsProp {
            lr,
            alpha,
            one_minus_alpha,
            eps_in,
            eps_out,
            mu,
            centered,
        } => {
            let r = [
                lr,
                alpha,
                one_minus_alpha,
                eps_in,
                eps_out,
                mu.unwrap_or(0.0),
            ]
            .map(V::splat);
            let momentum = mu.is_some();
            specialize!(specialized, rmsprop, (&k, r, w); cs, cv, wd, sy, centered, momentum)
        }
        Rule::Adamax {
            b1,
            one_minus_b1,
            b2,
            step,
            eps_in,
            eps_out,
        } => {
            let r = [b1, one_minus_b1, b2, step, eps_in, eps_out].map(V::splat);
            specialize!(specialized, adamax, (&k, r, w); cs, cv, wd, sy)
        }
        Rule::NAdam {
            b1,
            one_minus_b1,
            b2,
            one_minus_b2,
            grad_step,
            momentum_step,
            inv_sqrt_bc2,
            eps,
            decay,
        } => {
            let r = Moments::new(
                [b1, one_minus_b1, b2, one_minus_b2],
                [momentum_step, inv_sqrt_bc2, eps, decay.unwrap_or(1.0)],
            );
            let (gs, decoupled) = (V::splat(grad_step), decay.is_some());
            specialize!(specialized, nadam, (&k, &r, gs, w); cs, cv, wd, sy, decoupled)
        }
        Rule::Lion {
            lr,
            b1,
            one_minus_b1,
            b2,
            one_minus_b2,
            decay,
        } => {
            let r = [lr, b1, one_minus_b1, b2, one_minus_b2, decay].map(V::splat);
            specialize!(specialized, lion, (&k, r, w); cs, cv, wd, sy)
        }
        Rule::AdaBelief {
            b1,
            one_minus_b1,
            b2,
            one_minus_b2,
            step,
            inv_sqrt_bc2,
            eps,
            eps_root,
        } => {
            let r = Moments::new(
                [b1, one_minus_b1, b2, one_minus_b2],
                [step, inv_sqrt_bc2, eps, eps_root],
            );
            specialize!(specialized, adabelief, (&k, &r, w); cs, cv, wd, sy)
        }
        Rule::Yogi {
            b1,
            one_minus_b1,
            one_minus_b2,
            step,
            inv_sqrt_bc2,
            eps,
        } => {
            let r = Moments::new(
                [b1, one_minus_b1, 1.0, one_minus_b2],
                [step, inv_sqrt_bc2, eps, 1.0],
            );
            specialize!(specialized, yogi, (&k, &r, w); cs, cv, wd, sy)
        }
        Rule::Adadelta {
            lr,
            rho,
            one_minus_rho,
            eps,
        } => {
            let r = [lr, rho, one_minus_rho, eps].map(V::splat);
            specialize!(specialized, adadelta, (&k, r, w); cs, cv, wd, sy)
        }
        Rule::Rprop {
            initial_step,
            eta_minus,
            eta_plus,
            min_step,
            max_step,
            first,
        } => {
            let r = [initial_step, eta_minus, eta_plus, min_step, max_step].map(V::splat);
            specialize!(specialized, rprop, (&k, r, w); cs, cv, wd, sy, first)
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

/// Adagrad, `[step, eps_in, eps_out]` (see [`Rule::Adagrad`]); the sum of squares is `v`.
#[inline(always)]
fn adagrad<V: Vf32>(
    k: &Lanes<V>,
    [step, eps_in, eps_out]: [V; 3],
    w: &mut Window<'_>,
    (cs, cv, wd, sy): (impl Switch, impl Switch, impl Switch, impl Switch),
) {
    let n = w.len(false, true, false, sy);
    let mut i = 0;
    while n - i >= V::LANES {
        let p = V::load(&w.param[i..]);
        let g = k.grad(V::load(&w.grad[i..]), p, cs, cv, wd);
        let s = V::load(&w.v[i..]).add(g.mul(g));
        s.store(&mut w.v[i..]);
        let u = g.div(s.add(eps_in).sqrt().add(eps_out));
        k.store_param(p.sub(step.mul(u)), w, i, sy);
        i += V::LANES;
    }
}

/// RMSprop, `[lr, alpha, 1 - alpha, eps_in, eps_out, mu]` (see [`Rule::RmsProp`]): the squared
/// average is `v`, the momentum buffer `m`, the centered gradient average `v_max`.
#[inline(always)]
fn rmsprop<V: Vf32>(
    k: &Lanes<V>,
    [lr, alpha, c, eps_in, eps_out, mu]: [V; 6],
    w: &mut Window<'_>,
    (cs, cv, wd, sy, centered, momentum): (
        impl Switch,
        impl Switch,
        impl Switch,
        impl Switch,
        impl Switch,
        impl Switch,
    ),
) {
    let n = w.len(momentum.on(), true, centered.on(), sy);
    let mut i = 0;
    while n - i >= V::LANES {
        let p = V::load(&w.param[i..]);
        let g = k.grad(V::load(&w.grad[i..]), p, cs, cv, wd);
        let v = alpha.mul(V::load(&w.v[i..])).add(c.mul(g.mul(g)));
        v.store(&mut w.v[i..]);
        let d = if centered.on() {
            let a = alpha.mul(V::load(&w.v_max[i..])).add(c.mul(g));
            a.store(&mut w.v_max[i..]);
            v.sub(a.mul(a))
        } else {
            v
        };
        let u = g.div(d.add(eps_in).sqrt().add(eps_out));
        let u = if momentum.on() {
            let b = mu.mul(V::load(&w.m[i..])).add(u);
            b.store(&mut w.m[i..]);
            b
        } else {
            u
        };
        k.store_param(p.sub(lr.mul(u)), w, i, sy);
        i += V::LANES;
    }
}

/// Adamax, `[b1, 1 - b1, b2, step, eps_in, eps_out]` (see [`Rule::Adamax`]): the infinity
/// norm is `v`. `|g| + eps_in` goes second into the maximum, so a NaN gradient stays NaN.
#[inline(always)]
fn adamax<V: Vf32>(
    k: &Lanes<V>,
    [b1, c1, b2, step, eps_in, eps_out]: [V; 6],
    w: &mut Window<'_>,
    (cs, cv, wd, sy): (impl Switch, impl Switch, impl Switch, impl Switch),
) {
    let n = w.len(true, true, false, sy);
    let mut i = 0;
    while n - i >= V::LANES {
        let p = V::load(&w.param[i..]);
        let g = k.grad(V::load(&w.grad[i..]), p, cs, cv, wd);
        let m = b1.mul(V::load(&w.m[i..])).add(c1.mul(g));
        let u = b2.mul(V::load(&w.v[i..])).max(g.abs().add(eps_in));
        m.store(&mut w.m[i..]);
        u.store(&mut w.v[i..]);
        k.store_param(p.sub(step.mul(m.div(u.add(eps_out)))), w, i, sy);
        i += V::LANES;
    }
}

/// NAdam (see [`Rule::NAdam`]): `r.step` is the momentum step, `gs` the gradient step.
#[inline(always)]
fn nadam<V: Vf32>(
    k: &Lanes<V>,
    r: &Moments<V>,
    gs: V,
    w: &mut Window<'_>,
    (cs, cv, wd, sy, decoupled): (
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
        let d = v.sqrt().mul(r.isb2).add(r.eps);
        let u = gs.mul(g).add(r.step.mul(m)).div(d);
        let pd = if decoupled.on() { p.mul(r.decay) } else { p };
        k.store_param(pd.sub(u), w, i, sy);
        i += V::LANES;
    }
}

/// Lion, `[lr, b1, 1 - b1, b2, 1 - b2, decay]` (see [`Rule::Lion`]): the momentum is `m`.
#[inline(always)]
fn lion<V: Vf32>(
    k: &Lanes<V>,
    [lr, b1, c1, b2, c2, decay]: [V; 6],
    w: &mut Window<'_>,
    (cs, cv, wd, sy): (impl Switch, impl Switch, impl Switch, impl Switch),
) {
    let n = w.len(true, false, false, sy);
    let mut i = 0;
    while n - i >= V::LANES {
        let p = V::load(&w.param[i..]);
        let g = k.grad(V::load(&w.grad[i..]), p, cs, cv, wd);
        let m0 = V::load(&w.m[i..]);
        let u = sign(b1.mul(m0).add(c1.mul(g)));
        b2.mul(m0).add(c2.mul(g)).store(&mut w.m[i..]);
        k.store_param(p.mul(decay).sub(lr.mul(u)), w, i, sy);
        i += V::LANES;
    }
}

/// AdaBelief (see [`Rule::AdaBelief`]): `r.decay` carries `eps_root`; the belief is `v`.
#[inline(always)]
fn adabelief<V: Vf32>(
    k: &Lanes<V>,
    r: &Moments<V>,
    w: &mut Window<'_>,
    (cs, cv, wd, sy): (impl Switch, impl Switch, impl Switch, impl Switch),
) {
    let n = w.len(true, true, false, sy);
    let mut i = 0;
    while n - i >= V::LANES {
        let p = V::load(&w.param[i..]);
        let g = k.grad(V::load(&w.grad[i..]), p, cs, cv, wd);
        let m = r.b1.mul(V::load(&w.m[i..])).add(r.c1.mul(g));
        let e = g.sub(m);
        let s =
            r.b2.mul(V::load(&w.v[i..]))
                .add(r.c2.mul(e.mul(e)))
                .add(r.decay);
        m.store(&mut w.m[i..]);
        s.store(&mut w.v[i..]);
        k.store_param(p.sub(r.step.mul(r.direction(m, s))), w, i, sy);
        i += V::LANES;
    }
}

/// Yogi (see [`Rule::Yogi`]): `r.c2` is `1 - b2` (`r.b2` unused).
#[inline(always)]
fn yogi<V: Vf32>(
    k: &Lanes<V>,
    r: &Moments<V>,
    w: &mut Window<'_>,
    (cs, cv, wd, sy): (impl Switch, impl Switch, impl Switch, impl Switch),
) {
    let n = w.len(true, true, false, sy);
    let mut i = 0;
    while n - i >= V::LANES {
        let p = V::load(&w.param[i..]);
        let g = k.grad(V::load(&w.grad[i..]), p, cs, cv, wd);
        let m = r.b1.mul(V::load(&w.m[i..])).add(r.c1.mul(g));
        let v0 = V::load(&w.v[i..]);
        let g2 = g.mul(g);
        let v = v0.sub(sign(v0.sub(g2)).mul(r.c2.mul(g2)));
        m.store(&mut w.m[i..]);
        v.store(&mut w.v[i..]);
        k.store_param(p.sub(r.step.mul(r.direction(m, v))), w, i, sy);
        i += V::LANES;
    }
}

/// Adadelta, `[lr, rho, 1 - rho, eps]` (see [`Rule::Adadelta`]): the squared-gradient
/// average is `v`, the squared-update average `m`.
#[inline(always)]
fn adadelta<V: Vf32>(
    k: &Lanes<V>,
    [lr, rho, c, eps]: [V; 4],
    w: &mut Window<'_>,
    (cs, cv, wd, sy): (impl Switch, impl Switch, impl Switch, impl Switch),
) {
    let n = w.len(true, true, false, sy);
    let mut i = 0;
    while n - i >= V::LANES {
        let p = V::load(&w.param[i..]);
        let g = k.grad(V::load(&w.grad[i..]), p, cs, cv, wd);
        let v = rho.mul(V::load(&w.v[i..])).add(c.mul(g.mul(g)));
        let u0 = V::load(&w.m[i..]);
        let d = u0.add(eps).sqrt().div(v.add(eps).sqrt()).mul(g);
        let u = rho.mul(u0).add(c.mul(d.mul(d)));
        v.store(&mut w.v[i..]);
        u.store(&mut w.m[i..]);
        k.store_param(p.sub(lr.mul(d)), w, i, sy);
        i += V::LANES;
    }
}

/// Rprop, `[initial step, eta_minus, eta_plus, min step, max step]` (see [`Rule::Rprop`]): the
/// previous gradient is `m`, the step sizes `v`; on the first step neither is read.
#[inline(always)]
fn rprop<V: Vf32>(
    k: &Lanes<V>,
    [initial, eta_minus, eta_plus, lo, hi]: [V; 5],
    w: &mut Window<'_>,
    (cs, cv, wd, sy, first): (
        impl Switch,
        impl Switch,
        impl Switch,
        impl Switch,
        impl Switch,
    ),
) {
    let n = w.len(true, true, false, sy);
    let (zero, one) = (V::splat(0.0), V::splat(1.0));
    let mut i = 0;
    while n - i >= V::LANES {
        let p = V::load(&w.param[i..]);
        let g = k.grad(V::load(&w.grad[i..]), p, cs, cv, wd);
        let (prev, size) = if first.on() {
            (zero, initial)
        } else {
            (V::load(&w.m[i..]), V::load(&w.v[i..]))
        };
        let s = g.mul(prev);
        let factor = s.select_gt(zero, eta_plus, zero.select_gt(s, eta_minus, one));
        // PyTorch's clamp_(min, max): min(max(x, lo), hi), the possibly-NaN value second.
        let size = hi.min(lo.max(size.mul(factor)));
        let g = zero.select_gt(s, zero, g);
        g.store(&mut w.m[i..]);
        size.store(&mut w.v[i..]);
        k.store_param(p.sub(sign(g).mul(size)), w, i, sy);
        i += V::LANES;
    }
}
