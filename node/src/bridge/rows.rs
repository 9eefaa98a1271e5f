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

use crate::json::{key_from_json_text, key_to_json, value_to_json};

pub fn render_key(key: &[u8]) -> Vec<u8> {
    render_key_marked(key).0
}

/// [`render_key`], and whether the text could be another key's too: a
/// key that is not one string renders as JSON, and so does a string that
/// reads as JSON other than a string (`"1"`, `"null"`, `"[1,2]"`). A plain
/// word never collides.
pub fn render_key_marked(key: &[u8]) -> (Vec<u8>, bool) {
    match key_to_json(key) {
        Json::String(s) => {
            let json_like = s
                .starts_with(|c: char| c == '-' || c == '[' || c == '{' || c.is_ascii_digit())
                || matches!(s.as_str(), "null" | "true" | "false");
            let ambiguous =
                json_like && serde_json::from_str::<Json>(&s).is_ok_and(|j| !j.is_string());
            (s.into_bytes(), ambiguous)
        }
        other => (other.to_string().into_bytes(), true),
    }
}

/// Rows that render as the same Redis key (or hash field) as an earlier
/// row of one export or job: the later is not written, and counted. Keeps
/// a 64-bit hash of each rendering that could collide
/// ([`render_key_marked`]); plain words cost nothing.
#[derive(Default)]
pub struct Renderings {
    seen: std::collections::HashSet<u64>,
}

impl Renderings {
    /// `key` rendered ([`render_key`]), or `None` when an earlier key
    /// rendered the same.
    pub fn render(&mut self, key: &[u8]) -> Option<Vec<u8>> {
        let (text, ambiguous) = render_key_marked(key);
        if ambiguous && !self.seen.insert(xxhash_rust::xxh3::xxh3_64(&text)) {
            return None;
        }
        Some(text)
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
    fn keys_that_render_alike_are_caught() {
        let key = |e: Element| tuple::encode(&[e]).expect("encodes");
        let mut r = Renderings::default();
        assert_eq!(r.render(&key(Element::String("1".into()))), Some(b"1".to_vec()));
        assert_eq!(r.render(&key(Element::Int(1))), None, "1 and \"1\" render alike");
        assert_eq!(r.render(&key(Element::Null)), Some(b"null".to_vec()));
        assert_eq!(r.render(&key(Element::String("null".into()))), None);
        assert!(r.render(&key(Element::String("paris".into()))).is_some());
        assert!(
            r.render(&key(Element::String("paris".into()))).is_some(),
            "plain words are not kept"
        );
        assert!(r.seen.len() == 2);
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
