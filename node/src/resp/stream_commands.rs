//! Stream commands without consumer groups: XADD, XLEN, XRANGE,
//! XREVRANGE, XDEL, XTRIM, XSETID, XREAD (blocking too) and XINFO STREAM
//! and HELP, with Redis 7.0's replies and errors (`t_stream.c`). Consumer
//! groups are [`super::stream_groups`]'s; the rows are [`super::streams`]'.
//!
//! A blocked XREAD waits as the blocking pops do ([`super::blocking`]): it
//! runs again when a key it waits on is written, with each `$` replaced
//! by the ID that was last when it first ran and, without COUNT, a count
//! of 1000 (Redis's `XREAD_BLOCKED_DEFAULT_COUNT`). An XADD wakes every
//! client blocked on its key.

use super::args::{lower, parse_i64, NOT_INTEGER};
use super::errors::{subcommand_syntax, SYNTAX};
use super::keyspace::{now_ms, Db};
use super::notify;
use super::reply::Reply;
use super::state::{Conn, RespState};
use super::streams::{
    self, entry_reply, interval_bound, parse_id, strict_id, NodeLimits, Stream, StreamId, Trim,
    TrimTo,
};
use super::table::Command;
use crate::error::NodeResult;

/// Unwraps a stream lookup: the stream or `None`, or returns its error
/// reply (WRONGTYPE).
macro_rules! stream_or_reply {
    ($e:expr) => {
        match $e {
            Ok(found) => found,
            Err(reply) => return Ok(reply),
        }
    };
}

/// Runs a stream command (`command` is its row of the table).
pub async fn run(
    state: &RespState,
    conn: &mut Conn,
    db: &Db<'_>,
    command: &Command,
    args: &[Vec<u8>],
) -> NodeResult<Reply> {
    let dbi = conn.db;
    match command.name {
        "xadd" => xadd(state, dbi, db, args).await,
        "xlen" => {
            let s = stream_or_reply!(streams::load(db, &args[1]).await?);
            Ok(Reply::Int(s.map_or(0, |s| s.meta.length as i64)))
        }
        "xrange" | "xrevrange" => xrange(db, args, command.name == "xrevrange").await,
        "xdel" => {
            let mut ids = Vec::with_capacity(args.len() - 2);
            for a in &args[2..] {
                ids.push(or_reply!(strict_id(a)));
            }
            let _g = state.lock(dbi, &[&args[1]]).await;
            let Some(mut s) = stream_or_reply!(streams::load(db, &args[1]).await?) else {
                return Ok(Reply::Int(0));
            };
            let deleted = streams::delete(db, &args[1], &mut s, &ids).await?;
            if deleted > 0 {
                db.notify(notify::STREAM, "xdel", &args[1]);
            }
            Ok(Reply::Int(deleted as i64))
        }
        "xtrim" => {
            let options = or_reply!(add_or_trim_options(state, args, false));
            let trim = options.trim.expect("XTRIM's options have a strategy");
            let _g = state.lock(dbi, &[&args[1]]).await;
            let Some(mut s) = stream_or_reply!(streams::load(db, &args[1]).await?) else {
                return Ok(Reply::Int(0));
            };
            let deleted = streams::trim(db, &args[1], &mut s, trim).await?;
            if deleted > 0 {
                db.notify(notify::STREAM, "xtrim", &args[1]);
            }
            Ok(Reply::Int(deleted as i64))
        }
        "xsetid" => xsetid(state, dbi, db, args).await,
        "xread" => xread(conn, db, args).await,
        "xinfo" => xinfo(db, args).await,
        _ => super::stream_groups::run(state, conn, db, command, args).await,
    }
}

/// The node limits CONFIG sets (`stream-node-max-entries`,
/// `stream-node-max-bytes`).
fn node_limits(state: &RespState) -> NodeLimits {
    NodeLimits {
        entries: state.config.int("stream-node-max-entries").max(0) as u64,
        bytes: state.config.int("stream-node-max-bytes").max(0) as u64,
    }
}

/// XADD's and XTRIM's options (Redis's `streamParseAddOrTrimArgsOrReply`).
struct AddOrTrim {
    trim: Option<Trim>,
    no_mkstream: bool,
    /// XADD: the ID argument's position, and the ID given (`None`: `*`).
    id_at: usize,
    id: Option<streams::ParsedId>,
}

fn add_or_trim_options(
    state: &RespState,
    args: &[Vec<u8>],
    xadd: bool,
) -> Result<AddOrTrim, Reply> {
    let mut o = AddOrTrim { trim: None, no_mkstream: false, id_at: args.len(), id: None };
    let mut approx = false;
    let mut limit: Option<i64> = None;
    let mut to: Option<TrimTo> = None;
    let both = "ERR syntax error, MAXLEN and MINID options at the same time are not compatible";
    let mut i = 2;
    while i < args.len() {
        let more = args.len() - 1 - i;
        let opt = lower(&args[i]);
        if xadd && args[i] == b"*" {
            o.id_at = i;
            break;
        } else if (opt == "maxlen" || opt == "minid") && more > 0 {
            if to.is_some() {
                return Err(Reply::err(both));
            }
            approx = false;
            if more >= 2 && (args[i + 1] == b"~" || args[i + 1] == b"=") {
                approx = args[i + 1] == b"~";
                i += 1;
            }
            let value = &args[i + 1];
            to = Some(if opt == "maxlen" {
                let n = parse_i64(value).ok_or_else(|| Reply::err(NOT_INTEGER))?;
                if n < 0 {
                    return Err(Reply::err("ERR The MAXLEN argument must be >= 0."));
                }
                TrimTo::MaxLen(n as u64)
            } else {
                TrimTo::MinId(strict_id(value)?)
            });
            i += 1;
        } else if opt == "limit" && more > 0 {
            let n = parse_i64(&args[i + 1]).ok_or_else(|| Reply::err(NOT_INTEGER))?;
            if n < 0 {
                return Err(Reply::err("ERR The LIMIT argument must be >= 0."));
            }
            limit = Some(n);
            i += 1;
        } else if xadd && opt == "nomkstream" {
            o.no_mkstream = true;
        } else if xadd {
            o.id = Some(parse_id(&args[i], 0, true, true)?);
            o.id_at = i;
            break;
        } else {
            return Err(Reply::err(SYNTAX));
        }
        i += 1;
    }
    if limit.is_some_and(|l| l > 0) && to.is_none() {
        return Err(Reply::err(
            "ERR syntax error, LIMIT cannot be used without specifying a trimming strategy",
        ));
    }
    if !xadd && to.is_none() {
        return Err(Reply::err("ERR syntax error, XTRIM must be called with a trimming strategy"));
    }
    let limit = match limit {
        Some(_) if !approx => {
            return Err(Reply::err(
                "ERR syntax error, LIMIT cannot be used without the special ~ option",
            ))
        }
        Some(l) => l as u64,
        // At most 100 nodes' worth, as Redis bounds a `~` trim's work.
        None if approx => {
            let per_node = state.config.int("stream-node-max-entries");
            match per_node.saturating_mul(100) {
                n if n <= 0 => 10_000,
                n => (n as u64).min(1_000_000),
            }
        }
        None => 0,
    };
    o.trim = to.map(|to| Trim { to, approx, limit });
    Ok(o)
}

/// XADD key [NOMKSTREAM] [MAXLEN|MINID [=|~] threshold [LIMIT count]]
/// *|id field value [field value ...]
async fn xadd(state: &RespState, dbi: u32, db: &Db<'_>, args: &[Vec<u8>]) -> NodeResult<Reply> {
    let o = or_reply!(add_or_trim_options(state, args, true));
    let fields = args.len().saturating_sub(o.id_at + 1);
    if fields < 2 || fields % 2 == 1 {
        return Ok(Reply::wrong_arity("xadd"));
    }
    if o.id.is_some_and(|p| p.seq_given && p.id == StreamId::MIN) {
        return Ok(Reply::err("ERR The ID specified in XADD must be greater than 0-0"));
    }
    let key = &args[1];
    let _g = state.lock(dbi, &[key]).await;
    let mut s = match stream_or_reply!(streams::load(db, key).await?) {
        Some(s) => s,
        None if o.no_mkstream => return Ok(Reply::Null),
        None => Stream::empty(),
    };
    let last = s.meta.last_id;
    if last == StreamId::MAX {
        return Ok(Reply::err(
            "ERR The stream has exhausted the last possible ID, unable to add more items",
        ));
    }
    let id = match o.id {
        Some(p) if p.seq_given => p.id,
        Some(p) if p.id.ms == last.ms => match last.seq.checked_add(1) {
            Some(seq) => StreamId { ms: last.ms, seq },
            // Redis's `streamAppendItem` fails here with errno not EDOM.
            None => return Ok(Reply::err("ERR Elements are too large to be stored")),
        },
        Some(p) => p.id,
        None => {
            let ms = now_ms();
            if ms > last.ms {
                StreamId { ms, seq: 0 }
            } else {
                last.next().unwrap_or(StreamId::MAX)
            }
        }
    };
    if id <= last {
        return Ok(Reply::err(
            "ERR The ID specified in XADD is equal or smaller than the target stream top item",
        ));
    }
    let pairs = &args[o.id_at + 1..];
    match o.trim {
        None => {
            streams::append(db, key, &mut s, id, pairs, node_limits(state)).await?;
            db.notify(notify::STREAM, "xadd", key);
        }
        // The trim reads what the append wrote; both in one batch.
        Some(trim) => {
            db.in_one_batch(async |db: &Db<'_>| {
                streams::append(db, key, &mut s, id, pairs, node_limits(state)).await?;
                db.notify(notify::STREAM, "xadd", key);
                if streams::trim(db, key, &mut s, trim).await? > 0 {
                    db.notify(notify::STREAM, "xtrim", key);
                }
                Ok(())
            })
            .await?
        }
    }
    state.blocking.signal_all(dbi, key);
    Ok(id.reply())
}

/// XRANGE key start end [COUNT count]; XREVRANGE key end start [COUNT count].
async fn xrange(db: &Db<'_>, args: &[Vec<u8>], rev: bool) -> NodeResult<Reply> {
    let (start_arg, end_arg) = if rev { (&args[3], &args[2]) } else { (&args[2], &args[3]) };
    let start = or_reply!(interval_bound(start_arg, true));
    let end = or_reply!(interval_bound(end_arg, false));
    let mut count: Option<u64> = None;
    let mut j = 4;
    while j < args.len() {
        if lower(&args[j]) == "count" && j + 1 < args.len() {
            let n = or_reply!(super::args::integer(&args[j + 1]));
            count = Some(n.max(0) as u64);
            j += 2;
        } else {
            return Ok(Reply::err(SYNTAX));
        }
    }
    if stream_or_reply!(streams::load(db, &args[1]).await?).is_none() {
        return Ok(Reply::Array(Vec::new()));
    }
    if count == Some(0) {
        return Ok(Reply::NullArray);
    }
    let entries = streams::range(db, &args[1], start, end, count.unwrap_or(0), rev).await?;
    Ok(Reply::Array(entries.into_iter().map(entry_reply).collect()))
}

/// XSETID key last-id [ENTRIESADDED entries-added] [MAXDELETEDID id]
async fn xsetid(state: &RespState, dbi: u32, db: &Db<'_>, args: &[Vec<u8>]) -> NodeResult<Reply> {
    let id = or_reply!(strict_id(&args[2]));
    let (mut entries_added, mut max_deleted) = (None, StreamId::MIN);
    let mut i = 3;
    while i < args.len() {
        let more = i + 1 < args.len();
        match lower(&args[i]).as_str() {
            "entriesadded" if more => {
                let n = or_reply!(super::args::integer(&args[i + 1]));
                if n < 0 {
                    return Ok(Reply::err("ERR entries_added must be positive"));
                }
                entries_added = Some(n as u64);
            }
            "maxdeletedid" if more => {
                max_deleted = or_reply!(strict_id(&args[i + 1]));
                if id < max_deleted {
                    return Ok(Reply::err(
                        "ERR The ID specified in XSETID is smaller than the provided \
                         max_deleted_entry_id",
                    ));
                }
            }
            _ => return Ok(Reply::err(SYNTAX)),
        }
        i += 2;
    }
    let key = &args[1];
    let _g = state.lock(dbi, &[key]).await;
    let Some(mut s) = stream_or_reply!(streams::load(db, key).await?) else {
        return Ok(Reply::err("ERR no such key"));
    };
    if s.meta.length > 0 {
        let top = streams::edge_id(db, key, true).await?.unwrap_or(StreamId::MIN);
        if id < top {
            return Ok(Reply::err(
                "ERR The ID specified in XSETID is smaller than the target stream top item",
            ));
        }
        if entries_added.is_some_and(|n| s.meta.length > n) {
            return Ok(Reply::err(
                "ERR The entries_added specified in XSETID is smaller than the target stream \
                 length",
            ));
        }
    }
    s.meta.last_id = id;
    if let Some(n) = entries_added {
        s.meta.entries_added = n;
    }
    if max_deleted != StreamId::MIN {
        s.meta.max_deleted = max_deleted;
    }
    // Not a change of the stream for WATCH and CLIENT TRACKING, as in
    // Redis 7.0.
    db.write_quietly(vec![s.put_op(key)]).await?;
    db.notify(notify::STREAM, "xsetid", key);
    Ok(Reply::ok())
}

/// How many entries a blocked XREAD without COUNT is served (Redis's
/// `XREAD_BLOCKED_DEFAULT_COUNT`).
pub const XREAD_BLOCKED_DEFAULT_COUNT: u64 = 1000;

/// What XREAD and XREADGROUP are asked (Redis's `xreadCommand` parsing).
pub struct ReadArgs {
    /// BLOCK's milliseconds (0: for ever), if given.
    pub block: Option<u64>,
    pub count: u64,
    pub keys: Vec<Vec<u8>>,
    /// The ID arguments as given, one per key.
    pub ids: Vec<Vec<u8>>,
    pub group: Option<(Vec<u8>, Vec<u8>)>,
    pub noack: bool,
}

/// Parses XREAD's (`group`: XREADGROUP's) arguments, errors in Redis's
/// order; `in_script` refuses BLOCK as Redis does in scripts.
pub fn read_args(args: &[Vec<u8>], group: bool, in_script: bool) -> Result<ReadArgs, Reply> {
    let name = String::from_utf8_lossy(&args[0]).into_owned();
    let mut r = ReadArgs {
        block: None,
        count: 0,
        keys: Vec::new(),
        ids: Vec::new(),
        group: None,
        noack: false,
    };
    let mut streams_at = None;
    let mut i = 1;
    while i < args.len() {
        let more = args.len() - 1 - i;
        match lower(&args[i]).as_str() {
            "block" if more > 0 => {
                if in_script {
                    return Err(Reply::err(format!(
                        "ERR {name} command is not allowed with BLOCK option from scripts"
                    )));
                }
                i += 1;
                r.block = Some(block_timeout(&args[i])?);
            }
            "count" if more > 0 => {
                i += 1;
                r.count = super::args::integer(&args[i])?.max(0) as u64;
            }
            "streams" if more > 0 => {
                let n = args.len() - (i + 1);
                if !n.is_multiple_of(2) {
                    return Err(Reply::err(
                        "ERR Unbalanced XREAD list of streams: for each stream key an ID or '$' \
                         must be specified.",
                    ));
                }
                streams_at = Some(i + 1);
                break;
            }
            "group" if more >= 2 => {
                if !group {
                    return Err(Reply::err(
                        "ERR The GROUP option is only supported by XREADGROUP. You called XREAD \
                         instead.",
                    ));
                }
                r.group = Some((args[i + 1].clone(), args[i + 2].clone()));
                i += 2;
            }
            "noack" => {
                if !group {
                    return Err(Reply::err(
                        "ERR The NOACK option is only supported by XREADGROUP. You called XREAD \
                         instead.",
                    ));
                }
                r.noack = true;
            }
            _ => return Err(Reply::err(SYNTAX)),
        }
        i += 1;
    }
    let Some(at) = streams_at else { return Err(Reply::err(SYNTAX)) };
    if group && r.group.is_none() {
        return Err(Reply::err("ERR Missing GROUP option for XREADGROUP"));
    }
    let n = (args.len() - at) / 2;
    r.keys = args[at..at + n].to_vec();
    r.ids = args[at + n..].to_vec();
    Ok(r)
}

/// BLOCK's milliseconds, as Redis's `getTimeoutFromObjectOrReply` reads
/// them in milliseconds: an integer, not negative.
fn block_timeout(arg: &[u8]) -> Result<u64, Reply> {
    match parse_i64(arg) {
        Some(n) if n < 0 => Err(Reply::err("ERR timeout is negative")),
        Some(n) => Ok(n as u64),
        None => Err(Reply::err("ERR timeout is not an integer or out of range")),
    }
}

/// The reply of XREAD and XREADGROUP: per stream served, its name and
/// entries (a map in RESP3).
pub fn read_reply(proto: u8, served: Vec<(Vec<u8>, Vec<Reply>)>) -> Reply {
    if proto >= 3 {
        Reply::Map(served.into_iter().map(|(k, e)| (Reply::Bulk(k), Reply::Array(e))).collect())
    } else {
        Reply::Array(
            served
                .into_iter()
                .map(|(k, e)| Reply::Array(vec![Reply::Bulk(k), Reply::Array(e)]))
                .collect(),
        )
    }
}

/// XREAD [COUNT count] [BLOCK milliseconds] STREAMS key [key ...] id
/// [id ...]
async fn xread(conn: &mut Conn, db: &Db<'_>, args: &[Vec<u8>]) -> NodeResult<Reply> {
    let r = or_reply!(read_args(args, false, conn.in_script));
    // The IDs after which to read, each `$` the stream's last ID now.
    let mut after = Vec::with_capacity(r.keys.len());
    let mut present = Vec::with_capacity(r.keys.len());
    for (key, id) in r.keys.iter().zip(&r.ids) {
        let s = match streams::load(db, key).await? {
            Ok(s) => s,
            // Woken, a key that came to hold another type is passed over,
            // as Redis serves a blocked reader only from a stream.
            Err(_) if conn.retrying => None,
            Err(reply) => return Ok(reply),
        };
        present.push(s.is_some());
        after.push(match id.as_slice() {
            b"$" => s.map_or(StreamId::MIN, |s| s.meta.last_id),
            b">" => {
                return Ok(Reply::err(
                    "ERR The > ID can be specified only when calling XREADGROUP using the GROUP \
                     <group> <consumer> option.",
                ))
            }
            other => or_reply!(strict_id(other)),
        });
    }
    let mut served = Vec::new();
    for ((key, &from), &present) in r.keys.iter().zip(&after).zip(&present) {
        let Some(start) = from.next().filter(|_| present) else { continue };
        let entries = streams::range(db, key, start, StreamId::MAX, r.count, false).await?;
        if entries.is_empty() {
            continue;
        }
        served.push((key.clone(), entries.into_iter().map(entry_reply).collect()));
        if conn.retrying {
            // A woken reader is served from one stream, as Redis serves a
            // blocked client from the key that woke it.
            break;
        }
    }
    if !served.is_empty() {
        return Ok(read_reply(conn.proto, served));
    }
    if let (Some(ms), None) = (r.block, db.tx) {
        conn.block = Some(super::blocking::Block {
            db: conn.db,
            keys: r.keys.clone(),
            deadline: (ms > 0)
                .then(|| std::time::Instant::now() + std::time::Duration::from_millis(ms)),
            args: r.blocked(after.iter().map(|id| id.to_string().into_bytes()).collect()),
            poll: false,
        });
    }
    Ok(Reply::NullArray)
}

impl ReadArgs {
    /// The XREAD or XREADGROUP a blocked one runs again, reading after
    /// `ids` (one per key: an XREAD's with its `$`s resolved): blocking
    /// (a run that finds nothing blocks again; the deadline is the first
    /// run's), its count [`XREAD_BLOCKED_DEFAULT_COUNT`] without COUNT.
    pub fn blocked(&self, ids: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
        let count = if self.count == 0 { XREAD_BLOCKED_DEFAULT_COUNT } else { self.count };
        let mut out = match &self.group {
            Some((group, consumer)) => {
                vec![b"XREADGROUP".to_vec(), b"GROUP".to_vec(), group.clone(), consumer.clone()]
            }
            None => vec![b"XREAD".to_vec()],
        };
        out.extend([b"COUNT".to_vec(), count.to_string().into_bytes()]);
        out.extend([b"BLOCK".to_vec(), b"0".to_vec()]);
        if self.noack {
            out.push(b"NOACK".to_vec());
        }
        out.push(b"STREAMS".to_vec());
        out.extend(self.keys.iter().cloned());
        out.extend(ids);
        out
    }
}

/// XINFO's help, word for word as Redis 7.0 gives it.
const XINFO_HELP: &[&str] = &[
    "XINFO <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "CONSUMERS <key> <groupname>",
    "    Show consumers of <groupname>.",
    "GROUPS <key>",
    "    Show the stream consumer groups.",
    "STREAM <key> [FULL [COUNT <count>]",
    "    Show information about the stream.",
    "HELP",
    "    Prints this help.",
];

/// XINFO STREAM | GROUPS | CONSUMERS | HELP.
async fn xinfo(db: &Db<'_>, args: &[Vec<u8>]) -> NodeResult<Reply> {
    let sub = lower(&args[1]);
    if sub == "help" {
        return Ok(Reply::Array(XINFO_HELP.iter().map(|l| Reply::Simple(l)).collect()));
    }
    let key = &args[2];
    let Some(s) = stream_or_reply!(streams::load(db, key).await?) else {
        return Ok(Reply::err("ERR no such key"));
    };
    match sub.as_str() {
        "stream" => xinfo_stream(db, key, &s, args).await,
        _ => super::stream_groups::xinfo(db, key, &s, &sub, args).await,
    }
}

/// XINFO STREAM key [FULL [COUNT count]]
async fn xinfo_stream(db: &Db<'_>, key: &[u8], s: &Stream, args: &[Vec<u8>]) -> NodeResult<Reply> {
    // FULL, or FULL COUNT count, as Redis's `xinfoReplyWithStreamInfo`.
    let options = &args[3..];
    let full = match options.len() {
        0 => None,
        1 | 3 if lower(&options[0]) == "full" => match options.get(1..) {
            Some([word, n]) if lower(word) == "count" => {
                let n = or_reply!(super::args::integer(n));
                Some(if n < 0 { 10 } else { n as u64 })
            }
            Some([]) => Some(10),
            _ => return Ok(subcommand_syntax(&args[0], &args[1])),
        },
        _ => return Ok(subcommand_syntax(&args[0], &args[1])),
    };
    let m = &s.meta;
    let mut pairs: Vec<(&str, Reply)> = vec![
        ("length", Reply::Int(m.length as i64)),
        ("radix-tree-keys", Reply::Int(m.nodes as i64)),
        ("radix-tree-nodes", Reply::Int(radix_tree_nodes(m.nodes) as i64)),
        ("last-generated-id", m.last_id.reply()),
        ("max-deleted-entry-id", m.max_deleted.reply()),
        ("entries-added", Reply::Int(m.entries_added as i64)),
        ("recorded-first-entry-id", m.first_id.reply()),
    ];
    match full {
        None => {
            pairs.push(("groups", Reply::Int(m.groups as i64)));
            let first = streams::range(db, key, StreamId::MIN, StreamId::MAX, 1, false).await?;
            let last = streams::range(db, key, StreamId::MIN, StreamId::MAX, 1, true).await?;
            let one =
                |e: Vec<streams::Entry>| e.into_iter().next().map_or(Reply::Null, entry_reply);
            pairs.push(("first-entry", one(first)));
            pairs.push(("last-entry", one(last)));
        }
        Some(count) => {
            let entries =
                streams::range(db, key, StreamId::MIN, StreamId::MAX, count, false).await?;
            pairs.push(("entries", Reply::Array(entries.into_iter().map(entry_reply).collect())));
            let groups = super::stream_groups::full_groups(db, key, s, count).await?;
            pairs.push(("groups", groups));
        }
    }
    Ok(Reply::Map(pairs.into_iter().map(|(k, v)| (Reply::bulk(k), v)).collect()))
}

/// XINFO's `radix-tree-nodes`: an estimate (Redis's count of its radix
/// tree's inner nodes, which Monotable does not have).
fn radix_tree_nodes(keys: u64) -> u64 {
    1 + keys.saturating_mul(2)
}

/// For a blocked XREAD or XREADGROUP on a replicated database, which runs
/// on the chunk's leader and is polled from here (see
/// [`super::blocking::poll_block`]): the arguments with each `$` replaced
/// by the stream's last ID now, read from the leader (XINFO STREAM), so
/// that the polls read what comes after it. Other commands, and XREAD
/// without BLOCK, are returned as they are.
pub async fn with_last_ids(state: &RespState, db: u32, args: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    let Ok(r) = read_args(&args, false, false) else { return args };
    if r.block.is_none() || !r.ids.iter().any(|id| id == b"$") {
        return args;
    }
    let at = args.len() - r.ids.len();
    let mut out = args.clone();
    for (i, (key, id)) in r.keys.iter().zip(&r.ids).enumerate() {
        if id != b"$" {
            continue;
        }
        let info = vec![b"XINFO".to_vec(), b"STREAM".to_vec(), key.clone()];
        let reply = super::cluster::run(state, db, 2, super::commands::Work::Command(info)).await;
        let last = match reply {
            Reply::Raw(bytes) => last_generated_id(&bytes),
            _ => None,
        };
        // A missing stream: `$` is 0-0 there too.
        out[at + i] = last.unwrap_or_else(|| b"0-0".to_vec());
    }
    out
}

/// The `last-generated-id` of an XINFO STREAM reply in RESP2.
fn last_generated_id(reply: &[u8]) -> Option<Vec<u8>> {
    let name = b"$17\r\nlast-generated-id\r\n$";
    let at = reply.windows(name.len()).position(|w| w == name)? + name.len();
    let rest = &reply[at..];
    let nl = rest.iter().position(|&c| c == b'\r')?;
    let len: usize = std::str::from_utf8(&rest[..nl]).ok()?.parse().ok()?;
    rest.get(nl + 2..nl + 2 + len).map(<[u8]>::to_vec)
}
