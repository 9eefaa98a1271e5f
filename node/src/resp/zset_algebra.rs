//! Sorted set commands over several keys: ZUNION, ZINTER, ZDIFF (and
//! their *STORE forms), ZINTERCARD, ZMPOP and ZRANGESTORE. Each locks
//! every key it reads or writes in one call (only the written ones count
//! as modified for WATCH), checks its arguments in Redis 7.0's order, and
//! reads a set as a sorted set whose scores are all 1, as Redis does.
//!
//! The arithmetic ([`combine`]) is a plain function over members and
//! scores, so it is tested without a database.

use std::collections::HashMap;

use monotable_proto::WriteOp;

use super::args::{parse_f64, parse_i64, NOT_INTEGER};
use super::errors::{SYNTAX, WRONGTYPE};
use super::keyspace::{
    encode_score, key_row, score_row, zset_member_row, Db, Value, KIND_SET, KIND_ZSET,
};
use super::reply::Reply;
use super::state::RespState;
use super::zsets::{self, norm, with_scores};
use crate::error::NodeResult;

/// Whether this module runs the command named `name`.
pub fn handles(name: &str) -> bool {
    matches!(
        name,
        "zunion"
            | "zinter"
            | "zdiff"
            | "zintercard"
            | "zunionstore"
            | "zinterstore"
            | "zdiffstore"
            | "zmpop"
            | "zrangestore"
    )
}

/// How scores of one member in several inputs combine (AGGREGATE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    Sum,
    Min,
    Max,
}

/// Which set operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Union,
    Inter,
    Diff,
}

/// Redis's `zunionInterAggregate`: a NaN sum (inf + -inf) is 0; MIN and
/// MAX keep the target when `val` is NaN.
fn aggregate(target: &mut f64, val: f64, agg: Aggregate) {
    match agg {
        Aggregate::Sum => {
            *target += val;
            if target.is_nan() {
                *target = 0.0;
            }
        }
        Aggregate::Min => *target = if val < *target { val } else { *target },
        Aggregate::Max => *target = if val > *target { val } else { *target },
    }
}

/// One input: its members with scores (in any order) and its weight.
pub struct Input {
    pub members: Vec<(Vec<u8>, f64)>,
    pub weight: f64,
}

/// The result of `op` over `inputs` (in key order), sorted by score then
/// member bytes, as Redis computes it: union and intersection take the
/// inputs from the smallest to the largest (a stable order for ties) and
/// fold each member's weighted scores in that order, so float sums round
/// the same; a weighted score that is NaN (0 * inf) counts as 0 (in an
/// intersection, only the first input's). A difference keeps the first
/// input's members found in no other, with their scores.
pub fn combine(op: Op, mut inputs: Vec<Input>, agg: Aggregate) -> Vec<(Vec<u8>, f64)> {
    let mut out: Vec<(Vec<u8>, f64)> = Vec::new();
    if inputs.is_empty() {
        return out;
    }
    match op {
        Op::Diff => {
            let first = inputs.remove(0);
            let others: Vec<HashMap<&[u8], f64>> = inputs
                .iter()
                .map(|i| i.members.iter().map(|(m, s)| (m.as_slice(), *s)).collect())
                .collect();
            for (m, s) in first.members {
                if !others.iter().any(|o| o.contains_key(m.as_slice())) {
                    out.push((m, s));
                }
            }
        }
        Op::Inter => {
            inputs.sort_by_key(|i| i.members.len());
            let lookups: Vec<HashMap<&[u8], f64>> = inputs[1..]
                .iter()
                .map(|i| i.members.iter().map(|(m, s)| (m.as_slice(), *s)).collect())
                .collect();
            'member: for (m, s) in &inputs[0].members {
                let mut score = inputs[0].weight * s;
                if score.is_nan() {
                    score = 0.0;
                }
                for (j, lookup) in lookups.iter().enumerate() {
                    let Some(v) = lookup.get(m.as_slice()) else { continue 'member };
                    aggregate(&mut score, v * inputs[j + 1].weight, agg);
                }
                out.push((m.clone(), score));
            }
        }
        Op::Union => {
            inputs.sort_by_key(|i| i.members.len());
            let mut acc: HashMap<Vec<u8>, f64> = HashMap::new();
            for input in inputs {
                for (m, s) in input.members {
                    let mut score = input.weight * s;
                    if score.is_nan() {
                        score = 0.0;
                    }
                    match acc.get_mut(&m) {
                        Some(t) => aggregate(t, score, agg),
                        None => {
                            acc.insert(m, score);
                        }
                    }
                }
            }
            out = acc.into_iter().collect();
        }
    }
    // No score is NaN here; -0 and 0 tie and order by member, as in Redis.
    out.sort_by(|a, b| {
        a.1.partial_cmp(&b.1).unwrap_or(std::cmp::Ordering::Equal).then(a.0.cmp(&b.0))
    });
    out
}

/// Runs one of this module's commands (see [`handles`]).
pub async fn run(
    state: &RespState,
    dbi: u32,
    proto: u8,
    db: &Db<'_>,
    name: &str,
    args: &[Vec<u8>],
) -> NodeResult<Reply> {
    match name {
        "zmpop" => {
            let keys = match super::lists::mpop_keys(args) {
                Ok(keys) => keys,
                Err(reply) => return Ok(reply),
            };
            let refs: Vec<&[u8]> = keys.iter().map(|k| k.as_slice()).collect();
            let _g = state.lock(dbi, &refs).await;
            zmpop(db, args, &keys).await
        }
        "zrangestore" => {
            let _g = state.lock_reading(dbi, &[&args[1]], &[&args[2]]).await;
            zrangestore(db, args).await
        }
        _ => {
            let store = name.ends_with("store");
            let numkeys_at = if store { 2 } else { 1 };
            let keys = match algebra_keys(name, args, numkeys_at) {
                Ok(keys) => keys,
                Err(reply) => return Ok(reply),
            };
            let refs: Vec<&[u8]> = keys.iter().map(|k| k.as_slice()).collect();
            let written: Vec<&[u8]> = if store { vec![&args[1]] } else { Vec::new() };
            let _g = state.lock_reading(dbi, &written, &refs).await;
            algebra(db, proto, name, args, numkeys_at, &keys).await
        }
    }
}

/// The input keys of ZUNION and the like, after Redis's first checks of
/// `numkeys` (at `numkeys_at`).
fn algebra_keys(name: &str, args: &[Vec<u8>], numkeys_at: usize) -> Result<Vec<Vec<u8>>, Reply> {
    let n = parse_i64(&args[numkeys_at]).ok_or_else(|| Reply::err(NOT_INTEGER))?;
    if n < 1 {
        return Err(Reply::err(format!("ERR at least 1 input key is needed for '{name}' command")));
    }
    let available = args.len() - numkeys_at - 1;
    if n.unsigned_abs() > available as u64 {
        return Err(Reply::err(SYNTAX));
    }
    let first = numkeys_at + 1;
    Ok(args[first..first + n as usize].to_vec())
}

/// A source's kind: a sorted set, a set (scores 1) or missing (empty).
enum Source {
    Missing,
    Zset(zsets::Zset),
    Set,
}

async fn source(db: &Db<'_>, key: &[u8]) -> NodeResult<Result<Source, Reply>> {
    Ok(match db.get(key).await? {
        None => Ok(Source::Missing),
        Some(v) if v.kind == KIND_ZSET => {
            Ok(Source::Zset(zsets::Zset { count: v.count(), expire: v.expire_at_ms }))
        }
        Some(v) if v.kind == KIND_SET => Ok(Source::Set),
        Some(_) => Err(Reply::err(WRONGTYPE)),
    })
}

async fn read_source(db: &Db<'_>, key: &[u8], s: &Source) -> NodeResult<Vec<(Vec<u8>, f64)>> {
    Ok(match s {
        Source::Missing => Vec::new(),
        Source::Zset(z) => zsets::members(db, key, z).await?,
        Source::Set => {
            db.elements(KIND_SET, key).await?.into_iter().map(|(m, _)| (m, 1.0)).collect()
        }
    })
}

/// ZUNION|ZINTER|ZDIFF numkeys key... [WEIGHTS w...] [AGGREGATE SUM|MIN|MAX]
/// [WITHSCORES], ZINTERCARD numkeys key... [LIMIT n], and the *STORE forms
/// (destination first, no WITHSCORES): the keys' types are checked before
/// the options, as Redis does.
async fn algebra(
    db: &Db<'_>,
    proto: u8,
    name: &str,
    args: &[Vec<u8>],
    numkeys_at: usize,
    keys: &[Vec<u8>],
) -> NodeResult<Reply> {
    let op = match name.trim_end_matches("store") {
        "zunion" => Op::Union,
        "zdiff" => Op::Diff,
        _ => Op::Inter,
    };
    let store = name.ends_with("store");
    let card = name == "zintercard";
    let mut sources = Vec::with_capacity(keys.len());
    for k in keys {
        sources.push(or_reply!(source(db, k).await?));
    }
    let mut weights = vec![1.0; keys.len()];
    let (mut agg, mut scores, mut limit) = (Aggregate::Sum, false, 0u64);
    let mut j = numkeys_at + 1 + keys.len();
    while j < args.len() {
        let remaining = args.len() - j;
        let word = &args[j];
        if op != Op::Diff
            && !card
            && remaining > keys.len()
            && word.eq_ignore_ascii_case(b"weights")
        {
            for (i, w) in weights.iter_mut().enumerate() {
                match parse_f64(&args[j + 1 + i]) {
                    Some(x) => *w = x,
                    None => return Ok(Reply::err("ERR weight value is not a float")),
                }
            }
            j += 1 + keys.len();
        } else if op != Op::Diff
            && !card
            && remaining >= 2
            && word.eq_ignore_ascii_case(b"aggregate")
        {
            agg = match super::args::lower(&args[j + 1]).as_str() {
                "sum" => Aggregate::Sum,
                "min" => Aggregate::Min,
                "max" => Aggregate::Max,
                _ => return Ok(Reply::err(SYNTAX)),
            };
            j += 2;
        } else if !store && !card && word.eq_ignore_ascii_case(b"withscores") {
            scores = true;
            j += 1;
        } else if card && remaining >= 2 && word.eq_ignore_ascii_case(b"limit") {
            match parse_i64(&args[j + 1]) {
                Some(n) if n >= 0 => limit = n.unsigned_abs(),
                _ => return Ok(Reply::err("ERR LIMIT can't be negative")),
            }
            j += 2;
        } else {
            return Ok(Reply::err(SYNTAX));
        }
    }
    let mut inputs = Vec::with_capacity(keys.len());
    for ((k, s), weight) in keys.iter().zip(&sources).zip(weights) {
        inputs.push(Input { members: read_source(db, k, s).await?, weight });
    }
    let result = combine(op, inputs, agg);
    if card {
        let n = result.len() as u64;
        return Ok(Reply::Int((if limit > 0 { n.min(limit) } else { n }) as i64));
    }
    if store {
        let event = match name {
            "zunionstore" => "zunionstore",
            "zinterstore" => "zinterstore",
            _ => "zdiffstore",
        };
        return store_result(db, &args[1], result, event).await;
    }
    Ok(with_scores(result, scores, proto))
}

/// Replaces whatever `dst` held with a sorted set of `items` (no expiry),
/// or deletes it when `items` is empty; replies with the new size. Scores
/// are stored as Redis's small sets store them: -0 as 0. Raises `event`
/// of `dst`, or `del` when that deleted it.
pub(super) async fn store_result(
    db: &Db<'_>,
    dst: &[u8],
    items: Vec<(Vec<u8>, f64)>,
    event: &'static str,
) -> NodeResult<Reply> {
    let old = db.get(dst).await?;
    let mut puts = Vec::with_capacity(items.len() * 2 + 1);
    for (m, s) in &items {
        let s = norm(*s);
        puts.push(WriteOp::Put {
            key: zset_member_row(dst, m).into(),
            value: encode_score(s).into(),
        });
        puts.push(WriteOp::Put { key: score_row(dst, s, m).into(), value: Vec::new().into() });
    }
    if !items.is_empty() {
        let v = Value::collection(KIND_ZSET, items.len() as u64, None);
        puts.push(WriteOp::Put { key: key_row(dst).into(), value: v.encode().into() });
    }
    let mut ops = match &old {
        Some(v) => db.remove_ops(dst, v).await?,
        None => Vec::new(),
    };
    // The destination may be a source (ZUNIONSTORE a 2 a b): a row put
    // again is not deleted.
    let put_rows: std::collections::HashSet<Vec<u8>> = puts
        .iter()
        .filter_map(|op| match op {
            WriteOp::Put { key, .. } => Some(key.to_vec()),
            WriteOp::Delete { .. } => None,
        })
        .collect();
    ops.retain(|op| match op {
        WriteOp::Delete { key } => !put_rows.contains(key.as_ref()),
        WriteOp::Put { .. } => true,
    });
    ops.extend(puts);
    db.write(ops).await?;
    if !items.is_empty() {
        db.notify(super::notify::ZSET, event, dst);
    } else if old.is_some() {
        db.notify(super::notify::GENERIC, "del", dst);
    }
    Ok(Reply::Int(items.len() as i64))
}

/// ZMPOP numkeys key... MIN|MAX [COUNT n]: up to `n` members from the
/// first non-empty sorted set, as `[key, [[member, score]...]]` in both
/// protocols; a null array when every key is missing. The first key that
/// exists decides: WRONGTYPE when it is not a sorted set.
async fn zmpop(db: &Db<'_>, args: &[Vec<u8>], keys: &[Vec<u8>]) -> NodeResult<Reply> {
    let (max, count) = match zmpop_options(args, keys) {
        Ok(options) => options,
        Err(reply) => return Ok(reply),
    };
    Ok(match pop_first(db, keys, max, count).await? {
        Ok(Some((key, items))) => Reply::Array(vec![Reply::Bulk(key), with_scores(items, true, 3)]),
        Ok(None) => Reply::NullArray,
        Err(reply) => reply,
    })
}

/// ZMPOP's (and BZMPOP's) `MIN|MAX [COUNT count]` after `keys`: whether
/// the highest, and how many.
pub(super) fn zmpop_options(args: &[Vec<u8>], keys: &[Vec<u8>]) -> Result<(bool, u64), Reply> {
    let where_at = 2 + keys.len();
    let max = match super::args::lower(&args[where_at]).as_str() {
        "min" => false,
        "max" => true,
        _ => return Err(Reply::err(SYNTAX)),
    };
    let mut count = None;
    let mut j = where_at + 1;
    while j < args.len() {
        let more = j + 1 < args.len();
        if count.is_none() && more && args[j].eq_ignore_ascii_case(b"count") {
            match parse_i64(&args[j + 1]) {
                Some(n) if n >= 1 => count = Some(n.unsigned_abs()),
                _ => return Err(Reply::err("ERR count should be greater than 0")),
            }
            j += 2;
        } else {
            return Err(Reply::err(SYNTAX));
        }
    }
    Ok((max, count.unwrap_or(1)))
}

/// Pops up to `count` of the lowest (`max`: highest) members of the first
/// of `keys` that holds a sorted set: the key and its members with
/// scores; `None` when none does; WRONGTYPE for a key of another type met
/// first.
pub(super) async fn pop_first(
    db: &Db<'_>,
    keys: &[Vec<u8>],
    max: bool,
    count: u64,
) -> NodeResult<Result<Option<(Vec<u8>, Vec<(Vec<u8>, f64)>)>, Reply>> {
    for key in keys {
        let z = match zsets::zset(db, key).await? {
            Ok(Some(z)) => z,
            Ok(None) => continue,
            Err(reply) => return Ok(Err(reply)),
        };
        let items = zsets::pop(db, key, &z, max, count).await?;
        return Ok(Ok(Some((key.clone(), items))));
    }
    Ok(Ok(None))
}

/// ZRANGESTORE dst src min max [BYSCORE|BYLEX] [REV] [LIMIT offset count]:
/// the range's members with their scores into `dst` (replacing it, or
/// deleting it when the range is empty or `src` missing).
async fn zrangestore(db: &Db<'_>, args: &[Vec<u8>]) -> NodeResult<Reply> {
    let range = match super::zset_range::parse_range_args("zrangestore", &args[1..]) {
        Ok(r) => r,
        Err(reply) => return Ok(reply),
    };
    let (dst, src) = (&args[1], &args[2]);
    let items = match or_reply!(zsets::zset(db, src).await?) {
        Some(z) => zsets::select(db, src, &z, &range).await?,
        None => Vec::new(),
    };
    store_result(db, dst, items, "zrangestore").await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(members: &[(&str, f64)], weight: f64) -> Input {
        Input {
            members: members.iter().map(|(m, s)| (m.as_bytes().to_vec(), *s)).collect(),
            weight,
        }
    }

    fn names(out: &[(Vec<u8>, f64)]) -> Vec<(String, f64)> {
        out.iter().map(|(m, s)| (String::from_utf8_lossy(m).into_owned(), *s)).collect()
    }

    #[test]
    fn union_sums_weighted_scores_and_orders_by_score_then_member() {
        let out = combine(
            Op::Union,
            vec![input(&[("a", 1.0), ("b", 2.0)], 1.0), input(&[("b", 1.0), ("c", 0.5)], 2.0)],
            Aggregate::Sum,
        );
        assert_eq!(names(&out), [("a".into(), 1.0), ("c".into(), 1.0), ("b".into(), 4.0)]);
    }

    #[test]
    fn nan_from_weights_or_sums_counts_as_zero_as_in_redis() {
        let inf = f64::INFINITY;
        let out = combine(Op::Union, vec![input(&[("a", inf)], 0.0)], Aggregate::Sum);
        assert_eq!(names(&out), [("a".into(), 0.0)]);
        let out = combine(
            Op::Union,
            vec![input(&[("a", inf)], 1.0), input(&[("a", -inf)], 1.0)],
            Aggregate::Sum,
        );
        assert_eq!(names(&out), [("a".into(), 0.0)]);
        // In an intersection only the first input's NaN becomes 0; a later
        // one is skipped by MIN and MAX.
        let out = combine(
            Op::Inter,
            vec![input(&[("a", 2.0)], 1.0), input(&[("a", inf), ("b", 1.0)], 0.0)],
            Aggregate::Max,
        );
        assert_eq!(names(&out), [("a".into(), 2.0)]);
    }

    #[test]
    fn intersection_and_difference_keep_the_right_members() {
        let a = || input(&[("x", 1.0), ("y", 2.0), ("z", 3.0)], 1.0);
        let b = || input(&[("y", 5.0), ("z", -1.0)], 1.0);
        let inter = combine(Op::Inter, vec![a(), b()], Aggregate::Min);
        assert_eq!(names(&inter), [("z".into(), -1.0), ("y".into(), 2.0)]);
        let diff = combine(Op::Diff, vec![a(), b()], Aggregate::Sum);
        assert_eq!(names(&diff), [("x".into(), 1.0)]);
        assert!(combine(Op::Inter, vec![a(), input(&[], 1.0)], Aggregate::Sum).is_empty());
    }

    #[test]
    fn negative_zero_survives_a_weight_and_ties_with_zero() {
        let out = combine(Op::Union, vec![input(&[("b", 0.0), ("a", 1.0)], -1.0)], Aggregate::Sum);
        assert_eq!(names(&out), [("a".into(), -1.0), ("b".into(), 0.0)]);
        assert!(out[1].1.is_sign_negative());
    }
}
