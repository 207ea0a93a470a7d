//! The cost of parameter groups (issue 13): one Adam step over 200 buffers of 1000 elements
//! with every buffer in one group, and with the buffers spread over 3 groups (other learning
//! rates and betas, the same pipeline steps, so that the per-element work is the same),
//! interleaved in one run; medians of the time per step. `cargo
//! bench --bench groups`. Set `GROUPS_BENCH_ONE=1` to time only the one-group case.

use flatopt::{Base, Config, Optimizer};
use std::hint::black_box;
use std::time::Instant;

const BUFFERS: usize = 200;
const LEN: usize = 1000;
const STEPS: usize = 200;
const REPEATS: usize = 21;

fn data(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7 + seed * 13) % 101) as f32 * 0.01 - 0.5)
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn cfg() -> Config {
    Config::new(Base::adam(), 1e-3).clip_norm(1.0)
}

struct Case {
    opt: Optimizer,
    params: Vec<Vec<f32>>,
    grads: Vec<Vec<f32>>,
}

impl Case {
    fn one_group() -> Case {
        let params: Vec<Vec<f32>> = (0..BUFFERS).map(|b| data(LEN, b)).collect();
        let mut opt = Optimizer::new(cfg()).unwrap();
        let refs: Vec<&[f32]> = params.iter().map(Vec::as_slice).collect();
        opt.register(&refs).unwrap();
        Case::with(opt, params)
    }

    fn three_groups() -> Case {
        use flatopt::engine::GroupOptions;
        let params: Vec<Vec<f32>> = (0..BUFFERS).map(|b| data(LEN, b)).collect();
        let mut opt = Optimizer::new(cfg()).unwrap();
        opt.add_group(GroupOptions {
            lr: Some(3e-3),
            weight_decay: Some(0.0),
            base: None,
        })
        .unwrap();
        opt.add_group(GroupOptions {
            lr: Some(1e-4),
            weight_decay: None,
            base: Some(Base::Adam {
                b1: 0.8,
                b2: 0.99,
                eps: 1e-6,
                amsgrad: false,
            }),
        })
        .unwrap();
        let refs: Vec<&[f32]> = params.iter().map(Vec::as_slice).collect();
        let groups: Vec<usize> = (0..BUFFERS).map(|b| b % 3).collect();
        opt.register_in_groups(&refs, &groups).unwrap();
        Case::with(opt, params)
    }

    fn with(opt: Optimizer, params: Vec<Vec<f32>>) -> Case {
        let grads = (0..BUFFERS).map(|b| data(LEN, b + 1000)).collect();
        Case { opt, params, grads }
    }

    /// Nanoseconds per step over `STEPS` steps.
    fn time(&mut self) -> f64 {
        let grads: Vec<&[f32]> = self.grads.iter().map(Vec::as_slice).collect();
        let start = Instant::now();
        for _ in 0..STEPS {
            let mut p: Vec<&mut [f32]> = self.params.iter_mut().map(Vec::as_mut_slice).collect();
            black_box(self.opt.step(&mut p, &grads).unwrap());
        }
        start.elapsed().as_secs_f64() * 1e9 / STEPS as f64
    }
}

fn main() {
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    let mut one = Case::one_group();
    let mut t1 = Vec::new();
    let (mut three, mut t3) = (Case::three_groups(), Vec::new());
    let only_one = std::env::var_os("GROUPS_BENCH_ONE").is_some();
    for _ in 0..REPEATS {
        t1.push(one.time());
        if !only_one {
            t3.push(three.time());
        }
    }
    let m1 = median(t1);
    println!("{BUFFERS} buffers x {LEN}, Adam + clip_norm, 1 thread, medians of {REPEATS} x {STEPS} steps");
    println!("1 group:  {:.0} ns per step", m1);
    if !only_one {
        let m3 = median(t3);
        println!(
            "3 groups: {:.0} ns per step ({:+.0} ns, ratio {:.4})",
            m3,
            m3 - m1,
            m3 / m1
        );
    }
    let _ = only_one;
}
