//! The record of which elements a split update has applied (see [`Coverage`]).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::state::alloc_error;
use super::Step;
use crate::error::Error;

/// Which elements of the begun split update have been applied (see
/// [`Optimizer::begin_step`]): one bit per registered element, in the concatenation of the
/// buffers, set by the `Step::apply` (or C `flatopt_optimizer_step_range`) that covers it. Set
/// with atomic read-modify-writes, so that threads applying disjoint ranges at once neither
/// lock nor wait; sized at registration, so tracking allocates nothing per update. Costs one
/// bit of memory per element, and per applied range one atomic operation per 64 elements.
#[derive(Debug, Default)]
pub(crate) struct Coverage {
    pub(super) bits: Vec<AtomicU64>,
    /// One bit per block of [`COVER_BLOCK`] elements, set by a range that covers the whole
    /// block (instead of the block's 64 words of `bits`: one atomic operation per 4096
    /// elements for long ranges).
    pub(super) blocks: Vec<AtomicU64>,
    /// Elements applied in the begun update (the claimed ranges are disjoint, so this reaches
    /// the registered total exactly when every element was applied once).
    pub(super) applied: AtomicUsize,
    /// The number of the begun update, 0 when none is pending.
    pub(super) pending: u64,
    /// The id of the optimizer this belongs to.
    pub(super) owner: u64,
}

/// Elements per block of [`Coverage::blocks`] (64 words of element bits).
pub(super) const COVER_BLOCK: usize = 64 * 64;

/// The bits of `[begin, end)` that fall into word `w` (which the range must touch).
pub(super) fn word_mask(w: usize, begin: usize, end: usize) -> u64 {
    let base = w * 64;
    let lo = begin.max(base) - base; // < 64
    let hi = end.min(base + 64) - base; // 1..=64
    let below_hi = if hi == 64 { u64::MAX } else { (1u64 << hi) - 1 };
    below_hi & !((1u64 << lo) - 1)
}

impl Coverage {
    pub(super) fn new(owner: u64, total: usize) -> Result<Coverage, Error> {
        let mut c = Coverage {
            owner,
            ..Coverage::default()
        };
        c.grow(total)?;
        Ok(c)
    }

    /// Room for `total` elements (keeps the bits already there; they are all clear between
    /// updates' bookkeeping, see [`Coverage::begin`]).
    pub(super) fn grow(&mut self, total: usize) -> Result<(), Error> {
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
    pub(super) fn begin(&mut self, number: u64) {
        if *self.applied.get_mut() != 0 {
            self.bits.iter_mut().for_each(|w| *w.get_mut() = 0);
            self.blocks.iter_mut().for_each(|w| *w.get_mut() = 0);
            *self.applied.get_mut() = 0;
        }
        self.pending = number;
    }

    /// Forgets the pending update (it was replaced, or the state was reset or loaded).
    pub(super) fn abandon(&mut self) {
        self.begin(0);
    }

    /// Whether a begun update has had part of it applied.
    pub(super) fn partly_applied(&self) -> bool {
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
    pub(super) fn claim_marks(
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
    pub(super) fn claim_elems(&self, (begin, end): (usize, usize)) -> Result<(), usize> {
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
    pub(super) fn release_elems(&self, (begin, end): (usize, usize)) {
        if begin < end {
            for w in begin / 64..=(end - 1) / 64 {
                self.bits[w].fetch_and(!word_mask(w, begin, end), Ordering::SeqCst);
            }
        }
    }

    /// Marks blocks `[b0, b1)` whole, or marks nothing and returns the first element of the
    /// first block marked already.
    pub(super) fn claim_blocks(&self, b0: usize, b1: usize) -> Result<(), usize> {
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
    pub(super) fn release_blocks(&self, b0: usize, b1: usize) {
        for w in b0 / 64..=(b1 - 1) / 64 {
            self.blocks[w].fetch_and(!word_mask(w, b0, b1), Ordering::SeqCst);
        }
    }
}

/// The index of the lowest set bit, if any.
pub(super) fn first_bit(w: u64) -> Option<usize> {
    (w != 0).then(|| w.trailing_zeros() as usize)
}

/// The coverage of views that `update` itself applies, in one call (never claimed).
pub(super) static UNTRACKED: Coverage = Coverage {
    bits: Vec::new(),
    blocks: Vec::new(),
    applied: AtomicUsize::new(0),
    pending: 0,
    owner: 0,
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::engine::Optimizer;

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
