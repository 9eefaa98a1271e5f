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
use monotable_proto::{row, tuple};
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
    /// `start`/`end` are a byte prefix and the key after it (the native
    /// protocol's `prefix`): on a view index range, the prefix is taken
    /// as an emitted-key tuple prefix.
    pub prefix: bool,
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
    /// The checkpoint a save under way writes, pinned until it ends.
    saving_pin: Option<u64>,
    adding_level: bool,
    stopping: Option<oneshot::Sender<NodeResult<()>>>,
    errors: u64,
    last_error: Option<String>,
    last_error_key: Option<Vec<u8>>,
    /// A wait for announced changes to become stable is under way.
    waiting_stable: bool,
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
            saving_pin: None,
            adding_level: false,
            stopping: None,
            errors: 0,
            last_error: None,
            last_error_key: None,
            waiting_stable: false,
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
        // A save still under way ends without this actor.
        if let Some(pin) = self.saving_pin.take() {
            self.node.clock.unpin(pin);
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
        // A Lua call cut short by a drop or a shutdown left an error in the
        // reductions above its row; the flag is sticky, so once it is set
        // nothing of the tree is saved (the next start restores from the
        // last save and replays the journal from there).
        if self.lua.interrupt.is_set() {
            return;
        }
        let target = self.checkpoint;
        if !self.view.has_unsaved() && self.saved == Some(target) {
            return;
        }
        self.saving = true;
        // Pinned now, while it is the checkpoint: by the time the rows are
        // written a round may have moved the checkpoint on and released it.
        self.node.clock.pin(target);
        self.saving_pin = Some(target);
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
            act.saving_pin = None;
            if act.stopping.is_some() {
                act.node.clock.unpin(target);
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
                    act.node.clock.unpin(target);
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

    /// Runs another round once the range's announced but not yet stable
    /// changes are stable (see [`Node::awaits_stable`]).
    fn after_stable(&mut self, ctx: &mut Context<Self>) {
        if self.waiting_stable || !matches!(self.phase, Phase::Following) {
            return;
        }
        let Some(seq) = self.node.awaits_stable(self.meta.range_id, self.checkpoint) else {
            return;
        };
        self.waiting_stable = true;
        let node = self.node.clone();
        let stable = async move { node.clock.wait_stable(seq).await };
        ctx.spawn(stable.into_actor(self).map(|(), act, ctx| {
            act.waiting_stable = false;
            act.dirty = true;
            act.schedule(ctx);
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
                } else {
                    self.after_stable(ctx);
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
        let result = self.answer_following(q);
        if let Err(NodeError::Client { code: ErrorCode::BadRequest, message }) = &result {
            // A query that fails (a Lua combine at its edges, a reduction
            // restored failed) shows in the status once per reason, so
            // `views` never says 0 errors while every query fails.
            let why = format!("query failed: {message}");
            if self.last_error.as_deref() != Some(why.as_str()) {
                let key = q.start.clone().unwrap_or_default();
                self.record_error(&key, why);
            }
        }
        result
    }

    fn answer_following(&mut self, q: &AggregateQuery) -> NodeResult<AggregateAnswer> {
        let name = self.meta.name.clone();
        let failed = |e: String| {
            NodeError::client(ErrorCode::BadRequest, format!("reducer {name} failed: {e}"))
        };
        let index = self.on_view_index();
        let translated;
        let q = if index {
            translated = index_bounds(q)?;
            &translated
        } else {
            q
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
            let (group_key, group_start, group_end) = group_of(&first, level as usize, index)?;
            let glo = match &from {
                Some(f) if f.as_slice() > group_start.as_slice() => Bound::Included(f.as_slice()),
                _ => Bound::Included(group_start.as_slice()),
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

    /// Whether the reducer's range is a view index range (a mapper's
    /// target), whose keys are index rows.
    fn on_view_index(&self) -> bool {
        self.node.router_read().range_by_id(self.meta.range_id).is_some_and(|r| r.meta.view_index)
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
                parts: self.view.parts_per_level(),
            }),
        }
    }
}

/// A group of rows: (its key as answers show it, first row key, end).
type Group = (Vec<u8>, Vec<u8>, Option<Vec<u8>>);

/// The group of the row keyed `first` under `group_level` `level`: the key
/// the answer shows for it, and the span of row keys `[start, end)` it
/// covers (`end` `None`: the end of the range).
///
/// On a view index range the group is the first `level` elements of the
/// emitted key ([`monotable_proto::row::group_key`]), never any of the
/// source key; an emitted key shorter than `level` is a group of its own
/// (CouchDB's rule: `["x"]` and `["x","y"]` are two groups at level 2). On
/// a plain range it is the first `level` top-level tuple elements of the
/// key; a key that is not a tuple is its own group.
fn group_of(first: &[u8], level: usize, index: bool) -> NodeResult<Group> {
    let bad = |e: tuple::TupleError| NodeError::Internal(format!("index row key: {e}"));
    if index {
        let (emitted, _, _) = row::decode_row(first).map_err(bad)?;
        let whole = emitted.len() < level;
        let group: Vec<_> = emitted.into_iter().take(level).collect();
        let key = tuple::encode(&group).map_err(bad)?;
        let start = row::emitted_bound(&group).map_err(bad)?;
        let end = if whole {
            // Exactly this emitted key: the rows that have its nested
            // tuple's terminator right after the elements.
            let mut exact = tuple::encode(&[tuple::Element::Tuple(group)]).map_err(bad)?;
            exact.push(0xFF);
            exact
        } else {
            row::emitted_prefix_end(&group).map_err(bad)?
        };
        return Ok((key, start, Some(end)));
    }
    let own_group = |key: &[u8]| {
        // Only this key: its immediate successor ends the group.
        let mut end = key.to_vec();
        end.push(0x00);
        (key.to_vec(), key.to_vec(), Some(end))
    };
    match tuple::decode(first) {
        Ok(elements) if elements.len() >= level => {
            let key = tuple::encode(&elements[..level])
                .map_err(|e| NodeError::Internal(e.to_string()))?;
            // Whole elements only: `("a",)` does not cover `("a\0b",)`.
            let end = monotable_proto::keys::tuple_prefix_end(&key);
            Ok((key.clone(), key, end))
        }
        Ok(_) | Err(_) => Ok(own_group(first)),
    }
}

/// A query on a view index range with its `start`/`end` (emitted-key
/// tuples, as clients encode keys) turned into row-key bounds
/// ([`monotable_proto::row::emitted_bound`]). An `end` that is a tuple
/// prefix's end (`prefix + 0xFF`, or the byte after a prefix given as
/// `start`) covers every emitted key starting with that prefix
/// ([`monotable_proto::row::emitted_prefix_end`]).
///
/// # Errors
/// `BadRequest` for a bound that is not an encoded tuple.
fn index_bounds(q: &AggregateQuery) -> NodeResult<AggregateQuery> {
    let not_a_tuple = |which: &str| {
        NodeError::client(
            ErrorCode::BadRequest,
            format!(
                "the {which} bound is not a tuple: on a view index range, bounds are emitted keys"
            ),
        )
    };
    let encode = |elements: Vec<tuple::Element>, prefix_end: bool| {
        let bound = if prefix_end {
            row::emitted_prefix_end(&elements)
        } else {
            row::emitted_bound(&elements)
        };
        bound.map_err(|e| NodeError::client(ErrorCode::BadRequest, e.to_string()))
    };
    if q.prefix {
        // [P, prefix_end(P)) would read as the tuple bounds [P, P') for a P
        // ending in a number (prefix [1] would take in 1.5): the prefix is
        // a tuple prefix of emitted keys, whole elements only.
        let Some(p) = &q.start else { return Ok(q.clone()) };
        let elements = tuple::decode(p).map_err(|_| not_a_tuple("prefix"))?;
        return Ok(AggregateQuery {
            start: Some(encode(elements.clone(), false)?),
            end: Some(encode(elements, true)?),
            prefix: false,
            ..q.clone()
        });
    }
    let start = match &q.start {
        None => None,
        Some(s) => Some(encode(tuple::decode(s).map_err(|_| not_a_tuple("start"))?, false)?),
    };
    let end = match &q.end {
        None => None,
        Some(e) => {
            let bound = if let Ok(elements) = tuple::decode(e) {
                encode(elements, false)?
            } else if let Some(Ok(elements)) = e.strip_suffix(&[0xFF]).map(tuple::decode) {
                encode(elements, true)?
            } else if let Some(s) = q
                .start
                .as_ref()
                .filter(|s| monotable_proto::keys::prefix_end(s).as_ref() == Some(e))
            {
                encode(tuple::decode(s).map_err(|_| not_a_tuple("start"))?, true)?
            } else {
                return Err(not_a_tuple("end"));
            };
            Some(bound)
        }
    };
    Ok(AggregateQuery { start, end, ..q.clone() })
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

#[cfg(test)]
mod tests {
    use super::*;
    use monotable_proto::tuple::Element;

    /// Postmortem (the kind of the mapper's interrupted round): a Lua call
    /// cut short by a shutdown leaves an error in every reduction above its
    /// row; saved, it would stand after the restart until that part changed
    /// again. Nothing of the tree is saved once calls are interrupted.
    #[test]
    fn reductions_of_interrupted_calls_are_never_saved() {
        use crate::config::NodeConfig;
        use monotable_proto::{RangeOptions, ReduceFunction};

        let sum = "function reduce(keys, values, rereduce)
                     local s = 0
                     for _, v in ipairs(values) do s = s + v end
                     return s
                   end";
        let one = rmp_serde::to_vec(&1u8).expect("one");
        let puts = |from: u8| -> Vec<WriteOp> {
            (from..from + 10)
                .map(|i| WriteOp::Put { key: vec![b'k', i].into(), value: one.clone().into() })
                .collect()
        };
        let total = |node: Arc<Node>| async move {
            let q = AggregateQuery { limit: 10, ..AggregateQuery::default() };
            node.aggregate("s", q, true, 5_000).await
        };
        let saved = |node: &Node| {
            let all = node.catalog.reducers().expect("catalog");
            all.into_iter().find(|r| r.name == "s").expect("saved").checkpoint
        };
        let dir = tempfile::tempdir().expect("tmp");
        actix::System::new().block_on(async {
            let node = Node::start(NodeConfig::for_tests(dir.path())).expect("node");
            let options = RangeOptions { chunk_size_max_bytes: 1 << 20 };
            node.create_range("r", options).await.expect("range");
            node.write_ops("r", puts(0)).await.expect("written");
            node.create_reducer("s", "r", ReduceFunction::Lua { source: sum.into() })
                .await
                .expect("reducer");
            assert_eq!(total(node.clone()).await.expect("sum"), AggregateAnswer::Total(10.into()));
            tokio::time::sleep(Duration::from_millis(10 * SAVE_INTERVAL_MS)).await;
            let before = saved(&node);
            assert!(before.is_some(), "the tree was saved");
            node.interrupt_lua();
            node.write_ops("r", puts(10)).await.expect("written");
            // Rounds follow the writes meanwhile, and saves are due.
            tokio::time::sleep(Duration::from_millis(20 * SAVE_INTERVAL_MS)).await;
            assert_eq!(saved(&node), before, "a tree of interrupted calls was saved");
            node.shutdown().await;
        });
    }

    fn s(v: &str) -> Element {
        Element::String(v.into())
    }

    /// The groups `answer` forms over sorted row keys, by [`group_of`]
    /// alone: (group key, rows in it).
    fn groups(keys: &mut [Vec<u8>], level: usize, index: bool) -> Vec<(Vec<Element>, usize)> {
        keys.sort();
        let mut out = Vec::new();
        let mut i = 0;
        while i < keys.len() {
            let (key, start, end) = group_of(&keys[i], level, index).expect("a row");
            let n = keys[i..]
                .iter()
                .take_while(|k| **k >= start && end.as_ref().is_none_or(|e| *k < e))
                .count();
            assert!(n >= 1, "the first row is in its group");
            out.push((tuple::decode(&key).expect("a tuple"), n));
            i += n;
        }
        out
    }

    /// Postmortem: on an index range, group_level counted the elements of
    /// the row key, so emitted keys shorter than the level pulled the
    /// source key into the group key, and rows of different records were
    /// never grouped.
    #[test]
    fn index_groups_use_emitted_elements_only() {
        let src = |n: i64| tuple::encode(&[s("rec"), Element::from(n)]).expect("encodes");
        let mut keys = vec![
            row::encode_row(&[s("x")], &src(1), 0).expect("row"),
            row::encode_row(&[s("x")], &src(1), 1).expect("row"),
            row::encode_row(&[s("x"), s("y")], &src(2), 0).expect("row"),
            row::encode_row(&[s("x"), s("y"), s("z")], &src(3), 0).expect("row"),
            row::encode_row(&[s("x"), Element::Null], &src(3), 0).expect("row"),
            row::encode_row(&[], &src(4), 0).expect("row"),
            row::encode_row(&[], &src(5), 0).expect("row"),
        ];
        assert_eq!(
            groups(&mut keys, 2, true),
            vec![
                (vec![], 2),
                (vec![s("x")], 2),
                (vec![s("x"), Element::Null], 1),
                (vec![s("x"), s("y")], 2),
            ]
        );
        assert_eq!(groups(&mut keys, 1, true), vec![(vec![], 2), (vec![s("x")], 5)]);
        assert_eq!(groups(&mut keys, 0, true), vec![(vec![], 7)]);
    }

    #[test]
    fn plain_groups_are_whole_tuple_elements() {
        let s2 = |a: &str, b: Option<&str>| {
            let mut t = vec![s(a)];
            t.extend(b.map(s));
            tuple::encode(&t).expect("encodes")
        };
        let mut keys = vec![
            s2("a", None),
            s2("a", Some("x")),
            s2("a", Some("y")),
            s2("a\u{0}b", None),
            b"raw".to_vec(),
            b"rawer".to_vec(),
        ];
        let got = |keys: &mut Vec<Vec<u8>>, level| -> Vec<(Vec<u8>, usize)> {
            keys.sort();
            let mut out = Vec::new();
            let mut i = 0;
            while i < keys.len() {
                let (key, start, end) = group_of(&keys[i], level, false).expect("a group");
                let n = keys[i..]
                    .iter()
                    .take_while(|k| **k >= start && end.as_ref().is_none_or(|e| *k < e))
                    .count();
                out.push((key, n));
                i += n;
            }
            out
        };
        assert_eq!(
            got(&mut keys, 1),
            vec![
                (s2("a", None), 3),
                (s2("a\u{0}b", None), 1),
                (b"raw".to_vec(), 1),
                (b"rawer".to_vec(), 1),
            ]
        );
        let two = got(&mut keys, 2);
        assert_eq!(two.len(), 6, "{two:?}");
    }

    #[test]
    fn index_bounds_are_emitted_keys() {
        let enc = |t: &[Element]| tuple::encode(t).expect("encodes");
        let q = |start: Option<Vec<u8>>, end: Option<Vec<u8>>| {
            index_bounds(&AggregateQuery { start, end, ..AggregateQuery::default() })
                .expect("bounds")
        };
        let row = |t: &[Element]| row::encode_row(t, b"\xff\xff", 0).expect("row");
        let inside = |b: &AggregateQuery, k: &[u8]| {
            b.start.as_deref().is_none_or(|s| k >= s) && b.end.as_deref().is_none_or(|e| k < e)
        };
        // [1, 2): counts 1 and 1.5's neighbours by tuple order.
        let span = q(Some(enc(&[Element::Int(1)])), Some(enc(&[Element::Int(2)])));
        assert!(inside(&span, &row(&[Element::Int(1)])));
        assert!(inside(&span, &row(&[Element::Int(1), s("more")])));
        assert!(!inside(&span, &row(&[Element::Int(2)])));
        assert!(!inside(&span, &row(&[Element::Int(0)])));
        // A tuple prefix, as the CLI sends it (prefix + 0xFF), and as the
        // native protocol's byte prefix becomes (the byte after it).
        let prefix = enc(&[s("a")]);
        let mut cli_end = prefix.clone();
        cli_end.push(0xFF);
        let byte_end = monotable_proto::keys::prefix_end(&prefix);
        for span in [q(Some(prefix.clone()), Some(cli_end)), q(Some(prefix.clone()), byte_end)] {
            assert!(inside(&span, &row(&[s("a")])));
            assert!(inside(&span, &row(&[s("a"), Element::Null])));
            assert!(!inside(&span, &row(&[s("a\u{0}b")])));
            assert!(!inside(&span, &row(&[s("b")])));
            assert!(!inside(&span, &row(&[])));
        }
        // Postmortem: the native prefix [1] arrived as [enc(1), enc(1)+1),
        // which decodes as the tuple bounds [1, 2) and took in 1.5.
        let one = enc(&[Element::Int(1)]);
        let native = index_bounds(&AggregateQuery {
            end: monotable_proto::keys::prefix_end(&one),
            start: Some(one),
            prefix: true,
            ..AggregateQuery::default()
        })
        .expect("bounds");
        assert!(inside(&native, &row(&[Element::Int(1)])));
        assert!(inside(&native, &row(&[Element::Int(1), s("more")])));
        assert!(!inside(&native, &row(&[Element::Float(1.5)])));
        assert!(index_bounds(&AggregateQuery {
            start: Some(b"\x02unterminated".to_vec()),
            ..AggregateQuery::default()
        })
        .is_err());
    }
}
