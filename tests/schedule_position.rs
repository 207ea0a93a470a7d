//! Setting a schedule's position directly (`ScheduleState::at`, `Optimizer::set_schedule_epoch`,
//! C `flatopt_optimizer_schedule_set_epoch`) against stepping there one advance at a time.
//!
//! One test per schedule kind (a row: the schedule and the positions to compare, chosen to
//! cross its phase ends, cycle wraps and warm restarts): the state set to `n` must equal the
//! state after `n` advances field by field and in its learning-rate bits, at every `n`, also
//! through an optimizer's checkpoint bytes. Then the huge positions (up to `u64::MAX`), which
//! must finish at once and stay consistent with one more advance, and the hostile rows: what is
//! refused leaves the optimizer's checkpoint bytes unchanged.

#[macro_use]
#[path = "common/rows.rs"]
mod rows;

use flatopt::schedule::{Anneal, CyclicMode};
use flatopt::{Base, Config, Error, Optimizer, Schedule, ScheduleMode, ScheduleState};
use std::time::{Duration, Instant};

/// The positions compared for every row, besides the row's own.
const COMMON: [u64; 8] = [0, 1, 2, 3, 7, 64, 257, 1000];

/// Positions far beyond any stepping: they must take no time at all.
const HUGE: [u64; 5] = [
    1 << 40,
    (1 << 62) + 12345,
    u64::MAX - 1000,
    u64::MAX - 1,
    u64::MAX,
];

struct Row {
    schedule: Schedule,
    /// Positions where this schedule changes phase or wraps (compared by stepping).
    points: &'static [u64],
}

fn same(row: &str, what: &str, s: &Schedule, got: &ScheduleState, want: &ScheduleState) {
    assert_eq!(got, want, "{row}: {what}: state differs");
    assert_eq!(
        got.lr(s).to_bits(),
        want.lr(s).to_bits(),
        "{row}: {what}: learning-rate bits differ"
    );
}

fn manual(s: &Schedule) -> Optimizer {
    let mut cfg = Config::with_schedule(Base::adam(), s.clone());
    cfg.schedule_mode = ScheduleMode::Manual;
    let mut opt = Optimizer::new(cfg).expect("valid row");
    opt.register(&[&[0.5f32, -1.0, 2.0]]).expect("register");
    opt
}

fn check_row(row: &str, r: Row) {
    let s = &r.schedule;
    s.validate()
        .unwrap_or_else(|e| panic!("{row}: invalid row: {e}"));
    let mut ns: Vec<u64> = COMMON.iter().chain(r.points).copied().collect();
    ns.sort_unstable();
    ns.dedup();
    // One stepping pass, comparing at every position of the row on the way.
    let mut st = ScheduleState::new(s);
    let mut at = 0;
    for &n in &ns {
        while at < n {
            st.advance(s);
            at += 1;
        }
        let set = ScheduleState::at(s, n).unwrap_or_else(|e| panic!("{row}: at({n}): {e}"));
        same(row, &format!("at({n})"), s, &set, &st);
        assert_eq!(
            set.check(s),
            Ok(()),
            "{row}: at({n}) is not a reachable state"
        );
    }
    // Through an optimizer: from a different position, set to n == stepped n from the start,
    // checkpoint bytes included (counters, schedule state).
    for &n in ns.iter().filter(|&&n| n <= 300) {
        let mut by_steps = manual(s);
        for _ in 0..n {
            by_steps.step_schedule();
        }
        let mut by_set = manual(s);
        for _ in 0..5 {
            by_set.step_schedule();
        }
        by_set.set_schedule_epoch(n).expect("set_schedule_epoch");
        assert_eq!(
            by_set.schedule_state(),
            by_steps.schedule_state(),
            "{row}: optimizer at {n}"
        );
        assert_eq!(
            by_set.current_lr().to_bits(),
            by_steps.current_lr().to_bits(),
            "{row}: {n}"
        );
        assert_eq!(by_set.save(), by_steps.save(), "{row}: checkpoint at {n}");
    }
    // Huge positions: at once, reachable, and one more advance is the next position.
    for n in HUGE {
        let t = Instant::now();
        let set = ScheduleState::at(s, n).unwrap_or_else(|e| panic!("{row}: at({n}): {e}"));
        assert!(
            t.elapsed() < Duration::from_millis(50),
            "{row}: at({n}) took {:?}",
            t.elapsed()
        );
        assert_eq!(set.count(), n, "{row}: counter at {n}");
        assert_eq!(
            set.check(s),
            Ok(()),
            "{row}: at({n}) is not a reachable state"
        );
        // (At u64::MAX the counter stops but a warm restart's cycle position goes on: a
        // position past u64::MAX steps, which no counter value names.)
        if let Some(n1) = n.checked_add(1) {
            let mut next = set.clone();
            next.advance(s);
            let want = ScheduleState::at(s, n1).expect("at(n + 1)");
            same(row, &format!("advance(at({n}))"), s, &next, &want);
        }
    }
}

rows! { check_row;
    fixed: Row { schedule: Schedule::fixed(0.01), points: &[] },
    constant: Row { schedule: Schedule::constant(0.1, 0.25, 4), points: &[4, 5] },
    linear: Row { schedule: Schedule::linear(0.1, 0.2, 0.9, 7), points: &[6, 8] },
    step: Row { schedule: Schedule::step(0.1, 3, 0.5), points: &[5, 6, 9, 299] },
    step_growing: Row { schedule: Schedule::step(1e-3, 2, 1.5), points: &[30, 31] },
    multi_step: Row { schedule: Schedule::multi_step(0.1, vec![2, 5, 200], 0.3), points: &[4, 5, 199, 200] },
    exponential: Row { schedule: Schedule::exponential(0.1, 0.97), points: &[500] },
    exponential_decay: Row {
        schedule: Schedule::ExponentialDecay {
            base: 0.1,
            decay_steps: 5,
            decay_rate: 0.5,
            transition_begin: 3,
            staircase: true,
            end_value: Some(1e-3),
        },
        points: &[4, 8, 9, 40],
    },
    cosine_annealing: Row { schedule: Schedule::cosine_annealing(0.1, 9, 1e-3), points: &[8, 9, 10] },
    warm_restarts_fixed_cycle: Row {
        schedule: Schedule::cosine_annealing_warm_restarts(0.1, 4, 1, 1e-3),
        points: &[4, 5, 8, 9, 12, 999],
    },
    warm_restarts_growing_cycles: Row {
        schedule: Schedule::cosine_annealing_warm_restarts(0.1, 3, 2, 0.0),
        // cycles 3, 6, 12, 24, 48, 96, 192, 384: restarts at 3, 9, 21, 45, 93, 189, 381, 765
        points: &[8, 9, 10, 20, 21, 22, 44, 45, 92, 93, 380, 381, 764, 765, 766],
    },
    warm_restarts_saturating_cycles: Row {
        // the cycle length saturates at u64::MAX after a few restarts
        schedule: Schedule::cosine_annealing_warm_restarts(0.1, 1 << 20, 1 << 20, 0.0),
        points: &[(1 << 20) - 1, 1 << 20, (1 << 20) + 1],
    },
    polynomial: Row { schedule: Schedule::polynomial(0.1, 6, 2.0), points: &[5, 6] },
    warmup: Row { schedule: Schedule::warmup(0.1, 5, 0.01), points: &[4, 5, 6] },
    warmup_cosine: Row { schedule: Schedule::warmup_cosine(0.1, 4, 20, 0.0, 1e-4), points: &[4, 19, 20, 21] },
    one_cycle: Row { schedule: Schedule::one_cycle(0.1, 30), points: &[8, 9, 28, 29, 30] },
    one_cycle_linear: Row {
        schedule: Schedule::OneCycle {
            max_lr: 0.1,
            total_steps: 10,
            pct_start: 0.25,
            div_factor: 10.0,
            final_div_factor: 100.0,
            anneal: Anneal::Linear,
        },
        points: &[9, 10],
    },
    cyclic: Row { schedule: Schedule::cyclic(0.01, 0.1, 4), points: &[4, 8, 9, 16, 17] },
    cyclic_triangular2: Row {
        schedule: Schedule::Cyclic {
            base: 0.01,
            max_lr: 0.1,
            step_size_up: 3,
            step_size_down: 2,
            mode: CyclicMode::Triangular2,
            gamma: 1.0,
        },
        points: &[5, 10, 15, 16],
    },
    cyclic_exp_range: Row {
        schedule: Schedule::Cyclic {
            base: 0.01,
            max_lr: 0.1,
            step_size_up: 3,
            step_size_down: 3,
            mode: CyclicMode::ExpRange,
            gamma: 0.99,
        },
        points: &[6, 12],
    },
    piecewise_constant: Row {
        schedule: Schedule::piecewise_constant(vec![3, 10], vec![0.1, 0.05, 0.01]),
        points: &[3, 9, 10, 11],
    },
}

/// Every kind but ReduceOnPlateau has a row above (names checked against the catalog).
#[test]
fn every_counter_driven_kind_has_a_row() {
    let src = include_str!("schedule_position.rs");
    for spec in flatopt::schedule::specs() {
        if spec.name == "reduce_on_plateau" {
            continue;
        }
        let call = format!("Schedule::{}", spec.variant);
        let ctor = format!("Schedule::{}(", spec.name);
        let named = spec
            .name
            .replace("cosine_warm_restarts", "cosine_annealing_warm_restarts");
        assert!(
            src.contains(&call)
                || src.contains(&ctor)
                || src.contains(&format!("Schedule::{named}(")),
            "no row for schedule kind {}",
            spec.name
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Hostile rows: refused with the error named, the optimizer's checkpoint bytes unchanged.

struct Hostile {
    schedule: Schedule,
    /// Metrics fed first (ReduceOnPlateau), so that the state is not the initial one.
    metrics: &'static [f64],
    epoch: u64,
}

fn check_hostile(row: &str, h: Hostile) {
    let mut opt = manual(&h.schedule);
    for &m in h.metrics {
        opt.step_schedule_metric(m).expect("metric");
    }
    let before = opt.save();
    match opt.set_schedule_epoch(h.epoch) {
        Err(e @ Error::InvalidState(_)) => {
            assert!(
                e.to_string().contains("ReduceOnPlateau"),
                "{row}: message {e}"
            )
        }
        other => panic!("{row}: expected InvalidState, got {other:?}"),
    }
    assert_eq!(
        opt.save(),
        before,
        "{row}: a refused call changed the optimizer"
    );
    assert!(
        ScheduleState::at(&h.schedule, h.epoch).is_err(),
        "{row}: ScheduleState::at accepted it"
    );
}

rows! { check_hostile;
    plateau_fresh_zero: Hostile { schedule: Schedule::reduce_on_plateau(0.1), metrics: &[], epoch: 0 },
    plateau_after_metrics: Hostile {
        schedule: Schedule::reduce_on_plateau(0.1),
        metrics: &[3.0, 2.0, 2.5, 2.5],
        epoch: 4,
    },
    plateau_huge: Hostile { schedule: Schedule::reduce_on_plateau(0.1), metrics: &[1.0], epoch: u64::MAX },
}

/// Per-update mode: the position set is the counter updates then advance from.
#[test]
fn per_update_schedule_continues_from_the_position_set() {
    let s = Schedule::step(0.1, 2, 0.5);
    let mut a = Optimizer::new(Config::with_schedule(Base::sgd(), s.clone())).expect("new");
    let mut b = Optimizer::new(Config::with_schedule(Base::sgd(), s)).expect("new");
    let mut pa = [1.0f32, 2.0];
    let mut pb = pa;
    a.register(&[&pa]).expect("register");
    b.register(&[&pb]).expect("register");
    a.set_schedule_epoch(3).expect("set");
    for _ in 0..3 {
        b.step_schedule();
    }
    for _ in 0..4 {
        a.step(&mut [&mut pa], &[&[0.5, -0.25]]).expect("update a");
        b.step(&mut [&mut pb], &[&[0.5, -0.25]]).expect("update b");
        assert_eq!(a.schedule_state(), b.schedule_state());
    }
    assert_eq!(pa.map(f32::to_bits), pb.map(f32::to_bits));
    assert_eq!(a.save(), b.save());
}
