//! The process-wide SIMD tier functions.

use std::ffi::c_char;

use crate::simd::{self, Tier};

use super::boundary::{flatopt_status, flatopt_status::*, guard, guard_value};
use super::structs::tier_from_c;

/// The process-wide default SIMD tier (a `flatopt_simd_tier` value): `FLATOPT_SIMD` if it
/// names an available tier, else the best one.
#[no_mangle]
pub extern "C" fn flatopt_default_simd_tier() -> u32 {
    guard_value(Tier::Scalar as u32, || simd::default_tier() as u32)
}

/// Sets the process-wide default SIMD tier (used by optimizers created afterwards and by the
/// stateless kernels).
#[no_mangle]
pub extern "C" fn flatopt_set_default_simd_tier(tier: u32) -> flatopt_status {
    guard(|| {
        let t = tier_from_c("tier", tier)?.unwrap_or_else(Tier::best);
        simd::set_default_tier(t)?;
        Ok(FLATOPT_OK)
    })
}

/// 1 if the tier can run in this build on this CPU, else 0.
#[no_mangle]
pub extern "C" fn flatopt_simd_tier_available(tier: u32) -> i32 {
    guard_value(0, || {
        u8::try_from(tier)
            .ok()
            .and_then(Tier::from_u8)
            .is_some_and(Tier::is_available) as i32
    })
}

/// The name of a tier ("scalar", "portable", "avx2", "avx512"), "default" for 0, "unknown" for
/// other values. Static storage.
#[no_mangle]
pub extern "C" fn flatopt_simd_tier_name(tier: u32) -> *const c_char {
    let s: &'static [u8] = match tier {
        0 => b"default\0",
        1 => b"scalar\0",
        2 => b"portable\0",
        3 => b"avx2\0",
        4 => b"avx512\0",
        _ => b"unknown\0",
    };
    s.as_ptr().cast()
}
