//! Reading fuzz input: a cursor that yields zeros past the end, tables of interesting values,
//! and value streams for buffers.

/// A cursor over the fuzz input that yields zeros once the input is exhausted.
pub struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Input { data, pos: 0 }
    }
    pub fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos = self.pos.saturating_add(1);
        b
    }
    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut a = [0u8; N];
        for x in a.iter_mut() {
            *x = self.u8();
        }
        a
    }
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }
    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }
    /// `n` bytes (zero-padded past the end).
    pub fn take(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.u8()).collect()
    }
    /// Everything not read yet.
    pub fn rest(&self) -> &'a [u8] {
        self.data.get(self.pos..).unwrap_or(&[])
    }
    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }
    /// A float that is usually one of a table of interesting values (valid and invalid for the
    /// various hyperparameters), sometimes one at the edges of the f32 range, sometimes any bit
    /// pattern.
    pub fn f64v(&mut self) -> f64 {
        let b = self.u8();
        if b >= 0xF0 {
            f64::from_bits(self.u64())
        } else if b >= 0xE0 {
            F32_EDGES[(b - 0xE0) as usize]
        } else {
            INTERESTING_F64[b as usize % INTERESTING_F64.len()]
        }
    }
    /// An integer that is usually one of a table of interesting values, sometimes any.
    pub fn u64v(&mut self) -> u64 {
        let b = self.u8();
        if b >= 0xF0 {
            self.u64()
        } else {
            INTERESTING_U64[b as usize % INTERESTING_U64.len()]
        }
    }
}

pub const INTERESTING_F64: [f64; 36] = [
    0.0,
    1e-3,
    0.9,
    0.999,
    1e-8,
    0.1,
    0.5,
    1.0,
    0.01,
    2.0,
    -0.0,
    10.0,
    -1.0,
    f64::NAN,
    f64::INFINITY,
    f64::NEG_INFINITY,
    1e300,
    f64::MAX,
    f64::MIN_POSITIVE,
    5e-324,
    0.999_999_999_999_999_9,
    1e-300,
    1e38,
    3.5e38,
    0.3,
    1.5,
    25.0,
    1e4,
    -5e-324,
    1e-45,
    0.95,
    1.0 / 3.0,
    -f64::NAN,
    1e-30,
    100.0,
    0.999_999,
];

/// Values valid in f64 whose f32 rounding is at or past an edge of a domain (bytes 0xE0 to
/// 0xEF of [`Input::f64v`]): the largest finite f32 and the smallest f64 that rounds to +Inf,
/// values that become 0, subnormal or 1 in f32, and their neighbours that stay inside.
pub const F32_EDGES: [f64; 16] = [
    3.402_823_466_385_288_6e38, // f32::MAX
    3.402_823_567_797_336_6e38, // rounds to +inf in f32
    1e39,
    1e300,
    1e-50,                       // 0 in f32
    7.006_492_321_624_085e-46,   // half the smallest subnormal: 0 in f32
    1.401_298_464_324_817e-45,   // the smallest subnormal
    1.175_494_350_822_287_5e-38, // f32::MIN_POSITIVE
    0.999_999_940_395_355_2,     // the largest f32 below 1
    0.999_999_99,                // 1.0 in f32
    1.000_000_01,                // 1.0 in f32, above 1 in f64
    1e-40,                       // subnormal in f32
    1e30,
    1e20,
    5e-324,
    1e38,
];

pub const INTERESTING_U64: [u64; 16] = [
    0,
    1,
    2,
    3,
    5,
    10,
    100,
    4096,
    u64::MAX,
    u64::MAX - 1,
    1 << 63,
    1 << 32,
    7,
    1000,
    (1 << 53) + 1,
    u32::MAX as u64,
];

/// Finite and non-finite f32 values that stress the arithmetic.
const HOSTILE_F32: [f32; 24] = [
    0.0,
    -0.0,
    1e-45,
    -1e-45,
    1.175_494_2e-38,
    -1e-40,
    1e-30,
    -1e-20,
    3.0e38,
    -3.0e38,
    f32::MAX,
    f32::MIN,
    1e19,
    -65504.0,
    1.0,
    -0.999_999_94,
    f32::INFINITY,
    f32::NEG_INFINITY,
    f32::NAN,
    -f32::NAN,
    0.5,
    -2.0,
    1e-3,
    7.0,
];

/// More NaN patterns (sign, quiet / signalling, payload), by bits.
const NAN_BITS: [u32; 4] = [0x7fc0_0000, 0xffc0_0000, 0x7fa0_0001, 0x7fff_ffff];

/// Element `i` of a value stream derived from `pool` (cycled) and a `salt`: mostly small
/// ordinary values, often values from [`HOSTILE_F32`], sometimes raw bit patterns.
pub fn value(pool: &[u8], salt: usize, i: usize) -> f32 {
    if pool.is_empty() {
        return ((i % 7) as f32 - 3.0) * 0.25;
    }
    let at = |k: usize| pool[(salt.wrapping_add(k)) % pool.len()];
    let k = i.wrapping_mul(5);
    let b = at(k);
    match b >> 5 {
        0..=3 => ((b & 31) as f32 - 15.5) * 0.0625 + (i % 13) as f32 * 0.001,
        4 | 5 => HOSTILE_F32[(b & 31) as usize % HOSTILE_F32.len()],
        6 => f32::from_bits(u32::from_le_bytes([
            at(k + 1),
            at(k + 2),
            at(k + 3),
            at(k + 4),
        ])),
        _ => {
            if b & 16 != 0 {
                f32::from_bits(NAN_BITS[(b & 3) as usize])
            } else {
                ((b & 15) as f32 - 7.5) * 1e-3
            }
        }
    }
}

pub fn values(pool: &[u8], salt: usize, n: usize) -> Vec<f32> {
    (0..n).map(|i| value(pool, salt, i)).collect()
}
