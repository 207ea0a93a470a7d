//! Results do not depend on the host thread's floating-point mode (flush-to-zero,
//! denormals-are-zero) nor, through it, on the thread count; the host's mode is restored after
//! every call, an error return and a caught panic.
//!
//! Each row sets a host mode on the test's thread (as `torch.set_flush_denormal(True)` does),
//! runs flatopt on inputs full of subnormals on one tier and thread count, and compares every
//! output bit with the scalar tier on one thread in the default mode. The host mode is set with
//! `ldmxcsr` here, in the test, on x86-64; elsewhere the rows print that they are skipped.

use flatopt::kernels::{self, Buffers, Grad, Half, MixedBuffers, Op, ParamCopy, Plan, Rule};
use flatopt::{Base, Config, Error, NonFinitePolicy, Optimizer, Tier};
use std::hint::black_box;

/// A host floating-point mode: the MXCSR bits it sets on top of the default.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Host {
    Default,
    /// Flush-to-zero: subnormal results become zero.
    Ftz,
    /// Denormals-are-zero: subnormal inputs are read as zero.
    Daz,
    /// Both, as `torch.set_flush_denormal(True)` sets them.
    FtzDaz,
    /// Both, plus rounding toward zero and the invalid-operation exception unmasked (a trap on
    /// NaN-producing operations unless flatopt masks it).
    Hostile,
}

#[cfg(target_arch = "x86_64")]
mod csr {
    use std::arch::asm;

    pub const FTZ: u32 = 1 << 15;
    pub const DAZ: u32 = 1 << 6;
    pub const ROUND_TOWARD_ZERO: u32 = 3 << 13;
    pub const INVALID_MASK: u32 = 1 << 7;
    /// The control bits (everything but the sticky exception flags 0-5).
    pub const CONTROL: u32 = 0xffc0;

    pub fn read() -> u32 {
        let mut x: u32 = 0;
        // SAFETY: `stmxcsr` writes the 4-byte MXCSR to `x`, a live aligned local, and nothing
        // else; SSE is baseline on x86-64.
        unsafe { asm!("stmxcsr [{}]", in(reg) &mut x, options(nostack, preserves_flags)) };
        x
    }

    pub fn write(x: u32) {
        assert_eq!(x & !0xffff, 0, "reserved MXCSR bits");
        // SAFETY: `ldmxcsr` reads 4 bytes from `x`, a live aligned local; the reserved bits are
        // zero (checked above), so it cannot fault. The test changes the mode on purpose, to
        // play a host that did, and restores it (`HostMode`'s drop) before the test ends.
        unsafe { asm!("ldmxcsr [{}]", in(reg) &x, options(nostack, preserves_flags, readonly)) };
    }
}

/// Holds the test's thread in a host mode until dropped.
struct HostMode {
    #[cfg(target_arch = "x86_64")]
    saved: u32,
    /// The control bits the host set (what must be found again after each call).
    #[cfg(target_arch = "x86_64")]
    control: u32,
}

impl HostMode {
    /// Sets `host`, or `None` where this test cannot set modes (it then prints the skip).
    fn set(host: Host) -> Option<HostMode> {
        #[cfg(target_arch = "x86_64")]
        {
            let saved = csr::read();
            let extra = match host {
                Host::Default => 0,
                Host::Ftz => csr::FTZ,
                Host::Daz => csr::DAZ,
                Host::FtzDaz => csr::FTZ | csr::DAZ,
                Host::Hostile => csr::FTZ | csr::DAZ | csr::ROUND_TOWARD_ZERO,
            };
            let mut x = saved | extra;
            if host == Host::Hostile {
                x &= !csr::INVALID_MASK;
            }
            csr::write(x);
            Some(HostMode {
                saved,
                control: x & csr::CONTROL,
            })
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            eprintln!("host mode {host:?}: setting the mode is only tested on x86-64, skipped");
            None
        }
    }

    /// Asserts the host's mode is in place (after a call into flatopt).
    fn assert_kept(&self, what: &str) {
        #[cfg(target_arch = "x86_64")]
        assert_eq!(
            csr::read() & csr::CONTROL,
            self.control,
            "{what}: the host's floating-point mode was not restored"
        );
    }
}

impl Drop for HostMode {
    fn drop(&mut self) {
        #[cfg(target_arch = "x86_64")]
        csr::write(self.saved);
    }
}

/// 2^-130 and its neighbours: subnormal f32, and products of them underflow further.
fn subnormals(n: usize, seed: u32) -> Vec<f32> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(7);
    (0..n)
        .map(|i| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let sign = if x & 1 == 0 { 1.0 } else { -1.0 };
            match i % 4 {
                // Subnormal: a random mantissa below the smallest normal.
                0 | 1 => sign * f32::from_bits((x >> 9) & 0x007f_ffff | 1),
                // Just above the smallest normal: results land in the subnormal range.
                2 => sign * f32::MIN_POSITIVE * (1.0 + (x >> 8) as f32 / (1u32 << 24) as f32),
                _ => sign * ((x >> 8) as f32 / (1u32 << 24) as f32) * 1e-3,
            }
        })
        .collect()
}

/// Above the engine's threshold for using its pool, so two threads really split the work.
const N: usize = flatopt::engine::PARALLEL_MIN_ELEMENTS + 4099;
/// Length of the stateless rows' buffers: vector loops, tails and several sum-of-squares blocks.
const STATELESS_N: usize = 100_003;

fn config(tier: Tier, threads: usize) -> Config {
    Config::new(Base::adamw(), 1e-3)
        .weight_decay(0.5)
        .clip_norm(1e-30)
        .lookahead(2, 0.5)
        .nonfinite(NonFinitePolicy::Skip)
        .tier(tier)
        .threads(threads)
}

/// The inputs, made once in the default mode (the rows only run flatopt in the host's).
fn inputs() -> &'static [Vec<f32>; 7] {
    static I: std::sync::OnceLock<[Vec<f32>; 7]> = std::sync::OnceLock::new();
    I.get_or_init(|| {
        let n = STATELESS_N;
        [
            subnormals(N, 1),
            subnormals(N, 2),
            subnormals(n, 3),
            subnormals(n, 4),
            subnormals(n, 5),
            subnormals(n, 6).iter().map(|x| x.abs()).collect(),
            subnormals(n, 7),
        ]
    })
}

/// Three full updates plus one through begin / apply / finish, then the parameters, the
/// moments and the slow weights, as bits. The optimizer is made inside the host mode, as a host
/// would (a pool's threads start in their creator's mode).
fn run_engine(tier: Tier, threads: usize) -> Vec<u32> {
    let mut p = inputs()[0].clone();
    let g = &inputs()[1];
    let mut opt = Optimizer::new(config(tier, threads)).unwrap();
    opt.register(&[&p]).unwrap();
    for _ in 0..3 {
        opt.step(&mut [&mut p], &[g]).unwrap();
    }
    let step = opt.begin_step(&[g]).unwrap().unwrap();
    let st = opt.states_mut().next().unwrap();
    step.apply(&mut p, g, st).unwrap();
    opt.end_step(step).unwrap();
    let (m, v, _) = opt.moments(0).unwrap();
    let slow = opt.slow_weights(0).unwrap();
    [&p[..], m, v, slow]
        .iter()
        .flat_map(|x| x.iter().map(|v| v.to_bits()))
        .collect()
}

/// Every stateless entry point, one after the other, on subnormal data.
fn run_stateless(tier: Tier) -> Vec<u32> {
    let n = STATELESS_N;
    let [_, _, p, g, m, v, slow] = inputs();
    let (mut p, mut m, mut v, mut slow) = (p.clone(), m.clone(), v.clone(), slow.clone());
    let plan = Plan {
        clip_scale: Some(0.75),
        clip_value: Some(1e-39),
        weight_decay: Some(0.25),
        rule: Rule::for_step(&Base::adam(), 3, 1e-3),
        sync_alpha: Some(0.5),
    };
    let b = Buffers {
        param: &mut p,
        grad: g,
        m: &mut m,
        v: &mut v,
        v_max: &mut [],
        slow: &mut slow,
    };
    kernels::apply(tier, &plan, b).unwrap();
    kernels::apply_op(tier, Op::Scale(0.75), &mut m, &mut []).unwrap();
    kernels::apply_op(tier, Op::ClipValue(1e-39), &mut v, &mut []).unwrap();
    kernels::apply_op(tier, Op::Sync(0.25), &mut p, &mut slow).unwrap();
    let mut partials = vec![0.0; kernels::sumsq_block_count(n)];
    kernels::sum_squares_partials(tier, g, &mut partials).unwrap();
    let total = kernels::sum_squares(tier, &m);
    // The 16-bit conversions and the mixed-precision pass (fp16 gradients divided by a scale
    // that is not a power of two, a bf16 copy written).
    let (mut g16, mut pbf, mut copy) = (vec![0u16; n], vec![0u16; n], vec![0u16; n]);
    kernels::narrow_from_f32(tier, Half::F16, g, &mut g16).unwrap();
    kernels::narrow_from_f32(tier, Half::Bf16, &p, &mut pbf).unwrap();
    let mut wide = vec![0f32; n];
    kernels::widen_to_f32(tier, Half::Bf16, &pbf, &mut wide).unwrap();
    let mixed = MixedBuffers {
        param: &mut p,
        grad: Grad::F16(&g16),
        m: &mut m,
        v: &mut v,
        v_max: &mut [],
        slow: &mut slow,
        copy: Some(ParamCopy {
            half: Half::Bf16,
            out: &mut copy,
        }),
    };
    kernels::apply_mixed(tier, &plan, 3.0, mixed).unwrap();
    let mut out: Vec<u32> = [&p, &m, &v, &slow, &wide]
        .iter()
        .flat_map(|x| x.iter().map(|v| v.to_bits()))
        .collect();
    out.extend(g16.iter().chain(&pbf).chain(&copy).map(|&h| u32::from(h)));
    for x in partials.iter().chain([&total]) {
        let b = x.to_bits();
        out.extend([b as u32, (b >> 32) as u32]);
    }
    out
}

fn reference_engine() -> &'static [u32] {
    static R: std::sync::OnceLock<Vec<u32>> = std::sync::OnceLock::new();
    R.get_or_init(|| run_engine(Tier::Scalar, 1))
}

fn reference_stateless() -> &'static [u32] {
    static R: std::sync::OnceLock<Vec<u32>> = std::sync::OnceLock::new();
    R.get_or_init(|| run_stateless(Tier::Scalar))
}

fn tier_or_skip(tier: Tier) -> bool {
    if !tier.is_available() {
        eprintln!("tier {tier} not available here: skipped");
    }
    tier.is_available()
}

fn first_difference(a: &[u32], b: &[u32]) -> Option<usize> {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).position(|(x, y)| x != y)
}

fn check_engine(tier: Tier, threads: usize, host: Host) {
    if !tier_or_skip(tier) {
        return;
    }
    let want = reference_engine();
    let Some(mode) = HostMode::set(host) else {
        return;
    };
    let got = run_engine(tier, threads);
    mode.assert_kept("engine");
    drop(mode);
    if let Some(i) = first_difference(&got, want) {
        panic!(
            "{tier}, {threads} thread(s), host {host:?}: word {i} is {:#x}, scalar in the \
             default mode gives {:#x}",
            got[i], want[i]
        );
    }
}

fn check_stateless(tier: Tier, host: Host) {
    if !tier_or_skip(tier) {
        return;
    }
    let want = reference_stateless();
    let Some(mode) = HostMode::set(host) else {
        return;
    };
    let got = run_stateless(tier);
    mode.assert_kept("stateless kernels");
    drop(mode);
    if let Some(i) = first_difference(&got, want) {
        panic!(
            "{tier}, host {host:?}: word {i} is {:#x}, scalar in the default mode gives {:#x}",
            got[i], want[i]
        );
    }
}

/// `engine_rows! { name: tier, threads, host; ... }`: one test per row.
macro_rules! engine_rows {
    ($($name:ident: $tier:ident, $threads:expr, $host:ident;)*) => {$(
        #[test]
        fn $name() {
            check_engine(Tier::$tier, $threads, Host::$host);
        }
    )*};
}

engine_rows! {
    engine_scalar_1_default: Scalar, 1, Default;
    engine_scalar_1_ftz: Scalar, 1, Ftz;
    engine_scalar_1_daz: Scalar, 1, Daz;
    engine_scalar_1_ftz_daz: Scalar, 1, FtzDaz;
    engine_scalar_2_ftz_daz: Scalar, 2, FtzDaz;
    engine_scalar_2_hostile: Scalar, 2, Hostile;
    engine_portable_1_default: Portable, 1, Default;
    engine_portable_2_default: Portable, 2, Default;
    engine_portable_1_ftz_daz: Portable, 1, FtzDaz;
    engine_portable_2_ftz_daz: Portable, 2, FtzDaz;
    engine_portable_2_hostile: Portable, 2, Hostile;
    engine_avx2_1_default: Avx2, 1, Default;
    engine_avx2_2_default: Avx2, 2, Default;
    engine_avx2_1_ftz: Avx2, 1, Ftz;
    engine_avx2_1_daz: Avx2, 1, Daz;
    engine_avx2_1_ftz_daz: Avx2, 1, FtzDaz;
    engine_avx2_2_ftz: Avx2, 2, Ftz;
    engine_avx2_2_daz: Avx2, 2, Daz;
    engine_avx2_2_ftz_daz: Avx2, 2, FtzDaz;
    engine_avx2_2_hostile: Avx2, 2, Hostile;
    engine_avx512_1_default: Avx512, 1, Default;
    engine_avx512_2_default: Avx512, 2, Default;
    engine_avx512_1_ftz_daz: Avx512, 1, FtzDaz;
    engine_avx512_2_ftz_daz: Avx512, 2, FtzDaz;
    engine_avx512_2_hostile: Avx512, 2, Hostile;
}

/// `stateless_rows! { name: tier, host; ... }`: one test per row.
macro_rules! stateless_rows {
    ($($name:ident: $tier:ident, $host:ident;)*) => {$(
        #[test]
        fn $name() {
            check_stateless(Tier::$tier, Host::$host);
        }
    )*};
}

stateless_rows! {
    stateless_scalar_ftz: Scalar, Ftz;
    stateless_scalar_daz: Scalar, Daz;
    stateless_scalar_hostile: Scalar, Hostile;
    stateless_portable_default: Portable, Default;
    stateless_portable_ftz_daz: Portable, FtzDaz;
    stateless_avx2_default: Avx2, Default;
    stateless_avx2_ftz: Avx2, Ftz;
    stateless_avx2_daz: Avx2, Daz;
    stateless_avx2_hostile: Avx2, Hostile;
    stateless_avx512_default: Avx512, Default;
    stateless_avx512_ftz_daz: Avx512, FtzDaz;
    stateless_avx512_hostile: Avx512, Hostile;
}

/// The rows above can fail: in the host modes, plain Rust code on the test's thread flushes
/// subnormals, and the subnormal data would change an update computed in those modes.
#[test]
fn host_modes_really_flush() {
    let x = black_box(f32::from_bits(0x0000_1234));
    for host in [Host::Ftz, Host::Daz, Host::FtzDaz, Host::Hostile] {
        let Some(mode) = HostMode::set(host) else {
            return;
        };
        // DAZ reads `x` as zero; FTZ flushes the subnormal result of the multiplication.
        let y = black_box(x * black_box(1.0f32));
        drop(mode);
        assert_eq!(y, 0.0, "{host:?}: {y:e} was not flushed");
    }
    let y = black_box(x * black_box(1.0f32));
    assert_eq!(y, x, "the default mode keeps subnormals");
    let p = subnormals(1000, 1);
    assert!(p.iter().filter(|x| x.is_subnormal()).count() >= 400);
}

/// The host's mode comes back after an error return of each kind of entry point.
#[test]
fn mode_restored_after_errors() {
    let Some(mode) = HostMode::set(Host::FtzDaz) else {
        return;
    };
    let mut p = vec![1.0f32; 10];
    let g = vec![0.5f32; 9];
    let mut opt = Optimizer::new(config(Tier::Scalar, 2)).unwrap();
    opt.register(&[&p]).unwrap();
    assert!(matches!(
        opt.step(&mut [&mut p], &[&g]),
        Err(Error::LengthMismatch { .. })
    ));
    mode.assert_kept("update error");
    assert!(opt.begin_step(&[&g]).is_err());
    mode.assert_kept("begin_step error");
    let plan = Plan {
        clip_scale: None,
        clip_value: None,
        weight_decay: None,
        rule: Rule::Sgd { lr: 0.1 },
        sync_alpha: None,
    };
    let b = Buffers {
        param: &mut p,
        grad: &g,
        m: &mut [],
        v: &mut [],
        v_max: &mut [],
        slow: &mut [],
    };
    assert!(kernels::apply(Tier::Scalar, &plan, b).is_err());
    mode.assert_kept("apply error");
    assert!(kernels::apply_op(Tier::Scalar, Op::Scale(f32::NAN), &mut p, &mut []).is_err());
    mode.assert_kept("apply_op error");
    assert!(kernels::sum_squares_partials(Tier::Scalar, &g, &mut []).is_err());
    mode.assert_kept("sum_squares_partials error");
}

/// The host's mode comes back when a panic unwinds out of an entry point: the host's `find`
/// callback of `begin_step_with_sum_squares` panics in the middle of it.
#[test]
fn mode_restored_after_a_caught_panic() {
    let Some(mode) = HostMode::set(Host::FtzDaz) else {
        return;
    };
    let p = vec![1.0f32; 10];
    let mut opt = Optimizer::new(config(Tier::Scalar, 1)).unwrap();
    opt.register(&[&p]).unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        opt.begin_step_with_sum_squares(Some(f64::NAN), |_| panic!("the host's callback"))
    }));
    assert!(r.is_err(), "the callback's panic was not propagated");
    mode.assert_kept("after a caught panic");
}
