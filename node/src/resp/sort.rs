//! SORT and SORT_RO, as Redis 7.0's `sort.c`:
//!
//! `SORT key [BY pattern] [LIMIT offset count] [GET pattern ...] [ASC|DESC]
//! [ALPHA] [STORE destination]` sorts the elements of a list, set or sorted
//! set numerically (each read with C's `strtod`: "One or more scores can't
//! be converted into double" otherwise, ties broken by the elements'
//! bytes) or, with ALPHA, by their bytes; by the elements themselves or by
//! the strings (or, `pattern->field`, hash fields) whose key is the BY
//! pattern with its first `*` replaced by the element (a missing one sorts
//! as 0, or first with ALPHA). A BY pattern without `*` does not sort:
//! lists and sorted sets keep their order (DESC reverses it), a set comes
//! in member order. GET returns, for each element, the string (or hash
//! field) its pattern names, `#` the element itself, nil when missing.
//! STORE writes the result as a list (missing GETs as empty strings) and
//! answers its length, deleting the destination when it is empty.
//!
//! ALPHA compares bytes up to a NUL byte, as Redis does in the C locale
//! (`strcoll` is then `strcmp`; Redis under another `LC_COLLATE` orders by
//! it), and whole values with STORE (its `compareStringObjects`). The source and
//! destination are locked for the command; keys that BY and GET patterns
//! name are read as they are when reached, not locked.

use monotable_proto::WriteOp;

use super::args::{integer, lower, parse_sort_f64};
use super::errors::{SYNTAX, WRONGTYPE};
use super::keyspace::{
    decode_field, encode_field, key_row, list_payload, list_row, Db, Value, KIND_HASH, KIND_LIST,
    KIND_SET, KIND_STRING, KIND_ZSET,
};
use super::reply::Reply;
use super::state::RespState;
use crate::error::NodeResult;

/// SORT's arguments, parsed.
#[derive(Debug, Default, PartialEq)]
struct Options {
    desc: bool,
    alpha: bool,
    /// LIMIT's offset and count (`0, -1`: all).
    limit: (i64, i64),
    store: Option<Vec<u8>>,
    by: Option<Vec<u8>>,
    /// A BY pattern without `*`: nothing to sort by.
    dontsort: bool,
    gets: Vec<Vec<u8>>,
}

/// Parses the options after the key, as `sortCommandGeneric` (the last of
/// a repeated option wins; SORT_RO has no STORE).
fn parse(args: &[Vec<u8>], readonly: bool) -> Result<Options, Reply> {
    let mut o = Options { limit: (0, -1), ..Options::default() };
    let mut j = 2;
    while j < args.len() {
        let left = args.len() - j - 1;
        match lower(&args[j]).as_str() {
            "asc" => o.desc = false,
            "desc" => o.desc = true,
            "alpha" => o.alpha = true,
            "limit" if left >= 2 => {
                o.limit = (integer(&args[j + 1])?, integer(&args[j + 2])?);
                j += 2;
            }
            "store" if left >= 1 && !readonly => {
                o.store = Some(args[j + 1].clone());
                j += 1;
            }
            "by" if left >= 1 => {
                o.by = Some(args[j + 1].clone());
                o.dontsort = !c_str(&args[j + 1]).contains(&b'*');
                j += 1;
            }
            "get" if left >= 1 => {
                o.gets.push(args[j + 1].clone());
                j += 1;
            }
            _ => return Err(Reply::err(SYNTAX)),
        }
        j += 1;
    }
    Ok(o)
}

/// The bytes C's string functions see: up to the first NUL.
fn c_str(b: &[u8]) -> &[u8] {
    b.iter().position(|&c| c == 0).map_or(b, |n| &b[..n])
}

/// Runs SORT or SORT_RO, its arity checked.
pub async fn run(
    state: &RespState,
    dbi: u32,
    db: &Db<'_>,
    name: &str,
    args: &[Vec<u8>],
    reads_every_key: bool,
) -> NodeResult<Reply> {
    let mut o = or_reply!(parse(args, name == "sort_ro"));
    if !reads_every_key {
        if o.by.is_some() && !o.dontsort {
            return Ok(Reply::err(
                "ERR BY option of SORT denied due to insufficient ACL permissions.",
            ));
        }
        if !o.gets.is_empty() {
            return Ok(Reply::err(
                "ERR GET option of SORT denied due to insufficient ACL permissions.",
            ));
        }
    }
    let mut keys = vec![(dbi, args[1].as_slice(), false)];
    if let Some(dest) = &o.store {
        keys.push((dbi, dest.as_slice(), true));
    }
    let _g = state.lock_keys(&keys).await;
    let source = match db.get(&args[1]).await? {
        Some(v) if ![KIND_LIST, KIND_SET, KIND_ZSET].contains(&v.kind) => {
            return Ok(Reply::err(WRONGTYPE))
        }
        v => v,
    };
    let kind = source.as_ref().map_or(KIND_LIST, |v| v.kind);
    let len = source.as_ref().map_or(0, |v| v.count() as i64);
    if o.dontsort && kind == KIND_SET && o.store.is_some() {
        // Redis sorts a set then, so what is stored does not depend on
        // its hash table's order.
        o = Options { dontsort: false, alpha: true, by: None, ..o };
    }
    // LIMIT as Redis clamps it.
    let mut start = o.limit.0.max(0);
    let mut end = if o.limit.1 < 0 { len - 1 } else { start.saturating_add(o.limit.1) - 1 };
    if start >= len {
        start = len - 1;
        end = len - 2;
    }
    end = end.min(len - 1);
    let ranged = o.dontsort && kind != KIND_SET;
    let mut vector: Vec<Vec<u8>> = match source {
        None => Vec::new(),
        Some(_) if ranged => {
            // In the key's own order (DESC from its end): only the range.
            let all = ordered(db, kind, &args[1]).await?;
            let picked: Vec<Vec<u8>> = if end < start {
                Vec::new()
            } else if o.desc {
                all.into_iter()
                    .rev()
                    .skip(start as usize)
                    .take((end - start + 1) as usize)
                    .collect()
            } else {
                all.into_iter().skip(start as usize).take((end - start + 1) as usize).collect()
            };
            start = 0;
            end = picked.len() as i64 - 1;
            picked
        }
        Some(_) => ordered(db, kind, &args[1]).await?,
    };
    if !o.dontsort {
        match sort_keys(db, &o, &vector).await? {
            Some(by) => {
                let mut pairs: Vec<(SortBy, Vec<u8>)> = by.into_iter().zip(vector).collect();
                pairs.sort_by(|a, b| {
                    let cmp = compare(&a.0, &a.1, &b.0, &b.1, o.store.is_some());
                    if o.desc {
                        cmp.reverse()
                    } else {
                        cmp
                    }
                });
                vector = pairs.into_iter().map(|p| p.1).collect();
            }
            None => return Ok(Reply::err("ERR One or more scores can't be converted into double")),
        }
    }
    // The range was clamped by the key's count; its rows decide (a count
    // that disagrees with them must not panic).
    let end = end.min(vector.len() as i64 - 1);
    let picked: &[Vec<u8>] = if end >= start {
        vector.get(start as usize..=end as usize).unwrap_or_default()
    } else {
        &[]
    };
    let mut out: Vec<Option<Vec<u8>>> = Vec::with_capacity(picked.len() * o.gets.len().max(1));
    for element in picked {
        if o.gets.is_empty() {
            out.push(Some(element.clone()));
        }
        for pattern in &o.gets {
            out.push(lookup(db, pattern, element).await?);
        }
    }
    let Some(dest) = &o.store else {
        return Ok(Reply::Array(
            out.into_iter().map(|v| v.map_or(Reply::Null, Reply::Bulk)).collect(),
        ));
    };
    let n = out.len();
    let old = db.get(dest).await?;
    let mut ops = match &old {
        Some(old) => db.remove_ops(dest, old).await?,
        None => Vec::new(),
    };
    if n > 0 {
        let head =
            Value { kind: KIND_LIST, expire_at_ms: None, payload: list_payload(n as u64, 0) };
        ops.push(WriteOp::Put { key: key_row(dest).into(), value: head.encode().into() });
        for (i, v) in out.into_iter().enumerate() {
            let element = encode_field(&v.unwrap_or_default());
            ops.push(WriteOp::Put { key: list_row(dest, i as i64).into(), value: element.into() });
        }
    }
    if !ops.is_empty() {
        db.write(super::keyspace::last_op_per_row(ops)).await?;
    }
    if n > 0 {
        db.notify(super::notify::LIST, "sortstore", dest);
    } else if old.is_some() {
        db.notify(super::notify::GENERIC, "del", dest);
    }
    Ok(Reply::Int(n as i64))
}

/// A collection's elements in its own order: a list's from the head, a
/// sorted set's by score, a set's by member.
async fn ordered(db: &Db<'_>, kind: u8, key: &[u8]) -> NodeResult<Vec<Vec<u8>>> {
    Ok(match kind {
        KIND_LIST => {
            let rows =
                db.rows_with_prefix(&super::keyspace::element_prefix(KIND_LIST, key)).await?;
            rows.into_iter().map(|(_, v)| decode_field(&v)).collect::<NodeResult<_>>()?
        }
        KIND_ZSET => {
            let rows = db.rows_with_prefix(&super::zsets::score_prefix(key)).await?;
            rows.into_iter()
                .map(|(row, _)| super::zsets::parse_score_row(&row).map(|(_, m)| m))
                .collect::<NodeResult<_>>()?
        }
        _ => db.elements(KIND_SET, key).await?.into_iter().map(|(m, _)| m).collect(),
    })
}

/// What one element sorts by.
enum SortBy {
    Score(f64),
    /// ALPHA by a pattern: what it found (`None`: nothing).
    Bytes(Option<Vec<u8>>),
    /// ALPHA without BY: the element itself.
    Element,
}

/// What each element of `vector` sorts by; `None` when a numeric sort
/// meets a value that is not a number.
async fn sort_keys(
    db: &Db<'_>,
    o: &Options,
    vector: &[Vec<u8>],
) -> NodeResult<Option<Vec<SortBy>>> {
    let mut out = Vec::with_capacity(vector.len());
    for element in vector {
        let by = match &o.by {
            Some(pattern) => lookup(db, pattern, element).await?,
            None => Some(element.clone()),
        };
        out.push(match (o.alpha, o.by.is_some(), by) {
            (true, false, _) => SortBy::Element,
            (true, true, found) => SortBy::Bytes(found),
            (false, _, None) => SortBy::Score(0.0),
            (false, _, Some(v)) => match parse_sort_f64(&v) {
                Some(x) => SortBy::Score(x),
                None => return Ok(None),
            },
        });
    }
    Ok(Some(out))
}

/// `sortCompare`, ascending. ALPHA compares as `strcoll` in the C locale
/// (up to a NUL byte), or whole byte strings when storing, as Redis.
fn compare(a: &SortBy, ae: &[u8], b: &SortBy, be: &[u8], store: bool) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let alpha = |x: &[u8], y: &[u8]| if store { x.cmp(y) } else { c_str(x).cmp(c_str(y)) };
    match (a, b) {
        (SortBy::Score(x), SortBy::Score(y)) => {
            x.partial_cmp(y).unwrap_or(Ordering::Equal).then_with(|| ae.cmp(be))
        }
        (SortBy::Bytes(x), SortBy::Bytes(y)) => match (x, y) {
            (Some(x), Some(y)) => alpha(x, y),
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Less,
            (Some(_), None) => Ordering::Greater,
        },
        _ => alpha(ae, be),
    }
}

/// `lookupKeyByPattern`: `#` is the element; otherwise the pattern's first
/// `*` (before any NUL) is replaced by the element, and the key found must
/// hold a string, or with `->field` (a non-empty field after the `*`) a
/// hash whose field is read. `None` when there is no `*` or nothing there.
async fn lookup(db: &Db<'_>, pattern: &[u8], element: &[u8]) -> NodeResult<Option<Vec<u8>>> {
    let c = c_str(pattern);
    if c == b"#" {
        return Ok(Some(element.to_vec()));
    }
    let Some(star) = c.iter().position(|&b| b == b'*') else { return Ok(None) };
    let field = c[star + 1..]
        .windows(2)
        .position(|w| w == b"->")
        .map(|at| star + 1 + at)
        .filter(|&f| c.get(f + 2).is_some())
        .map(|f| &pattern[f + 2..]);
    let suffix_end = pattern.len() - field.map_or(0, |f| f.len() + 2);
    let mut key = Vec::with_capacity(pattern.len() + element.len());
    key.extend_from_slice(&pattern[..star]);
    key.extend_from_slice(element);
    key.extend_from_slice(&pattern[star + 1..suffix_end]);
    Ok(match (db.get(&key).await?, field) {
        (Some(v), None) if v.kind == KIND_STRING => Some(v.payload),
        (Some(v), Some(f)) if v.kind == KIND_HASH => {
            db.element(KIND_HASH, &key, f).await?.map(|v| decode_field(&v)).transpose()?
        }
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<Vec<u8>> {
        line.split(' ').map(|w| w.as_bytes().to_vec()).collect()
    }

    #[test]
    fn options_parse_as_redis() {
        let o = parse(&args("sort k BY w_* LIMIT 1 2 GET # GET o_* DESC ALPHA STORE d"), false)
            .expect("parses");
        assert_eq!(o.by.as_deref(), Some(&b"w_*"[..]));
        assert!(!o.dontsort && o.desc && o.alpha);
        assert_eq!(o.limit, (1, 2));
        assert_eq!(o.gets, vec![b"#".to_vec(), b"o_*".to_vec()]);
        assert_eq!(o.store.as_deref(), Some(&b"d"[..]));
        assert!(parse(&args("sort k BY nosort"), false).expect("parses").dontsort);
        assert_eq!(parse(&args("sort k STORE d"), true), Err(Reply::err(SYNTAX)));
        assert_eq!(parse(&args("sort k LIMIT 1"), false), Err(Reply::err(SYNTAX)));
        assert_eq!(
            parse(&args("sort k LIMIT a 1"), false),
            Err(Reply::err(super::super::args::NOT_INTEGER))
        );
        assert_eq!(parse(&args("sort k GET"), false), Err(Reply::err(SYNTAX)));
    }

    #[test]
    fn numbers_compare_then_bytes() {
        use std::cmp::Ordering::*;
        let s = SortBy::Score;
        assert_eq!(compare(&s(1.0), b"b", &s(2.0), b"a", false), Less);
        assert_eq!(compare(&s(1.0), b"b", &s(1.0), b"a", false), Greater);
        let none = SortBy::Bytes(None);
        assert_eq!(compare(&none, b"z", &SortBy::Bytes(Some(b"a".to_vec())), b"a", false), Less);
        assert_eq!(parse_sort_f64(b""), Some(0.0));
        assert_eq!(parse_sort_f64(b" 0x10"), Some(16.0));
        assert_eq!(parse_sort_f64(b"1\0x"), Some(1.0));
        assert_eq!(parse_sort_f64(b"1e400"), None);
        assert_eq!(parse_sort_f64(b"nan"), None);
        assert_eq!(parse_sort_f64(b"1 "), None);
    }
}
