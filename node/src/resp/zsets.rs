//! Sorted set commands. A member has two rows: `("z", KEY, MEMBER)` ->
//! its score, for lookups by member, and `("Z", KEY, SCORE, MEMBER)`, for
//! ranges by score (the tuple order of floats is numeric, then members
//! order as bytes, which is Redis's order). Ranges by score or by index
//! read only the rows they return (by index: and those before them).
//! Commands over several keys (ZUNION, ZMPOP, ZRANGESTORE...) are in
//! [`super::zset_algebra`], built on the helpers here; range arguments
//! are parsed in [`super::zset_range`].

use monotable_proto::tuple::{self, Element};
use monotable_proto::WriteOp;

use super::args::{in_range, positive_count, REPEATED_ELEMENTS_MAX};
use super::errors::{SYNTAX, WRONGTYPE};
use super::keyspace::{
    decode_score, encode_score, key_row, score_row, zset_member_row as member_row, Db, Value,
    KIND_ZSET,
};
use super::notify;
use super::reply::Reply;
use super::state::RespState;
use super::table::{Command, Flag};
use super::zset_range::{
    lex_range_is_empty, lex_select, parse_range_args, score_range, Lex, RangeArgs,
};
use crate::error::{NodeError, NodeResult};

pub(super) fn score_prefix(key: &[u8]) -> Vec<u8> {
    tuple::encode(&[Element::String("Z".into()), Element::Bytes(key.to_vec())]).expect("encodes")
}

/// Rows at this score (any member) start with this.
pub(super) fn score_bound(key: &[u8], score: f64) -> Vec<u8> {
    tuple::encode(&[
        Element::String("Z".into()),
        Element::Bytes(key.to_vec()),
        Element::Float(score),
    ])
    .expect("encodes")
}

pub(super) fn parse_score_row(row: &[u8]) -> NodeResult<(f64, Vec<u8>)> {
    let mut t = tuple::decode(row).map_err(|_| NodeError::Internal("damaged score row".into()))?;
    match (t.pop(), t.pop()) {
        (Some(Element::Bytes(m)), Some(Element::Float(s))) => Ok((s, m)),
        // A score with an integral value is stored as that integer key; it
        // came from an f64, so it converts back exactly.
        (Some(Element::Bytes(m)), Some(Element::Int(s))) => Ok((s as f64, m)),
        _ => Err(NodeError::Internal("damaged score row".into())),
    }
}

/// -0 and 0 are one score, as in Redis (a stored score is never -0).
pub(super) fn norm(x: f64) -> f64 {
    if x == 0.0 {
        0.0
    } else {
        x
    }
}

/// A sorted set's key row: how many members, and its expiry.
pub(super) struct Zset {
    pub(super) count: u64,
    pub(super) expire: Option<u64>,
}

/// The sorted set at `key`, `None` when missing, WRONGTYPE for another type.
pub(super) async fn zset(db: &Db<'_>, key: &[u8]) -> NodeResult<Result<Option<Zset>, Reply>> {
    Ok(match db.get(key).await? {
        None => Ok(None),
        Some(v) if v.kind == KIND_ZSET => {
            Ok(Some(Zset { count: v.count(), expire: v.expire_at_ms }))
        }
        Some(_) => Err(Reply::err(WRONGTYPE)),
    })
}

pub(super) async fn score_of(db: &Db<'_>, key: &[u8], member: &[u8]) -> NodeResult<Option<f64>> {
    db.read_row(member_row(key, member)).await?.map(|v| decode_score(&v)).transpose()
}

pub(super) fn set_ops(
    key: &[u8],
    member: &[u8],
    old: Option<f64>,
    new: f64,
    ops: &mut Vec<WriteOp>,
) {
    if let Some(o) = old {
        ops.push(WriteOp::Delete { key: score_row(key, o, member).into() });
    }
    ops.push(WriteOp::Put { key: member_row(key, member).into(), value: encode_score(new).into() });
    ops.push(WriteOp::Put { key: score_row(key, new, member).into(), value: Vec::new().into() });
}

pub(super) fn del_ops(key: &[u8], member: &[u8], score: f64, ops: &mut Vec<WriteOp>) {
    ops.push(WriteOp::Delete { key: member_row(key, member).into() });
    ops.push(WriteOp::Delete { key: score_row(key, score, member).into() });
}

pub(super) async fn commit(
    db: &Db<'_>,
    key: &[u8],
    before: Option<&Zset>,
    count: u64,
    mut ops: Vec<WriteOp>,
) -> NodeResult<()> {
    if count == 0 {
        if before.is_some() {
            ops.push(WriteOp::Delete { key: key_row(key).into() });
        }
    } else if before.is_none_or(|b| b.count != count) {
        let v = Value::collection(KIND_ZSET, count, before.and_then(|b| b.expire));
        ops.push(WriteOp::Put { key: key_row(key).into(), value: v.encode().into() });
    }
    db.write(ops).await
}

/// Members in score order within row bounds, forward or reverse, after
/// skipping `offset`, at most `limit` (None: all). Where to start is found
/// in O(log n) (ZRANGE by index, ZRANGEBYSCORE ... LIMIT), not by walking
/// the rows skipped.
pub(super) async fn scan_scores(
    db: &Db<'_>,
    start: Vec<u8>,
    end: Option<Vec<u8>>,
    reverse: bool,
    offset: usize,
    limit: Option<usize>,
) -> NodeResult<Vec<(Vec<u8>, f64)>> {
    if offset == 0 {
        return walk_scores(db, start, end, reverse, limit).await;
    }
    let offset = offset as u64;
    // The first row to return, as a position from the interval's start.
    let position = if reverse {
        let count = db.count_rows(&start, end.as_deref()).await?;
        let Some(p) = count.checked_sub(offset + 1) else { return Ok(Vec::new()) };
        p
    } else {
        offset
    };
    let Some((first, _)) = db.select_row(&start, end.as_deref(), position).await? else {
        return Ok(Vec::new());
    };
    if reverse {
        // Down from the first row: the interval ends just past it.
        let mut past = first;
        past.push(0);
        walk_scores(db, start, Some(past), true, limit).await
    } else {
        walk_scores(db, first, end, false, limit).await
    }
}

/// Members in score order from the first row within bounds, at most
/// `limit`.
async fn walk_scores(
    db: &Db<'_>,
    start: Vec<u8>,
    end: Option<Vec<u8>>,
    reverse: bool,
    limit: Option<usize>,
) -> NodeResult<Vec<(Vec<u8>, f64)>> {
    let mut out = Vec::new();
    db.visit_rows_expecting(start, end, reverse, limit.unwrap_or(usize::MAX), |row, _| {
        if limit.is_some_and(|l| out.len() >= l) {
            return Ok(false);
        }
        let (score, member) = parse_score_row(&row)?;
        out.push((member, score));
        Ok(true)
    })
    .await?;
    Ok(out)
}

pub(super) fn with_scores(items: Vec<(Vec<u8>, f64)>, scores: bool, proto: u8) -> Reply {
    if !scores {
        return Reply::Array(items.into_iter().map(|(m, _)| Reply::Bulk(m)).collect());
    }
    if proto >= 3 {
        return Reply::Array(
            items
                .into_iter()
                .map(|(m, s)| Reply::Array(vec![Reply::Bulk(m), Reply::Double(s)]))
                .collect(),
        );
    }
    Reply::Array(items.into_iter().flat_map(|(m, s)| [Reply::Bulk(m), Reply::Double(s)]).collect())
}

/// Runs a sorted set command (`command` is its row of the table); a writing
/// one holds its key's stripe.
pub async fn run(
    state: &RespState,
    dbi: u32,
    proto: u8,
    db: &Db<'_>,
    command: &Command,
    args: &[Vec<u8>],
) -> NodeResult<Reply> {
    if super::zset_algebra::handles(command.name) {
        return super::zset_algebra::run(state, dbi, proto, db, command.name, args).await;
    }
    let writes = command.has(Flag::Write);
    let _g = if writes { Some(state.lock(dbi, &[&args[1]]).await) } else { None };
    self::command(db, proto, command.name, args).await
}

async fn command(db: &Db<'_>, proto: u8, name: &str, args: &[Vec<u8>]) -> NodeResult<Reply> {
    let key = &args[1];
    match name {
        "zadd" => return zadd(db, args).await,
        "zpopmin" | "zpopmax" => return zpop(db, proto, name, args).await,
        "zrandmember" => return zrandmember(db, proto, args).await,
        "zincrby" => {
            let by = or_reply!(super::args::float(&args[2]));
            let before = or_reply!(zset(db, key).await?);
            let old = if before.is_some() { score_of(db, key, &args[3]).await? } else { None };
            let new = norm(old.unwrap_or(0.0) + by);
            if new.is_nan() {
                return Ok(Reply::err("ERR resulting score is not a number (NaN)"));
            }
            // An unchanged score writes nothing (no modification for
            // WATCH), as Redis's zsetAdd.
            if old != Some(new) {
                let mut ops = Vec::new();
                set_ops(key, &args[3], old, new, &mut ops);
                let count = before.as_ref().map_or(0, |b| b.count) + u64::from(old.is_none());
                commit(db, key, before.as_ref(), count, ops).await?;
                db.notify(notify::ZSET, "zincr", key);
            }
            return Ok(Reply::Double(new));
        }
        "zrem" => {
            let before = or_reply!(zset(db, key).await?);
            let Some(z) = before else { return Ok(Reply::Int(0)) };
            let mut ops = Vec::new();
            let mut removed: Vec<&Vec<u8>> = Vec::new();
            for m in &args[2..] {
                if removed.contains(&m) {
                    continue;
                }
                if let Some(s) = score_of(db, key, m).await? {
                    del_ops(key, m, s, &mut ops);
                    removed.push(m);
                }
            }
            commit(db, key, Some(&z), z.count - removed.len() as u64, ops).await?;
            notify_removed(db, "zrem", key, removed.len() as u64, z.count);
            return Ok(Reply::Int(removed.len() as i64));
        }
        _ => {}
    }
    // Range arguments are checked before the key, as Redis does.
    let parsed = parse_range_args(name, args);
    let range = match parsed {
        Ok(r) => r,
        Err(reply) => return Ok(reply),
    };
    let before = or_reply!(zset(db, key).await?);
    let empty = |n: &str| match n {
        "zscore" => Reply::Null,
        "zmscore" => Reply::Array(vec![Reply::Null; args.len() - 2]),
        "zrank" | "zrevrank" => Reply::Null,
        "zrange" | "zrangebyscore" | "zrevrange" | "zrevrangebyscore" | "zrangebylex"
        | "zrevrangebylex" => Reply::Array(Vec::new()),
        _ => Reply::Int(0),
    };
    let Some(z) = before else { return Ok(empty(name)) };
    Ok(match name {
        "zscore" => score_of(db, key, &args[2]).await?.map_or(Reply::Null, Reply::Double),
        "zmscore" => {
            let mut out = Vec::new();
            for m in &args[2..] {
                out.push(score_of(db, key, m).await?.map_or(Reply::Null, Reply::Double));
            }
            Reply::Array(out)
        }
        "zcard" => Reply::Int(z.count as i64),
        "zrank" | "zrevrank" => {
            let Some(score) = score_of(db, key, &args[2]).await? else { return Ok(Reply::Null) };
            // Rows before this member's, counted in O(log n).
            let prefix = score_prefix(key);
            let end = score_row(key, score, &args[2]);
            let before = db.count_rows(&prefix, Some(&end)).await? as i64;
            Reply::Int(if name == "zrank" { before } else { z.count as i64 - 1 - before })
        }
        "zcount" => {
            let RangeArgs::Score { min, max, .. } = range else { return Ok(Reply::err(SYNTAX)) };
            let (start, end) = score_range(key, min, max);
            Reply::Int(db.count_rows(&start, end.as_deref()).await? as i64)
        }
        "zlexcount" => match &range {
            RangeArgs::Lex { min, max, .. } => match lex_rows(db, key, min, max).await? {
                Some((start, end)) => {
                    Reply::Int(db.count_rows(&start, end.as_deref()).await? as i64)
                }
                None => Reply::Int(select(db, key, &z, &range).await?.len() as i64),
            },
            _ => Reply::Int(select(db, key, &z, &range).await?.len() as i64),
        },
        "zremrangebyscore" | "zremrangebyrank" | "zremrangebylex" => {
            let items = select(db, key, &z, &range).await?;
            let mut ops = Vec::new();
            for (m, s) in &items {
                del_ops(key, m, *s, &mut ops);
            }
            if !items.is_empty() {
                db.count_changes(items.len() as u64);
            }
            commit(db, key, Some(&z), z.count - items.len() as u64, ops).await?;
            let event = match name {
                "zremrangebyscore" => "zremrangebyscore",
                "zremrangebyrank" => "zremrangebyrank",
                _ => "zremrangebylex",
            };
            notify_removed(db, event, key, items.len() as u64, z.count);
            Reply::Int(items.len() as i64)
        }
        _ => {
            let scores = match &range {
                RangeArgs::Rank { scores, .. } | RangeArgs::Score { scores, .. } => *scores,
                RangeArgs::Lex { .. } | RangeArgs::None => false,
            };
            with_scores(select(db, key, &z, &range).await?, scores, proto)
        }
    })
}

/// The members a range selects, in the order to reply.
pub(super) async fn select(
    db: &Db<'_>,
    key: &[u8],
    z: &Zset,
    range: &RangeArgs,
) -> NodeResult<Vec<(Vec<u8>, f64)>> {
    let prefix = score_prefix(key);
    let prefix_end = monotable_proto::keys::tuple_prefix_end(&prefix);
    match range {
        RangeArgs::None => Ok(Vec::new()),
        RangeArgs::Rank { start, stop, rev, .. } => {
            let Some((first, last)) = super::args::span(*start, *stop, z.count) else {
                return Ok(Vec::new());
            };
            let take = usize::try_from(last - first + 1).unwrap_or(usize::MAX);
            let skip = usize::try_from(first).unwrap_or(usize::MAX);
            scan_scores(db, prefix, prefix_end, *rev, skip, Some(take)).await
        }
        RangeArgs::Score { min, max, rev, offset, limit, .. } => {
            let (start, end) = score_range(key, *min, *max);
            if start >= end.clone().unwrap_or_default() {
                return Ok(Vec::new());
            }
            scan_scores(db, start, end, *rev, *offset, *limit).await
        }
        RangeArgs::Lex { min, max, rev, offset, limit } => {
            if let Some((start, end)) = lex_rows(db, key, min, max).await? {
                return scan_scores(db, start, end, *rev, *offset, *limit).await;
            }
            let all = scan_scores(db, prefix, prefix_end, false, 0, None).await?;
            Ok(lex_select(&all, min, max, *rev, *offset, *limit))
        }
    }
}

/// When every member of the sorted set at `key` has one score (what lex
/// ranges are meant for), the score rows of its members within `[min,
/// max]`: `[start, end)`, so the range costs O(log n) to find. `None` with
/// mixed scores, whose answer [`lex_select`] works out from every member
/// as Redis does.
async fn lex_rows(
    db: &Db<'_>,
    key: &[u8],
    min: &Lex,
    max: &Lex,
) -> NodeResult<Option<(Vec<u8>, Option<Vec<u8>>)>> {
    let prefix = score_prefix(key);
    let prefix_end = monotable_proto::keys::tuple_prefix_end(&prefix);
    let lowest = walk_scores(db, prefix.clone(), prefix_end.clone(), false, Some(1)).await?;
    let highest = walk_scores(db, prefix, prefix_end, true, Some(1)).await?;
    let (Some((_, low)), Some((_, high))) = (lowest.first(), highest.first()) else {
        return Ok(None);
    };
    if low != high {
        return Ok(None);
    }
    let base = score_bound(key, *low);
    let nothing = Some((base.clone(), Some(base.clone())));
    if lex_range_is_empty(min, max) {
        return Ok(nothing);
    }
    let row = |member: &[u8], past: bool| {
        let mut row = score_row(key, *low, member);
        if past {
            // The first row key after this member's.
            row.push(0);
        }
        row
    };
    let start = match min {
        Lex::Min => base.clone(),
        Lex::Max => return Ok(nothing),
        Lex::At(member, exclusive) => row(member, *exclusive),
    };
    let end = match max {
        Lex::Max => monotable_proto::keys::tuple_prefix_end(&base),
        Lex::Min => return Ok(nothing),
        Lex::At(member, exclusive) => Some(row(member, !*exclusive)),
    };
    Ok(Some((start, end)))
}

/// Removes the `n` (at most the set's size) lowest, or with `max`
/// highest, members of `z` at `key`, and returns them in that order.
pub(super) async fn pop(
    db: &Db<'_>,
    key: &[u8],
    z: &Zset,
    max: bool,
    n: u64,
) -> NodeResult<Vec<(Vec<u8>, f64)>> {
    let prefix = score_prefix(key);
    let end = monotable_proto::keys::tuple_prefix_end(&prefix);
    let take = usize::try_from(n.min(z.count)).unwrap_or(usize::MAX);
    let items = scan_scores(db, prefix, end, max, 0, Some(take)).await?;
    let mut ops = Vec::new();
    for (m, s) in &items {
        del_ops(key, m, *s, &mut ops);
    }
    commit(db, key, Some(z), z.count - items.len() as u64, ops).await?;
    notify_removed(db, if max { "zpopmax" } else { "zpopmin" }, key, items.len() as u64, z.count);
    Ok(items)
}

/// Raises `event` when `removed` of the `had` members of the sorted set
/// at `key` went (none: nothing), and `del` when that emptied it.
fn notify_removed(db: &Db<'_>, event: &'static str, key: &[u8], removed: u64, had: u64) {
    if removed > 0 {
        db.notify(notify::ZSET, event, key);
        if removed == had {
            db.notify(notify::GENERIC, "del", key);
        }
    }
}

/// ZPOPMIN|ZPOPMAX key [count]: a flat `[member, score, ...]`, nested
/// pairs in RESP3 when a count is given (as Redis 7.0 answers).
async fn zpop(db: &Db<'_>, proto: u8, name: &str, args: &[Vec<u8>]) -> NodeResult<Reply> {
    if args.len() > 3 {
        return Ok(Reply::err(SYNTAX));
    }
    let count = match args.get(2).map(|a| positive_count(a)).transpose() {
        Ok(c) => c,
        Err(reply) => return Ok(reply),
    };
    let key = &args[1];
    let Some(z) = or_reply!(zset(db, key).await?) else { return Ok(Reply::Array(Vec::new())) };
    let n = count.unwrap_or(1);
    if n == 0 {
        return Ok(Reply::Array(Vec::new()));
    }
    let items = pop(db, key, &z, name == "zpopmax", n).await?;
    let nested = count.is_some() && proto >= 3;
    Ok(with_scores(items, true, if nested { 3 } else { 2 }))
}

/// ZRANDMEMBER key [count [WITHSCORES]]: one member (nil when missing), or
/// `count` distinct ones, or for a negative count that many with repeats.
/// Redis streams any negative count (-2^63+1 runs until the client goes
/// away); past [`REPEATED_ELEMENTS_MAX`] this refuses it, as SRANDMEMBER.
async fn zrandmember(db: &Db<'_>, proto: u8, args: &[Vec<u8>]) -> NodeResult<Reply> {
    let key = &args[1];
    // Picked from the member rows ("z"), each in O(log n).
    let pick = |total, picks, repeats| async move {
        let picked =
            super::collections::random_elements(db, KIND_ZSET, key, total, picks, repeats).await?;
        picked
            .into_iter()
            .map(|(member, score)| Ok((member, decode_score(&score)?)))
            .collect::<NodeResult<Vec<(Vec<u8>, f64)>>>()
    };
    let Some(count) = args.get(2) else {
        let Some(z) = or_reply!(zset(db, key).await?) else { return Ok(Reply::Null) };
        let one = pick(z.count, 1, false).await?.into_iter().next();
        return Ok(one.map_or(Reply::Null, |(m, _)| Reply::Bulk(m)));
    };
    // Redis's order: the count, the other words, then the key.
    let l = match in_range(count, -i64::MAX, i64::MAX) {
        Ok(l) => l,
        Err(reply) => return Ok(reply),
    };
    if args.len() > 4 || (args.len() == 4 && !args[3].eq_ignore_ascii_case(b"withscores")) {
        return Ok(Reply::err(SYNTAX));
    }
    let scores = args.len() == 4;
    // Redis doubles the count for WITHSCORES: half of i64 at most.
    if scores && !(-i64::MAX / 2..=i64::MAX / 2).contains(&l) {
        return Ok(Reply::err("ERR value is out of range"));
    }
    let Some(z) = or_reply!(zset(db, key).await?) else { return Ok(Reply::Array(Vec::new())) };
    if l < 0 && l.unsigned_abs() > REPEATED_ELEMENTS_MAX {
        return Ok(Reply::err(format!(
            "ERR value is out of range, value must between -{REPEATED_ELEMENTS_MAX} and {}",
            i64::MAX
        )));
    }
    let picked = pick(z.count, l.unsigned_abs(), l < 0).await?;
    Ok(with_scores(picked, scores, proto))
}

/// Every member of `z` at `key` with its score, in score order.
pub(super) async fn members(db: &Db<'_>, key: &[u8], z: &Zset) -> NodeResult<Vec<(Vec<u8>, f64)>> {
    select(db, key, z, &RangeArgs::Rank { start: 0, stop: -1, rev: false, scores: true }).await
}

/// ZADD key [NX | XX] [GT | LT] [CH] [INCR] score member [score member ...]
async fn zadd(db: &Db<'_>, args: &[Vec<u8>]) -> NodeResult<Reply> {
    let key = &args[1];
    let (mut nx, mut xx, mut gt, mut lt, mut ch, mut incr) =
        (false, false, false, false, false, false);
    let mut i = 2;
    while i < args.len() {
        match String::from_utf8_lossy(&args[i]).to_ascii_uppercase().as_str() {
            "NX" => nx = true,
            "XX" => xx = true,
            "GT" => gt = true,
            "LT" => lt = true,
            "CH" => ch = true,
            "INCR" => incr = true,
            _ => break,
        }
        i += 1;
    }
    let pairs = &args[i..];
    if pairs.is_empty() || !pairs.len().is_multiple_of(2) {
        return Ok(Reply::err(SYNTAX));
    }
    if nx && xx {
        return Ok(Reply::err("ERR XX and NX options at the same time are not compatible"));
    }
    if (nx && (gt || lt)) || (gt && lt) {
        return Ok(Reply::err("ERR GT, LT, and/or NX options at the same time are not compatible"));
    }
    if incr && pairs.len() > 2 {
        return Ok(Reply::err("ERR INCR option supports a single increment-element pair"));
    }
    let mut items = Vec::with_capacity(pairs.len() / 2);
    for p in pairs.chunks(2) {
        let score = or_reply!(super::args::float(&p[0]));
        items.push((norm(score), &p[1]));
    }
    let before = or_reply!(zset(db, key).await?);
    let mut count = before.as_ref().map_or(0, |b| b.count);
    let (mut added, mut changed) = (0i64, 0i64);
    let mut ops = Vec::new();
    let mut incr_result = None;
    // Scores set so far by this command (a map: a million members stay linear).
    let mut seen: std::collections::HashMap<&[u8], f64> = Default::default();
    for (score, member) in items {
        let old = match seen.get(member.as_slice()) {
            Some(s) => Some(*s),
            None if before.is_some() => score_of(db, key, member).await?,
            None => None,
        };
        let new = if incr { norm(old.unwrap_or(0.0) + score) } else { score };
        if new.is_nan() {
            return Ok(Reply::err("ERR resulting score is not a number (NaN)"));
        }
        let allowed = match old {
            None => !xx,
            Some(o) => !nx && (!gt || new > o) && (!lt || new < o),
        };
        if !allowed {
            continue;
        }
        incr_result = Some(new);
        match old {
            None => {
                added += 1;
                count += 1;
                set_ops(key, member, None, new, &mut ops);
            }
            Some(o) if o != new => {
                changed += 1;
                set_ops(key, member, Some(o), new, &mut ops);
            }
            Some(_) => {}
        }
        seen.insert(member, new);
    }
    if !ops.is_empty() {
        commit(db, key, before.as_ref(), count, ops).await?;
        db.notify(notify::ZSET, if incr { "zincr" } else { "zadd" }, key);
    }
    Ok(if incr {
        incr_result.map_or(Reply::Null, Reply::Double)
    } else {
        Reply::Int(if ch { added + changed } else { added })
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn scores_format_like_redis() {
        use super::super::reply::format_double;
        assert_eq!(format_double(1.5), "1.5");
        assert_eq!(format_double(-2.0), "-2");
        assert_eq!(format_double(f64::INFINITY), "inf");
        // As redis-server 7.0 prints them (`%.17g`).
        assert_eq!(format_double(1e20), "1e+20");
        assert_eq!(format_double(1.5e-7), "1.4999999999999999e-07");
        assert_eq!(format_double(123456789012345678.0), "1.2345678901234568e+17");
        assert_eq!(format_double(0.1), "0.10000000000000001");
        assert_eq!(format_double(-0.0), "-0");
        assert_eq!(format_double(0.0), "0");
        assert_eq!(format_double(3.0000000000000004), "3.0000000000000004");
        assert_eq!(format_double(0.0001), "0.0001");
        assert_eq!(format_double(12345678901234567.0), "12345678901234568");
        assert_eq!(format_double(99999999999999999.0), "1e+17");
    }
}
