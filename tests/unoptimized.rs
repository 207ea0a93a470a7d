//! Every fused entry point runs on a thread with a small stack, on every tier, bit for bit the
//! scalar tier.
//!
//! Written for unoptimized builds: a Rust dependent's debug build compiles flatopt at
//! opt-level 0, where the tiers' fused entry points once needed 8.6 MB of stack (every rule's
//! specialized loop copies inlined into one function, none of their stack slots shared) and
//! crashed on the first step. `make test-rust` runs this file in the `unoptimized` profile
//! (opt-level 0) besides the optimized test profile; `build.rs` then turns specialization off.
//! The stack below is smaller than any common thread's default (glibc 8 MiB, Rust 2 MiB, the
//! JVM and .NET 1 MiB or more).

mod common;

use common::{bases, bits, precisions, trust_bases, Rng};
use flatopt::kernels::{self, Grad, Half, ParamCopy};
use flatopt::{Base, Config, Optimizer, Tier};

/// The stack every check runs on.
const STACK: usize = 1 << 20;

/// Buffer lengths: a vector body with a tail, and one shorter than an AVX-512 vector.
const LENS: [usize; 2] = [1000, 13];

/// Runs `f` on a thread with a [`STACK`]-byte stack (a stack overflow aborts the test binary).
fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(STACK)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap()
}

/// Every pipeline step on: clipping by norm and value, coupled decay, Lookahead syncing at
/// step 2.
fn everything(c: Config) -> Config {
    c.lookahead(2, 0.5)
        .clip_norm(1.0)
        .clip_value(0.2)
        .weight_decay(0.01)
}

/// Parameters and decoded state after three steps of `cfg` on `tier`; 16-bit gradients and
/// copies when `half` is given; 2-D shapes for Adafactor.
fn run(cfg: &Config, tier: Tier, half: Option<Half>) -> Vec<Vec<u32>> {
    let mut rng = Rng(5);
    let mut params: Vec<Vec<f32>> = LENS.iter().map(|&n| rng.vec(n, 1.0)).collect();
    let mut o = Optimizer::new(cfg.clone().tier(tier)).unwrap();
    let views: Vec<&[f32]> = params.iter().map(|p| &p[..]).collect();
    o.register_shaped(&views, &[Some((25, 40)), None]).unwrap();
    let mut out = Vec::new();
    for _ in 0..3 {
        let grads: Vec<Vec<f32>> = LENS.iter().map(|&n| rng.vec(n, 0.3)).collect();
        let mut ps: Vec<&mut [f32]> = params.iter_mut().map(|p| &mut p[..]).collect();
        match half {
            None => {
                let gs: Vec<&[f32]> = grads.iter().map(|g| &g[..]).collect();
                o.step(&mut ps, &gs).unwrap();
            }
            Some(half) => {
                let hs: Vec<Vec<u16>> = grads
                    .iter()
                    .map(|g| {
                        let mut h = vec![0; g.len()];
                        kernels::narrow_from_f32(Tier::Scalar, half, g, &mut h).unwrap();
                        h
                    })
                    .collect();
                let gs: Vec<Grad<'_>> = hs
                    .iter()
                    .map(|h| match half {
                        Half::Bf16 => Grad::Bf16(h),
                        Half::F16 => Grad::F16(h),
                    })
                    .collect();
                let mut copies: Vec<Vec<u16>> = LENS.iter().map(|&n| vec![0; n]).collect();
                let mut cs: Vec<Option<ParamCopy<'_>>> = copies
                    .iter_mut()
                    .map(|c| Some(ParamCopy { half, out: c }))
                    .collect();
                o.step_mixed(&mut ps, &gs, &mut cs, Some(8.0)).unwrap();
                out.extend(copies.iter().map(|c| c.iter().map(|&x| x as u32).collect()));
            }
        }
    }
    let (m, v, vm) = cfg.base.state_used();
    // Adafactor's factored moments have lengths of their own; its parameters depend on them.
    let factored = matches!(cfg.base, Base::Adafactor { .. });
    for (i, &n) in LENS.iter().enumerate().filter(|_| !factored) {
        let mut x = [m, v, vm, true].map(|used| vec![0.0; if used { n } else { 0 }]);
        let [a, b, c, slow] = &mut x;
        o.moments_f32(i, [a, b, c]).unwrap();
        o.slow_weights_f32(i, slow).unwrap();
        out.extend(x.iter().map(|x| bits(x)));
    }
    out.extend(params.iter().map(|p| bits(p)));
    out
}

/// Runs `cfg` on every available tier on a small stack and compares with the scalar tier;
/// returns the number of tiers compared.
fn check(name: String, cfg: Config, half: Option<Half>) -> usize {
    on_small_stack(move || {
        let want = run(&cfg, Tier::Scalar, half);
        let mut tiers = 0;
        for tier in Tier::ALL {
            if tier != Tier::Scalar && tier.is_available() {
                assert!(run(&cfg, tier, half) == want, "{name} on {tier}");
                tiers += 1;
            }
        }
        tiers
    })
}

fn rules() -> Vec<(String, Base, f64)> {
    let mut rows: Vec<(String, Base, f64)> = bases()
        .into_iter()
        .chain(trust_bases())
        .map(|(n, b, lr)| (n.to_string(), b, lr))
        .collect();
    rows.push(("adafactor".into(), Base::adafactor(), 1e-2));
    rows
}

/// The f32 fused pass of every rule (with per-buffer norms and factored moments too).
#[test]
fn every_rule_on_a_small_stack() {
    let mut tiers = 0;
    for (name, base, lr) in rules() {
        tiers += check(name, everything(Config::new(base, lr)), None);
    }
    eprintln!("{} rules, {tiers} tier comparisons", rules().len());
}

/// Compressed state (bf16 moments rounded stochastically, 8-bit blocks) for every rule that
/// holds it.
#[test]
fn compressed_state_on_a_small_stack() {
    let mut rows = 0;
    for (name, base, lr) in rules() {
        for (pname, p) in precisions() {
            let cfg = p(everything(Config::new(base, lr)));
            if Optimizer::new(cfg.clone()).is_err() {
                // Rprop refuses int8, Adafactor compressed state (tests/state.rs and
                // tests/adafactor.rs check the refusals).
                assert!(
                    matches!(base, Base::Rprop { .. } | Base::Adafactor { .. }),
                    "{name}/{pname} refused"
                );
                continue;
            }
            check(format!("{name}/{pname}"), cfg, None);
            rows += 1;
        }
    }
    assert!(rows >= 100, "{rows} rows");
}

/// Mixed precision: 16-bit gradients, loss scale and copies (the fused mixed loop of the Adam
/// family, the chunked path of the others).
#[test]
fn mixed_precision_on_a_small_stack() {
    for (name, base, lr) in rules() {
        for half in [Half::Bf16, Half::F16] {
            check(
                format!("{name}/{half:?}"),
                everything(Config::new(base, lr)),
                Some(half),
            );
        }
    }
}
