//! The range arguments of the Z*RANGE* commands (ZRANGE and its older
//! forms, ZRANGESTORE, ZCOUNT, ZLEXCOUNT, ZREMRANGEBY*), parsed with Redis
//! 7.0's words and in its order, and the walk Redis makes over a lex
//! range. Plain functions: the rows are read in [`super::zsets`].

use super::args::{parse_bound_f64, parse_i64, NOT_INTEGER};
use super::errors::SYNTAX;
use super::reply::Reply;
use super::zsets::{norm, score_bound};

/// A score bound: `1.5`, `(1.5` (exclusive), `-inf`, `+inf`.
fn parse_score_bound(arg: &[u8]) -> Option<(f64, bool)> {
    match arg.strip_prefix(b"(") {
        Some(rest) => Some((parse_bound_f64(rest)?, true)),
        None => Some((parse_bound_f64(arg)?, false)),
    }
}

/// Row bounds `[start, end)` for scores between `min` and `max`. The rows
/// at one score are a tuple prefix: they end before that prefix followed by
/// `0xFF`, where a greater non-integral score in the same integer interval
/// begins (so a byte-prefix end would skip from `(1` past `1.5`).
pub(super) fn score_range(
    key: &[u8],
    min: (f64, bool),
    max: (f64, bool),
) -> (Vec<u8>, Option<Vec<u8>>) {
    use monotable_proto::keys::tuple_prefix_end;
    let lo = score_bound(key, norm(min.0));
    let start = if min.1 { tuple_prefix_end(&lo).unwrap_or(lo) } else { lo };
    let hi = score_bound(key, norm(max.0));
    let end = if max.1 { hi } else { tuple_prefix_end(&hi).unwrap_or(hi) };
    (start, Some(end))
}

/// A lex bound: `[a`, `(a`, `-`, `+`.
pub(super) enum Lex {
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

/// Redis's `zslLexValueGteMin`: `m` is at or above `min`.
fn above_min(m: &[u8], min: &Lex) -> bool {
    match min {
        Lex::Min => true,
        Lex::Max => false,
        Lex::At(v, true) => m > v.as_slice(),
        Lex::At(v, false) => m >= v.as_slice(),
    }
}

/// Redis's `zslLexValueLteMax`: `m` is at or below `max`.
fn below_max(m: &[u8], max: &Lex) -> bool {
    match max {
        Lex::Max => true,
        Lex::Min => false,
        Lex::At(v, true) => m < v.as_slice(),
        Lex::At(v, false) => m <= v.as_slice(),
    }
}

/// A lex range no member can be in (Redis's `sdscmplex` test: `-` and
/// `+` count as exclusive).
pub(super) fn lex_range_is_empty(min: &Lex, max: &Lex) -> bool {
    use std::cmp::Ordering::*;
    let rank = |l: &Lex| match l {
        Lex::Min => 0,
        Lex::At(..) => 1,
        Lex::Max => 2,
    };
    let cmp = match (min, max) {
        (Lex::At(a, _), Lex::At(b, _)) => a.cmp(b),
        _ => rank(min).cmp(&rank(max)),
    };
    let exclusive = |l: &Lex| !matches!(l, Lex::At(_, false));
    cmp == Greater || (cmp == Equal && (exclusive(min) || exclusive(max)))
}

/// The members of a lex range, from `all` (every member in score order),
/// as Redis 7.0 walks a small sorted set (a listpack): from the first
/// member at or above `min` (reverse: the last at or below `max`), which
/// must be within the other bound too; `offset` members skipped unchecked;
/// then members while they stay within the far bound. With one score for
/// all, that is the plain lex range; with mixed scores it is Redis's
/// answer for sets of up to 128 members.
pub(super) fn lex_select(
    all: &[(Vec<u8>, f64)],
    min: &Lex,
    max: &Lex,
    rev: bool,
    offset: usize,
    limit: Option<usize>,
) -> Vec<(Vec<u8>, f64)> {
    let (Some(first), Some(last)) = (all.first(), all.last()) else { return Vec::new() };
    if lex_range_is_empty(min, max) || !above_min(&last.0, min) || !below_max(&first.0, max) {
        return Vec::new();
    }
    let start = if rev {
        all.iter().rposition(|(m, _)| below_max(m, max)).filter(|&i| above_min(&all[i].0, min))
    } else {
        all.iter().position(|(m, _)| above_min(m, min)).filter(|&i| below_max(&all[i].0, max))
    };
    let Some(start) = start else { return Vec::new() };
    let walk: Box<dyn Iterator<Item = &(Vec<u8>, f64)>> =
        if rev { Box::new(all[..=start].iter().rev()) } else { Box::new(all[start..].iter()) };
    walk.skip(offset)
        .take(limit.unwrap_or(usize::MAX))
        .take_while(|(m, _)| if rev { above_min(m, min) } else { below_max(m, max) })
        .cloned()
        .collect()
}

/// A parsed range of a Z*RANGE* command, its options included.
pub(super) enum RangeArgs {
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

pub(super) fn parse_range_args(name: &str, args: &[Vec<u8>]) -> Result<RangeArgs, Reply> {
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
        "zlexcount" | "zremrangebylex" => {
            let (Some(min), Some(max)) = (parse_lex(&args[2]), parse_lex(&args[3])) else {
                return Err(Reply::err("ERR min or max not valid string range item"));
            };
            Ok(RangeArgs::Lex { min, max, rev: false, offset: 0, limit: None })
        }
        // ZRANGESTORE's arguments come here without the destination.
        "zrange" | "zrangebyscore" | "zrevrange" | "zrevrangebyscore" | "zrangebylex"
        | "zrevrangebylex" | "zrangestore" => {
            let (mut by_score, mut by_lex, mut rev, mut scores) = (
                name.ends_with("byscore"),
                name.ends_with("bylex"),
                name.starts_with("zrev"),
                false,
            );
            // Only ZRANGE and ZRANGESTORE take BYSCORE, BYLEX and REV, once.
            let auto = name == "zrange" || name == "zrangestore";
            let mut limit: Option<(i64, i64)> = None;
            let mut i = 4;
            while i < args.len() {
                match upper(&args[i]).as_str() {
                    "WITHSCORES" if name != "zrangestore" => scores = true,
                    "BYSCORE" if auto && !by_score && !by_lex => by_score = true,
                    "BYLEX" if auto && !by_score && !by_lex => by_lex = true,
                    "REV" if auto && !rev => rev = true,
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
            // Redis takes a LIMIT count of -1 for no LIMIT at all.
            if limit.is_some_and(|(_, c)| c != -1) && !by_score && !by_lex {
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
            // A negative offset selects nothing, once the range is valid.
            let (offset, count) = match limit {
                Some((o, c)) => (usize::try_from(o).ok(), usize::try_from(c).ok()),
                None => (Some(0), None),
            };
            if by_score {
                let (Some(min), Some(max)) = (parse_score_bound(a), parse_score_bound(b)) else {
                    return Err(Reply::err("ERR min or max is not a float"));
                };
                let Some(offset) = offset else { return Ok(RangeArgs::None) };
                Ok(RangeArgs::Score { min, max, rev, scores, offset, limit: count })
            } else if by_lex {
                let (Some(min), Some(max)) = (parse_lex(a), parse_lex(b)) else {
                    return Err(Reply::err("ERR min or max not valid string range item"));
                };
                let Some(offset) = offset else { return Ok(RangeArgs::None) };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lex_ranges_walk_members_in_score_order_as_redis_does() {
        let all: Vec<(Vec<u8>, f64)> =
            [("b", 1.0), ("a", 2.0), ("c", 3.0), ("d", 3.0)].map(|(m, s)| (m.into(), s)).into();
        let lex = |a: &str| parse_lex(a.as_bytes()).expect("a lex bound");
        let names = |v: Vec<(Vec<u8>, f64)>| -> Vec<String> {
            v.into_iter().map(|(m, _)| String::from_utf8(m).expect("utf8")).collect()
        };
        // From "b" (the first at or above "[b"), while at or below "[c":
        // "a" too, though it is below "b".
        assert_eq!(
            names(lex_select(&all, &lex("[b"), &lex("[c"), false, 0, None)),
            ["b", "a", "c"]
        );
        // The first member is past the far bound: nothing.
        assert_eq!(
            names(lex_select(&all, &lex("-"), &lex("(b"), false, 0, None)),
            Vec::<String>::new()
        );
        assert_eq!(names(lex_select(&all, &lex("[c"), &lex("+"), true, 0, None)), ["d", "c"]);
        // The offset skips members without checking them.
        assert_eq!(names(lex_select(&all, &lex("-"), &lex("+"), false, 1, Some(2))), ["a", "c"]);
        assert!(lex_select(&all, &lex("-"), &lex("-"), false, 0, None).is_empty());
        assert!(lex_select(&all, &lex("(a"), &lex("[a"), false, 0, None).is_empty());
    }
}
