//! Criterion benches of every kernel and of the full pipeline, each group next to a
//! memory-bandwidth probe with the same access pattern, measured in the same process.
//! Throughput is reported in bytes/s counting the bytes each update must move (Adam: p, g, m, v
//! read, p, m, v written = 28 bytes per element), so every figure compares directly with the
//! probe's in its group: the fraction of what the machine can move with that pattern.
//!
//! Groups (sizes 1e3 .. 1e8 elements; `FLATOPT_BENCH_SIZES=1000,1000000` to choose):
//! - `adam`: the fused Adam kernel on every SIMD tier, one thread, and the probe;
//! - `rules`: every base rule and the variants that change its state (the table `rules()`) on
//!   the default tier (the best one, or `FLATOPT_SIMD`), one thread, each group of rules next
//!   to the probe with their pattern (12, 20, 28 or 36 B/element: p and g, plus each state
//!   buffer read and written);
//! - `rules-threads2`: the same rules through the optimizer on 2 threads (non-finite check off:
//!   the update's own bytes) and the 2-thread probes;
//! - `ops`: the standalone kernels (scale, clip by value, Lookahead sync, sum of squares) on the
//!   default tier and their probes;
//! - `fpmode`: the cost of entering flatopt's floating-point mode and restoring the host's
//!   (`FpMode`, once per entry point) with the host in the default mode and with FTZ/DAZ set;
//! - `engine`: Adam through the optimizer on 1 and 2 threads, non-finite check off
//!   (`propagate`, 28 B/element) and on (`skip`, +4 B/element), and the probe on 1 and 2 threads;
//! - `pipeline`: Lookahead(Adam) + global-norm clipping + weight decay through the optimizer on
//!   1 and 2 threads (28 + 4 + 8/k B/element) and the probe on 1 and 2 threads.
//!
//! `cargo bench --bench kernels` for everything; `-- engine/` or `-- adam/10000000` to filter.
//! Under `cargo test` (no `--bench` argument) every bench runs once at 1e3 and 4096 elements and
//! the results are checked to be finite: a quick mode for `make test`, no timing assertions.
//! The probes are plain loops compiled for AVX2 when the CPU has it (the same instruction set as
//! the best flatopt tier); the 2-thread probe splits the range between two scoped threads.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use flatopt::kernels::{self, Buffers, Op, Plan, Rule};
use flatopt::{Base, Config, NonFinitePolicy, Optimizer, Tier};
use std::hint::black_box;
use std::time::Duration;

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

/// Positive data (second moments).
fn positive(n: usize, seed: u32) -> Vec<f32> {
    data(n, seed, 0.01).iter().map(|x| x * x + 1e-8).collect()
}

/// True when run by `cargo bench` (criterion gets `--bench`), false under `cargo test`.
fn benchmarking() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn sizes() -> Vec<usize> {
    if !benchmarking() {
        return vec![1_000, 4_096];
    }
    match std::env::var("FLATOPT_BENCH_SIZES") {
        Ok(s) => s
            .split(',')
            .filter_map(|x| x.trim().parse::<f64>().ok())
            .map(|x| x as usize)
            .collect(),
        Err(_) => vec![1_000, 10_000, 100_000, 1_000_000, 10_000_000, 100_000_000],
    }
}

/// Fewer, shorter samples where one iteration takes milliseconds.
fn configure<M: criterion::measurement::Measurement>(
    group: &mut criterion::BenchmarkGroup<'_, M>,
    n: usize,
) {
    if n >= 10_000_000 {
        group.sample_size(10);
        group.warm_up_time(Duration::from_millis(1500));
        group.measurement_time(Duration::from_secs(4));
    } else if n >= 1_000_000 {
        group.sample_size(20);
        group.warm_up_time(Duration::from_secs(1));
        group.measurement_time(Duration::from_secs(3));
    } else {
        group.sample_size(50);
        group.warm_up_time(Duration::from_millis(500));
        group.measurement_time(Duration::from_secs(2));
    }
}

fn assert_finite(what: &str, xs: &[f32]) {
    if let Some(i) = xs.iter().position(|x| !x.is_finite()) {
        panic!("{what}: non-finite value {} at {i}", xs[i]);
    }
}

// ---------------------------------------------------------------------------------------------
// The bandwidth probes: plain loops with the access pattern of each kernel, trivial arithmetic
// that keeps the values bounded (no denormals, no NaN).

#[derive(Debug, Clone, Copy, PartialEq)]
enum Pattern {
    /// p, g read; p written: 12 B/element (SGD).
    Sgd,
    /// p, g, b read; p, b written: 20 B/element (momentum, Nesterov).
    Momentum,
    /// p, g, m, v read; p, m, v written: 28 B/element (Adam, AdamW, RAdam).
    Adam,
    /// p, g, m, v, v_max read; p, m, v, v_max written: 36 B/element (AMSGrad).
    AmsGrad,
    /// x read and written: 8 B/element (scale, clip by value).
    ReadWrite,
    /// x, y read and written: 16 B/element (Lookahead sync).
    Swap,
    /// g read: 4 B/element (sum of squares).
    Read,
    /// Two passes (LAMB): p, g, m, v read, m, v written; then p, m, v read, p written:
    /// 40 B/element.
    Lamb,
    /// Two passes (LARS): p, g read; then the momentum pattern: 28 B/element.
    Lars,
    /// Two passes (NovoGrad): g read; then the momentum pattern: 24 B/element.
    Novograd,
}

impl Pattern {
    /// The probe's benchmark name: its bytes, and the rule for the two-pass patterns (LARS's
    /// 28 B are not Adam's).
    fn probe_id(self) -> String {
        match self {
            Pattern::Lamb => "probe-2pass-lamb-40B".to_string(),
            Pattern::Lars => "probe-2pass-lars-28B".to_string(),
            Pattern::Novograd => "probe-2pass-novograd-24B".to_string(),
            _ => format!("probe-{}B", self.bytes()),
        }
    }

    fn bytes(self) -> u64 {
        match self {
            Pattern::Sgd => 12,
            Pattern::Momentum => 20,
            Pattern::Adam => 28,
            Pattern::AmsGrad => 36,
            Pattern::ReadWrite => 8,
            Pattern::Swap => 16,
            Pattern::Read => 4,
            Pattern::Lamb => 40,
            Pattern::Lars => 28,
            Pattern::Novograd => 24,
        }
    }
}

/// The probe's own buffers (the gradient is shared with the kernels: read only).
struct ProbeBufs {
    p: Vec<f32>,
    m: Vec<f32>,
    v: Vec<f32>,
    x: Vec<f32>,
}

impl ProbeBufs {
    fn new(n: usize) -> ProbeBufs {
        ProbeBufs {
            p: data(n, 11, 2.0),
            m: data(n, 12, 0.01),
            v: data(n, 13, 0.01),
            x: data(n, 14, 0.01),
        }
    }
}

#[inline(always)]
fn probe_body(
    pat: Pattern,
    p: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    x: &mut [f32],
) -> f32 {
    match pat {
        Pattern::Sgd => {
            for (p, g) in p.iter_mut().zip(g) {
                *p += *g;
            }
        }
        Pattern::Momentum => {
            for ((p, g), b) in p.iter_mut().zip(g).zip(m.iter_mut()) {
                *b += *g;
                *p += *b;
            }
        }
        Pattern::Adam => {
            for (((p, g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                *m += *g;
                *v += *g;
                *p += *m - *v;
            }
        }
        Pattern::AmsGrad => {
            let it = p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut());
            for ((((p, g), m), v), x) in it.zip(x.iter_mut()) {
                *m += *g;
                *v += *g;
                *x = if *x > *v { *x } else { *v };
                *p += *m - *x;
            }
        }
        Pattern::ReadWrite => {
            for p in p.iter_mut() {
                *p = -*p;
            }
        }
        Pattern::Swap => {
            for (p, m) in p.iter_mut().zip(m.iter_mut()) {
                std::mem::swap(p, m);
            }
        }
        Pattern::Read => {
            let mut acc = [0.0f32; 16];
            let mut chunks = g.chunks_exact(16);
            for c in &mut chunks {
                for (a, x) in acc.iter_mut().zip(c) {
                    *a += *x * *x;
                }
            }
            return acc.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>();
        }
        Pattern::Lamb => {
            let mut acc = 0.0f32;
            for (((p, g), m), v) in p.iter().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                *m += *g;
                *v += *g;
                acc += *p;
            }
            for ((p, m), v) in p.iter_mut().zip(m.iter()).zip(v.iter()) {
                *p += *m - *v;
            }
            return acc;
        }
        Pattern::Lars | Pattern::Novograd => {
            let mut acc = 0.0f32;
            if pat == Pattern::Lars {
                for (p, g) in p.iter().zip(g) {
                    acc += *p + *g;
                }
            } else {
                acc = probe_body(Pattern::Read, p, g, m, v, x);
            }
            probe_body(Pattern::Momentum, p, g, m, v, x);
            return acc;
        }
    }
    0.0
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn probe_avx2(
    pat: Pattern,
    p: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    x: &mut [f32],
) -> f32 {
    probe_body(pat, p, g, m, v, x)
}

fn probe_one(
    pat: Pattern,
    p: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    x: &mut [f32],
) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is present on this CPU (checked just above).
        return unsafe { probe_avx2(pat, p, g, m, v, x) };
    }
    probe_body(pat, p, g, m, v, x)
}

/// The probe over all of `g.len()` elements on 1 or 2 threads (2: halves, scoped threads).
fn probe(pat: Pattern, threads: usize, b: &mut ProbeBufs, g: &[f32]) -> f32 {
    let n = g.len();
    if threads <= 1 || n < 1024 {
        return probe_one(pat, &mut b.p, g, &mut b.m, &mut b.v, &mut b.x);
    }
    let mid = (n / 2).next_multiple_of(16);
    let (p0, p1) = b.p.split_at_mut(mid);
    let (g0, g1) = g.split_at(mid);
    let (m0, m1) = b.m.split_at_mut(mid);
    let (v0, v1) = b.v.split_at_mut(mid);
    let (x0, x1) = b.x.split_at_mut(mid);
    std::thread::scope(|s| {
        let h = s.spawn(move || probe_one(pat, p1, g1, m1, v1, x1));
        probe_one(pat, p0, g0, m0, v0, x0) + h.join().unwrap()
    })
}

fn bench_probe(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    pat: Pattern,
    threads: usize,
    n: usize,
    bufs: &mut ProbeBufs,
    g: &[f32],
) {
    group.throughput(Throughput::Bytes(pat.bytes() * n as u64));
    group.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
        b.iter(|| probe(pat, threads, black_box(bufs), black_box(g)))
    });
    assert_finite(name, &bufs.p);
}

// ---------------------------------------------------------------------------------------------
// Kernels

/// The optimizer-owned state of one buffer, for the stateless kernels.
struct State {
    p: Vec<f32>,
    m: Vec<f32>,
    v: Vec<f32>,
    v_max: Vec<f32>,
}

impl State {
    fn new(n: usize) -> State {
        State {
            p: data(n, 1, 2.0),
            m: data(n, 3, 0.01),
            v: positive(n, 4),
            v_max: positive(n, 5),
        }
    }
}

fn plan(rule: Rule) -> Plan {
    Plan {
        clip_scale: None,
        clip_value: None,
        weight_decay: None,
        rule,
        sync_alpha: None,
    }
}

fn run_kernel(tier: Tier, plan: &Plan, st: &mut State, g: &[f32]) {
    fn pick(used: bool, s: &mut [f32]) -> &mut [f32] {
        if used {
            s
        } else {
            &mut []
        }
    }
    let (m, v, x) = plan.rule.state_used();
    kernels::apply(
        tier,
        plan,
        Buffers {
            param: black_box(&mut st.p),
            grad: black_box(g),
            m: pick(m, &mut st.m),
            v: pick(v, &mut st.v),
            v_max: pick(x, &mut st.v_max),
            slow: &mut [],
        },
    )
    .unwrap()
}

fn bench_adam(c: &mut Criterion) {
    let mut group = c.benchmark_group("adam");
    for n in sizes() {
        configure(&mut group, n);
        let g = data(n, 2, 0.1);
        let mut pb = ProbeBufs::new(n);
        bench_probe(&mut group, "probe", Pattern::Adam, 1, n, &mut pb, &g);
        drop(pb);
        let mut st = State::new(n);
        let plan = plan(Rule::for_step(&Base::adam(), 10, 1e-3));
        group.throughput(Throughput::Bytes(28 * n as u64));
        for tier in Tier::ALL.into_iter().filter(|t| t.is_available()) {
            group.bench_with_input(BenchmarkId::new(tier.name(), n), &n, |b, _| {
                b.iter(|| run_kernel(tier, &plan, &mut st, &g))
            });
        }
        assert_finite("adam", &st.p);
    }
    group.finish();
}

/// The probe pattern of a rule: p and g, plus each state buffer it keeps read and written.
fn pattern_of(base: &Base) -> Pattern {
    match base {
        Base::Lamb { .. } => return Pattern::Lamb,
        Base::Lars { .. } => return Pattern::Lars,
        Base::Novograd { .. } => return Pattern::Novograd,
        _ => {}
    }
    let (m, v, x) = base.state_used();
    match [m, v, x].iter().filter(|&&u| u).count() {
        0 => Pattern::Sgd,
        1 => Pattern::Momentum,
        2 => Pattern::Adam,
        _ => Pattern::AmsGrad,
    }
}

/// Every base rule with its defaults, and the variants that keep other state (a new rule of the
/// catalog is one row here).
fn rules() -> Vec<(&'static str, Base)> {
    let amsgrad = Base::Adam {
        b1: 0.9,
        b2: 0.999,
        eps: 1e-8,
        amsgrad: true,
    };
    let mut rms_full = Base::rmsprop();
    if let Base::RmsProp {
        momentum, centered, ..
    } = &mut rms_full
    {
        *momentum = 0.9;
        *centered = true;
    }
    vec![
        ("sgd", Base::sgd()),
        ("momentum", Base::momentum(0.9, false)),
        ("nesterov", Base::momentum(0.9, true)),
        ("adam", Base::adam()),
        ("amsgrad", amsgrad),
        ("adamw", Base::adamw()),
        ("radam", Base::radam()),
        ("adagrad", Base::adagrad()),
        ("rmsprop", Base::rmsprop()),
        ("rmsprop-centered-momentum", rms_full),
        ("adamax", Base::adamax()),
        ("nadam", Base::nadam()),
        ("lion", Base::lion()),
        ("adabelief", Base::adabelief()),
        ("yogi", Base::yogi()),
        ("adadelta", Base::adadelta()),
        ("rprop", Base::rprop()),
        ("lamb", Base::lamb()),
        ("lars", Base::lars()),
        ("novograd", Base::novograd()),
    ]
}

fn bench_rules(c: &mut Criterion) {
    let tier = flatopt::default_tier();
    let mut group = c.benchmark_group("rules");
    for n in sizes() {
        configure(&mut group, n);
        let g = data(n, 2, 0.1);
        let mut st = State::new(n);
        let mut pb = ProbeBufs::new(n);
        let mut probed = Vec::new();
        for (name, base) in rules() {
            let pat = pattern_of(&base);
            if !probed.contains(&pat) {
                let id = pat.probe_id();
                bench_probe(&mut group, &id, pat, 1, n, &mut pb, &g);
                probed.push(pat);
            }
            // The rules before may have left signed values where this one keeps a non-negative
            // average (Adadelta's m after Lion's momentum): the state in this rule's domain.
            for s in [&mut st.m, &mut st.v, &mut st.v_max] {
                s.iter_mut().for_each(|x| *x = x.abs());
            }
            // Step 10: past momentum's first step, and RAdam (b2 = 0.999) rectifies from step 6
            // on, so every rule takes its full path.
            let plan = plan(Rule::for_step(&base, 10, 1e-3));
            group.throughput(Throughput::Bytes(pat.bytes() * n as u64));
            group.bench_with_input(
                BenchmarkId::new(format!("{name}-{}", tier.name()), n),
                &n,
                |b, _| b.iter(|| run_kernel(tier, &plan, &mut st, &g)),
            );
            assert_finite(name, &st.p);
        }
    }
    group.finish();
}

/// Every rule through the optimizer on 2 threads, next to the 2-thread probe of its pattern.
fn bench_rules_threads(c: &mut Criterion) {
    let mut group = c.benchmark_group("rules-threads2");
    for n in sizes() {
        configure(&mut group, n);
        let g = data(n, 2, 0.1);
        let mut p = data(n, 1, 2.0);
        let mut pb = ProbeBufs::new(n);
        let mut probed = Vec::new();
        for (name, base) in rules() {
            let pat = pattern_of(&base);
            if !probed.contains(&pat) {
                let id = pat.probe_id();
                bench_probe(&mut group, &id, pat, 2, n, &mut pb, &g);
                probed.push(pat);
            }
            let cfg = Config::new(base, 1e-3)
                .nonfinite(NonFinitePolicy::Propagate)
                .threads(2);
            let mut opt = Optimizer::new(cfg).unwrap();
            opt.register(&[&p]).unwrap();
            group.throughput(Throughput::Bytes(pat.bytes() * n as u64));
            group.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
                b.iter(|| {
                    opt.step(&mut [black_box(&mut p)], &[black_box(&g)])
                        .unwrap()
                })
            });
            assert_finite(name, &p);
        }
    }
    group.finish();
}

fn bench_ops(c: &mut Criterion) {
    let tier = flatopt::default_tier();
    let mut group = c.benchmark_group("ops");
    for n in sizes() {
        configure(&mut group, n);
        let g = data(n, 2, 0.1);
        let mut pb = ProbeBufs::new(n);
        bench_probe(
            &mut group,
            "probe-8B",
            Pattern::ReadWrite,
            1,
            n,
            &mut pb,
            &g,
        );
        bench_probe(&mut group, "probe-16B", Pattern::Swap, 1, n, &mut pb, &g);
        bench_probe(&mut group, "probe-4B", Pattern::Read, 1, n, &mut pb, &g);
        drop(pb);
        let mut x = data(n, 6, 1.0);
        let mut y = data(n, 7, 1.0);
        group.throughput(Throughput::Bytes(8 * n as u64));
        // Alternating the sign keeps the values bounded.
        let mut sign = 1.0f32;
        group.bench_with_input(BenchmarkId::new("scale", n), &n, |b, _| {
            b.iter(|| {
                sign = -sign;
                kernels::apply_op(tier, Op::Scale(sign), black_box(&mut x), &mut []).unwrap()
            })
        });
        group.bench_with_input(BenchmarkId::new("clip_value", n), &n, |b, _| {
            b.iter(|| {
                kernels::apply_op(tier, Op::ClipValue(0.25), black_box(&mut x), &mut []).unwrap()
            })
        });
        group.throughput(Throughput::Bytes(16 * n as u64));
        group.bench_with_input(BenchmarkId::new("lookahead_sync", n), &n, |b, _| {
            b.iter(|| kernels::apply_op(tier, Op::Sync(0.5), black_box(&mut x), &mut y).unwrap())
        });
        group.throughput(Throughput::Bytes(4 * n as u64));
        group.bench_with_input(BenchmarkId::new("sum_squares", n), &n, |b, _| {
            b.iter(|| kernels::sum_squares(tier, black_box(&g)))
        });
        assert_finite("ops", &x);
        assert!(kernels::sum_squares(tier, &g).is_finite());
    }
    group.finish();
}

// ---------------------------------------------------------------------------------------------
// Through the engine, on 1 and 2 threads

fn bench_engine(c: &mut Criterion) {
    let mut group = c.benchmark_group("engine");
    for n in sizes() {
        configure(&mut group, n);
        let g = data(n, 2, 0.1);
        let mut pb = ProbeBufs::new(n);
        for threads in [1usize, 2] {
            let id = format!("probe-threads{threads}");
            bench_probe(&mut group, &id, Pattern::Adam, threads, n, &mut pb, &g);
        }
        drop(pb);
        let mut p = data(n, 1, 2.0);
        for (policy, name, bytes) in [
            (NonFinitePolicy::Propagate, "adam-propagate", 28),
            (NonFinitePolicy::Skip, "adam-skip", 32),
        ] {
            for threads in [1usize, 2] {
                let cfg = Config::new(Base::adam(), 1e-3)
                    .nonfinite(policy)
                    .threads(threads);
                let mut opt = Optimizer::new(cfg).unwrap();
                opt.register(&[&p]).unwrap();
                group.throughput(Throughput::Bytes(bytes * n as u64));
                group.bench_with_input(
                    BenchmarkId::new(format!("{name}-threads{threads}"), n),
                    &n,
                    |b, _| {
                        b.iter(|| {
                            opt.step(&mut [black_box(&mut p)], &[black_box(&g)])
                                .unwrap()
                        })
                    },
                );
            }
        }
        assert_finite("engine", &p);
    }
    group.finish();
}

/// The full pipeline: Lookahead(Adam) with global-norm clipping and weight decay, through the
/// engine, on 1 and 2 threads. Bytes: 28 per element for the update, 4 for the norm pass, and
/// 8/k for the syncs (k = 5).
fn bench_pipeline(c: &mut Criterion) {
    let mut group = c.benchmark_group("pipeline");
    for n in sizes() {
        configure(&mut group, n);
        let g = data(n, 6, 0.1);
        let mut pb = ProbeBufs::new(n);
        for threads in [1usize, 2] {
            let id = format!("probe-threads{threads}");
            bench_probe(&mut group, &id, Pattern::Adam, threads, n, &mut pb, &g);
        }
        drop(pb);
        group.throughput(Throughput::Bytes(((32.0 + 8.0 / 5.0) * n as f64) as u64));
        let mut p = data(n, 5, 2.0);
        for threads in [1usize, 2] {
            let cfg = Config::new(Base::adam(), 1e-3)
                .lookahead(5, 0.5)
                .clip_norm(1.0)
                .weight_decay(1e-4)
                .threads(threads);
            let mut opt = Optimizer::new(cfg).unwrap();
            opt.register(&[&p]).unwrap();
            group.bench_with_input(
                BenchmarkId::new(format!("threads{threads}"), n),
                &n,
                |b, _| {
                    b.iter(|| {
                        opt.step(&mut [black_box(&mut p)], &[black_box(&g)])
                            .unwrap()
                    })
                },
            );
        }
        assert_finite("pipeline", &p);
    }
    group.finish();
}

/// Sets or clears FTZ and DAZ on this thread, as a host would (x86-64 only).
#[cfg(target_arch = "x86_64")]
fn host_flush(on: bool) {
    const FTZ_DAZ: u32 = (1 << 15) | (1 << 6);
    let mut csr: u32 = 0;
    // SAFETY: `stmxcsr` / `ldmxcsr` store / load the 4-byte MXCSR at the address of `csr`, a
    // live aligned local; only the FTZ and DAZ bits change, so no reserved bit is set. The
    // bench plays a host that changed its mode, and clears it again after measuring.
    unsafe {
        std::arch::asm!("stmxcsr [{}]", in(reg) &mut csr, options(nostack, preserves_flags));
        csr = if on { csr | FTZ_DAZ } else { csr & !FTZ_DAZ };
        std::arch::asm!("ldmxcsr [{}]", in(reg) &csr, options(nostack, preserves_flags, readonly));
    }
}

fn bench_fpmode(c: &mut Criterion) {
    let mut group = c.benchmark_group("fpmode");
    group.bench_function("guard-host-default", |b| {
        b.iter(|| drop(black_box(flatopt::simd::FpMode::enter())))
    });
    #[cfg(target_arch = "x86_64")]
    {
        host_flush(true);
        group.bench_function("guard-host-ftz-daz", |b| {
            b.iter(|| drop(black_box(flatopt::simd::FpMode::enter())))
        });
        host_flush(false);
    }
    group.finish();
}

criterion_group!(
    benches,
    bench_fpmode,
    bench_adam,
    bench_rules,
    bench_rules_threads,
    bench_ops,
    bench_engine,
    bench_pipeline
);
criterion_main!(benches);
