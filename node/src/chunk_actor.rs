//! The actor that owns one chunk: the only writer of its log.
//!
//! Requests arrive as [`ChunkMsg`]s carrying a oneshot sender for the reply.
//! Reads do not come here: request tasks read the shared [`ChunkCell`]
//! directly. Writes are group-committed: each write is logged and indexed at
//! once, and a `Flush` (queued with `notify`, so it runs after the mailbox
//! messages already waiting) writes everything logged so far in one write
//! and one fsync; writes that arrive meanwhile wait in the mailbox for the
//! next group. A write is acknowledged only after the fsync that covers it
//! (under `fsync = always`). Chunk actors run on threads of their own, apart
//! from connections, so an fsync never holds up protocol work.
//!
//! Compaction and splits need every logged write durable: they run right
//! after a group is acknowledged, with anything pending synced first, so
//! maintenance never starves under load.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use monotable_proto::{ChunkInfo, CommitToken, WriteOp};
use tokio::sync::oneshot;

use crate::catalog::CatalogError;
use crate::chunk_cell::{CellState, ChunkCell};
use crate::config::FsyncMode;
use crate::error::{NodeError, NodeResult};
use crate::node::Node;
use crate::storage::chunk::{Chunk, ChunkError, ChunkMeta};
use crate::storage::chunk_log::LogError;

pub type ReplyTo<T> = oneshot::Sender<NodeResult<T>>;

/// A logged write waiting for durability: its seq and whom to tell.
type Pending = (u64, ReplyTo<CommitToken>);

/// A request to a chunk's actor.
pub enum ChunkMsg {
    Write {
        ops: Arc<[WriteOp]>,
        reply: ReplyTo<CommitToken>,
        /// Told as soon as the batch is applied (readable at
        /// `ReadAt::Applied`), before it is durable.
        applied: Option<oneshot::Sender<()>>,
    },
    Compact {
        reply: ReplyTo<()>,
    },
    /// Split at `key`, or where the live bytes halve when `None`.
    Split {
        key: Option<Vec<u8>>,
        reply: ReplyTo<bool>,
    },
    Info {
        reply: ReplyTo<ChunkInfo>,
    },
    /// Keep the change journal from `after` (a view's checkpoint), or stop
    /// keeping it when `None`.
    Watch {
        after: Option<u64>,
        reply: ReplyTo<()>,
    },
    /// Make everything durable and stop.
    Shutdown {
        reply: ReplyTo<()>,
    },
    /// The range was dropped: stop and delete the chunk's files.
    Retire {
        reply: ReplyTo<()>,
    },
}

impl Message for ChunkMsg {
    type Result = ();
}

/// The change journal is trimmed once it holds this many entries.
const JOURNAL_TRIM_AT_ENTRIES: usize = 4096;

/// Internal: write out and sync what is pending.
struct Flush;
impl Message for Flush {
    type Result = ();
}

/// Internal: the fsync of the group in flight with this generation ended.
struct Synced(u64);
impl Message for Synced {
    type Result = ();
}

/// A group of writes whose fsync runs on a blocking thread.
struct InFlight {
    generation: u64,
    batch: Vec<Pending>,
    /// The fsync's result; a std channel, read only once `Synced` says it
    /// is there (or, blocking, by `settle_now`).
    done: std::sync::mpsc::Receiver<std::io::Result<()>>,
}

impl InFlight {
    /// The fsync's outcome (waits for it if it is still running).
    fn result(&self) -> Result<(), GroupFailure> {
        match self.done.recv() {
            Ok(r) => fsync_outcome(r),
            Err(_) => Err(GroupFailure::poisoning("fsync task failed".to_owned())),
        }
    }
}

/// Why a group of writes failed, and whether the chunk may take more.
#[derive(Debug)]
struct GroupFailure {
    reason: String,
    /// A failed fsync (the page cache may have dropped the data) or a log
    /// in an unknown state: the chunk takes no more writes. A write refused
    /// before any fsync left the log as it was: the next group may succeed
    /// (a full disk with room again).
    poisons: bool,
}

impl GroupFailure {
    fn poisoning(reason: String) -> Self {
        GroupFailure { reason, poisons: true }
    }

    fn of_write_out(e: &ChunkError) -> Self {
        let poisons = !matches!(e, ChunkError::Log(LogError::WriteRefused { .. }));
        GroupFailure { reason: e.to_string(), poisons }
    }
}

/// An fsync's result as a group of writes sees it.
fn fsync_outcome(r: std::io::Result<()>) -> Result<(), GroupFailure> {
    r.map_err(|e| GroupFailure::poisoning(format!("fsync failed: {e}")))
}

/// Internal: split or compact if the chunk needs it.
struct Maintain;
impl Message for Maintain {
    type Result = ();
}

pub struct ChunkActor {
    node: Arc<Node>,
    meta: ChunkMeta,
    chunk_size_max_bytes: u64,
    /// The chunk, shared with readers.
    cell: Arc<ChunkCell>,
    /// Set after an fsync or write failure: no further writes are accepted,
    /// since the log's state on disk is unknown. Reads of durable data go on.
    poisoned: Option<String>,
    /// Logged writes waiting for durability, in seq order.
    pending: Vec<Pending>,
    flush_scheduled: bool,
    /// The group being fsynced off this thread (at most one, so groups
    /// become durable in seq order), while later writes are applied.
    in_flight: Option<InFlight>,
    sync_generation: u64,
    /// A pending write's writer waits to hear it is applied (and may be
    /// holding a lock others wait on): sync the group off this thread.
    pending_applied_waiters: bool,
    /// A background fsync (interval mode) is running.
    background_syncing: bool,
    /// The chunk was split or dropped; requests still arriving are rerouted.
    retired: bool,
}

impl Actor for ChunkActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let FsyncMode::Interval { ms } = self.node.config.fsync {
            ctx.run_interval(Duration::from_millis(ms.max(1)), |act, ctx| act.background_sync(ctx));
        }
        // A half of a split may itself be over the size limit.
        if self.needs_maintenance() {
            ctx.notify(Maintain);
        }
    }
}

impl ChunkActor {
    /// An actor for `cell`, which holds an open chunk or the reason it is
    /// unavailable (then the actor answers every request with that reason).
    pub fn new(
        node: Arc<Node>,
        meta: ChunkMeta,
        cell: Arc<ChunkCell>,
        chunk_size_max_bytes: u64,
    ) -> Self {
        ChunkActor {
            node,
            meta,
            chunk_size_max_bytes,
            cell,
            poisoned: None,
            pending: Vec::new(),
            flush_scheduled: false,
            in_flight: None,
            sync_generation: 0,
            pending_applied_waiters: false,
            background_syncing: false,
            retired: false,
        }
    }

    fn unavailable_error(&self, reason: &str) -> NodeError {
        NodeError::Unavailable { chunk: self.meta.id, reason: reason.to_owned() }
    }

    /// Why the cell holds no open chunk.
    fn closed_error(&self) -> NodeError {
        match &*self.cell.read() {
            CellState::Unavailable(reason) => self.unavailable_error(reason),
            _ => NodeError::Moved,
        }
    }

    /// Compaction and splits rewrite the log from what is durable; on a
    /// poisoned chunk some logged writes never will be, so they are refused
    /// (they would otherwise trip the chunk's durability invariant and take
    /// the actor down).
    fn check_not_poisoned(&self) -> NodeResult<()> {
        match &self.poisoned {
            Some(reason) => Err(self.unavailable_error(reason)),
            None => Ok(()),
        }
    }

    fn poison(&mut self, reason: String) {
        tracing::error!(chunk = self.meta.id, %reason, "chunk stops accepting writes");
        self.poisoned.get_or_insert(reason);
    }

    fn handle_write(
        &mut self,
        ops: Arc<[WriteOp]>,
        reply: ReplyTo<CommitToken>,
        on_applied: Option<oneshot::Sender<()>>,
        ctx: &mut Context<Self>,
    ) {
        if let Some(reason) = &self.poisoned {
            let _ = reply.send(Err(self.unavailable_error(reason)));
            return;
        }
        if !ops.iter().all(|op| self.meta.contains(op.key())) {
            let _ = reply.send(Err(NodeError::Moved));
            return;
        }
        let node = self.node.clone();
        let applied = self.cell.with_chunk_mut(|chunk| {
            let seq = node.clock.allocate();
            match chunk.apply_batch(seq, &ops) {
                Ok(()) => Ok(seq),
                Err(e) => {
                    node.clock.resolve([seq]);
                    Err(e)
                }
            }
        });
        match applied {
            Some(Ok(seq)) => {
                if let Some(tell) = on_applied {
                    let _ = tell.send(());
                    self.pending_applied_waiters = true;
                }
                self.pending.push((seq, reply));
                self.schedule_flush(ctx);
            }
            Some(Err(ChunkError::Refused(refused))) => {
                // Refused before anything was logged: the chunk is unharmed.
                let _ = reply.send(Err(NodeError::client(refused.code, refused.message)));
            }
            Some(Err(e)) => {
                let reason = e.to_string();
                let _ = reply.send(Err(self.unavailable_error(&reason)));
                self.poison(reason);
            }
            None => {
                let _ = reply.send(Err(self.closed_error()));
            }
        }
    }

    fn schedule_flush(&mut self, ctx: &mut Context<Self>) {
        if !self.flush_scheduled {
            self.flush_scheduled = true;
            ctx.notify(Flush);
        }
    }

    /// Writes out everything pending and makes it durable: one write, one
    /// fsync for the whole group. When a writer of the group asked to hear
    /// once its write is applied (the Redis endpoint, which holds a key's
    /// lock until then), the fsync runs on a blocking thread while this
    /// actor goes on applying the writes that arrive meanwhile (they form
    /// the next group, written out once this one is durable): the next
    /// writer on that key is then not held up by the fsync as well.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        self.flush_scheduled = false;
        if self.pending.is_empty() || self.in_flight.is_some() {
            return;
        }
        let always = self.node.config.fsync == FsyncMode::Always;
        let (batch, job) = self.write_out_pending(always);
        let job = match job {
            Ok(Some(job)) => job,
            Ok(None) => return self.settled(batch, Ok(()), ctx),
            Err(e) => return self.settled(batch, Err(e), ctx),
        };
        // A group without such a writer is fsynced on this thread: writes
        // arriving meanwhile wait in the mailbox and form the next group
        // just the same, and handing the fsync to another thread would cost
        // two thread wakeups per group (a fifth of the throughput of 50
        // pipelined native writers).
        if !std::mem::take(&mut self.pending_applied_waiters) {
            return self.settled(batch, fsync_outcome(job.run()), ctx);
        }
        self.sync_generation += 1;
        let generation = self.sync_generation;
        let (tx, done) = std::sync::mpsc::sync_channel(1);
        let addr = ctx.address();
        tokio::task::spawn_blocking(move || {
            let _ = tx.send(job.run());
            addr.do_send(Synced(generation));
        });
        self.in_flight = Some(InFlight { generation, batch, done });
    }

    /// Waits for the group in flight, if any, and completes it.
    fn finish_in_flight(&mut self) {
        if let Some(f) = self.in_flight.take() {
            let result = f.result();
            self.complete(f.batch, result);
        }
    }

    /// Completes a group of writes once their fate is known, then moves on:
    /// maintenance if the chunk needs it, else the next flush.
    fn settled(
        &mut self,
        batch: Vec<Pending>,
        result: Result<(), GroupFailure>,
        ctx: &mut Context<Self>,
    ) {
        self.complete(batch, result);
        if self.needs_maintenance() {
            self.settle_now();
            self.maintain(ctx);
        } else if !self.pending.is_empty() {
            self.schedule_flush(ctx);
        }
    }

    /// Acknowledges (or fails) a group of writes.
    fn complete(&mut self, batch: Vec<Pending>, result: Result<(), GroupFailure>) {
        let chunk_id = self.meta.id;
        // The chunk must show a batch as durable before the clock calls its
        // seq stable: a snapshot or a view round at the stable seq reads
        // this chunk only up to what it shows as durable, and would skip
        // the batch for good if the order were the other way round.
        if let (Ok(()), Some(&(last, _))) = (&result, batch.last()) {
            self.cell.with_chunk_mut(|chunk| chunk.mark_durable(last));
        }
        self.node.clock.resolve(batch.iter().map(|(seq, _)| *seq));
        match result {
            Ok(()) => {
                for (seq, reply) in batch {
                    let _ = reply.send(Ok(CommitToken { chunk: chunk_id, seq }));
                }
                self.after_commit();
            }
            Err(GroupFailure { reason, poisons }) => {
                for (_, reply) in batch {
                    let _ = reply.send(Err(self.unavailable_error(&reason)));
                }
                if poisons {
                    self.poison(reason);
                } else {
                    tracing::warn!(chunk = chunk_id, %reason, "write refused; the log is as before it");
                }
            }
        }
    }

    /// Tells views reading this range that it changed, and trims the change
    /// journal below what they have all seen.
    fn after_commit(&mut self) {
        let range_id = self.meta.range_id;
        let journal_len = self.cell.with_chunk(|c| Ok(c.journal_len())).unwrap_or(0);
        if journal_len == 0 {
            return;
        }
        self.node.notify_views(range_id);
        if journal_len >= JOURNAL_TRIM_AT_ENTRIES {
            if let Some(floor) = self.node.view_floor(range_id) {
                self.cell.with_chunk_mut(|c| c.trim_journal(floor));
            }
        }
    }

    /// Makes every pending write durable now, before maintenance, shutdown
    /// or an admin request.
    fn settle_now(&mut self) {
        self.finish_in_flight();
        if self.pending.is_empty() {
            return;
        }
        let (batch, result) = self.write_pending(true);
        self.complete(batch, result);
    }

    /// Takes the pending writes, hands them to the kernel in one write and,
    /// when `sync`, fsyncs them (on this thread, outside the cell's lock).
    fn write_pending(&mut self, sync: bool) -> (Vec<Pending>, Result<(), GroupFailure>) {
        let (batch, job) = self.write_out_pending(sync);
        let result = match job {
            Ok(Some(job)) => fsync_outcome(job.run()),
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        (batch, result)
    }

    /// Takes the pending writes and hands them to the kernel in one write;
    /// when `sync`, returns the fsync that makes them durable.
    fn write_out_pending(
        &mut self,
        sync: bool,
    ) -> (Vec<Pending>, Result<Option<crate::storage::chunk_log::SyncJob>, GroupFailure>) {
        let batch = std::mem::take(&mut self.pending);
        let job = self.cell.with_chunk_mut(|chunk| {
            chunk.write_out().and_then(|()| {
                if sync {
                    chunk.take_sync_job().map(Some)
                } else {
                    Ok(None)
                }
            })
        });
        let job = match job {
            None => Err(GroupFailure::poisoning("chunk is closed".to_owned())),
            Some(r) => r.map_err(|e| GroupFailure::of_write_out(&e)),
        };
        (batch, job)
    }

    fn needs_maintenance(&self) -> bool {
        if self.poisoned.is_some() || self.retired {
            return false;
        }
        let size_max = self.chunk_size_max_bytes;
        let compaction_min = self.compaction_min_bytes();
        self.cell
            .with_chunk(|chunk| {
                Ok((chunk.live_bytes() > size_max && chunk.can_split())
                    || chunk.wants_compaction(compaction_min))
            })
            .unwrap_or(false)
    }

    fn compaction_min_bytes(&self) -> u64 {
        (self.chunk_size_max_bytes / 2).max(4096)
    }

    /// Splits or compacts a settled chunk if it needs it.
    fn maintain(&mut self, ctx: &mut Context<Self>) {
        debug_assert!(self.pending.is_empty());
        if !self.needs_maintenance() {
            return;
        }
        let size_max = self.chunk_size_max_bytes;
        let split_key = self
            .cell
            .with_chunk(|c| Ok(if c.live_bytes() > size_max { c.split_key() } else { None }))
            .unwrap_or(None);
        let result = match split_key {
            Some(key) => self.split(key, ctx),
            None => self.compact(),
        };
        if let Err(e) = result {
            tracing::error!(chunk = self.meta.id, error = %e, "maintenance failed");
        }
    }

    /// Requests that need every logged write durable first.
    fn handle_settled(&mut self, msg: ChunkMsg, ctx: &mut Context<Self>) {
        match msg {
            ChunkMsg::Compact { reply } => {
                let _ = reply.send(self.compact());
            }
            ChunkMsg::Split { key, reply } => {
                let key = match key {
                    Some(k) => Some(k),
                    None => self.cell.with_chunk(|c| Ok(c.split_key())).unwrap_or(None),
                };
                let result = match key {
                    Some(k) if k.as_slice() == self.meta.start.as_slice() => Ok(false),
                    Some(k) if !self.meta.contains(&k) => Err(NodeError::Moved),
                    Some(k) => self.split(k, ctx).map(|()| true),
                    None => Ok(false),
                };
                let _ = reply.send(result);
            }
            ChunkMsg::Shutdown { reply } => {
                let job = self.cell.with_chunk_mut(Chunk::take_sync_job);
                let result = match job {
                    Some(Ok(job)) => job.run().map_err(|e| NodeError::Internal(e.to_string())),
                    Some(Err(e)) => Err(e.into()),
                    None => Ok(()),
                };
                self.retired = true;
                let _ = reply.send(result);
                ctx.stop();
            }
            ChunkMsg::Retire { reply } => {
                self.retired = true;
                let result = match self.cell.take() {
                    Some(chunk) => chunk.destroy().map_err(|e| NodeError::Internal(e.to_string())),
                    None => Ok(()),
                };
                let _ = reply.send(result);
                ctx.stop();
            }
            other => self.handle_now(other, ctx),
        }
    }

    /// Compacts in two steps so readers wait only for the quick one: the
    /// rewrite runs under the read lock (this actor is the only writer, so
    /// nothing changes meanwhile), the swap under the write lock.
    fn compact(&mut self) -> NodeResult<()> {
        self.check_not_poisoned()?;
        let (pins, stable) = self.node.clock.retention();
        let prepared = self.cell.with_chunk(|c| Ok(c.prepare_compaction(&pins, stable)?))?;
        self.cell.with_chunk_mut(|c| c.install_compaction(prepared)).ok_or(NodeError::Moved)??;
        Ok(())
    }

    fn split(&mut self, key: Vec<u8>, ctx: &mut Context<Self>) -> NodeResult<()> {
        self.check_not_poisoned()?;
        let node = self.node.clone();
        let (pins, stable) = node.clock.retention();
        let lower_meta = ChunkMeta {
            id: node.catalog.next_id()?,
            range_id: self.meta.range_id,
            start: self.meta.start.clone(),
            end: Some(key.clone()),
        };
        let upper_meta = ChunkMeta {
            id: node.catalog.next_id()?,
            range_id: self.meta.range_id,
            start: key.clone(),
            end: self.meta.end.clone(),
        };
        let lower_dir = node.chunk_dir(lower_meta.id);
        let upper_dir = node.chunk_dir(upper_meta.id);
        let segment = node.config.segment_size_for(self.chunk_size_max_bytes);
        // Readers keep reading this chunk while the halves are written.
        let (lower, upper, live_bytes) = self.cell.with_chunk(|chunk| {
            let (lower, upper) = chunk.split(
                &key,
                &pins,
                stable,
                (lower_meta.clone(), &lower_dir),
                (upper_meta.clone(), &upper_dir),
                segment,
            )?;
            Ok((lower, upper, chunk.live_bytes()))
        })?;
        if let Err(e) = node.catalog.split_chunk(self.meta.id, &lower_meta, &upper_meta) {
            if matches!(e, CatalogError::ChunkNotFound(_)) {
                // Refused before anything changed: the catalog still names
                // this chunk, and the halves are nobody's.
                let _ = lower.destroy();
                let _ = upper.destroy();
            } else {
                // The catalog may yet record the split (a flush that failed
                // after the change). Both the halves and this chunk are
                // kept, and this chunk takes no more writes, so whichever
                // the catalog names at the next start holds everything.
                self.poison(format!(
                    "the catalog could not record a split of this chunk ({e}); restart the node"
                ));
            }
            return Err(e.into());
        }
        tracing::info!(
            chunk = self.meta.id,
            lower = lower_meta.id,
            upper = upper_meta.id,
            live_bytes,
            "split chunk"
        );
        let lower_route = node.spawn_chunk(lower, self.chunk_size_max_bytes);
        let upper_route = node.spawn_chunk(upper, self.chunk_size_max_bytes);
        node.router_write().replace_split(
            self.meta.range_id,
            self.meta.id,
            lower_route,
            upper_route,
        );
        self.retired = true;
        if let Some(old) = self.cell.take() {
            if let Err(e) = old.destroy() {
                tracing::warn!(chunk = self.meta.id, error = %e, "split chunk's files remain; removed at next start");
            }
        }
        ctx.stop();
        Ok(())
    }

    fn background_sync(&mut self, ctx: &mut Context<Self>) {
        if self.background_syncing || self.poisoned.is_some() {
            return;
        }
        let job = match self.cell.with_chunk_mut(Chunk::take_sync_job) {
            None => return,
            Some(Ok(job)) if job.is_empty() => return,
            Some(Ok(job)) => job,
            Some(Err(e)) => return self.poison(e.to_string()),
        };
        self.background_syncing = true;
        let sync = tokio::task::spawn_blocking(move || job.run());
        ctx.spawn(sync.into_actor(self).map(|res, act, _| {
            act.background_syncing = false;
            match res {
                Ok(Ok(())) => {}
                Ok(Err(e)) => act.poison(format!("fsync failed: {e}")),
                Err(e) => act.poison(format!("fsync task failed: {e}")),
            }
        }));
    }

    fn info(&self) -> ChunkInfo {
        let unavailable = match &*self.cell.read() {
            CellState::Open(c) => {
                let mut info = c.info();
                info.unavailable = self.poisoned.clone();
                return info;
            }
            CellState::Unavailable(reason) => Some(reason.clone()),
            CellState::Gone => Some("chunk is closed".to_owned()),
        };
        ChunkInfo {
            id: self.meta.id,
            start: self.meta.start.clone().into(),
            end: self.meta.end.clone().map(Into::into),
            records: 0,
            live_bytes: 0,
            log_bytes: 0,
            last_seq: 0,
            unavailable,
        }
    }

    fn handle_now(&mut self, msg: ChunkMsg, ctx: &mut Context<Self>) {
        match msg {
            ChunkMsg::Write { ops, reply, applied } => self.handle_write(ops, reply, applied, ctx),
            ChunkMsg::Info { reply } => {
                let _ = reply.send(Ok(self.info()));
            }
            ChunkMsg::Watch { after, reply } => {
                self.cell.with_chunk_mut(|c| match after {
                    Some(after) => c.watch_changes(after),
                    None => c.unwatch_changes(),
                });
                let _ = reply.send(Ok(()));
            }
            settled @ (ChunkMsg::Compact { .. }
            | ChunkMsg::Split { .. }
            | ChunkMsg::Shutdown { .. }
            | ChunkMsg::Retire { .. }) => {
                self.settle_now();
                self.handle_settled(settled, ctx);
            }
        }
    }
}

impl Handler<ChunkMsg> for ChunkActor {
    type Result = ();

    fn handle(&mut self, msg: ChunkMsg, ctx: &mut Context<Self>) {
        if self.retired {
            // Dropping the reply sender tells the caller to route again.
            return;
        }
        self.handle_now(msg, ctx);
    }
}

impl Handler<Maintain> for ChunkActor {
    type Result = ();

    fn handle(&mut self, _: Maintain, ctx: &mut Context<Self>) {
        if !self.retired && self.needs_maintenance() {
            self.settle_now();
            self.maintain(ctx);
        }
    }
}

impl Handler<Synced> for ChunkActor {
    type Result = ();

    fn handle(&mut self, msg: Synced, ctx: &mut Context<Self>) {
        // A generation already finished by `settle_now` is ignored.
        match self.in_flight.take() {
            Some(f) if f.generation == msg.0 => {
                let result = f.result();
                self.settled(f.batch, result, ctx);
            }
            other => self.in_flight = other,
        }
    }
}

impl Handler<Flush> for ChunkActor {
    type Result = ();

    fn handle(&mut self, _: Flush, ctx: &mut Context<Self>) {
        if !self.retired {
            self.flush(ctx);
        }
    }
}
