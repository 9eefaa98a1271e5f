//! Helpers on raw key bytes.

/// The smallest key greater than every key that starts with `prefix`: the
/// exclusive end of a prefix scan. `None` when no such key exists (an empty
/// or all-0xFF prefix): the scan runs to the end of the range.
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// The exclusive end of a scan for every key whose tuple starts with the
/// encoded tuple `prefix` ([`crate::tuple`]); `None` for the empty tuple
/// (every key). This is `prefix + 0xFF`, not [`prefix_end`]: after a whole
/// element the next byte of a longer tuple is a type code (at most `0x27`),
/// while a byte prefix would also match a string or bytes element that only
/// continues the last one through its `0x00 0xFF` escape (`("a",)` is a byte
/// prefix of `("a\0b",)`), and a non-integral float that continues an
/// integer through its `0xFF` fraction marker (`(1,)` is a byte prefix of
/// `(1.5,)`, which sorts between 1 and 2). FoundationDB's `Tuple::range`
/// uses the same end.
pub fn tuple_prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    if prefix.is_empty() {
        return None;
    }
    let mut end = prefix.to_vec();
    end.push(0xFF);
    Some(end)
}

/// `bytes` as lowercase hex, two digits a byte: how keys and cursors are
/// shown where only text goes (logs, JSON, RESP cursors).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tuple::{encode, Element};

    // Regression: a prefix scan on ["a"] also returned the key "a\u0000b".
    #[test]
    fn a_tuple_prefix_excludes_a_string_that_continues_past_an_escape() {
        let prefix = encode(&["a".into()]).expect("encodes");
        let end = tuple_prefix_end(&prefix).expect("non-empty");
        let inside = |t: &[Element]| {
            let k = encode(t).expect("encodes");
            k >= prefix && k < end
        };
        assert!(inside(&["a".into()]));
        assert!(inside(&["a".into(), Element::Null]));
        assert!(inside(&["a".into(), "z".into(), 5i64.into()]));
        assert!(inside(&["a".into(), Element::Tuple(vec![Element::Null])]));
        assert!(inside(&["a".into(), true.into()]));
        assert!(!inside(&["a\u{0}b".into()]));
        assert!(!inside(&["a\u{0}".into()]));
        assert!(!inside(&["b".into()]));
        assert!(!inside(&["".into()]));
        let one = encode(&[1i64.into()]).expect("encodes");
        let end = tuple_prefix_end(&one).expect("non-empty");
        let k = encode(&[Element::Float(1.5)]).expect("encodes");
        assert!(k > one && k >= end, "(1.5,) is outside the prefix (1,)");
        let k = encode(&[1i64.into(), Element::Float(f64::NAN)]).expect("encodes");
        assert!(k > one && k < end, "(1, NaN) is inside the prefix (1,)");
        assert_eq!(tuple_prefix_end(b""), None);
    }

    #[test]
    fn prefix_end_is_the_next_key_after_the_prefix() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b""), None);
    }
}
