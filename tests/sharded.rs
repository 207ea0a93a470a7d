//! The two-phase sharded step through the Rust API: shards on block boundaries exchanging
//! block partials step bit-identically with one optimizer over the whole buffer, for every row
//! of the configuration table; bad sums are refused without changing anything.

mod common;

use common::{bits, table, Rng};
use flatopt::kernels::SUMSQ_BLOCK;
use flatopt::{Error, Optimizer, Outcome};

const N: usize = 3 * SUMSQ_BLOCK + 77;
const CUTS: [usize; 4] = [0, SUMSQ_BLOCK, 2 * SUMSQ_BLOCK, N];

#[test]
fn shards_on_block_boundaries_match_one_process_for_every_row() {
    let mut rows = 0;
    for (name, cfg) in table() {
        let mut rng = Rng(3);
        let mut whole_p = rng.vec(N, 1.0);
        let mut shard_p = whole_p.clone();
        let mut whole = Optimizer::new(cfg.clone()).unwrap();
        whole.register(&[&whole_p]).unwrap();
        let mut shards: Vec<Optimizer> = CUTS
            .windows(2)
            .map(|w| {
                let mut o = Optimizer::new(cfg.clone()).unwrap();
                o.register(&[&shard_p[w[0]..w[1]]]).unwrap();
                o
            })
            .collect();
        for t in 0..8 {
            let mut g = rng.vec(N, 0.3);
            if t == 4 {
                g[2 * SUMSQ_BLOCK + 9] = f32::INFINITY; // only the last shard sees it
            }
            let want = whole.step(&mut [&mut whole_p], &[&g]).unwrap();
            // Phase one on every shard, the exchange, the sum in global block order.
            let mut partials = Vec::new();
            for (o, w) in shards.iter().zip(CUTS.windows(2)) {
                let mut part = vec![0.0; o.sum_squares_block_count()];
                o.sum_squares_partials(&[&g[w[0]..w[1]]], &mut part)
                    .unwrap();
                partials.extend(part);
            }
            let sum = partials.iter().fold(0.0, |acc, x| acc + x);
            // Phase two.
            let mut rest: &mut [f32] = &mut shard_p;
            for (o, w) in shards.iter_mut().zip(CUTS.windows(2)) {
                let (mine, tail) = rest.split_at_mut(w[1] - w[0]);
                rest = tail;
                let got = o
                    .step_with_sum_squares(&mut [mine], &[&g[w[0]..w[1]]], sum)
                    .unwrap();
                match (want, got) {
                    (Outcome::Applied { .. }, Outcome::Applied { .. }) => {}
                    (Outcome::Skipped { .. }, Outcome::Skipped { .. }) => {}
                    _ => panic!("{name} step {t}: {want:?} vs {got:?}"),
                }
            }
            assert_eq!(bits(&whole_p), bits(&shard_p), "{name}: step {t}");
        }
        for (o, w) in shards.iter().zip(CUTS.windows(2)) {
            if let Some(s) = o.slow_weights(0) {
                assert_eq!(bits(s), bits(&whole.slow_weights(0).unwrap()[w[0]..w[1]]));
            }
        }
        rows += 1;
    }
    assert_eq!(rows, table().len());
}

#[test]
fn bad_sums_and_partials_are_refused_and_change_nothing() {
    let cfg = flatopt::Config::new(flatopt::Base::adam(), 1.0).clip_norm(1.0);
    let mut p = vec![1.0f32; 100];
    let g = vec![0.5f32; 100];
    let mut o = Optimizer::new(cfg).unwrap();
    o.register(&[&p]).unwrap();
    let before = (o.save(), p.clone());
    let err = o
        .step_with_sum_squares(&mut [&mut p], &[&g], -1.0)
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidArgument {
                name: "sum_squares",
                ..
            }
        ),
        "{err}"
    );
    let mut short = [0.0; 0];
    assert!(matches!(
        o.sum_squares_partials(&[&g], &mut short),
        Err(Error::LengthMismatch { .. })
    ));
    assert!(matches!(
        o.step_with_sum_squares(&mut [&mut p], &[&g[..99]], 1.0),
        Err(Error::LengthMismatch { .. })
    ));
    assert_eq!((o.save(), p.clone()), before);
    // A non-finite sum skips here even though this shard's gradients are finite.
    let out = o
        .step_with_sum_squares(&mut [&mut p], &[&g], f64::NAN)
        .unwrap();
    assert!(
        matches!(
            out,
            Outcome::Skipped {
                buffer: usize::MAX,
                ..
            }
        ),
        "{out:?}"
    );
    assert_eq!(o.skipped_count(), 1);
}
