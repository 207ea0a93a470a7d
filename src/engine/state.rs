//! The optimizer state of the registered buffers: page-placed f32 buffers, and the views of them
//! that the passes and [`Step::apply`](super::Step::apply) write through.

use super::coverage::UNTRACKED;
use super::{Coverage, IDLE_PLAN};
use crate::error::Error;
use crate::kernels::Plan;

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
pub(super) struct Placed {
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

/// The optimizer state of one registered buffer. Unused buffers are empty.
#[derive(Debug, Default)]
pub(super) struct BufState {
    pub(super) m: Placed,
    pub(super) v: Placed,
    pub(super) v_max: Placed,
    pub(super) slow: Placed,
    /// Block partials of the sum of squares (scratch for the threaded norm pass).
    pub(super) partials: Vec<f64>,
}

/// Mutable view of the state of one buffer (or of a range of it), for
/// [`Step::apply`](super::Step::apply).
/// Split it with [`StateMut::split_at`] to hand disjoint ranges to several threads.
pub struct StateMut<'a> {
    pub(super) m: &'a mut [f32],
    pub(super) v: &'a mut [f32],
    pub(super) v_max: &'a mut [f32],
    pub(super) slow: &'a mut [f32],
    /// The first element of this view in the concatenation of the registered buffers.
    pub(super) at: usize,
    /// Elements in this view (also when the rule keeps no state).
    pub(super) len: usize,
    /// The optimizer's record of the elements applied in the begun update.
    pub(super) coverage: &'a Coverage,
    /// The plan of this buffer's parameter group in the begun update.
    pub(super) plan: &'a Plan,
}

/// Raw pointers to the state of one buffer (null where the rule keeps no such state), for the
/// C ABI's range entry point, where several host threads update disjoint ranges at once.
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
    /// Pointers to this view's buffers (null where empty). Using them is the caller's business:
    /// they are valid while the optimizer is alive and its registration unchanged.
    pub fn into_raw(self, len: usize) -> RawState {
        fn ptr(s: &mut [f32]) -> *mut f32 {
            if s.is_empty() {
                std::ptr::null_mut()
            } else {
                s.as_mut_ptr()
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

    /// The four slices (m, v, v_max, slow), each empty where unused.
    pub(crate) fn into_parts(self) -> (&'a mut [f32], &'a mut [f32], &'a mut [f32], &'a mut [f32]) {
        (self.m, self.v, self.v_max, self.slow)
    }

    /// Elements in this view.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether this view holds no element.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Splits at element `mid` (relative to this view) into `[0, mid)` and `[mid, len)`.
    ///
    /// # Panics
    /// If `mid > len`, like `slice::split_at`.
    pub fn split_at(self, mid: usize) -> (StateMut<'a>, StateMut<'a>) {
        assert!(
            mid <= self.len,
            "StateMut::split_at: mid {mid} > len {}",
            self.len
        );
        fn cut(s: &mut [f32], mid: usize) -> (&mut [f32], &mut [f32]) {
            if s.is_empty() {
                (&mut [], &mut [])
            } else {
                s.split_at_mut(mid)
            }
        }
        let (m0, m1) = cut(self.m, mid);
        let (v0, v1) = cut(self.v, mid);
        let (x0, x1) = cut(self.v_max, mid);
        let (s0, s1) = cut(self.slow, mid);
        (
            StateMut {
                m: m0,
                v: v0,
                v_max: x0,
                slow: s0,
                at: self.at,
                len: mid,
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
                coverage: self.coverage,
                plan: self.plan,
            },
        )
    }
}

impl BufState {
    /// A view of all of this buffer's state for the update's own loops (not split-tracked).
    pub(super) fn whole(&mut self, len: usize) -> StateMut<'_> {
        self.view(0, len, &UNTRACKED, &IDLE_PLAN)
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
            m: &mut self.m,
            v: &mut self.v,
            v_max: &mut self.v_max,
            slow: &mut self.slow,
            at,
            len,
            coverage,
            plan,
        }
    }
}
