//! Fuzz target: Updates with random sizes, values, policies, tiers, thread counts and splits (see checks/).
#![no_main]

#[path = "../../tests/fuzz_checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check_step(data));
