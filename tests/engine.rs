//! The optimizer engine through its public API: determinism across tiers, thread counts and
//! runs for every configuration row, the host-threaded three-phase update, the non-finite
//! policies, refused calls (which must change nothing), reset, slow weights, manual schedules,
//! switching tier and threads mid-run, and a forked child that keeps working.

mod common;

use std::sync::OnceLock;

use common::{bits, table, Rng};
use flatopt::engine::PARALLEL_MIN_ELEMENTS;
use flatopt::kernels;
use flatopt::schedule::Anneal;
use flatopt::{
    Base, Config, Error, NonFinitePolicy, Optimizer, Outcome, Schedule, ScheduleMode, Tier,
};

/// Small buffers: the update stays on the caller's thread whatever `num_threads` is.
const SMALL: [usize; 6] = [1, 7, 8, 17, 33, 1000];
/// Large buffers: above `PARALLEL_MIN_ELEMENTS` in total and each big one split into several
/// tasks and several sum-of-squares blocks, with odd lengths.
const BIG: [usize; 4] = [400_001, 77, 150_003, 4099];
const THREADS: [usize; 4] = [1, 2, 3, 4];

fn tiers() -> Vec<Tier> {
    let t: Vec<Tier> = Tier::ALL.into_iter().filter(|t| t.is_available()).collect();
    assert!(t.len() >= 2, "at least scalar and portable");
    t
}

/// Initial params and the gradients of every step.
struct Data {
    params: Vec<Vec<f32>>,
    grads: Vec<Vec<Vec<f32>>>,
}

impl Data {
    fn new(sizes: &[usize], steps: usize, seed: u64) -> Data {
        let mut rng = Rng(seed);
        let params = sizes.iter().map(|&n| rng.vec(n, 1.0)).collect();
        // Gradient scales vary so that clipping by norm is active on some steps and not others.
        let scales = [0.1, 0.003, 0.05, 0.0007, 0.02, 0.2, 0.001];
        let grads = (0..steps)
            .map(|s| {
                sizes
                    .iter()
                    .map(|&n| rng.vec(n, scales[s % scales.len()]))
                    .collect()
            })
            .collect();
        Data { params, grads }
    }
    fn steps(&self) -> usize {
        self.grads.len()
    }
    fn grad_refs(&self, step: usize) -> Vec<&[f32]> {
        self.grads[step].iter().map(|g| g.as_slice()).collect()
    }
}

fn small_data() -> &'static Data {
    static D: OnceLock<Data> = OnceLock::new();
    D.get_or_init(|| Data::new(&SMALL, 8, 11))
}

fn big_data() -> &'static Data {
    static D: OnceLock<Data> = OnceLock::new();
    D.get_or_init(|| {
        let d = Data::new(&BIG, 6, 12);
        assert!(BIG.iter().sum::<usize>() > PARALLEL_MIN_ELEMENTS);
        d
    })
}

fn refs(params: &mut [Vec<f32>]) -> Vec<&mut [f32]> {
    params.iter_mut().map(|p| p.as_mut_slice()).collect()
}

fn const_refs(params: &[Vec<f32>]) -> Vec<&[f32]> {
    params.iter().map(|p| p.as_slice()).collect()
}

/// Everything observable about an optimizer and its params, as bits.
#[derive(Clone, PartialEq)]
struct Snap {
    params: Vec<Vec<u32>>,
    m: Vec<Vec<u32>>,
    v: Vec<Vec<u32>>,
    v_max: Vec<Vec<u32>>,
    slow: Vec<Option<Vec<u32>>>,
    step: u64,
    skipped: u64,
    lr: u32,
    schedule_count: u64,
}

fn snap(opt: &Optimizer, params: &[Vec<f32>]) -> Snap {
    let n = opt.buffer_lens().len();
    let mom: Vec<_> = (0..n).map(|i| opt.moments(i).unwrap()).collect();
    assert!(opt.moments(n).is_none());
    Snap {
        params: params.iter().map(|p| bits(p)).collect(),
        m: mom.iter().map(|x| bits(x.0)).collect(),
        v: mom.iter().map(|x| bits(x.1)).collect(),
        v_max: mom.iter().map(|x| bits(x.2)).collect(),
        slow: (0..n).map(|i| opt.slow_weights(i).map(bits)).collect(),
        step: opt.step_count(),
        skipped: opt.skipped_count(),
        lr: opt.current_lr().to_bits(),
        schedule_count: opt.schedule_state().count(),
    }
}

/// Panics with the first difference between two snapshots (without printing megabytes).
fn assert_same(got: &Snap, want: &Snap, ctx: &str) {
    fn vecs(what: &str, a: &[Vec<u32>], b: &[Vec<u32>], ctx: &str) {
        assert_eq!(a.len(), b.len(), "{ctx}: {what} buffer count");
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert_eq!(x.len(), y.len(), "{ctx}: {what}[{i}] length");
            if let Some(j) = (0..x.len()).find(|&j| x[j] != y[j]) {
                panic!(
                    "{ctx}: {what}[{i}][{j}] = {} ({:#010x}), expected {} ({:#010x})",
                    f32::from_bits(x[j]),
                    x[j],
                    f32::from_bits(y[j]),
                    y[j]
                );
            }
        }
    }
    vecs("param", &got.params, &want.params, ctx);
    vecs("m", &got.m, &want.m, ctx);
    vecs("v", &got.v, &want.v, ctx);
    vecs("v_max", &got.v_max, &want.v_max, ctx);
    assert_eq!(
        got.slow.iter().map(Option::is_some).collect::<Vec<_>>(),
        want.slow.iter().map(Option::is_some).collect::<Vec<_>>(),
        "{ctx}: slow weights presence"
    );
    let unwrap = |s: &[Option<Vec<u32>>]| s.iter().flatten().cloned().collect::<Vec<_>>();
    vecs("slow", &unwrap(&got.slow), &unwrap(&want.slow), ctx);
    assert_eq!(got.step, want.step, "{ctx}: step_count");
    assert_eq!(got.skipped, want.skipped, "{ctx}: skipped_count");
    assert_eq!(got.lr, want.lr, "{ctx}: current_lr bits");
    assert_eq!(
        got.schedule_count, want.schedule_count,
        "{ctx}: schedule counter"
    );
    assert!(got == want, "{ctx}: snapshots differ");
}

/// Registers, runs every step of `d` with `update`, returns the final snapshot and outcomes.
fn run(cfg: Config, d: &Data) -> (Snap, Vec<Outcome>) {
    let mut opt = Optimizer::new(cfg).unwrap();
    let mut params = d.params.clone();
    opt.register(&const_refs(&params)).unwrap();
    let mut outs = Vec::new();
    for s in 0..d.steps() {
        outs.push(opt.step(&mut refs(&mut params), &d.grad_refs(s)).unwrap());
    }
    (snap(&opt, &params), outs)
}

/// Every row, on every tier and thread count, against one-thread scalar; and twice in a row.
fn check_rows(rows: &[(String, Config)], d: &Data) -> usize {
    let mut runs = 0;
    for (name, cfg) in rows {
        let (want, want_out) = run(cfg.clone().tier(Tier::Scalar).threads(1), d);
        // Not vacuous: the run moved every buffer (unless alpha = 0 just snapped them back).
        let snapped = cfg.lookahead.is_some_and(|la| la.alpha == 0.0);
        for (i, p) in want.params.iter().enumerate().filter(|_| !snapped) {
            assert_ne!(p, &bits(&d.params[i]), "{name}: buffer {i} did not move");
        }
        assert!(want_out
            .iter()
            .all(|o| matches!(o, Outcome::Applied { .. })));
        for tier in tiers() {
            for threads in THREADS {
                let cfg = cfg.clone().tier(tier).threads(threads);
                let (got, out) = run(cfg.clone(), d);
                let ctx = format!("{name} on {tier} with {threads} threads");
                assert_same(&got, &want, &ctx);
                assert_eq!(out, want_out, "{ctx}: outcomes");
                runs += 1;
            }
        }
        // Repeated runs are identical.
        let (again, _) = run(cfg.clone().tier(Tier::best()).threads(4), d);
        assert_same(&again, &want, &format!("{name}: repeated run"));
    }
    runs
}

#[test]
fn every_row_small_buffers_all_tiers_and_threads() {
    let rows = table();
    assert_eq!(
        rows.len(),
        common::bases().len() * common::pipelines().len()
    );
    let runs = check_rows(&rows, small_data());
    assert_eq!(runs, rows.len() * tiers().len() * THREADS.len());
}

/// Large (threaded) buffers: rows split over several tests so the harness runs them in
/// parallel. Every row is covered by exactly one of them.
fn big_rows(part: usize, parts: usize) -> Vec<(String, Config)> {
    table()
        .into_iter()
        .enumerate()
        .filter(|(i, _)| i % parts == part)
        .map(|(_, r)| r)
        .collect()
}

#[test]
fn every_row_big_buffers_part0() {
    let rows = big_rows(0, 3);
    assert_eq!(
        check_rows(&rows, big_data()),
        rows.len() * tiers().len() * 4
    );
}

#[test]
fn every_row_big_buffers_part1() {
    let rows = big_rows(1, 3);
    assert_eq!(
        check_rows(&rows, big_data()),
        rows.len() * tiers().len() * 4
    );
}

#[test]
fn every_row_big_buffers_part2() {
    let rows = big_rows(2, 3);
    assert_eq!(
        check_rows(&rows, big_data()),
        rows.len() * tiers().len() * 4
    );
}

/// The global norm is formed in the fixed order of the contract (block partials of each buffer,
/// buffers in registration order, one f64 accumulator) on every tier and thread count. The
/// params alone can hardly show a reordered f64 sum, so the clip thresholds are chosen to put
/// `c / norm` within a few f64 ulps of an f32 rounding midpoint: a sum off by a few ulps flips
/// the rounded clip scale.
#[test]
fn clip_scale_uses_the_fixed_order_sum() {
    let d = big_data();
    let mut checked = 0;
    for s in 0..2 {
        let grads = d.grad_refs(s);
        let mut want_sum = 0.0f64;
        for g in &grads {
            let mut partials = vec![0.0; kernels::sumsq_block_count(g.len())];
            kernels::sum_squares_partials(Tier::Scalar, g, &mut partials).unwrap();
            for p in partials {
                want_sum += p;
            }
        }
        let norm = want_sum.sqrt();
        let a = 0.3f32;
        let b = f32::from_bits(a.to_bits() + 1);
        let mid = (f64::from(a) + f64::from(b)) / 2.0;
        let cs: Vec<f64> = (-4i64..=4)
            .map(|k| f64::from_bits((mid.to_bits() as i64 + k) as u64) * norm)
            .collect();
        let scales: Vec<f32> = cs.iter().map(|c| (c / norm) as f32).collect();
        assert!(scales.contains(&a) && scales.contains(&b), "{scales:?}");
        for tier in tiers() {
            for threads in THREADS {
                for &c in &cs {
                    let cfg = Config::new(Base::sgd(), 0.1)
                        .clip_norm(c)
                        .tier(tier)
                        .threads(threads);
                    let mut opt = Optimizer::new(cfg).unwrap();
                    opt.register(&const_refs(&d.params)).unwrap();
                    let step = opt.begin_step(&grads).unwrap().unwrap();
                    assert_eq!(
                        step.plan().clip_scale.map(f32::to_bits),
                        Some(((c / norm) as f32).to_bits()),
                        "step {s}, {tier}, {threads} threads, c = {c:e}"
                    );
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 2 * tiers().len() * THREADS.len() * 9);
}

/// Outcomes report the step number and the Lookahead syncs at k, 2k, ...
#[test]
fn outcomes_report_steps_and_syncs() {
    let d = small_data();
    let mut checked = 0;
    for (name, cfg) in table() {
        let k = cfg.lookahead.map(|la| la.sync_period);
        let (_, outs) = run(cfg, d);
        for (s, out) in outs.iter().enumerate() {
            let t = s as u64 + 1;
            let synced = k.is_some_and(|k| t.is_multiple_of(k));
            assert_eq!(
                *out,
                Outcome::Applied { step: t, synced },
                "{name} step {t}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, table().len() * 8);
}

/// begin_step / states_mut / Step::apply on split ranges from scoped threads / end_step
/// gives the bits of `update`.
fn split_run(cfg: Config, d: &Data) -> (Snap, Vec<(u64, bool)>) {
    let mut opt = Optimizer::new(cfg).unwrap();
    let mut params = d.params.clone();
    opt.register(&const_refs(&params)).unwrap();
    let mut outs = Vec::new();
    for s in 0..d.steps() {
        let grads = d.grad_refs(s);
        let step = opt.begin_step(&grads).unwrap().expect("finite gradients");
        let states: Vec<_> = opt.states_mut().collect();
        assert_eq!(states.len(), params.len());
        std::thread::scope(|scope| {
            for ((p, g), st) in params.iter_mut().zip(&grads).zip(states) {
                let n = p.len();
                // Cut at odd places: not multiples of the vector width or of any block.
                let cuts = [n / 3, (2 * n / 3 + 3).min(n)];
                let (mut p, mut g, mut st) = (p.as_mut_slice(), *g, st);
                let mut done = 0;
                for c in cuts {
                    let k = c - done;
                    let (p0, p1) = p.split_at_mut(k);
                    let (g0, g1) = g.split_at(k);
                    let (s0, s1) = st.split_at(k);
                    scope.spawn(move || step.apply(p0, g0, s0).unwrap());
                    (p, g, st, done) = (p1, g1, s1, c);
                }
                scope.spawn(move || step.apply(p, g, st).unwrap());
            }
        });
        outs.push((step.number(), step.syncs()));
        assert_eq!(step.plan().sync_alpha.is_some(), step.syncs());
        opt.end_step(step).unwrap();
    }
    (snap(&opt, &params), outs)
}

#[test]
fn host_threaded_split_update_equals_update() {
    let d = Data::new(&[20_001, 77, 1, 4096], 7, 21);
    let mut checked = 0;
    for (name, cfg) in table() {
        let (want, want_out) = run(cfg.clone(), &d);
        for tier in [Tier::Scalar, Tier::best()] {
            let (got, outs) = split_run(cfg.clone().tier(tier), &d);
            assert_same(&got, &want, &format!("{name}: split update on {tier}"));
            let want_out: Vec<(u64, bool)> = want_out
                .iter()
                .map(|o| match *o {
                    Outcome::Applied { step, synced } => (step, synced),
                    Outcome::Skipped { .. } => unreachable!(),
                })
                .collect();
            assert_eq!(outs, want_out, "{name}");
            checked += 1;
        }
    }
    assert_eq!(checked, table().len() * 2);
    // And once on the big buffers with a pool-backed optimizer doing the norm pass.
    let cfg = Config::new(Base::adam(), 1e-2)
        .lookahead(2, 0.5)
        .clip_norm(1.0)
        .threads(3);
    let (want, _) = run(cfg.clone().threads(1).tier(Tier::Scalar), big_data());
    let (got, _) = split_run(cfg, big_data());
    assert_same(&got, &want, "split update, big buffers");
}

/// Misuse of the three-phase API is refused and changes nothing.
#[test]
fn three_phase_misuse_is_refused() {
    let d = small_data();
    let cfg = Config::new(Base::adam(), 1e-2).lookahead(2, 0.5);
    let mut opt = Optimizer::new(cfg.clone()).unwrap();
    let mut params = d.params.clone();
    opt.register(&const_refs(&params)).unwrap();
    let grads = d.grad_refs(0);
    let stale = opt.begin_step(&grads).unwrap().unwrap();
    let step = opt.begin_step(&grads).unwrap().unwrap();
    assert_eq!((stale.number(), step.number()), (1, 1));
    // Mismatched range lengths: refused, nothing written.
    let before = snap(&opt, &params);
    {
        let st = opt.states_mut().nth(1).unwrap();
        let (p, g) = (&mut params[1][..], &d.grads[0][1][..6]);
        assert!(matches!(
            step.apply(p, g, st),
            Err(Error::LengthMismatch {
                expected: 7,
                got: 6,
                ..
            })
        ));
        let st = opt.states_mut().nth(1).unwrap();
        let (st0, _) = st.split_at(3);
        assert!(matches!(
            step.apply(&mut params[1][..4], &d.grads[0][1][..4], st0),
            Err(Error::LengthMismatch { .. })
        ));
    }
    assert_same(
        &snap(&opt, &params),
        &before,
        "Step::apply with bad lengths",
    );
    // Apply for real, finish; then the stale step is refused.
    for (i, st) in opt.states_mut().enumerate() {
        step.apply(&mut params[i], &d.grads[0][i], st).unwrap();
    }
    opt.end_step(step).unwrap();
    let before = snap(&opt, &params);
    assert_eq!(
        opt.end_step(stale),
        Err(Error::InvalidState(
            "end_step with a step that is not the one begun last"
        ))
    );
    assert_same(&snap(&opt, &params), &before, "stale end_step");
    // The result is the same as one plain update.
    let mut d1 = Data::new(&SMALL, 0, 0);
    d1.params = d.params.clone();
    d1.grads = vec![d.grads[0].clone()];
    let (want, _) = run(cfg, &d1);
    assert_same(&snap(&opt, &params), &want, "three-phase vs update");
}

/// Gradients of step `s` with non-finite values placed at `(buffer, index, value)`.
fn poisoned(d: &Data, s: usize, at: &[(usize, usize, f32)]) -> Vec<Vec<f32>> {
    let mut g = d.grads[s].clone();
    for &(b, i, v) in at {
        g[b][i] = v;
    }
    g
}

/// Skip and Error: the bad update changes nothing but the skipped counter, reports the first
/// non-finite value by buffer then index, and later updates equal a run that never saw it
/// (sync timing, bias correction and schedule unaffected).
fn check_skip_policy(policy: NonFinitePolicy, d: &Data, rows: &[(String, Config)], threads: usize) {
    let bad_at = 3;
    let n0 = d.params[0].len();
    // Buffer 2 index 0 comes later in buffer order than buffer 1 index 5 and 6; buffer 0 gets
    // one too on big data (far into the buffer, in a late sum-of-squares block).
    let mut poison = vec![
        (2, 0, f32::NAN),
        (1, 6, f32::NAN),
        (1, 5, f32::NEG_INFINITY),
    ];
    let expected = if n0 > 100_000 {
        poison.push((0, n0 - 3, f32::INFINITY));
        (0, n0 - 3, f32::INFINITY)
    } else {
        (1, 5, f32::NEG_INFINITY)
    };
    let bad = poisoned(d, bad_at, &poison);
    let bad_refs = const_refs(&bad);
    let mut checked = 0;
    for (name, cfg) in rows {
        let cfg = cfg.clone().nonfinite(policy).threads(threads);
        let (clean, _) = run(cfg.clone(), d);
        let mut opt = Optimizer::new(cfg.clone()).unwrap();
        let mut params = d.params.clone();
        opt.register(&const_refs(&params)).unwrap();
        for s in 0..d.steps() {
            if s == bad_at {
                for _ in 0..2 {
                    let before = snap(&opt, &params);
                    let r = opt.step(&mut refs(&mut params), &bad_refs);
                    let (b, i, v) = expected;
                    match (policy, r) {
                        (
                            NonFinitePolicy::Skip,
                            Ok(Outcome::Skipped {
                                buffer,
                                index,
                                value,
                            }),
                        )
                        | (
                            NonFinitePolicy::Error,
                            Err(Error::NonFinite {
                                buffer,
                                index,
                                value,
                            }),
                        ) => {
                            assert_eq!((buffer, index), (b, i), "{name}: reported position");
                            assert_eq!(value.to_bits(), v.to_bits(), "{name}: reported value");
                        }
                        (_, other) => panic!("{name}: {policy:?} gave {other:?}"),
                    }
                    let mut after = snap(&opt, &params);
                    assert_eq!(after.skipped, before.skipped + 1, "{name}: skipped count");
                    after.skipped -= 1;
                    assert_same(&after, &before, &format!("{name}: skipped update"));
                    // The three-phase API decides the same.
                    if policy == NonFinitePolicy::Skip {
                        let r = opt.begin_step(&bad_refs).unwrap();
                        assert!(matches!(r, Err(Outcome::Skipped { .. })), "{name}");
                        let mut after = snap(&opt, &params);
                        after.skipped -= 2;
                        assert_same(&after, &before, &format!("{name}: skipped begin"));
                    }
                }
            }
            opt.step(&mut refs(&mut params), &d.grad_refs(s)).unwrap();
        }
        let mut got = snap(&opt, &params);
        let expected_skips = if policy == NonFinitePolicy::Skip {
            4
        } else {
            2
        };
        assert_eq!(got.skipped, expected_skips, "{name}: skipped_count");
        got.skipped = 0;
        assert_same(&got, &clean, &format!("{name}: run with a skipped update"));
        checked += 1;
    }
    assert_eq!(checked, rows.len());
}

#[test]
fn nonfinite_skip_every_row() {
    check_skip_policy(NonFinitePolicy::Skip, small_data(), &table(), 1);
}

#[test]
fn nonfinite_error_every_row() {
    check_skip_policy(NonFinitePolicy::Error, small_data(), &table(), 1);
}

#[test]
fn nonfinite_skip_and_error_threaded_big() {
    let rows: Vec<_> = table()
        .into_iter()
        .filter(|(n, _)| n == "adam/everything" || n == "radam/lookahead_k5")
        .collect();
    assert_eq!(rows.len(), 2);
    check_skip_policy(NonFinitePolicy::Skip, big_data(), &rows, 3);
    check_skip_policy(NonFinitePolicy::Error, big_data(), &rows, 2);
}

/// Propagate: no check, the NaN reaches the params and the update counts as applied.
#[test]
fn nonfinite_propagate_lets_nan_through() {
    let d = small_data();
    let bad_at = 3;
    let bad = poisoned(d, bad_at, &[(1, 5, f32::NAN)]);
    let mut checked = 0;
    for (name, cfg) in table() {
        let cfg = cfg.nonfinite(NonFinitePolicy::Propagate);
        let mut opt = Optimizer::new(cfg).unwrap();
        let mut params = d.params.clone();
        opt.register(&const_refs(&params)).unwrap();
        for s in 0..bad_at {
            opt.step(&mut refs(&mut params), &d.grad_refs(s)).unwrap();
        }
        let out = opt.step(&mut refs(&mut params), &const_refs(&bad)).unwrap();
        assert!(
            matches!(out, Outcome::Applied { step: 4, .. }),
            "{name}: {out:?}"
        );
        assert!(params[1][5].is_nan(), "{name}: NaN did not reach the param");
        assert_eq!(opt.skipped_count(), 0);
        checked += 1;
    }
    assert_eq!(checked, table().len());
}

// Invalid configurations have their rows in tests/hostile.rs (`config_fields`: every float
// field of every struct and schedule against its domain; `config_rows`: integer fields, lists
// and combinations), one test per row.

#[test]
fn unavailable_tier_and_valid_boundaries() {
    // An unavailable tier is Unsupported, not an invalid argument (where the CPU lacks one).
    for t in Tier::ALL.into_iter().filter(|t| !t.is_available()) {
        let cfg = Config::new(Base::adam(), 1e-3).tier(t);
        assert!(matches!(Optimizer::new(cfg), Err(Error::Unsupported(_))));
    }
    // Boundaries that are valid.
    for cfg in [
        Config::new(Base::sgd(), 0.0),
        Config::new(Base::adam(), 1e-3).lookahead(1, 0.0),
        Config::new(Base::adam(), 1e-3).lookahead(1, 1.0),
        Config::new(Base::momentum(0.0, false), 0.1),
        Config::new(Base::adam(), 1e-3).threads(256),
        Config::new(Base::adam(), 1e-3).weight_decay(0.0),
    ] {
        Optimizer::new(cfg.clone()).unwrap_or_else(|e| panic!("{cfg:?}: {e}"));
    }
}

/// Refused calls on a registered optimizer change nothing, and the run continues as if they had
/// never been made.
#[test]
fn refused_calls_change_nothing() {
    let d = small_data();
    let mut checked = 0;
    for (name, cfg) in table() {
        let (want, _) = run(cfg.clone(), d);
        let mut opt = Optimizer::new(cfg.clone()).unwrap();
        // Before registration.
        let mut none: Vec<&mut [f32]> = Vec::new();
        assert!(matches!(
            opt.step(&mut none, &[]),
            Err(Error::InvalidState(_))
        ));
        assert!(matches!(opt.begin_step(&[]), Err(Error::InvalidState(_))));
        assert!(matches!(opt.reset(&[]), Err(Error::InvalidState(_))));
        assert!(matches!(
            opt.begin_step_with_sum_squares(Some(1.0), |_| None),
            Err(Error::InvalidState(_))
        ));
        let mut params = d.params.clone();
        let g0 = d.grad_refs(0);
        assert!(matches!(
            opt.step(&mut refs(&mut params), &g0),
            Err(Error::InvalidState(_))
        ));
        assert!(matches!(
            opt.register(&[]),
            Err(Error::InvalidArgument { name: "params", .. })
        ));
        opt.register(&const_refs(&params)).unwrap();
        for s in 0..d.steps() {
            let grads = d.grad_refs(s);
            let before = snap(&opt, &params);
            let expect_same = |r: Result<(), Error>,
                               want_what: &str,
                               opt: &Optimizer,
                               p: &[Vec<f32>]| {
                match r {
                    Err(Error::LengthMismatch { what, .. }) if what == want_what => {}
                    other => panic!("{name}: expected LengthMismatch({want_what}), got {other:?}"),
                }
                assert_same(&snap(opt, p), &before, &format!("{name}: {want_what}"));
                1
            };
            // Too few params.
            {
                let mut p = refs(&mut params);
                p.pop();
                let r = opt.step(&mut p, &grads).map(|_| ());
                checked += expect_same(r, "number of param buffers", &opt, &params);
            }
            // Too many grads.
            {
                let mut g = grads.clone();
                g.push(&d.grads[s][0]);
                let r = opt.step(&mut refs(&mut params), &g).map(|_| ());
                checked += expect_same(r, "number of grad buffers", &opt, &params);
            }
            // A param one element too long, a grad one too short, an empty grad.
            {
                let mut p1 = params.clone();
                p1[1].push(0.5);
                let r = opt.step(&mut refs(&mut p1), &grads).map(|_| ());
                checked += expect_same(r, "param buffer 1", &opt, &params);
                let mut g = grads.clone();
                g[2] = &d.grads[s][2][1..];
                let r = opt.step(&mut refs(&mut params), &g).map(|_| ());
                checked += expect_same(r, "grad buffer 2", &opt, &params);
                g[2] = &d.grads[s][2];
                g[0] = &[];
                let r = opt.step(&mut refs(&mut params), &g).map(|_| ());
                checked += expect_same(r, "grad buffer 0", &opt, &params);
                let r = opt.begin_step(&g).map(|_| ());
                checked += expect_same(r, "grad buffer 0", &opt, &params);
                let mut p0 = params.clone();
                p0[5].pop();
                let r = opt.reset(&const_refs(&p0));
                checked += expect_same(r, "param buffer 5", &opt, &params);
            }
            // Other refusals.
            assert!(matches!(
                opt.register(&[]),
                Err(Error::InvalidArgument { .. })
            ));
            for t in Tier::ALL.into_iter().filter(|t| !t.is_available()) {
                assert!(matches!(opt.set_tier(t), Err(Error::Unsupported(_))));
            }
            assert!(matches!(
                opt.set_num_threads(0),
                Err(Error::InvalidArgument {
                    name: "num_threads",
                    ..
                })
            ));
            assert!(opt.set_num_threads(1000).is_err());
            assert!(matches!(
                opt.step_schedule_metric(1.0),
                Err(Error::InvalidState(_))
            ));
            assert!(matches!(
                opt.begin_step_with_sum_squares(None, |_| None),
                Err(Error::InvalidArgument {
                    name: "sum_squares",
                    ..
                })
            ));
            assert_eq!(opt.num_threads(), 1);
            assert_same(
                &snap(&opt, &params),
                &before,
                &format!("{name}: other refusals"),
            );
            opt.step(&mut refs(&mut params), &grads).unwrap();
        }
        assert_same(
            &snap(&opt, &params),
            &want,
            &format!("{name}: after refusals"),
        );
    }
    assert_eq!(checked, table().len() * 8 * 7);
}

/// reset() brings back the state right after registration.
#[test]
fn reset_restarts_identically() {
    let d = small_data();
    for (name, cfg) in table() {
        let (want, _) = run(cfg.clone(), d);
        let mut opt = Optimizer::new(cfg).unwrap();
        let mut params = d.params.clone();
        opt.register(&const_refs(&params)).unwrap();
        for s in 0..5 {
            opt.step(&mut refs(&mut params), &d.grad_refs(s)).unwrap();
        }
        assert_ne!(opt.step_count(), 0);
        let mut params = d.params.clone();
        opt.reset(&const_refs(&params)).unwrap();
        assert_eq!((opt.step_count(), opt.skipped_count()), (0, 0));
        for s in 0..d.steps() {
            opt.step(&mut refs(&mut params), &d.grad_refs(s)).unwrap();
        }
        assert_same(&snap(&opt, &params), &want, &format!("{name}: after reset"));
    }
}

/// Slow weights: a copy of the params at registration, equal to the params (bit for bit) right
/// after each sync, untouched between syncs; absent without Lookahead.
#[test]
fn slow_weights_follow_syncs() {
    let d = small_data();
    let mut syncs = 0;
    for (name, cfg) in table() {
        let mut opt = Optimizer::new(cfg.clone()).unwrap();
        let mut params = d.params.clone();
        opt.register(&const_refs(&params)).unwrap();
        let Some(la) = cfg.lookahead else {
            assert!(opt.slow_weights(0).is_none(), "{name}");
            continue;
        };
        assert!(opt.slow_weights(SMALL.len()).is_none());
        let mut last: Vec<Vec<u32>> = params.iter().map(|p| bits(p)).collect();
        for (i, want) in last.iter().enumerate() {
            assert_eq!(bits(opt.slow_weights(i).unwrap()), *want, "{name}: initial");
        }
        for s in 0..d.steps() {
            let out = opt.step(&mut refs(&mut params), &d.grad_refs(s)).unwrap();
            let t = s as u64 + 1;
            let synced = t.is_multiple_of(la.sync_period);
            assert_eq!(out, Outcome::Applied { step: t, synced });
            for i in 0..SMALL.len() {
                let slow = bits(opt.slow_weights(i).unwrap());
                if synced {
                    assert_eq!(slow, bits(&params[i]), "{name}: p != s after sync {t}");
                    last[i] = slow;
                } else {
                    assert_eq!(slow, last[i], "{name}: slow moved at step {t}");
                    // Rprop holds an element still on the step after its gradient changed
                    // sign (the gradient counts as 0 there, as PyTorch's).
                    if !matches!(cfg.base, flatopt::Base::Rprop { .. }) {
                        assert_ne!(slow, bits(&params[i]), "{name}: no base step at {t}");
                    }
                }
            }
            syncs += usize::from(synced);
        }
    }
    assert!(syncs > 50, "only {syncs} syncs checked");
}

/// Manual schedules advance only on step_schedule; stepping after every update reproduces the
/// per-update mode bit for bit, and never stepping is the fixed base rate.
#[test]
fn manual_schedule_mode() {
    let d = small_data();
    let schedules = [
        Schedule::Exponential {
            base: 0.05,
            gamma: 0.5,
        },
        Schedule::OneCycle {
            max_lr: 0.05,
            total_steps: 10,
            pct_start: 0.3,
            div_factor: 25.0,
            final_div_factor: 1e4,
            anneal: Anneal::Linear,
        },
        Schedule::CosineAnnealingWarmRestarts {
            base: 0.05,
            t_0: 2,
            t_mult: 2,
            eta_min: 0.001,
        },
    ];
    let mut checked = 0;
    for (bname, base, _) in common::bases() {
        for sch in &schedules {
            let per_update = Config::with_schedule(base, sch.clone()).lookahead(3, 0.5);
            let manual = per_update.clone().schedule_mode(ScheduleMode::Manual);
            let (want, _) = run(per_update, d);
            let mut opt = Optimizer::new(manual.clone()).unwrap();
            let mut params = d.params.clone();
            opt.register(&const_refs(&params)).unwrap();
            for s in 0..d.steps() {
                let lr = opt.current_lr();
                opt.step(&mut refs(&mut params), &d.grad_refs(s)).unwrap();
                assert_eq!(opt.current_lr().to_bits(), lr.to_bits(), "{bname}: moved");
                assert_eq!(opt.schedule_state().count(), s as u64);
                opt.step_schedule();
                assert_eq!(opt.schedule_state().count(), s as u64 + 1);
            }
            assert_same(&snap(&opt, &params), &want, &format!("{bname}: manual"));

            // Never stepped: the schedule's value at e = 0 throughout.
            let lr0 = flatopt::ScheduleState::new(sch).lr(sch);
            let fixed = Config::new(base, lr0).lookahead(3, 0.5);
            let (mut want, _) = run(fixed, d);
            let (got, _) = run(manual, d);
            assert_eq!(got.schedule_count, 0);
            // The fixed-rate run counted its (ignored) schedule steps; nothing else differs.
            want.schedule_count = 0;
            assert_same(&got, &want, &format!("{bname}: manual, never stepped"));
            checked += 1;
        }
    }
    assert_eq!(checked, common::bases().len() * schedules.len());
}

/// set_tier and set_num_threads between updates change nothing in the results.
#[test]
fn switching_tier_and_threads_mid_run() {
    let d = big_data();
    let rows: Vec<_> = table()
        .into_iter()
        .filter(|(n, _)| {
            [
                "adam_amsgrad/everything",
                "sgd_nesterov/scheduled",
                "radam_fast_b2/clip_norm",
            ]
            .contains(&n.as_str())
        })
        .collect();
    assert_eq!(rows.len(), 3);
    let tiers = tiers();
    for (name, cfg) in rows {
        let (want, _) = run(cfg.clone().tier(Tier::Scalar), d);
        let mut opt = Optimizer::new(cfg).unwrap();
        let mut params = d.params.clone();
        opt.register(&const_refs(&params)).unwrap();
        for s in 0..d.steps() {
            let tier = tiers[s % tiers.len()];
            opt.set_tier(tier).unwrap();
            assert_eq!(opt.tier(), tier);
            let threads = THREADS[(s + 1) % THREADS.len()];
            opt.set_num_threads(threads).unwrap();
            assert_eq!(opt.num_threads(), threads);
            opt.step(&mut refs(&mut params), &d.grad_refs(s)).unwrap();
        }
        assert_same(&snap(&opt, &params), &want, &format!("{name}: switching"));
    }
}

/// A process forked after a threaded update (pool threads running in the parent) can still run
/// threaded updates: the child does not hang and computes the same bits.
#[test]
fn forked_child_runs_threaded_updates() {
    let d = big_data();
    let cfg = Config::new(Base::adam(), 1e-2)
        .lookahead(2, 0.5)
        .clip_norm(1.0)
        .threads(2);
    // Expected results, computed before forking.
    let mut d2 = Data::new(&[], 0, 0);
    d2.params = d.params.clone();
    d2.grads = d.grads[..2].to_vec();
    let (want2, _) = run(cfg.clone().threads(1).tier(Tier::Scalar), &d2);
    let mut d3 = Data::new(&[], 0, 0);
    d3.params = d.params.clone();
    d3.grads = d.grads[..3].to_vec();
    let (want3, _) = run(cfg.clone().threads(1).tier(Tier::Scalar), &d3);

    let mut opt = Optimizer::new(cfg.clone()).unwrap();
    let mut params = d.params.clone();
    opt.register(&const_refs(&params)).unwrap();
    opt.step(&mut refs(&mut params), &d.grad_refs(0)).unwrap();
    let mut fresh = Optimizer::new(cfg.clone().threads(3)).unwrap();
    let mut fresh_params = d.params.clone();
    fresh.register(&const_refs(&fresh_params)).unwrap();
    fresh
        .step(&mut refs(&mut fresh_params), &d.grad_refs(0))
        .unwrap();

    // SAFETY: the child only runs this crate's code and the comparison below, then leaves with
    // `_exit` (no atexit handlers, no unwinding into the test harness).
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // The pool made before the fork, then one made before and used again, then a new one.
            opt.step(&mut refs(&mut params), &d.grad_refs(1)).unwrap();
            if snap(&opt, &params) != want2 {
                return 1;
            }
            fresh
                .step(&mut refs(&mut fresh_params), &d.grad_refs(1))
                .unwrap();
            fresh
                .step(&mut refs(&mut fresh_params), &d.grad_refs(2))
                .unwrap();
            if snap(&fresh, &fresh_params) != want3 {
                return 2;
            }
            let (got, _) = run(cfg.clone().threads(4), &d3);
            if got != want3 {
                return 3;
            }
            0
        }))
        .unwrap_or(4);
        // SAFETY: `_exit` ends the child immediately; always sound.
        unsafe { libc::_exit(code) };
    }
    // Parent: wait up to 20 s, then kill the child.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut status = 0;
    loop {
        // SAFETY: waiting on our own child with a valid status pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        assert!(r >= 0, "waitpid failed");
        if r == pid {
            break;
        }
        if std::time::Instant::now() > deadline {
            // SAFETY: killing and reaping our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            panic!("forked child hung in a threaded update (killed after 20 s)");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        libc::WIFEXITED(status),
        "child did not exit normally: {status:#x}"
    );
    let code = libc::WEXITSTATUS(status);
    assert_eq!(
        code, 0,
        "child failed: 1 = old pool result differs, 2 = second pool differs, 3 = new pool \
         differs, 4 = panic"
    );
    // The parent's optimizers still work too.
    opt.step(&mut refs(&mut params), &d.grad_refs(1)).unwrap();
    assert_same(&snap(&opt, &params), &want2, "parent after fork");
}

/// The optimizer's own state buffers of at least a page (`PLACED_MIN_LEN` elements) sit at the
/// same offset within a 4 KiB page as their parameter buffer, whatever the lengths and the
/// parameters' alignment: no 4K aliasing between the streams, and one cache-line alignment for
/// all of them. Shorter ones are not placed (the slack would cost more than the buffer).
#[test]
fn state_buffers_are_placed_like_their_parameters() {
    let lens = [1usize, 3, 7, 8, 9, 1000, 1023, 1024, 1025, 4097, 5000];
    // Parameters at every offset within a cache line: slices of one allocation.
    let backing = vec![0.5f32; lens.iter().sum::<usize>() + 16 * lens.len()];
    let mut at = 0;
    let params: Vec<&[f32]> = lens
        .iter()
        .enumerate()
        .map(|(k, &n)| {
            let p = &backing[at + k..at + k + n];
            at += n + 16;
            p
        })
        .collect();
    for cfg in [
        Config::new(Base::adam(), 1e-3),
        Config::new(
            Base::Adam {
                b1: 0.9,
                b2: 0.999,
                eps: 1e-8,
                amsgrad: true,
            },
            1e-3,
        )
        .lookahead(5, 0.5),
    ] {
        let mut opt = Optimizer::new(cfg).unwrap();
        opt.register(&params).unwrap();
        for (i, &len) in lens.iter().enumerate() {
            let (m, v, v_max) = opt.moments(i).unwrap();
            let mut bufs = vec![("m", m), ("v", v), ("v_max", v_max)];
            if let Some(slow) = opt.slow_weights(i) {
                bufs.push(("slow", slow));
            }
            for (what, b) in bufs {
                if b.is_empty() {
                    continue;
                }
                assert_eq!(b.len(), len, "{what} of buffer {i}");
                if len < flatopt::engine::PLACED_MIN_LEN {
                    continue;
                }
                assert_eq!(
                    b.as_ptr() as usize % 4096,
                    params[i].as_ptr() as usize % 4096,
                    "{what} of buffer {i} (len {len})"
                );
            }
        }
    }
}

/// Centered RMSprop under a constant gradient: the variance estimate `v - a*a` is 0 in exact
/// arithmetic and rounds below 0 after about 1,200 steps, where PyTorch's and optax's square
/// roots give NaN. flatopt clamps it at 0: 3,000 steps stay finite, on every tier, with eps
/// outside (PyTorch) and inside (optax) the square root.
#[test]
fn centered_rmsprop_constant_gradient_stays_finite() {
    for eps_inside_sqrt in [false, true] {
        for tier in Tier::ALL.into_iter().filter(|t| t.is_available()) {
            let mut base = Base::rmsprop();
            if let Base::RmsProp {
                centered,
                eps_inside_sqrt: inside,
                ..
            } = &mut base
            {
                *centered = true;
                *inside = eps_inside_sqrt;
            }
            let mut opt = Optimizer::new(Config::new(base, 1e-6).tier(tier)).unwrap();
            let mut p = vec![1.0f32; 37];
            let g = vec![0.1f32; 37];
            opt.register(&[&p]).unwrap();
            for t in 1..=3000 {
                opt.step(&mut [&mut p], &[&g]).unwrap();
                assert!(
                    p.iter().all(|x| x.is_finite()),
                    "eps_inside_sqrt {eps_inside_sqrt}, {tier:?}: non-finite parameter at step {t}"
                );
            }
        }
    }
}
