//! The optimizer engine: configuration, registered buffers, state, counters and threads.
//!
//! The host owns parameters and gradients and passes them to every [`Optimizer::step`]; the
//! optimizer owns the state it needs (moments, momentum, AMSGrad maximum, slow weights), sized
//! once at registration. After registration an update on the caller's thread (the default, one
//! thread) allocates nothing; with a private pool, rayon's job queue may allocate now and then.
//!
//! One update (docs/numerics.md, "Pipeline"): validate every input, run the sum-of-squares pass if
//! clipping by norm or checking for non-finite values, build the [`Plan`] of per-step scalars in
//! f64, run one fused pass per buffer, advance counters. Hosts with their own threads split the
//! middle step themselves: [`Optimizer::begin_step`], then [`Step::apply`] on disjoint element
//! ranges from any threads, then [`Optimizer::end_step`].
//!
//! Every entry point that computes runs in flatopt's floating-point mode whatever the host's
//! ([`FpMode`]: set on the caller's thread for the call, on the pool's workers for good).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Once};

use crate::catalog::{check_f64, Domain};
use crate::config::{Base, Config, NonFinitePolicy, ScheduleMode};
use crate::error::Error;
use crate::kernels::{self, AsGrad, Buffers, Grad, GradScale, MixedBuffers, ParamCopy, Plan, Rule};
use crate::scaler::LossScaler;
use crate::schedule::ScheduleState;
use crate::simd::{self, FpMode, Tier};

/// Below this many elements in total an update stays on the caller's thread even with a pool:
/// waking workers costs more than it saves. Measured with `cargo bench --bench threshold` on the
/// 2-vCPU development machines (full pipeline, 1 vs 2 threads, interleaved medians): 2 threads
/// were no faster up to 256K elements (0.94..1.14x the time), break-even at 512K, and 0.65x the
/// time from 1M to 16M elements.
pub const PARALLEL_MIN_ELEMENTS: usize = 1 << 19;
/// Elements per task of the threaded fused pass (a multiple of the sum-of-squares block).
const PARALLEL_GRAIN: usize = 1 << 15;

/// What an update did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    /// The update was applied; `step` is its 1-based number, `synced` whether Lookahead synced.
    Applied {
        /// The update's number, from 1.
        step: u64,
        /// Whether this update ended with a Lookahead sync (parameters set to the slow weights).
        synced: bool,
    },
    /// A gradient held a non-finite value (the first one, by buffer and index) and the policy
    /// is `Skip`: nothing changed except the skipped-updates counter. `buffer` and `index` are
    /// `usize::MAX` when the non-finite sum of squares was supplied by the caller
    /// ([`Optimizer::step_with_sum_squares`]) and this process's gradients are finite.
    Skipped {
        /// The buffer, by registration order.
        buffer: usize,
        /// The element within the buffer.
        index: usize,
        /// The value found there.
        value: f32,
    },
}

/// Bytes of the span within which the state buffers copy their parameter buffer's placement: a
/// 4 KiB page. A load whose address matches an older store's in the low 12 bits waits for it as
/// if they overlapped ("4K aliasing"); with the state placed at the same offset within a page as
/// its parameters, element `i` of every stream shares its low bits only with element `i` of the
/// others, which is never a later load after an earlier store. Otherwise a state stream trailing
/// the parameter stream by a few cache lines stalls every load: measured 15% at 1e8 elements on
/// this CPU. It also makes the state share the parameters' cache-line alignment, so the fused
/// pass's aligned vector loop (see `kernels::fused`) aligns them all.
const STATE_PLACEMENT: usize = 4096;

/// Buffers of at least this many elements (a page of f32) get placed state buffers.
pub const PLACED_MIN_LEN: usize = STATE_PLACEMENT / std::mem::size_of::<f32>();

/// The error for optimizer state that does not fit in memory (`elements` asked for).
fn alloc_error(elements: usize) -> Error {
    Error::invalid(
        "params",
        format!("{elements} elements"),
        "cannot allocate optimizer state",
    )
}

/// `len` copies of `x` in a new `Vec`. Fallible: state too large for memory is an error (naming
/// `elements`, the count the caller asked for), not an abort.
fn filled<T: Clone>(len: usize, x: T, elements: usize) -> Result<Vec<T>, Error> {
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
struct Placed {
    raw: Vec<f32>,
    start: usize,
    len: usize,
}

impl Placed {
    /// `n` copies of `x`, placed like `like` within a page if `n` fills one at least.
    /// Fallible (see [`filled`]).
    fn filled(n: usize, x: f32, like: *const f32) -> Result<Placed, Error> {
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
struct BufState {
    m: Placed,
    v: Placed,
    v_max: Placed,
    slow: Placed,
    /// Block partials of the sum of squares (scratch for the threaded norm pass).
    partials: Vec<f64>,
}

/// Mutable view of the state of one buffer (or of a range of it), for [`Step::apply`].
/// Split it with [`StateMut::split_at`] to hand disjoint ranges to several threads.
pub struct StateMut<'a> {
    m: &'a mut [f32],
    v: &'a mut [f32],
    v_max: &'a mut [f32],
    slow: &'a mut [f32],
    /// The first element of this view in the concatenation of the registered buffers.
    at: usize,
    /// Elements in this view (also when the rule keeps no state).
    len: usize,
    /// The optimizer's record of the elements applied in the begun update.
    coverage: &'a Coverage,
    /// The plan of this buffer's parameter group in the begun update.
    plan: &'a Plan,
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

/// The per-step scalars of one update between [`Optimizer::begin_step`] and
/// [`Optimizer::end_step`]. Plain data: copy it to every thread. With parameter groups, the
/// plan of each group is kept by the optimizer and handed out with the state views
/// ([`Optimizer::states_mut`]): [`Step::apply`] runs each view with its group's plan.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    /// The plan of group 0.
    plan: Plan,
    tier: Tier,
    /// 1-based number of this update.
    number: u64,
    /// The optimizer that began it (its [`Optimizer`] id).
    owner: u64,
}

impl Step {
    /// The fused update of one buffer range: `param` and `grad` must cover the same elements as
    /// `state` (for example `param[a..b]` with the state of that buffer split at `a` and `b`).
    /// Each element must be applied exactly once per update: a range that overlaps one already
    /// applied (or being applied by another thread) in this update is refused with
    /// [`Error::Overlap`] before anything is written. Also refused, writing nothing: lengths
    /// that differ, a step that is not the one begun last on the optimizer of `state`.
    pub fn apply(&self, param: &mut [f32], grad: &[f32], state: StateMut<'_>) -> Result<(), Error> {
        let (at, len, coverage, plan) = (state.at, state.len, state.coverage, state.plan);
        let b = self.buffers(param, grad, state);
        b.check(plan)?;
        if b.param.len() != len {
            return Err(Error::LengthMismatch {
                what: "param (the length of the state view)".to_string(),
                expected: len,
                got: b.param.len(),
            });
        }
        coverage.check_step(self)?;
        coverage.claim(at, at + len)?;
        // The host's thread: flatopt's floating-point mode for the pass (as `kernels::apply`).
        let _mode = FpMode::enter();
        kernels::apply_unchecked_lengths(self.tier, plan, b);
        Ok(())
    }

    fn buffers<'a>(
        &self,
        param: &'a mut [f32],
        grad: &'a [f32],
        state: StateMut<'a>,
    ) -> Buffers<'a> {
        Buffers {
            param,
            grad,
            m: state.m,
            v: state.v,
            v_max: state.v_max,
            slow: state.slow,
        }
    }

    /// The SIMD tier the step runs on.
    pub fn tier(&self) -> Tier {
        self.tier
    }
    /// The 1-based number of this update.
    pub fn number(&self) -> u64 {
        self.number
    }
    /// Whether Lookahead syncs on this update.
    pub fn syncs(&self) -> bool {
        self.plan.sync_alpha.is_some()
    }
    /// The plan (per-step scalars) of this update for parameter group 0 (the optimizer's own
    /// hyperparameters; [`Optimizer::group_plan`] gives every group's).
    pub fn plan(&self) -> &Plan {
        &self.plan
    }
}

/// Which elements of the begun split update have been applied (see
/// [`Optimizer::begin_step`]): one bit per registered element, in the concatenation of the
/// buffers, set by the `Step::apply` (or C `flatopt_optimizer_step_range`) that covers it. Set
/// with atomic read-modify-writes, so that threads applying disjoint ranges at once neither
/// lock nor wait; sized at registration, so tracking allocates nothing per update. Costs one
/// bit of memory per element, and per applied range one atomic operation per 64 elements.
#[derive(Debug, Default)]
pub(crate) struct Coverage {
    bits: Vec<AtomicU64>,
    /// One bit per block of [`COVER_BLOCK`] elements, set by a range that covers the whole
    /// block (instead of the block's 64 words of `bits`: one atomic operation per 4096
    /// elements for long ranges).
    blocks: Vec<AtomicU64>,
    /// Elements applied in the begun update (the claimed ranges are disjoint, so this reaches
    /// the registered total exactly when every element was applied once).
    applied: AtomicUsize,
    /// The number of the begun update, 0 when none is pending.
    pending: u64,
    /// The id of the optimizer this belongs to.
    owner: u64,
}

/// Elements per block of [`Coverage::blocks`] (64 words of element bits).
const COVER_BLOCK: usize = 64 * 64;

/// The bits of `[begin, end)` that fall into word `w` (which the range must touch).
fn word_mask(w: usize, begin: usize, end: usize) -> u64 {
    let base = w * 64;
    let lo = begin.max(base) - base; // < 64
    let hi = end.min(base + 64) - base; // 1..=64
    let below_hi = if hi == 64 { u64::MAX } else { (1u64 << hi) - 1 };
    below_hi & !((1u64 << lo) - 1)
}

impl Coverage {
    fn new(owner: u64, total: usize) -> Result<Coverage, Error> {
        let mut c = Coverage {
            owner,
            ..Coverage::default()
        };
        c.grow(total)?;
        Ok(c)
    }

    /// Room for `total` elements (keeps the bits already there; they are all clear between
    /// updates' bookkeeping, see [`Coverage::begin`]).
    fn grow(&mut self, total: usize) -> Result<(), Error> {
        let grow = |v: &mut Vec<AtomicU64>, words: usize| {
            if words > v.len() {
                let more = words - v.len();
                v.try_reserve(more).map_err(|_| alloc_error(total))?;
                v.extend((0..more).map(|_| AtomicU64::new(0)));
            }
            Ok(())
        };
        grow(&mut self.bits, total.div_ceil(64))?;
        grow(&mut self.blocks, total.div_ceil(COVER_BLOCK).div_ceil(64))
    }

    /// A split update with this number begins: nothing of it is applied yet.
    fn begin(&mut self, number: u64) {
        if *self.applied.get_mut() != 0 {
            self.bits.iter_mut().for_each(|w| *w.get_mut() = 0);
            self.blocks.iter_mut().for_each(|w| *w.get_mut() = 0);
            *self.applied.get_mut() = 0;
        }
        self.pending = number;
    }

    /// Forgets the pending update (it was replaced, or the state was reset or loaded).
    fn abandon(&mut self) {
        self.begin(0);
    }

    /// Whether a begun update has had part of it applied.
    fn partly_applied(&self) -> bool {
        self.pending != 0 && self.applied.load(Ordering::Acquire) != 0
    }

    /// Refuses `step` unless it is the update begun last on this optimizer and still pending.
    pub(crate) fn check_step(&self, step: &Step) -> Result<(), Error> {
        if step.owner != self.owner || self.pending == 0 || step.number != self.pending {
            return Err(Error::InvalidState(
                "applying a step that is not the one begun last on this optimizer (or already \
                 finished)",
            ));
        }
        Ok(())
    }

    /// Marks `[begin, end)` applied, or refuses (marking nothing) if any of its elements
    /// already is, by an earlier call or one running now on another thread. When two calls
    /// on overlapping ranges race, at least one of them is refused.
    ///
    /// The blocks of [`COVER_BLOCK`] elements that the range covers whole are marked in
    /// `blocks`, the rest of the range (a head and a tail) in `bits`. Each call sets its own
    /// marks first and then looks for the other level's marks in the same places (all
    /// operations sequentially consistent): of two overlapping calls, the one whose marks come
    /// later in that order sees the other's, so overlaps are never missed.
    pub(crate) fn claim(&self, begin: usize, end: usize) -> Result<(), Error> {
        if begin >= end {
            return Ok(());
        }
        let (b0, b1) = (begin.div_ceil(COVER_BLOCK), end / COVER_BLOCK);
        let (head, tail) = if b0 < b1 {
            ((begin, b0 * COVER_BLOCK), (b1 * COVER_BLOCK, end))
        } else {
            ((begin, end), (end, end))
        };
        let claimed = self.claim_marks(head, tail, b0, b1);
        if let Err(first) = claimed {
            return Err(Error::Overlap {
                what: format!(
                    "range [{begin}, {end}) of update {} overlaps element {first}, which this \
                     update has already applied (or is applying on another thread): apply \
                     each element exactly once per update",
                    self.pending
                ),
            });
        }
        self.applied.fetch_add(end - begin, Ordering::AcqRel);
        Ok(())
    }

    /// Marks the head and tail in `bits` and blocks `[b0, b1)` in `blocks`, then checks the
    /// other level; on an overlap takes back every mark it set and returns the first element
    /// found marked.
    fn claim_marks(
        &self,
        head: (usize, usize),
        tail: (usize, usize),
        b0: usize,
        b1: usize,
    ) -> Result<(), usize> {
        self.claim_elems(head)?;
        if let Err(x) = self.claim_elems(tail) {
            self.release_elems(head);
            return Err(x);
        }
        let release_parts = || {
            self.release_elems(head);
            self.release_elems(tail);
        };
        if b0 < b1 {
            if let Err(x) = self.claim_blocks(b0, b1) {
                release_parts();
                return Err(x);
            }
            // Element marks of other calls inside the blocks this call marks whole.
            let words = &self.bits[b0 * 64..(b1 * 64).min(self.bits.len())];
            let found = words
                .iter()
                .enumerate()
                .find_map(|(k, w)| first_bit(w.load(Ordering::SeqCst)).map(|b| k * 64 + b));
            if let Some(x) = found {
                self.release_blocks(b0, b1);
                release_parts();
                return Err(b0 * COVER_BLOCK + x);
            }
        }
        // Block marks of other calls over this call's head and tail.
        for (a, b) in [head, tail].into_iter().filter(|(a, b)| a < b) {
            for k in a / COVER_BLOCK..=(b - 1) / COVER_BLOCK {
                if self.blocks[k / 64].load(Ordering::SeqCst) & (1 << (k % 64)) != 0 {
                    if b0 < b1 {
                        self.release_blocks(b0, b1);
                    }
                    release_parts();
                    return Err(a.max(k * COVER_BLOCK));
                }
            }
        }
        Ok(())
    }

    /// Marks `[begin, end)` in `bits`, or marks nothing and returns the first element marked
    /// already.
    fn claim_elems(&self, (begin, end): (usize, usize)) -> Result<(), usize> {
        if begin >= end {
            return Ok(());
        }
        let (w0, w1) = (begin / 64, (end - 1) / 64);
        for w in w0..=w1 {
            let mask = word_mask(w, begin, end);
            let old = self.bits[w].fetch_or(mask, Ordering::SeqCst);
            if old & mask != 0 {
                // Take back what this call set: all of its bits in the words before (none of
                // them was set before), the newly set ones in this word.
                self.bits[w].fetch_and(!(mask & !old), Ordering::SeqCst);
                self.release_elems((begin, (w * 64).max(begin)));
                return Err(w * 64 + (old & mask).trailing_zeros() as usize);
            }
        }
        Ok(())
    }

    /// Clears the marks of `[begin, end)` in `bits` (all set by the caller).
    fn release_elems(&self, (begin, end): (usize, usize)) {
        if begin < end {
            for w in begin / 64..=(end - 1) / 64 {
                self.bits[w].fetch_and(!word_mask(w, begin, end), Ordering::SeqCst);
            }
        }
    }

    /// Marks blocks `[b0, b1)` whole, or marks nothing and returns the first element of the
    /// first block marked already.
    fn claim_blocks(&self, b0: usize, b1: usize) -> Result<(), usize> {
        for w in b0 / 64..=(b1 - 1) / 64 {
            let mask = word_mask(w, b0, b1);
            let old = self.blocks[w].fetch_or(mask, Ordering::SeqCst);
            if old & mask != 0 {
                self.blocks[w].fetch_and(!(mask & !old), Ordering::SeqCst);
                if w * 64 > b0 {
                    self.release_blocks(b0, w * 64);
                }
                return Err((w * 64 + (old & mask).trailing_zeros() as usize) * COVER_BLOCK);
            }
        }
        Ok(())
    }

    /// Clears the marks of blocks `[b0, b1)` (all set by the caller).
    fn release_blocks(&self, b0: usize, b1: usize) {
        for w in b0 / 64..=(b1 - 1) / 64 {
            self.blocks[w].fetch_and(!word_mask(w, b0, b1), Ordering::SeqCst);
        }
    }
}

/// The index of the lowest set bit, if any.
fn first_bit(w: u64) -> Option<usize> {
    (w != 0).then(|| w.trailing_zeros() as usize)
}

/// Source of [`Optimizer`] ids (a [`Step`] names the optimizer that began it).
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Incremented in a forked child (see [`Pool`]).
static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);
static ATFORK: Once = Once::new();

extern "C" fn after_fork_in_child() {
    FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// A private rayon pool. Its worker threads do not exist in a forked child, so a pool made
/// before a fork is abandoned there (leaked, never touched: its locks may be held by threads
/// that are gone) and a new one is made on first use.
struct Pool {
    pool: Option<Arc<rayon::ThreadPool>>,
    threads: usize,
    generation: u64,
}

impl Pool {
    fn new(threads: usize) -> Result<Pool, Error> {
        ATFORK.call_once(|| {
            // Registering a plain function pointer; failure only loses fork detection, which
            // then shows as a hang in a forked child, so report it loudly in debug builds.
            // SAFETY: `pthread_atfork` with a valid `extern "C"` function and null handlers
            // is always sound to call.
            let rc = unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
            debug_assert_eq!(rc, 0, "pthread_atfork failed");
        });
        let mut p = Pool {
            pool: None,
            threads,
            generation: FORK_GENERATION.load(Ordering::Relaxed),
        };
        p.pool = Some(Arc::new(Self::build(threads)?));
        Ok(p)
    }

    fn build(threads: usize) -> Result<rayon::ThreadPool, Error> {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("flatopt-{i}"))
            // The workers run nothing but flatopt's work: in flatopt's mode for good.
            .start_handler(|_| FpMode::set_for_thread())
            .build()
            .map_err(|e| Error::Unsupported(format!("cannot start {threads} threads: {e}")))
    }

    /// The pool, rebuilt if this process is a fork of the one that made it; `None` if threads
    /// cannot be started (the caller then runs on its own thread).
    fn get(&mut self) -> Option<Arc<rayon::ThreadPool>> {
        let generation = FORK_GENERATION.load(Ordering::Relaxed);
        if generation != self.generation {
            std::mem::forget(self.pool.take());
            self.generation = generation;
            self.pool = Self::build(self.threads).ok().map(Arc::new);
        }
        self.pool.clone()
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pool({} threads)", self.threads)
    }
}

/// The most parameter groups one optimizer holds.
pub const MAX_GROUPS: usize = 1 << 16;

/// What a new parameter group sets (see [`Optimizer::add_group`]); `None` inherits the
/// optimizer's value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GroupOptions {
    /// The group's learning rate: under a schedule the group follows
    /// `lr * schedule(t) / base_lr`. `None`: the optimizer's schedule itself.
    pub lr: Option<f64>,
    /// The group's weight decay as the base rule defines it: the rule's own decoupled decay
    /// if it has one (AdamW's and Lion's `weight_decay`), else the coupled `Config::weight_decay`. 0
    /// turns it off for the group. `None`: the optimizer's (or `base`'s).
    pub weight_decay: Option<f64>,
    /// The group's base-rule hyperparameters (betas, eps, momentum, ...): a rule of the same
    /// kind as the optimizer's. `None`: the optimizer's.
    pub base: Option<Base>,
}

/// The live hyperparameters of one parameter group. Group 0 starts as the optimizer's own
/// configuration; every registered buffer belongs to one group.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// Own learning rate, `None` to follow the optimizer's schedule.
    lr: Option<f64>,
    /// Coupled weight decay (`g += wd * p`), 0 for none.
    coupled_weight_decay: f64,
    /// The base rule with the group's hyperparameters.
    base: Base,
}

impl Group {
    /// The group of an optimizer's own configuration (group 0 at creation).
    fn of(cfg: &Config) -> Group {
        Group {
            lr: None,
            coupled_weight_decay: cfg.weight_decay,
            base: cfg.base,
        }
    }

    /// A group from its parts, validated against `cfg` (the optimizer's configuration):
    /// `base` of `cfg`'s kind, every value in its domain.
    pub fn new(
        cfg: &Config,
        lr: Option<f64>,
        coupled_weight_decay: f64,
        base: Base,
    ) -> Result<Group, Error> {
        if base.kind() != cfg.base.kind() {
            return Err(Error::invalid(
                "base",
                base.name(),
                "a parameter group's base rule must be of the optimizer's kind",
            ));
        }
        base.validate()?;
        check_f64("weight_decay", coupled_weight_decay, Domain::NonNeg, true)?;
        let g = Group {
            lr: None,
            coupled_weight_decay,
            base,
        };
        g.with_lr(cfg.lr.base_lr(), lr)
    }

    /// This group with its learning rate set to `lr`, validated against the schedule's base
    /// learning rate `base_lr`. Allocates nothing.
    fn with_lr(mut self, base_lr: f64, lr: Option<f64>) -> Result<Group, Error> {
        if let Some(x) = lr {
            check_f64("lr", x, Domain::NonNeg, true)?;
            if base_lr == 0.0 && x != 0.0 {
                return Err(Error::invalid(
                    "lr",
                    x,
                    "a parameter group's own learning rate needs a base learning rate > 0 \
                     (the group follows lr * schedule(t) / base_lr)",
                ));
            }
        }
        self.lr = lr;
        Ok(self)
    }

    /// This group with its weight decay (as the base rule defines it) set to `wd`, validated.
    fn with_weight_decay(mut self, wd: f64) -> Result<Group, Error> {
        check_f64("weight_decay", wd, Domain::NonNeg, true)?;
        match self.base.with_decoupled_weight_decay(wd) {
            Some(base) => self.base = base,
            None => self.coupled_weight_decay = wd,
        }
        Ok(self)
    }

    /// The group's own learning rate, `None` if it follows the optimizer's schedule.
    pub fn lr(&self) -> Option<f64> {
        self.lr
    }
    /// The group's weight decay as the base rule defines it (see [`GroupOptions`]).
    pub fn weight_decay(&self) -> f64 {
        self.base
            .decoupled_weight_decay()
            .unwrap_or(self.coupled_weight_decay)
    }
    /// The coupled weight decay (`g += wd * p`) of the group (for a rule with its own decay,
    /// the configuration's, which applies besides it).
    pub fn coupled_weight_decay(&self) -> f64 {
        self.coupled_weight_decay
    }
    /// The base rule with the group's hyperparameters.
    pub fn base(&self) -> &Base {
        &self.base
    }

    /// The learning rate of the group when the schedule gives `sched` and its base learning
    /// rate is `base_lr`: the schedule's value itself without an own rate (or with one equal
    /// to `base_lr`), else `lr * (sched / base_lr)`.
    pub fn lr_at(&self, sched: f64, base_lr: f64) -> f64 {
        match self.lr {
            Some(x) if x != base_lr => x * (sched / base_lr),
            _ => sched,
        }
    }
}

/// A plan that no step uses: the filler of the per-group plan storage.
const IDLE_PLAN: Plan = Plan {
    clip_scale: None,
    clip_value: None,
    weight_decay: None,
    rule: Rule::Sgd { lr: 0.0 },
    sync_alpha: None,
};

/// An optimizer over host-owned flat f32 buffers. See the module docs.
#[derive(Debug)]
pub struct Optimizer {
    cfg: Config,
    tier: Tier,
    /// The schedule's base learning rate (see [`Schedule::base_lr`](crate::Schedule::base_lr)).
    base_lr: f64,
    /// Parameter groups; group 0 is the optimizer's own configuration.
    groups: Vec<Group>,
    /// The plan of each group in the begun (or last) update.
    plans: Vec<Plan>,
    /// Where the next update's plans are built (swapped with `plans` once all are valid, so
    /// that a refused update leaves a pending one's plans alone).
    next_plans: Vec<Plan>,
    /// The group of each registered buffer.
    group_of: Vec<usize>,
    lens: Vec<usize>,
    /// Where each buffer starts in the concatenation of the registered buffers.
    starts: Vec<usize>,
    /// Registered elements in all.
    total: usize,
    state: Vec<BufState>,
    /// The elements applied in a begun split update.
    coverage: Coverage,
    /// Whether the state is as registration leaves it (moments zero): true after `register`
    /// and `reset`, false once an update may have changed it or a checkpoint was loaded.
    fresh: bool,
    /// Applied updates.
    step: u64,
    /// Skipped updates (non-finite gradients).
    skipped: u64,
    schedule: ScheduleState,
    pool: Option<Pool>,
    /// The dynamic loss scaler, if set ([`Optimizer::set_loss_scaler`]).
    scaler: Option<LossScaler>,
}

impl Optimizer {
    /// Validates `cfg` and makes an optimizer with no buffers registered yet.
    pub fn new(cfg: Config) -> Result<Optimizer, Error> {
        cfg.validate()?;
        let tier = match cfg.tier {
            Some(t) => t,
            None => simd::default_tier(),
        };
        let pool = if cfg.num_threads > 1 {
            Some(Pool::new(cfg.num_threads)?)
        } else {
            None
        };
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        Ok(Optimizer {
            schedule: ScheduleState::new(&cfg.lr),
            base_lr: cfg.lr.base_lr(),
            groups: vec![Group::of(&cfg)],
            plans: vec![IDLE_PLAN],
            next_plans: vec![IDLE_PLAN],
            group_of: Vec::new(),
            cfg,
            tier,
            lens: Vec::new(),
            starts: Vec::new(),
            total: 0,
            state: Vec::new(),
            coverage: Coverage::new(id, 0)?,
            fresh: true,
            step: 0,
            skipped: 0,
            pool,
            scaler: None,
        })
    }

    /// Registers the parameter buffers (their current values become the slow weights) and
    /// sizes the state. Replaces any earlier registration (and ends a begun split update) and
    /// resets counters and schedule. Time and memory are linear in the number of buffers and
    /// elements: state buffers of at least [`PLACED_MIN_LEN`] elements take up to a page more
    /// for their placement (see `STATE_PLACEMENT`), shorter ones take their length.
    ///
    /// Every buffer goes into parameter group 0 ([`Optimizer::register_in_groups`] places
    /// them in other groups); the groups themselves are kept.
    pub fn register(&mut self, params: &[&[f32]]) -> Result<(), Error> {
        self.register_with(params, |_| 0)
    }

    /// [`Optimizer::register`] with buffer `i` in parameter group `groups[i]` (from
    /// [`Optimizer::add_group`]; 0 is the optimizer's own). `groups` has one entry per buffer.
    pub fn register_in_groups(&mut self, params: &[&[f32]], groups: &[usize]) -> Result<(), Error> {
        if groups.len() != params.len() {
            return Err(Error::LengthMismatch {
                what: "groups (one per buffer)".to_string(),
                expected: params.len(),
                got: groups.len(),
            });
        }
        for &g in groups {
            self.check_group(g)?;
        }
        self.register_with(params, |i| groups[i])
    }

    fn register_with(
        &mut self,
        params: &[&[f32]],
        group: impl Fn(usize) -> usize,
    ) -> Result<(), Error> {
        if params.is_empty() {
            return Err(Error::invalid(
                "params",
                "an empty list",
                "register at least one buffer",
            ));
        }
        let mut state = Vec::with_capacity(params.len());
        for (i, p) in params.iter().enumerate() {
            state.push(self.buf_state(p, group(i))?);
        }
        let total = params.iter().map(|p| p.len()).sum();
        let coverage = Coverage::new(self.coverage.owner, total)?;
        self.group_of = (0..params.len()).map(group).collect();
        self.lens = params.iter().map(|p| p.len()).collect();
        self.starts = self
            .lens
            .iter()
            .scan(0, |at, &n| {
                let start = *at;
                *at += n;
                Some(start)
            })
            .collect();
        self.total = total;
        self.state = state;
        self.coverage = coverage;
        self.fresh = true;
        self.reset_counters();
        Ok(())
    }

    /// Registers one more buffer after those registered so far: the same as [`register`] with
    /// the longer list, in time and memory for the new buffer only (for hosts that register
    /// buffers one by one, such as the C ABI's `flatopt_optimizer_add_param`). Its current
    /// values become its slow weights. Allowed before the first update and after
    /// [`Optimizer::reset`]; resets counters and schedule like `register`.
    ///
    /// [`register`]: Optimizer::register
    pub fn add_buffer(&mut self, param: &[f32]) -> Result<(), Error> {
        self.add_buffer_to_group(param, 0)
    }

    /// [`Optimizer::add_buffer`] into parameter group `group` (from [`Optimizer::add_group`];
    /// 0 is the optimizer's own).
    pub fn add_buffer_to_group(&mut self, param: &[f32], group: usize) -> Result<(), Error> {
        self.check_group(group)?;
        if self.step > 0 || self.coverage.pending != 0 {
            return Err(Error::InvalidState(
                "adding a buffer after the first update (reset first, or register anew)",
            ));
        }
        let total = self
            .total
            .checked_add(param.len())
            .ok_or_else(|| Error::invalid("param", param.len(), "too many elements in all"))?;
        let st = self.buf_state(param, group)?;
        self.coverage.grow(total)?;
        self.group_of
            .try_reserve(1)
            .map_err(|_| alloc_error(total))?;
        self.lens.try_reserve(1).map_err(|_| alloc_error(total))?;
        self.starts.try_reserve(1).map_err(|_| alloc_error(total))?;
        self.state.try_reserve(1).map_err(|_| alloc_error(total))?;
        if !self.fresh {
            // A loaded checkpoint at step 0 may hold moments: registration zeroes them.
            for (st, &g) in self.state.iter_mut().zip(&self.group_of) {
                let [m0, v0, v_max0] = self.groups[g].base.state_init();
                st.m.fill(m0);
                st.v.fill(v0);
                st.v_max.fill(v_max0);
            }
            self.fresh = true;
        }
        self.group_of.push(group);
        self.lens.push(param.len());
        self.starts.push(self.total);
        self.state.push(st);
        self.total = total;
        self.reset_counters();
        Ok(())
    }

    /// The initial state of one buffer registered with the values of `p`: moments at the
    /// rule's initial values (zero but for Adagrad's and RMSprop's initial accumulator).
    fn buf_state(&self, p: &[f32], group: usize) -> Result<BufState, Error> {
        let base = &self.groups[group].base;
        let (m, v, v_max) = base.state_used();
        let [m0, v0, v_max0] = base.state_init();
        let lookahead = self.cfg.lookahead.is_some();
        let sized =
            |used: bool, x: f32| Placed::filled(if used { p.len() } else { 0 }, x, p.as_ptr());
        let mut slow = sized(lookahead, 0.0)?;
        let n = slow.len();
        slow.copy_from_slice(&p[..n]);
        Ok(BufState {
            m: sized(m, m0)?,
            v: sized(v, v0)?,
            v_max: sized(v_max, v_max0)?,
            slow,
            partials: {
                let blocks = kernels::sumsq_block_count(p.len());
                filled(blocks, 0.0f64, blocks)?
            },
        })
    }

    /// Back to the state right after registration: moments at their initial values (zero but
    /// for Adagrad's and RMSprop's initial accumulator), slow weights copied from
    /// `params`, counters and schedule reset, a begun split update ended. No allocation.
    pub fn reset(&mut self, params: &[&[f32]]) -> Result<(), Error> {
        self.check_lengths("param", params.iter().map(|p| p.len()), params.len())?;
        for ((st, p), &g) in self.state.iter_mut().zip(params).zip(&self.group_of) {
            let [m0, v0, v_max0] = self.groups[g].base.state_init();
            st.m.fill(m0);
            st.v.fill(v0);
            st.v_max.fill(v_max0);
            if !st.slow.is_empty() {
                st.slow.copy_from_slice(p);
            }
        }
        self.fresh = true;
        self.reset_counters();
        Ok(())
    }

    /// Sets counters and schedule state (checkpoint loading; validated by the caller).
    pub(crate) fn restore_counters(&mut self, step: u64, skipped: u64, schedule: ScheduleState) {
        self.step = step;
        self.skipped = skipped;
        self.schedule = schedule;
        self.fresh = false;
        self.coverage.abandon();
    }

    fn reset_counters(&mut self) {
        self.coverage.abandon();
        self.step = 0;
        self.skipped = 0;
        self.schedule = ScheduleState::new(&self.cfg.lr);
    }

    /// One full update of every registered buffer, in place. `params[i]` and `grads[i]` must
    /// have the length registered for buffer `i`. On any error nothing has changed (with the
    /// `Error` policy for non-finite gradients, the skipped counter has gone up).
    ///
    /// With a dynamic loss scaler set, the gradients are divided by its scale (see
    /// [`Optimizer::step_mixed`]).
    pub fn step(&mut self, params: &mut [&mut [f32]], grads: &[&[f32]]) -> Result<Outcome, Error> {
        self.step_mixed(params, grads, &mut [], None)
    }

    /// One full update with gradients in any format ([`Grad`]: f32, bf16 or fp16, widened
    /// exactly in the pass), divided by a loss scale before the pipeline, writing a 16-bit copy
    /// of the new parameters in the same pass where `copies[i]` is `Some` (`copies` is empty
    /// for none, else one entry per buffer). The scale is `grad_scale` (finite, > 0) or, with
    /// `None`, the dynamic loss scaler's if one is set ([`Optimizer::set_loss_scaler`]; then
    /// `grad_scale` must be `None`), else 1. Bit for bit the f32 update of the widened,
    /// divided gradients followed by narrowing the parameters (`docs/numerics.md`, "16-bit
    /// floats"). With a scaler, a non-finite gradient skips the update whatever the non-finite
    /// policy (counted as skipped, nothing else changed) and the scaler records the outcome.
    /// On any error nothing has changed.
    pub fn step_mixed<G: AsGrad>(
        &mut self,
        params: &mut [&mut [f32]],
        grads: &[G],
        copies: &mut [Option<ParamCopy<'_>>],
        grad_scale: Option<f32>,
    ) -> Result<Outcome, Error> {
        let _mode = FpMode::enter();
        self.check_lengths("param", params.iter().map(|p| p.len()), params.len())?;
        self.check_copies(copies)?;
        let unscale = match (grad_scale, &self.scaler) {
            (Some(s), Some(_)) => {
                return Err(Error::invalid(
                    "grad_scale",
                    s,
                    "must be none while a dynamic loss scaler is set (it supplies the scale)",
                ))
            }
            (Some(s), None) => kernels::grad_scale(s)?,
            (None, Some(sc)) => kernels::grad_scale(sc.scale())?,
            (None, None) => GradScale::One,
        };
        self.refuse_partly_applied()?;
        // One hand-over to the pool per update (waking workers is the main fixed cost).
        let outcome = match self.active_pool() {
            Some(pool) => pool.install(|| self.step_on(params, grads, copies, unscale, None, true)),
            None => self.step_on(params, grads, copies, unscale, None, false),
        }?;
        if let Some(sc) = &mut self.scaler {
            sc.update(matches!(outcome, Outcome::Skipped { .. }));
        }
        Ok(outcome)
    }

    /// Refuses copies that are neither none nor one per buffer of the registered lengths.
    fn check_copies(&self, copies: &[Option<ParamCopy<'_>>]) -> Result<(), Error> {
        if copies.is_empty() {
            return Ok(());
        }
        if copies.len() != self.lens.len() {
            return Err(Error::LengthMismatch {
                what: "copies (none, or one entry per registered buffer)".to_string(),
                expected: self.lens.len(),
                got: copies.len(),
            });
        }
        for (i, (c, &n)) in copies.iter().zip(&self.lens).enumerate() {
            if let Some(c) = c {
                if c.out.len() != n {
                    return Err(Error::LengthMismatch {
                        what: format!("{} copy of buffer {i}", c.half.name()),
                        expected: n,
                        got: c.out.len(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Sets (or, with `None`, removes) the dynamic loss scaler: each update then divides the
    /// gradients by its scale, skips on a non-finite gradient and lets it grow or back off
    /// (PyTorch `GradScaler`'s rules, [`LossScaler`]).
    pub fn set_loss_scaler(&mut self, scaler: Option<LossScaler>) {
        self.scaler = scaler;
    }

    /// The dynamic loss scaler, if set: its current scale and whether the last update found a
    /// non-finite gradient.
    pub fn loss_scaler(&self) -> Option<&LossScaler> {
        self.scaler.as_ref()
    }

    /// The non-finite policy in force: skip whenever a loss scaler is set.
    fn policy(&self) -> NonFinitePolicy {
        if self.scaler.is_some() {
            NonFinitePolicy::Skip
        } else {
            self.cfg.nonfinite
        }
    }

    /// [`Optimizer::step`] with the global sum of squares of the gradients supplied by the
    /// caller, for sharded training: each process owns a shard of the parameters, computes the
    /// block partials of its gradient shard ([`Optimizer::sum_squares_partials`]), the
    /// processes exchange them, and each adds all partials in global block order. When shards
    /// start on block boundaries that sum is bit-identical to a single process's, and so is the
    /// update. A non-finite `sum_squares` skips (or fails) the update on every shard alike.
    pub fn step_with_sum_squares(
        &mut self,
        params: &mut [&mut [f32]],
        grads: &[&[f32]],
        sum_squares: f64,
    ) -> Result<Outcome, Error> {
        let _mode = FpMode::enter();
        self.check_lengths("param", params.iter().map(|p| p.len()), params.len())?;
        self.check_lengths("grad", grads.iter().map(|g| g.len()), grads.len())?;
        self.refuse_partly_applied()?;
        match self.active_pool() {
            Some(pool) => pool.install(|| {
                self.step_on(
                    params,
                    grads,
                    &mut [],
                    GradScale::One,
                    Some(sum_squares),
                    true,
                )
            }),
            None => self.step_on(
                params,
                grads,
                &mut [],
                GradScale::One,
                Some(sum_squares),
                false,
            ),
        }
    }

    /// Writes the block partial sums of squares of `grads` (buffer by buffer, blocks of
    /// [`kernels::SUMSQ_BLOCK`] elements) into `out`, which must hold
    /// [`Optimizer::sum_squares_block_count`] values. Adding them in order gives exactly the
    /// sum an update computes.
    pub fn sum_squares_partials(&self, grads: &[&[f32]], out: &mut [f64]) -> Result<(), Error> {
        let _mode = FpMode::enter();
        self.check_lengths("grad", grads.iter().map(|g| g.len()), grads.len())?;
        let want = self.sum_squares_block_count();
        if out.len() != want {
            return Err(Error::LengthMismatch {
                what: "partials (one per sum-of-squares block of every buffer)".to_string(),
                expected: want,
                got: out.len(),
            });
        }
        let mut at = 0;
        for g in grads {
            let n = kernels::sumsq_block_count(g.len());
            kernels::sumsq_partials_unchecked(self.tier, g, &mut out[at..at + n]);
            at += n;
        }
        Ok(())
    }

    /// The number of sum-of-squares blocks over all registered buffers.
    pub fn sum_squares_block_count(&self) -> usize {
        self.lens
            .iter()
            .map(|&n| kernels::sumsq_block_count(n))
            .sum()
    }

    /// The pool if this optimizer has one and the registered size makes it pay.
    fn active_pool(&mut self) -> Option<Arc<rayon::ThreadPool>> {
        let total: usize = self.lens.iter().sum();
        self.pool
            .as_mut()
            .filter(|_| total >= PARALLEL_MIN_ELEMENTS)
            .and_then(Pool::get)
    }

    /// [`Optimizer::step`] after the length checks; `parallel`: running inside the pool.
    fn step_on<G: AsGrad>(
        &mut self,
        params: &mut [&mut [f32]],
        grads: &[G],
        copies: &mut [Option<ParamCopy<'_>>],
        unscale: GradScale,
        sum_squares: Option<f64>,
        parallel: bool,
    ) -> Result<Outcome, Error> {
        let begun = match sum_squares {
            None => self.plan_step(grads, unscale, parallel)?,
            Some(s) => self.plan_with_sum_squares(Some(s), |b| {
                kernels::first_non_finite_grad(grads[b].as_grad())
            })?,
        };
        // A begun split update with nothing applied yet is replaced by this one.
        self.coverage.abandon();
        let step = match begun {
            Ok(step) => step,
            Err(skipped) => return Ok(skipped),
        };
        self.fresh = false;
        let plans = Plans {
            plans: &self.plans,
            group_of: &self.group_of,
        };
        let pass = Pass {
            step: &step,
            plans,
            unscale,
        };
        if parallel {
            par_apply(pass, params, grads, copies, &mut self.state);
        } else {
            seq_apply(pass, params, grads, copies, &mut self.state);
        }
        let synced = step.syncs();
        self.count_step(step)?;
        Ok(Outcome::Applied {
            step: self.step,
            synced,
        })
    }

    /// First phase of an update for hosts that split the work themselves: checks the gradient
    /// lengths, runs the norm / non-finite pass, and returns the [`Step`] to apply, or the
    /// [`Outcome::Skipped`] it decided on (already counted). Changes nothing else.
    ///
    /// Then apply the step with [`Step::apply`] to ranges of the buffers (views from
    /// [`Optimizer::states_mut`], split with [`StateMut::split_at`]), from any threads, each
    /// element exactly once, and end it with [`Optimizer::end_step`]. The optimizer keeps
    /// track of the applied elements (without allocating): a range applied twice is refused,
    /// and so is a `end_step` before every element was applied. A begun update of which
    /// nothing is applied yet is replaced by the next `begin_step` or `update`; once part of
    /// it is applied, it must be completed (or the state reset, registered anew or loaded).
    pub fn begin_step(&mut self, grads: &[&[f32]]) -> Result<Result<Step, Outcome>, Error> {
        let _mode = FpMode::enter();
        self.refuse_partly_applied()?;
        // `plan_step` checks the gradient lengths.
        let begun = match self.active_pool() {
            Some(pool) => pool.install(|| self.plan_step(grads, GradScale::One, true))?,
            None => self.plan_step(grads, GradScale::One, false)?,
        };
        Ok(self.pend(begun))
    }

    /// Records a begun split update as pending (or none, for a skipped one).
    fn pend(&mut self, begun: Result<Step, Outcome>) -> Result<Step, Outcome> {
        match &begun {
            Ok(step) => {
                self.coverage.begin(step.number);
                self.fresh = false;
            }
            Err(_) => self.coverage.abandon(),
        }
        begun
    }

    /// Refuses to start another update while one is partly applied.
    fn refuse_partly_applied(&self) -> Result<(), Error> {
        if self.coverage.partly_applied() {
            return Err(Error::InvalidState(
                "a split update is partly applied: apply the rest of it (each element exactly \
                 once) and end_step first",
            ));
        }
        Ok(())
    }

    /// The norm / non-finite pass and the plan of the next update (no split bookkeeping).
    fn plan_step<G: AsGrad>(
        &mut self,
        grads: &[G],
        unscale: GradScale,
        parallel: bool,
    ) -> Result<Result<Step, Outcome>, Error> {
        self.check_lengths("grad", grads.iter().map(|g| g.as_grad().len()), grads.len())?;
        let sumsq =
            if self.cfg.grad_clip_norm.is_some() || self.policy() != NonFinitePolicy::Propagate {
                Some(self.sum_squares(grads, unscale, parallel))
            } else {
                None
            };
        self.plan_with_sum_squares(sumsq, |b| {
            kernels::first_non_finite_grad(grads[b].as_grad())
        })
    }

    /// Like [`Optimizer::begin_step`] with the global sum of squares computed by the host
    /// (for example across shards). `sumsq` must be `Some` if clipping by norm or checking for
    /// non-finite values; `find` locates the first non-finite value of buffer `b` for the report.
    pub fn begin_step_with_sum_squares(
        &mut self,
        sumsq: Option<f64>,
        find: impl Fn(usize) -> Option<(usize, f32)>,
    ) -> Result<Result<Step, Outcome>, Error> {
        let _mode = FpMode::enter();
        self.refuse_partly_applied()?;
        let begun = self.plan_with_sum_squares(sumsq, find)?;
        Ok(self.pend(begun))
    }

    /// The plan of the next update from the sum of squares (no split bookkeeping).
    fn plan_with_sum_squares(
        &mut self,
        sumsq: Option<f64>,
        find: impl Fn(usize) -> Option<(usize, f32)>,
    ) -> Result<Result<Step, Outcome>, Error> {
        if self.lens.is_empty() {
            return Err(Error::InvalidState(
                "update before any buffer was registered",
            ));
        }
        let checked =
            self.cfg.grad_clip_norm.is_some() || self.policy() != NonFinitePolicy::Propagate;
        let mut clip_scale = None;
        match sumsq {
            None if checked => {
                return Err(Error::invalid(
                    "sum_squares",
                    "none",
                    "required with grad_clip_norm or a non-finite policy other than propagate",
                ));
            }
            None => {}
            Some(s) if s < 0.0 => {
                return Err(Error::invalid(
                    "sum_squares",
                    s,
                    "must be >= 0 (a sum of squares), or NaN/Inf for a non-finite gradient",
                ));
            }
            Some(s) => {
                if !s.is_finite() && self.policy() != NonFinitePolicy::Propagate {
                    // Not found here: the caller's sum came from other shards' gradients.
                    let (buffer, index, value) = (0..self.lens.len())
                        .find_map(|b| find(b).map(|(i, v)| (b, i, v)))
                        .unwrap_or((usize::MAX, usize::MAX, f32::NAN));
                    self.skipped = self.skipped.saturating_add(1);
                    return match self.policy() {
                        NonFinitePolicy::Error => Err(Error::NonFinite {
                            buffer,
                            index,
                            value,
                        }),
                        _ => Ok(Err(Outcome::Skipped {
                            buffer,
                            index,
                            value,
                        })),
                    };
                }
                if let Some(c) = self.cfg.grad_clip_norm {
                    let norm = s.sqrt();
                    if norm > c {
                        clip_scale = Some((c / norm) as f32);
                    }
                }
            }
        }
        let number = self.step.checked_add(1).ok_or(Error::InvalidState(
            "the step counter is exhausted (2^64 - 1 updates)",
        ))?;
        let lr = self.schedule.lr(&self.cfg.lr);
        let sync_alpha = self
            .cfg
            .lookahead
            .filter(|la| number.is_multiple_of(la.sync_period))
            .map(|la| la.alpha as f32);
        // One plan per group: the global parts (clipping, sync) shared, the rule and the weight
        // decay the group's. Built aside and swapped in once every group's is valid, so that a
        // refused update leaves the plans of a pending one alone.
        for (g, group) in self.groups.iter().enumerate() {
            let group_lr = group.lr_at(lr, self.base_lr);
            let wd = group.coupled_weight_decay;
            let plan = Plan {
                clip_scale,
                clip_value: self.cfg.grad_clip_value.map(|c| c as f32),
                weight_decay: (wd != 0.0).then_some(wd as f32),
                rule: Rule::for_step(&group.base, number, group_lr),
                sync_alpha,
            };
            crate::config::check_step(group_lr, &plan.rule).map_err(|e| in_group(g, e))?;
            self.next_plans[g] = plan;
        }
        std::mem::swap(&mut self.plans, &mut self.next_plans);
        Ok(Ok(Step {
            plan: self.plans[0],
            tier: self.tier,
            number,
            owner: self.coverage.owner,
        }))
    }

    /// The state of each registered buffer, in registration order, for [`Step::apply`] (each
    /// view carries the plan of its buffer's parameter group in the begun update).
    pub fn states_mut(&mut self) -> impl Iterator<Item = StateMut<'_>> {
        let coverage = &self.coverage;
        let plans = &self.plans;
        self.state
            .iter_mut()
            .zip(self.starts.iter().zip(&self.lens))
            .zip(&self.group_of)
            .map(move |((st, (&at, &len)), &g)| st.view(at, len, coverage, &plans[g]))
    }

    /// The plan (per-step scalars) of parameter group `group` in the begun split update (or
    /// the last update), `None` if there is no such group.
    pub fn group_plan(&self, group: usize) -> Option<&Plan> {
        self.plans.get(group)
    }

    /// The plan of buffer `buffer`'s parameter group in the begun (or last) update.
    pub(crate) fn buffer_plan(&self, buffer: usize) -> &Plan {
        &self.plans[self.group_of[buffer]]
    }

    /// Marks elements `[begin, end)` of the concatenated buffers applied by `step` (the C ABI's
    /// range entry point, which writes through raw pointers): refused, marking nothing, unless
    /// `step` is the pending update and no element of the range was applied in it yet.
    pub(crate) fn claim_range(&self, step: &Step, begin: usize, end: usize) -> Result<(), Error> {
        self.coverage.check_step(step)?;
        if begin > end || end > self.total {
            return Err(Error::invalid(
                "range",
                format!("[{begin}, {end})"),
                "must satisfy begin <= end <= total registered length",
            ));
        }
        self.coverage.claim(begin, end)
    }

    /// Last phase of an update: counts it and advances the schedule (per-update mode).
    /// `step` must come from this optimizer's latest `begin_step`, and every registered
    /// element must have been applied exactly once; otherwise nothing changes (the update
    /// stays pending: apply what is missing and finish it again).
    pub fn end_step(&mut self, step: Step) -> Result<(), Error> {
        let _mode = FpMode::enter();
        if self.coverage.check_step(&step).is_err() {
            return Err(Error::InvalidState(
                "end_step with a step that is not the one begun last",
            ));
        }
        let applied = self.coverage.applied.load(Ordering::Acquire);
        if applied != self.total {
            return Err(Error::LengthMismatch {
                what: format!(
                    "elements applied in update {} before end_step (every registered \
                     element exactly once)",
                    step.number
                ),
                expected: self.total,
                got: applied,
            });
        }
        self.count_step(step)?;
        self.coverage.pending = 0;
        Ok(())
    }

    /// Counts an applied update and advances the schedule (per-update mode).
    fn count_step(&mut self, step: Step) -> Result<(), Error> {
        if self.step.checked_add(1) != Some(step.number) {
            return Err(Error::InvalidState(
                "end_step with a step that is not the one begun last",
            ));
        }
        self.step = step.number;
        if self.cfg.schedule_mode == ScheduleMode::PerUpdate {
            self.schedule.advance(&self.cfg.lr);
        }
        Ok(())
    }

    /// Sum of squares of all gradients in the fixed order of the determinism contract.
    fn sum_squares<G: AsGrad>(&mut self, grads: &[G], unscale: GradScale, parallel: bool) -> f64 {
        if parallel {
            par_partials(self.tier, unscale, grads, &mut self.state);
        } else {
            seq_partials(self.tier, unscale, grads, &mut self.state);
        }
        let mut sum = 0.0;
        for st in &self.state {
            for p in &st.partials {
                sum += p;
            }
        }
        sum
    }

    /// Refuses a group index that is not one of this optimizer's groups.
    fn check_group(&self, group: usize) -> Result<(), Error> {
        if group >= self.groups.len() {
            return Err(Error::invalid(
                "group",
                format!("{group} (this optimizer has {} groups)", self.groups.len()),
                "must be a parameter group of this optimizer (0 or an index from add_group)",
            ));
        }
        Ok(())
    }

    /// Adds a parameter group and returns its index (1, 2, ...; group 0 is the optimizer's own
    /// configuration). What `opts` leaves `None` is the optimizer's. Validated (the base rule
    /// of the optimizer's kind, every value in its domain as for the configuration; an own
    /// learning rate needs a base learning rate > 0, since the group follows
    /// `lr * schedule(t) / base_lr`). Buffers join it with [`Optimizer::add_buffer_to_group`]
    /// or [`Optimizer::register_in_groups`]. Allowed at any time but while a split update is
    /// partly applied; allocates (the group's plan storage), so that updates do not.
    pub fn add_group(&mut self, opts: GroupOptions) -> Result<usize, Error> {
        self.refuse_partly_applied()?;
        if self.groups.len() >= MAX_GROUPS {
            return Err(Error::invalid(
                "group",
                format!("{} groups", self.groups.len()),
                "an optimizer holds at most 65536 parameter groups",
            ));
        }
        let mut group = Group::new(
            &self.cfg,
            opts.lr,
            self.cfg.weight_decay,
            opts.base.unwrap_or(self.cfg.base),
        )?;
        if let Some(wd) = opts.weight_decay {
            group = group.with_weight_decay(wd)?;
        }
        let n = self.groups.len() + 1;
        let more = |_| alloc_error(n);
        self.groups.try_reserve(1).map_err(more)?;
        self.plans.try_reserve(1).map_err(more)?;
        self.next_plans.try_reserve(1).map_err(more)?;
        self.groups.push(group);
        self.plans.push(IDLE_PLAN);
        self.next_plans.push(IDLE_PLAN);
        Ok(self.groups.len() - 1)
    }

    /// The parameter groups (group 0 first).
    pub fn groups(&self) -> &[Group] {
        &self.groups
    }
    /// The number of parameter groups (at least 1).
    pub fn num_groups(&self) -> usize {
        self.groups.len()
    }
    /// The parameter group of each registered buffer, in registration order.
    pub fn buffer_groups(&self) -> &[usize] {
        &self.group_of
    }

    /// Changes group `group`'s learning rate (`None`: follow the optimizer's schedule); the
    /// next update uses it. Validated like [`Optimizer::add_group`]; no allocation. Refused
    /// while a split update is partly applied; a begun one with nothing applied is dropped
    /// (begin it again).
    pub fn set_group_lr(&mut self, group: usize, lr: Option<f64>) -> Result<(), Error> {
        self.check_group(group)?;
        self.refuse_partly_applied()?;
        let g = self.groups[group].clone().with_lr(self.base_lr, lr)?;
        self.coverage.abandon();
        self.groups[group] = g;
        Ok(())
    }

    /// Changes group `group`'s weight decay as the base rule defines it (see
    /// [`GroupOptions::weight_decay`]); like [`Optimizer::set_group_lr`] otherwise.
    pub fn set_group_weight_decay(&mut self, group: usize, wd: f64) -> Result<(), Error> {
        self.check_group(group)?;
        self.refuse_partly_applied()?;
        let g = self.groups[group].clone().with_weight_decay(wd)?;
        self.coverage.abandon();
        self.groups[group] = g;
        Ok(())
    }

    /// The learning rate group `group` will use in the next update (rounded to f32, as the
    /// kernels use it), `None` if there is no such group.
    pub fn group_current_lr(&self, group: usize) -> Option<f32> {
        self.group_current_lr_exact(group).map(|lr| lr as f32)
    }

    /// [`Optimizer::group_current_lr`] before its rounding to f32: the rate as the schedule
    /// and the group's ratio compute it in f64 (what braintools and PyTorch report).
    pub fn group_current_lr_exact(&self, group: usize) -> Option<f64> {
        let sched = self.schedule.lr(&self.cfg.lr);
        self.groups.get(group).map(|g| g.lr_at(sched, self.base_lr))
    }

    /// Replaces every group's hyperparameters (checkpoint loading; validated by the caller:
    /// as many groups as this optimizer's, each of its kind).
    pub(crate) fn restore_groups(&mut self, groups: Vec<Group>) {
        debug_assert_eq!(groups.len(), self.groups.len());
        self.groups = groups;
    }

    /// Whether the only group is the configuration unchanged (checkpoints of such an
    /// optimizer are of format version 1).
    pub(crate) fn groups_are_config(&self) -> bool {
        self.groups.len() == 1 && self.groups[0] == Group::of(&self.cfg)
    }

    /// The groups of a version-1 checkpoint: the configuration's one.
    pub(crate) fn config_group(&self) -> Vec<Group> {
        vec![Group::of(&self.cfg)]
    }

    /// The schedule's base learning rate (see [`Group::lr_at`]).
    pub fn base_lr(&self) -> f64 {
        self.base_lr
    }

    fn check_lengths(
        &self,
        what: &str,
        lens: impl Iterator<Item = usize>,
        count: usize,
    ) -> Result<(), Error> {
        if self.lens.is_empty() {
            return Err(Error::InvalidState(
                "update before any buffer was registered",
            ));
        }
        if count != self.lens.len() {
            return Err(Error::LengthMismatch {
                what: format!("number of {what} buffers"),
                expected: self.lens.len(),
                got: count,
            });
        }
        for (i, (got, &want)) in lens.zip(&self.lens).enumerate() {
            if got != want {
                return Err(Error::LengthMismatch {
                    what: format!("{what} buffer {i}"),
                    expected: want,
                    got,
                });
            }
        }
        Ok(())
    }

    /// Advances a manual (epoch-style) schedule by one.
    pub fn step_schedule(&mut self) {
        let _mode = FpMode::enter();
        self.schedule.advance(&self.cfg.lr);
    }

    /// Sets the schedule counter to `epoch`: the schedule is then exactly as after `epoch`
    /// [`step_schedule`](Self::step_schedule) calls from its start (registration or reset),
    /// in time independent of `epoch`. Per-update schedules too (their counter is the one
    /// updates advance). Errors, nothing changed: [`Error::InvalidState`] for ReduceOnPlateau
    /// (it moves by metrics).
    pub fn set_schedule_epoch(&mut self, epoch: u64) -> Result<(), Error> {
        let _mode = FpMode::enter();
        self.schedule = ScheduleState::at(&self.cfg.lr, epoch)?;
        Ok(())
    }

    /// Feeds a metric to a ReduceOnPlateau schedule.
    pub fn step_schedule_metric(&mut self, metric: f64) -> Result<(), Error> {
        let _mode = FpMode::enter();
        self.schedule.step_metric(&self.cfg.lr, metric)
    }

    /// Applied updates so far.
    pub fn step_count(&self) -> u64 {
        self.step
    }
    /// Updates skipped because of non-finite gradients.
    pub fn skipped_count(&self) -> u64 {
        self.skipped
    }
    /// The learning rate the next update will use (f64 schedule value rounded to f32).
    pub fn current_lr(&self) -> f32 {
        self.schedule.lr(&self.cfg.lr) as f32
    }
    /// The schedule counter and state.
    pub fn schedule_state(&self) -> &ScheduleState {
        &self.schedule
    }
    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }
    /// Registered buffer lengths, in registration order.
    pub fn buffer_lens(&self) -> &[usize] {
        &self.lens
    }
    /// The SIMD tier this optimizer runs on.
    pub fn tier(&self) -> Tier {
        self.tier
    }
    /// Switches the SIMD tier (results do not change: all tiers are bit-identical).
    pub fn set_tier(&mut self, tier: Tier) -> Result<(), Error> {
        self.tier = tier.check()?;
        Ok(())
    }
    /// Threads used by `update` (1: the caller's thread).
    pub fn num_threads(&self) -> usize {
        self.cfg.num_threads
    }
    /// Changes the thread count (results do not change: the update is thread-count invariant).
    pub fn set_num_threads(&mut self, n: usize) -> Result<(), Error> {
        let mut cfg = self.cfg.clone();
        cfg.num_threads = n;
        cfg.validate()?;
        self.pool = if n > 1 { Some(Pool::new(n)?) } else { None };
        self.cfg.num_threads = n;
        Ok(())
    }
    /// The Lookahead slow weights of buffer `i` (`None` without Lookahead or out of range).
    pub fn slow_weights(&self, i: usize) -> Option<&[f32]> {
        self.state
            .get(i)
            .filter(|_| self.cfg.lookahead.is_some())
            .map(|s| &*s.slow)
    }
    /// The state buffers of buffer `i`: (m, v, v_max), each empty if the rule does not use it.
    pub fn moments(&self, i: usize) -> Option<(&[f32], &[f32], &[f32])> {
        self.state.get(i).map(|s| (&*s.m, &*s.v, &*s.v_max))
    }
}

/// The names of 0.2 and earlier. The C names are the project's vocabulary (one step of the
/// optimizer is a *step*: `flatopt_optimizer_step`, `_begin_step`, `_end_step`), and the Rust
/// API follows them from 0.2 on; these aliases keep older Rust callers compiling.
impl Optimizer {
    /// Renamed [`Optimizer::step`].
    #[deprecated(since = "0.2.0", note = "renamed to `step`, as in the C API")]
    pub fn update(
        &mut self,
        params: &mut [&mut [f32]],
        grads: &[&[f32]],
    ) -> Result<Outcome, Error> {
        self.step(params, grads)
    }
    /// Renamed [`Optimizer::step_with_sum_squares`].
    #[deprecated(
        since = "0.2.0",
        note = "renamed to `step_with_sum_squares`, as in the C API"
    )]
    pub fn update_with_sum_squares(
        &mut self,
        params: &mut [&mut [f32]],
        grads: &[&[f32]],
        sum_squares: f64,
    ) -> Result<Outcome, Error> {
        self.step_with_sum_squares(params, grads, sum_squares)
    }
    /// Renamed [`Optimizer::begin_step`].
    #[deprecated(since = "0.2.0", note = "renamed to `begin_step`, as in the C API")]
    pub fn begin_update(&mut self, grads: &[&[f32]]) -> Result<Result<Step, Outcome>, Error> {
        self.begin_step(grads)
    }
    /// Renamed [`Optimizer::begin_step_with_sum_squares`].
    #[deprecated(
        since = "0.2.0",
        note = "renamed to `begin_step_with_sum_squares`, as in the C API"
    )]
    pub fn begin_update_with_sum_squares(
        &mut self,
        sumsq: Option<f64>,
        find: impl Fn(usize) -> Option<(usize, f32)>,
    ) -> Result<Result<Step, Outcome>, Error> {
        self.begin_step_with_sum_squares(sumsq, find)
    }
    /// Renamed [`Optimizer::end_step`].
    #[deprecated(since = "0.2.0", note = "renamed to `end_step`, as in the C API")]
    pub fn finish_update(&mut self, step: Step) -> Result<(), Error> {
        self.end_step(step)
    }
}

/// The coverage of views that `update` itself applies, in one call (never claimed).
static UNTRACKED: Coverage = Coverage {
    bits: Vec::new(),
    blocks: Vec::new(),
    applied: AtomicUsize::new(0),
    pending: 0,
    owner: 0,
};

impl BufState {
    /// A view of all of this buffer's state for the update's own loops (not split-tracked).
    fn whole(&mut self, len: usize) -> StateMut<'_> {
        self.view(0, len, &UNTRACKED, &IDLE_PLAN)
    }

    /// A view of this buffer's state, elements `[at, at + len)` of the concatenation, applied
    /// with `plan`.
    fn view<'a>(
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

/// The plans of one update: of each group, and the group of each buffer.
#[derive(Clone, Copy)]
struct Plans<'a> {
    plans: &'a [Plan],
    group_of: &'a [usize],
}

/// What every buffer's pass of one update shares.
#[derive(Clone, Copy)]
struct Pass<'a> {
    step: &'a Step,
    plans: Plans<'a>,
    unscale: GradScale,
}

/// Copy `i` of `copies` (none where `copies` is empty), reborrowed.
fn copy_at<'c>(copies: &'c mut [Option<ParamCopy<'_>>], i: usize) -> Option<ParamCopy<'c>> {
    copies.get_mut(i).and_then(|c| {
        c.as_mut().map(|c| ParamCopy {
            half: c.half,
            out: &mut *c.out,
        })
    })
}

/// `copies` split at `mid` (two empty lists where it is empty).
#[allow(clippy::type_complexity)]
fn split_copies<'c, 'a>(
    copies: &'c mut [Option<ParamCopy<'a>>],
    mid: usize,
) -> (
    &'c mut [Option<ParamCopy<'a>>],
    &'c mut [Option<ParamCopy<'a>>],
) {
    if copies.is_empty() {
        (&mut [], &mut [])
    } else {
        copies.split_at_mut(mid)
    }
}

/// One buffer's fused pass: the f32 pass itself when there is nothing to convert.
fn apply_one(
    pass: Pass<'_>,
    plan: &Plan,
    p: &mut [f32],
    g: Grad<'_>,
    st: StateMut<'_>,
    copy: Option<ParamCopy<'_>>,
) {
    match (g, copy) {
        (Grad::F32(g), None) if pass.unscale == GradScale::One => {
            kernels::apply_unchecked_lengths(pass.step.tier, plan, pass.step.buffers(p, g, st));
        }
        (grad, copy) => kernels::apply_mixed_unchecked_lengths(
            pass.step.tier,
            plan,
            pass.unscale,
            MixedBuffers {
                param: p,
                grad,
                m: st.m,
                v: st.v,
                v_max: st.v_max,
                slow: st.slow,
                copy,
            },
        ),
    }
}

fn seq_apply<G: AsGrad>(
    pass: Pass<'_>,
    params: &mut [&mut [f32]],
    grads: &[G],
    copies: &mut [Option<ParamCopy<'_>>],
    states: &mut [BufState],
) {
    for (i, (((p, g), st), &group)) in params
        .iter_mut()
        .zip(grads)
        .zip(states.iter_mut())
        .zip(pass.plans.group_of)
        .enumerate()
    {
        let plan = &pass.plans.plans[group];
        let n = p.len();
        apply_one(pass, plan, p, g.as_grad(), st.whole(n), copy_at(copies, i));
    }
}

/// Splits the buffer list, then each buffer, in halves until tasks are at most
/// [`PARALLEL_GRAIN`] elements, with `rayon::join` (no allocation per task). The update is
/// elementwise, so any split gives the same bits.
fn par_apply<G: AsGrad>(
    pass: Pass<'_>,
    params: &mut [&mut [f32]],
    grads: &[G],
    copies: &mut [Option<ParamCopy<'_>>],
    states: &mut [BufState],
) {
    if params.len() > 1 {
        let mid = params.len() / 2;
        let (p0, p1) = params.split_at_mut(mid);
        let (g0, g1) = grads.split_at(mid);
        let (c0, c1) = split_copies(copies, mid);
        let (s0, s1) = states.split_at_mut(mid);
        let (q0, q1) = pass.plans.group_of.split_at(mid);
        let half = |group_of| Pass {
            plans: Plans {
                group_of,
                ..pass.plans
            },
            ..pass
        };
        let (pass0, pass1) = (half(q0), half(q1));
        rayon::join(
            || par_apply(pass0, p0, g0, c0, s0),
            || par_apply(pass1, p1, g1, c1, s1),
        );
    } else if let (Some(p), Some(g), Some(st), Some(&group)) = (
        params.first_mut(),
        grads.first(),
        states.first_mut(),
        pass.plans.group_of.first(),
    ) {
        let n = p.len();
        let copy = copy_at(copies, 0);
        par_apply_one(
            pass,
            &pass.plans.plans[group],
            p,
            g.as_grad(),
            st.whole(n),
            copy,
        );
    }
}

fn par_apply_one(
    pass: Pass<'_>,
    plan: &Plan,
    p: &mut [f32],
    g: Grad<'_>,
    st: StateMut<'_>,
    copy: Option<ParamCopy<'_>>,
) {
    if p.len() <= PARALLEL_GRAIN {
        apply_one(pass, plan, p, g, st, copy);
        return;
    }
    let mid = (p.len() / 2).next_multiple_of(64);
    let (p0, p1) = p.split_at_mut(mid);
    let (g0, g1) = g.split_at(mid);
    let (s0, s1) = st.split_at(mid);
    let (c0, c1) = match copy {
        Some(c) => {
            let (a, b) = c.out.split_at_mut(mid);
            (
                Some(ParamCopy {
                    half: c.half,
                    out: a,
                }),
                Some(ParamCopy {
                    half: c.half,
                    out: b,
                }),
            )
        }
        None => (None, None),
    };
    rayon::join(
        || par_apply_one(pass, plan, p0, g0, s0, c0),
        || par_apply_one(pass, plan, p1, g1, s1, c1),
    );
}

/// `e` (from group `group`'s per-step check) naming the group, unless it is group 0 (the
/// optimizer's own configuration, whose messages stay as they were before groups).
fn in_group(group: usize, e: Error) -> Error {
    match e {
        Error::InvalidArgument {
            name,
            value,
            expected,
        } if group != 0 => Error::InvalidArgument {
            name,
            value: format!("{value} (in parameter group {group})"),
            expected,
        },
        e => e,
    }
}

fn seq_partials<G: AsGrad>(tier: Tier, unscale: GradScale, grads: &[G], states: &mut [BufState]) {
    for (g, st) in grads.iter().zip(states.iter_mut()) {
        partials_of(tier, unscale, g.as_grad(), &mut st.partials);
    }
}

/// Block partials of one buffer: the f32 kernel itself when there is nothing to convert.
fn partials_of(tier: Tier, unscale: GradScale, g: Grad<'_>, partials: &mut [f64]) {
    match g {
        Grad::F32(g) if unscale == GradScale::One => {
            kernels::sumsq_partials_unchecked(tier, g, partials)
        }
        g => kernels::sumsq_partials_mixed_unchecked(tier, g, unscale, partials),
    }
}

/// Block partials on the pool. Splits fall on block boundaries, so every partial is the same
/// as on one thread; they are added up in block order afterwards.
fn par_partials<G: AsGrad>(tier: Tier, unscale: GradScale, grads: &[G], states: &mut [BufState]) {
    if grads.len() > 1 {
        let mid = grads.len() / 2;
        let (g0, g1) = grads.split_at(mid);
        let (s0, s1) = states.split_at_mut(mid);
        rayon::join(
            || par_partials(tier, unscale, g0, s0),
            || par_partials(tier, unscale, g1, s1),
        );
    } else if let (Some(g), Some(st)) = (grads.first(), states.first_mut()) {
        par_partials_one(tier, unscale, g.as_grad(), &mut st.partials);
    }
}

fn par_partials_one(tier: Tier, unscale: GradScale, g: Grad<'_>, partials: &mut [f64]) {
    if partials.len() <= 2 * (PARALLEL_GRAIN / kernels::SUMSQ_BLOCK) {
        partials_of(tier, unscale, g, partials);
        return;
    }
    let mid_blocks = partials.len() / 2;
    let (g0, g1) = g.split_at(mid_blocks * kernels::SUMSQ_BLOCK);
    let (q0, q1) = partials.split_at_mut(mid_blocks);
    rayon::join(
        || par_partials_one(tier, unscale, g0, q0),
        || par_partials_one(tier, unscale, g1, q1),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Claims against a model of the applied elements, over ranges that cover blocks whole,
    /// partly and not at all, from one thread: refused exactly on an overlap (naming the first
    /// element it names is one of the overlap), marking nothing then.
    #[test]
    fn claims_match_a_model() {
        let total = 3 * COVER_BLOCK + 100;
        let mut c = Coverage::new(1, total).unwrap();
        let mut rng = 0x2545_F491_4F6C_DD1Du64;
        let mut next = |n: usize| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % n as u64) as usize
        };
        for step in 1..200u64 {
            c.begin(step);
            let mut model = vec![false; total];
            for _ in 0..12 {
                let a = next(total + 1);
                let len = match next(3) {
                    0 => next(70),
                    1 => next(COVER_BLOCK + 200),
                    _ => next(3 * COVER_BLOCK),
                };
                let b = (a + len).min(total);
                let overlap = model[a..b].iter().position(|&x| x);
                match (c.claim(a, b), overlap) {
                    (Ok(()), None) => model[a..b].iter_mut().for_each(|x| *x = true),
                    (Err(Error::Overlap { what }), Some(_)) => {
                        let first: usize = what
                            .split("overlaps element ")
                            .nth(1)
                            .and_then(|t| t.split(',').next())
                            .and_then(|t| t.parse().ok())
                            .unwrap();
                        assert!(model[first] && (a..b).contains(&first), "{what}");
                    }
                    (r, o) => panic!("[{a}, {b}): {r:?}, model overlap {o:?}"),
                }
                let n = model.iter().filter(|&&x| x).count();
                assert_eq!(c.applied.load(Ordering::Acquire), n);
            }
            // What is marked is exactly the model: claiming each unmarked element succeeds,
            // each marked one fails.
            for (i, &m) in model.iter().enumerate().step_by(97) {
                assert_eq!(c.claim(i, i + 1).is_err(), m, "element {i}");
            }
        }
    }

    /// Two threads claim overlapping ranges (one covering blocks whole, one a part of them)
    /// at once, many times: never both succeed.
    #[test]
    fn racing_overlapping_claims_never_both_succeed() {
        let total = 4 * COVER_BLOCK;
        let mut c = Coverage::new(1, total).unwrap();
        let ranges = [
            ((0, total), (COVER_BLOCK + 5, COVER_BLOCK + 6)),
            (
                (10, 3 * COVER_BLOCK + 1),
                (2 * COVER_BLOCK, 4 * COVER_BLOCK),
            ),
            ((COVER_BLOCK, 2 * COVER_BLOCK), (0, COVER_BLOCK + 1)),
        ];
        for round in 0..300u64 {
            c.begin(round + 1);
            let (r1, r2) = ranges[round as usize % ranges.len()];
            let c = &c;
            let (a, b) = std::thread::scope(|s| {
                let t = s.spawn(move || c.claim(r1.0, r1.1).is_ok());
                let b = c.claim(r2.0, r2.1).is_ok();
                (t.join().unwrap(), b)
            });
            assert!(!(a && b), "round {round}: both {r1:?} and {r2:?} claimed");
        }
    }

    /// The bookkeeping a split update adds per step (clearing the bits of the previous cover,
    /// claiming the elements, the finish check), at 1e3 and 1e6 elements: applied in one range
    /// and in 64-element ranges. A measurement, not a check: `cargo test --release --lib
    /// coverage_cost -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement: run by hand"]
    fn coverage_cost() {
        for total in [1_000usize, 1_000_000] {
            for range in [total, 64] {
                let mut c = Coverage::new(1, total).unwrap();
                let reps = (20_000_000 / total).max(20);
                let start = std::time::Instant::now();
                for step in 1..=reps as u64 {
                    c.begin(step);
                    let mut at = 0;
                    while at < total {
                        let end = (at + range).min(total);
                        c.claim(at, end).unwrap();
                        at = end;
                    }
                    assert_eq!(c.applied.load(Ordering::Acquire), total);
                    c.pending = 0;
                }
                let per = start.elapsed().as_secs_f64() / reps as f64;
                println!(
                    "coverage: {total} elements in ranges of {range}: {:.2} us per step \
                     ({:.3} ns per element)",
                    per * 1e6,
                    per * 1e9 / total as f64
                );
            }
            // For scale: one Adam update of as many elements on this thread.
            let mut opt = Optimizer::new(Config::new(crate::Base::adam(), 1e-3)).unwrap();
            let mut p = vec![0.5f32; total];
            let g = vec![0.25f32; total];
            opt.register(&[&p]).unwrap();
            let reps = (20_000_000 / total).max(20);
            let start = std::time::Instant::now();
            for _ in 0..reps {
                opt.step(&mut [&mut p], &[&g]).unwrap();
            }
            let per = start.elapsed().as_secs_f64() / reps as f64;
            println!("adam update: {total} elements: {:.2} us", per * 1e6);
        }
    }
}
