//! The command line's JSON forms of keys and values.
//!
//! Keys: a JSON string, number, boolean or null is a one-element tuple key;
//! an array is a composite (tuple) key, nested arrays are nested tuples;
//! `{"$bytes":"<hex>"}` is a bytes element; `{"$raw":"<hex>"}` is a key of
//! raw bytes that is not a tuple. Keys print back in the same form.
//!
//! Values: any JSON document, stored as MessagePack. Values that are not
//! MessagePack print as `{"$raw":"<hex>"}`; MessagePack binary prints as
//! `{"$bytes":"<hex>"}`.

use anyhow::{anyhow, bail, Context, Result};
use monotable_proto::tuple::{self, Element};
use serde_json::{Map, Number, Value as Json};

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn unhex(s: &str) -> Result<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        bail!("hex string {s:?} has an odd length");
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).with_context(|| format!("bad hex in {s:?}")))
        .collect()
}

fn tagged<'a>(obj: &'a Map<String, Json>, tag: &str) -> Option<&'a str> {
    if obj.len() == 1 {
        obj.get(tag).and_then(Json::as_str)
    } else {
        None
    }
}

fn element_from_json(j: &Json) -> Result<Element> {
    Ok(match j {
        Json::Null => Element::Null,
        Json::Bool(b) => Element::Bool(*b),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                Element::Int(i128::from(i))
            } else if let Some(u) = n.as_u64() {
                Element::Int(i128::from(u))
            } else {
                Element::Float(n.as_f64().ok_or_else(|| anyhow!("unrepresentable number {n}"))?)
            }
        }
        Json::String(s) => Element::String(s.clone()),
        Json::Array(items) => {
            Element::Tuple(items.iter().map(element_from_json).collect::<Result<_>>()?)
        }
        Json::Object(obj) => match tagged(obj, "$bytes") {
            Some(h) => Element::Bytes(unhex(h)?),
            None => bail!("a key element cannot be an object (except {{\"$bytes\":\"<hex>\"}})"),
        },
    })
}

/// Parses the JSON form of a key into key bytes.
pub fn key_from_json(j: &Json) -> Result<Vec<u8>> {
    if let Json::Object(obj) = j {
        if let Some(h) = tagged(obj, "$raw") {
            return unhex(h);
        }
    }
    let elements = match j {
        Json::Array(items) => items.iter().map(element_from_json).collect::<Result<Vec<_>>>()?,
        other => vec![element_from_json(other)?],
    };
    Ok(tuple::encode(&elements)?)
}

/// Parses a key given on the command line: JSON, or else a bare word taken
/// as a string (so `monotable get users ada` works without quoting).
pub fn key_arg(arg: &str) -> Result<Vec<u8>> {
    match serde_json::from_str::<Json>(arg) {
        Ok(j) => key_from_json(&j),
        Err(_) => key_from_json(&Json::String(arg.to_owned())),
    }
}

/// Parses a `--prefix` argument into scan bounds: the first key and the
/// exclusive end (`None`: the end of the range). A tuple prefix covers the
/// tuples that start with its elements ([`monotable_proto::keys::tuple_prefix_end`]);
/// a `{"$raw":..}` prefix covers the keys that start with its bytes.
pub fn prefix_arg(arg: &str) -> Result<(Vec<u8>, Option<Vec<u8>>)> {
    let raw = matches!(
        serde_json::from_str::<Json>(arg),
        Ok(Json::Object(ref obj)) if tagged(obj, "$raw").is_some()
    );
    let prefix = key_arg(arg)?;
    let end = if raw {
        monotable_proto::keys::prefix_end(&prefix)
    } else {
        monotable_proto::keys::tuple_prefix_end(&prefix)
    };
    Ok((prefix, end))
}

fn element_to_json(e: &Element) -> Json {
    match e {
        Element::Null => Json::Null,
        Element::Bool(b) => Json::Bool(*b),
        Element::Int(i) => {
            if let Ok(v) = i64::try_from(*i) {
                Json::Number(v.into())
            } else if let Ok(v) = u64::try_from(*i) {
                Json::Number(v.into())
            } else {
                // Below i64::MIN: JSON numbers cannot carry it exactly.
                Json::String(i.to_string())
            }
        }
        Element::Float(f) => {
            Number::from_f64(*f).map_or_else(|| Json::String(f.to_string()), Json::Number)
        }
        Element::String(s) => Json::String(s.clone()),
        Element::Bytes(b) => {
            let mut m = Map::new();
            m.insert("$bytes".into(), Json::String(hex(b)));
            Json::Object(m)
        }
        Element::Tuple(items) => Json::Array(items.iter().map(element_to_json).collect()),
    }
}

/// The JSON form of key bytes.
pub fn key_to_json(key: &[u8]) -> Json {
    match tuple::decode(key) {
        Ok(elements) => match elements.as_slice() {
            [single] if !matches!(single, Element::Tuple(_)) => element_to_json(single),
            _ => Json::Array(elements.iter().map(element_to_json).collect()),
        },
        Err(_) => {
            let mut m = Map::new();
            m.insert("$raw".into(), Json::String(hex(key)));
            Json::Object(m)
        }
    }
}

fn json_to_msgpack(j: &Json) -> rmpv::Value {
    match j {
        Json::Null => rmpv::Value::Nil,
        Json::Bool(b) => rmpv::Value::Boolean(*b),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                rmpv::Value::from(i)
            } else if let Some(u) = n.as_u64() {
                rmpv::Value::from(u)
            } else {
                rmpv::Value::F64(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Json::String(s) => rmpv::Value::String(s.clone().into()),
        Json::Array(items) => rmpv::Value::Array(items.iter().map(json_to_msgpack).collect()),
        Json::Object(obj) => match tagged(obj, "$bytes").map(unhex) {
            Some(Ok(b)) => rmpv::Value::Binary(b),
            _ => rmpv::Value::Map(
                obj.iter()
                    .map(|(k, v)| (rmpv::Value::String(k.clone().into()), json_to_msgpack(v)))
                    .collect(),
            ),
        },
    }
}

/// Encodes a JSON document as the MessagePack bytes Monotable stores.
pub fn value_from_json(j: &Json) -> Vec<u8> {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &json_to_msgpack(j)).expect("writing to a Vec cannot fail");
    out
}

/// Parses a value given on the command line: JSON, or else a bare word taken
/// as a string.
pub fn value_arg(arg: &str) -> Vec<u8> {
    match serde_json::from_str::<Json>(arg) {
        Ok(j) => value_from_json(&j),
        Err(_) => value_from_json(&Json::String(arg.to_owned())),
    }
}

fn msgpack_to_json(v: &rmpv::Value) -> Json {
    use rmpv::Value as M;
    match v {
        M::Nil => Json::Null,
        M::Boolean(b) => Json::Bool(*b),
        M::Integer(i) => {
            if let Some(x) = i.as_i64() {
                Json::Number(x.into())
            } else {
                Json::Number(i.as_u64().unwrap_or_default().into())
            }
        }
        M::F32(f) => Number::from_f64(f64::from(*f)).map_or(Json::Null, Json::Number),
        M::F64(f) => Number::from_f64(*f).map_or(Json::Null, Json::Number),
        M::String(s) => match s.as_str() {
            Some(s) => Json::String(s.to_owned()),
            None => Json::String(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        },
        M::Binary(b) => {
            let mut m = Map::new();
            m.insert("$bytes".into(), Json::String(hex(b)));
            Json::Object(m)
        }
        M::Array(items) => Json::Array(items.iter().map(msgpack_to_json).collect()),
        M::Map(pairs) => Json::Object(
            pairs
                .iter()
                .map(|(k, v)| {
                    let key = match k {
                        M::String(s) => s.as_str().map_or_else(|| k.to_string(), str::to_owned),
                        other => other.to_string(),
                    };
                    (key, msgpack_to_json(v))
                })
                .collect(),
        ),
        M::Ext(kind, data) => {
            let mut m = Map::new();
            m.insert(
                "$ext".into(),
                Json::Array(vec![Json::Number((*kind).into()), Json::String(hex(data))]),
            );
            Json::Object(m)
        }
    }
}

/// The JSON form of stored value bytes.
pub fn value_to_json(bytes: &[u8]) -> Json {
    let mut rest = bytes;
    match rmpv::decode::read_value(&mut rest) {
        Ok(v) if rest.is_empty() => msgpack_to_json(&v),
        _ => {
            let mut m = Map::new();
            m.insert("$raw".into(), Json::String(hex(bytes)));
            Json::Object(m)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_round_trip_in_their_json_form() {
        for j in [
            json!("ada"),
            json!(42),
            json!(-7),
            json!(1.5),
            json!(null),
            json!(true),
            json!(["paris", 31]),
            json!([["nested", 1], 2]),
            json!({"$bytes": "00ff"}),
            json!({"$raw": "ff00"}),
            json!([]),
        ] {
            let key = key_from_json(&j).expect("valid key");
            assert_eq!(key_to_json(&key), j, "{j}");
        }
    }

    #[test]
    fn composite_keys_sort_by_elements() {
        let a = key_from_json(&json!(["paris", 31])).expect("key");
        let b = key_from_json(&json!(["paris", 40])).expect("key");
        assert!(a < b);
    }

    #[test]
    fn bare_words_are_strings() {
        assert_eq!(key_arg("ada").expect("key"), key_from_json(&json!("ada")).expect("key"));
        assert_eq!(value_to_json(&value_arg("hello world")), json!("hello world"));
    }

    #[test]
    fn values_round_trip_through_msgpack() {
        let j = json!({"name": "ada", "born": 1815, "tags": ["math", null], "ratio": 0.5, "big": u64::MAX});
        assert_eq!(value_to_json(&value_from_json(&j)), j);
        assert_eq!(value_to_json(b"\x92\x01"), json!({"$raw": "9201"}));
        assert_eq!(value_to_json(b"\x01\x02"), json!({"$raw": "0102"}));
    }

    #[test]
    fn object_keys_are_refused() {
        assert!(key_from_json(&json!({"a": 1})).is_err());
        assert!(key_from_json(&json!([{"a": 1}])).is_err());
    }
}
