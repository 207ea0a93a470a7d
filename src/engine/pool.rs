//! The optimizer's private thread pool, safe across `fork`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Once};

use crate::error::Error;
use crate::simd::FpMode;

/// Incremented in a forked child (see [`Pool`]).
pub(super) static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);
pub(super) static ATFORK: Once = Once::new();

extern "C" fn after_fork_in_child() {
    FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// A private rayon pool. Its worker threads do not exist in a forked child, so a pool made
/// before a fork is abandoned there (leaked, never touched: its locks may be held by threads
/// that are gone) and a new one is made on first use.
pub(super) struct Pool {
    pub(super) pool: Option<Arc<rayon::ThreadPool>>,
    pub(super) threads: usize,
    pub(super) generation: u64,
}

impl Pool {
    pub(super) fn new(threads: usize) -> Result<Pool, Error> {
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

    pub(super) fn build(threads: usize) -> Result<rayon::ThreadPool, Error> {
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
    pub(super) fn get(&mut self) -> Option<Arc<rayon::ThreadPool>> {
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
