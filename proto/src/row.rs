//! The keys of index rows: what a mapper writes into its target range.
//!
//! A mapper's function emits, for one source record, any number of
//! `(key, value)` pairs. Each pair becomes one index row keyed
//!
//! ```text
//! tuple::encode([Tuple(emitted), Bytes(source_key)])            first time
//! tuple::encode([Tuple(emitted), Bytes(source_key), Int(n)])    n-th repeat
//! ```
//!
//! so the emitted key (one nested tuple element) and the source key (one
//! bytes element) can always be told apart: record `("b", "c")` emitting
//! `("a",)` and record `("c",)` emitting `("a", "b")` are two rows. A record
//! that emits the same key more than once keeps every row (CouchDB's rule),
//! the repeats numbered from 1 in emit order. A scalar emit `k` is the
//! 1-tuple `(k,)`; an empty list (Lua `{}`) is the empty tuple `()`.
//!
//! Rows sort by emitted key first (the nested encoding preserves the tuple
//! order), so every row of one emitted key, and of every emitted key that
//! starts with given elements, is one contiguous run of keys:
//! [`emitted_bound`] and [`emitted_prefix_end`] give its bounds, and
//! [`group_key`] the elements a `group_level` groups by.

use crate::tuple::{self, Element, TupleError};

/// An index row: (key, value).
pub type Row = (Vec<u8>, Vec<u8>);

/// Type byte of a nested tuple element ([`crate::tuple`]).
const NESTED: u8 = 0x05;

/// The key of the row for the `repeat`-th repeat (0: the first emit) of
/// `emitted` by the record at `source_key`.
///
/// # Errors
/// When `emitted` cannot be encoded ([`tuple::encode`]: an integer out of
/// range, nesting too deep).
pub fn encode_row(
    emitted: &[Element],
    source_key: &[u8],
    repeat: u64,
) -> Result<Vec<u8>, TupleError> {
    let mut key =
        tuple::encode(&[Element::Tuple(emitted.to_vec()), Element::Bytes(source_key.to_vec())])?;
    if repeat > 0 {
        key.extend(tuple::encode(&[Element::Int(i128::from(repeat))])?);
    }
    Ok(key)
}

/// A row key taken apart: the emitted elements, the source key and the
/// repeat number (0 for the first emit).
///
/// # Errors
/// [`TupleError::Malformed`] when `key` is not a row key.
pub fn decode_row(key: &[u8]) -> Result<(Vec<Element>, Vec<u8>, u64), TupleError> {
    let not_a_row = |what| TupleError::Malformed { what, offset: 0 };
    let mut elements = tuple::decode(key)?.into_iter();
    let emitted = match elements.next() {
        Some(Element::Tuple(items)) => items,
        _ => return Err(not_a_row("an index row starts with its emitted key")),
    };
    let source = match elements.next() {
        Some(Element::Bytes(b)) => b,
        _ => return Err(not_a_row("an index row's second element is its source key")),
    };
    let repeat = match elements.next() {
        None => 0,
        Some(Element::Int(n)) if n >= 1 && elements.len() == 0 => {
            u64::try_from(n).map_err(|_| not_a_row("repeat number out of range"))?
        }
        Some(_) => return Err(not_a_row("an index row ends with a repeat number")),
    };
    Ok((emitted, source, repeat))
}

/// The first row key whose emitted key is at or after `emitted` in tuple
/// order; every row of an emitted key below `emitted` sorts before it. So
/// `[emitted_bound(a), emitted_bound(b))` holds exactly the rows whose
/// emitted key `k` has `a <= k < b`. It is `0x05` followed by the nested
/// encoding of the elements, without the terminator.
///
/// # Errors
/// When `emitted` cannot be encoded.
pub fn emitted_bound(emitted: &[Element]) -> Result<Vec<u8>, TupleError> {
    let mut bound = tuple::encode(&[Element::Tuple(emitted.to_vec())])?;
    // The nested tuple's terminator: a row of exactly `emitted` has it
    // next, then its source key, so it sorts at or after the bound.
    debug_assert_eq!(bound.last(), Some(&0x00));
    bound.pop();
    debug_assert_eq!(bound.first(), Some(&NESTED));
    Ok(bound)
}

/// The exclusive end of the rows whose emitted key starts with the elements
/// of `prefix`: [`emitted_bound`]`(prefix) + 0xFF` (after a whole nested
/// element the next byte is a type code or the terminator, never `0xFF`).
///
/// # Errors
/// When `prefix` cannot be encoded.
pub fn emitted_prefix_end(prefix: &[Element]) -> Result<Vec<u8>, TupleError> {
    let mut end = emitted_bound(prefix)?;
    end.push(0xFF);
    Ok(end)
}

/// The group of a row under `group_level` `level`: the first `level`
/// elements of its emitted key (all of them when it has fewer), encoded as
/// a top-level tuple. The source key is never part of it.
///
/// # Errors
/// When `row_key` is not a row key.
pub fn group_key(row_key: &[u8], level: usize) -> Result<Vec<Element>, TupleError> {
    let (mut emitted, _, _) = decode_row(row_key)?;
    emitted.truncate(level);
    Ok(emitted)
}

/// The rows of one record from what it emitted, in emit order: each key
/// once more emitted than before gets the next repeat number.
///
/// # Errors
/// When an emitted key cannot be encoded.
pub fn rows_of(
    source_key: &[u8],
    emits: Vec<(Vec<Element>, Vec<u8>)>,
) -> Result<Vec<Row>, TupleError> {
    let mut seen: std::collections::HashMap<Vec<u8>, u64> = std::collections::HashMap::new();
    emits
        .into_iter()
        .map(|(emitted, value)| {
            let first = encode_row(&emitted, source_key, 0)?;
            let repeat = seen.entry(first.clone()).or_insert(0);
            let key = if *repeat == 0 { first } else { encode_row(&emitted, source_key, *repeat)? };
            *repeat += 1;
            Ok((key, value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Element {
        Element::String(v.into())
    }

    fn in_span(key: &[u8], lo: &[u8], hi: &[u8]) -> bool {
        key >= lo && key < hi
    }

    #[test]
    fn rows_decode_to_what_was_encoded() {
        for repeat in [0u64, 1, 2, 300] {
            let emitted = vec![s("a"), Element::Null, Element::Int(-4)];
            let key = encode_row(&emitted, b"src\x00\xff", repeat).expect("encodes");
            let (e, src, n) = decode_row(&key).expect("decodes");
            assert_eq!((e, src, n), (emitted, b"src\x00\xff".to_vec(), repeat));
        }
        assert!(decode_row(&tuple::encode(&[s("a")]).expect("encodes")).is_err());
        assert!(decode_row(b"\x05\x02a").is_err());
    }

    /// Postmortem: row keys were the emitted tuple followed by the raw
    /// source key, so `["b","c"]` emitting `["a"]` and `["c"]` emitting
    /// `["a","b"]` wrote one and the same row.
    #[test]
    fn emitted_and_source_keys_cannot_collide() {
        let src1 = tuple::encode(&[s("b"), s("c")]).expect("encodes");
        let src2 = tuple::encode(&[s("c")]).expect("encodes");
        let a = encode_row(&[s("a")], &src1, 0).expect("encodes");
        let b = encode_row(&[s("a"), s("b")], &src2, 0).expect("encodes");
        assert_ne!(a, b);
        assert_eq!(group_key(&a, 2).expect("row"), vec![s("a")]);
        assert_eq!(group_key(&b, 2).expect("row"), vec![s("a"), s("b")]);
    }

    /// Postmortem: a record emitting one key twice wrote one row (the
    /// second emit overwrote the first), so its sum lost a value.
    #[test]
    fn duplicate_emits_keep_every_row() {
        let rows = rows_of(
            b"k",
            vec![
                (vec![s("a")], b"1".to_vec()),
                (vec![s("b")], b"x".to_vec()),
                (vec![s("a")], b"2".to_vec()),
            ],
        )
        .expect("encodes");
        assert_eq!(rows.len(), 3);
        assert_eq!(decode_row(&rows[0].0).expect("row").2, 0);
        assert_eq!(decode_row(&rows[1].0).expect("row").2, 0);
        assert_eq!(decode_row(&rows[2].0).expect("row").2, 1);
        // The repeat sorts right after the first, within its group.
        assert!(rows[0].0 < rows[2].0);
        let end = emitted_prefix_end(&[s("a")]).expect("encodes");
        assert!(in_span(&rows[2].0, &emitted_bound(&[s("a")]).expect("encodes"), &end));
    }

    #[test]
    fn bounds_follow_the_emitted_key_only() {
        let emitted: Vec<Vec<Element>> = vec![
            vec![],
            vec![Element::Null],
            vec![s("a")],
            vec![s("a"), Element::Null],
            vec![s("a"), s("b")],
            vec![s("a\u{0}b")],
            vec![s("b")],
            vec![Element::Int(1)],
        ];
        // Source keys that would sort first or last as raw bytes.
        for src in [&b""[..], b"\x00", b"\xff\xff"] {
            for (i, e) in emitted.iter().enumerate() {
                let key = encode_row(e, src, 0).expect("encodes");
                for (j, other) in emitted.iter().enumerate() {
                    let lo = emitted_bound(other).expect("encodes");
                    assert_eq!(key >= lo, i >= j, "{e:?} vs bound {other:?}");
                }
                let starts_with_a = e.first() == Some(&s("a"));
                let lo = emitted_bound(&[s("a")]).expect("encodes");
                let hi = emitted_prefix_end(&[s("a")]).expect("encodes");
                assert_eq!(in_span(&key, &lo, &hi), starts_with_a, "{e:?}");
                let all_lo = emitted_bound(&[]).expect("encodes");
                let all_hi = emitted_prefix_end(&[]).expect("encodes");
                assert!(in_span(&key, &all_lo, &all_hi));
            }
        }
    }

    #[test]
    fn scalar_list_and_empty_emits() {
        // emit({}) from three records: one group () with three rows.
        let keys: Vec<Vec<u8>> = [b"r1", b"r2", b"r3"]
            .iter()
            .map(|src| encode_row(&[], &src[..], 0).expect("encodes"))
            .collect();
        for k in &keys {
            assert_eq!(group_key(k, 2).expect("row"), Vec::<Element>::new());
        }
        // "x", ["x"] and ["x","y"]: group level 2 never shows the source.
        let src = tuple::encode(&[s("src")]).expect("encodes");
        let x = encode_row(&[s("x")], &src, 0).expect("encodes");
        let xy = encode_row(&[s("x"), s("y")], &src, 0).expect("encodes");
        assert_eq!(group_key(&x, 2).expect("row"), vec![s("x")]);
        assert_eq!(group_key(&xy, 2).expect("row"), vec![s("x"), s("y")]);
        assert_eq!(group_key(&xy, 1).expect("row"), vec![s("x")]);
    }
}
