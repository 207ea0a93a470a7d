//! Fuzz target: Updates with random sizes, values, policies, tiers, thread counts and splits (see checks.rs).
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check_step(data));
