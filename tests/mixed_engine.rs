//! Mixed precision through the engine (`Optimizer::step_mixed`, the dynamic loss scaler): every
//! configuration of the shared table, on every tier and on 1 and 2 threads, bit for bit the
//! f32 engine stepping on the widened, unscaled gradients followed by narrowing the parameters;
//! the loss scaler's GradScaler rules; bad inputs refused with nothing changed.

mod common;

use common::{table, Rng};
use flatopt::kernels::{self, Grad, Half, ParamCopy};
use flatopt::{Config, LossScaler, Optimizer, Outcome, Tier};

/// Buffer lengths: tiny and across chunks; with one large enough for the pool to split it.
const LENS: [usize; 3] = [3, 4099, 9001];
const LENS_THREADED: [usize; 3] = [3, 4099, 700_001];

struct Data {
    params: Vec<Vec<f32>>,
    /// Per step, per buffer: loss-scaled gradients as 16-bit patterns.
    grads: Vec<Vec<Vec<u16>>>,
}

fn data(lens: &[usize], half: Half, scale: f32, steps: usize, seed: u64) -> Data {
    let mut rng = Rng(seed);
    let params = lens.iter().map(|&n| rng.vec(n, 1.0)).collect();
    let grads = (0..steps)
        .map(|_| {
            lens.iter()
                .map(|&n| {
                    let g: Vec<f32> = rng.vec(n, 0.1).iter().map(|x| x * scale).collect();
                    let mut h = vec![0u16; n];
                    kernels::narrow_from_f32(Tier::Scalar, half, &g, &mut h).unwrap();
                    h
                })
                .collect()
        })
        .collect();
    Data { params, grads }
}

fn grad_of(half: Half, h: &[u16]) -> Grad<'_> {
    match half {
        Half::Bf16 => Grad::Bf16(h),
        Half::F16 => Grad::F16(h),
    }
}

/// The widened gradients divided by `scale` (plain `/`).
fn unscaled(half: Half, h: &[u16], scale: f32) -> Vec<f32> {
    let mut g = vec![0f32; h.len()];
    kernels::widen_to_f32(Tier::Scalar, half, h, &mut g).unwrap();
    if scale != 1.0 {
        for x in &mut g {
            *x /= scale;
        }
    }
    g
}

fn bits(x: &[Vec<f32>]) -> Vec<Vec<u32>> {
    x.iter()
        .map(|b| b.iter().map(|v| v.to_bits()).collect())
        .collect()
}

/// Three steps of `cfg` with `half` gradients and copies, scaled by `scale`, on `tier` and
/// `threads`, against the f32 engine on scalar and one thread.
fn check_config(name: &str, cfg: &Config, half: Half, scale: f32, tier: Tier, threads: usize) {
    let lens: &[usize] = if threads > 1 { &LENS_THREADED } else { &LENS };
    let d = data(lens, half, scale, 3, 0x61 + threads as u64);
    let mut want_opt = Optimizer::new(cfg.clone().tier(Tier::Scalar).threads(1)).unwrap();
    let mut got_opt = Optimizer::new(cfg.clone().tier(tier).threads(threads)).unwrap();
    let refs: Vec<&[f32]> = d.params.iter().map(|p| p.as_slice()).collect();
    want_opt.register(&refs).unwrap();
    got_opt.register(&refs).unwrap();
    let (mut want, mut got) = (d.params.clone(), d.params.clone());
    let mut copies: Vec<Vec<u16>> = lens.iter().map(|&n| vec![0u16; n]).collect();
    for (t, step_grads) in d.grads.iter().enumerate() {
        let g32: Vec<Vec<f32>> = step_grads
            .iter()
            .map(|h| unscaled(half, h, scale))
            .collect();
        let g32r: Vec<&[f32]> = g32.iter().map(|g| g.as_slice()).collect();
        let mut wp: Vec<&mut [f32]> = want.iter_mut().map(|p| p.as_mut_slice()).collect();
        let wo = want_opt.step(&mut wp, &g32r).unwrap();

        let gh: Vec<Grad<'_>> = step_grads.iter().map(|h| grad_of(half, h)).collect();
        let mut cs: Vec<Option<ParamCopy<'_>>> = copies
            .iter_mut()
            .map(|c| Some(ParamCopy { half, out: c }))
            .collect();
        let mut gp: Vec<&mut [f32]> = got.iter_mut().map(|p| p.as_mut_slice()).collect();
        let go = got_opt
            .step_mixed(&mut gp, &gh, &mut cs, Some(scale))
            .unwrap();
        let row = format!("{name} {half:?} scale {scale} {tier} threads {threads} step {t}");
        assert_eq!(go, wo, "{row}");
        assert_eq!(bits(&got), bits(&want), "{row}: params");
        for (b, (c, p)) in copies.iter().zip(&want).enumerate() {
            let mut wc = vec![0u16; p.len()];
            kernels::narrow_from_f32(Tier::Scalar, half, p, &mut wc).unwrap();
            assert!(c == &wc, "{row}: copy of buffer {b}");
        }
        for b in 0..lens.len() {
            let (wm, gm) = (want_opt.moments(b).unwrap(), got_opt.moments(b).unwrap());
            assert!(
                [wm.0, wm.1, wm.2]
                    .iter()
                    .zip([gm.0, gm.1, gm.2])
                    .all(|(w, g)| bits(&[w.to_vec()]) == bits(&[g.to_vec()])),
                "{row}: state of buffer {b}"
            );
        }
    }
}

#[test]
fn every_config_matches_the_f32_engine_on_every_tier() {
    let mut rows = 0;
    for (name, cfg) in table() {
        for tier in Tier::ALL.into_iter().filter(|t| t.is_available()) {
            let (half, scale) = if rows % 2 == 0 {
                (Half::Bf16, 1.0)
            } else {
                (Half::F16, 1024.0)
            };
            check_config(&name, &cfg, half, scale, tier, 1);
            rows += 1;
        }
    }
    eprintln!("{rows} configuration x tier rows");
}

#[test]
fn threads_match_one_thread() {
    for (name, cfg) in table().into_iter().step_by(7) {
        for (half, scale) in [(Half::Bf16, 1.0), (Half::F16, 3.0), (Half::F16, 65536.0)] {
            check_config(&name, &cfg, half, scale, Tier::best(), 2);
        }
    }
}

fn sgd_opt(scaler: Option<LossScaler>) -> (Optimizer, Vec<f32>) {
    let mut opt = Optimizer::new(Config::new(flatopt::Base::adam(), 1e-2)).unwrap();
    let p = vec![1.0f32, -2.0, 3.0, 0.5];
    opt.register(&[&p]).unwrap();
    opt.set_loss_scaler(scaler);
    (opt, p)
}

/// GradScaler's rules: growth after `growth_interval` finite steps, backoff and a skipped step
/// (parameters, state and step count unchanged) on a non-finite gradient.
#[test]
fn loss_scaler_follows_grad_scaler() {
    let d = LossScaler::default();
    assert_eq!((d.scale(), d.factors()), (65536.0, (2.0, 0.5, 2000)));
    let (mut opt, mut p) = sgd_opt(Some(LossScaler::new(1024.0, 2.0, 0.5, 3).unwrap()));
    // (fp16 gradient of each element, expected scale after the step, skipped)
    let inf = 0x7c00u16;
    let one = 0x3c00u16;
    let rows: [(u16, f32, bool); 8] = [
        (one, 1024.0, false),
        (one, 1024.0, false),
        (one, 2048.0, false), // third finite step in a row: grows
        (inf, 1024.0, true),  // backoff, skipped
        (one, 1024.0, false),
        (inf, 512.0, true),    // the count restarted at the backoff
        (0x7e00, 256.0, true), // NaN
        (one, 256.0, false),
    ];
    let mut applied = 0;
    for (k, (h, scale, skipped)) in rows.into_iter().enumerate() {
        let before = (
            p.clone(),
            opt.moments(0).map(|(m, v, _)| (m.to_vec(), v.to_vec())),
        );
        let step_before = opt.step_count();
        let g = [one, h, one, one];
        let o = opt
            .step_mixed(&mut [&mut p], &[Grad::F16(&g)], &mut [], None)
            .unwrap();
        let sc = opt.loss_scaler().unwrap();
        assert_eq!(sc.scale(), scale, "row {k}");
        assert_eq!(sc.found_inf(), skipped, "row {k}");
        if skipped {
            assert!(
                matches!(
                    o,
                    Outcome::Skipped {
                        buffer: 0,
                        index: 1,
                        ..
                    }
                ),
                "row {k}: {o:?}"
            );
            assert_eq!(opt.step_count(), step_before, "row {k}");
            let after = (
                p.clone(),
                opt.moments(0).map(|(m, v, _)| (m.to_vec(), v.to_vec())),
            );
            assert_eq!(bits(&[after.0]), bits(&[before.0]), "row {k}");
            assert_eq!(after.1, before.1, "row {k}");
        } else {
            applied += 1;
            assert!(matches!(o, Outcome::Applied { .. }), "row {k}: {o:?}");
        }
    }
    assert_eq!(opt.step_count(), applied);
}

/// The scaled step divides by the scaler's scale: the same bits as an explicit `grad_scale`.
#[test]
fn loss_scaler_divides_by_its_scale() {
    let (mut a, mut pa) = sgd_opt(Some(LossScaler::new(3.0, 2.0, 0.5, 100).unwrap()));
    let (mut b, mut pb) = sgd_opt(None);
    let g = [0x4200u16, 0xc000, 0x3555, 0x0001];
    a.step_mixed(&mut [&mut pa], &[Grad::F16(&g)], &mut [], None)
        .unwrap();
    b.step_mixed(&mut [&mut pb], &[Grad::F16(&g)], &mut [], Some(3.0))
        .unwrap();
    assert_eq!(bits(&[pa]), bits(&[pb]));
}

/// Bad inputs: refused naming the problem, parameters, state, counters and scaler unchanged.
#[test]
fn bad_mixed_inputs_are_refused() {
    type Case = (
        &'static str,
        Option<LossScaler>,
        Option<f32>,
        usize,
        usize,
        &'static str,
    );
    let rows: [Case; 6] = [
        ("zero grad_scale", None, Some(0.0), 1, 4, "grad_scale"),
        ("NaN grad_scale", None, Some(f32::NAN), 1, 4, "grad_scale"),
        (
            "grad_scale with a scaler",
            Some(LossScaler::default()),
            Some(2.0),
            1,
            4,
            "grad_scale",
        ),
        ("two copies for one buffer", None, None, 2, 4, "copies"),
        ("short copy", None, None, 1, 3, "copy of buffer 0"),
        (
            "short copy, scaler",
            Some(LossScaler::default()),
            None,
            1,
            3,
            "copy of buffer 0",
        ),
    ];
    for (row, scaler, scale, ncopies, clen, names) in rows {
        let (mut opt, mut p) = sgd_opt(scaler);
        let p0 = p.clone();
        let mut bufs: Vec<Vec<u16>> = (0..ncopies).map(|_| vec![9u16; clen]).collect();
        let mut copies: Vec<Option<ParamCopy<'_>>> = bufs
            .iter_mut()
            .map(|c| {
                Some(ParamCopy {
                    half: Half::Bf16,
                    out: c,
                })
            })
            .collect();
        let g = [0x3f80u16; 4];
        let e = opt
            .step_mixed(&mut [&mut p], &[Grad::Bf16(&g)], &mut copies, scale)
            .unwrap_err();
        assert!(e.to_string().contains(names), "{row}: {e}");
        assert_eq!(p, p0, "{row}");
        assert_eq!(opt.step_count(), 0, "{row}");
        assert_eq!(opt.loss_scaler(), scaler.as_ref(), "{row}");
        drop(copies);
        assert!(bufs.iter().flatten().all(|&h| h == 9), "{row}");
    }
    for (row, r) in [
        ("init_scale 0", LossScaler::new(0.0, 2.0, 0.5, 1)),
        ("growth_factor 1", LossScaler::new(1.0, 1.0, 0.5, 1)),
        ("backoff_factor 1", LossScaler::new(1.0, 2.0, 1.0, 1)),
        ("growth_interval 0", LossScaler::new(1.0, 2.0, 0.5, 0)),
    ] {
        let name = row.split(' ').next().unwrap();
        assert!(
            matches!(&r, Err(e) if e.to_string().contains(name)),
            "{row}: {r:?}"
        );
    }
}

/// The non-finite decision of an update without clipping (16-bit gradients scanned by their
/// exponent bits when the scale is >= 1, else the sum of squares of the divided values) is
/// that of the widened, divided gradients: one row per format, scale and edge value (the
/// largest finite values, which a scale below 1 divides into an infinity, Inf, NaN,
/// subnormals), on 1 and 2 threads, against `is_finite` of the composition.
#[test]
fn non_finite_decision_without_a_norm() {
    let one_bf = 0x3f80u16;
    let one_h = 0x3c00u16;
    let rows: [(Half, u16, f32); 12] = [
        (Half::Bf16, 0x7f7f, 0.5),
        (Half::Bf16, 0x7f7f, 1.0),
        (Half::Bf16, 0xff7f, 3.0),
        (Half::Bf16, 0x7f80, 1024.0),
        (Half::Bf16, 0xffc1, 1.0),
        (Half::Bf16, 0x0001, 1.0),
        (Half::F16, 0x7bff, 0.5),
        (Half::F16, 0x7bff, 1.0),
        (Half::F16, 0x7c00, 2.0),
        (Half::F16, 0xfe00, 1.0),
        (Half::F16, 0x0001, 1e-30),
        (Half::F16, 0x8001, 4096.0),
    ];
    let n = 700_000; // above the pool's threshold
                     // Where the edge value sits: the first element, chunk bounds, inside and at the end.
    let positions = [0, 1023, 1024, n / 4 + 5, n / 2, 3 * n / 4 + 1, n - 3];
    for (k, (half, edge, scale)) in rows.into_iter().enumerate() {
        for (threads, at) in [1, 2].into_iter().flat_map(|t| positions.map(|at| (t, at))) {
            let one = if half == Half::Bf16 { one_bf } else { one_h };
            let mut g = vec![one; n];
            g[at] = edge;
            let want_finite = unscaled(half, &g, scale).iter().all(|x| x.is_finite());
            let cfg = Config::new(flatopt::Base::adam(), 1e-3).threads(threads);
            let mut opt = Optimizer::new(cfg).unwrap();
            let mut p = vec![0.5f32; n];
            opt.register(&[&p]).unwrap();
            let o = opt
                .step_mixed(&mut [&mut p], &[grad_of(half, &g)], &mut [], Some(scale))
                .unwrap();
            match o {
                Outcome::Applied { .. } => {
                    assert!(want_finite, "row {k}, {threads} threads, at {at}")
                }
                Outcome::Skipped {
                    buffer,
                    index,
                    value,
                } => {
                    assert!(!want_finite, "row {k}, {threads} threads, at {at}: {o:?}");
                    // The report names the first value that is not finite once divided by the
                    // scale: a non-finite 16-bit value, or a finite one the division overflowed.
                    assert_eq!(
                        (buffer, index),
                        (0, at),
                        "row {k}, {threads} threads, at {at}"
                    );
                    assert_eq!(
                        value.to_bits(),
                        unscaled(half, &g[at..at + 1], scale)[0].to_bits(),
                        "row {k}, {threads} threads, at {at}"
                    );
                }
            }
        }
    }
}
