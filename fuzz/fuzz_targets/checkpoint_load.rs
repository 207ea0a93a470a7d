//! Fuzz target: Arbitrary bytes into Optimizer::load and flatopt_optimizer_load (see checks/).
#![no_main]

#[path = "../../tests/fuzz_checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check_checkpoint_load(data));
