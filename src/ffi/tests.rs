//! Tests of the C ABI that need the library's insides: a panic injected into an entry point
//! (poisoning; the hook of `fault.rs` exists only in test builds, never in a shipped library)
//! and the versioned-struct reader and writer on a struct that has two published versions.

use std::ffi::CStr;

use super::fault::arm;
use super::ptr::{read_versioned, write_versioned, Versions, MAX_STRUCT_SIZE};
use super::*;
use crate::error::Error;

fn message() -> String {
    // SAFETY: a NUL-terminated thread-local string, copied at once.
    unsafe { CStr::from_ptr(flatopt_last_error_message()) }
        .to_string_lossy()
        .into_owned()
}

/// A handle (Adam, lr 0.1) over one registered buffer pair.
struct Fixture {
    opt: *mut flatopt_optimizer,
    p: Box<[f32; 4]>,
    g: Box<[f32; 4]>,
}

impl Fixture {
    fn new() -> Self {
        let mut c = std::mem::MaybeUninit::<flatopt_config>::uninit();
        let size = std::mem::size_of::<flatopt_config>();
        // SAFETY: `c` has `size` writable bytes.
        assert_eq!(
            unsafe { flatopt_config_init(c.as_mut_ptr(), size) },
            flatopt_status::FLATOPT_OK
        );
        // SAFETY: initialised by flatopt_config_init (every field written).
        let mut c = unsafe { c.assume_init() };
        c.lr = 0.1;
        let mut opt = std::ptr::null_mut();
        // SAFETY: a valid config and out pointer.
        assert_eq!(
            unsafe { flatopt_optimizer_new(&c, &mut opt) },
            flatopt_status::FLATOPT_OK
        );
        let mut f = Fixture {
            opt,
            p: Box::new([1.0; 4]),
            g: Box::new([0.5; 4]),
        };
        // SAFETY: live handle, 4-float buffers that outlive it (freed in Drop first).
        let st = unsafe { flatopt_optimizer_add_param(f.opt, f.p.as_mut_ptr(), f.g.as_ptr(), 4) };
        assert_eq!(st, flatopt_status::FLATOPT_OK);
        f
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // SAFETY: a live handle, freed once; poisoned handles must free too.
        unsafe { flatopt_optimizer_free(self.opt) };
    }
}

/// Every later call on a poisoned handle, one row each: (name, call).
type Row = (&'static str, fn(*mut flatopt_optimizer) -> flatopt_status);

const AFTER_POISON: &[Row] = &[
    // SAFETY (every row): `o` is a live handle.
    ("step", |o| unsafe { flatopt_optimizer_step(o) }),
    ("begin_step", |o| unsafe { flatopt_optimizer_begin_step(o) }),
    ("end_step", |o| unsafe { flatopt_optimizer_end_step(o) }),
    ("step_range", |o| unsafe {
        flatopt_optimizer_step_range(o, 0, 4)
    }),
    ("reset", |o| unsafe { flatopt_optimizer_reset(o) }),
    ("schedule_step", |o| unsafe {
        flatopt_optimizer_schedule_step(o)
    }),
    ("set_num_threads", |o| unsafe {
        flatopt_optimizer_set_num_threads(o, 1)
    }),
    ("step_count", |o| {
        let mut n = 0u64;
        unsafe { flatopt_optimizer_step_count(o, &mut n) }
    }),
    ("checkpoint_size", |o| {
        let mut n = 0usize;
        unsafe { flatopt_optimizer_checkpoint_size(o, &mut n) }
    }),
    ("save", |o| {
        let (mut buf, mut w) = ([0u8; 16], 0usize);
        unsafe { flatopt_optimizer_save(o, buf.as_mut_ptr(), buf.len(), &mut w) }
    }),
    ("add_param", |o| unsafe {
        flatopt_optimizer_add_param(o, std::ptr::null_mut(), std::ptr::null(), 0)
    }),
    ("add_group", |o| {
        let mut g = 0usize;
        unsafe { flatopt_optimizer_add_group(o, std::ptr::null(), &mut g) }
    }),
    ("add_param_to_group", |o| unsafe {
        flatopt_optimizer_add_param_to_group(o, 0, std::ptr::null_mut(), std::ptr::null(), 0)
    }),
    ("num_groups", |o| {
        let mut n = 0usize;
        unsafe { flatopt_optimizer_num_groups(o, &mut n) }
    }),
    ("group_lr", |o| {
        let mut lr = 0.0f64;
        unsafe { flatopt_optimizer_group_lr(o, 0, &mut lr) }
    }),
    ("set_group_lr", |o| unsafe {
        flatopt_optimizer_set_group_lr(o, 0, 0.5)
    }),
    ("set_group_weight_decay", |o| unsafe {
        flatopt_optimizer_set_group_weight_decay(o, 0, 0.5)
    }),
];

/// A panic inside a call: `FLATOPT_ERR_INTERNAL` for that call, then `FLATOPT_ERR_POISONED`
/// for every row of [`AFTER_POISON`], with a message that says so; nothing changes any more.
fn check_poisoned(f: &Fixture) {
    let before = *f.p;
    for (name, call) in AFTER_POISON {
        assert_eq!(call(f.opt), flatopt_status::FLATOPT_ERR_POISONED, "{name}");
        assert!(message().contains("poisoned"), "{name}: {}", message());
    }
    assert_eq!(*f.p, before, "a poisoned handle changed the parameters");
}

#[test]
fn a_panic_in_step_poisons_the_handle() {
    let f = Fixture::new();
    arm();
    // SAFETY: live handle.
    let st = unsafe { flatopt_optimizer_step(f.opt) };
    assert_eq!(st, flatopt_status::FLATOPT_ERR_INTERNAL);
    assert!(message().contains("fault injection"), "{}", message());
    check_poisoned(&f);
}

#[test]
fn a_panic_in_step_range_poisons_the_handle() {
    let f = Fixture::new();
    // SAFETY: live handle.
    assert_eq!(
        unsafe { flatopt_optimizer_begin_step(f.opt) },
        flatopt_status::FLATOPT_OK
    );
    arm();
    // SAFETY: live handle inside begin_step / end_step.
    let st = unsafe { flatopt_optimizer_step_range(f.opt, 0, 2) };
    assert_eq!(st, flatopt_status::FLATOPT_ERR_INTERNAL);
    check_poisoned(&f);
}

#[test]
fn a_handle_without_a_panic_is_not_poisoned() {
    let f = Fixture::new();
    for (name, call) in AFTER_POISON {
        assert_ne!(call(f.opt), flatopt_status::FLATOPT_ERR_POISONED, "{name}");
    }
}

#[test]
fn poisoned_has_a_status_string() {
    let s = flatopt_status_str(flatopt_status::FLATOPT_ERR_POISONED as i32);
    // SAFETY: a static NUL-terminated string.
    let s = unsafe { CStr::from_ptr(s) }.to_str().unwrap();
    assert!(s.contains("poisoned"), "{s}");
}

/// A struct with two published versions: V1 ends after `a` (16 bytes), V2 adds `b`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
struct Two {
    struct_size: u32,
    kind: u32,
    a: f64,
    b: f64,
}

const TWO: Versions = Versions {
    name: "two",
    sizes: &[16, 24],
};

fn defaults() -> Two {
    Two {
        struct_size: 24,
        kind: 7,
        a: 1.5,
        b: 2.5,
    }
}

/// The caller's bytes: `size` bytes of a struct with `a = 9`, `b = 8`, then `extra` after
/// the library's 24 bytes (a newer caller's fields).
fn caller(size: usize, extra: &[u8]) -> Vec<u64> {
    let mut words = vec![0u64; MAX_STRUCT_SIZE.div_ceil(8) + 1];
    // SAFETY: `words` has more than `size` bytes; u8 views of u64 memory are fine.
    let bytes = unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), 64) };
    bytes[..4].copy_from_slice(&(size as u32).to_ne_bytes());
    bytes[4..8].copy_from_slice(&3u32.to_ne_bytes());
    bytes[8..16].copy_from_slice(&9f64.to_ne_bytes());
    bytes[16..24].copy_from_slice(&8f64.to_ne_bytes());
    bytes[24..24 + extra.len()].copy_from_slice(extra);
    words
}

fn read(size: usize, extra: &[u8]) -> Result<Two, Error> {
    let words = caller(size, extra);
    // SAFETY: `words` holds at least `size` readable bytes, 8-aligned.
    unsafe {
        read_versioned(
            "two",
            "two.struct_size",
            words.as_ptr().cast(),
            defaults(),
            &TWO,
        )
    }
}

#[test]
fn versioned_read_rows() {
    type Expect = Result<(f64, f64), &'static str>;
    let rows: &[(&str, usize, &[u8], Expect)] = &[
        ("V1 caller: b from the defaults", 16, &[], Ok((9.0, 2.5))),
        (
            "V2 caller: everything from the caller",
            24,
            &[],
            Ok((9.0, 8.0)),
        ),
        ("newer caller, zero tail", 40, &[0; 16], Ok((9.0, 8.0))),
        ("newer caller, set field", 40, &[0, 0, 1, 0], Err("byte 26")),
        ("below V1", 12, &[], Err("smaller than the first version")),
        ("zero", 0, &[], Err("smaller than the first version")),
        (
            "between versions",
            20,
            &[],
            Err("not the size of any version"),
        ),
        ("garbage size", 1 << 20, &[], Err("larger than any struct")),
    ];
    for &(name, size, extra, ref want) in rows {
        match (read(size, extra), want) {
            (Ok(t), Ok((a, b))) => assert_eq!((t.a, t.b, t.kind), (*a, *b, 3), "{name}"),
            (Err(e), Err(part)) => assert!(e.to_string().contains(part), "{name}: {e}"),
            (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn versioned_write_rows() {
    // (name, size, accepted): the caller's struct is followed by canary bytes that must stay.
    let rows: &[(&str, usize, bool)] = &[
        ("V1 caller", 16, true),
        ("V2 caller", 24, true),
        ("newer caller", 40, true),
        ("below V1", 8, false),
        ("between versions", 20, false),
    ];
    for &(name, size, ok) in rows {
        let mut buf = [0xA5A5_A5A5_A5A5_A5A5u64; 8];
        let p = buf.as_mut_ptr().cast::<Two>();
        // SAFETY: `buf` has 64 writable bytes, at least `size`, aligned for `Two`.
        let r = unsafe { write_versioned("two", p, size, defaults(), &TWO) };
        // SAFETY: u8 view of the 64 bytes of `buf`.
        let bytes = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), 64) };
        if !ok {
            assert!(r.is_err(), "{name}");
            assert!(
                bytes.iter().all(|&b| b == 0xA5),
                "{name}: written although refused"
            );
            continue;
        }
        r.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            &bytes[..4],
            &(size as u32).to_ne_bytes(),
            "{name}: struct_size"
        );
        assert_eq!(&bytes[8..16], &1.5f64.to_ne_bytes(), "{name}: a");
        if size >= 24 {
            assert_eq!(&bytes[16..24], &2.5f64.to_ne_bytes(), "{name}: b");
        }
        assert!(
            bytes[24.min(size)..size].iter().all(|&b| b == 0),
            "{name}: tail"
        );
        assert!(
            bytes[size..].iter().all(|&b| b == 0xA5),
            "{name}: wrote past size"
        );
    }
}

/// `flatopt_base_params` of an older version (`FLATOPT_BASE_PARAMS_SIZE_V1`, before Adagrad's
/// and RMSprop's fields; `_V2`, before Adamax's, NAdam's and Lion's; `_V3`, before AdaBelief's,
/// Adadelta's and Rprop's) naming a kind added later:
/// the fields it lacks get that kind's defaults whatever lies past its size, and `_init` with
/// that size writes nothing beyond it.
#[test]
fn base_params_older_caller_of_a_later_kind() {
    use super::structs::{
        base_defaults, flatopt_base_kind, flatopt_base_params, flatopt_base_params_init, read_base,
        FLATOPT_BASE_PARAMS_SIZE_V1, FLATOPT_BASE_PARAMS_SIZE_V2, FLATOPT_BASE_PARAMS_SIZE_V3,
    };
    use crate::config::Base;
    let rows = [
        (flatopt_base_kind::FLATOPT_ADAGRAD, Base::adagrad()),
        (flatopt_base_kind::FLATOPT_RMSPROP, Base::rmsprop()),
        (flatopt_base_kind::FLATOPT_ADAMAX, Base::adamax()),
        (flatopt_base_kind::FLATOPT_NADAM, Base::nadam()),
        (flatopt_base_kind::FLATOPT_LION, Base::lion()),
        (flatopt_base_kind::FLATOPT_ADABELIEF, Base::adabelief()),
        (flatopt_base_kind::FLATOPT_YOGI, Base::yogi()),
        (flatopt_base_kind::FLATOPT_ADADELTA, Base::adadelta()),
        (flatopt_base_kind::FLATOPT_RPROP, Base::rprop()),
    ];
    let sizes = [
        FLATOPT_BASE_PARAMS_SIZE_V1,
        FLATOPT_BASE_PARAMS_SIZE_V2,
        FLATOPT_BASE_PARAMS_SIZE_V3,
    ];
    for size in sizes {
        let size = size as usize;
        for (kind, want) in rows {
            let mut p = base_defaults(kind as u32);
            p.struct_size = size as u32;
            // Past the caller's struct: not its memory, never read.
            if size < FLATOPT_BASE_PARAMS_SIZE_V2 as usize {
                p.lr_decay = f64::NAN;
                p.initial_accumulator = -1.0;
                p.alpha = 7.0;
                p.centered = 9;
                p.eps_inside_sqrt = 9;
            }
            if size < FLATOPT_BASE_PARAMS_SIZE_V3 as usize {
                p.momentum_decay = f64::NAN;
                p.eps_outside_max = 9;
                p.constant_momentum = 9;
            }
            p.eps_root = -1.0;
            p.rho = f64::NAN;
            p.eta_minus = 7.0;
            p.eta_plus = -1.0;
            p.min_step_size = f64::NAN;
            p.max_step_size = -1.0;
            // SAFETY: `p` is a whole flatopt_base_params, more than its struct_size bytes.
            let read = unsafe { read_base("base", "base.struct_size", &p) }.unwrap();
            assert_eq!(read.to_base().unwrap(), want, "{kind:?} size {size}");

            const WORDS: usize = std::mem::size_of::<flatopt_base_params>() / 8;
            let mut buf = [0xA5A5_A5A5_A5A5_A5A5u64; WORDS];
            let ptr = buf.as_mut_ptr().cast::<flatopt_base_params>();
            // SAFETY: `buf` is a whole struct's bytes, 8-aligned.
            let st = unsafe { flatopt_base_params_init(ptr, size, kind as u32) };
            assert_eq!(st, flatopt_status::FLATOPT_OK, "{kind:?}");
            assert!(
                buf[size / 8..].iter().all(|&w| w == 0xA5A5_A5A5_A5A5_A5A5),
                "{kind:?}: wrote past {size} bytes"
            );
        }
    }
}

/// `flatopt_optimizer_step_with_grads` checks the gradients it is given against the registered
/// params and copies (searched in the handle's sorted index): one row per layout, in an arena
/// of 64 floats holding params at 0, 16, 32 (8 floats each) and param 0's bf16 copy at 40
/// (8 halves: floats 40..44). Each row puts the three gradients (8 floats each) at the given
/// offsets and expects OK or the message naming the pair in address order.
#[test]
fn step_with_grads_overlap_rows() {
    const FREE: usize = 48;
    let rows: &[(&str, [usize; 3], Option<&str>)] = &[
        (
            "gradients shared with each other",
            [FREE, FREE, FREE + 4],
            None,
        ),
        ("adjacent to params on both sides", [8, 24, 56], None),
        (
            "inside param 0 from above",
            [FREE, 4, FREE],
            Some("param 0 and grad 1"),
        ),
        (
            "running into param 1 from below",
            [12, FREE, FREE],
            Some("grad 0 and param 1"),
        ),
        (
            "exactly param 2",
            [FREE, FREE, 32],
            Some("param 2 and grad 2"),
        ),
        (
            "over param 0's copy",
            [FREE, FREE, 42],
            Some("copy 0 and grad 2"),
        ),
        (
            "over param 2 and the copy",
            [36, FREE, FREE],
            Some("grad 0 and copy 0"),
        ),
    ];
    for (name, at, want) in rows {
        let mut arena = vec![0.25f32; 64];
        let base = arena.as_mut_ptr();
        let mut c = std::mem::MaybeUninit::<flatopt_config>::uninit();
        // SAFETY: `c` has the struct's size of writable bytes.
        let st = unsafe { flatopt_config_init(c.as_mut_ptr(), size_of::<flatopt_config>()) };
        assert_eq!(st, flatopt_status::FLATOPT_OK);
        // SAFETY: initialised by flatopt_config_init.
        let mut c = unsafe { c.assume_init() };
        c.lr = 0.1;
        let mut opt = std::ptr::null_mut();
        // SAFETY: a valid config and out pointer.
        assert_eq!(
            unsafe { flatopt_optimizer_new(&c, &mut opt) },
            flatopt_status::FLATOPT_OK
        );
        let mut o = std::mem::MaybeUninit::<flatopt_param_options>::uninit();
        // SAFETY: `o` has the struct's size of writable bytes.
        let st = unsafe {
            flatopt_param_options_init(o.as_mut_ptr(), size_of::<flatopt_param_options>())
        };
        assert_eq!(st, flatopt_status::FLATOPT_OK);
        // SAFETY: initialised by flatopt_param_options_init.
        let mut o = unsafe { o.assume_init() };
        // SAFETY: offsets inside the 64-float arena, which outlives the handle.
        o.copy = unsafe { base.add(40) }.cast();
        o.copy_dtype = flatopt_dtype::FLATOPT_DTYPE_BF16 as u32;
        for (i, p) in [0usize, 16, 32].into_iter().enumerate() {
            let opts = if i == 0 {
                &o as *const _
            } else {
                std::ptr::null()
            };
            // SAFETY: a live handle; 8 floats inside the arena; gradients come per step.
            let st = unsafe {
                flatopt_optimizer_add_param_with_options(
                    opt,
                    base.add(p),
                    std::ptr::null(),
                    8,
                    opts,
                )
            };
            assert_eq!(
                st,
                flatopt_status::FLATOPT_OK,
                "{name}: registering param {i}"
            );
        }
        // SAFETY: offsets inside the arena.
        let grads = at.map(|a| unsafe { base.add(a) }.cast_const());
        let before = arena.clone();
        // SAFETY: a live handle, one gradient pointer per buffer, each 8 floats in the arena.
        let st = unsafe { flatopt_optimizer_step_with_grads(opt, grads.as_ptr(), 3) };
        match want {
            None => assert_eq!(st, flatopt_status::FLATOPT_OK, "{name}: {}", message()),
            Some(pair) => {
                assert_eq!(st, flatopt_status::FLATOPT_ERR_OVERLAP, "{name}");
                let m = message();
                assert!(m.contains(&format!("{pair} share memory")), "{name}: {m}");
                assert_eq!(arena, before, "{name}: a refused step wrote");
            }
        }
        // SAFETY: a live handle, freed once.
        unsafe { flatopt_optimizer_free(opt) };
    }
}
