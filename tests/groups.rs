//! Parameter groups through the Rust API.
//!
//! The oracle: an optimizer whose buffers are in several groups steps each group exactly as a
//! separate optimizer configured with that group's hyperparameters would, given the global sum
//! of squares (clipping and the non-finite check are global) and the group's learning rate of
//! each step (`lr * schedule(t) / base_lr`, computed here in f64 from the schedule alone and
//! set on the reference through its group 0, which then uses it exactly). Bit for bit, for
//! every base row, on every tier and thread count, through `step`, the split step and the
//! sharded step; checkpoints of format 2 resume bit-identically and format 1 still loads.

mod common;

use common::{bases, bits, Rng};
use flatopt::catalog::Value;
use flatopt::engine::GroupOptions;
use flatopt::{Base, Config, Error, NonFinitePolicy, Optimizer, Outcome, Schedule, Tier};

/// Buffer lengths and their groups: group 0 (the optimizer's), 1 and 2, interleaved.
const LENS: [usize; 6] = [37, 5000, 1, 300, 4100, 64];
const GROUP_OF: [usize; 6] = [0, 1, 2, 1, 0, 2];

/// The hyperparameters of groups 1 and 2 for a base row: another learning rate, another weight
/// decay (0 on one: decay off), and other base hyperparameters of the same rule.
fn group_options(base: &Base, lr: f64) -> [GroupOptions; 2] {
    let other = match *base {
        Base::Sgd {
            momentum,
            dampening,
            nesterov,
        } if momentum > 0.0 => Base::Sgd {
            momentum: momentum * 0.5,
            dampening,
            nesterov,
        },
        Base::Adam {
            b1, b2, amsgrad, ..
        } => Base::Adam {
            b1: b1 * 0.9,
            b2: b2 * 0.99,
            eps: 1e-6,
            amsgrad,
        },
        Base::AdamW { b1, b2, .. } => Base::AdamW {
            b1: b1 * 0.9,
            b2,
            eps: 1e-7,
            weight_decay: 0.05,
        },
        Base::RAdam { b1, b2, eps } => Base::RAdam {
            b1: b1 * 0.8,
            b2,
            eps,
        },
        Base::Adagrad {
            lr_decay,
            initial_accumulator_value,
            eps_inside_sqrt,
            ..
        } => Base::Adagrad {
            lr_decay,
            initial_accumulator_value,
            eps: 1e-5,
            eps_inside_sqrt,
        },
        Base::RmsProp {
            eps,
            momentum,
            centered,
            eps_inside_sqrt,
            initial_scale,
            ..
        } => Base::RmsProp {
            alpha: 0.95,
            eps,
            momentum,
            centered,
            eps_inside_sqrt,
            initial_scale,
        },
        ref b => *b,
    };
    [
        GroupOptions {
            lr: Some(lr * 3.0),
            weight_decay: Some(0.0),
            base: Some(other),
        },
        GroupOptions {
            lr: Some(lr * 0.25),
            weight_decay: Some(0.02),
            base: None,
        },
    ]
}

/// The pipelines the groups run under: global clipping, Lookahead, schedules.
type Pipeline = (&'static str, fn(Config) -> Config);

fn pipelines() -> Vec<Pipeline> {
    vec![
        ("plain", |c| c),
        ("clip_norm_lookahead_wd", |c| {
            c.clip_norm(2.0).lookahead(3, 0.5).weight_decay(0.01)
        }),
        ("exponential", |c| {
            let lr = c.lr.base_lr();
            Config {
                lr: Schedule::Exponential {
                    base: lr,
                    gamma: 0.8,
                },
                ..c
            }
        }),
        ("one_cycle_clip_value", |c| {
            let lr = c.lr.base_lr();
            Config {
                lr: Schedule::one_cycle(lr, 10),
                ..c
            }
            .clip_value(0.1)
        }),
        ("warmup_cosine", |c| {
            let lr = c.lr.base_lr();
            Config {
                lr: Schedule::warmup_cosine(lr, 3, 9, 0.0, lr * 0.01),
                ..c
            }
        }),
    ]
}

fn rows() -> Vec<(String, Config, [GroupOptions; 2])> {
    let mut out = Vec::new();
    for (bname, base, lr) in bases() {
        for (pname, f) in pipelines() {
            let cfg = f(Config::new(base, lr));
            out.push((format!("{bname}/{pname}"), cfg, group_options(&base, lr)));
        }
    }
    out
}

fn grouped(cfg: &Config, opts: &[GroupOptions; 2], params: &[Vec<f32>]) -> Optimizer {
    let mut o = Optimizer::new(cfg.clone()).unwrap();
    for g in opts {
        o.add_group(g.clone()).unwrap();
    }
    let refs: Vec<&[f32]> = params.iter().map(Vec::as_slice).collect();
    o.register_in_groups(&refs, &GROUP_OF).unwrap();
    o
}

/// The configuration of a separate optimizer that runs group `g` alone: the group's base rule
/// and coupled weight decay, a fixed learning rate of 1 (each step's rate is set on its group 0).
fn reference_config(cfg: &Config, opt: &Optimizer, g: usize) -> Config {
    let group = &opt.groups()[g];
    Config {
        base: *group.base(),
        lr: Schedule::Fixed { lr: 1.0 },
        weight_decay: group.coupled_weight_decay(),
        schedule_mode: flatopt::ScheduleMode::PerUpdate,
        ..cfg.clone()
    }
}

/// The learning rate of group `g` at the schedule's state `sched`, from the documented
/// formula (docs/numerics.md, "Parameter groups").
fn group_lr(cfg: &Config, own: Option<f64>, sched: &flatopt::ScheduleState) -> f64 {
    let s = sched.lr(&cfg.lr);
    let base = cfg.lr.base_lr();
    match own {
        Some(x) if x != base => x * (s / base),
        _ => s,
    }
}

fn split_by_group<T: Clone>(xs: &[T], g: usize) -> Vec<T> {
    xs.iter()
        .zip(GROUP_OF)
        .filter(|(_, k)| *k == g)
        .map(|(x, _)| x.clone())
        .collect()
}

fn grads(rng: &mut Rng, t: usize) -> Vec<Vec<f32>> {
    let mut g: Vec<Vec<f32>> = LENS.iter().map(|&n| rng.vec(n, 0.5)).collect();
    if t == 5 {
        g[3][7] = f32::NAN; // a skipped step for every group alike
    }
    g
}

fn refs_mut(p: &mut [Vec<f32>]) -> Vec<&mut [f32]> {
    p.iter_mut().map(Vec::as_mut_slice).collect()
}
fn refs(p: &[Vec<f32>]) -> Vec<&[f32]> {
    p.iter().map(Vec::as_slice).collect()
}

/// How the grouped optimizer is stepped.
#[derive(Clone, Copy, Debug)]
enum Drive {
    Step,
    /// `begin_step`, then `Step::apply` on each buffer split in two ranges, then `end_step`.
    Split,
}

fn step_grouped(o: &mut Optimizer, p: &mut [Vec<f32>], g: &[Vec<f32>], drive: Drive) -> Outcome {
    match drive {
        Drive::Step => o.step(&mut refs_mut(p), &refs(g)).unwrap(),
        Drive::Split => match o.begin_step(&refs(g)).unwrap() {
            Err(skipped) => skipped,
            Ok(step) => {
                for ((st, p), g) in o.states_mut().zip(p.iter_mut()).zip(g) {
                    let mid = p.len() / 3;
                    let (s0, s1) = st.split_at(mid);
                    let (p0, p1) = p.split_at_mut(mid);
                    step.apply(p1, &g[mid..], s1).unwrap();
                    step.apply(p0, &g[..mid], s0).unwrap();
                }
                o.end_step(step).unwrap();
                Outcome::Applied {
                    step: step.number(),
                    synced: step.syncs(),
                }
            }
        },
    }
}

/// Runs a row: the grouped optimizer against one reference optimizer per group.
fn run_row(name: &str, cfg: &Config, opts: &[GroupOptions; 2], drive: Drive) {
    let mut rng = Rng(0x6209);
    let mut params: Vec<Vec<f32>> = LENS.iter().map(|&n| rng.vec(n, 1.0)).collect();
    let mut opt = grouped(cfg, opts, &params);
    let mut refp: Vec<Vec<Vec<f32>>> = (0..3).map(|g| split_by_group(&params, g)).collect();
    let mut refs_opt: Vec<Optimizer> = (0..3)
        .map(|g| {
            let mut o = Optimizer::new(reference_config(cfg, &opt, g)).unwrap();
            o.register(&refs(&refp[g])).unwrap();
            o
        })
        .collect();
    let mut sched = flatopt::ScheduleState::new(&cfg.lr);
    for t in 0..9 {
        let g = grads(&mut rng, t);
        let sum: f64 = g
            .iter()
            .flat_map(|b| b.chunks(flatopt::kernels::SUMSQ_BLOCK))
            .map(|c| flatopt::kernels::sum_squares(Tier::Scalar, c))
            .sum();
        for (k, r) in refs_opt.iter_mut().enumerate() {
            let lr = group_lr(cfg, opt.groups()[k].lr(), &sched);
            r.set_group_lr(0, Some(lr)).unwrap();
            let gk = split_by_group(&g, k);
            r.step_with_sum_squares(&mut refs_mut(&mut refp[k]), &refs(&gk), sum)
                .unwrap();
        }
        for k in 0..3 {
            let want = group_lr(cfg, opt.groups()[k].lr(), &sched) as f32;
            assert_eq!(
                opt.group_current_lr(k),
                Some(want),
                "{name} t {t} group {k}"
            );
        }
        let out = step_grouped(&mut opt, &mut params, &g, drive);
        if matches!(out, Outcome::Applied { .. }) {
            sched.advance(&cfg.lr);
        }
        for (k, want) in refp.iter().enumerate() {
            let got = split_by_group(&params, k);
            for (b, (x, y)) in got.iter().zip(want).enumerate() {
                assert_eq!(
                    bits(x),
                    bits(y),
                    "{name} ({drive:?}): step {t}, group {k}, buffer {b} of the group"
                );
            }
        }
    }
}

#[test]
fn groups_step_as_separate_optimizers() {
    let rows = rows();
    for (name, cfg, opts) in &rows {
        run_row(name, cfg, opts, Drive::Step);
    }
    println!("{} rows", rows.len());
}

#[test]
fn split_step_applies_each_buffer_with_its_groups_plan() {
    for (name, cfg, opts) in rows() {
        run_row(&name, &cfg, &opts, Drive::Split);
    }
}

/// Every tier and thread count gives the same bits with groups (buffers above the parallel
/// threshold so that the pool runs).
#[test]
fn groups_are_tier_and_thread_invariant() {
    let lens = [300_000usize, 5, 280_001];
    let groups = [1usize, 0, 2];
    let cfg = Config::new(Base::adam(), 1e-2)
        .clip_norm(1.0)
        .weight_decay(0.01);
    let [o1, o2] = group_options(&cfg.base, 1e-2);
    let mut results: Vec<(String, Vec<Vec<u32>>)> = Vec::new();
    for tier in Tier::ALL.into_iter().filter(|t| t.is_available()) {
        for threads in [1, 2, 3] {
            let mut rng = Rng(11);
            let mut p: Vec<Vec<f32>> = lens.iter().map(|&n| rng.vec(n, 1.0)).collect();
            let mut o = Optimizer::new(cfg.clone().tier(tier).threads(threads)).unwrap();
            o.add_group(o1.clone()).unwrap();
            o.add_group(o2.clone()).unwrap();
            o.register_in_groups(&refs(&p), &groups).unwrap();
            for _ in 0..4 {
                let g: Vec<Vec<f32>> = lens.iter().map(|&n| rng.vec(n, 0.1)).collect();
                o.step(&mut refs_mut(&mut p), &refs(&g)).unwrap();
            }
            results.push((
                format!("{tier:?}/{threads}"),
                p.iter().map(|b| bits(b)).collect(),
            ));
        }
    }
    for (label, r) in &results[1..] {
        assert!(*r == results[0].1, "{label} differs from {}", results[0].0);
    }
}

/// Shards holding buffers of different groups, stepped with the exchanged sum of squares, match
/// one optimizer over all buffers.
#[test]
fn sharded_groups_match_one_process() {
    for (name, cfg, opts) in rows().into_iter().step_by(3) {
        let mut rng = Rng(77);
        let mut whole_p: Vec<Vec<f32>> = LENS.iter().map(|&n| rng.vec(n, 1.0)).collect();
        let mut whole = grouped(&cfg, &opts, &whole_p);
        // Shard A holds buffers 0..3, shard B 3..6, each with all three groups declared.
        let cut = 3;
        let mut shard_p = whole_p.clone();
        let mut shards: Vec<Optimizer> = [0..cut, cut..LENS.len()]
            .into_iter()
            .map(|r| {
                let mut o = Optimizer::new(cfg.clone()).unwrap();
                for g in &opts {
                    o.add_group(g.clone()).unwrap();
                }
                o.register_in_groups(&refs(&shard_p[r.clone()]), &GROUP_OF[r])
                    .unwrap();
                o
            })
            .collect();
        for t in 0..7 {
            let g = grads(&mut rng, t);
            let want = whole.step(&mut refs_mut(&mut whole_p), &refs(&g)).unwrap();
            let mut sum = 0.0;
            for (o, r) in shards.iter().zip([0..cut, cut..LENS.len()]) {
                let mut part = vec![0.0; o.sum_squares_block_count()];
                o.sum_squares_partials(&refs(&g[r]), &mut part).unwrap();
                sum = part.iter().fold(sum, |acc, x| acc + x);
            }
            let (a, b) = shard_p.split_at_mut(cut);
            for (o, (p, gs)) in shards.iter_mut().zip([(a, &g[..cut]), (b, &g[cut..])]) {
                let got = o
                    .step_with_sum_squares(&mut refs_mut(p), &refs(gs), sum)
                    .unwrap();
                assert_eq!(
                    std::mem::discriminant(&got),
                    std::mem::discriminant(&want),
                    "{name} t {t}"
                );
            }
            for (b, (x, y)) in whole_p.iter().zip(&shard_p).enumerate() {
                assert_eq!(bits(x), bits(y), "{name}: step {t}, buffer {b}");
            }
        }
    }
}

/// A group's learning rate and weight decay changed between steps apply from the next step,
/// exactly as a group created with those values would step from there.
#[test]
fn changing_a_groups_lr_and_decay_takes_effect_at_the_next_step() {
    for (bname, base, lr) in bases() {
        let cfg = Config::new(base, lr).weight_decay(0.01);
        let mut rng = Rng(3);
        let mut p: Vec<Vec<f32>> = LENS.iter().map(|&n| rng.vec(n, 1.0)).collect();
        let [o1, o2] = group_options(&cfg.base, lr);
        let mut a = grouped(&cfg, &[o1.clone(), o2.clone()], &p);
        let mut q = p.clone();
        let mut b = grouped(&cfg, &[o1.clone(), o2.clone()], &q);
        for t in 0..6 {
            if t == 3 {
                // `a` changes at step 3 ...
                a.set_group_lr(1, Some(lr * 0.5)).unwrap();
                a.set_group_weight_decay(2, 0.0).unwrap();
                a.set_group_lr(0, Some(lr * 2.0)).unwrap();
                // (the base rule's values too: each float field moved a little, in its domain)
                let old = *a.groups()[1].base();
                a.set_group_base(1, nudged(&old)).unwrap();
                // ... `b` gets the same values through a checkpoint of `a`'s groups.
                b.load(&a.save()).unwrap();
                assert_eq!(b.groups(), a.groups(), "{bname}: live values restored");
                assert_eq!(b.group_current_lr(1), Some((lr * 0.5) as f32));
            }
            let g = grads(&mut rng, t);
            a.step(&mut refs_mut(&mut p), &refs(&g)).unwrap();
            b.step(&mut refs_mut(&mut q), &refs(&g)).unwrap();
            assert_eq!(
                p.iter().map(|x| bits(x)).collect::<Vec<_>>(),
                q.iter().map(|x| bits(x)).collect::<Vec<_>>(),
                "{bname} step {t}"
            );
        }
        assert_eq!(a.groups()[2].weight_decay(), 0.0);
        assert_eq!(a.groups()[1].lr(), Some(lr * 0.5));
    }
}

/// `base` with each float hyperparameter moved a little inside its domain (state unchanged).
fn nudged(base: &Base) -> Base {
    let spec = base.spec();
    let values = base.values();
    Base::try_from_fields(base.kind(), |i| {
        Ok::<_, ()>(match (spec.fields[i].key, &values[i]) {
            ("max_step_size" | "eta_plus", Value::F64(x)) => Value::F64(x * 1.25),
            (_, Value::F64(x)) if *x > 0.0 => Value::F64(x * 0.75),
            (_, v) => v.clone(),
        })
    })
    .unwrap()
    .unwrap()
}

/// An optimizer with one group, unchanged, behaves and saves as before groups existed
/// (format 1); setting group 0's values writes format 2.
#[test]
fn one_unchanged_group_saves_format_1() {
    let cfg = Config::new(Base::adam(), 1e-3);
    let p = vec![1.0f32; 10];
    let mut o = Optimizer::new(cfg).unwrap();
    o.register(&[&p]).unwrap();
    assert_eq!(o.save()[8..12], 1u32.to_le_bytes());
    o.set_group_lr(0, Some(2e-3)).unwrap();
    assert_eq!(o.save()[8..12], 2u32.to_le_bytes());
    assert_eq!(o.checkpoint_size(), o.save().len());
    o.set_group_lr(0, None).unwrap();
    assert_eq!(o.save()[8..12], 1u32.to_le_bytes());
}

/// Checkpoints of groups resume bit-identically, and are refused by an optimizer with other
/// groups, naming the difference, changing nothing.
#[test]
fn format_2_checkpoints_resume_and_refuse_other_groups() {
    for (name, cfg, opts) in rows().into_iter().step_by(4) {
        let mut rng = Rng(9);
        let mut p: Vec<Vec<f32>> = LENS.iter().map(|&n| rng.vec(n, 1.0)).collect();
        let mut a = grouped(&cfg, &opts, &p);
        for t in 0..4 {
            let g = grads(&mut rng, t);
            a.step(&mut refs_mut(&mut p), &refs(&g)).unwrap();
        }
        let saved = a.save();
        assert_eq!(saved[8..12], 2u32.to_le_bytes());
        assert_eq!(saved.len(), a.checkpoint_size());
        let mut q = p.clone();
        let mut b = grouped(&cfg, &opts, &q);
        b.load(&saved).unwrap();
        let dir = std::env::temp_dir().join(format!("flatopt-groups-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("ck");
        a.save_file(&file).unwrap();
        let mut c = grouped(&cfg, &opts, &q);
        c.set_group_lr(1, Some(1e-9)).unwrap(); // replaced by the checkpoint's
        c.load_file(&file).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(c.groups(), a.groups());
        let mut r = q.clone();
        for t in 4..8 {
            let g = grads(&mut rng, t);
            a.step(&mut refs_mut(&mut p), &refs(&g)).unwrap();
            b.step(&mut refs_mut(&mut q), &refs(&g)).unwrap();
            c.step(&mut refs_mut(&mut r), &refs(&g)).unwrap();
            assert_eq!(p, q, "{name} t {t}");
            assert_eq!(
                p.iter().map(|x| bits(x)).collect::<Vec<_>>(),
                r.iter().map(|x| bits(x)).collect::<Vec<_>>(),
                "{name} t {t} (file)"
            );
        }

        // Other groups: fewer, another buffer map.
        let mut fewer = Optimizer::new(cfg.clone()).unwrap();
        fewer.add_group(opts[0].clone()).unwrap();
        fewer
            .register_in_groups(&refs(&p), &[0, 1, 1, 1, 0, 0])
            .unwrap();
        let mut moved = Optimizer::new(cfg.clone()).unwrap();
        for g in &opts {
            moved.add_group(g.clone()).unwrap();
        }
        moved
            .register_in_groups(&refs(&p), &[0, 1, 2, 1, 0, 1])
            .unwrap();
        for (what, o, needle) in [
            ("fewer groups", &mut fewer, "parameter groups"),
            (
                "another buffer map",
                &mut moved,
                "buffer 5 is in parameter group 2",
            ),
        ] {
            let before = o.save();
            let err = o.load(&saved).unwrap_err();
            assert!(err.to_string().contains(needle), "{name} {what}: {err}");
            assert_eq!(o.save(), before, "{name} {what}: a refused load changed it");
        }
    }
}

/// Refused group operations name the value and change nothing.
#[test]
fn bad_group_arguments_are_refused() {
    type Row = (
        &'static str,
        fn(&mut Optimizer) -> Result<(), Error>,
        &'static str,
    );
    let rows: Vec<Row> = vec![
        (
            "base of another kind",
            |o| {
                o.add_group(GroupOptions {
                    base: Some(Base::sgd()),
                    ..Default::default()
                })
                .map(drop)
            },
            "must be of the optimizer's kind",
        ),
        (
            "invalid base value",
            |o| {
                o.add_group(GroupOptions {
                    base: Some(Base::Adam {
                        b1: 1.5,
                        b2: 0.999,
                        eps: 1e-8,
                        amsgrad: false,
                    }),
                    ..Default::default()
                })
                .map(drop)
            },
            "b1",
        ),
        (
            "negative lr",
            |o| {
                o.add_group(GroupOptions {
                    lr: Some(-1.0),
                    ..Default::default()
                })
                .map(drop)
            },
            "invalid lr = -1",
        ),
        (
            "lr past f32",
            |o| o.set_group_lr(1, Some(1e39)),
            "invalid lr = 1e39",
        ),
        (
            "NaN weight decay",
            |o| o.set_group_weight_decay(0, f64::NAN),
            "invalid weight_decay = NaN",
        ),
        (
            "unknown group (lr)",
            |o| o.set_group_lr(2, Some(0.1)),
            "invalid group = 2",
        ),
        (
            "unknown group (weight decay)",
            |o| o.set_group_weight_decay(usize::MAX, 0.1),
            "invalid group",
        ),
        (
            "set_group_base: another kind",
            |o| o.set_group_base(1, Base::sgd()),
            "must be of the optimizer's kind",
        ),
        (
            "set_group_base: invalid value",
            |o| {
                o.set_group_base(
                    0,
                    Base::Adam {
                        b1: 0.9,
                        b2: 1.0,
                        eps: 1e-8,
                        amsgrad: false,
                    },
                )
            },
            "b2",
        ),
        (
            "set_group_base: AMSGrad turned on (another state buffer)",
            |o| {
                o.set_group_base(
                    1,
                    Base::Adam {
                        b1: 0.9,
                        b2: 0.999,
                        eps: 1e-8,
                        amsgrad: true,
                    },
                )
            },
            "state buffers",
        ),
        (
            "set_group_base: unknown group",
            |o| o.set_group_base(2, Base::adam()),
            "invalid group = 2",
        ),
        (
            "unknown group (add_buffer_to_group)",
            |o| o.add_buffer_to_group(&[1.0], 7),
            "invalid group = 7",
        ),
        (
            "unknown group (register_in_groups)",
            |o| o.register_in_groups(&[&[1.0]], &[3]),
            "invalid group = 3",
        ),
        (
            "groups list of another length",
            |o| o.register_in_groups(&[&[1.0]], &[0, 1]),
            "groups (one per buffer)",
        ),
    ];
    for (what, f, needle) in rows {
        let mut o = Optimizer::new(Config::new(Base::adam(), 1e-3)).unwrap();
        o.add_group(GroupOptions::default()).unwrap();
        let p = vec![1.0f32; 4];
        o.register_in_groups(&[&p, &p], &[0, 1]).unwrap();
        let before = (o.save(), o.groups().to_vec(), o.buffer_groups().to_vec());
        let err = f(&mut o).expect_err(what);
        assert!(err.to_string().contains(needle), "{what}: {err}");
        let after = (o.save(), o.groups().to_vec(), o.buffer_groups().to_vec());
        assert!(before == after, "{what}: changed the optimizer");
    }
}

/// A group's own learning rate needs a base learning rate to scale by; a rate equal to the
/// base one follows the schedule exactly.
#[test]
fn group_lr_needs_a_base_lr() {
    let mut o = Optimizer::new(Config::new(Base::sgd(), 0.0)).unwrap();
    let err = o
        .add_group(GroupOptions {
            lr: Some(0.1),
            ..Default::default()
        })
        .unwrap_err();
    assert!(err.to_string().contains("base learning rate > 0"), "{err}");
    assert!(o
        .add_group(GroupOptions {
            lr: Some(0.0),
            ..Default::default()
        })
        .is_ok());
    let cfg = Config::with_schedule(Base::sgd(), Schedule::exponential(0.1, 0.7));
    let mut o = Optimizer::new(cfg).unwrap();
    let g = o
        .add_group(GroupOptions {
            lr: Some(0.1),
            ..Default::default()
        })
        .unwrap();
    let p = vec![1.0f32; 3];
    o.register_in_groups(&[&p], &[g]).unwrap();
    for _ in 0..5 {
        let mut q = p.clone();
        o.step(&mut [&mut q], &[&p]).unwrap();
        assert_eq!(o.group_current_lr(g), Some(o.current_lr()));
    }
}

/// With the skip policy a non-finite gradient in one group skips every group; a split step
/// partly applied refuses changes to the groups.
#[test]
fn skip_is_global_and_partly_applied_steps_refuse_changes() {
    let cfg = Config::new(Base::adam(), 1e-2).nonfinite(NonFinitePolicy::Skip);
    let mut rng = Rng(1);
    let mut p: Vec<Vec<f32>> = LENS.iter().map(|&n| rng.vec(n, 1.0)).collect();
    let [o1, o2] = group_options(&cfg.base, 1e-2);
    let mut o = grouped(&cfg, &[o1, o2], &p);
    let mut g = grads(&mut rng, 0);
    g[2][0] = f32::INFINITY;
    let before = p.clone();
    let out = o.step(&mut refs_mut(&mut p), &refs(&g)).unwrap();
    assert!(matches!(out, Outcome::Skipped { buffer: 2, .. }), "{out:?}");
    assert_eq!(p, before);
    g[2][0] = 0.0;
    let step = o.begin_step(&refs(&g)).unwrap().unwrap();
    {
        let st = o.states_mut().next().unwrap();
        step.apply(&mut p[0], &g[0], st).unwrap();
    }
    for (what, r) in [
        ("lr", o.set_group_lr(1, Some(0.1))),
        ("weight decay", o.set_group_weight_decay(1, 0.1)),
        ("base", o.set_group_base(1, Base::adam())),
        ("add_group", o.add_group(GroupOptions::default()).map(drop)),
    ] {
        let err = r.expect_err(what);
        assert!(err.to_string().contains("partly applied"), "{what}: {err}");
    }
}
