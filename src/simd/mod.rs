//! SIMD tiers: the small vector abstraction every kernel is written over, one implementation of
//! it per instruction set, and the one dispatch point that picks a tier at run time.
//!
//! A kernel (see `crate::kernels`) is written once, generic over [`Vf32`], and marked
//! `#[inline(always)]`; each tier module stamps it into a function compiled for its instruction
//! set (for AVX2 a `#[target_feature(enable = "avx2")]` function). The scalar tier is the same
//! kernel with `f32` as a one-lane vector, so it is the reference by construction.
//!
//! Every operation here is exactly rounded IEEE-754 (add, sub, mul, div, sqrt, compare-select):
//! no FMA, no approximate reciprocal or rsqrt. The same sequence of operations therefore gives
//! the same bits on every tier.

use std::sync::atomic::{AtomicU8, Ordering};

use crate::error::Error;

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
mod fpmode;
pub(crate) mod portable;
pub(crate) mod scalar;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use fpmode::FpMode;

/// Lanes of the f64 accumulator used by the sum of squares, on every tier (the fixed lane
/// layout of the determinism contract: element `i` of a block goes to lane `i % 16`).
pub(crate) const SUMSQ_LANES: usize = 16;

/// A vector of f32 lanes. `f32` itself implements it with one lane (the scalar tier).
///
/// `max` and `min` are defined as compare-and-select, `max(a, b) = if a > b { a } else { b }`
/// and `min(a, b) = if a < b { a } else { b }`, which is what `maxps` / `minps` do: when either
/// input is NaN the result is `b`. Kernels put the value that may be NaN second, so NaN passes
/// through a clamp unchanged on every tier.
pub(crate) trait Vf32: Copy {
    /// Number of f32 lanes.
    const LANES: usize;
    /// f64 accumulator of [`SUMSQ_LANES`] lanes.
    type Acc: Copy;

    fn splat(x: f32) -> Self;
    /// Loads `LANES` values from the start of `s` (panics if `s` is shorter).
    fn load(s: &[f32]) -> Self;
    /// Stores `LANES` values to the start of `s` (panics if `s` is shorter).
    fn store(self, s: &mut [f32]);
    fn add(self, o: Self) -> Self;
    fn sub(self, o: Self) -> Self;
    fn mul(self, o: Self) -> Self;
    fn div(self, o: Self) -> Self;
    fn sqrt(self) -> Self;
    fn max(self, o: Self) -> Self;
    fn min(self, o: Self) -> Self;

    fn acc_zero() -> Self::Acc;
    /// Adds `(x[j] as f64)^2` to lane `j`, for `j` in `0..16` (panics if `x` is shorter).
    fn acc_add_squares(acc: Self::Acc, x: &[f32]) -> Self::Acc;
    fn acc_lanes(acc: Self::Acc) -> [f64; SUMSQ_LANES];
}

/// An instruction-set tier. All tiers compute bit-identical results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Tier {
    /// Plain Rust, one element at a time: the reference.
    Scalar = 1,
    /// `wide` vectors: SSE2 on x86_64, NEON on aarch64, portable code elsewhere.
    Portable = 2,
    /// AVX2 through `core::arch` intrinsics (x86_64 only, detected at run time).
    Avx2 = 3,
    /// AVX-512F: reserved. Not compiled into this build (it cannot be tested on the machines
    /// this library is developed on), so it is never available; the dispatch is ready for it.
    Avx512 = 4,
}

impl Tier {
    /// Every tier, slowest first.
    pub const ALL: [Tier; 4] = [Tier::Scalar, Tier::Portable, Tier::Avx2, Tier::Avx512];

    /// The name used by `FLATOPT_SIMD` and the APIs: `scalar`, `portable`, `avx2`, `avx512`.
    pub fn name(self) -> &'static str {
        match self {
            Tier::Scalar => "scalar",
            Tier::Portable => "portable",
            Tier::Avx2 => "avx2",
            Tier::Avx512 => "avx512",
        }
    }

    /// Parses a tier name (case-insensitive, surrounding blanks ignored).
    pub fn from_name(name: &str) -> Option<Tier> {
        let name = name.trim();
        Tier::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(name))
    }

    /// Converts the numeric value (`Tier as u8`) back, for C callers.
    pub fn from_u8(x: u8) -> Option<Tier> {
        Tier::ALL.into_iter().find(|t| *t as u8 == x)
    }

    /// Whether this build and this CPU can run the tier.
    pub fn is_available(self) -> bool {
        match self {
            Tier::Scalar | Tier::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Tier::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
            #[cfg(not(target_arch = "x86_64"))]
            Tier::Avx2 => false,
            Tier::Avx512 => false,
        }
    }

    /// The fastest available tier.
    pub fn best() -> Tier {
        Tier::ALL
            .into_iter()
            .rev()
            .find(|t| t.is_available())
            .unwrap_or(Tier::Scalar)
    }

    /// `Ok(self)` if available, else an error naming the tier.
    pub fn check(self) -> Result<Tier, Error> {
        if self.is_available() {
            Ok(self)
        } else {
            Err(Error::Unsupported(format!(
                "SIMD tier {} is not available in this build or on this CPU (available: {})",
                self.name(),
                available_names()
            )))
        }
    }
}

impl std::fmt::Display for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

fn available_names() -> String {
    let names: Vec<&str> = Tier::ALL
        .into_iter()
        .filter(|t| t.is_available())
        .map(Tier::name)
        .collect();
    names.join(", ")
}

/// The process-wide default tier; 0 until first use.
static DEFAULT_TIER: AtomicU8 = AtomicU8::new(0);

/// What `FLATOPT_SIMD` asks for, if anything: `Ok(None)` when unset or `auto`.
pub fn tier_from_env() -> Result<Option<Tier>, Error> {
    match std::env::var("FLATOPT_SIMD") {
        Err(_) => Ok(None),
        Ok(v) if v.trim().is_empty() || v.trim().eq_ignore_ascii_case("auto") => Ok(None),
        Ok(v) => match Tier::from_name(&v) {
            Some(t) => t.check().map(Some),
            None => Err(Error::invalid(
                "FLATOPT_SIMD",
                v,
                "must be one of auto, scalar, portable, avx2, avx512",
            )),
        },
    }
}

/// The tier new optimizers and the stateless kernels use: detected once and cached. On first
/// use `FLATOPT_SIMD` is honoured if it names an available tier; an unknown or unavailable value
/// falls back to the best tier (query [`tier_from_env`] to see why).
pub fn default_tier() -> Tier {
    if let Some(t) = Tier::from_u8(DEFAULT_TIER.load(Ordering::Relaxed)) {
        return t;
    }
    let t = match tier_from_env() {
        Ok(Some(t)) => t,
        _ => Tier::best(),
    };
    // A racing first call computes the same value, so a plain store is enough.
    DEFAULT_TIER.store(t as u8, Ordering::Relaxed);
    t
}

/// Forces the process-wide default tier (affects optimizers created afterwards and the stateless
/// kernels). Fails, changing nothing, if the tier is not available.
pub fn set_default_tier(t: Tier) -> Result<(), Error> {
    t.check()?;
    DEFAULT_TIER.store(t as u8, Ordering::Relaxed);
    Ok(())
}
