//! The codecs of compressed optimizer state on every tier (`docs/numerics.md`, "Compressed
//! state"): the 8-bit blockwise code's 512 patterns decoded against their definition, its
//! quantizer against a model that picks the nearest code by enumeration in f64, stochastic
//! bf16 rounding against its definition and unbiasedness, and every tier bit for bit against
//! the scalar one over odd lengths, misaligned starts, hostile and non-finite values.

#[macro_use]
mod common;

use common::{on_tier, Rng, HOSTILE_FINITE};
use flatopt::kernels::{
    dequantize_q8, narrow_bf16_stochastic, q8_block_count, quantize_q8, quantize_q8_stochastic,
    Q8Code, SrKey, Stream, Q8_BLOCK,
};
use flatopt::{Error, Tier};

/// The model value of a code in units of the block scale (NaN for the NaN code), from the
/// definition: signed `k` in 1..=126 is `(1 + m/8) * 2^(e - 127)` with `e, m` the exponent and
/// 3-bit mantissa of the pattern `k + 890`; unsigned `c` in 1..=253 is the square of its root
/// [`model_code_root`].
fn model_code_value(code: Q8Code, c: u8) -> f64 {
    let pattern = |x: u32| {
        let (e, m) = (x >> 3, x & 7);
        (1.0 + f64::from(m) / 8.0) * 2f64.powi(e as i32 - 127)
    };
    match code {
        Q8Code::Signed => {
            let k = u32::from(c & 127);
            let sign = if c & 0x80 != 0 { -1.0 } else { 1.0 };
            match k {
                0 if c == 0x80 => f64::NAN,
                0 => 0.0,
                127 => sign * f64::INFINITY,
                _ => sign * pattern(k + 890),
            }
        }
        Q8Code::Unsigned => match c {
            0 => 0.0,
            254 => f64::INFINITY,
            255 => f64::NAN,
            _ => model_code_root(c).powi(2),
        },
    }
}

/// The unsigned code's square root of a finite `c` in 1..=253: `(1 + m/32) * 2^(e - 127)` with
/// `e, m` the exponent and 5-bit mantissa of the pattern `c + 3811` (0 for 0).
fn model_code_root(c: u8) -> f64 {
    if c == 0 {
        return 0.0;
    }
    let x = u32::from(c) + 3811;
    let (e, m) = (x >> 5, x & 31);
    (1.0 + f64::from(m) / 32.0) * 2f64.powi(e as i32 - 127)
}

/// The finite codes of one sign, ascending, with the value the quantizer rounds to: the value
/// for the signed code, its square root for the unsigned one.
fn finite_codes(code: Q8Code) -> Vec<(f64, u8)> {
    match code {
        Q8Code::Signed => (0..=126).map(|c| (model_code_value(code, c), c)).collect(),
        Q8Code::Unsigned => (0..=253).map(|c| (model_code_root(c), c)).collect(),
    }
}

/// What the quantizer rounds of a normalized magnitude `q` (f32): `q` for the signed code,
/// its f32 square root for the unsigned one.
fn model_rounded(code: Q8Code, q: f32) -> f64 {
    match code {
        Q8Code::Signed => f64::from(q),
        Q8Code::Unsigned => f64::from(q.sqrt()),
    }
}

/// The model quantizer of one element of a block with scale `s`: the normalized magnitude
/// `q = (|x| * pre) * f32(1 / (s * pre))` in f32 (`pre = 2^64` for a subnormal `s`), then the
/// nearest code by enumeration of [`finite_codes`] (ties to the code whose pattern is even,
/// except that a tie between 0 and the smallest code goes to the smallest code; the unsigned
/// code's nonzero roots never go to 0); specials as defined.
fn model_encode(code: Q8Code, x: f32, s: f32) -> u8 {
    let pre: f32 = if s != 0.0 && s < f32::MIN_POSITIVE {
        2f32.powi(64)
    } else {
        1.0
    };
    let inv = if s == 0.0 { 0.0 } else { 1.0 / (s * pre) };
    let neg = x.is_sign_negative();
    match code {
        Q8Code::Signed if x.is_nan() => return 0x80,
        Q8Code::Signed if x.is_infinite() => return if neg { 0xff } else { 127 },
        Q8Code::Unsigned if x.is_nan() => return 255,
        Q8Code::Unsigned if x == f32::INFINITY => return 254,
        Q8Code::Unsigned if neg => return 0,
        _ => {}
    }
    let q = model_rounded(code, (x.abs() * pre) * inv);
    let codes = finite_codes(code);
    let mut best = codes[0];
    for &(v, c) in &codes[1..] {
        let (db, dc) = ((q - best.0).abs(), (q - v).abs());
        let tie_goes_up = best.1 == 0 || c % 2 == if code == Q8Code::Signed { 0 } else { 1 };
        if dc < db || (dc == db && tie_goes_up) {
            best = (v, c);
        }
    }
    let k = best.1;
    match code {
        Q8Code::Signed if k != 0 && neg => k | 0x80,
        Q8Code::Unsigned if k == 0 && q > 0.0 => 1,
        _ => k,
    }
}

/// The model of stochastic rounding into the 8-bit code: with `q` as in [`model_encode`] (the
/// square root for the unsigned code) between two neighbouring nonzero codes `lo <= q < hi`,
/// the code rounds up when the dropped fraction `(q - lo) / (hi - lo)` in units of `2^-d` plus
/// `2^(d - 16)` times the 16 random bits `r` reaches `2^d` (`d` = 20 for the signed code, 18 for
/// the unsigned one); below the smallest nonzero code and at the top, as rounding to nearest.
fn model_encode_sr(code: Q8Code, x: f32, s: f32, r: u32) -> u8 {
    let nearest = model_encode(code, x, s);
    if !x.is_finite() || (code == Q8Code::Unsigned && x.is_sign_negative()) || s == 0.0 {
        return nearest;
    }
    let pre: f32 = if s < f32::MIN_POSITIVE {
        2f32.powi(64)
    } else {
        1.0
    };
    let q = model_rounded(code, (x.abs() * pre) * (1.0 / (s * pre)));
    let codes = finite_codes(code);
    let Some(w) = codes[1..].windows(2).find(|w| w[0].0 <= q && q < w[1].0) else {
        return nearest;
    };
    let d = match code {
        Q8Code::Signed => 20,
        Q8Code::Unsigned => 18,
    };
    let dropped = ((q - w[0].0) / (w[1].0 - w[0].0) * f64::from(1u32 << d)) as u32;
    let k = if dropped + (r << (d - 16)) >= 1 << d {
        w[1].1
    } else {
        w[0].1
    };
    match code {
        Q8Code::Signed if x.is_sign_negative() => k | 0x80,
        _ => k,
    }
}

fn model_scale(block: &[f32]) -> f32 {
    block
        .iter()
        .filter(|x| x.is_finite())
        .fold(0f32, |m, x| if x.abs() > m { x.abs() } else { m })
}

/// The model's values known by heart, so that a wrong model cannot pass the checks.
#[test]
fn model_code_values_by_heart() {
    assert_eq!(model_code_value(Q8Code::Signed, 126), 1.0);
    assert_eq!(model_code_value(Q8Code::Signed, 0x80 | 126), -1.0);
    assert_eq!(model_code_value(Q8Code::Signed, 118), 0.5);
    assert_eq!(model_code_value(Q8Code::Signed, 125), 0.9375);
    assert_eq!(model_code_value(Q8Code::Signed, 1), 1.375 * 2f64.powi(-16));
    assert_eq!(model_code_value(Q8Code::Unsigned, 253), 1.0);
    assert_eq!(
        model_code_value(Q8Code::Unsigned, 1),
        (1.125 * 2f64.powi(-8)).powi(2)
    );
    assert_eq!(
        model_code_value(Q8Code::Unsigned, 252),
        (63.0f64 / 64.0).powi(2)
    );
    assert_eq!(model_code_value(Q8Code::Unsigned, 221), 0.25);
    assert!(model_code_value(Q8Code::Signed, 0x80).is_nan());
    assert_eq!(model_code_value(Q8Code::Signed, 0xff), f64::NEG_INFINITY);
    assert_eq!(model_encode(Q8Code::Signed, 0.97, 1.0), 126);
    assert_eq!(model_encode(Q8Code::Signed, -0.5, 1.0), 0x80 | 118);
    assert_eq!(model_encode(Q8Code::Unsigned, -0.5, 1.0), 0);
    assert_eq!(model_encode(Q8Code::Unsigned, 0.25, 1.0), 221);
    assert_eq!(model_encode(Q8Code::Unsigned, 1e-30, 1.0), 1);
    assert_eq!(model_encode(Q8Code::Unsigned, 0.0, 1.0), 0);
}

/// Every one of the 256 patterns of each code, decoded with several scales (one block each),
/// against `model value * scale` rounded once to f32 (the model value has 4 significant bits,
/// or 12 for the unsigned code's squares, so the f64 product is exact).
fn check_decode_every_code(tier: Tier) {
    for code in [Q8Code::Signed, Q8Code::Unsigned] {
        let codes: Vec<u8> = (0..=255).collect();
        for s in [1.0f32, 0.0, 3.0e38, 1e-45, 1.1e-38, 7.25, 1e-20] {
            let mut out = vec![0f32; 256];
            dequantize_q8(tier, code, &codes, &[s], &mut out).unwrap();
            for (&c, &y) in codes.iter().zip(&out) {
                let v = model_code_value(code, c);
                let want = if v.is_finite() {
                    (v * f64::from(s)) as f32
                } else {
                    v as f32
                };
                if want.is_nan() {
                    assert!(y.is_nan(), "{code:?} code {c} scale {s}: {y}");
                } else {
                    assert_eq!(
                        y.to_bits(),
                        want.to_bits(),
                        "{code:?} code {c} scale {s}: {y} != {want}"
                    );
                }
            }
        }
    }
}

/// Values that stress the quantizer, block by block: random ones of many scales, ties and
/// near-ties of the 3-bit rounding, the boundaries around the smallest code, hostile finite
/// values, ±Inf and NaN, all-zero and subnormal-scale blocks.
fn sample_blocks(rng: &mut Rng) -> Vec<Vec<f32>> {
    let mut blocks = Vec::new();
    for &scale in &[1.0, 1e-3, 1e3, 1e-30, 1e30, 1e-40] {
        blocks.push(rng.vec(Q8_BLOCK, scale));
    }
    // Every tie and its neighbours with scale 1 (a 1.0 in the block).
    let mut ties = vec![1.0f32];
    for k in 764..1016u32 {
        let mid = (k << 20) | 0x8_0000;
        for d in [-1i32, 0, 1] {
            ties.push(f32::from_bits((mid as i32 + d) as u32));
        }
    }
    // The unsigned code's ties: the squares of its roots' midpoints, and their neighbours.
    for k in 3812..4064u32 {
        let mid = f32::from_bits((k << 18) | 0x2_0000);
        let q = mid * mid;
        for d in -1i32..=1 {
            ties.push(f32::from_bits((q.to_bits() as i32 + d) as u32));
        }
    }
    // Half the signed code's smallest; around the unsigned code's smallest (its square) and
    // far below it.
    let min_u = f32::from_bits(3812 << 18).powi(2);
    for half in [0x3730_0000u32, min_u.to_bits(), 0x2f40_0000, 1] {
        for d in -2..=2i32 {
            ties.push(f32::from_bits((half as i32 + d).max(0) as u32));
        }
    }
    for chunk in ties.chunks(Q8_BLOCK - 1) {
        let mut b = vec![1.0f32];
        b.extend_from_slice(chunk);
        blocks.push(b.iter().map(|x| -x).collect());
        blocks.push(b);
    }
    let mut hostile: Vec<f32> = HOSTILE_FINITE.to_vec();
    hostile.extend([f32::INFINITY, f32::NEG_INFINITY, f32::NAN, -f32::NAN]);
    hostile.push(f32::from_bits(0x7fc0_1234));
    blocks.push(hostile.clone());
    blocks.push(vec![0.0; 17]);
    blocks.push(vec![f32::INFINITY, 0.0, -0.0, f32::NAN]);
    blocks.push(vec![1e-45, -1e-45, 3e-45, 0.0]);
    blocks.push(vec![1.1754942e-38, 1e-39, -5e-40]);
    for _ in 0..40 {
        let n = 1 + rng.below(Q8_BLOCK);
        let b = (0..n)
            .map(|_| {
                if rng.below(5) == 0 {
                    hostile[rng.below(hostile.len())]
                } else {
                    f32::from_bits(rng.next_u64() as u32)
                }
            })
            .collect();
        blocks.push(b);
    }
    blocks
}

/// The quantizer, block by block, against the model (scale and every code).
fn check_encode_against_model(tier: Tier) {
    let mut rng = Rng(16);
    for code in [Q8Code::Signed, Q8Code::Unsigned] {
        for block in sample_blocks(&mut rng) {
            let mut codes = vec![0u8; block.len()];
            let mut scales = [0f32];
            quantize_q8(tier, code, &block, &mut codes, &mut scales).unwrap();
            let s = model_scale(&block);
            assert_eq!(
                scales[0].to_bits(),
                s.to_bits(),
                "{code:?} scale of {block:?}"
            );
            for (&x, &c) in block.iter().zip(&codes) {
                assert_eq!(
                    c,
                    model_encode(code, x, s),
                    "{code:?} {x:e} ({:#x}) in a block of scale {s:e}",
                    x.to_bits()
                );
            }
        }
    }
}

/// The stochastic quantizer, block by block, against the model with the random bits of
/// [`model_bits`] (across the 2^32 boundary of the index, both halves of a pair's hash).
fn check_encode_sr_against_model(tier: Tier) {
    let mut rng = Rng(19);
    let blocks = sample_blocks(&mut rng);
    for (b, (stream, first)) in [
        (Stream::M, 0u64),
        (Stream::V, (1 << 32) - 100),
        (Stream::VMax, 7 << 33),
    ]
    .into_iter()
    .enumerate()
    {
        let key = SrKey {
            seed: 11 + b as u64,
            step: 3,
            stream,
        };
        for code in [Q8Code::Signed, Q8Code::Unsigned] {
            for block in &blocks {
                let mut codes = vec![0u8; block.len()];
                let mut scales = [0f32];
                quantize_q8_stochastic(tier, code, key, first, block, &mut codes, &mut scales)
                    .unwrap();
                let s = model_scale(block);
                assert_eq!(scales[0].to_bits(), s.to_bits());
                for (j, (&x, &c)) in block.iter().zip(&codes).enumerate() {
                    let r = model_bits(key, first + j as u64);
                    assert_eq!(
                        c,
                        model_encode_sr(code, x, s, r),
                        "{code:?} {x:e} ({:#x}) scale {s:e} r {r:#x}",
                        x.to_bits()
                    );
                }
            }
        }
    }
}

/// Stochastic rounding into the 8-bit code is unbiased: the mean of many roundings of one
/// value (in a block whose scale is 1) is the value; for the unsigned code, which rounds the
/// square root, the mean of the decoded roots is the value's root.
#[test]
fn q8_stochastic_rounding_is_unbiased() {
    let n = 256 * 800;
    for (code, x) in [
        (Q8Code::Unsigned, 0.3f32),
        (Q8Code::Unsigned, 1.37e-3),
        (Q8Code::Signed, -0.0123),
        (Q8Code::Signed, 0.77),
    ] {
        let src: Vec<f32> = (0..n).map(|i| if i % 256 == 0 { 1.0 } else { x }).collect();
        let (mut c, mut s) = (vec![0u8; n], vec![0f32; q8_block_count(n)]);
        let key = SrKey {
            seed: 4,
            step: 9,
            stream: Stream::V,
        };
        quantize_q8_stochastic(Tier::Scalar, code, key, 0, &src, &mut c, &mut s).unwrap();
        let mut y = vec![0f32; n];
        dequantize_q8(Tier::Scalar, code, &c, &s, &mut y).unwrap();
        let root = code == Q8Code::Unsigned;
        let vals: Vec<f64> = (0..n)
            .filter(|i| i % 256 != 0)
            .map(|i| {
                if root {
                    f64::from(y[i]).sqrt()
                } else {
                    f64::from(y[i])
                }
            })
            .collect();
        let mean = vals.iter().sum::<f64>() / vals.len() as f64;
        let x = if root { x.sqrt() } else { x };
        // Two neighbouring codes 1/8 of the value apart at most: the mean's standard deviation
        // is at most x / 16 / sqrt(count); 5 of them.
        let tol = 5.0 * f64::from(x.abs()) / 16.0 / (vals.len() as f64).sqrt();
        assert!(
            (mean - f64::from(x)).abs() <= tol,
            "{code:?} {x}: mean {mean} (tolerance {tol})"
        );
    }
}

/// Decoding what was encoded gives each finite value back within half a code step: at most
/// 1/16 of it relative (signed), 1/31 (unsigned: half a step of 5 bits in the root, 1/64,
/// squared), or, below the smallest code, its distance to 0 or that code.
fn check_round_trip_error(tier: Tier) {
    let mut rng = Rng(17);
    for code in [Q8Code::Signed, Q8Code::Unsigned] {
        for &scale in &[1.0, 1e-6, 1e6, 1e-35] {
            let x: Vec<f32> = rng
                .vec(4 * Q8_BLOCK + 7, scale)
                .into_iter()
                .map(|v| if code == Q8Code::Unsigned { v.abs() } else { v })
                .collect();
            let mut codes = vec![0u8; x.len()];
            let mut scales = vec![0f32; q8_block_count(x.len())];
            quantize_q8(tier, code, &x, &mut codes, &mut scales).unwrap();
            let mut y = vec![0f32; x.len()];
            dequantize_q8(tier, code, &codes, &scales, &mut y).unwrap();
            for (i, (&a, &b)) in x.iter().zip(&y).enumerate() {
                let s = f64::from(scales[i / Q8_BLOCK]);
                let (smallest, rel) = match code {
                    Q8Code::Signed => (1.375 * 2f64.powi(-16), 16.0),
                    Q8Code::Unsigned => ((1.125 * 2f64.powi(-8)).powi(2), 31.0),
                };
                let smallest = smallest * s;
                let (a, b) = (f64::from(a), f64::from(b));
                let bound = (a.abs() / rel).max(smallest) * (1.0 + 1e-6) + s * 1e-7;
                assert!(
                    (a - b).abs() <= bound,
                    "{code:?} {a:e} -> {b:e} (scale {s:e})"
                );
            }
            // The largest magnitude of each block comes back exactly.
            for (i, (b, &s)) in x.chunks(Q8_BLOCK).zip(&scales).enumerate() {
                let j = b.iter().position(|v| v.abs() == s).unwrap();
                assert_eq!(y[i * Q8_BLOCK + j].abs(), s);
            }
        }
    }
}

/// The definition of the random bits, written out again: SplitMix64's finalizer and
/// `lowbias32` of the stream's pair, the low 16 bits for M and VMax, the high 16 for V and Slow.
fn model_bits(key: SrKey, index: u64) -> u32 {
    fn sm(z: u64) -> u64 {
        let mut z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    let hi = index >> 32;
    let pair = match key.stream {
        Stream::M | Stream::V => 0u64,
        Stream::VMax | Stream::Slow => 1,
    };
    let z = sm(sm(sm(key.seed) ^ key.step) ^ (pair << 32 | hi));
    let k = (z >> 32) as u32 ^ z as u32;
    let mut x = index as u32 ^ k;
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    match key.stream {
        Stream::M | Stream::VMax => x & 0xffff,
        Stream::V | Stream::Slow => x >> 16,
    }
}

fn model_bf16_sr(x: f32, r: u32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        ((b >> 16) | 0x40) as u16
    } else {
        ((b + r) >> 16) as u16
    }
}

/// Stochastic bf16 rounding against its definition, across the 2^32 boundary of the index.
fn check_bf16_sr_against_model(tier: Tier) {
    let mut rng = Rng(18);
    let mut x: Vec<f32> = (0..997)
        .map(|_| f32::from_bits(rng.next_u64() as u32))
        .collect();
    x.extend(HOSTILE_FINITE);
    x.extend([
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        f32::MAX,
        -f32::MAX,
    ]);
    for (seed, step, stream, first) in [
        (0u64, 1u64, Stream::M, 0u64),
        (42, 7, Stream::V, (1 << 32) - 500),
        (u64::MAX, u64::MAX, Stream::Slow, u64::MAX - x.len() as u64),
        (3, 2, Stream::VMax, 5 << 32),
    ] {
        let key = SrKey { seed, step, stream };
        let mut out = vec![0u16; x.len()];
        narrow_bf16_stochastic(tier, key, first, &x, &mut out).unwrap();
        for (j, (&v, &h)) in x.iter().zip(&out).enumerate() {
            let r = model_bits(key, first + j as u64);
            assert_eq!(h, model_bf16_sr(v, r), "{v:e} at {}", first + j as u64);
            assert_eq!(key.bits(first + j as u64), r);
        }
    }
}

/// The mean of many stochastic roundings of one value is the value (unbiased), and the two
/// neighbouring bf16 values are the only results.
#[test]
fn bf16_stochastic_rounding_is_unbiased() {
    let n = 200_000;
    for x in [1.0f32 + 2f32.powi(-10), -3.3e-5, 0.1, 1e-39] {
        let src = vec![x; n];
        let mut out = vec![0u16; n];
        let key = SrKey {
            seed: 9,
            step: 3,
            stream: Stream::V,
        };
        narrow_bf16_stochastic(Tier::Scalar, key, 12345, &src, &mut out).unwrap();
        let lo = x.to_bits() >> 16;
        let mean: f64 = out
            .iter()
            .map(|&h| {
                assert!(u32::from(h) == lo || u32::from(h) == lo + 1, "{x}: {h:#x}");
                f64::from(f32::from_bits(u32::from(h) << 16))
            })
            .sum::<f64>()
            / n as f64;
        let ulp = f64::from(f32::from_bits((lo + 1) << 16)) - f64::from(f32::from_bits(lo << 16));
        // The standard deviation of the mean is at most ulp / (2 sqrt(n)): 5 of them.
        let tol = 5.0 * ulp.abs() / (2.0 * (n as f64).sqrt());
        assert!(
            (mean - f64::from(x)).abs() <= tol,
            "{x}: mean {mean} (tolerance {tol})"
        );
    }
}

/// Different streams, steps and seeds give different random bits (a key that ignored one of
/// them would make two buffers, or two updates, round alike).
#[test]
fn random_bits_depend_on_every_counter_part() {
    let base = SrKey {
        seed: 1,
        step: 1,
        stream: Stream::M,
    };
    let variants = [
        SrKey { seed: 2, ..base },
        SrKey { step: 2, ..base },
        SrKey {
            stream: Stream::V,
            ..base
        },
    ];
    for v in variants {
        let same = (0..1000u64).filter(|&i| v.bits(i) == base.bits(i)).count();
        assert!(same < 3, "{v:?}: {same} of 1000 equal");
    }
    let same = (0..1000u64)
        .filter(|&i| base.bits(i) == base.bits(i + (1 << 32)))
        .count();
    assert!(same < 3, "upper half of the index ignored: {same}");
}

/// Every tier against the scalar one, bit for bit: quantizing, dequantizing and stochastic
/// narrowing over odd lengths (partial blocks) and misaligned starts, with hostile values.
fn check_against_scalar(tier: Tier) {
    let mut rng = Rng(19);
    for &n in &[1usize, 7, 15, 16, 17, 255, 256, 257, 511, 1000, 1029] {
        for start in 0..4usize {
            let len = n + start;
            let mut x: Vec<f32> = (0..len)
                .map(|i| match i % 5 {
                    0 => HOSTILE_FINITE[rng.below(HOSTILE_FINITE.len())],
                    1 => f32::from_bits(rng.next_u64() as u32),
                    _ => rng.normal(1e-3),
                })
                .collect();
            if n > 20 {
                x[start + 3] = f32::NAN;
                x[start + 9] = f32::NEG_INFINITY;
            }
            let x = &x[start..];
            for code in [Q8Code::Signed, Q8Code::Unsigned] {
                let blocks = q8_block_count(n);
                let run = |t: Tier| {
                    let mut codes = vec![0u8; n + start];
                    let mut scales = vec![0f32; blocks];
                    quantize_q8(t, code, x, &mut codes[start..], &mut scales).unwrap();
                    let key = SrKey {
                        seed: 3,
                        step: n as u64,
                        stream: Stream::V,
                    };
                    let (mut sr, mut sr_scales) = (vec![0u8; n], vec![0f32; blocks]);
                    let first = (1u64 << 32) - 700;
                    quantize_q8_stochastic(t, code, key, first, x, &mut sr, &mut sr_scales)
                        .unwrap();
                    let mut y = vec![0f32; n + start];
                    dequantize_q8(t, code, &codes[start..], &scales, &mut y[start..]).unwrap();
                    (
                        codes,
                        common::bits(&scales),
                        common::bits(&y),
                        sr,
                        sr_scales,
                    )
                };
                assert!(
                    run(tier) == run(Tier::Scalar),
                    "{code:?} n {n} start {start}"
                );
            }
            let key = SrKey {
                seed: n as u64,
                step: start as u64 + 1,
                stream: Stream::M,
            };
            let first = (1u64 << 32) - 300;
            let run = |t: Tier| {
                let mut out = vec![0u16; n + start];
                narrow_bf16_stochastic(t, key, first, x, &mut out[start..]).unwrap();
                out
            };
            assert_eq!(run(tier), run(Tier::Scalar), "bf16 n {n} start {start}");
        }
    }
}

/// Unequal lengths are refused, naming what, and nothing is written.
fn check_length_errors(tier: Tier) {
    let x = [1.0f32; 300];
    let mut codes = [7u8; 300];
    let mut scales = [7.0f32; 1];
    let e = quantize_q8(tier, Q8Code::Signed, &x, &mut codes, &mut scales).unwrap_err();
    assert!(
        matches!(
            e,
            Error::LengthMismatch {
                expected: 2,
                got: 1,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("256"), "{e}");
    assert_eq!((codes, scales), ([7; 300], [7.0]));
    let mut short = [7u8; 299];
    let mut scales = [7.0f32; 2];
    let e = quantize_q8(tier, Q8Code::Unsigned, &x, &mut short, &mut scales).unwrap_err();
    assert!(matches!(e, Error::LengthMismatch { .. }), "{e}");
    assert_eq!(scales, [7.0; 2]);
    let mut y = [7.0f32; 300];
    let e = dequantize_q8(tier, Q8Code::Signed, &codes, &[1.0], &mut y).unwrap_err();
    assert!(matches!(e, Error::LengthMismatch { .. }), "{e}");
    assert_eq!(y, [7.0; 300]);
    let mut h = [7u16; 299];
    let key = SrKey {
        seed: 0,
        step: 1,
        stream: Stream::M,
    };
    let e = narrow_bf16_stochastic(tier, key, 0, &x, &mut h).unwrap_err();
    assert!(matches!(e, Error::LengthMismatch { .. }), "{e}");
    assert_eq!(h, [7; 299]);
}

per_tier_tests! {
    {
        decode_every_code => check_decode_every_code,
        encode_against_model => check_encode_against_model,
        encode_stochastic_against_model => check_encode_sr_against_model,
        round_trip_error => check_round_trip_error,
        bf16_stochastic_against_model => check_bf16_sr_against_model,
        matches_scalar_at_every_offset => check_against_scalar,
        unequal_lengths_are_refused => check_length_errors,
    };
    scalar => Tier::Scalar,
    portable => Tier::Portable,
    avx2 => Tier::Avx2,
    avx512 => Tier::Avx512,
}
