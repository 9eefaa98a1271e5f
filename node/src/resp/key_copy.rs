//! COPY source destination [DB destination-db] [REPLACE]: a key's value,
//! elements and expiry under another name, in this database or another;
//! and MOVE key db, a copy to another database and a delete.
//!
//! The copy is one write to the destination's database (the source is only
//! read), made under one lock of both keys, so it is atomic also across
//! databases. A copy to another database runs only when both are this
//! node's own ranges: a replicated database's commands run on its chunk's
//! leader, which holds no other database's rows to write atomically, so
//! there COPY ... DB is refused with a message saying so. Inside MULTI the
//! copy is held back like any write: a transaction that then writes to two
//! databases is discarded whole, as EXEC says.

use monotable_proto::tuple::{self, Element};
use monotable_proto::WriteOp;

use super::args::{in_range, lower};
use super::cluster::{placement, Placement};
use super::errors::SYNTAX;
use super::keyspace::{expiry_row, key_row, last_op_per_row, row_prefixes, Db, DATABASES};
use super::notify;
use super::reply::Reply;
use super::state::RespState;
use crate::error::{NodeError, NodeResult};

/// Runs COPY (its arity checked) from database `dbi` through `db`.
pub async fn copy(state: &RespState, dbi: u32, db: &Db<'_>, args: &[Vec<u8>]) -> NodeResult<Reply> {
    let (mut to_db, mut replace) = (dbi, false);
    let mut i = 3;
    while i < args.len() {
        match lower(&args[i]).as_str() {
            "replace" => replace = true,
            "db" if i + 1 < args.len() => {
                let n = match in_range(&args[i + 1], i64::from(i32::MIN), i64::from(i32::MAX)) {
                    Ok(n) => n,
                    Err(reply) => return Ok(reply),
                };
                match u32::try_from(n).ok().filter(|&n| n < DATABASES) {
                    Some(n) => to_db = n,
                    None => return Ok(Reply::err("ERR DB index is out of range")),
                }
                i += 1;
            }
            _ => return Ok(Reply::err(SYNTAX)),
        }
        i += 1;
    }
    let (from, to) = (&args[1], &args[2]);
    if to_db == dbi && from == to {
        return Ok(Reply::err("ERR source and destination objects are the same"));
    }
    let both_local =
        [dbi, to_db].iter().all(|&d| matches!(placement(&state.node, d), Placement::Local));
    if to_db != dbi && !both_local {
        return Ok(Reply::err(format!(
            "ERR COPY from database {dbi} to database {to_db} needs both to be this node's own: \
             on a cluster each database is a range replicated on its own, whose commands run \
             on its chunk's leader; copy within one database"
        )));
    }
    // Locked as read: the destination counts as modified for WATCH only
    // once copied to.
    let _g = state.lock_keys(&[(dbi, from, false), (to_db, to, false)]).await;
    let other;
    let dest = if to_db == dbi {
        db
    } else {
        other = Db::new(db.state, to_db, db.tx);
        &other
    };
    let reply = run(db, dest, from, to, replace).await;
    if to_db != dbi {
        db.add_durability(dest.take_durability());
    }
    let reply = reply?;
    if reply == Reply::Int(1) {
        dest.notify(notify::GENERIC, "copy_to", to);
        state.wake(to_db, to);
    }
    Ok(reply)
}

/// MOVE key db: `key` to database `db` when it is there and not there
/// yet (1), else 0. Runs when both databases are this node's own, as COPY
/// ... DB. The copy is written before the source is deleted: a crash in
/// between leaves the key in both databases, never in neither.
pub async fn move_key(
    state: &RespState,
    dbi: u32,
    db: &Db<'_>,
    args: &[Vec<u8>],
) -> NodeResult<Reply> {
    let to_db = match super::args::parse_i64(&args[2]) {
        Some(n) if i32::try_from(n).is_ok() => n,
        _ => return Ok(Reply::err(super::args::NOT_INTEGER)),
    };
    let Some(to_db) = u32::try_from(to_db).ok().filter(|&n| n < DATABASES) else {
        return Ok(Reply::err("ERR DB index is out of range"));
    };
    if to_db == dbi {
        return Ok(Reply::err("ERR source and destination objects are the same"));
    }
    let both_local =
        [dbi, to_db].iter().all(|&d| matches!(placement(&state.node, d), Placement::Local));
    if !both_local {
        return Ok(Reply::err(format!(
            "ERR MOVE from database {dbi} to database {to_db} needs both to be this node's own: \
             on a cluster each database is a range replicated on its own, whose commands run \
             on its chunk's leader"
        )));
    }
    let key = &args[1];
    let _g = state.lock_keys(&[(dbi, key, true), (to_db, key, true)]).await;
    let dest = Db::new(db.state, to_db, db.tx);
    let moved = run(db, &dest, key, key, false).await;
    db.add_durability(dest.take_durability());
    let moved = moved?;
    if moved == Reply::Int(1) {
        if let Some(v) = db.get(key).await? {
            db.remove(key, &v).await?;
        }
        dest.notify_created(key);
        db.notify(notify::GENERIC, "move_from", key);
        dest.notify(notify::GENERIC, "move_to", key);
    }
    Ok(moved)
}

/// The copy itself, `from` of `src` to `to` of `dest`, once both are locked.
async fn run(
    src: &Db<'_>,
    dest: &Db<'_>,
    from: &[u8],
    to: &[u8],
    replace: bool,
) -> NodeResult<Reply> {
    let Some(v) = src.get(from).await? else { return Ok(Reply::Int(0)) };
    let mut ops = Vec::new();
    let old = dest.get(to).await?;
    let overwrites = old.is_some();
    if let Some(old) = old {
        if !replace {
            return Ok(Reply::Int(0));
        }
        ops.extend(dest.remove_ops(to, &old).await?);
    }
    ops.push(WriteOp::Put { key: key_row(to).into(), value: v.encode().into() });
    if let Some(at) = v.expire_at_ms {
        ops.push(WriteOp::Put { key: expiry_row(at, to).into(), value: Vec::new().into() });
    }
    for (_, copied, value) in element_rows_as(src, v.kind, from, to).await? {
        ops.push(WriteOp::Put { key: copied.into(), value: value.into() });
    }
    // An old row of `to` that the copy has too is put, not deleted.
    dest.write(last_op_per_row(ops)).await?;
    if overwrites {
        dest.recreated(to);
    }
    Ok(Reply::Int(1))
}

/// The element rows of key `from` (of type `kind`) in `db`, each as
/// (its row, the same row under key `to`, its value): a key's rows are
/// `(tag, KEY, element...)`, so only the second part changes.
pub async fn element_rows_as(
    db: &Db<'_>,
    kind: u8,
    from: &[u8],
    to: &[u8],
) -> NodeResult<Vec<(Vec<u8>, Vec<u8>, Vec<u8>)>> {
    let damaged = || NodeError::Internal("damaged element row".into());
    let mut out = Vec::new();
    for prefix in row_prefixes(kind, from) {
        for (row, value) in db.rows_with_prefix(&prefix).await? {
            let mut parts = tuple::decode(&row).map_err(|_| damaged())?;
            if parts.len() < 3 {
                return Err(damaged());
            }
            parts[1] = Element::Bytes(to.to_vec());
            let renamed = tuple::encode(&parts).map_err(|e| NodeError::Internal(e.to_string()))?;
            out.push((row, renamed, value));
        }
    }
    Ok(out)
}
