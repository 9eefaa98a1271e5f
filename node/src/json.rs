//! The command line's JSON forms of keys and values.
//!
//! Keys: a JSON string, number, boolean or null is a one-element tuple key;
//! an array is a composite (tuple) key, nested arrays are nested tuples;
//! `{"$bytes":"<hex>"}` is a bytes element; `{"$float":"inf"}`,
//! `{"$float":"-inf"}` and `{"$float":"nan"}` are the non-finite floats;
//! `{"$int":"<decimal>"}` is an integer (how integers below -2^63, which
//! most JSON readers would round, print);
//! `{"$raw":"<hex>"}` is a key of raw bytes that is not a tuple. Keys print
//! back in the same form. Numbers follow the tuple encoding's rule
//! ([`monotable_proto::tuple`]): `1.0` is the key `1` (and prints as `1`).
//! An integer literal must lie in `-(2^64-1)..=2^64-1` (it is read exactly,
//! also beyond 64-bit JSON numbers); a float literal must be finite (`1e400`
//! is an error, not the string "1e400").
//!
//! Values: any JSON document, stored as MessagePack. Values that are not
//! MessagePack print as `{"$raw":"<hex>"}`; MessagePack binary prints as
//! `{"$bytes":"<hex>"}`; non-finite floats as the `$float` forms above, which
//! also parse back into floats.

use anyhow::{anyhow, bail, Context, Result};
use monotable_proto::tuple::{self, Element};
use serde_json::{Map, Number, Value as Json};

pub use monotable_proto::keys::hex;

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

/// The `{"$float":..}` form of a non-finite float; `None` for a finite one.
fn float_tag(f: f64) -> Option<Json> {
    let name = if f.is_nan() {
        "nan"
    } else if f == f64::INFINITY {
        "inf"
    } else if f == f64::NEG_INFINITY {
        "-inf"
    } else {
        return None;
    };
    let mut m = Map::new();
    m.insert("$float".into(), Json::String(name.into()));
    Some(Json::Object(m))
}

fn float_from_tag(name: &str) -> Result<f64> {
    Ok(match name {
        "inf" => f64::INFINITY,
        "-inf" => f64::NEG_INFINITY,
        "nan" => f64::NAN,
        other => {
            bail!("{{\"$float\":{other:?}}}: the $float forms are \"inf\", \"-inf\" and \"nan\"")
        }
    })
}

/// A number token of a JSON text: an integer literal (no fraction, no
/// exponent) with its exact value (`None`: beyond `i128`), or another number.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Literal {
    Int(Option<i128>),
    Other,
}

/// The number tokens of a JSON text, in document order (strings skipped).
/// serde_json reads an integer beyond 64 bits as a rounded float; these
/// give keys their exact value back.
fn number_literals(text: &str) -> Vec<Literal> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < b.len() && matches!(b[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                {
                    i += 1;
                }
                let token = &text[start..i];
                out.push(if token.contains(['.', 'e', 'E']) {
                    Literal::Other
                } else {
                    Literal::Int(token.parse::<i128>().ok())
                });
            }
            _ => i += 1,
        }
    }
    out
}

const KEY_INT_RANGE: &str = "-(2^64-1)..=2^64-1";

fn element_from_json(j: &Json, literals: &mut dyn Iterator<Item = Literal>) -> Result<Element> {
    Ok(match j {
        Json::Null => Element::Null,
        Json::Bool(b) => Element::Bool(*b),
        Json::Number(n) => match literals.next() {
            Some(Literal::Int(Some(v))) if v.unsigned_abs() <= tuple::INT_MAGNITUDE_MAX => {
                Element::Int(v)
            }
            Some(Literal::Int(_)) => {
                bail!("integer {n} is out of the key integer range {KEY_INT_RANGE}")
            }
            _ => {
                if let Some(i) = n.as_i64() {
                    Element::Int(i128::from(i))
                } else if let Some(u) = n.as_u64() {
                    Element::Int(i128::from(u))
                } else {
                    Element::Float(n.as_f64().ok_or_else(|| anyhow!("unrepresentable number {n}"))?)
                }
            }
        },
        Json::String(s) => Element::String(s.clone()),
        Json::Array(items) => Element::Tuple(
            items.iter().map(|i| element_from_json(i, literals)).collect::<Result<_>>()?,
        ),
        Json::Object(obj) => {
            if let Some(h) = tagged(obj, "$bytes") {
                Element::Bytes(unhex(h)?)
            } else if let Some(name) = tagged(obj, "$float") {
                Element::Float(float_from_tag(name)?)
            } else if let Some(digits) = tagged(obj, "$int") {
                match digits.parse::<i128>() {
                    Ok(v) if v.unsigned_abs() <= tuple::INT_MAGNITUDE_MAX => Element::Int(v),
                    _ => bail!(
                        "{{\"$int\":{digits:?}}} is not an integer in the key integer range \
                         {KEY_INT_RANGE}"
                    ),
                }
            } else {
                bail!(
                    "a key element cannot be an object (except {{\"$bytes\":\"<hex>\"}}, \
                     {{\"$float\":\"inf\"|\"-inf\"|\"nan\"}} and {{\"$int\":\"<decimal>\"}})"
                )
            }
        }
    })
}

fn key_from_json_literals(
    j: &Json,
    literals: &mut dyn Iterator<Item = Literal>,
) -> Result<Vec<u8>> {
    if let Json::Object(obj) = j {
        if let Some(h) = tagged(obj, "$raw") {
            return unhex(h);
        }
    }
    let elements = match j {
        Json::Array(items) => {
            items.iter().map(|i| element_from_json(i, literals)).collect::<Result<Vec<_>>>()?
        }
        other => vec![element_from_json(other, literals)?],
    };
    Ok(tuple::encode(&elements)?)
}

/// Parses the JSON form of a key into key bytes. An integer beyond 64 bits
/// reaches here rounded by the JSON parser; [`key_from_json_text`] reads
/// it exactly (or refuses it when it is out of the key range).
pub fn key_from_json(j: &Json) -> Result<Vec<u8>> {
    key_from_json_literals(j, &mut std::iter::empty())
}

/// Parses the JSON text of a key into key bytes, integers exactly.
pub fn key_from_json_text(text: &str) -> Result<Vec<u8>> {
    let j: Json = serde_json::from_str(text).map_err(|e| anyhow!("{text}: not JSON: {e}"))?;
    key_from_json_literals(&j, &mut number_literals(text).into_iter())
}

/// Whether JSON parsing failed on a number it cannot hold (`1e400`).
fn number_out_of_range(e: &serde_json::Error) -> bool {
    e.to_string().starts_with("number out of range")
}

/// Parses a key given on the command line: JSON, or else a bare word taken
/// as a string (so `monotable get users ada` works without quoting). A
/// number too large for a float (`1e400`) is an error, not a word.
pub fn key_arg(arg: &str) -> Result<Vec<u8>> {
    match serde_json::from_str::<Json>(arg) {
        Ok(j) => key_from_json_literals(&j, &mut number_literals(arg).into_iter()),
        Err(e) if number_out_of_range(&e) => {
            bail!("{arg}: number out of range (a float key is finite or {{\"$float\":\"inf\"}})")
        }
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
                // Below i64::MIN: a JSON number here would be read back
                // rounded by most parsers; a string would be another key.
                let mut m = Map::new();
                m.insert("$int".into(), Json::String(i.to_string()));
                Json::Object(m)
            }
        }
        Element::Float(f) => match Number::from_f64(*f) {
            Some(n) => Json::Number(n),
            None => float_tag(*f).unwrap_or(Json::Null),
        },
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
        Json::Object(obj) => {
            if let Some(Ok(b)) = tagged(obj, "$bytes").map(unhex) {
                rmpv::Value::Binary(b)
            } else if let Some(Ok(f)) = tagged(obj, "$float").map(float_from_tag) {
                rmpv::Value::F64(f)
            } else {
                rmpv::Value::Map(
                    obj.iter()
                        .map(|(k, v)| (rmpv::Value::String(k.clone().into()), json_to_msgpack(v)))
                        .collect(),
                )
            }
        }
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

/// A float value: a JSON number, or its `$float` form when not finite.
fn float_json(f: f64) -> Json {
    Number::from_f64(f).map_or_else(|| float_tag(f).unwrap_or(Json::Null), Json::Number)
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
        M::F32(f) => float_json(f64::from(*f)),
        M::F64(f) => float_json(*f),
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

    /// Postmortem: non-finite float keys printed as the strings "inf"/"NaN"
    /// (and as null in values), so they parsed back as other keys.
    #[test]
    fn non_finite_floats_print_as_tagged_forms_and_parse_back() {
        for (f, form) in [
            (f64::INFINITY, json!({"$float": "inf"})),
            (f64::NEG_INFINITY, json!({"$float": "-inf"})),
            (f64::NAN, json!({"$float": "nan"})),
        ] {
            let key = tuple::encode(&[Element::Float(f)]).expect("encodes");
            assert_eq!(key_to_json(&key), form);
            assert_eq!(key_from_json(&form).expect("parses"), key);
            assert_eq!(key_arg(&form.to_string()).expect("parses"), key);
            let nested = tuple::encode(&["a".into(), Element::Float(f)]).expect("encodes");
            assert_eq!(key_to_json(&nested), json!(["a", form]));
            assert_eq!(key_from_json(&json!(["a", form])).expect("parses"), nested);
            // Values: the same forms, read back as floats.
            let mut v = Vec::new();
            rmpv::encode::write_value(&mut v, &rmpv::Value::F64(f)).expect("vec");
            assert_eq!(value_to_json(&v), form);
            assert_eq!(value_to_json(&value_from_json(&form)), form);
        }
        for word in ["inf", "-inf", "nan", "NaN", "Infinity"] {
            let key = key_arg(word).expect("a word");
            assert_eq!(key_to_json(&key), json!(word), "{word} stays a string");
        }
        assert!(key_from_json(&json!({"$float": "1.5"})).is_err());
    }

    /// Postmortem: an integral float key and the integer were two keys.
    #[test]
    fn an_integral_float_key_is_the_integer() {
        assert_eq!(key_arg("1.0").expect("key"), key_arg("1").expect("key"));
        assert_eq!(key_arg("-0.0").expect("key"), key_arg("0").expect("key"));
        assert_eq!(key_to_json(&key_arg("[2.0, 2.5]").expect("key")), json!([2, 2.5]));
        let big = key_arg("1e300").expect("key");
        assert_eq!(key_arg(&key_to_json(&big).to_string()).expect("key"), big);
    }

    /// Postmortem: integers beyond 64 bits were rounded to floats by the JSON
    /// parser and stored as another key; `1e400` became the string "1e400".
    #[test]
    fn out_of_range_numbers_are_errors_and_wide_integers_are_exact() {
        for bad in [
            "18446744073709551616",
            "[1, -18446744073709551616]",
            "1e999999999999999999999999999999999999999999",
        ] {
            let e = key_arg(bad).expect_err(bad).to_string();
            assert!(e.contains("-(2^64-1)..=2^64-1") || e.contains("out of range"), "{bad}: {e}");
        }
        let e = key_arg("100000000000000000000000000000000000000000000").expect_err("huge");
        assert!(e.to_string().contains("-(2^64-1)..=2^64-1"), "{e}");
        assert!(key_arg("1e400").expect_err("1e400").to_string().contains("out of range"));
        assert!(key_arg("[\"a\", -1e400]").is_err());
        let min = -(tuple::INT_MAGNITUDE_MAX as i128);
        assert_eq!(
            key_arg("-18446744073709551615").expect("in range"),
            tuple::encode(&[Element::Int(min)]).expect("encodes")
        );
        assert_eq!(
            key_arg("[\"x\", 18446744073709551615, -9223372036854775809]").expect("in range"),
            tuple::encode(&[
                "x".into(),
                Element::Int(u64::MAX.into()),
                Element::Int(-(1 << 63) - 1)
            ])
            .expect("encodes")
        );
        // Integers below -2^63 print as $int (a string would be another key).
        let wide = key_arg("[-18446744073709551615, -9223372036854775809]").expect("key");
        let printed = key_to_json(&wide);
        assert_eq!(
            printed,
            json!([{"$int": "-18446744073709551615"}, {"$int": "-9223372036854775809"}])
        );
        assert_eq!(key_arg(&printed.to_string()).expect("parses"), wide);
        assert_eq!(key_arg(r#"{"$int":"5"}"#).expect("key"), key_arg("5").expect("key"));
        assert!(key_arg(r#"{"$int":"18446744073709551616"}"#).is_err());
        assert!(key_arg(r#"{"$int":"1.5"}"#).is_err());
        // Numbers inside strings are not literals.
        assert_eq!(
            key_arg("[\"99999999999999999999999\", 5]").expect("key"),
            tuple::encode(&["99999999999999999999999".into(), Element::Int(5)]).expect("encodes")
        );
        assert_eq!(
            key_from_json_text("[\"a\\\"1\", 18446744073709551615]").expect("key"),
            tuple::encode(&["a\"1".into(), Element::Int(u64::MAX.into())]).expect("encodes")
        );
    }

    #[test]
    fn object_keys_are_refused() {
        assert!(key_from_json(&json!({"a": 1})).is_err());
        assert!(key_from_json(&json!([{"a": 1}])).is_err());
    }
}
