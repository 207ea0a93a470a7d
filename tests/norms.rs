//! The rules with per-buffer norms (LAMB, LARS, NovoGrad; `kernels::trust`): an independent
//! f64 model of docs/numerics.md ("Per-buffer norms") against the engine, every tier and thread
//! count bit for bit against the scalar tier on one thread (buffers large enough for the pool
//! and for several sum-of-squares blocks), the stateless kernel against the engine, checkpoints,
//! hostile inputs, the sharded protocol (shards and their norm partials bit for bit one process,
//! any state precision) and the refusals (split step, the elementwise sharded step). Compressed
//! state against its definition: `tests/state.rs`.

mod common;

use common::perbuffer::{
    data, optimizer, stateless_is_the_engine, step, tiers_and_threads_agree, within_model, Shape,
    Trajectory,
};
use common::{bits, trust_bases as rows};
use flatopt::kernels::StateDtype;
use flatopt::{Base, Config, Error, Optimizer, Outcome, Schedule, Tier};

/// The pipelines: plain, and clipping + coupled decay + Lookahead + a schedule.
fn pipelines() -> Vec<common::Variant> {
    vec![
        ("plain", |c| c),
        ("clip_decay_lookahead_schedule", |c| {
            let base_lr = c.lr.base_lr();
            Config {
                lr: Schedule::exponential(base_lr, 0.97),
                ..c.clip_norm(0.5).weight_decay(1e-3).lookahead(3, 0.5)
            }
        }),
    ]
}

/// Runs `cfg` over the data (no shapes); the parameters after every step.
fn run(cfg: Config, params: &[Vec<f32>], grads: &[Vec<Vec<f32>>]) -> Trajectory<f32> {
    common::perbuffer::run(cfg, &vec![None; params.len()], params, grads)
}

fn norm(x: &[f64]) -> f64 {
    x.iter().map(|v| v * v).sum::<f64>().sqrt()
}

/// `(lr * ratio)` of a trust ratio as optax's `scale_by_trust_ratio` has it.
fn ratio(tc: f64, eps: f64, pn: f64, un: f64) -> f64 {
    if pn == 0.0 || un == 0.0 {
        1.0
    } else {
        tc * pn / (un + eps)
    }
}

/// The f64 model of docs/numerics.md: every step's parameters.
fn model(cfg: &Config, params: &[Vec<f32>], grads: &[Vec<Vec<f32>>]) -> Vec<Vec<Vec<f64>>> {
    let mut p: Vec<Vec<f64>> = params
        .iter()
        .map(|x| x.iter().map(|&v| f64::from(v)).collect())
        .collect();
    let mut m: Vec<Vec<f64>> = p.iter().map(|x| vec![0.0; x.len()]).collect();
    let mut v = m.clone();
    let mut nu = vec![0.0f64; p.len()];
    let mut slow = p.clone();
    let mut out = Vec::new();
    for (t0, gs) in grads.iter().enumerate() {
        let t = (t0 + 1) as i32;
        let lr = cfg.lr.base_lr()
            * match cfg.lr {
                Schedule::Exponential { gamma, .. } => gamma.powi(t - 1),
                _ => 1.0,
            };
        let mut g: Vec<Vec<f64>> = gs
            .iter()
            .map(|x| x.iter().map(|&v| f64::from(v)).collect())
            .collect();
        if let Some(c) = cfg.grad_clip_norm {
            let n = g.iter().map(|x| norm(x).powi(2)).sum::<f64>().sqrt();
            if n > c {
                g.iter_mut().flatten().for_each(|x| *x *= c / n);
            }
        }
        for (gb, pb) in g.iter_mut().zip(&p) {
            for (x, &q) in gb.iter_mut().zip(pb) {
                *x += cfg.weight_decay * q;
            }
        }
        for b in 0..p.len() {
            let (pb, gb, mb, vb) = (&mut p[b], &g[b], &mut m[b], &mut v[b]);
            match cfg.base {
                Base::Lamb {
                    b1,
                    b2,
                    eps,
                    eps_root,
                    weight_decay,
                } => {
                    let mut u = vec![0.0; pb.len()];
                    for i in 0..pb.len() {
                        mb[i] = b1 * mb[i] + (1.0 - b1) * gb[i];
                        vb[i] = b2 * vb[i] + (1.0 - b2) * gb[i] * gb[i];
                        let mh = mb[i] / (1.0 - b1.powi(t));
                        let vh = vb[i] / (1.0 - b2.powi(t));
                        u[i] = mh / ((vh + eps_root).sqrt() + eps) + weight_decay * pb[i];
                    }
                    let r = ratio(1.0, 0.0, norm(pb), norm(&u));
                    for i in 0..pb.len() {
                        pb[i] -= lr * r * u[i];
                    }
                }
                Base::Lars {
                    momentum,
                    nesterov,
                    weight_decay,
                    trust_coefficient,
                    eps,
                } => {
                    let x: Vec<f64> = (0..pb.len())
                        .map(|i| gb[i] + weight_decay * pb[i])
                        .collect();
                    let r = ratio(trust_coefficient, eps, norm(pb), norm(&x));
                    for i in 0..pb.len() {
                        let s = lr * r * x[i];
                        mb[i] = momentum * mb[i] + s;
                        pb[i] -= if nesterov {
                            s + momentum * mb[i]
                        } else {
                            mb[i]
                        };
                    }
                }
                Base::Novograd {
                    b1,
                    b2,
                    eps,
                    eps_root,
                    weight_decay,
                } => {
                    let s = norm(gb).powi(2);
                    nu[b] = if t == 1 {
                        s
                    } else {
                        b2 * nu[b] + (1.0 - b2) * s
                    };
                    let d = (nu[b] + eps_root).sqrt() + eps;
                    for i in 0..pb.len() {
                        mb[i] = b1 * mb[i] + gb[i] / d + weight_decay * pb[i];
                        pb[i] -= lr * mb[i];
                    }
                }
                _ => unreachable!("a row of rows()"),
            }
        }
        if let Some(la) = cfg.lookahead {
            if (t as u64).is_multiple_of(la.sync_period) {
                for (pb, sb) in p.iter_mut().zip(slow.iter_mut()) {
                    for (x, s) in pb.iter_mut().zip(sb.iter_mut()) {
                        *s += la.alpha * (*x - *s);
                        *x = *s;
                    }
                }
            }
        }
        out.push(p.clone());
    }
    out
}

/// Every row under every pipeline: the engine within 1e-4 (relative, plus 1e-5 absolute) of
/// the f64 model at every step, with buffers of one element, a vector's worth, and several
/// sum-of-squares blocks.
#[test]
fn engine_follows_the_f64_model() {
    let sizes = [1, 7, 33, 1000, 9000];
    let (params, grads) = data(&sizes, 30, 5);
    for (bname, base, lr) in rows() {
        for (pname, f) in pipelines() {
            let cfg = f(Config::new(base, lr).tier(Tier::Scalar));
            let got = run(cfg.clone(), &params, &grads);
            let want = model(&cfg, &params, &grads);
            let shapes: Vec<Shape> = vec![None; sizes.len()];
            within_model(&format!("{bname}/{pname}"), &shapes, &got, &want);
        }
    }
}

/// Every tier and 1-3 threads give the scalar tier's single-threaded bits, with buffers large
/// enough for the pool to split the pass before the update over several tasks.
#[test]
fn every_tier_and_thread_count_is_bit_identical() {
    let sizes = [600_001, 77, 9000];
    let (params, grads) = data(&sizes, 3, 9);
    let shapes: Vec<Shape> = vec![None; sizes.len()];
    for (bname, base, lr) in rows() {
        for (pname, f) in pipelines() {
            let cfg = f(Config::new(base, lr));
            tiers_and_threads_agree(&format!("{bname}/{pname}"), &cfg, &shapes, &params, &grads);
        }
    }
}

/// The stateless kernel (one buffer, the caller's state) gives the engine's bits.
#[test]
fn stateless_kernel_is_the_engine() {
    let (params, grads) = data(&[5000], 6, 13);
    let grads: Vec<Vec<f32>> = grads.into_iter().map(|g| g[0].clone()).collect();
    for (bname, base, lr) in rows() {
        stateless_is_the_engine(bname, base, lr, &params[0], &grads);
    }
}

/// A checkpoint carries the state (NovoGrad's per-buffer second moment too): a loaded
/// optimizer continues bit for bit; loading into another rule is refused.
#[test]
fn checkpoints_round_trip_and_refuse_other_rules() {
    let (params, grads) = data(&[300, 5000], 8, 17);
    for (bname, base, lr) in rows() {
        let cfg = Config::new(base, lr).clip_norm(0.5);
        let shapes: Vec<Shape> = vec![None; params.len()];
        let mut ps = params.clone();
        let mut o = optimizer(cfg.clone(), &ps, &shapes);
        for g in &grads[..4] {
            step(&mut o, &mut ps, g);
        }
        let saved = o.save();
        let mut ps2 = ps.clone();
        let mut o2 = optimizer(cfg.clone(), &ps2, &shapes);
        o2.load(&saved).unwrap();
        for g in &grads[4..] {
            step(&mut o, &mut ps, g);
            step(&mut o2, &mut ps2, g);
        }
        for (a, b) in ps.iter().zip(&ps2) {
            assert_eq!(bits(a), bits(b), "{bname}: loaded run");
        }
        let mut other = Optimizer::new(Config::new(Base::adam(), 1e-3)).unwrap();
        other
            .register(&ps.iter().map(|p| p.as_slice()).collect::<Vec<_>>())
            .unwrap();
        let e = other.load(&saved).unwrap_err();
        assert!(format!("{e}").contains(base.name()), "{bname}: {e}");
    }
}

/// Hostile inputs: all-zero parameters and gradients (a zero norm: ratio 1, as optax), a
/// non-finite gradient (the update skipped, nothing changed).
#[test]
fn zero_norms_and_non_finite_gradients() {
    for (bname, base, lr) in rows() {
        // Zero parameters and zero gradients: finite, and zero stays zero.
        let mut p = vec![0.0f32; 100];
        let g = vec![0.0f32; 100];
        let mut o = Optimizer::new(Config::new(base, lr)).unwrap();
        o.register(&[&p]).unwrap();
        for _ in 0..3 {
            o.step(&mut [&mut p], &[&g]).unwrap();
        }
        assert!(p.iter().all(|x| *x == 0.0), "{bname}: zero in, {p:?}");
        // Zero parameters, non-zero gradients: the ratio is 1, the step is finite.
        let g: Vec<f32> = (0..100).map(|i| (i as f32 - 50.0) * 1e-3).collect();
        let mut o = Optimizer::new(Config::new(base, lr)).unwrap();
        o.register(&[&p]).unwrap();
        o.step(&mut [&mut p], &[&g]).unwrap();
        assert!(
            p.iter().all(|x| x.is_finite()) && p.iter().any(|x| *x != 0.0),
            "{bname}: zero params"
        );
        // A NaN gradient: skipped, parameters and state unchanged.
        let before = p.clone();
        let moments = |o: &Optimizer| {
            let (m, v, _) = o.moments(0).unwrap();
            (bits(m), bits(v))
        };
        let state = moments(&o);
        let mut bad = g.clone();
        bad[7] = f32::NAN;
        let r = o.step(&mut [&mut p], &[&bad]).unwrap();
        assert!(
            matches!(r, Outcome::Skipped { index: 7, .. }),
            "{bname}: {r:?}"
        );
        assert_eq!(bits(&p), bits(&before), "{bname}: params after a skip");
        assert!(moments(&o) == state, "{bname}: state after a skip");
    }
}

/// The split and sharded steps are refused with an error naming the rule; nothing changes.
#[test]
fn split_and_sharded_steps_are_refused() {
    for (bname, base, lr) in rows() {
        let mut p = vec![0.5f32; 64];
        let g = vec![0.1f32; 64];
        let mut o = Optimizer::new(Config::new(base, lr)).unwrap();
        o.register(&[&p]).unwrap();
        let before = o.save();
        let named = |e: Error, what: &str| {
            let s = format!("{e}");
            assert!(s.contains(what) && s.contains(base.name()), "{bname}: {s}");
        };
        named(o.begin_step(&[&g]).unwrap_err(), "begin_step");
        named(
            o.begin_step_with_sum_squares(Some(1.0), |_| None)
                .unwrap_err(),
            "begin_step_with_sum_squares",
        );
        named(
            o.step_with_sum_squares(&mut [&mut p], &[&g], 1.0)
                .unwrap_err(),
            "step_with_sum_squares",
        );
        assert_eq!(o.save(), before, "{bname}: nothing changed");
        assert!(p.iter().all(|x| *x == 0.5));
        // The whole update still works afterwards.
        o.step(&mut [&mut p], &[&g]).unwrap();
    }
}

/// Sharded updates (phase one: the global sum of squares; two: the pass before the update's
/// block sums, `norm_partials_with_sum_squares`; three: `step_with_sum_squares_and_norms` with
/// each buffer's totals added in global block order) over 1, 2 and 3 shards on block
/// boundaries give one process's bits, for every row under every pipeline, f32, bf16 and int8
/// state, 1 and 2 threads.
#[test]
fn shards_match_one_process() {
    let n = 5 * 4096 + 77;
    let cuts: [&[usize]; 3] = [&[], &[2 * 4096], &[4096, 3 * 4096]];
    let (params, grads) = data(&[n], 6, 19);
    for (bname, base, lr) in rows() {
        for (pname, f) in pipelines() {
            for dtype in [StateDtype::F32, StateDtype::Bf16, StateDtype::Int8] {
                let cfg = Config {
                    state_dtype: dtype,
                    state_seed: 5,
                    ..f(Config::new(base, lr))
                };
                let want = run(cfg.clone(), &params, &grads);
                for (c, &cut) in cuts.iter().enumerate() {
                    let bounds: Vec<usize> = [0]
                        .into_iter()
                        .chain(cut.iter().copied())
                        .chain([n])
                        .collect();
                    let ranges: Vec<(usize, usize)> =
                        bounds.windows(2).map(|w| (w[0], w[1])).collect();
                    let threads = 1 + c % 2;
                    let mut p = params[0].clone();
                    let mut shards: Vec<Optimizer> = ranges
                        .iter()
                        .map(|&(a, b)| {
                            let mut o = Optimizer::new(Config {
                                state_index_offset: a as u64,
                                ..cfg.clone().threads(threads)
                            })
                            .unwrap();
                            o.register(&[&p[a..b]]).unwrap();
                            o
                        })
                        .collect();
                    for (t, g) in grads.iter().enumerate() {
                        let g = &g[0];
                        let mut sum = 0.0;
                        for (o, &(a, b)) in shards.iter().zip(&ranges) {
                            let mut part = vec![0.0; o.sum_squares_block_count()];
                            o.sum_squares_partials(&[&g[a..b]], &mut part).unwrap();
                            sum = part.iter().fold(sum, |acc, x| acc + x);
                        }
                        let mut norms = [0.0f64; 2];
                        for (o, &(a, b)) in shards.iter_mut().zip(&ranges) {
                            let mut part = vec![0.0; o.norm_partial_count()];
                            o.norm_partials_with_sum_squares(
                                &mut [&mut p[a..b]],
                                &[&g[a..b]],
                                sum,
                                &mut part,
                            )
                            .unwrap();
                            for s in part.chunks_exact(2) {
                                norms[0] += s[0];
                                norms[1] += s[1];
                            }
                        }
                        for (o, &(a, b)) in shards.iter_mut().zip(&ranges) {
                            let r = o
                                .step_with_sum_squares_and_norms(
                                    &mut [&mut p[a..b]],
                                    &[&g[a..b]],
                                    &mut [],
                                    sum,
                                    &norms,
                                )
                                .unwrap();
                            assert!(matches!(r, Outcome::Applied { .. }));
                        }
                        assert!(
                            bits(&p) == bits(&want[t][0]),
                            "{bname}/{pname}/{dtype:?}: {} shards, step {}",
                            ranges.len(),
                            t + 1
                        );
                    }
                }
            }
        }
    }
}

/// The sharded phases refuse bad input before changing anything: norms of the wrong count,
/// negative or non-finite; partials of the wrong length; the elementwise rules.
#[test]
fn sharded_phases_refuse_bad_input() {
    let (params, grads) = data(&[5000], 1, 23);
    for (bname, base, lr) in rows() {
        let mut p = params[0].clone();
        let g: &[f32] = &grads[0][0];
        let mut o = Optimizer::new(Config::new(base, lr)).unwrap();
        o.register(&[&p]).unwrap();
        let before = o.save();
        let mut part = vec![0.0; o.norm_partial_count() + 1];
        let e = o
            .norm_partials_with_sum_squares(&mut [&mut p], &[g], 1.0, &mut part)
            .unwrap_err();
        assert!(matches!(e, Error::LengthMismatch { .. }), "{bname}: {e}");
        for (norms, what) in [
            (&[1.0][..], "two per registered buffer"),
            (&[1.0, -1.0][..], "-1"),
            (&[f64::NAN, 1.0][..], "NaN"),
            (&[1.0, f64::INFINITY][..], "inf"),
        ] {
            let e = o
                .step_with_sum_squares_and_norms(&mut [&mut p], &[g], &mut [], 1.0, norms)
                .unwrap_err();
            assert!(format!("{e}").contains(what), "{bname}: {e}");
        }
        assert_eq!(o.save(), before, "{bname}: nothing changed");
        assert_eq!(bits(&p), bits(&params[0]), "{bname}: params unchanged");
    }
    let mut p = params[0].clone();
    let mut adam = Optimizer::new(Config::new(Base::adam(), 1e-3)).unwrap();
    adam.register(&[&p]).unwrap();
    let mut part = vec![0.0; adam.norm_partial_count()];
    let e = adam
        .norm_partials_with_sum_squares(&mut [&mut p], &[&grads[0][0][..]], 1.0, &mut part)
        .unwrap_err();
    assert!(format!("{e}").contains("adam"), "{e}");
}
