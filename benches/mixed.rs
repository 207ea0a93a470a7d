//! Mixed precision at memory bandwidth (issue 15): one Adam step over `MIXED_BENCH_N` (default
//! 1e8) elements on 2 threads with bf16 gradients and a bf16 copy of the parameters written in
//! the pass (28 bytes per element: p, m, v read and written, 2-byte gradient read, 2-byte copy
//! written), against a bandwidth probe with that access pattern (the same six streams, trivial
//! arithmetic, the buffer in halves on 2 scoped threads) and against the f32 step (28 bytes
//! too: a 4-byte gradient, no copy). Interleaved, medians. `cargo bench --bench mixed`.
//! `MIXED_BENCH_PROPAGATE=1` drops the norm / non-finite pass (policy `propagate`), leaving
//! the fused pass alone, as the probe is.
//!
//! `cargo bench --bench mixed -- --in-cache`: the in-cache cost per element instead (one
//! thread, `MIXED_BENCH_N` default 8192 elements, every buffer in L1/L2): the stateless Adam
//! pass with f32 gradients, with bf16 / fp16 gradients, with a 16-bit copy, with a loss scale
//! (a power of two: one multiplication; any other: a division), the conversions alone and the
//! probe's loop, on the default tier and on `FLATOPT_SIMD`'s if set. What the mixed pass adds
//! over the f32 one is what it costs once memory is not the bound.

use flatopt::kernels::{self, Grad, Half, MixedBuffers, ParamCopy, Plan, Rule};
use flatopt::{Base, Config, Optimizer, Tier};
use std::hint::black_box;
use std::time::Instant;

const REPEATS: usize = 9;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// The probe's body over one half: the streams of the mixed Adam step.
fn probe_body(p: &mut [f32], g: &[u16], m: &mut [f32], v: &mut [f32], c: &mut [u16]) {
    let it = p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut());
    for ((((p, &g), m), v), c) in it.zip(c.iter_mut()) {
        let g = f32::from_bits(u32::from(g) << 16);
        *m += g;
        *v += g;
        *p += *m - *v;
        *c = (p.to_bits() >> 16) as u16;
    }
}

fn probe(p: &mut [f32], g: &[u16], m: &mut [f32], v: &mut [f32], c: &mut [u16]) {
    let mid = p.len() / 2;
    let (p0, p1) = p.split_at_mut(mid);
    let (g0, g1) = g.split_at(mid);
    let (m0, m1) = m.split_at_mut(mid);
    let (v0, v1) = v.split_at_mut(mid);
    let (c0, c1) = c.split_at_mut(mid);
    std::thread::scope(|s| {
        s.spawn(|| probe_body(p0, g0, m0, v0, c0));
        probe_body(p1, g1, m1, v1, c1);
    });
}

fn secs(f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64()
}

/// Nanoseconds per element of `f` over `n` elements: the best of 15 rounds of enough calls
/// for about 20 ms each.
fn ns_per_elem(n: usize, mut f: impl FnMut()) -> f64 {
    let t = Instant::now();
    let mut calls = 0usize;
    while t.elapsed().as_secs_f64() < 0.02 {
        f();
        calls += 1;
    }
    (0..15)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..calls {
                f();
            }
            t.elapsed().as_secs_f64() * 1e9 / (calls * n) as f64
        })
        .fold(f64::INFINITY, f64::min)
}

/// The in-cache profile (`--in-cache`): see the module documentation.
fn in_cache(n: usize) {
    let plan = Plan {
        clip_scale: None,
        clip_value: None,
        weight_decay: None,
        rule: Rule::for_step(&Base::adam(), 3, 1e-3),
        sync_alpha: None,
    };
    let init =
        |k: usize| -> Vec<f32> { (0..n).map(|i| ((i * 7 + k) % 101) as f32 * 1e-3).collect() };
    let (mut p, mut m, mut v) = (init(1), init(2), init(4));
    let g32 = init(3);
    let (mut gb, mut gh) = (vec![0u16; n], vec![0u16; n]);
    let (mut cb, mut ch) = (vec![0u16; n], vec![0u16; n]);
    let mut wide = vec![0f32; n];
    let mut tiers = vec![flatopt::default_tier()];
    if tiers[0] != Tier::Scalar {
        tiers.push(Tier::Scalar);
    }
    for tier in tiers {
        kernels::narrow_from_f32(tier, Half::Bf16, &g32, &mut gb).unwrap();
        kernels::narrow_from_f32(tier, Half::F16, &g32, &mut gh).unwrap();
        println!(
            "{n} elements in cache, one thread, tier {}: ns per element (best of 15)",
            tier.name()
        );
        let row = |name: &str, t: f64| println!("  {name:<34} {t:6.3}");
        let mut pass = |grad: Grad<'_>, copy: Option<(Half, &mut [u16])>, scale: f32| {
            let mut copy = copy;
            ns_per_elem(n, || {
                let b = MixedBuffers {
                    param: &mut p,
                    grad,
                    m: &mut m,
                    v: &mut v,
                    v_max: &mut [],
                    slow: &mut [],
                    copy: copy
                        .as_mut()
                        .map(|(half, out)| ParamCopy { half: *half, out }),
                };
                kernels::apply_mixed(tier, &plan, scale, b).unwrap();
            })
        };
        let rows = [
            ("Adam, f32 grads", pass(Grad::F32(&g32), None, 1.0)),
            (
                "Adam, f32 grads / 1024",
                pass(Grad::F32(&g32), None, 1024.0),
            ),
            (
                "Adam, f32 grads, bf16 copy",
                pass(Grad::F32(&g32), Some((Half::Bf16, &mut cb)), 1.0),
            ),
            ("Adam, bf16 grads", pass(Grad::Bf16(&gb), None, 1.0)),
            (
                "Adam, bf16 grads, bf16 copy",
                pass(Grad::Bf16(&gb), Some((Half::Bf16, &mut cb)), 1.0),
            ),
            ("Adam, fp16 grads", pass(Grad::F16(&gh), None, 1.0)),
            (
                "Adam, fp16 grads / 1024, fp16 copy",
                pass(Grad::F16(&gh), Some((Half::F16, &mut ch)), 1024.0),
            ),
            (
                "Adam, fp16 grads / 1000, fp16 copy",
                pass(Grad::F16(&gh), Some((Half::F16, &mut ch)), 1000.0),
            ),
        ];
        for (name, t) in rows {
            row(name, t);
        }
        for half in Half::ALL {
            let src = if half == Half::Bf16 { &gb } else { &gh };
            let t = ns_per_elem(n, || {
                kernels::widen_to_f32(tier, half, src, &mut wide).unwrap()
            });
            row(&format!("widen {} alone", half.name()), t);
            let dst = if half == Half::Bf16 { &mut cb } else { &mut ch };
            let t = ns_per_elem(n, || kernels::narrow_from_f32(tier, half, &p, dst).unwrap());
            row(&format!("narrow {} alone", half.name()), t);
        }
        let t = ns_per_elem(n, || probe_body(&mut p, &gb, &mut m, &mut v, &mut cb));
        row("probe loop (bf16 g, bf16 copy)", t);
        // Through the engine: what the non-finite check adds (a scan of the 16-bit
        // gradients' exponent bits, or of the f32 ones) over the pass alone.
        for (name, policy) in [
            ("propagate", flatopt::NonFinitePolicy::Propagate),
            ("skip", flatopt::NonFinitePolicy::Skip),
        ] {
            let cfg = Config::new(Base::adam(), 1e-3).nonfinite(policy).tier(tier);
            let mut opt = Optimizer::new(cfg).unwrap();
            opt.register(&[&p]).unwrap();
            let t = ns_per_elem(n, || {
                black_box(opt.step(&mut [&mut p], &[&g32]).unwrap());
            });
            row(&format!("engine, f32 grads, {name}"), t);
            for (half, g) in [(Half::Bf16, &gb), (Half::F16, &gh)] {
                let grad = if half == Half::Bf16 {
                    Grad::Bf16(g)
                } else {
                    Grad::F16(g)
                };
                let t = ns_per_elem(n, || {
                    black_box(
                        opt.step_mixed(&mut [&mut p], &[grad], &mut [], None)
                            .unwrap(),
                    );
                });
                row(&format!("engine, {} grads, {name}", half.name()), t);
            }
        }
        black_box((&p, &m, &v, &cb, &ch, &wide));
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if std::env::args().any(|a| a == "--in-cache") {
        let n = std::env::var("MIXED_BENCH_N")
            .ok()
            .and_then(|s| s.parse().ok());
        return in_cache(n.unwrap_or(8192));
    }
    // `cargo bench` passes `--bench`; under `cargo test` (no flag, or `--test`) a small smoke
    // run only, as criterion does.
    let bench = std::env::args().any(|a| a == "--bench");
    let n: usize = std::env::var("MIXED_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if bench { 100_000_000 } else { 10_000 });
    let mut cfg = Config::new(Base::adam(), 1e-3).threads(2);
    if std::env::var_os("MIXED_BENCH_PROPAGATE").is_some() {
        cfg = cfg.nonfinite(flatopt::NonFinitePolicy::Propagate);
    }
    let init =
        |k: usize| -> Vec<f32> { (0..n).map(|i| ((i * 7 + k) % 101) as f32 * 1e-3).collect() };
    let g32 = init(3);
    let g16: Vec<u16> = g32.iter().map(|x| (x.to_bits() >> 16) as u16).collect();

    let mut p_mixed = init(1);
    let mut copy = vec![0u16; n];
    let mut mixed = Optimizer::new(cfg.clone()).unwrap();
    mixed.register(&[&p_mixed]).unwrap();
    let mut p_f32 = init(1);
    let mut plain = Optimizer::new(cfg).unwrap();
    plain.register(&[&p_f32]).unwrap();
    let (mut pp, mut pm, mut pv, mut pc) = (init(1), init(2), init(4), vec![0u16; n]);

    let (mut tm, mut tf, mut tp) = (Vec::new(), Vec::new(), Vec::new());
    let repeats = if bench { REPEATS } else { 1 };
    for r in 0..=repeats {
        let a = secs(|| {
            let mut copies = [Some(ParamCopy {
                half: Half::Bf16,
                out: &mut copy,
            })];
            black_box(
                mixed
                    .step_mixed(&mut [&mut p_mixed], &[Grad::Bf16(&g16)], &mut copies, None)
                    .unwrap(),
            );
        });
        let b = secs(|| {
            black_box(plain.step(&mut [&mut p_f32], &[&g32]).unwrap());
        });
        let c = secs(|| probe(&mut pp, &g16, &mut pm, &mut pv, &mut pc));
        black_box((&pp, &pc));
        if r > 0 {
            // The first round warms the pages up.
            tm.push(a);
            tf.push(b);
            tp.push(c);
        }
    }
    let gbs = |t: f64| 28.0 * n as f64 / t / 1e9;
    let (m, f, p) = (median(tm.clone()), median(tf.clone()), median(tp.clone()));
    let spread = |v: &[f64]| {
        let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
        let hi = v.iter().cloned().fold(0.0, f64::max);
        hi / lo
    };
    println!("{n} elements, Adam, 2 threads, medians of {repeats} interleaved rounds");
    println!(
        "bf16 grads + bf16 copy: {:.1} ms ({:.1} GB/s at 28 B/elem; max/min {:.2})",
        m * 1e3,
        gbs(m),
        spread(&tm)
    );
    println!(
        "probe, same streams:    {:.1} ms ({:.1} GB/s; max/min {:.2})",
        p * 1e3,
        gbs(p),
        spread(&tp)
    );
    println!(
        "f32 grads, no copy:     {:.1} ms ({:.1} GB/s; max/min {:.2})",
        f * 1e3,
        gbs(f),
        spread(&tf)
    );
    println!("throughput ratio mixed/probe: {:.3}", p / m);
    println!("throughput ratio mixed/f32:   {:.3}", f / m);
}
