//! One entry of a chunk log, as bytes.
//!
//! ```text
//! +---------+-----------+----------------------------------------------------------+
//! | len u32 | crc32c u32| seq u64 | flags u8 | expiry_ms u64 | key_len u32 | key | value |
//! +---------+-----------+----------------------------------------------------------+
//!             crc covers everything after itself; len counts the same bytes
//! ```
//!
//! All integers are little-endian. `flags` bit 0 marks a delete (no value),
//! bit 1 marks the last entry of an atomic batch: recovery applies a batch
//! only when its last entry is intact, so a torn write never leaves half a
//! batch behind. Every entry carries its own CRC, so one entry can be read
//! back by offset and verified alone.

use monotable_proto::limits::{KEY_SIZE_MAX_BYTES, VALUE_SIZE_MAX_BYTES};

pub const ENTRY_PREFIX_BYTES: usize = 8;
const BODY_FIXED_BYTES: usize = 8 + 1 + 8 + 4;
/// The largest body a valid entry can have; larger lengths are corruption.
pub const ENTRY_BODY_MAX_BYTES: usize =
    BODY_FIXED_BYTES + KEY_SIZE_MAX_BYTES + VALUE_SIZE_MAX_BYTES;

const FLAG_DELETE: u8 = 1;
const FLAG_BATCH_END: u8 = 2;
const FLAGS_KNOWN: u8 = FLAG_DELETE | FLAG_BATCH_END;

/// A decoded entry borrowing from the buffer it was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryRef<'a> {
    pub seq: u64,
    pub key: &'a [u8],
    /// `None` for a delete.
    pub value: Option<&'a [u8]>,
    pub expiry_ms: u64,
    pub batch_end: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// The buffer ends before the entry does (a torn write, or read too little).
    #[error("entry is incomplete")]
    Incomplete,
    #[error("entry length {0} is impossible")]
    BadLength(usize),
    #[error("entry checksum mismatch")]
    Checksum,
    #[error("entry fields are inconsistent")]
    BadFields,
    /// The key or value is larger than the limits allow: refused before
    /// writing, corruption when read back.
    #[error(
        "entry with a key of {key_len} bytes and a value of {value_len} bytes is over the limits"
    )]
    OverLimits { key_len: usize, value_len: usize },
}

/// The one definition of an entry's sizes that the log can hold, checked by
/// [`encode_entry`] before writing and by [`decode_entry`] after reading
/// (the same limits as [`monotable_proto::limits::check_row_size`]), so the
/// writer can never produce what recovery would call corruption.
fn check_sizes(key_len: usize, value_len: usize) -> Result<(), EntryError> {
    if key_len > KEY_SIZE_MAX_BYTES || value_len > VALUE_SIZE_MAX_BYTES {
        return Err(EntryError::OverLimits { key_len, value_len });
    }
    Ok(())
}

/// Bytes an entry for this key and value takes in the log.
pub fn entry_size(key_len: usize, value_len: usize) -> usize {
    ENTRY_PREFIX_BYTES + BODY_FIXED_BYTES + key_len + value_len
}

/// Appends one entry to `out`.
///
/// # Errors
/// [`EntryError::OverLimits`] when the key or value is larger than an entry
/// may hold; nothing is appended then.
pub fn encode_entry(out: &mut Vec<u8>, entry: &EntryRef<'_>) -> Result<(), EntryError> {
    let start = out.len();
    let value = entry.value.unwrap_or(&[]);
    check_sizes(entry.key.len(), value.len())?;
    let body_len = BODY_FIXED_BYTES + entry.key.len() + value.len();
    assert!(body_len <= ENTRY_BODY_MAX_BYTES, "entry sizes were checked");
    out.reserve(ENTRY_PREFIX_BYTES + body_len);
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    out.extend_from_slice(&[0u8; 4]);
    out.extend_from_slice(&entry.seq.to_le_bytes());
    let mut flags = 0;
    if entry.value.is_none() {
        flags |= FLAG_DELETE;
    }
    if entry.batch_end {
        flags |= FLAG_BATCH_END;
    }
    out.push(flags);
    out.extend_from_slice(&entry.expiry_ms.to_le_bytes());
    out.extend_from_slice(&(entry.key.len() as u32).to_le_bytes());
    out.extend_from_slice(entry.key);
    out.extend_from_slice(value);
    let crc = crc32c::crc32c(&out[start + ENTRY_PREFIX_BYTES..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Reads the length prefix: how many bytes the whole entry takes.
pub fn peek_entry_len(buf: &[u8]) -> Result<usize, EntryError> {
    let prefix = buf.get(..4).ok_or(EntryError::Incomplete)?;
    let body_len = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
    if !(BODY_FIXED_BYTES..=ENTRY_BODY_MAX_BYTES).contains(&body_len) {
        return Err(EntryError::BadLength(body_len));
    }
    Ok(ENTRY_PREFIX_BYTES + body_len)
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// Decodes and verifies the entry at the start of `buf`; returns it and the
/// number of bytes it took.
pub fn decode_entry(buf: &[u8]) -> Result<(EntryRef<'_>, usize), EntryError> {
    let total = peek_entry_len(buf)?;
    let whole = buf.get(..total).ok_or(EntryError::Incomplete)?;
    let stored_crc = u32::from_le_bytes([whole[4], whole[5], whole[6], whole[7]]);
    let body = &whole[ENTRY_PREFIX_BYTES..];
    if crc32c::crc32c(body) != stored_crc {
        return Err(EntryError::Checksum);
    }
    let seq = le_u64(&body[0..8]);
    let flags = body[8];
    let expiry_ms = le_u64(&body[9..17]);
    let key_len = u32::from_le_bytes([body[17], body[18], body[19], body[20]]) as usize;
    let rest = &body[BODY_FIXED_BYTES..];
    if flags & !FLAGS_KNOWN != 0 || key_len > rest.len() {
        return Err(EntryError::BadFields);
    }
    let (key, value) = rest.split_at(key_len);
    check_sizes(key.len(), value.len())?;
    let value = if flags & FLAG_DELETE != 0 {
        if !value.is_empty() {
            return Err(EntryError::BadFields);
        }
        None
    } else {
        Some(value)
    };
    let entry = EntryRef { seq, key, value, expiry_ms, batch_end: flags & FLAG_BATCH_END != 0 };
    Ok((entry, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(value: Option<&'static [u8]>) -> EntryRef<'static> {
        EntryRef { seq: 42, key: b"k\x00ey", value, expiry_ms: 7, batch_end: true }
    }

    #[test]
    fn round_trip_put_and_delete() {
        for e in [sample(Some(b"value")), sample(None), sample(Some(b""))] {
            let mut buf = Vec::new();
            encode_entry(&mut buf, &e).expect("within limits");
            assert_eq!(buf.len(), entry_size(e.key.len(), e.value.map_or(0, <[u8]>::len)));
            let (back, used) = decode_entry(&buf).expect("valid");
            assert_eq!(back, e);
            assert_eq!(used, buf.len());
        }
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let mut buf = Vec::new();
        encode_entry(&mut buf, &sample(Some(b"some value"))).expect("within limits");
        for i in 0..buf.len() * 8 {
            let mut bad = buf.clone();
            bad[i / 8] ^= 1 << (i % 8);
            assert!(decode_entry(&bad).is_err(), "flip of bit {i} went unnoticed");
        }
    }

    #[test]
    fn truncation_is_incomplete() {
        let mut buf = Vec::new();
        encode_entry(&mut buf, &sample(Some(b"some value"))).expect("within limits");
        for cut in 0..buf.len() {
            assert_eq!(decode_entry(&buf[..cut]).map(|_| ()), Err(EntryError::Incomplete));
        }
    }

    // Regression: a 20 KiB key or a 9 MiB value was logged (the size check was
    // a debug_assert) and recovery then called the chunk corrupt.
    #[test]
    fn the_writer_refuses_exactly_what_the_reader_refuses() {
        let key_max = vec![b'k'; KEY_SIZE_MAX_BYTES];
        let value_max = vec![b'v'; VALUE_SIZE_MAX_BYTES];
        let key_over = vec![b'k'; KEY_SIZE_MAX_BYTES + 1];
        let value_over = vec![b'v'; VALUE_SIZE_MAX_BYTES + 1];
        let cases: [(&[u8], &[u8], bool); 4] = [
            (&key_max, &value_max, true),
            (&key_over, b"", false),
            (b"k", &value_over, false),
            (&key_over, &value_over, false),
        ];
        for (key, value, valid) in cases {
            let e = EntryRef { seq: 1, key, value: Some(value), expiry_ms: 0, batch_end: true };
            let mut buf = vec![1, 2, 3];
            let written = encode_entry(&mut buf, &e);
            assert_eq!(written.is_ok(), valid, "key {} value {}", key.len(), value.len());
            if !valid {
                assert_eq!(buf, [1, 2, 3], "a refused entry appends nothing");
                // The same entry forged by hand is refused when read back.
                let body_len = BODY_FIXED_BYTES + key.len() + value.len();
                let mut forged = (body_len as u32).to_le_bytes().to_vec();
                forged.extend_from_slice(&[0; 4]);
                forged.extend_from_slice(&1u64.to_le_bytes());
                forged.push(FLAG_BATCH_END);
                forged.extend_from_slice(&0u64.to_le_bytes());
                forged.extend_from_slice(&(key.len() as u32).to_le_bytes());
                forged.extend_from_slice(key);
                forged.extend_from_slice(value);
                let crc = crc32c::crc32c(&forged[ENTRY_PREFIX_BYTES..]);
                forged[4..8].copy_from_slice(&crc.to_le_bytes());
                assert!(decode_entry(&forged).is_err(), "key {} value {}", key.len(), value.len());
            } else {
                let (back, _) = decode_entry(&buf[3..]).expect("valid entry reads back");
                assert_eq!(back, e);
            }
        }
    }
}
