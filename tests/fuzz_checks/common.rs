//! What the targets share: digests of an optimizer's whole observable state, comparisons
//! modulo NaN patterns, and buffer helpers.

use flatopt::{Config, Error, Optimizer, Outcome};

/// Everything observable about an optimizer and its parameters, as 32-bit words.
pub fn digest(opt: &Optimizer, params: &[Vec<f32>]) -> Vec<u32> {
    let mut out = vec![
        opt.step_count() as u32,
        (opt.step_count() >> 32) as u32,
        opt.skipped_count() as u32,
        (opt.skipped_count() >> 32) as u32,
        opt.schedule_state().count() as u32,
        opt.current_lr().to_bits(),
    ];
    for (i, p) in params.iter().enumerate() {
        out.extend(p.iter().map(|x| x.to_bits()));
        let (m, v, x) = opt.moments(i).expect("registered buffer");
        for a in [m, v, x, opt.slow_weights(i).unwrap_or_default()] {
            out.push(a.len() as u32);
            out.extend(a.iter().map(|x| x.to_bits()));
        }
    }
    out
}

pub fn is_nan_bits(x: u32) -> bool {
    f32::from_bits(x).is_nan()
}

/// Equal bits, except that any NaN equals any NaN (which NaN comes out when two different NaNs
/// meet may differ by tier; positions may not).
pub fn assert_same_modulo_nan(a: &[u32], b: &[u32], ctx: &str) {
    assert_eq!(a.len(), b.len(), "{ctx}: digest length");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        if x != y && !(is_nan_bits(*x) && is_nan_bits(*y)) {
            panic!(
                "{ctx}: word {i} differs: {x:#010x} ({}) vs {y:#010x} ({})",
                f32::from_bits(*x),
                f32::from_bits(*y)
            );
        }
    }
}

/// An outcome as comparable data (Outcome's f32 field makes NaN unequal to itself).
pub fn outcome_key(r: &Result<Outcome, Error>) -> String {
    match r {
        Ok(Outcome::Applied { step, synced }) => format!("applied {step} {synced}"),
        Ok(Outcome::Skipped {
            buffer,
            index,
            value,
        }) => format!("skipped {buffer} {index} {:#x}", value.to_bits()),
        Err(Error::NonFinite {
            buffer,
            index,
            value,
        }) => format!("nonfinite {buffer} {index} {:#x}", value.to_bits()),
        Err(e) => format!("error {e}"),
    }
}

pub fn refs(p: &mut [Vec<f32>]) -> Vec<&mut [f32]> {
    p.iter_mut().map(|x| x.as_mut_slice()).collect()
}

pub fn crefs(p: &[Vec<f32>]) -> Vec<&[f32]> {
    p.iter().map(|x| x.as_slice()).collect()
}

pub fn registered(cfg: &Config, params: &[Vec<f32>]) -> Optimizer {
    let mut opt = Optimizer::new(cfg.clone()).expect("valid configuration");
    opt.register(&crefs(params)).expect("register");
    opt
}

pub fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}
