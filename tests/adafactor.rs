//! Adafactor (`kernels::factored`): an independent f64 model of docs/numerics.md ("Adafactor")
//! against the engine for factored and unfactored buffers, every tier and thread count bit for
//! bit against the scalar tier on one thread, the stateless kernel against the engine,
//! checkpoints (round trip, refusal of another rule and of another shape), hostile fields and
//! shapes, and the refusals (split and sharded steps, compressed state).

mod common;

use common::bits;
use common::perbuffer::{
    data, optimizer, run, stateless_is_the_engine, step, tiers_and_threads_agree, within_model,
    Shape,
};
use flatopt::kernels::StateDtype;
use flatopt::{Base, Config, Error, Optimizer, Outcome, Schedule, Tier};

/// PyTorch's `torch.optim.Adafactor` (the catalog's defaults).
fn torch() -> Base {
    Base::adafactor()
}

/// optax's `adafactor` with its defaults and the given momentum and weight decay rate.
fn optax(momentum: f64, weight_decay: f64) -> Base {
    match torch() {
        Base::Adafactor {
            decay_rate,
            decay_offset,
            eps_scale,
            clipping_threshold,
            multiply_by_parameter_scale,
            ..
        } => Base::Adafactor {
            decay_rate,
            decay_offset,
            eps_root: 1e-30,
            eps: 0.0,
            eps_scale,
            clipping_threshold,
            multiply_by_parameter_scale,
            relative_step: false,
            momentum,
            weight_decay,
            weight_decay_by_lr: false,
        },
        _ => unreachable!(),
    }
}

/// `base` with its fields changed by `f`.
fn with(base: Base, f: impl FnOnce(&mut AdafactorFields)) -> Base {
    let Base::Adafactor {
        decay_rate,
        decay_offset,
        eps_root,
        eps,
        eps_scale,
        clipping_threshold,
        multiply_by_parameter_scale,
        relative_step,
        momentum,
        weight_decay,
        weight_decay_by_lr,
    } = base
    else {
        unreachable!()
    };
    let mut a = AdafactorFields {
        decay_rate,
        decay_offset,
        eps_root,
        eps,
        eps_scale,
        clipping_threshold,
        multiply_by_parameter_scale,
        relative_step,
        momentum,
        weight_decay,
        weight_decay_by_lr,
    };
    f(&mut a);
    Base::Adafactor {
        decay_rate: a.decay_rate,
        decay_offset: a.decay_offset,
        eps_root: a.eps_root,
        eps: a.eps,
        eps_scale: a.eps_scale,
        clipping_threshold: a.clipping_threshold,
        multiply_by_parameter_scale: a.multiply_by_parameter_scale,
        relative_step: a.relative_step,
        momentum: a.momentum,
        weight_decay: a.weight_decay,
        weight_decay_by_lr: a.weight_decay_by_lr,
    }
}

/// The fields of `Base::Adafactor`, to change one at a time.
#[derive(Clone, Copy)]
struct AdafactorFields {
    decay_rate: f64,
    decay_offset: f64,
    eps_root: f64,
    eps: f64,
    eps_scale: f64,
    clipping_threshold: Option<f64>,
    multiply_by_parameter_scale: bool,
    relative_step: bool,
    momentum: f64,
    weight_decay: f64,
    weight_decay_by_lr: bool,
}

/// One row per option combination that changes a pass or a scalar.
fn rows() -> Vec<(&'static str, Base, f64)> {
    vec![
        ("torch", torch(), 1e-2),
        (
            "torch_decay_lr_above_cap",
            with(torch(), |a| a.weight_decay = 0.1),
            2.0,
        ),
        ("optax", optax(0.0, 0.0), 1e-2),
        ("optax_momentum_decay", optax(0.9, 1e-3), 1e-2),
        (
            "optax_no_clip_no_scale_offset",
            with(optax(0.0, 0.0), |a| {
                a.clipping_threshold = None;
                a.multiply_by_parameter_scale = false;
                a.decay_offset = 3.0;
                a.decay_rate = 0.5;
            }),
            1e-3,
        ),
        (
            "tight_clip_both_eps",
            with(torch(), |a| {
                a.clipping_threshold = Some(0.3);
                a.eps_root = 1e-6;
                a.eps = 1e-3;
                a.eps_scale = 0.5;
            }),
            5e-2,
        ),
    ]
}

/// The pipelines: plain, and clipping + Lookahead + a schedule. (Coupled weight decay is in
/// the bit-equality rows only: where `g + wd*p` cancels, Adafactor's first step `g / |g|`
/// turns f32's rounding of the cancellation into a full step, which an f64 model cannot
/// follow; the rows' own decoupled decay is modelled.)
fn pipelines() -> Vec<common::Variant> {
    vec![
        ("plain", |c| c),
        ("clip_lookahead_schedule", |c| {
            let base_lr = c.lr.base_lr();
            Config {
                lr: Schedule::exponential(base_lr, 0.97),
                ..c.clip_norm(0.5).lookahead(3, 0.5)
            }
        }),
    ]
}

/// [`pipelines`] and clipping + coupled decay + Lookahead + a schedule.
fn all_pipelines() -> Vec<common::Variant> {
    let mut v = pipelines();
    v.push(("clip_decay_lookahead_schedule", |c| {
        let base_lr = c.lr.base_lr();
        Config {
            lr: Schedule::exponential(base_lr, 0.97),
            ..c.clip_norm(0.5).weight_decay(1e-3).lookahead(3, 0.5)
        }
    }));
    v
}

/// Buffers of every kind: unfactored (one element, a vector's worth), factored square-ish,
/// a batch of matrices, rows longer than a sum-of-squares block, more rows than columns, 1 x 1
/// matrices.
fn shapes() -> Vec<(usize, Shape)> {
    vec![
        (1, None),
        (7, None),
        (1320, Some((33, 40))),
        (60, Some((3, 5))),
        (18_000, Some((2, 9000))),
        (120, Some((40, 3))),
        (5, Some((1, 1))),
        (9000, None),
    ]
}

fn sumsq(x: &[f64]) -> f64 {
    x.iter().map(|v| v * v).sum()
}

/// The f64 model of docs/numerics.md ("Adafactor"): every step's parameters.
fn model(
    cfg: &Config,
    shapes: &[Shape],
    params: &[Vec<f32>],
    grads: &[Vec<Vec<f32>>],
) -> Vec<Vec<Vec<f64>>> {
    let Base::Adafactor {
        decay_rate,
        decay_offset,
        eps_root,
        eps,
        eps_scale,
        clipping_threshold,
        multiply_by_parameter_scale,
        relative_step,
        momentum,
        weight_decay,
        weight_decay_by_lr,
    } = cfg.base
    else {
        unreachable!("an Adafactor row")
    };
    let mut p: Vec<Vec<f64>> = params
        .iter()
        .map(|x| x.iter().map(|&v| f64::from(v)).collect())
        .collect();
    let mut m: Vec<Vec<f64>> = p.iter().map(|x| vec![0.0; x.len()]).collect();
    let mut v = m.clone();
    // Row and column averages of each matrix of a factored buffer.
    let mut rows_avg: Vec<Vec<f64>> = p.iter().map(|x| vec![0.0; x.len()]).collect();
    let mut cols_avg = rows_avg.clone();
    let mut slow = p.clone();
    let mut out = Vec::new();
    for (t0, gs) in grads.iter().enumerate() {
        let t = (t0 + 1) as f64;
        let lr = cfg.lr.base_lr()
            * match cfg.lr {
                Schedule::Exponential { gamma, .. } => gamma.powf(t - 1.0),
                _ => 1.0,
            };
        let mut g: Vec<Vec<f64>> = gs
            .iter()
            .map(|x| x.iter().map(|&v| f64::from(v)).collect())
            .collect();
        if let Some(c) = cfg.grad_clip_norm {
            let n = g.iter().map(|x| sumsq(x)).sum::<f64>().sqrt();
            if n > c {
                g.iter_mut().flatten().for_each(|x| *x *= c / n);
            }
        }
        for (gb, pb) in g.iter_mut().zip(&p) {
            for (x, &q) in gb.iter_mut().zip(pb) {
                *x += cfg.weight_decay * q;
            }
        }
        let w = (t - decay_offset).max(1.0).powf(-decay_rate);
        let beta = 1.0 - w;
        let lr_t = if relative_step {
            lr.min(1.0 / t.sqrt())
        } else {
            lr
        };
        let k = if weight_decay_by_lr {
            lr * weight_decay
        } else {
            weight_decay
        };
        for b in 0..p.len() {
            let (pb, gb) = (&mut p[b], &g[b]);
            let n = pb.len();
            let vhat: Vec<f64> = match shapes[b] {
                None => {
                    for i in 0..n {
                        v[b][i] = beta * v[b][i] + w * (gb[i] * gb[i] + eps_root);
                    }
                    v[b].clone()
                }
                Some((rr, cc)) => {
                    let mut vh = vec![0.0; n];
                    for mat in 0..n / (rr * cc) {
                        let at = |i: usize, j: usize| mat * rr * cc + i * cc + j;
                        let (ra, ca) = (&mut rows_avg[b], &mut cols_avg[b]);
                        for i in 0..rr {
                            let mean = (0..cc).map(|j| gb[at(i, j)].powi(2)).sum::<f64>()
                                / cc as f64
                                + eps_root;
                            ra[mat * rr + i] = beta * ra[mat * rr + i] + w * mean;
                        }
                        for j in 0..cc {
                            let mean = (0..rr).map(|i| gb[at(i, j)].powi(2)).sum::<f64>()
                                / rr as f64
                                + eps_root;
                            ca[mat * cc + j] = beta * ca[mat * cc + j] + w * mean;
                        }
                        let mean_r = (0..rr).map(|i| ra[mat * rr + i]).sum::<f64>() / rr as f64;
                        let den = mean_r.max(eps);
                        for i in 0..rr {
                            for j in 0..cc {
                                vh[at(i, j)] = ra[mat * rr + i] / den * ca[mat * cc + j];
                            }
                        }
                    }
                    vh
                }
            };
            let u: Vec<f64> = (0..n)
                .map(|i| gb[i] / vhat[i].max(eps * eps).sqrt())
                .collect();
            let nn = n as f64;
            let denom = match clipping_threshold {
                Some(d) => 1f64.max((sumsq(&u) / nn).sqrt() / d),
                None => 1.0,
            };
            let scale = if multiply_by_parameter_scale {
                eps_scale.max((sumsq(pb) / nn).sqrt())
            } else {
                1.0
            };
            for i in 0..n {
                let mut s = lr_t * scale / denom * u[i];
                if momentum > 0.0 {
                    m[b][i] = momentum * m[b][i] + (1.0 - momentum) * s;
                    s = m[b][i];
                }
                pb[i] -= s + k * pb[i];
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
/// the f64 model at every step, for every kind of buffer.
#[test]
fn engine_follows_the_f64_model() {
    let (sizes, shp): (Vec<usize>, Vec<Shape>) = shapes().into_iter().unzip();
    let (params, grads) = data(&sizes, 30, 5);
    for (bname, base, lr) in rows() {
        for (pname, f) in pipelines() {
            let cfg = f(Config::new(base, lr).tier(Tier::Scalar));
            let got = run(cfg.clone(), &shp, &params, &grads);
            let want = model(&cfg, &shp, &params, &grads);
            within_model(&format!("{bname}/{pname}"), &shp, &got, &want);
        }
    }
}

/// Every tier and 1-3 threads give the scalar tier's single-threaded bits, with buffers large
/// enough for the pool (one matrix split into halves of rows; two matrices of an odd number of
/// rows, each split).
#[test]
fn every_tier_and_thread_count_is_bit_identical() {
    let shp: Vec<Shape> = vec![
        Some((700, 900)),
        None,
        Some((3, 5000)),
        None,
        Some((301, 250)),
    ];
    let sizes = [630_000, 600_001, 15_000, 77, 150_500];
    let (params, grads) = data(&sizes, 3, 9);
    for (bname, base, lr) in rows() {
        for (pname, f) in all_pipelines() {
            let cfg = f(Config::new(base, lr));
            tiers_and_threads_agree(&format!("{bname}/{pname}"), &cfg, &shp, &params, &grads);
        }
    }
}

/// The stateless kernel (one buffer without a shape, the caller's state) gives the engine's
/// bits.
#[test]
fn stateless_kernel_is_the_engine() {
    let (params, grads) = data(&[5000], 6, 13);
    let grads: Vec<Vec<f32>> = grads.into_iter().map(|g| g[0].clone()).collect();
    for (bname, base, lr) in rows() {
        stateless_is_the_engine(bname, base, lr, &params[0], &grads);
    }
}

/// The factored state is `rows + cols` per matrix; checkpoints carry it with the shape: a
/// loaded optimizer continues bit for bit; loading into another rule, another shape or a
/// buffer registered without its shape is refused with an error naming it.
#[test]
fn checkpoints_round_trip_and_refuse_other_rules_and_shapes() {
    let shp: Vec<Shape> = vec![Some((30, 10)), None, Some((2, 3))];
    let (params, grads) = data(&[300, 50, 12], 8, 17);
    for (bname, base, lr) in rows() {
        let cfg = Config::new(base, lr).clip_norm(0.5);
        let mut ps = params.clone();
        let mut o = optimizer(cfg.clone(), &ps, &shp);
        assert_eq!(o.buffer_shape(0), Some((30, 10)), "{bname}");
        assert_eq!(o.buffer_shape(1), None, "{bname}");
        let (_, v, _) = o.moments(0).unwrap();
        assert_eq!(v.len(), 40, "{bname}: factored v is rows + cols");
        let (_, v, _) = o.moments(2).unwrap();
        assert_eq!(v.len(), 10, "{bname}: two 2 x 3 matrices");
        for g in &grads[..4] {
            step(&mut o, &mut ps, g);
        }
        let saved = o.save();
        assert_eq!(saved.len(), o.checkpoint_size(), "{bname}: size");
        let mut ps2 = ps.clone();
        let mut o2 = optimizer(cfg.clone(), &ps2, &shp);
        o2.load(&saved).unwrap();
        assert_eq!(o2.save(), saved, "{bname}: loaded state");
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
        for (what, shapes, needle) in [
            (
                "transposed",
                vec![Some((10, 30)), None, Some((2, 3))],
                "shape (30, 10) in the checkpoint, (10, 30)",
            ),
            (
                "unshaped",
                vec![Some((30, 10)), None, None],
                "buffer 2 was registered with a shape",
            ),
            (
                "shaped",
                vec![Some((30, 10)), Some((5, 10)), Some((2, 3))],
                "buffer 1 was registered without a shape",
            ),
        ] {
            let mut o3 = optimizer(cfg.clone(), &ps, &shapes);
            let before = o3.save();
            let e = o3.load(&saved).unwrap_err();
            assert!(format!("{e}").contains(needle), "{bname}/{what}: {e}");
            assert_eq!(o3.save(), before, "{bname}/{what}: unchanged");
        }
    }
}

/// Hostile inputs: zero parameters and gradients (finite, zero stays zero), a non-finite
/// gradient (the update skipped, nothing changed).
#[test]
fn zero_buffers_and_non_finite_gradients() {
    for (bname, base, lr) in rows() {
        for shape in [None, Some((10, 10))] {
            let mut p = vec![0.0f32; 100];
            let g = vec![0.0f32; 100];
            let mut o = Optimizer::new(Config::new(base, lr)).unwrap();
            o.register_shaped(&[&p], &[shape]).unwrap();
            for _ in 0..3 {
                o.step(&mut [&mut p], &[&g]).unwrap();
            }
            assert!(p.iter().all(|x| *x == 0.0), "{bname} {shape:?}: {p:?}");
            let g: Vec<f32> = (0..100).map(|i| (i as f32 - 50.0) * 1e-3).collect();
            o.step(&mut [&mut p], &[&g]).unwrap();
            assert!(
                p.iter().all(|x| x.is_finite()) && p.iter().any(|x| *x != 0.0),
                "{bname} {shape:?}: zero params"
            );
            let before = (p.clone(), o.save());
            let mut bad = g.clone();
            bad[7] = f32::INFINITY;
            let r = o.step(&mut [&mut p], &[&bad]).unwrap();
            assert!(
                matches!(r, Outcome::Skipped { index: 7, .. }),
                "{bname}: {r:?}"
            );
            assert_eq!(bits(&p), bits(&before.0), "{bname}: params after a skip");
            let mut o2 = Optimizer::new(Config::new(base, lr)).unwrap();
            o2.register_shaped(&[&p], &[shape]).unwrap();
            o2.load(&before.1).unwrap();
            assert_eq!(o.step_count(), o2.step_count(), "{bname}: counters");
        }
    }
}

/// Every field's domain: each bad value refused by `Optimizer::new` with an error naming the
/// field (the value rounded to f32 too where the kernels use it), each edge value accepted.
#[test]
fn hostile_fields_are_refused_by_name() {
    type Set = fn(&mut AdafactorFields, f64);
    let cases: Vec<(&str, Set, &[f64], &[f64])> = vec![
        (
            "decay_rate",
            |a, x| a.decay_rate = x,
            &[-1.0, -0.0001, f64::NAN, f64::INFINITY],
            &[0.0, 0.8, 1.0, 3.0],
        ),
        (
            "decay_offset",
            |a, x| a.decay_offset = x,
            &[-1.0, 0.5, f64::NAN, f64::INFINITY, 1e300],
            &[0.0, 3.0, 1e6],
        ),
        (
            "eps_root",
            |a, x| a.eps_root = x,
            &[-1e-30, f64::NAN, f64::INFINITY, 1e39],
            &[0.0, 1e-30, 1.0],
        ),
        (
            "eps",
            |a, x| a.eps = x,
            &[-1e-7, f64::NAN, f64::INFINITY, 1e20],
            &[0.0, 1e-7, 1e18],
        ),
        (
            "eps_scale",
            |a, x| a.eps_scale = x,
            &[-1e-3, f64::NAN, f64::INFINITY],
            &[0.0, 1e-3, 10.0],
        ),
        (
            "clipping_threshold",
            |a, x| a.clipping_threshold = Some(x),
            &[0.0, -1.0, f64::NAN, f64::INFINITY],
            &[1e-3, 1.0, 1e30],
        ),
        (
            "momentum",
            |a, x| a.momentum = x,
            &[-0.1, 1.0, f64::NAN, 0.999_999_999_9],
            &[0.0, 0.9, 0.99],
        ),
        (
            "weight_decay (decoupled)",
            |a, x| a.weight_decay = x,
            &[-1.0, f64::NAN, f64::INFINITY],
            &[0.0, 1e-2, 5.0],
        ),
    ];
    for (field, set, bad, good) in cases {
        for &x in bad {
            let base = with(torch(), |a| {
                a.eps_root = 1e-30;
                set(a, x)
            });
            match Optimizer::new(Config::new(base, 1e-2)) {
                Err(Error::InvalidArgument { name, .. }) => {
                    assert_eq!(name, field, "{field} = {x}")
                }
                other => panic!("{field} = {x}: {other:?}"),
            }
        }
        for &x in good {
            let base = with(torch(), |a| {
                a.eps_root = 1e-30;
                set(a, x)
            });
            Optimizer::new(Config::new(base, 1e-2))
                .unwrap_or_else(|e| panic!("{field} = {x}: {e}"));
        }
    }
    // eps and eps_root both 0: a zero gradient would divide 0 by 0.
    let base = with(optax(0.0, 0.0), |a| a.eps_root = 0.0);
    let e = Optimizer::new(Config::new(base, 1e-2)).unwrap_err();
    assert!(format!("{e}").contains("eps_root"), "{e}");
}

/// Bad shapes are refused by name at registration, nothing registered.
#[test]
fn hostile_shapes_are_refused() {
    let p = vec![0.5f32; 16];
    for (shape, n) in [
        ((0, 4), 16),
        ((4, 0), 16),
        ((3, 5), 16),
        ((32, 1), 16),
        ((usize::MAX, 2), 16),
        ((usize::MAX, 1), 16),
    ] {
        let mut o = Optimizer::new(Config::new(torch(), 1e-2)).unwrap();
        match o.register_shaped(&[&p[..n]], &[Some(shape)]) {
            Err(Error::InvalidArgument { name, .. }) => assert_eq!(name, "shape", "{shape:?}"),
            other => panic!("{shape:?}: {other:?}"),
        }
        assert!(o.buffer_lens().is_empty(), "{shape:?}: nothing registered");
        match o.add_buffer_shaped(&p[..n], 0, Some(shape)) {
            Err(Error::InvalidArgument { name, .. }) => assert_eq!(name, "shape", "{shape:?}"),
            other => panic!("{shape:?}: {other:?}"),
        }
    }
    let mut o = Optimizer::new(Config::new(torch(), 1e-2)).unwrap();
    assert!(matches!(
        o.register_shaped(&[&p], &[]),
        Err(Error::LengthMismatch { .. })
    ));
    // A shape is ignored by the elementwise rules.
    let mut o = Optimizer::new(Config::new(Base::adam(), 1e-2)).unwrap();
    o.register_shaped(&[&p], &[Some((4, 4))]).unwrap();
    assert_eq!(o.buffer_shape(0), None);
}

/// The split and sharded steps and compressed state are refused with an error naming the
/// rule; nothing changes.
#[test]
fn split_sharded_and_compressed_state_are_refused() {
    for (bname, base, lr) in rows() {
        let slow = |dtype| Config {
            slow_dtype: dtype,
            ..Config::new(base, lr).lookahead(5, 0.5)
        };
        let rows = [StateDtype::Bf16, StateDtype::Int8].map(|dtype| {
            let cfg = Config {
                state_dtype: dtype,
                ..Config::new(base, lr)
            };
            ("state_dtype", dtype, cfg)
        });
        for (field, dtype, cfg) in
            rows.into_iter()
                .chain([("slow_dtype", StateDtype::Bf16, slow(StateDtype::Bf16))])
        {
            match Optimizer::new(cfg) {
                Err(e @ Error::InvalidArgument { .. }) => {
                    // The reason is Adafactor's (int8 was refused as Rprop's before).
                    let text = format!("{e}");
                    assert!(text.contains("float32 for Adafactor"), "{bname}: {text}");
                    let Error::InvalidArgument { name, value, .. } = e else {
                        unreachable!()
                    };
                    assert_eq!(name, field, "{bname}");
                    assert!(value.contains(base.name()), "{bname}: {value}");
                }
                other => panic!("{bname} with {field} {dtype:?}: {other:?}"),
            }
        }
        let mut p = vec![0.5f32; 64];
        let g = vec![0.1f32; 64];
        let mut o = Optimizer::new(Config::new(base, lr)).unwrap();
        o.register_shaped(&[&p], &[Some((8, 8))]).unwrap();
        let before = o.save();
        let named = |e: Error, what: &str| {
            let s = format!("{e}");
            assert!(s.contains(what) && s.contains(base.name()), "{bname}: {s}");
        };
        named(o.begin_step(&[&g]).unwrap_err(), "begin_step");
        named(
            o.step_with_sum_squares(&mut [&mut p], &[&g], 1.0)
                .unwrap_err(),
            "step_with_sum_squares",
        );
        let mut partials = vec![0.0f64; o.norm_partial_count()];
        named(
            o.norm_partials_with_sum_squares(&mut [&mut p], &[g.as_slice()], 1.0, &mut partials)
                .unwrap_err(),
            "norm_partials_with_sum_squares",
        );
        named(
            o.step_with_sum_squares_and_norms(
                &mut [&mut p],
                &[g.as_slice()],
                &mut [None],
                1.0,
                &[1.0, 1.0],
            )
            .unwrap_err(),
            "step_with_sum_squares_and_norms",
        );
        assert_eq!(o.save(), before, "{bname}: nothing changed");
        assert!(p.iter().all(|x| *x == 0.5));
        o.step(&mut [&mut p], &[&g]).unwrap();
    }
}

/// The factored direction's sums of squares read straight from f32 gradients
/// (`kernels::direction_sums`) are those of the pass that writes `u` to a scratch first, which
/// gradients with a loss scale take: the same gradients times 2 with a loss scale of 2 (an exact
/// division) give the same bits, with the clipping by `rms(u)` acting, through every gradient
/// pipeline, on every tier, on one thread and on two (a matrix large enough for two halves).
#[test]
fn direction_sums_from_f32_gradients_are_the_scaled_pass() {
    let shp: Vec<Shape> = vec![Some((40, 9000)), Some((3, 5000)), Some((301, 250))];
    let sizes = [360_000, 15_000, 75_250];
    let (params, grads) = data(&sizes, 3, 11);
    let base = with(torch(), |f| f.clipping_threshold = Some(1e-3));
    for (pname, f) in all_pipelines() {
        for tier in Tier::ALL.into_iter().filter(|t| t.is_available()) {
            for threads in [1, 2] {
                let cfg = f(Config::new(base, 1e-2)).tier(tier).threads(threads);
                let direct = run(cfg.clone(), &shp, &params, &grads);
                let mut ps = params.clone();
                let mut o = optimizer(cfg, &ps, &shp);
                for (s, g) in grads.iter().enumerate() {
                    let g2: Vec<Vec<f32>> = g
                        .iter()
                        .map(|x| x.iter().map(|v| v * 2.0).collect())
                        .collect();
                    let gr: Vec<&[f32]> = g2.iter().map(|x| x.as_slice()).collect();
                    let mut pr: Vec<&mut [f32]> = ps.iter_mut().map(|p| p.as_mut_slice()).collect();
                    let mut copies: Vec<Option<flatopt::kernels::ParamCopy<'_>>> =
                        (0..pr.len()).map(|_| None).collect();
                    let out = o.step_mixed(&mut pr, &gr, &mut copies, Some(2.0)).unwrap();
                    assert!(matches!(out, Outcome::Applied { .. }));
                    assert_eq!(
                        bits(&ps.concat()),
                        bits(&direct[s].concat()),
                        "{pname} {tier:?} {threads} threads, step {}",
                        s + 1
                    );
                }
            }
        }
    }
}
