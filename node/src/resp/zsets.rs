//! Sorted set commands. A member has two rows: `("z", KEY, MEMBER)` ->
//! its score, for lookups by member, and `("Z", KEY, SCORE, MEMBER)`, for
//! ranges by score (the tuple order of floats is numeric, then members
//! order as bytes, which is Redis's order). Ranges by score or by index
//! read only the rows they return (by index: and those before them).

use monotable_proto::tuple::{self, Element};
use monotable_proto::WriteOp;

use super::args::{parse_f64, parse_i64, NOT_INTEGER};
use super::errors::{SYNTAX, WRONGTYPE};
use super::keyspace::{
    decode_score, encode_score, key_row, score_row, zset_member_row as member_row, Db, Value,
    KIND_ZSET,
};
use super::reply::Reply;
use super::state::RespState;
use super::table::{Command, Flag};
use crate::error::{NodeError, NodeResult};

fn score_prefix(key: &[u8]) -> Vec<u8> {
    tuple::encode(&[Element::String("Z".into()), Element::Bytes(key.to_vec())]).expect("encodes")
}

/// Rows at this score (any member) start with this.
fn score_bound(key: &[u8], score: f64) -> Vec<u8> {
    tuple::encode(&[
        Element::String("Z".into()),
        Element::Bytes(key.to_vec()),
        Element::Float(score),
    ])
    .expect("encodes")
}

fn parse_score_row(row: &[u8]) -> NodeResult<(f64, Vec<u8>)> {
    let mut t = tuple::decode(row).map_err(|_| NodeError::Internal("damaged score row".into()))?;
    match (t.pop(), t.pop()) {
        (Some(Element::Bytes(m)), Some(Element::Float(s))) => Ok((s, m)),
        // A score with an integral value is stored as that integer key; it
        // came from an f64, so it converts back exactly.
        (Some(Element::Bytes(m)), Some(Element::Int(s))) => Ok((s as f64, m)),
        _ => Err(NodeError::Internal("damaged score row".into())),
    }
}

/// -0 and 0 are one score, as in Redis.
fn norm(x: f64) -> f64 {
    if x == 0.0 {
        0.0
    } else {
        x
    }
}

struct Zset {
    count: u64,
    expire: Option<u64>,
}

async fn zset(db: &Db<'_>, key: &[u8]) -> NodeResult<Result<Option<Zset>, Reply>> {
    Ok(match db.get(key).await? {
        None => Ok(None),
        Some(v) if v.kind == KIND_ZSET => {
            Ok(Some(Zset { count: v.count(), expire: v.expire_at_ms }))
        }
        Some(_) => Err(Reply::err(WRONGTYPE)),
    })
}

async fn score_of(db: &Db<'_>, key: &[u8], member: &[u8]) -> NodeResult<Option<f64>> {
    db.read_row(member_row(key, member)).await?.map(|v| decode_score(&v)).transpose()
}

fn set_ops(key: &[u8], member: &[u8], old: Option<f64>, new: f64, ops: &mut Vec<WriteOp>) {
    if let Some(o) = old {
        ops.push(WriteOp::Delete { key: score_row(key, o, member).into() });
    }
    ops.push(WriteOp::Put { key: member_row(key, member).into(), value: encode_score(new).into() });
    ops.push(WriteOp::Put { key: score_row(key, new, member).into(), value: Vec::new().into() });
}

fn del_ops(key: &[u8], member: &[u8], score: f64, ops: &mut Vec<WriteOp>) {
    ops.push(WriteOp::Delete { key: member_row(key, member).into() });
    ops.push(WriteOp::Delete { key: score_row(key, score, member).into() });
}

async fn commit(
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
/// skipping `offset`, at most `limit` (None: all).
async fn scan_scores(
    db: &Db<'_>,
    start: Vec<u8>,
    end: Option<Vec<u8>>,
    reverse: bool,
    offset: usize,
    limit: Option<usize>,
) -> NodeResult<Vec<(Vec<u8>, f64)>> {
    let mut out = Vec::new();
    let mut skipped = 0;
    db.visit_rows(start, end, reverse, |row, _| {
        if skipped < offset {
            skipped += 1;
            return Ok(true);
        }
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

/// A score bound: `1.5`, `(1.5` (exclusive), `-inf`, `+inf`.
fn parse_score_bound(arg: &[u8]) -> Option<(f64, bool)> {
    match arg.strip_prefix(b"(") {
        Some(rest) => Some((parse_f64(rest)?, true)),
        None => Some((parse_f64(arg)?, false)),
    }
}

/// Row bounds `[start, end)` for scores between `min` and `max`. The rows
/// at one score are a tuple prefix: they end before that prefix followed by
/// `0xFF`, where a greater non-integral score in the same integer interval
/// begins (so a byte-prefix end would skip from `(1` past `1.5`).
fn score_range(key: &[u8], min: (f64, bool), max: (f64, bool)) -> (Vec<u8>, Option<Vec<u8>>) {
    use monotable_proto::keys::tuple_prefix_end;
    let lo = score_bound(key, norm(min.0));
    let start = if min.1 { tuple_prefix_end(&lo).unwrap_or(lo) } else { lo };
    let hi = score_bound(key, norm(max.0));
    let end = if max.1 { hi } else { tuple_prefix_end(&hi).unwrap_or(hi) };
    (start, Some(end))
}

/// A lex bound: `[a`, `(a`, `-`, `+`.
enum Lex {
    Min,
    Max,
    At(Vec<u8>, bool),
}

fn parse_lex(arg: &[u8]) -> Option<Lex> {
    match arg.split_first()? {
        (b'-', []) => Some(Lex::Min),
        (b'+', []) => Some(Lex::Max),
        (b'[', rest) => Some(Lex::At(rest.to_vec(), false)),
        (b'(', rest) => Some(Lex::At(rest.to_vec(), true)),
        _ => None,
    }
}

fn in_lex(m: &[u8], min: &Lex, max: &Lex) -> bool {
    let above = match min {
        Lex::Min => true,
        Lex::Max => false,
        Lex::At(v, excl) => {
            if *excl {
                m > v.as_slice()
            } else {
                m >= v.as_slice()
            }
        }
    };
    let below = match max {
        Lex::Max => true,
        Lex::Min => false,
        Lex::At(v, excl) => {
            if *excl {
                m < v.as_slice()
            } else {
                m <= v.as_slice()
            }
        }
    };
    above && below
}

fn with_scores(items: Vec<(Vec<u8>, f64)>, scores: bool, proto: u8) -> Reply {
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
    let writes = command.has(Flag::Write);
    let _g = if writes { Some(state.lock(dbi, &[&args[1]]).await) } else { None };
    self::command(db, proto, command.name, args).await
}

async fn command(db: &Db<'_>, proto: u8, name: &str, args: &[Vec<u8>]) -> NodeResult<Reply> {
    let key = &args[1];
    match name {
        "zadd" => return zadd(db, args).await,
        "zincrby" => {
            let Some(by) = parse_f64(&args[2]) else {
                return Ok(Reply::err("ERR value is not a valid float"));
            };
            let before = or_reply!(zset(db, key).await?);
            let old = if before.is_some() { score_of(db, key, &args[3]).await? } else { None };
            let new = norm(old.unwrap_or(0.0) + by);
            if new.is_nan() {
                return Ok(Reply::err("ERR resulting score is not a number (NaN)"));
            }
            let mut ops = Vec::new();
            set_ops(key, &args[3], old, new, &mut ops);
            let count = before.as_ref().map_or(0, |b| b.count) + u64::from(old.is_none());
            commit(db, key, before.as_ref(), count, ops).await?;
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
        "zrange" | "zrangebyscore" | "zrevrange" | "zrevrangebyscore" => Reply::Array(Vec::new()),
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
            // Rows before this member's: O(rank).
            let prefix = score_prefix(key);
            let end = score_row(key, score, &args[2]);
            let before = scan_scores(db, prefix, Some(end), false, 0, None).await?.len() as i64;
            Reply::Int(if name == "zrank" { before } else { z.count as i64 - 1 - before })
        }
        "zcount" => {
            let RangeArgs::Score { min, max, .. } = range else { return Ok(Reply::err(SYNTAX)) };
            let (start, end) = score_range(key, min, max);
            Reply::Int(scan_scores(db, start, end, false, 0, None).await?.len() as i64)
        }
        "zremrangebyscore" | "zremrangebyrank" => {
            let items = select(db, key, &z, &range).await?;
            let mut ops = Vec::new();
            for (m, s) in &items {
                del_ops(key, m, *s, &mut ops);
            }
            commit(db, key, Some(&z), z.count - items.len() as u64, ops).await?;
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

enum RangeArgs {
    None,
    Rank {
        start: i64,
        stop: i64,
        rev: bool,
        scores: bool,
    },
    Score {
        min: (f64, bool),
        max: (f64, bool),
        rev: bool,
        scores: bool,
        offset: usize,
        limit: Option<usize>,
    },
    Lex {
        min: Lex,
        max: Lex,
        rev: bool,
        offset: usize,
        limit: Option<usize>,
    },
}

fn parse_range_args(name: &str, args: &[Vec<u8>]) -> Result<RangeArgs, Reply> {
    let upper = |a: &Vec<u8>| String::from_utf8_lossy(a).to_ascii_uppercase();
    match name {
        "zcount" | "zremrangebyscore" => {
            let (Some(min), Some(max)) = (parse_score_bound(&args[2]), parse_score_bound(&args[3]))
            else {
                return Err(Reply::err("ERR min or max is not a float"));
            };
            Ok(RangeArgs::Score { min, max, rev: false, scores: false, offset: 0, limit: None })
        }
        "zremrangebyrank" => {
            let (Some(start), Some(stop)) = (parse_i64(&args[2]), parse_i64(&args[3])) else {
                return Err(Reply::err(NOT_INTEGER));
            };
            Ok(RangeArgs::Rank { start, stop, rev: false, scores: false })
        }
        "zrange" | "zrangebyscore" | "zrevrange" | "zrevrangebyscore" => {
            let (mut by_score, mut by_lex, mut rev, mut scores) =
                (name.ends_with("byscore"), false, name.starts_with("zrev"), false);
            let mut limit: Option<(i64, i64)> = None;
            let mut i = 4;
            while i < args.len() {
                match upper(&args[i]).as_str() {
                    "WITHSCORES" => scores = true,
                    "BYSCORE" if name == "zrange" => by_score = true,
                    "BYLEX" if name == "zrange" => by_lex = true,
                    "REV" if name == "zrange" => rev = true,
                    "LIMIT" if i + 2 < args.len() => {
                        let (Some(o), Some(c)) = (parse_i64(&args[i + 1]), parse_i64(&args[i + 2]))
                        else {
                            return Err(Reply::err(NOT_INTEGER));
                        };
                        limit = Some((o, c));
                        i += 2;
                    }
                    _ => return Err(Reply::err(SYNTAX)),
                }
                i += 1;
            }
            if by_score && by_lex {
                return Err(Reply::err(SYNTAX));
            }
            if limit.is_some() && !by_score && !by_lex {
                return Err(Reply::err(
                    "ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX",
                ));
            }
            if by_lex && scores {
                return Err(Reply::err(
                    "ERR syntax error, WITHSCORES not supported in combination with BYLEX",
                ));
            }
            // ZREVRANGEBYSCORE and ZRANGE ... REV take max first.
            let (a, b) = if rev && (by_score || by_lex) {
                (&args[3], &args[2])
            } else {
                (&args[2], &args[3])
            };
            let (offset, count) = match limit {
                Some((o, _)) if o < 0 => return Ok(RangeArgs::None),
                Some((o, c)) => (o as usize, (c >= 0).then_some(c as usize)),
                None => (0, None),
            };
            if by_score {
                let (Some(min), Some(max)) = (parse_score_bound(a), parse_score_bound(b)) else {
                    return Err(Reply::err("ERR min or max is not a float"));
                };
                Ok(RangeArgs::Score { min, max, rev, scores, offset, limit: count })
            } else if by_lex {
                let (Some(min), Some(max)) = (parse_lex(a), parse_lex(b)) else {
                    return Err(Reply::err("ERR min or max not valid string range item"));
                };
                Ok(RangeArgs::Lex { min, max, rev, offset, limit: count })
            } else {
                let (Some(start), Some(stop)) = (parse_i64(a), parse_i64(b)) else {
                    return Err(Reply::err(NOT_INTEGER));
                };
                Ok(RangeArgs::Rank { start, stop, rev, scores })
            }
        }
        _ => Ok(RangeArgs::None),
    }
}

/// The members a range selects, in the order to reply.
async fn select(
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
            let all = scan_scores(db, prefix, prefix_end, *rev, 0, None).await?;
            Ok(all
                .into_iter()
                .filter(|(m, _)| in_lex(m, min, max))
                .skip(*offset)
                .take(limit.unwrap_or(usize::MAX))
                .collect())
        }
    }
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
        let Some(score) = parse_f64(&p[0]) else {
            return Ok(Reply::err("ERR value is not a valid float"));
        };
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
        assert_eq!(format_double(-0.0), "0");
        assert_eq!(format_double(3.0000000000000004), "3.0000000000000004");
        assert_eq!(format_double(0.0001), "0.0001");
        assert_eq!(format_double(12345678901234567.0), "12345678901234568");
        assert_eq!(format_double(99999999999999999.0), "1e+17");
    }
}
