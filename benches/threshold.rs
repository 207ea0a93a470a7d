//! Measures where a private pool starts to pay: the full pipeline (Lookahead(Adam), clip-norm,
//! weight decay) on 1 and 2 threads, interleaved in one run, medians over repeats, reported as
//! the ratio t(2 threads) / t(1 thread) per size. The engine's PARALLEL_MIN_ELEMENTS is set
//! from this (`cargo bench --bench threshold`). Below the current threshold both columns run on
//! the caller's thread (ratio ~1); lower the constant temporarily to measure below it.

use flatopt::{Base, Config, Optimizer};
use std::hint::black_box;
use std::time::Instant;

fn data(n: usize, seed: u32) -> Vec<f32> {
    let mut x = seed.wrapping_mul(2654435761).wrapping_add(7);
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(1664525).wrapping_add(1013904223);
            (x >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return; // `cargo test --all-targets` builds this; nothing to check quickly
    }
    println!(
        "threshold now: {} elements",
        flatopt::engine::PARALLEL_MIN_ELEMENTS
    );
    println!(
        "{:>10} {:>12} {:>12} {:>8}",
        "elements", "1 thread us", "2 threads us", "ratio"
    );
    for n in [
        16_384usize,
        65_536,
        131_072,
        262_144,
        524_288,
        1_048_576,
        4_194_304,
        16_777_216,
    ] {
        let mk = |threads: usize| {
            let cfg = Config::new(Base::adam(), 1e-3)
                .lookahead(5, 0.5)
                .clip_norm(1.0)
                .weight_decay(1e-4)
                .threads(threads);
            let p = data(n, 1);
            let mut opt = Optimizer::new(cfg).unwrap();
            opt.register(&[&p]).unwrap();
            (opt, p, data(n, 2))
        };
        let (mut o1, mut p1, g1) = mk(1);
        let (mut o2, mut p2, g2) = mk(2);
        let reps = (20_000_000 / n).clamp(20, 2000);
        let (mut t1, mut t2) = (Vec::new(), Vec::new());
        for _ in 0..31 {
            let s = Instant::now();
            for _ in 0..reps {
                o1.step(&mut [black_box(&mut p1)], &[&g1]).unwrap();
            }
            t1.push(s.elapsed().as_secs_f64() / reps as f64);
            let s = Instant::now();
            for _ in 0..reps {
                o2.step(&mut [black_box(&mut p2)], &[&g2]).unwrap();
            }
            t2.push(s.elapsed().as_secs_f64() / reps as f64);
        }
        let (a, b) = (median(t1) * 1e6, median(t2) * 1e6);
        println!("{n:>10} {a:>12.2} {b:>12.2} {:>8.2}", b / a);
    }
}
