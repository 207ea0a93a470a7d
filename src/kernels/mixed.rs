//! Mixed precision around the fused pass: gradients in f32, bf16 or fp16 ([`Grad`]) divided by
//! a loss scale ([`GradScale`]), and an optional bf16 or fp16 copy of the parameters
//! ([`ParamCopy`]) written in the same pass.
//!
//! Adam, AMSGrad and AdamW (the rules whose loop takes a [`GradIo`]) run one loop over the
//! buffer ([`fused_mixed_io`]): each vector of gradients is loaded in its format, widened and
//! unscaled in registers, and each vector of new parameters narrowed into the copy as it is
//! stored, with the same conversions as the slice kernels ([`MixedIo`]).
//!
//! Every other rule runs in chunks of [`CHUNK`] elements: a chunk's gradients are widened (and
//! unscaled) into an f32 scratch on the stack, the f32 fused pass ([`fused`]) runs on the
//! chunk, and the chunk's new parameters, still in L1, are narrowed into the copy. Memory sees
//! each 16-bit gradient read once and each copy element written once, as in a single loop, and
//! the rule loops stay as they are (no extra copy per gradient format). The chunk driver calls
//! the tier's table (`widen`, `unscale`, `fused`, `narrow`, `sumsq_partials`: each compiled for
//! the tier's instructions on its own) once per chunk: inlining all of them into one function
//! left LLVM's inliner over budget, and the integer intrinsics of the conversions became calls
//! (5x slower). Every element goes
//! through exactly the operations of widening, unscaling and the f32 pass, so the result is that
//! composition's, bit for bit, on every tier and at any split.

use super::convert::Half;
use super::fused::{pipe, state_vector_part, GradIo, Lanes, Span, Switch, Window};
use super::plan::{check_lengths, Buffers, Plan};
use super::reduce::SUMSQ_BLOCK;
use crate::error::Error;
use crate::rules::{adam_io_span, has_io_span};
use crate::simd::{Kernels, Vf32};

/// Elements per chunk of the mixed pass (4 KiB of f32 scratch). A chunk's scratch and its
/// parameters and state (12 KiB for Adam) stay in L1 between the widening, the f32 pass and the
/// narrowing, which then reads the new parameters from L1; at 4096 elements (48 KiB for Adam's
/// chunk and 16 KiB of scratch, more than a 32 KiB L1) the pass (Adam, bf16 gradients and a
/// bf16 copy, policy propagate) ran at 0.70-0.73x the bandwidth probe at 1e8 elements on 2
/// threads, at 1024 at 0.89-0.95x (`benches/mixed.rs`, quiet machine, 2026-12-05). A
/// sum-of-squares block is a whole number of chunks.
pub const CHUNK: usize = 1024;

const _: () = assert!(SUMSQ_BLOCK.is_multiple_of(CHUNK));

/// The gradients of one buffer, in one of three formats (16-bit ones as bit patterns).
#[derive(Debug, Clone, Copy)]
pub enum Grad<'a> {
    /// f32 gradients.
    F32(&'a [f32]),
    /// bf16 gradients (bit patterns).
    Bf16(&'a [u16]),
    /// fp16 gradients (bit patterns).
    F16(&'a [u16]),
}

impl<'a> Grad<'a> {
    /// The number of elements.
    pub fn len(&self) -> usize {
        match self {
            Grad::F32(g) => g.len(),
            Grad::Bf16(g) | Grad::F16(g) => g.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The 16-bit format, `None` for f32.
    pub fn half(&self) -> Option<Half> {
        match self {
            Grad::F32(_) => None,
            Grad::Bf16(_) => Some(Half::Bf16),
            Grad::F16(_) => Some(Half::F16),
        }
    }

    /// Elements `start..end`.
    pub fn slice(&self, start: usize, end: usize) -> Grad<'a> {
        match *self {
            Grad::F32(g) => Grad::F32(&g[start..end]),
            Grad::Bf16(g) => Grad::Bf16(&g[start..end]),
            Grad::F16(g) => Grad::F16(&g[start..end]),
        }
    }

    /// The two halves at `mid`.
    pub fn split_at(&self, mid: usize) -> (Grad<'a>, Grad<'a>) {
        (self.slice(0, mid), self.slice(mid, self.len()))
    }
}

/// A gradient buffer the engine takes: `&[f32]` or a [`Grad`] of any format.
pub trait AsGrad: Sync {
    /// The buffer as a [`Grad`].
    fn as_grad(&self) -> Grad<'_>;
}

impl AsGrad for &[f32] {
    fn as_grad(&self) -> Grad<'_> {
        Grad::F32(self)
    }
}

impl AsGrad for Grad<'_> {
    fn as_grad(&self) -> Grad<'_> {
        *self
    }
}

/// How the loss scale is divided out of the gradients, from the scale `s` ([`GradScale::new`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum GradScale {
    /// No scaling (`s` = 1).
    One,
    /// `g * (1/s)` for a normal power of two `s`: `1/s` is exact, and `g * 2^-k` is the same
    /// real number as `g / 2^k`, so both round to the same f32 (subnormal results included):
    /// this is the division, bit for bit, at the cost of a multiplication.
    MulPow2(f32),
    /// `g / s`, exactly rounded, for any other scale.
    Div(f32),
}

impl GradScale {
    /// The unscaling by `s`, or `None` if `s` is not finite and positive.
    pub fn new(s: f32) -> Option<GradScale> {
        if !(s.is_finite() && s > 0.0) {
            return None;
        }
        let b = s.to_bits();
        Some(if s == 1.0 {
            GradScale::One
        } else if b & 0x7f_ffff == 0 && b >> 23 != 0 {
            // A normal power of two 2^e, e in -126..=127: 1/s = 2^-e is a normal or
            // subnormal f32, exactly.
            GradScale::MulPow2(1.0 / s)
        } else {
            GradScale::Div(s)
        })
    }

    /// The scale `s` it divides by.
    pub fn scale(self) -> f32 {
        match self {
            GradScale::One => 1.0,
            GradScale::MulPow2(r) => 1.0 / r,
            GradScale::Div(s) => s,
        }
    }

    /// One value divided by the scale, as the `unscale` kernel divides it.
    #[inline(always)]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            GradScale::One => x,
            GradScale::MulPow2(r) => x * r,
            GradScale::Div(s) => x / s,
        }
    }
}

/// A 16-bit copy of the parameters, written with the new parameters of each step.
#[derive(Debug)]
pub struct ParamCopy<'a> {
    /// Its format.
    pub half: Half,
    /// Its elements (bit patterns), `param`'s length.
    pub out: &'a mut [u16],
}

/// The buffers of one mixed-precision fused pass: [`Buffers`] with gradients in any format and
/// an optional 16-bit copy of the parameters. Every buffer the plan uses has `param`'s length.
pub struct MixedBuffers<'a> {
    /// The parameters, updated in place.
    pub param: &'a mut [f32],
    /// The gradients (read only).
    pub grad: Grad<'a>,
    /// Momentum trace or first moment.
    pub m: &'a mut [f32],
    /// Second moment.
    pub v: &'a mut [f32],
    /// AMSGrad's running maximum of `v`.
    pub v_max: &'a mut [f32],
    /// Lookahead's slow weights.
    pub slow: &'a mut [f32],
    /// The 16-bit copy of the parameters written in the pass.
    pub copy: Option<ParamCopy<'a>>,
}

impl MixedBuffers<'_> {
    /// Checks that the gradients, the copy and every state buffer the plan touches have the
    /// length of `param`.
    pub fn check(&self, plan: &Plan) -> Result<(), Error> {
        let n = self.param.len();
        if let Some(c) = &self.copy {
            if c.out.len() != n {
                return Err(Error::LengthMismatch {
                    what: format!("{} copy of the parameters", c.half.name()),
                    expected: n,
                    got: c.out.len(),
                });
            }
        }
        check_lengths(
            plan,
            n,
            self.grad.len(),
            [
                self.m.len(),
                self.v.len(),
                self.v_max.len(),
                self.slow.len(),
            ],
        )
    }
}

/// `s[start..end]`, or empty where `s` is an unused (shorter) buffer.
#[inline(always)]
fn cut(s: &mut [f32], start: usize, end: usize) -> &mut [f32] {
    if s.len() >= end {
        &mut s[start..end]
    } else {
        &mut []
    }
}

/// Divides `x` by the loss scale in place (nothing for [`GradScale::One`]): the `unscale`
/// kernel of every tier's table.
#[inline(always)]
pub(crate) fn unscale<V: Vf32>(scale: GradScale, x: &mut [f32]) {
    let n = x.len();
    let split = n - n % V::LANES;
    match scale {
        GradScale::One => {}
        GradScale::MulPow2(r) => {
            unscale_span::<V>(x, 0, split, |g| g.mul(V::splat(r)));
            unscale_span::<f32>(x, split, n, |g| g * r);
        }
        GradScale::Div(s) => {
            unscale_span::<V>(x, 0, split, |g| g.div(V::splat(s)));
            unscale_span::<f32>(x, split, n, |g| g / s);
        }
    }
}

#[inline(always)]
fn unscale_span<V: Vf32>(x: &mut [f32], start: usize, end: usize, f: impl Fn(V) -> V) {
    let mut i = start;
    while i < end {
        f(V::load(&x[i..])).store(&mut x[i..]);
        i += V::LANES;
    }
}

/// The gradients `g` as f32 divided by the scale: `g` itself when nothing is to be done, else
/// widened and unscaled into `scratch` (at least `g.len()` long) with the table `k`.
pub(super) fn grad_f32<'s>(
    k: &Kernels,
    g: Grad<'s>,
    scale: GradScale,
    scratch: &'s mut [f32],
) -> &'s [f32] {
    let n = g.len();
    let out = &mut scratch[..n];
    match g {
        Grad::F32(g) if scale == GradScale::One => return g,
        Grad::F32(g) => out.copy_from_slice(g),
        Grad::Bf16(h) => (k.widen)(Half::Bf16, h, out),
        Grad::F16(h) => (k.widen)(Half::F16, h, out),
    }
    (k.unscale)(scale, out);
    out
}

/// The largest vector in bytes: chunks after the first start on such a boundary of the state.
const ALIGN: usize = 64;

/// One mixed-precision fused pass over `b` with the kernels of table `k`. Callers must have
/// checked every length (`MixedBuffers::check`).
pub(crate) fn fused_mixed(k: &Kernels, plan: &Plan, scale: GradScale, b: MixedBuffers<'_>) {
    let MixedBuffers {
        param,
        grad,
        m,
        v,
        v_max,
        slow,
        mut copy,
    } = b;
    if let (Grad::F32(g), GradScale::One, None) = (grad, scale, &copy) {
        // Plain f32: the f32 pass as it is.
        return (k.fused)(
            plan,
            Buffers {
                param,
                grad: g,
                m,
                v,
                v_max,
                slow,
            },
        );
    }
    if has_io_span(&plan.rule) {
        return (k.fused_mixed)(
            plan,
            scale,
            MixedBuffers {
                param,
                grad,
                m,
                v,
                v_max,
                slow,
                copy,
            },
        );
    }
    let n = param.len();
    // Chunks after the first start where the f32 pass's vector loop would, so that they need
    // no scalar head.
    let anchor = if plan.rule.state_used().0 {
        m.as_ptr()
    } else {
        param.as_ptr()
    };
    let head = anchor.align_offset(ALIGN).min(n);
    let mut scratch = [0f32; CHUNK];
    let mut start = 0;
    let mut end = if head > 0 { head } else { CHUNK.min(n) };
    while start < n {
        let g = grad_f32(k, grad.slice(start, end), scale, &mut scratch);
        (k.fused)(
            plan,
            Buffers {
                param: &mut param[start..end],
                grad: g,
                m: cut(m, start, end),
                v: cut(v, start, end),
                v_max: cut(v_max, start, end),
                slow: cut(slow, start, end),
            },
        );
        if let Some(c) = copy.as_mut() {
            (k.narrow)(c.half, &param[start..end], &mut c.out[start..end]);
        }
        start = end;
        end = (end + CHUNK).min(n);
    }
}

/// The mixed pass of the rules whose loop takes its gradients from a [`GradIo`]
/// (`crate::rules::has_io_span`: Adam, AMSGrad, AdamW) with vectors `V`, the head and tail
/// with the scalar tier, split as [`super::fused`] splits: the loop loads the 16-bit
/// gradients, widens and unscales them in registers and narrows each vector of new parameters
/// into the copy as it stores it ([`MixedIo`]). No scratch, no second pass over the chunk; the
/// operations per element are the chunked pass's, so the result is its, bit for bit.
#[inline(always)]
pub(crate) fn fused_mixed_io<V: Vf32>(plan: &Plan, scale: GradScale, b: MixedBuffers<'_>) {
    let MixedBuffers {
        param,
        grad,
        m,
        v,
        v_max,
        slow,
        mut copy,
    } = b;
    let n = param.len();
    let (head, split) = state_vector_part::<V>(plan, param, m, v_max);
    for (s, e, vector) in [(0, head, false), (head, split, true), (split, n, false)] {
        let w = Window {
            param: &mut param[s..e],
            grad: &[],
            m: cut(m, s, e),
            v: cut(v, s, e),
            v_max: cut(v_max, s, e),
            slow: cut(slow, s, e),
        };
        let copy = copy.as_mut().map(|c| ParamCopy {
            half: c.half,
            out: &mut c.out[s..e],
        });
        let g = grad.slice(s, e);
        if vector && V::LANES > 1 {
            io_span::<V>(plan, w, MixedIo::new(g, scale, copy));
        } else {
            io_span::<f32>(plan, w, MixedIo::new(g, scale, copy));
        }
    }
}

/// One window of [`fused_mixed_io`] through the rule's loop.
#[inline(always)]
fn io_span<V: Vf32>(plan: &Plan, mut w: Window<'_>, mut io: MixedIo<'_, V>) {
    let k = Lanes::<V>::new(plan);
    let s = Span {
        k: &k,
        w: &mut w,
        pipe: pipe(plan),
    };
    adam_io_span(plan.rule, s, &mut io);
}

/// The gradients and the copy of a window of the mixed pass, as a rule's loop takes them
/// ([`GradIo`]): each vector of gradients loaded in its format and widened (`load_bf16`,
/// `load_f16`: the conversions of [`super::widen`]), then divided by the scale as
/// [`unscale`] divides; each vector of new parameters narrowed into the copy (`store_bf16`,
/// `store_f16`: those of [`super::narrow`]) from the register the parameters were stored from.
pub(crate) struct MixedIo<'a, V> {
    grad: Grad<'a>,
    scale: GradScale,
    /// The scale's factor or divisor, splatted (unused for [`GradScale::One`]).
    factor: V,
    copy: Option<ParamCopy<'a>>,
}

impl<'a, V: Vf32> MixedIo<'a, V> {
    #[inline(always)]
    fn new(grad: Grad<'a>, scale: GradScale, copy: Option<ParamCopy<'a>>) -> Self {
        let factor = match scale {
            GradScale::One => 1.0,
            GradScale::MulPow2(r) => r,
            GradScale::Div(s) => s,
        };
        MixedIo {
            grad,
            scale,
            factor: V::splat(factor),
            copy,
        }
    }
}

impl<V: Vf32> GradIo<V> for MixedIo<'_, V> {
    #[inline(always)]
    fn len(
        &mut self,
        w: &mut Window<'_>,
        m: bool,
        v: bool,
        v_max: bool,
        slow: impl Switch,
    ) -> usize {
        let n = w.len_state(m, v, v_max, slow);
        self.grad = self.grad.slice(0, n);
        if let Some(c) = self.copy.as_mut() {
            let out = std::mem::take(&mut c.out);
            c.out = &mut out[..n];
        }
        n
    }

    #[inline(always)]
    fn grad(&self, _: &Window<'_>, i: usize) -> V {
        let g = match self.grad {
            Grad::F32(g) => V::load(&g[i..]),
            Grad::Bf16(h) => V::load_bf16(&h[i..]),
            Grad::F16(h) => V::load_f16(&h[i..]),
        };
        match self.scale {
            GradScale::One => g,
            GradScale::MulPow2(_) => g.mul(self.factor),
            GradScale::Div(_) => g.div(self.factor),
        }
    }

    #[inline(always)]
    fn stored(&mut self, p: V, i: usize) {
        if let Some(c) = self.copy.as_mut() {
            match c.half {
                Half::Bf16 => p.store_bf16(&mut c.out[i..]),
                Half::F16 => p.store_f16(&mut c.out[i..]),
            }
        }
    }
}

/// Whether every 16-bit value of `h` (bit patterns of format `half`) is finite, from the
/// exponent bits alone: integer operations, no widening, 2 bytes read per element (the
/// compiler vectorizes the maximum of `x & 0x7fff` as signed 16-bit lanes, SSE2 `pmaxsw`).
/// The non-finite check of an update that needs no norm; exact, so the same on every tier.
/// Each tier's table compiles it for its instructions (`Kernels::half_finite`: AVX2's 16
/// lanes per `vpmaxsw`), which keeps the scan at memory bandwidth.
#[inline(always)]
pub(crate) fn half_all_finite(half: Half, h: &[u16]) -> bool {
    let limit: i16 = match half {
        Half::Bf16 => 0x7f80,
        Half::F16 => 0x7c00,
    };
    h.chunks(CHUNK)
        .all(|c| c.iter().fold(0i16, |m, &x| m.max((x & 0x7fff) as i16)) < limit)
}

/// Block partial sums of squares of the gradients divided by the scale, as f32: exactly the
/// values the mixed pass applies, so the partials are those of the f32 kernel over them.
pub(crate) fn sumsq_partials_mixed(
    k: &Kernels,
    grad: Grad<'_>,
    scale: GradScale,
    partials: &mut [f64],
) {
    if let (Grad::F32(g), GradScale::One) = (grad, scale) {
        return (k.sumsq_partials)(g, partials);
    }
    let mut scratch = [0f32; SUMSQ_BLOCK];
    let n = grad.len();
    for (b, out) in partials.iter_mut().enumerate() {
        let start = b * SUMSQ_BLOCK;
        let end = (start + SUMSQ_BLOCK).min(n);
        let g = grad_f32(k, grad.slice(start, end), scale, &mut scratch);
        (k.sumsq_partials)(g, std::slice::from_mut(out));
    }
}
