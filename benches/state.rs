//! Compressed optimizer state at memory bandwidth (issue 16): one Adam step over
//! `STATE_BENCH_N` (default 1e8) elements on 2 threads with the moments held as f32 (8 bytes of
//! state per element: the step moves 28 bytes per element), bf16 (4: 20 bytes) and int8 (about
//! 2: 16 bytes), side by side, interleaved, medians; and the state bytes per element of each.
//! `cargo bench --bench state`. `STATE_BENCH_PROPAGATE=1` drops the norm / non-finite pass
//! (policy `propagate`), leaving the fused pass alone.

use flatopt::kernels::StateDtype;
use flatopt::{Base, Config, Optimizer};
use std::hint::black_box;
use std::time::Instant;

const REPEATS: usize = 9;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // `cargo bench` passes `--bench`; under `cargo test` a small smoke run only.
    let bench = std::env::args().any(|a| a == "--bench");
    let n: usize = std::env::var("STATE_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if bench { 100_000_000 } else { 10_000 });
    let threads: usize = std::env::var("STATE_BENCH_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let mut cfg = Config::new(Base::adam(), 1e-3).threads(threads);
    if std::env::var_os("STATE_BENCH_PROPAGATE").is_some() {
        cfg = cfg.nonfinite(flatopt::NonFinitePolicy::Propagate);
    }
    let init =
        |k: usize| -> Vec<f32> { (0..n).map(|i| ((i * 7 + k) % 101) as f32 * 1e-3).collect() };
    let g = init(3);
    let dtypes = [StateDtype::F32, StateDtype::Bf16, StateDtype::Int8];
    let mut runs: Vec<(StateDtype, Vec<f32>, Optimizer, Vec<f64>)> = dtypes
        .iter()
        .map(|&d| {
            let p = init(1);
            let mut o = Optimizer::new(Config {
                state_dtype: d,
                ..cfg.clone()
            })
            .unwrap();
            o.register(&[&p]).unwrap();
            (d, p, o, Vec::new())
        })
        .collect();
    let repeats = if bench { REPEATS } else { 1 };
    for r in 0..=repeats {
        for (_, p, o, times) in runs.iter_mut() {
            let t = Instant::now();
            black_box(o.step(&mut [&mut p[..]], &[&g]).unwrap());
            if r > 0 {
                // The first round warms the pages up.
                times.push(t.elapsed().as_secs_f64());
            }
        }
    }
    println!("{n} elements, Adam, {threads} threads, medians of {repeats} interleaved rounds");
    let f32_time = median(runs[0].3.clone());
    for (d, _, o, times) in &runs {
        let t = median(times.clone());
        let lo = times.iter().cloned().fold(f64::INFINITY, f64::min);
        let hi = times.iter().cloned().fold(0.0, f64::max);
        let bytes = 12.0 + o.state_bytes_per_element() * 2.0;
        println!(
            "{:<9} state {:.3} B/elem: {:7.1} ms ({:.1} GB/s at {:.2} B/elem moved; max/min {:.2}); speed vs f32 {:.2}x",
            d.name(),
            o.state_bytes_per_element(),
            t * 1e3,
            bytes * n as f64 / t / 1e9,
            bytes,
            hi / lo,
            f32_time / t
        );
    }
}
