//! Concurrency through the C ABI: many threads each driving their own optimizer get the results
//! of sequential runs, and one handle used from two threads at once is refused with
//! FLATOPT_ERR_BUSY instead of being undefined behaviour.

use flatopt::ffi::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Makes a Lookahead(Adam) + clip-norm optimizer over `p` with gradient `g`.
fn make(p: &mut [f32], g: &[f32]) -> *mut flatopt_optimizer {
    // SAFETY: plain C-API use with valid, live buffers that outlive the optimizer.
    unsafe {
        let mut cfg = std::mem::zeroed::<flatopt_config>();
        assert_eq!(
            flatopt_config_init(&mut cfg, std::mem::size_of::<flatopt_config>()),
            flatopt_status::FLATOPT_OK
        );
        cfg.lookahead = 1;
        cfg.grad_clip_norm = 1.0;
        let mut opt = std::ptr::null_mut();
        assert_eq!(
            flatopt_optimizer_new(&cfg, &mut opt),
            flatopt_status::FLATOPT_OK
        );
        assert_eq!(
            flatopt_optimizer_add_param(opt, p.as_mut_ptr(), g.as_ptr(), p.len()),
            flatopt_status::FLATOPT_OK
        );
        opt
    }
}

fn data(n: usize, seed: u32) -> Vec<f32> {
    let mut x = seed.wrapping_mul(2654435761) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        })
        .collect()
}

#[test]
fn threads_with_their_own_optimizers_match_sequential_runs() {
    const N: usize = 8;
    let run = |seed: u32| -> Vec<u32> {
        let mut p = data(5003, seed);
        let g = data(5003, seed + 100);
        let opt = make(&mut p, &g);
        for _ in 0..40 {
            // SAFETY: live handle, buffers alive.
            assert_eq!(
                unsafe { flatopt_optimizer_step(opt) },
                flatopt_status::FLATOPT_OK
            );
        }
        // SAFETY: freed once.
        unsafe { flatopt_optimizer_free(opt) };
        p.iter().map(|x| x.to_bits()).collect()
    };
    let sequential: Vec<Vec<u32>> = (0..N as u32).map(run).collect();
    let concurrent: Vec<Vec<u32>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..N as u32).map(|i| s.spawn(move || run(i))).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(sequential, concurrent);
}

/// A handle pointer that may cross threads (the test's whole point is to misuse it).
#[derive(Clone, Copy)]
struct Shared(*mut flatopt_optimizer);
// SAFETY: the library itself detects and refuses concurrent conflicting use of the handle.
unsafe impl Send for Shared {}
// SAFETY: as above.
unsafe impl Sync for Shared {}

impl Shared {
    /// The pointer (a method, so that closures capture the whole `Shared`, not its field).
    fn ptr(&self) -> *mut flatopt_optimizer {
        self.0
    }
}

#[test]
fn one_handle_from_two_threads_is_refused_not_undefined() {
    let n = 400_000; // a step long enough for the two threads to overlap often
    let mut p = data(n, 1);
    let g = data(n, 2);
    let h = Shared(make(&mut p, &g));
    let (ok, busy, other) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                for _ in 0..200 {
                    // SAFETY: a live handle; concurrent use is exactly what is being tested.
                    match unsafe { flatopt_optimizer_step(h.ptr()) } {
                        flatopt_status::FLATOPT_OK => ok.fetch_add(1, Ordering::Relaxed),
                        flatopt_status::FLATOPT_ERR_BUSY => busy.fetch_add(1, Ordering::Relaxed),
                        _ => other.fetch_add(1, Ordering::Relaxed),
                    };
                }
            });
        }
        // A reader hammering queries meanwhile: shared calls are refused only while a
        // changing call is inside.
        s.spawn(|| {
            let mut steps = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // SAFETY: live handle, valid out pointer.
                let st = unsafe { flatopt_optimizer_step_count(h.ptr(), &mut steps) };
                assert!(
                    st == flatopt_status::FLATOPT_OK || st == flatopt_status::FLATOPT_ERR_BUSY,
                    "{st:?}"
                );
                std::thread::yield_now();
            }
        });
        while ok.load(Ordering::Relaxed) + busy.load(Ordering::Relaxed) < 400 {
            std::thread::yield_now();
        }
        stop.store(true, Ordering::Relaxed);
    });
    let (ok, busy) = (ok.into_inner(), busy.into_inner());
    assert_eq!(other.into_inner(), 0);
    assert_eq!(ok + busy, 400);
    assert!(
        busy > 0,
        "two threads never overlapped in 400 steps of 400K elements"
    );
    let mut steps = 0;
    // SAFETY: live handle.
    unsafe {
        assert_eq!(
            flatopt_optimizer_step_count(h.0, &mut steps),
            flatopt_status::FLATOPT_OK
        );
        flatopt_optimizer_free(h.0);
    }
    assert_eq!(
        steps, ok,
        "every accepted step counted exactly once, refused ones not at all"
    );
}
