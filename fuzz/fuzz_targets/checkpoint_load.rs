//! Fuzz target: Arbitrary bytes into Optimizer::load and flatopt_optimizer_load (see checks.rs).
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check_checkpoint_load(data));
