//! The optimizer state of the registered buffers: page-placed f32 buffers, and the views of them
//! that the passes and [`Step::apply`](super::Step::apply) write through.

use super::coverage::UNTRACKED;
use super::{Coverage, IDLE_PLAN};
use crate::error::Error;
use crate::kernels::{q8_block_count, Half, Held, Plan, Q8Code, StateDtype};
use crate::simd::half::f32_to_bf16;
use crate::simd::Tier;

/// Bytes of the span within which the state buffers copy their parameter buffer's placement: a
/// 4 KiB page. A load whose address matches an older store's in the low 12 bits waits for it as
/// if they overlapped ("4K aliasing"); with the state placed at the same offset within a page as
/// its parameters, element `i` of every stream shares its low bits only with element `i` of the
/// others, which is never a later load after an earlier store. Otherwise a state stream trailing
/// the parameter stream by a few cache lines stalls every load: measured 15% at 1e8 elements on
/// this CPU. It also makes the state share the parameters' cache-line alignment, so the fused
/// pass's aligned vector loop (see `kernels::fused`) aligns them all.
pub(super) const STATE_PLACEMENT: usize = 4096;

/// Buffers of at least this many elements (a page of f32) get placed state buffers.
pub const PLACED_MIN_LEN: usize = STATE_PLACEMENT / std::mem::size_of::<f32>();

/// The error for optimizer state that does not fit in memory (`elements` asked for).
pub(super) fn alloc_error(elements: usize) -> Error {
    Error::invalid(
        "params",
        format!("{elements} elements"),
        "cannot allocate optimizer state",
    )
}

/// `len` copies of `x` in a new `Vec`. Fallible: state too large for memory is an error (naming
/// `elements`, the count the caller asked for), not an abort.
pub(super) fn filled<T: Clone>(len: usize, x: T, elements: usize) -> Result<Vec<T>, Error> {
    let mut out = Vec::new();
    out.try_reserve_exact(len)
        .map_err(|_| alloc_error(elements))?;
    out.resize(len, x);
    Ok(out)
}

/// An f32 buffer placed at the same offset within a page as another buffer (see
/// [`STATE_PLACEMENT`]): a `Vec` with up to a page of slack and the offset of the placed start
/// (safe code, no custom allocator). Dereferences to the placed slice of its length.
#[derive(Debug, Default)]
pub(crate) struct Placed {
    pub(super) raw: Vec<f32>,
    pub(super) start: usize,
    pub(super) len: usize,
}

impl Placed {
    /// `n` copies of `x`, placed like `like` within a page if `n` fills one at least.
    /// Fallible (see [`filled`]).
    pub(super) fn filled(n: usize, x: f32, like: *const f32) -> Result<Placed, Error> {
        if n == 0 {
            return Ok(Placed::default());
        }
        let size = std::mem::size_of::<f32>();
        // The slack is up to a page per state buffer: for a buffer shorter than a page it would
        // cost more memory than the buffer (tens of thousands of one-element buffers would
        // take gigabytes), and a stream that short cannot trail another by a page.
        let slack = if n >= PLACED_MIN_LEN {
            STATE_PLACEMENT / size - 1
        } else {
            0
        };
        // A size past usize::MAX saturates and fails like any other too-large one.
        let raw = filled(n.saturating_add(slack), x, n)?;
        // Both addresses are multiples of 4 (f32 alignment), so the byte distance to the wanted
        // page offset is too; only the addresses' values are used, never dereferenced.
        let want = like as usize % STATE_PLACEMENT;
        let have = raw.as_ptr() as usize % STATE_PLACEMENT;
        let start = ((want + STATE_PLACEMENT - have) % STATE_PLACEMENT / size).min(slack);
        Ok(Placed { raw, start, len: n })
    }
}

impl std::ops::Deref for Placed {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.raw[self.start..self.start + self.len]
    }
}

impl std::ops::DerefMut for Placed {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.raw[self.start..self.start + self.len]
    }
}

/// One state buffer as it is held ([`StateDtype`]): page-placed f32, bf16 patterns, or the
/// 8-bit blockwise code with one scale per [`Q8_BLOCK`] elements. Empty where unused.
#[derive(Debug)]
pub(crate) enum Store {
    F32(Placed),
    Bf16(Vec<u16>),
    Q8 { codes: Vec<u8>, scales: Vec<f32> },
}

impl Default for Store {
    fn default() -> Self {
        Store::F32(Placed::default())
    }
}

impl Store {
    /// `n` elements of `dtype` holding `x` (as registration and `reset` hold it: bf16 rounded
    /// to nearest, 8-bit exactly, as each block's scale), f32 ones placed like `like`.
    /// Fallible (see [`filled`]).
    pub(super) fn filled(
        dtype: StateDtype,
        code: Q8Code,
        n: usize,
        x: f32,
        like: *const f32,
    ) -> Result<Store, Error> {
        let mut s = match dtype {
            StateDtype::F32 => return Ok(Store::F32(Placed::filled(n, x, like)?)),
            StateDtype::Bf16 => Store::Bf16(filled(n, 0, n)?),
            StateDtype::Int8 => Store::Q8 {
                codes: filled(n, 0, n)?,
                scales: filled(q8_block_count(n), 0.0, n)?,
            },
        };
        s.fill(code, x);
        Ok(s)
    }

    /// Every element set to `x` (see [`Store::filled`]).
    pub(super) fn fill(&mut self, code: Q8Code, x: f32) {
        match self {
            Store::F32(p) => p.fill(x),
            Store::Bf16(h) => h.fill(f32_to_bf16(x)),
            Store::Q8 { codes, scales } => {
                let (c, s) = q8_constant(code, x);
                codes.fill(c);
                scales.fill(s);
            }
        }
    }

    /// The values of `p` (the slow weights at registration and `reset`; bf16 rounded to
    /// nearest). `p` has this buffer's length.
    pub(super) fn copy_from(&mut self, tier: Tier, p: &[f32]) {
        self.encode_from(tier, Q8Code::Signed, p);
    }

    /// The values `x` (this buffer's length) encoded as held: bf16 rounded to nearest, 8-bit
    /// with `code`.
    pub(super) fn encode_from(&mut self, tier: Tier, code: Q8Code, x: &[f32]) {
        match self {
            Store::F32(s) => s.copy_from_slice(x),
            Store::Bf16(h) => (tier.kernels().narrow)(Half::Bf16, x, h),
            Store::Q8 { codes, scales } => (tier.kernels().encode_q8)(code, None, x, codes, scales),
        }
    }

    /// The number of elements.
    pub(super) fn len(&self) -> usize {
        match self {
            Store::F32(p) => p.len(),
            Store::Bf16(h) => h.len(),
            Store::Q8 { codes, .. } => codes.len(),
        }
    }

    /// How the buffer is held.
    pub(crate) fn dtype(&self) -> StateDtype {
        match self {
            Store::F32(_) => StateDtype::F32,
            Store::Bf16(_) => StateDtype::Bf16,
            Store::Q8 { .. } => StateDtype::Int8,
        }
    }

    /// Appends the buffer as held, little-endian (checkpoints, format 4): f32 values, bf16
    /// patterns, or the 8-bit codes followed by their blocks' f32 scales.
    pub(crate) fn write_le(&self, out: &mut Vec<u8>) {
        match self {
            Store::F32(p) => p
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Store::Bf16(h) => h
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Store::Q8 { codes, scales } => {
                out.extend_from_slice(codes);
                scales
                    .iter()
                    .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
            }
        }
    }

    /// Sets the buffer from `src`, bytes in [`Store::write_le`]'s layout of this buffer's
    /// length and format (checked by the caller).
    pub(crate) fn read_le(&mut self, src: &[u8]) {
        match self {
            Store::F32(p) => p
                .iter_mut()
                .zip(src.chunks_exact(4))
                .for_each(|(d, s)| *d = f32::from_le_bytes([s[0], s[1], s[2], s[3]])),
            Store::Bf16(h) => h
                .iter_mut()
                .zip(src.chunks_exact(2))
                .for_each(|(d, s)| *d = u16::from_le_bytes([s[0], s[1]])),
            Store::Q8 { codes, scales } => {
                let (c, s) = src.split_at(codes.len());
                codes.copy_from_slice(c);
                scales
                    .iter_mut()
                    .zip(s.chunks_exact(4))
                    .for_each(|(d, s)| *d = f32::from_le_bytes([s[0], s[1], s[2], s[3]]));
            }
        }
    }

    /// Bytes the buffer holds (8-bit: codes and scales; without the f32 placement slack).
    pub(super) fn held_bytes(&self) -> usize {
        match self {
            Store::F32(p) => 4 * p.len(),
            Store::Bf16(h) => 2 * h.len(),
            Store::Q8 { codes, scales } => codes.len() + 4 * scales.len(),
        }
    }

    /// Whether the buffer is unused.
    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values, if held as f32.
    pub(super) fn as_f32(&self) -> Option<&[f32]> {
        match self {
            Store::F32(p) => Some(p),
            _ => None,
        }
    }

    /// The values decoded to f32 into `out` (this buffer's length; empty for an unused one).
    pub(super) fn decode_into(
        &self,
        tier: Tier,
        code: Q8Code,
        out: &mut [f32],
    ) -> Result<(), Error> {
        if out.len() != self.len() {
            return Err(Error::LengthMismatch {
                what: "f32 copy of a state buffer".to_string(),
                expected: self.len(),
                got: out.len(),
            });
        }
        let _mode = crate::simd::FpMode::enter();
        let k = tier.kernels();
        match self {
            Store::F32(p) => out.copy_from_slice(p),
            Store::Bf16(h) => (k.widen)(Half::Bf16, h, out),
            Store::Q8 { codes, scales } => (k.decode_q8)(code, codes, scales, out),
        }
        Ok(())
    }

    /// The buffer as a mutable [`Held`] view.
    pub(super) fn held(&mut self) -> Held<'_> {
        match self {
            Store::F32(p) => Held::F32(p),
            Store::Bf16(h) => Held::Bf16(h),
            Store::Q8 { codes, scales } => Held::Q8 { codes, scales },
        }
    }
}

/// The code and scale of a block whose every element is `x`: exact for a finite `x` (the
/// scale is `|x|`, the code 1.0 with its sign).
fn q8_constant(code: Q8Code, x: f32) -> (u8, f32) {
    let (mut c, mut s) = ([0u8], [0f32]);
    crate::kernels::encode_q8(code, None, &[x], &mut c, &mut s);
    (c[0], s[0])
}

/// The optimizer state of one registered buffer. Unused buffers are empty.
#[derive(Debug, Default)]
pub(super) struct BufState {
    pub(super) m: Store,
    pub(super) v: Store,
    pub(super) v_max: Store,
    pub(super) slow: Store,
    /// The buffer's first element in the concatenation of the registered buffers.
    pub(super) start: usize,
    /// Block partials of the sum of squares (scratch for the threaded norm pass).
    pub(super) partials: Vec<f64>,
    /// The per-block sums of a rule with per-buffer norms (LAMB, LARS, NovoGrad: two per block,
    /// `kernels::pre_blocks`); empty for the elementwise rules.
    pub(super) norm_sums: Vec<f64>,
    /// The registered shape of a buffer whose rule is Adafactor (factored second moments; its
    /// `v` holds `rows + cols` averages per matrix), else `None`.
    pub(super) shape: Option<crate::kernels::Shape>,
    /// Scratch of a factored buffer: column sums of one matrix's two halves of rows
    /// (`2 * cols`).
    pub(super) colsum: Vec<f64>,
    /// Scratch of a factored buffer: the row factors (`len / cols`).
    pub(super) rowf: Vec<f32>,
    /// Scratch of a factored buffer: the column factors (`len / rows`).
    pub(super) colf: Vec<f32>,
    /// Scratch of a factored buffer for its passes on two threads: block sums
    /// (`Shape::block_sums_len`).
    pub(super) fsums: Vec<f64>,
    /// Scratch of a factored buffer for its passes on two threads: a copy of the column
    /// factors (`len / rows`).
    pub(super) vcopy: Vec<f32>,
}

/// Mutable view of the state of one buffer (or of a range of it), for
/// [`Step::apply`](super::Step::apply).
/// Split it with [`StateMut::split_at`] to hand disjoint ranges to several threads.
pub struct StateMut<'a> {
    pub(super) m: Held<'a>,
    pub(super) v: Held<'a>,
    pub(super) v_max: Held<'a>,
    pub(super) slow: Held<'a>,
    /// The first element of this view in the concatenation of the registered buffers.
    pub(super) at: usize,
    /// Elements in this view (also when the rule keeps no state).
    pub(super) len: usize,
    /// Where a split cut an 8-bit block: the buffer-relative element, which
    /// [`Step::apply`](super::Step::apply) names in its refusal (the view's state is empty).
    pub(super) cut: Option<usize>,
    /// The view's first element relative to its buffer's start.
    pub(super) offset: usize,
    /// The optimizer's record of the elements applied in the begun update.
    pub(super) coverage: &'a Coverage,
    /// The plan of this buffer's parameter group in the begun update.
    pub(super) plan: &'a Plan,
}

/// Raw pointers to the state of one buffer (null where the rule keeps no such state, or where
/// it is not held as f32), for the C ABI's range entry point, where several host threads
/// update disjoint ranges at once.
#[derive(Debug, Clone, Copy)]
pub struct RawState {
    /// First moment (momentum buffer for SGD).
    pub m: *mut f32,
    /// Second moment (Adam family).
    pub v: *mut f32,
    /// Running maximum of the second moment (AMSGrad).
    pub v_max: *mut f32,
    /// Lookahead's slow weights.
    pub slow: *mut f32,
    /// Elements of each non-null buffer.
    pub len: usize,
}

impl<'a> StateMut<'a> {
    /// Pointers to this view's f32 buffers (null where empty or not held as f32). Using them is
    /// the caller's business: they are valid while the optimizer is alive and its registration
    /// unchanged.
    pub fn into_raw(self, len: usize) -> RawState {
        fn ptr(s: Held<'_>) -> *mut f32 {
            match s.f32_mut() {
                Some(s) if !s.is_empty() => s.as_mut_ptr(),
                _ => std::ptr::null_mut(),
            }
        }
        RawState {
            m: ptr(self.m),
            v: ptr(self.v),
            v_max: ptr(self.v_max),
            slow: ptr(self.slow),
            len,
        }
    }

    /// The four buffers (m, v, v_max, slow), each empty where unused.
    pub(crate) fn into_parts(self) -> [Held<'a>; 4] {
        [self.m, self.v, self.v_max, self.slow]
    }

    /// Elements in this view.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether this view holds no element.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Splits at element `mid` (relative to this view) into `[0, mid)` and `[mid, len)`. With
    /// 8-bit state, a `mid` that cuts a block of 256 elements (not a multiple of 256 from the
    /// buffer's start, nor its end) gives two views that [`Step::apply`](super::Step::apply)
    /// refuses, naming the block.
    ///
    /// # Panics
    /// If `mid > len`, like `slice::split_at`.
    pub fn split_at(self, mid: usize) -> (StateMut<'a>, StateMut<'a>) {
        assert!(
            mid <= self.len,
            "StateMut::split_at: mid {mid} > len {}",
            self.len
        );
        let mut cut = self.cut;
        let mut halves = |h: Held<'a>| match h.split_at(mid) {
            Some(pair) => pair,
            None => {
                cut = cut.or(Some(self.offset + mid));
                (Held::default(), Held::default())
            }
        };
        let (m0, m1) = halves(self.m);
        let (v0, v1) = halves(self.v);
        let (x0, x1) = halves(self.v_max);
        let (s0, s1) = halves(self.slow);
        (
            StateMut {
                m: m0,
                v: v0,
                v_max: x0,
                slow: s0,
                at: self.at,
                len: mid,
                cut,
                offset: self.offset,
                coverage: self.coverage,
                plan: self.plan,
            },
            StateMut {
                m: m1,
                v: v1,
                v_max: x1,
                slow: s1,
                at: self.at + mid,
                len: self.len - mid,
                cut,
                offset: self.offset + mid,
                coverage: self.coverage,
                plan: self.plan,
            },
        )
    }

    /// Whether every buffer is held as f32 (the f32 pass runs as it is).
    pub(super) fn all_f32(&self) -> bool {
        [&self.m, &self.v, &self.v_max, &self.slow]
            .iter()
            .all(|h| matches!(h, Held::F32(_)))
    }
}

impl BufState {
    /// A view of all of this buffer's state for the update's own loops (not split-tracked).
    pub(super) fn whole(&mut self, len: usize) -> StateMut<'_> {
        let at = self.start;
        self.view(at, len, &UNTRACKED, &IDLE_PLAN)
    }

    /// A view of this buffer's state, elements `[at, at + len)` of the concatenation, applied
    /// with `plan`.
    pub(super) fn view<'a>(
        &'a mut self,
        at: usize,
        len: usize,
        coverage: &'a Coverage,
        plan: &'a Plan,
    ) -> StateMut<'a> {
        StateMut {
            m: self.m.held(),
            v: self.v.held(),
            v_max: self.v_max.held(),
            slow: self.slow.held(),
            at,
            len,
            cut: None,
            offset: 0,
            coverage,
            plan,
        }
    }
}
