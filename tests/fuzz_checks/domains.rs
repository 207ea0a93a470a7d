//! Target 4: the value domains of checkpoint state. A checkpoint of one of the fixed
//! configurations (`value_configs`) after a few updates has state values replaced by
//! fuzz-chosen bit patterns (NaN payloads, ±Inf, negative zeros, subnormals, huge values) and
//! its checksum repaired, so that only the value checks stand between the bytes and the state.
//! Checks: loading accepts the checkpoint exactly when every value lies in its domain (an
//! independent restatement of the rules of docs/checkpoint-format.md, the oracle of this
//! target), a refusal names the first bad value and changes nothing, the C ABI and
//! `checkpoint_info` agree with `load`.

use flatopt::ffi::flatopt_status::*;
use flatopt::ffi::status_of;
use flatopt::{Base, Config, Error, NonFinitePolicy};

use super::c_api::Handle;
use super::checkpoint_load::{initial_params, sample_checkpoint_of, value_configs};
use super::common::registered;
use super::generate::to_c;
use super::input::Input;
use super::surgery::fix_length_and_crc;

/// State array bits of the format.
const M: u32 = 1;
const V: u32 = 2;
const V_MAX: u32 = 4;
const SLOW: u32 = 8;

/// Where the state values of a checkpoint are: per buffer, its length, its present bits and the
/// offset of its first array.
fn records(b: &[u8]) -> Vec<(usize, u32, usize)> {
    let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap()) as usize;
    let c = u64_at(32);
    let nbuf_at = 40 + c + 72;
    let mut at = nbuf_at + 8;
    let mut out = Vec::new();
    for _ in 0..u64_at(nbuf_at) {
        let n = u64_at(at);
        let present = u32::from_le_bytes(b[at + 8..at + 12].try_into().unwrap());
        out.push((n, present, at + 16));
        at += 16 + 4 * n * present.count_ones() as usize;
    }
    out
}

fn f32_at(b: &[u8], at: usize) -> f32 {
    f32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// The oracle: the first value outside its domain, as (buffer, array bit, index), if any.
fn first_bad(b: &[u8], cfg: &Config) -> Option<(usize, u32, usize)> {
    let propagate = cfg.nonfinite == NonFinitePolicy::Propagate;
    // Centered RMSprop keeps its gradient average (any value m may hold) in v_max; Adadelta's
    // m is an average of squared updates (never negative).
    let v_max_is_average = matches!(cfg.base, Base::RmsProp { .. });
    let m_is_square = matches!(cfg.base, Base::Adadelta { .. });
    for (buf, (n, present, start)) in records(b).into_iter().enumerate() {
        let slot = |bit: u32| {
            (present & bit != 0)
                .then(|| start + 4 * n * (present & (bit - 1)).count_ones() as usize)
        };
        for bit in [M, V, V_MAX, SLOW] {
            let Some(at) = slot(bit) else { continue };
            for i in 0..n {
                let x = f32_at(b, at + 4 * i);
                // "Not below" holds for NaN on either side (IEEE comparisons are false).
                let not_below = |lo: f32| x.partial_cmp(&lo) != Some(std::cmp::Ordering::Less);
                let ok = match bit {
                    M if m_is_square => not_below(0.0) && (propagate || x.is_finite()),
                    V_MAX if v_max_is_average => propagate || x.is_finite(),
                    M | SLOW => propagate || x.is_finite(),
                    _ => not_below(0.0) && (propagate || !x.is_nan()),
                } && (bit != V_MAX
                    || v_max_is_average
                    || slot(V).is_none_or(|v_at| not_below(f32_at(b, v_at + 4 * i))));
                if !ok {
                    return Some((buf, bit, i));
                }
            }
        }
    }
    None
}

/// Interesting f32 bit patterns for state values.
fn pattern(inp: &mut Input) -> f32 {
    const SPECIAL: [u32; 12] = [
        0x7FC0_0000, // NaN
        0xFFC0_0001, // -NaN with a payload
        0x7F80_0000, // +Inf
        0xFF80_0000, // -Inf
        0x8000_0000, // -0
        0x0000_0001, // smallest subnormal
        0x8000_0001, // its negative
        0x7F7F_FFFF, // largest finite
        0xFF7F_FFFF, // its negative
        0x3F80_0000, // 1
        0xBF80_0000, // -1
        0x0000_0000, // +0
    ];
    let sel = inp.u8();
    if sel < 200 {
        f32::from_bits(SPECIAL[sel as usize % SPECIAL.len()])
    } else {
        f32::from_bits(inp.u32())
    }
}

/// Input: a configuration selector, a step count, then edits (slot, pattern) of state values.
pub fn check_checkpoint_values(data: &[u8]) {
    let mut inp = Input::new(data);
    let configs = value_configs();
    let which = inp.u8() as usize % configs.len();
    let steps = inp.u8() as usize % 8;
    let (cfg, lens) = &configs[which];
    let mut bytes = sample_checkpoint_of(cfg, lens, which, steps, false);
    let slots: Vec<usize> = records(&bytes)
        .into_iter()
        .flat_map(|(n, present, start)| {
            (0..n * present.count_ones() as usize).map(move |k| start + 4 * k)
        })
        .collect();
    if slots.is_empty() {
        return;
    }
    let edits = 1 + inp.u8() as usize % 4;
    for _ in 0..edits {
        let at = slots[inp.u8() as usize % slots.len()];
        bytes[at..at + 4].copy_from_slice(&pattern(&mut inp).to_le_bytes());
    }
    fix_length_and_crc(&mut bytes);

    let params = initial_params(lens, 1);
    let mut opt = registered(cfg, &params);
    let before = opt.save();
    let r = opt.load(&bytes);
    let bad = first_bad(&bytes, cfg);
    match (&r, bad) {
        (Ok(()), None) => {}
        (Err(Error::Corrupt(msg)), Some((buf, _, i))) => {
            assert!(
                msg.contains(&format!("buffer {buf}:")) && msg.contains(&format!("[{i}]")),
                "refusal names another value than buffer {buf} index {i}: {msg}"
            );
            assert_eq!(opt.save(), before, "a refused load changed the optimizer");
        }
        (r, bad) => panic!("load gave {r:?}, the domains say {bad:?} ({cfg:?})"),
    }
    // The same through the C ABI.
    let mut c = to_c(cfg).expect("fixed configurations are expressible in C");
    let handle = Handle::new(&mut c);
    let mut cparams = params.clone();
    handle.register(&mut cparams);
    let want = match &r {
        Ok(()) => FLATOPT_OK,
        Err(e) => status_of(e),
    };
    assert_eq!(handle.load(&bytes), want, "C load status vs Rust {r:?}");
    assert_eq!(handle.save(), opt.save(), "C and Rust state after load");
    // checkpoint_info agrees with load.
    assert_eq!(
        opt.checkpoint_info(&bytes)
            .map(|_| ())
            .map_err(|e| status_of(&e)),
        r.map_err(|e| status_of(&e)),
        "checkpoint_info vs load"
    );
}

/// Seeds: every configuration, a few step counts, one edit each of a special pattern.
pub fn seeds() -> Vec<Vec<u8>> {
    let n = value_configs().len();
    let mut out = Vec::new();
    for which in 0..n {
        for (steps, slot, sel) in [(0, 0, 0), (3, 1, 2), (5, 2, 4), (7, 3, 9), (2, 0, 250)] {
            out.push(vec![
                which as u8,
                steps,
                0,
                slot,
                sel,
                0x80,
                0x00,
                0x00,
                0x7F,
            ]);
        }
    }
    out
}
