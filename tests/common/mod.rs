//! Shared by the integration tests: the one table of optimizer configurations that drives them
//! (add a row here and every test covers it), a small deterministic RNG, hostile values.
#![allow(dead_code)]

use flatopt::{Base, Config, Schedule, Tier};

pub mod perbuffer;

/// The base optimizers under test, one row each, with their learning rate.
pub fn bases() -> Vec<(&'static str, Base, f64)> {
    vec![
        ("sgd", Base::sgd(), 0.1),
        ("sgd_momentum", Base::momentum(0.9, false), 0.05),
        (
            "sgd_momentum_dampening",
            Base::Sgd {
                momentum: 0.8,
                dampening: 0.3,
                nesterov: false,
            },
            0.05,
        ),
        ("sgd_nesterov", Base::momentum(0.9, true), 0.05),
        ("adam", Base::adam(), 1e-2),
        (
            "adam_amsgrad",
            Base::Adam {
                b1: 0.9,
                b2: 0.99,
                eps: 1e-8,
                amsgrad: true,
            },
            1e-2,
        ),
        ("adamw", Base::adamw(), 1e-2),
        (
            "adamw_strong_decay",
            Base::AdamW {
                b1: 0.8,
                b2: 0.95,
                eps: 1e-6,
                weight_decay: 0.3,
            },
            3e-2,
        ),
        ("radam", Base::radam(), 1e-2),
        (
            "radam_fast_b2",
            Base::RAdam {
                b1: 0.9,
                b2: 0.9,
                eps: 1e-8,
            },
            1e-2,
        ),
        ("adagrad", Base::adagrad(), 1e-1),
        (
            "adagrad_optax_lr_decay",
            Base::Adagrad {
                lr_decay: 0.05,
                initial_accumulator_value: 0.1,
                eps: 1e-7,
                eps_inside_sqrt: true,
            },
            1e-1,
        ),
        ("rmsprop", Base::rmsprop(), 1e-2),
        (
            "rmsprop_centered_momentum",
            Base::RmsProp {
                alpha: 0.9,
                eps: 1e-8,
                momentum: 0.9,
                centered: true,
                eps_inside_sqrt: false,
                initial_scale: 0.0,
            },
            1e-2,
        ),
        (
            "rmsprop_optax_centered",
            Base::RmsProp {
                alpha: 0.9,
                eps: 1e-8,
                momentum: 0.0,
                centered: true,
                eps_inside_sqrt: true,
                initial_scale: 0.1,
            },
            1e-2,
        ),
        (
            "rmsprop_momentum",
            Base::RmsProp {
                alpha: 0.99,
                eps: 1e-6,
                momentum: 0.5,
                centered: false,
                eps_inside_sqrt: true,
                initial_scale: 0.0,
            },
            1e-2,
        ),
        ("adamax", Base::adamax(), 2e-3),
        (
            "adamax_optax",
            Base::Adamax {
                b1: 0.9,
                b2: 0.99,
                eps: 1e-8,
                eps_outside_max: true,
            },
            2e-3,
        ),
        ("nadam", Base::nadam(), 2e-3),
        (
            "nadam_optax_decoupled",
            Base::NAdam {
                b1: 0.9,
                b2: 0.999,
                eps: 1e-8,
                momentum_decay: 0.004,
                constant_momentum: true,
                decoupled_weight_decay: 0.05,
            },
            2e-3,
        ),
        // Lion moves every element by exactly +-lr (times the decay factor): without a decay a
        // one-element buffer can step back onto its start, so each row decays.
        (
            "lion_optax",
            Base::Lion {
                b1: 0.9,
                b2: 0.99,
                weight_decay: 1e-3,
            },
            1e-4,
        ),
        (
            "lion_decay",
            Base::Lion {
                b1: 0.95,
                b2: 0.98,
                weight_decay: 0.1,
            },
            3e-4,
        ),
        ("adabelief", Base::adabelief(), 1e-3),
        (
            "adabelief_eps_root_0",
            Base::AdaBelief {
                b1: 0.8,
                b2: 0.99,
                eps: 1e-8,
                eps_root: 0.0,
            },
            1e-3,
        ),
        ("yogi", Base::yogi(), 1e-2),
        ("adadelta", Base::adadelta(), 1.0),
        ("rprop", Base::rprop(), 1e-2),
        (
            "rprop_tight_bounds",
            Base::Rprop {
                eta_minus: 0.3,
                eta_plus: 1.5,
                min_step_size: 1e-3,
                max_step_size: 2e-2,
            },
            1e-2,
        ),
    ]
}

/// The rules with per-buffer norms (LAMB, LARS, NovoGrad; not in [`bases`]: the tests of the
/// split step over every row predate them), one row per option combination that changes the
/// loop or the scalars.
pub fn trust_bases() -> Vec<(&'static str, Base, f64)> {
    vec![
        ("lamb", Base::lamb(), 1e-2),
        (
            "lamb_decay_eps_root",
            Base::Lamb {
                b1: 0.8,
                b2: 0.99,
                eps: 1e-8,
                eps_root: 1e-6,
                weight_decay: 0.05,
            },
            1e-2,
        ),
        ("lars", Base::lars(), 1.0),
        (
            "lars_nesterov_eps_decay",
            Base::Lars {
                momentum: 0.5,
                nesterov: true,
                weight_decay: 1e-2,
                trust_coefficient: 0.02,
                eps: 1e-3,
            },
            0.5,
        ),
        (
            "lars_no_momentum",
            Base::Lars {
                momentum: 0.0,
                nesterov: false,
                weight_decay: 0.0,
                trust_coefficient: 0.001,
                eps: 0.0,
            },
            1.0,
        ),
        ("novograd", Base::novograd(), 1e-2),
        (
            "novograd_decay_eps_root",
            Base::Novograd {
                b1: 0.95,
                b2: 0.5,
                eps: 1e-8,
                eps_root: 1e-6,
                weight_decay: 0.05,
            },
            1e-2,
        ),
    ]
}

/// The base optimizer of the row called `name` in [`bases`].
pub fn base(name: &str) -> Base {
    bases()
        .into_iter()
        .find(|(n, _, _)| *n == name)
        .unwrap_or_else(|| panic!("no base row named {name}"))
        .1
}

/// Adam (no AMSGrad) with these hyperparameters, for tables of invalid values.
pub fn adam_with(b1: f64, b2: f64, eps: f64) -> Base {
    Base::Adam {
        b1,
        b2,
        eps,
        amsgrad: false,
    }
}

/// A named change to a configuration (a pipeline variant).
pub type Variant = (&'static str, fn(Config) -> Config);

/// The pipeline variants applied on top of every base.
pub fn pipelines() -> Vec<Variant> {
    vec![
        ("plain", |c| c),
        ("lookahead_k5", |c| c.lookahead(5, 0.5)),
        ("lookahead_k1_a0.3", |c| c.lookahead(1, 0.3)),
        ("lookahead_a0", |c| c.lookahead(3, 0.0)),
        ("clip_norm", |c| c.clip_norm(0.5)),
        ("clip_value", |c| c.clip_value(0.05)),
        ("weight_decay", |c| c.weight_decay(0.1)),
        ("everything", |c| {
            c.lookahead(4, 0.6)
                .clip_norm(1.0)
                .clip_value(0.2)
                .weight_decay(0.01)
        }),
        ("scheduled", |c| {
            let base_lr = match c.lr {
                Schedule::Fixed { lr } => lr,
                _ => 0.01,
            };
            Config {
                lr: Schedule::Exponential {
                    base: base_lr,
                    gamma: 0.9,
                },
                ..c
            }
            .lookahead(3, 0.5)
        }),
    ]
}

/// Every (name, config) row: each base under each pipeline.
pub fn table() -> Vec<(String, Config)> {
    let mut rows = Vec::new();
    for (bname, base, lr) in bases() {
        for (pname, f) in pipelines() {
            rows.push((format!("{bname}/{pname}"), f(Config::new(base, lr))));
        }
    }
    rows
}

/// SplitMix64: small, deterministic, good enough for test data.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    /// Roughly normal (sum of uniforms), scaled.
    pub fn normal(&mut self, scale: f64) -> f32 {
        let s: f64 = (0..4).map(|_| self.unit()).sum::<f64>() - 2.0;
        (s * scale * 1.7) as f32
    }
    pub fn vec(&mut self, n: usize, scale: f64) -> Vec<f32> {
        (0..n).map(|_| self.normal(scale)).collect()
    }
}

/// Finite values that stress the arithmetic: signed zeros, subnormals, huge and tiny
/// magnitudes, values near 1.
pub const HOSTILE_FINITE: [f32; 14] = [
    0.0,
    -0.0,
    1e-45,
    -1e-45,
    1.1754942e-38,
    -1e-40,
    1e-30,
    -1e-20,
    3.0e38,
    -3.0e38,
    1e19,
    -65504.0,
    1.0,
    -0.99999994,
];

/// Hostile finite values mixed into random ones: every 3rd element is from the table.
pub fn hostile_vec(rng: &mut Rng, n: usize, scale: f64) -> Vec<f32> {
    (0..n)
        .map(|i| {
            if i % 3 == 0 {
                HOSTILE_FINITE[rng.below(HOSTILE_FINITE.len())]
            } else {
                rng.normal(scale)
            }
        })
        .collect()
}

/// Bit patterns of a slice, for exact comparisons that treat NaN payloads and -0 strictly.
pub fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

/// `rel` (a path from the package root) when it exists, else `None` after printing why the
/// caller skips: the published crate carries the tests and the data they need, but not the
/// repository's other files (the fuzz corpus, the bindings), so the checks against those skip
/// there (`cargo test -- --nocapture` shows the note) instead of passing or failing.
pub fn repository_file(rel: &str) -> Option<std::path::PathBuf> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    if path.exists() {
        return Some(path);
    }
    println!("SKIPPED: {rel} is absent (it is in the repository, not in the published crate)");
    None
}

/// Runs `check` on `tier` if this build and CPU have it, else says it is skipped.
pub fn on_tier(tier: Tier, check: impl FnOnce(Tier)) {
    if tier.is_available() {
        check(tier);
    } else {
        eprintln!("tier {tier} not available here: skipped");
    }
}

/// `per_tier_tests!({ name => check, .. }; module => tier, ..)`: a module per tier with one
/// test per row, each calling `check(tier)` through `on_tier` (which the file must import).
#[allow(unused_macros)]
macro_rules! per_tier_tests {
    ($rows:tt; $($module:ident => $tier:expr),* $(,)?) => {$(
        mod $module {
            use super::*;
            per_tier_tests!(@rows $tier; $rows);
        }
    )*};
    (@rows $tier:expr; { $($name:ident => $check:expr),* $(,)? }) => {$(
        #[test]
        fn $name() {
            on_tier($tier, $check);
        }
    )*};
}

/// The compressed-state precisions under test (`tests/state.rs`, `tests/no_alloc.rs`): how
/// each row's configuration is changed.
pub fn precisions() -> Vec<Variant> {
    vec![
        ("bf16_stochastic", |c| Config {
            state_dtype: flatopt::kernels::StateDtype::Bf16,
            state_seed: 7,
            ..c
        }),
        // Indices crossing 2^32 inside a buffer (the stochastic rounding's key changes there).
        ("bf16_stochastic_past_2_32", |c| Config {
            state_dtype: flatopt::kernels::StateDtype::Bf16,
            state_seed: 11,
            state_index_offset: (1 << 32) - 1000,
            ..c
        }),
        ("bf16_nearest", |c| Config {
            state_dtype: flatopt::kernels::StateDtype::Bf16,
            state_rounding: flatopt::kernels::StateRounding::Nearest,
            ..c
        }),
        ("int8", |c| Config {
            state_dtype: flatopt::kernels::StateDtype::Int8,
            ..c
        }),
        ("int8_bf16_slow", |c| Config {
            state_dtype: flatopt::kernels::StateDtype::Int8,
            slow_dtype: flatopt::kernels::StateDtype::Bf16,
            state_seed: 3,
            state_index_offset: 1 << 40,
            ..c
        }),
        ("f32_bf16_slow", |c| Config {
            slow_dtype: flatopt::kernels::StateDtype::Bf16,
            ..c
        }),
    ]
}
