//! Rows of ordinary ranges (and views) as Redis strings: the key as it
//! reads in JSON, the value as text.
//!
//! A row key is rendered as the JSON `monotable scan` prints for it, except
//! that a key of one string element is that string unquoted: `("alice")`
//! becomes `alice`, `("paris", 31)` becomes `["paris",31]`. A value that is
//! a MessagePack string becomes that string, any other MessagePack value
//! its compact JSON, and bytes that are not MessagePack are kept as they
//! are.

use monotable_proto::tuple::{self, Element};
use serde_json::Value as Json;

use crate::cli::json::{key_from_json_text, key_to_json, value_to_json};

pub fn render_key(key: &[u8]) -> Vec<u8> {
    match key_to_json(key) {
        Json::String(s) => s.into_bytes(),
        other => other.to_string().into_bytes(),
    }
}

pub fn render_value(value: &[u8]) -> Vec<u8> {
    let mut rest = value;
    if rmpv::decode::read_value(&mut rest).is_err() || !rest.is_empty() {
        return value.to_vec();
    }
    match value_to_json(value) {
        Json::String(s) => s.into_bytes(),
        other => other.to_string().into_bytes(),
    }
}

/// The row keys that render as `text` (at most two: a string, and a JSON
/// form that happens to read the same).
pub fn keys_rendering_as(text: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    if let Ok(s) = std::str::from_utf8(text) {
        if let Ok(k) = tuple::encode(&[Element::String(s.to_owned())]) {
            out.push(k);
        }
        if let Ok(k) = key_from_json_text(s) {
            out.push(k);
        }
    }
    out.retain(|k| render_key(k) == text);
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_keys_map_back() {
        let keys = [
            tuple::encode(&[Element::String("alice".into())]).expect("encodes"),
            tuple::encode(&[Element::String("42".into())]).expect("encodes"),
            tuple::encode(&[Element::Int(42)]).expect("encodes"),
            tuple::encode(&[Element::String("paris".into()), Element::Int(31)]).expect("encodes"),
        ];
        for k in &keys {
            let text = render_key(k);
            assert!(keys_rendering_as(&text).contains(k), "{text:?}");
        }
        assert_eq!(render_key(&keys[0]), b"alice");
        assert_eq!(render_key(&keys[3]), br#"["paris",31]"#);
    }

    #[test]
    fn values_render_as_text() {
        let mut s = Vec::new();
        rmpv::encode::write_value(&mut s, &rmpv::Value::from("hi")).expect("encodes");
        assert_eq!(render_value(&s), b"hi");
        let mut n = Vec::new();
        rmpv::encode::write_value(&mut n, &rmpv::Value::from(7)).expect("encodes");
        assert_eq!(render_value(&n), b"7");
        assert_eq!(render_value(&[0xc1, 1]), vec![0xc1, 1]);
    }
}
