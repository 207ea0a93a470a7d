//! Golden trajectories: every case of `tests/data/braintools-0.4.0-dev.json` (recorded from
//! braintools 0.4.0 `Lookahead` over optax 0.2.8, float32, eager; format in docs/numerics.md,
//! "The golden file") replayed through [`flatopt::Optimizer`].
//!
//! Checked, for every case:
//! - at every step, every parameter element: `|ours - ref| <= 1e-5 + 1e-5*|ref|`;
//! - at the end, the slow weights against `slow_final` (same tolerance);
//! - before every update, `current_lr()` against `lr_per_step[t]` (relative 1e-7);
//! - every update returns `Applied { step: t, synced }` with `synced` exactly on `sync_steps`,
//!   and after a sync the params are bit-equal to the slow weights (docs/numerics.md,
//!   "Lookahead");
//! - every available SIMD tier and 1 and 2 threads give bit-identical trajectories.
//!
//! The golden buffers are small (at most 1171 elements in total), below
//! `PARALLEL_MIN_ELEMENTS`, so a 2-thread optimizer would run them on the caller's thread. To
//! exercise the threaded passes with this data too, every tier and thread count is also run with
//! an extra padding buffer registered last (big enough to cross the threshold) whose gradient is
//! all zeros: zeros add exactly 0.0 to the global sum of squares and the update is elementwise,
//! so the golden buffers must come out bit-identical to the unpadded runs.
//!
//! Mapping of the recorded configuration (docs/numerics.md, "Differences from braintools, optax and
//! PyTorch"): the Lookahead-level `lookahead_lr` is ignored by braintools, so it is not applied
//! here; the learning rate is the base optimizer's (`scheduled_sgd`: `Schedule::Exponential`
//! advanced once per update, the default `ScheduleMode::PerUpdate`). Hyperparameters are passed as
//! the f64 values of their JSON numbers, as a user would write them; data floats (init, grads,
//! params, slow weights, learning rates) are parsed as f32 from their decimal text.

// `common::pipelines` returns a tuple with a fn type that trips clippy::type_complexity;
// common/mod.rs is not ours to edit.
#[allow(clippy::type_complexity)]
mod common;

use std::collections::BTreeSet;
use std::fmt::Write as _;

use flatopt::{Base, Config, Optimizer, Outcome, Schedule, Tier};
use serde_json::Value;

const GOLDEN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/braintools-0.4.0-dev.json"
);
const ATOL: f64 = 1e-5;
const RTOL: f64 = 1e-5;
const LR_RTOL: f64 = 1e-7;
/// Elements of the zero-gradient padding buffer: above `flatopt::engine::PARALLEL_MIN_ELEMENTS`
/// on its own, and spanning several parallel grains.
const PAD_LEN: usize = flatopt::engine::PARALLEL_MIN_ELEMENTS + 77;
/// Failure messages kept for the final report (all are counted).
const MAX_MESSAGES: usize = 40;

// ---------------------------------------------------------------------------------------------
// Parsing

/// A data float: a JSON string or number holding the shortest decimal of an f32 (the file has
/// them as JSON numbers). Numbers are re-read from their shortest f64 text (exactly the file's
/// decimal, which has at most 9 significant digits) so that the decimal is rounded to f32 once,
/// not via f64. With `strict`, checks that the decimal is the shortest one of its f32.
fn f32_of(v: &Value, what: &str, strict: bool) -> f32 {
    let text = match v {
        Value::String(s) => s.trim().to_string(),
        Value::Number(n) => n.to_string(),
        other => panic!("{what}: expected a float (string or number), got {other}"),
    };
    let x: f32 = text
        .parse()
        .unwrap_or_else(|e| panic!("{what}: cannot parse {text:?} as f32: {e}"));
    if strict && x.is_finite() {
        // The file promises values that round-trip to f32: the decimal read back must be the
        // shortest decimal of the f32 we made (compared as f64 values, formatting aside).
        let file: f64 = text.parse().unwrap();
        let ours: f64 = x.to_string().parse().unwrap();
        assert_eq!(
            file, ours,
            "{what}: {text:?} is not the shortest decimal of an f32 (nearest f32 prints as {x})"
        );
    }
    x
}

fn f32_list(v: &Value, what: &str, strict: bool) -> Vec<f32> {
    v.as_array()
        .unwrap_or_else(|| panic!("{what}: expected a list, got {v}"))
        .iter()
        .enumerate()
        .map(|(i, x)| f32_of(x, &format!("{what}[{i}]"), strict))
        .collect()
}

/// A hyperparameter: its JSON number as f64 (strings accepted too).
fn f64_of(v: &Value, what: &str) -> f64 {
    match v {
        Value::Number(n) => n.as_f64().unwrap(),
        Value::String(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{what}: cannot parse {s:?}: {e}")),
        other => panic!("{what}: expected a number, got {other}"),
    }
}

/// An optional hyperparameter: absent or null is `None`.
fn opt_f64(obj: &Value, key: &str, what: &str) -> Option<f64> {
    match obj.get(key) {
        None | Some(Value::Null) => None,
        Some(v) => Some(f64_of(v, &format!("{what}.{key}"))),
    }
}

fn req_f64(obj: &Value, key: &str, what: &str) -> f64 {
    opt_f64(obj, key, what).unwrap_or_else(|| panic!("{what}.{key}: missing"))
}

fn u64_of(v: &Value, what: &str) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("{what}: expected an unsigned integer, got {v}"))
}

fn field<'a>(obj: &'a Value, key: &str, what: &str) -> &'a Value {
    obj.get(key)
        .unwrap_or_else(|| panic!("{what}: missing key {key:?}"))
}

/// One recorded case, parsed.
struct Case {
    name: String,
    /// The configuration without tier and threads.
    config: Config,
    /// Buffer names in registration order, and their lengths.
    names: Vec<String>,
    lens: Vec<usize>,
    init: Vec<Vec<f32>>,
    /// `[step][buffer]`.
    grads: Vec<Vec<Vec<f32>>>,
    /// `[step][buffer]`: the params after that step.
    params: Vec<Vec<Vec<f32>>>,
    sync_steps: BTreeSet<u64>,
    lr_per_step: Vec<f32>,
    slow_final: Option<Vec<Vec<f32>>>,
}

impl Case {
    fn steps(&self) -> usize {
        self.grads.len()
    }
    fn elements(&self) -> usize {
        self.lens.iter().sum()
    }
}

/// `[name -> list]` dict in `names` order, each list checked against its length.
fn per_buffer(v: &Value, names: &[String], lens: &[usize], what: &str) -> Vec<Vec<f32>> {
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("{what}: expected a dict of buffers, got a {v}"));
    assert_eq!(
        obj.len(),
        names.len(),
        "{what}: {} buffers, param_order has {}",
        obj.len(),
        names.len()
    );
    names
        .iter()
        .zip(lens)
        .map(|(n, &len)| {
            let w = format!("{what}.{n}");
            let x = f32_list(field(v, n, what), &w, true);
            assert_eq!(x.len(), len, "{w}: length {} but shape says {len}", x.len());
            x
        })
        .collect()
}

fn base_config(base: &Value, what: &str) -> Config {
    let kind = field(base, "kind", what)
        .as_str()
        .unwrap_or_else(|| panic!("{what}.kind: expected a string"));
    let sgd = |base: &Value| Base::Sgd {
        momentum: opt_f64(base, "momentum", what).unwrap_or(0.0),
        dampening: opt_f64(base, "dampening", what).unwrap_or(0.0),
        nesterov: base
            .get("nesterov")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    };
    let eps_root = opt_f64(base, "eps_root", what).unwrap_or(0.0);
    assert_eq!(
        eps_root, 0.0,
        "{what}.eps_root = {eps_root}: flatopt has no eps_root"
    );
    match kind {
        "sgd" => Config::new(sgd(base), req_f64(base, "lr", what)),
        "adam" => Config::new(
            Base::Adam {
                b1: req_f64(base, "b1", what),
                b2: req_f64(base, "b2", what),
                eps: req_f64(base, "eps", what),
                amsgrad: false,
            },
            req_f64(base, "lr", what),
        ),
        "adamw" => Config::new(
            Base::AdamW {
                b1: req_f64(base, "b1", what),
                b2: req_f64(base, "b2", what),
                eps: req_f64(base, "eps", what),
                weight_decay: opt_f64(base, "weight_decay", what)
                    .or_else(|| opt_f64(base, "wd", what))
                    .unwrap_or_else(|| panic!("{what}: adamw without weight_decay")),
            },
            req_f64(base, "lr", what),
        ),
        "scheduled_sgd" => {
            let sw = format!("{what}.schedule");
            let s = field(base, "schedule", what);
            let ty = field(s, "type", &sw).as_str().unwrap_or("");
            assert_eq!(
                ty, "ExponentialLR",
                "{sw}.type: only ExponentialLR is mapped"
            );
            assert!(
                opt_f64(base, "lr", what).is_none(),
                "{what}: both lr and schedule given"
            );
            Config::with_schedule(
                sgd(base),
                Schedule::Exponential {
                    base: req_f64(s, "base_lr", &sw),
                    gamma: req_f64(s, "gamma", &sw),
                },
            )
        }
        other => panic!("{what}.kind = {other:?}: not mapped by this test"),
    }
}

fn parse_case(c: &Value, meta_steps: Option<u64>) -> Case {
    let name = field(c, "name", "case")
        .as_str()
        .expect("case name is a string")
        .to_string();
    let what = name.as_str();
    let cfg = field(c, "config", what);
    let cw = format!("{what}.config");

    let mut config = base_config(field(cfg, "base", &cw), &format!("{cw}.base"));
    if matches!(config.lr, Schedule::Exponential { .. }) {
        let per_update = cfg
            .get("scheduler_step_after_each_update")
            .and_then(Value::as_bool);
        assert_eq!(
            per_update,
            Some(true),
            "{cw}: a schedule that is not stepped after each update is not mapped"
        );
    }
    let sync_period = cfg.get("sync_period").filter(|v| !v.is_null());
    if let Some(k) = sync_period {
        config = config.lookahead(
            u64_of(k, &format!("{cw}.sync_period")),
            req_f64(cfg, "alpha", &cw),
        );
    }
    // `lookahead_lr` is deliberately not read: braintools ignores it (docs/numerics.md).
    let wd = opt_f64(cfg, "weight_decay", &cw).unwrap_or(0.0);
    config = config.weight_decay(wd);
    if let Some(c) = opt_f64(cfg, "grad_clip_norm", &cw) {
        config = config.clip_norm(c);
    }
    if let Some(c) = opt_f64(cfg, "grad_clip_value", &cw) {
        config = config.clip_value(c);
    }

    let names: Vec<String> = field(c, "param_order", what)
        .as_array()
        .expect("param_order is a list")
        .iter()
        .map(|v| v.as_str().expect("buffer names are strings").to_string())
        .collect();
    assert!(!names.is_empty(), "{what}: empty param_order");
    let shapes = field(c, "shapes", what);
    let lens: Vec<usize> = names
        .iter()
        .map(|n| {
            field(shapes, n, "shapes")
                .as_array()
                .expect("a shape is a list")
                .iter()
                .map(|d| u64_of(d, "shape dim") as usize)
                .product()
        })
        .collect();

    let init = per_buffer(
        field(c, "init", what),
        &names,
        &lens,
        &format!("{what}.init"),
    );
    let steps_of = |key: &str| -> Vec<Vec<Vec<f32>>> {
        field(c, key, what)
            .as_array()
            .unwrap_or_else(|| panic!("{what}.{key}: expected a list of steps"))
            .iter()
            .enumerate()
            .map(|(t, s)| per_buffer(s, &names, &lens, &format!("{what}.{key}[{t}]")))
            .collect()
    };
    let grads = steps_of("grads");
    let params = steps_of("params");
    // Recorded as Python floats (f64: e.g. 0.1*0.95**4 = 0.081450625, whose nearest f32 prints
    // as 0.081450626), not as f32 shortest decimals: rounded to f32 here, without the check.
    let lr_per_step = f32_list(
        field(c, "lr_per_step", what),
        &format!("{what}.lr_per_step"),
        false,
    );
    let sync_steps: BTreeSet<u64> = field(c, "sync_steps", what)
        .as_array()
        .expect("sync_steps is a list")
        .iter()
        .map(|v| u64_of(v, "sync step"))
        .collect();
    let slow_final = match c.get("slow_final") {
        None | Some(Value::Null) => None,
        Some(v) => Some(per_buffer(v, &names, &lens, &format!("{what}.slow_final"))),
    };

    let steps = grads.len();
    assert!(steps > 0, "{what}: no steps");
    if let Some(s) = cfg.get("steps").filter(|v| !v.is_null()) {
        assert_eq!(steps as u64, u64_of(s, "config.steps"), "{what}: grads");
    }
    if let Some(s) = meta_steps {
        assert_eq!(steps as u64, s, "{what}: grads vs meta.steps");
    }
    assert_eq!(params.len(), steps, "{what}: params vs grads steps");
    assert_eq!(lr_per_step.len(), steps, "{what}: lr_per_step vs steps");
    assert_eq!(
        slow_final.is_some(),
        config.lookahead.is_some(),
        "{what}: slow_final present iff Lookahead configured"
    );
    if config.lookahead.is_none() {
        assert!(
            sync_steps.is_empty(),
            "{what}: sync steps without Lookahead"
        );
    }

    Case {
        name,
        config,
        names,
        lens,
        init,
        grads,
        params,
        sync_steps,
        lr_per_step,
        slow_final,
    }
}

fn load() -> (Vec<Case>, usize, Option<u64>) {
    let text = std::fs::read_to_string(GOLDEN).unwrap_or_else(|e| panic!("{GOLDEN}: {e}"));
    let root: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{GOLDEN}: {e}"));
    let meta_steps = root
        .get("meta")
        .and_then(|m| m.get("steps"))
        .and_then(Value::as_u64);
    let cases = root
        .get("cases")
        .and_then(Value::as_array)
        .expect("the golden file has a `cases` list");
    let parsed: Vec<Case> = cases.iter().map(|c| parse_case(c, meta_steps)).collect();
    (parsed, cases.len(), meta_steps)
}

// ---------------------------------------------------------------------------------------------
// Replay

/// One run of a case on one tier / thread count.
struct Run {
    label: String,
    /// `[step]`: bits of every golden buffer after that step, concatenated in registration order.
    params: Vec<Vec<u32>>,
    /// `[step]`: what `update` returned, and `current_lr()` before it.
    outcomes: Vec<Outcome>,
    lrs: Vec<f32>,
    /// `[step]`: for sync steps, whether the params were bit-equal to the slow weights.
    synced_equal: Vec<Option<bool>>,
    /// Bits of the final slow weights, concatenated (empty without Lookahead).
    slow: Vec<u32>,
}

fn replay(case: &Case, tier: Tier, threads: usize, pad: bool) -> Run {
    let label = format!(
        "tier={} threads={threads}{}",
        tier.name(),
        if pad { " +pad" } else { "" }
    );
    let cfg = case.config.clone().tier(tier).threads(threads);
    let mut opt = Optimizer::new(cfg).unwrap_or_else(|e| panic!("{} {label}: {e}", case.name));
    let mut bufs: Vec<Vec<f32>> = case.init.clone();
    let n = bufs.len();
    let zeros = vec![0.0f32; if pad { PAD_LEN } else { 0 }];
    if pad {
        let mut rng = common::Rng(0x5EED ^ case.elements() as u64);
        bufs.push(rng.vec(PAD_LEN, 1.0));
    }
    {
        let views: Vec<&[f32]> = bufs.iter().map(Vec::as_slice).collect();
        opt.register(&views)
            .unwrap_or_else(|e| panic!("{} {label}: register: {e}", case.name));
    }
    let mut run = Run {
        label,
        params: Vec::new(),
        outcomes: Vec::new(),
        lrs: Vec::new(),
        synced_equal: Vec::new(),
        slow: Vec::new(),
    };
    for grads in &case.grads {
        run.lrs.push(opt.current_lr());
        let mut gviews: Vec<&[f32]> = grads.iter().map(Vec::as_slice).collect();
        if pad {
            gviews.push(&zeros);
        }
        let out = {
            let mut pviews: Vec<&mut [f32]> = bufs.iter_mut().map(Vec::as_mut_slice).collect();
            opt.step(&mut pviews, &gviews)
                .unwrap_or_else(|e| panic!("{} {}: update: {e}", case.name, run.label))
        };
        let synced = matches!(out, Outcome::Applied { synced: true, .. });
        run.synced_equal.push(synced.then(|| {
            (0..n).all(|i| opt.slow_weights(i).map(common::bits) == Some(common::bits(&bufs[i])))
        }));
        run.outcomes.push(out);
        run.params
            .push(bufs[..n].iter().flat_map(|b| common::bits(b)).collect());
    }
    if case.config.lookahead.is_some() {
        for i in 0..n {
            let s = opt
                .slow_weights(i)
                .unwrap_or_else(|| panic!("{} {}: no slow weights {i}", case.name, run.label));
            run.slow.extend(common::bits(s));
        }
    } else {
        assert!(opt.slow_weights(0).is_none());
    }
    run
}

// ---------------------------------------------------------------------------------------------
// Checks

/// Worst error of a case against the reference.
#[derive(Default)]
struct Worst {
    abs: f64,
    ratio: f64,
    /// Where the worst ratio is: "step 7 p3[12]" or "slow p3[12]".
    at: String,
    checked: usize,
}

struct Report {
    failures: usize,
    messages: Vec<String>,
}

impl Report {
    fn fail(&mut self, msg: String) {
        self.failures += 1;
        if self.messages.len() < MAX_MESSAGES {
            self.messages.push(msg);
        }
    }
}

/// Compares concatenated `ours` bits with the reference buffers, elementwise.
fn compare(
    case: &Case,
    label: &str,
    place: &str,
    ours: &[u32],
    reference: &[Vec<f32>],
    worst: &mut Worst,
    report: &mut Report,
) {
    let mut off = 0;
    for (b, refb) in reference.iter().enumerate() {
        for (i, &r) in refb.iter().enumerate() {
            let o = f32::from_bits(ours[off + i]);
            let (of, rf) = (o as f64, r as f64);
            let err = (of - rf).abs();
            let tol = ATOL + RTOL * rf.abs();
            let ratio = if err.is_nan() {
                f64::INFINITY
            } else {
                err / tol
            };
            worst.checked += 1;
            if ratio > worst.ratio || (worst.at.is_empty() && ratio == 0.0) {
                worst.ratio = ratio;
                worst.at = format!("{place} {}[{i}]", case.names[b]);
            }
            if err.is_nan() || err > worst.abs {
                worst.abs = if err.is_nan() { f64::INFINITY } else { err };
            }
            if err.is_nan() || err > tol {
                report.fail(format!(
                    "{} [{label}] {place} buffer {} index {i}: ours {o:e} ref {r:e} \
                     |diff| {err:.3e} > tol {tol:.3e} ({ratio:.2}x)",
                    case.name, case.names[b]
                ));
            }
        }
        off += refb.len();
    }
    assert_eq!(off, ours.len());
}

/// Checks one run against the recorded reference.
fn check_against_reference(case: &Case, run: &Run, worst: &mut Worst, report: &mut Report) {
    let label = run.label.as_str();
    for t in 0..case.steps() {
        let step = t as u64 + 1;
        let place = format!("step {step}");

        let want_lr = case.lr_per_step[t];
        let got_lr = run.lrs[t];
        let lr_err = (got_lr as f64 - want_lr as f64).abs();
        if lr_err.is_nan() || lr_err > LR_RTOL * (want_lr as f64).abs() {
            report.fail(format!(
                "{} [{label}] {place}: current_lr() {got_lr:e} but lr_per_step {want_lr:e}",
                case.name
            ));
        }

        let want_sync = case.sync_steps.contains(&step);
        let want = Outcome::Applied {
            step,
            synced: want_sync,
        };
        if run.outcomes[t] != want {
            report.fail(format!(
                "{} [{label}] {place}: update returned {:?}, expected {want:?} (sync_steps {:?})",
                case.name, run.outcomes[t], case.sync_steps
            ));
        }
        if run.synced_equal[t] == Some(false) {
            report.fail(format!(
                "{} [{label}] {place}: after a sync the params are not bit-equal to the slow \
                 weights",
                case.name
            ));
        }

        compare(
            case,
            label,
            &place,
            &run.params[t],
            &case.params[t],
            worst,
            report,
        );
    }
    if let Some(slow) = &case.slow_final {
        compare(case, label, "slow_final", &run.slow, slow, worst, report);
    }
}

/// Checks that `run` is bit-identical to `first`, naming the first difference.
fn check_identical(case: &Case, first: &Run, run: &Run, report: &mut Report) {
    let (a, b) = (first.label.as_str(), run.label.as_str());
    let locate = |flat: usize| {
        let mut off = flat;
        for (name, &len) in case.names.iter().zip(&case.lens) {
            if off < len {
                return format!("{name}[{off}]");
            }
            off -= len;
        }
        format!("element {flat}")
    };
    for t in 0..case.steps() {
        if let Some(i) =
            (0..first.params[t].len()).find(|&i| first.params[t][i] != run.params[t][i])
        {
            report.fail(format!(
                "{}: [{b}] differs from [{a}] at step {} {}: {:e} (0x{:08x}) vs {:e} (0x{:08x})",
                case.name,
                t + 1,
                locate(i),
                f32::from_bits(run.params[t][i]),
                run.params[t][i],
                f32::from_bits(first.params[t][i]),
                first.params[t][i],
            ));
            return;
        }
        if first.lrs[t].to_bits() != run.lrs[t].to_bits() || first.outcomes[t] != run.outcomes[t] {
            report.fail(format!(
                "{}: [{b}] differs from [{a}] at step {} in lr or outcome",
                case.name,
                t + 1
            ));
            return;
        }
    }
    if let Some(i) = (0..first.slow.len()).find(|&i| first.slow[i] != run.slow[i]) {
        report.fail(format!(
            "{}: [{b}] slow weights differ from [{a}] at {}: {:e} vs {:e}",
            case.name,
            locate(i),
            f32::from_bits(run.slow[i]),
            f32::from_bits(first.slow[i]),
        ));
    }
}

#[test]
fn braintools_golden_trajectories() {
    let (cases, cases_in_file, meta_steps) = load();
    assert!(cases_in_file > 0, "{GOLDEN}: no cases");
    assert_eq!(cases.len(), cases_in_file);

    let tiers: Vec<Tier> = Tier::ALL.into_iter().filter(|t| t.is_available()).collect();
    assert!(tiers.contains(&Tier::Scalar));
    let mut variants = Vec::new();
    for pad in [false, true] {
        for &tier in &tiers {
            for threads in [1, 2] {
                variants.push((tier, threads, pad));
            }
        }
    }
    let names: Vec<String> = tiers.iter().map(|t| t.name().to_string()).collect();
    println!(
        "golden: {} cases from {GOLDEN}; tiers {}; threads 1 and 2; each also with a \
         {PAD_LEN}-element zero-gradient padding buffer ({} runs per case)",
        cases.len(),
        names.join(", "),
        variants.len()
    );

    let mut report = Report {
        failures: 0,
        messages: Vec::new(),
    };
    let mut table = String::new();
    let _ = writeln!(
        table,
        "{:<22} {:>5} {:>8} {:>12} {:>10}  worst at",
        "case", "steps", "elements", "worst |err|", "err/tol"
    );
    let (mut steps_checked, mut steps_expected) = (0usize, 0usize);
    let mut runs_done = 0usize;
    for case in &cases {
        steps_expected += case.steps();
        let runs: Vec<Run> = variants
            .iter()
            .map(|&(tier, threads, pad)| replay(case, tier, threads, pad))
            .collect();
        runs_done += runs.len();
        let mut worst = Worst::default();
        for run in &runs {
            check_against_reference(case, run, &mut worst, &mut report);
            check_identical(case, &runs[0], run, &mut report);
        }
        let per_run = case.steps() * case.elements()
            + case.slow_final.as_ref().map_or(0, |_| case.elements());
        assert_eq!(worst.checked, per_run * runs.len(), "{}", case.name);
        steps_checked += runs[0].params.len();
        let line = format!(
            "{:<22} {:>5} {:>8} {:>12.3e} {:>10.4}  {}",
            case.name,
            case.steps(),
            case.elements(),
            worst.abs,
            worst.ratio,
            worst.at
        );
        println!("golden: {line}");
        let _ = writeln!(table, "{line}");
    }
    println!("golden summary:\n{table}");

    assert_eq!(steps_checked, steps_expected);
    if let Some(s) = meta_steps {
        assert_eq!(steps_checked as u64, s * cases.len() as u64);
    }
    assert_eq!(runs_done, cases.len() * variants.len());
    assert!(
        report.failures == 0,
        "{} golden check(s) failed; first {}:\n{}",
        report.failures,
        report.messages.len(),
        report.messages.join("\n")
    );
}
