//! The check functions of the fuzz targets, shared by the cargo-fuzz targets
//! (`fuzz/fuzz_targets/*.rs`, nightly, libFuzzer) and the corpus replay test
//! (`tests/fuzz_corpus.rs`, stable, part of `cargo test`), which both include this module with
//! `#[path]`. Each `check_*` function takes arbitrary bytes; it must never panic, hang or
//! allocate without bound for any input, and it panics (an assertion) when the library breaks an
//! invariant, which libFuzzer reports as a crash.
//!
//! - [`check_checkpoint_load`] (`checkpoint_load.rs`): arbitrary bytes into `Optimizer::load`
//!   and `flatopt_optimizer_load` of optimizers built from a few fixed configurations.
//! - [`check_config`] (`config.rs`): arbitrary `flatopt_config` / `flatopt_schedule` structs
//!   through `flatopt_optimizer_new`, and arbitrary Rust `Config`s through `Config::validate`
//!   and `Optimizer::new` (compared with the C ABI where the C structs can express them).
//! - [`check_step`] (`step.rs`): updates with random sizes, values (NaN, Inf, subnormals,
//!   huge), policies, tiers, thread counts 1-2 and the begin/apply/finish split.
//! - [`check_checkpoint_values`] (`domains.rs`): checkpoints whose state values are replaced by
//!   hostile bit patterns (checksum repaired): accepted exactly when every value is in its
//!   domain, through Rust, C and `checkpoint_info` alike.
//! - [`check_split_order`] (`split.rs`): begin / apply a range / finish / update in any order,
//!   Rust and C, against a model of the applied elements.
//!
//! The support is split by concern: `input.rs` (reading fuzz bytes, interesting values),
//! `generate.rs` (configurations from the library's catalogs, and their C form), `c_api.rs`
//! (an owning C handle), `common.rs` (digests, comparisons), `surgery.rs` (checkpoint bytes),
//! `seeds.rs` (the seed inputs, written to `fuzz/corpus/<target>/` by the ignored test
//! `write_seed_corpus` of `tests/fuzz_corpus.rs`). Library behaviour is never copied here: the
//! status mapping, the schedule and rule tables and the C field names come from the library;
//! the few independent oracles (which schedules may grow) are labelled as such.
#![allow(dead_code)]

mod c_api;
pub mod checkpoint_load;
mod common;
mod config;
mod domains;
mod generate;
mod input;
pub mod seeds;
mod split;
mod step;
mod surgery;

pub use checkpoint_load::check_checkpoint_load;
pub use config::check_config;
pub use domains::check_checkpoint_values;
pub use split::check_split_order;
pub use step::check_step;

/// The targets, by name (the directories under `fuzz/corpus/`).
pub const TARGETS: [&str; 5] = [
    "checkpoint_load",
    "config",
    "step",
    "checkpoint_values",
    "split_order",
];

/// Runs the check of `target` on `data`.
pub fn check(target: &str, data: &[u8]) {
    match target {
        "checkpoint_load" => check_checkpoint_load(data),
        "config" => check_config(data),
        "step" => check_step(data),
        "checkpoint_values" => check_checkpoint_values(data),
        "split_order" => check_split_order(data),
        other => panic!("unknown fuzz target {other}"),
    }
}
