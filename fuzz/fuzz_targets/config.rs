//! Fuzz target: Arbitrary C config / schedule structs through flatopt_optimizer_new, and arbitrary Rust
//! configurations through Config::validate and Optimizer::new (see checks/).
#![no_main]

#[path = "../../tests/fuzz_checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check_config(data));
