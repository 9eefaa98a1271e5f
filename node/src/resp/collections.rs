//! Hash and set commands: one row per field or member (see
//! [`super::keyspace`]), the element count in the key row.

use std::collections::HashSet;

use monotable_proto::WriteOp;
use rand::seq::SliceRandom;

use super::args::{lower, parse_i64, positive_count, random_count};
use super::errors::WRONGTYPE;
use super::keyspace::{
    decode_field, element_row, encode_field, key_row, Db, Value, KIND_HASH, KIND_SET,
};
use super::long_double::{increment, IncrError};
use super::notify;
use super::reply::Reply;
use super::state::RespState;
use super::table::{Command, Flag};
use crate::error::NodeResult;

/// The key's collection of `kind`: `Ok(None)` when absent, `Err(reply)`
/// when it holds another type.
async fn collection(db: &Db<'_>, key: &[u8], kind: u8) -> NodeResult<Result<Option<Value>, Reply>> {
    Ok(match db.get(key).await? {
        None => Ok(None),
        Some(v) if v.kind == kind => Ok(Some(v)),
        Some(_) => Err(Reply::err(WRONGTYPE)),
    })
}

/// Writes element changes and the key row with its new count (or removes
/// the key when it is empty).
async fn commit(
    db: &Db<'_>,
    key: &[u8],
    kind: u8,
    before: Option<&Value>,
    count: u64,
    mut ops: Vec<WriteOp>,
) -> NodeResult<()> {
    if count == 0 {
        ops.push(WriteOp::Delete { key: key_row(key).into() });
    } else if before.is_none_or(|b| b.count() != count) {
        let expire = before.and_then(|b| b.expire_at_ms);
        ops.push(WriteOp::Put {
            key: key_row(key).into(),
            value: Value::collection(kind, count, expire).encode().into(),
        });
    }
    db.write(ops).await
}

/// Writes a hash field (its value stored as MessagePack) or a set member.
fn put(kind: u8, key: &[u8], element: &[u8], value: &[u8]) -> WriteOp {
    let value = if kind == KIND_HASH { encode_field(value) } else { value.to_vec() };
    WriteOp::Put { key: element_row(kind, key, element).into(), value: value.into() }
}

/// A hash field's value.
async fn field(db: &Db<'_>, key: &[u8], name: &[u8]) -> NodeResult<Option<Vec<u8>>> {
    db.element(KIND_HASH, key, name).await?.map(|v| decode_field(&v)).transpose()
}

fn del(kind: u8, key: &[u8], element: &[u8]) -> WriteOp {
    WriteOp::Delete { key: element_row(kind, key, element).into() }
}

fn bulks(items: impl IntoIterator<Item = Vec<u8>>) -> Vec<Reply> {
    items.into_iter().map(Reply::Bulk).collect()
}

/// Runs a hash or set command (`command` is its row of the table); a
/// writing one holds its key's stripe.
pub async fn run(
    state: &RespState,
    dbi: u32,
    db: &Db<'_>,
    command: &Command,
    args: &[Vec<u8>],
) -> NodeResult<Reply> {
    let name = command.name;
    if let "sinter" | "sunion" | "sdiff" | "sinterstore" | "sunionstore" | "sdiffstore"
    | "sintercard" | "smove" = name
    {
        return super::sets::run(state, dbi, db, name, args).await;
    }
    if command.has(Flag::Write) {
        let _g = state.lock(dbi, &[&args[1]]).await;
        return write_command(db, name, args).await;
    }
    read_command(db, name, args).await
}

async fn read_command(db: &Db<'_>, name: &str, args: &[Vec<u8>]) -> NodeResult<Reply> {
    let key = &args[1];
    let kind = if name.starts_with('h') { KIND_HASH } else { KIND_SET };
    // Redis reads SRANDMEMBER's count before it looks the key up.
    if let ("srandmember", Some(n)) = (name, args.get(2)) {
        if let Err(reply) = random_count(n) {
            return Ok(reply);
        }
    }
    let random = if name == "hrandfield" && args.len() > 2 {
        match hrandfield_args(args) {
            Ok(r) => Some(r),
            Err(reply) => return Ok(reply),
        }
    } else {
        None
    };
    let found = or_reply!(collection(db, key, kind).await?);
    let Some(v) = found else {
        return Ok(match name {
            "hget" => Reply::Null,
            "hmget" => Reply::Array(vec![Reply::Null; args.len() - 2]),
            "hgetall" => Reply::Map(Vec::new()),
            "hkeys" | "hvals" => Reply::Array(Vec::new()),
            "smembers" => Reply::Set(Vec::new()),
            "smismember" => Reply::Array(vec![Reply::Int(0); args.len() - 2]),
            "srandmember" if args.len() > 2 => match random_count(&args[2]) {
                Ok(_) => Reply::Array(Vec::new()),
                Err(reply) => reply,
            },
            "srandmember" | "hrandfield" if args.len() <= 2 => Reply::Null,
            "hrandfield" => Reply::Array(Vec::new()),
            _ => Reply::Int(0),
        });
    };
    Ok(match name {
        "hget" => field(db, key, &args[2]).await?.map_or(Reply::Null, Reply::Bulk),
        "hmget" => {
            let mut out = Vec::new();
            for f in &args[2..] {
                out.push(field(db, key, f).await?.map_or(Reply::Null, Reply::Bulk));
            }
            Reply::Array(out)
        }
        "hexists" | "sismember" => {
            Reply::Int(i64::from(db.element(kind, key, &args[2]).await?.is_some()))
        }
        "smismember" => {
            let mut out = Vec::new();
            for m in &args[2..] {
                out.push(Reply::Int(i64::from(db.element(kind, key, m).await?.is_some())));
            }
            Reply::Array(out)
        }
        "hstrlen" => Reply::Int(field(db, key, &args[2]).await?.map_or(0, |v| v.len() as i64)),
        "hlen" | "scard" => Reply::Int(v.count() as i64),
        "hgetall" => {
            let mut pairs = Vec::new();
            for (f, v) in db.elements(kind, key).await? {
                pairs.push((Reply::Bulk(f), Reply::Bulk(decode_field(&v)?)));
            }
            Reply::Map(pairs)
        }
        "hkeys" => Reply::Array(bulks(db.elements(kind, key).await?.into_iter().map(|(f, _)| f))),
        "hvals" => {
            let values = db.elements(kind, key).await?;
            Reply::Array(bulks(
                values.iter().map(|(_, v)| decode_field(v)).collect::<NodeResult<Vec<_>>>()?,
            ))
        }
        "smembers" => Reply::Set(bulks(db.elements(kind, key).await?.into_iter().map(|(m, _)| m))),
        "srandmember" => {
            let total = v.count();
            let members = |picks, repeats| random_elements(db, kind, key, total, picks, repeats);
            match args.get(2) {
                None => {
                    let one = members(1, false).await?.into_iter().next();
                    one.map_or(Reply::Null, |(m, _)| Reply::Bulk(m))
                }
                Some(n) => match random_count(n) {
                    Err(reply) => reply,
                    // Negative: that many, repeats allowed.
                    Ok((n, repeats)) => {
                        Reply::Array(bulks(members(n, repeats).await?.into_iter().map(|(m, _)| m)))
                    }
                },
            }
        }
        "hrandfield" => {
            let total = v.count();
            let Some((count, repeat, with_values)) = random else {
                let one = random_elements(db, kind, key, total, 1, false).await?;
                let (f, _) = one.into_iter().next().unwrap_or_default();
                return Ok(Reply::Bulk(f));
            };
            let chosen = random_elements(db, kind, key, total, count, repeat).await?;
            if with_values {
                let mut pairs = Vec::with_capacity(chosen.len());
                for (f, v) in chosen {
                    pairs.push((Reply::Bulk(f), Reply::Bulk(decode_field(&v)?)));
                }
                Reply::Pairs(pairs)
            } else {
                Reply::Array(chosen.into_iter().map(|(f, _)| Reply::Bulk(f)).collect())
            }
        }
        _ => Reply::err("ERR unknown command"),
    })
}

/// Most random picks made one at a time, each in O(log n); more are
/// chosen from the whole collection, read once.
const RANDOM_PICKS_ONE_BY_ONE_MAX: u64 = 128;

/// Elements (with their stored values) of the collection `kind` at `key`,
/// which holds `total`, picked at random: `picks` distinct ones (every
/// element when `picks >= total`), or, with `repeats`, `picks` draws that
/// may repeat. A few picks cost O(log n) each, however large the
/// collection.
pub(super) async fn random_elements(
    db: &Db<'_>,
    kind: u8,
    key: &[u8],
    total: u64,
    picks: u64,
    repeats: bool,
) -> NodeResult<Vec<(Vec<u8>, Vec<u8>)>> {
    if total == 0 || picks == 0 || (!repeats && picks >= total) {
        return if total == 0 || picks == 0 {
            Ok(Vec::new())
        } else {
            db.elements(kind, key).await
        };
    }
    if picks > RANDOM_PICKS_ONE_BY_ONE_MAX {
        let all = db.elements(kind, key).await?;
        let mut rng = rand::thread_rng();
        return Ok(if repeats {
            (0..picks).filter_map(|_| all.choose(&mut rng).cloned()).collect()
        } else {
            let n = usize::try_from(picks).unwrap_or(usize::MAX);
            all.choose_multiple(&mut rng, n).cloned().collect()
        });
    }
    let positions: Vec<u64> = {
        use rand::Rng;
        let mut rng = rand::thread_rng();
        if repeats {
            (0..picks).map(|_| rng.gen_range(0..total)).collect()
        } else {
            let total = usize::try_from(total).unwrap_or(usize::MAX);
            let index = rand::seq::index::sample(&mut rng, total, picks as usize);
            index.into_iter().map(|i| i as u64).collect()
        }
    };
    let prefix = super::keyspace::element_prefix(kind, key);
    let end = monotable_proto::keys::tuple_prefix_end(&prefix);
    let mut out = Vec::with_capacity(positions.len());
    for p in positions {
        if let Some((row, value)) = db.select_row(&prefix, end.as_deref(), p).await? {
            out.push((super::keyspace::last_bytes(&row)?, value));
        }
    }
    Ok(out)
}

/// HRANDFIELD key count [WITHVALUES]: how many fields, whether they may
/// repeat (a negative count), whether with values; Redis's errors, in its
/// order (count, syntax, then the bound WITHVALUES puts on the count).
fn hrandfield_args(args: &[Vec<u8>]) -> Result<(u64, bool, bool), Reply> {
    super::args::in_range(&args[2], -i64::MAX, i64::MAX)?;
    if args.len() > 4 || (args.len() == 4 && lower(&args[3]) != "withvalues") {
        return Err(Reply::err(super::errors::SYNTAX));
    }
    let with_values = args.len() == 4;
    if with_values {
        let n = super::args::integer(&args[2])?;
        if !(-i64::MAX / 2..=i64::MAX / 2).contains(&n) {
            return Err(Reply::err("ERR value is out of range"));
        }
    }
    let (count, repeat) = random_count(&args[2])?;
    Ok((count, repeat, with_values))
}

async fn write_command(db: &Db<'_>, name: &'static str, args: &[Vec<u8>]) -> NodeResult<Reply> {
    let key = &args[1];
    let kind = if name.starts_with('h') { KIND_HASH } else { KIND_SET };
    // Arguments are checked before the key, as Redis does.
    match name {
        "hincrby" if parse_i64(&args[3]).is_none() => {
            return Ok(Reply::err("ERR value is not an integer or out of range"))
        }
        "hincrbyfloat" => match increment(None, &args[3]) {
            Err(IncrError::BadIncrement) => return Ok(Reply::err(super::args::NOT_FLOAT)),
            // Redis refuses an infinite increment before it looks the key
            // up, in other words than for an infinite result.
            // Postmortem: `HINCRBYFLOAT k f +inf` answered "increment would
            // produce NaN or Infinity".
            Err(_) => return Ok(Reply::err("ERR value is NaN or Infinity")),
            Ok(_) => {}
        },
        // Postmortem: `SPOP str -1` answered WRONGTYPE; Redis refuses the
        // count first.
        "spop" => {
            if let Some(Err(reply)) = args.get(2).map(|n| positive_count(n)) {
                return Ok(reply);
            }
        }
        _ => {}
    }
    let before = or_reply!(collection(db, key, kind).await?);
    let mut count = before.as_ref().map_or(0, Value::count);
    let mut ops = Vec::new();
    let reply = match name {
        "hset" | "hmset" => {
            if !args.len().is_multiple_of(2) {
                return Ok(Reply::err(format!(
                    "ERR wrong number of arguments for '{name}' command"
                )));
            }
            let mut added = 0;
            // Sets, not lists: a command of a million fields stays linear.
            let mut seen: HashSet<&[u8]> = HashSet::new();
            for pair in args[2..].chunks(2) {
                let new = seen.insert(&pair[0])
                    && (before.is_none() || db.element(kind, key, &pair[0]).await?.is_none());
                if new {
                    added += 1;
                }
                ops.push(put(kind, key, &pair[0], &pair[1]));
            }
            count += added;
            if name == "hmset" {
                Reply::ok()
            } else {
                Reply::Int(added as i64)
            }
        }
        "hsetnx" => {
            if db.element(kind, key, &args[2]).await?.is_some() {
                return Ok(Reply::Int(0));
            }
            ops.push(put(kind, key, &args[2], &args[3]));
            count += 1;
            Reply::Int(1)
        }
        "hdel" | "srem" => {
            let mut removed = 0;
            let mut seen: HashSet<&[u8]> = HashSet::new();
            for f in &args[2..] {
                if seen.insert(f) && db.element(kind, key, f).await?.is_some() {
                    ops.push(del(kind, key, f));
                    removed += 1;
                }
            }
            count -= removed;
            if removed > 0 {
                // The fields removed, also when the key goes with them.
                db.count_changes(removed);
            }
            Reply::Int(removed as i64)
        }
        "hincrby" => {
            let Some(by) = parse_i64(&args[3]) else {
                return Ok(Reply::err("ERR value is not an integer or out of range"));
            };
            let current = match field(db, key, &args[2]).await? {
                None => {
                    count += 1;
                    0
                }
                Some(v) => match parse_i64(&v) {
                    Some(n) => n,
                    None => return Ok(Reply::err("ERR hash value is not an integer")),
                },
            };
            let Some(next) = current.checked_add(by) else {
                return Ok(Reply::err("ERR increment or decrement would overflow"));
            };
            ops.push(put(kind, key, &args[2], next.to_string().as_bytes()));
            Reply::Int(next)
        }
        "hincrbyfloat" => {
            let current = field(db, key, &args[2]).await?;
            if current.is_none() {
                count += 1;
            }
            let text = match increment(current.as_deref(), &args[3]) {
                Ok(text) => text,
                Err(IncrError::BadCurrent) => {
                    return Ok(Reply::err("ERR hash value is not a float"))
                }
                Err(IncrError::BadIncrement) => return Ok(Reply::err(super::args::NOT_FLOAT)),
                Err(IncrError::InfiniteIncrement) => {
                    return Ok(Reply::err("ERR value is NaN or Infinity"))
                }
                Err(IncrError::NotFinite) => {
                    return Ok(Reply::err("ERR increment would produce NaN or Infinity"))
                }
            };
            ops.push(put(kind, key, &args[2], text.as_bytes()));
            Reply::Bulk(text.into_bytes())
        }
        "sadd" => {
            let mut added = 0;
            let mut seen: HashSet<&[u8]> = HashSet::new();
            for m in &args[2..] {
                if seen.insert(m) && (before.is_none() || db.element(kind, key, m).await?.is_none())
                {
                    ops.push(put(kind, key, m, b""));
                    added += 1;
                }
            }
            count += added;
            Reply::Int(added as i64)
        }
        "spop" => {
            let n = match args.get(2) {
                None => None,
                Some(n) => match positive_count(n) {
                    Ok(n) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
                    Err(reply) => return Ok(reply),
                },
            };
            let chosen: Vec<Vec<u8>> = match &before {
                Some(b) => {
                    let picks = n.map_or(1, |n| n as u64);
                    let picked = random_elements(db, kind, key, b.count(), picks, false).await?;
                    picked.into_iter().map(|(m, _)| m).collect()
                }
                None => Vec::new(),
            };
            for m in &chosen {
                ops.push(del(kind, key, m));
            }
            if !chosen.is_empty() {
                db.count_changes(chosen.len() as u64);
            }
            count -= chosen.len() as u64;
            match n {
                None => chosen.into_iter().next().map_or(Reply::Null, Reply::Bulk),
                Some(_) if before.is_none() => Reply::Array(Vec::new()),
                Some(_) => Reply::Set(bulks(chosen)),
            }
        }
        _ => return Ok(Reply::err("ERR unknown command")),
    };
    if before.is_none() && count == 0 {
        return Ok(reply);
    }
    // Each command here that writes an element raises its event (HSET's
    // even when no value changes), and `del` when it emptied the key.
    let changed = !ops.is_empty();
    commit(db, key, kind, before.as_ref(), count, ops).await?;
    if changed {
        let event = match name {
            "hmset" | "hsetnx" => "hset",
            other => other,
        };
        db.notify(if kind == KIND_HASH { notify::HASH } else { notify::SET }, event, key);
        if count == 0 {
            db.notify(notify::GENERIC, "del", key);
        }
    }
    Ok(reply)
}
