//! One Redis key with its whole value, and how it maps to the rows of a
//! Redis database range (the layout of [`crate::resp::keyspace`]).

use crate::resp::keyspace::{
    decode_field, decode_score, element_prefix, element_row, encode_field, encode_score,
    expiry_row, key_row, last_bytes, list_payload, list_row, score_row, Value, KIND_HASH,
    KIND_LIST, KIND_SET, KIND_STREAM, KIND_STRING, KIND_ZSET,
};

use super::BridgeError;
use crate::error::NodeResult;

/// A key's value, in one of the five Redis types.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    String(Vec<u8>),
    /// Fields in byte order.
    Hash(Vec<(Vec<u8>, Vec<u8>)>),
    /// Members in byte order.
    Set(Vec<Vec<u8>>),
    /// Elements from the head.
    List(Vec<Vec<u8>>),
    /// Members in byte order, with their scores.
    ZSet(Vec<(Vec<u8>, f64)>),
}

/// A Redis key, its value and its expiry.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub key: Vec<u8>,
    pub data: Data,
    /// Milliseconds since the Unix epoch.
    pub expire_at_ms: Option<u64>,
}

impl Data {
    pub fn kind(&self) -> u8 {
        match self {
            Data::String(_) => KIND_STRING,
            Data::Hash(_) => KIND_HASH,
            Data::Set(_) => KIND_SET,
            Data::List(_) => KIND_LIST,
            Data::ZSet(_) => KIND_ZSET,
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            Data::String(_) => "string",
            Data::Hash(_) => "hash",
            Data::Set(_) => "set",
            Data::List(_) => "list",
            Data::ZSet(_) => "zset",
        }
    }

    /// Elements of a collection (1 for a string).
    pub fn len(&self) -> usize {
        match self {
            Data::String(_) => 1,
            Data::Hash(v) => v.len(),
            Data::Set(v) | Data::List(v) => v.len(),
            Data::ZSet(v) => v.len(),
        }
    }

    /// An empty collection: Redis has no such key.
    pub fn is_empty(&self) -> bool {
        !matches!(self, Data::String(_)) && self.len() == 0
    }

    /// Bytes of payload: values, fields, members, elements.
    pub fn payload_bytes(&self) -> u64 {
        let n: usize = match self {
            Data::String(v) => v.len(),
            Data::Hash(v) => v.iter().map(|(f, x)| f.len() + x.len()).sum(),
            Data::Set(v) | Data::List(v) => v.iter().map(Vec::len).sum(),
            Data::ZSet(v) => v.iter().map(|(m, _)| m.len() + 8).sum(),
        };
        n as u64
    }

    /// The same value in the order this module keeps (hash fields, set
    /// and sorted set members sorted), so two reads compare equal.
    pub fn normalized(mut self) -> Data {
        match &mut self {
            Data::Hash(v) => v.sort(),
            Data::Set(v) => v.sort(),
            Data::ZSet(v) => v.sort_by(|a, b| a.0.cmp(&b.0)),
            Data::String(_) | Data::List(_) => {}
        }
        self
    }
}

impl Item {
    /// The rows that store this key in a Redis database range: its key row,
    /// its element rows and its expiry row. Assumes no rows of the key are
    /// there yet.
    pub fn rows(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let key = &self.key;
        let mut rows = Vec::with_capacity(self.data.len() * 2 + 2);
        let count = self.data.len() as u64;
        let head = match &self.data {
            Data::String(v) => Value::string(v.clone(), self.expire_at_ms),
            Data::List(_) => Value {
                kind: KIND_LIST,
                expire_at_ms: self.expire_at_ms,
                payload: list_payload(count, 0),
            },
            other => Value::collection(other.kind(), count, self.expire_at_ms),
        };
        rows.push((key_row(key), head.encode()));
        match &self.data {
            Data::String(_) => {}
            Data::Hash(fields) => rows.extend(
                fields.iter().map(|(f, v)| (element_row(KIND_HASH, key, f), encode_field(v))),
            ),
            Data::Set(members) => {
                rows.extend(members.iter().map(|m| (element_row(KIND_SET, key, m), Vec::new())))
            }
            Data::List(elements) => rows.extend(
                elements
                    .iter()
                    .enumerate()
                    .map(|(i, e)| (list_row(key, i as i64), encode_field(e))),
            ),
            Data::ZSet(members) => {
                for (m, score) in members {
                    rows.push((element_row(KIND_ZSET, key, m), encode_score(*score)));
                    rows.push((score_row(key, *score, m), Vec::new()));
                }
            }
        }
        if let Some(at) = self.expire_at_ms {
            rows.push((expiry_row(at, key), Vec::new()));
        }
        rows
    }

    /// A key from its key row and the rows under [`element_prefix`] (none
    /// for a string), in row order.
    pub fn from_rows(
        key: Vec<u8>,
        head: &Value,
        elements: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<Item, BridgeError> {
        /// Each element row decoded by `f`.
        fn each<T>(
            elements: Vec<(Vec<u8>, Vec<u8>)>,
            f: impl Fn(&[u8], &[u8]) -> NodeResult<T>,
        ) -> Result<Vec<T>, BridgeError> {
            elements
                .iter()
                .map(|(row, v)| f(row, v))
                .collect::<NodeResult<_>>()
                .map_err(|e| BridgeError::Damaged(e.to_string()))
        }
        let data = match head.kind {
            KIND_STRING => Data::String(head.payload.clone()),
            KIND_HASH => Data::Hash(each(elements, |r, v| Ok((last_bytes(r)?, decode_field(v)?)))?),
            KIND_SET => Data::Set(each(elements, |r, _| last_bytes(r))?),
            KIND_LIST => Data::List(each(elements, |_, v| decode_field(v))?),
            KIND_ZSET => Data::ZSet(each(elements, |r, v| Ok((last_bytes(r)?, decode_score(v)?)))?),
            KIND_STREAM => {
                return Err(BridgeError::Damaged(
                    "a stream: streams are not exported to Redis".into(),
                ))
            }
            other => return Err(BridgeError::Damaged(format!("unknown key type {other}"))),
        };
        Ok(Item { key, data, expire_at_ms: head.expire_at_ms })
    }

    /// Every row of this key other than its key row and expiry row starts
    /// with one of these.
    pub fn element_prefix(head: &Value, key: &[u8]) -> Option<Vec<u8>> {
        (head.kind != KIND_STRING).then(|| element_prefix(head.kind, key))
    }
}

/// The Redis key a row of a Redis database range belongs to, if it is a
/// key, element or expiry row.
pub fn key_of_row(row: &[u8]) -> Option<Vec<u8>> {
    use monotable_proto::tuple::{decode, Element};
    let mut t = decode(row).ok()?.into_iter();
    let tag = match t.next()? {
        Element::String(s) => s,
        _ => return None,
    };
    let key = match tag.as_str() {
        tag if crate::resp::keyspace::KEY_TAGS.contains(&tag) => t.next()?,
        "x" => t.nth(1)?,
        _ => return None,
    };
    match key {
        Element::Bytes(k) => Some(k),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(data: Data, expire_at_ms: Option<u64>) -> Item {
        Item { key: b"k1".to_vec(), data, expire_at_ms }
    }

    /// Rows written for an item read back as the same item, for every type.
    #[test]
    fn rows_round_trip() {
        let items = [
            item(Data::String(b"v".to_vec()), None),
            item(Data::Hash(vec![(b"a".to_vec(), b"1".to_vec()), (b"b".to_vec(), vec![])]), None),
            item(Data::Set(vec![b"x".to_vec(), b"y".to_vec()]), Some(99)),
            item(Data::List(vec![b"z".to_vec(), b"a".to_vec(), b"z".to_vec()]), None),
            item(Data::ZSet(vec![(b"m".to_vec(), 2.5), (b"n".to_vec(), -1.0)]), Some(7)),
        ];
        for it in items {
            let rows = it.rows();
            let head = Value::decode(&rows[0].1).expect("key row");
            let prefix = Item::element_prefix(&head, &it.key);
            let mut elements: Vec<_> = rows[1..]
                .iter()
                .filter(|(r, _)| prefix.as_ref().is_some_and(|p| r.starts_with(p)))
                .cloned()
                .collect();
            elements.sort();
            let back = Item::from_rows(it.key.clone(), &head, elements).expect("decodes");
            assert_eq!(back.data.normalized(), it.data.clone().normalized());
            assert_eq!(back.expire_at_ms, it.expire_at_ms);
            for (row, _) in &rows {
                assert_eq!(key_of_row(row).as_deref(), Some(&b"k1"[..]), "{row:?}");
            }
        }
    }
}
