//! The configuration-field catalog: every field of [`Config`] besides the base rule and the
//! learning rate, once. Each entry gives the Rust field (name, type, default), its domain,
//! `f32` where the kernels use the value in f32, the `flatopt_config` field that carries it in
//! C and how C spells it (`CForm`: 0 for none, a `uint32_t`, the C enum named in errors),
//! `local` for fields that checkpoints leave out (they do not change results), `@group` for
//! an optional group of fields behind a flag (Lookahead), and `@check` for a rule beyond the
//! domain. The `Config` struct, its defaults, validation, C conversion and C defaults, the
//! checkpoint encoding, the JSON dump and the fuzz oracles follow.
//!
//! Declaration order is the checkpoint encoding order (and `Config`'s field order): append new
//! fields at the end. The table is written once as `config_table!`, which hands it to a macro:
//! `config_fields!` here (the Rust side) and `c_config_fields!` in `src/ffi/structs.rs` (the
//! C struct's field accessors and defaults), so that neither side lists the fields again.

use crate::catalog::CForm;
use crate::error::Error;
use crate::kernels::{StateDtype, StateRounding};
use crate::simd::Tier;

use super::{NonFinitePolicy, ScheduleMode, MAX_THREADS};

macro_rules! config_table {
    ($m:ident) => {
        $m! {
            /// When the schedule advances (default: once per applied update; C: 1 for manual).
            schedule_mode: ScheduleMode = ScheduleMode::PerUpdate; Any;
            c schedule_manual = CForm::Enum("must be 0 or 1");

            /// Coupled weight decay (`g += wd * p`), 0 for none.
            weight_decay: f64 = 0.0; NonNeg, f32; c weight_decay;

            /// Clip by global norm over all registered buffers (C: 0 for none).
            grad_clip_norm: Option<f64> = None; Positive, f32;
            c grad_clip_norm = CForm::ZeroIsNone;

            /// Clip each gradient element to `[-c, c]` (C: 0 for none).
            grad_clip_value: Option<f64> = None; Positive, f32;
            c grad_clip_value = CForm::ZeroIsNone;

            /// Lookahead around the base optimizer, `None` for none (C: the flag `lookahead`).
            lookahead: Option<Lookahead> = None; Any; c lookahead;
            @group
            /// Lookahead: fast weights stepped by the base optimizer, pulled into the slow
            /// weights every `sync_period` applied updates.
            Lookahead {
                /// k >= 1: syncs happen at updates k, 2k, 3k, ...
                sync_period: u64 = 5; AtLeastOne; c sync_period;
                /// In [0, 1]: `s = s + alpha*(p - s)`.
                alpha: f64 = 0.5; UnitClosed, f32; c alpha;
            }

            /// What an update does with a NaN or ±Inf gradient (default: skip it).
            nonfinite: NonFinitePolicy = NonFinitePolicy::Skip; Any;
            c nonfinite = CForm::Enum("must be a flatopt_nonfinite value");

            /// 1: the caller's thread (default). More: a private pool of that many threads.
            num_threads: usize = 1; Any; c num_threads = CForm::U32, local;
            @check {
                if num_threads == 0 || num_threads > MAX_THREADS {
                    return Err(Error::invalid(
                        "num_threads",
                        num_threads,
                        "must be in 1..=256",
                    ));
                }
                Ok(())
            }

            /// SIMD tier; `None` takes the process default (`FLATOPT_SIMD` or the best
            /// available).
            tier: Option<Tier> = None; Any;
            c simd_tier = CForm::Enum("must be a flatopt_simd_tier value"), local;
            @check {
                if let Some(t) = tier {
                    t.check()?;
                }
                Ok(())
            }

            /// How the moments (`m`, `v`, `v_max`) are held: float32 (default), bfloat16 or
            /// int8 (the 8-bit blockwise code). Checkpoints carry it in their state section.
            state_dtype: StateDtype = StateDtype::F32; Any;
            c state_dtype = CForm::Enum("must be a flatopt_state_dtype value"), local;

            /// How bf16 state is rounded: stochastic (default) or to nearest.
            state_rounding: StateRounding = StateRounding::Stochastic; Any;
            c state_rounding = CForm::Enum("must be a flatopt_state_rounding value"), local;

            /// The seed of stochastic rounding.
            state_seed: u64 = 0; Any; c state_seed, local;

            /// The index of this optimizer's first element in the whole model, the counter of
            /// stochastic rounding: a shard passes its offset, so that it rounds as one process
            /// over the whole model would.
            state_index_offset: u64 = 0; Any; c state_index_offset, local;

            /// How the Lookahead slow weights are held: float32 (default) or bfloat16.
            slow_dtype: StateDtype = StateDtype::F32; Any;
            c slow_dtype = CForm::Enum("must be a flatopt_state_dtype value"), local;
            @check {
                if slow_dtype == StateDtype::Int8 {
                    return Err(Error::invalid(
                        "slow_dtype",
                        "int8",
                        "must be float32 or bfloat16 (slow weights are parameters: 8 bits \
relative to a block's largest value would lose them)",
                    ));
                }
                Ok(())
            }
        }
    };
}
pub(crate) use config_table;

config_table!(config_fields);
