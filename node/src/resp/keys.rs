//! Commands over whole keys: listing and scanning them (also the
//! elements of one: HSCAN, SSCAN, ZSCAN), RANDOMKEY, existence (and
//! TOUCH), type, deletion, expiry, TTLs and expiry times, renaming,
//! copying (through [`super::key_copy`]), flushing, TIME, and the string commands that
//! edit parts of a value or count in floats.

use monotable_proto::WriteOp;

use super::args::{parse_i64, NOT_INTEGER};
use super::errors::{misrouted, SYNTAX, WRONGTYPE};
use super::glob;
use super::keyspace::{
    expiry_row, key_row, key_rows_prefix, now_ms, Db, Value, DATABASES, KIND_STRING,
};
use super::notify;
use super::reply::{format_double, Reply};
use super::state::RespState;
use crate::error::NodeResult;

/// Every live key with its value.
async fn live_keys(db: &Db<'_>) -> NodeResult<Vec<(Vec<u8>, Value)>> {
    let now = now_ms();
    let mut out = Vec::new();
    for (row, bytes) in db.rows_with_prefix(&key_rows_prefix()).await? {
        let Some(v) = Value::decode(&bytes) else { continue };
        if v.expire_at_ms.is_none_or(|at| at > now) {
            out.push((super::keyspace::last_bytes(&row)?, v));
        }
    }
    Ok(out)
}

/// Runs one of this module's commands, its arity checked.
pub async fn run(
    state: &RespState,
    dbi: u32,
    db: &Db<'_>,
    name: &str,
    args: &[Vec<u8>],
) -> NodeResult<Reply> {
    match name {
        "keys" => keys(db, &args[1]).await,
        "scan" => scan(db, args).await,
        // Keys not yet removed by expiry count, as in Redis; O(log n).
        "dbsize" => {
            let (start, end) = key_rows_span();
            Ok(Reply::Int(db.count_rows(&start, end.as_deref()).await? as i64))
        }
        "flushdb" | "flushall" => flush(state, db, name, dbi, args).await,
        "swapdb" => swapdb(state, db, args).await,
        "rename" | "renamenx" => {
            let _g = state.lock(dbi, &[&args[1], &args[2]]).await;
            rename(db, name, &args[1], &args[2]).await
        }
        "expire" | "pexpire" | "expireat" | "pexpireat" => {
            let _g = state.lock(dbi, &[&args[1]]).await;
            expire(db, name, args).await
        }
        "getex" => {
            let _g = state.lock(dbi, &[&args[1]]).await;
            getex(db, args).await
        }
        "incrbyfloat" => {
            let _g = state.lock(dbi, &[&args[1]]).await;
            incrbyfloat(db, args).await
        }
        "getrange" | "substr" => getrange(db, args).await,
        "hscan" | "sscan" | "zscan" => element_scan(db, name, args).await,
        "setrange" => {
            let _g = state.lock(dbi, &[&args[1]]).await;
            setrange(db, args).await
        }
        "copy" => super::key_copy::copy(state, dbi, db, args).await,
        "dump" => super::dump::dump(db, &args[1]).await,
        // A Redis Cluster node migrating keys here sends RESTORE-ASKING.
        "restore" | "restore-asking" => super::dump::restore(state, dbi, db, args).await,
        "migrate" => super::migrate::migrate(state, dbi, db, args).await,
        "move" => super::key_copy::move_key(state, dbi, db, args).await,
        "randomkey" => random_key(db).await,
        "del" | "unlink" | "exists" | "touch" | "type" | "ttl" | "pttl" | "expiretime"
        | "pexpiretime" | "persist" => generic(state, dbi, db, name, args).await,
        "time" => {
            let micros = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros());
            Ok(Reply::Array(vec![
                Reply::bulk((micros / 1_000_000).to_string()),
                Reply::bulk((micros % 1_000_000).to_string()),
            ]))
        }
        other => Err(misrouted(other)),
    }
}

/// Where the key rows lie: `[start, end)`.
fn key_rows_span() -> (Vec<u8>, Option<Vec<u8>>) {
    let prefix = super::keyspace::key_rows_prefix();
    let end = monotable_proto::keys::tuple_prefix_end(&prefix);
    (prefix, end)
}

/// RANDOMKEY: a key picked at random in O(log n). An expired one found
/// is removed and another picked, as Redis's `dbRandomKey`, up to 100
/// times (then nil: the background expirer removes the rest).
async fn random_key(db: &Db<'_>) -> NodeResult<Reply> {
    use rand::Rng;
    const TRIES: usize = 100;
    let (start, end) = key_rows_span();
    for _ in 0..TRIES {
        let count = db.count_rows(&start, end.as_deref()).await?;
        if count == 0 {
            return Ok(Reply::Null);
        }
        let n = rand::thread_rng().gen_range(0..count);
        let Some((row, _)) = db.select_row(&start, end.as_deref(), n).await? else { continue };
        let key = super::keyspace::last_bytes(&row)?;
        if db.get(&key).await?.is_some() {
            return Ok(Reply::Bulk(key));
        }
    }
    Ok(Reply::Null)
}

/// DEL, UNLINK, EXISTS, TOUCH, TYPE, TTL, PTTL, EXPIRETIME, PEXPIRETIME,
/// PERSIST.
async fn generic(
    state: &RespState,
    dbi: u32,
    db: &Db<'_>,
    name: &str,
    args: &[Vec<u8>],
) -> NodeResult<Reply> {
    Ok(match name {
        "del" | "unlink" => {
            let keys: Vec<&[u8]> = args[1..].iter().map(Vec::as_slice).collect();
            let _g = state.lock(dbi, &keys).await;
            let mut seen: std::collections::HashSet<&[u8]> = Default::default();
            // Every key's rows in one write: a crash leaves all or none.
            let (mut ops, mut found) = (Vec::new(), Vec::new());
            for k in &args[1..] {
                if !seen.insert(k) {
                    continue;
                }
                if let Some(v) = db.get(k).await? {
                    ops.extend(db.remove_ops(k, &v).await?);
                    found.push(k);
                }
            }
            db.write(ops).await?;
            for k in &found {
                db.notify(notify::GENERIC, "del", k);
            }
            Reply::Int(found.len() as i64)
        }
        "exists" | "touch" => {
            let mut n = 0;
            for k in &args[1..] {
                n += i64::from(db.get(k).await?.is_some());
            }
            Reply::Int(n)
        }
        "type" => Reply::Simple(db.get(&args[1]).await?.map_or("none", |v| v.type_name())),
        "ttl" | "pttl" => match db.get(&args[1]).await? {
            None => Reply::Int(-2),
            Some(Value { expire_at_ms: None, .. }) => Reply::Int(-1),
            Some(Value { expire_at_ms: Some(at), .. }) => {
                let left = i64::try_from(at.saturating_sub(now_ms())).unwrap_or(i64::MAX);
                Reply::Int(if name == "ttl" { left.saturating_add(500) / 1000 } else { left })
            }
        },
        "expiretime" | "pexpiretime" => match db.get(&args[1]).await? {
            None => Reply::Int(-2),
            Some(Value { expire_at_ms: None, .. }) => Reply::Int(-1),
            Some(Value { expire_at_ms: Some(at), .. }) => {
                let at = i64::try_from(at).unwrap_or(i64::MAX);
                // Redis rounds seconds to the nearest: (ms + 500) / 1000.
                Reply::Int(if name == "expiretime" { at.saturating_add(500) / 1000 } else { at })
            }
        },
        "persist" => {
            let _g = state.lock(dbi, &[&args[1]]).await;
            match db.get(&args[1]).await? {
                Some(mut v) if v.expire_at_ms.is_some() => {
                    v.expire_at_ms = None;
                    db.put(&args[1], &v).await?;
                    db.notify(notify::GENERIC, "persist", &args[1]);
                    Reply::Int(1)
                }
                _ => Reply::Int(0),
            }
        }
        other => return Err(misrouted(other)),
    })
}

async fn keys(db: &Db<'_>, pattern: &[u8]) -> NodeResult<Reply> {
    let keys = live_keys(db).await?;
    Ok(Reply::Array(
        keys.into_iter()
            .filter(|(k, _)| glob::matches_all(pattern) || glob::matches(pattern, k))
            .map(|(k, _)| Reply::Bulk(k))
            .collect(),
    ))
}

/// What a SCAN-family command asks for.
struct ScanOptions {
    cursor: u64,
    pattern: Option<Vec<u8>>,
    count: usize,
    kind: Option<String>,
}

/// Parses `cursor [MATCH pattern] [COUNT count]` (and `[TYPE type]` when
/// allowed) starting at `args[at]`.
fn scan_options(args: &[Vec<u8>], at: usize, allow_type: bool) -> Result<ScanOptions, Reply> {
    let cursor = super::args::scan_cursor(&args[at])?;
    let mut o = ScanOptions { cursor, pattern: None, count: 10, kind: None };
    let mut i = at + 1;
    while i < args.len() {
        let Some(value) = args.get(i + 1) else { return Err(Reply::err(SYNTAX)) };
        match String::from_utf8_lossy(&args[i]).to_ascii_lowercase().as_str() {
            "match" => o.pattern = Some(value.clone()),
            "count" => match parse_i64(value) {
                Some(n) if n >= 1 => o.count = n as usize,
                Some(_) => return Err(Reply::err(SYNTAX)),
                None => return Err(Reply::err(NOT_INTEGER)),
            },
            "type" if allow_type => {
                o.kind = Some(String::from_utf8_lossy(value).to_ascii_lowercase())
            }
            _ => return Err(Reply::err(SYNTAX)),
        }
        i += 2;
    }
    Ok(o)
}

/// SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]. The cursor is
/// a position in the keys' hashed order ([`Db::hashed_rows`]): any 64-bit
/// number is one, it stays good however many other scans run meanwhile,
/// and a whole iteration returns every key present from its first call
/// to its last (some maybe twice, as Redis allows).
async fn scan(db: &Db<'_>, args: &[Vec<u8>]) -> NodeResult<Reply> {
    let ScanOptions { cursor, pattern, count, kind } = match scan_options(args, 1, true) {
        Ok(o) => o,
        Err(reply) => return Ok(reply),
    };
    let (rows, next) = db.hashed_rows(&key_rows_prefix(), cursor, scan_page_rows(count)).await?;
    let now = now_ms();
    let mut found = Vec::new();
    for row in rows {
        // The pattern first, as Redis: a key it leaves out is not read.
        let key = super::keyspace::last_bytes(&row)?;
        if pattern.as_ref().is_some_and(|p| !glob::matches_all(p) && !glob::matches(p, &key)) {
            continue;
        }
        let Some(v) = db.read_row(row).await?.as_deref().and_then(Value::decode) else {
            continue;
        };
        if v.expire_at_ms.is_some_and(|at| at <= now) {
            continue;
        }
        if kind.as_ref().is_some_and(|t| t != v.type_name()) {
            continue;
        }
        found.push(Reply::Bulk(key));
    }
    Ok(Reply::Array(vec![Reply::bulk(next.to_string()), Reply::Array(found)]))
}

/// Rows a SCAN-family call reads for COUNT `count`.
fn scan_page_rows(count: usize) -> usize {
    count.min(monotable_proto::limits::SCAN_LIMIT_MAX as usize)
}

/// Removes keys whose time has come, a batch at a time, database by
/// database (Redis's active expiry; reads also expire keys lazily).
pub async fn expire_due(state: &RespState) -> NodeResult<usize> {
    // Beside other commands, not beside one that runs alone: SWAPDB
    // between reading a due expiry row and deleting it would delete that
    // row in the other database. Taken before the clock starts: waiting
    // for an EXEC is no expiry latency.
    let _gate = state.gate.read().await;
    let started = std::time::Instant::now();
    let removed = expire_all(state).await;
    state.latency.sample("expire-cycle", started.elapsed());
    removed
}

/// [`expire_due`]'s pass over the databases.
async fn expire_all(state: &RespState) -> NodeResult<usize> {
    let mut removed = 0;
    if state.pause.holds(state.started, true) {
        // CLIENT PAUSE WRITE stops the expirer too, as Redis's.
        return Ok(0);
    }
    for i in 0..DATABASES {
        match super::cluster::placement(&state.node, i) {
            super::cluster::Placement::Local => {}
            super::cluster::Placement::Unmade => continue,
            super::cluster::Placement::Replicated(range) => {
                removed += super::cluster::expire(state, i, &range).await?;
                continue;
            }
        }
        let db = Db::new(state, i, None);
        if db.node.router_read().range(&db.range).is_none() {
            continue;
        }
        removed += expire_db(state, i, &db).await?;
    }
    Ok(removed)
}

/// One batch of database `i`'s due keys removed through `db` (whose
/// overlay, if any, holds the writes back); how many.
pub async fn expire_db(state: &RespState, i: u32, db: &Db<'_>) -> NodeResult<usize> {
    let mut removed = 0;
    {
        let (start, end) = super::keyspace::expiry_rows_due(now_ms());
        let reply = db
            .node
            .scan_range(monotable_proto::ScanRequest {
                range: db.range.clone(),
                start: Some(start.into()),
                end: Some(end.into()),
                limit: EXPIRE_BATCH,
                ..Default::default()
            })
            .await?;
        let due: Vec<(Vec<u8>, monotable_proto::Bytes)> = reply
            .records
            .into_iter()
            .filter_map(|r| Some((super::keyspace::key_of_expiry_row(&r.key)?, r.key)))
            .collect();
        // Every key of the batch at once: with writes held back until the
        // batch's end, a key let go earlier could be set meanwhile and then
        // lose its new value to this batch's delete.
        // Locked as read: removing an expired key is not a change WATCH
        // sees (EXEC checks whether a watched key is still live).
        // Postmortem: the expirer removing a key already expired at WATCH
        // made EXEC abort (a flaky test), which Redis does not.
        let keys: Vec<(u32, &[u8], bool)> =
            due.iter().map(|(k, _)| (i, k.as_slice(), false)).collect();
        let _g = state.lock_keys(&keys).await;
        for (key, row) in due {
            // Removes the key if it is due (its expiry may have moved on).
            if db.get(&key).await?.is_none() {
                removed += 1;
            }
            db.write(vec![WriteOp::Delete { key: row }]).await?;
        }
    }
    Ok(removed)
}

/// Expiry rows handled per database per pass.
const EXPIRE_BATCH: u32 = 200;

/// HSCAN / SSCAN / ZSCAN key cursor [MATCH pattern] [COUNT count]: a
/// collection's elements a page at a time (fields with values, members,
/// members with scores), cursors as for SCAN.
async fn element_scan(db: &Db<'_>, name: &str, args: &[Vec<u8>]) -> NodeResult<Reply> {
    let kind = match name {
        "hscan" => super::keyspace::KIND_HASH,
        "sscan" => super::keyspace::KIND_SET,
        _ => super::keyspace::KIND_ZSET,
    };
    let ScanOptions { cursor, pattern, count, .. } = match scan_options(args, 2, false) {
        Ok(o) => o,
        Err(reply) => return Ok(reply),
    };
    let empty = || Reply::Array(vec![Reply::bulk("0"), Reply::Array(Vec::new())]);
    match db.get(&args[1]).await? {
        None => return Ok(empty()),
        Some(v) if v.kind != kind => return Ok(Reply::err(WRONGTYPE)),
        Some(_) => {}
    }
    let prefix = super::keyspace::element_prefix(kind, &args[1]);
    let (rows, next) = db.hashed_rows(&prefix, cursor, scan_page_rows(count)).await?;
    let mut out = Vec::new();
    for row in rows {
        let element = super::keyspace::last_bytes(&row)?;
        if pattern.as_ref().is_some_and(|p| !glob::matches_all(p) && !glob::matches(p, &element)) {
            continue;
        }
        let value = match kind {
            super::keyspace::KIND_SET => Vec::new(),
            _ => match db.read_row(row).await? {
                Some(value) => value,
                None => continue,
            },
        };
        out.push(Reply::Bulk(element));
        match kind {
            super::keyspace::KIND_HASH => {
                out.push(Reply::Bulk(super::keyspace::decode_field(&value)?))
            }
            super::keyspace::KIND_ZSET => out.push(Reply::Bulk(
                format_double(super::keyspace::decode_score(&value)?).into_bytes(),
            )),
            _ => {}
        }
    }
    Ok(Reply::Array(vec![Reply::bulk(next.to_string()), Reply::Array(out)]))
}

/// FLUSHDB / FLUSHALL. A replicated database (FLUSHDB only, run on its
/// chunk's leader) is emptied row by row in the command's one write.
async fn flush(
    state: &RespState,
    db: &Db<'_>,
    name: &str,
    dbi: u32,
    args: &[Vec<u8>],
) -> NodeResult<Reply> {
    match args.get(1).map(|a| String::from_utf8_lossy(a).to_ascii_lowercase()) {
        None => {}
        Some(mode) if (mode == "sync" || mode == "async") && args.len() == 2 => {}
        Some(_) => return Ok(Reply::err(SYNTAX)),
    }
    let dbs: Vec<u32> = if name == "flushdb" { vec![dbi] } else { (0..DATABASES).collect() };
    if name == "flushall" {
        let replicated: Vec<String> = dbs
            .iter()
            .filter(|&&i| {
                let placement = super::cluster::placement(&state.node, i);
                matches!(placement, super::cluster::Placement::Replicated(_))
            })
            .map(|i| i.to_string())
            .collect();
        if !replicated.is_empty() {
            return Ok(Reply::err(format!(
                "ERR FLUSHALL spans databases {}, replicated across the cluster, each with a \
                 leader of its own: SELECT each and FLUSHDB",
                replicated.join(", ")
            )));
        }
    }
    // No version bump: a WATCH fails only on the keys that existed (see
    // `state::Watched`), as Redis's `touchAllWatchedKeysInDb`.
    for &i in &dbs {
        let range = super::keyspace::range_name(i);
        if db.tx.is_some() {
            // Inside MULTI or a script: every row deleted within the
            // transaction's one batch (its held writes included), so a
            // crash or a stopped script leaves all of it or none.
            // Postmortem: the range was dropped at once, ahead of the
            // batch: a crash during EXEC left the flush without the rest,
            // and a script stopped by its budget had emptied the database.
            Db::new(state, i, db.tx).delete_all_rows().await?;
            continue;
        }
        let found = state.node.router_read().range(&range).map(|r| (r.meta.id, r.meta.options));
        let Some((id, options)) = found else { continue };
        if crate::replicated::is_replicated(id) {
            // Here on the leader, `db` holds the writes back for Raft.
            db.delete_all_rows().await?;
        } else if state.node.range_in_views(id).is_none() {
            // Its keys count as changed since the last save, as in Redis.
            let (start, end) = key_rows_span();
            let keys = Db::new(state, i, None).count_rows(&start, end.as_deref()).await?;
            state.node.drop_range_unchecked(&range).await?;
            state.saves.modified(keys);
            // Made again at once with its options (a chunk size given with
            // `range create`), empty.
            // Postmortem: the next write made it with the defaults.
            state.node.create_range_unchecked(&range, options)?;
        } else {
            // Views read it: delete the rows, so the views see them go.
            Db::of_range(state, range, None).delete_all_rows().await?;
        }
    }
    // Clients that cache keys are told everything went.
    state.tracking.flushed(&state.pubsub, db.client);
    // Clients blocked on a key look again (an XREADGROUP's stream is
    // gone); inside a transaction they run once it is applied (EXEC runs
    // alone).
    for i in dbs {
        state.blocking.signal_database(i);
    }
    Ok(Reply::ok())
}

/// SWAPDB index1 index2: each database takes the other's keys, as Redis's
/// `dbSwapDatabases`. Runs alone (no other command meanwhile). The
/// databases' ranges swap names ([`crate::node::Node`]'s
/// `swap_range_names`: one durable catalog transaction), so a crash leaves
/// both swapped or neither. Connections stay in their database: a watched
/// key live in either database before the swap fails its EXEC (Redis's
/// `touchAllWatchedKeysInDb`), and clients blocked on keys of either look
/// again. Refused inside MULTI or a script (their held writes name the
/// databases), for a database a view or sink reads, and for a database
/// replicated across a cluster.
async fn swapdb(state: &RespState, db: &Db<'_>, args: &[Vec<u8>]) -> NodeResult<Reply> {
    let index = |arg: &[u8]| parse_i64(arg).and_then(|n| i32::try_from(n).ok());
    let Some(a) = index(&args[1]) else { return Ok(Reply::err("ERR invalid first DB index")) };
    let Some(b) = index(&args[2]) else { return Ok(Reply::err("ERR invalid second DB index")) };
    let in_range = |n: i32| u32::try_from(n).ok().filter(|&n| n < DATABASES);
    let (Some(a), Some(b)) = (in_range(a), in_range(b)) else {
        return Ok(Reply::err("ERR DB index is out of range"));
    };
    if db.tx.is_some() {
        return Ok(Reply::err(
            "ERR SWAPDB cannot run inside MULTI or a script: their writes are held for the \
             databases as they are named now",
        ));
    }
    for i in [a, b] {
        if !matches!(super::cluster::placement(&state.node, i), super::cluster::Placement::Local) {
            return Ok(Reply::err(format!(
                "ERR SWAPDB needs both databases to be this node's own: database {i} is \
                 replicated across the cluster"
            )));
        }
    }
    if a != b {
        // Which watched keys the swap changes, before it.
        let mut touched = Vec::new();
        for (i, other) in [(a, b), (b, a)] {
            let (here, there) = (Db::new(state, i, None), Db::new(state, other, None));
            let mut keys = Vec::new();
            for key in state.watches.watched_in(i) {
                if here.is_live(&key).await? || there.is_live(&key).await? {
                    keys.push(key);
                }
            }
            touched.push((i, keys));
        }
        let (name_a, name_b) = (super::keyspace::range_name(a), super::keyspace::range_name(b));
        match state.node.swap_range_names(&name_a, &name_b).await {
            Ok(()) => {}
            Err(crate::error::NodeError::Client { message, .. }) => {
                return Ok(Reply::err(format!("ERR {message}")));
            }
            Err(e) => return Err(e),
        }
        for (i, keys) in touched {
            state.watches.written(i, keys);
        }
        for i in [a, b] {
            state.blocking.signal_database(i);
        }
    }
    state.saves.modified(1);
    Ok(Reply::ok())
}

async fn rename(db: &Db<'_>, name: &str, from: &[u8], to: &[u8]) -> NodeResult<Reply> {
    let Some(v) = db.get(from).await? else { return Ok(Reply::err("ERR no such key")) };
    if from == to {
        return Ok(if name == "rename" { Reply::ok() } else { Reply::Int(0) });
    }
    // One write: if a moved row is refused (over the limits), both keys
    // stay as they were.
    // `from` first: CLIENT TRACKING invalidates in the order keys are
    // written, and Redis signals `from` before `to`.
    let mut ops = vec![WriteOp::Delete { key: key_row(from).into() }];
    let overwrites = db.get(to).await?;
    if let Some(old) = &overwrites {
        if name == "renamenx" {
            return Ok(Reply::Int(0));
        }
        ops.extend(db.remove_ops(to, old).await?);
    }
    ops.push(WriteOp::Put { key: key_row(to).into(), value: v.encode().into() });
    if let Some(at) = v.expire_at_ms {
        ops.push(WriteOp::Put { key: expiry_row(at, to).into(), value: Vec::new().into() });
    }
    for (row, moved, value) in super::key_copy::element_rows_as(db, v.kind, from, to).await? {
        ops.push(WriteOp::Put { key: moved.into(), value: value.into() });
        ops.push(WriteOp::Delete { key: row.into() });
    }
    db.write(ops).await?;
    if overwrites.is_some() {
        db.recreated(to);
    }
    // Redis raises the new key's `new` first (see `notify`).
    db.notify_created(to);
    db.notify(notify::GENERIC, "rename_from", from);
    db.notify(notify::GENERIC, "rename_to", to);
    Ok(if name == "rename" { Reply::ok() } else { Reply::Int(1) })
}

/// EXPIRE / PEXPIRE / EXPIREAT / PEXPIREAT key time [NX | XX | GT | LT]
async fn expire(db: &Db<'_>, name: &str, args: &[Vec<u8>]) -> NodeResult<Reply> {
    let Some(t) = parse_i64(&args[2]) else { return Ok(Reply::err(NOT_INTEGER)) };
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for opt in &args[3..] {
        match String::from_utf8_lossy(opt).to_ascii_lowercase().as_str() {
            "nx" => nx = true,
            "xx" => xx = true,
            "gt" => gt = true,
            "lt" => lt = true,
            _ => {
                return Ok(Reply::err(format!(
                    "ERR Unsupported option {}",
                    String::from_utf8_lossy(opt)
                )))
            }
        }
    }
    if nx && (xx || gt || lt) {
        return Ok(Reply::err(
            "ERR NX and XX, GT or LT options at the same time are not compatible",
        ));
    }
    if gt && lt {
        return Ok(Reply::err("ERR GT and LT options at the same time are not compatible"));
    }
    let ms = match name {
        "expire" | "expireat" => t.checked_mul(1000),
        _ => Some(t),
    };
    let at = match name {
        "expire" | "pexpire" => ms.and_then(|ms| (now_ms() as i64).checked_add(ms)),
        _ => ms,
    };
    let Some(at) = at else {
        return Ok(Reply::err(format!("ERR invalid expire time in '{name}' command")));
    };
    let Some(mut v) = db.get(&args[1]).await? else { return Ok(Reply::Int(0)) };
    let current = v.expire_at_ms;
    let allowed = match current {
        None => !xx && !gt,
        Some(c) => !nx && (!gt || at > c as i64) && (!lt || at < c as i64),
    };
    if !allowed {
        return Ok(Reply::Int(0));
    }
    if at <= now_ms() as i64 {
        db.remove(&args[1], &v).await?;
        db.notify(notify::GENERIC, "del", &args[1]);
    } else {
        v.expire_at_ms = Some(at as u64);
        db.put(&args[1], &v).await?;
        db.notify(notify::GENERIC, "expire", &args[1]);
    }
    Ok(Reply::Int(1))
}

/// GETEX key [EX s | PX ms | EXAT s | PXAT ms | PERSIST]
async fn getex(db: &Db<'_>, args: &[Vec<u8>]) -> NodeResult<Reply> {
    let mut change: Option<Option<u64>> = None;
    let mut i = 2;
    while i < args.len() {
        let opt = String::from_utf8_lossy(&args[i]).to_ascii_lowercase();
        match opt.as_str() {
            "persist" if change.is_none() => change = Some(None),
            "ex" | "px" | "exat" | "pxat" if change.is_none() && i + 1 < args.len() => {
                let Some(t) = parse_i64(&args[i + 1]) else { return Ok(Reply::err(NOT_INTEGER)) };
                match super::keyspace::expire_at(&opt, t) {
                    Some(at) => change = Some(Some(at)),
                    None => return Ok(Reply::err("ERR invalid expire time in 'getex' command")),
                }
                i += 1;
            }
            _ => return Ok(Reply::err(SYNTAX)),
        }
        i += 1;
    }
    let Some(mut v) = db.get(&args[1]).await? else { return Ok(Reply::Null) };
    if v.kind != KIND_STRING {
        return Ok(Reply::err(WRONGTYPE));
    }
    let reply = Reply::Bulk(v.payload.clone());
    match change {
        // EXAT/PXAT in the past: the key goes, as in Redis.
        Some(Some(at)) if at <= now_ms() => {
            db.remove(&args[1], &v).await?;
            db.notify(notify::GENERIC, "del", &args[1]);
        }
        Some(Some(at)) => {
            v.expire_at_ms = Some(at);
            db.put(&args[1], &v).await?;
            db.notify(notify::GENERIC, "expire", &args[1]);
        }
        Some(None) if v.expire_at_ms.is_some() => {
            v.expire_at_ms = None;
            db.put(&args[1], &v).await?;
            db.notify(notify::GENERIC, "persist", &args[1]);
        }
        Some(None) | None => {}
    }
    Ok(reply)
}

async fn incrbyfloat(db: &Db<'_>, args: &[Vec<u8>]) -> NodeResult<Reply> {
    use super::long_double::{increment, IncrError};
    let (current, expire) = match db.get(&args[1]).await? {
        None => (None, None),
        Some(v) if v.kind != KIND_STRING => return Ok(Reply::err(WRONGTYPE)),
        Some(v) => (Some(v.payload), v.expire_at_ms),
    };
    let text = match increment(current.as_deref(), &args[2]) {
        Ok(text) => text,
        Err(IncrError::BadCurrent | IncrError::BadIncrement) => {
            return Ok(Reply::err(super::args::NOT_FLOAT))
        }
        Err(IncrError::InfiniteIncrement | IncrError::NotFinite) => {
            return Ok(Reply::err("ERR increment would produce NaN or Infinity"))
        }
    };
    db.put(&args[1], &Value::string(text.clone().into_bytes(), expire)).await?;
    db.notify(notify::STRING, "incrbyfloat", &args[1]);
    Ok(Reply::Bulk(text.into_bytes()))
}

async fn getrange(db: &Db<'_>, args: &[Vec<u8>]) -> NodeResult<Reply> {
    let (Some(start), Some(end)) = (parse_i64(&args[2]), parse_i64(&args[3])) else {
        return Ok(Reply::err(NOT_INTEGER));
    };
    let v = match db.get(&args[1]).await? {
        None => return Ok(Reply::bulk("")),
        Some(v) if v.kind != KIND_STRING => return Ok(Reply::err(WRONGTYPE)),
        Some(v) => v.payload,
    };
    let len = v.len() as i64;
    if start < 0 && end < 0 && start > end {
        return Ok(Reply::bulk(""));
    }
    let start = if start < 0 { (len + start).max(0) } else { start };
    let end = if end < 0 { (len + end).max(0) } else { end.min(len - 1) };
    if start > end || len == 0 || start >= len {
        return Ok(Reply::bulk(""));
    }
    Ok(Reply::Bulk(v[start as usize..=end as usize].to_vec()))
}

async fn setrange(db: &Db<'_>, args: &[Vec<u8>]) -> NodeResult<Reply> {
    let Some(offset) = parse_i64(&args[2]) else { return Ok(Reply::err(NOT_INTEGER)) };
    if offset < 0 {
        return Ok(Reply::err("ERR offset is out of range"));
    }
    let old = db.get(&args[1]).await?;
    if old.as_ref().is_some_and(|v| v.kind != KIND_STRING) {
        return Ok(Reply::err(WRONGTYPE));
    }
    let value = &args[3];
    let mut v = old.unwrap_or_else(|| Value::string(Vec::new(), None));
    if value.is_empty() {
        return Ok(Reply::Int(v.payload.len() as i64));
    }
    let end = match super::args::string_end(offset.unsigned_abs(), value.len()) {
        Ok(end) => end,
        Err(reply) => return Ok(reply),
    };
    if v.payload.len() < end {
        v.payload.resize(end, 0);
    }
    v.payload[end - value.len()..end].copy_from_slice(value);
    db.put(&args[1], &v).await?;
    db.notify(notify::STRING, "setrange", &args[1]);
    Ok(Reply::Int(v.payload.len() as i64))
}
