//! The sink actor: keeps a Redis database equal to a range (or a view's
//! rows) as it changes.
//!
//! A sink works like a mapper whose target is a Redis server. It has a
//! checkpoint `C` (pinned): Redis reflects every change of the source at or
//! below `C`. It goes through three phases, persisted in the catalog:
//!
//! 1. *copy*: writes the source as of `C` to Redis, a page at a time,
//!    persisting a cursor;
//! 2. *sweep*: SCANs Redis (keys under the sink's prefix) and deletes the
//!    keys the source did not hold at `C`;
//! 3. *follow*: each round takes the stable seq `S`, reads the keys changed
//!    in `(C, S]` as they are at `S` and rewrites them in Redis, in
//!    MULTI/EXEC transactions; then persists `S` as the checkpoint.
//!
//! Every write sets a key to its whole state at a snapshot, so a round
//! repeated after a crash (of the node, or of the connection) leaves Redis
//! the same: nothing is missed, nothing applied twice. A Redis server that
//! restarted (its `run_id` changed) may have lost writes it acknowledged,
//! so the sink copies and sweeps again from a new checkpoint.
//!
//! For a Redis database range (typed mode) one Redis key is one key of the
//! range, with its type and expiry; a hash, set, sorted set or list that
//! kept its type is patched element by element, anything else rewritten
//! whole. Any
//! other range or a view goes as one string per row (see [`super::rows`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use monotable_proto::{Bytes, ScanRequest, ViewStatus};
use redis::aio::MultiplexedConnection;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use monotable_proto::keys::prefix_end;

use super::item::{key_of_row, Item};
use super::redis_io::{
    format_score, queue_item, run_id, scan_page, send, Target, ELEMENTS_PER_COMMAND_MAX,
};
use super::rows::{keys_rendering_as, render_key, render_value};
use super::BridgeError;
use crate::error::{NodeError, NodeResult};
use crate::node::Node;
use crate::resp::keyspace::{
    decode_field, decode_score, key_row, list_head, list_position, now_ms, tag, Value, KIND_HASH,
    KIND_LIST, KIND_SET, KIND_ZSET,
};
use crate::storage::chunk::Change;
use crate::view::mapper::Dirty;

/// Source keys (typed) or rows copied per round of the copy phase.
const COPY_PAGE_MAX: u32 = 500;

/// Keys written per MULTI/EXEC while following.
const TRANSACTION_KEYS_MAX: usize = 500;

/// SCAN's COUNT during the sweep.
const SWEEP_COUNT: usize = 1_000;

/// A round that failed is retried after this long, doubling up to
/// [`ROUND_RETRY_MAX_MS`] while Redis stays unreachable.
const ROUND_RETRY_MS: u64 = 50;
const ROUND_RETRY_MAX_MS: u64 = 2_000;

/// How often an idle sink checks that Redis is up and is the same server
/// (a restarted one may have lost what the sink wrote).
const REDIS_CHECK_MS: u64 = 1_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SinkPhase {
    /// Copying the source as of the checkpoint; `cursor` is the next source
    /// row to copy.
    Copy {
        cursor: Option<Vec<u8>>,
        done: u64,
        total: u64,
    },
    /// Deleting Redis keys the source does not hold; `cursor` is Redis's
    /// SCAN cursor.
    Sweep {
        cursor: u64,
    },
    Follow,
}

/// A registered sink and how far it got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkMeta {
    pub name: String,
    /// The range it mirrors (a view's target range, for a view).
    pub source: String,
    pub source_id: u64,
    /// The view it was created for, if any.
    pub view: Option<String>,
    pub url: String,
    /// Prepended to every Redis key it writes.
    pub prefix: Vec<u8>,
    /// The source is a Redis database range: keys go with their types.
    pub typed: bool,
    /// Redis reflects every change of the source at or below this seq; the
    /// node keeps a pin here.
    pub checkpoint: u64,
    pub phase: SinkPhase,
    /// The `run_id` of the Redis server the sink last wrote to.
    pub redis_run_id: Option<String>,
}

impl SinkMeta {
    pub fn describe(&self) -> String {
        let what = if self.typed { "Redis types" } else { "rows as strings" };
        let prefix = if self.prefix.is_empty() {
            String::new()
        } else {
            format!(", prefix {:?}", String::from_utf8_lossy(&self.prefix))
        };
        format!("sink: {what}{prefix}")
    }
}

pub struct SinkActor {
    node: Arc<Node>,
    meta: SinkMeta,
    target: Target,
    /// The open connection to Redis; dropped after any error, so the next
    /// round reconnects (and notices a restarted server).
    con: Option<MultiplexedConnection>,
    dirty: bool,
    running: bool,
    /// The next round checks Redis's `run_id`.
    check_due: bool,
    retry_ms: u64,
    keys_written: u64,
    errors: u64,
    last_error: Option<String>,
    stopping: Option<oneshot::Sender<NodeResult<()>>>,
}

impl Actor for SinkActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(Duration::from_millis(REDIS_CHECK_MS), |act, ctx| {
            act.check_due = true;
            act.schedule(ctx);
        });
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Round;

struct Outcome {
    meta: SinkMeta,
    con: MultiplexedConnection,
    keys_written: u64,
    more: bool,
}

impl SinkActor {
    pub fn new(node: Arc<Node>, meta: SinkMeta, target: Target) -> Self {
        SinkActor {
            node,
            meta,
            target,
            con: None,
            dirty: false,
            running: false,
            check_due: false,
            retry_ms: ROUND_RETRY_MS,
            keys_written: 0,
            errors: 0,
            last_error: None,
            stopping: None,
        }
    }

    fn schedule(&mut self, ctx: &mut Context<Self>) {
        if !self.running && self.stopping.is_none() {
            self.running = true;
            ctx.notify(Round);
        }
    }

    fn finish_stop(&mut self, ctx: &mut Context<Self>) {
        let Some(reply) = self.stopping.take() else { return };
        let result =
            self.node.catalog.remove_sink(&self.meta.name).map(|_| ()).map_err(NodeError::from);
        self.node.clock.unpin(self.meta.checkpoint);
        self.node.views_write().sinks.remove(&self.meta.name);
        let _ = reply.send(result);
        ctx.stop();
    }

    fn status(&self) -> ViewStatus {
        let m = &self.meta;
        let backfill = match &m.phase {
            SinkPhase::Copy { done, total, .. } => Some((*done, *total)),
            SinkPhase::Sweep { .. } => Some((1, 1)),
            SinkPhase::Follow => None,
        };
        ViewStatus {
            name: m.name.clone(),
            kind: "sink".into(),
            source: m.view.clone().unwrap_or_else(|| m.source.clone()),
            target: self.target.display.clone(),
            function: m.describe(),
            watermark: m.checkpoint,
            pending_changes: self.node.pending_changes(m.source_id, m.checkpoint),
            rows_written: self.keys_written,
            errors: self.errors,
            last_error: self.last_error.clone(),
            last_error_key: None,
            backfill,
            tree: None,
        }
    }
}

crate::view::follower_handlers!(SinkActor);

impl Handler<Round> for SinkActor {
    type Result = ();

    fn handle(&mut self, _: Round, ctx: &mut Context<Self>) {
        self.dirty = false;
        let node = self.node.clone();
        let meta = self.meta.clone();
        let target = self.target.clone();
        let con = self.con.take();
        let check = std::mem::take(&mut self.check_due);
        let round = async move { run_round(&node, meta, &target, con, check).await };
        ctx.spawn(round.into_actor(self).map(|result, act, ctx| {
            act.running = false;
            match result {
                Ok(outcome) => {
                    act.meta = outcome.meta;
                    act.con = Some(outcome.con);
                    act.retry_ms = ROUND_RETRY_MS;
                    act.keys_written += outcome.keys_written;
                    act.last_error = None;
                    act.node.set_sink_checkpoint(&act.meta.name, act.meta.checkpoint);
                    if act.stopping.is_some() {
                        return act.finish_stop(ctx);
                    }
                    if outcome.more || act.dirty {
                        act.schedule(ctx);
                    }
                }
                Err(e) => {
                    if act.stopping.is_some() {
                        return act.finish_stop(ctx);
                    }
                    if act.node.is_shutting_down() {
                        return;
                    }
                    if !matches!(e, BridgeError::Node(NodeError::Moved)) {
                        tracing::warn!(sink = %act.meta.name, error = %e, "sink round failed; retrying");
                        act.errors += 1;
                        act.last_error = Some(format!("retrying: {e}"));
                    }
                    act.dirty = true;
                    let wait = Duration::from_millis(act.retry_ms);
                    act.retry_ms = (act.retry_ms * 2).min(ROUND_RETRY_MAX_MS);
                    ctx.run_later(wait, |act, ctx| act.schedule(ctx));
                }
            }
        }));
    }
}

/// Persists `meta` with its checkpoint moved to `to` (pinned by the
/// caller); the old checkpoint's pin goes once the new one is durable.
fn advance(node: &Node, meta: &mut SinkMeta, to: u64) -> Result<(), BridgeError> {
    let previous = meta.checkpoint;
    meta.checkpoint = to;
    if let Err(e) = node.catalog.put_sink(meta) {
        meta.checkpoint = previous;
        node.clock.unpin(to);
        return Err(NodeError::from(e).into());
    }
    node.clock.unpin(previous);
    Ok(())
}

async fn run_round(
    node: &Arc<Node>,
    mut meta: SinkMeta,
    target: &Target,
    con: Option<MultiplexedConnection>,
    check: bool,
) -> Result<Outcome, BridgeError> {
    let fresh = con.is_none();
    let mut con = match con {
        Some(c) => c,
        None => target.connect().await?,
    };
    if fresh || check {
        let id = run_id(&mut con).await?;
        if meta.redis_run_id.as_deref() != Some(id.as_str()) {
            if meta.redis_run_id.is_some() {
                tracing::info!(sink = %meta.name, "Redis restarted; copying the source again");
                let total = node.range_records(meta.source_id);
                meta.phase = SinkPhase::Copy { cursor: None, done: 0, total };
                meta.redis_run_id = Some(id);
                let now = node.clock.pin_stable();
                advance(node, &mut meta, now)?;
            } else {
                meta.redis_run_id = Some(id);
                node.catalog.put_sink(&meta).map_err(NodeError::from)?;
            }
        }
    }
    let (keys_written, more) = match meta.phase.clone() {
        SinkPhase::Copy { cursor, done, total } => {
            let (n, next) = copy_page(node, &meta, &mut con, cursor).await?;
            meta.phase = match next {
                Some(c) => SinkPhase::Copy { cursor: Some(c), done: done + n, total },
                None => SinkPhase::Sweep { cursor: 0 },
            };
            node.catalog.put_sink(&meta).map_err(NodeError::from)?;
            (n, true)
        }
        SinkPhase::Sweep { cursor } => {
            let (n, next) = sweep_page(node, &meta, &mut con, cursor).await?;
            meta.phase = if next == 0 {
                tracing::info!(sink = %meta.name, "sink copied; following changes");
                SinkPhase::Follow
            } else {
                SinkPhase::Sweep { cursor: next }
            };
            node.catalog.put_sink(&meta).map_err(NodeError::from)?;
            (n, true)
        }
        SinkPhase::Follow => {
            let upto = node.clock.stable();
            if upto <= meta.checkpoint {
                return Ok(Outcome { meta, con, keys_written: 0, more: false });
            }
            node.clock.pin(upto);
            match follow(node, &meta, &mut con, upto).await {
                Ok(n) => {
                    advance(node, &mut meta, upto)?;
                    (n, false)
                }
                Err(e) => {
                    node.clock.unpin(upto);
                    return Err(e);
                }
            }
        }
    };
    Ok(Outcome { meta, con, keys_written, more })
}

fn redis_key(meta: &SinkMeta, key: &[u8]) -> Vec<u8> {
    let mut k = meta.prefix.clone();
    k.extend_from_slice(key);
    k
}

/// The Redis key `key` of a Redis database range as of `snapshot`; `None`
/// when absent or expired.
fn item_at(node: &Node, range_id: u64, key: &[u8], snapshot: u64) -> NodeResult<Option<Item>> {
    let row = key_row(key);
    let mut end = row.clone();
    end.push(0);
    let Some((_, head)) = node.rows_at(range_id, &row, Some(&end), Some(snapshot))?.pop() else {
        return Ok(None);
    };
    let head = Value::decode(&head)
        .ok_or_else(|| NodeError::Internal(format!("damaged key row for {key:?}")))?;
    if head.expire_at_ms.is_some_and(|at| at <= now_ms()) {
        return Ok(None);
    }
    let elements = match Item::element_prefix(&head, key) {
        Some(p) => node.rows_at(range_id, &p, prefix_end(&p).as_deref(), Some(snapshot))?,
        None => Vec::new(),
    };
    Item::from_rows(key.to_vec(), &head, elements)
        .map(Some)
        .map_err(|e| NodeError::Internal(e.to_string()))
}

/// Copies one page of the source as of the checkpoint; returns the keys
/// written and where the next page starts.
async fn copy_page(
    node: &Arc<Node>,
    meta: &SinkMeta,
    con: &mut MultiplexedConnection,
    cursor: Option<Vec<u8>>,
) -> Result<(u64, Option<Vec<u8>>), BridgeError> {
    let key_rows = key_row(b"");
    // ("k", KEY) rows all start with the tag's encoding.
    let tag_prefix = &key_rows[..key_rows.len() - 2];
    let (start, end) = if meta.typed {
        (cursor.unwrap_or_else(|| tag_prefix.to_vec()), prefix_end(tag_prefix))
    } else {
        (cursor.unwrap_or_default(), None)
    };
    let reply = node
        .scan_range(ScanRequest {
            range: meta.source.clone(),
            start: Some(Bytes::from(start)),
            end: end.map(Bytes::from),
            limit: COPY_PAGE_MAX,
            snapshot: Some(meta.checkpoint),
            ..ScanRequest::default()
        })
        .await?;
    let mut pipe = redis::pipe();
    for r in &reply.records {
        if meta.typed {
            let key = crate::resp::keyspace::last_bytes(&r.key)?;
            let item = item_at(node, meta.source_id, &key, meta.checkpoint)?;
            queue_item(&mut pipe, &redis_key(meta, &key), item.as_ref());
        } else {
            pipe.cmd("SET")
                .arg(redis_key(meta, &render_key(&r.key)))
                .arg(render_value(&r.value))
                .ignore();
        }
    }
    send(&pipe, con).await?;
    Ok((reply.records.len() as u64, reply.resume.map(|k| k.into_vec())))
}

/// A glob pattern matching exactly the keys that start with `prefix`.
fn prefix_pattern(prefix: &[u8]) -> String {
    let mut p = String::new();
    for c in String::from_utf8_lossy(prefix).chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('*');
    p
}

/// Deletes the keys of one SCAN page that the source did not hold at the
/// checkpoint; returns how many and the next cursor.
async fn sweep_page(
    node: &Arc<Node>,
    meta: &SinkMeta,
    con: &mut MultiplexedConnection,
    cursor: u64,
) -> Result<(u64, u64), BridgeError> {
    let pattern = (!meta.prefix.is_empty()).then(|| prefix_pattern(&meta.prefix));
    let (next, keys) = scan_page(con, cursor, pattern.as_deref(), SWEEP_COUNT).await?;
    let mut pipe = redis::pipe();
    let mut deleted = 0;
    for k in keys {
        let Some(ours) = k.strip_prefix(&meta.prefix[..]) else { continue };
        let held = if meta.typed {
            item_at(node, meta.source_id, ours, meta.checkpoint)?.is_some()
        } else {
            let mut held = false;
            for row in keys_rendering_as(ours) {
                let mut end = row.clone();
                end.push(0);
                held |= !node
                    .rows_at(meta.source_id, &row, Some(&end), Some(meta.checkpoint))?
                    .is_empty();
            }
            held
        };
        if !held {
            pipe.cmd("DEL").arg(&k).ignore();
            deleted += 1;
        }
    }
    send(&pipe, con).await?;
    Ok((deleted, next))
}

/// An old value expiring sooner than this is not patched element by
/// element (Redis may drop it before the patch lands): the key is rewritten.
const EXPIRY_MARGIN_MS: u64 = 1_000;

/// Queues what turns Redis's copy of `key` (as of the checkpoint) into what
/// the source holds at `upto`: field by field (member by member) for a
/// hash, set or sorted set that kept its type, so one change costs one
/// command however large the collection; the whole key otherwise.
fn queue_key_changes(
    node: &Node,
    meta: &SinkMeta,
    pipe: &mut redis::Pipeline,
    key: &[u8],
    changes: &[&Change],
    upto: u64,
) -> NodeResult<()> {
    let row = key_row(key);
    let now = now_ms();
    let live = |bytes: Option<&Vec<u8>>, margin: u64| {
        bytes
            .and_then(|b| Value::decode(b))
            .filter(|h| h.expire_at_ms.is_none_or(|at| at > now + margin))
    };
    let head_change = changes.iter().find(|c| c.key == row);
    let new_head = match head_change {
        Some(c) => live(c.new.as_ref(), 0),
        None => {
            let mut end = row.clone();
            end.push(0);
            let head = node.rows_at(meta.source_id, &row, Some(&end), Some(upto))?.pop();
            live(head.map(|(_, v)| v).as_ref(), 0)
        }
    };
    let old_head = match head_change {
        Some(c) => live(c.old.as_ref(), EXPIRY_MARGIN_MS),
        None => {
            new_head.clone().filter(|h| h.expire_at_ms.is_none_or(|at| at > now + EXPIRY_MARGIN_MS))
        }
    };
    let target = redis_key(meta, key);
    let patched = match (&old_head, &new_head) {
        (Some(old), Some(new)) if old.kind == new.kind => match new.kind {
            KIND_HASH | KIND_SET | KIND_ZSET => {
                patch_elements(pipe, &target, new, changes)?;
                true
            }
            KIND_LIST => patch_list(pipe, &target, old, new, changes)?,
            _ => false,
        },
        _ => false,
    };
    let (true, Some(old), Some(new)) = (patched, &old_head, &new_head) else {
        let item = item_at(node, meta.source_id, key, upto)?;
        queue_item(pipe, &target, item.as_ref());
        return Ok(());
    };
    if old.expire_at_ms != new.expire_at_ms {
        match new.expire_at_ms {
            Some(at) => pipe.cmd("PEXPIREAT").arg(&target).arg(at).ignore(),
            None => pipe.cmd("PERSIST").arg(&target).ignore(),
        };
    }
    Ok(())
}

/// Queues one command per changed field or member of a hash, set or
/// sorted set.
fn patch_elements(
    pipe: &mut redis::Pipeline,
    target: &[u8],
    new: &Value,
    changes: &[&Change],
) -> NodeResult<()> {
    let tag = tag(new.kind).expect("a collection kind");
    for c in changes {
        let Some((row_tag, element)) = tag_and_element(&c.key) else { continue };
        if row_tag != tag {
            continue;
        }
        match (new.kind, &c.new) {
            (KIND_HASH, Some(v)) => pipe.cmd("HSET").arg(target).arg(element).arg(decode_field(v)?),
            (KIND_HASH, None) => pipe.cmd("HDEL").arg(target).arg(element),
            (KIND_SET, Some(_)) => pipe.cmd("SADD").arg(target).arg(element),
            (KIND_SET, None) => pipe.cmd("SREM").arg(target).arg(element),
            (_, Some(v)) => {
                pipe.cmd("ZADD").arg(target).arg(format_score(decode_score(v)?)).arg(element)
            }
            (_, None) => pipe.cmd("ZREM").arg(target).arg(element),
        }
        .ignore();
    }
    Ok(())
}

/// Queues the LPOP, RPOP, LSET, LPUSH and RPUSH that turn the list Redis
/// holds (absolute positions `[old head, old end)`) into the new one
/// (`[new head, new end)`): pops of the positions that left either end,
/// LSET of changed positions kept, pushes of new positions at either end.
/// So a push or a pop costs one command however long the list, and a
/// change in the middle (LREM, LINSERT) one LSET per position it shifted.
/// Returns false, queueing nothing, when the two lists share no position.
fn patch_list(
    pipe: &mut redis::Pipeline,
    target: &[u8],
    old: &Value,
    new: &Value,
    changes: &[&Change],
) -> NodeResult<bool> {
    let (old_head, new_head) = (list_head(old), list_head(new));
    let (old_end, new_end) = (old_head + old.count() as i64, new_head + new.count() as i64);
    let (lo, hi) = (old_head.max(new_head), old_end.min(new_end));
    if lo >= hi {
        return Ok(false);
    }
    let values: BTreeMap<i64, Option<&Vec<u8>>> =
        changes.iter().filter_map(|c| Some((list_position(&c.key)?, c.new.as_ref()))).collect();
    // Every position the new list has and Redis does not changed (it was
    // absent at the checkpoint); its value is in the changes.
    let value_at = |p: i64| -> NodeResult<Option<Vec<u8>>> {
        values.get(&p).copied().flatten().map(|v| decode_field(v)).transpose()
    };
    let mut left = Vec::new();
    for p in (new_head..lo).rev() {
        let Some(v) = value_at(p)? else { return Ok(false) };
        left.push(v);
    }
    let mut right = Vec::new();
    for p in hi..new_end {
        let Some(v) = value_at(p)? else { return Ok(false) };
        right.push(v);
    }
    let mut sets = Vec::new();
    for (&p, v) in values.range(lo..hi) {
        let Some(v) = v else { return Ok(false) };
        sets.push((p - lo, decode_field(v)?));
    }
    if lo > old_head {
        pipe.cmd("LPOP").arg(target).arg(lo - old_head).ignore();
    }
    if old_end > hi {
        pipe.cmd("RPOP").arg(target).arg(old_end - hi).ignore();
    }
    for (index, v) in sets {
        pipe.cmd("LSET").arg(target).arg(index).arg(v).ignore();
    }
    for part in left.chunks(ELEMENTS_PER_COMMAND_MAX) {
        pipe.cmd("LPUSH").arg(target).arg(part).ignore();
    }
    for part in right.chunks(ELEMENTS_PER_COMMAND_MAX) {
        pipe.cmd("RPUSH").arg(target).arg(part).ignore();
    }
    Ok(true)
}

/// The tag and last element of an element row (`("h", KEY, FIELD)`).
fn tag_and_element(row: &[u8]) -> Option<(String, Vec<u8>)> {
    use monotable_proto::tuple::Element;
    let mut t = monotable_proto::tuple::decode(row).ok()?;
    let last = match t.pop()? {
        Element::Bytes(b) => b,
        _ => return None,
    };
    match t.first()? {
        Element::String(s) => Some((s.clone(), last)),
        _ => None,
    }
}

/// Rewrites in Redis what changed in `(checkpoint, upto]`, in MULTI/EXEC
/// transactions; returns the keys written.
async fn follow(
    node: &Arc<Node>,
    meta: &SinkMeta,
    con: &mut MultiplexedConnection,
    upto: u64,
) -> Result<u64, BridgeError> {
    let changes = node.changes(meta.source_id, meta.checkpoint, upto)?;
    let mut written = 0;
    if meta.typed {
        let mut by_key: BTreeMap<Vec<u8>, Vec<&Change>> = BTreeMap::new();
        for c in &changes {
            if let Some(key) = key_of_row(&c.key) {
                by_key.entry(key).or_default().push(c);
            }
        }
        let keys: Vec<(Vec<u8>, Vec<&Change>)> = by_key.into_iter().collect();
        for part in keys.chunks(TRANSACTION_KEYS_MAX) {
            let mut pipe = redis::pipe();
            pipe.atomic();
            for (key, changes) in part {
                queue_key_changes(node, meta, &mut pipe, key, changes, upto)?;
            }
            send(&pipe, con).await?;
            written += part.len() as u64;
        }
    } else {
        for part in changes.chunks(TRANSACTION_KEYS_MAX) {
            let mut pipe = redis::pipe();
            pipe.atomic();
            for c in part {
                let key = redis_key(meta, &render_key(&c.key));
                match &c.new {
                    Some(v) => pipe.cmd("SET").arg(key).arg(render_value(v)).ignore(),
                    None => pipe.cmd("DEL").arg(key).ignore(),
                };
            }
            send(&pipe, con).await?;
            written += part.len() as u64;
        }
    }
    Ok(written)
}

/// Whether `range` is a Redis database range (`redis.N`).
fn is_redis_range(range: &str) -> bool {
    range
        .strip_prefix("redis.")
        .and_then(|n| n.parse::<u32>().ok())
        .is_some_and(|n| n < crate::resp::keyspace::DATABASES)
}

fn bad_request(message: impl Into<String>) -> NodeError {
    NodeError::client(monotable_proto::ErrorCode::BadRequest, message)
}

impl Node {
    pub(crate) async fn create_sink(
        self: &Arc<Self>,
        name: &str,
        source: monotable_proto::SinkSource,
        url: &str,
        prefix: Vec<u8>,
    ) -> NodeResult<()> {
        crate::node::validate_range_name(name)?;
        if self.views_read().contains(name) {
            return Err(NodeError::client(
                monotable_proto::ErrorCode::RangeExists,
                format!("view {name:?} already exists"),
            ));
        }
        let target = Target::parse(url).map_err(|e| bad_request(e.to_string()))?;
        let (range, view) = match source {
            monotable_proto::SinkSource::Range(r) => (r, None),
            monotable_proto::SinkSource::View(v) => {
                let views = self.views_read();
                if views.reducers.contains_key(&v) {
                    return Err(bad_request(format!(
                        "{v:?} is a reducer: a sink follows a range or a mapper's rows (query reducers with MT.AGG)"
                    )));
                }
                let target_id = views
                    .mappers
                    .get(&v)
                    .map(|m| m.target_id)
                    .ok_or_else(|| bad_request(format!("view {v:?} does not exist")))?;
                drop(views);
                let range = self
                    .router_read()
                    .range_by_id(target_id)
                    .map(|r| r.meta.name.clone())
                    .ok_or_else(|| bad_request(format!("the rows of view {v:?} are gone")))?;
                (range, Some(v))
            }
        };
        let info = self.describe_range(&range).await?;
        // Refuse a Redis that cannot be reached now, rather than retry for ever.
        let mut con = target.connect().await.map_err(|e| bad_request(e.to_string()))?;
        redis::cmd("PING")
            .query_async::<()>(&mut con)
            .await
            .map_err(|e| bad_request(format!("{}: {e}", target.display)))?;
        let typed = view.is_none() && is_redis_range(&range);
        let total = info.chunks.iter().map(|c| c.records).sum();
        let checkpoint = self.clock.pin_stable();
        let meta = SinkMeta {
            name: name.to_owned(),
            source: range.clone(),
            source_id: info.id,
            view,
            url: url.to_owned(),
            prefix,
            typed,
            checkpoint,
            phase: SinkPhase::Copy { cursor: None, done: 0, total },
            redis_run_id: None,
        };
        if let Err(e) = self.catalog.put_sink(&meta) {
            self.clock.unpin(checkpoint);
            return Err(e.into());
        }
        self.start_sink(meta)?;
        self.rewatch(info.id).await?;
        tracing::info!(sink = name, source = range, redis = %target.display, "created sink");
        Ok(())
    }

    pub(crate) async fn drop_sink(&self, name: &str) -> NodeResult<()> {
        let found =
            self.views_read().sinks.get(name).map(|s| (s.addr.clone().recipient(), s.source_id));
        self.stop_view(name, found).await
    }

    /// Starts the actor of a registered sink.
    pub fn start_sink(self: &Arc<Self>, meta: SinkMeta) -> NodeResult<()> {
        let target = Target::parse(&meta.url).map_err(|e| bad_request(e.to_string()))?;
        let (name, source_id, checkpoint) = (meta.name.clone(), meta.source_id, meta.checkpoint);
        let node = self.clone();
        let addr = SinkActor::start_in_arbiter(&self.next_view_worker(), move |_| {
            SinkActor::new(node, meta, target)
        });
        self.views_write().sinks.insert(
            name,
            crate::view::registry::SinkEntry { source_id, checkpoint, addr: addr.clone() },
        );
        addr.do_send(Dirty);
        Ok(())
    }

    /// Records a sink's new checkpoint (its source's journal floor).
    pub fn set_sink_checkpoint(&self, name: &str, checkpoint: u64) {
        if let Some(s) = self.views_write().sinks.get_mut(name) {
            s.checkpoint = checkpoint;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_patterns_match_only_the_prefix() {
        assert_eq!(prefix_pattern(b"m:"), "m:*");
        assert_eq!(prefix_pattern(b"a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\*");
        for key in [&b"a*b?[c]\\x"[..], b"a*b?[c]\\"] {
            assert!(crate::resp::glob::matches(prefix_pattern(b"a*b?[c]\\").as_bytes(), key));
        }
        assert!(!crate::resp::glob::matches(prefix_pattern(b"a*b").as_bytes(), b"axxb"));
    }

    #[test]
    fn only_redis_database_ranges_are_typed() {
        assert!(is_redis_range("redis.0") && is_redis_range("redis.15"));
        assert!(
            !is_redis_range("redis.16") && !is_redis_range("redis.x") && !is_redis_range("people")
        );
    }

    #[test]
    fn element_rows_give_their_tag_and_element() {
        let row = crate::resp::keyspace::element_row(KIND_HASH, b"key", b"field");
        assert_eq!(tag_and_element(&row), Some(("h".to_owned(), b"field".to_vec())));
        let score = crate::resp::keyspace::score_row(b"key", 1.5, b"m");
        assert_eq!(tag_and_element(&score), Some(("Z".to_owned(), b"m".to_vec())));
    }
}
