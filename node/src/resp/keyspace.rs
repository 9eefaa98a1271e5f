//! How Redis data is stored in Monotable ranges.
//!
//! Redis database `N` is the range `redis.N`, created on its first write.
//! Every Redis key has one *key row*:
//!
//! - row key: the tuple `("k", KEY)` (KEY as bytes)
//! - row value: `TYPE u8 | EXPIRE_AT u64 big-endian (ms since the epoch,
//!   0 = none) | PAYLOAD`; for a string (TYPE 0) the payload is the value.
//!
//! Mappers and reducers can be registered on `redis.N` like on any range.

use monotable_proto::tuple::{self, Element};

use crate::error::{NodeError, NodeResult};
use crate::node::Node;
use crate::storage::chunk::ReadAt;

pub const KIND_STRING: u8 = 0;

/// Databases a client may SELECT (Redis's default `databases 16`).
pub const DATABASES: u32 = 16;

pub fn range_name(db: u32) -> String {
    format!("redis.{db}")
}

pub fn key_row(key: &[u8]) -> Vec<u8> {
    tuple::encode(&[Element::String("k".into()), Element::Bytes(key.to_vec())])
        .expect("a key within the size limit encodes")
}

/// A Redis key's value and expiry.
#[derive(Debug, Clone, PartialEq)]
pub struct Value {
    pub kind: u8,
    pub expire_at_ms: Option<u64>,
    pub payload: Vec<u8>,
}

impl Value {
    pub fn string(payload: Vec<u8>, expire_at_ms: Option<u64>) -> Value {
        Value { kind: KIND_STRING, expire_at_ms, payload }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(9 + self.payload.len());
        out.push(self.kind);
        out.extend_from_slice(&self.expire_at_ms.unwrap_or(0).to_be_bytes());
        out.extend_from_slice(&self.payload);
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<Value> {
        let (&kind, rest) = bytes.split_first()?;
        let expire: [u8; 8] = rest.get(..8)?.try_into().ok()?;
        let expire = u64::from_be_bytes(expire);
        Some(Value {
            kind,
            expire_at_ms: (expire != 0).then_some(expire),
            payload: rest[8..].to_vec(),
        })
    }

    pub fn type_name(&self) -> &'static str {
        match self.kind {
            KIND_STRING => "string",
            _ => "none",
        }
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Reads and writes key rows of one database.
pub struct Db<'a> {
    pub node: &'a std::sync::Arc<Node>,
    pub range: String,
}

impl Db<'_> {
    /// The key's live value; an expired one is deleted on the way (lazy
    /// expiry, as Redis does on access).
    pub async fn get(&self, key: &[u8]) -> NodeResult<Option<Value>> {
        let row = key_row(key);
        let found = match self.node.get(&self.range, row.clone(), ReadAt::Latest).await {
            Ok(v) => v,
            Err(NodeError::Client { code: monotable_proto::ErrorCode::RangeNotFound, .. }) => {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        let Some(bytes) = found else { return Ok(None) };
        let value = Value::decode(&bytes)
            .ok_or_else(|| NodeError::Internal(format!("damaged key row for {key:?}")))?;
        if value.expire_at_ms.is_some_and(|at| at <= now_ms()) {
            self.delete(&[key.to_vec()]).await?;
            return Ok(None);
        }
        Ok(Some(value))
    }

    pub async fn put(&self, key: &[u8], value: &Value) -> NodeResult<()> {
        self.put_many(&[(key.to_vec(), value.clone())]).await
    }

    pub async fn put_many(&self, items: &[(Vec<u8>, Value)]) -> NodeResult<()> {
        self.ensure_range().await?;
        let ops = items
            .iter()
            .map(|(k, v)| monotable_proto::WriteOp::Put {
                key: key_row(k).into(),
                value: v.encode().into(),
            })
            .collect();
        self.node.write_ops(&self.range, ops).await
    }

    pub async fn delete(&self, keys: &[Vec<u8>]) -> NodeResult<()> {
        if self.node.router_read().range(&self.range).is_none() {
            return Ok(());
        }
        let ops = keys
            .iter()
            .map(|k| monotable_proto::WriteOp::Delete { key: key_row(k).into() })
            .collect();
        self.node.write_ops(&self.range, ops).await
    }

    async fn ensure_range(&self) -> NodeResult<()> {
        if self.node.router_read().range(&self.range).is_some() {
            return Ok(());
        }
        match self.node.create_range_unchecked(&self.range, Default::default()) {
            Ok(_) => Ok(()),
            // Created meanwhile by another connection.
            Err(NodeError::Client { code: monotable_proto::ErrorCode::RangeExists, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip() {
        for v in [
            Value::string(b"hello".to_vec(), None),
            Value::string(Vec::new(), Some(1_700_000_000_000)),
        ] {
            assert_eq!(Value::decode(&v.encode()), Some(v));
        }
        assert_eq!(Value::decode(&[0, 1, 2]), None);
    }
}
