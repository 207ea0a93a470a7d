//! The harness of the rules with per-buffer reductions (`tests/norms.rs`: LAMB, LARS,
//! NovoGrad; `tests/adafactor.rs`): random data, an optimizer over buffers with optional 2-D
//! shapes, a run recording every step's parameters, and the checks both files make the same
//! way (the f64 model's tolerance, every tier and thread count bit for bit, the stateless
//! kernel against the engine).

use super::bits;
use super::Rng;
use flatopt::kernels::{self, Buffers, Plan};
use flatopt::{Base, Config, Optimizer, Outcome, Tier};

/// A buffer's registered 2-D shape, if any.
pub type Shape = Option<(usize, usize)>;

/// Every step's parameters of every buffer.
pub type Trajectory<T> = Vec<Vec<Vec<T>>>;

/// Parameters of `sizes` and `steps` steps of gradients (each step's own scale), from `seed`.
pub fn data(sizes: &[usize], steps: usize, seed: u64) -> (Vec<Vec<f32>>, Trajectory<f32>) {
    let mut r = Rng(seed);
    let params = sizes
        .iter()
        .map(|&n| (0..n).map(|_| r.normal(1.0)).collect())
        .collect();
    let grads = (0..steps)
        .map(|_| {
            let s = r.range(0.02, 0.5);
            sizes
                .iter()
                .map(|&n| (0..n).map(|_| r.normal(s)).collect())
                .collect()
        })
        .collect();
    (params, grads)
}

/// An optimizer of `cfg` over `ps`, buffer `k` registered with `shapes[k]`.
pub fn optimizer(cfg: Config, ps: &[Vec<f32>], shapes: &[Shape]) -> Optimizer {
    let mut o = Optimizer::new(cfg).unwrap();
    o.register_shaped(&ps.iter().map(|p| p.as_slice()).collect::<Vec<_>>(), shapes)
        .unwrap();
    o
}

/// One step of `o` over `ps` with gradients `g`.
pub fn step(o: &mut Optimizer, ps: &mut [Vec<f32>], g: &[Vec<f32>]) -> Outcome {
    let gr: Vec<&[f32]> = g.iter().map(|x| x.as_slice()).collect();
    let mut pr: Vec<&mut [f32]> = ps.iter_mut().map(|p| p.as_mut_slice()).collect();
    o.step(&mut pr, &gr).unwrap()
}

/// Runs `cfg` over the data (buffer `k` with `shapes[k]`); the parameters after every step.
pub fn run(
    cfg: Config,
    shapes: &[Shape],
    params: &[Vec<f32>],
    grads: &[Vec<Vec<f32>>],
) -> Trajectory<f32> {
    let mut ps: Vec<Vec<f32>> = params.to_vec();
    let mut o = optimizer(cfg, &ps, shapes);
    let mut out = Vec::new();
    for g in grads {
        assert!(matches!(step(&mut o, &mut ps, g), Outcome::Applied { .. }));
        out.push(ps.clone());
    }
    out
}

/// The engine's trajectory `got` within 1e-4 (relative, plus 1e-5 absolute) of the f64
/// model's `want` at every step and element; `label` names the row.
pub fn within_model(label: &str, shapes: &[Shape], got: &Trajectory<f32>, want: &Trajectory<f64>) {
    for (t, (a, b)) in got.iter().zip(want).enumerate() {
        for (k, (x, y)) in a.iter().zip(b).enumerate() {
            for (i, (&x, &y)) in x.iter().zip(y).enumerate() {
                let err = (f64::from(x) - y).abs();
                assert!(
                    err <= 1e-5 + 1e-4 * y.abs(),
                    "{label}: step {} buffer {k} {:?}[{i}]: {x} vs model {y}",
                    t + 1,
                    shapes[k]
                );
            }
        }
    }
}

/// Every available tier with 1, 2 and 3 threads gives the bits of `cfg` on the scalar tier on
/// one thread.
pub fn tiers_and_threads_agree(
    label: &str,
    cfg: &Config,
    shapes: &[Shape],
    params: &[Vec<f32>],
    grads: &[Vec<Vec<f32>>],
) {
    let want = run(cfg.clone().tier(Tier::Scalar), shapes, params, grads);
    for tier in Tier::ALL.into_iter().filter(|t| t.is_available()) {
        for threads in [1, 2, 3] {
            let got = run(
                cfg.clone().tier(tier).threads(threads),
                shapes,
                params,
                grads,
            );
            for (a, b) in got.iter().zip(&want) {
                for (x, y) in a.iter().zip(b) {
                    assert!(
                        bits(x) == bits(y),
                        "{label} on {tier:?} with {threads} threads"
                    );
                }
            }
        }
    }
}

/// The stateless kernel over one buffer (no shape; the caller's state arrays, as the rule
/// uses them) gives the engine's bits at every step.
pub fn stateless_is_the_engine(label: &str, base: Base, lr: f64, p0: &[f32], grads: &[Vec<f32>]) {
    let cfg = Config::new(base, lr).tier(Tier::Scalar);
    let per_step: Vec<Vec<Vec<f32>>> = grads.iter().map(|g| vec![g.clone()]).collect();
    let want = run(cfg, &[None], &[p0.to_vec()], &per_step);
    let mut p = p0.to_vec();
    let n = p.len();
    let (uses_m, uses_v, _) = base.state_used();
    let sized = |used: bool| if used { vec![0.0; n] } else { vec![] };
    let (mut m, mut v, mut vm, mut slow) = (sized(uses_m), sized(uses_v), vec![], vec![]);
    for (t, g) in grads.iter().enumerate() {
        let plan = Plan {
            clip_scale: None,
            clip_value: None,
            weight_decay: None,
            rule: kernels::Rule::for_step(&base, t as u64 + 1, lr),
            sync_alpha: None,
        };
        let b = Buffers {
            param: &mut p,
            grad: g,
            m: &mut m,
            v: &mut v,
            v_max: &mut vm,
            slow: &mut slow,
        };
        kernels::apply(Tier::Scalar, &plan, b).unwrap();
        assert_eq!(bits(&p), bits(&want[t][0]), "{label}: step {}", t + 1);
    }
}
