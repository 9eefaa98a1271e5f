//! The reducer actor: keeps a reducer's reduce tree ([`crate::view::levels`])
//! up to date and answers aggregates from it.
//!
//! Like a mapper it has a pinned checkpoint `C` and follows its range's
//! change journal: a round takes the changes in `(C, S]`, sets each changed
//! row in the tree of its chunk's part (O(log n)), and sends the new totals
//! of the changed parts up the levels, one update per dirty parent. The
//! meta rows that changed are then written to the meta-ranges, and once
//! they are durable the reducer's checkpoint is saved in the catalog: after
//! a crash the reducer restores its levels from the meta-ranges and replays
//! the journal from that checkpoint, rebuilding nothing else.
//!
//! A new reducer builds its tree from a scan of the range at a pinned
//! snapshot, a batch at a time (queries answer "view lagging" meanwhile).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use monotable_proto::tuple;
use monotable_proto::{Bytes, ErrorCode, ScanRequest, TreeStatus, ViewStatus, WriteOp};
use serde_json::Value as Json;
use tokio::sync::oneshot;

use crate::catalog::ReducerMeta;
use crate::error::{NodeError, NodeResult};
use crate::node::Node;
use crate::view::levels::{Levels, PartBounds, Rows};
use crate::view::lua::LuaEnv;
use crate::view::reducer_fn::{Broken, ReduceView, ReducerFunction};
use crate::view::reduction::Builtin;

/// Rows loaded per batch while the tree is built.
const LOAD_BATCH_RECORDS: u32 = 5_000;
/// Most groups one grouped query returns (a page; a cursor goes on).
pub const AGGREGATE_GROUPS_MAX: usize = monotable_proto::limits::AGGREGATE_GROUPS_MAX as usize;
/// Bytes of group keys and reductions that end a page of groups.
const AGGREGATE_PAGE_BYTES_MAX: usize = monotable_proto::limits::AGGREGATE_REPLY_SIZE_MAX_BYTES;
const ROUND_RETRY_MS: u64 = 50;
/// Least time between two saves of the meta rows and checkpoint.
const SAVE_INTERVAL_MS: u64 = 20;

/// An aggregate over `[start, end)` (either may be unbounded), grouped by
/// the first `group_level` tuple elements when given: at most `limit`
/// groups (0: [`AGGREGATE_GROUPS_MAX`]), from `cursor` (a previous page's)
/// or `start`.
#[derive(Debug, Clone, Default)]
pub struct AggregateQuery {
    pub start: Option<Vec<u8>>,
    pub end: Option<Vec<u8>>,
    pub group_level: Option<u32>,
    pub cursor: Option<Vec<u8>>,
    pub limit: usize,
}

/// A query's answer: one reduction, or a page of groups (key, reduction)
/// with the cursor of the next page when more groups follow.
#[derive(Debug, Clone, PartialEq)]
pub enum AggregateAnswer {
    Total(Json),
    Groups(Vec<(Vec<u8>, Json)>, Option<Vec<u8>>),
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct Query(pub AggregateQuery, pub oneshot::Sender<NodeResult<AggregateAnswer>>);

#[derive(Message)]
#[rtype(result = "()")]
struct Round;

enum Phase {
    /// Building the tree from a scan at the checkpoint; `cursor` is the
    /// next key to load.
    Loading {
        cursor: Option<Vec<u8>>,
        loaded: u64,
        total: u64,
    },
    /// Rebuilding the levels from the meta-ranges (after a restart).
    Restoring,
    Following,
}

pub struct ReducerActor {
    node: Arc<Node>,
    meta: ReducerMeta,
    /// What its Lua VMs are made with (memory pool, interrupt).
    lua: LuaEnv,
    view: Box<dyn ReduceView>,
    /// The pinned seq the tree reflects.
    checkpoint: u64,
    /// The pinned seq the meta-ranges and catalog reflect, once saved.
    saved: Option<u64>,
    phase: Phase,
    dirty: bool,
    /// A load batch is being read.
    running: bool,
    saving: bool,
    adding_level: bool,
    stopping: Option<oneshot::Sender<NodeResult<()>>>,
    errors: u64,
    last_error: Option<String>,
    last_error_key: Option<Vec<u8>>,
}

/// The first `Dirty`, sent once the reducer is registered, starts it.
impl Actor for ReducerActor {
    type Context = Context<Self>;
}

fn internal(e: String) -> NodeError {
    NodeError::Internal(e)
}

/// What a reducer's tree is restored from: the parts of every level (its
/// ranges' chunks) and every row of its meta-ranges.
fn restore_inputs(
    node: &Node,
    meta: &ReducerMeta,
) -> NodeResult<(Vec<Vec<PartBounds>>, Vec<Rows>)> {
    let depth = meta.levels.len() + 1;
    let mut partitions = Vec::with_capacity(depth);
    partitions.push(node.partition(meta.range_id)?);
    let mut meta_rows = Vec::with_capacity(depth - 1);
    for &(_, id) in &meta.levels {
        partitions.push(node.partition(id)?);
        meta_rows.push(node.rows_at(id, &[], None, None)?);
    }
    Ok((partitions, meta_rows))
}

impl ReducerActor {
    /// A reducer at `checkpoint`, which the caller has pinned for it: the
    /// saved checkpoint of a reducer that has one (also pinned, once more,
    /// as `saved`), or a fresh snapshot to build from.
    pub fn new(
        node: Arc<Node>,
        meta: ReducerMeta,
        checkpoint: u64,
        total: u64,
        lua: LuaEnv,
    ) -> Self {
        let (phase, saved) = match meta.checkpoint {
            Some(saved) => (Phase::Restoring, Some(saved)),
            None => (Phase::Loading { cursor: None, loaded: 0, total }, None),
        };
        // Checked when the reducer was created; one whose function cannot
        // run now (its Lua memory refused) reports it and can be dropped.
        let view = meta.function.levels(&lua).unwrap_or_else(|e| Box::new(Broken(e)));
        ReducerActor {
            node,
            meta,
            lua,
            view,
            checkpoint,
            saved,
            phase,
            dirty: false,
            running: false,
            saving: false,
            adding_level: false,
            stopping: None,
            errors: 0,
            last_error: None,
            last_error_key: None,
        }
    }

    fn schedule(&mut self, ctx: &mut Context<Self>) {
        if !self.running && self.stopping.is_none() {
            self.running = true;
            ctx.notify(Round);
        }
    }

    fn record_error(&mut self, key: &[u8], error: String) {
        self.errors += 1;
        self.last_error = Some(error);
        self.last_error_key = Some(key.to_vec());
    }

    /// Reports reductions that failed (a Lua error in a combine, a
    /// reduction over its size limit): the failure is kept in the tree,
    /// where queries over it report it, and never stored as a meta row too
    /// large to write.
    fn record_failures(&mut self) {
        for (key, e) in self.view.take_failures() {
            self.record_error(&key, format!("reduction failed: {e}"));
        }
    }

    /// Reads rows of the range at the checkpoint, for parts the tree loads.
    fn loader(&self) -> impl FnMut(&[u8], Option<&[u8]>) -> Result<Rows, String> {
        let node = self.node.clone();
        let (range_id, at) = (self.meta.range_id, self.checkpoint);
        move |start, end| node.rows_at(range_id, start, end, Some(at)).map_err(|e| e.to_string())
    }

    /// The range holding level `level` of the tree.
    fn level_range(&self, level: usize) -> u64 {
        if level == 0 {
            self.meta.range_id
        } else {
            self.meta.levels[level - 1].1
        }
    }

    fn finish_stop(&mut self, ctx: &mut Context<Self>) {
        let Some(reply) = self.stopping.take() else { return };
        let result =
            self.node.catalog.remove_reducer(&self.meta.name).map(|_| ()).map_err(NodeError::from);
        self.node.clock.unpin(self.checkpoint);
        if let Some(saved) = self.saved {
            self.node.clock.unpin(saved);
        }
        let entry = self.node.views_write().reducers.remove(&self.meta.name);
        // Its Lua VM (and the memory it reserved) goes before the drop is
        // answered, so a view created right after finds the memory free.
        self.view = Box::new(Broken("dropped".into()));
        if let Some(thread) = entry.and_then(|e| e.thread) {
            // Ends once this actor, its only one, has stopped.
            thread.stop();
        }
        let _ = reply.send(result);
        ctx.stop();
    }

    fn restore(&mut self) -> NodeResult<()> {
        let (partitions, meta_rows) = restore_inputs(&self.node, &self.meta)?;
        let mut load = self.loader();
        self.view = self
            .meta
            .function
            .restore(partitions, meta_rows, &mut load, &self.lua)
            .map_err(internal)?;
        self.restored();
        Ok(())
    }

    fn restored(&self) {
        let (loaded, parts) = self.view.loaded_parts();
        tracing::info!(
            reducer = %self.meta.name,
            levels = self.meta.levels.len() + 1,
            parts,
            loaded,
            checkpoint = self.checkpoint,
            "reduce tree restored from its meta-ranges"
        );
    }

    /// Restores a built-in reducer's tree on a blocking thread, so the
    /// reducers of a node restore in parallel rather than one after another
    /// on their view worker (a Lua reducer restores on its own thread).
    fn restore_off_thread(&mut self, b: Builtin, ctx: &mut Context<Self>) {
        let node = self.node.clone();
        let meta = self.meta.clone();
        let at = self.checkpoint;
        let restore = tokio::task::spawn_blocking(move || {
            let (partitions, meta_rows) = restore_inputs(&node, &meta)?;
            let mut load = |start: &[u8], end: Option<&[u8]>| {
                node.rows_at(meta.range_id, start, end, Some(at)).map_err(|e| e.to_string())
            };
            Levels::restore(b, partitions, meta_rows, &mut load).map_err(internal)
        });
        let restore =
            async move { restore.await.map_err(|e| internal(format!("restoring stopped: {e}")))? };
        ctx.spawn(restore.into_actor(self).map(|result, act, ctx| {
            act.running = false;
            if act.stopping.is_some() {
                return act.finish_stop(ctx);
            }
            // The replay of the journal since the saved checkpoint follows
            // in the same step, before any query sees the tree.
            let result = result.and_then(|levels| {
                act.view = Box::new(levels);
                act.restored();
                act.phase = Phase::Following;
                act.follow()
            });
            act.after_step(result, ctx);
        }));
    }

    /// One round of following the journal, synchronously: every part a
    /// change lands in is loaded (at the checkpoint) before the changes
    /// apply, so a failure leaves the tree at the checkpoint to retry from.
    fn follow(&mut self) -> NodeResult<()> {
        // Only up to where the range is consistent (for a mapper's target,
        // the end of its last complete round): the tree is always the
        // reduction of the range at one cut.
        let upto = self.node.pin_consistent(self.meta.range_id);
        let before = self.checkpoint;
        let result = self.follow_to(upto);
        if result.is_err() || upto <= before {
            self.node.clock.unpin(upto);
        }
        result
    }

    fn follow_to(&mut self, upto: u64) -> NodeResult<()> {
        let changes = if upto > self.checkpoint {
            self.node.changes(self.meta.range_id, self.checkpoint, upto)?
        } else {
            Vec::new()
        };
        let mut load = self.loader();
        for level in 0..self.view.depth() {
            let bounds = self.node.partition(self.level_range(level))?;
            self.view.repartition(level, &bounds, &mut load).map_err(internal)?;
        }
        let mut refused = Vec::new();
        for c in &changes {
            match self.view.apply(&c.key, c.new.as_deref(), &mut load) {
                Ok(None) => {}
                Ok(Some(e)) => refused.push((c.key.clone(), e)),
                Err(e) => return Err(internal(e)),
            }
        }
        for (key, e) in refused {
            self.record_error(&key, e);
        }
        self.view.propagate();
        self.record_failures();
        if upto > self.checkpoint {
            // The pin taken for the round stays, as the checkpoint's.
            self.node.clock.unpin(self.checkpoint);
            self.checkpoint = upto;
        }
        self.node.set_reducer_checkpoint(&self.meta.name, self.checkpoint, self.saved, true);
        Ok(())
    }

    /// Adds a level above the top one when it has several parts.
    fn grow(&mut self, ctx: &mut Context<Self>) {
        if self.adding_level || self.stopping.is_some() || !self.view.needs_level() {
            return;
        }
        self.adding_level = true;
        let level = self.view.depth();
        let name = format!("{}#{level}", self.meta.name);
        let node = self.node.clone();
        let source = self.meta.range_id;
        let create = async move {
            let id = node.create_meta_range(&name, source).await?;
            Ok::<_, NodeError>((name, id))
        };
        ctx.spawn(create.into_actor(self).map(move |result, act, ctx| {
            act.adding_level = false;
            if act.stopping.is_some() {
                return;
            }
            match result {
                Ok((name, id)) if act.view.depth() == level => {
                    act.meta.levels.truncate(level - 1);
                    act.meta.levels.push((name, id));
                    if let Err(e) = act.node.catalog.put_reducer(&act.meta) {
                        act.last_error = Some(format!("saving the reducer failed: {e}"));
                    }
                    act.node.set_reducer_ranges(&act.meta);
                    act.view.add_level();
                    tracing::debug!(reducer = %act.meta.name, levels = level + 1, "reduce tree grew a level");
                    act.save(ctx);
                }
                Ok(_) => {}
                Err(e) => {
                    act.last_error = Some(format!("adding a level failed, retrying: {e}"));
                    ctx.run_later(Duration::from_millis(ROUND_RETRY_MS), |act, ctx| act.grow(ctx));
                }
            }
        }));
    }

    /// Writes the meta rows that changed, then saves the checkpoint they
    /// reflect (so the saved checkpoint never runs ahead of the rows).
    fn save(&mut self, ctx: &mut Context<Self>) {
        if self.saving || self.stopping.is_some() || !matches!(self.phase, Phase::Following) {
            return;
        }
        let target = self.checkpoint;
        if !self.view.has_unsaved() && self.saved == Some(target) {
            return;
        }
        self.saving = true;
        let rows = self.view.take_unsaved();
        let mut by_level: BTreeMap<usize, Vec<WriteOp>> = BTreeMap::new();
        for (level, key, value) in &rows {
            let key = Bytes::from(key.clone());
            let op = match value {
                Some(v) => WriteOp::Put { key, value: Bytes::from(v.clone()) },
                None => WriteOp::Delete { key },
            };
            // A row the chunk would refuse is deleted instead, so no stale
            // one stands for it: after a restart, the part it sums up is
            // reloaded from the range.
            let op = match crate::node::check_op(&op) {
                Ok(()) => op,
                Err(e) => {
                    let key = op.key().to_vec();
                    self.record_error(&key, format!("meta row not saved: {e}"));
                    WriteOp::Delete { key: key.into() }
                }
            };
            by_level.entry(*level).or_default().push(op);
        }
        let writes: Vec<(String, Vec<WriteOp>)> = by_level
            .into_iter()
            .map(|(level, ops)| (self.meta.levels[level - 1].0.clone(), ops))
            .collect();
        let node = self.node.clone();
        let write = async move {
            for (range, ops) in writes {
                node.write_ops(&range, ops).await?;
            }
            Ok::<_, NodeError>(())
        };
        ctx.spawn(write.into_actor(self).map(move |result, act, ctx| {
            act.saving = false;
            if act.stopping.is_some() {
                return;
            }
            let result = result.and_then(|()| {
                let mut meta = act.meta.clone();
                meta.checkpoint = Some(target);
                act.node.catalog.put_reducer(&meta)?;
                act.meta = meta;
                Ok(())
            });
            match result {
                Ok(()) => {
                    act.node.clock.pin(target);
                    if let Some(old) = act.saved.replace(target) {
                        act.node.clock.unpin(old);
                    }
                    act.node.set_reducer_checkpoint(
                        &act.meta.name,
                        act.checkpoint,
                        act.saved,
                        true,
                    );
                    ctx.run_later(Duration::from_millis(SAVE_INTERVAL_MS), |act, ctx| {
                        act.save(ctx)
                    });
                }
                Err(e) => {
                    if act.node.is_shutting_down() {
                        return;
                    }
                    act.view.return_unsaved(rows);
                    if !matches!(e, NodeError::Moved) {
                        act.last_error =
                            Some(format!("saving the reduce tree failed, retrying: {e}"));
                    }
                    ctx.run_later(Duration::from_millis(ROUND_RETRY_MS), |act, ctx| act.save(ctx));
                }
            }
        }));
    }

    /// After a synchronous step: retry on failure, else grow and save.
    fn after_step(&mut self, result: NodeResult<()>, ctx: &mut Context<Self>) {
        match result {
            Ok(()) => {
                self.grow(ctx);
                self.save(ctx);
                if self.dirty {
                    self.schedule(ctx);
                }
            }
            Err(e) => {
                if self.node.is_shutting_down() {
                    return;
                }
                tracing::debug!(reducer = %self.meta.name, error = %e, "round failed; retrying");
                if !matches!(e, NodeError::Moved) {
                    self.last_error = Some(format!("round failed, retrying: {e}"));
                }
                self.dirty = true;
                ctx.run_later(Duration::from_millis(ROUND_RETRY_MS), |act, ctx| act.schedule(ctx));
            }
        }
    }

    fn answer(&mut self, q: &AggregateQuery) -> NodeResult<AggregateAnswer> {
        match self.phase {
            Phase::Following => {}
            Phase::Loading { loaded, total, .. } => {
                return Err(NodeError::client(
                    ErrorCode::ViewLagging,
                    format!(
                        "reducer {} is still loading ({loaded} of {total} rows)",
                        self.meta.name
                    ),
                ))
            }
            Phase::Restoring => {
                return Err(NodeError::client(
                    ErrorCode::ViewLagging,
                    format!("reducer {} is restoring its reduce tree", self.meta.name),
                ))
            }
        }
        let name = self.meta.name.clone();
        let failed = |e: String| {
            NodeError::client(ErrorCode::BadRequest, format!("reducer {name} failed: {e}"))
        };
        let mut load = self.loader();
        let lower = q.start.as_deref().map_or(Bound::Unbounded, Bound::Included);
        let upper = q.end.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
        let Some(level) = q.group_level else {
            let total = self.view.reduce_json((lower, upper), &mut load).map_err(failed)?;
            return Ok(AggregateAnswer::Total(total));
        };
        let limit = match q.limit {
            0 => AGGREGATE_GROUPS_MAX,
            n => n.min(AGGREGATE_GROUPS_MAX),
        };
        let mut groups = Vec::new();
        let mut bytes = 0;
        // A cursor is where the previous page's last group ended; never
        // before `start`.
        let mut from: Option<Vec<u8>> = match (&q.cursor, &q.start) {
            (Some(c), Some(s)) => Some(c.max(s).clone()),
            (Some(c), None) => Some(c.clone()),
            (None, s) => s.clone(),
        };
        loop {
            let lo = from.as_deref().map_or(Bound::Unbounded, Bound::Included);
            let Some(first) = self.view.first_key_from(lo, &mut load).map_err(failed)? else {
                break;
            };
            if q.end.as_deref().is_some_and(|e| first.as_slice() >= e) {
                break;
            }
            if groups.len() >= limit || bytes >= AGGREGATE_PAGE_BYTES_MAX {
                // More groups follow: the next page starts here.
                return Ok(AggregateAnswer::Groups(groups, from));
            }
            // The group: every row whose key starts with the first `level`
            // tuple elements of this one.
            let group_key = match tuple::decode(&first) {
                Ok(elements) => {
                    let n = (level as usize).min(elements.len());
                    tuple::encode(&elements[..n]).map_err(|e| NodeError::Internal(e.to_string()))?
                }
                Err(_) => first.clone(),
            };
            let group_end = monotable_proto::keys::prefix_end(&group_key);
            let glo = match &from {
                Some(f) if f.as_slice() > group_key.as_slice() => Bound::Included(f.as_slice()),
                _ => Bound::Included(group_key.as_slice()),
            };
            let ghi = match (&group_end, &q.end) {
                (Some(ge), Some(e)) => {
                    Bound::Excluded(if ge < e { ge.as_slice() } else { e.as_slice() })
                }
                (Some(ge), None) => Bound::Excluded(ge.as_slice()),
                (None, Some(e)) => Bound::Excluded(e.as_slice()),
                (None, None) => Bound::Unbounded,
            };
            let value = self.view.reduce_json((glo, ghi), &mut load).map_err(failed)?;
            bytes += group_key.len() + value.to_string().len();
            groups.push((group_key, value));
            match group_end {
                Some(ge) => from = Some(ge),
                None => break,
            }
        }
        Ok(AggregateAnswer::Groups(groups, None))
    }

    fn status(&self) -> ViewStatus {
        let (loaded, parts) = self.view.loaded_parts();
        ViewStatus {
            name: self.meta.name.clone(),
            kind: "reducer".into(),
            source: self.meta.range.clone(),
            target: String::new(),
            function: self.meta.function.describe(),
            watermark: self.checkpoint,
            pending_changes: self.node.pending_changes(self.meta.range_id, self.checkpoint),
            rows_written: self.view.rows(),
            errors: self.errors,
            last_error: self.last_error.clone(),
            last_error_key: self.last_error_key.clone().map(Bytes::from),
            backfill: match self.phase {
                Phase::Loading { loaded, total, .. } => Some((loaded, total)),
                // Progress unknown while restoring; never shown as done.
                Phase::Restoring => Some((0, 0)),
                Phase::Following => None,
            },
            tree: Some(TreeStatus {
                levels: self.view.depth() as u32,
                chunks: parts as u64,
                chunks_in_memory: loaded as u64,
                saved: self.saved,
            }),
        }
    }
}

impl Handler<Query> for ReducerActor {
    type Result = ();
    fn handle(&mut self, msg: Query, _: &mut Context<Self>) {
        let _ = msg.1.send(self.answer(&msg.0));
    }
}

crate::view::follower_handlers!(ReducerActor);

impl Handler<Round> for ReducerActor {
    type Result = ();

    fn handle(&mut self, _: Round, ctx: &mut Context<Self>) {
        self.dirty = false;
        if self.stopping.is_some() {
            self.running = false;
            return self.finish_stop(ctx);
        }
        let cursor = match &self.phase {
            Phase::Loading { cursor, .. } => cursor.clone(),
            Phase::Restoring => {
                if let ReducerFunction::Builtin(b) = self.meta.function {
                    return self.restore_off_thread(b, ctx);
                }
                self.running = false;
                // Restored levels may hold rows written after the saved
                // checkpoint: the replay of the journal since it follows in
                // the same step, before any query sees the tree.
                let result = self.restore().and_then(|()| {
                    self.phase = Phase::Following;
                    self.follow()
                });
                return self.after_step(result, ctx);
            }
            Phase::Following => {
                self.running = false;
                let result = self.follow();
                return self.after_step(result, ctx);
            }
        };
        let node = self.node.clone();
        let req = ScanRequest {
            range: self.meta.range.clone(),
            start: cursor.map(Bytes::from),
            limit: LOAD_BATCH_RECORDS,
            snapshot: Some(self.checkpoint),
            ..ScanRequest::default()
        };
        let round = async move { node.scan_range(req).await };
        ctx.spawn(round.into_actor(self).map(|result, act, ctx| {
            act.running = false;
            if act.stopping.is_some() {
                return act.finish_stop(ctx);
            }
            let reply = match result {
                Ok(reply) => reply,
                Err(e) => return act.after_step(Err(e), ctx),
            };
            let mut load = act.loader();
            // Rows go straight into the tree of their chunk's part (every
            // part is loaded while building, so nothing is read here).
            let parts = act
                .node
                .partition(act.meta.range_id)
                .and_then(|bounds| act.view.repartition(0, &bounds, &mut load).map_err(internal));
            if let Err(e) = parts {
                return act.after_step(Err(e), ctx);
            }
            let mut refused = Vec::new();
            for r in &reply.records {
                match act.view.apply(&r.key, Some(&r.value), &mut load) {
                    Ok(None) => {}
                    Ok(Some(e)) => refused.push((r.key.to_vec(), e)),
                    Err(e) => return act.after_step(Err(internal(e)), ctx),
                }
            }
            for (key, e) in refused {
                act.record_error(&key, e);
            }
            act.record_failures();
            let Phase::Loading { loaded, total, .. } = act.phase else { return };
            let loaded = loaded + reply.records.len() as u64;
            act.phase = match reply.resume {
                Some(c) => Phase::Loading { cursor: Some(c.into_vec()), loaded, total },
                None => {
                    tracing::info!(reducer = %act.meta.name, rows = loaded, "reduce tree built");
                    Phase::Following
                }
            };
            act.dirty = true;
            act.schedule(ctx);
        }));
    }
}
