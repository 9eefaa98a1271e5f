//! What a job's map function sees of a Redis key: the record it would be
//! if the key were a row of an ordinary range.
//!
//! - The record's key is a one-element tuple: the Redis key as a string
//!   when it is UTF-8, else as bytes.
//! - Its value is a MessagePack document: a string holding a JSON object
//!   or array is that document; a hash is a map of its fields; a list and
//!   a set are arrays (a set's members in byte order); a sorted set is a
//!   map from member to score. Every other string (a string key, a field's
//!   value, an element) is a **number** when it is a canonical integer
//!   within -2^63..2^64-1 (`42`, `-7`; not `042` or `+1`: an integer) or a plain
//!   decimal (`3.25`, `-0.5`, `1.0`: a float; not `1e5` or `.5`), so
//!   built-in reducers can add what Redis stores as text; otherwise a
//!   string when UTF-8, else binary.

use monotable_proto::tuple::{self, Element};
use rmpv::Value;

use crate::bridge::item::{Data, Item};

/// The record key of a Redis key.
pub fn record_key(key: &[u8]) -> Vec<u8> {
    let element = match std::str::from_utf8(key) {
        Ok(s) => Element::String(s.to_owned()),
        Err(_) => Element::Bytes(key.to_vec()),
    };
    tuple::encode(&[element]).expect("a Redis key within the key limit encodes")
}

/// A Redis string as a scalar: a number when it reads as one exactly.
pub fn scalar(bytes: &[u8]) -> Value {
    let Ok(s) = std::str::from_utf8(bytes) else { return Value::Binary(bytes.to_vec()) };
    if let Ok(i) = s.parse::<i64>() {
        if i.to_string() == s {
            return Value::from(i);
        }
    }
    if let Ok(u) = s.parse::<u64>() {
        if u.to_string() == s {
            return Value::from(u);
        }
    }
    if is_plain_decimal(s) {
        if let Ok(f) = s.parse::<f64>() {
            return Value::F64(f);
        }
    }
    Value::from(s)
}

/// `-?D+.D+` with no leading zero before other digits.
fn is_plain_decimal(s: &str) -> bool {
    let body = s.strip_prefix('-').unwrap_or(s);
    let Some((int, frac)) = body.split_once('.') else { return false };
    !int.is_empty()
        && !frac.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit())
        && !(int.len() > 1 && int.starts_with('0'))
}

fn json_document(bytes: &[u8]) -> Option<Value> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace())?;
    if *first != b'{' && *first != b'[' {
        return None;
    }
    let doc: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let encoded = rmp_serde::to_vec(&doc).ok()?;
    rmpv::decode::read_value(&mut &encoded[..]).ok()
}

/// The record value of a Redis item (see the module doc), as MessagePack.
pub fn record_value(item: &Item) -> Vec<u8> {
    let v = match &item.data {
        Data::String(s) => json_document(s).unwrap_or_else(|| scalar(s)),
        Data::Hash(fields) => {
            Value::Map(fields.iter().map(|(f, v)| (text(f), scalar(v))).collect())
        }
        Data::List(items) => Value::Array(items.iter().map(|e| scalar(e)).collect()),
        Data::Set(members) => Value::Array(members.iter().map(|e| scalar(e)).collect()),
        Data::ZSet(pairs) => {
            Value::Map(pairs.iter().map(|(m, s)| (text(m), Value::F64(*s))).collect())
        }
    };
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &v).expect("writing to a Vec cannot fail");
    out
}

/// A field name or member: a string when UTF-8, else binary (never a
/// number: `{"1": ..}` keeps the field name a field name).
fn text(bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(s) => Value::from(s),
        Err(_) => Value::Binary(bytes.to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_read_as_numbers_only_exactly() {
        assert_eq!(scalar(b"42"), Value::from(42));
        assert_eq!(scalar(b"-7"), Value::from(-7));
        assert_eq!(scalar(b"3.25"), Value::F64(3.25));
        assert_eq!(scalar(b"0.5"), Value::F64(0.5));
        assert_eq!(scalar(b"18446744073709551615"), Value::from(u64::MAX));
        for text in
            ["042", "+1", "1.0e3", "1e5", ".5", "5.", "", " 1", "18446744073709551616", "inf"]
        {
            assert_eq!(scalar(text.as_bytes()), Value::from(text), "{text:?}");
        }
        assert_eq!(scalar(&[0xff, 0]), Value::Binary(vec![0xff, 0]));
    }

    #[test]
    fn items_become_documents() {
        let item = |data| Item { key: b"k".to_vec(), data, expire_at_ms: None };
        let doc = |i: &Item| crate::json::value_to_json(&record_value(i));
        assert_eq!(
            doc(&item(Data::String(br#"{"city":"paris","n":[1,2]}"#.to_vec()))),
            serde_json::json!({"city":"paris","n":[1,2]})
        );
        assert_eq!(doc(&item(Data::String(b"hello".to_vec()))), serde_json::json!("hello"));
        assert_eq!(
            doc(&item(Data::Hash(vec![
                (b"age".to_vec(), b"31".to_vec()),
                (b"1".to_vec(), b"x".to_vec())
            ]))),
            serde_json::json!({"age":31,"1":"x"})
        );
        assert_eq!(
            doc(&item(Data::ZSet(vec![(b"a".to_vec(), 1.5)]))),
            serde_json::json!({"a":1.5})
        );
        assert_eq!(
            record_key(b"user:1"),
            tuple::encode(&[Element::String("user:1".into())]).expect("encodes")
        );
        assert_eq!(
            record_key(&[0xff]),
            tuple::encode(&[Element::Bytes(vec![0xff])]).expect("encodes")
        );
    }
}
