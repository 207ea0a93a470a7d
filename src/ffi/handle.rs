//! The optimizer handle: its contents, the per-handle lock that turns concurrent misuse into
//! `FLATOPT_ERR_BUSY`, and the building of slices over the registered host buffers for one
//! call.

use std::cell::UnsafeCell;
use std::collections::{BTreeMap, TryReserveError};
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::engine::{Optimizer, Outcome, Step};
use crate::error::Error;
use crate::kernels::{Grad, Half, Held, ParamCopy, Q8_BLOCK};

use super::boundary::{flatopt_status, flatopt_status::*, guard, set_message};
use super::ptr::{check_buf, check_elems, handle_of, slice, slice_mut, write_out};

/// A registered buffer: the parameters, their gradients and the optional 16-bit copy.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HostBuf {
    pub(crate) param: *mut f32,
    /// The registered gradients (NULL: given with each call), f32 or the bit patterns of
    /// `grad_type`.
    pub(crate) grad: *const c_void,
    /// The gradients' format: `None` for f32.
    pub(crate) grad_type: Option<Half>,
    /// The 16-bit copy of the parameters written with each applied update (NULL: none, or
    /// `len` 0).
    pub(crate) copy: *mut u16,
    /// The copy's format: `None` for no copy.
    pub(crate) copy_type: Option<Half>,
    pub(crate) len: usize,
    /// The registered 2-D shape (`flatopt_param_options.rows`, `.cols`), if any.
    pub(crate) shape: Option<(usize, usize)>,
}

impl HostBuf {
    /// A buffer with f32 gradients and no copy (`flatopt_optimizer_add_param`).
    pub(crate) fn f32(param: *mut f32, grad: *const f32, len: usize) -> HostBuf {
        HostBuf {
            param,
            grad: grad.cast(),
            grad_type: None,
            copy: std::ptr::null_mut(),
            copy_type: None,
            len,
            shape: None,
        }
    }

    /// The size in bytes of one gradient element.
    pub(crate) fn grad_size(&self) -> usize {
        elem_size(self.grad_type)
    }
}

/// The size of an element of format `ty` (`None`: f32).
pub(crate) fn elem_size(ty: Option<Half>) -> usize {
    if ty.is_some() {
        2
    } else {
        4
    }
}

/// Checks gradients of format `ty` at `ptr`: non-NULL unless `len` is 0, aligned to their
/// element, a byte size that fits `isize`.
pub(crate) fn check_grad(
    name: &'static str,
    ptr: *const c_void,
    ty: Option<Half>,
    len: usize,
) -> Result<(), Error> {
    match ty {
        None => check_elems(name, ptr.cast::<f32>(), len),
        Some(_) => check_elems(name, ptr.cast::<u16>(), len),
    }
}

/// Elements `[at, at + n)` of gradients of format `ty` at `ptr`.
///
/// # Safety
/// `ptr` passed [`check_grad`] for at least `at + n` elements, which stay valid and unwritten
/// during `'a`.
pub(crate) unsafe fn grad_slice<'a>(
    ptr: *const c_void,
    ty: Option<Half>,
    at: usize,
    n: usize,
) -> Grad<'a> {
    let halves = || -> &'a [u16] {
        if n == 0 {
            return &[];
        }
        // SAFETY: `at + n` 16-bit elements at `ptr`, checked (non-null, aligned, size fits)
        // and valid for `'a` (this function's contract), so the offset stays inside the
        // buffer and the slice is valid as in `slice`.
        unsafe { slice(ptr.cast::<u16>().add(at), n) }
    };
    match ty {
        None if n == 0 => Grad::F32(&[]),
        // SAFETY: as for `halves`, with f32 elements.
        None => Grad::F32(unsafe { slice(ptr.cast::<f32>().add(at), n) }),
        Some(Half::Bf16) => Grad::Bf16(halves()),
        Some(Half::F16) => Grad::F16(halves()),
    }
}

/// Elements `[at, at + n)` of a buffer's 16-bit copy (`None` if it has none).
///
/// # Safety
/// The copy was checked at registration, holds at least `at + n` elements, and stays valid
/// and not accessed through any other pointer during `'a`.
pub(crate) unsafe fn copy_slice<'a>(b: &HostBuf, at: usize, n: usize) -> Option<ParamCopy<'a>> {
    let half = b.copy_type?;
    let out = if n == 0 {
        &mut [][..]
    } else {
        // SAFETY: within the registered copy of `b.len >= at + n` elements, checked at
        // registration; exclusive during `'a` (this function's contract).
        unsafe { slice_mut(b.copy.add(at), n) }
    };
    Some(ParamCopy { half, out })
}

/// One state buffer of a begun split step as raw pointers (`FLATOPT_ERR`-free access from the
/// concurrent `flatopt_optimizer_step_range` calls, which touch disjoint elements): f32 values,
/// bf16 patterns, or 8-bit codes and their blocks' scales. NULL (as `F32`) where the rule keeps
/// no such buffer.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RawHeld {
    F32(*mut f32),
    Bf16(*mut u16),
    Q8 { codes: *mut u8, scales: *mut f32 },
}

impl RawHeld {
    /// The pointers of `h` (NULL where it is empty).
    pub(crate) fn of(h: Held<'_>) -> RawHeld {
        match h {
            _ if h.is_empty() => RawHeld::F32(std::ptr::null_mut()),
            Held::F32(x) => RawHeld::F32(x.as_mut_ptr()),
            Held::Bf16(x) => RawHeld::Bf16(x.as_mut_ptr()),
            Held::Q8 { codes, scales } => RawHeld::Q8 {
                codes: codes.as_mut_ptr(),
                scales: scales.as_mut_ptr(),
            },
        }
    }

    /// Whether the buffer is held as f32 (or unused).
    pub(crate) fn is_f32(&self) -> bool {
        matches!(self, RawHeld::F32(_))
    }

    /// Elements `[at, at + n)` as a [`Held`] view (an empty one where the buffer is unused).
    ///
    /// # Safety
    /// Made by [`RawHeld::of`] from a buffer of at least `at + n` elements that stays alive and
    /// is not accessed through any other pointer during `'a`; with 8-bit codes, `at` is a
    /// multiple of [`Q8_BLOCK`] and `at + n` one too or the buffer's end (the blocks
    /// `at / Q8_BLOCK ..` are then the range's own).
    pub(crate) unsafe fn range<'a>(self, at: usize, n: usize) -> Held<'a> {
        match self {
            // SAFETY: NULL gives an empty slice; else `[at, at + n)` lies in the buffer
            // (this function's contract).
            RawHeld::F32(p) => Held::F32(unsafe { super::ptr::sub_slice_mut(p, at, n) }),
            // SAFETY: non-null (only an empty buffer is recorded as NULL, and as `F32`), `at + n`
            // elements from its start, exclusive during `'a` (this function's contract).
            RawHeld::Bf16(p) => Held::Bf16(unsafe { slice_mut(p.add(at), n) }),
            RawHeld::Q8 { codes, scales } => {
                let (b0, b1) = (at / Q8_BLOCK, (at + n).div_ceil(Q8_BLOCK));
                // SAFETY: as for `Bf16`, for the codes; the scales of the blocks covering
                // `[at, at + n)` exist (one per started block of the buffer) and belong to this
                // range alone, since it starts and ends on block boundaries (or the end).
                unsafe {
                    Held::Q8 {
                        codes: slice_mut(codes.add(at), n),
                        scales: slice_mut(scales.add(b0), b1 - b0),
                    }
                }
            }
        }
    }
}

/// An optimizer over host-owned buffers. Create with `flatopt_optimizer_new`, release with
/// `flatopt_optimizer_free`. One handle must not be used from two threads at once, except
/// `flatopt_optimizer_step_range` between `flatopt_optimizer_begin_step` and
/// `flatopt_optimizer_end_step` (and read-only queries among themselves). A call that overlaps
/// a conflicting call on the same handle from another thread is detected and refused with
/// `FLATOPT_ERR_BUSY` (nothing changes) rather than being undefined behaviour. After a call on
/// it failed with `FLATOPT_ERR_INTERNAL` (a caught panic), the handle is poisoned: every later
/// call on it returns `FLATOPT_ERR_POISONED`, and only `flatopt_optimizer_free` works.
pub struct flatopt_optimizer {
    /// Who uses the handle now: 0 nobody, `EXCLUSIVE` one changing call, n > 0 n shared calls.
    lock: AtomicUsize,
    /// Set when a call panicked while holding the handle (see the `Drop` of the guards).
    poisoned: AtomicBool,
    inner: UnsafeCell<Inner>,
}

const EXCLUSIVE: usize = usize::MAX;

impl flatopt_optimizer {
    /// A new handle around `engine`, with nothing registered.
    pub(crate) fn new(engine: Optimizer) -> Self {
        flatopt_optimizer {
            lock: AtomicUsize::new(0),
            poisoned: AtomicBool::new(false),
            inner: UnsafeCell::new(Inner {
                engine,
                bufs: Vec::new(),
                params: Vec::new(),
                grads: Vec::new(),
                copies: Vec::new(),
                pending: None,
                raw: Vec::new(),
                step_grads: Vec::new(),
                footprint: Footprint::default(),
            }),
        }
    }
}

/// The handle's contents, reached only through [`Exclusive`] or [`Shared`].
pub(crate) struct Inner {
    pub(crate) engine: Optimizer,
    pub(crate) bufs: Vec<HostBuf>,
    /// Scratch for the slices of one step, capacity reserved at registration (no allocation
    /// per step); always empty between calls.
    params: Vec<&'static mut [f32]>,
    grads: Vec<Grad<'static>>,
    copies: Vec<Option<ParamCopy<'static>>>,
    /// The step begun by `flatopt_optimizer_begin_step`, with the state pointers it needs.
    pub(crate) pending: Option<Step>,
    /// Per registered buffer, its state (m, v, v_max, slow) as held, for the range calls.
    pub(crate) raw: Vec<[RawHeld; 4]>,
    /// The gradients passed to `flatopt_optimizer_begin_step_mixed` for the begun step, one
    /// per registered buffer, read by its range calls; empty when the step reads the
    /// registered gradients (capacity reserved at registration).
    pub(crate) step_grads: Vec<*const c_void>,
    /// The memory of the registered buffers, for overlap checks in O(log n).
    footprint: Footprint,
}

/// The memory of the registered buffers, so that registering one more buffer, or a call's
/// output array, is checked for overlap in O(log n) (registering n buffers one by one takes
/// O(n log n), not O(n^2)): the parameters' intervals and the 16-bit copies' intervals, which
/// are disjoint, and the union of the gradients' intervals (gradients may share memory with
/// each other), each by start address. Empty buffers take no memory and are left out.
///
/// The gradients a step passes (`flatopt_optimizer_step_with_grads`) are new every call and
/// checked against the written buffers (params and copies) in `written`: the same intervals
/// in one vector sorted by start, rebuilt at the first such step after a registration (its
/// capacity is reserved at registration, so a step does not allocate), then searched by
/// bisection: O(g log n) per step for g gradients, no sort.
#[derive(Debug, Default)]
pub(crate) struct Footprint {
    /// Start -> (end, buffer index).
    params: BTreeMap<usize, (usize, usize)>,
    /// Start -> (end, buffer index) of the 16-bit copies.
    copies: BTreeMap<usize, (usize, usize)>,
    /// Start -> end of the merged gradient intervals.
    grads: BTreeMap<usize, usize>,
    /// The params' and copies' intervals sorted by start: (start, end, is a copy, buffer
    /// index); valid while `written_stale` is false.
    written: Vec<(usize, usize, bool, usize)>,
    written_stale: bool,
}

/// The buffer of a map of disjoint intervals sharing memory with `[start, end)`, if any: only
/// the last one starting before `end` can.
fn disjoint_hit(map: &BTreeMap<usize, (usize, usize)>, start: usize, end: usize) -> Option<usize> {
    let (_, &(e, i)) = map.range(..end).next_back()?;
    (start < end && e > start).then_some(i)
}

impl Footprint {
    /// The registered parameter sharing memory with `[start, end)`, if any.
    fn param_hit(&self, start: usize, end: usize) -> Option<usize> {
        disjoint_hit(&self.params, start, end)
    }

    /// The registered copy sharing memory with `[start, end)`, if any.
    fn copy_hit(&self, start: usize, end: usize) -> Option<usize> {
        disjoint_hit(&self.copies, start, end)
    }

    /// Whether a registered gradient shares memory with `[start, end)`.
    fn grad_hit(&self, start: usize, end: usize) -> bool {
        self.grads
            .range(..end)
            .next_back()
            .is_some_and(|(_, &g_end)| start < end && g_end > start)
    }

    fn add_param(&mut self, start: usize, end: usize, index: usize) {
        if start < end {
            self.params.insert(start, (end, index));
            self.written_stale = true;
        }
    }

    fn add_copy(&mut self, start: usize, end: usize, index: usize) {
        if start < end {
            self.copies.insert(start, (end, index));
            self.written_stale = true;
        }
    }

    /// Makes room in `written` for every param and copy of `buffers` registered buffers, so
    /// that its rebuild at a step does not allocate.
    fn reserve_written(&mut self, buffers: usize) -> Result<(), TryReserveError> {
        let want = 2 * buffers;
        self.written
            .try_reserve(want.saturating_sub(self.written.len()))
    }

    /// The written buffer (param or copy: `(start, is a copy, index)`) sharing memory with
    /// `[start, end)`, if any. Params and copies are disjoint from each other (checked at
    /// registration), so sorted by start they are sorted by end too: only the last one
    /// starting before `end` can reach past `start`.
    fn written_hit(&mut self, start: usize, end: usize) -> Option<(usize, bool, usize)> {
        if self.written_stale {
            self.written.clear();
            let params = self.params.iter().map(|(&s, &(e, i))| (s, e, false, i));
            let copies = self.copies.iter().map(|(&s, &(e, i))| (s, e, true, i));
            self.written.extend(params.chain(copies));
            // Both maps are sorted; the sort merges them (no allocation: `sort_unstable`).
            self.written.sort_unstable_by_key(|w| w.0);
            self.written_stale = false;
        }
        if start >= end {
            return None;
        }
        let at = self.written.partition_point(|w| w.0 < end);
        let &(s, e, copy, i) = self.written.get(at.checked_sub(1)?)?;
        (e > start).then_some((s, copy, i))
    }

    fn add_grad(&mut self, mut start: usize, mut end: usize) {
        if start >= end {
            return;
        }
        if let Some((&s, &e)) = self.grads.range(..=start).next_back() {
            if e >= start {
                start = s;
                end = end.max(e);
            }
        }
        while let Some((&s, &e)) = self.grads.range(start..=end).next() {
            end = end.max(e);
            self.grads.remove(&s);
        }
        self.grads.insert(start, end);
    }
}

/// The byte interval of `len` elements of `size` bytes at `ptr` (empty for NULL).
fn interval(ptr: usize, len: usize, size: usize) -> (usize, usize) {
    if ptr == 0 {
        (0, 0)
    } else {
        (ptr, ptr.saturating_add(len.saturating_mul(size)))
    }
}

/// Empties the per-step slice scratch when dropped, so that references built from host
/// pointers never outlive the call that made them (also on unwind).
struct ScratchGuard<'a> {
    params: &'a mut Vec<&'static mut [f32]>,
    grads: &'a mut Vec<Grad<'static>>,
    copies: &'a mut Vec<Option<ParamCopy<'static>>>,
}

impl Drop for ScratchGuard<'_> {
    fn drop(&mut self) {
        self.params.clear();
        self.grads.clear();
        self.copies.clear();
    }
}

/// Exclusive access to a handle for the duration of one call (released on drop).
pub(crate) struct Exclusive<'a> {
    lock: &'a AtomicUsize,
    poisoned: &'a AtomicBool,
    inner: &'a mut Inner,
}

/// Shared, read-only access to a handle for the duration of one call (released on drop).
pub(crate) struct Shared<'a> {
    lock: &'a AtomicUsize,
    poisoned: &'a AtomicBool,
    inner: &'a Inner,
}

impl Drop for Exclusive<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Unwinding out of a call that held the handle: its state may be half-updated.
            self.poisoned.store(true, Ordering::Release);
        }
        self.lock.store(0, Ordering::Release);
    }
}

impl Drop for Shared<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // A range of a split step may be half-applied.
            self.poisoned.store(true, Ordering::Release);
        }
        self.lock.fetch_sub(1, Ordering::Release);
    }
}

impl std::ops::Deref for Exclusive<'_> {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        self.inner
    }
}

impl std::ops::DerefMut for Exclusive<'_> {
    fn deref_mut(&mut self) -> &mut Inner {
        self.inner
    }
}

impl std::ops::Deref for Shared<'_> {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        self.inner
    }
}

fn busy() -> Error {
    Error::Busy(
        "the optimizer handle is in use by another thread (one handle, one thread at a time)",
    )
}

/// Takes a handle for a call that changes it (refused when poisoned).
///
/// # Safety
/// `opt` is NULL (rejected) or a live handle from `flatopt_optimizer_new`.
pub(crate) unsafe fn handle<'a>(opt: *mut flatopt_optimizer) -> Result<Exclusive<'a>, Error> {
    // SAFETY: this function's contract.
    let h = unsafe { handle_even_poisoned(opt)? };
    check_poison(h.poisoned)?;
    Ok(h)
}

fn check_poison(poisoned: &AtomicBool) -> Result<(), Error> {
    if poisoned.load(Ordering::Acquire) {
        return Err(Error::Poisoned);
    }
    Ok(())
}

/// Takes a handle for a call that changes it, poisoned or not (`flatopt_optimizer_free`).
///
/// # Safety
/// `opt` is NULL (rejected) or a live handle from `flatopt_optimizer_new`.
pub(crate) unsafe fn handle_even_poisoned<'a>(
    opt: *mut flatopt_optimizer,
) -> Result<Exclusive<'a>, Error> {
    // SAFETY: NULL or a live handle (this function's contract).
    let h = unsafe { handle_of(opt)? };
    h.lock
        .compare_exchange(0, EXCLUSIVE, Ordering::Acquire, Ordering::Relaxed)
        .map_err(|_| busy())?;
    // SAFETY: the lock is ours alone (0 -> EXCLUSIVE succeeded), so no other reference to the
    // contents exists until `Exclusive` is dropped and stores 0.
    let inner = unsafe { &mut *h.inner.get() };
    Ok(Exclusive {
        lock: &h.lock,
        poisoned: &h.poisoned,
        inner,
    })
}

/// Takes a handle for a call that only reads it (or, for `step_range`, writes disjoint
/// host-owned elements through pointers set up by `begin_step`); refused when poisoned.
///
/// # Safety
/// `opt` is NULL (rejected) or a live handle from `flatopt_optimizer_new`.
pub(crate) unsafe fn handle_ref<'a>(opt: *const flatopt_optimizer) -> Result<Shared<'a>, Error> {
    // SAFETY: NULL or a live handle (this function's contract).
    let h = unsafe { handle_of(opt)? };
    let mut seen = h.lock.load(Ordering::Relaxed);
    loop {
        if seen == EXCLUSIVE || seen == EXCLUSIVE - 1 {
            return Err(busy());
        }
        match h
            .lock
            .compare_exchange_weak(seen, seen + 1, Ordering::Acquire, Ordering::Relaxed)
        {
            Ok(_) => break,
            Err(now) => seen = now,
        }
    }
    // SAFETY: no exclusive user exists while the count is above 0, so shared references to
    // the contents may coexist.
    let inner = unsafe { &*h.inner.get() };
    let shared = Shared {
        lock: &h.lock,
        poisoned: &h.poisoned,
        inner,
    };
    check_poison(shared.poisoned)?; // after taking it: the guard releases the count
    Ok(shared)
}

impl Inner {
    /// Registers one more buffer: allowed until the first update (or after a reset). Time
    /// O(log n + len) for the n-th buffer; the per-step scratch grows by doubling. A 16-bit
    /// copy is written from the parameters at once.
    pub(crate) fn add(&mut self, buf: HostBuf, group: usize) -> Result<(), Error> {
        if self.engine.step_count() > 0 || self.pending.is_some() {
            return Err(Error::InvalidState(
                "registering a buffer after the first update (call flatopt_optimizer_reset first)",
            ));
        }
        check_buf("param", buf.param, buf.len)?;
        if !buf.grad.is_null() {
            // NULL is allowed here: gradients then come with each step_with_grads call.
            check_grad("grad", buf.grad, buf.grad_type, buf.len)?;
        }
        if buf.copy_type.is_some() {
            check_elems("copy", buf.copy, buf.len)?;
        }
        let n = self.bufs.len();
        let (p0, p1) = interval(buf.param as usize, buf.len, 4);
        let (g0, g1) = interval(buf.grad as usize, buf.len, buf.grad_size());
        let (c0, c1) = interval(buf.copy as usize, buf.len, 2);
        let shared = |a: String, b: String| Error::Overlap {
            what: format!("{a} and {b} share memory"),
        };
        if let Some(i) = self.footprint.param_hit(p0, p1) {
            return Err(shared(format!("param {i}"), format!("param {n}")));
        }
        if let Some(i) = self.footprint.copy_hit(p0, p1) {
            return Err(shared(format!("copy {i}"), format!("param {n}")));
        }
        if self.footprint.grad_hit(p0, p1) {
            return Err(shared(self.grad_sharing(p0, p1), format!("param {n}")));
        }
        if let Some(i) = self.footprint.param_hit(g0, g1) {
            return Err(shared(format!("param {i}"), format!("grad {n}")));
        }
        if let Some(i) = self.footprint.copy_hit(g0, g1) {
            return Err(shared(format!("copy {i}"), format!("grad {n}")));
        }
        if p0 < g1 && g0 < p1 {
            return Err(shared(format!("param {n}"), format!("grad {n}")));
        }
        if c0 < c1 {
            if let Some(i) = self.footprint.param_hit(c0, c1) {
                return Err(shared(format!("param {i}"), format!("copy {n}")));
            }
            if let Some(i) = self.footprint.copy_hit(c0, c1) {
                return Err(shared(format!("copy {i}"), format!("copy {n}")));
            }
            if self.footprint.grad_hit(c0, c1) {
                return Err(shared(self.grad_sharing(c0, c1), format!("copy {n}")));
            }
            if p0 < c1 && c0 < p1 {
                return Err(shared(format!("param {n}"), format!("copy {n}")));
            }
            if g0 < c1 && c0 < g1 {
                return Err(shared(format!("grad {n}"), format!("copy {n}")));
            }
            super::optimizer::check_not_owned(self, "copy", buf.copy.cast(), c1 - c0)?;
        }
        let all = n + 1;
        let no_memory = |_| {
            Error::invalid(
                "param",
                format!("buffer {n}"),
                "cannot allocate the handle's bookkeeping",
            )
        };
        // The scratch vectors are empty between calls: reserving `all` more makes their
        // capacity at least `all` (amortized doubling, no per-step allocation).
        self.bufs.try_reserve(1).map_err(no_memory)?;
        self.params.try_reserve(all).map_err(no_memory)?;
        self.grads.try_reserve(all).map_err(no_memory)?;
        self.copies.try_reserve(all).map_err(no_memory)?;
        self.raw.try_reserve(all).map_err(no_memory)?;
        self.step_grads.try_reserve(all).map_err(no_memory)?;
        self.footprint.reserve_written(all).map_err(no_memory)?;
        // SAFETY: checked above (non-null unless empty, aligned, size fits); the host
        // guarantees the param buffer is readable during this call.
        let values = unsafe { slice(buf.param, buf.len) };
        self.engine.add_buffer_shaped(values, group, buf.shape)?;
        self.footprint.add_param(p0, p1, n);
        self.footprint.add_grad(g0, g1);
        self.footprint.add_copy(c0, c1, n);
        self.bufs.push(buf);
        // SAFETY: the copy was checked above (non-null unless empty, aligned, disjoint from
        // every registered buffer and the optimizer's state) and is the host's, valid and
        // ours alone during this call.
        unsafe { self.write_copy(n) };
        Ok(())
    }

    /// Writes buffer `i`'s 16-bit copy (if it has one) from its parameters: at registration,
    /// reset and checkpoint load, so that the copy is the narrowed parameters whenever the
    /// optimizer hands control back.
    ///
    /// # Safety
    /// The registered param and copy of buffer `i` are valid and not accessed by anyone else
    /// during the call.
    pub(crate) unsafe fn write_copy(&self, i: usize) {
        let b = &self.bufs[i];
        // SAFETY: the registered copy, valid and ours during the call (contract).
        if let Some(c) = unsafe { copy_slice(b, 0, b.len) } {
            // SAFETY: the registered param (checked at registration), only read here and
            // disjoint from the copy (checked at registration).
            let p = unsafe { slice(b.param, b.len) };
            crate::kernels::narrow_from_f32(self.engine.tier(), c.half, p, c.out)
                .expect("the copy has the registered length");
        }
    }

    /// [`Inner::write_copy`] for every buffer.
    ///
    /// # Safety
    /// As [`Inner::write_copy`], for every registered buffer.
    pub(crate) unsafe fn write_copies(&self) {
        for i in 0..self.bufs.len() {
            // SAFETY: this function's contract.
            unsafe { self.write_copy(i) };
        }
    }

    /// Names the registered gradient that shares memory with `[start, end)` (error path).
    fn grad_sharing(&self, start: usize, end: usize) -> String {
        self.bufs
            .iter()
            .position(|b| {
                let (g0, g1) = interval(b.grad as usize, b.len, b.grad_size());
                g0 < end && start < g1
            })
            .map_or_else(|| "a gradient".to_string(), |i| format!("grad {i}"))
    }

    /// Refuses an output array of `len` elements of `size` bytes at `ptr` that shares memory
    /// with a registered buffer (`name` names it in the error).
    pub(crate) fn check_output_disjoint(
        &self,
        name: &str,
        ptr: usize,
        len: usize,
        size: usize,
    ) -> Result<(), Error> {
        let (o0, o1) = interval(ptr, len, size);
        let other = if let Some(i) = self.footprint.param_hit(o0, o1) {
            format!("param {i}")
        } else if let Some(i) = self.footprint.copy_hit(o0, o1) {
            format!("copy {i}")
        } else if self.footprint.grad_hit(o0, o1) {
            self.grad_sharing(o0, o1)
        } else {
            return Ok(());
        };
        Err(Error::Overlap {
            what: format!("{name} and {other} share memory"),
        })
    }

    /// Runs `f` with slices over every registered param, the gradients (the registered ones
    /// for `given` = None, else `given[i]` for buffer `i`, in the buffer's registered format)
    /// and the 16-bit copies. Checks the gradient pointers and their overlap with the params
    /// and copies first.
    ///
    /// # Safety
    /// Host pointers are valid and not accessed by anyone else during the call; `given` is
    /// `None` or holds one pointer per registered buffer.
    pub(crate) unsafe fn with_slices<R>(
        &mut self,
        given: Option<&[*const c_void]>,
        f: impl FnOnce(
            &mut Optimizer,
            &mut [&mut [f32]],
            &[Grad<'_>],
            &mut [Option<ParamCopy<'_>>],
        ) -> Result<R, Error>,
    ) -> Result<R, Error> {
        let bufs = &self.bufs;
        let grad_ptr = |i: usize| given.map_or(bufs[i].grad, |g| g[i]);
        for (i, b) in bufs.iter().enumerate() {
            check_grad("grad", grad_ptr(i), b.grad_type, b.len)?;
        }
        if given.is_some() {
            // Registered gradients were checked for overlap at registration; these are new.
            // They may share memory with each other (they are only read), not with a param
            // or copy (written).
            for (i, b) in bufs.iter().enumerate() {
                let (g0, g1) = interval(grad_ptr(i) as usize, b.len, b.grad_size());
                if let Some((w0, copy, j)) = self.footprint.written_hit(g0, g1) {
                    let written = format!("{} {j}", if copy { "copy" } else { "param" });
                    let grad = format!("grad {i}");
                    let (a, b) = if w0 <= g0 {
                        (written, grad)
                    } else {
                        (grad, written)
                    };
                    return Err(Error::Overlap {
                        what: format!("{a} and {b} share memory"),
                    });
                }
            }
        }
        let guard = ScratchGuard {
            params: &mut self.params,
            grads: &mut self.grads,
            copies: &mut self.copies,
        };
        for (i, b) in bufs.iter().enumerate() {
            // SAFETY: pointers checked (non-null unless empty, aligned, size fits, disjoint
            // from every other buffer of this call); the host guarantees they are valid and
            // ours alone during this call. The 'static lifetime is never observed:
            // `ScratchGuard` empties the vectors before this function returns or unwinds.
            guard.params.push(unsafe { slice_mut(b.param, b.len) });
            // SAFETY: as above.
            guard
                .grads
                .push(unsafe { grad_slice(grad_ptr(i), b.grad_type, 0, b.len) });
            // SAFETY: as above (the copy checked at registration).
            guard.copies.push(unsafe { copy_slice(b, 0, b.len) });
        }
        #[cfg(any(test, feature = "fault-injection"))]
        super::fault::panic_if_armed();
        f(&mut self.engine, guard.params, guard.grads, guard.copies)
    }
}

/// Writes a value read from a handle to `out` (the shape of every query).
///
/// # Safety
/// `opt` NULL or a live handle; `out` NULL or writable.
pub(crate) unsafe fn query<T>(
    opt: *const flatopt_optimizer,
    out: *mut T,
    read: impl FnOnce(&Inner) -> T,
) -> flatopt_status {
    guard(|| {
        // SAFETY: see `handle_ref`.
        let h = unsafe { handle_ref(opt)? };
        let value = read(&h);
        // SAFETY: NULL is rejected; otherwise valid for writes (C contract).
        unsafe { write_out("out", out, value)? };
        Ok(FLATOPT_OK)
    })
}

pub(crate) fn check_no_pending(h: &Inner) -> Result<(), Error> {
    if h.pending.is_some() {
        return Err(Error::InvalidState(
            "a step begun with flatopt_optimizer_begin_step is not finished (call flatopt_optimizer_end_step)",
        ));
    }
    Ok(())
}

/// Maps an update outcome to a status, recording a message for a skipped update.
pub(crate) fn outcome_status(outcome: Outcome) -> flatopt_status {
    match outcome {
        Outcome::Applied { .. } => FLATOPT_OK,
        Outcome::Skipped {
            buffer,
            index,
            value,
        } => {
            if buffer == usize::MAX {
                set_message(format_args!(
                    "update skipped: the supplied sum of squares is not finite (a non-finite \
                     gradient in another shard)"
                ));
            } else {
                set_message(format_args!(
                    "update skipped: non-finite gradient: buffer {buffer} holds {value} at index {index}"
                ));
            }
            FLATOPT_SKIPPED
        }
    }
}
