//! Checkpoints: the complete optimizer state as a versioned, checksummed byte string, and
//! crash-safe files. The format is specified in `docs/checkpoint-format.md`.
//!
//! A checkpoint holds the configuration (to check compatibility; threads and SIMD tier are left
//! out because they do not change results), the counters, the schedule state and every state
//! buffer. Loading validates everything before changing anything.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::Path;

use crate::catalog::{self, Sink, Ty};
use crate::config::{base_specs, Base, Config, NonFinitePolicy};
use crate::engine::{q8_codes, Group, Optimizer, MAX_GROUPS};
use crate::error::Error;
use crate::kernels::{self, Half, Q8Code, StateDtype, Q8_BLOCK};
use crate::scaler::LossScaler;
use crate::schedule::{Schedule, ScheduleState};

/// First 8 bytes of every checkpoint.
pub const MAGIC: [u8; 8] = *b"FLATOPTC";
/// The newest format version this library writes and reads. Version 2 adds the parameter
/// groups; an optimizer whose only group is its own configuration, unchanged, still writes
/// version 1 (the same bytes as before groups existed), and version 1 is read as one such
/// group. Version 3 adds the dynamic loss scaler after the groups section; only an optimizer
/// with a scaler writes it. Version 4 holds compressed state as it is held (bf16 patterns,
/// 8-bit codes and their scales; `docs/checkpoint-format.md`), after the groups, an optional
/// scaler and the state formats; only an optimizer whose `state_dtype` or `slow_dtype` is not
/// float32 writes it.
pub const FORMAT_VERSION: u32 = 4;
/// The oldest format version this library reads.
pub const OLDEST_FORMAT_VERSION: u32 = 1;
/// Written little-endian; a reader on any machine sees `0D 0C 0B 0A`.
const BYTE_ORDER_MARK: u32 = 0x0A0B_0C0D;
/// Bytes before the configuration section.
const HEADER_LEN: usize = 32;
/// Bytes of the loss scaler section (version 3).
const SCALER_LEN: usize = 24;

/// A little-endian encoder that remembers the byte range of each named configuration field,
/// so that a mismatch can be reported by name.
#[derive(Default)]
struct Enc {
    buf: Vec<u8>,
    fields: Vec<(&'static str, usize, usize)>,
}

impl Enc {
    fn named(&mut self, name: &'static str, bytes: &[u8]) {
        let start = self.buf.len();
        self.buf.extend_from_slice(bytes);
        self.fields.push((name, start, self.buf.len()));
    }
}

impl Sink for Enc {
    fn u32(&mut self, name: &'static str, x: u32) {
        self.named(name, &x.to_le_bytes());
    }
    fn u64(&mut self, name: &'static str, x: u64) {
        self.named(name, &x.to_le_bytes());
    }
    fn f64(&mut self, name: &'static str, x: f64) {
        self.named(name, &x.to_le_bytes());
    }
    fn u64s(&mut self, name: &'static str, xs: &[u64]) {
        let mut bytes = (xs.len() as u64).to_le_bytes().to_vec();
        xs.iter()
            .for_each(|x| bytes.extend_from_slice(&x.to_le_bytes()));
        self.named(name, &bytes);
    }
    fn f64s(&mut self, name: &'static str, xs: &[f64]) {
        let mut bytes = (xs.len() as u64).to_le_bytes().to_vec();
        xs.iter()
            .for_each(|x| bytes.extend_from_slice(&x.to_le_bytes()));
        self.named(name, &bytes);
    }
}

/// Encodes everything in a configuration that changes results.
fn encode_config(cfg: &Config) -> Enc {
    let mut e = Enc::default();
    // The base rule and the schedule in their catalogs' encoding (kind, then each field in
    // declaration order).
    catalog::encode(&mut e, "base", cfg.base.spec(), &cfg.base.values());
    catalog::encode(&mut e, "schedule", cfg.lr.spec(), &cfg.lr.values());
    // Then the configuration catalog's fields that checkpoints carry, in declaration order
    // (a group's fields only when it is on).
    cfg.for_each_field(|f, v| {
        if f.saved {
            catalog::encode_value(&mut e, f, &v);
        }
    });
    e
}

/// Bits of the per-buffer `present` word.
const HAS_M: u32 = 1;
const HAS_V: u32 = 2;
const HAS_V_MAX: u32 = 4;
const HAS_SLOW: u32 = 8;
/// The buffer's registered shape follows its group (rows, cols as u64): an Adafactor buffer
/// with factored second moments, whose `v` holds `rows + cols` averages per matrix.
const HAS_SHAPE: u32 = 16;

fn corrupt(what: impl Into<String>) -> Error {
    Error::Corrupt(what.into())
}

/// A bounds-checked little-endian reader over untrusted bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], Error> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| corrupt(format!("truncated: {what} runs past the end")))?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u32(&mut self, what: &str) -> Result<u32, Error> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self, what: &str) -> Result<u64, Error> {
        let b = self.take(8, what)?;
        let mut a = [0; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn f64(&mut self, what: &str) -> Result<f64, Error> {
        Ok(f64::from_bits(self.u64(what)?))
    }
    /// A length field, checked against the bytes left so that a hostile value cannot make the
    /// reader allocate or loop without bound.
    fn len(&mut self, what: &str, elem_size: usize) -> Result<usize, Error> {
        let n = self.u64(what)?;
        let left = (self.bytes.len() - self.pos) as u64;
        if n.checked_mul(elem_size as u64).is_none_or(|b| b > left) {
            return Err(corrupt(format!("{what} = {n} exceeds the data")));
        }
        Ok(n as usize)
    }
}

fn f32s_le(dst: &mut [f32], src: &[u8]) {
    for (d, s) in dst.iter_mut().zip(src.chunks_exact(4)) {
        *d = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
    }
}

fn put_f32s(out: &mut Vec<u8>, xs: &[f32]) {
    out.reserve(xs.len() * 4);
    for x in xs {
        out.extend_from_slice(&x.to_le_bytes());
    }
}

/// Bytes of `n` elements of one state array stored as `fmt` (format 4): 4 or 2 per element,
/// or a code per element and a 4-byte scale per started 8-bit block. `None` on overflow.
fn held_len(fmt: StateDtype, n: usize) -> Option<usize> {
    match fmt {
        StateDtype::F32 => n.checked_mul(4),
        StateDtype::Bf16 => n.checked_mul(2),
        StateDtype::Int8 => n.checked_add(n.div_ceil(Q8_BLOCK).checked_mul(4)?),
    }
}

/// `src` (one state array of `out.len()` elements stored as `fmt`, little-endian) decoded to
/// f32 into `out`, as the optimizer decodes state held that way (`code`: the array's 8-bit
/// code). Refuses an 8-bit scale that is negative or not finite, which no optimizer writes.
fn decode_le(fmt: StateDtype, code: Q8Code, src: &[u8], out: &mut [f32]) -> Result<(), String> {
    let tier = crate::simd::Tier::Scalar;
    let f32s = |b: &[u8]| -> Vec<f32> {
        b.chunks_exact(4)
            .map(|s| f32::from_le_bytes([s[0], s[1], s[2], s[3]]))
            .collect()
    };
    let done = match fmt {
        StateDtype::F32 => {
            f32s_le(out, src);
            Ok(())
        }
        StateDtype::Bf16 => {
            let h: Vec<u16> = src
                .chunks_exact(2)
                .map(|s| u16::from_le_bytes([s[0], s[1]]))
                .collect();
            kernels::widen_to_f32(tier, Half::Bf16, &h, out)
        }
        StateDtype::Int8 => {
            let (codes, scales) = src.split_at(out.len());
            let scales = f32s(scales);
            if let Some((b, x)) = scales
                .iter()
                .enumerate()
                .find(|(_, x)| !(x.is_finite() && **x >= 0.0))
            {
                return Err(format!(
                    "8-bit block {b} has the scale {x:?} (a block's largest magnitude: finite, >= 0)"
                ));
            }
            kernels::dequantize_q8(tier, code, codes, &scales, out)
        }
    };
    done.map_err(|e| e.to_string())
}

/// Where one parsed buffer's arrays are in the checkpoint.
struct BufferRecord {
    present: u32,
    start: usize,
}

/// The counters of a checkpoint (see [`Optimizer::checkpoint_info`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CheckpointInfo {
    /// Applied updates.
    pub step_count: u64,
    /// Updates skipped because of non-finite gradients.
    pub skipped_count: u64,
    /// The learning rate the next update after loading will use (as [`Optimizer::current_lr`]).
    pub current_lr: f32,
}

/// A checkpoint that passed every check, ready to be applied.
struct Parsed<'a> {
    info: CheckpointInfo,
    sched: ScheduleState,
    /// The parameter groups the checkpoint restores (a version-1 checkpoint: the
    /// configuration's one).
    groups: Vec<Group>,
    /// The dynamic loss scaler (version 3, optional in version 4).
    scaler: Option<LossScaler>,
    /// How the arrays are stored: float32 (versions 1 to 3), else the state formats of a
    /// version-4 checkpoint (the moments', the slow weights').
    formats: [StateDtype; 2],
    records: Vec<BufferRecord>,
    body: &'a [u8],
}

/// Checks the fixed header (length, magic, version, byte-order mark) and returns the total
/// length it announces; reads nothing past the header.
fn check_header(bytes: &[u8]) -> Result<u64, Error> {
    if bytes.len() < HEADER_LEN + 4 {
        return Err(corrupt(format!(
            "{} bytes is too short for a checkpoint",
            bytes.len()
        )));
    }
    if bytes[..8] != MAGIC {
        return Err(corrupt("not a flatopt checkpoint (bad magic)"));
    }
    let mut r = Reader { bytes, pos: 8 };
    let version = r.u32("format version")?;
    if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&version) {
        return Err(Error::Unsupported(format!(
            "checkpoint format version {version} (this library reads versions \
             {OLDEST_FORMAT_VERSION} to {FORMAT_VERSION})"
        )));
    }
    if r.u32("byte-order mark")? != BYTE_ORDER_MARK {
        return Err(corrupt("bad byte-order mark"));
    }
    r.u64("total length")
}

/// The format version of a checkpoint whose header [`check_header`] accepted.
fn version_of(bytes: &[u8]) -> u32 {
    u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"))
}

/// The groups section of a version-2 checkpoint: the group count, then per group its own
/// learning rate (NaN: follows the schedule), its coupled weight decay and its base rule in
/// the catalog encoding.
fn encode_groups(groups: &[Group]) -> Vec<u8> {
    let mut e = Enc::default();
    e.buf
        .extend_from_slice(&(groups.len() as u64).to_le_bytes());
    for g in groups {
        e.buf
            .extend_from_slice(&g.lr().unwrap_or(f64::NAN).to_le_bytes());
        e.buf
            .extend_from_slice(&g.coupled_weight_decay().to_le_bytes());
        catalog::encode(&mut e, "base", g.base().spec(), &g.base().values());
    }
    e.buf
}

/// The loss scaler section of a version-3 checkpoint: scale, growth factor and backoff factor
/// (f32), growth interval, growth tracker and found-inf flag (u32).
fn encode_scaler(sc: &LossScaler) -> [u8; SCALER_LEN] {
    let (growth, backoff, interval) = sc.factors();
    let words = [
        sc.scale().to_bits(),
        growth.to_bits(),
        backoff.to_bits(),
        interval,
        sc.growth_tracker(),
        u32::from(sc.found_inf()),
    ];
    let mut out = [0; SCALER_LEN];
    for (o, w) in out.chunks_exact_mut(4).zip(words) {
        o.copy_from_slice(&w.to_le_bytes());
    }
    out
}

/// Reads the loss scaler section, validated as `LossScaler::new` and `with_state` validate.
fn read_scaler(r: &mut Reader<'_>) -> Result<LossScaler, Error> {
    let scale = f32::from_bits(r.u32("loss scale")?);
    let growth = f32::from_bits(r.u32("loss scaler growth_factor")?);
    let backoff = f32::from_bits(r.u32("loss scaler backoff_factor")?);
    let interval = r.u32("loss scaler growth_interval")?;
    let tracker = r.u32("loss scaler growth_tracker")?;
    let found_inf = match r.u32("loss scaler found_inf")? {
        0 => false,
        1 => true,
        x => return Err(corrupt(format!("loss scaler found_inf = {x}"))),
    };
    LossScaler::new(scale, growth, backoff, interval)
        .and_then(|sc| sc.with_state(scale, tracker, found_inf))
        .map_err(|e| corrupt(format!("loss scaler: {e}")))
}

/// Reads one base rule in the catalog encoding (the kind, then each field).
fn read_base(r: &mut Reader<'_>, group: usize) -> Result<Base, Error> {
    let kind = r.u32("group base kind")?;
    let spec = base_specs()
        .iter()
        .find(|s| s.kind == kind)
        .ok_or_else(|| corrupt(format!("group {group}: unknown base kind {kind}")))?;
    let mut values = Vec::with_capacity(spec.fields.len());
    for f in &spec.fields {
        let v = match f.ty {
            Ty::F64 => catalog::Value::F64(r.f64(f.key)?),
            Ty::OptF64 => {
                let x = r.f64(f.key)?;
                catalog::Value::OptF64((!x.is_nan()).then_some(x))
            }
            Ty::U64 => catalog::Value::U64(r.u64(f.key)?),
            Ty::Bool => match r.u32(f.key)? {
                0 => catalog::Value::Bool(false),
                1 => catalog::Value::Bool(true),
                x => return Err(corrupt(format!("group {group}: {} = {x}", f.key))),
            },
            Ty::Choice(_) => catalog::Value::Choice(r.u32(f.key)?),
            Ty::U64s => {
                let n = r.len(f.key, 8)?;
                catalog::Value::U64s((0..n).map(|_| r.u64(f.key)).collect::<Result<_, _>>()?)
            }
            Ty::F64s => {
                let n = r.len(f.key, 8)?;
                catalog::Value::F64s((0..n).map(|_| r.f64(f.key)).collect::<Result<_, _>>()?)
            }
        };
        values.push(v);
    }
    Base::from_values(kind, values).ok_or_else(|| {
        corrupt(format!(
            "group {group}: a value of the base rule is invalid"
        ))
    })
}

/// Checks every state value of buffer `buffer` against the values updates can produce. With
/// the skip and error policies (non-finite gradients never reach the state): the first
/// moment / momentum and the slow weights finite, the second moment and the AMSGrad maximum
/// not NaN and `>= 0` (`+inf` is reachable: the square of a gradient above 1.8e19 overflows,
/// and the update of that element is then 0). Any other value would make the next update with
/// finite gradients and parameters write NaN or Inf. With the propagate policy NaN and ±Inf
/// are let through by design, so only values no update can produce are refused: a negative or
/// -Inf second moment or AMSGrad maximum. Always: the AMSGrad maximum is not below the second
/// moment (it is their running maximum). With `v_max_is_average` (RMSprop, whose centered form
/// keeps its gradient average in `v_max`) `v_max` is checked as `m` is: finite. With
/// `m_is_square` (Adadelta, whose `m` is the average of squared updates, under a square root in
/// the next update) `m` is also `>= 0`, whatever the policy.
fn check_state_values(
    buffer: usize,
    present: u32,
    lens: [usize; 4],
    arrays: &[u8],
    propagate: bool,
    (v_max_is_average, m_is_square): (bool, bool),
    max_exact: bool,
) -> Result<(), Error> {
    // Where each present array starts (in elements): arrays may differ in length (the `v` of
    // a factored Adafactor buffer).
    let mut starts = [0usize; 4];
    let mut at = 0;
    for (k, bit) in [HAS_M, HAS_V, HAS_V_MAX, HAS_SLOW].into_iter().enumerate() {
        if present & bit != 0 {
            starts[k] = at;
            at += lens[k];
        }
    }
    let value = |k: usize, i: usize| {
        let e = starts[k] + i;
        let b = &arrays[4 * e..4 * e + 4];
        f32::from_le_bytes([b[0], b[1], b[2], b[3]])
    };
    let bad = |what: &str, i: usize, x: f32, rule: &str| {
        corrupt(format!(
            "buffer {buffer}: {what}[{i}] = {x:?} is impossible ({rule})"
        ))
    };
    let mut v_at = None;
    for (k, (bit, what)) in [
        (
            HAS_M,
            if m_is_square {
                "squared-update average m"
            } else {
                "first moment m"
            },
        ),
        (HAS_V, "second moment v"),
        (
            HAS_V_MAX,
            if v_max_is_average {
                "gradient average v_max"
            } else {
                "AMSGrad maximum v_max"
            },
        ),
        (HAS_SLOW, "slow weight"),
    ]
    .into_iter()
    .enumerate()
    {
        if present & bit == 0 {
            continue;
        }
        // RMSprop's centered average (kept in v_max) is any finite value, as m is.
        let moment = bit == HAS_M || bit == HAS_SLOW || (bit == HAS_V_MAX && v_max_is_average);
        for i in 0..lens[k] {
            let x = value(k, i);
            if bit == HAS_M && m_is_square && x < 0.0 {
                return Err(bad(what, i, x, "must be >= 0"));
            }
            if moment {
                if !propagate && !x.is_finite() {
                    return Err(bad(what, i, x, "must be finite"));
                }
                continue;
            }
            match bit {
                HAS_V | HAS_V_MAX if x < 0.0 || (!propagate && x.is_nan()) => {
                    return Err(bad(what, i, x, "must be >= 0"));
                }
                // Compressed state rounds v and its maximum apart (stochastically, or into
                // their own 8-bit blocks): only f32 state keeps v_max >= v exactly.
                HAS_V_MAX if max_exact => {
                    if let Some(kv) = v_at {
                        let v = value(kv, i);
                        if x < v {
                            return Err(bad(
                                what,
                                i,
                                x,
                                "must not be below the second moment, whose running maximum it is",
                            ));
                        }
                    }
                }
                _ => {}
            }
        }
        if bit == HAS_V {
            v_at = Some(k);
        }
    }
    Ok(())
}

impl Optimizer {
    /// The complete optimizer state as a checkpoint (see `docs/checkpoint-format.md`):
    /// format version 1 when the only parameter group is the optimizer's configuration
    /// unchanged and no dynamic loss scaler is set, version 2 (which stores the groups)
    /// without a scaler, else version 3 (the groups and the scaler).
    pub fn save(&self) -> Vec<u8> {
        let config = encode_config(self.config());
        let version = self.save_version();
        let groups = (version >= 2).then(|| encode_groups(self.groups()));
        let mut out = Vec::with_capacity(self.checkpoint_size_with(config.buf.len(), version));
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&version.to_le_bytes());
        out.extend_from_slice(&BYTE_ORDER_MARK.to_le_bytes());
        out.extend_from_slice(&0u64.to_le_bytes()); // total length, patched below
        out.extend_from_slice(&crate::ffi::version_number().to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes()); // reserved flags
        debug_assert_eq!(out.len(), HEADER_LEN);
        out.extend_from_slice(&(config.buf.len() as u64).to_le_bytes());
        out.extend_from_slice(&config.buf);
        out.extend_from_slice(&self.step_count().to_le_bytes());
        out.extend_from_slice(&self.skipped_count().to_le_bytes());
        let s = self.schedule_state();
        for x in [s.count, s.t_cur, s.t_i] {
            out.extend_from_slice(&x.to_le_bytes());
        }
        out.extend_from_slice(&s.plateau_lr.to_le_bytes());
        out.extend_from_slice(&s.best.to_le_bytes());
        out.extend_from_slice(&s.num_bad_epochs.to_le_bytes());
        out.extend_from_slice(&s.cooldown_counter.to_le_bytes());
        if let Some(groups) = &groups {
            out.extend_from_slice(groups);
        }
        if let (3, Some(sc)) = (version, self.loss_scaler()) {
            out.extend_from_slice(&encode_scaler(sc));
        }
        if version == 4 {
            // The scaler, if any, behind a flag word and a reserved word; then the formats
            // of the moments and of the slow weights.
            let sc = self.loss_scaler();
            out.extend_from_slice(&u32::from(sc.is_some()).to_le_bytes());
            out.extend_from_slice(&0u32.to_le_bytes());
            if let Some(sc) = sc {
                out.extend_from_slice(&encode_scaler(sc));
            }
            let cfg = self.config();
            out.extend_from_slice(&(cfg.state_dtype as u32).to_le_bytes());
            out.extend_from_slice(&(cfg.slow_dtype as u32).to_le_bytes());
        }
        let lens = self.buffer_lens();
        out.extend_from_slice(&(lens.len() as u64).to_le_bytes());
        for (i, &len) in lens.iter().enumerate() {
            let present = self.expected_present(i);
            // Version 1: reserved (0); versions 2 and 3: the buffer's group.
            let group = if version >= 2 {
                self.buffer_groups()[i] as u32
            } else {
                0
            };
            out.extend_from_slice(&(len as u64).to_le_bytes());
            out.extend_from_slice(&present.to_le_bytes());
            out.extend_from_slice(&group.to_le_bytes());
            if let Some((rows, cols)) = self.buffer_shape(i) {
                out.extend_from_slice(&(rows as u64).to_le_bytes());
                out.extend_from_slice(&(cols as u64).to_le_bytes());
            }
            if version == 4 {
                // Every array as it is held.
                for (store, _) in self.stores(i) {
                    store.write_le(&mut out);
                }
            } else {
                for a in self.state_f32(i) {
                    put_f32s(&mut out, &a);
                }
            }
        }
        let total = (out.len() + 4) as u64;
        out[16..24].copy_from_slice(&total.to_le_bytes());
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// The size in bytes of [`Optimizer::save`]'s output.
    pub fn checkpoint_size(&self) -> usize {
        let version = self.save_version();
        self.checkpoint_size_with(encode_config(self.config()).buf.len(), version)
    }

    /// The format version [`Optimizer::save`] writes: 4 with state not held as float32, else 3
    /// with a dynamic loss scaler, else 1 while the only parameter group is the configuration
    /// unchanged, else 2.
    fn save_version(&self) -> u32 {
        if !self.state_is_f32() {
            4
        } else if self.loss_scaler().is_some() {
            3
        } else if self.groups_are_config() {
            1
        } else {
            2
        }
    }

    /// The size of a checkpoint of format `version` of this optimizer with a configuration
    /// section of `config_len` bytes (version 1: no groups section, and the buffers carry the
    /// arrays of the configuration's base rule; version 3: a loss scaler section).
    fn checkpoint_size_with(&self, config_len: usize, version: u32) -> usize {
        let cfg = self.config();
        let formats = [cfg.state_dtype, cfg.slow_dtype];
        let scaler = self.loss_scaler().is_some();
        self.checkpoint_size_as(config_len, version, formats, scaler)
    }

    /// [`Optimizer::checkpoint_size_with`] for a version-4 checkpoint storing its arrays in
    /// `formats` (moments, slow weights), with a loss scaler section if `scaler`.
    fn checkpoint_size_as(
        &self,
        config_len: usize,
        version: u32,
        formats: [StateDtype; 2],
        scaler: bool,
    ) -> usize {
        let groups_len = if version >= 2 {
            encode_groups(self.groups()).len()
        } else {
            0
        };
        let scaler_len = match version {
            3 => SCALER_LEN,
            4 => 8 + 8 + if scaler { SCALER_LEN } else { 0 },
            _ => 0,
        };
        let present = |i| match version {
            1 => self.present_for(&self.config().base) | self.shape_bit(i),
            _ => self.expected_present(i),
        };
        let array_bytes = |bit: u32, n: usize| match version {
            // Lengths of registered buffers: their held sizes fit in memory.
            4 => held_len(formats[usize::from(bit == HAS_SLOW)], n).unwrap_or(usize::MAX),
            _ => 4 * n,
        };
        let per_buffer: usize = self
            .buffer_lens()
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let lens = self.array_lens(i, n);
                let shape = if present(i) & HAS_SHAPE != 0 { 16 } else { 0 };
                16 + shape
                    + [HAS_M, HAS_V, HAS_V_MAX, HAS_SLOW]
                        .into_iter()
                        .enumerate()
                        .filter(|&(_, bit)| present(i) & bit != 0)
                        .map(|(k, bit)| array_bytes(bit, lens[k]))
                        .sum::<usize>()
            })
            .sum();
        HEADER_LEN + 8 + config_len + 16 + 7 * 8 + groups_len + scaler_len + 8 + per_buffer + 4
    }

    /// Which state arrays buffer `buffer` carries (its group's base rule, Lookahead), and
    /// whether its shape follows.
    fn expected_present(&self, buffer: usize) -> u32 {
        let base = &self.groups()[self.buffer_groups()[buffer]].base();
        self.present_for(base) | self.shape_bit(buffer)
    }

    /// [`HAS_SHAPE`] if buffer `buffer` keeps factored second moments, else 0.
    fn shape_bit(&self, buffer: usize) -> u32 {
        if self.buffer_shape(buffer).is_some() {
            HAS_SHAPE
        } else {
            0
        }
    }

    /// The lengths of buffer `buffer`'s state arrays (m, v, v_max, slow) for a buffer of `n`
    /// elements: `n`, but `v` of a factored buffer (`rows + cols` per matrix).
    fn array_lens(&self, buffer: usize, n: usize) -> [usize; 4] {
        let v = match self.buffer_shape(buffer) {
            Some((rows, cols)) => crate::kernels::Shape { rows, cols }.state_len(n),
            None => n,
        };
        [n, v, n, n]
    }

    /// Which state arrays a buffer of a group with base rule `base` carries.
    fn present_for(&self, base: &Base) -> u32 {
        let (m, v, v_max) = base.state_used();
        let mut p = 0;
        if m {
            p |= HAS_M;
        }
        if v {
            p |= HAS_V;
        }
        if v_max {
            p |= HAS_V_MAX;
        }
        if self.config().lookahead.is_some() {
            p |= HAS_SLOW;
        }
        p
    }

    /// Restores a checkpoint made by [`Optimizer::save`] of an optimizer with the same
    /// configuration (threads and SIMD tier may differ) and the same registered buffer
    /// lengths. Everything is validated first, every state value included (see
    /// [`Optimizer::checkpoint_info`]): on any error the optimizer is unchanged. Loading ends a
    /// split update begun with [`Optimizer::begin_step`] (its state is replaced).
    pub fn load(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let parsed = self.parse(bytes)?;
        // Everything is valid: apply.
        let lens = self.buffer_lens().to_vec();
        if parsed.formats != [StateDtype::F32; 2] {
            // Format 4: each array as stored; held the same way, its bytes are the state
            // (bit for bit), else it is decoded and encoded as this optimizer holds it.
            let mut tmp = Vec::new();
            for (i, (rec, len)) in parsed.records.iter().zip(lens).enumerate() {
                let mut at = rec.start;
                let codes = self.stores(i).map(|(_, c)| c);
                let lens = self.array_lens(i, len);
                for (which, bit) in [HAS_M, HAS_V, HAS_V_MAX, HAS_SLOW].into_iter().enumerate() {
                    if rec.present & bit == 0 {
                        continue;
                    }
                    let len = lens[which];
                    let fmt = parsed.formats[usize::from(bit == HAS_SLOW)];
                    let n = held_len(fmt, len).expect("checked by parse");
                    let src = &parsed.body[at..at + n];
                    at += n;
                    let store = self.store_mut(i, which);
                    if store.dtype() == fmt {
                        store.read_le(src);
                    } else {
                        tmp.clear();
                        tmp.resize(len, 0.0);
                        decode_le(fmt, codes[which], src, &mut tmp).expect("checked by parse");
                        self.put_state_f32(i, which, &tmp);
                    }
                }
            }
        } else if self.state_is_f32() {
            for ((state, rec), len) in self.states_mut().zip(&parsed.records).zip(lens) {
                let mut at = rec.start;
                debug_assert_eq!(state.len(), len);
                let mut fill = |dst: &mut [f32], bit: u32| {
                    if rec.present & bit != 0 {
                        // Each array has its own length (`array_lens`).
                        let bytes = 4 * dst.len();
                        f32s_le(dst, &parsed.body[at..at + bytes]);
                        at += bytes;
                    }
                };
                let [m, v, v_max, slow] =
                    state.into_parts().map(|h| h.f32_mut().unwrap_or_default());
                fill(m, HAS_M);
                fill(v, HAS_V);
                fill(v_max, HAS_V_MAX);
                fill(slow, HAS_SLOW);
            }
        } else {
            // Compressed state: each array decoded from the checkpoint's f32 values and
            // encoded as this optimizer holds it (a checkpoint saved from the same precision
            // gives back its state exactly; see docs/numerics.md, "Compressed state").
            let mut tmp = Vec::new();
            for (i, (rec, len)) in parsed.records.iter().zip(lens).enumerate() {
                let mut at = rec.start;
                let lens = self.array_lens(i, len);
                for (which, bit) in [HAS_M, HAS_V, HAS_V_MAX, HAS_SLOW].into_iter().enumerate() {
                    if rec.present & bit != 0 {
                        let len = lens[which];
                        tmp.clear();
                        tmp.resize(len, 0.0);
                        f32s_le(&mut tmp, &parsed.body[at..at + 4 * len]);
                        at += 4 * len;
                        self.put_state_f32(i, which, &tmp);
                    }
                }
            }
        }
        if parsed.scaler.is_some() {
            self.set_loss_scaler(parsed.scaler);
        }
        self.restore_counters(
            parsed.info.step_count,
            parsed.info.skipped_count,
            parsed.sched,
        );
        self.restore_groups(parsed.groups);
        Ok(())
    }

    /// Validates a checkpoint exactly as [`Optimizer::load`] does, without loading it, and
    /// returns its counters and the learning rate its schedule state gives. Read the counters
    /// of a checkpoint from here rather than from the optimizer: one `save` is one consistent
    /// snapshot, while queries made around it may see updates that other threads run between
    /// them.
    pub fn checkpoint_info(&self, bytes: &[u8]) -> Result<CheckpointInfo, Error> {
        Ok(self.parse(bytes)?.info)
    }

    /// Every check of [`Optimizer::load`], in the documented order.
    fn parse<'a>(&self, bytes: &'a [u8]) -> Result<Parsed<'a>, Error> {
        if self.buffer_lens().is_empty() {
            return Err(Error::InvalidState(
                "loading a checkpoint before any buffer was registered",
            ));
        }
        let total = check_header(bytes)?;
        if total != bytes.len() as u64 {
            return Err(corrupt(format!(
                "length field says {total} bytes, got {}",
                bytes.len()
            )));
        }
        let body = &bytes[..bytes.len() - 4];
        let stored = u32::from_le_bytes(bytes[bytes.len() - 4..].try_into().expect("4 bytes"));
        if crc32fast::hash(body) != stored {
            return Err(corrupt("checksum mismatch (the checkpoint is damaged)"));
        }
        let mut r = Reader {
            bytes: body,
            pos: HEADER_LEN,
        };
        let config_len = r.len("configuration length", 1)?;
        let saved = r.take(config_len, "configuration")?;
        self.check_config(saved)?;
        let step = r.u64("step count")?;
        let skipped = r.u64("skipped count")?;
        // No run reaches 2^62 updates; larger counters only come from damaged or forged data
        // (and would overflow when stepped).
        if step > 1 << 62 || skipped > 1 << 62 {
            return Err(corrupt(format!(
                "impossible counters: {step} applied, {skipped} skipped updates"
            )));
        }
        let sched = ScheduleState {
            count: r.u64("schedule count")?,
            t_cur: r.u64("schedule t_cur")?,
            t_i: r.u64("schedule t_i")?,
            plateau_lr: r.f64("schedule plateau_lr")?,
            best: r.f64("schedule best")?,
            num_bad_epochs: r.u64("schedule num_bad_epochs")?,
            cooldown_counter: r.u64("schedule cooldown_counter")?,
        };
        sched.check(&self.config().lr).map_err(corrupt)?;
        check_unused_schedule_fields(&self.config().lr, &sched)?;
        let groups = if version_of(bytes) >= 2 {
            self.read_groups(&mut r)?
        } else {
            self.config_group()
        };
        let version = version_of(bytes);
        let (scaler, formats) = match version {
            3 => (Some(read_scaler(&mut r)?), [StateDtype::F32; 2]),
            4 => {
                let flag = r.u32("loss scaler flag")?;
                if flag > 1 || r.u32("reserved word after the loss scaler flag")? != 0 {
                    return Err(corrupt(format!(
                        "loss scaler flag {flag} (0 or 1) or a non-zero reserved word"
                    )));
                }
                let scaler = if flag == 1 {
                    Some(read_scaler(&mut r)?)
                } else {
                    None
                };
                let mut format = |what: &str, allowed: usize| -> Result<StateDtype, Error> {
                    let x = r.u32(what)?;
                    StateDtype::ALL
                        .get(x as usize)
                        .copied()
                        .filter(|_| (x as usize) < allowed)
                        .ok_or_else(|| {
                            corrupt(format!(
                                "{what} {x}: must be {}",
                                StateDtype::NAMES[..allowed]
                                    .iter()
                                    .enumerate()
                                    .map(|(i, n)| format!("{i} ({n})"))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ))
                        })
                };
                // Slow weights are never 8-bit (their configuration refuses it).
                let formats = [format("state format", 3)?, format("slow-weight format", 2)?];
                (scaler, formats)
            }
            _ => (None, [StateDtype::F32; 2]),
        };
        self.check_scaler(scaler.as_ref())?;
        if groups.len() != self.num_groups() {
            return Err(Error::InvalidArgument {
                name: "checkpoint",
                value: format!(
                    "the checkpoint has {} parameter groups, this optimizer {}",
                    groups.len(),
                    self.num_groups()
                ),
                expected: "the optimizer must have the parameter groups the checkpoint was \
                           saved with (the same number, each buffer in the same group)",
            });
        }
        let n = r.len("buffer count", 16)?;
        let lens = self.buffer_lens();
        if n != lens.len() {
            return Err(Error::LengthMismatch {
                what: "number of buffers in the checkpoint".to_string(),
                expected: lens.len(),
                got: n,
            });
        }
        let propagate = self.config().nonfinite == NonFinitePolicy::Propagate;
        let v2 = version >= 2; // versions 2 to 4 store each buffer's group
        let mut decoded = Vec::new();
        let mut records = Vec::with_capacity(n);
        for (i, &want) in lens.iter().enumerate() {
            let group = self.buffer_groups()[i];
            let base = groups[group].base();
            let want_present = self.present_for(base) | self.shape_bit(i);
            if want_present != self.expected_present(i) {
                return Err(Error::InvalidArgument {
                    name: "checkpoint",
                    value: format!(
                        "buffer {i}: its parameter group {group} keeps state arrays \
                         {want_present:#x} in the checkpoint, {:#x} in this optimizer (a base \
                         rule option such as amsgrad differs)",
                        self.expected_present(i)
                    ),
                    expected: "the optimizer must have the parameter groups the checkpoint was \
                               saved with (the same number, each buffer in the same group)",
                });
            }
            let len = r.u64("buffer length")?;
            if len != want as u64 {
                return Err(Error::LengthMismatch {
                    what: format!("buffer {i} in the checkpoint"),
                    expected: want,
                    got: len.min(usize::MAX as u64) as usize,
                });
            }
            let present = r.u32("buffer state flags")?;
            let saved_group = r.u32("buffer group")?;
            if v2 && saved_group as usize != group {
                return Err(Error::InvalidArgument {
                    name: "checkpoint",
                    value: format!(
                        "buffer {i} is in parameter group {saved_group} in the checkpoint, in \
                         group {group} in this optimizer"
                    ),
                    expected: "the optimizer must have the parameter groups the checkpoint was \
                               saved with (the same number, each buffer in the same group)",
                });
            }
            if present ^ want_present == HAS_SHAPE {
                let (saved, mine) = if present & HAS_SHAPE != 0 {
                    ("with", "without")
                } else {
                    ("without", "with")
                };
                return Err(Error::InvalidArgument {
                    name: "checkpoint",
                    value: format!(
                        "buffer {i} was registered {saved} a shape (factored second moments) \
                         in the checkpoint, {mine} one in this optimizer"
                    ),
                    expected: "each buffer registered with the shape it was saved with",
                });
            }
            if present != want_present {
                return Err(corrupt(format!(
                    "buffer {i} carries state arrays {present:#x}, the configuration needs {want_present:#x}"
                )));
            }
            if present & HAS_SHAPE != 0 {
                let rows = r.u64("buffer shape rows")?;
                let cols = r.u64("buffer shape cols")?;
                let mine = self.buffer_shape(i).expect("HAS_SHAPE matches");
                if (rows, cols) != (mine.0 as u64, mine.1 as u64) {
                    return Err(Error::InvalidArgument {
                        name: "checkpoint",
                        value: format!(
                            "buffer {i} has shape ({rows}, {cols}) in the checkpoint, ({}, {}) \
                             in this optimizer",
                            mine.0, mine.1
                        ),
                        expected: "each buffer registered with the shape it was saved with",
                    });
                }
            }
            let lens = self.array_lens(i, want);
            let start = r.pos;
            let bits = [HAS_M, HAS_V, HAS_V_MAX, HAS_SLOW];
            let fmt = |bit: u32| formats[usize::from(bit == HAS_SLOW)];
            let mut size = Some(0usize);
            for (k, &bit) in bits.iter().enumerate().filter(|(_, &b)| present & b != 0) {
                size = size.and_then(|s| s.checked_add(held_len(fmt(bit), lens[k])?));
            }
            let arrays = r.take(
                size.ok_or_else(|| corrupt("buffer size overflows"))?,
                "state arrays",
            )?;
            let roles = (
                matches!(base, Base::RmsProp { .. }),
                matches!(base, Base::Adadelta { .. }),
            );
            let arrays = if formats == [StateDtype::F32; 2] {
                arrays
            } else {
                // Format 4: the arrays decoded as the optimizer decodes them, then checked as
                // f32 values are.
                if formats[0] == StateDtype::Int8 && q8_codes(base).is_none() {
                    return Err(corrupt(format!(
                        "buffer {i}: int8 state for base rule {} (its state cannot be held in                          8 bits: no optimizer writes this)",
                        base.name()
                    )));
                }
                let codes = q8_codes(base).unwrap_or([Q8Code::Signed; 3]);
                let code = [codes[0], codes[1], codes[2], Q8Code::Signed];
                decoded.clear();
                let mut at = 0;
                let mut tmp = Vec::new();
                for (k, &bit) in bits.iter().enumerate().filter(|(_, &b)| present & b != 0) {
                    tmp.clear();
                    tmp.resize(lens[k], 0f32);
                    let n = held_len(fmt(bit), lens[k]).expect("summed above");
                    decode_le(fmt(bit), code[k], &arrays[at..at + n], &mut tmp)
                        .map_err(|e| corrupt(format!("buffer {i}: {e}")))?;
                    at += n;
                    put_f32s(&mut decoded, &tmp);
                }
                &decoded[..]
            };
            let max_exact = formats[0] == StateDtype::F32;
            check_state_values(i, present, lens, arrays, propagate, roles, max_exact)?;
            records.push(BufferRecord { present, start });
        }
        if r.pos != body.len() {
            return Err(corrupt(format!(
                "{} unexpected bytes after the last buffer",
                body.len() - r.pos
            )));
        }
        Ok(Parsed {
            info: CheckpointInfo {
                step_count: step,
                skipped_count: skipped,
                current_lr: sched.lr(&self.config().lr) as f32,
            },
            sched,
            groups,
            scaler,
            formats,
            records,
            body,
        })
    }

    /// Refuses a checkpoint whose dynamic loss scaler (`None`: saved without one) does not
    /// match this optimizer's: both without, or both with the same growth factor, backoff
    /// factor and growth interval (the scale and the counts are state: loaded).
    fn check_scaler(&self, saved: Option<&LossScaler>) -> Result<(), Error> {
        let differs = |value: String| Error::InvalidArgument {
            name: "checkpoint",
            value,
            expected: "the optimizer must have the dynamic loss scaler the checkpoint was saved \
                       with (set, or removed, with set_loss_scaler before loading)",
        };
        match (saved, self.loss_scaler()) {
            (None, None) => Ok(()),
            (Some(_), None) => Err(differs(
                "the checkpoint has a dynamic loss scaler, this optimizer none".to_string(),
            )),
            (None, Some(_)) => Err(differs(
                "the checkpoint has no dynamic loss scaler, this optimizer has one".to_string(),
            )),
            (Some(a), Some(b)) if a.factors() != b.factors() => Err(differs(format!(
                "the loss scaler's (growth_factor, backoff_factor, growth_interval) are {:?} \
                 in the checkpoint, {:?} in this optimizer",
                a.factors(),
                b.factors()
            ))),
            _ => Ok(()),
        }
    }

    /// The groups section of a version-2 checkpoint, each group validated as
    /// [`Optimizer::add_group`] validates one.
    fn read_groups(&self, r: &mut Reader<'_>) -> Result<Vec<Group>, Error> {
        let count = r.len("group count", 20)?;
        if count == 0 || count > MAX_GROUPS {
            return Err(corrupt(format!("{count} parameter groups")));
        }
        let mut groups = Vec::with_capacity(count);
        for g in 0..count {
            let lr = r.f64("group lr")?;
            let wd = r.f64("group weight_decay")?;
            let base = read_base(r, g)?;
            let lr = (!lr.is_nan()).then_some(lr);
            if base.kind() != self.config().base.kind() {
                return Err(corrupt(format!(
                    "parameter group {g} is of base rule {}, its checkpoint's configuration of {}",
                    base.name(),
                    self.config().base.name()
                )));
            }
            let group = Group::new(self.config(), lr, wd, base)
                .map_err(|e| corrupt(format!("parameter group {g}: {e}")))?;
            groups.push(group);
        }
        Ok(groups)
    }

    /// What differs in configuration field `name` whose saved bytes are `saved`: for the base
    /// rule's kind, both rules by name.
    fn difference(&self, name: &str, saved: Option<&[u8]>) -> String {
        let kind = saved
            .filter(|_| name == "base")
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_le_bytes);
        match kind {
            Some(k) => format!(
                "the base rule differs: the checkpoint is of {}, this optimizer is {}",
                base_specs()
                    .iter()
                    .find(|s| s.kind == k)
                    .map_or_else(|| format!("an unknown kind {k}"), |s| s.name.to_string()),
                self.config().base.name()
            ),
            None => format!("configuration field `{name}` differs"),
        }
    }

    /// Compares a saved configuration section with this optimizer's, naming the first
    /// differing field.
    fn check_config(&self, saved: &[u8]) -> Result<(), Error> {
        let mine = encode_config(self.config());
        for &(name, a, b) in &mine.fields {
            if saved.get(a..b) != Some(&mine.buf[a..b]) {
                return Err(Error::InvalidArgument {
                    name: "checkpoint",
                    value: self.difference(name, saved.get(a..b)),
                    expected:
                        "the optimizer must have the configuration the checkpoint was saved with",
                });
            }
        }
        if saved.len() != mine.buf.len() {
            return Err(Error::InvalidArgument {
                name: "checkpoint",
                value: "configuration differs in length".to_string(),
                expected: "the optimizer must have the configuration the checkpoint was saved with",
            });
        }
        Ok(())
    }

    /// Saves a checkpoint to `path` atomically: a temporary file in the same directory is
    /// written, flushed and fsynced, renamed over `path`, and the directory is fsynced. A crash
    /// at any point leaves either the previous file or the new one, never a mix.
    pub fn save_file(&self, path: impl AsRef<Path>) -> Result<(), Error> {
        let path = path.as_ref();
        check_path(path)?;
        write_atomic(path, &self.save())
    }

    /// Loads a checkpoint file (see [`Optimizer::load`]). Reads the header first and then at
    /// most the size a checkpoint of this optimizer has ([`Optimizer::checkpoint_size`]), so
    /// that a large file, a device such as `/dev/zero` or a pipe is refused without reading it
    /// all.
    pub fn load_file(&mut self, path: impl AsRef<Path>) -> Result<(), Error> {
        let path = path.as_ref();
        check_path(path)?;
        if self.buffer_lens().is_empty() {
            return Err(Error::InvalidState(
                "loading a checkpoint before any buffer was registered",
            ));
        }
        let bytes = self.read_bounded(path)?;
        self.load(&bytes)
    }

    /// The bytes of a checkpoint file, reading no more than the header, the configuration
    /// section and this optimizer's checkpoint size (plus one byte to see that the file ends).
    fn read_bounded(&self, path: &Path) -> Result<Vec<u8>, Error> {
        let io = |e: std::io::Error| Error::Io(format!("reading {}: {e}", path.display()));
        let f = File::open(path).map_err(io)?;
        let mut f = f.take(0);
        let mut read = |bytes: &mut Vec<u8>, upto: usize| -> Result<(), Error> {
            let have = bytes.len() as u64;
            f.set_limit((upto as u64).saturating_sub(have));
            f.read_to_end(bytes).map(|_| ()).map_err(io)
        };
        let mut bytes = Vec::new();
        read(&mut bytes, HEADER_LEN + 8)?;
        if bytes.len() < HEADER_LEN + 8 {
            return Ok(bytes); // too short: `load` says so
        }
        let total = check_header(&bytes)?;
        // A checkpoint of this optimizer's groups has the size of this optimizer's in its
        // version (the live values may differ, their sizes do not); one of format 4 at most
        // the size with float32 arrays and a loss scaler (its formats are checked by `load`).
        let config_len = encode_config(self.config()).buf.len();
        let version = version_of(&bytes);
        let f32s = [StateDtype::F32; 2];
        let expected = match version {
            4 => self.checkpoint_size_as(config_len, 4, f32s, true),
            _ => self.checkpoint_size_with(config_len, version),
        };
        let fits = if version == 4 {
            total <= expected as u64
        } else {
            total == expected as u64
        };
        if !fits {
            // Name the configuration field that differs, if the section is of a sane size.
            let config_len = u64::from_le_bytes(bytes[HEADER_LEN..][..8].try_into().expect("8"));
            let config_end = (HEADER_LEN as u64 + 8).saturating_add(config_len);
            if config_end <= total.min(expected as u64 + MAX_CONFIG_GROWTH) {
                read(&mut bytes, config_end as usize)?;
                if bytes.len() as u64 == config_end {
                    self.check_config(&bytes[HEADER_LEN + 8..])?;
                }
            }
            return Err(Error::LengthMismatch {
                what: format!(
                    "size in bytes of the checkpoint file {} (an optimizer with this \
                     configuration and these buffers saves this many)",
                    path.display()
                ),
                expected,
                got: total.min(usize::MAX as u64) as usize,
            });
        }
        let expected = total as usize; // <= the expected size computed above
        read(&mut bytes, expected + 1)?;
        if bytes.len() > expected {
            return Err(corrupt(format!(
                "{} continues past the {expected} bytes its header announces",
                path.display()
            )));
        }
        Ok(bytes)
    }
}

/// How much longer than this optimizer's own a configuration section read to name the
/// differing field may be (a schedule's lists can differ in length).
const MAX_CONFIG_GROWTH: u64 = 1 << 20;

/// Refuses a path that cannot reach the operating system unchanged: empty, or containing a NUL
/// byte (a C string would end there, naming another file).
fn check_path(path: &Path) -> Result<(), Error> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    if bytes.is_empty() {
        return Err(Error::invalid("path", "\"\"", "must not be empty"));
    }
    if let Some(at) = bytes.iter().position(|&b| b == 0) {
        return Err(Error::invalid(
            "path",
            format!("{:?}", path.display().to_string()),
            if at == 0 {
                "must not contain a NUL byte (it starts with one)"
            } else {
                "must not contain a NUL byte (a C string would end there and name another file)"
            },
        ));
    }
    Ok(())
}

/// Rejects schedule states whose fields that the schedule does not use differ from their
/// initial values (the schedule's own fields are checked by its catalog entry,
/// `ScheduleState::check`): a crafted checkpoint must not carry state no run can produce.
fn check_unused_schedule_fields(s: &Schedule, st: &ScheduleState) -> Result<(), Error> {
    let init = ScheduleState::new(s);
    let uses_restarts = matches!(s, Schedule::CosineAnnealingWarmRestarts { .. });
    let uses_plateau = s.is_metric_driven();
    if (!uses_restarts && (st.t_cur, st.t_i) != (init.t_cur, init.t_i))
        || (!uses_plateau
            && (
                st.plateau_lr.to_bits(),
                st.best.to_bits(),
                st.num_bad_epochs,
                st.cooldown_counter,
            ) != (
                init.plateau_lr.to_bits(),
                init.best.to_bits(),
                init.num_bad_epochs,
                init.cooldown_counter,
            ))
    {
        return Err(corrupt(format!(
            "schedule state {st:?} is impossible: fields this schedule does not use must hold \
             their initial values {init:?}"
        )));
    }
    Ok(())
}

/// Write-to-temporary, fsync, rename, fsync-directory. The temporary name does not derive
/// from the target's (a file name near the 255-byte limit would not leave room for a prefix and
/// suffix): `.flatopt-<pid>-<counter>-<nanoseconds>.tmp`, at most 62 bytes, created exclusively.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let io = |what: &str, e: std::io::Error| Error::Io(format!("{what} {}: {e}", path.display()));
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => Path::new(".").to_path_buf(),
    };
    if path.file_name().is_none() {
        return Err(Error::invalid("path", path.display(), "must name a file"));
    }
    // The rename would replace a device, FIFO or socket of that name with the checkpoint (run
    // as root, `save_file("/dev/null")` would put a regular file in place of /dev/null).
    // A symlink is replaced itself (its target is untouched); a directory fails the rename.
    if let Ok(m) = fs::symlink_metadata(path) {
        let t = m.file_type();
        if !(t.is_file() || t.is_symlink() || t.is_dir()) {
            return Err(Error::invalid(
                "path",
                path.display(),
                "names a device, FIFO or socket, which the checkpoint file would replace",
            ));
        }
    }
    let (tmp, mut f) =
        create_temporary(&dir).map_err(|e| io("creating a temporary file for", e))?;
    let result = (|| {
        f.write_all(bytes).map_err(|e| io("writing", e))?;
        f.sync_all().map_err(|e| io("syncing", e))?;
        drop(f);
        fs::rename(&tmp, path).map_err(|e| io("renaming the temporary file over", e))?;
        // The rename is durable once the directory entry is: fsync the directory.
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io("syncing the directory of", e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// A new file of a name that no other writer uses, in `dir`.
fn create_temporary(dir: &Path) -> std::io::Result<(std::path::PathBuf, File)> {
    let mut attempts = 0;
    loop {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let tmp = dir.join(format!(
            ".flatopt-{}-{}-{nanos}.tmp",
            std::process::id(),
            TMP_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
        {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempts < 16 => {
                attempts += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

static TMP_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
