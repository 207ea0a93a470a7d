//! Hostile inputs through the Rust API, PyTorch `OptimizerInfo` style: a table of bad inputs per
//! entry point, each with the error it must give, and the check that the refused call left the
//! parameters and the whole optimizer state bit-identical (digest: the checkpoint bytes of
//! `Optimizer::save` plus the parameter bits plus the caller's other buffers).
//!
//! - every float field of `Base`, `Config`, `Lookahead` and every `Schedule` variant with NaN,
//!   ±Inf, negative and out-of-range values, and the integer fields with their bad values;
//! - zero, wrong and enormous lengths (a 32 GiB `MAP_NORESERVE` mapping that is never touched)
//!   for every call taking buffers, stateless kernels included;
//! - wrong call order (before registration, a stale `Step`, begin twice);
//! - damaged, crafted and mismatched checkpoints and bad paths;
//! - non-finite gradients: a skipped update changes no byte of the checkpoint but the skipped
//!   counter, and does not advance the step (bias correction), the Lookahead sync timing or
//!   the schedule state; the report names the first bad buffer and index.

#[macro_use]
#[path = "common/rows.rs"]
mod rows;

use flatopt::engine::GroupOptions;
use flatopt::kernels::{self, Buffers, Op, Plan, Rule};
use flatopt::schedule::{Anneal, CyclicMode, PlateauMode, ThresholdMode};
use flatopt::{
    Base, Config, Error, NonFinitePolicy, Optimizer, Outcome, Schedule, ScheduleMode,
    ScheduleState, Step, Tier,
};

// ---------------------------------------------------------------------------------------------
// Expected errors.

#[derive(Debug, Clone)]
enum Expect {
    /// `InvalidArgument` naming this argument.
    Invalid(&'static str),
    /// `LengthMismatch` whose `what` contains this.
    Length(&'static str),
    State,
    Unsupported,
    Corrupt,
    Io,
    /// `Overlap` whose message contains this.
    Overlap(&'static str),
}

fn check_error(r: Result<(), Error>, want: &Expect, ctx: &str) {
    let e = match r {
        Ok(()) => panic!("{ctx}: accepted, expected {want:?}"),
        Err(e) => e,
    };
    let ok = match (want, &e) {
        (Expect::Invalid(n), Error::InvalidArgument { name, .. }) => {
            name == n && e.to_string().contains(&format!("invalid {n} = "))
        }
        (Expect::Length(w), Error::LengthMismatch { what, .. }) => what.contains(w),
        (Expect::Overlap(w), Error::Overlap { what }) => what.contains(w),
        (Expect::State, Error::InvalidState(_))
        | (Expect::Unsupported, Error::Unsupported(_))
        | (Expect::Corrupt, Error::Corrupt(_))
        | (Expect::Io, Error::Io(_)) => true,
        _ => false,
    };
    assert!(ok, "{ctx}: got {e:?} ({e}), expected {want:?}");
}

// ---------------------------------------------------------------------------------------------
// Configuration fields.

#[derive(Debug, Clone, Copy)]
enum Domain {
    /// Finite and >= 0.
    NonNeg,
    /// Finite and > 0.
    Positive,
    /// [0, 1).
    UnitOpen,
    /// [0, 1].
    UnitClosed,
    /// (0, 1).
    UnitExclusive,
}

/// Values outside the domain: NaN (both signs), ±Inf, negatives, and the domain's own edges.
fn bad_values(d: Domain) -> Vec<f64> {
    let mut v = vec![
        f64::NAN,
        -f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        -1.0,
        -5e-324,
        -1e300,
    ];
    match d {
        Domain::NonNeg => {}
        Domain::Positive => v.extend([0.0, -0.0]),
        Domain::UnitOpen => v.extend([1.0, 1.5, f64::MAX]),
        Domain::UnitClosed => v.extend([1.000_000_000_000_000_2, 2.0]),
        Domain::UnitExclusive => v.extend([0.0, -0.0, 1.0]),
    }
    v
}

/// Values at the edge of the domain that must be accepted. Fields the kernels use in f32 are
/// checked after rounding to f32 too (tests/hostile_values.rs has the values refused there),
/// so the edges are the f32 ones: the largest finite f32, the smallest subnormal, the largest
/// f32 below 1.
fn edge_values(d: Domain) -> Vec<f64> {
    match d {
        Domain::NonNeg => vec![0.0, -0.0, f32::MAX as f64],
        Domain::Positive => vec![1.401_298_464_324_817e-45, f32::MAX as f64],
        Domain::UnitOpen => vec![0.0, 0.999_999_940_395_355_2],
        Domain::UnitClosed => vec![0.0, 1.0],
        Domain::UnitExclusive => vec![5e-324, 0.999_999_999_999_999_9],
    }
}

fn sched(s: Schedule) -> Config {
    Config::with_schedule(Base::sgd(), s)
}

fn adam(b1: f64, b2: f64, eps: f64) -> Config {
    Config::new(
        Base::Adam {
            b1,
            b2,
            eps,
            amsgrad: false,
        },
        1e-3,
    )
}

fn adamw(b1: f64, b2: f64, eps: f64, weight_decay: f64) -> Config {
    Config::new(
        Base::AdamW {
            b1,
            b2,
            eps,
            weight_decay,
        },
        1e-3,
    )
}

fn radam(b1: f64, b2: f64, eps: f64) -> Config {
    Config::new(Base::RAdam { b1, b2, eps }, 1e-3)
}

fn adagrad(lr_decay: f64, initial_accumulator_value: f64, eps: f64) -> Config {
    Config::new(
        Base::Adagrad {
            lr_decay,
            initial_accumulator_value,
            eps,
            eps_inside_sqrt: false,
        },
        1e-2,
    )
}

fn rmsprop(alpha: f64, eps: f64, momentum: f64, initial_scale: f64) -> Config {
    Config::new(
        Base::RmsProp {
            alpha,
            eps,
            momentum,
            centered: true,
            eps_inside_sqrt: true,
            initial_scale,
        },
        1e-2,
    )
}

fn adamax(b1: f64, b2: f64, eps: f64) -> Config {
    Config::new(
        Base::Adamax {
            b1,
            b2,
            eps,
            eps_outside_max: false,
        },
        2e-3,
    )
}

fn nadam(b1: f64, b2: f64, eps: f64, momentum_decay: f64, decoupled: f64) -> Config {
    Config::new(
        Base::NAdam {
            b1,
            b2,
            eps,
            momentum_decay,
            constant_momentum: false,
            decoupled_weight_decay: decoupled,
        },
        2e-3,
    )
}

fn lion(b1: f64, b2: f64, weight_decay: f64) -> Config {
    Config::new(
        Base::Lion {
            b1,
            b2,
            weight_decay,
        },
        1e-4,
    )
}

fn adabelief(b1: f64, b2: f64, eps: f64, eps_root: f64) -> Config {
    Config::new(
        Base::AdaBelief {
            b1,
            b2,
            eps,
            eps_root,
        },
        1e-3,
    )
}

fn yogi(b1: f64, b2: f64, eps: f64, initial_accumulator_value: f64) -> Config {
    Config::new(
        Base::Yogi {
            b1,
            b2,
            eps,
            initial_accumulator_value,
        },
        1e-2,
    )
}

fn adadelta(rho: f64, eps: f64) -> Config {
    Config::new(Base::Adadelta { rho, eps }, 1.0)
}

fn rprop(eta_minus: f64, eta_plus: f64, min_step_size: f64, max_step_size: f64) -> Config {
    Config::new(
        Base::Rprop {
            eta_minus,
            eta_plus,
            min_step_size,
            max_step_size,
        },
        1e-2,
    )
}

fn lamb(b1: f64, b2: f64, eps: f64, eps_root: f64, weight_decay: f64) -> Config {
    Config::new(
        Base::Lamb {
            b1,
            b2,
            eps,
            eps_root,
            weight_decay,
        },
        1e-2,
    )
}

fn lars(momentum: f64, weight_decay: f64, trust_coefficient: f64, eps: f64) -> Config {
    Config::new(
        Base::Lars {
            momentum,
            nesterov: false,
            weight_decay,
            trust_coefficient,
            eps,
        },
        1.0,
    )
}

fn novograd(b1: f64, b2: f64, eps: f64, eps_root: f64, weight_decay: f64) -> Config {
    Config::new(
        Base::Novograd {
            b1,
            b2,
            eps,
            eps_root,
            weight_decay,
        },
        1e-2,
    )
}

fn sgd(momentum: f64, dampening: f64) -> Config {
    Config::new(
        Base::Sgd {
            momentum,
            dampening,
            nesterov: false,
        },
        0.1,
    )
}

fn one_cycle(max_lr: f64, pct: f64, div: f64, fin: f64) -> Config {
    sched(Schedule::OneCycle {
        max_lr,
        total_steps: 100,
        pct_start: pct,
        div_factor: div,
        final_div_factor: fin,
        anneal: Anneal::Cos,
    })
}

fn cyclic(base: f64, max_lr: f64, gamma: f64) -> Config {
    sched(Schedule::Cyclic {
        base,
        max_lr,
        step_size_up: 4,
        step_size_down: 4,
        mode: CyclicMode::Triangular,
        gamma,
    })
}

fn plateau(base: f64, factor: f64, threshold: f64, abs: bool, min_lr: f64) -> Config {
    sched(Schedule::ReduceOnPlateau {
        base,
        mode: PlateauMode::Min,
        factor,
        patience: 2,
        threshold,
        threshold_mode: if abs {
            ThresholdMode::Abs
        } else {
            ThresholdMode::Rel
        },
        cooldown: 1,
        min_lr,
    })
}

fn exp_decay(base: f64, rate: f64, end: f64) -> Config {
    sched(Schedule::ExponentialDecay {
        base,
        decay_steps: 10,
        decay_rate: rate,
        transition_begin: 2,
        staircase: true,
        end_value: Some(end),
    })
}

fn warmup_cosine(base: f64, start: f64, eta: f64) -> Config {
    sched(Schedule::warmup_cosine(base, 5, 50, start, eta))
}

/// A float field: (where, the argument name the error must give, domain, whether the domain's
/// edges are valid on their own, the config with the field set).
type Field = (&'static str, &'static str, Domain, bool, fn(f64) -> Config);

/// Every bad value of the field: validate and new both refuse it with the named argument; the
/// edge values are accepted.
fn check_field(row: &str, (place, name, domain, edges_valid, make): Field) {
    for x in bad_values(domain) {
        let cfg = make(x);
        let ctx = format!("{row}: {place}.{name} = {x:?}");
        check_error(cfg.validate(), &Expect::Invalid(name), &ctx);
        check_error(
            Optimizer::new(cfg).map(|_| ()),
            &Expect::Invalid(name),
            &format!("Optimizer::new: {ctx}"),
        );
    }
    if edges_valid {
        for x in edge_values(domain) {
            let cfg = make(x);
            cfg.validate()
                .unwrap_or_else(|e| panic!("{row}: {place}.{name} = {x:?} refused: {e}"));
        }
    }
}

/// Every float field of every configuration struct and schedule.
mod config_fields {
    use super::Domain::*;
    use super::*;

    rows! { check_field;
    sgd_momentum: ("Sgd", "momentum", UnitOpen, true, |x| sgd(x, 0.0)),
    sgd_dampening: ("Sgd", "dampening", UnitClosed, true, |x| sgd(0.9, x)),
    adam_b1: ("Adam", "b1", UnitOpen, true, |x| adam(x, 0.999, 1e-8)),
    adam_b2: ("Adam", "b2", UnitOpen, true, |x| adam(0.9, x, 1e-8)),
    adam_eps: ("Adam", "eps", Positive, true, |x| adam(0.9, 0.999, x)),
    adamw_b1: ("AdamW", "b1", UnitOpen, true, |x| {
        adamw(x, 0.999, 1e-8, 0.01)
    }),
    adamw_b2: ("AdamW", "b2", UnitOpen, true, |x| adamw(0.9, x, 1e-8, 0.01)),
    adamw_eps: ("AdamW", "eps", Positive, true, |x| {
        adamw(0.9, 0.999, x, 0.01)
    }),
    adamw_weight_decay_decoupled: ("AdamW", "weight_decay (decoupled)", NonNeg, true, |x| {
        adamw(0.9, 0.999, 1e-8, x)
    }),
    radam_b1: ("RAdam", "b1", UnitOpen, true, |x| radam(x, 0.999, 1e-8)),
    radam_b2: ("RAdam", "b2", UnitOpen, true, |x| radam(0.9, x, 1e-8)),
    radam_eps: ("RAdam", "eps", Positive, true, |x| radam(0.9, 0.999, x)),
    adagrad_lr_decay: ("Adagrad", "lr_decay", NonNeg, false, |x| adagrad(x, 0.0, 1e-10)),
    adagrad_initial_accumulator_value: ("Adagrad", "initial_accumulator_value", NonNeg, true, |x| {
        adagrad(0.0, x, 1e-10)
    }),
    adagrad_eps: ("Adagrad", "eps", Positive, true, |x| adagrad(0.0, 0.0, x)),
    rmsprop_alpha: ("RmsProp", "alpha", UnitOpen, true, |x| rmsprop(x, 1e-8, 0.9, 0.0)),
    rmsprop_eps: ("RmsProp", "eps", Positive, true, |x| rmsprop(0.99, x, 0.9, 0.0)),
    rmsprop_momentum: ("RmsProp", "momentum", UnitOpen, true, |x| rmsprop(0.99, 1e-8, x, 0.0)),
    rmsprop_initial_scale: ("RmsProp", "initial_scale", NonNeg, true, |x| {
        rmsprop(0.99, 1e-8, 0.9, x)
    }),
    adamax_b1: ("Adamax", "b1", UnitOpen, true, |x| adamax(x, 0.999, 1e-8)),
    adamax_b2: ("Adamax", "b2", UnitOpen, true, |x| adamax(0.9, x, 1e-8)),
    adamax_eps: ("Adamax", "eps", Positive, true, |x| adamax(0.9, 0.999, x)),
    nadam_b1: ("NAdam", "b1", UnitOpen, true, |x| nadam(x, 0.999, 1e-8, 0.004, 0.0)),
    nadam_b2: ("NAdam", "b2", UnitOpen, true, |x| nadam(0.9, x, 1e-8, 0.004, 0.0)),
    nadam_eps: ("NAdam", "eps", Positive, true, |x| nadam(0.9, 0.999, x, 0.004, 0.0)),
    nadam_momentum_decay: ("NAdam", "momentum_decay", NonNeg, true, |x| {
        nadam(0.9, 0.999, 1e-8, x, 0.0)
    }),
    nadam_decoupled_weight_decay: ("NAdam", "decoupled_weight_decay", NonNeg, true, |x| {
        nadam(0.9, 0.999, 1e-8, 0.004, x)
    }),
    lion_b1: ("Lion", "b1", UnitOpen, true, |x| lion(x, 0.99, 0.0)),
    lion_b2: ("Lion", "b2", UnitOpen, true, |x| lion(0.9, x, 0.0)),
    lion_weight_decay: ("Lion", "weight_decay (decoupled)", NonNeg, true, |x| {
        lion(0.9, 0.99, x)
    }),
    adabelief_b1: ("AdaBelief", "b1", UnitOpen, true, |x| adabelief(x, 0.999, 1e-16, 1e-16)),
    adabelief_b2: ("AdaBelief", "b2", UnitOpen, true, |x| adabelief(0.9, x, 1e-16, 1e-16)),
    adabelief_eps: ("AdaBelief", "eps", Positive, true, |x| adabelief(0.9, 0.999, x, 1e-16)),
    adabelief_eps_root: ("AdaBelief", "eps_root", NonNeg, true, |x| {
        adabelief(0.9, 0.999, 1e-16, x)
    }),
    yogi_b1: ("Yogi", "b1", UnitOpen, true, |x| yogi(x, 0.999, 1e-3, 1e-6)),
    yogi_b2: ("Yogi", "b2", UnitOpen, true, |x| yogi(0.9, x, 1e-3, 1e-6)),
    yogi_eps: ("Yogi", "eps", Positive, true, |x| yogi(0.9, 0.999, x, 1e-6)),
    yogi_initial_accumulator_value: ("Yogi", "initial_accumulator_value", NonNeg, true, |x| {
        yogi(0.9, 0.999, 1e-3, x)
    }),
    adadelta_rho: ("Adadelta", "rho", UnitOpen, true, |x| adadelta(x, 1e-6)),
    adadelta_eps: ("Adadelta", "eps", Positive, true, |x| adadelta(0.9, x)),
    // (0, 1) in f64; the f64 edges round to 0 or 1 as f32 and are refused (f32 field).
    rprop_eta_minus: ("Rprop", "eta_minus", UnitExclusive, false, |x| rprop(x, 1.2, 1e-6, 50.0)),
    // Positive, and above 1 (the entry's check): the domain's small edges are refused.
    rprop_eta_plus: ("Rprop", "eta_plus", Positive, false, |x| rprop(0.5, x, 1e-6, 50.0)),
    // NonNeg, and at most max_step_size = 1e39 (valid in f64, refused as f32 first).
    rprop_min_step_size: ("Rprop", "min_step_size", NonNeg, false, |x| {
        rprop(0.5, 1.2, x, 3e38)
    }),
    rprop_max_step_size: ("Rprop", "max_step_size", Positive, true, |x| {
        rprop(0.5, 1.2, 0.0, x)
    }),
    lamb_b1: ("Lamb", "b1", UnitOpen, true, |x| lamb(x, 0.999, 1e-6, 0.0, 0.0)),
    lamb_b2: ("Lamb", "b2", UnitOpen, true, |x| lamb(0.9, x, 1e-6, 0.0, 0.0)),
    lamb_eps: ("Lamb", "eps", Positive, true, |x| lamb(0.9, 0.999, x, 0.0, 0.0)),
    lamb_eps_root: ("Lamb", "eps_root", NonNeg, true, |x| lamb(0.9, 0.999, 1e-6, x, 0.0)),
    lamb_weight_decay: ("Lamb", "weight_decay (decoupled)", NonNeg, true, |x| {
        lamb(0.9, 0.999, 1e-6, 0.0, x)
    }),
    lars_momentum: ("Lars", "momentum", UnitOpen, true, |x| lars(x, 0.0, 1e-3, 0.0)),
    lars_weight_decay: ("Lars", "weight_decay (decoupled)", NonNeg, true, |x| {
        lars(0.9, x, 1e-3, 0.0)
    }),
    lars_trust_coefficient: ("Lars", "trust_coefficient", Positive, true, |x| {
        lars(0.9, 0.0, x, 0.0)
    }),
    lars_eps: ("Lars", "eps", NonNeg, true, |x| lars(0.9, 0.0, 1e-3, x)),
    novograd_b1: ("Novograd", "b1", UnitOpen, true, |x| novograd(x, 0.25, 1e-6, 0.0, 0.0)),
    novograd_b2: ("Novograd", "b2", UnitOpen, true, |x| novograd(0.9, x, 1e-6, 0.0, 0.0)),
    novograd_eps: ("Novograd", "eps", Positive, true, |x| novograd(0.9, 0.25, x, 0.0, 0.0)),
    novograd_eps_root: ("Novograd", "eps_root", NonNeg, true, |x| {
        novograd(0.9, 0.25, 1e-6, x, 0.0)
    }),
    novograd_weight_decay: ("Novograd", "weight_decay (decoupled)", NonNeg, true, |x| {
        novograd(0.9, 0.25, 1e-6, 0.0, x)
    }),
    config_weight_decay: ("Config", "weight_decay", NonNeg, true, |x| {
        adam(0.9, 0.999, 1e-8).weight_decay(x)
    }),
    config_grad_clip_norm: ("Config", "grad_clip_norm", Positive, true, |x| {
        adam(0.9, 0.999, 1e-8).clip_norm(x)
    }),
    config_grad_clip_value: ("Config", "grad_clip_value", Positive, true, |x| {
        adam(0.9, 0.999, 1e-8).clip_value(x)
    }),
    lookahead_alpha: ("Lookahead", "alpha", UnitClosed, true, |x| {
        adam(0.9, 0.999, 1e-8).lookahead(5, x)
    }),
    fixed_lr: ("Fixed", "lr", NonNeg, true, |x| {
        Config::new(Base::adam(), x)
    }),
    constant_base: ("Constant", "base", NonNeg, true, |x| {
        sched(Schedule::constant(x, 0.5, 5))
    }),
    constant_factor: ("Constant", "factor", UnitClosed, true, |x| {
        sched(Schedule::constant(0.1, x, 5))
    }),
    linear_base: ("Linear", "base", NonNeg, true, |x| {
        sched(Schedule::linear(x, 0.3, 1.0, 5))
    }),
    linear_start_factor: ("Linear", "start_factor", UnitClosed, true, |x| {
        sched(Schedule::linear(0.1, x, 1.0, 5))
    }),
    linear_end_factor: ("Linear", "end_factor", UnitClosed, true, |x| {
        sched(Schedule::linear(0.1, 0.3, x, 5))
    }),
    step_base: ("Step", "base", NonNeg, true, |x| {
        sched(Schedule::step(x, 3, 0.5))
    }),
    step_gamma: ("Step", "gamma", Positive, true, |x| {
        sched(Schedule::step(0.1, 3, x))
    }),
    multistep_base: ("MultiStep", "base", NonNeg, true, |x| {
        sched(Schedule::multi_step(x, vec![2, 4], 0.5))
    }),
    multistep_gamma: ("MultiStep", "gamma", Positive, true, |x| {
        sched(Schedule::multi_step(0.1, vec![2, 4], x))
    }),
    exponential_base: ("Exponential", "base", NonNeg, true, |x| {
        sched(Schedule::exponential(x, 0.9))
    }),
    exponential_gamma: ("Exponential", "gamma", Positive, true, |x| {
        sched(Schedule::exponential(0.1, x))
    }),
    exponentialdecay_base: ("ExponentialDecay", "base", NonNeg, true, |x| {
        exp_decay(x, 0.5, 1e-4)
    }),
    exponentialdecay_decay_rate: ("ExponentialDecay", "decay_rate", Positive, true, |x| {
        exp_decay(0.1, x, 1e-4)
    }),
    exponentialdecay_end_value: ("ExponentialDecay", "end_value", NonNeg, true, |x| {
        exp_decay(0.1, 0.5, x)
    }),
    cosineannealing_base: ("CosineAnnealing", "base", NonNeg, true, |x| {
        sched(Schedule::cosine_annealing(x, 10, 0.0))
    }),
    cosineannealing_eta_min: ("CosineAnnealing", "eta_min", NonNeg, true, |x| {
        sched(Schedule::cosine_annealing(0.1, 10, x))
    }),
    cosineannealingwarmrestarts_base: ("CosineAnnealingWarmRestarts", "base", NonNeg, true, |x| {
        sched(Schedule::cosine_annealing_warm_restarts(x, 3, 2, 0.0))
    }),
    cosineannealingwarmrestarts_eta_min: (
        "CosineAnnealingWarmRestarts",
        "eta_min",
        NonNeg,
        true,
        |x| sched(Schedule::cosine_annealing_warm_restarts(0.1, 3, 2, x)),
    ),
    polynomial_base: ("Polynomial", "base", NonNeg, true, |x| {
        sched(Schedule::polynomial(x, 5, 2.0))
    }),
    polynomial_power: ("Polynomial", "power", NonNeg, true, |x| {
        sched(Schedule::polynomial(0.1, 5, x))
    }),
    warmup_base: ("Warmup", "base", NonNeg, true, |x| {
        sched(Schedule::warmup(x, 5, 0.0))
    }),
    warmup_start_lr: ("Warmup", "start_lr", NonNeg, true, |x| {
        sched(Schedule::warmup(0.1, 5, x))
    }),
    warmupcosine_base: ("WarmupCosine", "base", NonNeg, true, |x| {
        warmup_cosine(x, 0.0, 0.0)
    }),
    warmupcosine_start_lr: ("WarmupCosine", "start_lr", NonNeg, true, |x| {
        warmup_cosine(0.1, x, 0.0)
    }),
    warmupcosine_eta_min: ("WarmupCosine", "eta_min", NonNeg, true, |x| {
        warmup_cosine(0.1, 0.0, x)
    }),
    onecycle_max_lr: ("OneCycle", "max_lr", NonNeg, true, |x| {
        one_cycle(x, 0.3, 25.0, 1e4)
    }),
    onecycle_pct_start: ("OneCycle", "pct_start", UnitExclusive, true, |x| {
        one_cycle(0.1, x, 25.0, 1e4)
    }),
    // A tiny div factor makes max_lr / div_factor overflow (refused too): no edge check.
    onecycle_div_factor: ("OneCycle", "div_factor", Positive, false, |x| {
        one_cycle(0.1, 0.3, x, 1e4)
    }),
    onecycle_final_div_factor: ("OneCycle", "final_div_factor", Positive, false, |x| {
        one_cycle(0.1, 0.3, 25.0, x)
    }),
    cyclic_base: ("Cyclic", "base", NonNeg, true, |x| cyclic(x, 0.1, 1.0)),
    cyclic_max_lr: ("Cyclic", "max_lr", NonNeg, true, |x| cyclic(0.01, x, 1.0)),
    cyclic_gamma: ("Cyclic", "gamma", Positive, true, |x| cyclic(0.01, 0.1, x)),
    piecewiseconstant_values: ("PiecewiseConstant", "values", NonNeg, true, |x| {
        sched(Schedule::piecewise_constant(vec![3, 6], vec![0.1, x, 0.01]))
    }),
    reduceonplateau_base: ("ReduceOnPlateau", "base", NonNeg, true, |x| {
        plateau(x, 0.1, 1e-4, false, 0.0)
    }),
    reduceonplateau_factor: ("ReduceOnPlateau", "factor", UnitExclusive, true, |x| {
        plateau(0.1, x, 1e-4, false, 0.0)
    }),
    reduceonplateau_rel_threshold: ("ReduceOnPlateau (rel)", "threshold", UnitOpen, true, |x| {
        plateau(0.1, 0.1, x, false, 0.0)
    }),
    reduceonplateau_abs_threshold: ("ReduceOnPlateau (abs)", "threshold", NonNeg, true, |x| {
        plateau(0.1, 0.1, x, true, 0.0)
    }),
    reduceonplateau_min_lr: ("ReduceOnPlateau", "min_lr", NonNeg, true, |x| {
        plateau(0.1, 0.1, 1e-4, false, x)
    }),
    }
}

/// An invalid integer field, list, combination or tier: validate and new both refuse it.
fn check_config_row(row: &str, (what, cfg, want): (&str, Config, Expect)) {
    let ctx = format!("{row}: {what}");
    check_error(cfg.validate(), &want, &ctx);
    check_error(Optimizer::new(cfg).map(|_| ()), &want, &ctx);
}

fn ok() -> Config {
    adam(0.9, 0.999, 1e-8)
}

/// A tier this CPU lacks, where there is one (all of them run on an AVX-512 machine).
fn unavailable_tier() -> Option<Tier> {
    Tier::ALL.into_iter().find(|t| !t.is_available())
}

/// A configuration with a tier this CPU lacks is refused as unsupported.
#[test]
fn config_rows_tier_unavailable_here() {
    match unavailable_tier() {
        Some(t) => check_config_row(
            "config_rows_tier_unavailable_here",
            (t.name(), ok().tier(t), Expect::Unsupported),
        ),
        None => eprintln!("every SIMD tier is available here: no unavailable-tier row"),
    }
}

/// Invalid integer fields, lists, combinations and tiers.
mod config_rows {
    use super::Expect::*;
    use super::*;

    rows! { check_config_row;
    sync_period_0: (
        "sync_period 0",
        ok().lookahead(0, 0.5),
        Invalid("sync_period"),
    ),
    num_threads_0: (
        "num_threads 0",
        ok().threads(0),
        Invalid("num_threads"),
    ),
    num_threads_257: (
        "num_threads 257",
        ok().threads(257),
        Invalid("num_threads"),
    ),
    num_threads_usize_max: (
        "num_threads usize::MAX",
        ok().threads(usize::MAX),
        Invalid("num_threads"),
    ),
    nesterov_without_momentum: (
        "nesterov without momentum",
        Config::new(Base::momentum(0.0, true), 0.1),
        Invalid("nesterov"),
    ),
    nesterov_with_dampening: (
        "nesterov with dampening",
        Config::new(
            Base::Sgd {
                momentum: 0.9,
                dampening: 0.5,
                nesterov: true,
            },
            0.1,
        ),
        Invalid("nesterov"),
    ),
    linear_total_iters_0: (
        "Linear total_iters 0",
        sched(Schedule::linear(0.1, 0.3, 1.0, 0)),
        Invalid("total_iters"),
    ),
    step_step_size_0: (
        "Step step_size 0",
        sched(Schedule::step(0.1, 0, 0.5)),
        Invalid("step_size"),
    ),
    exponentialdecay_decay_steps_0: (
        "ExponentialDecay decay_steps 0",
        sched(Schedule::exponential_decay(0.1, 0, 0.5)),
        Invalid("decay_steps"),
    ),
    cosineannealing_t_max_0: (
        "CosineAnnealing t_max 0",
        sched(Schedule::cosine_annealing(0.1, 0, 0.0)),
        Invalid("t_max"),
    ),
    cosineannealingwarmrestarts_t_0_0: (
        "CosineAnnealingWarmRestarts t_0 0",
        sched(Schedule::cosine_annealing_warm_restarts(0.1, 0, 2, 0.0)),
        Invalid("t_0"),
    ),
    cosineannealingwarmrestarts_t_mult_0: (
        "CosineAnnealingWarmRestarts t_mult 0",
        sched(Schedule::cosine_annealing_warm_restarts(0.1, 3, 0, 0.0)),
        Invalid("t_mult"),
    ),
    polynomial_total_iters_0: (
        "Polynomial total_iters 0",
        sched(Schedule::polynomial(0.1, 0, 1.0)),
        Invalid("total_iters"),
    ),
    warmupcosine_total_steps_0: (
        "WarmupCosine total_steps 0",
        sched(Schedule::warmup_cosine(0.1, 0, 0, 0.0, 0.0)),
        Invalid("total_steps"),
    ),
    warmupcosine_warmup_steps_total_steps: (
        "WarmupCosine warmup_steps > total_steps",
        sched(Schedule::warmup_cosine(0.1, 11, 10, 0.0, 0.0)),
        Invalid("warmup_steps"),
    ),
    warmupcosine_warmup_steps_u64_max: (
        "WarmupCosine warmup_steps u64::MAX",
        sched(Schedule::warmup_cosine(0.1, u64::MAX, 10, 0.0, 0.0)),
        Invalid("warmup_steps"),
    ),
    onecycle_total_steps_0: (
        "OneCycle total_steps 0",
        sched(Schedule::one_cycle(0.1, 0)),
        Invalid("total_steps"),
    ),
    onecycle_max_lr_div_factor_overflows: (
        "OneCycle max_lr / div_factor overflows",
        one_cycle(1e30, 0.3, 1e-10, 1e4),
        Invalid("div_factor"),
    ),
    onecycle_initial_final_div_factor_overflows: (
        "OneCycle initial / final_div_factor overflows",
        one_cycle(1.0, 0.3, 1.0, 1e-320),
        Invalid("final_div_factor"),
    ),
    cyclic_step_size_up_0: (
        "Cyclic step_size_up 0",
        sched(Schedule::cyclic(0.01, 0.1, 0)),
        Invalid("step_size_up"),
    ),
    cyclic_exp_range_gamma_1: (
        "Cyclic exp_range gamma > 1",
        sched(Schedule::Cyclic {
            base: 0.01,
            max_lr: 0.1,
            step_size_up: 4,
            step_size_down: 4,
            mode: CyclicMode::ExpRange,
            gamma: 1.5,
        }),
        Invalid("gamma"),
    ),
    piecewiseconstant_one_value_for_one_boundary: (
        "PiecewiseConstant one value for one boundary",
        sched(Schedule::piecewise_constant(vec![5], vec![0.1])),
        Invalid("values"),
    ),
    piecewiseconstant_three_values_for_one_boundary: (
        "PiecewiseConstant three values for one boundary",
        sched(Schedule::piecewise_constant(vec![5], vec![0.1, 0.2, 0.3])),
        Invalid("values"),
    ),
    piecewiseconstant_no_values: (
        "PiecewiseConstant no values",
        sched(Schedule::piecewise_constant(vec![], vec![])),
        Invalid("values"),
    ),
    multistep_milestones_repeated: (
        "MultiStep milestones repeated",
        sched(Schedule::multi_step(0.1, vec![3, 3], 0.5)),
        Invalid("milestones"),
    ),
    multistep_milestones_decreasing: (
        "MultiStep milestones decreasing",
        sched(Schedule::multi_step(0.1, vec![5, 2], 0.5)),
        Invalid("milestones"),
    ),
    multistep_milestones_wrapping: (
        "MultiStep milestones wrapping",
        sched(Schedule::multi_step(0.1, vec![u64::MAX, 0], 0.5)),
        Invalid("milestones"),
    ),
    piecewiseconstant_boundaries_repeated: (
        "PiecewiseConstant boundaries repeated",
        sched(Schedule::piecewise_constant(vec![3, 3], vec![0.1; 3])),
        Invalid("boundaries"),
    ),
    piecewiseconstant_boundaries_decreasing: (
        "PiecewiseConstant boundaries decreasing",
        sched(Schedule::piecewise_constant(vec![5, 2], vec![0.1; 3])),
        Invalid("boundaries"),
    ),
    piecewiseconstant_boundaries_wrapping: (
        "PiecewiseConstant boundaries wrapping",
        sched(Schedule::piecewise_constant(vec![u64::MAX, 0], vec![0.1; 3])),
        Invalid("boundaries"),
    ),
    }
}

// ---------------------------------------------------------------------------------------------
// Calls on an optimizer.

/// An enormous `f32` buffer: a `MAP_NORESERVE` anonymous mapping (zero pages, never touched by
/// the library, which must refuse the length before reading anything).
struct Huge {
    ptr: *mut libc::c_void,
    bytes: usize,
}

const HUGE_LEN: usize = 1 << 33; // 2^33 floats: 32 GiB of address space

impl Huge {
    fn new() -> Option<Huge> {
        if cfg!(miri) {
            return None; // Miri would back the mapping with real memory
        }
        let bytes = HUGE_LEN * 4;
        // SAFETY: an anonymous private mapping with no address hint; checked for failure.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        (ptr != libc::MAP_FAILED).then_some(Huge { ptr, bytes })
    }
    fn f32s(&mut self) -> &mut [f32] {
        // SAFETY: a live, zero-initialised, readable and writable mapping of `bytes` bytes,
        // page-aligned, borrowed mutably from `self` (no other reference exists).
        unsafe { std::slice::from_raw_parts_mut(self.ptr.cast::<f32>(), HUGE_LEN) }
    }
    fn f64s(&mut self) -> &mut [f64] {
        // SAFETY: as in `f32s`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.cast::<f64>(), HUGE_LEN / 2) }
    }
}

impl Drop for Huge {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping once.
        unsafe { libc::munmap(self.ptr, self.bytes) };
    }
}

const LENS: [usize; 3] = [5, 17, 3];
/// Registered elements of the fixture.
const TOTAL: usize = 25;

/// An optimizer with non-trivial state, its parameters and gradients, and a set of caller
/// buffers for the stateless kernels (param, grad, m, v, v_max, slow).
struct Fx {
    cfg: Config,
    opt: Optimizer,
    params: Vec<Vec<f32>>,
    grads: Vec<Vec<f32>>,
    /// A step begun before the last update (stale).
    stale: Step,
    /// A checkpoint of this configuration in another state (one more update).
    other_state: Vec<u8>,
    extra: Vec<Vec<f32>>,
    /// A directory of this fixture's own, with a file `garbage` in it.
    dir: TempDir,
}

fn vals(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7 + seed * 13) % 19) as f32 * 0.05 - 0.45)
        .collect()
}

fn refs(p: &mut [Vec<f32>]) -> Vec<&mut [f32]> {
    p.iter_mut().map(|x| x.as_mut_slice()).collect()
}

fn crefs(p: &[Vec<f32>]) -> Vec<&[f32]> {
    p.iter().map(|x| x.as_slice()).collect()
}

fn registered(cfg: &Config, params: &[Vec<f32>]) -> Optimizer {
    let mut opt = Optimizer::new(cfg.clone()).unwrap();
    opt.register(&crefs(params)).unwrap();
    opt
}

/// The fixture for `cfg`; `tag` names its directory.
fn fixture(cfg: &Config, tag: &str) -> Fx {
    let mut params: Vec<Vec<f32>> = LENS.iter().map(|&n| vals(n, n)).collect();
    let grads: Vec<Vec<f32>> = LENS.iter().map(|&n| vals(n, n + 1)).collect();
    let mut opt = registered(cfg, &params);
    opt.step(&mut refs(&mut params), &crefs(&grads)).unwrap();
    let stale = opt.begin_step(&crefs(&grads)).unwrap().unwrap();
    opt.step(&mut refs(&mut params), &crefs(&grads)).unwrap();
    let mut twin = registered(cfg, &params);
    twin.load(&opt.save()).unwrap();
    let mut p2 = params.clone();
    twin.step(&mut refs(&mut p2), &crefs(&grads)).unwrap();
    let other_state = twin.save();
    assert_ne!(other_state, opt.save());
    let dir = temp_dir(tag);
    std::fs::write(
        dir.0.join("garbage"),
        b"not a checkpoint at all, but long enough to have a header",
    )
    .unwrap();
    Fx {
        cfg: cfg.clone(),
        opt,
        params,
        grads,
        stale,
        other_state,
        extra: (0..6).map(|k| vals(8, k)).collect(),
        dir,
    }
}

/// Everything a refused call must leave as it was.
fn digest(f: &Fx) -> Vec<u8> {
    let mut d = f.opt.save();
    for b in f.params.iter().chain(&f.extra) {
        d.extend(b.iter().flat_map(|x| x.to_le_bytes()));
    }
    d.push(f.opt.tier() as u8);
    d.extend(f.opt.num_threads().to_le_bytes());
    d
}

type Action = Box<dyn Fn(&mut Fx) -> Result<(), Error>>;

/// A row of the call table: the entry point, the case, the error it must give on a
/// configuration, the configurations it applies to, the call.
struct Row {
    entry: &'static str,
    case: String,
    expect: Box<dyn Fn(&Config) -> Expect>,
    only: fn(&Config) -> bool,
    run: Action,
}

fn row(
    entry: &'static str,
    case: impl Into<String>,
    expect: Expect,
    run: impl Fn(&mut Fx) -> Result<(), Error> + 'static,
) -> Row {
    Row {
        entry,
        case: case.into(),
        expect: Box::new(move |_| expect.clone()),
        only: |_| true,
        run: Box::new(run),
    }
}

impl Row {
    /// Runs the row only on the configurations `pred` accepts.
    fn only(self, pred: fn(&Config) -> bool) -> Row {
        Row { only: pred, ..self }
    }
    /// The expected error depends on the configuration.
    fn expect_by(self, expect: fn(&Config) -> Expect) -> Row {
        Row {
            expect: Box::new(expect),
            ..self
        }
    }
}

fn warm_restarts(c: &Config) -> bool {
    matches!(c.lr, Schedule::CosineAnnealingWarmRestarts { .. })
}
fn not_warm_restarts(c: &Config) -> bool {
    !warm_restarts(c)
}
fn plateau_driven(c: &Config) -> bool {
    c.lr.is_metric_driven()
}
fn not_plateau_driven(c: &Config) -> bool {
    !c.lr.is_metric_driven()
}

/// Checkpoint field surgery: the CRC and length are fixed after `edit`.
fn crafted(bytes: &[u8], edit: impl FnOnce(&mut Vec<u8>, usize)) -> Vec<u8> {
    let mut b = bytes.to_vec();
    let c = u64::from_le_bytes(b[32..40].try_into().unwrap()) as usize;
    // `at`: offset of the step counter (right after the configuration section).
    edit(&mut b, 40 + c);
    let n = b.len();
    b[16..24].copy_from_slice(&(n as u64).to_le_bytes());
    let crc = crc32fast::hash(&b[..n - 4]);
    b[n - 4..].copy_from_slice(&crc.to_le_bytes());
    b
}

fn put_u64(b: &mut [u8], at: usize, x: u64) {
    b[at..at + 8].copy_from_slice(&x.to_le_bytes());
}

/// Offsets after the configuration section (`at`): step 0, skipped 8, schedule count 16,
/// t_cur 24, t_i 32, plateau lr 40, best 48, bad epochs 56, cooldown 64, buffer count 72,
/// first buffer record 80 (length 80, present 88, reserved 92, arrays 96).
const BUFFERS: usize = 72;
const ARRAYS: usize = 96;

/// A damaged checkpoint (no CRC fix).
fn raw_row(case: &'static str, want: Expect, edit: fn(&mut Vec<u8>)) -> Row {
    row("load", case, want, move |f| {
        let mut b = f.other_state.clone();
        edit(&mut b);
        f.opt.load(&b)
    })
}

/// A crafted checkpoint (CRC fixed); `edit` gets the offset after the configuration section.
fn crafted_row(case: &'static str, want: Expect, edit: fn(&mut Vec<u8>, usize)) -> Row {
    row("load", format!("crafted: {case}"), want, move |f| {
        f.opt.load(&crafted(&f.other_state, edit))
    })
}

/// State array bits, as in the checkpoint format.
const M: u32 = 1;
const V: u32 = 2;
const V_MAX: u32 = 4;
const SLOW: u32 = 8;

/// Which state arrays a checkpoint of `c` carries.
fn arrays_of(c: &Config) -> u32 {
    let (m, v, v_max) = c.base.state_used();
    [
        (m, M),
        (v, V),
        (v_max, V_MAX),
        (c.lookahead.is_some(), SLOW),
    ]
    .into_iter()
    .filter(|&(used, _)| used)
    .fold(0, |bits, (_, bit)| bits | bit)
}

/// Element `i` of state array `which` of buffer 0 set to `x` in a crafted checkpoint, on the
/// configurations that keep the array (and, if `finite_only`, refuse non-finite state: every
/// policy but propagate).
fn state_row(case: &'static str, which: u32, i: usize, x: f32, finite_only: bool) -> Row {
    let r = row(
        "load",
        format!("crafted: {case}"),
        Expect::Corrupt,
        move |f| {
            let present = arrays_of(&f.cfg);
            let k = (present & (which - 1)).count_ones() as usize;
            f.opt.load(&crafted(&f.other_state, |b, at| {
                let o = at + ARRAYS + 4 * (LENS[0] * k + i);
                b[o..o + 4].copy_from_slice(&x.to_le_bytes());
            }))
        },
    );
    match (which, finite_only) {
        (M, true) => r.only(|c| arrays_of(c) & M != 0 && c.nonfinite != NonFinitePolicy::Propagate),
        (V, true) => r.only(|c| arrays_of(c) & V != 0 && c.nonfinite != NonFinitePolicy::Propagate),
        (SLOW, true) => {
            r.only(|c| arrays_of(c) & SLOW != 0 && c.nonfinite != NonFinitePolicy::Propagate)
        }
        (M, false) => r.only(|c| arrays_of(c) & M != 0),
        (V, false) => r.only(|c| arrays_of(c) & V != 0),
        // Centered RMSprop's v_max is its gradient average: any finite value (rows below).
        (V_MAX, _) => r.only(|c| arrays_of(c) & V_MAX != 0 && !is_rmsprop(c)),
        _ => unreachable!("no such state row"),
    }
}

fn is_rmsprop(c: &Config) -> bool {
    matches!(c.base, Base::RmsProp { .. })
}

fn is_adadelta(c: &Config) -> bool {
    matches!(c.base, Base::Adadelta { .. })
}

/// `kernels::apply` with buffer `k` (1 grad, 2 m, 3 v, 4 v_max, 5 slow) cut by `cut` elements.
fn kernel_len_row(k: usize, what: &'static str, case: &'static str, cut: usize) -> Row {
    row(
        "kernels::apply",
        format!("{what} {case}"),
        Expect::Length(what),
        move |f| {
            let plan = kernel_plan();
            let [p, g, m, v, x, s] = &mut f.extra[..] else {
                unreachable!()
            };
            let mut bufs = [&mut m[..], &mut v[..], &mut x[..], &mut s[..]];
            let mut g: &[f32] = g;
            if k == 1 {
                g = &g[cut..];
            } else {
                let b = std::mem::take(&mut bufs[k - 2]);
                bufs[k - 2] = &mut b[cut..];
            }
            let [m, v, x, s] = bufs;
            kernels::apply(
                Tier::Scalar,
                &plan,
                Buffers {
                    param: p,
                    grad: g,
                    m,
                    v,
                    v_max: x,
                    slow: s,
                },
            )
        },
    )
}

/// The plan the stateless-kernel rows run.
fn kernel_plan() -> Plan {
    Plan {
        clip_scale: Some(0.5),
        clip_value: Some(1.0),
        weight_decay: Some(0.01),
        rule: Rule::for_step(
            &Base::Adam {
                b1: 0.9,
                b2: 0.999,
                eps: 1e-8,
                amsgrad: true,
            },
            3,
            0.01,
        ),
        sync_alpha: Some(0.5),
    }
}

/// `kernels::apply_op` with a bad operand, on the scalar tier and the best one: both refuse
/// it alike.
fn op_row(case: &'static str, op: Op, want: Expect) -> Row {
    row("kernels::apply_op", case, want, move |f| {
        let (a, b) = f.extra.split_at_mut(5);
        let best = kernels::apply_op(Tier::best(), op, &mut a[0], &mut b[0]);
        let scalar = kernels::apply_op(Tier::Scalar, op, &mut a[0], &mut b[0]);
        assert_eq!(best, scalar, "{case}: tiers disagree");
        scalar
    })
}

/// A file in the fixture's directory, written by `make` (a checkpoint of the fixture's own
/// optimizer as argument), loaded with `load_file`.
fn file_row(
    case: &'static str,
    want: Expect,
    make: fn(&Fx, &std::path::Path) -> std::path::PathBuf,
) -> Row {
    row("load_file", case, want, move |f| {
        let path = make(f, &f.dir.0);
        let start = std::time::Instant::now();
        let r = f.opt.load_file(&path);
        let secs = start.elapsed().as_secs_f64();
        if path.starts_with(&f.dir.0) {
            let _ = std::fs::remove_file(&path);
        }
        if secs > 2.0 {
            return Err(Error::Io(format!(
                "load_file took {secs:.1} s: it read more than the header"
            )));
        }
        r
    })
}

/// Every row of the call table on every configuration it applies to: the documented error, and
/// nothing changed (checkpoint bytes, parameters, caller buffers, tier, threads); no temporary
/// file left behind; afterwards the optimizer gives the results of one that never saw the
/// refused call.
fn check_call(name: &str, r: Row) {
    let configs = call_configs();
    // Under Miri (scripts/miri.sh), two of the configurations: it is a million times slower.
    let configs = if cfg!(miri) {
        &configs[..2]
    } else {
        &configs[..]
    };
    let mut ran = 0;
    for (k, cfg) in configs.iter().enumerate() {
        if !(r.only)(cfg) {
            continue;
        }
        ran += 1;
        let mut f = fixture(cfg, &format!("{name}-{k}"));
        let before = digest(&f);
        let ctx = format!("{name} ({} / {}) on {}", r.entry, r.case, cfg.base.name());
        let result = (r.run)(&mut f);
        if let Err(Error::LengthMismatch { what, .. }) = &result {
            if what.contains(NOT_RUN) {
                println!("{ctx}: {what}");
                continue;
            }
        }
        check_error(result, &(r.expect)(cfg), &ctx);
        assert!(
            digest(&f) == before,
            "{ctx}: the refused call changed something"
        );
        let left: Vec<_> = std::fs::read_dir(&f.dir.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "garbage")
            .collect();
        assert!(left.is_empty(), "{ctx}: files left behind: {left:?}");
        let mut clean = fixture(cfg, &format!("{name}-{k}-clean"));
        for _ in 0..3 {
            f.opt
                .step(&mut refs(&mut f.params), &crefs(&f.grads))
                .unwrap();
            clean
                .opt
                .step(&mut refs(&mut clean.params), &crefs(&clean.grads))
                .unwrap();
        }
        assert!(digest(&f) == digest(&clean), "{ctx}: diverged afterwards");
    }
    assert!(
        ran > 0 || cfg!(miri),
        "{name}: no configuration of the call table runs this row"
    );
}

/// The calls on a registered optimizer.
mod calls {
    use super::Expect::*;
    use super::*;

    rows! { check_call;
    add_group_base_of_another_kind: row(
        "add_group",
        "a base rule of another kind",
        Invalid("base"),
        |f| {
            let other = match f.cfg.base {
                Base::Sgd { .. } => Base::adam(),
                _ => Base::sgd(),
            };
            f.opt
                .add_group(GroupOptions {
                    base: Some(other),
                    ..Default::default()
                })
                .map(drop)
        },
    ),
    add_group_lr_negative: row("add_group", "lr -1", Invalid("lr"), |f| {
        f.opt
            .add_group(GroupOptions {
                lr: Some(-1.0),
                ..Default::default()
            })
            .map(drop)
    }),
    add_group_lr_nan: row("add_group", "lr NaN", Invalid("lr"), |f| {
        f.opt
            .add_group(GroupOptions {
                lr: Some(f64::NAN),
                ..Default::default()
            })
            .map(drop)
    }),
    add_group_weight_decay_past_f32: row(
        "add_group",
        "weight_decay 1e39",
        Invalid("weight_decay"),
        |f| {
            f.opt
                .add_group(GroupOptions {
                    weight_decay: Some(1e39),
                    ..Default::default()
                })
                .map(drop)
        },
    ),
    set_group_lr_unknown_group: row("set_group_lr", "group 1 of 1", Invalid("group"), |f| {
        f.opt.set_group_lr(1, Some(0.1))
    }),
    set_group_lr_inf: row("set_group_lr", "inf", Invalid("lr"), |f| {
        f.opt.set_group_lr(0, Some(f64::INFINITY))
    }),
    set_group_lr_past_f32: row("set_group_lr", "1e39", Invalid("lr"), |f| {
        f.opt.set_group_lr(0, Some(1e39))
    }),
    set_group_weight_decay_nan: row(
        "set_group_weight_decay",
        "NaN",
        Invalid("weight_decay"),
        |f| f.opt.set_group_weight_decay(0, f64::NAN),
    ),
    set_group_weight_decay_negative: row(
        "set_group_weight_decay",
        "-0.5",
        Invalid("weight_decay"),
        |f| f.opt.set_group_weight_decay(0, -0.5),
    ),
    set_group_weight_decay_unknown_group: row(
        "set_group_weight_decay",
        "group usize::MAX",
        Invalid("group"),
        |f| f.opt.set_group_weight_decay(usize::MAX, 0.1),
    ),
    add_buffer_to_group_unknown_group: row(
        "add_buffer_to_group",
        "group 3 of 1",
        Invalid("group"),
        |f| {
            let x = f.extra[0].clone();
            f.opt.add_buffer_to_group(&x, 3)
        },
    ),
    add_buffer_to_group_after_an_update: row(
        "add_buffer_to_group",
        "after the first update",
        State,
        |f| {
            let x = f.extra[0].clone();
            f.opt.add_buffer_to_group(&x, 0)
        },
    ),
    register_in_groups_unknown_group: row(
        "register_in_groups",
        "group 1 of 1",
        Invalid("group"),
        |f| {
            let x = f.extra[0].clone();
            f.opt.register_in_groups(&[&x], &[1])
        },
    ),
    register_in_groups_list_length: row(
        "register_in_groups",
        "two groups for one buffer",
        Length("groups (one per buffer)"),
        |f| {
            let x = f.extra[0].clone();
            f.opt.register_in_groups(&[&x], &[0, 0])
        },
    ),
    update_no_buffers: row(
        "update",
        "no buffers",
        Length("number of param buffers"),
        |f| f.opt.step(&mut [], &[]).map(|_| ()),
    ),
    update_one_param_buffer_too_few: row(
        "update",
        "one param buffer too few",
        Length("number of param buffers"),
        |f| {
            let mut p = refs(&mut f.params);
            p.pop();
            f.opt.step(&mut p, &crefs(&f.grads)).map(|_| ())
        },
    ),
    update_one_param_buffer_too_many: row(
        "update",
        "one param buffer too many",
        Length("number of param buffers"),
        |f| {
            let mut spare = vec![0.0f32; 5];
            let mut p = refs(&mut f.params);
            p.push(&mut spare);
            f.opt.step(&mut p, &crefs(&f.grads)).map(|_| ())
        },
    ),
    update_one_grad_buffer_too_few: row(
        "update",
        "one grad buffer too few",
        Length("number of grad buffers"),
        |f| {
            let mut g = crefs(&f.grads);
            g.pop();
            f.opt.step(&mut refs(&mut f.params), &g).map(|_| ())
        },
    ),
    update_param_1_one_element_longer: row(
        "update",
        "param 1 one element longer",
        Length("param buffer 1"),
        |f| {
            let mut p = f.params.clone();
            p[1].push(0.0);
            f.opt
                .step(&mut refs(&mut p), &crefs(&f.grads))
                .map(|_| ())
        },
    ),
    update_param_0_empty: row("update", "param 0 empty", Length("param buffer 0"), |f| {
        let mut p = refs(&mut f.params);
        p[0] = &mut [];
        f.opt.step(&mut p, &crefs(&f.grads)).map(|_| ())
    }),
    update_grad_2_one_element_shorter: row(
        "update",
        "grad 2 one element shorter",
        Length("grad buffer 2"),
        |f| {
            let mut g = crefs(&f.grads);
            g[2] = &f.grads[2][1..];
            f.opt.step(&mut refs(&mut f.params), &g).map(|_| ())
        },
    ),
    update_grad_0_empty: row("update", "grad 0 empty", Length("grad buffer 0"), |f| {
        let mut g = crefs(&f.grads);
        g[0] = &[];
        f.opt.step(&mut refs(&mut f.params), &g).map(|_| ())
    }),
    update_with_sum_squares_no_buffers: row(
        "step_with_sum_squares",
        "no buffers",
        Length("number of param buffers"),
        |f| f.opt.step_with_sum_squares(&mut [], &[], 1.0).map(|_| ()),
    ),
    update_with_sum_squares_grad_1_longer: row(
        "step_with_sum_squares",
        "grad 1 longer",
        Length("grad buffer 1"),
        |f| {
            let mut g = f.grads.clone();
            g[1].push(1.0);
            f.opt
                .step_with_sum_squares(&mut refs(&mut f.params), &crefs(&g), 1.0)
                .map(|_| ())
        },
    ),
    update_with_sum_squares_grads_missing: row(
        "step_with_sum_squares",
        "grads missing",
        Length("number of grad buffers"),
        |f| {
            f.opt
                .step_with_sum_squares(&mut refs(&mut f.params), &[], 1.0)
                .map(|_| ())
        },
    ),
    begin_update_no_grads: row(
        "begin_step",
        "no grads",
        Length("number of grad buffers"),
        |f| f.opt.begin_step(&[]).map(|_| ()),
    ),
    begin_update_grad_2_empty: row(
        "begin_step",
        "grad 2 empty",
        Length("grad buffer 2"),
        |f| {
            let mut g = crefs(&f.grads);
            g[2] = &[];
            f.opt.begin_step(&g).map(|_| ())
        },
    ),
    step_apply_param_shorter_than_grad: row(
        "Step::apply",
        "param shorter than grad",
        Length("grad"),
        |f| {
            let step = f.opt.begin_step(&crefs(&f.grads))?.unwrap();
            let st = f.opt.states_mut().nth(1).unwrap();
            step.apply(&mut f.params[1][..16], &f.grads[1], st)
        },
    ),
    step_apply_empty_param_full_grad: row(
        "Step::apply",
        "empty param, full grad",
        Length("grad"),
        |f| {
            let step = f.opt.begin_step(&crefs(&f.grads))?.unwrap();
            let st = f.opt.states_mut().next().unwrap();
            step.apply(&mut [], &f.grads[0], st)
        },
    ),
    step_apply_state_split_elsewhere_than_the_param: row(
        "Step::apply",
        "state split elsewhere than the param",
        Length(""),
        |f| {
            let step = f.opt.begin_step(&crefs(&f.grads))?.unwrap();
            let st = f.opt.states_mut().nth(1).unwrap();
            let (s0, _) = st.split_at(4);
            step.apply(&mut f.params[1][..6], &f.grads[1][..6], s0)
        },
    ),
    finish_update_a_stale_step: row("end_step", "a stale step", State, |f| {
        f.opt.end_step(f.stale)
    }),
    sum_squares_partials_out_empty: row(
        "sum_squares_partials",
        "out empty",
        Length("partials"),
        |f| f.opt.sum_squares_partials(&crefs(&f.grads), &mut []),
    ),
    sum_squares_partials_out_one_too_long: row(
        "sum_squares_partials",
        "out one too long",
        Length("partials"),
        |f| {
            let mut out = vec![0.0; f.opt.sum_squares_block_count() + 1];
            f.opt.sum_squares_partials(&crefs(&f.grads), &mut out)
        },
    ),
    sum_squares_partials_grad_1_shorter: row(
        "sum_squares_partials",
        "grad 1 shorter",
        Length("grad buffer 1"),
        |f| {
            let mut g = crefs(&f.grads);
            g[1] = &f.grads[1][..3];
            let mut out = vec![0.0; f.opt.sum_squares_block_count()];
            f.opt.sum_squares_partials(&g, &mut out)
        },
    ),
    reset_param_0_longer: row("reset", "param 0 longer", Length("param buffer 0"), |f| {
        let mut p = f.params.clone();
        p[0].push(1.0);
        f.opt.reset(&crefs(&p))
    }),
    reset_no_params: row(
        "reset",
        "no params",
        Length("number of param buffers"),
        |f| f.opt.reset(&[]),
    ),
    register_an_empty_list: row("register", "an empty list", Invalid("params"), |f| {
        f.opt.register(&[])
    }),
    set_tier_unavailable_here: row("set_tier", "a tier this CPU lacks", Unsupported, |f| {
        match unavailable_tier() {
            Some(t) => f.opt.set_tier(t),
            None => Err(not_run("every SIMD tier is available here")),
        }
    }),
    update_param_0_of_2pow33_elements: row(
        "update",
        "param 0 of 2^33 elements",
        Length("param buffer 0"),
        |f| {
            let Some(mut h) = Huge::new() else {
                return Err(Error::LengthMismatch {
                    what: "param buffer 0 (mmap unavailable: row not run)".into(),
                    expected: 0,
                    got: 0,
                });
            };
            let mut p = refs(&mut f.params);
            p[0] = h.f32s();
            f.opt.step(&mut p, &crefs(&f.grads)).map(|_| ())
        },
    ),
    update_grad_1_of_2pow33_elements: row(
        "update",
        "grad 1 of 2^33 elements",
        Length("grad buffer 1"),
        |f| {
            let Some(mut h) = Huge::new() else {
                return Err(Error::LengthMismatch {
                    what: "grad buffer 1 (mmap unavailable: row not run)".into(),
                    expected: 0,
                    got: 0,
                });
            };
            let mut g = crefs(&f.grads);
            g[1] = h.f32s();
            f.opt.step(&mut refs(&mut f.params), &g).map(|_| ())
        },
    ),
    begin_update_grad_0_of_2pow33_elements: row(
        "begin_step",
        "grad 0 of 2^33 elements",
        Length("grad buffer 0"),
        |f| {
            let Some(mut h) = Huge::new() else {
                return Err(Error::LengthMismatch {
                    what: "grad buffer 0 (mmap unavailable: row not run)".into(),
                    expected: 0,
                    got: 0,
                });
            };
            let mut g = crefs(&f.grads);
            g[0] = h.f32s();
            f.opt.begin_step(&g).map(|_| ())
        },
    ),
    sum_squares_partials_out_of_2pow32_doubles: row(
        "sum_squares_partials",
        "out of 2^32 doubles",
        Length("partials"),
        |f| {
            let Some(mut h) = Huge::new() else {
                return Err(Error::LengthMismatch {
                    what: "partials (mmap unavailable: row not run)".into(),
                    expected: 0,
                    got: 0,
                });
            };
            f.opt.sum_squares_partials(&crefs(&f.grads), h.f64s())
        },
    ),
    reset_param_2_of_2pow33_elements: row(
        "reset",
        "param 2 of 2^33 elements",
        Length("param buffer 2"),
        |f| {
            let Some(mut h) = Huge::new() else {
                return Err(Error::LengthMismatch {
                    what: "param buffer 2 (mmap unavailable: row not run)".into(),
                    expected: 0,
                    got: 0,
                });
            };
            let mut p = crefs(&f.params);
            p[2] = h.f32s();
            f.opt.reset(&p)
        },
    ),
    step_apply_param_of_2pow33_elements: row(
        "Step::apply",
        "param of 2^33 elements",
        Length("grad"),
        |f| {
            let Some(mut h) = Huge::new() else {
                return Err(Error::LengthMismatch {
                    what: "grad (mmap unavailable: row not run)".into(),
                    expected: 0,
                    got: 0,
                });
            };
            let step = f.opt.begin_step(&crefs(&f.grads))?.unwrap();
            let st = f.opt.states_mut().next().unwrap();
            step.apply(h.f32s(), &f.grads[0], st)
        },
    ),
    set_num_threads_0: threads_row(0),
    set_num_threads_257: threads_row(257),
    set_num_threads_100000: threads_row(100_000),
    set_num_threads_usize_max: threads_row(usize::MAX),
    step_schedule_metric_nan: metric_row(f64::NAN),
    step_schedule_metric_inf: metric_row(f64::INFINITY),
    step_schedule_metric_minus_inf: metric_row(f64::NEG_INFINITY),
    step_schedule_metric_not_a_plateau_schedule: row(
        "step_schedule_metric",
        "not a plateau schedule",
        State,
        |f| f.opt.step_schedule_metric(1.0),
    )
    .only(not_plateau_driven),
    begin_update_with_sum_squares_no_sum: row(
        "begin_step_with_sum_squares",
        "no sum with clipping or a non-finite check",
        Invalid("sum_squares"),
        |f| {
            f.opt
                .begin_step_with_sum_squares(None, |_| None)
                .map(|_| ())
        },
    ),
    // Checkpoints: damaged.
    load_empty: raw_row("empty", Corrupt, |b| b.clear()),
    load_35_bytes: raw_row("35 bytes", Corrupt, |b| b.truncate(35)),
    load_one_byte_short: raw_row("one byte short", Corrupt, |b| {
        b.pop();
    }),
    load_one_byte_extra: raw_row("one byte extra", Corrupt, |b| b.push(0)),
    load_bad_magic: raw_row("bad magic", Corrupt, |b| b[0] = b'G'),
    load_format_version_5: raw_row("format version 5", Unsupported, |b| b[8] = 5),
    load_format_version_0: raw_row("format version 0", Unsupported, |b| b[8] = 0),
    load_big_endian_byte_order_mark: raw_row("big-endian byte-order mark", Corrupt, |b| {
        b[12..16].copy_from_slice(&0x0A0B_0C0Du32.to_be_bytes())
    }),
    load_total_length_field_off_by_one: raw_row(
        "total length field off by one",
        Corrupt,
        |b| b[16] ^= 1,
    ),
    load_one_bit_flipped_in_the_state: raw_row("one bit flipped in the state", Corrupt, |b| {
        let n = b.len();
        b[n - 9] ^= 0x10;
    }),
    load_checksum_flipped: raw_row("checksum flipped", Corrupt, |b| {
        let n = b.len();
        b[n - 1] ^= 0x80;
    }),
    // Checkpoints: crafted, with a valid checksum.
    load_configuration_length_u64_max: crafted_row(
        "configuration length u64::MAX",
        Corrupt,
        |b, _| put_u64(b, 32, u64::MAX),
    ),
    load_configuration_length_one_short: crafted_row(
        "configuration length one short",
        Invalid("checkpoint"),
        |b, _| {
            let c = u64::from_le_bytes(b[32..40].try_into().unwrap());
            put_u64(b, 32, c - 1)
        },
    ),
    load_a_configuration_field_changed: crafted_row(
        "a configuration field changed",
        Invalid("checkpoint"),
        |b, _| b[44] ^= 0x01,
    ),
    load_buffer_count_u64_max: crafted_row("buffer count u64::MAX", Corrupt, |b, at| {
        put_u64(b, at + BUFFERS, u64::MAX)
    }),
    load_buffer_count_2: crafted_row("buffer count 2", Length("number of buffers"), |b, at| {
        put_u64(b, at + BUFFERS, 2)
    }),
    load_buffer_0_length_6: crafted_row(
        "buffer 0 length 6",
        Length("buffer 0 in the checkpoint"),
        |b, at| put_u64(b, at + BUFFERS + 8, 6),
    ),
    load_buffer_0_state_flags_0xff: crafted_row("buffer 0 state flags 0xff", Corrupt, |b, at| {
        b[at + BUFFERS + 16] = 0xff
    }),
    load_four_bytes_after_the_last_buffer: crafted_row(
        "four bytes after the last buffer",
        Corrupt,
        |b, _| {
            let n = b.len();
            b.splice(n - 4..n - 4, [0u8; 4]);
        },
    ),
    load_warm_restarts_t_cur_equal_t_i: crafted_row("warm restarts t_cur = t_i", Corrupt, |b, at| {
        put_u64(b, at + 24, 3);
        put_u64(b, at + 32, 3);
    })
    .only(warm_restarts),
    load_warm_restarts_t_i_0: crafted_row("warm restarts t_i = 0", Corrupt, |b, at| {
        put_u64(b, at + 24, 0);
        put_u64(b, at + 32, 0);
    })
    .only(warm_restarts),
    load_warm_restarts_t_i_not_a_cycle_length: crafted_row(
        "warm restarts t_i = 5 (t_0 = 2, t_mult = 2 give 2, 4, 8, ...)",
        Corrupt,
        |b, at| {
            put_u64(b, at + 24, 1);
            put_u64(b, at + 32, 5);
        },
    )
    .only(warm_restarts),
    load_cycle_length_on_another_schedule: crafted_row(
        "t_i = 7 on a schedule without warm restarts",
        Corrupt,
        |b, at| put_u64(b, at + 32, 7),
    )
    .only(not_warm_restarts),
    load_plateau_nan_learning_rate: plateau_row("NaN learning rate", 40, f64::NAN),
    load_plateau_negative_learning_rate: plateau_row("negative learning rate", 40, -0.5),
    load_plateau_infinite_learning_rate: plateau_row("infinite learning rate", 40, f64::INFINITY),
    load_plateau_learning_rate_1e300: plateau_row("learning rate 1e300", 40, 1e300),
    load_plateau_learning_rate_above_base: plateau_row("learning rate above base", 40, 0.2),
    load_plateau_nan_best: plateau_row("NaN best", 48, f64::NAN),
    load_plateau_best_minus_inf_in_min_mode: plateau_row(
        "best -inf in min mode",
        48,
        f64::NEG_INFINITY,
    ),
    load_plateau_bad_epochs_above_patience: crafted_row(
        "plateau bad epochs u64::MAX",
        Corrupt,
        |b, at| put_u64(b, at + 56, u64::MAX),
    )
    .only(plateau_driven),
    load_plateau_cooldown_counter_above_cooldown: crafted_row(
        "plateau cooldown counter u64::MAX",
        Corrupt,
        |b, at| put_u64(b, at + 64, u64::MAX),
    )
    .only(plateau_driven),
    load_plateau_rate_on_another_schedule: crafted_row(
        "a plateau learning rate on another schedule",
        Corrupt,
        |b, at| put_u64(b, at + 40, 0.5f64.to_bits()),
    )
    .only(not_plateau_driven),
    // State values no update can produce (with the skip and error policies, none of NaN/Inf).
    load_first_moment_nan: state_row("first moment m[1] NaN", M, 1, f32::NAN, true),
    load_first_moment_inf: state_row("first moment m[4] +Inf", M, 4, f32::INFINITY, true),
    load_second_moment_negative: state_row("second moment v[2] = -1", V, 2, -1.0, false),
    load_second_moment_minus_inf: state_row(
        "second moment v[0] = -Inf",
        V,
        0,
        f32::NEG_INFINITY,
        false,
    ),
    load_second_moment_nan: state_row("second moment v[3] NaN", V, 3, f32::NAN, true),
    load_amsgrad_maximum_negative: state_row("v_max[1] = -0.5", V_MAX, 1, -0.5, false),
    load_amsgrad_maximum_below_the_second_moment: state_row(
        "v_max[0] = 0 below v[0] > 0",
        V_MAX,
        0,
        0.0,
        false,
    ),
    // Adadelta's m is the average of squared updates, under a square root in the next update.
    load_adadelta_squared_update_average_negative: state_row(
        "Adadelta squared-update average m[0] = -1",
        M,
        0,
        -1.0,
        false
    )
    .only(is_adadelta),
    load_adadelta_squared_update_average_minus_inf: state_row(
        "Adadelta squared-update average m[2] = -Inf",
        M,
        2,
        f32::NEG_INFINITY,
        false
    )
    .only(is_adadelta),
    load_rmsprop_gradient_average_inf: state_row(
        "centered RMSprop gradient average v_max[1] = +Inf",
        V_MAX,
        1,
        f32::INFINITY,
        true
    )
    .only(|c| is_rmsprop(c) && c.nonfinite != NonFinitePolicy::Propagate),
    load_slow_weight_inf: state_row("slow weight[0] +Inf", SLOW, 0, f32::INFINITY, true),
    load_slow_weight_nan: state_row("slow weight[2] NaN", SLOW, 2, f32::NAN, true),
    // Checkpoints: mismatched.
    load_another_base_optimizers_checkpoint: row(
        "load",
        "another base optimizer's checkpoint",
        Invalid("checkpoint"),
        |f| {
            let other = Config {
                base: match f.cfg.base {
                    Base::Sgd { .. } => Base::adam(),
                    _ => Base::sgd(),
                },
                ..f.cfg.clone()
            };
            f.opt.load(&registered(&other, &f.params).save())
        },
    ),
    load_another_learning_rates_checkpoint: row(
        "load",
        "another learning rate's checkpoint",
        Invalid("checkpoint"),
        |f| {
            let other = Config {
                lr: Schedule::fixed(0.123),
                ..f.cfg.clone()
            };
            f.opt.load(&registered(&other, &f.params).save())
        },
    ),
    load_a_checkpoint_with_other_buffer_lengths: row(
        "load",
        "a checkpoint with other buffer lengths",
        Length("buffer 1 in the checkpoint"),
        |f| {
            let mut p = f.params.clone();
            p[1].pop();
            f.opt.load(&registered(&f.cfg, &p).save())
        },
    ),
    checkpoint_info_bad_magic: row("checkpoint_info", "bad magic", Corrupt, |f| {
        let mut b = f.other_state.clone();
        b[0] = b'G';
        f.opt.checkpoint_info(&b).map(|_| ())
    }),
    checkpoint_info_negative_second_moment: row(
        "checkpoint_info",
        "crafted: second moment v[0] = -1",
        Corrupt,
        |f| {
            let k = (arrays_of(&f.cfg) & M).count_ones() as usize;
            let b = crafted(&f.other_state, |b, at| {
                let o = at + ARRAYS + 4 * LENS[0] * k;
                b[o..o + 4].copy_from_slice(&(-1.0f32).to_le_bytes());
            });
            f.opt.checkpoint_info(&b).map(|_| ())
        },
    )
    .only(|c| arrays_of(c) & V != 0),
    // Files.
    load_file_a_missing_file: row("load_file", "a missing file", Io, |f| {
        let p = f.dir.0.join("no-such-file");
        f.opt.load_file(&p)
    }),
    load_file_a_directory: row("load_file", "a directory", Io, |f| {
        let p = f.dir.0.clone();
        f.opt.load_file(&p)
    }),
    load_file_a_file_of_garbage: row("load_file", "a file of garbage", Corrupt, |f| {
        let p = f.dir.0.join("garbage");
        f.opt.load_file(&p)
    }),
    load_file_a_path_with_a_nul_byte: row(
        "load_file",
        "a path with a NUL byte",
        Invalid("path"),
        |f| {
            let p = f.dir.0.join("garbage\0.ckpt");
            f.opt.load_file(&p)
        },
    ),
    load_file_an_empty_path: row("load_file", "an empty path", Invalid("path"), |f| {
        f.opt.load_file("")
    }),
    load_file_2_gib_that_is_not_a_checkpoint: file_row(
        "2 GiB (sparse) that is not a checkpoint",
        Corrupt,
        |_, dir| {
            let p = dir.join("big");
            let file = std::fs::File::create(&p).unwrap();
            file.set_len(2 << 30).unwrap();
            p
        },
    ),
    load_file_dev_zero: file_row("/dev/zero", Corrupt, |_, _| "/dev/zero".into()),
    load_file_a_checkpoint_and_one_more_byte: file_row(
        "a checkpoint and one more byte",
        Corrupt,
        |f, dir| {
            let p = dir.join("longer");
            let mut b = f.other_state.clone();
            b.push(0);
            std::fs::write(&p, b).unwrap();
            p
        },
    ),
    load_file_a_header_announcing_2_pow_64_bytes: file_row(
        "a header announcing 2^64 - 1 bytes",
        Length("size in bytes of the checkpoint file"),
        |f, dir| {
            let p = dir.join("announcing");
            let mut b = f.other_state.clone();
            put_u64(&mut b, 16, u64::MAX);
            std::fs::write(&p, b).unwrap();
            p
        },
    ),
    load_file_another_learning_rates_checkpoint: file_row(
        "another learning rate's checkpoint",
        Invalid("checkpoint"),
        |f, dir| {
            let p = dir.join("other-lr");
            let other = Config {
                lr: Schedule::fixed(0.123),
                ..f.cfg.clone()
            };
            registered(&other, &f.params).save_file(&p).unwrap();
            p
        },
    ),
    save_file_an_empty_path: row("save_file", "an empty path", Invalid("path"), |f| {
        f.opt.save_file("")
    }),
    save_file_the_root_directory: row("save_file", "the root directory", Invalid("path"), |f| {
        f.opt.save_file("/")
    }),
    save_file_in_a_missing_directory: row("save_file", "in a missing directory", Io, |f| {
        let p = f.dir.0.join("no-such-dir").join("ckpt");
        f.opt.save_file(&p)
    }),
    save_file_over_a_directory: row("save_file", "over a directory", Io, |f| {
        let p = f.dir.0.clone();
        f.opt.save_file(&p)
    }),
    save_file_a_path_with_a_nul_byte: row(
        "save_file",
        "a path with a NUL byte",
        Invalid("path"),
        |f| {
            let p = f.dir.0.join("a\0b");
            f.opt.save_file(&p)
        },
    ),
    save_file_over_a_socket: row("save_file", "over a socket", Invalid("path"), |f| {
        // A special file that any user can make: the refusal keeps it (/dev/null as root).
        let p = f.dir.0.join("socket");
        let _listener = std::os::unix::net::UnixListener::bind(&p).unwrap();
        let r = f.opt.save_file(&p);
        let kept = std::fs::symlink_metadata(&p).unwrap().file_type();
        std::fs::remove_file(&p).unwrap();
        assert!(std::os::unix::fs::FileTypeExt::is_socket(&kept), "the socket was replaced");
        r
    }),
    save_file_a_name_of_256_bytes: row("save_file", "a name of 256 bytes", Io, |f| {
        let p = f.dir.0.join("n".repeat(256));
        f.opt.save_file(&p)
    }),
    // The stateless kernels (caller-owned buffers `extra`: param, grad, m, v, v_max, slow).
    kernels_apply_grad_one_shorter: kernel_len_row(1, "grad", "one shorter", 1),
    kernels_apply_grad_empty: kernel_len_row(1, "grad", "empty", 8),
    kernels_apply_m_one_shorter: kernel_len_row(2, "m (first moment", "one shorter", 1),
    kernels_apply_m_empty: kernel_len_row(2, "m (first moment", "empty", 8),
    kernels_apply_v_one_shorter: kernel_len_row(3, "v (second moment)", "one shorter", 1),
    kernels_apply_v_empty: kernel_len_row(3, "v (second moment)", "empty", 8),
    kernels_apply_v_max_one_shorter: kernel_len_row(4, "v_max", "one shorter", 1),
    kernels_apply_v_max_empty: kernel_len_row(4, "v_max", "empty", 8),
    kernels_apply_slow_one_shorter: kernel_len_row(5, "slow weights", "one shorter", 1),
    kernels_apply_slow_empty: kernel_len_row(5, "slow weights", "empty", 8),
    kernels_apply_param_of_2pow33_elements: row(
        "kernels::apply",
        "param of 2^33 elements",
        Length("grad"),
        move |f| {
            let Some(mut h) = Huge::new() else {
                return Err(Error::LengthMismatch {
                    what: "grad (mmap unavailable: row not run)".into(),
                    expected: 0,
                    got: 0,
                });
            };
            let [_, g, m, v, x, s] = &mut f.extra[..] else {
                unreachable!()
            };
            let b = Buffers {
                param: h.f32s(),
                grad: g,
                m,
                v,
                v_max: x,
                slow: s,
            };
            kernels::apply(Tier::Scalar, &kernel_plan(), b)
        },
    ),
    kernels_sum_squares_partials_0_for_8_elements: partials_row(0),
    kernels_sum_squares_partials_2_for_8_elements: partials_row(2),
    kernels_sum_squares_partials_2pow20_for_8_elements: partials_row(1 << 20),
    kernels_apply_op_scale_nan: op_row("scale NaN", Op::Scale(f32::NAN), Invalid("scale")),
    kernels_apply_op_scale_inf: op_row("scale inf", Op::Scale(f32::INFINITY), Invalid("scale")),
    kernels_apply_op_scale_minus_inf: op_row(
        "scale -inf",
        Op::Scale(f32::NEG_INFINITY),
        Invalid("scale"),
    ),
    kernels_apply_op_clip_value_nan: op_row(
        "clip_value NaN",
        Op::ClipValue(f32::NAN),
        Invalid("clip_value"),
    ),
    kernels_apply_op_clip_value_minus_1: op_row(
        "clip_value -1",
        Op::ClipValue(-1.0),
        Invalid("clip_value"),
    ),
    kernels_apply_op_clip_value_minus_inf: op_row(
        "clip_value -inf",
        Op::ClipValue(f32::NEG_INFINITY),
        Invalid("clip_value"),
    ),
    kernels_apply_op_clip_value_minus_subnormal: op_row(
        "clip_value -1e-45",
        Op::ClipValue(-1e-45),
        Invalid("clip_value"),
    ),
    kernels_apply_op_sync_alpha_nan: op_row("sync alpha NaN", Op::Sync(f32::NAN), Invalid("alpha")),
    kernels_apply_op_sync_alpha_negative: op_row(
        "sync alpha -0.1",
        Op::Sync(-0.1),
        Invalid("alpha"),
    ),
    kernels_apply_op_sync_alpha_above_1: op_row("sync alpha 1.5", Op::Sync(1.5), Invalid("alpha")),
    kernels_apply_op_sync_alpha_inf: op_row(
        "sync alpha inf",
        Op::Sync(f32::INFINITY),
        Invalid("alpha"),
    ),
    kernels_apply_op_sync_alpha_minus_subnormal: op_row(
        "sync alpha -1e-45",
        Op::Sync(-1e-45),
        Invalid("alpha"),
    ),
    kernels_apply_op_sync_with_a_shorter_y: row(
        "kernels::apply_op",
        "sync with a shorter y",
        Length("slow weights"),
        |f| {
            let (a, b) = f.extra.split_at_mut(5);
            kernels::apply_op(Tier::Scalar, Op::Sync(0.5), &mut a[0], &mut b[0][1..])
        },
    ),
    kernels_apply_op_sync_with_y_of_2pow33_elements: row(
        "kernels::apply_op",
        "sync with y of 2^33 elements",
        Length("slow weights"),
        |f| {
            let Some(mut h) = Huge::new() else {
                return Err(Error::LengthMismatch {
                    what: "slow weights (mmap unavailable: row not run)".into(),
                    expected: 0,
                    got: 0,
                });
            };
            kernels::apply_op(Tier::Scalar, Op::Sync(0.5), &mut f.extra[0], h.f32s())
        },
    ),
    }
}

/// Marks a row that cannot run on this machine (see [`not_run`]).
const NOT_RUN: &str = "row not run";

/// The result of a row that cannot run here, and why: the runner reports it and goes on.
fn not_run(why: &str) -> Error {
    Error::LengthMismatch {
        what: format!("{why}: {NOT_RUN}"),
        expected: 0,
        got: 0,
    }
}

fn threads_row(n: usize) -> Row {
    row(
        "set_num_threads",
        format!("{n}"),
        Expect::Invalid("num_threads"),
        move |f| f.opt.set_num_threads(n),
    )
}

/// A bad metric: refused as such by a plateau schedule, as a call out of order by the others.
fn metric_row(m: f64) -> Row {
    row(
        "step_schedule_metric",
        format!("{m}"),
        Expect::State,
        move |f| f.opt.step_schedule_metric(m),
    )
    .expect_by(|c| {
        if c.lr.is_metric_driven() {
            Expect::Invalid("metric")
        } else {
            Expect::State
        }
    })
}

/// A plateau schedule state field (offset after the configuration section) set to `x`.
fn plateau_row(case: &'static str, offset: usize, x: f64) -> Row {
    row(
        "load",
        format!("crafted: plateau {case}"),
        Expect::Corrupt,
        move |f| {
            f.opt.load(&crafted(&f.other_state, |b, at| {
                put_u64(b, at + offset, x.to_bits())
            }))
        },
    )
    .only(plateau_driven)
}

fn partials_row(n: usize) -> Row {
    row(
        "kernels::sum_squares_partials",
        format!("{n} partials for 8 elements"),
        Expect::Length("partials"),
        move |f| {
            let mut out = vec![0.0; n];
            kernels::sum_squares_partials(Tier::Scalar, &f.extra[1], &mut out)
        },
    )
}

/// The configurations the call table runs on: every base, every state array, schedules with
/// extra state, all three policies.
fn call_configs() -> Vec<Config> {
    vec![
        Config::with_schedule(
            Base::Adam {
                b1: 0.9,
                b2: 0.99,
                eps: 1e-8,
                amsgrad: true,
            },
            Schedule::cosine_annealing_warm_restarts(0.01, 2, 2, 1e-4),
        )
        .lookahead(2, 0.5)
        .clip_norm(1.0)
        .clip_value(0.5)
        .weight_decay(0.01)
        .nonfinite(NonFinitePolicy::Error),
        Config::with_schedule(
            Base::Sgd {
                momentum: 0.9,
                dampening: 0.1,
                nesterov: false,
            },
            Schedule::reduce_on_plateau(0.1),
        )
        .lookahead(3, 0.3),
        Config::with_schedule(Base::radam(), Schedule::one_cycle(0.05, 30))
            .nonfinite(NonFinitePolicy::Propagate)
            .clip_norm(0.5),
        Config::new(Base::adamw(), 1e-3).schedule_mode(ScheduleMode::Manual),
        // State arrays holding other quantities: squared updates in m (Adadelta), the gradient
        // average in v_max (centered RMSprop), step sizes in v (Rprop).
        Config::new(Base::adadelta(), 1.0).lookahead(2, 0.5),
        rmsprop(0.9, 1e-8, 0.5, 0.0).nonfinite(NonFinitePolicy::Error),
        Config::new(Base::rprop(), 0.01).clip_norm(1.0),
    ]
}

/// Temporary directory removed on drop.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir(tag: &str) -> TempDir {
    let d = std::env::temp_dir().join(format!("flatopt-hostile-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    TempDir(d)
}

// ---------------------------------------------------------------------------------------------
// Split updates: begin_step, Step::apply on ranges, end_step.

/// A misuse of a begun split update.
#[derive(Debug, Clone, Copy)]
enum Misuse {
    /// `Step::apply` on elements `[a, b)` of the concatenated buffers.
    Apply(usize, usize),
    /// `end_step` with the begun step.
    Finish,
    /// `begin_step` again.
    Begin,
    /// A plain `update`.
    Update,
    /// `step_with_sum_squares`.
    UpdateWithSum,
    /// `Step::apply` of the stale step of the fixture (an update begun before the last one).
    ApplyStale,
    /// `Step::apply` of a step begun on another optimizer, with this one's state.
    ApplyForeign,
    /// `end_step` with a step begun on another optimizer.
    FinishForeign,
}

/// Applies `step` to elements `[a, b)` of the concatenated buffers of `f`, buffer by buffer.
fn apply_range(f: &mut Fx, step: &Step, a: usize, b: usize) -> Result<(), Error> {
    let mut start = 0;
    for (i, st) in f.opt.states_mut().enumerate() {
        let n = LENS[i];
        let (lo, hi) = (a.max(start), b.min(start + n));
        if lo < hi {
            let (_, rest) = st.split_at(lo - start);
            let (st, _) = rest.split_at(hi - lo);
            let (p, g) = (&mut f.params[i], &f.grads[i]);
            step.apply(
                &mut p[lo - start..hi - start],
                &g[lo - start..hi - start],
                st,
            )?;
        }
        start += n;
    }
    Ok(())
}

/// A split-update row: the ranges applied first, the misuse, the error it must give. The
/// misuse must change nothing (not even a parameter of a range it overlaps); then the rest of
/// the update is applied and finished, and the result is the bits of one plain update.
type SplitRow = (&'static [(usize, usize)], Misuse, Expect);

fn check_split(name: &str, (applied, misuse, want): SplitRow) {
    for (k, cfg) in call_configs().iter().enumerate() {
        let ctx = format!("{name} on {}", cfg.base.name());
        let mut f = fixture(cfg, &format!("{name}-{k}"));
        let mut plain = fixture(cfg, &format!("{name}-{k}-plain"));
        plain
            .opt
            .step(&mut refs(&mut plain.params), &crefs(&plain.grads))
            .unwrap();
        let grads = f.grads.clone();
        let step = f.opt.begin_step(&crefs(&grads)).unwrap().unwrap();
        for &(a, b) in applied {
            apply_range(&mut f, &step, a, b).unwrap();
        }
        let before = digest(&f);
        let mut other = fixture(cfg, &format!("{name}-{k}-other"));
        let result = match misuse {
            Misuse::Apply(a, b) => apply_range(&mut f, &step, a, b),
            Misuse::Finish => f.opt.end_step(step),
            Misuse::Begin => f.opt.begin_step(&crefs(&grads)).map(|_| ()),
            Misuse::Update => f
                .opt
                .step(&mut refs(&mut f.params), &crefs(&grads))
                .map(|_| ()),
            Misuse::UpdateWithSum => f
                .opt
                .step_with_sum_squares(&mut refs(&mut f.params), &crefs(&grads), 1.0)
                .map(|_| ()),
            Misuse::ApplyStale => {
                let stale = f.stale;
                apply_range(&mut f, &stale, 0, TOTAL)
            }
            Misuse::ApplyForeign => {
                let foreign = other.opt.begin_step(&crefs(&grads)).unwrap().unwrap();
                apply_range(&mut f, &foreign, 0, TOTAL)
            }
            Misuse::FinishForeign => {
                let foreign = other.opt.begin_step(&crefs(&grads)).unwrap().unwrap();
                f.opt.end_step(foreign)
            }
        };
        check_error(result, &want, &ctx);
        assert!(
            digest(&f) == before,
            "{ctx}: the refused call changed something"
        );
        // Complete the update: the ranges not applied yet, then finish.
        let mut at = 0;
        let mut done: Vec<(usize, usize)> = applied.to_vec();
        done.sort_unstable();
        for (a, b) in done.into_iter().chain([(TOTAL, TOTAL)]) {
            if at < a {
                apply_range(&mut f, &step, at, a).unwrap();
            }
            at = at.max(b);
        }
        f.opt.end_step(step).unwrap();
        assert!(
            digest(&f) == digest(&plain),
            "{ctx}: completing the update after the refusal differs from one update"
        );
    }
}

/// Each element exactly once per update, a finish only after a full cover, no other update
/// while one is partly applied, only the step begun last on this optimizer.
mod split_misuse {
    use super::Expect::*;
    use super::Misuse::*;
    use super::*;

    rows! { check_split;
    the_same_range_twice: (&[(0, 4)], Apply(0, 4), Overlap("element 0")),
    a_range_overlapping_the_end_of_an_applied_one: (&[(0, 10)], Apply(8, 12), Overlap("element 8")),
    a_range_inside_an_applied_one: (&[(0, 25)], Apply(3, 4), Overlap("element 3")),
    all_buffers_over_an_applied_range: (&[(1, 3)], Apply(0, 25), Overlap("element 1")),
    the_last_element_twice: (&[(24, 25)], Apply(22, 25), Overlap("element 24")),
    one_buffer_twice_among_others: (&[(0, 5), (22, 25)], Apply(0, 25), Overlap("element 0")),
    finish_with_nothing_applied: (&[], Finish, Length("elements applied")),
    finish_after_one_buffer: (&[(0, 5)], Finish, Length("elements applied")),
    finish_with_one_element_missing: (&[(0, 12), (13, 25)], Finish, Length("elements applied")),
    begin_again_after_part: (&[(0, 5)], Begin, State),
    update_after_part: (&[(0, 5)], Update, State),
    update_with_sum_squares_after_part: (&[(3, 7)], UpdateWithSum, State),
    apply_a_stale_step: (&[(0, 5)], ApplyStale, State),
    apply_a_step_of_another_optimizer: (&[], ApplyForeign, State),
    finish_with_a_step_of_another_optimizer: (&[(0, 25)], FinishForeign, State),
    }
}

/// Begin twice: the second begin replaces the first while nothing of it is applied; both are
/// update 1; the one finished is counted, finishing again (either) is refused.
#[test]
fn begin_twice_then_finish_each() {
    for cfg in call_configs() {
        let p = vec![vec![1.0f32; 4]];
        let mut pm = p.clone();
        let mut opt = registered(&cfg, &p);
        let g = [0.25f32; 4];
        let a = opt.begin_step(&[&g]).unwrap().unwrap();
        let b = opt.begin_step(&[&g]).unwrap().unwrap();
        assert_eq!((a.number(), b.number()), (1, 1));
        for st in opt.states_mut() {
            a.apply(&mut pm[0], &g, st).unwrap();
        }
        opt.end_step(a).unwrap();
        let after = opt.save();
        check_error(
            opt.end_step(b),
            &Expect::State,
            "end_step of the second step",
        );
        check_error(opt.end_step(a), &Expect::State, "end_step of a step twice");
        assert_eq!(opt.save(), after, "refused end_step changed the optimizer");
    }
}

// ---------------------------------------------------------------------------------------------
// Calls before registration.

/// A call on an optimizer with nothing registered: refused as out of order, nothing changed.
fn check_unregistered(name: &str, call: fn(&mut Optimizer) -> Result<(), Error>) {
    for cfg in call_configs() {
        let mut opt = Optimizer::new(cfg.clone()).unwrap();
        let fresh = opt.save();
        check_error(call(&mut opt), &Expect::State, name);
        assert_eq!(opt.save(), fresh, "{name} changed the optimizer");
        assert_eq!(opt.buffer_lens(), &[] as &[usize]);
    }
}

mod unregistered {
    use super::*;

    rows! { check_unregistered;
    update_with_no_buffers: |o| o.step(&mut [], &[]).map(|_| ()),
    update_with_buffers: |o| {
        let mut q = vec![1.0f32; 4];
        o.step(&mut [&mut q], &[&[0.5; 4]]).map(|_| ())
    },
    step_with_sum_squares: |o| o.step_with_sum_squares(&mut [], &[], 1.0).map(|_| ()),
    begin_step: |o| o.begin_step(&[]).map(|_| ()),
    begin_step_with_sum_squares: |o| {
        o.begin_step_with_sum_squares(Some(1.0), |_| None)
            .map(|_| ())
    },
    reset: |o| o.reset(&[]),
    load: |o| {
        let other = registered(o.config(), &[vec![1.0f32; 4]]).save();
        o.load(&other)
    },
    load_file: |o| o.load_file("/dev/zero"),
    checkpoint_info: |o| {
        let other = registered(o.config(), &[vec![1.0f32; 4]]).save();
        o.checkpoint_info(&other).map(|_| ())
    },
    sum_squares_partials: |o| o.sum_squares_partials(&[], &mut []),
    }
}

// ---------------------------------------------------------------------------------------------
// Scale: many small buffers.

/// 20,000 one-element buffers register in milliseconds (it took 38 s, quadratic in the number
/// of buffers, through the C ABI): one by one through the C handle, at once and one by one
/// through the Rust API; then one update of all of them, and a split one.
#[test]
fn twenty_thousand_buffers_register_in_milliseconds() {
    use flatopt::ffi::flatopt_status::FLATOPT_OK;
    use flatopt::ffi::*;
    const N: usize = 20_000;
    let bound = std::time::Duration::from_secs(if cfg!(miri) { 3600 } else { 5 });
    let cfg = Config::new(Base::adam(), 1e-3).lookahead(5, 0.5);
    let mut params: Vec<Vec<f32>> = (0..N).map(|i| vec![i as f32 * 1e-4]).collect();
    let grads: Vec<Vec<f32>> = (0..N).map(|i| vec![(i % 7) as f32 * 0.1]).collect();

    let t = std::time::Instant::now();
    let mut opt = Optimizer::new(cfg.clone()).unwrap();
    opt.register(&crefs(&params)).unwrap();
    let rust_at_once = t.elapsed();

    let t = std::time::Instant::now();
    let mut one_by_one = Optimizer::new(cfg.clone()).unwrap();
    for p in &params {
        one_by_one.add_buffer(p).unwrap();
    }
    let rust_one_by_one = t.elapsed();
    assert_eq!(one_by_one.save(), opt.save());

    let mut c_params = params.clone();
    // SAFETY: plain C-ABI use: a valid config, live buffers that outlive the handle, which is
    // freed once at the end.
    let (c_add, h) = unsafe {
        let mut c = std::mem::zeroed::<flatopt_config>();
        assert_eq!(
            flatopt_config_init(&mut c, std::mem::size_of::<flatopt_config>()),
            FLATOPT_OK
        );
        c.lr = 1e-3;
        c.lookahead = 1;
        c.sync_period = 5;
        c.alpha = 0.5;
        let mut h = std::ptr::null_mut();
        assert_eq!(flatopt_optimizer_new(&c, &mut h), FLATOPT_OK);
        let t = std::time::Instant::now();
        for (p, g) in c_params.iter_mut().zip(&grads) {
            assert_eq!(
                flatopt_optimizer_add_param(h, p.as_mut_ptr(), g.as_ptr(), 1),
                FLATOPT_OK
            );
        }
        (t.elapsed(), h)
    };
    println!(
        "{N} one-element buffers: register {:.1} ms, add_buffer one by one {:.1} ms, C \
         add_param one by one {:.1} ms",
        rust_at_once.as_secs_f64() * 1e3,
        rust_one_by_one.as_secs_f64() * 1e3,
        c_add.as_secs_f64() * 1e3
    );
    for (what, d) in [
        ("register", rust_at_once),
        ("add_buffer", rust_one_by_one),
        ("C add_param", c_add),
    ] {
        assert!(d < bound, "{what} of {N} buffers took {d:?}");
    }
    // They update like one another.
    opt.step(&mut refs(&mut params), &crefs(&grads)).unwrap();
    // SAFETY: the live handle made above, freed once.
    unsafe {
        assert_eq!(flatopt_optimizer_begin_step(h), FLATOPT_OK);
        assert_eq!(flatopt_optimizer_step_range(h, N / 3, N), FLATOPT_OK);
        assert_eq!(flatopt_optimizer_step_range(h, 0, N / 3), FLATOPT_OK);
        assert_eq!(flatopt_optimizer_end_step(h), FLATOPT_OK);
        flatopt_optimizer_free(h);
    }
    assert_eq!(params, c_params);
}

/// Schedule states: a bad metric leaves the state unchanged.
#[test]
fn hostile_schedule_metric() {
    let s = Schedule::reduce_on_plateau(0.1);
    let mut st = ScheduleState::new(&s);
    st.step_metric(&s, 1.0).unwrap();
    for m in [f64::NAN, -f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let before = st.clone();
        check_error(st.step_metric(&s, m), &Expect::Invalid("metric"), "metric");
        assert_eq!(st, before);
    }
    let other = Schedule::fixed(0.1);
    let before = ScheduleState::new(&other);
    let mut st = before.clone();
    check_error(
        st.step_metric(&other, 1.0),
        &Expect::State,
        "metric on a fixed rate",
    );
    assert_eq!(st, before);
    println!("hostile inputs (Rust API), schedule state: 5");
}

// ---------------------------------------------------------------------------------------------
// Non-finite gradients.

/// The skipped-updates counter in a checkpoint (so that two checkpoints can be compared on
/// every other byte).
fn with_skipped(bytes: &[u8], skipped: u64) -> Vec<u8> {
    crafted(bytes, |b, at| put_u64(b, at + 8, skipped))
}

fn skipped_of(bytes: &[u8]) -> u64 {
    let c = u64::from_le_bytes(bytes[32..40].try_into().unwrap()) as usize;
    u64::from_le_bytes(bytes[40 + c + 8..40 + c + 16].try_into().unwrap())
}

/// Configurations whose every part depends on the step counter: bias correction (Adam family),
/// momentum's first step, Lookahead sync timing (k = 3), and schedules with state.
fn timing_configs() -> Vec<Config> {
    let schedules = [
        Schedule::cosine_annealing_warm_restarts(0.02, 2, 2, 1e-3),
        Schedule::one_cycle(0.05, 12),
        Schedule::multi_step(0.02, vec![2, 4, 5], 0.5),
        Schedule::Cyclic {
            base: 0.001,
            max_lr: 0.03,
            step_size_up: 2,
            step_size_down: 3,
            mode: CyclicMode::Triangular2,
            gamma: 1.0,
        },
        Schedule::reduce_on_plateau(0.02),
    ];
    let bases = [
        Base::Adam {
            b1: 0.8,
            b2: 0.9,
            eps: 1e-8,
            amsgrad: true,
        },
        Base::momentum(0.9, true),
        Base::radam(),
        Base::adamw(),
    ];
    let mut out = Vec::new();
    for (i, s) in schedules.iter().enumerate() {
        for (j, b) in bases.iter().enumerate() {
            let mut c = Config::with_schedule(*b, s.clone()).lookahead(3, 0.5);
            if (i + j) % 2 == 0 {
                c = c.clip_norm(0.3);
            }
            out.push(c);
        }
    }
    out
}

/// How a run performs one update.
#[derive(Clone, Copy, Debug)]
enum Path {
    Update,
    /// `step_with_sum_squares` with the sum computed from the block partials.
    SumSquares,
    /// `begin_step`, `Step::apply` per buffer, `end_step`.
    ThreePhase,
}

fn one_update(
    opt: &mut Optimizer,
    params: &mut [Vec<f32>],
    grads: &[Vec<f32>],
    path: Path,
) -> Result<Outcome, Error> {
    let g = crefs(grads);
    match path {
        Path::Update => opt.step(&mut refs(params), &g),
        Path::SumSquares => {
            let mut partials = vec![0.0; opt.sum_squares_block_count()];
            opt.sum_squares_partials(&g, &mut partials)?;
            let sum: f64 = partials.iter().sum();
            opt.step_with_sum_squares(&mut refs(params), &g, sum)
        }
        Path::ThreePhase => match opt.begin_step(&g)? {
            Err(skipped) => Ok(skipped),
            Ok(step) => {
                for ((p, g), st) in params.iter_mut().zip(&g).zip(opt.states_mut()) {
                    step.apply(p, g, st)?;
                }
                let (n, synced) = (step.number(), step.syncs());
                opt.end_step(step)?;
                Ok(Outcome::Applied { step: n, synced })
            }
        },
    }
}

/// A skipped update (Skip and Error policies, three update paths) changes no byte of the
/// checkpoint or the parameters except the skipped counter, which goes up by one; the run then
/// continues exactly as one that never saw the bad gradients (same bias correction, sync timing
/// and schedule state: every byte of the final checkpoint but the counter). The report names the
/// first non-finite value by buffer (registration order), then index, with its bits.
#[test]
fn skipped_updates_change_nothing_and_keep_timing() {
    let lens = [9usize, 40, 3];
    let steps = 9;
    let grads_of = |s: usize| -> Vec<Vec<f32>> {
        lens.iter()
            .enumerate()
            .map(|(b, &n)| vals(n, 3 * s + b).iter().map(|x| x * 0.3).collect())
            .collect()
    };
    // Bad gradients before steps 2 (so that update 3, a sync, comes right after) and 5 (twice).
    // The first bad value by buffer then index is buffer 1, index 7 (buffer 1 index 30 and
    // buffer 2 index 0 come later in that order).
    let bad_before = [2usize, 5, 5];
    let poisons = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -f32::NAN];
    let mut checked = 0;
    for cfg in timing_configs() {
        for policy in [NonFinitePolicy::Skip, NonFinitePolicy::Error] {
            for path in [Path::Update, Path::SumSquares, Path::ThreePhase] {
                let cfg = cfg.clone().nonfinite(policy);
                let init: Vec<Vec<f32>> = lens.iter().map(|&n| vals(n, n)).collect();
                let mut clean_p = init.clone();
                let mut clean = registered(&cfg, &init);
                let mut p = init.clone();
                let mut opt = registered(&cfg, &init);
                let metric = cfg.lr.is_metric_driven();
                let mut skips = 0u64;
                let mut bad_iter = 0;
                for s in 0..steps {
                    while bad_iter < bad_before.len() && bad_before[bad_iter] == s {
                        let poison = poisons[(bad_iter + checked) % poisons.len()];
                        let mut g = grads_of(s);
                        g[1][30] = f32::NAN;
                        g[2][0] = f32::INFINITY;
                        g[1][7] = poison;
                        let before = opt.save();
                        let p_before: Vec<Vec<u32>> = p
                            .iter()
                            .map(|b| b.iter().map(|x| x.to_bits()).collect())
                            .collect();
                        let r = one_update(&mut opt, &mut p, &g, path);
                        let ctx = format!("{cfg:?} {path:?} bad update {bad_iter}");
                        let (buffer, index, value, shown) = match (&r, policy) {
                            (
                                Ok(Outcome::Skipped {
                                    buffer,
                                    index,
                                    value,
                                }),
                                NonFinitePolicy::Skip,
                            ) => (*buffer, *index, *value, None),
                            (
                                Err(
                                    e @ Error::NonFinite {
                                        buffer,
                                        index,
                                        value,
                                    },
                                ),
                                NonFinitePolicy::Error,
                            ) => (*buffer, *index, *value, Some(e.to_string())),
                            _ => panic!("{ctx}: got {r:?}"),
                        };
                        assert_eq!((buffer, index), (1, 7), "{ctx}: reported position");
                        assert_eq!(value.to_bits(), poison.to_bits(), "{ctx}: reported value");
                        if let Some(msg) = shown {
                            assert!(
                                msg.contains("buffer 1") && msg.contains("index 7"),
                                "{ctx}: message {msg:?}"
                            );
                        }
                        skips += 1;
                        let after = opt.save();
                        assert_eq!(skipped_of(&after), skipped_of(&before) + 1, "{ctx}");
                        assert_eq!(
                            with_skipped(&after, 0),
                            with_skipped(&before, 0),
                            "{ctx}: a skipped update changed a byte of the checkpoint"
                        );
                        let p_after: Vec<Vec<u32>> = p
                            .iter()
                            .map(|b| b.iter().map(|x| x.to_bits()).collect())
                            .collect();
                        assert_eq!(p_after, p_before, "{ctx}: params changed");
                        bad_iter += 1;
                    }
                    let g = grads_of(s);
                    let a = one_update(&mut opt, &mut p, &g, path).unwrap();
                    let b = clean.step(&mut refs(&mut clean_p), &crefs(&g)).unwrap();
                    assert_eq!(a, b, "{cfg:?} {path:?}: outcome of update {s}");
                    if metric {
                        let m = 1.0 / (1.0 + (s % 3) as f64);
                        opt.step_schedule_metric(m).unwrap();
                        clean.step_schedule_metric(m).unwrap();
                    }
                }
                assert_eq!(opt.skipped_count(), skips);
                assert_eq!(clean.skipped_count(), 0);
                assert_eq!(
                    with_skipped(&opt.save(), 0),
                    clean.save(),
                    "{cfg:?} {path:?}: the skipped updates shifted the run"
                );
                for (a, b) in p.iter().zip(&clean_p) {
                    assert_eq!(
                        a.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                        b.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                        "{cfg:?} {path:?}: params"
                    );
                }
                checked += 1;
            }
        }
    }
    println!(
        "non-finite: {checked} runs with {} skipped updates each",
        bad_before.len()
    );
    assert_eq!(checked, 20 * 2 * 3);
}

/// A non-finite sum of squares supplied by the caller (another shard's gradients) while this
/// process's gradients are finite: skipped with buffer and index `usize::MAX`, and the message
/// says where the value is.
#[test]
fn non_finite_supplied_sum_is_reported_as_another_shard() {
    for policy in [NonFinitePolicy::Skip, NonFinitePolicy::Error] {
        for sum in [f64::NAN, f64::INFINITY] {
            let cfg = Config::new(Base::adam(), 1e-2)
                .lookahead(2, 0.5)
                .nonfinite(policy);
            let mut p = vec![vals(6, 1)];
            let g = vec![vals(6, 2)];
            let mut opt = registered(&cfg, &p);
            let before = opt.save();
            let r = opt.step_with_sum_squares(&mut refs(&mut p), &crefs(&g), sum);
            match (policy, &r) {
                (
                    NonFinitePolicy::Skip,
                    Ok(Outcome::Skipped {
                        buffer: usize::MAX,
                        index: usize::MAX,
                        ..
                    }),
                ) => {}
                (
                    NonFinitePolicy::Error,
                    Err(
                        e @ Error::NonFinite {
                            buffer: usize::MAX,
                            index: usize::MAX,
                            ..
                        },
                    ),
                ) => assert!(e.to_string().contains("another shard"), "{e}"),
                _ => panic!("{policy:?} {sum}: {r:?}"),
            }
            assert_eq!(with_skipped(&opt.save(), 0), with_skipped(&before, 0));
            assert_eq!(opt.skipped_count(), 1);
            assert_eq!(p[0], vals(6, 1));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The C ABI handle shared between threads.

/// A handle pointer that may cross threads (misusing it is the point).
#[derive(Clone, Copy)]
struct SharedHandle(*mut flatopt::ffi::flatopt_optimizer);
// SAFETY: the library detects and refuses conflicting concurrent use of a handle.
unsafe impl Send for SharedHandle {}
// SAFETY: as above.
unsafe impl Sync for SharedHandle {}

impl SharedHandle {
    fn ptr(&self) -> *mut flatopt::ffi::flatopt_optimizer {
        self.0
    }
}

/// A C handle (Lookahead(Adam), clip by norm) over `p` with gradient `g`.
fn c_handle(p: &mut [f32], g: &[f32]) -> SharedHandle {
    use flatopt::ffi::*;
    // SAFETY: plain C-ABI use with valid structs and live buffers that outlive the handle.
    unsafe {
        let mut cfg = std::mem::zeroed::<flatopt_config>();
        assert_eq!(
            flatopt_config_init(&mut cfg, std::mem::size_of::<flatopt_config>()),
            flatopt_status::FLATOPT_OK
        );
        cfg.lookahead = 1;
        cfg.sync_period = 2;
        cfg.grad_clip_norm = 1.0;
        cfg.simd_tier = flatopt_simd_tier::FLATOPT_SIMD_SCALAR as u32;
        let mut h = std::ptr::null_mut();
        assert_eq!(
            flatopt_optimizer_new(&cfg, &mut h),
            flatopt_status::FLATOPT_OK
        );
        assert_eq!(
            flatopt_optimizer_add_param(h, p.as_mut_ptr(), g.as_ptr(), p.len()),
            flatopt_status::FLATOPT_OK
        );
        SharedHandle(h)
    }
}

/// Hostile use of one C handle from two threads: conflicting calls are refused with
/// `FLATOPT_ERR_BUSY` (never a data race), accepted steps are counted once, and the split step
/// (`begin_step`, `step_range` on disjoint ranges from two threads, `end_step`) equals a plain
/// step; a second `begin_step` and a range outside the buffers are refused. Small, so that it
/// also runs under Miri (`scripts/miri.sh`), which checks the unsafe code of the handle for data
/// races and aliasing violations.
#[test]
fn c_handle_shared_between_threads() {
    use flatopt::ffi::flatopt_status::*;
    use flatopt::ffi::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    let n = 48;
    let mut p = vals(n, 1);
    let g = vals(n, 2);
    let mut p_ref = p.clone();
    let h = c_handle(&mut p, &g);
    let r = c_handle(&mut p_ref, &g);
    let (ok, busy) = (AtomicU64::new(0), AtomicU64::new(0));
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                for _ in 0..6 {
                    // SAFETY: a live handle; the concurrent use is what is tested.
                    match unsafe { flatopt_optimizer_step(h.ptr()) } {
                        FLATOPT_OK => ok.fetch_add(1, Ordering::Relaxed),
                        FLATOPT_ERR_BUSY => busy.fetch_add(1, Ordering::Relaxed),
                        other => panic!("step from two threads: {other:?}"),
                    };
                }
            });
        }
    });
    let accepted = ok.into_inner();
    assert_eq!(accepted + busy.into_inner(), 12);
    let mut count = 0u64;
    // SAFETY: live handles, valid out pointers, ranges inside the registered length.
    unsafe {
        assert_eq!(
            flatopt_optimizer_step_count(h.ptr(), &mut count),
            FLATOPT_OK
        );
        assert_eq!(
            count, accepted,
            "accepted steps counted once, refused ones not at all"
        );
        for _ in 0..accepted {
            assert_eq!(flatopt_optimizer_step(r.ptr()), FLATOPT_OK);
        }
        // The split step, ranges from two threads.
        assert_eq!(
            flatopt_optimizer_step_range(h.ptr(), 0, 1),
            FLATOPT_ERR_INVALID_STATE
        );
        assert_eq!(flatopt_optimizer_begin_step(h.ptr()), FLATOPT_OK);
        assert_eq!(
            flatopt_optimizer_begin_step(h.ptr()),
            FLATOPT_ERR_INVALID_STATE
        );
        assert_eq!(flatopt_optimizer_step(h.ptr()), FLATOPT_ERR_INVALID_STATE);
        assert_eq!(
            flatopt_optimizer_step_range(h.ptr(), 0, n + 1),
            FLATOPT_ERR_INVALID_ARGUMENT
        );
        assert_eq!(
            flatopt_optimizer_step_range(h.ptr(), 5, 4),
            FLATOPT_ERR_INVALID_ARGUMENT
        );
    }
    std::thread::scope(|s| {
        for (a, b) in [(0, 17), (17, n)] {
            s.spawn(move || {
                // SAFETY: between begin_step and end_step, disjoint ranges from two threads (the
                // documented exception to one thread per handle).
                let st = unsafe { flatopt_optimizer_step_range(h.ptr(), a, b) };
                assert_eq!(st, FLATOPT_OK);
            });
        }
    });
    // SAFETY: live handles, freed once each at the end.
    unsafe {
        assert_eq!(flatopt_optimizer_end_step(h.ptr()), FLATOPT_OK);
        assert_eq!(
            flatopt_optimizer_end_step(h.ptr()),
            FLATOPT_ERR_INVALID_STATE
        );
        assert_eq!(flatopt_optimizer_step(r.ptr()), FLATOPT_OK);
        flatopt_optimizer_free(h.ptr());
        flatopt_optimizer_free(r.ptr());
    }
    assert_eq!(
        p.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        p_ref.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        "shared handle vs plain steps"
    );
}
