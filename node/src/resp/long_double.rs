//! INCRBYFLOAT's and HINCRBYFLOAT's arithmetic, in C's `long double` as
//! Redis does it (`node/csrc/long_double.c`, compiled by `node/build.rs`):
//! the operands read as Redis's `string2ld` reads them, the sum printed as
//! its `ld2string(LD_STR_HUMAN)` prints it (`%.17Lf`, trailing zeros
//! dropped, never `-0`). Doubles cannot give Redis's digits: on x86-64 a
//! long double has a 64-bit mantissa, and `%.17Lf` shows its last bits
//! (1/41 - 1/41 is 0, 0.1 + 0.2 reads 0.3, 1e308 + 1 prints its 309
//! digits of the long double).

use std::os::raw::{c_char, c_long};

/// Bytes the C side may write (Redis's `MAX_LONG_DOUBLE_CHARS`).
const LONG_DOUBLE_CHARS: usize = 5 * 1024;

extern "C" {
    fn mt_ld_human(x: f64, out: *mut c_char) -> c_long;
    fn mt_ld_incr(
        current: *const c_char,
        current_len: usize,
        by: *const c_char,
        by_len: usize,
        out: *mut c_char,
    ) -> c_long;
}

/// Why an increment failed, checked in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncrError {
    /// The increment is not a float (Redis: "value is not a valid float").
    BadIncrement,
    /// The current value is not a float.
    BadCurrent,
    /// The increment is an infinity (HINCRBYFLOAT: "value is NaN or
    /// Infinity"; INCRBYFLOAT's sum is infinite).
    InfiniteIncrement,
    /// The sum is NaN or infinite ("increment would produce NaN or
    /// Infinity").
    NotFinite,
}

/// `x` as Redis's `addReplyHumanLongDouble` shows it (GEOPOS, WITHCOORD):
/// as a long double, `%.17Lf` with trailing zeros dropped.
pub fn human(x: f64) -> String {
    let mut out = vec![0u8; LONG_DOUBLE_CHARS];
    // SAFETY: `out` holds LONG_DOUBLE_CHARS bytes, which the C side never
    // passes.
    let n = unsafe { mt_ld_human(x, out.as_mut_ptr().cast()) };
    out.truncate(usize::try_from(n).unwrap_or(0).min(LONG_DOUBLE_CHARS));
    String::from_utf8_lossy(&out).into_owned()
}

/// `current` (None: 0, a missing key or field) plus `by`, as Redis's text.
pub fn increment(current: Option<&[u8]>, by: &[u8]) -> Result<String, IncrError> {
    let mut out = vec![0u8; LONG_DOUBLE_CHARS];
    let (cur_ptr, cur_len) =
        current.map_or((std::ptr::null(), 0), |c| (c.as_ptr().cast::<c_char>(), c.len()));
    // SAFETY: every pointer is valid for the length given with it (the C
    // side copies at most that many bytes, into a buffer of its own), and
    // `out` holds LONG_DOUBLE_CHARS bytes, which the C side never passes.
    let n = unsafe {
        mt_ld_incr(cur_ptr, cur_len, by.as_ptr().cast(), by.len(), out.as_mut_ptr().cast())
    };
    match n {
        -1 => Err(IncrError::BadCurrent),
        -2 => Err(IncrError::BadIncrement),
        -3 => Err(IncrError::InfiniteIncrement),
        n if n < 0 => Err(IncrError::NotFinite),
        n => {
            out.truncate(usize::try_from(n).unwrap_or(0).min(LONG_DOUBLE_CHARS));
            Ok(String::from_utf8_lossy(&out).into_owned())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_print_as_redis_prints_them() {
        // Regression (Redis's "No negative zero"): doubles printed 1/41 +
        // -1/41 and 0.1 + 0.2 unlike Redis's long doubles.
        let third = increment(None, b"0.024390243902439025").expect("a float");
        assert_eq!(third, "0.02439024390243902");
        assert_eq!(increment(Some(third.as_bytes()), b"-0.024390243902439025"), Ok("0".into()));
        assert_eq!(increment(Some(b"0.1"), b"0.2"), Ok("0.3".into()));
        assert_eq!(increment(Some(b"10.5"), b"10"), Ok("20.5".into()));
        assert_eq!(increment(Some(b"5.0e3"), b"2.0e2"), Ok("5200".into()));
        assert_eq!(increment(Some(b"1"), b"-1.1"), Ok("-0.1".into()));
        assert_eq!(increment(None, b"+inf"), Err(IncrError::InfiniteIncrement));
        assert_eq!(increment(None, b"nan"), Err(IncrError::BadIncrement));
        assert_eq!(increment(Some(b" 1"), b"1"), Err(IncrError::BadCurrent));
        assert_eq!(increment(Some(b"1"), b"1 "), Err(IncrError::BadIncrement));
        assert_eq!(increment(Some(b"1\x002"), b"1"), Err(IncrError::BadCurrent));
        assert_eq!(increment(Some(b"1e4932"), b"1e4932"), Err(IncrError::NotFinite));
    }
}
