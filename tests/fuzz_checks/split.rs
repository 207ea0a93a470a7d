//! Target 5: the order of a split update's calls. A sequence of begin / apply a range / finish /
//! update calls, in any order, on the Rust API and on the C ABI (begin_step, step_range,
//! end_step, step) of two optimizers of one configuration. Checks, against a model of which
//! elements the begun update has applied (the oracle of this target): a range is refused
//! exactly when it overlaps an applied one or no update is begun, a finish exactly unless every
//! element was applied once, a begin or a plain update exactly while an update is partly applied;
//! a refused call changes nothing; the C ABI gives the same answers; after every accepted finish
//! or update the parameters are the bits of the same number of plain updates.

use flatopt::ffi::flatopt_status::{self, *};
use flatopt::ffi::*;
use flatopt::{Base, Config, Error, Step};

use super::c_api::Handle;
use super::common::{bits, crefs, refs, registered};
use super::generate::to_c;
use super::input::Input;

/// The configurations: every base rule and state array.
fn configs() -> Vec<Config> {
    vec![
        Config::new(Base::adam(), 1e-2)
            .lookahead(2, 0.5)
            .clip_norm(1.0),
        Config::new(Base::momentum(0.9, true), 0.05),
        Config::new(Base::radam(), 1e-2).weight_decay(0.01),
        Config::new(Base::sgd(), 0.1),
    ]
}

/// What a call is expected to do.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Want {
    Ok,
    State,
    Overlap,
    Length,
}

fn want_of(r: &Result<(), Error>) -> Want {
    match r {
        Ok(()) => Want::Ok,
        Err(Error::InvalidState(_)) => Want::State,
        Err(Error::Overlap { .. }) => Want::Overlap,
        Err(Error::LengthMismatch { .. }) => Want::Length,
        Err(e) => panic!("unexpected error {e:?}"),
    }
}

fn want_of_c(st: flatopt_status) -> Want {
    match st {
        FLATOPT_OK => Want::Ok,
        FLATOPT_ERR_INVALID_STATE => Want::State,
        FLATOPT_ERR_OVERLAP => Want::Overlap,
        FLATOPT_ERR_LENGTH_MISMATCH => Want::Length,
        other => panic!("unexpected status {other:?}"),
    }
}

/// Input: configuration, 1-3 buffer lengths (0..=40), then calls, two bytes each.
pub fn check_split_order(data: &[u8]) {
    let mut inp = Input::new(data);
    let cfgs = configs();
    let cfg = cfgs[inp.u8() as usize % cfgs.len()].clone();
    let nbuf = 1 + inp.u8() as usize % 3;
    let lens: Vec<usize> = (0..nbuf).map(|_| inp.u8() as usize % 41).collect();
    let total: usize = lens.iter().sum();
    let starts: Vec<usize> = lens
        .iter()
        .scan(0, |at, &n| {
            let s = *at;
            *at += n;
            Some(s)
        })
        .collect();
    let init: Vec<Vec<f32>> = lens
        .iter()
        .enumerate()
        .map(|(b, &n)| {
            (0..n)
                .map(|i| ((b * 7 + i * 3) % 13) as f32 * 0.1 - 0.6)
                .collect()
        })
        .collect();
    let grads: Vec<Vec<f32>> = lens
        .iter()
        .enumerate()
        .map(|(b, &n)| {
            (0..n)
                .map(|i| ((b * 5 + i * 11) % 7) as f32 * 0.05 - 0.15)
                .collect()
        })
        .collect();

    let mut params = init.clone();
    let mut opt = registered(&cfg, &params);
    let mut c = to_c(&cfg).expect("expressible in C");
    let h = Handle::new(&mut c);
    let mut cparams = init.clone();
    for (p, g) in cparams.iter_mut().zip(&grads) {
        // SAFETY: live handle; buffers that outlive it and are not moved.
        let st = unsafe { flatopt_optimizer_add_param(h.0, p.as_mut_ptr(), g.as_ptr(), p.len()) };
        assert_eq!(st, FLATOPT_OK);
    }
    // Plain updates of a twin: snapshots[k] holds the parameters after k updates.
    let mut twin = init.clone();
    let mut twin_opt = registered(&cfg, &twin);
    let mut snapshots = vec![twin.clone()];
    let mut after = |k: usize| -> Vec<Vec<u32>> {
        while snapshots.len() <= k {
            twin_opt.step(&mut refs(&mut twin), &crefs(&grads)).unwrap();
            snapshots.push(twin.clone());
        }
        snapshots[k].iter().map(|p| bits(p)).collect()
    };
    let all_bits = |p: &[Vec<f32>]| -> Vec<Vec<u32>> { p.iter().map(|x| bits(x)).collect() };

    // The models: the begun update and its applied elements, for Rust and for C (the C handle
    // also refuses a second begin_step or a plain step while any step is pending).
    let (mut begun, mut applied, mut updates): (Option<Step>, Vec<bool>, usize) =
        (None, vec![false; total], 0);
    let (mut c_begun, mut c_applied, mut c_updates) = (false, vec![false; total], 0);
    for _ in 0..24 {
        if inp.rest().is_empty() {
            break;
        }
        let (op, arg) = (inp.u8() % 4, inp.u8());
        let partly = begun.is_some() && applied.iter().any(|&a| a);
        let snapshot = (opt.save(), all_bits(&params));
        let (r, model, st, c_model) = match op {
            0 => {
                let r = opt.begin_step(&crefs(&grads)).map(|b| {
                    begun = b.ok();
                    applied.iter_mut().for_each(|a| *a = false);
                });
                // SAFETY: a live handle.
                let st = unsafe { flatopt_optimizer_begin_step(h.0) };
                let c_model = if c_begun { Want::State } else { Want::Ok };
                if st == FLATOPT_OK {
                    c_begun = true;
                    c_applied.iter_mut().for_each(|a| *a = false);
                }
                let model = if partly { Want::State } else { Want::Ok };
                (r, model, st, c_model)
            }
            1 => {
                // [a, b) of one buffer through Rust, the same elements through C.
                let k = arg as usize % nbuf;
                let n = lens[k];
                let a = (arg as usize / 3) % (n + 1);
                let b = a + inp.u8() as usize % (n - a + 1);
                let (ga, gb) = (starts[k] + a, starts[k] + b);
                let model = match begun {
                    None => Want::State,
                    Some(_) if applied[ga..gb].iter().any(|&x| x) => Want::Overlap,
                    Some(_) => Want::Ok,
                };
                let r = match begun {
                    None => Err(Error::InvalidState("no update begun")),
                    Some(step) => {
                        let st = opt.states_mut().nth(k).unwrap();
                        let (_, rest) = st.split_at(a);
                        let (st, _) = rest.split_at(b - a);
                        step.apply(&mut params[k][a..b], &grads[k][a..b], st)
                    }
                };
                if r.is_ok() {
                    applied[ga..gb].iter_mut().for_each(|x| *x = true);
                }
                let c_model = if !c_begun {
                    Want::State
                } else if c_applied[ga..gb].iter().any(|&x| x) {
                    Want::Overlap
                } else {
                    Want::Ok
                };
                // SAFETY: a live handle; the range lies inside the registered elements.
                let st = unsafe { flatopt_optimizer_step_range(h.0, ga, gb) };
                if st == FLATOPT_OK {
                    c_applied[ga..gb].iter_mut().for_each(|x| *x = true);
                }
                (r, model, st, c_model)
            }
            2 => {
                let model = match begun {
                    None => Want::State,
                    Some(_) if applied.iter().all(|&x| x) => Want::Ok,
                    Some(_) => Want::Length,
                };
                let r = match begun {
                    None => Err(Error::InvalidState("no update begun")),
                    Some(step) => opt.end_step(step),
                };
                if r.is_ok() {
                    begun = None;
                    updates += 1;
                }
                let c_model = match c_begun {
                    false => Want::State,
                    true if c_applied.iter().all(|&x| x) => Want::Ok,
                    true => Want::Length,
                };
                // SAFETY: a live handle.
                let st = unsafe { flatopt_optimizer_end_step(h.0) };
                if st == FLATOPT_OK {
                    c_begun = false;
                    c_updates += 1;
                }
                (r, model, st, c_model)
            }
            _ => {
                let model = if partly { Want::State } else { Want::Ok };
                let r = opt.step(&mut refs(&mut params), &crefs(&grads)).map(|_| ());
                if r.is_ok() {
                    begun = None;
                    updates += 1;
                }
                // SAFETY: a live handle.
                let st = unsafe { flatopt_optimizer_step(h.0) };
                let c_model = if c_begun { Want::State } else { Want::Ok };
                if st == FLATOPT_OK {
                    c_updates += 1;
                }
                (r, model, st, c_model)
            }
        };
        let got = want_of(&r);
        assert_eq!(got, model, "Rust call {op} ({arg}): {r:?}");
        assert_eq!(want_of_c(st), c_model, "C call {op} ({arg}): {st:?}");
        if got != Want::Ok {
            assert!(
                (opt.save(), all_bits(&params)) == snapshot,
                "a refused Rust call changed something"
            );
        }
        if got == Want::Ok && op >= 2 {
            assert_eq!(
                all_bits(&params),
                after(updates),
                "Rust after {updates} updates"
            );
        }
        if want_of_c(st) == Want::Ok && op >= 2 {
            assert_eq!(
                all_bits(&cparams),
                after(c_updates),
                "C after {c_updates} updates"
            );
        }
    }
}

/// Seeds: the happy path, a range twice, a finish too early, update while partly applied.
pub fn seeds() -> Vec<Vec<u8>> {
    vec![
        vec![0, 1, 20, 0, 0, 1, 0, 40, 2, 0],
        vec![1, 2, 10, 5, 0, 0, 1, 0, 10, 1, 0, 10, 1, 1, 5, 2, 0],
        vec![2, 1, 30, 0, 0, 1, 3, 9, 2, 0, 3, 0, 1, 0, 90, 2, 0],
        vec![3, 3, 7, 0, 9, 0, 0, 0, 0, 3, 0, 1, 0, 7, 2, 0, 3, 0],
    ]
}
