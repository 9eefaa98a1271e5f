//! How Redis data is stored in Monotable ranges.
//!
//! Redis database `N` is the range `redis.N`, created on its first write.
//! Every Redis key has one *key row*:
//!
//! - row key: the tuple `("k", KEY)` (KEY as bytes)
//! - row value: `TYPE u8 | EXPIRE_AT u64 big-endian (ms since the epoch,
//!   0 = none) | PAYLOAD`; for a string (TYPE 0) the payload is the value,
//!   for a collection the number of its elements (u64 big-endian).
//!
//! A collection keeps one row per element, so changing one element costs
//! O(log n) however large the collection:
//!
//! - hash (TYPE 1): `("h", KEY, FIELD)` -> the field's value, as a
//!   MessagePack binary (so mappers read it like any row value)
//! - set (TYPE 2): `("s", KEY, MEMBER)` -> empty
//! - list (TYPE 3): `("l", KEY, POSITION)` -> the element, as a MessagePack
//!   binary; positions are integers, consecutive from the list's head (the
//!   key row's payload is `COUNT u64 | HEAD i64`), so pushing at either end,
//!   LINDEX and LSET cost O(log n)
//! - sorted set (TYPE 4): `("z", KEY, MEMBER)` -> the score (MessagePack
//!   float), and `("Z", KEY, SCORE, MEMBER)` -> empty, in score order
//!
//! Keys with an expiry also have an *expiry row* `("x", EXPIRE_AT, KEY)`
//! (empty value), so the background expirer finds what is due in time
//! order without reading every key. An expiry row may be stale (the key
//! changed since); the expirer checks the key before removing it.
//!
//! Mappers and reducers can be registered on `redis.N` like on any range.
//!
//! On a cluster, `redis.N` may be a replicated range: see [`super::cluster`]
//! for where each database lives and how its commands run.

use monotable_proto::tuple::{self, Element};

use monotable_proto::WriteOp;

use crate::error::{NodeError, NodeResult};
use crate::node::Node;
use crate::storage::chunk::ReadAt;

pub const KIND_STRING: u8 = 0;
pub const KIND_HASH: u8 = 1;
pub const KIND_SET: u8 = 2;
pub const KIND_LIST: u8 = 3;
pub const KIND_ZSET: u8 = 4;
/// A stream (see [`super::streams`] for its rows).
pub use super::streams::KIND_STREAM;

/// Databases a client may SELECT (Redis's default `databases 16`).
pub const DATABASES: u32 = 16;

pub fn range_name(db: u32) -> String {
    format!("redis.{db}")
}

/// The database a range serves, when it is a Redis database range.
pub fn database_of_range(range: &str) -> Option<u32> {
    range.strip_prefix("redis.")?.parse().ok().filter(|&n| n < DATABASES)
}

/// What every key row starts with: the tag `("k")`.
pub fn key_rows_prefix() -> Vec<u8> {
    tuple::encode(&[Element::String("k".into())]).expect("a tag encodes")
}

/// The changes a write makes, for INFO's `rdb_changes_since_last_save`,
/// as Redis counts most commands: the collection elements it adds or
/// sets (HSET of two fields: 2), else those it removes from collections
/// that stay (SREM, LPOP, XDEL), else the keys it writes (SET, MSET, DEL
/// of whole keys, EXPIRE), else one (an in-place change without a key
/// row); expiry rows alone count for nothing. Counted from the rows'
/// prefixes, without decoding them.
pub fn keys_changed(ops: &[WriteOp]) -> u64 {
    /// The encoded tags: key rows, expiry rows, then the element tags of hashes, sets, lists,
    /// sorted sets and streams.
    static TAGS: std::sync::LazyLock<[Vec<u8>; 7]> = std::sync::LazyLock::new(|| {
        ["k", "x", "h", "s", "l", "z", "X"]
            .map(|tag| tuple::encode(&[Element::String(tag.into())]).expect("a tag encodes"))
    });
    let [key_rows, expiry_rows, elements @ ..] = &*TAGS;
    let is_element = |row: &[u8]| elements.iter().any(|p| row.starts_with(p));
    let (mut set, mut removed, mut keys, mut keys_removed, mut other) = (0, 0, 0, 0, false);
    for op in ops {
        let row = op.key();
        match op {
            WriteOp::Put { .. } if is_element(row) => set += 1,
            WriteOp::Delete { .. } if is_element(row) => removed += 1,
            WriteOp::Put { .. } if row.starts_with(key_rows) => keys += 1,
            WriteOp::Delete { .. } if row.starts_with(key_rows) => {
                keys += 1;
                keys_removed += 1;
            }
            _ => other |= !row.starts_with(expiry_rows),
        }
    }
    if set > 0 {
        set
    } else if removed > 0 && keys_removed == 0 {
        removed
    } else if keys > 0 {
        keys
    } else {
        u64::from(other)
    }
}

pub fn key_row(key: &[u8]) -> Vec<u8> {
    tuple::encode(&[Element::String("k".into()), Element::Bytes(key.to_vec())])
        .expect("a key within the size limit encodes")
}

/// The key a key row belongs to; `None` for any other row.
pub fn key_of_key_row(row: &[u8]) -> Option<Vec<u8>> {
    match tuple::decode(row).ok()?.as_slice() {
        [Element::String(tag), Element::Bytes(key)] if tag == "k" => Some(key.clone()),
        _ => None,
    }
}

/// A Redis key's value and expiry.
#[derive(Debug, Clone, PartialEq)]
pub struct Value {
    pub kind: u8,
    pub expire_at_ms: Option<u64>,
    pub payload: Vec<u8>,
}

impl Value {
    pub fn string(payload: Vec<u8>, expire_at_ms: Option<u64>) -> Value {
        Value { kind: KIND_STRING, expire_at_ms, payload }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(9 + self.payload.len());
        out.push(self.kind);
        out.extend_from_slice(&self.expire_at_ms.unwrap_or(0).to_be_bytes());
        out.extend_from_slice(&self.payload);
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<Value> {
        let (&kind, rest) = bytes.split_first()?;
        let expire: [u8; 8] = rest.get(..8)?.try_into().ok()?;
        let expire = u64::from_be_bytes(expire);
        Some(Value {
            kind,
            expire_at_ms: (expire != 0).then_some(expire),
            payload: rest[8..].to_vec(),
        })
    }

    /// A collection's key row.
    pub fn collection(kind: u8, count: u64, expire_at_ms: Option<u64>) -> Value {
        Value { kind, expire_at_ms, payload: count.to_be_bytes().to_vec() }
    }

    /// A collection's element count.
    pub fn count(&self) -> u64 {
        self.payload.get(..8).and_then(|b| b.try_into().ok()).map_or(0, u64::from_be_bytes)
    }

    /// Whether its expiry time has passed.
    pub fn is_expired(&self) -> bool {
        self.expire_at_ms.is_some_and(|at| at <= now_ms())
    }

    pub fn set_count(&mut self, count: u64) {
        self.payload = count.to_be_bytes().to_vec();
    }

    pub fn type_name(&self) -> &'static str {
        match self.kind {
            KIND_STRING => "string",
            KIND_HASH => "hash",
            KIND_SET => "set",
            KIND_LIST => "list",
            KIND_ZSET => "zset",
            KIND_STREAM => "stream",
            _ => "none",
        }
    }
}

/// The expiry row of a key that expires at `at_ms`.
pub fn expiry_row(at_ms: u64, key: &[u8]) -> Vec<u8> {
    tuple::encode(&[
        Element::String("x".into()),
        Element::Int(i128::from(at_ms)),
        Element::Bytes(key.to_vec()),
    ])
    .expect("a key within the size limit encodes")
}

/// Where the expiry rows due at or before `now_ms` end (exclusive).
pub fn expiry_rows_due(now_ms: u64) -> (Vec<u8>, Vec<u8>) {
    let start = tuple::encode(&[Element::String("x".into())]).expect("encodes");
    let end = tuple::encode(&[Element::String("x".into()), Element::Int(i128::from(now_ms) + 1)])
        .expect("encodes");
    (start, end)
}

/// The key of an expiry row.
pub fn key_of_expiry_row(row: &[u8]) -> Option<Vec<u8>> {
    match tuple::decode(row).ok()?.pop()? {
        Element::Bytes(k) => Some(k),
        _ => None,
    }
}

/// The last element of a row key, which is bytes: the key of a key row,
/// the element of an element row.
pub fn last_bytes(row: &[u8]) -> NodeResult<Vec<u8>> {
    match tuple::decode(row).ok().and_then(|mut t| t.pop()) {
        Some(Element::Bytes(b)) => Ok(b),
        _ => Err(NodeError::Internal("damaged row key".into())),
    }
}

/// A hash field's value as stored: a MessagePack binary.
pub fn encode_field(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + 5);
    rmpv::encode::write_value(&mut out, &rmpv::Value::Binary(value.to_vec()))
        .expect("writing to a Vec cannot fail");
    out
}

pub fn decode_field(stored: &[u8]) -> NodeResult<Vec<u8>> {
    let mut rest = stored;
    match rmpv::decode::read_value(&mut rest) {
        Ok(rmpv::Value::Binary(b)) if rest.is_empty() => Ok(b),
        _ => Err(NodeError::Internal("damaged hash field row".into())),
    }
}

/// The tag of a collection's element rows.
pub fn tag(kind: u8) -> Option<&'static str> {
    match kind {
        KIND_HASH => Some("h"),
        KIND_SET => Some("s"),
        KIND_LIST => Some("l"),
        KIND_ZSET => Some("z"),
        KIND_STREAM => Some("X"),
        _ => None,
    }
}

/// The tags of the rows that belong to a Redis key: its key row's and
/// every collection's element rows' (a stream's included).
pub const KEY_TAGS: [&str; 12] = ["k", "h", "s", "l", "z", "Z", "X", "Xn", "Xg", "Xp", "Xc", "Xq"];

/// The row of one element of a collection.
pub fn element_row(kind: u8, key: &[u8], element: &[u8]) -> Vec<u8> {
    let tag = tag(kind).expect("a collection kind");
    tuple::encode(&[
        Element::String(tag.into()),
        Element::Bytes(key.to_vec()),
        Element::Bytes(element.to_vec()),
    ])
    .expect("an element within the size limit encodes")
}

/// What the rows of a collection's elements start with: one prefix per
/// kind of row (a sorted set has two).
pub fn row_prefixes(kind: u8, key: &[u8]) -> Vec<Vec<u8>> {
    let Some(t) = tag(kind) else { return Vec::new() };
    let mut tags = vec![t];
    if kind == KIND_ZSET {
        tags.push("Z");
    }
    if kind == KIND_STREAM {
        tags = super::streams::ROW_TAGS.to_vec();
    }
    tags.into_iter()
        .map(|t| {
            tuple::encode(&[Element::String(t.into()), Element::Bytes(key.to_vec())])
                .expect("a key within the size limit encodes")
        })
        .collect()
}

/// The row of a list's element at `pos`.
pub fn list_row(key: &[u8], pos: i64) -> Vec<u8> {
    tuple::encode(&[
        Element::String("l".into()),
        Element::Bytes(key.to_vec()),
        Element::Int(i128::from(pos)),
    ])
    .expect("a key within the size limit encodes")
}

/// A list's key row payload: `COUNT u64 | HEAD i64`.
pub fn list_payload(count: u64, head: i64) -> Vec<u8> {
    let mut payload = count.to_be_bytes().to_vec();
    payload.extend_from_slice(&head.to_be_bytes());
    payload
}

/// A list's head position, from its key row.
pub fn list_head(v: &Value) -> i64 {
    v.payload.get(8..16).and_then(|b| b.try_into().ok()).map_or(0, i64::from_be_bytes)
}

/// The row of a sorted set member, holding its score.
pub fn zset_member_row(key: &[u8], member: &[u8]) -> Vec<u8> {
    element_row(KIND_ZSET, key, member)
}

/// The row that orders a sorted set member by score.
pub fn score_row(key: &[u8], score: f64, member: &[u8]) -> Vec<u8> {
    tuple::encode(&[
        Element::String("Z".into()),
        Element::Bytes(key.to_vec()),
        Element::Float(score),
        Element::Bytes(member.to_vec()),
    ])
    .expect("a key within the size limit encodes")
}

/// A score as stored: a MessagePack float.
pub fn encode_score(score: f64) -> Vec<u8> {
    let mut out = Vec::with_capacity(9);
    rmpv::encode::write_value(&mut out, &rmpv::Value::F64(score))
        .expect("writing to a Vec cannot fail");
    out
}

pub fn decode_score(bytes: &[u8]) -> NodeResult<f64> {
    let mut rest = bytes;
    match rmpv::decode::read_value(&mut rest) {
        Ok(rmpv::Value::F64(x)) if rest.is_empty() => Ok(x),
        _ => Err(NodeError::Internal("damaged sorted set row".into())),
    }
}

/// What every element row of a collection starts with.
pub fn element_prefix(kind: u8, key: &[u8]) -> Vec<u8> {
    let tag = tag(kind).expect("a collection kind");
    tuple::encode(&[Element::String(tag.into()), Element::Bytes(key.to_vec())])
        .expect("a key within the size limit encodes")
}

/// The expiry an option of SET or GETEX asks for: `ex` seconds or `px`
/// milliseconds from now, `exat`/`pxat` absolute; `None` when the time is
/// not positive or overflows (Redis: "invalid expire time").
pub fn expire_at(option: &str, t: i64) -> Option<u64> {
    if t <= 0 {
        return None;
    }
    let now = now_ms() as i64;
    let at = match option {
        "ex" => t.checked_mul(1000).and_then(|ms| now.checked_add(ms)),
        "px" => now.checked_add(t),
        "exat" => t.checked_mul(1000),
        _ => Some(t),
    };
    at.map(|a| a as u64)
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Most bytes (row keys and values, each write counted) a transaction or
/// script may hold back before applying them: a command past it fails
/// with an error and holds nothing back. The writes are held in memory
/// and applied as one batch; without a bound one script could make the
/// node hold any amount.
pub const TRANSACTION_WRITES_MAX_BYTES: usize = 64 * 1024 * 1024;

/// What a write is to WATCH and CLIENT TRACKING.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// A change of the key (Redis's `signalModifiedKey`): a WATCH of it
    /// fails, its tracking clients are told.
    Modified,
    /// An expired key removed: its tracking clients are told; WATCH is
    /// not failed by it (EXEC checks whether a watched key is live).
    Expired,
    /// Bookkeeping Redis does not count as a change of the key (a
    /// stream's consumer groups, XSETID): neither sees it.
    Quiet,
}

/// Rows of a transaction last written otherwise than [`Seen::Modified`],
/// and how.
pub type Unseen = std::collections::HashMap<(String, Vec<u8>), Seen>;

/// Writes of a transaction not yet applied: (range, row) -> value, or
/// `None` for a delete. Reads inside the transaction see them.
#[derive(Default)]
pub struct Overlay {
    writes: std::sync::Mutex<Writes>,
    /// How the rows not written as modifications were written.
    unseen: std::sync::Mutex<Unseen>,
    /// Bytes written so far (see [`TRANSACTION_WRITES_MAX_BYTES`]).
    bytes: std::sync::atomic::AtomicUsize,
    /// Keyspace events raised, to publish once the writes are applied.
    events: std::sync::Mutex<Vec<super::notify::Event>>,
    /// Changes its writes made, counted per write (see [`keys_changed`]),
    /// for INFO's changes since the last save once they are applied.
    changed: std::sync::atomic::AtomicU64,
}

impl Overlay {
    pub fn lock(&self) -> std::sync::LockResult<std::sync::MutexGuard<'_, Writes>> {
        self.writes.lock()
    }

    /// The writes held, and how the rows not written as modifications
    /// were written.
    pub fn into_parts(self) -> (Writes, Unseen) {
        let writes = self.writes.into_inner().unwrap_or_else(|p| p.into_inner());
        (writes, self.unseen.into_inner().unwrap_or_else(|p| p.into_inner()))
    }

    /// The writes held, as each range's batch (rows in order), and how
    /// the rows not written as modifications were written.
    pub fn into_batches(self) -> (std::collections::BTreeMap<String, Vec<WriteOp>>, Unseen) {
        let (writes, unseen) = self.into_parts();
        let mut by_range: std::collections::BTreeMap<String, Vec<WriteOp>> = Default::default();
        for ((range, row), value) in writes {
            by_range.entry(range).or_default().push(match value {
                Some(v) => WriteOp::Put { key: row.into(), value: v.into() },
                None => WriteOp::Delete { key: row.into() },
            });
        }
        (by_range, unseen)
    }

    fn unseen(&self) -> std::sync::MutexGuard<'_, Unseen> {
        self.unseen.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn events(&self) -> std::sync::MutexGuard<'_, Vec<super::notify::Event>> {
        self.events.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The keyspace events raised so far, in order, taken out.
    pub fn take_events(&self) -> Vec<super::notify::Event> {
        std::mem::take(&mut *self.events())
    }

    /// The writes, their byte count and the events raised, to put back
    /// with [`Overlay::restore`].
    pub fn save(&self) -> Saved {
        let writes = self.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let bytes = self.bytes.load(std::sync::atomic::Ordering::Acquire);
        let changed = self.changed.load(std::sync::atomic::Ordering::Acquire);
        Saved { writes, unseen: self.unseen().clone(), bytes, changed, events: self.events().len() }
    }

    pub fn restore(&self, saved: Saved) {
        *self.lock().unwrap_or_else(|p| p.into_inner()) = saved.writes;
        *self.unseen() = saved.unseen;
        self.bytes.store(saved.bytes, std::sync::atomic::Ordering::Release);
        self.changed.store(saved.changed, std::sync::atomic::Ordering::Release);
        self.events().truncate(saved.events);
    }

    /// The changes its writes made so far (see [`keys_changed`]).
    pub fn changed(&self) -> u64 {
        self.changed.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Counts `more` bytes written, unless that passes
    /// [`TRANSACTION_WRITES_MAX_BYTES`].
    fn reserve(&self, more: usize) -> NodeResult<()> {
        use std::sync::atomic::Ordering;
        let fits = self.bytes.fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
            held.checked_add(more).filter(|&total| total <= TRANSACTION_WRITES_MAX_BYTES)
        });
        fits.map(|_| ()).map_err(|_| {
            NodeError::client(
                monotable_proto::ErrorCode::BadRequest,
                format!(
                    "a transaction or script may write {TRANSACTION_WRITES_MAX_BYTES} bytes \
                     before they are applied; this command would pass that"
                ),
            )
        })
    }
}

/// What [`Overlay::save`] keeps.
pub struct Saved {
    writes: Writes,
    unseen: Unseen,
    bytes: usize,
    changed: u64,
    /// Events raised by then (later ones are dropped on restore).
    events: usize,
}

/// (range, row) -> value, or `None` for a delete.
pub type Writes = std::collections::BTreeMap<(String, Vec<u8>), Option<Vec<u8>>>;

/// Acknowledgements of writes applied but not yet durable.
pub type Durability = Vec<crate::chunk_cell::Applied>;

/// The rows that set keys to values (key rows and expiry rows).
pub fn put_ops(items: &[(Vec<u8>, Value)]) -> Vec<WriteOp> {
    let mut ops = Vec::with_capacity(items.len());
    for (k, v) in items {
        ops.push(WriteOp::Put { key: key_row(k).into(), value: v.encode().into() });
        if let Some(at) = v.expire_at_ms {
            ops.push(WriteOp::Put { key: expiry_row(at, k).into(), value: Vec::new().into() });
        }
    }
    ops
}

/// `ops` with only the last op on each row, in row order: a delete then a
/// put of the same row (a key overwritten by a value with that element
/// too) is that put.
pub fn last_op_per_row(ops: Vec<WriteOp>) -> Vec<WriteOp> {
    let mut last: std::collections::BTreeMap<Vec<u8>, WriteOp> = Default::default();
    for op in ops {
        let row = match &op {
            WriteOp::Put { key, .. } | WriteOp::Delete { key } => key.to_vec(),
        };
        last.insert(row, op);
    }
    last.into_values().collect()
}

/// Rows the first page of [`Db::visit_rows`] reads; each next page reads
/// twice as many, up to the scan limit.
const FIRST_PAGE_ROWS: usize = 128;

/// Reads and writes rows of one database.
///
/// Reads see every applied write, durable or not, and writes return once
/// applied, so a key's lock is held only that long: the caller replies only
/// after the writes in [`Db::take_durability`] are durable and the stable
/// seq has passed everything it read.
pub struct Db<'a> {
    pub state: &'a super::state::RespState,
    pub node: &'a std::sync::Arc<Node>,
    pub range: String,
    /// The Redis database the range serves, if it is one: its applied
    /// writes count as modifications for WATCH (see [`super::watches`]).
    dbi: Option<u32>,
    /// Inside MULTI/EXEC, and for a command on a replicated database's
    /// leader (see [`super::cluster`]): writes go here, and reads look here
    /// first.
    pub tx: Option<&'a Overlay>,
    /// A write may create the database's range as this node's own (true
    /// but on a cluster of two or more members, where the first write
    /// creates it replicated: see [`super::cluster`]).
    pub create_local: bool,
    /// A write found the range missing and `create_local` false, or
    /// found it replicated: the write failed, nothing was written.
    wants_replicated: std::sync::atomic::AtomicBool,
    durability: std::sync::Mutex<Durability>,
    /// The client whose command writes through it (CLIENT TRACKING's
    /// NOLOOP, and messages kept for after its reply); `None` for the
    /// node's own writes (the expirer).
    pub client: Option<u64>,
    /// Keys its writes created, whose `new` event is raised just before
    /// the key's next event (where Redis's `dbAdd` raises it), or when
    /// this is dropped.
    created: std::sync::Mutex<Vec<Vec<u8>>>,
    /// Batches written straight to storage (not held back), lazy expiry
    /// left out: a command's writes must be one (see [`Db::batches`]).
    batches: std::sync::atomic::AtomicU32,
    /// What the next write counts for INFO's changes since the last save,
    /// when the command said ([`Db::count_changes`]); [`NO_COUNT`]: what
    /// [`keys_changed`] says.
    changes: std::sync::atomic::AtomicU64,
}

/// [`Db`]'s `changes` when no command set it.
const NO_COUNT: u64 = u64::MAX;

impl Drop for Db<'_> {
    /// Raises the `new` events no other event of their keys came after.
    fn drop(&mut self) {
        let created = std::mem::take(&mut *self.created_list());
        for key in created {
            self.raise(super::notify::NEW, "new", &key);
        }
    }
}

fn not_found_is_empty<T: Default>(r: NodeResult<T>) -> NodeResult<T> {
    match r {
        Err(NodeError::Client { code: monotable_proto::ErrorCode::RangeNotFound, .. }) => {
            Ok(T::default())
        }
        other => other,
    }
}

impl<'a> Db<'a> {
    pub fn new(state: &'a super::state::RespState, db: u32, tx: Option<&'a Overlay>) -> Db<'a> {
        Db::of_range(state, range_name(db), tx)
    }

    pub fn of_range(
        state: &'a super::state::RespState,
        range: String,
        tx: Option<&'a Overlay>,
    ) -> Db<'a> {
        Db {
            state,
            node: &state.node,
            dbi: database_of_range(&range),
            range,
            tx,
            create_local: true,
            wants_replicated: Default::default(),
            durability: Default::default(),
            client: None,
            created: Default::default(),
            batches: Default::default(),
            changes: std::sync::atomic::AtomicU64::new(NO_COUNT),
        }
    }

    /// Counts the next write as `n` changes for INFO's
    /// `rdb_changes_since_last_save`: for a command whose rows do not say
    /// what Redis counts ([`keys_changed`]): LINSERT rewrites the
    /// positions after its element and counts 1, LREM and LTRIM count the
    /// elements removed, a pop the elements popped.
    pub fn count_changes(&self, n: u64) {
        self.changes.store(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// What `ops`, the next write, count as changes (see
    /// [`Db::count_changes`]).
    fn changes_of(&self, ops: &[WriteOp]) -> u64 {
        match self.changes.swap(NO_COUNT, std::sync::atomic::Ordering::Relaxed) {
            NO_COUNT => keys_changed(ops),
            n => n,
        }
    }

    /// A write failed because the database is to be created replicated.
    pub fn wants_replicated(&self) -> bool {
        self.wants_replicated.load(std::sync::atomic::Ordering::Acquire)
    }

    /// How many batches its writes were, lazy expiry left out: a
    /// command's rows are one batch, so a crash leaves all of it or none
    /// (a command that reads its own writes between two of them uses
    /// [`Db::in_one_batch`]).
    pub fn batches(&self) -> u32 {
        self.batches.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The acknowledgements the writes so far are waiting for.
    pub fn take_durability(&self) -> Durability {
        std::mem::take(&mut *self.durability.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Adds acknowledgements another `Db` (of another database, written by
    /// the same command: COPY ... DB) is waiting for, so the reply waits
    /// for them too.
    pub fn add_durability(&self, more: Durability) {
        self.durability.lock().unwrap_or_else(|p| p.into_inner()).extend(more);
    }

    fn overlay(&self) -> Option<std::sync::MutexGuard<'_, Writes>> {
        self.tx.map(|t| t.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// One row's value, as this database (and transaction) has it.
    pub async fn read_row(&self, row: Vec<u8>) -> NodeResult<Option<Vec<u8>>> {
        if let Some(o) = self.overlay() {
            if let Some(v) = o.get(&(self.range.clone(), row.clone())) {
                return Ok(v.clone());
            }
        }
        not_found_is_empty(self.node.get(&self.range, row, ReadAt::Applied).await)
    }

    /// Rows in `[start, end)`, forward or reverse: one page, and where the
    /// next starts (a reverse scan goes on below it). With writes held
    /// back (a transaction, or a command on a replicated database's leader,
    /// once it wrote), every row of the interval at once, with those
    /// writes.
    pub async fn scan_page(
        &self,
        start: Vec<u8>,
        end: Option<Vec<u8>>,
        reverse: bool,
        limit: u32,
    ) -> NodeResult<(Vec<(Vec<u8>, Vec<u8>)>, Option<Vec<u8>>)> {
        if self.node.router_read().range(&self.range).is_none() && self.tx.is_none() {
            return Ok((Vec::new(), None));
        }
        let page = |start: Vec<u8>, end: Option<Vec<u8>>, limit: u32| async move {
            if self.node.router_read().range(&self.range).is_none() {
                return Ok((Vec::new(), None));
            }
            let reply = self
                .node
                .scan_range_applied(monotable_proto::ScanRequest {
                    range: self.range.clone(),
                    start: Some(start.into()),
                    end: end.map(Into::into),
                    limit,
                    reverse,
                    ..Default::default()
                })
                .await?;
            let rows: Vec<(Vec<u8>, Vec<u8>)> =
                reply.records.into_iter().map(|r| (r.key.into_vec(), r.value.into_vec())).collect();
            Ok::<_, NodeError>((rows, reply.resume.map(|r| r.into_vec())))
        };
        // Nothing held back yet (a read-only command on a replicated
        // database's leader, or a transaction before its first write): the
        // stored rows are the answer, a page at a time.
        if self.overlay().is_none_or(|o| o.is_empty()) {
            return page(start, end, limit).await;
        }
        // A page of the stored rows, merged with the held writes in the
        // interval it covers (forward `[start, resume)`, reverse
        // `[resume, end)`; the rest of `[start, end)` when it is the
        // last): a page may come short where held deletes fall, and the
        // caller goes on from `resume` as always.
        // Postmortem: every row of the interval was read once anything was
        // held, so XADD ... MAXLEN (its trim reading after its append)
        // read all of a stream's nodes on every call.
        let (stored, resume) = page(start.clone(), end.clone(), limit).await?;
        let (lo, hi) = match (&resume, reverse) {
            (Some(next), false) => (start, Some(next.clone())),
            (Some(next), true) => (next.clone(), end),
            (None, _) => (start, end),
        };
        let mut all: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = stored.into_iter().collect();
        for (row, held) in self.overlay_rows_as(&lo, hi.as_deref(), Option::clone) {
            match held {
                Some(value) => all.insert(row, value),
                None => all.remove(&row),
            };
        }
        let mut rows: Vec<(Vec<u8>, Vec<u8>)> = all.into_iter().collect();
        if reverse {
            rows.reverse();
        }
        Ok((rows, resume))
    }

    /// Whether the key exists, unexpired, now; nothing is written (an
    /// expired key stays until expiry removes it).
    pub async fn is_live(&self, key: &[u8]) -> NodeResult<bool> {
        let row = self.read_row(key_row(key)).await?;
        let value = row.as_deref().and_then(Value::decode);
        let now = now_ms();
        Ok(value.is_some_and(|v| v.expire_at_ms.is_none_or(|at| at > now)))
    }

    /// The key's live value; an expired one is deleted on the way (lazy
    /// expiry, as Redis does on access).
    pub async fn get(&self, key: &[u8]) -> NodeResult<Option<Value>> {
        let Some(bytes) = self.read_row(key_row(key)).await? else { return Ok(None) };
        let value = Value::decode(&bytes)
            .ok_or_else(|| NodeError::Internal(format!("damaged key row for {key:?}")))?;
        if value.is_expired() {
            // While CLIENT PAUSE holds writes, an expired key is gone for
            // readers but stays, as in Redis (nothing is written).
            if self.state.pause.holds(self.state.started, true) {
                return Ok(None);
            }
            // Not a modification WATCH sees: EXEC checks whether a key
            // live at WATCH still is (see `super::watches`).
            let ops = self.remove_ops(key, &value).await?;
            self.write_rows(ops, Seen::Expired).await?;
            self.state.stats.expired_keys.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.notify(super::notify::EXPIRED, "expired", key);
            return Ok(None);
        }
        Ok(Some(value))
    }

    /// Sets a key that held `old`: a collection's element rows go with it,
    /// in the same write as the new value, so a new value the storage
    /// refuses (over the limits) leaves the old one in place.
    pub async fn replace(&self, key: &[u8], new: &Value, old: Option<&Value>) -> NodeResult<()> {
        let mut ops = match old {
            Some(old) if tag(old.kind).is_some() => self.remove_ops(key, old).await?,
            _ => Vec::new(),
        };
        ops.extend(put_ops(&[(key.to_vec(), new.clone())]));
        self.write(ops).await
    }

    /// Removes a key and, for a collection, every element row.
    pub async fn remove(&self, key: &[u8], value: &Value) -> NodeResult<()> {
        let ops = self.remove_ops(key, value).await?;
        self.write(ops).await
    }

    /// The deletes that remove a key and, for a collection, every element
    /// row: for a command to write together with the rest of its rows.
    pub async fn remove_ops(&self, key: &[u8], value: &Value) -> NodeResult<Vec<WriteOp>> {
        let mut ops = vec![WriteOp::Delete { key: key_row(key).into() }];
        for prefix in row_prefixes(value.kind, key) {
            for (row, _) in self.rows_with_prefix(&prefix).await? {
                ops.push(WriteOp::Delete { key: row.into() });
            }
        }
        Ok(ops)
    }

    /// Rows in `[start, end)` as this database (and transaction) has them,
    /// counted in O(log n) per chunk the interval touches (and a read per
    /// row a transaction wrote there).
    pub async fn count_rows(&self, start: &[u8], end: Option<&[u8]>) -> NodeResult<u64> {
        let stored = if self.node.router_read().range(&self.range).is_some() {
            not_found_is_empty(
                crate::scan::count_applied(self.node, &self.range, start, end).await,
            )?
        } else {
            0
        };
        let mut count = i128::from(stored);
        for (row, held) in self.overlay_rows(start, end) {
            let before =
                not_found_is_empty(self.node.get(&self.range, row, ReadAt::Applied).await)?;
            count += i128::from(held) - i128::from(before.is_some());
        }
        Ok(u64::try_from(count.max(0)).unwrap_or(u64::MAX))
    }

    /// The row at position `n` (0: the first) of `[start, end)`, with its
    /// value, as this database (and transaction) has them: O(log n) per
    /// chunk the interval touches; `None` when it holds `n` rows or fewer.
    /// Inside a transaction that wrote rows of the interval, the rows are
    /// walked instead.
    pub async fn select_row(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        n: u64,
    ) -> NodeResult<Option<(Vec<u8>, Vec<u8>)>> {
        if !self.overlay_rows(start, end).is_empty() {
            let mut left = n;
            let mut found = None;
            let expected = usize::try_from(n).unwrap_or(usize::MAX);
            self.visit_rows_expecting(
                start.to_vec(),
                end.map(<[u8]>::to_vec),
                false,
                expected,
                |row, value| {
                    if left == 0 {
                        found = Some((row, value));
                        return Ok(false);
                    }
                    left -= 1;
                    Ok(true)
                },
            )
            .await?;
            return Ok(found);
        }
        if self.node.router_read().range(&self.range).is_none() {
            return Ok(None);
        }
        let selected = crate::scan::select_applied(self.node, &self.range, start, end, n).await;
        let Some(row) = not_found_is_empty(selected)? else { return Ok(None) };
        // Read under the same stripes the caller holds: the row is there.
        let value = self.read_row(row.clone()).await?;
        Ok(value.map(|v| (row, v)))
    }

    /// About `limit` children of the tuple `parent` (key rows under
    /// `("k")`, a collection's element rows) in hashed order from hash
    /// `from` on, as this database (and transaction) has them, and the
    /// hash to go on from (`0`: none left): SCAN's stateless cursor
    /// ([`crate::storage::hash_order`]).
    pub async fn hashed_rows(
        &self,
        parent: &[u8],
        from: u64,
        limit: usize,
    ) -> NodeResult<(Vec<Vec<u8>>, u64)> {
        let mut merged = if self.node.router_read().range(&self.range).is_some() {
            let read = crate::scan::hashed_applied(self.node, &self.range, parent, from, limit);
            not_found_is_empty(read.await)?
        } else {
            Default::default()
        };
        let end = monotable_proto::keys::tuple_prefix_end(parent);
        for (row, live) in self.overlay_rows(parent, end.as_deref()) {
            let child = crate::storage::hash_order::position(&row).map(|p| p.0);
            if child == Some(parent.len()) {
                merged.overlay(row, live);
            }
        }
        let (rows, next) = merged.take(from, limit);
        Ok((rows.into_iter().map(|(_, row)| row).collect(), next))
    }

    /// The rows of `[start, end)` this transaction wrote, each with whether
    /// it holds a value (a put) or not (a delete).
    fn overlay_rows(&self, start: &[u8], end: Option<&[u8]>) -> Vec<(Vec<u8>, bool)> {
        self.overlay_rows_as(start, end, Option::is_some)
    }

    /// The rows of `[start, end)` this transaction wrote, each with `held`
    /// of its held value (`None`: a delete), under one lock of the overlay.
    fn overlay_rows_as<T>(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        held: impl Fn(&Option<Vec<u8>>) -> T,
    ) -> Vec<(Vec<u8>, T)> {
        let Some(o) = self.overlay() else { return Vec::new() };
        let from = (self.range.clone(), start.to_vec());
        o.range(from..)
            .take_while(|((range, row), _)| {
                range == &self.range && end.is_none_or(|e| row.as_slice() < e)
            })
            .map(|((_, row), v)| (row.clone(), held(v)))
            .collect()
    }

    /// Visits the rows in `[start, end)` in order (reverse: descending),
    /// page by page, until `visit` returns false.
    pub async fn visit_rows(
        &self,
        start: Vec<u8>,
        end: Option<Vec<u8>>,
        reverse: bool,
        visit: impl FnMut(Vec<u8>, Vec<u8>) -> NodeResult<bool>,
    ) -> NodeResult<()> {
        self.visit_rows_expecting(start, end, reverse, FIRST_PAGE_ROWS, visit).await
    }

    /// [`Db::visit_rows`] for a caller that expects to stop after about
    /// `expected` rows (ZPOPMIN's count, a range's offset and limit): the
    /// first page reads that many (and one more), later pages twice as
    /// many as the one before, so a visit that stops early reads (and
    /// copies the values of) few rows past where it stops.
    pub async fn visit_rows_expecting(
        &self,
        start: Vec<u8>,
        end: Option<Vec<u8>>,
        reverse: bool,
        expected: usize,
        mut visit: impl FnMut(Vec<u8>, Vec<u8>) -> NodeResult<bool>,
    ) -> NodeResult<()> {
        let (mut lo, mut hi) = (start, end);
        let max = monotable_proto::limits::SCAN_LIMIT_MAX;
        let mut page_rows = u32::try_from(expected.saturating_add(1)).unwrap_or(max).min(max);
        loop {
            let (rows, resume) = self.scan_page(lo.clone(), hi.clone(), reverse, page_rows).await?;
            page_rows = page_rows.saturating_mul(2).min(max);
            for (row, value) in rows {
                if !visit(row, value)? {
                    return Ok(());
                }
            }
            match resume {
                Some(next) if reverse => hi = Some(next),
                Some(next) => lo = next,
                None => return Ok(()),
            }
        }
    }

    /// Every row whose tuple starts with the tuple `prefix`, whole elements
    /// only (the rows of key "a" are not those of "a\0b"), in key order.
    pub async fn rows_with_prefix(&self, prefix: &[u8]) -> NodeResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        let end = monotable_proto::keys::tuple_prefix_end(prefix);
        self.visit_rows(prefix.to_vec(), end, false, |row, value| {
            out.push((row, value));
            Ok(true)
        })
        .await?;
        Ok(out)
    }

    /// Deletes every row of this database: their keys are read (not their
    /// values), then deleted in batches of 1,000 rows, or, inside a
    /// transaction, in its one batch (bounded as its other writes are).
    pub async fn delete_all_rows(&self) -> NodeResult<()> {
        let mut keys = Vec::new();
        self.visit_rows(Vec::new(), None, false, |row, _| {
            keys.push(row);
            Ok(true)
        })
        .await?;
        for batch in keys.chunks(1000) {
            self.write(batch.iter().map(|k| WriteOp::Delete { key: k.clone().into() }).collect())
                .await?;
        }
        Ok(())
    }

    /// A collection's elements (and their values), in element order.
    pub async fn elements(&self, kind: u8, key: &[u8]) -> NodeResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let rows = self.rows_with_prefix(&element_prefix(kind, key)).await?;
        rows.into_iter().map(|(row, value)| Ok((last_bytes(&row)?, value))).collect()
    }

    /// One element's value.
    pub async fn element(
        &self,
        kind: u8,
        key: &[u8],
        element: &[u8],
    ) -> NodeResult<Option<Vec<u8>>> {
        self.read_row(element_row(kind, key, element)).await
    }

    /// Writes rows of this database (each chunk's part atomically). Every
    /// row is checked against the key and value limits first, so a
    /// command's write is refused whole or made whole.
    ///
    /// Every row is checked against the key and value limits first, also
    /// inside a transaction, so a command over the limits fails alone and
    /// writes nothing.
    pub async fn write(&self, ops: Vec<WriteOp>) -> NodeResult<()> {
        self.write_rows(ops, Seen::Modified).await
    }

    /// [`Db::write`] of bookkeeping that does not change the key for
    /// WATCH and CLIENT TRACKING ([`Seen::Quiet`]).
    pub async fn write_quietly(&self, ops: Vec<WriteOp>) -> NodeResult<()> {
        self.write_rows(ops, Seen::Quiet).await
    }

    /// [`Db::write`]; `seen`: what the write is to WATCH and CLIENT
    /// TRACKING once the rows are applied.
    async fn write_rows(&self, ops: Vec<WriteOp>, seen: Seen) -> NodeResult<()> {
        if ops.is_empty() {
            return Ok(());
        }
        ops.iter().try_for_each(crate::node::check_op)?;
        if let Some(tx) = self.tx {
            let bytes = ops.iter().map(|op| op.key().len() + op.value().map_or(0, <[u8]>::len));
            tx.reserve(bytes.sum())?;
        }
        let created = self.created_keys(&ops).await?;
        self.write_rows_created(ops, seen, created, true).await
    }

    /// [`Db::write_rows`] once the keys it creates (for their `new`
    /// events) are known.
    /// `counted`: its changed keys are counted here (else by the caller).
    async fn write_rows_created(
        &self,
        ops: Vec<WriteOp>,
        seen: Seen,
        created: Vec<Vec<u8>>,
        counted: bool,
    ) -> NodeResult<()> {
        if let (Some(tx), Some(mut o)) = (self.tx, self.overlay()) {
            if seen != Seen::Expired && self.dbi.is_some() {
                tx.changed.fetch_add(self.changes_of(&ops), std::sync::atomic::Ordering::AcqRel);
            }
            let mut unseen = tx.unseen();
            for op in ops {
                let (row, value) = match op {
                    WriteOp::Put { key, value } => (key.into_vec(), Some(value.into_vec())),
                    WriteOp::Delete { key } => (key.into_vec(), None),
                };
                let at = (self.range.clone(), row);
                match seen {
                    Seen::Modified => unseen.remove(&at),
                    other => unseen.insert(at.clone(), other),
                };
                o.insert(at, value);
            }
            drop((o, unseen));
            self.created_list().extend(created);
            return Ok(());
        }
        self.ensure_range().await?;
        if seen != Seen::Expired {
            self.batches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let written = (seen == Seen::Modified).then(|| self.keys_for_watch(&ops)).flatten();
        if counted && seen != Seen::Expired && self.dbi.is_some() {
            self.state.saves.modified(self.changes_of(&ops));
        }
        let tracked = (seen != Seen::Quiet && self.dbi.is_some() && self.state.tracking.any())
            .then(|| super::watches::keys_in_order(&ops));
        let pending = self.node.write_ops_applied(&self.range, ops).await?;
        self.durability.lock().unwrap_or_else(|p| p.into_inner()).extend(pending);
        if let Some((dbi, keys)) = written {
            self.state.watches.written(dbi, keys);
        }
        if let Some(keys) = tracked {
            self.state.tracking.invalidate(&self.state.pubsub, self.client, &keys);
        }
        self.created_list().extend(created);
        Ok(())
    }

    fn created_list(&self) -> std::sync::MutexGuard<'_, Vec<Vec<u8>>> {
        self.created.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The keys whose key rows `ops` put where no live key is now, for
    /// the `new` event (read only when it is wanted; a key already
    /// waiting for its event is left out).
    async fn created_keys(&self, ops: &[WriteOp]) -> NodeResult<Vec<Vec<u8>>> {
        if self.dbi.is_none() || !self.state.notify.wants(super::notify::NEW) {
            return Ok(Vec::new());
        }
        let mut created = Vec::new();
        for op in ops {
            let WriteOp::Put { key: row, .. } = op else { continue };
            let Some(key) = key_of_key_row(row) else { continue };
            let old = self.read_row(row.to_vec()).await?;
            let live = old.as_deref().and_then(Value::decode).is_some_and(|v| !v.is_expired());
            if !live && !created.contains(&key) && !self.created_list().contains(&key) {
                created.push(key);
            }
        }
        Ok(created)
    }

    /// Raises keyspace event `name` of `key`, of `class` (see
    /// [`super::notify`]): published now, or with the transaction's writes
    /// once they are applied. Nothing when `class` is off or this range
    /// serves no Redis database. The key's `new` event, if its creation
    /// by this command waits for one, goes first.
    pub fn notify(&self, class: u32, name: &'static str, key: &[u8]) {
        self.notify_created(key);
        self.raise(class, name, key);
    }

    /// Notes that the write just made deleted `key` and added it anew
    /// (RENAME, COPY REPLACE and RESTORE REPLACE over an existing key, where
    /// Redis runs `dbDelete` then `dbAdd`): its `new` event waits as for a
    /// key created where none was.
    pub fn recreated(&self, key: &[u8]) {
        if self.dbi.is_none() || !self.state.notify.wants(super::notify::NEW) {
            return;
        }
        let mut created = self.created_list();
        if !created.iter().any(|k| k == key) {
            created.push(key.to_vec());
        }
    }

    /// Raises `key`'s `new` event now if it waits (see [`Db::notify`]):
    /// for a command whose events of other keys come after the creation,
    /// as RENAME's `rename_from`.
    pub fn notify_created(&self, key: &[u8]) {
        let waiting = {
            let mut created = self.created_list();
            let at = created.iter().position(|k| k == key);
            at.map(|at| created.remove(at))
        };
        if waiting.is_some() {
            self.raise(super::notify::NEW, "new", key);
        }
    }

    fn raise(&self, class: u32, name: &'static str, key: &[u8]) {
        let Some(dbi) = self.dbi else { return };
        let Some(event) = super::notify::Event::raised(self.state, class, name, dbi, key) else {
            return;
        };
        match self.tx {
            Some(tx) => tx.events().push(event),
            None => super::notify::publish(self.state, [event]),
        }
    }

    /// The keys `ops` write, for [`super::watches::Watches::written`] once
    /// they are applied: `None` when no key is watched (WATCH runs with
    /// no command running, so none can be watched before the write is
    /// applied) or this is no Redis database.
    fn keys_for_watch(&self, ops: &[WriteOp]) -> Option<(u32, Vec<Vec<u8>>)> {
        let dbi = self.dbi?;
        self.state.watches.any().then(|| (dbi, super::watches::keys_written(ops)))
    }

    /// Applies a transaction's writes (`parts`: rows by range, of one or
    /// more databases of this node) as one atomic batch, whatever chunks
    /// they fall in: a crash leaves all or none (see
    /// [`crate::node::Node::write_across`]). Returns once it is durable;
    /// `false` when a database is to be created replicated first (on a
    /// cluster; nothing was written, see [`Db::wants_replicated`]).
    ///
    /// Errors: `CrossChunkBatch` when a database is replicated (its
    /// transactions run on its leader, within one chunk).
    pub async fn apply_transaction(
        state: &super::state::RespState,
        parts: Vec<(String, Vec<WriteOp>)>,
        unseen: &Unseen,
        create_local: bool,
        client: Option<u64>,
    ) -> NodeResult<bool> {
        let (mut written, mut tracked) = (Vec::new(), Vec::new());
        for (range, ops) in &parts {
            let mut db = Db::of_range(state, range.clone(), None);
            db.create_local = create_local;
            match db.ensure_range().await {
                Ok(()) => {}
                Err(_) if db.wants_replicated() => return Ok(false),
                Err(e) => return Err(e),
            }
            // Each row as it was last written (see `Seen`).
            let seen = |op: &WriteOp| {
                let at = (range.clone(), op.key().to_vec());
                unseen.get(&at).copied().unwrap_or(Seen::Modified)
            };
            let modified: Vec<WriteOp> =
                ops.iter().filter(|op| seen(op) == Seen::Modified).cloned().collect();
            written.extend(db.keys_for_watch(&modified));

            if state.tracking.any() && database_of_range(range).is_some() {
                let told: Vec<WriteOp> =
                    ops.iter().filter(|op| seen(op) != Seen::Quiet).cloned().collect();
                tracked.extend(super::watches::keys_in_order(&told));
            }
        }
        state.node.write_across(parts).await?;
        for (dbi, keys) in written {
            state.watches.written(dbi, keys);
        }
        state.tracking.invalidate(&state.pubsub, client, &tracked);
        Ok(true)
    }

    /// Runs `f` on a view of this database whose writes are held back
    /// (its reads see them) and applied as one batch when `f` returns:
    /// for a command that reads its own writes between two of them (XADD
    /// and its trim), so a crash leaves all of it or none. Nothing is
    /// written when `f` fails. Inside a transaction or script (already
    /// held back) `f` runs on `self`.
    pub async fn in_one_batch<T>(
        &self,
        f: impl AsyncFnOnce(&Db<'_>) -> NodeResult<T>,
    ) -> NodeResult<T> {
        let Some(dbi) = self.dbi.filter(|_| self.tx.is_none()) else { return f(self).await };
        let overlay = Overlay::default();
        let out = {
            let mut held = Db::new(self.state, dbi, Some(&overlay));
            held.client = self.client;
            f(&held).await?
            // `held` dropped here raises its waiting `new` events.
        };
        let events = overlay.take_events();
        let changed = overlay.changed();
        let (mut batches, unseen) = overlay.into_batches();
        if batches.len() == 1 && unseen.is_empty() {
            if let Some(ops) = batches.remove(&self.range) {
                // One range, every row a modification: a write as any, its
                // durability waited for with the command's reply (a
                // pipeline's commands share one sync); the `new` events
                // are among `events` already.
                self.write_rows_created(ops, Seen::Modified, Vec::new(), false).await?;
                self.state.saves.modified(changed);
                super::notify::publish(self.state, events);
                return Ok(out);
            }
        }
        let parts = batches.into_iter().collect();
        if !Db::apply_transaction(self.state, parts, &unseen, self.create_local, self.client)
            .await?
        {
            self.wants_replicated.store(true, std::sync::atomic::Ordering::Release);
            return Err(NodeError::Internal("the database is to be created replicated".into()));
        }
        self.state.saves.modified(changed);
        super::notify::publish(self.state, events);
        Ok(out)
    }

    pub async fn put(&self, key: &[u8], value: &Value) -> NodeResult<()> {
        self.put_many(&[(key.to_vec(), value.clone())]).await
    }

    pub async fn put_many(&self, items: &[(Vec<u8>, Value)]) -> NodeResult<()> {
        self.write(put_ops(items)).await
    }

    /// Makes sure the range exists before a write applied here: creates it
    /// (as this node's own) when missing and allowed.
    ///
    /// Errors: `RangeNotFound` when missing and `create_local` is false;
    /// `ClusterUnavailable` when the range is a replica of a replicated
    /// range, whose writes go only through Raft (see [`super::cluster`]),
    /// never to the local chunk. Both set [`Db::wants_replicated`].
    pub async fn ensure_range(&self) -> NodeResult<()> {
        let id = self.node.router_read().range(&self.range).map(|r| r.meta.id);
        if let Some(id) = id {
            if crate::replicated::is_replicated(id) {
                // Made replicated (by another node) since this command
                // looked where the database lives: nothing is written
                // here; the command runs again on the leader.
                // Postmortem: a database's first writes through two nodes
                // at once failed on one of them with "leader not known
                // here yet".
                self.wants_replicated.store(true, std::sync::atomic::Ordering::Release);
                return Err(NodeError::client(
                    monotable_proto::ErrorCode::ClusterUnavailable,
                    format!(
                        "{} is replicated: its writes go through its chunk's leader",
                        self.range
                    ),
                ));
            }
            return Ok(());
        }
        if !self.create_local {
            self.wants_replicated.store(true, std::sync::atomic::Ordering::Release);
            return Err(NodeError::client(
                monotable_proto::ErrorCode::RangeNotFound,
                format!("{} is created replicated by its first write", self.range),
            ));
        }
        let joined = self.node.cluster().ok().filter(|c| c.node_id().is_some());
        if let (Some(cluster), Some(db)) = (joined, database_of_range(&self.range)) {
            // A database is this node's own only on a cluster of one
            // member, which this node's meta replica may not show yet
            // (it joined moments ago): asked again once it has caught up.
            // Postmortem: a node's first writes right after it joined made
            // the database its own range; the others never saw them.
            if !cluster.catch_up_meta().await {
                return Err(NodeError::client(
                    monotable_proto::ErrorCode::ClusterUnavailable,
                    format!(
                        "{}: cannot reach the meta range's leader to tell where it lives",
                        self.range
                    ),
                ));
            }
            if !matches!(super::cluster::placement(self.node, db), super::cluster::Placement::Local)
            {
                self.wants_replicated.store(true, std::sync::atomic::Ordering::Release);
                return Err(NodeError::client(
                    monotable_proto::ErrorCode::RangeNotFound,
                    format!("{} is created replicated by its first write", self.range),
                ));
            }
        }
        match self.node.create_range_unchecked(&self.range, Default::default()) {
            Ok(_) => Ok(()),
            // Created meanwhile by another connection.
            Err(NodeError::Client { code: monotable_proto::ErrorCode::RangeExists, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip() {
        for v in [
            Value::string(b"hello".to_vec(), None),
            Value::string(Vec::new(), Some(1_700_000_000_000)),
        ] {
            assert_eq!(Value::decode(&v.encode()), Some(v));
        }
        assert_eq!(Value::decode(&[0, 1, 2]), None);
    }
}
