//! How a stream is stored, and the operations on it that its commands
//! share: appending, trimming, deleting and reading entries.
//!
//! A stream (TYPE 5) is its key row, whose payload is the stream's
//! [`Meta`] (its length first, as every collection's count), and rows
//! under the key:
//!
//! - entry: `("X", KEY, ID)` -> the fields and values, a MessagePack array
//!   of binaries `[field, value, ...]` (fields may repeat, as in Redis);
//!   `ID` is the entry ID as 16 bytes big-endian (ms, seq), so rows sort
//!   in ID order.
//! - node: `("Xn", KEY, MASTER_ID)` -> a [`Node`]: Redis keeps entries in
//!   radix-tree nodes of listpacks, and the approximate trims (`~`), the
//!   LIMIT of a trim and XINFO's `radix-tree-keys` depend on where one
//!   node ends. Each node row stands for one such listpack: its first
//!   (master) entry's ID, its live and deleted entry counts, its size in
//!   bytes as a listpack would have it, its last entry's ID and the master
//!   entry's fields. A new node starts, as in Redis's
//!   `streamAppendItem`, when the tail one holds `stream-node-max-entries`
//!   entries (live and deleted) or would pass `stream-node-max-bytes`.
//! - consumer groups (see [`super::stream_groups`]): `("Xg", KEY, GROUP)`,
//!   its pending entries `("Xp", KEY, GROUP, ID)`, its consumers
//!   `("Xc", KEY, GROUP, CONSUMER)` and each consumer's pending entries
//!   `("Xq", KEY, GROUP, CONSUMER, ID)`.
//!
//! A deleted entry's row goes; the node counts it as deleted, and goes
//! itself with its last live entry, as Redis frees a listpack.

use monotable_proto::tuple::{self, Element};
use monotable_proto::WriteOp;

use super::errors::WRONGTYPE;
use super::keyspace::{key_row, Db, Value};
use super::reply::Reply;
use crate::error::{NodeError, NodeResult};

pub const KIND_STREAM: u8 = 5;

/// The tags of a stream's rows under its key (see the module doc).
pub const ROW_TAGS: [&str; 6] = ["X", "Xn", "Xg", "Xp", "Xc", "Xq"];

/// A stream entry ID: milliseconds and a sequence number.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId {
    pub ms: u64,
    pub seq: u64,
}

impl StreamId {
    pub const MIN: StreamId = StreamId { ms: 0, seq: 0 };
    pub const MAX: StreamId = StreamId { ms: u64::MAX, seq: u64::MAX };

    /// The next ID (Redis's `streamIncrID`); `None` after the last.
    pub fn next(self) -> Option<StreamId> {
        match self.seq.checked_add(1) {
            Some(seq) => Some(StreamId { ms: self.ms, seq }),
            None => self.ms.checked_add(1).map(|ms| StreamId { ms, seq: 0 }),
        }
    }

    /// The ID before (Redis's `streamDecrID`); `None` before `0-0`.
    pub fn prev(self) -> Option<StreamId> {
        match self.seq.checked_sub(1) {
            Some(seq) => Some(StreamId { ms: self.ms, seq }),
            None => self.ms.checked_sub(1).map(|ms| StreamId { ms, seq: u64::MAX }),
        }
    }

    /// 16 bytes big-endian: byte order is ID order.
    pub fn bytes(self) -> [u8; 16] {
        let mut out = [0; 16];
        out[..8].copy_from_slice(&self.ms.to_be_bytes());
        out[8..].copy_from_slice(&self.seq.to_be_bytes());
        out
    }

    pub fn from_bytes(b: &[u8]) -> Option<StreamId> {
        let ms = u64::from_be_bytes(b.get(..8)?.try_into().ok()?);
        let seq = u64::from_be_bytes(b.get(8..16)?.try_into().ok()?);
        Some(StreamId { ms, seq })
    }

    pub fn reply(self) -> Reply {
        Reply::bulk(self.to_string())
    }
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// Redis's error for an argument that is no stream ID.
pub const INVALID_ID: &str = "ERR Invalid stream ID specified as stream command argument";

/// C's `strtoull` in base 10 over all of `s` (Redis's `string2ull` falls
/// back to it): leading white space, a sign (`-` negates modulo 2^64),
/// digits; `None` when nothing or anything else is left, or on overflow.
fn strtoull(s: &[u8]) -> Option<u64> {
    let s = match s.iter().position(|c| !matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')) {
        Some(at) => &s[at..],
        None => return None,
    };
    let (negative, digits) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut n: u64 = 0;
    for d in digits {
        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some(if negative { n.wrapping_neg() } else { n })
}

/// Redis's `string2ull`: a canonical integer (not negative), else what
/// `strtoull` takes.
fn string2ull(s: &[u8]) -> Option<u64> {
    match super::args::parse_i64(s) {
        Some(n) => u64::try_from(n).ok(),
        None => strtoull(s),
    }
}

/// What [`parse_id`] read: the ID, and whether its sequence was given
/// (false for XADD's `ms-*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedId {
    pub id: StreamId,
    pub seq_given: bool,
}

/// A stream ID argument, as Redis's `streamGenericParseIDOrReply` reads
/// it: `ms-seq`, `ms` (the sequence then `missing_seq`), `-` and `+` (the
/// least and greatest IDs, refused when `strict`), and with `star_seq`
/// (XADD) `ms-*`.
pub fn parse_id(
    arg: &[u8],
    missing_seq: u64,
    strict: bool,
    star_seq: bool,
) -> Result<ParsedId, Reply> {
    let invalid = || Reply::err(INVALID_ID);
    if arg.len() > 127 {
        return Err(invalid());
    }
    match arg {
        b"-" | b"+" if strict => return Err(invalid()),
        b"-" => return Ok(ParsedId { id: StreamId::MIN, seq_given: true }),
        b"+" => return Ok(ParsedId { id: StreamId::MAX, seq_given: true }),
        _ => {}
    }
    let (ms, seq) = match arg.iter().position(|&c| c == b'-') {
        Some(dash) => (&arg[..dash], Some(&arg[dash + 1..])),
        None => (arg, None),
    };
    let ms = string2ull(ms).ok_or_else(invalid)?;
    Ok(match seq {
        Some(b"*") if star_seq => ParsedId { id: StreamId { ms, seq: 0 }, seq_given: false },
        Some(seq) => ParsedId {
            id: StreamId { ms, seq: string2ull(seq).ok_or_else(invalid)? },
            seq_given: true,
        },
        None => ParsedId { id: StreamId { ms, seq: missing_seq }, seq_given: true },
    })
}

/// A strict ID (no `-` or `+`), as most stream commands take one.
pub fn strict_id(arg: &[u8]) -> Result<StreamId, Reply> {
    parse_id(arg, 0, true, false).map(|p| p.id)
}

/// One bound of an XRANGE-like interval (`start`: a missing sequence is 0,
/// else the greatest), exclusive with a `(` prefix, as Redis's
/// `streamParseIntervalIDOrReply`; the inclusive bound it amounts to, or
/// Redis's error for an exclusive bound with nothing beyond it.
pub fn interval_bound(arg: &[u8], start: bool) -> Result<StreamId, Reply> {
    let missing = if start { 0 } else { u64::MAX };
    if arg.len() > 1 && arg[0] == b'(' {
        let id = parse_id(&arg[1..], missing, true, false)?.id;
        let moved = if start { id.next() } else { id.prev() };
        moved.ok_or_else(|| {
            Reply::err(if start {
                "ERR invalid start ID for the interval"
            } else {
                "ERR invalid end ID for the interval"
            })
        })
    } else {
        Ok(parse_id(arg, missing, false, false)?.id)
    }
}

/// The stream's own figures, kept in its key row's payload.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Meta {
    /// Live entries.
    pub length: u64,
    pub last_id: StreamId,
    /// The first live entry's ID when it was last set (Redis's
    /// `recorded-first-entry-id`); 0-0 when empty.
    pub first_id: StreamId,
    pub max_deleted: StreamId,
    pub entries_added: u64,
    /// Node rows (XINFO's `radix-tree-keys`).
    pub nodes: u64,
    /// Consumer groups.
    pub groups: u64,
}

const META_BYTES: usize = 8 + 16 * 3 + 8 * 3;

impl Meta {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(META_BYTES);
        out.extend_from_slice(&self.length.to_be_bytes());
        out.extend_from_slice(&self.last_id.bytes());
        out.extend_from_slice(&self.first_id.bytes());
        out.extend_from_slice(&self.max_deleted.bytes());
        out.extend_from_slice(&self.entries_added.to_be_bytes());
        out.extend_from_slice(&self.nodes.to_be_bytes());
        out.extend_from_slice(&self.groups.to_be_bytes());
        out
    }

    pub fn decode(b: &[u8]) -> Option<Meta> {
        if b.len() != META_BYTES {
            return None;
        }
        let u = |at: usize| u64::from_be_bytes(b[at..at + 8].try_into().unwrap_or_default());
        Some(Meta {
            length: u(0),
            last_id: StreamId::from_bytes(&b[8..24])?,
            first_id: StreamId::from_bytes(&b[24..40])?,
            max_deleted: StreamId::from_bytes(&b[40..56])?,
            entries_added: u(56),
            nodes: u(64),
            groups: u(72),
        })
    }
}

/// A stream read from its key row: the row's value (its expiry kept) and
/// the figures.
#[derive(Debug, Clone)]
pub struct Stream {
    pub value: Value,
    pub meta: Meta,
}

impl Stream {
    /// A new, empty stream.
    pub fn empty() -> Stream {
        let meta = Meta::default();
        Stream {
            value: Value { kind: KIND_STREAM, expire_at_ms: None, payload: meta.encode() },
            meta,
        }
    }

    /// The op that writes its key row with `meta`.
    pub fn put_op(&mut self, key: &[u8]) -> WriteOp {
        self.value.payload = self.meta.encode();
        WriteOp::Put { key: key_row(key).into(), value: self.value.encode().into() }
    }
}

/// The stream at `key`: `Ok(None)` when missing, `Err(reply)` (WRONGTYPE)
/// when it holds another type.
pub async fn load(db: &Db<'_>, key: &[u8]) -> NodeResult<Result<Option<Stream>, Reply>> {
    let Some(value) = db.get(key).await? else { return Ok(Ok(None)) };
    if value.kind != KIND_STREAM {
        return Ok(Err(Reply::err(WRONGTYPE)));
    }
    let meta = Meta::decode(&value.payload)
        .ok_or_else(|| NodeError::Internal(format!("damaged stream key row for {key:?}")))?;
    Ok(Ok(Some(Stream { value, meta })))
}

/// The row `(tag, key, rest...)` of the stream at `key`, every part after
/// the tag bytes (see the module doc for the tags).
pub(super) fn row(tag: &str, key: &[u8], rest: &[&[u8]]) -> Vec<u8> {
    let mut parts = vec![Element::String(tag.into()), Element::Bytes(key.to_vec())];
    parts.extend(rest.iter().map(|r| Element::Bytes(r.to_vec())));
    tuple::encode(&parts).expect("a key within the size limit encodes")
}

/// What every row of one tag of the stream at `key` starts with.
pub fn prefix(tag: &str, key: &[u8]) -> Vec<u8> {
    row(tag, key, &[])
}

pub fn entry_row(key: &[u8], id: StreamId) -> Vec<u8> {
    row("X", key, &[&id.bytes()])
}

fn node_row(key: &[u8], master: StreamId) -> Vec<u8> {
    row("Xn", key, &[&master.bytes()])
}

/// The ID at the end of a stream row (an entry's, a node's).
pub fn id_of_row(row: &[u8]) -> NodeResult<StreamId> {
    let last = super::keyspace::last_bytes(row)?;
    StreamId::from_bytes(&last).ok_or_else(|| NodeError::Internal("damaged stream row".into()))
}

/// An entry's fields and values as stored.
pub fn encode_fields(pairs: &[Vec<u8>]) -> Vec<u8> {
    let array = rmpv::Value::Array(pairs.iter().map(|p| rmpv::Value::Binary(p.clone())).collect());
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &array).expect("writing to a Vec cannot fail");
    out
}

pub fn decode_fields(stored: &[u8]) -> NodeResult<Vec<Vec<u8>>> {
    let damaged = || NodeError::Internal("damaged stream entry row".into());
    let mut rest = stored;
    match rmpv::decode::read_value(&mut rest) {
        Ok(rmpv::Value::Array(items)) if rest.is_empty() => items
            .into_iter()
            .map(|v| match v {
                rmpv::Value::Binary(b) => Ok(b),
                _ => Err(damaged()),
            })
            .collect(),
        _ => Err(damaged()),
    }
}

/// One entry: its ID and its fields and values.
pub type Entry = (StreamId, Vec<Vec<u8>>);

/// An entry as Redis replies with it: `[id, [field, value, ...]]`.
pub fn entry_reply((id, pairs): Entry) -> Reply {
    Reply::Array(vec![id.reply(), Reply::Array(pairs.into_iter().map(Reply::Bulk).collect())])
}

/// One radix-tree node of Redis's layout (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    master: StreamId,
    live: u64,
    deleted: u64,
    /// Bytes of its entries (the master entry and the listpack's header
    /// are counted by [`Node::bytes`]).
    entries_bytes: u64,
    last: StreamId,
    fields: Vec<Vec<u8>>,
}

impl Node {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&self.live.to_be_bytes());
        out.extend_from_slice(&self.deleted.to_be_bytes());
        out.extend_from_slice(&self.entries_bytes.to_be_bytes());
        out.extend_from_slice(&self.last.bytes());
        out.extend(encode_fields(&self.fields));
        out
    }

    fn decode(master: StreamId, b: &[u8]) -> NodeResult<Node> {
        let damaged = || NodeError::Internal("damaged stream node row".into());
        if b.len() < 40 {
            return Err(damaged());
        }
        let u = |at: usize| u64::from_be_bytes(b[at..at + 8].try_into().unwrap_or_default());
        Ok(Node {
            master,
            live: u(0),
            deleted: u(8),
            entries_bytes: u(16),
            last: StreamId::from_bytes(&b[24..40]).ok_or_else(damaged)?,
            fields: decode_fields(&b[40..])?,
        })
    }

    /// Its size as Redis's listpack: the header and end byte, the master
    /// entry (count, deleted, the fields and its terminator), the entries.
    fn bytes(&self) -> u64 {
        let master: u64 = lp_int_size(self.live as i64)
            + lp_int_size(self.deleted as i64)
            + lp_int_size(self.fields.len() as i64)
            + self.fields.iter().map(|f| lp_size(f)).sum::<u64>()
            + lp_int_size(0);
        LP_HEADER_BYTES + 1 + master + self.entries_bytes
    }

    fn put_op(&self, key: &[u8]) -> WriteOp {
        WriteOp::Put { key: node_row(key, self.master).into(), value: self.encode().into() }
    }
}

/// A listpack's header: total bytes (u32) and element count (u16).
const LP_HEADER_BYTES: u64 = 6;

/// Bytes a listpack element of `encoded` bytes takes with its back-length.
fn with_backlen(encoded: u64) -> u64 {
    encoded
        + match encoded {
            0..=127 => 1,
            128..=16382 => 2,
            16383..=2_097_150 => 3,
            2_097_151..=268_435_454 => 4,
            _ => 5,
        }
}

/// Bytes an integer element takes in a listpack (`lpEncodeIntegerGetType`).
fn lp_int_size(v: i64) -> u64 {
    with_backlen(match v {
        0..=127 => 1,
        -4096..=4095 => 2,
        -32768..=32767 => 3,
        -8_388_608..=8_388_607 => 4,
        -2_147_483_648..=2_147_483_647 => 5,
        _ => 9,
    })
}

/// Bytes a string element takes in a listpack: as an integer when it is
/// one in canonical form (`lpStringToInt64`), else with its length.
fn lp_size(s: &[u8]) -> u64 {
    if let Some(n) = super::args::parse_i64(s) {
        return lp_int_size(n);
    }
    let len = s.len() as u64;
    with_backlen(match len {
        0..=63 => 1 + len,
        64..=4095 => 2 + len,
        _ => 5 + len,
    })
}

/// Bytes one entry takes in a node with master `master` (Redis's layout:
/// flags, the ID's deltas, the fields unless they are the master's, the
/// values, the element count).
fn entry_bytes(master: &Node, id: StreamId, pairs: &[Vec<u8>], same_fields: bool) -> u64 {
    let fields = (pairs.len() / 2) as i64;
    let mut n = lp_int_size(if same_fields { 2 } else { 0 })
        + lp_int_size(id.ms.wrapping_sub(master.master.ms) as i64)
        + lp_int_size(id.seq.wrapping_sub(master.master.seq) as i64);
    if !same_fields {
        n += lp_int_size(fields);
    }
    for (i, p) in pairs.iter().enumerate() {
        if !same_fields || i % 2 == 1 {
            n += lp_size(p);
        }
    }
    let pieces = if same_fields { fields + 3 } else { fields + 3 + fields + 1 };
    n + lp_int_size(pieces)
}

/// `stream-node-max-entries` and `stream-node-max-bytes` (0: no bound).
#[derive(Debug, Clone, Copy)]
pub struct NodeLimits {
    pub entries: u64,
    pub bytes: u64,
}

/// The most bytes of a listpack (Redis's `STREAM_LISTPACK_MAX_SIZE`).
const LISTPACK_MAX_BYTES: u64 = 1 << 30;

/// The node holding the entry `id` would be in: the last whose master ID
/// is at or below it.
async fn node_at(db: &Db<'_>, key: &[u8], id: StreamId) -> NodeResult<Option<Node>> {
    let start = prefix("Xn", key);
    let end = id.next().map_or_else(
        || monotable_proto::keys::tuple_prefix_end(&start),
        |n| Some(node_row(key, n)),
    );
    let mut found = None;
    db.visit_rows_expecting(start, end, true, 1, |row, value| {
        found = Some((row, value));
        Ok(false)
    })
    .await?;
    match found {
        Some((row, value)) => Ok(Some(Node::decode(id_of_row(&row)?, &value)?)),
        None => Ok(None),
    }
}

/// Appends an entry with `pairs` (fields and values) at `id` to the stream
/// `s` at `key` (its ID checked by the caller), writing its rows and key
/// row.
pub async fn append(
    db: &Db<'_>,
    key: &[u8],
    s: &mut Stream,
    id: StreamId,
    pairs: &[Vec<u8>],
    limits: NodeLimits,
) -> NodeResult<()> {
    let total: u64 = pairs.iter().map(|p| p.len() as u64).sum();
    let tail = if s.meta.nodes == 0 { None } else { node_at(db, key, StreamId::MAX).await? };
    let max_bytes = match limits.bytes {
        0 => LISTPACK_MAX_BYTES,
        b => b.min(LISTPACK_MAX_BYTES),
    };
    let tail = tail.filter(|t| {
        let full_bytes = t.bytes() + total >= max_bytes;
        let full_entries = limits.entries != 0 && t.live + t.deleted >= limits.entries;
        !(full_bytes || full_entries)
    });
    let mut node = match tail {
        Some(t) => t,
        None => {
            s.meta.nodes += 1;
            let fields = pairs.iter().step_by(2).cloned().collect();
            Node { master: id, live: 0, deleted: 0, entries_bytes: 0, last: id, fields }
        }
    };
    let same_fields = pairs.len() / 2 == node.fields.len()
        && pairs.iter().step_by(2).zip(&node.fields).all(|(a, b)| a == b);
    node.entries_bytes += entry_bytes(&node, id, pairs, same_fields);
    node.live += 1;
    node.last = id;
    s.meta.length += 1;
    s.meta.entries_added += 1;
    s.meta.last_id = id;
    if s.meta.length == 1 {
        s.meta.first_id = id;
    }
    let ops = vec![
        WriteOp::Put { key: entry_row(key, id).into(), value: encode_fields(pairs).into() },
        node.put_op(key),
        s.put_op(key),
    ];
    db.write(ops).await
}

/// How a trim bounds the stream: its length, or the least ID it keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrimTo {
    MaxLen(u64),
    MinId(StreamId),
}

/// A trim as XADD and XTRIM ask for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trim {
    pub to: TrimTo,
    /// `~`: whole nodes only.
    pub approx: bool,
    /// At most this many entries removed (0: no bound).
    pub limit: u64,
}

/// Trims the stream `s` at `key` from its head, as Redis's `streamTrim`
/// (whole nodes first; with `approx` nothing inside a node); writes the
/// rows and the key row when anything went. How many entries went.
pub async fn trim(db: &Db<'_>, key: &[u8], s: &mut Stream, t: Trim) -> NodeResult<u64> {
    // Nothing to read when nothing can go (most XADDs with MAXLEN).
    if matches!(t.to, TrimTo::MaxLen(max) if s.meta.length <= max) || s.meta.nodes == 0 {
        return Ok(0);
    }
    let mut ops = Vec::new();
    let mut deleted = 0u64;
    let start = prefix("Xn", key);
    let end = monotable_proto::keys::tuple_prefix_end(&start);
    let mut nodes = Vec::new();
    // Nodes are read a page at a time, as many as the trim may look at
    // (most trims remove one node, or none).
    let mut length = s.meta.length;
    db.visit_rows_expecting(start, end, false, 1, |row, value| {
        let node = Node::decode(id_of_row(&row)?, &value)?;
        let more = match t.to {
            TrimTo::MaxLen(max) => length.saturating_sub(node.live) >= max,
            TrimTo::MinId(min) => node.last < min,
        };
        length = length.saturating_sub(node.live);
        nodes.push(node);
        Ok(more)
    })
    .await?;
    for mut node in nodes {
        if let TrimTo::MaxLen(max) = t.to {
            if s.meta.length <= max {
                break;
            }
        }
        if t.limit != 0 && deleted + node.live > t.limit {
            break;
        }
        let whole = match t.to {
            TrimTo::MaxLen(max) => s.meta.length - node.live >= max,
            TrimTo::MinId(min) => node.last < min,
        };
        let upto = node.last.next();
        let entries_end = upto.map_or_else(
            || monotable_proto::keys::tuple_prefix_end(&prefix("X", key)),
            |n| Some(entry_row(key, n)),
        );
        if whole {
            db.visit_rows(entry_row(key, node.master), entries_end, false, |row, _| {
                ops.push(WriteOp::Delete { key: row.into() });
                Ok(true)
            })
            .await?;
            ops.push(WriteOp::Delete { key: node_row(key, node.master).into() });
            s.meta.length -= node.live;
            s.meta.nodes -= 1;
            deleted += node.live;
            continue;
        }
        if t.approx {
            break;
        }
        // Entries from within the node, from its head.
        let mut gone = 0u64;
        let mut length = s.meta.length;
        db.visit_rows(entry_row(key, node.master), entries_end, false, |row, _| {
            let stop = match t.to {
                TrimTo::MaxLen(max) => length <= max,
                TrimTo::MinId(min) => id_of_row(&row)? >= min,
            };
            if stop {
                return Ok(false);
            }
            ops.push(WriteOp::Delete { key: row.into() });
            gone += 1;
            length -= 1;
            Ok(true)
        })
        .await?;
        s.meta.length = length;
        deleted += gone;
        node.live -= gone;
        node.deleted += gone;
        ops.push(node.put_op(key));
        break;
    }
    if deleted == 0 {
        return Ok(0);
    }
    let gone: std::collections::HashSet<Vec<u8>> = ops
        .iter()
        .filter_map(|op| match op {
            WriteOp::Delete { key } => Some(key.to_vec()),
            WriteOp::Put { .. } => None,
        })
        .collect();
    s.meta.first_id = first_remaining(db, key, s.meta.length, &gone).await?;
    ops.push(s.put_op(key));
    db.write(ops).await?;
    Ok(deleted)
}

/// The first entry's ID once the entry rows in `gone` are deleted (0-0
/// when `length`, the entries left, is 0), as Redis records it.
async fn first_remaining(
    db: &Db<'_>,
    key: &[u8],
    length: u64,
    gone: &std::collections::HashSet<Vec<u8>>,
) -> NodeResult<StreamId> {
    if length == 0 {
        return Ok(StreamId::MIN);
    }
    let mut first = None;
    db.visit_rows(prefix("X", key), None, false, |row, _| {
        if gone.contains(&row) {
            return Ok(true);
        }
        first = Some(id_of_row(&row)?);
        Ok(false)
    })
    .await?;
    Ok(first.unwrap_or(StreamId::MIN))
}

/// Deletes the entries `ids` of the stream `s` at `key` (missing ones are
/// passed over), as XDEL: the max deleted ID and first ID follow; writes
/// the rows when any went. How many went.
pub async fn delete(db: &Db<'_>, key: &[u8], s: &mut Stream, ids: &[StreamId]) -> NodeResult<u64> {
    let mut ops = Vec::new();
    let mut deleted = 0;
    let mut first_deleted = false;
    // Nodes changed so far, by master ID (an ID given twice goes once).
    let mut nodes: std::collections::BTreeMap<StreamId, Node> = Default::default();
    let mut gone: std::collections::HashSet<StreamId> = Default::default();
    for &id in ids {
        if gone.contains(&id) || db.read_row(entry_row(key, id)).await?.is_none() {
            continue;
        }
        let known = nodes.range(..=id).next_back().map(|(_, n)| n.clone());
        let node = match known.filter(|n| n.last >= id) {
            Some(n) => n,
            None => match node_at(db, key, id).await? {
                Some(n) => n,
                None => return Err(NodeError::Internal("a stream entry outside its nodes".into())),
            },
        };
        let mut node = node;
        node.live -= 1;
        node.deleted += 1;
        nodes.insert(node.master, node);
        gone.insert(id);
        ops.push(WriteOp::Delete { key: entry_row(key, id).into() });
        s.meta.length -= 1;
        first_deleted |= id == s.meta.first_id;
        s.meta.max_deleted = s.meta.max_deleted.max(id);
        deleted += 1;
    }
    if deleted == 0 {
        return Ok(0);
    }
    for node in nodes.values() {
        if node.live == 0 {
            ops.push(WriteOp::Delete { key: node_row(key, node.master).into() });
            s.meta.nodes -= 1;
        } else {
            ops.push(node.put_op(key));
        }
    }
    if s.meta.length == 0 || first_deleted {
        let rows = gone.iter().map(|&id| entry_row(key, id)).collect();
        s.meta.first_id = first_remaining(db, key, s.meta.length, &rows).await?;
    }
    ops.push(s.put_op(key));
    db.write(ops).await?;
    Ok(deleted)
}

/// Entries with IDs in `[start, end]`, ascending (`rev`: descending), at
/// most `count` (0: all).
pub async fn range(
    db: &Db<'_>,
    key: &[u8],
    start: StreamId,
    end: StreamId,
    count: u64,
    rev: bool,
) -> NodeResult<Vec<Entry>> {
    if start > end {
        return Ok(Vec::new());
    }
    let lo = entry_row(key, start);
    let hi = end.next().map_or_else(
        || monotable_proto::keys::tuple_prefix_end(&prefix("X", key)),
        |n| Some(entry_row(key, n)),
    );
    let mut out = Vec::new();
    let expected = if count == 0 { 128 } else { usize::try_from(count).unwrap_or(usize::MAX) };
    db.visit_rows_expecting(lo, hi, rev, expected, |row, value| {
        out.push((id_of_row(&row)?, decode_fields(&value)?));
        Ok(count == 0 || (out.len() as u64) < count)
    })
    .await?;
    Ok(out)
}

/// The first (`last`: last) live entry's ID, if any.
pub async fn edge_id(db: &Db<'_>, key: &[u8], last: bool) -> NodeResult<Option<StreamId>> {
    let start = prefix("X", key);
    let end = monotable_proto::keys::tuple_prefix_end(&start);
    let mut found = None;
    db.visit_rows_expecting(start, end, last, 1, |row, _| {
        found = Some(id_of_row(&row)?);
        Ok(false)
    })
    .await?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ms: u64, seq: u64) -> StreamId {
        StreamId { ms, seq }
    }

    #[test]
    fn ids_parse_as_redis_parses_them() {
        let p = |s: &str| parse_id(s.as_bytes(), 0, true, true).map(|p| (p.id, p.seq_given));
        assert_eq!(p("1-2"), Ok((id(1, 2), true)));
        assert_eq!(p("5"), Ok((id(5, 0), true)));
        assert_eq!(p("5-*"), Ok((id(5, 0), false)));
        assert_eq!(p("18446744073709551615-18446744073709551615"), Ok((StreamId::MAX, true)));
        // `string2ull` falls back to strtoull: spaces, `+`, leading zeros,
        // and a negated sequence.
        assert_eq!(p(" 7-+01"), Ok((id(7, 1), true)));
        assert_eq!(p("1--01"), Ok((id(1, u64::MAX), true)));
        for bad in ["-", "+", "", "a", "1-", "1-a", "-1", "1--1", "18446744073709551616-0", "1-2-3"]
        {
            assert_eq!(p(bad), Err(Reply::err(INVALID_ID)), "{bad:?}");
        }
        assert!(parse_id(&[b'1'; 128], 0, false, false).is_err());
        assert_eq!(parse_id(b"-", 0, false, false).map(|p| p.id), Ok(StreamId::MIN));
        assert_eq!(parse_id(b"3", u64::MAX, false, false).map(|p| p.id), Ok(id(3, u64::MAX)));
        assert_eq!(interval_bound(b"(1-0", true), Ok(id(1, 1)));
        assert_eq!(interval_bound(b"(1", false), Ok(id(1, u64::MAX - 1)));
        assert!(interval_bound(b"(0-0", false).is_err());
        assert!(interval_bound(b"(18446744073709551615-18446744073709551615", true).is_err());
        assert_eq!(interval_bound(b"(", true), Err(Reply::err(INVALID_ID)));
    }

    #[test]
    fn ids_step_and_order_as_their_bytes() {
        assert_eq!(id(1, u64::MAX).next(), Some(id(2, 0)));
        assert_eq!(id(2, 0).prev(), Some(id(1, u64::MAX)));
        assert_eq!(StreamId::MAX.next(), None);
        assert_eq!(StreamId::MIN.prev(), None);
        let ids = [id(0, 1), id(1, 0), id(1, 255), id(1, 256), id(256, 0)];
        for w in ids.windows(2) {
            assert!(w[0] < w[1] && w[0].bytes() < w[1].bytes());
        }
        assert_eq!(StreamId::from_bytes(&id(7, 9).bytes()), Some(id(7, 9)));
    }

    #[test]
    fn listpack_sizes_follow_redis_encodings() {
        assert_eq!(lp_size(b"v"), 3);
        assert_eq!(lp_size(b"0"), 2);
        assert_eq!(lp_size(b"127"), 2);
        assert_eq!(lp_size(b"128"), 3);
        assert_eq!(lp_size(b"-1"), 3);
        assert_eq!(lp_size(b"01"), 4, "not canonical: a string");
        assert_eq!(lp_size(&[b'x'; 64]), 67);
        assert_eq!(lp_size(&[b'x'; 200]), 204);
        let meta = Meta { length: 3, nodes: 1, ..Meta::default() };
        assert_eq!(Meta::decode(&meta.encode()), Some(meta));
    }
}
