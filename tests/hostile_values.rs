//! Hostile values through the Rust API: values valid in f64 but not in f32 (issue 11), one test
//! per row so that a failure names its row.
//!
//! - Configured values: every value the kernels use in f32 is checked after its rounding
//!   against its domain (the catalogs say which): `lr = 1e39` and `weight_decay = 1e39` (+Inf
//!   as f32), `eps = 1e-50` (0 as f32), `b1 = 0.99999999` (1 as f32) are refused when
//!   configured, with an error naming the field and the value.
//! - Per-step scalars: a schedule that grows past the f32 range (ExponentialLR gamma = 1e10,
//!   StepLR gamma = 1e30, ...) or a step size / decay factor that overflows f32 refuses the
//!   step with an error naming the scalar, and changes nothing (parameters, state, counters,
//!   schedule); the steps before it are applied as usual.

mod common;
use common::adam_with;

use flatopt::schedule::{Anneal, CyclicMode};
use flatopt::{Base, Config, Error, Optimizer, Outcome, Schedule, ScheduleMode};

/// `cfg` is refused by `validate` and by `Optimizer::new`, naming `field`, with its value in
/// the message.
fn assert_refused(cfg: Config, field: &str) {
    let e = cfg.validate().expect_err("accepted");
    let Error::InvalidArgument {
        name, ref value, ..
    } = e
    else {
        panic!("{e:?}: not an InvalidArgument");
    };
    assert_eq!(name, field, "{e}");
    assert!(
        !value.is_empty() && e.to_string().contains(&format!("invalid {field} = ")),
        "{e}"
    );
    assert_eq!(Optimizer::new(cfg).expect_err("new accepted"), e);
}

fn sched(s: Schedule) -> Config {
    Config::with_schedule(Base::adam(), s)
}

macro_rules! refused {
    ($($name:ident: $cfg:expr => $field:literal;)*) => {
        $(
            #[test]
            fn $name() {
                assert_refused($cfg, $field);
            }
        )*
    };
}

refused! {
    lr_1e39_is_inf_in_f32: Config::new(Base::adam(), 1e39) => "lr";
    lr_just_past_f32_max: Config::new(Base::adam(), 3.402_823_567_797_336_6e38) => "lr";
    weight_decay_1e39: Config::new(Base::adam(), 1e-3).weight_decay(1e39) => "weight_decay";
    decoupled_weight_decay_1e39: Config::new(
        Base::AdamW { b1: 0.9, b2: 0.999, eps: 1e-8, weight_decay: 1e39 },
        1e-3,
    ) => "weight_decay (decoupled)";
    eps_1e_50_is_zero_in_f32: Config::new(adam_with(0.9, 0.999, 1e-50), 1e-3) => "eps";
    eps_below_half_subnormal: Config::new(adam_with(0.9, 0.999, 7e-46), 1e-3) => "eps";
    radam_eps_1e_50: Config::new(Base::RAdam { b1: 0.9, b2: 0.999, eps: 1e-50 }, 1e-3) => "eps";
    b1_rounds_to_one: Config::new(adam_with(0.999_999_99, 0.999, 1e-8), 1e-3) => "b1";
    adamax_eps_1e_50: Config::new(Base::Adamax {
        b1: 0.9,
        b2: 0.999,
        eps: 1e-50,
        eps_outside_max: true,
    }, 2e-3) => "eps";
    adamax_b2_rounds_to_one: Config::new(Base::Adamax {
        b1: 0.9,
        b2: 0.999_999_99,
        eps: 1e-8,
        eps_outside_max: false,
    }, 2e-3) => "b2";
    nadam_b1_rounds_to_one: Config::new(Base::NAdam {
        b1: 0.999_999_99,
        b2: 0.999,
        eps: 1e-8,
        momentum_decay: 0.004,
        constant_momentum: false,
        decoupled_weight_decay: 0.0,
    }, 2e-3) => "b1";
    nadam_decoupled_1e39: Config::new(Base::NAdam {
        b1: 0.9,
        b2: 0.999,
        eps: 1e-8,
        momentum_decay: 0.004,
        constant_momentum: true,
        decoupled_weight_decay: 1e39,
    }, 2e-3) => "decoupled_weight_decay";
    adabelief_eps_1e_50: Config::new(Base::AdaBelief {
        b1: 0.9,
        b2: 0.999,
        eps: 1e-50,
        eps_root: 1e-16,
    }, 1e-3) => "eps";
    adabelief_eps_root_1e39: Config::new(Base::AdaBelief {
        b1: 0.9,
        b2: 0.999,
        eps: 1e-16,
        eps_root: 1e39,
    }, 1e-3) => "eps_root";
    yogi_initial_accumulator_1e39: Config::new(Base::Yogi {
        b1: 0.9,
        b2: 0.999,
        eps: 1e-3,
        initial_accumulator_value: 1e39,
    }, 1e-2) => "initial_accumulator_value";
    adadelta_rho_rounds_to_one: Config::new(Base::Adadelta { rho: 0.999_999_99, eps: 1e-6 }, 1.0)
        => "rho";
    rprop_eta_minus_rounds_to_one: Config::new(Base::Rprop {
        eta_minus: 0.999_999_99,
        eta_plus: 1.2,
        min_step_size: 1e-6,
        max_step_size: 50.0,
    }, 1e-2) => "eta_minus";
    rprop_max_step_1e39: Config::new(Base::Rprop {
        eta_minus: 0.5,
        eta_plus: 1.2,
        min_step_size: 1e-6,
        max_step_size: 1e39,
    }, 1e-2) => "max_step_size";
    lion_b2_rounds_to_one: Config::new(Base::Lion {
        b1: 0.9,
        b2: 0.999_999_99,
        weight_decay: 0.0,
    }, 1e-4) => "b2";
    lion_weight_decay_1e39: Config::new(Base::Lion {
        b1: 0.9,
        b2: 0.99,
        weight_decay: 1e39,
    }, 1e-4) => "weight_decay (decoupled)";
    adagrad_eps_1e_50: Config::new(Base::Adagrad {
        lr_decay: 0.0,
        initial_accumulator_value: 0.0,
        eps: 1e-50,
        eps_inside_sqrt: true,
    }, 1e-2) => "eps";
    adagrad_initial_accumulator_1e39: Config::new(Base::Adagrad {
        lr_decay: 0.0,
        initial_accumulator_value: 1e39,
        eps: 1e-10,
        eps_inside_sqrt: false,
    }, 1e-2) => "initial_accumulator_value";
    rmsprop_alpha_rounds_to_one: Config::new(Base::RmsProp {
        alpha: 0.999_999_99,
        eps: 1e-8,
        momentum: 0.0,
        centered: false,
        eps_inside_sqrt: false,
        initial_scale: 0.0,
    }, 1e-2) => "alpha";
    rmsprop_momentum_rounds_to_one: Config::new(Base::RmsProp {
        alpha: 0.99,
        eps: 1e-8,
        momentum: 0.999_999_99,
        centered: true,
        eps_inside_sqrt: false,
        initial_scale: 0.0,
    }, 1e-2) => "momentum";
    rmsprop_initial_scale_1e39: Config::new(Base::RmsProp {
        alpha: 0.99,
        eps: 1e-8,
        momentum: 0.0,
        centered: false,
        eps_inside_sqrt: true,
        initial_scale: 1e39,
    }, 1e-2) => "initial_scale";
    b2_rounds_to_one: Config::new(adam_with(0.9, 0.999_999_99, 1e-8), 1e-3) => "b2";
    momentum_rounds_to_one: Config::new(Base::momentum(0.999_999_99, false), 1e-3) => "momentum";
    clip_norm_zero_in_f32: Config::new(Base::adam(), 1e-3).clip_norm(1e-50) => "grad_clip_norm";
    clip_value_1e39: Config::new(Base::adam(), 1e-3).clip_value(1e39) => "grad_clip_value";
    step_base_1e39: sched(Schedule::step(1e39, 3, 0.5)) => "base";
    cosine_eta_min_1e39: sched(Schedule::cosine_annealing(1e-3, 10, 1e39)) => "eta_min";
    warmup_start_lr_1e39: sched(Schedule::warmup(1e-3, 5, 1e39)) => "start_lr";
    piecewise_value_1e39: sched(Schedule::piecewise_constant(vec![3], vec![1e-3, 1e39])) => "values";
    exp_decay_end_value_1e39: sched(Schedule::ExponentialDecay {
        base: 1e-3,
        decay_steps: 10,
        decay_rate: 0.5,
        transition_begin: 0,
        staircase: false,
        end_value: Some(1e39),
    }) => "end_value";
    cyclic_max_lr_1e39: sched(Schedule::Cyclic {
        base: 1e-3,
        max_lr: 1e39,
        step_size_up: 4,
        step_size_down: 4,
        mode: CyclicMode::Triangular,
        gamma: 1.0,
    }) => "max_lr";
    one_cycle_initial_rate_past_f32: sched(Schedule::OneCycle {
        max_lr: 1e30,
        total_steps: 100,
        pct_start: 0.3,
        div_factor: 1e-10,
        final_div_factor: 1e4,
        anneal: Anneal::Cos,
    }) => "div_factor";
    one_cycle_final_rate_past_f32: sched(Schedule::OneCycle {
        max_lr: 1e30,
        total_steps: 100,
        pct_start: 0.3,
        div_factor: 1.0,
        final_div_factor: 1e-10,
        anneal: Anneal::Cos,
    }) => "final_div_factor";
    plateau_min_lr_1e39: sched(Schedule::ReduceOnPlateau {
        base: 1e-3,
        mode: flatopt::schedule::PlateauMode::Min,
        factor: 0.1,
        patience: 10,
        threshold: 1e-4,
        threshold_mode: flatopt::schedule::ThresholdMode::Rel,
        cooldown: 0,
        min_lr: 1e39,
    }) => "min_lr";
}

macro_rules! accepted {
    ($($name:ident: $cfg:expr;)*) => {
        $(
            #[test]
            fn $name() {
                let cfg = $cfg;
                cfg.validate().expect("refused");
                Optimizer::new(cfg).expect("refused");
            }
        )*
    };
}

// The edges that stay inside the domains as f32 are accepted.
accepted! {
    lr_f32_max: Config::new(Base::adam(), f32::MAX as f64);
    eps_smallest_subnormal: Config::new(adam_with(0.9, 0.999, 1.401_298_464_324_817e-45), 1e-3);
    b1_largest_f32_below_one: Config::new(adam_with(0.999_999_940_395_355_2, 0.999, 1e-8), 1e-3);
    weight_decay_f32_max: Config::new(Base::adam(), 1e-3).weight_decay(f32::MAX as f64);
    step_gamma_1e30_is_configurable: sched(Schedule::step(1e-3, 1, 1e30));
}

fn registered(cfg: Config, n: usize) -> (Optimizer, Vec<f32>, Vec<f32>) {
    let params: Vec<f32> = (0..n).map(|i| 0.5 - i as f32 * 0.125).collect();
    let grads: Vec<f32> = (0..n).map(|i| 0.25 - i as f32 * 0.0625).collect();
    let mut opt = Optimizer::new(cfg).expect("valid configuration");
    opt.register(&[&params]).expect("register");
    (opt, params, grads)
}

/// Steps `cfg` until the first refusal, which must come at update `refused_at` (1-based) and
/// name `scalar`; the refused update (tried twice, and through the split API) changes no byte
/// of the parameters or the checkpoint.
fn assert_step_refused(cfg: Config, refused_at: u64, scalar: &str) {
    let (mut opt, mut p, g) = registered(cfg, 7);
    for t in 1..refused_at {
        let out = opt.step(&mut [&mut p], &[&g]).expect("applied");
        assert!(
            matches!(out, Outcome::Applied { step, .. } if step == t),
            "{out:?}"
        );
    }
    let saved = opt.save();
    let before = p.clone();
    for _ in 0..2 {
        let e = opt.step(&mut [&mut p], &[&g]).expect_err("step applied");
        match &e {
            Error::InvalidArgument { name, value, .. } => {
                assert!(name.starts_with(scalar), "{e}");
                assert!(!value.is_empty(), "{e}");
            }
            other => panic!("{other:?}"),
        }
        assert!(e.to_string().contains("f32"), "{e}");
        assert_eq!(opt.save(), saved, "a refused step changed the optimizer");
        assert_eq!(p, before, "a refused step changed the parameters");
        assert_eq!(opt.step_count(), refused_at - 1);
    }
    let e = opt.begin_step(&[&g]).expect_err("begin_step applied");
    assert!(matches!(e, Error::InvalidArgument { name, .. } if name.starts_with(scalar)));
    assert_eq!(
        opt.save(),
        saved,
        "a refused begin_step changed the optimizer"
    );
}

macro_rules! step_refused {
    ($($name:ident: $cfg:expr, at $t:literal => $scalar:literal;)*) => {
        $(
            #[test]
            fn $name() {
                assert_step_refused($cfg, $t, $scalar);
            }
        )*
    };
}

step_refused! {
    // lr(e) = 1e-3 * 1e10^e: 1e37 at e = 4, 1e47 (Inf as f32) at e = 5, the sixth update.
    exponential_lr_gamma_1e10: sched(Schedule::exponential(1e-3, 1e10)), at 6 => "lr";
    // 1e-3, 1e27, then 1e57 at e = 2.
    step_lr_gamma_1e30: sched(Schedule::step(1e-3, 1, 1e30)), at 3 => "lr";
    multi_step_lr_gamma_1e30: sched(Schedule::multi_step(1e-3, vec![1, 2], 1e30)), at 3 => "lr";
    // 1e-3 (e = 0, before the decay starts), 1e17, 1e37, then 1e57 at e = 3.
    exponential_decay_rate_1e20: sched(Schedule::exponential_decay(1e-3, 1, 1e20)), at 4 => "lr";
    sgd_exponential_growth: Config::with_schedule(Base::sgd(), Schedule::exponential(1e30, 1e5)),
        at 3 => "lr";
    // Adam's step size lr / (1 - b1^t) = 3e38 / 0.1 at t = 1.
    adam_step_size_past_f32: Config::new(Base::adam(), 3e38), at 1 => "step size";
    radam_step_size_past_f32: Config::new(Base::radam(), 3e38), at 1 => "step size";
    // AdamW's decay factor 1 - lr * weight_decay = 1 - 1e40.
    adamw_decay_factor_past_f32: Config::new(
        Base::AdamW { b1: 0.9, b2: 0.999, eps: 1e-8, weight_decay: 1e30 },
        1e10,
    ), at 1 => "decay factor";
    adamax_step_size_past_f32: Config::new(Base::adamax(), 3e38), at 1 => "step size";
    // optax's NAdam with b1 = 0.99: lr * b1 / (1 - b1^2) = 3e38 * 49.7 at t = 1.
    nadam_momentum_step_past_f32: Config::new(
        Base::NAdam {
            b1: 0.99,
            b2: 0.999,
            eps: 1e-8,
            momentum_decay: 0.004,
            constant_momentum: true,
            decoupled_weight_decay: 0.0,
        },
        3e38,
    ), at 1 => "momentum step";
    lion_decay_factor_past_f32: Config::new(
        Base::Lion { b1: 0.9, b2: 0.99, weight_decay: 1e30 },
        1e10,
    ), at 1 => "decay factor";
}

/// An epoch-style schedule stepped past the f32 range by the host: the next update is refused
/// and changes nothing; the schedule state is the host's to manage.
#[test]
fn manual_schedule_grown_past_f32_refuses_the_update() {
    let cfg = sched(Schedule::exponential(1.0, 1e20)).schedule_mode(ScheduleMode::Manual);
    let (mut opt, mut p, g) = registered(cfg, 5);
    opt.step(&mut [&mut p], &[&g]).expect("applied at e = 0");
    opt.step_schedule();
    opt.step_schedule(); // lr = 1e40
    let saved = opt.save();
    let before = p.clone();
    let e = opt.step(&mut [&mut p], &[&g]).expect_err("applied");
    assert!(
        matches!(e, Error::InvalidArgument { name: "lr", .. }),
        "{e}"
    );
    assert_eq!((opt.save(), p), (saved, before));
}

/// A checkpoint whose ReduceLROnPlateau state holds a learning rate that is Inf as f32 is
/// refused before anything changes.
#[test]
fn checkpoint_with_plateau_lr_past_f32_is_refused() {
    let cfg = sched(Schedule::reduce_on_plateau(1e-3));
    let (mut opt, _, _) = registered(cfg, 3);
    let good = opt.save();
    // The configuration section, then two counters, three schedule counters, the plateau lr.
    let config_len = u64::from_le_bytes(good[32..40].try_into().unwrap()) as usize;
    let at = 40 + config_len + 16 + 24;
    let mut bad = good.clone();
    bad[at..at + 8].copy_from_slice(&1e39f64.to_le_bytes());
    let n = bad.len();
    let crc = crc32fast::hash(&bad[..n - 4]);
    bad[n - 4..].copy_from_slice(&crc.to_le_bytes());
    let e = opt.load(&bad).expect_err("loaded");
    assert!(
        matches!(e, Error::Corrupt(ref m) if m.contains("1e39")),
        "{e}"
    );
    assert_eq!(opt.save(), good);
}
