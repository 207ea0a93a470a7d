//! Adam with optional AMSGrad, and AdamW (PyTorch's definitions); [`Moments`], the Adam
//! family's moment update, which RAdam, NAdam, AdaBelief and Yogi reuse.

use super::{pow_step, Rule};
use crate::kernels::{
    bf16_stochastic_lanes, mix32_lanes, specialize, F32Grads, GradIo, Lanes, Span, Switch, Window,
};
use crate::simd::{Vf32, Vu32};

super::rule! {
    base {
        /// Adam with optional AMSGrad (PyTorch's definition: the max of the raw second moment).
        Adam = 1, "adam" {
            /// First-moment decay.
            b1: f64 = 0.9; UnitOpen, f32; c b1;
            /// Second-moment decay.
            b2: f64 = 0.999; UnitOpen, f32; c b2;
            /// Added outside the square root.
            eps: f64 = 1e-8; Positive, f32; c eps;
            /// AMSGrad: the maximum of the second moment.
            amsgrad: bool = false; Any; c amsgrad;
        }
        @state { (true, true, amsgrad) }
        @rule(t, lr) { adam_rule(b1, b2, eps, t, lr, amsgrad, None) }

        /// AdamW: Adam with decoupled weight decay scaled by the learning rate.
        AdamW = 2, "adamw" {
            /// First-moment decay.
            b1: f64 = 0.9; UnitOpen, f32; c b1;
            /// Second-moment decay.
            b2: f64 = 0.999; UnitOpen, f32; c b2;
            /// Added outside the square root.
            eps: f64 = 1e-8; Positive, f32; c eps;
            /// Decoupled weight decay: `p *= 1 - lr * weight_decay`.
            weight_decay as "weight_decay (decoupled)": f64 = 1e-2; NonNeg, f32;
                c decoupled_weight_decay;
        }
        @state { (true, true, false) }
        @rule(t, lr) { adam_rule(b1, b2, eps, t, lr, false, Some(weight_decay)) }
    }
    kernel {
        /// Adam / AMSGrad / AdamW: `m = b1*m + (1-b1)*g`, `v = b2*v + (1-b2)*g*g`
        /// (AMSGrad: `v_max = max(v_max, v)` used in place of v),
        /// `p = p*decay - step * (m / (sqrt(v)*inv_sqrt_bc2 + eps))`
        /// with `step = lr / (1 - b1^t)`, `inv_sqrt_bc2 = 1 / sqrt(1 - b2^t)` and, for AdamW only,
        /// `decay = 1 - lr*lambda`.
        Adam {
            /// First-moment decay.
            b1: f32,
            /// `1 - b1`, rounded once.
            one_minus_b1: f32,
            /// Second-moment decay.
            b2: f32,
            /// `1 - b2`, rounded once.
            one_minus_b2: f32,
            /// `lr / (1 - b1^t)`.
            step: f32,
            /// `1 / sqrt(1 - b2^t)`.
            inv_sqrt_bc2: f32,
            /// Added to the denominator.
            eps: f32,
            /// AMSGrad: the running maximum of `v` in the denominator.
            amsgrad: bool,
            /// AdamW's decoupled decay factor `1 - lr*lambda`, `None` for Adam.
            decay: Option<f32>,
        }
        @state { (true, true, amsgrad) }
        @finite {
            [
                ("step size (lr / (1 - b1^t))", step),
                ("inv_sqrt_bc2 (1 / sqrt(1 - b2^t))", inv_sqrt_bc2),
                ("decay factor (1 - lr * weight_decay)", decay.unwrap_or(1.0)),
            ]
        }
        @span<V>(s) {
            let r = Moments::new(
                [b1, one_minus_b1, b2, one_minus_b2],
                [step, inv_sqrt_bc2, eps, decay.unwrap_or(1.0)],
            );
            let decoupled = decay.is_some();
            specialize!(V, s, adam, (&r, &mut F32Grads); amsgrad, decoupled)
        }
    }
}

/// The per-step scalars of Adam, AMSGrad and AdamW.
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

/// The splatted scalars of the Adam family (see [`Rule::Adam`]); `decay` is 1 unless AdamW.
pub(super) struct Moments<V> {
    pub(super) b1: V,
    pub(super) c1: V,
    pub(super) b2: V,
    pub(super) c2: V,
    pub(super) step: V,
    pub(super) isb2: V,
    pub(super) eps: V,
    pub(super) decay: V,
}

impl<V: Vf32> Moments<V> {
    #[inline(always)]
    pub(super) fn new([b1, c1, b2, c2]: [f32; 4], [step, isb2, eps, decay]: [f32; 4]) -> Self {
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
    pub(super) fn update(&self, g: V, w: &mut Window<'_>, i: usize) -> (V, V) {
        let (m, v) = self.next(V::load(&w.m[i..]), V::load(&w.v[i..]), g);
        m.store(&mut w.m[i..]);
        v.store(&mut w.v[i..]);
        (m, v)
    }

    /// The moments after `m`, `v` with gradient `g`.
    #[inline(always)]
    pub(super) fn next(&self, m: V, v: V, g: V) -> (V, V) {
        let m = self.b1.mul(m).add(self.c1.mul(g));
        let v = self.b2.mul(v).add(self.c2.mul(g.mul(g)));
        (m, v)
    }

    /// The bias-corrected direction `m / (sqrt(v) * inv_sqrt_bc2 + eps)`.
    #[inline(always)]
    pub(super) fn direction(&self, m: V, v: V) -> V {
        m.div(v.sqrt().mul(self.isb2).add(self.eps))
    }
}

/// Adam's splatted scalars and its two switches (AMSGrad, decoupled decay) if `rule` is Adam,
/// AMSGrad or AdamW: what the fused loops outside the rule's own `@span` block start from.
#[inline(always)]
fn adam_moments<V: Vf32>(rule: Rule) -> Option<(Moments<V>, bool, bool)> {
    let Rule::Adam {
        b1,
        one_minus_b1,
        b2,
        one_minus_b2,
        step,
        inv_sqrt_bc2,
        eps,
        amsgrad,
        decay,
    } = rule
    else {
        return None;
    };
    let r = Moments::new(
        [b1, one_minus_b1, b2, one_minus_b2],
        [step, inv_sqrt_bc2, eps, decay.unwrap_or(1.0)],
    );
    Some((r, amsgrad, decay.is_some()))
}

/// The fused loop of Adam, AMSGrad and AdamW with the gradients and the parameter copy of
/// `io` (`kernels::mixed`: 16-bit gradients widened and unscaled as loaded, the 16-bit copy
/// narrowed as stored), if `rule` is one of them (`false`, with nothing done, otherwise).
#[inline(always)]
pub(crate) fn adam_io_span<V: Vf32>(rule: Rule, s: Span<'_, '_, V>, io: &mut impl GradIo<V>) -> bool {
    let Some((r, amsgrad, decoupled)) = adam_moments::<V>(rule) else {
        return false;
    };
    specialize!(V, s, adam, (&r, io); amsgrad, decoupled);
    true
}

/// [`adam_io_span`] with one copy of the loop that tests its switches (as the scalar tier
/// runs it): for the rare windows whose source is not worth a specialized copy of every
/// combination (the 8-bit blocks that hold special codes, `kernels::held::fused_q8`).
#[inline(always)]
pub(crate) fn adam_io_span_tested<V: Vf32>(
    rule: Rule,
    s: Span<'_, '_, V>,
    io: &mut impl GradIo<V>,
) -> bool {
    let Some((r, amsgrad, decoupled)) = adam_moments::<V>(rule) else {
        return false;
    };
    let Span {
        k,
        w,
        pipe: [cs, cv, wd, sy],
    } = s;
    adam(k, &r, io, w, (cs, cv, wd, sy, amsgrad, decoupled));
    true
}

/// Whether [`adam_io_span`] runs `rule`.
pub(crate) fn has_io_span(rule: &Rule) -> bool {
    matches!(rule, Rule::Adam { .. })
}

/// Adam, AMSGrad and AdamW (see [`Rule::Adam`]), the gradients taken from `io` and the new
/// parameters handed to it.
#[inline(always)]
fn adam<V: Vf32>(
    k: &Lanes<V>,
    r: &Moments<V>,
    io: &mut impl GradIo<V>,
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
    let n = io.len(w, true, true, amsgrad.on(), sy);
    let mut i = 0;
    while n - i >= V::LANES {
        let p = V::load(&w.param[i..]);
        let g = k.grad(io.grad(w, i), p, cs, cv, wd);
        let (m0, v0) = io.moments(w, i);
        let (m, v) = r.next(m0, v0, g);
        io.put_moments(w, m, v, i);
        let vd = if amsgrad.on() {
            let vm = io.v_max(w, i).max(v);
            vm.store(&mut w.v_max[i..]);
            vm
        } else {
            v
        };
        let u = r.direction(m, vd);
        let pd = if decoupled.on() { p.mul(r.decay) } else { p };
        let stored = k.store_param(pd.sub(r.step.mul(u)), w, i, sy);
        io.stored(stored, i);
        i += V::LANES;
    }
}

/// The bf16 moments of a fused pass over held state (`kernels::held`, "Fused passes"), cut to
/// a window's elements, with what their stochastic rounding needs.
pub(crate) struct Bf16Moments<'a> {
    /// The first moments (bf16 patterns).
    pub(crate) m: &'a mut [u16],
    /// The second moments.
    pub(crate) v: &'a mut [u16],
    /// AMSGrad's maxima (empty unless AMSGrad).
    pub(crate) v_max: &'a mut [u16],
    /// The low half of the index of the window's first element (no multiple of 2^32 inside).
    pub(crate) lo: u32,
    /// The keys of the pairs (m, v) and (v_max, slow) for the window's upper index half.
    pub(crate) keys: [u32; 2],
}

/// The fused loop of Adam, AMSGrad and AdamW over bf16 moments rounded stochastically, if
/// `rule` is one of them (`false`, with nothing done, otherwise): the moments are widened as
/// loaded and rounded as stored, with the bits of the state's codec (`kernels::codec`), so the
/// result is the chunked pass's (decode, f32 loop, encode) bit for bit.
#[inline(always)]
pub(crate) fn adam_bf16_span<V: Vf32>(rule: Rule, s: Span<'_, '_, V>, h: &mut Bf16Moments<'_>) -> bool {
    let Some((r, amsgrad, decoupled)) = adam_moments::<V>(rule) else {
        return false;
    };
    specialize!(V, s, adam_bf16, (&r, h); amsgrad, decoupled);
    true
}

/// Whether [`adam_bf16_span`] runs `rule`.
pub(crate) fn has_bf16_span(rule: &Rule) -> bool {
    matches!(rule, Rule::Adam { .. })
}

/// [`adam`] with the moments in bf16 (see [`adam_bf16_span`]): the pair's hash once per
/// element, its low half rounding m and its high half v; AMSGrad's maximum with its own pair's
/// low half. Two vectors per round, so that the rounded halves of two vectors are stored at
/// once (`Vu32::store_u16x2`).
#[inline(always)]
fn adam_bf16<V: Vf32>(
    k: &Lanes<V>,
    r: &Moments<V>,
    h: &mut Bf16Moments<'_>,
    w: &mut Window<'_>,
    sw: (
        impl Switch,
        impl Switch,
        impl Switch,
        impl Switch,
        impl Switch,
        impl Switch,
    ),
) {
    let (_, _, _, sy, amsgrad, _) = sw;
    let n = w.len(false, false, false, sy);
    let (m, v) = (&mut h.m[..n], &mut h.v[..n]);
    let vx: &mut [u16] = if amsgrad.on() { &mut h.v_max[..n] } else { &mut [] };
    let (lo, keys) = (h.lo, h.keys);
    let mut i = 0;
    while n - i >= 2 * V::LANES {
        let (ma, va, xa) = adam_bf16_lanes(k, r, w, Bf16At::new(m, v, vx, i, lo, keys), sw);
        let (mb, vb, xb) = adam_bf16_lanes(k, r, w, Bf16At::new(m, v, vx, i + V::LANES, lo, keys), sw);
        V::U::store_u16x2(ma, mb, &mut m[i..]);
        V::U::store_u16x2(va, vb, &mut v[i..]);
        if amsgrad.on() {
            V::U::store_u16x2(xa, xb, &mut vx[i..]);
        }
        i += 2 * V::LANES;
    }
    if n - i >= V::LANES {
        let (ma, va, xa) = adam_bf16_lanes(k, r, w, Bf16At::new(m, v, vx, i, lo, keys), sw);
        ma.store_u16(&mut m[i..]);
        va.store_u16(&mut v[i..]);
        if amsgrad.on() {
            xa.store_u16(&mut vx[i..]);
        }
    }
}

/// What [`adam_bf16_lanes`] reads of the bf16 state: the lanes from `i`.
struct Bf16At<'a> {
    m: &'a [u16],
    v: &'a [u16],
    vx: &'a [u16],
    i: usize,
    lo: u32,
    keys: [u32; 2],
}

impl<'a> Bf16At<'a> {
    #[inline(always)]
    fn new(m: &'a [u16], v: &'a [u16], vx: &'a [u16], i: usize, lo: u32, keys: [u32; 2]) -> Self {
        Bf16At {
            m,
            v,
            vx,
            i,
            lo,
            keys,
        }
    }
}

/// One vector of [`adam_bf16`]: the parameters of lanes `a.i..` stored, the new state's bf16
/// patterns (m, v, v_max) returned.
#[inline(always)]
fn adam_bf16_lanes<V: Vf32>(
    k: &Lanes<V>,
    r: &Moments<V>,
    w: &mut Window<'_>,
    a: Bf16At<'_>,
    (cs, cv, wd, sy, amsgrad, decoupled): (
        impl Switch,
        impl Switch,
        impl Switch,
        impl Switch,
        impl Switch,
        impl Switch,
    ),
) -> (V::U, V::U, V::U) {
    let i = a.i;
    let p = V::load(&w.param[i..]);
    let g = k.grad(V::load(&w.grad[i..]), p, cs, cv, wd);
    let (mn, vn) = r.next(V::load_bf16(&a.m[i..]), V::load_bf16(&a.v[i..]), g);
    let at = V::U::index(a.lo.wrapping_add(i as u32));
    let low = V::U::splat(0xffff);
    let bits = mix32_lanes(at.xor(V::U::splat(a.keys[0])));
    let mb = bf16_stochastic_lanes(mn, bits.and(low));
    let vb = bf16_stochastic_lanes(vn, bits.shr::<16>());
    let (vd, xb) = if amsgrad.on() {
        let vm = V::load_bf16(&a.vx[i..]).max(vn);
        let bits = mix32_lanes(at.xor(V::U::splat(a.keys[1])));
        (vm, bf16_stochastic_lanes(vm, bits.and(low)))
    } else {
        (vn, vb)
    };
    let u = r.direction(mn, vd);
    let pd = if decoupled.on() { p.mul(r.decay) } else { p };
    k.store_param(pd.sub(r.step.mul(u)), w, i, sy);
    (mb, vb, xb)
}
