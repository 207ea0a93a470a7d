//! Target 3: stepping.

use flatopt::engine::PARALLEL_MIN_ELEMENTS;
use flatopt::kernels::{self, Rule};
use flatopt::{Base, Config, Error, NonFinitePolicy, Optimizer, Outcome, Tier};

use super::common::{assert_same_modulo_nan, bits, crefs, digest, outcome_key, refs, registered};
use super::generate::decode_config;
use super::input::{values, Input};

/// Buffer lengths around the vector widths and the sum-of-squares block.
const LENS: [usize; 16] = [
    0, 1, 2, 3, 7, 8, 9, 15, 16, 17, 33, 64, 4095, 4096, 4097, 8193,
];

/// How one run applies updates.
#[derive(Clone, Copy, Debug)]
enum Mode {
    Update,
    /// begin_step, Step::apply on two ranges of every buffer split at this element, finish.
    Split(usize),
}

struct Run {
    outcomes: Vec<String>,
    digests: Vec<Vec<u32>>,
    saved: Vec<u8>,
}

struct Case {
    cfg: Config,
    params: Vec<Vec<f32>>,
    grads: Vec<Vec<Vec<f32>>>,
}

fn available_tiers() -> Vec<Tier> {
    if cfg!(miri) {
        return vec![Tier::Scalar];
    }
    Tier::ALL.into_iter().filter(|t| t.is_available()).collect()
}

/// One run of every step of `case` on `tier` with `threads`, checking the per-step invariants.
fn run_case(case: &Case, tier: Tier, threads: usize, mode: Mode) -> Run {
    let cfg = case.cfg.clone().tier(tier).threads(threads);
    let ctx = format!("{tier:?}/{threads} threads/{mode:?}");
    let mut params = case.params.clone();
    let mut opt = registered(&cfg, &params);
    let mut run = Run {
        outcomes: Vec::new(),
        digests: Vec::new(),
        saved: Vec::new(),
    };
    for grads in &case.grads {
        let before = digest(&opt, &params);
        let slow_before: Vec<Vec<u32>> = (0..params.len())
            .map(|i| bits(opt.slow_weights(i).unwrap_or_default()))
            .collect();
        let step_before = opt.step_count();
        // The library's own per-step scalars of this step: a learning rate or scalar that is
        // not finite as f32 refuses the step (after the non-finite check), changing nothing.
        let lr = opt.schedule_state().lr(&cfg.lr);
        let refusal =
            flatopt::config::check_step(lr, &Rule::for_step(&cfg.base, step_before + 1, lr)).err();
        let g = crefs(grads);
        let r = match mode {
            Mode::Update => opt.step(&mut refs(&mut params), &g),
            Mode::Split(at) => split_update(&mut opt, &mut params, &g, at),
        };
        let first_bad = g
            .iter()
            .enumerate()
            .find_map(|(b, x)| kernels::first_non_finite(x).map(|(i, v)| (b, i, v)));
        let key = outcome_key(&r);
        match (cfg.nonfinite, first_bad) {
            (NonFinitePolicy::Propagate, _) | (_, None) if refusal.is_some() => {
                let want = Err(refusal.clone().expect("checked"));
                assert_eq!(key, outcome_key(&want), "{ctx}: per-step refusal");
                assert_eq!(
                    digest(&opt, &params),
                    before,
                    "{ctx}: a refused step changed state"
                );
            }
            (NonFinitePolicy::Propagate, _) | (_, None) => {
                let k = cfg.lookahead.map_or(0, |la| la.sync_period);
                let n = step_before + 1;
                let synced = k > 0 && n.is_multiple_of(k);
                assert_eq!(
                    key,
                    outcome_key(&Ok(Outcome::Applied { step: n, synced })),
                    "{ctx}"
                );
                assert_eq!(opt.step_count(), n, "{ctx}");
                assert_eq!(opt.skipped_count(), before[2] as u64, "{ctx}");
                for (i, p) in params.iter().enumerate() {
                    let slow = bits(opt.slow_weights(i).unwrap_or_default());
                    if synced {
                        assert_eq!(slow, bits(p), "{ctx}: p != s after a sync");
                    } else {
                        assert_eq!(slow, slow_before[i], "{ctx}: slow weights moved");
                    }
                }
            }
            (policy, Some((b, i, v))) => {
                let want = if policy == NonFinitePolicy::Skip {
                    Ok(Outcome::Skipped {
                        buffer: b,
                        index: i,
                        value: v,
                    })
                } else {
                    Err(Error::NonFinite {
                        buffer: b,
                        index: i,
                        value: v,
                    })
                };
                assert_eq!(key, outcome_key(&want), "{ctx}: skip report");
                let mut after = digest(&opt, &params);
                assert_eq!(after[2], before[2].wrapping_add(1), "{ctx}: skipped count");
                after[2] = before[2];
                assert_eq!(after, before, "{ctx}: a skipped update changed something");
            }
        }
        run.outcomes.push(key);
        run.digests.push(digest(&opt, &params));
    }
    if case.params.iter().map(Vec::len).sum::<usize>() < PARALLEL_MIN_ELEMENTS {
        // The final state round-trips through a checkpoint.
        run.saved = opt.save();
        let mut other = registered(&cfg, &case.params);
        match other.load(&run.saved) {
            Ok(()) => assert_eq!(other.save(), run.saved, "{ctx}: checkpoint round trip"),
            // Non-finite parameters (or, with the propagate policy, gradients) put NaN or Inf
            // into the state; outside the propagate policy loading refuses such state.
            Err(Error::Corrupt(msg)) => assert!(
                cfg.nonfinite != NonFinitePolicy::Propagate
                    && msg.contains("must be finite")
                    && state_is_not_finite(&opt),
                "{ctx}: own checkpoint refused: {msg}"
            ),
            Err(e) => panic!("{ctx}: own checkpoint refused: {e}"),
        }
    }
    run
}

/// Whether a first moment or slow weight of `opt` is NaN or infinite.
fn state_is_not_finite(opt: &Optimizer) -> bool {
    (0..opt.buffer_lens().len()).any(|i| {
        let (m, _, _) = opt.moments(i).unwrap_or_default();
        let slow = opt.slow_weights(i).unwrap_or_default();
        m.iter().chain(slow).any(|x| !x.is_finite())
    })
}

/// One update through begin_step / Step::apply on two ranges per buffer / end_step.
fn split_update(
    opt: &mut Optimizer,
    params: &mut [Vec<f32>],
    grads: &[&[f32]],
    at: usize,
) -> Result<Outcome, Error> {
    let step = match opt.begin_step(grads)? {
        Err(skipped) => return Ok(skipped),
        Ok(step) => step,
    };
    for ((p, g), st) in params.iter_mut().zip(grads).zip(opt.states_mut()) {
        let mid = at.min(p.len());
        let (p0, p1) = p.split_at_mut(mid);
        let (g0, g1) = g.split_at(mid);
        let (s0, s1) = st.split_at(mid);
        step.apply(p1, g1, s1)?;
        step.apply(p0, g0, s0)?;
    }
    let synced = step.syncs();
    let number = step.number();
    opt.end_step(step)?;
    Ok(Outcome::Applied {
        step: number,
        synced,
    })
}

/// The rules whose update needs each whole buffer's norms (the split step refuses them).
fn per_buffer_norms(base: &Base) -> bool {
    matches!(
        base,
        Base::Lamb { .. } | Base::Lars { .. } | Base::Novograd { .. }
    )
}

/// Input: a configuration (usually valid), buffer lengths, step count, then a pool of bytes
/// from which parameters and gradients are drawn. Checks: per-step invariants of every run (the
/// outcome and skip report, a skipped update changes nothing but the counter, syncs set
/// `p = s`), and every tier, thread count and split gives the scalar single-thread results
/// (bits, NaN positions).
pub fn check_step(data: &[u8]) {
    let mut inp = Input::new(data);
    let cfg = decode_config(&mut inp, true);
    if cfg.validate().is_err() {
        return;
    }
    let shape = inp.u8();
    let nbuf = 1 + (shape % 3) as usize;
    let big = shape == 0xB7 && !cfg!(miri);
    let mut lens: Vec<usize> = (0..nbuf)
        .map(|_| {
            let b = inp.u8();
            if b & 0x80 != 0 {
                LENS[(b & 0x7f) as usize % LENS.len()]
            } else {
                b as usize
            }
        })
        .collect();
    if big {
        lens[0] = PARALLEL_MIN_ELEMENTS + 17;
    }
    if cfg!(miri) {
        // Miri is about a million times slower: short buffers, few steps.
        lens.iter_mut().for_each(|n| *n = (*n).min(40));
    }
    let total: usize = lens.iter().sum();
    let steps = 1 + (inp.u8() % if total > 4000 || cfg!(miri) { 2 } else { 5 }) as usize;
    let at = inp.u8() as usize * 3;
    let pool = inp.rest();
    let case = Case {
        params: lens
            .iter()
            .enumerate()
            .map(|(b, &n)| values(pool, b * 7919, n))
            .collect(),
        grads: (0..steps)
            .map(|s| {
                lens.iter()
                    .enumerate()
                    .map(|(b, &n)| values(pool, (s + 1) * 104_729 + b * 7919 + 1, n))
                    .collect()
            })
            .collect(),
        cfg,
    };
    let tiers = available_tiers();
    let best = *tiers.last().expect("the scalar tier at least");
    // Every tier against scalar, one thread and two, and the split update at two points. With
    // big buffers (where the pool is used), the best tier on one thread against two only
    // (tiers are compared on the small cases; scalar on 512K elements is slow).
    let (reference_tier, mut variants) = if big {
        (best, vec![(best, 2, Mode::Update)])
    } else {
        let mut v: Vec<(Tier, usize, Mode)> = tiers
            .iter()
            .filter(|&&t| t != Tier::Scalar)
            .map(|&t| (t, 1, Mode::Update))
            .collect();
        if !cfg!(miri) {
            v.push((best, 2, Mode::Update));
        }
        v.push((Tier::Scalar, 1, Mode::Split(at)));
        (Tier::Scalar, v)
    };
    if !big || at.is_multiple_of(2) {
        variants.push((best, 1, Mode::Split(at / 2 + 1)));
    }
    if per_buffer_norms(&case.cfg.base) {
        // The split step is refused for these rules (each buffer's norms come first): refused,
        // changing nothing; the whole update is compared across tiers and threads.
        variants.retain(|&(_, _, mode)| matches!(mode, Mode::Update));
        let mut params = case.params.clone();
        let mut opt = registered(&case.cfg, &params);
        let before = digest(&opt, &params);
        let g = case.grads.first().map(|g| crefs(g)).unwrap_or_default();
        let r = split_update(&mut opt, &mut params, &g, at);
        assert!(
            matches!(&r, Err(Error::InvalidArgument { name, .. }) if *name == "begin_step"),
            "split step of {}: {r:?}",
            case.cfg.base.name()
        );
        assert_eq!(
            digest(&opt, &params),
            before,
            "a refused split step changed state"
        );
    }
    let reference = run_case(&case, reference_tier, 1, Mode::Update);
    for (tier, threads, mode) in variants {
        let got = run_case(&case, tier, threads, mode);
        let ctx = format!("{tier:?}/{threads} threads/{mode:?} vs {reference_tier:?}");
        assert_eq!(got.outcomes, reference.outcomes, "{ctx}: outcomes");
        for (s, (a, b)) in got.digests.iter().zip(&reference.digests).enumerate() {
            assert_same_modulo_nan(a, b, &format!("{ctx}: after step {s}"));
        }
    }
}
