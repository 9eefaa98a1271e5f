//! DUMP and RESTORE, as Redis 7.0's `dumpCommand` and `restoreCommand`:
//! a key's value serialized in Redis's RDB object format (see
//! [`super::rdb`]), and a key created from such a payload, whether DUMP
//! came from Monotable or from redis-server.
//!
//! RESTORE's IDLETIME and FREQ are checked and accepted; Monotable keeps
//! no access clock or counter per key, so they change nothing. A stream
//! is neither dumped nor restored: DUMP of one is an error.

use super::args::{lower, parse_i64, NOT_INTEGER};
use super::errors::SYNTAX;
use super::keyspace::{last_op_per_row, now_ms, Db, Value, KIND_STREAM};
use super::notify;
use super::rdb::{self, PayloadError};
use super::reply::Reply;
use super::state::RespState;
use crate::bridge::item::Item;
use crate::error::{NodeError, NodeResult};
use monotable_proto::WriteOp;

/// DUMP key: the payload, or a null reply when there is no such key.
pub async fn dump(db: &Db<'_>, key: &[u8]) -> NodeResult<Reply> {
    let Some(head) = db.get(key).await? else { return Ok(Reply::Null) };
    Ok(match payload(db, key, &head).await? {
        Ok(payload) => Reply::Bulk(payload),
        Err(reply) => reply,
    })
}

/// The DUMP payload of `key`, whose key row holds `head`; an error reply
/// for a stream (not dumped).
pub async fn payload(db: &Db<'_>, key: &[u8], head: &Value) -> NodeResult<Result<Vec<u8>, Reply>> {
    if head.kind == KIND_STREAM {
        return Ok(Err(Reply::err("ERR DUMP of a stream is not supported")));
    }
    let elements = match Item::element_prefix(head, key) {
        Some(prefix) => db.rows_with_prefix(&prefix).await?,
        None => Vec::new(),
    };
    let item = Item::from_rows(key.to_vec(), head, elements)
        .map_err(|e| NodeError::Internal(e.to_string()))?;
    Ok(Ok(rdb::encode(&item.data)))
}

/// RESTORE key ttl serialized-value [REPLACE] [ABSTTL] [IDLETIME seconds]
/// [FREQ frequency], its checks in Redis's order: options, the key's
/// absence (BUSYKEY), the TTL, the payload's footer, its object.
pub async fn restore(
    state: &RespState,
    dbi: u32,
    db: &Db<'_>,
    args: &[Vec<u8>],
) -> NodeResult<Reply> {
    let (mut replace, mut absttl, mut idle, mut freq) = (false, false, false, false);
    let mut j = 4;
    while j < args.len() {
        let more = j + 1 < args.len();
        match lower(&args[j]).as_str() {
            "replace" => replace = true,
            "absttl" => absttl = true,
            "idletime" if more && !freq => {
                j += 1;
                match parse_i64(&args[j]) {
                    None => return Ok(Reply::err(NOT_INTEGER)),
                    Some(v) if v < 0 => {
                        return Ok(Reply::err("ERR Invalid IDLETIME value, must be >= 0"))
                    }
                    Some(_) => idle = true,
                }
            }
            "freq" if more && !idle => {
                j += 1;
                match parse_i64(&args[j]) {
                    None => return Ok(Reply::err(NOT_INTEGER)),
                    Some(v) if !(0..=255).contains(&v) => {
                        return Ok(Reply::err("ERR Invalid FREQ value, must be >= 0 and <= 255"))
                    }
                    Some(_) => freq = true,
                }
            }
            _ => return Ok(Reply::err(SYNTAX)),
        }
        j += 1;
    }
    let key = &args[1];
    let _g = state.lock(dbi, &[key]).await;
    let old = db.get(key).await?;
    if old.is_some() && !replace {
        return Ok(Reply::err("BUSYKEY Target key name already exists."));
    }
    let ttl = match parse_i64(&args[2]) {
        None => return Ok(Reply::err(NOT_INTEGER)),
        Some(t) if t < 0 => return Ok(Reply::err("ERR Invalid TTL value, must be >= 0")),
        Some(t) => t as u64,
    };
    let data = match rdb::decode(&args[3]) {
        Ok(data) => data,
        Err(PayloadError::Footer) => {
            return Ok(Reply::err("ERR DUMP payload version or checksum are wrong"))
        }
        Err(PayloadError::Format(why)) => {
            tracing::debug!(why, "RESTORE refused a payload");
            return Ok(Reply::err("ERR Bad data format"));
        }
    };
    let mut ops: Vec<WriteOp> = match &old {
        Some(old) => db.remove_ops(key, old).await?,
        None => Vec::new(),
    };
    let now = now_ms();
    let expire_at_ms = match ttl {
        0 => None,
        t if absttl => Some(t),
        // Past i64::MAX (Redis's signed sum overflows): already expired,
        // as in Redis.
        t => Some(t.checked_add(now).filter(|&at| at <= i64::MAX as u64).unwrap_or(0)),
    };
    if expire_at_ms.is_some_and(|at| at <= now) {
        // Already expired: nothing is created; a replaced key is deleted.
        if !ops.is_empty() {
            db.write(ops).await?;
            db.notify(notify::GENERIC, "del", key);
        }
        return Ok(Reply::ok());
    }
    let item = Item { key: key.clone(), data, expire_at_ms };
    for (row, value) in item.rows() {
        ops.push(WriteOp::Put { key: row.into(), value: value.into() });
    }
    // An old row the new value has too is put, not deleted.
    db.write(last_op_per_row(ops)).await?;
    if old.is_some() {
        db.recreated(key);
    }
    db.notify(notify::GENERIC, "restore", key);
    Ok(Reply::ok())
}
