//! Checkpoint byte surgery: repairing the header, the length and the CRC of crafted inputs so
//! that the fuzzer reaches the inner validation, and replacing counters.

/// Sets the total-length field and recomputes the CRC of a would-be checkpoint (no-op if it is
/// too short to have them).
pub fn fix_length_and_crc(bytes: &mut [u8]) {
    let n = bytes.len();
    if n < 36 {
        return;
    }
    bytes[16..24].copy_from_slice(&(n as u64).to_le_bytes());
    let crc = crc32fast::hash(&bytes[..n - 4]);
    bytes[n - 4..].copy_from_slice(&crc.to_le_bytes());
}

/// Writes a valid magic, format version and byte-order mark.
pub fn fix_header(bytes: &mut [u8]) {
    if bytes.len() >= 16 {
        bytes[..8].copy_from_slice(b"FLATOPTC");
        bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
        bytes[12..16].copy_from_slice(&0x0A0B_0C0Du32.to_le_bytes());
    }
}

/// Offset of the schedule counter in a checkpoint.
pub fn schedule_offset(bytes: &[u8]) -> usize {
    let c = u64::from_le_bytes(bytes[32..40].try_into().unwrap()) as usize;
    40 + c + 16
}

/// A checkpoint with the step counter and the schedule counter replaced (CRC fixed).
pub fn with_counters(bytes: &[u8], step: Option<u64>, count: Option<u64>) -> Vec<u8> {
    let mut b = bytes.to_vec();
    let at = schedule_offset(&b);
    if let Some(s) = step {
        b[at - 16..at - 8].copy_from_slice(&s.to_le_bytes());
    }
    if let Some(c) = count {
        b[at..at + 8].copy_from_slice(&c.to_le_bytes());
    }
    fix_length_and_crc(&mut b);
    b
}
