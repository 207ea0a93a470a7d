//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) through the same check functions
//! as the cargo-fuzz targets (`tests/fuzz_checks/`), on stable Rust, as part of `cargo test`. A
//! file that once crashed a target stays in the corpus as `crash-<what>` and keeps being checked
//! here (`scripts/fuzz.sh` leaves those out of its runs so that known crashes are not counted
//! again). The published crate carries the checks but not the corpus: there the corpus tests
//! skip, with a note.
//!
//! Regenerate the seed inputs with
//! `cargo test --test fuzz_corpus -- --ignored write_seed_corpus` (then let `scripts/fuzz.sh`
//! grow and minimise the corpus).

#[path = "fuzz_checks/mod.rs"]
mod checks;
mod common;

use std::path::PathBuf;

use flatopt::engine::GroupOptions;
use flatopt::Optimizer;

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join("corpus")
        .join(target)
}

/// The corpus directory of `target`, or `None` (with a printed note) where it is absent.
fn corpus(target: &str) -> Option<PathBuf> {
    common::repository_file(&format!("fuzz/corpus/{target}"))
}

/// Runs `target`'s check on every file of its corpus, in name order; reports every failing file.
fn replay(target: &str) {
    let Some(dir) = corpus(target) else { return };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{}: empty corpus", dir.display());
    let start = std::time::Instant::now();
    let mut failed = Vec::new();
    for f in &files {
        let data = std::fs::read(f).unwrap_or_else(|e| panic!("reading {}: {e}", f.display()));
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        if std::panic::catch_unwind(|| checks::check(target, &data)).is_err() {
            failed.push(name);
        }
    }
    println!(
        "fuzz corpus {target}: {} inputs replayed in {:.2} s, {} failed",
        files.len(),
        start.elapsed().as_secs_f64(),
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "{target}: {} corpus inputs fail their check (reproduce one with \
         `cargo +nightly fuzz run {target} fuzz/corpus/{target}/<file>` from the repository root): \
         {failed:?}",
        failed.len()
    );
}

#[test]
fn checkpoint_load_corpus() {
    replay("checkpoint_load");
}

#[test]
fn config_corpus() {
    replay("config");
}

#[test]
fn step_corpus() {
    replay("step");
}

#[test]
fn checkpoint_values_corpus() {
    replay("checkpoint_values");
}

#[test]
fn split_order_corpus() {
    replay("split_order");
}

/// Every seed passes its check (the seeds are also part of the committed corpus).
#[test]
fn seeds_pass() {
    for target in checks::TARGETS {
        for seed in checks::seeds::seeds(target) {
            checks::check(target, &seed);
        }
    }
}

/// Writes the seed inputs of every target to `fuzz/corpus/<target>/seed-<n>`.
#[test]
#[ignore = "writes files: run by hand to regenerate the seeds"]
fn write_seed_corpus() {
    for target in checks::TARGETS {
        let dir = corpus_dir(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (i, seed) in checks::seeds::seeds(target).iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i:03}")), seed).unwrap();
        }
    }
}

/// The checkpoint seeds were written by an earlier version of the library: the checkpoints
/// made today are the same bytes (the configuration encoding follows the catalogs' declaration
/// order, which must not change), except the library version in the header and the checksum.
#[test]
fn checkpoint_bytes_are_unchanged() {
    let Some(dir) = corpus("checkpoint_load") else {
        return;
    };
    for (i, seed) in checks::seeds::seeds("checkpoint_load").iter().enumerate() {
        let path = dir.join(format!("seed-{i:03}"));
        let committed = std::fs::read(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        assert_eq!(committed.len(), seed.len(), "{path:?}: length");
        // One selector byte, then the checkpoint: its bytes 24..28 hold the library version,
        // the last 4 its CRC.
        let masked = |b: &[u8]| {
            let mut b = b.to_vec();
            let n = b.len();
            if n > 36 {
                b[1 + 24..1 + 28].fill(0);
                b[n - 4..].fill(0);
            }
            b
        };
        assert!(
            masked(&committed) == masked(seed),
            "{path:?}: the checkpoint encoding changed"
        );
    }
}

/// Format-1 checkpoints committed before parameter groups existed (the seeds of the checkpoint
/// target) load into an optimizer of one group, re-save to the same bytes, and are refused by
/// one with more groups, which they leave unchanged.
#[test]
fn format_1_checkpoints_still_load() {
    let Some(dir) = corpus("checkpoint_load") else {
        return;
    };
    let seed = std::fs::read(dir.join("seed-000")).unwrap();
    // One selector byte (configuration 0 of the checkpoint target), then the checkpoint.
    assert_eq!(seed[0], 0);
    let bytes = &seed[1..];
    assert_eq!(bytes[8..12], 1u32.to_le_bytes(), "a format-1 checkpoint");
    let (cfg, lens) = checks::checkpoint_load::checkpoint_configs().swap_remove(0);
    let params: Vec<Vec<f32>> = lens
        .iter()
        .zip([0.5f32, 0.25])
        .map(|(&n, x)| vec![x; n])
        .collect();
    let refs: Vec<&[f32]> = params.iter().map(Vec::as_slice).collect();
    let mut o = Optimizer::new(cfg.clone()).unwrap();
    o.register(&refs).unwrap();
    o.set_group_lr(0, Some(0.5)).unwrap();
    o.load(bytes).unwrap();
    assert_eq!(
        o.groups()[0].lr(),
        None,
        "format 1: group 0 is the configuration"
    );
    // The same bytes are what this library writes for it.
    let n = bytes.len();
    assert_eq!(
        o.save()[32..n - 4],
        bytes[32..n - 4],
        "re-saved format 1 differs"
    );

    let mut more = Optimizer::new(cfg).unwrap();
    more.add_group(GroupOptions::default()).unwrap();
    more.register(&refs).unwrap();
    let before = more.save();
    let err = more.load(bytes).unwrap_err();
    assert!(err.to_string().contains("parameter groups"), "{err}");
    assert_eq!(more.save(), before);
}
