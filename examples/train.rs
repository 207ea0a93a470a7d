//! The main demo (`make demo`): a small two-layer network learns a nonlinear function from
//! noisy samples, trained with Lookahead(Adam), global-norm clipping, weight decay and a
//! warmup-cosine schedule. The host (this program) owns parameters and gradients in flat
//! buffers; flatopt updates them in place.

use flatopt::{Base, Config, Optimizer, Outcome, Schedule};

const INPUTS: usize = 4;
const HIDDEN: usize = 32;
const BATCH: usize = 64;
const STEPS: u64 = 1500;

/// SplitMix64 random numbers, so the demo is the same on every run.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

/// The function to learn.
fn target(x: &[f32; INPUTS]) -> f32 {
    (1.5 * x[0]).sin() + x[1] * x[2] - 0.5 * x[3] * x[3]
}

/// The model's parameters as four flat buffers: W1 (HIDDEN x INPUTS), b1, w2, b2.
struct Model {
    w1: Vec<f32>,
    b1: Vec<f32>,
    w2: Vec<f32>,
    b2: Vec<f32>,
}

impl Model {
    /// Mean squared error over a batch; with `grads`, accumulates d(loss)/d(param) into them.
    fn loss(&self, xs: &[[f32; INPUTS]], ys: &[f32], mut grads: Option<&mut Model>) -> f32 {
        let mut total = 0.0;
        let scale = 1.0 / xs.len() as f32;
        for (x, &y) in xs.iter().zip(ys) {
            let mut h = [0.0f32; HIDDEN];
            for (j, hj) in h.iter_mut().enumerate() {
                let row = &self.w1[j * INPUTS..(j + 1) * INPUTS];
                let z: f32 = row.iter().zip(x).map(|(w, x)| w * x).sum::<f32>() + self.b1[j];
                *hj = z.tanh();
            }
            let out: f32 = h.iter().zip(&self.w2).map(|(h, w)| h * w).sum::<f32>() + self.b2[0];
            let err = out - y;
            total += err * err * scale;
            if let Some(g) = grads.as_deref_mut() {
                let d_out = 2.0 * err * scale;
                g.b2[0] += d_out;
                for (j, &hj) in h.iter().enumerate() {
                    g.w2[j] += d_out * hj;
                    let d_z = d_out * self.w2[j] * (1.0 - hj * hj);
                    g.b1[j] += d_z;
                    for (k, xk) in x.iter().enumerate() {
                        g.w1[j * INPUTS + k] += d_z * xk;
                    }
                }
            }
        }
        total
    }

    fn zero(&mut self) {
        for b in [&mut self.w1, &mut self.b1, &mut self.w2, &mut self.b2] {
            b.fill(0.0);
        }
    }
}

fn batch(rng: &mut Rng, n: usize) -> (Vec<[f32; INPUTS]>, Vec<f32>) {
    let xs: Vec<[f32; INPUTS]> = (0..n)
        .map(|_| [rng.next(), rng.next(), rng.next(), rng.next()])
        .collect();
    let ys = xs.iter().map(|x| target(x) + 0.01 * rng.next()).collect();
    (xs, ys)
}

fn main() -> Result<(), flatopt::Error> {
    let mut rng = Rng(42);
    let mut model = Model {
        w1: (0..HIDDEN * INPUTS).map(|_| 0.5 * rng.next()).collect(),
        b1: vec![0.0; HIDDEN],
        w2: (0..HIDDEN).map(|_| 0.3 * rng.next()).collect(),
        b2: vec![0.0],
    };
    let mut grads = Model {
        w1: vec![0.0; HIDDEN * INPUTS],
        b1: vec![0.0; HIDDEN],
        w2: vec![0.0; HIDDEN],
        b2: vec![0.0],
    };
    let (test_x, test_y) = batch(&mut rng, 1000);

    let schedule = Schedule::WarmupCosine {
        base: 2e-2,
        warmup_steps: 100,
        total_steps: STEPS,
        start_lr: 0.0,
        eta_min: 1e-4,
    };
    let cfg = Config::with_schedule(Base::adam(), schedule)
        .lookahead(5, 0.5)
        .clip_norm(1.0)
        .weight_decay(1e-4);
    let mut opt = Optimizer::new(cfg)?;
    opt.register(&[&model.w1, &model.b1, &model.w2, &model.b2])?;

    println!(
        "flatopt {} demo: Lookahead(Adam) + clip-norm + warmup-cosine, SIMD tier {}",
        env!("CARGO_PKG_VERSION"),
        opt.tier()
    );
    println!(
        "model: {INPUTS}-{HIDDEN}-1 tanh network, {} parameters in 4 buffers",
        { model.w1.len() + model.b1.len() + model.w2.len() + model.b2.len() }
    );
    let first = model.loss(&test_x, &test_y, None);
    println!(
        "{:>6} {:>10} {:>12} {:>12}",
        "step", "lr", "train loss", "test loss"
    );
    println!("{:>6} {:>10} {:>12} {:>12.5}", 0, "-", "-", first);

    let mut train_loss = 0.0;
    for step in 1..=STEPS {
        let (xs, ys) = batch(&mut rng, BATCH);
        grads.zero();
        train_loss += model.loss(&xs, &ys, Some(&mut grads));
        let lr = opt.current_lr();
        let outcome = opt.step(
            &mut [&mut model.w1, &mut model.b1, &mut model.w2, &mut model.b2],
            &[&grads.w1, &grads.b1, &grads.w2, &grads.b2],
        )?;
        if let Outcome::Skipped { buffer, index, .. } = outcome {
            println!("step {step}: skipped (non-finite gradient in buffer {buffer} at {index})");
        }
        if step % 150 == 0 {
            // Evaluate with the slow weights, as Lookahead users do.
            let slow = Model {
                w1: opt.slow_weights(0).unwrap_or_default().to_vec(),
                b1: opt.slow_weights(1).unwrap_or_default().to_vec(),
                w2: opt.slow_weights(2).unwrap_or_default().to_vec(),
                b2: opt.slow_weights(3).unwrap_or_default().to_vec(),
            };
            println!(
                "{:>6} {:>10.2e} {:>12.5} {:>12.5}",
                step,
                lr,
                train_loss / 150.0,
                slow.loss(&test_x, &test_y, None)
            );
            train_loss = 0.0;
        }
    }
    let last = model.loss(&test_x, &test_y, None);
    println!(
        "test loss {first:.4} -> {last:.4} ({:.1}x lower) after {} updates ({} skipped)",
        first / last,
        opt.step_count(),
        opt.skipped_count()
    );
    if last.is_nan() || last >= first / 5.0 {
        eprintln!("the model did not learn: test loss {first} -> {last}");
        std::process::exit(1);
    }
    Ok(())
}
