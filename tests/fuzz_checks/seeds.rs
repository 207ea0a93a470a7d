//! Seed inputs of each target: valid and slightly invalid inputs of each shape.

use flatopt::catalog::{Ty, Value};
use flatopt::config::base_specs;
use flatopt::ffi::*;
use flatopt::schedule;
use flatopt::{Base, Config, Schedule};

use super::checkpoint_load::{checkpoint_configs, sample_checkpoint, sample_checkpoint_in};
use super::generate::to_c;
use super::input::{F32_EDGES, INTERESTING_F64, INTERESTING_U64};

fn put_f64(out: &mut Vec<u8>, x: f64) {
    let same = |v: &f64| v.to_bits() == x.to_bits();
    let i = INTERESTING_F64.iter().position(same);
    let edge = F32_EDGES.iter().position(same);
    match (i, edge) {
        (Some(i), _) => out.push(i as u8),
        (None, Some(i)) => out.push(0xE0 + i as u8),
        (None, None) => {
            out.push(0xF0);
            out.extend_from_slice(&x.to_bits().to_le_bytes());
        }
    }
}

fn put_u64(out: &mut Vec<u8>, x: u64) {
    match INTERESTING_U64.iter().position(|v| *v == x) {
        Some(i) => out.push(i as u8),
        None => {
            out.push(0xF0);
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
}

/// Writes the little-endian bytes of the listed fields of `$s` (a `$T`) at their offsets into
/// `$buf` (pointers and padding stay zero).
macro_rules! put_fields {
    ($buf:expr, $at:expr, $s:expr, $T:ty, [$($f:ident),*]) => {
        $(
            let off = $at + std::mem::offset_of!($T, $f);
            let b = $s.$f.to_le_bytes();
            $buf[off..off + b.len()].copy_from_slice(&b);
        )*
    };
}

/// The bytes of a `flatopt_config` (pointer fields zero), for seeds of the raw C mode.
fn config_bytes(c: &flatopt_config) -> Vec<u8> {
    let mut buf = vec![0u8; std::mem::size_of::<flatopt_config>()];
    put_fields!(
        buf,
        0,
        c,
        flatopt_config,
        [
            struct_size,
            nonfinite,
            lr,
            schedule_manual,
            lookahead,
            sync_period,
            alpha,
            weight_decay,
            grad_clip_norm,
            grad_clip_value,
            num_threads,
            simd_tier
        ]
    );
    buf
}

/// The bytes of a `flatopt_base_params`, for seeds of the raw C mode.
fn base_bytes(b: &flatopt_base_params) -> Vec<u8> {
    let mut buf = vec![0u8; std::mem::size_of::<flatopt_base_params>()];
    put_fields!(
        buf,
        0,
        b,
        flatopt_base_params,
        [
            struct_size,
            kind,
            momentum,
            dampening,
            nesterov,
            amsgrad,
            b1,
            b2,
            eps,
            decoupled_weight_decay
        ]
    );
    buf
}

/// The bytes of a `flatopt_schedule` (pointer fields and padding zero).
fn schedule_bytes(s: &flatopt_schedule) -> Vec<u8> {
    let mut buf = vec![0u8; std::mem::size_of::<flatopt_schedule>()];
    put_fields!(
        buf,
        0,
        s,
        flatopt_schedule,
        [
            struct_size,
            kind,
            base_lr,
            max_lr,
            gamma,
            factor,
            start_factor,
            end_factor,
            eta_min,
            power,
            start_lr,
            decay_rate,
            end_value,
            pct_start,
            div_factor,
            final_div_factor,
            threshold,
            min_lr,
            period,
            t_mult,
            warmup,
            step_size_up,
            step_size_down,
            patience,
            cooldown,
            staircase,
            anneal_linear,
            cyclic_mode,
            plateau_mode,
            threshold_mode,
            n_milestones,
            n_values
        ]
    );
    buf
}

/// The start of a Rust-decoded configuration: the base selector byte `b` (kind `b % count`),
/// then the kind's catalog defaults (momentum 0.9 rather than 0, so that the seeds reach the
/// momentum loop).
fn base_seed(b: u8) -> Vec<u8> {
    let specs = base_specs();
    let spec = &specs[b as usize % specs.len()];
    let mut s = vec![b];
    for f in spec.fields.iter().filter(|f| f.ty != Ty::Bool) {
        match (f.name, &f.default) {
            ("momentum", _) => put_f64(&mut s, 0.9),
            (_, Value::F64(x)) => put_f64(&mut s, *x),
            (name, other) => panic!("seed for {}.{name} = {other:?}", spec.name),
        }
    }
    s
}

/// The number of fields the fuzz input gives for base kind `b` (the flags come from `b`).
fn base_field_count(b: u8) -> usize {
    let specs = base_specs();
    specs[b as usize % specs.len()]
        .fields
        .iter()
        .filter(|f| f.ty != Ty::Bool)
        .count()
}

/// Seed inputs of `target`: valid and slightly invalid inputs of each shape.
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    match target {
        "checkpoint_load" => {
            let n = checkpoint_configs().len();
            for which in 0..n {
                for (steps, mode) in [(0, 0), (4, 0), (7, 1), (11, 2)] {
                    let mut s = vec![(which + mode * n) as u8];
                    s.extend(sample_checkpoint(which, steps));
                    out.push(s);
                }
            }
            // Another configuration's checkpoint, a truncated one, garbage.
            let mut s = vec![0u8];
            s.extend(sample_checkpoint(1, 3));
            out.push(s);
            let mut s = vec![(2 + n) as u8];
            s.extend(&sample_checkpoint(2, 3)[..60]);
            out.push(s);
            out.push(b"\x00FLATOPTC".to_vec());
            // Format 2: the grouped variant of every configuration, loaded into an optimizer
            // with those groups (as is, and with header repair), and one loaded into an
            // optimizer without groups (refused).
            for which in 0..n {
                for (steps, mode) in [(5, 4), (3, 5)] {
                    let mut s = vec![(which + mode * n) as u8];
                    s.extend(sample_checkpoint_in(which, steps, true));
                    out.push(s);
                }
            }
            let mut s = vec![0u8];
            s.extend(sample_checkpoint_in(0, 2, true));
            out.push(s);
        }
        "checkpoint_values" => out.extend(super::domains::seeds()),
        "split_order" => out.extend(super::split::seeds()),
        "config" => {
            // Raw C mode: defaults of every base and schedule kind.
            let (n_schedules, n_bases) = (schedule::specs().len(), base_specs().len());
            for kind in 0..n_schedules as u32 {
                let rust = Config::with_schedule(
                    Base::default_of(kind % n_bases as u32),
                    Schedule::fixed(1e-3),
                );
                let c = to_c(&rust).unwrap();
                // SAFETY: all-zero is valid for this struct.
                let mut s: flatopt_schedule = unsafe { std::mem::zeroed() };
                // SAFETY: valid, writable struct.
                unsafe { flatopt_schedule_init(&mut s, size_of_val(&s), kind) };
                let mut cfg = c.cfg;
                cfg.lookahead = kind % 2;
                let mut seed = vec![0u8, 1 | 8];
                seed.extend(config_bytes(&cfg));
                seed.extend(base_bytes(&c.base));
                seed.extend(schedule_bytes(&s));
                seed.extend([2, 0, 5, 0, 0]);
                out.push(seed);
            }
            // Rust mode: each schedule kind with mostly valid values.
            for kind in 0..n_schedules as u8 {
                let mut seed = vec![1u8];
                seed.extend(base_seed(kind % n_bases as u8));
                seed.push(kind);
                seed.extend([1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]);
                out.push(seed);
            }
            // Rust mode: values valid in f64 but not in f32 (issue 11), each alone in an
            // otherwise valid configuration, and schedules that grow past the f32 range.
            // (base kind, its hyperparameters, schedule kind, its values, flags, their values)
            type Row = (u8, [f64; 4], u8, &'static [f64], u8, &'static [f64]);
            let f32_rows: [Row; 8] = [
                (1, [0.9, 0.999, 1e-50, 0.0], 0, &[1e-3], 0, &[]),
                (1, [0.9, 0.999, 1e-8, 0.0], 0, &[1e39], 0, &[]),
                (1, [0.9, 0.999, 1e-8, 0.0], 0, &[1e-3], 1, &[1e39]),
                (1, [0.999_999_99, 0.999, 1e-8, 0.0], 0, &[1e-3], 0, &[]),
                (2, [0.9, 0.999, 1e-8, 1e39], 0, &[1e-3], 0, &[]),
                (0, [0.999_999_99, 0.0, 0.0, 0.0], 0, &[1e-3], 0, &[]),
                (1, [0.9, 0.999, 1e-8, 0.0], 5, &[1e-3, 1e10], 0, &[]),
                (1, [0.9, 0.999, 1e-8, 0.0], 1, &[1e-3], 4, &[1e-3, 1e-50]),
            ];
            for (base, hp, sched, svals, flags, fvals) in f32_rows {
                let mut seed = vec![1u8, base];
                let n = base_field_count(base);
                hp[..n].iter().for_each(|v| put_f64(&mut seed, *v));
                seed.push(sched);
                svals.iter().for_each(|v| put_f64(&mut seed, *v));
                if sched == 1 {
                    put_f64(&mut seed, 0.5); // ConstantLR factor
                    put_u64(&mut seed, 5);
                }
                seed.push(flags);
                fvals.iter().for_each(|v| put_f64(&mut seed, *v));
                seed.extend([0, 0]);
                out.push(seed);
            }
        }
        "step" => {
            let rows = [
                (1u8, 0x0Eu8),
                (0, 0x08),
                (4 | 1, 0x1B),
                (2, 0x20),
                (3, 0x8A),
                (4, 0x01),
            ];
            for (kind, flags) in rows {
                let mut seed = base_seed(kind);
                seed.push(0); // Fixed schedule
                put_f64(&mut seed, 1e-3);
                seed.push(flags);
                if flags & 1 != 0 {
                    put_f64(&mut seed, 0.01);
                }
                if flags & 2 != 0 {
                    put_f64(&mut seed, 0.5);
                }
                if flags & 4 != 0 {
                    put_f64(&mut seed, 0.1);
                }
                if flags & 8 != 0 {
                    put_u64(&mut seed, 2);
                    put_f64(&mut seed, 0.5);
                }
                seed.extend([2, 17, 0x80 | 13, 5, 3, 9]);
                seed.extend((0..64u8).map(|i| i.wrapping_mul(37)));
                out.push(seed);
            }
            // Steps refused because a per-step scalar leaves the f32 range (issue 11): an
            // exponential schedule with gamma = 1e20 (Inf from the fourth step), a step
            // schedule with gamma = 1e30 every step, and AdamW whose decay factor
            // 1 - lr * weight_decay is -Inf as f32.
            let grow_rows: [(u8, &[f64], u8, &[f64]); 3] = [
                (1, &[0.9, 0.999, 1e-8], 5, &[1e-3, 1e20]),
                (0, &[0.5, 0.0], 3, &[1e-3]),
                (2, &[0.9, 0.999, 1e-8, 1e30], 0, &[1e10]),
            ];
            for (base, hp, sched, svals) in grow_rows {
                let mut seed = vec![base];
                hp.iter().for_each(|v| put_f64(&mut seed, *v));
                seed.push(sched);
                svals.iter().for_each(|v| put_f64(&mut seed, *v));
                if sched == 3 {
                    put_u64(&mut seed, 1); // StepLR step_size
                    put_f64(&mut seed, 1e30); // gamma
                }
                seed.push(0x00);
                seed.extend([1, 17, 0x80 | 13, 4, 3]);
                seed.extend((0..64u8).map(|i| i.wrapping_mul(41)));
                out.push(seed);
            }
        }
        other => panic!("unknown fuzz target {other}"),
    }
    out
}
