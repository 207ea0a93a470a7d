//! Checkpoints: a resumed run continues bit-identically for every configuration of the table,
//! and every damaged or incompatible checkpoint is refused with the optimizer left unchanged.

mod common;

use common::{bits, table, Rng};
use flatopt::{Config, Error, Optimizer};

const SIZES: [usize; 3] = [37, 1, 300];

fn fresh(cfg: &Config, params: &[Vec<f32>]) -> Optimizer {
    let mut opt = Optimizer::new(cfg.clone()).unwrap();
    let views: Vec<&[f32]> = params.iter().map(|p| p.as_slice()).collect();
    opt.register(&views).unwrap();
    opt
}

fn step(opt: &mut Optimizer, params: &mut [Vec<f32>], grads: &[Vec<f32>]) {
    let mut ps: Vec<&mut [f32]> = params.iter_mut().map(|p| p.as_mut_slice()).collect();
    let gs: Vec<&[f32]> = grads.iter().map(|g| g.as_slice()).collect();
    opt.step(&mut ps, &gs).unwrap();
}

fn grads_for(rng: &mut Rng, t: usize) -> Vec<Vec<f32>> {
    let mut g: Vec<Vec<f32>> = SIZES.iter().map(|&n| rng.vec(n, 0.5)).collect();
    if t == 7 {
        g[2][5] = f32::NAN; // one skipped update inside the run
    }
    g
}

/// Everything observable about an optimizer: counters, lr, state and slow weights, as bits.
fn fingerprint(opt: &Optimizer) -> Vec<u64> {
    let mut out = vec![
        opt.step_count(),
        opt.skipped_count(),
        opt.current_lr().to_bits() as u64,
    ];
    for i in 0..opt.buffer_lens().len() {
        let (m, v, x) = opt.moments(i).unwrap();
        for a in [m, v, x, opt.slow_weights(i).unwrap_or_default()] {
            out.extend(bits(a).into_iter().map(u64::from));
        }
    }
    out
}

#[test]
fn resumed_runs_continue_bit_identically_for_every_row() {
    let mut rows = 0;
    for (name, cfg) in table() {
        let mut rng = Rng(11);
        let init: Vec<Vec<f32>> = SIZES.iter().map(|&n| rng.vec(n, 1.0)).collect();
        let all_grads: Vec<Vec<Vec<f32>>> = (0..50).map(|t| grads_for(&mut rng, t)).collect();

        let mut straight = init.clone();
        let mut a = fresh(&cfg, &straight);
        for g in &all_grads {
            step(&mut a, &mut straight, g);
        }

        let mut resumed = init.clone();
        let mut b = fresh(&cfg, &resumed);
        for g in &all_grads[..20] {
            step(&mut b, &mut resumed, g);
        }
        let saved = b.save();
        assert_eq!(saved.len(), b.checkpoint_size(), "{name}: checkpoint_size");
        drop(b);
        // A fresh optimizer, registered with other values (they are overwritten by the load),
        // and with another thread count: threads do not change results.
        let mut c = fresh(&cfg.clone().threads(2), &init);
        c.load(&saved).unwrap();
        for g in &all_grads[20..] {
            step(&mut c, &mut resumed, g);
        }
        for (x, y) in straight.iter().zip(&resumed) {
            assert_eq!(bits(x), bits(y), "{name}: params after resume");
        }
        assert_eq!(
            fingerprint(&a),
            fingerprint(&c),
            "{name}: state after resume"
        );
        rows += 1;
    }
    assert_eq!(rows, table().len());
}

fn trained() -> (Config, Vec<Vec<f32>>, Optimizer) {
    let cfg = Config::new(
        flatopt::Base::Adam {
            b1: 0.9,
            b2: 0.99,
            eps: 1e-8,
            amsgrad: true,
        },
        1e-2,
    )
    .lookahead(3, 0.5)
    .clip_norm(1.0);
    let mut rng = Rng(5);
    let mut params: Vec<Vec<f32>> = SIZES.iter().map(|&n| rng.vec(n, 1.0)).collect();
    let mut opt = fresh(&cfg, &params);
    for t in 0..10 {
        let g = grads_for(&mut rng, t);
        step(&mut opt, &mut params, &g);
    }
    (cfg, params, opt)
}

#[test]
fn every_damaged_byte_is_refused_and_changes_nothing() {
    let (_, _, mut opt) = trained();
    let good = opt.save();
    let before = fingerprint(&opt);
    let mut refused = 0;
    // Flip one bit in every byte position (the CRC catches every single-bit error).
    for i in 0..good.len() {
        let mut bad = good.clone();
        bad[i] ^= 1 << (i % 8);
        let err = opt
            .load(&bad)
            .expect_err("a damaged checkpoint must be refused");
        assert!(
            matches!(err, Error::Corrupt(_) | Error::Unsupported(_)),
            "byte {i}: {err}"
        );
        refused += 1;
    }
    // Every truncation.
    for len in 0..good.len() {
        assert!(opt.load(&good[..len]).is_err(), "truncated to {len}");
        refused += 1;
    }
    assert_eq!(
        fingerprint(&opt),
        before,
        "a refused load changed the optimizer"
    );
    assert_eq!(refused, 2 * good.len());
    opt.load(&good).unwrap();
    assert_eq!(fingerprint(&opt), before);
}

/// Rebuilds a checkpoint with a valid checksum after editing it, as a hostile writer could.
fn reseal(mut bytes: Vec<u8>) -> Vec<u8> {
    let n = bytes.len();
    let crc = crc32(&bytes[..n - 4]);
    bytes[n - 4..].copy_from_slice(&crc.to_le_bytes());
    bytes
}

/// Plain bitwise CRC-32 (IEEE), written out here so the test does not trust the library's.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn resealed_hostile_checkpoints_are_refused() {
    let (_, _, mut opt) = trained();
    let good = opt.save();
    assert_eq!(
        reseal(good.clone()),
        good,
        "test CRC agrees with the format's"
    );
    let before = fingerprint(&opt);
    // Format version from the future.
    let mut future = good.clone();
    let next = flatopt::checkpoint::FORMAT_VERSION + 1;
    future[8..12].copy_from_slice(&next.to_le_bytes());
    assert!(matches!(
        opt.load(&reseal(future)),
        Err(Error::Unsupported(_))
    ));
    // A version-1 checkpoint relabelled as version 2 (no groups section where one belongs).
    let mut relabelled = good.clone();
    relabelled[8..12].copy_from_slice(&2u32.to_le_bytes());
    assert!(opt.load(&reseal(relabelled)).is_err());
    // Byte-order mark of a big-endian writer.
    let mut be = good.clone();
    be[12..16].reverse();
    assert!(matches!(opt.load(&reseal(be)), Err(Error::Corrupt(_))));
    // Huge buffer count / length fields must not allocate or read out of bounds.
    let config_len = u64::from_le_bytes(good[32..40].try_into().unwrap()) as usize;
    let count_at = 40 + config_len + 16 + 7 * 8;
    let mut huge = good.clone();
    huge[count_at..count_at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(opt.load(&reseal(huge)), Err(Error::Corrupt(_))));
    let mut long = good.clone();
    long[count_at + 8..count_at + 16].copy_from_slice(&(1u64 << 40).to_le_bytes());
    assert!(opt.load(&reseal(long)).is_err());
    assert_eq!(fingerprint(&opt), before);
}

#[test]
fn incompatible_optimizers_are_refused_naming_the_difference() {
    let (cfg, params, opt) = trained();
    let saved = opt.save();
    let cases: Vec<(Config, &str)> = vec![
        (cfg.clone().lookahead(4, 0.5), "sync_period"),
        (cfg.clone().lookahead(3, 0.25), "alpha"),
        (cfg.clone().clip_norm(2.0), "grad_clip_norm"),
        (cfg.clone().weight_decay(0.1), "weight_decay"),
        (
            Config {
                base: flatopt::Base::adam(),
                ..cfg.clone()
            },
            "b2",
        ),
        (Config::new(flatopt::Base::sgd(), 1e-2), "base"),
        (
            Config {
                lr: flatopt::Schedule::Fixed { lr: 0.5 },
                ..cfg.clone()
            },
            "lr",
        ),
    ];
    for (other, field) in cases {
        let mut o = fresh(&other, &params);
        let before = fingerprint(&o);
        let err = o.load(&saved).expect_err(field);
        assert!(err.to_string().contains(field), "{field}: {err}");
        assert_eq!(fingerprint(&o), before);
    }
    // Different buffer lengths / counts.
    let mut shorter = params.clone();
    shorter[1] = vec![0.0; 2];
    let mut o = fresh(&cfg, &shorter);
    assert!(matches!(o.load(&saved), Err(Error::LengthMismatch { .. })));
    let mut o = fresh(&cfg, &params[..2]);
    assert!(matches!(o.load(&saved), Err(Error::LengthMismatch { .. })));
    // Unregistered.
    let mut o = Optimizer::new(cfg).unwrap();
    assert!(matches!(o.load(&saved), Err(Error::InvalidState(_))));
}

#[test]
fn files_are_written_atomically_and_read_back() {
    let (cfg, params, opt) = trained();
    let dir = std::env::temp_dir().join(format!("flatopt-ckpt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("opt.ckpt");
    opt.save_file(&path).unwrap();
    opt.save_file(&path).unwrap(); // overwrite in place
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "opt.ckpt")
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    let mut o = fresh(&cfg, &params);
    o.load_file(&path).unwrap();
    assert_eq!(fingerprint(&o), fingerprint(&opt));
    assert!(matches!(
        o.load_file(dir.join("missing")),
        Err(Error::Io(_))
    ));
    assert!(matches!(
        opt.save_file(dir.join("no/such/dir/x")),
        Err(Error::Io(_))
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The resumed half runs in a fresh process: this test binary re-runs itself in a child mode
/// that loads the checkpoint file, continues for 30 steps and writes its parameters out.
#[test]
fn resumed_in_a_fresh_process_continues_bit_identically() {
    const CHILD: &str = "FLATOPT_CKPT_CHILD_DIR";
    let cfg = Config::new(flatopt::Base::adamw(), 1e-2)
        .lookahead(5, 0.5)
        .clip_norm(1.0)
        .weight_decay(1e-3);
    let mut rng = Rng(77);
    let init: Vec<Vec<f32>> = SIZES.iter().map(|&n| rng.vec(n, 1.0)).collect();
    let all_grads: Vec<Vec<Vec<f32>>> = (0..50).map(|t| grads_for(&mut rng, t)).collect();
    let to_bytes = |ps: &[Vec<f32>]| -> Vec<u8> {
        ps.iter()
            .flat_map(|p| p.iter().flat_map(|x| x.to_le_bytes()))
            .collect()
    };
    let from_bytes = |b: &[u8]| -> Vec<Vec<f32>> {
        let mut xs = b
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]));
        SIZES
            .iter()
            .map(|&n| xs.by_ref().take(n).collect())
            .collect()
    };

    if let Ok(dir) = std::env::var(CHILD) {
        // Child: a fresh process with only the files.
        let dir = std::path::Path::new(&dir);
        let mut params = from_bytes(&std::fs::read(dir.join("params")).unwrap());
        let mut opt = fresh(&cfg, &params);
        opt.load_file(dir.join("opt.ckpt")).unwrap();
        for g in &all_grads[20..] {
            step(&mut opt, &mut params, g);
        }
        std::fs::write(dir.join("resumed"), to_bytes(&params)).unwrap();
        return;
    }

    let mut straight = init.clone();
    let mut a = fresh(&cfg, &straight);
    for g in &all_grads {
        step(&mut a, &mut straight, g);
    }
    let dir = std::env::temp_dir().join(format!("flatopt-resume-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut first = init.clone();
    let mut b = fresh(&cfg, &first);
    for g in &all_grads[..20] {
        step(&mut b, &mut first, g);
    }
    b.save_file(dir.join("opt.ckpt")).unwrap();
    std::fs::write(dir.join("params"), to_bytes(&first)).unwrap();
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "resumed_in_a_fresh_process_continues_bit_identically",
            "--nocapture",
        ])
        .env(CHILD, &dir)
        .status()
        .unwrap();
    assert!(status.success(), "child process failed");
    let resumed = from_bytes(&std::fs::read(dir.join("resumed")).unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
    for (x, y) in straight.iter().zip(&resumed) {
        assert_eq!(
            bits(x),
            bits(y),
            "50 straight vs 20 + save + load in a new process + 30"
        );
    }
}

/// A checkpoint of one rule is refused by an optimizer of another (each pair of Adagrad,
/// RMSprop, centered RMSprop with momentum, Adam and every later rule), naming both rules, and the
/// refusing optimizer is unchanged.
#[test]
fn checkpoints_of_another_rule_are_refused() {
    use flatopt::Base;
    let rules = [
        ("adagrad", Base::adagrad()),
        ("rmsprop", Base::rmsprop()),
        ("rmsprop", common::base("rmsprop_centered_momentum")),
        ("adam", Base::adam()),
        ("adamax", Base::adamax()),
        ("nadam", Base::nadam()),
        ("lion", Base::lion()),
        ("adabelief", Base::adabelief()),
        ("yogi", Base::yogi()),
        ("adadelta", Base::adadelta()),
        ("rprop", Base::rprop()),
    ];
    let mut rng = Rng(0xC4EC);
    let params: Vec<Vec<f32>> = SIZES.iter().map(|&n| rng.vec(n, 1.0)).collect();
    for (i, (from_name, from)) in rules.iter().enumerate() {
        let mut src = fresh(&Config::new(*from, 1e-2), &params);
        let mut p = params.clone();
        for t in 0..3 {
            step(&mut src, &mut p, &grads_for(&mut rng, t));
        }
        let saved = src.save();
        for (j, (to_name, to)) in rules.iter().enumerate() {
            if i == j {
                continue;
            }
            let mut o = fresh(&Config::new(*to, 1e-2), &params);
            let before = fingerprint(&o);
            let err = o.load(&saved).expect_err("another rule");
            let msg = err.to_string();
            let named = if from_name == to_name {
                msg.contains("differs")
            } else {
                msg.contains(&format!(
                    "the base rule differs: the checkpoint is of {from_name}, this optimizer is \
                     {to_name}"
                ))
            };
            assert!(named, "{from_name} into {to_name}: {msg}");
            assert_eq!(fingerprint(&o), before, "{from_name} into {to_name}");
        }
    }
}
