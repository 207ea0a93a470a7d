//! After registration, updates allocate nothing on the caller's thread.
//!
//! A counting global allocator wraps the system one; it counts only on a thread that has
//! switched counting on (a thread-local flag), so the test harness's other threads do not
//! interfere.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use common::{table, Rng};
use flatopt::schedule::{Anneal, PlateauMode, ThresholdMode};
use flatopt::{Base, Config, NonFinitePolicy, Optimizer, Outcome, Schedule, ScheduleMode};

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<usize> = const { Cell::new(0) };
}

fn note() {
    // `try_with`: the allocator may run while thread-locals are being torn down.
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        let _ = COUNT.try_with(|c| c.set(c.get() + 1));
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the counting
// touches only const-initialised thread-locals without destructors (no allocation, no recursion).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: forwarded unchanged (see the impl).
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: forwarded unchanged (see the impl).
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: forwarded unchanged (see the impl).
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note();
        // SAFETY: forwarded unchanged (see the impl).
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocator calls (alloc, realloc, dealloc) made by `f` on this thread.
fn count<R>(f: impl FnOnce() -> R) -> (R, usize) {
    COUNT.with(|c| c.set(0));
    COUNTING.with(|c| c.set(true));
    let r = f();
    COUNTING.with(|c| c.set(false));
    (r, COUNT.with(Cell::get))
}

/// The counter itself works (so that a zero below means something).
#[test]
fn counter_sees_allocations() {
    let ((), n) = count(|| drop(std::hint::black_box(vec![1u8; 100])));
    assert!(n >= 2, "an allocation and a free were not counted: {n}");
    let (_, n) = count(|| std::hint::black_box(1 + 1));
    assert_eq!(n, 0);
}

const SIZES: [usize; 4] = [1000, 17, 2 * 4096 + 3, 1];
/// Enough updates to catch allocations amortised over a few dozen calls.
const STEPS: usize = 40;

struct Data {
    params: Vec<Vec<f32>>,
    grads: Vec<Vec<Vec<f32>>>,
}

fn data(seed: u64) -> Data {
    let mut rng = Rng(seed);
    Data {
        params: SIZES.iter().map(|&n| rng.vec(n, 1.0)).collect(),
        grads: (0..STEPS)
            .map(|s| {
                let scale = if s % 2 == 0 { 0.1 } else { 0.001 };
                SIZES.iter().map(|&n| rng.vec(n, scale)).collect()
            })
            .collect(),
    }
}

/// Registers (allocations allowed), then counts the allocations of `STEPS` updates; the
/// reference slices are made outside the counted region.
fn updates_allocate(cfg: Config, d: &Data, poison_step: Option<usize>) -> (usize, Vec<Outcome>) {
    let mut opt = Optimizer::new(cfg).unwrap();
    let mut params = d.params.clone();
    {
        let p: Vec<&[f32]> = params.iter().map(|p| p.as_slice()).collect();
        opt.register(&p).unwrap();
    }
    let mut grads = d.grads.clone();
    if let Some(s) = poison_step {
        grads[s][2][4096 + 7] = f32::NAN;
    }
    let grad_refs: Vec<Vec<&[f32]>> = grads
        .iter()
        .map(|g| g.iter().map(|x| x.as_slice()).collect())
        .collect();
    let mut outs = Vec::with_capacity(STEPS);
    let mut p: Vec<&mut [f32]> = params.iter_mut().map(|p| p.as_mut_slice()).collect();
    let ((), n) = count(|| {
        for g in &grad_refs {
            let r = opt.step(&mut p, g);
            if let Ok(out) = r {
                outs.push(out);
            }
        }
    });
    assert_eq!(outs.len(), STEPS);
    (n, outs)
}

#[test]
fn updates_do_not_allocate_for_every_row() {
    let d = data(1);
    let mut rows = 0;
    for (name, cfg) in table() {
        let (n, outs) = updates_allocate(cfg.threads(1), &d, None);
        assert_eq!(n, 0, "{name}: {n} allocator calls in {STEPS} updates");
        assert!(matches!(outs[STEPS - 1], Outcome::Applied { .. }));
        rows += 1;
    }
    assert_eq!(rows, common::bases().len() * common::pipelines().len());
}

#[test]
fn updates_with_schedules_do_not_allocate() {
    let d = data(2);
    let schedules = [
        Schedule::OneCycle {
            max_lr: 0.05,
            total_steps: 10,
            pct_start: 0.3,
            div_factor: 25.0,
            final_div_factor: 1e4,
            anneal: Anneal::Cos,
        },
        Schedule::CosineAnnealingWarmRestarts {
            base: 0.05,
            t_0: 2,
            t_mult: 2,
            eta_min: 0.0,
        },
        Schedule::MultiStep {
            base: 0.05,
            milestones: vec![2, 5, 9],
            gamma: 0.5,
        },
        Schedule::PiecewiseConstant {
            boundaries: vec![3, 6],
            values: vec![0.05, 0.02, 0.01],
        },
        Schedule::WarmupCosine {
            base: 0.05,
            warmup_steps: 3,
            total_steps: 10,
            start_lr: 0.0,
            eta_min: 0.001,
        },
        Schedule::cyclic(0.001, 0.05, 3),
    ];
    let mut cases = 0;
    for sch in &schedules {
        for base in [Base::adam(), Base::momentum(0.9, true), Base::radam()] {
            let cfg = Config::with_schedule(base, sch.clone())
                .lookahead(3, 0.5)
                .clip_norm(0.5)
                .clip_value(0.1)
                .weight_decay(1e-3);
            let (n, _) = updates_allocate(cfg, &d, None);
            assert_eq!(n, 0, "{sch:?} / {}: {n} allocator calls", base.name());
            cases += 1;
        }
    }
    assert_eq!(cases, 18);
}

/// Skipped updates (non-finite gradient) and the Error policy allocate nothing either.
#[test]
fn skipped_updates_do_not_allocate() {
    let d = data(3);
    for policy in [NonFinitePolicy::Skip, NonFinitePolicy::Error] {
        for clip in [false, true] {
            let mut cfg = Config::new(Base::adamw(), 1e-2)
                .lookahead(2, 0.5)
                .nonfinite(policy);
            if clip {
                cfg = cfg.clip_norm(1.0);
            }
            let mut opt = Optimizer::new(cfg).unwrap();
            let mut params = d.params.clone();
            {
                let p: Vec<&[f32]> = params.iter().map(|p| p.as_slice()).collect();
                opt.register(&p).unwrap();
            }
            let mut bad = d.grads[0].clone();
            bad[2][4096 + 7] = f32::NAN;
            let bad: Vec<&[f32]> = bad.iter().map(|x| x.as_slice()).collect();
            let good: Vec<&[f32]> = d.grads[1].iter().map(|x| x.as_slice()).collect();
            let mut p: Vec<&mut [f32]> = params.iter_mut().map(|p| p.as_mut_slice()).collect();
            let ((skipped, applied), n) = count(|| {
                let a = opt.step(&mut p, &bad);
                let b = opt.step(&mut p, &good);
                (a, b)
            });
            assert_eq!(n, 0, "{policy:?}, clip {clip}: {n} allocator calls");
            match skipped {
                Ok(Outcome::Skipped {
                    buffer: 2,
                    index: 4103,
                    ..
                }) => assert_eq!(policy, NonFinitePolicy::Skip),
                Err(flatopt::Error::NonFinite {
                    buffer: 2,
                    index: 4103,
                    ..
                }) => assert_eq!(policy, NonFinitePolicy::Error),
                other => panic!("{policy:?}: {other:?}"),
            }
            assert!(matches!(applied, Ok(Outcome::Applied { step: 1, .. })));
            assert_eq!(opt.skipped_count(), 1);
        }
    }
}

/// One split update of `opt`: each buffer applied in two ranges cut at `cut(len)`.
fn split_step(opt: &mut Optimizer, params: &mut [Vec<f32>], g: &[&[f32]], cut: fn(usize) -> usize) {
    let step = opt.begin_step(g).unwrap().unwrap();
    for (p, (gi, st)) in params.iter_mut().zip(g.iter().zip(opt.states_mut())) {
        let mid = cut(p.len());
        let (p0, p1) = p.split_at_mut(mid);
        let (g0, g1) = gi.split_at(mid);
        let (s0, s1) = st.split_at(mid);
        step.apply(p0, g0, s0).unwrap();
        step.apply(p1, g1, s1).unwrap();
    }
    opt.end_step(step).unwrap();
}

/// The host-threaded three-phase API on the caller's thread, manual schedule stepping and
/// metric-driven schedules allocate nothing.
#[test]
fn three_phase_and_manual_schedules_do_not_allocate() {
    let d = data(4);
    let plateau = Schedule::ReduceOnPlateau {
        base: 0.05,
        mode: PlateauMode::Min,
        factor: 0.5,
        patience: 1,
        threshold: 1e-4,
        threshold_mode: ThresholdMode::Rel,
        cooldown: 1,
        min_lr: 0.0,
    };
    for sch in [Schedule::exponential(0.05, 0.9), plateau] {
        let cfg = Config::with_schedule(Base::adam(), sch.clone())
            .schedule_mode(ScheduleMode::Manual)
            .lookahead(2, 0.5)
            .clip_norm(0.5);
        let mut opt = Optimizer::new(cfg).unwrap();
        let mut params = d.params.clone();
        {
            let p: Vec<&[f32]> = params.iter().map(|p| p.as_slice()).collect();
            opt.register(&p).unwrap();
        }
        let grad_refs: Vec<Vec<&[f32]>> = d
            .grads
            .iter()
            .map(|g| g.iter().map(|x| x.as_slice()).collect())
            .collect();
        let lr0 = opt.current_lr();
        let ((), n) = count(|| {
            for (s, g) in grad_refs.iter().enumerate() {
                split_step(&mut opt, &mut params, g, |n| n / 2);
                if sch.is_metric_driven() {
                    opt.step_schedule_metric(1.0 + s as f64).unwrap();
                } else {
                    opt.step_schedule();
                }
            }
        });
        assert_eq!(n, 0, "{sch:?}: {n} allocator calls");
        assert_eq!(opt.step_count(), STEPS as u64);
        assert!(opt.current_lr() < lr0, "{sch:?}: the schedule did not move");
    }
}

/// With a thread pool configured but buffers too small to use it, the update also stays on the
/// caller's thread and allocates nothing.
#[test]
fn pool_configured_small_update_does_not_allocate() {
    let d = data(5);
    for (name, cfg) in table().into_iter().step_by(7) {
        let (n, _) = updates_allocate(cfg.threads(3), &d, Some(4));
        assert_eq!(n, 0, "{name} with a pool: {n} allocator calls");
    }
}

/// With parameter groups (own learning rates, weight decay, betas, a schedule), whole and split
/// steps and the per-epoch changes of a group's learning rate and weight decay allocate
/// nothing (the per-group plans are sized by `add_group`).
#[test]
fn groups_do_not_allocate() {
    use flatopt::engine::GroupOptions;
    let d = data(6);
    let cfg = Config::with_schedule(Base::adamw(), Schedule::exponential(0.05, 0.9)).clip_norm(0.5);
    let mut opt = Optimizer::new(cfg).unwrap();
    opt.add_group(GroupOptions {
        lr: Some(0.01),
        weight_decay: Some(0.0),
        base: None,
    })
    .unwrap();
    opt.add_group(GroupOptions {
        lr: Some(0.2),
        weight_decay: None,
        base: Some(Base::AdamW {
            b1: 0.8,
            b2: 0.99,
            eps: 1e-6,
            weight_decay: 0.1,
        }),
    })
    .unwrap();
    let mut params = d.params.clone();
    {
        let p: Vec<&[f32]> = params.iter().map(|p| p.as_slice()).collect();
        opt.register_in_groups(&p, &[2, 0, 1, 2]).unwrap();
    }
    let grad_refs: Vec<Vec<&[f32]>> = d
        .grads
        .iter()
        .map(|g| g.iter().map(|x| x.as_slice()).collect())
        .collect();
    let ((), n) = count(|| {
        for (s, g) in grad_refs.iter().enumerate() {
            opt.set_group_lr(1, Some(0.01 / (1.0 + s as f64))).unwrap();
            opt.set_group_weight_decay(2, 0.1 * (s % 3) as f64).unwrap();
            if s % 2 == 0 {
                // The slice list is this test's (an alloc and a free, counted below).
                let mut p: Vec<&mut [f32]> = params.iter_mut().map(|p| p.as_mut_slice()).collect();
                opt.step(&mut p, g).unwrap();
            } else {
                let step = opt.begin_step(g).unwrap().unwrap();
                for (p, (gi, st)) in params.iter_mut().zip(g.iter().zip(opt.states_mut())) {
                    step.apply(p, gi, st).unwrap();
                }
                opt.end_step(step).unwrap();
            }
        }
    });
    assert_eq!(opt.step_count(), STEPS as u64);
    // The whole steps' slice lists (one Vec per call, made by this test) are the only
    // allocations: an alloc and a free each.
    assert_eq!(n, STEPS, "{n} allocator calls");
}

/// Compressed state (bf16 stochastic and nearest, int8, bf16 slow weights): every base rule
/// under every pipeline variant (int8 not for Rprop, which refuses it), whole steps and split
/// steps on 8-bit block boundaries, allocate nothing: the pass decodes into stack scratch.
#[test]
fn compressed_state_updates_do_not_allocate() {
    use flatopt::kernels::StateDtype;
    let d = data(7);
    let mut rows = 0;
    for (pname, precision) in common::precisions() {
        for (name, cfg) in table() {
            let cfg = precision(cfg.threads(1));
            if matches!(cfg.base, Base::Rprop { .. }) && cfg.state_dtype == StateDtype::Int8 {
                continue;
            }
            let (n, outs) = updates_allocate(cfg.clone(), &d, None);
            assert_eq!(
                n, 0,
                "{name}/{pname}: {n} allocator calls in {STEPS} updates"
            );
            assert!(matches!(outs[STEPS - 1], Outcome::Applied { .. }));
            rows += 1;
        }
        // Split steps, each buffer cut at its 8-bit block boundary nearest the middle.
        let cfg = precision(
            Config::new(Base::adam(), 1e-2)
                .lookahead(2, 0.5)
                .clip_norm(0.5),
        );
        let mut opt = Optimizer::new(cfg).unwrap();
        let mut params = d.params.clone();
        {
            let p: Vec<&[f32]> = params.iter().map(|p| p.as_slice()).collect();
            opt.register(&p).unwrap();
        }
        let grad_refs: Vec<Vec<&[f32]>> = d
            .grads
            .iter()
            .map(|g| g.iter().map(|x| x.as_slice()).collect())
            .collect();
        let ((), n) = count(|| {
            for g in &grad_refs {
                split_step(&mut opt, &mut params, g, |n| n / 2 / 256 * 256);
            }
        });
        assert_eq!(n, 0, "{pname}: split steps: {n} allocator calls");
        assert_eq!(opt.step_count(), STEPS as u64);
    }
    assert!(rows > 3 * common::bases().len(), "{rows} rows");
}
