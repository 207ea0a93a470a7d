//! Learning-rate schedules: expected values, invalid configurations, state handling.
//!
//! Tables drive every test (PyTorch `OptimizerInfo` style): adding a schedule or a case adds a row.
//! Expected values were computed independently of this crate with Python 3.11 `math` (f64), from
//! the formulas in docs/numerics.md ("Schedules"); for the PyTorch-named schedules (ConstantLR,
//! LinearLR, StepLR, MultiStepLR, ExponentialLR, CosineAnnealingLR, CosineAnnealingWarmRestarts,
//! PolynomialLR, OneCycleLR, CyclicLR, ReduceLROnPlateau) by a line-by-line Python transcription of
//! `torch/optim/lr_scheduler.py` (`get_lr` / `step`), and for ExponentialDecay and WarmupCosine of
//! optax's `exponential_decay` / `warmup_cosine_decay_schedule`. Each literal is Python's `repr()`
//! of the result, so it parses back to the same f64. The Python expression used is quoted above
//! each row.

// The literals are Python's output; some happen to equal named constants (0.5 ** 0.5).
#![allow(clippy::approx_constant)]

use flatopt::error::Error;
use flatopt::schedule::*;

/// Relative tolerance 1e-12 (an expected 0 must be met to within 1e-300).
fn close(got: f64, want: f64) -> bool {
    (got - want).abs() <= 1e-12 * want.abs().max(1e-288)
}

/// One counter-driven schedule and its expected learning rate at several counters.
struct Case {
    name: &'static str,
    schedule: Schedule,
    points: &'static [(u64, f64)],
}

/// Names every variant; exhaustive, so a new variant must be added here (and to the tables).
fn variant(s: &Schedule) -> &'static str {
    match s {
        Schedule::Fixed { .. } => "Fixed",
        Schedule::Constant { .. } => "Constant",
        Schedule::Linear { .. } => "Linear",
        Schedule::Step { .. } => "Step",
        Schedule::MultiStep { .. } => "MultiStep",
        Schedule::Exponential { .. } => "Exponential",
        Schedule::ExponentialDecay { .. } => "ExponentialDecay",
        Schedule::CosineAnnealing { .. } => "CosineAnnealing",
        Schedule::CosineAnnealingWarmRestarts { .. } => "CosineAnnealingWarmRestarts",
        Schedule::Polynomial { .. } => "Polynomial",
        Schedule::Warmup { .. } => "Warmup",
        Schedule::WarmupCosine { .. } => "WarmupCosine",
        Schedule::OneCycle { .. } => "OneCycle",
        Schedule::Cyclic { .. } => "Cyclic",
        Schedule::PiecewiseConstant { .. } => "PiecewiseConstant",
        Schedule::ReduceOnPlateau { .. } => "ReduceOnPlateau",
    }
}

const ALL_VARIANTS: [&str; 16] = [
    "Fixed",
    "Constant",
    "Linear",
    "Step",
    "MultiStep",
    "Exponential",
    "ExponentialDecay",
    "CosineAnnealing",
    "CosineAnnealingWarmRestarts",
    "Polynomial",
    "Warmup",
    "WarmupCosine",
    "OneCycle",
    "Cyclic",
    "PiecewiseConstant",
    "ReduceOnPlateau",
];

fn one_cycle(
    max_lr: f64,
    total_steps: u64,
    pct_start: f64,
    div_factor: f64,
    final_div_factor: f64,
    anneal: Anneal,
) -> Schedule {
    Schedule::OneCycle {
        max_lr,
        total_steps,
        pct_start,
        div_factor,
        final_div_factor,
        anneal,
    }
}

fn cyclic(base: f64, max_lr: f64, up: u64, down: u64, mode: CyclicMode, gamma: f64) -> Schedule {
    Schedule::Cyclic {
        base,
        max_lr,
        step_size_up: up,
        step_size_down: down,
        mode,
        gamma,
    }
}

fn exp_decay(
    base: f64,
    decay_steps: u64,
    decay_rate: f64,
    transition_begin: u64,
    staircase: bool,
    end_value: Option<f64>,
) -> Schedule {
    Schedule::ExponentialDecay {
        base,
        decay_steps,
        decay_rate,
        transition_begin,
        staircase,
        end_value,
    }
}

fn cases() -> Vec<Case> {
    vec![
        // lr
        Case {
            name: "fixed",
            schedule: Schedule::fixed(0.05),
            points: &[(0, 0.05), (1, 0.05), (1000, 0.05)],
        },
        // base * factor if e < T else base
        Case {
            name: "constant_default",
            schedule: Schedule::constant(0.1, 1.0 / 3.0, 5),
            points: &[
                (0, 0.03333333333333333),
                (4, 0.03333333333333333),
                (5, 0.1),
                (6, 0.1),
                (100, 0.1),
            ],
        },
        Case {
            name: "constant_zero_iters",
            schedule: Schedule::constant(0.2, 0.5, 0),
            points: &[(0, 0.2), (3, 0.2)],
        },
        // base * (sf + (ef - sf) * min(T, e) / T)
        Case {
            name: "linear_warm",
            schedule: Schedule::linear(0.1, 1.0 / 3.0, 1.0, 5),
            points: &[
                (0, 0.03333333333333333),
                (1, 0.04666666666666667),
                (2, 0.06000000000000001),
                (3, 0.07333333333333335),
                (4, 0.08666666666666667),
                (5, 0.1),
                (6, 0.1),
                (50, 0.1),
            ],
        },
        Case {
            name: "linear_decay",
            schedule: Schedule::linear(0.2, 1.0, 0.0, 4),
            points: &[
                (0, 0.2),
                (1, 0.15000000000000002),
                (2, 0.1),
                (3, 0.05),
                (4, 0.0),
                (9, 0.0),
            ],
        },
        // base * g ** (e // step_size)
        Case {
            name: "step",
            schedule: Schedule::step(0.1, 3, 0.5),
            points: &[
                (0, 0.1),
                (2, 0.1),
                (3, 0.05),
                (5, 0.05),
                (6, 0.025),
                (9, 0.0125),
                (30, 9.765625e-05),
            ],
        },
        // base * g ** bisect.bisect_right(milestones, e)
        Case {
            name: "multistep",
            schedule: Schedule::multi_step(0.1, vec![2, 5, 9], 0.1),
            points: &[
                (0, 0.1),
                (1, 0.1),
                (2, 0.010000000000000002),
                (4, 0.010000000000000002),
                (5, 0.0010000000000000002),
                (8, 0.0010000000000000002),
                (9, 0.00010000000000000003),
                (100, 0.00010000000000000003),
            ],
        },
        Case {
            name: "multistep_zero_milestone",
            schedule: Schedule::multi_step(0.4, vec![0, 3], 0.5),
            points: &[(0, 0.2), (2, 0.2), (3, 0.1), (7, 0.1)],
        },
        // base * g ** e
        Case {
            name: "exponential",
            schedule: Schedule::exponential(0.1, 0.9),
            points: &[
                (0, 0.1),
                (1, 0.09000000000000001),
                (2, 0.08100000000000002),
                (10, 0.03486784401000001),
                (100, 2.6561398887587545e-06),
            ],
        },
        Case {
            name: "exponential_growth",
            schedule: Schedule::exponential(0.01, 1.1),
            points: &[
                (0, 0.01),
                (5, 0.016105100000000004),
                (50, 1.173908528796958),
            ],
        },
        // optax.exponential_decay: d = e - tb; p = d / steps (floored if staircase);
        // v = init if d <= 0 else init * rate ** p; max(v, end) if rate < 1 else min(v, end)
        Case {
            name: "expdecay_smooth",
            schedule: Schedule::exponential_decay(1.0, 10, 0.5),
            points: &[
                (0, 1.0),
                (1, 0.9330329915368074),
                (5, 0.7071067811865476),
                (10, 0.5),
                (25, 0.1767766952966369),
            ],
        },
        Case {
            name: "expdecay_staircase_begin",
            schedule: exp_decay(0.3, 5, 0.1, 3, true, None),
            points: &[
                (0, 0.3),
                (3, 0.3),
                (4, 0.3),
                (7, 0.3),
                (8, 0.03),
                (12, 0.03),
                (13, 0.0030000000000000005),
                (100, 3.000000000000003e-20),
            ],
        },
        Case {
            name: "expdecay_floor",
            schedule: exp_decay(1.0, 2, 0.5, 0, false, Some(0.1)),
            points: &[
                (0, 1.0),
                (2, 0.5),
                (6, 0.125),
                (7, 0.1),
                (8, 0.1),
                (100, 0.1),
            ],
        },
        Case {
            name: "expdecay_ceiling",
            schedule: exp_decay(0.01, 5, 2.0, 0, false, Some(0.05)),
            points: &[
                (0, 0.01),
                (5, 0.02),
                (10, 0.04),
                (11, 0.045947934199881406),
                (12, 0.05),
                (20, 0.05),
            ],
        },
        Case {
            name: "expdecay_end_above_base",
            schedule: exp_decay(0.1, 1, 0.5, 0, false, Some(0.2)),
            points: &[(0, 0.2), (5, 0.2)],
        },
        // decay_rate = 1: optax treats end_value as a ceiling (min).
        Case {
            name: "expdecay_rate_one_ceiling",
            schedule: exp_decay(0.1, 5, 1.0, 0, false, Some(0.05)),
            points: &[(0, 0.05), (7, 0.05)],
        },
        Case {
            name: "expdecay_rate_one_ceiling_above",
            schedule: exp_decay(0.1, 5, 1.0, 0, false, Some(0.2)),
            points: &[(0, 0.1), (7, 0.1)],
        },
        // eta + (base - eta) * (1 + math.cos(math.pi * min(e, T) / T)) / 2
        Case {
            name: "cosine",
            schedule: Schedule::cosine_annealing(0.1, 10, 0.001),
            points: &[
                (0, 0.1),
                (1, 0.09757729755661011),
                (3, 0.07959536998847742),
                (5, 0.0505),
                (9, 0.0034227024433899004),
                (10, 0.001),
                (11, 0.001),
                (50, 0.001),
            ],
        },
        Case {
            name: "cosine_eta0",
            schedule: Schedule::cosine_annealing(0.2, 4, 0.0),
            points: &[
                (0, 0.2),
                (1, 0.17071067811865476),
                (2, 0.1),
                (3, 0.029289321881345254),
                (4, 0.0),
                (7, 0.0),
            ],
        },
        // PyTorch CosineAnnealingWarmRestarts: e calls of step() (T_cur += 1; if T_cur >= T_i:
        // T_cur %= T_i; T_i *= T_mult), then get_lr()
        Case {
            name: "warm_restarts_mult1",
            schedule: Schedule::cosine_annealing_warm_restarts(0.1, 5, 1, 0.0),
            points: &[
                (0, 0.1),
                (1, 0.09045084971874738),
                (2, 0.06545084971874737),
                (3, 0.03454915028125263),
                (4, 0.009549150281252633),
                (5, 0.1),
                (6, 0.09045084971874738),
                (7, 0.06545084971874737),
                (8, 0.03454915028125263),
                (9, 0.009549150281252633),
                (10, 0.1),
                (11, 0.09045084971874738),
                (12, 0.06545084971874737),
            ],
        },
        Case {
            name: "warm_restarts_mult2",
            schedule: Schedule::cosine_annealing_warm_restarts(0.1, 3, 2, 0.01),
            points: &[
                (0, 0.1),
                (1, 0.0775),
                (2, 0.032500000000000015),
                (3, 0.1),
                (4, 0.09397114317029975),
                (8, 0.01602885682970026),
                (9, 0.1),
                (10, 0.09846666218300808),
                (15, 0.05500000000000001),
                (20, 0.011533337816991932),
                (21, 0.1),
                (22, 0.09961501876182148),
                (44, 0.010384981238178534),
                (45, 0.1),
            ],
        },
        // base * (1.0 - min(T, e) / T) ** power
        Case {
            name: "polynomial_sq",
            schedule: Schedule::polynomial(0.1, 5, 2.0),
            points: &[
                (0, 0.1),
                (1, 0.06400000000000002),
                (2, 0.036),
                (3, 0.016000000000000004),
                (4, 0.003999999999999998),
                (5, 0.0),
                (7, 0.0),
            ],
        },
        Case {
            name: "polynomial_sqrt",
            schedule: Schedule::polynomial(0.3, 8, 0.5),
            points: &[
                (0, 0.3),
                (1, 0.2806243040080456),
                (4, 0.21213203435596426),
                (7, 0.10606601717798213),
                (8, 0.0),
                (20, 0.0),
            ],
        },
        // base if e >= W else start + (base - start) * (e / W)
        Case {
            name: "warmup",
            schedule: Schedule::warmup(0.1, 4, 0.0),
            points: &[
                (0, 0.0),
                (1, 0.025),
                (2, 0.05),
                (3, 0.07500000000000001),
                (4, 0.1),
                (5, 0.1),
                (100, 0.1),
            ],
        },
        Case {
            name: "warmup_start",
            schedule: Schedule::warmup(0.1, 3, 0.01),
            points: &[(0, 0.01), (1, 0.04), (2, 0.07), (3, 0.1), (9, 0.1)],
        },
        Case {
            name: "warmup_zero",
            schedule: Schedule::warmup(0.1, 0, 0.5),
            points: &[(0, 0.1), (1, 0.1)],
        },
        // e < W: start + (peak - start) * (e / W); else D = total - W,
        // end + (peak - end) * (1 + math.cos(math.pi * min(e - W, D) / D)) / 2 (end if D == 0)
        Case {
            name: "warmup_cosine",
            schedule: Schedule::warmup_cosine(0.1, 5, 15, 0.0, 0.001),
            points: &[
                (0, 0.0),
                (1, 0.020000000000000004),
                (4, 0.08000000000000002),
                (5, 0.1),
                (6, 0.09757729755661011),
                (10, 0.0505),
                (14, 0.0034227024433899004),
                (15, 0.001),
                (16, 0.001),
                (100, 0.001),
            ],
        },
        Case {
            name: "warmup_cosine_no_decay",
            schedule: Schedule::warmup_cosine(0.1, 4, 4, 0.02, 0.005),
            points: &[(0, 0.02), (1, 0.04), (3, 0.08), (4, 0.005), (5, 0.005)],
        },
        Case {
            name: "warmup_cosine_no_warmup",
            schedule: Schedule::warmup_cosine(0.1, 0, 10, 0.0, 0.0),
            points: &[
                (0, 0.1),
                (1, 0.09755282581475769),
                (5, 0.05),
                (9, 0.0024471741852423235),
                (10, 0.0),
                (11, 0.0),
            ],
        },
        // PyTorch OneCycleLR.get_lr (two phases) at step_num = min(e, total - 1)
        Case {
            name: "onecycle_cos",
            schedule: Schedule::one_cycle(0.1, 100),
            points: &[
                (0, 0.0040000000000000036),
                (1, 0.004281378056590748),
                (10, 0.029516394846410082),
                (28, 0.09971862194340926),
                (29, 0.1),
                (30, 0.09994965352845243),
                (50, 0.0793893450575732),
                (98, 5.07464715475788e-05),
                (99, 4e-07),
                (100, 4e-07),
                (150, 4e-07),
            ],
        },
        Case {
            name: "onecycle_linear",
            schedule: one_cycle(0.1, 100, 0.3, 25.0, 1e4, Anneal::Linear),
            points: &[
                (0, 0.004),
                (1, 0.007310344827586207),
                (10, 0.037103448275862067),
                (28, 0.0966896551724138),
                (29, 0.1),
                (30, 0.09857143428571429),
                (50, 0.07000012),
                (98, 0.0014289657142857043),
                (99, 3.999999999976245e-07),
                (100, 3.999999999976245e-07),
                (150, 3.999999999976245e-07),
            ],
        },
        Case {
            name: "onecycle_fractional_e1",
            schedule: one_cycle(1.0, 10, 0.25, 10.0, 100.0, Anneal::Cos),
            points: &[
                (0, 0.09999999999999998),
                (1, 0.7749999999999999),
                (2, 0.9890847265665359),
                (3, 0.9046039886902862),
                (4, 0.75025),
                (5, 0.552711967402193),
                (6, 0.3461460113097138),
                (7, 0.16626926212375048),
                (8, 0.044184043907520815),
                (9, 0.001),
                (10, 0.001),
            ],
        },
        Case {
            name: "onecycle_empty_warmup",
            schedule: one_cycle(1.0, 10, 0.05, 10.0, 100.0, Anneal::Cos),
            points: &[
                (0, 0.9931874710496598),
                (1, 0.9397971387276413),
                (5, 0.37787999917317083),
                (9, 0.001),
                (12, 0.001),
            ],
        },
        // pct_start * total = 1 (e1 = 0): PyTorch divides by zero at e = 0; flatopt gives
        // initial_lr = 0.1 there, PyTorch's values elsewhere.
        Case {
            name: "onecycle_e1_zero",
            schedule: one_cycle(1.0, 10, 0.1, 10.0, 100.0, Anneal::Cos),
            points: &[
                (0, 0.1),
                (1, 0.9698764640825612),
                (5, 0.41376273525536833),
                (9, 0.001),
            ],
        },
        // PyTorch CyclicLR.get_lr with last_epoch = e
        Case {
            name: "cyclic_triangular",
            schedule: cyclic(0.001, 0.006, 4, 4, CyclicMode::Triangular, 1.0),
            points: &[
                (0, 0.001),
                (1, 0.0022500000000000003),
                (2, 0.0035),
                (3, 0.00475),
                (4, 0.006),
                (5, 0.00475),
                (6, 0.0035),
                (7, 0.0022500000000000003),
                (8, 0.001),
                (9, 0.0022500000000000003),
                (10, 0.0035),
                (11, 0.00475),
                (12, 0.006),
                (13, 0.00475),
                (14, 0.0035),
                (15, 0.0022500000000000003),
                (16, 0.001),
                (17, 0.0022500000000000003),
            ],
        },
        Case {
            name: "cyclic_triangular2",
            schedule: cyclic(0.001, 0.006, 3, 5, CyclicMode::Triangular2, 1.0),
            points: &[
                (0, 0.001),
                (1, 0.0026666666666666666),
                (2, 0.004333333333333333),
                (3, 0.006),
                (4, 0.005),
                (7, 0.002),
                (8, 0.001),
                (9, 0.0018333333333333333),
                (11, 0.0035),
                (16, 0.001),
                (19, 0.0022500000000000003),
                (24, 0.001),
                (27, 0.0016250000000000001),
            ],
        },
        Case {
            name: "cyclic_exp_range",
            schedule: cyclic(0.001, 0.006, 4, 4, CyclicMode::ExpRange, 0.99),
            points: &[
                (0, 0.001),
                (1, 0.0022375),
                (2, 0.00345025),
                (3, 0.00463862125),
                (4, 0.00580298005),
                (5, 0.004566212687124999),
                (8, 0.001),
                (12, 0.005431924358580646),
                (100, 0.002830161706366146),
            ],
        },
        Case {
            name: "cyclic_sawtooth",
            schedule: cyclic(0.01, 0.02, 4, 0, CyclicMode::Triangular, 1.0),
            points: &[
                (0, 0.01),
                (1, 0.0125),
                (2, 0.015),
                (3, 0.0175),
                (4, 0.01),
                (5, 0.0125),
                (6, 0.015),
                (7, 0.0175),
                (8, 0.01),
                (9, 0.0125),
            ],
        },
        Case {
            name: "cyclic_max_below_base",
            schedule: cyclic(0.05, 0.01, 2, 3, CyclicMode::Triangular, 1.0),
            points: &[
                (0, 0.05),
                (1, 0.030000000000000006),
                (2, 0.010000000000000009),
                (3, 0.02333333333333334),
                (4, 0.036666666666666674),
                (5, 0.05),
                (6, 0.029999999999999985),
            ],
        },
        // values[sum(1 for b in boundaries if b <= e)]
        Case {
            name: "piecewise",
            schedule: Schedule::piecewise_constant(vec![3, 7], vec![0.1, 0.05, 0.01]),
            points: &[
                (0, 0.1),
                (2, 0.1),
                (3, 0.05),
                (6, 0.05),
                (7, 0.01),
                (100, 0.01),
            ],
        },
        Case {
            name: "piecewise_single",
            schedule: Schedule::piecewise_constant(vec![], vec![0.3]),
            points: &[(0, 0.3), (9, 0.3)],
        },
    ]
}

#[test]
fn every_counter_schedule_matches_reference_values() {
    let mut failures = Vec::new();
    for case in cases() {
        case.schedule
            .validate()
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert!(!case.schedule.is_metric_driven(), "{}", case.name);
        let mut st = ScheduleState::new(&case.schedule);
        for &(e, want) in case.points {
            while st.count() < e {
                st.advance(&case.schedule);
            }
            assert_eq!(st.count(), e, "{}: points must be increasing", case.name);
            let got = st.lr(&case.schedule);
            if !close(got, want) {
                failures.push(format!(
                    "{} at e={e}: got {got:?}, want {want:?}",
                    case.name
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// One ReduceOnPlateau run: the metrics fed and the lr after each.
struct PlateauCase {
    name: &'static str,
    schedule: Schedule,
    metrics: &'static [f64],
    lrs: &'static [f64],
}

#[allow(clippy::too_many_arguments)]
fn plateau(
    base: f64,
    mode: PlateauMode,
    factor: f64,
    patience: u64,
    threshold: f64,
    threshold_mode: ThresholdMode,
    cooldown: u64,
    min_lr: f64,
) -> Schedule {
    Schedule::ReduceOnPlateau {
        base,
        mode,
        factor,
        patience,
        threshold,
        threshold_mode,
        cooldown,
        min_lr,
    }
}

fn plateau_cases() -> Vec<PlateauCase> {
    use PlateauMode::{Max, Min};
    use ThresholdMode::{Abs, Rel};
    // Python transcription of PyTorch ReduceLROnPlateau.step(metric) (eps = 1e-8), the lr
    // recorded after each metric.
    vec![
        PlateauCase {
            name: "min_rel_patience2",
            schedule: plateau(0.1, Min, 0.5, 2, 1e-4, Rel, 0, 0.0),
            metrics: &[1.0, 0.9, 0.9, 0.9, 0.9, 0.8, 0.85, 0.85, 0.85, 0.79999, 0.7],
            lrs: &[
                0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05, 0.025, 0.025, 0.025,
            ],
        },
        PlateauCase {
            name: "min_rel_threshold",
            schedule: plateau(1.0, Min, 0.1, 0, 1e-3, Rel, 0, 0.0),
            metrics: &[1.0, 0.9995, 0.998, 0.99715, 0.99, 0.99],
            lrs: &[
                1.0,
                0.1,
                0.1,
                0.010000000000000002,
                0.010000000000000002,
                0.0010000000000000002,
            ],
        },
        PlateauCase {
            name: "min_abs_cooldown",
            schedule: plateau(1.0, Min, 0.1, 1, 0.05, Abs, 2, 0.0),
            metrics: &[
                2.0, 1.96, 1.97, 1.5, 1.5, 1.5, 1.5, 1.5, 1.5, 1.44, 1.5, 1.5,
            ],
            lrs: &[
                1.0,
                1.0,
                0.1,
                0.1,
                0.1,
                0.1,
                0.010000000000000002,
                0.010000000000000002,
                0.010000000000000002,
                0.010000000000000002,
                0.010000000000000002,
                0.0010000000000000002,
            ],
        },
        PlateauCase {
            name: "max_rel",
            schedule: plateau(0.5, Max, 0.2, 1, 0.01, Rel, 0, 0.0),
            metrics: &[0.5, 0.504, 0.506, 0.6, 0.605, 0.59, 0.7, 0.7, 0.71, 0.7],
            lrs: &[0.5, 0.5, 0.5, 0.5, 0.5, 0.1, 0.1, 0.1, 0.1, 0.1],
        },
        PlateauCase {
            name: "max_abs_cooldown_floor",
            schedule: plateau(0.1, Max, 0.5, 0, 0.1, Abs, 1, 0.03),
            metrics: &[1.0, 1.05, 1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 1.0],
            lrs: &[0.1, 0.05, 0.05, 0.03, 0.03, 0.03, 0.03, 0.03, 0.03],
        },
        PlateauCase {
            name: "min_lr_floor",
            schedule: plateau(0.1, Min, 0.5, 0, 1e-4, Rel, 0, 0.03),
            metrics: &[1.0, 1.0, 1.0, 1.0, 1.0],
            lrs: &[0.1, 0.05, 0.03, 0.03, 0.03],
        },
        // old - new = 7.5e-9 <= eps: PyTorch keeps the old lr.
        PlateauCase {
            name: "eps_blocks_tiny_reduction",
            schedule: plateau(1.5e-8, Min, 0.5, 0, 1e-4, Rel, 0, 0.0),
            metrics: &[1.0, 2.0, 3.0],
            lrs: &[1.5e-08, 1.5e-08, 1.5e-08],
        },
        // PyTorch's relative threshold on negative metrics: best * (1 - t) is above best.
        PlateauCase {
            name: "negative_metrics_min_rel",
            schedule: plateau(0.1, Min, 0.1, 0, 0.1, Rel, 0, 0.0),
            metrics: &[-1.0, -1.05, -1.2, -1.2],
            lrs: &[0.1, 0.1, 0.1, 0.1],
        },
    ]
}

#[test]
fn reduce_on_plateau_matches_reference_sequences() {
    let mut failures = Vec::new();
    for case in plateau_cases() {
        assert_eq!(case.metrics.len(), case.lrs.len(), "{}", case.name);
        case.schedule.validate().unwrap();
        assert!(case.schedule.is_metric_driven());
        let mut st = ScheduleState::new(&case.schedule);
        let base = match case.schedule {
            Schedule::ReduceOnPlateau { base, .. } => base,
            _ => unreachable!(),
        };
        assert_eq!(st.lr(&case.schedule), base, "{}", case.name);
        for (i, (&m, &want)) in case.metrics.iter().zip(case.lrs).enumerate() {
            st.step_metric(&case.schedule, m).unwrap();
            assert_eq!(st.count(), i as u64 + 1, "{}", case.name);
            let got = st.lr(&case.schedule);
            if !close(got, want) {
                failures.push(format!(
                    "{} after metric {i} ({m}): got {got:?}, want {want:?}",
                    case.name
                ));
            }
            // advance is a no-op for a metric-driven schedule.
            let before = st.clone();
            st.advance(&case.schedule);
            assert_eq!(st, before, "{}", case.name);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_variant_has_reference_values() {
    let mut seen: Vec<&str> = cases().iter().map(|c| variant(&c.schedule)).collect();
    seen.extend(plateau_cases().iter().map(|c| variant(&c.schedule)));
    for v in ALL_VARIANTS {
        assert!(seen.contains(&v), "no reference values for {v}");
    }
    // Warm restarts with t_mult = 1 and 2, all three cyclic modes, both anneals.
    for needle in [
        "warm_restarts_mult1",
        "warm_restarts_mult2",
        "cyclic_triangular",
        "cyclic_triangular2",
        "cyclic_exp_range",
        "onecycle_cos",
        "onecycle_linear",
    ] {
        assert!(cases().iter().any(|c| c.name == needle), "{needle}");
    }
}

/// Invalid configurations and the hyperparameter each must be rejected for.
fn invalid_cases() -> Vec<(Schedule, &'static str)> {
    let nan = f64::NAN;
    let inf = f64::INFINITY;
    let p = |factor: f64, threshold: f64, threshold_mode: ThresholdMode, min_lr: f64| {
        plateau(
            0.1,
            PlateauMode::Min,
            factor,
            10,
            threshold,
            threshold_mode,
            0,
            min_lr,
        )
    };
    vec![
        (Schedule::fixed(-0.1), "lr"),
        (Schedule::fixed(nan), "lr"),
        (Schedule::fixed(inf), "lr"),
        (Schedule::constant(-1.0, 0.5, 5), "base"),
        (Schedule::constant(0.1, 1.5, 5), "factor"),
        (Schedule::constant(0.1, -0.1, 5), "factor"),
        (Schedule::constant(0.1, nan, 5), "factor"),
        (Schedule::linear(nan, 0.5, 1.0, 5), "base"),
        (Schedule::linear(0.1, 1.5, 1.0, 5), "start_factor"),
        (Schedule::linear(0.1, -0.5, 1.0, 5), "start_factor"),
        (Schedule::linear(0.1, 0.5, 1.01, 5), "end_factor"),
        (Schedule::linear(0.1, 0.5, -1.0, 5), "end_factor"),
        (Schedule::linear(0.1, 0.5, 1.0, 0), "total_iters"),
        (Schedule::step(-0.1, 3, 0.1), "base"),
        (Schedule::step(0.1, 0, 0.1), "step_size"),
        (Schedule::step(0.1, 3, 0.0), "gamma"),
        (Schedule::step(0.1, 3, -0.5), "gamma"),
        (Schedule::step(0.1, 3, inf), "gamma"),
        (Schedule::multi_step(0.1, vec![3, 3], 0.1), "milestones"),
        (Schedule::multi_step(0.1, vec![5, 2], 0.1), "milestones"),
        (
            Schedule::multi_step(0.1, vec![1, 4, 4, 9], 0.1),
            "milestones",
        ),
        (Schedule::multi_step(0.1, vec![2, 5], nan), "gamma"),
        (Schedule::multi_step(inf, vec![2, 5], 0.1), "base"),
        (Schedule::exponential(0.1, 0.0), "gamma"),
        (Schedule::exponential(0.1, nan), "gamma"),
        (Schedule::exponential(-0.1, 0.9), "base"),
        (Schedule::exponential_decay(-1.0, 10, 0.5), "base"),
        (Schedule::exponential_decay(1.0, 0, 0.5), "decay_steps"),
        (Schedule::exponential_decay(1.0, 10, 0.0), "decay_rate"),
        (Schedule::exponential_decay(1.0, 10, -0.5), "decay_rate"),
        (Schedule::exponential_decay(1.0, 10, inf), "decay_rate"),
        (exp_decay(1.0, 10, 0.5, 0, false, Some(-0.1)), "end_value"),
        (exp_decay(1.0, 10, 0.5, 0, false, Some(nan)), "end_value"),
        (Schedule::cosine_annealing(0.1, 0, 0.0), "t_max"),
        (Schedule::cosine_annealing(0.1, 10, -0.001), "eta_min"),
        (Schedule::cosine_annealing(-0.1, 10, 0.0), "base"),
        (
            Schedule::cosine_annealing_warm_restarts(0.1, 0, 1, 0.0),
            "t_0",
        ),
        (
            Schedule::cosine_annealing_warm_restarts(0.1, 5, 0, 0.0),
            "t_mult",
        ),
        (
            Schedule::cosine_annealing_warm_restarts(0.1, 5, 1, nan),
            "eta_min",
        ),
        (
            Schedule::cosine_annealing_warm_restarts(nan, 5, 1, 0.0),
            "base",
        ),
        (Schedule::polynomial(0.1, 0, 1.0), "total_iters"),
        (Schedule::polynomial(0.1, 5, -1.0), "power"),
        (Schedule::polynomial(0.1, 5, inf), "power"),
        (Schedule::polynomial(-0.1, 5, 1.0), "base"),
        (Schedule::warmup(-0.1, 5, 0.0), "base"),
        (Schedule::warmup(0.1, 5, -0.01), "start_lr"),
        (Schedule::warmup(0.1, 5, inf), "start_lr"),
        (
            Schedule::warmup_cosine(0.1, 11, 10, 0.0, 0.0),
            "warmup_steps",
        ),
        (Schedule::warmup_cosine(0.1, 0, 0, 0.0, 0.0), "total_steps"),
        (Schedule::warmup_cosine(0.1, 2, 10, -1.0, 0.0), "start_lr"),
        (Schedule::warmup_cosine(0.1, 2, 10, 0.0, -1.0), "eta_min"),
        (Schedule::warmup_cosine(nan, 2, 10, 0.0, 0.0), "base"),
        (Schedule::one_cycle(-0.1, 100), "max_lr"),
        (Schedule::one_cycle(0.1, 0), "total_steps"),
        (
            one_cycle(0.1, 100, 0.0, 25.0, 1e4, Anneal::Cos),
            "pct_start",
        ),
        (
            one_cycle(0.1, 100, 1.0, 25.0, 1e4, Anneal::Cos),
            "pct_start",
        ),
        (
            one_cycle(0.1, 100, nan, 25.0, 1e4, Anneal::Cos),
            "pct_start",
        ),
        (
            one_cycle(0.1, 100, 0.3, 0.0, 1e4, Anneal::Cos),
            "div_factor",
        ),
        (
            one_cycle(0.1, 100, 0.3, -25.0, 1e4, Anneal::Cos),
            "div_factor",
        ),
        (
            one_cycle(0.1, 100, 0.3, 1e-310, 1e4, Anneal::Cos),
            "div_factor",
        ),
        (
            one_cycle(0.1, 100, 0.3, 25.0, 0.0, Anneal::Cos),
            "final_div_factor",
        ),
        (
            one_cycle(0.1, 100, 0.3, 25.0, inf, Anneal::Cos),
            "final_div_factor",
        ),
        (
            one_cycle(3e38, 100, 0.3, 1.0, 1e-300, Anneal::Cos),
            "final_div_factor",
        ),
        (
            one_cycle(3e38, 100, 0.3, 1e-300, 1.0, Anneal::Cos),
            "div_factor",
        ),
        // A learning rate past the f32 range is refused when configured.
        (one_cycle(1e300, 100, 0.3, 25.0, 1e4, Anneal::Cos), "max_lr"),
        (
            cyclic(-0.001, 0.006, 4, 4, CyclicMode::Triangular, 1.0),
            "base",
        ),
        (
            cyclic(0.001, nan, 4, 4, CyclicMode::Triangular, 1.0),
            "max_lr",
        ),
        (
            cyclic(0.001, 0.006, 0, 4, CyclicMode::Triangular, 1.0),
            "step_size_up",
        ),
        (
            cyclic(0.001, 0.006, 4, 4, CyclicMode::Triangular, 0.0),
            "gamma",
        ),
        (
            cyclic(0.001, 0.006, 4, 4, CyclicMode::ExpRange, -0.9),
            "gamma",
        ),
        (
            cyclic(0.001, 0.006, 4, 4, CyclicMode::ExpRange, 1.01),
            "gamma",
        ),
        (
            Schedule::piecewise_constant(vec![3, 3], vec![0.1, 0.2, 0.3]),
            "boundaries",
        ),
        (
            Schedule::piecewise_constant(vec![5, 3], vec![0.1, 0.2, 0.3]),
            "boundaries",
        ),
        (
            Schedule::piecewise_constant(vec![3, 7], vec![0.1, 0.2]),
            "values",
        ),
        (
            Schedule::piecewise_constant(vec![3], vec![0.1, 0.2, 0.3]),
            "values",
        ),
        (Schedule::piecewise_constant(vec![], vec![]), "values"),
        (
            Schedule::piecewise_constant(vec![3], vec![0.1, -0.2]),
            "values",
        ),
        (
            Schedule::piecewise_constant(vec![3], vec![nan, 0.2]),
            "values",
        ),
        (
            plateau(
                -0.1,
                PlateauMode::Min,
                0.1,
                10,
                1e-4,
                ThresholdMode::Rel,
                0,
                0.0,
            ),
            "base",
        ),
        (p(1.0, 1e-4, ThresholdMode::Rel, 0.0), "factor"),
        (p(1.5, 1e-4, ThresholdMode::Rel, 0.0), "factor"),
        (p(0.0, 1e-4, ThresholdMode::Rel, 0.0), "factor"),
        (p(nan, 1e-4, ThresholdMode::Rel, 0.0), "factor"),
        (p(0.1, -1e-4, ThresholdMode::Rel, 0.0), "threshold"),
        (p(0.1, 1.0, ThresholdMode::Rel, 0.0), "threshold"),
        (p(0.1, -1.0, ThresholdMode::Abs, 0.0), "threshold"),
        (p(0.1, inf, ThresholdMode::Abs, 0.0), "threshold"),
        (p(0.1, 1e-4, ThresholdMode::Rel, -1e-6), "min_lr"),
        (p(0.1, 1e-4, ThresholdMode::Rel, nan), "min_lr"),
    ]
}

#[test]
fn invalid_configurations_are_rejected_naming_the_argument() {
    let mut failures = Vec::new();
    for (s, want) in invalid_cases() {
        match s.validate() {
            Err(Error::InvalidArgument {
                name,
                ref value,
                expected,
            }) => {
                if name != want || value.is_empty() || expected.is_empty() {
                    failures.push(format!(
                        "{s:?}: got {name} = {value} ({expected}), want {want}"
                    ));
                }
                let msg = s.validate().unwrap_err().to_string();
                assert!(msg.contains(want), "{msg}");
            }
            other => failures.push(format!(
                "{s:?}: got {other:?}, want InvalidArgument({want})"
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_variant_has_invalid_configurations() {
    let seen: Vec<&str> = invalid_cases().iter().map(|(s, _)| variant(s)).collect();
    for v in ALL_VARIANTS {
        assert!(seen.contains(&v), "no invalid configuration for {v}");
    }
}

/// Edge configurations that are valid (domain boundaries), with finite, non-negative rates.
fn valid_edge_cases() -> Vec<Schedule> {
    vec![
        Schedule::fixed(0.0),
        Schedule::constant(0.1, 0.0, 5),
        Schedule::constant(0.1, 1.0, 0),
        Schedule::linear(0.1, 0.0, 1.0, 1),
        Schedule::linear(0.0, 1.0, 0.0, 3),
        Schedule::step(0.1, 1, 1.0),
        Schedule::multi_step(0.1, vec![], 0.1),
        Schedule::multi_step(0.1, vec![0], 0.5),
        Schedule::exponential(0.1, 1.0),
        exp_decay(1.0, 1, 1.0, 5, true, Some(0.0)),
        exp_decay(1.0, 3, 0.5, u64::MAX, false, None),
        Schedule::cosine_annealing(0.1, 1, 0.1),
        Schedule::cosine_annealing(0.01, 5, 0.1),
        Schedule::cosine_annealing_warm_restarts(0.1, 1, 1, 0.0),
        Schedule::cosine_annealing_warm_restarts(0.1, 1, u64::MAX, 0.0),
        Schedule::polynomial(0.1, 1, 0.0),
        Schedule::warmup(0.1, 0, 0.0),
        Schedule::warmup_cosine(0.1, 10, 10, 0.0, 0.0),
        Schedule::warmup_cosine(0.1, 0, 1, 0.0, 0.0),
        one_cycle(0.1, 1, 0.5, 25.0, 1e4, Anneal::Cos),
        one_cycle(0.1, 1, 0.999, 1.0, 1.0, Anneal::Linear),
        one_cycle(0.0, 10, 0.3, 25.0, 1e4, Anneal::Cos),
        cyclic(0.001, 0.006, 1, 0, CyclicMode::Triangular2, 1.0),
        cyclic(0.001, 0.006, 4, 4, CyclicMode::ExpRange, 1.0),
        cyclic(0.001, 0.006, 4, 4, CyclicMode::Triangular, 7.0),
        Schedule::piecewise_constant(vec![0], vec![0.0, 0.1]),
        plateau(
            0.1,
            PlateauMode::Max,
            0.5,
            0,
            0.0,
            ThresholdMode::Abs,
            0,
            1.0,
        ),
        plateau(
            0.1,
            PlateauMode::Min,
            0.999,
            0,
            0.999,
            ThresholdMode::Rel,
            0,
            0.0,
        ),
    ]
}

#[test]
fn domain_edges_are_accepted_and_stay_finite() {
    for s in valid_edge_cases() {
        s.validate().unwrap_or_else(|e| panic!("{s:?}: {e}"));
        let mut st = ScheduleState::new(&s);
        for i in 0..300u64 {
            let lr = st.lr(&s);
            assert!(lr.is_finite() && lr >= 0.0, "{s:?} at {i}: {lr}");
            if s.is_metric_driven() {
                st.step_metric(&s, (i % 7) as f64).unwrap();
            } else {
                st.advance(&s);
            }
        }
    }
}

#[test]
fn reference_schedules_stay_finite_and_non_negative_over_a_long_run() {
    for case in cases() {
        if case.name == "exponential_growth" {
            continue; // grows without bound by design
        }
        let mut st = ScheduleState::new(&case.schedule);
        for e in 0..5000u64 {
            let lr = st.lr(&case.schedule);
            assert!(lr.is_finite() && lr >= 0.0, "{} at {e}: {lr}", case.name);
            st.advance(&case.schedule);
        }
    }
}

#[test]
fn advancing_agrees_with_a_fresh_state_advanced_e_times() {
    for case in cases() {
        let s = &case.schedule;
        let last = case.points.last().unwrap().0.clamp(30, 120);
        let mut running = ScheduleState::new(s);
        for e in 0..=last {
            let mut fresh = ScheduleState::new(s);
            for _ in 0..e {
                fresh.advance(s);
            }
            assert_eq!(fresh.count(), e, "{}", case.name);
            assert_eq!(running, fresh, "{} at e={e}", case.name);
            assert_eq!(
                running.lr(s).to_bits(),
                fresh.lr(s).to_bits(),
                "{} at e={e}",
                case.name
            );
            // lr is a pure read.
            let before = running.clone();
            let _ = running.lr(s);
            assert_eq!(running, before);
            running.advance(s);
        }
    }
}

#[test]
fn step_metric_errors_leave_the_state_unchanged() {
    let s = plateau(
        0.1,
        PlateauMode::Min,
        0.5,
        1,
        1e-4,
        ThresholdMode::Rel,
        2,
        0.0,
    );
    let mut st = ScheduleState::new(&s);
    for m in [1.0, 2.0, 2.0, 2.0] {
        st.step_metric(&s, m).unwrap();
    }
    assert_eq!(st.lr(&s), 0.05);
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let before = st.clone();
        match st.step_metric(&s, bad) {
            Err(Error::InvalidArgument { name, .. }) => assert_eq!(name, "metric"),
            other => panic!("metric {bad}: {other:?}"),
        }
        assert_eq!(st, before, "metric {bad}");
    }
    // The errors did not count as metrics: the run goes on as if they never happened.
    let mut reference = ScheduleState::new(&s);
    for m in [1.0, 2.0, 2.0, 2.0] {
        reference.step_metric(&s, m).unwrap();
    }
    assert_eq!(st, reference);

    // A counter-driven schedule refuses metrics, whatever the metric.
    for s in cases().into_iter().map(|c| c.schedule) {
        let mut st = ScheduleState::new(&s);
        st.advance(&s);
        let before = st.clone();
        for m in [0.5, f64::NAN] {
            assert!(
                matches!(st.step_metric(&s, m), Err(Error::InvalidState(_))),
                "{s:?}"
            );
            assert_eq!(st, before);
        }
    }
}

#[test]
fn constructors_use_the_documented_defaults() {
    assert_eq!(
        Schedule::one_cycle(0.1, 100),
        one_cycle(0.1, 100, 0.3, 25.0, 1e4, Anneal::Cos)
    );
    assert_eq!(
        Schedule::cyclic(0.001, 0.006, 2000),
        cyclic(0.001, 0.006, 2000, 2000, CyclicMode::Triangular, 1.0)
    );
    assert_eq!(
        Schedule::reduce_on_plateau(0.1),
        plateau(
            0.1,
            PlateauMode::Min,
            0.1,
            10,
            1e-4,
            ThresholdMode::Rel,
            0,
            0.0
        )
    );
    assert_eq!(
        Schedule::exponential_decay(1.0, 10, 0.5),
        exp_decay(1.0, 10, 0.5, 0, false, None)
    );
    assert_eq!(Schedule::fixed(0.1), Schedule::Fixed { lr: 0.1 });
    assert_eq!(
        Schedule::step(0.1, 3, 0.5),
        Schedule::Step {
            base: 0.1,
            step_size: 3,
            gamma: 0.5
        }
    );
    assert!(Schedule::reduce_on_plateau(0.1).is_metric_driven());
    assert!(!Schedule::fixed(0.1).is_metric_driven());
}

#[test]
fn unvalidated_schedules_do_not_panic() {
    let bad = [
        Schedule::step(0.1, 0, 0.1),
        Schedule::linear(0.1, 0.5, 1.0, 0),
        Schedule::cosine_annealing(0.1, 0, 0.0),
        Schedule::cosine_annealing_warm_restarts(0.1, 0, 0, 0.0),
        Schedule::piecewise_constant(vec![3], vec![]),
        Schedule::piecewise_constant(vec![3, 5], vec![0.1]),
        Schedule::warmup_cosine(0.1, 20, 10, 0.0, 0.0),
        cyclic(0.1, 0.2, 0, 0, CyclicMode::Triangular2, 1.0),
        Schedule::one_cycle(0.1, 0),
    ];
    for s in bad {
        assert!(s.validate().is_err(), "{s:?}");
        let mut st = ScheduleState::new(&s);
        for _ in 0..30 {
            let _ = st.lr(&s);
            st.advance(&s);
        }
    }
}

#[test]
fn warm_restarts_cycle_lengths_follow_t_mult() {
    // Restarts (lr back to base) happen at e = 3, 3 + 6 = 9, 9 + 12 = 21, 21 + 24 = 45.
    let s = Schedule::cosine_annealing_warm_restarts(0.1, 3, 2, 0.0);
    let mut st = ScheduleState::new(&s);
    let mut restarts = Vec::new();
    for e in 0..50u64 {
        if e > 0 && st.lr(&s) == 0.1 {
            restarts.push(e);
        }
        st.advance(&s);
    }
    assert_eq!(restarts, [3, 9, 21, 45]);
}
