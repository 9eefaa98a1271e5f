//! List commands. A list is rows `("l", KEY, POSITION)` at consecutive
//! positions from its head; the key row holds `COUNT | HEAD`. Pushes and
//! pops at either end, LINDEX and LSET touch one row; LRANGE reads only the
//! rows asked for; LREM, LINSERT and LTRIM rewrite what they must, as in
//! Redis (O(n)).

use monotable_proto::WriteOp;

use super::args::{parse_i64, positive_count, span, NOT_INTEGER};
use super::errors::{SYNTAX, WRONGTYPE};
use super::keyspace::{
    decode_field, encode_field, key_row, list_head, list_payload, list_row as row, Db, Value,
    KIND_LIST,
};
use super::notify;
use super::reply::Reply;
use super::state::RespState;
use super::table::{Command, Flag};
use crate::error::{NodeError, NodeResult};

/// A list's shape, from its key row.
#[derive(Clone, Copy)]
struct Shape {
    count: i64,
    head: i64,
    expire: Option<u64>,
}

fn shape(v: &Value) -> Shape {
    Shape { count: v.count() as i64, head: list_head(v), expire: v.expire_at_ms }
}

fn key_value(s: Shape) -> Value {
    Value { kind: KIND_LIST, expire_at_ms: s.expire, payload: list_payload(s.count as u64, s.head) }
}

fn put(key: &[u8], pos: i64, element: &[u8]) -> WriteOp {
    WriteOp::Put { key: row(key, pos).into(), value: encode_field(element).into() }
}

/// The list at `key`: `Ok(None)` when absent, `Err(reply)` for another type.
async fn list(db: &Db<'_>, key: &[u8]) -> NodeResult<Result<Option<Shape>, Reply>> {
    Ok(match db.get(key).await? {
        None => Ok(None),
        Some(v) if v.kind == KIND_LIST => Ok(Some(shape(&v))),
        Some(_) => Err(Reply::err(WRONGTYPE)),
    })
}

/// Elements at positions `[from, to)`, in order.
async fn elements(db: &Db<'_>, key: &[u8], from: i64, to: i64) -> NodeResult<Vec<Vec<u8>>> {
    if from >= to {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    db.visit_rows(row(key, from), Some(row(key, to)), false, |_, value| {
        out.push(decode_field(&value)?);
        Ok(true)
    })
    .await?;
    Ok(out)
}

/// Writes the list's new shape with `ops` (or removes the key when empty).
async fn commit(db: &Db<'_>, key: &[u8], s: Shape, mut ops: Vec<WriteOp>) -> NodeResult<()> {
    ops.push(shape_op(key, s));
    db.write(ops).await
}

/// The write of the list's key row for shape `s` (its delete when empty).
fn shape_op(key: &[u8], s: Shape) -> WriteOp {
    if s.count == 0 {
        WriteOp::Delete { key: key_row(key).into() }
    } else {
        WriteOp::Put { key: key_row(key).into(), value: key_value(s).encode().into() }
    }
}

/// Rewrites a whole list from `elements` (LREM, LINSERT).
async fn rewrite(db: &Db<'_>, key: &[u8], old: Shape, elements: &[Vec<u8>]) -> NodeResult<()> {
    let mut ops: Vec<WriteOp> = (old.head..old.head + old.count)
        .map(|p| WriteOp::Delete { key: row(key, p).into() })
        .collect();
    for (i, e) in elements.iter().enumerate() {
        ops.push(put(key, old.head + i as i64, e));
    }
    let s = Shape { count: elements.len() as i64, ..old };
    commit(db, key, s, ops).await
}

/// A Redis index (negative from the end) as an offset, if inside the list.
fn offset(index: i64, count: i64) -> Option<i64> {
    let i = if index < 0 { count + index } else { index };
    (0..count).contains(&i).then_some(i)
}

/// Runs a list command (`command` is its row of the table); a writing
/// one holds its key's stripe.
pub async fn run(
    state: &RespState,
    dbi: u32,
    db: &Db<'_>,
    command: &Command,
    args: &[Vec<u8>],
) -> NodeResult<Reply> {
    let writes = command.has(Flag::Write);
    match command.name {
        "lmove" | "rpoplpush" => {
            let _g = state.lock(dbi, &[&args[1], &args[2]]).await;
            return lmove(db, args).await;
        }
        "lmpop" => {
            let keys = match mpop_keys(args) {
                Ok(keys) => keys,
                Err(reply) => return Ok(reply),
            };
            let refs: Vec<&[u8]> = keys.iter().map(|k| k.as_slice()).collect();
            let _g = state.lock(dbi, &refs).await;
            return lmpop(db, args, &keys).await;
        }
        "lpos" => return lpos(db, args).await,
        _ => {}
    }
    let _g = if writes { Some(state.lock(dbi, &[&args[1]]).await) } else { None };
    self::command(db, command.name, args).await
}

/// LEFT or RIGHT (LMOVE, LMPOP): `true` for the head.
pub(super) fn end(arg: &[u8]) -> Result<bool, Reply> {
    match String::from_utf8_lossy(arg).to_ascii_lowercase().as_str() {
        "left" => Ok(true),
        "right" => Ok(false),
        _ => Err(Reply::err(SYNTAX)),
    }
}

/// LMOVE source destination LEFT|RIGHT LEFT|RIGHT, and RPOPLPUSH source
/// destination (RIGHT LEFT): one element from one end of `source` to one
/// end of `destination` (the same list: a rotation). Nil when `source` is
/// missing; WRONGTYPE, moving nothing, when either is not a list.
async fn lmove(db: &Db<'_>, args: &[Vec<u8>]) -> NodeResult<Reply> {
    let (from_head, to_head) = if args.len() == 5 {
        match (end(&args[3]), end(&args[4])) {
            (Ok(f), Ok(t)) => (f, t),
            (Err(reply), _) | (_, Err(reply)) => return Ok(reply),
        }
    } else {
        (false, true)
    };
    Ok(match move_one(db, &args[1], &args[2], from_head, to_head).await? {
        Ok(Some(element)) => Reply::Bulk(element),
        Ok(None) => Reply::Null,
        Err(reply) => reply,
    })
}

/// Moves one element from the head (`from_head`) or tail of `src` to the
/// head (`to_head`) or tail of `dst`: the element, `None` when `src` is
/// missing, or WRONGTYPE (nothing moved) when `src`, or with `src` not
/// empty `dst`, is not a list. The caller holds both keys' stripes.
pub(super) async fn move_one(
    db: &Db<'_>,
    src: &[u8],
    dst: &[u8],
    from_head: bool,
    to_head: bool,
) -> NodeResult<Result<Option<Vec<u8>>, Reply>> {
    let mut from = match list(db, src).await? {
        Ok(Some(from)) => from,
        Ok(None) => return Ok(Ok(None)),
        Err(reply) => return Ok(Err(reply)),
    };
    let to = if src == dst {
        None
    } else {
        match list(db, dst).await? {
            Ok(to) => to,
            Err(reply) => return Ok(Err(reply)),
        }
    };
    let pos = if from_head { from.head } else { from.head + from.count - 1 };
    let Some(element) = elements(db, src, pos, pos + 1).await?.pop() else {
        return Err(NodeError::Internal(format!("list row {pos} missing")));
    };
    let pop = WriteOp::Delete { key: row(src, pos).into() };
    if from_head {
        from.head += 1;
    }
    from.count -= 1;
    if src == dst {
        let mut ops = vec![pop];
        push(src, &mut from, to_head, &element, &mut ops);
        commit(db, src, from, ops).await?;
    } else {
        // Both lists in one write (a crash leaves the element in one of
        // them), `dst` first: Redis signals the push before the pop.
        let mut to = to.unwrap_or(Shape { count: 0, head: 0, expire: None });
        let mut ops = Vec::new();
        push(dst, &mut to, to_head, &element, &mut ops);
        ops.push(shape_op(dst, to));
        ops.push(pop);
        commit(db, src, from, ops).await?;
    }
    // The push first, then the pop, as Redis's `lmoveGenericCommand`.
    db.notify(notify::LIST, if to_head { "lpush" } else { "rpush" }, dst);
    notify_popped(db, src, from_head, from.count);
    Ok(Ok(Some(element)))
}

/// Raises the events of elements popped from the head (`head`) or tail of
/// the list at `key`, `left` elements remaining (Redis's
/// `listElementsRemoved`).
fn notify_popped(db: &Db<'_>, key: &[u8], head: bool, left: i64) {
    db.notify(notify::LIST, if head { "lpop" } else { "rpop" }, key);
    if left == 0 {
        db.notify(notify::GENERIC, "del", key);
    }
}

/// Adds `element` at the head or tail of the list `s` at `key`.
fn push(key: &[u8], s: &mut Shape, head: bool, element: &[u8], ops: &mut Vec<WriteOp>) {
    if head {
        s.head -= 1;
        ops.push(put(key, s.head, element));
    } else {
        ops.push(put(key, s.head + s.count, element));
    }
    s.count += 1;
}

/// LMPOP's keys, its other arguments checked as Redis checks them first.
pub(super) fn mpop_keys(args: &[Vec<u8>]) -> Result<Vec<Vec<u8>>, Reply> {
    let numkeys = match parse_i64(&args[1]) {
        Some(n) if n >= 1 => n as u64,
        _ => return Err(Reply::err("ERR numkeys should be greater than 0")),
    };
    let where_at = 2u64.saturating_add(numkeys);
    if where_at >= args.len() as u64 {
        return Err(Reply::err(SYNTAX));
    }
    Ok(args[2..where_at as usize].to_vec())
}

/// LMPOP numkeys key [key ...] LEFT|RIGHT [COUNT count]: up to `count`
/// elements from one end of the first non-empty list, as `[key,
/// [elements]]`; a null array when every list is empty.
async fn lmpop(db: &Db<'_>, args: &[Vec<u8>], keys: &[Vec<u8>]) -> NodeResult<Reply> {
    let (head, count) = match mpop_options(args, keys) {
        Ok(options) => options,
        Err(reply) => return Ok(reply),
    };
    Ok(match pop_first(db, keys, head, count).await? {
        Ok(Some((key, popped))) => Reply::Array(vec![
            Reply::Bulk(key),
            Reply::Array(popped.into_iter().map(Reply::Bulk).collect()),
        ]),
        Ok(None) => Reply::NullArray,
        Err(reply) => reply,
    })
}

/// LMPOP's end and count, after its `keys` (from `mpop_keys`): whether
/// to pop at the head, and how many (1 without COUNT).
pub(super) fn mpop_options(args: &[Vec<u8>], keys: &[Vec<u8>]) -> Result<(bool, i64), Reply> {
    let where_at = 2 + keys.len();
    let head = end(&args[where_at])?;
    let mut count = None;
    let mut j = where_at + 1;
    while j < args.len() {
        let more = j + 1 < args.len();
        if count.is_none() && more && args[j].eq_ignore_ascii_case(b"count") {
            match parse_i64(&args[j + 1]) {
                Some(n) if n >= 1 => count = Some(n),
                _ => return Err(Reply::err("ERR count should be greater than 0")),
            }
            j += 2;
        } else {
            return Err(Reply::err(SYNTAX));
        }
    }
    Ok((head, count.unwrap_or(1)))
}

/// Pops up to `count` elements from the head (`head`) or tail of the
/// first of `keys` that holds a list: the key and its elements (in the
/// order popped), `None` when none does, or WRONGTYPE when a key before
/// that one holds another type. The caller holds the keys' stripes.
pub(super) async fn pop_first(
    db: &Db<'_>,
    keys: &[Vec<u8>],
    head: bool,
    count: i64,
) -> NodeResult<Result<Option<(Vec<u8>, Vec<Vec<u8>>)>, Reply>> {
    for key in keys {
        let mut s = match list(db, key).await? {
            Ok(Some(s)) => s,
            Ok(None) => continue,
            Err(reply) => return Ok(Err(reply)),
        };
        let n = count.min(s.count);
        let (from, to) =
            if head { (s.head, s.head + n) } else { (s.head + s.count - n, s.head + s.count) };
        let mut popped = elements(db, key, from, to).await?;
        if !head {
            popped.reverse();
        }
        if n > 0 {
            // A count of 0 changes nothing (no write, no modification for
            // WATCH), as in Redis.
            let ops = (from..to).map(|p| WriteOp::Delete { key: row(key, p).into() }).collect();
            if head {
                s.head += n;
            }
            s.count -= n;
            db.count_changes(n as u64);
            commit(db, key, s, ops).await?;
            notify_popped(db, key, head, s.count);
        }
        return Ok(Ok(Some((key.clone(), popped))));
    }
    Ok(Ok(None))
}

/// LPOS key element [RANK rank] [COUNT count] [MAXLEN len]: the index of
/// the rank-th match (from the tail for a negative rank), or with COUNT
/// the indexes of up to `count` matches (all for 0), looking at no more
/// than `len` elements (all for 0).
async fn lpos(db: &Db<'_>, args: &[Vec<u8>]) -> NodeResult<Reply> {
    let (mut rank, mut count, mut maxlen) = (1i64, None, 0i64);
    let mut j = 3;
    while j < args.len() {
        let more = j + 1 < args.len();
        let opt = String::from_utf8_lossy(&args[j]).to_ascii_lowercase();
        match opt.as_str() {
            "rank" if more => {
                rank =
                    match parse_i64(&args[j + 1]) {
                        Some(0) => return Ok(Reply::err(
                            "ERR RANK can't be zero: use 1 to start from the first match, 2 from \
                             the second ... or use negative to start from the end of the list",
                        )),
                        Some(r) => r,
                        None => return Ok(Reply::err(NOT_INTEGER)),
                    }
            }
            "count" if more => match parse_i64(&args[j + 1]) {
                Some(n) if n >= 0 => count = Some(n),
                _ => return Ok(Reply::err("ERR COUNT can't be negative")),
            },
            "maxlen" if more => match parse_i64(&args[j + 1]) {
                Some(n) if n >= 0 => maxlen = n,
                _ => return Ok(Reply::err("ERR MAXLEN can't be negative")),
            },
            _ => return Ok(Reply::err(SYNTAX)),
        }
        j += 2;
    }
    // A negative rank counts from the tail (as in Redis, -i64::MIN is
    // i64::MIN: it then takes the first match from the tail).
    let from_tail = rank < 0;
    if from_tail {
        rank = rank.wrapping_neg();
    }
    let Some(s) = or_reply!(list(db, &args[1]).await?) else {
        return Ok(if count.is_some() { Reply::Array(Vec::new()) } else { Reply::Null });
    };
    let all = elements(db, &args[1], s.head, s.head + s.count).await?;
    let len = all.len() as i64;
    let order: Box<dyn Iterator<Item = i64>> =
        if from_tail { Box::new((0..len).rev()) } else { Box::new(0..len) };
    let (mut matches, mut found) = (0i64, Vec::new());
    for (seen, i) in order.enumerate() {
        if maxlen != 0 && seen as i64 >= maxlen {
            break;
        }
        if all[i as usize] != args[2] {
            continue;
        }
        matches += 1;
        if matches >= rank {
            found.push(i);
            match count {
                None => break,
                Some(c) if c != 0 && matches - rank + 1 >= c => break,
                Some(_) => {}
            }
        }
    }
    Ok(match count {
        Some(_) => Reply::Array(found.into_iter().map(Reply::Int).collect()),
        None => found.first().map_or(Reply::Null, |i| Reply::Int(*i)),
    })
}

async fn command(db: &Db<'_>, name: &str, args: &[Vec<u8>]) -> NodeResult<Reply> {
    let key = &args[1];
    // Arguments are checked before the key, as Redis does.
    let count_arg = match name {
        "lpop" | "rpop" if args.len() > 3 => return Ok(Reply::wrong_arity(name)),
        "lpop" | "rpop" => match args.get(2).map(|a| positive_count(a)) {
            None => None,
            Some(Ok(n)) => Some(i64::try_from(n).unwrap_or(i64::MAX)),
            Some(Err(reply)) => return Ok(reply),
        },
        _ => None,
    };
    let numbers = |i: usize, j: usize| -> Option<(i64, i64)> {
        Some((parse_i64(&args[i])?, parse_i64(&args[j])?))
    };
    // Redis reads these numbers before it looks the key up (LINDEX and
    // LSET look first), so a bad number beats WRONGTYPE.
    let numbers_first = match name {
        "lrange" | "ltrim" => numbers(2, 3).is_some(),
        "lrem" => parse_i64(&args[2]).is_some(),
        _ => true,
    };
    if !numbers_first {
        return Ok(Reply::err(NOT_INTEGER));
    }
    let found = or_reply!(list(db, key).await?);
    Ok(match name {
        "lpush" | "rpush" | "lpushx" | "rpushx" => {
            let Some(mut s) = found.or((!name.ends_with('x')).then_some(Shape {
                count: 0,
                head: 0,
                expire: None,
            })) else {
                return Ok(Reply::Int(0));
            };
            let mut ops = Vec::with_capacity(args.len() - 2);
            for e in &args[2..] {
                if name.starts_with('l') {
                    s.head -= 1;
                    ops.push(put(key, s.head, e));
                } else {
                    ops.push(put(key, s.head + s.count, e));
                }
                s.count += 1;
            }
            commit(db, key, s, ops).await?;
            db.notify(notify::LIST, if name.starts_with('l') { "lpush" } else { "rpush" }, key);
            Reply::Int(s.count)
        }
        "lpop" | "rpop" => {
            if found.is_none() {
                return Ok(if count_arg.is_some() { Reply::NullArray } else { Reply::Null });
            }
            let head = name == "lpop";
            let n = count_arg.unwrap_or(1);
            let popped = match pop_first(db, std::slice::from_ref(key), head, n).await? {
                Ok(found) => found.map(|(_, popped)| popped).unwrap_or_default(),
                Err(reply) => return Ok(reply),
            };
            match count_arg {
                None => popped.into_iter().next().map_or(Reply::Null, Reply::Bulk),
                Some(_) => Reply::Array(popped.into_iter().map(Reply::Bulk).collect()),
            }
        }
        "llen" => Reply::Int(found.map_or(0, |s| s.count)),
        "lrange" => {
            let Some((start, stop)) = numbers(2, 3) else { return Ok(Reply::err(NOT_INTEGER)) };
            let Some(s) = found else { return Ok(Reply::Array(Vec::new())) };
            let Some((first, last)) = span(start, stop, s.count as u64) else {
                return Ok(Reply::Array(Vec::new()));
            };
            let items = elements(db, key, s.head + first as i64, s.head + last as i64 + 1).await?;
            Reply::Array(items.into_iter().map(Reply::Bulk).collect())
        }
        "lindex" => {
            // Redis looks the key up first: a missing key is nil whatever the index.
            let Some(s) = found else { return Ok(Reply::Null) };
            let Some(i) = parse_i64(&args[2]) else { return Ok(Reply::err(NOT_INTEGER)) };
            match offset(i, s.count) {
                None => Reply::Null,
                Some(o) => elements(db, key, s.head + o, s.head + o + 1)
                    .await?
                    .pop()
                    .map_or(Reply::Null, Reply::Bulk),
            }
        }
        "lset" => {
            let Some(s) = found else { return Ok(Reply::err("ERR no such key")) };
            let Some(i) = parse_i64(&args[2]) else { return Ok(Reply::err(NOT_INTEGER)) };
            match offset(i, s.count) {
                None => Reply::err("ERR index out of range"),
                Some(o) => {
                    db.write(vec![put(key, s.head + o, &args[3])]).await?;
                    db.notify(notify::LIST, "lset", key);
                    Reply::ok()
                }
            }
        }
        "ltrim" => {
            let Some((start, stop)) = numbers(2, 3) else { return Ok(Reply::err(NOT_INTEGER)) };
            let Some(s) = found else { return Ok(Reply::ok()) };
            let (keep_from, keep_to) = match span(start, stop, s.count as u64) {
                None => (0, 0),
                Some((first, last)) => (first as i64, last as i64 + 1),
            };
            let ops = (0..s.count)
                .filter(|o| !(keep_from..keep_to).contains(o))
                .map(|o| WriteOp::Delete { key: row(key, s.head + o).into() })
                .collect();
            let trimmed = Shape { count: keep_to - keep_from, head: s.head + keep_from, ..s };
            db.count_changes((s.count - trimmed.count) as u64);
            commit(db, key, trimmed, ops).await?;
            db.notify(notify::LIST, "ltrim", key);
            if trimmed.count == 0 {
                db.notify(notify::GENERIC, "del", key);
            }
            Reply::ok()
        }
        "lrem" => {
            let Some(n) = parse_i64(&args[2]) else { return Ok(Reply::err(NOT_INTEGER)) };
            let Some(s) = found else { return Ok(Reply::Int(0)) };
            let all = elements(db, key, s.head, s.head + s.count).await?;
            let target = &args[3];
            let limit = if n == 0 { usize::MAX } else { n.unsigned_abs() as usize };
            let mut removed = 0;
            let mut keep: Vec<Option<&Vec<u8>>> = all.iter().map(Some).collect();
            let order: Box<dyn Iterator<Item = usize>> =
                if n < 0 { Box::new((0..all.len()).rev()) } else { Box::new(0..all.len()) };
            for i in order {
                if removed == limit {
                    break;
                }
                if &all[i] == target {
                    keep[i] = None;
                    removed += 1;
                }
            }
            if removed > 0 {
                let rest: Vec<Vec<u8>> = keep.into_iter().flatten().cloned().collect();
                db.count_changes(removed as u64);
                rewrite(db, key, s, &rest).await?;
                db.notify(notify::LIST, "lrem", key);
                if rest.is_empty() {
                    db.notify(notify::GENERIC, "del", key);
                }
            }
            Reply::Int(removed as i64)
        }
        "linsert" => {
            let before = match String::from_utf8_lossy(&args[2]).to_ascii_lowercase().as_str() {
                "before" => true,
                "after" => false,
                _ => return Ok(Reply::err(SYNTAX)),
            };
            let Some(s) = found else { return Ok(Reply::Int(0)) };
            let mut all = elements(db, key, s.head, s.head + s.count).await?;
            let Some(i) = all.iter().position(|e| e == &args[3]) else { return Ok(Reply::Int(-1)) };
            all.insert(if before { i } else { i + 1 }, args[4].clone());
            db.count_changes(1);
            rewrite(db, key, s, &all).await?;
            db.notify(notify::LIST, "linsert", key);
            Reply::Int(all.len() as i64)
        }
        _ => return Err(NodeError::Internal(format!("{name} is not a list command"))),
    })
}
