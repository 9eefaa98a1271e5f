//! Stream consumer groups: XGROUP (CREATE, SETID, DESTROY,
//! CREATECONSUMER, DELCONSUMER, HELP), XREADGROUP (blocking too), XACK,
//! XPENDING, XCLAIM, XAUTOCLAIM, and XINFO GROUPS, CONSUMERS and the
//! groups of XINFO STREAM FULL, with Redis 7.0's replies and errors
//! (`t_stream.c`, `blocked.c`).
//!
//! A group, its pending entries list (PEL), its consumers and each
//! consumer's own PEL are rows under the stream's key (see
//! [`super::streams`]): a group's PEL in ID order, its consumers in name
//! order, so XPENDING and XAUTOCLAIM read only what they return, as
//! Redis's radix trees do.

use monotable_proto::WriteOp;

use super::args::{lower, parse_i64};
use super::errors::{misrouted, subcommand_syntax, SYNTAX};
use super::keyspace::{now_ms, Db};
use super::notify;
use super::reply::Reply;
use super::state::{Conn, RespState};
use super::stream_commands::{read_args, read_reply};
use super::streams::{self, entry_reply, interval_bound, row, strict_id, Meta, Stream, StreamId};
use super::table::Command;
use crate::error::{NodeError, NodeResult};

/// A consumer group's own figures.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Group {
    last_id: StreamId,
    /// Entries the group read (Redis's `entries_read`), when known.
    entries_read: Option<u64>,
    /// Entries in its PEL.
    pel: u64,
    consumers: u64,
}

impl Group {
    fn encode(&self) -> Vec<u8> {
        let mut out = self.last_id.bytes().to_vec();
        out.extend_from_slice(&self.entries_read.map_or(-1, |n| n as i64).to_be_bytes());
        out.extend_from_slice(&self.pel.to_be_bytes());
        out.extend_from_slice(&self.consumers.to_be_bytes());
        out
    }

    fn decode(b: &[u8]) -> NodeResult<Group> {
        if b.len() != 40 {
            return Err(damaged());
        }
        let u = |at: usize| u64::from_be_bytes(b[at..at + 8].try_into().unwrap_or_default());
        let read = u(16) as i64;
        Ok(Group {
            last_id: StreamId::from_bytes(b).ok_or_else(damaged)?,
            entries_read: (read >= 0).then_some(read as u64),
            pel: u(24),
            consumers: u(32),
        })
    }
}

/// A pending entry: delivered, not yet acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Nack {
    delivery_time: u64,
    delivery_count: u64,
    consumer: Vec<u8>,
}

impl Nack {
    fn encode(&self) -> Vec<u8> {
        let mut out = self.delivery_time.to_be_bytes().to_vec();
        out.extend_from_slice(&self.delivery_count.to_be_bytes());
        out.extend_from_slice(&self.consumer);
        out
    }

    fn decode(b: &[u8]) -> NodeResult<Nack> {
        if b.len() < 16 {
            return Err(damaged());
        }
        let u = |at: usize| u64::from_be_bytes(b[at..at + 8].try_into().unwrap_or_default());
        Ok(Nack { delivery_time: u(0), delivery_count: u(8), consumer: b[16..].to_vec() })
    }
}

/// A consumer's own figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Consumer {
    seen_time: u64,
    pel: u64,
}

impl Consumer {
    fn encode(&self) -> Vec<u8> {
        let mut out = self.seen_time.to_be_bytes().to_vec();
        out.extend_from_slice(&self.pel.to_be_bytes());
        out
    }

    fn decode(b: &[u8]) -> NodeResult<Consumer> {
        if b.len() != 16 {
            return Err(damaged());
        }
        let u = |at: usize| u64::from_be_bytes(b[at..at + 8].try_into().unwrap_or_default());
        Ok(Consumer { seen_time: u(0), pel: u(8) })
    }
}

fn damaged() -> NodeError {
    NodeError::Internal("damaged stream consumer group row".into())
}

/// The rows of one stream's groups, and the writes a command makes to
/// them, applied with [`Groups::commit`] in one write with the key row.
/// Pending entries and consumers read or written by the command are kept,
/// so its later reads see its own writes.
struct Groups<'d, 'a> {
    db: &'d Db<'a>,
    key: &'d [u8],
    ops: Vec<WriteOp>,
    nacks: std::collections::HashMap<(Vec<u8>, StreamId), Option<Nack>>,
    consumers: std::collections::HashMap<(Vec<u8>, Vec<u8>), Option<Consumer>>,
}

impl<'d, 'a> Groups<'d, 'a> {
    fn new(db: &'d Db<'a>, key: &'d [u8]) -> Self {
        Groups {
            db,
            key,
            ops: Vec::new(),
            nacks: Default::default(),
            consumers: Default::default(),
        }
    }

    async fn group(&self, name: &[u8]) -> NodeResult<Option<Group>> {
        match self.db.read_row(row("Xg", self.key, &[name])).await? {
            Some(v) => Ok(Some(Group::decode(&v)?)),
            None => Ok(None),
        }
    }

    fn put_group(&mut self, name: &[u8], g: &Group) {
        self.ops.push(WriteOp::Put {
            key: row("Xg", self.key, &[name]).into(),
            value: g.encode().into(),
        });
    }

    async fn nack(&mut self, group: &[u8], id: StreamId) -> NodeResult<Option<Nack>> {
        let k = (group.to_vec(), id);
        if let Some(n) = self.nacks.get(&k) {
            return Ok(n.clone());
        }
        let n = match self.db.read_row(row("Xp", self.key, &[group, &id.bytes()])).await? {
            Some(v) => Some(Nack::decode(&v)?),
            None => None,
        };
        self.nacks.insert(k, n.clone());
        Ok(n)
    }

    /// Records `n` as entry `id`'s pending record (in the group's PEL and
    /// its consumer's; one of another consumer goes).
    async fn put_nack(&mut self, group: &[u8], id: StreamId, n: Nack) -> NodeResult<()> {
        if let Some(old) = self.nack(group, id).await?.filter(|o| o.consumer != n.consumer) {
            self.delete_nack(group, id, &old.consumer).await?;
        }
        let (pel, cpel) = (
            row("Xp", self.key, &[group, &id.bytes()]),
            row("Xq", self.key, &[group, &n.consumer, &id.bytes()]),
        );
        self.ops.push(WriteOp::Put { key: pel.into(), value: n.encode().into() });
        self.ops.push(WriteOp::Put { key: cpel.into(), value: Vec::new().into() });
        self.nacks.insert((group.to_vec(), id), Some(n));
        Ok(())
    }

    /// Removes entry `id`'s pending record, held by `consumer` (its count
    /// goes down).
    async fn delete_nack(&mut self, group: &[u8], id: StreamId, consumer: &[u8]) -> NodeResult<()> {
        self.ops.push(WriteOp::Delete { key: row("Xp", self.key, &[group, &id.bytes()]).into() });
        let cpel = row("Xq", self.key, &[group, consumer, &id.bytes()]);
        self.ops.push(WriteOp::Delete { key: cpel.into() });
        self.nacks.insert((group.to_vec(), id), None);
        self.add_pending(group, consumer, -1).await
    }

    async fn consumer(&mut self, group: &[u8], name: &[u8]) -> NodeResult<Option<Consumer>> {
        let k = (group.to_vec(), name.to_vec());
        if let Some(c) = self.consumers.get(&k) {
            return Ok(*c);
        }
        let c = match self.db.read_row(row("Xc", self.key, &[group, name])).await? {
            Some(v) => Some(Consumer::decode(&v)?),
            None => None,
        };
        self.consumers.insert(k, c);
        Ok(c)
    }

    fn put_consumer(&mut self, group: &[u8], name: &[u8], c: Consumer) {
        let r = row("Xc", self.key, &[group, name]);
        self.ops.push(WriteOp::Put { key: r.into(), value: c.encode().into() });
        self.consumers.insert((group.to_vec(), name.to_vec()), Some(c));
    }

    /// Adds `by` to consumer `name`'s pending count (if it exists).
    async fn add_pending(&mut self, group: &[u8], name: &[u8], by: i64) -> NodeResult<()> {
        if let Some(mut c) = self.consumer(group, name).await? {
            c.pel = c.pel.saturating_add_signed(by);
            self.put_consumer(group, name, c);
        }
        Ok(())
    }

    /// Consumer `name` of group `g` seen now: created (raising
    /// `xgroup-createconsumer`) when missing.
    async fn seen(&mut self, group: &[u8], g: &mut Group, name: &[u8]) -> NodeResult<()> {
        let c = match self.consumer(group, name).await? {
            Some(c) => Consumer { seen_time: now_ms(), ..c },
            None => {
                g.consumers += 1;
                self.db.notify(notify::STREAM, "xgroup-createconsumer", self.key);
                Consumer { seen_time: now_ms(), pel: 0 }
            }
        };
        self.put_consumer(group, name, c);
        Ok(())
    }

    /// Rows under `prefix` parts (a group's PEL, a consumer's PEL, a
    /// group's consumers), from `from` (the last part, inclusive), at most
    /// `limit` (0: all).
    async fn rows(
        &self,
        tag: &str,
        parts: &[&[u8]],
        from: Option<&[u8]>,
        limit: usize,
    ) -> NodeResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let prefix = row(tag, self.key, parts);
        let end = monotable_proto::keys::tuple_prefix_end(&prefix);
        let start = match from {
            Some(f) => {
                let mut all: Vec<&[u8]> = parts.to_vec();
                all.push(f);
                row(tag, self.key, &all)
            }
            None => prefix,
        };
        let mut out = Vec::new();
        let expected = if limit == 0 { 128 } else { limit };
        self.db
            .visit_rows_expecting(start, end, false, expected, |r, v| {
                out.push((r, v));
                Ok(limit == 0 || out.len() < limit)
            })
            .await?;
        Ok(out)
    }

    /// Writes the ops gathered and `s`'s key row in one write: quietly
    /// (see [`super::keyspace::Seen`]), as Redis 7.0 does not count a
    /// consumer group's changes as changes of the stream, unless it
    /// `creates` the stream (XGROUP CREATE ... MKSTREAM).
    async fn commit(mut self, s: &mut Stream, creates: bool) -> NodeResult<()> {
        self.ops.push(s.put_op(self.key));
        let ops = super::keyspace::last_op_per_row(std::mem::take(&mut self.ops));
        match creates {
            true => self.db.write(ops).await,
            false => self.db.write_quietly(ops).await,
        }
    }
}

/// Whether the stream has a deleted entry in `[start, end]` (Redis's
/// `streamRangeHasTombstones`).
fn range_has_tombstones(m: &Meta, start: StreamId, end: StreamId) -> bool {
    if m.length == 0 || m.max_deleted == StreamId::MIN || m.first_id > m.max_deleted {
        return false;
    }
    start <= m.max_deleted && m.max_deleted <= end
}

/// How many entries were added before and up to `id` (Redis's
/// `streamEstimateDistanceFromFirstEverEntry`), when that is known.
fn estimate_distance(m: &Meta, id: StreamId) -> Option<u64> {
    if m.entries_added == 0 {
        return Some(0);
    }
    if m.length == 0 && id <= m.last_id {
        return Some(m.entries_added);
    }
    match id.cmp(&m.last_id) {
        std::cmp::Ordering::Equal => return Some(m.entries_added),
        std::cmp::Ordering::Greater => return None,
        std::cmp::Ordering::Less => {}
    }
    if m.max_deleted == StreamId::MIN || m.max_deleted < m.first_id {
        match id.cmp(&m.first_id) {
            std::cmp::Ordering::Less => return Some(m.entries_added - m.length),
            std::cmp::Ordering::Equal => return Some(m.entries_added - m.length + 1),
            std::cmp::Ordering::Greater => {}
        }
    }
    None
}

/// The group's lag (entries not yet delivered), when known (Redis's
/// `streamReplyWithCGLag`).
fn lag(m: &Meta, g: &Group) -> Reply {
    let lag = if m.entries_added == 0 {
        Some(0)
    } else if let Some(read) =
        g.entries_read.filter(|_| !range_has_tombstones(m, g.last_id, StreamId::MAX))
    {
        Some(m.entries_added as i64 - read as i64)
    } else {
        estimate_distance(m, g.last_id).map(|read| m.entries_added as i64 - read as i64)
    };
    lag.map_or(Reply::Null, Reply::Int)
}

fn entries_read_reply(g: &Group) -> Reply {
    g.entries_read.map_or(Reply::Null, |n| Reply::Int(n as i64))
}

/// The stream at `key` and its group `name`, each if it exists;
/// WRONGTYPE for a key of another type.
async fn stream_and_group(
    db: &Db<'_>,
    key: &[u8],
    name: &[u8],
) -> NodeResult<Result<(Option<Stream>, Option<Group>), Reply>> {
    let found = match streams::load(db, key).await? {
        Ok(found) => found,
        Err(reply) => return Ok(Err(reply)),
    };
    let group = match &found {
        Some(_) => Groups::new(db, key).group(name).await?,
        None => None,
    };
    Ok(Ok((found, group)))
}

/// Runs XGROUP, XREADGROUP, XACK, XPENDING, XCLAIM or XAUTOCLAIM.
pub async fn run(
    state: &RespState,
    conn: &mut Conn,
    db: &Db<'_>,
    command: &Command,
    args: &[Vec<u8>],
) -> NodeResult<Reply> {
    let dbi = conn.db;
    match command.name {
        "xgroup" => xgroup(state, dbi, db, args).await,
        "xreadgroup" => xreadgroup(state, conn, db, args).await,
        "xack" => {
            let _g = state.lock(dbi, &[&args[1]]).await;
            xack(db, args).await
        }
        "xpending" => xpending(db, args).await,
        "xclaim" => {
            let _g = state.lock(dbi, &[&args[1]]).await;
            xclaim(db, args).await
        }
        "xautoclaim" => {
            let _g = state.lock(dbi, &[&args[1]]).await;
            xautoclaim(db, args).await
        }
        other => Err(misrouted(other)),
    }
}

/// XGROUP's help, word for word as Redis 7.0 gives it.
const XGROUP_HELP: &[&str] = &[
    "XGROUP <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "CREATE <key> <groupname> <id|$> [option]",
    "    Create a new consumer group. Options are:",
    "    * MKSTREAM",
    "      Create the empty stream if it does not exist.",
    "    * ENTRIESREAD entries_read",
    "      Set the group's entries_read counter (internal use).",
    "CREATECONSUMER <key> <groupname> <consumer>",
    "    Create a new consumer in the specified group.",
    "DELCONSUMER <key> <groupname> <consumer>",
    "    Remove the specified consumer.",
    "DESTROY <key> <groupname>",
    "    Remove the specified group.",
    "SETID <key> <groupname> <id|$> [ENTRIESREAD entries_read]",
    "    Set the current group ID and entries_read counter.",
    "HELP",
    "    Prints this help.",
];

fn nogroup_for_key(group: &[u8], key: &[u8]) -> Reply {
    Reply::err(format!(
        "NOGROUP No such consumer group '{}' for key name '{}'",
        String::from_utf8_lossy(group),
        String::from_utf8_lossy(key)
    ))
}

fn nogroup(key: &[u8], group: &[u8]) -> Reply {
    Reply::err(format!(
        "NOGROUP No such key '{}' or consumer group '{}'",
        String::from_utf8_lossy(key),
        String::from_utf8_lossy(group)
    ))
}

/// XGROUP CREATE | SETID | DESTROY | CREATECONSUMER | DELCONSUMER | HELP.
async fn xgroup(state: &RespState, dbi: u32, db: &Db<'_>, args: &[Vec<u8>]) -> NodeResult<Reply> {
    let sub = lower(&args[1]);
    if sub == "help" {
        return Ok(Reply::Array(XGROUP_HELP.iter().map(|l| Reply::Simple(l)).collect()));
    }
    let (key, name) = (&args[2], &args[3]);
    let mut mkstream = false;
    let mut entries_read: Option<u64> = None;
    let mut i = 5;
    while i < args.len() {
        let opt = lower(&args[i]);
        if sub == "create" && opt == "mkstream" {
            mkstream = true;
            i += 1;
        } else if (sub == "create" || sub == "setid") && opt == "entriesread" && i + 1 < args.len()
        {
            let n = or_reply!(super::args::integer(&args[i + 1]));
            if n < -1 {
                return Ok(Reply::err("ERR value for ENTRIESREAD must be positive or -1"));
            }
            entries_read = (n >= 0).then_some(n as u64);
            i += 2;
        } else {
            return Ok(subcommand_syntax(&args[0], &args[1]));
        }
    }
    let _g = state.lock(dbi, &[key]).await;
    let found = match streams::load(db, key).await? {
        Ok(found) => found,
        Err(reply) => return Ok(reply),
    };
    let mut groups = Groups::new(db, key);
    let group = match &found {
        Some(_) => groups.group(name).await?,
        None => None,
    };
    if !mkstream {
        if found.is_none() {
            return Ok(Reply::err(
                "ERR The XGROUP subcommand requires the key to exist. Note that for CREATE you \
                 may want to use the MKSTREAM option to create an empty stream automatically.",
            ));
        }
        if group.is_none() && matches!(sub.as_str(), "setid" | "createconsumer" | "delconsumer") {
            return Ok(nogroup_for_key(name, key));
        }
    }
    let arity = args.len();
    match sub.as_str() {
        "create" if (5..=8).contains(&arity) => {
            let id = match args[4].as_slice() {
                b"$" => found.as_ref().map_or(StreamId::MIN, |s| s.meta.last_id),
                other => or_reply!(strict_id(other)),
            };
            if group.is_some() {
                return Ok(Reply::err("BUSYGROUP Consumer Group name already exists"));
            }
            let creates = found.is_none();
            let mut s = found.unwrap_or_else(Stream::empty);
            s.meta.groups += 1;
            let g = Group { last_id: id, entries_read, pel: 0, consumers: 0 };
            groups.put_group(name, &g);
            groups.commit(&mut s, creates).await?;
            db.notify(notify::STREAM, "xgroup-create", key);
            Ok(Reply::ok())
        }
        "setid" if arity == 5 || arity == 7 => {
            let (Some(mut s), Some(mut g)) = (found, group) else {
                return Ok(nogroup_for_key(name, key));
            };
            g.last_id = match args[4].as_slice() {
                b"$" => s.meta.last_id,
                other => or_reply!(streams::parse_id(other, 0, false, false)).id,
            };
            g.entries_read = entries_read;
            groups.put_group(name, &g);
            groups.commit(&mut s, false).await?;
            db.notify(notify::STREAM, "xgroup-setid", key);
            Ok(Reply::ok())
        }
        "destroy" if arity == 4 => {
            let (Some(mut s), Some(_)) = (found, group) else { return Ok(Reply::Int(0)) };
            for tag in ["Xp", "Xc", "Xq"] {
                for (r, _) in groups.rows(tag, &[name], None, 0).await? {
                    groups.ops.push(WriteOp::Delete { key: r.into() });
                }
            }
            groups.ops.push(WriteOp::Delete { key: row("Xg", key, &[name]).into() });
            s.meta.groups -= 1;
            groups.commit(&mut s, false).await?;
            db.notify(notify::STREAM, "xgroup-destroy", key);
            Ok(Reply::Int(1))
        }
        "createconsumer" if arity == 5 => {
            let (Some(mut s), Some(mut g)) = (found, group) else {
                return Ok(nogroup_for_key(name, key));
            };
            if groups.consumer(name, &args[4]).await?.is_some() {
                return Ok(Reply::Int(0));
            }
            groups.put_consumer(name, &args[4], Consumer { seen_time: now_ms(), pel: 0 });
            g.consumers += 1;
            groups.put_group(name, &g);
            groups.commit(&mut s, false).await?;
            db.notify(notify::STREAM, "xgroup-createconsumer", key);
            Ok(Reply::Int(1))
        }
        "delconsumer" if arity == 5 => {
            let (Some(mut s), Some(mut g)) = (found, group) else {
                return Ok(nogroup_for_key(name, key));
            };
            let Some(c) = groups.consumer(name, &args[4]).await? else { return Ok(Reply::Int(0)) };
            for (r, _) in groups.rows("Xq", &[name, &args[4]], None, 0).await? {
                let id = streams::id_of_row(&r)?;
                groups.delete_nack(name, id, &args[4]).await?;
            }
            groups.ops.push(WriteOp::Delete { key: row("Xc", key, &[name, &args[4]]).into() });
            g.consumers -= 1;
            g.pel -= c.pel;
            groups.put_group(name, &g);
            groups.commit(&mut s, false).await?;
            db.notify(notify::STREAM, "xgroup-delconsumer", key);
            Ok(Reply::Int(c.pel as i64))
        }
        _ => Ok(subcommand_syntax(&args[0], &args[1])),
    }
}

/// XREADGROUP GROUP group consumer [COUNT count] [BLOCK milliseconds]
/// [NOACK] STREAMS key [key ...] id [id ...]
async fn xreadgroup(
    state: &RespState,
    conn: &mut Conn,
    db: &Db<'_>,
    args: &[Vec<u8>],
) -> NodeResult<Reply> {
    let r = or_reply!(read_args(args, true, conn.in_script));
    let (group_name, consumer_name) = r.group.clone().expect("XREADGROUP's GROUP was checked");
    let keys: Vec<&[u8]> = r.keys.iter().map(Vec::as_slice).collect();
    let _g = state.lock(conn.db, &keys).await;
    // Woken after its client was killed or unblocked (while this run
    // waited for the keys): it takes nothing, and its wait ends so.
    let taking = !(conn.retrying && conn.info.leaving());
    // Checked first, key by key, as Redis: the type, the group, the ID.
    let mut reads = Vec::with_capacity(r.keys.len());
    for (key, id) in r.keys.iter().zip(&r.ids) {
        let found = match streams::load(db, key).await? {
            Ok(found) => found,
            Err(_) if conn.retrying => {
                return Ok(Reply::err("UNBLOCKED the stream key no longer exists"))
            }
            Err(reply) => return Ok(reply),
        };
        let group = match &found {
            Some(_) => Groups::new(db, key).group(&group_name).await?,
            None => None,
        };
        let exists = found.is_some();
        let (Some(_), Some(_)) = (found, group) else {
            if conn.retrying {
                return Ok(Reply::err(if exists {
                    "NOGROUP the consumer group this client was blocked on no longer exists"
                } else {
                    "UNBLOCKED the stream key no longer exists"
                }));
            }
            return Ok(Reply::err(format!(
                "NOGROUP No such key '{}' or consumer group '{}' in XREADGROUP with GROUP option",
                String::from_utf8_lossy(key),
                String::from_utf8_lossy(&group_name)
            )));
        };
        let from =
            match id.as_slice() {
                b"$" => return Ok(Reply::err(
                    "ERR The $ ID is meaningless in the context of XREADGROUP: you want to read \
                     the history of this consumer by specifying a proper ID, or use the > ID to \
                     get new messages. The $ ID would just return an empty result set.",
                )),
                b">" => None,
                other => Some(or_reply!(strict_id(other))),
            };
        reads.push((key, from));
    }
    let mut served = Vec::new();
    for (key, from) in reads.into_iter().filter(|_| taking) {
        // Read again: a key given twice sees what its first read did.
        let (Ok(Some(mut s)), Some(mut g)) =
            (streams::load(db, key).await?, Groups::new(db, key).group(&group_name).await?)
        else {
            return Err(NodeError::Internal("a stream checked for XREADGROUP went".into()));
        };
        let mut groups = Groups::new(db, key);
        let entries = match from {
            // History: the consumer's own pending entries after `after`.
            Some(after) => {
                groups.seen(&group_name, &mut g, &consumer_name).await?;
                groups.put_group(&group_name, &g);
                history(&mut groups, &group_name, &consumer_name, after, r.count).await?
            }
            None => {
                let top = streams::edge_id(db, key, true).await?;
                if top.is_none_or(|t| t <= g.last_id) {
                    continue;
                }
                groups.seen(&group_name, &mut g, &consumer_name).await?;
                let start = g.last_id.next().unwrap_or(StreamId::MAX);
                let found = streams::range(db, key, start, StreamId::MAX, r.count, false).await?;
                let mut out = Vec::with_capacity(found.len());
                for (id, pairs) in found {
                    let to = (group_name.as_slice(), consumer_name.as_slice());
                    deliver(&mut groups, &s.meta, to, &mut g, id, r.noack).await?;
                    out.push(entry_reply((id, pairs)));
                }
                groups.put_group(&group_name, &g);
                out
            }
        };
        groups.commit(&mut s, false).await?;
        served.push((key.clone(), entries));
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
            args: r.blocked(r.ids.clone()),
            poll: false,
        });
    }
    Ok(Reply::NullArray)
}

/// Delivers entry `id` to a consumer (`to`: the group's name and the
/// consumer's) of group `g` (Redis's `streamReplyWithRange` with a
/// group): the group's last ID and read counter move on, and unless
/// `noack` the entry is pending for the consumer (taken from another that
/// had it, its count back to 1).
async fn deliver(
    groups: &mut Groups<'_, '_>,
    m: &Meta,
    (group_name, consumer_name): (&[u8], &[u8]),
    g: &mut Group,
    id: StreamId,
    noack: bool,
) -> NodeResult<()> {
    if id > g.last_id {
        if g.entries_read.is_some() && !range_has_tombstones(m, id, StreamId::MAX) {
            g.entries_read = g.entries_read.map(|n| n + 1);
        } else if m.entries_added > 0 {
            g.entries_read = estimate_distance(m, id);
        }
        g.last_id = id;
    }
    if noack {
        return Ok(());
    }
    let old = groups.nack(group_name, id).await?;
    if old.is_none() {
        g.pel += 1;
    }
    if old.is_none_or(|o| o.consumer != consumer_name) {
        groups.add_pending(group_name, consumer_name, 1).await?;
    }
    let nack =
        Nack { delivery_time: now_ms(), delivery_count: 1, consumer: consumer_name.to_vec() };
    groups.put_nack(group_name, id, nack).await
}

/// A consumer's history after `after` (Redis's
/// `streamReplyWithRangeFromConsumerPEL`): its pending entries, each
/// counted as delivered again; an entry deleted since as `[id, nil]`.
async fn history(
    groups: &mut Groups<'_, '_>,
    group_name: &[u8],
    consumer_name: &[u8],
    after: StreamId,
    count: u64,
) -> NodeResult<Vec<Reply>> {
    let Some(start) = after.next() else { return Ok(Vec::new()) };
    let limit = usize::try_from(count).unwrap_or(usize::MAX);
    let rows = groups.rows("Xq", &[group_name, consumer_name], Some(&start.bytes()), limit).await?;
    let mut out = Vec::with_capacity(rows.len());
    for (r, _) in rows {
        let id = streams::id_of_row(&r)?;
        let entry = streams::range(groups.db, groups.key, id, id, 1, false).await?;
        match entry.into_iter().next() {
            Some(e) => {
                if let Some(mut n) = groups.nack(group_name, id).await? {
                    n.delivery_time = now_ms();
                    n.delivery_count += 1;
                    groups.put_nack(group_name, id, n).await?;
                }
                out.push(entry_reply(e));
            }
            None => out.push(Reply::Array(vec![id.reply(), Reply::NullArray])),
        }
    }
    Ok(out)
}

/// XACK key group id [id ...]
async fn xack(db: &Db<'_>, args: &[Vec<u8>]) -> NodeResult<Reply> {
    let key = &args[1];
    let Some(mut s) = (match streams::load(db, key).await? {
        Ok(found) => found,
        Err(reply) => return Ok(reply),
    }) else {
        return Ok(Reply::Int(0));
    };
    let mut groups = Groups::new(db, key);
    let Some(mut g) = groups.group(&args[2]).await? else { return Ok(Reply::Int(0)) };
    let mut ids = Vec::with_capacity(args.len() - 3);
    for a in &args[3..] {
        ids.push(or_reply!(strict_id(a)));
    }
    let mut acked = 0;
    for id in ids {
        if let Some(n) = groups.nack(&args[2], id).await? {
            groups.delete_nack(&args[2], id, &n.consumer).await?;
            g.pel -= 1;
            acked += 1;
        }
    }
    if acked > 0 {
        groups.put_group(&args[2], &g);
        groups.commit(&mut s, false).await?;
    }
    Ok(Reply::Int(acked))
}

/// XPENDING key group [[IDLE min-idle-time] start end count [consumer]]
async fn xpending(db: &Db<'_>, args: &[Vec<u8>]) -> NodeResult<Reply> {
    let argc = args.len();
    if argc != 3 && !(6..=9).contains(&argc) {
        return Ok(Reply::err(SYNTAX));
    }
    let mut range = None;
    if argc >= 6 {
        let mut at = 3;
        let mut min_idle = 0i64;
        if lower(&args[3]) == "idle" {
            min_idle = or_reply!(super::args::integer(&args[4]));
            if argc < 8 {
                return Ok(Reply::err(SYNTAX));
            }
            at += 2;
        }
        let count = or_reply!(super::args::integer(&args[at + 2])).max(0) as u64;
        let start = or_reply!(interval_bound(&args[at], true));
        let end = or_reply!(interval_bound(&args[at + 1], false));
        let consumer = args.get(at + 3).cloned();
        range = Some((min_idle, start, end, count, consumer));
    }
    let (key, group_name) = (&args[1], &args[2]);
    let (_, group) = or_reply!(stream_and_group(db, key, group_name).await?);
    let mut groups = Groups::new(db, key);
    let Some(g) = group else { return Ok(nogroup(key, group_name)) };
    let Some((min_idle, start, end, count, consumer)) = range else {
        if g.pel == 0 {
            return Ok(Reply::Array(vec![
                Reply::Int(0),
                Reply::Null,
                Reply::Null,
                Reply::NullArray,
            ]));
        }
        let first = groups.rows("Xp", &[group_name], None, 1).await?;
        let prefix = row("Xp", key, &[group_name]);
        let mut last = None;
        db.visit_rows_expecting(
            prefix.clone(),
            monotable_proto::keys::tuple_prefix_end(&prefix),
            true,
            1,
            |r, _| {
                last = Some(r);
                Ok(false)
            },
        )
        .await?;
        let id_of = |r: Option<&Vec<u8>>| -> NodeResult<Reply> {
            Ok(match r {
                Some(r) => streams::id_of_row(r)?.reply(),
                None => Reply::Null,
            })
        };
        let mut per_consumer = Vec::new();
        for (r, v) in groups.rows("Xc", &[group_name], None, 0).await? {
            let c = Consumer::decode(&v)?;
            if c.pel > 0 {
                let name = super::keyspace::last_bytes(&r)?;
                per_consumer
                    .push(Reply::Array(vec![Reply::Bulk(name), Reply::bulk(c.pel.to_string())]));
            }
        }
        return Ok(Reply::Array(vec![
            Reply::Int(g.pel as i64),
            id_of(first.first().map(|(r, _)| r))?,
            id_of(last.as_ref())?,
            Reply::Array(per_consumer),
        ]));
    };
    if let Some(name) = &consumer {
        if groups.consumer(group_name, name).await?.is_none() {
            return Ok(Reply::Array(Vec::new()));
        }
    }
    let now = now_ms() as i64;
    let mut out = Vec::new();
    if count == 0 || start > end {
        return Ok(Reply::Array(out));
    }
    // The PEL (or the consumer's) from `start`, until `end` or `count`.
    let (tag, parts): (&str, Vec<&[u8]>) = match &consumer {
        Some(name) => ("Xq", vec![group_name.as_slice(), name.as_slice()]),
        None => ("Xp", vec![group_name.as_slice()]),
    };
    let prefix = row(tag, key, &parts);
    let mut from = parts.clone();
    let start_bytes = start.bytes();
    from.push(&start_bytes);
    let lo = row(tag, key, &from);
    // A page of the PEL at a time, each pending entry filtered as read,
    // until `count` are found or the range ends.
    let end_row = monotable_proto::keys::tuple_prefix_end(&prefix);
    let mut cursor = lo;
    'pages: loop {
        let (rows, next) = db.scan_page(cursor, end_row.clone(), false, 256).await?;
        for (r, v) in rows {
            let id = streams::id_of_row(&r)?;
            if id > end || out.len() as u64 >= count {
                break 'pages;
            }
            let n = match tag {
                "Xp" => Nack::decode(&v)?,
                _ => match groups.nack(group_name, id).await? {
                    Some(n) => n,
                    None => continue,
                },
            };
            let idle = now - n.delivery_time as i64;
            if min_idle != 0 && idle < min_idle {
                continue;
            }
            out.push(Reply::Array(vec![
                id.reply(),
                Reply::Bulk(n.consumer),
                Reply::Int(idle.max(0)),
                Reply::Int(n.delivery_count as i64),
            ]));
        }
        match next {
            Some(n) if (out.len() as u64) < count => cursor = n,
            _ => break,
        }
    }
    Ok(Reply::Array(out))
}

/// Gives the pending entry `id` (`n`, its record, with no consumer when
/// XCLAIM FORCE made it) to consumer `name` of group `group_name`, seen
/// now (XCLAIM, XAUTOCLAIM).
async fn claim(
    groups: &mut Groups<'_, '_>,
    (group_name, g): (&[u8], &mut Group),
    name: &[u8],
    id: StreamId,
    mut n: Nack,
) -> NodeResult<()> {
    groups.seen(group_name, g, name).await?;
    if n.consumer != name {
        groups.add_pending(group_name, name, 1).await?;
        n.consumer = name.to_vec();
    }
    groups.put_nack(group_name, id, n).await
}

/// XCLAIM key group consumer min-idle-time id [id ...] [IDLE ms]
/// [TIME unix-time-milliseconds] [RETRYCOUNT count] [FORCE] [JUSTID]
/// [LASTID lastid]
async fn xclaim(db: &Db<'_>, args: &[Vec<u8>]) -> NodeResult<Reply> {
    let (key, group_name, name) = (&args[1], &args[2], &args[3]);
    let (found, group) = or_reply!(stream_and_group(db, key, group_name).await?);
    let mut groups = Groups::new(db, key);
    let (Some(mut s), Some(mut g)) = (found, group) else { return Ok(nogroup(key, group_name)) };
    let Some(min_idle) = parse_i64(&args[4]) else {
        return Ok(Reply::err("ERR Invalid min-idle-time argument for XCLAIM"));
    };
    let min_idle = min_idle.max(0);
    let mut ids = Vec::new();
    let mut j = 5;
    while j < args.len() {
        match strict_id(&args[j]) {
            Ok(id) => ids.push(id),
            Err(_) => break,
        }
        j += 1;
    }
    let now = now_ms() as i64;
    let (mut force, mut justid) = (false, false);
    let (mut delivery_time, mut retry_count, mut last_id) = (None, None, StreamId::MIN);
    while j < args.len() {
        let more = j + 1 < args.len();
        let number = |what: &str| -> Result<i64, Reply> {
            parse_i64(&args[j + 1])
                .ok_or_else(|| Reply::err(format!("ERR Invalid {what} option argument for XCLAIM")))
        };
        match lower(&args[j]).as_str() {
            "force" => force = true,
            "justid" => justid = true,
            "idle" if more => {
                delivery_time = Some(now.wrapping_sub(or_reply!(number("IDLE"))));
                j += 1;
            }
            "time" if more => {
                delivery_time = Some(or_reply!(number("TIME")));
                j += 1;
            }
            "retrycount" if more => {
                retry_count = Some(or_reply!(number("RETRYCOUNT")));
                j += 1;
            }
            "lastid" if more => {
                last_id = or_reply!(strict_id(&args[j + 1]));
                j += 1;
            }
            _ => {
                return Ok(Reply::err(format!(
                    "ERR Unrecognized XCLAIM option '{}'",
                    String::from_utf8_lossy(&args[j])
                )))
            }
        }
        j += 1;
    }
    if last_id > g.last_id {
        g.last_id = last_id;
    }
    let delivery_time = match delivery_time {
        Some(t) if t >= 0 && t <= now => t as u64,
        _ => now as u64,
    };
    let mut out = Vec::new();
    for id in ids {
        let nack = groups.nack(group_name, id).await?;
        let entry = streams::range(db, key, id, id, 1, false).await?.into_iter().next();
        let Some(entry) = entry else {
            if let Some(n) = nack {
                groups.delete_nack(group_name, id, &n.consumer).await?;
                g.pel -= 1;
            }
            continue;
        };
        let nack = match nack {
            Some(n) => n,
            // As Redis's `streamCreateNACK`: delivered once, now.
            None if force => {
                g.pel += 1;
                Nack { delivery_time: now as u64, delivery_count: 1, consumer: Vec::new() }
            }
            None => continue,
        };
        if !nack.consumer.is_empty() && min_idle > 0 && now - (nack.delivery_time as i64) < min_idle
        {
            continue;
        }
        let mut n = nack;
        n.delivery_time = delivery_time;
        match retry_count {
            Some(r) if r >= 0 => n.delivery_count = r as u64,
            _ if !justid => n.delivery_count += 1,
            _ => {}
        }
        claim(&mut groups, (group_name, &mut g), name, id, n).await?;
        out.push(if justid { id.reply() } else { entry_reply(entry) });
    }
    groups.put_group(group_name, &g);
    groups.commit(&mut s, false).await?;
    Ok(Reply::Array(out))
}

/// XAUTOCLAIM key group consumer min-idle-time start [COUNT count]
/// [JUSTID]: `[next start, claimed, deleted IDs]`.
async fn xautoclaim(db: &Db<'_>, args: &[Vec<u8>]) -> NodeResult<Reply> {
    let (key, group_name, name) = (&args[1], &args[2], &args[3]);
    let Some(min_idle) = parse_i64(&args[4]) else {
        return Ok(Reply::err("ERR Invalid min-idle-time argument for XAUTOCLAIM"));
    };
    let min_idle = min_idle.max(0);
    let start = or_reply!(interval_bound(&args[5], true));
    let (mut count, mut justid) = (100i64, false);
    let mut j = 6;
    while j < args.len() {
        let more = j + 1 < args.len();
        match lower(&args[j]).as_str() {
            "count" if more => {
                let max = i64::MAX / 16;
                match parse_i64(&args[j + 1]) {
                    Some(n) if (1..=max).contains(&n) => count = n,
                    _ => return Ok(Reply::err("ERR COUNT must be > 0")),
                }
                j += 1;
            }
            "justid" => justid = true,
            _ => return Ok(Reply::err(SYNTAX)),
        }
        j += 1;
    }
    let (found, group) = or_reply!(stream_and_group(db, key, group_name).await?);
    let mut groups = Groups::new(db, key);
    let (Some(mut s), Some(mut g)) = (found, group) else { return Ok(nogroup(key, group_name)) };
    let now = now_ms();
    let mut attempts = count.saturating_mul(10);
    let (mut claimed, mut deleted) = (Vec::new(), Vec::new());
    let prefix = row("Xp", key, &[group_name]);
    let end = monotable_proto::keys::tuple_prefix_end(&prefix);
    let mut cursor = row("Xp", key, &[group_name, &start.bytes()]);
    let mut next_id = StreamId::MIN;
    'scan: loop {
        let (rows, resume) = db.scan_page(cursor.clone(), end.clone(), false, 256).await?;
        for (r, v) in rows {
            let id = streams::id_of_row(&r)?;
            if attempts == 0 || count == 0 {
                next_id = id;
                break 'scan;
            }
            attempts -= 1;
            let n = Nack::decode(&v)?;
            let entry = streams::range(db, key, id, id, 1, false).await?.into_iter().next();
            let Some(entry) = entry else {
                groups.delete_nack(group_name, id, &n.consumer).await?;
                g.pel -= 1;
                deleted.push(id.reply());
                count -= 1;
                continue;
            };
            if min_idle > 0 && (now as i64) - (n.delivery_time as i64) < min_idle {
                continue;
            }
            let mut n = n;
            n.delivery_time = now;
            if !justid {
                n.delivery_count += 1;
            }
            claim(&mut groups, (group_name, &mut g), name, id, n).await?;
            claimed.push(if justid { id.reply() } else { entry_reply(entry) });
            count -= 1;
        }
        match resume {
            Some(r) => cursor = r,
            None => break,
        }
    }
    groups.put_group(group_name, &g);
    groups.commit(&mut s, false).await?;
    Ok(Reply::Array(vec![next_id.reply(), Reply::Array(claimed), Reply::Array(deleted)]))
}

/// XINFO GROUPS key; XINFO CONSUMERS key group.
pub async fn xinfo(
    db: &Db<'_>,
    key: &[u8],
    s: &Stream,
    sub: &str,
    args: &[Vec<u8>],
) -> NodeResult<Reply> {
    let groups = Groups::new(db, key);
    match sub {
        "groups" if args.len() == 3 => {
            let mut out = Vec::new();
            for (r, v) in groups.rows("Xg", &[], None, 0).await? {
                let name = super::keyspace::last_bytes(&r)?;
                let g = Group::decode(&v)?;
                out.push(Reply::Map(vec![
                    (Reply::bulk("name"), Reply::Bulk(name)),
                    (Reply::bulk("consumers"), Reply::Int(g.consumers as i64)),
                    (Reply::bulk("pending"), Reply::Int(g.pel as i64)),
                    (Reply::bulk("last-delivered-id"), g.last_id.reply()),
                    (Reply::bulk("entries-read"), entries_read_reply(&g)),
                    (Reply::bulk("lag"), lag(&s.meta, &g)),
                ]));
            }
            Ok(Reply::Array(out))
        }
        "consumers" if args.len() == 4 => {
            if groups.group(&args[3]).await?.is_none() {
                return Ok(nogroup_for_key(&args[3], key));
            }
            let now = now_ms() as i64;
            let mut out = Vec::new();
            for (r, v) in groups.rows("Xc", &[&args[3]], None, 0).await? {
                let name = super::keyspace::last_bytes(&r)?;
                let c = Consumer::decode(&v)?;
                out.push(Reply::Map(vec![
                    (Reply::bulk("name"), Reply::Bulk(name)),
                    (Reply::bulk("pending"), Reply::Int(c.pel as i64)),
                    (Reply::bulk("idle"), Reply::Int((now - c.seen_time as i64).max(0))),
                ]));
            }
            Ok(Reply::Array(out))
        }
        _ => Ok(subcommand_syntax(&args[0], &args[1])),
    }
}

/// The `groups` of XINFO STREAM FULL, each PEL and consumer PEL cut at
/// `count` (0: all).
pub async fn full_groups(db: &Db<'_>, key: &[u8], s: &Stream, count: u64) -> NodeResult<Reply> {
    let mut groups = Groups::new(db, key);
    let limit = usize::try_from(count).unwrap_or(usize::MAX);
    let mut out = Vec::new();
    for (r, v) in groups.rows("Xg", &[], None, 0).await? {
        let name = super::keyspace::last_bytes(&r)?;
        let g = Group::decode(&v)?;
        let mut pending = Vec::new();
        for (r, v) in groups.rows("Xp", &[&name], None, limit).await? {
            let n = Nack::decode(&v)?;
            pending.push(Reply::Array(vec![
                streams::id_of_row(&r)?.reply(),
                Reply::Bulk(n.consumer),
                Reply::Int(n.delivery_time as i64),
                Reply::Int(n.delivery_count as i64),
            ]));
        }
        let mut consumers = Vec::new();
        for (r, v) in groups.rows("Xc", &[&name], None, 0).await? {
            let cname = super::keyspace::last_bytes(&r)?;
            let c = Consumer::decode(&v)?;
            let mut own = Vec::new();
            for (r, _) in groups.rows("Xq", &[&name, &cname], None, limit).await? {
                let id = streams::id_of_row(&r)?;
                let n = groups.nack(&name, id).await?.ok_or_else(damaged)?;
                own.push(Reply::Array(vec![
                    id.reply(),
                    Reply::Int(n.delivery_time as i64),
                    Reply::Int(n.delivery_count as i64),
                ]));
            }
            consumers.push(Reply::Map(vec![
                (Reply::bulk("name"), Reply::Bulk(cname)),
                (Reply::bulk("seen-time"), Reply::Int(c.seen_time as i64)),
                (Reply::bulk("pel-count"), Reply::Int(c.pel as i64)),
                (Reply::bulk("pending"), Reply::Array(own)),
            ]));
        }
        out.push(Reply::Map(vec![
            (Reply::bulk("name"), Reply::Bulk(name)),
            (Reply::bulk("last-delivered-id"), g.last_id.reply()),
            (Reply::bulk("entries-read"), entries_read_reply(&g)),
            (Reply::bulk("lag"), lag(&s.meta, &g)),
            (Reply::bulk("pel-count"), Reply::Int(g.pel as i64)),
            (Reply::bulk("pending"), Reply::Array(pending)),
            (Reply::bulk("consumers"), Reply::Array(consumers)),
        ]));
    }
    Ok(Reply::Array(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ms: u64) -> StreamId {
        StreamId { ms, seq: 0 }
    }

    #[test]
    fn lag_and_read_counters_follow_redis() {
        let m = Meta {
            length: 3,
            last_id: id(3),
            first_id: id(1),
            entries_added: 3,
            ..Meta::default()
        };
        assert_eq!(estimate_distance(&m, id(3)), Some(3));
        assert_eq!(estimate_distance(&m, id(1)), Some(1));
        assert_eq!(estimate_distance(&m, id(0)), Some(0));
        assert_eq!(estimate_distance(&m, id(2)), None);
        assert_eq!(estimate_distance(&m, id(4)), None);
        let g = Group { last_id: id(1), entries_read: Some(1), pel: 0, consumers: 0 };
        assert_eq!(lag(&m, &g), Reply::Int(2));
        let fragmented = Meta { max_deleted: id(2), ..m };
        assert!(range_has_tombstones(&fragmented, id(1), StreamId::MAX));
        assert_eq!(lag(&fragmented, &g), Reply::Null);
        let g = Group { last_id: id(3), entries_read: None, pel: 0, consumers: 0 };
        assert_eq!(lag(&fragmented, &g), Reply::Int(0));
        assert_eq!(Group::decode(&g.encode()).ok(), Some(g));
    }
}
