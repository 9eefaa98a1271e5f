//! String commands: GET, SET and its variants, MGET, MSET(NX), INCR and
//! DECR by integers, APPEND, STRLEN. (Those that edit part of a string or
//! count in floats live in [`super::keys`].)

use super::args::{lower, parse_i64, NOT_INTEGER};
use super::errors::{misrouted, SYNTAX, WRONGTYPE};
use super::keyspace::{expire_at, Db, Value, KIND_STRING};
use super::notify;
use super::reply::Reply;
use super::state::RespState;
use crate::error::{NodeError, NodeResult};

const OVERFLOW: &str = "ERR increment or decrement would overflow";

/// Runs one of this module's commands, its arity checked.
pub async fn run(
    state: &RespState,
    dbi: u32,
    db: &Db<'_>,
    name: &str,
    args: &[Vec<u8>],
) -> NodeResult<Reply> {
    Ok(match name {
        "get" => match db.get(&args[1]).await? {
            None => Reply::Null,
            Some(v) if v.kind != KIND_STRING => Reply::err(WRONGTYPE),
            Some(v) => Reply::bulk(v.payload),
        },
        "set" => {
            let _g = state.lock(dbi, &[&args[1]]).await;
            set(db, args).await?
        }
        "setnx" | "setex" | "psetex" => {
            let (key, value, expire) = match name {
                "setnx" => (&args[1], &args[2], None),
                _ => {
                    let Some(t) = parse_i64(&args[2]) else { return Ok(Reply::err(NOT_INTEGER)) };
                    match expire_at(if name == "setex" { "ex" } else { "px" }, t) {
                        Some(at) => (&args[1], &args[3], Some(at)),
                        None => {
                            return Ok(Reply::err(format!(
                                "ERR invalid expire time in '{name}' command"
                            )))
                        }
                    }
                }
            };
            let _g = state.lock(dbi, &[key]).await;
            if name == "setnx" {
                if db.get(key).await?.is_some() {
                    return Ok(Reply::Int(0));
                }
                db.put(key, &Value::string(value.clone(), None)).await?;
                db.notify(notify::STRING, "set", key);
                Reply::Int(1)
            } else {
                let old = db.get(key).await?;
                db.replace(key, &Value::string(value.clone(), expire), old.as_ref()).await?;
                db.notify(notify::STRING, "set", key);
                db.notify(notify::GENERIC, "expire", key);
                Reply::ok()
            }
        }
        "getset" | "getdel" => {
            let _g = state.lock(dbi, &[&args[1]]).await;
            let old = db.get(&args[1]).await?;
            if old.as_ref().is_some_and(|v| v.kind != KIND_STRING) {
                return Ok(Reply::err(WRONGTYPE));
            }
            if name == "getset" {
                db.put(&args[1], &Value::string(args[2].clone(), None)).await?;
                db.notify(notify::STRING, "set", &args[1]);
            } else if let Some(v) = &old {
                db.remove(&args[1], v).await?;
                db.notify(notify::GENERIC, "del", &args[1]);
            }
            old.map_or(Reply::Null, |v| Reply::bulk(v.payload))
        }
        "mget" => {
            let mut out = Vec::with_capacity(args.len() - 1);
            for k in &args[1..] {
                out.push(match db.get(k).await? {
                    Some(v) if v.kind == KIND_STRING => Reply::bulk(v.payload),
                    _ => Reply::Null,
                });
            }
            Reply::Array(out)
        }
        "mset" | "msetnx" => {
            if args.len().is_multiple_of(2) {
                return Ok(Reply::wrong_arity(name));
            }
            let keys: Vec<&[u8]> = args[1..].iter().step_by(2).map(Vec::as_slice).collect();
            let _g = state.lock(dbi, &keys).await;
            if name == "msetnx" {
                for k in &keys {
                    if db.get(k).await?.is_some() {
                        return Ok(Reply::Int(0));
                    }
                }
            }
            // The last value of a key given twice wins, as in Redis.
            let mut last: std::collections::HashMap<&[u8], usize> = Default::default();
            for (i, pair) in args[1..].chunks(2).enumerate() {
                last.insert(&pair[0], i);
            }
            let items: Vec<(Vec<u8>, Value)> = args[1..]
                .chunks(2)
                .enumerate()
                .filter(|(i, pair)| last.get(pair[0].as_slice()) == Some(i))
                .map(|(_, pair)| (pair[0].clone(), Value::string(pair[1].clone(), None)))
                .collect();
            // One write: a value the storage refuses leaves every key as it was.
            let mut ops = Vec::new();
            for (k, _) in &items {
                if let Some(old) = db.get(k).await?.filter(|v| v.kind != KIND_STRING) {
                    ops.extend(db.remove_ops(k, &old).await?);
                }
            }
            ops.extend(super::keyspace::put_ops(&items));
            db.write(ops).await?;
            // One event per pair, a key given twice twice, as Redis sets
            // each in turn.
            for k in &keys {
                db.notify(notify::STRING, "set", k);
            }
            if name == "msetnx" {
                Reply::Int(1)
            } else {
                Reply::ok()
            }
        }
        "incr" | "decr" | "incrby" | "decrby" => {
            let by = match name {
                "incr" => 1,
                "decr" => -1,
                _ => match parse_i64(&args[2]) {
                    Some(b) if name == "incrby" => b,
                    Some(b) => match b.checked_neg() {
                        Some(b) => b,
                        None => return Ok(Reply::err("ERR decrement would overflow")),
                    },
                    None => return Ok(Reply::err(NOT_INTEGER)),
                },
            };
            let _g = state.lock(dbi, &[&args[1]]).await;
            let old = db.get(&args[1]).await?;
            let (current, expire) = match &old {
                None => (0, None),
                Some(v) if v.kind != KIND_STRING => return Ok(Reply::err(WRONGTYPE)),
                Some(v) => match parse_i64(&v.payload) {
                    Some(n) => (n, v.expire_at_ms),
                    None => return Ok(Reply::err(NOT_INTEGER)),
                },
            };
            let Some(next) = current.checked_add(by) else { return Ok(Reply::err(OVERFLOW)) };
            db.put(&args[1], &Value::string(next.to_string().into_bytes(), expire)).await?;
            db.notify(notify::STRING, "incrby", &args[1]);
            Reply::Int(next)
        }
        "append" => {
            let _g = state.lock(dbi, &[&args[1]]).await;
            let mut v = match db.get(&args[1]).await? {
                None => Value::string(Vec::new(), None),
                Some(v) if v.kind != KIND_STRING => return Ok(Reply::err(WRONGTYPE)),
                Some(v) => v,
            };
            if let Err(reply) = super::args::string_end(v.payload.len() as u64, args[2].len()) {
                return Ok(reply);
            }
            v.payload.extend_from_slice(&args[2]);
            db.put(&args[1], &v).await?;
            db.notify(notify::STRING, "append", &args[1]);
            Reply::Int(v.payload.len() as i64)
        }
        "strlen" => match db.get(&args[1]).await? {
            None => Reply::Int(0),
            Some(v) if v.kind != KIND_STRING => Reply::err(WRONGTYPE),
            Some(v) => Reply::Int(v.payload.len() as i64),
        },
        "lcs" => return lcs(db, args).await,
        other => return Err(misrouted(other)),
    })
}

/// SET key value [NX | XX] [GET] [EX s | PX ms | EXAT s | PXAT ms | KEEPTTL]
async fn set(db: &Db<'_>, args: &[Vec<u8>]) -> Result<Reply, NodeError> {
    let (mut nx, mut xx, mut get, mut keepttl) = (false, false, false, false);
    let mut expire: Option<u64> = None;
    let mut i = 3;
    while i < args.len() {
        let opt = lower(&args[i]);
        let next = args.get(i + 1);
        match opt.as_str() {
            "nx" if !xx => nx = true,
            "xx" if !nx => xx = true,
            "get" => get = true,
            "keepttl" if expire.is_none() => keepttl = true,
            "ex" | "px" | "exat" | "pxat" if expire.is_none() && !keepttl && next.is_some() => {
                let Some(t) = next.and_then(|n| parse_i64(n)) else {
                    return Ok(Reply::err(NOT_INTEGER));
                };
                match expire_at(&opt, t) {
                    Some(at) => expire = Some(at),
                    None => return Ok(Reply::err("ERR invalid expire time in 'set' command")),
                }
                i += 1;
            }
            _ => return Ok(Reply::err(SYNTAX)),
        }
        i += 1;
    }
    let old = db.get(&args[1]).await?;
    if get && old.as_ref().is_some_and(|v| v.kind != KIND_STRING) {
        return Ok(Reply::err(WRONGTYPE));
    }
    let old_reply = || old.clone().map_or(Reply::Null, |v| Reply::bulk(v.payload));
    if (nx && old.is_some()) || (xx && old.is_none()) {
        return Ok(if get { old_reply() } else { Reply::Null });
    }
    if keepttl {
        expire = old.as_ref().and_then(|v| v.expire_at_ms);
    }
    db.replace(&args[1], &Value::string(args[2].clone(), expire), old.as_ref()).await?;
    db.notify(notify::STRING, "set", &args[1]);
    if expire.is_some() && !keepttl {
        db.notify(notify::GENERIC, "expire", &args[1]);
    }
    Ok(if get { old_reply() } else { Reply::ok() })
}

/// Bytes of transient table LCS may use: Redis allows `proto-max-bulk-len`
/// (512 MB); a node serving many clients allows less.
pub const LCS_TABLE_MAX_BYTES: u64 = 64 << 20;

/// LCS key1 key2 [LEN] [IDX] [MINMATCHLEN len] [WITHMATCHLEN]: the
/// longest common subsequence of two strings, by Redis 7.0's dynamic
/// programming (`t_string.c` lcsCommand) and its replies: the string, its
/// length, or the matched ranges from the end.
async fn lcs(db: &Db<'_>, args: &[Vec<u8>]) -> NodeResult<Reply> {
    let (x, y) = (db.get(&args[1]).await?, db.get(&args[2]).await?);
    if [&x, &y].iter().any(|v| v.as_ref().is_some_and(|v| v.kind != KIND_STRING)) {
        return Ok(Reply::err("ERR The specified keys must contain string values"));
    }
    let a = x.map(|v| v.payload).unwrap_or_default();
    let b = y.map(|v| v.payload).unwrap_or_default();
    let (mut getlen, mut getidx, mut withmatchlen, mut minmatchlen) = (false, false, false, 0u64);
    let mut j = 3;
    while j < args.len() {
        match lower(&args[j]).as_str() {
            "idx" => getidx = true,
            "len" => getlen = true,
            "withmatchlen" => withmatchlen = true,
            "minmatchlen" if j + 1 < args.len() => {
                let Some(n) = parse_i64(&args[j + 1]) else {
                    return Ok(Reply::err(NOT_INTEGER));
                };
                minmatchlen = n.max(0) as u64;
                j += 1;
            }
            _ => return Ok(Reply::err(SYNTAX)),
        }
        j += 1;
    }
    if getlen && getidx {
        return Ok(Reply::err("ERR If you want both the length and indexes, please just use IDX."));
    }
    let (alen, blen) = (a.len(), b.len());
    let cells = (alen as u64 + 1) * (blen as u64 + 1);
    if cells * 4 > LCS_TABLE_MAX_BYTES {
        return Ok(Reply::err(
            "ERR Insufficient memory, transient memory for LCS exceeds proto-max-bulk-len",
        ));
    }
    let w = blen + 1;
    let mut t = vec![0u32; cells as usize];
    for i in 1..=alen {
        for k in 1..=blen {
            t[i * w + k] = if a[i - 1] == b[k - 1] {
                t[(i - 1) * w + k - 1] + 1
            } else {
                t[(i - 1) * w + k].max(t[i * w + k - 1])
            };
        }
    }
    let total = t[alen * w + blen];
    if getlen {
        return Ok(Reply::Int(i64::from(total)));
    }
    let mut result = vec![0u8; total as usize];
    let mut idx = total as usize;
    let mut matches = Vec::new();
    // Redis's walk back from the end, ranges as it emits them.
    let (mut astart, mut aend, mut bstart, mut bend) = (alen, 0, 0, 0);
    let (mut i, mut k) = (alen, blen);
    while i > 0 && k > 0 {
        let mut emit = false;
        if a[i - 1] == b[k - 1] {
            result[idx - 1] = a[i - 1];
            if astart == alen {
                (astart, aend, bstart, bend) = (i - 1, i - 1, k - 1, k - 1);
            } else if astart == i && bstart == k {
                astart -= 1;
                bstart -= 1;
            } else {
                emit = true;
            }
            if astart == 0 || bstart == 0 {
                emit = true;
            }
            idx -= 1;
            i -= 1;
            k -= 1;
        } else {
            if t[(i - 1) * w + k] > t[i * w + k - 1] {
                i -= 1;
            } else {
                k -= 1;
            }
            if astart != alen {
                emit = true;
            }
        }
        let match_len = aend.wrapping_sub(astart).wrapping_add(1) as u64;
        if emit {
            if getidx && (minmatchlen == 0 || match_len >= minmatchlen) {
                let mut m = vec![
                    Reply::Array(vec![Reply::Int(astart as i64), Reply::Int(aend as i64)]),
                    Reply::Array(vec![Reply::Int(bstart as i64), Reply::Int(bend as i64)]),
                ];
                if withmatchlen {
                    m.push(Reply::Int(match_len as i64));
                }
                matches.push(Reply::Array(m));
            }
            astart = alen;
        }
    }
    if getidx {
        return Ok(Reply::Map(vec![
            (Reply::bulk("matches"), Reply::Array(matches)),
            (Reply::bulk("len"), Reply::Int(i64::from(total))),
        ]));
    }
    Ok(Reply::Bulk(result))
}
