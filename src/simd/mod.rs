//! SIMD tiers: the vector abstraction every kernel is written over (`Vf32`), one module per
//! instruction set that implements it and exports a table of the kernels compiled for it
//! (`Kernels`), and the one dispatch point that maps a [`Tier`] to its table, detected once.
//!
//! Dependencies point one way: `vector.rs` (the trait) <- `crate::kernels`' generic kernels
//! <- the tier modules (`scalar.rs`, `portable.rs`, `avx2.rs`, `avx512.rs`: a `Vf32`
//! implementation and a table each) <- this file's dispatch (`Tier::kernels`) <- the stateless
//! entry points and the engine. A tier module knows nothing of who calls its table.
//!
//! A kernel is written once, generic over `Vf32`, and marked `#[inline(always)]`; a tier whose
//! instructions must be detected at run time stamps it into `#[target_feature]` functions
//! (`table!`) and hands its table out only after detection. The scalar tier is the same kernel
//! with `f32` as a one-lane vector, so it is the reference by construction.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

use crate::error::Error;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod fpmode;
pub(crate) mod half;
mod portable;
mod scalar;
mod table;
mod vector;
#[cfg(all(target_arch = "x86_64", not(miri)))]
mod x86;

pub use fpmode::FpMode;
pub(crate) use table::Kernels;
pub(crate) use vector::{Vf32, Vu32, SUMSQ_LANES};

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
    /// AVX-512F through `core::arch` intrinsics on 512-bit registers (x86_64 only, detected at
    /// run time).
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
        self.detect().is_some()
    }

    /// The tier's table if this build has it and this CPU can run it: the one place that knows
    /// which tiers exist on which architectures. Each tier module's `table()` detects its
    /// instructions (a cached load in `std`).
    fn detect(self) -> Option<&'static Kernels> {
        match self {
            Tier::Scalar => Some(scalar::table()),
            Tier::Portable => Some(portable::table()),
            #[cfg(target_arch = "x86_64")]
            Tier::Avx2 => avx2::table(),
            #[cfg(target_arch = "x86_64")]
            Tier::Avx512 => avx512::table(),
            #[cfg(not(target_arch = "x86_64"))]
            Tier::Avx2 | Tier::Avx512 => None,
        }
    }

    /// The kernels that run this tier: its own table if available, else the best available
    /// tier's (all tiers give the same bits, so a tier the CPU lacks still computes the right
    /// result). Resolved once per process; afterwards one load and an index.
    pub(crate) fn kernels(self) -> &'static Kernels {
        static TABLES: OnceLock<[&'static Kernels; 4]> = OnceLock::new();
        let tables = TABLES.get_or_init(|| {
            let best = Tier::best().detect().unwrap_or(scalar::table());
            Tier::ALL.map(|t| t.detect().unwrap_or(best))
        });
        // `Tier::ALL` lists the tiers in the order of their numbers, 1 to 4.
        let table = tables[self as usize - 1];
        debug_assert!(table.tier == self || !self.is_available());
        table
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

#[cfg(test)]
mod tests {
    use super::Tier;

    /// An available tier runs its own table; one the CPU lacks runs the best tier's.
    #[test]
    fn each_tier_resolves_to_the_table_that_runs_it() {
        for t in Tier::ALL {
            let want = if t.is_available() { t } else { Tier::best() };
            assert_eq!(t.kernels().tier, want, "{t}");
        }
    }
}
