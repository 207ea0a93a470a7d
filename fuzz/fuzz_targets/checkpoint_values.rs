//! Fuzz target: see `check_checkpoint_values` in checks/.
#![no_main]

#[path = "../../tests/fuzz_checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check_checkpoint_values(data));
