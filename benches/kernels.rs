//! Criterion benches of the fused kernels and the full pipeline, next to a memory-bandwidth
//! probe with the same access pattern, measured in the same process. Throughput is reported in
//! bytes/s counting the bytes each update must move (Adam: p, g, m, v read, p, m, v written =
//! 28 bytes per element), so every figure compares directly with the probe's.
//!
//! `cargo bench --bench kernels` for everything; `-- adam/10000000` to filter.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use flatopt::kernels::{self, Buffers, Plan, Rule};
use flatopt::{Base, Config, Optimizer, Tier};
use std::hint::black_box;

/// Random-looking, never-zero data (a cheap LCG: the values only need to be non-trivial).
fn data(n: usize, seed: u32, scale: f32) -> Vec<f32> {
    let mut x = seed.wrapping_mul(2654435761).wrapping_add(1);
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(1664525).wrapping_add(1013904223);
            ((x >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * scale + 1e-3
        })
        .collect()
}

/// The bandwidth probe: Adam's memory pattern (read p, g, m, v; write p, m, v) with trivial
/// arithmetic, vectorized by the compiler.
fn probe(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
    for (((p, g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
        *m += *g;
        *v += *g;
        *p += *m + *v;
    }
}

fn sizes() -> Vec<usize> {
    match std::env::var("FLATOPT_BENCH_SIZES") {
        Ok(s) => s.split(',').filter_map(|x| x.trim().parse().ok()).collect(),
        Err(_) => vec![1_000, 10_000, 100_000, 1_000_000, 10_000_000],
    }
}

fn bench_adam(c: &mut Criterion) {
    let mut group = c.benchmark_group("adam");
    for n in sizes() {
        group.throughput(Throughput::Bytes(28 * n as u64));
        group.sample_size(if n >= 1_000_000 { 10 } else { 50 });
        let mut p = data(n, 1, 2.0);
        let g = data(n, 2, 0.1);
        let mut m = data(n, 3, 0.01);
        let mut v: Vec<f32> = data(n, 4, 0.01).iter().map(|x| x * x).collect();
        group.bench_with_input(BenchmarkId::new("probe", n), &n, |b, _| {
            b.iter(|| probe(black_box(&mut p), black_box(&g), &mut m, &mut v))
        });
        for tier in Tier::ALL.into_iter().filter(|t| t.is_available()) {
            let plan = Plan {
                clip_scale: None,
                clip_value: None,
                weight_decay: None,
                rule: Rule::for_step(&Base::adam(), 10, 1e-3),
                sync_alpha: None,
            };
            group.bench_with_input(BenchmarkId::new(tier.name(), n), &n, |b, _| {
                b.iter(|| {
                    kernels::apply(
                        tier,
                        &plan,
                        Buffers {
                            param: black_box(&mut p),
                            grad: black_box(&g),
                            m: &mut m,
                            v: &mut v,
                            v_max: &mut [],
                            slow: &mut [],
                        },
                    )
                    .unwrap()
                })
            });
        }
    }
    group.finish();
}

/// The full pipeline: Lookahead(Adam) with global-norm clipping and weight decay, through the
/// engine, on 1 and 2 threads. Bytes: 28 per element for the update, 4 for the norm pass, and
/// 8/k for the syncs (k = 5).
fn bench_pipeline(c: &mut Criterion) {
    let mut group = c.benchmark_group("pipeline");
    for n in sizes() {
        group.throughput(Throughput::Bytes(((32.0 + 8.0 / 5.0) * n as f64) as u64));
        group.sample_size(if n >= 1_000_000 { 10 } else { 50 });
        for threads in [1usize, 2] {
            let cfg = Config::new(Base::adam(), 1e-3)
                .lookahead(5, 0.5)
                .clip_norm(1.0)
                .weight_decay(1e-4)
                .threads(threads);
            let mut p = data(n, 5, 2.0);
            let g = data(n, 6, 0.1);
            let mut opt = Optimizer::new(cfg).unwrap();
            opt.register(&[&p]).unwrap();
            group.bench_with_input(
                BenchmarkId::new(format!("threads{threads}"), n),
                &n,
                |b, _| {
                    b.iter(|| {
                        opt.update(&mut [black_box(&mut p)], &[black_box(&g)])
                            .unwrap()
                    })
                },
            );
        }
    }
    group.finish();
}

fn bench_sumsq(c: &mut Criterion) {
    let mut group = c.benchmark_group("sum_squares");
    for n in sizes() {
        group.throughput(Throughput::Bytes(4 * n as u64));
        group.sample_size(if n >= 1_000_000 { 10 } else { 50 });
        let g = data(n, 7, 1.0);
        for tier in Tier::ALL.into_iter().filter(|t| t.is_available()) {
            group.bench_with_input(BenchmarkId::new(tier.name(), n), &n, |b, _| {
                b.iter(|| kernels::sum_squares(tier, black_box(&g)))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_adam, bench_pipeline, bench_sumsq);
criterion_main!(benches);
