//! Set commands over several keys: SINTER, SUNION, SDIFF, their `*STORE`
//! forms, SINTERCARD and SMOVE. A writing one runs under one lock of every
//! key it reads or writes and writes its rows in one write, so it is atomic
//! among RESP clients; a key counts as modified for WATCH only when it was
//! changed, as Redis signals it.

use monotable_proto::WriteOp;

use super::args::{lower, parse_i64};
use super::errors::{SYNTAX, WRONGTYPE};
use super::keyspace::{element_row, key_row, last_op_per_row, Db, Value, KIND_SET};
use super::notify;
use super::reply::Reply;
use super::state::RespState;
use crate::error::{NodeError, NodeResult};

/// Runs SINTER, SUNION, SDIFF, SINTERSTORE, SUNIONSTORE, SDIFFSTORE,
/// SINTERCARD or SMOVE, its arity checked.
pub async fn run(
    state: &RespState,
    dbi: u32,
    db: &Db<'_>,
    name: &str,
    args: &[Vec<u8>],
) -> NodeResult<Reply> {
    match name {
        // Read only: nothing locked (a lock would count as a write for WATCH).
        "sinter" | "sunion" | "sdiff" => {
            let sets = or_reply!(members(db, &args[1..]).await?);
            Ok(Reply::Set(bulks(algebra(name, sets))))
        }
        "sintercard" => sintercard(db, args).await,
        "sinterstore" | "sunionstore" | "sdiffstore" => {
            // Locked as read: the destination counts as modified for WATCH
            // only when written (a missing one left missing is not).
            let keys: Vec<(u32, &[u8], bool)> =
                args[1..].iter().map(|k| (dbi, k.as_slice(), false)).collect();
            let _g = state.lock_keys(&keys).await;
            let (reply, written) =
                store(db, name.trim_end_matches("store"), &args[1], &args[2..]).await?;
            if written {
                state.wake(dbi, &args[1]);
            }
            Ok(reply)
        }
        "smove" => {
            // Locked as read: only what SMOVE changes counts for WATCH.
            let _g = state.lock_keys(&[(dbi, &args[1], false), (dbi, &args[2], false)]).await;
            let (reply, moved, added) = smove(db, &args[1], &args[2], &args[3]).await?;
            if moved {
                state.wake(dbi, &args[1]);
            }
            if added {
                // Postmortem: SMOVE of a member the destination had failed
                // a WATCH of the destination; Redis leaves it.
                state.wake(dbi, &args[2]);
            }
            Ok(reply)
        }
        other => Err(super::errors::misrouted(other)),
    }
}

fn bulks(items: Vec<Vec<u8>>) -> Vec<Reply> {
    items.into_iter().map(Reply::Bulk).collect()
}

/// The members of each set at `keys` (a missing key: `None`), sorted;
/// WRONGTYPE when any key holds another type (Redis checks every key
/// before it computes anything).
async fn members(
    db: &Db<'_>,
    keys: &[Vec<u8>],
) -> NodeResult<Result<Vec<Option<Vec<Vec<u8>>>>, Reply>> {
    let mut sets = Vec::with_capacity(keys.len());
    for k in keys {
        sets.push(match db.get(k).await? {
            None => None,
            Some(v) if v.kind != KIND_SET => return Ok(Err(Reply::err(WRONGTYPE))),
            Some(_) => Some(db.elements(KIND_SET, k).await?.into_iter().map(|(m, _)| m).collect()),
        });
    }
    Ok(Ok(sets))
}

/// `sinter`, `sunion` or `sdiff` of `sets` (each sorted), sorted.
fn algebra(op: &str, sets: Vec<Option<Vec<Vec<u8>>>>) -> Vec<Vec<u8>> {
    if op == "sinter" && sets.iter().any(Option::is_none) {
        return Vec::new();
    }
    let sets: Vec<Vec<Vec<u8>>> = sets.into_iter().map(Option::unwrap_or_default).collect();
    let Some((first, rest)) = sets.split_first() else { return Vec::new() };
    match op {
        "sinter" => first
            .iter()
            .filter(|m| rest.iter().all(|s| s.binary_search(m).is_ok()))
            .cloned()
            .collect(),
        "sdiff" => first
            .iter()
            .filter(|m| rest.iter().all(|s| s.binary_search(m).is_err()))
            .cloned()
            .collect(),
        _ => {
            let mut all: Vec<Vec<u8>> = sets.into_iter().flatten().collect();
            all.sort();
            all.dedup();
            all
        }
    }
}

/// SINTERSTORE / SUNIONSTORE / SDIFFSTORE destination key [key ...]: the
/// result replaces `dest` (whatever its type, its TTL dropped); an empty
/// one deletes it. The reply is the result's size, and whether `dest` was
/// written.
async fn store(db: &Db<'_>, op: &str, dest: &[u8], keys: &[Vec<u8>]) -> NodeResult<(Reply, bool)> {
    let sets = match members(db, keys).await? {
        Ok(sets) => sets,
        Err(reply) => return Ok((reply, false)),
    };
    let result = algebra(op, sets);
    let mut ops = match db.get(dest).await? {
        Some(old) => db.remove_ops(dest, &old).await?,
        None if result.is_empty() => return Ok((Reply::Int(0), false)),
        None => Vec::new(),
    };
    // A source may be the destination: its old rows are deleted first,
    // the result's rows then put (the later op on a row wins).
    if !result.is_empty() {
        let value = Value::collection(KIND_SET, result.len() as u64, None);
        ops.push(WriteOp::Put { key: key_row(dest).into(), value: value.encode().into() });
        for m in &result {
            ops.push(WriteOp::Put {
                key: element_row(KIND_SET, dest, m).into(),
                value: Vec::new().into(),
            });
        }
    }
    db.write(last_op_per_row(ops)).await?;
    if result.is_empty() {
        db.notify(notify::GENERIC, "del", dest);
    } else {
        let event = match op {
            "sinter" => "sinterstore",
            "sunion" => "sunionstore",
            _ => "sdiffstore",
        };
        db.notify(notify::SET, event, dest);
    }
    Ok((Reply::Int(result.len() as i64), true))
}

/// SINTERCARD numkeys key [key ...] [LIMIT limit]: the size of the
/// intersection, counting stops at `limit` (0: none).
async fn sintercard(db: &Db<'_>, args: &[Vec<u8>]) -> NodeResult<Reply> {
    let numkeys = match parse_i64(&args[1]) {
        Some(n) if n >= 1 => n.unsigned_abs(),
        _ => return Ok(Reply::err("ERR numkeys should be greater than 0")),
    };
    let available = (args.len() - 2) as u64;
    if numkeys > available {
        return Ok(Reply::err("ERR Number of keys can't be greater than number of args"));
    }
    let end = 2 + numkeys as usize;
    let mut limit = 0u64;
    let mut i = end;
    while i < args.len() {
        if lower(&args[i]) == "limit" && i + 1 < args.len() {
            match parse_i64(&args[i + 1]) {
                Some(n) if n >= 0 => limit = n.unsigned_abs(),
                _ => return Ok(Reply::err("ERR LIMIT can't be negative")),
            }
            i += 2;
        } else {
            return Ok(Reply::err(SYNTAX));
        }
    }
    let sets = or_reply!(members(db, &args[2..end]).await?);
    let mut n = algebra("sinter", sets).len() as u64;
    if limit > 0 {
        n = n.min(limit);
    }
    Ok(Reply::Int(i64::try_from(n).map_err(|_| NodeError::Internal("count".into()))?))
}

/// SMOVE source destination member: 1 when moved (or, source and
/// destination the same set, when a member); 0 when the source is missing
/// (whatever the destination holds) or lacks the member. Also whether the
/// source lost the member, and whether the destination gained it.
async fn smove(
    db: &Db<'_>,
    from: &[u8],
    to: &[u8],
    member: &[u8],
) -> NodeResult<(Reply, bool, bool)> {
    let Some(src) = db.get(from).await? else { return Ok((Reply::Int(0), false, false)) };
    let dst = db.get(to).await?;
    if src.kind != KIND_SET || dst.as_ref().is_some_and(|d| d.kind != KIND_SET) {
        return Ok((Reply::err(WRONGTYPE), false, false));
    }
    let present = db.element(KIND_SET, from, member).await?.is_some();
    if from == to || !present {
        return Ok((Reply::Int(i64::from(present)), false, false));
    }
    let mut ops = vec![WriteOp::Delete { key: element_row(KIND_SET, from, member).into() }];
    if src.count() <= 1 {
        ops.push(WriteOp::Delete { key: key_row(from).into() });
    } else {
        let v = Value::collection(KIND_SET, src.count() - 1, src.expire_at_ms);
        ops.push(WriteOp::Put { key: key_row(from).into(), value: v.encode().into() });
    }
    let added = match &dst {
        None => true,
        Some(_) => db.element(KIND_SET, to, member).await?.is_none(),
    };
    if added {
        let count = dst.as_ref().map_or(0, Value::count) + 1;
        let v = Value::collection(KIND_SET, count, dst.as_ref().and_then(|d| d.expire_at_ms));
        ops.push(WriteOp::Put { key: key_row(to).into(), value: v.encode().into() });
        ops.push(WriteOp::Put {
            key: element_row(KIND_SET, to, member).into(),
            value: Vec::new().into(),
        });
    }
    db.write(ops).await?;
    db.notify(notify::SET, "srem", from);
    if src.count() <= 1 {
        db.notify(notify::GENERIC, "del", from);
    }
    if added {
        db.notify(notify::SET, "sadd", to);
    }
    Ok((Reply::Int(1), true, added))
}
