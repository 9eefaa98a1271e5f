//! The node's views: which mapper reads which range, where each one's
//! checkpoint is, and the commands that create, drop and report them.

use std::collections::HashMap;
use std::ops::Bound;
use std::sync::Arc;

use actix::{Actor, Addr, Arbiter};
use monotable_proto::{
    ErrorCode, MapFunction, RangeOptions, ScanRequest, SinkSource, ViewDefinition, ViewStatus,
    WriteOp,
};
use tokio::sync::oneshot;

use crate::bridge::sink::SinkActor;
use crate::catalog::ReducerMeta;
use crate::catalog::{Backfill, MapperMeta};
use crate::chunk_actor::ChunkMsg;
use crate::error::{NodeError, NodeResult};
use crate::node::{validate_name, Node};
use crate::router::Route;
use crate::storage::chunk::{Change, Chunk};
use crate::view::levels::{PartBounds, Rows};
use crate::view::lua::LuaEnv;
use crate::view::map_fn::{FieldMapper, MapperFunction};
use crate::view::mapper::{Dirty, MapperActor, Status, Stop};
use crate::view::reducer::{AggregateAnswer, AggregateQuery, Query, ReducerActor};
use crate::view::reducer_fn::ReducerFunction;
use crate::view::reduction::Builtin;
use crate::view::sandbox::{Interrupt, LuaMemoryPool};

pub struct MapperEntry {
    pub source_id: u64,
    pub target_id: u64,
    /// Stops its running Lua call when it is dropped.
    pub interrupt: Interrupt,
    pub checkpoint: u64,
    /// Still mapping what the source held when it was created: its target
    /// is not complete at any seq yet, whatever its checkpoint says.
    pub backfilling: bool,
    /// The target's first cut after the backfill ended: a reader of the
    /// target below it reads a target the backfill had not completed.
    pub complete_from: u64,
    pub addr: Addr<MapperActor>,
}

pub struct ReducerEntry {
    pub range_id: u64,
    /// The seq the reducer's tree reflects.
    pub checkpoint: u64,
    /// Where its range's journal must start: the saved checkpoint a
    /// restart replays from.
    pub floor: u64,
    /// The tree is loaded and answers queries.
    pub loaded: bool,
    /// The ids of its meta-ranges.
    pub meta_ranges: Vec<u64>,
    /// Stops its running Lua call when it is dropped.
    pub interrupt: Interrupt,
    /// The thread a Lua reducer runs on alone (its calls run inside its
    /// rounds, so a slow function must not hold up other views); stopped
    /// by the actor when it is dropped. `None`: a shared view worker.
    pub thread: Option<Arbiter>,
    pub addr: Addr<ReducerActor>,
}

/// Where a mapper target (a view index range) is consistent: the target's
/// seq at the end of the last complete round of the mappers writing it.
pub struct RangeCut {
    /// Pinned by the node while it is the range's cut.
    pub seq: u64,
    /// Mappers writing the range.
    pub writers: usize,
    /// Held by a mapper from its round's first write to its published cut,
    /// so rounds of two mappers into one range never interleave.
    pub round: Arc<tokio::sync::Mutex<()>>,
}

pub struct SinkEntry {
    pub source_id: u64,
    pub checkpoint: u64,
    pub addr: Addr<SinkActor>,
}

/// Registered views (and sinks, which follow a range the same way), by
/// name.
#[derive(Default)]
pub struct ViewRegistry {
    pub mappers: HashMap<String, MapperEntry>,
    pub reducers: HashMap<String, ReducerEntry>,
    pub sinks: HashMap<String, SinkEntry>,
    /// Cuts of the ranges mappers write, by range id.
    pub cuts: HashMap<u64, RangeCut>,
    /// The memory all Lua VMs of the node reserve from, made from the
    /// node's settings on first use.
    lua_memory: Option<Arc<LuaMemoryPool>>,
    /// The node-wide flag of every view's interrupt: set at shutdown.
    lua_interrupt: Interrupt,
}

impl ViewRegistry {
    /// The oldest checkpoint of the views reading `range_id`: chunks of that
    /// range keep their change journal from there.
    pub fn floor(&self, range_id: u64) -> Option<u64> {
        let mappers =
            self.mappers.values().filter(|m| m.source_id == range_id).map(|m| m.checkpoint);
        let reducers = self.reducers.values().filter(|r| r.range_id == range_id).map(|r| r.floor);
        let sinks = self.sinks.values().filter(|s| s.source_id == range_id).map(|s| s.checkpoint);
        mappers.chain(reducers).chain(sinks).min()
    }

    /// How many mappers a change passes through before it reaches
    /// `range_id`: 0 for a range no mapper writes, else one more than the
    /// deepest source of the mappers writing it (bounded by
    /// [`FRESH_CHAIN_DEPTH_MAX`]; cycles are refused when mappers are
    /// created).
    pub fn depth_of(&self, range_id: u64) -> usize {
        let mut depth = 0;
        let mut frontier = vec![range_id];
        while depth < FRESH_CHAIN_DEPTH_MAX {
            let mut sources: Vec<u64> = self
                .mappers
                .values()
                .filter(|m| frontier.contains(&m.target_id))
                .map(|m| m.source_id)
                .collect();
            sources.sort_unstable();
            sources.dedup();
            if sources.is_empty() {
                break;
            }
            depth += 1;
            frontier = sources;
        }
        depth
    }

    /// Whether a view or sink has this name.
    pub fn contains(&self, name: &str) -> bool {
        self.mappers.contains_key(name)
            || self.reducers.contains_key(name)
            || self.sinks.contains_key(name)
    }
}

/// Deepest chain of mappers a fresh aggregate follows upstream (cycles are
/// refused when mappers are created; this bounds the recursion anyway).
const FRESH_CHAIN_DEPTH_MAX: usize = 64;

/// Tries to read a chunk that is splitting before giving up.
const ROWS_AT_ATTEMPTS_MAX: usize = 1_000;
/// Rows deleted per batch when a dropped mapper's target is cleared.
const CLEAR_BATCH_ROWS: u32 = 1_000;

/// Rounds of watch requests before giving up on a range that keeps splitting.
const REWATCH_ATTEMPTS_MAX: usize = 100;

/// Longest a fresh aggregate sleeps between checks of its views (it is
/// normally woken as soon as one advances).
const FRESH_POLL_MS: u64 = 20;
/// Longest `views` waits for a view busy with a round before reporting it
/// as busy.
const STATUS_WAIT_MS: u64 = 1_000;

/// What the registry knows of a view: enough to report it busy.
struct Known {
    name: String,
    kind: &'static str,
    source_id: u64,
    checkpoint: u64,
    /// Still backfilling or loading its tree.
    catching_up: bool,
}
/// Longest wait a fresh aggregate may ask for (a day); a larger timeout
/// is this. Regression: `TIMEOUT 18446744073709551615` overflowed the
/// deadline and panicked.
pub const FRESH_TIMEOUT_MAX_MS: u64 = 24 * 60 * 60 * 1000;

/// Runs a function's top-level code (a Lua source runs under the limits of
/// any call) on a blocking thread, never on a connection worker.
async fn off_thread<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> NodeResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| NodeError::Internal(format!("loading the function stopped: {e}")))?
        .map_err(NodeError::bad_request)
}

impl Node {
    /// What a new view's Lua VMs are made with: the node's memory pool and
    /// a fresh interrupt under the node's.
    pub(crate) fn lua_env(&self) -> LuaEnv {
        let mut views = self.views_write();
        let max = self.config.lua_memory_max_bytes;
        let memory = views.lua_memory.get_or_insert_with(|| LuaMemoryPool::new(max)).clone();
        LuaEnv { memory, interrupt: views.lua_interrupt.for_view() }
    }

    /// Memory the Lua VMs of views and scripts reserved from the node's
    /// pool (`--lua-memory-max-bytes`).
    pub fn lua_memory_reserved_bytes(&self) -> usize {
        self.views_read().lua_memory.as_ref().map_or(0, |m| m.reserved_bytes())
    }

    /// Ends every running Lua call at its next hook: the node is shutting
    /// down, and no function may hold it up.
    pub fn interrupt_lua(&self) {
        self.views_read().lua_interrupt.stop_node();
    }

    /// The newest seq at which `range_id` is consistent, what every view
    /// reading the range (mappers, reducers) reads it up to: for a plain
    /// range the stable seq (a write batch is one seq on its chunk); for a
    /// mapper's target the cut its mappers published at the end of their
    /// last complete round ([`Node::publish_cut`]), so a reader never sees
    /// half of a round (a record's old row deleted, its new one not yet
    /// written). Never above the stable seq; never decreases.
    pub fn consistent_upto(&self, range_id: u64) -> u64 {
        match self.views_read().cuts.get(&range_id) {
            Some(cut) => cut.seq,
            None => self.clock.stable(),
        }
    }

    /// [`Node::consistent_upto`], pinned for the caller (who unpins it): a
    /// cut that moves on meanwhile stays readable.
    pub fn pin_consistent(&self, range_id: u64) -> u64 {
        let views = self.views_read();
        match views.cuts.get(&range_id) {
            Some(cut) => {
                self.clock.pin(cut.seq);
                cut.seq
            }
            None => self.clock.pin_stable(),
        }
    }

    /// Publishes `seq` as the cut of mapper target `range_id`: the mapper
    /// writing it ended a round, every row of which is at or below `seq`,
    /// and `seq` is stable. The node pins the new cut and releases the old
    /// one; readers of the range are woken. A cut below the current one,
    /// or for a range no mapper writes, is ignored.
    pub fn publish_cut(&self, range_id: u64, seq: u64) {
        {
            let mut views = self.views_write();
            let Some(cut) = views.cuts.get_mut(&range_id) else { return };
            if seq <= cut.seq {
                return;
            }
            self.clock.pin(seq);
            self.clock.unpin(cut.seq);
            cut.seq = seq;
        }
        self.notify_views(range_id);
        self.views_advanced.notify_waiters();
    }

    /// Waits until the changes of `range_id` announced after `after` but
    /// not yet stable are; true if there were any: the round that saw them
    /// spent their `Dirty`, and nothing announces them again, so another
    /// round must follow at once.
    pub async fn wait_announced(&self, range_id: u64, after: u64) -> bool {
        match self.awaits_stable(range_id, after) {
            Some(seq) => {
                self.clock.wait_stable(seq).await;
                true
            }
            None => false,
        }
    }

    /// The seq a view of plain range `range_id` at `checkpoint` must wait
    /// to see stable before its next round finds its changes: some of
    /// them are acknowledged (and announced with `Dirty`) but were not yet
    /// stable when the view chose its round's seq, because a lower seq of
    /// another chunk was still being made durable; that chunk's commit
    /// announces only its own range, so a view that did not see them
    /// would otherwise wait for the next write to its range. Changes not
    /// yet acknowledged do not count: their commit announces them. `None`
    /// when nothing waits so (or the range is a mapper's target, whose
    /// readers are woken by its published cuts).
    pub fn awaits_stable(&self, range_id: u64, checkpoint: u64) -> Option<u64> {
        if self.views_read().cuts.contains_key(&range_id) {
            return None;
        }
        // Read before the journal: every acknowledged change is then at or
        // below it ("not yet stable" is not tested here: the stable seq may
        // have moved since the round chose its seq, and the wait returns at
        // once if it has).
        let settled = self.clock.settled_max();
        (self.changes_between(range_id, checkpoint, settled) > 0).then_some(settled)
    }

    /// Journaled changes of `range_id` in `(after, upto]`.
    pub fn changes_between(&self, range_id: u64, after: u64, upto: u64) -> u64 {
        self.sum_over_chunks(range_id, |c| c.changes_between(after, upto))
    }

    /// `count` summed over the chunks of `range_id`, read again from the
    /// router when a chunk split meanwhile (its halves hold its count).
    /// A chunk that cannot be read (unavailable) counts 0.
    /// Postmortem: a chunk that split between the routes being read and
    /// being counted counted 0, so a view's pending changes read 0 while
    /// its source's journal held some, and a reader waiting for the views
    /// to be idle read a mapper's target half caught up.
    fn sum_over_chunks(&self, range_id: u64, count: impl Fn(&Chunk) -> u64) -> u64 {
        let mut total = 0;
        for _ in 0..REWATCH_ATTEMPTS_MAX {
            total = 0;
            let mut moved = false;
            for route in self.routes_of(range_id).unwrap_or_default() {
                match route.cell.with_chunk(|c| Ok(count(c))) {
                    Ok(n) => total += n,
                    Err(NodeError::Moved) => moved = true,
                    Err(_) => {}
                }
            }
            if !moved {
                break;
            }
            // The split's halves are routed right after it gives up its cell.
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        total
    }

    /// The lock a mapper holds through a round writing into `range_id`
    /// (see [`RangeCut::round`]); `None` when no mapper writes it.
    pub fn round_lock(&self, range_id: u64) -> Option<Arc<tokio::sync::Mutex<()>>> {
        self.views_read().cuts.get(&range_id).map(|c| c.round.clone())
    }

    /// Tells the views reading `range_id` that it changed.
    pub fn notify_views(&self, range_id: u64) {
        let views = self.views_read();
        for m in views.mappers.values().filter(|m| m.source_id == range_id) {
            m.addr.do_send(Dirty);
        }
        for r in views.reducers.values().filter(|r| r.range_id == range_id) {
            r.addr.do_send(Dirty);
        }
        for s in views.sinks.values().filter(|s| s.source_id == range_id) {
            s.addr.do_send(Dirty);
        }
    }

    /// Where the change journals of `range_id` must start, if any view
    /// reads it.
    pub fn view_floor(&self, range_id: u64) -> Option<u64> {
        self.views_read().floor(range_id)
    }

    /// Whether some view reads or writes `range_id`.
    pub fn range_in_views(&self, range_id: u64) -> Option<String> {
        let views = self.views_read();
        let mapper = views
            .mappers
            .iter()
            .find(|(_, m)| m.source_id == range_id || m.target_id == range_id)
            .map(|(name, _)| name.clone());
        mapper
            .or_else(|| {
                views
                    .reducers
                    .iter()
                    .find(|(_, r)| r.range_id == range_id || r.meta_ranges.contains(&range_id))
                    .map(|(n, _)| n.clone())
            })
            .or_else(|| {
                views.sinks.iter().find(|(_, s)| s.source_id == range_id).map(|(n, _)| n.clone())
            })
    }

    /// Records where a reducer's tree is (`checkpoint`) and what it has
    /// saved (`saved`, the floor of its range's journal).
    pub fn set_reducer_checkpoint(
        &self,
        name: &str,
        checkpoint: u64,
        saved: Option<u64>,
        loaded: bool,
    ) {
        if let Some(r) = self.views_write().reducers.get_mut(name) {
            r.checkpoint = checkpoint;
            r.floor = saved.unwrap_or(checkpoint).min(checkpoint);
            r.loaded = loaded;
        }
        self.views_advanced.notify_waiters();
    }

    pub fn set_reducer_ranges(&self, meta: &ReducerMeta) {
        if let Some(r) = self.views_write().reducers.get_mut(&meta.name) {
            r.meta_ranges = meta.levels.iter().map(|(_, id)| *id).collect();
        }
    }

    /// A mapper into `range_id` stopped: the range is a plain one again once
    /// none is left.
    pub fn release_cut(&self, range_id: u64) {
        let mut views = self.views_write();
        if let Some(cut) = views.cuts.get_mut(&range_id) {
            cut.writers -= 1;
            if cut.writers == 0 {
                self.clock.unpin(cut.seq);
                views.cuts.remove(&range_id);
            }
        }
    }

    /// Registers a reducer and starts its actor. A reducer with a saved
    /// checkpoint (pinned by the node at start) restores its tree from its
    /// meta-ranges and goes on from there; a new one pins the current state
    /// and builds its tree from it, once it gets its first `Dirty`.
    pub fn register_reducer(self: &Arc<Self>, meta: ReducerMeta) -> NodeResult<Addr<ReducerActor>> {
        let env = self.lua_env();
        let interrupt = env.interrupt.clone();
        let total = self.range_records(meta.range_id);
        let checkpoint = match meta.checkpoint {
            Some(saved) => {
                self.clock.pin(saved);
                saved
            }
            None => self.pin_consistent(meta.range_id),
        };
        let (name, range_id) = (meta.name.clone(), meta.range_id);
        let meta_ranges = meta.levels.iter().map(|(_, id)| *id).collect();
        let node = self.clone();
        let thread = matches!(meta.function, ReducerFunction::Lua(_)).then(Arbiter::new);
        let worker = thread.as_ref().map_or_else(|| self.next_view_worker(), Arbiter::handle);
        let addr = ReducerActor::start_in_arbiter(&worker, move |_| {
            ReducerActor::new(node, meta, checkpoint, total, env)
        });
        self.views_write().reducers.insert(
            name,
            ReducerEntry {
                range_id,
                checkpoint,
                floor: checkpoint,
                loaded: false,
                meta_ranges,
                interrupt,
                thread,
                addr: addr.clone(),
            },
        );
        Ok(addr)
    }

    /// The parts of a range for a reduce tree: its chunks' bounds.
    pub fn partition(&self, range_id: u64) -> NodeResult<Vec<PartBounds>> {
        let routes = self
            .routes_of(range_id)
            .ok_or_else(|| NodeError::Internal(format!("range {range_id} of a view is gone")))?;
        Ok(routes.iter().map(|r| (r.start.clone(), r.end.clone())).collect())
    }

    /// Every row of a range in `[start, end)`, at a snapshot or the latest,
    /// read synchronously from the chunks (views load parts of their trees
    /// with it).
    pub fn rows_at(
        &self,
        range_id: u64,
        start: &[u8],
        end: Option<&[u8]>,
        snapshot: Option<u64>,
    ) -> NodeResult<Rows> {
        let at = self.read_at(snapshot)?;
        let mut out = Vec::new();
        let mut pos = start.to_vec();
        let mut attempt = 0;
        loop {
            let route = self
                .router_read()
                .range_by_id(range_id)
                .and_then(|r| r.chunk_for(&pos).cloned())
                .ok_or_else(|| NodeError::Internal(format!("range {range_id} has no chunk")))?;
            let bounds = (Bound::Included(&pos[..]), end.map_or(Bound::Unbounded, Bound::Excluded));
            match route
                .cell
                .with_chunk(|c| Ok(c.scan(bounds, at, false, usize::MAX, usize::MAX)?))
            {
                Ok(scan) => {
                    out.extend(
                        scan.records.into_iter().map(|r| (r.key.into_vec(), r.value.into_vec())),
                    );
                }
                // Splitting: the router has the halves in a moment.
                Err(NodeError::Moved) if attempt < ROWS_AT_ATTEMPTS_MAX => {
                    attempt += 1;
                    std::thread::sleep(std::time::Duration::from_millis(1));
                    continue;
                }
                Err(e) => return Err(e),
            }
            match &route.end {
                Some(chunk_end) if end.is_none_or(|e| chunk_end.as_slice() < e) => {
                    pos = chunk_end.clone();
                }
                _ => return Ok(out),
            }
        }
    }

    /// Creates (afresh) a meta-range of a reducer over `source_id`, with the
    /// source's options; returns its id.
    pub(crate) async fn create_meta_range(
        self: &Arc<Self>,
        name: &str,
        source_id: u64,
    ) -> NodeResult<u64> {
        let options = self
            .router_read()
            .range_by_id(source_id)
            .map(|r| r.meta.options)
            .ok_or_else(|| NodeError::bad_request("the range of a reducer was dropped"))?;
        // Left by a crash between creating it and recording it: start over.
        if self.router_read().range(name).is_some() {
            self.drop_range_unchecked(name).await?;
        }
        self.create_range_unchecked(name, options)
    }

    /// The chunks of a range, as the router has them now; `None` when the
    /// range is gone.
    fn routes_of(&self, range_id: u64) -> Option<Vec<Route>> {
        self.router_read().range_by_id(range_id).map(|r| r.chunks.values().cloned().collect())
    }

    /// Live records of a range, from its chunks.
    pub(crate) fn range_records(&self, range_id: u64) -> u64 {
        self.sum_over_chunks(range_id, |c| c.info().records)
    }

    pub(crate) async fn create_reducer(
        self: &Arc<Self>,
        name: &str,
        range: &str,
        function: monotable_proto::ReduceFunction,
    ) -> NodeResult<()> {
        validate_name("view", name)?;
        {
            let views = self.views_read();
            if views.contains(name) {
                return Err(NodeError::client(
                    ErrorCode::RangeExists,
                    format!("view {name:?} already exists"),
                ));
            }
        }
        let function = self.checked_reduce_function(function).await?;
        let range_id = self.describe_range(range).await?.id;
        self.start_new_reducer(name, range, range_id, function).await?;
        tracing::info!(reducer = name, range, "created reducer");
        Ok(())
    }

    pub(crate) async fn drop_reducer(&self, name: &str) -> NodeResult<()> {
        let found = self.views_read().reducers.get(name).map(|r| {
            r.interrupt.stop_view();
            (r.addr.clone().recipient(), r.range_id)
        });
        let levels = self.catalog.reducers()?.into_iter().find(|r| r.name == name);
        self.stop_view(name, found).await?;
        for (range, _) in levels.map(|r| r.levels).unwrap_or_default() {
            self.drop_range_unchecked(&range).await?;
        }
        Ok(())
    }

    /// Waits until `range_id` holds everything the writes committed at or
    /// below `seq` lead to, through the mappers writing into it (and theirs,
    /// recursively, at most [`FRESH_CHAIN_DEPTH_MAX`] deep). Returns the seq
    /// up to which the range is then complete: for a mapper's target, the
    /// cut its mappers published once they reached the writes (their own
    /// writes land above `seq`), so readers of this range wait for that seq,
    /// not for `seq`. Waits for nothing but the views upstream of the range.
    async fn wait_fresh(
        &self,
        range_id: u64,
        seq: u64,
        deadline: tokio::time::Instant,
        depth: usize,
    ) -> NodeResult<u64> {
        if depth > FRESH_CHAIN_DEPTH_MAX {
            return Err(NodeError::bad_request(format!(
                "the chain of mappers into this range is deeper than {FRESH_CHAIN_DEPTH_MAX}"
            )));
        }
        let upstream: Vec<(String, u64)> = self
            .views_read()
            .mappers
            .iter()
            .filter(|(_, m)| m.target_id == range_id)
            .map(|(n, m)| (n.clone(), m.source_id))
            .collect();
        if upstream.is_empty() {
            return Ok(seq);
        }
        for (name, source_id) in upstream {
            let source_complete =
                Box::pin(self.wait_fresh(source_id, seq, deadline, depth + 1)).await?;
            self.wait_view(&name, source_complete, deadline).await?;
        }
        // Published by the rounds that reached the writes, before their
        // mappers' checkpoints moved.
        Ok(self.consistent_upto(range_id))
    }

    /// Why a view reading `range_id` at `checkpoint` reflects an incomplete
    /// range: a mapper writing it (or one upstream of that, recursively) is
    /// still backfilling, or the view has not yet reached the cut that
    /// completed a backfill. Names that mapper; `None` when the view's
    /// input is complete.
    fn backfill_upstream(&self, range_id: u64, checkpoint: u64) -> Option<String> {
        let views = self.views_read();
        let mut frontier = vec![(range_id, checkpoint, 0)];
        while let Some((range, at, depth)) = frontier.pop() {
            if depth > FRESH_CHAIN_DEPTH_MAX {
                continue;
            }
            for (name, m) in views.mappers.iter().filter(|(_, m)| m.target_id == range) {
                if m.backfilling || at < m.complete_from {
                    return Some(name.clone());
                }
                frontier.push((m.source_id, m.checkpoint, depth + 1));
            }
        }
        None
    }

    /// Pokes a view and waits until its checkpoint reaches `seq`.
    async fn wait_view(
        &self,
        name: &str,
        seq: u64,
        deadline: tokio::time::Instant,
    ) -> NodeResult<()> {
        loop {
            // Registered before the check, so an advance in between is seen.
            let advanced = self.views_advanced.notified();
            let (ready, checkpoint, input) = {
                let views = self.views_read();
                if let Some(m) = views.mappers.get(name) {
                    m.addr.do_send(Dirty);
                    (!m.backfilling, m.checkpoint, m.source_id)
                } else if let Some(r) = views.reducers.get(name) {
                    r.addr.do_send(Dirty);
                    (r.loaded, r.checkpoint, r.range_id)
                } else {
                    return Err(NodeError::bad_request(format!("view {name:?} was dropped")));
                }
            };
            // A view whose input has not changed since its checkpoint is
            // as fresh as one that went on to `seq`: it need not run a
            // round to answer (so a timeout of 0 finds an idle view fresh).
            let reached = ready
                && (checkpoint >= seq
                    || (self.consistent_upto(input) >= seq
                        && self.unchanged_since(input, checkpoint)));
            if reached {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(NodeError::client(
                    ErrorCode::ViewLagging,
                    format!("view {name:?} has not reached seq {seq} in time; retry, or ask without --fresh"),
                ));
            }
            // Woken by a view advancing; the timeout bounds the wait for a
            // view whose round found nothing to do.
            let poll = std::time::Duration::from_millis(FRESH_POLL_MS);
            let _ = tokio::time::timeout(poll, advanced).await;
        }
    }

    pub(crate) async fn aggregate(
        &self,
        name: &str,
        query: AggregateQuery,
        fresh: bool,
        timeout_ms: u64,
    ) -> NodeResult<AggregateAnswer> {
        let (addr, range_id, checkpoint) = match self.views_read().reducers.get(name) {
            Some(r) => (r.addr.clone(), r.range_id, r.checkpoint),
            None => {
                return Err(NodeError::client(
                    ErrorCode::RangeNotFound,
                    format!("reducer {name:?} does not exist"),
                ))
            }
        };
        if fresh {
            // Not the stable seq: a write acknowledged before this query can
            // be above it while an older batch on another chunk is in flight.
            let seq = self.clock.settled_max();
            // A client's number: bounded, so adding it to now cannot
            // overflow. 0 does not wait: the view answers if it is fresh
            // already.
            let timeout = timeout_ms.min(FRESH_TIMEOUT_MAX_MS);
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(timeout);
            let complete = self.wait_fresh(range_id, seq, deadline, 0).await?;
            self.wait_view(name, complete, deadline).await?;
        } else if let Some(mapper) = self.backfill_upstream(range_id, checkpoint) {
            return Err(NodeError::client(
                ErrorCode::ViewLagging,
                format!(
                    "reducer {name:?} is catching up with the backfill of mapper {mapper:?}; retry, \
                     or ask with --fresh to wait for it"
                ),
            ));
        }
        let (reply, rx) = oneshot::channel();
        addr.do_send(Query(query, reply));
        rx.await.map_err(|_| NodeError::Moved)?
    }

    /// Records a mapper's new checkpoint, whether it is still backfilling,
    /// and its target's cut.
    pub fn set_view_checkpoint(&self, name: &str, checkpoint: u64, backfilling: bool, cut: u64) {
        if let Some(m) = self.views_write().mappers.get_mut(name) {
            m.checkpoint = checkpoint;
            if m.backfilling && !backfilling {
                m.complete_from = cut;
            }
            m.backfilling = backfilling;
        }
        self.views_advanced.notify_waiters();
    }

    /// Changes to `range_id` in `(after, upto]`, from every chunk.
    pub fn changes(&self, range_id: u64, after: u64, upto: u64) -> NodeResult<Vec<Change>> {
        let routes = self
            .routes_of(range_id)
            .ok_or_else(|| NodeError::bad_request("the source range of a view was dropped"))?;
        let mut out = Vec::new();
        for route in routes {
            match route.cell.with_chunk(|c| Ok(c.changes(after, upto)?))? {
                Some(changes) => out.extend(changes),
                None => {
                    // A chunk that keeps no journal (one that a watch request
                    // missed while it split): ask it to, and retry the round.
                    let (reply, _) = oneshot::channel();
                    route.addr.do_send(ChunkMsg::Watch { after: self.view_floor(range_id), reply });
                    return Err(NodeError::Moved);
                }
            }
        }
        Ok(out)
    }

    /// Whether no chunk of `range_id` has journaled a change above `after`;
    /// false when a chunk cannot tell (it moved, or keeps no journal).
    pub(crate) fn unchanged_since(&self, range_id: u64, after: u64) -> bool {
        let Some(routes) = self.routes_of(range_id) else { return false };
        routes.iter().all(|r| {
            let unchanged =
                r.cell.with_chunk(|c| Ok(c.journal_watched() && c.pending_changes(after) == 0));
            matches!(unchanged, Ok(true))
        })
    }

    /// Changes to `range_id` above `after` that views have yet to see.
    pub fn pending_changes(&self, range_id: u64, after: u64) -> u64 {
        self.sum_over_chunks(range_id, |c| c.pending_changes(after))
    }

    /// Starts the actor of a registered mapper, whose checkpoint and cut
    /// the caller has pinned for it. Its function is loaded on the view
    /// worker; one that cannot be loaded leaves a mapper that says why and
    /// can be dropped.
    pub fn start_mapper(self: &Arc<Self>, meta: MapperMeta) -> NodeResult<()> {
        {
            let mut views = self.views_write();
            match views.cuts.entry(meta.target_id) {
                std::collections::hash_map::Entry::Occupied(mut e) => {
                    // Another mapper writes the range: its cut stands.
                    e.get_mut().writers += 1;
                }
                std::collections::hash_map::Entry::Vacant(e) => {
                    // The range's own pin, besides the mapper's.
                    self.clock.pin(meta.cut);
                    e.insert(RangeCut {
                        seq: meta.cut,
                        writers: 1,
                        round: Arc::new(tokio::sync::Mutex::new(())),
                    });
                }
            }
        }
        let env = self.lua_env();
        let interrupt = env.interrupt.clone();
        let (entry_checkpoint, cut) = (meta.checkpoint, meta.cut);
        let backfilling = meta.backfill.is_some();
        let (name, source_id, target_id) = (meta.name.clone(), meta.source_id, meta.target_id);
        let node = self.clone();
        let actor_interrupt = interrupt.clone();
        let addr = MapperActor::start_in_arbiter(&self.next_view_worker(), move |_| {
            let mapper = meta.function.compile(&env);
            if let Err(e) = &mapper {
                tracing::error!(mapper = %meta.name, error = %e, "mapper's function cannot run");
            }
            MapperActor::new(node, meta, mapper, actor_interrupt)
        });
        self.views_write().mappers.insert(
            name,
            MapperEntry {
                source_id,
                target_id,
                interrupt,
                checkpoint: entry_checkpoint,
                backfilling,
                // Restarted after its backfill: complete at its saved cut.
                complete_from: cut,
                addr: addr.clone(),
            },
        );
        addr.do_send(Dirty);
        Ok(())
    }

    /// Makes every chunk of `range_id` keep its change journal from the
    /// views' floor (or stop, when no view reads it any more).
    pub(crate) async fn rewatch(&self, range_id: u64) -> NodeResult<()> {
        // A chunk that splits meanwhile drops the request; its halves were
        // made without the new journal, so go round again until every chunk
        // of the range has answered.
        for _ in 0..REWATCH_ATTEMPTS_MAX {
            let floor = self.view_floor(range_id);
            let routes = self.routes_of(range_id).unwrap_or_default();
            let mut all = true;
            for addr in routes.iter().map(|r| &r.addr) {
                let (reply, rx) = oneshot::channel();
                addr.do_send(ChunkMsg::Watch { after: floor, reply });
                match rx.await {
                    Ok(Ok(())) => {}
                    Err(_) => all = false,
                    Ok(Err(e)) => return Err(e),
                }
            }
            if all {
                return Ok(());
            }
        }
        Err(NodeError::client(ErrorCode::Busy, "the range kept splitting; retry"))
    }

    /// A mapper's function from its request; refused (`BadRequest`) unless
    /// it compiles, so it fails now, not on the first record.
    pub(crate) async fn checked_map_function(
        &self,
        function: MapFunction,
    ) -> NodeResult<MapperFunction> {
        let f = match function {
            MapFunction::Field { key_path, value_path } => MapperFunction::Field(
                FieldMapper::new(&key_path, value_path.as_deref())
                    .map_err(|e| NodeError::bad_request(e.to_string()))?,
            ),
            MapFunction::Lua { source } => MapperFunction::Lua(source),
        };
        let (check, env) = (f.clone(), self.lua_env());
        off_thread(move || check.compile(&env).map(|_| ())).await?;
        Ok(f)
    }

    /// A reducer's function from its request; refused (`BadRequest`) for
    /// an unknown built-in or Lua that does not compile.
    pub(crate) async fn checked_reduce_function(
        &self,
        function: monotable_proto::ReduceFunction,
    ) -> NodeResult<ReducerFunction> {
        let function = match function {
            monotable_proto::ReduceFunction::Builtin(b) => {
                ReducerFunction::Builtin(Builtin::parse(&b).ok_or_else(|| {
                    NodeError::bad_request(format!(
                        "unknown built-in reducer {b:?}: use count, sum, min, max, stats or count_distinct"
                    ))
                })?)
            }
            monotable_proto::ReduceFunction::Lua { source } => ReducerFunction::Lua(source),
        };
        let (check, env) = (function.clone(), self.lua_env());
        off_thread(move || check.check(&env)).await?;
        Ok(function)
    }

    pub(crate) async fn create_mapper(
        self: &Arc<Self>,
        name: &str,
        source: &str,
        target: &str,
        function: MapFunction,
    ) -> NodeResult<()> {
        validate_name("view", name)?;
        // Postmortem: two creates at once both passed the checks below
        // before either was registered: two mappers shared a target (a drop
        // of one cleared the other's rows) or made a cycle.
        let _changing = self.changing_mappers.lock().await;
        if self.views_read().contains(name) {
            return Err(NodeError::client(
                ErrorCode::RangeExists,
                format!("view {name:?} already exists"),
            ));
        }
        if source == target {
            return Err(NodeError::bad_request(format!(
                "a mapper cannot write into its own source range {source:?}"
            )));
        }
        let f = self.checked_map_function(function).await?;
        self.check_mapper_target(source, target)?;
        let source_info = self.describe_range(source).await?;
        if self.router_read().range(target).is_none() {
            self.create_range(target, RangeOptions { ..source_info.options }).await?;
        } else {
            self.check_target_empty(target).await?;
        }
        let target_id = self.describe_range(target).await?.id;
        self.set_view_index(target, true)?;
        let total = source_info.chunks.iter().map(|c| c.records).sum();
        let ranges = (source.to_owned(), source_info.id, target.to_owned(), target_id);
        self.start_new_mapper(name, ranges, f, total, false).await?;
        tracing::info!(mapper = name, source, target, "created mapper");
        Ok(())
    }

    /// Records and starts a new reducer of `range` (id `range_id`), which
    /// builds its tree from the range first.
    pub(crate) async fn start_new_reducer(
        self: &Arc<Self>,
        name: &str,
        range: &str,
        range_id: u64,
        function: ReducerFunction,
    ) -> NodeResult<()> {
        let meta = ReducerMeta {
            name: name.to_owned(),
            range: range.to_owned(),
            range_id,
            function,
            checkpoint: None,
            levels: Vec::new(),
        };
        self.catalog.put_reducer(&meta)?;
        let addr = self.register_reducer(meta)?;
        self.rewatch(range_id).await?;
        addr.do_send(Dirty);
        Ok(())
    }

    /// Records and starts a new mapper from `source` (name, id) into
    /// `target` (name, id) that backfills first (`total` source records
    /// to map; `prune`: also delete target rows the source does not
    /// produce), from a checkpoint pinned now.
    pub(crate) async fn start_new_mapper(
        self: &Arc<Self>,
        name: &str,
        (source, source_id, target, target_id): (String, u64, String, u64),
        function: MapperFunction,
        total: u64,
        prune: bool,
    ) -> NodeResult<()> {
        let checkpoint = self.pin_consistent(source_id);
        let cut = self.pin_consistent(target_id);
        let meta = MapperMeta {
            name: name.to_owned(),
            source,
            source_id,
            target,
            target_id,
            function,
            checkpoint,
            backfill: Some(Backfill { cursor: None, done: 0, total, prune }),
            round_upto: None,
            cut,
            tally: Default::default(),
        };
        if let Err(e) = self.catalog.put_mapper(&meta) {
            self.clock.unpin(checkpoint);
            self.clock.unpin(cut);
            return Err(e.into());
        }
        self.start_mapper(meta)?;
        self.rewatch(source_id).await?;
        Ok(())
    }

    /// Refuses a target a mapper must not write: one its source depends on
    /// through mappers (the rows would feed themselves without end), a
    /// Redis database range (its rows are Redis keys in Monotable's
    /// encoding), or a reducer's meta-range.
    fn check_mapper_target(&self, source: &str, target: &str) -> NodeResult<()> {
        if crate::resp::keyspace::database_of_range(target).is_some() {
            return Err(NodeError::bad_request(format!(
                "a mapper cannot write into {target:?}: it holds a Redis database, whose rows \
                 only Redis commands write"
            )));
        }
        let catalog_reducers = self.catalog.reducers()?;
        if let Some(r) = catalog_reducers.iter().find(|r| r.levels.iter().any(|(n, _)| n == target))
        {
            return Err(NodeError::bad_request(format!(
                "a mapper cannot write into {target:?}: it is a meta-range of reducer {:?}",
                r.name
            )));
        }
        // Ranges the source is written from, through mappers: a target
        // among them closes a cycle.
        let edges: Vec<(String, String)> =
            self.catalog.mappers()?.into_iter().map(|m| (m.source, m.target)).collect();
        let mut seen = std::collections::HashSet::new();
        let mut frontier = vec![source.to_owned()];
        while let Some(range) = frontier.pop() {
            if range == target {
                return Err(NodeError::bad_request(format!(
                    "a mapper from {source:?} into {target:?} would make a cycle: {target:?} \
                     already feeds {source:?} through mappers, so the rows would feed themselves \
                     without end"
                )));
            }
            for (from, into) in &edges {
                if into == &range && seen.insert(from.clone()) {
                    frontier.push(from.clone());
                }
            }
        }
        Ok(())
    }

    /// Refuses a target that holds rows (written there by other means) or
    /// that another mapper writes: a mapper's target holds its rows and
    /// nothing else, so they are exactly its function applied to the
    /// source, and dropping it can remove them.
    async fn check_target_empty(&self, target: &str) -> NodeResult<()> {
        if let Some(m) = self.catalog.mappers()?.into_iter().find(|m| m.target == target) {
            return Err(NodeError::bad_request(format!(
                "range {target:?} is the target of mapper {:?}: a mapper needs a target of its \
                 own; choose another target range",
                m.name
            )));
        }
        // Still marked as an index with no mapper writing it: a drop that
        // stopped (the node died) before it had cleared the rows. They are
        // the dropped mapper's, so the drop is finished now.
        let leftover = self.router_read().range(target).is_some_and(|r| r.meta.view_index);
        if leftover {
            self.clear_rows(target).await?;
        }
        let rows = self
            .scan_range(ScanRequest { range: target.to_owned(), limit: 1, ..Default::default() })
            .await?;
        if !rows.records.is_empty() {
            return Err(NodeError::bad_request(format!(
                "range {target:?} already holds rows: a mapper's target must be empty (its \
                 rows are exactly what the mapper writes); choose another target, or drop the \
                 range first"
            )));
        }
        Ok(())
    }

    /// Marks (or unmarks) a range as a view index range, in the catalog and
    /// the router.
    pub(crate) fn set_view_index(&self, range: &str, view_index: bool) -> NodeResult<()> {
        self.catalog.set_view_index(range, view_index)?;
        if let Some(r) = self.router_write().ranges_mut(range) {
            r.meta.view_index = view_index;
        }
        Ok(())
    }

    /// Drops a mapper and then every row of its target (the target range
    /// itself stays, with any reducer on it): a mapper re-created later,
    /// under any name, starts from an empty target.
    pub(crate) async fn drop_mapper(&self, name: &str) -> NodeResult<()> {
        let _changing = self.changing_mappers.lock().await;
        let found = self.views_read().mappers.get(name).map(|m| {
            m.interrupt.stop_view();
            (m.addr.clone().recipient(), m.source_id)
        });
        let target = self.catalog.mappers()?.into_iter().find(|m| m.name == name).map(|m| m.target);
        self.stop_view(name, found).await?;
        if let Some(target) = target {
            self.clear_rows(&target).await?;
            self.set_view_index(&target, false)?;
        }
        Ok(())
    }

    /// Deletes every row of a range, a batch at a time.
    async fn clear_rows(&self, range: &str) -> NodeResult<()> {
        loop {
            let scan = self
                .scan_range(ScanRequest {
                    range: range.to_owned(),
                    limit: CLEAR_BATCH_ROWS,
                    ..Default::default()
                })
                .await;
            let records = match scan {
                Ok(reply) => reply.records,
                // The target was dropped meanwhile: nothing left to clear.
                Err(NodeError::Client { code: ErrorCode::RangeNotFound, .. }) => return Ok(()),
                Err(e) => return Err(e),
            };
            if records.is_empty() {
                return Ok(());
            }
            let ops = records.into_iter().map(|r| WriteOp::Delete { key: r.key }).collect();
            self.write_ops(range, ops).await?;
        }
    }

    /// Stops a view for good. The actor removes itself (catalog entry, pin,
    /// registration) once no round is running, so no round outlives the drop.
    pub(crate) async fn stop_view(
        &self,
        name: &str,
        found: Option<(actix::Recipient<Stop>, u64)>,
    ) -> NodeResult<()> {
        let Some((stop, range_id)) = found else {
            return Err(NodeError::client(
                ErrorCode::RangeNotFound,
                format!("view {name:?} does not exist"),
            ));
        };
        let (reply, rx) = oneshot::channel();
        stop.do_send(Stop(reply));
        rx.await
            .map_err(|_| NodeError::Internal(format!("view {name} stopped without answering")))??;
        self.rewatch(range_id).await?;
        tracing::info!(view = name, "dropped view");
        Ok(())
    }

    /// Waits for the answers of views asked for their status together, up
    /// to [`STATUS_WAIT_MS`]: a view answers between rounds, and one whose
    /// round runs long (a slow function) is reported as busy rather than
    /// holding up the others.
    async fn gather_statuses(
        &self,
        asked: Vec<(Known, oneshot::Receiver<ViewStatus>)>,
        out: &mut Vec<ViewStatus>,
    ) {
        let deadline =
            tokio::time::Instant::now() + std::time::Duration::from_millis(STATUS_WAIT_MS);
        for (k, rx) in asked {
            match tokio::time::timeout_at(deadline, rx).await {
                Ok(Ok(status)) => out.push(status),
                Ok(Err(_)) => {}
                Err(_) => out.push(ViewStatus {
                    name: k.name,
                    kind: k.kind.into(),
                    source: String::new(),
                    target: String::new(),
                    function: String::new(),
                    watermark: k.checkpoint,
                    pending_changes: self.pending_changes(k.source_id, k.checkpoint),
                    rows_written: 0,
                    errors: 0,
                    last_error: Some(format!(
                        "busy: its current round has run for over {STATUS_WAIT_MS} ms"
                    )),
                    last_error_key: None,
                    // Progress unknown while busy; never shown as done.
                    backfill: k.catching_up.then_some((0, 0)),
                    tree: None,
                }),
            }
        }
    }

    /// What this node's views and sinks were created from
    /// ([`Command::ViewDefinitions`]), sorted by name.
    ///
    /// [`Command::ViewDefinitions`]: monotable_proto::Command::ViewDefinitions
    pub(crate) fn view_definitions(&self) -> NodeResult<Vec<ViewDefinition>> {
        let mappers = self.catalog.mappers()?.into_iter().map(|m| ViewDefinition::Mapper {
            function: m.function.to_proto(),
            name: m.name,
            source: m.source,
            target: m.target,
        });
        let reducers = self.catalog.reducers()?.into_iter().map(|r| ViewDefinition::Reducer {
            function: r.function.to_proto(),
            name: r.name,
            range: r.range,
        });
        let sinks = self.catalog.sinks()?.into_iter().map(|s| ViewDefinition::Sink {
            source: match s.view {
                Some(view) => SinkSource::View(view),
                None => SinkSource::Range(s.source),
            },
            name: s.name,
            url: s.url,
            prefix: s.prefix.into(),
        });
        let mut all: Vec<ViewDefinition> = mappers.chain(reducers).chain(sinks).collect();
        all.sort_by(|a, b| a.name().cmp(b.name()));
        Ok(all)
    }

    pub(crate) async fn view_statuses(&self) -> Vec<ViewStatus> {
        let known = |name: &String, kind, source_id, checkpoint, catching_up| Known {
            name: name.clone(),
            kind,
            source_id,
            checkpoint,
            catching_up,
        };
        let mut all: Vec<(usize, Known, actix::Recipient<Status>)> = {
            let views = self.views_read();
            let depth = |range_id| views.depth_of(range_id);
            let mappers = views.mappers.iter().map(|(n, m)| {
                let k = known(n, "mapper", m.source_id, m.checkpoint, m.backfilling);
                (depth(m.source_id), k, m.addr.clone().recipient())
            });
            let reducers = views.reducers.iter().map(|(n, r)| {
                let k = known(n, "reducer", r.range_id, r.checkpoint, !r.loaded);
                (depth(r.range_id), k, r.addr.clone().recipient())
            });
            let sinks = views.sinks.iter().map(|(n, s)| {
                let k = known(n, "sink", s.source_id, s.checkpoint, false);
                (depth(s.source_id), k, s.addr.clone().recipient())
            });
            mappers.chain(reducers).chain(sinks).collect()
        };
        // Views are asked upstream first, a level at a time: a mapper
        // answers after its round, whose rows are then in its target's
        // journal, so the views reading that target (asked next) count
        // them as pending. One listing in which no view has changes
        // pending thus means every view reflects its sources as of the
        // listing's start, however deep the chain.
        all.sort_by_key(|(depth, _, _)| *depth);
        let mut out = Vec::with_capacity(all.len());
        let mut all = all.into_iter().peekable();
        while let Some((depth, _, _)) = all.peek() {
            let depth = *depth;
            let mut asked = Vec::new();
            while let Some((_, known, addr)) = all.next_if(|(d, _, _)| *d == depth) {
                let (tx, rx) = oneshot::channel();
                addr.do_send(Status(tx));
                asked.push((known, rx));
            }
            self.gather_statuses(asked, &mut out).await;
        }
        // A reducer fed by a mapper that is still backfilling is building
        // too: it shows that backfill's progress, never "done" while
        // aggregates answer "view lagging".
        let upstream: Vec<(usize, String)> = out
            .iter()
            .enumerate()
            .filter(|(_, v)| v.kind == "reducer" && v.backfill.is_none())
            .filter_map(|(i, v)| {
                let (range_id, at) = {
                    let views = self.views_read();
                    let r = views.reducers.get(&v.name)?;
                    (r.range_id, r.checkpoint)
                };
                Some((i, self.backfill_upstream(range_id, at)?))
            })
            .collect();
        for (i, mapper) in upstream {
            let progress = out.iter().find(|m| m.name == mapper).and_then(|m| m.backfill);
            out[i].backfill = Some(progress.unwrap_or((0, 0)));
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}
