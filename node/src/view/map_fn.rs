//! The built-in mapper: emit a field of the record as the index key.
//!
//! `--field user.city` emits, for a record `{"user": {"city": "paris"}}`,
//! one index row whose emitted key is `("paris",)` (the row key is laid out
//! by [`monotable_proto::row`]: emitted key, source key), so rows of
//! different records never collide and group level 1 groups by city. With
//! `--value-field amount` the row's value is that field; otherwise it is nil.
//! A record without the field emits nothing. Path segments are map keys;
//! a segment that is a number also indexes arrays.

use monotable_proto::row;
use monotable_proto::tuple::Element;

use super::sandbox::Interrupted;

/// A record's value as one MessagePack value. Bytes that are not exactly
/// one (raw bytes a client wrote unencoded: `b"hello"` starts like the
/// integer 104 and goes on) are an error, never a value that maps to
/// nothing.
pub fn decode_record(value: &[u8]) -> Result<rmpv::Value, MapError> {
    decode_value(value).ok_or(MapError::NotMessagePack)
}

/// Exactly one MessagePack value, or `None`. The reserved byte `0xc1`
/// where a value should start makes the bytes not MessagePack: `rmpv`
/// reads it as nil. Postmortem: a record `c1` mapped as nil (a field
/// mapper emitted nothing, a Lua map got nil) instead of failing.
pub fn decode_value(bytes: &[u8]) -> Option<rmpv::Value> {
    let mut rest = bytes;
    let v = rmpv::decode::read_value(&mut rest).ok()?;
    if !rest.is_empty() {
        return None;
    }
    // Rare in practice: checked again, strictly, only when the byte occurs
    // at all (it may be inside a string or binary payload).
    if memchr::memchr(0xc1, bytes).is_some()
        && rmp_serde::from_slice::<serde::de::IgnoredAny>(bytes).is_err()
    {
        return None;
    }
    Some(v)
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FieldMapper {
    key_path: Vec<String>,
    value_path: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    #[error(
        "record is not MessagePack: views read values encoded as one MessagePack value \
         (the CLI and RESP commands encode JSON; clients must encode values themselves)"
    )]
    NotMessagePack,
    #[error("field {path} holds a map, which cannot be part of a key")]
    MapInKey { path: String },
    #[error("field {path}: {reason}")]
    BadKey { path: String, reason: String },
    #[error("invalid field path {0:?}: use dot-separated names, like user.city")]
    BadPath(String),
}

fn parse_path(path: &str) -> Result<Vec<String>, MapError> {
    let parts: Vec<String> = path.split('.').map(str::to_owned).collect();
    if path.is_empty() || parts.iter().any(String::is_empty) {
        return Err(MapError::BadPath(path.to_owned()));
    }
    Ok(parts)
}

fn lookup<'a>(mut v: &'a rmpv::Value, path: &[String]) -> Option<&'a rmpv::Value> {
    for seg in path {
        v = match v {
            rmpv::Value::Map(pairs) => {
                pairs.iter().find(|(k, _)| k.as_str() == Some(seg)).map(|(_, v)| v)?
            }
            rmpv::Value::Array(items) => items.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(v)
}

/// `v` as a tuple element; `path` names the field in errors.
fn element(v: &rmpv::Value, path: &[String]) -> Result<Element, MapError> {
    Ok(match v {
        rmpv::Value::Nil => Element::Null,
        rmpv::Value::Boolean(b) => Element::Bool(*b),
        rmpv::Value::Integer(i) => Element::Int(
            i.as_i64().map(i128::from).or_else(|| i.as_u64().map(i128::from)).unwrap_or(0),
        ),
        rmpv::Value::F32(f) => Element::Float(f64::from(*f)),
        rmpv::Value::F64(f) => Element::Float(*f),
        rmpv::Value::String(s) => {
            Element::String(String::from_utf8_lossy(s.as_bytes()).into_owned())
        }
        rmpv::Value::Binary(b) => Element::Bytes(b.clone()),
        rmpv::Value::Array(items) => {
            Element::Tuple(items.iter().map(|i| element(i, path)).collect::<Result<_, _>>()?)
        }
        rmpv::Value::Map(_) => return Err(MapError::MapInKey { path: path.join(".") }),
        rmpv::Value::Ext(..) => {
            return Err(MapError::BadKey {
                path: path.join("."),
                reason: "extension types cannot be keys".into(),
            })
        }
    })
}

/// An index row: key ([`monotable_proto::row::encode_row`]: emitted key,
/// source key, repeat number) and value.
pub type Row = (Vec<u8>, Vec<u8>);

/// Checks `rows` as the target's chunk would (key and value sizes); a
/// record with a row it would refuse writes none of its rows.
pub fn check_rows(rows: &[Row]) -> Result<(), String> {
    for (k, v) in rows {
        monotable_proto::limits::check_row_size(k, Some(v))
            .map_err(|e| format!("row not written: {}", crate::error::NodeError::from(e)))?;
    }
    Ok(())
}

/// MessagePack nil: the value of rows emitted without a value field.
const NIL: u8 = 0xc0;

impl FieldMapper {
    pub fn new(key_path: &str, value_path: Option<&str>) -> Result<Self, MapError> {
        Ok(FieldMapper {
            key_path: parse_path(key_path)?,
            value_path: value_path.map(parse_path).transpose()?,
        })
    }

    pub fn key_path(&self) -> String {
        self.key_path.join(".")
    }

    pub fn value_path(&self) -> Option<String> {
        self.value_path.as_ref().map(|p| p.join("."))
    }

    /// The index rows `(key, value)` one source record maps to.
    pub fn map(&self, source_key: &[u8], value: &[u8]) -> Result<Vec<Row>, MapError> {
        let Some((field, row_value)) = self.emit(value)? else { return Ok(Vec::new()) };
        let key = row::encode_row(&[field], source_key, 0)
            .map_err(|e| MapError::BadKey { path: self.key_path(), reason: e.to_string() })?;
        Ok(vec![(key, row_value)])
    }

    /// A batch job's output key and row value for a record: the key field
    /// as the tuple `[field]` (what [`row::encode_row`] nests in the row
    /// key), or `None` when the record has no key field.
    pub fn emit_key(&self, value: &[u8]) -> Result<Option<Row>, MapError> {
        let Some((field, row_value)) = self.emit(value)? else { return Ok(None) };
        let key = monotable_proto::tuple::encode(&[field])
            .map_err(|e| MapError::BadKey { path: self.key_path(), reason: e.to_string() })?;
        Ok(Some((key, row_value)))
    }

    /// What a record emits: its key field as one element and the value
    /// field's MessagePack (nil when absent), or `None` when the record
    /// has no key field. A batch job's output key is `[element]` as a
    /// tuple, without the row key around it.
    pub fn emit(&self, value: &[u8]) -> Result<Option<(Element, Vec<u8>)>, MapError> {
        let doc = decode_record(value)?;
        let Some(field) = lookup(&doc, &self.key_path) else { return Ok(None) };
        let field = element(field, &self.key_path)?;
        let row_value = match &self.value_path {
            None => vec![NIL],
            Some(vp) => match lookup(&doc, vp) {
                Some(v) => {
                    let mut out = Vec::new();
                    rmpv::encode::write_value(&mut out, v).expect("writing to a Vec cannot fail");
                    out
                }
                None => vec![NIL],
            },
        };
        Ok(Some((field, row_value)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(j: serde_json::Value) -> Vec<u8> {
        rmp_serde::to_vec(&j).expect("json encodes")
    }

    #[test]
    fn the_reserved_byte_is_not_messagepack() {
        assert_eq!(decode_value(&[0xc1]), None);
        assert_eq!(decode_value(&[0x91, 0xc1]), None, "inside an array");
        assert_eq!(decode_value(&[0x81, 0xa1, b'a', 0xc1]), None, "a map's value");
        let s = doc(serde_json::json!("a\u{c1}b"));
        assert!(decode_value(&s).is_some(), "the byte inside a string");
        assert_eq!(decode_value(&[0xc4, 1, 0xc1]), Some(rmpv::Value::Binary(vec![0xc1])));
        assert!(matches!(decode_record(&[0xc1]), Err(MapError::NotMessagePack)));
    }

    /// A job's output key taken straight from the field equals the one
    /// read out of the row key a view would write, for every kind of key.
    #[test]
    fn a_jobs_emitted_key_is_the_row_keys_nested_key() {
        let m = FieldMapper::new("k", Some("v")).expect("path");
        let keys = [
            serde_json::json!(null),
            serde_json::json!(true),
            serde_json::json!(-7),
            serde_json::json!(u64::MAX),
            serde_json::json!(i64::MIN),
            serde_json::json!(1.5),
            serde_json::json!(""),
            serde_json::json!("a\u{0}b\u{0}"),
            serde_json::json!([null, [null, "x"], 3]),
            serde_json::json!([]),
        ];
        for k in keys {
            let value = doc(serde_json::json!({"k": k.clone(), "v": 1}));
            let rows = m.map(b"src\0", &value).expect("maps");
            let (key, row_value) = m.emit_key(&value).expect("emits").expect("a key field");
            let nested = monotable_proto::tuple::first_nested_as_tuple(&rows[0].0).expect("row");
            assert_eq!(key, nested, "{k}");
            assert_eq!(row_value, rows[0].1, "{k}");
        }
        let bin = rmp_serde::to_vec(&std::collections::BTreeMap::from([(
            "k",
            serde_bytes::ByteBuf::from(vec![0u8, 0xff, 0]),
        )]))
        .expect("encodes");
        let rows = m.map(b"s", &bin).expect("maps");
        let (key, _) = m.emit_key(&bin).expect("emits").expect("a key field");
        assert_eq!(key, monotable_proto::tuple::first_nested_as_tuple(&rows[0].0).expect("row"));
        assert_eq!(m.emit_key(&doc(serde_json::json!({"v": 1}))).expect("emits"), None);
        let map_in_key = doc(serde_json::json!({"k": {"a": 1}}));
        assert_eq!(
            m.emit_key(&map_in_key).expect_err("a map").to_string(),
            m.map(b"s", &map_in_key).expect_err("a map").to_string()
        );
    }

    #[test]
    fn emits_the_field_then_the_source_key() {
        let m = FieldMapper::new("user.city", Some("amount")).expect("path");
        let rows = m
            .map(b"src1", &doc(serde_json::json!({"user": {"city": "paris"}, "amount": 12})))
            .expect("maps");
        assert_eq!(rows.len(), 1);
        let want = row::encode_row(&["paris".into()], b"src1", 0).expect("key");
        assert_eq!(rows[0].0, want);
        assert_eq!(rows[0].1, doc(serde_json::json!(12)));
    }

    #[test]
    fn missing_fields_emit_nothing_and_arrays_index() {
        let m = FieldMapper::new("tags.1", None).expect("path");
        assert_eq!(m.map(b"k", &doc(serde_json::json!({"other": 1}))).expect("maps"), vec![]);
        let rows = m.map(b"k", &doc(serde_json::json!({"tags": ["a", "b"]}))).expect("maps");
        assert_eq!(row::decode_row(&rows[0].0).expect("row").0, vec![Element::from("b")]);
        assert_eq!(rows[0].1, vec![NIL]);
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(FieldMapper::new("a..b", None).is_err());
        assert!(FieldMapper::new("", None).is_err());
        let m = FieldMapper::new("a", None).expect("path");
        assert_eq!(m.map(b"k", b"\x92\x01"), Err(MapError::NotMessagePack));
        // Postmortem: raw bytes that start like a MessagePack value (`h` is
        // the integer 104) mapped to nothing, with no error shown.
        assert_eq!(m.map(b"k", b"hello"), Err(MapError::NotMessagePack));
        assert!(matches!(
            m.map(b"k", &doc(serde_json::json!({"a": {"x": 1}}))),
            Err(MapError::MapInKey { .. })
        ));
    }

    #[test]
    fn rows_of_one_group_sort_together() {
        let m = FieldMapper::new("n", None).expect("path");
        let key = |n: i64, src: &[u8]| {
            m.map(src, &doc(serde_json::json!({"n": n}))).expect("maps")[0].0.clone()
        };
        assert!(key(2, b"zzz") < key(10, b"aaa"));
        assert!(key(10, b"aaa") < key(10, b"bbb"));
    }
}

/// A mapper's function as stored in the catalog.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MapperFunction {
    Field(FieldMapper),
    /// Lua source defining `map(key, value)`.
    Lua(String),
}

/// Records mapped per Lua call.
const LUA_BATCH_RECORDS: usize = 256;

/// A mapper's function, ready to run.
pub enum Mapper {
    Field(FieldMapper),
    Lua(super::lua::LuaMapper),
}

impl MapperFunction {
    /// The function as `CreateMapper` takes it.
    pub fn to_proto(&self) -> monotable_proto::MapFunction {
        match self {
            MapperFunction::Field(f) => monotable_proto::MapFunction::Field {
                key_path: f.key_path(),
                value_path: f.value_path(),
            },
            MapperFunction::Lua(source) => {
                monotable_proto::MapFunction::Lua { source: source.clone() }
            }
        }
    }

    pub fn describe(&self) -> String {
        match self {
            MapperFunction::Field(f) => match f.value_path() {
                Some(v) => format!("field {} value {}", f.key_path(), v),
                None => format!("field {}", f.key_path()),
            },
            MapperFunction::Lua(src) => format!("lua ({} bytes)", src.len()),
        }
    }

    /// The function ready to run: a Lua one runs its top-level code (under
    /// the limits of any call), so call this off the connection workers.
    pub fn compile(&self, env: &super::lua::LuaEnv) -> Result<Mapper, String> {
        Ok(match self {
            MapperFunction::Field(f) => Mapper::Field(f.clone()),
            MapperFunction::Lua(src) => {
                Mapper::Lua(super::lua::LuaMapper::new(src, env).map_err(|e| e.to_string())?)
            }
        })
    }
}

impl Mapper {
    /// The rows of each record, or the error it caused, for a prefix of
    /// `records`: every record when `instructions_max` is `None`, else the
    /// batches mapped until they used `instructions_max` Lua instructions
    /// (at least one batch, so a non-empty input maps at least one record).
    /// Each record maps as it would alone, with a whole call's budget.
    ///
    /// # Errors
    /// [`Interrupted`] when a Lua call was stopped meanwhile (a drop or a
    /// shutdown): the errors it left on records are not theirs, and a round
    /// that kept them would lose those records' rows for good.
    pub fn map_many(
        &self,
        records: &[(&[u8], &[u8])],
        instructions_max: Option<u64>,
    ) -> Result<Vec<Result<Vec<Row>, String>>, Interrupted> {
        match self {
            Mapper::Field(f) => {
                Ok(records.iter().map(|(k, v)| f.map(k, v).map_err(|e| e.to_string())).collect())
            }
            Mapper::Lua(m) => {
                let mut out = Vec::with_capacity(records.len());
                let mut used = 0u64;
                while out.len() < records.len()
                    && instructions_max.is_none_or(|max| out.is_empty() || used < max)
                {
                    let rest = &records[out.len()..];
                    let batch = &rest[..rest.len().min(LUA_BATCH_RECORDS)];
                    // A batch maps at least one record: each turn goes on.
                    let (mapped, instructions) = m.map_batch(batch);
                    used = used.saturating_add(instructions);
                    out.extend(mapped.into_iter().map(|r| r.map_err(|e| e.to_string())));
                }
                // Checked after the calls: the flag is sticky, so a call it
                // cut short finds it still set here.
                if m.interrupted() {
                    return Err(Interrupted);
                }
                Ok(out)
            }
        }
    }
}
