//! The reducer actor: keeps a [`crate::view::reduce_tree::ReduceTree`] of every row of its range, so
//! the reduction of any key range, or of every group of rows sharing a tuple
//! prefix, costs O(log n) per group.
//!
//! Like a mapper it has a pinned checkpoint `C` and follows its range's
//! change journal: a round takes the changes in `(C, S]` and, per changed
//! key, removes the old row's leaf and inserts the new one (O(log n) each).
//! The tree lives in memory: at start the reducer loads it from a scan of
//! the range at a pinned snapshot (a batch at a time, serving no query until
//! it is complete), then follows the journal from there.

use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use monotable_proto::tuple;
use monotable_proto::{Bytes, ErrorCode, ScanRequest, ViewStatus};
use serde_json::Value as Json;
use tokio::sync::oneshot;

use crate::catalog::ReducerMeta;
use crate::error::{NodeError, NodeResult};
use crate::node::Node;
use crate::view::mapper::{Dirty, Status, Stop};
use crate::view::reducer_fn::Reductions;

/// Rows loaded per batch while the tree is built.
const LOAD_BATCH_RECORDS: u32 = 5_000;
/// Most groups one grouped query returns.
pub const AGGREGATE_GROUPS_MAX: usize = 10_000;
const ROUND_RETRY_MS: u64 = 50;

/// An aggregate over `[start, end)` (either may be unbounded), grouped by
/// the first `group_level` tuple elements when given.
#[derive(Debug, Clone)]
pub struct AggregateQuery {
    pub start: Option<Vec<u8>>,
    pub end: Option<Vec<u8>>,
    pub group_level: Option<u32>,
}

/// A query's answer: one reduction, or one per group (key, reduction).
#[derive(Debug, Clone, PartialEq)]
pub enum AggregateAnswer {
    Total(Json),
    Groups(Vec<(Vec<u8>, Json)>),
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
    Following,
}

pub struct ReducerActor {
    node: Arc<Node>,
    meta: ReducerMeta,
    tree: Reductions,
    /// The pinned seq the tree reflects.
    checkpoint: u64,
    phase: Phase,
    dirty: bool,
    running: bool,
    stopping: Option<oneshot::Sender<NodeResult<()>>>,
    errors: u64,
    last_error: Option<String>,
    last_error_key: Option<Vec<u8>>,
}

/// The first `Dirty`, sent once the reducer is registered, starts it.
impl Actor for ReducerActor {
    type Context = Context<Self>;
}

impl ReducerActor {
    /// A reducer about to load its tree from the range as of `checkpoint`,
    /// which the caller has pinned for it.
    pub fn new(
        node: Arc<Node>,
        meta: ReducerMeta,
        tree: Reductions,
        checkpoint: u64,
        total: u64,
    ) -> Self {
        ReducerActor {
            node,
            meta,
            tree,
            checkpoint,
            phase: Phase::Loading { cursor: None, loaded: 0, total },
            dirty: false,
            running: false,
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

    /// Sets the row `key` from its value (or removes it).
    fn apply(&mut self, key: &[u8], value: Option<&[u8]>) {
        if let Err(e) = self.tree.set(key, value) {
            self.record_error(key, e);
        }
    }

    fn finish_stop(&mut self, ctx: &mut Context<Self>) {
        let Some(reply) = self.stopping.take() else { return };
        let result =
            self.node.catalog.remove_reducer(&self.meta.name).map(|_| ()).map_err(NodeError::from);
        self.node.clock.unpin(self.checkpoint);
        self.node.views_write().reducers.remove(&self.meta.name);
        let _ = reply.send(result);
        ctx.stop();
    }

    fn answer(&self, q: &AggregateQuery) -> NodeResult<AggregateAnswer> {
        if let Phase::Loading { loaded, total, .. } = self.phase {
            return Err(NodeError::client(
                ErrorCode::ViewLagging,
                format!("reducer {} is still loading ({loaded} of {total} rows)", self.meta.name),
            ));
        }
        let lower = q.start.as_deref().map_or(Bound::Unbounded, Bound::Included);
        let upper = q.end.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
        let failed = |e: String| {
            NodeError::client(
                ErrorCode::BadRequest,
                format!("reducer {} failed: {e}", self.meta.name),
            )
        };
        let Some(level) = q.group_level else {
            return Ok(AggregateAnswer::Total(self.tree.reduce((lower, upper)).map_err(failed)?));
        };
        let mut groups = Vec::new();
        let mut from: Option<Vec<u8>> = q.start.clone();
        while groups.len() < AGGREGATE_GROUPS_MAX {
            let lo = from.as_deref().map_or(Bound::Unbounded, Bound::Included);
            let Some(first) = self.tree.first_key_from(lo) else { break };
            let first = first.as_slice();
            if q.end.as_deref().is_some_and(|e| first >= e) {
                break;
            }
            // The group: every row whose key starts with the first `level`
            // tuple elements of this one.
            let group_key = match tuple::decode(first) {
                Ok(elements) => {
                    let n = (level as usize).min(elements.len());
                    tuple::encode(&elements[..n]).map_err(|e| NodeError::Internal(e.to_string()))?
                }
                Err(_) => first.to_vec(),
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
            let value = self.tree.reduce((glo, ghi)).map_err(failed)?;
            groups.push((group_key, value));
            match group_end {
                Some(ge) => from = Some(ge),
                None => break,
            }
        }
        Ok(AggregateAnswer::Groups(groups))
    }

    fn status(&self) -> ViewStatus {
        ViewStatus {
            name: self.meta.name.clone(),
            kind: "reducer".into(),
            source: self.meta.range.clone(),
            target: String::new(),
            function: self.meta.function.describe(),
            watermark: self.checkpoint,
            pending_changes: self.node.pending_changes(self.meta.range_id, self.checkpoint),
            rows_written: self.tree.len() as u64,
            errors: self.errors,
            last_error: self.last_error.clone(),
            last_error_key: self.last_error_key.clone().map(Bytes::from),
            backfill: match self.phase {
                Phase::Loading { loaded, total, .. } => Some((loaded, total)),
                Phase::Following => None,
            },
        }
    }
}

impl Handler<Dirty> for ReducerActor {
    type Result = ();
    fn handle(&mut self, _: Dirty, ctx: &mut Context<Self>) {
        self.dirty = true;
        self.schedule(ctx);
    }
}

impl Handler<Status> for ReducerActor {
    type Result = ();
    fn handle(&mut self, msg: Status, _: &mut Context<Self>) {
        let _ = msg.0.send(self.status());
    }
}

impl Handler<Stop> for ReducerActor {
    type Result = ();
    fn handle(&mut self, msg: Stop, ctx: &mut Context<Self>) {
        self.stopping = Some(msg.0);
        if !self.running {
            self.finish_stop(ctx);
        }
    }
}

impl Handler<Query> for ReducerActor {
    type Result = ();
    fn handle(&mut self, msg: Query, _: &mut Context<Self>) {
        let _ = msg.1.send(self.answer(&msg.0));
    }
}

/// What a round found, applied to the actor when it completes.
enum Found {
    Loaded { rows: Vec<(Vec<u8>, Vec<u8>)>, resume: Option<Vec<u8>> },
    Changes { changes: Vec<crate::storage::chunk::Change>, upto: u64 },
    Nothing,
}

impl Handler<Round> for ReducerActor {
    type Result = ();

    fn handle(&mut self, _: Round, ctx: &mut Context<Self>) {
        self.dirty = false;
        let node = self.node.clone();
        let range = self.meta.range.clone();
        let range_id = self.meta.range_id;
        let checkpoint = self.checkpoint;
        let cursor = match &self.phase {
            Phase::Loading { cursor, .. } => Some(cursor.clone()),
            Phase::Following => None,
        };
        let round = async move {
            match cursor {
                Some(cursor) => {
                    let reply = node
                        .scan_range(ScanRequest {
                            range,
                            start: cursor.map(Bytes::from),
                            limit: LOAD_BATCH_RECORDS,
                            snapshot: Some(checkpoint),
                            ..ScanRequest::default()
                        })
                        .await?;
                    let rows = reply
                        .records
                        .into_iter()
                        .map(|r| (r.key.into_vec(), r.value.into_vec()))
                        .collect();
                    Ok(Found::Loaded { rows, resume: reply.resume.map(Bytes::into_vec) })
                }
                None => {
                    let upto = node.clock.stable();
                    if upto <= checkpoint {
                        return Ok(Found::Nothing);
                    }
                    let changes = node.changes(range_id, checkpoint, upto)?;
                    Ok::<_, NodeError>(Found::Changes { changes, upto })
                }
            }
        };
        ctx.spawn(round.into_actor(self).map(|result, act, ctx| {
            act.running = false;
            if act.stopping.is_some() {
                return act.finish_stop(ctx);
            }
            match result {
                Ok(Found::Loaded { rows, resume }) => {
                    for (k, v) in &rows {
                        act.apply(k, Some(v));
                    }
                    let Phase::Loading { loaded, total, .. } = act.phase else { return };
                    let loaded = loaded + rows.len() as u64;
                    act.phase = match resume {
                        Some(c) => Phase::Loading { cursor: Some(c), loaded, total },
                        None => {
                            tracing::info!(reducer = %act.meta.name, rows = loaded, "reduce tree loaded");
                            act.node.set_reducer_checkpoint(&act.meta.name, act.checkpoint, true);
                            Phase::Following
                        }
                    };
                    act.dirty = true;
                }
                Ok(Found::Changes { changes, upto }) => {
                    for c in &changes {
                        act.apply(&c.key, c.new.as_deref());
                    }
                    act.node.clock.pin(upto);
                    act.node.clock.unpin(act.checkpoint);
                    act.checkpoint = upto;
                    act.node.set_reducer_checkpoint(&act.meta.name, upto, true);
                }
                Ok(Found::Nothing) => {}
                Err(e) => {
                    if act.node.is_shutting_down() {
                        return;
                    }
                    tracing::debug!(reducer = %act.meta.name, error = %e, "round failed; retrying");
                    if !matches!(e, NodeError::Moved) {
                        act.last_error = Some(format!("round failed, retrying: {e}"));
                    }
                    act.dirty = true;
                    ctx.run_later(Duration::from_millis(ROUND_RETRY_MS), |act, ctx| act.schedule(ctx));
                    return;
                }
            }
            if act.dirty {
                act.schedule(ctx);
            }
        }));
    }
}
