//! Target 1: checkpoint loading.

use flatopt::engine::GroupOptions;
use flatopt::ffi::flatopt_status::*;
use flatopt::ffi::status_of;
use flatopt::{Base, Config, Error, NonFinitePolicy, Optimizer, Outcome, Schedule, ScheduleMode};

use super::c_api::{last_message, Handle};
use super::common::{assert_same_modulo_nan, bits, crefs, digest, refs, registered};
use super::generate::to_c;
use super::input::Input;
use super::surgery::{fix_header, fix_length_and_crc};

/// The fixed configurations the checkpoint target loads into, with their buffer lengths:
/// every base optimizer, every state array, the schedules with extra state, an empty buffer.
pub fn checkpoint_configs() -> Vec<(Config, Vec<usize>)> {
    vec![
        (
            Config::with_schedule(
                Base::Adam {
                    b1: 0.9,
                    b2: 0.99,
                    eps: 1e-8,
                    amsgrad: true,
                },
                Schedule::cosine_annealing_warm_restarts(0.01, 3, 2, 1e-4),
            )
            .lookahead(3, 0.5)
            .clip_norm(1.0)
            .clip_value(0.5)
            .weight_decay(0.01),
            vec![3, 5],
        ),
        (
            Config::with_schedule(
                Base::Sgd {
                    momentum: 0.9,
                    dampening: 0.1,
                    nesterov: false,
                },
                Schedule::reduce_on_plateau(0.1),
            ),
            vec![4],
        ),
        (
            Config::with_schedule(
                Base::radam(),
                Schedule::multi_step(0.01, vec![2, 5, 9], 0.5),
            )
            .nonfinite(NonFinitePolicy::Error),
            vec![2, 0, 1],
        ),
        (
            Config::with_schedule(
                Base::sgd(),
                Schedule::piecewise_constant(vec![3], vec![0.1, 0.01]),
            )
            .nonfinite(NonFinitePolicy::Propagate)
            .schedule_mode(ScheduleMode::Manual),
            vec![1],
        ),
        (
            Config::with_schedule(Base::adamw(), Schedule::one_cycle(0.05, 20)).lookahead(1, 1.0),
            vec![6],
        ),
    ]
}

/// The configurations of the checkpoint value target (`check_checkpoint_values`): those of
/// [`checkpoint_configs`] (whose seeds are committed, so that list stays as it is), then the
/// rules whose state arrays hold other quantities.
pub fn value_configs() -> Vec<(Config, Vec<usize>)> {
    let mut out = checkpoint_configs();
    out.extend([
        // The rules whose state arrays hold other quantities: centered RMSprop with momentum
        // (its gradient average in v_max), Adadelta (squared updates in m), Rprop (the previous
        // gradient in m, step sizes in v), Adagrad (the accumulator in v).
        (
            Config::new(
                Base::RmsProp {
                    alpha: 0.9,
                    eps: 1e-8,
                    momentum: 0.5,
                    centered: true,
                    eps_inside_sqrt: true,
                    initial_scale: 0.0,
                },
                0.01,
            ),
            vec![3, 4],
        ),
        (
            Config::new(Base::adadelta(), 1.0).lookahead(2, 0.5),
            vec![5],
        ),
        (
            Config::new(Base::rprop(), 0.01).nonfinite(NonFinitePolicy::Propagate),
            vec![4, 1],
        ),
        (
            Config::new(Base::adagrad(), 0.1).weight_decay(0.01),
            vec![3],
        ),
    ]);
    out
}

/// The parameter groups of the grouped variant of a configuration (checkpoint format 2): group
/// 1 with twice the base learning rate and no weight decay, group 2 with the configuration's
/// values; buffer `i` in group `i % 3`.
pub fn group_options(cfg: &Config) -> [GroupOptions; 2] {
    [
        GroupOptions {
            lr: Some(2.0 * cfg.lr.base_lr()),
            weight_decay: Some(0.0),
            base: None,
        },
        GroupOptions::default(),
    ]
}

/// The group of buffer `i` in the grouped variant.
pub fn group_of(i: usize) -> usize {
    i % 3
}

/// `registered`, in the groups of the grouped variant when `grouped`.
pub fn registered_in(cfg: &Config, params: &[Vec<f32>], grouped: bool) -> Optimizer {
    if !grouped {
        return registered(cfg, params);
    }
    let mut opt = Optimizer::new(cfg.clone()).expect("valid configuration");
    for g in group_options(cfg) {
        opt.add_group(g).expect("valid group");
    }
    let groups: Vec<usize> = (0..params.len()).map(group_of).collect();
    opt.register_in_groups(&crefs(params), &groups)
        .expect("register");
    opt
}

pub fn initial_params(lens: &[usize], salt: usize) -> Vec<Vec<f32>> {
    lens.iter()
        .enumerate()
        .map(|(i, &n)| {
            (0..n)
                .map(|j| ((i * 31 + j * 7 + salt) % 17) as f32 * 0.125 - 1.0)
                .collect()
        })
        .collect()
}

pub fn finite_grads(lens: &[usize], salt: usize) -> Vec<Vec<f32>> {
    lens.iter()
        .enumerate()
        .map(|(i, &n)| {
            (0..n)
                .map(|j| ((i * 13 + j * 5 + salt) % 11) as f32 * 0.05 - 0.25)
                .collect()
        })
        .collect()
}

/// A checkpoint of configuration `which` after `steps` updates (one of them skipped).
pub fn sample_checkpoint(which: usize, steps: usize) -> Vec<u8> {
    sample_checkpoint_in(which, steps, false)
}

/// [`sample_checkpoint`] of the grouped variant when `grouped` (format 2).
pub fn sample_checkpoint_in(which: usize, steps: usize, grouped: bool) -> Vec<u8> {
    let (cfg, lens) = &checkpoint_configs()[which];
    sample_checkpoint_of(cfg, lens, which, steps, grouped)
}

/// [`sample_checkpoint_in`] of configuration `cfg` with buffer lengths `lens` (initial
/// parameters of seed `which`).
pub fn sample_checkpoint_of(
    cfg: &Config,
    lens: &[usize],
    which: usize,
    steps: usize,
    grouped: bool,
) -> Vec<u8> {
    let mut params = initial_params(lens, which);
    let mut opt = registered_in(cfg, &params, grouped);
    for s in 0..steps {
        let mut g = finite_grads(lens, s);
        if s == 1 && cfg.nonfinite == NonFinitePolicy::Skip {
            if let Some(x) = g.iter_mut().find(|b| !b.is_empty()) {
                x[0] = f32::NAN;
            }
        }
        let _ = opt.step(&mut refs(&mut params), &crefs(&g));
        if cfg.lr.is_metric_driven() {
            opt.step_schedule_metric(1.0 / (s as f64 + 1.0)).unwrap();
        }
        if cfg.schedule_mode == ScheduleMode::Manual {
            opt.step_schedule();
        }
    }
    opt.save()
}

/// Input: one selector byte (configuration, whether to repair the header and the length / CRC
/// fields so that the fuzzer reaches the inner validation, and whether the loading optimizer
/// has the parameter groups of the grouped variant), then the checkpoint.
/// Checks: no panic; on refusal nothing changed (Rust and C); Rust and C agree on the status and
/// the resulting state; an accepted checkpoint re-saves to one that loads to the same state, and
/// the optimizer then steps (Rust and C bit-identically) with a finite learning rate.
pub fn check_checkpoint_load(data: &[u8]) {
    let mut inp = Input::new(data);
    let sel = inp.u8() as usize;
    let configs = checkpoint_configs();
    let which = sel % configs.len();
    let mut bytes = inp.rest().to_vec();
    match (sel / configs.len()) % 4 {
        1 => fix_length_and_crc(&mut bytes),
        2 => {
            fix_header(&mut bytes);
            fix_length_and_crc(&mut bytes);
        }
        _ => {}
    }
    let grouped = (sel / (4 * configs.len())) % 2 == 1;
    let (cfg, lens) = &configs[which];
    let params = initial_params(lens, 1);
    let mut opt = registered_in(cfg, &params, grouped);
    let before = opt.save();
    let r = opt.load(&bytes);
    if r.is_err() {
        assert_eq!(opt.save(), before, "a refused load changed the optimizer");
    }
    if let Err(e) = &r {
        assert!(
            matches!(
                e,
                Error::Corrupt(_)
                    | Error::Unsupported(_)
                    | Error::LengthMismatch { .. }
                    | Error::InvalidArgument { .. }
            ),
            "unexpected error kind from load: {e:?}"
        );
    }

    // The same through the C ABI.
    let mut c = to_c(cfg).expect("fixed configurations are expressible in C");
    let handle = Handle::new(&mut c);
    let mut cparams = params.clone();
    if grouped {
        handle.register_in_groups(&mut cparams, &group_options(cfg), group_of);
    } else {
        handle.register(&mut cparams);
    }
    let cbefore = handle.save();
    assert_eq!(
        cbefore, before,
        "C and Rust optimizers differ before loading"
    );
    let st = handle.load(&bytes);
    let want = match &r {
        Ok(()) => FLATOPT_OK,
        Err(e) => status_of(e),
    };
    assert_eq!(st, want, "C load status vs Rust {r:?}");
    assert_eq!(handle.save(), opt.save(), "C and Rust state after load");
    if st != FLATOPT_OK {
        assert!(!last_message().is_empty(), "refused load without a message");
    }
    if r.is_err() {
        return;
    }

    // Accepted: the re-saved checkpoint has the same length and loads to the same state.
    let saved = opt.save();
    assert_eq!(saved.len(), bytes.len(), "re-saved checkpoint length");
    let mut other = registered_in(cfg, &initial_params(lens, 2), grouped);
    other.load(&saved).expect("a re-saved checkpoint loads");
    assert_eq!(other.save(), saved, "load(save()) round trip");

    // The learning rate is finite and not negative for these (non-growing) schedules.
    let lr = opt.schedule_state().lr(&cfg.lr);
    assert!(
        lr.is_finite() && lr >= 0.0,
        "learning rate {lr} after loading"
    );
    // It keeps working, identically through Rust and C: an update with finite gradients is
    // applied as the next step (or refused, changing nothing, if the counter is exhausted; it
    // must not wrap), and one with a NaN is counted as skipped (same rule for that counter).
    let mut p = params.clone();
    let loaded_step = opt.step_count();
    let g = finite_grads(lens, 3);
    let digest_before = digest(&opt, &p);
    let out = opt.step(&mut refs(&mut p), &crefs(&g));
    match &out {
        Ok(Outcome::Applied { step, .. }) => assert_eq!(
            Some(*step),
            loaded_step.checked_add(1),
            "step counter after an update from a loaded step count of {loaded_step}"
        ),
        Err(_) => assert_eq!(
            digest(&opt, &p),
            digest_before,
            "refused update changed state"
        ),
        other => panic!("finite update after loading gave {other:?}"),
    }
    let st = handle.step_with(&g);
    assert_eq!(st, out.as_ref().map_or_else(status_of, |_| FLATOPT_OK));
    for (a, b) in p.iter().zip(&cparams) {
        assert_same_modulo_nan(&bits(a), &bits(b), "params after a step, Rust vs C");
    }
    if cfg.nonfinite != NonFinitePolicy::Propagate {
        let mut bad = g.clone();
        if let Some(x) = bad.iter_mut().find(|b| !b.is_empty()) {
            x[0] = f32::NAN;
            let skipped = opt.skipped_count();
            let digest_before = digest(&opt, &p);
            let out = opt.step(&mut refs(&mut p), &crefs(&bad));
            match &out {
                Ok(Outcome::Skipped { .. }) | Err(Error::NonFinite { .. }) => assert_eq!(
                    Some(opt.skipped_count()),
                    skipped.checked_add(1),
                    "skipped counter from {skipped}"
                ),
                Err(_) => assert_eq!(digest(&opt, &p), digest_before),
                other => panic!("NaN update after loading gave {other:?}"),
            }
            let st = handle.step_with(&bad);
            let want = match &out {
                Ok(Outcome::Skipped { .. }) => FLATOPT_SKIPPED,
                Ok(_) => FLATOPT_OK,
                Err(e) => status_of(e),
            };
            assert_eq!(st, want);
        }
    }
    assert_eq!(handle.save(), opt.save(), "C and Rust state after stepping");
    if cfg.lr.is_metric_driven() {
        opt.step_schedule_metric(0.5).unwrap();
        let lr = opt.schedule_state().lr(&cfg.lr);
        assert!(lr.is_finite() && lr >= 0.0, "plateau learning rate {lr}");
    }
}
