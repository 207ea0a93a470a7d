//! The fused pass: the driver that applies the whole update to a buffer (gradient transforms,
//! the rule, the Lookahead sync) through the rule's loop, and what every loop is written with:
//! [`Lanes`] (the pipeline steps around the rule), [`Window`] (the buffers, cut to the loop's
//! length), [`Switch`] and `specialize!` (one copy of a loop per combination of the plan's
//! switches on the vector tiers), [`Span`] (what a rule's `@span` block receives). The loops
//! themselves, one per [`Rule`](super::Rule) variant, are in the rule files (`src/rules/`),
//! generic over [`Vf32`] like everything here. The tiers in `crate::simd` stamp [`fused`] into
//! their instruction sets.

use super::ops::{clamp, pull};
use super::plan::{Buffers, Plan};
use crate::simd::Vf32;

/// Whether an optional step of the fused pass runs. The vector tiers compile one copy of a rule's
/// loop per combination of [`On`] and [`Off`] (see `specialize!`), so no flag is tested inside
/// their hot loops; the scalar tier and the tails pass plain `bool`s (one copy, a predictable
/// branch per element). The same operations run either way: a switch never changes a result.
pub(crate) trait Switch: Copy {
    /// Whether the step runs.
    fn on(self) -> bool;
}

/// A step that runs (see [`Switch`]).
#[derive(Clone, Copy)]
pub(crate) struct On;

/// A step that does not run (see [`Switch`]).
#[derive(Clone, Copy)]
pub(crate) struct Off;

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

/// `specialize!(V, s, f, (args..); c1, .., ck)`, in a rule's `@span<V>` block with `s` its
/// [`Span`], calls the rule's loop `f(lanes, args.., window, (cs, cv, wd, sy, s1, .., sk))`: the
/// four pipeline switches (clip scale, value clip, coupled weight decay, Lookahead sync) and the
/// rule's own conditions `ci`, each turned into the type `On` or `Off` if the tier `V` is
/// [`SPECIALIZED`](Vf32::SPECIALIZED): 2^(4+k) copies of `f` and one run-time choice among
/// them. Otherwise it calls the one copy that tests the `bool`s as it goes.
///
/// The choice is the constant `V::SPECIALIZED`, not a run-time flag, because the compiler then
/// never instantiates the branch a tier does not take: the scalar tier, which also runs every
/// tier's heads and tails, would otherwise carry (and LLVM optimize, then discard) all 2^(4+k)
/// copies of every rule, which was about half of the crate's build time.
macro_rules! specialize {
    ($V:ident, $s:ident, $f:path, ($($arg:expr),* $(,)?) $(; $($c:expr),+)?) => {{
        let $crate::kernels::Span {
            k,
            w,
            pipe: [cs, cv, wd, sy],
        } = $s;
        $crate::kernels::specialize!(
            @choose $V, $f, (k, $($arg,)* w); cs, cv, wd, sy $($(, $c)+)?
        )
    }};
    (@choose $V:ident, $f:path, ($($arg:expr),*); $($c:expr),*) => {
        if <$V as $crate::simd::Vf32>::SPECIALIZED {
            $crate::kernels::specialize!(@on $f, ($($arg),*), (); $($c),*)
        } else {
            $f($($arg,)* ($($c,)*))
        }
    };
    (@on $f:path, ($($arg:expr),*), ($($sw:expr),*); ) => {
        $f($($arg,)* ($($sw,)*))
    };
    (@on $f:path, ($($arg:expr),*), ($($sw:expr),*); $c:expr $(, $rest:expr)*) => {
        if $c {
            $crate::kernels::specialize!(
                @on $f, ($($arg),*), ($($sw,)* $crate::kernels::On); $($rest),*
            )
        } else {
            $crate::kernels::specialize!(
                @on $f, ($($arg),*), ($($sw,)* $crate::kernels::Off); $($rest),*
            )
        }
    };
}
pub(crate) use specialize;

/// What a rule's `@span` block receives: the pass's pipeline steps, the window of buffers and
/// the pipeline switches. Handed on whole by `specialize!`.
pub(crate) struct Span<'a, 'w, V> {
    /// The pipeline steps' splatted scalars.
    pub(crate) k: &'a Lanes<V>,
    /// The buffers.
    pub(crate) w: &'a mut Window<'w>,
    /// Clip scale, value clip, coupled weight decay, Lookahead sync.
    pub(crate) pipe: [bool; 4],
}

/// The optional steps of a pass with their scalars splatted once (zero for a step that is off:
/// its switch keeps it unused).
pub(crate) struct Lanes<V> {
    clip_scale: V,
    clip_lo: V,
    clip_hi: V,
    weight_decay: V,
    sync_alpha: V,
}

impl<V: Vf32> Lanes<V> {
    #[inline(always)]
    pub(crate) fn new(plan: &Plan) -> Self {
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
    pub(crate) fn grad(
        &self,
        mut g: V,
        p: V,
        cs: impl Switch,
        cv: impl Switch,
        wd: impl Switch,
    ) -> V {
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
    /// steps; returns them as stored.
    #[inline(always)]
    pub(crate) fn store_param(&self, p: V, w: &mut Window<'_>, i: usize, sync: impl Switch) -> V {
        self.store_param_in(p, [&mut *w.param, &mut *w.slow], i, sync)
    }

    /// [`Lanes::store_param`] into the parameters and slow weights `[param, slow]` of a loop
    /// that keeps its slices in locals.
    #[inline(always)]
    pub(crate) fn store_param_in(
        &self,
        p: V,
        [param, slow]: [&mut [f32]; 2],
        i: usize,
        sync: impl Switch,
    ) -> V {
        if sync.on() {
            let s = pull(V::load(&slow[i..]), p, self.sync_alpha);
            s.store(&mut slow[i..]);
            s.store(&mut param[i..]);
            s
        } else {
            p.store(&mut param[i..]);
            p
        }
    }
}

/// The buffers of one pass, each used one cut to exactly `param`'s length up front (an unused
/// one is empty and never touched): with every length equal to the loop bound, the compiler
/// drops the bounds checks inside the loops.
pub(crate) struct Window<'a> {
    pub(crate) param: &'a mut [f32],
    pub(crate) grad: &'a [f32],
    pub(crate) m: &'a mut [f32],
    pub(crate) v: &'a mut [f32],
    pub(crate) v_max: &'a mut [f32],
    pub(crate) slow: &'a mut [f32],
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
    pub(crate) fn len(&mut self, m: bool, v: bool, v_max: bool, slow: impl Switch) -> usize {
        let n = self.len_state(m, v, v_max, slow);
        self.grad = &self.grad[..n];
        n
    }

    /// [`Window::len`] for a loop that takes its gradients elsewhere ([`GradIo`]): `grad` is
    /// left as it is (empty).
    #[inline(always)]
    pub(crate) fn len_state(&mut self, m: bool, v: bool, v_max: bool, slow: impl Switch) -> usize {
        fn fit(s: &mut &mut [f32], used: bool, n: usize) {
            if used {
                let t = std::mem::take(s);
                *s = &mut t[..n];
            }
        }
        let n = self.param.len();
        fit(&mut self.m, m, n);
        fit(&mut self.v, v, n);
        fit(&mut self.v_max, v_max, n);
        fit(&mut self.slow, slow.on(), n);
        n
    }
}

/// Where a rule's loop takes its gradients and state and what it does with the new parameters
/// of each vector as stored: [`F32Grads`] in the f32 pass (the window's gradients and state,
/// nothing more), `kernels::mixed::MixedIo` in the mixed pass of the rules that have one
/// (16-bit gradients widened and divided by the loss scale in registers, the 16-bit copy
/// narrowed from the stored vector), and `kernels::held::Q8Io` in the fused pass over 8-bit
/// moments (the moments decoded from their codes as loaded; the new ones go to the window's f32
/// scratch, which the pass encodes block by block). The loop is written once over it.
pub(crate) trait GradIo<V: Vf32> {
    /// The loop's length: [`Window::len`], with this source's own buffers cut to it too.
    fn len(
        &mut self,
        w: &mut Window<'_>,
        m: bool,
        v: bool,
        v_max: bool,
        slow: impl Switch,
    ) -> usize;
    /// The gradients of lanes `i..`, as the f32 pass would read them.
    fn grad(&self, w: &Window<'_>, i: usize) -> V;
    /// Takes the parameters of lanes `i..` as [`Lanes::store_param`] stored them.
    fn stored(&mut self, p: V, i: usize);
    /// The first and second moments of lanes `i..` before the update: the window's.
    #[inline(always)]
    fn moments(&self, w: &Window<'_>, i: usize) -> (V, V) {
        (V::load(&w.m[i..]), V::load(&w.v[i..]))
    }
    /// AMSGrad's maximum of lanes `i..` before the update: the window's.
    #[inline(always)]
    fn v_max(&self, w: &Window<'_>, i: usize) -> V {
        V::load(&w.v_max[i..])
    }
    /// Takes the new first and second moments of lanes `i..`: into the window's.
    #[inline(always)]
    fn put_moments(&mut self, w: &mut Window<'_>, m: V, v: V, i: usize) {
        m.store(&mut w.m[i..]);
        v.store(&mut w.v[i..]);
    }
}

/// The f32 pass's gradients: the window's own (see [`GradIo`]).
pub(crate) struct F32Grads;

impl<V: Vf32> GradIo<V> for F32Grads {
    #[inline(always)]
    fn len(
        &mut self,
        w: &mut Window<'_>,
        m: bool,
        v: bool,
        v_max: bool,
        slow: impl Switch,
    ) -> usize {
        w.len(m, v, v_max, slow)
    }

    #[inline(always)]
    fn grad(&self, w: &Window<'_>, i: usize) -> V {
        V::load(&w.grad[i..])
    }

    #[inline(always)]
    fn stored(&mut self, _: V, _: usize) {}
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
    let (head, split) = state_vector_part::<V>(plan, b.param, b.m, b.v_max);
    span::<f32>(plan, Window::new(plan, &mut b, 0, head));
    span::<V>(plan, Window::new(plan, &mut b, head, split));
    span::<f32>(plan, Window::new(plan, &mut b, split, n));
}

/// The vector part of a pass's window over `param` and its state: aligned to the first
/// moments `m` if the rule keeps them, else to `v_max` if the pass writes it (a pass before
/// an update writing its block scratch, which is aligned: no scalar head), else to `param`
/// (see [`fused`]).
#[inline(always)]
pub(crate) fn state_vector_part<V: Vf32>(
    plan: &Plan,
    param: &[f32],
    m: &[f32],
    v_max: &[f32],
) -> (usize, usize) {
    let anchor = match plan.rule.state_used() {
        (true, _, _) => m.as_ptr(),
        (false, _, true) if !v_max.is_empty() => v_max.as_ptr(),
        _ => param.as_ptr(),
    };
    vector_part::<V>(anchor, param.len())
}

/// The vector part `head..split` of `n` elements from `anchor`: from the first element aligned
/// to a vector (`V::LANES * 4` bytes) to the last whole vector; all of it on the scalar tier.
#[inline(always)]
pub(crate) fn vector_part<V: Vf32>(anchor: *const f32, n: usize) -> (usize, usize) {
    let head = if V::LANES > 1 {
        anchor.align_offset(V::LANES * 4).min(n)
    } else {
        0
    };
    (head, n - (n - head) % V::LANES)
}

/// The pipeline switches of `plan`: clip scale, value clip, coupled weight decay, Lookahead
/// sync.
#[inline(always)]
pub(crate) fn pipe(plan: &Plan) -> [bool; 4] {
    [
        plan.clip_scale.is_some(),
        plan.clip_value.is_some(),
        plan.weight_decay.is_some(),
        plan.sync_alpha.is_some(),
    ]
}

/// The fused update of a window whose length is a multiple of `V::LANES`, through the rule's
/// loop, specialised for the plan's switches on a vector tier.
#[inline(always)]
fn span<V: Vf32>(plan: &Plan, mut w: Window<'_>) {
    let k = Lanes::<V>::new(plan);
    let s = Span {
        k: &k,
        w: &mut w,
        pipe: pipe(plan),
    };
    crate::rules::span(plan.rule, s)
}
