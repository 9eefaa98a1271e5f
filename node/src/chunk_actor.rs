//! The actor that owns one chunk: the only writer of its log.
//!
//! Requests arrive as [`ChunkMsg`]s carrying a oneshot sender for the reply.
//! Writes are group-committed: each write is logged and indexed at once, and
//! a `Flush` (queued with `notify`, so it runs after the mailbox messages
//! already waiting) writes everything logged so far in one write and one
//! fsync. The fsync runs on the blocking pool, not on this arbiter's thread;
//! writes that arrive meanwhile wait for the next fsync. A write is
//! acknowledged only after the fsync that covers it (under `fsync = always`).
//!
//! Compaction and splits need every logged write durable. They run when the
//! chunk settles between two fsyncs; under load the pending writes are
//! synced inline first, so maintenance never starves.

use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use monotable_proto::{ChunkInfo, CommitToken, WriteOp};
use tokio::sync::oneshot;

use crate::config::FsyncMode;
use crate::error::{NodeError, NodeResult};
use crate::node::Node;
use crate::storage::chunk::{Chunk, ChunkMeta, ChunkScan, ReadAt};

pub type ReplyTo<T> = oneshot::Sender<NodeResult<T>>;

/// A request to a chunk.
pub enum ChunkMsg {
    Get {
        key: Vec<u8>,
        at: ReadAt,
        reply: ReplyTo<Option<Vec<u8>>>,
    },
    /// Keys travel with their position in the caller's request.
    MultiGet {
        keys: Vec<(usize, Vec<u8>)>,
        at: ReadAt,
        reply: ReplyTo<Vec<(usize, Option<Vec<u8>>)>>,
    },
    Scan {
        scan: ScanArgs,
        reply: ReplyTo<ChunkScan>,
    },
    Write {
        ops: Vec<WriteOp>,
        reply: ReplyTo<CommitToken>,
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
    /// Make everything durable and stop.
    Shutdown {
        reply: ReplyTo<()>,
    },
    /// The range was dropped: stop and delete the chunk's files.
    Retire {
        reply: ReplyTo<()>,
    },
}

pub struct ScanArgs {
    pub start: Bound<Vec<u8>>,
    pub end: Bound<Vec<u8>>,
    pub reverse: bool,
    pub limit: usize,
    pub bytes_max: usize,
    pub at: ReadAt,
}

impl Message for ChunkMsg {
    type Result = ();
}

/// Internal: write out and sync what is pending.
struct Flush;
impl Message for Flush {
    type Result = ();
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
    /// `None` when the chunk could not be opened; `unavailable` says why.
    chunk: Option<Chunk>,
    unavailable: Option<String>,
    /// Set after an fsync or write failure: no further writes are accepted,
    /// since the log's state on disk is unknown. Reads of durable data go on.
    poisoned: Option<String>,
    /// Logged writes waiting for durability, in seq order.
    pending: Vec<(u64, ReplyTo<CommitToken>)>,
    flush_scheduled: bool,
    /// An fsync is running on the blocking pool.
    syncing: bool,
    /// A background fsync (interval mode) is running.
    background_syncing: bool,
    /// Requests that need a settled chunk, run when the running fsync ends.
    deferred: Vec<ChunkMsg>,
    /// The chunk was split or dropped; requests still arriving are rerouted.
    retired: bool,
}

impl Actor for ChunkActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let FsyncMode::Interval { ms } = self.node.config.fsync {
            ctx.run_interval(Duration::from_millis(ms.max(1)), |act, ctx| {
                act.background_sync(ctx)
            });
        }
        // A half of a split may itself be over the size limit.
        if self.needs_maintenance() {
            ctx.notify(Maintain);
        }
    }
}

impl ChunkActor {
    pub fn new(node: Arc<Node>, chunk: Chunk, chunk_size_max_bytes: u64) -> Self {
        let meta = chunk.meta.clone();
        Self::build(node, meta, chunk_size_max_bytes, Some(chunk), None)
    }

    /// An actor for a chunk that failed to open: it answers every request
    /// with the reason, so the rest of the node keeps serving.
    pub fn unavailable(node: Arc<Node>, meta: ChunkMeta, reason: String) -> Self {
        Self::build(node, meta, 0, None, Some(reason))
    }

    fn build(
        node: Arc<Node>,
        meta: ChunkMeta,
        chunk_size_max_bytes: u64,
        chunk: Option<Chunk>,
        unavailable: Option<String>,
    ) -> Self {
        ChunkActor {
            node,
            meta,
            chunk_size_max_bytes,
            chunk,
            unavailable,
            poisoned: None,
            pending: Vec::new(),
            flush_scheduled: false,
            syncing: false,
            background_syncing: false,
            deferred: Vec::new(),
            retired: false,
        }
    }

    fn unavailable_error(&self, reason: &str) -> NodeError {
        NodeError::Unavailable {
            chunk: self.meta.id,
            reason: reason.to_owned(),
        }
    }

    fn readable(&self) -> NodeResult<&Chunk> {
        match (&self.chunk, &self.unavailable) {
            (Some(c), _) => Ok(c),
            (None, Some(reason)) => Err(self.unavailable_error(reason)),
            (None, None) => Err(NodeError::Moved),
        }
    }

    fn poison(&mut self, reason: String) {
        tracing::error!(chunk = self.meta.id, %reason, "chunk stops accepting writes");
        self.poisoned.get_or_insert(reason);
    }

    fn handle_write(
        &mut self,
        ops: Vec<WriteOp>,
        reply: ReplyTo<CommitToken>,
        ctx: &mut Context<Self>,
    ) {
        if let Some(reason) = self.poisoned.as_ref().or(self.unavailable.as_ref()) {
            let _ = reply.send(Err(self.unavailable_error(reason)));
            return;
        }
        if !ops.iter().all(|op| self.meta.contains(op.key())) {
            let _ = reply.send(Err(NodeError::Moved));
            return;
        }
        let Some(chunk) = self.chunk.as_mut() else {
            let _ = reply.send(Err(NodeError::Moved));
            return;
        };
        let seq = self.node.clock.allocate();
        if let Err(e) = chunk.apply_batch(seq, &ops) {
            self.node.clock.resolve([seq]);
            let reason = e.to_string();
            let _ = reply.send(Err(self.unavailable_error(&reason)));
            self.poison(reason);
            return;
        }
        self.pending.push((seq, reply));
        self.schedule_flush(ctx);
    }

    fn schedule_flush(&mut self, ctx: &mut Context<Self>) {
        if !self.flush_scheduled && !self.syncing {
            self.flush_scheduled = true;
            ctx.notify(Flush);
        }
    }

    /// Writes out everything pending and starts making it durable.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        self.flush_scheduled = false;
        if self.syncing || self.pending.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.pending);
        let Some(chunk) = self.chunk.as_mut() else {
            return;
        };
        let job = chunk
            .write_out()
            .and_then(|()| match self.node.config.fsync {
                FsyncMode::Always => chunk.take_sync_job().map(Some),
                _ => Ok(None),
            });
        match job {
            Err(e) => self.settled(batch, Err(e.to_string()), ctx),
            Ok(None) => self.settled(batch, Ok(()), ctx),
            Ok(Some(job)) => {
                self.syncing = true;
                let sync = tokio::task::spawn_blocking(move || job.run());
                ctx.spawn(sync.into_actor(self).map(move |res, act, ctx| {
                    let res = match res {
                        Ok(Ok(())) => Ok(()),
                        Ok(Err(e)) => Err(format!("fsync failed: {e}")),
                        Err(e) => Err(format!("fsync task failed: {e}")),
                    };
                    act.syncing = false;
                    act.settled(batch, res, ctx);
                }));
            }
        }
    }

    /// Completes a group of writes once their fate is known.
    fn settled(
        &mut self,
        batch: Vec<(u64, ReplyTo<CommitToken>)>,
        result: Result<(), String>,
        ctx: &mut Context<Self>,
    ) {
        let chunk_id = self.meta.id;
        let seqs = batch.iter().map(|(seq, _)| *seq);
        match result {
            Ok(()) => {
                if let (Some(chunk), Some(&(last, _))) = (self.chunk.as_mut(), batch.last()) {
                    chunk.mark_durable(last);
                }
                self.node.clock.resolve(seqs);
                for (seq, reply) in batch {
                    let _ = reply.send(Ok(CommitToken {
                        chunk: chunk_id,
                        seq,
                    }));
                }
            }
            Err(reason) => {
                self.node.clock.resolve(seqs);
                for (_, reply) in batch {
                    let _ = reply.send(Err(self.unavailable_error(&reason)));
                }
                self.poison(reason);
            }
        }
        if self.needs_settled_work() {
            self.settle_now(ctx);
            self.run_settled_work(ctx);
        } else if !self.pending.is_empty() {
            self.schedule_flush(ctx);
        }
    }

    /// Makes every pending write durable inline, blocking this thread for one
    /// fsync. Used only before maintenance, shutdown or admin requests.
    fn settle_now(&mut self, ctx: &mut Context<Self>) {
        if self.pending.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.pending);
        let result = match self.chunk.as_mut() {
            Some(chunk) => chunk
                .write_out()
                .and_then(|()| chunk.take_sync_job())
                .map_err(|e| e.to_string())
                .and_then(|job| job.run().map_err(|e| format!("fsync failed: {e}"))),
            None => Err("chunk is closed".to_owned()),
        };
        // `settled` would recurse into maintenance; do its bookkeeping here.
        let chunk_id = self.meta.id;
        self.node.clock.resolve(batch.iter().map(|(s, _)| *s));
        match result {
            Ok(()) => {
                if let (Some(chunk), Some(&(last, _))) = (self.chunk.as_mut(), batch.last()) {
                    chunk.mark_durable(last);
                }
                for (seq, reply) in batch {
                    let _ = reply.send(Ok(CommitToken {
                        chunk: chunk_id,
                        seq,
                    }));
                }
            }
            Err(reason) => {
                for (_, reply) in batch {
                    let _ = reply.send(Err(self.unavailable_error(&reason)));
                }
                self.poison(reason);
            }
        }
        let _ = ctx;
    }

    fn needs_maintenance(&self) -> bool {
        let Some(chunk) = &self.chunk else {
            return false;
        };
        if self.poisoned.is_some() || self.retired {
            return false;
        }
        (chunk.live_bytes() > self.chunk_size_max_bytes && chunk.can_split())
            || chunk.wants_compaction(self.compaction_min_bytes())
    }

    fn compaction_min_bytes(&self) -> u64 {
        (self.chunk_size_max_bytes / 2).max(4096)
    }

    fn needs_settled_work(&self) -> bool {
        !self.deferred.is_empty() || self.needs_maintenance()
    }

    /// Runs deferred requests and maintenance on a settled chunk.
    fn run_settled_work(&mut self, ctx: &mut Context<Self>) {
        debug_assert!(self.pending.is_empty() && !self.syncing);
        for msg in std::mem::take(&mut self.deferred) {
            self.handle_settled(msg, ctx);
            if self.retired {
                return;
            }
        }
        if self.needs_maintenance() {
            let Some(chunk) = &self.chunk else { return };
            if chunk.live_bytes() > self.chunk_size_max_bytes {
                if let Some(key) = chunk.split_key() {
                    if let Err(e) = self.split(key, ctx) {
                        tracing::error!(chunk = self.meta.id, error = %e, "split failed");
                    }
                    return;
                }
            }
            if let Err(e) = self.compact() {
                tracing::error!(chunk = self.meta.id, error = %e, "compaction failed");
            }
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
                    None => self.chunk.as_ref().and_then(Chunk::split_key),
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
                let result = match self.chunk.as_mut() {
                    Some(chunk) => chunk
                        .take_sync_job()
                        .map_err(NodeError::from)
                        .and_then(|job| job.run().map_err(|e| NodeError::Internal(e.to_string()))),
                    None => Ok(()),
                };
                self.retired = true;
                let _ = reply.send(result);
                ctx.stop();
            }
            ChunkMsg::Retire { reply } => {
                self.retired = true;
                let result = match self.chunk.take() {
                    Some(chunk) => chunk
                        .destroy()
                        .map_err(|e| NodeError::Internal(e.to_string())),
                    None => Ok(()),
                };
                let _ = reply.send(result);
                ctx.stop();
            }
            other => self.handle_now(other, ctx),
        }
    }

    fn compact(&mut self) -> NodeResult<()> {
        let (pins, stable) = self.node.clock.retention();
        let chunk = self.chunk.as_mut().ok_or(NodeError::Moved)?;
        let before = chunk.log_bytes();
        chunk.compact(&pins, stable)?;
        tracing::debug!(
            chunk = self.meta.id,
            before,
            after = chunk.log_bytes(),
            "compacted"
        );
        Ok(())
    }

    fn split(&mut self, key: Vec<u8>, ctx: &mut Context<Self>) -> NodeResult<()> {
        let chunk = self.chunk.as_ref().ok_or(NodeError::Moved)?;
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
        let (lower, upper) = chunk.split(
            &key,
            &pins,
            stable,
            (lower_meta.clone(), &lower_dir),
            (upper_meta.clone(), &upper_dir),
            segment,
        )?;
        if let Err(e) = node
            .catalog
            .split_chunk(self.meta.id, &lower_meta, &upper_meta)
        {
            // The catalog still names this chunk: the halves are orphans.
            let _ = lower.destroy();
            let _ = upper.destroy();
            return Err(e.into());
        }
        tracing::info!(
            chunk = self.meta.id,
            lower = lower_meta.id,
            upper = upper_meta.id,
            live_bytes = chunk.live_bytes(),
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
        if let Some(old) = self.chunk.take() {
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
        let Some(chunk) = self.chunk.as_mut() else {
            return;
        };
        let job = match chunk.take_sync_job() {
            Ok(job) if job.is_empty() => return,
            Ok(job) => job,
            Err(e) => return self.poison(e.to_string()),
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

    /// Requests served without waiting for durability.
    fn handle_now(&mut self, msg: ChunkMsg, ctx: &mut Context<Self>) {
        match msg {
            ChunkMsg::Get { key, at, reply } => {
                let r = self.readable().and_then(|c| Ok(c.get(&key, at)?));
                let _ = reply.send(r);
            }
            ChunkMsg::MultiGet { keys, at, reply } => {
                let r = self.readable().and_then(|c| {
                    keys.into_iter()
                        .map(|(i, k)| Ok((i, c.get(&k, at)?)))
                        .collect::<NodeResult<Vec<_>>>()
                });
                let _ = reply.send(r);
            }
            ChunkMsg::Scan { scan, reply } => {
                let r = self.readable().and_then(|c| {
                    let bounds = (as_ref_bound(&scan.start), as_ref_bound(&scan.end));
                    Ok(c.scan(bounds, scan.at, scan.reverse, scan.limit, scan.bytes_max)?)
                });
                let _ = reply.send(r);
            }
            ChunkMsg::Write { ops, reply } => self.handle_write(ops, reply, ctx),
            ChunkMsg::Info { reply } => {
                let info = match &self.chunk {
                    Some(c) => {
                        let mut info = c.info();
                        info.unavailable = self.poisoned.clone();
                        info
                    }
                    None => ChunkInfo {
                        id: self.meta.id,
                        start: self.meta.start.clone().into(),
                        end: self.meta.end.clone().map(Into::into),
                        records: 0,
                        live_bytes: 0,
                        log_bytes: 0,
                        last_seq: 0,
                        unavailable: self.unavailable.clone(),
                    },
                };
                let _ = reply.send(Ok(info));
            }
            settled @ (ChunkMsg::Compact { .. }
            | ChunkMsg::Split { .. }
            | ChunkMsg::Shutdown { .. }
            | ChunkMsg::Retire { .. }) => {
                if self.syncing {
                    self.deferred.push(settled);
                } else {
                    self.settle_now(ctx);
                    self.handle_settled(settled, ctx);
                }
            }
        }
    }
}

fn as_ref_bound(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match b {
        Bound::Included(k) => Bound::Included(k),
        Bound::Excluded(k) => Bound::Excluded(k),
        Bound::Unbounded => Bound::Unbounded,
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
        if !self.retired && !self.syncing && self.needs_maintenance() {
            self.settle_now(ctx);
            self.run_settled_work(ctx);
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
