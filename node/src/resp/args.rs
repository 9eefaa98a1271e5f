//! Arguments: every count, index, offset and length a command takes is
//! parsed and bounded here, with Redis's rules and words, so the commands
//! only ever do arithmetic on values that cannot overflow and never size
//! an allocation from a number a client chose; and words (names, options)
//! are lowercased here.

use monotable_proto::limits::VALUE_SIZE_MAX_BYTES;

use super::reply::Reply;

pub const NOT_INTEGER: &str = "ERR value is not an integer or out of range";
pub const NOT_FLOAT: &str = "ERR value is not a valid float";
pub const NOT_POSITIVE: &str = "ERR value is out of range, must be positive";
pub const STRING_TOO_LONG: &str = "ERR string exceeds maximum allowed size (proto-max-bulk-len)";

/// Bytes a string value's row holds besides the string (its type and
/// expiry; see `keyspace::Value::encode`).
const STRING_HEADER_BYTES: usize = 9;

/// Longest string a command may make (APPEND, SETRANGE): what fits in a
/// row under the value limit. Redis's bound is `proto-max-bulk-len`
/// (512 MB), and its words are kept.
pub const STRING_LEN_MAX_BYTES: usize = VALUE_SIZE_MAX_BYTES - STRING_HEADER_BYTES;

/// Most elements a reply that repeats elements may hold (SRANDMEMBER,
/// HRANDFIELD and ZRANDMEMBER with a negative count). Redis streams any
/// count (-2^63+1 runs until the client goes away); this answers out of
/// range past it.
pub const REPEATED_ELEMENTS_MAX: u64 = 1_000_000;

/// A command name or option word, lowercased (as Redis compares them).
pub fn lower(word: &[u8]) -> String {
    String::from_utf8_lossy(word).to_ascii_lowercase()
}

/// Redis's integer parsing (`string2ll`): optional `-`, digits, no `+`,
/// spaces or leading zeros, no `-0`, within i64.
pub fn parse_i64(bytes: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(bytes).ok()?;
    if s.is_empty() || s.len() > 20 || s.starts_with('+') || s.starts_with(' ') {
        return None;
    }
    let digits = s.strip_prefix('-').unwrap_or(s);
    if digits.is_empty()
        || (digits.len() > 1 && digits.starts_with('0'))
        || digits == "0" && s.starts_with('-')
    {
        return None;
    }
    s.parse().ok()
}

/// A float argument (a score, a weight, an increment, a timeout) as
/// Redis's `string2d` reads it (`node/csrc/strtod.c`): C's `strtod` over
/// the whole argument, so hex floats (`0x10`) and `inf` are taken; a
/// leading space, trailing bytes, NaN, and an overflow (`1e400`) or an
/// underflow to zero are refused.
pub fn parse_f64(bytes: &[u8]) -> Option<f64> {
    let mut x = 0.0;
    // SAFETY: the C side reads `bytes.len()` bytes from the pointer and
    // writes one double through the other.
    let ok = unsafe { mt_string2d(bytes.as_ptr().cast(), bytes.len(), &mut x) };
    (ok == 1).then_some(x)
}

/// A score bound of a range (its `(` taken off) as Redis's
/// `zslParseRange` reads it: C's `strtod` up to the end (or a NUL byte),
/// only NaN refused, so `1e400` is `inf`, a leading space is skipped and
/// an empty bound is 0.
pub fn parse_bound_f64(bytes: &[u8]) -> Option<f64> {
    let mut x = 0.0;
    // SAFETY: as for `parse_f64`.
    let ok = unsafe { mt_range_strtod(bytes.as_ptr().cast(), bytes.len(), &mut x) };
    (ok == 1).then_some(x)
}

/// A value SORT sorts by (an element, or what its BY pattern found) as
/// Redis's `sort.c` reads it: C's `strtod` up to the end (or a NUL byte),
/// refused when bytes are left, on an overflow or underflow (`ERANGE`)
/// and for NaN; an empty value is 0.
pub fn parse_sort_f64(bytes: &[u8]) -> Option<f64> {
    let mut x = 0.0;
    // SAFETY: as for `parse_f64`.
    let ok = unsafe { mt_sort_strtod(bytes.as_ptr().cast(), bytes.len(), &mut x) };
    (ok == 1).then_some(x)
}

extern "C" {
    fn mt_sort_strtod(
        s: *const std::os::raw::c_char,
        len: usize,
        out: *mut f64,
    ) -> std::os::raw::c_int;
    fn mt_string2d(
        s: *const std::os::raw::c_char,
        len: usize,
        out: *mut f64,
    ) -> std::os::raw::c_int;
    fn mt_range_strtod(
        s: *const std::os::raw::c_char,
        len: usize,
        out: *mut f64,
    ) -> std::os::raw::c_int;
}

/// A float argument (Redis's `strtod` rules, [`parse_f64`]), or the
/// error reply `message` for one that is not.
pub fn float_or(bytes: &[u8], message: &str) -> Result<f64, Reply> {
    parse_f64(bytes).ok_or_else(|| Reply::err(message.to_owned()))
}

/// A float argument, or Redis's reply for one that is not.
pub fn float(bytes: &[u8]) -> Result<f64, Reply> {
    float_or(bytes, NOT_FLOAT)
}

/// An integer argument, or Redis's reply for one that is not.
pub fn integer(bytes: &[u8]) -> Result<i64, Reply> {
    parse_i64(bytes).ok_or_else(|| Reply::err(NOT_INTEGER))
}

/// An integer within `[min, max]` (Redis's `getRangeLongFromObjectOrReply`).
pub fn in_range(bytes: &[u8], min: i64, max: i64) -> Result<i64, Reply> {
    let n = integer(bytes)?;
    if !(min..=max).contains(&n) {
        return Err(Reply::err(format!(
            "ERR value is out of range, value must between {min} and {max}"
        )));
    }
    Ok(n)
}

/// A count that may not be negative (SPOP, LPOP, RPOP), as Redis words it.
pub fn positive_count(bytes: &[u8]) -> Result<u64, Reply> {
    match parse_i64(bytes) {
        Some(n) if n >= 0 => Ok(n.unsigned_abs()),
        _ => Err(Reply::err(NOT_POSITIVE)),
    }
}

/// SRANDMEMBER's and HRANDFIELD's count: how many elements, and whether they may repeat
/// (a negative count). Redis refuses -2^63 (it has no positive twin);
/// a repeating count past [`REPEATED_ELEMENTS_MAX`] is refused here too.
pub fn random_count(bytes: &[u8]) -> Result<(u64, bool), Reply> {
    let n = in_range(bytes, -i64::MAX, i64::MAX)?;
    if n < 0 && n.unsigned_abs() > REPEATED_ELEMENTS_MAX {
        return Err(Reply::err(format!(
            "ERR value is out of range, value must between -{REPEATED_ELEMENTS_MAX} and {}",
            i64::MAX
        )));
    }
    Ok((n.unsigned_abs(), n < 0))
}

/// Redis's start/stop indexes (negative: from the end) over `len`
/// elements, as the offsets `[first, last]` they select, or `None` when
/// they select nothing (LRANGE, LTRIM, ZRANGE, ZREMRANGEBYRANK).
pub fn span(start: i64, stop: i64, len: u64) -> Option<(u64, u64)> {
    let len = i64::try_from(len).unwrap_or(i64::MAX);
    // `len + index` cannot overflow: len >= 0 and index < 0.
    let start = if start < 0 { len.saturating_add(start).max(0) } else { start };
    let stop = if stop < 0 { len.saturating_add(stop) } else { stop.min(len - 1) };
    if len == 0 || start > stop || start >= len || stop < 0 {
        return None;
    }
    Some((start.unsigned_abs(), stop.unsigned_abs()))
}

/// A SCAN cursor as Redis reads one (`strtoull`): an optional sign, then
/// digits within 64 bits; a negative one wraps around, and an empty one is
/// 0. Anything else is refused with Redis's words.
pub fn scan_cursor(bytes: &[u8]) -> Result<u64, Reply> {
    let invalid = || Reply::err("ERR invalid cursor");
    let (negative, digits) = match bytes.first() {
        Some(b'-') => (true, &bytes[1..]),
        Some(b'+') => (false, &bytes[1..]),
        _ => (false, bytes),
    };
    if digits.is_empty() {
        return if bytes.is_empty() { Ok(0) } else { Err(invalid()) };
    }
    let text = std::str::from_utf8(digits).map_err(|_| invalid())?;
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    let n: u64 = text.parse().map_err(|_| invalid())?;
    Ok(if negative { n.wrapping_neg() } else { n })
}

/// The length a string reaches when `len` bytes are written at `offset`
/// (SETRANGE, APPEND), if within [`STRING_LEN_MAX_BYTES`].
pub fn string_end(offset: u64, len: usize) -> Result<usize, Reply> {
    usize::try_from(offset)
        .ok()
        .and_then(|o| o.checked_add(len))
        .filter(|&end| end <= STRING_LEN_MAX_BYTES)
        .ok_or_else(|| Reply::err(STRING_TOO_LONG))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_parse_as_redis_does() {
        assert_eq!(parse_i64(b"42"), Some(42));
        assert_eq!(parse_i64(b"-7"), Some(-7));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [&b""[..], b"+1", b" 1", b"01", b"-0", b"1.5", b"9223372036854775808", b"-"] {
            assert_eq!(parse_i64(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(parse_i64(b"0"), Some(0));
    }

    #[test]
    fn spans_never_overflow() {
        assert_eq!(span(0, -1, 3), Some((0, 2)));
        assert_eq!(span(i64::MIN, i64::MAX, 3), Some((0, 2)));
        assert_eq!(span(i64::MAX, i64::MIN, 3), None);
        assert_eq!(span(-2, -2, 3), Some((1, 1)));
        assert_eq!(span(0, i64::MIN, 3), None);
        assert_eq!(span(0, 0, 0), None);
        assert_eq!(span(i64::MIN, i64::MIN, u64::MAX), None);
    }

    #[test]
    fn counts_and_lengths_are_bounded() {
        // Regression: -2^63 repeated members grew the node to 24 GB.
        assert!(random_count(b"-9223372036854775808").is_err());
        assert!(random_count(b"-9223372036854775807").is_err());
        assert_eq!(random_count(b"-3"), Ok((3, true)));
        assert_eq!(random_count(b"9223372036854775807"), Ok((i64::MAX as u64, false)));
        assert!(positive_count(b"-1").is_err());
        // Regression: SETRANGE at offset 2^63-1 panicked on a capacity overflow.
        assert_eq!(string_end(i64::MAX as u64, 1), Err(Reply::err(STRING_TOO_LONG)));
        assert_eq!(string_end(u64::MAX, usize::MAX), Err(Reply::err(STRING_TOO_LONG)));
        assert_eq!(string_end(5, 1), Ok(6));
    }
}
