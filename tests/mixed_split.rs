//! The split step with an explicit loss scale through the C ABI
//! (`flatopt_optimizer_begin_step_scaled`, then `flatopt_optimizer_step_range` on pieces, from
//! one or two threads, and `flatopt_optimizer_end_step`): bit for bit the whole
//! `flatopt_optimizer_step_mixed` with the same scale (parameters, 16-bit copies, checkpoint,
//! counters) and the same status on every step, the skipped ones (a value the division
//! overflows, an fp16 overflow to Inf, a NaN) included; one test per row. Bad scales are refused
//! with nothing begun or changed.

use std::ffi::c_void;

use flatopt::ffi::flatopt_status::{self, *};
use flatopt::ffi::*;
use flatopt::kernels::{self, Half};
use flatopt::{Base, Tier};

const F32: u32 = flatopt_dtype::FLATOPT_DTYPE_F32 as u32;
const BF16: u32 = flatopt_dtype::FLATOPT_DTYPE_BF16 as u32;
const F16: u32 = flatopt_dtype::FLATOPT_DTYPE_F16 as u32;
const SKIP: u32 = flatopt_nonfinite::FLATOPT_NONFINITE_SKIP as u32;
const ERROR: u32 = flatopt_nonfinite::FLATOPT_NONFINITE_ERROR as u32;
const STATE_F32: u32 = flatopt_state_dtype::FLATOPT_STATE_FLOAT32 as u32;
const STATE_BF16: u32 = flatopt_state_dtype::FLATOPT_STATE_BFLOAT16 as u32;

/// One configuration of the comparison.
#[derive(Debug, Clone, Copy)]
struct Row {
    /// The gradients' formats of the two buffers.
    grads: [u32; 2],
    /// Their copies' formats (`F32`: none).
    copies: [u32; 2],
    /// The explicit loss scale (0: none).
    scale: f32,
    /// Written (narrowed to the gradient's format) into element 7 of buffer 1's gradients at
    /// the second of the three steps.
    edge: Option<f32>,
    nonfinite: u32,
    /// `grad_clip_norm` (0: none).
    clip: f64,
    /// `num_threads` of both optimizers and the number of threads applying the ranges.
    threads: u32,
    state_dtype: u32,
}

const BASE: Row = Row {
    grads: [BF16, F16],
    copies: [BF16, F16],
    scale: 1024.0,
    edge: None,
    nonfinite: SKIP,
    clip: 0.0,
    threads: 1,
    state_dtype: STATE_F32,
};

/// A row's owned buffers for one optimizer.
struct Bufs {
    params: Vec<Vec<f32>>,
    grads: Vec<Vec<u32>>, // f32 bits or 16-bit patterns, one u32 per element for alignment
    halves: Vec<Vec<u16>>,
    copies: Vec<Vec<u16>>,
}

fn half_of(dtype: u32) -> Option<Half> {
    match dtype {
        BF16 => Some(Half::Bf16),
        F16 => Some(Half::F16),
        _ => None,
    }
}

fn last_message() -> String {
    // SAFETY: a NUL-terminated string in a thread-local buffer, copied at once.
    unsafe { std::ffi::CStr::from_ptr(flatopt_last_error_message()) }
        .to_string_lossy()
        .into_owned()
}

struct Handle(*mut flatopt_optimizer);

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: a live handle, freed once.
        unsafe { flatopt_optimizer_free(self.0) };
    }
}

// SAFETY (for the threads applying ranges): `flatopt_optimizer_step_range` on disjoint ranges
// of one handle from several threads is the documented contract of the split step.
unsafe impl Sync for Handle {}

fn new_handle(row: &Row) -> Handle {
    // SAFETY: all-zero is a valid value of these plain structs (NULL pointers); init fills them.
    let (mut c, mut b): (flatopt_config, flatopt_base_params) =
        unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
    // SAFETY: writable structs of the sizes passed.
    unsafe {
        assert_eq!(flatopt_config_init(&mut c, size_of_val(&c)), FLATOPT_OK);
        let kind = Base::adam().kind();
        assert_eq!(
            flatopt_base_params_init(&mut b, size_of_val(&b), kind),
            FLATOPT_OK
        );
    }
    c.base = &b;
    c.lr = 1e-2;
    c.weight_decay = 0.01;
    c.nonfinite = row.nonfinite;
    c.grad_clip_norm = row.clip;
    c.num_threads = row.threads;
    c.state_dtype = row.state_dtype;
    c.state_rounding = flatopt_state_rounding::FLATOPT_ROUNDING_NEAREST as u32;
    let mut h = std::ptr::null_mut();
    // SAFETY: a valid config whose base pointer lives for the call; a writable out.
    let st = unsafe { flatopt_optimizer_new(&c, &mut h) };
    assert_eq!(st, FLATOPT_OK, "{}", last_message());
    Handle(h)
}

fn lens(row: &Row) -> [usize; 2] {
    // With two threads, large enough for the whole step's pool to split the passes.
    if row.threads > 1 {
        [700_001, 333]
    } else {
        [4099, 333]
    }
}

/// Deterministic values in [-scale, scale).
fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 23) as f32 - 1.0) * scale
        })
        .collect()
}

fn bufs(row: &Row) -> Bufs {
    let lens = lens(row);
    Bufs {
        params: (0..2)
            .map(|i| values(lens[i], 11 + i as u64, 1.0))
            .collect(),
        grads: lens.iter().map(|&n| vec![0u32; n]).collect(),
        halves: lens.iter().map(|&n| vec![0u16; n]).collect(),
        copies: lens.iter().map(|&n| vec![0u16; n]).collect(),
    }
}

fn register(h: &Handle, row: &Row, b: &mut Bufs) {
    for i in 0..2 {
        let mut o: flatopt_param_options =
            // SAFETY: all-zero is a valid value of this plain struct; init fills it.
            unsafe { std::mem::zeroed() };
        // SAFETY: a writable struct of the size passed.
        assert_eq!(
            unsafe { flatopt_param_options_init(&mut o, size_of_val(&o)) },
            FLATOPT_OK
        );
        o.grad_dtype = row.grads[i];
        let grad: *const c_void = match row.grads[i] {
            F32 => b.grads[i].as_ptr().cast(),
            _ => b.halves[i].as_ptr().cast(),
        };
        if row.copies[i] != F32 {
            o.copy = b.copies[i].as_mut_ptr().cast();
            o.copy_dtype = row.copies[i];
        }
        let p = &mut b.params[i];
        // SAFETY: live handle; buffers of `p.len()` elements of their formats that outlive
        // the handle's use (the caller keeps `b` alive and does not move its heap blocks).
        let st = unsafe {
            flatopt_optimizer_add_param_with_options(h.0, p.as_mut_ptr(), grad, p.len(), &o)
        };
        assert_eq!(st, FLATOPT_OK, "{}", last_message());
    }
}

/// Writes step `t`'s gradients (loss-scaled by the row's scale) into the registered buffers.
fn fill_grads(row: &Row, b: &mut Bufs, t: usize) {
    let scale = if row.scale == 0.0 { 1.0 } else { row.scale };
    for i in 0..2 {
        let mut g = values(
            b.params[i].len(),
            100 + 10 * t as u64 + i as u64,
            0.1 * scale,
        );
        if t == 1 && i == 1 {
            if let Some(e) = row.edge {
                g[7] = e;
            }
        }
        match half_of(row.grads[i]) {
            // In place: the registered pointer stays valid.
            None => b.grads[i]
                .iter_mut()
                .zip(&g)
                .for_each(|(o, x)| *o = x.to_bits()),
            Some(half) => {
                kernels::narrow_from_f32(Tier::Scalar, half, &g, &mut b.halves[i]).unwrap()
            }
        }
    }
}

fn checkpoint(h: &Handle) -> Vec<u8> {
    let mut size = 0;
    // SAFETY: live handle, writable out.
    assert_eq!(
        unsafe { flatopt_optimizer_checkpoint_size(h.0, &mut size) },
        FLATOPT_OK
    );
    let (mut out, mut written) = (vec![0u8; size], 0);
    // SAFETY: live handle, `size` writable bytes, writable out.
    let st = unsafe { flatopt_optimizer_save(h.0, out.as_mut_ptr(), size, &mut written) };
    assert_eq!(st, FLATOPT_OK, "{}", last_message());
    out.truncate(written);
    out
}

fn counters(h: &Handle) -> (u64, u64) {
    let (mut steps, mut skipped) = (0, 0);
    // SAFETY: live handle, writable outs.
    unsafe {
        assert_eq!(flatopt_optimizer_step_count(h.0, &mut steps), FLATOPT_OK);
        assert_eq!(
            flatopt_optimizer_skipped_count(h.0, &mut skipped),
            FLATOPT_OK
        );
    }
    (steps, skipped)
}

/// Applies the begun step of `h` in pieces of uneven lengths, from `threads` threads.
fn apply_ranges(h: &Handle, total: usize, threads: u32) {
    let cuts = [0, total / 3 + 1, total / 2 + 5, total];
    let range = |k: usize| {
        // SAFETY: live handle with a begun step; the pieces are disjoint.
        let st = unsafe { flatopt_optimizer_step_range(h.0, cuts[k], cuts[k + 1]) };
        assert_eq!(st, FLATOPT_OK, "range {k}: {}", last_message());
    };
    if threads > 1 {
        std::thread::scope(|s| {
            s.spawn(|| range(0));
            s.spawn(|| range(2));
            range(1);
        });
    } else {
        (0..3).for_each(range);
    }
}

/// Three steps of the whole `step_mixed` and of the split step with the row's scale.
fn check(row: Row) {
    let (mut wb, mut sb) = (bufs(&row), bufs(&row));
    let (whole, split) = (new_handle(&row), new_handle(&row));
    register(&whole, &row, &mut wb);
    register(&split, &row, &mut sb);
    let total: usize = lens(&row).iter().sum();
    let mut statuses = Vec::new();
    for t in 0..3 {
        fill_grads(&row, &mut wb, t);
        fill_grads(&row, &mut sb, t);
        // SAFETY: live handles; registered buffers alive and untouched during the calls.
        let sw = unsafe { flatopt_optimizer_step_mixed(whole.0, std::ptr::null(), 0, row.scale) };
        let mw = last_message();
        // SAFETY: as above.
        let ss = unsafe { flatopt_optimizer_begin_step_scaled(split.0, row.scale) };
        let ms = last_message();
        assert_eq!(sw, ss, "step {t}: whole {mw:?}, split {ms:?}");
        if sw != FLATOPT_OK {
            assert_eq!(mw, ms, "step {t}: the messages");
        }
        if ss == FLATOPT_OK {
            apply_ranges(&split, total, row.threads);
            // SAFETY: live handle, every element applied once.
            let st = unsafe { flatopt_optimizer_end_step(split.0) };
            assert_eq!(st, FLATOPT_OK, "{}", last_message());
        }
        statuses.push(sw);
        let pb = |b: &Bufs| -> Vec<Vec<u32>> {
            b.params
                .iter()
                .map(|p| p.iter().map(|x| x.to_bits()).collect())
                .collect()
        };
        assert_eq!(pb(&wb), pb(&sb), "step {t}: parameters");
        assert_eq!(wb.copies, sb.copies, "step {t}: copies");
        assert_eq!(counters(&whole), counters(&split), "step {t}: counters");
        assert!(checkpoint(&whole) == checkpoint(&split), "step {t}: state");
    }
    // The row does what it says: an edge row skips (or fails) its second step only.
    let want_second = match (row.edge, row.nonfinite) {
        (None, _) => FLATOPT_OK,
        (Some(_), SKIP) => FLATOPT_SKIPPED,
        (Some(_), _) => FLATOPT_ERR_NON_FINITE,
    };
    assert_eq!(statuses, [FLATOPT_OK, want_second, FLATOPT_OK]);
}

macro_rules! rows {
    ($($name:ident: $row:expr;)*) => {
        $(#[test] fn $name() { check($row); })*
    };
}

rows! {
    bf16_fp16_power_of_two: BASE;
    bf16_fp16_scale_3: Row { scale: 3.0, ..BASE };
    no_scale: Row { scale: 0.0, ..BASE };
    f32_grads_scaled: Row { grads: [F32, F32], copies: [F32, BF16], scale: 0.75, ..BASE };
    clipped: Row { clip: 0.5, ..BASE };
    two_threads: Row { threads: 2, ..BASE };
    two_threads_clipped: Row { threads: 2, clip: 0.5, scale: 5.0, ..BASE };
    bf16_state: Row { state_dtype: STATE_BF16, ..BASE };
    fp16_overflow_skips: Row { edge: Some(1e6), ..BASE };
    fp16_overflow_errors: Row { edge: Some(1e6), nonfinite: ERROR, ..BASE };
    fp16_nan_skips_clipped: Row { edge: Some(f32::NAN), clip: 0.5, ..BASE };
    bf16_division_overflows: Row {
        grads: [F16, BF16], copies: [F16, BF16], scale: 0.5, edge: Some(3.0e38), ..BASE
    };
    f32_division_overflows_two_threads: Row {
        grads: [F32, F32], copies: [F32, F32], scale: 0.25, edge: Some(f32::MAX),
        threads: 2, ..BASE
    };
    bf16_state_overflow: Row { state_dtype: STATE_BF16, edge: Some(1e6), ..BASE };
}

/// A refused begin: the status and a message naming `needle`; nothing begun, nothing changed.
fn refused(row: Row, scaler: bool, scale: f32, want: flatopt_status, needle: &str) {
    let mut b = bufs(&row);
    let h = new_handle(&row);
    register(&h, &row, &mut b);
    if scaler {
        // SAFETY: all-zero is a valid value of this plain struct; init fills it.
        let mut o: flatopt_loss_scaler_options = unsafe { std::mem::zeroed() };
        // SAFETY: writable struct of the size passed; live handle.
        unsafe {
            assert_eq!(
                flatopt_loss_scaler_options_init(&mut o, size_of_val(&o)),
                FLATOPT_OK
            );
            assert_eq!(flatopt_optimizer_set_loss_scaler(h.0, &o), FLATOPT_OK);
        }
    }
    fill_grads(&row, &mut b, 0);
    let before = (checkpoint(&h), b.params.clone(), b.copies.clone());
    // SAFETY: live handle, registered buffers alive.
    let st = unsafe { flatopt_optimizer_begin_step_scaled(h.0, scale) };
    assert_eq!(st, want, "{}", last_message());
    assert!(last_message().contains(needle), "{}", last_message());
    // Nothing begun: a range is refused and a whole step runs.
    // SAFETY: live handle.
    let st = unsafe { flatopt_optimizer_step_range(h.0, 0, 1) };
    assert_eq!(st, FLATOPT_ERR_INVALID_STATE);
    assert!(before == (checkpoint(&h), b.params.clone(), b.copies.clone()));
    // SAFETY: live handle, registered buffers alive.
    let st = unsafe { flatopt_optimizer_step_mixed(h.0, std::ptr::null(), 0, 0.0) };
    assert_eq!(st, FLATOPT_OK, "{}", last_message());
}

macro_rules! refusals {
    ($($name:ident: $scaler:expr, $scale:expr, $want:expr, $needle:expr;)*) => {
        $(#[test] fn $name() { refused(BASE, $scaler, $scale, $want, $needle); })*
    };
}

refusals! {
    refused_scale_nan: false, f32::NAN, FLATOPT_ERR_INVALID_ARGUMENT, "grad_scale";
    refused_scale_inf: false, f32::INFINITY, FLATOPT_ERR_INVALID_ARGUMENT, "grad_scale";
    refused_scale_negative: false, -2.0, FLATOPT_ERR_INVALID_ARGUMENT, "grad_scale";
    refused_scale_subnormal_negative: false, -1e-40, FLATOPT_ERR_INVALID_ARGUMENT, "grad_scale";
    refused_scale_with_a_dynamic_scaler: true, 2.0, FLATOPT_ERR_INVALID_ARGUMENT,
        "dynamic loss scaler";
}

#[test]
fn refused_opt_null() {
    // SAFETY: NULL is refused.
    let st = unsafe { flatopt_optimizer_begin_step_scaled(std::ptr::null_mut(), 2.0) };
    assert_eq!(st, FLATOPT_ERR_NULL_POINTER);
    assert!(last_message().contains("opt"), "{}", last_message());
}

/// A begun step refuses a second begin, scaled or not, and the begun one completes.
#[test]
fn refused_while_pending() {
    let mut b = bufs(&BASE);
    let h = new_handle(&BASE);
    register(&h, &BASE, &mut b);
    fill_grads(&BASE, &mut b, 0);
    // SAFETY: live handle, registered buffers alive.
    unsafe {
        assert_eq!(flatopt_optimizer_begin_step_scaled(h.0, 4.0), FLATOPT_OK);
        let st = flatopt_optimizer_begin_step_scaled(h.0, 4.0);
        assert_eq!(st, FLATOPT_ERR_INVALID_STATE);
        assert!(last_message().contains("end_step"), "{}", last_message());
        assert_eq!(flatopt_optimizer_begin_step(h.0), FLATOPT_ERR_INVALID_STATE);
    }
    apply_ranges(&h, lens(&BASE).iter().sum(), 1);
    // SAFETY: live handle, every element applied.
    assert_eq!(unsafe { flatopt_optimizer_end_step(h.0) }, FLATOPT_OK);
    assert_eq!(counters(&h), (1, 0));
}
