//! The fused pass over compressed state (`docs/numerics.md`, "Compressed state"): state
//! buffers held as f32, bf16 or the 8-bit blockwise code ([`Held`]). The pass runs in chunks of
//! [`HELD_CHUNK`] elements: each compressed buffer's chunk is decoded into an f32 scratch on
//! the stack, the f32 fused pass runs on the chunk unchanged, and the chunk's state is encoded
//! back (bf16 rounded stochastically or to nearest, 8-bit blocks requantized with their new
//! scales). The rule loops are not instantiated again per format, and the result is exactly
//! that composition, on every tier and at any split that keeps the 8-bit blocks whole.

use super::codec::{
    encode_q8, encode_q8_sr2_block, q8_codes_plain, q8_decode_lanes, q8_decode_plain_lanes,
    q8_top_bits, Q8Code, SrKey, Stream, Q8_BLOCK,
};
use super::convert::Half;
use super::fused::{pipe, vector_part, GradIo, Lanes, Span, Switch, Window};
use super::mixed::{grad_f32, Grad, GradScale, ParamCopy, CHUNK};
use super::plan::{Buffers, Plan, Rule};
use crate::rules::{
    adam_bf16_span, adam_io_span, adam_io_span_tested, has_bf16_span, has_io_span, Bf16Moments,
};
use crate::simd::{Kernels, Vf32, Vu32};

crate::catalog::choice! {
    /// How optimizer state is held (`docs/numerics.md`, "Compressed state").
    #[derive(Default)]
    pub enum StateDtype {
        /// f32 (the default): 4 bytes per element and buffer.
        #[default]
        F32 = "float32",
        /// bf16: 2 bytes per element and buffer.
        Bf16 = "bfloat16",
        /// The 8-bit blockwise code: 1 byte per element and buffer, and one f32 scale per 256.
        Int8 = "int8",
    }
}

crate::catalog::choice! {
    /// How f32 values are rounded into bf16 state.
    #[derive(Default)]
    pub enum StateRounding {
        /// Stochastic rounding with a counter-based hash (the default): unbiased, so that small
        /// updates of slowly moving moments are not lost.
        #[default]
        Stochastic = "stochastic",
        /// Round to nearest, ties to even.
        Nearest = "nearest",
    }
}

impl StateDtype {
    /// Its name: `float32`, `bfloat16` or `int8`.
    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    /// Bytes per element of one buffer held this way, scales included (8-bit: `1 + 4/256`).
    pub fn bytes_per_element(self) -> f64 {
        match self {
            StateDtype::F32 => 4.0,
            StateDtype::Bf16 => 2.0,
            StateDtype::Int8 => 1.0 + 4.0 / Q8_BLOCK as f64,
        }
    }
}

/// Elements per chunk of the pass over compressed state: a multiple of [`Q8_BLOCK`] and a
/// divisor of the mixed pass's chunk, so that four f32 scratch buffers stay in L1.
pub const HELD_CHUNK: usize = 1024;
const _: () = assert!(HELD_CHUNK.is_multiple_of(Q8_BLOCK) && CHUNK.is_multiple_of(HELD_CHUNK));

/// One state buffer (or a range of it starting on an 8-bit block boundary) as it is held.
#[derive(Debug)]
pub enum Held<'a> {
    /// f32 values.
    F32(&'a mut [f32]),
    /// bf16 bit patterns.
    Bf16(&'a mut [u16]),
    /// The 8-bit blockwise code: one code per element, one scale per block of [`Q8_BLOCK`]
    /// elements from the start of the range (the last one may be shorter).
    Q8 {
        /// The codes.
        codes: &'a mut [u8],
        /// The blocks' scales.
        scales: &'a mut [f32],
    },
}

impl Default for Held<'_> {
    fn default() -> Self {
        Held::F32(&mut [])
    }
}

impl<'a> Held<'a> {
    /// The number of elements.
    pub fn len(&self) -> usize {
        match self {
            Held::F32(x) => x.len(),
            Held::Bf16(x) => x.len(),
            Held::Q8 { codes, .. } => codes.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The f32 values, if held as f32.
    pub fn f32_mut(self) -> Option<&'a mut [f32]> {
        match self {
            Held::F32(x) => Some(x),
            _ => None,
        }
    }

    /// Splits at element `mid`; `None` if `mid` cuts an 8-bit block (it is neither a multiple
    /// of [`Q8_BLOCK`] nor the end). An empty buffer splits into two empty ones.
    pub fn split_at(self, mid: usize) -> Option<(Held<'a>, Held<'a>)> {
        if self.is_empty() {
            return Some((Held::default(), Held::default()));
        }
        Some(match self {
            Held::F32(x) => {
                let (a, b) = x.split_at_mut(mid);
                (Held::F32(a), Held::F32(b))
            }
            Held::Bf16(x) => {
                let (a, b) = x.split_at_mut(mid);
                (Held::Bf16(a), Held::Bf16(b))
            }
            Held::Q8 { codes, scales } => {
                if !mid.is_multiple_of(Q8_BLOCK) && mid != codes.len() {
                    return None;
                }
                let (c0, c1) = codes.split_at_mut(mid);
                let (s0, s1) = scales.split_at_mut(mid.div_ceil(Q8_BLOCK));
                (
                    Held::Q8 {
                        codes: c0,
                        scales: s0,
                    },
                    Held::Q8 {
                        codes: c1,
                        scales: s1,
                    },
                )
            }
        })
    }

    /// Elements `start..end` (`start` on a block boundary) reborrowed.
    fn range(&mut self, start: usize, end: usize) -> Held<'_> {
        match self {
            Held::F32(x) => Held::F32(&mut x[start..end]),
            Held::Bf16(x) => Held::Bf16(&mut x[start..end]),
            Held::Q8 { codes, scales } => Held::Q8 {
                codes: &mut codes[start..end],
                scales: &mut scales[start / Q8_BLOCK..end.div_ceil(Q8_BLOCK)],
            },
        }
    }
}

/// How compressed state is rounded in one update: the rounding of bf16 state and the counter
/// of its random bits (`seed`, the update's number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldRounding {
    /// bf16 rounding.
    pub rounding: StateRounding,
    /// The seed of stochastic rounding.
    pub seed: u64,
    /// The 1-based number of the update.
    pub step: u64,
}

/// The buffers of one pass over held state: [`super::MixedBuffers`] with each state buffer
/// [`Held`], and the index of the first element (stochastic rounding's counter).
pub struct HeldBuffers<'a> {
    /// The parameters, updated in place.
    pub param: &'a mut [f32],
    /// The gradients (read only).
    pub grad: Grad<'a>,
    /// Momentum trace or first moment.
    pub m: Held<'a>,
    /// Second moment.
    pub v: Held<'a>,
    /// AMSGrad's running maximum of `v` / RMSprop's centered average.
    pub v_max: Held<'a>,
    /// Lookahead's slow weights.
    pub slow: Held<'a>,
    /// The 16-bit copy of the parameters written in the pass.
    pub copy: Option<ParamCopy<'a>>,
    /// The index of `param[0]` (the optimizer's index offset plus the element's place in the
    /// concatenation of its buffers).
    pub index: u64,
}

/// The 8-bit code of each of `rule`'s state buffers (m, v, v_max): unsigned where the rule
/// keeps the buffer >= 0, signed otherwise; `None` where 8 bits are refused (Rprop's step
/// sizes and previous gradients: `Config::validate` refuses int8 state for it).
pub fn q8_codes(rule: &Rule) -> Option<[Q8Code; 3]> {
    use Q8Code::{Signed as S, Unsigned as U};
    Some(match rule {
        // Rprop's step sizes; Adafactor keeps f32 state (refused at configuration).
        Rule::Rprop { .. } | Rule::Adafactor { .. } => return None,
        // The centered gradient average in v_max may be negative.
        Rule::RmsProp { .. } => [S, U, S],
        // Adadelta's m is the average of squared updates.
        Rule::Adadelta { .. } => [U, U, U],
        Rule::Sgd { .. }
        | Rule::Momentum { .. }
        | Rule::Adam { .. }
        | Rule::RAdam { .. }
        | Rule::Adagrad { .. }
        | Rule::Adamax { .. }
        | Rule::NAdam { .. }
        | Rule::Lion { .. }
        | Rule::AdaBelief { .. }
        | Rule::Yogi { .. }
        | Rule::Lamb { .. }
        | Rule::Lars { .. }
        // NovoGrad's v holds its per-buffer second moment in element 0, zeros elsewhere.
        | Rule::Novograd { .. } => [S, U, U],
    })
}

/// An f32 scratch of one chunk, aligned for the widest vector.
#[repr(align(64))]
struct Scratch([f32; HELD_CHUNK]);

impl Scratch {
    fn new() -> Self {
        Scratch([0.0; HELD_CHUNK])
    }
}

/// Decodes `h` (a chunk) into `scratch` and returns the f32 view the pass writes: `h` itself
/// when held as f32.
fn decode<'s>(
    k: &Kernels,
    code: Q8Code,
    h: &'s mut Held<'_>,
    scratch: &'s mut Scratch,
) -> &'s mut [f32] {
    let n = h.len();
    let out = &mut scratch.0[..n];
    match h {
        Held::F32(x) => return &mut x[..],
        Held::Bf16(x) => (k.widen)(Half::Bf16, x, out),
        Held::Q8 { codes, scales } => (k.decode_q8)(code, codes, scales, out),
    }
    out
}

/// Encodes the chunk's new values `x` back into `h` (nothing when held as f32).
fn encode(k: &Kernels, code: Q8Code, r: Option<SrKey>, index: u64, x: &[f32], h: &mut Held<'_>) {
    match h {
        Held::F32(_) => {}
        Held::Bf16(out) => match r {
            Some(key) => (k.encode_bf16_sr)(key, index, x, out),
            None => (k.narrow)(Half::Bf16, x, out),
        },
        Held::Q8 { codes, scales } => {
            (k.encode_q8)(code, r.map(|key| (key, index)), x, codes, scales)
        }
    }
}

/// Encodes the chunks `x` of a stream pair's two buffers into `h` with one hash per element
/// (`encode_bf16_sr2`, `encode_q8_sr2`) when both are held alike, in bf16 or 8 bits, and
/// rounded stochastically (`key`, of the pair's first stream); `false`, with nothing written,
/// otherwise (an unused buffer is an empty f32 view).
fn encode_pair(
    k: &Kernels,
    codes: [Q8Code; 2],
    key: Option<SrKey>,
    at: u64,
    x: [&[f32]; 2],
    h: [&mut Held<'_>; 2],
) -> bool {
    let Some(key) = key else {
        return false;
    };
    match h {
        [Held::Bf16(da), Held::Bf16(db)] => (k.encode_bf16_sr2)(key, at, x, [da, db]),
        [Held::Q8 {
            codes: ca,
            scales: sa,
        }, Held::Q8 {
            codes: cb,
            scales: sb,
        }] => (k.encode_q8_sr2)(codes, key, at, x, [ca, cb], [sa, sb]),
        _ => return false,
    }
    true
}

/// One fused pass over `b` with held state and the kernels of table `k`. Callers have checked
/// every length and that the range starts on an 8-bit block boundary of its buffer.
pub(crate) fn fused_held(
    k: &Kernels,
    plan: &Plan,
    scale: GradScale,
    rounding: HeldRounding,
    b: HeldBuffers<'_>,
) {
    let b = match fused_bf16_buffers(plan, scale, rounding, b) {
        Ok(f) => return (k.fused_bf16)(plan, f),
        Err(b) => b,
    };
    let b = match fused_q8_buffers(plan, scale, rounding, b) {
        Ok(f) => return (k.fused_q8)(plan, f),
        Err(b) => b,
    };
    let HeldBuffers {
        param,
        grad,
        mut m,
        mut v,
        mut v_max,
        mut slow,
        mut copy,
        index,
    } = b;
    let codes = q8_codes(&plan.rule).unwrap_or([Q8Code::Signed; 3]);
    let (um, uv, uvm) = plan.rule.state_used();
    // A `v` the loop leaves alone (NovoGrad's update) is neither decoded nor encoded: the loop
    // gets an unread scratch of its length.
    let skip_v = uv && plan.rule.update_skips_v();
    let uv = uv && !skip_v;
    let mut unread = Scratch::new();
    let sync = plan.sync_alpha.is_some();
    let key = |stream| {
        (rounding.rounding == StateRounding::Stochastic).then_some(SrKey {
            seed: rounding.seed,
            step: rounding.step,
            stream,
        })
    };
    let streams = [
        (um, Stream::M, codes[0]),
        (uv, Stream::V, codes[1]),
        (uvm, Stream::VMax, codes[2]),
        (sync, Stream::Slow, Q8Code::Signed),
    ];
    let mut scratch = [
        Scratch::new(),
        Scratch::new(),
        Scratch::new(),
        Scratch::new(),
    ];
    let mut gscratch = [0f32; HELD_CHUNK];
    let n = param.len();
    let mut start = 0;
    while start < n {
        let end = (start + HELD_CHUNK).min(n);
        let mut held = [
            m.range_if(um, start, end),
            if skip_v {
                Held::F32(&mut unread.0[..end - start])
            } else {
                v.range_if(uv, start, end)
            },
            v_max.range_if(uvm, start, end),
            slow.range_if(sync, start, end),
        ];
        let [s0, s1, s2, s3] = &mut scratch;
        let [h0, h1, h2, h3] = &mut held;
        let views = [
            decode(k, codes[0], h0, s0),
            decode(k, codes[1], h1, s1),
            decode(k, codes[2], h2, s2),
            decode(k, Q8Code::Signed, h3, s3),
        ];
        let [vm, vv, vx, vs] = views;
        let g = grad_f32(k, grad.slice(start, end), scale, &mut gscratch);
        let p = &mut param[start..end];
        (k.fused)(
            plan,
            Buffers {
                param: p,
                grad: g,
                m: vm,
                v: vv,
                v_max: vx,
                slow: vs,
            },
        );
        let at = index.wrapping_add(start as u64);
        // The two buffers of a stream pair held alike (bf16 or 8 bits) and rounded
        // stochastically share one hash per element; anything else is encoded buffer by buffer.
        for pair in [0, 2] {
            let (a, b) = (streams[pair], streams[pair + 1]);
            let (ha, hb) = held.split_at_mut(pair + 1);
            let (ha, hb) = (&mut ha[pair], &mut hb[0]);
            let n = ha.len();
            let x = [&scratch[pair].0[..n], &scratch[pair + 1].0[..n]];
            if encode_pair(k, [a.2, b.2], key(a.1), at, x, [ha, hb]) {
                continue;
            }
            for i in [pair, pair + 1] {
                let (used, stream, code) = streams[i];
                if used {
                    let x = &scratch[i].0[..held[i].len()];
                    encode(k, code, key(stream), at, x, &mut held[i]);
                }
            }
        }
        if sync {
            // The parameters are the slow weights as held, bit for bit.
            if let Held::Bf16(s) = &held[3] {
                (k.widen)(Half::Bf16, s, p);
            }
        }
        if let Some(c) = copy.as_mut() {
            (k.narrow)(c.half, p, &mut c.out[start..end]);
        }
        start = end;
    }
}

impl Held<'_> {
    /// Elements `start..end` if the buffer is used, else an empty f32 view.
    fn range_if(&mut self, used: bool, start: usize, end: usize) -> Held<'_> {
        if used && !self.is_empty() {
            self.range(start, end)
        } else {
            Held::default()
        }
    }
}

/// The buffers of a fused pass over bf16 moments rounded stochastically ([`fused_bf16`]).
pub(crate) struct Bf16Pass<'a> {
    param: &'a mut [f32],
    grad: &'a [f32],
    m: &'a mut [u16],
    v: &'a mut [u16],
    /// Empty unless the rule uses it.
    v_max: &'a mut [u16],
    /// f32 slow weights, empty unless the plan syncs.
    slow: &'a mut [f32],
    index: u64,
    /// Stream M's key: the pairs' keys follow from it.
    key: SrKey,
}

/// What the fused passes over compressed moments ([`fused_bf16`], [`fused_q8`]) need of `b`
/// besides its moments: f32 gradients without a loss scale, no 16-bit copy, and f32 slow
/// weights if the plan syncs.
fn f32_io(plan: &Plan, scale: GradScale, b: &HeldBuffers<'_>) -> bool {
    scale == GradScale::One
        && b.copy.is_none()
        && matches!(b.grad, Grad::F32(_))
        && (plan.sync_alpha.is_none() || matches!(b.slow, Held::F32(_)))
}

/// `b` as the buffers of [`fused_bf16`] if that pass computes it: a rule with a fused loop
/// over bf16 moments (`crate::rules::has_bf16_span`), every state buffer it uses held as bf16
/// and rounded stochastically, f32 slow weights, f32 gradients without a loss scale and no
/// 16-bit copy; `b` back otherwise.
// The buffers come back by value, moved once per pass, so that the chunked pass takes them
// unchanged; boxing them would allocate in the update, which flatopt never does.
#[allow(clippy::result_large_err)]
fn fused_bf16_buffers<'a>(
    plan: &Plan,
    scale: GradScale,
    rounding: HeldRounding,
    b: HeldBuffers<'a>,
) -> Result<Bf16Pass<'a>, HeldBuffers<'a>> {
    let (_, _, uvm) = plan.rule.state_used();
    let sync = plan.sync_alpha.is_some();
    let fits = has_bf16_span(&plan.rule)
        && rounding.rounding == StateRounding::Stochastic
        && f32_io(plan, scale, &b)
        && matches!((&b.m, &b.v), (Held::Bf16(_), Held::Bf16(_)))
        && (!uvm || matches!(b.v_max, Held::Bf16(_)));
    if !fits {
        return Err(b);
    }
    let HeldBuffers {
        param,
        grad: Grad::F32(grad),
        m: Held::Bf16(m),
        v: Held::Bf16(v),
        v_max,
        slow,
        index,
        ..
    } = b
    else {
        unreachable!("checked above")
    };
    let v_max = match v_max {
        Held::Bf16(x) if uvm => x,
        _ => &mut [],
    };
    let slow = match slow {
        Held::F32(x) if sync => x,
        _ => &mut [],
    };
    let key = SrKey {
        seed: rounding.seed,
        step: rounding.step,
        stream: Stream::M,
    };
    Ok(Bf16Pass {
        param,
        grad,
        m,
        v,
        v_max,
        slow,
        index,
        key,
    })
}

/// The fused pass over bf16 moments with vectors `V` (the heads and tails with the scalar
/// tier): the rule's loop loads and widens the moments, rounds them stochastically as it
/// stores them (the random bits of [`SrKey::bits`]), with no f32 copy of the state; bit for
/// bit the chunked pass of [`fused_held`]. Runs of indices with one upper half are windows of
/// their own (one key each).
#[inline(always)]
pub(crate) fn fused_bf16<V: Vf32>(plan: &Plan, b: Bf16Pass<'_>) {
    let Bf16Pass {
        param,
        grad,
        m,
        v,
        v_max,
        slow,
        index,
        key,
    } = b;
    let n = param.len();
    let vmax_key = SrKey {
        stream: Stream::VMax,
        ..key
    };
    let mut start = 0;
    while start < n {
        let at = index.wrapping_add(start as u64);
        let run = ((1u64 << 32) - (at & 0xffff_ffff)).min((n - start) as u64) as usize;
        let end = start + run;
        let hi = (at >> 32) as u32;
        let keys = [key.key(hi), vmax_key.key(hi)];
        let (head, split) = vector_part::<V>(param[start..].as_ptr(), run);
        for (s, e, vector) in [(0, head, false), (head, split, true), (split, run, false)] {
            let (s, e) = (start + s, start + e);
            let mut h = Bf16Moments {
                m: &mut m[s..e],
                v: &mut v[s..e],
                v_max: cut(v_max, s, e),
                lo: (at as u32).wrapping_add((s - start) as u32),
                keys,
            };
            let mut w = Window {
                param: &mut param[s..e],
                grad: &grad[s..e],
                m: &mut [],
                v: &mut [],
                v_max: &mut [],
                slow: cut(slow, s, e),
            };
            if vector && V::LANES > 1 {
                bf16_span::<V>(plan, &mut w, &mut h);
            } else {
                bf16_span::<f32>(plan, &mut w, &mut h);
            }
        }
        start = end;
    }
}

/// Elements `s..e` of a buffer that is used, or the empty one that is not.
#[inline(always)]
fn cut<T>(x: &mut [T], s: usize, e: usize) -> &mut [T] {
    if x.is_empty() {
        x
    } else {
        &mut x[s..e]
    }
}

/// One window of [`fused_bf16`] through the rule's loop.
#[inline(always)]
fn bf16_span<V: Vf32>(plan: &Plan, w: &mut Window<'_>, h: &mut Bf16Moments<'_>) {
    let k = Lanes::<V>::new(plan);
    let s = Span {
        k: &k,
        w,
        pipe: pipe(plan),
    };
    adam_bf16_span(plan.rule, s, h);
}

/// The buffers of a fused pass over 8-bit moments ([`fused_q8`]).
pub(crate) struct Q8Pass<'a> {
    param: &'a mut [f32],
    grad: &'a [f32],
    /// The codes of m, v and v_max (empty unless the rule uses it).
    codes: [&'a mut [u8]; 3],
    /// Their blocks' scales.
    scales: [&'a mut [f32]; 3],
    /// f32 slow weights, empty unless the plan syncs.
    slow: &'a mut [f32],
    index: u64,
    /// Stream M's key (the pair m, v), or `None`: rounded to nearest.
    key: Option<SrKey>,
}

/// `b` as the buffers of [`fused_q8`] if that pass computes it: a rule whose loop takes its
/// state through [`GradIo`] (`crate::rules::has_io_span`), every state buffer it uses held in
/// 8 bits, f32 slow weights, f32 gradients without a loss scale and no 16-bit copy; `b` back
/// otherwise.
#[allow(clippy::result_large_err)]
fn fused_q8_buffers<'a>(
    plan: &Plan,
    scale: GradScale,
    rounding: HeldRounding,
    b: HeldBuffers<'a>,
) -> Result<Q8Pass<'a>, HeldBuffers<'a>> {
    let (_, _, uvm) = plan.rule.state_used();
    let sync = plan.sync_alpha.is_some();
    let q8 = |h: &Held<'_>| matches!(h, Held::Q8 { .. });
    let fits = has_io_span(&plan.rule)
        && q8_codes(&plan.rule) == Some(Q8_IO_CODES)
        && f32_io(plan, scale, &b)
        && q8(&b.m)
        && q8(&b.v)
        && (!uvm || q8(&b.v_max));
    if !fits {
        return Err(b);
    }
    let HeldBuffers {
        param,
        grad: Grad::F32(grad),
        m: Held::Q8 {
            codes: cm,
            scales: sm,
        },
        v: Held::Q8 {
            codes: cv,
            scales: sv,
        },
        v_max,
        slow,
        index,
        ..
    } = b
    else {
        unreachable!("checked above")
    };
    let (cx, sx): (&mut [u8], &mut [f32]) = match v_max {
        Held::Q8 { codes, scales } if uvm => (codes, scales),
        _ => (&mut [], &mut []),
    };
    let slow = match slow {
        Held::F32(x) if sync => x,
        _ => &mut [],
    };
    let key = (rounding.rounding == StateRounding::Stochastic).then_some(SrKey {
        seed: rounding.seed,
        step: rounding.step,
        stream: Stream::M,
    });
    Ok(Q8Pass {
        param,
        grad,
        codes: [cm, cv, cx],
        scales: [sm, sv, sx],
        slow,
        index,
        key,
    })
}

/// A block's f32 scratch, aligned for the widest vector.
#[derive(Clone, Copy)]
#[repr(align(64))]
struct Block([f32; Q8_BLOCK]);

/// The fused pass over 8-bit moments with vectors `V`, block by block: the rule's loop decodes
/// the moments as it loads them ([`Q8Io`]) and writes the new ones to an f32 scratch of one
/// block (in L1), whose scales and codes are then computed as the chunked pass of
/// [`fused_held`] computes them (the pair encoder with one hash per element when rounded
/// stochastically), so the result is that pass's bit for bit with no f32 copy of the state
/// in memory and no separate decoding pass. A block's last elements short of a vector (only
/// the buffer's last block has them) run with the scalar tier.
#[inline(always)]
pub(crate) fn fused_q8<V: Vf32>(plan: &Plan, b: Q8Pass<'_>) {
    let Q8Pass {
        param,
        grad,
        codes: [cm, cv, cx],
        scales: [sm, sv, sx],
        slow,
        index,
        key,
    } = b;
    let (kv, ks) = (Lanes::<V>::new(plan), Lanes::<f32>::new(plan));
    let pipe = pipe(plan);
    let amsgrad = !cx.is_empty();
    let [cm_code, cv_code, cx_code] = Q8_IO_CODES;
    // v_max is paired with the slow weights, which are f32 here: it is encoded on its own, with
    // its stream's half of the pair's hash.
    let vmax_key = key.map(|k| SrKey {
        stream: Stream::VMax,
        ..k
    });
    let mut x = [Block([0.0; Q8_BLOCK]); 3];
    let n = param.len();
    for (bi, start) in (0..n).step_by(Q8_BLOCK).enumerate() {
        let end = (start + Q8_BLOCK).min(n);
        let len = end - start;
        let split = start + len / V::LANES * V::LANES;
        let scale = [sm[bi], sv[bi], if amsgrad { sx[bi] } else { 0.0 }];
        // A block whose codes are all finite values (every block, unless a NaN or Inf was
        // stored) decodes with fewer operations, in a loop specialized for its switches.
        let plain = q8_codes_plain(cm_code, &cm[start..end])
            && q8_codes_plain(cv_code, &cv[start..end])
            && (!amsgrad || q8_codes_plain(cx_code, &cx[start..end]));
        // The largest bit patterns of the block's new m and v (`q8_top_bits`), which the
        // loop takes as it stores them, so that the encoder needs no pass of its own for them.
        let mut tops = [0u32; 2];
        for (s, e, vector) in [(start, split, true), (split, end, false)] {
            if s == e {
                continue;
            }
            let (a, z) = (s - start, e - start);
            let [xm, xv, xx] = &mut x;
            let mut w = Window {
                param: &mut param[s..e],
                grad: &grad[s..e],
                m: &mut xm.0[a..z],
                v: &mut xv.0[a..z],
                v_max: if amsgrad { &mut xx.0[a..z] } else { &mut [] },
                slow: cut(slow, s, e),
            };
            let c = [&cm[s..e], &cv[s..e], if amsgrad { &cx[s..e] } else { &[] }];
            if vector && V::LANES > 1 {
                let s = Span {
                    k: &kv,
                    w: &mut w,
                    pipe,
                };
                if plain {
                    let mut io = Q8Io::<V, true>::new(c, scale);
                    adam_io_span(plan.rule, s, &mut io);
                    io.fold_tops(&mut tops);
                } else {
                    let mut io = Q8Io::<V, false>::new(c, scale);
                    adam_io_span_tested(plan.rule, s, &mut io);
                    io.fold_tops(&mut tops);
                }
            } else {
                let s = Span {
                    k: &ks,
                    w: &mut w,
                    pipe,
                };
                let mut io = Q8Io::<f32, false>::new(c, scale);
                adam_io_span(plan.rule, s, &mut io);
                io.fold_tops(&mut tops);
            }
        }
        let at = index.wrapping_add(start as u64);
        let [xm, xv, xx] = &x;
        let (bm, bv) = (&xm.0[..len], &xv.0[..len]);
        let (om, ov) = (&mut cm[start..end], &mut cv[start..end]);
        let (pm, pv) = (&mut sm[bi..bi + 1], &mut sv[bi..bi + 1]);
        match key {
            Some(key) => {
                let s = [&mut pm[0], &mut pv[0]];
                encode_q8_sr2_block::<V>([cm_code, cv_code], key, at, [bm, bv], [om, ov], s, tops)
            }
            None => {
                encode_q8(cm_code, None, bm, om, pm);
                encode_q8(cv_code, None, bv, ov, pv);
            }
        }
        if amsgrad {
            let sr = vmax_key.map(|k| (k, at));
            encode_q8(
                cx_code,
                sr,
                &xx.0[..len],
                &mut cx[start..end],
                &mut sx[bi..bi + 1],
            );
        }
    }
}

/// The codes of m, v and v_max in [`fused_q8`] (Adam's, `q8_codes`): constants, so that the
/// decoding in the loop has no branch.
const Q8_IO_CODES: [Q8Code; 3] = [Q8Code::Signed, Q8Code::Unsigned, Q8Code::Unsigned];

/// The 8-bit moments of one window of [`fused_q8`] (inside one block) as a loop's state
/// ([`GradIo`]): decoded with the block's scales as the loop loads them; gradients from the
/// window, nothing done with the stored parameters. `PLAIN`: the codes are finite values
/// only ([`q8_codes_plain`]).
pub(crate) struct Q8Io<'a, V: Vf32, const PLAIN: bool> {
    /// The codes of m, v, v_max (empty unless used), coded as [`Q8_IO_CODES`] says.
    codes: [&'a [u8]; 3],
    /// Their block's scales, splatted.
    scale: [V; 3],
    /// The largest `q8_top_bits` of the new m and v so far, per lane.
    tops: [V::U; 2],
}

impl<'a, V: Vf32, const PLAIN: bool> Q8Io<'a, V, PLAIN> {
    #[inline(always)]
    fn new(codes: [&'a [u8]; 3], scale: [f32; 3]) -> Self {
        Q8Io {
            codes,
            scale: scale.map(V::splat),
            tops: [V::U::splat(0); 2],
        }
    }

    /// Folds the largest patterns of the moments this loop stored into `tops`.
    #[inline(always)]
    fn fold_tops(&self, tops: &mut [u32; 2]) {
        for (t, acc) in tops.iter_mut().zip(self.tops) {
            *t = Ord::max(*t, acc.max_lane());
        }
    }

    #[inline(always)]
    fn decode(&self, j: usize, i: usize) -> V {
        let c = V::U::load_u8(&self.codes[j][i..]);
        if PLAIN {
            q8_decode_plain_lanes(Q8_IO_CODES[j], c, self.scale[j])
        } else {
            q8_decode_lanes(Q8_IO_CODES[j], c, self.scale[j])
        }
    }
}

impl<V: Vf32, const PLAIN: bool> GradIo<V> for Q8Io<'_, V, PLAIN> {
    #[inline(always)]
    fn len(
        &mut self,
        w: &mut Window<'_>,
        m: bool,
        v: bool,
        v_max: bool,
        slow: impl Switch,
    ) -> usize {
        let n = w.len(m, v, v_max, slow);
        for (c, used) in self.codes.iter_mut().zip([m, v, v_max]) {
            if used {
                *c = &c[..n];
            }
        }
        n
    }

    #[inline(always)]
    fn grad(&self, w: &Window<'_>, i: usize) -> V {
        V::load(&w.grad[i..])
    }

    #[inline(always)]
    fn stored(&mut self, _: V, _: usize) {}

    #[inline(always)]
    fn moments(&self, _: &Window<'_>, i: usize) -> (V, V) {
        (self.decode(0, i), self.decode(1, i))
    }

    #[inline(always)]
    fn v_max(&self, _: &Window<'_>, i: usize) -> V {
        self.decode(2, i)
    }

    #[inline(always)]
    fn put_moments(&mut self, w: &mut Window<'_>, m: V, v: V, i: usize) {
        m.store(&mut w.m[i..]);
        v.store(&mut w.v[i..]);
        let [cm, cv, _] = Q8_IO_CODES;
        self.tops[0] = self.tops[0].max(q8_top_bits(cm, m.to_bits()));
        self.tops[1] = self.tops[1].max(q8_top_bits(cv, v.to_bits()));
    }
}
