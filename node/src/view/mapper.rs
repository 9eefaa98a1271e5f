//! The mapper actor: keeps a target range equal to its function applied to
//! every record of the source range.
//!
//! A mapper has a checkpoint `C`: every source change at or below `C` is
//! reflected in the target. Chunks of the source send `Dirty` after each
//! committed group; the mapper coalesces them and runs one round at a time:
//! pin the stable seq `S` and save it in the mapper's catalog entry as the
//! round's upper seq, ask every source chunk for its keys changed in
//! `(C, S]` with their values at `C` and at `S`, map both, delete the rows
//! the old value produced and the new one does not, write the new rows
//! (unless identical), then save `S` as the checkpoint and unpin `C`. A
//! crash anywhere in a round replays it over the same `(C, S]` (both still
//! pinned after the restart): row writes are idempotent, and the rows it
//! wrote from the values at `S` are the new side of the replay, so none
//! stays behind. A new mapper first backfills: it maps the source as of its
//! first checkpoint, a batch of records at a time, persisting a cursor. A
//! mapper that takes over a target holding rows (on the new leader of a
//! replicated source, [`crate::replicated_views`]) first prunes the rows the
//! source at its checkpoint does not produce, so the backfill leaves the
//! target exact; on a replicated source that backfill skips the rows the
//! target holds already with their value (each write would be one more
//! entry of the source's Raft log). Its rows go through [`Node::write_view_rows`] (into the
//! source's Raft log for such a target).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use monotable_proto::limits::BATCH_OPS_MAX;
use monotable_proto::{Bytes, ScanRequest, ViewStatus, WriteOp};
use tokio::sync::oneshot;

use crate::catalog::{Backfill, MapperMeta};
use crate::error::{NodeError, NodeResult};
use crate::node::Node;
use crate::storage::chunk::Change;
use crate::view::bulk_backfill::{self, BulkProgress};
use crate::view::map_fn::{check_rows, Mapper, Row};
use crate::view::sandbox::{Interrupt, LUA_INSTRUCTIONS_MAX_PER_BATCH};

/// Source records mapped per backfill batch.
const BACKFILL_BATCH_RECORDS: u32 = 2_000;

/// A round that failed (a chunk moved, the node is busy) is retried after
/// this long.
const ROUND_RETRY_MS: u64 = 50;

/// Source chunks send this after each committed group of writes.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Dirty;

/// Reports the mapper's status.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Status(pub oneshot::Sender<ViewStatus>);

/// Stops the mapper for good: its catalog entry, pin and registration go.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop(pub oneshot::Sender<NodeResult<()>>);

/// Runs one round.
#[derive(Message)]
#[rtype(result = "()")]
struct Round;

pub struct MapperActor {
    node: Arc<Node>,
    meta: MapperMeta,
    /// The compiled function (a Lua VM for Lua mappers), shared with the
    /// blocking task a round maps on; or why it cannot run (the mapper then
    /// only reports that, and can be dropped).
    mapper: Result<Arc<Mapper>, String>,
    /// A change arrived since the running round began.
    dirty: bool,
    running: bool,
    /// The checkpoint at which the last pending check found the mapper
    /// idle with changes pending.
    idle_with_pending: Option<u64>,
    /// Why rounds cannot run or keep failing, until one succeeds (the
    /// figures of records' errors are the checkpoint's, in `meta.tally`).
    trouble: Option<String>,
    /// A drop waits for the running round to end.
    stopping: Option<oneshot::Sender<NodeResult<()>>>,
    /// Set when the mapper is dropped or the node shuts down: a bulk
    /// backfill, one long round, stops at its next page.
    interrupt: Interrupt,
    /// Progress of a bulk backfill under way (its status).
    bulk: Arc<BulkProgress>,
    /// A bulk backfill failed: the backfill goes on a batch at a time.
    bulk_off: Arc<AtomicBool>,
}

/// The first `Dirty`, sent once the mapper is registered, starts it: it
/// catches up on whatever happened while it was not running.
impl Actor for MapperActor {
    type Context = Context<Self>;

    /// A check every [`PENDING_CHECK_MS`]: a mapper idle at the same
    /// checkpoint, with no round due, while its source is consistent past
    /// changes it has not mapped, at two checks in a row (a `Dirty` in
    /// flight is handled between them) missed its wakeup: a bug, logged,
    /// and a round starts, so the mapper is delayed instead of stalled
    /// until the next write.
    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(Duration::from_millis(PENDING_CHECK_MS), |act, ctx| {
            let idle = !act.running && !act.dirty && act.stopping.is_none() && act.mapper.is_ok();
            let (source, checkpoint) = (act.meta.source_id, act.meta.checkpoint);
            let pending = if idle {
                act.node.changes_between(source, checkpoint, act.node.consistent_upto(source))
            } else {
                0
            };
            if pending == 0 {
                act.idle_with_pending = None;
                return;
            }
            if act.idle_with_pending != Some(checkpoint) {
                act.idle_with_pending = Some(checkpoint);
                return;
            }
            tracing::warn!(
                mapper = %act.meta.name,
                checkpoint,
                pending,
                "mapper idle with changes no Dirty announced; starting a round"
            );
            act.idle_with_pending = None;
            act.schedule(ctx);
        });
    }
}

/// How often a mapper checks for changes no `Dirty` announced (ms).
/// Postmortem: a mapper created again under load sat with 16 changes
/// pending for 120 s: they were acknowledged before it was registered and
/// not yet stable at its checkpoint, and its last backfill round ended
/// without a round of changes.
const PENDING_CHECK_MS: u64 = 1000;

/// What one round did.
struct Outcome {
    errors: Vec<(Vec<u8>, String)>,
    /// More work is known to be waiting (the backfill goes on).
    more: bool,
}

impl MapperActor {
    pub fn new(
        node: Arc<Node>,
        meta: MapperMeta,
        mapper: Result<Mapper, String>,
        interrupt: Interrupt,
    ) -> Self {
        let trouble = mapper.as_ref().err().map(|e| format!("the function cannot run: {e}"));
        MapperActor {
            node,
            meta,
            mapper: mapper.map(Arc::new),
            dirty: false,
            running: false,
            idle_with_pending: None,
            trouble,
            stopping: None,
            interrupt,
            bulk: Arc::default(),
            bulk_off: Arc::default(),
        }
    }

    /// Removes every trace of the mapper but the rows it wrote.
    fn finish_stop(&mut self, ctx: &mut Context<Self>) {
        let Some(reply) = self.stopping.take() else { return };
        let result =
            self.node.catalog.remove_mapper(&self.meta.name).map(|_| ()).map_err(NodeError::from);
        self.node.clock.unpin(self.meta.checkpoint);
        if let Some(upto) = self.meta.round_upto {
            self.node.clock.unpin(upto);
        }
        self.node.clock.unpin(self.meta.cut);
        self.node.views_write().mappers.remove(&self.meta.name);
        self.node.release_cut(self.meta.target_id);
        // Its Lua VM (and the memory it reserved) goes before the drop is
        // answered, so a view created right after finds the memory free.
        self.mapper = Err("dropped".into());
        let _ = reply.send(result);
        ctx.stop();
    }

    fn schedule(&mut self, ctx: &mut Context<Self>) {
        if !self.running && self.stopping.is_none() && self.mapper.is_ok() {
            self.running = true;
            ctx.notify(Round);
        }
    }

    fn status(&self) -> ViewStatus {
        let m = &self.meta;
        let last_error = self.bulk.last_error().or_else(|| m.tally.last_error.clone());
        ViewStatus {
            name: m.name.clone(),
            kind: "mapper".into(),
            source: m.source.clone(),
            target: m.target.clone(),
            function: m.function.describe(),
            watermark: m.checkpoint,
            pending_changes: self.node.pending_changes(m.source_id, m.checkpoint),
            rows_written: m.tally.rows_written,
            // A bulk backfill's errors count as it finds them.
            errors: m.tally.errors + self.bulk.errors.load(Ordering::Relaxed),
            last_error: self.trouble.clone().or_else(|| last_error.clone().map(|e| e.1)),
            last_error_key: match &self.trouble {
                Some(_) => None,
                None => last_error.map(|e| Bytes::from(e.0)),
            },
            backfill: m
                .backfill
                .as_ref()
                .map(|b| (b.done.max(self.bulk.done.load(Ordering::Relaxed)), b.total)),
            tree: None,
        }
    }
}

crate::view::follower_handlers!(MapperActor);

impl Handler<Round> for MapperActor {
    type Result = ();

    fn handle(&mut self, _: Round, ctx: &mut Context<Self>) {
        self.dirty = false;
        let Ok(mapper) = self.mapper.clone() else {
            self.running = false;
            return;
        };
        let node = self.node.clone();
        let meta = self.meta.clone();
        let bulk = (self.interrupt.clone(), self.bulk.clone(), self.bulk_off.clone());
        // The meta comes back whatever happened: a failed round may have
        // chosen (pinned and saved) its upper seq, and retries with it.
        let round = async move {
            let mut meta = meta;
            let result = run_round(&node, &mut meta, mapper, bulk).await;
            (meta, result)
        };
        ctx.spawn(round.into_actor(self).map(|(meta, result), act, ctx| {
            act.running = false;
            act.meta = meta;
            // A bulk backfill's errors are in the meta's tally now (or were
            // thrown away with it).
            act.bulk.reset();
            if act.stopping.is_some() {
                return act.finish_stop(ctx);
            }
            match result {
                Ok(outcome) => {
                    let backfilling = act.meta.backfill.is_some();
                    act.node.set_view_checkpoint(
                        &act.meta.name,
                        act.meta.checkpoint,
                        backfilling,
                        act.meta.cut,
                    );
                    act.trouble = None;
                    for (_, error) in outcome.errors {
                        tracing::debug!(mapper = %act.meta.name, %error, "map failed for a record");
                    }
                    if outcome.more || act.dirty {
                        act.schedule(ctx);
                    }
                }
                Err(e) => {
                    if act.node.is_shutting_down() {
                        return;
                    }
                    tracing::debug!(mapper = %act.meta.name, error = %e, "round failed; retrying");
                    // A chunk that moved is routine; anything else is shown.
                    if !matches!(e, NodeError::Moved) {
                        act.trouble = Some(format!("round failed, retrying: {e}"));
                    }
                    act.dirty = true;
                    ctx.run_later(Duration::from_millis(ROUND_RETRY_MS), |act, ctx| {
                        act.schedule(ctx)
                    });
                }
            }
        }));
    }
}

/// Bytes of target writes a round gathers before writing them, so a round
/// holds a bounded amount whatever its records emit.
const ROUND_WRITE_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Source records mapped per step of a round.
const MAP_STEP_RECORDS: usize = 256;

/// Maps a prefix of `records` ([`Mapper::map_many`]; all of them when
/// `instructions_max` is `None`) on a blocking thread: a Lua call runs up
/// to its budget, and meanwhile the view worker goes on answering status
/// and drop requests and running other views.
async fn map_off_thread(
    mapper: &Arc<Mapper>,
    records: Vec<(Vec<u8>, Vec<u8>)>,
    instructions_max: Option<u64>,
) -> NodeResult<Vec<Result<Vec<Row>, String>>> {
    let mapper = mapper.clone();
    tokio::task::spawn_blocking(move || {
        let refs: Vec<(&[u8], &[u8])> = records.iter().map(|(k, v)| (&k[..], &v[..])).collect();
        mapper.map_many(&refs, instructions_max)
    })
    .await
    .map_err(|e| NodeError::Internal(format!("mapping stopped: {e}")))?
    // The round fails and keeps its checkpoint: a drop or a shutdown.
    .map_err(|_| NodeError::ShuttingDown)
}

/// A record's rows as writes, each checked as the chunk will check it: a
/// row the chunk would refuse fails its record (which then has no rows), so
/// it cannot fail the writes of the others.
fn checked_puts(rows: Vec<Row>) -> Result<Vec<WriteOp>, String> {
    check_rows(&rows)?;
    Ok(rows.into_iter().map(|(k, v)| WriteOp::Put { key: k.into(), value: v.into() }).collect())
}

/// Whether range `target_id` holds `op`'s row already, with its value (as
/// applied here; only the mapper writes its target).
fn holds(node: &Node, target_id: u64, op: &WriteOp) -> NodeResult<bool> {
    let WriteOp::Put { key, value } = op else { return Ok(false) };
    let mut end = key.to_vec();
    end.push(0);
    let found = node.rows_at(target_id, key, Some(&end), None)?;
    Ok(found.first().is_some_and(|(k, v)| k[..] == key[..] && v[..] == value[..]))
}

/// Gathers a round's target writes and writes them once they pass
/// [`ROUND_WRITE_BYTES_MAX`] (a round repeats from its checkpoint after a
/// crash, so writing part of it early is safe).
struct Writes<'a> {
    node: &'a Node,
    target: &'a str,
    ops: Vec<WriteOp>,
    bytes: usize,
    written: u64,
}

impl<'a> Writes<'a> {
    fn new(node: &'a Node, target: &'a str) -> Self {
        Writes { node, target, ops: Vec::new(), bytes: 0, written: 0 }
    }

    fn push(&mut self, op: WriteOp) {
        self.bytes += op.key().len()
            + match &op {
                WriteOp::Put { value, .. } => value.len(),
                _ => 0,
            };
        self.ops.push(op);
    }

    async fn flush_if_full(&mut self) -> NodeResult<()> {
        if self.bytes >= ROUND_WRITE_BYTES_MAX || self.ops.len() >= BATCH_OPS_MAX {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> NodeResult<()> {
        let mut ops = std::mem::take(&mut self.ops);
        self.bytes = 0;
        while !ops.is_empty() {
            let rest = ops.split_off(ops.len().min(BATCH_OPS_MAX));
            self.written += ops.len() as u64;
            self.node.write_view_rows(self.target, ops).await?;
            ops = rest;
        }
        Ok(())
    }

    async fn finish(mut self) -> NodeResult<u64> {
        self.flush().await?;
        Ok(self.written)
    }
}

/// Writes to the target the rows that turn the rows of each change's old
/// value into the rows of its new value. Errors mapping new values are
/// reported; errors on old values were reported when they were new.
async fn diff_rows(
    name: &str,
    mapper: &Arc<Mapper>,
    changes: &[Change],
    errors: &mut Vec<(Vec<u8>, String)>,
    writes: &mut Writes<'_>,
) -> NodeResult<()> {
    for step in changes.chunks(MAP_STEP_RECORDS) {
        let values = |new: bool| -> Vec<(Vec<u8>, Vec<u8>)> {
            step.iter()
                .filter_map(|c| {
                    let v = if new { &c.new } else { &c.old };
                    v.as_ref().map(|v| (c.key.clone(), v.to_vec()))
                })
                .collect()
        };
        let mut old_rows = map_off_thread(mapper, values(false), None).await?.into_iter();
        let mut new_rows = map_off_thread(mapper, values(true), None).await?.into_iter();
        for change in step {
            let old: HashMap<Vec<u8>, Vec<u8>> = match &change.old {
                Some(_) => {
                    old_rows.next().and_then(Result::ok).unwrap_or_default().into_iter().collect()
                }
                None => HashMap::new(),
            };
            let new = match &change.new {
                Some(_) => match new_rows.next().map(|r| r.and_then(checked_puts)) {
                    Some(Ok(ops)) => ops,
                    Some(Err(e)) => {
                        errors.push((change.key.clone(), e));
                        Vec::new()
                    }
                    None => Vec::new(),
                },
                None => Vec::new(),
            };
            let (rows_before, rows_after) = (old.len(), new.len());
            let mut changed = 0usize;
            for key in old.keys() {
                if !new.iter().any(|op| op.key() == &key[..]) {
                    writes.push(WriteOp::Delete { key: key.clone().into() });
                    changed += 1;
                }
            }
            for op in new {
                if let WriteOp::Put { key, value } = &op {
                    if old.get(&key[..]).is_some_and(|v| v[..] == value[..]) {
                        continue;
                    }
                }
                writes.push(op);
                changed += 1;
            }
            tracing::trace!(
                mapper = name,
                key = %monotable_proto::keys::hex(&change.key),
                rows_before,
                rows_after,
                changed,
                "record mapped"
            );
        }
        writes.flush_if_full().await?;
    }
    Ok(())
}

/// The target's cut at the end of a round: a seq at or above every write
/// the round made, once it is stable.
/// Pinned as it is chosen (the stable seq once every acknowledged write is
/// stable): pinning a seq chosen earlier could claim versions a compaction
/// already dropped.
async fn round_cut(node: &Node) -> u64 {
    node.clock.wait_stable(node.clock.settled_max()).await;
    node.clock.pin_stable()
}

/// Ends a round: saves the mapper's entry with its new cut (`checkpoint`
/// already set and `cut` pinned by the caller; the cut's pin is released
/// here on failure), then publishes the cut. The pins of the old checkpoint
/// and cut go once the new ones are saved.
fn end_round(node: &Node, meta: &mut MapperMeta, previous: u64, cut: u64) -> NodeResult<()> {
    let old_cut = meta.cut;
    meta.cut = cut;
    if let Err(e) = node.catalog.put_mapper(meta) {
        node.clock.unpin(cut);
        meta.cut = old_cut;
        return Err(e.into());
    }
    node.publish_cut(meta.target_id, cut);
    node.clock.unpin(old_cut);
    if previous != meta.checkpoint {
        node.clock.unpin(previous);
    }
    Ok(())
}

async fn run_round(
    node: &Arc<Node>,
    meta: &mut MapperMeta,
    mapper: Arc<Mapper>,
    (interrupt, bulk, bulk_off): (Interrupt, Arc<BulkProgress>, Arc<AtomicBool>),
) -> NodeResult<Outcome> {
    // From the first write to the published cut, no other mapper's round
    // writes the target: a cut is never inside anyone's round.
    let _round = match node.round_lock(meta.target_id) {
        Some(lock) => Some(lock.lock_owned().await),
        None => None,
    };
    let mut errors = Vec::new();
    if !bulk_off.load(Ordering::Relaxed) && bulk_backfill::applies(meta) {
        bulk.reset();
        let started = std::time::Instant::now();
        let total = meta.backfill.as_ref().map_or(0, |b| b.total);
        let progress = (&bulk, total);
        match bulk_backfill::run(node, meta, &mapper, &interrupt, progress).await {
            Ok(Some(bulk)) => {
                meta.backfill = None;
                let cut = round_cut(node).await;
                let (checkpoint, tally) = (meta.checkpoint, meta.tally.clone());
                meta.tally.rows_written += bulk.rows;
                meta.tally.errors += bulk.errors;
                if let Some(last) = bulk.last_error.clone() {
                    meta.tally.last_error = Some(last);
                }
                if let Err(e) = end_round(node, meta, checkpoint, cut) {
                    // Retried: the target holds the rows now, so the retry
                    // backfills the ordinary way over them (the same rows).
                    meta.backfill = Some(Backfill { cursor: None, done: 0, total, prune: false });
                    meta.tally = tally;
                    return Err(e);
                }
                tracing::info!(
                    mapper = %meta.name,
                    records = bulk.records,
                    rows = bulk.rows,
                    errors = bulk.errors,
                    spills = bulk.spills,
                    map_ms = bulk.map_ms,
                    load_ms = bulk.load_ms,
                    ms = started.elapsed().as_millis() as u64,
                    "backfill done in bulk"
                );
                // As after an ordinary backfill: a round of changes follows.
                return Ok(Outcome { errors, more: true });
            }
            Ok(None) => {}
            Err(e @ (NodeError::ShuttingDown | NodeError::Moved)) => return Err(e),
            // Postmortem: a bulk backfill out of file descriptors (or disk)
            // failed, was retried from scratch every few seconds for ever,
            // and said so only in the status's last error.
            Err(e) => {
                tracing::warn!(mapper = %meta.name, error = %e, "bulk backfill failed; backfilling a batch at a time");
                bulk_off.store(true, Ordering::Relaxed);
            }
        }
        bulk.reset();
    }
    if let Some(backfill) = meta.backfill.clone() {
        let mut writes = Writes::new(node, &meta.target);
        if backfill.prune {
            prune(node, meta, &mapper, &mut writes).await?;
        }
        let reply = node
            .scan_range(ScanRequest {
                range: meta.source.clone(),
                start: backfill.cursor.clone().map(Bytes::from),
                limit: BACKFILL_BATCH_RECORDS,
                snapshot: Some(meta.checkpoint),
                ..ScanRequest::default()
            })
            .await?;
        // On a replicated source the backfill is a new leader's resync
        // (the target it takes over holds nearly every row already): rows
        // the target holds with the same value are not written again, each
        // being one more entry of the source's Raft log on every replica.
        let skip_same = crate::replicated::is_replicated(meta.source_id);
        // Records mapped so far; the round ends early, at a record, once
        // its mapping has taken about a batch's budget of instructions.
        let mut mapped = 0usize;
        for step in reply.records.chunks(MAP_STEP_RECORDS) {
            let records: Vec<(Vec<u8>, Vec<u8>)> =
                step.iter().map(|r| (r.key.to_vec(), r.value.to_vec())).collect();
            let budget = Some(LUA_INSTRUCTIONS_MAX_PER_BATCH);
            let results = map_off_thread(&mapper, records, budget).await?;
            mapped += results.len();
            let cut_short = results.len() < step.len();
            for (r, rows) in step.iter().zip(results) {
                match rows.and_then(checked_puts) {
                    Ok(ops) => {
                        for op in ops {
                            if !(skip_same && holds(node, meta.target_id, &op)?) {
                                writes.push(op);
                            }
                        }
                    }
                    Err(e) => errors.push((r.key.to_vec(), e)),
                }
            }
            writes.flush_if_full().await?;
            if cut_short {
                break;
            }
        }
        let rows_written = writes.finish().await?;
        let done = backfill.done + mapped as u64;
        let resume = match reply.records.get(mapped) {
            Some(next) => Some(next.key.to_vec()),
            None => reply.resume.map(|k| k.into_vec()),
        };
        meta.backfill =
            resume.map(|k| Backfill { cursor: Some(k), done, total: backfill.total, prune: false });
        let cut = round_cut(node).await;
        let checkpoint = meta.checkpoint;
        meta.tally.add(rows_written, &errors);
        end_round(node, meta, checkpoint, cut)?;
        if meta.backfill.is_none() {
            tracing::info!(mapper = %meta.name, records = done, "backfill done");
        }
        // The last backfill round is followed by a round of changes too:
        // those above the checkpoint that were acknowledged before the
        // mapper was registered (not yet stable when it pinned the
        // checkpoint) were announced to no one.
        return Ok(Outcome { errors, more: true });
    }
    let replay = meta.round_upto.is_some();
    let previous = meta.checkpoint;
    let Some(upto) = round_upto(node, meta)? else {
        // Nothing to map; the target may have moved (rows written into it
        // directly): a newer cut lets its readers see that.
        if !node.unchanged_since(meta.target_id, meta.cut) {
            let cut = round_cut(node).await;
            if cut > meta.cut {
                end_round(node, meta, previous, cut)?;
            } else {
                node.clock.unpin(cut);
            }
        }
        let more = node.wait_announced(meta.source_id, meta.checkpoint).await;
        return Ok(Outcome { errors, more });
    };
    let changes = node.changes(meta.source_id, previous, upto)?;
    tracing::debug!(mapper = %meta.name, after = previous, upto, replay, changes = changes.len(), "round");
    let mut writes = Writes::new(node, &meta.target);
    diff_rows(&meta.name, &mapper, &changes, &mut errors, &mut writes).await?;
    let rows_written = writes.finish().await?;
    let cut = round_cut(node).await;
    tracing::debug!(mapper = %meta.name, upto, rows_written, cut, "round written");
    // The round's pin on `upto` becomes the checkpoint's; on failure it
    // stays the round's, for the retry.
    meta.checkpoint = upto;
    meta.round_upto = None;
    let tally = meta.tally.clone();
    meta.tally.add(rows_written, &errors);
    if let Err(e) = end_round(node, meta, previous, cut) {
        meta.checkpoint = previous;
        meta.round_upto = Some(upto);
        meta.tally = tally;
        return Err(e);
    }
    // A replayed round stopped at the seq it had chosen before: what came
    // after it (nothing may announce it again) is the next round's.
    let more = replay || node.wait_announced(meta.source_id, meta.checkpoint).await;
    Ok(Outcome { errors, more })
}

/// Deletes the target's rows that the source at the mapper's checkpoint
/// does not produce (each row key names its source record,
/// [`monotable_proto::row`]); the backfill that follows writes the rows it
/// does produce. Reads the whole target into memory (one chunk: on a
/// single node bounded by its size; a replicated source's target does not
/// split, so it is as large as the source's rows make it) and the records
/// its rows name. Rows that name no record, or whose
/// record now maps to other keys, go.
async fn prune(
    node: &Arc<Node>,
    meta: &MapperMeta,
    mapper: &Arc<Mapper>,
    writes: &mut Writes<'_>,
) -> NodeResult<()> {
    let rows = node.rows_at(meta.target_id, &[], None, None)?;
    let (by_source, strays) = rows_by_source(rows.into_iter().map(|(k, _)| k));
    let mut pruned = strays.len() as u64;
    for key in strays {
        writes.push(WriteOp::Delete { key: key.into() });
    }
    let sources: Vec<(Vec<u8>, Vec<Vec<u8>>)> = by_source.into_iter().collect();
    for step in sources.chunks(MAP_STEP_RECORDS) {
        let mut records = Vec::new();
        for (source_key, _) in step {
            let mut end = source_key.clone();
            end.push(0);
            let found =
                node.rows_at(meta.source_id, source_key, Some(&end), Some(meta.checkpoint))?;
            records.extend(found);
        }
        let produced = map_off_thread(mapper, records.clone(), None).await?;
        let mut keep: std::collections::HashSet<Vec<u8>> = Default::default();
        for rows in produced.into_iter().flatten() {
            keep.extend(rows.into_iter().map(|(k, _)| k));
        }
        for key in step.iter().flat_map(|(_, keys)| keys) {
            if !keep.contains(key) {
                writes.push(WriteOp::Delete { key: key.clone().into() });
                pruned += 1;
            }
        }
        writes.flush_if_full().await?;
    }
    tracing::info!(mapper = %meta.name, pruned, "target pruned before the backfill");
    Ok(())
}

/// Target row keys by the source key each names.
type RowsBySource = std::collections::BTreeMap<Vec<u8>, Vec<Vec<u8>>>;

/// Target row keys grouped by the source key each names
/// ([`monotable_proto::row`]), and the keys that name none.
fn rows_by_source(keys: impl IntoIterator<Item = Vec<u8>>) -> (RowsBySource, Vec<Vec<u8>>) {
    let mut by_source = RowsBySource::new();
    let mut strays = Vec::new();
    for key in keys {
        match monotable_proto::row::decode_row(&key) {
            Ok((_, source_key, _)) => by_source.entry(source_key).or_default().push(key),
            Err(_) => strays.push(key),
        }
    }
    (by_source, strays)
}

/// The upper seq of the round to run: the saved one of a round that did
/// not finish (replayed over the same changes, so the rows it wrote from
/// the values at that seq are exactly reconciled), or the seq up to which
/// the source is consistent ([`Node::consistent_upto`]), pinned as it is
/// chosen (so no compaction or split of the source can drop the values the
/// round reads, or the next round reads as old) and saved before any row
/// is written. `None` when there is nothing to do.
fn round_upto(node: &Node, meta: &mut MapperMeta) -> NodeResult<Option<u64>> {
    if let Some(upto) = meta.round_upto {
        return Ok(Some(upto));
    }
    let upto = node.pin_consistent(meta.source_id);
    if upto <= meta.checkpoint {
        node.clock.unpin(upto);
        return Ok(None);
    }
    meta.round_upto = Some(upto);
    if let Err(e) = node.catalog.put_mapper(meta) {
        meta.round_upto = None;
        node.clock.unpin(upto);
        return Err(e.into());
    }
    Ok(Some(upto))
}

#[cfg(test)]
mod tests {
    use monotable_proto::row::encode_row;

    use super::*;

    /// Postmortem: a shutdown interrupts running Lua calls, and the round
    /// took the interrupted calls for the records' own errors: it wrote none
    /// of their rows and saved its checkpoint past them, so after a graceful
    /// restart a chained index held stale rows and lacked new ones. An
    /// interrupted round now fails and keeps its checkpoint.
    #[test]
    fn an_interrupted_round_keeps_its_checkpoint() {
        use monotable_proto::{MapFunction, RangeOptions};

        use crate::config::NodeConfig;

        let dir = tempfile::tempdir().expect("tmp");
        actix::System::new().block_on(async {
            let node = Node::start(NodeConfig::for_tests(dir.path())).expect("node");
            let options = RangeOptions { chunk_size_max_bytes: 1 << 20 };
            node.create_range("src", options).await.expect("range");
            let lua = MapFunction::Lua { source: "function map(k, v) emit({v.g}, 1) end".into() };
            node.create_mapper("m", "src", "idx", lua).await.expect("mapper");
            let status = |node: Arc<Node>| async move {
                let all = node.view_statuses().await;
                all.into_iter().find(|v| v.name == "m").expect("the mapper")
            };
            let mut waited = 0;
            while status(node.clone()).await.backfill.is_some() {
                assert!(waited < 500, "the backfill never ended");
                tokio::time::sleep(Duration::from_millis(10)).await;
                waited += 1;
            }
            node.interrupt_lua();
            let doc = rmp_serde::to_vec_named(&serde_json::json!({"g": 1})).expect("doc");
            let ops: Vec<WriteOp> = (0..10u8)
                .map(|i| WriteOp::Put { key: vec![b'k', i].into(), value: doc.clone().into() })
                .collect();
            node.write_ops("src", ops).await.expect("written");
            let mut tried = status(node.clone()).await;
            let mut waited = 0;
            while tried.last_error.is_none() && tried.errors == 0 {
                assert!(waited < 500, "the mapper never ran a round: {tried:?}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                tried = status(node.clone()).await;
                waited += 1;
            }
            assert_eq!(tried.errors, 0, "interrupted calls were taken for the records' errors");
            assert_eq!(tried.pending_changes, 10, "the checkpoint moved past unmapped changes");
            let target = node.router_read().range("idx").expect("target").meta.id;
            assert!(node.rows_at(target, &[], None, None).expect("rows").is_empty());
            node.shutdown().await;
        });
    }

    #[test]
    fn target_rows_are_grouped_by_the_record_they_came_from() {
        let a1 = encode_row(&["paris".into()], b"a", 0).expect("row");
        let a2 = encode_row(&["oslo".into()], b"a", 1).expect("row");
        let b1 = encode_row(&["paris".into()], b"b", 0).expect("row");
        let stray = b"not a row".to_vec();
        let (by_source, strays) =
            rows_by_source([a1.clone(), b1.clone(), stray.clone(), a2.clone()]);
        assert_eq!(by_source.len(), 2);
        assert_eq!(by_source[&b"a".to_vec()], vec![a1, a2]);
        assert_eq!(by_source[&b"b".to_vec()], vec![b1]);
        assert_eq!(strays, vec![stray], "a key that names no record is pruned");
    }
}
