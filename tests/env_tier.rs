//! `FLATOPT_SIMD` selects the process-wide default tier on first use.
//!
//! The default is cached once per process, so each setting is checked in a fresh process: the
//! test re-runs its own binary (`std::env::current_exe`) with `FLATOPT_SIMD` set and
//! `FLATOPT_TEST_CHILD` naming a child mode; the child test `child_report` then prints what it
//! saw, one `key=value` line each, and the parent checks them.

use std::collections::HashMap;
use std::process::Command;

use flatopt::simd::tier_from_env;
use flatopt::{default_tier, set_default_tier, Base, Config, Error, Optimizer, Tier};

const CHILD_VAR: &str = "FLATOPT_TEST_CHILD";
const PREFIX: &str = "flatopt-child:";

/// The first tier this CPU cannot run, if any.
fn unavailable() -> Option<Tier> {
    Tier::ALL.into_iter().find(|t| !t.is_available())
}

fn describe(r: &Result<Option<Tier>, Error>) -> String {
    match r {
        Ok(None) => "none".to_string(),
        Ok(Some(t)) => format!("tier {t}"),
        Err(Error::InvalidArgument { name, .. }) => format!("invalid {name}"),
        Err(Error::Unsupported(_)) => "unsupported".to_string(),
        Err(e) => format!("other error {e:?}"),
    }
}

/// Child side: does nothing unless launched by the parent tests below.
#[test]
fn child_report() {
    let Ok(mode) = std::env::var(CHILD_VAR) else {
        return;
    };
    let mut out = Vec::new();
    // Query the environment first, before anything could have cached a tier.
    out.push(("env".to_string(), describe(&tier_from_env())));
    out.push(("default".to_string(), default_tier().name().to_string()));
    let opt = Optimizer::new(Config::new(Base::adam(), 1e-3)).unwrap();
    out.push(("optimizer".to_string(), opt.tier().name().to_string()));
    if mode == "set" {
        let before = default_tier();
        // A tier this CPU lacks, if there is one (all four run on an AVX-512 machine).
        if let Some(t) = unavailable() {
            let r = set_default_tier(t);
            out.push((
                "set_unavailable".to_string(),
                match r {
                    Err(Error::Unsupported(m)) if m.contains(t.name()) => "unsupported".to_string(),
                    other => format!("{other:?}"),
                },
            ));
        }
        out.push((
            "after_unavailable".to_string(),
            default_tier().name().to_string(),
        ));
        assert_eq!(default_tier(), before);
        set_default_tier(Tier::Scalar).unwrap();
        out.push((
            "after_scalar".to_string(),
            default_tier().name().to_string(),
        ));
        let opt = Optimizer::new(Config::new(Base::adam(), 1e-3)).unwrap();
        out.push(("optimizer_after".to_string(), opt.tier().name().to_string()));
    }
    for (k, v) in out {
        println!("{PREFIX}{k}={v}");
    }
}

/// Runs the child with `FLATOPT_SIMD` set to `value` (or unset) and returns its report.
fn child(value: Option<&str>, mode: &str) -> HashMap<String, String> {
    let exe = std::env::current_exe().expect("current_exe");
    let mut cmd = Command::new(exe);
    cmd.args(["child_report", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_VAR, mode);
    match value {
        Some(v) => cmd.env("FLATOPT_SIMD", v),
        None => cmd.env_remove("FLATOPT_SIMD"),
    };
    let out = cmd.output().expect("run the child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed for {value:?}: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let report: HashMap<String, String> = stdout
        .lines()
        // The harness may print its "test child_report ... " on the same line as the first report.
        .filter_map(|l| l.find(PREFIX).map(|i| &l[i + PREFIX.len()..]))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert!(
        ["env", "default", "optimizer"]
            .iter()
            .all(|k| report.contains_key(*k)),
        "no report from the child for {value:?}:\n{stdout}"
    );
    report
}

#[test]
fn forced_tiers_are_honoured() {
    let mut checked = 0;
    for t in Tier::ALL {
        // Case and surrounding blanks do not matter.
        for value in [
            t.name().to_string(),
            format!(" {} ", t.name().to_uppercase()),
        ] {
            let r = child(Some(&value), "plain");
            if t.is_available() {
                assert_eq!(r["env"], format!("tier {}", t.name()), "{value:?}");
                assert_eq!(r["default"], t.name(), "{value:?}");
                assert_eq!(r["optimizer"], t.name(), "{value:?}");
                checked += 1;
            } else {
                // Named but unavailable: reported, and the best tier is used.
                assert_eq!(r["env"], "unsupported", "{value:?}");
                assert_eq!(r["default"], Tier::best().name(), "{value:?}");
            }
        }
    }
    // scalar and portable everywhere, avx2 and avx512 where the CPU has them.
    let available = Tier::ALL.iter().filter(|t| t.is_available()).count();
    assert!(available >= 2);
    assert_eq!(checked, 2 * available);
}

#[test]
fn unset_or_auto_gives_the_best_tier() {
    for value in [None, Some("auto"), Some("AUTO"), Some(""), Some("  ")] {
        let r = child(value, "plain");
        assert_eq!(r["env"], "none", "{value:?}");
        assert_eq!(r["default"], Tier::best().name(), "{value:?}");
        assert_eq!(r["optimizer"], Tier::best().name(), "{value:?}");
    }
}

#[test]
fn bogus_value_falls_back_to_best_and_is_reported() {
    for value in ["bogus", "avx3", "sse2", "scalar,avx2"] {
        let r = child(Some(value), "plain");
        assert_eq!(r["env"], "invalid FLATOPT_SIMD", "{value:?}");
        assert_eq!(r["default"], Tier::best().name(), "{value:?}");
        assert_eq!(r["optimizer"], Tier::best().name(), "{value:?}");
    }
}

/// In a child forced to `portable`: setting a tier the CPU lacks (where there is one) fails and
/// changes nothing; setting scalar works and new optimizers follow it.
#[test]
fn set_default_tier_in_a_child() {
    let r = child(Some("portable"), "set");
    assert_eq!(r["default"], "portable");
    match unavailable() {
        Some(_) => assert_eq!(r["set_unavailable"], "unsupported"),
        None => eprintln!("every SIMD tier is available here: no unavailable tier to set"),
    }
    assert_eq!(r["after_unavailable"], "portable");
    assert_eq!(r["after_scalar"], "scalar");
    assert_eq!(r["optimizer_after"], "scalar");
}

/// In this process: an unavailable tier (where there is one) is refused and the default does not
/// change.
#[test]
fn set_unavailable_default_tier_changes_nothing() {
    let before = default_tier();
    match unavailable() {
        Some(t) => match set_default_tier(t) {
            Err(Error::Unsupported(msg)) => assert!(msg.contains(t.name()), "{msg}"),
            other => panic!("set_default_tier({t}) gave {other:?}"),
        },
        None => eprintln!("every SIMD tier is available here: nothing to refuse"),
    }
    assert_eq!(default_tier(), before);
    // Setting the current default again is accepted and changes nothing.
    set_default_tier(before).unwrap();
    assert_eq!(default_tier(), before);
}
